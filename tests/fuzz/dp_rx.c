/* libFuzzer harness: the guest's RX pump (hvu_dp_init + hvu_dp_rx, rx.c) against a hostile host.
 *
 * Everything is real memory and real fds: both rings, the receive buffer, the private buffers
 * (each its own heap block of exactly the configured size, so ASan sees any overrun), a
 * SOCK_DGRAM socketpair as the tap (one datagram = one frame, optionally with a tiny send buffer so
 * tap writes fail) and another as the irq fd, or a monitor page. The host side is the harness: it
 * writes packets into the inbound ring with ring.c's writer (attached TX over the same memory) and
 * reads the outbound ring with ring.c's reader. The input is a script: transfer-page packets
 * (headers, ranges, NVS messages, RNDIS packet messages with checksum / RSC-id / 802.1Q (good, too
 * short for its value, repeated) / other per-packet info, every field sometimes wrong; also in
 * OpenVMM's receive layout: the range the whole section, the frame at data_offset 248 from byte 8,
 * junk around it), whole RSC sequences of a TCP frame (sometimes broken, sometimes
 * with a pkt_id that changes midway, which is no break), tagged
 * and untagged completions, control packets, RNDIS control messages among a packet's data ranges,
 * packets with a bad descriptor, rewrites of the receive buffer, host drains of the outbound
 * ring, and pump calls with a budget. The harness also plays Python's reader of the packets the
 * pump leaves: their data messages come back through hvu_dp_rx_data (python_hands_back).
 *
 * A classifier (the dispatch rules of datapath.h / rx.c, written here) says for each packet what
 * the pump must do with it, from its bytes and the receive buffer at the time of the call.
 * Invariants checked after every call (abort on violation):
 *  - completions: every transfer-page packet the pump consumed and did not drop for its header or
 *    NVS type gets exactly one completion (type 0xb, flags 0, NVS 108, status OK or FAILED, 32 zero
 *    bytes) with its own trans_id; none for anything else (no forged, double or lost completions;
 *    checked when the host drains, and all owed ones after a final flush); a packet with a bad
 *    range, a malformed RNDIS message or an oversize frame is completed FAILED, and FAILED needs a
 *    reason (one of those, or a tap / RSC drop in that call);
 *  - the pump consumes only what is its own, stops with CONTROL exactly at a packet for Python (the
 *    harness then reads it as Python would), BUDGET after `budget` packets, BLOCKED only with 256
 *    completions held, -EIO only at a packet whose descriptor is bad (inbound fault);
 *  - accounting per call: rx_xfer, rx_bad_xfer (headers + bad ranges), rx_bad_nvs, rx_bad_rndis,
 *    rx_oversize (the 802.1Q tag put back counted), rx_vlan_bad, tx_bad_comp match the classifier; frames written + tap drops = plain frames when
 *    no RSC fragment was involved; RSC fragments are conserved (open before + taken = written in
 *    frames + dropped + open after, exactly when no tap write failed); rx_packets / rx_bytes equal
 *    the datagrams and bytes on the tap; every data range taken is written, counted as dropped
 *    or in the open RSC sequence (rx_ranges = rx_ranges_written + rx_range_drops + open);
 *  - every data message handed back from a packet the pump left is counted once (rx_ranges,
 *    rx_ctl_data), dropped exactly when the classifier says malformed or oversize (or the tap or
 *    the RSC rules refuse it), and keeps the range accounting and the tap's frame count true;
 *    no counter ever decreases;
 *  - every frame on the tap is at least an Ethernet header and at most mtu + 18 bytes, unless it is
 *    a GSO frame behind a vnet header (then at most 64 KiB + 18, gso_size > 0, hdr_len + gso_size
 *    within mtu + 18); vnet flags and gso_type are known values, NEEDS_CSUM points inside the
 *    frame, and no checksum is vouched for (flags 0) unless HVU_DP_F_RX_CSUM is set;
 *  - the pump never writes the inbound data area, the receive buffer or the send buffer; the
 *    monitor page changes only by its own trigger bit; an irq fd carries only 4-byte 1s;
 *  - with the capture hook on (trace.c, to a memfd or /dev/null, cap large or small): the trace
 *    checks of fuzz_trace.h, every block an inbound frame within the tap's frame limits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "fuzz_net.h"
#include "datapath.h"
#include "fuzz_trace.h"

#define MAXP 512
#define MAX_OPS 300
#define HDR 4096

enum cls { C_PEND = 0, C_CONTROL, C_COMP, C_XBAD, C_NVSBAD, C_PYTHON, C_XOK, C_FAULT };
enum rcls { R_BADRANGE, R_BADRNDIS, R_RSC, R_OVERSIZE, R_PLAIN, R_VLANBAD };

struct hpkt {
    uint64_t tid;
    uint8_t *bytes;             /* len8 * 8 bytes: what a copy-out of it gives */
    uint32_t len;
    int bad_desc;               /* the ring must refuse its descriptor */
    int who;                    /* 0 pending, 1 consumed by the pump, 2 read by "Python" */
    int cls;
    uint32_t n[6];              /* ranges per enum rcls (C_XOK) */
    int expect_comp, comps, may_fail, must_fail;
};

struct st {
    uint32_t tx_d, rx_d;
    uint8_t *tx_mem, *rx_mem;
    struct hvu_ring tx, rx, hw, hr;
    uint8_t *recv, *send, *pkt, *range, *rsc, *mon;
    uint32_t recv_size, sect, nsect, next_sect, pkt_cap, mon_id, mtu, flags;
    int tap[2], irq[2];
    struct hvu_dp *dp;
    struct hpkt p[MAXP];
    uint32_t np, head;
    int faulted;
    uint8_t *snap_in, *snap_recv, snap_mon[4096];
    struct fz_trace tr;
    uint8_t buf[70000];
};

static struct st S;

/* ---- the classifier (datapath.h's rules, written again) ---------------------------------------- */

static int ppi_walk_ok(const uint8_t *p, uint32_t len)
{
    while (len > 0) {
        if (len < 12)
            return 0;
        uint32_t size = rd32le(p), off = rd32le(p + 8);
        if (size < 12 || (size & 3) || size > len || off > size)
            return 0;
        p += size;
        len -= size;
    }
    return 1;
}

static int ppi_get(const uint8_t *p, uint32_t len, uint32_t type, uint32_t *v)
{
    while (len >= 12) {
        uint32_t size = rd32le(p), off = rd32le(p + 8);
        if (rd32le(p + 4) == type && off <= size && size - off >= 4) {
            *v = rd32le(p + off);
            return 1;
        }
        p += size;
        len -= size;
    }
    return 0;
}

