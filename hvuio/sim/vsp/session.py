"""One opened simulated NIC as the emulated host serves it: the worker behind SimHost (host.py).

What lives here: `Session` (per open of one NIC: maps 3/4, a `HostNvsp`, the attached `Channel`s
(memory.py: ring mapping, HostRingReader/HostRingWriter, in-order backlog), and the worker
thread's loop: signals, monitor bits, drain, deliver (network frames written at once or dropped
and counted, never queued), tick, flush, kernel calls, subchannels; the guest's packet filter
sets and halts recorded in order, SimHost.rndis_control) and `VspCounters`. The behaviour and the locking rules are described in host.py's docstring; SimHost
is the only user of this module and its public API is there.

Fast path: once RNDIS is up with a packet filter, a single-NIC session behind a tap network
(HostNetwork) hands the data path of its channels to the C pump of fastpath.py, driven by
fastsession.py's FastSession (HVUIO_SIM_FASTPATH=0 or a missing build keep everything in Python). The pump then reads the tap itself (rx_ready stays
False, so SimHost's network thread leaves the tap alone), owns the data receive sections HostNvsp
had free (HostNvsp keeps its control sections; data sections it frees later are handed over each
pass), and returns to this worker for every outbound packet it does not own, which the worker
reads with that channel's HostRingReader and gives to HostNvsp as before. Ring index invariant: one
thread (this worker) alternates between the pump and the Python reader/writer; each publishes its
host-owned index (outbound read_index, inbound write_index) before the other runs, and each takes it
from the header when it starts (the pump at every run, Python through `_reload()` before reading or
flushing). Subchannels join the pump once their rings are attached; until then the frames the
pump's RSS hash puts on them are handed over (fastsession.py delivers them). The worker's
steps the fast path shares are public (`apply`, `drain`, `deliver_group`, `end_pass`,
`set_fault`, `wants_subchannels`, `take_inbox`, `wake_fd`/`clear_wake`, `until_tick`,
`mark_active`); the session starts, runs and ends its `FastSession` itself.

VF: a `DataPathSwitched` event (hvuio.sim.host.vf) sets `vf_data_path`; while it is set SimHost's
network thread sends this NIC's network frames to its VF path instead of `post_frames`, and the
pump (if any) stops reading the tap.

Guest memory: the session's GPA-direct reader (guestmem.py: the guest-memory file, or in "proc"
mode the uio opener's memory) goes to HostNvsp and the file's mapping to the pump, whose
`tx_gpa_rejected` sends (a page outside guest memory, completed FAILED in C) are logged by
fastsession.py.

What must not live here: protocol rules (hvuio.sim.host), ring layout rules (ring.py), how the
shared memory is mapped (memory.py), kernel semantics (hvuio.sim.kernel), anything spanning
several devices (host.py).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hvuio.errors import LocalProtocolError, RingCorruptError
from hvuio.sim.host.events import (BufferRevoked, ChannelFault, DataPathSwitched, FrameFromGuest, LinkIndicated,
                                   PacketFilterSet, Rejection, RndisHalted, SubchannelsOffered)
from hvuio.sim.host.nvsp import GuestPacket, HostNvsp, HostPacket, Step
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.host.receive import RxFault
from hvuio.sim.kernel.tree import SimDevice
from hvuio.sim.vsp import guestmem
from hvuio.sim.vsp.fastsession import FastSession
from hvuio.sim.vsp.memory import Channel, full_barrier, map_file

if TYPE_CHECKING:
    from hvuio.sim.vsp.host import SimHost

log = logging.getLogger("hvuio.sim.vsp")

DEFAULT_MONITOR_LATENCY = (0.0001, 0.0005, 0.001)  # floor, default, ceiling in seconds
TICK_INTERVAL = 0.05  # HostNvsp.tick period: link flap delays and keep-alives are seconds long
READ_BATCH = 64  # packets per drain pass before re-checking (STYLE §13: a batch per wake-up)
NET_BATCH = 64  # frames read from the network per wake-up (net.DEFAULT_BATCH)
INBOX_LIMIT = 4096  # frames queued for one NIC's worker before we count drops
IDLE_AFTER = 0.1  # seconds without guest signals or frames before the monitor poll slows to its ceiling
REJECTIONS_KEPT = 20  # last rejection reasons shown by status()


@dataclass(slots=True)
class VspCounters:
    """Per-device counters, cumulative over opens (names as `hvuio sim status` prints them)."""

    opens: int = 0
    frames_to_guest: int = 0  # frames written into receive sections (HostNvsp rx_delivered)
    frames_from_guest: int = 0  # FrameFromGuest events
    frames_to_network_dropped: int = 0  # no network, or the network refused the frame
    frames_inbox_dropped: int = 0  # the worker fell INBOX_LIMIT frames behind the network
    packets_to_guest: int = 0
    packets_from_guest: int = 0
    signals_to_guest: int = 0  # guest interrupts: kernel.signal_guest plus those the C pump raised
    guest_signals: int = 0  # irqcontrol signals (hook) + monitor trigger bits consumed
    # VMBUS.md §5.12 "unnecessary" signals, as far as the host can see them (irqcontrol signals only:
    # monitor bits merge, so repeated monitored signals are invisible by design):
    guest_signals_masked: int = 0  # the outbound interrupt_mask was 1 (the host was draining)
    guest_signals_redundant: int = 0  # the previous signal of that channel was not consumed yet:
    #                                   the ring was not empty before the write that signalled
    guest_signals_idle: int = 0  # a wake-up that found nothing to read (informative: the host
    #                              may have drained the data already on an earlier pass)
    inbound_full: int = 0  # control packets and completions that met a full inbound ring and were queued
    backlog_max: int = 0  # the longest such queue
    rx_ring_full: int = 0  # network frames dropped: their packet did not fit the inbound ring (both paths)
    rejections: int = 0
    faults: int = 0
    link_indications: int = 0
    fastpath: int = 0  # 1 while the C pump (fastpath.py) serves the data path (every channel it can)
    fastpath_rx_ring_full: int = 0  # frames the pump dropped because the inbound ring was full
    fastpath_handoffs: int = 0  # outbound packets the pump left for HostNvsp
    fastpath_completions_unknown: int = 0  # guest completions of no outstanding pump transfer
    data_path_switches: int = 0  # DataPathSwitched events (the guest's or the host's)
    frames_to_vf: int = 0  # network frames put on the NIC's VF path while the data path was the VF
    frames_to_vf_dropped: int = 0  # such frames while the VF was gone (removed, the guest not told yet)
    frames_from_vf: int = 0  # frames the guest sent on its VF, to the network


class Session:
    """One open of one NIC: HostNvsp + channels + the worker thread (see module docstring)."""

    def __init__(self, host: SimHost, dev: SimDevice, profile: HostProfile) -> None:
        self.host = host
        self.kernel = host.kernel
        self.dev = dev
        self.counters = host.counters(dev)
        self.lock = threading.Lock()
        self.stopped = False
        self.fault: str | None = None
        self.rejections: deque[str] = deque(maxlen=REJECTIONS_KEPT)
        self.channels: dict[int, Channel] = {}
        self.pending_subchannels: dict[int, int] = {}  # index -> relid, ring not attached yet
        self.offered_subchannels = 0
        self.unattached: dict[int, deque[bytes]] = {}  # packets for channels whose ring is not there
        self._inbox_lock = threading.Lock()
        self._signals: set[int] = set()
        self._frames: deque[bytes] = deque()
        self._commands: deque[Callable[[set[int], list[tuple[str, int]]], None]] = deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        gpadls: dict[int, int] = {}
        for name, size in dev.maps[3:5]:
            kind, _, handle = name.partition(":")
            if kind in ("recv", "send") and handle.isdigit():
                gpadls[int(handle)] = size
        self.recv_mm = map_file(host.kernel.map_path(dev, 3), dev.maps[3][1])
        self.send_mm = map_file(host.kernel.map_path(dev, 4), dev.maps[4][1])
        self.guest_mem = guestmem.open_reader(host.guest_memory_mode, self.kernel.sysroot, dev.opener_pid, dev.guid)
        self.nvsp = HostNvsp(profile, gpadls=gpadls, read_send_buffer=self._read_send,
                             write_recv_buffer=self._write_recv,
                             read_guest_pages=None if self.guest_mem is None else self.guest_mem.read)
        self._attach(0, dev.relid, dev.monitor_id, host.kernel.ring_path(dev, dev.relid), dev.primary.ring_size)
        self.rx_ready = False
        self.vf_data_path = False  # the guest switched to its VF: SimHost sends network frames there
        self._next_tick = 0.0
        self._last_activity = time.monotonic()
        self.fast: FastSession | None = None  # the C pump serving the primary's data path
        self._fast_tried = False
        self._stop_requested = False
        self.thread = threading.Thread(target=self._run, name=f"hvuio-sim-vsp-{dev.uio}", daemon=True)

    # -- memory accessors given to HostNvsp (it has validated offsets; we check again) ----------

    def _read_send(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(self.send_mm):
            raise LocalProtocolError(f"send buffer read {offset:#x}+{length:#x} outside {len(self.send_mm):#x}")
        return self.send_mm[offset:offset + length]

    def _write_recv(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > len(self.recv_mm):
            raise LocalProtocolError(f"receive buffer write {offset:#x}+{len(data):#x} outside {len(self.recv_mm):#x}")
        self.recv_mm[offset:offset + len(data)] = data

    def _attach(self, index: int, relid: int, monitor_id: int | None, path: Path, ring_size: int) -> None:
        chan = Channel.attach(index, relid, monitor_id, path, ring_size)
        chan.backlog.extend(self.unattached.pop(index, ()))
        self.channels[index] = chan

    # -- inputs from other threads ---------------------------------------------------------------

    def _wake(self) -> None:
        with self._inbox_lock:  # the fd is closed (and its number reusable) once the worker ends
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    def guest_signal(self, relid: int) -> None:
        with self._inbox_lock:
            if relid in self._signals:
                self.counters.guest_signals_redundant += 1
            self._signals.add(relid)
        self._wake()

    def post_frames(self, frames: list[bytes]) -> None:
        with self._inbox_lock:
            room = INBOX_LIMIT - len(self._frames)
            self._frames.extend(frames[:max(room, 0)])
            self.counters.frames_inbox_dropped += max(0, len(frames) - max(room, 0))
        self._wake()

    def post(self, command: Callable[[], Step]) -> None:
        """Run `command` in the worker's next pass and apply its Step."""
        self._post(lambda signal_out, deferred: self.apply(command(), signal_out, deferred))

    def post_delivery(self, frames: list[bytes], channel: int, inject: RxFault | None) -> None:
        """Frames for `channel` as one transfer-page packet in the worker's next pass, by the rules
        of frames from the network (dropped and counted when the inbound ring has no room)."""
        def run(signal_out: set[int], deferred: list[tuple[str, int]]) -> None:
            if not 0 <= channel <= self.nvsp.subchannels:
                log.error("%s: deliver on channel %d: only %d subchannels granted", self.dev.guid, channel,
                          self.nvsp.subchannels)
                return
            self.deliver_group(channel, frames, signal_out, deferred, inject)
        self._post(run)

    def stall(self, reason: str) -> None:
        """Stop serving every channel in the worker's next pass, telling the guest nothing: a fault
        on demand (the Python loop and the C pump both run posted commands, and a fault ends the pump)."""
        self._post(lambda _signal_out, _deferred: self.set_fault(reason))

    def _post(self, command: Callable[[set[int], list[tuple[str, int]]], None]) -> None:
        with self._inbox_lock:
            self._commands.append(command)
        self._wake()

    def stop(self, reason: str) -> None:
        """Stop serving (caller holds kernel.lock); the thread exits and unmaps on its own."""
        self._stop_requested = True  # first: a running C pump returns and releases session.lock,
        self._wake()  # and the worker does not start it again
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            log.info("%s: host stopped serving the device: %s", self.dev.guid, reason)
        self._wake()

    # -- the worker ------------------------------------------------------------------------------

    def _poll_interval(self) -> float:
        floor, default, ceiling = self.host.monitor_latency
        monitored = [c.monitor_id for c in self.channels.values() if c.monitor_id is not None]
        if not monitored:
            return self.host.tick_interval
        if time.monotonic() - self._last_activity > IDLE_AFTER:
            return ceiling  # idle channel: poll at the slowest latency we allow
        wanted = [lat for mid in monitored if (lat := self.host.monitor.latency(mid)) is not None]
        return min(max(min(wanted, default=default), floor), ceiling)

    def _run(self) -> None:
        try:
            while not self.stopped:
                if self.fast is not None:
                    deferred = self._fast_iteration()
                    if deferred:
                        self._kernel_calls(deferred)
                    continue
                select.select([self._wake_fd], [], [], self._poll_interval())
                try:
                    os.eventfd_read(self._wake_fd)
                except BlockingIOError:
                    pass
                deferred = self._iteration()
                if deferred:
                    self._kernel_calls(deferred)
        except Exception as exc:  # the emulator must report, never die silently
            log.exception("%s: sim host worker failed", self.dev.guid)
            with self.kernel.lock:
                self.set_fault(f"host worker failed: {type(exc).__name__}: {exc}")
                self.stop("worker failed")
        finally:
            self._release()

    def _release(self) -> None:
        with self.lock:
            self.stopped = True
            if self.fast is not None:  # release its buffer exports before unmapping
                self.fast.close()
                self.fast = None
                self.counters.fastpath = 0
            for chan in self.channels.values():
                chan.close()
            self.channels.clear()
            for mm in (self.recv_mm, self.send_mm):
                mm.close()
            if self.guest_mem is not None:  # after the pump: it held a pointer into the mapping
                self.guest_mem.close()
        with self._inbox_lock:
            os.close(self._wake_fd)
            self._wake_fd = -1

    def set_fault(self, reason: str) -> None:
        if self.fault is None:
            self.fault = reason
            self.counters.faults += 1
            log.warning("%s: host stopped serving the channels: %s", self.dev.guid, reason)

    def take_inbox(self) -> tuple[set[int], list[bytes], list[Callable[[set[int], list[tuple[str, int]]], None]]]:
        """What other threads left for the worker: guest signals (relids), frames, commands."""
        with self._inbox_lock:
            signals, self._signals = self._signals, set()
            frames, commands = list(self._frames), list(self._commands)
            self._frames.clear()
            self._commands.clear()
        return signals, frames, commands

    def _iteration(self) -> list[tuple[str, int]]:
        """One pass under session.lock; returns the kernel calls to make afterwards."""
        signals, frames, commands = self.take_inbox()
        deferred: list[tuple[str, int]] = []
        with self.lock:
            if self.stopped:
                return []
            by_relid = {c.relid: c for c in self.channels.values()}
            wake: set[int] = {by_relid[r].index for r in signals if r in by_relid}
            for chan in self.channels.values():
                if chan.monitor_id is not None and self.host.monitor.take(chan.monitor_id):
                    self.counters.guest_signals += 1
                    wake.add(chan.index)
            signal_out: set[int] = set()
            if wake or frames or commands:
                self._last_activity = time.monotonic()
            if self.fault is None:
                for command in commands:
                    command(signal_out, deferred)
                for index in sorted(wake):
                    self.drain(self.channels[index], signal_out, deferred)
                self.end_pass(frames, signal_out, deferred)
                self._update_rx_ready()
                self._start_fast()
            deferred.extend(("signal", self.channels[i].relid) for i in sorted(signal_out) if i in self.channels)
            if len(self.pending_subchannels) > 0 or self.wants_subchannels():
                deferred.append(("attach", 0))
        return deferred

    def _start_fast(self) -> None:
        """Hand the data path to the C pump (fastsession.py) once, when it can serve."""
        if self._fast_tried or self.fault is not None or not self.rx_ready or not FastSession.can_serve(self):
            return
        self._fast_tried = True
        fast = FastSession.start(self)
        if fast is None:
            return
        self.fast = fast
        self.counters.fastpath = 1
        self.rx_ready = False  # the pump reads the tap now; SimHost's network thread must not
        self.host.wake_network()
        log.info("%s: host data path now in C (%d receive sections)", self.dev.guid, fast.pump.sections_owned)

    def _fast_iteration(self) -> list[tuple[str, int]]:
        """One pass of the C pump under session.lock; returns the kernel calls to make afterwards."""
        with self.lock:
            fast = self.fast
            if self.stopped or self._stop_requested or fast is None:
                return []
            deferred = fast.run_pass()
            if fast.ended:  # a fault: the host goes silent, back to the (faulted) Python loop
                fast.close()
                self.fast = None
                self.counters.fastpath = 0
            return deferred

    # -- the worker's steps, also the fast path's (fastsession.py) ---------------------------------

    @property
    def wake_fd(self) -> int:
        """The eventfd other threads write to wake the worker (the pump polls it too)."""
        return self._wake_fd

    def clear_wake(self) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass

    def until_tick(self) -> float:
        """Seconds until HostNvsp's next tick is due (0: now)."""
        return max(0.0, self._next_tick - time.monotonic())

    def mark_active(self) -> None:
        """Traffic flowed: monitor polling stays at the guest's latency."""
        self._last_activity = time.monotonic()

    def end_pass(self, frames: list[bytes], signal_out: set[int], deferred: list[tuple[str, int]]) -> None:
        """How every worker pass ends (Python or fast path): network frames in, the host's clock,
        then whatever is queued for the guest out."""
        if frames:
            self._deliver(frames, signal_out, deferred)
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + self.host.tick_interval
            self.apply(self.nvsp.tick(now), signal_out, deferred)
        for chan in self.channels.values():
            self._flush(chan, signal_out)

    def wants_subchannels(self) -> bool:
        return self.fault is None and self.offered_subchannels < self.nvsp.subchannels

    def drain(self, chan: Channel, signal_out: set[int], deferred: list[tuple[str, int]]) -> None:
        """Read the guest's outbound ring until empty (re-checked after unmasking)."""
        got = 0
        try:
            while self.fault is None:
                packets, space = chan.reader.read_batch(READ_BATCH)
                if space:
                    signal_out.add(chan.index)
                for pkt in packets:
                    got += 1
                    self.counters.packets_from_guest += 1
                    guest = GuestPacket(pkt.type, pkt.flags, pkt.trans_id, pkt.payload, pkt.header, chan.index)
                    self.apply(self.nvsp.receive(guest), signal_out, deferred)
                    if self.fault is not None:
                        break
                if not packets:
                    full_barrier()  # the unmask store must be visible before the re-check load
                    if chan.reader.bytes_to_read() == 0:
                        break
        except RingCorruptError as exc:
            self.counters.rejections += 1
            self.rejections.append(f"ring {chan.relid}: {exc.message}")
            self.set_fault(f"outbound ring of channel {chan.relid}: {exc.message}")
        if got == 0 and self.fault is None:
            self.counters.guest_signals_idle += 1

    def _deliver(self, frames: list[bytes], signal_out: set[int], deferred: list[tuple[str, int]]) -> None:
        """Network frames to the channels HostNvsp.rx_queue names (the guest's RSS table; the
        primary without RSS). A granted subchannel whose ring is not there yet gets its packet
        when the ring appears (`unattached`); its frames hold their receive sections meanwhile."""
        groups: dict[int, list[bytes]] = {}
        for frame in frames:
            groups.setdefault(self.nvsp.rx_queue(frame), []).append(frame)
        for index, group in groups.items():
            self.deliver_group(index, group, signal_out, deferred, None)

    def deliver_group(self, index: int, frames: list[bytes], signal_out: set[int],
                       deferred: list[tuple[str, int]], inject: RxFault | None) -> None:
        """Frames for channel `index` as one transfer-page packet, written at once or dropped."""
        nc = self.nvsp.counters
        chan = self.channels.get(index)
        room = None if chan is None else self._room(chan, signal_out)
        if self.fault is not None:
            return
        before, dropped = nc["rx_delivered"], nc["rx_dropped_ring_full"]
        self.apply(self.nvsp.deliver_batch(frames, index, inject=inject, room=room), signal_out, deferred)
        self.counters.frames_to_guest += nc["rx_delivered"] - before
        self.counters.rx_ring_full += nc["rx_dropped_ring_full"] - dropped
        if chan is not None:
            self._flush(chan, signal_out)  # the data packet fits (room only grows): written now

    def _room(self, chan: Channel, signal_out: set[int]) -> int:
        """Bytes a data packet may use in `chan`'s inbound ring: none while anything is queued
        (packets go in order), else the free bytes. Data is dropped, not queued, when it does not
        fit ([OV] process_endpoint_rx, rx_dropped_ring_full)."""
        self._flush(chan, signal_out)  # what is queued goes first
        if chan.backlog or self.fault is not None:
            return 0
        if self.fast is not None and self.fast.serves(chan.index):
            chan.writer._reload()  # the pump wrote since: take write_index (ours) from the header
        try:
            return chan.writer.bytes_free()
        except RingCorruptError as exc:
            self.counters.rejections += 1
            self.rejections.append(f"ring {chan.relid}: {exc.message}")
            self.set_fault(f"inbound ring of channel {chan.relid}: {exc.message}")
            return 0

    def apply(self, step: Step, signal_out: set[int], deferred: list[tuple[str, int]]) -> None:
        for pkt in step.packets:
            self._queue(pkt, signal_out)
        for ev in step.events:
            if isinstance(ev, FrameFromGuest):
                self.counters.frames_from_guest += 1
                net = self.host.network
                if net is None or not net.write_frame(ev.frame):
                    self.counters.frames_to_network_dropped += 1
            elif isinstance(ev, Rejection):
                self.counters.rejections += 1
                self.rejections.append(f"{ev.reason} ({ev.field} = {ev.value:#x}) -> {ev.action}")
            elif isinstance(ev, ChannelFault):
                self.set_fault(ev.reason)
            elif isinstance(ev, BufferRevoked):
                log.info("%s: guest revoked the %s buffer; channel no longer serviced", self.dev.guid, ev.which)
            elif isinstance(ev, SubchannelsOffered):
                deferred.append(("attach", 0))
            elif isinstance(ev, LinkIndicated):
                self.counters.link_indications += 1
            elif isinstance(ev, DataPathSwitched):
                self.counters.data_path_switches += 1
                self.vf_data_path = ev.to_vf
                log.info("%s: data path switched to %s by the %s", self.dev.guid, "VF" if ev.to_vf else "synthetic",
                         ev.by)
                self.host.wake_network()
            elif isinstance(ev, (PacketFilterSet, RndisHalted)):
                self._record_control(ev)

    def _record_control(self, ev: PacketFilterSet | RndisHalted) -> None:
        """The guest's filter sets and halt, in order, kept per NIC over opens (SimHost.rndis_control)."""
        text = f"packet_filter {ev.value:#x}" if isinstance(ev, PacketFilterSet) else "halt"
        self.host.control_log(self.dev).append(text)

    def _queue(self, pkt: HostPacket, signal_out: set[int]) -> None:
        data = pkt.encode()
        self.counters.packets_to_guest += 1
        chan = self.channels.get(pkt.channel)
        if chan is None:
            self.unattached.setdefault(pkt.channel, deque()).append(data)
            return
        chan.backlog.append(data)

    def _flush(self, chan: Channel, signal_out: set[int]) -> None:
        """Write queued packets in order; a full ring leaves the rest queued (never dropped). The
        network learns first whether the NIC takes frames (a packet filter's reply may be next)."""
        if not chan.backlog:
            return
        self._update_rx_ready()
        if self.fast is not None and self.fast.serves(chan.index):
            chan.writer._reload()  # the pump wrote since: take write_index (ours) from the header
        try:
            while chan.backlog:
                data = chan.backlog[0]
                try:
                    if chan.writer.write_raw([data]):
                        signal_out.add(chan.index)
                except BlockingIOError:
                    self.counters.inbound_full += 1
                    self.counters.backlog_max = max(self.counters.backlog_max, len(chan.backlog))
                    need = (len(data) + 7) // 8 * 8 + 8
                    chan.writer.set_pending_send_sz(min(need, chan.writer.data_size - 8))
                    return
                chan.backlog.popleft()
            chan.writer.set_pending_send_sz(0)
        except RingCorruptError as exc:
            self.counters.rejections += 1
            self.rejections.append(f"ring {chan.relid}: {exc.message}")
            self.set_fault(f"inbound ring of channel {chan.relid}: {exc.message}")

    def _update_rx_ready(self) -> None:
        rndis = self.nvsp.rndis
        ready = (self.fast is None  # the pump reads the tap itself: the network thread must not
                 and self.fault is None and rndis is not None and rndis.operational and bool(rndis.packet_filter))
        if ready != self.rx_ready:
            self.rx_ready = ready
            self.host.wake_network()

    # -- kernel calls (after session.lock is released; under kernel.lock) -------------------------

    def _kernel_calls(self, deferred: list[tuple[str, int]]) -> None:
        with self.kernel.lock:
            if self.stopped:
                return
            for what, relid in deferred:
                if what == "signal" and self.kernel.signal_guest(self.dev, relid):
                    self.counters.signals_to_guest += 1
            if any(what == "attach" for what, _ in deferred):
                self._subchannels()

    def _subchannels(self) -> None:
        """Offer what HostNvsp granted, attach rings that exist now, tell HostNvsp how many are open."""
        while self.offered_subchannels < self.nvsp.subchannels and self.fault is None:
            self.offered_subchannels += 1
            index = self.offered_subchannels
            self.pending_subchannels[index] = self.kernel.add_subchannel(self.dev, index)
        attached = False
        for index, relid in sorted(self.pending_subchannels.items()):
            sub = self.dev.channels.get(relid)
            if sub is None or sub.ring_backing is None or not sub.ring_backing.exists():
                continue
            with self.lock:
                if self.stopped:
                    return
                self._attach(index, relid, sub.monitor_id, sub.ring_backing, sub.ring_size)
                del self.pending_subchannels[index]
            attached = True
            with self._inbox_lock:  # drain once: a signal that came before the attach was dropped
                self._signals.add(relid)
            self._wake()
        if attached:  # HostNvsp sends the send indirection table once all granted ones are open
            with self.lock:
                if self.stopped:
                    return
                signal_out: set[int] = set()
                deferred: list[tuple[str, int]] = []
                self.apply(self.nvsp.channels_opened(len(self.channels)), signal_out, deferred)
                for chan in self.channels.values():
                    self._flush(chan, signal_out)
            for index in sorted(signal_out):
                if self.kernel.signal_guest(self.dev, self.channels[index].relid):
                    self.counters.signals_to_guest += 1
        # pending ones: their ring files appear ring_delay later; the next pass looks again
