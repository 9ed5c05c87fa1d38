"""Host side of a VMBus ring, in pure Python, for the emulator and as the tests' reference model.

What lives here: `HostRingReader` drains the guest's outbound ring (strictly: the guest's
write_index and every descriptor are checked, a violation raises RingCorruptError naming field,
value and rule, and is logged); `HostRingWriter` fills the guest's inbound ring (gather, zero
padding, trailer, never completely full). Both decide when the host would interrupt the guest
(VMBUS.md §3.11 d, 5.10): the writer on empty -> non-empty while the inbound interrupt_mask is 0, the
reader when freed space crosses the guest's pending_send_sz with feature bit 0 set; the reader
sets the outbound interrupt_mask while it drains.

Written from docs/VMBUS.md sections 3 and 4 only, independently of _native/ring.c, so
the two can check each other. What must not: imports beyond hvuio.errors, fds, threads, sleeping.
Single-process use: Python's stores happen in program order, which is all the emulator needs.
Header fields are stored with one aligned 32-bit store each (`_put`): the guest reads them from
another process at any moment, so a store must never show an intermediate value (struct.pack_into
zero-fills its destination before it writes the value, which showed the guest write_index = 0).
"""

from __future__ import annotations

import logging
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from hvuio.errors import RingCorruptError

# Python has no memory fences. Taking and releasing a lock is a full barrier in CPython (a locked
# instruction in the mutex), which is what VMBUS.md §3.10 asks for between publishing an index and
# reading the peer's mask / pending_send_sz: without it a wake-up can be lost.
_FENCE = threading.Lock()


def _full_barrier() -> None:
    with _FENCE:
        pass

log = logging.getLogger(__name__)

# Header page offsets (VMBUS.md §3.1).
OFF_WRITE_INDEX = 0
OFF_READ_INDEX = 4
OFF_INTERRUPT_MASK = 8
OFF_PENDING_SEND_SZ = 12
OFF_FEATURE_BITS = 64
FEAT_PENDING_SEND_SZ = 1

DESC = struct.Struct("<HHHHQ")  # type, offset8, len8, flags, trans_id (VMBUS.md §3.3)
TRAILER = 8
MIN_PACKET = DESC.size
GUEST_TYPES = frozenset({0x6, 0x7, 0x9, 0xB})  # what a strict reader accepts (VMBUS.md §3.4)
FLAG_COMPLETION_REQUESTED = 1

_LITTLE_ENDIAN = sys.byteorder == "little"
_U64 = struct.Struct("<Q")
_ZEROS = bytes(8)

BufferLike = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class RingPacket:
    """A packet as the host read it: `header` = type-specific header, `payload` includes padding."""

    type: int
    flags: int
    trans_id: int
    header: bytes
    payload: bytes


def _byteswap32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "little"), "big")


