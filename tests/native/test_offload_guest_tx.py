"""C data path TX offloads: tap vnet headers (NEEDS_CSUM, TCP GSO) -> checksum/LSOv2 pktinfo or
software checksums/segmentation, in send sections (the fake host of tests/support/fakehost.py).

Every packet the guest sends is decoded from the golden RNDIS layout (tests/support/offload_tx.py)
and compared with a reference computed in Python (tests/support/offload_frames.py): pktinfo
values against the golden bit masks, segments reassembled byte for byte against the original TCP
stream.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvuio.native.datapath import Offloads, Status
from support.fakehost import TX_TAG, FakeHost, frame
from support.golden import GOLDEN
from support.offload_frames import (
    ACK, CWR, FIN, GSO_TCPV4, GSO_TCPV6, GSO_UDP, PSH, TCP, UDP, VNET_NEEDS_CSUM, Pkt, addrs, build,
    complete_partial, ip4_csum_ok, ip_id, ip_len, l4_csum_ok, ones_sum, parse, partial_datagram, pseudo, tcp_flags,
    tcp_seq, vnet,
)
from support.offload_tx import ALL, SECTION, Sent, decode_msg

C = GOLDEN["constants"]
BITS = C["ndis_ppi_bits"]
MASKS = C["linux:ppi_bitfield_masks"]
PPI_TYPE = C["ndis_pktinfo_type"]


def shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def decode(h: FakeHost, pkt: Any) -> Sent:
    """One NVS 107 message -> its RNDIS packet, checked against the golden layout."""
    assert pkt.trans_id & TX_TAG
    _nvs, _chan, idx, size = struct.unpack_from("<IIII", pkt.payload)
    assert size <= h.send_section
    return decode_msg(h.section_bytes(idx, size))


def pump(h: FakeHost, datagrams: list[bytes]) -> list[Sent]:
    """Writes tap datagrams, runs TX (completing sections as the host would) until all went."""
    for d in datagrams:
        h.tap_host.send(d)
    out: list[Sent] = []
    for _ in range(10000):
        status = h.dp.tx()
        pkts = h.drain()
        for p in pkts:
            out.append(decode(h, p))
            h.complete_tx(p.trans_id)
        h.dp.rx()
        if status is Status.IDLE and not pkts:
            return out
    raise AssertionError("TX did not settle")


def host(**offloads: Any) -> FakeHost:
    return FakeHost(vnet_hdr=True, tap_offload=True, offloads=Offloads(**offloads), send_section=SECTION,
                    send_count=16, mtu=1500)


@pytest.fixture
def h_all() -> Iterator[FakeHost]:
    h = host(**ALL, lso4=True, lso6=True, lso_max_size=62780)
    yield h
    h.close()


# ---- checksum pktinfo -------------------------------------------------------------------------------


@pytest.mark.parametrize("v6, proto", [(False, TCP), (False, UDP), (True, TCP), (True, UDP)])
def test_checksum_pktinfo_matches_golden_layout(h_all: FakeHost, v6: bool, proto: int) -> None:
    p = build(bytes(range(200)), v6=v6, proto=proto, csum_mode="partial")
    [s] = pump(h_all, [partial_datagram(p)])
    assert s.frame == p.frame                         # the host finishes the sum, bytes unchanged
    assert list(s.ppis) == [PPI_TYPE["NDIS_PKTINFO_TYPE_CSUM"]]
    v = s.ppis[PPI_TYPE["NDIS_PKTINFO_TYPE_CSUM"]]
    t = "ndis_tcp_ip_checksum_info.transmit."
    want = (MASKS[t + ("is_ipv6" if v6 else "is_ipv4")]
            | MASKS[t + ("tcp_checksum" if proto == TCP else "udp_checksum")]
            | (p.l4 << shift(MASKS[t + "tcp_header_offset"])))
    assert v == want
    assert v & MASKS[t + "tcp_header_offset"] == p.l4 << shift(BITS["NDIS_TXCSUM_INFO_THOFF"])
    assert not v & MASKS[t + "ip_header_checksum"]    # the kernel filled the IPv4 header sum
    # what the host does with it gives the reference checksum
    coff = 16 if proto == TCP else 6
    assert l4_csum_ok(parse(complete_partial(p, p.l4, coff)))
    c = h_all.dp.counters()
    assert c["tx_csum_ppi"] == 1 and c["tx_sw_csum"] == 0 and c["tx_packets"] == 1


@pytest.mark.parametrize("offloads, v6, proto", [
    ({}, False, TCP), ({}, True, UDP),
    ({"tx_csum_tcp4": True}, True, TCP),               # only the other family enabled
    ({"tx_csum_tcp4": True}, False, UDP),              # only the other protocol enabled
])
def test_software_checksum_when_the_host_does_not(offloads: dict[str, bool], v6: bool, proto: int) -> None:
    h = host(**offloads)
    try:
        payload = bytes(random.Random(7).randrange(256) for _ in range(333))   # odd length
        p = build(payload, v6=v6, proto=proto, ip_opts=b"" if v6 else b"\x01\x01\x01\x00", csum_mode="partial")
        ref = build(payload, v6=v6, proto=proto, ip_opts=b"" if v6 else b"\x01\x01\x01\x00")
        [s] = pump(h, [partial_datagram(p)])
        assert s.ppis == {}
        assert s.frame == ref.frame                    # checksum computed exactly as the reference
        assert h.dp.counters()["tx_sw_csum"] == 1
    finally:
        h.close()


def test_plain_frames_pass_unchanged(h_all: FakeHost) -> None:
    frames = [frame(60, 1), frame(1514, 2)]
    sent = pump(h_all, [vnet() + f for f in frames])
    assert [(s.ppis, s.frame) for s in sent] == [({}, f) for f in frames]


# ---- GSO ------------------------------------------------------------------------------------------------


def gso_datagram(p: Pkt, mss: int) -> bytes:
    return vnet(VNET_NEEDS_CSUM, GSO_TCPV6 if p.v6 else GSO_TCPV4, p.hdrs, mss, p.l4, 16) + p.frame


def check_segments(orig: Pkt, mss: int, sent: list[Sent], *, lso: bool, csum_ppi: bool | None) -> None:
    """Reassembles the TCP payload and checks every packet's headers against the original.
    csum_ppi: single segments carry the checksum pktinfo (True), never (False), or either (None)."""
    seq0, id0, flags0 = tcp_seq(orig), ip_id(orig), tcp_flags(orig)
    hdrs = orig.hdrs
    t_lso = PPI_TYPE["NDIS_PKTINFO_TYPE_LSO"]
    t_csum = PPI_TYPE["NDIS_PKTINFO_TYPE_CSUM"]
    stream = b""
    for i, s in enumerate(sent):
        q = s.pkt
        first, last = i == 0, i == len(sent) - 1
        assert q.frame[:q.l3] == orig.frame[:orig.l3]                     # Ethernet untouched
        assert q.hdrs == hdrs and len(q.frame) <= SECTION
        off = (tcp_seq(q) - seq0) & 0xFFFFFFFF                        # seq wraps mod 2**32
        assert off == len(stream)                                        # in order, no gap
        pay = q.payload
        nseg = -(-len(pay) // mss)
        if not last:
            assert len(pay) % mss == 0
        assert ip_len(q) == len(q.frame) - q.l3
        if not orig.v6:
            assert ip_id(q) == (id0 + off // mss) & 0xFFFF
        want_flags = flags0 & ~((0 if last else FIN | PSH) | (0 if first else CWR))
        assert tcp_flags(q) == want_flags
        # every other header byte is the original's
        skip = {q.l3 + 2, q.l3 + 3, q.l3 + 4, q.l3 + 5, q.l3 + 10, q.l3 + 11} | set(range(q.l4 + 4, q.l4 + 8)) \
            | {q.l4 + 13, q.l4 + 16, q.l4 + 17}
        assert all(q.frame[k] == orig.frame[k] for k in range(hdrs) if k not in skip)
        src, dst = addrs(q)
        if lso and nseg >= 2:
            v = s.ppis.pop(t_lso)
            assert s.ppis == {}                        # LSO alone, as Linux netvsc_xmit sends it
            assert v & BITS["NDIS_LSO2_INFO_MSS_MASK"] == mss
            assert (v & BITS["NDIS_LSO2_INFO_THOFF_MASK"]) >> shift(BITS["NDIS_LSO2_INFO_THOFF_MASK"]) == q.l4
            assert v & BITS["NDIS_LSO2_INFO_ISLSO2"]
            assert bool(v & BITS["NDIS_LSO2_INFO_ISIPV6"]) == orig.v6
            if not orig.v6:
                assert struct.unpack_from("!H", q.frame, q.l3 + 10)[0] == 0
            assert struct.unpack_from("!H", q.frame, q.l4 + 16)[0] == ones_sum(pseudo(q.v6, src, dst, TCP, 0))
        else:
            assert len(pay) <= mss
            assert ip4_csum_ok(q)
            if csum_ppi or (csum_ppi is None and t_csum in s.ppis):
                v = s.ppis.pop(t_csum)
                assert v == ((2 if q.v6 else 1) | 4 | (q.l4 << 16))
                assert l4_csum_ok(parse(complete_partial(q, q.l4, 16)))
            else:
                assert l4_csum_ok(q)
            assert s.ppis == {}
        stream += pay
    assert stream == orig.payload


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("opts", [False, True])
def test_lso_chunks_reassemble_byte_exact(h_all: FakeHost, v6: bool, opts: bool) -> None:
    payload = bytes(random.Random(3).randrange(256) for _ in range(40000))
    p = build(payload, v6=v6, ip_opts=b"\x01\x01\x01\x00" if opts and not v6 else b"",
              tcp_opts=bytes.fromhex("0101080a0000000100000002") if opts else b"",
              flags=ACK | PSH | FIN | CWR, csum_mode="partial")
    mss = 1500 - (p.hdrs - p.l3)                      # the MSS a 1500-byte MTU gives
    sent = pump(h_all, [gso_datagram(p, mss)])
    assert len(sent) > 1
    check_segments(p, mss, sent, lso=True, csum_ppi=True)
    c = h_all.dp.counters()
    assert c["tx_gso"] == 1 and c["tx_lso"] == sum(1 for s in sent if len(s.pkt.payload) > mss)
    assert c["tx_packets"] == len(sent) and c["tx_bytes"] == sum(len(s.frame) for s in sent)
    assert h_all.dp.sections_in_use == 0


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("csum", [False, True])
def test_software_segmentation_without_lso(v6: bool, csum: bool) -> None:
    h = host(**(ALL if csum else {}))
    try:
        payload = bytes(random.Random(5).randrange(256) for _ in range(20000))
        p = build(payload, v6=v6, flags=ACK | PSH | FIN | CWR, csum_mode="partial")
        sent = pump(h, [gso_datagram(p, 1400)])
        assert len(sent) == -(-20000 // 1400)
        check_segments(p, 1400, sent, lso=False, csum_ppi=csum)
        c = h.dp.counters()
        assert c["tx_sw_seg"] == len(sent) and c["tx_lso"] == 0
        assert c["tx_sw_csum" if not csum else "tx_csum_ppi"] == len(sent)
    finally:
        h.close()


def test_lso_max_size_limits_the_chunk() -> None:
    h = host(**ALL, lso4=True, lso_max_size=3000)
    try:
        p = build(bytes(10000), csum_mode="partial")
        sent = pump(h, [gso_datagram(p, 1000)])
        assert all(len(s.frame) <= 3000 for s in sent)
        check_segments(p, 1000, sent, lso=True, csum_ppi=True)
    finally:
        h.close()


def test_gso_frame_of_one_segment_is_an_ordinary_frame(h_all: FakeHost) -> None:
    p = build(bytes(range(100)), csum_mode="partial")
    [s] = pump(h_all, [gso_datagram(p, 1448)])
    assert s.frame == p.frame and list(s.ppis) == [PPI_TYPE["NDIS_PKTINFO_TYPE_CSUM"]]


def test_gso_resumes_after_completions() -> None:
    h = FakeHost(vnet_hdr=True, tap_offload=True, offloads=Offloads(), send_section=SECTION, send_count=3)
    try:
        p = build(bytes(random.Random(1).randrange(256) for _ in range(9000)), flags=ACK | FIN, csum_mode="partial")
        h.tap_host.send(gso_datagram(p, 1000))
        h.tap_host.send(vnet() + frame(80, 9))
        sent: list[Sent] = []
        for _ in range(20):
            h.dp.tx()
            pkts = h.drain()
            sent += [decode(h, q) for q in pkts]
            for q in pkts:
                h.complete_tx(q.trans_id)
            h.dp.rx()
        assert len(sent) == 10 and sent[-1].frame == frame(80, 9)   # the next frame after the GSO one
        check_segments(p, 1000, sent[:-1], lso=False, csum_ppi=False)
        assert h.dp.counters()["stop_queue"] >= 1
    finally:
        h.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30000), mss=st.integers(88, 1440), v6=st.booleans(), lso=st.booleans(),
       csum=st.booleans(), tcp_opt_words=st.integers(0, 10), seed=st.integers(0, 2**16),
       seq=st.integers(0, 2**32 - 1), ip_id0=st.integers(0, 0xFFFF))
def test_segmentation_property(n: int, mss: int, v6: bool, lso: bool, csum: bool, tcp_opt_words: int,
                               seed: int, seq: int, ip_id0: int) -> None:
    """Any GSO frame: the packets' payloads rebuild the stream, each packet is valid for its kind."""
    off: dict[str, Any] = dict(ALL if csum else {})
    if lso:
        off.update(lso4=True, lso6=True, lso_max_size=62780)
    h = FakeHost(vnet_hdr=True, tap_offload=True, offloads=Offloads(**off), send_section=SECTION,
                 send_count=64, mtu=1500)
    try:
        rnd = random.Random(seed)
        p = build(bytes(rnd.randrange(256) for _ in range(n)), v6=v6, tcp_opts=b"\x01" * (4 * tcp_opt_words),
                  seq=seq, ip_id=ip_id0, flags=ACK | PSH | FIN, csum_mode="partial")
        mss = min(mss, 1500 - (p.hdrs - p.l3))          # a segment must fit the MTU
        sent = pump(h, [gso_datagram(p, mss)])
        if n <= mss:
            assert len(sent) == 1 and sent[0].pkt.payload == p.payload
        else:
            check_segments(p, mss, sent, lso=lso, csum_ppi=csum)
        assert h.dp.counters()["tx_vnet_bad"] == 0
    finally:
        h.close()


