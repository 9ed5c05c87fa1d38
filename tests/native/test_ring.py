"""C ring core through hvuio.native.ring: round trips, exact full/empty edges, every hostile header
(VMBUS.md §4 items 1-10, 17) -> RingCorruptError naming the field, sticky refusal, counters."""

from __future__ import annotations

import struct

import pytest

from hvuio import native
from hvuio.errors import LocalProtocolError, RingCorruptError
from hvuio.native.ring import COUNTER_NAMES, Direction, Ring
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter

HDR = 4096
D = 256
DESC = struct.Struct("<HHHHQ")


def new_mem(data: int = D, header: int = HDR) -> bytearray:
    return bytearray(header + data)


def put_u32(mem: bytearray, off: int, value: int) -> None:
    struct.pack_into("<I", mem, off, value)


def raw_packet(mem: bytearray, at: int, ptype: int = 6, offset8: int = 2, len8: int = 3,
               flags: int = 0, trans_id: int = 7, header: int = HDR) -> None:
    """Writes a descriptor into the data area (no wrap) and publishes write_index past it."""
    DESC.pack_into(mem, header + at, ptype, offset8, len8, flags, trans_id)
    put_u32(mem, 0, at + len8 * 8 + 8)


def packet_then_windex(mem: bytearray, windex: int, **desc: int) -> None:
    """A descriptor at 0, then write_index forced to `windex` (for readable-length cases)."""
    raw_packet(mem, 0, **desc)
    put_u32(mem, 0, windex)


def test_send_read_round_trip_fields() -> None:
    mem = new_mem()
    tx, rx = Ring(mem, direction=Direction.TX), Ring(mem, direction=Direction.RX)
    assert tx.send(6, b"abc", flags=1, trans_id=0x1122334455667788) is True  # empty -> non-empty
    assert tx.send(11, [b"x" * 5, b"yz"], trans_id=2) is False  # ring was not empty
    assert tx.send(7, b"pp", header=bytes(range(8))) is False
    assert rx.bytes_to_read() == 32 + 32 + 40
    packets, sig = rx.read_batch()
    assert [(p.type, p.flags, p.trans_id) for p in packets] == [(6, 1, 0x1122334455667788), (11, 0, 2), (7, 0, 0)]
    assert packets[0].payload == b"abc" + bytes(5) and packets[0].header == b""
    assert packets[1].payload == b"xxxxxyz" + bytes(1)
    assert packets[2].header == bytes(range(8)) and packets[2].payload == b"pp" + bytes(6)
    assert sig is False
    assert rx.read_index == tx.write_index == 104 and rx.bytes_to_read() == 0


def test_trailer_and_padding_on_the_wire() -> None:
    mem = new_mem()
    Ring(mem, direction=Direction.TX).send(6, b"12345", trans_id=9)
    Ring(mem, direction=Direction.TX).send(6, b"", trans_id=10)  # private index from header: 32
    data = mem[HDR:]
    assert DESC.unpack_from(data, 0) == (6, 2, 3, 0, 9)
    assert data[16:24] == b"12345\0\0\0"
    assert struct.unpack_from("<Q", data, 24)[0] == 0  # old write_index 0 << 32
    assert DESC.unpack_from(data, 32) == (6, 2, 2, 0, 10)
    assert struct.unpack_from("<Q", data, 48)[0] == 32 << 32


def test_exact_full_boundary() -> None:
    """free == total is refused, free == total + 8 accepted (VMBUS.md §3.8 step 2)."""
    mem = new_mem()
    tx = Ring(mem, direction=Direction.TX)
    tx.send(6, b"")  # 24 bytes used, free 232
    assert tx.bytes_free() == 232
    with pytest.raises(BlockingIOError):
        tx.send(6, bytes(208))  # 16 + 208 = 224 + trailer 8 = 232 == free
    assert tx.counters()["ring_full"] == 1
    tx.send(6, bytes(200))  # 224 total: free 232 = total + 8
    assert tx.bytes_free() == 8
    with pytest.raises(BlockingIOError):
        tx.send(6, b"")


