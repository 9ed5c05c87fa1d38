"""C data path, host -> guest: transfer-page packets -> frames on the tap, receive completions,
control packets left for Python, every malformed input counted with its reason (VMBUS.md §4.11,
4.13, 4.16), and no completion ever lost when the outbound ring is full."""

from __future__ import annotations

import struct

import pytest

from hvuio.errors import RingCorruptError
from hvuio.native.datapath import COUNTER_NAMES, Offloads, Status
from support.fakehost import (NVS_RNDIS_ACK, PKT_INBAND, RNDIS_INIT_CMPLT, RX_FOOTER_LEN, RX_HEADER_LEN,
                              STATUS_FAILED, STATUS_OK, TX_TAG, FakeHost, frame, full_section_packet, nvs_rndis,
                              pktinfo, rndis_packet, xfer_header)


def test_frames_byte_exact_and_completions(host: FakeHost) -> None:
    frames = [frame(60, 1), frame(1514, 2), frame(14, 3)]
    host.send_frames(frames, trans_id=0x11)
    host.send_frames([frame(1518, 4)], trans_id=0x22, first_section=5)   # 1500 + 14 + 4 (VLAN) fits
    assert host.dp.rx() is Status.IDLE
    assert host.tap_frames() == frames + [frame(1518, 4)]
    comps = host.drain()
    assert [p.trans_id for p in comps] == [0x11, 0x22]
    assert [host.comp_fields(p) for p in comps] == [(NVS_RNDIS_ACK, STATUS_OK)] * 2
    c = host.dp.counters()
    assert c["rx_packets"] == 4 and c["rx_bytes"] == 60 + 1514 + 14 + 1518
    assert c["rx_xfer"] == 2 and c["rx_comp_sent"] == 2
    assert host.rx_ring.bytes_to_read() == 0
    assert host.dp.last_drop() is None


def test_vnet_header_prepended() -> None:
    h = FakeHost(vnet_hdr=True)
    try:
        h.send_frames([frame(100)], trans_id=1)
        h.dp.rx()
        assert h.tap_frames() == [bytes(12) + frame(100)]
    finally:
        h.close()


def test_valid_pktinfo_is_skipped_and_frame_delivered(host: FakeHost) -> None:
    ppi = pktinfo(8, struct.pack("<I", 0x123)) + pktinfo(0, struct.pack("<I", 0))   # hash, checksum
    host.send_xfer([host.place(0, rndis_packet(frame(80), ppi=ppi))], trans_id=3)
    host.dp.rx()
    assert host.tap_frames() == [frame(80)]
    assert host.comp_fields(host.drain()[0]) == (NVS_RNDIS_ACK, STATUS_OK)


OPENVMM_SECTION = RX_HEADER_LEN + 1514 + RX_FOOTER_LEN  # OpenVMM's sub-allocation for a 1500-byte MTU


@pytest.mark.parametrize("rx_csum", [False, True])
def test_whole_section_ranges_deliver_exactly_the_frame(rx_csum: bool) -> None:
    """OpenVMM's receive layout: each range is the whole section, the frame at byte 256, checksum
    info 0 (not checked), stale bytes around the frame: only data_length bytes reach the tap."""
    h = FakeHost(recv_section=OPENVMM_SECTION, vnet_hdr=rx_csum, offloads=Offloads(rx_csum=rx_csum))
    try:
        frames = [frame(60, 1), frame(1514, 2), frame(14, 3)]
        ranges = [h.place(i, full_section_packet(f, OPENVMM_SECTION)) for i, f in enumerate(frames)]
        assert all(n == OPENVMM_SECTION for n, _ in ranges)
        h.send_xfer(ranges, trans_id=0)
        assert h.dp.rx() is Status.IDLE
        vnet = bytes(12) if rx_csum else b""  # "not checked" sets no DATA_VALID
        assert h.tap_frames() == [vnet + f for f in frames]
        assert [(p.trans_id, h.comp_fields(p)[1]) for p in h.drain()] == [(0, STATUS_OK)]
        c = h.dp.counters()
        assert c["rx_ranges_written"] == 3 and c["rx_range_drops"] == 0 and c["rx_csum_valid"] == 0
    finally:
        h.close()


