/* Data path declarations Python may call through cffi. cdef-only, like hvuio_api.h:
 * no #include, no #if, no macros with arguments. datapath.h includes this file so the compiler
 * checks the same prototypes; build.py concatenates hvuio_api.h and this file into the cdef.
 *
 * Conventions: hvu_dp_rx / hvu_dp_tx / hvu_dp_run return an enum hvu_dp_status (>= 0) or a
 * negative errno:
 *   -EIO     a ring refused host data: hvu_dp_fault() names the ring, the reason and the value
 *   -EINVAL  bad argument or configuration (a bug in the caller)
 *   -EPIPE   with hvu_dp_fault() fd = HVU_DP_FD_TAP: a tap read returned 0 bytes, the end of the
 *            tap (a tap never hands over an empty frame; a pipe or socket standing in for it
 *            does once its writer is gone). The tap is not read again: hvu_dp_tx and hvu_dp_run
 *            return -EPIPE from then on; hvu_dp_rx still delivers to it.
 *   other    an fd operation failed (tap, irq or stop fd): the errno of that call
 * hvu_dp_init returns 0, -EINVAL, or -EMSGSIZE when the outbound ring's data area is below
 * HVU_DP_TX_RING_MIN (no message of the data path could ever be written to it).
 * Drops of single frames or packets are never errors: they are counted (dp_counters.h) and the
 * last one is remembered with its reason (hvu_dp_last_drop).
 */

struct hvu_dp;                 /* defined in datapath.h; Python allocates hvu_dp_sizeof() bytes */

enum hvu_dp_status {
    HVU_DP_IDLE = 0,           /* rx: inbound ring empty; tx: tap has no frame */
    HVU_DP_BUDGET = 1,         /* budget used up, more work may be waiting */
    HVU_DP_CONTROL = 2,        /* a packet for Python is at the head of the inbound ring (unread) */
    HVU_DP_BLOCKED = 3,        /* tx: no free send section or no room in the outbound ring */
    HVU_DP_STOPPED = 4,        /* run: stop_fd became readable */
    HVU_DP_TIMEOUT = 5         /* run: timeout_ms passed without a reason to return */
};

enum hvu_dp_flag {
    HVU_DP_F_VNET_HDR = 1,     /* tap frames carry a 12-byte virtio_net_hdr (IFF_VNET_HDR) */
    HVU_DP_F_BUSY_POLL = 2,    /* run never sleeps in poll(); it spins until stop/timeout */
    HVU_DP_F_MANAGE_MASK = 4,  /* run owns the inbound interrupt_mask: 1 while draining, 0 to sleep */
    HVU_DP_F_TX_HASH = 8,      /* TX: add a hash-value per-packet info (the channel's queue id) */
    /* Offloads (offload.h; hvuio/native/datapath.py maps the negotiated NDIS offloads to these): */
    HVU_DP_F_TAP_OFFLOAD = 16, /* the tap has TUNSETOFFLOAD != 0: its vnet headers may carry
                                * NEEDS_CSUM and TCP GSO; without this flag they are ignored */
    HVU_DP_F_TX_CSUM_TCP4 = 32, /* host computes TCP/IPv4 checksums (checksum per-packet info) */
    HVU_DP_F_TX_CSUM_UDP4 = 64,
    HVU_DP_F_TX_CSUM_TCP6 = 128,
    HVU_DP_F_TX_CSUM_UDP6 = 256,
    HVU_DP_F_TX_LSO4 = 512,    /* host segments TCP/IPv4 (LSOv2 per-packet info) */
    HVU_DP_F_TX_LSO6 = 1024,
    HVU_DP_F_RX_CSUM = 2048,   /* host checksum results become vnet DATA_VALID / NEEDS_CSUM */
    HVU_DP_F_WAKE_FD = 4096,   /* wake-ups come from wake_fd, not irq_fd (see hvu_dp_config) */
    HVU_DP_F_TAP_URING = 8192  /* batch tap I/O through an io_uring (tapio.c; io_* of the config):
                                * init falls back to one readv/writev per frame when the kernel
                                * refuses a ring (hvu_dp_tap_io says which mode runs) */
};