/* the 802.1Q element: 1 well formed, -1 too short for its value, 0 none (the first of its type) */
static int ppi_vlan(const uint8_t *p, uint32_t len)
{
    while (len >= 12) {
        uint32_t size = rd32le(p), off = rd32le(p + 8);
        if (rd32le(p + 4) == 6)
            return size - off >= 4 ? 1 : -1;
        p += size;
        len -= size;
    }
    return 0;
}

static int cls_msg(struct st *s, const uint8_t *m, uint32_t n)
{
    if (n < 44)
        return R_BADRNDIS;
    uint32_t type = rd32le(m), mlen = rd32le(m + 4), doff = rd32le(m + 8), dlen = rd32le(m + 12);
    uint32_t oob = rd32le(m + 20), poff = rd32le(m + 28), plen = rd32le(m + 32);
    if (type != 1)
        return R_BADRNDIS;
    if (mlen > n || mlen < 44 || (uint64_t)dlen + oob + plen > mlen)
        return R_BADRNDIS;
    if (doff < 36 || 8 + (uint64_t)doff + dlen > mlen)
        return R_BADRNDIS;
    uint32_t id = 0;
    int has_id = 0, vlan = 0;
    if (plen > 0) {
        if (poff < 36 || (poff & 3) || 8 + (uint64_t)poff + plen > mlen)
            return R_BADRNDIS;
        if (!ppi_walk_ok(m + 8 + poff, plen))
            return R_BADRNDIS;
        has_id = ppi_get(m + 8 + poff, plen, 0x80000001u, &id);
        vlan = ppi_vlan(m + 8 + poff, plen);
        if (vlan < 0)
            return R_VLANBAD;                           /* dropped, rx_vlan_bad */
    }
    uint32_t fl = has_id ? (id >> 8) & 0xFF : 0;
    int cont = (fl & 1) && !(fl & 2);
    if (dlen < (cont ? 1u : 14u))
        return R_BADRNDIS;
    if (fl & 1)
        return R_RSC;
    if (dlen + (vlan > 0 ? 4u : 0u) > s->mtu + 18)     /* the tag goes back into the frame */
        return R_OVERSIZE;
    return R_PLAIN;
}

static int range_good(struct st *s, uint32_t count, uint32_t off)
{
    return off <= s->recv_size && count != 0 && count <= s->recv_size - off && count <= s->sect;
}

static void classify(struct st *s, struct hpkt *p)
{
    const uint8_t *b = p->bytes;
    uint16_t type = (uint16_t)(b[0] | b[1] << 8);
    uint32_t hlen = (uint32_t)(b[2] | b[3] << 8) * 8u, len = p->len;
    memset(p->n, 0, sizeof(p->n));
    if (p->bad_desc) {
        p->cls = C_FAULT;
        return;
    }
    int mine = len <= s->pkt_cap && (type == 7 || (type == 11 && (p->tid >> 63)));
    if (!mine) {
        p->cls = C_CONTROL;
        return;
    }
    if (type == 11) {
        p->cls = C_COMP;
        return;
    }
    /* VMBUS.md §4.11 header */
    int bad_ranges = 0;
    if (len < 24 || hlen < 24 || hlen > len || (uint16_t)(b[16] | b[17] << 8) != 0xCAFE) {
        p->cls = C_XBAD;
        return;
    }
    uint32_t cnt = rd32le(b + 20);
    if (cnt == 0 || 24 + (uint64_t)cnt * 8 > hlen) {
        p->cls = C_XBAD;
        return;
    }
    for (uint32_t i = 0; i < cnt; i++)
        if (!range_good(s, rd32le(b + 24 + 8 * i), rd32le(b + 28 + 8 * i)))
            bad_ranges = 1;
    (void)bad_ranges;
    uint32_t plen = len - hlen;
    if (plen < 8 || rd32le(b + hlen) != 107) {
        p->cls = C_NVSBAD;
        return;
    }
    if (rd32le(b + hlen + 4) != 0) {
        p->cls = C_PYTHON;
        return;
    }
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t c = rd32le(b + 24 + 8 * i), o = rd32le(b + 28 + 8 * i);
        if (range_good(s, c, o) && c >= 4 && rd32le(s->recv + o) != 1) {
            p->cls = C_PYTHON;
            return;
        }
    }
    p->cls = C_XOK;
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t c = rd32le(b + 24 + 8 * i), o = rd32le(b + 28 + 8 * i);
        if (!range_good(s, c, o))
            p->n[R_BADRANGE]++;
        else
            p->n[cls_msg(s, s->recv + o, c)]++;
    }
}

/* ---- the host: building and writing packets ---------------------------------------------------- */

static void record(struct st *s, uint64_t tid, const uint8_t *bytes, uint32_t len, int bad_desc)
{
    struct hpkt *p = &s->p[s->np++];
    memset(p, 0, sizeof(*p));
    p->tid = tid;
    p->len = len;
    p->bytes = malloc(len);
    memcpy(p->bytes, bytes, len);
    p->bad_desc = bad_desc;
}

/* one packet through ring.c's writer on the host's side of the inbound ring; recorded if written */
static void host_send(struct st *s, uint16_t type, uint16_t flags, uint64_t tid, const uint8_t *hdr, uint32_t hlen,
                      const uint8_t *pl, uint32_t plen)
{
    if (s->np >= MAXP)
        return;
    struct hvu_seg seg = {pl, plen};
    int rc = hvu_ring_send_hdr(&s->hw, type, flags, tid, hdr, hlen, &seg, plen ? 1 : 0, NULL);
    if (rc != 0)
        return;                                          /* full: the host tries again later */
    uint32_t len = (16 + hlen + plen + 7) & ~7u;
    uint8_t *b = calloc(1, len);
    struct hvu_pkt_desc d = {type, (uint16_t)(2 + hlen / 8), (uint16_t)(len / 8), flags, tid};
    memcpy(b, &d, 16);
    if (hlen)
        memcpy(b + 16, hdr, hlen);
    if (plen)
        memcpy(b + 16 + hlen, pl, plen);
    record(s, tid, b, len, 0);
    free(b);
}

static uint64_t new_tid(struct st *s, struct fz *f)
{
    return ((uint64_t)fz_u32(f) << 32) | s->np;         /* low half = index: unique per input */
}

/* The next receive section, round robin; returns its offset. */
static uint32_t place(struct st *s, const uint8_t *m, uint32_t n)
{
    uint32_t off = (s->next_sect++ % s->nsect) * s->sect;
    uint32_t k = n < s->recv_size - off ? n : s->recv_size - off;
    memcpy(s->recv + off, m, k);
    return off;
}

