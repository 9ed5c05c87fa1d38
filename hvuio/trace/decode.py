"""A trace record -> one readable line and a JSON object (`hvuio trace`, like `tcpdump -v`).

What lives here: `Decoder`, which reads the records of pcapng.read_trace in order and turns each
into a `Decoded` (the line and a dict for `--json`): a frame as its Ethernet addresses, EtherType
and, for IPv4/IPv6, addresses and protocol; a control record as its channel, direction, VMBus
packet type and transaction id, the NVSP message (every type a netvsc guest and host exchange:
init, NDIS version and config, receive/send buffers and their revocation, RNDIS packets and their
completions, VF association, data-path switch, subchannels, indirection table) and each RNDIS
message it carried (every type, queries and sets with their OID names and values, indications
with their status names). The decoder remembers the OID of each RNDIS request id, so a query's
completion shows the value for its OID (`RNDIS QUERY_COMPLETE req 3 OID_802_3_PERMANENT_ADDRESS
-> 00:15:5d:...`). Layouts and names come from hvuio/wire; a message shorter than its layout or a
length that runs past its bytes is shown as such, never trusted.

What must not live here: the file format (pcapng.py), I/O, printing (hvuio/cli/trace.py).
"""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from hvuio.trace.pcapng import INBOUND, LINKTYPE_ETHERNET, OUTBOUND, Record, is_control, parse_control
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr
from hvuio.wire.vmbus import PacketType

_NVSP_VERSIONS: Final = {0x2: "1", 0x30002: "2", 0x40000: "4", 0x50000: "5", 0x60000: "6", 0x60001: "6.1"}
_ETHERTYPES: Final = {0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802.1Q", 0x88CC: "LLDP"}
_IP_PROTOS: Final = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}
_MAC_OIDS: Final = {wr.Oid.OID_802_3_PERMANENT_ADDRESS, wr.Oid.OID_802_3_CURRENT_ADDRESS}
_U32_OIDS: Final = {wr.Oid.GEN_MAXIMUM_FRAME_SIZE, wr.Oid.GEN_MAXIMUM_TOTAL_SIZE}
_NVSP_TYPE_NAMES: Final = {wn.NvspType.SEND_NDIS_VERSION: "NDIS_VERSION", wn.NvspType.SEND_RECV_BUF: "RECV_BUF",
                           wn.NvspType.SEND_RECV_BUF_COMPLETE: "RECV_BUF_COMPLETE",
                           wn.NvspType.SEND_SEND_BUF: "SEND_BUF", wn.NvspType.SEND_SEND_BUF_COMPLETE: "SEND_BUF_COMPLETE",
                           wn.NvspType.SEND_NDIS_CONFIG: "NDIS_CONFIG",
                           wn.NvspType.SEND_VF_ASSOCIATION: "VF_ASSOCIATION",
                           wn.NvspType.SEND_RNDIS_PACKET: "RNDIS_PACKET",
                           wn.NvspType.SEND_RNDIS_PACKET_COMPLETE: "RNDIS_PACKET_COMPLETE"}


@dataclass(frozen=True)
class Decoded:
    """One record: its line, and the same facts as a JSON-ready dict."""

    line: str
    fields: dict[str, Any]


