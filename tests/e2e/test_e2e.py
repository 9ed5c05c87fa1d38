"""End to end in namespaces: guest tap netns <-> `hvuio up` <-> emulator <-> host netns.

Each test builds a hvuio.demo.DemoStack (its own namespaces, emulated kernel + host in this
process, the NIC bound through hvuio.device.bind, `hvuio up` as a child process) and, after
tearing it down, asserts that nothing was left: namespaces, the taps inside them, the `hvuio up`
process, the sysroot. Needs root, /dev/net/tun and iproute2 (skipped with the reason otherwise).
Traffic stays between the two namespaces; waits are bounded; nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from support.demo_stack import live_counter_at_least, pid_alive, running_stack

from hvuio.netdev import netns
from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, max_guest_mtu, ping, tcp_transfer, udp_check
from hvuio.sim.host.profile import ETH_HEADER_LEN, MAX_NDIS_MTU, SEND_SECTION_SIZE, HostProfile
from hvuio.sim.vsp import fastpath

JUMBO_MTU = 4000
MAX_MTU = max_guest_mtu(SEND_SECTION_SIZE)  # 6144 - 44 - 14 = 6086: the largest without GPA-direct
HOST_MAX_MTU = MAX_NDIS_MTU - ETH_HEADER_LEN  # 9202: the emulated host allows frames up to 9216 (OpenVMM)


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[DemoStack]:
    """A running stack; `@pytest.mark.parametrize("stack", [mtu], indirect=True)` sets the MTU."""
    with running_stack(mtu=getattr(request, "param", 1500)) as s:
        yield s


def link(ns: str, ifname: str) -> dict[str, Any]:
    out = netns.ip("-n", ns, "-j", "link", "show", "dev", ifname).stdout
    return dict(json.loads(out)[0])


def neighbour_mac(ns: str, address: str) -> str | None:
    for entry in json.loads(netns.ip("-n", ns, "-j", "neigh", "show", address).stdout or "[]"):
        if entry.get("lladdr"):
            return str(entry["lladdr"]).lower()
    return None


def test_arp_resolves_both_macs_and_ping_crosses(stack: DemoStack) -> None:
    result = ping(stack.guest_ns, HOST_IP, count=3)
    assert result["ok"] and result["received"] == 3, result["output"]
    host_mac = ":".join(f"{b:02x}" for b in stack.net.mac)
    assert neighbour_mac(stack.guest_ns, HOST_IP) == host_mac
    assert neighbour_mac(stack.host_ns, GUEST_IP) == stack.nic["mac"].lower()
    back = ping(stack.host_ns, GUEST_IP, count=3)  # and the other way round
    assert back["ok"] and back["received"] == 3, back["output"]


def test_tcp_bulk_transfer_is_byte_exact(stack: DemoStack) -> None:
    nbytes = 16 * 1024 * 1024
    result = tcp_transfer(stack.guest_ns, stack.host_ns, HOST_IP, nbytes, seed=11)
    assert result["received"]["bytes"] == nbytes
    assert result["received"]["sha256"] == result["sent"]["sha256"]
    # the other direction: host network -> emulator -> guest receive path
    back = tcp_transfer(stack.host_ns, stack.guest_ns, GUEST_IP, nbytes, seed=12)
    assert back["received"]["bytes"] == nbytes
    assert back["received"]["sha256"] == back["sent"]["sha256"]
    assert stack.env.host.fault(stack.guid) is None


def test_udp_datagrams_of_varied_sizes_arrive_intact(stack: DemoStack) -> None:
    sizes = [40, 64, 100, 333, 512, 999, 1400, 1472]  # 1472 = 1500 - IP - UDP headers
    count = 2000
    before = stack.host_status()["counters"]["frames_from_guest"]
    result = udp_check(stack.guest_ns, stack.host_ns, HOST_IP, count, sizes)
    got = result["received"]
    assert result["sent"]["sent"] == count
    assert got["corrupt"] == 0
    assert got["unique"] == got["datagrams"] == count, (got, stack.live_counters())
    assert got["bytes"] == sum(sizes[i % len(sizes)] for i in range(count))
    assert stack.host_status()["counters"]["frames_from_guest"] - before >= count
    back = udp_check(stack.host_ns, stack.guest_ns, GUEST_IP, count, sizes)
    assert back["received"]["corrupt"] == 0 and back["received"]["unique"] == count


@pytest.mark.parametrize("aggregate", [True, False], ids=["aggregated", "no-tx-aggregation"])
def test_a_burst_of_small_datagrams_shares_sends_within_the_host_limits(aggregate: bool) -> None:
    """Unpaced, frames queue on the tap faster than one by one: the pump packs those it reads
    together into one send section; the strict emulated host logs any breach of the RNDIS limits
    it announced (count, alignment) and must log none. --no-tx-aggregation: one frame per send."""
    with running_stack(up_args=() if aggregate else ("--no-tx-aggregation",)) as stack:
        assert stack.nic["tx_aggregation"]["max_packets"] > 1
        _burst(stack, aggregate)


def _burst(stack: DemoStack, aggregate: bool) -> None:
    result = udp_check(stack.guest_ns, stack.host_ns, HOST_IP, 20000, [40, 64, 100, 333], pace=0.0)
    got = result["received"]
    assert got["corrupt"] == 0 and got["unique"] == got["datagrams"] > 0

    def host_has_all() -> bool:  # every frame the guest counts as sent reached the host
        return bool(stack.live_counters().get("tx_packets", -1)
                    == stack.host_status()["counters"]["frames_from_guest"])

    assert stack.env.host.wait_for(host_has_all, timeout=10), (stack.live_counters(), stack.host_status())
    live = stack.live_counters()
    if aggregate:
        assert 0 < live["tx_sends"] < live["tx_packets"], live
    else:
        assert live["tx_sends"] == live["tx_packets"], live
    assert stack.host_status()["rejections"] == []


@pytest.mark.parametrize("stack", [1500, JUMBO_MTU, MAX_MTU], indirect=True, ids=lambda m: f"mtu{m}")
def test_full_size_frames_with_dont_fragment(stack: DemoStack) -> None:
    mtu = stack.mtu
    assert stack.nic["mtu"] == mtu
    assert link(stack.guest_ns, stack.tap)["mtu"] == mtu
    payload = mtu - 28  # IPv4 + ICMP headers: the IP packet is exactly the MTU
    result = ping(stack.guest_ns, HOST_IP, count=3, size=payload, dont_fragment=True)
    assert result["ok"] and result["received"] == 3, result["output"]
    back = ping(stack.host_ns, GUEST_IP, count=3, size=payload, dont_fragment=True)
    assert back["ok"] and back["received"] == 3, back["output"]
    assert live_counter_at_least(stack, "tx_packets", 3)
    live = stack.live_counters()
    assert live.get("tx_oversize", 0) == 0 and live.get("rx_oversize", 0) == 0


@pytest.mark.parametrize("stack", [9000, HOST_MAX_MTU], indirect=True, ids=lambda m: f"mtu{m}")
def test_jumbo_frames_cross_gpa_direct_both_ways(stack: DemoStack) -> None:
    """Frames larger than a send section leave the guest GPA-direct from its guest memory; the
    host delivers them whole into receive sections sized for the MTU. Full-MTU pings both ways
    unfragmented, and TCP both ways byte-exact."""
    mtu = stack.mtu
    assert stack.nic["mtu"] == mtu and stack.nic["tx_path"].startswith("gpa-direct")
    assert link(stack.guest_ns, stack.tap)["mtu"] == mtu
    payload = mtu - 28
    out = ping(stack.guest_ns, HOST_IP, count=3, size=payload, dont_fragment=True)
    assert out["ok"] and out["received"] == 3, out["output"]
    back = ping(stack.host_ns, GUEST_IP, count=3, size=payload, dont_fragment=True)
    assert back["ok"] and back["received"] == 3, back["output"]
    assert live_counter_at_least(stack, "tx_gpa", 3), stack.live_counters()
    there = tcp_transfer(stack.guest_ns, stack.host_ns, HOST_IP, 8 << 20, seed=21)
    assert there["exact"], there
    home = tcp_transfer(stack.host_ns, stack.guest_ns, GUEST_IP, 8 << 20, seed=22)
    assert home["exact"], home
    live = stack.live_counters()
    assert live.get("tx_oversize", 0) == 0 and live.get("rx_oversize", 0) == 0 and live.get("tx_errors", 0) == 0
    assert stack.host_status()["rejections"] == []


def test_without_gpa_direct_a_jumbo_mtu_is_lowered_to_what_a_section_carries() -> None:
    with running_stack(mtu=9000, up_args=("--no-gpa",)) as stack:
        assert stack.nic["mtu"] == MAX_MTU and stack.nic["mtu_asked"] == 9000
        assert stack.nic["tx_path"].startswith("send buffer")
        assert link(stack.guest_ns, stack.tap)["mtu"] == MAX_MTU
        out = ping(stack.guest_ns, HOST_IP, count=3, size=MAX_MTU - 28, dont_fragment=True)
        assert out["ok"] and out["received"] == 3, out["output"]
        assert stack.live_counters().get("tx_gpa", 0) == 0


def test_host_frame_larger_than_the_guest_mtu_is_dropped_and_counted(stack: DemoStack) -> None:
    # The host network's tap MTU is raised: the host kernel sends 2542-byte frames towards a
    # guest that negotiated 1500. The emulated host refuses to put them in a receive section.
    netns.ip("-n", stack.host_ns, "link", "set", "dev", stack.host_ifname, "mtu", "3000")
    before = stack.host_status()["nvsp_counters"]["rx_dropped_too_big"]
    big = ping(stack.host_ns, GUEST_IP, count=3, interval=0.2, size=2500, dont_fragment=True)
    assert big.get("received") == 0, big["output"]
    assert stack.env.host.wait_for(
        lambda: stack.host_status()["nvsp_counters"]["rx_dropped_too_big"] - before >= 3, timeout=10)
    assert stack.live_counters().get("rx_oversize", 0) == 0  # nothing oversized got through
    ok = ping(stack.host_ns, GUEST_IP, count=3)
    assert ok["ok"] and ok["received"] == 3, ok["output"]
    assert stack.env.host.fault(stack.guid) is None


def test_host_link_changes_follow_on_the_tap_carrier(stack: DemoStack) -> None:
    dev = stack.env.nics[0]

    def lower_up() -> bool:
        return "LOWER_UP" in link(stack.guest_ns, stack.tap)["flags"]

    # a tap with carrier reports operstate UNKNOWN (tun never sets dormant/up itself), as hvuio.netdev.tap expects
    assert lower_up() and link(stack.guest_ns, stack.tap)["operstate"] in ("UP", "UNKNOWN")
    stack.env.host.set_link(dev, up=False)
    assert stack.env.host.wait_for(lambda: not lower_up(), timeout=10)
    state = link(stack.guest_ns, stack.tap)
    assert "NO-CARRIER" in state["flags"] and state["operstate"] == "DOWN"
    down = ping(stack.guest_ns, HOST_IP, count=2)
    assert down.get("received") == 0
    stack.env.host.set_link(dev, up=True)
    assert stack.env.host.wait_for(lambda: lower_up() and link(stack.guest_ns, stack.tap)["operstate"] != "DOWN",
                                   timeout=10)
    assert live_counter_at_least(stack, "link_changes", 2)
    ok = ping(stack.guest_ns, HOST_IP, count=3)
    assert ok["ok"] and ok["received"] == 3, ok["output"]


def test_sigterm_stops_a_running_up_cleanly(stack: DemoStack) -> None:
    assert ping(stack.guest_ns, HOST_IP, count=2)["ok"]
    pid = stack.up_pid
    assert pid is not None and pid_alive(pid)
    down = stack.stop_up()  # SIGTERM, then waits; raises if the exit code is not 0
    assert down is not None and down["signal"] == signal.SIGTERM
    assert down["counters"]["tx_packets"] >= 2 and down["counters"]["rx_packets"] >= 2
    assert not pid_alive(pid)
    assert stack.tap not in netns.list_links(prefix="", netns=stack.guest_ns)  # the tap went with it
    assert stack.env.host.wait_for(lambda: not stack.host_status()["open"])  # the host saw the close
    assert stack.env.host.fault(stack.guid) is None
    assert "Traceback" not in stack.up_stderr


@pytest.mark.parametrize(("kernel", "monitored"), [("4.19", True), ("6.12", True), ("6.17", False)],
                         ids=["4.19", "6.12", "6.17-irq-signal"])
def test_ping_and_tcp_on_other_kernel_profiles(kernel: str, monitored: bool) -> None:
    """Kernels up to 6.16 mask the inbound ring on every interrupt; non-monitored channels are
    signalled by write(1) on the uio fd (VMBUS.md §1.10, 3.12): the data path must work with each."""
    with running_stack(kernel=kernel, monitored=monitored) as s:
        assert s.nic["monitored"] is monitored
        result = ping(s.guest_ns, HOST_IP, count=3)
        assert result["ok"] and result["received"] == 3, result["output"]
        tcp = tcp_transfer(s.guest_ns, s.host_ns, HOST_IP, 4 * 1024 * 1024, seed=21)
        assert tcp["received"]["sha256"] == tcp["sent"]["sha256"]
        assert s.env.host.fault(s.guid) is None


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast-path", "python-host"])
@pytest.mark.parametrize("layout", ["openvmm", "compact"])
def test_ping_and_tcp_under_each_receive_layout(layout: str, fast: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's receive layouts (HostProfile.rx_layout; openvmm: whole-section ranges, the frame
    at byte 256) reach the guest's parser byte-exact, from the C host data path and the Python one."""
    if fast == "1" and not fastpath.available():
        pytest.skip("hvuio.sim._simhost not built")
    monkeypatch.setenv(fastpath.ENV, fast)
    profile = HostProfile(link_flap_delay=0.0, rx_layout=layout)  # type: ignore[arg-type]
    with running_stack(host_profile=profile) as s:
        result = ping(s.guest_ns, HOST_IP, count=3)
        assert result["ok"] and result["received"] == 3, result["output"]
        for src, dst, ip, seed in ((s.guest_ns, s.host_ns, HOST_IP, 31), (s.host_ns, s.guest_ns, GUEST_IP, 32)):
            tcp = tcp_transfer(src, dst, ip, 4 * 1024 * 1024, seed=seed)
            assert tcp["received"]["bytes"] == 4 * 1024 * 1024
            assert tcp["received"]["sha256"] == tcp["sent"]["sha256"]
        c = s.env.host.counters(s.env.nics[0])
        assert c.fastpath == int(fast) and s.env.host.fault(s.guid) is None
        assert s.env.host.status()[s.guid]["rx_layout"] == layout
        assert s.env.host.wait_for(lambda: s.live_counters().get("rx_ranges_written", 0) > 1000, timeout=10)
        live = s.live_counters()
        assert live["rx_range_drops"] == 0 and live["rx_bad_rndis"] == 0, live