def test_whole_section_range_with_data_past_the_message_is_dropped_and_counted() -> None:
    h = FakeHost(recv_section=OPENVMM_SECTION)
    try:
        too_long = OPENVMM_SECTION - RX_HEADER_LEN + 1  # one byte past message_length
        h.send_xfer([h.place(0, full_section_packet(frame(60), OPENVMM_SECTION, data_len=too_long))], trans_id=4)
        h.dp.rx()
        assert h.tap_frames() == []
        assert h.dp.counters()["rx_bad_rndis"] == 1 and h.dp.last_drop() == ("rndis_data_offset", 248)
        assert [(p.trans_id, h.comp_fields(p)[1]) for p in h.drain()] == [(4, STATUS_FAILED)]
    finally:
        h.close()


def test_budget_limits_the_batch(host: FakeHost) -> None:
    for i in range(5):
        host.send_frames([frame(64, i)], trans_id=100 + i, first_section=i)
    assert host.dp.rx(budget=2) is Status.BUDGET
    assert len(host.tap_frames()) == 2
    assert host.dp.rx(budget=10) is Status.IDLE
    assert len(host.tap_frames()) == 3
    assert [p.trans_id for p in host.drain()] == [100, 101, 102, 103, 104]


# ---- malformed host input: (ranges/header builder) -> counter, reason, completion status ----------

def _range_beyond(h: FakeHost) -> None:
    h.send_xfer([(64, len(h.recv) + 8)], trans_id=9)


def _range_tail_beyond(h: FakeHost) -> None:
    h.send_xfer([(h.recv_section, len(h.recv) - 16)], trans_id=9)


def _range_zero(h: FakeHost) -> None:
    h.send_xfer([(0, 0)], trans_id=9)


def _range_over_section(h: FakeHost) -> None:
    h.send_xfer([(h.recv_section + 8, 0)], trans_id=9)


def _bad_pageset(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64)))], trans_id=9, header=xfer_header([(64, 0)], pageset=0xBEEF))


def _bad_range_cnt(h: FakeHost) -> None:
    h.send_xfer([], trans_id=9, header=xfer_header([(64, 0)], range_cnt=5))


def _zero_range_cnt(h: FakeHost) -> None:
    h.send_xfer([], trans_id=9, header=xfer_header([], range_cnt=0))


def _wrong_nvs_type(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64)))], trans_id=9, nvs=nvs_rndis(nvs_type=106))


def _nvs_missing(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64)))], trans_id=9, nvs=b"")


def _msg_len_beyond_range(h: FakeHost) -> None:
    msg = rndis_packet(frame(64))
    h.send_xfer([h.place(0, rndis_packet(frame(64), msg_len=len(msg) + 8))], trans_id=9)


def _data_offset_beyond_msg(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64), data_offset=200))], trans_id=9)


def _data_offset_below_min(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64), data_offset=20))], trans_id=9)


def _data_len_runt(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(10)))], trans_id=9)


def _data_len_beyond_msg(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64), data_len=65))], trans_id=9)


def _rndis_short(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64))[:40])], trans_id=9)


def _pktinfo_misaligned(h: FakeHost) -> None:
    ppi = pktinfo(6, b"\x01\x02\x03\x04\x05", size=17)
    h.send_xfer([h.place(0, rndis_packet(frame(64), ppi=ppi))], trans_id=9)


def _pktinfo_offset_beyond(h: FakeHost) -> None:
    h.send_xfer([h.place(0, rndis_packet(frame(64), ppi=pktinfo(6, bytes(4)), ppi_offset=4000))], trans_id=9)


def _oversize(h: FakeHost) -> None:
    h.send_frames([frame(1519)], trans_id=9)