static uint32_t mutate(struct fz *f, uint32_t v)
{
    uint8_t how = fz_u8(f);
    if (how < 232)
        return v;
    if (how < 244)
        return v + (uint32_t)(int8_t)fz_u8(f);
    return fz_u32(f);
}

#define OVM_DATA 256u          /* OpenVMM's receive layout: the frame's first byte in the section */

/* an RNDIS packet message: 44-byte header, per-packet info, frame; fields sometimes wrong */
static uint32_t build_msg(struct fz *f, uint8_t *out, const uint8_t *ppi, uint32_t ppi_len, const uint8_t *frame,
                          uint32_t flen)
{
    uint32_t mlen = 44 + ppi_len + flen;
    memset(out, 0, 44);
    wr32le(out, mutate(f, 1));
    wr32le(out + 4, mutate(f, mlen));
    wr32le(out + 8, mutate(f, 36 + ppi_len));
    wr32le(out + 12, mutate(f, flen));
    wr32le(out + 20, mutate(f, 0));
    wr32le(out + 28, mutate(f, ppi_len ? 36 : 0));
    wr32le(out + 32, mutate(f, ppi_len));
    memcpy(out + 44, ppi, ppi_len);
    memcpy(out + 44 + ppi_len, frame, flen);
    return mlen;
}

static uint32_t put_ppi(uint8_t *p, uint32_t type, uint32_t value)
{
    wr32le(p, 16);
    wr32le(p + 4, type);
    wr32le(p + 8, 12);
    wr32le(p + 12, value);
    return 16;
}

static const uint32_t CSUMS[] = {0x8, 0x10, 0x1, 0x2, 0x9, 0x28, 0};

/* per-packet info for a whole frame: checksum, hash, vlan, malformed ones */
static uint32_t some_ppi(struct fz *f, uint8_t *p)
{
    uint32_t n = 0;
    uint8_t how = fz_u8(f);
    if (how & 1)
        n += put_ppi(p + n, 0, (how & 2) ? fz_u32(f) : CSUMS[fz_pick(f, 7)]);
    if (how & 4)
        n += put_ppi(p + n, 8, fz_u32(f));             /* hash value: skipped */
    if (how & 8)
        n += put_ppi(p + n, 0x80000001u, fz_u32(f));   /* an RSC id with any flags */
    if (how & 0x40)                                     /* 802.1Q info: the tag goes back in */
        n += put_ppi(p + n, 6, fz_u32(f));
    if ((how & 0xC0) == 0x80) {                         /* 802.1Q info too short for its value */
        wr32le(p + n, 16);
        wr32le(p + n + 4, 6);
        wr32le(p + n + 8, fz_chance(f, 128) ? 16 : 14);
        wr32le(p + n + 12, fz_u32(f));
        n += 16;
    }
    if ((how & 0x30) == 0x20)                           /* 802.1Q info again: the first one counts */
        n += put_ppi(p + n, 6, fz_u32(f));
    if ((how & 0x30) == 0x30) {                         /* a malformed element */
        wr32le(p + n, fz_u8(f));
        wr32le(p + n + 4, fz_u32(f));
        wr32le(p + n + 8, fz_u8(f));
        wr32le(p + n + 12, fz_u32(f));
        n += 16;
    }
    return n;
}

static void host_xfer_send(struct st *s, struct fz *f, const uint32_t *rc, const uint32_t *ro, uint32_t n)
{
    uint8_t hdr[8 + 8 * 64 + 24];
    uint32_t extra = fz_rare(f, 32) ? fz_pick(f, 3) : 0;
    uint32_t hlen = 8 + 8 * n + 8 * extra;
    memset(hdr, 0, hlen);
    uint16_t ps = fz_chance(f, 248) ? 0xCAFE : fz_u16(f);
    hdr[0] = (uint8_t)ps;
    hdr[1] = (uint8_t)(ps >> 8);
    wr32le(hdr + 4, fz_chance(f, 240) ? n : (fz_chance(f, 128) ? fz_u8(f) % 70 : fz_u32(f)));
    for (uint32_t i = 0; i < n; i++) {
        wr32le(hdr + 8 + 8 * i, rc[i]);
        wr32le(hdr + 12 + 8 * i, ro[i]);
    }
    uint8_t nvs[40];
    memset(nvs, 0, sizeof(nvs));
    uint32_t nlen = 40;
    uint8_t how = fz_u8(f);
    wr32le(nvs, how < 240 ? 107 : (how < 248 ? 106 : fz_u32(f)));
    wr32le(nvs + 4, fz_chance(f, 244) ? 0 : (fz_chance(f, 128) ? 1 : fz_u32(f)));
    wr32le(nvs + 8, 0xFFFFFFFFu);
    if (fz_rare(f, 8))
        nlen = fz_pick(f, 8);
    uint16_t flags = fz_chance(f, 250) ? 1 : 0;
    host_send(s, 7, flags, new_tid(s, f), hdr, hlen, nvs, nlen);
}

static void host_xfer(struct st *s, struct fz *f)
{
    uint32_t n = fz_rare(f, 8) ? 0 : 1 + fz_pick(f, 8);
    uint32_t rc[8], ro[8];
    uint8_t *msg = malloc(s->sect + 256), *fr = malloc(s->sect + 256), ppi[96];
    for (uint32_t i = 0; i < n; i++) {
        uint8_t mode = fz_u8(f);
        if (mode < 220) {
            uint32_t pl = some_ppi(f, ppi);
            uint32_t room = s->sect + 64 > 44 + pl ? s->sect + 64 - 44 - pl : 0;
            uint32_t flen;
            struct netf nf;
            if (mode & 1) {
                uint32_t want = fz_range(f, s->mtu + 40);
                flen = fn_build(f, fr, room, want, fz_u8(f), &nf);
                if (flen == 0)
                    flen = fn_build(f, fr, room, 0, 0, &nf);
            } else {
                flen = fz_range(f, room + 1);
                if (fz_chance(f, 200) && flen > s->mtu + 30)
                    flen = fz_range(f, s->mtu + 30);
                if (flen > room)
                    flen = room;
                fz_blob(f, fr, flen);
            }
            if (mode >= 208 && s->sect >= OVM_DATA + 14) {
                /* OpenVMM's layout (netvsp rndis_packet at the start of the section, the frame at
                 * data_offset 248, i.e. byte 256): the range is the whole section, junk around */
                if (flen > s->sect - OVM_DATA)
                    flen = s->sect - OVM_DATA;
                uint32_t mlen = build_msg(f, msg, ppi, pl, fr, 0);
                memset(msg + mlen, 0xA5 ^ fz_u8(f), s->sect - mlen);
                memcpy(msg + OVM_DATA, fr, flen);
                wr32le(msg + 4, mutate(f, fz_chance(f, 192) ? OVM_DATA + flen : s->sect));
                wr32le(msg + 8, mutate(f, OVM_DATA - 8));
                wr32le(msg + 12, mutate(f, flen));
                rc[i] = mutate(f, s->sect);
                ro[i] = place(s, msg, s->sect);
                continue;
            }
            uint32_t mlen = build_msg(f, msg, ppi, pl, fr, flen);
            rc[i] = mutate(f, mlen);
            ro[i] = place(s, msg, mlen);
        } else if (mode < 228) {                               /* an RNDIS control message */
            static const uint32_t CTL[] = {0x80000002u, 0x80000004u, 0x80000005u, 7u};
            uint32_t body = 8 + fz_pick(f, 64) * 4;
            if (body > s->sect)
                body = s->sect;
            memset(msg, 0, body);
            wr32le(msg, CTL[fz_pick(f, 4)]);
            wr32le(msg + 4, body);
            rc[i] = body;
            ro[i] = place(s, msg, body);
        } else if (mode < 240) {
            rc[i] = fz_range(f, 2 * s->sect);
            ro[i] = fz_range(f, s->recv_size + 64);
        } else {
            rc[i] = fz_u32(f);
            ro[i] = fz_u32(f);
        }
    }
    host_xfer_send(s, f, rc, ro, n);
    free(msg);
    free(fr);
}

