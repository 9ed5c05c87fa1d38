"""Bounded waits: poll a condition until it holds, fail the test if it does not in time; drive a
guest Nic's poll loop until a condition holds; read the next JSON line a child process prints,
giving up at EOF or when the bound is reached; `process_gone(pid)`, a condition for such waits.

The bound makes a broken path fail instead of hanging the suite; it is never a speed claim, and
no test asserts on elapsed time.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAIT = 10.0  # seconds a bounded wait of the emulator tests may take before the test fails


def until(pred: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll `pred` every 5 ms until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll `pred` every 2 ms until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def process_gone(pid: int) -> bool:
    """The process exited (a zombie nobody reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def poll_nic_until(nic: Any, cond: Callable[[], object], limit: float = 10.0) -> bool:
    """Run `nic.poll` (a guest Nic's event loop step) until `cond()` holds; False after `limit`
    seconds."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        nic.poll(0.05)
    return True


def next_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    """The next line of `proc`'s stdout that is a JSON object (other lines are skipped), or None at
    EOF / after `timeout` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            return None
        if line.startswith("{"):
            return dict(json.loads(line))
    return None
