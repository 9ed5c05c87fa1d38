"""host_wire's numbers and byte layouts against tests/golden/wire-layouts.json."""

from __future__ import annotations

import struct

import pytest

from hvuio.sim.host import wire as w
from support.golden import GOLDEN, off, size
from support.simhost import FRAME, NVSP_SIZE, c, nvs_init, r_init, r_packet

K = GOLDEN["constants"]

CONSTANT_PAIRS = [
    (w.PKT_INBAND, "vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_INBAND"),
    (w.PKT_XFER_PAGES, "vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_RXBUF"),
    (w.PKT_GPA_DIRECT, "vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_GPA"),
    (w.PKT_COMPLETION, "vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_COMP"),
    (w.FLAG_COMPLETION_REQUESTED, "vmbus_chanpkt_flag", "VMBUS_CHANPKT_FLAG_RC"),
    (w.NVSP_INIT, "nvs_msg_type", "NVS_TYPE_INIT"),
    (w.NVSP_INIT_COMPLETE, "nvs_msg_type", "NVS_TYPE_INIT_RESP"),
    (w.NVSP_SEND_NDIS_VERSION, "nvs_msg_type", "NVS_TYPE_NDIS_INIT"),
    (w.NVSP_SEND_RECV_BUF, "nvs_msg_type", "NVS_TYPE_RXBUF_CONN"),
    (w.NVSP_SEND_RECV_BUF_COMPLETE, "nvs_msg_type", "NVS_TYPE_RXBUF_CONNRESP"),
    (w.NVSP_REVOKE_RECV_BUF, "nvs_msg_type", "NVS_TYPE_RXBUF_DISCONN"),
    (w.NVSP_SEND_SEND_BUF, "nvs_msg_type", "NVS_TYPE_CHIM_CONN"),
    (w.NVSP_SEND_SEND_BUF_COMPLETE, "nvs_msg_type", "NVS_TYPE_CHIM_CONNRESP"),
    (w.NVSP_REVOKE_SEND_BUF, "nvs_msg_type", "NVS_TYPE_CHIM_DISCONN"),
    (w.NVSP_SEND_RNDIS_PKT, "nvs_msg_type", "NVS_TYPE_RNDIS"),
    (w.NVSP_SEND_RNDIS_PKT_COMPLETE, "nvs_msg_type", "NVS_TYPE_RNDIS_ACK"),
    (w.NVSP_SEND_NDIS_CONFIG, "nvs_msg_type", "NVS_TYPE_NDIS_CONF"),
    (w.NVSP_SEND_VF_ASSOCIATION, "nvs_msg_type", "NVS_TYPE_VFASSOC_NOTE"),
    (w.NVSP_SWITCH_DATA_PATH, "nvs_msg_type", "NVS_TYPE_SET_DATAPATH"),
    (w.NVSP_SUBCHANNEL, "nvs_msg_type", "NVS_TYPE_SUBCH_REQ"),
    (w.NVSP_SEND_INDIRECTION_TABLE, "nvs_msg_type", "NVS_TYPE_TXTBL_NOTE"),
    (w.NVSP_OID_QUERY_EX, "linux:nvsp_msg_type", "NVSP_MSG5_TYPE_OID_QUERY_EX"),
    (w.NVSP_OID_QUERY_EX_COMPLETE, "linux:nvsp_msg_type", "NVSP_MSG5_TYPE_OID_QUERY_EX_COMP"),
    (w.NVSP_STAT_NONE, "linux:nvsp_status", "NVSP_STAT_NONE"),
    (w.NVSP_STAT_SUCCESS, "nvs_status", "NVS_STATUS_OK"),
    (w.NVSP_STAT_FAIL, "nvs_status", "NVS_STATUS_FAILED"),
    (w.NVSP_INVALID_VERSION, "linux:nvsp_protocol_version", "NVSP_INVALID_PROTOCOL_VERSION"),
    (w.RECV_BUFFER_ID, "nvs_misc", "NVS_RXBUF_SIG"),
    (w.NO_SEND_SECTION, "nvs_misc", "NVS_CHIM_IDX_INVALID"),
    (w.CHANNEL_TYPE_DATA, "nvs_rndis_mtype", "NVS_RNDIS_MTYPE_DATA"),
    (w.CHANNEL_TYPE_CONTROL, "nvs_rndis_mtype", "NVS_RNDIS_MTYPE_CTRL"),
    (w.SUBCHANNEL_ALLOCATE, "nvs_subch_op", "NVS_SUBCH_OP_ALLOC"),
    (w.NDIS_CONF_SRIOV, "nvs_ndis_conf_caps", "NVS_NDIS_CONF_SRIOV"),
    (w.SEND_INDIRECTION_ENTRIES, "linux:netvsc_misc", "VRSS_SEND_TAB_SIZE"),
    (w.RNDIS_PACKET_MSG, "rndis_msg_type", "RNDIS_PACKET_MSG"),
    (w.RNDIS_INITIALIZE_MSG, "rndis_msg_type", "RNDIS_INITIALIZE_MSG"),
    (w.RNDIS_HALT_MSG, "rndis_msg_type", "RNDIS_HALT_MSG"),
    (w.RNDIS_QUERY_MSG, "rndis_msg_type", "RNDIS_QUERY_MSG"),
    (w.RNDIS_SET_MSG, "rndis_msg_type", "RNDIS_SET_MSG"),
    (w.RNDIS_RESET_MSG, "rndis_msg_type", "RNDIS_RESET_MSG"),
    (w.RNDIS_INDICATE_STATUS_MSG, "rndis_msg_type", "RNDIS_INDICATE_STATUS_MSG"),
    (w.RNDIS_KEEPALIVE_MSG, "rndis_msg_type", "RNDIS_KEEPALIVE_MSG"),
    (w.RNDIS_INITIALIZE_CMPLT, "rndis_msg_type", "RNDIS_INITIALIZE_CMPLT"),
    (w.RNDIS_QUERY_CMPLT, "rndis_msg_type", "RNDIS_QUERY_CMPLT"),
    (w.RNDIS_SET_CMPLT, "rndis_msg_type", "RNDIS_SET_CMPLT"),
    (w.RNDIS_RESET_CMPLT, "rndis_msg_type", "RNDIS_RESET_CMPLT"),
    (w.RNDIS_KEEPALIVE_CMPLT, "rndis_msg_type", "RNDIS_KEEPALIVE_CMPLT"),
    (w.RNDIS_COMPLETION, "linux:rndis_msg_type", "RNDIS_MSG_COMPLETION"),
    (w.RNDIS_STATUS_SUCCESS, "rndis_status", "RNDIS_STATUS_SUCCESS"),
    (w.RNDIS_STATUS_MEDIA_CONNECT, "rndis_status", "RNDIS_STATUS_MEDIA_CONNECT"),
    (w.RNDIS_STATUS_MEDIA_DISCONNECT, "rndis_status", "RNDIS_STATUS_MEDIA_DISCONNECT"),
    (w.RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG, "rndis_status", "RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG"),
    (w.RNDIS_STATUS_FAILURE, "rndis_status", "RNDIS_STATUS_FAILURE"),
    (w.RNDIS_STATUS_NOT_SUPPORTED, "rndis_status", "RNDIS_STATUS_NOT_SUPPORTED"),
    (w.RNDIS_STATUS_BAD_VERSION, "rndis_status", "RNDIS_STATUS_BAD_VERSION"),
    (w.RNDIS_STATUS_ADAPTER_NOT_READY, "rndis_status", "RNDIS_STATUS_ADAPTER_NOT_READY"),
    (w.RNDIS_STATUS_INVALID_LENGTH, "rndis_status", "RNDIS_STATUS_INVALID_LENGTH"),
    (w.RNDIS_STATUS_INVALID_DATA, "rndis_status", "RNDIS_STATUS_INVALID_DATA"),
    (w.RNDIS_MAJOR_VERSION, "rndis_version", "RNDIS_VERSION_MAJOR"),
    (w.RNDIS_MINOR_VERSION, "rndis_version", "RNDIS_VERSION_MINOR"),
    (w.RNDIS_DF_CONNECTIONLESS, "rndis_device_flags", "RNDIS_DF_CONNECTIONLESS"),
    (w.RNDIS_MEDIUM_802_3, "rndis_medium", "RNDIS_MEDIUM_802_3"),
    (w.NDIS_MEDIA_STATE_CONNECTED, "ndis_media_state", "NDIS_MEDIA_STATE_CONNECTED"),
    (w.NDIS_MEDIA_STATE_DISCONNECTED, "ndis_media_state", "NDIS_MEDIA_STATE_DISCONNECTED"),
    (w.RNDIS_PACKET_OFFSET_MIN, "rndis_misc", "RNDIS_PACKET_MSG_OFFSET_MIN"),
    (w.NDIS_OBJTYPE_DEFAULT, "ndis_objtype", "NDIS_OBJTYPE_DEFAULT"),
    (w.NDIS_OBJTYPE_RSS_CAPS, "ndis_objtype", "NDIS_OBJTYPE_RSS_CAPS"),
    (w.NDIS_OBJTYPE_RSS_PARAMS, "ndis_objtype", "NDIS_OBJTYPE_RSS_PARAMS"),
    (w.NDIS_OBJTYPE_OFFLOAD, "ndis_objtype", "NDIS_OBJTYPE_OFFLOAD"),
    (w.NDIS_OFFLOAD_SIZE, "ndis_offload", "NDIS_OFFLOAD_SIZE"),
    (w.NDIS_OFFLOAD_REV_3, "ndis_offload", "NDIS_OFFLOAD_REV_3"),
    (w.NDIS_OFFLOAD_PARAM_OFF, "ndis_offload", "NDIS_OFFLOAD_PARAM_OFF"),
    (w.NDIS_OFFLOAD_PARAM_TX, "ndis_offload", "NDIS_OFFLOAD_PARAM_TX"),
    (w.NDIS_OFFLOAD_PARAM_RX, "ndis_offload", "NDIS_OFFLOAD_PARAM_RX"),
    (w.NDIS_OFFLOAD_PARAM_TXRX, "ndis_offload", "NDIS_OFFLOAD_PARAM_TXRX"),
    (w.NDIS_OFFLOAD_LSOV1_ON, "ndis_offload", "NDIS_OFFLOAD_LSOV1_ON"),
    (w.NDIS_OFFLOAD_LSOV2_OFF, "ndis_offload", "NDIS_OFFLOAD_LSOV2_OFF"),
    (w.NDIS_OFFLOAD_LSOV2_ON, "ndis_offload", "NDIS_OFFLOAD_LSOV2_ON"),
    (w.NDIS_OFFLOAD_ENCAP_8023, "ndis_offload_caps", "NDIS_OFFLOAD_ENCAP_8023"),
    (w.NDIS_RSS_CAPS_SIZE, "ndis_rss", "NDIS_RSS_CAPS_SIZE"),
    (w.NDIS_RSS_CAPS_REV_2, "ndis_rss", "NDIS_RSS_CAPS_REV_2"),
    (w.NDIS_RSS_CAP_IPV4, "ndis_rss", "NDIS_RSS_CAP_IPV4"),
    (w.NDIS_RSS_CAP_IPV6, "ndis_rss", "NDIS_RSS_CAP_IPV6"),
    (w.NDIS_RSS_CAP_HASH_TOEPLITZ, "ndis_rss", "NDIS_RSS_CAP_HASH_TOEPLITZ"),
    (w.NDIS_RSS_PARAMS_SIZE, "ndis_rss", "NDIS_RSS_PARAMS_SIZE"),
    (w.NDIS_RSS_FLAG_DISABLE, "ndis_rss", "NDIS_RSS_FLAG_DISABLE"),
    (w.NDIS_HASH_FUNCTION_MASK, "ndis_hash", "NDIS_HASH_FUNCTION_MASK"),
    (w.NDIS_HASH_KEYSIZE_TOEPLITZ, "ndis_hash", "NDIS_HASH_KEYSIZE_TOEPLITZ"),
    (w.NDIS_HASH_INDCNT, "ndis_hash", "NDIS_HASH_INDCNT"),
    (w.CSUM_IP4OPT, "ndis_offload_caps", "NDIS_TXCSUM_CAP_IP4OPT"),
    (w.CSUM_TCP4OPT, "ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4OPT"),
    (w.CSUM_TCP4, "ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4"),
    (w.CSUM_UDP4, "ndis_offload_caps", "NDIS_TXCSUM_CAP_UDP4"),
    (w.CSUM_IP4, "ndis_offload_caps", "NDIS_TXCSUM_CAP_IP4"),
    (w.CSUM_IP6EXT, "ndis_offload_caps", "NDIS_TXCSUM_CAP_IP6EXT"),
    (w.CSUM_TCP6OPT, "ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP6OPT"),
    (w.CSUM_TCP6, "ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP6"),
    (w.CSUM_UDP6, "ndis_offload_caps", "NDIS_TXCSUM_CAP_UDP6"),
    (w.LSOV2_IP6_OPTS, "linux:ndis_offload_caps", "NDIS_LSOV2_CAP_IP6"),
]


