"""Typed stub of the compiled cffi module hvuio._native (and hvuio._native_asan, same API).

Only the package hvuio.native imports the module; the declarations mirror _native/hvuio_api.h,
_native/datapath_api.h and _native/trace_api.h (the cdef), which export every constant Python uses: in cffi API mode the
enum values are ints on `lib`. tests/test_native.py checks that this stub names exactly what the
compiled `lib` exports.

C values are cffi cdata objects. `CData` stands for any of them; the subclasses below name the
kinds the wrappers use (the struct pointers with their fields, the opaque ring and data-path
handles, integer arrays) so that no C handle is typed Any. They are names for the type checker
only: none of them exists at runtime, import them under TYPE_CHECKING.
"""

from typing import Literal, overload

from typing_extensions import Buffer

# ---- cdata kinds (type checking only) ---------------------------------------------------------

class CData:
    """Any cffi cdata: a pointer, an array, a struct, or ffi.NULL."""

    def __len__(self) -> int: ...  # arrays and ffi.from_buffer results
    def __add__(self, offset: int) -> CData: ...  # pointer arithmetic
    def __int__(self) -> int: ...  # integer-typed cdata (ffi.cast("uintptr_t", p))
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class IntArray(CData):
    """``uint8_t[]``, ``uint32_t[]``, ``uint64_t[]`` or ``int *``: items are ints."""

    def __getitem__(self, index: int) -> int: ...
    def __setitem__(self, index: int, value: int) -> None: ...

class CBuffer:
    """What ffi.buffer() returns: the bytes of a cdata, sliceable."""

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> bytes: ...
    def __setitem__(self, index: slice, value: Buffer) -> None: ...

class RingPtr(CData):
    """``struct hvu_ring *``: opaque, allocated as hvu_ring_sizeof() bytes."""

class DpPtr(CData):
    """``struct hvu_dp *``: opaque, allocated as hvu_dp_sizeof() bytes."""

class TracePtr(CData):
    """``struct hvu_trace *``: opaque, allocated as hvu_trace_sizeof() bytes."""

class RingHdrPtr(CData):
    """``struct hvu_ring_hdr *``"""

    write_index: int
    read_index: int
    interrupt_mask: int
    pending_send_sz: int
    feature_bits: int

class PktDesc(CData):
    """``struct hvu_pkt_desc`` (an item of PktDescArray) or a pointer to one."""

    type: int
    offset8: int
    len8: int
    flags: int
    trans_id: int

class PktDescArray(CData):
    """``struct hvu_pkt_desc[]``"""

    def __getitem__(self, index: int) -> PktDesc: ...

class Seg(CData):
    """``struct hvu_seg`` (an item of SegArray)."""

    ptr: CData
    len: int

class SegArray(CData):
    """``struct hvu_seg[]``"""

    def __getitem__(self, index: int) -> Seg: ...

class FaultPtr(CData):
    """``struct hvu_fault *``"""

    reason: int
    value: int

class DpConfigPtr(CData):
    """``struct hvu_dp_config *``"""

    tx_ring: RingPtr
    rx_ring: RingPtr
    recv_buf: CData
    recv_buf_size: int
    recv_section_size: int
    send_buf: CData
    send_buf_size: int
    send_section_size: int
    send_section_count: int
    send_section_first: int
    pkt_buf: CData
    pkt_buf_size: int
    range_buf: CData
    range_buf_size: int
    tap_fd: int
    irq_fd: int
    wake_fd: int
    fanout_fds: CData
    fanout_count: int
    idle_poll_ms: int
    monitor_page: CData
    monitor_id: int
    mtu: int
    flags: int
    tx_hash_value: int
    busy_poll_us: int
    tx_stage: CData
    tx_stage_size: int
    rsc_buf: CData
    rsc_buf_size: int
    lso_max_size: int
    tx_agg_packets: int
    tx_agg_align: int
    tx_agg_bytes: int
    gpa_buf: CData
    gpa_buf_size: int
    gpa_pfns: CData
    gpa_slot_size: int
    io_buf: CData
    io_buf_size: int
    io_tx_slots: int
    io_tx_slot_size: int
    io_rx_slots: int
    io_rx_slot_size: int

class DpFaultPtr(CData):
    """``struct hvu_dp_fault *``"""

    ring: int
    reason: int
    value: int
    fd: int
    err: int

