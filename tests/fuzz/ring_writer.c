/* libFuzzer harness: the guest's TX ring writer (ring.c) against a hostile host reader.
 *
 * The ring lives in one heap block (header page + a data area of a size the input picks). The
 * input is a script: the guest writes packets (hvu_ring_send, hvu_ring_send_hdr, hvu_ring_write
 * with up to six gather segments, some claiming lengths far past their buffers), sets
 * pending_send_sz, re-attaches over a good or bad write_index; the "host" reads packets back and
 * publishes read_index (at packet boundaries), publishes any other value (aligned or not, in range
 * or not), sets interrupt_mask, rewrites bytes of the data area.
 *
 * A reference writer (VMBUS.md §3.2, 3.3, 3.8, 3.11 a, written here) keeps an image of what the data
 * area must hold. Invariants checked after every call (abort on violation):
 *  - the data area equals the image: a successful write changed exactly the bytes of its packet
 *    (descriptor, header, payload, zero padding, trailer = old write_index << 32) at the old
 *    write_index, wrap included, and nothing else: never a byte between read_index and
 *    write_index as last published (unread data), nothing on a refused write;
 *  - write_index (header and private) stays 8-aligned and below the data size, and after a write
 *    the ring is never full: free > 0, the used bytes grew by exactly the packet's ring size;
 *  - return codes match the reference: -EMSGSIZE for a packet that can never fit, -EAGAIN when
 *    free <= packet + trailer, -EINVAL for malformed arguments, -EIO for a bad read_index, and
 *    that refusal is sticky (same reason and value) until re-attach; the signal follows 3.11 a;
 *  - every packet the host reads back parses exactly: descriptor (type, offset8, len8, flags,
 *    trans_id as sent), header, payload, trailer; counters (tx_packets, tx_bytes, ring_full,
 *    tx_too_big, ring_corrupt) match; the guest writes no header field but write_index and
 *    pending_send_sz.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "hvuio.h"

static const uint32_t DSIZES[] = {64, 136, 256, 1000, 4096, 8192, 12288, 16384};
#define MAX_OPS 3000
#define MAXQ 4096

enum { OFF_W = 0, OFF_R = 4, OFF_MASK = 8, OFF_PEND = 12, OFF_FEAT = 64 };

struct pkt {
    uint32_t off, total;
    struct hvu_pkt_desc desc;   /* as the guest must have written it (raw writes: as given) */
};

struct model {
    uint32_t d, hsize;
    uint8_t *mem, *data;
    struct hvu_ring ring;
    uint8_t *img;               /* the data area as it must be */
    uint8_t *hshadow;           /* the header page as it must be */
    uint32_t w;                 /* reference write index */
    uint32_t hr;                /* host's private read position */
    struct pkt q[MAXQ];         /* packets written and not yet read back by the host */
    uint32_t qh, qn;
    int desync;                 /* the host published an arbitrary read_index: no read-back */
    int faulted;
    struct hvu_fault fault;
    uint64_t tx_packets, tx_bytes, ring_full, too_big, corrupt;
};

static uint32_t hdr_get(struct model *m, uint32_t off) { return rd32le(m->mem + off); }

static void hdr_set(struct model *m, uint32_t off, uint32_t v)
{
    wr32le(m->mem + off, v);
    wr32le(m->hshadow + off, v);
}

static int ref_fault(struct model *m, int reason, uint64_t value)
{
    if (!m->faulted) {
        m->faulted = 1;
        m->fault.reason = reason;
        m->fault.value = value;
        m->corrupt++;
    }
    return -EIO;
}

