"""NVSP (Network Virtual Service Protocol) wire formats: ctypes structs and constants.

What lives here: one little-endian ctypes struct per NVSP message hvuio sends or receives on the
primary netvsc channel, the message-type, version, status and capability constants next to them,
and the descending tuple of NVSP versions the guest offers. Every layout is checked against
`tests/golden/wire-layouts.json` (DPDK `hn_nvs_*` and Linux `nvsp_*`) by
tests/test_wire_nvsp_rndis.py.

Requests are padded to 40 bytes, the size of Linux's `struct nvsp_message` (4-byte header plus a
36-byte union); a host reads a whole `nvsp_message`, so a shorter request would let it read past
the packet. Responses are declared with the fields that carry information (as DPDK does) and a
`MIN_LEN` class attribute: the fewest bytes a host reply may have before its fields are read
(Linux `netvsc_send_completion` sizes).

What must not live here: validation of host values, state, I/O. Parsing policy is in
hvuio/proto/nvsp.py; the VMBus packet framing is in hvuio/wire/vmbus.py (not this module).
"""

from __future__ import annotations

import ctypes
from enum import IntEnum, IntFlag
from typing import ClassVar, TypeVar

__all__ = [
    "NVSP_MESSAGE_SIZE", "RECV_BUFFER_ID", "SEND_BUFFER_ID", "SEND_SECTION_NONE",
    "NvspType", "NvspVersion", "SUPPORTED_NVSP_VERSIONS", "NdisVersion", "ndis_version_for",
    "NvspStatus", "NdisConfigCap", "Datapath", "SubchannelOp", "RndisChannelType",
    "NvspStruct", "NvspHeader", "NvspInit", "NvspInitComplete", "NvspNdisConfig",
    "NvspNdisVersion", "NvspRecvBufConnect", "NvspRecvBufSection", "NvspRecvBufComplete",
    "NvspRevokeRecvBuf", "NvspSendBufConnect", "NvspSendBufComplete", "NvspRevokeSendBuf",
    "NvspSendRndisPacket", "NvspSendRndisPacketComplete", "NvspSwitchDatapath",
    "NvspVfAssociation", "NvspSubchannelRequest", "NvspSubchannelComplete",
    "NvspIndirectionTable", "INDIRECTION_TABLE_SIZE", "receive_ack", "to_bytes", "from_prefix",
]

#: sizeof(struct nvsp_message) in Linux; every DPDK request struct is padded to it.
NVSP_MESSAGE_SIZE = 40

#: Receive-buffer id in the connect/revoke messages (Linux NETVSC_RECEIVE_BUFFER_ID = DPDK
#: NVS_RXBUF_SIG = 0xcafe); it is also the xfer_pageset_id of every transfer-page packet.
RECV_BUFFER_ID = 0xCAFE

#: Send-buffer id in the connect/revoke messages. Linux sends 0 (NETVSC_SEND_BUFFER_ID), DPDK
#: 0xface (NVS_CHIM_SIG); see the golden `notes`. We follow Linux: it is the reference guest that
#: every Hyper-V host version is tested against, the id is never echoed back in the reply, and the
#: same value goes into the revoke message so the pair stays consistent. NvspGuest takes the id as
#: a parameter, so a host that insists on DPDK's value can still be served.
SEND_BUFFER_ID = 0

#: Section index meaning "no send-buffer section" (Linux NETVSC_INVALID_INDEX as u32,
#: DPDK NVS_CHIM_IDX_INVALID).
SEND_SECTION_NONE = 0xFFFFFFFF

#: Entries in the vRSS send indirection table (Linux VRSS_SEND_TAB_SIZE).
INDIRECTION_TABLE_SIZE = 16


class NvspType(IntEnum):
    """NVSP message types used by hvuio (Linux NVSP_MSG*_TYPE_*, DPDK NVS_TYPE_*)."""

    INIT = 1
    INIT_COMPLETE = 2
    SEND_NDIS_VERSION = 100
    SEND_RECV_BUF = 101
    SEND_RECV_BUF_COMPLETE = 102
    REVOKE_RECV_BUF = 103
    SEND_SEND_BUF = 104
    SEND_SEND_BUF_COMPLETE = 105
    REVOKE_SEND_BUF = 106
    SEND_RNDIS_PACKET = 107
    SEND_RNDIS_PACKET_COMPLETE = 108
    SEND_NDIS_CONFIG = 125
    SEND_VF_ASSOCIATION = 128
    SWITCH_DATA_PATH = 129
    SUBCHANNEL = 133  # request and response share the type
    SEND_INDIRECTION_TABLE = 134


