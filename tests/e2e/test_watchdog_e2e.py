"""End to end: the host stops serving a running NIC without a word (`sim stall`, as OpenVMM's
channel worker ends on an NVSP-level error). The engine's watchdog reports it once sends stay
uncompleted (one log line naming the queue and what waits, a counter); with `--persist` the NIC
is re-initialised on the same tap and a TCP stream opened before the stall arrives byte-exact,
twice in a row; without it `up` stops with the host's exit code. The same for a host that only
leaves control requests unanswered (`sim stall --control`), met by an MTU change's
re-initialisation. Needs root, /dev/net/tun and iproute2; waits are bounded."""

from __future__ import annotations

import re

from support.demo_stack import live_counter_at_least, running_stack
from support.lifecycle import full_ping, log_lines, set_mtu, settled_at, silent_opens, state, up_ends
from support.streams import Stream, stream_through

from hvuio.demo import HOST_IP, DemoStack, ping

MIB = 1 << 20


def stall_and_recover(stack: DemoStack, stream: Stream, times: int) -> None:
    host = stack.env.host
    for k in range(1, times + 1):
        at = stream.received
        assert stream.wait_received(at + MIB)                  # the stall comes in the middle of the stream
        host.stall(stack.guid)
        assert host.wait_for(lambda: host.fault(stack.guid) is not None, timeout=10)
        assert live_counter_at_least(stack, "watchdog_stalls", k)
        assert live_counter_at_least(stack, "reinits_stall", k)
        assert host.wait_for(lambda: state(stack) == "running" and host.status()[stack.guid]["open"], timeout=30)


def test_a_stopped_channel_is_re_initialised_and_a_tcp_stream_survives() -> None:
    with running_stack(up_args=("--persist", "--watchdog", "5")) as stack:
        with stream_through(stack.guest_ns, stack.host_ns, HOST_IP) as stream:
            stall_and_recover(stack, stream, 1)
        ok = ping(stack.guest_ns, HOST_IP, count=3)
        assert ok["ok"] and ok["received"] == 3, (ok["output"], stack.live_counters(), stack.host_status())
        assert stack.env.host.fault(stack.guid) is None         # a fresh host side since the re-open
        stack.stop_up()
        lines = [line for line in stack.up_stderr.splitlines() if "the host stopped serving" in line]
        assert len(lines) == 1, stack.up_stderr
        assert re.search(r"nothing completed for \d+\.\d s \(queue 0 \(relid \d+\): \d+ sends outstanding", lines[0])


def test_twice_in_a_row() -> None:
    with running_stack(up_args=("--persist", "--watchdog", "5")) as stack:
        with stream_through(stack.guest_ns, stack.host_ns, HOST_IP) as stream:
            stall_and_recover(stack, stream, 2)
        assert stack.live_counters()["reinits"] == 2


def test_a_host_silent_in_the_bring_up_of_the_recovery_is_tried_again() -> None:
    """The stop comes again as the NIC is brought up anew: its NVSP init goes unanswered."""
    with running_stack(up_args=("--persist", "--watchdog", "5")) as stack:
        host = stack.env.host
        with stream_through(stack.guest_ns, stack.host_ns, HOST_IP):
            with silent_opens(stack):
                host.stall(stack.guid)
                assert host.wait_for(lambda: stack.live_counters().get("watchdog_control", 0) >= 1, timeout=60)
                assert state(stack) == "re-initialising"
            assert host.wait_for(lambda: state(stack) == "running" and host.status()[stack.guid]["open"], timeout=30)
        counters = stack.live_counters()
        assert counters["watchdog_stalls"] == 1 and counters["reinits_stall"] == 1 and counters["watchdog_control"] >= 1
        stack.stop_up()
        lines = log_lines(stack, "did not answer the NIC's bring-up")
        assert len(lines) == 1 and "NVSP: no reply to NVSP INIT" in lines[0], stack.up_stderr


def test_without_persist_up_stops_with_the_host_exit_code() -> None:
    with running_stack(up_args=("--watchdog", "5")) as stack:
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            assert stream.wait_received(MIB)
            stack.env.host.stall(stack.guid)
            code, err = up_ends(stack)
        finally:
            stream.kill()
        assert code == 11
        assert re.search(r"Error: the host stopped serving \S+: nothing completed for \d+\.\d s \(queue 0", err), err
        assert "--persist" in err and "Traceback" not in err


def test_unanswered_control_requests_are_reported_and_recovered_and_the_mtu_change_made() -> None:
    """`sim stall --control`: the host takes the running NIC's data but answers no control request.
    The guest sends none while it only runs; the MTU change's teardown (packet filter 0) meets it."""
    with running_stack(host_mtu=9000, up_args=("--persist",)) as stack:
        host = stack.env.host
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            assert stream.wait_received(MIB)
            host.stall(stack.guid, control=True)
            assert host.wait_for(lambda: host.status()[stack.guid].get("control_stalled") is True, timeout=10)
            at = stream.received
            assert stream.wait_received(at + MIB)                  # data is still served
            for k, mtu in ((1, 4000), (2, 3000)):                 # twice in a row
                set_mtu(stack, mtu)
                assert live_counter_at_least(stack, "watchdog_control", k)
                assert settled_at(stack, mtu)                     # the change is made after the recovery
                ok = full_ping(stack, mtu)
                assert ok["ok"] and ok["received"] == 3, ok["output"]
                assert host.status()[stack.guid]["control_stalled"] is False  # a fresh host side since the re-open
                at = stream.received
                assert stream.wait_received(at + 2 * MIB)
                if k == 1:
                    host.stall(stack.guid, control=True)
                    assert host.wait_for(lambda: host.status()[stack.guid].get("control_stalled") is True,
                                         timeout=10)
        finally:
            result = stream.finish()
        assert result["exact"], result
        counters = stack.live_counters()
        assert counters["watchdog_control"] == 2 and counters["reinits_stall"] == 2 and counters["mtu_changes"] == 2
        assert counters["watchdog_stalls"] == 0 and counters.get("mtu_rollbacks", 0) == 0
        stack.stop_up()
        lines = log_lines(stack, "left a control request unanswered")
        assert len(lines) == 2, stack.up_stderr                   # one line each
        assert all("packet filter 0 did not finish within" in line and "re-initialising the NIC" in line
                   for line in lines)


def test_without_persist_unanswered_control_requests_end_up_with_the_host_exit_code() -> None:
    with running_stack() as stack:
        host = stack.env.host
        host.stall(stack.guid, control=True)
        assert host.wait_for(lambda: host.status()[stack.guid].get("control_stalled") is True, timeout=10)
        set_mtu(stack, 1400)
        code, err = up_ends(stack)
        assert code == 11
        assert "Error: the host left a control request unanswered: packet filter 0 did not finish" in err, err
        assert "--persist" in err and "Traceback" not in err
