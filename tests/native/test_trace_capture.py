"""The C trace writer (_native/trace.c) and the data path's capture hooks: frames read from the
tap and written to it land in the trace with their direction, the vnet header left out; the cap
is never passed and what it kept out is counted; with no trace set nothing is written."""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Iterator

import pytest

from hvuio.native import ffi, lib
from hvuio.native.datapath import Status
from hvuio.native.trace import BLOCK_OVERHEAD, IF_CONTROL, IF_FRAMES, INBOUND, OUTBOUND, TraceSink
from hvuio.trace.pcapng import Record, file_header, read_trace
from hvuio.trace.writer import Trace
from support.fakehost import FakeHost, frame, rndis_packet


@pytest.fixture
def trace(tmp_path: pathlib.Path) -> Iterator[Trace]:
    t = Trace(tmp_path / "t.pcapng")
    yield t
    t.close()


def _records(t: Trace) -> list[Record]:
    return list(read_trace(t.path.read_bytes()))


def test_frames_both_ways_are_recorded_with_their_direction(trace: Trace) -> None:
    h = FakeHost()
    try:
        h.dp.set_trace(trace.sink)
        out_frames = [frame(60, 1), frame(1514, 2)]
        for f in out_frames:
            h.tap_host.send(f)
        assert h.dp.tx() is Status.IDLE
        in_frames = [frame(98, 3), frame(700, 4)]
        h.send_frames(in_frames, trans_id=7)
        h.dp.rx()
        assert h.tap_frames() == in_frames
    finally:
        h.close()
    recs = _records(trace)
    assert [(r.iface, r.direction, r.data) for r in recs] == (
        [(IF_FRAMES, OUTBOUND, f) for f in out_frames] + [(IF_FRAMES, INBOUND, f) for f in in_frames])
    c = trace.counters()
    assert c["trace_frames"] == 4 and c["trace_frames_capped"] == c["trace_write_errors"] == 0
    assert c["trace_bytes"] == trace.path.stat().st_size


def test_the_vnet_header_is_not_part_of_the_recorded_frame(trace: Trace) -> None:
    h = FakeHost(vnet_hdr=True)
    try:
        h.dp.set_trace(trace.sink)
        h.tap_host.send(bytes(12) + frame(100, 5))
        h.dp.tx()
        h.send_frames([frame(120, 6)], trans_id=1)
        h.dp.rx()
        written = h.tap_frames()
    finally:
        h.close()
    assert written[0][12:] == frame(120, 6)  # the tap got the vnet header, the trace the frame only
    assert [r.data for r in _records(trace)] == [frame(100, 5), frame(120, 6)]


def test_tagged_frames_are_recorded_as_the_tap_sees_them(trace: Trace) -> None:
    # 802.1Q out of band: the tag travels as per-packet info on VMBus; the trace shows it in the
    # frame both ways, as written to and read from the tap.
    tci = 3 << 13 | 42
    info = 3 | 42 << 4  # NDIS_NET_BUFFER_LIST_8021Q_INFO: priority bits 0-2, VLAN id from bit 4
    ppi = struct.pack("<III", 16, 6, 12) + struct.pack("<I", info)  # type 6: IEEE 802.1Q info
    out_f, in_f = frame(100, 7), frame(140, 8)
    out_tagged = out_f[:12] + struct.pack("!HH", 0x8100, tci) + out_f[12:]
    in_tagged = in_f[:12] + struct.pack("!HH", 0x8100, tci) + in_f[12:]
    h = FakeHost()
    try:
        h.dp.set_trace(trace.sink)
        h.tap_host.send(out_tagged)
        h.dp.tx()
        h.send_xfer([h.place(0, rndis_packet(in_f, ppi=ppi))], trans_id=2)
        h.dp.rx()
        assert h.tap_frames() == [in_tagged]
    finally:
        h.close()
    assert [(r.direction, r.data) for r in _records(trace)] == [(OUTBOUND, out_tagged), (INBOUND, in_tagged)]


def test_the_cap_is_never_passed_and_what_it_kept_out_is_counted(tmp_path: pathlib.Path) -> None:
    cap = len(file_header()) + 3 * (BLOCK_OVERHEAD + 100)
    t = Trace(tmp_path / "capped.pcapng", max_bytes=cap)
    h = FakeHost()
    try:
        h.dp.set_trace(t.sink)
        for i in range(5):
            h.tap_host.send(frame(100, i))
        h.dp.tx()
        t.control(INBOUND, 1, 6, 1, bytes(40))
    finally:
        h.close()
        t.close()
    c = t.counters()
    assert (c["trace_frames"], c["trace_frames_capped"], c["trace_control_capped"]) == (3, 2, 1)
    assert t.path.stat().st_size == c["trace_bytes"] <= cap
    assert [r.data for r in read_trace(t.path.read_bytes())] == [frame(100, i) for i in range(3)]


def test_nothing_is_written_when_no_trace_is_set(trace: Trace) -> None:
    h = FakeHost()
    try:
        h.dp.set_trace(trace.sink)
        h.dp.set_trace(None)
        h.tap_host.send(frame(60))
        h.dp.tx()
        h.send_frames([frame(60)], trans_id=1)
        h.dp.rx()
        assert len(h.tap_frames()) == 1
    finally:
        h.close()
    assert trace.path.read_bytes() == file_header()
    assert trace.counters()["trace_frames"] == 0


def test_writer_refuses_bad_arguments_and_counts_failed_writes(tmp_path: pathlib.Path) -> None:
    mem = ffi.new("uint64_t[]", (lib.hvu_trace_sizeof() + 7) // 8)
    t = ffi.cast("struct hvu_trace *", mem)
    assert lib.hvu_trace_init(t, -1, 1000, 0) < 0
    assert lib.hvu_trace_init(t, 0, 10, 20) < 0  # more used than the cap
    r, w = os.pipe()
    os.close(w)
    sink = TraceSink(r, 1 << 20, 0)  # a read-only fd: every write fails
    try:
        assert sink.write(IF_CONTROL, OUTBOUND, b"x") is False
        assert lib.hvu_trace_block(sink.cptr, 2, OUTBOUND, b"x", 1) < 0  # no such interface
        assert lib.hvu_trace_block(sink.cptr, IF_FRAMES, OUTBOUND, bytes(lib.HVU_TRACE_MAX_DATA + 1),
                                   lib.HVU_TRACE_MAX_DATA + 1) < 0
        c = sink.counters()
        assert c["trace_write_errors"] == 2 and c["trace_control"] == c["trace_bytes"] == 0
    finally:
        os.close(r)
