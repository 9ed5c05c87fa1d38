/* VMBus ring buffer: one direction of a channel, attached to caller-owned shared memory.
 *
 * What lives here: validated snapshots of the peer's indices, the gather writer, the reader
 * (peek / copy-out / consume and the batch first / next / close), the signal decisions as pure
 * functions, the transfer-page header check, and an in-C benchmark loop. No syscalls, no
 * allocation, no printing: the caller owns the ring memory, the struct and every buffer.
 *
 * Host/guest contract (docs: docs/VMBUS.md):
 *  - Layout (1.4, 3.1): a ring is a header page of header_size (= the guest PAGE_SIZE, not 4096
 *    on 64 KiB-page kernels) followed by D = ring_size - header_size data bytes. Indices are byte
 *    offsets into the data area, in [0, D) and multiples of 8 (3.2). w == r means empty, so a
 *    writer never fills the ring: it refuses when free <= packet + trailer (3.8 step 2).
 *  - Packets (3.3): 16-byte descriptor, type-specific header, payload, zero padding to 8, then
 *    an 8-byte trailer (old write_index << 32) not counted in len8. Userspace mappings are single,
 *    so every copy splits at the end of the data area (1.4 item 14).
 *  - Ownership (3.1 item 49): on the outbound ring we own write_index and pending_send_sz; the
 *    host owns read_index and interrupt_mask. On the inbound ring we own read_index (and the
 *    interrupt_mask); the host owns write_index and pending_send_sz. Our own index lives in a
 *    private copy and is only ever stored, never re-read from shared memory (4.2).
 *  - Everything the host writes is untrusted (4): each peer field is loaded once into a local,
 *    checked, and only then used. A failed check records {reason, value}, counts it, and makes
 *    the ring refuse every later call until it is attached again (sticky). Nothing is clamped.
 *  - Ordering (3.10): release store to publish an index, seq_cst fence between publishing and
 *    reading the peer's interrupt_mask / pending_send_sz, acquire loads of the peer's index.
 *  - Signalling (3.11): writer signals only on empty -> non-empty with interrupt_mask clear
 *    (decisions OR together across a batch); reader signals only when this batch moved free
 *    space across the host's pending_send_sz with feature bit 0 set.
 */
#include <errno.h>
#include <string.h>

#include "hvuio.h"

/* Short unsigned names for the sizes hvuio_api.h exports (enum hvu_const). */
#define TRAILER ((uint32_t)HVU_TRAILER_SIZE)
#define DESC ((uint32_t)HVU_DESC_SIZE)
#define MAX_LEN8 ((uint32_t)HVU_MAX_LEN8)

/* ---- pure functions ------------------------------------------------------------------------ */

/* Free bytes for the writer (VMBUS.md §3.2 item 51); indices already validated to be < d. */
uint32_t hvu_ring_free_bytes(uint32_t w, uint32_t r, uint32_t d)
{
    return w >= r ? d - (w - r) : r - w;
}

/* Readable bytes for the reader = D - free (VMBUS.md §3.2 item 51). */
uint32_t hvu_ring_avail_bytes(uint32_t w, uint32_t r, uint32_t d)
{
    return d - hvu_ring_free_bytes(w, r, d);
}

/* Host pending_send_sz made usable: round down to 8, cap at D - 8 (VMBUS.md §4.18). */
uint32_t hvu_pending_send_clamp(uint32_t p, uint32_t d)
{
    uint32_t cap = d >= TRAILER ? d - TRAILER : 0;
    p &= ~7u;
    return p > cap ? cap : p;
}

/* Writer decision after publishing (VMBUS.md §3.11 a): masked => no; else empty -> non-empty only. */
int hvu_signal_after_write(uint32_t interrupt_mask, uint32_t read_index, uint32_t old_write_index)
{
    if (interrupt_mask != 0)
        return 0;
    return read_index == old_write_index;
}