# ---- vnet header checks -----------------------------------------------------------------------------------


def _v4() -> Pkt:
    return build(bytes(3000), csum_mode="partial")


BAD_VNET = [
    ("unknown flag", lambda p: vnet(0x80) + p.frame, "vnet_flags", 0x80),
    ("csum beyond frame", lambda p: vnet(VNET_NEEDS_CSUM, 0, 0, 0, len(p.frame) - 1, 0) + p.frame, "vnet_csum", None),
    ("csum offset beyond frame", lambda p: vnet(VNET_NEEDS_CSUM, 0, 0, 0, p.l4, 0xFFFF) + p.frame, "vnet_csum", None),
    ("csum start inside Ethernet", lambda p: vnet(VNET_NEEDS_CSUM, 0, 0, 0, 4, 2) + p.frame, "vnet_csum", None),
    ("gso udp", lambda p: vnet(VNET_NEEDS_CSUM, GSO_UDP, p.hdrs, 1000, p.l4, 16) + p.frame, "vnet_gso_type", GSO_UDP),
    ("gso ecn", lambda p: vnet(VNET_NEEDS_CSUM, GSO_TCPV4 | 0x80, p.hdrs, 1000, p.l4, 16) + p.frame,
     "vnet_gso_type", GSO_TCPV4 | 0x80),
    ("gso size 0", lambda p: vnet(VNET_NEEDS_CSUM, GSO_TCPV4, p.hdrs, 0, p.l4, 16) + p.frame, "vnet_gso", 0),
    ("gso without csum", lambda p: vnet(0, GSO_TCPV4, p.hdrs, 1000, p.l4, 16) + p.frame, "vnet_gso", 1000),
    ("gso hdr_len beyond", lambda p: vnet(VNET_NEEDS_CSUM, GSO_TCPV4, 0xFFFF, 1000, p.l4, 16) + p.frame,
     "vnet_gso", 1000),
    ("gso v6 type on v4", lambda p: vnet(VNET_NEEDS_CSUM, GSO_TCPV6, p.hdrs, 1000, p.l4, 16) + p.frame,
     "vnet_gso", None),
    ("gso csum_start not tcp", lambda p: vnet(VNET_NEEDS_CSUM, GSO_TCPV4, p.hdrs, 1000, p.l4 + 4, 12) + p.frame,
     "vnet_gso", None),
    ("gso on udp frame", lambda p: (lambda u: vnet(VNET_NEEDS_CSUM, GSO_TCPV4, u.hdrs, 500, u.l4, 16) + u.frame)(
        build(bytes(3000), proto=UDP, csum_mode="partial")), "vnet_gso", None),
    ("gso on non-IP", lambda p: vnet(VNET_NEEDS_CSUM, GSO_TCPV4, 54, 1000, 34, 16) + frame(3000), "vnet_gso", None),
]


