"""Regression: the emulated host must publish its ring indices with one store.

Seen as `hvuio up` stopping with "ring corrupt: len8 = 0x0" after some end-to-end transfers.
HostRingWriter published write_index with struct.pack_into, which zero-fills the destination
before it writes the value. A guest reading in between saw write_index = 0, took the bytes from
its read index to the end of the data area as readable, consumed the packet being published and
then met the unwritten (zero) bytes after it. The same store published the outbound read_index.

The tests run the real C reader/writer (hvuio.native.ring.Ring) against the host classes in one buffer.
The guest looks at the ring while the host's store is under way: the stored value is handed over
as an object whose conversion to an int (which the store performs) runs the guest's look first.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hvuio.native import ffi
from hvuio.native.ring import Direction, Ring
from hvuio.sim.vsp.ring import OFF_READ_INDEX, OFF_WRITE_INDEX, HostRingReader, HostRingWriter

HDR, D = 4096, 4096


class _Observed:
    """`value`, but converting it to an int first runs `look` (the guest, mid-store)."""

    def __init__(self, value: int, look: Callable[[], None]) -> None:
        self.value = value
        self.look = look

    def __index__(self) -> int:
        self.look()
        return self.value


class _WatchedWriter(HostRingWriter):
    look: Callable[[], None] | None = None

    def _put(self, off: int, value: int) -> None:
        if off == OFF_WRITE_INDEX and self.look is not None:
            value = _Observed(value, self.look)  # type: ignore[assignment]
        super()._put(off, value)


class _WatchedReader(HostRingReader):
    look: Callable[[], None] | None = None

    def _put(self, off: int, value: int) -> None:
        if off == OFF_READ_INDEX and self.look is not None:
            value = _Observed(value, self.look)  # type: ignore[assignment]
        super()._put(off, value)


def _shared_ring() -> tuple[object, memoryview]:
    keep = ffi.new("uint64_t[]", (HDR + D) // 8)  # 8-aligned, as the C ring requires
    return keep, memoryview(ffi.buffer(keep)).cast("B")


def test_guest_reading_during_write_index_publication_sees_old_or_new_value() -> None:
    keep, mem = _shared_ring()
    host = _WatchedWriter(mem, header_size=HDR)
    guest = Ring(mem, direction=Direction.RX, header_size=HDR)
    host.write(6, b"A" * 24, trans_id=1)
    assert [p.trans_id for p in guest.read_batch().packets] == [1]
    old = guest.write_index
    assert old != 0

    seen_w: list[int] = []
    seen_ids: list[int] = []

    def guest_polls() -> None:
        seen_w.append(guest.write_index)
        seen_ids.extend(p.trans_id for p in guest.read_batch().packets)
        seen_ids.extend(p.trans_id for p in guest.read_batch().packets)  # raises on a refused ring

    host.look = guest_polls
    host.write(6, b"B" * 24, trans_id=2)
    host.look = None

    assert seen_w == [old], f"guest saw write_index {seen_w} while the host stored over {old:#x}"
    assert seen_ids == []  # nothing published yet at that moment
    assert [p.trans_id for p in guest.read_batch().packets] == [2]
    assert guest.fault() is None
    assert guest.read_index == guest.write_index == old + 40 + 8
    del keep


@pytest.mark.parametrize("packets", [1, 3])
def test_guest_writing_during_read_index_publication_sees_old_or_new_value(packets: int) -> None:
    keep, mem = _shared_ring()
    host = _WatchedReader(mem, header_size=HDR)
    guest = Ring(mem, direction=Direction.TX, header_size=HDR)
    guest.send(6, b"A" * 24, trans_id=1)
    assert [p.trans_id for p in host.read_batch()[0]] == [1]
    old = guest.read_index
    assert old != 0
    for i in range(packets):
        guest.send(6, b"B" * 24, trans_id=2 + i)
    new = guest.write_index

    seen_r: list[int] = []
    host.look = lambda: seen_r.append(guest.read_index)
    got, _ = host.read_batch()
    host.look = None

    assert [p.trans_id for p in got] == list(range(2, 2 + packets))
    assert seen_r == [old], f"guest saw read_index {seen_r} while the host stored over {old:#x}"
    assert guest.read_index == new
    del keep
