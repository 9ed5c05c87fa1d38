"""The emulated host's receive path, sans-IO: host -> guest messages through the receive buffer.

What lives here: `ReceiveBuffer`, the guest's receive buffer (map 3) as the host hands it out
once the guest connected it: sections split into a few reserved for RNDIS control replies and
the rest for data (`HostProfile.control_sections`), one transfer-page packet per batch of
sections (one range per message, completion requested: the guest must complete every such
packet, which frees its sections), the transaction id of such a packet (the index of its first
section, as OpenVMM's), and the control replies queued while no section is free. How a message
sits in its section is `HostProfile.rx_layout` (`RxMessage`, `openvmm_message`, `openvmm_rsc`;
docs/EMULATOR.md "Receive layout"). `deliver` turns network frames into RNDIS packet messages
first: a plain frame is one message; a TCP GSO frame becomes vRSC fragments of one coalesced
frame (the guest enabled RSC for that IP version) or MSS segments; a NEEDS_CSUM frame gets its
checksum; receive checksum info is marked once the guest enabled it (offload.py has the rules);
with `vlan_oob` a tagged frame loses its tag to the 802.1Q info first (vlan.py), which follows
the checksum info. What cannot be sent is dropped and counted in the HostNvsp counters it is given, a batch
whose transfer-page packet does not fit the room left in the guest's inbound ring included
(`rx_dropped_ring_full`, as OpenVMM's process_endpoint_rx: data is never queued).
`RxFault` names the deliberate corruptions `deliver` can apply to exercise the guest's checks
(VMBUS.md §4, §5.14). Memory is reached only through the writer the emulator passes in. Which
channel a frame goes to is rss.py's (HostNvsp.rx_queue).

What must not live here: NVSP set-up and state (when a frame may be delivered at all, what the
guest negotiated: nvsp.py), RNDIS semantics (rndis.py), rings, fds, clocks.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from hvuio.errors import LocalProtocolError
from hvuio.sim.host import offload as ho
from hvuio.sim.host import profile as hp
from hvuio.sim.host import vlan
from hvuio.sim.host import wire as w
from hvuio.sim.host.rndis import OffloadState
from hvuio.sim.host.wire import HostPacket

WriteRecvBuffer = Callable[[int, bytes], None]  # (offset, data) into map 3

VF_ASSOCIATION_TID = 0x8000000000000000  # [OV] VF_ASSOCIATION_TRANSACTION_ID; no section has this index

# Deliberate host-side corruption of a receive, for the guest's VMBUS.md §4 checks (VMBUS.md §5.14):
# pageset id not 0xCAFE, a range past the buffer, longer than a section, of length 0, an RNDIS
# msg_len larger than the range, a data offset outside the message, an NVSP type other than 107.
RxFault = Literal["pageset", "range_past_buffer", "range_over_section", "zero_length", "rndis_len",
                  "data_offset", "nvsp_type"]


class ReceiveBuffer:
    """The receive buffer's sections, transfer-page packets and their completions (see the
    module docstring). Empty until `connect`. Not thread-safe; owned by one HostNvsp."""

    def __init__(self, write_recv_buffer: WriteRecvBuffer, counters: dict[str, int],
                 layout: hp.RxLayout = "openvmm") -> None:
        self._write_recv = write_recv_buffer
        self._layout = layout  # HostProfile.rx_layout
        self._counters = counters  # the HostNvsp's: rx_* drops and deliveries, control_queued
        self.layout: tuple[int, int, int, int] | None = None  # gpadl, pageset id, section size, count
        self.free_data: deque[int] = deque()
        self.free_control: deque[int] = deque()
        self._control_ids: frozenset[int] = frozenset()
        self._outstanding: dict[int, tuple[int, ...]] = {}  # first section (the trans_id) -> the batch's
        self._pending_control: deque[bytes] = deque()
        #: HostProfile.vlan_oob: network frames lose their 802.1Q tag to the 802.1Q pktinfo (vlan.py)
        self.vlan_oob = False

    def connect(self, gpadl: int, pageset: int, section: int, count: int, control_sections: int) -> None:
        """The guest's receive buffer: `count` sections of `section` bytes, answered as `pageset`."""
        self.layout = (gpadl, pageset, section, count)
        reserve = min(control_sections, count // 2)
        self._control_ids = frozenset(range(reserve))
        self.free_control = deque(range(reserve))
        self.free_data = deque(range(reserve, count))

    @property
    def data_sections(self) -> int:
        """Sections kept for data (the receive buffer less the control reserve); 0 before connect."""
        if self.layout is None:
            return 0
        return self.layout[3] - len(self._control_ids)

    @property
    def outstanding(self) -> int:
        """Receive sections the guest has not completed yet."""
        return sum(len(v) for v in self._outstanding.values())

    # -- host -> guest ---------------------------------------------------------------------------

    def deliver(self, frames: Sequence[bytes], channel: int, mtu: int, offload: OffloadState, pad: int,
                inject: RxFault | None, room: int | None = None) -> HostPacket | None:
        """Frames as one transfer-page packet, one range per RNDIS message (as [OV] batches them);
        None when no frame could be sent (each drop counted). `room`: bytes free in the channel's
        inbound ring (None: no limit); a packet that would not fit is dropped, its sections freed."""
        batch: list[tuple[int, RxMessage]] = []
        for frame in frames:
            units = self._rx_units(frame, mtu, offload)
            for msgs in units:
                if not msgs:
                    continue  # counted by _rx_units
                if len(batch) + len(msgs) > w.MAX_XFER_RANGES:
                    self._counters["rx_dropped_no_section"] += 1
                elif len(self.free_data) < len(msgs):
                    self._counters["rx_dropped_no_section"] += 1
                else:
                    batch.extend((self.free_data.popleft(), m) for m in msgs)
        if not batch:
            return None
        pkt = self._send_in_sections(batch, w.CHANNEL_TYPE_DATA, channel, pad, inject)
        if room is not None and room <= ring_need(pkt):
            # [OV] process_endpoint_rx: try_send_rndis_message finds the ring full -> the batch is
            # dropped, rx_dropped_ring_full counted, its receive buffers freed (never queued).
            self._release(pkt.trans_id)
            self._counters["rx_dropped_ring_full"] += len(batch)
            return None
        self._counters["rx_delivered"] += len(batch)
        return pkt

    def _rx_units(self, frame: bytes, mtu: int, offload: OffloadState) -> list[list[RxMessage]]:
        """RNDIS messages for one network frame, grouped by what must be delivered together:
        a plain frame is one message; a TCP GSO frame from the network becomes vRSC fragments of one
        coalesced frame (guest enabled RSC for that IP version) or MSS segments; a NEEDS_CSUM frame
        gets its checksum. Receive checksum info is marked when the guest enabled it."""
        assert self.layout is not None
        section = self.layout[2]
        marks = offload.rx_marks()
        frame, vlan_ppi = self._vlan_oob(frame)
        vnet = frame.vnet if isinstance(frame, ho.GsoFrame) else None
        frames = [frame]
        try:
            if vnet is not None and vnet.gso_type & ~ho.GSO_ECN in (ho.GSO_TCPV4, ho.GSO_TCPV6):
                self._counters["rx_gso"] += 1
                v6 = vnet.gso_type & ~ho.GSO_ECN == ho.GSO_TCPV6
                if offload.rsc6 if v6 else offload.rsc4:
                    whole = ho.fixup_rsc(frame)
                    csum = ho.rx_csum_flags(whole, vnet, marks)
                    frags = (openvmm_rsc(whole, section, csum, vlan_ppi) if self._layout == "openvmm"
                             else [RxMessage.whole(m) for m in ho.rsc_fragments(whole, section, csum, vlan_ppi)])
                    self._counters["rx_rsc_fragments"] += len(frags)
                    return [frags]
                frames = ho.segment_tcp(frame, vnet)
            elif vnet is not None and vnet.flags & ho.VNET_F_NEEDS_CSUM:
                frames = [ho.complete_csum(frame, vnet)]
        except w.HostWireError:
            self._counters["rx_dropped_bad_gso"] += 1
            return []
        units: list[list[RxMessage]] = []
        for f in frames:
            flags = ho.rx_csum_flags(f, vnet, marks) if marks else None
            if self._layout == "openvmm":  # checksum info first (0: not checked), then the 802.1Q info
                msg = openvmm_message(f, ho.ppi(ho.PPI_CSUM, struct.pack("<I", flags or 0)) + vlan_ppi, section)
            else:
                ppis = (b"" if flags is None else ho.ppi(ho.PPI_CSUM, struct.pack("<I", flags))) + vlan_ppi
                msg = RxMessage.whole(ho.rndis_packet_ppi(f, ppis) if ppis else w.rndis_packet(f))
            if not hp.ETH_HEADER_LEN <= len(f) <= mtu or not msg.fits(section):
                self._counters["rx_dropped_too_big"] += 1
                units.append([])
            else:
                units.append([msg])
        return units

    def _vlan_oob(self, frame: bytes) -> tuple[bytes, bytes]:
        """With vlan_oob, the frame without its 802.1Q tag and the 802.1Q pktinfo that carries it
        (a trunk-mode port's delivery); else the frame as it is and no pktinfo."""
        if not self.vlan_oob:
            return frame, b""
        frame, info = vlan.strip(frame)
        if info is None:
            return frame, b""
        self._counters["rx_vlan"] += 1
        return frame, ho.ppi(ho.PPI_VLAN, struct.pack("<I", info))

    def send_control(self, msg: bytes, pad: int) -> HostPacket | None:
        """An RNDIS control message in a control section (a data section when none is free), or
        queued until a completion frees one (None)."""
        pool = self.free_control or self.free_data
        if not pool:
            self._pending_control.append(msg)
            self._counters["control_queued"] += 1
            return None
        # [OV] send_rndis_control_message: a control reply's range is as long as the message.
        return self._send_in_sections([(pool.popleft(), RxMessage.whole(msg))], w.CHANNEL_TYPE_CONTROL, 0, pad,
                                      None)

    def _send_in_sections(
        self, batch: list[tuple[int, RxMessage]], chan_type: int, channel: int, pad: int, inject: RxFault | None,
    ) -> HostPacket:
        assert self.layout is not None
        _, pageset, section, count = self.layout
        ranges: list[tuple[int, int]] = []
        for index, msg in batch:
            if not msg.fits(section):
                raise LocalProtocolError(f"host message of {msg.length} bytes does not fit a {section}-byte section")
            offset = index * section
            head = msg.head
            if inject == "rndis_len":
                head = head[:4] + struct.pack("<I", msg.length + 100) + head[8:]
            elif inject == "data_offset":
                head = head[:8] + struct.pack("<I", 0x7FFFFFF0) + head[12:]
            self._write_recv(offset, head)
            if msg.body:
                self._write_recv(offset + msg.body_at, msg.body)
            ranges.append((msg.length, offset))
        # The batch's first section is its id, 0 included: OpenVMM process_endpoint_rx sends
        # `rx_ready[0]` and release_recv_buffers frees the batch by it (microsoft/openvmm
        # vm/devices/net/netvsp/src/lib.rs); DPDK indexes its per-section table by it (hn_rxtx.c
        # hn_nvs_handle_rxbuf). A section is in at most one batch, so ids of batches in flight differ.
        tid = batch[0][0]
        self._outstanding[tid] = tuple(index for index, _ in batch)
        nvsp_type = w.NVSP_SEND_RNDIS_PKT
        if inject == "pageset":
            pageset ^= 0x0101
        elif inject == "range_past_buffer":
            ranges[0] = (ranges[0][0], count * section)
        elif inject == "range_over_section":
            ranges[0] = (section + 8, ranges[0][1])
        elif inject == "zero_length":
            ranges[0] = (0, ranges[0][1])
        elif inject == "nvsp_type":
            nvsp_type = w.NVSP_SEND_RNDIS_PKT_COMPLETE
        payload = w.nvsp(nvsp_type, chan_type, w.NO_SEND_SECTION, 0, pad_to=pad)
        # Completion requested: the guest must complete every transfer-page packet, which frees the
        # sections ([NVSC] enq_receive_complete; DPDK hn_nvs_ack_rxbuf). Linux ignores the flag itself.
        return HostPacket(channel, w.PKT_XFER_PAGES, w.FLAG_COMPLETION_REQUESTED, tid, payload,
                          pageset, tuple(ranges))

    # -- guest -> host ---------------------------------------------------------------------------

    def complete(self, trans_id: int) -> bool:
        """The guest completed transfer `trans_id`: its sections are free again. False when no
        such transfer is outstanding (unknown or repeated id)."""
        return self._release(trans_id)

    def _release(self, trans_id: int) -> bool:
        indexes = self._outstanding.pop(trans_id, None)
        if indexes is None:
            return False
        for index in indexes:
            (self.free_control if index in self._control_ids else self.free_data).append(index)
        return True

    def send_pending(self, pad: int) -> list[HostPacket]:
        """Queued control messages, in order, into the sections free now."""
        packets: list[HostPacket] = []
        while self._pending_control and (self.free_control or self.free_data):
            pkt = self.send_control(self._pending_control.popleft(), pad)
            if pkt is not None:
                packets.append(pkt)
        return packets


class RxMessage(NamedTuple):
    """One RNDIS message as it goes into a receive section: `head` at the section's start, `body`
    (may be empty) at `body_at`, and `length`, the range's byte count; the last `footer` bytes of
    the section must stay unused. Bytes in between and after are not written: they keep what the
    section held."""

    head: bytes
    body: bytes
    body_at: int
    length: int
    footer: int = 0

    @classmethod
    def whole(cls, msg: bytes) -> RxMessage:
        """A message written in one piece, its range exactly as long (the compact layout, control replies)."""
        return cls(msg, b"", len(msg), len(msg))

    def fits(self, section: int) -> bool:
        return self.length <= section and self.body_at + len(self.body) <= section - self.footer


def openvmm_message(frame: bytes, ppis: bytes, section: int) -> RxMessage:
    """An RNDIS_PACKET_MSG laid out as OpenVMM's receive path writes it ([OV-BUF] buffers.rs
    BufferPool::write_header and write_data, lib.rs process_endpoint_rx): message_length and the
    range's byte count are the whole sub-allocation; the frame at byte RX_HEADER_RESERVE (256) of it
    (data_offset 248, counted from byte 8); the per-packet info right after the 44-byte header
    (offset 36), checksum info first; the rest of the section is not written. A frame that would
    reach the 36-byte footer does not fit (`RxMessage.fits`): [OV-BUF] capacity() is the MTU."""
    body = struct.pack("<9I", hp.RX_HEADER_RESERVE - w.RNDIS_HEADER_SIZE, len(frame), 0, 0, 0,
                       w.RNDIS_PACKET_MSG_SIZE - w.RNDIS_HEADER_SIZE, len(ppis), 0, 0)
    head = struct.pack("<II", w.RNDIS_PACKET_MSG, section) + body + ppis
    if len(head) > hp.RX_HEADER_RESERVE:
        raise LocalProtocolError(f"{len(ppis)} bytes of per-packet info do not fit the receive header reserve")
    return RxMessage(head, frame, hp.RX_HEADER_RESERVE, section, hp.RX_FOOTER_RESERVE)


def openvmm_rsc(frame: bytes, section: int, csum_flags: int | None, first_extra: bytes = b"") -> list[RxMessage]:
    """vRSC fragments (offload.rsc_fragments' pktinfo id flags) in the openvmm layout. [OV] has no
    receive coalescing; emulator choice: each fragment is laid out as a frame (openvmm_message) and
    carries checksum info first, the coalesced frame's on the first fragment and 0 (not checked)
    on the others, as Linux takes it from the first fragment only (rndis_filter.c rsc_add_data);
    `first_extra` (the 802.1Q info) follows the first fragment's checksum info."""
    room = section - hp.RX_HEADER_RESERVE - hp.RX_FOOTER_RESERVE
    if room <= 0:
        raise w.HostWireError("receive section", section, "too small for an RSC fragment")
    out: list[RxMessage] = []
    for pos in range(0, len(frame), room):
        last = pos + room >= len(frame)
        flag = ho.PKTINFO_SUBALLOC | (0 if pos else ho.PKTINFO_1ST_FRAG) | (ho.PKTINFO_LAST_FRAG if last else 0)
        ppis = ho.ppi(ho.PPI_CSUM, struct.pack("<I", (csum_flags or 0) if pos == 0 else 0))
        ppis += first_extra if pos == 0 else b""
        ppis += ho.ppi(ho.PPI_PKTINFO_ID, struct.pack("<BBH", ho.PKTINFO_ID_V1, flag, 0))
        out.append(openvmm_message(frame[pos:pos + room], ppis, section))
    return out


def ring_need(pkt: HostPacket) -> int:
    """Ring bytes `pkt` takes: the packet padded to 8 plus the 8-byte trailer. A writer needs more
    free bytes than this: the ring is never filled completely (VMBUS.md §3.8)."""
    return -(-len(pkt.encode()) // 8) * 8 + 8
