"""C data path RX offloads: the host's receive checksum info -> vnet DATA_VALID, and RSC fragments
(RNDIS_PKTINFO_ID SUBALLOC / 1ST_FRAG / LAST_FRAG) assembled into one tap frame, with hostile
sequences dropped whole and counted (the fake host of tests/support/fakehost.py).
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvuio.native.datapath import Offloads
from support.fakehost import STATUS_FAILED, STATUS_OK, FakeHost, frame, pktinfo, rndis_packet
from support.offload_frames import (
    ACK, CWR, FIN, GSO_TCPV4, GSO_TCPV6, PSH, UDP, VNET_DATA_VALID, VNET_NEEDS_CSUM, Pkt, build,
    complete_partial, ip4_csum_ok, ip_id, ip_len, l4_csum_ok, parse, tcp_flags, tcp_seq,
)
from support.golden import GOLDEN

C = GOLDEN["constants"]
RX = C["ndis_ppi_bits"]
IDF = C["linux:rndis_pktinfo_id_flags"]
PPI_CSUM = C["ndis_pktinfo_type"]["NDIS_PKTINFO_TYPE_CSUM"]
PPI_ID = C["linux:ppi_type_words"]["RNDIS_PKTINFO_ID|internal"]
RSC_MAX = C["linux:netvsc_misc"]["NVSP_RSC_MAX"]
SUB, FIRST, LAST = IDF["RNDIS_PKTINFO_SUBALLOC"], IDF["RNDIS_PKTINFO_1ST_FRAG"], IDF["RNDIS_PKTINFO_LAST_FRAG"]
TCP_OK, TCP_BAD = RX["NDIS_RXCSUM_INFO_TCPCS_OK"], RX["NDIS_RXCSUM_INFO_TCPCS_FAILED"]
UDP_OK, IP_OK = RX["NDIS_RXCSUM_INFO_UDPCS_OK"], RX["NDIS_RXCSUM_INFO_IPCS_OK"]


def idinfo(flags: int, pkt_id: int = 0) -> bytes:
    """rndis_pktinfo_id {ver, flag, pkt_id} (golden linux:rndis_pktinfo_id) as a pktinfo."""
    f = {x["name"]: x["offset"] for x in GOLDEN["structs"]["linux:rndis_pktinfo_id"]["fields"]}
    raw = bytearray(GOLDEN["structs"]["linux:rndis_pktinfo_id"]["size"])
    raw[f["ver"]] = IDF["RNDIS_PKTINFO_ID_V1"]
    raw[f["flag"]] = flags
    struct.pack_into("<H", raw, f["pkt_id"], pkt_id)
    return pktinfo(PPI_ID, bytes(raw))


def csinfo(value: int) -> bytes:
    return pktinfo(PPI_CSUM, struct.pack("<I", value))


class Host(FakeHost):
    """Places RNDIS messages anywhere in a large receive buffer, any number per packet."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("recv_size", 2 * 1024 * 1024)
        kw.setdefault("recv_section", 4096)
        super().__init__(vnet_hdr=True, offloads=Offloads(rx_csum=True, rsc=True), **kw)
        self.at = 0
        self.xid = 0x100

    def packet(self, msgs: list[bytes]) -> int:
        ranges = []
        for m in msgs:
            if self.at + len(m) > len(self.recv):
                self.at = 0
            ranges.append(self.place_at(self.at, m))
            self.at += (len(m) + 63) & ~63
        self.xid += 1
        self.send_xfer(ranges, self.xid)
        return self.xid

    def place_at(self, off: int, data: bytes) -> tuple[int, int]:
        self.recv[off:off + len(data)] = data
        return len(data), off

    def run(self) -> list[bytes]:
        for _ in range(1000):
            self.dp.rx()
            if self.rx_ring.bytes_to_read() == 0:
                break
        return self.tap_frames()


@pytest.fixture
def h() -> Iterator[Host]:
    host = Host()
    yield host
    host.close()


def fragments(data: bytes, size: int, *, csum: int | None = TCP_OK, pkt_id: int = 7) -> list[bytes]:
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    out = []
    for i, piece in enumerate(pieces):
        flags = SUB | (FIRST if i == 0 else 0) | (LAST if i == len(pieces) - 1 else 0)
        ppi = (csinfo(csum) if i == 0 and csum is not None else b"") + idinfo(flags, pkt_id)
        out.append(rndis_packet(piece, ppi=ppi))
    return out


