"""A foreign guest process for the emulator's "proc" guest-memory mode (IOVA = VA).

Run as its own process (`python -m support.foreign_guest SYSROOT [DEVICE]`, tests/ on the path;
DEVICE defaults to hveth0, SYSROOT / with a GUID under `hvuio sim exec`): it opens the emulated
/dev/uioN and brings the NIC up as RingGuest does, then behaves like a user-space
driver that is not hvuio and uses its virtual addresses as I/O addresses (DPDK's netvsc PMD with
IOVA = VA): it writes an RNDIS data message into its own memory (a ctypes buffer across a page
boundary) and sends it GPA-direct with page numbers = virtual address >> 12, then a send whose
page is never mapped (page 1, address 0x1000). It prints one JSON line: the frame it sent (hex),
the NVSP status of each send and its pid, and exits 0.

`run_checked(sysroot, device, prefix)` runs it from a test (after `prefix`, e.g. `hvuio sim exec
--`), checks that it exited 0, that the send from its memory succeeded and the unmapped one
failed, and returns its JSON line.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hvuio.wire import nvsp as wn

from support.cli import child_env
from support.gpa import rndis_data, send_gpa
from support.paths import ROOT
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


def run_checked(sysroot: str, device: str | None = None, prefix: Sequence[str] = ()) -> dict[str, Any]:
    """Run this module as its own process (after `prefix`); its JSON line once it sent as it must."""
    env = {**child_env(), "PYTHONPATH": str(ROOT / "tests")}
    argv = [*prefix, sys.executable, "-P", "-m", "support.foreign_guest", sysroot, *([device] if device else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert (out["ok"], out["unmapped"]) == (wn.NvspStatus.SUCCESS, wn.NvspStatus.FAIL)
    return out


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
