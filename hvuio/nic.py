"""The control plane of one synthetic NIC: bring it up through NVSP and RNDIS, serve it, tear it down.

What lives here:
  * `Nic` — resolve the device (GUID or interface name), refuse it when another process has it
    open (the kernel would share the rings), open its UioHandle through the platform seam, build
    the primary `Channel`, and run `NetvscGuest` (hvuio/proto/netvsc.py) over it: feed it what the
    channel reads, perform the effects it returns (write its `Send`s, hand its events on, below)
    until RNDIS is configured (VMBUS.md §1.13 steps 3–6); keep serving control traffic; tear down
    in the protocol's order: packet filter 0 (waiting for its reply), RNDIS halt (waiting for its
    send completion), NVSP revoke receive buffer and send buffer, then close the channel and the
    uio fd, so the device can be opened again; a NIC that ends rescinded also forgets the device's
    binding (journal, lock) once the device has left sysfs. The clock lives here: the guest gets
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
  * Where the events go: what bring-up negotiated fills a `NicInfo` (hvuio/nicinfo.py `learn`;
    the channel's receive sections, the control sections and the tap's MTU, by nicinfo.py's rule
    with a warning naming the limit when below the MTU asked, are set here); link events go to
    `link_side` (hvuio/niclink.py: the link, the tap's carrier through the `on_link` /
    `on_notify_peers` the engine sets, the link speed); the host's messages that ask nothing of
    the NIC to `notices` (hvuio/nicnotices.py). `counters`: theirs.
  * Accelerated networking (`vf`, `up --vf auto`): SR-IOV offered in the NDIS config, the VF
    events of the machines handed to `vf_side` (hvuio/nicvf.py), which switches the data path
    through `_vf_switch` and the engine's netdev port; `vf_tick()` in the rings' thread (with the
    liveness query while the traffic rides the VF, whose rhythm NicVf keeps); at
    teardown the data path goes back to synthetic (bounded wait) before the packet filter 0.
  * `trace` (hvuio/trace/writer.py, `up --trace`): handed to the primary channel, which records
    every control packet in it; the engine gives it to the data path for the frames.

What must not live here: ring code (channel.py, hvuio/native/), protocol parsing or the routing
between NVSP and RNDIS (proto/), the offload mapping (offloads.py), sysfs details (device/), the
tap and the data path (engine.py, netdev/), printing (hvuio/cli/), what an event says about the
negotiated values (nicinfo.py), the link events (niclink.py), the notices only counted
(nicnotices.py), the VF side (nicvf.py).
"""

