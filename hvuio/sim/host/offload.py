"""The emulated host's NDIS task offloads in Python: per-packet info, checksums, LSO, RSC.

What lives here, all pure functions on bytes (no state, no I/O):
  * the per-packet-info (PPI) rules a host applies to a guest RNDIS_PACKET_MSG (`parse_tx_ppis`):
    entry sizes/offsets, checksum/LSO/802.1Q data sizes, duplicates refused, unknown types
    skipped (NDIS ignores info it does not know); the 802.1Q value is returned, vlan.py applies it;
  * `apply_tx`: the checksum-info transmit PPI (IPv4 header / TCP / UDP checksums computed at
    the offsets the PPI gives, validated against the frame) and the LSOv2 PPI (validated; the
    frame becomes one GSO frame, `GsoFrame`, with a virtio_net_hdr for the host network);
  * software segmentation of a TCP GSO frame (`segment_tcp`, what a NIC does; used for the pcap
    network and for guests without RSC), checksum completion of NEEDS_CSUM frames, receive
    checksum validation (`rx_csum_flags`) and Hyper-V vRSC fragments (`rsc_fragments`);
  * the virtio_net_hdr codec (`Vnet`) of a tap opened with IFF_VNET_HDR.

Sources (facts only): golden `ndis_pktinfo_type`, `ndis_ppi_bits`, `linux:rndis_pktinfo_id_flags`,
`linux:ndis_tcp_ip_checksum_info`, `linux:ndis_tcp_lso_info`; Linux drivers/net/hyperv
(netvsc_drv.c fills LSOv2 with IP total length 0 and the length-less pseudo-header checksum;
rndis_filter.c takes RSC fragments by RNDIS_PKTINFO_ID flags SUBALLOC/1ST_FRAG/LAST_FRAG and the
VLAN/checksum/hash info of the first fragment; it reads no MSS or coalesced-segment count, so none
is sent: the fragments concatenated are one valid coalesced frame); include/uapi/linux/virtio_net.h.
The C fast path (_native/simhost/simhost.c) implements the same rules; tests compare the two.

What must not live here: NVSP/RNDIS state (nvsp.py / rndis.py), rings, fds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from hvuio.sim.host.wire import HostWireError

# --- per-packet info (golden ndis_pktinfo_type, ndis_ppi_bits) -----------------------------------

PPI_HEADER: Final = 12  # rndis_pktinfo {size, type, offset}
PPI_CSUM: Final = 0  # NDIS_PKTINFO_TYPE_CSUM
PPI_LSO: Final = 2  # NDIS_PKTINFO_TYPE_LSO
PPI_VLAN: Final = 6
PPI_HASH_VALUE: Final = 8
PPI_HASH_INFO: Final = 9
PPI_INTERNAL: Final = 0x80000000  # rndis_per_packet_info.internal
PPI_PKTINFO_ID: Final = PPI_INTERNAL | 1  # RNDIS_PKTINFO_ID | internal
PKTINFO_ID_V1: Final = 1
PKTINFO_SUBALLOC: Final = 1
PKTINFO_1ST_FRAG: Final = 2
PKTINFO_LAST_FRAG: Final = 4

TXCSUM_IPV4: Final = 0x1
TXCSUM_IPV6: Final = 0x2
TXCSUM_TCP: Final = 0x4
TXCSUM_UDP: Final = 0x8
TXCSUM_IP: Final = 0x10
TXCSUM_THOFF_SHIFT: Final = 16
TXCSUM_THOFF_MASK: Final = 0x3FF
RXCSUM_TCP_FAILED: Final = 0x1
RXCSUM_UDP_FAILED: Final = 0x2
RXCSUM_IP_FAILED: Final = 0x4
RXCSUM_TCP_OK: Final = 0x8
RXCSUM_UDP_OK: Final = 0x10
RXCSUM_IP_OK: Final = 0x20
LSO_MSS_MASK: Final = 0xFFFFF
LSO_THOFF_SHIFT: Final = 20
LSO_THOFF_MASK: Final = 0x3FF
LSO_V2: Final = 0x40000000  # NDIS_LSO2_INFO_ISLSO2
LSO_IPV6: Final = 0x80000000  # NDIS_LSO2_INFO_ISIPV6

# Offload bits of the C pump (enum hvu_sim_off in _native/simhost/simhost_api.h).
OFF_IP4: Final = 1
OFF_TCP4: Final = 2
OFF_UDP4: Final = 4
OFF_TCP6: Final = 8
OFF_UDP6: Final = 16
OFF_LSO4: Final = 32
OFF_LSO6: Final = 64
OFF_RSC4: Final = 128
OFF_RSC6: Final = 256
OFF_CSUM_BITS: Final = {"ip4": OFF_IP4, "tcp4": OFF_TCP4, "udp4": OFF_UDP4, "tcp6": OFF_TCP6, "udp6": OFF_UDP6}

# --- virtio_net_hdr (include/uapi/linux/virtio_net.h; TUNSETVNETHDRSZ 12, little-endian) --------

VNET_HDR_LEN: Final = 12
VNET_F_NEEDS_CSUM: Final = 1
VNET_F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_TCPV6: Final = 4
GSO_ECN: Final = 0x80
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
MAX_GSO_FRAME: Final = 65535 + 14 + 4  # what a tap hands over at most (IP length + Ethernet + VLAN)

ETH_HLEN: Final = 14
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPV6_EXT: Final = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options: walked
TCP_FIN: Final = 0x01
TCP_PSH: Final = 0x08
TCP_CWR: Final = 0x80


@dataclass(frozen=True, slots=True)
class Vnet:
    """One virtio_net_hdr (num_buffers always 0)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def encode(self) -> bytes:
        return struct.pack("<BBHHHHH", self.flags, self.gso_type, self.hdr_len, self.gso_size,
                           self.csum_start, self.csum_offset, 0)

    @classmethod
    def decode(cls, data: bytes) -> Vnet:
        if len(data) < VNET_HDR_LEN:
            raise HostWireError("vnet header length", len(data), f"needs {VNET_HDR_LEN} bytes")
        flags, gso, hdr_len, size, start, off, _ = struct.unpack_from("<BBHHHHH", data)
        return cls(flags, gso, hdr_len, size, start, off)


