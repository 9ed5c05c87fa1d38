"""Typed wrapper of the C ring core (_native/ring.c, monitor.c): one VMBus ring direction.

What lives here: the `Ring` object over caller-owned memory, return code -> exception conversion
(C reason codes -> `RingCorruptError` naming field, value and rule), ring counters, the pure
signal-decision functions re-exported for tests, the transfer-page header check, the monitor-page
signal (`MonitorBell`), the C struct layout getters and the ring benchmark.

What must not: loading the compiled module (``hvuio.native``), the data path (``hvuio.native.
datapath``), protocol logic (NVSP/RNDIS live in ``hvuio.proto``), I/O on fds, sleeping. Later C
layers (rx.c, tx.c) take ``struct hvu_ring *``; `Ring.cptr` hands that pointer over, and
`Ring.corrupt_error` explains a fault they report on the ring.

Errors: host data that fails validation -> `RingCorruptError(field, value, rule)`; a full ring ->
`BlockingIOError` (EAGAIN, the caller retries after a signal); misuse (wrong direction, bad
sizes, a packet that can never fit) -> `LocalProtocolError`.
"""

from __future__ import annotations

import enum
import errno
import mmap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

from hvuio.errors import LocalProtocolError, RingCorruptError
from hvuio.native import DESC_SIZE, HV_PAGE_SIZE, MAX_LEN8, MONITOR_MAX_ID, PAGE_SIZE, TRAILER_SIZE, Buffer, ffi, lib

if TYPE_CHECKING:
    from hvuio._native import CData, IntArray, PktDescArray, RingHdrPtr, RingPtr, SegArray

RING_MIN_DATA: Final = int(lib.HVU_RING_MIN_DATA)
"""Smallest data area a ring may have."""
_MONITOR_PENDING_OFFSET: Final = int(lib.HVU_MONITOR_PENDING_OFFSET)

COUNTER_NAMES: tuple[str, ...] = tuple(
    ffi.string(lib.hvu_counter_name(i)).decode() for i in range(lib.hvu_counter_count()))


class Direction(enum.IntEnum):
    """Which side of the ring we are: TX = we write (outbound), RX = we read (inbound)."""

    TX = lib.HVU_RING_TX
    RX = lib.HVU_RING_RX


class PacketType(enum.IntEnum):
    """Packet types the C reader knows by name (VMBUS.md §3.4)."""

    INBAND = lib.HVU_PKT_INBAND
    XFER_PAGES = lib.HVU_PKT_XFER_PAGES
    GPA_DIRECT = lib.HVU_PKT_GPA_DIRECT
    COMP = lib.HVU_PKT_COMP


DEFAULT_ACCEPT = (PacketType.INBAND, PacketType.XFER_PAGES, PacketType.GPA_DIRECT, PacketType.COMP)
FLAG_COMPLETION_REQUESTED = lib.HVU_PKT_FLAG_COMPLETION_REQUESTED


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet copied out of the ring. `header` is the type-specific header (bytes 16 to
    offset8*8), `payload` runs from offset8*8 to len8*8 and includes the writer's padding."""

    type: int
    flags: int
    trans_id: int
    header: bytes
    payload: bytes


class ReadBatch(NamedTuple):
    packets: list[Packet]
    need_signal: bool


def _index_rule(data_size: int) -> str:
    return f"must be below the data size {data_size:#x} and a multiple of 8"


