"""How the emulated host reads the guest's memory by guest-physical page number (GPA-direct sends).

What lives here: the two readers a session hands HostNvsp as its `ReadGuestPages` hook
(hvuio.sim.host.send), both with the same strict bounds (`check_range`: byte_offset <= 0xFFF,
byte_count > 0, exactly enough page numbers for offset + count, every page inside the memory):

* `GuestMemoryFile` (mode "file", the default): the emulated VM's guest-physical memory, the file
  `<sysroot>/run/hvuio-sim/guest-memory` the emulated kernel creates at `sim start`, mapped whole
  (read-only). Page p is at file offset (p - GUEST_PFN_BASE) * 4096 and must satisfy
  GUEST_PFN_BASE <= p < GUEST_PFN_BASE + size / 4096. The C fast path gets the same mapping
  (`base`, `size`) and applies the same rule (_native/simhost/simhost_gpa.c).
* `ProcMemReader` (mode "proc", `sim start --guest-memory-mode proc`): an emulator convenience for
  a foreign guest process (a user-space driver that is not hvuio, e.g. DPDK's netvsc PMD run with
  IOVA = VA): page p is read at virtual address p * 4096 of the process that opened /dev/uioN
  (its SO_PEERCRED pid, hvuio.sim.kernel.uio), through /proc/<pid>/mem. It only holds for IOVA =
  VA: a guest that puts real guest-physical addresses in its ranges is read wrong. A page the
  process has not mapped (EIO/EFAULT) is a refused range, as a page outside guest memory.

A refused range raises `GuestPagesUnreadable`: the send fails with NVSP status FAILED and the
channel goes on ([OV] microsoft/openvmm vm/devices/net/netvsp/src/lib.rs handle_rndis probes
every page first; process_ring_buffer completes the packet with Status::FAILURE).

What must not live here: the GPA header's parse (hvuio.sim.host.wire), what the bytes mean
(hvuio.sim.host.send), creating or sizing the guest-memory file (the emulated kernel's), the
guest's pool (hvuio.device.guestmem: the guest never imports hvuio.sim).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from hvuio.sim.host.send import GuestPagesUnreadable
from hvuio.sim.kernel.memory import GUEST_PFN_BASE, HV_PAGE, guest_memory_path
#: The largest byte_offset of a range: an offset into its first page.
MAX_BYTE_OFFSET: Final = HV_PAGE - 1
#: Proc mode: page numbers of user-space virtual addresses (57-bit with 5-level paging).
PROC_PFN_LIMIT: Final = 1 << (57 - 12)

MODES: Final = ("file", "proc")

log = logging.getLogger("hvuio.sim.vsp")


def open_reader(mode: str, sysroot: Path | str, pid: int | None,
                name: str = "guest") -> GuestMemoryFile | ProcMemReader | None:
    """The reader of one session: mode "file" maps the guest-memory file when the emulated VM
    has one, mode "proc" reads the process `pid`. None (GPA-direct sends are then refused): a VM
    without guest memory, no pid known, or a file that cannot be mapped (logged, naming `name`).
    ValueError: an unknown mode."""
    if mode == "proc":
        if pid is None:
            return None
        reader = ProcMemReader(pid)
        log.warning("guest memory mode 'proc' (IOVA = VA only): page numbers are virtual addresses of pid %d%s",
                    pid, f"; {reader.error}" if reader.error else "")
        return reader
    if mode != "file":
        raise ValueError(f"guest memory mode {mode!r} is not one of {', '.join(MODES)}")
    path = guest_memory_path(sysroot)
    if not path.exists():
        return None
    try:
        return GuestMemoryFile(path)
    except (OSError, ValueError) as exc:
        log.warning("%s: guest memory not mapped, GPA-direct sends are refused: %s", name, exc)
        return None


def check_range(pfns: tuple[int, ...], offset: int, length: int, first: int, end: int) -> None:
    """Raise GuestPagesUnreadable unless the range is well formed and every page number lies in
    [first, end)."""
    if not 0 <= offset <= MAX_BYTE_OFFSET:
        raise GuestPagesUnreadable("GPA range offset past its first page", "byte_offset", offset)
    if length <= 0:
        raise GuestPagesUnreadable("GPA range of no bytes", "byte_count", length)
    need = (offset + length + HV_PAGE - 1) // HV_PAGE
    if len(pfns) < need:
        raise GuestPagesUnreadable(f"GPA range of {length} bytes at offset {offset} needs {need} pages",
                                   "pfn count", len(pfns))
    for pfn in pfns[:need]:
        if not first <= pfn < end:
            raise GuestPagesUnreadable("GPA-direct page outside guest memory", "pfn", pfn)


def _gather(pfns: tuple[int, ...], offset: int, length: int, read: Callable[[int, int, int], bytes]) -> bytes:
    """Bytes [offset, offset + length) of the listed pages, page by page (`read(pfn, off, n)`)."""
    parts: list[bytes] = []
    left, off = length, offset
    for pfn in pfns:
        if left <= 0:
            break
        n = min(HV_PAGE - off, left)
        parts.append(read(pfn, off, n))
        left -= n
        off = 0
    return b"".join(parts)


class GuestMemoryFile:
    """The emulated VM's guest-physical memory file, mapped whole and read-only. `read` is a
    ReadGuestPages; `base_view` / `size` / `first_pfn` are what the C fast path is given. The
    mapping stays until `close()` (the pump must be closed first: it holds a pointer into it)."""

    def __init__(self, path: Path | str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size <= 0 or size % HV_PAGE:
                raise ValueError(f"guest memory file {path} has {size} bytes, not a positive multiple of {HV_PAGE}")
            self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        self.size = size
        self.first_pfn = GUEST_PFN_BASE
        self.pages = size // HV_PAGE
        self.kind = "file"

    @property
    def mapping(self) -> mmap.mmap:
        return self._mm

    def _page(self, pfn: int, off: int, n: int) -> bytes:
        at = (pfn - GUEST_PFN_BASE) * HV_PAGE + off
        return self._mm[at:at + n]

    def read(self, pfns: tuple[int, ...], offset: int, length: int) -> bytes:
        check_range(pfns, offset, length, GUEST_PFN_BASE, GUEST_PFN_BASE + self.pages)
        return _gather(pfns, offset, length, self._page)

    def close(self) -> None:
        self._mm.close()


class ProcMemReader:
    """Mode "proc": a foreign guest process's own memory as guest-physical memory, IOVA = VA only
    (module docstring). /proc/<pid>/mem is opened once; reading it needs ptrace access to the
    process (same user and kernel.yama.ptrace_scope 0, or CAP_SYS_PTRACE). Without it every send
    is refused and logged, as with a page outside guest memory."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kind = "proc"
        self.error: str | None = None
        self._fd = -1
        try:
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.error = f"cannot open /proc/{pid}/mem: {exc.strerror}"

    def _page(self, pfn: int, off: int, n: int) -> bytes:
        try:
            got = os.pread(self._fd, n, pfn * HV_PAGE + off)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EFAULT, errno.ESRCH, errno.EPERM, errno.EACCES):
                raise GuestPagesUnreadable(f"guest process page unreadable ({exc.strerror})", "pfn", pfn) from exc
            raise
        if len(got) != n:  # the process is gone (EOF)
            raise GuestPagesUnreadable("guest process page unreadable (short read)", "pfn", pfn)
        return got

    def read(self, pfns: tuple[int, ...], offset: int, length: int) -> bytes:
        if self._fd < 0:
            raise GuestPagesUnreadable(self.error or "no guest process", "pid", self.pid)
        check_range(pfns, offset, length, 1, PROC_PFN_LIMIT)
        return _gather(pfns, offset, length, self._page)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