def test_host_writer_same_boundary() -> None:
    mem = new_mem()
    host = HostRingWriter(mem)
    host.write(6, b"")
    with pytest.raises(BlockingIOError):
        host.write(6, bytes(208))
    host.write(6, bytes(200))
    assert host.bytes_free() == 8
    rx = Ring(mem, direction=Direction.RX)
    assert [len(p.payload) for p in rx.read_batch().packets] == [0, 200]


def test_never_fits_is_local_error() -> None:
    tx = Ring(new_mem(), direction=Direction.TX)
    with pytest.raises(LocalProtocolError, match="never fit"):
        tx.send(6, bytes(D - 24))  # total = D, would need free > D
    assert tx.counters()["tx_too_big"] == 1
    tx.send(6, bytes(D - 32))  # total = D - 8 is the maximum (VMBUS.md §3.8)


def test_empty_ring_reads_nothing() -> None:
    rx = Ring(new_mem(), direction=Direction.RX)
    assert rx.read_batch() == ([], False)
    assert rx.counters()["ring_empty"] == 1


def test_wrong_direction_is_local_error() -> None:
    mem = new_mem()
    with pytest.raises(LocalProtocolError, match="RX ring"):
        Ring(mem, direction=Direction.RX).send(6, b"")
    with pytest.raises(LocalProtocolError, match="TX ring"):
        Ring(mem, direction=Direction.TX).read_batch()


@pytest.mark.parametrize("header,data", [(4096, 100), (100, 4096), (4096, 32), (4096 * 2 + 8, 256)])
def test_attach_rejects_bad_geometry(header: int, data: int) -> None:
    with pytest.raises(LocalProtocolError, match="cannot attach"):
        Ring(bytearray(header + data), direction=Direction.TX, header_size=header)


def test_attach_rejects_buffer_overrun() -> None:
    with pytest.raises(LocalProtocolError, match="does not fit"):
        Ring(bytearray(8192), direction=Direction.TX, offset=4096, size=8192)


def test_data_offset_follows_header_size() -> None:
    """64 KiB pages: the data area starts at 65536, not 4096 (VMBUS.md §1.4 item 13)."""
    header = 65536
    mem = bytearray(header + 1024)
    tx = Ring(mem, direction=Direction.TX, header_size=header)
    tx.send(6, b"payload!", trans_id=3)
    assert mem[4096:header] == bytes(header - 4096)  # nothing written into the header page
    assert DESC.unpack_from(mem, header) == (6, 2, 3, 0, 3)
    host = HostRingReader(mem, header_size=header)
    assert host.read_batch()[0][0].payload == b"payload!"
    HostRingWriter(mem, header_size=header).write(11, b"done", trans_id=3)
    # a second ring at an offset inside one buffer, like map 0 = TX ring then RX ring
    both = bytearray(2 * (header + 1024))
    HostRingWriter(both, offset=header + 1024, header_size=header).write(6, b"rx", trans_id=1)
    rx = Ring(both, direction=Direction.RX, offset=header + 1024, size=header + 1024, header_size=header)
    assert rx.read_batch().packets[0].payload == b"rx" + bytes(6)


# ---- hostile host data (VMBUS.md §4) -------------------------------------------------------------------

def rx_ring(mem: bytearray, **kw: object) -> Ring:
    return Ring(mem, direction=Direction.RX, **kw)  # type: ignore[arg-type]


