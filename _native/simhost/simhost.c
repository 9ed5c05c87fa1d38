/* The emulated Hyper-V host's data path for one NIC channel, in C, written from
 * shared/spec/vmbus-uio.md §3-§5 and hvuio/sim (the Python host is the reference behaviour).
 * Nothing here is shared with the guest's C core (_native/ring.c etc.): one ring bug must not
 * hide on both sides.
 *
 * What lives here: the host reader of the guest's OUTBOUND ring and writer of its INBOUND ring,
 * NVSP 107 data sends (send-buffer section -> RNDIS_PACKET_MSG -> tap) with their 108
 * completions, tap -> receive sections -> transfer-page packets (several frames per packet) and
 * the guest's completions of those, the monitor trigger bit, and the poll loop. What must not:
 * control-plane decisions (every packet the pump does not own is left in the ring and handed to
 * Python's HostNvsp: HVU_SIM_RUN_CONTROL), allocation, logging, Python.
 *
 * Index ownership (the invariant that lets C and Python share one ring, spec 3.1 table 49):
 *   outbound read_index and inbound write_index are the HOST's. Exactly one thread (the
 *   session worker) touches either ring, alternating between this pump and Python's
 *   HostRingReader/Writer. Each side publishes its private index to the header before handing
 *   over and re-syncs its private index from the header when it takes over (here: at every
 *   hvu_sim_pump_run entry). Re-reading a header field we own is safe: the guest never writes it.
 *
 * Receive sections: Python hands the pump a set of section indexes (hvu_sim_pump_add_sections);
 * the pump tags its transfer-page trans_ids with bit 62 (HostNvsp's ids stay below 2^62; bit 63
 * is its VF-association id), so a completion is the pump's iff bits 63..62 == 01; slot and
 * generation in the id make repeated or forged completions counted, never a double free.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/uio.h>

#include "simhost.h"
#include "offload.h"

#define DESC 16u
#define TRAILER 8u
#define PKT_INBAND 0x6
#define PKT_XFER 0x7
#define PKT_GPA 0x9
#define PKT_COMP 0xb
#define FLAG_RC 1u
#define OFF_WRITE 0
#define OFF_READ 4
#define OFF_MASK 8
#define OFF_PENDING 12
#define OFF_FEATURES 64
#define NVSP_RNDIS_PKT 107u
#define NVSP_RNDIS_PKT_COMPLETE 108u
#define NVSP_STAT_SUCCESS 1u
#define NO_SECTION 0xFFFFFFFFu
#define PAGESET_ID 0xCAFEu
#define RNDIS_PACKET_MSG 1u
#define RNDIS_HDR 8u
#define RNDIS_PKT_SIZE 44u         /* header + 9 u32 */
#define RNDIS_OFFSET_MIN 36u       /* data may not overlap the header */
#define RNDIS_PPI_SIZE 12u
#define ETH_HLEN 14u
#define MAX_BATCH 64u
#define MAX_MSGS 16u               /* RNDIS messages per send handled here; more -> Python */
#define TAG_SHIFT 62
#define TAG_MASK (3ull << TAG_SHIFT)
#define TAG (1ull << TAG_SHIFT)
#define NONE 0xFFFFFFFFu
#define MAX_NVSP_PAD 64u
#define SEC_NOT_OURS 0
#define SEC_FREE 1
#define SEC_BUSY 2

static inline uint32_t *hdr32(uint8_t *ring, uint32_t off) { return (uint32_t *)(void *)(ring + off); }
static inline uint32_t ld_acq(uint8_t *ring, uint32_t off)
{
    return __atomic_load_n(hdr32(ring, off), __ATOMIC_ACQUIRE);
}
static inline void st_rel(uint8_t *ring, uint32_t off, uint32_t v)
{
    __atomic_store_n(hdr32(ring, off), v, __ATOMIC_RELEASE);
}
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *hvu_sim_reason_text(uint32_t r)
{
    switch (r) {
    case HVU_SIM_R_NONE: return "none";
    case HVU_SIM_R_BAD_WRITE_INDEX: return "write_index must be below the data size and a multiple of 8";
    case HVU_SIM_R_BAD_READ_INDEX: return "read_index must be below the data size and a multiple of 8";
    case HVU_SIM_R_SHORT_AVAIL: return "a packet needs at least 16 + 8 readable bytes";
    case HVU_SIM_R_BAD_LEN8: return "len8*8 must be at least 16 and leave the trailer within the readable bytes";
    case HVU_SIM_R_BAD_OFFSET8: return "offset8*8 must lie between 16 and len8*8";
    case HVU_SIM_R_BAD_TYPE: return "packet type must be 0x6, 0x7, 0x9 or 0xb";
    case HVU_SIM_R_BAD_FLAGS: return "only flag bit 0 (completion requested) may be set";
    case HVU_SIM_R_CONTROL: return "control packet";
    case HVU_SIM_R_NO_COMPLETION_FLAG: return "RNDIS data without completion requested";
    case HVU_SIM_R_NVSP_SHORT: return "NVSP 107 payload shorter than 16 bytes";
    case HVU_SIM_R_BAD_SECTION: return "send-buffer section outside the send buffer";
    case HVU_SIM_R_SECTION_OVERSIZE: return "send-buffer data larger than one section";
    case HVU_SIM_R_RNDIS_LEN: return "RNDIS message length outside the sent data";
    case HVU_SIM_R_RNDIS_TYPE: return "RNDIS message on the data channel is not a packet message";
    case HVU_SIM_R_RNDIS_DATA: return "RNDIS packet data outside the message or empty";
    case HVU_SIM_R_RNDIS_OOB: return "RNDIS packet OOB/VC fields must be zero";
    case HVU_SIM_R_RNDIS_PPI: return "RNDIS per-packet info outside the message or malformed";
    case HVU_SIM_R_TOO_MANY_MSGS: return "more RNDIS messages in one send than the fast path handles";
    case HVU_SIM_R_OFFLOAD: return "checksum/LSO per-packet info the host does not accept for this frame";
    case HVU_SIM_R_UNKNOWN_TID: return "receive completion for no outstanding transfer (unknown or repeated id)";
    case HVU_SIM_R_COMPLETION_TYPE: return "receive completion is not NVSP 108";
    default: return "unknown reason";
    }
}

