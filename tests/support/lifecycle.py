"""Looks at a running `hvuio up` of a DemoStack (hvuio.demo) for the lifecycle's end-to-end tests:
what its status file says, the guest tap's carrier, MTU and addresses, and the user's `ip link`.

`record(stack)` is the status record (`{}` while it is being rewritten); `state(stack)` its
lifecycle state; `in_state(stack, state)` waits (bounded) for that state; `lower_up(stack)` is the
tap's carrier as the kernel shows it (LOWER_UP); `tap_mtu` / `set_mtu` read and set the tap's
MTU as a user would; `settled_at(stack, mtu)` waits until the NIC runs with `mtu` and its tap
has it; `tap_addresses(stack)` lists its IPv4 addresses; `full_ping(stack, mtu)` pings the host
with frames of exactly `mtu` bytes, don't-fragment set; `log_lines(stack, text)` are the lines
of `up`'s stderr that hold `text` (after `stack.stop_up()`); `silent_opens(stack)` makes the
emulated kernel open the NIC's channel with no host behind it while the block runs (a host that
answers nothing of a bring-up).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from hvuio.demo import HOST_IP, PING_OVERHEAD, DemoStack, ping
from hvuio.netdev import netns

WAIT = 30.0  # seconds a lifecycle state may take to come (a re-initialisation, a re-offer)


def record(stack: DemoStack) -> dict[str, Any]:
    """The running `hvuio up`'s status record ({} while there is none)."""
    return stack.status_record()


def up_ends(stack: DemoStack, timeout: float = 60.0) -> tuple[int, str]:
    """Wait (bounded) for the stack's `hvuio up` to end by itself: its exit code and stderr."""
    proc = stack.up_proc
    assert proc is not None and proc.stderr is not None
    proc.wait(timeout=timeout)
    stack.up_proc = None
    return proc.returncode, proc.stderr.read()


def state(stack: DemoStack) -> str | None:
    got = record(stack).get("lifecycle", {}).get("state")
    return got if isinstance(got, str) else None


def in_state(stack: DemoStack, want: str) -> bool:
    return bool(stack.env.host.wait_for(lambda: state(stack) == want, timeout=WAIT))


def _link(stack: DemoStack) -> dict[str, Any]:
    return dict(json.loads(netns.ip("-n", stack.guest_ns, "-j", "link", "show", "dev", stack.tap).stdout)[0])


def lower_up(stack: DemoStack) -> bool:
    return "LOWER_UP" in _link(stack)["flags"]


def tap_mtu(stack: DemoStack) -> int:
    return int(_link(stack)["mtu"])


def set_mtu(stack: DemoStack, mtu: int) -> None:
    netns.ip("-n", stack.guest_ns, "link", "set", "dev", stack.tap, "mtu", str(mtu))


def settled_at(stack: DemoStack, mtu: int) -> bool:
    """Wait until the running NIC and its tap both have `mtu`."""
    def done() -> bool:
        r = record(stack)
        return (r.get("lifecycle", {}).get("state") == "running" and r.get("nic", {}).get("mtu") == mtu
                and tap_mtu(stack) == mtu)
    return bool(stack.env.host.wait_for(done, timeout=WAIT))


def tap_addresses(stack: DemoStack) -> list[str]:
    out = json.loads(netns.ip("-n", stack.guest_ns, "-j", "addr", "show", "dev", stack.tap).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a["family"] == "inet"]


def full_ping(stack: DemoStack, mtu: int, count: int = 3) -> dict[str, Any]:
    return ping(stack.guest_ns, HOST_IP, count=count, size=mtu - PING_OVERHEAD, dont_fragment=True)


def log_lines(stack: DemoStack, text: str) -> list[str]:
    return [line for line in stack.up_stderr.splitlines() if text in line]


@contextlib.contextmanager
def silent_opens(stack: DemoStack) -> Iterator[None]:
    kernel = stack.env.kernel
    serve = kernel.on_open
    kernel.on_open = lambda dev: None   # the channel opens; no VSP reads it
    try:
        yield
    finally:
        kernel.on_open = serve
