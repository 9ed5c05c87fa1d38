/* The emulated Hyper-V host's data path for the channels of one NIC, in C, written from
 * docs/VMBUS.md §3-§5 and hvuio/sim (the Python host is the reference behaviour).
 * Nothing here is shared with the guest's C core (_native/ring.c etc.): one ring bug must not
 * hide on both sides.
 *
 * What lives here: the pump's set-up and its books of receive sections (init, add_sections), its
 * channels (add_chan; the served channel's ring fields are swapped in and out of chans[], one
 * thread looping over them, the sections one pool for all), the
 * host reader of the guest's OUTBOUND ring (each packet checked, then dispatched: NVSP 107 data
 * sends to simhost_tx.c, completions of our transfer pages to simhost_rx.c), the writer of its
 * INBOUND ring (used by both), the monitor trigger bit, and the poll loop. What must not: the
 * per-frame work of either direction (network -> guest is simhost_rx.c, guest -> network is
 * simhost_tx.c; what they share is simhost_int.h), control-plane decisions (every packet the pump
 * does not own is left in the ring and handed to Python's HostNvsp: HVU_SIM_RUN_CONTROL),
 * allocation, logging, Python.
 *
 * Index ownership (the invariant that lets C and Python share one ring, VMBUS.md §3.1 table 49):
 *   outbound read_index and inbound write_index are the HOST's. Exactly one thread (the
 *   session worker) touches either ring, alternating between this pump and Python's
 *   HostRingReader/Writer. Each side publishes its private index to the header before handing
 *   over and re-syncs its private index from the header when it takes over (here: at every
 *   hvu_sim_pump_run entry). Re-reading a header field we own is safe: the guest never writes it.
 *
 * Receive sections: Python hands the pump a set of section indexes (hvu_sim_pump_add_sections)
 * and never uses them again. A transfer-page packet's trans_id is the index of its first section,
 * as OpenVMM's (microsoft/openvmm vm/devices/net/netvsp/src/lib.rs process_endpoint_rx: the first
 * rx id of the batch; release_recv_buffers frees the batch by it), so a completion is the pump's
 * iff its id names a section the pump owns; it frees sections only when that section is the first
 * of a batch in flight (SEC_HEAD): a repeated or forged id is counted, never a double free.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>

#include "simhost.h"
#include "simhost_int.h"
#include "offload.h"

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
    case HVU_SIM_R_RNDIS_LEN: return "RNDIS message length outside the sent data";
    case HVU_SIM_R_RNDIS_TYPE: return "RNDIS message on the data channel is not a packet message";
    case HVU_SIM_R_RNDIS_DATA: return "RNDIS packet data outside the message or empty";
    case HVU_SIM_R_RNDIS_OOB: return "RNDIS packet OOB/VC fields must be zero";
    case HVU_SIM_R_RNDIS_PPI: return "RNDIS per-packet info outside the message or malformed";
    case HVU_SIM_R_TOO_MANY_MSGS: return "more RNDIS messages in one send than the fast path handles";
    case HVU_SIM_R_OFFLOAD: return "checksum/LSO per-packet info the host does not accept for this frame";
    case HVU_SIM_R_AGGREGATION: return "RNDIS packets in one send past the host's count or alignment";
    case HVU_SIM_R_UNKNOWN_TID: return "receive completion for no outstanding transfer (unknown or repeated id)";
    case HVU_SIM_R_COMPLETION_TYPE: return "receive completion is not NVSP 108";
    case HVU_SIM_R_RNDIS_HDR_RANGE: return "RNDIS packet header or per-packet info past the end of its range";
    case HVU_SIM_R_GPA_HEADER: return "GPA-direct range header malformed";
    case HVU_SIM_R_GPA_PYTHON: return "GPA-direct send the fast path leaves to Python";
    case HVU_SIM_R_GPA_PAGE: return "GPA-direct page outside guest memory";
    case HVU_SIM_R_VLAN: return "send with 802.1Q per-packet info (Python tags the frame)";
    default: return "unknown reason";
    }
}

int hvu_sim_pump_init(struct hvu_sim_pump *p)
{
    uint32_t i;
    if (!p || !p->out_ring || !p->in_ring || !p->recv_buf || !p->send_buf || !p->sec_state
        || !p->free_stack || !p->sec_next || !p->scratch)
        return -EINVAL;
    p->rx_vlan = NONE;
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
    if (p->rndis_max_pkts == 0 || p->rndis_align == 0 || (p->rndis_align & (p->rndis_align - 1)))
        return -EINVAL;
    if (!p->gso_buf || p->gso_buf_len < HVU_VNET_HLEN + HVU_GSO_MAX_FRAME)
        return -EINVAL;  /* offloads: a whole GSO frame (and its header) must fit */
    for (i = 0; i < p->recv_count; i++) {
        p->sec_state[i] = SEC_NOT_OURS;
        p->sec_next[i] = NONE;
    }
    memset(p->chans, 0, sizeof p->chans);
    p->chans[0].out_ring = p->out_ring;
    p->chans[0].in_ring = p->in_ring;
    p->chans[0].monitor_word = p->monitor_word;
    p->chans[0].monitor_bit = p->monitor_bit;
    p->nchans = 1;
    p->cur = 0;
    p->signal_mask = 0;
    p->last_chan = 0;
    p->nfree = p->owned = 0;
    p->dead = 0;
    p->signal = 0;
    p->reason = HVU_SIM_R_NONE;
    p->value = 0;
    memset(&p->c, 0, sizeof p->c);
    return 0;
}

