"""What the guest protocol machines take in and give out: Inbound, Outbound, Send and the events.

What lives here: frozen, slotted dataclasses that validate their own fields in `__post_init__`
(so a bad value is caught where it is made), the `NEED_DATA` sentinel returned by `next_event()`
when nothing is queued, `Outbound.placed()` / `Outbound.direct()`, the NVSP message naming the
send-buffer section an RNDIS control message was put in or none (GPA-direct), and `Send`, an
Outbound with its place: what NetvscGuest
(hvuio/proto/netvsc.py) hands the channel to write.

The contract with the I/O side (hvuio/nic.py and hvuio/channel.py, not written here):

* `Inbound(kind, trans_id, payload)` is one packet already copied out of the ring and validated
  at the VMBus level (VMBUS.md §4 items 1-12): `kind` is the VMBus packet type (INBAND 0x6 or
  COMPLETION 0xb) for NVSP, or `RNDIS` for one RNDIS control message copied out of a
  receive-buffer range (VMBUS.md §4 item 16). `payload` is the bytes after the VMBus header.
  NetvscGuest routes it: completions to the machine whose `expects(trans_id)` is true (a
  completion no machine expects is dropped, `CompletionDropped`), in-band packets to NvspGuest,
  RNDIS messages to RndisGuest. A host in-band packet flagged COMPLETION_REQUESTED (the VF
  association) needs no completion: Linux sends none and OpenVMM accepts its absence. Every
  transfer-page packet is acked by the channel (`wire.nvsp.receive_ack()`), control or data.
* `Outbound(payload, trans_id, want_completion, rndis)`: what a machine wants sent: `payload` as
  an in-band packet (type 0x6) with `trans_id`, COMPLETION_REQUESTED when `want_completion`. When
  `rndis` is not None, the packet is an NVSP "send RNDIS packet" (type 107) whose RNDIS message
  travels in the send buffer.
* `Send(message, section, offset, page)`: an Outbound ready to write. For an RNDIS message
  NetvscGuest has picked a place (hvuio/proto/sections.py), one of two:
  - a control section of the send buffer (`section`): copy `message.rndis` to byte `offset` of
    the send buffer and write `payload` (the NVSP message naming `section`) as an in-band packet;
  - a control page of the NIC's guest-memory pool (`page`, GPA-direct, VMBUS.md §3.7): copy
    `message.rndis` to byte `offset` (= page * 4096) of the control pages and write `payload`
    (the NVSP message with section index 0xFFFFFFFF and size 0) as a GPA-direct packet (type 9)
    with one range {len(rndis), offset 0, page number of that page}, completion requested.
  Either place is free again when the host completes the send (`ControlSendComplete(trans_id)`).

What must not live here: parsing, state, I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from hvuio.errors import LocalProtocolError
from hvuio.wire import nvsp as wn

__all__ = [
    "InboundKind", "Inbound", "Outbound", "NeedData", "NEED_DATA", "Event",
    "NvspReady", "NdisConfigured", "RecvBufSection", "RecvBufReady", "SendBufReady",
    "SubchannelsGranted", "SubchannelsRefused", "RssCaps", "RssConfigured", "DatapathSwitched", "VfAssociation",
    "HostDatapathSwitched", "VfMessageDropped",
    "IndirectionTable", "SendTableFixed",
    "BuffersRevoked", "RndisReady", "MacAddress", "Mtu", "LinkStatus", "LinkSpeed",
    "OffloadCaps", "OffloadsConfigured", "RequestFailed", "QueryResult", "SetComplete", "RndisConfigured",
    "NetworkChange", "StatusIndication", "IndicationDropped", "KeepaliveDropped", "ControlSendComplete", "Halted",
    "Send", "CompletionDropped", "ControlFallback",
]

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise LocalProtocolError(what)


def _u32(name: str, value: int) -> None:
    _need(0 <= value <= _U32, f"{name} = {value!r} is not a u32")


class InboundKind(IntEnum):
    """Where an inbound item came from; the NVSP kinds are the VMBus packet types (VMBUS.md §3.4)."""

    INBAND = 0x6
    COMPLETION = 0xB
    RNDIS = 0x100  # not a VMBus type: one RNDIS message copied out of the receive buffer


@dataclass(frozen=True, slots=True)
class Inbound:
    kind: InboundKind
    trans_id: int
    payload: bytes

    def __post_init__(self) -> None:
        _need(isinstance(self.kind, InboundKind), f"Inbound.kind {self.kind!r} is not an InboundKind")
        _need(0 <= self.trans_id <= _U64, f"Inbound.trans_id {self.trans_id!r} is not a u64")
        _need(isinstance(self.payload, bytes), "Inbound.payload must be bytes")


@dataclass(frozen=True, slots=True)
class Outbound:
    payload: bytes
    trans_id: int
    want_completion: bool
    rndis: bytes | None = None

    def __post_init__(self) -> None:
        _need(1 <= self.trans_id <= _U64, f"Outbound.trans_id {self.trans_id!r} not in [1, 2**64)")
        _need(len(self.payload) == wn.NVSP_MESSAGE_SIZE,
              f"Outbound.payload is {len(self.payload)} bytes, NVSP messages are 40")
        if self.rndis is not None:
            _need(len(self.rndis) > 0, "Outbound.rndis is empty")
            _need(self.want_completion, "an RNDIS send must request a completion (section reuse)")

    def placed(self, section_index: int) -> bytes:
        """`payload` naming send-buffer section `section_index` holding `rndis`."""
        _need(self.rndis is not None, "Outbound.placed() on a message without RNDIS bytes")
        assert self.rndis is not None
        _need(0 <= section_index < wn.SEND_SECTION_NONE,
              f"section index {section_index!r} out of range")
        msg = wn.from_prefix(wn.NvspSendRndisPacket, self.payload)
        msg.section_index = section_index
        msg.section_size = len(self.rndis)
        return wn.to_bytes(msg)

    def direct(self) -> bytes:
        """`payload` naming no section (index 0xFFFFFFFF, size 0): `rndis` travels GPA-direct
        (Linux netvsc_send_pkt and DPDK hn_nvs_send_rndis_ctrl send control messages so)."""
        _need(self.rndis is not None, "Outbound.direct() on a message without RNDIS bytes")
        msg = wn.from_prefix(wn.NvspSendRndisPacket, self.payload)
        msg.section_index = wn.SEND_SECTION_NONE
        msg.section_size = 0
        return wn.to_bytes(msg)


@dataclass(frozen=True, slots=True)
class Send:
    """`message` with its place: a send-buffer `section` or a control `page` (GPA-direct), one
    of them for an RNDIS message and neither for others, and the byte `offset` of that place
    (in the send buffer for a section, in the control pages for a page)."""

    message: Outbound
    section: int | None = None
    offset: int = 0
    page: int | None = None

    def __post_init__(self) -> None:
        placed = (self.section is not None) + (self.page is not None)
        _need(placed == (self.message.rndis is not None),
              "an RNDIS message goes in one section or one page; other messages in neither")
        _need(self.offset >= 0, f"Send.offset {self.offset!r} is negative")
        _need(self.page is None or self.page >= 0, f"Send.page {self.page!r} is negative")

    @property
    def gpa_direct(self) -> bool:
        """The RNDIS bytes travel in a control page, by guest-physical address (packet type 9)."""
        return self.page is not None

    @property
    def payload(self) -> bytes:
        """The NVSP message to write: `message.payload`, naming `section` when there is one, no
        section (0xFFFFFFFF, size 0) for a page."""
        if self.section is not None:
            return self.message.placed(self.section)
        if self.page is not None:
            return self.message.direct()
        return self.message.payload


class NeedData:
    """Sentinel type: `next_event()` has nothing queued."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


