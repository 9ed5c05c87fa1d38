"""A hvuio.demo.DemoStack for the end-to-end tests, and the checks after it ran.

`running_stack(**options)` starts a DemoStack with those options (skipping the test where network
namespaces cannot be made), yields it, closes it and then asserts, with
`assert_nothing_leaked(stack, up_pid)`, that the stack's namespaces and links are gone, that its
`hvuio up` child no longer runs (a zombie counts as gone) and that its sysroot was removed.
`live_counter_at_least(stack, name, n)` waits (bounded) until the running `hvuio up` reports
counter `name` >= n in its status file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from hvuio.demo import DemoStack
from hvuio.netdev import netns

from support.namespaces import netns_skip_reason


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


@contextlib.contextmanager
def running_stack(**options: Any) -> Iterator[DemoStack]:
    """A started DemoStack(**options), closed afterwards and checked for leaks (skips without namespaces)."""
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    s = DemoStack(**options)
    pid: int | None = None
    try:
        s.start()
        pid = s.up_pid
        yield s
    finally:
        s.close()
    assert_nothing_leaked(s, pid)


def live_counter_at_least(stack: DemoStack, name: str, at_least: int) -> bool:
    """Wait until the running `hvuio up` reports counter `name` >= at_least (status file)."""
    return bool(stack.env.host.wait_for(lambda: stack.live_counters().get(name, 0) >= at_least, timeout=10))
