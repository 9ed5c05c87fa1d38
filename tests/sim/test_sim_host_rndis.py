"""Emulated host RNDIS: initialize, OID queries/sets, keep-alives, halt, link indications."""

from __future__ import annotations

import struct

import pytest

from hvuio.errors import UsageError
from hvuio.sim.host.events import (
    LinkIndicated, PacketFilterSet, RndisHalted, RndisInitialized, StatusIndicated,
)
from hvuio.sim.host.profile import HostProfile, OffloadCaps
from hvuio.sim.host.rss import status as rss_status
from support.golden import GOLDEN, size
from support.simhost import (
    FRAME, MSG, NVS_V2, NVS_V4, NVS_V5, OID, RST, Env, c, completions, r_init, r_keepalive_cmplt,
    r_query, r_set, r_simple, rss_params, set_status,
)


def one_reply(env: Env, msg: bytes) -> bytes:
    step = env.send_rndis(msg)
    (out,) = env.rndis_out(step)
    env.ack_all(step)
    return out


def query(env: Env, oid_name: str, rid: int = 50) -> tuple[int, bytes]:
    """(status, info buffer) of a QUERY; checks the completion's framing on the way."""
    msg = one_reply(env, r_query(rid, c(OID, oid_name)))
    mtype, mlen, qrid, status, ilen, ioff = struct.unpack_from("<6I", msg)
    assert (mtype, mlen, qrid) == (c(MSG, "RNDIS_QUERY_CMPLT"), len(msg), rid)
    base = c("rndis_offset_bases", "RNDIS_QUERY_COMP_INFOBUFOFFSET_ABS(0)")
    assert ilen == 0 or base + ioff + ilen <= mlen
    return status, msg[base + ioff:base + ioff + ilen]


def test_initialize_completion_fields() -> None:
    env = Env()
    env.bring_up(rndis=False)
    step = env.send_rndis(r_init(0x42))
    (init_c,) = env.rndis_out(step)  # OpenVMM sends no link indication at initialize
    assert len(init_c) == size("rndis_init_comp")
    f = struct.unpack_from("<13I", init_c)
    assert f[0] == c(MSG, "RNDIS_INITIALIZE_CMPLT") and f[2] == 0x42 and f[3] == c(RST, "RNDIS_STATUS_SUCCESS")
    assert (f[4], f[5]) == (c("rndis_version", "RNDIS_VERSION_MAJOR"), c("rndis_version", "RNDIS_VERSION_MINOR"))
    assert f[6] == c("rndis_device_flags", "RNDIS_DF_CONNECTIONLESS")
    assert f[7] == c("rndis_medium", "RNDIS_MEDIUM_802_3")
    assert f[8] >= 1 and f[9] >= 16384 and f[10] == 3  # packets/message, max transfer, 2^3 alignment
    assert RndisInitialized(16384) in step.events and not any(isinstance(e, LinkIndicated) for e in step.events)
    # every host message went through a receive section as a control-channel transfer
    for p in step.packets:
        if p.type == 7:
            assert struct.unpack_from("<2I", p.payload)[1] == c("nvs_rndis_mtype", "NVS_RNDIS_MTYPE_CTRL")
    # TX completion of the RNDIS send comes first (OpenVMM completes before answering control)
    assert step.packets[0].type == 0xB


def test_initialize_twice_faults() -> None:
    env = Env()
    env.bring_up()
    step = env.send_rndis(r_init(9))
    assert env.host.state == "stopped" and env.host.rejections[-1].message_type == c(MSG, "RNDIS_INITIALIZE_MSG")
    assert completions(step)  # the NVSP send itself was completed before the control message failed


def test_initialize_bad_major_strict() -> None:
    env = Env()
    env.bring_up(rndis=False)
    (msg,) = env.rndis_out(env.send_rndis(r_init(3, major=2)))
    assert struct.unpack_from("<4I", msg)[3] == c(RST, "RNDIS_STATUS_BAD_VERSION")
    assert env.host.rejections[-1].field == "major_version"
    assert env.host.rndis is not None and not env.host.rndis.operational


@pytest.mark.parametrize("mtype", ["RNDIS_RESET_MSG", "RNDIS_INDICATE_STATUS_MSG"])
def test_unimplemented_control_messages_fault(mtype: str) -> None:
    env = Env()
    env.bring_up()
    env.send_rndis(struct.pack("<3I", c(MSG, mtype), 20, 5) + bytes(8))
    assert env.host.state == "stopped" and env.host.rejections[-1].value == c(MSG, mtype)