enum hvu_dp_const {
    HVU_DP_TX_TAG_SHIFT = 63,          /* data-path TX trans_id = (1 << 63) | section index */
    HVU_DP_TX_GPA_SHIFT = 62,          /* GPA-direct TX trans_id = (1 << 63) | (1 << 62) | slot */
    HVU_DP_GPA_MAX_SLOTS = 64,         /* GPA-direct slots tracked (one bitmap word) */
    HVU_DP_GPA_SLOT_PAGES_MAX = 32,    /* largest slot in 4 KiB pages (a range's PFN list) */
    HVU_DP_GPA_PFN_BITS = 40,          /* a page number is 1 .. (1 << 40) - 1 (hvuio/device/guestmem.py
                                        * MAX_PFN: 52-bit guest-physical addresses) */
    HVU_DP_NVS_MSG_SIZE = 40,          /* hn_nvs_rndis / hn_nvs_rndis_ack (golden) */
    HVU_DP_RNDIS_PKT_SIZE = 44,        /* rndis_packet_msg (golden) */
    HVU_DP_RNDIS_HASH_PPI_SIZE = 16,   /* RNDIS_PKTINFO_SIZE(4) (golden hn_derived) */
    HVU_DP_VNET_HDR_SIZE = 12,         /* virtio_net_hdr_mrg_rxbuf, the tap default vnet_hdr_sz */
    HVU_DP_PPI_SIZE = 16,              /* checksum, LSO, hash pktinfo: 12-byte head + 4 (golden
                                        * linux:derived_sizes NDIS_CSUM_PPI_SIZE / NDIS_LSO_PPI_SIZE) */
    HVU_DP_GSO_MAX = 65535 + 14 + 4,   /* largest tap frame with TSO on (IP total length + L2) */
    HVU_DP_RSC_MAX_FRAGS = 562,        /* golden linux:netvsc_misc NVSP_RSC_MAX */
    HVU_DP_RSC_MAX_BYTES = 65535 + 14 + 4, /* an RSC frame is at most 64 KiB of IP packet + L2 */
    HVU_DP_TX_RING_MIN = 72,           /* smallest outbound data area: the largest message the pump
                                        * writes (NVS 107 send or receive completion: 16-byte
                                        * descriptor + 40, 8-byte trailer) + the 8 bytes the ring
                                        * core always leaves free (ring.c ring_put) */
    HVU_NDIS_PKTINFO_CSUM = 0,         /* golden ndis_pktinfo_type NDIS_PKTINFO_TYPE_CSUM */
    HVU_NDIS_PKTINFO_LSO = 2,          /* NDIS_PKTINFO_TYPE_LSO */
    HVU_NDIS_PKTINFO_VLAN = 6,         /* NDIS_PKTINFO_TYPE_VLAN (Linux IEEE_8021Q_INFO) */
    HVU_RNDIS_PKTINFO_ID_TYPE = -2147483647, /* 0x80000001: RNDIS_PKTINFO_ID with the internal bit
                                        * (golden linux:ppi_type_words) */
    HVU_DP_ETH_HLEN = 14,
    HVU_DP_VLAN_HLEN = 4,
    HVU_DP_MAX_SECTIONS = 65536,       /* send-buffer sections tracked in the bitmap */
    HVU_DP_MTU_MIN = 68,               /* config mtu range: ETH_MIN_MTU .. */
    HVU_DP_MTU_MAX = 65535,            /* .. the largest IP total length */
    HVU_DP_OFFLOAD_HDRS_MIN = 128,     /* with tap offloads a section holds, after the RNDIS header
                                        * and two pktinfo, at least this much Ethernet + IP + TCP */
    HVU_DP_TX_AGG_ALIGN_MAX = 4096,    /* largest tx_agg_align (a power of two) */
    HVU_DP_FANOUT_MAX = 64,            /* fanout_fds: the other channels of a 64-channel NIC */
    HVU_DP_PENDING_MAX = 256,          /* receive completions held while the outbound ring is full */
    HVU_DP_IO_SLOTS_MAX = 256,         /* io_tx_slots, io_rx_slots: at most this many each */
    HVU_NVS_TYPE_RNDIS = 107,
    HVU_NVS_TYPE_RNDIS_ACK = 108,
    HVU_NVS_STATUS_OK = 1,
    HVU_NVS_STATUS_FAILED = 2,
    HVU_NVS_RNDIS_DATA = 0,
    HVU_NVS_RNDIS_CTRL = 1,
    HVU_RNDIS_PACKET_MSG = 1
};

