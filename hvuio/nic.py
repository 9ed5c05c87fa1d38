"""The control plane of one synthetic NIC: bring it up through NVSP and RNDIS, serve it, tear it down.

What lives here:
  * `Nic` — resolve the device (GUID or interface name), refuse it when another process has it
    open (the kernel would share the rings), open its UioHandle through the platform seam, build
    the primary `Channel`, and run `NetvscGuest` (hvuio/proto/netvsc.py) over it: feed it what the
    channel reads, perform the effects it returns (write its `Send`s, act on its events) until
    RNDIS is configured (VMBUS.md §1.13 steps 3–6); keep serving control traffic (link
    indications and network changes, turned into carrier changes and peer notifications by
    hvuio/linkwatch.py through `on_link` / `on_notify_peers`; a host keep-alive is dropped and
    counted, VMBUS.md §4 item 21); tear down in the
    protocol's order: packet filter 0 (waiting for its reply), RNDIS halt (waiting for its
    send completion), NVSP revoke receive buffer and send buffer, then close the channel and the
    uio fd, so the device can be opened again; a NIC that ends rescinded also forgets the
    device's binding (journal, lock) once the device has left sysfs. The clock lives here: the guest gets
    `tick(time.monotonic())`; its machines raise HostTimeoutError. What a data path needs of a
    NIC that is up, it gets through public accessors (`negotiated`, `primary_channel`,
    `uio_handle`, `data_sections`, `tick()`, `take_control_packet()`, `mark_broken()`).
  * Subchannels: when the host granted some (NetvscGuest asks for `channels` - 1), open() waits
    for the kernel to open each (its `ring` file, bounded by `subchannel_timeout`, one-sentence
    error with a hint when one never appears) and maps them (`subchannels`, index order); NVSP
    and RNDIS stay on the primary (netvsc spec A.4). A queue-count change is a new open.
  * The NIC's guest-memory pool (VMBUS.md §3.7): unless GPA-direct is off, `open()` asks the
    platform for `NIC_POOL_SIZE` bytes (GuestMemoryUnavailable: one warning, the send buffer
    only), owns it and closes it after the channel: pages [0, 16) are the control pages
    (proto/sections.py, channel.py), the rest the data path's GPA TX area (`gpa_pool`), None
    when there is none or the control path fell back to send sections.
  * The MTU that never lies: the tap's MTU follows nicinfo.py's rule (min of asked, the host's
    OID_GEN_MAXIMUM_FRAME_SIZE and what the TX path carries), with a warning naming the limit
    when below the MTU asked. What bring-up negotiated is a `NicInfo` (hvuio/nicinfo.py).
  * Accelerated networking (`vf`, `up --vf auto`): SR-IOV offered in the NDIS config, the VF
    events of the machines handed to `vf_side` (hvuio/nicvf.py), which switches the data path
    through `_vf_switch` and the engine's netdev port; `vf_tick()` in the rings' thread; at
    teardown the data path goes back to synthetic (bounded wait) before the packet filter 0.
  * `trace` (hvuio/trace/writer.py, `up --trace`): handed to the primary channel, which records
    every control packet in it; the engine gives it to the data path for the frames.

What must not live here: ring code (channel.py, hvuio/native/), protocol parsing or the routing
between NVSP and RNDIS (proto/), the offload mapping (offloads.py), sysfs details (device/), the
tap and the data path (engine.py, netdev/), printing (hvuio/cli/).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hvuio.channel import Channel
from hvuio.device.bind import BUSY_SETTLE, check_not_busy, claim_device, forget_device, resolve_device
from hvuio.device.guestmem import (CONTROL_AREA, CONTROL_PAGES, NIC_POOL_SIZE, GuestMemory, GuestMemoryUnavailable,
                                   GuestRegion)
from hvuio.device.platform import Platform, platform_for
from hvuio.device.sysfs import VmbusDevice
from hvuio.device.uio import UioHandle
from hvuio.errors import (HostRefusedError, HostTimeoutError, HvuioError, LocalProtocolError,
                          RescindedError, SysfsError, WrongDeviceError)
from hvuio.linkwatch import Carrier, LinkAction, LinkWatch
from hvuio.native.datapath_config import TxAggregation
from hvuio.native.ring import Packet
from hvuio.offloads import NicOffloads
from hvuio.proto import events as ev
from hvuio.proto import limits
from hvuio.proto.events import Inbound, Send
from hvuio.proto.netvsc import Effect, NetvscGuest
from hvuio.nicinfo import NicInfo, tap_mtu
from hvuio.nicvf import NicVf
from hvuio.proto.nvsp import BufferGrant
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

if TYPE_CHECKING:
    from hvuio.trace.writer import Trace

log = logging.getLogger(__name__)

#: Longest a whole bring-up may take. Each request has its own 5 s limit in the machines
#: (proto/limits.py); NVSP may walk six versions, so the overall bound is generous.
BRINGUP_TIMEOUT: Final = 30.0
#: How long teardown waits for the host to answer the packet filter 0 before halting anyway, and
#: for it to complete the RNDIS halt send before revoking anyway
#: (Linux waits for the halt's send completion in rndis_filter_halt_device).
HALT_TIMEOUT: Final = 2.0
#: How long closing a rescinded NIC waits for its device to leave sysfs before it forgets the
#: device's binding (bind journal and lock; hvuio.device.bind.forget_device).
RESCIND_SETTLE: Final = 2.0
#: Control-loop wake-up period: machines are ticked at least this often.
TICK_PERIOD: Final = 0.5
#: How long open() waits for the ring files of the granted subchannels (DPDK: 10 ms x 1000).
SUBCHANNEL_TIMEOUT: Final = 10.0

class Nic:
    """The control plane of one synthetic NIC (see module docstring)."""

    def __init__(self, sysroot: Path | str, name: str, *, platform: Platform | None = None, mtu: int = 1500,
                 versions: tuple[int, ...] = wn.SUPPORTED_NVSP_VERSIONS,
                 clock: Callable[[], float] = time.monotonic, offload: bool = True, gpa: bool = True,
                 channels: int = 1, trace: Trace | None = None,
                 subchannel_timeout: float = SUBCHANNEL_TIMEOUT, vf: bool = False) -> None:
        self.sysroot = Path(sysroot)
        #: where the channel records every control packet (and the engine's data path the frames)
        self.trace = trace
        self.name = name
        #: send by guest-physical address when the platform has guest memory; False: send buffer only
        self.gpa = gpa
        #: the guest-memory pool while open (None: none, the send buffer carries everything)
        self.memory: GuestMemory | None = None
        #: negotiate NDIS offloads (checksum, LSOv2, RSC) with the host; False sets them all off
        self.offload = offload
        self.mtu = mtu
        #: channels to negotiate, the primary included (NetvscGuest asks the host for the rest as
        #: subchannels; open() maps every granted one: `subchannels`)
        self.channels = channels
        self.subchannel_timeout = subchannel_timeout
        #: the granted subchannels, mapped, in index order (queue k = subchannels[k - 1])
        self.subchannels: list[Channel] = []
        self.versions = versions
        self.clock = clock
        self._platform = platform
        self.handle: UioHandle | None = None
        self.channel: Channel | None = None
        #: NVSP and RNDIS of the primary channel (a fresh one for every open)
        self.guest: NetvscGuest | None = None
        self.info: NicInfo | None = None
        self.ready = False
        #: the error that made the channel unusable (rescind, corrupt ring, protocol error):
        #: close() then skips the protocol teardown and only unmaps and closes (VMBUS.md §4 item 20)
        self.broken: HvuioError | None = None
        #: the tap's carrier follows these calls (hvuio/linkwatch.py: link changes, network change)
        self.on_link: Callable[[bool], None] | None = None
        #: announce the NIC's addresses (a repeated media connect, hvuio/linkwatch.py)
        self.on_notify_peers: Callable[[], None] | None = None
        self._links: LinkWatch | None = None  # from the bring-up's link query on
        #: accelerated networking: offer SR-IOV and move the data path to the host's VF (`--vf auto`)
        self.vf = vf
        #: the VF side (hvuio/nicvf.py); the engine sets its `port` while the tap runs
        self.vf_side = NicVf(enabled=vf, switch=self._vf_switch, clock=clock, publish=self._vf_publish)
        #: readable fd (StopPipe.read_fd) that aborts a bring-up in progress with KeyboardInterrupt
        self.stop_fd: int | None = None
        self._lock: int | None = None  # claim_device's flock fd while open
        self._device: VmbusDevice | None = None  # the device claimed while open
        self.counters: dict[str, int] = {"link_changes": 0, "keepalives_dropped": 0, "indications": 0,
                                         "requests_failed": 0, "unknown_completions": 0,
                                         "control_fallbacks": 0, "network_changes": 0,
                                         "peer_notifications": 0, "send_table_fixed": 0,
                                         "link_speed_changes": 0, "indications_dropped": 0}

    # ---- bring-up ---------------------------------------------------------------------------------

    def open(self, timeout: float = BRINGUP_TIMEOUT) -> NicInfo:
        """Open the device and negotiate until RNDIS is configured; NicInfo of the result.

        A closed Nic may be opened again: every open starts a fresh NetvscGuest (the host does too).
        """
        if self.channel is not None:
            raise LocalProtocolError("Nic.open() on an open NIC; close() it first")
        self.guest = None
        self.info, self.ready, self.broken = None, False, None
        self._links = None
        device = resolve_device(self.sysroot, self.name)
        if not device.is_nic:
            raise WrongDeviceError(f"{device.guid} is a {device.class_name} device, not a synthetic NIC")
        if device.uio is None:
            raise SysfsError(f"{device.guid} is not bound to uio_hv_generic (driver: {device.driver or 'none'})",
                             f"Run 'hvuio bind {self.name}' first.")
        # the kernel lets a second open share the rings; two drivers of one channel corrupt both
        self._lock = claim_device(device)
        self._device = device
        platform = self._platform if self._platform is not None else platform_for(self.sysroot)
        try:
            check_not_busy(device, settle=BUSY_SETTLE)
            handle = UioHandle.open(device, platform)
        except BaseException as err:
            self._abort(err)
            raise
        self.handle = handle
        try:
            recv, send = handle.recv_buffer, handle.send_buffer
            if recv is None or send is None or handle.recv_gpadl is None or handle.send_gpadl is None:
                raise WrongDeviceError(f"{device.guid} has no receive/send buffer maps")
            chan = Channel.primary(handle)
            chan.trace = self.trace
            self.channel = chan
            self.info = NicInfo(device=device.guid, uio=handle.uio.name, relid=device.relid,
                                monitored=device.monitor_id is not None, ring_size=handle.ring_size,
                                recv_buffer_size=len(recv), send_buffer_size=len(send), mtu_asked=self.mtu)
            self.vf_side.reset()
            self.info.tx_path = self._open_memory(platform)
            if self.memory is not None:
                chan.control_pages = self.memory.whole.region(0, CONTROL_AREA)
            chan.unmask()
            self.guest = NetvscGuest(recv_buf=BufferGrant(handle.recv_gpadl, len(recv)),
                                     send_buf=BufferGrant(handle.send_gpadl, len(send)),
                                     mtu=self.mtu, versions=self.versions, offload=self.offload,
                                     control_pages=CONTROL_PAGES if self.memory is not None else 0,
                                     channels=self.channels, name=chan.name, sriov=self.vf)
            guest = self.guest
            self._perform(guest.start())
            self._run_until(lambda: guest.ready, timeout, "bring-up", interruptible=True)
            self._open_subchannels(handle, guest.channels - 1)
            self.ready = True
        except HostRefusedError as err:
            if "every version" in err.message:
                err.hint = ("The host accepts none of the NVSP versions offered; "
                            "raise --max-nvsp or use a newer host.")
            self._abort(err)
            raise
        except BaseException as err:
            self._abort(err)
            raise
        return self.info

    def _open_subchannels(self, handle: UioHandle, count: int) -> None:
        """Map the `count` granted subchannels once the kernel has opened them (their `ring`
        files, VMBUS.md §1.7); they get no NVSP/RNDIS of their own (Linux netvsc_sc_open)."""
        if count <= 0:
            return
        section = self._info().recv_section_size
        for relid in handle.wait_subchannels(count, self.subchannel_timeout):
            chan = Channel.subchannel(handle, relid)
            self.subchannels.append(chan)  # closed by _abort from here on
            chan.trace = self.trace
            if section is not None:
                chan.set_recv_section(section)
        self._info().queues = 1 + count
        log.info("%d queues: the primary and subchannel(s) %s", 1 + count,
                 ", ".join(str(c.relid) for c in self.subchannels))

    def _open_memory(self, platform: Platform) -> str:
        """Get the guest-memory pool (unless GPA-direct is off); the TX path's description."""
        if not self.gpa:
            return "send buffer (GPA-direct turned off: --no-gpa)"
        try:
            memory = platform.guest_memory(NIC_POOL_SIZE)
        except GuestMemoryUnavailable as err:
            log.warning("no guest memory for GPA-direct sends: %s; using the send buffer only", err.message)
            return f"send buffer ({err.message})"
        self.memory = memory  # closed by _abort, also when the check below fails
        if memory.size != NIC_POOL_SIZE:
            raise LocalProtocolError(f"guest-memory pool of {memory.size} bytes for {NIC_POOL_SIZE} asked")
        return f"gpa-direct ({memory.kind})"

    @property
    def gpa_pool(self) -> GuestRegion | None:
        """The data path's GPA TX area of the pool (bytes [64 KiB, 2 MiB)), or None: no pool, or
        the host did not take GPA-direct control messages (then it gets none for data either)."""
        memory, guest = self.memory, self.guest
        if memory is None or memory.closed or (guest is not None and guest.fallback_reason is not None):
            return None
        return memory.whole.region(CONTROL_AREA, memory.size - CONTROL_AREA)

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
            self.mark_broken(err)
            raise

    def serve(self, stop_fd: int, on_tick: Callable[[], None] | None = None) -> None:
        """Serve control traffic until `stop_fd` is readable (link changes, indications);
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
        self._perform(self._guest().tick(now))
        if self._links is not None:
            self._link_actions(self._links.tick(now))

    # ---- for the data path (hvuio/engine.py) ----------------------------------------------------------

    @property
    def negotiated(self) -> NicInfo:
        """The NicInfo of the open NIC (LocalProtocolError when it is not open)."""
        return self._info()

    @property
    def primary_channel(self) -> Channel:
        """The open NIC's primary channel (LocalProtocolError when it is not open)."""
        return self._chan()

    @property
    def uio_handle(self) -> UioHandle:
        """The open device: its maps, interrupt fd and monitor page (LocalProtocolError when closed)."""
        if self.handle is None:
            raise LocalProtocolError("NIC is not open")
        return self.handle

    @property
    def data_sections(self) -> int:
        """Send sections [0, data_sections) belong to the data path (0 until the send buffer is connected)."""
        return self.guest.data_sections if self.guest is not None else 0

    def tick(self) -> None:
        """Time for the machines (they raise HostTimeoutError on a late reply); in the thread
        that owns the rings."""
        try:
            self._tick(self.clock())
        except HvuioError as err:
            self.mark_broken(err)
            raise

    def take_control_packet(self, pkt: Packet) -> None:
        """One packet the data path left in the inbound ring for the control plane (read by it)."""
        try:
            self.process(self._chan().ingest(pkt))
        except HvuioError as err:
            self.mark_broken(err)
            raise

    def read_subchannel_packet(self, chan: Channel, pkt: Packet) -> list[Inbound]:
        """A packet a subchannel's pump left for the control path, taken apart on that
        subchannel (in its pump's thread: transfer pages are acked on the channel they came on);
        what it carries goes to `process` in the primary's thread."""
        try:
            return chan.ingest(pkt)
        except HvuioError as err:
            self.mark_broken(err)
            raise

    def mark_broken(self, err: HvuioError) -> None:
        """The channel is unusable after `err` (the first such error is kept): close() skips the
        protocol teardown."""
        self.broken = self.broken or err

    # ---- the guest's effects ----------------------------------------------------------------------------

    def process(self, items: list[Inbound]) -> None:
        """Feed copied-out packets to the guest; write what it sends, act on its events."""
        guest = self._guest()
        for item in items:
            self._perform(guest.receive(item))

    def _perform(self, effects: list[Effect]) -> None:
        chan = self._chan()
        for effect in effects:
            if isinstance(effect, Send):
                chan.send(effect)
                continue
            log.debug("event %r", effect)
            handler = _ON_EVENT.get(type(effect))
            if handler is not None:
                handler(self, effect)

    def _nvsp_ready(self, e: ev.NvspReady) -> None:
        info = self._info()
        info.nvsp_version, info.ndis_version = e.version, e.ndis_version

    def _recv_buffer_ready(self, e: ev.RecvBufReady) -> None:
        info, s = self._info(), e.sections[0]
        info.recv_section_size, info.recv_section_count = s.sub_alloc_size, s.num_sub_allocs
        self._chan().set_recv_section(s.sub_alloc_size)

    def _send_buffer_ready(self, e: ev.SendBufReady) -> None:
        info, sections = self._info(), self._guest().sections
        info.send_section_size, info.send_section_count = e.section_size, e.count
        info.control_sections = sections.pool.count if sections is not None else None
        info.offloads = NicOffloads(requested=self.offload)

    def _rndis_ready(self, e: ev.RndisReady) -> None:
        info = self._info()
        info.rndis_version = (e.major_version, e.minor_version)
        info.tx_aggregation = TxAggregation(max_packets=e.max_packets_per_message, alignment=e.alignment,
                                            max_bytes=e.max_transfer_size)

    def _mac_address(self, e: ev.MacAddress) -> None:
        info = self._info()
        if e.permanent:
            info.permanent_mac = e.mac
            info.mac = info.mac or e.mac
        else:
            info.mac = e.mac

    def _mtu(self, e: ev.Mtu) -> None:
        # the machine checked it (limits.MIN_MTU..MAX_MTU, proto/rndis.py _on_mtu); used in _configured
        self._info().host_max_frame = e.mtu

    def _link_status(self, e: ev.LinkStatus) -> None:
        info = self._info()
        changed = info.link_up is not None and info.link_up != e.up
        info.link_up = e.up
        if changed:
            self.counters["link_changes"] += 1
        if self._links is None:  # the bring-up's query: the carrier starts as the link is
            self._links = LinkWatch(e.up)
            self._link_actions([Carrier(e.up)])
        else:
            self._link_actions(self._links.media(e.up))

    def _network_change(self, e: ev.NetworkChange) -> None:
        # VMBUS.md §4.25: carrier off, and on again LINKCHANGE_INT later (linkwatch.py)
        self.counters["network_changes"] += 1
        if self._links is not None:
            self._link_actions(self._links.network_change(self.clock()))

    def _link_actions(self, actions: list[LinkAction]) -> None:
        for action in actions:
            if isinstance(action, Carrier):
                if self.on_link is not None:
                    self.on_link(action.up)
            else:
                self.counters["peer_notifications"] += 1
                if self.on_notify_peers is not None:
                    self.on_notify_peers()

    def _link_speed(self, e: ev.LinkSpeed) -> None:
        # the host's RNDIS_STATUS_LINK_SPEED_CHANGE replaces the bring-up's OID_GEN_LINK_SPEED
        # (Linux netvsc_drv.c netvsc_link_change keeps the indicated speed)
        info = self._info()
        if e.indicated and info.link_speed_bps != e.bits_per_second:
            self.counters["link_speed_changes"] += 1
            log.info("the host indicated a link speed of %d bit/s (was %s)", e.bits_per_second,
                     "unknown" if info.link_speed_bps is None else f"{info.link_speed_bps} bit/s")
        info.link_speed_bps = e.bits_per_second

    def _indication_dropped(self, e: ev.IndicationDropped) -> None:
        self.counters["indications_dropped"] += 1
        log.warning("dropped a host indication (status %#x): %s", e.status, e.reason)

    def _offload_caps(self, e: ev.OffloadCaps) -> None:
        info = self._info()
        info.offloads = dataclasses.replace(self._offloads(info), host=e)

    def _offloads_configured(self, e: ev.OffloadsConfigured) -> None:
        info = self._info()
        info.offloads = dataclasses.replace(self._offloads(info), accepted=e)

    def _configured(self, e: ev.RndisConfigured) -> None:
        info = self._info()
        info.mtu, info.mtu_limited_by = self._tap_mtu(info)
        if info.mtu_limited_by is not None:
            log.warning("MTU %d instead of the %d asked: %s", info.mtu, self.mtu, info.mtu_limited_by)

    def _subchannels_refused(self, e: ev.SubchannelsRefused) -> None:
        log.warning("the host refused %d subchannel(s) (status %#x); running on the primary channel only",
                    e.asked, e.status)

    def _subchannels_granted(self, e: ev.SubchannelsGranted) -> None:
        log.info("the host granted %d subchannel(s)", e.count)

    def _rss_configured(self, e: ev.RssConfigured) -> None:
        log.info("RSS on over %d queues: %d-entry table, hash information %#x", e.queues, len(e.table), e.hash_info)

    def _send_table_fixed(self, e: ev.SendTableFixed) -> None:
        # Linux takes any entry and reduces it at queue choice (netvsc_select_queue); so do we, counted
        self.counters["send_table_fixed"] += 1
        log.warning("the host's send indirection table names channel(s) %s, but %d are in use; "
                    "those entries were reduced modulo %d", sorted(set(e.bad)), e.queues, e.queues)

    def _tap_mtu(self, info: NicInfo) -> tuple[int, str | None]:
        """The tap's MTU and why it is below the one asked (nicinfo.tap_mtu's rule)."""
        gpa = self.gpa_pool is not None
        if not gpa and info.send_section_size is None:
            raise LocalProtocolError("RNDIS configured before the send buffer was connected")
        return tap_mtu(self.mtu, info.host_max_frame, gpa=gpa, send_section_size=info.send_section_size or 0)

    def _control_fallback(self, e: ev.ControlFallback) -> None:
        self._info().tx_path = f"send buffer ({e.reason})"
        self.counters["control_fallbacks"] += 1
        log.warning("GPA-direct control messages: %s; sending the RNDIS initialize again in a send section, "
                    "and using the send buffer only", e.reason)

    def _keepalive(self, e: ev.KeepaliveDropped) -> None:
        # VMBUS.md §4 item 21: no real host sends one, and answering would be fatal to OpenVMM
        self.counters["keepalives_dropped"] += 1
        if self.counters["keepalives_dropped"] == 1:
            log.warning("dropped a KEEPALIVE request from the host (request id %#x) unanswered, as Linux "
                        "does; further ones are only counted (keepalives_dropped)", e.request_id)

    def _request_failed(self, e: ev.RequestFailed) -> None:
        self.counters["requests_failed"] += 1
        if e.oid in (wr.Oid.TCP_OFFLOAD_PARAMETERS, wr.Oid.TCP_OFFLOAD_HARDWARE_CAPABILITIES):
            log.warning("host refused %s (status %#x): running without offloads",
                        wr.Oid(e.oid).name, e.status)
        elif e.oid == wr.Oid.GEN_RECEIVE_SCALE_PARAMETERS:
            log.warning("host refused the RSS parameters (status %#x): every received frame arrives on the "
                        "primary channel", e.status)
        else:
            log.info("RNDIS request for OID %#x failed with status %#x", e.oid, e.status)

    def _indication(self, e: ev.StatusIndication | ev.IndirectionTable) -> None:
        self.counters["indications"] += 1
        log.debug("host indication: %r", e)

    def _completion_dropped(self, e: ev.CompletionDropped) -> None:
        # VMBUS.md §4.15: a completion that matches no outstanding request is dropped (counted)
        self.counters["unknown_completions"] += 1
        log.warning("dropped a completion with trans_id %#x: no request of ours is waiting for it",
                    e.trans_id)

    # ---- accelerated networking (hvuio/nicvf.py; when to switch: hvuio/vfwatch.py) -------------------

    def _vf_event(self, e: ev.VfAssociation | ev.HostDatapathSwitched | ev.DatapathSwitched
                  | ev.VfMessageDropped) -> None:
        self.vf_side.event(e)

    def vf_tick(self) -> None:
        """Look after the VF (in the thread that owns the rings, about every TICK_PERIOD)."""
        if self.channel is not None and self.broken is None:
            self.vf_side.tick()

    def _vf_switch(self, vf: bool) -> bool:
        """SWITCH_DATA_PATH when NVSP may take it now (False: it may not; nothing was sent)."""
        guest = self.guest
        if guest is None or self.channel is None or self.broken is not None or not guest.may_switch_datapath:
            return False
        self._perform(guest.switch_datapath(vf))
        return True

    def _vf_publish(self, status: dict[str, object] | None) -> None:
        if self.info is not None:
            self.info.vf = status

    def _vf_stop(self) -> None:
        """Teardown: back to the synthetic path (waiting, bounded, for the host's completion)."""
        side = self.vf_side
        side.stop()
        try:
            self._run_until(lambda: not side.switching, HALT_TIMEOUT, "switch back to the synthetic path")
        except HostTimeoutError as err:
            log.warning("teardown: %s", err.message)

    # ---- teardown -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Packet filter 0, RNDIS halt, NVSP revoke, close the channel and the uio fd; the device may
        be reopened."""
        try:
            if self.channel is not None and not self.channel.closed and self.broken is None:
                self._stop_protocols()
        except HvuioError as err:
            log.warning("teardown: %s", err.message)
        finally:
            self._abort()

    def _stop_protocols(self) -> None:
        guest = self.guest
        if guest is None:
            return
        self._vf_stop()
        self._perform(guest.close_filter())
        try:
            self._run_until(lambda: not guest.filter_closing, HALT_TIMEOUT, "packet filter 0")
        except HostTimeoutError as err:
            log.warning("teardown: %s; halting anyway", err.message)
        self._perform(guest.halt())
        try:
            self._run_until(lambda: not guest.halting, HALT_TIMEOUT, "RNDIS halt")
        except HostTimeoutError as err:
            log.warning("teardown: %s; revoking the buffers anyway", err.message)
        self._perform(guest.stop())

    def _abort(self, err: BaseException | None = None) -> None:
        """Close without protocol messages (after an error, or as the last teardown step). When
        the NIC ends rescinded (`err` or the error that broke it), the device's binding is
        forgotten once the device has left sysfs."""
        if isinstance(err, HvuioError):
            self.mark_broken(err)
        for sub in self.subchannels:
            sub.close()
        self.subchannels = []
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.memory is not None:
            self.memory.close()  # after the channel, which wrote through a view of it
            self.memory = None
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self._lock is not None:
            if isinstance(self.broken, RescindedError) and self._device is not None:
                self._forget(self._device)  # still holding the claim
            os.close(self._lock)  # releases the claim (flock)
            self._lock = None
        self._device = None
        self.ready = False

    @staticmethod
    def _forget(device: VmbusDevice) -> None:
        """The host removed `device`: drop its bind journal and lock once it left sysfs."""
        try:
            if forget_device(device, settle=RESCIND_SETTLE):
                log.info("%s was removed by the host; its binding was forgotten", device.guid)
        except (OSError, HvuioError) as err:
            log.warning("could not forget the binding of the removed device %s: %s", device.guid, err)

    def counter_snapshot(self) -> dict[str, int]:
        """Control-path counters of this Nic and, while open, of its primary channel."""
        out = dict(self.counters)
        out.update(self.vf_side.counters())
        speed = self.info.link_speed_bps if self.info is not None else None
        out["link_speed_mbps"] = 0 if speed is None else speed // 1_000_000  # a gauge (stats.GAUGES)
        if self.channel is not None:
            out.update({f"channel_{k}": v for k, v in self.channel.counters.as_dict().items()})
            # control messages that waited for a free control page or send section of this channel
            sections = self.guest.sections if self.guest is not None else None
            out["channel_control_queued"] = sections.queued if sections is not None else 0
        return out

    # ---- helpers --------------------------------------------------------------------------------------

    def _chan(self) -> Channel:
        if self.channel is None:
            raise LocalProtocolError("NIC is not open")
        return self.channel

    def _guest(self) -> NetvscGuest:
        if self.guest is None:
            raise LocalProtocolError("NVSP was not started")
        return self.guest

    def _info(self) -> NicInfo:
        if self.info is None:
            raise LocalProtocolError("NIC is not open")
        return self.info

    @staticmethod
    def _offloads(info: NicInfo) -> NicOffloads:
        if info.offloads is None:
            raise LocalProtocolError("offload results before the send buffer was connected")
        return info.offloads

    def __enter__(self) -> Nic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What each event of the guest does to the NicInfo and the Nic (events not listed need nothing).
_ON_EVENT: Final[dict[type[object], Callable[..., None]]] = {
    ev.NvspReady: Nic._nvsp_ready,
    ev.RecvBufReady: Nic._recv_buffer_ready,
    ev.SendBufReady: Nic._send_buffer_ready,
    ev.RndisReady: Nic._rndis_ready,
    ev.MacAddress: Nic._mac_address,
    ev.Mtu: Nic._mtu,
    ev.LinkStatus: Nic._link_status,
    ev.LinkSpeed: Nic._link_speed,
    ev.IndicationDropped: Nic._indication_dropped,
    ev.OffloadCaps: Nic._offload_caps,
    ev.OffloadsConfigured: Nic._offloads_configured,
    ev.RndisConfigured: Nic._configured,
    ev.SubchannelsRefused: Nic._subchannels_refused,
    ev.SubchannelsGranted: Nic._subchannels_granted,
    ev.RssConfigured: Nic._rss_configured,
    ev.SendTableFixed: Nic._send_table_fixed,
    ev.KeepaliveDropped: Nic._keepalive,
    ev.RequestFailed: Nic._request_failed,
    ev.NetworkChange: Nic._network_change,
    ev.StatusIndication: Nic._indication,
    ev.IndirectionTable: Nic._indication,
    ev.VfAssociation: Nic._vf_event,
    ev.HostDatapathSwitched: Nic._vf_event,
    ev.DatapathSwitched: Nic._vf_event,
    ev.VfMessageDropped: Nic._vf_event,
    ev.CompletionDropped: Nic._completion_dropped,
    ev.ControlFallback: Nic._control_fallback,
}
