"""An independent Toeplitz hash and the expected vRSS queue of a frame, for checking the emulator.

What lives here: `toeplitz` (bit by bit over a 40-byte key, written from the definition in
Microsoft's "RSS hashing functions" page: for every set input bit, XOR the 32 key bits that start
at that bit), `MS_VECTORS` (the published verification inputs and results of Microsoft's
"Verifying the RSS hash calculation", IPv4 and IPv6, with and without ports), `flow_frame` (an
Ethernet frame of one flow) and `expected_queue` (key + table + hash types -> queue, with the
NDIS hash-type choice written out again). Nothing here imports hvuio.sim.host.rss: the two
implementations check each other.
"""

from __future__ import annotations

import ipaddress
import struct

# Microsoft's verification key (also Linux's netvsc_hash_key, rndis_filter.c).
MS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")

# (source address, source port, destination address, destination port, hash of the addresses,
#  hash with TCP ports): Microsoft "Verifying the RSS Hash Calculation".
MS_VECTORS: list[tuple[str, int, str, int, int, int]] = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xD2D0A5DE, 0x5C2B394A),
    ("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xAFC7327F),
    ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5D1809C5, 0x10E828A2),
    ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
    ("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0F0C461C, 0xDDE51BBF),
    ("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4B61E985, 0x02D1FEEF),
]

IPV4, TCP_IPV4, IPV6, TCP_IPV6, UDP_IPV4, UDP_IPV6 = 0x100, 0x200, 0x400, 0x1000, 0x4000, 0x8000


def toeplitz(key: bytes, data: bytes) -> int:
    result = 0
    key_bits = int.from_bytes(key, "big")
    nbits = len(key) * 8
    for i in range(len(data) * 8):
        if data[i // 8] & (0x80 >> (i % 8)):
            result ^= (key_bits >> (nbits - 32 - i)) & 0xFFFFFFFF
    return result


def flow_frame(src: str, dst: str, proto: int = 6, sport: int = 1000, dport: int = 2000,
               payload: bytes = b"x" * 20, fragment: bool = False) -> bytes:
    """Ethernet + IPv4/IPv6 + an 8-byte TCP/UDP-like port header + payload (checksums zero)."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    l4 = struct.pack("!HHI", sport, dport, 0) + payload
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x00\x15\x5d\x00\x00\x01"
    if a.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x2000 if fragment else 0, 64, proto, 0,
                         a.packed, b.packed)
        return eth + b"\x08\x00" + ip + l4
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, a.packed, b.packed)
    return eth + b"\x86\xdd" + ip6 + l4


def expected_hash(frame: bytes, key: bytes, hash_types: int) -> int | None:
    """The hash the host must compute for `frame` (None: not hashed) under NDIS hash types."""
    eth_type = struct.unpack("!H", frame[12:14])[0]
    if eth_type == 0x8100:  # one 802.1Q tag: the IP header follows it
        frame = frame[:12] + frame[16:]
        eth_type = struct.unpack("!H", frame[12:14])[0]
    if eth_type == 0x0800:
        ip = frame[14:]
        proto, frag = ip[9], struct.unpack("!H", ip[6:8])[0] & 0x3FFF
        ports = ip[(ip[0] & 15) * 4:][:4]
        l4 = {6: TCP_IPV4, 17: UDP_IPV4}.get(proto, 0)
        if l4 & hash_types and not frag:
            return toeplitz(key, ip[12:20] + ports)
        return toeplitz(key, ip[12:20]) if hash_types & IPV4 else None
    if eth_type == 0x86DD:
        ip = frame[14:]
        l4 = {6: TCP_IPV6, 17: UDP_IPV6}.get(ip[6], 0)
        if l4 & hash_types:
            return toeplitz(key, ip[8:40] + ip[40:44])
        return toeplitz(key, ip[8:40]) if hash_types & IPV6 else None
    return None


def expected_queue(frame: bytes, key: bytes, table: list[int] | tuple[int, ...], hash_types: int,
                   queues: int) -> int:
    """Queue 0 for what is not hashed or an entry past the granted queues, else table[hash % len]."""
    h = expected_hash(frame, key, hash_types)
    if h is None:
        return 0
    q = table[h % len(table)]
    return q if q < queues else 0
