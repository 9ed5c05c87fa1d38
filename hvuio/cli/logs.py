"""Where `hvuio`'s log records and progress lines go, and the -v/-q options every command takes.

Log records of every module go through `logging` to stderr, one line per record (a message or
traceback that spans lines is folded onto one, its newlines shown as " | "), with the level
name and no colour: `LEVEL logger: message`, the time in front only on a terminal (the journal
stamps lines itself). Under systemd, when stderr is the journal's stream (JOURNAL_STREAM names
its device and inode), each line starts with the kernel-style priority prefix `<N>` that journald
turns into the record's priority (sd-daemon(3)).

Levels: warnings by default; -v info, -vv (or --debug) debug; -q errors only. -v and -q count
wherever they are given: before the command (`hvuio -v up ...`) or after it (`hvuio up -v ...`);
`verbosity_options` adds them to every command of the tree and `configure` applies the sum.

Progress: steps that take seconds (binding, bring-up, waiting for the host) log one line each to
the `hvuio.progress` logger at INFO; the library modules that have such steps use that logger
name. It writes the bare sentence on stderr when stderr is a terminal or with -v, never with -q,
and never on stdout, so `--json` output stays JSON.

What must not live here: commands, library code, what the steps are (the library logs them).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final

import click

from hvuio.cli.app import App

#: The logger the library's long steps write to (hvuio/device/bind.py, hvuio/up.py).
PROGRESS_LOGGER: Final = "hvuio.progress"
_MARK: Final = "_hvuio_handler"
# logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY: Final = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _on_journal(stream: Any) -> bool:
    """True when `stream` is the journal's stream of JOURNAL_STREAM ("<dev>:<inode>")."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (OSError, ValueError, AttributeError):
        return False


class OneLineFormatter(logging.Formatter):
    """`LEVEL logger: message` on one line; `<N>` priority prefix for the journal."""

    def __init__(self, timestamps: bool, journal: bool) -> None:
        super().__init__(("%(asctime)s " if timestamps else "") + "%(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line for line in super().format(record).splitlines() if line.strip())
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        return text


class ProgressFormatter(logging.Formatter):
    """The step's sentence alone, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(record.getMessage().split())


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that always writes to the current sys.stderr (a daemon's log file after
    dup2, a test's capture), never to a stream replaced since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        del value


def _replace_handler(logger: logging.Logger, handler: logging.Handler) -> None:
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
    setattr(handler, _MARK, True)
    logger.addHandler(handler)


def configure(verbose: int, quiet: int, debug: bool) -> None:
    """Send log records and progress lines to stderr at the level -v/-q/--debug ask for."""
    stream = sys.stderr
    level = verbose - quiet
    root_level = (logging.DEBUG if debug or level > 1 else logging.INFO if level == 1
                  else logging.WARNING if level == 0 else logging.ERROR)
    root = logging.getLogger()
    handler = StderrHandler()
    handler.setFormatter(OneLineFormatter(timestamps=_isatty(stream), journal=_on_journal(stream)))
    _replace_handler(root, handler)
    root.setLevel(root_level)
    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.propagate = False
    step_handler = StderrHandler()
    step_handler.setFormatter(ProgressFormatter())
    _replace_handler(progress, step_handler)
    shown = quiet == 0 and (level >= 1 or debug or _isatty(stream))
    progress.setLevel(logging.INFO if shown else logging.CRITICAL + 1)


def _count(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """Callback of a command's -v/-q: add to the App's counts and apply them."""
    app = ctx.find_object(App)
    if app is None or not value:
        return
    if param.name == "quiet":
        app.quiet += value
    else:
        app.verbose += value
    configure(app.verbose, app.quiet, app.debug)


VERBOSE_HELP: Final = "More log output: -v info and progress lines, -vv debug (repeatable; before or after the command)."
QUIET_HELP: Final = "Less log output: errors only, no progress lines (before or after the command)."


def verbosity_options(command: click.Command) -> None:
    """Give `command` and every command below it its own -v/--verbose and -q/--quiet."""
    taken = {opt for p in command.params for opt in getattr(p, "opts", [])}
    if "-v" not in taken:
        command.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                           callback=_count, help=VERBOSE_HELP))
    if "-q" not in taken:
        command.params.append(click.Option(["-q", "--quiet"], count=True, expose_value=False,
                                           callback=_count, help=QUIET_HELP))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            verbosity_options(sub)
