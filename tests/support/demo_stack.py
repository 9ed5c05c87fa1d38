"""Checks after a hvuio.demo.DemoStack ran: nothing it made may be left behind.

`assert_nothing_leaked(stack, up_pid)` asserts that the stack's namespaces and links are gone,
that its `hvuio up` child no longer runs (a zombie counts as gone) and that its sysroot was
removed. Used by the end-to-end tests in tests/e2e/ after closing a stack.
"""

from __future__ import annotations

import os

from hvuio.netdev import netns
from hvuio.demo import DemoStack


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (False once it is gone or a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def assert_nothing_leaked(stack: DemoStack, up_pid: int | None) -> None:
    left = netns.leaks([stack.guest_ns, stack.host_ns], [stack.tap, stack.host_ifname])
    assert not left, f"leaked: {left}"
    assert up_pid is None or not pid_alive(up_pid), f"hvuio up (pid {up_pid}) still runs"
    assert stack.sysroot is not None and not stack.sysroot.exists(), f"sysroot {stack.sysroot} left behind"