static void check_state(struct model *m, const char *op)
{
    CHECK(memcmp(m->data, m->img, m->d) == 0, "%s: data area differs from the expected image", op);
    CHECK(memcmp(m->mem, m->hshadow, m->hsize) == 0, "%s: header differs (write_index %u expected %u)", op,
          hdr_get(m, OFF_W), rd32le(m->hshadow + OFF_W));
    struct hvu_fault f;
    int reason = hvu_ring_fault(&m->ring, &f);
    if (m->faulted)
        CHECK(reason == m->fault.reason && f.value == m->fault.value, "%s: fault {%d,%llu}, expected {%d,%llu}",
              op, reason, (unsigned long long)f.value, m->fault.reason, (unsigned long long)m->fault.value);
    else
        CHECK(reason == HVU_OK, "%s: fault %d on a healthy ring", op, reason);
    if (!m->faulted) {
        CHECK(m_index_ok(m->ring.windex, m->d), "%s: write index %u", op, m->ring.windex);
        CHECK(m->ring.windex == m->w, "%s: write index %u, expected %u", op, m->ring.windex, m->w);
    }
    CHECK(hvu_ring_counter(&m->ring, 0) == m->tx_packets, "%s: tx_packets", op);
    CHECK(hvu_ring_counter(&m->ring, 1) == m->tx_bytes, "%s: tx_bytes", op);
    CHECK(hvu_ring_counter(&m->ring, 5) == m->ring_full, "%s: ring_full %llu expected %llu", op,
          (unsigned long long)hvu_ring_counter(&m->ring, 5), (unsigned long long)m->ring_full);
    CHECK(hvu_ring_counter(&m->ring, 7) == m->too_big, "%s: tx_too_big %llu expected %llu", op,
          (unsigned long long)hvu_ring_counter(&m->ring, 7), (unsigned long long)m->too_big);
    CHECK(hvu_ring_counter(&m->ring, 10) == m->corrupt, "%s: ring_corrupt", op);
}

/* ---- one write: the reference, then the guest --------------------------------------------------- */

struct wr {
    int kind;                   /* 0 raw write, 1 send, 2 send_hdr */
    uint16_t type, flags;
    uint64_t tid;
    uint8_t *hdr;
    size_t hdr_len;             /* may be unaligned */
    struct hvu_seg segs[6];
    unsigned nseg;
    uint8_t *bufs[6];
    size_t real[6];             /* bytes really behind segs[i].ptr */
};

/* ring_put's checks and effect in the reference: heads (descriptor [+ header]) then w's segments,
 * each checked in order (a NULL pointer with a length, then the running size), as VMBUS.md §3.8 asks */
static int ref_put(struct model *m, const struct hvu_seg *heads, unsigned nhead, struct wr *w, int *sig)
{
    if (m->faulted)
        return -EIO;
    uint64_t len = 0;
    for (unsigned i = 0; i < nhead + w->nseg; i++) {
        const struct hvu_seg *s = i < nhead ? &heads[i] : &w->segs[i - nhead];
        if (s->len > 0 && s->ptr == NULL)
            return -EINVAL;
        if (s->len > m->d || (len += s->len) > m->d) {
            m->too_big++;
            return -EMSGSIZE;
        }
    }
    if (len < 16)
        return -EINVAL;
    uint64_t padded = (len + 7) & ~7ull, total = padded + 8;
    if (padded > 0xFFFFull * 8 || total >= m->d) {
        m->too_big++;
        return -EMSGSIZE;
    }
    uint32_t ri = hdr_get(m, OFF_R);
    if (!m_index_ok(ri, m->d))
        return ref_fault(m, HVU_BAD_READ_INDEX, ri);
    uint32_t old = m->w;
    uint32_t fr = m_free(old, ri, m->d);
    if (fr <= total) {
        m->ring_full++;
        return -EAGAIN;
    }
    uint8_t *pkt = calloc(1, total);
    uint32_t at = 0;
    for (unsigned i = 0; i < nhead + w->nseg; i++) {
        const struct hvu_seg *s = i < nhead ? &heads[i] : &w->segs[i - nhead];
        if (s->len)
            memcpy(pkt + at, s->ptr, s->len);
        at += (uint32_t)s->len;
    }
    uint64_t trailer = (uint64_t)old << 32;
    memcpy(pkt + padded, &trailer, 8);
    uint32_t used_before = m->d - fr;
    m->w = ring_put_bytes(m->img, m->d, old, pkt, (uint32_t)total);
    struct hvu_pkt_desc first;
    memcpy(&first, pkt, 16);
    free(pkt);
    uint32_t used_after = m->d - m_free(m->w, ri, m->d);
    CHECK(used_after == used_before + total && m_free(m->w, ri, m->d) > 0,
          "reference: used %u -> %u for a packet of %llu", used_before, used_after, (unsigned long long)total);
    hdr_set(m, OFF_W, m->w);
    m->tx_packets++;
    m->tx_bytes += total;
    *sig = hdr_get(m, OFF_MASK) == 0 && ri == old;
    if (m->qn < MAXQ) {
        struct pkt *p = &m->q[(m->qh + m->qn++) % MAXQ];
        p->off = old;
        p->total = (uint32_t)total;
        p->desc = first;
    } else {
        m->desync = 1;
    }
    return 0;
}

