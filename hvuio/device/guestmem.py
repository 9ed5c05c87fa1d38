"""Guest memory the host can read by guest-physical page number: the pool GPA-direct sends use.

What lives here: `GuestRegion`, a writable view of pinned memory with the guest-physical frame
number (in 4 KiB Hyper-V pages, VMBUS.md §3.7) of every page; `GuestMemory`, the pool one NIC
owns (its mapping, what backs it, how it is released); `GuestMemoryUnavailable`, the error that
says why a pool cannot be had (the caller falls back to the send buffer); the numbers both
halves of the seam agree on (`CHUNK_SIZE`, `NIC_POOL_SIZE`, `CONTROL_PAGES`, `GUEST_PFN_BASE`);
and the two allocators with their reports for `hvuio doctor`:

* `hugetlb_memory(size)`, a real VM: a memfd of 2 MiB huge pages (memfd_create MFD_HUGETLB),
  mapped MAP_SHARED|MAP_POPULATE and mlock'ed, whose page numbers come from /proc/self/pagemap
  (`parse_pagemap`, a pure function: 8 bytes per virtual page, bit 63 present, bits 0-54 the
  frame number, which reads as 0 without CAP_SYS_ADMIN; Linux Documentation/admin-guide/mm/
  pagemap.rst). A guest-physical frame is what Hyper-V calls a page number when the system page
  is 4 KiB; a larger system page holds `PAGESIZE / 4096` Hyper-V pages, PFN * ratio + k. Huge
  pages are never swapped and do not migrate, so the numbers stay true for the pool's life. A
  confidential VM is refused up front (`confidential_vm`): its host cannot read guest pages the
  guest did not share, so GPA-direct from this memory would carry garbage.
* `emulated_memory(path, size)`, the emulator's tree: `size / CHUNK_SIZE` adjacent 2 MiB chunks
  of the emulated VM's guest-physical memory file, each claimed by an OFD write lock (fcntl
  F_OFD_SETLK) held as long as the mapping or the fd lives, so a chunk frees itself when its
  pool is closed or its process dies, as a huge page does. Byte o of the file is page
  `GUEST_PFN_BASE + o // 4096`.

`probe_hugetlb()` and `probe_emulated(path)` say, without taking anything, which TX path a NIC
would get (`GuestMemoryReport.tx_path`). The platform seam (hvuio/device/platform.py
`guest_memory`, `guest_memory_report`) picks between the two.

What must not live here: which messages go GPA-direct (hvuio/proto, _native/tx.c), building
VMBus packets (hvuio/channel.py, _native), the emulator's side of guest memory (hvuio/sim).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hvuio.errors import LocalProtocolError, PlatformError
from hvuio.proto import limits

#: Page numbers in GPA-direct ranges count 4 KiB pages whatever the guest's page size (VMBUS.md §3.7).
HV_PAGE: Final = 4096
#: Largest page frame number a range may carry: Linux and DPDK build 52-bit guest-physical
#: addresses (pagemap's PFN field is bits 0-54; x86-64 physical addresses are at most 52 bits).
MAX_PFN: Final = (1 << 40) - 1
#: The unit of guest memory: one 2 MiB huge page on a real VM, one lockable chunk of the
#: emulator's guest memory file. Pool sizes are multiples of it.
CHUNK_SIZE: Final = 2 * 1024 * 1024
#: One NIC's pool: one huge page.
NIC_POOL_SIZE: Final = CHUNK_SIZE
#: Pages [0, CONTROL_PAGES) of a NIC's pool carry RNDIS control messages (one per 4 KiB page, never
#: crossing one; the number is the protocol's, hvuio/proto/limits.py); the rest, from CONTROL_AREA
#: on, is the data path's GPA TX area.
CONTROL_PAGES: Final = limits.CONTROL_PAGES
CONTROL_AREA: Final = CONTROL_PAGES * HV_PAGE
#: Emulator: the guest-physical page number of byte 0 of its guest memory file (4 GiB). The
#: emulator keeps its own copy (hvuio.sim.kernel.memory); a test holds the two equal.
GUEST_PFN_BASE: Final = 0x100000


class GuestMemoryUnavailable(PlatformError):
    """No guest-memory pool can be had (the NIC then uses the send buffer only)."""


class GuestRegion:
    """`size` bytes of pinned guest memory: `view` (writable) and `pfns[i]`, the guest-physical
    page number of bytes [i * 4096, (i + 1) * 4096). Regions are page-aligned and never empty;
    every page number is non-zero and at most MAX_PFN (checked here, once, before any use)."""

    def __init__(self, view: memoryview, pfns: array.array[int]) -> None:
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
        return int(self.pfns[offset // HV_PAGE])

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


# -- numbers of the host system ------------------------------------------------------------------

PAGESIZE: Final = mmap.PAGESIZE
PAGEMAP: Final = Path("/proc/self/pagemap")
_PAGEMAP_PRESENT: Final = 1 << 63
_PAGEMAP_PFN: Final = (1 << 55) - 1
_MFD_HUGE_2MB: Final = getattr(os, "MFD_HUGE_2MB", 21 << 26)  # log2(2 MiB) << MFD_HUGE_SHIFT
_F_OFD_GETLK: Final = getattr(fcntl, "F_OFD_GETLK", 36)
_F_OFD_SETLK: Final = getattr(fcntl, "F_OFD_SETLK", 37)
#: struct flock (Linux, 64-bit): l_type, l_whence, l_start, l_len, l_pid, padding to 32 bytes.
_FLOCK: Final = struct.Struct("@hhqqixxxx")
_HUGE_SYSFS: Final = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")

RESERVE_HINT: Final = ("Reserve 2 MiB huge pages (one per NIC), as root: echo 4 > /proc/sys/vm/nr_hugepages; "
                       "reading page numbers from /proc/self/pagemap needs root (CAP_SYS_ADMIN). Until then "
                       "the NIC sends through its send buffer only.")
ROOT_HINT: Final = ("Run as root (CAP_SYS_ADMIN): without it /proc/self/pagemap hides page numbers. Until then "
                    "the NIC sends through its send buffer only.")
CVM_HINT: Final = "Nothing to do: on a confidential VM the NIC sends through its send buffer only."
TAKEN_HINT: Final = ("Stop a NIC that holds some, or restart the emulator with more: "
                     "hvuio --sysroot DIR sim start --guest-memory MIB.")
EMULATOR_HINT: Final = ("Restart the emulator with guest memory: hvuio --sysroot DIR sim stop, then "
                        "hvuio --sysroot DIR sim start --guest-memory 64; the NIC uses its send buffer until then.")


def _check_size(size: int) -> int:
    if size <= 0 or size % CHUNK_SIZE:
        raise LocalProtocolError(f"a guest memory pool of {size} bytes is not a positive multiple of {CHUNK_SIZE}")
    return size // CHUNK_SIZE


def _release_mapping(view: memoryview, mm: mmap.mmap, fd: int | None) -> None:
    """Drop the pool's view, unmap, close the fd. A view somebody still exports keeps the mapping
    (and with it the file, its lock or its huge pages) until that view is dropped: memory in use
    is never handed to another pool."""
    with contextlib.suppress(BufferError):
        view.release()
    with contextlib.suppress(BufferError):
        mm.close()
    if fd is not None:
        os.close(fd)


# -- a real VM: hugetlb memory and /proc/self/pagemap ----------------------------------------------

def parse_pagemap(data: bytes, page_size: int = PAGESIZE) -> array.array[int]:
    """The 4 KiB page numbers of the system pages whose pagemap entries are `data` (8 bytes,
    native order, per system page of `page_size` bytes): `page_size / 4096` numbers per entry.
    GuestMemoryUnavailable names the first page that is not present, reads as frame 0 (the
    reader lacks CAP_SYS_ADMIN) or lies beyond MAX_PFN."""
    if page_size < HV_PAGE or page_size % HV_PAGE:
        raise LocalProtocolError(f"system page of {page_size} bytes is not a multiple of {HV_PAGE}")
    if len(data) % 8:
        raise GuestMemoryUnavailable(f"/proc/self/pagemap returned {len(data)} bytes, not whole 8-byte entries",
                                     RESERVE_HINT)
    ratio = page_size // HV_PAGE
    entries = array.array("Q", data)
    pfns = array.array("Q")
    for i, entry in enumerate(entries):
        if not entry & _PAGEMAP_PRESENT:
            raise GuestMemoryUnavailable(f"page {i} of the huge-page pool is not in memory (pagemap present bit clear)",
                                         RESERVE_HINT)
        frame = entry & _PAGEMAP_PFN
        if frame == 0:
            raise GuestMemoryUnavailable("/proc/self/pagemap hides page numbers (frame 0): not root or no CAP_SYS_ADMIN",
                                         ROOT_HINT)
        first = frame * ratio
        if first + ratio - 1 > MAX_PFN:
            raise GuestMemoryUnavailable(f"page {i} of the huge-page pool has frame {frame:#x}, beyond what a "
                                         f"GPA-direct range may carry", CVM_HINT)
        pfns.extend(range(first, first + ratio))
    return pfns


def _read_pagemap(addr: int, length: int, pagemap: Path = PAGEMAP) -> bytes:
    """The pagemap entries of [addr, addr + length) of this process."""
    first, count = addr // PAGESIZE, (length + PAGESIZE - 1) // PAGESIZE
    try:
        fd = os.open(pagemap, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise GuestMemoryUnavailable(f"cannot open {pagemap}: {err.strerror}", ROOT_HINT) from None
    try:
        data = b""
        while len(data) < count * 8:
            chunk = os.pread(fd, count * 8 - len(data), first * 8 + len(data))
            if not chunk:
                break
            data += chunk
    except OSError as err:
        raise GuestMemoryUnavailable(f"cannot read {pagemap}: {err.strerror}", ROOT_HINT) from None
    finally:
        os.close(fd)
    if len(data) != count * 8:
        raise GuestMemoryUnavailable(f"{pagemap} ended after {len(data)} of {count * 8} bytes", ROOT_HINT)
    return data


def _address(mm: mmap.mmap) -> int:
    """The virtual address of a mapping (the ctypes view is dropped at once: no export remains)."""
    buf = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(buf)
    finally:
        del buf


def _mlock(addr: int, length: int) -> None:
    """Best effort: hugetlb pages are never swapped anyway; mlock only makes that explicit."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(length))


