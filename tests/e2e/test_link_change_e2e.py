"""End to end: the host's network change and repeated media connect, as a Linux guest answers
them (VMBUS.md §4.25): the guest tap's carrier drops and returns (seen through netlink), and the
wire namespace receives a gratuitous ARP and an unsolicited neighbour advertisement from the guest
(seen by a raw socket there); a link speed change reaches the `up` status record. Needs root,
/dev/net/tun and iproute2; waits are bounded."""

from __future__ import annotations

import ipaddress
import json
import struct
from collections.abc import Callable, Iterator

import pytest
from support.capture import Capture
from support.demo_stack import live_counter_at_least, running_stack

from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, ping
from hvuio.netdev import netns

GUEST_IP6 = "fd00:5::2"


@pytest.fixture
def stack() -> Iterator[DemoStack]:
    with running_stack() as s:
        yield s


def lower_up(stack: DemoStack) -> bool:
    out = netns.ip("-n", stack.guest_ns, "-j", "link", "show", "dev", stack.tap).stdout
    return "LOWER_UP" in json.loads(out)[0]["flags"]


def test_network_change_drops_and_restores_the_carrier(stack: DemoStack) -> None:
    assert lower_up(stack)
    stack.env.host.indicate(stack.env.nics[0], "network_change")
    assert stack.env.host.wait_for(lambda: not lower_up(stack), timeout=10)
    assert stack.env.host.wait_for(lambda: lower_up(stack), timeout=10)   # LINKCHANGE_INT later
    assert live_counter_at_least(stack, "network_changes", 1)
    ok = ping(stack.guest_ns, HOST_IP, count=3)
    assert ok["ok"] and ok["received"] == 3, ok["output"]


def is_garp(mac: bytes, ip: str) -> Callable[[bytes], bool]:
    want = ipaddress.IPv4Address(ip).packed

    def match(f: bytes) -> bool:
        return (len(f) >= 42 and f[12:14] == b"\x08\x06" and f[6:12] == mac and f[:6] == b"\xff" * 6
                and struct.unpack_from("!H", f, 20)[0] == 1 and f[28:32] == want and f[38:42] == want)
    return match


def is_unsolicited_na(mac: bytes, ip: str) -> Callable[[bytes], bool]:
    want = ipaddress.IPv6Address(ip).packed

    def match(f: bytes) -> bool:
        return (len(f) >= 78 and f[12:14] == b"\x86\xdd" and f[6:12] == mac and f[20] == 58 and f[54] == 136
                and f[38:54] == ipaddress.IPv6Address("ff02::1").packed and f[62:78] == want
                and not f[58] & 0x40)   # Solicited clear
    return match


def test_repeated_media_connect_announces_the_guest_addresses(stack: DemoStack) -> None:
    # the demo's guest namespace has IPv6 off: turn it on for the tap and give it an address
    netns.run(stack.guest_ns, ["sysctl", "-qw", f"net.ipv6.conf.{stack.tap}.disable_ipv6=0"])
    netns.ip("-n", stack.guest_ns, "addr", "add", f"{GUEST_IP6}/64", "dev", stack.tap, "nodad")
    mac = bytes.fromhex(stack.nic["mac"].replace(":", ""))
    with Capture(stack.host_ns, stack.net.ifname) as cap:
        stack.env.host.indicate(stack.env.nics[0], "media_connect")
        assert cap.wait_for(is_garp(mac, GUEST_IP)) is not None
        assert cap.wait_for(is_unsolicited_na(mac, GUEST_IP6)) is not None
    assert live_counter_at_least(stack, "peer_notifications", 1) and live_counter_at_least(stack, "peer_frames_sent", 2)
    assert lower_up(stack)                                                   # the carrier was not touched


def test_link_speed_change_reaches_the_status_record(stack: DemoStack) -> None:
    assert stack.nic["link_speed_bps"] == 10_000_000_000                     # bring-up's speed query
    stack.env.host.indicate(stack.env.nics[0], "link_speed", 2_500_000_000)
    assert live_counter_at_least(stack, "link_speed_changes", 1)
    assert stack.sysroot is not None
    record = json.loads((stack.sysroot / "run/hvuio/up" / f"{stack.guid}.json").read_text())
    assert record["nic"]["link_speed_bps"] == 2_500_000_000 and record["counters"]["link_speed_mbps"] == 2_500
    assert record["counters"].get("indications_dropped", 0) == 0 and lower_up(stack)  # the carrier was not touched