static void guest_write(struct model *m, struct fz *f)
{
    struct wr w;
    memset(&w, 0, sizeof(w));
    uint8_t sel = fz_u8(f);
    w.kind = sel % 3;
    w.type = (sel & 0x18) == 0x18 ? fz_u16(f) : (uint16_t)(6 + fz_pick(f, 6));
    w.flags = (sel & 0x20) ? fz_u16(f) : 1;
    w.tid = fz_u64(f);
    w.nseg = fz_pick(f, 7);
    for (unsigned i = 0; i < w.nseg; i++) {
        uint8_t how = fz_u8(f);
        size_t n = how < 200 ? fz_u8(f) : how < 240 ? fz_range(f, m->d + 32) : 0;
        size_t claim = n;
        if (how >= 240) {                                /* a length no buffer has: must be refused */
            static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 7, 0x80000000u, 0x100000000ull, 0x7FFF9};
            claim = huge[how % 5];
            n = 1;
        }
        w.bufs[i] = malloc(n ? n : 1);
        w.real[i] = n;
        fz_blob(f, w.bufs[i], n);
        w.segs[i].ptr = (how % 16 == 15 || ((how & 1) && claim == 0)) ? NULL : w.bufs[i];
        w.segs[i].len = claim;
    }
    if (w.kind == 0 && w.nseg > 0 && w.real[0] >= 16 && fz_chance(f, 192)) {
        /* a raw write whose first segment is a plausible descriptor */
        uint32_t len = 0;
        for (unsigned i = 0; i < w.nseg; i++)
            len += (uint32_t)w.segs[i].len;
        struct hvu_pkt_desc d = {w.type, 2, (uint16_t)((len + 7) / 8), w.flags, w.tid};
        memcpy(w.bufs[0], &d, 16);
    }
    if (w.kind == 2) {
        uint8_t h = fz_u8(f);
        w.hdr_len = (h & 0x80) ? (size_t)fz_u16(f) : (size_t)(h & 0x3F) * 8;
        if (h == 0xFF)
            w.hdr_len = 0xFFFF * 8;                      /* past what offset8 can say */
        w.hdr = w.hdr_len && w.hdr_len <= 0x10000 ? malloc(w.hdr_len) : (w.hdr_len ? malloc(1) : NULL);
        if (w.hdr && w.hdr_len <= 0x10000)
            fz_blob(f, w.hdr, w.hdr_len);
    }
    /* segments claiming more than their buffer all claim more than any data area: the reference
     * refuses them before it copies, and ASan catches the guest if it copies one */
    int want, sig = 0;
    const char *name;
    if (w.kind == 0) {
        name = "write";
        want = ref_put(m, NULL, 0, &w, &sig);
    } else {
        name = w.kind == 1 ? "send" : "send_hdr";
        size_t hl = w.kind == 1 ? 0 : w.hdr_len;
        if ((hl & 7u) != 0) {
            want = -EINVAL;
        } else if (hl > (0xFFFFu - 2u) * 8u) {
            want = -EMSGSIZE;
        } else {
            uint64_t len = 16 + hl;
            int big = 0;
            for (unsigned i = 0; i < w.nseg && !big; i++)
                if (w.segs[i].len > 0xFFFFull * 8 || (len += w.segs[i].len) > 0xFFFFull * 8)
                    big = 1;
            if (big) {
                m->too_big++;
                want = -EMSGSIZE;
            } else {
                struct hvu_pkt_desc d = {w.type, (uint16_t)(2 + hl / 8), (uint16_t)((len + 7) / 8), w.flags, w.tid};
                struct hvu_seg heads[2] = {{&d, 16}, {w.hdr, hl}};
                want = ref_put(m, heads, hl ? 2 : 1, &w, &sig);
            }
        }
    }
    int gsig = 0;
    int rc;
    if (w.kind == 0)
        rc = hvu_ring_write(&m->ring, w.segs, w.nseg, &gsig);
    else if (w.kind == 1)
        rc = hvu_ring_send(&m->ring, w.type, w.flags, w.tid, w.segs, w.nseg, &gsig);
    else
        rc = hvu_ring_send_hdr(&m->ring, w.type, w.flags, w.tid, w.hdr, w.hdr_len, w.segs, w.nseg, &gsig);
    CHECK(rc == want, "%s returned %d, reference %d", name, rc, want);
    CHECK(gsig == sig, "%s: signal %d, VMBUS.md §3.11 a says %d", name, gsig, sig);
    for (unsigned i = 0; i < w.nseg; i++)
        free(w.bufs[i]);
    free(w.hdr);
    check_state(m, name);
}

