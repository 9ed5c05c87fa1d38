/* libFuzzer harness: the guest's RX ring reader (ring.c) against a hostile host.
 *
 * The ring lives in one heap block (header page + a data area of a size the input picks), so
 * ASan sees every byte outside it. The input is a script: the "host" writes packets or raw bytes
 * into the data area, publishes or corrupts write_index, rewrites bytes the guest already
 * peeked, sets pending_send_sz / feature_bits; the guest peeks, copies out, consumes, runs
 * first/next/close and read_batch, asks bytes_to_read, changes its accept mask, re-attaches, and
 * checks transfer-page headers of what it copied.
 *
 * A reference reader (VMBUS.md §3.2 and 4.1-4.10, written here from docs/VMBUS.md, not from ring.c) runs
 * beside the guest on the same memory. Invariants checked after every call (abort on violation):
 *  - every return code, descriptor and fault {reason, value} equals the reference's: a fault is
 *    raised exactly when the host's data breaks a rule, never on valid data;
 *  - a copy (copyout, read_batch) equals the ring bytes it came from, wrap included, with the
 *    descriptor validated at peek time in its first 16 bytes (whatever the host wrote since);
 *  - a fault is sticky: every later call returns -EIO with the same reason and value until the
 *    ring is attached again;
 *  - read_index moves only at close / read_batch, by whole validated packets, stays 8-aligned and
 *    below the data size; the guest never writes the data area nor any header field but
 *    read_index and interrupt_mask (byte-compared against shadows);
 *  - the close signal follows VMBUS.md §3.11 b; the packet/byte/corrupt counters match;
 *  - hvu_xfer_check accepts a copied transfer-page header exactly when VMBUS.md §4.11 does.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "hvuio.h"

static const uint32_t DSIZES[] = {64, 136, 256, 1000, 4096, 8192, 12288, 16384};
#define MAX_OPS 3000

enum {
    OFF_W = 0,
    OFF_R = 4,
    OFF_MASK = 8,
    OFF_PEND = 12,
    OFF_FEAT = 64
};

struct model {
    uint32_t d, hsize;
    uint8_t *mem, *data;
    struct hvu_ring ring;
    uint8_t *shadow;        /* the data area as the host wrote it */
    uint8_t *hshadow;       /* the header page as it must be */
    uint32_t hw;            /* host's private write position */
    uint32_t accept;
    uint32_t r;             /* reference private read index */
    uint32_t batch;         /* bytes consumed since the last publish */
    int peeked;
    struct hvu_pkt_desc pdesc;
    uint32_t ptotal;
    int faulted;
    struct hvu_fault fault;
    uint64_t rx_packets, rx_bytes, corrupt;
    uint8_t last_copy[65536 + 16];
    uint32_t last_len;      /* bytes in last_copy (a copied packet), 0 if none */
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

/* reference peek: VMBUS.md §3.9 / 4.1-4.10 */
static int ref_peek(struct model *m)
{
    if (m->faulted)
        return -EIO;
    m->peeked = 0;
    uint32_t w = hdr_get(m, OFF_W);
    if (!m_index_ok(w, m->d))
        return ref_fault(m, HVU_BAD_WRITE_INDEX, w);
    uint32_t avail = m_avail(w, m->r, m->d);
    if (avail == 0)
        return -EAGAIN;
    if (avail < 24)
        return ref_fault(m, HVU_SHORT, avail);
    struct hvu_pkt_desc d;
    ring_get(m->data, m->d, m->r, &d, 16);
    uint32_t len = (uint32_t)d.len8 * 8u, hlen = (uint32_t)d.offset8 * 8u;
    if (len < 16 || len + 8 > avail)
        return ref_fault(m, HVU_BAD_LEN8, d.len8);
    if (hlen < 16 || hlen > len)
        return ref_fault(m, HVU_BAD_OFFSET8, d.offset8);
    if (d.type >= 32 || !(m->accept & (1u << d.type)))
        return ref_fault(m, HVU_BAD_TYPE, d.type);
    if (d.flags & ~1u)
        return ref_fault(m, HVU_BAD_FLAGS, d.flags);
    m->peeked = 1;
    m->pdesc = d;
    m->ptotal = len + 8;
    return 0;
}

