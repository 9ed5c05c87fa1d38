"""Hand-built guest messages and an in-memory environment for the emulated host's tests.

Every guest message is packed here with `struct` from the numbers in tests/golden/wire-layouts.json
(not from hvuio.sim.host.wire), so a misread layout in the host cannot be mirrored by the tests.
This module holds helpers only; tests/sim/test_sim_host_wire.py checks the helpers' own layout
assumptions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from hvuio.sim.host.nvsp import GuestPacket, HostNvsp, HostPacket, Step
from hvuio.sim.host.profile import HostProfile
from support.golden import GOLDEN, size


def c(group: str, name: str) -> int:
    """A constant from the golden file, e.g. c("nvs_msg_type", "NVS_TYPE_INIT")."""
    return int(GOLDEN["constants"][group][name])


T = "nvs_msg_type"
INBAND = c("vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_INBAND")
RXBUF = c("vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_RXBUF")
GPA = c("vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_GPA")
COMP = c("vmbus_chanpkt_type", "VMBUS_CHANPKT_TYPE_COMP")
RC = c("vmbus_chanpkt_flag", "VMBUS_CHANPKT_FLAG_RC")
OK = c("nvs_status", "NVS_STATUS_OK")
FAILED = c("nvs_status", "NVS_STATUS_FAILED")
VERSIONS = sorted(GOLDEN["constants"]["nvs_version"].values())
NVS_V2 = c("nvs_version", "NVS_VERSION_2")
NVS_V4 = c("nvs_version", "NVS_VERSION_4")
NVS_V5 = c("nvs_version", "NVS_VERSION_5")
RXBUF_SIG = c("nvs_misc", "NVS_RXBUF_SIG")
NO_SECTION = c("nvs_misc", "NVS_CHIM_IDX_INVALID")
MSG = "rndis_msg_type"
RST = "rndis_status"
OID = "ndis_oid"
NVSP_SIZE = size("linux:nvsp_message")  # 40

RECV_GPADL = 0xE1E10
SEND_GPADL = 0xE1E11
RECV_SIZE = 128 * 1024
SEND_SIZE = 64 * 1024


def pad(b: bytes) -> bytes:
    return b + bytes(max(0, NVSP_SIZE - len(b)))


# --- NVSP (hn_nvs_* layouts) ----------------------------------------------------------------------

def nvs_init(ver: int, ver_max: int | None = None) -> bytes:
    return pad(struct.pack("<III", c(T, "NVS_TYPE_INIT"), ver, ver if ver_max is None else ver_max))


def nvs_ndis_conf(mtu: int = 1514, caps: int = 0) -> bytes:
    return pad(struct.pack("<IIIQ", c(T, "NVS_TYPE_NDIS_CONF"), mtu, 0, caps))


def nvs_ndis_init(major: int = 6, minor: int = 30) -> bytes:
    return pad(struct.pack("<III", c(T, "NVS_TYPE_NDIS_INIT"), major, minor))


def nvs_rxbuf(gpadl: int = RECV_GPADL, sig: int = RXBUF_SIG) -> bytes:
    return pad(struct.pack("<IIH", c(T, "NVS_TYPE_RXBUF_CONN"), gpadl, sig))


def nvs_chim(gpadl: int = SEND_GPADL) -> bytes:
    return pad(struct.pack("<IIH", c(T, "NVS_TYPE_CHIM_CONN"), gpadl, c("nvs_misc", "NVS_CHIM_SIG")))


def nvs_rndis(mtype: int, index: int, length: int) -> bytes:
    return pad(struct.pack("<IIII", c(T, "NVS_TYPE_RNDIS"), mtype, index, length))


def nvs_rndis_ack(status: int = OK) -> bytes:
    return pad(struct.pack("<II", c(T, "NVS_TYPE_RNDIS_ACK"), status))


def nvs_subch(op: int, count: int) -> bytes:
    return pad(struct.pack("<III", c(T, "NVS_TYPE_SUBCH_REQ"), op, count))


# --- RNDIS (rndis_* layouts, header included) -----------------------------------------------------

def r_init(rid: int, major: int = 1, minor: int = 0, max_xfer: int = 16384) -> bytes:
    return struct.pack("<6I", c(MSG, "RNDIS_INITIALIZE_MSG"), size("rndis_init_req"), rid, major, minor, max_xfer)


def r_query(rid: int, oid: int, info: bytes = b"") -> bytes:
    n = size("rndis_query_req")
    return struct.pack("<7I", c(MSG, "RNDIS_QUERY_MSG"), n + len(info), rid, oid, len(info),
                       c("rndis_misc", "RNDIS_QUERY_REQ_INFOBUFOFFSET"), 0) + info


def r_set(rid: int, oid: int, info: bytes, info_offset: int | None = None) -> bytes:
    n = size("rndis_set_req")
    o = c("rndis_misc", "RNDIS_SET_REQ_INFOBUFOFFSET") if info_offset is None else info_offset
    return struct.pack("<7I", c(MSG, "RNDIS_SET_MSG"), n + len(info), rid, oid, len(info), o, 0) + info


def r_simple(mtype: str, rid: int) -> bytes:
    return struct.pack("<3I", c(MSG, mtype), 12, rid)


def r_keepalive_cmplt(rid: int, status: int = 0) -> bytes:
    return struct.pack("<4I", c(MSG, "RNDIS_KEEPALIVE_CMPLT"), size("rndis_keepalive_comp"), rid, status)


def r_packet(frame: bytes, data_offset: int | None = None, ppi: bytes = b"") -> bytes:
    hdr = size("rndis_packet_msg")
    base = c("rndis_offset_bases", "RNDIS_PACKET_MSG_OFFSET_ABS(0)")
    ppi_off = hdr - base if ppi else 0
    d_off = hdr - base + len(ppi) if data_offset is None else data_offset
    body = struct.pack("<9I", d_off, len(frame), 0, 0, 0, ppi_off, len(ppi), 0, 0)
    msg = body + ppi + frame
    return struct.pack("<II", c(MSG, "RNDIS_PACKET_MSG"), 8 + len(msg)) + msg


FRAME = bytes.fromhex("ffffffffffff00155d0000020806") + bytes(range(46))  # broadcast ARP-sized frame


@dataclass
class Env:
    """A host plus the two shared buffers, with a guest-side transaction id counter."""

    profile: HostProfile = field(default_factory=HostProfile)
    recv: bytearray = field(default_factory=lambda: bytearray(RECV_SIZE))
    send: bytearray = field(default_factory=lambda: bytearray(SEND_SIZE))
    gpa_reader: Any = None
    host: HostNvsp = field(init=False)
    tid: int = 100

    def __post_init__(self) -> None:
        def write(offset: int, data: bytes) -> None:
            assert 0 <= offset and offset + len(data) <= len(self.recv)
            self.recv[offset:offset + len(data)] = data

        def read(offset: int, length: int) -> bytes:
            assert 0 <= offset and offset + length <= len(self.send)
            return bytes(self.send[offset:offset + length])

        self.host = HostNvsp(self.profile, gpadls={RECV_GPADL: len(self.recv), SEND_GPADL: len(self.send)},
                             read_send_buffer=read, write_recv_buffer=write, read_guest_pages=self.gpa_reader)

    def next_tid(self) -> int:
        self.tid += 1
        return self.tid

    def send_nvsp(self, payload: bytes, *, flags: int = RC, tid: int | None = None, channel: int = 0,
                  ptype: int = INBAND, extra: bytes = b"") -> Step:
        t = self.next_tid() if tid is None else tid
        return self.host.receive(GuestPacket(ptype, flags, t, payload, extra, channel))

    def send_rndis(self, msgs: bytes, *, section: int = 0, chan_type: int = 1, channel: int = 0,
                   tid: int | None = None) -> Step:
        sec = 6144
        self.send[section * sec:section * sec + len(msgs)] = msgs
        return self.send_nvsp(nvs_rndis(chan_type, section, len(msgs)), channel=channel, tid=tid)

    def rndis_out(self, step: Step) -> list[bytes]:
        """RNDIS messages the host put in receive sections (transfer-page packets of `step`)."""
        out = []
        for p in step.packets:
            if p.type == RXBUF:
                (count, offset), = p.ranges
                out.append(bytes(self.recv[offset:offset + count]))
        return out

    def ack(self, p: HostPacket, status: int = OK) -> Step:
        return self.host.receive(GuestPacket(COMP, 0, p.trans_id, nvs_rndis_ack(status), b"", p.channel))

    def ack_all(self, step: Step) -> None:
        for p in step.packets:
            if p.type == RXBUF:
                self.ack(p)

    def bring_up(self, version: int | None = None, *, rndis: bool = True, packet_filter: int | None = 0xD) -> None:
        ver = max(self.profile.versions) if version is None else version
        steps = [self.send_nvsp(nvs_init(ver))]
        if ver >= NVS_V2:
            # as Linux: ieee8021q always, SR-IOV and teaming from NVSP 5 on
            caps = c("nvs_ndis_conf_caps", "NVS_NDIS_CONF_VLAN")
            if ver >= NVS_V5:
                caps |= c("nvs_ndis_conf_caps", "NVS_NDIS_CONF_SRIOV") | 0x20
            steps.append(self.send_nvsp(nvs_ndis_conf(1514, caps), flags=0))
        steps.append(self.send_nvsp(nvs_ndis_init(6, 30 if ver >= NVS_V5 else 1), flags=0))
        steps.append(self.send_nvsp(nvs_rxbuf()))
        steps.append(self.send_nvsp(nvs_chim()))
        if rndis:
            s = self.send_rndis(r_init(1))
            self.ack_all(s)
            steps.append(s)
            if packet_filter is not None:
                s = self.send_rndis(r_set(2, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", packet_filter)))
                self.ack_all(s)
        assert not self.host.rejections, self.host.rejections
        assert self.host.state == ("ready" if rndis else "init")


def completions(step: Step) -> list[HostPacket]:
    return [p for p in step.packets if p.type == COMP]


def set_status(env: Env, oid: int, info: bytes, **kw: int) -> tuple[int, list[bytes]]:
    step = env.send_rndis(r_set(77, oid, info, **kw))
    out = env.rndis_out(step)
    env.ack_all(step)
    mtype, _, rid, status = struct.unpack_from("<4I", out[0])
    assert (mtype, rid) == (c(MSG, "RNDIS_SET_CMPLT"), 77)
    return status, out[1:]


def rss_params(table: tuple[int, ...] = (0, 1, 2, 3), *, key_size: int = 40, flags: int = 0,
               hash_info: int = 0x1701, ndis_type: int | None = None, key: bytes = bytes(range(40)),
               ind_size: int | None = None, key_off: int | None = None) -> bytes:
    """NDIS_RECEIVE_SCALE_PARAMETERS as Linux sends it (rndis_set_rss_param_msg): header, table, key."""
    otype = c("ndis_objtype", "NDIS_OBJTYPE_RSS_PARAMS") if ndis_type is None else ndis_type
    hdr = struct.pack("<BBH", otype, 2, c("ndis_rss", "NDIS_RSS_PARAMS_SIZE"))
    size = 4 * len(table) if ind_size is None else ind_size
    body = struct.pack("<HHIHHIHHIIII", flags, 0, hash_info, size, 0, 40, key_size, 0,
                       40 + 4 * len(table) if key_off is None else key_off, 0, 0, 0)
    return hdr + body + struct.pack(f"<{len(table)}I", *table) + key