def test_short_control_message_faults() -> None:
    env = Env()
    env.bring_up()
    env.send_rndis(r_query(1, c(OID, "OID_GEN_LINK_SPEED"))[:20].replace(b"\x1c", b"\x14", 1))
    assert env.host.state == "stopped" and env.host.rejections[-1].field == "len"


def test_query_before_initialize_is_not_ready() -> None:
    env = Env()
    env.bring_up(rndis=False)
    status, _ = query(env, "OID_802_3_PERMANENT_ADDRESS")
    assert status == c(RST, "RNDIS_STATUS_ADAPTER_NOT_READY")


def test_queries_the_guest_makes() -> None:
    profile = HostProfile(mac=bytes.fromhex("00155d123456"), link_speed_bps=40_000_000_000, max_subchannels=3)
    env = Env(profile)
    env.bring_up(NVS_V5)
    u32 = lambda b: struct.unpack("<I", b)[0]  # noqa: E731
    ok = c(RST, "RNDIS_STATUS_SUCCESS")
    assert query(env, "OID_802_3_PERMANENT_ADDRESS") == (ok, profile.mac)
    assert query(env, "OID_802_3_CURRENT_ADDRESS") == (ok, profile.mac)
    assert u32(query(env, "OID_GEN_MAXIMUM_FRAME_SIZE")[1]) == 1500
    assert u32(query(env, "OID_GEN_LINK_SPEED")[1]) == 400_000_000  # units of 100 bit/s
    assert u32(query(env, "OID_GEN_MEDIA_CONNECT_STATUS")[1]) == c("ndis_media_state", "NDIS_MEDIA_STATE_CONNECTED")
    assert u32(query(env, "OID_GEN_CURRENT_PACKET_FILTER")[1]) == 0xD
    status, caps = query(env, "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES")
    assert len(caps) == c("ndis_offload", "NDIS_OFFLOAD_SIZE")
    assert struct.unpack_from("<BBH", caps) == (c("ndis_objtype", "NDIS_OBJTYPE_OFFLOAD"), 3, len(caps))
    tx4 = struct.unpack_from("<I", caps, 4 + 4)[0]  # ndis_csum.ndis_ip4_txcsum
    assert tx4 & c("ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4") and tx4 & c("ndis_offload_caps", "NDIS_TXCSUM_CAP_IP4")
    _, rss = query(env, "OID_GEN_RECEIVE_SCALE_CAPABILITIES")
    assert len(rss) == c("ndis_rss", "NDIS_RSS_CAPS_SIZE")
    hdr_type, _, _, flags, _nmsi, nrxr, nind = struct.unpack("<BBHIIIH", rss)
    assert hdr_type == c("ndis_objtype", "NDIS_OBJTYPE_RSS_CAPS") and nrxr == 4 and nind == 128
    assert flags & c("ndis_rss", "NDIS_RSS_CAP_HASH_TOEPLITZ")
    _, supported = query(env, "OID_GEN_SUPPORTED_LIST")
    oids = struct.unpack(f"<{len(supported) // 4}I", supported)
    assert c(OID, "OID_802_3_PERMANENT_ADDRESS") in oids and c(OID, "OID_GEN_LINK_SPEED") in oids


def test_offload_caps_follow_the_profile() -> None:
    env = Env(HostProfile(offloads=OffloadCaps(csum_tx_tcp4=False, lso4=False, lso6=False)))
    env.bring_up()
    _, caps = query(env, "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES")
    tx4 = struct.unpack_from("<I", caps, 8)[0]
    assert not tx4 & c("ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4")
    lsov2 = GOLDEN["structs"]["ndis_offload"]["fields"][4]
    assert lsov2["name"] == "ndis_lsov2" and struct.unpack_from("<I", caps, lsov2["offset"] + 4)[0] == 0


