"""SimPlatform: the emulator's side of the one sim/real seam (spec §5.5–5.6, §5.9).

THE SEAM. The guest code (`hvuio.device`) reads every sysfs file through an injectable sysroot
and opens memory and interrupts through a `Platform` (see `hvuio.device.uio.Platform`). It picks
this `SimPlatform` if and only if the sysroot carries the marker file `<sysroot>/.hvuio-sim`
written by the emulated kernel (`is_sim`); otherwise it uses the real `/dev/uioN`. Nothing else
differs between the simulated and the real path.

What the simulated objects are:
* map K of `uioN` = the file `<sysroot>/run/hvuio-sim/uioN/mapK`, a sparse file of the region's
  real size (maps 1 and 2 are links to the two pages shared by every device), mapped MAP_SHARED so
  the emulated host sees the guest's stores;
* the interrupt fd = a connected AF_UNIX SOCK_SEQPACKET socket to `<sysroot>/dev/uioN`:
  the kernel first answers the connect with a 4-byte open status (0 or -errno; consumed here, so
  open() is synchronous as on a real kernel); then reading a 4-byte message gives the event counter, writing 4 bytes is irqcontrol, EOF means
  rescinded / unregistered (the guest maps it to the same error as EIO on a real device).

Also here: the emulated kernel's accessors of that shared memory (ring header init, inbound
mask, header snapshot, monitor-page trigger bits), plain pread/pwrite on the backing files,
which the page cache keeps coherent with every MAP_SHARED mapping of them.

No sysfs parsing (that is `hvuio.device.sysfs`) and no kernel policy (that is
`hvuio.sim.kernel`).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

MARKER: Final = ".hvuio-sim"
STATE_DIR: Final = "run/hvuio-sim"
OPEN_TIMEOUT: Final = 5.0  # seconds for the emulated kernel to answer an open()
_SUN_PATH_MAX: Final = 100  # sockaddr_un holds 108 bytes; leave room for the NUL


def is_sim(sysroot: Path | str) -> bool:
    """True when `sysroot` is a tree built by the emulated kernel (the marker file exists)."""
    return (Path(sysroot) / MARKER).is_file()


def state_dir(sysroot: Path | str) -> Path:
    """Where the emulator keeps map backing files, its pid file and its log."""
    return Path(sysroot) / STATE_DIR


def map_backing(sysroot: Path | str, uio_name: str, index: int) -> Path:
    """Backing file of map `index` of `uio_name` (e.g. 'uio0')."""
    return state_dir(sysroot) / uio_name / f"map{index}"


def _short_path(path: Path) -> tuple[str, int | None]:
    """A sun_path for `path`: itself, or /proc/self/fd/<dirfd>/<name> when too long."""
    text = os.fsencode(str(path))
    if len(text) <= _SUN_PATH_MAX:
        return str(path), None
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dirfd}/{path.name}", dirfd


def _seqpacket_at(path: Path, use: Callable[[socket.socket, str], None]) -> socket.socket:
    """A SOCK_SEQPACKET socket that `use` binds or connects at `path` (long paths via a dirfd);
    closed again if that fails."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    dirfd = None
    try:
        name, dirfd = _short_path(path)
        use(sock, name)
    except OSError:
        sock.close()
        raise
    finally:
        if dirfd is not None:
            os.close(dirfd)
    return sock


def seqpacket_listen(path: Path) -> socket.socket:
    """A listening SOCK_SEQPACKET socket bound at `path` (used by the emulated kernel)."""

    def bind(sock: socket.socket, name: str) -> None:
        sock.bind(name)
        sock.listen(16)

    return _seqpacket_at(path, bind)


def seqpacket_connect(path: Path) -> socket.socket:
    """Connect to a simulated /dev/uioN; ENOENT/ECONNREFUSED when it is gone."""
    return _seqpacket_at(path, lambda sock, name: sock.connect(name))


