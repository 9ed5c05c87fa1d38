"""hvuio.wire.nvsp and hvuio.wire.rndis against the golden DPDK/Linux layouts and constants.

Every struct: sizeof, and every field's offset and size, against the DPDK definition (all of its
fields must be covered; our extra fields must be named reserved/pad and sit in DPDK's padding),
and, where Linux declares the same message, against the Linux body at its offset inside
`nvsp_message` (4) or `rndis_message` (8). Every constant the two modules define is looked up in
the golden `constants` by an explicit table (a new constant without a table entry fails).
Then a table of (message, bytes) cases run through build and parse; the bytes are written
with struct.pack from the numbers, not by our encoder.
"""

from __future__ import annotations

import ctypes
import struct
from enum import Enum
from typing import Any

import pytest

from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

D, L = "dpdk", "linux"

# (our struct, golden key, {our field: golden field}, base offset of the golden struct in ours,
#  complete: True = sizes equal and every golden field is covered)
LAYOUTS: list[tuple[type[ctypes.Structure], str, dict[str, str], int, bool]] = [
    (wn.NvspHeader, "hn_nvs_hdr", {"type": "type"}, 0, True),
    (wn.NvspInit, "hn_nvs_init",
     {"type": "type", "ver_min": "ver_min", "ver_max": "ver_max", "reserved": "rsvd"}, 0, True),
    (wn.NvspInit, "linux:nvsp_message_init",
     {"ver_min": "min_protocol_ver", "ver_max": "max_protocol_ver"}, 4, False),
    (wn.NvspInitComplete, "hn_nvs_init_resp",
     {"type": "type", "negotiated_version": "ver", "max_mdl_chain_len": "rsvd",
      "status": "status"}, 0, True),
    (wn.NvspInitComplete, "linux:nvsp_message_init_complete",
     {"negotiated_version": "negotiated_protocol_ver", "max_mdl_chain_len": "max_mdl_chain_len",
      "status": "status"}, 4, False),
    (wn.NvspNdisConfig, "hn_nvs_ndis_conf",
     {"type": "type", "mtu": "mtu", "reserved": "rsvd", "capabilities": "caps",
      "reserved1": "rsvd1"}, 0, True),
    (wn.NvspNdisConfig, "linux:nvsp_2_send_ndis_config",
     {"mtu": "mtu", "reserved": "reserved", "capabilities": "capability"}, 4, False),
    (wn.NvspNdisVersion, "hn_nvs_ndis_init",
     {"type": "type", "ndis_major": "ndis_major", "ndis_minor": "ndis_minor",
      "reserved": "rsvd"}, 0, True),
    (wn.NvspNdisVersion, "linux:nvsp_1_message_send_ndis_version",
     {"ndis_major": "ndis_major_ver", "ndis_minor": "ndis_minor_ver"}, 4, False),
    (wn.NvspRecvBufConnect, "hn_nvs_rxbuf_conn",
     {"type": "type", "gpadl": "gpadl", "id": "sig", "reserved": "rsvd"}, 0, True),
    (wn.NvspRecvBufConnect, "linux:nvsp_1_message_send_receive_buffer",
     {"gpadl": "gpadl_handle", "id": "id"}, 4, False),
    (wn.NvspRecvBufSection, "hn_nvs_rxbuf_sect",
     {"offset": "start", "sub_alloc_size": "slotsz", "num_sub_allocs": "slotcnt",
      "end_offset": "end"}, 0, True),
    (wn.NvspRecvBufSection, "linux:nvsp_1_receive_buffer_section",
     {"offset": "offset", "sub_alloc_size": "sub_alloc_size", "num_sub_allocs": "num_sub_allocs",
      "end_offset": "end_offset"}, 0, True),
    (wn.NvspRecvBufComplete, "hn_nvs_rxbuf_connresp",
     {"type": "type", "status": "status", "num_sections": "nsect", "sections": "nvs_sect"},
     0, True),
    (wn.NvspRecvBufComplete, "linux:nvsp_1_message_send_receive_buffer_complete",
     {"status": "status", "num_sections": "num_sections", "sections": "sections"}, 4, False),
    (wn.NvspRevokeRecvBuf, "hn_nvs_rxbuf_disconn",
     {"type": "type", "id": "sig", "reserved": "rsvd"}, 0, True),
    (wn.NvspRevokeRecvBuf, "linux:nvsp_1_message_revoke_receive_buffer", {"id": "id"}, 4, False),
    (wn.NvspSendBufConnect, "hn_nvs_chim_conn",
     {"type": "type", "gpadl": "gpadl", "id": "sig", "reserved": "rsvd"}, 0, True),
    (wn.NvspSendBufConnect, "linux:nvsp_1_message_send_send_buffer",
     {"gpadl": "gpadl_handle", "id": "id"}, 4, False),
    (wn.NvspSendBufComplete, "hn_nvs_chim_connresp",
     {"type": "type", "status": "status", "section_size": "sectsz"}, 0, True),
    (wn.NvspSendBufComplete, "linux:nvsp_1_message_send_send_buffer_complete",
     {"status": "status", "section_size": "section_size"}, 4, False),
    (wn.NvspRevokeSendBuf, "hn_nvs_chim_disconn",
     {"type": "type", "id": "sig", "reserved": "rsvd"}, 0, True),
    (wn.NvspRevokeSendBuf, "linux:nvsp_1_message_revoke_send_buffer", {"id": "id"}, 4, False),
    (wn.NvspSendRndisPacket, "hn_nvs_rndis",
     {"type": "type", "channel_type": "rndis_mtype", "section_index": "chim_idx",
      "section_size": "chim_sz", "reserved": "rsvd"}, 0, True),
    (wn.NvspSendRndisPacket, "linux:nvsp_1_message_send_rndis_packet",
     {"channel_type": "channel_type", "section_index": "send_buf_section_index",
      "section_size": "send_buf_section_size"}, 4, False),
    (wn.NvspSendRndisPacketComplete, "hn_nvs_rndis_ack",
     {"type": "type", "status": "status", "reserved": "rsvd"}, 0, True),
    (wn.NvspSendRndisPacketComplete, "linux:nvsp_1_message_send_rndis_packet_complete",
     {"status": "status"}, 4, False),
    (wn.NvspSwitchDatapath, "hn_nvs_datapath",
     {"type": "type", "active_datapath": "active_path", "reserved": "rsvd"}, 0, True),
    (wn.NvspSwitchDatapath, "linux:nvsp_4_sw_datapath",
     {"active_datapath": "active_datapath"}, 4, False),
    (wn.NvspVfAssociation, "hn_nvs_vf_association",
     {"type": "type", "allocated": "allocated", "serial": "serial"}, 0, True),
    (wn.NvspVfAssociation, "linux:nvsp_4_send_vf_association",
     {"allocated": "allocated", "serial": "serial"}, 4, False),
    (wn.NvspSubchannelRequest, "hn_nvs_subch_req",
     {"type": "type", "op": "op", "count": "nsubch", "reserved": "rsvd"}, 0, True),
    (wn.NvspSubchannelRequest, "linux:nvsp_5_subchannel_request",
     {"op": "op", "count": "num_subchannels"}, 4, False),
    (wn.NvspSubchannelComplete, "hn_nvs_subch_resp",
     {"type": "type", "status": "status", "count": "nsubch", "reserved": "rsvd"}, 0, True),
    (wn.NvspSubchannelComplete, "linux:nvsp_5_subchannel_complete",
     {"status": "status", "count": "num_subchannels"}, 4, False),
    (wn.NvspIndirectionTable, "linux:nvsp_5_send_indirect_table",
     {"count": "count", "offset": "offset"}, 4, False),
    # RNDIS
    (wr.RndisHeader, "rndis_msghdr", {"type": "type", "length": "len"}, 0, True),
    (wr.RndisInitRequest, "rndis_init_req",
     {"type": "type", "length": "len", "request_id": "rid", "major_version": "ver_major",
      "minor_version": "ver_minor", "max_transfer_size": "max_xfersz"}, 0, True),
    (wr.RndisInitRequest, "linux:rndis_initialize_request",
     {"request_id": "req_id", "major_version": "major_ver", "minor_version": "minor_ver",
      "max_transfer_size": "max_xfer_size"}, 8, True),
    (wr.RndisInitComplete, "rndis_init_comp",
     {"type": "type", "length": "len", "request_id": "rid", "status": "status",
      "major_version": "ver_major", "minor_version": "ver_minor", "device_flags": "devflags",
      "medium": "medium", "max_packets_per_message": "pktmaxcnt",
      "max_transfer_size": "pktmaxsz", "alignment_shift": "align",
      "af_list_offset": "aflistoffset", "af_list_size": "aflistsz"}, 0, True),
    (wr.RndisInitComplete, "linux:rndis_initialize_complete",
     {"request_id": "req_id", "status": "status", "major_version": "major_ver",
      "minor_version": "minor_ver", "device_flags": "dev_flags", "medium": "medium",
      "max_packets_per_message": "max_pkt_per_msg", "max_transfer_size": "max_xfer_size",
      "alignment_shift": "pkt_alignment_factor", "af_list_offset": "af_list_offset",
      "af_list_size": "af_list_size"}, 8, True),
    (wr.RndisHaltRequest, "rndis_halt_req",
     {"type": "type", "length": "len", "request_id": "rid"}, 0, True),
    (wr.RndisHaltRequest, "linux:rndis_halt_request", {"request_id": "req_id"}, 8, True),
    (wr.RndisQueryRequest, "rndis_query_req",
     {"type": "type", "length": "len", "request_id": "rid", "oid": "oid",
      "info_buffer_length": "infobuflen", "info_buffer_offset": "infobufoffset",
      "device_vc_handle": "devicevchdl"}, 0, True),
    (wr.RndisQueryRequest, "linux:rndis_query_request",
     {"request_id": "req_id", "oid": "oid", "info_buffer_length": "info_buflen",
      "info_buffer_offset": "info_buf_offset", "device_vc_handle": "dev_vc_handle"}, 8, True),
    (wr.RndisQueryComplete, "rndis_query_comp",
     {"type": "type", "length": "len", "request_id": "rid", "status": "status",
      "info_buffer_length": "infobuflen", "info_buffer_offset": "infobufoffset"}, 0, True),
    (wr.RndisQueryComplete, "linux:rndis_query_complete",
     {"request_id": "req_id", "status": "status", "info_buffer_length": "info_buflen",
      "info_buffer_offset": "info_buf_offset"}, 8, True),
    (wr.RndisSetRequest, "rndis_set_req",
     {"type": "type", "length": "len", "request_id": "rid", "oid": "oid",
      "info_buffer_length": "infobuflen", "info_buffer_offset": "infobufoffset",
      "device_vc_handle": "devicevchdl"}, 0, True),
    (wr.RndisSetRequest, "linux:rndis_set_request",
     {"request_id": "req_id", "oid": "oid", "info_buffer_length": "info_buflen",
      "info_buffer_offset": "info_buf_offset", "device_vc_handle": "dev_vc_handle"}, 8, False),
    (wr.RndisSetComplete, "rndis_set_comp",
     {"type": "type", "length": "len", "request_id": "rid", "status": "status"}, 0, True),
    (wr.RndisSetComplete, "linux:rndis_set_complete",
     {"request_id": "req_id", "status": "status"}, 8, True),
    (wr.RndisResetRequest, "rndis_reset_req",
     {"type": "type", "length": "len", "reserved": "rid"}, 0, True),
    (wr.RndisResetComplete, "rndis_reset_comp",
     {"type": "type", "length": "len", "status": "status", "addressing_reset": "adrreset"},
     0, True),
    (wr.RndisResetComplete, "linux:rndis_reset_complete",
     {"status": "status", "addressing_reset": "addressing_reset"}, 8, True),
    (wr.RndisIndicateStatus, "rndis_status_msg",
     {"type": "type", "length": "len", "status": "status",
      "status_buffer_length": "stbuflen", "status_buffer_offset": "stbufoffset"}, 0, True),
    (wr.RndisIndicateStatus, "linux:rndis_indicate_status",
     {"status": "status", "status_buffer_length": "status_buflen",
      "status_buffer_offset": "status_buf_offset"}, 8, True),
    (wr.RndisKeepaliveRequest, "rndis_keepalive_req",
     {"type": "type", "length": "len", "request_id": "rid"}, 0, True),
    (wr.RndisKeepaliveRequest, "linux:rndis_keepalive_request", {"request_id": "req_id"}, 8, True),
    (wr.RndisKeepaliveComplete, "rndis_keepalive_comp",
     {"type": "type", "length": "len", "request_id": "rid", "status": "status"}, 0, True),
    (wr.RndisKeepaliveComplete, "linux:rndis_keepalive_complete",
     {"request_id": "req_id", "status": "status"}, 8, True),
    (wr.RndisPacket, "rndis_packet_msg",
     {"type": "type", "length": "len", "data_offset": "dataoffset", "data_length": "datalen",
      "oob_data_offset": "oobdataoffset", "oob_data_length": "oobdatalen",
      "num_oob_data_elements": "oobdataelements", "ppi_offset": "pktinfooffset",
      "ppi_length": "pktinfolen", "vc_handle": "vchandle", "reserved": "reserved"}, 0, True),
    (wr.RndisPacket, "linux:rndis_packet",
     {"data_offset": "data_offset", "data_length": "data_len",
      "oob_data_offset": "oob_data_offset", "oob_data_length": "oob_data_len",
      "num_oob_data_elements": "num_oob_data_elements", "ppi_offset": "per_pkt_info_offset",
      "ppi_length": "per_pkt_info_len", "vc_handle": "vc_handle", "reserved": "reserved"},
     8, True),
    (wr.RndisPerPacketInfo, "rndis_pktinfo",
     {"size": "size", "type": "type", "ppi_offset": "offset"}, 0, True),
    (wr.NdisObjectHeader, "ndis_object_hdr",
     {"type": "ndis_type", "revision": "ndis_rev", "size": "ndis_size"}, 0, True),
    (wr.NdisObjectHeader, "linux:ndis_object_header",
     {"type": "type", "revision": "revision", "size": "size"}, 0, True),
    (wr.NdisOffloadParams, "ndis_offload_params",
     {"header": "ndis_hdr", "ip4_checksum": "ndis_ip4csum", "tcp4_checksum": "ndis_tcp4csum",
      "udp4_checksum": "ndis_udp4csum", "tcp6_checksum": "ndis_tcp6csum",
      "udp6_checksum": "ndis_udp6csum", "lsov1": "ndis_lsov1", "ipsecv1": "ndis_ipsecv1",
      "lsov2_ip4": "ndis_lsov2_ip4", "lsov2_ip6": "ndis_lsov2_ip6",
      "tcp4_connection": "ndis_tcp4conn", "tcp6_connection": "ndis_tcp6conn",
      "flags": "ndis_flags", "ipsecv2": "ndis_ipsecv2", "ipsecv2_ip4": "ndis_ipsecv2_ip4",
      "rsc_ip4": "ndis_rsc_ip4", "rsc_ip6": "ndis_rsc_ip6",
      "encapsulated_packet_task_offload": "ndis_encap",
      "encapsulation_types": "ndis_encap_types"}, 0, True),
    (wr.NdisOffloadParams, "linux:ndis_offload_params",
     {"header": "header", "ip4_checksum": "ip_v4_csum", "tcp4_checksum": "tcp_ip_v4_csum",
      "udp4_checksum": "udp_ip_v4_csum", "tcp6_checksum": "tcp_ip_v6_csum",
      "udp6_checksum": "udp_ip_v6_csum", "lsov1": "lso_v1", "ipsecv1": "ip_sec_v1",
      "lsov2_ip4": "lso_v2_ipv4", "lsov2_ip6": "lso_v2_ipv6",
      "tcp4_connection": "tcp_connection_ip_v4", "tcp6_connection": "tcp_connection_ip_v6",
      "flags": "flags", "ipsecv2": "ip_sec_v2", "ipsecv2_ip4": "ip_sec_v2_ip_v4",
      "rsc_ip4": "rsc_ip_v4", "rsc_ip6": "rsc_ip_v6",
      "encapsulated_packet_task_offload": "encapsulated_packet_task_offload",
      "encapsulation_types": "encapsulation_types"}, 0, True),
    (wr.NdisCsumOffload, "ndis_csum_offload",
     {"ip4_tx_encap": "ndis_ip4_txenc", "ip4_tx_csum": "ndis_ip4_txcsum",
      "ip4_rx_encap": "ndis_ip4_rxenc", "ip4_rx_csum": "ndis_ip4_rxcsum",
      "ip6_tx_encap": "ndis_ip6_txenc", "ip6_tx_csum": "ndis_ip6_txcsum",
      "ip6_rx_encap": "ndis_ip6_rxenc", "ip6_rx_csum": "ndis_ip6_rxcsum"}, 0, True),
    (wr.NdisLsov1Offload, "ndis_lsov1_offload",
     {"encap": "ndis_encap", "max_size": "ndis_maxsize", "min_segments": "ndis_minsegs",
      "options": "ndis_opts"}, 0, True),
    (wr.NdisIpsecv1Offload, "ndis_ipsecv1_offload",
     {"encap": "ndis_encap", "ah_esp": "ndis_ah_esp", "transport_tunnel": "ndis_xport_tun",
      "ip4_options": "ndis_ip4_opts", "flags": "ndis_flags", "ip4_ah": "ndis_ip4_ah",
      "ip4_esp": "ndis_ip4_esp"}, 0, True),
    (wr.NdisLsov2Offload, "ndis_lsov2_offload",
     {"ip4_encap": "ndis_ip4_encap", "ip4_max_size": "ndis_ip4_maxsz",
      "ip4_min_segments": "ndis_ip4_minsg", "ip6_encap": "ndis_ip6_encap",
      "ip6_max_size": "ndis_ip6_maxsz", "ip6_min_segments": "ndis_ip6_minsg",
      "ip6_options": "ndis_ip6_opts"}, 0, True),
    (wr.NdisIpsecv2Offload, "ndis_ipsecv2_offload",
     {"encap": "ndis_encap", "ip6": "ndis_ip6", "ip4_options": "ndis_ip4opt",
      "ip6_extension": "ndis_ip6ext", "ah": "ndis_ah", "esp": "ndis_esp",
      "ah_esp": "ndis_ah_esp", "transport": "ndis_xport", "tunnel": "ndis_tun",
      "transport_tunnel": "ndis_xport_tun", "lso": "ndis_lso",
      "extended_sequence": "ndis_extseq", "udp_esp": "ndis_udp_esp",
      "authentication": "ndis_auth", "encryption": "ndis_crypto",
      "sa_capabilities": "ndis_sa_caps"}, 0, True),
    (wr.NdisRscOffload, "ndis_rsc_offload", {"ip4": "ndis_ip4", "ip6": "ndis_ip6"}, 0, True),
    (wr.NdisEncapOffload, "ndis_encap_offload",
     {"flags": "ndis_flags", "max_header_size": "ndis_maxhdr"}, 0, True),
    (wr.NdisOffload, "ndis_offload",
     {"header": "ndis_hdr", "csum": "ndis_csum", "lsov1": "ndis_lsov1",
      "ipsecv1": "ndis_ipsecv1", "lsov2": "ndis_lsov2", "flags": "ndis_flags",
      "ipsecv2": "ndis_ipsecv2", "rsc": "ndis_rsc", "encap_gre": "ndis_encap_gre"}, 0, True),
    (wr.NdisOffload, "linux:ndis_offload",
     {"header": "header", "csum": "csum", "lsov1": "lsov1", "ipsecv1": "ipsecv1",
      "lsov2": "lsov2", "flags": "flags", "ipsecv2": "ipsecv2", "rsc": "rsc",
      "encap_gre": "encap_gre"}, 0, True),
    (wr.NdisRssCaps, "ndis_rss_caps",
     {"header": "ndis_hdr", "capabilities": "ndis_caps", "num_interrupt_messages": "ndis_nmsi",
      "num_receive_queues": "ndis_nrxr", "num_indirection_entries": "ndis_nind",
      "pad": "ndis_pad"}, 0, True),
    (wr.NdisRssParams, "linux:ndis_recv_scale_param",
     {"header": "hdr", "flags": "flag", "base_cpu": "base_cpu_number", "hash_info": "hashinfo",
      "table_size": "indirect_tabsize", "table_offset": "indirect_taboffset", "key_size": "hashkey_size",
      "key_offset": "hashkey_offset", "cpu_mask_offset": "processor_masks_offset",
      "cpu_mask_count": "num_processor_masks", "cpu_mask_entry_size": "processor_masks_entry_size"}, 0, True),
]