static int ref_consume(struct model *m)
{
    if (m->faulted)
        return -EIO;
    if (!m->peeked)
        return -EINVAL;
    m->r = (uint32_t)(((uint64_t)m->r + m->ptotal) % m->d);
    m->batch += m->ptotal;
    m->rx_packets++;
    m->rx_bytes += m->ptotal;
    m->peeked = 0;
    return 0;
}

static uint32_t clamp_pending(uint32_t p, uint32_t d)
{
    uint32_t cap = d >= 8 ? d - 8 : 0;
    p &= ~7u;
    return p > cap ? cap : p;
}

/* reference batch close: publish once, then VMBUS.md §3.11 b */
static int ref_close_batch(struct model *m)
{
    uint32_t consumed = m->batch;
    m->peeked = 0;
    if (consumed == 0)
        return 0;
    m->batch = 0;
    wr32le(m->hshadow + OFF_R, m->r);   /* the published value the header must now hold */
    uint32_t feat = hdr_get(m, OFF_FEAT), p = clamp_pending(hdr_get(m, OFF_PEND), m->d);
    if (!(feat & 1u) || p == 0)
        return 0;
    uint32_t w = hdr_get(m, OFF_W);
    if (!m_index_ok(w, m->d))
        return ref_fault(m, HVU_BAD_WRITE_INDEX, w);
    uint32_t free_now = m_free(w, m->r, m->d);
    if ((int64_t)free_now - (int64_t)consumed > (int64_t)p)
        return 0;
    return free_now > p;
}

/* The packet at the reference read index copied as the guest must: validated descriptor first. */
static void expected_copy(struct model *m, uint8_t *out)
{
    uint32_t len = (uint32_t)m->pdesc.len8 * 8u;
    ring_get(m->data, m->d, m->r, out, len);
    memcpy(out, &m->pdesc, 16);
}

static void check_state(struct model *m, const char *op)
{
    CHECK(memcmp(m->data, m->shadow, m->d) == 0, "%s: the guest wrote the inbound data area", op);
    CHECK(memcmp(m->mem, m->hshadow, m->hsize) == 0,
          "%s: header differs from the expected one (read_index %u, expected %u)", op, hdr_get(m, OFF_R),
          rd32le(m->hshadow + OFF_R));
    uint32_t ri = hdr_get(m, OFF_R);
    (void)ri;
    struct hvu_fault f;
    int reason = hvu_ring_fault(&m->ring, &f);
    if (m->faulted) {
        CHECK(reason == m->fault.reason && f.value == m->fault.value,
              "%s: fault {%d, %llu}, expected {%d, %llu}", op, reason, (unsigned long long)f.value,
              m->fault.reason, (unsigned long long)m->fault.value);
    } else {
        CHECK(reason == HVU_OK, "%s: fault %d (value %llu) on data docs/VMBUS.md accepts", op, reason,
              (unsigned long long)f.value);
    }
    CHECK(m->ring.rindex == m->r, "%s: private read index %u, expected %u", op, m->ring.rindex, m->r);
    CHECK((m->r & 7u) == 0 && m->r < m->d, "%s: read index %u", op, m->r);
    CHECK(hvu_ring_counter(&m->ring, 2) == m->rx_packets, "%s: rx_packets %llu, expected %llu", op,
          (unsigned long long)hvu_ring_counter(&m->ring, 2), (unsigned long long)m->rx_packets);
    CHECK(hvu_ring_counter(&m->ring, 3) == m->rx_bytes, "%s: rx_bytes", op);
    CHECK(hvu_ring_counter(&m->ring, 10) == m->corrupt, "%s: ring_corrupt %llu, expected %llu", op,
          (unsigned long long)hvu_ring_counter(&m->ring, 10), (unsigned long long)m->corrupt);
}

