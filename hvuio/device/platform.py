"""The one seam between a real kernel and the emulator's tree: how the guest opens a UIO device.

`Platform` has two methods: open the interrupt fd of `uioN`, and map region K of it.

* `RealPlatform`: `open("/dev/uioN", O_RDWR)`; region K is
  `mmap(fd, size, MAP_SHARED, PROT_READ|PROT_WRITE, offset=K*PAGE_SIZE)`, as uio_hv_generic
  serves it (Linux drivers/uio/uio.c uio_mmap: the offset in pages selects the map).
* `TreePlatform`: a tree laid out by the emulator (`hvuio sim`) under a sysroot. The interrupt fd
  is a connected AF_UNIX SOCK_SEQPACKET socket at `<sysroot>/dev/uioN` that speaks the same
  4-byte read/write protocol; the emulated kernel first answers the connect with a 4-byte open
  status (0 or -errno: consumed here, so the open is synchronous like open(2)), and EOF stands
  for the EIO a real kernel returns after a rescind. Region K is the file
  `<sysroot>/run/hvuio-sim/uioN/mapK` mapped MAP_SHARED.

`platform_for(sysroot)` picks `TreePlatform` iff `<sysroot>/.hvuio-sim` exists. Nothing else in
the guest differs between the two. This is the guest's half of the seam: it imports nothing from
`hvuio.sim`, which keeps its own copy of the marker and path names (a test holds the two equal).

What must not live here: sysfs parsing (sysfs.py), checks of what is mapped (uio.py).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
from pathlib import Path
from typing import Final, Protocol

PAGE_SIZE: Final = mmap.PAGESIZE
#: The file whose presence marks a sysroot as a tree built by the emulator.
MARKER: Final = ".hvuio-sim"
#: Where, under the sysroot, the emulator keeps the backing files of the maps.
STATE_DIR: Final = "run/hvuio-sim"
OPEN_TIMEOUT: Final = 5.0  # seconds for the emulated kernel to answer an open
_SUN_PATH_MAX: Final = 100  # sockaddr_un holds 108 bytes; leave room for the NUL
_STATUS = struct.Struct("=i")


class Platform(Protocol):
    """The one sim/real seam: open the interrupt fd, map a region (see module docstring)."""

    def open_interrupt(self, uio_name: str) -> int:
        """Open `uio_name` ('uio0'); the returned fd is one open() of the device."""
        ...

    def open_map(self, uio_name: str, index: int, length: int, irq_fd: int) -> mmap.mmap:
        """Map `length` bytes of region `index`, MAP_SHARED, read/write."""
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


def is_emulated(sysroot: Path | str) -> bool:
    """True when `sysroot` is a tree built by the emulator (the marker file exists)."""
    return (Path(sysroot) / MARKER).is_file()


def map_file(sysroot: Path | str, uio_name: str, index: int) -> Path:
    """The file standing for map `index` of `uio_name` in an emulator's tree."""
    return Path(sysroot) / STATE_DIR / uio_name / f"map{index}"


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
        """Connect to <sysroot>/dev/<uio_name>; the connection is one open() of the device."""
        sock = _connect(self.sysroot / "dev" / uio_name)
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


def platform_for(sysroot: Path | str) -> Platform:
    """TreePlatform iff the sysroot carries the emulator's marker file, else RealPlatform."""
    return TreePlatform(sysroot) if is_emulated(sysroot) else RealPlatform(sysroot)