/* an RSC sequence: one TCP frame cut into fragments, each its own RNDIS message with the RSC id
 * per-packet info, over one or more transfer-page packets; sometimes broken */
static void host_rsc(struct st *s, struct fz *f)
{
    uint32_t maxfrag = s->sect - 44 - 32;
    uint32_t cap = s->nsect * maxfrag;
    if (cap > 66000)
        cap = 66000;
    uint8_t *fr = malloc(cap), *msg = malloc(s->sect);
    struct netf nf;
    uint32_t how = fz_u8(f);
    uint32_t payload = fz_range(f, cap);
    uint32_t len = fn_build(f, fr, cap, payload, how & ~4u, &nf);   /* TCP */
    if (len == 0)
        len = fn_build(f, fr, cap, 0, how & ~4u, &nf);
    if (len == 0) {
        free(fr);
        free(msg);
        return;
    }
    if (fz_rare(f, 16))
        wr16be_(fr + nf.l3 + (nf.v6 ? 4 : 2), fz_u16(f));   /* an IP length that does not match */
    uint32_t pkt_id = fz_u16(f), csum = fz_chance(f, 200) ? CSUMS[fz_pick(f, 7)] : fz_u32(f);
    uint32_t per = 1 + fz_pick(f, 16);
    uint32_t rcs[64], ros[64], nr = 0, pos = 0, k = 0;
    while (pos < len && nr < 64) {
        uint32_t fl = maxfrag;
        uint8_t c = fz_u8(f);
        if (c >= 192)
            fl = 1 + c % maxfrag;
        if (fl > len - pos)
            fl = len - pos;
        uint32_t flags = 1 | (pos == 0 ? 2 : 0) | (pos + fl == len ? 4 : 0);
        uint8_t brk = fz_u8(f);
        if (brk > 250)
            flags ^= 1u << fz_pick(f, 3);                  /* a wrong flag */
        uint32_t id = (brk == 250 ? pkt_id + 1 : pkt_id);  /* not a break: the flags delimit */
        uint8_t ppi[32];
        uint32_t pl = 0;
        if (pos == 0 && (how & 0x40))
            pl += put_ppi(ppi, 0, csum);
        pl += put_ppi(ppi + pl, 0x80000001u, 1 | flags << 8 | id << 16);
        uint32_t ml = build_msg(f, msg, ppi, pl, fr + pos, fl);
        if (brk != 249) {                                  /* 249: the fragment goes missing */
            rcs[nr] = ml;
            ros[nr] = place(s, msg, ml);
            nr++;
        }
        pos += fl;
        k++;
        if (nr == per || (pos >= len && nr > 0)) {
            host_xfer_send(s, f, rcs, ros, nr);
            nr = 0;
        }
    }
    if (nr > 0)
        host_xfer_send(s, f, rcs, ros, nr);
    free(fr);
    free(msg);
}

static void host_other(struct st *s, struct fz *f, uint8_t op)
{
    uint8_t pl[64];
    uint32_t n = fz_pick(f, 6) * 8;
    fz_copy(f, pl, n);
    if (op == 0) {                                         /* a TX completion: tagged or not */
        uint64_t tid = fz_chance(f, 220) ? HVU_DP_TX_TAG : 0;
        tid |= fz_u32(f);
        if (fz_chance(f, 200)) {
            n = 40;
            memset(pl, 0, 40);
            wr32le(pl, 108);
            wr32le(pl + 4, 1 + fz_pick(f, 2));
        }
        host_send(s, 11, 0, tid, NULL, 0, pl, n);
    } else if (op == 1) {                                  /* control: in-band or GPA direct */
        uint16_t type = fz_chance(f, 128) ? 6 : 9, flags = (uint16_t)fz_pick(f, 2);
        uint64_t tid = new_tid(s, f);
        host_send(s, type, flags, tid, NULL, 0, pl, n);
    } else if (s->np < MAXP) {                             /* a descriptor the ring must refuse */
        static const uint16_t bad_types[] = {0, 1, 5, 8, 10, 12, 31, 32, 0xFFFF};
        uint32_t len = 16 + n;
        struct hvu_pkt_desc d = {11, 2, (uint16_t)(len / 8), 0, new_tid(s, f)};
        uint8_t which = fz_u8(f) % 3;
        if (which == 0)
            d.type = bad_types[fz_pick(f, 9)];
        else if (which == 1)
            d.flags = (uint16_t)(2 | fz_u16(f));
        else
            d.offset8 = fz_chance(f, 128) ? fz_pick(f, 2) : (uint16_t)(len / 8 + 1 + fz_pick(f, 4));
        struct hvu_seg seg[2] = {{&d, 16}, {pl, n}};
        if (hvu_ring_write(&s->hw, seg, 2, NULL) == 0) {
            uint8_t b[80];
            memcpy(b, &d, 16);
            memcpy(b + 16, pl, n);
            record(s, d.trans_id, b, len, 1);
        }
    }
}

/* ---- the host reads the outbound ring: receive completions only ------------------------------- */