class _HostRing:
    """Views one ring (header page + data) inside a shared buffer."""

    def __init__(self, mem: BufferLike, *, offset: int = 0, size: int | None = None,
                 header_size: int = 4096) -> None:
        view = memoryview(mem).cast("B")
        if size is None:
            size = len(view) - offset
        if offset < 0 or offset + size > len(view) or header_size < 4096 or size <= header_size:
            raise ValueError(f"ring offset {offset} size {size} header {header_size} does not fit {len(view)} bytes")
        self._ring = view[offset:offset + size]
        self._data = self._ring[header_size:]
        self._words = self._ring[:header_size].cast("I")  # header fields as native u32 words
        self.data_size = size - header_size
        if self.data_size % 8:
            raise ValueError(f"data size {self.data_size} is not a multiple of 8")
        self.broken: RingCorruptError | None = None

    # header fields
    def _get(self, off: int) -> int:
        value = int(self._words[off >> 2])  # one 32-bit load
        return value if _LITTLE_ENDIAN else _byteswap32(value)

    def _put(self, off: int, value: int) -> None:
        """One 32-bit store, so the guest sees the old or the new value and nothing between."""
        self._words[off >> 2] = value if _LITTLE_ENDIAN else _byteswap32(value)

    @property
    def write_index(self) -> int:
        return self._get(OFF_WRITE_INDEX)

    @property
    def read_index(self) -> int:
        return self._get(OFF_READ_INDEX)

    @property
    def interrupt_mask(self) -> int:
        return self._get(OFF_INTERRUPT_MASK)

    @property
    def pending_send_sz(self) -> int:
        return self._get(OFF_PENDING_SEND_SZ)

    @property
    def feature_bits(self) -> int:
        return self._get(OFF_FEATURE_BITS)

    def reset(self, feature_bits: int = FEAT_PENDING_SEND_SZ) -> None:
        """What the kernel does at channel open: indices 0, mask 0, feature bit set (VMBUS.md §5.5)."""
        self._ring[:64] = bytes(64)
        self._put(OFF_FEATURE_BITS, feature_bits)
        self.broken = None
        self._reload()

    def _reload(self) -> None:
        """Takes our own index from the header again (only at open / reset)."""

    # space accounting (VMBUS.md §3.2)
    def _free(self, w: int, r: int) -> int:
        return self.data_size - (w - r) if w >= r else r - w

    def _fail(self, field: str, value: int, rule: str) -> RingCorruptError:
        err = RingCorruptError(field, value, rule)
        log.warning("host ring refused guest data: %s", err)
        self.broken = err
        return err

    def _guest_index(self, off: int, name: str) -> int:
        value = self._get(off)  # loaded once per pass (VMBUS.md §4.1)
        if value >= self.data_size or value % 8:
            raise self._fail(name, value, f"must be below the data size {self.data_size:#x} and a multiple of 8")
        return value

    def _live(self) -> None:
        if self.broken is not None:
            raise self.broken

    # copies split at the end of the data area (single mapping)
    def _copy_in(self, pos: int, chunk: bytes | memoryview) -> int:
        n = len(chunk)
        first = min(n, self.data_size - pos)
        self._data[pos:pos + first] = chunk[:first]
        if n > first:
            self._data[:n - first] = chunk[first:]
        return (pos + n) % self.data_size

    def _copy_out(self, pos: int, n: int) -> bytes:
        first = min(n, self.data_size - pos)
        out = bytes(self._data[pos:pos + first])
        if n > first:
            out += bytes(self._data[:n - first])
        return out