class GsoFrame(bytes):
    """A frame bigger than the MTU that the network must segment (or a partial checksum to fill):
    bytes, so every frame path carries it unchanged, plus its virtio_net_hdr in `vnet`."""

    vnet: Vnet

    @classmethod
    def make(cls, frame: bytes, vnet: Vnet) -> GsoFrame:
        obj = cls(frame)
        obj.vnet = vnet
        return obj


@dataclass(frozen=True, slots=True)
class TxInfo:
    """The per-packet info of one guest packet the host acts on: the raw checksum-info, LSO-info
    and 802.1Q-info words."""

    csum: int | None = None
    lso: int | None = None
    vlan: int | None = None


@dataclass(frozen=True, slots=True)
class TxConfig:
    """What the guest enabled with OID_TCP_OFFLOAD_PARAMETERS (rndis.OffloadState), flattened."""

    ip4: bool = False
    tcp4: bool = False
    udp4: bool = False
    tcp6: bool = False
    udp6: bool = False
    lso4: bool = False
    lso6: bool = False
    lso_max: int = 0  # the LSO maximum the host advertised (bytes of one large frame)


def parse_tx_ppis(msg: bytes, start: int, length: int) -> TxInfo:
    """Walk the PPI area msg[start:start+length] (already inside the message). Refuses malformed
    entries, checksum/LSO/802.1Q data shorter than 4 bytes and repeated entries of those types."""
    pos, end = start, start + length
    csum: int | None = None
    lso: int | None = None
    vlan: int | None = None
    while pos < end:
        if end - pos < PPI_HEADER:
            raise HostWireError("per_packet_info", pos, "truncated entry")
        size, ptype, poff = struct.unpack_from("<3I", msg, pos)
        if size < PPI_HEADER or size > end - pos or not PPI_HEADER <= poff <= size:
            raise HostWireError("per_packet_info.size", size, "entry size/offset out of range")
        if ptype in (PPI_CSUM, PPI_LSO):
            if size - poff < 4:
                raise HostWireError("per_packet_info.size", size, f"type {ptype} needs 4 data bytes")
            (value,) = struct.unpack_from("<I", msg, pos + poff)
            if ptype == PPI_CSUM:
                if csum is not None:
                    raise HostWireError("per_packet_info.type", ptype, "checksum info given twice")
                csum = value
            else:
                if lso is not None:
                    raise HostWireError("per_packet_info.type", ptype, "LSO info given twice")
                lso = value
        elif ptype == PPI_VLAN:
            if size - poff < 4:
                raise HostWireError("per_packet_info.size", size, "802.1Q info needs 4 data bytes")
            if vlan is not None:
                raise HostWireError("per_packet_info.type", ptype, "802.1Q info given twice")
            (vlan,) = struct.unpack_from("<I", msg, pos + poff)
        pos += size  # other types (hash, cancel id, ...) are not acted on: skipped as NDIS does
    return TxInfo(csum, lso, vlan)