MALFORMED = [
    # name, builder, counter, (reason name, value or None), completion status (None = no completion)
    ("range beyond buffer", _range_beyond, "rx_bad_xfer", ("range", 64 * 1024 + 8), STATUS_FAILED),
    ("range tail beyond buffer", _range_tail_beyond, "rx_bad_xfer", ("range", 2048), STATUS_FAILED),
    ("byte_count 0", _range_zero, "rx_bad_xfer", ("range", 0), STATUS_FAILED),
    ("range over a section", _range_over_section, "rx_bad_xfer", ("range", 2056), STATUS_FAILED),
    ("bad pageset id", _bad_pageset, "rx_bad_xfer", ("xfer_pageset_id", 0xBEEF), None),
    ("range_cnt beyond header", _bad_range_cnt, "rx_bad_xfer", ("range_cnt", 5), None),
    ("range_cnt 0", _zero_range_cnt, "rx_bad_xfer", ("range_cnt", 0), None),
    ("wrong NVS type", _wrong_nvs_type, "rx_bad_nvs", ("nvs_type", 106), None),
    ("no NVS payload", _nvs_missing, "rx_bad_nvs", ("nvs_short", 0), None),
    ("RNDIS msg_len beyond range", _msg_len_beyond_range, "rx_bad_rndis", ("rndis_msg_len", 44 + 64 + 8), STATUS_FAILED),
    ("data_offset beyond msg", _data_offset_beyond_msg, "rx_bad_rndis", ("rndis_data_offset", 200), STATUS_FAILED),
    ("data_offset below 36", _data_offset_below_min, "rx_bad_rndis", ("rndis_data_offset", 20), STATUS_FAILED),
    ("data shorter than Ethernet", _data_len_runt, "rx_bad_rndis", ("rndis_data_len", 10), STATUS_FAILED),
    ("data_len beyond msg", _data_len_beyond_msg, "rx_bad_rndis", ("rndis_data_offset", 36), STATUS_FAILED),
    ("range shorter than header", _rndis_short, "rx_bad_rndis", ("rndis_short", 40), STATUS_FAILED),
    ("pktinfo size misaligned", _pktinfo_misaligned, "rx_bad_rndis", ("rndis_pktinfo", 17), STATUS_FAILED),
    ("pktinfo offset beyond msg", _pktinfo_offset_beyond, "rx_bad_rndis", ("rndis_pktinfo", 4000), STATUS_FAILED),
    ("frame over mtu + 18", _oversize, "rx_oversize", ("rx_oversize", 1519), STATUS_FAILED),
]


@pytest.mark.parametrize("name,build,counter,drop,status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_is_counted_and_the_next_packet_still_flows(host: FakeHost, name: str, build,  # type: ignore[no-untyped-def]
                                                               counter: str, drop: tuple[str, int],
                                                               status: int | None) -> None:
    build(host)
    good = frame(90, 7)
    host.send_xfer([host.place(9, rndis_packet(good))], trans_id=0x77)
    assert host.dp.rx() is Status.IDLE
    assert host.tap_frames() == [good]                   # the bad one never reached the tap
    c = host.dp.counters()
    assert c[counter] == 1, name
    others = {"rx_bad_xfer", "rx_bad_nvs", "rx_bad_rndis", "rx_oversize", "rx_tap_drop"} - {counter}
    assert all(c[o] == 0 for o in others), {o: c[o] for o in others}
    assert host.dp.last_drop() == drop
    comps = [(p.trans_id, host.comp_fields(p)[1]) for p in host.drain()]
    expect = ([] if status is None else [(9, status)]) + [(0x77, STATUS_OK)]
    assert comps == expect
    assert host.tx_ring.fault() is None and host.rx_ring.fault() is None


def test_drops_are_counted_per_reason(host: FakeHost) -> None:
    """Besides the last drop, how many drops each reason had: which check keeps failing."""
    assert host.dp.drop_counts() == {}
    for i, build in enumerate([_oversize, _rndis_short, _oversize, _wrong_nvs_type, _oversize]):
        build(host)
        host.dp.rx()
        host.drain()
    assert host.dp.drop_counts() == {"rx_oversize": 3, "rndis_short": 1, "nvs_type": 1}
    assert host.dp.last_drop() == ("rx_oversize", 1519)