/* Reader decision after publishing read_index (VMBUS.md §3.11 b): W = free now, R = consumed. */
int hvu_signal_after_read(uint32_t feature_bits, uint32_t pending_send_sz, uint32_t data_size,
                          uint32_t free_now, uint32_t consumed)
{
    if ((feature_bits & HVU_FEAT_PENDING_SEND_SZ) == 0)
        return 0;
    uint32_t p = hvu_pending_send_clamp(pending_send_sz, data_size);
    if (p == 0)
        return 0;
    if ((int64_t)free_now - (int64_t)consumed > (int64_t)p)
        return 0;   /* the writer was not blocked before this batch */
    if (free_now <= p)
        return 0;   /* still not enough room for it */
    return 1;
}

/* ---- names ----------------------------------------------------------------------------------- */

static const char *const reason_names[HVU_REASON_COUNT] = {
    "ok", "write_index", "read_index", "len8", "offset8", "type", "flags", "short",
    "too_big", "xfer_header", "xfer_pageset_id", "range_cnt", "range",
};

/* Short field-like name of a reason code; "unknown" outside the enum. */
const char *hvu_reason_name(int reason)
{
    if (reason < 0 || reason >= HVU_REASON_COUNT)
        return "unknown";
    return reason_names[reason];
}

static const char *const counter_names[] = {
#define HVU_COUNTER_NAME(name) #name,
    HVU_RING_COUNTERS(HVU_COUNTER_NAME)
#undef HVU_COUNTER_NAME
};

#define NCOUNTERS ((int)(sizeof(counter_names) / sizeof(counter_names[0])))

int hvu_counter_count(void) { return NCOUNTERS; }

/* Name of counter i, NULL outside [0, count). */
const char *hvu_counter_name(int i)
{
    return (i < 0 || i >= NCOUNTERS) ? NULL : counter_names[i];
}

/* Value of counter i of ring r (the struct's fields are the X-macro order, all uint64_t). */
uint64_t hvu_ring_counter(const struct hvu_ring *r, int i)
{
    if (i < 0 || i >= NCOUNTERS)
        return 0;
    const uint64_t *v = (const uint64_t *)&r->ctr;
    return v[i];
}

/* ---- attach / header --------------------------------------------------------------------------- */

size_t hvu_ring_sizeof(void) { return sizeof(struct hvu_ring); }

/* Records the first fault, counts it; returns -EIO for the caller to pass up. */
static int corrupt(struct hvu_ring *r, int reason, uint64_t value)
{
    if (r->fault.reason == HVU_OK) {
        r->fault.reason = reason;
        r->fault.value = value;
        r->ctr.ring_corrupt++;
    }
    return -EIO;
}

/* Guards every operation: attached, right direction, not already refused. */
static int usable(struct hvu_ring *r, int dir)
{
    if (r == NULL || !r->attached)
        return -EINVAL;
    if (dir >= 0 && r->dir != dir)
        return -EPERM;
    if (r->fault.reason != HVU_OK) {
        r->ctr.ring_refused++;
        return -EIO;
    }
    return 0;
}

static int index_ok(uint32_t idx, uint32_t d) { return idx < d && (idx & 7u) == 0; }

/* Assumes base points at ring_size writable bytes shared with the peer, 8-byte aligned.
 * header_size is the guest PAGE_SIZE (>= 4096, multiple of 4096); the data follows it. */
int hvu_ring_attach(struct hvu_ring *r, void *base, size_t ring_size, size_t header_size, int dir)
{
    if (r == NULL)
        return -EINVAL;
    r->attached = 0;   /* a failed re-attach leaves the ring unusable, not half-configured */
    if (base == NULL || ((uintptr_t)base & 7u) != 0)
        return -EINVAL;
    if (header_size < HVU_HV_PAGE_SIZE || header_size % HVU_HV_PAGE_SIZE != 0)
        return -EINVAL;
    if (ring_size <= header_size || ring_size - header_size > 0x80000000u)
        return -EINVAL;
    size_t d = ring_size - header_size;
    if (d % 8 != 0 || d < HVU_RING_MIN_DATA)
        return -EINVAL;
    if (dir != HVU_RING_TX && dir != HVU_RING_RX)
        return -EINVAL;
    memset(r, 0, sizeof(*r));
    r->hdr = (struct hvu_ring_hdr *)base;
    r->data = (uint8_t *)base + header_size;
    r->dsize = (uint32_t)d;
    r->dir = dir;
    r->accept = HVU_ACCEPT_DEFAULT;
    r->attached = 1;
    /* Our own index is taken from the header once, here, and kept privately afterwards. */
    uint32_t own = __atomic_load_n(dir == HVU_RING_TX ? &r->hdr->write_index : &r->hdr->read_index,
                                   __ATOMIC_ACQUIRE);   /* acquire: pairs with whoever initialised it */
    if (!index_ok(own, r->dsize))
        return corrupt(r, dir == HVU_RING_TX ? HVU_BAD_WRITE_INDEX : HVU_BAD_READ_INDEX, own);
    if (dir == HVU_RING_TX)
        r->windex = own;
    else
        r->rindex = own;
    return 0;
}

