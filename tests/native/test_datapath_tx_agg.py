"""C data path, guest -> host aggregation: frames read in one batch share a send section and its
NVS 107 message within the host's RNDIS limits (max_packets_per_message, packet alignment,
max_transfer_size), as Linux netvsc and DPDK batch them. Every send is split here the way a host
reads it: each message at the alignment, every message but the last padded with zeros to it, the
last one unpadded; frames must come out byte-exact and in order, with nothing lost under ring and
section pressure.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import Offloads, Status, TxAggregation
from hvuio.sim.vsp.ring import RingPacket
from support.fakehost import TX_TAG, FakeHost, frame
from support.offload_frames import GSO_TCPV4, TCP, UDP, VNET_NEEDS_CSUM, build, partial_datagram, vnet
from support.offload_tx import ALL, SECTION, Sent, decode_msg

RNDIS_DATA_BASE = 8     # RNDIS offsets count from byte 8


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def split_send(h: FakeHost, pkt: RingPacket, align: int) -> list[Sent]:
    """The RNDIS packets of one NVS 107 send, checked as a host reads them."""
    assert pkt.trans_id & TX_TAG
    _nvs, _chan, idx, size = struct.unpack_from("<IIII", pkt.payload)
    assert idx == pkt.trans_id & ~TX_TAG and 0 < size <= h.send_section
    data = h.section_bytes(idx, size)
    out: list[Sent] = []
    pos = 0
    while pos < size:
        assert pos % align == 0, f"message at {pos} is off the {align}-byte alignment"
        mtype, mlen, doff, dlen = struct.unpack_from("<IIII", data, pos)
        assert mtype == 1 and pos + mlen <= size
        end = RNDIS_DATA_BASE + doff + dlen          # the frame is the last thing in the message
        if pos + mlen == size:
            assert mlen == end, "the last message of a send is not padded"
        else:
            assert mlen == align_up(end, align), "a message followed by another is padded to the alignment"
            assert data[pos + end:pos + mlen] == bytes(mlen - end), "padding is zeros"
        unpadded = bytearray(data[pos:pos + end])
        struct.pack_into("<I", unpadded, 4, end)
        out.append(decode_msg(bytes(unpadded)))
        pos += mlen
    return out


def sends(h: FakeHost, align: int, *, complete: bool = True) -> list[list[Sent]]:
    """The guest's sends since the last call, split; completed (sections freed) unless told not."""
    pkts = h.drain()
    out = [split_send(h, p, align) for p in pkts]
    if complete:
        for p in pkts:
            h.complete_tx(p.trans_id)
        h.dp.rx()
    return out


def agg_host(max_packets: int = 8, alignment: int = 8, max_bytes: int = 0, **kw: object) -> FakeHost:
    kw.setdefault("send_section", SECTION)
    return FakeHost(tx_aggregation=TxAggregation(max_packets, alignment, max_bytes), **kw)  # type: ignore[arg-type]


@pytest.fixture
def h8() -> Iterator[FakeHost]:
    h = agg_host()
    yield h
    h.close()


def test_frames_read_together_share_one_send(h8: FakeHost) -> None:
    frames = [frame(n, i) for i, n in enumerate([60, 61, 99, 200, 1514])]
    for f in frames:
        h8.tap_host.send(f)
    assert h8.dp.tx() is Status.IDLE
    assert h8.dp.sections_in_use == 1
    got = sends(h8, 8)
    assert [[s.frame for s in send] for send in got] == [frames]
    c = h8.dp.counters()
    assert (c["tx_packets"], c["tx_sends"], c["tx_bytes"]) == (5, 1, sum(map(len, frames)))
    assert c["signals"] == 1 and h8.signals() == 1
    assert h8.dp.sections_in_use == 0 and c["tx_completions"] == 1   # one completion frees the five


def test_default_is_one_frame_per_send() -> None:
    h = FakeHost(send_section=SECTION)
    try:
        for i in range(4):
            h.tap_host.send(frame(60, i))
        h.dp.tx()
        assert [len(s) for s in sends(h, 1)] == [1, 1, 1, 1]
        assert h.dp.counters()["tx_sends"] == 4
    finally:
        h.close()


