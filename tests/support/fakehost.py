"""A fake netvsc host for the C data-path tests (tests/native/test_datapath*, test_offload_guest*).

The host side of both rings is hvuio.sim.vsp.ring (pure Python, written independently of ring.c);
the receive and send buffers are bytearrays; a SOCK_DGRAM socketpair stands in for the tap
(one datagram = one frame) and another for the uio fd (4-byte writes/reads). Wire layouts come
from the golden file's DPDK structs: hn_nvs_rndis (107), hn_nvs_rndis_ack (108),
rndis_packet_msg (44 bytes, offsets from byte 8), rndis_pktinfo (12-byte head).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

from hvuio.native.datapath import TX_TAG, DataPath
from hvuio.native.ring import Direction, Ring
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter, RingPacket

HDR = 4096
PAGESET = 0xCAFE
NVS_RNDIS, NVS_RNDIS_ACK = 107, 108
STATUS_OK, STATUS_FAILED = 1, 2
RNDIS_PACKET = 1
RNDIS_INIT_CMPLT = 0x80000002
PKT_INBAND, PKT_XFER, PKT_COMP = 0x6, 0x7, 0xB
PKT_GPA = 0x9
GPA_PAGE = 4096


def rndis_packet(frame: bytes, *, ppi: bytes = b"", data_offset: int | None = None,
                 msg_len: int | None = None, data_len: int | None = None, msg_type: int = RNDIS_PACKET,
                 ppi_offset: int | None = None) -> bytes:
    """rndis_packet_msg + optional per-packet info + frame; offsets count from byte 8."""
    head = 44
    ppi_off = (head - 8) if ppi else 0
    doff = head + len(ppi) - 8
    body = bytes(ppi) + frame
    return struct.pack("<11I", msg_type, head + len(body) if msg_len is None else msg_len,
                       doff if data_offset is None else data_offset,
                       len(frame) if data_len is None else data_len, 0, 0, 0,
                       ppi_off if ppi_offset is None else ppi_offset, len(ppi), 0, 0) + body


RX_HEADER_LEN = 256  # OpenVMM's receive layout: the frame's offset in its sub-allocation
RX_FOOTER_LEN = 36  # ... and the sub-allocation's unused tail


def full_section_packet(frame: bytes, section: int, *, csum: int = 0, stale: int = 0xA5,
                        data_len: int | None = None) -> bytes:
    """A whole receive section as OpenVMM's host fills it (netvsp buffers.rs write_header): an
    RNDIS packet whose message_length is the section, checksum info (`csum`, 0 = not checked) as
    its only per-packet info, the frame at byte 256, every other byte left as it was (`stale`)."""
    out = bytearray([stale]) * section
    out[:44] = struct.pack("<11I", RNDIS_PACKET, section, RX_HEADER_LEN - 8,
                           len(frame) if data_len is None else data_len, 0, 0, 0, 36, 16, 0, 0)
    out[44:60] = pktinfo(0, struct.pack("<I", csum))
    out[RX_HEADER_LEN:RX_HEADER_LEN + len(frame)] = frame
    return bytes(out)


def pktinfo(ptype: int, data: bytes, *, size: int | None = None, offset: int = 12) -> bytes:
    return struct.pack("<III", 12 + len(data) if size is None else size, ptype, offset) + data


def nvs_rndis(channel_type: int = 0, section: int = 0xFFFFFFFF, size: int = 0, nvs_type: int = NVS_RNDIS) -> bytes:
    return struct.pack("<IIII", nvs_type, channel_type, section, size) + bytes(24)


def xfer_header(ranges: Sequence[tuple[int, int]], *, pageset: int = PAGESET, range_cnt: int | None = None) -> bytes:
    """Type-specific header of a 0x7 packet; ranges are (byte_count, byte_offset)."""
    out = struct.pack("<HBBI", pageset, 0, 0, len(ranges) if range_cnt is None else range_cnt)
    for count, offset in ranges:
        out += struct.pack("<II", count, offset)
    return out


def frame(n: int, seed: int = 0) -> bytes:
    """An Ethernet-looking frame of n bytes with a recognisable pattern."""
    return bytes((seed * 7 + i) & 0xFF for i in range(n))


class FakeHost:
    """Both rings, both buffers, the tap and irq socketpairs, and the DataPath under test."""

    def __init__(self, *, tx_data: int = 64 * 1024, rx_data: int = 64 * 1024, recv_size: int = 64 * 1024,
                 recv_section: int = 2048, send_section: int = 2048, send_count: int = 8, mtu: int = 1500,
                 monitor_id: int | None = None, first_section: int = 0, **kw: Any) -> None:
        """`first_section`: the DataPath owns sections [first_section, send_count) of the send buffer
        (one queue's share of a multi-queue NIC)."""
        self.tx_size, self.rx_size = HDR + tx_data, HDR + rx_data
        self.mem = bytearray(self.tx_size + self.rx_size)
        self.tx_ring = Ring(self.mem, direction=Direction.TX, offset=0, size=self.tx_size, header_size=HDR)
        self.rx_ring = Ring(self.mem, direction=Direction.RX, offset=self.tx_size, size=self.rx_size,
                            header_size=HDR)
        self.reader = HostRingReader(self.mem, offset=0, size=self.tx_size)       # guest's outbound
        self.writer = HostRingWriter(self.mem, offset=self.tx_size, size=self.rx_size)  # guest's inbound
        self.recv = bytearray(recv_size)
        self.recv_section = recv_section
        self.send = bytearray(send_section * send_count)
        self.send_section = send_section
        self.tap_guest, self.tap_host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.irq_guest, self.irq_host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.tap_guest, self.tap_host, self.irq_guest, self.irq_host):
            s.setblocking(False)
        self.monitor = bytearray(4096) if monitor_id is not None else None
        self.dp = DataPath(tx_ring=self.tx_ring, rx_ring=self.rx_ring, recv_buf=self.recv,
                           recv_section_size=recv_section, send_buf=self.send, send_section_size=send_section,
                           send_section_count=send_count - first_section, send_section_first=first_section,
                           tap_fd=self.tap_guest.fileno(),
                           irq_fd=self.irq_guest.fileno(), monitor_page=self.monitor, monitor_id=monitor_id,
                           mtu=mtu, **kw)

    def close(self) -> None:
        for s in (self.tap_guest, self.tap_host, self.irq_guest, self.irq_host):
            s.close()

    # ---- host -> guest ------------------------------------------------------------------------------

    def place(self, section: int, data: bytes) -> tuple[int, int]:
        """Copies `data` to the start of receive section `section`; returns its (count, offset)."""
        off = section * self.recv_section
        self.recv[off:off + len(data)] = data
        return len(data), off

    def send_xfer(self, ranges: Sequence[tuple[int, int]], trans_id: int, *, nvs: bytes | None = None,
                  header: bytes | None = None) -> bool:
        return self.writer.write(PKT_XFER, nvs_rndis() if nvs is None else nvs,
                                 header=xfer_header(ranges) if header is None else header, trans_id=trans_id)

    def send_frames(self, frames: Sequence[bytes], trans_id: int, first_section: int = 0) -> None:
        """One transfer-page packet with one range (one RNDIS packet) per frame."""
        ranges = [self.place(first_section + i, rndis_packet(f)) for i, f in enumerate(frames)]
        self.send_xfer(ranges, trans_id)

    def complete_tx(self, trans_id: int, status: int = STATUS_OK, nvs_type: int = NVS_RNDIS_ACK) -> None:
        self.writer.write(PKT_COMP, struct.pack("<II", nvs_type, status) + bytes(32), trans_id=trans_id)

    # ---- guest -> host ------------------------------------------------------------------------------

    def drain(self) -> list[RingPacket]:
        out: list[RingPacket] = []
        while True:
            pkts, _signal = self.reader.read_batch(1024)
            if not pkts:
                return out
            out.extend(pkts)

    def tap_frames(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.tap_host.recv(70000))
            except BlockingIOError:
                return out

    def signals(self) -> int:
        """4-byte writes the guest made to its irq fd since the last call (each must be a 1)."""
        n = 0
        while True:
            try:
                msg = self.irq_host.recv(16)
            except BlockingIOError:
                return n
            assert msg == struct.pack("<I", 1), msg
            n += 1

    def interrupt_guest(self) -> None:
        self.irq_host.send(struct.pack("<I", 1))

    def section_bytes(self, index: int, size: int) -> bytes:
        off = index * self.send_section
        return bytes(self.send[off:off + size])

    @staticmethod
    def comp_fields(pkt: RingPacket) -> tuple[int, int]:
        """(nvs type, status) of a completion the guest sent."""
        assert pkt.type == PKT_COMP and pkt.flags == 0 and pkt.header == b""
        assert len(pkt.payload) == 40 and pkt.payload[8:] == bytes(32)
        t, s = struct.unpack_from("<II", pkt.payload)
        return t, s


