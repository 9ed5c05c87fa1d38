#ifndef HVU_DATAPATH_H
#define HVU_DATAPATH_H
/* The netvsc data path in C: frames between a tap fd and one VMBus channel.
 *
 * What lives here: struct hvu_dp (complete for rx.c, tx.c, datapath.c; opaque to Python, which
 * allocates hvu_dp_sizeof() bytes) and the helpers the three files share. The callable API is
 * datapath_api.h. Like ring.c: no allocation, no printing, no Python.h; every buffer belongs to
 * the caller. Unlike ring.c these files do syscalls (read/readv/writev/write/poll, and
 * io_uring_setup/io_uring_enter/mmap in uring.c) on fds the caller opened: they run with the GIL
 * released (cffi API mode).
 *
 * Design and the facts behind it (docs/VMBUS.md; Linux netvsc.c/rndis_filter.c and
 * DPDK hn_rxtx.c read for behaviour only):
 *  - One pump per channel, one thread per pump. The pump is the only writer of the outbound ring
 *    and the only reader of the inbound ring while it runs: Python's Ring calls on the same rings
 *    must happen on the pump's thread between pump calls (hvuio/native/datapath.py arranges that).
 *  - RX (rx.c): type 0x7 packets are checked with hvu_xfer_check (VMBUS.md §4.11), their NVS payload
 *    must be type 107 (VMBUS.md §4.13). Each range holds exactly one RNDIS message (Linux netvsc_receive
 *    and DPDK hn_nvs_handle_rxbuf both treat "one range = one RNDIS packet = one frame"); it is
 *    copied into private memory, bounded by the section size, before any header is read (4.16).
 *    The RNDIS packet checks follow DPDK hn_rndis_rx_data (msg_len within the range and >= data +
 *    pktinfo, data_offset >= 36 counted from byte 8, data inside msg_len, data_len >= 14
 *    for a whole frame or a first RSC fragment and >= 1 for a continuation fragment,
 *    pktinfo offset 4-aligned and >= 36, pktinfo elements walk inside their area). Per-packet
 *    info: checksum and RSC id are used (offloads below), the 802.1Q info puts its tag back into
 *    the frame (vlan.c; malformed: dropped, rx_vlan_bad), hash is skipped.
 *  - Transfer-page packets whose header or NVS type is bad are dropped without completion, like
 *    Linux (it returns before enq_receive_complete); a packet whose ranges are bad is completed
 *    with status FAILED after its good ranges were delivered (Linux's rule); a packet whose frames
 *    were dropped (bad RNDIS as Linux; oversize or tap full: our choice, the status is only
 *    informational to the host) is completed with FAILED too.
 *  - Receive completion = type 0xb, flags 0, the packet's trans_id, 40-byte hn_nvs_rndis_ack
 *    {108, status} (DPDK hn_nvs_ack_rxbuf size; Linux sends only the first 8 bytes). If the
 *    outbound ring is full the completion waits in pend[] and is retried first on every call; a
 *    transfer-page packet is only consumed when pend[] has room, so none is ever lost.
 *  - Packets C does not handle are left unread and reported as HVU_DP_CONTROL: in-band (0x6),
 *    GPA-direct (0x9), completions without the TX tag (control requests), transfer-page packets
 *    with NVS channel type 1 or with any range whose RNDIS message is not a data packet (RNDIS
 *    control replies and status indications travel through the receive buffer too, DPDK
 *    hn_rndis_receive), and packets larger than pkt_buf.
 *  - Mixed packets: Linux (netvsc_receive -> rndis_filter_receive) and DPDK
 *    (hn_nvs_handle_rxbuf -> hn_rndis_receive) dispatch each range on its own RNDIS message type,
 *    so one transfer-page packet may carry frames and a control reply together. Such a packet is
 *    left whole to Python, which reads it from the ring (one reader of the ring at a time, the
 *    threading rule above), hands the control messages to the protocol machines and each data
 *    message back through hvu_dp_rx_data, and completes the packet itself, once (status FAILED
 *    when a data message was dropped, as below). hvu_dp_rx_data runs the same checks, offloads
 *    and RSC sequence as a range the pump reads (a control message between two fragments leaves
 *    the sequence open, as in Linux) and counts the message in rx_ranges (and rx_ctl_data), so
 *    rx_ranges = rx_ranges_written + rx_range_drops + open RSC fragments holds across both
 *    paths. It is called on the pump's thread between pump calls (hvuio/native/datapath.py). The
 *    choice over copying control bytes out in C: the pump keeps one rule (a packet is C's whole or
 *    Python's whole), Python's control path stays the only parser of control messages, and no
 *    second completion owner or bounded control queue is needed; mixed packets are rare (a
 *    control reply or status indication), so the extra Python hop costs nothing that matters.
 *  - TX (tx.c): the send buffer is send_section_count sections of send_section_size bytes,
 *    tracked in a bitmap. A frame is read from the tap straight into a free section after the
 *    RNDIS header space (readv; the vnet header goes to scratch and is dropped); the RNDIS packet
 *    header (msg_len = hdr + len, data_offset counted from byte 8) is written in front, then NVS
 *    107 {channel 0, section, msg_len} is sent in-band with completion requested and trans_id =
 *    HVU_DP_TX_TAG | section. Control requests never set bit 63, so ids cannot collide. The host's
 *    completion (0xb, NVS 108) frees the section; unknown or duplicate ids are counted and ignored
 *    (never a double free). Without a GPA pool, frames that do not fit a section are dropped
 *    (tx_oversize).
 *    A tap read of 0 bytes is the end of the tap, not a runt (a tap never hands over an empty
 *    frame): it is reported once as a tap fault (-EPIPE) and the tap is never read again, so
 *    neither tx nor run spins on a fd that stays readable for ever.
 *  - TX aggregation (tx.c; Linux netvsc_send with its max_pkt/pkt_align from the RNDIS
 *    initialize completion, DPDK hn_try_txagg): the frames one hvu_dp_tx call reads share a
 *    section and one NVS 107 message while the count stays within max_packets_per_message and
 *    the bytes within the section and max_transfer_size; each message after the first starts at
 *    the packet alignment, the one before it grows (msg_len and zero bytes) to reach it, the last
 *    one is not padded. A plain tap read goes straight into the section, so a frame joins only
 *    while the largest frame would still fit; a staged (offload) packet joins when its own size
 *    fits. What a call gathered is sent before it returns (never held for later traffic) unless
 *    the ring is full; tx_sends counts NVS messages, tx_packets the RNDIS packets in them.
 *  - Backpressure: the tap is read only while a section is free and the outbound ring has room for
 *    one NVS message (with a GPA pool: the rule of the GPA-direct item below); otherwise TX stops
 *    (stop_queue), sets the outbound pending_send_sz so the host interrupts when space frees
 *    (3.11 c), and resumes (wake_queue). hvu_dp_init refuses an outbound ring that cannot hold one
 *    message (HVU_DP_TX_RING_MIN): every completion would fail with -EMSGSIZE, and TX would never
 *    start.
 *  - GPA-direct TX (tx_gpa.c; VMBUS.md §3.7; Linux netvsc_send_pkt / netvsc_build_mpb_array, DPDK
 *    hn_xmit_sg read for behaviour): with a pool (gpa_slot_size != 0, pinned memory whose page
 *    numbers the caller learned: hugetlb + pagemap on a VM, the emulator's guest-memory file) an
 *    RNDIS packet whose message does not fit a section (and a plain tap's frame already read into
 *    a slot when no section is free, below) is built at offset 0 of a free slot of the pool and
 *    sent as one type-9 packet: reserved 0, range_count 1, one range {msg_len, offset 0, the PFNs
 *    of the slot's pages that msg_len covers}, then NVS 107 {channel 0, section 0xFFFFFFFF, size
 *    0}, completion requested (OpenVMM needs a transaction id), trans_id = HVU_DP_TX_TAG |
 *    HVU_DP_GPA_BIT | slot. The whole message lies in the first (only) range: OpenVMM reads the
 *    RNDIS header and its pktinfo from the first range only. Slots are tracked in a one-word
 *    bitmap (at most 64); the completion frees the slot, unknown or duplicate ids are counted and
 *    ignored as for sections. Before the packet is written, every page index is checked to lie
 *    inside the pool and the range never to cover more pages than the slot, and every PFN to be
 *    within 1 to 2^40 - 1 (the caller's array is read again at each send). A held section is sent
 *    before a GPA-direct packet, so the host sees packets in the tap's order. Slot size: the
 *    largest message (76-byte header: RNDIS + hash + one pktinfo, then HVU_DP_GSO_MAX) needs 17
 *    pages; 16 would leave a 64 KiB GSO frame without room.
 *    Plain taps (no offload): while the largest frame (mtu + 18) fits a section nothing changes.
 *    When it does not (jumbo MTU), each frame is read into a free slot (the read needs a place for
 *    the largest frame before its size is known); a frame whose message then fits a section is
 *    copied into the held send or a free section (the send buffer stays the path of small frames),
 *    and goes GPA-direct from its slot only when no section is free (it is read already; waiting
 *    for a section would hold a slot for nothing). Offload taps: the stage decides per packet by
 *    size. LSO with a pool: GSO frames are cut into packets up to min(lso_max_size, slot) instead
 *    of one section (a 64 KiB frame is one or two sends; the host's LSO maximum is 62780 on
 *    OpenVMM).
 *    Backpressure with a pool: whether the next packet needs a section or a slot is known only
 *    once it is read, so the packet source answers HVU_DP_TX_WAIT (tx_no_space or tx_gpa_busy, TX
 *    stops) and keeps the packet (stage, or its slot); hvu_dp_tx_can_send then waits for that
 *    resource. A held send still goes out at the end of the batch (only a full ring keeps it). The
 *    room check asks for the larger type-9 packet (descriptor + 8 + 8 + 8 * slot pages + 40 +
 *    trailer) whenever a packet may go GPA-direct, and hvu_dp_init refuses an outbound ring that
 *    cannot hold it (-EMSGSIZE).
 *  - Tap I/O (tapio.c, uring.c; HVU_DP_F_TAP_URING): tx.c's tap reads and rx.c's tap writes go
 *    through one io_uring per pump where the kernel gives one: reads come in bursts of up to
 *    io_tx_slots non-blocking reads per io_uring_enter into slots of the caller's io memory and
 *    are copied to where tx.c reads a frame (while frames are large, one readv straight there); an rx batch's writes are queued and submitted (and
 *    reaped) with one io_uring_enter, and a transfer-page packet is completed only after its
 *    writes completed (status FAILED when one failed). Frames keep their order both ways.
 *    Without a ring (flag off, or io_uring_setup refused) one readv/writev per frame, as before;
 *    hvu_dp_tap_io says which.
 *  - Signalling (3.11, 3.12): every write ORs its decision; read batches add the flow-control
 *    decision; the host is signalled once per rx/tx call: monitored channel = atomic OR of bit
 *    id % 32 into trigger_group[id / 32].pending (monitor page offset 8 + 8 * group); otherwise
 *    write a 4-byte 1 to the irq fd (EAGAIN there means the peer has unread signals queued
 *    already and counts as sent; a uio fd never returns it).
 *  - Interrupt mask (1.10, 3.11 d): with HVU_DP_F_MANAGE_MASK the pump stores the inbound
 *    interrupt_mask directly (1 while draining, 0 then re-check before poll()); without it the mask
 *    is never touched (subchannels on kernels without linux d062463edf17, spec item 39) and the
 *    caller should use busy polling or a short timeout. A uio event is consumed by a 4-byte read.
 *  - 802.1Q out of band (vlan.c; docs/VMBUS.md §4.26; Linux rndis_filter_receive_data /
 *    netvsc_xmit): a received 802.1Q pktinfo puts its tag back after the MAC addresses (tapio.c
 *    hvu_dp_tap_write gathers it in; an RSC frame gets its first fragment's tag in rsc_buf), the
 *    MTU check counting it; a pktinfo of that type too short for its value drops the frame
 *    (rx_vlan_bad). A tagged tap frame goes out without the tag, which becomes the 802.1Q pktinfo
 *    after the others: the plain path moves the frame in its section (a message that then no
 *    longer fits is dropped as oversize), a plain tap's slot read moves it at once, the offload
 *    stage drops the 4 bytes and counts the vnet offsets from the untagged frame, so checksum and
 *    LSO offsets stay right.
 *  - Offloads (offload.c/.h; hvuio/native/datapath.py sets the flags from what RNDIS negotiated):
 *    TX with HVU_DP_F_TAP_OFFLOAD: the tap (TUNSETOFFLOAD) hands over frames whose vnet header
 *    may ask for a checksum (NEEDS_CSUM) or carry a TCP GSO super-frame; every field is checked
 *    (drops tx_vnet_bad with a reason). The frame is read into a private stage buffer first.
 *    NEEDS_CSUM: a checksum pktinfo (is_ipv4/is_ipv6, tcp/udp, tcp_header_offset; Linux
 *    netvsc_xmit) when the host enabled that checksum, else the sum is completed in software.
 *    GSO: cut into packets that each fit one send section, a whole number of gso_size segments
 *    each, IP length / IPv4 id / TCP seq fixed, FIN/PSH on the last only, CWR on the first only;
 *    with LSOv2 enabled each packet of >= 2 segments gets the LSO pktinfo alone (Linux sends
 *    either LSO or checksum info, never both) with IPv4 checksum 0 and the length-less
 *    pseudo-header sum in the TCP checksum (Linux netvsc_xmit, DPDK hn_encap); the IP length is
 *    the packet's own (DPDK leaves it; hosts recompute it). Without LSO: single segments with
 *    the checksum pktinfo or software checksums.
 *    RX: the receive checksum pktinfo turns into vnet DATA_VALID when TCP or UDP checksum
 *    succeeded and none failed (Linux netvsc_alloc_recv_skb; HVU_DP_F_RX_CSUM). RSC fragments
 *    (RNDIS_PKTINFO_ID with SUBALLOC; Linux rndis_filter_receive_data) are concatenated, at most
 *    562 fragments (NVSP_RSC_MAX) and 64 KiB, checksum info of the first, and the
 *    frame is written once with the IP length checked and the IPv4 header checksum recomputed;
 *    longer than one MSS (MTU - IP - TCP headers: Hyper-V gives no segment count, and this MSS
 *    keeps the frame forwardable) it becomes a TCP GSO frame. Tun ignores DATA_VALID on write,
 *    so a coalesced frame whose checksum the host vouched for goes out as NEEDS_CSUM with the
 *    pseudo-header sum (what the kernel hands a NIC), which the stack accepts and completes if it
 *    forwards. A broken sequence is dropped whole and counted (rx_rsc_drop), never half written.
 *    A tap without vnet header can take neither: the kernel drops a plain frame over the MTU as
 *    oversize. There a frame longer than one MSS is cut into MSS-sized TCP segments with
 *    hvu_off_build_seg, as TX cuts a GSO frame the host cannot segment (IP length and IPv4 id,
 *    TCP seq, FIN/PSH on the last, CWR on the first, checksums in software; rx_rsc_sw_seg), built
 *    one at a time after the frame in rsc_buf; a vouched-for checksum of a frame written whole is
 *    completed in software. A checksum the host did not vouch for is checked before cutting (the
 *    stack would have checked it; fresh checksums must not make corrupt data valid).
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>   /* ssize_t */