/* ---- the host reader ------------------------------------------------------------------------------ */

static void host_read(struct model *m, struct fz *f)
{
    uint32_t k = 1 + fz_pick(f, 16);
    if (m->desync)
        return;
    while (k-- > 0 && m->qn > 0) {
        struct pkt *p = &m->q[m->qh];
        CHECK(p->off == m->hr, "host: packet at %u, host reads at %u", p->off, m->hr);
        struct hvu_pkt_desc d;
        ring_get(m->data, m->d, m->hr, &d, 16);
        CHECK(memcmp(&d, &p->desc, 16) == 0, "host: descriptor read back differs");
        CHECK((uint32_t)d.len8 * 8 + 8 == p->total || p->desc.len8 * 8u + 8 != p->total,
              "host: len8 %u does not give the packet's ring size %u", d.len8, p->total);
        uint64_t trailer;
        ring_get(m->data, m->d, (uint32_t)(((uint64_t)m->hr + p->total - 8) % m->d), &trailer, 8);
        CHECK(trailer == (uint64_t)p->off << 32, "host: trailer %llx, expected %llx", (unsigned long long)trailer,
              (unsigned long long)p->off << 32);
        m->hr = (uint32_t)(((uint64_t)m->hr + p->total) % m->d);
        m->qh = (m->qh + 1) % MAXQ;
        m->qn--;
    }
    hdr_set(m, OFF_R, m->hr);
}

static void do_attach(struct model *m, int with_w, uint32_t wv)
{
    if (with_w)
        hdr_set(m, OFF_W, wv);
    uint32_t w = hdr_get(m, OFF_W);
    int rc = hvu_ring_attach(&m->ring, m->mem, m->hsize + m->d, m->hsize, HVU_RING_TX);
    m->faulted = 0;
    memset(&m->fault, 0, sizeof(m->fault));
    m->tx_packets = m->tx_bytes = m->ring_full = m->too_big = m->corrupt = 0;
    if (m_index_ok(w, m->d)) {
        CHECK(rc == 0, "attach over write_index %u returned %d", w, rc);
        m->w = w;
    } else {
        CHECK(rc == -EIO, "attach over a bad write_index %u returned %d", w, rc);
        ref_fault(m, HVU_BAD_WRITE_INDEX, w);
    }
    /* the host starts reading where the guest will write: what was there is gone */
    m->qh = m->qn = 0;
    m->desync = !m_index_ok(hdr_get(m, OFF_R), m->d) || hdr_get(m, OFF_R) != m->w;
    m->hr = hdr_get(m, OFF_R);
}