NVSP_REQUESTS = [wn.NvspInit, wn.NvspNdisConfig, wn.NvspNdisVersion, wn.NvspRecvBufConnect,
                 wn.NvspRevokeRecvBuf, wn.NvspSendBufConnect, wn.NvspRevokeSendBuf,
                 wn.NvspSendRndisPacket, wn.NvspSendRndisPacketComplete, wn.NvspSwitchDatapath,
                 wn.NvspSubchannelRequest]


def _fields(cls: type[ctypes.Structure]) -> dict[str, tuple[int, int]]:
    return {f[0]: (getattr(cls, f[0]).offset, getattr(cls, f[0]).size) for f in cls._fields_}


@pytest.mark.parametrize("cls,key,mapping,base,complete", LAYOUTS,
                         ids=[f"{c.__name__}-{k}" for c, k, *_ in LAYOUTS])
def test_struct_layout(golden: dict[str, Any], cls: type[ctypes.Structure], key: str,
                       mapping: dict[str, str], base: int, complete: bool) -> None:
    g = golden["structs"][key]
    gf = {f["name"]: f for f in g["fields"]
          if "." not in f["name"] and "bit_width" not in f and not f.get("flexible")}
    mine = _fields(cls)
    for ours, theirs in mapping.items():
        assert mine[ours] == (base + gf[theirs]["offset"], gf[theirs]["size"]), (ours, theirs)
    if not complete:
        return
    assert ctypes.sizeof(cls) == base + g["size"]
    assert set(mapping.values()) == set(gf), "every golden field must be covered"
    if base:
        return
    taken = [(f["offset"], f["offset"] + f["size"]) for f in gf.values()]
    for name in set(mine) - set(mapping):
        assert name.startswith(("reserved", "pad")), f"{name} is not in the golden struct"
        lo, hi = mine[name][0], sum(mine[name])
        assert all(hi <= a or lo >= b for a, b in taken), f"{name} overlaps a golden field"