# ---- NVSP events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NvspReady:
    """The host accepted NVSP `version`; `ndis_version` is what we announce next."""

    version: int
    ndis_version: int

    def __post_init__(self) -> None:
        _u32("version", self.version)
        _u32("ndis_version", self.ndis_version)


@dataclass(frozen=True, slots=True)
class NdisConfigured:
    """NDIS config (NVSP >= 2) and NDIS version were sent; the host does not reply to them."""

    mtu: int | None  # None for NVSP 1 (no config message)
    capabilities: int
    ndis_version: int

    def __post_init__(self) -> None:
        if self.mtu is not None:
            _u32("mtu", self.mtu)
        _need(0 <= self.capabilities < 1 << 64, f"capabilities {self.capabilities!r} not a u64")


@dataclass(frozen=True, slots=True)
class RecvBufSection:
    offset: int
    sub_alloc_size: int
    num_sub_allocs: int
    end_offset: int

    def __post_init__(self) -> None:
        for name in ("offset", "sub_alloc_size", "num_sub_allocs", "end_offset"):
            _u32(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class RecvBufReady:
    sections: tuple[RecvBufSection, ...]

    def __post_init__(self) -> None:
        _need(len(self.sections) >= 1, "RecvBufReady needs at least one section")


@dataclass(frozen=True, slots=True)
class SendBufReady:
    """Last event of NVSP start-up: the send buffer holds `count` sections of `section_size`."""

    section_size: int
    count: int

    def __post_init__(self) -> None:
        _need(self.section_size > 0 and self.count > 0, "SendBufReady needs size and count > 0")


@dataclass(frozen=True, slots=True)
class SubchannelsGranted:
    count: int

    def __post_init__(self) -> None:
        _u32("count", self.count)


@dataclass(frozen=True, slots=True)
class SubchannelsRefused:
    """The host answered the subchannel request for `asked` with a failure `status` (OpenVMM
    does when more are asked than it has queues): the NIC runs on the primary channel only."""

    asked: int
    status: int


@dataclass(frozen=True, slots=True)
class RssCaps:
    """OID_GEN_RECEIVE_SCALE_CAPABILITIES: the host's receive queues (the primary's included), its
    capability bits (wire.rndis.RssCap) and indirection-table entries (0: not given)."""

    receive_queues: int
    capabilities: int = 0
    table_entries: int = 0

    def __post_init__(self) -> None:
        _u32("receive_queues", self.receive_queues)
        _u32("capabilities", self.capabilities)
        _need(0 <= self.table_entries <= 0xFFFF, f"table_entries {self.table_entries} is not a u16")


@dataclass(frozen=True, slots=True)
class RssConfigured:
    """The host took OID_GEN_RECEIVE_SCALE_PARAMETERS (disable, then enable): frames are spread over
    `queues` channels by `table` (entry: queue) under `key` and `hash_info` (wire.rndis.RssHash)."""

    queues: int
    hash_info: int
    key: bytes
    table: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DatapathSwitched:
    """The host completed the guest's SWITCH_DATA_PATH (`vf`: the path the guest asked for; the
    completion never says whether the host moved, netvsc spec B.3 item 42)."""

    vf: bool


@dataclass(frozen=True, slots=True)
class VfAssociation:
    """NVSP 4 VF association (type 128): a VF with `serial` is there (`allocated`) or gone."""

    allocated: bool
    serial: int

    def __post_init__(self) -> None:
        _u32("serial", self.serial)


@dataclass(frozen=True, slots=True)
class HostDatapathSwitched:
    """The host's own type-129 message: it moved the data path (OpenVMM sends it with `vf`
    False when it loses the VF, netvsc spec B.3 item 43)."""

    vf: bool


@dataclass(frozen=True, slots=True)
class VfMessageDropped:
    """A well-formed VF message (type 128 or 129) with a value outside what the protocol
    defines (`reason`), dropped: the session goes on, the data path is not touched."""

    msg_type: int
    reason: str


@dataclass(frozen=True, slots=True)
class IndirectionTable:
    """vRSS send table: entry i names the channel for flows hashing to i."""

    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        _need(len(self.channels) == wn.INDIRECTION_TABLE_SIZE,
              f"indirection table has {len(self.channels)} entries, not 16")


@dataclass(frozen=True, slots=True)
class SendTableFixed:
    """The host's send indirection table named channels past the `queues` in use (`bad`); they
    were reduced modulo `queues` (proto/rss.py check_send_table)."""

    queues: int
    bad: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BuffersRevoked:
    recv: bool
    send: bool


# ---- RNDIS events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RndisReady:
    """Initialize completed; the host's limits for packet aggregation."""

    major_version: int
    minor_version: int
    max_packets_per_message: int
    max_transfer_size: int
    alignment: int  # bytes, 1 << alignment_shift


@dataclass(frozen=True, slots=True)
class MacAddress:
    mac: bytes
    permanent: bool

    def __post_init__(self) -> None:
        _need(len(self.mac) == 6, f"MAC address must be 6 bytes, got {len(self.mac)}")

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.mac)


