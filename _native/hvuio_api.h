/* Declarations Python may call through cffi. cdef-only: no #include, no #if, no macros with
 * arguments. hvuio.h includes this file so the compiler checks the same prototypes.
 *
 * Conventions: functions return 0 or a count on success and a negative errno on failure:
 *   -EAGAIN  ring full (writer) or empty (reader)      -EINVAL  bad argument (a bug in the caller)
 *   -EMSGSIZE packet can never fit this ring            -EPERM   operation for the other direction
 *   -EIO     host data failed validation: hvu_ring_fault() names the reason and the value read;
 *            the ring stays refused until it is attached again.
 */

/* ---- ABI ---------------------------------------------------------------------------------- */
int hvu_abi_version(void);

/* ---- wire layouts (VMBUS.md §3.1, 3.3, 3.6, 3.7); little-endian hosts only ---------------------- */
struct hvu_ring_hdr {          /* first 68 bytes of a ring's header page; data at header_size */
    uint32_t write_index;
    uint32_t read_index;
    uint32_t interrupt_mask;
    uint32_t pending_send_sz;
    uint32_t reserved1[12];
    uint32_t feature_bits;     /* bit 0: feat_pending_send_sz */
};

struct hvu_pkt_desc {          /* 16-byte packet descriptor (Linux vmpacket_descriptor) */
    uint16_t type;
    uint16_t offset8;
    uint16_t len8;
    uint16_t flags;
    uint64_t trans_id;
};

struct hvu_xfer_range {        /* one transfer-page range (VMBUS.md §3.6) */
    uint32_t byte_count;
    uint32_t byte_offset;
};

struct hvu_xfer_hdr {          /* type-specific header of a type 0x7 packet, after the descriptor */
    uint16_t xfer_pageset_id;
    uint8_t sender_owns_set;
    uint8_t reserved;
    uint32_t range_cnt;
};

struct hvu_gpa {               /* one page-buffer GPA range (DPDK vmbus_gpa, VMBUS.md §3.7) */
    uint32_t len;
    uint32_t ofs;
    uint64_t page;
};

enum hvu_pkt_type {
    HVU_PKT_INBAND = 6,
    HVU_PKT_XFER_PAGES = 7,
    HVU_PKT_GPA_DIRECT = 9,
    HVU_PKT_COMP = 11
};

enum hvu_const {
    HVU_PKT_FLAG_COMPLETION_REQUESTED = 1,
    HVU_DESC_SIZE = 16,
    HVU_TRAILER_SIZE = 8,
    HVU_FEAT_PENDING_SEND_SZ = 1,
    HVU_HV_PAGE_SIZE = 4096,
    HVU_XFER_PAGESET_ID_NETVSC = 51966,  /* 0xCAFE */
    /* types accepted by default: 0x6, 0x7, 0x9, 0xb as bits of a mask (VMBUS.md §4.9) */
    HVU_ACCEPT_DEFAULT = 2752,
    HVU_MAX_LEN8 = 65535,      /* len8 is a u16 (VMBUS.md §3.3): a packet is at most 0xffff * 8 bytes */
    HVU_RING_MIN_DATA = 64,    /* smallest data area hvu_ring_attach takes (4 descriptors) */
    /* monitor page (VMBUS.md §3.12): trigger_group[g].pending at 8 + 8 * g, 4 groups x 32 bits */
    HVU_MONITOR_PENDING_OFFSET = 8,
    HVU_MONITOR_MAX_ID = 128   /* monitor ids 0..127 are representable */
};

