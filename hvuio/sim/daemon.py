"""The `hvuio sim start` daemon: how it starts and runs, its claim on its sysroot, and how
`sim stop` finds it.

`prepare_sysroot` refuses a sysroot that already holds a tree and creates a missing one 0700.
`start_daemon` forks a child that detaches (setsid, stdin from /dev/null, stdout and stderr to
`<sysroot>/sim-kernel.log`) and calls `run`, and waits until the child holds its lock. `run` (also
what `sim start --foreground` calls) builds the tree with the emulated kernel (hvuio.sim.kernel),
starts the emulated host with its control socket and the network behind it (`NetworkChoice`:
none, pcap files, or a tap in a new namespace), takes the lock, prints one line naming the NICs,
and runs until SIGTERM/SIGINT; the kernel removes its tree on the way out.

The daemon opens `<sysroot>/run/hvuio-sim/kernel.pid` (0600, no symlink followed), takes an
exclusive flock on it and keeps it until it exits; its pid is written inside for people to read.
`sim stop` never trusts that number: it asks the kernel (/proc/locks) which process holds the
lock on that very inode, pins it with a pidfd, checks again that the pidfd's process still holds
the lock, and signals through the pidfd. A pid reused by an unrelated process, or a number
somebody wrote into the file, is never signalled. When nobody holds the lock the daemon died
(SIGKILL, OOM): `remove_leftovers` removes the tree and the network namespace it recorded
(`recorded_netns`); so it does after a daemon that exited on the signal without removing them (it
was being killed as `sim stop` came). `describe_wire` is the line naming the namespace and
addresses of a `--wire` network; `sim_command` spells a `sim` command with its --sysroot for hints.

What must not live here: click and option checks (hvuio/cli/sim.py), the tree's layout
(tree.py), the kernel and host emulation themselves (sim/kernel/, sim/vsp/, net.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hvuio.netdev import netns
from hvuio.errors import UsageError
from hvuio.safefs import make_dirs, open_file, write_file
from hvuio.sim.kernel.memory import DEFAULT_GUEST_MEMORY_MIB, GUEST_MEMORY, MIB
from hvuio.sim.kernel.shm import MARKER, STATE_DIR, state_dir
from hvuio.sim.kernel.tree import SimTree

if TYPE_CHECKING:
    from hvuio.sim.net import FrameNetwork

PID_NAME: Final = "kernel.pid"
NETNS_NAME: Final = "netns"
LOG_FILE: Final = "sim-kernel.log"
START_TIMEOUT: Final = 10.0  # seconds for the daemon to build the tree and take its lock
_POLL: Final = 0.02


class DaemonGone(Exception):
    """No process holds the sysroot's daemon lock (never started, stopped, or killed)."""


def pid_path(sysroot: Path | str) -> Path:
    return state_dir(sysroot) / PID_NAME


def hold_pid_file(sysroot: Path | str) -> int:
    """Take the daemon lock of `sysroot` and write our pid; returns the fd to keep open until exit.
    UsageError when another daemon holds it."""
    fd = open_file(pid_path(sysroot), os.O_RDWR | os.O_CREAT, 0o600, create_dirs=0o755)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"another sim kernel already runs under {sysroot}",
                         f"Stop it with '{sim_command(sysroot, 'stop')}' or pick another --sysroot.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def record_netns(sysroot: Path | str, name: str) -> None:
    """Note the namespace the daemon's network lives in, for `remove_leftovers`."""
    write_file(state_dir(sysroot) / NETNS_NAME, f"{name}\n".encode(), 0o600)


def recorded_netns(sysroot: Path | str) -> str | None:
    """The namespace `record_netns` noted under `sysroot` (None: none, or not one of ours)."""
    try:
        fd = open_file(state_dir(sysroot) / NETNS_NAME, os.O_RDONLY, 0o600)
    except (OSError, ValueError):
        return None
    try:
        name = os.read(fd, 256).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return name if name.startswith(netns.PREFIX) else None