def coalesced(n: int, *, v6: bool = False, tcp_opts: bytes = b"", seed: int = 0) -> Pkt:
    rnd = random.Random(seed)
    return build(bytes(rnd.randrange(256) for _ in range(n)), v6=v6, tcp_opts=tcp_opts, flags=ACK | PSH)


# ---- receive checksum info --------------------------------------------------------------------------


@pytest.mark.parametrize("info, flags, counter", [
    (TCP_OK | IP_OK, VNET_DATA_VALID, "rx_csum_valid"),
    (UDP_OK, VNET_DATA_VALID, "rx_csum_valid"),
    (IP_OK, 0, None),                                   # only the IP header checked: not enough
    # the host's IPv4 header verdict is not passed on (the kernel checks the header itself; hvuio
    # never asks for that offload, VMBUS.md §4.22): TCP good is DATA_VALID whatever the IP bits say
    (TCP_OK | RX["NDIS_RXCSUM_INFO_IPCS_FAILED"], VNET_DATA_VALID, "rx_csum_valid"),
    (TCP_OK | TCP_BAD, 0, "rx_csum_bad"),               # contradictory: never valid
    (TCP_BAD, 0, "rx_csum_bad"),
    (RX["NDIS_RXCSUM_INFO_UDPCS_FAILED"] | TCP_OK, 0, "rx_csum_bad"),
])
def test_checksum_info_to_vnet_flags(h: Host, info: int, flags: int, counter: str | None) -> None:
    p = build(bytes(100))
    h.packet([rndis_packet(p.frame, ppi=csinfo(info))])
    [out] = h.run()
    assert out[0] == flags and out[1:12] == bytes(11) and out[12:] == p.frame
    c = h.dp.counters()
    assert c["rx_csum_valid"] == (1 if counter == "rx_csum_valid" else 0)
    assert c["rx_csum_bad"] == (1 if counter == "rx_csum_bad" else 0)


def test_checksum_info_ignored_without_rx_csum() -> None:
    host = FakeHost(vnet_hdr=True)
    try:
        host.send_xfer([host.place(0, rndis_packet(frame(80), ppi=csinfo(TCP_OK)))], trans_id=1)
        host.dp.rx()
        assert host.tap_frames() == [bytes(12) + frame(80)]
    finally:
        host.close()


def test_short_checksum_pktinfo_is_not_read(h: Host) -> None:
    # a pktinfo whose data offset leaves fewer than 4 bytes carries no value
    h.packet([rndis_packet(frame(80), ppi=pktinfo(PPI_CSUM, struct.pack("<I", TCP_OK), offset=14)
                           + idinfo(0))])
    [out] = h.run()
    assert out[0] == 0 and h.dp.counters()["rx_csum_valid"] == 0


# ---- RSC ---------------------------------------------------------------------------------------------------


def check_rsc_frame(out: bytes, orig: Pkt, mtu: int = 1500) -> None:
    """out = vnet + frame written for a coalesced TCP frame whose checksum the host vouched for."""
    flags, gso_type, hdr_len, gso_size, cstart, coff = struct.unpack_from("<BBHHHH", out)
    got = parse(out[12:])
    mss = mtu - (orig.hdrs - orig.l3)
    assert flags == VNET_NEEDS_CSUM and (cstart, coff) == (orig.l4, 16)
    if len(orig.payload) > mss:
        assert gso_type == (GSO_TCPV6 if orig.v6 else GSO_TCPV4)
        assert (gso_size, hdr_len) == (mss, orig.hdrs)
    else:
        assert (gso_type, gso_size) == (0, 0)
    assert ip4_csum_ok(got)
    # completing the partial checksum (what the stack does if it forwards) gives the original
    assert complete_partial(got, cstart, coff) == orig.frame
    assert l4_csum_ok(parse(complete_partial(got, cstart, coff)))


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("n", [3000, 30000, 65535 - 52])
def test_rsc_fragments_become_one_gso_frame(h: Host, v6: bool, n: int) -> None:
    orig = coalesced(n - (20 if v6 else 0), v6=v6, tcp_opts=bytes.fromhex("0101080a0000000100000002"))
    frags = fragments(orig.frame, 3900)
    for i in range(0, len(frags), 5):                 # several transfer-page packets
        h.packet(frags[i:i + 5])
    [out] = h.run()
    check_rsc_frame(out, orig)
    c = h.dp.counters()
    assert c["rx_rsc_frames"] == 1 and c["rx_rsc_frags"] == len(frags) and c["rx_rsc_drop"] == 0
    assert c["rx_packets"] == 1 and c["rx_bytes"] == len(orig.frame)
    assert all(h.comp_fields(p) == (108, STATUS_OK) for p in h.drain())


