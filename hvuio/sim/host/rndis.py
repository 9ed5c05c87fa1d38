"""The emulated host's RNDIS device, sans-IO.

What lives here: `HostRndis`, which takes one guest RNDIS control message (bytes already read out
of the send buffer by nvsp.py) and returns the RNDIS messages the host answers with, and
which parses guest data messages into Ethernet frames; host-initiated messages (media
indications, optional keep-alives) from `set_link` / `tick`; `OffloadState`, the offloads the
guest enabled. The events and `Rejection` records it returns are events.py's.

Behaviour sources ([OV] = microsoft/openvmm vm/devices/net/netvsp/src/lib.rs, the host side;
[RF] = torvalds/linux drivers/net/hyperv/rndis_filter.c, the guest side). Per case:
* INITIALIZE twice, RESET, INDICATE_STATUS from the guest, unknown types, short control messages,
  control messages on a subchannel: [OV] returns a worker error and stops the channel → fault.
* QUERY of an unknown OID / SET of an unknown OID: completion with RNDIS_STATUS_NOT_SUPPORTED [OV].
* SET with a malformed NDIS object: completion with RNDIS_STATUS_INVALID_DATA [OV]
  (`validate_ndis_object_header`); too short a value: RNDIS_STATUS_FAILURE [OV] (access error).
* HALT: no reply [OV]; we additionally stop answering afterwards.
* KEEPALIVE from the guest: KEEPALIVE_CMPLT with success [OV]. KEEPALIVE_CMPLT from the guest:
  [OV] has no case for it (an unknown RNDIS message type ends the worker) → fault. The host sends
  no KEEPALIVE of its own ([OV] has no sender) unless profile.keepalive_interval asks for them.
* Link: OID_GEN_MEDIA_CONNECT_STATUS answers the host's link; no indication at INITIALIZE unless
  profile.indicate_link_at_init, nor others unless profile.indicate_at_init names them (an
  emulator choice; [OV] sends indications only when the link changes). [OV] always
  answers "connected" and indicates a link that is down afterwards; we answer the link as it is
  (the guest ends up knowing the same).
* Scripted indications (`indicate`, emulator controls): RNDIS_STATUS_NETWORK_CHANGE, which [OV]
  never sends, a repeated MEDIA_CONNECT while the link is up, and RNDIS_STATUS_LINK_SPEED_CHANGE
  with a new speed (u32, 100 bit/s units), which OID_GEN_LINK_SPEED then answers too; Linux's
  guest answers them (carrier off/on; notify peers; new speed: [RF]
  rndis_filter_receive_indicate_status and netvsc_drv.c netvsc_link_change).
* OID_TCP_OFFLOAD_PARAMETERS: checksum, LSOv2 and (revision 3, NVSP >= 6.1) RSC, masked to the
  capabilities; `OffloadState` is what the data path (offload.py, the C pump) applies.
* OID_GEN_RECEIVE_SCALE_PARAMETERS: [OV] `oid_set_rss_parameters`'s rules (rss.py); the accepted
  state is `HostRndis.rss`, the channel choice for received frames.
* strict only (not enforced by [OV]): QUERY/SET before INITIALIZE → ADAPTER_NOT_READY; a bad RNDIS
  major version → INITIALIZE completion with BAD_VERSION; info buffer outside the message →
  INVALID_DATA (OpenVMM ignores the offset and reads right after the header).

What must not live here: NVSP, sections, transaction ids (nvsp.py, receive.py), the event and
rejection records (events.py), I/O, clocks (time comes via `tick`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hvuio.sim.host import offload as ho
from hvuio.sim.host import profile as hp
from hvuio.sim.host import wire as w
from hvuio.sim.host.events import (HostEvent, LinkIndicated, PacketFilterSet, Rejection,
                                   RejectionLog, RndisHalted, RndisInitialized, StatusIndicated, fault)
from hvuio.sim.host.rss import RssState, parse_parameters

# --- the RNDIS device ----------------------------------------------------------------------------

# COPY_LOOKAHEAD_DATA | TRANSFERS_NOT_PEND | NO_LOOPBACK | 8021P_PRIORITY | 8021Q_VLAN, as [OV]
# (the 802.1 bits since its VLAN support, microsoft/openvmm "netvsp: Add VLAN support")
MAC_OPTIONS = 0x1 | 0x4 | 0x8 | 0x40 | 0x200
BUFFER_SPACE = 256 * 1024  # [OV] "Return what vmswitch returns"
VENDOR_ID = 0x0000155D  # [OV] first bytes of Microsoft's MAC prefix
VENDOR_DESCRIPTION = b"Microsoft Corporation"
DRIVER_VERSION = 0x0100  # [OV] u16 "1.0"

OFFLOAD_FIELDS = ("ip4", "tcp4", "udp4", "tcp6", "udp6")  # ndis_offload_params bytes 4..8

Reply = tuple[list[bytes], list[HostEvent]]

#: the indications `HostRndis.indicate` sends on request (emulator controls)
INDICATIONS = {"network_change": w.RNDIS_STATUS_NETWORK_CHANGE, "media_connect": w.RNDIS_STATUS_MEDIA_CONNECT,
               "link_speed": w.RNDIS_STATUS_LINK_SPEED_CHANGE}


@dataclass(slots=True)
class OffloadState:
    """Current checksum/LSO configuration as (tx, rx) per protocol, masked to the profile caps."""

    tx: dict[str, bool]
    rx: dict[str, bool]
    lso4: bool
    lso6: bool
    rsc4: bool = False  # receive segment coalescing: off until the guest enables it
    rsc6: bool = False
    # Receive checksum info is marked on frames once the guest has set OID_TCP_OFFLOAD_PARAMETERS
    # (before that a guest has not said it reads it; Linux and DPDK always set it at start-up).
    rx_marking: bool = False

    @classmethod
    def from_caps(cls, caps: hp.OffloadCaps) -> OffloadState:
        tx = {"ip4": caps.csum_tx_ip4, "tcp4": caps.csum_tx_tcp4, "udp4": caps.csum_tx_udp4,
              "tcp6": caps.csum_tx_tcp6, "udp6": caps.csum_tx_udp6}
        return cls(tx, {k: caps.csum_rx for k in OFFLOAD_FIELDS}, caps.lso4, caps.lso6, caps.rsc, caps.rsc)

    def tx_config(self) -> ho.TxConfig:
        """What a guest packet's checksum/LSO info may ask for now."""
        t = self.tx
        return ho.TxConfig(t["ip4"], t["tcp4"], t["udp4"], t["tcp6"], t["udp6"], self.lso4, self.lso6,
                           hp.LSO_MAX_OFFLOAD)

    def pump_bits(self) -> tuple[int, int]:
        """(off_tx, off_rx) for the C pump: offload.OFF_* of what is enabled now."""
        tx = sum(bit for name, bit in ho.OFF_CSUM_BITS.items() if self.tx[name])
        tx |= (ho.OFF_LSO4 if self.lso4 else 0) | (ho.OFF_LSO6 if self.lso6 else 0)
        rx = sum(bit for name, bit in ho.OFF_CSUM_BITS.items() if self.rx_marks().get(name))
        rx |= (ho.OFF_RSC4 if self.rsc4 else 0) | (ho.OFF_RSC6 if self.rsc6 else 0)
        return tx, rx

    def rx_marks(self) -> dict[str, bool]:
        """Receive checksum offloads to mark on frames (empty until the guest configured them)."""
        return self.rx if self.rx_marking else {}

    def encode(self) -> bytes:
        def v4(d: dict[str, bool]) -> int:
            bits = 0
            if d["ip4"]:
                bits |= w.CSUM_IP4OPT | w.CSUM_IP4
            if d["tcp4"]:
                bits |= w.CSUM_IP4OPT | w.CSUM_TCP4OPT | w.CSUM_TCP4
            if d["udp4"]:
                bits |= w.CSUM_IP4OPT | w.CSUM_UDP4
            return bits

        def v6(d: dict[str, bool]) -> int:
            bits = 0
            if d["tcp6"]:
                bits |= w.CSUM_IP6EXT | w.CSUM_TCP6OPT | w.CSUM_TCP6
            if d["udp6"]:
                bits |= w.CSUM_IP6EXT | w.CSUM_UDP6
            return bits

        return w.ndis_offload(v4(self.tx), v4(self.rx), v6(self.tx), v6(self.rx), self.lso4, self.lso6,
                              hp.LSO_MAX_OFFLOAD, self.rsc4, self.rsc6)