/* ---- faults: why host data was refused ------------------------------------------------------ */
enum hvu_reason {
    HVU_OK = 0,
    HVU_BAD_WRITE_INDEX = 1,   /* peer write_index >= D or not 8-aligned (VMBUS.md §4.1) */
    HVU_BAD_READ_INDEX = 2,    /* peer read_index >= D or not 8-aligned (VMBUS.md §4.17) */
    HVU_BAD_LEN8 = 3,          /* len8*8 < 16 or len8*8 + 8 > readable (VMBUS.md §4.5) */
    HVU_BAD_OFFSET8 = 4,       /* offset8*8 < 16 or > len8*8 (VMBUS.md §4.6) */
    HVU_BAD_TYPE = 5,          /* type not in the accepted set (VMBUS.md §4.9) */
    HVU_BAD_FLAGS = 6,         /* a flag bit other than bit 0 (VMBUS.md §4.10) */
    HVU_SHORT = 7,             /* 0 < readable < 16 + 8 (VMBUS.md §4.3) */
    HVU_TOO_BIG = 8,           /* len8*8 > the caller's packet buffer (VMBUS.md §4.5) */
    HVU_BAD_XFER_HDR = 9,      /* transfer-page header does not fit offset8 (VMBUS.md §4.11) */
    HVU_BAD_PAGESET_ID = 10,   /* xfer_pageset_id is not the expected id (VMBUS.md §4.11) */
    HVU_BAD_RANGE_CNT = 11,    /* range_cnt 0 or ranges beyond the header (VMBUS.md §4.11) */
    HVU_BAD_RANGE = 12,        /* a range outside the receive buffer or over a section (4.11) */
    HVU_REASON_COUNT = 13
};

struct hvu_fault {
    int reason;                /* enum hvu_reason */
    uint64_t value;            /* the offending value as read */
};

const char *hvu_reason_name(int reason);

/* ---- the ring ------------------------------------------------------------------------------- */
struct hvu_ring;               /* defined in hvuio.h; Python allocates hvu_ring_sizeof() bytes */

struct hvu_seg {               /* one gather segment */
    const void *ptr;
    size_t len;
};

enum hvu_ring_dir {
    HVU_RING_TX = 0,           /* we write (outbound), the peer reads */
    HVU_RING_RX = 1            /* the peer writes (inbound), we read */
};

size_t hvu_ring_sizeof(void);
int hvu_ring_attach(struct hvu_ring *r, void *base, size_t ring_size, size_t header_size, int dir);
void hvu_ring_detach(struct hvu_ring *r);
int hvu_ring_set_accept(struct hvu_ring *r, uint32_t type_mask);
int hvu_ring_fault(const struct hvu_ring *r, struct hvu_fault *out);
uint32_t hvu_ring_data_size(const struct hvu_ring *r);
void hvu_ring_header(const struct hvu_ring *r, struct hvu_ring_hdr *out);
int64_t hvu_ring_bytes_to_read(struct hvu_ring *r);
int64_t hvu_ring_bytes_free(struct hvu_ring *r);
void hvu_ring_set_interrupt_mask(struct hvu_ring *r, uint32_t mask);
int hvu_ring_set_pending_send_sz(struct hvu_ring *r, uint32_t bytes);
void hvu_ring_set_feature_bits(struct hvu_ring *r, uint32_t bits);

/* writer (HVU_RING_TX); each ORs its signal decision into *signal (may be NULL) */
int hvu_ring_write(struct hvu_ring *r, const struct hvu_seg *segs, unsigned nseg, int *signal);
int hvu_ring_send(struct hvu_ring *r, uint16_t type, uint16_t flags, uint64_t trans_id,
                  const struct hvu_seg *payload, unsigned nseg, int *signal);
int hvu_ring_send_hdr(struct hvu_ring *r, uint16_t type, uint16_t flags, uint64_t trans_id,
                      const void *hdr, size_t hdr_len,
                      const struct hvu_seg *payload, unsigned nseg, int *signal);

/* reader (HVU_RING_RX): peek validates the next packet's descriptor (VMBUS.md §4.1-4.10); copyout
 * copies that packet and writes the validated descriptor into the copy; consume advances the
 * private read index. first = peek, next = consume + peek, close publishes read_index once and
 * returns 1 if the host must be signalled (VMBUS.md §3.11 b). */
