"""End to end: the host stops serving a running NIC without a word (`sim stall`, as OpenVMM's
channel worker ends on an NVSP-level error). The engine's watchdog reports it once sends stay
uncompleted (one log line naming the queue and what waits, a counter); with `--persist` the NIC
is re-initialised on the same tap and a TCP stream opened before the stall arrives byte-exact,
twice in a row; without it `up` stops with the host's exit code. Needs root, /dev/net/tun and
iproute2; waits are bounded."""

from __future__ import annotations

import json
import re

from support.demo_stack import live_counter_at_least, running_stack
from support.streams import Stream

from hvuio.demo import HOST_IP, DemoStack, ping

MIB = 1 << 20


def state(stack: DemoStack) -> str | None:
    assert stack.sysroot is not None
    try:
        record = json.loads((stack.sysroot / "run/hvuio/up" / f"{stack.guid}.json").read_text())
    except (OSError, ValueError):
        return None
    return record.get("lifecycle", {}).get("state")


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
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            stall_and_recover(stack, stream, 1)
            at = stream.received
            assert stream.wait_received(at + 2 * MIB)
        finally:
            result = stream.finish()
        assert result["exact"], result
        ok = ping(stack.guest_ns, HOST_IP, count=3)
        assert ok["ok"] and ok["received"] == 3, (ok["output"], stack.live_counters(), stack.host_status())
        assert stack.env.host.fault(stack.guid) is None         # a fresh host side since the re-open
        stack.stop_up()
        lines = [line for line in stack.up_stderr.splitlines() if "the host stopped serving" in line]
        assert len(lines) == 1, stack.up_stderr
        assert re.search(r"nothing completed for \d+\.\d s \(queue 0 \(relid \d+\): \d+ sends outstanding", lines[0])


def test_twice_in_a_row() -> None:
    with running_stack(up_args=("--persist", "--watchdog", "5")) as stack:
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            stall_and_recover(stack, stream, 2)
            at = stream.received
            assert stream.wait_received(at + 2 * MIB)
        finally:
            result = stream.finish()
        assert result["exact"], result
        assert stack.live_counters()["reinits"] == 2


def test_without_persist_up_stops_with_the_host_exit_code() -> None:
    with running_stack(up_args=("--watchdog", "5")) as stack:
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            assert stream.wait_received(MIB)
            stack.env.host.stall(stack.guid)
            proc = stack.up_proc
            assert proc is not None
            proc.wait(timeout=60)
            stack.up_proc = None
        finally:
            stream.kill()
        assert proc.returncode == 11
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert re.search(r"Error: the host stopped serving \S+: nothing completed for \d+\.\d s \(queue 0", err), err
        assert "--persist" in err and "Traceback" not in err