class DpDropPtr(CData):
    """``struct hvu_dp_drop *``"""

    reason: int
    value: int

# ---- the module ---------------------------------------------------------------------------------

class FFI:
    NULL: CData
    @overload
    def new(self, cdecl: Literal["uint8_t[]", "uint32_t[]", "uint64_t[]", "int *"],
            init: int = ...) -> IntArray: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_pkt_desc[]"], init: int) -> PktDescArray: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_pkt_desc *"]) -> PktDesc: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_seg[]"], init: int) -> SegArray: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_ring_hdr *"]) -> RingHdrPtr: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_fault *"]) -> FaultPtr: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_dp_config *"]) -> DpConfigPtr: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_dp_fault *"]) -> DpFaultPtr: ...
    @overload
    def new(self, cdecl: Literal["struct hvu_dp_drop *"]) -> DpDropPtr: ...
    @overload
    def new(self, cdecl: str, init: object = ...) -> CData: ...
    @overload
    def cast(self, cdecl: Literal["struct hvu_ring *"], value: CData) -> RingPtr: ...
    @overload
    def cast(self, cdecl: Literal["struct hvu_dp *"], value: CData) -> DpPtr: ...
    @overload
    def cast(self, cdecl: Literal["struct hvu_trace *"], value: CData) -> TracePtr: ...
    @overload
    def cast(self, cdecl: str, value: CData | int) -> CData: ...
    def from_buffer(self, python_buffer: Buffer, require_writable: bool = ...) -> CData: ...
    def buffer(self, cdata: CData, size: int = ...) -> CBuffer: ...
    def string(self, cdata: CData, maxlen: int = ...) -> bytes: ...
    def sizeof(self, cdecl: str | CData) -> int: ...
    def offsetof(self, cdecl: str, *fields: str) -> int: ...
    def addressof(self, cdata: CData, *fields_or_indexes: str | int) -> CData: ...
    def release(self, cdata: CData) -> None: ...

