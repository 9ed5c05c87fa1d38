"""The one seam between a real kernel and the emulator's tree: how the guest opens a UIO device
and gets guest memory the host can read.

`Platform` has four services: open the interrupt fd of `uioN`, map region K of it, hand out a
pool of guest memory with its guest-physical page numbers (`guest_memory(size)`, for GPA-direct
sends; hvuio/device/guestmem.py), and say what a lost device means (`explain_loss`, below).

* `RealPlatform`: `open("/dev/uioN", O_RDWR)`; region K is
  `mmap(fd, size, MAP_SHARED, PROT_READ|PROT_WRITE, offset=K*PAGE_SIZE)`, as uio_hv_generic
  serves it (Linux drivers/uio/uio.c uio_mmap: the offset in pages selects the map). Guest
  memory is hugetlb memory whose page numbers come from /proc/self/pagemap (`hugetlb_memory`).
* `TreePlatform`: a tree laid out by the emulator (`hvuio sim`) under a sysroot. The interrupt fd
  is a connected AF_UNIX SOCK_SEQPACKET socket at `<sysroot>/dev/uioN` that speaks the same
  4-byte read/write protocol; the emulated kernel first answers the connect with a 4-byte open
  status (0 or -errno: consumed here, so the open is synchronous like open(2)), and EOF stands
  for the EIO a real kernel returns after a rescind. Region K is the file
  `<sysroot>/run/hvuio-sim/uioN/mapK` mapped MAP_SHARED. Guest memory is a run of locked 2 MiB
  chunks of the emulated VM's guest-physical memory file `<sysroot>/run/hvuio-sim/guest-memory`
  (`emulated_memory`; byte o is page GUEST_PFN_BASE + o // 4096).

A lost device is one whose interrupt fd failed as a rescinded one's does (EIO, EOF):
`explain_loss` gets the RescindedError and returns the error to raise. `RealPlatform` says
"rescinded" (it is). `TreePlatform` tells a rescind (the emulated kernel is alive and removed the
device) from the emulator itself being gone (killed, stopped): its daemon holds an exclusive
flock on `<sysroot>/run/hvuio-sim/kernel.pid` while it runs (`emulator_state`), so a free lock
(or a tree already torn down) means nobody serves it any more, and the error is
EmulatorGoneError (one sentence naming the emulator's pid, with the hint to start it again). A
tree with no daemon (an emulator inside a test's or the demo's process) loses devices to
rescinds only. A connect refused by a dead emulator's socket becomes EmulatorGoneError too.

`platform_for(sysroot)` picks `TreePlatform` iff `<sysroot>/.hvuio-sim` exists, and
`guest_memory_report(sysroot)` says which TX path a NIC would get there (for `hvuio doctor`).
Nothing else in the guest differs between the two. This is the guest's half of the seam: it
imports nothing from `hvuio.sim`, which keeps its own copy of the marker, path names (the lock
file's too) and guest memory numbers (a test holds the two equal).

What must not live here: sysfs parsing (sysfs.py), checks of what is mapped (uio.py), how guest
memory is allocated and its page numbers found (guestmem.py).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shlex
import socket
import struct
import time
from pathlib import Path
from typing import Final, Protocol

from hvuio.device.guestmem import (GuestMemory, GuestMemoryReport, emulated_memory, hugetlb_memory,
                                   probe_emulated, probe_hugetlb)
from hvuio.errors import EmulatorGoneError, HvuioError, RescindedError, UnsafePathError
from hvuio.safefs import open_file

PAGE_SIZE: Final = mmap.PAGESIZE
#: The file whose presence marks a sysroot as a tree built by the emulator.
MARKER: Final = ".hvuio-sim"
#: Where, under the sysroot, the emulator keeps the backing files of the maps.
STATE_DIR: Final = "run/hvuio-sim"
#: The emulated VM's guest-physical memory file, in STATE_DIR.
GUEST_MEMORY: Final = "guest-memory"
#: The emulator daemon's lock file, in STATE_DIR: flock'ed exclusively while `hvuio sim` runs.
PID_FILE: Final = "kernel.pid"
#: Longest `TreePlatform.explain_loss` waits for a lost device to read as rescinded (its uio
#: socket removed) or as the emulator gone (the lock freed by a process still exiting).
LOSS_SETTLE: Final = 1.0
_LOSS_POLL: Final = 0.01
OPEN_TIMEOUT: Final = 5.0  # seconds for the emulated kernel to answer an open
_SUN_PATH_MAX: Final = 100  # sockaddr_un holds 108 bytes; leave room for the NUL
_STATUS = struct.Struct("=i")


class Platform(Protocol):
    """The one sim/real seam: open the interrupt fd, map a region, guest memory, explain a lost
    device (see module docstring)."""

    def open_interrupt(self, uio_name: str) -> int:
        """Open `uio_name` ('uio0'); the returned fd is one open() of the device."""
        ...

    def open_map(self, uio_name: str, index: int, length: int, irq_fd: int) -> mmap.mmap:
        """Map `length` bytes of region `index`, MAP_SHARED, read/write."""
        ...

    def guest_memory(self, size: int) -> GuestMemory:
        """`size` bytes (a multiple of 2 MiB) of memory the host reads by page number;
        GuestMemoryUnavailable (one sentence + hint) when none can be had."""
        ...

    def explain_loss(self, uio_name: str, rescinded: RescindedError) -> HvuioError:
        """The error to raise for `uio_name`, whose interrupt fd failed as a rescinded device's
        does (EIO, EOF): `rescinded` itself, or what explains the loss better."""
        ...


class RealPlatform:
    """/dev/uioN of a real kernel (under `sysroot`, normally "/")."""

    def __init__(self, sysroot: Path | str = "/") -> None:
        self.sysroot = Path(sysroot)

    def open_interrupt(self, uio_name: str) -> int:
        return os.open(self.sysroot / "dev" / uio_name, os.O_RDWR | os.O_CLOEXEC)

    def open_map(self, uio_name: str, index: int, length: int, irq_fd: int) -> mmap.mmap:
        return mmap.mmap(irq_fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                         offset=index * PAGE_SIZE)

    def guest_memory(self, size: int) -> GuestMemory:
        """Hugetlb memory of this process (the sysroot plays no part)."""
        return hugetlb_memory(size)

    def explain_loss(self, uio_name: str, rescinded: RescindedError) -> HvuioError:
        """A real kernel's EIO means the host rescinded the device."""
        del uio_name
        return rescinded


