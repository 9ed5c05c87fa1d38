"""The engine: a NIC that is up, run as a Linux network interface — a tap plus the C data path.

What lives here: `Engine`, around a `Nic` that finished bring-up (hvuio/nic.py): a tap
(hvuio/netdev/tap.py) with the NIC's MAC and MTU, its carrier following the RNDIS link status (and
network changes) as hvuio/linkwatch.py decides, its neighbours told of its addresses when the host
repeats a media connect (hvuio/netdev/peers.py, in the primary's pump thread), and its
TUNSETOFFLOAD bits what the host granted (hvuio/offloads.py); one C pump of
hvuio.native.datapath per channel (the primary and every subchannel the Nic opened), each in its
own thread (`hvuio-queue-<k>`, the name `top -H` shows) with its own tap queue (IFF_MULTI_QUEUE),
rings, share of the data send sections and of the GPA TX area, io_uring for batched tap I/O (or
readv/writev where the kernel refuses one; the log and the `tap_uring` counter say which), and
counters: per-packet work stays in C and no two pumps share anything they write. A frame's TX
channel is the pump whose tap queue the kernel put the flow on; tun steers
a flow to the queue its last frame was written on, i.e. the channel the host's RSS chose for it,
so a flow goes out on the channel it comes in on (the host's send indirection table is kept by the
NIC, proto/netvsc.py). Only a reply sent while tun still takes in a flow's first frame (a
listener's SYN-ACK) may leave on another queue: tun learns the flow after that frame's receive
(Linux drivers/net/tun.c `tun_get_user`: `tun_flow_update` after the receive). A receive completion goes back on the channel the packet came in on (each
pump completes its own). uio has one interrupt for all channels: the primary's pump reads it and
wakes every other pump through its eventfd (counted: no wake-up is lost when two channels fire
together); a subchannel's inbound mask is never cleared (VMBUS.md §1.10 item 39), so its pump
also looks at its ring every SUBCHANNEL_POLL_MS. Control packets stay on the primary: those its
pump leaves (CONTROL_PENDING) are read in its thread and handed to the Nic
(`take_control_packet`); one a subchannel's pump meets is taken apart there and handed to the Nic
in the primary's thread; the Nic's ticks are queued into that thread too
(hvuio/native/datapath.py's threading rule). With `up --vf auto` the engine gives the Nic the
VF's netdev side (hvuio/netdev/vfpath.py: tc rules that move the tap's frames through the VF
while the data path is there), ticked in the primary's thread, and removes its rules before the
tap goes. The data path gets the NIC's trace
(`Nic.trace`, hvuio/trace/writer.py), which records the frames both ways in C. Every tick the
pumps' health is looked at (hvuio/health.py: host stalls, drops per reason) and what it reports is
logged; `live_counters()` sums the pumps' counters, adds each queue's packets and bytes, what is
in flight, drops per reason, the stall counters and the trace's counters; they show the queues
only once every pump runs (all of them, never some), and `on_ready` is called then. The run loop
waits on the caller's stop fd (netdev/signals.py's StopPipe), on a pump's exit and on the caller's
watch fd (hvuio/lifecycle.py: the tap's MTU changed). The watchdog (`_watchdog`): a stall that
lasts `watchdog_after` seconds (health.py WATCHDOG_AFTER by default) ends the run with
HostStalledError naming the queues that wait (the host's channel stopped without a word, as
OpenVMM's worker does on an NVSP-level error).
Teardown stops the pumps first and waits (bounded) for the host to take what the subchannels last
sent, so the Nic's halt and revokes run on the caller's thread with the rings to themselves; each
pump is closed (its io_uring). The tap is the engine's own (removed at the end) or the caller's (`given_tap`, built by `open_tap`:
hvuio/lifecycle.py keeps it across Nics; the run adapts its active queues, offloads and MAC). A
RescindedError of a pump (its irq fd failed with EIO/EOF) is raised as the platform explains it
(`Platform.explain_loss`: a rescind, or the emulator gone). A queue-count change is a new Nic (on
the same tap: hvuio/lifecycle.py's re-initialisation).

What must not live here: what to do after a rescind, a stall or an MTU change (hvuio/lifecycle.py),
bring-up and teardown of the protocols, the NIC's negotiated values and
their text (hvuio/nic.py, hvuio/nicinfo.py), the NDIS -> data path -> tap offload mapping (hvuio/offloads.py), ring
code (channel.py, hvuio/native/), tap plumbing (hvuio/netdev/), printing (hvuio/cli/).
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable

from hvuio.channel import Channel
from hvuio.device.guestmem import GuestRegion
from hvuio.errors import HostStalledError, HvuioError, LocalProtocolError, RescindedError
from hvuio.health import WATCHDOG_AFTER, HealthWatch, Sample
from hvuio.native.datapath import GPA_SLOT_SIZE, MAX_SECTIONS, DataPath, RunResult
from hvuio.netdev.peers import PeerNotifier
from hvuio.netdev.tap import Tap, TunOffload, format_mac
from hvuio.netdev.vfpath import VfPath
from hvuio.device.inventory import vf_netdev
from hvuio.nic import TICK_PERIOD, Nic
from hvuio.offloads import datapath_offloads, tun_offload

log = logging.getLogger(__name__)

#: Longest sleep of a subchannel's pump: its inbound mask stays set (VMBUS.md §1.10 item 39), so
#: the host raises no interrupt for it and the pump looks at its ring at least this often (it is
#: also woken with the primary's pump on every interrupt of the device).
SUBCHANNEL_POLL_MS = 1


#: How long a stop waits for the host to take what the subchannel pumps last sent.
DRAIN_TIMEOUT = 1.0


def _wait_taken(subchannels: list[Channel]) -> None:
    """Wait (bounded) until the host has read every subchannel's outbound ring. The primary's
    needs no wait: the RNDIS halt that follows goes through the same ring, behind the frames; a
    subchannel's frames have no such order with it, so without this wait the last ones could be
    left unread when the host tears the channels down."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while any(c.tx.read_index != c.tx.write_index for c in subchannels):
        if time.monotonic() >= deadline:
            log.warning("the host did not take everything sent on the subchannels within %g s", DRAIN_TIMEOUT)
            return
        time.sleep(0.001)