class NvspVersion(IntEnum):
    """NVSP protocol versions (Linux NVSP_PROTOCOL_VERSION_*, DPDK NVS_VERSION_*)."""

    V1 = 0x00002
    V2 = 0x30002
    V4 = 0x40000
    V5 = 0x50000
    V6 = 0x60000
    V61 = 0x60001


#: Versions offered, newest first: the list both Linux (`netvsc_connect_vsp` ver_list, walked from
#: the end) and DPDK (`hn_nvs_version`) negotiate with.
SUPPORTED_NVSP_VERSIONS: tuple[NvspVersion, ...] = (
    NvspVersion.V61, NvspVersion.V6, NvspVersion.V5, NvspVersion.V4, NvspVersion.V2, NvspVersion.V1,
)


class NdisVersion(IntEnum):
    """NDIS versions as (major << 16) | minor (DPDK NDIS_VERSION_*)."""

    V6_1 = 0x60001
    V6_20 = 0x60014
    V6_30 = 0x6001E


def ndis_version_for(nvsp_version: int) -> NdisVersion:
    """NDIS version announced for a negotiated NVSP version: 6.1 up to NVSP 4, else 6.30.

    Same rule in Linux `netvsc_connect_vsp` and DPDK `hn_nvs_init`.
    """
    return NdisVersion.V6_1 if nvsp_version <= NvspVersion.V4 else NdisVersion.V6_30


class NvspStatus(IntEnum):
    """Status codes in NVSP replies (Linux NVSP_STAT_*; DPDK names only OK=1 and FAILED=2)."""

    NONE = 0
    SUCCESS = 1
    FAIL = 2
    PROTOCOL_TOO_NEW = 3
    PROTOCOL_TOO_OLD = 4
    INVALID_RNDIS_PKT = 5
    BUSY = 6
    PROTOCOL_UNSUPPORTED = 7


class NdisConfigCap(IntFlag):
    """Capability bits of the NDIS config message (Linux nvsp_2_vsc_capability bit order).

    DPDK names two of them: NVS_NDIS_CONF_SRIOV = 4 and NVS_NDIS_CONF_VLAN = 8.
    """

    VMQ = 1 << 0
    CHIMNEY = 1 << 1
    SRIOV = 1 << 2
    IEEE8021Q = 1 << 3
    CORRELATION_ID = 1 << 4
    TEAMING = 1 << 5
    VSUBNETID = 1 << 6
    RSC = 1 << 7


class Datapath(IntEnum):
    """Active data path in the switch-datapath message."""

    SYNTHETIC = 0
    VF = 1


class SubchannelOp(IntEnum):
    ALLOCATE = 1


class RndisChannelType(IntEnum):
    """`channel_type` of a send-RNDIS-packet message (DPDK NVS_RNDIS_MTYPE_*)."""

    DATA = 0
    CONTROL = 1


_u8 = ctypes.c_uint8
_u16 = ctypes.c_uint16
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64


class NvspStruct(ctypes.LittleEndianStructure):
    """Base: packed little-endian; `MIN_LEN` = fewest bytes a received message may have."""

    _pack_ = 1
    MIN_LEN: ClassVar[int] = 0


class NvspHeader(NvspStruct):
    _fields_ = [("type", _u32)]
    MIN_LEN = 4


class NvspInit(NvspStruct):
    """Type 1. min == max: Linux and DPDK offer one version per message."""

    _fields_ = [("type", _u32), ("ver_min", _u32), ("ver_max", _u32), ("reserved", _u8 * 28)]
    MIN_LEN = 40


class NvspInitComplete(NvspStruct):
    """Type 2, the completion of INIT."""

    _fields_ = [("type", _u32), ("negotiated_version", _u32), ("max_mdl_chain_len", _u32),
                ("status", _u32)]
    MIN_LEN = 16


class NvspNdisConfig(NvspStruct):
    """Type 125 (NVSP >= 2), no reply. `mtu` includes the 14-byte Ethernet header."""

    _fields_ = [("type", _u32), ("mtu", _u32), ("reserved", _u32), ("capabilities", _u64),
                ("reserved1", _u8 * 20)]
    MIN_LEN = 40


class NvspNdisVersion(NvspStruct):
    """Type 100, no reply."""

    _fields_ = [("type", _u32), ("ndis_major", _u32), ("ndis_minor", _u32),
                ("reserved", _u8 * 28)]
    MIN_LEN = 40


class NvspRecvBufConnect(NvspStruct):
    """Type 101, completion requested; reply type 102."""

    _fields_ = [("type", _u32), ("gpadl", _u32), ("id", _u16), ("reserved", _u8 * 30)]
    MIN_LEN = 40