static uint32_t dsize(const struct hvu_sim_pump *p) { return p->ring_size - p->header_size; }

static int reject(struct hvu_sim_pump *p, uint32_t reason, uint64_t value)
{
    p->reason = reason;
    p->value = value;
    return (int)reason;
}

int hvu_sim_pump_init(struct hvu_sim_pump *p)
{
    uint32_t i;
    if (!p || !p->out_ring || !p->in_ring || !p->recv_buf || !p->send_buf || !p->sec_state
        || !p->free_stack || !p->sec_next || !p->slot_head || !p->slot_gen || !p->slot_stack || !p->scratch)
        return -EINVAL;
    if (p->header_size < 4096 || p->ring_size <= p->header_size + 64 || dsize(p) % 8)
        return -EINVAL;
    if (p->recv_section < RNDIS_PKT_SIZE + ETH_HLEN || p->recv_count == 0
        || (uint64_t)p->recv_section * p->recv_count > p->recv_size)
        return -EINVAL;
    if (p->send_section == 0 || p->send_size < p->send_section || p->nvsp_pad < 8 || p->nvsp_pad > MAX_NVSP_PAD)
        return -EINVAL;
    if (p->rx_batch == 0 || p->rx_batch > MAX_BATCH || p->scratch_len < p->max_frame || p->max_frame < ETH_HLEN)
        return -EINVAL;
    if (p->monitor_word && p->monitor_bit > 31)
        return -EINVAL;
    if (!p->gso_buf || p->gso_buf_len < HVU_VNET_HLEN + HVU_GSO_MAX_FRAME)
        return -EINVAL;  /* offloads: a whole GSO frame (and its header) must fit */
    for (i = 0; i < p->recv_count; i++) {
        p->sec_state[i] = SEC_NOT_OURS;
        p->sec_next[i] = NONE;
        p->slot_head[i] = NONE;
        p->slot_gen[i] = 0;
        p->slot_stack[i] = p->recv_count - 1 - i;
    }
    p->nslots_free = p->recv_count;
    p->nfree = p->owned = 0;
    p->dead = 0;
    p->signal = 0;
    p->reason = HVU_SIM_R_NONE;
    p->value = 0;
    memset(&p->c, 0, sizeof p->c);
    return 0;
}

/* Sections Python gives up (they must be free in HostNvsp's books); a repeat is refused. */
int hvu_sim_pump_add_sections(struct hvu_sim_pump *p, const uint32_t *index, uint32_t n)
{
    uint32_t i, added = 0;
    for (i = 0; i < n; i++) {
        uint32_t s = index[i];
        if (s >= p->recv_count || p->sec_state[s] != SEC_NOT_OURS)
            return -EINVAL;
    }
    for (i = 0; i < n; i++) {
        uint32_t s = index[i];
        if (p->sec_state[s] != SEC_NOT_OURS)
            continue;  /* listed twice in this call */
        p->sec_state[s] = SEC_FREE;
        p->free_stack[p->nfree++] = s;
        p->owned++;
        added++;
    }
    return (int)added;
}

uint32_t hvu_sim_in_flight(const struct hvu_sim_pump *p) { return p->owned - p->nfree; }

/* ---- ring copies, split at the end of the data area (single mapping) ------------------------- */

static void copy_out(const struct hvu_sim_pump *p, uint32_t pos, void *dst, uint32_t n)
{
    const uint8_t *data = p->out_ring + p->header_size;
    uint32_t d = dsize(p), first = n < d - pos ? n : d - pos;
    memcpy(dst, data + pos, first);
    if (n > first)
        memcpy((uint8_t *)dst + first, data, n - first);
}

static uint32_t copy_in(struct hvu_sim_pump *p, uint32_t pos, const void *src, uint32_t n)
{
    uint8_t *data = p->in_ring + p->header_size;
    uint32_t d = dsize(p), first = n < d - pos ? n : d - pos;
    memcpy(data + pos, src, first);
    if (n > first)
        memcpy(data, (const uint8_t *)src + first, n - first);
    pos += n;
    return pos >= d ? pos - d : pos;
}

/* ---- inbound writer (host -> guest) ----------------------------------------------------------- */

/* Free bytes of the inbound ring, or -1 on a corrupt guest read_index (fault set). */
static int64_t in_free(struct hvu_sim_pump *p)
{
    uint32_t d = dsize(p), r = ld_acq(p->in_ring, OFF_READ);
    if (r >= d || r % 8) {
        p->dead = 1;
        reject(p, HVU_SIM_R_BAD_READ_INDEX, r);
        return -1;
    }
    return p->wr >= r ? (int64_t)d - (p->wr - r) : (int64_t)(r - p->wr);
}

/* One packet from two parts (+ zero padding + trailer). 1 written, 0 full, -1 fault.
 * Signal (spec 3.11 d): the ring was empty before this write and the guest's mask is 0. */
static int in_write(struct hvu_sim_pump *p, const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    static const uint8_t zeros[8];
    uint32_t len = alen + blen, padded = (len + 7) & ~7u, need = padded + TRAILER, start = p->wr, pos;
    uint64_t trailer = (uint64_t)start << 32;
    int64_t room = in_free(p);
    if (room < 0)
        return -1;
    if (room <= (int64_t)need)  /* never fill completely (spec 3.8 step 2) */
        return 0;
    pos = copy_in(p, start, a, alen);
    if (blen)
        pos = copy_in(p, pos, b, blen);
    if (padded > len)
        pos = copy_in(p, pos, zeros, padded - len);
    pos = copy_in(p, pos, &trailer, TRAILER);
    p->wr = pos;
    st_rel(p->in_ring, OFF_WRITE, pos);  /* release: packet bytes before the index */
    atomic_thread_fence(memory_order_seq_cst);  /* publish before reading mask/read_index (3.10) */
    if (ld_acq(p->in_ring, OFF_MASK) == 0 && ld_acq(p->in_ring, OFF_READ) == start)
        p->signal = 1;
    return 1;
}

