"""The offload wire pieces three ways: the ctypes structs of hvuio.wire.rndis, the constants the C
data path uses (datapath_api.h through cffi), and the golden layouts of Linux/DPDK."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from hvuio import native
from hvuio.wire import rndis as wr

lib: Any = native.lib


def golden_bits(golden: dict[str, Any], struct_name: str, prefix: str = "") -> dict[str, tuple[int, int]]:
    """name -> (absolute first bit, width) of the bitfields (and byte fields) of a golden struct."""
    out = {}
    for f in golden["structs"][struct_name]["fields"]:
        if not f["name"].startswith(prefix) or f["name"] == prefix.rstrip("."):
            continue
        name = f["name"][len(prefix):]
        if "bit_width" in f:
            out[name] = (f["offset"] * 8 + f["bit_offset"], f["bit_width"])
        elif "." not in name and "size" in f and f["size"] < 4:
            out[name] = (f["offset"] * 8, f["size"] * 8)
    return out


def ctypes_bits(cls: type[ctypes.Structure]) -> dict[str, tuple[int, int]]:
    out = {}
    for name, *_ in cls._fields_:
        d = getattr(cls, name)
        if d.size >> 16:                      # bitfield: size = width << 16 | bit offset
            out[name] = (d.offset * 8 + (d.size & 0xFFFF), d.size >> 16)
        else:
            out[name] = (d.offset * 8, d.size * 8)
    return out


@pytest.mark.parametrize("cls, golden_name, prefix", [
    (wr.NdisTxChecksumInfo, "linux:ndis_tcp_ip_checksum_info", "transmit."),
    (wr.NdisRxChecksumInfo, "linux:ndis_tcp_ip_checksum_info", "receive."),
    (wr.NdisLsoV2Info, "linux:ndis_tcp_lso_info", "lso_v2_transmit."),
    (wr.RndisPktinfoId, "linux:rndis_pktinfo_id", ""),
])
def test_pktinfo_structs_match_golden(golden: dict[str, Any], cls: type[ctypes.Structure], golden_name: str,
                                      prefix: str) -> None:
    want = {k: v for k, v in golden_bits(golden, golden_name, prefix).items() if not k.startswith("reserved")}
    got = {k: v for k, v in ctypes_bits(cls).items() if not k.startswith("reserved")}
    assert got == want
    assert ctypes.sizeof(cls) == golden["structs"][golden_name]["size"]


def test_pktinfo_values_match_golden_masks(golden: dict[str, Any]) -> None:
    m = golden["constants"]["linux:ppi_bitfield_masks"]
    tx = wr.NdisTxChecksumInfo(is_ipv4=1, tcp_checksum=1, tcp_header_offset=0x3FF)
    assert bytes(tx) == (m["ndis_tcp_ip_checksum_info.transmit.is_ipv4"]
                         | m["ndis_tcp_ip_checksum_info.transmit.tcp_checksum"]
                         | m["ndis_tcp_ip_checksum_info.transmit.tcp_header_offset"]).to_bytes(4, "little")
    assert int.from_bytes(bytes(tx), "little") == golden["constants"]["hn_derived"]["NDIS_TXCSUM_INFO_MKTCPCS(0x3ff)"] | 1
    lso = wr.NdisLsoV2Info(mss=0xFFFFF, tcp_header_offset=0x3FF, type=1, ip_version=1)
    assert int.from_bytes(bytes(lso), "little") == \
        golden["constants"]["hn_derived"]["NDIS_LSO2_INFO_MAKEIPV6(0x3ff, 0xfffff)"]


def test_c_constants_match_golden(golden: dict[str, Any]) -> None:
    c = golden["constants"]
    assert lib.HVU_DP_PPI_SIZE == wr.NDIS_PPI_SIZE == c["linux:derived_sizes"]["NDIS_CSUM_PPI_SIZE"] \
        == c["linux:derived_sizes"]["NDIS_LSO_PPI_SIZE"]
    assert lib.HVU_NDIS_PKTINFO_CSUM == c["ndis_pktinfo_type"]["NDIS_PKTINFO_TYPE_CSUM"] == wr.PpiType.CSUM
    assert lib.HVU_NDIS_PKTINFO_LSO == c["ndis_pktinfo_type"]["NDIS_PKTINFO_TYPE_LSO"] == wr.PpiType.LSO
    assert lib.HVU_RNDIS_PKTINFO_ID_TYPE & 0xFFFFFFFF == wr.RNDIS_PKTINFO_ID_TYPE \
        == c["linux:ppi_type_words"]["RNDIS_PKTINFO_ID|internal"]
    assert lib.HVU_DP_RSC_MAX_FRAGS == c["linux:netvsc_misc"]["NVSP_RSC_MAX"]
    flags = c["linux:rndis_pktinfo_id_flags"]
    assert (wr.PktinfoIdFlag.SUBALLOC, wr.PktinfoIdFlag.FIRST_FRAG, wr.PktinfoIdFlag.LAST_FRAG,
            wr.RNDIS_PKTINFO_ID_V1) == (flags["RNDIS_PKTINFO_SUBALLOC"], flags["RNDIS_PKTINFO_1ST_FRAG"],
                                        flags["RNDIS_PKTINFO_LAST_FRAG"], flags["RNDIS_PKTINFO_ID_V1"])


def test_new_reason_and_counter_names() -> None:
    names = [native.ffi.string(lib.hvu_dp_reason_name(r)).decode() for r in range(45, lib.HVU_DP_RSC_CSUM + 1)]
    assert names == ["vnet_flags", "vnet_gso_type", "vnet_csum", "vnet_gso", "rsc_sequence", "rsc_too_long",
                     "rsc_frame", "rsc_csum"]
    from hvuio.native.datapath import COUNTER_NAMES
    for name in ("tx_gso", "tx_lso", "tx_sw_seg", "tx_csum_ppi", "tx_sw_csum", "tx_vnet_bad", "rx_csum_valid",
                 "rx_csum_bad", "rx_rsc_frames", "rx_rsc_frags", "rx_rsc_drop"):
        assert name in COUNTER_NAMES