@pytest.mark.parametrize("nvsp, rev, objsize", [
    (NVS_V2, 1, "NDIS_OFFLOAD_SIZE_6_0"), (NVS_V4, 2, "NDIS_OFFLOAD_SIZE_6_1"), (NVS_V5, 3, "NDIS_OFFLOAD_SIZE"),
])
def test_caps_query_with_each_linux_header_is_answered(nvsp: int, rev: int, objsize: str) -> None:
    # Linux's query input per NVSP version (rndis_filter_query_device); the host answers its caps
    env = Env()
    env.bring_up(nvsp)
    n = c("ndis_offload", objsize)
    hdr = struct.pack("<BBH", c("ndis_objtype", "NDIS_OBJTYPE_OFFLOAD"), rev, n) + bytes(n - 4)
    msg = one_reply(env, r_query(60, c(OID, "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"), hdr))
    status, ilen = struct.unpack_from("<II", msg, 12)
    assert status == c(RST, "RNDIS_STATUS_SUCCESS") and ilen == c("ndis_offload", "NDIS_OFFLOAD_SIZE")
    assert not env.host.rejections


def test_unknown_oid_is_not_supported() -> None:
    env = Env()
    env.bring_up()
    status, info = query(env, "OID_GEN_VLAN_ID")
    assert (status, info) == (c(RST, "RNDIS_STATUS_NOT_SUPPORTED"), b"")
    assert env.host.rejections[-1].value == c(OID, "OID_GEN_VLAN_ID")
    status, _ = set_status(env, c(OID, "OID_802_3_MULTICAST_LIST"), bytes(6))
    assert status == c(RST, "RNDIS_STATUS_NOT_SUPPORTED")


