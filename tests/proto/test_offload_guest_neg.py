"""Guest offload negotiation (RndisGuest with OffloadWanted, hvuio.offloads' mapping, the tap bits).

Host replies are packed with struct from the golden numbers (the scripted Host of
tests/support/rndis_host.py); the capability object is built here field by field from golden
offsets, so the guest's decoder and this encoder cannot share a mistake.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from hvuio.offloads import datapath_offloads, offloads_enabled, tun_offload
from hvuio.proto.events import ControlSendComplete, OffloadCaps, OffloadsConfigured, RequestFailed, RndisConfigured, SetComplete
from hvuio.proto.nvsp import default_ndis_capabilities, rsc_ndis_capabilities
from hvuio.proto.rndis import OffloadWanted, RndisGuest
from hvuio.errors import HostProtocolError

from support.golden import GOLDEN, off, size
from support.rndis_host import C, FAILURE, NDIS, NOFF, OID, Host, drain

CAPS = C["ndis_offload_caps"]
LCAPS = C["linux:ndis_offload_caps"]


def caps_bytes(*, ip4_tx: int = 0, ip4_rx: int = 0, ip6_tx: int = 0, ip6_rx: int = 0,
               lso4_encap: int = 0, lso4_max: int = 0, lso6_encap: int = 0, lso6_max: int = 0,
               lso6_opts: int = 0, rsc4: int = 0, rsc6: int = 0, rev: int = 3,
               objsize: int | None = None) -> bytes:
    raw = bytearray(size("ndis_offload"))
    objsize = size("ndis_offload") if objsize is None else objsize
    struct.pack_into("<BBH", raw, 0, C["ndis_objtype"]["NDIS_OBJTYPE_OFFLOAD"], rev, objsize)
    cs, lso = off("ndis_offload", "ndis_csum"), off("ndis_offload", "ndis_lsov2")
    for name, v in (("ndis_ip4_txcsum", ip4_tx), ("ndis_ip4_rxcsum", ip4_rx),
                    ("ndis_ip6_txcsum", ip6_tx), ("ndis_ip6_rxcsum", ip6_rx)):
        struct.pack_into("<I", raw, cs + off("ndis_csum_offload", name), v)
    for name, v in (("ndis_ip4_encap", lso4_encap), ("ndis_ip4_maxsz", lso4_max),
                    ("ndis_ip6_encap", lso6_encap), ("ndis_ip6_maxsz", lso6_max),
                    ("ndis_ip6_opts", lso6_opts)):
        struct.pack_into("<I", raw, lso + off("ndis_lsov2_offload", name), v)
    rsc = off("ndis_offload", "ndis_rsc")
    raw[rsc + off("ndis_rsc_offload", "ndis_ip4")] = rsc4
    raw[rsc + off("ndis_rsc_offload", "ndis_ip6")] = rsc6
    return bytes(raw[:objsize])


FULL = dict(ip4_tx=LCAPS["NDIS_TXCSUM_ALL_TCP4"] | CAPS["NDIS_TXCSUM_CAP_UDP4"] | CAPS["NDIS_TXCSUM_CAP_IP4"],
            ip4_rx=CAPS["NDIS_RXCSUM_CAP_TCP4"] | CAPS["NDIS_RXCSUM_CAP_IP4"],
            ip6_tx=LCAPS["NDIS_TXCSUM_ALL_TCP6"] | CAPS["NDIS_TXCSUM_CAP_UDP6"],
            ip6_rx=CAPS["NDIS_RXCSUM_CAP_TCP6"],
            lso4_encap=CAPS["NDIS_OFFLOAD_ENCAP_8023"], lso4_max=62780,
            lso6_encap=CAPS["NDIS_OFFLOAD_ENCAP_8023"], lso6_max=60000,
            lso6_opts=LCAPS["NDIS_LSOV2_CAP_IP6"], rsc4=1, rsc6=1)


def bring_up(caps: bytes | int, *, ndis: int = NDIS["NDIS_VERSION_6_30"], set_status: int | None = None,
             want: OffloadWanted = OffloadWanted(rsc=True)) -> tuple[Host, list[Any]]:
    m = RndisGuest(ndis_version=ndis, offload=want)
    answers: dict[int, bytes | int] = {OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"]: caps}
    if set_status is not None:
        answers[OID["OID_TCP_OFFLOAD_PARAMETERS"]] = set_status
    host = Host(m, answers)
    host.run(m.start())
    return host, [e for e in drain(m) if not isinstance(e, ControlSendComplete)]


def params_sent(host: Host) -> bytes:
    return next(info for _, oid, info in host.seen if oid == OID["OID_TCP_OFFLOAD_PARAMETERS"])


def pv(params: bytes, name: str) -> int:
    return params[off("ndis_offload_params", name)]


def test_full_host_enables_everything_both_want() -> None:
    host, events = bring_up(caps_bytes(**FULL))
    p = params_sent(host)
    assert len(p) == NOFF["NDIS_OFFLOAD_PARAMS_SIZE"]
    assert struct.unpack_from("<BBH", p) == (C["ndis_objtype"]["NDIS_OBJTYPE_DEFAULT"],
                                             NOFF["NDIS_OFFLOAD_PARAMS_REV_3"], NOFF["NDIS_OFFLOAD_PARAMS_SIZE"])
    for name in ("ndis_tcp4csum", "ndis_udp4csum", "ndis_tcp6csum", "ndis_udp6csum"):
        assert pv(p, name) == NOFF["NDIS_OFFLOAD_PARAM_TXRX"], name
    # the host offers the IPv4 header checksum (FULL has CAP_IP4 both ways): set off, as Linux
    assert pv(p, "ndis_ip4csum") == NOFF["NDIS_OFFLOAD_PARAM_OFF"]
    for name in ("ndis_lsov2_ip4", "ndis_lsov2_ip6"):
        assert pv(p, name) == NOFF["NDIS_OFFLOAD_LSOV2_ON"], name
    for name in ("ndis_rsc_ip4", "ndis_rsc_ip6"):
        assert pv(p, name) == NOFF["NDIS_OFFLOAD_RSC_ON"], name
    conf = next(e for e in events if isinstance(e, OffloadsConfigured))
    assert conf.lso_max_size == 60000                  # the smaller of the two families
    assert isinstance(events[-1], RndisConfigured)
    enabled = offloads_enabled(conf)
    assert enabled == {"ip4_csum": False, "tx_csum_tcp4": True, "tx_csum_udp4": True, "tx_csum_tcp6": True,
                       "tx_csum_udp6": True, "rx_csum": True, "lso4": True, "lso6": True,
                       "lso_max_size": 60000, "rsc": True}
    dpo = datapath_offloads(conf)
    assert tun_offload(dpo) == 1 | 2 | 4 and dpo.lso_max_size == 60000


def test_host_without_offloads_sets_everything_off() -> None:
    host, events = bring_up(caps_bytes())
    p = params_sent(host)
    for name in ("ndis_ip4csum", "ndis_tcp4csum", "ndis_udp4csum", "ndis_tcp6csum", "ndis_udp6csum"):
        assert pv(p, name) == NOFF["NDIS_OFFLOAD_PARAM_OFF"], name
    for name in ("ndis_lsov2_ip4", "ndis_lsov2_ip6", "ndis_rsc_ip4", "ndis_rsc_ip6"):
        assert pv(p, name) == NOFF["NDIS_OFFLOAD_LSOV2_OFF"], name
    conf = next(e for e in events if isinstance(e, OffloadsConfigured))
    assert tun_offload(datapath_offloads(conf)) == 0
    assert not any(v for k, v in offloads_enabled(conf).items() if k != "lso_max_size")


@pytest.mark.parametrize("change, expect_off", [
    # TCP4 needs TCP and TCP options in the transmit caps; LSO4 follows it
    (dict(ip4_tx=CAPS["NDIS_TXCSUM_CAP_TCP4"]), {"ndis_tcp4csum", "ndis_udp4csum", "ndis_lsov2_ip4"}),
    # LSO4 needs 802.3 encapsulation
    (dict(lso4_encap=CAPS["NDIS_OFFLOAD_ENCAP_NULL"]), {"ndis_lsov2_ip4"}),
    # LSO6 needs the IPv6 extension + TCP option bits
    (dict(lso6_opts=CAPS["NDIS_LSOV2_CAP_IP6EXT"]), {"ndis_lsov2_ip6"}),
    # TCP6 needs IPv6 extension headers too; UDP6 and LSO6 hang on it
    (dict(ip6_tx=CAPS["NDIS_TXCSUM_CAP_TCP6"] | CAPS["NDIS_TXCSUM_CAP_TCP6OPT"]),
     {"ndis_tcp6csum", "ndis_udp6csum", "ndis_lsov2_ip6"}),
    # RSC only when both families offer it (Linux)
    (dict(rsc6=0), {"ndis_rsc_ip4", "ndis_rsc_ip6"}),
])
def test_each_rule_of_the_linux_mapping(change: dict[str, int], expect_off: set[str]) -> None:
    host, _ = bring_up(caps_bytes(**{**FULL, **change}))
    p = params_sent(host)
    names = ("ndis_ip4csum", "ndis_tcp4csum", "ndis_udp4csum", "ndis_tcp6csum", "ndis_udp6csum",
             "ndis_lsov2_ip4", "ndis_lsov2_ip6", "ndis_rsc_ip4", "ndis_rsc_ip6")
    got_off = {n for n in names if pv(p, n) == NOFF["NDIS_OFFLOAD_PARAM_OFF"]}
    assert got_off == expect_off | {"ndis_ip4csum"}    # the IPv4 header checksum is always off


def test_ndis_61_no_udp_no_rsc_short_params() -> None:
    host, events = bring_up(caps_bytes(**FULL, rev=2, objsize=NOFF["NDIS_OFFLOAD_SIZE_6_1"]),
                            ndis=NDIS["NDIS_VERSION_6_1"])
    p = params_sent(host)
    assert len(p) == NOFF["NDIS_OFFLOAD_PARAMS_SIZE_6_1"]
    assert pv(p, "ndis_tcp4csum") == NOFF["NDIS_OFFLOAD_PARAM_TXRX"]
    assert pv(p, "ndis_udp4csum") == pv(p, "ndis_udp6csum") == NOFF["NDIS_OFFLOAD_PARAM_OFF"]
    conf = next(e for e in events if isinstance(e, OffloadsConfigured))
    assert not offloads_enabled(conf)["rsc"]


def test_rsc_not_wanted_stays_off() -> None:
    host, _ = bring_up(caps_bytes(**FULL), want=OffloadWanted(rsc=False))
    assert pv(params_sent(host), "ndis_rsc_ip4") == NOFF["NDIS_OFFLOAD_RSC_OFF"]


def test_refused_set_continues_without_offloads() -> None:
    _, events = bring_up(caps_bytes(**FULL), set_status=FAILURE)
    assert RequestFailed(OID["OID_TCP_OFFLOAD_PARAMETERS"], FAILURE) in events
    assert not any(isinstance(e, OffloadsConfigured) for e in events)
    assert SetComplete(OID["OID_GEN_CURRENT_PACKET_FILTER"]) in events     # bring-up went on
    assert isinstance(events[-1], RndisConfigured)
    assert tun_offload(datapath_offloads(None)) == 0


def test_failed_caps_query_skips_the_set() -> None:
    host, events = bring_up(FAILURE)
    assert RequestFailed(OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"], FAILURE) in events
    assert all(oid != OID["OID_TCP_OFFLOAD_PARAMETERS"] for _, oid, _ in host.seen)
    assert isinstance(events[-1], RndisConfigured)


@pytest.mark.parametrize("caps, what", [
    (caps_bytes(**FULL, objsize=NOFF["NDIS_OFFLOAD_SIZE_6_0"] - 4), "object size"),
    (caps_bytes(**FULL, rev=0), "revision"),
    (caps_bytes(**FULL)[:3], "no NDIS object header"),
    (b"\x80" + caps_bytes(**FULL)[1:], "object type"),
])
def test_hostile_caps_reply_is_a_protocol_error(caps: bytes, what: str) -> None:
    with pytest.raises(HostProtocolError, match=what):
        bring_up(caps)


def test_caps_event_reports_host_values() -> None:
    _, events = bring_up(caps_bytes(**FULL))
    caps = next(e for e in events if isinstance(e, OffloadCaps))
    assert (caps.lsov2_ip4_max_size, caps.lsov2_ip6_max_size, caps.rsc_ip4, caps.rsc_ip6) == (62780, 60000, True, True)


def test_nvsp_rsc_capability_only_from_61() -> None:
    cap = next(f for f in GOLDEN["structs"]["linux:nvsp_2_vsc_capability"]["fields"]
               if f["name"] == "rsc")
    rsc = 1 << (cap["offset"] * 8 + cap["bit_offset"])
    nv = C["nvs_version"]
    assert rsc_ndis_capabilities(nv["NVS_VERSION_61"]) == default_ndis_capabilities(nv["NVS_VERSION_61"]) | rsc
    assert rsc_ndis_capabilities(nv["NVS_VERSION_6"]) == default_ndis_capabilities(nv["NVS_VERSION_6"])
    assert not default_ndis_capabilities(nv["NVS_VERSION_61"]) & rsc


@pytest.mark.parametrize("bits, vnet_hdr", [(0x8, True), (0x2, True), (0x1, False), (0x40, True)])
def test_tap_refuses_offload_bits_it_cannot_carry(bits: int, vnet_hdr: bool) -> None:
    from hvuio.errors import UsageError
    from hvuio.netdev.tap import Tap

    with pytest.raises(UsageError, match="tap offload bits"):    # checked before any syscall
        Tap.open("hvu-never", bytes.fromhex("020000000001"), 1500, vnet_hdr=vnet_hdr, offload=bits)