def test_rsc_ipv4_header_checksum_recomputed(h: Host) -> None:
    orig = coalesced(5000)
    bad = bytearray(orig.frame)
    bad[orig.l3 + 10:orig.l3 + 12] = b"\0\0"          # host left the IPv4 checksum unset
    h.packet(fragments(bytes(bad), 2000))
    [out] = h.run()
    check_rsc_frame(out, orig)


def test_rsc_without_checksum_info_is_gso_without_csum_flags(h: Host) -> None:
    orig = coalesced(6000)
    h.packet(fragments(orig.frame, 2000, csum=None))
    [out] = h.run()
    flags, gso_type, _hl, gso_size = struct.unpack_from("<BBHH", out)
    assert (flags, gso_type, gso_size) == (0, GSO_TCPV4, 1500 - 40)
    assert out[12:] == orig.frame                     # checksums untouched: the stack verifies them


def test_single_fragment_sequence(h: Host) -> None:
    orig = coalesced(500)
    h.packet([rndis_packet(orig.frame, ppi=csinfo(TCP_OK) + idinfo(SUB | FIRST | LAST))])
    [out] = h.run()
    check_rsc_frame(out, orig)


@pytest.mark.parametrize("tail", range(1, 14))
def test_short_continuation_fragments_are_taken(h: Host, tail: int) -> None:
    """A host cuts a coalesced frame where a section ends: the last (and a middle) fragment may be
    shorter than an Ethernet header; only a whole frame or a first fragment must hold one."""
    orig = coalesced(4000 + tail - 54)               # 4000 + tail bytes of frame
    assert len(orig.frame) == 4000 + tail
    cut = [orig.frame[:1990], orig.frame[1990:1990 + tail], orig.frame[1990 + tail:4000],
           orig.frame[4000:]]
    flags = [SUB | FIRST, SUB, SUB, SUB | LAST]
    h.packet([rndis_packet(piece, ppi=(csinfo(TCP_OK) if i == 0 else b"") + idinfo(f))
              for i, (piece, f) in enumerate(zip(cut, flags))])
    [out] = h.run()
    check_rsc_frame(out, orig)
    c = h.dp.counters()
    assert (c["rx_bad_rndis"], c["rx_rsc_drop"], c["rx_rsc_frags"]) == (0, 0, 4)


@pytest.mark.parametrize("first, empty", [(13, False), (20, True)])
def test_short_first_or_empty_fragment_is_bad_rndis(h: Host, first: int, empty: bool) -> None:
    orig = coalesced(3000)
    head, rest = orig.frame[:first], orig.frame[first:]
    msgs = [rndis_packet(head, ppi=idinfo(SUB | FIRST))]
    if empty:
        msgs.append(rndis_packet(b"", ppi=idinfo(SUB)))
    msgs.append(rndis_packet(rest, ppi=idinfo(SUB | LAST)))
    h.packet(msgs)
    outs = h.run()
    c = h.dp.counters()
    drop = h.dp.last_drop()
    if empty:    # the empty piece carried nothing: counted, and the frame is still whole
        assert len(outs) == 1 and outs[0][12:] == orig.frame and c["rx_bad_rndis"] == 1
    else:        # no first fragment: the last one has no sequence to join
        assert outs == [] and c["rx_bad_rndis"] == 1 and c["rx_rsc_drop"] == 1
        assert drop is not None and drop[0] == "rsc_sequence"


def test_non_tcp_rsc_frame_within_mtu_passes(h: Host) -> None:
    u = build(bytes(900), proto=UDP)
    h.packet(fragments(u.frame, 500, csum=UDP_OK))
    [out] = h.run()
    assert out[0] == VNET_DATA_VALID and out[1] == 0 and out[12:] == u.frame