/* Why a packet or frame was dropped (hvu_dp_last_drop). Values below 32 are the ring's
 * enum hvu_reason codes from hvu_xfer_check (transfer-page header and ranges, VMBUS.md §4.11). */
enum hvu_dp_reason {
    HVU_DP_NVS_SHORT = 32,     /* NVS payload shorter than the fields read (VMBUS.md §4.13) */
    HVU_DP_NVS_TYPE = 33,      /* transfer-page payload is not NVS type 107 / completion not 108 */
    HVU_DP_RNDIS_SHORT = 34,   /* range shorter than rndis_packet_msg */
    HVU_DP_RNDIS_LEN = 35,     /* msg_len beyond the range, or below data + pktinfo */
    HVU_DP_RNDIS_OFFSET = 36,  /* data_offset below 36 or data beyond msg_len */
    HVU_DP_RNDIS_DATA_LEN = 37, /* data_len shorter than an Ethernet header */
    HVU_DP_RNDIS_PKTINFO = 38, /* pktinfo offset/length/elements do not parse inside msg_len */
    HVU_DP_RX_OVERSIZE = 39,   /* frame longer than mtu + 14 + 4 */
    HVU_DP_TAP_WRITE = 40,     /* write to the tap failed (value = errno) */
    HVU_DP_COMP_UNKNOWN = 41,  /* TX completion for a section not outstanding (unknown/duplicate) */
    HVU_DP_TX_OVERSIZE = 42,   /* tap frame larger than a send section can hold */
    HVU_DP_TX_RUNT = 43,       /* tap frame shorter than an Ethernet header */
    HVU_DP_RNDIS_TYPE = 44,    /* RNDIS msg_type changed to non-data between the two reads */
    HVU_DP_VNET_FLAGS = 45,    /* tap vnet header: unknown flag bits (value = flags) */
    HVU_DP_VNET_GSO_TYPE = 46, /* tap vnet header: gso_type not NONE/TCPV4/TCPV6 (value = type) */
    HVU_DP_VNET_CSUM = 47,     /* csum_start/csum_offset outside the frame (value = start << 16 | off) */
    HVU_DP_VNET_GSO = 48,      /* GSO frame: gso_size 0, no NEEDS_CSUM, hdr_len beyond the frame, or
                                * headers that are not Ethernet/IP/TCP of the gso_type at csum_start */
    HVU_DP_RSC_SEQUENCE = 49,  /* RSC fragment out of order: no first, new first before the last,
                                * or another packet in between (value = flags) */
    HVU_DP_RSC_TOO_LONG = 50,  /* RSC: more than 562 fragments or 64 KiB (value = bytes so far) */
    HVU_DP_RSC_FRAME = 51,     /* RSC frame too long and not IP/TCP with matching lengths; or its
                                * IP + TCP headers alone fill the MTU (value = their length) */
    HVU_DP_RSC_CSUM = 52,      /* RSC frame to be cut for a tap without vnet header whose TCP
                                * checksum is wrong and was not vouched for by the host (value = the
                                * checksum found): cutting would launder it into valid segments */
    HVU_DP_GPA_COMP_UNKNOWN = 53, /* GPA-direct completion for a slot not outstanding (unknown/duplicate) */
    HVU_DP_RX_VLAN_PPI = 54,   /* 802.1Q pktinfo with fewer than 4 data bytes (value = its size) */
    HVU_DP_REASON_END = 55
};

enum hvu_dp_fd {
    HVU_DP_FD_NONE = 0,
    HVU_DP_FD_TAP = 1,
    HVU_DP_FD_IRQ = 2,
    HVU_DP_FD_STOP = 3,
    HVU_DP_FD_WAKE = 4
};

