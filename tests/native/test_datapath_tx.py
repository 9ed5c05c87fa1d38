"""C data path, guest -> host: tap frames -> RNDIS packet messages in send sections -> NVS 107
in the outbound ring; completions free sections; section exhaustion and ring-full backpressure
recover without loss; unknown/duplicate completions never double-free; signalling (VMBUS.md §3.11/3.12)."""

from __future__ import annotations

import struct

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import Status
from hvuio.sim.vsp.ring import RingPacket
from support.fakehost import NVS_RNDIS, PKT_INBAND, STATUS_FAILED, TX_TAG, FakeHost, frame


def sent_frame(h: FakeHost, pkt: RingPacket, *, hdr: int = 44) -> bytes:
    """Checks one NVS 107 message and its section (RNDIS header + frame); returns the frame."""
    assert pkt.type == PKT_INBAND and pkt.flags == 1 and pkt.header == b""
    assert pkt.trans_id & TX_TAG
    nvs_type, chan, idx, size = struct.unpack_from("<IIII", pkt.payload)
    assert (nvs_type, chan) == (NVS_RNDIS, 0) and len(pkt.payload) == 40 and pkt.payload[16:] == bytes(24)
    assert idx == pkt.trans_id & ~TX_TAG
    msg = h.section_bytes(idx, size)
    mtype, msg_len, doff, dlen = struct.unpack_from("<IIII", msg)
    assert (mtype, msg_len, doff, dlen) == (1, size, hdr - 8, size - hdr)
    assert msg[16:28] == bytes(12) and msg[36:44] == bytes(8)
    return msg[hdr:size]


def test_frames_become_nvs_messages_byte_exact(host: FakeHost) -> None:
    frames = [frame(60, 1), frame(1514, 2), frame(1518, 3)]
    for f in frames:
        host.tap_host.send(f)
    assert host.dp.tx() is Status.IDLE
    pkts = host.drain()
    assert [sent_frame(host, p) for p in pkts] == frames
    assert len({p.trans_id for p in pkts}) == 3
    assert host.dp.sections_in_use == 3
    c = host.dp.counters()
    assert c["tx_packets"] == 3 and c["tx_bytes"] == 60 + 1514 + 1518
    assert host.signals() == 1 and c["signals"] == 1           # one signal for the batch
    for p in pkts:
        host.complete_tx(p.trans_id)
    host.dp.rx()
    assert host.dp.sections_in_use == 0 and host.dp.counters()["tx_completions"] == 3


def test_vnet_header_is_stripped() -> None:
    h = FakeHost(vnet_hdr=True)
    try:
        h.tap_host.send(b"\x01" + bytes(11) + frame(100))
        h.dp.tx()
        assert [sent_frame(h, p) for p in h.drain()] == [frame(100)]
    finally:
        h.close()


def test_hash_pktinfo_option() -> None:
    h = FakeHost(tx_hash_value=3)
    try:
        h.tap_host.send(frame(100))
        h.dp.tx()
        (pkt,) = h.drain()
        assert sent_frame(h, pkt, hdr=60) == frame(100)
        idx = pkt.trans_id & ~TX_TAG
        msg = h.section_bytes(idx, 60)
        assert struct.unpack_from("<II", msg, 28) == (36, 16)                 # pktinfo offset, length
        assert struct.unpack_from("<IIII", msg, 44) == (16, 8, 12, 3)        # size, HASHVAL, offset, value
    finally:
        h.close()


def test_section_exhaustion_backpressure_and_recovery() -> None:
    h = FakeHost(send_count=4)
    try:
        frames = [frame(200, i) for i in range(6)]
        for f in frames:
            h.tap_host.send(f)
        assert h.dp.tx() is Status.BLOCKED
        first = h.drain()
        assert len(first) == 4 and h.dp.sections_in_use == 4
        c = h.dp.counters()
        assert c["tx_no_space"] >= 1 and c["stop_queue"] == 1 and c["wake_queue"] == 0
        got = [sent_frame(h, p) for p in first]
        for p in first[:2]:
            h.complete_tx(p.trans_id)
        h.dp.rx()
        assert h.dp.sections_in_use == 2
        assert h.dp.tx() is Status.BLOCKED         # the two frames took the two freed sections
        second = h.drain()
        got += [sent_frame(h, p) for p in second]
        assert got == frames                      # nothing lost, order kept
        c = h.dp.counters()
        assert c["wake_queue"] == 1 and c["stop_queue"] == 2 and h.dp.sections_in_use == 4
    finally:
        h.close()


