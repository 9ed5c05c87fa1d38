"""What `hvuio sim exec` tests need: whether this process may run it, and the probe they run in it.

`exec_skip_reason()` says why `sim exec` cannot run here (not root, or no mount namespace may be
made: a container without CAP_SYS_ADMIN), None when it can. `PROBE` is the path of
tests/support/exec_probe.py, a script that reports as JSON what an unchanged driver sees inside;
`C_PROBE` its C sibling, tests/support/exec_probe.c.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parent / "exec_probe.py"
#: the same from C, calling the C library as DPDK's vmbus bus does (built by the test with gcc)
C_PROBE = Path(__file__).resolve().parent / "exec_probe.c"

_UNSHARE = ("import ctypes, ctypes.util, sys\n"
            "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
            "sys.exit(0 if libc.unshare(0x20000) == 0 else 1)\n")


def exec_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "sim exec needs root"
    if subprocess.run([sys.executable, "-c", _UNSHARE], check=False).returncode != 0:
        return "this process may not make a mount namespace (unshare(CLONE_NEWNS) refused)"
    return None
