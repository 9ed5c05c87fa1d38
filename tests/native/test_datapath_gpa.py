"""C data path, GPA-direct TX (tx_gpa.c, VMBUS.md §3.7): RNDIS packets that do not fit a send
section (jumbo frames, LSO packets up to the host's maximum) go out as type-9 packets naming the
pages of a slot of a pinned pool; small frames keep the send buffer; slots are freed by their
completions only (unknown or duplicate ids counted, never a double free); slot exhaustion stops
the queue and completions resume it; nothing is lost, duplicated or reordered.

The host side (tests/support/gpa_host.py) reads every page by its page number from a pool whose
page numbers are shuffled, and checks each type-9 packet field by field.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import GPA_SLOT_SIZE, GPA_TAG, TX_TAG, Offloads, Status
from support.fakehost import FakeHost, frame
from support.gpa_host import PAGE, PKT_GPA, GpaHost, frame_of, slot_pool
from support.golden import GOLDEN
from support.offload_frames import ACK, GSO_TCPV4, GSO_TCPV6, PSH, VNET_NEEDS_CSUM, Pkt, build, parse, vnet
from support.offload_tx import ALL, decode_msg

PPI_TYPE = GOLDEN["constants"]["ndis_pktinfo_type"]
BITS = GOLDEN["constants"]["ndis_ppi_bits"]
OPENVMM_LSO_MAX = 62780                     # LSO_MAX_OFFLOAD_SIZE 0xF53C (microsoft/openvmm netvsp)


def jumbo(**kw: object) -> GpaHost:
    return GpaHost(mtu=9000, **kw)  # type: ignore[arg-type]


def test_jumbo_frame_goes_gpa_direct_byte_exact() -> None:
    h = jumbo()
    try:
        f = frame(9000, 5)
        h.tap_host.send(f)
        assert h.dp.tx() is Status.IDLE
        [pkt] = h.drain()
        assert pkt.type == PKT_GPA
        slot = pkt.trans_id & ~(TX_TAG | GPA_TAG)
        # the range names exactly the slot's first pages, by their (shuffled) page numbers
        npages = -(-(44 + 9000) // PAGE)
        first = slot * (GPA_SLOT_SIZE // PAGE)
        assert list(struct.unpack_from(f"<{npages}Q", pkt.header, 16)) == list(h.pool.pfns[first:first + npages])
        [msg] = h.messages([pkt])
        assert msg.gpa and len(msg.data) == 44 + 9000
        # the RNDIS header lies in the first (only) range, data right after it
        assert struct.unpack_from("<IIII", msg.data) == (1, 44 + 9000, 36, 9000)
        assert msg.data[16:44] == bytes(28) and frame_of(msg.data) == f
        c = h.dp.counters()
        assert (c["tx_gpa"], c["tx_gpa_bytes"], c["tx_sends"], c["tx_packets"], c["tx_bytes"]) == (1, 9000, 1, 1, 9000)
        assert h.dp.gpa_slots_in_use == 1 and h.dp.sections_in_use == 0
        assert h.signals() == 1
        h.complete_tx(pkt.trans_id)
        h.dp.rx()
        assert h.dp.gpa_slots_in_use == 0 and h.dp.counters()["tx_completions"] == 1
    finally:
        h.close()


def test_largest_jumbo_frame_and_vnet_header() -> None:
    h = jumbo(vnet_hdr=True)
    try:
        f = frame(9018, 2)
        h.tap_host.send(bytes(12) + f)
        h.tap_host.send(bytes(12) + frame(9019, 3))      # one byte over mtu + 18: dropped
        assert [m.data for m in h.pump()] and h.dp.counters()["tx_oversize"] == 1
    finally:
        h.close()
    h = jumbo(vnet_hdr=True)
    try:
        h.tap_host.send(bytes(12) + f)
        [m] = h.pump()
        assert m.gpa and frame_of(m.data) == f
    finally:
        h.close()


def test_small_frames_keep_the_send_buffer_in_tap_order() -> None:
    h = jumbo()
    try:
        frames = [frame(60, 1), frame(1514, 2), frame(8000, 3), frame(6100, 4), frame(200, 5)]
        for f in frames:
            h.tap_host.send(f)
        h.dp.tx()
        pkts = h.drain()
        msgs = h.messages(pkts)
        assert [frame_of(m.data) for m in msgs] == frames
        # a message that fits a 6144-byte section (44 + 6100 = 6144) stays there
        assert [m.gpa for m in msgs] == [False, False, True, False, False]
        c = h.dp.counters()
        assert c["tx_gpa"] == 1 and c["tx_packets"] == 5 and c["tx_gpa_bytes"] == 8000
        assert h.dp.gpa_slots_in_use == 1 and h.dp.sections_in_use == 4   # copied frames gave their slot back
    finally:
        h.close()


def test_small_frames_aggregate_and_the_held_send_goes_before_a_gpa_send() -> None:
    from hvuio.native.datapath import TxAggregation

    h = jumbo(tx_aggregation=TxAggregation(max_packets=8, alignment=8))
    try:
        frames = [frame(100, 1), frame(200, 2), frame(7000, 3), frame(300, 4)]
        for f in frames:
            h.tap_host.send(f)
        h.dp.tx()
        pkts = h.drain()
        assert [p.type for p in pkts] == [0x6, PKT_GPA, 0x6]             # held section flushed first
        assert [frame_of(m.data) for m in h.messages(pkts)] == frames
    finally:
        h.close()


def test_small_frame_goes_gpa_direct_when_no_section_is_free() -> None:
    """A plain tap's frame is read into a slot; with every section in flight it is sent from there."""
    h = jumbo(send_count=1)
    try:
        h.tap_host.send(frame(100, 1))
        h.tap_host.send(frame(100, 2))
        h.dp.tx()
        msgs = h.messages(h.drain())
        assert [(frame_of(m.data), m.gpa) for m in msgs] == [(frame(100, 1), False), (frame(100, 2), True)]
    finally:
        h.close()