def _fault_error(reason: int, value: int, data_size: int, max_packet: int, accept: int) -> RingCorruptError:
    """One sentence per reason code: the field, the value read, the rule it broke (VMBUS.md §4)."""
    accepted = ", ".join(f"{t:#x}" for t in range(32) if accept >> t & 1)
    table: dict[int, tuple[str, str]] = {
        lib.HVU_BAD_WRITE_INDEX: ("write_index", _index_rule(data_size)),
        lib.HVU_BAD_READ_INDEX: ("read_index", _index_rule(data_size)),
        lib.HVU_BAD_LEN8: ("len8", f"len8*8 must be at least {DESC_SIZE} and len8*8 + {TRAILER_SIZE} must not "
                           "exceed the readable bytes"),
        lib.HVU_BAD_OFFSET8: ("offset8", f"offset8*8 must be at least {DESC_SIZE} and at most len8*8"),
        lib.HVU_BAD_TYPE: ("type", f"accepted packet types are {accepted}"),
        lib.HVU_BAD_FLAGS: ("flags", "only bit 0 (completion requested) may be set"),
        lib.HVU_SHORT: ("bytes_to_read", f"a packet needs at least {DESC_SIZE} + {TRAILER_SIZE} readable bytes"),
        lib.HVU_TOO_BIG: ("len8*8", f"exceeds the packet buffer of {max_packet} bytes"),
        lib.HVU_BAD_XFER_HDR: ("offset8", "a transfer-page header needs offset8*8 >= 24 within the packet"),
        lib.HVU_BAD_PAGESET_ID: ("xfer_pageset_id", "must be the receive buffer's pageset id"),
        lib.HVU_BAD_RANGE_CNT: ("range_cnt", "must be at least 1 and its ranges must fit before offset8*8"),
        lib.HVU_BAD_RANGE: ("range", "must lie inside the receive buffer and within one section"),
    }
    field, rule = table.get(reason, (f"reason {reason}", "unknown rule"))
    return RingCorruptError(field, value, rule)


