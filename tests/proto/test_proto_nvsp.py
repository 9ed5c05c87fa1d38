"""NvspGuest driven with hand-built host replies.

Host replies are packed with struct from the golden numbers (message types, status codes, field
offsets of the DPDK structs; tests/support/nvsp_host.py), never with hvuio.wire, so an encoder bug
and a decoder bug cannot cancel out. Our outbound messages are read back the same way.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest

from hvuio.errors import HostProtocolError, HostRefusedError, HostTimeoutError, LocalProtocolError
from hvuio.proto import limits
from hvuio.proto.events import (
    NEED_DATA, BuffersRevoked, DatapathSwitched, Inbound, InboundKind, IndirectionTable,
    NdisConfigured, NvspReady, Outbound, RecvBufReady, RecvBufSection, SendBufReady,
    SubchannelsGranted, SubchannelsRefused, VfAssociation, HostDatapathSwitched, VfMessageDropped,
)
from hvuio.proto.nvsp import BufferGrant, NvspGuest, default_ndis_capabilities, with_sriov
from hvuio.proto.states import NvspState

from support.golden import GOLDEN, off, pack, size
from support.nvsp_host import FAIL, OK, ST, T, chim_resp, comp, init_resp, rxbuf_resp, subch_resp

V = GOLDEN["constants"]["nvs_version"]
RXBUF_SIG = GOLDEN["constants"]["nvs_misc"]["NVS_RXBUF_SIG"]
LINUX_SEND_ID = GOLDEN["constants"]["linux:netvsc_misc"]["NETVSC_SEND_BUFFER_ID"]
DPDK_SEND_ID = GOLDEN["constants"]["nvs_misc"]["NVS_CHIM_SIG"]
VERSIONS = [V[k] for k in ("NVS_VERSION_61", "NVS_VERSION_6", "NVS_VERSION_5", "NVS_VERSION_4",
                           "NVS_VERSION_2", "NVS_VERSION_1")]
NDIS = GOLDEN["constants"]["ndis_version"]
RECV_SIZE = 31 << 20  # map 3 (VMBUS.md §1.2)
SEND_SIZE = 16 << 20  # map 4
RECV_GPADL, SEND_GPADL = 0xE1E10, 0xE1E11


def u32(data: bytes, struct_name: str, field: str) -> int:
    return int(struct.unpack_from("<I", data, off(struct_name, field))[0])


def u16(data: bytes, struct_name: str, field: str) -> int:
    return int(struct.unpack_from("<H", data, off(struct_name, field))[0])


def inband(payload: bytes) -> Inbound:
    return Inbound(InboundKind.INBAND, 0, payload)


def mtype(out: Outbound) -> int:
    return int(struct.unpack_from("<I", out.payload)[0])


def drain(m: NvspGuest) -> list[Any]:
    events = []
    while (ev := m.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


def guest(**kw: Any) -> NvspGuest:
    return NvspGuest(recv_buf=BufferGrant(RECV_GPADL, RECV_SIZE),
                     send_buf=BufferGrant(SEND_GPADL, SEND_SIZE), **kw)


def to_ready(m: NvspGuest, version_index: int = 0) -> None:
    out = m.start()
    for _ in range(version_index):
        out = m.receive(comp(out[0], init_resp(FAIL)))
    out = m.receive(comp(out[0], init_resp(OK)))
    out = m.receive(comp(out[-1], rxbuf_resp()))
    m.receive(comp(out[0], chim_resp()))
    drain(m)
    assert m.state is NvspState.READY


# ---- the whole start-up ----------------------------------------------------------------------


def test_init_sequence_with_newest_version() -> None:
    m = guest()
    [init] = m.start()
    assert mtype(init) == T["NVS_TYPE_INIT"] and init.want_completion and init.trans_id >= 1
    assert u32(init.payload, "hn_nvs_init", "ver_min") == VERSIONS[0]
    assert u32(init.payload, "hn_nvs_init", "ver_max") == VERSIONS[0]
    assert len(init.payload) == size("linux:nvsp_message")
    assert m.expects(init.trans_id)

    conf, ndis, rxconn = m.receive(comp(init, init_resp(OK, VERSIONS[0])))
    assert mtype(conf) == T["NVS_TYPE_NDIS_CONF"] and not conf.want_completion
    assert u32(conf.payload, "hn_nvs_ndis_conf", "mtu") == 1500 + 14
    caps = struct.unpack_from("<Q", conf.payload, off("hn_nvs_ndis_conf", "caps"))[0]
    vlan = GOLDEN["constants"]["nvs_ndis_conf_caps"]["NVS_NDIS_CONF_VLAN"]
    sriov = GOLDEN["constants"]["nvs_ndis_conf_caps"]["NVS_NDIS_CONF_SRIOV"]
    assert caps & vlan and not caps & sriov and caps == vlan | (1 << 5)  # teaming bit 5
    assert mtype(ndis) == T["NVS_TYPE_NDIS_INIT"] and not ndis.want_completion
    assert u32(ndis.payload, "hn_nvs_ndis_init", "ndis_major") == 6
    assert u32(ndis.payload, "hn_nvs_ndis_init", "ndis_minor") == 30
    assert mtype(rxconn) == T["NVS_TYPE_RXBUF_CONN"] and rxconn.want_completion
    assert u32(rxconn.payload, "hn_nvs_rxbuf_conn", "gpadl") == RECV_GPADL
    assert u16(rxconn.payload, "hn_nvs_rxbuf_conn", "sig") == RXBUF_SIG
    assert drain(m) == [NvspReady(VERSIONS[0], NDIS["NDIS_VERSION_6_30"]),
                        NdisConfigured(1514, caps, NDIS["NDIS_VERSION_6_30"])]

    [chconn] = m.receive(comp(rxconn, rxbuf_resp()))
    assert drain(m) == [RecvBufReady((RecvBufSection(0, 1728, 18811, 1728 * 18811),))]
    assert mtype(chconn) == T["NVS_TYPE_CHIM_CONN"] and chconn.want_completion
    assert u32(chconn.payload, "hn_nvs_chim_conn", "gpadl") == SEND_GPADL
    assert u16(chconn.payload, "hn_nvs_chim_conn", "sig") == LINUX_SEND_ID

    assert m.receive(comp(chconn, chim_resp(OK, 6144))) == []
    assert drain(m) == [SendBufReady(6144, SEND_SIZE // 6144)]
    assert m.state is NvspState.READY and m.version == VERSIONS[0]
    assert len({init.trans_id, conf.trans_id, ndis.trans_id, rxconn.trans_id,
                chconn.trans_id}) == 5


@pytest.mark.parametrize("refusals", range(len(VERSIONS)))
def test_each_refused_version_steps_down_to_the_next(refusals: int) -> None:
    m = guest()
    [out] = m.start()
    for i in range(refusals):
        assert u32(out.payload, "hn_nvs_init", "ver_max") == VERSIONS[i]
        [out] = m.receive(comp(out, init_resp(FAIL)))
    agreed = VERSIONS[refusals]
    assert u32(out.payload, "hn_nvs_init", "ver_min") == agreed
    rest = m.receive(comp(out, init_resp(OK)))
    events = drain(m)
    legacy = agreed <= V["NVS_VERSION_4"]
    ndis = NDIS["NDIS_VERSION_6_1"] if legacy else NDIS["NDIS_VERSION_6_30"]
    assert events[0] == NvspReady(agreed, ndis)
    types = [mtype(o) for o in rest]
    if agreed == V["NVS_VERSION_1"]:  # no NDIS config before NVSP 2
        assert types == [T["NVS_TYPE_NDIS_INIT"], T["NVS_TYPE_RXBUF_CONN"]]
        assert events[1] == NdisConfigured(None, 0, ndis)
    else:
        assert types == [T["NVS_TYPE_NDIS_CONF"], T["NVS_TYPE_NDIS_INIT"], T["NVS_TYPE_RXBUF_CONN"]]
        teaming = 0 if agreed < V["NVS_VERSION_5"] else 1 << 5
        assert events[1] == NdisConfigured(1514, (1 << 3) | teaming, ndis)
    ndis_msg = rest[-2].payload
    assert u32(ndis_msg, "hn_nvs_ndis_init", "ndis_minor") == (1 if legacy else 30)


def test_every_version_refused_is_a_refusal_naming_them_all() -> None:
    m = guest()
    [out] = m.start()
    for _ in VERSIONS[:-1]:
        [out] = m.receive(comp(out, init_resp(FAIL)))
    with pytest.raises(HostRefusedError) as info:
        m.receive(comp(out, init_resp(ST["NVSP_STAT_PROTOCOL_TOO_OLD"])))
    text = str(info.value)
    assert "0x60001, 0x60000, 0x50000, 0x40000, 0x30002, 0x2" in text
    assert "PROTOCOL_TOO_OLD" in text
    assert m.state is NvspState.ERROR
    with pytest.raises(LocalProtocolError):
        m.next_event()
    with pytest.raises(LocalProtocolError):
        m.receive(comp(out, init_resp(OK)))
    with pytest.raises(LocalProtocolError):
        m.tick(0.0)


def test_status_none_is_a_refusal_too() -> None:
    # OpenVMM answers an unsupported version with NVSP_STAT_NONE and version 0xffffffff.
    m = guest()
    [out] = m.start()
    [out] = m.receive(comp(out, init_resp(ST["NVSP_STAT_NONE"], 0xFFFFFFFF)))
    assert u32(out.payload, "hn_nvs_init", "ver_min") == VERSIONS[1]
    assert m.state is NvspState.INIT_WAIT and drain(m) == []


def test_custom_version_list_is_walked() -> None:
    m = guest(versions=[V["NVS_VERSION_5"], V["NVS_VERSION_2"]])
    [out] = m.start()
    assert u32(out.payload, "hn_nvs_init", "ver_min") == V["NVS_VERSION_5"]
    [out] = m.receive(comp(out, init_resp(FAIL)))
    assert u32(out.payload, "hn_nvs_init", "ver_min") == V["NVS_VERSION_2"]
    with pytest.raises(HostRefusedError, match="0x50000, 0x30002"):
        m.receive(comp(out, init_resp(FAIL)))


# ---- receive and send buffer replies -----------------------------------------------------------


def _at_rxbuf(**kw: Any) -> tuple[NvspGuest, Outbound]:
    m = guest(**kw)
    [init] = m.start()
    out = m.receive(comp(init, init_resp(OK)))
    drain(m)
    return m, out[-1]


RXBUF_BAD = [
    ("status", rxbuf_resp(FAIL), HostRefusedError, "status 2"),
    ("zero sections", rxbuf_resp(nsect=0), HostProtocolError, "num_sections 0"),
    ("two sections", rxbuf_resp(sections=[(0, 1728, 10, 17280), (17280, 1728, 10, 34560)]),
     HostProtocolError, "num_sections 2"),
    ("section past buffer", rxbuf_resp(sections=[(0, 1728, RECV_SIZE // 1728 + 1, RECV_SIZE)]),
     HostProtocolError, "exceeds the buffer size"),
    ("end past buffer", rxbuf_resp(sections=[(0, 1728, 10, RECV_SIZE + 1)]),
     HostProtocolError, "end_offset"),
    ("first offset not 0", rxbuf_resp(sections=[(4096, 1728, 10, 4096 + 17280)]),
     HostProtocolError, "offset 0x1000 is not 0"),
    ("tiny sub-allocation", rxbuf_resp(sections=[(0, 32, 10, 320)]),
     HostProtocolError, "sub_alloc_size 32"),
    ("no sub-allocations", rxbuf_resp(sections=[(0, 1728, 0, 0)]),
     HostProtocolError, "num_sub_allocs is 0"),
    ("truncated", rxbuf_resp()[:20], HostProtocolError, "shorter than the 28 bytes"),
    ("sections cut short", rxbuf_resp(nsect=1)[:27], HostProtocolError, "shorter"),
    ("wrong type", pack("hn_nvs_chim_connresp", type=T["NVS_TYPE_CHIM_CONNRESP"], status=OK,
                        sectsz=6144) + bytes(16), HostProtocolError, "type 105 (expected 102)"),
]


@pytest.mark.parametrize("name,reply,error,text", RXBUF_BAD, ids=[r[0] for r in RXBUF_BAD])
def test_recv_buf_reply_validation(name: str, reply: bytes, error: type[Exception],
                                   text: str) -> None:
    m, rxconn = _at_rxbuf()
    with pytest.raises(error) as info:
        m.receive(comp(rxconn, reply))
    assert text in str(info.value)
    assert "receive buffer" in str(info.value) or "type 105" in str(info.value)
    assert m.state is NvspState.ERROR


def _at_chim(**kw: Any) -> tuple[NvspGuest, Outbound]:
    m, rxconn = _at_rxbuf(**kw)
    [chconn] = m.receive(comp(rxconn, rxbuf_resp()))
    drain(m)
    return m, chconn


CHIM_BAD = [
    ("status", chim_resp(FAIL), HostRefusedError, "status 2"),
    ("zero size", chim_resp(OK, 0), HostProtocolError, "section_size 0"),
    ("unaligned", chim_resp(OK, 6146), HostProtocolError, "not a multiple of 4"),
    ("bigger than buffer", chim_resp(OK, SEND_SIZE + 4), HostProtocolError,
     "exceeds the send buffer size"),
    ("truncated", chim_resp()[:8], HostProtocolError, "shorter than the 12 bytes"),
]


@pytest.mark.parametrize("name,reply,error,text", CHIM_BAD, ids=[r[0] for r in CHIM_BAD])
def test_send_buf_reply_validation(name: str, reply: bytes, error: type[Exception],
                                   text: str) -> None:
    m, chconn = _at_chim()
    with pytest.raises(error, match=text):
        m.receive(comp(chconn, reply))
    assert m.state is NvspState.ERROR


def test_send_buffer_section_count_fits_the_buffer() -> None:
    m, chconn = _at_chim()
    m.receive(comp(chconn, chim_resp(OK, SEND_SIZE)))  # one section of the whole buffer
    [ev] = drain(m)
    assert ev == SendBufReady(SEND_SIZE, 1)
    assert ev.section_size * ev.count <= SEND_SIZE


def test_dpdk_send_buffer_id_is_selectable() -> None:
    m, chconn = _at_chim(send_buf_id=DPDK_SEND_ID)
    assert u16(chconn.payload, "hn_nvs_chim_conn", "sig") == DPDK_SEND_ID
    m.receive(comp(chconn, chim_resp()))
    _, revoke_send = m.stop()
    assert u16(revoke_send.payload, "hn_nvs_chim_disconn", "sig") == DPDK_SEND_ID


# ---- transaction ids, lengths, unsolicited --------------------------------------------------------


def test_completion_with_unknown_trans_id() -> None:
    m = guest()
    [init] = m.start()
    with pytest.raises(HostProtocolError, match=r"trans_id 0x\w+ matches no outstanding"):
        m.receive(Inbound(InboundKind.COMPLETION, init.trans_id + 7, init_resp()))
    assert m.state is NvspState.ERROR


def test_duplicate_completion_is_rejected() -> None:
    m, rxconn = _at_rxbuf()
    m.receive(comp(rxconn, rxbuf_resp()))
    with pytest.raises(HostProtocolError, match="matches no outstanding"):
        m.receive(comp(rxconn, rxbuf_resp()))


@pytest.mark.parametrize("payload,text", [
    (b"", "shorter than the 4-byte header"),
    (b"\x02\x00", "shorter than the 4-byte header"),
    (init_resp()[:8], "shorter than the 16 bytes"),
    (pack("hn_nvs_rxbuf_connresp", type=T["NVS_TYPE_RXBUF_CONNRESP"], status=OK, nsect=1),
     "type 102 (expected 2)"),
    (bytes(300), "exceeds the limit"),
])
def test_truncated_or_wrong_init_reply(payload: bytes, text: str) -> None:
    m = guest()
    [init] = m.start()
    with pytest.raises(HostProtocolError, match=re.escape(text)):
        m.receive(comp(init, payload))


def test_packet_before_start_is_a_host_error_and_rndis_is_a_local_one() -> None:
    with pytest.raises(HostProtocolError, match="before INIT"):
        guest().receive(inband(pack("hn_nvs_vf_association", type=T["NVS_TYPE_VFASSOC_NOTE"])))
    m = guest()
    m.start()
    with pytest.raises(LocalProtocolError, match="RndisGuest"):
        m.receive(Inbound(InboundKind.RNDIS, 0, b"\0" * 8))


def test_vf_association_and_unknown_inband_messages() -> None:
    m = guest()
    to_ready(m)
    assert m.receive(inband(pack("hn_nvs_vf_association", type=T["NVS_TYPE_VFASSOC_NOTE"],
                                 allocated=1, serial=42))) == []
    assert drain(m) == [VfAssociation(True, 42)]
    m.receive(inband(struct.pack("<I", 130) + bytes(8)))  # deprecated uplink state: ignored
    assert drain(m) == [] and m.ignored_messages == 1
    with pytest.raises(HostProtocolError, match="VF association: length 8"):
        m.receive(inband(pack("hn_nvs_vf_association", type=T["NVS_TYPE_VFASSOC_NOTE"])[:8]))


def test_sriov_is_offered_only_when_asked_and_from_nvsp5() -> None:
    sriov = GOLDEN["constants"]["nvs_ndis_conf_caps"]["NVS_NDIS_CONF_SRIOV"]
    caps = with_sriov(default_ndis_capabilities)
    assert caps(V["NVS_VERSION_5"]) & sriov and caps(V["NVS_VERSION_61"]) & sriov
    assert not caps(V["NVS_VERSION_4"]) & sriov and not default_ndis_capabilities(V["NVS_VERSION_61"]) & sriov
    m = guest(capabilities=caps)
    [init] = m.start()
    conf, _, _ = m.receive(comp(init, init_resp(OK, VERSIONS[0])))
    assert struct.unpack_from("<Q", conf.payload, off("hn_nvs_ndis_conf", "caps"))[0] & sriov


def test_hosts_own_datapath_switch_and_hostile_vf_values() -> None:
    m = guest()
    to_ready(m)
    sw = T["NVS_TYPE_SET_DATAPATH"]
    # OpenVMM's switch back to synthetic: type 129 + u32 0, padded
    assert m.receive(inband(struct.pack("<II", sw, 0) + bytes(32))) == []
    assert drain(m) == [HostDatapathSwitched(False)]
    m.receive(inband(struct.pack("<II", sw, 1)))
    assert drain(m) == [HostDatapathSwitched(True)]                   # the policy ignores it (vfwatch)
    m.receive(inband(struct.pack("<II", sw, 7)))
    [dropped] = drain(m)
    assert isinstance(dropped, VfMessageDropped) and "active_datapath 7" in dropped.reason
    m.receive(inband(pack("hn_nvs_vf_association", type=T["NVS_TYPE_VFASSOC_NOTE"], allocated=2, serial=1)))
    [dropped] = drain(m)
    assert isinstance(dropped, VfMessageDropped) and "allocated 2" in dropped.reason
    m.receive(inband(pack("hn_nvs_vf_association", type=T["NVS_TYPE_VFASSOC_NOTE"], allocated=0,
                          serial=0xFFFFFFFF)))
    assert drain(m) == [VfAssociation(False, 0xFFFFFFFF)] and m.state is NvspState.READY
    with pytest.raises(HostProtocolError, match="data path switch from the host: length 4"):
        m.receive(inband(struct.pack("<I", sw)))


def _table(count: int, offset: int, entries: list[int], at: int) -> bytes:
    raw = bytearray(max(at + 4 * len(entries), 12))
    struct.pack_into("<III", raw, 0, T["NVS_TYPE_TXTBL_NOTE"], count, offset)
    struct.pack_into(f"<{len(entries)}I", raw, at, *entries)
    return bytes(raw)


def test_indirection_table_uses_offset_on_61() -> None:
    m = guest()
    to_ready(m)  # 6.1
    entries = [i % 4 for i in range(16)]
    m.receive(inband(_table(16, 12, entries, 12)))
    assert drain(m) == [IndirectionTable(tuple(entries))]


def test_indirection_table_host_bug_fix_up_to_nvsp_6() -> None:
    m = guest()
    to_ready(m, version_index=1)  # NVSP 6: table sits after the 40-byte nvsp_message
    entries = list(range(16))
    m.receive(inband(_table(16, 4, entries, 40)))
    assert drain(m) == [IndirectionTable(tuple(entries))]


@pytest.mark.parametrize("raw,text", [
    (_table(8, 12, list(range(8)), 12), "count 8 is not 16"),
    (_table(16, 60, list(range(16)), 12), "offset 0x3c"),
    (_table(16, 12, [], 12)[:8], "shorter than 12"),
])
def test_indirection_table_validation(raw: bytes, text: str) -> None:
    m = guest()
    to_ready(m)
    with pytest.raises(HostProtocolError, match=text):
        m.receive(inband(raw))


# ---- subchannels, datapath, teardown ----------------------------------------------------------


def test_subchannel_request_and_grant() -> None:
    m = guest()
    to_ready(m)
    [req] = m.request_subchannels(4)
    assert mtype(req) == T["NVS_TYPE_SUBCH_REQ"] and req.want_completion
    assert u32(req.payload, "hn_nvs_subch_req", "op") == \
        GOLDEN["constants"]["nvs_subch_op"]["NVS_SUBCH_OP_ALLOC"]
    assert u32(req.payload, "hn_nvs_subch_req", "nsubch") == 4
    assert m.state is NvspState.SUBCHANNEL_WAIT
    m.receive(comp(req, subch_resp(OK, 3)))
    assert drain(m) == [SubchannelsGranted(3)] and m.state.value == "ready"


def test_subchannel_failure_is_a_refusal_not_an_error() -> None:
    # OpenVMM answers FAILURE (count 0) when more are asked than it has queues; the primary goes on
    m = guest()
    to_ready(m)
    [req] = m.request_subchannels(4)
    assert m.receive(comp(req, subch_resp(FAIL, 0))) == []
    assert drain(m) == [SubchannelsRefused(asked=4, status=FAIL)]
    assert m.state is NvspState.READY and m.error is None
    [again] = m.request_subchannels(1)  # the machine is usable afterwards
    m.receive(comp(again, subch_resp(OK, 1)))
    assert drain(m) == [SubchannelsGranted(1)]


@pytest.mark.parametrize("reply,error,text", [
    (subch_resp(OK, 5), HostProtocolError, "count 5 exceeds the 4 requested"),
    (subch_resp(OK, 1)[:8], HostProtocolError, "shorter than the 12 bytes"),
])
def test_subchannel_reply_validation(reply: bytes, error: type[Exception], text: str) -> None:
    m = guest()
    to_ready(m)
    [req] = m.request_subchannels(4)
    with pytest.raises(error, match=text):
        m.receive(comp(req, reply))


def test_subchannels_need_nvsp5_and_ready_state() -> None:
    m = guest()
    to_ready(m, version_index=3)  # NVSP 4
    with pytest.raises(LocalProtocolError, match="NVSP 5"):
        m.request_subchannels(2)
    m2 = guest()
    m2.start()
    with pytest.raises(LocalProtocolError, match="not allowed in state 'init_wait'"):
        m2.request_subchannels(2)
    m3 = guest()
    to_ready(m3)
    with pytest.raises(LocalProtocolError, match="outside"):
        m3.request_subchannels(0)


def test_datapath_switch_completes_without_payload() -> None:
    m = guest()
    to_ready(m)
    [sw] = m.switch_datapath(vf=True)
    assert mtype(sw) == T["NVS_TYPE_SET_DATAPATH"] and sw.want_completion
    assert u32(sw.payload, "hn_nvs_datapath", "active_path") == \
        GOLDEN["constants"]["nvs_datapath"]["NVS_DATAPATH_VF"]
    m.receive(comp(sw, b""))
    assert drain(m) == [DatapathSwitched(True)] and m.state is NvspState.READY
    [sw] = m.switch_datapath(vf=False)
    with pytest.raises(HostProtocolError, match="neither empty"):
        m.receive(comp(sw, init_resp()))


def test_stop_revokes_receive_then_send_buffer_without_completion() -> None:
    m = guest()
    to_ready(m)
    rv_recv, rv_send = m.stop()
    assert mtype(rv_recv) == T["NVS_TYPE_RXBUF_DISCONN"] and not rv_recv.want_completion
    assert u16(rv_recv.payload, "hn_nvs_rxbuf_disconn", "sig") == RXBUF_SIG
    assert mtype(rv_send) == T["NVS_TYPE_CHIM_DISCONN"] and not rv_send.want_completion
    assert u16(rv_send.payload, "hn_nvs_chim_disconn", "sig") == LINUX_SEND_ID
    assert drain(m) == [BuffersRevoked(True, True)] and m.state is NvspState.REVOKED
    with pytest.raises(LocalProtocolError):
        m.stop()


def test_stop_mid_setup_revokes_only_what_was_connected() -> None:
    m, chconn = _at_chim()
    [rv] = m.stop()
    assert mtype(rv) == T["NVS_TYPE_RXBUF_DISCONN"]
    assert drain(m) == [BuffersRevoked(True, False)]
    assert not m.expects(chconn.trans_id)
    with pytest.raises(LocalProtocolError):
        guest().stop()  # nothing started


# ---- time ---------------------------------------------------------------------------------------


def test_timeout_counts_from_the_first_tick_after_sending() -> None:
    m = guest()
    m.start()
    assert m.tick(1000.0) == []
    assert m.tick(1000.0 + limits.NVSP_REPLY_TIMEOUT_S - 0.001) == []
    with pytest.raises(HostTimeoutError, match=r"INIT \(version 0x60001\)"):
        m.tick(1000.0 + limits.NVSP_REPLY_TIMEOUT_S)
    assert m.state is NvspState.ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):
        m.tick(2000.0)


def test_answered_request_does_not_time_out() -> None:
    m = guest()
    [init] = m.start()
    m.tick(0.0)
    out = m.receive(comp(init, init_resp()))
    m.tick(4.0)  # the receive-buffer connect starts its clock here
    m.tick(8.9)
    with pytest.raises(HostTimeoutError, match="receive buffer connect"):
        m.tick(9.0)
    assert not m.expects(init.trans_id) and out[-1].want_completion


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        guest(versions=[])
    with pytest.raises(LocalProtocolError):
        guest(versions=[V["NVS_VERSION_2"], V["NVS_VERSION_5"]])
    with pytest.raises(LocalProtocolError):
        guest(mtu=10)
    with pytest.raises(LocalProtocolError):
        BufferGrant(0, 4096)
