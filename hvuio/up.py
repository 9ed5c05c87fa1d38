"""`hvuio up` as a library call: bring a synthetic NIC up, keep its status file, run it (data path
or control traffic only) until a signal, tear it down, and report what happened as events.

What lives here: `UpOptions` (what the command's options mean), `check_options()` (options
that cannot work, refused before the NIC is opened), `run_up()`, the progress events it
hands to the caller's callback in order — `Ready` (negotiated values), then `Serving` (control
traffic only) or `DatapathRunning` (the tap is up), then `Down` (counters, the stopping signal),
which is also its result — each with the exact line `up --json` prints for it. The status file
(hvuio/status.py) is written before `Ready` is reported, so whoever reads the command's output
finds it, refreshed on every tick while the NIC runs and removed before `Down`; the data path's
part (tap, namespace, every queue's counters) reaches it in one write once every queue's pump
runs, before `DatapathRunning` is reported, so a record never shows part of the queues; records that
`up` processes no longer running left behind are swept first (hvuio.status.sweep_stale).

The work is hvuio/nic.py's (`Nic`: bring-up, control traffic, teardown), hvuio/engine.py's
(`Engine`: tap and data path) and hvuio/lifecycle.py's (`Lifecycle`: the tap kept across Nics, the
re-initialisation after an MTU change from the tap, and with `persist` after a rescind or a stopped
channel; its state and counters go into the status file), stopped through hvuio/netdev/signals.py's `StopPipe`; they are
imported inside `run_up` so that importing this module stays cheap where the C core is missing
(`hvuio --help`).

Steps that take seconds (the bring-up: open, NVSP/RNDIS, subchannels; starting the data path) log
one line each to the `hvuio.progress` logger first (the CLI shows them on stderr on a terminal or
with -v, never in `--json` output).

What must not live here: click or printing (hvuio/cli/net.py turns events into lines), protocol
or ring logic (nic.py, engine.py and below), the status record's format (status.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hvuio.health import WATCHDOG_AFTER
from hvuio.status import StatusFile, sweep_stale

if TYPE_CHECKING:
    from hvuio.engine import Engine
    from hvuio.lifecycle import Lifecycle
    from hvuio.nic import Nic

log = logging.getLogger(__name__)
progress = logging.getLogger("hvuio.progress")

#: covers a same-host reply or ACK; costs CPU only while traffic flows
BUSY_POLL_DEFAULT_US: Final = 50
#: NVSP version names `--max-nvsp` accepts (hvuio.nic.NVSP_NAMES)
NVSP_CHOICES: Final = ("1", "2", "4", "5", "6", "6.1")


@dataclass(frozen=True)
class UpOptions:
    """How to bring DEVICE (instance GUID or interface name) up and run it."""

    device: str
    #: move the tap into this existing network namespace
    netns: str | None = None
    #: the tap's name (None: a random 'hvu-…' name)
    ifname: str | None = None
    #: False: serve control traffic only, no tap
    datapath: bool = True
    #: bring up, report, tear down: no status file, no run
    once: bool = False
    mtu: int = 1500
    #: offer NVSP versions up to this one only (a name of NVSP_CHOICES; None: all)
    max_nvsp: str | None = None
    busy_poll_us: int = BUSY_POLL_DEFAULT_US
    offload: bool = True
    tx_aggregation: bool = True
    #: send by guest-physical address when the platform has guest memory (False: send buffer only)
    gpa: bool = True
    #: write a pcapng trace of the frames and control messages here (hvuio/trace/); None: no trace
    trace: Path | None = None
    #: the trace file's cap: once reached nothing more is written (counted, no rotation)
    trace_max_mb: int = 64
    #: queues (channels) to ask for, the primary included; None: `default_queues()`. The host's
    #: receive queues and 64 cap it further (proto/netvsc.py)
    queues: int | None = None
    #: keep the tap through a rescind (waiting for the re-offer) and a stopped channel
    #: (re-initialising the NIC) instead of stopping (hvuio/lifecycle.py)
    persist: bool = False
    #: seconds the host may leave sends uncompleted before its channel counts as stopped
    #: (hvuio.health.WATCHDOG_AFTER)
    watchdog: float = WATCHDOG_AFTER
    #: accelerated networking (VF_CHOICES): "auto" offers SR-IOV and moves the traffic to the host's
    #: VF while there is one (only with a data path that runs); "off" never offers it
    vf: str = "auto"

    @property
    def use_vf(self) -> bool:
        """SR-IOV is offered: --vf auto on a running data path (a VF serves only a tap)."""
        return self.vf == "auto" and self.datapath and not self.once


#: `--vf` values
VF_CHOICES: Final = ("auto", "off")
#: Linux's default channel count (VRSS_CHANNEL_DEFAULT, netvsc spec A.7)
QUEUES_DEFAULT_MAX: Final = 16
#: the most channels a NIC has (Linux VRSS_CHANNEL_MAX)
QUEUES_MAX: Final = 64


def default_queues() -> int:
    """min(online CPUs, 16): Linux's rule (netvsc_drv.c netvsc_devinfo_get, rndis_filter_device_add);
    the host's receive queues and 64 are applied at bring-up."""
    try:
        cpus = int(os.sysconf("SC_NPROCESSORS_ONLN"))
    except (ValueError, OSError):
        cpus = 1
    return max(1, min(cpus, QUEUES_DEFAULT_MAX))