int hvu_sim_pump_add_chan(struct hvu_sim_pump *p, uint32_t index, uint8_t *out_ring, uint8_t *in_ring,
                          uint32_t *monitor_word, uint32_t monitor_bit)
{
    struct hvu_sim_chan *c;
    if (index == 0 || index >= sizeof p->chans / sizeof p->chans[0] || !out_ring || !in_ring
        || (monitor_word && monitor_bit > 31) || p->chans[index].out_ring)
        return -EINVAL;
    c = &p->chans[index];
    memset(c, 0, sizeof *c);
    c->out_ring = out_ring;
    c->in_ring = in_ring;
    c->monitor_word = monitor_word;
    c->monitor_bit = monitor_bit;
    if (p->nchans <= index)
        p->nchans = index + 1;
    return 0;
}

/* ---- channels: the current one's ring fields live in the pump itself ------------------------ */

/* A signal the current channel asked for: raised here (the device's irq), else left for Python. */
static void chan_signal(struct hvu_sim_pump *p)
{
    if (!p->signal)
        return;
    p->signal = 0;
    p->c.signals++;
    p->chans[p->cur].signals++;
    if (p->irq != NULL)  /* interrupt the guest here: no trip through Python */
        hvu_sim_irq_raise(p->irq, p->auto_mask ? p->in_ring : NULL);
    else
        p->signal_mask |= 1ull << p->cur;
}

static void chan_save(struct hvu_sim_pump *p)
{
    struct hvu_sim_chan *c = &p->chans[p->cur];
    c->rd = p->rd;
    c->wr = p->wr;
    c->pending_set = p->pending_set;
}

static void chan_load(struct hvu_sim_pump *p, uint32_t i)
{
    struct hvu_sim_chan *c = &p->chans[i];
    p->cur = i;
    p->out_ring = c->out_ring;
    p->in_ring = c->in_ring;
    p->monitor_word = c->monitor_word;
    p->monitor_bit = c->monitor_bit;
    p->rd = c->rd;
    p->wr = c->wr;
    p->pending_set = c->pending_set;
}

void hvu_sim_chan_select(struct hvu_sim_pump *p, uint32_t i)
{
    if (i == p->cur)
        return;
    chan_signal(p);
    chan_save(p);
    chan_load(p, i);
}

/* Free sections Python takes back (up to max, into out): they are no longer the pump's. */
uint32_t hvu_sim_pump_take_sections(struct hvu_sim_pump *p, uint32_t *out, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && p->nfree > 0) {
        uint32_t s = p->free_stack[--p->nfree];
        p->sec_state[s] = SEC_NOT_OURS;
        p->owned--;
        out[n++] = s;
    }
    return n;
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
int64_t hvu_sim_in_free(struct hvu_sim_pump *p)
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
 * Signal (VMBUS.md §3.11 d): the ring was empty before this write and the guest's mask is 0. */
