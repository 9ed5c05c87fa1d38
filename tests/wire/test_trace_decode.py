"""hvuio.trace.decode: every NVSP and RNDIS message a netvsc guest and host exchange becomes one
line (and a JSON-ready dict) with its names — message types, NVSP/NDIS versions, statuses, OIDs and
their values, indication statuses — and frames show their addresses; a message shorter than its
layout or a length running past its bytes is reported as such, never read past."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvuio.trace.decode import Decoder
from hvuio.trace.pcapng import (IF_CONTROL, IF_FRAMES, INBOUND, LINKTYPE_ETHERNET, OUTBOUND, Record,
                                control_record)
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr
from hvuio.wire.vmbus import PacketType

T = wn.NvspType
R = wr.RndisType


def ctl(direction: int, nvsp: bytes, rndis: bytes = b"", ptype: int = PacketType.DATA_INBAND,
        trans_id: int = 5, relid: int = 3) -> Record:
    data = control_record(direction, relid, ptype, trans_id, nvsp, rndis)
    return Record(LINKTYPE_ETHERNET, IF_CONTROL, 1_700_000_000_000_000, direction, data, len(data))


def nv(cls: type[wn.NvspStruct], **fields: int) -> bytes:
    return wn.to_bytes(cls(**fields))


def line(rec: Record, dec: Decoder | None = None) -> str:
    return (dec or Decoder()).decode(rec).line


NVSP_CASES = [
    (OUTBOUND, nv(wn.NvspInit, type=T.INIT, ver_min=0x60001, ver_max=0x60001), "-> host NVSP INIT v6.1"),
    (INBOUND, nv(wn.NvspInitComplete, type=T.INIT_COMPLETE, negotiated_version=0x50000, status=1),
     "<- host NVSP INIT_COMPLETE SUCCESS version v5"),
    (INBOUND, nv(wn.NvspInitComplete, type=T.INIT_COMPLETE, negotiated_version=0xFFFFFFFF, status=1),
     "<- host NVSP INIT_COMPLETE SUCCESS version unset"),
    (OUTBOUND, nv(wn.NvspNdisConfig, type=T.SEND_NDIS_CONFIG, mtu=1514, capabilities=0x88),
     "NVSP NDIS_CONFIG mtu 1514 caps IEEE8021Q,RSC"),
    (OUTBOUND, nv(wn.NvspNdisVersion, type=T.SEND_NDIS_VERSION, ndis_major=6, ndis_minor=30), "NVSP NDIS_VERSION 6.30"),
    (OUTBOUND, nv(wn.NvspRecvBufConnect, type=T.SEND_RECV_BUF, gpadl=0xE1E10, id=0xCAFE),
     "NVSP RECV_BUF gpadl 0xe1e10 id 0xcafe"),
    (INBOUND, nv(wn.NvspRecvBufComplete, type=T.SEND_RECV_BUF_COMPLETE, status=1, num_sections=1)[:12]
     + struct.pack("<IIII", 0, 1728, 1000, 1728000), "NVSP RECV_BUF_COMPLETE SUCCESS sections 1 (1000 x 1728)"),
    (OUTBOUND, nv(wn.NvspRevokeRecvBuf, type=T.REVOKE_RECV_BUF, id=0xCAFE), "NVSP REVOKE_RECV_BUF id 0xcafe"),
    (OUTBOUND, nv(wn.NvspSendBufConnect, type=T.SEND_SEND_BUF, gpadl=7, id=0), "NVSP SEND_BUF gpadl 0x7 id 0x0"),
    (INBOUND, nv(wn.NvspSendBufComplete, type=T.SEND_SEND_BUF_COMPLETE, status=1, section_size=6144),
     "NVSP SEND_BUF_COMPLETE SUCCESS section_size 6144"),
    (OUTBOUND, nv(wn.NvspRevokeSendBuf, type=T.REVOKE_SEND_BUF, id=0), "NVSP REVOKE_SEND_BUF id 0x0"),
    (OUTBOUND, nv(wn.NvspSendRndisPacket, type=T.SEND_RNDIS_PACKET, channel_type=0, section_index=4,
                  section_size=1558), "NVSP RNDIS_PACKET data section 4 size 1558"),
    (INBOUND, nv(wn.NvspSendRndisPacketComplete, type=T.SEND_RNDIS_PACKET_COMPLETE, status=2),
     "NVSP RNDIS_PACKET_COMPLETE FAIL"),
    (OUTBOUND, wn.receive_ack(), "NVSP RNDIS_PACKET_COMPLETE SUCCESS"),
    (INBOUND, nv(wn.NvspVfAssociation, type=T.SEND_VF_ASSOCIATION, allocated=1, serial=9),
     "NVSP VF_ASSOCIATION allocated serial 0x9"),
    (OUTBOUND, nv(wn.NvspSwitchDatapath, type=T.SWITCH_DATA_PATH, active_datapath=1), "NVSP SWITCH_DATA_PATH vf"),
    (OUTBOUND, nv(wn.NvspSubchannelRequest, type=T.SUBCHANNEL, op=1, count=3), "NVSP SUBCHANNEL allocate 3"),
    (INBOUND, nv(wn.NvspSubchannelComplete, type=T.SUBCHANNEL, status=1, count=2),
     "NVSP SUBCHANNEL_COMPLETE SUCCESS count 2"),
    (INBOUND, struct.pack("<III", T.SEND_INDIRECTION_TABLE, 4, 12) + struct.pack("<4I", 0, 1, 2, 0),
     "NVSP SEND_INDIRECTION_TABLE 4 entries: 0 1 2 0"),
]


@pytest.mark.parametrize(("direction", "msg", "want"), NVSP_CASES, ids=[c[2].split()[1] + c[2].split()[2]
                                                                       for c in NVSP_CASES])
def test_every_nvsp_message_has_its_line(direction: int, msg: bytes, want: str) -> None:
    text = line(ctl(direction, msg))
    assert text.endswith(want), text
    assert " ch3 data_inband tid 0x5 " in text


def test_nvsp_messages_that_lie_about_their_size_are_shown_as_such() -> None:
    assert line(ctl(INBOUND, struct.pack("<II", T.INIT_COMPLETE, 1))).endswith(
        "NVSP INIT_COMPLETE truncated (8 bytes, needs 16)")
    assert line(ctl(INBOUND, b"\x01\x00")).endswith("NVSP message of 2 bytes (no type)")
    assert line(ctl(INBOUND, struct.pack("<I", 999) + bytes(8))).endswith("NVSP type 999 (12 bytes)")
    table_past_end = struct.pack("<III", T.SEND_INDIRECTION_TABLE, 16, 12) + bytes(8)
    assert line(ctl(INBOUND, table_past_end)).endswith("16 entries: (outside the message)")


def rq(cls: type[wr.RndisStruct], info: bytes = b"", **fields: int) -> bytes:
    """An RNDIS message with `info` after its fixed part, lengths and offsets filled in."""
    msg = cls(**fields)
    size = struct.calcsize("<" + "I" * (len(bytes(msg)) // 4))
    for name in ("info_buffer_offset", "status_buffer_offset"):
        if hasattr(msg, name) and info:
            setattr(msg, name, size - 8)
    for name in ("info_buffer_length", "status_buffer_length"):
        if hasattr(msg, name):
            setattr(msg, name, len(info))
    msg.length = size + len(info)
    return bytes(msg) + info


def packet_of(rndis: bytes, direction: int = INBOUND) -> Record:
    nvsp = nv(wn.NvspSendRndisPacket, type=T.SEND_RNDIS_PACKET, channel_type=1, section_index=0xFFFFFFFF)
    return ctl(direction, nvsp, rndis, ptype=PacketType.DATA_USING_XFER_PAGES if direction == INBOUND
               else PacketType.DATA_USING_GPA_DIRECT)


def test_every_rndis_message_has_its_line_and_queries_show_their_oid_and_value() -> None:
    dec = Decoder()
    mac = bytes.fromhex("00155d0a0b0c")
    cases = [
        (OUTBOUND, rq(wr.RndisInitRequest, type=R.INITIALIZE, request_id=1, major_version=1, max_transfer_size=16384),
         "RNDIS INITIALIZE req 1 v1.0 max_xfer 16384"),
        (INBOUND, rq(wr.RndisInitComplete, type=R.INITIALIZE_COMPLETE, request_id=1, major_version=1,
                     max_packets_per_message=8, max_transfer_size=65536, alignment_shift=3),
         "RNDIS INITIALIZE_COMPLETE req 1 SUCCESS v1.0 max_pkts 8 max_xfer 65536 align 2^3"),
        (OUTBOUND, rq(wr.RndisQueryRequest, type=R.QUERY, request_id=2, oid=wr.Oid.OID_802_3_PERMANENT_ADDRESS),
         "RNDIS QUERY req 2 OID_802_3_PERMANENT_ADDRESS"),
        (INBOUND, rq(wr.RndisQueryComplete, mac, type=R.QUERY_COMPLETE, request_id=2),
         "RNDIS QUERY_COMPLETE req 2 SUCCESS OID_802_3_PERMANENT_ADDRESS -> 00:15:5d:0a:0b:0c"),
        (OUTBOUND, rq(wr.RndisQueryRequest, type=R.QUERY, request_id=3, oid=wr.Oid.GEN_LINK_SPEED),
         "RNDIS QUERY req 3 OID_GEN_LINK_SPEED"),
        (INBOUND, rq(wr.RndisQueryComplete, struct.pack("<I", 100_000_000), type=R.QUERY_COMPLETE, request_id=3),
         "RNDIS QUERY_COMPLETE req 3 SUCCESS OID_GEN_LINK_SPEED -> 10000 Mbit/s"),
        (OUTBOUND, rq(wr.RndisQueryRequest, type=R.QUERY, request_id=4, oid=wr.Oid.GEN_RECEIVE_SCALE_CAPABILITIES),
         "RNDIS QUERY req 4 OID_GEN_RECEIVE_SCALE_CAPABILITIES"),
        (INBOUND, rq(wr.RndisQueryComplete, type=R.QUERY_COMPLETE, request_id=4, status=wr.RndisStatus.NOT_SUPPORTED),
         "RNDIS QUERY_COMPLETE req 4 NOT_SUPPORTED OID_GEN_RECEIVE_SCALE_CAPABILITIES"),
        (OUTBOUND, rq(wr.RndisSetRequest, struct.pack("<I", 0xD), type=R.SET, request_id=5,
                      oid=wr.Oid.GEN_CURRENT_PACKET_FILTER),
         "RNDIS SET req 5 OID_GEN_CURRENT_PACKET_FILTER = DIRECTED|ALL_MULTICAST|BROADCAST"),
        (INBOUND, rq(wr.RndisSetComplete, type=R.SET_COMPLETE, request_id=5),
         "RNDIS SET_COMPLETE req 5 SUCCESS OID_GEN_CURRENT_PACKET_FILTER"),
        (OUTBOUND, rq(wr.RndisSetRequest, bytes(28), type=R.SET, request_id=6, oid=wr.Oid.TCP_OFFLOAD_PARAMETERS),
         "RNDIS SET req 6 OID_TCP_OFFLOAD_PARAMETERS = 28 bytes 00000000000000000000000000000000..."),
        (INBOUND, rq(wr.RndisIndicateStatus, type=R.INDICATE_STATUS, status=wr.RndisStatus.MEDIA_DISCONNECT),
         "RNDIS INDICATE_STATUS MEDIA_DISCONNECT"),
        (INBOUND, rq(wr.RndisIndicateStatus, struct.pack("<I", 400_000), type=R.INDICATE_STATUS,
                     status=wr.RndisStatus.LINK_SPEED_CHANGE), "RNDIS INDICATE_STATUS LINK_SPEED_CHANGE 40 Mbit/s"),
        (INBOUND, rq(wr.RndisKeepaliveRequest, type=R.KEEPALIVE, request_id=9), "RNDIS KEEPALIVE req 9"),
        (OUTBOUND, rq(wr.RndisKeepaliveComplete, type=R.KEEPALIVE_COMPLETE, request_id=9),
         "RNDIS KEEPALIVE_COMPLETE req 9 SUCCESS"),
        (OUTBOUND, rq(wr.RndisResetRequest, type=R.RESET), "RNDIS RESET"),
        (INBOUND, rq(wr.RndisResetComplete, type=R.RESET_COMPLETE, addressing_reset=1),
         "RNDIS RESET_COMPLETE SUCCESS addressing_reset 1"),
        (OUTBOUND, rq(wr.RndisHaltRequest, type=R.HALT, request_id=11), "RNDIS HALT req 11"),
        (INBOUND, rq(wr.RndisPacket, bytes(60), type=R.PACKET, data_offset=36, data_length=60),
         "RNDIS PACKET data 60 ppi 0"),
    ]
    for direction, msg, want in cases:
        text = line(packet_of(msg, direction), dec)
        assert text.endswith(" | " + want), (want, text)


def test_a_packet_with_several_rndis_messages_shows_each_and_a_garbled_length_stops_the_walk() -> None:
    two = (rq(wr.RndisIndicateStatus, type=R.INDICATE_STATUS, status=wr.RndisStatus.MEDIA_CONNECT)
           + rq(wr.RndisKeepaliveRequest, type=R.KEEPALIVE, request_id=4))
    out = Decoder().decode(packet_of(two))
    assert out.line.endswith("| RNDIS INDICATE_STATUS MEDIA_CONNECT | RNDIS KEEPALIVE req 4")
    assert [m["type"] for m in out.fields["rndis"]] == ["INDICATE_STATUS", "KEEPALIVE"]
    liar = struct.pack("<II", R.QUERY_COMPLETE, 4096) + bytes(16)
    assert line(packet_of(liar)).endswith("| RNDIS garbled: length 4096 at offset 0, 24 bytes left")
    short = struct.pack("<II", R.INITIALIZE_COMPLETE, 16) + bytes(8)
    assert line(packet_of(short)).endswith("| RNDIS INITIALIZE_COMPLETE truncated (16 bytes, needs 48)")
    outside = rq(wr.RndisQueryComplete, type=R.QUERY_COMPLETE, request_id=1)
    outside = outside[:16] + struct.pack("<II", 64, 16) + outside[24:]  # info buffer past the message
    assert line(packet_of(outside)).endswith("-> (outside the message)")


def test_frames_show_addresses_ethertype_and_ip() -> None:
    eth = bytes.fromhex("ffffffffffff" "00155d000001") + struct.pack(">H", 0x0800)
    ip = bytes([0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0]) + bytes([198, 18, 0, 2]) + bytes([198, 18, 0, 1])
    rec = Record(LINKTYPE_ETHERNET, IF_FRAMES, 0, OUTBOUND, eth + ip + bytes(64), 98)
    out = Decoder().decode(rec)
    assert out.line.endswith("frame -> host 00:15:5d:00:00:01 > ff:ff:ff:ff:ff:ff IPv4 length 98: "
                             "198.18.0.2 > 198.18.0.1 ICMP")
    assert out.fields["kind"] == "frame" and out.fields["direction"] == "out"
    assert Decoder().decode(Record(LINKTYPE_ETHERNET, IF_FRAMES, 0, INBOUND, b"\x01\x02", 2)).line.endswith(
        "frame <- host runt of 2 bytes")


def test_a_garbled_control_record_is_one_line() -> None:
    rec = ctl(OUTBOUND, nv(wn.NvspInit, type=T.INIT, ver_min=2, ver_max=2))
    bad = Record(rec.linktype, rec.iface, rec.ts_us, rec.direction, rec.data[:-3], rec.orig_len - 3)
    out = Decoder().decode(bad)
    assert "control record garbled: control record lengths 40 + 0 do not match its 37 bytes" in out.line
    assert out.fields["error"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([INBOUND, OUTBOUND]), st.sampled_from([int(t) for t in T] + [0, 999]),
       st.binary(max_size=80), st.sampled_from([int(t) for t in R] + [0x42]), st.binary(max_size=120))
def test_any_message_decodes_to_a_line(direction: int, ntype: int, nrest: bytes, rtype: int, rrest: bytes) -> None:
    """Whatever the bytes, a message decodes to one line: hostile host values never raise."""
    rndis = struct.pack("<II", rtype, 8 + len(rrest)) + rrest
    for rec in (ctl(direction, struct.pack("<I", ntype) + nrest, rndis), ctl(direction, nrest[:3], rrest)):
        out = Decoder().decode(rec)
        assert "\n" not in out.line and out.fields["kind"] == "control"
