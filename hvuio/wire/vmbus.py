"""VMBus ring wire formats: ctypes structs (little-endian, packed) and constants.

What lives here: the ring header fields (VMBUS.md §3.1), the 16-byte packet descriptor (3.3), the
completion packet, the transfer-page header and range (3.6), the GPA-direct header and the
16-byte page-buffer GPA range (3.7), packet types and flags (3.4, 3.5) and the well-known class
GUIDs (2.7). tests/test_wire_vmbus.py checks every size and offset against
tests/golden/wire-layouts.json and against the C structs.

What must not: any I/O, any ring logic (that is _native/ring.c and hvuio/sim/vsp/ring.py), any NVSP
or RNDIS message (hvuio/wire/nvsp.py, hvuio/wire/rndis.py).
"""

from __future__ import annotations

import ctypes
import enum
import uuid

HV_PAGE_SIZE = 4096
"""Hyper-V's page unit (HV_HYP_PAGE_SIZE); GPA page numbers count in it (VMBUS.md §0, 3.7)."""

RING_HEADER_FIELDS_SIZE = 68
"""Bytes of the header page that carry fields; the data area starts at the guest PAGE_SIZE,
not here and not necessarily at 4096 (VMBUS.md §1.4 item 13)."""

DESC_SIZE = 16
TRAILER_SIZE = 8  # old write_index << 32 after every packet, not counted in len8 (VMBUS.md §3.3)
PACKET_ALIGN = 8  # len8/offset8 count 8-byte units (DPDK VMBUS_CHANPKT_SIZE_SHIFT 3)
INBAND_OFFSET8 = 2  # descriptor only: DPDK VMBUS_CHANPKT_HLEN_MIN
FEAT_PENDING_SEND_SZ = 0x1  # feature_bits bit 0 (VMBUS.md §3.1)
XFER_PAGESET_ID_NETVSC = 0xCAFE  # netvsc receive buffer id (VMBUS.md §3.6; DPDK NVS_RXBUF_SIG)
MAX_PAGE_BUFFER_COUNT = 32  # ranges in a page-buffer GPA packet (Linux, VMBUS.md §3.7 item 58)


class PacketType(enum.IntEnum):
    """enum vmbus_packet_type (VMBUS.md §3.4); DPDK names INBAND, RXBUF, GPA, COMP for 6, 7, 9, 11."""

    INVALID = 0x0
    SYNCH = 0x1
    ADD_XFER_PAGESET = 0x2
    RM_XFER_PAGESET = 0x3
    ESTABLISH_GPADL = 0x4
    TEARDOWN_GPADL = 0x5
    DATA_INBAND = 0x6
    DATA_USING_XFER_PAGES = 0x7
    DATA_USING_GPADL = 0x8
    DATA_USING_GPA_DIRECT = 0x9
    CANCEL_REQUEST = 0xA
    COMP = 0xB
    DATA_USING_ADDITIONAL_PKT = 0xC
    ADDITIONAL_DATA = 0xD


class PacketFlag(enum.IntFlag):
    """Descriptor flags (VMBUS.md §3.5): only bit 0 exists; any other bit is corruption."""

    NONE = 0
    COMPLETION_REQUESTED = 0x1


ACCEPTED_TYPES = frozenset({PacketType.DATA_INBAND, PacketType.DATA_USING_XFER_PAGES,
                            PacketType.DATA_USING_GPA_DIRECT, PacketType.COMP})
"""The only types a strict reader accepts (OpenVMM, VMBUS.md §3.4 and 4.9)."""


class _Struct(ctypes.LittleEndianStructure):
    _pack_ = 1


class RingHeader(_Struct):
    """First 68 bytes of a ring's header page (Linux hv_ring_buffer, DPDK vmbus_bufring)."""

    _fields_ = [
        ("write_index", ctypes.c_uint32),
        ("read_index", ctypes.c_uint32),
        ("interrupt_mask", ctypes.c_uint32),
        ("pending_send_sz", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32 * 12),
        ("feature_bits", ctypes.c_uint32),
    ]