def test_max_packets_per_message_bounds_a_send() -> None:
    h = agg_host(max_packets=3)
    try:
        frames = [frame(60 + i, i) for i in range(7)]
        for f in frames:
            h.tap_host.send(f)
        h.dp.tx()
        got = sends(h, 8)
        assert [len(s) for s in got] == [3, 3, 1]
        assert [s.frame for send in got for s in send] == frames
        assert h.dp.counters()["tx_sends"] == 3
    finally:
        h.close()


def test_a_frame_joins_only_while_the_largest_frame_would_fit(h8: FakeHost) -> None:
    # each full-size message is 44 + 1514 = 1558 bytes, padded 1560: after three (4680 bytes) the
    # 6144-byte section has 1464 left, less than a largest frame (44 + 1518): even the small
    # frame read next starts a new send, since its size is unknown before the read
    frames = [frame(1514, i) for i in range(3)] + [frame(60, 9)]
    for f in frames:
        h8.tap_host.send(f)
    h8.dp.tx()
    got = sends(h8, 8)
    assert [len(s) for s in got] == [3, 1]
    assert [s.frame for send in got for s in send] == frames


def test_max_transfer_size_bounds_a_send() -> None:
    # 60-byte frames are 104-byte messages; one joins while its offset + a largest message
    # (44 + 1518) stays within 2000 bytes: offsets 0, 104, 208, 312, 416
    h = agg_host(max_packets=64, max_bytes=2000)
    try:
        for i in range(12):
            h.tap_host.send(frame(60, i))
        h.dp.tx()
        assert [len(s) for s in sends(h, 8)] == [5, 5, 2]
    finally:
        h.close()


@pytest.mark.parametrize("alignment, per_send", [(1, 6), (4, 6), (64, 6), (4096, 2)])
def test_alignment_pads_every_message_but_the_last(alignment: int, per_send: int) -> None:
    h = agg_host(max_packets=64, alignment=alignment)
    try:
        frames = [frame(77, i) for i in range(6)]
        for f in frames:
            h.tap_host.send(f)
        h.dp.tx()
        got = sends(h, alignment)
        assert [len(s) for s in got] == [per_send] * (6 // per_send)
        assert [s.frame for send in got for s in send] == frames
    finally:
        h.close()


def test_with_the_hash_pktinfo_every_message_carries_it() -> None:
    h = agg_host(tx_hash_value=5)
    try:
        for i in range(3):
            h.tap_host.send(frame(90, i))
        h.dp.tx()
        pkts = h.drain()
        assert len(pkts) == 1
        _nvs, _chan, idx, size = struct.unpack_from("<IIII", pkts[0].payload)
        data = h.section_bytes(idx, size)
        for pos in (0, 152, 304):                  # 60 + 90 = 150 bytes, padded to 152
            assert struct.unpack_from("<IIII", data, pos + 44) == (16, 8, 12, 5)   # hash value pktinfo
    finally:
        h.close()


def test_a_send_is_flushed_at_the_end_of_every_batch(h8: FakeHost) -> None:
    """Aggregation never holds a frame back: what one tx() call gathered is sent before it returns."""
    h8.tap_host.send(frame(60, 1))
    h8.dp.tx()
    assert [[s.frame for s in send] for send in sends(h8, 8)] == [[frame(60, 1)]]
    for i in range(3):
        h8.tap_host.send(frame(70, i))
    assert h8.dp.tx(budget=2) is Status.BUDGET        # budget ends the batch: the two go now
    assert [len(s) for s in sends(h8, 8)] == [2]
    h8.dp.tx()
    assert [len(s) for s in sends(h8, 8)] == [1]


def test_sections_run_out_while_a_send_is_held() -> None:
    h = agg_host(max_packets=2, send_count=2)
    try:
        frames = [frame(100, i) for i in range(7)]
        for f in frames:
            h.tap_host.send(f)
        assert h.dp.tx() is Status.BLOCKED
        first = sends(h, 8, complete=False)
        assert [len(s) for s in first] == [2, 2] and h.dp.sections_in_use == 2
        got = [s.frame for send in first for s in send]
        for p_round in range(4):
            for p in h.drain():
                raise AssertionError(f"unexpected send {p}")
            h.complete_tx(TX_TAG | 0)
            h.complete_tx(TX_TAG | 1)
            h.dp.rx()
            h.dp.tx()
            got += [s.frame for send in sends(h, 8, complete=False) for s in send]
            if len(got) == len(frames):
                break
        assert got == frames
        assert h.dp.counters()["tx_no_space"] >= 1
    finally:
        h.close()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_packets=st.integers(1, 12), alignment=st.sampled_from([1, 8, 32, 256]),
       sections=st.integers(1, 6))