def _split_pool(pool: GuestRegion | None, queues: int) -> list[GuestRegion | None]:
    """The GPA TX area cut into one share of whole slots per queue."""
    if pool is None or queues == 1:
        return [pool] * queues
    slots = pool.size // GPA_SLOT_SIZE
    per = slots // queues * GPA_SLOT_SIZE
    if per == 0:
        raise LocalProtocolError(f"the GPA-direct pool holds {slots} send slots, fewer than the {queues} queues",
                                 hint="Use fewer queues (--queues), or send from the send buffer only (--no-gpa).")
    return [pool.region(k * per, per) for k in range(queues)]


def open_tap(nic: Nic, ifname: str | None, netns: str | None, vnet_hdr: bool = True) -> Tap:
    """A tap for `nic` (up): its MAC and MTU, one queue per channel, the offloads the host granted
    (what Engine.run opens when it is given no tap); for a caller that keeps it across Nics."""
    info = nic.negotiated
    if not nic.ready or info.mac is None or info.mtu is None:
        raise LocalProtocolError("a tap needs a Nic that finished bring-up")
    offloads = datapath_offloads(None if info.offloads is None else info.offloads.accepted)
    return Tap.open(ifname, info.mac, info.mtu, netns=netns, vnet_hdr=vnet_hdr,
                    offload=tun_offload(offloads) if vnet_hdr else TunOffload(0), queues=1 + len(nic.subchannels))