@pytest.mark.parametrize("value, group, name", CONSTANT_PAIRS, ids=[p[2] for p in CONSTANT_PAIRS])
def test_constant_matches_golden(value: int, group: str, name: str) -> None:
    assert value == c(group, name)


def test_versions_match_golden() -> None:
    assert w.NVSP_VERSIONS == tuple(sorted(K["nvs_version"].values()))


def test_every_host_oid_matches_golden() -> None:
    names = {n: v for n, v in vars(w).items() if n.startswith("OID_")}
    for n, v in names.items():
        golden = K["ndis_oid"].get(n, K["linux:ndis_oid"].get(n))
        assert golden == v, n


@pytest.mark.parametrize(
    "value, struct_name",
    [
        (w.DESCRIPTOR_SIZE, "vmbus_chanpkt_hdr"),
        (w.XFER_HEADER_SIZE, "vmbus_chanpkt_rxbuf"),
        (w.GPA_HEADER_SIZE, "vmbus_chanpkt_sglist"),
        (w.XFER_RANGE_SIZE, "vmbus_rxbuf_desc"),
        (w.NVSP_MSG_SIZE, "linux:nvsp_message"),
        (w.RNDIS_INIT_REQ_SIZE, "rndis_init_req"),
        (w.RNDIS_INIT_COMP_SIZE, "rndis_init_comp"),
        (w.RNDIS_HALT_REQ_SIZE, "rndis_halt_req"),
        (w.RNDIS_QUERY_REQ_SIZE, "rndis_query_req"),
        (w.RNDIS_QUERY_COMP_SIZE, "rndis_query_comp"),
        (w.RNDIS_SET_REQ_SIZE, "rndis_set_req"),
        (w.RNDIS_SET_COMP_SIZE, "rndis_set_comp"),
        (w.RNDIS_STATUS_MSG_SIZE, "rndis_status_msg"),
        (w.RNDIS_KEEPALIVE_REQ_SIZE, "rndis_keepalive_req"),
        (w.RNDIS_KEEPALIVE_COMP_SIZE, "rndis_keepalive_comp"),
        (w.RNDIS_PACKET_MSG_SIZE, "rndis_packet_msg"),
        (w.RNDIS_PKTINFO_SIZE, "rndis_pktinfo"),
        (w.RNDIS_HEADER_SIZE, "rndis_msghdr"),
        (w.NDIS_OFFLOAD_SIZE, "ndis_offload"),
    ],
)
def test_size_matches_golden(value: int, struct_name: str) -> None:
    assert value == size(struct_name)


