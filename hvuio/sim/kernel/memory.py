"""The emulated VM's guest-physical memory: a file the emulated kernel owns and the host maps.

A real Hyper-V host reads any page of the guest's memory by guest-physical page number; that is
what GPA-direct packets (VMBUS.md §3.7) rely on. The emulated VM stands for that memory with one
sparse file, `<sysroot>/run/hvuio-sim/guest-memory`, made at `sim start` (`--guest-memory MIB`,
a multiple of 2 MiB, default 64 MiB; 0 = no file, a VM without huge pages to give) with the map
files' mode (0600) and removed with the tree. Byte offset o of the file is guest-physical page
`GUEST_PFN_BASE + o // 4096`. The guest takes 2 MiB chunks of it as its huge pages: chunk k is
claimed by an OFD write lock on bytes [k * CHUNK_SIZE, (k + 1) * CHUNK_SIZE) of an O_RDWR fd
held for the pool's life, so a chunk is freed when its owner closes it or dies, as a huge page
is. Nothing here takes or checks those locks: they are between guests.

These are the emulator's own copies of the numbers the guest's half of the seam uses
(hvuio.device.guestmem and hvuio.device.platform, which never import hvuio.sim); a test holds the
two equal. `pfn_offset` is how the host turns a page number of a GPA-direct range into a file
offset: every page number of a range must pass it before any byte is read.

What must not live here: the host's reader of the file (hvuio.sim.vsp), the guest's allocator
(hvuio.device.guestmem), the tree's other files (tree.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from hvuio.sim.kernel.shm import state_dir

#: The file's name in the emulator's state directory (run/hvuio-sim).
GUEST_MEMORY: Final = "guest-memory"
#: Guest-physical page number of the file's first byte (4 GiB: above where the tree's fake
#: addresses of maps live, below any 52-bit limit).
GUEST_PFN_BASE: Final = 0x100000
#: Page numbers count 4 KiB pages (VMBUS.md §3.7).
HV_PAGE: Final = 4096
#: The unit a guest claims: one 2 MiB huge page.
CHUNK_SIZE: Final = 2 * 1024 * 1024
MIB: Final = 1024 * 1024
#: `sim start --guest-memory` default, in MiB.
DEFAULT_GUEST_MEMORY_MIB: Final = 64


def guest_memory_path(sysroot: Path | str) -> Path:
    """`<sysroot>/run/hvuio-sim/guest-memory`."""
    return state_dir(sysroot) / GUEST_MEMORY


def check_size_mib(mib: int) -> str | None:
    """Why `mib` MiB cannot be the emulated VM's guest memory, or None when it can (0 = none)."""
    if mib < 0:
        return f"guest memory of {mib} MiB is negative"
    if mib % (CHUNK_SIZE // MIB):
        return f"guest memory of {mib} MiB is not a multiple of {CHUNK_SIZE // MIB} MiB (one huge page)"
    if mib * MIB // HV_PAGE > (1 << 40) - 1 - GUEST_PFN_BASE:
        return f"guest memory of {mib} MiB does not fit the page numbers a range may carry"
    return None


def pfn_offset(pfn: int, size: int) -> int | None:
    """File offset of guest-physical page `pfn` in a guest memory of `size` bytes; None when the
    page is outside it (GUEST_PFN_BASE <= pfn < GUEST_PFN_BASE + size / 4096 is required)."""
    if GUEST_PFN_BASE <= pfn < GUEST_PFN_BASE + size // HV_PAGE:
        return (pfn - GUEST_PFN_BASE) * HV_PAGE
    return None