static void host_drain(struct st *s)
{
    struct hvu_pkt_desc d;
    int rc;
    for (rc = hvu_ring_first(&s->hr, &d); rc == 0; rc = hvu_ring_next(&s->hr, &d)) {
        int n = hvu_ring_copyout(&s->hr, s->buf, sizeof(s->buf), &d);
        CHECK(n == 56, "outbound packet of %d bytes (a completion is 56)", n);
        CHECK(d.type == 11 && d.flags == 0 && d.offset8 == 2, "outbound packet type %u flags %u offset8 %u", d.type,
              d.flags, d.offset8);
        const uint8_t *pl = s->buf + 16;
        uint32_t status = rd32le(pl + 4);
        CHECK(rd32le(pl) == 108 && (status == 1 || status == 2), "completion NVS %u status %u", rd32le(pl), status);
        for (int i = 8; i < 40; i++)
            CHECK(pl[i] == 0, "completion reserved byte %d = %u", i, pl[i]);
        uint32_t idx = (uint32_t)d.trans_id;
        CHECK(idx < s->np && s->p[idx].tid == d.trans_id, "completion for trans_id %llx the host never sent",
              (unsigned long long)d.trans_id);
        struct hpkt *p = &s->p[idx];
        CHECK(p->who == 1 && p->expect_comp, "completion for packet %u (class %d, consumed by %d) that owes none",
              idx, p->cls, p->who);
        CHECK(p->comps == 0, "second completion for packet %u", idx);
        p->comps++;
        if (status == 1)
            CHECK(!p->must_fail, "packet %u completed OK with %u bad ranges, %u bad RNDIS, %u oversize", idx,
                  p->n[R_BADRANGE], p->n[R_BADRNDIS], p->n[R_OVERSIZE]);
        else
            CHECK(p->must_fail || p->may_fail, "packet %u completed FAILED with no reason", idx);
    }
    CHECK(rc == -EAGAIN, "the host's reader refused the outbound ring: %d", rc);
    hvu_ring_close(&s->hr);
}

/* ---- the guest ---------------------------------------------------------------------------------- */

static void check_frame(struct st *s, const uint8_t *b, uint32_t n)
{
    uint32_t limit = s->mtu + 18;
    if (s->flags & HVU_DP_F_VNET_HDR) {
        CHECK(n >= 12, "tap datagram of %u bytes has no vnet header", n);
        uint8_t flags = b[0], gso = b[1];
        uint32_t hdr_len = b[2] | b[3] << 8, gso_size = b[4] | b[5] << 8;
        uint32_t cs = b[6] | b[7] << 8, co = b[8] | b[9] << 8;
        uint32_t len = n - 12;
        CHECK(len >= 14, "frame of %u bytes", len);
        CHECK((flags & ~3u) == 0, "vnet flags %#x", flags);
        CHECK(gso == 0 || gso == 1 || gso == 4, "vnet gso_type %u", gso);
        CHECK(b[10] == 0 && b[11] == 0, "vnet num_buffers set");
        if (!(s->flags & HVU_DP_F_RX_CSUM))
            CHECK(flags == 0, "vnet flags %#x without the host's checksum info enabled", flags);
        if (flags & 1)
            CHECK(cs + co + 2 <= len, "NEEDS_CSUM at %u+%u outside a frame of %u", cs, co, len);
        if (gso) {
            CHECK(gso_size > 0 && hdr_len <= len && len <= 65535 + 18, "GSO frame %u gso_size %u hdr_len %u", len,
                  gso_size, hdr_len);
            /* the segments the kernel cuts from it must fit the MTU, as every other frame does
             * (regressions/dp_rx/regress-rsc-headers-over-mtu-gso) */
            CHECK(hdr_len + gso_size <= limit, "GSO frame of %u bytes whose segments of %u+%u bytes exceed mtu %u + 18",
                  len, hdr_len, gso_size, s->mtu);
        } else {
            CHECK(len <= limit, "frame of %u bytes over mtu %u + 18", len, s->mtu);
        }
    } else {
        CHECK(n >= 14 && n <= limit, "frame of %u bytes (mtu %u)", n, s->mtu);
    }
}

/* Every frame waiting on the tap's other end, each checked; their count and Ethernet bytes (the
 * vnet header left out) added to *frames and *bytes. */
static void drain_tap(struct st *s, uint64_t *frames, uint64_t *bytes)
{
    for (;;) {
        ssize_t r = recv(s->tap[1], s->buf, sizeof(s->buf), MSG_DONTWAIT);
        if (r < 0)
            break;
        check_frame(s, s->buf, (uint32_t)r);
        (*frames)++;
        *bytes += (uint64_t)r - ((s->flags & HVU_DP_F_VNET_HDR) ? 12 : 0);
    }
}

static void snapshot_counters(struct st *s, uint64_t *c)
{
    for (int i = 0; i < hvu_dp_counter_count(); i++)
        c[i] = hvu_dp_counter(s->dp, i);
}

/* Python's reader of a transfer-page packet the pump left whole (hvuio/channel.py
 * _transfer_pages): when every range passes, each range is walked message by message (msg_len)
 * and every RNDIS data message goes back to the pump with hvu_dp_rx_data (datapath.h "Mixed
 * packets"); a walk that fails ends the packet, as Python's HostProtocolError does. Each hand-back
 * is checked against the classifier: counted in rx_ranges and rx_ctl_data, a malformed message
 * in rx_bad_rndis and an oversize one in rx_oversize (both reported as dropped), the range
 * accounting kept, and the tap holding exactly the frames rx_packets counted. */