def describe_wire(name: str) -> str:
    """The line `sim start --wire` prints: where the host's side of the wire is and how to reach it."""
    import ipaddress

    from hvuio.sim.net import DEFAULT_GUEST_ADDRESS, DEFAULT_HOST_ADDRESS, DEFAULT_IFNAME

    peer = ipaddress.ip_interface(DEFAULT_HOST_ADDRESS)
    return (f"wire: network namespace {name}, tap {DEFAULT_IFNAME} with {DEFAULT_HOST_ADDRESS}; give the "
            f"guest's tap an address in {peer.network} (e.g. {DEFAULT_GUEST_ADDRESS}) and ping {peer.ip}")


def sim_command(sysroot: Path | str, command: str) -> str:
    """`hvuio --sysroot ROOT sim COMMAND`, quoted for a shell, for messages and hints."""
    return f"hvuio --sysroot {shlex.quote(os.path.abspath(sysroot))} sim {command}"


def _lock_holder(fd: int) -> int | None:
    """The pid holding an exclusive flock on the inode behind `fd`, from /proc/locks."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            # "N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE START END" ("->" marks waiters)
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == inode:
                return int(fields[4])
    return None


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def stop_daemon(sysroot: Path | str, timeout: float) -> int:
    """SIGTERM the daemon holding `sysroot`'s lock and wait until it has exited; its pid.
    DaemonGone when no process holds the lock."""
    try:
        fd = open_file(pid_path(sysroot), os.O_RDONLY, 0o600)
    except FileNotFoundError:
        raise DaemonGone("no pid file") from None
    try:
        if not _locked(fd):
            raise DaemonGone("its lock is free")
        pid = _lock_holder(fd)
        if pid is None or pid <= 0:
            raise UsageError(f"the sim kernel under {sysroot} holds its lock but /proc/locks does not show "
                             "its pid (another pid namespace?)", "Stop it from where it was started.")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise DaemonGone(f"pid {pid} exited") from None
        try:
            if _lock_holder(fd) != pid:          # pinned the right process, not a reused pid
                raise DaemonGone(f"pid {pid} exited")
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            exited, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not exited:
            raise UsageError(f"sim kernel pid {pid} did not stop within {timeout:g} s",
                             f"See {Path(sysroot) / LOG_FILE}; 'kill -9 {pid}' then '{sim_command(sysroot, 'stop')}' "
                             "cleans up.")
        return pid
    finally:
        os.close(fd)


def remove_leftovers(sysroot: Path | str) -> list[str]:
    """What a dead daemon left under `sysroot` (its tree, map files, guest memory, network
    namespace), removed; the names of what was there."""
    root = Path(sysroot)
    removed = []
    name = recorded_netns(root)
    if name is not None and netns.exists(name):
        netns.delete(name)
        removed.append(f"network namespace {name}")
    names = (MARKER, "sys", "dev", f"{STATE_DIR}/{GUEST_MEMORY}", STATE_DIR, "run/hvuio")
    present = [n for n in names if os.path.lexists(root / n)]
    if present:
        SimTree(root).destroy()
        removed += present
    return removed


def wait_started(sysroot: Path | str, child: int, timeout: float) -> bool:
    """True once the daemon forked as `child` holds the lock; False when it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            fd = open_file(pid_path(sysroot), os.O_RDONLY, 0o600)
            try:
                if _locked(fd) and _lock_holder(fd) == child:
                    return True
            finally:
                os.close(fd)
        try:
            done, _status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            return False
        if done:
            return False
        time.sleep(_POLL)
    return False


@dataclass(frozen=True)
class NetworkChoice:
    """The network behind the emulated host: none, pcap files (either or both), or `wire`: a tap
    with 198.18.0.1/24 in a new network namespace (root). `wire` excludes the pcap files. Also
    how the host reads GPA-direct ranges (`guest_memory_mode`, hvuio.sim.vsp.guestmem: "file" or
    "proc"), how it lays out received frames (`rx_layout`, HostProfile.rx_layout), whether it
    delivers 802.1Q tags out of band (`vlan_oob`), and whether (with `wire`) every NIC gets a VF
    (`vf`: net.VethVf, guest end `hvvf<serial>` in this namespace, which SimHost also offers in the
    kernel's tree as the VF of a PCI pass-through device)."""

    pcap_out: Path | None = None
    pcap_in: Path | None = None
    wire: bool = False
    guest_memory_mode: str = "file"
    rx_layout: str = "openvmm"
    vf: bool = False
    vlan_oob: bool = False  # HostProfile.vlan_oob: deliver 802.1Q tags out of band (a trunk-mode port)