class HostRndis:
    """RNDIS device state on the primary channel. Methods return (messages to send, events)."""

    def __init__(self, profile: hp.HostProfile, log: RejectionLog, ndis_mtu: int, num_queues: int,
                 nvsp_version: int = w.NVSP_VERSION_61) -> None:
        self.profile = profile
        self.nvsp_version = nvsp_version
        self.log = log
        self.ndis_mtu = ndis_mtu
        self.num_queues = num_queues
        self.state: Literal["uninitialized", "initialized", "halted"] = "uninitialized"
        self.packet_filter: int | None = None
        self.link_up = profile.link_up  # the host's link; OID_GEN_MEDIA_CONNECT_STATUS reports it
        self.link_speed_bps = profile.link_speed_bps  # OID_GEN_LINK_SPEED; `indicate` changes it
        self._indicated: bool | None = None  # what the guest was last told (None: nothing yet)
        self._indicated_at: float | None = None
        self.offload = OffloadState.from_caps(profile.offloads)
        self.offload.rsc4 = self.offload.rsc6 = False
        self.rss: RssState | None = None  # OID_GEN_RECEIVE_SCALE_PARAMETERS as accepted (None: off)
        self._next_keepalive: float | None = None
        self._host_rid = 0x4B410000  # host-originated request ids (keep-alives); any value works

    @property
    def operational(self) -> bool:
        return self.state == "initialized"

    # -- guest control messages --

    def control(self, msg: bytes) -> Reply:
        """Handle one guest RNDIS control message (`msg` is exactly its `len` bytes)."""
        mtype, mlen = struct.unpack_from("<II", msg, 0)
        if self.state == "halted":
            return [], [self.log.add(Rejection("RNDIS message after HALT", mtype, "state", 0, "ignored"))]
        handler = self._HANDLERS.get(mtype)
        if handler is None:
            raise fault("RNDIS message type not implemented by the host", mtype, "type", mtype)
        need = self._SIZES[mtype]
        if mlen < need:
            raise fault(f"RNDIS message shorter than its {need}-byte layout", mtype, "len", mlen)
        return handler(self, msg)

    def _initialize(self, msg: bytes) -> Reply:
        rid, major, _minor, max_xfer = struct.unpack_from("<4I", msg, 8)
        if self.state != "uninitialized":
            raise fault("RNDIS INITIALIZE while already initialized", w.RNDIS_INITIALIZE_MSG, "state", 1)
        events: list[HostEvent] = []
        if self.profile.strict and major != w.RNDIS_MAJOR_VERSION:
            events.append(self.log.add(Rejection(
                "RNDIS major version must be 1", w.RNDIS_INITIALIZE_MSG, "major_version", major, "failure-status")))
            return [w.rndis_init_complete(rid, w.RNDIS_STATUS_BAD_VERSION, 0, 0, 0)], events
        if self.profile.strict and max_xfer < w.RNDIS_PACKET_MSG_SIZE + hp.ETH_HEADER_LEN:
            events.append(self.log.add(Rejection(
                "max_transfer_size cannot hold one RNDIS packet", w.RNDIS_INITIALIZE_MSG,
                "max_transfer_size", max_xfer, "failure-status")))
            return [w.rndis_init_complete(rid, w.RNDIS_STATUS_INVALID_DATA, 0, 0, 0)], events
        self.state = "initialized"
        out = [w.rndis_init_complete(rid, w.RNDIS_STATUS_SUCCESS, hp.RNDIS_MAX_PACKETS,
                                     hp.RNDIS_MAX_TRANSFER, hp.RNDIS_ALIGN_SHIFT)]
        events.append(RndisInitialized(max_xfer))
        self._indicated = self.link_up  # the guest learns the state now, by indication or by query
        if self.profile.indicate_link_at_init:
            out.append(self._link_message())
            events.append(LinkIndicated(self.link_up))
        for name in self.profile.indicate_at_init:  # link events during the guest's bring-up
            status = hp.INIT_INDICATIONS[name]
            out.append(w.rndis_status(status))
            events.append(StatusIndicated(status))
        return out, events

    def _not_ready(self, msg: bytes, complete: Callable[[int, int], bytes]) -> Reply | None:
        if self.state == "initialized" or not self.profile.strict:
            return None
        mtype, _, rid = struct.unpack_from("<3I", msg, 0)
        rej = self.log.add(Rejection("RNDIS request before INITIALIZE", mtype, "state", 0, "failure-status"))
        return [complete(rid, w.RNDIS_STATUS_ADAPTER_NOT_READY)], [rej]

    def _info(self, msg: bytes) -> bytes | None:
        """The info buffer of a QUERY/SET (offset counted from byte 8), or None if it lies outside."""
        mlen = len(msg)
        length, offset = struct.unpack_from("<II", msg, 16)
        if length == 0:
            return b""
        if not self.profile.strict:
            return msg[28:28 + length]  # [OV] reads right after the 28-byte request
        start = w.RNDIS_HEADER_SIZE + offset
        if offset < 20 or start > mlen or length > mlen - start:
            return None
        return msg[start:start + length]

    def _query(self, msg: bytes) -> Reply:
        early = self._not_ready(msg, lambda rid, st: w.rndis_query_complete(rid, st, b""))
        if early is not None:
            return early
        rid, oid = struct.unpack_from("<II", msg, 8)
        if self._info(msg) is None:
            rej = self.log.add(Rejection("QUERY info buffer outside the message", w.RNDIS_QUERY_MSG,
                                         "info_buffer_offset", struct.unpack_from("<I", msg, 20)[0], "failure-status"))
            return [w.rndis_query_complete(rid, w.RNDIS_STATUS_INVALID_DATA, b"")], [rej]
        info = self._answer_oid(oid)
        if info is None:
            rej = self.log.add(Rejection("QUERY of an OID the host does not support", w.RNDIS_QUERY_MSG,
                                         "oid", oid, "failure-status"))
            return [w.rndis_query_complete(rid, w.RNDIS_STATUS_NOT_SUPPORTED, b"")], [rej]
        return [w.rndis_query_complete(rid, w.RNDIS_STATUS_SUCCESS, info)], []

    def _answer_oid(self, oid: int) -> bytes | None:
        def u32(v: int) -> bytes:
            return struct.pack("<I", v)

        mtu = self.ndis_mtu
        table: dict[int, Callable[[], bytes]] = {
            w.OID_GEN_HARDWARE_STATUS: lambda: u32(0),
            w.OID_GEN_MEDIA_SUPPORTED: lambda: u32(w.RNDIS_MEDIUM_802_3),
            w.OID_GEN_MEDIA_IN_USE: lambda: u32(w.RNDIS_MEDIUM_802_3),
            w.OID_GEN_MAXIMUM_LOOKAHEAD: lambda: u32(mtu - hp.ETH_HEADER_LEN),
            w.OID_GEN_CURRENT_LOOKAHEAD: lambda: u32(mtu - hp.ETH_HEADER_LEN),
            w.OID_GEN_MAXIMUM_FRAME_SIZE: lambda: u32(mtu - hp.ETH_HEADER_LEN),
            w.OID_GEN_MAXIMUM_TOTAL_SIZE: lambda: u32(mtu),
            w.OID_GEN_TRANSMIT_BLOCK_SIZE: lambda: u32(mtu),
            w.OID_GEN_RECEIVE_BLOCK_SIZE: lambda: u32(mtu),
            w.OID_GEN_LINK_SPEED: lambda: u32(self._speed_units()),
            w.OID_GEN_TRANSMIT_BUFFER_SPACE: lambda: u32(BUFFER_SPACE),
            w.OID_GEN_RECEIVE_BUFFER_SPACE: lambda: u32(BUFFER_SPACE),
            w.OID_GEN_VENDOR_ID: lambda: u32(VENDOR_ID),
            w.OID_GEN_VENDOR_DESCRIPTION: lambda: VENDOR_DESCRIPTION,
            w.OID_GEN_VENDOR_DRIVER_VERSION: lambda: struct.pack("<H", DRIVER_VERSION),
            w.OID_GEN_DRIVER_VERSION: lambda: struct.pack("<H", DRIVER_VERSION),
            # [OV] answers 0 here; we answer the filter actually set (documented divergence).
            w.OID_GEN_CURRENT_PACKET_FILTER: lambda: u32(self.packet_filter or 0),
            w.OID_GEN_MAC_OPTIONS: lambda: u32(MAC_OPTIONS),
            # [OV] always answers "connected"; we report the scripted link state.
            w.OID_GEN_MEDIA_CONNECT_STATUS: lambda: u32(
                w.NDIS_MEDIA_STATE_CONNECTED if self.link_up else w.NDIS_MEDIA_STATE_DISCONNECTED),
            w.OID_GEN_MAXIMUM_SEND_PACKETS: lambda: u32(0xFFFFFFFF),
            w.OID_802_3_PERMANENT_ADDRESS: lambda: self.profile.mac,
            w.OID_802_3_CURRENT_ADDRESS: lambda: self.profile.mac,
            w.OID_802_3_MAXIMUM_LIST_SIZE: lambda: u32(0),
            w.OID_802_3_RCV_ERROR_ALIGNMENT: lambda: u32(0),
            w.OID_802_3_XMIT_ONE_COLLISION: lambda: u32(0),
            w.OID_802_3_XMIT_MORE_COLLISIONS: lambda: u32(0),
            w.OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES: lambda: self._caps().encode(),
            w.OID_TCP_OFFLOAD_CURRENT_CONFIG: self.offload.encode,
            w.OID_GEN_RECEIVE_SCALE_CAPABILITIES: lambda: w.ndis_rss_caps(
                self.num_queues, self.profile.rss_table_entries),
        }
        if oid == w.OID_GEN_SUPPORTED_LIST:
            return struct.pack(f"<{len(table) + 1}I", w.OID_GEN_SUPPORTED_LIST, *table)
        answer = table.get(oid)
        return None if answer is None else answer()

    def _set(self, msg: bytes) -> Reply:
        def done(rid: int, status: int) -> bytes:
            return w.rndis(w.RNDIS_SET_CMPLT, struct.pack("<II", rid, status))

        early = self._not_ready(msg, done)
        if early is not None:
            return early
        rid, oid = struct.unpack_from("<II", msg, 8)
        info = self._info(msg)
        if info is None:
            rej = self.log.add(Rejection("SET info buffer outside the message", w.RNDIS_SET_MSG,
                                         "info_buffer_offset", struct.unpack_from("<I", msg, 20)[0], "failure-status"))
            return [done(rid, w.RNDIS_STATUS_INVALID_DATA)], [rej]
        status, field, value, extra_out, events = self._apply_oid(oid, info)
        if status != w.RNDIS_STATUS_SUCCESS:
            events.append(self.log.add(Rejection(f"SET of OID {oid:#x} refused", w.RNDIS_SET_MSG, field, value,
                                                 "failure-status")))
        return [done(rid, status), *extra_out], events

    def _apply_oid(self, oid: int, info: bytes) -> tuple[int, str, int, list[bytes], list[HostEvent]]:
        """(status, offending field, value, extra messages, events) for one SET."""
        if oid == w.OID_GEN_CURRENT_PACKET_FILTER:
            if len(info) < 4:
                return w.RNDIS_STATUS_FAILURE, "info_buffer_length", len(info), [], []
            (value,) = struct.unpack_from("<I", info)
            self.packet_filter = value
            return w.RNDIS_STATUS_SUCCESS, "", 0, [], [PacketFilterSet(value)]
        if oid == w.OID_TCP_OFFLOAD_PARAMETERS:
            return self._set_offload(info)
        if oid == w.OID_GEN_RECEIVE_SCALE_PARAMETERS:
            return self._set_rss(info)
        if oid == w.OID_GEN_RNDIS_CONFIG_PARAMETER:
            if len(info) < 20:
                return w.RNDIS_STATUS_FAILURE, "info_buffer_length", len(info), [], []
            name_off, name_len, _ptype, value_off, value_len = struct.unpack_from("<5I", info)
            if name_len > 255 or value_len > 255:  # [OV] limits
                return w.RNDIS_STATUS_INVALID_DATA, "name_or_value_length", max(name_len, value_len), [], []
            if name_off + name_len > len(info) or value_off + value_len > len(info):
                return w.RNDIS_STATUS_FAILURE, "name_or_value_offset", max(name_off, value_off), [], []
            return w.RNDIS_STATUS_SUCCESS, "", 0, [], []
        if oid == w.OID_GEN_NETWORK_LAYER_ADDRESSES:
            return w.RNDIS_STATUS_SUCCESS, "", 0, [], []
        return w.RNDIS_STATUS_NOT_SUPPORTED, "oid", oid, [], []

    def _set_offload(self, info: bytes) -> tuple[int, str, int, list[bytes], list[HostEvent]]:
        # [OV] read_ndis_object: type DEFAULT, revision >= 1, size >= revision-1 size, sent >= size.
        if len(info) < 4:
            return w.RNDIS_STATUS_INVALID_DATA, "ndis_object_header", len(info), [], []
        otype, orev, osize = struct.unpack_from("<BBH", info)
        if otype != w.NDIS_OBJTYPE_DEFAULT:
            return w.RNDIS_STATUS_INVALID_DATA, "header.type", otype, [], []
        if len(info) < osize:
            return w.RNDIS_STATUS_INVALID_DATA, "header.size", osize, [], []
        if orev < 1:
            return w.RNDIS_STATUS_INVALID_DATA, "header.revision", orev, [], []
        if osize < w.NDIS_OFFLOAD_PARAMS_SIZE_REV_1:
            return w.RNDIS_STATUS_INVALID_DATA, "header.size", osize, [], []
        vals = info[4:11]  # ip4, tcp4, udp4, tcp6, udp6 checksum, lsov1, ipsecv1
        if vals[5] == w.NDIS_OFFLOAD_LSOV1_ON:
            return w.RNDIS_STATUS_NOT_SUPPORTED, "lsov1", vals[5], [], []
        for name, v in zip(OFFLOAD_FIELDS, vals[:5], strict=True):
            if v in (w.NDIS_OFFLOAD_PARAM_OFF, w.NDIS_OFFLOAD_PARAM_TX, w.NDIS_OFFLOAD_PARAM_RX,
                     w.NDIS_OFFLOAD_PARAM_TXRX):
                self.offload.tx[name] = v in (w.NDIS_OFFLOAD_PARAM_TX, w.NDIS_OFFLOAD_PARAM_TXRX)
                self.offload.rx[name] = v in (w.NDIS_OFFLOAD_PARAM_RX, w.NDIS_OFFLOAD_PARAM_TXRX)
        if orev >= 3 and osize >= w.NDIS_OFFLOAD_PARAMS_RSC_END:
            for attr, v in (("rsc4", info[22]), ("rsc6", info[23])):
                if v in (w.NDIS_OFFLOAD_RSC_OFF, w.NDIS_OFFLOAD_RSC_ON):
                    setattr(self.offload, attr, v == w.NDIS_OFFLOAD_RSC_ON)
        self.offload.rx_marking = True
        lso4, lso6 = info[11], info[12]
        if lso4 in (w.NDIS_OFFLOAD_LSOV2_OFF, w.NDIS_OFFLOAD_LSOV2_ON):
            self.offload.lso4 = lso4 == w.NDIS_OFFLOAD_LSOV2_ON
        if lso6 in (w.NDIS_OFFLOAD_LSOV2_OFF, w.NDIS_OFFLOAD_LSOV2_ON):
            self.offload.lso6 = lso6 == w.NDIS_OFFLOAD_LSOV2_ON
        caps = self._caps()
        for name in OFFLOAD_FIELDS:  # mask to what the host supports ([OV] mask_to_supported)
            self.offload.tx[name] &= caps.tx[name]
            self.offload.rx[name] &= caps.rx[name]
        self.offload.lso4 &= caps.lso4
        self.offload.lso6 &= caps.lso6
        self.offload.rsc4 &= caps.rsc4
        self.offload.rsc6 &= caps.rsc6
        # [OV] then indicates the resulting configuration to the guest.
        extra = [w.rndis_status(w.RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG, self.offload.encode())]
        return w.RNDIS_STATUS_SUCCESS, "", 0, extra, []

    def _caps(self) -> OffloadState:
        """The hardware capabilities: the profile's, RSC only from NVSP 6.1 on."""
        caps = OffloadState.from_caps(self.profile.offloads)
        if self.nvsp_version < w.NVSP_VERSION_61:
            caps.rsc4 = caps.rsc6 = False
        return caps

    def _set_rss(self, info: bytes) -> tuple[int, str, int, list[bytes], list[HostEvent]]:
        # [OV] oid_set_rss_parameters; the rules are in rss.parse_parameters
        status, field, value, self.rss = parse_parameters(
            info, self.num_queues, self.profile.rss_table_entries, self.rss)
        return status, field, value, [], []

    def _keepalive(self, msg: bytes) -> Reply:
        (rid,) = struct.unpack_from("<I", msg, 8)
        return [w.rndis(w.RNDIS_KEEPALIVE_CMPLT, struct.pack("<II", rid, w.RNDIS_STATUS_SUCCESS))], []

    def _halt(self, msg: bytes) -> Reply:
        self.state = "halted"
        return [], [RndisHalted()]

    _HANDLERS: dict[int, Callable[[HostRndis, bytes], Reply]] = {
        w.RNDIS_INITIALIZE_MSG: _initialize,
        w.RNDIS_QUERY_MSG: _query,
        w.RNDIS_SET_MSG: _set,
        w.RNDIS_KEEPALIVE_MSG: _keepalive,
        w.RNDIS_HALT_MSG: _halt,
    }
    _SIZES: dict[int, int] = {
        w.RNDIS_INITIALIZE_MSG: w.RNDIS_INIT_REQ_SIZE,
        w.RNDIS_QUERY_MSG: w.RNDIS_QUERY_REQ_SIZE,
        w.RNDIS_SET_MSG: w.RNDIS_SET_REQ_SIZE,
        w.RNDIS_KEEPALIVE_MSG: w.RNDIS_KEEPALIVE_REQ_SIZE,
        w.RNDIS_HALT_MSG: w.RNDIS_HALT_REQ_SIZE,
    }

    # -- data --

    @staticmethod
    def parse_data(msg: bytes) -> bytes:
        """The Ethernet frame of a guest RNDIS_PACKET_MSG; HostWireError names what is wrong."""
        return HostRndis.parse_data_info(msg)[0]

    @staticmethod
    def parse_data_info(msg: bytes) -> tuple[bytes, ho.TxInfo]:
        """The frame and its checksum/LSO requests (offload.parse_tx_ppis rules)."""
        mlen = len(msg)
        if mlen < w.RNDIS_PACKET_MSG_SIZE:
            raise w.HostWireError("len", mlen, f"RNDIS packet message needs {w.RNDIS_PACKET_MSG_SIZE} bytes")
        d_off, d_len, oob_off, oob_len, oob_n, ppi_off, ppi_len, vc, _ = struct.unpack_from("<9I", msg, 8)
        if oob_off or oob_len or oob_n or vc:  # [OV] UnsupportedRndisBehavior
            raise w.HostWireError("oob/vc_handle", oob_off | oob_len | oob_n | vc, "must be zero")
        body = mlen - w.RNDIS_HEADER_SIZE
        if d_off < w.RNDIS_PACKET_OFFSET_MIN or d_off > body or d_len > body - d_off:
            raise w.HostWireError("data_offset", d_off, f"data [{d_off}, +{d_len}) outside body of {body} bytes")
        if d_len == 0:
            raise w.HostWireError("data_length", d_len, "empty frame")  # [OV] RndisMessageTooSmall
        if ppi_len:
            if ppi_off < w.RNDIS_PACKET_OFFSET_MIN or ppi_off > body or ppi_len > body - ppi_off:
                raise w.HostWireError("per_packet_info_offset", ppi_off, "per-packet info outside the message")
            info = ho.parse_tx_ppis(msg, w.RNDIS_HEADER_SIZE + ppi_off, ppi_len)
        else:
            info = ho.TxInfo()
        start = w.RNDIS_HEADER_SIZE + d_off
        return msg[start:start + d_len], info

    # -- host-initiated messages --

    def _link_message(self) -> bytes:
        return w.rndis_status(w.RNDIS_STATUS_MEDIA_CONNECT if self.link_up else w.RNDIS_STATUS_MEDIA_DISCONNECT)

    def set_link(self, up: bool, now: float | None = None) -> Reply:
        """Scripted link change, indicated once RNDIS is up and only when it differs from what the
        guest was last told. With `now`, a change within `profile.link_flap_delay` seconds of the
        previous indication waits for `tick` ([OV] LINK_DELAY_DURATION: Linux ignores quick flaps;
        up→down→up sends down at once and up after the delay, up→down→up→down sends only down)."""
        self.link_up = up
        return self._indicate_link(now)

    def _indicate_link(self, now: float | None) -> Reply:
        if not self.operational or self._indicated == self.link_up:
            return [], []
        delay = self.profile.link_flap_delay
        if now is not None and self._indicated_at is not None and now - self._indicated_at < delay:
            return [], []  # flushed by tick() once the delay has passed
        self._indicated, self._indicated_at = self.link_up, now
        return [self._link_message()], [LinkIndicated(self.link_up)]

    def _speed_units(self) -> int:
        return min(self.link_speed_bps // 100, 0xFFFFFFFF)

    def indicate(self, kind: str, speed_bps: int | None = None) -> Reply:
        """A scripted indication that is not a link change, once RNDIS is up (nothing otherwise):
        "network_change" (RNDIS_STATUS_NETWORK_CHANGE; [OV] never sends one, Linux's guest handles
        it), "media_connect" (a MEDIA_CONNECT while the link is already up, a repeat Linux answers
        by notifying its peers) or "link_speed" (RNDIS_STATUS_LINK_SPEED_CHANGE carrying
        `speed_bps`, which OID_GEN_LINK_SPEED answers from then on). An emulator control."""
        status = INDICATIONS[kind]
        payload = b""
        if status == w.RNDIS_STATUS_LINK_SPEED_CHANGE:
            if speed_bps is None or speed_bps < 0:
                raise ValueError(f"link speed indication needs a speed >= 0, not {speed_bps!r}")
            self.link_speed_bps = speed_bps
            payload = struct.pack("<I", self._speed_units())
        if not self.operational:
            return [], []
        if status == w.RNDIS_STATUS_MEDIA_CONNECT and not self.link_up:
            return [], []  # a connect while down is a link change: set_link's
        return [w.rndis_status(status, payload)], [StatusIndicated(status)]

    def tick(self, now: float) -> Reply:
        """Delayed link indications and (profile.keepalive_interval only) host keep-alives, which
        expect no answer; `now` is any monotonic time in seconds."""
        out, events = self._indicate_link(now)
        interval = self.profile.keepalive_interval
        if interval is None or not self.operational:
            return out, events
        if self._next_keepalive is None:
            self._next_keepalive = now + interval
            return out, events
        if now < self._next_keepalive:
            return out, events
        self._host_rid = (self._host_rid + 1) & 0xFFFFFFFF
        self._next_keepalive = now + interval
        return [*out, w.rndis(w.RNDIS_KEEPALIVE_MSG, struct.pack("<I", self._host_rid))], events