def test_nothing_lost_or_reordered_under_ring_and_section_pressure(seed: int, max_packets: int, alignment: int,
                                                                  sections: int) -> None:
    rnd = random.Random(seed)
    h = agg_host(max_packets=max_packets, alignment=alignment, tx_data=4096, send_section=2048,
                 send_count=sections)
    try:
        frames = [frame(rnd.choice([14, 15, 60, 61, 333, 1000, 1514, 1518]), i) for i in range(120)]
        queued, got, outstanding = 0, [], []
        for _ in range(5000):
            while queued < len(frames) and rnd.random() < 0.7:
                h.tap_host.send(frames[queued])
                queued += 1
            h.dp.tx(budget=rnd.randint(1, 16))
            pkts = h.drain()
            for p in pkts:
                send = split_send(h, p, alignment)
                assert 1 <= len(send) <= max_packets
                got += [s.frame for s in send]
            outstanding += [p.trans_id for p in pkts]
            rnd.shuffle(outstanding)
            for _k in range(rnd.randint(0, len(outstanding))):   # the host completes some, in any order
                h.complete_tx(outstanding.pop())
            h.dp.rx()
            if len(got) == len(frames):
                break
        assert got == frames
        c = h.dp.counters()
        assert c["tx_packets"] == len(frames) and c["tx_bytes"] == sum(map(len, frames))
        assert c["tx_oversize"] == 0 and c["tx_bad_comp"] == 0
    finally:
        h.close()


# ---- with tap offloads (the stage path) ----------------------------------------------------------


def test_offloaded_frames_aggregate_each_with_its_own_pktinfo() -> None:
    h = agg_host(vnet_hdr=True, tap_offload=True, send_count=16,
                 offloads=Offloads(**ALL, lso4=True, lso6=True, lso_max_size=62780))
    try:
        small = [build(bytes([i]) * 40, proto=UDP) for i in range(3)]
        big = build(bytes(range(256)) * 40, proto=TCP)                  # 10240 bytes of TCP payload
        plain = build(b"plain", proto=UDP)
        for p in small:
            h.tap_host.send(partial_datagram(p))
        h.tap_host.send(vnet(VNET_NEEDS_CSUM, GSO_TCPV4, big.l4 + 20, 1000, big.l4, 16) + big.frame)
        h.tap_host.send(vnet() + plain.frame)
        h.dp.tx()
        got = sends(h, 8)
        first = got[0]
        assert [s.frame for s in first] == [p.frame for p in small]
        assert all(0 in s.ppis for s in first)                          # checksum pktinfo on each
        lso = [s for send in got[1:] for s in send if 2 in s.ppis]      # LSO pktinfo
        assert sum(len(s.frame) - (big.l4 + 20) for s in lso) == 10240
        assert got[-1][-1].frame == plain.frame and not got[-1][-1].ppis
        c = h.dp.counters()
        assert c["tx_sends"] < c["tx_packets"] and c["tx_lso"] == len(lso)
    finally:
        h.close()


# ---- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(alignment=3), dict(alignment=0), dict(alignment=8192),
                                dict(max_packets=-1), dict(max_bytes=1 << 32)])
def test_bad_aggregation_limits_are_refused(kw: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError, match="TX aggregation"):
        TxAggregation(**kw)