class PlainHost(FakeHost):
    """A tap without vnet header (IFF_VNET_HDR off): nothing can ask the kernel to segment."""

    def __init__(self, *, rx_csum: bool = False, **kw: Any) -> None:
        kw.setdefault("recv_size", 256 * 1024)
        kw.setdefault("recv_section", 4096)
        super().__init__(offloads=Offloads(rx_csum=rx_csum, rsc=True), **kw)
        self.xid = 0

    def rsc(self, data: bytes, *, csum: int | None) -> list[int]:
        """data as 3000-byte RSC fragments (one receive section each), five per transfer-page
        packet, then rx until the inbound ring is empty; the packets' trans_ids."""
        frags = fragments(data, 3000, csum=csum)
        ids = []
        for i in range(0, len(frags), 5):
            self.xid += 1
            self.send_xfer([self.place(i + j, f) for j, f in enumerate(frags[i:i + 5])], self.xid)
            ids.append(self.xid)
        for _ in range(100):
            self.dp.rx()
            if self.rx_ring.bytes_to_read() == 0:
                break
        return ids


def check_segments(outs: list[bytes], orig: Pkt, mtu: int) -> None:
    """What GSO makes of `orig` at this MTU (Linux tcp_gso_segment): segments of MSS = MTU - IP -
    TCP headers, each with its own IP length (and IPv4 id + index), TCP seq advanced by the payload
    before it, FIN/PSH on the last only, CWR on the first only, valid checksums."""
    mss = mtu - (orig.hdrs - orig.l3)
    pay = orig.payload
    assert len(outs) == (len(pay) + mss - 1) // mss > 1
    for i, out in enumerate(outs):
        p = parse(out)
        assert len(out) - p.l3 <= mtu and p.hdrs == orig.hdrs
        assert p.payload == pay[i * mss:(i + 1) * mss]
        assert ip_len(p) == len(out) - p.l3
        assert ip4_csum_ok(p) and l4_csum_ok(p)
        assert tcp_seq(p) == (tcp_seq(orig) + i * mss) & 0xFFFFFFFF
        keep = (FIN | PSH if i == len(outs) - 1 else 0) | (CWR if i == 0 else 0)
        assert tcp_flags(p) == tcp_flags(orig) & (keep | ~(FIN | PSH | CWR) & 0xFF)
        assert p.v6 or ip_id(p) == (ip_id(orig) + i) & 0xFFFF
        # everything else of the headers as the coalesced frame had it: MACs, addresses, ports,
        # ack, window, TCP options
        assert out[:p.l3] == orig.frame[:p.l3]
        assert out[p.l4:p.l4 + 4] == orig.frame[orig.l4:orig.l4 + 4]
        assert out[p.l4 + 8:p.l4 + 13] == orig.frame[orig.l4 + 8:orig.l4 + 13]
        assert out[p.l4 + 14:p.l4 + 16] == orig.frame[orig.l4 + 14:orig.l4 + 16]
        assert out[p.l4 + 20:p.hdrs] == orig.frame[orig.l4 + 20:orig.hdrs]
        assert out[p.l3 + (8 if p.v6 else 12):p.l4] == orig.frame[orig.l3 + (8 if p.v6 else 12):orig.l4]


@pytest.mark.parametrize("vouched", [False, True])
@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("mtu, n", [(1500, 9000), (1500, 65535 - 52), (9000, 30000)])
def test_rsc_without_vnet_header_is_cut_into_mtu_segments(v6: bool, vouched: bool, mtu: int, n: int) -> None:
    """Without a vnet header the kernel cannot segment a coalesced frame, and a plain frame over
    the MTU is what it drops as oversize: the data path cuts it as GSO would. With the host's
    checksum vouched for, the coalesced frame's own TCP checksum may be anything (it is
    recomputed per segment); without, it is checked first."""
    host = PlainHost(rx_csum=vouched, mtu=mtu)
    try:
        orig = build(bytes(random.Random(n).randrange(256) for _ in range(n - 20 * v6)), v6=v6,
                     tcp_opts=bytes.fromhex("0101080a0000000100000002"), flags=ACK | PSH | FIN | CWR)
        sent = bytearray(orig.frame)
        if vouched:
            sent[orig.l4 + 16:orig.l4 + 18] = b"\xde\xad"      # the host left the TCP checksum stale
        ids = host.rsc(bytes(sent), csum=TCP_OK if vouched else None)
        outs = host.tap_frames()
        check_segments(outs, orig, mtu)
        c = host.dp.counters()
        assert c["rx_rsc_sw_seg"] == 1 and c["rx_rsc_frames"] == 1 and c["rx_rsc_drop"] == 0
        assert c["rx_packets"] == len(outs) and c["rx_bytes"] == sum(map(len, outs))
        assert c["rx_tap_drop"] == 0 and host.dp.last_drop() is None
        assert [(p.trans_id, host.comp_fields(p)[1]) for p in host.drain()] == [(i, STATUS_OK) for i in ids]
    finally:
        host.close()