@pytest.mark.parametrize("name, make, reason, value", BAD_VNET, ids=[b[0] for b in BAD_VNET])
def test_bad_vnet_header_is_counted_and_traffic_goes_on(h_all: FakeHost, name: str, make: Any, reason: str,
                                                        value: int | None) -> None:
    good = build(bytes(range(100)))
    sent = pump(h_all, [make(_v4()), vnet() + good.frame])
    assert [s.frame for s in sent] == [good.frame]
    c = h_all.dp.counters()
    assert c["tx_vnet_bad"] == 1 and c["tx_packets"] == 1
    drop = h_all.dp.last_drop()
    assert drop is not None and drop[0] == reason
    if value is not None:
        assert drop[1] == value


def test_oversize_frames_dropped_with_offloads(h_all: FakeHost) -> None:
    sent = pump(h_all, [vnet() + frame(1519), vnet() + frame(100, 3)])
    assert [s.frame for s in sent] == [frame(100, 3)]
    assert h_all.dp.counters()["tx_oversize"] == 1 and h_all.dp.last_drop() == ("tx_oversize", 1519)


def test_segment_larger_than_mtu_is_dropped(h_all: FakeHost) -> None:
    p = build(bytes(9000), csum_mode="partial")
    sent = pump(h_all, [gso_datagram(p, 4000)])
    assert sent == [] and h_all.dp.counters()["tx_oversize"] == 1


