"""GPA-direct from the test side: the emulated VM's guest memory and type-9 packets by hand.

`make_guest_memory` maps `<sysroot>/run/hvuio-sim/guest-memory` (byte o = page
GUEST_PFN_BASE + o // 4096) for the test to write into, creating it where the emulated kernel
made none; `gpa_header` builds a type-9 packet's
range header (VMBUS.md §3.7); `rndis_data` one RNDIS_PACKET_MSG (optionally with per-packet
info); `send_gpa` sends one NVSP 107 GPA-direct over a RingGuest's outbound ring and returns its
trans_id (the completion lands in `RingGuest.tx_done`).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

from hvuio.sim.kernel.memory import GUEST_PFN_BASE, HV_PAGE
from hvuio.sim.kernel.shm import STATE_DIR
from hvuio.wire import nvsp as wn

from support.simhost import r_packet

GPA = 0x9
RC = 1
PAGE = HV_PAGE
NO_SECTION = 0xFFFFFFFF


class GuestMemoryImage:
    """The guest-memory file, mapped read-write: `write(page, offset, data)` by page index from
    the start of the file, `pfn(page)` its guest-physical page number."""

    def __init__(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < size:  # the emulated kernel's file is 64 MiB already
                os.ftruncate(fd, size)
            size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.path = path
        self.size = size  # the whole file: page GUEST_PFN_BASE + size // PAGE is the first outside

    @staticmethod
    def pfn(page: int) -> int:
        return GUEST_PFN_BASE + page

    def write(self, page: int, offset: int, data: bytes) -> list[int]:
        """Write `data` at byte `offset` of page `page`; the page numbers it covers."""
        start = page * PAGE + offset
        self.mm[start:start + len(data)] = data
        return [self.pfn(p) for p in range(page, (start + len(data) + PAGE - 1) // PAGE)]

    def close(self) -> None:
        self.mm.close()


def make_guest_memory(sysroot: Path, size: int = 4 << 20) -> GuestMemoryImage:
    state = sysroot / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    return GuestMemoryImage(state / "guest-memory", size)


def gpa_header(ranges: list[tuple[int, int, list[int]]]) -> bytes:
    """reserved, range_count, then per range byte_count, byte_offset and its page numbers."""
    out = struct.pack("<II", 0, len(ranges))
    for count, offset, pfns in ranges:
        out += struct.pack("<II", count, offset) + struct.pack(f"<{len(pfns)}Q", *pfns)
    return out


def rndis_data(frame: bytes, ppi: bytes = b"") -> bytes:
    """RNDIS_PACKET_MSG: 44-byte head, per-packet info, frame (support.simhost.r_packet's layout)."""
    return r_packet(frame, ppi=ppi)


def ppi(ptype: int, value: bytes) -> bytes:
    """One per-packet info element: size, type, offset 12, value."""
    return struct.pack("<III", 12 + len(value), ptype, 12) + value


def send_gpa(g: Any, ranges: list[tuple[int, int, list[int]]], *, chan_type: int = 0,
             section: int = NO_SECTION, size: int = 0) -> int:
    """One NVSP 107 as a type-9 packet with `ranges` over RingGuest `g`'s outbound ring."""
    nv = wn.NvspSendRndisPacket(type=wn.NvspType.SEND_RNDIS_PACKET, channel_type=chan_type,
                                section_index=section, section_size=size)
    g._tx_tid += 1
    if g.tx.send(GPA, wn.to_bytes(nv), flags=RC, trans_id=g._tx_tid, header=gpa_header(ranges)):
        g.signal()
    return int(g._tx_tid)
