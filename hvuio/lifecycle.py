"""The NIC's life on one tap: re-initialisation that keeps the tap, and the events that call for it.

What lives here: `Lifecycle`, which runs a Nic that finished bring-up (hvuio/nic.py) on a tap it
owns across Nic lifetimes: the tap, its addresses, routes and carrier survive while the engine's
pumps stop (hvuio/engine.py), the Nic halts and closes, a new Nic comes up with new parameters and
new pumps attach to the same tap queue fds. `reinit(mtu, why)` is that one step; every event
that needs a fresh NIC goes through it (and a later VF switch or queue-count change can too):

  * MTU change from the tap: a user's `ip link set <tap> mtu N`, seen as an RTM_NEWLINK of the
    tap (hvuio/netdev/netlink.py `LinkMonitor`), re-initialises NVSP and RNDIS with the new MTU,
    the whole device, as Linux does (torvalds/linux drivers/net/hyperv/netvsc_drv.c
    `netvsc_change_mtu`: `netvsc_detach`, then `netvsc_attach` with the new MTU, and the old one
    again when that fails). A value outside what a netvsc NIC carries, beyond what the TX path
    carries, or that the host cuts down (it answers OID_GEN_MAXIMUM_FRAME_SIZE below it) puts the
    NIC and the tap back at the old MTU, with one log line saying why.
  * Rescind (the engine's RescindedError): without `persist` it ends the run, raised to the
    caller. With `persist` the tap stays with its carrier off, and the lifecycle waits for the
    device to come back. A re-offer is a new VMBus device (new relid, VMBUS.md §1.11): it is
    matched by instance GUID (Linux matches a re-offer that way, torvalds/linux
    drivers/hv/channel_mgmt.c `find_primary_channel_by_offer`), else by the tap's MAC on a NIC a
    kernel driver holds; it is bound to uio_hv_generic again (hvuio/device/bind.py) and a new Nic
    comes up on the same tap. A rescind during that bring-up waits again.
  * A silently stopped channel: the engine's watchdog (HostStalledError: sends left uncompleted,
    hvuio/health.py WATCHDOG_AFTER) or a control request the host left unanswered
    (HostTimeoutError of the protocol machines, or of the teardown that begins a
    re-initialisation: `Nic.close(strict=True)`; the guest sends no control request while it
    only runs, so an MTU change is where a host that stopped answering them is met; the change is
    made once the NIC is recovered). Logged once and counted; with `persist`
    recovered by a re-initialisation (OpenVMM's worker stops on an NVSP-level error and only a
    close and re-open of the channel starts it afresh: microsoft/openvmm
    vm/devices/net/netvsp/src/lib.rs `NetQueue::run`, `Nic::open`), whose bring-up is tried
    again every BRINGUP_RETRY seconds while the host leaves it unanswered (each counted as
    watchdog_control, the first logged); without it the run ends.

`state` says where the NIC is (running, re-initialising, waiting for the device) and `counters()`
what happened, for the status file (hvuio/up.py writes them; `hvuio status` shows them).

What must not live here: the protocols and their bring-up (hvuio/nic.py), the pumps (engine.py),
tap and netlink plumbing (hvuio/netdev/), binding (hvuio/device/bind.py), the options and the
events of `hvuio up` (hvuio/up.py), printing (hvuio/cli/).
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from hvuio.device.bind import bind_device
from hvuio.device.sysfs import VmbusDevice
from hvuio.engine import Engine, open_tap
from hvuio.errors import (HostStalledError, HostTimeoutError, HvuioError, ModuleMissingError, NotRootError,
                          RescindedError, UnsafeBindError, UsageError)
from hvuio.health import WATCHDOG_AFTER
from hvuio.netdev.netlink import LinkMonitor, format_mac
from hvuio.netdev.tap import Tap
from hvuio.nic import Nic
from hvuio.nicinfo import tap_mtu
from hvuio.proto import limits

log = logging.getLogger(__name__)

#: How often a lifecycle waiting for its device looks at sysfs again (and writes its status).
DEVICE_POLL: Final = 0.5
#: Seconds between bring-ups of a re-initialisation the host did not answer (with `persist`).
BRINGUP_RETRY: Final = 1.0

RUNNING: Final = "running"
REINIT: Final = "re-initialising"
WAITING: Final = "waiting for the device"

#: builds an unopened Nic of DEVICE (GUID) asking for MTU and CHANNELS, like the first one
NicFactory = Callable[[str, int, int], Nic]


class _Stopped(Exception):
    """The caller's stop fd became readable while the lifecycle waited or re-initialised."""