static void check_rc(int rc, int want, const char *op)
{
    CHECK(rc == want, "%s returned %d, reference %d", op, rc, want);
}

static void check_desc(const struct hvu_pkt_desc *a, const struct hvu_pkt_desc *b, const char *op)
{
    CHECK(memcmp(a, b, sizeof(*a)) == 0, "%s: descriptor differs from the validated one", op);
}

/* ---- host operations --------------------------------------------------------------------------- */

static void host_write_bytes(struct model *m, uint32_t off, const void *src, uint32_t n)
{
    ring_put_bytes(m->data, m->d, off, src, n);
    ring_put_bytes(m->shadow, m->d, off, src, n);
}

static void host_packet(struct model *m, struct fz *f)
{
    static const uint16_t types[] = {6, 7, 9, 11};
    uint8_t kind = fz_u8(f);
    struct hvu_pkt_desc d;
    d.type = (kind & 0x7) == 7 ? fz_u16(f) : types[kind & 3];
    d.flags = (kind & 0x38) == 0x38 ? fz_u16(f) : (kind >> 3) & 1;
    uint32_t plen = fz_range(f, m->d);
    if (fz_chance(f, 200))
        plen %= 256;
    uint32_t len = 16 + plen, padded = (len + 7) & ~7u, total = padded + 8;
    d.len8 = (uint16_t)(padded / 8);
    if ((kind & 0xC0) == 0xC0)
        d.len8 = fz_u16(f);                              /* lying length */
    uint32_t h8 = fz_u8(f);
    d.offset8 = (uint16_t)(2 + (padded / 8 > 2 ? h8 % (padded / 8 - 1) : 0));
    if ((kind & 0xC0) == 0x80)
        d.offset8 = fz_u16(f);                           /* lying header length */
    d.trans_id = fz_u64(f);
    int force = fz_rare(f, 16);
    uint32_t r_pub = hdr_get(m, OFF_R);
    if (total >= m->d)
        return;
    if (!force && m_index_ok(r_pub, m->d) && m_free(m->hw, r_pub, m->d) <= total)
        return;                                          /* a polite host waits for room */
    uint8_t *pkt = malloc(total);
    memcpy(pkt, &d, 16);
    fz_blob(f, pkt + 16, plen);
    memset(pkt + len, 0, padded - len);
    uint64_t trailer = (uint64_t)m->hw << 32;
    memcpy(pkt + padded, &trailer, 8);
    host_write_bytes(m, m->hw, pkt, total);
    free(pkt);
    m->hw = (uint32_t)(((uint64_t)m->hw + total) % m->d);
    if (fz_chance(f, 160))
        hdr_set(m, OFF_W, m->hw);
}

static void host_op(struct model *m, struct fz *f, uint8_t op)
{
    switch (op % 8) {
    case 0:
    case 1:
    case 2:
        host_packet(m, f);
        break;
    case 3:
        hdr_set(m, OFF_W, m->hw);                        /* publish */
        break;
    case 4: {                                            /* write_index: anything */
        uint32_t v = fz_u32(f);
        if (fz_chance(f, 128))
            v = (v % m->d) & ~7u;
        hdr_set(m, OFF_W, v);
        if (m_index_ok(v, m->d) && fz_chance(f, 128))
            m->hw = v;
        break;
    }
    case 5: {                                            /* rewrite bytes already published */
        uint32_t off = fz_range(f, m->d), n = 1 + fz_pick(f, 24);
        uint8_t b[24];
        fz_copy(f, b, n);
        host_write_bytes(m, off, b, n);
        break;
    }
    case 6:
        hdr_set(m, OFF_PEND, fz_chance(f, 128) ? fz_u32(f) : (fz_range(f, m->d + 64) & ~7u));
        hdr_set(m, OFF_FEAT, fz_u8(f) & 3);
        break;
    default: {                                           /* raw bytes at the write position */
        uint32_t n = (fz_pick(f, 8) + 1) * 8;
        uint8_t b[64];
        fz_copy(f, b, n);
        host_write_bytes(m, m->hw, b, n);
        m->hw = (m->hw + n) % m->d;
        break;
    }
    }
}

