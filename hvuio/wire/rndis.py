"""RNDIS and NDIS wire formats: ctypes structs and constants.

What lives here: one little-endian ctypes struct per RNDIS message (each including the 8-byte
`{type, length}` header, as DPDK declares them), the NDIS objects carried in query/set info
buffers (object header, offload parameters, offload capabilities, RSS capabilities), and the
constants: message types, status codes, OIDs, medium, packet-filter bits, per-packet-info types.
Checked against tests/golden/wire-layouts.json by tests/test_wire_nvsp_rndis.py.

Offsets inside RNDIS messages (`info_buffer_offset`, `status_buffer_offset`, `data_offset`, ...)
count from byte 8, the end of the `{type, length}` header (`RNDIS_OFFSET_BASE`; golden
`rndis_offset_bases`).

What must not live here: validation of host values, state, I/O (see hvuio/proto/rndis.py).
"""

from __future__ import annotations

import ctypes
from enum import IntEnum, IntFlag

__all__ = [
    "RNDIS_HEADER_SIZE", "RNDIS_OFFSET_BASE", "RNDIS_MAJOR_VERSION", "RNDIS_MINOR_VERSION",
    "RNDIS_INIT_COMPLETE_MIN_LEN", "RNDIS_REQUEST_INFO_OFFSET", "RndisType", "RndisStatus",
    "Oid", "RndisMedium", "RndisDeviceFlags", "PacketFilter", "MediaState", "PpiType",
    "NdisObjectType", "NdisOffloadParam", "NdisOffloadToggle", "NdisOffloadEncap",
    "NdisTxCsumCap", "NdisLsov2Cap", "NDIS_OFFLOAD_PARAMS_REV_2", "NDIS_OFFLOAD_PARAMS_REV_3",
    "NDIS_OFFLOAD_PARAMS_SIZE", "NDIS_OFFLOAD_PARAMS_SIZE_6_1", "NDIS_OFFLOAD_REV_1",
    "NDIS_OFFLOAD_REV_2", "NDIS_OFFLOAD_REV_3", "NDIS_OFFLOAD_SIZE", "NDIS_OFFLOAD_SIZE_6_0",
    "NDIS_OFFLOAD_SIZE_6_1", "NDIS_RSS_CAPS_REV_2", "NDIS_RSS_CAPS_SIZE", "RndisStruct", "RndisHeader", "RndisInitRequest",
    "RndisInitComplete", "RndisHaltRequest", "RndisQueryRequest", "RndisQueryComplete",
    "RndisSetRequest", "RndisSetComplete", "RndisResetRequest", "RndisResetComplete",
    "RndisIndicateStatus", "RndisKeepaliveRequest", "RndisKeepaliveComplete", "RndisPacket",
    "RndisPerPacketInfo", "NdisObjectHeader", "NdisOffloadParams", "NdisCsumOffload",
    "NdisLsov1Offload", "NdisIpsecv1Offload", "NdisLsov2Offload", "NdisIpsecv2Offload",
    "NdisRscOffload", "NdisEncapOffload", "NdisOffload", "NdisRssCaps", "NdisRssParams", "RssCap", "RssHash",
    "NDIS_RSS_PARAMS_REV_2", "NDIS_RSS_PARAMS_SIZE", "NDIS_RSS_FLAG_DISABLE", "NDIS_RSS_KEY_SIZE",
    "NdisTxChecksumInfo", "NdisRxChecksumInfo", "NdisLsoV2Info", "RndisPktinfoId", "PktinfoIdFlag",
    "RNDIS_PKTINFO_ID_TYPE", "RNDIS_PKTINFO_ID_V1", "NDIS_PPI_SIZE",
]

RNDIS_HEADER_SIZE = 8
#: Offsets in RNDIS messages are counted from here (RNDIS_*_OFFSET_ABS(0) = 8).
RNDIS_OFFSET_BASE = 8
RNDIS_MAJOR_VERSION = 1
RNDIS_MINOR_VERSION = 0
#: An initialize-complete may omit the trailing af_list_size (DPDK RNDIS_INIT_COMP_SIZE_MIN).
RNDIS_INIT_COMPLETE_MIN_LEN = 48
#: info_buffer_offset of our query/set requests: the data follows the 28-byte request
#: (RNDIS_QUERY_REQ_INFOBUFOFFSET = RNDIS_SET_REQ_INFOBUFOFFSET = 20, counted from byte 8).
RNDIS_REQUEST_INFO_OFFSET = 20