#include "hvuio.h"
#include "datapath_api.h"
#include "trace.h"
#include "dp_counters.h"
#include "offload.h"
#include "uring.h"

#define HVU_DP_TX_TAG (1ULL << HVU_DP_TX_TAG_SHIFT)
#define HVU_DP_GPA_BIT (1ULL << HVU_DP_TX_GPA_SHIFT)
#define HVU_DP_GPA_PFN_MAX ((1ULL << HVU_DP_GPA_PFN_BITS) - 1)
/* the type-9 header after the descriptor: reserved, range_count, one range of at most a slot */
#define HVU_DP_GPA_HDR_MAX (8u + 8u + 8u * HVU_DP_GPA_SLOT_PAGES_MAX)
#define HVU_DP_RNDIS_OFFSET_BASE 8u     /* RNDIS offsets count from byte 8 (after type, len) */
#define HVU_DP_RNDIS_OFFSET_MIN 36u     /* golden rndis_misc RNDIS_PACKET_MSG_OFFSET_MIN */
#define HVU_DP_PPI_HEAD 12u             /* golden rndis_pktinfo size */
#define HVU_DP_NDIS_HASHVAL 8u          /* golden ndis_pktinfo_type NDIS_PKTINFO_TYPE_HASHVAL */
#define HVU_DP_NO_VLAN 0xFFFFFFFFu      /* no 802.1Q pktinfo (a real value has bits 16-31 clear) */