def is_emulated(sysroot: Path | str) -> bool:
    """True when `sysroot` is a tree built by the emulator (the marker file exists)."""
    return (Path(sysroot) / MARKER).is_file()


def map_file(sysroot: Path | str, uio_name: str, index: int) -> Path:
    """The file standing for map `index` of `uio_name` in an emulator's tree."""
    return Path(sysroot) / STATE_DIR / uio_name / f"map{index}"


def guest_memory_file(sysroot: Path | str) -> Path:
    """The emulated VM's guest-physical memory file in an emulator's tree."""
    return Path(sysroot) / STATE_DIR / GUEST_MEMORY


def pid_file(sysroot: Path | str) -> Path:
    """The emulator daemon's lock file in an emulator's tree."""
    return Path(sysroot) / STATE_DIR / PID_FILE


def emulator_state(sysroot: Path | str) -> tuple[bool | None, int | None]:
    """(running, pid) of the emulator daemon of `sysroot`: running is True while a process holds
    the exclusive lock on its pid file; False when its lock is free (the daemon died) or the tree
    is gone (no pid file, no marker: stopped); None when no daemon serves the tree (no pid file
    but a marker: an emulator running inside a process, as tests and the demo use) or the file
    cannot be opened safely. pid is the number written in the file (for messages only: it is
    never signalled), None when unreadable."""
    path = pid_file(sysroot)
    try:
        fd = open_file(path, os.O_RDONLY, 0o600)
    except FileNotFoundError:
        return (None if is_emulated(sysroot) else False), None
    except (OSError, UnsafePathError):
        return None, None
    try:
        try:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
        except OSError:
            text = ""
        pid = int(text) if text.isdigit() else None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, pid
        except OSError:
            return None, pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, pid
    finally:
        os.close(fd)