class RndisType(IntEnum):
    PACKET = 0x00000001
    INITIALIZE = 0x00000002
    INITIALIZE_COMPLETE = 0x80000002
    HALT = 0x00000003
    QUERY = 0x00000004
    QUERY_COMPLETE = 0x80000004
    SET = 0x00000005
    SET_COMPLETE = 0x80000005
    RESET = 0x00000006
    RESET_COMPLETE = 0x80000006
    INDICATE_STATUS = 0x00000007
    KEEPALIVE = 0x00000008
    KEEPALIVE_COMPLETE = 0x80000008


class RndisStatus(IntEnum):
    """RNDIS/NDIS status codes (the subset a netvsc guest meets; DPDK rndis.h values)."""

    SUCCESS = 0x00000000
    PENDING = 0x00000103
    MEDIA_CONNECT = 0x4001000B
    MEDIA_DISCONNECT = 0x4001000C
    LINK_SPEED_CHANGE = 0x40010013
    NETWORK_CHANGE = 0x40010018
    TASK_OFFLOAD_CURRENT_CONFIG = 0x40020006
    FAILURE = 0xC0000001
    RESOURCES = 0xC000009A
    NOT_SUPPORTED = 0xC00000BB
    BAD_VERSION = 0xC0010004
    INVALID_LENGTH = 0xC0010014
    INVALID_DATA = 0xC0010015
    BUFFER_TOO_SHORT = 0xC0010016
    INVALID_OID = 0xC0010017


class Oid(IntEnum):
    """NDIS object identifiers queried or set by hvuio."""

    GEN_MAXIMUM_FRAME_SIZE = 0x00010106
    GEN_LINK_SPEED = 0x00010107
    GEN_CURRENT_PACKET_FILTER = 0x0001010E
    GEN_MAXIMUM_TOTAL_SIZE = 0x00010111
    GEN_MEDIA_CONNECT_STATUS = 0x00010114
    GEN_RECEIVE_SCALE_CAPABILITIES = 0x00010203
    GEN_RECEIVE_SCALE_PARAMETERS = 0x00010204
    GEN_RNDIS_CONFIG_PARAMETER = 0x0001021B
    OID_802_3_PERMANENT_ADDRESS = 0x01010101
    OID_802_3_CURRENT_ADDRESS = 0x01010102
    OID_802_3_MULTICAST_LIST = 0x01010103
    TCP_OFFLOAD_CURRENT_CONFIG = 0xFC01020B
    TCP_OFFLOAD_PARAMETERS = 0xFC01020C
    TCP_OFFLOAD_HARDWARE_CAPABILITIES = 0xFC01020D


class RndisMedium(IntEnum):
    MEDIUM_802_3 = 0


class RndisDeviceFlags(IntFlag):
    CONNECTIONLESS = 1
    CONNECTION_ORIENTED = 2


class PacketFilter(IntFlag):
    """OID_GEN_CURRENT_PACKET_FILTER bits.

    The low byte (DIRECTED..ALL_LOCAL) agrees in DPDK and both Linux headers. The four high bits
    disagree (golden `notes`): 0x1000..0x8000 in DPDK rndis.h and Linux RNDIS_PACKET_TYPE_*,
    0x100..0x800 in Linux NDIS_PACKET_TYPE_*. We spell them as DPDK and the RNDIS names do, and
    never set them: neither Linux nor DPDK netvsc does, and they are token-ring/FDDI filters that
    mean nothing on an Ethernet NIC.
    """

    NONE = 0
    DIRECTED = 0x1
    MULTICAST = 0x2
    ALL_MULTICAST = 0x4
    BROADCAST = 0x8
    SOURCE_ROUTING = 0x10
    PROMISCUOUS = 0x20
    SMT = 0x40
    ALL_LOCAL = 0x80
    GROUP = 0x1000
    ALL_FUNCTIONAL = 0x2000
    FUNCTIONAL = 0x4000
    MAC_FRAME = 0x8000


class MediaState(IntEnum):
    """OID_GEN_MEDIA_CONNECT_STATUS values."""

    CONNECTED = 0
    DISCONNECTED = 1


class PpiType(IntEnum):
    """Per-packet-info types (DPDK NDIS_PKTINFO_TYPE_*)."""

    CSUM = 0
    IPSEC = 1
    LSO = 2
    CLASSIFY = 3
    SGLIST = 5
    VLAN = 6
    ORIG = 7
    HASH_VALUE = 8  # also PKT_CANCELID
    HASH_INFO = 9  # also ORIG_NBLIST
    CACHE_NBLIST = 10
    PKT_PAD = 11


