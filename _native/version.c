#include <stddef.h>

#include "hvuio.h"

/* ABI facts Python checks: the version number and the C struct layouts. */

/* Bumped whenever hvuio_api.h / datapath_api.h change incompatibly or gain something the Python
 * wrapper needs; hvuio/native/__init__.py checks it at import. */
int hvu_abi_version(void) { return 6; }

/* Layout getters: tests/test_wire_vmbus.py compares them with ctypes and the golden JSON. */

#define HVU_SIZEOF(fn, type) size_t hvu_sizeof_##fn(void) { return sizeof(type); }
#define HVU_OFFSETOF(fn, type, field) \
    size_t hvu_offsetof_##fn##_##field(void) { return offsetof(type, field); }

HVU_SIZEOF(ring_hdr, struct hvu_ring_hdr)
HVU_OFFSETOF(ring_hdr, struct hvu_ring_hdr, write_index)
HVU_OFFSETOF(ring_hdr, struct hvu_ring_hdr, read_index)
HVU_OFFSETOF(ring_hdr, struct hvu_ring_hdr, interrupt_mask)
HVU_OFFSETOF(ring_hdr, struct hvu_ring_hdr, pending_send_sz)
HVU_OFFSETOF(ring_hdr, struct hvu_ring_hdr, feature_bits)
HVU_SIZEOF(pkt_desc, struct hvu_pkt_desc)
HVU_OFFSETOF(pkt_desc, struct hvu_pkt_desc, type)
HVU_OFFSETOF(pkt_desc, struct hvu_pkt_desc, offset8)
HVU_OFFSETOF(pkt_desc, struct hvu_pkt_desc, len8)
HVU_OFFSETOF(pkt_desc, struct hvu_pkt_desc, flags)
HVU_OFFSETOF(pkt_desc, struct hvu_pkt_desc, trans_id)
HVU_SIZEOF(xfer_hdr, struct hvu_xfer_hdr)
HVU_OFFSETOF(xfer_hdr, struct hvu_xfer_hdr, xfer_pageset_id)
HVU_OFFSETOF(xfer_hdr, struct hvu_xfer_hdr, range_cnt)
HVU_SIZEOF(xfer_range, struct hvu_xfer_range)
HVU_OFFSETOF(xfer_range, struct hvu_xfer_range, byte_count)
HVU_OFFSETOF(xfer_range, struct hvu_xfer_range, byte_offset)
HVU_SIZEOF(gpa, struct hvu_gpa)
HVU_OFFSETOF(gpa, struct hvu_gpa, len)
HVU_OFFSETOF(gpa, struct hvu_gpa, ofs)
HVU_OFFSETOF(gpa, struct hvu_gpa, page)
