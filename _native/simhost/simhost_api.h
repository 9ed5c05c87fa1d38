/* cdef-only declarations of hvuio.sim._simhost: the emulated HOST's data path (no #include, no #if).
 * Shared with no guest code (hvuio.h / ring.c are the guest's): the two sides check each other. */

enum hvu_sim_run {                 /* why hvu_sim_pump_run returned */
    HVU_SIM_RUN_TIMEOUT = 0,       /* timeout_us elapsed */
    HVU_SIM_RUN_WAKE = 1,          /* wake_fd readable (Python has work; the fd is not read) */
    HVU_SIM_RUN_CONTROL = 2,       /* the next outbound packet of channel last_chan is Python's */
    HVU_SIM_RUN_FAULT = 3,         /* ring violation: reason/value set, the pump is dead */
    HVU_SIM_RUN_SIGNAL = 4,        /* the guest must be interrupted (signal = 1, signal_mask) */
    HVU_SIM_RUN_STEER = 5          /* steer_buf holds frames for channels not served (vRSS) */
};

enum hvu_sim_reason {
    HVU_SIM_R_NONE = 0,
    /* faults: the outbound or inbound ring is corrupt (VMBUS.md §4.1-4.10) */
    HVU_SIM_R_BAD_WRITE_INDEX = 1,
    HVU_SIM_R_BAD_READ_INDEX = 2,
    HVU_SIM_R_SHORT_AVAIL = 3,
    HVU_SIM_R_BAD_LEN8 = 4,
    HVU_SIM_R_BAD_OFFSET8 = 5,
    HVU_SIM_R_BAD_TYPE = 6,
    HVU_SIM_R_BAD_FLAGS = 7,
    /* hand-offs: not the fast path's; Python's HostNvsp decides (reply, rejection or fault) */
    HVU_SIM_R_CONTROL = 16,
    HVU_SIM_R_NO_COMPLETION_FLAG = 17,
    HVU_SIM_R_NVSP_SHORT = 18,
    HVU_SIM_R_BAD_SECTION = 19,
    HVU_SIM_R_RNDIS_LEN = 21,
    HVU_SIM_R_RNDIS_TYPE = 22,
    HVU_SIM_R_RNDIS_DATA = 23,
    HVU_SIM_R_RNDIS_OOB = 24,
    HVU_SIM_R_RNDIS_PPI = 25,
    HVU_SIM_R_TOO_MANY_MSGS = 26,
    HVU_SIM_R_OFFLOAD = 27,        /* a checksum/LSO request the fast path refuses (Python re-checks) */
    HVU_SIM_R_AGGREGATION = 28,    /* strict: more RNDIS packets than max_packets_per_message, or one
                                    * not at the packet alignment (Python logs it) */
    HVU_SIM_R_RNDIS_HDR_RANGE = 29, /* an RNDIS packet header / per-packet info past the end of the
                                    * range it starts in (Python fails the send) */
    HVU_SIM_R_GPA_HEADER = 30,     /* a malformed GPA-direct range header (Python ends the channel) */
    HVU_SIM_R_GPA_PYTHON = 31,     /* a GPA-direct send the fast path leaves to Python: no guest memory
                                    * mapped, a send-buffer section too, or past the gather buffer */
    /* counted and consumed by the pump */
    HVU_SIM_R_UNKNOWN_TID = 32,
    HVU_SIM_R_COMPLETION_TYPE = 33,
    HVU_SIM_R_GPA_PAGE = 34,       /* a GPA-direct page outside guest memory: completed FAILED */
    HVU_SIM_R_VLAN = 35            /* handed to Python: a send with 802.1Q per-packet info (Python puts
                                    * the tag onto the wire frame) */
};

