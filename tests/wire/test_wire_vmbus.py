"""hvuio.wire.vmbus against tests/golden/wire-layouts.json (DPDK and Linux, compiled), and the C
structs (hvu_sizeof_*/hvu_offsetof_* getters) against both: three ways."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from hvuio.native.ring import Direction, Ring, layout
from hvuio.wire import vmbus as w

# golden struct -> (our ctypes struct, golden field name -> our field name)
STRUCTS: dict[str, tuple[type[ctypes.Structure], dict[str, str]]] = {
    "vmbus_bufring": (w.RingHeader, {"windex": "write_index", "rindex": "read_index",
                                     "imask": "interrupt_mask", "pending_send": "pending_send_sz",
                                     "reserved1": "reserved1", "feature_bits": "feature_bits",
                                     "feature_bits.value": "feature_bits"}),
    "linux:hv_ring_buffer": (w.RingHeader, {n: n for n in ("write_index", "read_index", "interrupt_mask",
                                                           "pending_send_sz", "reserved1", "feature_bits")}
                             | {"feature_bits.value": "feature_bits"}),
    "vmbus_chanpkt_hdr": (w.PacketDescriptor, {"type": "type", "hlen": "offset8", "tlen": "len8",
                                               "flags": "flags", "xactid": "trans_id"}),
    "vmbus_chanpkt": (w.CompletionPacket, {"hdr": "hdr"}),
    "vmbus_rxbuf_desc": (w.TransferPageRange, {"len": "byte_count", "ofs": "byte_offset"}),
    "vmbus_chanpkt_rxbuf": (w.TransferPageHeader, {"hdr": "hdr", "rxbuf_id": "xfer_pageset_id",
                                                   "rxbuf_cnt": "range_cnt"}),
    "vmbus_gpa": (w.GpaRange, {"len": "len", "ofs": "ofs", "page": "page"}),
    "vmbus_chanpkt_sglist": (w.GpaDirectHeader, {"hdr": "hdr", "rsvd": "reserved", "gpa_cnt": "range_cnt"}),
}


def golden_fields(golden: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in golden["structs"][name]["fields"]}


@pytest.mark.parametrize("gname", list(STRUCTS))
def test_ctypes_struct_matches_golden(golden: dict[str, Any], gname: str) -> None:
    ours, names = STRUCTS[gname]
    fields = golden_fields(golden, gname)
    spec = golden["structs"][gname]
    flex = [f for f in fields.values() if f.get("flexible")]
    if gname == "linux:hv_ring_buffer":
        # Linux pads the header to PAGE_SIZE; our struct is the 68 field bytes, data at header_size
        assert fields["reserved2"]["offset"] == w.RING_HEADER_FIELDS_SIZE
        assert fields["buffer"]["offset"] == spec["size"] == w.HV_PAGE_SIZE
    elif flex:
        assert [f["offset"] for f in flex] == [ctypes.sizeof(ours)]  # entries follow the header
    else:
        assert ctypes.sizeof(ours) == spec["size"]
    for gfield, ofield in names.items():
        desc = getattr(ours, ofield)
        assert desc.offset == fields[gfield]["offset"], gfield
        assert desc.size == fields[gfield]["size"], gfield
    covered = set(names) | {f["name"] for f in flex} | {"reserved2", "feature_bits.feat_pending_send_sz"}
    if gname == "vmbus_chanpkt_rxbuf":  # DPDK's u16 rsvd = Linux's sender_owns_set + reserved
        assert (w.TransferPageHeader.sender_owns_set.offset, w.TransferPageHeader.reserved.offset) == (18, 19)
        assert fields["rsvd"]["offset"] == 18 and fields["rsvd"]["size"] == 2
        covered.add("rsvd")
    assert set(fields) <= covered, set(fields) - covered


def test_feature_bit_position(golden: dict[str, Any]) -> None:
    bit = golden_fields(golden, "vmbus_bufring")["feature_bits.feat_pending_send_sz"]
    assert (bit["offset"], 1 << bit["bit_offset"], bit["bit_width"]) == (64, w.FEAT_PENDING_SEND_SZ, 1)
    assert golden["structs"]["vmbus_bufring"]["data_area_offset"] == w.HV_PAGE_SIZE


def test_packet_constants(golden: dict[str, Any]) -> None:
    linux = golden["constants"]["linux:vmbus_packet_type"]
    assert {f"VM_PKT_{t.name}": int(t) for t in w.PacketType} == linux
    dpdk = golden["constants"]["vmbus_chanpkt_type"]
    assert dpdk == {"VMBUS_CHANPKT_TYPE_INBAND": w.PacketType.DATA_INBAND,
                    "VMBUS_CHANPKT_TYPE_RXBUF": w.PacketType.DATA_USING_XFER_PAGES,
                    "VMBUS_CHANPKT_TYPE_GPA": w.PacketType.DATA_USING_GPA_DIRECT,
                    "VMBUS_CHANPKT_TYPE_COMP": w.PacketType.COMP}
    assert golden["constants"]["vmbus_chanpkt_flag"] == {"VMBUS_CHANPKT_FLAG_NONE": w.PacketFlag.NONE,
                                                         "VMBUS_CHANPKT_FLAG_RC": w.PacketFlag.COMPLETION_REQUESTED}
    assert golden["constants"]["linux:vmbus_packet_flag"] == {
        "VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED": w.PacketFlag.COMPLETION_REQUESTED}
    misc = golden["constants"]["vmbus_reg_misc"]
    assert 1 << misc["VMBUS_CHANPKT_SIZE_SHIFT"] == misc["VMBUS_CHANPKT_SIZE_ALIGN"] == w.PACKET_ALIGN
    assert misc["VMBUS_CHANPKT_HLEN_MIN"] == w.INBAND_OFFSET8
    assert golden["constants"]["linux:hyperv_misc"]["MAX_PAGE_BUFFER_COUNT"] == w.MAX_PAGE_BUFFER_COUNT


def test_guids(golden: dict[str, Any]) -> None:
    for name, text in golden["guids"].items():
        assert str(w.CLASS_GUIDS[name]) == text
        assert w.guid_wire_bytes(w.CLASS_GUIDS[name]).hex() == golden["guid_wire_bytes"][name]
    assert str(w.NIC_CLASS_GUID) == "f8615163-df3e-46c5-913f-f2d2f965ed0e"


def test_c_layouts_three_ways(golden: dict[str, Any]) -> None:
    c = layout()
    bufring = golden_fields(golden, "vmbus_bufring")
    assert c["sizeof_ring_hdr"] == ctypes.sizeof(w.RingHeader) == golden["structs"]["vmbus_bufring"]["size"]
    for ours, theirs in [("write_index", "windex"), ("read_index", "rindex"), ("interrupt_mask", "imask"),
                         ("pending_send_sz", "pending_send"), ("feature_bits", "feature_bits")]:
        assert c[f"offsetof_ring_hdr_{ours}"] == getattr(w.RingHeader, ours).offset == bufring[theirs]["offset"]
    hdr = golden_fields(golden, "vmbus_chanpkt_hdr")
    assert c["sizeof_pkt_desc"] == ctypes.sizeof(w.PacketDescriptor) == golden["structs"]["vmbus_chanpkt_hdr"]["size"]
    for ours, theirs in [("type", "type"), ("offset8", "hlen"), ("len8", "tlen"), ("flags", "flags"),
                         ("trans_id", "xactid")]:
        assert c[f"offsetof_pkt_desc_{ours}"] == getattr(w.PacketDescriptor, ours).offset == hdr[theirs]["offset"]
    # the C transfer-page header starts after the descriptor; the golden one includes it
    rxbuf = golden_fields(golden, "vmbus_chanpkt_rxbuf")
    assert 16 + c["sizeof_xfer_hdr"] == ctypes.sizeof(w.TransferPageHeader) == rxbuf["rxbuf"]["offset"]
    assert 16 + c["offsetof_xfer_hdr_xfer_pageset_id"] == w.TransferPageHeader.xfer_pageset_id.offset \
        == rxbuf["rxbuf_id"]["offset"]
    assert 16 + c["offsetof_xfer_hdr_range_cnt"] == w.TransferPageHeader.range_cnt.offset == rxbuf["rxbuf_cnt"]["offset"]
    desc = golden_fields(golden, "vmbus_rxbuf_desc")
    assert c["sizeof_xfer_range"] == ctypes.sizeof(w.TransferPageRange) == golden["structs"]["vmbus_rxbuf_desc"]["size"]
    assert c["offsetof_xfer_range_byte_count"] == w.TransferPageRange.byte_count.offset == desc["len"]["offset"]
    assert c["offsetof_xfer_range_byte_offset"] == w.TransferPageRange.byte_offset.offset == desc["ofs"]["offset"]
    gpa = golden_fields(golden, "vmbus_gpa")
    assert c["sizeof_gpa"] == ctypes.sizeof(w.GpaRange) == golden["structs"]["vmbus_gpa"]["size"]
    for f in ("len", "ofs", "page"):
        assert c[f"offsetof_gpa_{f}"] == getattr(w.GpaRange, f).offset == gpa[f]["offset"]


def test_ctypes_descriptor_parses_c_written_packet() -> None:
    mem = bytearray(4096 + 256)
    Ring(mem, direction=Direction.TX).send(w.PacketType.COMP, b"x" * 9, trans_id=42,
                                                         flags=w.PacketFlag.COMPLETION_REQUESTED)
    d = w.PacketDescriptor.from_buffer(mem, 4096)
    assert (d.type, d.offset8, d.len8, d.flags, d.trans_id) == (11, 2, 4, 1, 42)
    assert w.RingHeader.from_buffer(mem).write_index == 40