from __future__ import annotations

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
from hvuio.native.ring import Packet
from hvuio.offloads import NicOffloads
from hvuio.proto import events as ev
from hvuio.proto.events import Inbound, Send
from hvuio.proto.netvsc import Effect, NetvscGuest
from hvuio.nicinfo import InfoEvent, NicInfo, learn, tap_mtu
from hvuio.niclink import LinkEvent, NicLink
from hvuio.nicnotices import Notice, NicNotices
from hvuio.nicvf import NicVf, VfEvent
from hvuio.proto.nvsp import BufferGrant
from hvuio.wire import nvsp as wn

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
        #: the link side (hvuio/niclink.py); the engine sets its `on_link` and `on_notify_peers`
        self.link_side = NicLink(clock=clock)
        #: accelerated networking: offer SR-IOV and move the data path to the host's VF (`--vf auto`)
        self.vf = vf
        #: the VF side (hvuio/nicvf.py); the engine sets its `port` while the tap runs
        self.vf_side = NicVf(enabled=vf, switch=self._vf_switch, clock=clock, publish=self._vf_publish)
        #: readable fd (StopPipe.read_fd) that aborts a bring-up in progress with KeyboardInterrupt
        self.stop_fd: int | None = None
        self._lock: int | None = None  # claim_device's flock fd while open
        self._device: VmbusDevice | None = None  # the device claimed while open
        #: the host's messages that ask nothing of the NIC, counted (hvuio/nicnotices.py)
        self.notices = NicNotices()

    # ---- bring-up ---------------------------------------------------------------------------------

    def open(self, timeout: float = BRINGUP_TIMEOUT) -> NicInfo:
        """Open the device and negotiate until RNDIS is configured; NicInfo of the result.

        A closed Nic may be opened again: every open starts a fresh NetvscGuest (the host does too).
        """
        if self.channel is not None:
            raise LocalProtocolError("Nic.open() on an open NIC; close() it first")
        self.guest = None
        self.info, self.ready, self.broken = None, False, None
        self.link_side.reset()
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
        self.link_side.tick(now)

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

    def _learn(self, e: InfoEvent) -> None:
        learn(self._info(), e)

    def _recv_buffer_ready(self, e: ev.RecvBufReady) -> None:
        learn(self._info(), e)
        self._chan().set_recv_section(e.sections[0].sub_alloc_size)

    def _send_buffer_ready(self, e: ev.SendBufReady) -> None:
        info, sections = self._info(), self._guest().sections
        learn(info, e)
        info.control_sections = sections.pool.count if sections is not None else None
        info.offloads = NicOffloads(requested=self.offload)

    def _notice(self, e: Notice) -> None:
        self.notices.event(e, self._info())

    def _link_event(self, e: LinkEvent) -> None:
        self.link_side.event(e, self._info(), ready=self.ready)

    def _configured(self, e: ev.RndisConfigured) -> None:
        info, gpa = self._info(), self.gpa_pool is not None
        if not gpa and info.send_section_size is None:
            raise LocalProtocolError("RNDIS configured before the send buffer was connected")
        info.mtu, info.mtu_limited_by = tap_mtu(self.mtu, info.host_max_frame, gpa=gpa,
                                                send_section_size=info.send_section_size or 0)
        if info.mtu_limited_by is not None:
            log.warning("MTU %d instead of the %d asked: %s", info.mtu, self.mtu, info.mtu_limited_by)

    # ---- accelerated networking (hvuio/nicvf.py; when to switch: hvuio/vfwatch.py) -------------------

    def _vf_event(self, e: VfEvent) -> None:
        self.vf_side.event(e)

    def vf_tick(self) -> None:
        """Look after the VF (in the thread that owns the rings, about every TICK_PERIOD): its
        netdev, and while the traffic rides it the liveness query (NicVf.liveness_due)."""
        if self.channel is not None and self.broken is None:
            self.vf_side.tick()
            if self.vf_side.liveness_due():
                effects = self._guest().probe()
                if effects:  # nothing when another request is outstanding: that one is watched already
                    self.vf_side.probed()
                    self._perform(effects)

    def _query_result(self, e: ev.QueryResult) -> None:
        self.vf_side.answered(e)

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

    def close(self, strict: bool = False) -> None:
        """Packet filter 0, RNDIS halt, NVSP revoke, close the channel and the uio fd; the device may
        be reopened. A request the host leaves unanswered is logged and the teardown goes on; with
        `strict` it is raised instead, once the NIC is closed (HostTimeoutError: the host stopped
        answering control requests; hvuio/lifecycle.py's re-initialisation counts it)."""
        unanswered: HostTimeoutError | None = None
        try:
            if self.channel is not None and not self.channel.closed and self.broken is None:
                unanswered = self._stop_protocols(quiet=strict)
        except HvuioError as err:
            log.warning("teardown: %s", err.message)
        finally:
            self._abort()
        if strict and unanswered is not None:
            raise HostTimeoutError(f"the host left a control request unanswered: {unanswered.message}",
                                   "The host's control path stopped while the NIC ran; with 'hvuio up "
                                   "--persist' the NIC is re-initialised on the same tap instead.")

    def _stop_protocols(self, quiet: bool = False) -> HostTimeoutError | None:
        """The protocol teardown; the first request the host left unanswered (logged unless
        `quiet`), after which the teardown went on anyway."""
        guest = self.guest
        if guest is None:
            return None
        self._vf_stop()
        first: HostTimeoutError | None = None
        self._perform(guest.close_filter())
        try:
            self._run_until(lambda: not guest.filter_closing, HALT_TIMEOUT, "packet filter 0")
        except HostTimeoutError as err:
            first = err
            if not quiet:
                log.warning("teardown: %s; halting anyway", err.message)
        self._perform(guest.halt())
        try:
            self._run_until(lambda: not guest.halting, HALT_TIMEOUT, "RNDIS halt")
        except HostTimeoutError as err:
            first = first or err
            if not quiet:
                log.warning("teardown: %s; revoking the buffers anyway", err.message)
        self._perform(guest.stop())
        return first

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

    @property
    def counters(self) -> dict[str, int]:
        """The counters of this Nic's link side and notices (a copy)."""
        return {**self.notices.counters, **self.link_side.counters}

    def counter_snapshot(self) -> dict[str, int]:
        """Control-path counters of this Nic and, while open, of its primary channel."""
        out = self.counters
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

    def __enter__(self) -> Nic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What each event of the guest does to the NicInfo and the Nic (events not listed need nothing).
_ON_EVENT: Final[dict[type[object], Callable[..., None]]] = {
    ev.NvspReady: Nic._learn,
    ev.RecvBufReady: Nic._recv_buffer_ready,
    ev.SendBufReady: Nic._send_buffer_ready,
    ev.RndisReady: Nic._learn,
    ev.MacAddress: Nic._learn,
    ev.Mtu: Nic._learn,
    ev.OffloadCaps: Nic._learn,
    ev.OffloadsConfigured: Nic._learn,
    ev.SubchannelsRefused: Nic._learn,
    ev.SubchannelsGranted: Nic._learn,
    ev.RssConfigured: Nic._learn,
    ev.RndisConfigured: Nic._configured,
    ev.QueryResult: Nic._query_result,
    ev.LinkStatus: Nic._link_event,
    ev.NetworkChange: Nic._link_event,
    ev.LinkSpeed: Nic._link_event,
    ev.IndicationDropped: Nic._link_event,
    ev.SendTableFixed: Nic._notice,
    ev.KeepaliveDropped: Nic._notice,
    ev.RequestFailed: Nic._notice,
    ev.StatusIndication: Nic._notice,
    ev.IndirectionTable: Nic._notice,
    ev.CompletionDropped: Nic._notice,
    ev.ControlFallback: Nic._notice,
    ev.VfAssociation: Nic._vf_event,
    ev.HostDatapathSwitched: Nic._vf_event,
    ev.DatapathSwitched: Nic._vf_event,
    ev.VfMessageDropped: Nic._vf_event,
}