_ISOLATION = {1: "VBS", 2: "SEV-SNP", 3: "TDX"}
_CVM_FLAGS = ("tdx_guest", "sev_snp", "sev_es", "sev")
_CVM_DEVICES = ("/dev/sev-guest", "/dev/tdx_guest")


CpuidReader = Callable[[int], tuple[int, int, int, int] | None]


def cpuid(leaf: int, dev: Path = Path("/dev/cpu/0/cpuid")) -> tuple[int, int, int, int] | None:
    """(EAX, EBX, ECX, EDX) of CPUID `leaf` through the cpuid driver (root, module `cpuid`), or
    None when unreadable."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, 16, leaf)
    except OSError:
        return None
    finally:
        os.close(fd)
    return struct.unpack("<4I", data) if len(data) == 16 else None


def confidential_vm(cpuinfo: str | None = None, read_cpuid: CpuidReader = cpuid,
                    devices: tuple[str, ...] = _CVM_DEVICES) -> str | None:
    """The evidence that this is a confidential VM, or None. A heuristic, cheap and read-only:

    1. Hyper-V's own word when /dev/cpu/0/cpuid is readable: CPUID 0x40000003 EBX bit 22
       (isolation) and the isolation type in CPUID 0x4000000C EBX bits 0-3 (1 VBS, 2 SEV-SNP,
       3 TDX; Linux arch/x86/kernel/cpu/mshyperv.c ms_hyperv_init_platform, arch/x86/hyperv/ivm.c
       hv_get_isolation_type);
    2. /proc/cpuinfo flags of an encrypted guest: `tdx_guest`, or `sev`, `sev_es`, `sev_snp`
       together with `hypervisor`;
    3. the attestation devices only such guests have: /dev/sev-guest, /dev/tdx_guest.
    A confidential VM whose kernel shows none of these is not detected (GPA-direct sends from it
    then fail at the host, which reads no guest data there)."""
    hv = read_cpuid(0x40000000)
    if hv is not None and struct.pack("<3I", *hv[1:]) == b"Microsoft Hv" and hv[0] >= 0x4000000C:
        features = read_cpuid(0x40000003)
        if features is not None and features[1] >> 22 & 1:
            config = read_cpuid(0x4000000C)
            kind = config[1] & 0xF if config is not None else 0
            if kind:
                return f"Hyper-V isolated VM ({_ISOLATION.get(kind, f'isolation type {kind}')}, CPUID 0x4000000C)"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    for flag in _CVM_FLAGS:
        if flag in flags and (flag == "tdx_guest" or "hypervisor" in flags):
            return f"/proc/cpuinfo flag {flag}"
    for dev in devices:
        if os.path.exists(dev):
            return f"{dev} exists"
    return None


def hugetlb_memory(size: int) -> GuestMemory:
    """`size` bytes (a multiple of 2 MiB) of hugetlb memory with its page numbers (module
    docstring); GuestMemoryUnavailable with the reason and a hint when it cannot be had."""
    _check_size(size)
    cvm = confidential_vm()
    if cvm is not None:
        raise GuestMemoryUnavailable(f"this is a confidential VM ({cvm}): the host cannot read the guest's "
                                     "memory, so nothing can be sent GPA-direct", CVM_HINT)
    try:
        fd = os.memfd_create("hvuio-gpa", os.MFD_HUGETLB | os.MFD_CLOEXEC | _MFD_HUGE_2MB)
    except OSError as err:
        raise GuestMemoryUnavailable(f"this kernel makes no 2 MiB hugetlb memory (memfd_create: {err.strerror})",
                                     RESERVE_HINT) from None
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0x8000),
                       mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as err:
        pages = size // CHUNK_SIZE
        why = ("no free 2 MiB huge pages" if err.errno in (errno.ENOMEM, errno.EINVAL, errno.ENOSPC)
               else f"2 MiB huge pages cannot be mapped ({err.strerror})")
        raise GuestMemoryUnavailable(f"{why}: a pool needs {pages} (HugePages_Free in /proc/meminfo)",
                                     RESERVE_HINT) from None
    finally:
        os.close(fd)   # the mapping keeps the memory
    view = memoryview(mm)
    try:
        addr = _address(mm)
        _mlock(addr, size)
        pfns = parse_pagemap(_read_pagemap(addr, size))
        if len(set(pfns)) != len(pfns):
            raise GuestMemoryUnavailable("/proc/self/pagemap gave one page number to two pages of the pool", ROOT_HINT)
        try:
            whole = GuestRegion(view, pfns)
        except LocalProtocolError as err:
            raise GuestMemoryUnavailable(f"the huge-page pool cannot be used: {err}", RESERVE_HINT) from None
    except BaseException:
        _release_mapping(view, mm, None)
        raise
    return GuestMemory(whole, "hugetlb 2 MiB pages", lambda: _release_mapping(view, mm, None))


# -- the emulator: chunks of its guest-physical memory file -----------------------------------------

def _lock(fd: int, cmd: int, kind: int, start: int, length: int) -> int:
    """fcntl(F_OFD_*) on [start, start + length); the l_type the kernel returned."""
    got = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
    l_type: int = _FLOCK.unpack(got)[0]
    return l_type


def _open_emulated(path: Path, flags: int) -> tuple[int, int]:
    """(fd, size) of the emulated VM's guest memory file; GuestMemoryUnavailable when it is missing
    or not a plain file of whole chunks."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise GuestMemoryUnavailable("the emulated VM has no guest memory (started with --guest-memory 0)",
                                     EMULATOR_HINT) from None
    except OSError as err:
        raise GuestMemoryUnavailable(f"cannot open the emulated VM's guest memory {path}: {err.strerror}",
                                     EMULATOR_HINT) from None
    st = os.fstat(fd)
    size = st.st_size
    if not stat.S_ISREG(st.st_mode) or size % CHUNK_SIZE or GUEST_PFN_BASE + size // HV_PAGE - 1 > MAX_PFN:
        os.close(fd)
        raise GuestMemoryUnavailable(f"{path} is not the emulated VM's guest memory (a file of whole 2 MiB chunks)",
                                     EMULATOR_HINT)
    return fd, size