def test_counter_and_reason_names() -> None:
    from hvuio.native import ffi, lib
    from hvuio.native.datapath import COUNTER_NAMES

    assert {"tx_gpa", "tx_gpa_bytes", "tx_gpa_busy"} <= set(COUNTER_NAMES)
    assert ffi.string(lib.hvu_dp_reason_name(lib.HVU_DP_GPA_COMP_UNKNOWN)).decode() == "gpa_completion_id"
    assert lib.HVU_DP_GPA_COMP_UNKNOWN < lib.HVU_DP_REASON_END


def test_gpa_off_drops_oversize_frames_as_before() -> None:
    h = FakeHost(mtu=9000, send_section=6144)
    try:
        h.tap_host.send(frame(9000))
        h.tap_host.send(frame(100))
        h.dp.tx()
        [pkt] = h.drain()
        assert pkt.type == 0x6
        c = h.dp.counters()
        assert c["tx_oversize"] == 1 and c["tx_gpa"] == 0 and h.dp.gpa_slots == 0
        assert h.dp.last_drop() == ("tx_oversize", 6144 - 44 + 1)   # read up to one byte past a section
    finally:
        h.close()


def test_mtu_that_fits_a_section_never_uses_the_pool() -> None:
    h = GpaHost(mtu=1500)
    try:
        for i in range(6):
            h.tap_host.send(frame(1518, i))
        msgs = h.pump()
        assert len(msgs) == 6 and not any(m.gpa for m in msgs) and h.dp.counters()["tx_gpa"] == 0
    finally:
        h.close()


# ---- backpressure and completions ----------------------------------------------------------------


def test_slot_exhaustion_stops_the_queue_and_completions_resume_it() -> None:
    h = jumbo(slots=2)
    try:
        frames = [frame(8000, i) for i in range(5)]
        for f in frames:
            h.tap_host.send(f)
        assert h.dp.tx() is Status.BLOCKED
        pkts = h.drain()
        assert len(pkts) == 2 and h.dp.gpa_slots_in_use == 2
        c = h.dp.counters()
        assert c["tx_gpa_busy"] >= 1 and c["stop_queue"] == 1
        assert h.dp.tx() is Status.BLOCKED and h.drain() == []          # still nothing free
        got = h.messages(pkts)
        h.complete_tx(pkts[1].trans_id)                                  # out of order
        h.dp.rx()
        assert h.dp.tx() is Status.BLOCKED
        more = h.drain()
        assert len(more) == 1 and h.dp.counters()["wake_queue"] == 1
        got += h.messages(more)
        for p in [pkts[0], *more]:
            h.complete_tx(p.trans_id)
        h.dp.rx()
        got += h.pump()
        assert [frame_of(m.data) for m in got] == frames
        assert h.dp.gpa_slots_in_use == 0
    finally:
        h.close()