struct hvu_dp_counters {
#define HVU_DP_COUNTER_FIELD(name) uint64_t name;
    HVU_DP_COUNTERS(HVU_DP_COUNTER_FIELD)
#undef HVU_DP_COUNTER_FIELD
};

struct hvu_dp_pending {
    uint64_t trans_id;
    uint32_t status;
};

/* Batched tap I/O (tapio.c): the pump's io_uring, its read bursts and queued tap writes. */
struct hvu_dp_io_write {
    uint32_t want;                  /* bytes handed to the tap (vnet header included) */
    uint32_t xfer;                  /* index into defer[] of the packet it belongs to (== ndefer:
                                     * the packet being handled, not deferred yet) */
    uint32_t tagged;                /* an 802.1Q tag was put back (rx_vlan when written) */
};

struct hvu_dp_io_defer {            /* a receive completion waiting for its packet's writes */
    uint64_t trans_id;
    uint32_t status;
};

struct hvu_dp_io {
    int on;                         /* 1: the ring is up and tap I/O goes through it */
    int setup_err;                  /* errno of a refused io_uring_setup (the pump runs readv/writev) */
    struct hvu_uring ring;
    uint8_t *tx_mem, *rx_mem;       /* io_buf: the TX slots, then the RX slots */
    uint32_t tx_slots, tx_slot;     /* count, bytes each */
    uint32_t rx_slots, rx_slot;
    uint32_t tx_armed;              /* reads submitted and not completed (within one burst) */
    uint32_t burst;                 /* reads the next burst submits (IO_BURST_MIN .. tx_slots) */
    int drained;                    /* the last burst found the tap empty before its end */
    uint32_t avg_len;               /* running mean of the frames read (bytes, vnet header too) */
    /* reads completed, oldest first, not yet handed to the pump: slot and result */
    uint16_t ready[HVU_DP_IO_SLOTS_MAX];
    int32_t ready_res[HVU_DP_IO_SLOTS_MAX];
    uint32_t ready_head, nready;
    /* writes of this rx batch: slot i holds write i; all complete before a slot is used again */
    uint32_t rx_queued;             /* writes prepared since the last reap */
    uint32_t rx_inflight;           /* of those, not completed yet */
    uint32_t cur_queued;            /* writes of the packet being handled not reaped yet */
    uint32_t cur_failed;            /* a write of the packet being handled failed */
    struct hvu_dp_io_write wr[HVU_DP_IO_SLOTS_MAX];
    struct hvu_dp_io_defer defer[HVU_DP_IO_SLOTS_MAX];
    uint32_t ndefer;
};