def test_every_range_taken_is_written_or_counted_as_dropped(host: FakeHost) -> None:
    """rx_ranges = rx_ranges_written + rx_range_drops: the accounting a soak checks against the
    host's count of ranges it filled. A packet with a bad NVS type is not taken (no ranges)."""
    a, b = frame(70, 1), frame(80, 2)
    host.send_xfer([host.place(0, rndis_packet(a)), (64, len(host.recv)), host.place(2, rndis_packet(b))], trans_id=5)
    host.dp.rx()
    for build in (_oversize, _rndis_short, _wrong_nvs_type):
        build(host)
        host.dp.rx()
    host.drain()
    c = host.dp.counters()
    assert (c["rx_ranges"], c["rx_ranges_written"], c["rx_range_drops"]) == (5, 2, 3), c


def test_good_ranges_of_a_partly_bad_packet_are_delivered(host: FakeHost) -> None:
    a, b = frame(70, 1), frame(80, 2)
    ranges = [host.place(0, rndis_packet(a)), (64, len(host.recv)), host.place(2, rndis_packet(b))]
    host.send_xfer(ranges, trans_id=5)
    host.dp.rx()
    assert host.tap_frames() == [a, b]
    assert [(p.trans_id, host.comp_fields(p)[1]) for p in host.drain()] == [(5, STATUS_FAILED)]
    assert host.dp.counters()["rx_bad_xfer"] == 1


def test_tap_full_drops_are_counted_and_completed() -> None:
    h = FakeHost()
    try:
        sent = 0
        comps = []
        for i in range(2000):       # far more than an AF_UNIX datagram queue holds
            h.send_frames([frame(1000, i)], trans_id=i + 1, first_section=i % 30)
            assert h.dp.rx() is Status.IDLE
            comps += h.drain()
            sent += 1
        got = len(h.tap_frames())
        c = h.dp.counters()
        assert c["rx_tap_drop"] > 0 and c["rx_packets"] + c["rx_tap_drop"] == sent
        assert got == c["rx_packets"]
        assert h.dp.last_drop() is not None and h.dp.last_drop()[0] == "tap_write"  # type: ignore[index]
        assert [(p.trans_id, h.comp_fields(p)[1]) for p in comps][:1] == [(1, STATUS_OK)]
        assert [p.trans_id for p in comps] == list(range(1, sent + 1))
        assert sum(h.comp_fields(p)[1] == STATUS_FAILED for p in comps) == c["rx_tap_drop"]
    finally:
        h.close()


# ---- control packets are left for Python ----------------------------------------------------------

def test_inband_packet_stops_the_batch_unread(host: FakeHost) -> None:
    host.send_frames([frame(64, 1)], trans_id=1)
    host.writer.write(PKT_INBAND, struct.pack("<I", 134) + bytes(76), trans_id=0)    # indirection table
    host.send_frames([frame(64, 2)], trans_id=2, first_section=3)
    assert host.dp.rx() is Status.CONTROL
    assert host.tap_frames() == [frame(64, 1)]
    assert host.dp.rx() is Status.CONTROL                   # still there: C never consumes it
    pkt = host.dp.read_control()
    assert pkt.type == PKT_INBAND and pkt.payload[:4] == struct.pack("<I", 134)
    assert host.dp.rx() is Status.IDLE
    assert host.tap_frames() == [frame(64, 2)]
    assert [p.trans_id for p in host.drain()] == [1, 2]
    assert host.dp.counters()["rx_control"] == 2


def test_untagged_completion_is_control(host: FakeHost) -> None:
    host.complete_tx(trans_id=42)            # a control request's completion: no TX tag
    assert host.dp.rx() is Status.CONTROL
    pkt = host.dp.read_control()
    assert pkt.type == 0xB and pkt.trans_id == 42
    assert host.dp.counters()["tx_bad_comp"] == 0


def test_rndis_control_channel_type_is_control(host: FakeHost) -> None:
    host.send_xfer([host.place(0, rndis_packet(frame(64)))], trans_id=8, nvs=nvs_rndis(channel_type=1))
    assert host.dp.rx() is Status.CONTROL
    assert host.drain() == [] and host.tap_frames() == []
    assert host.dp.read_control().trans_id == 8


def test_rndis_control_message_in_a_data_packet_is_control(host: FakeHost) -> None:
    init_cmplt = struct.pack("<IIII", RNDIS_INIT_CMPLT, 52, 1, 0) + bytes(36)
    ranges = [host.place(0, rndis_packet(frame(64))), host.place(1, init_cmplt)]
    host.send_xfer(ranges, trans_id=8)
    assert host.dp.rx() is Status.CONTROL
    assert host.tap_frames() == []           # nothing of that packet went out: Python owns it whole
    pkt = host.dp.read_control()
    assert pkt.trans_id == 8 and pkt.type == 0x7