# --- checksums ------------------------------------------------------------------------------------


def sum16(data: bytes | memoryview, start: int = 0) -> int:
    """Unfolded one's-complement sum of big-endian 16-bit words (odd tail padded with zero)."""
    view = memoryview(data)
    n = len(view)
    total = int.from_bytes(view[: n - n % 2], "big") if n > 1 else 0
    # fold the big integer 16 bits at a time via modular arithmetic: 2^16 == 1 (mod 0xFFFF)
    s = total % 0xFFFF if total else 0
    if total and s == 0:
        s = 0xFFFF
    if n % 2:
        s += view[n - 1] << 8
    return s + start


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum(data: bytes | memoryview, start: int = 0) -> int:
    """The Internet checksum (complemented, 0..0xFFFF) of `data` plus an unfolded `start`."""
    return ~fold(sum16(data, start)) & 0xFFFF


def pseudo(frame: bytes | bytearray, l3: int, v6: bool, proto: int, l4len: int) -> int:
    """Unfolded pseudo-header sum."""
    if v6:
        return sum16(bytes(frame[l3 + 8:l3 + 40])) + proto + l4len
    return sum16(bytes(frame[l3 + 12:l3 + 20])) + proto + l4len


@dataclass(frozen=True, slots=True)
class L34:
    """Where the IP and transport headers of an Ethernet frame are."""

    v6: bool
    l3: int
    l4: int
    proto: int
    l4len: int  # transport bytes the IP header declares (IPv4 total length / IPv6 payload length)