static void python_hands_back(struct st *s, const struct hpkt *p)
{
    const uint8_t *b = p->bytes;
    uint32_t hlen = (uint32_t)(b[2] | b[3] << 8) * 8u;
    if (b[0] != 7 || p->len < 24 || hlen < 24 || hlen > p->len)
        return;
    uint32_t cnt = rd32le(b + 20);
    if (cnt == 0 || 24 + (uint64_t)cnt * 8 > hlen)
        return;
    for (uint32_t i = 0; i < cnt; i++)
        if (!range_good(s, rd32le(b + 24 + 8 * i), rd32le(b + 28 + 8 * i)))
            return;
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t c = rd32le(b + 24 + 8 * i), o = rd32le(b + 28 + 8 * i);
        for (uint32_t pos = 0; pos < c;) {
            if (c - pos < 8)
                return;
            uint32_t type = rd32le(s->recv + o + pos), mlen = rd32le(s->recv + o + pos + 4);
            if (mlen < 8 || mlen > c - pos)
                return;
            if (type == 1) {
                uint8_t *m = malloc(mlen);              /* Python's private copy, exactly mlen bytes */
                memcpy(m, s->recv + o + pos, mlen);
                int want = cls_msg(s, m, mlen);
                struct hvu_dp_counters before = s->dp->ctr;
                int rc = hvu_dp_rx_data(s->dp, m, mlen);
                free(m);
                struct hvu_dp_counters *a = &s->dp->ctr;
                CHECK(rc == 0 || rc == 1, "hvu_dp_rx_data returned %d", rc);
                CHECK(a->rx_ranges == before.rx_ranges + 1 && a->rx_ctl_data == before.rx_ctl_data + 1,
                      "a handed-back message not counted");
                CHECK(a->rx_bad_rndis - before.rx_bad_rndis == (want == R_BADRNDIS) &&
                          a->rx_oversize - before.rx_oversize == (want == R_OVERSIZE) &&
                          a->rx_vlan_bad - before.rx_vlan_bad == (want == R_VLANBAD),
                      "handed-back message of class %d counted as bad %llu oversize %llu", want,
                      (unsigned long long)(a->rx_bad_rndis - before.rx_bad_rndis),
                      (unsigned long long)(a->rx_oversize - before.rx_oversize));
                if (want == R_BADRNDIS || want == R_OVERSIZE || want == R_VLANBAD)
                    CHECK(rc == 1, "a handed-back message of class %d reported taken", want);
                CHECK(a->rx_ranges == a->rx_ranges_written + a->rx_range_drops + s->dp->rsc_cnt,
                      "after a hand-back: ranges %llu != written %llu + dropped %llu + open %u",
                      (unsigned long long)a->rx_ranges, (unsigned long long)a->rx_ranges_written,
                      (unsigned long long)a->rx_range_drops, s->dp->rsc_cnt);
                uint64_t frames = 0, bytes = 0;
                drain_tap(s, &frames, &bytes);
                CHECK(frames == a->rx_packets - before.rx_packets && bytes == a->rx_bytes - before.rx_bytes,
                      "a hand-back put %llu frames on the tap, rx_packets +%llu", (unsigned long long)frames,
                      (unsigned long long)(a->rx_packets - before.rx_packets));
            }
            pos += mlen;
        }
    }
}

static void python_reads_head(struct st *s)
{
    struct hvu_pkt_desc d;
    CHECK(s->head < s->np, "CONTROL with nothing pending");
    struct hpkt *p = &s->p[s->head];
    CHECK(p->cls == C_CONTROL || p->cls == C_PYTHON, "CONTROL at packet %u of class %d", s->head, p->cls);
    int rc = hvu_ring_peek(&s->rx, &d);
    CHECK(rc == 0 && memcmp(&d, p->bytes, 16) == 0, "Python's packet is not at the head (%d)", rc);
    hvu_ring_consume(&s->rx);
    hvu_ring_close(&s->rx);
    p->who = 2;
    s->head++;
    if (p->cls == C_PYTHON)
        python_hands_back(s, p);
}

#define NC 64