struct hvu_dp_config {
    struct hvu_ring *tx_ring;  /* outbound, attached HVU_RING_TX */
    struct hvu_ring *rx_ring;  /* inbound, attached HVU_RING_RX */
    void *recv_buf;            /* map 3: host-writable receive buffer */
    uint32_t recv_buf_size;
    uint32_t recv_section_size; /* slot size from the host's recv-buf reply: a range is at most this */
    void *send_buf;            /* map 4: the send buffer, send_section_count * send_section_size */
    uint32_t send_buf_size;
    uint32_t send_section_size; /* from the host's send-buf reply */
    uint32_t send_section_count;
    uint32_t send_section_first; /* this pump's sections are [first, first + count) of the send
                                * buffer (multi-queue: each channel's pump has its own share); the
                                * NVS 107 message names the buffer-wide index */
    void *pkt_buf;             /* private: one inbound ring packet (>= the largest packet accepted) */
    uint32_t pkt_buf_size;
    void *range_buf;           /* private: one range copied out of the receive buffer */
    uint32_t range_buf_size;   /* >= recv_section_size */
    int tap_fd;                /* non-blocking */
    int irq_fd;                /* uio fd (or the emulator's): poll/read 4 bytes, write 4 bytes */
    int wake_fd;               /* with HVU_DP_F_WAKE_FD: an eventfd (8-byte reads) polled instead
                                * of irq_fd: the pump of a subchannel, woken by the pump that owns
                                * irq_fd (uio has one interrupt for all channels); irq_fd is then
                                * only written (signals). Ignored without the flag */
    const int *fanout_fds;     /* eventfds to write 1 (8 bytes) to after each irq_fd wake-up: the
                                * other channels' pumps; NULL when fanout_count is 0 */
    uint32_t fanout_count;     /* <= HVU_DP_FANOUT_MAX */
    uint32_t idle_poll_ms;     /* 0, or the longest sleep in run: a channel whose inbound mask is
                                * never cleared raises no interrupt, so its pump looks this often */
    void *monitor_page;        /* map 2, or NULL for a channel without monitor_id */
    uint32_t monitor_id;       /* 0..127 when monitor_page is set */
    uint32_t mtu;              /* L3 MTU; frames up to mtu + 14 + 4 pass */
    uint32_t flags;            /* enum hvu_dp_flag */
    uint32_t tx_hash_value;    /* HVU_DP_F_TX_HASH: the value sent (the channel's queue index) */
    uint32_t busy_poll_us;     /* keep polling this long after the last packet before sleeping */
    void *tx_stage;            /* HVU_DP_F_TAP_OFFLOAD: private, one tap frame (>= HVU_DP_GSO_MAX) */
    uint32_t tx_stage_size;
    void *rsc_buf;             /* private: one RSC frame being assembled (>= HVU_DP_RSC_MAX_BYTES;
                                * without HVU_DP_F_VNET_HDR mtu + 18 more, where the segments of a
                                * frame longer than one MSS are cut), or NULL: RSC fragments are
                                * dropped (rx_rsc_drop) */
    uint32_t rsc_buf_size;
    uint32_t lso_max_size;     /* largest LSO packet the host takes (NDIS lsov2 max size) */
    /* TX aggregation, from the host's RNDIS initialize completion: */
    uint32_t tx_agg_packets;   /* RNDIS packets one send may carry (max_packets_per_message);
                                * 0 or 1 = one packet per send */
    uint32_t tx_agg_align;     /* all but the last padded to this (1 << packet_alignment_factor):
                                * a power of two <= 4096; 0 = 1 */
    uint32_t tx_agg_bytes;     /* most bytes of an aggregated send (max_transfer_size); 0 or more
                                * than a section = a section */
    /* GPA-direct TX (VMBUS.md §3.7; tx_gpa.c): RNDIS packets too large for a send section (jumbo
     * frames, LSO packets) are built in a slot of this pinned pool and sent as a type-9 packet
     * naming its pages. gpa_slot_size 0 = off (the other three are then ignored). */
    void *gpa_buf;             /* the pool: writable, the host reads it by page number */
    uint32_t gpa_buf_size;     /* a multiple of 4096 */
    const uint64_t *gpa_pfns;  /* gpa_buf_size / 4096 page numbers: page i of gpa_buf is
                                * gpa_pfns[i], each 1 .. (1 << 40) - 1 */
    uint32_t gpa_slot_size;    /* a multiple of 4096, at most 32 pages, holding the largest RNDIS
                                * message (header, hash + one more pktinfo, HVU_DP_GSO_MAX bytes:
                                * 17 pages); slots = min(gpa_buf_size / gpa_slot_size, 64) */
    /* Batched tap I/O (HVU_DP_F_TAP_URING; tapio.c): private memory, io_tx_slots slots of
     * io_tx_slot_size bytes (one tap read of a burst each) then io_rx_slots of io_rx_slot_size (one
     * queued tap write each). A TX slot holds the largest read the pump makes: vnet header, the
     * largest frame (mtu + 18, or tx_stage_size - 12 with HVU_DP_F_TAP_OFFLOAD) and one byte
     * more; an RX slot the vnet header and mtu + 18 (longer frames, RSC ones, are written
     * directly, after the queue). The memory must stay mapped until hvu_dp_close. */
    void *io_buf;
    uint32_t io_buf_size;
    uint32_t io_tx_slots;      /* 1 .. HVU_DP_IO_SLOTS_MAX */
    uint32_t io_tx_slot_size;
    uint32_t io_rx_slots;      /* 1 .. HVU_DP_IO_SLOTS_MAX */
    uint32_t io_rx_slot_size;
};