def locate(frame: bytes | bytearray, *, lso: bool = False) -> L34:
    """Parse Ethernet + IPv4/IPv6 (+ hop-by-hop/routing/destination options); HostWireError else.
    `lso`: IP lengths of 0 are allowed (LSOv2) and then cover the whole frame."""
    n = len(frame)
    if n < ETH_HLEN + 20:
        raise HostWireError("frame length", n, "too short for Ethernet + IP headers")
    etype = int.from_bytes(frame[12:14], "big")
    l3 = ETH_HLEN
    if etype == ETH_P_IP:
        vihl = frame[l3]
        ihl = (vihl & 0xF) * 4
        if vihl >> 4 != 4 or ihl < 20 or l3 + ihl > n:
            raise HostWireError("ipv4 version/ihl", vihl, "IPv4 header malformed or past the frame")
        tot = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
        if tot == 0 and lso:
            tot = n - l3
        if tot < ihl or l3 + tot > n:
            raise HostWireError("ipv4 total_length", tot, f"must lie in [{ihl}, {n - l3}]")
        frag = int.from_bytes(frame[l3 + 6:l3 + 8], "big")
        if frag & 0x3FFF:
            raise HostWireError("ipv4 fragment", frag, "offloads do not apply to IP fragments")
        return L34(False, l3, l3 + ihl, frame[l3 + 9], tot - ihl)
    if etype == ETH_P_IPV6:
        if n < l3 + 40 or frame[l3] >> 4 != 6:
            raise HostWireError("ipv6 version", frame[l3] >> 4, "IPv6 header malformed")
        plen = int.from_bytes(frame[l3 + 4:l3 + 6], "big")
        if plen == 0 and lso:
            plen = n - l3 - 40
        if l3 + 40 + plen > n:
            raise HostWireError("ipv6 payload_length", plen, f"exceeds the {n - l3 - 40} bytes present")
        nxt, pos = frame[l3 + 6], l3 + 40
        while nxt in IPV6_EXT:
            if pos + 8 > n:
                raise HostWireError("ipv6 extension header", pos, "runs past the frame")
            nxt, pos = frame[pos], pos + 8 * (frame[pos + 1] + 1)
        if pos > l3 + 40 + plen:
            raise HostWireError("ipv6 extension header", pos, "runs past the payload")
        return L34(True, l3, pos, nxt, l3 + 40 + plen - pos)
    raise HostWireError("ethertype", etype, "offloads need IPv4 (0x0800) or IPv6 (0x86dd)")


def _store16(buf: bytearray, off: int, value: int) -> None:
    buf[off:off + 2] = value.to_bytes(2, "big")


def fill_ip4_csum(buf: bytearray, l3: int) -> None:
    ihl = (buf[l3] & 0xF) * 4
    _store16(buf, l3 + 10, 0)
    _store16(buf, l3 + 10, csum(bytes(buf[l3:l3 + ihl])))


def fill_l4_csum(buf: bytearray, h: L34) -> None:
    """Full TCP/UDP checksum of h's transport segment, computed from scratch."""
    field = h.l4 + (16 if h.proto == IPPROTO_TCP else 6)
    _store16(buf, field, 0)
    value = csum(bytes(buf[h.l4:h.l4 + h.l4len]), pseudo(buf, h.l3, h.v6, h.proto, h.l4len))
    if h.proto == IPPROTO_UDP and value == 0:
        value = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
    _store16(buf, field, value)


def l4_csum_ok(frame: bytes, h: L34) -> bool:
    seg = frame[h.l4:h.l4 + h.l4len]
    if h.proto == IPPROTO_UDP and not h.v6 and seg[6:8] == b"\0\0":
        return True  # IPv4 UDP without checksum
    return fold(sum16(seg, pseudo(frame, h.l3, h.v6, h.proto, h.l4len))) == 0xFFFF


# --- guest -> host ----------------------------------------------------------------------------------


class TxIgnored(HostWireError):
    """The checksum PPI asked for an offload the guest did not enable: the frame goes out as is."""