def test_ring_full_backpressure_sets_pending_send_sz_and_recovers() -> None:
    h = FakeHost(tx_data=4096, send_count=200, send_section=256)
    try:
        frames = [frame(100, i) for i in range(90)]
        for f in frames:
            h.tap_host.send(f)
        assert h.dp.tx(budget=1000) is Status.BLOCKED
        c = h.dp.counters()
        assert c["tx_busy"] >= 1 and c["stop_queue"] == 1
        assert h.tx_ring.pending_send_sz == 1024            # a quarter of the 4096-byte data area
        got = [sent_frame(h, p) for p in h.drain()]
        assert 0 < len(got) < 90
        assert h.dp.tx(budget=1000) is Status.IDLE
        got += [sent_frame(h, p) for p in h.drain()]
        assert got == frames
        assert h.tx_ring.pending_send_sz == 0 and h.dp.counters()["wake_queue"] == 1
    finally:
        h.close()


def test_unknown_and_duplicate_completions_never_double_free(host: FakeHost) -> None:
    host.tap_host.send(frame(80))
    host.dp.tx()
    (pkt,) = host.drain()
    host.complete_tx(pkt.trans_id)
    host.complete_tx(pkt.trans_id)                 # duplicate
    host.complete_tx(TX_TAG | 99)                  # beyond the 8 sections
    host.complete_tx(TX_TAG | 5)                   # a section never used
    assert host.dp.rx() is Status.IDLE
    c = host.dp.counters()
    assert c["tx_completions"] == 1 and c["tx_bad_comp"] == 3
    assert host.dp.last_drop() == ("completion_id", TX_TAG | 5)
    assert host.dp.sections_in_use == 0
    for i in range(8):                             # every section still usable exactly once
        host.tap_host.send(frame(64, i))
    host.tap_host.send(frame(64, 8))
    assert host.dp.tx() is Status.BLOCKED
    assert sorted(p.trans_id & ~TX_TAG for p in host.drain()) == list(range(8))


def test_failed_or_odd_completions_free_and_count(host: FakeHost) -> None:
    for i in range(2):
        host.tap_host.send(frame(80, i))
    host.dp.tx()
    a, b = host.drain()
    host.complete_tx(a.trans_id, status=STATUS_FAILED)
    host.complete_tx(b.trans_id, nvs_type=107)
    host.dp.rx()
    c = host.dp.counters()
    assert c["tx_completions"] == 2 and c["tx_errors"] == 2 and host.dp.sections_in_use == 0
    assert host.dp.last_drop() == ("nvs_type", 107)


def test_oversize_and_runt_frames_are_dropped_and_counted() -> None:
    h = FakeHost(send_section=512)
    try:
        h.tap_host.send(frame(512 - 44 + 1))      # one byte too big for the section
        h.tap_host.send(frame(10))
        h.tap_host.send(frame(512 - 44, 5))       # exactly fits
        assert h.dp.tx() is Status.IDLE
        assert [sent_frame(h, p) for p in h.drain()] == [frame(512 - 44, 5)]
        c = h.dp.counters()
        assert c["tx_oversize"] == 1 and c["tx_runt"] == 1 and c["tx_packets"] == 1
        assert h.dp.sections_in_use == 1
    finally:
        h.close()


def test_frame_over_mtu_is_oversize(host: FakeHost) -> None:
    host.tap_host.send(frame(1519))
    host.dp.tx()
    assert host.drain() == [] and host.dp.last_drop() == ("tx_oversize", 1519)


def test_monitored_channel_signals_through_the_monitor_page() -> None:
    h = FakeHost(monitor_id=37)
    try:
        h.monitor[16:20] = struct.pack("<I", 0x80000001)    # other channels' bits stay set
        h.tap_host.send(frame(64))
        h.dp.tx()
        assert struct.unpack_from("<I", h.monitor, 16)[0] == 0x80000001 | 1 << 5   # group 1, bit 5
        assert h.monitor[:16] == bytes(16) and h.monitor[20:] == bytes(4096 - 20)
        assert h.signals() == 0
    finally:
        h.close()


def test_no_signal_while_host_masks_outbound(host: FakeHost) -> None:
    host.reader.begin_drain()                       # host sets the outbound interrupt_mask
    host.tap_host.send(frame(64))
    host.dp.tx()
    assert host.signals() == 0 and host.dp.counters()["signals"] == 0


def test_send_control_refuses_tagged_ids(host: FakeHost) -> None:
    with pytest.raises(LocalProtocolError):
        host.dp.send_control(b"x" * 40, trans_id=TX_TAG | 1)
    host.dp.send_control(struct.pack("<I", 1) + bytes(36), trans_id=7)
    (pkt,) = host.drain()
    assert pkt.trans_id == 7 and pkt.flags == 1
