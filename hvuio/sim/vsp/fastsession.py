"""The C fast path inside one `Session` (session.py): `FastSession`, the pump serving the data
path of every open channel of the NIC, a worker pass while it does, the packets it hands back, and
its counters folded into the session's.

What lives here: `FastSession.can_serve(session)` (everything the pump needs is in place: RNDIS up
with a packet filter behind a tap network, one NIC, the primary's buffers connected),
`FastSession.start(session)` (the pump, owning the data receive sections HostNvsp had free;
HostNvsp keeps its control sections; None when the pump cannot be made), `serves(index)`, and per
worker pass `run_pass()`: add the subchannels whose rings are attached since (one pump thread
loops over all; a ring of another size than the primary's stays with Python), run the pump until
it needs Python, read exactly the packet it stopped at with that channel's HostRingReader and give
it to HostNvsp, deliver the frames the pump's RSS hash put on channels it does not serve (through
HostNvsp, with sections taken back from the pump), then the inbox (guest signals of channels the
pump does not serve), the tick and the flush, and hand the pump the data sections HostNvsp freed since (the pump stops reading
the tap while the guest's data path is its VF: SimHost's network thread reads it for the VF path,
the pump keeps serving the synthetic TX and control); plus the counter
bookkeeping (what the pump moved, counted as HostNvsp and the network would have). After a ring
fault `ended` is set and the session closes it. Session's module docstring gives the ring index
invariant both sides keep.

What it uses of the session is its public side: the state it shares (`lock`, `nvsp`, `channels`,
`counters`, `rejections`, `fault`, `host`, `kernel`, `dev`, the mappings) and the worker's steps
(`take_inbox`, `apply`, `drain`, `deliver_group`, `end_pass`, `set_fault`, `wants_subchannels`,
`until_tick`, `wake_fd`, `clear_wake`, `mark_active`).

What must not live here: the pump itself (fastpath.py, _native/simhost/), protocol rules
(hvuio.sim.host), the Python path's loop, rings' writing and the kernel calls (session.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hvuio.errors import HvuioError, RingCorruptError
from hvuio.sim.host import wire
from hvuio.sim.host.nvsp import GuestPacket
from hvuio.sim.net import NetCounters
from hvuio.sim.vsp import fastpath, guestmem
from hvuio.sim.vsp.memory import PAGE_SIZE

if TYPE_CHECKING:
    from hvuio.sim.vsp.session import Session

log = logging.getLogger("hvuio.sim.vsp")

Deferred = list[tuple[str, int]]


class FastSession:
    """The C pump serving one session's data path, every channel it can (see the module docstring)."""

    def __init__(self, session: Session, pump: fastpath.HostPump) -> None:
        self._s = session
        self.pump = pump
        self.ended = False  # a fault stopped the pump: the session closes it and goes on in Python
        self._seen: dict[str, int] = dict.fromkeys(fastpath.COUNTER_NAMES, 0)
        self._served: set[int] = {0}  # channels the pump serves
        self._declined: set[int] = set()  # ... and those it cannot (ring size), left to Python
        self._seen_signals: dict[int, int] = {0: 0}

    @staticmethod
    def can_serve(s: Session) -> bool:
        """Everything the pump needs is in place (the caller checked RNDIS is up with a filter)."""
        if not fastpath.enabled():
            return False
        tap = getattr(s.host.network, "tap", None)  # HostNetwork: a tap fd both ways
        chan = s.channels.get(0)
        nvsp = s.nvsp
        return not (tap is None or len(s.kernel.nics) != 1 or chan is None or chan.backlog
                    or nvsp.recv is None or nvsp.send is None)

    @classmethod
    def start(cls, s: Session) -> FastSession | None:
        """The pump over the primary channel, with the data sections HostNvsp had free; None
        (logged) when it cannot be made. The caller checked `can_serve`."""
        tap = getattr(s.host.network, "tap", None)
        assert tap is not None
        chan = s.channels[0]
        nvsp = s.nvsp
        assert nvsp.recv is not None and nvsp.send is not None
        _, _, section, count = nvsp.recv
        _, send_section, _ = nvsp.send
        cfg = fastpath.PumpConfig(
            ring_size=len(chan.mm) // 2, header_size=PAGE_SIZE, recv_section=section, recv_count=count,
            send_section=send_section, max_frame=nvsp.ndis_mtu or 1514,
            nvsp_pad=40 if nvsp.version >= wire.NVSP_VERSION_61 else 28,  # HostNvsp._pad
            tap_fd=tap.fileno(), monitor_id=chan.monitor_id, strict=nvsp.profile.strict,
            rx_layout=nvsp.profile.rx_layout,
            guest_memory=s.guest_mem if isinstance(s.guest_mem, guestmem.GuestMemoryFile) else None,
            vnet_hdr=bool(getattr(tap, "vnet_hdr", False)), tap_gso=bool(getattr(s.host.network, "offload", False)),
            vlan_oob=nvsp.profile.vlan_oob, offloads=lambda: cls._offloads(s))
        try:
            pump = fastpath.HostPump(cfg, chan.mm, s.recv_mm, s.send_mm, s.host.monitor.mm,
                                     irq=s.dev.irq, auto_mask=s.kernel.profile.auto_mask)
            pump.add_sections(nvsp.free_data)  # HostNvsp keeps its control sections
        except (HvuioError, ValueError, TypeError, BufferError) as exc:
            log.warning("%s: host fast path not started, Python serves the data path: %s", s.dev.guid, exc)
            return None
        nvsp.free_data.clear()
        pump.rx_enabled = True
        return cls(s, pump)

    @staticmethod
    def _offloads(s: Session) -> tuple[int, int]:
        """The pump's (off_tx, off_rx): what the guest enabled with OID_TCP_OFFLOAD_PARAMETERS."""
        rndis = s.nvsp.rndis
        return rndis.offload.pump_bits() if rndis is not None else (0, 0)

    def serves(self, index: int) -> bool:
        """The pump reads and writes channel `index`'s rings (Python reloads their host indices)."""
        return index in self._served

    def _add_channels(self) -> None:
        """Subchannels attached since the last pass join the pump."""
        s, pump = self._s, self.pump
        for index, chan in sorted(s.channels.items()):
            if index in self._served or index in self._declined:
                continue
            try:
                pump.add_channel(index, chan.mm, s.host.monitor.mm, chan.monitor_id)
            except (HvuioError, ValueError, TypeError, BufferError) as exc:
                self._declined.add(index)
                log.warning("%s: channel %d stays on the Python data path: %s", s.dev.guid, index, exc)
                continue
            self._served.add(index)
            self._seen_signals[index] = 0

    def counters(self) -> dict[str, int]:
        """The pump's own counters (fastpath.COUNTER_NAMES)."""
        return self.pump.counters()

    def close(self) -> None:
        """Release the pump's buffer exports (before the session unmaps)."""
        self.pump.close()

    # -- one worker pass (the caller holds session.lock) -----------------------------------------

    def run_pass(self) -> Deferred:
        """Run the pump until it needs Python, then do what it asked plus the inbox and tick;
        returns the kernel calls to make afterwards (signals, attaching subchannels)."""
        s, pump = self._s, self.pump
        deferred: Deferred = []
        self._add_channels()
        pump.set_rss(s.nvsp.rss, s.nvsp.subchannels + 1)  # the guest's RSS: the pump hashes alike
        result = pump.run(s.wake_fd, s.until_tick())
        s.clear_wake()
        signals, frames, commands = s.take_inbox()
        signal_out: set[int] = set(pump.signal_channels) if pump.signal else set()
        if result == fastpath.PumpResult.FAULT:
            s.counters.rejections += 1
            chan = s.channels.get(pump.last_channel, s.channels[0])
            relid = chan.relid
            s.rejections.append(f"ring {relid}: {pump.fault_message()}")
            s.set_fault(f"ring of channel {relid}: {pump.fault_message()}")
        elif result == fastpath.PumpResult.CONTROL:
            self._control(signal_out, deferred)
        steered = pump.take_steered()
        if s.fault is None:
            if steered:
                self._deliver_steered(steered, signal_out, deferred)
            for command in commands:
                command(signal_out, deferred)
            by_relid = {c.relid: c for c in s.channels.values()}
            wake = {by_relid[r].index for r in signals if r in by_relid}
            for chan in s.channels.values():  # the pump takes its channels' monitor bits itself
                if (chan.index not in self._served and chan.monitor_id is not None
                        and s.host.monitor.take(chan.monitor_id)):
                    s.counters.guest_signals += 1
                    wake.add(chan.index)
            for index in sorted(wake - self._served):  # channels the pump does not serve
                s.drain(s.channels[index], signal_out, deferred)
            s.end_pass(frames, signal_out, deferred)
            if s.nvsp.free_data:  # data sections HostNvsp freed (its earlier deliveries)
                pump.add_sections(s.nvsp.free_data)
                s.nvsp.free_data.clear()
            rndis = s.nvsp.rndis
            pump.rx_enabled = (rndis is not None and rndis.operational and bool(rndis.packet_filter)
                               and not s.vf_data_path)  # on the VF path SimHost reads the tap for the VF
        self._count()
        if s.fault is not None:  # the host goes silent: back to the (faulted) Python loop
            self.ended = True
        deferred.extend(("signal", s.channels[i].relid) for i in sorted(signal_out) if i in s.channels)
        if len(s.pending_subchannels) > 0 or s.wants_subchannels():
            deferred.append(("attach", 0))
        return deferred

    def _deliver_steered(self, steered: list[tuple[int, bytes]], signal_out: set[int], deferred: Deferred) -> None:
        """Frames the pump's RSS hash put on channels it does not serve (a granted subchannel whose
        ring is not there yet, or declined): Python delivers them there, with the
        sections the pump had free (those left free go back to it at the end of the pass)."""
        s, pump = self._s, self.pump
        s.nvsp.free_data.extend(pump.take_sections())
        tap_frames = getattr(s.host.network, "tap_frames", None)
        groups: dict[int, list[bytes]] = {}
        for queue, data in steered:
            frames = tap_frames(data) if pump.cfg.vnet_hdr and tap_frames is not None else [data]
            groups.setdefault(queue, []).extend(frames)
        for queue, frames in sorted(groups.items()):
            s.deliver_group(queue, frames, signal_out, deferred, None)

    def _control(self, signal_out: set[int], deferred: Deferred) -> None:
        """Read exactly the packet the pump stopped at, with its channel's reader, and apply it."""
        s = self._s
        chan = s.channels[self.pump.last_channel]
        try:
            chan.reader._reload()  # the pump published read_index: continue from there
            pkt = chan.reader.read_packet()
            if chan.reader.commit():
                signal_out.add(0)
        except RingCorruptError as exc:
            s.counters.rejections += 1
            s.rejections.append(f"ring {chan.relid}: {exc.message}")
            s.set_fault(f"outbound ring of channel {chan.relid}: {exc.message}")
            return
        if pkt is None:
            return
        s.counters.packets_from_guest += 1
        guest = GuestPacket(pkt.type, pkt.flags, pkt.trans_id, pkt.payload, pkt.header, chan.index)
        s.apply(s.nvsp.receive(guest), signal_out, deferred)

    def _count(self) -> None:
        s, pump = self._s, self.pump
        now = pump.counters()
        d = {k: now[k] - self._seen[k] for k in now}
        self._seen = now
        c = s.counters
        c.frames_to_guest += d["rx_frames"]
        c.frames_from_guest += d["tx_frames"] + d["tx_net_errors"]
        c.frames_to_network_dropped += d["tx_net_errors"]
        c.packets_to_guest += d["rx_packets"] + d["tx_completions"]
        c.packets_from_guest += d["tx_completions"] + d["rx_completions"] + d["completions_unknown"]
        c.guest_signals += d["monitor_wakeups"]
        c.signals_to_guest += d["signals"]  # raised by the pump itself (it has the device's irq)
        for index in self._served:  # the interrupts the pump raised, per channel
            raised = pump.channel_counters(index)["signals"]
            dev_chan = s.dev.channels.get(s.channels[index].relid) if index in s.channels else None
            if dev_chan is not None:
                dev_chan.interrupts += raised - self._seen_signals[index]
            self._seen_signals[index] = raised
        c.fastpath_rx_ring_full += d["rx_dropped_ring_full"]
        c.rx_ring_full += d["rx_dropped_ring_full"]
        c.fastpath_handoffs += d["handoffs"]
        c.fastpath_completions_unknown += d["completions_unknown"]
        if d["tx_gpa_rejected"]:  # completed FAILED by the pump: logged here, as HostNvsp would
            c.rejections += d["tx_gpa_rejected"]
            why = f"GPA-direct page outside guest memory (pfn = {pump.value:#x}) -> failure-status"
            s.rejections.append(f"{why} ({d['tx_gpa_rejected']} send(s), fast path)")
            log.warning("%s: host rejected %d send(s): %s", s.dev.guid, d["tx_gpa_rejected"], why)
        if d["rx_frames"] or d["tx_frames"]:
            s.mark_active()
        # the pump does the work HostNvsp and the network would count: keep their books whole
        nc = s.nvsp.counters
        nc["rx_delivered"] += d["rx_frames"]
        nc["rx_dropped_no_section"] += d["rx_dropped_no_section"]
        nc["rx_dropped_ring_full"] += d["rx_dropped_ring_full"]
        nc["rx_dropped_too_big"] += d["rx_dropped_too_big"]
        nc["tx_frames"] += d["tx_frames"] + d["tx_net_errors"]
        nc["tx_failed"] += d["tx_gpa_rejected"]
        nc["rx_vlan"] += d["rx_vlan"]
        net = getattr(s.host.network, "counters", None)
        if isinstance(net, NetCounters):
            net.add_pump(d)