def gpa_direct_ranges(header: bytes) -> list[tuple[int, int, tuple[int, ...]]]:
    """The ranges of a type-9 packet's header as the guest wrote it: u32 reserved (0), u32
    range_count, then per range u32 byte_count, u32 byte_offset and ceil((offset + count) / 4096)
    u64 page numbers. Asserts the layout (VMBUS.md §3.7)."""
    reserved, count = struct.unpack_from("<II", header)
    assert reserved == 0 and count >= 1, (reserved, count)
    out, pos = [], 8
    for _ in range(count):
        byte_count, byte_offset = struct.unpack_from("<II", header, pos)
        assert byte_count > 0 and byte_offset < GPA_PAGE
        npages = (byte_offset + byte_count + GPA_PAGE - 1) // GPA_PAGE
        pfns = struct.unpack_from(f"<{npages}Q", header, pos + 8)
        out.append((byte_count, byte_offset, tuple(pfns)))
        pos += 8 + 8 * npages
    assert pos <= len(header)
    return out


def gpa_direct_bytes(pkt: RingPacket, read: Any) -> bytes:
    """The bytes a type-9 packet names, read by page number: `read(pfns, offset, length)` (the
    shape of support.guestpool.FakePool.read)."""
    assert pkt.type == PKT_GPA
    return b"".join(read(pfns, offset, count) for count, offset, pfns in gpa_direct_ranges(pkt.header))


__all__ = ["FakeHost", "TX_TAG", "rndis_packet", "pktinfo", "nvs_rndis", "xfer_header", "frame",
           "gpa_direct_ranges", "gpa_direct_bytes"]
