"""Reference frames and per-packet info for the emulated host's offload tests (tests/sim).

Frames are built here from RFC 791/793/768/8200 layouts with a checksum written independently of
hvuio.sim.host.offload (a plain 16-bit word loop). The NDIS per-packet info (checksum, LSOv2,
packet id) is packed from the golden numbers; `split` reads one RNDIS packet message back into
its per-packet info and frame; `gso_from_net` is a TCP GSO frame as a tap hands it over;
`section_image` is what a host receive message leaves in a section that held zeros.
"""

from __future__ import annotations

import struct

from hvuio.sim.host import offload as ho
from hvuio.sim.host.receive import RxMessage, openvmm_rsc
from support.simhost import c

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


# --- NDIS per-packet info (golden numbers) ---------------------------------------------------------

ALL = ho.TxConfig(True, True, True, True, True, True, True, 0xF53C)
BITS = "ndis_ppi_bits"
CSUM_V4, CSUM_V6 = c(BITS, "NDIS_TXCSUM_INFO_IPV4"), c(BITS, "NDIS_TXCSUM_INFO_IPV6")
CSUM_TCP, CSUM_UDP, CSUM_IP = c(BITS, "NDIS_TXCSUM_INFO_TCPCS"), c(BITS, "NDIS_TXCSUM_INFO_UDPCS"), c(
    BITS, "NDIS_TXCSUM_INFO_IPCS")
LSO2, LSO_V6 = c(BITS, "NDIS_LSO2_INFO_ISLSO2"), c(BITS, "NDIS_LSO2_INFO_ISIPV6")
PPI_CSUM, PPI_LSO = c("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_CSUM"), c("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_LSO")
PPI_ID = c("linux:ppi_type_words", "RNDIS_PKTINFO_ID|internal")
SUBALLOC, FIRST, LAST = (c("linux:rndis_pktinfo_id_flags", n) for n in (
    "RNDIS_PKTINFO_SUBALLOC", "RNDIS_PKTINFO_1ST_FRAG", "RNDIS_PKTINFO_LAST_FRAG"))
RX_TCP_OK, RX_IP_OK = c(BITS, "NDIS_RXCSUM_INFO_TCPCS_OK"), c(BITS, "NDIS_RXCSUM_INFO_IPCS_OK")


def csum_info(v6: bool, tcp: bool, udp: bool, ip: bool, thoff: int) -> int:
    return ((CSUM_V6 if v6 else CSUM_V4) | (CSUM_TCP if tcp else 0) | (CSUM_UDP if udp else 0)
            | (CSUM_IP if ip else 0) | thoff << 16)


def lso_info(mss: int, thoff: int, v6: bool = False) -> int:
    return mss | thoff << 20 | LSO2 | (LSO_V6 if v6 else 0)


def ppi(ptype: int, value: int) -> bytes:
    return struct.pack("<IIII", 16, ptype, 12, value)


def split(msg: bytes) -> tuple[dict[int, int], bytes]:
    """(PPI type -> u32 value, data) of one RNDIS_PACKET_MSG, read by the layout (golden offsets)."""
    mtype, mlen, d_off, d_len, _, _, _, p_off, p_len = struct.unpack_from("<9I", msg)
    assert mtype == 1 and mlen == len(msg)
    ppis, pos = {}, 8 + p_off
    while pos < 8 + p_off + p_len:
        size, ptype, off = struct.unpack_from("<3I", msg, pos)
        ppis[ptype] = struct.unpack_from("<I", msg, pos + off)[0]
        pos += size
    return ppis, msg[8 + d_off:8 + d_off + d_len]


def gso_from_net(data: bytes, mss: int, v6: bool = False) -> ho.GsoFrame:
    """A TCP GSO frame as a tap hands it over: lengths whole, TCP checksum partial (pseudo sum)."""
    build = tcp6 if v6 else tcp4
    whole = bytearray(build(data, flags=0x18))
    l4 = 54 if v6 else 34
    l4len = len(whole) - l4
    pseudo = bytes(whole[22:54]) + struct.pack("!IxxxB", l4len, 6) if v6 else bytes(whole[26:34]) + struct.pack(
        "!BBH", 0, 6, l4len)
    struct.pack_into("!H", whole, l4 + 16, ~cs(pseudo) & 0xFFFF)
    return ho.GsoFrame.make(bytes(whole), ho.Vnet(ho.VNET_F_NEEDS_CSUM, ho.GSO_TCPV6 if v6 else ho.GSO_TCPV4,
                                                  l4 + 20, mss, l4, 16))


def section_image(msg: RxMessage) -> bytes:
    """The range's bytes after the host wrote `msg` into a zeroed section (the parts it leaves
    unwritten stay 0)."""
    out = bytearray(msg.length)
    out[:len(msg.head)] = msg.head
    out[msg.body_at:msg.body_at + len(msg.body)] = msg.body
    return bytes(out[:msg.length])


#: every receive checksum mark on (OffloadState.rx's keys)
ALL_RX_MARKS = {"ip4": True, "tcp4": True, "udp4": True, "tcp6": True, "udp6": True}


def expected_rsc(gso: ho.GsoFrame, section: int, layout: str, first_extra: bytes = b"") -> list[bytes]:
    """The receive-section images the Python host gives for a GSO frame from the network under vRSC
    with every checksum mark on: OpenVMM's layout or the compact one, `first_extra` (pktinfo)
    after the first fragment's checksum info."""
    whole = ho.fixup_rsc(bytes(gso))
    flags = ho.rx_csum_flags(whole, gso.vnet, ALL_RX_MARKS)
    if layout == "openvmm":
        return [section_image(m) for m in openvmm_rsc(whole, section, flags, first_extra)]
    return ho.rsc_fragments(whole, section, flags, first_extra)