def make_network(choice: NetworkChoice) -> FrameNetwork | None:
    """The network `choice` names, created (None: no network)."""
    if choice.wire:
        from hvuio.sim.net import HostNetwork

        return HostNetwork.create()
    if choice.pcap_out is not None or choice.pcap_in is not None:
        from hvuio.sim.pcap import PcapNetwork

        return PcapNetwork(choice.pcap_out, choice.pcap_in)
    return None


def prepare_sysroot(root: Path) -> None:
    """Refuse a sysroot that already holds a tree; create it (mode 0700) when missing."""
    if (root / "sys").exists():
        raise UsageError(f"{root}/sys already exists",
                         f"Run '{sim_command(root, 'stop')}' first (it also removes what a dead emulator left), "
                         "or pick another --sysroot.")
    make_dirs(root, 0o700)


def run(root: Path, kernel: str, nics: int, ready: threading.Event | None = None,
        host: NetworkChoice | None = None, guest_memory: int = DEFAULT_GUEST_MEMORY_MIB * MIB) -> None:
    """Run the emulated kernel (profile `kernel`, `nics` NICs, `guest_memory` bytes of
    guest-physical memory) under `root` until SIGTERM/SIGINT, with the emulated host and its
    network unless `host` is None; `ready` is set once the lock is held. Installs the process's
    SIGTERM/SIGINT handlers: call it from the main thread."""
    from hvuio.sim.kernel.bus import SimKernel
    from hvuio.sim.net import HostNetwork

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    wire: str | None = None
    with SimKernel(root, kernel, nics=nics, guest_memory=guest_memory) as k, contextlib.ExitStack() as stack:
        if host is not None:  # the emulated host (VSP) + its control socket, before any guest open
            from hvuio.sim.host.profile import HostProfile
            from hvuio.sim.vsp.control import run_host

            network = make_network(host)
            profile = HostProfile(rx_layout=host.rx_layout,  # type: ignore[arg-type]  # checked by HostProfile
                                  vlan_oob=host.vlan_oob)
            vf = None
            if host.vf and isinstance(network, HostNetwork):
                from hvuio.sim.net import VethVf

                host_ns = network.netns
                vf = lambda dev, serial: VethVf.create(  # noqa: E731
                    guest_ifname=f"hvvf{serial}", mac=bytes.fromhex((dev.mac or "").replace(":", "")),
                    host_netns=host_ns)
            stack.enter_context(run_host(k, root, profile=profile, network=network,
                                         guest_memory_mode=host.guest_memory_mode, vf=vf))
            if isinstance(network, HostNetwork):   # its own namespace: `sim stop` of a dead daemon removes it
                record_netns(root, network.netns)
                wire = describe_wire(network.netns)
        stack.callback(os.close, hold_pid_file(root))   # held until this process ends
        if ready is not None:
            ready.set()
        print(f"sim kernel {k.profile.name} running under {root}: "
              + ", ".join(f"{d.ifname}={d.guid}" for d in k.nics))
        if wire is not None:
            print(wire)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass


def start_daemon(root: Path, kernel: str, nics: int, host: NetworkChoice | None = None,
                 timeout: float = START_TIMEOUT, guest_memory: int = DEFAULT_GUEST_MEMORY_MIB * MIB) -> int:
    """Fork the daemon that `run`s under `root` (see the module docstring); its pid once it holds
    the lock. UsageError (pointing at the log) when it exited first or took longer than `timeout`."""
    log = open_file(root / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pid = os.fork()
    if pid == 0:  # child: detach and run
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            run(root, kernel, nics, host=host, guest_memory=guest_memory)
        finally:
            os._exit(0)
    os.close(log)
    if not wait_started(root, pid, timeout):
        raise UsageError(f"the sim kernel did not start; see {root / LOG_FILE}")
    return pid