class SimPlatform:
    """Opens simulated maps and interrupt sockets under one sysroot (see module docstring)."""

    def __init__(self, sysroot: Path | str) -> None:
        self.sysroot = Path(sysroot)

    def open_interrupt(self, uio_name: str) -> int:
        """Connect to <sysroot>/dev/<uio_name>; the connection is one open() of the device."""
        sock = seqpacket_connect(self.sysroot / "dev" / uio_name)
        try:
            sock.settimeout(OPEN_TIMEOUT)
            status = sock.recv(4)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        if len(status) != 4 or struct.unpack("=i", status)[0] != 0:
            sock.close()
            code = -struct.unpack("=i", status)[0] if len(status) == 4 else errno.ENODEV
            raise OSError(code, f"open of simulated {uio_name} failed: {os.strerror(code)}")
        return sock.detach()

    def open_map(self, uio_name: str, index: int, length: int, irq_fd: int) -> mmap.mmap:
        """Map `length` bytes of region `index`; EINVAL past the region, ENODEV once removed."""
        del irq_fd  # the real platform maps through the irq fd; here the backing file is separate
        path = map_backing(self.sysroot, uio_name, index)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(errno.ENODEV, f"simulated map {index} of {uio_name} is gone", str(path)) from None
        try:
            size = os.fstat(fd).st_size
            rounded = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            if length <= 0 or length > rounded:
                raise OSError(errno.EINVAL, f"map {index} length {length} exceeds region size {size}")
            return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)


# -- shared memory as the emulated kernel touches it (spec §3.1, §3.12) ----------------------------

_HDR = struct.Struct("<IIII")  # write_index, read_index, interrupt_mask, pending_send_sz
_FEATURE_OFFSET: Final = 64
_MASK_OFFSET: Final = 8


def init_ring_headers(path: Path, ring_size: int, inbound_mask: int, full_clear: bool) -> None:
    """Both headers at open: indices 0, feature bit 1, inbound mask as given (spec §1.6.22).

    `full_clear` = newer kernels zero the first HV page of each header first (spec §6.7).
    """
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        for off, imask in ((0, 0), (ring_size, inbound_mask)):
            if full_clear:
                os.pwrite(fd, bytes(min(4096, mmap.PAGESIZE)), off)
            os.pwrite(fd, _HDR.pack(0, 0, imask, 0), off)
            os.pwrite(fd, struct.pack("<I", 1), off + _FEATURE_OFFSET)
    finally:
        os.close(fd)


def set_inbound_mask(path: Path, ring_size: int, value: int) -> None:
    """Store the inbound (RX, at ring_size) ring's interrupt_mask."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.pwrite(fd, struct.pack("<I", value), ring_size + _MASK_OFFSET)
    finally:
        os.close(fd)


def ring_snapshot(path: Path, ring_size: int) -> dict[str, int]:
    """The values the kernel's ring snapshot attributes show (spec §2.1, §2.2)."""
    with open(path, "rb") as f:
        tx = _HDR.unpack(os.pread(f.fileno(), _HDR.size, 0))
        rx = _HDR.unpack(os.pread(f.fileno(), _HDR.size, ring_size))
    data = ring_size - mmap.PAGESIZE
    snap = {"out_intr_mask": tx[2], "out_read_index": tx[1], "out_write_index": tx[0],
            "in_intr_mask": rx[2], "in_read_index": rx[1], "in_write_index": rx[0]}
    for side, (w, r) in (("out", tx[:2]), ("in", rx[:2])):
        used = (w - r) % data if data > 0 else 0
        snap[f"{side}_read_bytes_avail"] = used
        snap[f"{side}_write_bytes_avail"] = data - used
    snap.update(in_mask=rx[2], out_mask=tx[2], in_read_avail=snap["in_read_bytes_avail"],
                out_write_avail=snap["out_write_bytes_avail"])
    return snap


def take_monitor_bits(path: Path, monitor_ids: set[int]) -> list[int]:
    """Clear and return the set trigger bits of `monitor_ids` in the monitor page (spec §3.12).

    The guest sets bit id % 32 of trigger_group[id / 32].pending (offset 8 + 8 * group) with an
    atomic OR. Python has no atomic AND on a mapping: the word is re-read just before the write,
    which keeps the window small but not empty (a bit set in between by the guest can be lost).
    """
    found: list[int] = []
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        for mid in sorted(i for i in monitor_ids if 0 <= i < 128):
            off = 8 + 8 * (mid // 32)
            word = struct.unpack("<I", os.pread(fd, 4, off))[0]
            if word >> (mid % 32) & 1:
                os.pwrite(fd, struct.pack("<I", word & ~(1 << (mid % 32))), off)
                found.append(mid)
    finally:
        os.close(fd)
    return found