@pytest.mark.parametrize("cls", NVSP_REQUESTS, ids=lambda c: c.__name__)
def test_nvsp_requests_are_nvsp_message_sized(golden: dict[str, Any],
                                              cls: type[ctypes.Structure]) -> None:
    assert ctypes.sizeof(cls) == golden["structs"]["linux:nvsp_message"]["size"] == 40
    assert wn.NVSP_MESSAGE_SIZE == 40


# Every constant defined by the two wire modules -> (golden group, golden key).
ENUM_CONSTANTS: dict[type[Enum], dict[str, tuple[str, str]]] = {
    wn.NvspType: {
        "INIT": ("nvs_msg_type", "NVS_TYPE_INIT"),
        "INIT_COMPLETE": ("nvs_msg_type", "NVS_TYPE_INIT_RESP"),
        "SEND_NDIS_VERSION": ("nvs_msg_type", "NVS_TYPE_NDIS_INIT"),
        "SEND_RECV_BUF": ("nvs_msg_type", "NVS_TYPE_RXBUF_CONN"),
        "SEND_RECV_BUF_COMPLETE": ("nvs_msg_type", "NVS_TYPE_RXBUF_CONNRESP"),
        "REVOKE_RECV_BUF": ("nvs_msg_type", "NVS_TYPE_RXBUF_DISCONN"),
        "SEND_SEND_BUF": ("nvs_msg_type", "NVS_TYPE_CHIM_CONN"),
        "SEND_SEND_BUF_COMPLETE": ("nvs_msg_type", "NVS_TYPE_CHIM_CONNRESP"),
        "REVOKE_SEND_BUF": ("nvs_msg_type", "NVS_TYPE_CHIM_DISCONN"),
        "SEND_RNDIS_PACKET": ("nvs_msg_type", "NVS_TYPE_RNDIS"),
        "SEND_RNDIS_PACKET_COMPLETE": ("nvs_msg_type", "NVS_TYPE_RNDIS_ACK"),
        "SEND_NDIS_CONFIG": ("nvs_msg_type", "NVS_TYPE_NDIS_CONF"),
        "SEND_VF_ASSOCIATION": ("nvs_msg_type", "NVS_TYPE_VFASSOC_NOTE"),
        "SWITCH_DATA_PATH": ("nvs_msg_type", "NVS_TYPE_SET_DATAPATH"),
        "SUBCHANNEL": ("nvs_msg_type", "NVS_TYPE_SUBCH_REQ"),
        "SEND_INDIRECTION_TABLE": ("nvs_msg_type", "NVS_TYPE_TXTBL_NOTE"),
    },
    wn.NvspVersion: {
        "V1": ("nvs_version", "NVS_VERSION_1"), "V2": ("nvs_version", "NVS_VERSION_2"),
        "V4": ("nvs_version", "NVS_VERSION_4"), "V5": ("nvs_version", "NVS_VERSION_5"),
        "V6": ("nvs_version", "NVS_VERSION_6"), "V61": ("nvs_version", "NVS_VERSION_61"),
    },
    wn.NdisVersion: {
        "V6_1": ("ndis_version", "NDIS_VERSION_6_1"),
        "V6_20": ("ndis_version", "NDIS_VERSION_6_20"),
        "V6_30": ("ndis_version", "NDIS_VERSION_6_30"),
    },
    wn.NvspStatus: {name: ("linux:nvsp_status", f"NVSP_STAT_{name}") for name in
                    ["NONE", "SUCCESS", "PROTOCOL_TOO_NEW", "PROTOCOL_TOO_OLD",
                     "INVALID_RNDIS_PKT", "BUSY", "PROTOCOL_UNSUPPORTED"]}
    | {"FAIL": ("linux:nvsp_status", "NVSP_STAT_FAIL")},
    wn.Datapath: {"SYNTHETIC": ("nvs_datapath", "NVS_DATAPATH_SYNTHETIC"),
                  "VF": ("nvs_datapath", "NVS_DATAPATH_VF")},
    wn.SubchannelOp: {"ALLOCATE": ("nvs_subch_op", "NVS_SUBCH_OP_ALLOC")},
    wn.RndisChannelType: {"DATA": ("nvs_rndis_mtype", "NVS_RNDIS_MTYPE_DATA"),
                          "CONTROL": ("nvs_rndis_mtype", "NVS_RNDIS_MTYPE_CTRL")},
    wr.RndisType: {
        "PACKET": ("rndis_msg_type", "RNDIS_PACKET_MSG"),
        "INITIALIZE": ("rndis_msg_type", "RNDIS_INITIALIZE_MSG"),
        "INITIALIZE_COMPLETE": ("rndis_msg_type", "RNDIS_INITIALIZE_CMPLT"),
        "HALT": ("rndis_msg_type", "RNDIS_HALT_MSG"),
        "QUERY": ("rndis_msg_type", "RNDIS_QUERY_MSG"),
        "QUERY_COMPLETE": ("rndis_msg_type", "RNDIS_QUERY_CMPLT"),
        "SET": ("rndis_msg_type", "RNDIS_SET_MSG"),
        "SET_COMPLETE": ("rndis_msg_type", "RNDIS_SET_CMPLT"),
        "RESET": ("rndis_msg_type", "RNDIS_RESET_MSG"),
        "RESET_COMPLETE": ("rndis_msg_type", "RNDIS_RESET_CMPLT"),
        "INDICATE_STATUS": ("rndis_msg_type", "RNDIS_INDICATE_STATUS_MSG"),
        "KEEPALIVE": ("rndis_msg_type", "RNDIS_KEEPALIVE_MSG"),
        "KEEPALIVE_COMPLETE": ("rndis_msg_type", "RNDIS_KEEPALIVE_CMPLT"),
    },
    wr.RndisStatus: {m.name: ("rndis_status", f"RNDIS_STATUS_{m.name}") for m in wr.RndisStatus},
    wr.Oid: {
        "GEN_MAXIMUM_FRAME_SIZE": ("ndis_oid", "OID_GEN_MAXIMUM_FRAME_SIZE"),
        "GEN_LINK_SPEED": ("ndis_oid", "OID_GEN_LINK_SPEED"),
        "GEN_CURRENT_PACKET_FILTER": ("ndis_oid", "OID_GEN_CURRENT_PACKET_FILTER"),
        "GEN_MAXIMUM_TOTAL_SIZE": ("ndis_oid", "OID_GEN_MAXIMUM_TOTAL_SIZE"),
        "GEN_MEDIA_CONNECT_STATUS": ("ndis_oid", "OID_GEN_MEDIA_CONNECT_STATUS"),
        "GEN_RECEIVE_SCALE_CAPABILITIES": ("ndis_oid", "OID_GEN_RECEIVE_SCALE_CAPABILITIES"),
        "GEN_RECEIVE_SCALE_PARAMETERS": ("ndis_oid", "OID_GEN_RECEIVE_SCALE_PARAMETERS"),
        "GEN_RNDIS_CONFIG_PARAMETER": ("ndis_oid", "OID_GEN_RNDIS_CONFIG_PARAMETER"),
        "OID_802_3_PERMANENT_ADDRESS": ("ndis_oid", "OID_802_3_PERMANENT_ADDRESS"),
        "OID_802_3_CURRENT_ADDRESS": ("ndis_oid", "OID_802_3_CURRENT_ADDRESS"),
        "OID_802_3_MULTICAST_LIST": ("ndis_oid", "OID_802_3_MULTICAST_LIST"),
        "TCP_OFFLOAD_CURRENT_CONFIG": ("linux:ndis_oid", "OID_TCP_OFFLOAD_CURRENT_CONFIG"),
        "TCP_OFFLOAD_PARAMETERS": ("ndis_oid", "OID_TCP_OFFLOAD_PARAMETERS"),
        "TCP_OFFLOAD_HARDWARE_CAPABILITIES": ("ndis_oid",
                                              "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"),
    },
    wr.RndisMedium: {"MEDIUM_802_3": ("rndis_medium", "RNDIS_MEDIUM_802_3")},
    wr.RndisDeviceFlags: {"CONNECTIONLESS": ("rndis_device_flags", "RNDIS_DF_CONNECTIONLESS"),
                          "CONNECTION_ORIENTED": ("rndis_device_flags",
                                                  "RNDIS_DF_CONNECTION_ORIENTED")},
    wr.PacketFilter: {m.name: ("ndis_packet_filter", f"NDIS_PACKET_TYPE_{m.name}")
                      for m in wr.PacketFilter.__members__.values() if m.name is not None},
    wr.MediaState: {"CONNECTED": ("ndis_media_state", "NDIS_MEDIA_STATE_CONNECTED"),
                    "DISCONNECTED": ("ndis_media_state", "NDIS_MEDIA_STATE_DISCONNECTED")},
    wr.PpiType: {
        "CSUM": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_CSUM"),
        "IPSEC": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_IPSEC"),
        "LSO": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_LSO"),
        "CLASSIFY": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_CLASSIFY"),
        "SGLIST": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_SGLIST"),
        "VLAN": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_VLAN"),
        "ORIG": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_ORIG"),
        "HASH_VALUE": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_HASHVAL"),
        "HASH_INFO": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_HASHINF"),
        "CACHE_NBLIST": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_CACHE_NBLIST"),
        "PKT_PAD": ("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_PKT_PAD"),
    },
    wr.NdisObjectType: {m.name: ("ndis_objtype", f"NDIS_OBJTYPE_{m.name}")
                        for m in wr.NdisObjectType},
    wr.NdisOffloadParam: {
        "NO_CHANGE": ("ndis_offload", "NDIS_OFFLOAD_PARAM_NOCHG"),
        "OFF": ("ndis_offload", "NDIS_OFFLOAD_PARAM_OFF"),
        "TX": ("ndis_offload", "NDIS_OFFLOAD_PARAM_TX"),
        "RX": ("ndis_offload", "NDIS_OFFLOAD_PARAM_RX"),
        "TX_RX": ("ndis_offload", "NDIS_OFFLOAD_PARAM_TXRX"),
    },
    wr.NdisOffloadToggle: {
        "NO_CHANGE": ("ndis_offload", "NDIS_OFFLOAD_SET_NOCHG"),
        "OFF": ("ndis_offload", "NDIS_OFFLOAD_LSOV2_OFF"),
        "ON": ("ndis_offload", "NDIS_OFFLOAD_LSOV2_ON"),
    },
    wr.NdisOffloadEncap: {
        "NONE": ("ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_NONE"),
        "NULL": ("ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_NULL"),
        "ENCAP_8023": ("ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_8023"),
        "ENCAP_8023PQ": ("ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_8023PQ"),
        "ENCAP_8023PQ_OOB": ("ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_8023PQ_OOB"),
        "RFC1483": ("ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_RFC1483"),
    },
    wr.NdisTxCsumCap: {
        "IP4OPT_OR_IP6EXT": ("ndis_offload_caps", "NDIS_TXCSUM_CAP_IP4OPT"),
        "TCPOPT": ("ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4OPT"),
        "TCP": ("ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4"),
        "UDP": ("ndis_offload_caps", "NDIS_TXCSUM_CAP_UDP4"),
        "IP4": ("ndis_offload_caps", "NDIS_TXCSUM_CAP_IP4"),
    },
    wr.NdisLsov2Cap: {"IP6EXT": ("ndis_offload_caps", "NDIS_LSOV2_CAP_IP6EXT"),
                      "TCP6OPT": ("ndis_offload_caps", "NDIS_LSOV2_CAP_TCP6OPT")},
}