def test_nvsp_min_sizes_cover_the_fields_read() -> None:
    # Each minimum reaches at least the end of the last field the host reads (golden offsets).
    assert w.NVSP_MIN_SIZE[w.NVSP_INIT] >= off("hn_nvs_init", "ver_max") + 4
    assert w.NVSP_MIN_SIZE[w.NVSP_SEND_NDIS_CONFIG] >= off("hn_nvs_ndis_conf", "caps") + 8
    assert w.NVSP_MIN_SIZE[w.NVSP_SEND_RECV_BUF] >= off("hn_nvs_rxbuf_conn", "sig") + 2
    assert w.NVSP_MIN_SIZE[w.NVSP_SEND_SEND_BUF] >= off("hn_nvs_chim_conn", "sig") + 2
    assert w.NVSP_MIN_SIZE[w.NVSP_SEND_RNDIS_PKT] >= off("hn_nvs_rndis", "chim_sz") + 4
    assert w.NVSP_MIN_SIZE[w.NVSP_SUBCHANNEL] >= off("hn_nvs_subch_req", "nsubch") + 4
    assert w.NVSP_MIN_SIZE[w.NVSP_SEND_RNDIS_PKT_COMPLETE] >= off("hn_nvs_rndis_ack", "status") + 4
    assert all(n <= size("linux:nvsp_message") for n in w.NVSP_MIN_SIZE.values())