struct hvu_dp {
    struct hvu_ring *tx;
    struct hvu_ring *rx;
    uint8_t *recv_buf;
    uint32_t recv_size;
    uint32_t recv_section;
    uint8_t *send_buf;
    uint32_t send_section;
    uint32_t send_count;
    uint8_t *pkt_buf;
    uint32_t pkt_cap;
    uint8_t *range_buf;
    uint32_t range_cap;
    int tap_fd;
    int irq_fd;
    int wake_fd;                    /* -1: poll irq_fd; else an eventfd woken by another pump */
    int fanout[HVU_DP_FANOUT_MAX];  /* eventfds of the other pumps, written after an irq wake-up */
    uint32_t nfanout;
    uint32_t idle_poll_ms;          /* 0, or the longest sleep of run */
    uint32_t send_first;            /* the buffer-wide index of this pump's section 0 */
    void *mon_page;                 /* map 2 (monitored channel), or NULL: signal by the irq fd */
    uint32_t mon_id;
    uint32_t mtu;
    uint32_t flags;
    uint32_t tx_hash;
    uint64_t busy_poll_ns;          /* spin after activity before sleeping in poll() */
    uint64_t bp_seen;               /* activity count when last looked at (busy poll) */
    int64_t bp_last_work_ns;        /* when it last changed (0: never, so no spinning) */
    uint32_t tx_hdr_len;            /* 44, or 60 with the hash pktinfo (before csum/LSO pktinfo) */
    uint32_t sect_used;
    uint32_t sect_hint;             /* next bitmap word to search */
    int tx_blocked;                 /* 1 after stop_queue until wake_queue */
    int pending_sz_set;             /* we set the outbound pending_send_sz */
    int need_signal;                /* ORed decisions since the last hvu_dp_signal */
    uint32_t npend;                 /* completions waiting in pend[] (a circular queue) */
    uint32_t pend_head;
    /* tx: the held send, one section being filled (tx.c); its NVS 107 message is not sent yet */
    int held;                       /* its section, or -1 */
    uint32_t held_cnt;              /* RNDIS packet messages in it (<= agg_pkts) */
    uint32_t held_len;              /* bytes of their frames */
    uint32_t held_msg;              /* bytes used: every message, padding included (the NVS size) */
    uint32_t held_last;             /* offset of the last message (its msg_len grows by the padding
                                     * when another joins) */
    uint32_t held_last_len;         /* that message's msg_len as written */
    uint32_t held_lso;              /* messages carrying the LSO pktinfo (tx_lso when sent) */
    uint32_t place_idx, place_off;  /* where hvu_dp_tx_place put the next message */
    uint32_t agg_pkts;              /* host's max_packets_per_message (>= 1) */
    uint32_t agg_align;             /* host's alignment for all but the last message (power of 2) */
    uint32_t agg_size;              /* bytes one aggregated send may use (<= a section) */
    /* TX offload staging (HVU_DP_F_TAP_OFFLOAD; tx.c): one tap frame, emitted in pieces */
    uint8_t *stage;                 /* vnet header (12 bytes) then the frame */
    uint32_t stage_cap;             /* frame bytes that fit after the vnet header */
    uint32_t stage_len;             /* frame length, 0 = nothing staged */
    uint32_t stage_kind;            /* enum in tx.c: whole frame, frame + csum pktinfo, segments */
    uint32_t stage_csum;            /* checksum pktinfo value for the whole-frame kinds */
    uint32_t stage_next;            /* segments: payload bytes already emitted */
    uint32_t stage_seg;             /* segments: index of the next segment (IPv4 id offset) */
    uint32_t stage_mss;
    uint32_t stage_per;             /* segments: payload bytes per emitted packet */
    int stage_lso;                  /* segments: emit LSO chunks (else single segments) */
    uint32_t stage_l3, stage_l4, stage_hdrs, stage_v6, stage_proto;   /* struct hvu_l34 of the frame */
    uint32_t stage_off;             /* the frame starts this far after the vnet header (4: untagged) */
    uint32_t stage_vlan;            /* its 802.1Q pktinfo value, or HVU_DP_NO_VLAN */
    uint32_t lso_max;
    /* GPA-direct TX (tx_gpa.c): slots of gpa_slot bytes in the caller's pinned pool */
    uint8_t *gpa_buf;
    const uint64_t *gpa_pfns;       /* one per 4 KiB page of gpa_buf */
    uint32_t gpa_pages;             /* pages in the pool */
    uint32_t gpa_slot;              /* slot size in bytes (0 = GPA-direct off) */
    uint32_t gpa_slot_pages;
    uint32_t gpa_count;             /* slots (<= HVU_DP_GPA_MAX_SLOTS) */
    uint32_t gpa_used;
    uint64_t gpa_map;               /* bit set = slot in flight or holding the read frame */
    uint32_t gpa_pkt_total;         /* ring bytes of the largest type-9 packet (trailer included) */
    int gpa_plain;                  /* plain tap, largest frame needs a slot (hvu_dp_tx_read_gpa) */
    int gpa_frame;                  /* plain tap: slot holding a frame read but not sent, or -1 */
    uint32_t gpa_frame_len;
    uint32_t gpa_frame_vlan;        /* its 802.1Q pktinfo (the frame then lies untagged 16 bytes
                                     * further, after that pktinfo's room), or HVU_DP_NO_VLAN */
    int tx_wait;                    /* HVU_DP_WAIT_*: what the kept packet waits for */
    /* RX RSC assembly (rx.c) */
    uint8_t *rsc_buf;
    uint32_t rsc_cap;
    uint32_t rsc_len;               /* bytes assembled */
    uint32_t rsc_cnt;               /* fragments assembled, 0 = no sequence open */
    uint32_t rsc_csum;              /* checksum info of the first fragment */
    int rsc_has_csum;
    uint32_t rsc_vlan;              /* 802.1Q pktinfo of the first fragment, or HVU_DP_NO_VLAN */
    int err_fd;                     /* enum hvu_dp_fd of the last failed syscall */
    int err_no;
    int tap_eof;                    /* a tap read returned 0: the tap is not read again */
    uint32_t initialised;
    struct hvu_dp_pending pend[HVU_DP_PENDING_MAX];
    struct hvu_dp_drop last_drop;
    uint64_t drops[HVU_DP_REASON_END];   /* hvu_dp_drop_note calls per reason */
    uint64_t sect_map[HVU_DP_MAX_SECTIONS / 64];   /* bit set = section in flight */
    struct hvu_dp_counters ctr;
    struct hvu_trace *trace;        /* frame capture (trace.c), NULL: off */
    struct hvu_dp_io io;            /* batched tap I/O (tapio.c) */
};