@dataclass(frozen=True)
class Ready:
    """The NIC is up: what bring-up negotiated (NicInfo.to_dict at that moment)."""

    nic: dict[str, Any]

    def json_line(self) -> str | None:
        return json.dumps({"event": "ready", "nic": self.nic}, sort_keys=True)


@dataclass(frozen=True)
class Serving:
    """No data path (UpOptions.datapath False): control traffic is served until a signal."""

    def json_line(self) -> str | None:
        return None


@dataclass(frozen=True)
class DatapathRunning:
    """The data path runs on `tap` (in `netns` when given) until a signal."""

    tap: str | None
    netns: str | None

    def json_line(self) -> str | None:
        return json.dumps({"event": "datapath", "tap": self.tap, "netns": self.netns})


@dataclass(frozen=True)
class Down:
    """The NIC was torn down: final counters and the signal that stopped it (None: none)."""

    counters: dict[str, int] = field(default_factory=dict)
    signal: int | None = None

    def json_line(self) -> str | None:
        return json.dumps({"event": "down", "counters": self.counters, "signal": self.signal}, sort_keys=True)


UpEvent = Ready | Serving | DatapathRunning | Down

#: The MTUs a netvsc NIC may ask for: ETH_MIN_MTU 68 to Linux's 65521 (NETVSC_MTU 65535 minus the
#: Ethernet header); hvuio.proto.limits holds the same numbers for the protocol machines.
MIN_MTU: Final = 68
MAX_MTU: Final = 65521


def check_mtu(mtu: int, option: str = "--mtu") -> None:
    """UsageError for an MTU outside [MIN_MTU, MAX_MTU] (instead of a host silently using 1500)."""
    from hvuio.errors import UsageError

    if mtu < MIN_MTU:
        raise UsageError(f"{option} {mtu} is below {MIN_MTU}, the smallest MTU IPv4 and the protocol allow "
                         "(a host would silently use its default of 1500 instead)",
                         f"Use {option} {MIN_MTU} to {MAX_MTU}.")
    if mtu > MAX_MTU:
        raise UsageError(f"{option} {mtu} is above {MAX_MTU}, the largest MTU a netvsc NIC carries "
                         "(65535 minus the Ethernet header)", f"Use {option} {MIN_MTU} to {MAX_MTU}.")


def check_options(options: UpOptions) -> None:
    """UsageError (one sentence + hint) for options that cannot work, found before anything of the
    host is touched: --ifname or --netns without a tap to apply them to (--no-datapath, --once),
    a --netns that does not exist, an --ifname that is malformed or already names an interface
    where the tap would go. The hint never suggests deleting that interface: hvuio did not make it
    (a tap of hvuio's lives only as long as its `up` process)."""
    import socket

    from hvuio.errors import UsageError
    from hvuio.netdev import netns as netns_mod
    from hvuio.netdev.tap import NETNS_RUN_DIR, check_ifname, check_netns_name

    given = [opt for opt, value in (("--ifname", options.ifname), ("--netns", options.netns)) if value is not None]
    without = "--no-datapath" if not options.datapath else "--once" if options.once else None
    if given and without is not None:
        raise UsageError(f"{' and '.join(given)} place the tap, and {without} runs no tap",
                         f"Leave out {' and '.join(given)}, or {without}.")
    if options.persist and without is not None:
        raise UsageError(f"--persist keeps a tap through a rescind or a stopped channel, and {without} runs no tap",
                         f"Leave out --persist, or {without}.")
    if options.netns is not None:
        check_netns_name(options.netns)
        if not os.path.exists(os.path.join(NETNS_RUN_DIR, options.netns)):
            raise UsageError(f"network namespace {options.netns!r} does not exist",
                             f"Create it with 'ip netns add {options.netns}', or pick one 'ip netns list' shows.")
    if options.ifname is None:
        return
    try:
        check_ifname(options.ifname)
    except UsageError as err:
        raise UsageError(f"--ifname: {err.message}", "Leave --ifname out for a random 'hvu-…' name.") from None
    if options.netns is None:
        try:
            socket.if_nametoindex(options.ifname)
            taken = True
        except OSError:
            taken = False
    else:
        taken = options.ifname in netns_mod.list_links(prefix=options.ifname, netns=options.netns)
    if taken:
        where = f" in network namespace {options.netns!r}" if options.netns else ""
        raise UsageError(f"--ifname {options.ifname}: an interface of that name already exists{where}",
                         "Pick another name, or leave --ifname out for a random 'hvu-…' name; a tap an earlier "
                         "'hvuio up' made goes away with that process ('hvuio status' lists the running ones).")


