"""Root/netns only: an LSO frame from the guest reaches the host network's namespace as ONE GSO
packet (virtio_net_hdr written on the tap), seen by a packet socket inside that namespace with
PACKET_VNET_HDR; and with offloads off the same frame arrives segmented. Also OpenVMM's send rules
across the whole host, C pump and Python host: a send spanning sections reaches the namespace, a
data message followed by another type fails its send. And vRSS across the whole host, C pump and
Python host: frames sent into the namespace reach the channel the guest's RSS table names."""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import pytest
from support.namespaces import NetnsFactory
from support.sim_offload import ALL, PPI_LSO, lso_info, payload, ppi, segments, tcp4
from support.toeplitz import expected_queue, flow_frame

from hvuio.sim.host import offload as ho
from hvuio.sim.net import HostNetwork
from hvuio.sim.net import packet_socket_in as sim_packet_socket_in
from hvuio.wire.nvsp import RndisChannelType


def packet_socket_in(ns: str, ifname: str) -> socket.socket:
    """A blocking AF_PACKET socket on `ifname` in namespace `ns`, a virtio_net_hdr before each frame."""
    sock = sim_packet_socket_in(ns, ifname, vnet_hdr=True)
    sock.setblocking(True)
    return sock


def received(sock: socket.socket, count: int) -> list[tuple[tuple[int, ...], bytes]]:
    sock.settimeout(5)
    out = []
    for _ in range(count):
        data = sock.recv(1 << 17)
        out.append((struct.unpack_from("<BBHHHH", data), data[10:]))  # packet sockets: 10-byte header
    return out


def make_net(f: NetnsFactory, offload: bool) -> HostNetwork:
    net = HostNetwork.create(ifname=f.ifname("hn"), offload=offload)
    f.namespaces.append(net.netns)
    f.defer("close host network", net.close)
    return net


def wire_and_socket(f: NetnsFactory, monkeypatch: pytest.MonkeyPatch, fast: str,
                    offload: bool) -> tuple[HostNetwork, socket.socket]:
    """The host's network and a packet socket on its tap, for a SimHost whose data path is the C
    pump (`fast` "1"; skipped where it is not built) or the Python host ("0")."""
    from hvuio.sim.vsp import fastpath

    if fast == "1" and not fastpath.available():
        pytest.skip("hvuio.sim._simhost not built")
    monkeypatch.setenv(fastpath.ENV, fast)
    net = make_net(f, offload)
    sock = packet_socket_in(net.netns, net.ifname)
    f.defer("close packet socket", sock.close)
    return net, sock


def test_lso_frame_arrives_in_the_host_namespace_as_one_gso_packet(netns_factory: NetnsFactory) -> None:
    net = make_net(netns_factory, offload=True)
    sock = packet_socket_in(net.netns, net.ifname)
    netns_factory.defer("close packet socket", sock.close)
    data = payload(20000)
    gso = ho.apply_tx(tcp4(data, lso=True), ho.TxInfo(lso=lso_info(1460, 34)), ALL, 1514)
    assert isinstance(gso, ho.GsoFrame) and net.write_frame(gso)
    ((hdr, frame),) = received(sock, 1)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = hdr
    assert (gso_type, gso_size, hdr_len) == (ho.GSO_TCPV4, 1460, 54)
    assert (flags & ho.VNET_F_NEEDS_CSUM, csum_start, csum_offset) == (ho.VNET_F_NEEDS_CSUM, 34, 16)
    assert frame == bytes(gso) and net.gso_written == 1


def test_without_tap_offloads_the_frame_is_segmented_in_software(netns_factory: NetnsFactory) -> None:
    net = make_net(netns_factory, offload=False)
    sock = packet_socket_in(net.netns, net.ifname)
    netns_factory.defer("close packet socket", sock.close)
    data = payload(5000)
    gso = ho.apply_tx(tcp4(data, lso=True), ho.TxInfo(lso=lso_info(1460, 34)), ALL, 1514)
    assert net.write_frame(gso)
    got = received(sock, 4)
    assert [f for _, f in got] == segments(tcp4, data, 1460, flags=0x18)
    assert all(h[1] == ho.GSO_NONE for h, _ in got) and net.counters.to_net_frames == 4


