"""NDIS offloads in the emulator's C data path (offload.c via HostPump), on in-memory rings with a
seqpacket pair standing in for a tap opened with IFF_VNET_HDR. Every result is compared with the
references of tests/support/sim_offload.py and with the Python host's (hvuio.sim.host.offload)
output."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support.sim_offload import (
    ALL,
    PPI_CSUM,
    PPI_ID,
    PPI_LSO,
    RX_IP_OK,
    RX_TCP_OK,
    SUBALLOC,
    csum_info,
    expected_rsc,
    gso_from_net,
    lso_info,
    payload,
    ppi,
    segments,
    split,
    tcp4,
    tcp6,
    udp4,
)

from hvuio.sim.host import offload as ho
from hvuio.sim.host import vlan
from hvuio.sim.host import wire as w
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.fastpath import HostPump, PumpConfig, PumpResult, Reason
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter, RingPacket

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="hvuio.sim._simhost not built")

HDR = 4096
RING = HDR + 256 * 1024
SEC = 1806
SEND_SEC = 6144
SEND_SECTIONS = 32
PAD = 40
TX_ALL = ho.OFF_IP4 | ho.OFF_TCP4 | ho.OFF_UDP4 | ho.OFF_TCP6 | ho.OFF_UDP6 | ho.OFF_LSO4 | ho.OFF_LSO6
RX_MARKS = ho.OFF_IP4 | ho.OFF_TCP4 | ho.OFF_UDP4 | ho.OFF_TCP6 | ho.OFF_UDP6


@dataclass
class Rig:
    mem: bytearray
    recv: bytearray
    send: bytearray
    pump: HostPump
    guest_out: HostRingWriter
    guest_in: HostRingReader
    net: socket.socket


def make_rig(*, sections: int = 96, tap_gso: bool = True, off_tx: int = TX_ALL, off_rx: int = 0,
             rx_layout: str = "openvmm", vlan_oob: bool = False) -> Iterator[Rig]:
    mem = bytearray(2 * RING)
    for off in (0, RING):
        struct.pack_into("<I", mem, off + 64, 1)
    recv, send = bytearray(SEC * sections), bytearray(SEND_SEC * SEND_SECTIONS)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (tap, net):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=SEC, recv_count=sections, send_section=SEND_SEC,
                     max_frame=1514, nvsp_pad=PAD, tap_fd=tap.fileno(), rx_batch=8, vnet_hdr=True, tap_gso=tap_gso,
                     vlan_oob=vlan_oob, offloads=lambda: (off_tx, off_rx), rx_layout=rx_layout)  # type: ignore[arg-type]
    pump = HostPump(cfg, mem, recv, send)
    pump.add_sections(range(sections))
    pump.rx_enabled = True
    view = memoryview(mem)
    rig = Rig(mem, recv, send, pump, HostRingWriter(view, offset=0, size=RING),
              HostRingReader(view, offset=RING, size=RING), net)
    try:
        yield rig
    finally:
        pump.close()
        tap.close()
        net.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    yield from make_rig()


def guest_send(rig: Rig, msg: bytes, tid: int, section: int = 0) -> None:
    """A send spanning sections from `section` (the pump is not strict here)."""
    rig.send[section * SEND_SEC:section * SEND_SEC + len(msg)] = msg
    rig.guest_out.write(w.PKT_INBAND, w.nvsp(w.NVSP_SEND_RNDIS_PKT, 0, section, len(msg), pad_to=PAD),
                        flags=1, trans_id=tid)


def inbound(rig: Rig) -> list[RingPacket]:
    out = []
    while (pkt := rig.guest_in.read_packet()) is not None:
        out.append(pkt)
    rig.guest_in.commit()
    return out


def tap_out(rig: Rig) -> list[tuple[ho.Vnet, bytes]]:
    out = []
    while True:
        try:
            data = rig.net.recv(1 << 17)
        except BlockingIOError:
            return out
        out.append((ho.Vnet.decode(data), data[12:]))


def delivered(rig: Rig) -> list[bytes]:
    msgs = []
    for pkt in inbound(rig):
        assert pkt.type == w.PKT_XFER_PAGES
        (count,) = struct.unpack_from("<I", pkt.header, 4)
        for i in range(count):
            n, off = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
            msgs.append(bytes(rig.recv[off:off + n]))
    return msgs


def completion_status(rig: Rig) -> list[int]:
    return [struct.unpack_from("<2I", p.payload)[1] for p in inbound(rig) if p.type == w.PKT_COMPLETION]


# --- guest -> network ---------------------------------------------------------------------------------


def test_checksum_ppi_frames_leave_with_checksums(rig: Rig) -> None:
    data = payload(900)
    guest_send(rig, _packet(udp4(data, good=False), csum_info(False, False, True, True, 34)), 1)
    rig.pump.run()
    assert tap_out(rig) == [(ho.Vnet(), udp4(data))]
    assert completion_status(rig) == [w.NVSP_STAT_SUCCESS] and rig.pump.counters()["tx_csum"] == 1


def _packet(frame: bytes, csum: int | None = None, lso: int | None = None) -> bytes:
    from support.simhost import r_packet
    p = (ppi(PPI_CSUM, csum) if csum is not None else b"") + (ppi(PPI_LSO, lso) if lso is not None else b"")
    return r_packet(frame, ppi=p)


@pytest.mark.parametrize("build, v6, thoff, mss", [(tcp4, False, 34, 1460), (tcp6, True, 54, 1440)])
def test_lso_is_written_as_one_gso_frame_like_the_python_host(rig: Rig, build, v6, thoff, mss) -> None:  # type: ignore[no-untyped-def]
    data = payload(30000)
    frame = build(data, lso=True)
    guest_send(rig, _packet(frame, lso=lso_info(mss, thoff, v6)), 2)
    rig.pump.run()
    ((vnet, got),) = tap_out(rig)
    py = ho.apply_tx(frame, ho.TxInfo(lso=lso_info(mss, thoff, v6)), ALL, 1514)
    assert isinstance(py, ho.GsoFrame) and (vnet, got) == (py.vnet, bytes(py))
    assert ho.segment_tcp(got, vnet) == segments(build, data, mss, flags=0x18)
    assert completion_status(rig) == [w.NVSP_STAT_SUCCESS] and rig.pump.counters()["tx_gso"] == 1


def test_lso_segmented_in_c_when_the_tap_has_no_gso() -> None:
    for rig in make_rig(tap_gso=False):
        data = payload(7000)
        guest_send(rig, _packet(tcp4(data, lso=True, flags=0x19), lso=lso_info(1000, 34)), 3)
        rig.pump.run()
        out = tap_out(rig)
        assert [v for v, _ in out] == [ho.Vnet()] * 7
        assert [f for _, f in out] == segments(tcp4, data, 1000, flags=0x19)
        assert rig.pump.counters()["tx_segments"] == 7


@pytest.mark.parametrize("csum, lso", [
    (None, lso_info(0, 34)),                            # mss 0
    (None, lso_info(1460, 30)),                         # header offset not the TCP header
    (None, lso_info(1460, 34, v6=True)),                # IPv6 LSO for an IPv4 frame
    (csum_info(False, True, False, False, 34), None),   # TCP checksum for a UDP frame
    (csum_info(False, False, True, False, 40), None),   # bad offset
])
def test_hostile_offload_requests_are_handed_to_python_unread(rig: Rig, csum, lso) -> None:  # type: ignore[no-untyped-def]
    frame = udp4(payload(3000)) if csum is not None else tcp4(payload(3000), lso=True)
    guest_send(rig, _packet(frame, csum, lso), 4)
    read_before = struct.unpack_from("<I", rig.mem, 4)[0]
    assert rig.pump.run() == PumpResult.CONTROL and rig.pump.reason == Reason.OFFLOAD
    assert struct.unpack_from("<I", rig.mem, 4)[0] == read_before  # left for HostNvsp, which refuses it
    assert tap_out(rig) == []


def test_lso_not_enabled_is_handed_over_and_checksum_not_enabled_is_sent_as_is() -> None:
    for rig in make_rig(off_tx=ho.OFF_IP4):
        frame = tcp4(payload(3000), lso=True)
        guest_send(rig, _packet(frame, lso=lso_info(1460, 34)), 5)
        assert rig.pump.run() == PumpResult.CONTROL and rig.pump.reason == Reason.OFFLOAD
    for rig in make_rig(off_tx=ho.OFF_IP4):
        bad = tcp4(payload(100), good=False)
        guest_send(rig, _packet(bad, csum_info(False, True, False, False, 34)), 6)
        rig.pump.run()
        assert tap_out(rig) == [(ho.Vnet(), bad)] and rig.pump.counters()["tx_offload_ignored"] == 1


# --- network -> guest ---------------------------------------------------------------------------------


def net_send(rig: Rig, frame: bytes, vnet: ho.Vnet | None = None) -> None:
    rig.net.send((vnet or ho.Vnet()).encode() + frame)


def test_gso_from_the_network_is_segmented_for_a_guest_without_rsc() -> None:
    for rig in make_rig(off_rx=RX_MARKS):
        data = payload(20000)
        gso = gso_from_net(data, 1448)
        net_send(rig, bytes(gso), gso.vnet)
        rig.pump.run()
        parts = [split(m) for m in delivered(rig)]
        assert [d for _, d in parts] == segments(tcp4, data, 1448, flags=0x18)
        assert all(p == {PPI_CSUM: RX_TCP_OK | RX_IP_OK} for p, _ in parts)
        c = rig.pump.counters()
        assert (c["rx_gso"], c["rx_segments"], c["rx_frames"]) == (1, len(parts), len(parts))


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("layout", ["openvmm", "compact"])
def test_gso_from_the_network_becomes_rsc_fragments_like_the_python_host(v6: bool, layout: str) -> None:
    for rig in make_rig(off_rx=RX_MARKS | ho.OFF_RSC4 | ho.OFF_RSC6, rx_layout=layout):
        data = payload(40000)
        gso = gso_from_net(data, 1448, v6)
        net_send(rig, bytes(gso), gso.vnet)
        rig.pump.run()
        msgs = delivered(rig)
        assert msgs == expected_rsc(gso, SEC, layout)
        parts = [split(m) for m in msgs]
        assert b"".join(d for _, d in parts) == (tcp6 if v6 else tcp4)(data, flags=0x18)
        assert parts[-1][0][PPI_ID] >> 8 & SUBALLOC and rig.pump.counters()["rx_rsc_fragments"] == len(msgs)


def test_partial_checksum_completed_and_plain_frames_marked() -> None:
    for rig in make_rig(off_rx=RX_MARKS):
        data = payload(500)
        gso = gso_from_net(data, 1448)
        net_send(rig, bytes(gso), ho.Vnet(ho.VNET_F_NEEDS_CSUM, 0, 0, 0, 34, 16))
        bad = bytearray(udp4(payload(40)))
        bad[-1] ^= 0xFF  # corrupt payload: the host marks the UDP checksum failed
        net_send(rig, bytes(bad))
        rig.pump.run()
        first, second = (split(m) for m in delivered(rig))
        assert first == ({PPI_CSUM: RX_TCP_OK | RX_IP_OK}, tcp4(data, flags=0x18))
        udp_failed = 0x2  # NDIS_RXCSUM_INFO_UDPCS_FAILED
        assert second == ({PPI_CSUM: udp_failed | RX_IP_OK}, bytes(bad))
        assert rig.pump.counters()["rx_csum_completed"] == 1


def test_rsc_without_enough_sections_is_a_counted_drop() -> None:
    for rig in make_rig(sections=10, off_rx=ho.OFF_RSC4):
        gso = gso_from_net(payload(30000), 1448)  # needs ~18 sections of 1806 bytes
        net_send(rig, bytes(gso), gso.vnet)
        rig.pump.run()
        assert delivered(rig) == [] and rig.pump.counters()["rx_dropped_no_section"] == 1
        assert rig.pump.sections_free == 10


def test_malformed_gso_is_dropped_and_counted(rig: Rig) -> None:
    net_send(rig, udp4(payload(100)), ho.Vnet(ho.VNET_F_NEEDS_CSUM, ho.GSO_TCPV4, 54, 1448, 34, 16))
    net_send(rig, tcp4(payload(10)), ho.Vnet(ho.VNET_F_NEEDS_CSUM, 0, 0, 0, 90, 16))  # csum_start past the end
    rig.pump.run()
    assert delivered(rig) == [] and rig.pump.counters()["rx_dropped_bad_gso"] == 2


# --- 802.1Q out of band (HostProfile.vlan_oob; the Python host's rules: test_sim_vlan.py) ----------------

PPI_VLAN = 6     # golden linux:ndis_per_pkt_info_type IEEE_8021Q_INFO


def test_a_send_with_vlan_info_is_handed_to_python_unread(rig: Rig) -> None:
    guest_send(rig, _packet(tcp4(payload(100))), 7)
    rig.pump.run()
    assert len(tap_out(rig)) == 1
    msg = ho.rndis_packet_ppi(tcp4(payload(100)), ppi(PPI_VLAN, 5 << 4))
    guest_send(rig, msg, 8)
    read_before = struct.unpack_from("<I", rig.mem, 4)[0]
    assert rig.pump.run() == PumpResult.CONTROL and rig.pump.reason == Reason.VLAN
    assert struct.unpack_from("<I", rig.mem, 4)[0] == read_before and tap_out(rig) == []


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
@pytest.mark.parametrize("oob", [True, False])
def test_tagged_network_frames_with_and_without_vlan_oob(oob: bool, layout: str) -> None:
    for rig in make_rig(off_rx=RX_MARKS, vlan_oob=oob, rx_layout=layout):
        plain = tcp4(payload(300))
        tci = 3 << 13 | 1 << 12 | 42
        tagged = plain[:12] + struct.pack("!HH", 0x8100, tci) + plain[12:]
        net_send(rig, tagged)
        net_send(rig, plain)
        rig.pump.run()
        (p1, d1), (p2, d2) = (split(m) for m in delivered(rig))
        if oob:
            assert d1 == plain and p1 == {PPI_CSUM: RX_TCP_OK | RX_IP_OK, PPI_VLAN: vlan.info_of_tci(tci)}
            assert list(p1) == [PPI_CSUM, PPI_VLAN]  # the 802.1Q info after the checksum info
        else:
            assert d1 == tagged and PPI_VLAN not in p1
        assert d2 == plain and p2 == {PPI_CSUM: RX_TCP_OK | RX_IP_OK}
        assert rig.pump.counters()["rx_vlan"] == (1 if oob else 0)


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
def test_tagged_gso_becomes_rsc_fragments_like_the_python_host(layout: str) -> None:
    for rig in make_rig(off_rx=RX_MARKS | ho.OFF_RSC4 | ho.OFF_RSC6, vlan_oob=True, rx_layout=layout):
        data = payload(20000)
        gso = gso_from_net(data, 1448)
        tagged = vlan.insert(gso, 9 << 4 | 5)
        assert isinstance(tagged, ho.GsoFrame)
        net_send(rig, bytes(tagged), tagged.vnet)
        rig.pump.run()
        msgs = delivered(rig)
        assert msgs == expected_rsc(gso, SEC, layout, ppi(PPI_VLAN, 9 << 4 | 5))
        assert list(split(msgs[0])[0]) == [PPI_CSUM, PPI_VLAN, PPI_ID]
