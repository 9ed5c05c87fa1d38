"""Guest memory for tests: the emulated VM's guest memory file alone, huge pages reserved for one
test, pagemap entries crafted by hand.

`emulated_guest_memory(sysroot, mib)` makes `<sysroot>/run/hvuio-sim/guest-memory` the way the
emulated kernel does (same path and mode, no kernel thread: a test may fork). `huge_pages(n)`
sets /proc/sys/vm/nr_hugepages to `n` for the body of a `with` and restores the old value,
skipping the test when that file cannot be written (not root) or the kernel gave fewer free 2 MiB
pages than asked. `pagemap_entry(pfn, present)` is one 8-byte /proc/self/pagemap entry.
"""

from __future__ import annotations

import array
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.device.guestmem import huge_pages_2mib
from hvuio.sim.kernel.memory import MIB, guest_memory_path
from hvuio.sim.kernel.tree import SimTree

NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")


def emulated_guest_memory(sysroot: Path, mib: int) -> Path:
    """The emulated VM's guest memory file of `mib` MiB under `sysroot` (its directory made)."""
    path = guest_memory_path(sysroot)
    SimTree.mkdir(path.parent)
    SimTree.backing_file(path, mib * MIB)
    return path


def free_huge_pages() -> tuple[int, int]:
    """(total, free) 2 MiB huge pages now (0, 0 when the kernel has none)."""
    return huge_pages_2mib(Path("/proc/meminfo").read_text()) or (0, 0)


@contextlib.contextmanager
def huge_pages(n: int, *, need_free: int | None = None) -> Iterator[int]:
    """nr_hugepages = `n` for the body (restored after); yields the free 2 MiB pages. Skips when
    the value cannot be set or fewer than `need_free` (default `n`) pages are free."""
    try:
        old = NR_HUGEPAGES.read_text().strip()
        NR_HUGEPAGES.write_text(f"{n}\n")
    except OSError as err:
        pytest.skip(f"cannot set {NR_HUGEPAGES}: {err.strerror} (needs root)")
    try:
        free = free_huge_pages()[1]
        if free < (n if need_free is None else need_free):
            pytest.skip(f"asked for {n} huge pages, the kernel has {free} free (memory too fragmented?)")
        yield free
    finally:
        NR_HUGEPAGES.write_text(f"{old}\n")


def pagemap_entry(pfn: int, present: bool = True) -> bytes:
    """One pagemap entry: bit 63 present, bits 0-54 the frame number."""
    return array.array("Q", [(1 << 63 if present else 0) | pfn]).tobytes()
