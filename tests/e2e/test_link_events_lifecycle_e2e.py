"""End to end: the host's link events against a running `hvuio up` — a network change, a link flap
(media disconnect, then connect) and a repeated media connect — each arriving in the middle of a
TCP stream and twice in a row, and each arriving while the NIC is being brought up (right after
the RNDIS initialize, before the guest's media query: the emulator's `indicate_at_init`), at
first and again in a re-initialisation's bring-up. What must hold: the stream arrives byte-exact,
the tap's carrier ends as the host's link is, and the counters say what the guest did with each
event. Needs root, /dev/net/tun and iproute2; waits are bounded."""

from __future__ import annotations

from support.demo_stack import live_counter_at_least, running_stack
from support.lifecycle import full_ping, lower_up, set_mtu, settled_at, state
from support.streams import Stream

from hvuio.demo import HOST_IP, DemoStack, ping
from hvuio.sim.host.profile import HostProfile

MIB = 1 << 20
EARLY = ("network_change", "media_disconnect", "media_connect", "media_connect")


def carrier_cycles(stack: DemoStack) -> bool:
    """The tap's carrier goes off and comes back."""
    host = stack.env.host
    return bool(host.wait_for(lambda: not lower_up(stack), timeout=10) and host.wait_for(lambda: lower_up(stack),
                                                                                           timeout=10))


def frames_told(stack: DemoStack) -> int:
    """Announcement frames the peer notifications sent or counted as failed."""
    c = stack.live_counters()
    return int(c.get("peer_frames_sent", 0) + c.get("peer_frames_failed", 0))


def more(stream: Stream) -> bool:
    at = stream.received
    return stream.wait_received(at + MIB)


def test_each_link_event_twice_in_a_row_in_the_middle_of_a_tcp_stream() -> None:
    with running_stack() as stack:
        host, nic = stack.env.host, stack.env.nics[0]
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            assert stream.wait_received(MIB)
            # network change twice in a row: the second comes while the first one's reconnect is
            # pending (carrier off) and changes nothing; a third, once the carrier is back, cycles it again
            host.indicate(nic, "network_change")
            host.indicate(nic, "network_change")
            assert carrier_cycles(stack) and live_counter_at_least(stack, "network_changes", 2)
            host.indicate(nic, "network_change")
            assert carrier_cycles(stack) and live_counter_at_least(stack, "network_changes", 3)
            assert more(stream)
            # link flap, twice
            for k in (1, 2):
                host.set_link(nic, up=False)
                assert host.wait_for(lambda: not lower_up(stack), timeout=10)
                host.set_link(nic, up=True)
                assert host.wait_for(lambda: lower_up(stack), timeout=10)
                assert live_counter_at_least(stack, "link_changes", 2 * k)
            assert more(stream)
            # a repeated media connect, twice: the peers are told each time, the carrier stays on
            host.indicate(nic, "media_connect")
            host.indicate(nic, "media_connect")
            assert live_counter_at_least(stack, "peer_notifications", 2) and lower_up(stack)
            # the status record may be written between a notification's count and its frames: wait for them
            assert host.wait_for(lambda: frames_told(stack) == 2, timeout=10), stack.live_counters()
            assert more(stream)
        finally:
            result = stream.finish()
        assert result["exact"], result
        c = stack.live_counters()
        assert (c["network_changes"], c["link_changes"], c["peer_notifications"]) == (3, 4, 2), c
        # one gratuitous ARP each (IPv4 only); one the kernel drops on a tap busy with the stream is counted
        assert c["peer_frames_sent"] >= 1 and frames_told(stack) == 2, c
        assert c["indications_dropped"] == 0 and c["link_indications_ignored"] == 0
        assert lower_up(stack) and state(stack) == "running"
        ok = ping(stack.guest_ns, HOST_IP, count=3)
        assert ok["ok"] and ok["received"] == 3, ok["output"]


def test_link_events_during_bring_up_leave_the_carrier_to_the_media_query() -> None:
    """As Linux before its netdev is registered: indications during bring-up are counted and left
    out; the carrier starts as the media query says. Again in an MTU change's bring-up."""
    profile = HostProfile(link_flap_delay=0.0, indicate_at_init=EARLY)
    with running_stack(host_mtu=9000, host_profile=profile) as stack:
        assert lower_up(stack) and state(stack) == "running"
        c = stack.live_counters()
        assert c["link_indications_ignored"] == len(EARLY), c
        assert (c["network_changes"], c["link_changes"], c["peer_notifications"], c["peer_frames_sent"]) == (0, 0, 0, 0)
        ok = ping(stack.guest_ns, HOST_IP, count=3)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
        stream = Stream(stack.guest_ns, stack.host_ns, HOST_IP)
        try:
            assert stream.wait_received(MIB)
            set_mtu(stack, 4000)                                  # a new NIC: its bring-up hears them again
            assert live_counter_at_least(stack, "mtu_changes", 1) and settled_at(stack, 4000)
            assert lower_up(stack)
            c = stack.live_counters()
            assert c["link_indications_ignored"] == len(EARLY) and c["peer_notifications"] == 0, c
            assert more(stream)
            stack.env.host.indicate(stack.env.nics[0], "network_change")   # once up, taken as ever
            assert carrier_cycles(stack) and live_counter_at_least(stack, "network_changes", 1)
            assert more(stream)
        finally:
            result = stream.finish()
        assert result["exact"], result
        ok = full_ping(stack, 4000)
        assert ok["ok"] and ok["received"] == 3, ok["output"]