/* ---- receive sections ------------------------------------------------------------------------- */

static void free_slot(struct hvu_sim_pump *p, uint32_t slot)
{
    uint32_t s = p->slot_head[slot];
    while (s != NONE) {
        uint32_t next = p->sec_next[s];
        p->sec_state[s] = SEC_FREE;
        p->sec_next[s] = NONE;
        p->free_stack[p->nfree++] = s;
        s = next;
    }
    p->slot_head[slot] = NONE;
    p->slot_stack[p->nslots_free++] = slot;
}

/* A guest completion carrying our tag: free its sections once. */
static void rx_completion(struct hvu_sim_pump *p, uint64_t tid, const uint8_t *payload, uint32_t plen)
{
    uint32_t slot = (uint32_t)(tid & 0xFFFFFFFFu), gen = (uint32_t)((tid >> 32) & 0x3FFFFFFFu);
    if (slot >= p->recv_count || p->slot_head[slot] == NONE || p->slot_gen[slot] != gen) {
        p->c.completions_unknown++;
        reject(p, HVU_SIM_R_UNKNOWN_TID, tid);
        return;
    }
    if (plen < 8 || rd32(payload) != NVSP_RNDIS_PKT_COMPLETE) {
        /* Python's host faults on this; we free (the id matched) and count. */
        p->c.rx_completion_failed++;
        reject(p, HVU_SIM_R_COMPLETION_TYPE, plen < 4 ? plen : rd32(payload));
    } else if (rd32(payload + 4) != NVSP_STAT_SUCCESS) {
        p->c.rx_completion_failed++;
    }
    free_slot(p, slot);
    p->c.rx_completions++;
}

/* ---- network -> guest ------------------------------------------------------------------------- */

/* Ranges of one transfer-page packet being built. */
struct rxb {
    uint32_t n;
    uint32_t secs[MAX_BATCH];
    uint32_t lens[MAX_BATCH];
};

/* Write the batch as one transfer-page packet (completion requested). 0 ok/nothing, -1 fault. */
static int rx_flush(struct hvu_sim_pump *p, struct rxb *b)
{
    uint8_t hdr[24 + 8 * MAX_BATCH];
    uint8_t nv[MAX_NVSP_PAD];
    uint32_t n = b->n, slot, gen, i, hlen;
    uint64_t tid;
    int rc;

    if (n == 0)
        return 0;
    b->n = 0;
    slot = p->slot_stack[--p->nslots_free];
    gen = (p->slot_gen[slot] + 1) & 0x3FFFFFFFu;
    p->slot_gen[slot] = gen;
    tid = TAG | ((uint64_t)gen << 32) | slot;
    hlen = 24 + 8 * n;
    hdr[0] = PKT_XFER; hdr[1] = 0;
    hdr[2] = (uint8_t)(hlen / 8); hdr[3] = (uint8_t)((hlen / 8) >> 8);
    {
        uint32_t len8 = (hlen + p->nvsp_pad + 7) / 8;
        hdr[4] = (uint8_t)len8; hdr[5] = (uint8_t)(len8 >> 8);
    }
    hdr[6] = FLAG_RC; hdr[7] = 0;
    memcpy(hdr + 8, &tid, 8);
    hdr[16] = (uint8_t)PAGESET_ID; hdr[17] = (uint8_t)(PAGESET_ID >> 8); hdr[18] = 0; hdr[19] = 0;
    wr32(hdr + 20, n);
    for (i = 0; i < n; i++) {
        wr32(hdr + 24 + 8 * i, b->lens[i]);                                        /* byte_count */
        wr32(hdr + 28 + 8 * i, (uint32_t)((uint64_t)b->secs[i] * p->recv_section)); /* byte_offset */
    }
    memset(nv, 0, sizeof nv);
    wr32(nv, NVSP_RNDIS_PKT);
    wr32(nv + 4, 0);            /* channel type: data */
    wr32(nv + 8, NO_SECTION);
    wr32(nv + 12, 0);
    /* link the sections to the slot before writing: the guest may complete at once */
    p->slot_head[slot] = b->secs[0];
    for (i = 0; i < n; i++) {
        p->sec_state[b->secs[i]] = SEC_BUSY;
        p->sec_next[b->secs[i]] = i + 1 < n ? b->secs[i + 1] : NONE;
    }
    rc = in_write(p, hdr, hlen, nv, p->nvsp_pad);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        free_slot(p, slot);
        p->c.rx_dropped_ring_full += n;
        return 0;
    }
    p->c.rx_frames += n;
    p->c.rx_packets++;
    return 0;
}

/* The RNDIS_PACKET_MSG header (44 bytes) for `len` data bytes after `ppi_len` bytes of PPIs. */
static void rndis_hdr(uint8_t *dst, uint32_t ppi_len, uint32_t len)
{
    wr32(dst, RNDIS_PACKET_MSG);
    wr32(dst + 4, RNDIS_PKT_SIZE + ppi_len + len);
    wr32(dst + 8, RNDIS_OFFSET_MIN + ppi_len);
    wr32(dst + 12, len);
    memset(dst + 16, 0, RNDIS_PKT_SIZE - 16);
    if (ppi_len) {
        wr32(dst + 28, RNDIS_OFFSET_MIN);
        wr32(dst + 32, ppi_len);
    }
}

static uint32_t put_ppi(uint8_t *dst, uint32_t type, uint32_t value)
{
    wr32(dst, RNDIS_PPI_SIZE + 4);
    wr32(dst + 4, type);
    wr32(dst + 8, RNDIS_PPI_SIZE);
    wr32(dst + 12, value);
    return RNDIS_PPI_SIZE + 4;
}