class Ring:
    """One direction of a VMBus channel over caller-owned memory (an mmap or a bytearray).

    The ring occupies ``buf[offset : offset + size]``: a header of `header_size` bytes (the guest
    PAGE_SIZE) then ``size - header_size`` data bytes. The buffer must stay alive and unresized
    while the Ring exists; the Ring keeps a reference to it.
    """

    def __init__(self, buf: Buffer, *, direction: Direction, offset: int = 0, size: int | None = None,
                 header_size: int = PAGE_SIZE, accept_types: Iterable[int] = DEFAULT_ACCEPT,
                 max_packet: int | None = None) -> None:
        self._cbuf = ffi.from_buffer(buf, require_writable=True)
        total = len(self._cbuf)
        if size is None:
            size = total - offset
        if offset < 0 or size <= 0 or offset + size > total:
            raise LocalProtocolError(f"ring at offset {offset} size {size} does not fit a buffer of {total} bytes")
        self._direction = Direction(direction)
        self._mem = ffi.new("uint64_t[]", (lib.hvu_ring_sizeof() + 7) // 8)
        self._ring = ffi.cast("struct hvu_ring *", self._mem)
        self._size = size
        self._header_size = header_size
        rc = lib.hvu_ring_attach(self._ring, self._cbuf + offset, size, header_size, int(self._direction))
        if rc == -errno.EINVAL:
            raise LocalProtocolError(
                f"cannot attach a ring of {size} bytes with a {header_size}-byte header at offset {offset}: "
                f"needs an 8-aligned start, a header that is a multiple of {HV_PAGE_SIZE} and a data area that "
                f"is a multiple of 8 of at least {RING_MIN_DATA} bytes")
        self.data_size = int(lib.hvu_ring_data_size(self._ring))
        self.max_packet = min(self.data_size, MAX_LEN8 * 8) if max_packet is None else max_packet
        if not DESC_SIZE <= self.max_packet <= self.data_size:
            raise LocalProtocolError(f"max_packet {self.max_packet} must be within [{DESC_SIZE}, {self.data_size}]")
        self._accept = 0
        for t in accept_types:
            if not 0 <= t < 32:
                raise LocalProtocolError(f"packet type {t:#x} cannot be accepted (types 0..31 only)")
            self._accept |= 1 << t
        lib.hvu_ring_set_accept(self._ring, self._accept)
        self._hdr = ffi.new("struct hvu_ring_hdr *")
        self._sig = ffi.new("int *")
        self._scratch: IntArray | None = None
        self._batch_cap = 0
        self._descs: PktDescArray | None = None
        self._offsets: IntArray | None = None
        self._check(rc, "attach")

    # ---- plumbing --------------------------------------------------------------------------------

    @property
    def cptr(self) -> RingPtr:
        """The ``struct hvu_ring *`` for C layers (valid while this object lives)."""
        return self._ring

    @property
    def direction(self) -> Direction:
        return self._direction

    def corrupt_error(self) -> RingCorruptError:
        """The error for this ring's sticky fault: which field held which value, breaking which
        rule. For a caller whose C call on this ring returned -EIO (the data path does)."""
        fault = ffi.new("struct hvu_fault *")
        lib.hvu_ring_fault(self._ring, fault)
        return _fault_error(fault.reason, fault.value, self.data_size, self.max_packet, self._accept)

    def _check(self, rc: int, what: str) -> int:
        if rc >= 0:
            return rc
        if rc == -errno.EIO:
            raise self.corrupt_error()
        if rc == -errno.EAGAIN:
            raise BlockingIOError(errno.EAGAIN, f"ring full: {what} needs more than the "
                                  f"{self.bytes_free()} free bytes (the ring is never filled completely)")
        if rc == -errno.EMSGSIZE:
            raise LocalProtocolError(f"{what}: packet can never fit a ring with {self.data_size} data bytes "
                                     f"(len8 max {MAX_LEN8}, packet + {TRAILER_SIZE}-byte trailer must be < data size)")
        if rc == -errno.EPERM:
            raise LocalProtocolError(f"{what} is not allowed on a {self._direction.name} ring")
        raise LocalProtocolError(f"{what} failed with {errno.errorcode.get(-rc, rc)} (invalid argument)")

    def fault(self) -> tuple[str, int] | None:
        """(reason name, value) of the sticky fault, or None while the ring is healthy."""
        f = ffi.new("struct hvu_fault *")
        if lib.hvu_ring_fault(self._ring, f) == lib.HVU_OK:
            return None
        return ffi.string(lib.hvu_reason_name(f.reason)).decode(), int(f.value)

    def detach(self) -> None:
        """Stops using the memory; every later call raises LocalProtocolError."""
        lib.hvu_ring_detach(self._ring)

    # ---- header ------------------------------------------------------------------------------------

    def _header(self) -> RingHdrPtr:
        lib.hvu_ring_header(self._ring, self._hdr)
        return self._hdr

    @property
    def write_index(self) -> int:
        return int(self._header().write_index)

    @property
    def read_index(self) -> int:
        return int(self._header().read_index)

    @property
    def interrupt_mask(self) -> int:
        return int(self._header().interrupt_mask)

    @property
    def pending_send_sz(self) -> int:
        return int(self._header().pending_send_sz)

    @property
    def feature_bits(self) -> int:
        return int(self._header().feature_bits)

    def set_interrupt_mask(self, mask: int) -> None:
        """Inbound ring: 1 = do not interrupt me on empty -> non-empty (VMBUS.md §3.1)."""
        lib.hvu_ring_set_interrupt_mask(self._ring, mask)

    def set_pending_send_sz(self, nbytes: int) -> None:
        """Outbound ring: ask the host to signal when `nbytes` are free; 0 clears (VMBUS.md §3.11 c)."""
        self._check(lib.hvu_ring_set_pending_send_sz(self._ring, nbytes), "set_pending_send_sz")

    def set_feature_bits(self, bits: int) -> None:
        lib.hvu_ring_set_feature_bits(self._ring, bits)

    def bytes_to_read(self) -> int:
        return self._check(int(lib.hvu_ring_bytes_to_read(self._ring)), "bytes_to_read")

    def bytes_free(self) -> int:
        return self._check(int(lib.hvu_ring_bytes_free(self._ring)), "bytes_free")

    def counters(self) -> dict[str, int]:
        return {name: int(lib.hvu_ring_counter(self._ring, i)) for i, name in enumerate(COUNTER_NAMES)}

    # ---- writer -------------------------------------------------------------------------------------

    @staticmethod
    def _segs(parts: Sequence[Buffer]) -> tuple[SegArray, list[CData]]:
        keep = [ffi.from_buffer(p) for p in parts]
        segs = ffi.new("struct hvu_seg[]", max(1, len(keep)))
        for i, cb in enumerate(keep):
            segs[i].ptr = cb
            segs[i].len = len(cb)
        return segs, keep

    def write_segments(self, segments: Sequence[Buffer]) -> bool:
        """Writes one packet gathered from `segments` (descriptor first, as built by the caller);
        the ring adds padding and trailer. Returns whether to signal the host (VMBUS.md §3.11 a)."""
        segs, keep = self._segs(segments)
        self._sig[0] = 0
        self._check(lib.hvu_ring_write(self._ring, segs, len(keep), self._sig), "write")
        return bool(self._sig[0])

    def send(self, type: int, payload: Buffer | Sequence[Buffer] = b"", *, flags: int = 0,
             trans_id: int = 0, header: Buffer = b"") -> bool:
        """Builds the descriptor (offset8 = 2 + len(header)/8, len8 from the padded length) and
        writes header + payload. `header` is a type-specific header, a multiple of 8 bytes.
        Returns whether to signal the host; raises BlockingIOError if the ring is full."""
        parts = [payload] if isinstance(payload, (bytes, bytearray, memoryview, mmap.mmap)) else payload
        segs, keep = self._segs(parts)
        hdr = ffi.from_buffer(header)
        if len(hdr) % 8:
            raise LocalProtocolError(f"type-specific header of {len(hdr)} bytes is not a multiple of 8")
        self._sig[0] = 0
        rc = lib.hvu_ring_send_hdr(self._ring, type, flags, trans_id, hdr if len(hdr) else ffi.NULL,
                                   len(hdr), segs, len(keep), self._sig)
        self._check(rc, "send")
        return bool(self._sig[0])

    # ---- reader ---------------------------------------------------------------------------------------

    def read_batch(self, max_packets: int = 64) -> ReadBatch:
        """Copies up to `max_packets` packets out (validated, len8/offset8 fixed in the copy),
        publishes read_index once and returns them with the flow-control decision (VMBUS.md §3.11 b).
        If host data fails validation after some packets, those are returned and the next call
        raises RingCorruptError."""
        if max_packets < 1:
            raise LocalProtocolError(f"max_packets must be >= 1, not {max_packets}")
        if self._scratch is None:
            self._scratch = ffi.new("uint8_t[]", self.data_size)
        if self._descs is None or self._offsets is None or max_packets > self._batch_cap:
            self._descs = ffi.new("struct hvu_pkt_desc[]", max_packets)
            self._offsets = ffi.new("uint32_t[]", max_packets)
            self._batch_cap = max_packets
        scratch, descs, offsets = self._scratch, self._descs, self._offsets
        self._sig[0] = 0
        n = self._check(lib.hvu_ring_read_batch(self._ring, scratch, self.data_size, self.max_packet,
                                                descs, offsets, max_packets, self._sig),
                        "read")
        raw = ffi.buffer(scratch)
        packets = []
        for i in range(n):
            d = descs[i]
            off = int(offsets[i])
            hlen, plen = d.offset8 * 8, d.len8 * 8
            packets.append(Packet(type=int(d.type), flags=int(d.flags), trans_id=int(d.trans_id),
                                  header=raw[off + DESC_SIZE:off + hlen], payload=raw[off + hlen:off + plen]))
        return ReadBatch(packets, bool(self._sig[0]))


# ---- pure functions (VMBUS.md §3.2, 3.11, 4.18), for tests and for the channel layer ---------------------

def free_bytes(write_index: int, read_index: int, data_size: int) -> int:
    return int(lib.hvu_ring_free_bytes(write_index, read_index, data_size))


def avail_bytes(write_index: int, read_index: int, data_size: int) -> int:
    return int(lib.hvu_ring_avail_bytes(write_index, read_index, data_size))


def pending_send_clamp(pending_send_sz: int, data_size: int) -> int:
    return int(lib.hvu_pending_send_clamp(pending_send_sz, data_size))


def signal_after_write(interrupt_mask: int, read_index: int, old_write_index: int) -> bool:
    return bool(lib.hvu_signal_after_write(interrupt_mask, read_index, old_write_index))


def signal_after_read(feature_bits: int, pending_send_sz: int, data_size: int, free_now: int,
                      consumed: int) -> bool:
    return bool(lib.hvu_signal_after_read(feature_bits, pending_send_sz, data_size, free_now, consumed))


def check_xfer_header(packet: Buffer, *, pageset_id: int, recv_buf_size: int, section_size: int) -> None:
    """Spec 4.11 on a copied-out type 0x7 packet (descriptor included); raises RingCorruptError."""
    cb = ffi.from_buffer(packet)
    fault = ffi.new("struct hvu_fault *")
    if lib.hvu_xfer_check(cb, len(cb), pageset_id, recv_buf_size, section_size, fault) < 0:
        raise _fault_error(fault.reason, fault.value, 0, 0, 0)


class MonitorBell:
    """Signals the host for a monitored channel: an atomic OR of its trigger bit (VMBUS.md §3.12).

    Holds an export of `page` (map 2) until `close()`, so close it before unmapping.
    """

    def __init__(self, page: Buffer, monitor_id: int) -> None:
        self._page: CData | None = ffi.from_buffer(page, require_writable=True)
        self.monitor_id = monitor_id
        if (not 0 <= monitor_id < MONITOR_MAX_ID
                or _MONITOR_PENDING_OFFSET + 8 * (monitor_id // 32) + 4 > len(self._page)):
            self.close()
            raise LocalProtocolError(f"monitor id {monitor_id} has no trigger bit in a "
                                     f"{len(page)}-byte monitor page (ids 0..{MONITOR_MAX_ID - 1})")

    def ring(self) -> None:
        if self._page is None:
            raise LocalProtocolError(f"monitor signal for id {self.monitor_id} used after close")
        rc = int(lib.hvu_monitor_signal(self._page, len(self._page), self.monitor_id))
        if rc < 0:
            raise LocalProtocolError(f"monitor signal for id {self.monitor_id} failed: "
                                     f"{errno.errorcode.get(-rc, rc)}")

    def close(self) -> None:
        if self._page is not None:
            ffi.release(self._page)
            self._page = None


def layout() -> dict[str, int]:
    """sizeof/offsetof of the C structs, by getter name without the ``hvu_`` prefix."""
    return {name[4:]: int(getattr(lib, name)()) for name in dir(lib)
            if name.startswith(("hvu_sizeof_", "hvu_offsetof_"))}


def bench(payload_len: int, iterations: int, *, ring_size: int = 2 * 1024 * 1024,
          header_size: int = PAGE_SIZE, baseline: bool = False) -> int:
    """Runs the C benchmark loop (or the memcpy baseline); returns packets moved."""
    mem = ffi.new("uint8_t[]", ring_size + 8)
    base = ffi.cast("uint8_t *", (int(ffi.cast("uintptr_t", mem)) + 7) & ~7)
    scratch = ffi.new("uint8_t[]", 2 * (payload_len + 32))
    fn = lib.hvu_memcpy_bench if baseline else lib.hvu_ring_bench
    rc = int(fn(base, ring_size, header_size, payload_len, iterations, scratch, len(scratch)))
    if rc < 0:
        raise LocalProtocolError(f"benchmark failed: {errno.errorcode.get(-rc, rc)}")
    return rc