/* ---- guest operations ---------------------------------------------------------------------------- */

static void do_attach(struct model *m)
{
    int rc = hvu_ring_attach(&m->ring, m->mem, m->hsize + m->d, m->hsize, HVU_RING_RX);
    uint32_t ri = hdr_get(m, OFF_R);
    m->faulted = 0;
    memset(&m->fault, 0, sizeof(m->fault));
    m->accept = HVU_ACCEPT_DEFAULT;
    m->batch = 0;
    m->peeked = 0;
    m->rx_packets = m->rx_bytes = m->corrupt = 0;
    m->last_len = 0;
    if (m_index_ok(ri, m->d)) {
        m->r = ri;
        check_rc(rc, 0, "attach");
    } else {
        m->r = 0;
        ref_fault(m, HVU_BAD_READ_INDEX, ri);
        check_rc(rc, -EIO, "attach with a bad read_index");
    }
}

static void guest_copyout(struct model *m, struct fz *f)
{
    uint32_t sel = fz_pick(f, 4), cap;
    int want;
    if (!m->faulted && !m->peeked)
        want = ref_peek(m);
    else
        want = m->faulted ? -EIO : 0;
    uint32_t len = m->peeked ? (uint32_t)m->pdesc.len8 * 8u : 0;
    cap = sel == 0 ? len : sel == 1 ? (len > 8 ? len - 8 : 0) : sel == 2 ? len + fz_u8(f) : fz_u16(f);
    uint8_t *buf = malloc(cap ? cap : 1);
    uint8_t *exp = NULL;
    if (want == 0 && !m->faulted) {
        if (len > cap) {
            m->peeked = 0;
            want = ref_fault(m, HVU_TOO_BIG, len);
        } else {
            exp = malloc(len);
            expected_copy(m, exp);
            want = (int)len;
        }
    }
    struct hvu_pkt_desc d;
    int rc = hvu_ring_copyout(&m->ring, buf, cap, &d);
    check_rc(rc, want, "copyout");
    if (rc > 0) {
        CHECK(memcmp(buf, exp, len) == 0, "copyout: the copy differs from the ring bytes");
        check_desc(&d, &m->pdesc, "copyout");
        memcpy(m->last_copy, buf, len);
        m->last_len = len;
    }
    free(exp);
    free(buf);
}