def test_unknown_and_duplicate_gpa_completions_are_counted_never_freed_twice() -> None:
    h = jumbo(slots=3)
    try:
        h.tap_host.send(frame(8000, 1))
        h.tap_host.send(frame(8000, 2))
        h.dp.tx()
        a, b = h.drain()
        h.complete_tx(a.trans_id)
        h.complete_tx(a.trans_id)                                        # duplicate
        h.complete_tx(TX_TAG | GPA_TAG | 2)                              # a slot never used
        h.complete_tx(TX_TAG | GPA_TAG | 63)                             # beyond the pool
        h.complete_tx(TX_TAG | GPA_TAG | (1 << 40))                      # garbage in the index bits
        h.dp.rx()
        c = h.dp.counters()
        assert c["tx_completions"] == 1 and c["tx_bad_comp"] == 4
        assert h.dp.gpa_slots_in_use == 1
        assert h.dp.drop_counts()["gpa_completion_id"] == 4
        assert h.dp.last_drop() == ("gpa_completion_id", TX_TAG | GPA_TAG | (1 << 40))
        h.complete_tx(b.trans_id, status=2)                              # FAILED still frees
        h.dp.rx()
        assert h.dp.gpa_slots_in_use == 0 and h.dp.counters()["tx_errors"] == 1
    finally:
        h.close()


def test_completion_for_the_slot_holding_an_unsent_frame_is_ignored() -> None:
    """A frame read into a slot waits there while the ring is full; a forged completion for that
    slot must not free it (the frame would be overwritten)."""
    from hvuio.native.datapath import TxAggregation

    # the smallest ring that holds one type-9 packet; aggregation keeps the first frame held, so
    # the second is read into a slot, the held send goes first and fills the ring
    h = jumbo(slots=2, tx_data=224, tx_aggregation=TxAggregation(max_packets=8))
    try:
        h.tap_host.send(frame(100, 1))
        h.tap_host.send(frame(8000, 2))
        assert h.dp.tx() is Status.BLOCKED
        first = h.drain()
        assert [p.type for p in first] == [0x6]
        assert h.dp.gpa_slots_in_use == 1 and h.dp.counters()["tx_busy"] >= 1   # frame 2 waits in its slot
        for slot in range(2):
            h.complete_tx(TX_TAG | GPA_TAG | slot)
        h.dp.rx()
        assert h.dp.gpa_slots_in_use == 1 and h.dp.counters()["tx_bad_comp"] == 2
        msgs = h.messages(first)
        h.complete_tx(first[0].trans_id)
        h.dp.rx()
        msgs += h.pump()
        assert [(frame_of(m.data), m.gpa) for m in msgs] == [(frame(100, 1), False), (frame(8000, 2), True)]
    finally:
        h.close()


def test_smallest_ring_for_gpa_direct() -> None:
    with pytest.raises(LocalProtocolError, match="cannot hold one GPA-direct packet"):
        jumbo(tx_data=216)
    h = jumbo(tx_data=224)
    try:
        frames = [frame(9000, i) for i in range(4)] + [frame(64, 9)]
        for f in frames:
            h.tap_host.send(f)
        assert [frame_of(m.data) for m in h.pump()] == frames
        assert h.dp.counters()["tx_busy"] >= 1
    finally:
        h.close()


def test_pool_checks() -> None:
    pool = slot_pool(1)
    pool.pfns[3] = 0
    with pytest.raises(LocalProtocolError, match="page 3 has page number 0x0"):
        jumbo(pool=pool)
    pool = slot_pool(1)
    pool.pfns[0] = 1 << 40
    with pytest.raises(LocalProtocolError, match="page 0"):
        jumbo(pool=pool)
    pool = slot_pool(1)
    pool.view = pool.view[:GPA_SLOT_SIZE - PAGE]
    with pytest.raises(LocalProtocolError, match="at least one"):
        jumbo(pool=pool)
    pool = slot_pool(1, extra=1)
    pool.pfns = pool.pfns[:-1]
    with pytest.raises(LocalProtocolError, match="needs 18 page numbers"):
        jumbo(pool=pool)
    h = jumbo(pool=slot_pool(100))
    try:
        assert h.dp.gpa_slots == 64                                      # capped: one bitmap word
    finally:
        h.close()


# ---- LSO ----------------------------------------------------------------------------------------------


def gso_datagram(p: Pkt, mss: int) -> bytes:
    return vnet(VNET_NEEDS_CSUM, GSO_TCPV6 if p.v6 else GSO_TCPV4, p.hdrs, mss, p.l4, 16) + p.frame


