"""The emulated kernel's half of the sim/real seam: names, sockets and shared memory.

The guest opens an emulator's tree through `hvuio.device.platform.TreePlatform` (the guest's half
of the seam, which imports nothing from here). This module is what the emulated kernel needs to
serve that: its own copy of the names both sides agree on (`MARKER`, `STATE_DIR`, the backing
file of each map; a test holds them equal to the guest's), the SOCK_SEQPACKET sockets that stand
for /dev/uioN and the control socket (`seqpacket_listen`, `seqpacket_connect`), and the kernel's
accessors of the shared memory (ring header init, inbound mask, header snapshot, monitor-page
trigger bits) through plain pread/pwrite on the backing files, which the page cache keeps
coherent with every MAP_SHARED mapping of them.

No sysfs parsing (that is `hvuio.device.sysfs`) and no kernel policy (that is bus.py and uio.py
beside this module).
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

MARKER: Final = ".hvuio-sim"
STATE_DIR: Final = "run/hvuio-sim"
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
    """A listening SOCK_SEQPACKET socket bound at `path`, mode 0600 like a root-only /dev/uioN
    (only its owner may connect), for the emulated kernel and the control socket."""

    def bind(sock: socket.socket, name: str) -> None:
        sock.bind(name)
        os.chmod(name, 0o600)
        sock.listen(16)

    return _seqpacket_at(path, bind)


def seqpacket_connect(path: Path) -> socket.socket:
    """Connect to a simulated /dev/uioN; ENOENT/ECONNREFUSED when it is gone."""
    return _seqpacket_at(path, lambda sock, name: sock.connect(name))


# -- shared memory as the emulated kernel touches it (VMBUS.md §3.1, §3.12) ----------------------------

_HDR = struct.Struct("<IIII")  # write_index, read_index, interrupt_mask, pending_send_sz
_FEATURE_OFFSET: Final = 64
_MASK_OFFSET: Final = 8


def init_ring_headers(path: Path, ring_size: int, inbound_mask: int, full_clear: bool) -> None:
    """Both headers at open: indices 0, feature bit 1, inbound mask as given (VMBUS.md §1.6.22).

    `full_clear` = newer kernels zero the first HV page of each header first (VMBUS.md §6.7).
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
    """The values the kernel's ring snapshot attributes show (VMBUS.md §2.1, §2.2)."""
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
    """Clear and return the set trigger bits of `monitor_ids` in the monitor page (VMBUS.md §3.12).

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