def test_rsc_without_vnet_header_within_one_mss_is_written_whole() -> None:
    host = PlainHost()
    try:
        orig = coalesced(1500 - 40)                  # exactly one MSS: no reason to cut it
        host.rsc(orig.frame, csum=None)
        assert host.tap_frames() == [orig.frame]
        c = host.dp.counters()
        assert c["rx_rsc_frames"] == 1 and c["rx_rsc_sw_seg"] == 0
    finally:
        host.close()


def test_rsc_without_vnet_header_vouched_checksum_is_completed() -> None:
    """The host vouched for the checksum, the coalesced frame's own may be stale, and without a
    vnet header no NEEDS_CSUM can ask the kernel to finish it: the data path does, in software."""
    host = PlainHost(rx_csum=True)
    try:
        orig = coalesced(1200)
        sent = bytearray(orig.frame)
        sent[orig.l4 + 16:orig.l4 + 18] = b"\x12\x34"
        host.rsc(bytes(sent), csum=TCP_OK)
        assert host.tap_frames() == [orig.frame]
    finally:
        host.close()


def test_rsc_without_vnet_header_bad_checksum_is_dropped_not_laundered() -> None:
    """A coalesced frame the host did not vouch for and whose TCP checksum is wrong: cutting it
    with fresh checksums would turn corrupt data into valid segments, so it is dropped whole."""
    host = PlainHost()
    try:
        orig = coalesced(9000)
        bad = bytearray(orig.frame)
        bad[-100] ^= 0x40                             # one payload bit flipped on the way
        nfrags = len(fragments(bytes(bad), 3000))
        ids = host.rsc(bytes(bad), csum=None)
        assert host.tap_frames() == []
        c = host.dp.counters()
        assert c["rx_rsc_drop"] == nfrags and c["rx_rsc_frames"] == 0 and c["rx_rsc_sw_seg"] == 0
        drop = host.dp.last_drop()
        assert drop is not None and drop[0] == "rsc_csum"
        assert drop[1] == int.from_bytes(bad[orig.l4 + 16:orig.l4 + 18], "big")   # the checksum found
        assert host.dp.drop_counts() == {"rsc_csum": 1}
        assert [(p.trans_id, host.comp_fields(p)[1]) for p in host.drain()] == [(i, STATUS_FAILED) for i in ids]
    finally:
        host.close()


@pytest.mark.parametrize("vnet, payload", [(False, 3000), (True, 3000), (True, 1), (False, 1)])
def test_rsc_frame_whose_headers_fill_the_mtu_is_dropped(vnet: bool, payload: int) -> None:
    """IPv6 + TCP with 40 bytes of options is 100 bytes of headers: at MTU 68 no segment of it
    fits, with or without a vnet header, and even with one payload byte the frame is longer than
    the MTU allows: dropped whole and counted (found by the dp_rx fuzzer)."""
    host: FakeHost = Host(mtu=68, recv_size=256 * 1024) if vnet else PlainHost(mtu=68)
    try:
        orig = coalesced(payload, v6=True, tcp_opts=bytes(40))
        if isinstance(host, Host):
            host.packet(fragments(orig.frame, 3000, csum=None))
            outs = host.run()
        else:
            assert isinstance(host, PlainHost)
            host.rsc(orig.frame, csum=None)
            outs = host.tap_frames()
        nfrags = len(fragments(orig.frame, 3000))
        assert outs == []
        assert host.dp.last_drop() == ("rsc_frame", 100)
        assert host.dp.counters()["rx_rsc_drop"] == nfrags
    finally:
        host.close()


