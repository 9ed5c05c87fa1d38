"""The emulated host's mappings of the guest's shared memory, as a session's worker uses them.

What lives here: `Channel`, one attached channel (its ring file mapped MAP_SHARED: the guest's
outbound ring at 0, which the host reads with a HostRingReader, the inbound ring at S = size / 2,
which it writes with a HostRingWriter; header page = PAGE_SIZE) and the packets waiting for
inbound space; `MonitorPage`, the shared monitor page (map 2, one per host), whose trigger bits
are cleared atomically with futex(FUTEX_WAKE_OP, FUTEX_OP_ANDN) and whose latency entries set
the poll period; `map_file` for the receive / send buffers (maps 3/4); `full_barrier`, the
store-load fence the host needs between unmasking and re-checking a ring (VMBUS.md §3.10).

What must not live here: ring layout rules (ring.py), the worker, its threads and locks
(session.py), protocol rules (hvuio.sim.host), which file backs which map (hvuio.sim.kernel).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from hvuio.errors import LocalProtocolError
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter

log = logging.getLogger(__name__)

PAGE_SIZE = mmap.PAGESIZE
HV_PAGE = 4096
MONITOR_PENDING = 8  # trigger_group[g].pending at 8 + 8 * g (VMBUS.md §3.12 table)
MONITOR_LATENCY = 576  # latency[4][32], u16 in 100 ns units (VMBUS.md §3.12 table)
MONITOR_IDS = 128  # only ids 0..127 are representable (VMBUS.md §3.12)

# FUTEX_WAKE_OP with FUTEX_OP_ANDN | FUTEX_OP_OPARG_SHIFT: the kernel applies `*uaddr2 &= ~(1 << bit)`
# atomically (man 2 futex), the only atomic read-modify-write on shared memory Python can reach.
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)
_FUTEX_WAKE_OP = 5
_FUTEX_OP_ANDN = 3
_FUTEX_OP_OPARG_SHIFT = 8


class MonitorPage:
    """The shared monitor page (map 2), mapped once; trigger bits are cleared atomically."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.mm = mmap.mmap(fd, HV_PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self.mm)
        self._base = ctypes.addressof(self._anchor)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self.atomic = _SYS_FUTEX is not None
        self.lock = threading.Lock()  # serialises our own read-modify-writes (non-atomic fallback)

    def take(self, monitor_id: int) -> bool:
        """True (and the bit cleared) if the guest set monitor_id's trigger bit."""
        if not 0 <= monitor_id < MONITOR_IDS:
            return False
        off = MONITOR_PENDING + 8 * (monitor_id // 32)
        bit = monitor_id % 32
        word = int.from_bytes(self.mm[off:off + 4], "little")
        if not word >> bit & 1:
            return False
        with self.lock:
            if self.atomic and self._andn(off, bit):
                return True
            # Fallback without futex: re-read and store at once; a bit the guest ORs into the same
            # word between the two is lost (documented race, VMBUS.md §3.12 asks for atomics).
            word = int.from_bytes(self.mm[off:off + 4], "little")
            self.mm[off:off + 4] = (word & ~(1 << bit)).to_bytes(4, "little")
        return True

    def _andn(self, off: int, bit: int) -> bool:
        addr = ctypes.c_void_p(self._base + off)
        op = ((_FUTEX_OP_ANDN | _FUTEX_OP_OPARG_SHIFT) << 28) | (bit << 12)
        rc = self._libc.syscall(_SYS_FUTEX, addr, _FUTEX_WAKE_OP, 0, ctypes.c_void_p(0), addr, op)
        if rc < 0:
            log.warning("futex(FUTEX_WAKE_OP) failed (errno %d); clearing monitor bits non-atomically",
                        ctypes.get_errno())
            self.atomic = False
            return False
        return True

    def latency(self, monitor_id: int) -> float | None:
        """The guest's latency[id] in seconds (DPDK writes µs x 10), or None when unset."""
        if not 0 <= monitor_id < MONITOR_IDS:
            return None
        off = MONITOR_LATENCY + 2 * monitor_id
        value = int.from_bytes(self.mm[off:off + 2], "little")
        return value * 1e-7 if value else None

    def close(self) -> None:
        self._anchor = None
        try:
            self.mm.close()
        except BufferError:  # pragma: no cover - a ctypes view still alive; the GC unmaps it
            pass


def map_file(path: Path, length: int) -> mmap.mmap:
    """Map `length` bytes of a backing file MAP_SHARED, read-write; refused when it is shorter."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < length:
            raise LocalProtocolError(f"sim backing file {path} has {size} bytes, expected at least {length}")
        return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


@dataclass(eq=False)
class Channel:
    """One attached channel: its ring mapping, reader/writer and the packets waiting for space."""

    index: int  # HostNvsp channel number: 0 = primary, n = subchannel n
    relid: int
    monitor_id: int | None
    mm: mmap.mmap
    view: memoryview
    reader: HostRingReader
    writer: HostRingWriter
    backlog: deque[bytes] = field(default_factory=deque)

    def close(self) -> None:
        del self.reader, self.writer  # drop the ring views before unmapping
        try:
            self.view.release()
            self.mm.close()
        except BufferError:  # pragma: no cover - a view escaped; the GC unmaps it
            pass

    @classmethod
    def attach(cls, index: int, relid: int, monitor_id: int | None, path: Path, ring_size: int) -> Channel:
        """Map the ring file at `path` (two rings of `ring_size` bytes) for channel `index`."""
        mm = map_file(path, 2 * ring_size)
        view = memoryview(mm)
        reader = HostRingReader(view, offset=0, size=ring_size, header_size=PAGE_SIZE)
        writer = HostRingWriter(view, offset=ring_size, size=ring_size, header_size=PAGE_SIZE)
        return cls(index, relid, monitor_id, mm, view, reader, writer)


_BARRIER = threading.Lock()


def full_barrier() -> None:
    """A full memory barrier from Python: a mutex acquire/release is a locked instruction on x86
    and a barrier pair elsewhere. Needed where a store (interrupt_mask = 0) is followed by a load of
    the guest's index, the store-load order of VMBUS.md §3.10 (the Dekker pattern)."""
    _BARRIER.acquire()
    _BARRIER.release()
