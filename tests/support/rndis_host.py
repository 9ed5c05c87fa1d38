"""Host RNDIS messages for the guest's sans-IO RndisGuest, and `Host`, a scripted host.

Replies are packed with struct from the golden numbers (message types, status codes, OIDs, DPDK
struct offsets), never with hvuio.wire, so an encoder bug and a decoder bug cannot cancel out.
`Host` answers each request of a machine by OID from a table (permanent and current MAC, offload
capabilities, MTU, link state and speed unless told otherwise) and records what it saw. Used by
tests/proto (the machines alone and in pairs) and tests/nic (the hostile-host channel tests).
"""

from __future__ import annotations

import struct
from typing import Any

from hvuio.proto.events import NEED_DATA, Inbound, InboundKind, Outbound
from hvuio.proto.rndis import RndisGuest
from support.golden import GOLDEN, off, pack, size

C = GOLDEN["constants"]
MT = C["rndis_msg_type"]
RS = C["rndis_status"]
OID = C["ndis_oid"]
NVT = C["nvs_msg_type"]
NDIS = C["ndis_version"]
NOFF = C["ndis_offload"]
SUCCESS, FAILURE, NOT_SUPPORTED = (RS["RNDIS_STATUS_SUCCESS"], RS["RNDIS_STATUS_FAILURE"],
                                   RS["RNDIS_STATUS_NOT_SUPPORTED"])
BASE = C["rndis_offset_bases"]["RNDIS_QUERY_COMP_INFOBUFOFFSET_ABS(0)"]
PERM_MAC = bytes.fromhex("00155d010203")
CUR_MAC = bytes.fromhex("00155d0a0b0c")


def init_cmplt(rid: int, status: int = SUCCESS, align: int = 3, medium: int = 0) -> bytes:
    return pack("rndis_init_comp", type=MT["RNDIS_INITIALIZE_CMPLT"],
                len=size("rndis_init_comp"), rid=rid, status=status, ver_major=1, ver_minor=0,
                devflags=1, medium=medium, pktmaxcnt=8, pktmaxsz=0x4000, align=align)


def query_cmplt(rid: int, info: bytes, status: int = SUCCESS, offset: int | None = None,
                length: int | None = None) -> bytes:
    head = size("rndis_query_comp")
    return pack("rndis_query_comp", type=MT["RNDIS_QUERY_CMPLT"], len=head + len(info), rid=rid,
                status=status, infobuflen=len(info) if length is None else length,
                infobufoffset=(head - BASE) if offset is None else offset) + info


def set_cmplt(rid: int, status: int = SUCCESS) -> bytes:
    return pack("rndis_set_comp", type=MT["RNDIS_SET_CMPLT"], len=size("rndis_set_comp"),
                rid=rid, status=status)


def indicate(status: int, buf: bytes = b"", offset: int | None = None) -> bytes:
    head = size("rndis_status_msg")
    return pack("rndis_status_msg", type=MT["RNDIS_INDICATE_STATUS_MSG"], len=head + len(buf),
                status=status, stbuflen=len(buf),
                stbufoffset=(head - BASE) if offset is None else offset) + buf


def nvs_ack(status: int = 1, mtype: int = NVT["NVS_TYPE_RNDIS_ACK"]) -> bytes:
    return pack("hn_nvs_rndis_ack", type=mtype, status=status)


def offload_caps(rev: int = 3, objsize: int = NOFF["NDIS_OFFLOAD_SIZE"],
                 objtype: int = C["ndis_objtype"]["NDIS_OBJTYPE_OFFLOAD"]) -> bytes:
    raw = bytearray(size("ndis_offload"))
    struct.pack_into("<BBH", raw, 0, objtype, rev, objsize)
    csum = off("ndis_offload", "ndis_csum")
    struct.pack_into("<I", raw, csum + off("ndis_csum_offload", "ndis_ip4_txcsum"), 0x115)
    struct.pack_into("<I", raw, csum + off("ndis_csum_offload", "ndis_ip6_rxcsum"), 0x55)
    lso = off("ndis_offload", "ndis_lsov2")
    struct.pack_into("<I", raw, lso + off("ndis_lsov2_offload", "ndis_ip4_maxsz"), 62780)
    struct.pack_into("<I", raw, lso + off("ndis_lsov2_offload", "ndis_ip4_encap"), 2)
    raw[off("ndis_offload", "ndis_rsc")] = 1
    return bytes(raw[:max(objsize, 4)])


def rndis_of(out: Outbound) -> bytes:
    assert out.rndis is not None
    return out.rndis


def rx(msg: bytes) -> Inbound:
    return Inbound(InboundKind.RNDIS, 0x77, msg)


def drain(m: RndisGuest) -> list[Any]:
    events = []
    while (ev := m.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


U32 = {OID["OID_GEN_MAXIMUM_FRAME_SIZE"]: 1500, OID["OID_GEN_MEDIA_CONNECT_STATUS"]: 0,
       OID["OID_GEN_LINK_SPEED"]: 100_000_000}


class Host:
    """Answers each request by OID from `answers`; records what it saw."""

    def __init__(self, m: RndisGuest, answers: dict[int, bytes | int] | None = None) -> None:
        self.m = m
        self.answers: dict[int, bytes | int] = {
            OID["OID_802_3_PERMANENT_ADDRESS"]: PERM_MAC,
            OID["OID_802_3_CURRENT_ADDRESS"]: CUR_MAC,
            OID["OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"]: offload_caps(),
            **{k: struct.pack("<I", v) for k, v in U32.items()},
        }
        self.answers.update(answers or {})
        self.seen: list[tuple[int, int, bytes]] = []  # (rndis type, oid, info)

    def answer(self, out: Outbound) -> list[Outbound]:
        """Complete the NVSP send, then reply to the RNDIS message in it."""
        raw = rndis_of(out)
        mtype, length, rid = struct.unpack_from("<III", raw)
        assert length == len(raw)
        self.m.receive(Inbound(InboundKind.COMPLETION, out.trans_id, nvs_ack()))
        if mtype == MT["RNDIS_INITIALIZE_MSG"]:
            self.seen.append((mtype, 0, b""))
            return self.m.receive(rx(init_cmplt(rid)))
        oid, ilen, ioff = struct.unpack_from("<III", raw, 12)
        info = raw[BASE + ioff:BASE + ioff + ilen]
        self.seen.append((mtype, oid, info))
        is_set = mtype == MT["RNDIS_SET_MSG"]
        reply = self.answers.get(oid, SUCCESS if is_set else NOT_SUPPORTED)
        if is_set:
            status = reply if isinstance(reply, int) else SUCCESS
            return self.m.receive(rx(set_cmplt(rid, status)))
        if isinstance(reply, int):
            return self.m.receive(rx(query_cmplt(rid, b"", status=reply)))
        return self.m.receive(rx(query_cmplt(rid, reply)))

    def run(self, outs: list[Outbound]) -> None:
        while outs:
            outs = [n for o in outs for n in self.answer(o)]