struct hvu_sim_counters {
    uint64_t tx_frames;            /* guest -> network frames written to the tap */
    uint64_t tx_bytes;
    uint64_t tx_net_errors;        /* write() to the tap failed (frame dropped, send completed) */
    uint64_t tx_completions;       /* NVSP 108 completions written */
    uint64_t tx_wait_ring_full;    /* drain paused: no inbound room for the completion */
    uint64_t rx_frames;            /* network -> guest frames put in receive sections */
    uint64_t rx_bytes;
    uint64_t rx_packets;           /* transfer-page packets written */
    uint64_t rx_dropped_no_section;
    uint64_t rx_dropped_too_big;
    uint64_t rx_dropped_ring_full;
    uint64_t rx_completions;       /* guest completions that freed our sections */
    uint64_t rx_completion_failed; /* ... whose NVSP status was not success */
    uint64_t completions_unknown;  /* id of a pump section that heads no batch in flight (repeated, forged) */
    uint64_t handoffs;             /* packets left for Python */
    uint64_t monitor_wakeups;      /* monitor trigger bits consumed */
    uint64_t signals;              /* guest interrupts (raised on irq, else requested from Python) */
    uint64_t passes;
    /* offloads (offload.c) */
    uint64_t tx_csum;              /* frames whose checksums the host filled (checksum info) */
    uint64_t tx_gso;               /* LSO frames handed to the tap whole (virtio_net_hdr GSO) */
    uint64_t tx_segments;          /* frames cut from LSO frames in software (tap without GSO) */
    uint64_t tx_offload_ignored;   /* checksum info for an offload not enabled: sent as it is */
    uint64_t tx_offload_race;      /* the guest changed an offloaded frame while we copied it */
    uint64_t rx_gso;               /* GSO frames read from the tap */
    uint64_t rx_segments;          /* ... cut into MSS frames for the guest */
    uint64_t rx_rsc_fragments;     /* ... sent as vRSC fragments */
    uint64_t rx_csum_completed;    /* NEEDS_CSUM frames whose checksum the host finished */
    uint64_t rx_dropped_bad_gso;   /* GSO/partial-checksum frames that did not parse */
    /* GPA-direct (simhost_gpa.c) */
    uint64_t tx_gpa;               /* type-9 data sends served from guest memory */
    uint64_t tx_gpa_rejected;      /* ... with a page outside guest memory: completed FAILED */
    uint64_t rx_vlan;              /* network frames delivered with their 802.1Q tag as per-packet info */
    /* vRSS (rss.c) */
    uint64_t rx_steered;           /* frames the guest's RSS table puts on a channel the pump does not
                                    * serve (its ring not added yet): to Python */
};

enum hvu_sim_off {                 /* offload bits of hvu_sim_pump.off_tx / off_rx */
    HVU_SIM_OFF_IP4 = 1,
    HVU_SIM_OFF_TCP4 = 2,
    HVU_SIM_OFF_UDP4 = 4,
    HVU_SIM_OFF_TCP6 = 8,
    HVU_SIM_OFF_UDP6 = 16,
    HVU_SIM_OFF_LSO4 = 32,
    HVU_SIM_OFF_LSO6 = 64,
    HVU_SIM_OFF_RSC4 = 128,
    HVU_SIM_OFF_RSC6 = 256
};

/* The emulated uio interrupt of one device (irq.c): raised by the pump or by Python. */
#define HVU_SIM_IRQ_MAX_CONNS 16
struct hvu_sim_irq {
    uint32_t lock;           /* spin lock word, 0 = free */
    uint32_t event;          /* the device's uio event count */
    uint32_t nconn;          /* open /dev/uioN sockets in conn[] */
    int conn[16];            /* HVU_SIM_IRQ_MAX_CONNS */
    uint64_t raised;         /* interrupts raised */
    uint64_t send_failed;    /* counts not queued on a reader's socket (it sees a later one) */
};
int hvu_sim_irq_set_conns(struct hvu_sim_irq *irq, const int *fds, uint32_t n);
uint32_t hvu_sim_irq_raise(struct hvu_sim_irq *irq, uint8_t *in_ring);
uint32_t hvu_sim_irq_event(struct hvu_sim_irq *irq);