/* datapath.c */
void hvu_dp_drop_note(struct hvu_dp *dp, int reason, uint64_t value);
int hvu_dp_sys_error(struct hvu_dp *dp, int fd_role, int err);
/* rx.c: send queued receive completions; 0, or -EIO if the outbound ring refused */
int hvu_dp_flush_completions(struct hvu_dp *dp);
/* tx.c: a tagged completion (type 0xb) copied out of the inbound ring */
void hvu_dp_tx_complete(struct hvu_dp *dp, uint64_t trans_id, const uint8_t *payload,
                        uint32_t plen);
/* tx.c: TX may proceed: a section is free, the outbound ring has room (updates stop/wake) */
int hvu_dp_tx_can_send(struct hvu_dp *dp);
/* tx.c, for tx_stage.c: building one RNDIS packet into the held send */
#define HVU_DP_TX_FLUSH 2           /* a packet source's answer: send the held section first */
uint32_t hvu_dp_tx_header(struct hvu_dp *dp, uint8_t *msg, uint32_t frame_len, int ppi_type,
                          uint32_t ppi_value);
/* the same with an 802.1Q pktinfo (vlan != HVU_DP_NO_VLAN) after the other ones */
uint32_t hvu_dp_tx_header_vlan(struct hvu_dp *dp, uint8_t *msg, uint32_t frame_len, int ppi_type,
                               uint32_t ppi_value, uint32_t vlan);
