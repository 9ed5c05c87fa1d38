"""Host-side wire codecs for the emulated network VSP: NVSP and RNDIS with `struct` only.

What lives here: the numbers (message types, status codes, OIDs, sizes) and small pack/parse
helpers the emulated host uses, written from tests/golden/wire-layouts.json (DPDK
`hn_nvs_*`, `rndis_*`, `ndis_*` structs and the `nvs_*`, `rndis_*`, `ndis_*` constant groups) and
from VMBUS.md §3.4–3.7. They are deliberately independent of `hvuio.wire` / `hvuio.proto` (the guest
side) so that one misreading of the layouts cannot hide on both sides; tests/test_sim_host_wire.py
checks every size and constant here against the golden file.

Also here: the packet records crossing the host boundary (`GuestPacket` in, `HostPacket` out) and
`parse_guest_packet` for raw ring bytes.

What must not live here: state, policy, I/O. Parsers take `bytes`, check lengths and raise
`HostWireError` (field, value, rule); they never read past the buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

# --- VMBus packet (VMBUS.md §3.4–3.7) --------------------------------------------------------------

PKT_INBAND: Final = 0x6  # VMBUS_CHANPKT_TYPE_INBAND
PKT_XFER_PAGES: Final = 0x7  # VMBUS_CHANPKT_TYPE_RXBUF
PKT_GPA_DIRECT: Final = 0x9  # VMBUS_CHANPKT_TYPE_GPA
PKT_COMPLETION: Final = 0xB  # VMBUS_CHANPKT_TYPE_COMP
FLAG_COMPLETION_REQUESTED: Final = 0x1  # VMBUS_CHANPKT_FLAG_RC
DESCRIPTOR_SIZE: Final = 16  # vmbus_chanpkt_hdr
XFER_HEADER_SIZE: Final = 24  # vmbus_chanpkt_rxbuf without ranges
XFER_RANGE_SIZE: Final = 8  # vmtransfer_page_range {byte_count, byte_offset}
MAX_XFER_RANGES: Final = 375  # OpenVMM NVSP_MAX_PACKETS_PER_RECEIVE (562 with RSC, Linux NETVSC_MAX_XFER_PAGE_RANGES)
GPA_HEADER_SIZE: Final = 24  # vmbus_chanpkt_sglist without ranges
HV_PAGE_SIZE: Final = 4096

# --- NVSP (golden: nvs_msg_type, nvs_status, nvs_version, hn_nvs_*) -----------------------------

NVSP_MSG_SIZE: Final = 40  # sizeof(struct nvsp_message); DPDK pads every request to it
NVSP_INIT: Final = 1
NVSP_INIT_COMPLETE: Final = 2
NVSP_SEND_NDIS_VERSION: Final = 100
NVSP_SEND_RECV_BUF: Final = 101
NVSP_SEND_RECV_BUF_COMPLETE: Final = 102
NVSP_REVOKE_RECV_BUF: Final = 103
NVSP_SEND_SEND_BUF: Final = 104
NVSP_SEND_SEND_BUF_COMPLETE: Final = 105
NVSP_REVOKE_SEND_BUF: Final = 106
NVSP_SEND_RNDIS_PKT: Final = 107
NVSP_SEND_RNDIS_PKT_COMPLETE: Final = 108
NVSP_SEND_NDIS_CONFIG: Final = 125
NVSP_SEND_VF_ASSOCIATION: Final = 128
NVSP_SWITCH_DATA_PATH: Final = 129
NVSP_OID_QUERY_EX: Final = 131
NVSP_OID_QUERY_EX_COMPLETE: Final = 132
NVSP_SUBCHANNEL: Final = 133
NVSP_SEND_INDIRECTION_TABLE: Final = 134

NVSP_STAT_NONE: Final = 0
NVSP_STAT_SUCCESS: Final = 1
NVSP_STAT_FAIL: Final = 2

NVSP_VERSION_1: Final = 0x00002
NVSP_VERSION_2: Final = 0x30002
NVSP_VERSION_4: Final = 0x40000
NVSP_VERSION_5: Final = 0x50000
NVSP_VERSION_6: Final = 0x60000
NVSP_VERSION_61: Final = 0x60001
# Every version a host knows, ascending (OpenVMM netvsp SUPPORTED_VERSIONS; golden nvs_version).
NVSP_VERSIONS: Final = (
    NVSP_VERSION_1, NVSP_VERSION_2, NVSP_VERSION_4, NVSP_VERSION_5, NVSP_VERSION_6, NVSP_VERSION_61,
)
NVSP_INVALID_VERSION: Final = 0xFFFFFFFF

RECV_BUFFER_ID: Final = 0xCAFE  # NVS_RXBUF_SIG / NETVSC_RECEIVE_BUFFER_ID
NO_SEND_SECTION: Final = 0xFFFFFFFF  # NVS_CHIM_IDX_INVALID
CHANNEL_TYPE_DATA: Final = 0  # NVS_RNDIS_MTYPE_DATA
CHANNEL_TYPE_CONTROL: Final = 1  # NVS_RNDIS_MTYPE_CTRL
SUBCHANNEL_ALLOCATE: Final = 1  # NVS_SUBCH_OP_ALLOC
DATAPATH_SYNTHETIC: Final = 0
DATAPATH_VF: Final = 1
NDIS_CONF_SRIOV: Final = 0x4  # NVS_NDIS_CONF_SRIOV (capability bit 2)
SEND_INDIRECTION_ENTRIES: Final = 16  # VRSS_SEND_TAB_SIZE

# Minimum payload sizes of guest→host NVSP messages: header + the message struct OpenVMM reads
# (its read_plain fails on less); offsets from golden hn_nvs_*. Linux and DPDK send 40 bytes.
NVSP_MIN_SIZE: Final[dict[int, int]] = {
    NVSP_INIT: 12,  # type, ver_min, ver_max
    NVSP_SEND_NDIS_VERSION: 12,  # type, major, minor
    NVSP_SEND_NDIS_CONFIG: 20,  # type, mtu, rsvd, caps(u64)
    NVSP_SEND_RECV_BUF: 12,  # type, gpadl, id(u16), reserved(u16)
    NVSP_SEND_SEND_BUF: 12,
    NVSP_REVOKE_RECV_BUF: 6,  # type, sig(u16)
    NVSP_REVOKE_SEND_BUF: 6,
    NVSP_SEND_RNDIS_PKT: 16,  # type, channel_type, section index, section size
    NVSP_SEND_RNDIS_PKT_COMPLETE: 8,  # type, status
    NVSP_SWITCH_DATA_PATH: 8,  # type, active_path
    NVSP_OID_QUERY_EX: 12,  # type, ndis object header, oid
    NVSP_SUBCHANNEL: 12,  # type, op, count
}

# Lowest NVSP version at which each guest→host message type exists (OpenVMM parse_packet gates).
NVSP_MIN_VERSION: Final[dict[int, int]] = {
    NVSP_SEND_NDIS_VERSION: NVSP_VERSION_1,
    NVSP_SEND_RECV_BUF: NVSP_VERSION_1,
    NVSP_REVOKE_RECV_BUF: NVSP_VERSION_1,
    NVSP_SEND_SEND_BUF: NVSP_VERSION_1,
    NVSP_REVOKE_SEND_BUF: NVSP_VERSION_1,
    NVSP_SEND_RNDIS_PKT: NVSP_VERSION_1,
    NVSP_SEND_NDIS_CONFIG: NVSP_VERSION_2,
    NVSP_SWITCH_DATA_PATH: NVSP_VERSION_4,
    NVSP_OID_QUERY_EX: NVSP_VERSION_5,
    NVSP_SUBCHANNEL: NVSP_VERSION_5,
}

# --- RNDIS (golden: rndis_msg_type, rndis_status, ndis_oid, rndis_* structs) --------------------

RNDIS_HEADER_SIZE: Final = 8  # rndis_msghdr {type, len}; body offsets count from here
RNDIS_PACKET_MSG: Final = 0x1
RNDIS_INITIALIZE_MSG: Final = 0x2
RNDIS_HALT_MSG: Final = 0x3
RNDIS_QUERY_MSG: Final = 0x4
RNDIS_SET_MSG: Final = 0x5
RNDIS_RESET_MSG: Final = 0x6
RNDIS_INDICATE_STATUS_MSG: Final = 0x7
RNDIS_KEEPALIVE_MSG: Final = 0x8
RNDIS_COMPLETION: Final = 0x80000000
RNDIS_INITIALIZE_CMPLT: Final = 0x80000002
RNDIS_QUERY_CMPLT: Final = 0x80000004
RNDIS_SET_CMPLT: Final = 0x80000005
RNDIS_RESET_CMPLT: Final = 0x80000006
RNDIS_KEEPALIVE_CMPLT: Final = 0x80000008

RNDIS_STATUS_SUCCESS: Final = 0x00000000
RNDIS_STATUS_MEDIA_CONNECT: Final = 0x4001000B
RNDIS_STATUS_MEDIA_DISCONNECT: Final = 0x4001000C
RNDIS_STATUS_NETWORK_CHANGE: Final = 0x40010018
RNDIS_STATUS_LINK_SPEED_CHANGE: Final = 0x40010013  # payload: u32 speed in 100 bit/s
RNDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG: Final = 0x40020006
RNDIS_STATUS_FAILURE: Final = 0xC0000001
RNDIS_STATUS_NOT_SUPPORTED: Final = 0xC00000BB
RNDIS_STATUS_BAD_VERSION: Final = 0xC0010004
RNDIS_STATUS_ADAPTER_NOT_READY: Final = 0xC0010011
RNDIS_STATUS_INVALID_LENGTH: Final = 0xC0010014
RNDIS_STATUS_INVALID_DATA: Final = 0xC0010015

RNDIS_MAJOR_VERSION: Final = 1
RNDIS_MINOR_VERSION: Final = 0
RNDIS_DF_CONNECTIONLESS: Final = 1
RNDIS_MEDIUM_802_3: Final = 0
NDIS_MEDIA_STATE_CONNECTED: Final = 0
NDIS_MEDIA_STATE_DISCONNECTED: Final = 1

# Message sizes including the 8-byte header (golden rndis_* sizes).
RNDIS_INIT_REQ_SIZE: Final = 24
RNDIS_INIT_COMP_SIZE: Final = 52
RNDIS_HALT_REQ_SIZE: Final = 12
RNDIS_QUERY_REQ_SIZE: Final = 28
RNDIS_QUERY_COMP_SIZE: Final = 24
RNDIS_SET_REQ_SIZE: Final = 28
RNDIS_SET_COMP_SIZE: Final = 16
RNDIS_STATUS_MSG_SIZE: Final = 20
RNDIS_KEEPALIVE_REQ_SIZE: Final = 12
RNDIS_KEEPALIVE_COMP_SIZE: Final = 16
RNDIS_PACKET_MSG_SIZE: Final = 44
RNDIS_PACKET_OFFSET_MIN: Final = 36  # RNDIS_PACKET_MSG_OFFSET_MIN: data may not overlap the header
RNDIS_PKTINFO_SIZE: Final = 12  # rndis_pktinfo {size, type, offset}

OID_GEN_SUPPORTED_LIST: Final = 0x00010101
OID_GEN_HARDWARE_STATUS: Final = 0x00010102
OID_GEN_MEDIA_SUPPORTED: Final = 0x00010103
OID_GEN_MEDIA_IN_USE: Final = 0x00010104
OID_GEN_MAXIMUM_LOOKAHEAD: Final = 0x00010105
OID_GEN_MAXIMUM_FRAME_SIZE: Final = 0x00010106
OID_GEN_LINK_SPEED: Final = 0x00010107
OID_GEN_TRANSMIT_BUFFER_SPACE: Final = 0x00010108
OID_GEN_RECEIVE_BUFFER_SPACE: Final = 0x00010109
OID_GEN_TRANSMIT_BLOCK_SIZE: Final = 0x0001010A
OID_GEN_RECEIVE_BLOCK_SIZE: Final = 0x0001010B
OID_GEN_VENDOR_ID: Final = 0x0001010C
OID_GEN_VENDOR_DESCRIPTION: Final = 0x0001010D
OID_GEN_CURRENT_PACKET_FILTER: Final = 0x0001010E
OID_GEN_CURRENT_LOOKAHEAD: Final = 0x0001010F
OID_GEN_DRIVER_VERSION: Final = 0x00010110
OID_GEN_MAXIMUM_TOTAL_SIZE: Final = 0x00010111
OID_GEN_MAC_OPTIONS: Final = 0x00010113
OID_GEN_MEDIA_CONNECT_STATUS: Final = 0x00010114
OID_GEN_MAXIMUM_SEND_PACKETS: Final = 0x00010115
OID_GEN_VENDOR_DRIVER_VERSION: Final = 0x00010116
OID_GEN_NETWORK_LAYER_ADDRESSES: Final = 0x00010118
OID_GEN_RECEIVE_SCALE_CAPABILITIES: Final = 0x00010203
OID_GEN_RECEIVE_SCALE_PARAMETERS: Final = 0x00010204
OID_GEN_RNDIS_CONFIG_PARAMETER: Final = 0x0001021B
OID_802_3_PERMANENT_ADDRESS: Final = 0x01010101
OID_802_3_CURRENT_ADDRESS: Final = 0x01010102
OID_802_3_MULTICAST_LIST: Final = 0x01010103
OID_802_3_MAXIMUM_LIST_SIZE: Final = 0x01010104
OID_802_3_RCV_ERROR_ALIGNMENT: Final = 0x01020101
OID_802_3_XMIT_ONE_COLLISION: Final = 0x01020102
OID_802_3_XMIT_MORE_COLLISIONS: Final = 0x01020103
OID_TCP_OFFLOAD_CURRENT_CONFIG: Final = 0xFC01020B
OID_TCP_OFFLOAD_PARAMETERS: Final = 0xFC01020C
OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES: Final = 0xFC01020D

# NDIS objects (golden ndis_objtype, ndis_offload, ndis_rss, ndis_offload_caps).
NDIS_OBJTYPE_DEFAULT: Final = 0x80
NDIS_OBJTYPE_RSS_CAPS: Final = 0x88
NDIS_OBJTYPE_RSS_PARAMS: Final = 0x89
NDIS_OBJTYPE_OFFLOAD: Final = 0xA7
NDIS_OFFLOAD_SIZE: Final = 156  # ndis_offload, revision 3
NDIS_OFFLOAD_REV_3: Final = 3
NDIS_OFFLOAD_PARAMS_SIZE_REV_1: Final = 20  # ndis_offload_params up to and including ndis_flags
NDIS_OFFLOAD_PARAM_OFF: Final = 1
NDIS_OFFLOAD_PARAM_TX: Final = 2
NDIS_OFFLOAD_PARAM_RX: Final = 3
NDIS_OFFLOAD_PARAM_TXRX: Final = 4
NDIS_OFFLOAD_LSOV1_ON: Final = 2
NDIS_OFFLOAD_LSOV2_OFF: Final = 1
NDIS_OFFLOAD_LSOV2_ON: Final = 2
NDIS_OFFLOAD_ENCAP_8023: Final = 2
NDIS_OFFLOAD_RSC_OFF: Final = 1  # NDIS_OFFLOAD_PARAMETERS_RSC_DISABLED
NDIS_OFFLOAD_RSC_ON: Final = 2  # NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED
NDIS_OFFLOAD_PARAMS_RSC_END: Final = 24  # rsc_ip_v4 at 22, rsc_ip_v6 at 23 (golden ndis_offload_params)
NDIS_RSS_CAPS_SIZE: Final = 18  # DPDK NDIS_RSS_CAPS_SIZE == sizeof(linux ndis_recv_scale_cap)
NDIS_RSS_CAPS_REV_2: Final = 2
NDIS_RSS_CAP_IPV4: Final = 0x100
NDIS_RSS_CAP_IPV6: Final = 0x200
NDIS_RSS_CAP_HASH_TOEPLITZ: Final = 0x1
NDIS_RSS_PARAMS_SIZE: Final = 40
NDIS_RSS_FLAG_DISABLE: Final = 0x10
NDIS_HASH_FUNCTION_MASK: Final = 0xFF
NDIS_HASH_KEYSIZE_TOEPLITZ: Final = 40
NDIS_HASH_INDCNT: Final = 128
# Checksum/LSO capability bits (each NDIS 2-bit field set to "supported" = 1).
CSUM_IP4OPT: Final = 0x1
CSUM_TCP4OPT: Final = 0x4
CSUM_TCP4: Final = 0x10
CSUM_UDP4: Final = 0x40
CSUM_IP4: Final = 0x100
CSUM_IP6EXT: Final = 0x1
CSUM_TCP6OPT: Final = 0x4
CSUM_TCP6: Final = 0x10
CSUM_UDP6: Final = 0x40
LSOV2_IP6_OPTS: Final = 0x5  # IP6EXT | TCP6OPT


class HostWireError(ValueError):
    """A guest message failed a size/offset rule; `field`, `value`, `rule` say which."""

    def __init__(self, field: str, value: int, rule: str) -> None:
        super().__init__(f"{field} = {value:#x}: {rule}")
        self.field = field
        self.value = value
        self.rule = rule


def u32s(data: bytes, offset: int, count: int, what: str) -> tuple[int, ...]:
    """`count` little-endian u32 at `offset`, or HostWireError naming `what` if short."""
    end = offset + 4 * count
    if offset < 0 or end > len(data):
        raise HostWireError(f"{what} length", len(data), f"needs at least {end} bytes")
    return struct.unpack_from(f"<{count}I", data, offset)


# --- VMBus packet framing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpaRange:
    """One GPA-direct range: `byte_count` bytes from `byte_offset` into the first of `pfns`."""

    byte_count: int
    byte_offset: int
    pfns: tuple[int, ...]


def parse_gpa_header(extra: bytes) -> tuple[GpaRange, ...]:
    """Parse the type-0x9 header bytes after the descriptor (VMBUS.md §3.7): rsvd, range_cnt, ranges."""
    if len(extra) < GPA_HEADER_SIZE - DESCRIPTOR_SIZE:
        raise HostWireError("gpa header length", len(extra), "needs 8 bytes (reserved, range_cnt)")
    (count,) = struct.unpack_from("<I", extra, 4)
    if count == 0:
        raise HostWireError("range_cnt", count, "GPA-direct packet needs at least one range")
    ranges: list[GpaRange] = []
    pos = 8
    for i in range(count):
        if pos + 8 > len(extra):
            raise HostWireError(f"ranges[{i}]", pos, "range header runs past the packet header")
        byte_count, byte_offset = struct.unpack_from("<II", extra, pos)
        pos += 8
        if byte_count == 0:  # [OV] vmbus_ring gparange.rs parse: EmptyByteCount
            raise HostWireError(f"ranges[{i}].byte_count", byte_count, "a GPA range needs at least one byte")
        if byte_offset > HV_PAGE_SIZE - 1:  # [OV] gparange.rs parse: OffsetTooLarge
            raise HostWireError(f"ranges[{i}].byte_offset", byte_offset, "must be at most 0xFFF")
        npages = (byte_offset + byte_count + HV_PAGE_SIZE - 1) // HV_PAGE_SIZE
        if npages == 0 or pos + 8 * npages > len(extra):
            raise HostWireError(f"ranges[{i}].pfn count", npages, "PFN list runs past the header")
        pfns = struct.unpack_from(f"<{npages}Q", extra, pos)
        pos += 8 * npages
        ranges.append(GpaRange(byte_count, byte_offset, tuple(pfns)))
    return tuple(ranges)


def encode_packet(
    ptype: int,
    flags: int,
    trans_id: int,
    payload: bytes,
    *,
    xfer_pageset_id: int = 0,
    ranges: tuple[tuple[int, int], ...] = (),
) -> bytes:
    """Descriptor + type header + payload, zero padded to 8 bytes (the ring adds the trailer)."""
    header = b""
    if ptype == PKT_XFER_PAGES:
        header = struct.pack("<HBBI", xfer_pageset_id, 0, 0, len(ranges))
        header += b"".join(struct.pack("<II", count, offset) for count, offset in ranges)
    hlen = DESCRIPTOR_SIZE + len(header)
    total = hlen + len(payload)
    padded = (total + 7) & ~7
    desc = struct.pack("<HHHHQ", ptype, hlen // 8, padded // 8, flags, trans_id)
    return desc + header + payload + bytes(padded - total)


# --- guest and host packets -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestPacket:
    """One guest→host VMBus packet: `extra` is the type header after the descriptor (0x9 only)."""

    type: int
    flags: int
    trans_id: int
    payload: bytes
    extra: bytes = b""
    channel: int = 0


def parse_guest_packet(raw: bytes, channel: int = 0) -> GuestPacket:
    """Split one guest packet as read from the ring (descriptor .. padding, no trailer).

    Rules of VMBUS.md §3.3/§4 (5, 6) as OpenVMM's ring parser applies them: `len8 * 8` equals the bytes
    given, `16 <= offset8 * 8 <= len8 * 8`. HostWireError names the offending field.
    """
    if len(raw) < DESCRIPTOR_SIZE:
        raise HostWireError("packet length", len(raw), "shorter than the 16-byte descriptor")
    ptype, offset8, len8, flags, trans_id = struct.unpack_from("<HHHHQ", raw)
    if len8 * 8 != len(raw):
        raise HostWireError("len8", len8, f"len8 * 8 must equal the {len(raw)} bytes read")
    if not DESCRIPTOR_SIZE <= offset8 * 8 <= len8 * 8:
        raise HostWireError("offset8", offset8, f"offset8 * 8 must lie in [16, {len8 * 8}]")
    hlen = offset8 * 8
    return GuestPacket(ptype, flags, trans_id, raw[hlen:], raw[DESCRIPTOR_SIZE:hlen], channel)


@dataclass(frozen=True, slots=True)
class HostPacket:
    """One host→guest VMBus packet for `channel` (0 = primary)."""

    channel: int
    type: int
    flags: int
    trans_id: int
    payload: bytes
    xfer_pageset_id: int = 0
    ranges: tuple[tuple[int, int], ...] = ()  # (byte_count, byte_offset) for type 0x7

    def encode(self) -> bytes:
        return encode_packet(self.type, self.flags, self.trans_id, self.payload,
                             xfer_pageset_id=self.xfer_pageset_id, ranges=self.ranges)


# --- NVSP builders (host → guest) ----------------------------------------------------------------


def nvsp(msg_type: int, *fields: int, pad_to: int = 0) -> bytes:
    """An NVSP message of u32 fields, zero padded to `pad_to` bytes."""
    body = struct.pack(f"<{1 + len(fields)}I", msg_type, *fields)
    return body + bytes(max(0, pad_to - len(body)))


def recv_buf_complete(status: int, sections: tuple[tuple[int, int, int, int], ...], pad_to: int) -> bytes:
    """Type 102: status, num_sections, sections {offset, sub_alloc_size, num_sub_allocs, end}."""
    body = struct.pack("<III", NVSP_SEND_RECV_BUF_COMPLETE, status, len(sections))
    body += b"".join(struct.pack("<IIII", *s) for s in sections)
    return body + bytes(max(0, pad_to - len(body)))


def indirection_table(entries: tuple[int, ...]) -> bytes:
    """Type 134: count, offset (from the start of the NVSP message, = 12), then count u32."""
    return struct.pack("<III", NVSP_SEND_INDIRECTION_TABLE, len(entries), 12) + struct.pack(
        f"<{len(entries)}I", *entries
    )


# --- RNDIS builders (host → guest) ---------------------------------------------------------------


def rndis(msg_type: int, body: bytes) -> bytes:
    """Header {type, len} + body."""
    return struct.pack("<II", msg_type, RNDIS_HEADER_SIZE + len(body)) + body


def rndis_init_complete(rid: int, status: int, max_packets: int, max_xfer: int, align_shift: int) -> bytes:
    return rndis(
        RNDIS_INITIALIZE_CMPLT,
        struct.pack(
            "<11I", rid, status, RNDIS_MAJOR_VERSION, RNDIS_MINOR_VERSION, RNDIS_DF_CONNECTIONLESS,
            RNDIS_MEDIUM_802_3, max_packets, max_xfer, align_shift, 0, 0,
        ),
    )


def rndis_query_complete(rid: int, status: int, info: bytes) -> bytes:
    # info buffer offset counts from byte 8: right after {rid, status, len, offset} = 16
    offset = 16 if info else 0
    return rndis(RNDIS_QUERY_CMPLT, struct.pack("<IIII", rid, status, len(info), offset) + info)


def rndis_status(status: int, payload: bytes = b"") -> bytes:
    offset = 12 if payload else 0  # after {status, buflen, offset}, counted from byte 8
    return rndis(RNDIS_INDICATE_STATUS_MSG, struct.pack("<III", status, len(payload), offset) + payload)


def rndis_packet(frame: bytes) -> bytes:
    """RNDIS_PACKET_MSG with the frame right after the 44-byte header (data offset 36 from byte 8)."""
    body = struct.pack(
        "<9I", RNDIS_PACKET_OFFSET_MIN, len(frame), 0, 0, 0, 0, 0, 0, 0
    )
    return rndis(RNDIS_PACKET_MSG, body + frame)


def ndis_offload(
    tx4: int, rx4: int, tx6: int, rx6: int, lso4: bool, lso6: bool, lso_max: int,
    rsc4: bool = False, rsc6: bool = False,
) -> bytes:
    """NDIS_OFFLOAD revision 3 (156 bytes) with checksum, LSOv2 and RSC filled, the rest zero."""
    enc = NDIS_OFFLOAD_ENCAP_8023
    csum = struct.pack("<8I", enc, tx4, enc, rx4, enc, tx6, enc, rx6)
    lsov1 = bytes(16)
    ipsecv1 = bytes(28)
    lsov2 = struct.pack(
        "<7I",
        enc if lso4 else 0, lso_max if lso4 else 0, 2 if lso4 else 0,
        enc if lso6 else 0, lso_max if lso6 else 0, 2 if lso6 else 0,
        LSOV2_IP6_OPTS if lso6 else 0,
    )
    hdr = struct.pack("<BBH", NDIS_OBJTYPE_OFFLOAD, NDIS_OFFLOAD_REV_3, NDIS_OFFLOAD_SIZE)
    flags_ipsecv2 = bytes(4 + 32)  # ndis_flags, ndis_ipsecv2: not offered
    rsc = struct.pack("<BB", int(rsc4), int(rsc6))  # ndis_rsc at 144 (golden ndis_offload)
    out = hdr + csum + lsov1 + ipsecv1 + lsov2 + flags_ipsecv2 + rsc
    return out + bytes(NDIS_OFFLOAD_SIZE - len(out))


def ndis_rss_caps(num_queues: int, table_entries: int) -> bytes:
    caps = NDIS_RSS_CAP_IPV4 | NDIS_RSS_CAP_IPV6 | NDIS_RSS_CAP_HASH_TOEPLITZ
    return struct.pack(
        "<BBHIIIH", NDIS_OBJTYPE_RSS_CAPS, NDIS_RSS_CAPS_REV_2, NDIS_RSS_CAPS_SIZE,
        caps, 1, num_queues, table_entries,
    )