@pytest.mark.parametrize("v6", [False, True])
def test_64k_gso_frame_is_one_or_two_lso_sends(v6: bool) -> None:
    h = GpaHost(vnet_hdr=True, tap_offload=True, mtu=1500,
                offloads=Offloads(**ALL, lso4=True, lso6=True, lso_max_size=OPENVMM_LSO_MAX))
    try:
        hdrs = 14 + (40 if v6 else 20) + 20
        # the largest GSO frame a tap hands over: 64 KiB of IP packet (IPv4 total length 65535)
        payload = bytes(random.Random(7).randrange(256) for _ in range(14 + 65535 - hdrs))
        p = build(payload, v6=v6, flags=ACK | PSH, csum_mode="partial")
        assert len(p.frame) == 14 + 65535
        mss = 1500 - (hdrs - 14)                     # the MSS of a 1500-byte MTU
        h.tap_host.send(gso_datagram(p, mss))
        msgs = h.pump()
        assert 1 <= len(msgs) <= 2 and msgs[0].gpa
        stream, seq0 = b"", struct.unpack_from("!I", p.frame, p.l4 + 4)[0]
        for m in msgs:
            sent = decode_msg(m.data)
            q = parse(sent.frame)
            assert len(sent.frame) <= OPENVMM_LSO_MAX
            v = sent.ppis.pop(PPI_TYPE["NDIS_PKTINFO_TYPE_LSO"])
            assert sent.ppis == {}
            assert v & BITS["NDIS_LSO2_INFO_MSS_MASK"] == mss and v & BITS["NDIS_LSO2_INFO_ISLSO2"]
            assert bool(v & BITS["NDIS_LSO2_INFO_ISIPV6"]) == v6
            assert (struct.unpack_from("!I", q.frame, q.l4 + 4)[0] - seq0) & 0xFFFFFFFF == len(stream)
            stream += q.payload
        assert stream == p.payload
        c = h.dp.counters()
        assert c["tx_gso"] == 1 and c["tx_lso"] == len(msgs) and c["tx_gpa"] == sum(m.gpa for m in msgs)
    finally:
        h.close()


def test_lso_without_pool_stays_within_a_section() -> None:
    h = FakeHost(vnet_hdr=True, tap_offload=True, mtu=1500, send_section=6144, send_count=16,
                 offloads=Offloads(**ALL, lso4=True, lso_max_size=OPENVMM_LSO_MAX))
    try:
        p = build(bytes(60000), csum_mode="partial")
        h.tap_host.send(gso_datagram(p, 1448))
        n = 0
        for _ in range(200):
            st_ = h.dp.tx()
            pkts = h.drain()
            n += len(pkts)
            assert all(q.type == 0x6 for q in pkts)
            for q in pkts:
                h.complete_tx(q.trans_id)
            h.dp.rx()
            if st_ is Status.IDLE and not pkts:
                break
        assert n >= 60000 // 6144 and h.dp.counters()["tx_gpa"] == 0
    finally:
        h.close()


def test_jumbo_mtu_with_offload_tap_sends_whole_frames_gpa_direct() -> None:
    h = GpaHost(vnet_hdr=True, tap_offload=True, mtu=9000, offloads=Offloads(**ALL), slots=1)
    try:
        p = build(bytes(range(256)) * 34, csum_mode="partial")
        f2 = frame(9018, 4)
        h.tap_host.send(vnet(VNET_NEEDS_CSUM, 0, 0, 0, p.l4, 16) + p.frame)
        h.tap_host.send(vnet() + f2)
        h.tap_host.send(vnet() + frame(100, 5))
        msgs = h.pump()
        assert [m.gpa for m in msgs] == [True, True, False]
        first = decode_msg(msgs[0].data)
        assert first.ppis == {PPI_TYPE["NDIS_PKTINFO_TYPE_CSUM"]: 1 | 4 | (p.l4 << 16)}
        assert first.frame == p.frame and frame_of(msgs[1].data) == f2
        assert h.dp.counters()["tx_gpa_busy"] >= 1                       # one slot: the second waited
    finally:
        h.close()


