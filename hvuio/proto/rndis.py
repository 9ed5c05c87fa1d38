"""RndisGuest: the guest side of RNDIS control on a netvsc channel, sans-IO.

What lives here: the RNDIS control machine — initialize, the bring-up queries and sets, the
caller's own queries and sets, indicate-status turned into events (one with an unusable status
buffer dropped as `IndicationDropped`), host keepalives dropped
unanswered (`KeepaliveDropped`, VMBUS.md §4 item 21), halt — and the validation of every RNDIS message the host sends.

Transport. RNDIS control messages travel inside NVSP "send RNDIS packet" messages (type 107,
channel type CONTROL). Linux points them at a GPA-direct page and DPDK at an IOVA scatter list
(`hn_nvs_send_rndis_ctrl`). hvuio does the same when the NIC has a guest-memory pool (a page of
pinned memory whose guest-physical page number is known, VMBUS.md §3.7) and otherwise copies each
control message into a send-buffer section, as DPDK's data path does for small packets. Every
`Outbound` from this machine therefore carries the RNDIS bytes in `rndis`: NetvscGuest
(proto/netvsc.py) gives it a control page or section (proto/sections.py) and the channel copies
them there and sends `direct()` or `placed(section)`. The host completes the send with an NVSP type-108
completion; fed back as `Inbound(COMPLETION, trans_id, payload)`, it gives `ControlSendComplete`,
which frees the page or section. Replies (initialize/query/set complete, indications) arrive
in the receive buffer; each one, copied out, is fed as `Inbound(RNDIS, rxbuf_trans_id, message)`
(the channel acks the receive-buffer packet itself).

Bring-up, as Linux `rndis_filter_device_add` and DPDK `hn_rndis_attach`/`hn_dev_configure` do it,
one request at a time: INITIALIZE; query permanent MAC, current MAC*, maximum frame size*,
media connect status, link speed*, RSS capabilities* (with `rss`: NVSP >= 5, as Linux),
offload hardware capabilities; set offload parameters; set
the packet filter. (* optional: a failure status gives RequestFailed and bring-up goes on.)
Then RndisConfigured. With `offload=OffloadWanted(...)` the offload parameters are computed from
the host's capabilities reply (`negotiate_offloads`, Linux rndis_netdev_set_hwcaps rules), both
requests are optional (a refusal gives RequestFailed and the NIC runs without offloads) and an
accepted set gives OffloadsConfigured. Offsets in replies count from byte 8 (wire.rndis.RNDIS_OFFSET_BASE).

Usage (NetvscGuest does this: it starts RNDIS when the send buffer is connected)::

    rndis = RndisGuest(ndis_version=ev.ndis_version)      # from NvspReady
    send_all(rndis.start())
    ... rndis.receive(Inbound(...)), rndis.next_event(), rndis.tick(now) as for NvspGuest ...
    rndis.query(Oid.GEN_LINK_SPEED); rndis.set_packet_filter(PacketFilter.PROMISCUOUS)
    send_all(rndis.set_packet_filter(0))                   # closing: wait for its reply, then
    send_all(rndis.halt())                                 # halt, before NvspGuest.stop()

What must not live here: rings, fds, clocks, the data path (RNDIS_PACKET messages, _native/),
send-section accounting (proto/sections.py), routing between NVSP and RNDIS (proto/netvsc.py).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hvuio.errors import LocalProtocolError
from hvuio.proto import limits
from hvuio.proto.events import (
    ControlSendComplete, Halted, Inbound, InboundKind, IndicationDropped, KeepaliveDropped, LinkSpeed,
    LinkStatus, MacAddress, Mtu, NetworkChange, OffloadCaps, OffloadsConfigured, Outbound, QueryResult, RequestFailed,
    RndisConfigured, RndisReady, RssCaps, SetComplete, StatusIndication,
)
from hvuio.proto.machine import Machine, Pending, Reject
from hvuio.proto.offload import OffloadRequest, OffloadWanted, negotiate_offloads
from hvuio.proto.states import RNDIS_TRANSITIONS, RndisInput, RndisState, advance
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

__all__ = ["OffloadRequest", "OffloadWanted", "RndisGuest", "DEFAULT_PACKET_FILTER", "negotiate_offloads"]

#: Linux's default filter (rndis_filter_open: directed, all-multicast, broadcast).
DEFAULT_PACKET_FILTER = (wr.PacketFilter.DIRECTED | wr.PacketFilter.ALL_MULTICAST
                         | wr.PacketFilter.BROADCAST)

_T = wr.NdisOffloadToggle


# Request kinds (the Pending.tag of an RNDIS request).
_INIT, _QUERY, _SET = 1, 2, 3
_KIND_NAME = {_INIT: "initialize", _QUERY: "query", _SET: "set"}
_REPLY_KIND = {wr.RndisType.INITIALIZE_COMPLETE: _INIT, wr.RndisType.QUERY_COMPLETE: _QUERY,
               wr.RndisType.SET_COMPLETE: _SET}
_REPLY_NAME = {wr.RndisType.INITIALIZE_COMPLETE: "RNDIS initialize completion",
               wr.RndisType.QUERY_COMPLETE: "RNDIS query completion",
               wr.RndisType.SET_COMPLETE: "RNDIS set completion"}
_REPLY_MIN = {wr.RndisType.INITIALIZE_COMPLETE: wr.RNDIS_INIT_COMPLETE_MIN_LEN,
              wr.RndisType.QUERY_COMPLETE: ctypes.sizeof(wr.RndisQueryComplete),
              wr.RndisType.SET_COMPLETE: ctypes.sizeof(wr.RndisSetComplete)}


def _rss_caps_input() -> bytes:
    """The query's input buffer: an RSS-capabilities object header, as Linux
    (rndis_filter_query_device) and DPDK (hn_rndis_query_rsscaps) send it."""
    return struct.pack("<BBH", wr.NdisObjectType.RSS_CAPS, wr.NDIS_RSS_CAPS_REV_2,
                       wr.NDIS_RSS_CAPS_SIZE)


@dataclass(slots=True)
class _Step:
    """One bring-up request: a query (info = input buffer) or a set, and what to do with it."""

    kind: int
    oid: int
    info: bytes
    optional: bool
    handle: Callable[[bytes], None] | None  # query: parse the info buffer


@dataclass(slots=True)
class _Request:
    pending: Pending
    oid: int
    step: _Step | None  # None: the caller's own query/set


def _oid_name(oid: int) -> str:
    try:
        return wr.Oid(oid).name
    except ValueError:
        return f"OID {oid:#010x}"


def _status_name(status: int) -> str:
    try:
        return f"{status:#010x} ({wr.RndisStatus(status).name})"
    except ValueError:
        return f"{status:#010x}"


class RndisGuest(Machine):
    """Guest RNDIS control machine. No I/O: bytes in, events and bytes out."""

    _name = "RNDIS"

    def __init__(self, *, ndis_version: int,
                 packet_filter: int | None = DEFAULT_PACKET_FILTER,
                 offload: OffloadRequest | OffloadWanted | None = OffloadRequest(),
                 max_transfer_size: int = limits.RNDIS_MAX_TRANSFER_SIZE,
                 xid_base: int = limits.RNDIS_XID_BASE, first_xid: int | None = None,
                 first_request_id: int = 1, rss: bool = False, nvsp_version: int | None = None) -> None:
        super().__init__(timeout=limits.RNDIS_REPLY_TIMEOUT_S, xid_base=xid_base, first_xid=first_xid)
        if not 0 < first_request_id <= 0xFFFFFFFF:
            raise LocalProtocolError(f"first_request_id {first_request_id!r} is not a u32 > 0")
        if ndis_version not in set(wn.NdisVersion):
            raise LocalProtocolError(f"NDIS version {ndis_version:#x} is not one hvuio knows")
        if nvsp_version is not None and nvsp_version not in set(wn.NvspVersion):
            raise LocalProtocolError(f"NVSP version {nvsp_version:#x} is not one hvuio knows")
        if packet_filter is not None and not (0 <= packet_filter <= 0xFFFFFFFF):
            raise LocalProtocolError(f"packet filter {packet_filter!r} is not a u32")
        if not (0 < max_transfer_size <= 0xFFFFFFFF):
            raise LocalProtocolError(f"max_transfer_size {max_transfer_size!r} is not a u32 > 0")
        self._ndis_version = ndis_version
        self._packet_filter = packet_filter
        self._offload = offload
        self._max_transfer = max_transfer_size
        self._state = RndisState.IDLE
        self._next_rid = first_request_id
        self._requests: dict[int, _Request] = {}  # RNDIS request id -> request
        self._plan: list[_Step] = []
        #: ask OID_GEN_RECEIVE_SCALE_CAPABILITIES in bring-up (Linux does from NVSP 5 on)
        self._rss = rss
        #: the negotiated NVSP version: it picks the capabilities query's object header (None: the
        #: lowest NVSP version that announces `ndis_version`, wire.nvsp.ndis_version_for)
        self._nvsp_version = nvsp_version if nvsp_version is not None else (
            wn.NvspVersion.V5 if ndis_version >= wn.NdisVersion.V6_30 else wn.NvspVersion.V4)

    @property
    def state(self) -> RndisState:
        return self._state

    @property
    def requests_outstanding(self) -> int:
        """RNDIS requests sent and not answered yet (bring-up steps and the caller's own)."""
        return len(self._requests)

    @property
    def next_request_id(self) -> int:
        """The RNDIS request id the next request will carry (for a successor machine)."""
        return self._next_rid

    def _set_error_state(self) -> None:
        self._state = RndisState.ERROR

    def _move(self, inp: RndisInput) -> None:
        self._state = advance(RNDIS_TRANSITIONS, self._state, inp)

    def _all_pending(self) -> list[Pending]:
        return [r.pending for r in self._requests.values()] + list(self._awaiting.values())

    # -- commands ---------------------------------------------------------------------------------

    def start(self) -> list[Outbound]:
        """INITIALIZE; the bring-up steps follow as replies arrive."""
        def go() -> list[Outbound]:
            self._move(RndisInput.START)
            self._plan = self._bring_up_plan()
            rid = self._rid()
            msg = wr.RndisInitRequest(
                type=wr.RndisType.INITIALIZE, length=ctypes.sizeof(wr.RndisInitRequest),
                request_id=rid, major_version=wr.RNDIS_MAJOR_VERSION,
                minor_version=wr.RNDIS_MINOR_VERSION, max_transfer_size=self._max_transfer)
            self._track(rid, _INIT, 0, None, "initialize")
            return [self._send(_raw(msg))]
        return self._run(go)

    def query(self, oid: int, info: bytes = b"") -> list[Outbound]:
        """Query `oid` (READY only): QueryResult(oid, data) or RequestFailed(oid, status)."""
        return self._run(lambda: self._user_request(_QUERY, oid, info))

    def set(self, oid: int, info: bytes) -> list[Outbound]:
        """Set `oid` to `info` (READY only): SetComplete(oid) or RequestFailed(oid, status)."""
        return self._run(lambda: self._user_request(_SET, oid, info))

    def set_packet_filter(self, bits: int) -> list[Outbound]:
        return self.set(wr.Oid.GEN_CURRENT_PACKET_FILTER, struct.pack("<I", bits))

    def halt(self) -> list[Outbound]:
        """HALT (no RNDIS reply; only the send completion). Outstanding requests are dropped."""
        def go() -> list[Outbound]:
            self._move(RndisInput.HALT)
            self._requests.clear()
            self._plan = []
            msg = wr.RndisHaltRequest(type=wr.RndisType.HALT,
                                      length=ctypes.sizeof(wr.RndisHaltRequest),
                                      request_id=self._rid())
            self._events.append(Halted())
            return [self._send(_raw(msg))]
        return self._run(go)

    # -- the single receive entry point -----------------------------------------------------------

    def receive(self, item: Inbound) -> list[Outbound]:
        """Feed an RNDIS message (kind RNDIS) or the completion of one of our sends."""
        return self._run(lambda: self._receive(item))

    def _receive(self, item: Inbound) -> list[Outbound]:
        if item.kind is InboundKind.INBAND:
            raise LocalProtocolError("in-band NVSP packets go to NvspGuest, not RndisGuest")
        if item.kind is InboundKind.COMPLETION:
            return self._send_completion(item.trans_id, item.payload)
        if self._state is RndisState.IDLE:
            raise Reject("RNDIS: host sent a message before INITIALIZE")
        if self._state is RndisState.HALTED:
            return []  # a message racing the halt; RNDIS is gone
        return self._message(item.payload)

    def _send_completion(self, xid: int, data: bytes) -> list[Outbound]:
        pending = self._awaiting.pop(xid, None)
        what = "NVSP completion of an RNDIS send"
        if pending is None:
            raise Reject(f"{what}: trans_id {xid:#x} matches no outstanding send")
        if len(data) < wn.NvspSendRndisPacketComplete.MIN_LEN:
            raise Reject(f"{what}: length {len(data)} is shorter than "
                         f"{wn.NvspSendRndisPacketComplete.MIN_LEN}")
        msg = wn.from_prefix(wn.NvspSendRndisPacketComplete, data)
        if msg.type != wn.NvspType.SEND_RNDIS_PACKET_COMPLETE:
            raise Reject(f"{what}: type {msg.type} (expected "
                         f"{int(wn.NvspType.SEND_RNDIS_PACKET_COMPLETE)})")
        if msg.status != wn.NvspStatus.SUCCESS:
            raise Reject(f"{what} ({pending.what}): status {msg.status}", refused=True)
        self._events.append(ControlSendComplete(trans_id=xid))
        return []

    def _message(self, data: bytes) -> list[Outbound]:
        if len(data) < wr.RNDIS_HEADER_SIZE:
            raise Reject(f"RNDIS message: length {len(data)} is shorter than the 8-byte header")
        if len(data) > limits.MAX_RNDIS_CONTROL_MESSAGE:
            raise Reject(f"RNDIS message: length {len(data)} exceeds the limit "
                         f"{limits.MAX_RNDIS_CONTROL_MESSAGE}")
        mtype, length = struct.unpack_from("<II", data)
        if not (wr.RNDIS_HEADER_SIZE <= length <= len(data)):
            raise Reject(f"RNDIS message type {mtype:#x}: length field {length} outside "
                         f"[8, {len(data)}] (bytes received)")
        msg = data[:length]
        if mtype in _REPLY_KIND:
            return self._reply(wr.RndisType(mtype), msg)
        if mtype == wr.RndisType.INDICATE_STATUS:
            self._indication(msg)
            return []
        if mtype == wr.RndisType.KEEPALIVE:
            return self._keepalive(msg)
        try:
            name = wr.RndisType(mtype).name
        except ValueError:
            raise Reject(f"RNDIS message: unknown type {mtype:#x}") from None
        raise Reject(f"RNDIS message: type {mtype:#x} ({name}) is not one a host sends "
                     f"on the control path")

    # -- replies ------------------------------------------------------------------------------------

    def _reply(self, mtype: wr.RndisType, msg: bytes) -> list[Outbound]:
        what = _REPLY_NAME[mtype]
        if len(msg) < 12:
            raise Reject(f"{what}: length {len(msg)} is shorter than 12 (no request_id)")
        rid = struct.unpack_from("<I", msg, 8)[0]
        req = self._requests.get(rid)
        if req is None:
            raise Reject(f"{what}: request_id {rid:#x} matches no outstanding request")
        if req.pending.tag != _REPLY_KIND[mtype]:
            raise Reject(f"{what}: request_id {rid:#x} names a "
                         f"{_KIND_NAME[req.pending.tag]} request")
        if len(msg) < _REPLY_MIN[mtype]:
            raise Reject(f"{what}: length {len(msg)} is shorter than {_REPLY_MIN[mtype]}")
        del self._requests[rid]
        if mtype == wr.RndisType.INITIALIZE_COMPLETE:
            self._init_complete(_parse(wr.RndisInitComplete, msg))
            return self._next_step()
        status = struct.unpack_from("<I", msg, 12)[0]
        if status != wr.RndisStatus.SUCCESS:
            if req.step is not None and not req.step.optional:
                raise Reject(f"{what} for {_oid_name(req.oid)}: status {_status_name(status)}",
                             refused=True)
            self._events.append(RequestFailed(oid=req.oid, status=status))
        elif mtype == wr.RndisType.SET_COMPLETE:
            if req.step is not None and req.step.handle is not None:
                req.step.handle(b"")
            self._events.append(SetComplete(oid=req.oid))
        else:
            info = self._info_buffer(_parse(wr.RndisQueryComplete, msg), msg, req.oid)
            if req.step is not None and req.step.handle is not None:
                req.step.handle(info)
            else:
                self._events.append(QueryResult(oid=req.oid, data=info))
        if req.step is None:
            self._move(RndisInput.REPLY)
            return []
        return self._next_step()

    def _init_complete(self, c: wr.RndisInitComplete) -> None:
        what = "RNDIS initialize completion"
        if c.status != wr.RndisStatus.SUCCESS:
            raise Reject(f"{what}: status {_status_name(c.status)}", refused=True)
        if c.medium != wr.RndisMedium.MEDIUM_802_3:
            raise Reject(f"{what}: medium {c.medium:#x} is not 802.3 (0)")
        if c.alignment_shift > limits.MAX_RNDIS_ALIGNMENT_SHIFT:
            raise Reject(f"{what}: alignment_shift {c.alignment_shift} exceeds "
                         f"{limits.MAX_RNDIS_ALIGNMENT_SHIFT}")
        self._move(RndisInput.INIT_COMPLETED)
        self._events.append(RndisReady(
            major_version=c.major_version, minor_version=c.minor_version,
            max_packets_per_message=c.max_packets_per_message,
            max_transfer_size=c.max_transfer_size, alignment=1 << c.alignment_shift))

    def _info_buffer(self, c: wr.RndisQueryComplete, msg: bytes, oid: int) -> bytes:
        what = f"RNDIS query completion for {_oid_name(oid)}"
        length, offset = c.info_buffer_length, c.info_buffer_offset
        if length == 0:
            return b""
        start = wr.RNDIS_OFFSET_BASE + offset
        if start < ctypes.sizeof(wr.RndisQueryComplete):
            raise Reject(f"{what}: info_buffer_offset {offset:#x} points into the 24-byte head")
        if start + length > len(msg):
            raise Reject(f"{what}: info_buffer_offset {offset:#x} + length {length:#x} exceeds "
                         f"message length {len(msg):#x}")
        return msg[start:start + length]

    def _indication(self, msg: bytes) -> None:
        what = "RNDIS indicate-status"
        head_len = ctypes.sizeof(wr.RndisIndicateStatus)
        if len(msg) < head_len:
            raise Reject(f"{what}: length {len(msg)} is shorter than {head_len}")
        m = _parse(wr.RndisIndicateStatus, msg)
        data = b""
        if m.status_buffer_length:
            start = wr.RNDIS_OFFSET_BASE + m.status_buffer_offset
            if start < head_len:
                raise Reject(f"{what}: status_buffer_offset {m.status_buffer_offset:#x} points "
                             f"into the {head_len}-byte head")
            if start + m.status_buffer_length > len(msg):
                raise Reject(f"{what}: status_buffer_offset {m.status_buffer_offset:#x} + "
                             f"length {m.status_buffer_length:#x} exceeds message length "
                             f"{len(msg):#x}")
            data = msg[start:start + m.status_buffer_length]
        if m.status == wr.RndisStatus.MEDIA_CONNECT:
            self._events.append(LinkStatus(up=True, indicated=True))
        elif m.status == wr.RndisStatus.MEDIA_DISCONNECT:
            self._events.append(LinkStatus(up=False, indicated=True))
        elif m.status == wr.RndisStatus.NETWORK_CHANGE:
            self._events.append(NetworkChange())
        elif m.status == wr.RndisStatus.LINK_SPEED_CHANGE:
            # the new speed, u32 in units of 100 bit/s (Linux rndis_filter_receive_indicate_status);
            # a shorter buffer carries no speed: dropped, not fatal (the host's later ones may be fine)
            if len(data) < 4:
                self._events.append(IndicationDropped(
                    status=m.status, reason=f"link speed change with a {len(data)}-byte status buffer "
                                            "(needs 4)"))
            else:
                self._events.append(LinkSpeed(bits_per_second=struct.unpack_from("<I", data)[0] * 100,
                                              indicated=True))
        else:
            self._events.append(StatusIndication(status=m.status, data=data))

    def _keepalive(self, msg: bytes) -> list[Outbound]:
        # Never answered: a KEEPALIVE_CMPLT is fatal to OpenVMM's worker, and Linux (rndis_filter_receive)
        # and DPDK answer none either; dropped and reported (VMBUS.md §4 item 21).
        if len(msg) < ctypes.sizeof(wr.RndisKeepaliveRequest):
            raise Reject(f"RNDIS keepalive: length {len(msg)} is shorter than 12")
        rid = struct.unpack_from("<I", msg, 8)[0]
        self._events.append(KeepaliveDropped(request_id=rid))
        return []

    # -- bring-up plan ------------------------------------------------------------------------------

    def _bring_up_plan(self) -> list[_Step]:
        O = wr.Oid
        steps = [
            _Step(_QUERY, O.OID_802_3_PERMANENT_ADDRESS, b"", False, self._mac(True)),
            _Step(_QUERY, O.OID_802_3_CURRENT_ADDRESS, b"", True, self._mac(False)),
            _Step(_QUERY, O.GEN_MAXIMUM_FRAME_SIZE, b"", True, self._on_mtu),
            _Step(_QUERY, O.GEN_MEDIA_CONNECT_STATUS, b"", False, self._on_media),
            _Step(_QUERY, O.GEN_LINK_SPEED, b"", True, self._on_speed),
        ]
        if self._rss:   # Linux rndis_filter_device_add: after the link speed, before subchannels
            steps.append(_Step(_QUERY, O.GEN_RECEIVE_SCALE_CAPABILITIES, _rss_caps_input(), True,
                               self._on_rss_caps))
        if isinstance(self._offload, OffloadWanted):   # the set follows the caps reply (_on_caps)
            steps.append(_Step(_QUERY, O.TCP_OFFLOAD_HARDWARE_CAPABILITIES, self._caps_input(),
                               True, self._on_caps))
        elif self._offload is not None:
            steps.append(_Step(_QUERY, O.TCP_OFFLOAD_HARDWARE_CAPABILITIES, self._caps_input(),
                               False, self._on_caps))
            steps.append(_Step(_SET, O.TCP_OFFLOAD_PARAMETERS,
                               self._offload.encode(self._ndis_version), False, None))
        if self._packet_filter is not None:
            steps.append(_Step(_SET, O.GEN_CURRENT_PACKET_FILTER,
                               struct.pack("<I", self._packet_filter), False, None))
        return steps

    def _next_step(self) -> list[Outbound]:
        if not self._plan:
            self._move(RndisInput.CONFIGURED)
            self._events.append(RndisConfigured())
            return []
        if self._state is RndisState.CONFIGURING:
            self._move(RndisInput.STEP_COMPLETED)
        step = self._plan.pop(0)
        return [self._request(step.kind, step.oid, step.info, step)]

    def _caps_input(self) -> bytes:
        """The capabilities query's input: an offload object header whose revision and size follow
        the NVSP version, as Linux's rndis_filter_query_device does for
        OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES (VMBUS.md §4.23): revision 3 and the full size from
        NVSP 5, revision 2 and the NDIS 6.1 size on NVSP 4, revision 1 and the NDIS 6.0 size below."""
        caps = wr.NdisOffload()
        caps.header.type = wr.NdisObjectType.OFFLOAD
        if self._nvsp_version >= wn.NvspVersion.V5:
            caps.header.revision, size = wr.NDIS_OFFLOAD_REV_3, wr.NDIS_OFFLOAD_SIZE
        elif self._nvsp_version >= wn.NvspVersion.V4:
            caps.header.revision, size = wr.NDIS_OFFLOAD_REV_2, wr.NDIS_OFFLOAD_SIZE_6_1
        else:
            caps.header.revision, size = wr.NDIS_OFFLOAD_REV_1, wr.NDIS_OFFLOAD_SIZE_6_0
        caps.header.size = size
        return bytes(memoryview(caps).cast("B"))[:size]

    def _mac(self, permanent: bool) -> Callable[[bytes], None]:
        oid = wr.Oid.OID_802_3_PERMANENT_ADDRESS if permanent else wr.Oid.OID_802_3_CURRENT_ADDRESS

        def handle(info: bytes) -> None:
            _need_len(info, 6, oid)
            self._events.append(MacAddress(mac=info, permanent=permanent))
        return handle

    def _on_mtu(self, info: bytes) -> None:
        value = _u32_info(info, wr.Oid.GEN_MAXIMUM_FRAME_SIZE)
        if not (limits.MIN_MTU <= value <= limits.MAX_MTU):
            raise Reject(f"RNDIS query completion for GEN_MAXIMUM_FRAME_SIZE: value {value} "
                         f"outside [{limits.MIN_MTU}, {limits.MAX_MTU}]")
        self._events.append(Mtu(mtu=value))

    def _on_media(self, info: bytes) -> None:
        value = _u32_info(info, wr.Oid.GEN_MEDIA_CONNECT_STATUS)
        if value not in (wr.MediaState.CONNECTED, wr.MediaState.DISCONNECTED):
            raise Reject(f"RNDIS query completion for GEN_MEDIA_CONNECT_STATUS: value {value:#x} "
                         f"is neither 0 (connected) nor 1 (disconnected)")
        self._events.append(LinkStatus(up=value == wr.MediaState.CONNECTED))

    def _on_speed(self, info: bytes) -> None:
        value = _u32_info(info, wr.Oid.GEN_LINK_SPEED)  # in units of 100 bit/s
        self._events.append(LinkSpeed(bits_per_second=value * 100))

    def _on_rss_caps(self, info: bytes) -> None:
        what = "RNDIS query completion for GEN_RECEIVE_SCALE_CAPABILITIES"
        need = wr.NdisRssCaps.num_receive_queues.offset + 4
        if len(info) < need:
            raise Reject(f"{what}: info buffer of {len(info)} bytes is shorter than {need}")
        otype = info[0]
        if otype != wr.NdisObjectType.RSS_CAPS:
            raise Reject(f"{what}: object type {otype:#x} is not {int(wr.NdisObjectType.RSS_CAPS):#x}")
        caps = struct.unpack_from("<I", info, wr.NdisRssCaps.capabilities.offset)[0]
        queues = struct.unpack_from("<I", info, wr.NdisRssCaps.num_receive_queues.offset)[0]
        # the entry count is past the NDIS 6.0 object (16 bytes); a host that ends there names none
        at = wr.NdisRssCaps.num_indirection_entries.offset
        entries = struct.unpack_from("<H", info, at)[0] if len(info) >= at + 2 else 0
        self._events.append(RssCaps(receive_queues=queues, capabilities=caps, table_entries=entries))

    def _on_caps(self, info: bytes) -> None:
        what = "RNDIS query completion for TCP_OFFLOAD_HARDWARE_CAPABILITIES"
        hdr_len = ctypes.sizeof(wr.NdisObjectHeader)
        if len(info) < hdr_len:
            raise Reject(f"{what}: info buffer of {len(info)} bytes has no NDIS object header")
        otype, rev, size = struct.unpack_from("<BBH", info)
        if otype != wr.NdisObjectType.OFFLOAD:
            raise Reject(f"{what}: object type {otype:#x} is not {int(wr.NdisObjectType.OFFLOAD):#x}")
        if rev < wr.NDIS_OFFLOAD_REV_1:
            raise Reject(f"{what}: object revision {rev} is below {wr.NDIS_OFFLOAD_REV_1}")
        if not (wr.NDIS_OFFLOAD_SIZE_6_0 <= size <= min(len(info), wr.NDIS_OFFLOAD_SIZE)):
            raise Reject(f"{what}: object size {size} outside [{wr.NDIS_OFFLOAD_SIZE_6_0}, "
                         f"min(info buffer {len(info)}, {wr.NDIS_OFFLOAD_SIZE})]")
        c = wr.NdisOffload.from_buffer_copy(info[:size] + bytes(wr.NDIS_OFFLOAD_SIZE - size))
        has_rsc = size >= wr.NdisOffload.rsc.offset + ctypes.sizeof(wr.NdisRscOffload)
        caps = OffloadCaps(
            revision=rev, size=size, ip4_tx_csum=c.csum.ip4_tx_csum,
            ip4_rx_csum=c.csum.ip4_rx_csum, ip6_tx_csum=c.csum.ip6_tx_csum,
            ip6_rx_csum=c.csum.ip6_rx_csum, lsov2_ip4_encap=c.lsov2.ip4_encap,
            lsov2_ip4_max_size=c.lsov2.ip4_max_size,
            lsov2_ip4_min_segments=c.lsov2.ip4_min_segments, lsov2_ip6_encap=c.lsov2.ip6_encap,
            lsov2_ip6_max_size=c.lsov2.ip6_max_size,
            lsov2_ip6_min_segments=c.lsov2.ip6_min_segments,
            lsov2_ip6_options=c.lsov2.ip6_options,
            rsc_ip4=has_rsc and c.rsc.ip4 != 0, rsc_ip6=has_rsc and c.rsc.ip6 != 0)
        self._events.append(caps)
        if isinstance(self._offload, OffloadWanted):
            req, lso_max = negotiate_offloads(self._offload, caps, self._ndis_version)

            def accepted(_info: bytes) -> None:
                self._events.append(OffloadsConfigured(
                    ip4_checksum=req.ip4_checksum, tcp4_checksum=req.tcp4_checksum,
                    udp4_checksum=req.udp4_checksum, tcp6_checksum=req.tcp6_checksum,
                    udp6_checksum=req.udp6_checksum, lsov2_ip4=req.lsov2_ip4,
                    lsov2_ip6=req.lsov2_ip6,
                    rsc_ip4=req.rsc_ip4 if self._ndis_version >= wn.NdisVersion.V6_30 else _T.OFF,
                    rsc_ip6=req.rsc_ip6 if self._ndis_version >= wn.NdisVersion.V6_30 else _T.OFF,
                    lso_max_size=lso_max))
            self._plan.insert(0, _Step(_SET, wr.Oid.TCP_OFFLOAD_PARAMETERS,
                                       req.encode(self._ndis_version), True, accepted))

    # -- helpers ------------------------------------------------------------------------------------

    def _user_request(self, kind: int, oid: int, info: bytes) -> list[Outbound]:
        if not (0 <= oid <= 0xFFFFFFFF):
            raise LocalProtocolError(f"OID {oid!r} is not a u32")
        if len(self._requests) >= limits.MAX_OUTSTANDING_RNDIS:
            raise LocalProtocolError(
                f"{limits.MAX_OUTSTANDING_RNDIS} RNDIS requests already outstanding")
        self._move(RndisInput.REQUEST)
        return [self._request(kind, oid, info, None)]

    def _request(self, kind: int, oid: int, info: bytes, step: _Step | None) -> Outbound:
        rid = self._rid()
        head = wr.RndisQueryRequest if kind == _QUERY else wr.RndisSetRequest
        msg = head(type=wr.RndisType.QUERY if kind == _QUERY else wr.RndisType.SET,
                   length=ctypes.sizeof(head) + len(info), request_id=rid, oid=oid,
                   info_buffer_length=len(info),
                   info_buffer_offset=wr.RNDIS_REQUEST_INFO_OFFSET)
        raw = _raw(msg) + info
        if len(raw) > limits.MAX_RNDIS_CONTROL_MESSAGE:
            raise LocalProtocolError(f"RNDIS {_KIND_NAME[kind]} of {len(raw)} bytes exceeds "
                                     f"{limits.MAX_RNDIS_CONTROL_MESSAGE}")
        self._track(rid, kind, oid, step, f"{_KIND_NAME[kind]} {_oid_name(oid)}")
        return self._send(raw)

    def _track(self, rid: int, kind: int, oid: int, step: _Step | None, what: str) -> None:
        self._requests[rid] = _Request(Pending(what=f"RNDIS {what} (request_id {rid:#x})",
                                               tag=kind), oid, step)

    def _send(self, rndis: bytes) -> Outbound:
        xid = self._xid()
        nv = wn.NvspSendRndisPacket(type=wn.NvspType.SEND_RNDIS_PACKET,
                                    channel_type=wn.RndisChannelType.CONTROL,
                                    section_index=wn.SEND_SECTION_NONE, section_size=0)
        mtype = struct.unpack_from("<I", rndis)[0]
        self._awaiting[xid] = Pending(what=f"RNDIS send of type {mtype:#x}", tag=mtype)
        return Outbound(wn.to_bytes(nv), xid, True, rndis)

    def _rid(self) -> int:
        rid = self._next_rid
        self._next_rid = rid + 1 if rid < 0xFFFFFFFF else 1  # never 0 (DPDK hn_rndis_rid)
        return rid


def _raw(msg: ctypes.Structure) -> bytes:
    return bytes(memoryview(msg).cast("B"))


_C = TypeVar("_C", bound=ctypes.Structure)


def _parse(cls: type[_C], msg: bytes) -> _C:
    """The struct `cls` from the start of `msg`; bytes past the end of `msg` read as zero."""
    size = ctypes.sizeof(cls)
    return cls.from_buffer_copy(msg[:size] + bytes(max(0, size - len(msg))))


def _need_len(info: bytes, want: int, oid: int) -> None:
    if len(info) != want:
        raise Reject(f"RNDIS query completion for {_oid_name(oid)}: info_buffer_length "
                     f"{len(info)}, expected {want}")


def _u32_info(info: bytes, oid: int) -> int:
    _need_len(info, 4, oid)
    return int(struct.unpack_from("<I", info)[0])