# The same values under their other golden names (both sources must agree with us).
ALSO: list[tuple[int, str, str]] = [
    (wn.NvspType.SUBCHANNEL, "nvs_msg_type", "NVS_TYPE_SUBCH_RESP"),
    (wn.NvspVersion.V61, "linux:nvsp_protocol_version", "NVSP_PROTOCOL_VERSION_61"),
    (wn.NvspVersion.V1, "linux:nvsp_protocol_version", "NVSP_PROTOCOL_VERSION_1"),
    (wn.NvspStatus.SUCCESS, "nvs_status", "NVS_STATUS_OK"),
    (wn.NvspStatus.FAIL, "nvs_status", "NVS_STATUS_FAILED"),
    (wn.NvspType.SEND_NDIS_CONFIG, "linux:nvsp_msg_type", "NVSP_MSG2_TYPE_SEND_NDIS_CONFIG"),
    (wn.NvspType.SEND_INDIRECTION_TABLE, "linux:nvsp_msg_type",
     "NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE"),
    (wn.NdisConfigCap.SRIOV, "nvs_ndis_conf_caps", "NVS_NDIS_CONF_SRIOV"),
    (wn.NdisConfigCap.IEEE8021Q, "nvs_ndis_conf_caps", "NVS_NDIS_CONF_VLAN"),
    (wr.NdisOffloadToggle.ON, "ndis_offload", "NDIS_OFFLOAD_RSC_ON"),
    (wr.NdisOffloadToggle.OFF, "ndis_offload", "NDIS_OFFLOAD_RSC_OFF"),
    (wr.NdisTxCsumCap.TCPOPT, "ndis_offload_caps", "NDIS_RXCSUM_CAP_TCP6OPT"),
    (wr.NdisTxCsumCap.IP4OPT_OR_IP6EXT, "ndis_offload_caps", "NDIS_TXCSUM_CAP_IP6EXT"),
    (wr.PacketFilter.GROUP, "linux:rndis_packet_type_rndis_h", "RNDIS_PACKET_TYPE_GROUP"),
    (wr.PacketFilter.MAC_FRAME, "linux:rndis_packet_type_rndis_h", "RNDIS_PACKET_TYPE_MAC_FRAME"),
    # plain module constants
    (wn.RECV_BUFFER_ID, "nvs_misc", "NVS_RXBUF_SIG"),
    (wn.RECV_BUFFER_ID, "linux:netvsc_misc", "NETVSC_RECEIVE_BUFFER_ID"),
    (wn.SEND_BUFFER_ID, "linux:netvsc_misc", "NETVSC_SEND_BUFFER_ID"),
    (wn.SEND_SECTION_NONE, "nvs_misc", "NVS_CHIM_IDX_INVALID"),
    (wn.INDIRECTION_TABLE_SIZE, "linux:netvsc_misc", "VRSS_SEND_TAB_SIZE"),
    (wr.RNDIS_HEADER_SIZE, "linux:derived_sizes", "RNDIS_HEADER_SIZE"),
    (wr.RNDIS_OFFSET_BASE, "rndis_offset_bases", "RNDIS_QUERY_COMP_INFOBUFOFFSET_ABS(0)"),
    (wr.RNDIS_OFFSET_BASE, "rndis_offset_bases", "RNDIS_STBUFOFFSET_ABS(0)"),
    (wr.RNDIS_MAJOR_VERSION, "rndis_version", "RNDIS_VERSION_MAJOR"),
    (wr.RNDIS_MINOR_VERSION, "rndis_version", "RNDIS_VERSION_MINOR"),
    (wr.RNDIS_INIT_COMPLETE_MIN_LEN, "rndis_misc", "RNDIS_INIT_COMP_SIZE_MIN"),
    (wr.RNDIS_REQUEST_INFO_OFFSET, "rndis_misc", "RNDIS_QUERY_REQ_INFOBUFOFFSET"),
    (wr.RNDIS_REQUEST_INFO_OFFSET, "rndis_misc", "RNDIS_SET_REQ_INFOBUFOFFSET"),
    (wr.NDIS_OFFLOAD_PARAMS_REV_2, "ndis_offload", "NDIS_OFFLOAD_PARAMS_REV_2"),
    (wr.NDIS_OFFLOAD_PARAMS_REV_3, "ndis_offload", "NDIS_OFFLOAD_PARAMS_REV_3"),
    (wr.NDIS_OFFLOAD_PARAMS_SIZE, "ndis_offload", "NDIS_OFFLOAD_PARAMS_SIZE"),
    (wr.NDIS_OFFLOAD_PARAMS_SIZE_6_1, "ndis_offload", "NDIS_OFFLOAD_PARAMS_SIZE_6_1"),
    (wr.NDIS_OFFLOAD_REV_1, "ndis_offload", "NDIS_OFFLOAD_REV_1"),
    (wr.NDIS_OFFLOAD_REV_2, "ndis_offload", "NDIS_OFFLOAD_REV_2"),
    (wr.NDIS_OFFLOAD_REV_3, "ndis_offload", "NDIS_OFFLOAD_REV_3"),
    (wr.NDIS_OFFLOAD_SIZE, "ndis_offload", "NDIS_OFFLOAD_SIZE"),
    (wr.NDIS_OFFLOAD_SIZE_6_0, "ndis_offload", "NDIS_OFFLOAD_SIZE_6_0"),
    (wr.NDIS_OFFLOAD_SIZE_6_1, "ndis_offload", "NDIS_OFFLOAD_SIZE_6_1"),
]