static int guest_rx(struct st *s, unsigned budget)
{
    uint64_t c0[NC], c1[NC];
    uint32_t last = s->head + budget + 1 < s->np ? s->head + budget + 1 : s->np;
    for (uint32_t i = s->head; i < last; i++)
        classify(s, &s->p[i]);
    snapshot_counters(s, c0);
    struct hvu_dp_counters before = s->dp->ctr;
    uint64_t ring0 = s->rx.ctr.rx_packets;
    uint32_t open0 = s->dp->rsc_cnt;
    memcpy(s->snap_in, s->rx_mem, HDR + s->rx_d);
    memcpy(s->snap_recv, s->recv, s->recv_size);
    if (s->mon)
        memcpy(s->snap_mon, s->mon, 4096);
    uint32_t npend0 = hvu_dp_pending_completions(s->dp);
    (void)npend0;

    int rc = hvu_dp_rx(s->dp, budget);

    struct hvu_dp_counters *a = &s->dp->ctr;
    uint32_t consumed = (uint32_t)(s->rx.ctr.rx_packets - ring0);
    CHECK(s->head + consumed <= s->np, "the pump consumed %u packets, %u were pending", consumed, s->np - s->head);
    uint64_t xfer = 0, bad_xfer = 0, bad_nvs = 0, bad_rndis = 0, over = 0, vlan_bad = 0, comp = 0, plain = 0, rsc = 0;
    uint32_t first = s->head;
    for (uint32_t i = 0; i < consumed; i++) {
        struct hpkt *p = &s->p[s->head++];
        CHECK(p->cls != C_CONTROL && p->cls != C_PYTHON && p->cls != C_FAULT && p->cls != C_PEND,
              "the pump consumed packet %u of class %d", s->head - 1, p->cls);
        p->who = 1;
        switch (p->cls) {
        case C_COMP:
            comp++;
            break;
        case C_XBAD:
            xfer++;
            bad_xfer++;
            break;
        case C_NVSBAD:
            xfer++;
            bad_nvs++;
            break;
        default:
            xfer++;
            p->expect_comp = 1;
            bad_xfer += p->n[R_BADRANGE];
            bad_rndis += p->n[R_BADRNDIS];
            over += p->n[R_OVERSIZE];
            vlan_bad += p->n[R_VLANBAD];
            plain += p->n[R_PLAIN];
            rsc += p->n[R_RSC];
            p->must_fail = p->n[R_BADRANGE] || p->n[R_BADRNDIS] || p->n[R_OVERSIZE] || p->n[R_VLANBAD];
            break;
        }
    }
    int tap_drops = a->rx_tap_drop != before.rx_tap_drop, rsc_drops = a->rx_rsc_drop != before.rx_rsc_drop;
    for (uint32_t i = first; i < s->head; i++)
        s->p[i].may_fail = tap_drops || rsc_drops;
    /* why the call returned */
    if (rc == HVU_DP_IDLE) {
        CHECK(s->head == s->np, "IDLE with %u packets pending", s->np - s->head);
    } else if (rc == HVU_DP_BUDGET) {
        CHECK(consumed == budget, "BUDGET after %u packets of %u", consumed, budget);
    } else if (rc == HVU_DP_CONTROL) {
        CHECK(s->head < s->np && (s->p[s->head].cls == C_CONTROL || s->p[s->head].cls == C_PYTHON),
              "CONTROL before packet %u of class %d", s->head, s->head < s->np ? s->p[s->head].cls : -1);
        CHECK(a->rx_control == before.rx_control + 1, "rx_control not counted");
    } else if (rc == HVU_DP_BLOCKED) {
        CHECK(s->head < s->np && s->p[s->head].bytes[0] == 7 &&
                  hvu_dp_pending_completions(s->dp) == HVU_DP_PENDING_MAX,
              "BLOCKED with %u completions held", hvu_dp_pending_completions(s->dp));
    } else {
        CHECK(rc == -EIO, "hvu_dp_rx returned %d", rc);
        struct hvu_dp_fault fl;
        hvu_dp_fault(s->dp, &fl);
        CHECK(fl.ring == 1 && s->head < s->np && s->p[s->head].cls == C_FAULT,
              "-EIO (ring %d reason %d) at packet of class %d", fl.ring, fl.reason,
              s->head < s->np ? s->p[s->head].cls : -1);
        s->faulted = 1;
    }
    if (rc != HVU_DP_CONTROL)
        CHECK(a->rx_control == before.rx_control, "rx_control counted without CONTROL");
    /* every data range taken ends written, counted as a drop, or in the RSC sequence still open */
    CHECK(a->rx_ranges == a->rx_ranges_written + a->rx_range_drops + s->dp->rsc_cnt,
          "ranges %llu != written %llu + dropped %llu + open %u", (unsigned long long)a->rx_ranges,
          (unsigned long long)a->rx_ranges_written, (unsigned long long)a->rx_range_drops, s->dp->rsc_cnt);
    CHECK(a->rx_xfer - before.rx_xfer == xfer, "rx_xfer +%llu, expected +%llu",
          (unsigned long long)(a->rx_xfer - before.rx_xfer), (unsigned long long)xfer);
    CHECK(a->rx_bad_xfer - before.rx_bad_xfer == bad_xfer, "rx_bad_xfer +%llu, expected +%llu",
          (unsigned long long)(a->rx_bad_xfer - before.rx_bad_xfer), (unsigned long long)bad_xfer);
    CHECK(a->rx_bad_nvs - before.rx_bad_nvs == bad_nvs, "rx_bad_nvs");
    CHECK(a->rx_bad_rndis - before.rx_bad_rndis == bad_rndis, "rx_bad_rndis +%llu, expected +%llu",
          (unsigned long long)(a->rx_bad_rndis - before.rx_bad_rndis), (unsigned long long)bad_rndis);
    CHECK(a->rx_oversize - before.rx_oversize == over, "rx_oversize +%llu, expected +%llu",
          (unsigned long long)(a->rx_oversize - before.rx_oversize), (unsigned long long)over);
    CHECK(a->rx_vlan_bad - before.rx_vlan_bad == vlan_bad, "rx_vlan_bad +%llu, expected +%llu",
          (unsigned long long)(a->rx_vlan_bad - before.rx_vlan_bad), (unsigned long long)vlan_bad);
    CHECK(a->tx_bad_comp - before.tx_bad_comp == comp, "tx_bad_comp");
    uint64_t out = (a->rx_packets - before.rx_packets) + (a->rx_tap_drop - before.rx_tap_drop);
    if (rsc == 0)
        CHECK(out == plain, "%llu frames written or dropped at the tap for %llu plain frames", (unsigned long long)out,
              (unsigned long long)plain);
    else
        CHECK(out >= plain, "%llu frames written or dropped at the tap for %llu plain frames", (unsigned long long)out,
              (unsigned long long)plain);
    uint64_t gone = (a->rx_rsc_frags - before.rx_rsc_frags) + (a->rx_rsc_drop - before.rx_rsc_drop) + s->dp->rsc_cnt;
    if (!tap_drops)
        CHECK(open0 + rsc == gone, "RSC fragments: %u open + %llu taken != %llu written/dropped/open", open0,
              (unsigned long long)rsc, (unsigned long long)gone);
    else
        CHECK(gone <= open0 + rsc, "RSC fragments: more accounted than taken");
    /* the tap */
    uint64_t frames = 0, bytes = 0;
    drain_tap(s, &frames, &bytes);
    CHECK(frames == a->rx_packets - before.rx_packets, "%llu frames on the tap, rx_packets +%llu",
          (unsigned long long)frames, (unsigned long long)(a->rx_packets - before.rx_packets));
    CHECK(bytes == a->rx_bytes - before.rx_bytes, "tap bytes differ from rx_bytes");
    /* signals */
    for (;;) {
        uint8_t sig[8];
        ssize_t r = recv(s->irq[1], sig, sizeof(sig), MSG_DONTWAIT);
        if (r < 0)
            break;
        CHECK(!s->mon, "an irq write on a monitored channel");
        CHECK(r == 4 && rd32le(sig) == 1, "irq datagram of %zd bytes", r);
    }
    if (s->mon) {
        uint32_t off = 8 + 8 * (s->mon_id / 32);
        uint32_t w = rd32le(s->snap_mon + off) | 1u << (s->mon_id % 32);
        uint8_t exp[4096];
        memcpy(exp, s->snap_mon, 4096);
        CHECK(memcmp(s->mon, exp, 4096) == 0 || (wr32le(exp + off, w), memcmp(s->mon, exp, 4096) == 0),
              "monitor page changed beyond trigger bit %u", s->mon_id);
        wr32le(s->mon + off, rd32le(s->mon + off) & ~(1u << (s->mon_id % 32)));   /* the host takes it */
    }
    /* memory the pump only reads */
    CHECK(memcmp(s->snap_in + HDR, s->rx_mem + HDR, s->rx_d) == 0, "the pump wrote the inbound data area");
    CHECK(memcmp(s->snap_recv, s->recv, s->recv_size) == 0, "the pump wrote the receive buffer");
    snapshot_counters(s, c1);
    for (int i = 0; i < hvu_dp_counter_count(); i++)
        CHECK(c1[i] >= c0[i], "counter %s went down", hvu_dp_counter_name(i));
    if (rc == HVU_DP_CONTROL)
        python_reads_head(s);
    return rc;
}

/* ---- set-up ------------------------------------------------------------------------------------- */

static const uint32_t TXD[] = {72, 128, 200, 512, 4096, 16384};
static const uint32_t RXD[] = {4096, 16384, 65536};
static const uint32_t SECT[] = {256, 512, 1024, 2048, 4096};
static const uint32_t PKT[] = {96, 256, 1024, 65536};
static const uint32_t MTU[] = {68, 576, 1500, 9000, 65535};