def apply_tx(frame: bytes, info: TxInfo, cfg: TxConfig, mtu: int) -> bytes:
    """The frame to put on the network for one guest packet: checksums filled, or a GsoFrame for an
    LSO packet larger than one segment. HostWireError (field, value, rule) = refuse the packet;
    TxIgnored = send `frame` unchanged (and log why)."""
    if info.lso is not None:
        return _apply_lso(frame, info.lso, cfg, mtu)
    if info.csum is None:
        return frame
    v = info.csum
    want_ip, want_tcp, want_udp = bool(v & TXCSUM_IP), bool(v & TXCSUM_TCP), bool(v & TXCSUM_UDP)
    if not (want_ip or want_tcp or want_udp):
        return frame
    if bool(v & TXCSUM_IPV4) == bool(v & TXCSUM_IPV6):
        raise HostWireError("checksum_info", v, "exactly one of is_ipv4 / is_ipv6 must be set")
    v6 = bool(v & TXCSUM_IPV6)
    if want_tcp and want_udp:
        raise HostWireError("checksum_info", v, "tcp_checksum and udp_checksum are exclusive")
    if want_ip and v6:
        raise HostWireError("checksum_info", v, "ip_header_checksum is IPv4 only")
    enabled = {(False, "ip"): cfg.ip4, (False, "tcp"): cfg.tcp4, (False, "udp"): cfg.udp4,
               (True, "tcp"): cfg.tcp6, (True, "udp"): cfg.udp6}
    for name, wanted in (("ip", want_ip), ("tcp", want_tcp), ("udp", want_udp)):
        if wanted and not enabled[(v6, name)]:
            raise TxIgnored("checksum_info", v, f"{name}{6 if v6 else 4} checksum offload is not enabled")
    if len(frame) >= ETH_HLEN and int.from_bytes(frame[12:14], "big") not in (ETH_P_IP, ETH_P_IPV6):
        # nothing to compute in a non-IP frame (ARP, ...): a NIC sends it as it is
        raise TxIgnored("ethertype", int.from_bytes(frame[12:14], "big"), "checksum info on a non-IP frame")
    h = locate(frame)
    if h.v6 != v6:
        raise HostWireError("checksum_info", v, "is_ipv4/is_ipv6 does not match the frame's IP version")
    buf = bytearray(frame)
    if want_tcp or want_udp:
        proto = IPPROTO_TCP if want_tcp else IPPROTO_UDP
        if h.proto != proto:
            raise HostWireError("ip protocol", h.proto, f"checksum info asks for {'TCP' if want_tcp else 'UDP'}")
        thoff = (v >> TXCSUM_THOFF_SHIFT) & TXCSUM_THOFF_MASK
        if thoff != h.l4:
            raise HostWireError("checksum_info.tcp_header_offset", thoff, f"the transport header is at {h.l4}")
        if h.l4len < (20 if want_tcp else 8):
            raise HostWireError("transport length", h.l4len, "shorter than its header")
        fill_l4_csum(buf, h)
    if want_ip:
        fill_ip4_csum(buf, h.l3)
    return bytes(buf)


def _apply_lso(frame: bytes, v: int, cfg: TxConfig, mtu: int) -> bytes:
    v6 = bool(v & LSO_IPV6)
    if not v & LSO_V2:
        raise HostWireError("lso_info.type", v, "LSOv1 is not offered by this host")
    if not (cfg.lso6 if v6 else cfg.lso4):
        raise HostWireError("lso_info", v, f"LSOv2 for IPv{6 if v6 else 4} was not enabled")
    mss = v & LSO_MSS_MASK
    if mss == 0:
        raise HostWireError("lso_info.mss", mss, "must be at least 1")
    if len(frame) > cfg.lso_max:
        raise HostWireError("frame length", len(frame), f"exceeds the advertised LSO maximum {cfg.lso_max}")
    h = locate(frame, lso=True)
    if h.v6 != v6:
        raise HostWireError("lso_info.ip_version", int(v6), "does not match the frame's IP version")
    if h.proto != IPPROTO_TCP:
        raise HostWireError("ip protocol", h.proto, "LSO needs TCP")
    thoff = (v >> LSO_THOFF_SHIFT) & LSO_THOFF_MASK
    if thoff != h.l4:
        raise HostWireError("lso_info.tcp_header_offset", thoff, f"the TCP header is at {h.l4}")
    if h.l4 + 20 > len(frame):
        raise HostWireError("lso_info.tcp_header_offset", thoff, "TCP header past the frame")
    doff = (frame[h.l4 + 12] >> 4) * 4
    hdr_len = h.l4 + doff
    if doff < 20 or hdr_len > len(frame):
        raise HostWireError("tcp data_offset", doff, "TCP header malformed or past the frame")
    if hdr_len + mss > mtu:
        raise HostWireError("lso_info.mss", mss, f"headers {hdr_len} + mss exceed the MTU {mtu}")
    buf = bytearray(frame)
    l3len = len(frame) - h.l3
    if h.v6:
        _store16(buf, h.l3 + 4, l3len - 40)
    else:
        _store16(buf, h.l3 + 2, l3len)
        fill_ip4_csum(buf, h.l3)
    h = L34(h.v6, h.l3, h.l4, IPPROTO_TCP, len(frame) - h.l4)
    if len(frame) - hdr_len <= mss:  # one segment: a plain frame
        fill_l4_csum(buf, h)
        return bytes(buf)
    # the kernel's GSO expects the pseudo-header sum over the whole length in the checksum field
    _store16(buf, h.l4 + 16, fold(pseudo(buf, h.l3, h.v6, IPPROTO_TCP, h.l4len)))
    return GsoFrame.make(bytes(buf), Vnet(VNET_F_NEEDS_CSUM, GSO_TCPV6 if h.v6 else GSO_TCPV4, hdr_len, mss,
                                          h.l4, 16))


