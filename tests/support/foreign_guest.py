"""A foreign guest process for the emulator's "proc" guest-memory mode (IOVA = VA).

Run as its own process (`python -m support.foreign_guest SYSROOT [DEVICE]`, tests/ on the path;
DEVICE defaults to hveth0, SYSROOT / with a GUID under `hvuio sim exec`): it opens the emulated
/dev/uioN and brings the NIC up as RingGuest does, then behaves like a user-space
driver that is not hvuio and uses its virtual addresses as I/O addresses (DPDK's netvsc PMD with
IOVA = VA): it writes an RNDIS data message into its own memory (a ctypes buffer across a page
boundary) and sends it GPA-direct with page numbers = virtual address >> 12, then a send whose
page is never mapped (page 1, address 0x1000). It prints one JSON line: the frame it sent (hex),
the NVSP status of each send and its pid, and exits 0.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

from support.gpa import rndis_data, send_gpa
from support.ring_guest import RingGuest, eth_frame

PAGE = 4096


def main(sysroot: str, device: str = "hveth0") -> int:
    g = RingGuest(Path(sysroot), device)
    try:
        g.bring_up()
        frame = eth_frame(bytes(range(256)) * 12)  # 3086 bytes
        msg = rndis_data(frame)
        buf = ctypes.create_string_buffer(3 * PAGE)
        base = ctypes.addressof(buf)
        start = (base + PAGE - 600) // PAGE * PAGE + PAGE - 600  # 600 bytes before a page boundary
        if start < base:
            start += PAGE
        ctypes.memmove(start, msg, len(msg))
        first, last = start >> 12, (start + len(msg) - 1) >> 12
        ok = send_gpa(g, [(len(msg), start & 0xFFF, list(range(first, last + 1)))])
        g.pump(lambda: ok in g.tx_done, "the completion of the send from our own memory")
        bad = send_gpa(g, [(len(msg), 0, [1])])
        g.pump(lambda: bad in g.tx_done, "the completion of the send from an unmapped page")
        print(json.dumps({"frame": frame.hex(), "ok": g.tx_done[ok], "unmapped": g.tx_done[bad], "pid": os.getpid()}),
              flush=True)
        del buf
    finally:
        g.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
