"""SimHost end to end over the emulator's real shared memory: our guest pieces, driven by hand.

`RingGuest` (tests/support/ring_guest.py) plays a minimal engine with the existing guest parts
only: hvuio.device (bind, UioHandle, the irq socket), hvuio.native.ring.Ring (the C ring core) for
both directions, and the sans-IO NetvscGuest. RNDIS control messages are copied into
send-buffer sections, transfer-page packets are parsed out of the receive buffer and acked, the
host is signalled through the monitor page (atomic OR, libatomic) or write(1) for non-monitored
channels. The host side is SimHost in its own threads, so everything crosses the mapping and the
sockets exactly as with a separate guest process. No timed assertions: waits are bounded polls
that fail with a message.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest

from hvuio.errors import RescindedError, UsageError
from hvuio.proto.events import (
    IndirectionTable, LinkStatus, MacAddress, Mtu, NvspReady, RndisConfigured, SubchannelsGranted,
)
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.kernel import profiles
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.wire import nvsp as wn

from support.fakenet import FakeNetwork
from support.ring_guest import COMP, INBAND, XFER, RingGuest, eth_frame
from support.simhost import OID, RST, c, rss_params
from support.toeplitz import expected_queue, flow_frame
from support.waiting import wait_until


def mac_of(nic: Any) -> bytes:
    assert nic.mac is not None
    return bytes.fromhex(nic.mac.replace(":", ""))


@pytest.fixture
def net() -> Any:
    n = FakeNetwork()
    yield n
    n.close()


def test_bring_up_traffic_and_link(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            assert g.of(NvspReady)[0].version == 0x60001
            assert MacAddress(mac_of(nic), True) in g.events  # per-device MAC
            assert g.of(Mtu) == [Mtu(1500)]  # NDIS MTU 1514 minus the Ethernet header
            assert LinkStatus(True) in g.events
            counters = env.host.counters(nic)
            assert counters.rejections == 0, env.host.status()[nic.guid]["rejections"]
            assert counters.signals_to_guest > 0 and g.h.interrupt.last_count is not None

            # network -> guest: a transfer-page packet in the data channel type, parsed by us
            frame = eth_frame(b"hello guest")
            net.inject(frame)
            g.pump(lambda: frame in g.frames, "the injected frame")
            assert env.host.counters(nic).frames_to_guest == 1

            # guest -> network: a frame in a send-buffer section
            out = eth_frame(b"hello host", src=mac_of(nic))
            tid = g.send_frame(out)
            g.pump(lambda: tid in g.tx_done, "the send completion")
            assert g.tx_done[tid] == wn.NvspStatus.SUCCESS
            assert net.sent == [out]
            assert env.host.counters(nic).frames_from_guest == 1

            # scripted link change: an RNDIS media indication arrives
            env.host.set_link(nic, False)
            g.pump(lambda: g.events[-1] == LinkStatus(False), "link down indication")
            assert env.host.status()[nic.guid]["link_up"] is False
            assert env.host.fault(nic) is None
        finally:
            g.close()


def test_reopen_requires_full_reinit(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        g.bring_up()
        g.close()
        wait_until(lambda: not env.host.status()[nic.guid]["open"], "the host to forget the session")
        # a host that kept its HostNvsp would fault on a second INIT ("INIT after the version ...")
        g2 = RingGuest(tmp_path)
        try:
            g2.bring_up()
            assert env.host.counters(nic).opens == 2
            assert env.host.fault(nic) is None
            assert env.host.counters(nic).rejections == 0
        finally:
            g2.close()


def test_corrupt_write_index_stops_the_host(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            struct.pack_into("<I", g.h.rings, 0, 5)  # outbound write_index: not a multiple of 8
            g.signal()
            wait_until(lambda: env.host.fault(nic) is not None, "the host to stop the channel")
            reason = env.host.fault(nic)
            assert reason is not None and "write_index" in reason and "0x5" in reason
            assert env.host.counters(nic).faults == 1
            assert env.host.status()[nic.guid]["fault"] == reason
        finally:
            g.close()


def test_protocol_fault_stops_serving(tmp_path: Path) -> None:
    """A well-formed ring packet the VSP refuses (a completion before set-up) ends the channel."""
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.send_packet(COMP, wn.receive_ack(), 42, 0)
            wait_until(lambda: env.host.fault(nic) is not None, "the protocol fault")
            assert "completion" in (env.host.fault(nic) or "")
            g.do(g.guest.start())  # the host stays silent afterwards
            g.pump(lambda: True, "one pass")
            assert not g.of(NvspReady)
        finally:
            g.close()


def test_subchannels_offered_and_attached(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, host_profile=HostProfile(max_subchannels=3)) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            g.do(g.guest.request_subchannels(2))
            g.pump(lambda: bool(g.of(IndirectionTable)), "the indirection table after the subchannels open")
            assert g.of(SubchannelsGranted) == [SubchannelsGranted(2)]
            subs = [c for c in nic.channels.values() if c.subchannel_id]
            assert sorted(c.subchannel_id for c in subs) == [1, 2]
            assert all(c.ring_backing is not None for c in subs)
            assert sorted(env.host.status()[nic.guid]["subchannels"]) == sorted(c.relid for c in subs)
            assert set(g.of(IndirectionTable)[0].channels) == {0, 1, 2}
        finally:
            g.close()
        wait_until(lambda: not [c for c in nic.channels.values() if c.subchannel_id], "subchannels removed")


def test_link_set_before_open_applies_at_init(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        env.host.set_link("hveth0", False)
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            assert LinkStatus(False) in g.events and LinkStatus(True) not in g.events
        finally:
            g.close()


def test_rescind_passthrough(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            env.host.rescind(nic)
            with pytest.raises(RescindedError):
                for _ in range(100):
                    g.h.interrupt.wait(0.05)
            assert nic.guid not in env.host.status()
        finally:
            g.close()


def test_non_monitored_nic_signals_through_irqcontrol(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, nic_monitored=False) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            assert g.monitor_id is None
            g.bring_up()
            frame = eth_frame(b"x")
            net.inject(frame)
            g.pump(lambda: frame in g.frames, "the frame")
            assert g.signals > 0
            # every write(1) reached the host as a signal (the last one may still be in flight)
            wait_until(lambda: env.host.counters(nic).guest_signals == g.signals, "the host to see every signal")
            # §5.12: signals while the previous one is still unconsumed are counted as unnecessary.
            # With the worker held off, at most one of three signals can find the slate clean.
            counters = env.host.counters(nic)
            base, redundant = counters.guest_signals, counters.guest_signals_redundant
            with env.host._sessions[nic.guid].lock:
                for _ in range(3):
                    g.signal()
                wait_until(lambda: counters.guest_signals == base + 3, "three signals")
                wait_until(lambda: counters.guest_signals_redundant > redundant, "a redundant signal counted")
            assert counters.guest_signals == base + 3
        finally:
            g.close()


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_bring_up_on_every_kernel_profile(tmp_path: Path, profile: str) -> None:
    with SimEnvironment(tmp_path, profile, nics=1) as env:
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            assert RndisConfigured() in g.events
            assert env.host.fault(env.nics[0]) is None
            assert env.host.counters(env.nics[0]).rejections == 0
        finally:
            g.close()


def fill_inbound_ring(session: Any) -> int:
    """Fill the primary's inbound ring from the host side (as heavy traffic would) with in-band
    packets of 4000, then 16 bytes; how many were written."""
    writer = session.channels[0].writer
    junk = 0
    with session.lock:
        for size in (4000, 16):
            while True:
                try:
                    writer.write(INBAND, bytes(size), trans_id=0)
                except BlockingIOError:
                    break
                junk += 1
    return junk


def test_full_inbound_ring_queues_and_resumes_on_the_guests_signal(tmp_path: Path) -> None:
    """The host fills the inbound ring itself (as heavy traffic would), then a control packet
    (a link indication) must wait in order, with pending_send_sz set, until the guest frees space
    and signals (VMBUS.md §3.11 b/c); nothing is dropped."""
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            session = env.host._sessions[nic.guid]
            junk = fill_inbound_ring(session)
            env.host.set_link(nic, False)
            wait_until(lambda: env.host.counters(nic).inbound_full >= 1, "the host to meet the full ring")
            assert g.rx.pending_send_sz > 0  # the host asked to be told when space is free
            seen = 0
            while seen < junk:  # the guest drains the filler, signalling as §3.11 b says
                batch = g.rx.read_batch(64)
                for p in batch.packets:
                    if p.type == INBAND and p.trans_id == 0 and len(p.payload) in (4000, 16):
                        seen += 1
                    else:  # what the host wrote before the filler
                        g._handle(p)
                if batch.need_signal:
                    g.signal()
            g.pump(lambda: bool(g.events) and g.events[-1] == LinkStatus(False), "the queued indication")
            wait_until(lambda: g.rx.pending_send_sz == 0, "pending_send_sz cleared after the backlog")
            assert env.host.counters(nic).backlog_max >= 1 and env.host.fault(nic) is None
        finally:
            g.close()


def test_network_frames_meeting_a_full_inbound_ring_are_dropped_and_counted(tmp_path: Path) -> None:
    """Data is not queued behind a full ring: the batch is dropped, counted (rx_ring_full, as
    OpenVMM's rx_dropped_ring_full) and its sections freed; once the guest reads, frames flow."""
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            session = env.host._sessions[nic.guid]
            junk = fill_inbound_ring(session)
            frame = eth_frame(b"ring full")
            env.host.deliver(nic, [frame, frame])
            wait_until(lambda: env.host.counters(nic).rx_ring_full == 2, "the host to drop the batch")
            c = env.host.counters(nic)
            assert c.inbound_full == 0 and c.backlog_max == 0 and not session.channels[0].backlog
            assert session.nvsp.counters["rx_dropped_ring_full"] == 2 and session.nvsp.outstanding_receives == 0
            seen = 0
            while seen < junk:
                batch = g.rx.read_batch(64)
                for p in batch.packets:
                    if p.type == INBAND and p.trans_id == 0 and len(p.payload) in (4000, 16):
                        seen += 1
                    else:
                        g._handle(p)
                if batch.need_signal:
                    g.signal()
            env.host.deliver(nic, [frame])
            g.pump(lambda: frame in g.frames, "the frame after the guest made room")
            assert env.host.counters(nic).rx_ring_full == 2 and env.host.fault(nic) is None
        finally:
            g.close()


def test_two_nics_share_the_network_as_a_hub(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=2, network=net) as env:
        guests = [RingGuest(tmp_path, "hveth0"), RingGuest(tmp_path, "hveth1")]
        try:
            for g in guests:
                g.bring_up()
            macs = [g.of(MacAddress)[0].mac for g in guests]
            assert macs[0] != macs[1]
            frame = eth_frame(b"to everyone")
            net.inject(frame)
            for g in guests:
                g.pump(lambda g=g: frame in g.frames, "the frame on each NIC")  # type: ignore[misc]
            assert [env.host.counters(n).frames_to_guest for n in env.nics] == [1, 1]
        finally:
            for g in guests:
                g.close()


def test_monitor_bit_clear_is_atomic_for_other_bits(tmp_path: Path) -> None:
    """Consuming one trigger bit must leave every other bit of the shared word alone (VMBUS.md §3.12)."""
    from hvuio.sim.vsp.memory import MonitorPage

    page = tmp_path / "monitor_page"
    page.write_bytes(bytes(4096))
    mon = MonitorPage(page)
    try:
        assert mon.atomic, "this platform should have futex(FUTEX_WAKE_OP)"
        struct.pack_into("<I", mon.mm, 8 + 8, (1 << 3) | (1 << 31))  # group 1: ids 35 and 63
        assert not mon.take(34)
        assert mon.take(35)
        assert struct.unpack_from("<I", mon.mm, 16)[0] == 1 << 31
        assert not mon.take(35)
        assert mon.take(63) and struct.unpack_from("<I", mon.mm, 16)[0] == 0
        struct.pack_into("<H", mon.mm, 576 + 2 * 35, 500)  # latency[1][3] = 50 µs in 100 ns units
        assert mon.latency(35) == pytest.approx(50e-6) and mon.latency(36) is None
        assert not mon.take(200) and mon.latency(-1) is None
    finally:
        mon.close()


def test_guest_arp_reaches_a_real_kernel_stack(tmp_path: Path) -> None:
    """Root only: SimHost behind a HostNetwork (tap in its own namespace): an ARP request from the
    guest's send buffer is answered by that namespace's kernel and delivered back to the guest."""
    from support.namespaces import netns_skip_reason

    from hvuio.sim.net import DEFAULT_GUEST_ADDRESS, DEFAULT_HOST_ADDRESS, HostNetwork

    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    import socket

    net = HostNetwork.create()
    try:
        with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
            g = RingGuest(tmp_path)
            try:
                g.bring_up()
                mac = mac_of(env.nics[0])
                me = socket.inet_aton(DEFAULT_GUEST_ADDRESS.split("/")[0])
                them = socket.inet_aton(DEFAULT_HOST_ADDRESS.split("/")[0])
                arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, me, bytes(6), them)
                tid = g.send_frame(b"\xff" * 6 + mac + b"\x08\x06" + arp.ljust(46, b"\0"))
                g.pump(lambda: tid in g.tx_done, "the send completion")

                def reply() -> bool:
                    return any(f[:6] == mac and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02"
                               and f[28:32] == them for f in g.frames)

                g.pump(reply, "the ARP reply from the host namespace's kernel")
                # the host's C pump folds its counters into the network's when it returns to Python
                assert env.host.wait_for(lambda: net.counters.to_net_frames >= 1
                                         and net.counters.from_net_frames >= 1, timeout=5.0)
            finally:
                g.close()
    finally:
        net.close()


