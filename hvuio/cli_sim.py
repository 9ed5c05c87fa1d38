"""`hvuio sim`: run the emulated guest kernel (VMBus + uio_hv_generic) under a sysroot.

`hvuio sim start --sysroot DIR --kernel 6.17 --nics 2` builds the tree and runs the kernel
emulation daemonised (pid file `DIR/run/hvuio-sim/kernel.pid`, log next to it), or in the
foreground with --foreground until SIGINT/SIGTERM. `hvuio sim stop --sysroot DIR` stops it; the
kernel removes its tree on the way out. Then every other command works against the tree with
`hvuio --sysroot DIR ...` (or HVUIO_SYSROOT=DIR).

Thin: the emulation itself is hvuio.sim.kernel.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from hvuio.cli import App, cli, pass_app
from hvuio.errors import UsageError

PID_FILE = "run/hvuio-sim/kernel.pid"


def _root(app: App, sysroot: Path | None) -> Path:
    root = (sysroot or app.sysroot).resolve()
    if root == Path("/"):
        raise UsageError("the emulator needs its own --sysroot directory, not /",
                         "Pass e.g. --sysroot /tmp/hvsim (it is created if missing).")
    return root


def _run_kernel(root: Path, kernel: str, nics: int, ready: threading.Event | None = None) -> None:
    from hvuio.sim.kernel import SimKernel

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SimKernel(root, kernel, nics=nics) as k:
        (root / PID_FILE).write_text(f"{os.getpid()}\n")
        if ready is not None:
            ready.set()
        click.echo(f"sim kernel {k.profile.name} running under {root}: "
                   + ", ".join(f"{d.ifname}={d.guid}" for d in k.nics))
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, OSError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@cli.group()
def sim() -> None:
    """Run the emulated Hyper-V guest kernel (sysfs tree, /dev/uioN) under a sysroot."""


@sim.command("start")
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the tree (default: the global --sysroot).")
@click.option("--kernel", default="6.17", show_default=True, help="Kernel profile to emulate.")
@click.option("--nics", type=click.IntRange(0, 64), default=1, show_default=True)
@click.option("--foreground", is_flag=True, help="Run in this process until interrupted.")
@pass_app
def sim_start(app: App, sysroot: Path | None, kernel: str, nics: int, foreground: bool) -> None:
    """Build the tree and start the emulated kernel."""
    from hvuio.sim.profiles import PROFILES

    if kernel not in PROFILES:
        raise UsageError(f"unknown kernel profile {kernel!r}", f"Known profiles: {', '.join(PROFILES)}.")
    root = _root(app, sysroot)
    if (root / "sys").exists():
        raise UsageError(f"{root}/sys already exists", "Run 'hvuio sim stop' first or pick another --sysroot.")
    root.mkdir(parents=True, exist_ok=True)
    if foreground:
        _run_kernel(root, kernel, nics)
        return
    pid = os.fork()
    if pid == 0:  # child: detach and run
        try:
            os.setsid()
            log = os.open(root / "sim-kernel.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            _run_kernel(root, kernel, nics)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (root / PID_FILE).exists():
            click.echo(f"sim kernel {kernel} started (pid {pid}) under {root}; use: hvuio --sysroot {root} list")
            return
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    raise UsageError(f"the sim kernel did not start; see {root / 'sim-kernel.log'}")


@sim.command("stop")
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--timeout", type=float, default=10.0, show_default=True)
@pass_app
def sim_stop(app: App, sysroot: Path | None, timeout: float) -> None:
    """Stop the emulated kernel started with 'sim start'; its tree is removed."""
    root = _root(app, sysroot)
    try:
        pid = int((root / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        raise UsageError(f"no sim kernel runs under {root} (no {PID_FILE})") from None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise UsageError(f"sim kernel pid {pid} is gone; remove {root} by hand") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.02)
    else:
        raise UsageError(f"sim kernel pid {pid} did not stop within {timeout:g} s")
    click.echo(f"sim kernel (pid {pid}) stopped; tree under {root} removed")