static int setup(struct st *s, struct fz *f)
{
    memset(s, 0, offsetof(struct st, buf));
    uint8_t a = fz_u8(f), b = fz_u8(f), c = fz_u8(f);
    s->tx_d = TXD[a % 6];
    s->rx_d = RXD[(a / 6) % 3];
    s->sect = SECT[b % 5];
    s->nsect = 2 + (b / 5) % 31;
    s->recv_size = s->sect * s->nsect + ((c & 1) ? fz_u8(f) : 0);
    s->pkt_cap = PKT[(c >> 1) % 4];
    s->mtu = MTU[(c >> 3) % 5];
    uint8_t fl = fz_u8(f);
    s->flags = ((fl & 1) ? HVU_DP_F_VNET_HDR : 0) | ((fl & 2) ? HVU_DP_F_RX_CSUM : 0);
    int want_rsc = (fl & 4) == 0 || (fl & 8);
    uint32_t start_in = (fz_u16(f) % s->rx_d) & ~7u, start_out = (fz_u16(f) % s->tx_d) & ~7u;
    s->tx_mem = calloc(1, HDR + s->tx_d);
    s->rx_mem = calloc(1, HDR + s->rx_d);
    wr32le(s->tx_mem, start_out);
    wr32le(s->tx_mem + 4, start_out);
    wr32le(s->rx_mem, start_in);
    wr32le(s->rx_mem + 4, start_in);
    CHECK(hvu_ring_attach(&s->tx, s->tx_mem, HDR + s->tx_d, HDR, HVU_RING_TX) == 0, "attach");
    CHECK(hvu_ring_attach(&s->rx, s->rx_mem, HDR + s->rx_d, HDR, HVU_RING_RX) == 0, "attach");
    CHECK(hvu_ring_attach(&s->hw, s->rx_mem, HDR + s->rx_d, HDR, HVU_RING_TX) == 0, "attach");
    CHECK(hvu_ring_attach(&s->hr, s->tx_mem, HDR + s->tx_d, HDR, HVU_RING_RX) == 0, "attach");
    s->recv = calloc(1, s->recv_size);
    s->send = calloc(1, 64);
    s->pkt = malloc(s->pkt_cap);
    s->range = malloc(s->sect);
    uint32_t rsc_size = HVU_DP_RSC_MAX_BYTES + ((s->flags & HVU_DP_F_VNET_HDR) ? 0 : s->mtu + 18);
    s->rsc = want_rsc ? malloc(rsc_size) : NULL;
    if (fl & 0x10) {
        s->mon = calloc(1, 4096);
        s->mon_id = fz_u8(f) % 128;
    }
    s->snap_in = malloc(HDR + s->rx_d);
    s->snap_recv = malloc(s->recv_size);
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->tap) == 0, "socketpair");
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->irq) == 0, "socketpair");
    if (fl & 0x20) {
        int small = (fl & 0x40) ? 2048 : 300000;
        setsockopt(s->tap[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    }
    struct hvu_dp_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.tx_ring = &s->tx;
    cfg.rx_ring = &s->rx;
    cfg.recv_buf = s->recv;
    cfg.recv_buf_size = s->recv_size;
    cfg.recv_section_size = s->sect;
    cfg.send_buf = s->send;
    cfg.send_buf_size = 64;
    cfg.send_section_size = 64;
    cfg.send_section_count = 1;
    cfg.pkt_buf = s->pkt;
    cfg.pkt_buf_size = s->pkt_cap;
    cfg.range_buf = s->range;
    cfg.range_buf_size = s->sect;
    cfg.tap_fd = s->tap[0];
    cfg.irq_fd = s->irq[0];
    cfg.monitor_page = s->mon;
    cfg.monitor_id = s->mon_id;
    cfg.mtu = s->mtu;
    cfg.flags = s->flags;
    cfg.rsc_buf = s->rsc;
    cfg.rsc_buf_size = s->rsc ? rsc_size : 0;
    s->dp = calloc(1, hvu_dp_sizeof());
    int rc = hvu_dp_init(s->dp, &cfg);
    CHECK(rc == 0, "hvu_dp_init refused a valid configuration: %d", rc);
    if (fl & 0x80)
        fz_trace_on(&s->tr, f, s->dp);
    return 0;
}

static void teardown(struct st *s)
{
    for (uint32_t i = 0; i < s->np; i++)
        free(s->p[i].bytes);
    for (int i = 0; i < 2; i++) {
        close(s->tap[i]);
        close(s->irq[i]);
    }
    for (int i = 0; i < 64; i++)
        CHECK(s->send[i] == 0, "the RX pump wrote the send buffer");
    /* frames as written to the tap (vnet header left out, 802.1Q tag put back); GSO frames up to 64 KiB */
    fz_trace_check(&s->tr, 1u << HVU_TRACE_IN, 14, (s->flags & HVU_DP_F_VNET_HDR) ? 65535 + 18 : s->mtu + 18);
    fz_trace_off(&s->tr);
    free(s->tx_mem);
    free(s->rx_mem);
    free(s->recv);
    free(s->send);
    free(s->pkt);
    free(s->range);
    free(s->rsc);
    free(s->mon);
    free(s->snap_in);
    free(s->snap_recv);
    free(s->dp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f;
    fz_init(&f, data, size);
    struct st *s = &S;
    setup(s, &f);
    for (int n = 0; n < MAX_OPS && fz_left(&f) > 0; n++) {
        uint8_t op = fz_u8(&f) % 16;
        if (op <= 4)
            host_xfer(s, &f);
        else if (op == 5)
            host_rsc(s, &f);
        else if (op == 6)
            host_other(s, &f, 0);
        else if (op == 7)
            host_other(s, &f, 1);
        else if (op == 8 && fz_u8(&f) < 24)
            host_other(s, &f, 2);
        else if (op == 9) {
            uint32_t off = fz_range(&f, s->recv_size), k = 1 + fz_pick(&f, 8);
            for (uint32_t i = 0; i < k && off + i < s->recv_size; i++)
                s->recv[off + i] = fz_u8(&f);
        } else if (op <= 11) {
            host_drain(s);
        } else if (!s->faulted) {
            unsigned budget = 1 + (fz_chance(&f, 128) ? fz_pick(&f, 8) : fz_u8(&f));
            guest_rx(s, budget);
        }
    }
    /* final flush: the host drains, the pump runs, until nothing is owed or held */
    for (int i = 0; i < 600; i++) {
        host_drain(s);
        int rc = guest_rx(s, 256);
        host_drain(s);
        if ((rc == HVU_DP_IDLE || rc < 0) && hvu_dp_pending_completions(s->dp) == 0)
            break;
    }
    CHECK(hvu_dp_pending_completions(s->dp) == 0, "completions still held after the final flush");
    for (uint32_t i = 0; i < s->np; i++) {
        struct hpkt *p = &s->p[i];
        if (p->who == 1 && p->expect_comp)
            CHECK(p->comps == 1, "packet %u (trans_id %llx) consumed and never completed", i,
                  (unsigned long long)p->tid);
        else
            CHECK(p->comps == 0, "packet %u completed without being owed", i);
    }
    teardown(s);
    return 0;
}