class HostRingReader(_HostRing):
    """The host draining the guest's outbound ring: owns read_index and interrupt_mask."""

    def __init__(self, mem: BufferLike, *, offset: int = 0, size: int | None = None,
                 header_size: int = 4096, accept: frozenset[int] = GUEST_TYPES) -> None:
        super().__init__(mem, offset=offset, size=size, header_size=header_size)
        self.accept = accept
        self._reload()

    def _reload(self) -> None:
        self._rd = self.read_index  # our own index, private from here on
        self._consumed = 0

    def begin_drain(self) -> None:
        """Mask: the guest need not signal while we are draining (VMBUS.md §5.10)."""
        self._put(OFF_INTERRUPT_MASK, 1)

    def end_drain(self) -> bool:
        """Unmask, then re-check; True means data arrived meanwhile and must be drained too."""
        self._put(OFF_INTERRUPT_MASK, 0)
        return self.bytes_to_read() > 0

    def bytes_to_read(self) -> int:
        self._live()
        w = self._guest_index(OFF_WRITE_INDEX, "write_index")
        return self.data_size - self._free(w, self._rd)

    def read_packet(self) -> RingPacket | None:
        """The next packet, validated against VMBUS.md §4.1-4.10, or None when the ring is empty.
        The private read index advances; `commit` publishes it."""
        avail = self.bytes_to_read()
        if avail == 0:
            return None
        if avail < MIN_PACKET + TRAILER:
            raise self._fail("bytes_to_read", avail, "a packet needs at least 16 + 8 readable bytes")
        ptype, offset8, len8, flags, trans_id = DESC.unpack(self._copy_out(self._rd, DESC.size))
        length, hlen = len8 * 8, offset8 * 8
        if length < MIN_PACKET or length + TRAILER > avail:
            raise self._fail("len8", len8, f"len8*8 must be at least 16 and leave the 8-byte trailer within {avail} readable bytes")
        if hlen < MIN_PACKET or hlen > length:
            raise self._fail("offset8", offset8, f"offset8*8 must lie between 16 and len8*8 = {length}")
        if ptype not in self.accept:
            raise self._fail("type", ptype, f"accepted types are {sorted(self.accept)}")
        if flags & ~FLAG_COMPLETION_REQUESTED:
            raise self._fail("flags", flags, "only bit 0 (completion requested) may be set")
        body = self._copy_out(self._rd, length)
        self._rd = (self._rd + length + TRAILER) % self.data_size
        self._consumed += length + TRAILER
        return RingPacket(ptype, flags, trans_id, body[DESC.size:hlen], body[hlen:])

    def commit(self) -> bool:
        """Publishes read_index; True if the guest is waiting for the space just freed: free space
        went from <= P to > P, P = the guest's pending_send_sz rounded down to 8 and capped at
        D - 8, and the guest set feature bit 0 (VMBUS.md §3.11 b seen from the host, 4.18)."""
        consumed, self._consumed = self._consumed, 0
        self._put(OFF_READ_INDEX, self._rd)
        _full_barrier()
        if consumed == 0 or not self.feature_bits & FEAT_PENDING_SEND_SZ:
            return False
        want = min(self.pending_send_sz // 8 * 8, self.data_size - 8)
        if want == 0:
            return False
        free_after = self._free(self._guest_index(OFF_WRITE_INDEX, "write_index"), self._rd)
        free_before = free_after - consumed
        return free_before <= want < free_after

    def read_batch(self, max_packets: int = 64) -> tuple[list[RingPacket], bool]:
        """Drains up to `max_packets` under the interrupt mask, commits once; (packets, signal)."""
        self.begin_drain()
        packets: list[RingPacket] = []
        while len(packets) < max_packets:
            pkt = self.read_packet()
            if pkt is None:
                break
            packets.append(pkt)
        signal = self.commit()
        self.end_drain()
        return packets, signal


class HostRingWriter(_HostRing):
    """The host filling the guest's inbound ring: owns write_index and pending_send_sz."""

    def __init__(self, mem: BufferLike, *, offset: int = 0, size: int | None = None,
                 header_size: int = 4096) -> None:
        super().__init__(mem, offset=offset, size=size, header_size=header_size)
        self._reload()

    def _reload(self) -> None:
        self._wr = self.write_index  # private copy (VMBUS.md §4.2)

    def bytes_free(self) -> int:
        self._live()
        return self._free(self._wr, self._guest_index(OFF_READ_INDEX, "read_index"))

    def set_pending_send_sz(self, nbytes: int) -> None:
        self._put(OFF_PENDING_SEND_SZ, nbytes)

    def write_raw(self, parts: Sequence[BufferLike]) -> bool:
        """One packet from `parts` (descriptor included). Zero padding to 8 and the trailer are
        added. Raises BlockingIOError when free space <= packet + trailer (VMBUS.md §3.8). Returns
        whether the guest gets an interrupt: ring was empty and its interrupt_mask is 0."""
        chunks = [memoryview(p).cast("B") for p in parts]
        length = sum(len(c) for c in chunks)
        padded = -(-length // 8) * 8
        need = padded + TRAILER
        if length < MIN_PACKET or padded > 0xFFFF * 8 or need >= self.data_size:
            raise ValueError(f"packet of {length} bytes cannot be written to a ring of {self.data_size} data bytes")
        free = self.bytes_free()
        if free <= need:
            raise BlockingIOError(f"guest inbound ring full: {free} bytes free, packet needs {need} plus 1")
        start = pos = self._wr
        for c in chunks:
            pos = self._copy_in(pos, c)
        pos = self._copy_in(pos, _ZEROS[:padded - length])
        pos = self._copy_in(pos, _U64.pack(start << 32))
        self._wr = pos
        self._put(OFF_WRITE_INDEX, pos)
        _full_barrier()
        if self.interrupt_mask:
            return False
        return self.read_index == start

    def write(self, ptype: int, payload: BufferLike | Sequence[BufferLike] = b"", *, flags: int = 0,
              trans_id: int = 0, header: bytes = b"") -> bool:
        """Builds the descriptor (offset8 from the 8-aligned `header`, len8 from the padded size)."""
        parts: list[BufferLike] = ([payload] if isinstance(payload, (bytes, bytearray, memoryview))
                                   else list(payload))
        if len(header) % 8:
            raise ValueError(f"type-specific header of {len(header)} bytes is not a multiple of 8")
        length = DESC.size + len(header) + sum(len(memoryview(p).cast("B")) for p in parts)
        if length > 0xFFFF * 8:
            raise ValueError(f"packet of {length} bytes exceeds the largest len8 (0xffff)")
        desc = DESC.pack(ptype, (DESC.size + len(header)) // 8, -(-length // 8), flags, trans_id)
        return self.write_raw([desc, header, *parts])
