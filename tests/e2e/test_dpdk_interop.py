"""DPDK 22.11's netvsc PMD (Debian 12's packages) as a foreign guest of the emulator.

The echo program of tests/support/dpdk_echo.c runs under `hvuio sim exec` on the emulated NIC
(`sim start --wire --guest-memory-mode proc`: the PMD runs with IOVA = VA and sends frames over
its copy threshold GPA-direct, by virtual address) and answers ARP and ICMP echo; the host
network namespace pings it with small frames (send-buffer sections) and 1,400-byte frames
(GPA-direct), with one queue and with two (a subchannel; the sources are picked so that the RSS
key and table the PMD set put one on each channel, predicted with the independent Toeplitz of
tests/support/toeplitz.py), on the oldest and the newest kernel profile.
Both sides' counters must agree: every echo request reached the PMD and was answered on the queue
it came in on, the PMD's stats and xstats say the same, the emulator delivered and received
exactly those frames and logged no rejection, drop or fault. The program alone is checked too:
outside the emulator it finds no port and says so in one line (exit 2), bad arguments exit 64.

Needs root and namespaces (skipped otherwise, as the other --wire tests), and the DPDK runtime
plus libdpdk-dev's headers that scripts/setup-machine.sh provides (skipped, saying so, where apt
could not get them). docs/EMULATOR.md, "DPDK's netvsc PMD as a guest", shows how to run it by hand.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import dpdk, toeplitz
from support.namespaces import netns_skip_reason

from hvuio.sim.kernel.profiles import PROFILES

pytestmark = pytest.mark.skipif(dpdk.skip_reason() is not None, reason=str(dpdk.skip_reason()))
needs_netns = pytest.mark.skipif(netns_skip_reason() is not None, reason=str(netns_skip_reason()))

OLDEST, NEWEST = list(PROFILES)[0], list(PROFILES)[-1]
COUNT = 5  # echo requests per source and size
SMALL = 56  # ping's default payload: a 98-byte frame, copied into a send-buffer section
LARGE = 1400 - 14 - 20 - 8  # a 1,400-byte frame: over the PMD's copy threshold, sent GPA-direct
ABSENT_GUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def echo_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dpdk.build_echo(tmp_path_factory.mktemp("dpdk"))


def _run_echo(binary: Path, *app_args: str) -> subprocess.CompletedProcess[str]:
    """The echo program outside the emulator: with no VMBus device, EAL finds no port."""
    argv = [str(binary), *dpdk.eal_args(ABSENT_GUID), "--", *app_args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_echo_without_a_device_exits_with_one_reason(echo_binary: Path) -> None:
    proc = _run_echo(echo_binary, "--ip", dpdk.GUEST_IP)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    reasons = [line for line in proc.stderr.splitlines() if line.startswith("dpdk_echo: ")]
    assert len(reasons) == 1 and "no ethdev port" in reasons[0], proc.stderr


@pytest.mark.parametrize("args", [("--queues", "2"), ("--ip", "198.18.0.300"), ("--ip", dpdk.GUEST_IP, "--queues", "0"),
                                  ("--ip", dpdk.GUEST_IP, "--bogus")])
def test_echo_refuses_bad_arguments(echo_binary: Path, args: tuple[str, ...]) -> None:
    proc = _run_echo(echo_binary, *args)
    assert proc.returncode == 64 and proc.stdout == "", proc.stdout + proc.stderr
    assert sum(line.startswith("dpdk_echo: ") for line in proc.stderr.splitlines()) == 1, proc.stderr


def sources_per_channel(rss: dict[str, Any], channels: int) -> list[str]:
    """One host source address per channel, in channel order: the queue of an ICMP request from
    each candidate to the echo program, predicted from the RSS key, table and hash types the PMD
    set (the emulator's `sim status --json`) with the independent Toeplitz of support.toeplitz."""
    assert rss["enabled"], rss
    key, table = bytes.fromhex(rss["key"]), rss["table"]
    found: dict[int, str] = {}
    for last in range(1, 255):
        source = f"198.18.0.{last}"
        if source == dpdk.GUEST_IP:
            continue
        frame = toeplitz.flow_frame(source, dpdk.GUEST_IP, proto=1)
        found.setdefault(toeplitz.expected_queue(frame, key, table, rss["hash_info"], channels), source)
        if len(found) == channels:
            return [found[i] for i in range(channels)]
    raise AssertionError(f"no source address for every channel under {rss}")


@needs_netns
@pytest.mark.parametrize("queues", [1, 2])
@pytest.mark.parametrize("kernel", [OLDEST, NEWEST])
def test_dpdk_netvsc_answers_pings(echo_binary: Path, tmp_path: Path, kernel: str, queues: int) -> None:
    with dpdk.EchoStack(tmp_path, kernel) as stack:
        ready = stack.start_echo(echo_binary, queues)
        assert ready["driver"] == "net_netvsc" and ready["queues"] == queues
        assert ready["link"]["up"] and ready["mtu"] == 1500, ready
        sources = [dpdk.HOST_IP] if queues == 1 else sources_per_channel(stack.status()["rss"], queues)
        for source in sources:
            if source != dpdk.HOST_IP:
                stack.add_host_address(source)
        replies: list[tuple[str, int, int, int]] = []
        for source in sources:
            for size in (SMALL, LARGE):
                sent, received = stack.ping(COUNT, size, source)
                replies.append((source, size, sent, received))
        running = stack.status()
        code, final = stack.stop_echo()
        after = stack.status()

    # the host namespace: every request answered
    assert all(sent == received == COUNT for _, _, sent, received in replies), replies
    requests = COUNT * 2 * len(sources)

    # the echo program: clean exit, each source's requests on its channel's queue, all answered
    assert code == 0 and final is not None and final["reason"] == "signal", stack.stderr[-4000:]
    per_queue = final["queues"]
    assert len(per_queue) == queues
    for q, counts in enumerate(per_queue):
        assert counts["icmp"] == COUNT * 2 * (len(sources) if queues == 1 else 1), final
        assert counts["tx"] == counts["icmp"] + counts["arp"] and counts["tx_failed"] == 0, final
    assert sum(c["arp"] for c in per_queue) >= 1, final
    rx = sum(c["rx"] for c in per_queue)
    tx = sum(c["tx"] for c in per_queue)
    assert final["stats"]["ipackets"] == rx and final["stats"]["opackets"] == tx, final
    assert final["stats"]["ierrors"] == final["stats"]["oerrors"] == final["stats"]["rx_nombuf"] == 0, final
    xstats = final["xstats"]
    for q, counts in enumerate(per_queue):
        assert xstats[f"rx_q{q}_good_packets"] == counts["rx"], xstats
        assert xstats[f"tx_q{q}_good_packets"] == counts["tx"], xstats
        assert xstats[f"tx_q{q}_errors"] == 0 and xstats[f"rx_q{q}_errors"] == 0, xstats
        # the 1,400-byte replies: over the PMD's copy threshold (512), so sent GPA-direct
        # (DPDK/dpdk drivers/net/netvsc/hn_rxtx.c hn_xmit_pkts, which calls hn_xmit_sg)
        assert xstats[f"tx_q{q}_size_1024_1518_packets"] == counts["icmp"] // 2, xstats

    # the emulator: exactly those frames each way, subchannels as asked, nothing refused or lost
    assert running["open"] and len(running["subchannels"]) == queues - 1, running
    assert running["counters"]["fastpath"] == 1, running["counters"]  # the C pump serves every channel
    counters = after["counters"]
    assert counters["frames_to_guest"] == rx and counters["frames_from_guest"] == tx, counters
    assert requests <= rx, (requests, rx)
    for name in ("rejections", "faults", "rx_ring_full", "frames_inbox_dropped", "frames_to_network_dropped"):
        assert counters[name] == 0, counters
    assert after["fault"] is None and not running["rejections"], running
    assert running["nvsp_counters"]["tx_failed"] == 0, running["nvsp_counters"]