/* One RNDIS packet (PPIs + data) into a free section, appended to the batch (caller checked room). */
static void rx_put(struct hvu_sim_pump *p, struct rxb *b, const uint8_t *ppi, uint32_t ppi_len,
                   const uint8_t *data, uint32_t len)
{
    uint32_t s = p->free_stack[--p->nfree];
    uint8_t *dst = p->recv_buf + (uint64_t)s * p->recv_section;
    rndis_hdr(dst, ppi_len, len);
    memcpy(dst + RNDIS_PKT_SIZE, ppi, ppi_len);
    memcpy(dst + RNDIS_PKT_SIZE + ppi_len, data, len);
    b->secs[b->n] = s;
    b->lens[b->n] = RNDIS_PKT_SIZE + ppi_len + len;
    b->n++;
    p->c.rx_bytes += len;
}

/* Make room for k ranges that belong together: flush first if they do not fit the batch.
 * 1 room, 0 drop (counted), -1 fault. */
static int rx_room(struct hvu_sim_pump *p, struct rxb *b, uint32_t k)
{
    if (k > MAX_BATCH) {
        p->c.rx_dropped_too_big++;
        return 0;
    }
    if (b->n && b->n + k > (p->rx_batch > k ? p->rx_batch : k) && rx_flush(p, b) < 0)
        return -1;
    if (b->n + k > MAX_BATCH && rx_flush(p, b) < 0)
        return -1;
    if (p->nfree < k || (b->n == 0 && p->nslots_free == 0)) {
        p->c.rx_dropped_no_section++;
        return 0;
    }
    return 1;
}

/* One plain frame (checksums complete) to the guest, with the receive checksum info if marked. */
static int rx_plain(struct hvu_sim_pump *p, struct rxb *b, const uint8_t *f, uint32_t n, int trusted)
{
    uint8_t ppi[RNDIS_PPI_SIZE + 4];
    uint32_t flags = hvu_off_rx_mark(f, n, p->off_rx, trusted), ppi_len = 0;
    int rc;
    if (flags)
        ppi_len = put_ppi(ppi, HVU_PPI_CSUM, flags);
    if (n < ETH_HLEN || n > p->max_frame || RNDIS_PKT_SIZE + ppi_len + n > p->recv_section) {
        p->c.rx_dropped_too_big++;
        return 0;
    }
    rc = rx_room(p, b, 1);
    if (rc <= 0)
        return rc;
    rx_put(p, b, ppi, ppi_len, f, n);
    return 0;
}

/* vRSC: the coalesced frame as fragments of one section each, all in one transfer-page packet. */
static int rx_rsc(struct hvu_sim_pump *p, struct rxb *b, uint8_t *f, uint32_t n, int trusted)
{
    uint8_t ppi[2 * (RNDIS_PPI_SIZE + 4)];
    uint32_t flags = hvu_off_rx_mark(f, n, p->off_rx, trusted), csum_len = flags ? RNDIS_PPI_SIZE + 4 : 0;
    uint32_t id_len = RNDIS_PPI_SIZE + 4, first, rest, k, pos, i;
    int rc;
    if (p->recv_section <= RNDIS_PKT_SIZE + id_len + csum_len) {
        p->c.rx_dropped_too_big++;
        return 0;
    }
    first = p->recv_section - RNDIS_PKT_SIZE - id_len - csum_len;
    rest = p->recv_section - RNDIS_PKT_SIZE - id_len;
    k = n <= first ? 1 : 1 + (n - first + rest - 1) / rest;
    rc = rx_room(p, b, k);
    if (rc <= 0)
        return rc;
    for (i = 0, pos = 0; i < k; i++) {
        uint32_t room = i == 0 ? first : rest, len = n - pos < room ? n - pos : room, plen = 0;
        uint32_t fl = HVU_PKTINFO_SUBALLOC | (i == 0 ? HVU_PKTINFO_1ST_FRAG : 0)
                      | (i == k - 1 ? HVU_PKTINFO_LAST_FRAG : 0);
        if (i == 0 && flags)
            plen += put_ppi(ppi, HVU_PPI_CSUM, flags);
        plen += put_ppi(ppi + plen, HVU_PPI_PKTINFO_ID, 1u | fl << 8);  /* ver 1, flag, pkt_id 0 */
        rx_put(p, b, ppi, plen, f + pos, len);
        pos += len;
    }
    p->c.rx_rsc_fragments += k;
    return 0;
}

/* One frame read with its virtio_net_hdr: GSO -> vRSC or segments; NEEDS_CSUM -> completed. */
static int rx_offloaded(struct hvu_sim_pump *p, struct rxb *b, uint8_t *f, uint32_t n, const uint8_t *vh)
{
    uint32_t vflags = vh[0], gso = vh[1] & ~HVU_GSO_ECN, mss = (uint32_t)vh[4] | (uint32_t)vh[5] << 8;
    uint32_t start = (uint32_t)vh[6] | (uint32_t)vh[7] << 8, off = (uint32_t)vh[8] | (uint32_t)vh[9] << 8;
    int trusted = !!(vflags & (HVU_VNET_F_NEEDS_CSUM | HVU_VNET_F_DATA_VALID));
    if (gso == HVU_GSO_TCPV4 || gso == HVU_GSO_TCPV6) {
        struct hvu_l34 h;
        uint32_t hdr_len, nseg, i;
        p->c.rx_gso++;
        if (hvu_off_locate(f, n, 1, &h) || (hdr_len = hvu_off_tcp_hdr_len(f, n, &h)) == 0 || mss == 0) {
            p->c.rx_dropped_bad_gso++;
            return 0;
        }
        if (p->off_rx & (h.v6 ? HVU_SIM_OFF_RSC6 : HVU_SIM_OFF_RSC4)) {
            hvu_off_rsc_fixup(f, n, &h);
            return rx_rsc(p, b, f, n, trusted);
        }
        if (hdr_len + mss > p->scratch_len) {
            p->c.rx_dropped_too_big++;
            return 0;
        }
        nseg = hvu_off_nseg(hdr_len, h.l4 + h.l4len, mss);
        for (i = 0; i < nseg; i++) {
            uint32_t len = hvu_off_segment(f, &h, hdr_len, mss, i, nseg, p->scratch);
            p->c.rx_segments++;
            if (rx_plain(p, b, p->scratch, len, trusted) < 0)
                return -1;
        }
        return 0;
    }
    if (vflags & HVU_VNET_F_NEEDS_CSUM) {
        if (hvu_off_complete(f, n, start, off) < 0) {
            p->c.rx_dropped_bad_gso++;
            return 0;
        }
        p->c.rx_csum_completed++;
    }
    return rx_plain(p, b, f, n, trusted);
}

