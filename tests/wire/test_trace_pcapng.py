"""hvuio.trace.pcapng: the blocks a trace is made of, read back in either byte order, and every
way a file can be not ours — empty, foreign, truncated, a block whose lengths lie, a packet on an
interface never described — is one TraceFileError sentence naming the offset."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvuio.errors import TraceFileError
from hvuio.trace.pcapng import (CONTROL_ETHERTYPE, IF_CONTROL, IF_FRAMES, INBOUND, LINKTYPE_ETHERNET, OUTBOUND,
                                control_record, enhanced_packet, file_header, is_control, parse_control,
                                read_trace)

FRAME = bytes(range(60))


def sample() -> bytes:
    return (file_header() + enhanced_packet(IF_FRAMES, 1_000_001, OUTBOUND, FRAME)
            + enhanced_packet(IF_CONTROL, 2_000_002, INBOUND, control_record(INBOUND, 7, 0xB, 9, b"\x02\0\0\0")))


def test_blocks_read_back() -> None:
    frame, ctl = list(read_trace(sample()))
    assert (frame.iface, frame.linktype, frame.ts_us, frame.direction, frame.data) == \
        (IF_FRAMES, LINKTYPE_ETHERNET, 1_000_001, OUTBOUND, FRAME)
    assert not is_control(frame) and is_control(ctl)
    c = parse_control(ctl.data)
    assert (c.direction, c.relid, c.ptype, c.trans_id, c.nvsp, c.rndis) == (INBOUND, 7, 0xB, 9, b"\x02\0\0\0", b"")
    assert struct.unpack(">H", ctl.data[12:14])[0] == CONTROL_ETHERTYPE


def _big_endian(data: bytes) -> bytes:
    """The same file written by a big-endian machine: every u32/u16 field swapped."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        body = data[pos + 8:pos + total - 4]
        if btype == 0x0A0D0D0A:
            body = struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1) + body[16:]
        elif btype == 1:
            body = struct.pack(">HHI", *struct.unpack_from("<HHI", body)) + body[8:]
        elif btype == 6:
            fields = struct.unpack_from("<5I", body)
            cap = fields[3]
            opts = body[20 + cap + (-cap % 4):]
            flags = struct.unpack_from("<HHI", opts)
            body = struct.pack(">5I", *fields) + body[20:20 + cap + (-cap % 4)] + struct.pack(">HHI", *flags) + bytes(4)
        out += struct.pack(">II", btype, total) + body + struct.pack(">I", total)
        pos += total
    return bytes(out)


def test_a_big_endian_file_reads_the_same() -> None:
    assert list(read_trace(_big_endian(sample()))) == list(read_trace(sample()))


@pytest.mark.parametrize(("data", "says"), [
    (b"", "is empty, too short"),
    (b"GIF89a" + bytes(40), "is not a pcapng file"),
    (struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x11223344, 1, 0, -1) + struct.pack("<I", 28), "unknown byte-order magic"),
    (file_header() + bytes(7), "truncated: 7 bytes at offset"),
    (file_header() + struct.pack("<II", 6, 13) + bytes(8), "with length 13 (not a multiple of 4"),
    (file_header() + struct.pack("<II", 6, 64) + bytes(8), "is truncated: the block at offset"),
    (file_header() + struct.pack("<III", 6, 12, 16), "trailing length does not match 12"),
    (file_header() + struct.pack("<II", 6, 24) + bytes(12) + struct.pack("<I", 24), "fewer than its 20-byte head"),
    (file_header() + enhanced_packet(5, 0, OUTBOUND, FRAME), "on interface 5, which no block described"),
])
def test_files_that_are_not_ours_are_one_sentence(data: bytes, says: str) -> None:
    with pytest.raises(TraceFileError) as err:
        list(read_trace(data, "t.pcapng"))
    assert says in err.value.message and err.value.hint
    assert err.value.message.startswith("t.pcapng ")


def test_captured_length_past_its_block_is_refused() -> None:
    block = bytearray(enhanced_packet(IF_FRAMES, 0, OUTBOUND, FRAME))
    struct.pack_into("<I", block, 20, 4000)
    with pytest.raises(TraceFileError, match="captured bytes run past its block"):
        list(read_trace(file_header() + bytes(block)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_any_damage_is_a_trace_error_never_another_exception(junk: bytes, cut: int) -> None:
    data = sample()
    damaged = data[:cut] + junk + data[cut + len(junk):]
    try:
        for rec in read_trace(damaged):
            if is_control(rec):
                try:
                    parse_control(rec.data)
                except ValueError:
                    pass
    except TraceFileError:
        pass


def test_time_stamps_follow_the_interfaces_resolution() -> None:
    """if_tsresol 9 (nanoseconds) and 0x8A (2^-10 s): times are read in microseconds either way."""
    def idb(resol: int) -> bytes:
        body = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0) + struct.pack("<HHB3x", 9, 1, resol) + bytes(4)
        return struct.pack("<II", 1, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    shb = file_header()[:struct.unpack_from("<I", file_header(), 4)[0]]
    data = shb + idb(9) + idb(0x8A) + enhanced_packet(0, 5_000_000_000, OUTBOUND, FRAME) \
        + enhanced_packet(1, 3 * 1024, INBOUND, FRAME)
    ns, binary = list(read_trace(data))
    assert (ns.ts_us, binary.ts_us) == (5_000_000, 3_000_000)
