"""hvuio.netdev.peers: the gratuitous ARP and unsolicited neighbour advertisement frames, parsed
here field by field with struct from RFC 826 / RFC 4861 layouts (not with the builder's code)."""

from __future__ import annotations

import ipaddress
import struct

from hvuio.netdev.peers import announcements, gratuitous_arp, unsolicited_na

MAC = bytes.fromhex("00155d0a0b0c")


def ones_complement(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_gratuitous_arp_layout() -> None:
    ip = ipaddress.IPv4Address("198.18.0.2")
    f = gratuitous_arp(MAC, ip)
    assert f[:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06" and len(f) == 42
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", f, 14)
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)    # Ethernet/IPv4 request
    assert f[22:28] == MAC and f[28:32] == ip.packed                # sender
    assert f[32:38] == bytes(6) and f[38:42] == ip.packed           # target: zero MAC, own address


def test_unsolicited_na_layout_and_checksum() -> None:
    ip = ipaddress.IPv6Address("fd00:5::2")
    f = unsolicited_na(MAC, ip)
    assert f[:6] == bytes.fromhex("333300000001") and f[6:12] == MAC and f[12:14] == b"\x86\xdd"
    ver_flow, plen, nh, hops = struct.unpack_from("!IHBB", f, 14)
    assert ver_flow >> 28 == 6 and nh == 58 and hops == 255 and plen == len(f) - 54 == 32
    src, dst = f[22:38], f[38:54]
    assert src == ip.packed and dst == ipaddress.IPv6Address("ff02::1").packed
    icmp = f[54:]
    assert icmp[0] == 136 and icmp[1] == 0
    flags = struct.unpack_from("!I", icmp, 4)[0]
    assert flags == 0x20000000                                       # Override only
    assert icmp[8:24] == ip.packed and icmp[24:26] == b"\x02\x01" and icmp[26:32] == MAC
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), 58)
    assert ones_complement(pseudo + icmp) == 0xFFFF


def test_announcements_skip_tentative_ipv6_but_not_optimistic() -> None:
    a4 = ipaddress.IPv4Address("198.18.0.2")
    ok, tentative, optimistic = (ipaddress.IPv6Address(x) for x in ("fe80::1", "fd00::1", "fd00::2"))
    frames = announcements(MAC, [(ok, 0x80), (tentative, 0x40), (a4, 0x80), (optimistic, 0x44)])
    assert frames == [gratuitous_arp(MAC, a4), unsolicited_na(MAC, ok), unsolicited_na(MAC, optimistic)]
