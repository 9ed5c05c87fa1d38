"""Bounded waits: poll a condition until it holds, fail the test if it does not in time.

The bound makes a broken path fail instead of hanging the suite; it is never a speed claim, and
no test asserts on elapsed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
