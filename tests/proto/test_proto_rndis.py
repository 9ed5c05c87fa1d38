"""RndisGuest driven with hand-built host replies.

RNDIS replies are packed with struct from the golden numbers (message types, status codes, OIDs,
DPDK struct offsets; tests/support/rndis_host.py), never with hvuio.wire, so an encoder bug and a
decoder bug cannot cancel out. A small scripted "host" (`Host`) answers our requests by OID.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest

from hvuio.errors import HostProtocolError, HostRefusedError, HostTimeoutError, LocalProtocolError
from hvuio.proto import limits
from hvuio.proto.events import (
    ControlSendComplete, Halted, IndicationDropped, Inbound, InboundKind, KeepaliveDropped, LinkSpeed,
    LinkStatus, MacAddress, Mtu, NetworkChange, OffloadCaps, Outbound, QueryResult,
    RequestFailed, RndisConfigured, RndisReady, RssCaps, SetComplete, StatusIndication,
)
from hvuio.proto.rndis import OffloadRequest, RndisGuest
from hvuio.proto.states import RndisState

from support.golden import off, pack, size
from support.rndis_host import (
    C, CUR_MAC, FAILURE, MT, NDIS, NOFF, NOT_SUPPORTED, NVT, OID, PERM_MAC, RS, SUCCESS, Host, drain, indicate,
    init_cmplt, nvs_ack, offload_caps, query_cmplt, rndis_of, rx, set_cmplt,
)


def field(out: Outbound, struct_name: str, name: str) -> int:
    return int(struct.unpack_from("<I", rndis_of(out), off(struct_name, name))[0])


def up(ndis: int = NDIS["NDIS_VERSION_6_30"], **kw: Any) -> tuple[RndisGuest, Host, list[Any]]:
    m = RndisGuest(ndis_version=ndis, **kw)
    host = Host(m)
    host.run(m.start())
    return m, host, [e for e in drain(m) if not isinstance(e, ControlSendComplete)]


# ---- bring-up -------------------------------------------------------------------------------------


def test_bring_up_sequence_ndis_630() -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    [init] = m.start()
    nvs = init.payload
    assert struct.unpack_from("<I", nvs)[0] == NVT["NVS_TYPE_RNDIS"]
    assert struct.unpack_from("<I", nvs, off("hn_nvs_rndis", "rndis_mtype"))[0] == \
        C["nvs_rndis_mtype"]["NVS_RNDIS_MTYPE_CTRL"]
    assert struct.unpack_from("<I", nvs, off("hn_nvs_rndis", "chim_idx"))[0] == \
        C["nvs_misc"]["NVS_CHIM_IDX_INVALID"]
    assert init.want_completion and m.expects(init.trans_id)
    assert field(init, "rndis_init_req", "type") == MT["RNDIS_INITIALIZE_MSG"]
    assert field(init, "rndis_init_req", "len") == size("rndis_init_req") == len(rndis_of(init))
    assert field(init, "rndis_init_req", "rid") != 0
    assert field(init, "rndis_init_req", "ver_major") == C["rndis_version"]["RNDIS_VERSION_MAJOR"]
    assert field(init, "rndis_init_req", "max_xfersz") == C["hn_derived"]["HN_RNDIS_XFER_SIZE"]
    placed = init.placed(5)
    assert struct.unpack_from("<II", placed, off("hn_nvs_rndis", "chim_idx")) == \
        (5, len(rndis_of(init)))
    assert placed[:8] == nvs[:8]

    host = Host(m)
    host.run([init])
    events = drain(m)
    sends = [e for e in events if isinstance(e, ControlSendComplete)]
    events = [e for e in events if not isinstance(e, ControlSendComplete)]
    assert len(sends) == len(host.seen)
    caps = next(e for e in events if isinstance(e, OffloadCaps))
    assert events == [
        RndisReady(1, 0, 8, 0x4000, 8),
        MacAddress(PERM_MAC, True), MacAddress(CUR_MAC, False), Mtu(1500), LinkStatus(True),
        LinkSpeed(10_000_000_000), caps,
        SetComplete(OID["OID_TCP_OFFLOAD_PARAMETERS"]),
        SetComplete(OID["OID_GEN_CURRENT_PACKET_FILTER"]),
        RndisConfigured(),
    ]
    assert next(e for e in events if isinstance(e, LinkStatus)).indicated is False  # the query's answer
    assert (caps.revision, caps.size, caps.ip4_tx_csum, caps.ip6_rx_csum) == (3, 156, 0x115, 0x55)
    assert (caps.lsov2_ip4_max_size, caps.lsov2_ip4_encap, caps.rsc_ip4, caps.rsc_ip6) == \
        (62780, 2, True, False)
    assert m.state is RndisState.READY
    assert str(MacAddress(PERM_MAC, True)) == "00:15:5d:01:02:03"

    by_oid = {oid: info for _, oid, info in host.seen}
    hw = by_oid[OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"]]
    assert struct.unpack_from("<BBH", hw) == (C["ndis_objtype"]["NDIS_OBJTYPE_OFFLOAD"],
                                              NOFF["NDIS_OFFLOAD_REV_3"], NOFF["NDIS_OFFLOAD_SIZE"])
    assert len(hw) == NOFF["NDIS_OFFLOAD_SIZE"]
    params = by_oid[OID["OID_TCP_OFFLOAD_PARAMETERS"]]
    assert len(params) == NOFF["NDIS_OFFLOAD_PARAMS_SIZE"]
    assert struct.unpack_from("<BBH", params) == (C["ndis_objtype"]["NDIS_OBJTYPE_DEFAULT"],
                                                  NOFF["NDIS_OFFLOAD_PARAMS_REV_3"],
                                                  NOFF["NDIS_OFFLOAD_PARAMS_SIZE"])
    for name in ("ndis_ip4csum", "ndis_tcp4csum", "ndis_udp4csum", "ndis_tcp6csum",
                 "ndis_udp6csum"):
        assert params[off("ndis_offload_params", name)] == NOFF["NDIS_OFFLOAD_PARAM_OFF"]
    for name in ("ndis_lsov2_ip4", "ndis_lsov2_ip6"):
        assert params[off("ndis_offload_params", name)] == NOFF["NDIS_OFFLOAD_LSOV2_OFF"]
    for name in ("ndis_rsc_ip4", "ndis_rsc_ip6"):
        assert params[off("ndis_offload_params", name)] == NOFF["NDIS_OFFLOAD_RSC_OFF"]
    pf = C["ndis_packet_filter"]
    assert struct.unpack("<I", by_oid[OID["OID_GEN_CURRENT_PACKET_FILTER"]])[0] == (
        pf["NDIS_PACKET_TYPE_DIRECTED"] | pf["NDIS_PACKET_TYPE_ALL_MULTICAST"]
        | pf["NDIS_PACKET_TYPE_BROADCAST"])


NVS = C["linux:nvsp_protocol_version"]


@pytest.mark.parametrize("nvsp, ndis, rev, objsize", [
    (NVS["NVSP_PROTOCOL_VERSION_2"], NDIS["NDIS_VERSION_6_1"], NOFF["NDIS_OFFLOAD_REV_1"], NOFF["NDIS_OFFLOAD_SIZE_6_0"]),
    (NVS["NVSP_PROTOCOL_VERSION_4"], NDIS["NDIS_VERSION_6_1"], NOFF["NDIS_OFFLOAD_REV_2"], NOFF["NDIS_OFFLOAD_SIZE_6_1"]),
    (NVS["NVSP_PROTOCOL_VERSION_5"], NDIS["NDIS_VERSION_6_30"], NOFF["NDIS_OFFLOAD_REV_3"], NOFF["NDIS_OFFLOAD_SIZE"]),
    (NVS["NVSP_PROTOCOL_VERSION_61"], NDIS["NDIS_VERSION_6_30"], NOFF["NDIS_OFFLOAD_REV_3"], NOFF["NDIS_OFFLOAD_SIZE"]),
])
def test_caps_query_header_follows_the_nvsp_version(nvsp: int, ndis: int, rev: int, objsize: int) -> None:
    # Linux rndis_filter_query_device: revision 1 / NDIS 6.0 size below NVSP 4, 2 / 6.1 on 4, 3 / full from 5
    m, host, events = up(ndis, nvsp_version=nvsp)
    hw = next(info for _, oid, info in host.seen if oid == OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"])
    assert struct.unpack_from("<BBH", hw) == (C["ndis_objtype"]["NDIS_OBJTYPE_OFFLOAD"], rev, objsize)
    assert len(hw) == objsize
    assert events[-1] == RndisConfigured()


def test_unknown_nvsp_version_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="NVSP version 0x50001"):
        RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"], nvsp_version=0x50001)


def test_request_layout_info_offset() -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    [init] = m.start()
    rid = field(init, "rndis_init_req", "rid")
    [q] = m.receive(rx(init_cmplt(rid)))
    assert field(q, "rndis_query_req", "type") == MT["RNDIS_QUERY_MSG"]
    assert field(q, "rndis_query_req", "oid") == OID["OID_802_3_PERMANENT_ADDRESS"]
    assert field(q, "rndis_query_req", "infobufoffset") == \
        C["rndis_misc"]["RNDIS_QUERY_REQ_INFOBUFOFFSET"]
    assert field(q, "rndis_query_req", "infobuflen") == 0
    assert field(q, "rndis_query_req", "len") == size("rndis_query_req")
    assert field(q, "rndis_query_req", "rid") != rid


def test_bring_up_ndis_61_uses_older_object_sizes() -> None:
    m, host, events = up(NDIS["NDIS_VERSION_6_1"])
    by_oid = {oid: info for _, oid, info in host.seen}
    hw = by_oid[OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"]]
    assert struct.unpack_from("<BBH", hw)[1:] == (NOFF["NDIS_OFFLOAD_REV_2"],
                                                  NOFF["NDIS_OFFLOAD_SIZE_6_1"])
    params = by_oid[OID["OID_TCP_OFFLOAD_PARAMETERS"]]
    assert len(params) == NOFF["NDIS_OFFLOAD_PARAMS_SIZE_6_1"]
    assert struct.unpack_from("<BBH", params)[1:] == (NOFF["NDIS_OFFLOAD_PARAMS_REV_2"],
                                                      NOFF["NDIS_OFFLOAD_PARAMS_SIZE_6_1"])
    assert events[-1] == RndisConfigured()


def test_bring_up_without_offload_and_filter_steps() -> None:
    m, host, events = up(offload=None, packet_filter=None)
    assert [t for t, _, _ in host.seen].count(MT["RNDIS_SET_MSG"]) == 0
    assert not any(isinstance(e, OffloadCaps) for e in events)
    assert events[-1] == RndisConfigured()


def test_offload_request_values_are_sent() -> None:
    req = OffloadRequest(tcp4_checksum=NOFF["NDIS_OFFLOAD_PARAM_TXRX"],
                         lsov2_ip4=NOFF["NDIS_OFFLOAD_LSOV2_ON"])
    m, host, _ = up(offload=req)
    params = {oid: info for _, oid, info in host.seen}[OID["OID_TCP_OFFLOAD_PARAMETERS"]]
    assert params[off("ndis_offload_params", "ndis_tcp4csum")] == NOFF["NDIS_OFFLOAD_PARAM_TXRX"]
    assert params[off("ndis_offload_params", "ndis_lsov2_ip4")] == NOFF["NDIS_OFFLOAD_LSOV2_ON"]


# ---- refusals and host errors ----------------------------------------------------------------------


def _init_sent() -> tuple[RndisGuest, int]:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    [init] = m.start()
    return m, field(init, "rndis_init_req", "rid")


@pytest.mark.parametrize("reply,error,text", [
    (lambda rid: init_cmplt(rid, status=FAILURE), HostRefusedError, "FAILURE"),
    (lambda rid: init_cmplt(rid, medium=2), HostProtocolError, "medium 0x2"),
    (lambda rid: init_cmplt(rid, align=13), HostProtocolError, "alignment_shift 13"),
    (lambda rid: init_cmplt(rid)[:40], HostProtocolError, "length 40"),
    (lambda rid: init_cmplt(rid + 1), HostProtocolError, "request_id 0x2 matches no outstanding"),
    (lambda rid: set_cmplt(rid), HostProtocolError, "names a initialize request"),
])
def test_initialize_completion_validation(reply: Any, error: type[Exception], text: str) -> None:
    m, rid = _init_sent()
    raw = reply(rid)
    if len(raw) < size("rndis_init_comp"):
        raw = raw[:4] + struct.pack("<I", len(raw)) + raw[8:]
    with pytest.raises(error, match=re.escape(text)):
        m.receive(rx(raw))
    assert m.state is RndisState.ERROR
    with pytest.raises(LocalProtocolError):
        m.receive(rx(init_cmplt(rid)))


def _first_query() -> tuple[RndisGuest, int]:
    m, rid = _init_sent()
    [q] = m.receive(rx(init_cmplt(rid)))
    drain(m)
    return m, field(q, "rndis_query_req", "rid")


def test_query_info_buffer_out_of_range_names_offset_length_and_message_length() -> None:
    m, rid = _first_query()
    raw = query_cmplt(rid, PERM_MAC, offset=0x40, length=0x200)
    with pytest.raises(HostProtocolError) as info:
        m.receive(rx(raw))
    assert str(info.value) == (
        "RNDIS query completion for OID_802_3_PERMANENT_ADDRESS: info_buffer_offset 0x40 + "
        f"length 0x200 exceeds message length {len(raw):#x}")


@pytest.mark.parametrize("make,error,text", [
    (lambda rid: query_cmplt(rid, PERM_MAC, offset=4), HostProtocolError, "points into"),
    (lambda rid: query_cmplt(rid, PERM_MAC + b"\0"), HostProtocolError,
     "info_buffer_length 7, expected 6"),
    (lambda rid: query_cmplt(rid, b"", status=FAILURE), HostRefusedError,
     "OID_802_3_PERMANENT_ADDRESS: status 0xc0000001 (FAILURE)"),
    (lambda rid: query_cmplt(rid + 5, PERM_MAC), HostProtocolError, "matches no outstanding"),
    (lambda rid: set_cmplt(rid), HostProtocolError, "names a query request"),
    (lambda rid: query_cmplt(rid, PERM_MAC)[:20], HostProtocolError, "length field 30"),
    (lambda rid: b"\x04\x00\x00\x80", HostProtocolError, "shorter than the 8-byte header"),
    (lambda rid: struct.pack("<II", MT["RNDIS_QUERY_CMPLT"], 4) + bytes(20), HostProtocolError,
     "length field 4"),
    (lambda rid: struct.pack("<III", MT["RNDIS_QUERY_CMPLT"], 20, rid) + bytes(8),
     HostProtocolError, "shorter than 24"),
    (lambda rid: bytes(limits.MAX_RNDIS_CONTROL_MESSAGE + 1), HostProtocolError,
     "exceeds the limit"),
])
def test_query_completion_validation(make: Any, error: type[Exception], text: str) -> None:
    m, rid = _first_query()
    with pytest.raises(error, match=re.escape(text)):
        m.receive(rx(make(rid)))
    assert m.state is RndisState.ERROR


@pytest.mark.parametrize("oid,value,text", [
    (OID["OID_GEN_MEDIA_CONNECT_STATUS"], struct.pack("<I", 5), "value 0x5 is neither"),
    (OID["OID_GEN_MAXIMUM_FRAME_SIZE"], struct.pack("<I", 10), "value 10 outside"),
    (OID["OID_GEN_LINK_SPEED"], b"\x01\x00", "info_buffer_length 2, expected 4"),
    (OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"], offload_caps(objtype=0x80),
     "object type 0x80"),
    (OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"], offload_caps(rev=0), "object revision 0"),
    (OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"], offload_caps(objsize=100), "object size 100"),
    (OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"], offload_caps()[:150], "object size 156"),
    (OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"], b"\xa7", "no NDIS object header"),
])
def test_bad_query_values(oid: int, value: bytes, text: str) -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    host = Host(m, {oid: value})
    with pytest.raises(HostProtocolError, match=re.escape(text)):
        host.run(m.start())


def test_optional_query_failure_is_an_event_and_bring_up_continues() -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    host = Host(m, {OID["OID_GEN_LINK_SPEED"]: NOT_SUPPORTED,
                    OID["OID_802_3_CURRENT_ADDRESS"]: FAILURE})
    host.run(m.start())
    events = drain(m)
    assert RequestFailed(OID["OID_GEN_LINK_SPEED"], NOT_SUPPORTED) in events
    assert RequestFailed(OID["OID_802_3_CURRENT_ADDRESS"], FAILURE) in events
    assert not any(isinstance(e, LinkSpeed) for e in events)
    assert events[-1] == RndisConfigured()


@pytest.mark.parametrize("oid", [OID["OID_GEN_MEDIA_CONNECT_STATUS"],
                                 OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"],
                                 OID["OID_TCP_OFFLOAD_PARAMETERS"],
                                 OID["OID_GEN_CURRENT_PACKET_FILTER"]])
def test_required_step_failure_is_a_refusal(oid: int) -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    host = Host(m, {oid: NOT_SUPPORTED})
    with pytest.raises(HostRefusedError, match="NOT_SUPPORTED"):
        host.run(m.start())
    assert m.state is RndisState.ERROR


@pytest.mark.parametrize("raw,text", [
    (pack("rndis_reset_comp", type=MT["RNDIS_RESET_CMPLT"], len=16), "RESET_COMPLETE"),
    (pack("rndis_keepalive_comp", type=MT["RNDIS_KEEPALIVE_CMPLT"], len=16, rid=1),
     "KEEPALIVE_COMPLETE"),
    (struct.pack("<II", MT["RNDIS_PACKET_MSG"], 8), "(PACKET)"),
    (struct.pack("<II", MT["RNDIS_QUERY_MSG"], 8), "(QUERY)"),
    (struct.pack("<II", 0x1234, 8), "unknown type 0x1234"),
])
def test_messages_a_host_does_not_send(raw: bytes, text: str) -> None:
    m, _, _ = up()
    with pytest.raises(HostProtocolError, match=re.escape(text)):
        m.receive(rx(raw))


# ---- NVSP completions of our sends -------------------------------------------------------------------


def test_send_completion_validation() -> None:
    m, _ = _init_sent()
    with pytest.raises(HostProtocolError, match="matches no outstanding send"):
        m.receive(Inbound(InboundKind.COMPLETION, 12345, nvs_ack()))
    m2 = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_1"])
    [init] = m2.start()
    with pytest.raises(HostRefusedError, match="status 2"):
        m2.receive(Inbound(InboundKind.COMPLETION, init.trans_id, nvs_ack(status=2)))
    m3 = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_1"])
    [init] = m3.start()
    with pytest.raises(HostProtocolError, match="type 102"):
        m3.receive(Inbound(InboundKind.COMPLETION, init.trans_id, nvs_ack(mtype=102)))
    m4 = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_1"])
    [init] = m4.start()
    with pytest.raises(HostProtocolError, match="length 4"):
        m4.receive(Inbound(InboundKind.COMPLETION, init.trans_id, nvs_ack()[:4]))


def test_send_completion_frees_the_section() -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_1"])
    [init] = m.start()
    m.receive(Inbound(InboundKind.COMPLETION, init.trans_id, nvs_ack()[:8]))
    assert drain(m) == [ControlSendComplete(init.trans_id)]
    assert not m.expects(init.trans_id)


# ---- indications, keepalive, caller requests, halt ------------------------------------------------


@pytest.mark.parametrize("raw,event", [
    (indicate(RS["RNDIS_STATUS_MEDIA_CONNECT"]), LinkStatus(True)),
    (indicate(RS["RNDIS_STATUS_MEDIA_DISCONNECT"]), LinkStatus(False)),
    (indicate(RS["RNDIS_STATUS_NETWORK_CHANGE"], struct.pack("<I", 2)), NetworkChange()),
    (indicate(RS["RNDIS_STATUS_LINK_SPEED_CHANGE"], struct.pack("<I", 400_000_000)),
     LinkSpeed(40_000_000_000, indicated=True)),
    (indicate(RS["RNDIS_STATUS_LINK_SPEED_CHANGE"], struct.pack("<II", 1, 7)), LinkSpeed(100, indicated=True)),
    (indicate(RS["RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG"], b"abcd"),
     StatusIndication(RS["RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG"], b"abcd")),
])
def test_indications_become_events(raw: bytes, event: Any) -> None:
    m, _, _ = up()
    assert m.receive(rx(raw)) == []
    assert drain(m) == [event]
    if isinstance(event, LinkStatus):  # told apart from the bring-up's media query answer
        assert drain_link(raw).indicated is True


def drain_link(raw: bytes) -> LinkStatus:
    m, _, _ = up()
    m.receive(rx(raw))
    [event] = drain(m)
    assert isinstance(event, LinkStatus)
    return event


@pytest.mark.parametrize("raw,text", [
    (indicate(RS["RNDIS_STATUS_MEDIA_CONNECT"], b"abcd", offset=0x40),
     "status_buffer_offset 0x40 + length 0x4 exceeds message length 0x18"),
    (indicate(RS["RNDIS_STATUS_MEDIA_CONNECT"], b"abcd", offset=0), "points into the 20-byte"),
    (struct.pack("<II", MT["RNDIS_INDICATE_STATUS_MSG"], 16) + bytes(8), "shorter than 20"),
])
def test_indication_validation(raw: bytes, text: str) -> None:
    m, _, _ = up()
    with pytest.raises(HostProtocolError, match=re.escape(text)):
        m.receive(rx(raw))


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x02\x03"])
def test_short_link_speed_change_is_dropped_not_fatal(payload: bytes) -> None:
    m, _, _ = up()
    assert m.receive(rx(indicate(RS["RNDIS_STATUS_LINK_SPEED_CHANGE"], payload))) == []
    assert drain(m) == [IndicationDropped(RS["RNDIS_STATUS_LINK_SPEED_CHANGE"],
                                          f"link speed change with a {len(payload)}-byte status buffer (needs 4)")]
    assert m.state is RndisState.READY and m.error is None
    assert m.receive(rx(indicate(RS["RNDIS_STATUS_LINK_SPEED_CHANGE"], struct.pack("<I", 10_000)))) == []
    assert drain(m) == [LinkSpeed(1_000_000, indicated=True)]   # later indications still count


def test_host_keepalive_is_dropped_never_answered() -> None:
    # no real host sends one; OpenVMM ends the channel on a guest's KEEPALIVE_CMPLT (VMBUS.md §4 item 21)
    m, _, _ = up()
    raw = pack("rndis_keepalive_req", type=MT["RNDIS_KEEPALIVE_MSG"],
               len=size("rndis_keepalive_req"), rid=0x77)
    assert m.receive(rx(raw)) == []
    assert drain(m) == [KeepaliveDropped(0x77)]
    assert m.state is RndisState.READY and m.error is None
    with pytest.raises(HostProtocolError, match="keepalive: length 8"):
        m.receive(rx(struct.pack("<II", MT["RNDIS_KEEPALIVE_MSG"], 8)))


def test_caller_query_and_set_in_ready() -> None:
    m, _, _ = up()
    [q] = m.query(OID["OID_GEN_LINK_SPEED"])
    [s] = m.set_packet_filter(C["ndis_packet_filter"]["NDIS_PACKET_TYPE_PROMISCUOUS"])
    [s2] = m.set(OID["OID_802_3_MULTICAST_LIST"], bytes(6))
    qrid = field(q, "rndis_query_req", "rid")
    srid = field(s, "rndis_set_req", "rid")
    assert field(s, "rndis_set_req", "infobuflen") == 4
    assert rndis_of(s)[size("rndis_set_req"):] == struct.pack(
        "<I", C["ndis_packet_filter"]["NDIS_PACKET_TYPE_PROMISCUOUS"])
    m.receive(rx(set_cmplt(srid)))
    m.receive(rx(query_cmplt(qrid, struct.pack("<I", 12345))))
    m.receive(rx(set_cmplt(field(s2, "rndis_set_req", "rid"), NOT_SUPPORTED)))
    assert drain(m) == [SetComplete(OID["OID_GEN_CURRENT_PACKET_FILTER"]),
                        QueryResult(OID["OID_GEN_LINK_SPEED"], struct.pack("<I", 12345)),
                        RequestFailed(OID["OID_802_3_MULTICAST_LIST"], NOT_SUPPORTED)]
    assert m.state is RndisState.READY


def test_caller_requests_only_in_ready_and_bounded() -> None:
    m, _ = _first_query()
    with pytest.raises(LocalProtocolError, match="configuring"):
        m.query(OID["OID_GEN_LINK_SPEED"])
    m2, _, _ = up()
    for _ in range(limits.MAX_OUTSTANDING_RNDIS):
        m2.query(OID["OID_GEN_LINK_SPEED"])
    with pytest.raises(LocalProtocolError, match="already outstanding"):
        m2.query(OID["OID_GEN_LINK_SPEED"])


def test_halt() -> None:
    m, _, _ = up()
    [q] = m.query(OID["OID_GEN_LINK_SPEED"])
    [h] = m.halt()
    assert field(h, "rndis_halt_req", "type") == MT["RNDIS_HALT_MSG"]
    assert field(h, "rndis_halt_req", "len") == size("rndis_halt_req")
    assert drain(m) == [Halted()] and m.state is RndisState.HALTED
    # a reply racing the halt is dropped; send completions still free their sections
    assert m.receive(rx(query_cmplt(field(q, "rndis_query_req", "rid"), b"abcd"))) == []
    m.receive(Inbound(InboundKind.COMPLETION, h.trans_id, nvs_ack()))
    assert drain(m) == [ControlSendComplete(h.trans_id)]
    with pytest.raises(LocalProtocolError):
        m.halt()


def test_message_before_start_and_wrong_kind() -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    with pytest.raises(HostProtocolError, match="before INITIALIZE"):
        m.receive(rx(indicate(RS["RNDIS_STATUS_MEDIA_CONNECT"])))
    m2 = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"])
    with pytest.raises(LocalProtocolError, match="NvspGuest"):
        m2.receive(Inbound(InboundKind.INBAND, 0, b"\0" * 4))


def test_rndis_timeout() -> None:
    m, rid = _init_sent()
    m.tick(50.0)
    with pytest.raises(HostTimeoutError, match=r"RNDIS initialize \(request_id 0x1\)"):
        m.tick(50.0 + limits.RNDIS_REPLY_TIMEOUT_S)
    with pytest.raises(LocalProtocolError):
        m.next_event()


def test_outbound_placed_checks() -> None:
    m, _ = _init_sent()
    [q] = m.receive(rx(init_cmplt(1)))
    with pytest.raises(LocalProtocolError):
        q.placed(0xFFFFFFFF)
    with pytest.raises(LocalProtocolError):
        Outbound(b"\0" * 40, 1, False).placed(0)
    with pytest.raises(LocalProtocolError):
        Outbound(b"\0" * 40, 0, False)
    with pytest.raises(LocalProtocolError):
        RndisGuest(ndis_version=0x50000)


# ---- RSS capabilities (asked from NVSP 5 on, before subchannels) --------------------------------


def rss_caps(queues: int, objtype: int = C["ndis_objtype"]["NDIS_OBJTYPE_RSS_CAPS"], caps: int = 0,
             entries: int = 128) -> bytes:
    return struct.pack("<BBHIIIH", objtype, 2, 18, caps, 1, queues, entries)


def test_rss_capabilities_query_gives_the_host_queues() -> None:
    oid = OID["OID_GEN_RECEIVE_SCALE_CAPABILITIES"]
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"], rss=True)
    host = Host(m, {oid: rss_caps(8)})
    host.run(m.start())
    events = drain(m)
    assert RssCaps(receive_queues=8, table_entries=128) in events and events[-1] == RndisConfigured()
    [(_, _, info)] = [s for s in host.seen if s[1] == oid]
    # the input buffer is an RSS-capabilities object header (Linux, DPDK)
    assert struct.unpack("<BBH", info) == (C["ndis_objtype"]["NDIS_OBJTYPE_RSS_CAPS"], 2, 18)
    # after the link speed, before the offload queries
    oids = [s[1] for s in host.seen]
    assert oids.index(OID["OID_GEN_LINK_SPEED"]) < oids.index(oid) < \
        oids.index(OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"])


@pytest.mark.parametrize("value,want", [
    (rss_caps(4, caps=0x301, entries=64), RssCaps(receive_queues=4, capabilities=0x301, table_entries=64)),
    (rss_caps(4, caps=0x101)[:16], RssCaps(receive_queues=4, capabilities=0x101, table_entries=0)),  # NDIS 6.0 size
])
def test_rss_capabilities_bits_and_table_entries(value: bytes, want: RssCaps) -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"], rss=True)
    host = Host(m, {OID["OID_GEN_RECEIVE_SCALE_CAPABILITIES"]: value})
    host.run(m.start())
    assert want in drain(m)


def test_rss_capabilities_not_asked_without_rss_and_optional_with_it() -> None:
    oid = OID["OID_GEN_RECEIVE_SCALE_CAPABILITIES"]
    m, host, events = up()
    assert oid not in [s[1] for s in host.seen]
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"], rss=True)
    host = Host(m, {oid: NOT_SUPPORTED})
    host.run(m.start())
    events = drain(m)
    assert RequestFailed(oid, NOT_SUPPORTED) in events and events[-1] == RndisConfigured()
    assert not any(isinstance(e, RssCaps) for e in events)


@pytest.mark.parametrize("value,text", [
    (rss_caps(4)[:15], "shorter than 16"),
    (rss_caps(4, objtype=0x80), "object type 0x80"),
])
def test_bad_rss_capabilities(value: bytes, text: str) -> None:
    m = RndisGuest(ndis_version=NDIS["NDIS_VERSION_6_30"], rss=True)
    host = Host(m, {OID["OID_GEN_RECEIVE_SCALE_CAPABILITIES"]: value})
    with pytest.raises(HostProtocolError, match=re.escape(text)):
        host.run(m.start())
