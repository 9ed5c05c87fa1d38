"""The engine: brings a synthetic NIC up through NVSP and RNDIS, runs it, and tears it down.

What lives here:
  * `Nic` — the control plane of one device: resolve it (GUID or interface name), refuse it when
    another process has it open (the kernel would share the rings), open its UioHandle through
    the platform seam, build the primary `Channel`, drive `NvspGuest` then
    `RndisGuest` to RndisConfigured (VMBUS.md §1.13 steps 3–6), collect the negotiated values into a
    `NicInfo`, keep serving control traffic (link indications, keep-alives), and tear down in the
    protocol's order: RNDIS halt (waiting for its send completion), NVSP revoke receive buffer
    and send buffer, then close the channel and the uio fd, so the device can be opened again.
    The clock lives here: machines get `tick(time.monotonic())`; they raise HostTimeoutError.
  * `Engine` — the data path around a ready Nic: a tap with the NIC's MAC and MTU (carrier
    follows RNDIS link status), the C pump of hvuio.native.datapath in its thread; control packets the
    pump leaves (CONTROL_PENDING) are read in the pump's thread and fed to the machines; ticks
    are queued into that thread too (hvuio/native/datapath.py's threading rule). Teardown stops the pump
    first, so the halt and revokes run on the caller's thread with the rings to themselves.
  * `StopPipe` — SIGINT/SIGTERM/SIGHUP write a byte to a pipe; loops select on it.

What must not live here: ring code (channel.py, hvuio/native/), protocol parsing (proto/), sysfs
details (device/), printing (hvuio/cli/).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from hvuio.channel import Channel
from hvuio.device.bind import BUSY_SETTLE, check_not_busy, claim_device, resolve_device
from hvuio.device.platform import Platform
from hvuio.device.uio import UioHandle
from hvuio.errors import (HostProtocolError, HostRefusedError, HostTimeoutError, HvuioError,
                          LocalProtocolError, SysfsError, WrongDeviceError)
from hvuio.proto import events as ev
from hvuio.proto.events import NEED_DATA, Inbound, InboundKind
from hvuio.proto.nvsp import BufferGrant, NvspGuest, default_ndis_capabilities, rsc_ndis_capabilities
from hvuio.proto.offload import OffloadRequest, OffloadWanted
from hvuio.proto.rndis import RndisGuest
from hvuio.proto.sections import SectionPool, split_send_sections
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

log = logging.getLogger(__name__)

#: Longest a whole bring-up may take. Each request has its own 5 s limit in the machines
#: (proto/limits.py); NVSP may walk six versions, so the overall bound is generous.
BRINGUP_TIMEOUT: Final = 30.0
#: How long teardown waits for the host to complete the RNDIS halt send before revoking anyway
#: (Linux waits for the halt's send completion in rndis_filter_halt_device).
HALT_TIMEOUT: Final = 2.0
#: Control-loop wake-up period: machines are ticked at least this often.
TICK_PERIOD: Final = 0.5

NVSP_NAMES: Final[dict[int, str]] = {wn.NvspVersion.V1: "1", wn.NvspVersion.V2: "2", wn.NvspVersion.V4: "4",
                     wn.NvspVersion.V5: "5", wn.NvspVersion.V6: "6", wn.NvspVersion.V61: "6.1"}


def nvsp_name(version: int) -> str:
    return NVSP_NAMES.get(version, f"{version:#x}")


def ndis_name(version: int) -> str:
    return f"{version >> 16}.{version & 0xFFFF}"


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _tx_on(v: int) -> bool:
    return v in (wr.NdisOffloadParam.TX, wr.NdisOffloadParam.TX_RX)


def _rx_on(v: int) -> bool:
    return v in (wr.NdisOffloadParam.RX, wr.NdisOffloadParam.TX_RX)


def offloads_enabled(o: ev.OffloadsConfigured) -> dict[str, Any]:
    """What the host accepted, by data-path meaning (NicInfo.offloads["enabled"])."""
    on = wr.NdisOffloadToggle.ON
    return {"ip4_csum": _tx_on(o.ip4_checksum), "tx_csum_tcp4": _tx_on(o.tcp4_checksum),
            "tx_csum_udp4": _tx_on(o.udp4_checksum), "tx_csum_tcp6": _tx_on(o.tcp6_checksum),
            "tx_csum_udp6": _tx_on(o.udp6_checksum),
            "rx_csum": any(_rx_on(v) for v in (o.tcp4_checksum, o.udp4_checksum, o.tcp6_checksum,
                                              o.udp6_checksum)),
            "lso4": o.lsov2_ip4 == on, "lso6": o.lsov2_ip6 == on, "lso_max_size": o.lso_max_size,
            "rsc": o.rsc_ip4 == on and o.rsc_ip6 == on}


def datapath_offloads(o: ev.OffloadsConfigured | None) -> Any:
    """hvuio.native.datapath.Offloads for what the host accepted (all off for None)."""
    from hvuio.native.datapath import Offloads

    if o is None:
        return Offloads()
    d = offloads_enabled(o)
    return Offloads(tx_csum_tcp4=d["tx_csum_tcp4"], tx_csum_udp4=d["tx_csum_udp4"],
                    tx_csum_tcp6=d["tx_csum_tcp6"], tx_csum_udp6=d["tx_csum_udp6"],
                    lso4=d["lso4"], lso6=d["lso6"], lso_max_size=d["lso_max_size"],
                    rx_csum=d["rx_csum"], rsc=d["rsc"])


@dataclass
class NicInfo:
    """What bring-up negotiated (None until known)."""

    device: str
    uio: str
    relid: int
    monitored: bool
    ring_size: int
    nvsp_version: int | None = None
    ndis_version: int | None = None
    rndis_version: str | None = None
    #: the host's limits for several RNDIS packets per send (max_packets, alignment, max_bytes)
    tx_aggregation: dict[str, int] = field(default_factory=dict)
    mtu: int | None = None
    mac: str | None = None
    permanent_mac: str | None = None
    recv_buffer_size: int = 0
    recv_section_size: int | None = None
    recv_section_count: int | None = None
    send_buffer_size: int = 0
    send_section_size: int | None = None
    send_section_count: int | None = None
    control_sections: int | None = None
    link_up: bool | None = None
    link_speed_bps: int | None = None
    queues: int = 1
    offloads: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nvsp"] = None if self.nvsp_version is None else nvsp_name(self.nvsp_version)
        d["ndis"] = None if self.ndis_version is None else ndis_name(self.ndis_version)
        return d


class StopPipe:
    """A pipe that SIGINT/SIGTERM/SIGHUP (or `stop()`) make readable; install() / restore() the handlers."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signal: int | None = None
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Children forked without exec (pyroute2 forks to open sockets in a netns) inherit this
        # handler and the pipe; a signal meant for them must not stop us.
        if os.getpid() != self._pid:
            os._exit(128 + signum)
        self.signal = signum
        self.stop()

    def stop(self) -> None:
        try:
            os.write(self.write_fd, b"s")
        except (BlockingIOError, OSError):
            pass

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # HUP: the terminal went away
            self._old[sig] = signal.signal(sig, self._handler)

    @property
    def stopped(self) -> bool:
        return bool(select.select([self.read_fd], [], [], 0)[0])

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> StopPipe:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Nic:
    """The control plane of one synthetic NIC (see module docstring)."""

    def __init__(self, sysroot: Path | str, name: str, *, platform: Platform | None = None, mtu: int = 1500,
                 versions: tuple[int, ...] = wn.SUPPORTED_NVSP_VERSIONS,
                 clock: Callable[[], float] = time.monotonic, offload: bool = True) -> None:
        self.sysroot = Path(sysroot)
        self.name = name
        #: negotiate NDIS offloads (checksum, LSOv2, RSC) with the host; False sets them all off
        self.offload = offload
        #: what the host accepted (None: offloads off, refused, or not negotiated yet)
        self.offloads: ev.OffloadsConfigured | None = None
        self.mtu = mtu
        self.versions = versions
        self.clock = clock
        self._platform = platform
        self.handle: UioHandle | None = None
        self.channel: Channel | None = None
        self.nvsp: NvspGuest | None = None
        self.rndis: RndisGuest | None = None
        self.info: NicInfo | None = None
        self.ready = False
        #: the error that made the channel unusable (rescind, corrupt ring, protocol error):
        #: close() then skips the protocol teardown and only unmaps and closes (VMBUS.md §4 item 20)
        self.broken: HvuioError | None = None
        self.data_sections = 0
        self.on_link: Callable[[bool], None] | None = None
        #: readable fd (StopPipe.read_fd) that aborts a bring-up in progress with KeyboardInterrupt
        self.stop_fd: int | None = None
        self._lock: int | None = None  # claim_device's flock fd while open
        self.counters: dict[str, int] = {"link_changes": 0, "keepalives": 0, "indications": 0,
                                         "requests_failed": 0, "unknown_completions": 0}

    # ---- bring-up ---------------------------------------------------------------------------------

    def open(self, timeout: float = BRINGUP_TIMEOUT) -> NicInfo:
        """Open the device and negotiate until RNDIS is configured; NicInfo of the result.

        A closed Nic may be opened again: every open starts fresh machines (the host does too).
        """
        if self.channel is not None:
            raise LocalProtocolError("Nic.open() on an open NIC; close() it first")
        self.nvsp = self.rndis = None
        self.info, self.ready, self.broken, self.data_sections = None, False, None, 0
        self.offloads = None
        device = resolve_device(self.sysroot, self.name)
        if not device.is_nic:
            raise WrongDeviceError(f"{device.guid} is a {device.class_name} device, not a synthetic NIC")
        if device.uio is None:
            raise SysfsError(f"{device.guid} is not bound to uio_hv_generic (driver: {device.driver or 'none'})",
                             f"Run 'hvuio bind {self.name}' first.")
        # the kernel lets a second open share the rings; two drivers of one channel corrupt both
        self._lock = claim_device(device)
        try:
            check_not_busy(device, settle=BUSY_SETTLE)
            handle = UioHandle.open(device, self._platform)
        except BaseException:
            self._abort()
            raise
        self.handle = handle
        try:
            recv, send = handle.recv_buffer, handle.send_buffer
            if recv is None or send is None or handle.recv_gpadl is None or handle.send_gpadl is None:
                raise WrongDeviceError(f"{device.guid} has no receive/send buffer maps")
            chan = Channel.primary(handle)
            self.channel = chan
            self.info = NicInfo(device=device.guid, uio=handle.uio.name, relid=device.relid,
                                monitored=device.monitor_id is not None, ring_size=handle.ring_size,
                                recv_buffer_size=len(recv), send_buffer_size=len(send))
            chan.unmask()
            self.nvsp = NvspGuest(recv_buf=BufferGrant(handle.recv_gpadl, len(recv)),
                                  send_buf=BufferGrant(handle.send_gpadl, len(send)),
                                  mtu=self.mtu, versions=self.versions,
                                  capabilities=rsc_ndis_capabilities if self.offload
                                  else default_ndis_capabilities)
            chan.send_all(self.nvsp.start())
            self._run_until(lambda: self.ready, timeout, "bring-up", interruptible=True)
        except HostRefusedError as err:
            if "every version" in err.message:
                err.hint = ("The host accepts none of the NVSP versions offered; "
                            "raise --max-nvsp or use a newer host.")
            self._abort()
            raise
        except BaseException:
            self._abort()
            raise
        return self.info

    def _run_until(self, done: Callable[[], bool], timeout: float, what: str, interruptible: bool = False) -> None:
        chan = self._chan()
        deadline = self.clock() + timeout
        while not done():
            if interruptible and self.stop_fd is not None and select.select([self.stop_fd], [], [], 0)[0]:
                raise KeyboardInterrupt(f"{what} interrupted")
            now = self.clock()
            if now >= deadline:
                raise HostTimeoutError(f"{what} did not finish within {timeout:g} s")
            self._tick(now)
            if chan.wait(min(TICK_PERIOD, deadline - now)):
                self.process(chan.receive())

    def poll(self, timeout: float) -> None:
        """Serve control traffic for up to `timeout` seconds (one wait, then what arrived)."""
        chan = self._chan()
        try:
            self._tick(self.clock())
            if chan.wait(timeout):
                self.process(chan.receive())
        except HvuioError as err:
            self.broken = self.broken or err
            raise

    def serve(self, stop_fd: int, on_tick: Callable[[], None] | None = None) -> None:
        """Serve control traffic until `stop_fd` is readable (link changes, keep-alives);
        `on_tick()` runs about every TICK_PERIOD seconds (status file updates)."""
        irq = self._chan().interrupt.fileno()
        next_tick = self.clock()
        while True:
            self.poll(0)
            if on_tick is not None and self.clock() >= next_tick:
                on_tick()
                next_tick = self.clock() + TICK_PERIOD
            ready, _, _ = select.select([stop_fd, irq], [], [], TICK_PERIOD)
            if stop_fd in ready:
                return

    def _tick(self, now: float) -> None:
        chan = self._chan()
        for m in (self.nvsp, self.rndis):
            if m is not None and m.error is None and m.state.value not in ("revoked", "halted"):
                chan.send_all(m.tick(now))

    # ---- routing ------------------------------------------------------------------------------------

    def process(self, items: list[Inbound]) -> None:
        """Feed copied-out packets to the machines, send their answers, act on their events."""
        chan = self._chan()
        nvsp = self._nvsp()
        for item in items:
            if (item.kind is InboundKind.COMPLETION and not nvsp.expects(item.trans_id)
                    and (self.rndis is None or not self.rndis.expects(item.trans_id))):
                # VMBUS.md §4.15: a completion that matches no outstanding request is dropped (counted)
                self.counters["unknown_completions"] += 1
                log.warning("dropped a completion with trans_id %#x: no request of ours is waiting for it",
                            item.trans_id)
                continue
            if item.kind is InboundKind.RNDIS or (item.kind is InboundKind.COMPLETION
                                                  and self.rndis is not None and self.rndis.expects(item.trans_id)):
                if self.rndis is None:
                    raise HostProtocolError(f"RNDIS message (trans_id {item.trans_id:#x}) before RNDIS was started")
                chan.send_all(self.rndis.receive(item))
            else:
                chan.send_all(nvsp.receive(item))
            self._events()

    def _events(self) -> None:
        for machine in (self.nvsp, self.rndis):
            while machine is not None and (e := machine.next_event()) is not NEED_DATA:
                self._handle(e)  # type: ignore[arg-type]

    def _handle(self, e: ev.Event) -> None:
        info, chan = self._info(), self._chan()
        log.debug("event %r", e)
        if isinstance(e, ev.NvspReady):
            info.nvsp_version, info.ndis_version = e.version, e.ndis_version
        elif isinstance(e, ev.RecvBufReady):
            s = e.sections[0]
            info.recv_section_size, info.recv_section_count = s.sub_alloc_size, s.num_sub_allocs
            chan.set_recv_section(s.sub_alloc_size)
        elif isinstance(e, ev.SendBufReady):
            self.data_sections, first_ctl = split_send_sections(e.count)
            info.send_section_size, info.send_section_count = e.section_size, e.count
            info.control_sections = e.count - first_ctl
            chan.set_control_sections(SectionPool(first_ctl, e.count - first_ctl, e.section_size))
            assert info.ndis_version is not None
            assert info.nvsp_version is not None
            self.rndis = RndisGuest(ndis_version=info.ndis_version, offload=(
                OffloadWanted(rsc=info.nvsp_version >= wn.NvspVersion.V61) if self.offload
                else OffloadRequest()))
            info.offloads = {"requested": self.offload, "enabled": {}}
            chan.send_all(self.rndis.start())
        elif isinstance(e, ev.RndisReady):
            info.rndis_version = f"{e.major_version}.{e.minor_version}"
            info.tx_aggregation = {"max_packets": e.max_packets_per_message, "alignment": e.alignment,
                                   "max_bytes": e.max_transfer_size}
        elif isinstance(e, ev.MacAddress):
            if e.permanent:
                info.permanent_mac = str(e)
                info.mac = info.mac or str(e)
            else:
                info.mac = str(e)
        elif isinstance(e, ev.Mtu):
            info.mtu = e.mtu
        elif isinstance(e, ev.LinkStatus):
            changed = info.link_up is not None and info.link_up != e.up
            info.link_up = e.up
            if changed:
                self.counters["link_changes"] += 1
            if self.on_link is not None:
                self.on_link(e.up)
        elif isinstance(e, ev.LinkSpeed):
            info.link_speed_bps = e.bits_per_second
        elif isinstance(e, ev.OffloadCaps):
            info.offloads["host"] = {
                "ip4_tx_csum": e.ip4_tx_csum, "ip4_rx_csum": e.ip4_rx_csum, "ip6_tx_csum": e.ip6_tx_csum,
                "ip6_rx_csum": e.ip6_rx_csum, "lsov2_ip4_max_size": e.lsov2_ip4_max_size,
                "lsov2_ip6_max_size": e.lsov2_ip6_max_size, "rsc_ip4": e.rsc_ip4, "rsc_ip6": e.rsc_ip6}
        elif isinstance(e, ev.OffloadsConfigured):
            self.offloads = e
            info.offloads["enabled"] = offloads_enabled(e)
        elif isinstance(e, ev.RndisConfigured):
            if info.mtu is None:
                info.mtu = self.mtu
            self.ready = True
        elif isinstance(e, ev.ControlSendComplete):
            chan.release(e.trans_id)
        elif isinstance(e, ev.KeepaliveAnswered):
            self.counters["keepalives"] += 1
        elif isinstance(e, ev.RequestFailed):
            self.counters["requests_failed"] += 1
            if e.oid in (wr.Oid.TCP_OFFLOAD_PARAMETERS, wr.Oid.TCP_OFFLOAD_HARDWARE_CAPABILITIES):
                log.warning("host refused %s (status %#x): running without offloads",
                            wr.Oid(e.oid).name, e.status)
            else:
                log.info("RNDIS request for OID %#x failed with status %#x", e.oid, e.status)
        elif isinstance(e, (ev.NetworkChange, ev.StatusIndication, ev.IndirectionTable, ev.VfAssociation)):
            self.counters["indications"] += 1
            log.debug("host indication: %r", e)

    # ---- teardown -------------------------------------------------------------------------------------

    def close(self) -> None:
        """RNDIS halt, NVSP revoke, close the channel and the uio fd; the device may be reopened."""
        try:
            if self.channel is not None and not self.channel.closed and self.broken is None:
                self._stop_protocols()
        except HvuioError as err:
            log.warning("teardown: %s", err.message)
        finally:
            self._abort()

    def _stop_protocols(self) -> None:
        chan = self._chan()
        rndis, nvsp = self.rndis, self.nvsp
        if rndis is not None and rndis.error is None and rndis.state.value not in ("halted", "idle"):
            msgs = rndis.halt()
            chan.send_all(msgs)
            halt_xids = {m.trans_id for m in msgs}
            try:
                self._run_until(lambda: not any(rndis.expects(x) for x in halt_xids), HALT_TIMEOUT, "RNDIS halt")
            except HostTimeoutError as err:
                log.warning("teardown: %s; revoking the buffers anyway", err.message)
        if nvsp is not None and nvsp.error is None and nvsp.state.value not in ("revoked", "idle"):
            chan.send_all(nvsp.stop())
            self._events()

    def _abort(self) -> None:
        """Close without protocol messages (after an error, or as the last teardown step)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self._lock is not None:
            os.close(self._lock)  # releases the claim (flock)
            self._lock = None
        self.ready = False

    def counter_snapshot(self) -> dict[str, int]:
        """Control-path counters of this Nic and, while open, of its primary channel."""
        out = dict(self.counters)
        if self.channel is not None:
            out.update({f"channel_{k}": v for k, v in self.channel.counters.as_dict().items()})
        return out

    # ---- helpers --------------------------------------------------------------------------------------

    def _chan(self) -> Channel:
        if self.channel is None:
            raise LocalProtocolError("NIC is not open")
        return self.channel

    def _nvsp(self) -> NvspGuest:
        if self.nvsp is None:
            raise LocalProtocolError("NVSP was not started")
        return self.nvsp

    def _info(self) -> NicInfo:
        if self.info is None:
            raise LocalProtocolError("NIC is not open")
        return self.info

    def __enter__(self) -> Nic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine:
    """A ready Nic plus a tap and the C data path pump (see module docstring)."""

    def __init__(self, nic: Nic, *, ifname: str | None = None, netns: str | None = None,
                 vnet_hdr: bool = True, busy_poll_us: int = 0, tx_aggregation: bool = True) -> None:
        self.nic = nic
        #: batch small frames into one send within the host's RNDIS limits (NicInfo.tx_aggregation)
        self.tx_aggregation = tx_aggregation
        self.ifname = ifname
        self.netns = netns
        self.vnet_hdr = vnet_hdr
        self.busy_poll_us = busy_poll_us
        self.tap_name: str | None = None
        self.counters: dict[str, int] = {}
        self._exit_r, self._exit_w = -1, -1
        self._dp: Any = None

    def live_counters(self) -> dict[str, int]:
        """The pump's counters now (read while it runs: each value is one aligned u64 load)."""
        dp = self._dp
        return dict(self.counters) if dp is None else dict(dp.counters())

    def run(self, stop_fd: int, on_ready: Callable[[Engine], None] | None = None,
            on_tick: Callable[[], None] | None = None) -> dict[str, int]:
        """Open the tap, pump until `stop_fd` is readable or the pump fails; the pump's counters.

        The Nic stays open (the caller closes it); the tap is removed on return.
        """
        from hvuio.native.datapath import MAX_SECTIONS, DataPath, TxAggregation
        from hvuio.netdev.tap import Tap

        nic = self.nic
        info, chan = nic._info(), nic._chan()
        handle = nic.handle
        if handle is None or not nic.ready or info.mac is None or info.mtu is None:
            raise LocalProtocolError("Engine.run needs a Nic that finished bring-up")
        assert handle.recv_buffer is not None and handle.send_buffer is not None
        assert info.recv_section_size is not None and info.send_section_size is not None
        offloads = datapath_offloads(nic.offloads)
        tap = Tap.open(self.ifname, bytes.fromhex(info.mac.replace(":", "")), info.mtu,
                       netns=self.netns, vnet_hdr=self.vnet_hdr,
                       offload=offloads.tap_flags() if self.vnet_hdr else 0)
        self.tap_name = tap.name
        dp: DataPath | None = None
        self._exit_r, self._exit_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            tap.set_carrier(bool(info.link_up))
            tap.up()
            nic.on_link = tap.set_carrier
            mid = handle.device.monitor_id
            dp = DataPath(tx_ring=chan.tx, rx_ring=chan.rx, recv_buf=handle.recv_buffer,
                          recv_section_size=info.recv_section_size, send_buf=handle.send_buffer,
                          send_section_size=info.send_section_size,
                          send_section_count=min(nic.data_sections, MAX_SECTIONS),
                          tap_fd=tap.fileno(), irq_fd=handle.interrupt.fileno(),
                          monitor_page=handle.monitor_page if mid is not None else None, monitor_id=mid,
                          mtu=info.mtu, vnet_hdr=tap.vnet_hdr, busy_poll_us=self.busy_poll_us,
                          offloads=offloads, tap_offload=tap.offload != 0,
                          tx_aggregation=TxAggregation(**info.tx_aggregation)
                          if self.tx_aggregation and info.tx_aggregation else None)
            self._dp = dp
            dp.start(self._on_control, on_exit=self._on_exit)
            if on_ready is not None:
                on_ready(self)
            while True:
                ready, _, _ = select.select([stop_fd, self._exit_r], [], [], TICK_PERIOD)
                if ready:
                    break
                dp.call_soon(self._pump_tick)
                if on_tick is not None:
                    on_tick()
            dp.stop()
            self.counters = dp.counters()
            if dp.error is not None:
                if isinstance(dp.error, HvuioError):
                    nic.broken = nic.broken or dp.error
                raise dp.error
            return self.counters
        finally:
            nic.on_link = None
            if dp is not None:
                try:
                    dp.stop()
                except LocalProtocolError as err:
                    log.warning("teardown: %s", err.message)
                self.counters = self.counters or dp.counters()
                self._dp = dp = None  # drop its references to the rings and buffers before the Nic closes
            for fd in (self._exit_r, self._exit_w):
                os.close(fd)
            self._exit_r = self._exit_w = -1
            tap.close()

    def _on_control(self, dp: Any) -> None:
        """In the pump thread: the packet the pump left goes to the machines."""
        nic = self.nic
        try:
            nic.process(nic._chan().ingest(dp.read_control()))
        except HvuioError as err:
            nic.broken = nic.broken or err
            raise

    def _pump_tick(self) -> None:
        """In the pump thread: time for the machines (they raise HostTimeoutError on a late reply)."""
        nic = self.nic
        try:
            nic._tick(nic.clock())
        except HvuioError as err:
            nic.broken = nic.broken or err
            raise

    def _on_exit(self, result: Any, error: BaseException | None) -> None:
        if error is not None:
            log.debug("data path ended with %r", error)
        try:
            os.write(self._exit_w, b"x")
        except OSError:
            pass