# ---- completions never lost -----------------------------------------------------------------------

def test_completions_wait_while_the_outbound_ring_is_full() -> None:
    h = FakeHost(tx_data=4096)               # room for 63 completions of 64 bytes
    try:
        n = 80
        for i in range(n):
            h.send_frames([frame(64, i)], trans_id=1000 + i, first_section=i % 30)
        assert h.dp.rx(budget=1000) is Status.IDLE
        assert len(h.tap_frames()) == n
        assert h.dp.pending_completions == n - 63
        assert h.dp.counters()["rx_comp_busy"] == n - 63
        first = h.drain()
        h.dp.rx()                            # flushes the queue first
        rest = h.drain()
        assert [p.trans_id for p in first + rest] == [1000 + i for i in range(n)]
        assert h.dp.pending_completions == 0
    finally:
        h.close()


def test_pending_queue_full_blocks_rx_without_loss() -> None:
    h = FakeHost(tx_data=4096, rx_data=256 * 1024)
    try:
        n = 400
        for i in range(n):
            h.send_frames([frame(64, i)], trans_id=i + 1, first_section=i % 30)
        assert h.dp.rx(budget=1000) is Status.BLOCKED        # 63 sent + 256 queued, then it stops
        assert h.dp.pending_completions == 256
        seen = []
        for _ in range(20):
            seen += [p.trans_id for p in h.drain()]
            h.dp.rx(budget=1000)
        seen += [p.trans_id for p in h.drain()]
        assert seen == list(range(1, n + 1))
        c = h.dp.counters()
        assert c["rx_packets"] + c["rx_tap_drop"] == n and c["rx_xfer"] == n
    finally:
        h.close()


def test_corrupt_inbound_index_raises_named_field(host: FakeHost) -> None:
    struct.pack_into("<I", host.mem, host.tx_size, 12)      # inbound write_index not 8-aligned
    with pytest.raises(RingCorruptError) as exc:
        host.dp.rx()
    assert exc.value.field == "write_index" and exc.value.value == 12


def test_counter_names_follow_ethtool() -> None:
    for name in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_busy", "tx_no_space",
                 "rx_comp_busy", "stop_queue", "wake_queue", "rx_bad_xfer", "rx_bad_rndis",
                 "rx_oversize", "rx_tap_drop", "tx_oversize"):
        assert name in COUNTER_NAMES
    assert len(set(COUNTER_NAMES)) == len(COUNTER_NAMES)


def test_tagged_ids_are_high_bit() -> None:
    assert TX_TAG == 1 << 63


def test_corrupt_outbound_ring_keeps_the_completion_and_raises(host: FakeHost) -> None:
    struct.pack_into("<I", host.mem, 4, 0x10000 + 8)       # outbound read_index beyond the data area
    host.send_frames([frame(64)], trans_id=31)
    with pytest.raises(RingCorruptError) as exc:
        host.dp.rx()
    assert exc.value.field == "read_index" and exc.value.value == 0x10008
    assert host.dp.pending_completions == 1                 # remembered, never silently dropped
    assert host.rx_ring.bytes_to_read() == 0                # the packet itself was handled once
    assert host.tap_frames() == [frame(64)]


def test_transfer_page_id_zero_is_delivered_and_completed_as_zero(host: FakeHost) -> None:
    # OpenVMM names a receive batch by its first section (netvsp lib.rs process_endpoint_rx), and
    # section 0 is a valid one: id 0 is an ordinary transfer-page id, not "no id".
    host.send_frames([frame(60, 7)], trans_id=0)
    assert host.dp.rx() is Status.IDLE
    assert host.tap_frames() == [frame(60, 7)]
    comps = host.drain()
    assert [p.trans_id for p in comps] == [0]
    assert [host.comp_fields(p) for p in comps] == [(NVS_RNDIS_ACK, STATUS_OK)]
    assert host.dp.last_drop() is None
