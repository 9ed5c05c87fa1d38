"""The emulated host's send path, sans-IO: guest -> host RNDIS messages out of the send buffer.

What lives here: `SendBuffer`, the guest's send buffer (map 4) once the guest connected it, and
what the host does with the bytes of one NVSP RNDIS send: `read` takes them from a send-buffer
section (checked against the buffer: a send may span sections, as OpenVMM's parse_packet takes
any sub-range of the buffer) and/or from guest pages (GPA-direct, through the reader the emulator
passes in, which refuses a page outside guest memory with `GuestPagesUnreadable`: that send
fails, the channel goes on); `split` walks them as OpenVMM does (a send that starts with a data
message holds data messages only; a control message takes the rest of its send), all validated
before any is acted on (a data message's header and per-packet info must lie in the range it
starts in, as OpenVMM reads them from one range): data messages become Ethernet frames with
their checksum/LSO requests applied (offload.py; an LSO frame leaves as a `GsoFrame` for the
network, a request for an offload the guest did not enable is logged and the frame sent as is)
and the tag of their 802.1Q info put on (vlan.py), a control message is returned for HostRndis.
Strict only: data before RNDIS INITIALIZE or a packet filter is refused (`TxRefused`), a
channel_type that does not match the message and a send past the aggregation limits the host
announced are logged.

What must not live here: NVSP set-up and state, completions and replies (nvsp.py), RNDIS control
semantics (rndis.py), the receive buffer (receive.py), rings, fds, clocks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from hvuio.sim.host import offload as ho
from hvuio.sim.host import vlan
from hvuio.sim.host import profile as hp
from hvuio.sim.host import wire as w
from hvuio.sim.host.events import HostEvent, Rejection, RejectionLog, fault
from hvuio.sim.host.rndis import HostRndis
from hvuio.sim.host.wire import GuestPacket

ReadSendBuffer = Callable[[int, int], bytes]  # (offset, length) -> bytes of map 4
ReadGuestPages = Callable[[tuple[int, ...], int, int], bytes]  # (pfns, offset, length) for GPA-direct
#: The RNDIS packet header after its 8-byte message header: 9 u32 (data / OOB / PPI offsets, ...).
RNDIS_PACKET_BODY = 36


class GuestPagesUnreadable(Exception):
    """A `ReadGuestPages` reader's refusal: a page outside the guest's memory, or a range the reader's
    own bounds refuse. The send fails with NVSP_STAT_FAIL and the channel goes on ([OV] handle_rndis
    probes every page of every range first: GpaDirectError -> complete_tx_packet(FAILURE))."""

    def __init__(self, reason: str, field: str, value: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.value = value


class TxRefused(Exception):
    """A data send the host fails with NVSP_STAT_FAIL (strict: RNDIS not ready for data)."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason)
        self.rejection = rejection


