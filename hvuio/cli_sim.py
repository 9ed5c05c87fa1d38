"""`hvuio sim`: run the emulated guest kernel (VMBus + uio_hv_generic) under a sysroot.

`hvuio sim start --sysroot DIR --kernel 6.17 --nics 2` builds the tree and runs the kernel
emulation and the emulated host (hvuio.sim.vsp; --no-host for the kernel alone, --pcap-out /
--pcap-in / --wire for the network behind it) daemonised (it holds a lock on
`DIR/run/hvuio-sim/kernel.pid` while it runs, hvuio.sim.daemon; log `DIR/sim-kernel.log`), or in
the foreground with --foreground until SIGINT/SIGTERM. `hvuio sim stop --sysroot DIR` stops the
lock's holder; the kernel removes its tree on the way out, and `sim stop` removes what a killed
daemon left. A sysroot is created with mode 0700, and an existing one must be a directory that
only root or the caller can write (hvuio.safefs). Then every other command works against the tree with
`hvuio --sysroot DIR ...` (or HVUIO_SYSROOT=DIR). `hvuio sim status|link|rescind` talk to the
running host through its control socket (hvuio.sim.vsp.control).

Thin: the emulation itself is hvuio.sim.kernel and hvuio.sim.vsp.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hvuio.cli import App, cli, pass_app
from hvuio.errors import UsageError
from hvuio.safefs import check_dir, make_dirs, open_file

LOG_FILE = "sim-kernel.log"
START_TIMEOUT = 10.0  # seconds for the daemon to build the tree and take its lock

if TYPE_CHECKING:
    from hvuio.sim.net import FrameNetwork


def _make_network(pcap_out: Path | None, pcap_in: Path | None, wire: bool) -> FrameNetwork | None:
    """The network behind the emulated host: none, pcap files, or a tap in a namespace (root)."""
    if wire:
        from hvuio.sim.net import HostNetwork

        return HostNetwork.create()
    if pcap_out is not None or pcap_in is not None:
        from hvuio.sim.net import PcapNetwork

        return PcapNetwork(pcap_out, pcap_in)
    return None


def _root(app: App, sysroot: Path | None) -> Path:
    """The emulator's sysroot as given (never resolved: a symlinked sysroot is refused, not
    followed), checked like sshd's StrictModes when it exists (hvuio.safefs)."""
    root = Path(os.path.abspath(sysroot or app.sysroot))
    if root == Path("/"):
        raise UsageError("the emulator needs its own --sysroot directory, not /",
                         "Pass e.g. --sysroot /run/hvsim (it is created, mode 0700, if missing).")
    if os.path.lexists(root):
        check_dir(root)
    return root


def _run_kernel(root: Path, kernel: str, nics: int, ready: threading.Event | None = None,
                host: dict[str, Any] | None = None) -> None:
    from hvuio.sim.daemon import hold_pid_file, record_netns
    from hvuio.sim.kernel.bus import SimKernel
    from hvuio.sim.net import HostNetwork

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SimKernel(root, kernel, nics=nics) as k, contextlib.ExitStack() as stack:
        if host is not None:  # the emulated host (VSP) + its control socket, before any guest open
            from hvuio.sim.vsp.control import run_host

            network = _make_network(**host)
            stack.enter_context(run_host(k, root, network=network))
            if isinstance(network, HostNetwork):   # its own namespace: `sim stop` of a dead daemon removes it
                record_netns(root, network.netns)
        stack.callback(os.close, hold_pid_file(root))   # held until this process ends
        if ready is not None:
            ready.set()
        click.echo(f"sim kernel {k.profile.name} running under {root}: "
                   + ", ".join(f"{d.ifname}={d.guid}" for d in k.nics))
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass


@cli.group()
def sim() -> None:
    """Run the emulated Hyper-V guest kernel (sysfs tree, /dev/uioN) under a sysroot."""


