"""Reference frames for the offload tests, built here from RFC 791/793/768/8200 layouts with a
checksum written independently of hvuio.sim.host.offload (a plain 16-bit word loop)."""

from __future__ import annotations

import struct

MAC = bytes.fromhex("00155d000001" "020000000002")
SRC4, DST4 = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
SRC6 = bytes.fromhex("fd000000000000000000000000000002")
DST6 = bytes.fromhex("fd000000000000000000000000000001")


def cs(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fold_sum(data: bytes) -> int:
    """The folded (not complemented) one's-complement sum."""
    return ~cs(data) & 0xFFFF


def _tcp(payload: bytes, seq: int, flags: int, options: bytes) -> bytes:
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 5201, seq, 555, doff << 4, flags, 65535, 0, 0) + options + payload


def tcp4(payload: bytes, *, seq: int = 1000, flags: int = 0x18, ip_id: int = 7, options: bytes = b"",
         good: bool = True, lso: bool = False) -> bytes:
    """IPv4/TCP frame; good: all checksums right; lso: as a Linux guest hands it to LSOv2 (IP total
    length 0, IP checksum 0, TCP checksum = the pseudo-header sum without the length)."""
    tcp = _tcp(payload, seq, flags, options)
    l4len = len(tcp)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0 if lso else 20 + l4len, ip_id, 0x4000, 64, 6, 0,
                               SRC4, DST4))
    tcp_b = bytearray(tcp)
    if lso:
        struct.pack_into("!H", tcp_b, 16, fold_sum(SRC4 + DST4 + struct.pack("!BBH", 0, 6, 0)))
    elif good:
        struct.pack_into("!H", ip, 10, cs(bytes(ip)))
        struct.pack_into("!H", tcp_b, 16, cs(SRC4 + DST4 + struct.pack("!BBH", 0, 6, l4len) + tcp))
    return MAC + b"\x08\x00" + bytes(ip) + bytes(tcp_b)


def tcp6(payload: bytes, *, seq: int = 1000, flags: int = 0x18, options: bytes = b"", good: bool = True,
         lso: bool = False) -> bytes:
    tcp = _tcp(payload, seq, flags, options)
    l4len = len(tcp)
    ip = struct.pack("!IHBB16s16s", 0x60000000, 0 if lso else l4len, 6, 64, SRC6, DST6)
    tcp_b = bytearray(tcp)
    if lso:
        struct.pack_into("!H", tcp_b, 16, fold_sum(SRC6 + DST6 + struct.pack("!IxxxB", 0, 6)))
    elif good:
        struct.pack_into("!H", tcp_b, 16, cs(SRC6 + DST6 + struct.pack("!IxxxB", l4len, 6) + tcp))
    return MAC + b"\x86\xdd" + ip + bytes(tcp_b)


def udp4(payload: bytes, *, good: bool = True) -> bytes:
    l4len = 8 + len(payload)
    udp = bytearray(struct.pack("!HHHH", 5353, 5354, l4len, 0) + payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4len, 9, 0x4000, 64, 17, 0, SRC4, DST4))
    if good:
        struct.pack_into("!H", ip, 10, cs(bytes(ip)))
        struct.pack_into("!H", udp, 6, cs(SRC4 + DST4 + struct.pack("!BBH", 0, 17, l4len) + bytes(udp)) or 0xFFFF)
    return MAC + b"\x08\x00" + bytes(ip) + bytes(udp)


def udp6(payload: bytes, *, good: bool = True) -> bytes:
    l4len = 8 + len(payload)
    udp = bytearray(struct.pack("!HHHH", 5353, 5354, l4len, 0) + payload)
    ip = struct.pack("!IHBB16s16s", 0x60000000, l4len, 17, 64, SRC6, DST6)
    if good:
        struct.pack_into("!H", udp, 6, cs(SRC6 + DST6 + struct.pack("!IxxxB", l4len, 17) + bytes(udp)) or 0xFFFF)
    return MAC + b"\x86\xdd" + ip + bytes(udp)


def segments(build, payload: bytes, mss: int, *, seq: int = 1000, flags: int = 0x19, **kw: object) -> list[bytes]:
    """What a NIC sends for one large segment: MSS chunks, seq advanced, IPv4 id + 1 per segment,
    FIN/PSH only on the last, CWR only on the first, every checksum right."""
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)]
    out = []
    for i, chunk in enumerate(chunks):
        f = flags if i == len(chunks) - 1 else flags & ~0x09
        if i:
            f &= ~0x80
        extra = dict(kw)
        if build is tcp4:
            extra["ip_id"] = int(kw.get("ip_id", 7)) + i  # type: ignore[call-overload]
        out.append(build(chunk, seq=seq + i * mss, flags=f, **extra))
    return out


def payload(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))