def test_runt_with_vnet(h_all: FakeHost) -> None:
    assert pump(h_all, [vnet() + bytes(10)]) == []
    assert h_all.dp.counters()["tx_runt"] == 1


def test_largest_mtu_falls_back_to_software_checksum_when_the_pktinfo_does_not_fit() -> None:
    mtu = 6144 - 44 - 14                               # hvuio.demo.max_guest_mtu for 6144-byte sections
    h = FakeHost(vnet_hdr=True, tap_offload=True, offloads=Offloads(**ALL, lso4=True, lso_max_size=62780),
                 send_section=SECTION, send_count=16, mtu=mtu)
    try:
        big = build(bytes(random.Random(2).randrange(256) for _ in range(mtu - 40)), csum_mode="partial")
        assert len(big.frame) == mtu + 14
        [s] = pump(h, [partial_datagram(big)])
        assert s.ppis == {} and l4_csum_ok(s.pkt) and s.pkt.payload == big.payload
        mss = mtu - 40
        p = build(bytes(random.Random(4).randrange(256) for _ in range(3 * mss + 5)), csum_mode="partial")
        sent = pump(h, [gso_datagram(p, mss)])
        assert [list(x.ppis) for x in sent] == [[], [], [], [PPI_TYPE["NDIS_PKTINFO_TYPE_CSUM"]]]
        check_segments(p, mss, sent, lso=False, csum_ppi=None)   # full segments leave no room for it
        assert h.dp.counters()["tx_oversize"] == 0
    finally:
        h.close()
