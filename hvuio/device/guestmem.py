"""Guest memory the host can read by guest-physical page number: the pool GPA-direct sends use.

What lives here: `GuestRegion`, a writable view of pinned memory with the guest-physical frame
number (in 4 KiB Hyper-V pages, VMBUS.md §3.7) of every page; `GuestMemory`, the pool one NIC
owns (its mapping, what backs it, how it is released); `GuestMemoryUnavailable`, the error that
says why a pool cannot be had (the caller falls back to the send buffer).

The two ways to get a pool are the platform seam's (hvuio/device/platform.py `guest_memory`):
on a real VM hugetlb memory whose page numbers come from /proc/self/pagemap; in the emulator's
tree the emulated kernel's guest-physical memory file.

What must not live here: which messages go GPA-direct (hvuio/proto, _native/tx.c), building
VMBus packets (hvuio/channel.py, _native), the emulator's side of guest memory (hvuio/sim).
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import Final

from hvuio.errors import LocalProtocolError, PlatformError

#: Page numbers in GPA-direct ranges count 4 KiB pages whatever the guest's page size (VMBUS.md §3.7).
HV_PAGE: Final = 4096
#: Largest page frame number a range may carry: Linux and DPDK build 52-bit guest-physical
#: addresses (pagemap's PFN field is bits 0-54; x86-64 physical addresses are at most 52 bits).
MAX_PFN: Final = (1 << 40) - 1


class GuestMemoryUnavailable(PlatformError):
    """No guest-memory pool can be had (the NIC then uses the send buffer only)."""


class GuestRegion:
    """`size` bytes of pinned guest memory: `view` (writable) and `pfns[i]`, the guest-physical
    page number of bytes [i * 4096, (i + 1) * 4096). Regions are page-aligned and never empty;
    every page number is non-zero and at most MAX_PFN (checked here, once, before any use)."""

    def __init__(self, view: memoryview, pfns: array.array) -> None:
        if view.readonly or view.ndim != 1 or view.itemsize != 1:
            raise LocalProtocolError("a guest region needs a writable byte view")
        size = len(view)
        if size <= 0 or size % HV_PAGE:
            raise LocalProtocolError(f"guest region of {size} bytes is not a positive multiple of {HV_PAGE}")
        if pfns.typecode != "Q" or len(pfns) != size // HV_PAGE:
            raise LocalProtocolError(f"guest region of {size} bytes needs {size // HV_PAGE} page numbers "
                                     f"(u64), got {len(pfns)}")
        for i, pfn in enumerate(pfns):
            if not 0 < pfn <= MAX_PFN:
                raise LocalProtocolError(f"guest page {i} has page number {pfn:#x} (must be 1..{MAX_PFN:#x})")
        self.view = view
        self.pfns = pfns

    @property
    def size(self) -> int:
        return len(self.view)

    @property
    def pages(self) -> int:
        return len(self.pfns)

    def pfn(self, offset: int) -> int:
        """The page number of the page holding byte `offset`."""
        if not 0 <= offset < self.size:
            raise LocalProtocolError(f"offset {offset} outside a guest region of {self.size} bytes")
        return self.pfns[offset // HV_PAGE]

    def region(self, offset: int, length: int) -> GuestRegion:
        """The page-aligned sub-region [offset, offset + length), sharing this one's memory."""
        if offset % HV_PAGE or length % HV_PAGE or length <= 0 or not 0 <= offset <= self.size - length:
            raise LocalProtocolError(f"sub-region [{offset}, +{length}) of a {self.size}-byte guest region "
                                     f"is not page-aligned inside it")
        first = offset // HV_PAGE
        return GuestRegion(self.view[offset:offset + length], self.pfns[first:first + length // HV_PAGE])


class GuestMemory:
    """One pool: `whole` (a GuestRegion over all of it), `kind` (what backs it, for people:
    "hugetlb 2 MiB pages", "emulated guest memory"), and `close()`, which releases the views, the
    mapping and whatever reserved it (`release`, run once)."""

    def __init__(self, whole: GuestRegion, kind: str, release: Callable[[], None]) -> None:
        self.whole = whole
        self.kind = kind
        self._release: Callable[[], None] | None = release

    @property
    def size(self) -> int:
        return self.whole.size

    @property
    def closed(self) -> bool:
        return self._release is None

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
