"""The C fast path inside one `Session` (session.py): starting the pump, a worker pass while it
serves the primary channel, the packets it hands back, and its counters folded into the session's.

What lives here: `start(session)` (the pump takes the primary's data path once RNDIS is up with a
packet filter, behind a tap network: it reads the tap itself, so the session's rx_ready stays
False, and owns the data receive sections HostNvsp had free; HostNvsp keeps its control sections),
`fast_pass(session)` (run the pump until it needs Python, read exactly the packet it stopped at
with the channel's HostRingReader and give it to HostNvsp, then the inbox, the tick and the
flush, and hand the pump the data sections HostNvsp freed since), and the counter bookkeeping
(what the pump moved, counted as HostNvsp and the network would have). Session's module
docstring gives the ring index invariant both sides keep.

What must not live here: the pump itself (fastpath.py, _native/simhost/), protocol rules
(hvuio.sim.host), the Python path's loop, rings' writing and the kernel calls (session.py).
"""

from __future__ import annotations

import logging
import os
import time
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


def start(s: Session) -> None:
    """Hand the primary's data path to the C pump when everything it needs is in place."""
    if s._fast_tried or s.fault is not None or not s.rx_ready or not fastpath.enabled():
        return
    tap = getattr(s.host.network, "tap", None)  # HostNetwork: a tap fd both ways
    chan = s.channels.get(0)
    nvsp = s.nvsp
    if (tap is None or len(s.kernel.nics) != 1 or nvsp.subchannels or s.pending_subchannels
            or chan is None or chan.backlog or nvsp.recv is None or nvsp.send is None):
        return
    s._fast_tried = True
    _, _, section, count = nvsp.recv
    _, send_section, _ = nvsp.send
    cfg = fastpath.PumpConfig(
        ring_size=len(chan.mm) // 2, header_size=PAGE_SIZE, recv_section=section, recv_count=count,
        send_section=send_section, max_frame=nvsp.ndis_mtu or 1514,
        nvsp_pad=40 if nvsp.version >= wire.NVSP_VERSION_61 else 28,  # HostNvsp._pad
        tap_fd=tap.fileno(), monitor_id=chan.monitor_id, strict=nvsp.profile.strict,
        guest_memory=s.guest_mem if isinstance(s.guest_mem, guestmem.GuestMemoryFile) else None,
        vnet_hdr=bool(getattr(tap, "vnet_hdr", False)), tap_gso=bool(getattr(s.host.network, "offload", False)),
        vlan_oob=nvsp.profile.vlan_oob, offloads=lambda: _pump_offloads(s))
    try:
        pump = fastpath.HostPump(cfg, chan.mm, s.recv_mm, s.send_mm, s.host.monitor.mm,
                                 irq=s.dev.irq, auto_mask=s.kernel.profile.auto_mask)
        pump.add_sections(nvsp._free_data)  # HostNvsp keeps its control sections
    except (HvuioError, ValueError, TypeError, BufferError) as exc:
        log.warning("%s: host fast path not started, Python serves the data path: %s", s.dev.guid, exc)
        return
    nvsp._free_data.clear()
    pump.rx_enabled = True
    s.fast = pump
    s.counters.fastpath = 1
    s.rx_ready = False  # the pump reads the tap now; SimHost's network thread must not
    s.host.wake_network()
    log.info("%s: host data path now in C (%d receive sections)", s.dev.guid, pump.sections_owned)


def _pump_offloads(s: Session) -> tuple[int, int]:
    """The pump's (off_tx, off_rx): what the guest enabled with OID_TCP_OFFLOAD_PARAMETERS."""
    rndis = s.nvsp.rndis
    return rndis.offload.pump_bits() if rndis is not None else (0, 0)


