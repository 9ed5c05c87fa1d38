"""Packet builders and a reference checksum for the C data path's offload tests
(tests/native/test_offload_guest_tx.py, test_offload_guest_rx.py, test_datapath_tx_agg.py).

Written from RFC 791/793/8200 and RFC 1071 directly, independent of _native/offload.c, so a
checksum or header bug in C cannot be mirrored here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_IP, ETH_IP6 = 0x0800, 0x86DD
TCP, UDP = 6, 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
VNET_NEEDS_CSUM, VNET_DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6 = 0, 1, 3, 4
SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6 = bytes.fromhex("fd000000000000000000000000000001")
DST6 = bytes.fromhex("fd000000000000000000000000000002")
MACS = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum(data: bytes) -> int:
    return ~ones_sum(data) & 0xFFFF


def pseudo(v6: bool, src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if v6:
        return src + dst + struct.pack("!I3xB", length, proto)
    return src + dst + struct.pack("!xBH", proto, length)


@dataclass
class Pkt:
    """An Ethernet + IPv4/IPv6 + TCP/UDP frame and where its parts are."""

    frame: bytes
    v6: bool
    l3: int
    l4: int
    hdrs: int          # l4 + transport header length
    proto: int

    @property
    def payload(self) -> bytes:
        return self.frame[self.hdrs:]


def build(payload: bytes, *, v6: bool = False, proto: int = TCP, ip_opts: bytes = b"", tcp_opts: bytes = b"",
          seq: int = 1000, flags: int = ACK | PSH, ip_id: int = 0x1234, vlan: int | None = None,
          csum_mode: str = "full") -> Pkt:
    """csum_mode: "full" = valid checksums; "partial" = transport checksum = pseudo-header sum
    (what a tap with TUN_F_CSUM hands over), IPv4 header checksum valid."""
    eth = MACS + (struct.pack("!HH", 0x8100, vlan) if vlan is not None else b"") + \
        struct.pack("!H", ETH_IP6 if v6 else ETH_IP)
    if proto == TCP:
        assert len(tcp_opts) % 4 == 0
        l4h = struct.pack("!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, 77, (5 + len(tcp_opts) // 4) << 4,
                          flags, 65535, 0, 0) + tcp_opts
        coff = 16
    else:
        l4h = struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0)
        coff = 6
    l4len = len(l4h) + len(payload)
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, l4len, proto, 64) + src + dst
    else:
        assert len(ip_opts) % 4 == 0
        ihl = 5 + len(ip_opts) // 4
        ip4 = bytearray(struct.pack("!BBHHHBBH", 0x40 | ihl, 0, 4 * ihl + l4len, ip_id, 0x4000, 64, proto, 0)
                        + src + dst + ip_opts)
        struct.pack_into("!H", ip4, 10, csum(bytes(ip4)))
        ip = bytes(ip4)
    seg = bytearray(l4h + payload)
    ps = pseudo(v6, src, dst, proto, l4len)
    if csum_mode == "full":
        struct.pack_into("!H", seg, coff, csum(ps + bytes(seg)))
    else:
        struct.pack_into("!H", seg, coff, ones_sum(ps))
    frame = eth + ip + bytes(seg)
    l3 = len(eth)
    return Pkt(frame, v6, l3, l3 + len(ip), l3 + len(ip) + len(l4h), proto)


def parse(frame: bytes) -> Pkt:
    l3 = 14
    etype = struct.unpack_from("!H", frame, 12)[0]
    if etype == 0x8100:
        l3, etype = 18, struct.unpack_from("!H", frame, 16)[0]
    v6 = etype == ETH_IP6
    if v6:
        proto, l4 = frame[l3 + 6], l3 + 40
    else:
        proto, l4 = frame[l3 + 9], l3 + (frame[l3] & 0xF) * 4
    hdrs = l4 + ((frame[l4 + 12] >> 4) * 4 if proto == TCP else 8)
    return Pkt(frame, v6, l3, l4, hdrs, proto)


def addrs(p: Pkt) -> tuple[bytes, bytes]:
    f = p.frame
    if p.v6:
        return f[p.l3 + 8:p.l3 + 24], f[p.l3 + 24:p.l3 + 40]
    return f[p.l3 + 12:p.l3 + 16], f[p.l3 + 16:p.l3 + 20]


def l4_csum_ok(p: Pkt) -> bool:
    src, dst = addrs(p)
    seg = p.frame[p.l4:]
    return ones_sum(pseudo(p.v6, src, dst, p.proto, len(seg)) + seg) == 0xFFFF


def ip4_csum_ok(p: Pkt) -> bool:
    return p.v6 or ones_sum(p.frame[p.l3:p.l4]) == 0xFFFF


def complete_partial(p: Pkt, start: int, offset: int) -> bytes:
    """What a NIC does with a NEEDS_CSUM frame: sum from start, store the inverse at start + offset."""
    f = bytearray(p.frame)
    struct.pack_into("!H", f, start + offset, csum(bytes(f[start:])))
    return bytes(f)


def vnet(flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0, csum_start: int = 0,
         csum_offset: int = 0) -> bytes:
    return struct.pack("<BBHHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, 0)


def partial_datagram(p: Pkt) -> bytes:
    """A tap datagram: vnet header asking for the transport checksum (NEEDS_CSUM), then the frame."""
    coff = 16 if p.proto == TCP else 6
    return vnet(VNET_NEEDS_CSUM, 0, 0, 0, p.l4, coff) + p.frame


def tcp_seq(p: Pkt) -> int:
    return int(struct.unpack_from("!I", p.frame, p.l4 + 4)[0])


def tcp_flags(p: Pkt) -> int:
    return p.frame[p.l4 + 13]


def ip_id(p: Pkt) -> int:
    return int(struct.unpack_from("!H", p.frame, p.l3 + 4)[0])


def ip_len(p: Pkt) -> int:
    """IPv4 total length or IPv6 payload length + 40."""
    if p.v6:
        return int(struct.unpack_from("!H", p.frame, p.l3 + 4)[0]) + 40
    return int(struct.unpack_from("!H", p.frame, p.l3 + 2)[0])


__all__ = ["build", "parse", "Pkt", "vnet", "csum", "ones_sum", "pseudo", "l4_csum_ok", "ip4_csum_ok",
           "complete_partial", "partial_datagram", "tcp_seq", "tcp_flags", "ip_id", "ip_len", "addrs"]
