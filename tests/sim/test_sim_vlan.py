"""The emulated host's 802.1Q handling on the Python path (hvuio.sim.host.vlan, HostNvsp): a send's
802.1Q per-packet info puts the tag onto the wire frame; with `HostProfile.vlan_oob` (a trunk-mode
port) a tagged network frame reaches the guest untagged with its tag in that info, GSO frames and
vRSC fragments included. Tags and info values are built here from IEEE 802.1Q and the golden bit
masks, not with vlan.py."""

from __future__ import annotations

import struct

import pytest
from support.golden import GOLDEN
from support.sim_offload import PPI_CSUM, PPI_ID, gso_from_net, payload, ppi, segments, split, tcp4
from support.simhost import OID, RXBUF, Env, c, completions, r_packet, r_set

from hvuio.sim.host import offload as ho
from hvuio.sim.host import vlan
from hvuio.sim.host import wire as w
from hvuio.sim.host.events import FrameFromGuest
from hvuio.sim.host.profile import HostProfile

MASK = GOLDEN["constants"]["linux:ppi_bitfield_masks"]
PPI_VLAN = GOLDEN["constants"]["linux:ndis_per_pkt_info_type"]["IEEE_8021Q_INFO"]


def info(vid: int, pri: int = 0, cfi: int = 0) -> int:
    def sh(m: int) -> int:
        return (m & -m).bit_length() - 1
    return (pri << sh(MASK["ndis_pkt_8021q_info.pri"]) | cfi << sh(MASK["ndis_pkt_8021q_info.cfi"])
            | vid << sh(MASK["ndis_pkt_8021q_info.vlanid"]))


def tagged(f: bytes, vid: int, pri: int = 0, cfi: int = 0) -> bytes:
    return f[:12] + struct.pack("!HH", 0x8100, pri << 13 | cfi << 12 | vid) + f[12:]


@pytest.mark.parametrize("vid, pri, cfi", [(5, 0, 0), (4094, 7, 1), (0, 3, 0)])
def test_info_and_tci_convert_both_ways(vid: int, pri: int, cfi: int) -> None:
    tci = pri << 13 | cfi << 12 | vid
    assert vlan.info_of_tci(tci) == info(vid, pri, cfi) and vlan.tci_of_info(info(vid, pri, cfi)) == tci
    f = tcp4(payload(50))
    assert vlan.insert(f, info(vid, pri, cfi)) == tagged(f, vid, pri, cfi)
    assert vlan.strip(tagged(f, vid, pri, cfi)) == (f, info(vid, pri, cfi))
    assert vlan.strip(f) == (f, None)


def test_gso_offsets_move_with_the_tag() -> None:
    g = gso_from_net(payload(4000), 1448)
    t = vlan.insert(g, info(9))
    assert isinstance(t, ho.GsoFrame) and t.vnet.csum_start == g.vnet.csum_start + 4
    assert t.vnet.hdr_len == (g.vnet.hdr_len + 4 if g.vnet.hdr_len > 4 else g.vnet.hdr_len)
    back, value = vlan.strip(t)
    assert value == info(9) and isinstance(back, ho.GsoFrame) and back.vnet == g.vnet and bytes(back) == bytes(g)


def test_send_with_vlan_info_goes_to_the_wire_tagged() -> None:
    env = Env()
    env.bring_up()
    f = tcp4(payload(100))
    step = env.send_rndis(r_packet(f, ppi=ppi(PPI_VLAN, info(5, 6))), chan_type=0)
    assert FrameFromGuest(tagged(f, 5, 6)) in step.events and env.host.counters["tx_vlan"] == 1
    step = env.send_rndis(r_packet(f), chan_type=0)
    assert FrameFromGuest(f) in step.events


@pytest.mark.parametrize("entry", [
    struct.pack("<III", 12, PPI_VLAN, 12),                                     # no value
    ppi(PPI_VLAN, info(5)) + ppi(PPI_VLAN, info(6)),                             # twice
])
def test_malformed_vlan_info_fails_the_send(entry: bytes) -> None:
    env = Env()
    env.bring_up()
    step = env.send_rndis(r_packet(tcp4(payload(10)), ppi=entry), chan_type=0)
    assert struct.unpack_from("<2I", completions(step)[0].payload)[1] == w.NVSP_STAT_FAIL
    assert not [e for e in step.events if isinstance(e, FrameFromGuest)]


def rx_messages(env: Env, frames: list[bytes]) -> list[tuple[dict[int, int], bytes]]:
    step = env.host.deliver_batch(frames)
    out = []
    for p in step.packets:
        if p.type == RXBUF:
            out.extend(split(bytes(env.recv[off:off + n])) for n, off in p.ranges)
            env.ack(p)
    return out


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
def test_tagged_network_frames_reach_the_guest_out_of_band_with_vlan_oob(layout: str) -> None:
    env = Env(HostProfile(vlan_oob=True, rx_layout=layout))  # type: ignore[arg-type]
    env.bring_up()
    f = tcp4(payload(300))
    [(ppis, data), (ppis2, data2)] = rx_messages(env, [tagged(f, 5, 2), f])
    assert data == f and ppis[PPI_VLAN] == info(5, 2)
    if layout == "openvmm":  # checksum info first (0: not checked), the 802.1Q info after it
        assert list(ppis) == [PPI_CSUM, PPI_VLAN] and ppis[PPI_CSUM] == 0
    assert data2 == f and PPI_VLAN not in ppis2
    assert env.host.counters["rx_vlan"] == 1


def test_without_vlan_oob_tags_stay_in_the_frame() -> None:
    env = Env()
    env.bring_up()
    f = tagged(tcp4(payload(300)), 5)
    [(ppis, data)] = rx_messages(env, [f])
    assert data == f and PPI_VLAN not in ppis and env.host.counters["rx_vlan"] == 0


def test_full_size_tagged_frame_fits_once_untagged() -> None:
    env = Env(HostProfile(vlan_oob=True))
    env.bring_up()
    f = tcp4(payload(1514 - 54))
    assert len(f) == 1514
    [(ppis, data)] = rx_messages(env, [tagged(f, 7)])
    assert data == f and ppis[PPI_VLAN] == info(7)


def offload_params(rsc: int) -> bytes:
    size = c("ndis_offload", "NDIS_OFFLOAD_PARAMS_SIZE")
    raw = bytearray(size)
    struct.pack_into("<BBH", raw, 0, 0x80, 3, size)
    raw[4:9] = bytes([4] * 5)          # checksums TX+RX
    raw[22] = raw[23] = rsc
    return bytes(raw)


@pytest.mark.parametrize("rsc", [False, True])
def test_tagged_gso_frame_from_the_network(rsc: bool) -> None:
    env = Env(HostProfile(vlan_oob=True))
    env.bring_up()
    step = env.send_rndis(r_set(9, c(OID, "OID_TCP_OFFLOAD_PARAMETERS"), offload_params(2 if rsc else 1)))
    env.ack_all(step)
    data = payload(5000)
    parts = rx_messages(env, [vlan.insert(gso_from_net(data, 1448), info(11, 1))])
    if rsc:
        assert parts[0][0][PPI_VLAN] == info(11, 1) and all(PPI_VLAN not in p for p, _ in parts[1:])
        assert PPI_ID in parts[0][0] and PPI_CSUM in parts[0][0]
        assert b"".join(d for _, d in parts) == tcp4(data, flags=0x18)
    else:
        assert [d for _, d in parts] == segments(tcp4, data, 1448, flags=0x18)
        assert all(p[PPI_VLAN] == info(11, 1) for p, _ in parts)