void hvu_ring_detach(struct hvu_ring *r)
{
    if (r != NULL)
        r->attached = 0;
}

/* Bit t of type_mask accepts packet type t (types >= 32 are never accepted). */
int hvu_ring_set_accept(struct hvu_ring *r, uint32_t type_mask)
{
    if (r == NULL || !r->attached)
        return -EINVAL;
    r->accept = type_mask;
    return 0;
}

/* Copies the sticky fault out; returns its reason (HVU_OK when the ring is healthy). */
int hvu_ring_fault(const struct hvu_ring *r, struct hvu_fault *out)
{
    if (out != NULL)
        *out = r->fault;
    return r->fault.reason;
}

uint32_t hvu_ring_data_size(const struct hvu_ring *r) { return r->dsize; }

/* A diagnostic view: each field loaded once, relaxed; not for decisions (those re-load). */
void hvu_ring_header(const struct hvu_ring *r, struct hvu_ring_hdr *out)
{
    memset(out, 0, sizeof(*out));
    out->write_index = __atomic_load_n(&r->hdr->write_index, __ATOMIC_RELAXED);
    out->read_index = __atomic_load_n(&r->hdr->read_index, __ATOMIC_RELAXED);
    out->interrupt_mask = __atomic_load_n(&r->hdr->interrupt_mask, __ATOMIC_RELAXED);
    out->pending_send_sz = __atomic_load_n(&r->hdr->pending_send_sz, __ATOMIC_RELAXED);
    out->feature_bits = __atomic_load_n(&r->hdr->feature_bits, __ATOMIC_RELAXED);
}

/* Loads and validates the peer's index: write_index on RX, read_index on TX. */
static int peer_index(struct hvu_ring *r, uint32_t *out)
{
    uint32_t v;
    if (r->dir == HVU_RING_RX) {
        /* acquire: the packet bytes the host wrote before publishing are visible after this */
        v = __atomic_load_n(&r->hdr->write_index, __ATOMIC_ACQUIRE);
        if (!index_ok(v, r->dsize))
            return corrupt(r, HVU_BAD_WRITE_INDEX, v);
    } else {
        /* acquire: the host finished reading the bytes it released before we overwrite them */
        v = __atomic_load_n(&r->hdr->read_index, __ATOMIC_ACQUIRE);
        if (!index_ok(v, r->dsize))
            return corrupt(r, HVU_BAD_READ_INDEX, v);
    }
    *out = v;
    return 0;
}

int64_t hvu_ring_bytes_to_read(struct hvu_ring *r)
{
    uint32_t peer;
    int rc = usable(r, -1);
    if (rc == 0)
        rc = peer_index(r, &peer);
    if (rc < 0)
        return rc;
    return r->dir == HVU_RING_RX ? hvu_ring_avail_bytes(peer, r->rindex, r->dsize)
                                 : hvu_ring_avail_bytes(r->windex, peer, r->dsize);
}

int64_t hvu_ring_bytes_free(struct hvu_ring *r)
{
    int64_t avail = hvu_ring_bytes_to_read(r);
    return avail < 0 ? avail : (int64_t)r->dsize - avail;
}