class PacketDescriptor(_Struct):
    """vmpacket_descriptor / vmbus_chanpkt_hdr: offset8 and len8 in 8-byte units (VMBUS.md §3.3)."""

    _fields_ = [
        ("type", ctypes.c_uint16),
        ("offset8", ctypes.c_uint16),
        ("len8", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("trans_id", ctypes.c_uint64),
    ]


class CompletionPacket(_Struct):
    """A completion (type 0xb) is the descriptor alone, payload after it (DPDK vmbus_chanpkt)."""

    _fields_ = [("hdr", PacketDescriptor)]


class TransferPageRange(_Struct):
    """vmtransfer_page_range / vmbus_rxbuf_desc: a slice of the receive buffer (map 3)."""

    _fields_ = [
        ("byte_count", ctypes.c_uint32),
        ("byte_offset", ctypes.c_uint32),
    ]


class TransferPageHeader(_Struct):
    """Header of a type 0x7 packet; `range_cnt` TransferPageRange entries follow (VMBUS.md §3.6)."""

    _fields_ = [
        ("hdr", PacketDescriptor),
        ("xfer_pageset_id", ctypes.c_uint16),
        ("sender_owns_set", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8),
        ("range_cnt", ctypes.c_uint32),
    ]


class GpaRange(_Struct):
    """Page-buffer GPA range (DPDK vmbus_gpa, Linux hv_page_buffer): one 4 KiB page number."""

    _fields_ = [
        ("len", ctypes.c_uint32),
        ("ofs", ctypes.c_uint32),
        ("page", ctypes.c_uint64),
    ]


class GpaDirectHeader(_Struct):
    """Header of a type 0x9 packet; `range_cnt` GpaRange entries follow (DPDK vmbus_chanpkt_sglist)."""

    _fields_ = [
        ("hdr", PacketDescriptor),
        ("reserved", ctypes.c_uint32),
        ("range_cnt", ctypes.c_uint32),
    ]


# Well-known VMBus class GUIDs (VMBUS.md §2.7). Keys follow the golden file's names.
CLASS_GUIDS: dict[str, uuid.UUID] = {
    name: uuid.UUID(text) for name, text in {
        "network": "f8615163-df3e-46c5-913f-f2d2f965ed0e",
        "ide": "32412632-86cb-44a2-9b5c-50d1417354f5",
        "scsi": "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f",
        "synthfc": "2f9bcc4a-0069-4af3-b76b-6fd0be528cda",
        "keyboard": "f912ad6d-2b17-48ea-bd65-f927a61c7684",
        "mouse": "cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a",
        "synthvid": "da0a7802-e377-4aac-8e77-0558eb1073f8",
        "heartbeat": "57164f39-9115-4e78-ab55-382f3bd5422d",
        "shutdown": "0e0b6031-5213-4934-818b-38d90ced39db",
        "timesync": "9527e630-d0ae-497b-adce-e80ab0175caf",
        "kvp": "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6",
        "vss": "35fa2e29-ea23-4236-96ae-3a6ebacba440",
        "fcopy": "34d14be3-dee4-41c8-9ae7-6b174977c192",
        "dynamic_memory": "525074dc-8985-46e2-8057-a307dc18a502",
        "pcie": "44c4f61d-4444-4400-9d52-802e27ede19f",
        "network_direct": "8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501",
        "avma1": "f8e65716-3cb3-4a06-9a60-1889c5cccab5",
        "avma2": "3375baf4-9e15-4b30-b765-67acb10d607b",
        "rdv": "276aacf4-ac15-426c-98dd-7521ad3f01fe",
        "imc": "c376c1c3-d276-48d2-90a9-c04748072c60",
        # OpenHCL devices (VMBUS.md §2.7, [OV-INIT]); not in the kernel's table.
        "openhcl_get": "8dedd1aa-9056-49e4-bfd6-1bf90dc38ef0",
        "openhcl_uart": "8b60ccf6-709f-4c11-90b5-229c959a9e6a",
        "openhcl_crashdump": "427b03e7-4ceb-4286-b5fc-486f4a1dd439",
    }.items()
}

NIC_CLASS_GUID = CLASS_GUIDS["network"]
FCOPY_UIO_INSTANCE_GUID = uuid.UUID("eb765408-105f-49b6-b4aa-c123b64d17d4")  # [FCD], VMBUS.md §2.7


def guid_wire_bytes(guid: uuid.UUID) -> bytes:
    """The 16 bytes a GUID has in VMBus messages: first three fields little-endian (guid_t)."""
    return guid.bytes_le