/* vlan.c: the 802.1Q tag of a frame <-> the pktinfo value (1 = tagged); the untagged copy */
int hvu_dp_vlan_info(const uint8_t *f, uint32_t len, uint32_t *info);
void hvu_dp_vlan_tag(uint32_t info, uint8_t tag[4]);
void hvu_dp_vlan_untag(uint8_t *msg, uint32_t from, uint32_t to, uint32_t len);
static inline uint32_t hvu_dp_vlan_ppi_len(uint32_t vlan) { return vlan == HVU_DP_NO_VLAN ? 0u : HVU_DP_PPI_SIZE; }
uint8_t *hvu_dp_tx_place(struct hvu_dp *dp, uint32_t msg_len);
int hvu_dp_tx_no_place(const struct hvu_dp *dp);
void hvu_dp_tx_commit(struct hvu_dp *dp, uint32_t msg_len, uint32_t frame_len, int lso);
struct iovec;
/* > 0 bytes read (>= min), 0 a runt dropped, -EAGAIN tap empty, -EPIPE end of the tap (now and
 * on every later call), other negative errno a tap error */
ssize_t hvu_dp_tap_readv(struct hvu_dp *dp, struct iovec *iov, int n, size_t min);
/* tx.c: one tap frame into dst (room bytes; the MTU bounds it too): > 0 its length, 0 dropped
 * (runt or oversize, counted), negative as hvu_dp_tap_readv */