@pytest.mark.parametrize("fast", ["1", "0"], ids=["c-pump", "python-host"])
def test_guest_lso_send_crosses_the_whole_host_as_one_gso_packet(
        tmp_path: Path, netns_factory: NetnsFactory, monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
    """RingGuest (shared memory, rings) -> SimHost (C pump or Python host) -> HostNetwork tap ->
    the namespace's kernel. The guest machine of this repository switches LSO off at start-up; the
    host's LSOv2 state is switched on directly here (the data path, not the OID, is under test; the
    pump reads the state before every run)."""
    from support.ring_guest import RingGuest
    from support.simhost import r_packet

    from hvuio.sim.vsp.host import SimEnvironment

    net, sock = wire_and_socket(netns_factory, monkeypatch, fast, offload=True)
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            nic = env.nics[0]
            host = env.host.nvsp(nic)
            assert host is not None and host.rndis is not None
            host.rndis.offload.lso4 = True
            if fast == "1":
                assert env.host.wait_for(lambda: env.host.counters(nic).fastpath == 1, timeout=10.0)
            data = payload(4000)  # with headers and PPI it fits one 6144-byte send section
            frame = tcp4(data, lso=True)
            tid = g.send_in_sections(r_packet(frame, ppi=ppi(PPI_LSO, lso_info(1460, 34))), RndisChannelType.DATA)
            g.pump(lambda: tid in g.tx_done, "the send completion")
            assert g.tx_done[tid] == 1  # NVSP_STAT_SUCCESS
            ((hdr, got),) = received(sock, 1)
            expect = ho.apply_tx(frame, ho.TxInfo(lso=lso_info(1460, 34)), ALL, 1514)
            assert (hdr[1], hdr[3], got) == (ho.GSO_TCPV4, 1460, bytes(expect))
            assert env.host.counters(nic).fastpath == int(fast)
            assert host.counters["tx_lso"] == 1 - int(fast)  # with the pump, the C path sent it itself
            bad = g.send_in_sections(r_packet(frame, ppi=ppi(PPI_LSO, lso_info(0, 34))), RndisChannelType.DATA)  # mss 0
            g.pump(lambda: bad in g.tx_done, "the refused send's completion")
            assert g.tx_done[bad] == 2  # NVSP_STAT_FAIL
            assert host.counters["tx_failed"] == 1 and host.rejections[-1].field == "lso_info.mss"
        finally:
            g.close()


@pytest.mark.parametrize("fast", ["1", "0"], ids=["c-pump", "python-host"])
def test_guest_gpa_direct_lso_send_larger_than_a_section_crosses_the_whole_host(
        tmp_path: Path, netns_factory: NetnsFactory, monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
    """GPA-direct (type 9) from the emulated VM's guest-memory file: a 30 000-byte LSO frame (five
    send sections' worth) reaches the namespace as one GSO packet through the C pump or the Python
    host; a page outside guest memory fails that send only (status FAILED, a logged rejection)."""
    from support.gpa import make_guest_memory, send_gpa
    from support.ring_guest import RingGuest
    from support.simhost import r_packet

    from hvuio.sim.vsp.guestmem import GUEST_PFN_BASE
    from hvuio.sim.vsp.host import SimEnvironment

    net, sock = wire_and_socket(netns_factory, monkeypatch, fast, offload=True)
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        image = make_guest_memory(tmp_path)
        netns_factory.defer("unmap guest memory", image.close)
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            nic = env.nics[0]
            host = env.host.nvsp(nic)
            assert host is not None and host.rndis is not None
            host.rndis.offload.lso4 = True
            if fast == "1":
                assert env.host.wait_for(lambda: env.host.counters(nic).fastpath == 1, timeout=10.0)
            frame = tcp4(payload(30000), lso=True)
            msg = r_packet(frame, ppi=ppi(PPI_LSO, lso_info(1460, 34)))
            tid = send_gpa(g, [(len(msg), 0x123, image.write(7, 0x123, msg))])
            g.pump(lambda: tid in g.tx_done, "the GPA-direct send's completion")
            assert g.tx_done[tid] == 1  # NVSP_STAT_SUCCESS
            ((hdr, got),) = received(sock, 1)
            expect = ho.apply_tx(frame, ho.TxInfo(lso=lso_info(1460, 34)), ALL, 1514)
            assert (hdr[1], hdr[3], got) == (ho.GSO_TCPV4, 1460, bytes(expect))
            bad = send_gpa(g, [(64, 0, [GUEST_PFN_BASE + image.size // 4096])])
            g.pump(lambda: bad in g.tx_done, "the failed send's completion")
            assert g.tx_done[bad] == 2  # NVSP_STAT_FAIL
            counters = env.host.counters(nic)  # the pump's counts reach the session when it returns
            assert env.host.wait_for(lambda: counters.rejections == 1, timeout=10.0), counters
            assert counters.fastpath == int(fast)
            assert any("outside guest memory" in r for r in env.host.status()[nic.guid]["rejections"])
        finally:
            g.close()


def test_while_the_c_pump_reads_the_tap_no_other_thread_does(
        tmp_path: Path, netns_factory: NetnsFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control packets the session flushes while the C pump serves the NIC (link indications
    here) must not make the NIC 'ready' for the host's network thread: two readers of one tap
    split and reorder its frames (TCP through the emulator fell to nothing after link flaps)."""
    from support.ring_guest import RingGuest

    from hvuio.proto.events import LinkStatus
    from hvuio.sim.host.profile import HostProfile
    from hvuio.sim.vsp import fastpath
    from hvuio.sim.vsp.host import SimEnvironment

    if not fastpath.available():
        pytest.skip("hvuio.sim._simhost not built")
    monkeypatch.setenv(fastpath.ENV, "1")
    net = make_net(netns_factory, offload=True)
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, host_profile=HostProfile(link_flap_delay=0.0)) as env:
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            nic = env.nics[0]
            assert env.host.wait_for(lambda: env.host.counters(nic).fastpath == 1, timeout=10.0)
            session = env.host._sessions[nic.guid]
            for up in (False, True, False, True):
                env.host.set_link(nic, up)
                g.pump(lambda up=up: g.events and g.events[-1] == LinkStatus(up), "the link indication")  # type: ignore[misc]
                assert not session.rx_ready, "the network thread would read the C pump's tap too"
        finally:
            g.close()


@pytest.mark.parametrize("fast", ["1", "0"], ids=["c-pump", "python-host"])
def test_send_rules_across_the_whole_host(tmp_path: Path, netns_factory: NetnsFactory,
                                          monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
    """[OV] parse_packet / handle_rndis: frames of a send that spans two send sections reach the
    namespace, in order; a data message followed by a control message fails the whole send (none
    of its frames leaves, the rejection is logged); the channel goes on."""
    from support.ring_guest import RingGuest
    from support.simhost import OID, c, r_packet, r_query

    from hvuio.sim.vsp.host import SimEnvironment

    net, sock = wire_and_socket(netns_factory, monkeypatch, fast, offload=False)
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            nic = env.nics[0]
            if fast == "1":
                assert env.host.wait_for(lambda: env.host.counters(nic).fastpath == 1, timeout=10.0)

            frames = [bytes.fromhex("020000000001" "00155d000001" "88b5") + bytes([i]) * 1486 for i in range(5)]
            msg = b"".join(r_packet(f) for f in frames)  # 5 x 1544 bytes: two sections
            tid = g.send_in_sections(msg, RndisChannelType.DATA, sections=2)
            g.pump(lambda: tid in g.tx_done, "the spanning send's completion")
            assert g.tx_done[tid] == 1  # NVSP_STAT_SUCCESS
            assert [f for _, f in received(sock, 5)] == frames
            bad = g.send_in_sections(r_packet(frames[0]) + r_query(40, c(OID, "OID_GEN_MEDIA_CONNECT_STATUS")),
                                     RndisChannelType.DATA, sections=2)
            g.pump(lambda: bad in g.tx_done, "the refused send's completion")
            assert g.tx_done[bad] == 2  # NVSP_STAT_FAIL
            host = env.host.nvsp(nic)
            assert host is not None and host.rejections[-1].field == "RNDIS message type"
            after = g.send_frame(frames[4][:60])  # the next frame in the namespace is this one
            g.pump(lambda: after in g.tx_done, "the next send's completion")
            assert [f for _, f in received(sock, 1)] == [frames[4][:60]]
            assert env.host.fault(nic) is None and env.host.counters(nic).fastpath == int(fast)
        finally:
            g.close()


@pytest.mark.parametrize("fast", ["1", "0"], ids=["c-pump", "python-host"])
def test_frames_from_the_network_reach_the_channel_the_rss_table_names(
        tmp_path: Path, netns_factory: NetnsFactory, monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
    from support.ring_guest import RingGuest
    from support.simhost import OID, RST, c, rss_params

    from hvuio.proto.events import IndirectionTable
    from hvuio.sim.host.profile import HostProfile
    from hvuio.sim.vsp.host import SimEnvironment

    net, sock = wire_and_socket(netns_factory, monkeypatch, fast, offload=True)
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, host_profile=HostProfile(max_subchannels=3)) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            session = env.host._sessions[nic.guid]
            g.pump(lambda: (session.fast is not None) == (fast == "1"), "the fast path to start (or not)")
            g.do(g.guest.request_subchannels(3))
            g.pump(lambda: bool(g.of(IndirectionTable)), "the indirection table after the subchannels open")
            subs = [ch for ch in nic.channels.values() if ch.subchannel_id]
            g.attach_subchannels([(ch.subchannel_id, ch.ring_backing, ch.ring_size) for ch in subs])
            rnd = random.Random(11)
            key = rnd.randbytes(40)
            table = [rnd.randrange(4) for _ in range(128)]
            assert g.rndis_set(c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS"),
                               rss_params(tuple(table), key=key)) == c(RST, "RNDIS_STATUS_SUCCESS")
            frames = [flow_frame(f"198.18.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", "198.18.0.9",
                                 rnd.choice((6, 17)), rnd.randrange(65536), rnd.randrange(65536),
                                 payload=b"rss-test" + i.to_bytes(4, "big")) for i in range(48)]
            for f in frames:
                sock.send(bytes(10) + f)  # packet sockets with PACKET_VNET_HDR: a zero virtio_net_hdr
            ours = set(frames)

            def arrived() -> int:
                g.read_subchannels()
                return sum(f in ours for f in g.frames) + sum(f in ours for fs in g.sub_frames.values() for f in fs)

            g.pump(lambda: arrived() >= len(frames), "every frame on some channel")
            got = {f: 0 for f in g.frames if f in ours}
            for index, fs in g.sub_frames.items():
                got.update({f: index for f in fs if f in ours})
            want = {f: expected_queue(f, key, table, 0x1701, 4) for f in frames}  # Linux's hash types
            assert got == want and len(set(want.values())) == 4
            if fast == "1":  # every frame delivered in C, on its channel
                assert session.fast is not None and session.fast.counters()["rx_steered"] == 0
                pump = session.fast.pump
                assert pump.channels == [0, 1, 2, 3]
                for q in range(4):
                    assert pump.channel_counters(q)["rx_frames"] >= sum(1 for v in want.values() if v == q)
        finally:
            g.close()
