"""The emulated host's NDIS offloads on the Python path (hvuio.sim.host.offload, HostNvsp, net.py):
per-packet-info validation with hostile values, checksums against references computed here,
LSO -> GSO frame, software segmentation byte-exact (pcap), receive segmentation and vRSC
fragment sequences. The C pump's version is tests/sim/test_sim_offload_fastpath.py."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from support.simhost import (
    NVS_V5,
    OID,
    RXBUF,
    Env,
    c,
    completions,
    r_packet,
    r_set,
)
from support.sim_offload import (
    ALL, BITS, CSUM_TCP, CSUM_V4, CSUM_V6, FIRST, LAST, PPI_CSUM, PPI_ID, PPI_LSO, RX_IP_OK, RX_TCP_OK, SUBALLOC,
    cs, csum_info, gso_from_net, lso_info, payload, ppi, segments, split, tcp4, tcp6, udp4, udp6,
)

from hvuio.sim.host import offload as ho
from hvuio.sim.host import wire as w
from hvuio.sim.host.events import FrameFromGuest
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.host.wire import HostWireError
from hvuio.sim.pcap import PcapNetwork, PcapSource

# --- checksum-info transmit PPI ---------------------------------------------------------------------


@pytest.mark.parametrize("build, info", [
    (tcp4, csum_info(False, True, False, True, 34)),
    (udp4, csum_info(False, False, True, True, 34)),
    (tcp6, csum_info(True, True, False, False, 54)),
    (udp6, csum_info(True, False, True, False, 54)),
])
def test_checksum_ppi_fills_checksums_like_the_reference(build, info) -> None:  # type: ignore[no-untyped-def]
    data = payload(333)
    sent = build(data, good=False)
    assert sent != build(data)
    assert ho.apply_tx(sent, ho.TxInfo(csum=info), ALL, 1514) == build(data)


def test_ip_header_checksum_only() -> None:
    sent = bytearray(tcp4(payload(10)))
    struct.pack_into("!H", sent, 24, 0)
    out = ho.apply_tx(bytes(sent), ho.TxInfo(csum=csum_info(False, False, False, True, 0)), ALL, 1514)
    assert cs(out[14:34]) == 0 and out[34:] == bytes(sent[34:])


@pytest.mark.parametrize("frame, info, field", [
    (tcp4(b"x" * 50, good=False), csum_info(False, True, False, False, 30), "checksum_info.tcp_header_offset"),
    (tcp4(b"x" * 50, good=False), csum_info(False, False, True, False, 34), "ip protocol"),  # UDP asked, TCP sent
    (udp4(b"x" * 50, good=False), csum_info(False, True, False, False, 34), "ip protocol"),  # non-TCP frame
    (tcp4(b"x"), CSUM_V4 | CSUM_V6 | CSUM_TCP | 34 << 16, "checksum_info"),
    (tcp4(b"x"), CSUM_TCP | 34 << 16, "checksum_info"),  # neither version
    (tcp6(b"x"), csum_info(True, False, False, True, 0), "checksum_info"),  # IP checksum on IPv6
    (tcp6(b"x"), csum_info(False, True, False, False, 54), "checksum_info"),  # version mismatch
    (tcp4(b"x")[:30], csum_info(False, True, False, False, 34), "frame length"),
])
def test_hostile_checksum_ppi_is_refused(frame: bytes, info: int, field: str) -> None:
    with pytest.raises(HostWireError) as err:
        ho.apply_tx(frame, ho.TxInfo(csum=info), ALL, 1514)
    assert not isinstance(err.value, ho.TxIgnored) and err.value.field == field


def test_checksum_not_enabled_or_non_ip_is_sent_unchanged() -> None:
    off = ho.TxConfig(ip4=True, tcp4=False)
    with pytest.raises(ho.TxIgnored):
        ho.apply_tx(tcp4(b"x", good=False), ho.TxInfo(csum=csum_info(False, True, False, False, 34)), off, 1514)
    arp = bytes.fromhex("ffffffffffff00155d0000020806") + bytes(28)
    with pytest.raises(ho.TxIgnored):
        ho.apply_tx(arp, ho.TxInfo(csum=csum_info(False, False, False, True, 0)), ALL, 1514)


# --- LSOv2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame, info, cfg, field", [
    (tcp4(payload(3000), lso=True), lso_info(0, 34), ALL, "lso_info.mss"),
    (tcp4(payload(3000), lso=True), 1460 | 34 << 20, ALL, "lso_info.type"),  # LSOv1
    (tcp4(payload(3000), lso=True), lso_info(1460, 34), ho.TxConfig(lso6=True, lso_max=0xF53C), "lso_info"),
    (tcp4(payload(3000), lso=True), lso_info(1460, 34, v6=True), ALL, "lso_info.ip_version"),
    (tcp4(payload(3000), lso=True), lso_info(1460, 38), ALL, "lso_info.tcp_header_offset"),
    (udp4(payload(3000)), lso_info(1460, 34), ALL, "ip protocol"),
    (tcp4(payload(3000), lso=True), lso_info(1461, 34), ALL, "lso_info.mss"),  # 54 + 1461 > 1514
    (tcp4(payload(3000), lso=True), lso_info(1460, 34), ho.TxConfig(lso4=True, lso_max=2000), "frame length"),
    (tcp4(b"")[:30], lso_info(1460, 34), ALL, "frame length"),
])
def test_hostile_lso_ppi_is_refused(frame: bytes, info: int, cfg: ho.TxConfig, field: str) -> None:
    with pytest.raises(HostWireError) as err:
        ho.apply_tx(frame, ho.TxInfo(lso=info), cfg, 1514)
    assert err.value.field == field


@pytest.mark.parametrize("build, v6, thoff", [(tcp4, False, 34), (tcp6, True, 54)])
def test_lso_becomes_one_gso_frame_and_segments_like_a_nic(build, v6, thoff) -> None:  # type: ignore[no-untyped-def]
    data = payload(4000)
    mss = 1440 if v6 else 1460  # headers + mss = the 1514-byte MTU
    out = ho.apply_tx(build(data, flags=0x19, lso=True), ho.TxInfo(lso=lso_info(mss, thoff, v6)), ALL, 1514)
    assert isinstance(out, ho.GsoFrame)
    hdr_len = thoff + 20
    assert out.vnet == ho.Vnet(ho.VNET_F_NEEDS_CSUM, ho.GSO_TCPV6 if v6 else ho.GSO_TCPV4, hdr_len, mss, thoff, 16)
    whole = build(data, flags=0x19)  # lengths and IP checksum as the whole frame; TCP field: pseudo sum
    assert out[:thoff + 16] == whole[:thoff + 16] and out[hdr_len:] == whole[hdr_len:]
    l4len = len(out) - thoff
    addrs = out[22:54] if v6 else out[26:34]
    pseudo = addrs + (struct.pack("!IxxxB", l4len, 6) if v6 else struct.pack("!BBH", 0, 6, l4len))
    assert struct.unpack_from("!H", out, thoff + 16)[0] == ~cs(pseudo) & 0xFFFF
    assert ho.segment_tcp(out, out.vnet) == segments(build, data, mss, flags=0x19)


def test_lso_frame_within_one_mss_is_sent_plain() -> None:
    out = ho.apply_tx(tcp4(payload(500), lso=True), ho.TxInfo(lso=lso_info(1460, 34)), ALL, 1514)
    assert not isinstance(out, ho.GsoFrame) and out == tcp4(payload(500))


def test_pcap_network_segments_gso_frames_in_software(tmp_path: Path) -> None:
    data = payload(5000)
    gso = ho.apply_tx(tcp4(data, lso=True, flags=0x18), ho.TxInfo(lso=lso_info(1000, 34)), ALL, 1514)
    net = PcapNetwork(tmp_path / "out.pcap")
    assert net.write_frame(gso)
    net.close()
    got = [r.data for r in PcapSource(tmp_path / "out.pcap")]
    assert got == segments(tcp4, data, 1000, flags=0x18) and len(got) == 5
    assert net.counters.to_net_frames == 5


# --- PPI walk -----------------------------------------------------------------------------------------


def test_ppi_rules() -> None:
    vlan = struct.pack("<IIII", 16, c("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_VLAN"), 12, 5)
    hashval = struct.pack("<IIII", 16, c("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_HASHVAL"), 12, 3)
    msg = vlan + hashval + ppi(PPI_CSUM, 7) + ppi(PPI_LSO, 9)
    assert ho.parse_tx_ppis(msg, 0, len(msg)) == ho.TxInfo(7, 9, 5)  # the hash entry is skipped
    short = struct.pack("<III", 12, PPI_CSUM, 12)  # no data
    with pytest.raises(HostWireError, match="4 data bytes"):
        ho.parse_tx_ppis(short, 0, 12)
    twice = ppi(PPI_LSO, 1) + ppi(PPI_LSO, 2)
    with pytest.raises(HostWireError, match="twice"):
        ho.parse_tx_ppis(twice, 0, 32)
    bad_off = struct.pack("<IIII", 16, PPI_CSUM, 20, 0)
    with pytest.raises(HostWireError):
        ho.parse_tx_ppis(bad_off, 0, 16)


# --- through HostNvsp ---------------------------------------------------------------------------------


def offload_params(*, lso4: int = 0, rsc: int = 0, csum: int = 4) -> bytes:
    b = bytearray(28)
    struct.pack_into("<BBH", b, 0, 0x80, 3, 28)
    b[4:9] = bytes([csum] * 5)
    b[11] = lso4
    b[22] = b[23] = rsc
    return bytes(b)


def set_offloads(env: Env, **kw: int) -> None:
    step = env.send_rndis(r_set(9, c(OID, "OID_TCP_OFFLOAD_PARAMETERS"), offload_params(**kw)))
    env.ack_all(step)


def status_of(step) -> int:  # type: ignore[no-untyped-def]
    return int(struct.unpack_from("<2I", completions(step)[0].payload)[1])


def test_host_refuses_lso_not_enabled_and_sends_gso_once_enabled() -> None:
    env = Env()
    env.bring_up()
    set_offloads(env, lso4=c("ndis_offload", "NDIS_OFFLOAD_LSOV2_OFF"))
    data = payload(3000)
    msg = r_packet(tcp4(data, lso=True), ppi=ppi(PPI_LSO, lso_info(1448, 34)))
    step = env.send_rndis(msg, chan_type=0)
    assert status_of(step) == w.NVSP_STAT_FAIL and env.host.counters["tx_failed"] == 1
    assert env.host.rejections[-1].field == "lso_info" and "not enabled" in env.host.rejections[-1].reason
    set_offloads(env, lso4=c("ndis_offload", "NDIS_OFFLOAD_LSOV2_ON"))
    step = env.send_rndis(msg, chan_type=0)
    (ev,) = [e for e in step.events if isinstance(e, FrameFromGuest)]
    assert status_of(step) == w.NVSP_STAT_SUCCESS and isinstance(ev.frame, ho.GsoFrame)
    assert ho.segment_tcp(ev.frame, ev.frame.vnet) == segments(tcp4, data, 1448, flags=0x18)


def test_host_fills_checksums_and_fails_a_bad_checksum_ppi() -> None:
    env = Env()
    env.bring_up()
    data = payload(200)
    step = env.send_rndis(r_packet(udp4(data, good=False), ppi=ppi(PPI_CSUM, csum_info(False, False, True, True, 34))),
                          chan_type=0)
    assert FrameFromGuest(udp4(data)) in step.events
    step = env.send_rndis(r_packet(udp4(data, good=False), ppi=ppi(PPI_CSUM, csum_info(False, True, False, False, 34))),
                          chan_type=0)
    assert status_of(step) == w.NVSP_STAT_FAIL and env.host.rejections[-1].field == "ip protocol"


def xfer_messages(env: Env, step) -> list[bytes]:  # type: ignore[no-untyped-def]
    out = []
    for p in step.packets:
        if p.type == RXBUF:
            out.extend(bytes(env.recv[off:off + n]) for n, off in p.ranges)
    return out


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
@pytest.mark.parametrize("v6", [False, True])
def test_rsc_fragments_when_the_guest_enabled_rsc(v6: bool, layout: str) -> None:
    env = Env(HostProfile(rx_layout=layout))  # type: ignore[arg-type]
    env.bring_up()
    set_offloads(env, rsc=c("linux:ndis_offload_parameters", "NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED"))
    data = payload(20000)
    step = env.host.deliver_batch([gso_from_net(data, 1448, v6)])
    (pkt,) = [p for p in step.packets if p.type == RXBUF]
    msgs = xfer_messages(env, step)
    section = env.host.recv[2]  # type: ignore[index]
    assert len(msgs) > 1 and all(len(m) <= section for m in msgs)
    parts = [split(m) for m in msgs]
    flags = [p[PPI_ID] >> 8 & 0xFF for p, _ in parts]
    assert flags == [SUBALLOC | FIRST] + [SUBALLOC] * (len(msgs) - 2) + [SUBALLOC | LAST]
    assert all(p[PPI_ID] & 0xFF == 1 for p, _ in parts)  # RNDIS_PKTINFO_ID_V1
    assert parts[0][0][PPI_CSUM] == RX_TCP_OK | (0 if v6 else RX_IP_OK)
    if layout == "openvmm":  # checksum info on every message, "not checked" after the first fragment
        assert all(list(p) == [PPI_CSUM, PPI_ID] and p[PPI_CSUM] == 0 for p, _ in parts[1:])
    else:
        assert all(PPI_CSUM not in p for p, _ in parts[1:])
    assert b"".join(d for _, d in parts) == (tcp6 if v6 else tcp4)(data, flags=0x18)
    assert env.host.counters["rx_rsc_fragments"] == len(msgs)
    env.ack(pkt)


def test_gso_segmented_without_rsc_and_marked() -> None:
    env = Env()
    env.bring_up()
    set_offloads(env)
    data = payload(5000)
    step = env.host.deliver_batch([gso_from_net(data, 1448)])
    parts = [split(m) for m in xfer_messages(env, step)]
    assert [d for _, d in parts] == segments(tcp4, data, 1448, flags=0x18)
    assert all(p == {PPI_CSUM: RX_TCP_OK | RX_IP_OK} for p, _ in parts)


def test_rsc_not_granted_before_nvsp_61() -> None:
    env = Env()
    env.bring_up(NVS_V5)
    set_offloads(env, rsc=2)
    data = payload(3000)
    parts = [split(m) for m in xfer_messages(env, env.host.deliver_batch([gso_from_net(data, 1448)]))]
    assert [d for _, d in parts] == segments(tcp4, data, 1448, flags=0x18)


def test_rsc_without_enough_sections_is_a_counted_drop() -> None:
    env = Env()
    env.bring_up()
    set_offloads(env, rsc=2)
    free = len(env.host.free_data)
    big = gso_from_net(payload(60000), 1448)
    n = 0
    while len(env.host.free_data) >= 40:
        env.host.deliver_batch([big])
        n += 1
    before = env.host.counters["rx_dropped_no_section"]
    env.host.deliver_batch([big])
    assert env.host.counters["rx_dropped_no_section"] == before + 1 and n and free > 40


@pytest.mark.parametrize("layout, marks", [("openvmm", {PPI_CSUM: 0}), ("compact", {})])
def test_partial_checksum_frame_is_completed(layout: str, marks: dict[int, int]) -> None:
    data = payload(300)
    gso = gso_from_net(data, 1448)
    plain = ho.GsoFrame.make(bytes(gso), ho.Vnet(ho.VNET_F_NEEDS_CSUM, 0, 0, 0, 34, 16))
    env = Env(HostProfile(rx_layout=layout))  # type: ignore[arg-type]
    env.bring_up()
    (msg,) = xfer_messages(env, env.host.deliver_batch([plain]))
    # no marks before the guest set offloads: the openvmm layout still carries checksum info, 0
    assert split(msg) == (marks, tcp4(data, flags=0x18))


@pytest.mark.parametrize("value, group, name", [
    (ho.PPI_CSUM, "ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_CSUM"),
    (ho.PPI_LSO, "ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_LSO"),
    (ho.PPI_VLAN, "ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_VLAN"),
    (ho.PPI_PKTINFO_ID, "linux:ppi_type_words", "RNDIS_PKTINFO_ID|internal"),
    (ho.PKTINFO_SUBALLOC, "linux:rndis_pktinfo_id_flags", "RNDIS_PKTINFO_SUBALLOC"),
    (ho.PKTINFO_1ST_FRAG, "linux:rndis_pktinfo_id_flags", "RNDIS_PKTINFO_1ST_FRAG"),
    (ho.PKTINFO_LAST_FRAG, "linux:rndis_pktinfo_id_flags", "RNDIS_PKTINFO_LAST_FRAG"),
    (ho.PKTINFO_ID_V1, "linux:rndis_pktinfo_id_flags", "RNDIS_PKTINFO_ID_V1"),
    (ho.TXCSUM_TCP, BITS, "NDIS_TXCSUM_INFO_TCPCS"),
    (ho.TXCSUM_THOFF_MASK << ho.TXCSUM_THOFF_SHIFT, BITS, "NDIS_TXCSUM_INFO_THOFF"),
    (ho.LSO_MSS_MASK, BITS, "NDIS_LSO2_INFO_MSS_MASK"),
    (ho.LSO_THOFF_MASK << ho.LSO_THOFF_SHIFT, BITS, "NDIS_LSO2_INFO_THOFF_MASK"),
    (ho.RXCSUM_UDP_FAILED, BITS, "NDIS_RXCSUM_INFO_UDPCS_FAILED"),
    (ho.RXCSUM_IP_OK, BITS, "NDIS_RXCSUM_INFO_IPCS_OK"),
    (w.NDIS_OFFLOAD_RSC_ON, "linux:ndis_offload_parameters", "NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED"),
    (w.NDIS_OFFLOAD_RSC_OFF, "linux:ndis_offload_parameters", "NDIS_OFFLOAD_PARAMETERS_RSC_DISABLED"),
])
def test_offload_constants_match_golden(value: int, group: str, name: str) -> None:
    assert value == c(group, name)


def test_hardware_capabilities_offer_rsc_only_from_nvsp_61() -> None:
    from support.golden import GOLDEN
    from support.simhost import r_query
    rsc_at = next(f["offset"] for f in GOLDEN["structs"]["ndis_offload"]["fields"]
                  if f["name"] == "ndis_rsc")
    for version, offered in ((None, b"\x01\x01"), (NVS_V5, b"\x00\x00")):
        env = Env()
        env.bring_up(version)
        step = env.send_rndis(r_query(5, c(OID, "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES")))
        (msg,) = env.rndis_out(step)
        info = msg[8 + 16:]  # header, rid/status/len/offset; the info buffer follows
        assert info[rsc_at:rsc_at + 2] == offered