ssize_t hvu_dp_tap_read_frame(struct hvu_dp *dp, uint8_t *dst, uint32_t room);
/* tx_gpa.c: where the next message goes when it may go GPA-direct */
#define HVU_DP_TX_WAIT 3            /* a packet source's answer: no section / slot now, TX stopped */
enum { HVU_DP_WAIT_NONE = 0, HVU_DP_WAIT_SECTION = 1, HVU_DP_WAIT_SLOT = 2 };   /* dp->tx_wait */
struct hvu_dp_dest {
    uint8_t *msg;                   /* where to build the message */
    int slot;                       /* >= 0: GPA-direct from this slot, else the held send */
};
int hvu_dp_tx_dest(struct hvu_dp *dp, uint32_t msg_len, struct hvu_dp_dest *d);
int hvu_dp_tx_done(struct hvu_dp *dp, const struct hvu_dp_dest *d, uint32_t msg_len,
                   uint32_t frame_len, int lso);
int hvu_dp_tx_wait_for(struct hvu_dp *dp, int what);   /* counts, sets tx_wait, stops TX */
int hvu_dp_tx_read_gpa(struct hvu_dp *dp);             /* a plain tap's frame through a slot */
/* tx.c */
int hvu_dp_gpa_emit(const struct hvu_dp *dp);          /* 1: a packet may go GPA-direct */
uint32_t hvu_dp_tx_msg_cap(const struct hvu_dp *dp);   /* largest message: section or slot */
void hvu_dp_tx_block(struct hvu_dp *dp, int ring_full);
/* tx.c: shared completion bookkeeping (NVS type / status of a completion that freed something) */
void hvu_dp_tx_comp_status(struct hvu_dp *dp, const uint8_t *payload, uint32_t plen);
/* tx_gpa.c: slots and the type-9 packet */
int hvu_dp_gpa_find(struct hvu_dp *dp);
void hvu_dp_gpa_take(struct hvu_dp *dp, uint32_t slot);
void hvu_dp_gpa_release(struct hvu_dp *dp, uint32_t slot);
uint8_t *hvu_dp_gpa_slot_mem(const struct hvu_dp *dp, uint32_t slot);
/* sends the message of msg_len bytes at the start of slot (already taken): 0, -EAGAIN (ring
 * full: nothing written, the slot stays taken), -EIO (ring fault), -EINVAL (a check failed:
 * nothing written) */