class NdisObjectType(IntEnum):
    DEFAULT = 0x80
    RSS_CAPS = 0x88
    RSS_PARAMS = 0x89
    OFFLOAD = 0xA7


class NdisOffloadParam(IntEnum):
    """Checksum fields of NdisOffloadParams."""

    NO_CHANGE = 0
    OFF = 1
    TX = 2
    RX = 3
    TX_RX = 4


class NdisOffloadToggle(IntEnum):
    """LSOv1/LSOv2/RSC fields of NdisOffloadParams."""

    NO_CHANGE = 0
    OFF = 1
    ON = 2


class NdisOffloadEncap(IntFlag):
    NONE = 0
    NULL = 1
    ENCAP_8023 = 2
    ENCAP_8023PQ = 4
    ENCAP_8023PQ_OOB = 8
    RFC1483 = 16


class NdisTxCsumCap(IntFlag):
    """Bits of the *_txcsum/*_rxcsum capability words (same values for rx and for IPv6)."""

    IP4OPT_OR_IP6EXT = 0x1
    TCPOPT = 0x4
    TCP = 0x10
    UDP = 0x40
    IP4 = 0x100


class NdisLsov2Cap(IntFlag):
    IP6EXT = 0x1
    TCP6OPT = 0x4


NDIS_OFFLOAD_PARAMS_REV_2 = 2
NDIS_OFFLOAD_PARAMS_REV_3 = 3
NDIS_OFFLOAD_PARAMS_SIZE = 28
NDIS_OFFLOAD_PARAMS_SIZE_6_1 = 22
NDIS_OFFLOAD_REV_1 = 1
NDIS_OFFLOAD_REV_2 = 2
NDIS_OFFLOAD_REV_3 = 3
NDIS_OFFLOAD_SIZE = 156
NDIS_OFFLOAD_SIZE_6_0 = 112
NDIS_OFFLOAD_SIZE_6_1 = 144
NDIS_RSS_CAPS_REV_2 = 2
NDIS_RSS_CAPS_SIZE = 18  # NdisRssCaps without its trailing pad (linux ndis_recv_scale_cap)
NDIS_RSS_PARAMS_REV_2 = 2
NDIS_RSS_PARAMS_SIZE = 40  # NdisRssParams (golden ndis_rss_params, linux:ndis_recv_scale_param)
#: NdisRssParams.flags: turn RSS off (Linux NDIS_RSS_PARAM_FLAG_DISABLE_RSS, DPDK NDIS_RSS_FLAG_DISABLE)
NDIS_RSS_FLAG_DISABLE = 0x10
#: Toeplitz key length (golden const ndis_hash NDIS_HASH_KEYSIZE_TOEPLITZ)
NDIS_RSS_KEY_SIZE = 40


class RssCap(IntFlag):
    """NdisRssCaps.capabilities bits (golden const ndis_rss NDIS_RSS_CAP_*; Linux names the three
    hash bits NDIS_RSS_CAPS_HASH_TYPE_TCP_IPV4/TCP_IPV6/TCP_IPV6_EX)."""

    HASH_TOEPLITZ = 0x1
    IPV4 = 0x100
    IPV6 = 0x200
    IPV6_EX = 0x400


class RssHash(IntFlag):
    """NdisRssParams.hash_info: hash function (low byte) and hash types (golden const ndis_hash)."""

    TOEPLITZ = 0x1
    IPV4 = 0x100
    TCP_IPV4 = 0x200
    IPV6 = 0x400
    IPV6_EX = 0x800
    TCP_IPV6 = 0x1000
    TCP_IPV6_EX = 0x2000

_u8 = ctypes.c_uint8
_u16 = ctypes.c_uint16
_u32 = ctypes.c_uint32


class RndisStruct(ctypes.LittleEndianStructure):
    _pack_ = 1


class RndisHeader(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32)]


class RndisInitRequest(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("major_version", _u32),
                ("minor_version", _u32), ("max_transfer_size", _u32)]


class RndisInitComplete(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("status", _u32),
                ("major_version", _u32), ("minor_version", _u32), ("device_flags", _u32),
                ("medium", _u32), ("max_packets_per_message", _u32), ("max_transfer_size", _u32),
                ("alignment_shift", _u32), ("af_list_offset", _u32), ("af_list_size", _u32)]


class RndisHaltRequest(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32)]


class RndisQueryRequest(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("oid", _u32),
                ("info_buffer_length", _u32), ("info_buffer_offset", _u32),
                ("device_vc_handle", _u32)]


class RndisQueryComplete(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("status", _u32),
                ("info_buffer_length", _u32), ("info_buffer_offset", _u32)]