@sim.command("start")
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the tree (default: the global --sysroot).")
@click.option("--kernel", default="6.17", show_default=True, help="Kernel profile to emulate.")
@click.option("--nics", type=click.IntRange(0, 64), default=1, show_default=True)
@click.option("--foreground", is_flag=True, help="Run in this process until interrupted.")
@click.option("--no-host", is_flag=True, help="Kernel only: no emulated Hyper-V host (VSP) answers the NICs.")
@click.option("--pcap-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the frames the guest sends to this pcap file.")
@click.option("--pcap-in", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Deliver the frames of this pcap file to the guest once its packet filter is set.")
@click.option("--wire", is_flag=True,
              help="Connect the host to a tap with 198.18.0.1/24 in a new network namespace (root).")
@pass_app
def sim_start(app: App, sysroot: Path | None, kernel: str, nics: int, foreground: bool, no_host: bool,
              pcap_out: Path | None, pcap_in: Path | None, wire: bool) -> None:
    """Build the tree and start the emulated kernel and host."""
    if wire and (pcap_out is not None or pcap_in is not None):
        raise UsageError("--wire and --pcap-in/--pcap-out exclude each other", "Pick one network.")
    host = None if no_host else {"pcap_out": pcap_out, "pcap_in": pcap_in, "wire": wire}
    from hvuio.sim.kernel.profiles import PROFILES

    if kernel not in PROFILES:
        raise UsageError(f"unknown kernel profile {kernel!r}", f"Known profiles: {', '.join(PROFILES)}.")
    root = _root(app, sysroot)
    if (root / "sys").exists():
        raise UsageError(f"{root}/sys already exists", "Run 'hvuio sim stop' first or pick another --sysroot.")
    make_dirs(root, 0o700)
    if foreground:
        _run_kernel(root, kernel, nics, host=host)
        return
    log = open_file(root / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pid = os.fork()
    if pid == 0:  # child: detach and run
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            _run_kernel(root, kernel, nics, host=host)
        finally:
            os._exit(0)
    os.close(log)
    from hvuio.sim.daemon import wait_started

    if not wait_started(root, pid, START_TIMEOUT):
        raise UsageError(f"the sim kernel did not start; see {root / LOG_FILE}")
    click.echo(f"sim kernel {kernel} started (pid {pid}) under {root}; use: hvuio --sysroot {root} list")


@sim.command("stop")
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--timeout", type=float, default=10.0, show_default=True)
@pass_app
def sim_stop(app: App, sysroot: Path | None, timeout: float) -> None:
    """Stop the emulated kernel started with 'sim start'; its tree is removed.

    Only the daemon that holds the sysroot's pid-file lock is signalled (never a pid read from a
    file); when that daemon died, what it left (the tree, its network namespace) is removed."""
    from hvuio.sim.daemon import DaemonGone, remove_leftovers, stop_daemon

    root = _root(app, sysroot)
    try:
        pid = stop_daemon(root, timeout)
    except DaemonGone as gone:
        removed = remove_leftovers(root)
        if not removed:
            raise UsageError(f"no sim kernel runs under {root}",
                             "Start one with 'hvuio sim start --sysroot DIR'.") from None
        click.echo(f"sim kernel under {root} had died ({gone}); removed what it left: {', '.join(removed)}")
        return
    click.echo(f"sim kernel (pid {pid}) stopped; tree under {root} removed")


@sim.command("link")
@click.argument("device")
@click.argument("state", type=click.Choice(["up", "down"]))
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None)
@pass_app
def sim_link(app: App, device: str, state: str, sysroot: Path | None) -> None:
    """Scripted link change of a simulated NIC (GUID or interface name): an RNDIS indication."""
    from hvuio.sim.vsp.control import request

    request(_root(app, sysroot), {"cmd": "link", "device": device, "up": state == "up"})
    click.echo(f"{device}: link {state}")


@sim.command("rescind")
@click.argument("device")
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None)
@pass_app
def sim_rescind(app: App, device: str, sysroot: Path | None) -> None:
    """Host rescind of a simulated NIC: the guest sees EIO/EOF, the device disappears."""
    from hvuio.sim.vsp.control import request

    request(_root(app, sysroot), {"cmd": "rescind", "device": device})
    click.echo(f"{device}: rescinded")


@sim.command("status")
@click.option("--sysroot", "sysroot", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON reply.")
@pass_app
def sim_status(app: App, sysroot: Path | None, as_json: bool) -> None:
    """Per-NIC view of the emulated host: open, link, NVSP state, counters, fault."""
    from hvuio.sim.vsp.control import request

    devices = request(_root(app, sysroot), {"cmd": "status"})["devices"]
    if as_json:
        click.echo(json.dumps(devices, indent=1, sort_keys=True))
        return
    for guid, d in devices.items():
        state = d.get("nvsp_state", "closed") if d["open"] else "closed"
        click.echo(f"{d['ifname'] or guid} {guid} {d['uio'] or '-'} {state} link {'up' if d['link_up'] else 'down'}"
                   + (f" FAULT: {d['fault']}" if d["fault"] else ""))
        counters = d["counters"]
        click.echo("  " + " ".join(f"{k}={v}" for k, v in counters.items() if v))