static void host_op(struct model *m, struct fz *f, uint8_t op)
{
    switch (op % 6) {
    case 0:
    case 1:
        host_read(m, f);
        break;
    case 2: {                                            /* read_index: anything */
        uint32_t v = fz_u32(f);
        if (fz_chance(f, 100))
            v = (v % m->d) & ~7u;                        /* aligned, in range, wherever */
        hdr_set(m, OFF_R, v);
        if (m_index_ok(v, m->d)) {
            m->desync = 1;
            m->hr = v;
        }
        break;
    }
    case 3:
        hdr_set(m, OFF_MASK, fz_chance(f, 200) ? fz_u8(f) & 1 : fz_u32(f));
        break;
    case 4: {                                            /* the host scribbles on the data area */
        uint32_t off = fz_range(f, m->d), n = 1 + fz_pick(f, 16);
        uint8_t b[16];
        fz_copy(f, b, n);
        ring_put_bytes(m->data, m->d, off, b, n);
        ring_put_bytes(m->img, m->d, off, b, n);
        m->desync = 1;
        break;
    }
    default:                                             /* re-attach (after a fault: the only cure) */
        if (fz_rare(f, 64)) {
            hdr_set(m, OFF_R, m->w);                     /* host caught up first */
            int bad = fz_rare(f, 96);
            uint32_t v = bad ? fz_u32(f) : m->w;
            do_attach(m, 1, v);
            check_state(m, "attach");
        }
        break;
    }
}

static void guest_pending(struct model *m, struct fz *f)
{
    uint32_t v = fz_chance(f, 128) ? fz_u32(f) : fz_range(f, m->d + 16);
    int want;
    if (m->faulted)
        want = -EIO;
    else if ((v & 7u) || v > m->d - 8)
        want = -EINVAL;
    else {
        want = 0;
        hdr_set(m, OFF_PEND, v);
    }
    int rc = hvu_ring_set_pending_send_sz(&m->ring, v);
    CHECK(rc == want, "set_pending_send_sz(%u) returned %d, reference %d", v, rc, want);
    int64_t fr = hvu_ring_bytes_free(&m->ring);
    uint32_t ri = hdr_get(m, OFF_R);
    int64_t exp = m->faulted ? -EIO : !m_index_ok(ri, m->d) ? ref_fault(m, HVU_BAD_READ_INDEX, ri)
                                                            : (int64_t)m_free(m->w, ri, m->d);
    CHECK(fr == exp, "bytes_free %lld, expected %lld", (long long)fr, (long long)exp);
    check_state(m, "pending/bytes_free");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f;
    fz_init(&f, data, size);
    static struct model mm;
    struct model *m = &mm;
    uint8_t cfg = fz_u8(&f);
    m->d = DSIZES[cfg % 8];
    m->hsize = (cfg & 0x80) ? 8192 : 4096;
    m->mem = calloc(1, m->hsize + m->d);
    m->data = m->mem + m->hsize;
    m->img = calloc(1, m->d);
    m->hshadow = calloc(1, m->hsize);
    uint32_t start = (fz_u16(&f) % m->d) & ~7u;
    hdr_set(m, OFF_R, start);
    do_attach(m, 1, start);
    check_state(m, "attach");
    for (int n = 0; n < MAX_OPS && fz_left(&f) > 0; n++) {
        uint8_t op = fz_u8(&f);
        if (op & 0x80) {
            if ((op & 0x7F) < 100)
                guest_write(m, &f);
            else
                guest_pending(m, &f);
        } else {
            host_op(m, &f, op);
        }
    }
    free(m->mem);
    free(m->img);
    free(m->hshadow);
    return 0;
}