def test_deliver_and_rx_fault_injection(tmp_path: Path) -> None:
    """SimHost.deliver puts frames in the inbound ring without a network; `inject` corrupts what
    the host writes (VMBUS.md §5.14) so guest checks can be exercised: here the pageset id."""
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            frame = eth_frame(b"direct")
            env.host.deliver(nic, [frame, frame])
            g.pump(lambda: g.frames == [frame, frame], "two delivered frames")
            env.host.deliver("hveth0", [frame], inject="pageset")
            seen: list[Any] = []

            def corrupted() -> bool:
                seen.extend(p for p in g.rx.read_batch(64).packets if p.type == XFER)
                return bool(seen)

            wait_until(corrupted, "the corrupted transfer-page packet")
            (pageset,) = struct.unpack_from("<H", seen[0].header)
            assert pageset != wn.RECV_BUFFER_ID
            assert env.host.counters(nic).frames_to_guest == 3
            env.host.deliver(nic, [frame], channel=5)  # never granted: logged, nothing sent, host alive
            env.host.deliver(nic, [frame])
            g.pump(lambda: len(g.frames) == 3, "the next good frame")
            assert env.host.fault(nic) is None
        finally:
            g.close()
        wait_until(lambda: not env.host.status()[nic.guid]["open"], "the close to reach the host")
        with pytest.raises(UsageError, match="is not open"):
            env.host.deliver(nic, [frame])