def test_rsc_segments_that_do_not_fit_the_tap_are_counted() -> None:
    """A tap that takes only a few frames: every segment is either written or counted as a tap
    drop (the ones after the first failed write are not tried), never lost silently."""
    host = PlainHost()
    try:
        host.tap_guest.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        orig = coalesced(30000)
        mss = 1500 - (orig.hdrs - orig.l3)
        nseg = (len(orig.payload) + mss - 1) // mss
        host.rsc(orig.frame, csum=None)
        outs = host.tap_frames()
        c = host.dp.counters()
        assert c["rx_tap_drop"] > 0 and c["rx_packets"] == len(outs)
        assert c["rx_packets"] + c["rx_tap_drop"] == nseg
        assert c["rx_rsc_sw_seg"] == 0 and c["rx_rsc_frames"] == 0
        drop = host.dp.last_drop()
        assert drop is not None and drop[0] == "tap_write"
        for i, out in enumerate(outs):             # what got through is the start, in order
            assert parse(out).payload == orig.payload[i * mss:(i + 1) * mss]
    finally:
        host.close()


# ---- hostile sequences --------------------------------------------------------------------------------------


def run_and_expect(h: Host, dropped: int, reason: str, frames_out: int = 0) -> list[bytes]:
    outs = h.run()
    assert len(outs) == frames_out
    c = h.dp.counters()
    assert c["rx_rsc_drop"] == dropped and c["rx_rsc_frames"] == 0
    drop = h.dp.last_drop()
    assert drop is not None and drop[0] == reason
    return outs


def test_missing_first_fragment(h: Host) -> None:
    frags = fragments(coalesced(8000).frame, 2000)
    h.packet(frags[1:])
    run_and_expect(h, len(frags) - 1, "rsc_sequence")
    comps = [h.comp_fields(p) for p in h.drain()]
    assert comps == [(108, STATUS_FAILED)]            # the packet's fragments were dropped


def test_missing_last_fragment_then_a_whole_packet(h: Host) -> None:
    frags = fragments(coalesced(8000).frame, 2000)
    plain = build(bytes(64))
    h.packet(frags[:-1])
    h.packet([rndis_packet(plain.frame)])
    outs = run_and_expect(h, len(frags) - 1, "rsc_sequence", frames_out=1)
    assert outs[0][12:] == plain.frame                # the whole packet still goes through


def test_missing_last_fragment_then_a_new_sequence(h: Host) -> None:
    a, b = coalesced(8000, seed=1), coalesced(6000, seed=2)
    fa, fb = fragments(a.frame, 2000, pkt_id=1), fragments(b.frame, 2000, pkt_id=2)
    h.packet(fa[:-1] + fb)
    outs = h.run()
    assert len(outs) == 1
    check_rsc_frame(outs[0], b)
    c = h.dp.counters()
    assert c["rx_rsc_drop"] == len(fa) - 1 and c["rx_rsc_frames"] == 1


def test_interleaved_sequences_are_dropped(h: Host) -> None:
    a, b = coalesced(8000, seed=1), coalesced(8000, seed=2)
    fa, fb = fragments(a.frame, 2000, pkt_id=1), fragments(b.frame, 2000, pkt_id=2)
    mixed = [x for pair in zip(fa, fb) for x in pair]
    h.packet(mixed)
    outs = h.run()
    assert outs == []                                  # never a frame made of both
    c = h.dp.counters()
    assert c["rx_rsc_drop"] == len(mixed) and c["rx_rsc_frames"] == 0
    # a's first fragment is cut off by b's first; b's sequence then takes a's middle fragments (the
    # pkt_id does not delimit, Linux rndis_filter_receive_data) and fails the IP length check; b's
    # last fragment comes after that sequence closed
    assert h.dp.drop_counts() == {"rsc_sequence": 2, "rsc_frame": 1}


@pytest.mark.parametrize("ids", [[7, 8, 9, 10, 11], [1, 1, 2, 1, 1], [0, 65535, 0, 65535, 0]])
def test_pkt_id_change_inside_a_sequence_is_taken(h: Host, ids: list[int]) -> None:
    """Linux keys reassembly on the first/last flags alone (rndis_filter_receive_data): fragments
    whose pkt_id changes midway still make one frame."""
    orig = coalesced(8000)
    frags = fragments(orig.frame, 2000)
    assert len(frags) == len(ids)
    h.packet([fragments(orig.frame, 2000, pkt_id=i)[k] for k, i in enumerate(ids)])
    [out] = h.run()
    check_rsc_frame(out, orig)
    c = h.dp.counters()
    assert c["rx_rsc_frames"] == 1 and c["rx_rsc_frags"] == len(ids) and c["rx_rsc_drop"] == 0
    assert h.dp.drop_counts() == {}
    assert c["rx_ranges"] == c["rx_ranges_written"] + c["rx_range_drops"]
    assert [h.comp_fields(p) for p in h.drain()] == [(108, STATUS_OK)]


