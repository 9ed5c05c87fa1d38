"""End to end: 802.1Q out of band. With the emulated host's `vlan_oob` (a trunk-mode Hyper-V port)
the wire's tags reach the guest in the 802.1Q per-packet info and the guest's in the other
direction, with the host's C fast path on and off:
  * tagged frames sent raw on one side arrive on the other with their tag (priority and DEI
    included), seen by a raw socket there (the kernel hands the tag over as packet metadata);
  * a tagged TCP GSO frame from the network reaches the guest's tap whole, as one coalesced frame
    with its tag and a virtio_net_hdr the guest kernel accepts (Python host path), and a tagged
    GSO packet sent on the guest's tap leaves as LSO packets that reach the wire with the tag;
  * VLAN sub-interfaces on the guest's tap and on the wire's tap carry ping and TCP both ways
    (skipped on a kernel without 802.1Q support).
Needs root, /dev/net/tun and iproute2; waits are bounded; nothing asserts on elapsed time."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from support.demo_stack import live_counter_at_least, running_stack
from support.namespaces import netns_skip_reason

from support.capture import Capture, send_frame
from support.sim_offload import gso_from_net, payload

from hvuio.demo import DemoStack, ping, tcp_transfer
from hvuio.errors import PlatformError
from hvuio.netdev import netns
from hvuio.sim.host import vlan
from hvuio.sim.vsp import fastpath

VID = 5
GUEST_VLAN_IP, HOST_VLAN_IP = "198.19.5.2", "198.19.5.1"


@pytest.fixture(params=["1", "0"], ids=["fastpath", "python"])
def stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[DemoStack]:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if request.param == "1" and not fastpath.available():
        pytest.skip("hvuio.sim._simhost not built")
    monkeypatch.setenv(fastpath.ENV, request.param)
    with running_stack(vlan_oob=True) as s:
        yield s


ETH_TEST = 0x88B5   # IEEE 802 local experimental EtherType: nothing on either side answers it


def test_tagged_frames_cross_both_ways_with_their_tag(stack: DemoStack) -> None:
    guest_mac = bytes.fromhex(stack.nic["mac"].replace(":", ""))
    host_mac = bytes(stack.net.mac)
    cases = [(5, 3, 0), (4094, 7, 1), (1, 0, 0)]
    with Capture(stack.guest_ns, stack.tap, (ETH_TEST,)) as cap:
        for i, (vid, pri, dei) in enumerate(cases):
            payload = b"to the guest %d " % i + bytes(range(40))
            tci = pri << 13 | dei << 12 | vid
            send_frame(stack.host_ns, stack.host_ifname,
                       guest_mac + host_mac + bytes.fromhex("8100") + tci.to_bytes(2, "big")
                       + ETH_TEST.to_bytes(2, "big") + payload)
            got = cap.wait_for_tagged(lambda f, t, p=payload: f.endswith(p) and f[12:14] == b"\x88\xb5")
            assert got is not None and got[1] == tci, (vid, pri, dei, got)
    with Capture(stack.host_ns, stack.host_ifname, (ETH_TEST,)) as cap:
        for i, (vid, pri, dei) in enumerate(cases):
            payload = b"to the wire %d " % i + bytes(range(40))
            tci = pri << 13 | dei << 12 | vid
            send_frame(stack.guest_ns, stack.tap,
                       host_mac + guest_mac + bytes.fromhex("8100") + tci.to_bytes(2, "big")
                       + ETH_TEST.to_bytes(2, "big") + payload)
            got = cap.wait_for_tagged(lambda f, t, p=payload: f.endswith(p) and f[12:14] == b"\x88\xb5")
            assert got is not None and got[1] == tci, (vid, pri, dei, got)
    assert live_counter_at_least(stack, "tx_vlan", 3) and live_counter_at_least(stack, "rx_vlan", 3)   # the status file's, updated each tick
    host = stack.env.host.status()[stack.guid]
    assert host["nvsp_counters"]["rx_vlan"] >= 3 and host["fault"] is None and not host["rejections"]
    assert host["counters"]["fastpath"] == (1 if fastpath.enabled() else 0)


def test_a_coalesced_tagged_tcp_frame_reaches_the_tap_with_its_tag(stack: DemoStack) -> None:
    # a TCP GSO frame from the network reaches the guest as vRSC fragments (NVSP 6.1, RSC granted),
    # the tag in the first one's 802.1Q info; the guest writes it whole with the tag put back and a
    # virtio_net_hdr whose offsets count it, which the guest kernel must accept
    if fastpath.enabled():
        pytest.skip("SimHost.deliver feeds the Python path; the pump owns the receive sections here")
    data = payload(6000)
    tci = 2 << 13 | VID
    frame = vlan.insert(gso_from_net(data, 1448), vlan.info_of_tci(tci))
    with Capture(stack.guest_ns, stack.tap, (0x0800,)) as cap:
        stack.env.host.deliver(stack.env.nics[0], [frame])
        got = cap.wait_for_tagged(lambda f, t: f.endswith(data[-200:]))
    assert got is not None, stack.live_counters()
    f, t = got
    assert t == tci and f[12:14] == b"\x08\x00" and len(f) == len(frame) - 4 and f.endswith(data)
    assert stack.env.host.status()[stack.guid]["nvsp_counters"]["rx_rsc_fragments"] > 1
    assert live_counter_at_least(stack, "rx_rsc_frames", 1) and live_counter_at_least(stack, "rx_vlan", 1)
    assert stack.live_counters().get("rx_tap_drop", 0) == 0


def test_a_tagged_tcp_gso_packet_from_the_guest_leaves_as_lso_with_its_tag(stack: DemoStack) -> None:
    # a GSO packet on the guest tap: the data path takes the tag out (the vnet offsets then count
    # from the untagged frame), sends LSO packets with the 802.1Q info, and the host puts the tag
    # back onto the wire frame, whose virtio_net_hdr the wire kernel must accept
    data = payload(8000)
    tci = 5 << 13 | VID
    frame = vlan.insert(gso_from_net(data, 1448), vlan.info_of_tci(tci))
    v = frame.vnet
    hdr = struct.pack("<BBHHHH", v.flags, v.gso_type, v.hdr_len, v.gso_size, v.csum_start, v.csum_offset)
    with Capture(stack.host_ns, stack.host_ifname, (0x0800,)) as cap:
        send_frame(stack.guest_ns, stack.tap, bytes(frame), hdr)
        seen = b""
        while not seen.endswith(data):
            got = cap.wait_for_tagged(lambda f, t: t == tci and len(f) > 54)
            assert got is not None, (len(seen), stack.live_counters())
            seen += got[0][54:]
    assert seen == data
    assert live_counter_at_least(stack, "tx_gso", 1) and live_counter_at_least(stack, "tx_vlan", 1)
    assert stack.env.host.status()[stack.guid]["fault"] is None


def add_vlans(s: DemoStack) -> None:
    try:
        netns.ip("-n", s.guest_ns, "link", "add", "link", s.tap, "name", f"v{VID}", "type", "vlan", "id", str(VID))
    except PlatformError as err:
        pytest.skip(f"this kernel makes no VLAN interfaces (802.1Q support, CONFIG_VLAN_8021Q): {err.message}")
    netns.ip("-n", s.host_ns, "link", "add", "link", s.host_ifname, "name", f"v{VID}", "type", "vlan", "id", str(VID))
    for ns, ip in ((s.guest_ns, GUEST_VLAN_IP), (s.host_ns, HOST_VLAN_IP)):
        netns.ip("-n", ns, "addr", "add", f"{ip}/24", "dev", f"v{VID}")
        netns.ip("-n", ns, "link", "set", f"v{VID}", "up")


def test_ping_and_tcp_cross_a_vlan_with_tags_out_of_band(stack: DemoStack) -> None:
    add_vlans(stack)
    ok = ping(stack.guest_ns, HOST_VLAN_IP, count=3)
    assert ok["ok"] and ok["received"] == 3, ok["output"]
    back = ping(stack.host_ns, GUEST_VLAN_IP, count=3)
    assert back["ok"] and back["received"] == 3, back["output"]
    up = tcp_transfer(stack.guest_ns, stack.host_ns, HOST_VLAN_IP, 2 << 20)
    assert up["exact"], up
    down = tcp_transfer(stack.host_ns, stack.guest_ns, GUEST_VLAN_IP, 2 << 20, seed=9)
    assert down["exact"], down
    assert live_counter_at_least(stack, "tx_vlan", 1) and live_counter_at_least(stack, "rx_vlan", 1)
    assert stack.live_counters().get("rx_vlan_bad", 0) == 0
    host = stack.env.host.status()[stack.guid]
    assert host["nvsp_counters"]["rx_vlan"] > 0 and host["fault"] is None
    assert host["counters"]["fastpath"] == (1 if fastpath.enabled() else 0)
    # the untagged network still works next to the VLAN
    plain = ping(stack.guest_ns, "198.18.0.1", count=2)
    assert plain["ok"] and plain["received"] == 2, plain["output"]