@dataclass(frozen=True, slots=True)
class Mtu:
    """OID_GEN_MAXIMUM_FRAME_SIZE: the largest frame payload, i.e. the MTU."""

    mtu: int

    def __post_init__(self) -> None:
        _u32("mtu", self.mtu)


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The link: OID_GEN_MEDIA_CONNECT_STATUS at bring-up, or a MEDIA_CONNECT / MEDIA_DISCONNECT
    indication (`indicated`; not compared: the same link either way)."""

    up: bool
    indicated: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class LinkSpeed:
    """The link speed: OID_GEN_LINK_SPEED at bring-up, or RNDIS_STATUS_LINK_SPEED_CHANGE later
    (`indicated`; Linux rndis_filter.c rndis_filter_receive_indicate_status)."""

    bits_per_second: int
    indicated: bool = False

    def __post_init__(self) -> None:
        _need(self.bits_per_second >= 0, f"negative link speed {self.bits_per_second}")


@dataclass(frozen=True, slots=True)
class OffloadCaps:
    """The parts of NDIS_OFFLOAD a tap-backed guest may act on (bit values: wire.rndis)."""

    revision: int
    size: int
    ip4_tx_csum: int
    ip4_rx_csum: int
    ip6_tx_csum: int
    ip6_rx_csum: int
    lsov2_ip4_encap: int
    lsov2_ip4_max_size: int
    lsov2_ip4_min_segments: int
    lsov2_ip6_encap: int
    lsov2_ip6_max_size: int
    lsov2_ip6_min_segments: int
    lsov2_ip6_options: int
    rsc_ip4: bool
    rsc_ip6: bool


@dataclass(frozen=True, slots=True)
class OffloadsConfigured:
    """The host accepted OID_TCP_OFFLOAD_PARAMETERS with these values (wire.rndis
    NdisOffloadParam for the checksums: 1 off, 2 tx, 3 rx, 4 tx+rx; NdisOffloadToggle for LSOv2
    and RSC: 1 off, 2 on). `lso_max_size`: the smallest LSOv2 maximum of the enabled families
    (0 when LSO is off), the largest packet the host segments."""

    ip4_checksum: int
    tcp4_checksum: int
    udp4_checksum: int
    tcp6_checksum: int
    udp6_checksum: int
    lsov2_ip4: int
    lsov2_ip6: int
    rsc_ip4: int
    rsc_ip6: int
    lso_max_size: int

    def __post_init__(self) -> None:
        for name in ("ip4_checksum", "tcp4_checksum", "udp4_checksum", "tcp6_checksum", "udp6_checksum"):
            if getattr(self, name) not in (1, 2, 3, 4):
                raise LocalProtocolError(f"OffloadsConfigured.{name} {getattr(self, name)!r} is not 1..4")
        for name in ("lsov2_ip4", "lsov2_ip6", "rsc_ip4", "rsc_ip6"):
            if getattr(self, name) not in (1, 2):
                raise LocalProtocolError(f"OffloadsConfigured.{name} {getattr(self, name)!r} is not 1 or 2")
        if not 0 <= self.lso_max_size <= _U32:
            raise LocalProtocolError(f"OffloadsConfigured.lso_max_size {self.lso_max_size!r} is not a u32")


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A caller's query/set, or an optional bring-up query, was answered with a failure status."""

    oid: int
    status: int


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Reply to RndisGuest.query(): the info buffer as sent by the host (bounds checked)."""

    oid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SetComplete:
    oid: int


@dataclass(frozen=True, slots=True)
class RndisConfigured:
    """Every bring-up query and set is done; the data path may start."""


@dataclass(frozen=True, slots=True)
class NetworkChange:
    """The host indicated RNDIS_STATUS_NETWORK_CHANGE (Linux re-reads link state and DHCP)."""


@dataclass(frozen=True, slots=True)
class StatusIndication:
    """An indicate-status the machine does not interpret."""

    status: int
    data: bytes


@dataclass(frozen=True, slots=True)
class IndicationDropped:
    """An indicate-status the machine understands but whose status buffer is unusable (`reason`),
    dropped: the indication is lost, the session goes on."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class KeepaliveDropped:
    """A KEEPALIVE request from the host, dropped unanswered: no real host sends one (OpenVMM has
    no sender and fails a guest's KEEPALIVE_CMPLT; Linux leaves one unhandled), VMBUS.md §4 item 21."""

    request_id: int