class Lib:
    # hvuio_api.h: enum hvu_pkt_type, enum hvu_const
    HVU_PKT_INBAND: int
    HVU_PKT_XFER_PAGES: int
    HVU_PKT_GPA_DIRECT: int
    HVU_PKT_COMP: int
    HVU_PKT_FLAG_COMPLETION_REQUESTED: int
    HVU_DESC_SIZE: int
    HVU_TRAILER_SIZE: int
    HVU_FEAT_PENDING_SEND_SZ: int
    HVU_HV_PAGE_SIZE: int
    HVU_XFER_PAGESET_ID_NETVSC: int
    HVU_ACCEPT_DEFAULT: int
    HVU_MAX_LEN8: int
    HVU_RING_MIN_DATA: int
    HVU_MONITOR_PENDING_OFFSET: int
    HVU_MONITOR_MAX_ID: int
    # enum hvu_reason
    HVU_OK: int
    HVU_BAD_WRITE_INDEX: int
    HVU_BAD_READ_INDEX: int
    HVU_BAD_LEN8: int
    HVU_BAD_OFFSET8: int
    HVU_BAD_TYPE: int
    HVU_BAD_FLAGS: int
    HVU_SHORT: int
    HVU_TOO_BIG: int
    HVU_BAD_XFER_HDR: int
    HVU_BAD_PAGESET_ID: int
    HVU_BAD_RANGE_CNT: int
    HVU_BAD_RANGE: int
    HVU_REASON_COUNT: int
    # enum hvu_ring_dir
    HVU_RING_TX: int
    HVU_RING_RX: int

    # datapath_api.h: enum hvu_dp_status
    HVU_DP_IDLE: int
    HVU_DP_BUDGET: int
    HVU_DP_CONTROL: int
    HVU_DP_BLOCKED: int
    HVU_DP_STOPPED: int
    HVU_DP_TIMEOUT: int
    # enum hvu_dp_flag
    HVU_DP_F_VNET_HDR: int
    HVU_DP_F_BUSY_POLL: int
    HVU_DP_F_MANAGE_MASK: int
    HVU_DP_F_TX_HASH: int
    HVU_DP_F_TAP_OFFLOAD: int
    HVU_DP_F_TX_CSUM_TCP4: int
    HVU_DP_F_TX_CSUM_UDP4: int
    HVU_DP_F_TX_CSUM_TCP6: int
    HVU_DP_F_TX_CSUM_UDP6: int
    HVU_DP_F_TX_LSO4: int
    HVU_DP_F_TX_LSO6: int
    HVU_DP_F_RX_CSUM: int
    HVU_DP_F_WAKE_FD: int
    HVU_DP_F_TAP_URING: int
    # enum hvu_dp_const
    HVU_DP_TX_TAG_SHIFT: int
    HVU_DP_TX_GPA_SHIFT: int
    HVU_DP_GPA_MAX_SLOTS: int
    HVU_DP_GPA_SLOT_PAGES_MAX: int
    HVU_DP_GPA_PFN_BITS: int
    HVU_DP_NVS_MSG_SIZE: int
    HVU_DP_RNDIS_PKT_SIZE: int
    HVU_DP_RNDIS_HASH_PPI_SIZE: int
    HVU_DP_VNET_HDR_SIZE: int
    HVU_DP_PPI_SIZE: int
    HVU_DP_GSO_MAX: int
    HVU_DP_RSC_MAX_FRAGS: int
    HVU_DP_RSC_MAX_BYTES: int
    HVU_DP_TX_RING_MIN: int
    HVU_NDIS_PKTINFO_CSUM: int
    HVU_NDIS_PKTINFO_LSO: int
    HVU_NDIS_PKTINFO_VLAN: int
    HVU_RNDIS_PKTINFO_ID_TYPE: int
    HVU_DP_ETH_HLEN: int
    HVU_DP_VLAN_HLEN: int
    HVU_DP_MAX_SECTIONS: int
    HVU_DP_MTU_MIN: int
    HVU_DP_MTU_MAX: int
    HVU_DP_OFFLOAD_HDRS_MIN: int
    HVU_DP_TX_AGG_ALIGN_MAX: int
    HVU_DP_PENDING_MAX: int
    HVU_DP_IO_SLOTS_MAX: int
    HVU_DP_FANOUT_MAX: int
    HVU_NVS_TYPE_RNDIS: int
    HVU_NVS_TYPE_RNDIS_ACK: int
    HVU_NVS_STATUS_OK: int
    HVU_NVS_STATUS_FAILED: int
    HVU_NVS_RNDIS_DATA: int
    HVU_NVS_RNDIS_CTRL: int
    HVU_RNDIS_PACKET_MSG: int
    # enum hvu_dp_reason
    HVU_DP_NVS_SHORT: int
    HVU_DP_NVS_TYPE: int
    HVU_DP_RNDIS_SHORT: int
    HVU_DP_RNDIS_LEN: int
    HVU_DP_RNDIS_OFFSET: int
    HVU_DP_RNDIS_DATA_LEN: int
    HVU_DP_RNDIS_PKTINFO: int
    HVU_DP_RX_OVERSIZE: int
    HVU_DP_TAP_WRITE: int
    HVU_DP_COMP_UNKNOWN: int
    HVU_DP_TX_OVERSIZE: int
    HVU_DP_TX_RUNT: int
    HVU_DP_RNDIS_TYPE: int
    HVU_DP_VNET_FLAGS: int
    HVU_DP_VNET_GSO_TYPE: int
    HVU_DP_VNET_CSUM: int
    HVU_DP_VNET_GSO: int
    HVU_DP_RSC_SEQUENCE: int
    HVU_DP_RSC_TOO_LONG: int
    HVU_DP_RSC_FRAME: int
    HVU_DP_RSC_CSUM: int
    HVU_DP_GPA_COMP_UNKNOWN: int
    HVU_DP_RX_VLAN_PPI: int
    HVU_DP_REASON_END: int
    # enum hvu_dp_fd
    HVU_DP_FD_NONE: int
    HVU_DP_FD_TAP: int
    HVU_DP_FD_IRQ: int
    HVU_DP_FD_STOP: int
    HVU_DP_FD_WAKE: int

    # ---- hvuio_api.h functions ----
    def hvu_abi_version(self) -> int: ...
    def hvu_reason_name(self, reason: int) -> CData: ...
    def hvu_ring_sizeof(self) -> int: ...
    def hvu_ring_attach(self, r: RingPtr, base: CData, ring_size: int, header_size: int, dir: int) -> int: ...
    def hvu_ring_detach(self, r: RingPtr) -> None: ...
    def hvu_ring_set_accept(self, r: RingPtr, type_mask: int) -> int: ...
    def hvu_ring_fault(self, r: RingPtr, out: FaultPtr) -> int: ...
    def hvu_ring_data_size(self, r: RingPtr) -> int: ...
    def hvu_ring_header(self, r: RingPtr, out: RingHdrPtr) -> None: ...
    def hvu_ring_bytes_to_read(self, r: RingPtr) -> int: ...
    def hvu_ring_bytes_free(self, r: RingPtr) -> int: ...
    def hvu_ring_set_interrupt_mask(self, r: RingPtr, mask: int) -> None: ...
    def hvu_ring_set_pending_send_sz(self, r: RingPtr, bytes: int) -> int: ...
    def hvu_ring_set_feature_bits(self, r: RingPtr, bits: int) -> None: ...
    def hvu_ring_write(self, r: RingPtr, segs: SegArray | CData, nseg: int, signal: IntArray | CData) -> int: ...
    def hvu_ring_send(self, r: RingPtr, type: int, flags: int, trans_id: int, payload: SegArray | CData,
                      nseg: int, signal: IntArray | CData) -> int: ...
    def hvu_ring_send_hdr(self, r: RingPtr, type: int, flags: int, trans_id: int, hdr: CData, hdr_len: int,
                          payload: SegArray | CData, nseg: int, signal: IntArray | CData) -> int: ...
    def hvu_ring_peek(self, r: RingPtr, desc: PktDesc | CData) -> int: ...
    def hvu_ring_copyout(self, r: RingPtr, buf: CData, cap: int, desc: PktDesc | CData) -> int: ...
    def hvu_ring_consume(self, r: RingPtr) -> int: ...
    def hvu_ring_first(self, r: RingPtr, desc: PktDesc | CData) -> int: ...
    def hvu_ring_next(self, r: RingPtr, desc: PktDesc | CData) -> int: ...
    def hvu_ring_close(self, r: RingPtr) -> int: ...
    def hvu_ring_read_batch(self, r: RingPtr, buf: CData, cap: int, max_pkt: int, descs: PktDescArray | CData,
                            offsets: IntArray | CData, max: int, signal: IntArray | CData) -> int: ...
    def hvu_xfer_check(self, pkt: CData, len: int, pageset_id: int, recv_buf_size: int,
                       section_size: int, fault: FaultPtr) -> int: ...
    def hvu_ring_free_bytes(self, write_index: int, read_index: int, data_size: int) -> int: ...
    def hvu_ring_avail_bytes(self, write_index: int, read_index: int, data_size: int) -> int: ...
    def hvu_pending_send_clamp(self, pending_send_sz: int, data_size: int) -> int: ...
    def hvu_signal_after_write(self, interrupt_mask: int, read_index: int, old_write_index: int) -> int: ...
    def hvu_signal_after_read(self, feature_bits: int, pending_send_sz: int, data_size: int,
                              free_now: int, consumed: int) -> int: ...
    def hvu_monitor_signal(self, page: CData, page_len: int, monitor_id: int) -> int: ...
    def hvu_counter_count(self) -> int: ...
    def hvu_counter_name(self, i: int) -> CData: ...
    def hvu_ring_counter(self, r: RingPtr, i: int) -> int: ...
    def hvu_sizeof_ring_hdr(self) -> int: ...
    def hvu_offsetof_ring_hdr_write_index(self) -> int: ...
    def hvu_offsetof_ring_hdr_read_index(self) -> int: ...
    def hvu_offsetof_ring_hdr_interrupt_mask(self) -> int: ...
    def hvu_offsetof_ring_hdr_pending_send_sz(self) -> int: ...
    def hvu_offsetof_ring_hdr_feature_bits(self) -> int: ...
    def hvu_sizeof_pkt_desc(self) -> int: ...
    def hvu_offsetof_pkt_desc_type(self) -> int: ...
    def hvu_offsetof_pkt_desc_offset8(self) -> int: ...
    def hvu_offsetof_pkt_desc_len8(self) -> int: ...
    def hvu_offsetof_pkt_desc_flags(self) -> int: ...
    def hvu_offsetof_pkt_desc_trans_id(self) -> int: ...
    def hvu_sizeof_xfer_hdr(self) -> int: ...
    def hvu_offsetof_xfer_hdr_xfer_pageset_id(self) -> int: ...
    def hvu_offsetof_xfer_hdr_range_cnt(self) -> int: ...
    def hvu_sizeof_xfer_range(self) -> int: ...
    def hvu_offsetof_xfer_range_byte_count(self) -> int: ...
    def hvu_offsetof_xfer_range_byte_offset(self) -> int: ...
    def hvu_sizeof_gpa(self) -> int: ...
    def hvu_offsetof_gpa_len(self) -> int: ...
    def hvu_offsetof_gpa_ofs(self) -> int: ...
    def hvu_offsetof_gpa_page(self) -> int: ...
    def hvu_ring_bench(self, mem: CData, ring_size: int, header_size: int, payload_len: int,
                       iterations: int, scratch: CData, scratch_len: int) -> int: ...
    def hvu_memcpy_bench(self, mem: CData, ring_size: int, header_size: int, payload_len: int,
                         iterations: int, scratch: CData, scratch_len: int) -> int: ...

    # ---- datapath_api.h functions ----
    def hvu_dp_sizeof(self) -> int: ...
    def hvu_dp_init(self, dp: DpPtr, cfg: DpConfigPtr) -> int: ...
    def hvu_dp_rx(self, dp: DpPtr, budget: int) -> int: ...
    def hvu_dp_rx_data(self, dp: DpPtr, msg: CData, len: int) -> int: ...
    def hvu_dp_tx(self, dp: DpPtr, budget: int) -> int: ...
    def hvu_dp_run(self, dp: DpPtr, stop_fd: int, timeout_ms: int, budget: int) -> int: ...
    def hvu_dp_signal(self, dp: DpPtr) -> int: ...
    def hvu_dp_fault(self, dp: DpPtr, out: DpFaultPtr) -> int: ...
    def hvu_dp_last_drop(self, dp: DpPtr, out: DpDropPtr) -> int: ...
    def hvu_dp_drop_count(self, dp: DpPtr, reason: int) -> int: ...
    def hvu_dp_reason_name(self, reason: int) -> CData: ...
    def hvu_dp_sections_in_use(self, dp: DpPtr) -> int: ...
    def hvu_dp_gpa_slots_in_use(self, dp: DpPtr) -> int: ...
    def hvu_dp_gpa_slot_count(self, dp: DpPtr) -> int: ...
    def hvu_dp_pending_completions(self, dp: DpPtr) -> int: ...
    def hvu_dp_tap_io(self, dp: DpPtr) -> int: ...
    def hvu_dp_tap_io_error(self, dp: DpPtr) -> int: ...
    def hvu_dp_tap_io_probe(self, slots: int) -> int: ...
    def hvu_dp_close(self, dp: DpPtr) -> None: ...
    def hvu_dp_counter_count(self) -> int: ...
    def hvu_dp_counter_name(self, i: int) -> CData: ...
    def hvu_dp_counter(self, dp: DpPtr, i: int) -> int: ...

    # ---- trace_api.h ----
    HVU_TRACE_IF_FRAMES: int
    HVU_TRACE_IF_CONTROL: int
    HVU_TRACE_IN: int
    HVU_TRACE_OUT: int
    HVU_TRACE_EPB_OVERHEAD: int
    HVU_TRACE_MAX_DATA: int
    HVU_TRACE_FRAMES: int
    HVU_TRACE_FRAMES_CAPPED: int
    HVU_TRACE_CONTROL: int
    HVU_TRACE_CONTROL_CAPPED: int
    HVU_TRACE_WRITE_ERRORS: int
    HVU_TRACE_BYTES: int
    HVU_TRACE_COUNTERS: int
    def hvu_trace_sizeof(self) -> int: ...
    def hvu_trace_init(self, t: TracePtr, fd: int, max_bytes: int, used: int) -> int: ...
    def hvu_trace_block(self, t: TracePtr, iface: int, dir: int, data: CData | bytes, len: int) -> int: ...
    def hvu_trace_counter(self, t: TracePtr, which: int) -> int: ...
    def hvu_dp_set_trace(self, dp: DpPtr, t: TracePtr | CData) -> None: ...

ffi: FFI
lib: Lib