/* Our reader-side mask on the inbound ring (VMBUS.md §3.1 item 49). */
void hvu_ring_set_interrupt_mask(struct hvu_ring *r, uint32_t mask)
{
    __atomic_store_n(&r->hdr->interrupt_mask, mask, __ATOMIC_RELEASE);
    /* seq_cst: the mask is visible before we re-check the ring or signal (VMBUS.md §3.10 last row) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Outbound pending_send_sz (VMBUS.md §3.11 c): 0 or 8-aligned and <= D - 8. */
int hvu_ring_set_pending_send_sz(struct hvu_ring *r, uint32_t bytes)
{
    int rc = usable(r, HVU_RING_TX);
    if (rc < 0)
        return rc;
    if ((bytes & 7u) != 0 || bytes > r->dsize - TRAILER)
        return -EINVAL;
    __atomic_store_n(&r->hdr->pending_send_sz, bytes, __ATOMIC_RELEASE);
    /* seq_cst: visible to the host before the caller re-reads read_index for free space */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return 0;
}

void hvu_ring_set_feature_bits(struct hvu_ring *r, uint32_t bits)
{
    __atomic_store_n(&r->hdr->feature_bits, bits, __ATOMIC_RELEASE);
}

/* ---- copies with wrap (single mapping, VMBUS.md §1.4 item 14) -------------------------------------- */

/* off < D, len <= D: copy into the data area, splitting at its end; returns the next offset. */
static uint32_t copy_in(struct hvu_ring *r, uint32_t off, const void *src, size_t len)
{
    size_t first = r->dsize - off;
    if (first > len)
        first = len;
    memcpy(r->data + off, src, first);
    if (len > first)
        memcpy(r->data, (const uint8_t *)src + first, len - first);
    uint64_t next = (uint64_t)off + len;
    return (uint32_t)(next >= r->dsize ? next - r->dsize : next);
}

/* off < D, len <= D: copy out of the data area, splitting at its end. */
static void copy_out(const struct hvu_ring *r, uint32_t off, void *dst, size_t len)
{
    size_t first = r->dsize - off;
    if (first > len)
        first = len;
    memcpy(dst, r->data + off, first);
    if (len > first)
        memcpy((uint8_t *)dst + first, r->data, len - first);
}

/* ---- writer ---------------------------------------------------------------------------------- */

static const uint8_t zeros[8];

/* Gather-writes head[0..nhead) then segs[0..nseg) as one packet (VMBUS.md §3.8). */
static int ring_put(struct hvu_ring *r, const struct hvu_seg *head, unsigned nhead,
                    const struct hvu_seg *segs, unsigned nseg, int *signal)
{
    int rc = usable(r, HVU_RING_TX);
    if (rc < 0)
        return rc;
    if (nseg > 0 && segs == NULL)
        return -EINVAL;
    uint64_t len = 0;
    for (unsigned i = 0; i < nhead + nseg; i++) {
        const struct hvu_seg *s = i < nhead ? &head[i] : &segs[i - nhead];
        if (s->len > 0 && s->ptr == NULL)
            return -EINVAL;
        if (s->len > r->dsize || (len += s->len) > r->dsize) {   /* no wrap of the sum */
            r->ctr.tx_too_big++;
            return -EMSGSIZE;
        }
    }
    if (len < DESC)
        return -EINVAL;
    uint64_t padded = (len + 7u) & ~(uint64_t)7u;
    uint64_t total = padded + TRAILER;
    if (padded > (uint64_t)MAX_LEN8 * 8u || total >= r->dsize) {
        r->ctr.tx_too_big++;
        return -EMSGSIZE;
    }
    uint32_t rd;
    rc = peer_index(r, &rd);
    if (rc < 0)
        return rc;
    uint32_t old = r->windex;
    if (hvu_ring_free_bytes(old, rd, r->dsize) <= total) {
        r->ctr.ring_full++;   /* VMBUS.md §3.8 step 2: never fill the ring completely */
        return -EAGAIN;
    }
    uint32_t off = old;
    for (unsigned i = 0; i < nhead + nseg; i++) {
        const struct hvu_seg *s = i < nhead ? &head[i] : &segs[i - nhead];
        if (s->len > 0)
            off = copy_in(r, off, s->ptr, s->len);
    }
    if (padded > len)
        off = copy_in(r, off, zeros, (size_t)(padded - len));
    uint64_t trailer = (uint64_t)old << 32;
    off = copy_in(r, off, &trailer, sizeof(trailer));
    r->windex = off;
    /* release: descriptor, payload and trailer are visible before the new write_index */
    __atomic_store_n(&r->hdr->write_index, off, __ATOMIC_RELEASE);
    /* seq_cst: publish before reading interrupt_mask/read_index, or both sides may sleep */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t mask = __atomic_load_n(&r->hdr->interrupt_mask, __ATOMIC_ACQUIRE);
    /* acquire (with the load above): read_index is read after the mask, as VMBUS.md §3.10 asks */
    uint32_t rd_now = __atomic_load_n(&r->hdr->read_index, __ATOMIC_ACQUIRE);
    int sig = hvu_signal_after_write(mask, rd_now, old);
    r->ctr.tx_packets++;
    r->ctr.tx_bytes += total;
    if (mask != 0)
        r->ctr.ring_signals_masked++;
    if (sig)
        r->ctr.ring_signals++;
    if (signal != NULL)
        *signal |= sig;
    return 0;
}

/* Raw packet: segs carry descriptor, headers and payload; the ring adds padding and trailer. */
int hvu_ring_write(struct hvu_ring *r, const struct hvu_seg *segs, unsigned nseg, int *signal)
{
    return ring_put(r, NULL, 0, segs, nseg, signal);
}

/* Builds the descriptor: offset8 = 2 + hdr_len / 8, len8 from the padded total. */
int hvu_ring_send_hdr(struct hvu_ring *r, uint16_t type, uint16_t flags, uint64_t trans_id,
                      const void *hdr, size_t hdr_len,
                      const struct hvu_seg *payload, unsigned nseg, int *signal)
{
    if (r == NULL || (hdr_len & 7u) != 0 || (hdr_len > 0 && hdr == NULL))
        return -EINVAL;
    if (hdr_len > (MAX_LEN8 - 2u) * 8u || (nseg > 0 && payload == NULL))
        return -EMSGSIZE;
    uint64_t len = DESC + hdr_len;
    for (unsigned i = 0; i < nseg; i++) {
        if (payload[i].len > (uint64_t)MAX_LEN8 * 8u ||   /* checked alone first: no wrap */
            (len += payload[i].len) > (uint64_t)MAX_LEN8 * 8u) {
            r->ctr.tx_too_big++;
            return -EMSGSIZE;
        }
    }
    struct hvu_pkt_desc d;
    d.type = type;
    d.offset8 = (uint16_t)(2u + hdr_len / 8u);
    d.len8 = (uint16_t)((len + 7u) / 8u);
    d.flags = flags;
    d.trans_id = trans_id;
    struct hvu_seg head[2] = {{&d, sizeof(d)}, {hdr, hdr_len}};
    return ring_put(r, head, hdr_len > 0 ? 2u : 1u, payload, nseg, signal);
}

/* In-band style packet: descriptor (offset8 = 2) followed directly by the payload. */
int hvu_ring_send(struct hvu_ring *r, uint16_t type, uint16_t flags, uint64_t trans_id,
                  const struct hvu_seg *payload, unsigned nseg, int *signal)
{
    return hvu_ring_send_hdr(r, type, flags, trans_id, NULL, 0, payload, nseg, signal);
}

/* ---- reader ----------------------------------------------------------------------------------- */

/* Validates and describes the packet at the private read index (VMBUS.md §3.9, 4.1-4.10). */
int hvu_ring_peek(struct hvu_ring *r, struct hvu_pkt_desc *desc)
{
    int rc = usable(r, HVU_RING_RX);
    if (rc < 0)
        return rc;
    r->cur_total = 0;
    uint32_t w;
    rc = peer_index(r, &w);
    if (rc < 0)
        return rc;
    uint32_t avail = hvu_ring_avail_bytes(w, r->rindex, r->dsize);
    if (avail == 0) {
        r->ctr.ring_empty++;
        return -EAGAIN;
    }
    if (avail < DESC + TRAILER)
        return corrupt(r, HVU_SHORT, avail);
    struct hvu_pkt_desc d;   /* one copy of the descriptor; every check reads the copy */
    copy_out(r, r->rindex, &d, sizeof(d));
    uint32_t len = (uint32_t)d.len8 * 8u;
    uint32_t hlen = (uint32_t)d.offset8 * 8u;
    if (len < DESC || len + TRAILER > avail)
        return corrupt(r, HVU_BAD_LEN8, d.len8);
    if (hlen < DESC || hlen > len)
        return corrupt(r, HVU_BAD_OFFSET8, d.offset8);
    if (d.type >= 32 || (r->accept & (1u << d.type)) == 0)
        return corrupt(r, HVU_BAD_TYPE, d.type);
    if ((d.flags & ~(uint16_t)HVU_PKT_FLAG_COMPLETION_REQUESTED) != 0)
        return corrupt(r, HVU_BAD_FLAGS, d.flags);
    r->cur_total = len + TRAILER;
    r->cur = d;
    if (desc != NULL)
        *desc = d;
    return 0;
}

/* Copies the current packet (peeking first if none is peeked) into buf and writes the validated
 * descriptor into the copy (VMBUS.md §4.7): whatever the host rewrites after the peek, the copy
 * carries the checked lengths. Returns the packet length in bytes; does not consume. */
int hvu_ring_copyout(struct hvu_ring *r, void *buf, size_t cap, struct hvu_pkt_desc *desc)
{
    int rc = usable(r, HVU_RING_RX);
    if (rc == 0 && r->cur_total == 0)
        rc = hvu_ring_peek(r, NULL);
    if (rc < 0)
        return rc;
    struct hvu_pkt_desc d = r->cur;
    uint32_t len = (uint32_t)d.len8 * 8u;
    if (buf == NULL)
        return -EINVAL;
    if (len > cap) {
        r->cur_total = 0;
        return corrupt(r, HVU_TOO_BIG, len);
    }
    copy_out(r, r->rindex, buf, len);
    /* the host may have changed the shared bytes since the peek: the copy gets the checked
     * descriptor (len8/offset8 above all, type and flags too) */
    memcpy(buf, &d, sizeof(d));
    if (desc != NULL)
        *desc = d;
    return (int)len;
}

/* Advances the private read index past the peeked packet; read_index is published at close. */
int hvu_ring_consume(struct hvu_ring *r)
{
    int rc = usable(r, HVU_RING_RX);
    if (rc < 0)
        return rc;
    if (r->cur_total == 0)
        return -EINVAL;
    uint64_t next = (uint64_t)r->rindex + r->cur_total;
    r->rindex = (uint32_t)(next >= r->dsize ? next - r->dsize : next);
    r->batch_bytes += r->cur_total;
    r->ctr.rx_packets++;
    r->ctr.rx_bytes += r->cur_total;
    r->cur_total = 0;
    return 0;
}

/* Starts (or continues) a batch: the same as peek; close publishes everything consumed. */
int hvu_ring_first(struct hvu_ring *r, struct hvu_pkt_desc *desc)
{
    return hvu_ring_peek(r, desc);
}

/* Consumes the current packet and peeks the next; -EAGAIN ends the batch. */
int hvu_ring_next(struct hvu_ring *r, struct hvu_pkt_desc *desc)
{
    int rc = hvu_ring_consume(r);
    return rc < 0 ? rc : hvu_ring_peek(r, desc);
}

/* Publishes read_index once and decides the flow-control signal (VMBUS.md §3.9 step 4, 3.11 b). */
static int batch_close(struct hvu_ring *r)
{
    uint32_t consumed = r->batch_bytes;
    r->cur_total = 0;
    if (consumed == 0)
        return 0;   /* nothing freed: VMBUS.md §3.11 b can never signal with R = 0 */
    r->batch_bytes = 0;
    r->ctr.rx_batches++;
    /* release: our copies out of the consumed packets finish before the host may reuse them */
    __atomic_store_n(&r->hdr->read_index, r->rindex, __ATOMIC_RELEASE);
    /* seq_cst: read_index is visible before we read pending_send_sz (else the host may stall) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t feat = __atomic_load_n(&r->hdr->feature_bits, __ATOMIC_ACQUIRE);
    /* acquire: pending_send_sz is read before write_index, as VMBUS.md §3.10 asks */
    uint32_t p = __atomic_load_n(&r->hdr->pending_send_sz, __ATOMIC_ACQUIRE);
    if ((feat & HVU_FEAT_PENDING_SEND_SZ) == 0 || hvu_pending_send_clamp(p, r->dsize) == 0)
        return 0;
    uint32_t w;
    int rc = peer_index(r, &w);
    if (rc < 0)
        return rc;
    int sig = hvu_signal_after_read(feat, p, r->dsize, hvu_ring_free_bytes(w, r->rindex, r->dsize),
                                    consumed);
    if (sig)
        r->ctr.ring_signals++;
    return sig;
}

/* Ends a batch: returns 1 if the host must be signalled, 0 if not, or a negative errno. */
int hvu_ring_close(struct hvu_ring *r)
{
    int rc = usable(r, HVU_RING_RX);
    return rc < 0 ? rc : batch_close(r);
}

/* Copies up to max packets back to back into buf (each at offsets[i], 8-aligned), closes the
 * batch and ORs the signal decision into *signal. Packets longer than max_pkt are corruption;
 * packets that merely do not fit the rest of buf end the batch. Returns the count; if host data
 * fails validation after some packets, those are returned and the fault surfaces next call. */
int hvu_ring_read_batch(struct hvu_ring *r, void *buf, size_t cap, size_t max_pkt,
                        struct hvu_pkt_desc *descs, uint32_t *offsets, unsigned max, int *signal)
{
    int rc = usable(r, HVU_RING_RX);
    if (rc < 0)
        return rc;
    if (buf == NULL || descs == NULL || offsets == NULL || max_pkt > cap)
        return -EINVAL;
    unsigned n = 0;
    size_t off = 0;
    int err = 0;
    while (n < max) {
        struct hvu_pkt_desc d;
        rc = hvu_ring_peek(r, &d);
        if (rc < 0) {
            if (rc != -EAGAIN)
                err = rc;
            break;
        }
        size_t len = (size_t)d.len8 * 8u;
        if (len > max_pkt) {
            err = corrupt(r, HVU_TOO_BIG, len);
            break;
        }
        if (len > cap - off)
            break;
        rc = hvu_ring_copyout(r, (uint8_t *)buf + off, cap - off, &descs[n]);
        if (rc < 0) {
            err = rc;
            break;
        }
        offsets[n] = (uint32_t)off;
        off += len;
        hvu_ring_consume(r);
        n++;
    }
    int sig = batch_close(r);
    if (sig > 0 && signal != NULL)
        *signal |= 1;
    if (n == 0 && err < 0)
        return err;
    if (n == 0 && sig < 0)
        return sig;
    return (int)n;
}

/* ---- transfer-page header (VMBUS.md §3.6, 4.11), on a private copy --------------------------------- */

static int xfer_bad(struct hvu_fault *f, int reason, uint64_t value)
{
    if (f != NULL) {
        f->reason = reason;
        f->value = value;
    }
    return -EIO;
}

/* pkt/len: a packet copied out by hvu_ring_copyout (len8/offset8 already checked and fixed). */
int hvu_xfer_check(const void *pkt, size_t len, uint16_t pageset_id, uint32_t recv_buf_size,
                   uint32_t section_size, struct hvu_fault *fault)
{
    struct hvu_pkt_desc d;
    struct hvu_xfer_hdr h;
    if (pkt == NULL || len < DESC + sizeof(h))
        return xfer_bad(fault, HVU_BAD_XFER_HDR, len);
    memcpy(&d, pkt, sizeof(d));
    uint64_t hlen = (uint64_t)d.offset8 * 8u;
    if (hlen < DESC + sizeof(h) || hlen > len)
        return xfer_bad(fault, HVU_BAD_XFER_HDR, d.offset8);
    memcpy(&h, (const uint8_t *)pkt + DESC, sizeof(h));
    if (h.xfer_pageset_id != pageset_id)
        return xfer_bad(fault, HVU_BAD_PAGESET_ID, h.xfer_pageset_id);
    if (h.range_cnt == 0 || DESC + sizeof(h) + (uint64_t)h.range_cnt * 8u > hlen)
        return xfer_bad(fault, HVU_BAD_RANGE_CNT, h.range_cnt);
    for (uint32_t i = 0; i < h.range_cnt; i++) {
        struct hvu_xfer_range rg;
        memcpy(&rg, (const uint8_t *)pkt + DESC + sizeof(h) + (size_t)i * 8u, sizeof(rg));
        if (rg.byte_offset > recv_buf_size)
            return xfer_bad(fault, HVU_BAD_RANGE, rg.byte_offset);
        if (rg.byte_count == 0 || rg.byte_count > recv_buf_size - rg.byte_offset ||
            rg.byte_count > section_size)
            return xfer_bad(fault, HVU_BAD_RANGE, rg.byte_count);
    }
    if (fault != NULL) {
        fault->reason = HVU_OK;
        fault->value = 0;
    }
    return 0;
}

/* ---- benchmark ------------------------------------------------------------------------------------- */

#define BENCH_BATCH 32u

/* mem: ring_size zeroed bytes; scratch >= 2 * (payload_len + 32). Sends `iterations` in-band
 * packets in batches of up to 32 and reads each batch back (copy-out + close), like a poll loop.
 * Returns packets moved or a negative errno. */
int64_t hvu_ring_bench(void *mem, size_t ring_size, size_t header_size, size_t payload_len,
                       uint64_t iterations, void *scratch, size_t scratch_len)
{
    struct hvu_ring tx, rx;
    size_t pkt_cap = payload_len + 32u;
    if (scratch == NULL || scratch_len < 2 * pkt_cap)
        return -EINVAL;
    int rc = hvu_ring_attach(&tx, mem, ring_size, header_size, HVU_RING_TX);
    if (rc == 0)
        rc = hvu_ring_attach(&rx, mem, ring_size, header_size, HVU_RING_RX);
    if (rc < 0)
        return rc;
    struct hvu_seg seg = {scratch, payload_len};
    uint8_t *dst = (uint8_t *)scratch + pkt_cap;
    uint64_t done = 0;
    while (done < iterations) {
        int sig = 0;
        unsigned wrote = 0;
        while (wrote < BENCH_BATCH && done + wrote < iterations) {
            rc = hvu_ring_send(&tx, HVU_PKT_INBAND, 0, done + wrote, &seg, 1, &sig);
            if (rc == -EAGAIN)
                break;
            if (rc < 0)
                return rc;
            wrote++;
        }
        if (wrote == 0)
            return -EMSGSIZE;
        struct hvu_pkt_desc d;
        for (rc = hvu_ring_first(&rx, &d); rc == 0; rc = hvu_ring_next(&rx, &d)) {
            int n = hvu_ring_copyout(&rx, dst, pkt_cap, &d);
            if (n < 0)
                return n;
        }
        if (rc != -EAGAIN)
            return rc;
        rc = hvu_ring_close(&rx);
        if (rc < 0)
            return rc;
        done += wrote;
    }
    return (int64_t)done;
}

/* The physical limit for the same traffic: per packet, copy descriptor + payload into the data
 * area at a rolling offset and back out, with no ring logic. Returns packets moved. */
int64_t hvu_memcpy_bench(void *mem, size_t ring_size, size_t header_size, size_t payload_len,
                         uint64_t iterations, void *scratch, size_t scratch_len)
{
    size_t pkt_cap = payload_len + 32u;
    size_t len = ((payload_len + DESC + 7u) & ~(size_t)7u);
    if (mem == NULL || scratch == NULL || scratch_len < 2 * pkt_cap || ring_size <= header_size ||
        len + TRAILER > ring_size - header_size)
        return -EINVAL;
    uint8_t *data = (uint8_t *)mem + header_size;
    size_t d = ring_size - header_size;
    uint8_t *dst = (uint8_t *)scratch + pkt_cap;
    size_t off = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        if (off + len + TRAILER > d)
            off = 0;
        memcpy(data + off, scratch, len);
        __asm__ volatile("" ::: "memory");   /* keep both copies: the compiler must not fuse them */
        memcpy(dst, data + off, len);
        __asm__ volatile("" ::: "memory");
        off += len + TRAILER;
    }
    return (int64_t)iterations;
}