def test_builders_place_fields_at_golden_offsets() -> None:
    init_c = w.rndis_init_complete(7, 0, 8, 0x1000, 3)
    assert len(init_c) == size("rndis_init_comp")
    assert struct.unpack_from("<I", init_c, off("rndis_init_comp", "rid"))[0] == 7
    assert struct.unpack_from("<I", init_c, off("rndis_init_comp", "pktmaxsz"))[0] == 0x1000
    q = w.rndis_query_complete(9, 0, b"abcd")
    ioff = struct.unpack_from("<I", q, off("rndis_query_comp", "infobufoffset"))[0]
    assert q[c("rndis_offset_bases", "RNDIS_QUERY_COMP_INFOBUFOFFSET_ABS(0)") + ioff:] == b"abcd"
    st = w.rndis_status(0x4001000B, b"xy")
    boff = struct.unpack_from("<I", st, off("rndis_status_msg", "stbufoffset"))[0]
    assert st[c("rndis_offset_bases", "RNDIS_STBUFOFFSET_ABS(0)") + boff:] == b"xy"
    pkt = w.rndis_packet(b"\x01" * 20)
    d = struct.unpack_from("<I", pkt, off("rndis_packet_msg", "dataoffset"))[0]
    assert pkt[c("rndis_offset_bases", "RNDIS_PACKET_MSG_OFFSET_ABS(0)") + d:] == b"\x01" * 20
    rx = w.recv_buf_complete(1, ((0, 1728, 10, 17280),), 40)
    assert struct.unpack_from("<I", rx, off("hn_nvs_rxbuf_connresp", "nsect"))[0] == 1
    sect = off("hn_nvs_rxbuf_connresp", "nvs_sect")
    assert struct.unpack_from("<4I", rx, sect) == (0, 1728, 10, 17280)
    caps = w.ndis_rss_caps(4, 128)
    assert len(caps) == c("ndis_rss", "NDIS_RSS_CAPS_SIZE")
    assert struct.unpack_from("<I", caps, off("ndis_rss_caps", "ndis_nrxr"))[0] == 4
    table = w.indirection_table(tuple(range(16)))
    count, t_off = struct.unpack_from("<2I", table, 4)
    assert count == 16 and struct.unpack_from("<16I", table, t_off) == tuple(range(16))