int hvu_dp_gpa_send(struct hvu_dp *dp, uint32_t slot, uint32_t msg_len);
void hvu_dp_gpa_complete(struct hvu_dp *dp, uint64_t trans_id, const uint8_t *payload,
                         uint32_t plen);
/* tx_gpa.c, for hvu_dp_init: checks the pool configuration and fills the gpa_* fields */
int hvu_dp_gpa_init(struct hvu_dp *dp, const struct hvu_dp_config *cfg, uint32_t max_msg);
/* tapio.c: the io_uring under the tap reads and writes (HVU_DP_F_TAP_URING). init: 0 (ring up,
 * or refused and io.on = 0 with io.setup_err), -EINVAL (io_* configuration wrong). */
int hvu_dp_io_init(struct hvu_dp *dp, const struct hvu_dp_config *cfg);
/* one frame to the tap (vnet header from v, the 802.1Q tag of vlan put back unless it is
 * HVU_DP_NO_VLAN): 0 written, -1 dropped (counted), 1 queued on the ring (`queue`: counted, its
 * range too, when it completes) */
struct hvu_vnet;
int hvu_dp_tap_write(struct hvu_dp *dp, const struct hvu_vnet *v, const uint8_t *data, uint32_t len,
                     uint32_t vlan, int queue);
/* submits what is prepared; for queued writes waits until all completed, counts them and sends
 * the receive completions that waited for them. 0 or -errno (ring or outbound ring failure) */
int hvu_dp_io_reap(struct hvu_dp *dp);
/* re-arms reads (one io_uring_enter when any is prepared) and harvests completions without a
 * system call; returns the reads completed and not yet handed to the pump */
int hvu_dp_io_poll(struct hvu_dp *dp);
/* rx.c: one receive completion, sent or queued in pend[] (the caller made room) */
int hvu_dp_complete_rx(struct hvu_dp *dp, uint64_t trans_id, uint32_t status);
/* tx_stage.c: the next RNDIS packet through the offload stage (1 placed, 0 dropped,
 * HVU_DP_TX_FLUSH, HVU_DP_TX_WAIT, -EAGAIN tap empty, other negative errno) */
int hvu_dp_tx_stage_next(struct hvu_dp *dp);

#endif