class RndisSetRequest(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("oid", _u32),
                ("info_buffer_length", _u32), ("info_buffer_offset", _u32),
                ("device_vc_handle", _u32)]


class RndisSetComplete(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("status", _u32)]


class RndisResetRequest(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("reserved", _u32)]


class RndisResetComplete(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("status", _u32),
                ("addressing_reset", _u32)]


class RndisIndicateStatus(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("status", _u32),
                ("status_buffer_length", _u32), ("status_buffer_offset", _u32)]


class RndisKeepaliveRequest(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32)]


class RndisKeepaliveComplete(RndisStruct):
    _fields_ = [("type", _u32), ("length", _u32), ("request_id", _u32), ("status", _u32)]


class RndisPacket(RndisStruct):
    """Data message head (type 1); the data path itself lives in _native/, not here."""

    _fields_ = [("type", _u32), ("length", _u32), ("data_offset", _u32), ("data_length", _u32),
                ("oob_data_offset", _u32), ("oob_data_length", _u32),
                ("num_oob_data_elements", _u32), ("ppi_offset", _u32), ("ppi_length", _u32),
                ("vc_handle", _u32), ("reserved", _u32)]


class RndisPerPacketInfo(RndisStruct):
    """PPI head; `ppi_offset` counts from the start of this head (RNDIS_PKTINFO_OFFSET = 12)."""

    _fields_ = [("size", _u32), ("type", _u32), ("ppi_offset", _u32)]


class NdisObjectHeader(RndisStruct):
    _fields_ = [("type", _u8), ("revision", _u8), ("size", _u16)]


class NdisOffloadParams(ctypes.LittleEndianStructure):
    """OID_TCP_OFFLOAD_PARAMETERS body: 28 bytes (rev 3, NDIS 6.30) or its first 22 (rev 2)."""

    _fields_ = [("header", NdisObjectHeader), ("ip4_checksum", _u8), ("tcp4_checksum", _u8),
                ("udp4_checksum", _u8), ("tcp6_checksum", _u8), ("udp6_checksum", _u8),
                ("lsov1", _u8), ("ipsecv1", _u8), ("lsov2_ip4", _u8), ("lsov2_ip6", _u8),
                ("tcp4_connection", _u8), ("tcp6_connection", _u8), ("reserved", _u8),
                ("flags", _u32), ("ipsecv2", _u8), ("ipsecv2_ip4", _u8), ("rsc_ip4", _u8),
                ("rsc_ip6", _u8), ("encapsulated_packet_task_offload", _u8),
                ("encapsulation_types", _u8), ("reserved1", _u8 * 2)]


class NdisCsumOffload(RndisStruct):
    _fields_ = [("ip4_tx_encap", _u32), ("ip4_tx_csum", _u32), ("ip4_rx_encap", _u32),
                ("ip4_rx_csum", _u32), ("ip6_tx_encap", _u32), ("ip6_tx_csum", _u32),
                ("ip6_rx_encap", _u32), ("ip6_rx_csum", _u32)]


class NdisLsov1Offload(RndisStruct):
    _fields_ = [("encap", _u32), ("max_size", _u32), ("min_segments", _u32), ("options", _u32)]


class NdisIpsecv1Offload(RndisStruct):
    _fields_ = [("encap", _u32), ("ah_esp", _u32), ("transport_tunnel", _u32),
                ("ip4_options", _u32), ("flags", _u32), ("ip4_ah", _u32), ("ip4_esp", _u32)]


class NdisLsov2Offload(RndisStruct):
    _fields_ = [("ip4_encap", _u32), ("ip4_max_size", _u32), ("ip4_min_segments", _u32),
                ("ip6_encap", _u32), ("ip6_max_size", _u32), ("ip6_min_segments", _u32),
                ("ip6_options", _u32)]


class NdisIpsecv2Offload(ctypes.LittleEndianStructure):
    _fields_ = [("encap", _u32), ("ip6", _u8), ("ip4_options", _u8), ("ip6_extension", _u8),
                ("ah", _u8), ("esp", _u8), ("ah_esp", _u8), ("transport", _u8),
                ("tunnel", _u8), ("transport_tunnel", _u8), ("lso", _u8),
                ("extended_sequence", _u8), ("reserved", _u8), ("udp_esp", _u32),
                ("authentication", _u32), ("encryption", _u32), ("sa_capabilities", _u32)]


class NdisRscOffload(RndisStruct):
    _fields_ = [("ip4", _u8), ("ip6", _u8)]