def fast_pass(s: Session) -> list[tuple[str, int]]:
    """Run the pump until it needs Python, then do what it asked plus the inbox and tick."""
    deferred: list[tuple[str, int]] = []
    with s.lock:
        pump = s.fast
        if s.stopped or s._stop_requested or pump is None:
            return []
        timeout = max(0.0, s._next_tick - time.monotonic())
        result = pump.run(s._wake_fd, timeout)
        try:
            os.eventfd_read(s._wake_fd)
        except BlockingIOError:
            pass
        signals, frames, commands = s.take_inbox()
        signal_out: set[int] = {0} if pump.signal else set()
        if result == fastpath.PumpResult.FAULT:
            s.counters.rejections += 1
            relid = s.channels[0].relid
            s.rejections.append(f"ring {relid}: {pump.fault_message()}")
            s._set_fault(f"ring of channel {relid}: {pump.fault_message()}")
        elif result == fastpath.PumpResult.CONTROL:
            _control(s, signal_out, deferred)
        if s.fault is None:
            for command in commands:
                command(signal_out, deferred)
            by_relid = {c.relid: c for c in s.channels.values()}
            wake = {by_relid[r].index for r in signals if r in by_relid}
            for chan in s.channels.values():
                if chan.index and chan.monitor_id is not None and s.host.monitor.take(chan.monitor_id):
                    s.counters.guest_signals += 1
                    wake.add(chan.index)
            for index in sorted(wake - {0}):  # subchannels stay on the Python path
                s._drain(s.channels[index], signal_out, deferred)
            s._end_pass(frames, signal_out, deferred)
            if s.nvsp._free_data:  # data sections HostNvsp freed (its earlier deliveries)
                pump.add_sections(s.nvsp._free_data)
                s.nvsp._free_data.clear()
            rndis = s.nvsp.rndis
            pump.rx_enabled = rndis is not None and rndis.operational and bool(rndis.packet_filter)
        _count(s, pump)
        if s.fault is not None:  # the host goes silent: back to the (faulted) Python loop
            pump.close()
            s.fast = None
            s.counters.fastpath = 0
        deferred.extend(("signal", s.channels[i].relid) for i in sorted(signal_out) if i in s.channels)
        if len(s.pending_subchannels) > 0 or s._want_subchannels():
            deferred.append(("attach", 0))
    return deferred


def _control(s: Session, signal_out: set[int], deferred: list[tuple[str, int]]) -> None:
    """Read exactly the packet the pump stopped at, with Python's reader, and apply it."""
    chan = s.channels[0]
    try:
        chan.reader._reload()  # the pump published read_index: continue from there
        pkt = chan.reader.read_packet()
        if chan.reader.commit():
            signal_out.add(0)
    except RingCorruptError as exc:
        s.counters.rejections += 1
        s.rejections.append(f"ring {chan.relid}: {exc.message}")
        s._set_fault(f"outbound ring of channel {chan.relid}: {exc.message}")
        return
    if pkt is None:
        return
    s.counters.packets_from_guest += 1
    guest = GuestPacket(pkt.type, pkt.flags, pkt.trans_id, pkt.payload, pkt.header, 0)
    s._apply(s.nvsp.receive(guest), signal_out, deferred)


def _count(s: Session, pump: fastpath.HostPump) -> None:
    now = pump.counters()
    d = {k: now[k] - s._fast_seen[k] for k in now}
    s._fast_seen = now
    c = s.counters
    c.frames_to_guest += d["rx_frames"]
    c.frames_from_guest += d["tx_frames"] + d["tx_net_errors"]
    c.frames_to_network_dropped += d["tx_net_errors"]
    c.packets_to_guest += d["rx_packets"] + d["tx_completions"]
    c.packets_from_guest += d["tx_completions"] + d["rx_completions"] + d["completions_unknown"]
    c.guest_signals += d["monitor_wakeups"]
    c.signals_to_guest += d["signals"]  # raised by the pump itself (it has the device's irq)
    primary = s.dev.channels.get(s.channels[0].relid)
    if primary is not None:
        primary.interrupts += d["signals"]
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
        s._last_activity = time.monotonic()
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