def emulator_gone(sysroot: Path | str, pid: int | None, what: str) -> EmulatorGoneError:
    """The error for `what` failing because the emulator of `sysroot` (daemon `pid`) is gone."""
    root = shlex.quote(str(sysroot))
    who = f"hvuio sim, pid {pid}" if pid is not None else "hvuio sim"
    return EmulatorGoneError(
        f"the emulated host ({who}) under {sysroot} is gone, so {what}",
        f"Start it again with 'hvuio --sysroot {root} sim start' (after 'hvuio --sysroot {root} sim stop', "
        f"which removes what a dead one left), then bind the NIC and run 'hvuio up' again.")


def _connect(path: Path) -> socket.socket:
    """A SOCK_SEQPACKET connection to `path` (a long path through /proc/self/fd/<dirfd>/name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    dirfd = None
    try:
        name = str(path)
        if len(os.fsencode(name)) > _SUN_PATH_MAX:
            dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            name = f"/proc/self/fd/{dirfd}/{path.name}"
        sock.connect(name)
    except OSError:
        sock.close()
        raise
    finally:
        if dirfd is not None:
            os.close(dirfd)
    return sock


class TreePlatform:
    """Opens the maps and interrupt sockets of an emulator's tree (see module docstring)."""

    def __init__(self, sysroot: Path | str) -> None:
        self.sysroot = Path(sysroot)

    def open_interrupt(self, uio_name: str) -> int:
        """Connect to <sysroot>/dev/<uio_name>; the connection is one open() of the device.
        EmulatorGoneError when the connect is refused because the emulator is gone."""
        try:
            sock = _connect(self.sysroot / "dev" / uio_name)
        except ConnectionRefusedError:
            running, pid = emulator_state(self.sysroot)
            if running is False:
                raise emulator_gone(self.sysroot, pid, f"{uio_name} cannot be opened") from None
            raise
        try:
            sock.settimeout(OPEN_TIMEOUT)
            status = sock.recv(_STATUS.size)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        code = -_STATUS.unpack(status)[0] if len(status) == _STATUS.size else errno.ENODEV
        if code != 0:
            sock.close()
            raise OSError(code, f"open of emulated {uio_name} failed: {os.strerror(code)}")
        return sock.detach()

    def open_map(self, uio_name: str, index: int, length: int, irq_fd: int) -> mmap.mmap:
        """Map `length` bytes of region `index`; EINVAL past the region, ENODEV once removed."""
        del irq_fd  # the real platform maps through the irq fd; here the backing file is separate
        path = map_file(self.sysroot, uio_name, index)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(errno.ENODEV, f"emulated map {index} of {uio_name} is gone", str(path)) from None
        try:
            size = os.fstat(fd).st_size
            rounded = (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            if length <= 0 or length > rounded:
                raise OSError(errno.EINVAL, f"map {index} length {length} exceeds region size {size}")
            return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def guest_memory(self, size: int) -> GuestMemory:
        """Adjacent free 2 MiB chunks of the emulated VM's guest memory file, locked and mapped."""
        return emulated_memory(guest_memory_file(self.sysroot), size)

    def explain_loss(self, uio_name: str, rescinded: RescindedError) -> HvuioError:
        """EmulatorGoneError when the emulator's daemon is gone (`emulator_state` False);
        `rescinded` when no daemon serves the tree, or the daemon runs and removed the device (its
        uio socket is gone) or runs on after LOSS_SETTLE seconds. The wait covers a daemon killed
        a moment ago: its sockets and its lock are closed one after the other as it exits."""
        deadline = time.monotonic() + LOSS_SETTLE
        while True:
            running, pid = emulator_state(self.sysroot)
            if running is False:
                return emulator_gone(self.sysroot, pid, f"{uio_name} has no host any more")
            if (running is None or not os.path.lexists(self.sysroot / "dev" / uio_name)
                    or time.monotonic() >= deadline):
                return rescinded
            time.sleep(_LOSS_POLL)


def platform_for(sysroot: Path | str) -> Platform:
    """TreePlatform iff the sysroot carries the emulator's marker file, else RealPlatform."""
    return TreePlatform(sysroot) if is_emulated(sysroot) else RealPlatform(sysroot)


def guest_memory_report(sysroot: Path | str) -> GuestMemoryReport:
    """Which TX path a NIC gets under `sysroot` (GPA-direct or the send buffer only, and why),
    found without taking any memory."""
    if is_emulated(sysroot):
        return probe_emulated(guest_memory_file(sysroot))
    return probe_hugetlb()