int hvu_sim_in_write(struct hvu_sim_pump *p, const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    static const uint8_t zeros[8];
    uint32_t len = alen + blen, padded = (len + 7) & ~7u, need = padded + TRAILER, start = p->wr, pos;
    uint64_t trailer = (uint64_t)start << 32;
    int64_t room = hvu_sim_in_free(p);
    if (room < 0)
        return -1;
    if (room <= (int64_t)need)  /* never fill completely (VMBUS.md §3.8 step 2) */
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

/* ---- outbound reader (guest -> host) ---------------------------------------------------------- */

/* Publish our read index; signal if the guest waits for the space (VMBUS.md §3.11 b from the host). */
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
        if (type == PKT_COMP && tid < p->recv_count && p->sec_state[tid] != SEC_NOT_OURS) {
            hvu_sim_rx_completion(p, tid, pl, plen);
        } else if ((type == PKT_INBAND || (type == PKT_GPA && hlen - DESC <= GPA_HDR_MAX)) && plen >= 4
                   && rd32(pl) == NVSP_RNDIS_PKT) {
            if (type == PKT_INBAND) {
                rc = hvu_sim_tx_send(p, (uint8_t)flags, tid, pl, plen);
            } else {  /* the range header, read once into our copy */
                uint8_t gh[GPA_HDR_MAX];
                uint32_t hpos = p->rd + DESC;
                if (hpos >= d)
                    hpos -= d;
                copy_out(p, hpos, gh, hlen - DESC);
                rc = hvu_sim_tx_gpa(p, (uint8_t)flags, tid, gh, hlen - DESC, pl, plen);
            }
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

/* Leave a run: the current channel's signal and indices saved; `signal` = some channel wants one. */
static int finish(struct hvu_sim_pump *p, int result)
{
    chan_signal(p);
    chan_save(p);
    p->signal = p->signal_mask != 0;
    return result;
}

/* Take over every served channel's host-owned indices from whoever ran last (see the header
 * comment). 0 ok, -1 fault (the channel loaded). */
static int take_indices(struct hvu_sim_pump *p)
{
    for (uint32_t i = 0; i < p->nchans; i++) {
        struct hvu_sim_chan *c = &p->chans[i];
        if (!c->out_ring)
            continue;
        c->rd = ld_acq(c->out_ring, OFF_READ);
        c->wr = ld_acq(c->in_ring, OFF_WRITE);
        p->cur = i;
        p->last_chan = i;
        if (c->rd >= dsize(p) || c->rd % 8)
            return p->dead = 1, reject(p, HVU_SIM_R_BAD_READ_INDEX, c->rd), -1;
        if (c->wr >= dsize(p) || c->wr % 8)
            return p->dead = 1, reject(p, HVU_SIM_R_BAD_WRITE_INDEX, c->wr), -1;
    }
    chan_load(p, 0);
    return 0;
}

/* The loop: poll the tap, the wake fd and (by short sleeps) every channel's ring and monitor bit.
 * Returns an enum hvu_sim_run, or a negative errno from poll. */
int hvu_sim_pump_run(struct hvu_sim_pump *p, int wake_fd, int64_t timeout_us)
{
    uint64_t start = now_ns(), deadline = start + (timeout_us > 0 ? (uint64_t)timeout_us * 1000u : 0);
    uint64_t sleep_ns = 0;
    p->signal = 0;
    p->signal_mask = 0;
    if (p->dead)
        return HVU_SIM_RUN_FAULT;
    /* Sleeps here are tens of microseconds: the default 50 us timer slack would double them. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    if (take_indices(p) < 0)
        return HVU_SIM_RUN_FAULT;
    for (;;) {
        struct pollfd fds[2];
        struct timespec ts;
        int nfds = 0, tap_ready = 0, woke = 0, worked = 0, control = 0, rc, r;
        uint64_t now;
        if (wake_fd >= 0) { fds[nfds].fd = wake_fd; fds[nfds].events = POLLIN; fds[nfds].revents = 0; nfds++; }
        if (p->tap_fd >= 0 && p->rx_enabled) {
            fds[nfds].fd = p->tap_fd; fds[nfds].events = POLLIN; fds[nfds].revents = 0; nfds++;
        }
        ts.tv_sec = (time_t)(sleep_ns / 1000000000u);
        ts.tv_nsec = (long)(sleep_ns % 1000000000u);
        r = ppoll(fds, (nfds_t)nfds, &ts, NULL);
        if (r < 0 && errno != EINTR)
            return finish(p, -errno);
        for (int i = 0; r > 0 && i < nfds; i++) {
            if (fds[i].fd == wake_fd && fds[i].revents)
                woke = 1;
            else if (fds[i].revents)
                tap_ready = 1;
        }
        p->c.passes++;
        for (uint32_t i = 0; i < p->nchans && !control; i++) {
            if (!p->chans[i].out_ring)
                continue;
            hvu_sim_chan_select(p, i);
            if (take_monitor(p))
                worked = 1;
            /* the host is draining: the guest need not signal meanwhile (VMBUS.md §5.10) */
            st_rel(p->out_ring, OFF_MASK, 1);
            rc = drain(p, &worked);
            st_rel(p->out_ring, OFF_MASK, 0);
            atomic_thread_fence(memory_order_seq_cst);  /* unmask before the re-check load */
            if (rc == DRAIN_EMPTY)
                rc = drain(p, &worked);
            if (rc == DRAIN_FAULT) {
                p->last_chan = i;
                return finish(p, HVU_SIM_RUN_FAULT);
            }
            if (rc == DRAIN_CONTROL) {
                p->last_chan = i;
                control = 1;
            }
        }
        if (tap_ready) {
            int g = hvu_sim_rx_batch(p);
            if (g < 0) {
                p->last_chan = p->cur;
                return finish(p, HVU_SIM_RUN_FAULT);
            }
            if (g > 0)
                worked = 1;
        }
        chan_signal(p);
        now = now_ns();
        if (worked)  /* before any return: the next run's spin window starts from here */
            p->last_activity_ns = now;
        if (control)
            return finish(p, HVU_SIM_RUN_CONTROL);
        if (p->signal_mask)
            return finish(p, HVU_SIM_RUN_SIGNAL);
        if (p->steer_used)
            return finish(p, HVU_SIM_RUN_STEER);
        if (woke)
            return finish(p, HVU_SIM_RUN_WAKE);
        if (now >= deadline)
            return finish(p, HVU_SIM_RUN_TIMEOUT);
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
