"""hvuio.sim.vsp.ring on its own: the host side refuses bad guest data with a logged reason naming
field and value, stays refused, and keeps its geometry honest."""

from __future__ import annotations

import logging
import struct

import pytest

from hvuio.errors import RingCorruptError
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter

HDR, D = 4096, 256
DESC = struct.Struct("<HHHHQ")


def guest_packet(mem: bytearray, *, ptype: int = 6, offset8: int = 2, len8: int = 3, flags: int = 0,
                 windex: int | None = None) -> None:
    DESC.pack_into(mem, HDR, ptype, offset8, len8, flags, 1)
    struct.pack_into("<I", mem, 0, len8 * 8 + 8 if windex is None else windex)


CASES = [
    ({"windex": D}, "write_index", D),
    ({"windex": 20}, "write_index", 20),
    ({"windex": 16}, "bytes_to_read", 16),
    ({"len8": 1, "windex": 32}, "len8", 1),
    ({"len8": 4, "windex": 32}, "len8", 4),
    ({"offset8": 1}, "offset8", 1),
    ({"offset8": 4}, "offset8", 4),
    ({"ptype": 8}, "type", 8),
    ({"flags": 0x10}, "flags", 0x10),
]


@pytest.mark.parametrize("kw,field,value", CASES)
def test_host_reader_refuses_bad_guest_data(kw: dict[str, int], field: str, value: int,
                                            caplog: pytest.LogCaptureFixture) -> None:
    mem = bytearray(HDR + D)
    guest_packet(mem, **kw)
    host = HostRingReader(mem)
    with caplog.at_level(logging.WARNING, logger="hvuio.sim.vsp.ring"):
        with pytest.raises(RingCorruptError) as info:
            host.read_batch()
    assert (info.value.field, info.value.value) == (field, value)
    assert field in caplog.text
    guest_packet(mem)  # a healthy packet does not revive the ring
    with pytest.raises(RingCorruptError):
        host.read_packet()
    assert host.read_index == 0


def test_host_reader_accepts_good_packet_and_reports_type_set() -> None:
    mem = bytearray(HDR + D)
    guest_packet(mem, ptype=9, offset8=3, len8=3)
    pkt = HostRingReader(mem).read_packet()
    assert pkt is not None and pkt.type == 9 and pkt.header == bytes(8) and pkt.payload == b""
    with pytest.raises(RingCorruptError) as info:
        HostRingReader(mem, accept=frozenset({6, 11})).read_packet()
    assert "accepted types" in str(info.value)


@pytest.mark.parametrize("rindex", [D, 4])
def test_host_writer_refuses_bad_guest_read_index(rindex: int) -> None:
    mem = bytearray(HDR + D)
    host = HostRingWriter(mem)
    struct.pack_into("<I", mem, 4, rindex)
    with pytest.raises(RingCorruptError) as info:
        host.write(6, b"x")
    assert (info.value.field, info.value.value) == ("read_index", rindex)
    assert host.write_index == 0


def test_host_writer_rejects_impossible_packets() -> None:
    host = HostRingWriter(bytearray(HDR + D))
    with pytest.raises(ValueError):
        host.write(6, bytes(D))
    with pytest.raises(ValueError):
        host.write(6, b"", header=bytes(4))
    with pytest.raises(ValueError):
        host.write_raw([bytes(8)])  # shorter than a descriptor


def test_reset_and_geometry() -> None:
    mem = bytearray(b"\xff" * (HDR + D))
    host = HostRingWriter(mem)
    host.reset()
    assert (host.write_index, host.read_index, host.interrupt_mask, host.feature_bits) == (0, 0, 0, 1)
    host.write(6, b"after reset")  # private index re-taken from the fresh header
    assert host.write_index == 40
    with pytest.raises(ValueError):
        HostRingWriter(bytearray(HDR + 12))
    with pytest.raises(ValueError):
        HostRingReader(bytearray(HDR), header_size=HDR)