class NdisEncapOffload(RndisStruct):
    _fields_ = [("flags", _u32), ("max_header_size", _u32)]


class NdisOffload(ctypes.LittleEndianStructure):
    """OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES body: 156 bytes (rev 3); 144 (rev 2); 112 (rev 1)."""

    _fields_ = [("header", NdisObjectHeader), ("csum", NdisCsumOffload),
                ("lsov1", NdisLsov1Offload), ("ipsecv1", NdisIpsecv1Offload),
                ("lsov2", NdisLsov2Offload), ("flags", _u32), ("ipsecv2", NdisIpsecv2Offload),
                ("rsc", NdisRscOffload), ("reserved", _u8 * 2), ("encap_gre", NdisEncapOffload)]


class NdisRssCaps(RndisStruct):
    """OID_GEN_RECEIVE_SCALE_CAPABILITIES body as DPDK declares it (20 bytes, 18 on the wire)."""

    _fields_ = [("header", NdisObjectHeader), ("capabilities", _u32),
                ("num_interrupt_messages", _u32), ("num_receive_queues", _u32),
                ("num_indirection_entries", _u16), ("pad", _u16)]


class NdisRssParams(ctypes.LittleEndianStructure):
    """OID_GEN_RECEIVE_SCALE_PARAMETERS head (40 bytes, natural alignment as golden
    ndis_rss_params); the indirection table and the key follow at the offsets it names, counted
    from the start of this object. `table_size` and `key_size` are in bytes."""

    _fields_ = [("header", NdisObjectHeader), ("flags", _u16), ("base_cpu", _u16), ("hash_info", _u32),
                ("table_size", _u16), ("table_offset", _u32), ("key_size", _u16), ("key_offset", _u32),
                ("cpu_mask_offset", _u32), ("cpu_mask_count", _u32), ("cpu_mask_entry_size", _u32)]


# --- per-packet info of data messages (used by _native/tx.c and rx.c; declared here so the bit
# layout is checked against golden linux:ndis_tcp_ip_checksum_info / ndis_tcp_lso_info) ----------

#: Size of one checksum / LSO / hash pktinfo: 12-byte head + 4 (golden linux:derived_sizes).
NDIS_PPI_SIZE = 16
#: Type word of the RSC fragment id pktinfo: RNDIS_PKTINFO_ID (1) with the internal bit 31
#: (golden linux:ppi_type_words).
RNDIS_PKTINFO_ID_TYPE = 0x80000001
RNDIS_PKTINFO_ID_V1 = 1


class PktinfoIdFlag(IntFlag):
    """rndis_pktinfo_id.flag (golden linux:rndis_pktinfo_id_flags)."""

    SUBALLOC = 1
    FIRST_FRAG = 2
    LAST_FRAG = 4


class NdisTxChecksumInfo(ctypes.LittleEndianStructure):
    """Checksum pktinfo (type CSUM) on a guest send."""

    _fields_ = [("is_ipv4", _u32, 1), ("is_ipv6", _u32, 1), ("tcp_checksum", _u32, 1),
                ("udp_checksum", _u32, 1), ("ip_header_checksum", _u32, 1), ("reserved", _u32, 11),
                ("tcp_header_offset", _u32, 10), ("reserved2", _u32, 6)]


class NdisRxChecksumInfo(ctypes.LittleEndianStructure):
    """Checksum pktinfo (type CSUM) on a received packet: what the host verified."""

    _fields_ = [("tcp_checksum_failed", _u32, 1), ("udp_checksum_failed", _u32, 1),
                ("ip_checksum_failed", _u32, 1), ("tcp_checksum_succeeded", _u32, 1),
                ("udp_checksum_succeeded", _u32, 1), ("ip_checksum_succeeded", _u32, 1),
                ("loopback", _u32, 1), ("tcp_checksum_value_invalid", _u32, 1),
                ("ip_checksum_value_invalid", _u32, 1), ("reserved", _u32, 23)]


class NdisLsoV2Info(ctypes.LittleEndianStructure):
    """LSO pktinfo (type LSO), LSOv2 transmit form: type 1 = LSOv2, ip_version 0 = IPv4, 1 = IPv6."""

    _fields_ = [("mss", _u32, 20), ("tcp_header_offset", _u32, 10), ("type", _u32, 1),
                ("ip_version", _u32, 1)]


class RndisPktinfoId(RndisStruct):
    """RSC fragment id (Linux struct rndis_pktinfo_id)."""

    _fields_ = [("ver", _u8), ("flag", _u8), ("pkt_id", _u16)]