def nvsp_versions(max_nvsp: str | None) -> tuple[int, ...]:
    """The NVSP versions to offer: all supported ones, or those up to the named one."""
    from hvuio.nicinfo import NVSP_NAMES
    from hvuio.wire import nvsp as wn

    versions = tuple(wn.SUPPORTED_NVSP_VERSIONS)
    if max_nvsp is not None:
        cap = next(v for v, name in NVSP_NAMES.items() if name == max_nvsp)
        versions = tuple(v for v in versions if v <= cap)
    return versions


def _write_status(state: StatusFile, nic: Nic, life: Lifecycle | None, **datapath: Any) -> None:
    """One status record: the current Nic's values and counters, the data path's, (with a data
    path) the lifecycle's state and counters, and the `datapath` fields given (tap, netns)."""
    if life is not None:
        nic = life.nic
    if nic.info is None:
        return
    engine = life.engine if life is not None else None
    live = engine.live_counters() if engine is not None else {}
    extra = life.counters() if life is not None else {}
    if life is not None:
        state.write(lifecycle=life.status(), nic=nic.info.to_dict(),
                    counters={**live, **nic.counter_snapshot(), **extra},
                    queues=engine.queue_counters() if engine is not None else [], **datapath)
    else:
        state.write(nic=nic.info.to_dict(), counters=nic.counter_snapshot(), queues=[], **datapath)


def run_up(sysroot: Path, options: UpOptions, on_event: Callable[[UpEvent], None]) -> Down:
    """Bring the NIC up, run it until SIGINT/SIGTERM/SIGHUP (unless `options.once`), tear it down.

    `on_event` gets Ready, then Serving or DatapathRunning (not with `once`), then Down, in this
    process's main thread or the data path's callbacks; the Down it got is returned. A signal
    during a slow bring-up aborts it (KeyboardInterrupt); errors are HvuioError, raised after the
    NIC is closed and the status file removed.
    """
    from hvuio.lifecycle import Lifecycle
    from hvuio.netdev.signals import StopPipe
    from hvuio.nic import Nic

    check_mtu(options.mtu)
    check_options(options)   # before anything of the host is touched
    versions = nvsp_versions(options.max_nvsp)
    for stale in sweep_stale(sysroot):  # what a killed `up` left
        log.info("%s", stale.message)
    with StopPipe() as stop, contextlib.ExitStack() as closing:
        trace = None
        if options.trace is not None:
            from hvuio.trace.writer import Trace
            trace = closing.enter_context(Trace(options.trace, options.trace_max_mb << 20))
        def new_nic(device: str, mtu: int, channels: int) -> Nic:
            made = Nic(sysroot, device, mtu=mtu, versions=versions, offload=options.offload, gpa=options.gpa,
                       trace=trace, channels=channels, vf=options.use_vf)
            made.stop_fd = stop.read_fd  # Ctrl-C during a slow bring-up aborts it (exit 130)
            return made

        nic = new_nic(options.device, options.mtu, options.queues or default_queues())
        life: Lifecycle | None = None
        state: StatusFile | None = None

        def tick() -> None:
            if state is not None:
                _write_status(state, nic, life)

        def ready(e: Engine) -> None:
            # every pump runs: the tap and all queues reach the record in one write, before the event
            if state is not None:
                _write_status(state, nic, life, tap=e.tap_name, netns=options.netns)
            on_event(DatapathRunning(tap=e.tap_name, netns=options.netns))

        counters: dict[str, int] = {}
        try:
            progress.info("Bringing up %s: opening it, negotiating NVSP and RNDIS with the host, "
                          "waiting for its subchannels...", options.device)
            data = nic.open().to_dict()
            if not options.once:  # written before Ready is reported, so a reader of the output finds it
                state = StatusFile(sysroot, data["device"])
                tick()
            on_event(Ready(data))
            if not options.once:
                if not options.datapath:
                    on_event(Serving())
                    nic.serve(stop.read_fd, on_tick=tick)
                else:
                    progress.info("Starting the data path of %s...", data["device"])
                    life = Lifecycle(sysroot, nic, new_nic, persist=options.persist, ifname=options.ifname,
                                     netns=options.netns, busy_poll_us=options.busy_poll_us,
                                     tx_aggregation=options.tx_aggregation, watchdog_after=options.watchdog)
                    try:
                        counters = life.run(stop.read_fd, on_ready=ready, on_tick=tick)
                    finally:
                        nic = life.nic
                    counters.update(life.counters())
            counters.update(nic.counter_snapshot())
        finally:
            if state is not None:
                state.remove()
            nic.close()
        if trace is not None:  # after the teardown's messages were recorded
            counters.update(trace.counters())
        down = Down(counters=counters, signal=stop.signal)
        on_event(down)
        return down
