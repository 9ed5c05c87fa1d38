"""A fake guest-memory pool and a platform that hands it out, for the GPA-direct tests.

`FakePool` is a GuestMemory (hvuio/device/guestmem.py) over an anonymous mapping whose page
numbers are made up and deliberately not contiguous (PFN_BASE + a seeded shuffle of the page
indexes), so a reader that ignores the page numbers reads the wrong bytes. Its `view` and `pfns`
are what the C data path takes as a GpaPool (hvuio/native/datapath.py); tests that check the data
path's refusals replace them with bad ones. `read` is the emulated host's side: the bytes of one
GPA-direct range given its page numbers (each checked to belong to the pool), the shape
hvuio.sim.host.send.ReadGuestPages takes.

`FakePlatform` wraps a real platform (the emulator's TreePlatform in tests) and adds
`guest_memory`: a FakePool, or GuestMemoryUnavailable with `unavailable` as the reason.
`read_guest_pages` reads from whichever pool it handed out last (the emulated host is created when
the device is opened, before the NIC asks for its pool).
"""

from __future__ import annotations

import array
import mmap
import random
from typing import Any

from hvuio.device.guestmem import HV_PAGE, GuestMemory, GuestMemoryUnavailable, GuestRegion
from hvuio.errors import HvuioError, RescindedError

#: the first made-up page number (4 GiB, where the emulator's guest memory starts too)
PFN_BASE = 0x100000


class FakePool:
    """`size` bytes of anonymous memory as a GuestMemory with shuffled page numbers."""

    def __init__(self, size: int, *, pfn_base: int = PFN_BASE, seed: int = 1,
                 kind: str = "fake test memory") -> None:
        assert size > 0 and size % HV_PAGE == 0
        self.mem = mmap.mmap(-1, size)
        order = list(range(size // HV_PAGE))
        random.Random(seed).shuffle(order)
        self.pfns = array.array("Q", (pfn_base + i for i in order))
        self._index = {pfn: i for i, pfn in enumerate(self.pfns)}
        self.reads = 0
        self.view = memoryview(self.mem)
        self.memory = GuestMemory(GuestRegion(self.view, self.pfns), kind, self._release)

    def _release(self) -> None:
        self.view.release()
        try:
            self.mem.close()
        except BufferError:  # a region view still alive somewhere: left to the garbage collector
            pass

    def knows(self, pfn: int) -> bool:
        return pfn in self._index

    def page_of(self, pfn: int) -> int:
        """The pool page holding page number `pfn` (KeyError: not one of the pool's)."""
        return self._index[pfn]

    def read(self, pfns: tuple[int, ...], offset: int, length: int) -> bytes:
        """One GPA-direct range as a host reads it: `length` bytes from byte `offset` of the first
        listed page, continuing at offset 0 of each next listed page."""
        assert 0 <= offset < HV_PAGE and length > 0
        assert len(pfns) == (offset + length + HV_PAGE - 1) // HV_PAGE, (pfns, offset, length)
        self.reads += 1
        data = bytearray()
        for pfn in pfns:
            i = self._index[pfn]  # KeyError: a page number outside the pool
            data += self.mem[i * HV_PAGE:(i + 1) * HV_PAGE]
        return bytes(data[offset:offset + length])


class FakePlatform:
    """`inner` plus guest_memory (see the module docstring)."""

    def __init__(self, inner: Any, *, unavailable: str | None = None) -> None:
        self.inner = inner
        self.unavailable = unavailable
        self.pools: list[FakePool] = []
        self.asked: list[int] = []

    def open_interrupt(self, uio_name: str) -> int:
        return int(self.inner.open_interrupt(uio_name))

    def open_map(self, uio_name: str, index: int, length: int, irq_fd: int) -> mmap.mmap:
        result: mmap.mmap = self.inner.open_map(uio_name, index, length, irq_fd)
        return result

    def explain_loss(self, uio_name: str, rescinded: RescindedError) -> HvuioError:
        return self.inner.explain_loss(uio_name, rescinded)  # type: ignore[no-any-return]

    def guest_memory(self, size: int) -> GuestMemory:
        self.asked.append(size)
        if self.unavailable is not None:
            raise GuestMemoryUnavailable(self.unavailable, "Test platform without guest memory.")
        pool = FakePool(size)
        self.pools.append(pool)
        return pool.memory

    def read_guest_pages(self, pfns: tuple[int, ...], offset: int, length: int) -> bytes:
        assert self.pools, "the host read guest pages before the guest had a pool"
        return self.pools[-1].read(pfns, offset, length)