/* Read frames from the tap into free sections; one transfer-page packet per batch.
 * Without a vnet header or receive marks frames are read straight into their section; otherwise
 * through gso_buf (a GSO frame is up to 64 KiB). Returns frames read (0: none pending), -1 fault. */
static int rx_batch(struct hvu_sim_pump *p)
{
    struct rxb b;
    int got = 0;
    int direct = !p->vnet_hdr && !(p->off_rx & (HVU_SIM_OFF_IP4 | HVU_SIM_OFF_TCP4 | HVU_SIM_OFF_UDP4
                                                | HVU_SIM_OFF_TCP6 | HVU_SIM_OFF_UDP6));
    b.n = 0;
    while (b.n < p->rx_batch && got < (int)(4 * MAX_BATCH)) {
        uint8_t *dst;
        uint32_t room, s;
        ssize_t r;
        if (p->nfree == 0 || (b.n == 0 && p->nslots_free == 0)) {
            r = read(p->tap_fd, p->gso_buf, p->gso_buf_len);  /* a host with no section drops */
            if (r < 0)
                break;
            got++;
            p->c.rx_dropped_no_section++;
            continue;
        }
        if (!direct) {
            r = read(p->tap_fd, p->gso_buf, p->gso_buf_len);
            if (r < 0)
                break;
            got++;
            if (!p->vnet_hdr) {
                if (rx_plain(p, &b, p->gso_buf, (uint32_t)r, 0) < 0)
                    return -1;
            } else if ((uint32_t)r < HVU_VNET_HLEN + ETH_HLEN) {
                p->c.rx_dropped_too_big++;
            } else if (rx_offloaded(p, &b, p->gso_buf + HVU_VNET_HLEN, (uint32_t)r - HVU_VNET_HLEN,
                                    p->gso_buf) < 0) {
                return -1;
            }
            continue;
        }
        s = p->free_stack[p->nfree - 1];
        dst = p->recv_buf + (uint64_t)s * p->recv_section;
        room = p->recv_section - RNDIS_PKT_SIZE;
        r = read(p->tap_fd, dst + RNDIS_PKT_SIZE, room < p->max_frame + 1 ? room : p->max_frame + 1);
        if (r < 0)
            break;  /* EAGAIN or error: nothing more now */
        got++;
        if ((uint32_t)r < ETH_HLEN || (uint32_t)r > p->max_frame) {
            p->c.rx_dropped_too_big++;
            continue;
        }
        p->nfree--;
        rndis_hdr(dst, 0, (uint32_t)r);
        b.secs[b.n] = s;
        b.lens[b.n] = RNDIS_PKT_SIZE + (uint32_t)r;
        b.n++;
        p->c.rx_bytes += (uint64_t)r;
    }
    if (rx_flush(p, &b) < 0)
        return -1;
    return got;
}

/* ---- guest -> network ------------------------------------------------------------------------- */

struct frame_ref {
    const uint8_t *data;
    uint32_t len;
    uint32_t has_csum, csum, has_lso, lso;  /* checksum / LSO per-packet info, if given */
};

/* One frame to the network: [virtio_net_hdr (zeros when vnet is NULL)] + frame. 1 written, 0 not. */
static int tap_write(struct hvu_sim_pump *p, const uint8_t *vnet, const uint8_t *f, uint32_t n)
{
    static const uint8_t zeros[HVU_VNET_HLEN];
    if (p->tap_fd < 0)
        return 0;
    if (p->vnet_hdr) {
        struct iovec iov[2];
        iov[0].iov_base = (void *)(uintptr_t)(vnet ? vnet : zeros);
        iov[0].iov_len = HVU_VNET_HLEN;
        iov[1].iov_base = (void *)(uintptr_t)f;
        iov[1].iov_len = n;
        return writev(p->tap_fd, iov, 2) == (ssize_t)(HVU_VNET_HLEN + n);
    }
    return write(p->tap_fd, f, n) == (ssize_t)n;
}

static void tx_count(struct hvu_sim_pump *p, int ok, uint32_t n)
{
    if (!ok) {
        p->c.tx_net_errors++;
        return;
    }
    p->c.tx_frames++;
    p->c.tx_bytes += n;
}

/* One frame with offload requests (already checked on guest memory): copied, re-checked on the
 * copy (the guest may write its buffer meanwhile), checksums filled, written whole (GSO) or cut. */
