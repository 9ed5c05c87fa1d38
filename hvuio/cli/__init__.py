"""The `hvuio` command line: one click group, thin commands.

What lives here: the group with the global options (--sysroot / HVUIO_SYSROOT, --debug, -v, -q;
-v and -q are also every command's own, hvuio/cli/logs.py) and the exit-code table in its help,
`main` (the console entry point and `python -m hvuio`) with the error rendering, and the explicit
list of commands added to the group from the command modules: device.py (list, bind, unbind,
doctor), net.py (up, status), stats.py (stats), sim.py (the `sim` group), demo.py (demo), trace.py
(trace). The command modules take the `App` from app.py and never import this module, so there is
no import cycle.

Commands parse options, call the library and echo. Heavy modules (the compiled core, pyroute2,
the emulator) are imported inside the commands, so `hvuio --help` works even where the C core
failed to build. Every `HvuioError` becomes "Error: ..." + "Hint: ..." and its exit code (a
command the hint names gets the --sysroot of the command line, `with_sysroot`); a traceback is
shown only with --debug. The sysroot reaches the commands as an absolute path.

What must not live here: commands' bodies, library code (status files, bring-up, the emulator
daemon), terminal rendering of results (the command modules, render.py).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from hvuio import __version__
from hvuio.cli import demo, device, net, sim, stats, trace
from hvuio.cli.app import App
from hvuio.cli.logs import QUIET_HELP, VERBOSE_HELP, configure, verbosity_options
from hvuio.errors import EXIT_CODES, HvuioError, NotRootError

__all__ = ["App", "cli", "main"]


def _epilog() -> str:
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return ("\b\nExit codes:\n" + rows + "\n\n"
            "\b\nShell completion (bash; zsh_source, fish_source likewise):\n"
            "  eval \"$(_HVUIO_COMPLETE=bash_source hvuio)\"")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_epilog())
@click.version_option(__version__, prog_name="hvuio")
@click.option(
    "--sysroot",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HVUIO_SYSROOT",
    default=Path("/"),
    show_default=True,
    help="Resolve every /sys and /dev path under this directory (the emulator's tree).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and protocol debug logs.")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", count=True, help=QUIET_HELP)
@click.pass_context
def cli(ctx: click.Context, sysroot: Path, debug: bool, verbose: int, quiet: int) -> None:
    """Drive a Hyper-V / Azure synthetic NIC from user space (uio_hv_generic)."""
    sysroot = Path(os.path.abspath(sysroot))   # commands see one path, whatever their working directory
    configure(verbose, quiet, debug)
    if sysroot != Path("/") and os.path.lexists(sysroot):
        from hvuio.safefs import check_dir

        check_dir(sysroot)   # another user's directory would make them the host of our parsers
    ctx.obj = App(sysroot=sysroot, debug=debug, verbose=verbose, quiet=quiet)


def _sysroot_of(argv: list[str]) -> str:
    """The --sysroot of a command line (or HVUIO_SYSROOT), made absolute; "/" when none."""
    root = os.environ.get("HVUIO_SYSROOT") or "/"
    for i, arg in enumerate(argv):
        if arg == "--sysroot" and i + 1 < len(argv):
            root = argv[i + 1]
        elif arg.startswith("--sysroot="):
            root = arg.split("=", 1)[1]
        elif not arg.startswith("-") and (i == 0 or argv[i - 1] != "--sysroot"):
            break   # the command: what follows are its own arguments
    return os.path.abspath(root) if root else "/"


def with_sysroot(hint: str, sysroot: str) -> str:
    """`hint` with every command it names ('hvuio …', or 'hvuio --sysroot DIR …') run against
    `sysroot`, so it can be pasted as it is; unchanged for "/"."""
    if sysroot == "/":
        return hint
    option = f"--sysroot {shlex.quote(sysroot)}"
    hint = hint.replace("--sysroot DIR", option)
    return re.sub(r"'hvuio (?!--sysroot )", lambda _: f"'hvuio {option} ", hint)


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("HVUIO_DEBUG") == "1"


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: run the group and render HvuioError as one sentence and a hint."""
    args = sys.argv[1:] if argv is None else argv
    os.umask(0o022)   # modes of what we create never depend on the caller's umask
    try:
        return cli.main(args=args, prog_name="hvuio", standalone_mode=False)
    except HvuioError as err:
        if _wants_debug(args):
            raise
        click.echo(f"Error: {err.message}", err=True)
        if err.hint:
            click.echo(f"Hint: {with_sysroot(err.hint, _sysroot_of(args))}", err=True)
        sys.exit(err.exit_code)
    except PermissionError as err:  # sysfs, /dev/uioN, /dev/net/tun: what a non-root user meets
        where = f" on {err.filename}" if err.filename else ""
        click.echo(f"Error: permission denied{where}.", err=True)
        click.echo(f"Hint: {NotRootError.default_hint}", err=True)
        sys.exit(NotRootError.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # a bug: keep the user's terminal clean unless --debug
        if _wants_debug(args):
            raise
        click.echo(f"Error: internal error: {type(err).__name__}: {err}", err=True)
        click.echo("Hint: this is a bug in hvuio; rerun with --debug and report the traceback.", err=True)
        sys.exit(70)


_COMMANDS: tuple[click.Command, ...] = (device.list_devices, device.bind, device.unbind, device.doctor,
                                        net.up, net.status, stats.stats, sim.sim, demo.demo,
                                        trace.trace)
for _command in _COMMANDS:
    cli.add_command(_command)
    verbosity_options(_command)