# --- segmentation and receive side ----------------------------------------------------------------


def segment_tcp(frame: bytes, vnet: Vnet) -> list[bytes]:
    """Cut a TCP GSO frame into gso_size segments as a NIC does: IPv4 id +1 per segment, lengths
    and checksums per segment, sequence numbers advanced, FIN/PSH on the last only, CWR on the first
    only. HostWireError if the frame does not match its header."""
    h = locate(frame, lso=True)
    if h.proto != IPPROTO_TCP or h.l4 + 20 > len(frame):
        raise HostWireError("ip protocol", h.proto, "GSO segmentation needs TCP")
    doff = (frame[h.l4 + 12] >> 4) * 4
    hdr_len = h.l4 + doff
    mss = vnet.gso_size
    if doff < 20 or hdr_len > len(frame) or mss == 0:
        raise HostWireError("gso_size", mss, "GSO header malformed")
    payload = frame[hdr_len:h.l4 + h.l4len]
    seq = int.from_bytes(frame[h.l4 + 4:h.l4 + 8], "big")
    ip_id = 0 if h.v6 else int.from_bytes(frame[h.l3 + 4:h.l3 + 6], "big")
    flags = frame[h.l4 + 13]
    out: list[bytes] = []
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)] or [b""]
    for i, chunk in enumerate(chunks):
        buf = bytearray(frame[:hdr_len] + chunk)
        f = flags
        if i:
            f &= ~TCP_CWR
        if i != len(chunks) - 1:
            f &= ~(TCP_FIN | TCP_PSH)
        buf[h.l4 + 13] = f
        buf[h.l4 + 4:h.l4 + 8] = ((seq + i * mss) & 0xFFFFFFFF).to_bytes(4, "big")
        l4len = len(buf) - h.l4
        if h.v6:
            _store16(buf, h.l3 + 4, len(buf) - h.l3 - 40)
        else:
            _store16(buf, h.l3 + 2, len(buf) - h.l3)
            _store16(buf, h.l3 + 4, (ip_id + i) & 0xFFFF)
            fill_ip4_csum(buf, h.l3)
        fill_l4_csum(buf, L34(h.v6, h.l3, h.l4, IPPROTO_TCP, l4len))
        out.append(bytes(buf))
    return out


def complete_csum(frame: bytes, vnet: Vnet) -> bytes:
    """Finish a NEEDS_CSUM frame: fold the sum from csum_start into the field at csum_offset
    (which holds the pseudo-header sum), as a NIC does. HostWireError on offsets outside the frame."""
    start, field = vnet.csum_start, vnet.csum_start + vnet.csum_offset
    if start >= len(frame) or field + 2 > len(frame):
        raise HostWireError("csum_start", start, f"checksum offsets outside the {len(frame)}-byte frame")
    buf = bytearray(frame)
    value = csum(bytes(buf[start:]))
    _store16(buf, field, value)
    return bytes(buf)


