"""C data path, 802.1Q out of band (vlan.c, rx.c, tx.c, tx_stage.c, tx_gpa.c): a host that hands
the guest its VLAN tags in the 802.1Q pktinfo (a trunk-mode Hyper-V port) gets them put back into
the frames on the tap, and a tagged frame from the tap goes out untagged with the tag in the
pktinfo, as Linux's netvsc does (rndis_filter_receive_data / netvsc_xmit).

The pktinfo value is built from the golden bit masks (linux:ppi_bitfield_masks
ndis_pkt_8021q_info.*), the tag from IEEE 802.1Q (TPID 0x8100, then priority, DEI, VLAN id), so
neither side borrows the C code's conversion.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from hvuio.native.datapath import Offloads
from support.fakehost import TX_TAG, FakeHost, frame, pktinfo, rndis_packet
from support.golden import GOLDEN
from support.gpa_host import GpaHost
from support.offload_frames import GSO_TCPV4, VNET_NEEDS_CSUM, build, parse, partial_datagram, vnet
from support.offload_tx import ALL, SECTION, Sent, decode_msg

C = GOLDEN["constants"]
MASK = C["linux:ppi_bitfield_masks"]
PPI_VLAN = C["linux:ndis_per_pkt_info_type"]["IEEE_8021Q_INFO"]
PPI_CSUM = C["ndis_pktinfo_type"]["NDIS_PKTINFO_TYPE_CSUM"]
PPI_LSO = C["ndis_pktinfo_type"]["NDIS_PKTINFO_TYPE_LSO"]
RX = C["ndis_ppi_bits"]


def shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def vlan_info(vid: int, pri: int = 0, cfi: int = 0) -> int:
    return ((pri << shift(MASK["ndis_pkt_8021q_info.pri"])) | (cfi << shift(MASK["ndis_pkt_8021q_info.cfi"]))
            | (vid << shift(MASK["ndis_pkt_8021q_info.vlanid"])))


def tag(vid: int, pri: int = 0, cfi: int = 0) -> bytes:
    return struct.pack("!HH", 0x8100, pri << 13 | cfi << 12 | vid)


def tagged(f: bytes, vid: int, pri: int = 0, cfi: int = 0) -> bytes:
    return f[:12] + tag(vid, pri, cfi) + f[12:]


def vlan_ppi(value: int, *, size: int | None = None) -> bytes:
    return pktinfo(PPI_VLAN, struct.pack("<I", value), size=size)


@pytest.fixture
def host() -> Iterator[FakeHost]:
    h = FakeHost()
    yield h
    h.close()


# ---- receive: the tag of the pktinfo goes back into the frame ---------------------------------------


@pytest.mark.parametrize("vid, pri, cfi", [(5, 0, 0), (4094, 7, 0), (1, 3, 1), (0, 5, 0)])
def test_rx_tag_from_pktinfo_is_inserted(host: FakeHost, vid: int, pri: int, cfi: int) -> None:
    f = frame(100)
    host.send_xfer([host.place(0, rndis_packet(f, ppi=vlan_ppi(vlan_info(vid, pri, cfi))))], trans_id=3)
    host.dp.rx()
    assert host.tap_frames() == [tagged(f, vid, pri, cfi)]
    c = host.dp.counters()
    assert c["rx_vlan"] == 1 and c["rx_packets"] == 1 and c["rx_bytes"] == len(f) + 4


def test_rx_without_pktinfo_is_unchanged(host: FakeHost) -> None:
    f = tagged(frame(100), 9)          # a tag the host left in the frame stays where it is
    host.send_frames([frame(80), f], trans_id=4)
    host.dp.rx()
    assert host.tap_frames() == [frame(80), f]
    assert host.dp.counters()["rx_vlan"] == 0


def test_rx_tag_with_a_vnet_header_and_checksum_info() -> None:
    h = FakeHost(vnet_hdr=True, offloads=Offloads(rx_csum=True))
    try:
        p = build(bytes(200))
        ppi = pktinfo(PPI_CSUM, struct.pack("<I", RX["NDIS_RXCSUM_INFO_TCPCS_OK"])) + vlan_ppi(vlan_info(7, 2))
        h.send_xfer([h.place(0, rndis_packet(p.frame, ppi=ppi))], trans_id=5)
        h.dp.rx()
        [out] = h.tap_frames()
        assert out[0] == 2 and out[12:] == tagged(p.frame, 7, 2)     # DATA_VALID, no offsets to move
    finally:
        h.close()


@pytest.mark.parametrize("size, offset", [(12, 12), (16, 14)])   # 0 or 2 bytes where 4 belong
def test_rx_malformed_vlan_pktinfo_is_a_counted_drop(host: FakeHost, size: int, offset: int) -> None:
    bad = struct.pack("<III", size, PPI_VLAN, offset) + bytes(size - 12)
    host.send_xfer([host.place(0, rndis_packet(frame(90), ppi=bad)),
                    host.place(1, rndis_packet(frame(91), ppi=vlan_ppi(vlan_info(3))))], trans_id=6)
    host.dp.rx()
    assert host.tap_frames() == [tagged(frame(91), 3)]
    c = host.dp.counters()
    assert c["rx_vlan_bad"] == 1 and c["rx_range_drops"] == 1 and c["rx_vlan"] == 1
    assert host.dp.drop_counts()["rx_vlan_pktinfo"] == 1
    assert host.comp_fields(host.drain()[0])[1] != 1          # the packet is completed FAILED


def test_rx_tag_counts_against_the_mtu() -> None:
    h = FakeHost(mtu=1500)
    try:
        h.send_xfer([h.place(0, rndis_packet(frame(1514), ppi=vlan_ppi(vlan_info(2)))),
                     h.place(1, rndis_packet(frame(1515), ppi=vlan_ppi(vlan_info(2))))], trans_id=7)
        h.dp.rx()
        assert h.tap_frames() == [tagged(frame(1514), 2)]       # 1518 is one VLAN header over 1514
        assert h.dp.counters()["rx_oversize"] == 1
    finally:
        h.close()


# ---- transmit: the tap's tag goes into the pktinfo ----------------------------------------------------


def sent(h: FakeHost) -> list[Sent]:
    out = []
    for pkt in h.drain():
        if pkt.type != 0x6:
            continue
        _nvs, _chan, idx, size = struct.unpack_from("<IIII", pkt.payload)
        assert pkt.trans_id & TX_TAG
        data = h.section_bytes(idx, size)
        pos = 0
        while pos < size:
            mlen = struct.unpack_from("<I", data, pos + 4)[0]
            out.append(decode_msg(data[pos:pos + mlen]))
            pos += (mlen + 7) & ~7 if pos + mlen < size else mlen
        h.complete_tx(pkt.trans_id)
    return out


@pytest.mark.parametrize("vid, pri, cfi", [(5, 0, 0), (4094, 7, 1), (100, 3, 0)])
def test_tx_tag_moves_into_the_pktinfo(host: FakeHost, vid: int, pri: int, cfi: int) -> None:
    f = frame(200)
    host.tap_host.send(tagged(f, vid, pri, cfi))
    host.tap_host.send(frame(60, 1))
    host.dp.tx()
    a, b = sent(host)
    assert a.frame == f and a.ppis == {PPI_VLAN: vlan_info(vid, pri, cfi)}
    assert b.frame == frame(60, 1) and b.ppis == {}
    c = host.dp.counters()
    assert c["tx_vlan"] == 1 and c["tx_packets"] == 2 and c["tx_bytes"] == len(f) + 60


def test_tx_full_size_tagged_frame_fits_a_section() -> None:
    h = FakeHost(send_section=SECTION, mtu=1500)
    try:
        f = frame(1514)
        h.tap_host.send(tagged(f, 12))
        h.dp.tx()
        [s] = sent(h)
        assert s.frame == f and s.ppis == {PPI_VLAN: vlan_info(12)}
    finally:
        h.close()


def test_tx_tagged_frame_that_no_longer_fits_is_dropped_as_oversize() -> None:
    # a section that holds the largest frame (44 + 1518) but not 16 more header bytes less 4
    h = FakeHost(send_section=44 + 1518, mtu=1500)
    try:
        h.tap_host.send(tagged(frame(1514), 3))
        h.tap_host.send(tagged(frame(1500), 3))
        h.dp.tx()
        [s] = sent(h)
        assert s.frame == frame(1500) and h.dp.counters()["tx_oversize"] == 1
    finally:
        h.close()


def test_tx_checksum_offsets_count_from_the_untagged_frame() -> None:
    h = FakeHost(send_section=SECTION, vnet_hdr=True, offloads=Offloads(**ALL), tap_offload=True)
    try:
        p = build(bytes(300), vlan=5 | 3 << 13, csum_mode="partial")
        assert p.l3 == 18
        h.tap_host.send(partial_datagram(p))
        h.dp.tx()
        [s] = sent(h)
        assert s.ppis[PPI_VLAN] == vlan_info(5, 3)
        q = parse(s.frame)
        assert s.frame == p.frame[:12] + p.frame[16:] and q.l3 == 14
        th = (s.ppis[PPI_CSUM] >> 16) & 0x3FF
        assert th == q.l4 == p.l4 - 4                           # tcp_header_offset without the tag
    finally:
        h.close()


def test_tx_lso_of_a_tagged_gso_frame() -> None:
    h = FakeHost(send_section=SECTION, send_count=16, vnet_hdr=True, tap_offload=True,
                 offloads=Offloads(**ALL, lso4=True, lso_max_size=62780))
    try:
        p = build(bytes(range(256)) * 20, vlan=42)             # 5120 payload bytes
        mss = 1400
        v = vnet(VNET_NEEDS_CSUM, GSO_TCPV4, p.hdrs, mss, p.l4, 16)
        h.tap_host.send(v + p.frame)
        h.dp.tx()
        out = sent(h)
        assert out and all(s.ppis.get(PPI_VLAN) == vlan_info(42) for s in out)
        lso = [s for s in out if PPI_LSO in s.ppis]
        assert lso and all((s.ppis[PPI_LSO] >> 20) & 0x3FF == p.l4 - 4 for s in lso)
        assert b"".join(s.frame[p.hdrs - 4:] for s in out) == p.frame[p.hdrs:]
        assert all(s.frame[12:14] == b"\x08\x00" for s in out)   # untagged IPv4
        assert h.dp.counters()["tx_vlan"] == len(out)
    finally:
        h.close()


def test_tx_needs_csum_inside_the_tag_is_refused() -> None:
    h = FakeHost(send_section=SECTION, vnet_hdr=True, offloads=Offloads(**ALL), tap_offload=True)
    try:
        p = build(bytes(100), vlan=5, csum_mode="partial")
        h.tap_host.send(vnet(VNET_NEEDS_CSUM, 0, 0, 0, 16, 0) + p.frame)   # checksum at 16: in the tag
        h.dp.tx()
        assert sent(h) == [] and h.dp.counters()["tx_vnet_bad"] == 1
    finally:
        h.close()


def test_tx_tagged_jumbo_frame_goes_gpa_direct_untagged() -> None:
    h = GpaHost(mtu=9000)
    try:
        f = frame(9014, 4)
        h.tap_host.send(tagged(f, 77, 6))
        h.tap_host.send(tagged(frame(100, 5), 77))          # small: copied into a section
        msgs = h.pump()
        assert [m.gpa for m in msgs] == [True, False]
        big, small = (decode_msg(m.data) for m in msgs)
        assert big.frame == f and big.ppis == {PPI_VLAN: vlan_info(77, 6)}
        assert small.frame == frame(100, 5) and small.ppis == {PPI_VLAN: vlan_info(77)}
        assert h.dp.counters()["tx_vlan"] == 2
    finally:
        h.close()


def test_rx_rsc_frame_gets_the_first_fragments_tag() -> None:
    idf = C["linux:rndis_pktinfo_id_flags"]
    ppi_id = C["linux:ppi_type_words"]["RNDIS_PKTINFO_ID|internal"]

    def idinfo(flags: int) -> bytes:
        return pktinfo(ppi_id, bytes([idf["RNDIS_PKTINFO_ID_V1"], flags, 0, 0]))

    h = FakeHost(vnet_hdr=True, offloads=Offloads(rx_csum=True, rsc=True), recv_size=1 << 20, recv_section=4096)
    try:
        p = build(bytes(range(256)) * 12)                   # 3072 payload bytes: more than one MSS
        pieces = [p.frame[i:i + 1000] for i in range(0, len(p.frame), 1000)]
        msgs = []
        for i, piece in enumerate(pieces):
            flags = idf["RNDIS_PKTINFO_SUBALLOC"] | (idf["RNDIS_PKTINFO_1ST_FRAG"] if i == 0 else 0) | (
                idf["RNDIS_PKTINFO_LAST_FRAG"] if i == len(pieces) - 1 else 0)
            extra = vlan_ppi(vlan_info(300, 4)) if i == 0 else b""
            msgs.append(rndis_packet(piece, ppi=idinfo(flags) + extra))
        h.send_xfer([h.place(i, m) for i, m in enumerate(msgs)], trans_id=9)
        h.dp.rx()
        [out] = h.tap_frames()
        got = parse(out[12:])
        assert out[12:][12:16] == tag(300, 4) and got.l3 == 18
        assert out[12 + got.hdrs:] == p.frame[p.hdrs:]          # the payload, whole
        assert out[1] == GSO_TCPV4 and struct.unpack_from("<H", out, 2)[0] == got.hdrs   # hdr_len with the tag
        c = h.dp.counters()
        assert c["rx_vlan"] == 1 and c["rx_rsc_frames"] == 1
    finally:
        h.close()