class Engine:
    """A ready Nic plus a tap and the C data path pump (see module docstring)."""

    def __init__(self, nic: Nic, *, ifname: str | None = None, netns: str | None = None,
                 vnet_hdr: bool = True, busy_poll_us: int = 0, tx_aggregation: bool = True,
                 tap: Tap | None = None, watchdog_after: float = WATCHDOG_AFTER) -> None:
        self.nic = nic
        #: seconds of one stall after which the run ends with HostStalledError (`_watchdog`)
        self.watchdog_after = watchdog_after
        #: a tap the caller owns and keeps across Nics (hvuio/lifecycle.py): used as it is (queues,
        #: offloads and MAC adapted to this Nic), never closed here; None: run() opens its own
        self.given_tap = tap
        #: batch small frames into one send within the host's RNDIS limits (NicInfo.tx_aggregation)
        self.tx_aggregation = tx_aggregation
        self.ifname = ifname
        self.netns = netns
        self.vnet_hdr = vnet_hdr
        self.busy_poll_us = busy_poll_us
        self.tap_name: str | None = None
        self.counters: dict[str, int] = {}
        self._exit_r, self._exit_w = -1, -1
        self._pumps: list[DataPath] = []
        self._peers: PeerNotifier | None = None
        self._vf: VfPath | None = None
        self.health = HealthWatch()

    def live_counters(self) -> dict[str, int]:
        """The pumps' counters now, summed over the queues (read while they run: each value is
        one aligned u64 load), each queue's own packets and bytes (`rx_queue_<k>_packets`,
        `rx_queue_<k>_bytes`, `tx_queue_<k>_packets`, `tx_queue_<k>_bytes`), what is in flight,
        drops per reason (`drop_<reason>`), the stall counters (health.py) and, when the NIC is
        traced, the trace's counters."""
        pumps = self._pumps
        if not pumps:
            return dict(self.counters)
        live: dict[str, int] = {}
        drops: dict[str, int] = {}
        for k, dp in enumerate(pumps):
            c = dp.counters()
            for name, value in c.items():
                live[name] = live.get(name, 0) + value
            for d in ("rx", "tx"):
                live[f"{d}_queue_{k}_packets"] = c[f"{d}_packets"]
                live[f"{d}_queue_{k}_bytes"] = c[f"{d}_bytes"]
            for reason, n in dp.drop_counts().items():
                drops[reason] = drops.get(reason, 0) + n
        live.update(queues=len(pumps), sections_in_use=sum(dp.sections_in_use for dp in pumps),
                    gpa_slots_in_use=sum(dp.gpa_slots_in_use for dp in pumps),
                    pending_completions=sum(dp.pending_completions for dp in pumps))
        live.update({f"drop_{reason}": n for reason, n in drops.items()})
        live.update(self.health.counters())
        peers = self._peers
        if peers is not None:
            live.update(peer_frames_sent=peers.sent, peer_frames_failed=peers.failed)
        if self.nic.trace is not None:
            live.update(self.nic.trace.counters())
        return live

    def queue_counters(self) -> list[dict[str, int]]:
        """Each pump's counters now, queue 0 (the primary) first; empty when no pump runs."""
        return [dp.counters() for dp in self._pumps]

    def _watch(self) -> None:
        """One health look at the running pumps (engine tick, caller's thread): log what changed."""
        pumps = self._pumps
        c = self.live_counters()
        drops = {k[len("drop_"):]: v for k, v in c.items() if k.startswith("drop_")}
        last = next((d for d in (dp.last_drop() for dp in pumps) if d is not None), None)
        events = self.health.observe(Sample(
            now=time.monotonic(), progress=c["tx_completions"] + c["tx_bad_comp"] + c["rx_comp_sent"] + c["rx_xfer"],
            sends_in_flight=c["sections_in_use"] + c["gpa_slots_in_use"], completions_waiting=c["pending_completions"],
            drops=drops, last_drop=last))
        for event in events:
            log.warning("%s: %s", self.tap_name or "data path", event.text())

    def run(self, stop_fd: int, on_ready: Callable[[Engine], None] | None = None,
            on_tick: Callable[[], None] | None = None,
            watch: tuple[int, Callable[[], bool]] | None = None) -> dict[str, int]:
        """Open the tap, pump until `stop_fd` is readable or a pump fails; the pumps' counters.

        `watch` (fd, check): when fd is readable, check() runs in the caller's thread and the run
        ends (as on `stop_fd`) when it returns True (hvuio/lifecycle.py: the tap's MTU changed).
        The host leaving sends uncompleted for `watchdog_after` seconds ends it with HostStalledError.
        The Nic stays open (the caller closes it); the tap is removed on return unless it is the
        caller's (`given_tap`).
        """
        nic = self.nic
        info, chan = nic.negotiated, nic.primary_channel
        if not nic.ready or info.mac is None or info.mtu is None:
            raise LocalProtocolError("Engine.run needs a Nic that finished bring-up")
        handle = nic.uio_handle
        assert handle.recv_buffer is not None and handle.send_buffer is not None
        assert info.recv_section_size is not None and info.send_section_size is not None
        chans = [chan, *nic.subchannels]
        queues = len(chans)
        per_queue = min(nic.data_sections // queues, MAX_SECTIONS)
        if per_queue < 1:
            raise LocalProtocolError(f"the host's {nic.data_sections} data send sections cannot be shared by "
                                     f"{queues} queues", hint="Use fewer queues (--queues).")
        pools = _split_pool(nic.gpa_pool, queues)
        offloads = datapath_offloads(None if info.offloads is None else info.offloads.accepted)
        tap = self._tap_for(info.mac, info.mtu, tun_offload(offloads) if self.vnet_hdr else TunOffload(0), queues)
        self.tap_name = tap.name
        pumps: list[DataPath] = []
        wakes: list[int] = []
        dp: DataPath | None = None
        primary: DataPath | None = None
        peers: PeerNotifier | None = None
        self._exit_r, self._exit_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            tap.set_carrier(bool(info.link_up))
            tap.up()
            nic.link_side.on_link = tap.set_carrier
            peers = self._peers = PeerNotifier(tap, info.mac)
            nic.link_side.on_notify_peers = peers.notify
            self._start_vf(tap)
            wakes = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(queues - 1)]
            irq = handle.interrupt.fileno()
            for k, c in enumerate(chans):
                mid = handle.device.monitor_id if k == 0 else handle.device.channel(c.relid).monitor_id
                dp = DataPath(tx_ring=c.tx, rx_ring=c.rx, recv_buf=handle.recv_buffer,
                              recv_section_size=info.recv_section_size, send_buf=handle.send_buffer,
                              send_section_size=info.send_section_size,
                              send_section_first=k * per_queue, send_section_count=per_queue,
                              tap_fd=tap.queue_fds[k], irq_fd=irq,
                              monitor_page=handle.monitor_page if mid is not None else None, monitor_id=mid,
                              mtu=info.mtu, vnet_hdr=tap.vnet_hdr, busy_poll_us=self.busy_poll_us,
                              offloads=offloads, tap_offload=bool(tap.offload),
                              tx_aggregation=info.tx_aggregation if self.tx_aggregation else None,
                              gpa_pool=pools[k],
                              # the primary's pump reads the one uio interrupt and wakes the others
                              fanout_fds=tuple(wakes) if k == 0 else (),
                              wake_fd=None if k == 0 else wakes[k - 1],
                              manage_interrupt_mask=c.may_unmask,
                              idle_poll_ms=0 if c.may_unmask else SUBCHANNEL_POLL_MS)
                pumps.append(dp)
                log.info("queue %d: tap I/O %s%s", k, dp.tap_io,
                         f" (io_uring refused: {dp.tap_io_error})" if dp.tap_io_error else "")
                if nic.trace is not None:
                    dp.set_trace(nic.trace.sink)  # the frames both ways (C), beside the control records
                c.data_sink = dp.deliver_data  # data messages of mixed packets (that pump's thread)
            primary = pumps[0]
            primary.start(self._on_control, on_exit=self._on_exit, name="hvuio-queue-0")
            for k in range(1, queues):
                pumps[k].start(self._subchannel_control(chans[k], primary), on_exit=self._on_exit,
                               name=f"hvuio-queue-{k}")
            self._pumps = pumps  # the counters show every queue, or (before this) none
            if on_ready is not None:
                on_ready(self)
            fds = [stop_fd, self._exit_r] + ([watch[0]] if watch is not None else [])
            stalled: HostStalledError | None = None
            while stalled is None:
                ready, _, _ = select.select(fds, [], [], TICK_PERIOD)
                if ready:
                    if watch is None or stop_fd in ready or self._exit_r in ready or watch[1]():
                        break
                    continue
                primary.call_soon(nic.tick)
                if self._vf is not None:
                    primary.call_soon(nic.vf_tick)
                self._watch()
                stalled = self._watchdog(chans)
                if on_tick is not None:
                    on_tick()
            for dp in pumps:
                dp.stop()
            _wait_taken(chans[1:])
            self.counters = self.live_counters()
            failed = next((dp for dp in pumps if dp.error is not None), None)
            if failed is not None:
                raise self._pump_error(failed)
            if stalled is not None:
                nic.mark_broken(stalled)  # the host serves nothing: close() skips the protocol teardown
                raise stalled
            return self.counters
        finally:
            nic.link_side.on_link = None
            nic.link_side.on_notify_peers = None
            self._peers = None
            if peers is not None:
                peers.close()
            for c in chans:
                c.data_sink = None
            for dp in pumps:
                try:
                    dp.stop()
                except LocalProtocolError as err:
                    log.warning("teardown: %s", err.message)
            self._stop_vf()  # the pumps are stopped: no thread uses the VF side any more
            if pumps:
                self.counters = self.counters or self.live_counters()
            for dp in pumps:
                dp.close()   # its io_uring, before the tap goes
            # drop every reference to the pumps (and their rings and buffers) before the Nic
            # closes, locals included: an exception raised below (tap.close) would keep this
            # frame, and the pumps with it, in a reference cycle (see _pump_error)
            self._pumps = pumps = []
            dp = primary = None
            for fd in (self._exit_r, self._exit_w, *wakes):
                os.close(fd)
            self._exit_r = self._exit_w = -1
            if tap is not self.given_tap:
                tap.close()

    def _tap_for(self, mac: bytes, mtu: int, offload: TunOffload, queues: int) -> Tap:
        """The tap of this run: the caller's (`given_tap`), its active queues, offloads and MAC
        made this Nic's (its MTU is the caller's business), or a new one."""
        tap = self.given_tap
        if tap is None:
            return Tap.open(self.ifname, mac, mtu, netns=self.netns, vnet_hdr=self.vnet_hdr, offload=offload,
                            queues=queues)
        if tap.vnet_hdr != self.vnet_hdr:
            raise LocalProtocolError(f"tap {tap.name} was opened with vnet_hdr={tap.vnet_hdr}")
        if queues > len(tap.queue_fds):
            raise LocalProtocolError(f"a Nic of {queues} queues on tap {tap.name} of {len(tap.queue_fds)} queues")
        tap.set_queues(queues)
        if tap.offload != offload:
            tap.set_offload(offload)
        if tap.state().mac != mac:
            log.warning("%s: the NIC's MAC address changed; the tap takes the new one", tap.name)
            tap.set_mac(mac)
        return tap

    def _watchdog(self, chans: list[Channel]) -> HostStalledError | None:
        """The host left sends uncompleted (or receive completions unread) for WATCHDOG_AFTER
        seconds: the channel stopped (as OpenVMM's worker does, silently, on an NVSP-level error).
        The error names the queues that wait."""
        took = self.health.stalled_for(time.monotonic())
        if took < self.watchdog_after:
            return None
        waiting = []
        for k, (c, dp) in enumerate(zip(chans, self._pumps)):
            sends, comps = dp.sections_in_use + dp.gpa_slots_in_use, dp.pending_completions
            if sends or comps:
                waiting.append(f"queue {k} (relid {c.relid}): {sends} sends outstanding"
                               + (f", {comps} receive completions waiting" if comps else ""))
        what = "; ".join(waiting) or "every queue"
        return HostStalledError(f"the host stopped serving {self.tap_name or 'the NIC'}: nothing completed for "
                                f"{took:.1f} s ({what})",
                                "The host's channel stopped without telling the guest; with 'hvuio up --persist' "
                                "the NIC is re-initialised on the same tap instead.")

    def _start_vf(self, tap: Tap) -> None:
        """With `up --vf auto`: the VF's netdev side (hvuio/netdev/vfpath.py) beside the tap, which
        the Nic drives as hvuio/vfwatch.py decides (its events and `vf_tick`, in the primary's
        pump thread). The VF is found in sysfs by the serial's PCI slot, then by the NIC's MAC."""
        nic = self.nic
        info = nic.negotiated
        if not nic.vf or info.mac is None or info.mtu is None:
            return
        macs = {format_mac(m) for m in (info.mac, info.permanent_mac) if m is not None}
        sysroot = nic.sysroot
        self._vf = VfPath(tap.name, tap.netns, info.mtu, lambda serial: vf_netdev(sysroot, serial, macs))
        nic.vf_side.port = self._vf

    def _stop_vf(self) -> None:
        """The VF's rules removed (the tap's first) before the tap goes; the Nic switches the host
        back to synthetic when it closes (Nic._vf_stop)."""
        vf, self._vf = self._vf, None
        self.nic.vf_side.port = None
        if vf is not None:
            vf.close()

    def _pump_error(self, dp: DataPath) -> BaseException:
        """What the pump's error means, marked on the Nic: a RescindedError as the platform
        explains it (a rescind, or the emulator gone). Taken off the DataPath, without the pump
        thread's traceback (logged with --debug as the pump ended): those frames hold the
        DataPath, and the Nic keeps the error (`broken`), so the DataPath and its cffi buffers
        would end in a reference cycle, which the garbage collector clears in an order that
        crashes the interpreter (a memoryview cleared while exported)."""
        error, dp.error = dp.error, None
        assert error is not None
        error.__traceback__ = None
        if isinstance(error, RescindedError):
            handle = self.nic.uio_handle
            error = handle.platform.explain_loss(handle.uio.name, error)
        if isinstance(error, HvuioError):
            self.nic.mark_broken(error)
        return error

    def _on_control(self, dp: DataPath) -> None:
        """In the primary's pump thread: the packet the pump left goes to the Nic."""
        self.nic.take_control_packet(dp.read_control())

    def _subchannel_control(self, chan: Channel, primary: DataPath) -> Callable[[DataPath], None]:
        """A subchannel pump's control packets: read and taken apart in its own thread (it owns
        that ring), what they carry handed to the Nic in the primary's thread (the one that runs
        the protocol machines). No host sends control traffic on a subchannel; this keeps one that
        does from stalling the queue."""
        def take(dp: DataPath) -> None:
            items = self.nic.read_subchannel_packet(chan, dp.read_control())
            if items:
                primary.call_soon(lambda: self.nic.process(items))
        return take

    def _on_exit(self, result: RunResult, error: BaseException | None) -> None:
        if error is not None:
            log.debug("data path ended with %r", error, exc_info=error)
        try:
            os.write(self._exit_w, b"x")
        except OSError:
            pass