@pytest.mark.parametrize("enum", list(ENUM_CONSTANTS), ids=lambda e: e.__name__)
def test_enum_constants(golden: dict[str, Any], enum: type[Enum]) -> None:
    table = ENUM_CONSTANTS[enum]
    names = list(enum.__members__)
    assert set(names) == set(table), "every member needs a golden entry"
    for name in names:
        group, key = table[name]
        assert enum[name].value == golden["constants"][group][key], (name, group, key)


@pytest.mark.parametrize("value,group,key", ALSO, ids=[k for _, _, k in ALSO])
def test_other_constants(golden: dict[str, Any], value: int, group: str, key: str) -> None:
    assert int(value) == golden["constants"][group][key]


def test_ndis_config_capability_bits_match_linux_bitfield(golden: dict[str, Any]) -> None:
    bits = {f["name"]: f["bit_offset"] for f in
            golden["structs"]["linux:nvsp_2_vsc_capability"]["fields"] if "bit_width" in f}
    for member in wn.NdisConfigCap:
        assert member.name is not None
        assert member.value == 1 << bits[member.name.lower()]
    assert len(wn.NdisConfigCap) == len(bits)


def test_version_list_is_descending_and_matches_both_sources(golden: dict[str, Any]) -> None:
    versions = [int(v) for v in wn.SUPPORTED_NVSP_VERSIONS]
    assert versions == sorted(versions, reverse=True)
    assert set(versions) == set(golden["constants"]["nvs_version"].values())
    linux = {v for k, v in golden["constants"]["linux:nvsp_protocol_version"].items()
             if k != "NVSP_INVALID_PROTOCOL_VERSION"}
    assert set(versions) == linux