def _name(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"{value:#x}"


def oid_name(oid: int) -> str:
    """`OID_802_3_PERMANENT_ADDRESS`, `OID_GEN_LINK_SPEED`, or the number for an OID we have no name for."""
    name = _name(wr.Oid, oid)
    return name if name.startswith(("OID_", "0x")) else "OID_" + name


def nvsp_version(value: int) -> str:
    """`v6.1`; `unset` for 0xFFFFFFFF (NVSP_INVALID_PROTOCOL_VERSION), which a host leaves in
    INIT_COMPLETE's version field after NVSP 1 (the emulated host does: hvuio/sim/host/nvsp.py
    `_init`)."""
    if value == 0xFFFFFFFF:
        return "unset"
    return "v" + _NVSP_VERSIONS[value] if value in _NVSP_VERSIONS else f"{value:#x}"


def mac(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _struct(cls: type[ctypes.Structure], data: bytes) -> ctypes.Structure | None:
    """`cls` read from the start of `data`, or None when `data` is shorter than it."""
    size = ctypes.sizeof(cls)
    return cls.from_buffer_copy(data[:size]) if len(data) >= size else None


class Decoder:
    """Decodes the records of one trace in order (it keeps RNDIS request id -> OID)."""

    def __init__(self) -> None:
        self._oids: dict[int, int] = {}

    def decode(self, rec: Record) -> Decoded:
        when = datetime.datetime.fromtimestamp(rec.ts_us / 1e6, datetime.timezone.utc).strftime("%H:%M:%S.%f")
        direction = {INBOUND: "in", OUTBOUND: "out"}.get(rec.direction or 0, "?")
        base: dict[str, Any] = {"time_us": rec.ts_us, "direction": direction}
        if rec.linktype == LINKTYPE_ETHERNET and not is_control(rec):
            text, fields = self.frame(rec.data, rec.orig_len)
            base.update(kind="frame", **fields)
            arrow = {"in": "<- host", "out": "-> host"}.get(direction, "?")
            return Decoded(f"{when} frame {arrow} {text}", base)
        if is_control(rec):
            try:
                ctl = parse_control(rec.data)
            except ValueError as err:
                base.update(kind="control", error=str(err))
                return Decoded(f"{when} control record garbled: {err}", base)
            arrow = {INBOUND: "<- host", OUTBOUND: "-> host"}.get(ctl.direction, "?")
            base.update(kind="control", direction={INBOUND: "in", OUTBOUND: "out"}.get(ctl.direction, "?"),
                        channel=ctl.relid, vmbus_type=_name(PacketType, ctl.ptype), trans_id=ctl.trans_id)
            text, nvsp = self.nvsp(ctl.nvsp, ctl.direction == OUTBOUND)
            base["nvsp"] = nvsp
            parts = [text]
            if ctl.rndis:
                msgs = self.rndis_all(ctl.rndis)
                base["rndis"] = [m for _, m in msgs]
                parts += [t for t, _ in msgs]
            head = f"{when} ch{ctl.relid} {_name(PacketType, ctl.ptype).lower()} tid {ctl.trans_id:#x} {arrow}"
            return Decoded(f"{head} " + " | ".join(parts), base)
        base.update(kind="unknown", linktype=rec.linktype, length=len(rec.data))
        return Decoded(f"{when} link type {rec.linktype}: {len(rec.data)} bytes", base)

    # ---- frames -----------------------------------------------------------------------------------

    @staticmethod
    def frame(data: bytes, orig_len: int) -> tuple[str, dict[str, Any]]:
        fields: dict[str, Any] = {"length": orig_len}
        if len(data) < 14:
            return f"runt of {len(data)} bytes", fields
        dst, src, etype = data[0:6], data[6:12], struct.unpack_from(">H", data, 12)[0]
        fields.update(src=mac(src), dst=mac(dst), ethertype=_ETHERTYPES.get(etype, f"{etype:#06x}"))
        text = f"{mac(src)} > {mac(dst)} {fields['ethertype']} length {orig_len}"
        l3 = data[14:]
        if etype == 0x0800 and len(l3) >= 20 and l3[0] >> 4 == 4:
            s, d = ipaddress.IPv4Address(l3[12:16]), ipaddress.IPv4Address(l3[16:20])
            proto = _IP_PROTOS.get(l3[9], str(l3[9]))
            fields.update(ip_src=str(s), ip_dst=str(d), protocol=proto)
            text += f": {s} > {d} {proto}"
        elif etype == 0x86DD and len(l3) >= 40:
            s6, d6 = ipaddress.IPv6Address(l3[8:24]), ipaddress.IPv6Address(l3[24:40])
            proto = _IP_PROTOS.get(l3[6], str(l3[6]))
            fields.update(ip_src=str(s6), ip_dst=str(d6), protocol=proto)
            text += f": {s6} > {d6} {proto}"
        return text, fields

    # ---- NVSP -------------------------------------------------------------------------------------

    def nvsp(self, data: bytes, outbound: bool) -> tuple[str, dict[str, Any]]:
        """One NVSP message; `outbound`: sent by the guest (a subchannel request, not its reply)."""
        if len(data) < 4:
            return f"NVSP message of {len(data)} bytes (no type)", {"error": "short", "length": len(data)}
        mtype = struct.unpack_from("<I", data)[0]
        name = _NVSP_TYPE_NAMES.get(mtype, _name(wn.NvspType, mtype))
        f: dict[str, Any] = {"type": name}
        T = wn.NvspType
        layouts: dict[int, type[wn.NvspStruct]] = {
            T.INIT: wn.NvspInit, T.INIT_COMPLETE: wn.NvspInitComplete, T.SEND_NDIS_VERSION: wn.NvspNdisVersion,
            T.SEND_RECV_BUF: wn.NvspRecvBufConnect, T.SEND_RECV_BUF_COMPLETE: wn.NvspRecvBufComplete,
            T.REVOKE_RECV_BUF: wn.NvspRevokeRecvBuf, T.SEND_SEND_BUF: wn.NvspSendBufConnect,
            T.SEND_SEND_BUF_COMPLETE: wn.NvspSendBufComplete, T.REVOKE_SEND_BUF: wn.NvspRevokeSendBuf,
            T.SEND_RNDIS_PACKET: wn.NvspSendRndisPacket, T.SEND_RNDIS_PACKET_COMPLETE: wn.NvspSendRndisPacketComplete,
            T.SEND_NDIS_CONFIG: wn.NvspNdisConfig, T.SEND_VF_ASSOCIATION: wn.NvspVfAssociation,
            T.SWITCH_DATA_PATH: wn.NvspSwitchDatapath, T.SEND_INDIRECTION_TABLE: wn.NvspIndirectionTable,
            T.SUBCHANNEL: wn.NvspSubchannelRequest if outbound else wn.NvspSubchannelComplete}
        layout = layouts.get(mtype)
        if layout is None:
            return f"NVSP type {mtype} ({len(data)} bytes)", {"type": mtype, "length": len(data)}
        m: Any = wn.from_prefix(layout, data) if len(data) >= layout.MIN_LEN else None
        if m is None:
            return (f"NVSP {name} truncated ({len(data)} bytes, needs {layout.MIN_LEN})",
                    {**f, "error": "truncated", "length": len(data)})
        def status(v: int) -> str:
            return _name(wn.NvspStatus, v)

        if mtype == T.INIT:
            f.update(ver_min=nvsp_version(m.ver_min), ver_max=nvsp_version(m.ver_max))
            vers = f["ver_min"] if m.ver_min == m.ver_max else f"{f['ver_min']}..{f['ver_max']}"
            return f"NVSP INIT {vers}", f
        if mtype == T.INIT_COMPLETE:
            f.update(version=nvsp_version(m.negotiated_version), status=status(m.status),
                     max_mdl_chain_len=m.max_mdl_chain_len)
            return f"NVSP INIT_COMPLETE {f['status']} version {f['version']}", f
        if mtype == T.SEND_NDIS_VERSION:
            f.update(ndis=f"{m.ndis_major}.{m.ndis_minor}")
            return f"NVSP NDIS_VERSION {f['ndis']}", f
        if mtype == T.SEND_NDIS_CONFIG:
            caps = [c.name for c in wn.NdisConfigCap if c.name and m.capabilities & c]
            f.update(mtu=m.mtu, capabilities=caps)
            return f"NVSP NDIS_CONFIG mtu {m.mtu} caps {','.join(caps) or 'none'}", f
        if mtype in (T.SEND_RECV_BUF, T.SEND_SEND_BUF):
            f.update(gpadl=m.gpadl, id=m.id)
            return f"NVSP {name} gpadl {m.gpadl:#x} id {m.id:#x}", f
        if mtype == T.SEND_RECV_BUF_COMPLETE:
            f.update(status=status(m.status), sections=m.num_sections)
            text = f"NVSP RECV_BUF_COMPLETE {f['status']} sections {m.num_sections}"
            if m.num_sections:
                s = m.sections[0]
                f.update(section_size=s.sub_alloc_size, section_count=s.num_sub_allocs)
                text += f" ({s.num_sub_allocs} x {s.sub_alloc_size})"
            return text, f
        if mtype == T.SEND_SEND_BUF_COMPLETE:
            f.update(status=status(m.status), section_size=m.section_size)
            return f"NVSP SEND_BUF_COMPLETE {f['status']} section_size {m.section_size}", f
        if mtype in (T.REVOKE_RECV_BUF, T.REVOKE_SEND_BUF):
            f.update(id=m.id)
            return f"NVSP {name} id {m.id:#x}", f
        if mtype == T.SEND_RNDIS_PACKET:
            chan = _name(wn.RndisChannelType, m.channel_type).lower()
            none = m.section_index == wn.SEND_SECTION_NONE  # GPA-direct, or a transfer-page packet
            where = "no section" if none else f"section {m.section_index}"
            f.update(channel_type=chan, section=None if none else m.section_index, size=m.section_size)
            return f"NVSP RNDIS_PACKET {chan} {where} size {m.section_size}", f
        if mtype == T.SEND_RNDIS_PACKET_COMPLETE:
            f.update(status=status(m.status))
            return f"NVSP RNDIS_PACKET_COMPLETE {f['status']}", f
        if mtype == T.SEND_VF_ASSOCIATION:
            f.update(allocated=bool(m.allocated), serial=m.serial)
            return f"NVSP VF_ASSOCIATION {'allocated' if m.allocated else 'none'} serial {m.serial:#x}", f
        if mtype == T.SWITCH_DATA_PATH:
            f.update(datapath=_name(wn.Datapath, m.active_datapath).lower())
            return f"NVSP SWITCH_DATA_PATH {f['datapath']}", f
        if mtype == T.SUBCHANNEL and outbound:
            f.update(op=_name(wn.SubchannelOp, m.op).lower(), count=m.count)
            return f"NVSP SUBCHANNEL {f['op']} {m.count}", f
        if mtype == T.SUBCHANNEL:
            f.update(type="SUBCHANNEL_COMPLETE", status=status(m.status), count=m.count)
            return f"NVSP SUBCHANNEL_COMPLETE {f['status']} count {m.count}", f
        # send indirection table: count u32 entries at `offset` of the message, inside it
        end = m.offset + 4 * m.count
        table = (list(struct.unpack_from(f"<{m.count}I", data, m.offset))
                 if m.offset >= 12 and m.count <= 128 and end <= len(data) else None)
        f.update(count=m.count, offset=m.offset, table=table)
        shown = " ".join(map(str, table)) if table is not None else "(outside the message)"
        return f"NVSP SEND_INDIRECTION_TABLE {m.count} entries: {shown}", f

    # ---- RNDIS ------------------------------------------------------------------------------------

    def rndis_all(self, data: bytes) -> list[tuple[str, dict[str, Any]]]:
        """Each RNDIS message in `data` (they follow each other, each with its own length)."""
        out: list[tuple[str, dict[str, Any]]] = []
        pos = 0
        while pos < len(data):
            left = len(data) - pos
            mlen = struct.unpack_from("<I", data, pos + 4)[0] if left >= 8 else 0
            if not 8 <= mlen <= left:
                out.append((f"RNDIS garbled: length {mlen} at offset {pos}, {left} bytes left",
                            {"error": "length", "offset": pos, "length": mlen}))
                break
            out.append(self.rndis(data[pos:pos + mlen]))
            pos += mlen
        return out

    def rndis(self, msg: bytes) -> tuple[str, dict[str, Any]]:
        """One RNDIS message (its length already checked to be its own)."""
        R = wr.RndisType
        mtype = struct.unpack_from("<I", msg)[0]
        name = _name(R, mtype)
        f: dict[str, Any] = {"type": name}
        layouts: dict[int, type[ctypes.Structure]] = {
            R.PACKET: wr.RndisPacket, R.INITIALIZE: wr.RndisInitRequest,
            R.INITIALIZE_COMPLETE: wr.RndisInitComplete, R.HALT: wr.RndisHaltRequest,
            R.QUERY: wr.RndisQueryRequest, R.QUERY_COMPLETE: wr.RndisQueryComplete, R.SET: wr.RndisSetRequest,
            R.SET_COMPLETE: wr.RndisSetComplete, R.RESET: wr.RndisResetRequest,
            R.RESET_COMPLETE: wr.RndisResetComplete, R.INDICATE_STATUS: wr.RndisIndicateStatus,
            R.KEEPALIVE: wr.RndisKeepaliveRequest, R.KEEPALIVE_COMPLETE: wr.RndisKeepaliveComplete}
        layout = layouts.get(mtype)
        if layout is None:
            return f"RNDIS type {mtype:#x} ({len(msg)} bytes)", {"type": mtype, "length": len(msg)}
        need = wr.RNDIS_INIT_COMPLETE_MIN_LEN if mtype == R.INITIALIZE_COMPLETE else ctypes.sizeof(layout)
        if len(msg) < need:
            return f"RNDIS {name} truncated ({len(msg)} bytes, needs {need})", {**f, "error": "truncated"}
        m: Any = layout.from_buffer_copy(msg[:ctypes.sizeof(layout)].ljust(ctypes.sizeof(layout), b"\0"))
        def status(v: int) -> str:
            return _name(wr.RndisStatus, v)

        if mtype == R.PACKET:
            f.update(data_length=m.data_length, ppi_length=m.ppi_length)
            return f"RNDIS PACKET data {m.data_length} ppi {m.ppi_length}", f
        if mtype == R.INITIALIZE:
            f.update(request_id=m.request_id, version=f"{m.major_version}.{m.minor_version}",
                     max_transfer_size=m.max_transfer_size)
            return f"RNDIS INITIALIZE req {m.request_id} v{f['version']} max_xfer {m.max_transfer_size}", f
        if mtype == R.INITIALIZE_COMPLETE:
            f.update(request_id=m.request_id, status=status(m.status), version=f"{m.major_version}.{m.minor_version}",
                     max_packets_per_message=m.max_packets_per_message, max_transfer_size=m.max_transfer_size,
                     alignment_shift=m.alignment_shift)
            return (f"RNDIS INITIALIZE_COMPLETE req {m.request_id} {f['status']} v{f['version']} "
                    f"max_pkts {m.max_packets_per_message} max_xfer {m.max_transfer_size} "
                    f"align 2^{m.alignment_shift}"), f
        if mtype in (R.HALT, R.KEEPALIVE):
            f.update(request_id=m.request_id)
            return f"RNDIS {name} req {m.request_id}", f
        if mtype == R.KEEPALIVE_COMPLETE:
            f.update(request_id=m.request_id, status=status(m.status))
            return f"RNDIS KEEPALIVE_COMPLETE req {m.request_id} {f['status']}", f
        if mtype in (R.QUERY, R.SET):
            self._oids[m.request_id] = m.oid
            f.update(request_id=m.request_id, oid=oid_name(m.oid))
            text = f"RNDIS {name} req {m.request_id} {f['oid']}"
            if mtype == R.SET:
                value = self._info(msg, m.info_buffer_offset, m.info_buffer_length)
                f["value"] = self._value(m.oid, value)
                text += f" = {f['value']}"
            return text, f
        if mtype == R.QUERY_COMPLETE:
            oid = self._oids.pop(m.request_id, None)
            value = self._info(msg, m.info_buffer_offset, m.info_buffer_length)
            f.update(request_id=m.request_id, status=status(m.status),
                     oid=None if oid is None else oid_name(oid), value=self._value(oid, value))
            text = f"RNDIS QUERY_COMPLETE req {m.request_id} {f['status']}"
            if f["oid"] is not None:
                text += f" {f['oid']}"
            return text + (f" -> {f['value']}" if m.status == wr.RndisStatus.SUCCESS else ""), f
        if mtype == R.SET_COMPLETE:
            oid = self._oids.pop(m.request_id, None)
            f.update(request_id=m.request_id, status=status(m.status), oid=None if oid is None else oid_name(oid))
            return f"RNDIS SET_COMPLETE req {m.request_id} {f['status']}" + (f" {f['oid']}" if oid is not None else ""), f
        if mtype == R.RESET:
            return "RNDIS RESET", f
        if mtype == R.RESET_COMPLETE:
            f.update(status=status(m.status), addressing_reset=m.addressing_reset)
            return f"RNDIS RESET_COMPLETE {f['status']} addressing_reset {m.addressing_reset}", f
        # status indication
        f.update(status=status(m.status), buffer_length=m.status_buffer_length)
        extra = ""
        if m.status == wr.RndisStatus.LINK_SPEED_CHANGE:
            value = self._info(msg, m.status_buffer_offset, m.status_buffer_length)
            if value is not None and len(value) >= 4:
                f["link_speed_bps"] = struct.unpack_from("<I", value)[0] * 100
                extra = f" {f['link_speed_bps'] // 1_000_000} Mbit/s"
        return f"RNDIS INDICATE_STATUS {f['status']}{extra}", f

    @staticmethod
    def _info(msg: bytes, offset: int, length: int) -> bytes | None:
        """The information buffer at `offset` (counted from byte 8), None when outside the message."""
        start = wr.RNDIS_OFFSET_BASE + offset
        if length == 0:
            return b""
        if offset == 0 or start + length > len(msg):
            return None
        return msg[start:start + length]

    @staticmethod
    def _value(oid: int | None, value: bytes | None) -> str:
        if value is None:
            return "(outside the message)"
        if oid in _MAC_OIDS and len(value) == 6:
            return mac(value)
        if oid == wr.Oid.OID_802_3_MULTICAST_LIST and len(value) % 6 == 0:
            return " ".join(mac(value[i:i + 6]) for i in range(0, len(value), 6)) or "(empty)"
        if len(value) == 4:
            n = struct.unpack("<I", value)[0]
            if oid == wr.Oid.GEN_LINK_SPEED:
                return f"{n * 100 // 1_000_000} Mbit/s"
            if oid == wr.Oid.GEN_MEDIA_CONNECT_STATUS:
                return _name(wr.MediaState, n).lower()
            if oid == wr.Oid.GEN_CURRENT_PACKET_FILTER:
                return "|".join(b.name for b in wr.PacketFilter if b.name and b and n & b) or "NONE"
            if oid in _U32_OIDS or oid is None:
                return str(n)
        return f"{len(value)} bytes" + (f" {value[:16].hex()}" + ("..." if len(value) > 16 else "") if value else "")