struct hvu_dp_fault {
    int ring;                  /* 0 none, 1 inbound (rx) ring, 2 outbound (tx) ring */
    int reason;                /* enum hvu_reason of that ring */
    uint64_t value;
    int fd;                    /* enum hvu_dp_fd: the fd whose last syscall failed, or 0 */
    int err;                   /* that syscall's errno */
};

struct hvu_dp_drop {
    int reason;                /* enum hvu_reason (< 32) or enum hvu_dp_reason */
    uint64_t value;            /* the offending value as read */
};

size_t hvu_dp_sizeof(void);
int hvu_dp_init(struct hvu_dp *dp, const struct hvu_dp_config *cfg);
int hvu_dp_rx(struct hvu_dp *dp, unsigned budget);
/* One RNDIS data message of a transfer-page packet the control path read (a mixed packet):
 * 0 frame written or RSC fragment taken, 1 dropped (counted), -EINVAL (longer than a receive
 * section, or no data path). Only on the pump's thread, between pump calls. */
int hvu_dp_rx_data(struct hvu_dp *dp, const uint8_t *msg, uint32_t len);
int hvu_dp_tx(struct hvu_dp *dp, unsigned budget);
int hvu_dp_run(struct hvu_dp *dp, int stop_fd, int timeout_ms, unsigned budget);
int hvu_dp_signal(struct hvu_dp *dp);
int hvu_dp_fault(const struct hvu_dp *dp, struct hvu_dp_fault *out);
int hvu_dp_last_drop(const struct hvu_dp *dp, struct hvu_dp_drop *out);
uint64_t hvu_dp_drop_count(const struct hvu_dp *dp, int reason);
const char *hvu_dp_reason_name(int reason);
uint32_t hvu_dp_sections_in_use(const struct hvu_dp *dp);
uint32_t hvu_dp_gpa_slots_in_use(const struct hvu_dp *dp);
uint32_t hvu_dp_gpa_slot_count(const struct hvu_dp *dp);
uint32_t hvu_dp_pending_completions(const struct hvu_dp *dp);
/* 1: tap I/O goes through the io_uring (HVU_DP_F_TAP_URING and the kernel gave a ring); 0: one
 * readv/writev per frame. hvu_dp_tap_io_error: the errno io_uring_setup failed with (0: none). */
int hvu_dp_tap_io(const struct hvu_dp *dp);
int hvu_dp_tap_io_error(const struct hvu_dp *dp);
/* Whether this kernel gives a pump with `slots` TX + RX slots its io_uring: the ring set-up the
 * pump makes (same size), closed at once. 0, or the errno io_uring_setup / mmap failed with, as
 * hvu_dp_tap_io_error would report it (EINVAL: `slots` 0, or more than a pump may have). */
int hvu_dp_tap_io_probe(uint32_t slots);
/* Reaps the queued tap writes and closes the io_uring (frames a burst read ahead and the pump did
 * not send are counted in tx_tap_closed). Call before the io memory goes; the data path is
 * unusable after. Safe twice, and without a ring. */
void hvu_dp_close(struct hvu_dp *dp);
int hvu_dp_counter_count(void);
const char *hvu_dp_counter_name(int i);
uint64_t hvu_dp_counter(const struct hvu_dp *dp, int i);