def frames_of_flows(rnd: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        v6 = i % 3 == 2
        src = f"fd00::{rnd.randrange(1, 65535):x}" if v6 else f"198.18.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        dst = "fd00::1" if v6 else "198.18.0.1"
        out.append(flow_frame(src, dst, rnd.choice((6, 17)), rnd.randrange(65536), rnd.randrange(65536),
                              payload=i.to_bytes(4, "big")))
    return out


RSS_DISABLE = 0x10  # NDIS_RSS_PARAM_FLAG_DISABLE_RSS


def test_frames_reach_the_channel_the_rss_table_names(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, host_profile=HostProfile(max_subchannels=3)) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            g.do(g.guest.request_subchannels(3))
            g.pump(lambda: bool(g.of(IndirectionTable)), "the indirection table after the subchannels open")
            g.pump(lambda: g.guest.rss is not None, "the guest's own RSS set after the grant")
            subs = [ch for ch in nic.channels.values() if ch.subchannel_id]
            g.attach_subchannels([(ch.subchannel_id, ch.ring_backing, ch.ring_size) for ch in subs])
            assert g.rndis_set(c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS"),
                               rss_params(flags=RSS_DISABLE)) == c(RST, "RNDIS_STATUS_SUCCESS")
            assert not env.host.status()[nic.guid]["rss"]["enabled"]
            rnd = random.Random(5)
            before = frames_of_flows(rnd, 12)
            net.inject(*before)  # RSS off: OpenVMM's backend has RSS off, queue 0 takes all
            g.pump(lambda: all(f in g.frames for f in before), "the frames on the primary")
            assert g.read_subchannels() == 0

            key = rnd.randbytes(40)
            table = [rnd.randrange(4) for _ in range(128)]
            assert g.rndis_set(c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS"),
                               rss_params(tuple(table), key=key)) == c(RST, "RNDIS_STATUS_SUCCESS")
            shown = env.host.status()[nic.guid]["rss"]
            assert {k: shown[k] for k in ("enabled", "hash_types", "table_size", "queues")} == {
                "enabled": True, "hash_types": ["IPV4", "TCP_IPV4", "IPV6", "TCP_IPV6"], "table_size": 128,
                "queues": 4}
            assert shown["key"] == key.hex() and shown["table"] == table
            frames = frames_of_flows(rnd, 40)
            g.frames.clear()
            net.inject(*frames)
            g.pump(lambda: g.read_subchannels() >= 0 and len(g.frames) + sum(map(len, g.sub_frames.values()))
                   >= len(frames), "every frame on some channel")
            got = {f: 0 for f in g.frames}
            for index, fs in g.sub_frames.items():
                got.update({f: index for f in fs})
            want = {f: expected_queue(f, key, table, 0x1701, 4) for f in frames}  # Linux's hash types
            assert got == want
            assert len(set(want.values())) == 4  # every queue got some
        finally:
            g.close()


def test_frames_for_a_subchannel_not_open_yet_wait_for_its_ring(tmp_path: Path, net: FakeNetwork) -> None:
    """A granted subchannel whose `ring` is not there yet: its frames sit in receive sections and
    their packet goes out when the ring appears (OpenVMM's backend queue holds them until the
    channel's worker runs); the primary's arrive at once."""
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, host_profile=HostProfile(max_subchannels=3),
                        ring_delay=3600) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            g.do(g.guest.request_subchannels(3))
            g.pump(lambda: bool(g.of(SubchannelsGranted)), "the subchannel grant")
            g.pump(lambda: g.guest.rss is not None, "the guest's own RSS set after the grant")
            rnd = random.Random(8)
            key = rnd.randbytes(40)
            table = [rnd.randrange(4) for _ in range(128)]
            assert g.rndis_set(c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS"),
                               rss_params(tuple(table), key=key)) == c(RST, "RNDIS_STATUS_SUCCESS")
            frames = frames_of_flows(rnd, 24)
            want = {f: expected_queue(f, key, table, 0x1701, 4) for f in frames}
            net.inject(*frames)
            g.pump(lambda: sum(f in g.frames for f in frames) == sum(1 for q in want.values() if q == 0),
                   "the primary's frames")
            session = env.host._sessions[nic.guid]
            wait_until(lambda: env.host.counters(nic).frames_to_guest == len(frames), "every frame in a section")
            assert not [ch for ch in nic.channels.values() if ch.subchannel_id and ch.ring_backing is not None]
            assert sorted(session.unattached) == sorted({q for q in want.values() if q})  # waiting packets
            assert not g.of(IndirectionTable)  # not all channels open yet
            env.kernel.fire_timers()  # the rings appear
            g.pump(lambda: bool(g.of(IndirectionTable)), "the indirection table once all are open")
            subs = [ch for ch in nic.channels.values() if ch.subchannel_id]
            g.attach_subchannels([(ch.subchannel_id, ch.ring_backing, ch.ring_size) for ch in subs])
            # the host's worker sends the table on the primary before it flushes the waiting packets
            # onto the subchannels: read until every one of them has come (or time out)
            on_subs = sum(1 for q in want.values() if q)

            def arrived() -> bool:
                g.read_subchannels()
                return sum(map(len, g.sub_frames.values())) >= on_subs

            wait_until(arrived, "the waiting frames on the subchannels")
            got = {f: 0 for f in g.frames if f in want}
            for index, fs in g.sub_frames.items():
                got.update({f: index for f in fs})
            assert got == want and not session.unattached
        finally:
            g.close()
