"""`hvuio stats` against a running `hvuio up` on the emulator daemon (DaemonStack): the kernel's
ethtool names move with traffic, the emulated host's counters come along under "host", DEVICE
may be the tap name, and a device no `up` drives is one sentence and a hint. Needs root,
/dev/net/tun and iproute2 (skipped with the reason otherwise). Waits are bounded; nothing asserts
on elapsed time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import assert_user_error, hvuio_main
from support.daemon_stack import HOST_IP, DaemonStack, daemon_stack
from support.waiting import wait_until

from hvuio.demo import ping


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DaemonStack]:
    with daemon_stack(tmp_path) as s:
        yield s


def _stats(s: DaemonStack, *args: str) -> dict[str, Any]:
    proc = hvuio_main("--sysroot", str(s.root), "stats", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    [dev] = json.loads(proc.stdout)["devices"]
    return dict(dev)


def test_stats_json_moves_with_traffic_and_carries_the_hosts_view(stack: DaemonStack) -> None:
    # `up` reported its data path running: the record already holds every queue it negotiated
    before = _stats(stack)
    queues = before["queues"]
    [record] = [json.loads(p.read_text()) for p in stack.status_files()]
    assert queues == record["nic"]["queues"] == before["stats"]["queues"] >= 1, (record["nic"], before)
    assert before["device"] == stack.guid and before["tap"] == stack.tap
    assert all(f"{d}_queue_{q}_packets" in before["stats"] for d in ("tx", "rx") for q in range(queues)), before
    assert before["host"]["open"] is True and "frames_from_guest" in before["host"]["counters"]
    assert ping(stack.guest_ns, HOST_IP, count=5)["received"] == 5
    moved: dict[str, Any] = {}

    def total(stats: dict[str, int], name: str) -> int:
        """`name` (e.g. tx_queue_{}_packets) summed over the queues: RSS puts the pings on one of them."""
        return sum(stats.get(name.format(q), 0) for q in range(queues))

    def counted() -> bool:
        moved.update(_stats(stack, stack.tap))  # by tap name
        s, b = moved["stats"], before["stats"]
        return bool(total(s, "tx_queue_{}_packets") >= total(b, "tx_queue_{}_packets") + 5
                    and total(s, "rx_queue_{}_packets") >= total(b, "rx_queue_{}_packets") + 5)

    wait_until(counted, "the pings in the tx_queue_N_packets and rx_queue_N_packets", timeout=15)
    s, b = moved["stats"], before["stats"]
    assert total(s, "tx_queue_{}_bytes") > total(b, "tx_queue_{}_bytes")
    assert total(s, "rx_queue_{}_bytes") > total(b, "rx_queue_{}_bytes")
    host, host_before = moved["host"]["counters"], before["host"]["counters"]
    assert host["frames_from_guest"] >= host_before["frames_from_guest"] + 5
    assert host["frames_to_guest"] >= host_before["frames_to_guest"] + 5


def test_stats_of_a_device_no_up_drives_while_one_runs(stack: DaemonStack) -> None:
    proc = hvuio_main("--sysroot", str(stack.root), "stats", "hvu-none0")
    assert_user_error(proc)
    assert "hvu-none0" in proc.stderr and stack.tap in proc.stderr
