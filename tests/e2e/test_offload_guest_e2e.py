"""Offloads end to end (root, namespaces): guest tap netns <-> `hvuio up` <-> emulator <-> host
netns, as tests/e2e/test_e2e.py builds it with hvuio.demo.DemoStack, once with offloads
negotiated (the default) and once with --no-offload. TCP both ways must be byte exact; the guest's
counters must show that the path the negotiation chose was the one used. What the emulated host
offers is read from the NIC's reported offloads, so the test holds whether or not the host
enables them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.demo_stack import assert_nothing_leaked
from support.namespaces import netns_skip_reason

from hvuio.netdev import netns
from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, tcp_transfer

NBYTES = 3 * 1024 * 1024


def exact_transfers(s: DemoStack) -> None:
    """One byte-exact TCP transfer each way."""
    for src, dst, ip, seed in ((s.guest_ns, s.host_ns, HOST_IP, 21), (s.host_ns, s.guest_ns, GUEST_IP, 22)):
        r = tcp_transfer(src, dst, ip, NBYTES, seed=seed)
        assert r["received"]["bytes"] == NBYTES
        assert r["received"]["sha256"] == r["sent"]["sha256"]


def iperf3_reverse(s: DemoStack) -> None:
    """iperf3 -R, four streams, host -> guest: what coalesces into RSC sequences of every length."""
    server = netns.popen(s.host_ns, ["iperf3", "-s", "-1", "-p", "5304"])
    try:
        time.sleep(0.3)
        out = netns.run(s.guest_ns, ["iperf3", "-c", HOST_IP, "-p", "5304", "-R", "-P", "4", "-t", "3", "-J"],
                        timeout=30)
        received = json.loads(out.stdout)["end"]["sum_received"]["bytes"]
        assert received > 1024 * 1024
    finally:
        server.kill()
        server.wait()


def run_stack(up_args: tuple[str, ...], traffic: Callable[[DemoStack], None] = exact_transfers
              ) -> tuple[dict[str, Any], dict[str, int]]:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    s = DemoStack(up_args=up_args)
    pid: int | None = None
    try:
        s.start()
        pid = s.up_pid
        traffic(s)
        assert s.env.host.fault(s.guid) is None
        before = s.live_counters().get("tx_packets", 0)
        deadline = time.monotonic() + 10
        counters = s.live_counters()
        while time.monotonic() < deadline:           # the status file is rewritten every 0.5 s
            time.sleep(0.6)
            counters = s.live_counters()
            if counters.get("tx_packets", 0) == before:
                break
            before = counters.get("tx_packets", 0)
        offloads = dict(s.nic.get("offloads") or {})
    finally:
        s.close()
    assert_nothing_leaked(s, pid)
    return offloads, counters


def test_offloads_on_tcp_is_exact_and_uses_the_negotiated_path() -> None:
    offloads, c = run_stack(())
    assert offloads.get("requested") is True
    enabled = offloads.get("enabled", {})
    assert c["tx_vnet_bad"] == 0 and c["rx_rsc_drop"] == 0 and c["rx_bad_rndis"] == 0
    if enabled.get("lso4"):
        assert c["tx_gso"] > 0 and c["tx_lso"] > 0       # the tap handed over TSO frames, LSO sent them
    elif enabled.get("tx_csum_tcp4"):
        assert c["tx_gso"] == 0 and c["tx_csum_ppi"] > 0
    else:
        assert c["tx_gso"] == 0 and c["tx_csum_ppi"] == 0 and c["tx_sw_csum"] == 0
    if enabled.get("rx_csum"):
        assert c["rx_csum_valid"] > 0
    else:
        assert c["rx_csum_valid"] == 0


def test_no_offload_keeps_plain_frames() -> None:
    offloads, c = run_stack(("--no-offload",))
    assert offloads.get("requested") is False and offloads.get("enabled") == {}
    for name in ("tx_gso", "tx_lso", "tx_csum_ppi", "tx_sw_csum", "rx_csum_valid", "rx_rsc_frames"):
        assert c[name] == 0, name
    assert c["tx_packets"] > 0 and c["rx_packets"] > 0


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed (scripts/setup-machine.sh installs it)")
def test_host_to_guest_streams_lose_no_coalesced_frame() -> None:
    offloads, c = run_stack((), iperf3_reverse)
    if offloads.get("enabled", {}).get("rsc"):
        assert c["rx_rsc_frames"] > 0
    assert (c["rx_bad_rndis"], c["rx_rsc_drop"], c["rx_oversize"]) == (0, 0, 0)