static void tx_offloaded(struct hvu_sim_pump *p, const struct frame_ref *fr, struct hvu_off_plan *pl)
{
    uint8_t *buf = p->gso_buf, vnet[HVU_VNET_HLEN];
    uint32_t n = fr->len, i, nseg;
    if (pl->action == HVU_OFF_TX_ASIS || pl->action == HVU_OFF_TX_IGNORED) {
        p->c.tx_offload_ignored += pl->action == HVU_OFF_TX_IGNORED;
        tx_count(p, tap_write(p, NULL, fr->data, n), n);
        return;
    }
    memcpy(buf, fr->data, n);
    if (hvu_off_tx_check(buf, n, (int)fr->has_csum, fr->csum, (int)fr->has_lso, fr->lso, p->off_tx, p->lso_max,
                         p->max_frame, pl) != 0 || (pl->action != HVU_OFF_TX_CSUM && pl->action != HVU_OFF_TX_LSO_ONE
                                                    && pl->action != HVU_OFF_TX_GSO)) {
        p->c.tx_offload_race++;
        p->c.tx_net_errors++;
        return;
    }
    hvu_off_tx_apply(buf, n, pl, vnet);
    if (pl->action != HVU_OFF_TX_GSO) {
        p->c.tx_csum++;
        tx_count(p, tap_write(p, NULL, buf, n), n);
        return;
    }
    if (p->vnet_hdr && p->tap_gso) {
        p->c.tx_gso++;
        tx_count(p, tap_write(p, vnet, buf, n), n);
        return;
    }
    pl->h.l4len = n - pl->h.l4;
    nseg = hvu_off_nseg(pl->hdr_len, n, pl->mss);
    for (i = 0; i < nseg; i++) {  /* hdr_len + mss <= max_frame <= scratch_len (checked) */
        uint32_t len = hvu_off_segment(buf, &pl->h, pl->hdr_len, pl->mss, i, nseg, p->scratch);
        p->c.tx_segments++;
        tx_count(p, tap_write(p, NULL, p->scratch, len), len);
    }
}

/* Validate every RNDIS message of one send (as HostRndis.parse_data); fill frames. */
static int parse_send(struct hvu_sim_pump *p, const uint8_t *data, uint32_t size, struct frame_ref *out,
                      uint32_t *nout)
{
    uint32_t pos = 0, n = 0;
    while (pos < size) {
        uint32_t mtype, mlen, body, d_off, d_len, ppi_off, ppi_len, f[9];
        if (size - pos < RNDIS_HDR)
            return reject(p, HVU_SIM_R_RNDIS_LEN, pos);
        mtype = rd32(data + pos);
        mlen = rd32(data + pos + 4);
        if (mlen < RNDIS_HDR || mlen > size - pos)
            return reject(p, HVU_SIM_R_RNDIS_LEN, mlen);
        if (mtype != RNDIS_PACKET_MSG)
            return reject(p, HVU_SIM_R_RNDIS_TYPE, mtype);
        if (mlen < RNDIS_PKT_SIZE)
            return reject(p, HVU_SIM_R_RNDIS_LEN, mlen);
        if (n == MAX_MSGS)
            return reject(p, HVU_SIM_R_TOO_MANY_MSGS, n);
        memcpy(f, data + pos + 8, sizeof f);  /* read once: the send buffer is guest-writable */
        d_off = f[0]; d_len = f[1]; ppi_off = f[5]; ppi_len = f[6];
        if (f[2] || f[3] || f[4] || f[7])
            return reject(p, HVU_SIM_R_RNDIS_OOB, f[2] | f[3] | f[4] | f[7]);
        body = mlen - RNDIS_HDR;
        if (d_off < RNDIS_OFFSET_MIN || d_off > body || d_len > body - d_off || d_len == 0)
            return reject(p, HVU_SIM_R_RNDIS_DATA, d_off);
        out[n].has_csum = out[n].has_lso = out[n].csum = out[n].lso = 0;
        if (ppi_len) {
            uint32_t e, end, ptype;
            if (ppi_off < RNDIS_OFFSET_MIN || ppi_off > body || ppi_len > body - ppi_off)
                return reject(p, HVU_SIM_R_RNDIS_PPI, ppi_off);
            e = RNDIS_HDR + ppi_off;
            end = e + ppi_len;
            while (e < end) {
                uint32_t sz, poff;
                if (end - e < RNDIS_PPI_SIZE)
                    return reject(p, HVU_SIM_R_RNDIS_PPI, e);
                sz = rd32(data + pos + e);
                poff = rd32(data + pos + e + 8);
                if (sz < RNDIS_PPI_SIZE || sz > end - e || poff < RNDIS_PPI_SIZE || poff > sz)
                    return reject(p, HVU_SIM_R_RNDIS_PPI, sz);
                ptype = rd32(data + pos + e + 4);
                if (ptype == HVU_PPI_CSUM || ptype == HVU_PPI_LSO) {  /* others: skipped, as NDIS */
                    uint32_t *has = ptype == HVU_PPI_CSUM ? &out[n].has_csum : &out[n].has_lso;
                    if (sz - poff < 4 || *has)  /* 4 data bytes; given once */
                        return reject(p, HVU_SIM_R_RNDIS_PPI, sz);
                    *has = 1;
                    *(ptype == HVU_PPI_CSUM ? &out[n].csum : &out[n].lso) = rd32(data + pos + e + poff);
                }
                e += sz;
            }
        }
        out[n].data = data + pos + RNDIS_HDR + d_off;
        out[n].len = d_len;
        n++;
        pos += mlen;
    }
    *nout = n;
    return 0;
}