def test_packet_filter_set_event_and_short_value() -> None:
    env = Env()
    env.bring_up(packet_filter=None)
    step = env.send_rndis(r_set(8, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", 0x2F)))
    assert PacketFilterSet(0x2F) in step.events
    status, _ = set_status(env, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), b"\x01\x00")
    assert status == c(RST, "RNDIS_STATUS_FAILURE")


def test_set_info_buffer_outside_message_is_invalid_data() -> None:
    env = Env()
    env.bring_up()
    status, _ = set_status(env, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", 1), info_offset=200)
    assert status == c(RST, "RNDIS_STATUS_INVALID_DATA")
    assert env.host.rejections[-1].field == "info_buffer_offset"


def offload_params(otype: int = 0x80, rev: int = 2, osize: int = 28, lsov1: int = 0, tcp4: int = 4) -> bytes:
    b = bytearray(28)
    struct.pack_into("<BBH", b, 0, otype, rev, osize)
    b[5] = tcp4  # ndis_tcp4csum
    b[9] = lsov1  # ndis_lsov1
    return bytes(b)


def test_offload_parameters_are_validated_and_indicated() -> None:
    env = Env()
    env.bring_up()
    oid = c(OID, "OID_TCP_OFFLOAD_PARAMETERS")
    status, extra = set_status(env, oid, offload_params(tcp4=c("ndis_offload", "NDIS_OFFLOAD_PARAM_OFF")))
    assert status == c(RST, "RNDIS_STATUS_SUCCESS")
    (ind,) = extra
    st, blen, boff = struct.unpack_from("<3I", ind, 8)
    assert st == c(RST, "RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG") and blen == 156
    assert not struct.unpack_from("<I", ind, 8 + boff + 8)[0] & c("ndis_offload_caps", "NDIS_TXCSUM_CAP_TCP4")
    bad = c(RST, "RNDIS_STATUS_INVALID_DATA")
    assert set_status(env, oid, offload_params(otype=0x81))[0] == bad
    assert set_status(env, oid, offload_params(rev=0))[0] == bad
    assert set_status(env, oid, offload_params(osize=12))[0] == bad
    assert set_status(env, oid, offload_params(osize=60))[0] == bad  # larger than what was sent
    lsov1 = c("ndis_offload", "NDIS_OFFLOAD_LSOV1_ON")
    assert set_status(env, oid, offload_params(lsov1=lsov1))[0] == c(RST, "RNDIS_STATUS_NOT_SUPPORTED")


def test_rss_parameters_follow_openvmm() -> None:
    """[OV] oid_set_rss_parameters: accepted, stored at the host's table size (a shorter table
    repeated), refused with INVALID_DATA for a key size other than 40, a table size 0 or not a
    multiple of 4, an entry >= the host's queues; the NDIS header is not checked."""
    env = Env(HostProfile(max_subchannels=3))  # 4 queues
    env.bring_up(NVS_V5)
    oid = c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS")
    ok, invalid = c(RST, "RNDIS_STATUS_SUCCESS"), c(RST, "RNDIS_STATUS_INVALID_DATA")
    assert env.host.rss is None  # off until the guest sets it
    assert set_status(env, oid, rss_params())[0] == ok
    rss = env.host.rss
    assert rss is not None and rss.table == (0, 1, 2, 3) * 32 and rss.key == bytes(range(40))
    assert rss.hash_types == ["IPV4", "TCP_IPV4", "IPV6", "TCP_IPV6"]  # Linux's 0x1701
    assert set_status(env, oid, rss_params((3,) * 128))[0] == ok  # Linux's full 128-entry table
    assert env.host.rss is not None and env.host.rss.table == (3,) * 128
    # refusals keep what was set
    for bad, field in ((rss_params(key_size=16), "hash_secret_key_size"),
                       (rss_params(ind_size=0), "indirection_table_size"),
                       (rss_params(ind_size=6), "indirection_table_size"),
                       (rss_params((0, 4)), "indirection_table")):
        assert set_status(env, oid, bad)[0] == invalid
        assert env.host.rejections[-1].field == field and env.host.rss.table == (3,) * 128
    # an entry naming a host queue that was not granted is accepted ([OV] checks max_queues)
    assert set_status(env, oid, rss_params((0, 3)))[0] == ok and env.host.subchannels == 0
    # the NDIS header is not validated ("Vmswitch doesn't validate the NDIS header")
    assert set_status(env, oid, rss_params(ndis_type=0))[0] == ok
    # at most the host's 128 entries are read: a bad entry past them is never seen
    assert set_status(env, oid, rss_params((1,) * 128 + (9,)))[0] == ok
    assert env.host.rss is not None and env.host.rss.table == (1,) * 128


def test_rss_status_as_sim_status_shows_it() -> None:
    env = Env(HostProfile(max_subchannels=3))
    env.bring_up(NVS_V5)
    assert rss_status(env.host.rss, 1) == {"enabled": False, "hash_types": [], "table_size": 0, "queues": 1,
                                           "hash_info": 0, "key": "", "table": []}
    set_status(env, c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS"), rss_params(hash_info=0x201))
    assert rss_status(env.host.rss, 4) == {"enabled": True, "hash_types": ["TCP_IPV4"], "table_size": 128,
                                           "queues": 4, "hash_info": 0x201, "key": bytes(range(40)).hex(),
                                           "table": [0, 1, 2, 3] * 32}  # the 4-entry table repeated to 128


def test_guest_keepalive_is_answered() -> None:
    env = Env()
    env.bring_up()
    msg = one_reply(env, r_simple("RNDIS_KEEPALIVE_MSG", 0x77))
    assert struct.unpack("<4I", msg) == (c(MSG, "RNDIS_KEEPALIVE_CMPLT"), 16, 0x77, 0)


def test_host_keepalive_from_tick_only_when_asked_and_expects_no_answer() -> None:
    env = Env(HostProfile(keepalive_interval=10.0))
    env.bring_up()
    assert env.host.tick(100.0).packets == ()  # arms the timer
    assert env.host.tick(105.0).packets == ()
    step = env.host.tick(110.0)
    (req,) = env.rndis_out(step)
    env.ack_all(step)
    mtype, mlen, rid = struct.unpack("<3I", req)
    assert (mtype, mlen) == (c(MSG, "RNDIS_KEEPALIVE_MSG"), 12)
    step = env.host.tick(120.0)  # unanswered, as Linux leaves it: neither logged nor missed
    (req2,) = env.rndis_out(step)
    env.ack_all(step)
    assert struct.unpack_from("<I", req2, 8)[0] != rid
    assert env.host.rejections == [] and env.host.state == "ready"


@pytest.mark.parametrize("keepalive_interval", [None, 1.0])
def test_guest_keepalive_completion_faults_like_openvmm(keepalive_interval: float | None) -> None:
    # OpenVMM has no case for MESSAGE_TYPE_KEEPALIVE_CMPLT: an unknown RNDIS type ends the worker
    env = Env(HostProfile(keepalive_interval=keepalive_interval))
    env.bring_up()
    rid = 7
    if keepalive_interval is not None:  # even an answer to the host's own request
        env.host.tick(0.0)
        step = env.host.tick(1.0)
        (req,) = env.rndis_out(step)
        env.ack_all(step)
        rid = struct.unpack_from("<I", req, 8)[0]
    env.send_rndis(r_keepalive_cmplt(rid))
    assert env.host.state == "stopped"
    assert env.host.rejections[-1].message_type == c(MSG, "RNDIS_KEEPALIVE_CMPLT")


def test_no_host_keepalive_by_default() -> None:
    env = Env()
    env.bring_up()
    assert all(env.host.tick(t).packets == () for t in (0.0, 1e6, 2e6))


def test_halt_stops_answering() -> None:
    env = Env()
    env.bring_up()
    step = env.send_rndis(r_simple("RNDIS_HALT_MSG", 4))
    assert RndisHalted() in step.events and env.rndis_out(step) == []
    step = env.send_rndis(r_query(5, c(OID, "OID_GEN_LINK_SPEED")))
    assert env.rndis_out(step) == [] and env.host.rejections[-1].reason == "RNDIS message after HALT"
    assert env.host.deliver(FRAME).packets == ()


def status_of(env: Env, step: object) -> list[int]:
    return [struct.unpack_from("<I", m, 8)[0] for m in env.rndis_out(step)]  # type: ignore[arg-type]


def test_link_down_and_up_are_indicated_once() -> None:
    env = Env()
    env.bring_up()
    down = env.host.set_link(False)
    assert status_of(env, down) == [c(RST, "RNDIS_STATUS_MEDIA_DISCONNECT")] and LinkIndicated(False) in down.events
    env.ack_all(down)
    assert env.host.set_link(False).packets == ()
    _, info = query(env, "OID_GEN_MEDIA_CONNECT_STATUS")
    assert struct.unpack("<I", info)[0] == c("ndis_media_state", "NDIS_MEDIA_STATE_DISCONNECTED")
    up = env.host.set_link(True)
    assert status_of(env, up) == [c(RST, "RNDIS_STATUS_MEDIA_CONNECT")]


def test_scripted_network_change_and_repeated_media_connect() -> None:
    env = Env()
    assert env.host.indicate("network_change").packets == ()     # RNDIS not up yet: nothing
    env.bring_up()
    step = env.host.indicate("network_change")
    assert status_of(env, step) == [c(RST, "RNDIS_STATUS_NETWORK_CHANGE")]
    assert StatusIndicated(c(RST, "RNDIS_STATUS_NETWORK_CHANGE")) in step.events
    env.ack_all(step)
    step = env.host.indicate("media_connect")                     # a repeat while the link is up
    assert status_of(env, step) == [c(RST, "RNDIS_STATUS_MEDIA_CONNECT")]
    env.ack_all(step)
    env.ack_all(env.host.set_link(False))
    assert env.host.indicate("media_connect").packets == ()       # while down a connect is a link change
    with pytest.raises(KeyError):
        env.host.indicate("reset")


def test_scripted_link_speed_change_carries_the_speed_and_changes_the_query() -> None:
    u32 = lambda b: struct.unpack("<I", b)[0]  # noqa: E731
    env = Env()
    assert env.host.indicate("link_speed", 25_000_000_000).packets == ()   # RNDIS not up yet: nothing
    env.bring_up()
    assert u32(query(env, "OID_GEN_LINK_SPEED")[1]) == 100_000_000        # the profile's 10 Gbit/s
    step = env.host.indicate("link_speed", 1_000_000_000)
    assert status_of(env, step) == [c(RST, "RNDIS_STATUS_LINK_SPEED_CHANGE")]
    assert StatusIndicated(c(RST, "RNDIS_STATUS_LINK_SPEED_CHANGE")) in step.events
    [msg] = env.rndis_out(step)
    status, buflen, offset = struct.unpack_from("<III", msg, 8)
    assert (buflen, offset) == (4, 12) and u32(msg[8 + offset:8 + offset + 4]) == 10_000_000
    env.ack_all(step)
    assert u32(query(env, "OID_GEN_LINK_SPEED", rid=51)[1]) == 10_000_000
    with pytest.raises(ValueError, match="needs a speed"):
        env.host.indicate("link_speed")


def test_link_down_before_init_is_reported_by_the_query_not_indicated() -> None:
    env = Env()
    assert env.host.set_link(False).packets == ()
    env.bring_up(rndis=False)
    step = env.send_rndis(r_init(1))
    assert len(env.rndis_out(step)) == 1  # the init completion only
    env.ack_all(step)
    _, info = query(env, "OID_GEN_MEDIA_CONNECT_STATUS")
    assert struct.unpack("<I", info)[0] == c("ndis_media_state", "NDIS_MEDIA_STATE_DISCONNECTED")
    assert env.host.set_link(False).packets == ()  # the guest knows it already: nothing indicated


def test_link_indication_at_init_is_a_profile_option() -> None:
    env = Env(HostProfile(indicate_link_at_init=True))
    env.bring_up(rndis=False)
    step = env.send_rndis(r_init(1))
    assert status_of(env, step)[1] == c(RST, "RNDIS_STATUS_MEDIA_CONNECT")
    assert LinkIndicated(True) in step.events


def test_indications_at_init_are_a_profile_option_sent_in_order() -> None:
    with pytest.raises(UsageError, match="indicate_at_init names 'link_speed'"):
        HostProfile(indicate_at_init=("link_speed",))
    env = Env(HostProfile(indicate_at_init=("network_change", "media_disconnect", "media_connect")))
    env.bring_up(rndis=False)
    step = env.send_rndis(r_init(1))
    assert status_of(env, step)[1:] == [c(RST, "RNDIS_STATUS_NETWORK_CHANGE"), c(RST, "RNDIS_STATUS_MEDIA_DISCONNECT"),
                                        c(RST, "RNDIS_STATUS_MEDIA_CONNECT")]
    env.ack_all(step)
    _, info = query(env, "OID_GEN_MEDIA_CONNECT_STATUS")  # the host's link was not changed by them
    assert struct.unpack("<I", info)[0] == c("ndis_media_state", "NDIS_MEDIA_STATE_CONNECTED")


def test_vf_association_sent_after_rndis_init_when_configured() -> None:
    env = Env(HostProfile(vf_serial=0x55, indirection_table="after_rndis_init"))
    env.bring_up(NVS_V5, rndis=False)
    step = env.send_rndis(r_init(1))
    inband = [p for p in step.packets if p.type == 6]
    types = [struct.unpack_from("<I", p.payload)[0] for p in inband]
    assert types == [c("nvs_msg_type", "NVS_TYPE_TXTBL_NOTE"), c("nvs_msg_type", "NVS_TYPE_VFASSOC_NOTE")]
    vf = inband[1]
    assert struct.unpack_from("<3I", vf.payload) == (c("nvs_msg_type", "NVS_TYPE_VFASSOC_NOTE"), 1, 0x55)
    assert vf.flags == 1
    env.ack(vf)  # the guest's completion of the VF message is accepted silently
    assert env.host.state == "ready"
    env4 = Env(HostProfile(vf_serial=0x55))
    env4.bring_up(NVS_V4, rndis=False)
    assert [p for p in env4.send_rndis(r_init(1)).packets if p.type == 6] == []  # caps lack SR-IOV on v4


def test_initialize_with_tiny_max_transfer_is_refused_strict() -> None:
    env = Env()
    env.bring_up(rndis=False)
    (msg,) = env.rndis_out(env.send_rndis(r_init(3, max_xfer=16)))
    assert struct.unpack_from("<4I", msg)[3] == c(RST, "RNDIS_STATUS_INVALID_DATA")
    assert env.host.rejections[-1].field == "max_transfer_size"


def test_rss_disable_and_bad_offsets() -> None:
    """[OV]: the DISABLE flag or no hash function bit turns RSS off (success); a key or table
    outside the info buffer is an access error: FAILURE."""
    env = Env(HostProfile(max_subchannels=3))
    env.bring_up(NVS_V5)
    oid = c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS")
    ok, failure = c(RST, "RNDIS_STATUS_SUCCESS"), c(RST, "RNDIS_STATUS_FAILURE")
    for off in (rss_params(flags=c("ndis_rss", "NDIS_RSS_FLAG_DISABLE")), rss_params(hash_info=0x1700),
                rss_params(key_size=16, hash_info=0x1700)):  # nothing else is checked then
        assert set_status(env, oid, rss_params())[0] == ok and env.host.rss is not None
        assert set_status(env, oid, off)[0] == ok and env.host.rss is None
    assert set_status(env, oid, rss_params(key_off=4000))[0] == failure
    assert env.host.rejections[-1].field == "hash_secret_key_offset"
    assert set_status(env, oid, rss_params(ind_size=512))[0] == failure  # 4 entries sent, 128 read
    assert env.host.rejections[-1].field == "indirection_table_offset"
    short = rss_params()[:8]  # read as far as it goes, the rest zero: no hash function = off
    assert set_status(env, oid, short)[0] == ok and env.host.rss is None


def test_lax_profile_reads_info_right_after_the_header() -> None:
    env = Env(HostProfile(strict=False))
    env.bring_up()
    status, _ = set_status(env, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", 0x21), info_offset=999)
    assert status == c(RST, "RNDIS_STATUS_SUCCESS")
    assert env.host.rndis is not None and env.host.rndis.packet_filter == 0x21


def test_config_parameter_bounds() -> None:
    env = Env()
    env.bring_up()
    oid = c(OID, "OID_GEN_RNDIS_CONFIG_PARAMETER")
    name = "*TCPChecksumOffloadIPv4".encode("utf-16-le")
    good = struct.pack("<5I", 20, len(name), 2, 20 + len(name), 2) + name + "3".encode("utf-16-le")
    assert set_status(env, oid, good)[0] == c(RST, "RNDIS_STATUS_SUCCESS")
    too_long = struct.pack("<5I", 20, 300, 2, 0, 0) + bytes(8)
    assert set_status(env, oid, too_long)[0] == c(RST, "RNDIS_STATUS_INVALID_DATA")
    assert set_status(env, oid, struct.pack("<5I", 200, 4, 2, 0, 0))[0] == c(RST, "RNDIS_STATUS_FAILURE")
    assert set_status(env, oid, b"\x00" * 8)[0] == c(RST, "RNDIS_STATUS_FAILURE")
    assert set_status(env, c(OID, "OID_TCP_OFFLOAD_PARAMETERS"), b"\x80")[0] == c(RST, "RNDIS_STATUS_INVALID_DATA")


def test_query_info_outside_and_set_before_initialize() -> None:
    env = Env()
    env.bring_up(rndis=False)
    step = env.send_rndis(r_set(4, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", 1)))
    assert struct.unpack_from("<4I", env.rndis_out(step)[0])[3] == c(RST, "RNDIS_STATUS_ADAPTER_NOT_READY")
    env.ack_all(step)
    assert env.host.set_link(False).packets == ()  # RNDIS not initialized: remembered, not indicated
    env.ack_all(env.send_rndis(r_init(1)))
    bad = bytearray(r_query(6, c(OID, "OID_GEN_LINK_SPEED"), b"\0" * 4))
    struct.pack_into("<I", bad, 20, 64)  # info buffer offset beyond the message
    (msg,) = env.rndis_out(env.send_rndis(bytes(bad)))
    assert struct.unpack_from("<4I", msg)[3] == c(RST, "RNDIS_STATUS_INVALID_DATA")


def test_lsov2_parameters_are_masked_by_host_caps() -> None:
    env = Env(HostProfile(offloads=OffloadCaps(lso6=False)))
    env.bring_up()
    p = bytearray(offload_params())
    p[11] = p[12] = c("ndis_offload", "NDIS_OFFLOAD_LSOV2_ON")
    assert set_status(env, c(OID, "OID_TCP_OFFLOAD_PARAMETERS"), bytes(p))[0] == c(RST, "RNDIS_STATUS_SUCCESS")
    assert env.host.rndis is not None and (env.host.rndis.offload.lso4, env.host.rndis.offload.lso6) == (True, False)
    assert set_status(env, c(OID, "OID_GEN_NETWORK_LAYER_ADDRESSES"), bytes(8))[0] == c(RST, "RNDIS_STATUS_SUCCESS")


def test_quick_link_flaps_are_delayed_like_openvmm() -> None:
    env = Env(HostProfile(link_flap_delay=5.0))
    env.bring_up()
    down = env.host.set_link(False, now=100.0)
    assert status_of(env, down) == [c(RST, "RNDIS_STATUS_MEDIA_DISCONNECT")]  # first change: at once
    env.ack_all(down)
    assert env.host.set_link(True, now=101.0).packets == ()  # within 5 s of the last indication
    assert env.host.tick(104.9).packets == ()
    up = env.host.tick(105.0)
    assert status_of(env, up) == [c(RST, "RNDIS_STATUS_MEDIA_CONNECT")] and LinkIndicated(True) in up.events
    env.ack_all(up)
    # up -> down -> up inside the window: the guest already has "up", nothing is sent
    assert env.host.set_link(False, now=106.0).packets == ()
    assert env.host.set_link(True, now=107.0).packets == ()
    assert env.host.tick(200.0).packets == ()
