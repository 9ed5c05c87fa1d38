"""End to end: `hvuio up --persist` through a host rescind and re-offer. The tap stays (carrier
off while the device is away, its name and addresses kept), the re-offered device (a new VMBus
device, same instance GUID) is bound to uio_hv_generic again and the NIC comes up on the same
tap; a TCP stream opened before the rescind runs through the outage and arrives byte-exact; twice
in a row; a rescind while the re-offered device is being brought up is waited out too, and an
MTU change made while the device is away (before a data path runs) is made on the re-offered NIC.
The status file shows the state. Needs root, /dev/net/tun and iproute2; waits are bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.demo_stack import live_counter_at_least, running_stack
from support.lifecycle import full_ping, in_state, lower_up, record, set_mtu, settled_at, tap_addresses, up_ends
from support.streams import stream_through

from hvuio.demo import GUEST_ADDRESS, HOST_IP, DemoStack, ping



@pytest.fixture
def stack() -> Iterator[DemoStack]:
    with running_stack(up_args=("--persist",)) as s:
        yield s


def rescind_and_return(stack: DemoStack, times: int) -> None:
    """Rescind the NIC, see `up` wait with the carrier off, re-offer it, see it run again."""
    host = stack.env.host
    for k in range(1, times + 1):
        host.rescind(stack.guid)
        assert in_state(stack, "waiting for the device")
        assert host.wait_for(lambda: not lower_up(stack), timeout=10)
        host.reoffer(stack.guid)
        assert live_counter_at_least(stack, "reinits_rescind", k) and in_state(stack, "running")
        assert host.wait_for(lambda: lower_up(stack), timeout=10)


def test_a_tcp_stream_survives_a_rescind_and_re_offer(stack: DemoStack) -> None:
    with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
        rescind_and_return(stack, 1)
    assert tap_addresses(stack) == [GUEST_ADDRESS]
    ok = ping(stack.guest_ns, HOST_IP, count=3)
    assert ok["ok"] and ok["received"] == 3, ok["output"]
    r = record(stack)
    assert r["tap"] == stack.tap and r["lifecycle"]["reinits"] == 1 and r["counters"]["rescinds"] == 1
    assert stack.host_status()["open"]                    # the re-offered device is the one in use


def test_twice_in_a_row(stack: DemoStack) -> None:
    with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
        rescind_and_return(stack, 2)
    assert record(stack)["counters"]["reinits_rescind"] == 2


def test_a_rescind_during_the_bring_up_of_the_re_offered_device(stack: DemoStack) -> None:
    host = stack.env.host
    with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
        host.rescind(stack.guid)
        assert in_state(stack, "waiting for the device")
        host.reoffer(stack.guid)
        # the guest opens the re-offered device: rescind it as soon as the host sees it open
        assert host.wait_for(lambda: host.nvsp(stack.guid) is not None, timeout=30)
        host.rescind(stack.guid)
        assert in_state(stack, "waiting for the device")
        host.reoffer(stack.guid)
        assert in_state(stack, "running") and host.wait_for(lambda: lower_up(stack), timeout=10)
    assert record(stack)["counters"]["rescinds"] == 2


def test_without_persist_a_rescind_ends_up_with_its_exit_code() -> None:
    with running_stack() as stack:
        stack.env.host.rescind(stack.guid)
        code, err = up_ends(stack, timeout=30)
        assert code == 10
        assert f"Error: the host rescinded {stack.guid} under tap {stack.tap}" in err
        assert "removed the device" in err and "--persist" in err and "Traceback" not in err


def test_an_mtu_change_while_the_device_is_away_is_made_on_the_re_offered_nic() -> None:
    with running_stack(host_mtu=9000, up_args=("--persist",)) as stack:
        host = stack.env.host
        with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
            host.rescind(stack.guid)
            assert in_state(stack, "waiting for the device")
            set_mtu(stack, 4000)                                 # no NIC and no data path under the tap now
            host.reoffer(stack.guid)
            assert live_counter_at_least(stack, "mtu_changes", 1) and settled_at(stack, 4000)
            assert host.wait_for(lambda: lower_up(stack), timeout=10)
            ok = full_ping(stack, 4000)
            assert ok["ok"] and ok["received"] == 3, ok["output"]
        counters = stack.live_counters()
        assert (counters["reinits_rescind"], counters["reinits_mtu"], counters["mtu_changes"]) == (1, 1, 1), counters
        assert counters.get("mtu_rollbacks", 0) == 0 and tap_addresses(stack) == [GUEST_ADDRESS]