class NvspRecvBufSection(NvspStruct):
    _fields_ = [("offset", _u32), ("sub_alloc_size", _u32), ("num_sub_allocs", _u32),
                ("end_offset", _u32)]
    MIN_LEN = 16


class NvspRecvBufComplete(NvspStruct):
    """Type 102: status, section count, then `num_sections` sections (one declared)."""

    _fields_ = [("type", _u32), ("status", _u32), ("num_sections", _u32),
                ("sections", NvspRecvBufSection * 1)]
    MIN_LEN = 28
    HEAD_LEN: ClassVar[int] = 12  # bytes before sections[0]


class NvspRevokeRecvBuf(NvspStruct):
    """Type 103, no reply."""

    _fields_ = [("type", _u32), ("id", _u16), ("reserved", _u8 * 34)]
    MIN_LEN = 40


class NvspSendBufConnect(NvspStruct):
    """Type 104, completion requested; reply type 105."""

    _fields_ = [("type", _u32), ("gpadl", _u32), ("id", _u16), ("reserved", _u8 * 30)]
    MIN_LEN = 40


class NvspSendBufComplete(NvspStruct):
    """Type 105."""

    _fields_ = [("type", _u32), ("status", _u32), ("section_size", _u32)]
    MIN_LEN = 12


class NvspRevokeSendBuf(NvspStruct):
    """Type 106, no reply."""

    _fields_ = [("type", _u32), ("id", _u16), ("reserved", _u8 * 34)]
    MIN_LEN = 40


class NvspSendRndisPacket(NvspStruct):
    """Type 107: an RNDIS message in a send-buffer section (or in GPA ranges if index is NONE)."""

    _fields_ = [("type", _u32), ("channel_type", _u32), ("section_index", _u32),
                ("section_size", _u32), ("reserved", _u8 * 24)]
    MIN_LEN = 16


class NvspSendRndisPacketComplete(NvspStruct):
    """Type 108: completion of a type-107 send, and the guest's ack of a receive packet."""

    _fields_ = [("type", _u32), ("status", _u32), ("reserved", _u8 * 32)]
    MIN_LEN = 8


class NvspSwitchDatapath(NvspStruct):
    """Type 129. Linux requests a completion (without payload), DPDK does not."""

    _fields_ = [("type", _u32), ("active_datapath", _u32), ("reserved", _u8 * 32)]
    MIN_LEN = 40


class NvspVfAssociation(NvspStruct):
    """Type 128, host to guest, in-band: whether a VF is associated, and its serial."""

    _fields_ = [("type", _u32), ("allocated", _u32), ("serial", _u32)]
    MIN_LEN = 12


class NvspSubchannelRequest(NvspStruct):
    """Type 133 request (NVSP >= 5), completion requested."""

    _fields_ = [("type", _u32), ("op", _u32), ("count", _u32), ("reserved", _u8 * 28)]
    MIN_LEN = 40


class NvspSubchannelComplete(NvspStruct):
    """Type 133 reply: status and the number of subchannels granted."""

    _fields_ = [("type", _u32), ("status", _u32), ("count", _u32), ("reserved", _u8 * 28)]
    MIN_LEN = 12


class NvspIndirectionTable(NvspStruct):
    """Type 134 head: `count` u32 channel numbers at byte `offset` of the message."""

    _fields_ = [("type", _u32), ("count", _u32), ("offset", _u32)]
    MIN_LEN = 12


_S = TypeVar("_S", bound=NvspStruct)


def receive_ack(status: int = NvspStatus.SUCCESS) -> bytes:
    """Payload of the completion (VMBus type 0xb, flags 0, the packet's trans_id) that returns a
    transfer-page packet's receive-buffer sections to the host (DPDK `hn_nvs_ack_rxbuf`)."""
    return to_bytes(NvspSendRndisPacketComplete(type=NvspType.SEND_RNDIS_PACKET_COMPLETE,
                                                status=status))


def to_bytes(msg: ctypes.Structure) -> bytes:
    """The wire bytes of one struct."""
    return bytes(memoryview(msg).cast("B"))


def from_prefix(cls: type[_S], data: bytes) -> _S:
    """Parse the first sizeof(cls) bytes of `data`; bytes past `len(data)` read as zero.

    The caller must have checked `len(data) >= cls.MIN_LEN`; only fields inside MIN_LEN carry
    host data (fields past it are zero when the host sent a short reply).
    """
    size = ctypes.sizeof(cls)
    chunk = bytes(data[:size])
    if len(chunk) < size:
        chunk += bytes(size - len(chunk))
    return cls.from_buffer_copy(chunk)