int hvu_ring_peek(struct hvu_ring *r, struct hvu_pkt_desc *desc);
int hvu_ring_copyout(struct hvu_ring *r, void *buf, size_t cap, struct hvu_pkt_desc *desc);
int hvu_ring_consume(struct hvu_ring *r);
int hvu_ring_first(struct hvu_ring *r, struct hvu_pkt_desc *desc);
int hvu_ring_next(struct hvu_ring *r, struct hvu_pkt_desc *desc);
int hvu_ring_close(struct hvu_ring *r);
int hvu_ring_read_batch(struct hvu_ring *r, void *buf, size_t cap, size_t max_pkt,
                        struct hvu_pkt_desc *descs, uint32_t *offsets, unsigned max,
                        int *signal);

/* transfer-page header check on a private copy (VMBUS.md §4.11); 0 or -EIO with *fault set */
int hvu_xfer_check(const void *pkt, size_t len, uint16_t pageset_id, uint32_t recv_buf_size,
                   uint32_t section_size, struct hvu_fault *fault);

/* ---- pure decision functions (VMBUS.md §3.2, 3.11, 4.18) ----------------------------------------- */
uint32_t hvu_ring_free_bytes(uint32_t write_index, uint32_t read_index, uint32_t data_size);
uint32_t hvu_ring_avail_bytes(uint32_t write_index, uint32_t read_index, uint32_t data_size);
uint32_t hvu_pending_send_clamp(uint32_t pending_send_sz, uint32_t data_size);
int hvu_signal_after_write(uint32_t interrupt_mask, uint32_t read_index, uint32_t old_write_index);
int hvu_signal_after_read(uint32_t feature_bits, uint32_t pending_send_sz, uint32_t data_size,
                          uint32_t free_now, uint32_t consumed);

/* ---- monitored-channel signal (monitor.c, VMBUS.md §3.12): atomic OR of the trigger bit ---------- */
int hvu_monitor_signal(void *page, size_t page_len, uint32_t monitor_id);

/* ---- counters (counters.h) ------------------------------------------------------------------ */
int hvu_counter_count(void);
const char *hvu_counter_name(int i);
uint64_t hvu_ring_counter(const struct hvu_ring *r, int i);

/* ---- layout getters: C structs vs ctypes vs golden (tests/test_wire_vmbus.py) --------------- */
size_t hvu_sizeof_ring_hdr(void);
size_t hvu_offsetof_ring_hdr_write_index(void);
size_t hvu_offsetof_ring_hdr_read_index(void);
size_t hvu_offsetof_ring_hdr_interrupt_mask(void);
size_t hvu_offsetof_ring_hdr_pending_send_sz(void);
size_t hvu_offsetof_ring_hdr_feature_bits(void);
size_t hvu_sizeof_pkt_desc(void);
size_t hvu_offsetof_pkt_desc_type(void);
size_t hvu_offsetof_pkt_desc_offset8(void);
size_t hvu_offsetof_pkt_desc_len8(void);
size_t hvu_offsetof_pkt_desc_flags(void);
size_t hvu_offsetof_pkt_desc_trans_id(void);
size_t hvu_sizeof_xfer_hdr(void);
size_t hvu_offsetof_xfer_hdr_xfer_pageset_id(void);
size_t hvu_offsetof_xfer_hdr_range_cnt(void);
size_t hvu_sizeof_xfer_range(void);
size_t hvu_offsetof_xfer_range_byte_count(void);
size_t hvu_offsetof_xfer_range_byte_offset(void);
size_t hvu_sizeof_gpa(void);
size_t hvu_offsetof_gpa_len(void);
size_t hvu_offsetof_gpa_ofs(void);
size_t hvu_offsetof_gpa_page(void);

/* ---- benchmark: N x (write one packet, read it back) entirely in C; memcpy baseline --------- */
int64_t hvu_ring_bench(void *mem, size_t ring_size, size_t header_size, size_t payload_len,
                       uint64_t iterations, void *scratch, size_t scratch_len);
int64_t hvu_memcpy_bench(void *mem, size_t ring_size, size_t header_size, size_t payload_len,
                         uint64_t iterations, void *scratch, size_t scratch_len);