static void guest_batch(struct model *m, struct fz *f)
{
    uint32_t cap = fz_pick(f, 2) ? fz_u16(f) : fz_range(f, 2 * m->d + 64);
    uint32_t max_pkt = fz_pick(f, 3) ? cap : fz_range(f, cap + 1);
    if (fz_rare(f, 8))
        max_pkt = cap + 1 + fz_u8(f);
    unsigned max = 1 + fz_pick(f, 40);
    uint8_t *buf = malloc(cap ? cap : 1), *exp = malloc(cap ? cap : 1);
    struct hvu_pkt_desc descs[40], edescs[40];
    uint32_t offs[40], eoffs[40];
    int sig = 0;
    /* reference */
    int want;
    unsigned n = 0;
    if (m->faulted) {
        want = -EIO;
    } else if (max_pkt > cap) {
        want = -EINVAL;
    } else {
        uint32_t off = 0;
        int err = 0;
        while (n < max) {
            int rc = ref_peek(m);
            if (rc < 0) {
                if (rc != -EAGAIN)
                    err = rc;
                break;
            }
            uint32_t len = (uint32_t)m->pdesc.len8 * 8u;
            if (len > max_pkt) {
                m->peeked = 0;
                err = ref_fault(m, HVU_TOO_BIG, len);
                break;
            }
            if (len > cap - off)
                break;
            expected_copy(m, exp + off);
            edescs[n] = m->pdesc;
            eoffs[n] = off;
            off += len;
            ref_consume(m);
            n++;
        }
        int s = ref_close_batch(m);
        want = (n == 0 && err < 0) ? err : (n == 0 && s < 0) ? s : (int)n;
        sig = s > 0;
    }
    int gsig = 0;
    int rc = hvu_ring_read_batch(&m->ring, buf, cap, max_pkt, descs, offs, max, &gsig);
    check_rc(rc, want, "read_batch");
    if (rc > 0) {
        for (int i = 0; i < rc; i++) {
            uint32_t len = (uint32_t)edescs[i].len8 * 8u;
            CHECK(offs[i] == eoffs[i], "read_batch: offset of packet %d is %u, expected %u", i, offs[i], eoffs[i]);
            CHECK((offs[i] & 7u) == 0, "read_batch: offset %u not 8-aligned", offs[i]);
            check_desc(&descs[i], &edescs[i], "read_batch");
            CHECK(memcmp(buf + offs[i], exp + eoffs[i], len) == 0, "read_batch: packet %d differs from the ring", i);
        }
        uint32_t last = (uint32_t)edescs[rc - 1].len8 * 8u;
        memcpy(m->last_copy, buf + offs[rc - 1], last);
        m->last_len = last;
    }
    CHECK(gsig == sig, "read_batch: signal %d, VMBUS.md §3.11 b says %d", gsig, sig);
    free(buf);
    free(exp);
}

/* VMBUS.md §4.11 on a private copy, written here again */
static int ref_xfer(const uint8_t *pkt, uint32_t len, uint16_t id, uint32_t rsize, uint32_t ssize, int *reason)
{
    if (len < 24) {
        *reason = HVU_BAD_XFER_HDR;
        return -EIO;
    }
    uint32_t hlen = (uint32_t)(pkt[2] | pkt[3] << 8) * 8u;
    if (hlen < 24 || hlen > len) {
        *reason = HVU_BAD_XFER_HDR;
        return -EIO;
    }
    if ((uint16_t)(pkt[16] | pkt[17] << 8) != id) {
        *reason = HVU_BAD_PAGESET_ID;
        return -EIO;
    }
    uint32_t cnt = rd32le(pkt + 20);
    if (cnt == 0 || 24 + (uint64_t)cnt * 8 > hlen) {
        *reason = HVU_BAD_RANGE_CNT;
        return -EIO;
    }
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t count = rd32le(pkt + 24 + 8 * i), off = rd32le(pkt + 28 + 8 * i);
        if (off > rsize || count == 0 || (uint64_t)off + count > rsize || count > ssize) {
            *reason = HVU_BAD_RANGE;
            return -EIO;
        }
    }
    *reason = HVU_OK;
    return 0;
}

static void guest_xfer(struct model *m, struct fz *f)
{
    if (m->last_len == 0)
        return;
    uint16_t id = fz_chance(f, 200) ? HVU_XFER_PAGESET_ID_NETVSC : fz_u16(f);
    uint32_t rsize = fz_u32(f) % (1u << 20), ssize = fz_u32(f) % (1u << 16);
    uint32_t len = m->last_len - (m->last_len > 0 ? fz_pick(f, 2) * 8 : 0);
    if (len < 16)
        len = m->last_len;
    uint8_t *copy = malloc(len);                        /* exact size: ASan sees any over-read */
    memcpy(copy, m->last_copy, len);
    struct hvu_fault fl;
    int reason;
    int want = ref_xfer(copy, len, id, rsize, ssize, &reason);
    int rc = hvu_xfer_check(copy, len, id, rsize, ssize, &fl);
    check_rc(rc, want, "xfer_check");
    CHECK(fl.reason == reason, "xfer_check: reason %d, expected %d", fl.reason, reason);
    free(copy);
}