def test_foreign_fragment_of_another_length_fails_the_length_check(h: Host) -> None:
    a, b = coalesced(8000, seed=1), coalesced(9000, seed=2)
    fa, fb = fragments(a.frame, 2000), fragments(b.frame, 2500)
    h.packet([fa[0], fb[1], fa[2], fa[3], fa[4]])    # same pkt_id: only the IP length tells
    run_and_expect(h, 5, "rsc_frame")


def test_too_many_fragments(h: Host) -> None:
    frags = fragments(frame((RSC_MAX + 1) * 20, 1), 20)
    assert len(frags) == RSC_MAX + 1
    for i in range(0, len(frags), 100):
        h.packet(frags[i:i + 100])
    run_and_expect(h, len(frags), "rsc_too_long")     # the last one is one too many: all dropped


def test_too_many_bytes(h: Host) -> None:
    big = frame(65535 + 18 + 100, 3)                 # 64 KiB of IP packet + L2, and 100 more
    frags = fragments(big, 3900)
    for i in range(0, len(frags), 6):
        h.packet(frags[i:i + 6])
    run_and_expect(h, len(frags), "rsc_too_long")


def test_length_mismatch_is_dropped(h: Host) -> None:
    orig = coalesced(8000)
    frags = fragments(orig.frame, 2000)
    h.packet(frags[:2] + frags[3:])                   # a middle fragment lost: IP length disagrees
    run_and_expect(h, len(frags) - 1, "rsc_frame")


def test_oversize_non_tcp_frame_is_dropped(h: Host) -> None:
    h.packet(fragments(frame(5000, 1), 2000))
    run_and_expect(h, 3, "rsc_frame")


def model(ops: list[tuple[str, int, int]]) -> tuple[int, int, int, int]:
    """Reference for the rules (Linux rndis_filter_receive_data: the first/last flags delimit a
    sequence, the pkt_id is not looked at): returns (plain frames, RSC frames, fragments in RSC
    frames, fragments dropped)."""
    flags = {"first": SUB | FIRST, "mid": SUB, "last": SUB | LAST, "firstlast": SUB | FIRST | LAST}
    plain = frames = in_frames = dropped = cnt = length = 0
    for kind, _pid, n in ops:
        if kind == "plain":
            dropped += cnt
            cnt = length = 0
            plain += 1
            continue
        f = flags[kind]
        if f & FIRST:
            dropped += cnt
            cnt = length = 0
        elif cnt == 0:
            dropped += 1
            continue
        cnt += 1
        length += n
        if f & LAST:
            if length <= 1500 + 18:       # the pattern frames are not IP: at most one MTU frame
                frames += 1
                in_frames += cnt
            else:
                dropped += cnt
            cnt = length = 0
    return plain, frames, in_frames, dropped


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(["first", "mid", "last", "firstlast", "plain"]),
                              st.integers(0, 2), st.integers(20, 600)), max_size=40))
def test_any_fragment_sequence_matches_the_reference(ops: list[tuple[str, int, int]]) -> None:
    """Any mix of fragments and whole packets: frames written and fragments dropped are exactly
    what the reference rules say; every fragment is in a written frame, dropped, or still open."""
    host = Host(recv_size=256 * 1024)
    try:
        flags = {"first": SUB | FIRST, "mid": SUB, "last": SUB | LAST, "firstlast": SUB | FIRST | LAST}
        msgs = [rndis_packet(frame(n, pid)) if kind == "plain"
                else rndis_packet(frame(n, pid), ppi=idinfo(flags[kind], pid)) for kind, pid, n in ops]
        for i in range(0, len(msgs), 8):
            host.packet(msgs[i:i + 8])
        outs = host.run()
        plain, frames, in_frames, dropped = model(ops)
        c = host.dp.counters()
        assert (c["rx_rsc_frames"], c["rx_rsc_frags"], c["rx_rsc_drop"]) == (frames, in_frames, dropped)
        assert len(outs) == plain + frames
    finally:
        host.close()