class SendBuffer:
    """Reads and splits the guest's RNDIS sends; see the module docstring. Not thread-safe; owned
    by one HostNvsp, whose profile, rejection log and counters it shares."""

    def __init__(self, profile: hp.HostProfile, log: RejectionLog, counters: dict[str, int],
                 read_send_buffer: ReadSendBuffer, read_guest_pages: ReadGuestPages | None) -> None:
        self.profile = profile
        self.log = log
        self._counters = counters  # the HostNvsp's: tx_offload_ignored, tx_lso
        self._read_send = read_send_buffer
        self._read_pages = read_guest_pages
        self.layout: tuple[int, int, int] | None = None  # gpadl, section size, buffer size

    def connect(self, gpadl: int, section: int, size: int) -> None:
        self.layout = (gpadl, section, size)

    def read(self, pkt: GuestPacket, index: int, size: int,
             events: list[HostEvent]) -> tuple[bytes, tuple[int, ...]] | None:
        """The bytes of one RNDIS send and where each of its ranges ends in them: section `index`
        (`size` bytes) unless NO_SEND_SECTION, then the GPA-direct ranges, appended in order ([OV]
        parse_packet pushes the section sub-range before the packet's external ranges). HostFault
        where the host stops the channel (a malformed GPA header: [OV] parse_packet fails the
        channel); None (a Rejection added to `events`) where it fails the send with NVSP_STAT_FAIL
        (no reader, a page outside guest memory)."""
        mtype = w.NVSP_SEND_RNDIS_PKT
        data = b""
        ends: list[int] = []
        if index != w.NO_SEND_SECTION:
            if self.layout is None:
                raise fault("send-buffer section used without a send buffer", mtype, "section_index", index)
            _, sec, buf_size = self.layout
            # [OV] parse_packet: the send is the sub-range [index * section, + size) of the send
            # buffer, any size that stays inside it (a send may span sections); outside it the
            # packet does not parse (InvalidSendBufferIndex) and the channel ends.
            if index * sec > buf_size or size > buf_size - index * sec:
                raise fault("send-buffer section outside the send buffer", mtype, "section_index", index)
            data = self._read_send(index * sec, size)
            ends.append(len(data))
        if pkt.type == w.PKT_GPA_DIRECT:
            ranges = w.parse_gpa_header(pkt.extra)
            if self._read_pages is None:
                events.append(self.log.add(Rejection(
                    "GPA-direct data but the emulated VM has no guest memory", mtype, "range_cnt",
                    len(ranges), "failure-status")))
                return None
            parts = [data]
            try:
                for r in ranges:
                    got = self._read_pages(r.pfns, r.byte_offset, r.byte_count)
                    if len(got) != r.byte_count:
                        raise GuestPagesUnreadable("guest-memory reader returned a short range", "byte_count",
                                                   r.byte_count)
                    parts.append(got)
                    ends.append(ends[-1] + r.byte_count if ends else r.byte_count)
            except GuestPagesUnreadable as exc:
                self._counters["tx_failed"] += 1
                events.append(self.log.add(Rejection(exc.reason, mtype, exc.field, exc.value, "failure-status")))
                return None
            data = b"".join(parts)
        return data, tuple(ends)

    def split(
        self, data: bytes, chan_type: int, channel: int, rndis: HostRndis | None, mtu: int, events: list[HostEvent],
        ends: tuple[int, ...] = (),
    ) -> tuple[list[bytes], list[bytes]]:
        """The frames, or the control message, of one send, validated before any is acted on, by
        [OV]'s walk (lib.rs handle_rndis): a send that starts with a data message holds data
        messages only (another type after one fails the send); a control message takes the rest of
        its send (bytes after it are logged, not read: `([], [msg])`). HostWireError or TxRefused
        fail the whole send; HostFault stops the channel. `ends` are the offsets where the send's
        ranges end (`read`): a data message's packet header and per-packet info must lie in the
        range its header starts in (`_check_header_range`)."""
        frames: list[bytes] = []
        pos = 0
        while pos < len(data):
            if len(data) - pos < w.RNDIS_HEADER_SIZE:
                raise w.HostWireError("RNDIS header", pos, "fewer than 8 bytes left in the send")
            mtype, mlen = struct.unpack_from("<II", data, pos)
            if mlen < w.RNDIS_HEADER_SIZE or mlen > len(data) - pos:
                raise w.HostWireError("RNDIS len", mlen, f"must lie in [8, {len(data) - pos}]")
            is_data = mtype == w.RNDIS_PACKET_MSG
            if pos and not is_data:
                # [OV] handle_rndis_packet_messages: NonRndisPacketAfterPacket fails the send.
                raise w.HostWireError("RNDIS message type", mtype,
                                      f"at offset {pos}: only RNDIS packet messages may follow one in a send")
            if self.profile.strict and pos:
                self._check_aggregation(mtype, pos, len(frames) + 1, events)
            msg = data[pos:pos + mlen]
            pos += mlen
            if self.profile.strict and chan_type != (w.CHANNEL_TYPE_DATA if is_data else w.CHANNEL_TYPE_CONTROL):
                events.append(self.log.add(Rejection(
                    "NVSP channel_type does not match the RNDIS message (strict)", mtype, "channel_type",
                    chan_type, "logged")))
            if not is_data:
                if channel:  # [OV] handle_rndis_message: NotSupportedOnSubChannel fails the send
                    raise w.HostWireError("channel", channel, "an RNDIS control message goes on the primary channel")
                if pos < len(data):
                    # [OV] handle_rndis / handle_rndis_message: a control message takes the rest of
                    # its send; nothing after it is read as a message.
                    events.append(self.log.add(Rejection(
                        "bytes after an RNDIS control message are not read (a control message takes the "
                        "rest of its send)", mtype, "offset", pos, "ignored")))
                return [], [msg]
            assert rndis is not None
            if self.profile.strict and not rndis.operational:
                raise TxRefused(Rejection("RNDIS data before RNDIS INITIALIZE (strict)", mtype, "state", 0,
                                          "failure-status"))
            if self.profile.strict and rndis.packet_filter is None:
                raise TxRefused(Rejection("RNDIS data before a packet filter was set (strict)", mtype,
                                          "packet_filter", 0, "failure-status"))
            frame, info = HostRndis.parse_data_info(msg)
            _check_header_range(msg, pos - mlen, ends)
            if info.csum is not None or info.lso is not None:
                try:
                    frame = ho.apply_tx(frame, info, rndis.offload.tx_config(), mtu)
                except ho.TxIgnored as exc:  # sent unchanged, as a host ignores what was not enabled
                    self._counters["tx_offload_ignored"] += 1
                    events.append(self.log.add(Rejection(str(exc), mtype, exc.field, exc.value, "ignored")))
                if isinstance(frame, ho.GsoFrame):
                    self._counters["tx_lso"] += 1
            if info.vlan is not None:  # [OV]: the 802.1Q info is the frame's VLAN on the wire
                frame = vlan.insert(frame, info.vlan)
                self._counters["tx_vlan"] += 1
            frames.append(frame)
        return frames, []

    def _check_aggregation(self, mtype: int, pos: int, count: int, events: list[HostEvent]) -> None:
        """Strict: the RNDIS initialize completion told the guest at most RNDIS_MAX_PACKETS
        messages per send, each after the first at a multiple of the packet alignment (Linux
        max_pkt / pkt_align). [inference] Whether Hyper-V refuses more is not documented: the send
        is served and the breach logged."""
        align = 1 << hp.RNDIS_ALIGN_SHIFT
        if count == hp.RNDIS_MAX_PACKETS + 1:  # once per send
            events.append(self.log.add(Rejection(
                f"more RNDIS messages in one send than max_packets_per_message {hp.RNDIS_MAX_PACKETS} (strict)",
                mtype, "message_count", count, "logged")))
        elif pos % align:
            events.append(self.log.add(Rejection(
                f"RNDIS message in a send not at the {align}-byte packet alignment (strict)", mtype,
                "offset", pos, "logged")))


def _check_header_range(msg: bytes, start: int, ends: tuple[int, ...]) -> None:
    """[OV] handle_rndis_packet_message reads the RNDIS packet header and its per-packet info from
    one paged range only ("Headers are guaranteed to be in a single PagedRange"): the range holding
    the first byte after the message header. Anything of them past that range's end fails the send
    (HostWireError -> NVSP_STAT_FAIL). `msg` was validated by parse_data_info; `start` is its offset
    in the send."""
    if not ends:
        return
    body = start + w.RNDIS_HEADER_SIZE
    end = next((e for e in ends if e > body), ends[-1])
    ppi_off, ppi_len = struct.unpack_from("<II", msg, w.RNDIS_HEADER_SIZE + 20)
    need = max(RNDIS_PACKET_BODY, ppi_off + ppi_len if ppi_len else 0)
    if body + need > end:
        raise w.HostWireError("RNDIS packet header", need,
                              f"header and per-packet info cross the end of their range at offset {end - start}")