class Lifecycle:
    """A Nic on a tap that outlives it (see the module docstring)."""

    def __init__(self, sysroot: Path, nic: Nic, new_nic: NicFactory, *, persist: bool = False,
                 ifname: str | None = None, netns: str | None = None, vnet_hdr: bool = True,
                 busy_poll_us: int = 0, tx_aggregation: bool = True, watchdog_after: float = WATCHDOG_AFTER) -> None:
        self.sysroot = sysroot
        #: the current Nic: open and up while running, closed while waiting for the device
        self.nic = nic
        self.new_nic = new_nic
        #: keep the tap and bring a new Nic up after a rescind or a stopped channel
        self.persist = persist
        self.ifname, self.netns, self.vnet_hdr = ifname, netns, vnet_hdr
        self.busy_poll_us, self.tx_aggregation = busy_poll_us, tx_aggregation
        self.watchdog_after = watchdog_after
        self.guid = nic.negotiated.device
        self.mtu = nic.negotiated.mtu or 1500
        #: queues of the tap (the first Nic's); a new Nic asks for no more
        self.queues = 1 + len(nic.subchannels)
        self.state = RUNNING
        self.tap: Tap | None = None
        self.engine: Engine | None = None
        self._monitor: LinkMonitor | None = None
        self._stop_fd = -1
        self._pending_mtu: int | None = None
        self._on_tick: Callable[[], None] | None = None
        self._counters = {"reinits": 0, "reinits_mtu": 0, "reinits_rescind": 0, "reinits_stall": 0,
                          "mtu_changes": 0, "mtu_rollbacks": 0, "rescinds": 0, "watchdog_stalls": 0,
                          "watchdog_control": 0}

    # ---- what the status file shows ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """What happened to the NIC so far (re-initialisations per cause, MTU changes and
        rollbacks, rescinds, watchdog reports)."""
        return dict(self._counters)

    def status(self) -> dict[str, object]:
        """The lifecycle part of the status record."""
        return {"state": self.state, "persist": self.persist, "reinits": self._counters["reinits"],
                "mtu": self.mtu}

    # ---- the run ---------------------------------------------------------------------------------------

    def run(self, stop_fd: int, on_ready: Callable[[Engine], None] | None = None,
            on_tick: Callable[[], None] | None = None) -> dict[str, int]:
        """Run the NIC on its tap until `stop_fd` is readable, re-initialising it as the module
        docstring says; the last engine's counters. Errors that end the run are raised (the Nic
        that met them is `nic`, for the caller to close); the tap is removed on return."""
        self._stop_fd, self._on_tick = stop_fd, on_tick
        counters: dict[str, int] = {}
        ready = on_ready
        try:
            self.tap = open_tap(self.nic, self.ifname, self.netns, self.vnet_hdr)
            self._monitor = LinkMonitor(self.netns, self.tap.name, self.tap.index, self.mtu)
            while True:
                engine = self.engine = Engine(self.nic, tap=self.tap, busy_poll_us=self.busy_poll_us,
                                              tx_aggregation=self.tx_aggregation,
                                              watchdog_after=self.watchdog_after)
                self.state = RUNNING
                try:
                    # a change made before the tap was watched, while the NIC was re-initialised, or
                    # put off by a recovery goes first (the caller hears of the tap after it)
                    if self._pending_mtu is None and not self._mtu_asked():
                        try:
                            counters = engine.run(stop_fd, on_ready=ready, on_tick=on_tick,
                                                  watch=(self._monitor.fileno(), self._mtu_asked))
                        finally:
                            ready = None  # the caller hears of the tap once
                        if self._pending_mtu is None:
                            return counters
                    assert self._pending_mtu is not None
                    self._change_mtu(self._pending_mtu)
                except RescindedError as err:
                    self._counters["rescinds"] += 1
                    if not self.persist:
                        raise RescindedError(f"the host rescinded {self.guid} under tap {self.tap.name} ({err.message})",
                                             f"{err.hint} With 'hvuio up --persist' the tap stays and the NIC "
                                             "comes back on it when the device is offered again.") from None
                    log.warning("%s: %s; keeping the tap (carrier off) until the device is offered again",
                                self.tap.name, err.message)
                    self._recover("rescind")
                except HostTimeoutError as err:
                    stalled = isinstance(err, HostStalledError)
                    self._counters["watchdog_stalls" if stalled else "watchdog_control"] += 1
                    if not self.persist:
                        raise
                    log.warning("%s: %s; re-initialising the NIC", self.tap.name, err.message)
                    self._recover("stall")  # at the MTU the NIC had; an MTU change put off follows
        except _Stopped:
            return counters
        finally:
            self.engine = None
            if self._monitor is not None:
                self._monitor.close()
                self._monitor = None
            if self.tap is not None:
                self.tap.close()

    def _mtu_asked(self) -> bool:
        """The engine's watch: the tap's MTU changed (True ends the engine's run)."""
        assert self._monitor is not None
        new = self._monitor.mtu_changes()
        if new is None or new == self.mtu:
            return False
        self._pending_mtu = new
        return True

    # ---- re-initialisation -----------------------------------------------------------------------------

    def reinit(self, mtu: int, why: str) -> int:
        """Close the current Nic (protocol teardown unless it is broken) and bring a new one up on
        the same tap asking for `mtu`; the MTU it got. A teardown the host leaves unanswered is
        raised (HostTimeoutError, the old Nic closed). With `persist`, a device that leaves during
        the bring-up is waited for and a bring-up the host leaves unanswered is tried again. `why`
        is the counter's cause (mtu, rescind, stall)."""
        self.state = REINIT
        started = time.monotonic()
        self.nic.close(strict=True)  # HostTimeoutError: its teardown went unanswered (closed anyway)
        self._counters["reinits"] += 1
        self._counters[f"reinits_{why}"] += 1
        unanswered = 0
        while True:
            before = self._identity()
            nic = self.new_nic(self.guid, mtu, self.queues)
            try:
                info = nic.open()
            except KeyboardInterrupt:
                nic.close()
                raise _Stopped() from None
            except HvuioError as err:
                nic.close()
                if self.persist and isinstance(err, HostTimeoutError) and not self._lost(before):
                    # the host still serves nothing (a stopped channel, a host being serviced)
                    self._counters["watchdog_control"] += 1
                    if not unanswered:
                        log.warning("%s: the host did not answer the NIC's bring-up (%s); trying again every "
                                    "%g s", self._tap_name(), err.message, BRINGUP_RETRY)
                    unanswered += 1
                    self._pause(BRINGUP_RETRY)
                    continue
                if not self.persist or not (isinstance(err, RescindedError) or self._lost(before)):
                    raise
                log.warning("%s: the device left during its bring-up (%s); waiting for it again",
                            self._tap_name(), err.message)
                self._counters["rescinds"] += 1
                self._wait_device()
                continue
            break
        self.nic = nic
        got = info.mtu or mtu
        log.info("%s: NIC re-initialised (%s) in %.2f s: MTU %d, %d queue(s)", self._tap_name(), why,
                 time.monotonic() - started, got, 1 + len(nic.subchannels))
        return got

    def _recover(self, why: str) -> None:
        """After a rescind or a stopped channel: wait for the device (rescind), then a new Nic at
        the tap's MTU; the tap follows when the host now allows less."""
        if why == "rescind":
            self.nic.close()  # forgets the removed device's binding
            self._wait_device()
        got = self.reinit(self.mtu, why)
        if got != self.mtu:
            log.warning("%s: the re-initialised NIC carries MTU %d, not %d; the tap follows", self._tap_name(),
                        got, self.mtu)
            self._set_tap_mtu(got)

    def _change_mtu(self, new: int) -> None:
        """The user set the tap's MTU to `new`: re-initialise with it, or roll the tap back."""
        self._pending_mtu = None
        old = self.mtu
        reason = self._refused_locally(new)
        if reason is None:
            log.info("%s: MTU %d asked on the tap (was %d); re-initialising NVSP and RNDIS", self._tap_name(),
                     new, old)
            got: int | None = None
            try:
                self.nic.close(strict=True)
            except HostTimeoutError:  # the host ignores control requests: recovered first (run)
                self._pending_mtu = new
                raise
            try:
                got = self.reinit(new, "mtu")
            except HvuioError as err:  # the host refused it: back to the old MTU below
                if isinstance(err, RescindedError) or self._device() is None:
                    raise
                reason = err.message
            if got == new:
                self.mtu = new
                self._counters["mtu_changes"] += 1
                return
            if reason is None:
                limited = self.nic.info.mtu_limited_by if self.nic.info is not None else None
                reason = limited or f"the NIC came up with MTU {got}"
            if got != old:
                self.reinit(old, "mtu")
        self._counters["mtu_rollbacks"] += 1
        log.warning("%s: MTU %d refused: %s; the tap is back at MTU %d", self._tap_name(), new, reason, old)
        self._set_tap_mtu(old)

    def _refused_locally(self, new: int) -> str | None:
        """Why `new` cannot be carried, known without asking the host (None: ask it)."""
        if new < limits.MIN_MTU:
            return f"below {limits.MIN_MTU}, the smallest MTU the protocol allows"
        if new > limits.MAX_MTU:
            return f"above {limits.MAX_MTU}, the largest MTU a netvsc NIC carries"
        info = self.nic.info
        if info is None:
            return None
        try:
            path, why = tap_mtu(new, None, gpa=self.nic.gpa_pool is not None,
                                send_section_size=info.send_section_size or 0)
        except HvuioError as err:
            return err.message
        return why if path < new else None

    def _set_tap_mtu(self, mtu: int) -> None:
        assert self.tap is not None and self._monitor is not None
        self._monitor.expect(mtu)
        self.tap.set_mtu(mtu)
        self.mtu = mtu

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` (the status file kept up to date); _Stopped when the stop fd is readable first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self._stop_fd], [], [], min(left, DEVICE_POLL))[0]:
                raise _Stopped()
            if self._on_tick is not None:
                self._on_tick()

    # ---- waiting for the device ------------------------------------------------------------------------

    def _wait_device(self) -> None:
        """Carrier off, then wait until the device is offered again and bound to uio_hv_generic
        (`guid` becomes the new device's); _Stopped when the stop fd is readable first."""
        self.state = WAITING
        if self.tap is not None and self.tap.carrier:
            self.tap.set_carrier(False)
        complained: set[str] = set()
        while True:
            if select.select([self._stop_fd], [], [], DEVICE_POLL)[0]:
                raise _Stopped()
            if self._on_tick is not None:
                self._on_tick()
            device = self._device()
            if device is None:
                continue
            try:
                bind_device(self.sysroot, device.guid)
            except (UsageError, UnsafeBindError, NotRootError, ModuleMissingError):
                raise  # waiting does not change these
            except HvuioError as err:  # a device that went again half way, or a kernel still settling
                if device.guid not in complained:
                    complained.add(device.guid)
                    log.warning("%s: binding the re-offered device %s failed: %s; trying again", self._tap_name(),
                                device.guid, err.message)
                continue
            if device.guid != self.guid:
                log.info("%s: device %s carries the NIC's MAC; using it in place of %s", self._tap_name(),
                         device.guid, self.guid)
            self.guid = device.guid
            self.state = REINIT
            return

    def _device(self) -> VmbusDevice | None:
        """The NIC's device if it is offered: the one of its instance GUID, else a synthetic NIC
        whose kernel interface has the tap's MAC (a re-offer under another GUID)."""
        mac = format_mac(self.nic.info.mac) if self.nic.info is not None and self.nic.info.mac else None
        try:
            devices = VmbusDevice.all(self.sysroot)
        except (OSError, HvuioError):
            return None
        by_mac = None
        for device in devices:
            try:
                if not device.is_nic or not device.path.is_dir():
                    continue
                if device.guid == self.guid:
                    return device
                if mac is not None and by_mac is None and any(m is not None and m.lower() == mac
                                                              for _, m in device.netdevs()):
                    by_mac = device
            except (OSError, HvuioError):  # a device half-way in or out of sysfs
                continue
        return by_mac

    def _identity(self) -> tuple[str, int] | None:
        """(GUID, relid) of the NIC's device as offered now (None: not offered). sysfs is read
        now: a re-offer under the same GUID has a new relid."""
        device = self._device()
        try:
            return None if device is None else (device.guid, device.relid)
        except (OSError, HvuioError):
            return None

    def _lost(self, before: tuple[str, int] | None) -> bool:
        """The device a bring-up began with (`before`) is gone, or another one now."""
        return before is None or self._identity() != before

    def _tap_name(self) -> str:
        return self.tap.name if self.tap is not None else self.guid