struct hvu_sim_chan {              /* one channel of the NIC the pump serves; chans[0] is the primary */
    uint8_t *out_ring;             /* NULL: not served (its ring is not there yet) */
    uint8_t *in_ring;
    uint32_t *monitor_word;        /* or NULL (not monitored) */
    uint32_t monitor_bit;
    uint32_t rd;                   /* saved private indices while another channel is served */
    uint32_t wr;
    uint32_t pending_set;
    uint64_t rx_frames;            /* frames delivered on this channel */
    uint64_t rx_packets;
    uint64_t tx_frames;            /* frames sent from this channel's data sends */
    uint64_t signals;              /* interrupts for this channel */
};

struct hvu_sim_pump {
    /* --- configuration (caller fills, then hvu_sim_pump_init) --- */
    uint8_t *out_ring;       /* guest's outbound ring (host reads): header + data */
    uint8_t *in_ring;        /* guest's inbound ring (host writes) */
    uint32_t ring_size;      /* each ring, header included */
    uint32_t header_size;    /* PAGE_SIZE */
    uint8_t *recv_buf;       /* map 3 */
    uint64_t recv_size;
    uint32_t recv_section;   /* receive sub-allocation size */
    uint32_t recv_count;     /* sections in the receive buffer */
    uint8_t *send_buf;       /* map 4 */
    uint64_t send_size;
    uint32_t send_section;
    uint32_t *monitor_word;  /* trigger_group[id/32].pending, or NULL (not monitored) */
    uint32_t monitor_bit;
    int tap_fd;              /* plain Ethernet frames both ways; -1 = none */
    uint32_t max_frame;      /* NDIS MTU (Ethernet header included) */
    uint32_t nvsp_pad;       /* completions zero padded to this many payload bytes */
    uint32_t strict;         /* the RNDIS limits below apply */
    uint32_t rndis_max_pkts; /* strict: the RNDIS initialize completion's limits; a send past */
    uint32_t rndis_align;    /* them is Python's (a logged rejection) */
    uint32_t rx_enabled;     /* RNDIS packet filter non-zero: deliver frames */
    uint32_t rx_batch;       /* frames per transfer-page packet, 1..64 */
    uint32_t rx_layout;      /* 0 compact: range = message, frame after header + PPIs; 1 openvmm:
                              * range = message = section, frame at byte 256, checksum info always */
    uint64_t spin_ns;        /* look without sleeping for this long after traffic */
    uint32_t poll_ns;        /* sleep between ring polls while active */
    uint32_t idle_poll_ns;   /* ... after idle_after_ns without traffic */
    uint64_t idle_after_ns;
    struct hvu_sim_irq *irq; /* the device's interrupt: raise it here, or NULL = return SIGNAL */
    uint32_t auto_mask;      /* raising masks the inbound ring first (kernel profile) */
    /* caller-owned arrays of recv_count entries each, and a scratch buffer of max_frame+ bytes */
    uint8_t *sec_state;      /* 0 not ours, 1 free, 2 in flight, 3 in flight and first of its batch */
    uint32_t *free_stack;
    uint32_t *sec_next;      /* the next section of the same batch, or none */
    uint8_t *scratch;
    uint32_t scratch_len;
    /* --- offloads (offload.c; fields may change between runs) --- */
    uint32_t vnet_hdr;       /* tap_fd carries a 12-byte virtio_net_hdr before every frame */
    uint32_t tap_gso;        /* the tap takes and gives GSO frames (TUNSETOFFLOAD CSUM|TSO4|TSO6) */
    uint32_t off_tx;         /* HVU_SIM_OFF_* the guest enabled for transmit (checksum, LSOv2) */
    uint32_t off_rx;         /* HVU_SIM_OFF_* receive checksum marks and RSC */
    uint32_t lso_max;        /* the LSO maximum the host advertised */
    uint8_t *gso_buf;        /* caller-owned: vnet header + a 64 KiB frame (tap reads, tx copies) */
    uint32_t gso_buf_len;
    uint32_t vlan_oob;       /* tagged network frames reach the guest untagged, the tag in the
                              * 802.1Q per-packet info (HostProfile.vlan_oob; simhost_rx.c) */
    /* --- guest memory (GPA-direct, simhost_gpa.c); gmem NULL: type-9 sends are Python's --- */
    const uint8_t *gmem;     /* the emulated VM's guest-memory file, mapped whole (read-only) */
    uint64_t gmem_size;      /* its bytes, a multiple of 4096 */
    uint64_t gmem_first_pfn; /* guest-physical page number of gmem[0] (GUEST_PFN_BASE) */
    uint8_t *gpa_buf;        /* caller-owned: one gathered send, gpa_buf_len bytes */
    uint32_t gpa_buf_len;
    /* --- vRSS (rss.c; fields may change between runs): a frame for queue q goes to channel q when
     *     the pump serves it; else its tap bytes go to steer_buf as a record {u32 length, u32 queue,
     *     the bytes read (virtio_net_hdr included), zero pad to 8} and the run returns
     *     HVU_SIM_RUN_STEER --- */
    uint32_t rss_on;         /* the guest enabled RSS (and more than one queue was granted) */
    uint32_t rss_hash_info;  /* the NDIS hash types the guest enabled */
    uint32_t rss_queues;     /* primary + granted subchannels: a table entry at or past it is queue 0 */
    uint32_t rss_table_len;  /* entries of rss_table in use, 1..256 */
    uint8_t rss_key[40];
    uint16_t rss_table[256];
    uint8_t *steer_buf;      /* caller-owned */
    uint32_t steer_buf_len;
    uint32_t steer_used;     /* bytes of records in steer_buf; Python takes them and sets 0 */
    /* --- channels (hvu_sim_pump_add_chan): the fields out_ring .. monitor_bit above and rd, wr,
     *     pending_set below are those of channel `cur`; the pump swaps them in and out of chans[]
     *     (simhost.c hvu_sim_chan_select). Receive sections are one pool for all channels. --- */
    struct hvu_sim_chan chans[64];
    uint32_t nchans;         /* chans[0 .. nchans) may be served */
    uint32_t cur;            /* the channel whose ring fields are loaded */
    /* --- state --- */
    uint32_t nfree;
    uint32_t owned;          /* sections given to the pump */
    uint32_t rd;             /* private outbound read index (re-synced from the header per run) */
    uint32_t wr;             /* private inbound write index (re-synced from the header per run) */
    uint64_t last_activity_ns;
    uint32_t dead;
    uint32_t pending_set;    /* we set the inbound pending_send_sz (waiting for room) */
    uint32_t rx_vlan;        /* 802.1Q per-packet info value of the frame being delivered, or none */
    /* --- results of the last run --- */
    uint32_t signal;         /* 1: interrupt the guest (some channel in signal_mask) */
    uint64_t signal_mask;    /* bit i: interrupt the guest on channel i (pumps without an irq) */
    uint32_t last_chan;      /* the channel of the last run's CONTROL or FAULT */
    uint32_t reason;         /* enum hvu_sim_reason of the fault / hand-off / last rejection */
    uint64_t value;          /* the offending value */
    struct hvu_sim_counters c;
};

int hvu_sim_pump_init(struct hvu_sim_pump *p);
int hvu_sim_pump_add_sections(struct hvu_sim_pump *p, const uint32_t *index, uint32_t n);
uint32_t hvu_sim_pump_take_sections(struct hvu_sim_pump *p, uint32_t *out, uint32_t max);
/* Serve channel `index` (1..63) too: its rings (outbound at out_ring, inbound at in_ring) and
 * monitor bit (monitor_word NULL: none). 0 ok, -EINVAL. */
int hvu_sim_pump_add_chan(struct hvu_sim_pump *p, uint32_t index, uint8_t *out_ring, uint8_t *in_ring,
                          uint32_t *monitor_word, uint32_t monitor_bit);
int hvu_sim_pump_run(struct hvu_sim_pump *p, int wake_fd, int64_t timeout_us);
uint32_t hvu_sim_in_flight(const struct hvu_sim_pump *p);
const char *hvu_sim_reason_text(uint32_t reason);
/* vRSS (rss.c): the NDIS hash type a frame is hashed as (0: not hashed) and its Toeplitz hash */
uint32_t hvu_sim_rss_hash(const uint8_t *key, uint32_t hash_info, const uint8_t *f, uint32_t n, uint32_t *hash);

