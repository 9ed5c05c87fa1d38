"""End to end: the user changes the MTU of a running `hvuio up`'s tap with `ip link`, and the NIC
is re-initialised with it on the same tap (as Linux netvsc_change_mtu re-initialises the
device): ping at the new size works, a TCP stream opened before the change runs through it and
arrives byte-exact, and a value the host or the protocol cannot carry puts the tap back at its old
MTU with a logged reason. Needs root, /dev/net/tun and iproute2; waits are bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.demo_stack import live_counter_at_least, running_stack
from support.lifecycle import full_ping, set_mtu, settled_at
from support.streams import Stream, stream_through

from hvuio.demo import HOST_IP, DemoStack, max_guest_mtu

MIB = 1 << 20


@pytest.fixture
def stack() -> Iterator[DemoStack]:
    with running_stack(host_mtu=9000) as s:
        yield s


def test_mtu_up_and_down_keeps_ping_and_an_open_tcp_connection(stack: DemoStack) -> None:
    stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
    try:
        assert stream.wait_received(MIB)                       # the change comes in the middle of it
        set_mtu(stack, 4000)
        assert live_counter_at_least(stack, "mtu_changes", 1) and settled_at(stack, 4000)
        ok = full_ping(stack, 4000)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
        set_mtu(stack, 1280)
        assert live_counter_at_least(stack, "mtu_changes", 2) and settled_at(stack, 1280)
        ok = full_ping(stack, 1280)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
        assert not full_ping(stack, 1500)["ok"]                 # the tap's MTU holds it back now
        at = stream.received
        assert stream.wait_received(at + 2 * MIB)              # the connection still carries data
    finally:
        result = stream.finish()
    assert result["exact"], result
    counters = stack.live_counters()
    assert counters["reinits"] == counters["reinits_mtu"] == 2 and counters.get("mtu_rollbacks", 0) == 0


def test_two_changes_in_a_row_end_at_the_last_one(stack: DemoStack) -> None:
    with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
        set_mtu(stack, 3000)
        set_mtu(stack, 5000)                                   # before the first re-initialisation is done
        assert settled_at(stack, 5000)
        ok = full_ping(stack, 5000)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
    assert 1 <= stack.live_counters()["reinits_mtu"] <= 2


def test_a_value_the_host_refuses_rolls_the_tap_back(stack: DemoStack) -> None:
    with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
        set_mtu(stack, 9500)       # above the host's largest frame (9216): it answers its default, 1500
        assert live_counter_at_least(stack, "mtu_rollbacks", 1) and settled_at(stack, 1500)
        ok = full_ping(stack, 1500)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
    counters = stack.live_counters()
    assert counters["mtu_changes"] == 0 and counters["reinits_mtu"] >= 1
    stack.stop_up()
    assert "MTU 9500 refused: the host allows at most 1500" in stack.up_stderr


def test_a_value_the_tx_path_cannot_carry_is_refused_without_the_host() -> None:
    with running_stack(host_mtu=9000, up_args=("--no-gpa",)) as stack:
        section = stack.nic["send_section_size"]
        largest = max_guest_mtu(section)
        set_mtu(stack, largest + 1)          # one byte more than a send section carries
        assert live_counter_at_least(stack, "mtu_rollbacks", 1) and settled_at(stack, 1500)
        counters = stack.live_counters()
        assert counters.get("reinits", 0) == 0                  # the host was not asked
        ok = full_ping(stack, 1500)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
        stack.stop_up()
        assert (f"MTU {largest + 1} refused: without GPA-direct a send section carries at most {largest}"
                in stack.up_stderr)