/* An in-band NVSP 107 data send: 1 handled, 0 hand to Python (reason set), 2 no room yet. */
static int tx_send(struct hvu_sim_pump *p, uint8_t flags, uint64_t tid, const uint8_t *nv, uint32_t plen)
{
    struct frame_ref frames[MAX_MSGS];
    struct hvu_off_plan plans[MAX_MSGS];
    uint32_t chan_type, index, size, nframes = 0, i, comp_len;
    uint8_t comp[DESC + MAX_NVSP_PAD];
    uint64_t base;
    int64_t room;
    int rc;

    if (plen < 16)
        return reject(p, HVU_SIM_R_NVSP_SHORT, plen), 0;
    chan_type = rd32(nv + 4);
    index = rd32(nv + 8);
    size = rd32(nv + 12);
    if (chan_type != 0 || index == NO_SECTION)
        return reject(p, HVU_SIM_R_CONTROL, chan_type), 0;
    if (!(flags & FLAG_RC))
        return reject(p, HVU_SIM_R_NO_COMPLETION_FLAG, flags), 0;
    base = (uint64_t)index * p->send_section;
    if (base > p->send_size || size > p->send_size - base)
        return reject(p, HVU_SIM_R_BAD_SECTION, index), 0;
    if (p->strict && size > p->send_section)
        return reject(p, HVU_SIM_R_SECTION_OVERSIZE, size), 0;
    if (parse_send(p, p->send_buf + base, size, frames, &nframes) != 0)
        return 0;
    /* offload requests: all checked before anything is sent; a refusal is Python's (it logs why
     * and completes with NVSP_STAT_FAIL, as for any malformed data message) */
    for (i = 0; i < nframes; i++) {
        plans[i].action = HVU_OFF_TX_ASIS;
        if (!frames[i].has_csum && !frames[i].has_lso)
            continue;
        if (frames[i].len > p->gso_buf_len
            || hvu_off_tx_check(frames[i].data, frames[i].len, (int)frames[i].has_csum, frames[i].csum,
                                (int)frames[i].has_lso, frames[i].lso, p->off_tx, p->lso_max, p->max_frame,
                                &plans[i]) != 0)
            return reject(p, HVU_SIM_R_OFFLOAD, i), 0;
    }
    /* room for the completion first: a send is consumed only when it can be completed */
    comp_len = DESC + p->nvsp_pad;
    room = in_free(p);
    if (room < 0)
        return -1;
    if (room <= (int64_t)(((comp_len + 7) & ~7u) + TRAILER)) {
        uint32_t need = ((comp_len + 7) & ~7u) + TRAILER;
        st_rel(p->in_ring, OFF_PENDING, need);
        p->pending_set = 1;
        p->c.tx_wait_ring_full++;
        return 2;
    }
    for (i = 0; i < nframes; i++) {
        if (frames[i].has_csum || frames[i].has_lso)
            tx_offloaded(p, &frames[i], &plans[i]);
        else
            tx_count(p, tap_write(p, NULL, frames[i].data, frames[i].len), frames[i].len);
    }
    memset(comp, 0, sizeof comp);
    comp[0] = PKT_COMP;
    comp[2] = 2;
    comp[4] = (uint8_t)((comp_len + 7) / 8);
    memcpy(comp + 8, &tid, 8);
    wr32(comp + DESC, NVSP_RNDIS_PKT_COMPLETE);
    wr32(comp + DESC + 4, NVSP_STAT_SUCCESS);
    rc = in_write(p, comp, comp_len, NULL, 0);
    if (rc < 0)
        return -1;
    if (p->pending_set) {
        st_rel(p->in_ring, OFF_PENDING, 0);
        p->pending_set = 0;
    }
    p->c.tx_completions++;
    return 1;
}

/* ---- outbound reader (guest -> host) ---------------------------------------------------------- */

/* Publish our read index; signal if the guest waits for the space (spec 3.11 b from the host). */
static void out_commit(struct hvu_sim_pump *p, uint32_t consumed)
{
    uint32_t d = dsize(p), want, w, free_after;
    st_rel(p->out_ring, OFF_READ, p->rd);
    atomic_thread_fence(memory_order_seq_cst);
    if (consumed == 0 || !(ld_acq(p->out_ring, OFF_FEATURES) & 1))
        return;
    want = ld_acq(p->out_ring, OFF_PENDING) / 8 * 8;
    if (want > d - 8)
        want = d - 8;
    if (want == 0)
        return;
    w = ld_acq(p->out_ring, OFF_WRITE);
    if (w >= d || w % 8)
        return;  /* caught as a fault on the next pass */
    free_after = w >= p->rd ? d - (w - p->rd) : p->rd - w;
    /* signed: the guest may have written more than we consumed since (free before < 0) */
    if ((int64_t)free_after - (int64_t)consumed <= (int64_t)want && want < free_after)
        p->signal = 1;
}

enum { DRAIN_EMPTY, DRAIN_CONTROL, DRAIN_FAULT, DRAIN_BLOCKED };

static int fault(struct hvu_sim_pump *p, uint32_t reason, uint64_t value)
{
    p->dead = 1;
    reject(p, reason, value);
    return DRAIN_FAULT;
}

/* Read packets until the ring is empty, a control packet (left unread) or a fault. */
static int drain(struct hvu_sim_pump *p, int *worked)
{
    uint32_t d = dsize(p), consumed = 0;
    int result = DRAIN_EMPTY;
    for (;;) {
        uint8_t desc[DESC], pl[16];
        uint16_t type, off8, len8, flags;
        uint32_t w = ld_acq(p->out_ring, OFF_WRITE), avail, len, hlen, plen, ppos;
        uint64_t tid;
        int rc;
        if (w >= d || w % 8) {
            result = fault(p, HVU_SIM_R_BAD_WRITE_INDEX, w);
            break;
        }
        avail = w >= p->rd ? w - p->rd : d - (p->rd - w);
        if (avail == 0)
            break;
        if (avail < DESC + TRAILER) {
            result = fault(p, HVU_SIM_R_SHORT_AVAIL, avail);
            break;
        }
        copy_out(p, p->rd, desc, DESC);  /* the descriptor is read once, from our copy (4.4) */
        memcpy(&type, desc, 2); memcpy(&off8, desc + 2, 2); memcpy(&len8, desc + 4, 2);
        memcpy(&flags, desc + 6, 2); memcpy(&tid, desc + 8, 8);
        len = (uint32_t)len8 * 8;
        hlen = (uint32_t)off8 * 8;
        if (len < DESC || len + TRAILER > avail) { result = fault(p, HVU_SIM_R_BAD_LEN8, len8); break; }
        if (hlen < DESC || hlen > len) { result = fault(p, HVU_SIM_R_BAD_OFFSET8, off8); break; }
        if (type != PKT_INBAND && type != PKT_XFER && type != PKT_GPA && type != PKT_COMP) {
            result = fault(p, HVU_SIM_R_BAD_TYPE, type);
            break;
        }
        if (flags & ~FLAG_RC) { result = fault(p, HVU_SIM_R_BAD_FLAGS, flags); break; }
        plen = len - hlen;
        ppos = p->rd + hlen;
        if (ppos >= d)
            ppos -= d;
        memset(pl, 0, sizeof pl);
        copy_out(p, ppos, pl, plen < sizeof pl ? plen : (uint32_t)sizeof pl);
        if (type == PKT_COMP && (tid & TAG_MASK) == TAG) {
            rx_completion(p, tid, pl, plen);
        } else if (type == PKT_INBAND && plen >= 4 && rd32(pl) == NVSP_RNDIS_PKT) {
            rc = tx_send(p, (uint8_t)flags, tid, pl, plen);
            if (rc < 0) { result = DRAIN_FAULT; break; }
            if (rc == 0) { result = DRAIN_CONTROL; break; }
            if (rc == 2) { result = DRAIN_BLOCKED; break; }
        } else {
            reject(p, HVU_SIM_R_CONTROL, type);
            result = DRAIN_CONTROL;
            break;
        }
        *worked = 1;
        p->rd += len + TRAILER;
        if (p->rd >= d)
            p->rd -= d;
        consumed += len + TRAILER;
    }
    out_commit(p, consumed);
    if (result == DRAIN_CONTROL)
        p->c.handoffs++;
    return result;
}