# ---- property: nothing lost, duplicated or reordered --------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.one_of(st.integers(14, 200), st.integers(200, 6100), st.integers(6101, 9018)),
                      min_size=1, max_size=40),
       slots=st.integers(1, 3), send_count=st.integers(1, 4), tx_data=st.sampled_from([224, 512, 4096, 65536]),
       agg=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_mix_is_delivered_in_order(sizes: list[int], slots: int, send_count: int, tx_data: int,
                                          agg: bool, seed: int) -> None:
    from hvuio.native.datapath import TxAggregation

    rnd = random.Random(seed)
    h = jumbo(slots=slots, send_count=send_count, tx_data=tx_data,
              tx_aggregation=TxAggregation(max_packets=4, alignment=8) if agg else None)
    try:
        frames = [frame(n, i) for i, n in enumerate(sizes)]
        written, got, outstanding = 0, [], []
        for _ in range(5000):
            while written < len(frames) and rnd.random() < 0.7:
                try:
                    h.tap_host.send(frames[written])
                except BlockingIOError:
                    break
                written += 1
            h.dp.tx(rnd.randint(1, 8))
            pkts = h.drain()
            got += h.messages(pkts)
            outstanding += [p.trans_id for p in pkts]
            rnd.shuffle(outstanding)
            for _ in range(rnd.randint(0, len(outstanding))):
                h.complete_tx(outstanding.pop())
            h.dp.rx()
            if written == len(frames) and len(got) == len(frames):
                break
        assert [frame_of(m.data) for m in got] == frames
        # a message larger than a section went GPA-direct (a smaller one may, when no section was free)
        assert all(m.gpa for m in got if 44 + len(frame_of(m.data)) > 6144)
        for t in outstanding:
            h.complete_tx(t)
        h.dp.rx()
        assert h.dp.gpa_slots_in_use == 0 and h.dp.sections_in_use == 0
        c = h.dp.counters()
        assert c["tx_packets"] == len(frames) and c["tx_bad_comp"] == 0 and c["tx_oversize"] == 0
        assert c["tx_gpa"] == sum(m.gpa for m in got)
    finally:
        h.close()


# ---- the C checks of the pool, behind the Python ones --------------------------------------------


def test_init_refuses_bad_pools_in_c() -> None:
    """hvu_dp_init checks the pool itself (a caller other than DataPath gets no Python checks)."""
    import errno

    from hvuio.native import ffi, lib

    h = jumbo()
    try:
        pool = slot_pool(2)
        buf = ffi.from_buffer(pool.view, require_writable=True)
        pfns = ffi.new("uint64_t[]", list(pool.pfns))
        send = ffi.from_buffer(h.send, require_writable=True)
        recv = ffi.from_buffer(h.recv)
        scratch = ffi.new("uint8_t[]", 65536)

        def init(**over: object) -> int:
            cfg = ffi.new("struct hvu_dp_config *")
            cfg.tx_ring, cfg.rx_ring = h.tx_ring.cptr, h.rx_ring.cptr
            cfg.recv_buf, cfg.recv_buf_size, cfg.recv_section_size = recv, len(h.recv), h.recv_section
            cfg.send_buf, cfg.send_buf_size = send, len(h.send)
            cfg.send_section_size, cfg.send_section_count = h.send_section, len(h.send) // h.send_section
            cfg.pkt_buf, cfg.pkt_buf_size, cfg.range_buf, cfg.range_buf_size = scratch, 65536, scratch, 65536
            cfg.tap_fd, cfg.irq_fd, cfg.mtu = h.tap_guest.fileno(), h.irq_guest.fileno(), 9000
            cfg.gpa_buf, cfg.gpa_buf_size, cfg.gpa_pfns, cfg.gpa_slot_size = buf, len(pool.mem), pfns, GPA_SLOT_SIZE
            for k, v in over.items():
                setattr(cfg, k, v)
            dp = ffi.new("uint64_t[]", (lib.hvu_dp_sizeof() + 7) // 8)
            return int(lib.hvu_dp_init(ffi.cast("struct hvu_dp *", dp), cfg))

        assert init() == 0
        assert init(gpa_slot_size=0, gpa_buf=ffi.NULL, gpa_pfns=ffi.NULL) == 0       # off: the rest ignored
        einval = -errno.EINVAL
        assert init(gpa_pfns=ffi.NULL) == einval
        assert init(gpa_buf=ffi.NULL) == einval
        assert init(gpa_slot_size=GPA_SLOT_SIZE + 1) == einval                        # not whole pages
        assert init(gpa_slot_size=16 * PAGE) == einval                                # 64 KiB: no room for a GSO frame
        assert init(gpa_slot_size=33 * PAGE, gpa_buf_size=66 * PAGE) == einval        # more pages than a range may list
        assert init(gpa_buf_size=GPA_SLOT_SIZE - PAGE) == einval                      # not even one slot
        assert init(gpa_buf_size=len(pool.mem) - 1) == einval
        for bad in (0, 1 << 40):
            pfns[20] = bad
            assert init() == einval
        pfns[20] = (1 << 40) - 1
        assert init() == 0
    finally:
        h.close()