def test_transfer_page_packet_layout() -> None:
    raw = w.encode_packet(w.PKT_XFER_PAGES, 1, 5, b"P" * 20, xfer_pageset_id=0xCAFE, ranges=((100, 200),))
    s = "vmbus_chanpkt_rxbuf"
    hlen = struct.unpack_from("<H", raw, off("vmbus_chanpkt_hdr", "hlen"))[0] * 8
    assert hlen == size(s) + 8 and len(raw) % 8 == 0
    assert struct.unpack_from("<H", raw, off(s, "rxbuf_id"))[0] == 0xCAFE
    assert struct.unpack_from("<I", raw, off(s, "rxbuf_cnt"))[0] == 1
    assert struct.unpack_from("<2I", raw, size(s)) == (100, 200)  # {byte_count, byte_offset}
    assert raw[hlen:hlen + 20] == b"P" * 20


def test_parse_gpa_header() -> None:
    hdr = struct.pack("<II", 0, 2) + struct.pack("<IIQ", 96, 4000, 7) + struct.pack("<IIQQ", 5000, 0, 8, 9)
    r = w.parse_gpa_header(hdr)
    # 96 bytes at 4000 stay in one page; 5000 bytes need two
    assert [(x.byte_count, x.byte_offset, x.pfns) for x in r] == [(96, 4000, (7,)), (5000, 0, (8, 9))]
    with pytest.raises(w.HostWireError):
        w.parse_gpa_header(hdr[:-8])


def test_host_modules_are_independent_of_the_guest_protocol_code() -> None:
    # The host side is written from docs/VMBUS.md and golden numbers only: it may import the standard
    # library, hvuio.errors and its own hvuio.sim.host modules, never hvuio.wire or hvuio.proto.
    import ast
    import pathlib
    import sys

    host = pathlib.Path(w.__file__).parent
    for path in sorted(host.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == "hvuio":
                    assert name == "hvuio.errors" or name.startswith(("hvuio.errors.", "hvuio.sim.host.")) \
                        or name == "hvuio.sim.host", (path.name, name)
                else:
                    assert top in sys.stdlib_module_names or top == "__future__", (path.name, name)


def test_helpers_match_golden_layouts() -> None:
    # The offsets the builders rely on, read from the golden file rather than assumed.
    assert off("hn_nvs_init", "ver_min") == 4 and off("hn_nvs_init", "ver_max") == 8
    assert off("hn_nvs_ndis_conf", "caps") == 12
    assert off("hn_nvs_rxbuf_conn", "sig") == 8
    assert off("hn_nvs_rndis", "chim_sz") == 12
    assert off("rndis_query_req", "infobufoffset") == 20 and size("rndis_query_req") == 28
    assert off("rndis_packet_msg", "pktinfooffset") == 28 and size("rndis_packet_msg") == 44
    assert len(nvs_init(2)) == NVSP_SIZE and len(r_init(1)) == size("rndis_init_req")
    m = r_packet(FRAME)
    assert m[44:] == FRAME and struct.unpack_from("<I", m, 8)[0] == c("rndis_misc", "RNDIS_PACKET_MSG_OFFSET_MIN")