def test_ndis_version_rule() -> None:
    assert wn.ndis_version_for(wn.NvspVersion.V4) == wn.NdisVersion.V6_1
    assert wn.ndis_version_for(wn.NvspVersion.V1) == wn.NdisVersion.V6_1
    assert wn.ndis_version_for(wn.NvspVersion.V5) == wn.NdisVersion.V6_30
    assert wn.ndis_version_for(wn.NvspVersion.V61) == wn.NdisVersion.V6_30


# ---- (message, bytes) through build and parse -----------------------------------------------

Z = bytes  # zero padding helper: Z(n)

CASES: list[tuple[str, type[ctypes.Structure], dict[str, Any], bytes]] = [
    ("nvsp init 6.1", wn.NvspInit, {"type": 1, "ver_min": 0x60001, "ver_max": 0x60001},
     struct.pack("<III", 1, 0x60001, 0x60001) + Z(28)),
    ("nvsp init complete", wn.NvspInitComplete,
     {"type": 2, "negotiated_version": 0x50000, "max_mdl_chain_len": 34, "status": 1},
     struct.pack("<IIII", 2, 0x50000, 34, 1)),
    ("nvsp ndis config", wn.NvspNdisConfig, {"type": 125, "mtu": 1514, "capabilities": 0x28},
     struct.pack("<IIIQ", 125, 1514, 0, 0x28) + Z(20)),
    ("nvsp ndis version", wn.NvspNdisVersion, {"type": 100, "ndis_major": 6, "ndis_minor": 30},
     struct.pack("<III", 100, 6, 30) + Z(28)),
    ("nvsp recv buf connect", wn.NvspRecvBufConnect,
     {"type": 101, "gpadl": 0xE1E10, "id": 0xCAFE},
     struct.pack("<IIH", 101, 0xE1E10, 0xCAFE) + Z(30)),
    ("nvsp recv buf complete", wn.NvspRecvBufComplete,
     {"type": 102, "status": 1, "num_sections": 1},
     struct.pack("<III", 102, 1, 1) + Z(16)),
    ("nvsp revoke recv buf", wn.NvspRevokeRecvBuf, {"type": 103, "id": 0xCAFE},
     struct.pack("<IH", 103, 0xCAFE) + Z(34)),
    ("nvsp send buf connect", wn.NvspSendBufConnect, {"type": 104, "gpadl": 7, "id": 0},
     struct.pack("<IIH", 104, 7, 0) + Z(30)),
    ("nvsp send buf complete", wn.NvspSendBufComplete,
     {"type": 105, "status": 1, "section_size": 6144}, struct.pack("<III", 105, 1, 6144)),
    ("nvsp revoke send buf", wn.NvspRevokeSendBuf, {"type": 106, "id": 0xFACE},
     struct.pack("<IH", 106, 0xFACE) + Z(34)),
    ("nvsp send rndis ctrl", wn.NvspSendRndisPacket,
     {"type": 107, "channel_type": 1, "section_index": 12, "section_size": 24},
     struct.pack("<IIII", 107, 1, 12, 24) + Z(24)),
    ("nvsp rndis ack", wn.NvspSendRndisPacketComplete, {"type": 108, "status": 1},
     struct.pack("<II", 108, 1) + Z(32)),
    ("nvsp switch datapath", wn.NvspSwitchDatapath, {"type": 129, "active_datapath": 1},
     struct.pack("<II", 129, 1) + Z(32)),
    ("nvsp vf association", wn.NvspVfAssociation, {"type": 128, "allocated": 1, "serial": 9},
     struct.pack("<III", 128, 1, 9)),
    ("nvsp subchannel request", wn.NvspSubchannelRequest, {"type": 133, "op": 1, "count": 7},
     struct.pack("<III", 133, 1, 7) + Z(28)),
    ("nvsp subchannel complete", wn.NvspSubchannelComplete,
     {"type": 133, "status": 1, "count": 3}, struct.pack("<III", 133, 1, 3) + Z(28)),
    ("nvsp indirection head", wn.NvspIndirectionTable, {"type": 134, "count": 16, "offset": 12},
     struct.pack("<III", 134, 16, 12)),
    ("rndis init", wr.RndisInitRequest,
     {"type": 2, "length": 24, "request_id": 1, "major_version": 1, "minor_version": 0,
      "max_transfer_size": 0x4000}, struct.pack("<6I", 2, 24, 1, 1, 0, 0x4000)),
    ("rndis init complete", wr.RndisInitComplete,
     {"type": 0x80000002, "length": 52, "request_id": 1, "status": 0, "major_version": 1,
      "minor_version": 0, "device_flags": 1, "medium": 0, "max_packets_per_message": 8,
      "max_transfer_size": 0x4000, "alignment_shift": 3},
     struct.pack("<13I", 0x80000002, 52, 1, 0, 1, 0, 1, 0, 8, 0x4000, 3, 0, 0)),
    ("rndis query", wr.RndisQueryRequest,
     {"type": 4, "length": 28, "request_id": 5, "oid": 0x01010101, "info_buffer_offset": 20},
     struct.pack("<7I", 4, 28, 5, 0x01010101, 0, 20, 0)),
    ("rndis query complete", wr.RndisQueryComplete,
     {"type": 0x80000004, "length": 30, "request_id": 5, "status": 0,
      "info_buffer_length": 6, "info_buffer_offset": 16},
     struct.pack("<6I", 0x80000004, 30, 5, 0, 6, 16)),
    ("rndis set", wr.RndisSetRequest,
     {"type": 5, "length": 32, "request_id": 6, "oid": 0x0001010E, "info_buffer_length": 4,
      "info_buffer_offset": 20}, struct.pack("<7I", 5, 32, 6, 0x0001010E, 4, 20, 0)),
    ("rndis set complete", wr.RndisSetComplete,
     {"type": 0x80000005, "length": 16, "request_id": 6, "status": 0xC00000BB},
     struct.pack("<4I", 0x80000005, 16, 6, 0xC00000BB)),
    ("rndis halt", wr.RndisHaltRequest, {"type": 3, "length": 12, "request_id": 9},
     struct.pack("<3I", 3, 12, 9)),
    ("rndis indicate", wr.RndisIndicateStatus,
     {"type": 7, "length": 24, "status": 0x40010013, "status_buffer_length": 4,
      "status_buffer_offset": 12}, struct.pack("<5I", 7, 24, 0x40010013, 4, 12)),
    ("rndis keepalive", wr.RndisKeepaliveRequest, {"type": 8, "length": 12, "request_id": 3},
     struct.pack("<3I", 8, 12, 3)),
    ("rndis keepalive complete", wr.RndisKeepaliveComplete,
     {"type": 0x80000008, "length": 16, "request_id": 3, "status": 0},
     struct.pack("<4I", 0x80000008, 16, 3, 0)),
    ("ndis object header", wr.NdisObjectHeader, {"type": 0xA7, "revision": 3, "size": 156},
     struct.pack("<BBH", 0xA7, 3, 156)),
    ("rndis packet head", wr.RndisPacket,
     {"type": 1, "length": 108, "data_offset": 36, "data_length": 64, "ppi_offset": 36,
      "ppi_length": 16}, struct.pack("<11I", 1, 108, 36, 64, 0, 0, 0, 36, 16, 0, 0)),
]