@dataclass(frozen=True, slots=True)
class ControlSendComplete:
    """The host completed the type-107 send `trans_id`: its send-buffer section is free again."""

    trans_id: int


@dataclass(frozen=True, slots=True)
class Halted:
    """The halt message was sent (RNDIS has no reply to it)."""


# ---- composition events (NetvscGuest) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionDropped:
    """A completion whose trans_id matches no outstanding request of either machine was dropped
    (VMBUS.md §4.15)."""

    trans_id: int


@dataclass(frozen=True, slots=True)
class ControlFallback:
    """The host did not take the RNDIS initialize sent GPA-direct (`reason`): control messages
    now travel in send sections and the initialize was sent again there, once."""

    reason: str


Event = (
    NvspReady | NdisConfigured | RecvBufReady | SendBufReady | SubchannelsGranted | SubchannelsRefused
    | DatapathSwitched | VfAssociation | HostDatapathSwitched | VfMessageDropped | IndirectionTable | SendTableFixed | BuffersRevoked | RndisReady
    | RssCaps | RssConfigured | MacAddress | Mtu | LinkStatus | LinkSpeed | OffloadCaps | OffloadsConfigured | RequestFailed | QueryResult
    | SetComplete | RndisConfigured | NetworkChange | StatusIndication | IndicationDropped | KeepaliveDropped
    | ControlSendComplete | Halted | CompletionDropped | ControlFallback
)