/* Consume the guest's monitor trigger bit, atomically (other channels share the word, 3.12). */
static int take_monitor(struct hvu_sim_pump *p)
{
    uint32_t m;
    if (!p->monitor_word)
        return 0;
    m = 1u << p->monitor_bit;
    if (!(__atomic_load_n(p->monitor_word, __ATOMIC_ACQUIRE) & m))
        return 0;
    __atomic_fetch_and(p->monitor_word, ~m, __ATOMIC_SEQ_CST);
    p->c.monitor_wakeups++;
    return 1;
}

/* The loop: poll the tap, the wake fd and (by short sleeps) the ring and the monitor bit.
 * Returns an enum hvu_sim_run, or a negative errno from poll. */
int hvu_sim_pump_run(struct hvu_sim_pump *p, int wake_fd, int64_t timeout_us)
{
    uint64_t start = now_ns(), deadline = start + (timeout_us > 0 ? (uint64_t)timeout_us * 1000u : 0);
    uint64_t sleep_ns = 0;
    p->signal = 0;
    if (p->dead)
        return HVU_SIM_RUN_FAULT;
    /* Sleeps here are tens of microseconds: the default 50 us timer slack would double them. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    /* take over the host-owned indices from whoever ran last (see the header comment) */
    p->rd = ld_acq(p->out_ring, OFF_READ);
    p->wr = ld_acq(p->in_ring, OFF_WRITE);
    if (p->rd >= dsize(p) || p->rd % 8)
        return p->dead = 1, reject(p, HVU_SIM_R_BAD_READ_INDEX, p->rd), HVU_SIM_RUN_FAULT;
    if (p->wr >= dsize(p) || p->wr % 8)
        return p->dead = 1, reject(p, HVU_SIM_R_BAD_WRITE_INDEX, p->wr), HVU_SIM_RUN_FAULT;
    for (;;) {
        struct pollfd fds[2];
        struct timespec ts;
        int nfds = 0, tap_ready = 0, woke = 0, worked = 0, rc, r;
        uint64_t now;
        if (wake_fd >= 0) { fds[nfds].fd = wake_fd; fds[nfds].events = POLLIN; fds[nfds].revents = 0; nfds++; }
        if (p->tap_fd >= 0 && p->rx_enabled) {
            fds[nfds].fd = p->tap_fd; fds[nfds].events = POLLIN; fds[nfds].revents = 0; nfds++;
        }
        ts.tv_sec = (time_t)(sleep_ns / 1000000000u);
        ts.tv_nsec = (long)(sleep_ns % 1000000000u);
        r = ppoll(fds, (nfds_t)nfds, &ts, NULL);
        if (r < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; r > 0 && i < nfds; i++) {
            if (fds[i].fd == wake_fd && fds[i].revents)
                woke = 1;
            else if (fds[i].revents)
                tap_ready = 1;
        }
        p->c.passes++;
        if (take_monitor(p))
            worked = 1;
        /* the host is draining: the guest need not signal meanwhile (spec 5.10) */
        st_rel(p->out_ring, OFF_MASK, 1);
        rc = drain(p, &worked);
        st_rel(p->out_ring, OFF_MASK, 0);
        atomic_thread_fence(memory_order_seq_cst);  /* unmask before the re-check load */
        if (rc == DRAIN_EMPTY)
            rc = drain(p, &worked);
        if (rc == DRAIN_FAULT)
            return HVU_SIM_RUN_FAULT;
        if (tap_ready) {
            int g = rx_batch(p);
            if (g < 0)
                return HVU_SIM_RUN_FAULT;
            if (g > 0)
                worked = 1;
        }
        if (p->signal) {
            p->c.signals++;
            if (p->irq != NULL) {   /* interrupt the guest here: no trip through Python */
                hvu_sim_irq_raise(p->irq, p->auto_mask ? p->in_ring : NULL);
                p->signal = 0;
            }
        }
        now = now_ns();
        if (worked)  /* before any return: the next run's spin window starts from here */
            p->last_activity_ns = now;
        if (rc == DRAIN_CONTROL)
            return HVU_SIM_RUN_CONTROL;
        if (p->signal)
            return HVU_SIM_RUN_SIGNAL;
        if (woke)
            return HVU_SIM_RUN_WAKE;
        if (now >= deadline)
            return HVU_SIM_RUN_TIMEOUT;
        if (worked || tap_ready)
            sleep_ns = 0;  /* more may be there: look again at once */
        else if (now - p->last_activity_ns < p->spin_ns)
            sleep_ns = 0;  /* traffic flows: the next guest send is likely sooner than a timer wake-up */
        else
            sleep_ns = now - p->last_activity_ns > p->idle_after_ns ? p->idle_poll_ns : p->poll_ns;
        if (sleep_ns > deadline - now)
            sleep_ns = deadline - now;
    }
}