def rx_csum_flags(frame: bytes, vnet: Vnet | None, rx: dict[str, bool]) -> int | None:
    """The receive checksum-info value a host marks, or None (not IP TCP/UDP, or not enabled).
    `rx` = OffloadState.rx (keys ip4, tcp4, udp4, tcp6, udp6). DATA_VALID and NEEDS_CSUM frames
    (the host stack produced them) count as correct; others are validated."""
    try:
        h = locate(frame)
    except HostWireError:
        return None
    ver = "6" if h.v6 else "4"
    name = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}.get(h.proto)
    trusted = vnet is not None and bool(vnet.flags & (VNET_F_DATA_VALID | VNET_F_NEEDS_CSUM))
    flags = 0
    if not h.v6 and rx.get("ip4"):
        ihl = (frame[h.l3] & 0xF) * 4
        flags |= RXCSUM_IP_OK if trusted or fold(sum16(frame[h.l3:h.l3 + ihl])) == 0xFFFF else RXCSUM_IP_FAILED
    if name is not None and rx.get(name + ver) and h.l4len >= (20 if name == "tcp" else 8):
        good = trusted or l4_csum_ok(frame, h)
        if name == "tcp":
            flags |= RXCSUM_TCP_OK if good else RXCSUM_TCP_FAILED
        else:
            flags |= RXCSUM_UDP_OK if good else RXCSUM_UDP_FAILED
    return flags or None


def ppi(ptype: int, data: bytes) -> bytes:
    return struct.pack("<III", PPI_HEADER + len(data), ptype, PPI_HEADER) + data


def rndis_packet_ppi(data: bytes, ppis: bytes) -> bytes:
    """RNDIS_PACKET_MSG: 44-byte header, the PPIs, then the data (the layout Hyper-V uses)."""
    d_off = 36 + len(ppis)
    body = struct.pack("<9I", d_off, len(data), 0, 0, 0, 36 if ppis else 0, len(ppis), 0, 0)
    return struct.pack("<II", 1, 8 + len(body) + len(ppis) + len(data)) + body + ppis + data


def rsc_fragments(frame: bytes, section: int, csum_flags: int | None, first_extra: bytes = b"") -> list[bytes]:
    """Hyper-V vRSC: one coalesced frame (headers valid for the whole length) as RNDIS packets of
    at most `section` bytes each; the first carries the checksum info (if any), `first_extra`
    (further per-packet info: the 802.1Q info) and the pktinfo id SUBALLOC|1ST_FRAG, the last
    SUBALLOC|LAST_FRAG, those between SUBALLOC."""
    first_ppis = ppi(PPI_CSUM, struct.pack("<I", csum_flags)) if csum_flags is not None else b""
    first_ppis += first_extra
    id_len = PPI_HEADER + 4
    out: list[bytes] = []
    pos = 0
    while pos < len(frame):
        extra = len(first_ppis) if pos == 0 else 0
        room = section - 44 - id_len - extra
        if room <= 0:
            raise HostWireError("receive section", section, "too small for an RSC fragment")
        chunk = frame[pos:pos + room]
        pos += len(chunk)
        flag = PKTINFO_SUBALLOC | (PKTINFO_1ST_FRAG if not out else 0) | (PKTINFO_LAST_FRAG if pos >= len(frame) else 0)
        ident = ppi(PPI_PKTINFO_ID, struct.pack("<BBH", PKTINFO_ID_V1, flag, 0))
        out.append(rndis_packet_ppi(chunk, (first_ppis if extra else b"") + ident))
    return out


def fixup_rsc(frame: bytes) -> bytes:
    """A coalesced TCP frame as vRSC hands it over: IP lengths and all checksums valid."""
    h = locate(frame, lso=True)
    buf = bytearray(frame)
    if h.v6:
        _store16(buf, h.l3 + 4, len(frame) - h.l3 - 40)
    else:
        _store16(buf, h.l3 + 2, len(frame) - h.l3)
        fill_ip4_csum(buf, h.l3)
    fill_l4_csum(buf, L34(h.v6, h.l3, h.l4, h.proto, len(frame) - h.l4))
    return bytes(buf)