@pytest.mark.parametrize("name,cls,values,raw", CASES, ids=[c[0] for c in CASES])
def test_build_and_parse(name: str, cls: type[ctypes.Structure], values: dict[str, Any],
                         raw: bytes) -> None:
    built = wn.to_bytes(cls(**values))
    assert built == raw
    parsed = cls.from_buffer_copy(raw)
    for field, value in values.items():
        assert getattr(parsed, field) == value, field


def test_recv_buf_section_parses_from_golden_offsets(golden: dict[str, Any]) -> None:
    resp = golden["structs"]["hn_nvs_rxbuf_connresp"]
    sect = {f["name"]: f["offset"] for f in golden["structs"]["hn_nvs_rxbuf_sect"]["fields"]}
    base = next(f["offset"] for f in resp["fields"] if f["name"] == "nvs_sect")
    raw = bytearray(resp["size"])
    struct.pack_into("<I", raw, base + sect["slotsz"], 1728)
    struct.pack_into("<I", raw, base + sect["slotcnt"], 18811)
    parsed = wn.NvspRecvBufComplete.from_buffer_copy(bytes(raw))
    assert parsed.sections[0].sub_alloc_size == 1728
    assert parsed.sections[0].num_sub_allocs == 18811


def test_ndis_offload_params_rev3_bytes() -> None:
    p = wr.NdisOffloadParams()
    p.header.type, p.header.revision, p.header.size = 0x80, 3, 28
    p.tcp4_checksum, p.rsc_ip6 = 4, 2
    assert wn.to_bytes(p) == (struct.pack("<BBH", 0x80, 3, 28) + bytes([0, 4]) + Z(16)
                              + bytes([0, 2]) + Z(4))


def test_from_prefix_pads_short_replies_with_zero() -> None:
    msg = wn.from_prefix(wn.NvspSubchannelComplete, struct.pack("<III", 133, 1, 4))
    assert (msg.type, msg.status, msg.count) == (133, 1, 4)
    assert bytes(msg.reserved) == Z(28)


def test_receive_ack_is_dpdk_rxbuf_ack(golden: dict[str, Any]) -> None:
    # DPDK acks a transfer-page packet with hn_nvs_rndis_ack {type 108, status 1}, 40 bytes.
    ack = golden["structs"]["hn_nvs_rndis_ack"]
    assert wn.receive_ack() == struct.pack(
        "<II", golden["constants"]["nvs_msg_type"]["NVS_TYPE_RNDIS_ACK"],
        golden["constants"]["nvs_status"]["NVS_STATUS_OK"]) + Z(ack["size"] - 8)