CORRUPT_RX = [
    # (description, setup(mem), field, value)
    ("write_index beyond data", lambda m: put_u32(m, 0, D), "write_index", D),
    ("write_index far beyond", lambda m: put_u32(m, 0, 0xFFFFFFF8), "write_index", 0xFFFFFFF8),
    ("write_index unaligned", lambda m: put_u32(m, 0, 12), "write_index", 12),
    ("8 readable bytes", lambda m: put_u32(m, 0, 8), "bytes_to_read", 8),
    ("16 readable bytes, no trailer room", lambda m: put_u32(m, 0, 16), "bytes_to_read", 16),
    ("len8 below descriptor", lambda m: packet_then_windex(m, 32, len8=1), "len8", 1),
    ("len8 zero", lambda m: packet_then_windex(m, 32, len8=0), "len8", 0),
    ("len8 past readable", lambda m: packet_then_windex(m, 24, len8=3), "len8", 3),
    ("len8 huge", lambda m: packet_then_windex(m, 32, len8=0xFFFF), "len8", 0xFFFF),
    ("offset8 below descriptor", lambda m: raw_packet(m, 0, offset8=1), "offset8", 1),
    ("offset8 zero", lambda m: raw_packet(m, 0, offset8=0), "offset8", 0),
    ("offset8 past len8", lambda m: raw_packet(m, 0, offset8=4, len8=3), "offset8", 4),
    ("type 0 invalid", lambda m: raw_packet(m, 0, ptype=0), "type", 0),
    ("type 5 teardown gpadl", lambda m: raw_packet(m, 0, ptype=5), "type", 5),
    ("type beyond 31", lambda m: raw_packet(m, 0, ptype=0x8006), "type", 0x8006),
    ("flag bit 1", lambda m: raw_packet(m, 0, flags=2), "flags", 2),
    ("flag bit 15", lambda m: raw_packet(m, 0, flags=0x8001), "flags", 0x8001),
]


@pytest.mark.parametrize("name,setup,field,value", CORRUPT_RX, ids=[c[0] for c in CORRUPT_RX])
def test_corrupt_inbound_raises_named_field(name: str, setup, field: str, value: int) -> None:  # type: ignore[no-untyped-def]
    mem = new_mem()
    rx = rx_ring(mem)
    setup(mem)
    with pytest.raises(RingCorruptError) as info:
        rx.read_batch()
    assert info.value.field == field and info.value.value == value
    assert field in str(info.value) and f"{value:#x}" in str(info.value)
    assert rx.counters()["ring_corrupt"] == 1
    assert rx.read_index == 0  # nothing consumed, nothing published
    # sticky: even with a healthy header the ring refuses until re-attached
    mem[:] = bytes(len(mem))
    HostRingWriter(mem).write(6, b"fine")
    with pytest.raises(RingCorruptError):
        rx.read_batch()
    assert rx.counters()["ring_refused"] == 1
    assert rx.fault() is not None
    assert rx_ring(mem).read_batch().packets[0].payload == b"fine" + bytes(4)


def test_accepted_types_are_a_parameter() -> None:
    mem = new_mem()
    HostRingWriter(mem).write(9, b"")
    with pytest.raises(RingCorruptError) as info:
        rx_ring(mem, accept_types=(6, 7, 11)).read_batch()
    assert info.value.field == "type" and info.value.value == 9
    assert rx_ring(mem, accept_types=(9,)).read_batch().packets[0].type == 9


def test_packet_larger_than_buffer_is_too_big() -> None:
    mem = new_mem()
    HostRingWriter(mem).write(6, bytes(64))  # len 80
    with pytest.raises(RingCorruptError) as info:
        rx_ring(mem, max_packet=72).read_batch()
    assert info.value.field == "len8*8" and info.value.value == 80
    assert len(rx_ring(mem, max_packet=80).read_batch().packets) == 1


def test_good_packets_before_corruption_are_delivered_then_refused() -> None:
    mem = new_mem()
    HostRingWriter(mem).write(6, b"good")
    raw_packet(mem, 32, flags=4)
    rx = rx_ring(mem)
    batch = rx.read_batch()
    assert [p.payload for p in batch.packets] == [b"good" + bytes(4)]
    assert rx.read_index == 32  # the good one is published
    with pytest.raises(RingCorruptError) as info:
        rx.read_batch()
    assert info.value.field == "flags"