def emulated_memory(path: Path | str, size: int) -> GuestMemory:
    """`size` bytes (a multiple of 2 MiB) of the emulated VM's guest memory file at `path`: the
    first run of `size / 2 MiB` adjacent free chunks, locked and mapped (module docstring)."""
    want = _check_size(size)
    fd, file_size = _open_emulated(Path(path), os.O_RDWR)
    try:
        chunks = file_size // CHUNK_SIZE
        for first in range(chunks - want + 1):
            try:
                _lock(fd, _F_OFD_SETLK, fcntl.F_WRLCK, first * CHUNK_SIZE, size)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise GuestMemoryUnavailable(f"cannot lock the emulated VM's guest memory: {err.strerror}",
                                                 EMULATOR_HINT) from None
        else:
            what = (f"all {chunks} chunks (2 MiB each) of the emulated VM's guest memory are taken" if want == 1 else
                    f"no {want} adjacent chunks (2 MiB each) of the emulated VM's guest memory ({chunks}) are free")
            raise GuestMemoryUnavailable(what, TAKEN_HINT)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=first * CHUNK_SIZE)
    except BaseException:
        os.close(fd)
        raise
    base = GUEST_PFN_BASE + first * CHUNK_SIZE // HV_PAGE
    view = memoryview(mm)
    whole = GuestRegion(view, array.array("Q", range(base, base + size // HV_PAGE)))
    return GuestMemory(whole, "emulated guest memory", lambda: _release_mapping(view, mm, fd))


# -- reports for hvuio doctor ------------------------------------------------------------------------

@dataclass(frozen=True)
class GuestMemoryReport:
    """Which TX path a NIC would get, found without taking anything. `kind` is "hugetlb" or
    "emulated"; `total` and `free` count 2 MiB units (huge pages or chunks); `size` is the
    emulated VM's guest memory in bytes (0 on a real VM); `pagemap_readable` is None for the
    emulator; `reason` and `hint` say why a pool cannot be had ("" when it can)."""

    kind: str
    usable: bool
    total: int = 0
    free: int = 0
    size: int = 0
    pagemap_readable: bool | None = None
    reason: str = ""
    hint: str = ""

    @property
    def tx_path(self) -> str:
        if not self.usable:
            return f"send buffer only: {self.reason}"
        if self.kind == "emulated":
            return (f"GPA-direct (emulated guest memory, {self.size // (1024 * 1024)} MiB, "
                    f"{self.free} of {self.total} 2 MiB chunks free)")
        return f"GPA-direct (hugetlb, {self.free} of {self.total} 2 MiB huge pages free)"


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as numbers (kB values stay in kB)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key.strip()] = int(fields[0])
    return out


def huge_pages_2mib(meminfo: str, sysfs: Path = _HUGE_SYSFS) -> tuple[int, int] | None:
    """(total, free) 2 MiB huge pages, free not counting those reserved by other mappings; None
    when this kernel has no 2 MiB huge pages. From /proc/meminfo when 2 MiB is the default huge
    page size, else from sysfs."""
    info = parse_meminfo(meminfo)
    if info.get("Hugepagesize") == CHUNK_SIZE // 1024 and "HugePages_Total" in info:
        return info["HugePages_Total"], max(0, info.get("HugePages_Free", 0) - info.get("HugePages_Rsvd", 0))
    try:
        total, free, resv = (int((sysfs / name).read_text()) for name in
                             ("nr_hugepages", "free_hugepages", "resv_hugepages"))
    except (OSError, ValueError):
        return None
    return total, max(0, free - resv)


def pagemap_readable(pagemap: Path = PAGEMAP) -> bool:
    """True when this process reads real frame numbers from pagemap (root / CAP_SYS_ADMIN)."""
    mm = mmap.mmap(-1, PAGESIZE)
    try:
        mm[0] = 1
        data = _read_pagemap(_address(mm), PAGESIZE, pagemap)
        entry = array.array("Q", data)[0]
        return bool(entry & _PAGEMAP_PRESENT and entry & _PAGEMAP_PFN)
    except GuestMemoryUnavailable:
        return False
    finally:
        mm.close()


def probe_hugetlb(meminfo: Path = Path("/proc/meminfo"), pagemap: Path = PAGEMAP) -> GuestMemoryReport:
    """What `hugetlb_memory(NIC_POOL_SIZE)` would meet on this machine."""
    cvm = confidential_vm()
    try:
        counts = huge_pages_2mib(meminfo.read_text())
    except OSError:
        counts = None
    total, free = counts or (0, 0)
    readable = pagemap_readable(pagemap)
    if cvm is not None:
        reason, hint = f"a confidential VM ({cvm}): the host cannot read guest memory", CVM_HINT
    elif counts is None:
        reason, hint = "this kernel has no 2 MiB huge pages", RESERVE_HINT
    elif free < NIC_POOL_SIZE // CHUNK_SIZE:
        reason, hint = f"no free 2 MiB huge pages ({free} of {total} free)", RESERVE_HINT
    elif not readable:
        reason, hint = "/proc/self/pagemap hides page numbers (not root or no CAP_SYS_ADMIN)", ROOT_HINT
    else:
        reason, hint = "", ""
    return GuestMemoryReport("hugetlb", not reason, total, free, 0, readable, reason, hint)


def probe_emulated(path: Path | str) -> GuestMemoryReport:
    """What `emulated_memory(path, NIC_POOL_SIZE)` would meet: the file's size and free chunks
    (F_OFD_GETLK, nothing locked)."""
    try:
        fd, size = _open_emulated(Path(path), os.O_RDONLY)
    except GuestMemoryUnavailable as err:
        return GuestMemoryReport("emulated", False, reason=err.message, hint=err.hint)
    try:
        total = size // CHUNK_SIZE
        free = sum(_lock(fd, _F_OFD_GETLK, fcntl.F_WRLCK, k * CHUNK_SIZE, CHUNK_SIZE) == fcntl.F_UNLCK
                   for k in range(total))
    finally:
        os.close(fd)
    if free:
        return GuestMemoryReport("emulated", True, total, free, size)
    return GuestMemoryReport("emulated", False, total, 0, size,
                             reason=f"all {total} chunks (2 MiB each) of the emulated VM's guest memory are taken",
                             hint=TAKEN_HINT)