static void guest_op(struct model *m, struct fz *f, uint8_t op)
{
    struct hvu_pkt_desc d;
    int rc, want;
    switch (op % 11) {
    case 0:
        want = ref_peek(m);
        rc = hvu_ring_peek(&m->ring, &d);
        check_rc(rc, want, "peek");
        if (rc == 0) {
            struct hvu_pkt_desc raw;
            ring_get(m->data, m->d, m->r, &raw, 16);
            check_desc(&d, &raw, "peek");
        }
        break;
    case 1:
        guest_copyout(m, f);
        break;
    case 2:
        want = ref_consume(m);
        rc = hvu_ring_consume(&m->ring);
        check_rc(rc, want, "consume");
        break;
    case 3:
        want = ref_peek(m);
        rc = hvu_ring_first(&m->ring, &d);
        check_rc(rc, want, "first");
        if (rc == 0)
            check_desc(&d, &m->pdesc, "first");
        break;
    case 4:
        want = ref_consume(m);
        if (want == 0)
            want = ref_peek(m);
        rc = hvu_ring_next(&m->ring, &d);
        check_rc(rc, want, "next");
        if (rc == 0)
            check_desc(&d, &m->pdesc, "next");
        break;
    case 5:
        want = m->faulted ? -EIO : ref_close_batch(m);
        rc = hvu_ring_close(&m->ring);
        check_rc(rc, want, "close");
        break;
    case 6:
        guest_batch(m, f);
        break;
    case 7: {
        int64_t got = hvu_ring_bytes_to_read(&m->ring);
        int64_t exp;
        uint32_t w = hdr_get(m, OFF_W);
        if (m->faulted)
            exp = -EIO;
        else if (!m_index_ok(w, m->d))
            exp = ref_fault(m, HVU_BAD_WRITE_INDEX, w);
        else
            exp = m_avail(w, m->r, m->d);
        CHECK(got == exp, "bytes_to_read %lld, expected %lld", (long long)got, (long long)exp);
        break;
    }
    case 8: {
        uint32_t mask;
        if (fz_chance(f, 200)) {
            uint32_t bit = fz_u8(f) & 1u;
            mask = HVU_ACCEPT_DEFAULT | bit << fz_pick(f, 32);
        } else {
            mask = fz_u32(f);
        }
        check_rc(hvu_ring_set_accept(&m->ring, mask), 0, "set_accept");
        m->accept = mask;
        break;
    }
    case 9:
        if (fz_rare(f, 64)) {                            /* re-attach, maybe over a bad read_index */
            if (fz_rare(f, 96)) {
                uint32_t v = fz_u32(f);
                if (fz_chance(f, 128))
                    v = (v % m->d) & ~7u;
                hdr_set(m, OFF_R, v);
            }
            do_attach(m);
        } else {
            uint32_t v = fz_u8(f) & 1;
            hvu_ring_set_interrupt_mask(&m->ring, v);
            wr32le(m->hshadow + OFF_MASK, v);
        }
        break;
    default:
        guest_xfer(m, f);
        break;
    }
    check_state(m, "guest op");
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
    m->shadow = calloc(1, m->d);
    m->hshadow = calloc(1, m->hsize);
    uint32_t start = (fz_u16(&f) % m->d) & ~7u;
    hdr_set(m, OFF_W, start);
    hdr_set(m, OFF_R, start);
    m->hw = start;
    do_attach(m);
    check_state(m, "attach");
    for (int n = 0; n < MAX_OPS && fz_left(&f) > 0; n++) {
        uint8_t op = fz_u8(&f);
        if (op & 0x80)
            guest_op(m, &f, op & 0x7F);
        else {
            host_op(m, &f, op);
            /* the host's writes land in both the ring and the shadow: nothing to compare */
        }
    }
    free(m->mem);
    free(m->shadow);
    free(m->hshadow);
    return 0;
}