@pytest.mark.parametrize("value", [D, D + 8, 4, 0xFFFFFFFF])
def test_corrupt_outbound_read_index(value: int) -> None:
    mem = new_mem()
    tx = Ring(mem, direction=Direction.TX)
    put_u32(mem, 4, value)
    with pytest.raises(RingCorruptError) as info:
        tx.send(6, b"x")
    assert (info.value.field, info.value.value) == ("read_index", value)
    assert tx.write_index == 0  # nothing published
    with pytest.raises(RingCorruptError):
        tx.bytes_free()


def test_attach_refuses_bad_own_index() -> None:
    mem = new_mem()
    put_u32(mem, 4, 13)
    with pytest.raises(RingCorruptError) as info:
        rx_ring(mem)
    assert info.value.field == "read_index"


def test_copy_gets_validated_len_and_payload_split_at_wrap() -> None:
    """A packet that wraps the data area is reassembled byte-exactly (single mapping)."""
    mem = new_mem()
    tx, rx = Ring(mem, direction=Direction.TX), rx_ring(mem)
    tx.send(6, bytes(200))  # 224 + 8
    rx.read_batch()
    payload = bytes(range(100))
    tx.send(6, payload, trans_id=77)  # starts at 232, wraps
    assert tx.write_index < 232
    pkt = rx.read_batch().packets[0]
    assert pkt.payload[:100] == payload and pkt.trans_id == 77
    host = HostRingReader(new_mem())
    assert host.read_batch() == ([], False)


def test_counters_names_and_values() -> None:
    mem = new_mem()
    tx, rx = Ring(mem, direction=Direction.TX), rx_ring(mem)
    tx.send(6, b"a")
    tx.send(6, b"b")
    rx.read_batch()
    c = tx.counters()
    assert list(c) == list(COUNTER_NAMES)
    assert (c["tx_packets"], c["tx_bytes"], c["ring_signals"]) == (2, 64, 1)
    r = rx.counters()
    assert (r["rx_packets"], r["rx_bytes"], r["rx_batches"]) == (2, 64, 1)


def test_interrupt_mask_suppresses_writer_signal() -> None:
    mem = new_mem()
    tx = Ring(mem, direction=Direction.TX)
    put_u32(mem, 8, 1)  # host is draining
    assert tx.send(6, b"") is False
    assert tx.counters()["ring_signals_masked"] == 1
    put_u32(mem, 8, 0)
    assert tx.send(6, b"") is False  # not empty before this write


def test_pending_send_sz_setter_validates() -> None:
    mem = new_mem()
    tx = Ring(mem, direction=Direction.TX)
    tx.set_pending_send_sz(64)
    assert tx.pending_send_sz == 64
    for bad in (3, D, D - 7):
        with pytest.raises(LocalProtocolError):
            tx.set_pending_send_sz(bad)


def test_detached_ring_refuses() -> None:
    tx = Ring(new_mem(), direction=Direction.TX)
    tx.detach()
    with pytest.raises(LocalProtocolError):
        tx.send(6, b"")


def test_ring_over_mmap_and_cptr_for_c_layers() -> None:
    """uio maps are mmaps: both directions over one anonymous shared mapping, like map 0
    (TX ring at 0, RX ring at size/2); cptr is the struct hvu_ring * a C layer would take."""
    import mmap

    size = HDR + 1024
    with mmap.mmap(-1, 2 * size) as m:
        tx = Ring(m, direction=Direction.TX, offset=0, size=size)
        rx = Ring(m, direction=Direction.RX, offset=size, size=size)
        assert tx.send(6, b"out", trans_id=1) is True
        assert HostRingReader(m, offset=0, size=size).read_batch()[0][0].payload == b"out" + bytes(5)
        HostRingWriter(m, offset=size, size=size).write(11, b"in", trans_id=1)
        assert native.lib.hvu_ring_bytes_to_read(rx.cptr) == 32
        assert rx.read_batch().packets[0].payload == b"in" + bytes(6)
        del tx, rx  # release the exported buffers before the mmap closes
