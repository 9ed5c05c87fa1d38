/* libFuzzer harness: the emulator's C host path for guest sends (_native/simhost), driven through
 * its entry point hvu_sim_pump_run, which reads the guest's outbound ring (simhost.c drain), hands
 * NVSP 107 data sends to simhost_tx.c (send-buffer sections, RNDIS packet messages, checksum / LSO
 * per-packet info -> offload.c, frames to the tap, NVSP 108 completions into the inbound ring),
 * GPA-direct (type 9) data sends to simhost_gpa.c (range header, pages of a guest memory, the
 * gather, the same RNDIS handling) and receive completions naming its sections to simhost_rx.c. Only simhost sources are compiled in (the emulator
 * shares no code with the guest core); the harness is the guest: it writes the outbound ring by
 * hand (any descriptor), fills the send buffer, and reads the inbound ring as a guest would.
 *
 * Everything the pump touches is one heap block of exactly its size (rings, send buffer, receive
 * buffer, scratch, GSO buffer, guest memory, gather buffer): ASan sees any read outside them. The tap is a SOCK_DGRAM
 * socketpair (or none). The input: configuration (ring and section sizes, max frame, NVSP padding,
 * strict RNDIS limits, vnet header / tap GSO / offloads on offer, lso_max), then a script of sends
 * (1..20 RNDIS messages from a section on, so spanning sections, every field sometimes wrong, frames
 * plain or Ethernet/IP/TCP with checksum / LSO / 802.1Q pktinfo, RNDIS control messages after data
 * or followed by more bytes), raw packets of every type, descriptors that break the ring rules,
 * forged receive completions (ids of sections the pump owns, of Python's, or any), a bad write_index, rewrites of the send buffer, GPA-direct
 * sends (the same RNDIS messages scattered over 1..4 or 60..68 ranges of guest-memory pages picked
 * one by one, a page sometimes outside guest memory, the range header sometimes malformed or past
 * the fast path's copy, no guest memory or a small gather buffer by configuration), guest reads
 * of the inbound ring, pump runs, and vRSS checks (rss.c's hash and queue against a reference; the
 * receive path that steers is off in this harness).
 *
 * Invariants (abort on violation), checked after every run:
 *  - the pump consumes exactly a prefix of the guest's packets; each one it consumed is a
 *    completion naming a section the pump owns (counted in completions_unknown: none is outstanding) or a data send that passed
 *    every check, or a GPA-direct send with a page outside guest memory; each send it consumed
 *    gets exactly one completion, in order, well formed (type 0xb, offset8 2, len8 for the
 *    configured padding, NVSP 108 success, or failed for that GPA-direct send, zero padding,
 *    trailer = old write_index << 32); nothing else gets one; tx_gpa / tx_gpa_rejected count them;
 *  - a run that stops at a packet stops for a reason the code's contract names: CONTROL with
 *    reason and hand-off counted, exactly the reason a model of the checks (NVSP, send-buffer
 *    bounds (a send may span sections), every RNDIS field, pktinfo walk, strict aggregation; for GPA-direct the range
 *    rules of OpenVMM's gparange.rs, the gather buffer, and each packet header + pktinfo inside
 *    the range it starts in; OFFLOAD allowed only for a
 *    send with checksum / LSO pktinfo) gives; FAULT exactly at a packet that breaks VMBUS.md §4 (or a bad
 *    write_index), with the reason docs/VMBUS.md §4 gives, and every later run FAULT; otherwise the send at
 *    the head waits for room in the inbound ring (tx_wait_ring_full counted, the room really short);
 *  - frames: a consumed send without offload pktinfo puts exactly its frames on the tap, in order,
 *    byte for byte (GPA-direct: against the model's own gather of the listed pages) (behind a zero vnet header when configured); tx_frames + tx_net_errors account
 *    for every frame; offloaded frames stay within the GSO frame size;
 *  - the pump never writes the outbound data area, the send or receive buffer, guest memory, nor the inbound
 *    ring outside the free space it computed (the guest's unread completions are byte-compared), and
 *    only its own header fields.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "fuzz_net.h"
#include "simhost.h"
#include "simhost_int.h"  /* hvu_sim_rss_queue */
#include "offload.h"   /* simhost's: HVU_GSO_MAX_FRAME, HVU_VNET_HLEN */

#define HDR 4096
#define MAX_OPS 300
#define MAXG 1024
#define PAD_MAX 64
#define NSECT 4u                /* receive sections; the pump owns those in st.owned */
#define GM_PAGES 24u            /* the guest memory: pages GM_BASE .. GM_BASE + GM_PAGES - 1 */
#define GM_BASE 0x100000ull
#define GPA_FULL (65535u + 14u + 4u + 4096u)   /* the gather buffer the session gives the pump */
#define GH_MAX 2048u            /* range headers the fast path copies (simhost_int.h GPA_HDR_MAX) */
#define ARENA (1u << 20)

enum { K_SEND, K_COMP, K_OTHER, K_BAD, K_GPA };

struct gdesc {                  /* the 16-byte packet descriptor, as the guest writes it (VMBUS.md §3.3) */
    uint16_t type, offset8, len8, flags;
    uint64_t trans_id;
};

struct gpkt {
    uint64_t tid;
    uint32_t off, total;        /* position in the outbound ring */
    int kind;
    struct gdesc d;
    uint8_t pl[16];             /* first payload bytes (zeros past the end) */
    uint32_t plen;
    uint8_t *gh;                /* the type-specific header (GPA ranges), malloc'd, or NULL */
    uint32_t ghlen;
    int who;                    /* 0 pending, 1 the pump, 2 Python */
};

struct st {
    struct hvu_sim_pump p;
    uint32_t out_d, in_d;
    uint8_t *out, *in, *recv, *send, *scratch, *gso;
    uint8_t *sec_state;
    uint32_t *free_stack, *sec_next;
    uint32_t owned;             /* bit i: section i was given to the pump */
    uint32_t monitor;
    int tap[2];
    uint32_t gw;                /* guest's write index (outbound) */
    uint32_t gr;                /* guest's read index (inbound) */
    struct gpkt g[MAXG];
    uint32_t ng, head;
    uint64_t comp_q[MAXG];      /* trans_ids owed a completion, in order */
    uint32_t comp_st[MAXG];     /* ... and the NVSP status each must carry */
    uint32_t cq_head, cq_n;
    int bad_w;                  /* the guest published a bad write_index */
    int dead;
    uint8_t *snap_in, *snap_send, *snap_out;
    uint8_t *gmem, *gpa_buf, *snap_gmem, *mg, *arena;
    uint32_t arena_used;
    uint8_t buf[70000];         /* from here on: scratch, not cleared per input */
    uint8_t stage[GPA_FULL + 4096];
    uint8_t gh_stage[GH_MAX + 64];
    uint8_t frame[HVU_GSO_MAX_FRAME + 64];
};

static struct st S;

static uint32_t hdr(uint8_t *ring, uint32_t off) { return rd32le(ring + off); }

/* ---- the guest writes its outbound ring ----------------------------------------------------------- */

static int guest_put_h(struct st *s, const struct gdesc *d, const uint8_t *h, uint32_t hl, const uint8_t *pl,
                       uint32_t plen, int kind)
{
    if (s->ng >= MAXG || s->bad_w)
        return 0;
    uint32_t len = 16 + hl + plen, padded = (len + 7) & ~7u, total = padded + 8;
    uint32_t r = hdr(s->out, 4);
    if (!m_index_ok(r, s->out_d) || m_free(s->gw, r, s->out_d) <= total)
        return 0;
    uint8_t *b = calloc(1, total);
    memcpy(b, d, 16);
    if (hl)
        memcpy(b + 16, h, hl);
    memcpy(b + 16 + hl, pl, plen);
    uint64_t tr = (uint64_t)s->gw << 32;
    memcpy(b + padded, &tr, 8);
    struct gpkt *g = &s->g[s->ng++];
    memset(g, 0, sizeof(*g));
    g->tid = d->trans_id;
    g->off = s->gw;
    g->total = total;
    g->kind = kind;
    g->d = *d;
    memcpy(g->pl, pl, plen < 16 ? plen : 16);
    g->plen = padded - 16 - hl;                              /* the payload as the host sees it: padded */
    if (hl) {
        g->gh = malloc(hl);
        memcpy(g->gh, h, hl);
        g->ghlen = hl;
    }
    s->gw = ring_put_bytes(s->out + HDR, s->out_d, s->gw, b, total);
    wr32le(s->out, s->gw);
    free(b);
    return 1;
}

static int guest_put(struct st *s, const struct gdesc *d, const uint8_t *pl, uint32_t plen, int kind)
{
    return guest_put_h(s, d, NULL, 0, pl, plen, kind);
}

static uint32_t mutate(struct fz *f, uint32_t v)
{
    uint8_t how = fz_u8(f);
    if (how < 236)
        return v;
    if (how < 246)
        return v + (uint32_t)(int8_t)fz_u8(f);
    return fz_u32(f);
}

static uint32_t put_ppi(uint8_t *p, uint32_t type, uint32_t value)
{
    wr32le(p, 16);
    wr32le(p + 4, type);
    wr32le(p + 8, 12);
    wr32le(p + 12, value);
    return 16;
}

/* RNDIS packet messages into sec (room bytes); returns the size */
static uint32_t fill_msgs(struct st *s, struct fz *f, uint8_t *sec, uint32_t room)
{
    uint32_t pos = 0;
    uint32_t nmsg = 1 + (fz_rare(f, 48) ? fz_pick(f, 20) : fz_pick(f, 3));
    uint32_t align = s->p.rndis_align;
    uint8_t *fr = s->frame;
    uint8_t *prev = NULL;
    for (uint32_t i = 0; i < nmsg; i++) {
        if (i > 0 && fz_chance(f, 224)) {                    /* aligned: the padding joins the message before */
            uint32_t next = (pos + align - 1) / align * align;
            if (prev != NULL && next < room)
                wr32le(prev + 4, rd32le(prev + 4) + next - pos);
            pos = next;
        }
        if (pos + 44 >= room)
            break;
        uint8_t ppi[96];
        uint32_t pl = 0;
        uint8_t how = fz_u8(f);
        if ((how & 0x30) == 0x20) {                          /* a control message: after data, or bytes after it */
            static const uint32_t CTL[] = {2, 4, 5, 6, 8, 0x80000002u};
            uint32_t clen = 8 + 4 * fz_pick(f, 16);
            if (clen > room - pos)
                clen = room - pos;
            uint8_t *m = sec + pos;
            memset(m, 0, clen);
            wr32le(m, CTL[fz_pick(f, 6)]);
            wr32le(m + 4, mutate(f, clen));
            prev = m;
            pos += clen;
            continue;
        }
        uint32_t cap = room - pos > 44 + 64 ? room - pos - 44 - 64 : 0;
        if (cap > HVU_GSO_MAX_FRAME + 64)
            cap = HVU_GSO_MAX_FRAME + 64;
        uint32_t flen = 0;
        struct netf nf;
        if (how & 1) {
            uint32_t pay = (how & 0x80) ? fz_range(f, 65000) : fz_range(f, 1600);
            flen = fn_build(f, fr, cap, pay, fz_u8(f), &nf);
            if (flen && (how & 2)) {                         /* checksum request */
                uint32_t v = (nf.v6 ? 2 : 1) | (nf.proto == 6 ? 4 : 8) | nf.l4 << 16 | (fz_rare(f, 64) ? 0x10 : 0);
                pl += put_ppi(ppi + pl, 0, mutate(f, v));
            }
            if (flen && (how & 4) && nf.proto == 6) {        /* LSOv2 */
                uint32_t mss = 1 + fz_range(f, 9000);
                uint32_t v = mss | nf.l4 << 20 | 0x40000000u | (nf.v6 ? 0x80000000u : 0);
                if (fz_chance(f, 128))
                    wr16be_(fr + nf.l3 + (nf.v6 ? 4 : 2), 0);   /* LSO leaves the IP length 0 */
                pl += put_ppi(ppi + pl, 2, mutate(f, v));
            }
        }
        if (flen == 0) {
            flen = (how & 0x80) ? fz_range(f, cap + 1) : fz_range(f, 1600);
            if (flen > cap)
                flen = cap;
            fz_blob(f, fr, flen);
        }
        if (how & 8)
            pl += put_ppi(ppi + pl, 8, fz_u32(f));          /* hash: skipped as NDIS does */
        if (how & 0x40)
            pl += put_ppi(ppi + pl, 6, fz_u32(f));          /* 802.1Q info: the send is Python's */
        if ((how & 0x30) == 0x30) {                          /* a malformed element */
            wr32le(ppi + pl, fz_u8(f));
            wr32le(ppi + pl + 4, fz_pick(f, 3));
            wr32le(ppi + pl + 8, fz_u8(f));
            wr32le(ppi + pl + 12, fz_u32(f));
            pl += 16;
        }
        if (44 + pl > room - pos)
            pl = 0;
        if (44 + pl + flen > room - pos)
            flen = room - pos - 44 - pl;
        uint8_t *m = sec + pos;
        uint32_t mlen = 44 + pl + flen;
        prev = m;
        memset(m, 0, 44);
        wr32le(m, mutate(f, 1));
        wr32le(m + 4, mutate(f, mlen));
        wr32le(m + 8, mutate(f, 36 + pl));
        wr32le(m + 12, mutate(f, flen));
        wr32le(m + 16, mutate(f, 0));
        wr32le(m + 28, mutate(f, pl ? 36 : 0));
        wr32le(m + 32, mutate(f, pl));
        wr32le(m + 36, mutate(f, 0));
        memcpy(m + 44, ppi, pl);
        memcpy(m + 44 + pl, fr, flen);
        pos += mlen;
    }
    return mutate(f, pos);
}

/* RNDIS packet messages into section idx (as much as fits the send buffer); returns the size */
static uint32_t fill_section(struct st *s, struct fz *f, uint32_t idx)
{
    uint64_t base = (uint64_t)idx * s->p.send_section;
    if (base >= s->p.send_size)
        return fz_u16(f);
    return fill_msgs(s, f, s->send + base, (uint32_t)(s->p.send_size - base));
}

static void guest_send(struct st *s, struct fz *f)
{
    uint32_t count = (uint32_t)(s->p.send_size / s->p.send_section);
    uint32_t idx = fz_rare(f, 16) ? fz_u32(f) : fz_range(f, count ? count : 1);
    uint32_t size = fill_section(s, f, idx);
    uint8_t nv[40];
    memset(nv, 0, sizeof(nv));
    uint32_t plen = 40;
    wr32le(nv, 107);
    wr32le(nv + 4, fz_rare(f, 8) ? fz_pick(f, 3) : 0);
    wr32le(nv + 8, fz_rare(f, 4) ? 0xFFFFFFFFu : idx);
    wr32le(nv + 12, size);
    if (fz_rare(f, 8))
        plen = 4 + fz_pick(f, 12);
    uint16_t flags = fz_rare(f, 8) ? 0 : 1;
    uint64_t tid = ((uint64_t)fz_u16(f) << 32) | s->ng;
    struct gdesc d = {6, 2, (uint16_t)((16 + plen + 7) / 8), flags, tid};
    guest_put(s, &d, nv, plen, K_SEND);
}

static int gm_inside(uint64_t pfn) { return pfn >= GM_BASE && pfn - GM_BASE < GM_PAGES; }

/* A GPA-direct send (type 9): RNDIS messages scattered over 1..4 ranges (rarely 60..68) of
 * guest-memory pages picked one by one, a page sometimes outside guest memory, the range header
 * sometimes malformed or too large for the fast path's copy. */
static void guest_gpa_send(struct st *s, struct fz *f)
{
    uint32_t cap = s->p.gpa_buf_len + 64, i, k;
    if (cap > sizeof(s->stage))
        cap = sizeof(s->stage);
    uint32_t size = fill_msgs(s, f, s->stage, cap);
    if (size > cap)
        size = cap;
    uint32_t nr = 1 + (fz_rare(f, 8) ? 59 + fz_pick(f, 10) : fz_pick(f, 4));
    if (nr > size)
        nr = size ? size : 1;
    uint8_t *h = s->gh_stage;
    uint32_t hl = 8, done = 0;
    wr32le(h, 0);
    for (i = 0; i < nr && done < size; i++) {
        uint32_t cnt = i == nr - 1 ? size - done : 1 + fz_range(f, size - done - (nr - 1 - i));
        uint32_t off = fz_chance(f, 128) ? 0 : fz_range(f, 4096);
        uint32_t pages = (off + cnt + 4095) / 4096, left = cnt, o = off, src = done;
        if (hl + 8 + 8 * pages > GH_MAX)
            break;
        wr32le(h + hl, cnt);
        wr32le(h + hl + 4, off);
        for (k = 0; k < pages; k++) {
            uint64_t pfn = GM_BASE + fz_range(f, GM_PAGES);
            uint32_t n = 4096 - o < left ? 4096 - o : left;
            if (fz_rare(f, 4))
                pfn = fz_chance(f, 128) ? GM_BASE - 1 - fz_u8(f) : GM_BASE + GM_PAGES + fz_u16(f);
            memcpy(h + hl + 8 + 8 * k, &pfn, 8);
            if (s->gmem && gm_inside(pfn))
                memcpy(s->gmem + (pfn - GM_BASE) * 4096 + o, s->stage + src, n);
            src += n;
            left -= n;
            o = 0;
        }
        hl += 8 + 8 * pages;
        done += cnt;
    }
    wr32le(h + 4, i);
    if (fz_rare(f, 16)) {                                    /* a malformed header */
        uint8_t bad = fz_u8(f) % 6;
        if (bad == 0)
            wr32le(h + 4, 0);                                /* no range */
        else if (bad == 1 && hl >= 16)
            wr32le(h + 8, 0);                                /* byte_count 0 */
        else if (bad == 2 && hl >= 16)
            wr32le(h + 12, 0x1000 + fz_u16(f));              /* byte_offset past the first page */
        else if (bad == 3 && hl >= 24)
            hl -= 8;                                         /* the last page number missing */
        else if (bad == 4)
            hl = 0;                                          /* no header at all */
        else if (bad == 5) {                                 /* past what the fast path copies */
            uint32_t to = GH_MAX + 8 + 8 * fz_pick(f, 4);
            memset(h + hl, 0, to - hl);
            hl = to;
        }
    }
    uint8_t nv[40];
    memset(nv, 0, sizeof(nv));
    wr32le(nv, 107);
    wr32le(nv + 4, fz_rare(f, 8) ? fz_pick(f, 3) : 0);
    wr32le(nv + 8, fz_rare(f, 8) ? fz_u32(f) : 0xFFFFFFFFu);
    uint32_t plen = fz_rare(f, 8) ? 4 + fz_pick(f, 12) : 40;
    uint16_t flags = fz_rare(f, 8) ? 0 : 1;
    uint64_t tid = ((uint64_t)fz_u16(f) << 32) | s->ng;
    struct gdesc d = {9, (uint16_t)((16 + hl) / 8), (uint16_t)((16 + hl + plen + 7) / 8), flags, tid};
    guest_put_h(s, &d, h, hl, nv, plen, K_GPA);
}

static void guest_other(struct st *s, struct fz *f, int op)
{
    uint8_t pl[64];
    uint32_t plen = fz_pick(f, 9) * 8;
    fz_copy(f, pl, plen);
    struct gdesc d = {11, 2, (uint16_t)((16 + plen) / 8), 0, 0};
    if (op == 0) {                                           /* a receive completion, forged */
        d.trans_id = fz_chance(f, 200) ? fz_pick(f, 2 * NSECT) : fz_u64(f);
        if (fz_chance(f, 160) && plen >= 8) {
            wr32le(pl, 108);
            wr32le(pl + 4, 1);
        }
        guest_put(s, &d, pl, plen, d.trans_id < NSECT && (s->owned >> d.trans_id & 1) ? K_COMP : K_OTHER);
    } else if (op == 1) {                                    /* other packets: Python's */
        static const uint16_t types[] = {6, 7, 9, 11};
        d.type = types[fz_pick(f, 4)];
        d.flags = fz_pick(f, 2);
        d.trans_id = fz_u64(f) | (1ull << 63);  /* no section's index */
        if (d.type == 6 && plen >= 8 && fz_chance(f, 128))
            wr32le(pl, 107);                                 /* 107 too short or for control */
        guest_put(s, &d, pl, plen, K_OTHER);
    } else {                                                 /* a descriptor that breaks VMBUS.md §4 */
        static const uint16_t bad_types[] = {0, 1, 5, 8, 10, 12, 0x8006, 0xFFFF};
        uint8_t w = fz_u8(f) % 5;
        if (w == 0)
            d.type = bad_types[fz_pick(f, 8)];
        else if (w == 1)
            d.flags = (uint16_t)(2 | fz_u16(f));
        else if (w == 2)
            d.offset8 = fz_chance(f, 128) ? fz_pick(f, 2) : (uint16_t)(d.len8 + 1 + fz_pick(f, 4));
        else if (w == 3)
            d.len8 = fz_pick(f, 2);
        else
            d.len8 = (uint16_t)(0xF000 | fz_u16(f));
        guest_put(s, &d, pl, plen, K_BAD);
    }
}

/* ---- the guest reads its inbound ring: completions of its sends ----------------------------------- */

static void guest_read(struct st *s)
{
    uint32_t w = hdr(s->in, 0), d = s->in_d, comp_len = 16 + s->p.nvsp_pad;
    uint8_t *data = s->in + HDR;
    CHECK(m_index_ok(w, d), "inbound write_index %u", w);
    while (s->gr != w) {
        struct gdesc desc;
        uint8_t pkt[16 + PAD_MAX + 8];
        ring_get(data, d, s->gr, &desc, 16);
        uint32_t len = (comp_len + 7) & ~7u;
        CHECK(desc.type == 11 && desc.flags == 0 && desc.offset8 == 2 && desc.len8 * 8u == len,
              "inbound packet type %u flags %u offset8 %u len8 %u", desc.type, desc.flags, desc.offset8, desc.len8);
        CHECK(len + 8 <= m_avail(w, s->gr, d), "inbound packet beyond write_index");
        ring_get(data, d, s->gr, pkt, len + 8);
        CHECK(s->cq_n > 0, "a completion for trans_id %llx, none owed", (unsigned long long)desc.trans_id);
        CHECK(rd32le(pkt + 16) == 108 && rd32le(pkt + 20) == s->comp_st[s->cq_head], "completion NVSP %u status %u,"
              " %u owed", rd32le(pkt + 16), rd32le(pkt + 20), s->comp_st[s->cq_head]);
        for (uint32_t i = 24; i < len; i++)
            CHECK(pkt[i] == 0, "completion padding byte %u", i);
        uint64_t tr;
        memcpy(&tr, pkt + len, 8);
        CHECK(tr == (uint64_t)s->gr << 32, "completion trailer %llx at %u", (unsigned long long)tr, s->gr);
        CHECK(s->cq_n > 0, "a completion for trans_id %llx, none owed", (unsigned long long)desc.trans_id);
        CHECK(desc.trans_id == s->comp_q[s->cq_head], "completion for %llx, expected %llx",
              (unsigned long long)desc.trans_id, (unsigned long long)s->comp_q[s->cq_head]);
        s->cq_head = (s->cq_head + 1) % MAXG;
        s->cq_n--;
        s->gr = (s->gr + len + 8) % d;
    }
    wr32le(s->in + 4, s->gr);
}

/* ---- the model of one send (simhost_tx.c's contract, written again) ------------------------------- */

struct mframe {
    const uint8_t *data;        /* the frame, in the send buffer or the model's gathered copy */
    uint32_t len;
    int off_ppi;                /* checksum or LSO pktinfo given */
};

/* ends/nends: where the ranges of a GPA-direct send end in it (NULL: a section) */
static uint32_t m_parse(struct st *s, const uint8_t *data, uint32_t size, const uint32_t *ends, uint32_t nends,
                        struct mframe *fr, uint32_t *nfr)
{
    uint32_t pos = 0, n = 0;
    while (pos < size) {
        if (size - pos < 8)
            return HVU_SIM_R_RNDIS_LEN;
        uint32_t mtype = rd32le(data + pos), mlen = rd32le(data + pos + 4);
        if (mlen < 8 || mlen > size - pos)
            return HVU_SIM_R_RNDIS_LEN;
        if (mtype != 1)
            return HVU_SIM_R_RNDIS_TYPE;
        if (mlen < 44)
            return HVU_SIM_R_RNDIS_LEN;
        if (n == 16)
            return HVU_SIM_R_TOO_MANY_MSGS;
        if (s->p.strict && n > 0 && (n >= s->p.rndis_max_pkts || pos % s->p.rndis_align))
            return HVU_SIM_R_AGGREGATION;
        uint32_t fld[9];
        memcpy(fld, data + pos + 8, sizeof(fld));
        if (fld[2] || fld[3] || fld[4] || fld[7])
            return HVU_SIM_R_RNDIS_OOB;
        uint32_t body = mlen - 8, doff = fld[0], dlen = fld[1], poff = fld[5], plen = fld[6];
        if (doff < 36 || doff > body || dlen > body - doff || dlen == 0)
            return HVU_SIM_R_RNDIS_DATA;
        int has_c = 0, has_l = 0;
        if (plen) {
            if (poff < 36 || poff > body || plen > body - poff)
                return HVU_SIM_R_RNDIS_PPI;
            uint32_t e = 8 + poff, end = e + plen;
            while (e < end) {
                if (end - e < 12)
                    return HVU_SIM_R_RNDIS_PPI;
                uint32_t sz = rd32le(data + pos + e), po = rd32le(data + pos + e + 8), t = rd32le(data + pos + e + 4);
                if (sz < 12 || sz > end - e || po < 12 || po > sz)
                    return HVU_SIM_R_RNDIS_PPI;
                if (t == 6)                                  /* 802.1Q info: Python tags the frame */
                    return HVU_SIM_R_VLAN;
                if (t == 0 || t == 2) {
                    int *h = t == 0 ? &has_c : &has_l;
                    if (sz - po < 4 || *h)
                        return HVU_SIM_R_RNDIS_PPI;
                    *h = 1;
                }
                e += sz;
            }
        }
        if (ends) {                                          /* [OV]: header + pktinfo in one range */
            uint32_t b = pos + 8, end = ends[nends - 1], need = 36;
            for (uint32_t k = 0; k < nends; k++)
                if (ends[k] > b) {
                    end = ends[k];
                    break;
                }
            if (plen && poff + plen > need)
                need = poff + plen;
            if ((uint64_t)b + need > end)
                return HVU_SIM_R_RNDIS_HDR_RANGE;
        }
        fr[n].data = data + pos + 8 + doff;
        fr[n].len = dlen;
        fr[n].off_ppi = has_c || has_l;
        n++;
        pos += mlen;
    }
    *nfr = n;
    return 0;
}

/* What the pump must do with send g: 0 take it (frames in fr), or the hand-off reason;
 * *maybe_offload: it may also refuse it for its offload pktinfo. */
static uint32_t m_send(struct st *s, const struct gpkt *g, struct mframe *fr, uint32_t *nfr, int *maybe_offload)
{
    *maybe_offload = 0;
    *nfr = 0;
    if (g->plen < 16)
        return HVU_SIM_R_NVSP_SHORT;
    uint32_t chan = rd32le(g->pl + 4), idx = rd32le(g->pl + 8), size = rd32le(g->pl + 12);
    if (chan != 0 || idx == 0xFFFFFFFFu)
        return HVU_SIM_R_CONTROL;
    if (!(g->d.flags & 1))
        return HVU_SIM_R_NO_COMPLETION_FLAG;
    uint64_t base = (uint64_t)idx * s->p.send_section;
    if (base > s->p.send_size || size > s->p.send_size - base)
        return HVU_SIM_R_BAD_SECTION;
    uint32_t r = m_parse(s, s->send + base, size, NULL, 0, fr, nfr);
    if (r)
        return r;
    for (uint32_t i = 0; i < *nfr; i++)
        *maybe_offload |= fr[i].off_ppi;
    return 0;
}

/* What the pump must do with GPA-direct send g: 0 take it (frames in fr, gathered into s->mg),
 * HVU_SIM_R_GPA_PAGE take it and complete it FAILED, or the hand-off reason. */
static uint32_t m_gpa(struct st *s, const struct gpkt *g, struct mframe *fr, uint32_t *nfr, int *maybe_offload)
{
    *maybe_offload = 0;
    *nfr = 0;
    if (g->plen < 16)
        return HVU_SIM_R_NVSP_SHORT;
    if (rd32le(g->pl + 4) != 0)
        return HVU_SIM_R_CONTROL;
    if (rd32le(g->pl + 8) != 0xFFFFFFFFu)
        return HVU_SIM_R_GPA_PYTHON;
    if (!(g->d.flags & 1))
        return HVU_SIM_R_NO_COMPLETION_FLAG;
    if (!s->p.gmem)
        return HVU_SIM_R_GPA_PYTHON;
    const uint8_t *h = g->gh;
    uint32_t hl = g->ghlen, ends[64], offs[64], cnts[64], at[64], pos = 8, total = 0, i, k;
    if (hl < 8 || rd32le(h + 4) == 0)
        return HVU_SIM_R_GPA_HEADER;
    uint32_t nr = rd32le(h + 4);
    if (nr > 64)
        return HVU_SIM_R_GPA_PYTHON;
    for (i = 0; i < nr; i++) {                               /* gparange.rs rules, then the buffer's size */
        if (hl - pos < 8)
            return HVU_SIM_R_GPA_HEADER;
        cnts[i] = rd32le(h + pos);
        offs[i] = rd32le(h + pos + 4);
        if (cnts[i] == 0 || offs[i] > 4095)
            return HVU_SIM_R_GPA_HEADER;
        uint64_t pages = ((uint64_t)offs[i] + cnts[i] + 4095) / 4096;
        if (pages > (hl - pos - 8) / 8)
            return HVU_SIM_R_GPA_HEADER;
        if (cnts[i] > s->p.gpa_buf_len - total)
            return HVU_SIM_R_GPA_PYTHON;
        total += cnts[i];
        ends[i] = total;
        at[i] = pos;
        pos += 8 + 8 * (uint32_t)pages;
    }
    for (i = 0; i < nr; i++)                                 /* every page before any byte */
        for (k = 0; k < (offs[i] + cnts[i] + 4095) / 4096; k++) {
            uint64_t pfn;
            memcpy(&pfn, h + at[i] + 8 + 8 * k, 8);
            if (!gm_inside(pfn))
                return HVU_SIM_R_GPA_PAGE;
        }
    uint32_t o = 0;
    for (i = 0; i < nr; i++) {
        uint32_t left = cnts[i], off = offs[i];
        for (k = 0; left; k++) {
            uint64_t pfn;
            memcpy(&pfn, h + at[i] + 8 + 8 * k, 8);
            uint32_t n = 4096 - off < left ? 4096 - off : left;
            memcpy(s->mg + o, s->gmem + (pfn - GM_BASE) * 4096 + off, n);
            o += n;
            left -= n;
            off = 0;
        }
    }
    uint32_t r = m_parse(s, s->mg, total, ends, nr, fr, nfr);
    if (r)
        return r;
    for (i = 0; i < *nfr; i++)
        *maybe_offload |= fr[i].off_ppi;
    return 0;
}

/* VMBUS.md §4 on the descriptor at the host's read index: the fault reason, or 0 */
static uint32_t m_desc_fault(const struct gpkt *g, uint32_t avail)
{
    uint32_t len = g->d.len8 * 8u, hl = g->d.offset8 * 8u;
    if (len < 16 || len + 8 > avail)
        return HVU_SIM_R_BAD_LEN8;
    if (hl < 16 || hl > len)
        return HVU_SIM_R_BAD_OFFSET8;
    if (g->d.type != 6 && g->d.type != 7 && g->d.type != 9 && g->d.type != 11)
        return HVU_SIM_R_BAD_TYPE;
    if (g->d.flags & ~1u)
        return HVU_SIM_R_BAD_FLAGS;
    return 0;
}

static int is_send(const struct gpkt *g) { return g->d.type == 6 && g->plen >= 4 && rd32le(g->pl) == 107; }
static int is_comp(const struct st *s, const struct gpkt *g)
{
    return g->d.type == 11 && g->tid < NSECT && (s->owned >> g->tid & 1);
}
static int is_gpa(const struct gpkt *g)
{
    return g->d.type == 9 && g->plen >= 4 && rd32le(g->pl) == 107 && g->d.offset8 * 8u - 16 <= GH_MAX;
}

/* ---- one run ---------------------------------------------------------------------------------------- */

static void run(struct st *s)
{
    struct hvu_sim_counters c0 = s->p.c;
    memcpy(s->snap_in, s->in, HDR + s->in_d);
    memcpy(s->snap_send, s->send, s->p.send_size);
    uint8_t *snap_out = s->snap_out;
    memcpy(snap_out, s->out, HDR + s->out_d);
    if (s->gmem)
        memcpy(s->snap_gmem, s->gmem, GM_PAGES * 4096);
    s->arena_used = 0;
    uint32_t in_w0 = hdr(s->in, 0);
    uint32_t rd0 = hdr(s->out, 4);

    int rc = hvu_sim_pump_run(&s->p, -1, 0);

    /* memory the pump must leave alone */
    CHECK(memcmp(snap_out + HDR, s->out + HDR, s->out_d) == 0, "the pump wrote the outbound data area");
    CHECK(memcmp(snap_out, s->out, 4) == 0 && memcmp(snap_out + 12, s->out + 12, HDR - 12) == 0,
          "the pump wrote an outbound header field it does not own");
    CHECK(hdr(s->out, 8) == 0 || rc == HVU_SIM_RUN_FAULT || s->dead, "outbound interrupt_mask left %u",
          hdr(s->out, 8));
    CHECK(memcmp(s->snap_send, s->send, s->p.send_size) == 0, "the pump wrote the send buffer");
    CHECK(!s->gmem || memcmp(s->snap_gmem, s->gmem, GM_PAGES * 4096) == 0, "the pump wrote guest memory");
    for (uint32_t i = 0; i < 1024; i++)
        CHECK(s->recv[i] == 0, "the pump wrote the receive buffer");
    CHECK(memcmp(s->snap_in + 4, s->in + 4, 8) == 0 && memcmp(s->snap_in + 16, s->in + 16, HDR - 16) == 0,
          "the pump wrote an inbound header field it does not own");
    /* the guest's unread completions [gr, w0) are untouched; the pump wrote only from w0 on */
    uint32_t in_w1 = hdr(s->in, 0);
    CHECK(m_index_ok(in_w1, s->in_d), "inbound write_index %u", in_w1);
    uint32_t unread = m_avail(in_w0, s->gr, s->in_d), wrote = m_avail(in_w1, in_w0, s->in_d);
    CHECK(unread + wrote < s->in_d, "the pump filled the inbound ring (%u unread + %u new)", unread, wrote);
    {
        uint32_t n = s->in_d - wrote, first = s->in_d - in_w1 < n ? s->in_d - in_w1 : n;   /* outside [w0, w1) */
        CHECK(memcmp(s->in + HDR + in_w1, s->snap_in + HDR + in_w1, first) == 0 &&
                  memcmp(s->in + HDR, s->snap_in + HDR, n - first) == 0,
              "the pump wrote the inbound ring outside its new packets");
    }
    /* what was consumed */
    uint32_t rd1 = hdr(s->out, 4);
    uint32_t moved = m_avail(rd1, rd0, s->out_d), acc = 0;
    uint64_t sends = 0, comps = 0, frames = 0, gpa_ok = 0, gpa_failed = 0;
    int offl = 0;
    struct mframe fr[16];
    uint32_t nfr;
    uint32_t ne = 0, elen[256];
    const uint8_t *eptr[256];
    int lost = 0;
    while (acc < moved) {
        CHECK(s->head < s->ng, "the pump consumed %u bytes past the guest's packets", moved - acc);
        struct gpkt *g = &s->g[s->head];
        acc += g->total;
        CHECK(acc <= moved, "the pump's read_index %u is inside packet %u", rd1, s->head);
        CHECK(is_send(g) || is_comp(s, g) || is_gpa(g), "the pump consumed packet %u of kind %d", s->head, g->kind);
        if (is_send(g) || is_gpa(g)) {
            int mo;
            uint32_t r = is_send(g) ? m_send(s, g, fr, &nfr, &mo) : m_gpa(s, g, fr, &nfr, &mo);
            uint32_t st = r == HVU_SIM_R_GPA_PAGE ? 2 : 1;
            CHECK(r == 0 || (r == HVU_SIM_R_GPA_PAGE && is_gpa(g)),
                  "the pump took send %u the model hands to Python (reason %u)", s->head, r);
            if (is_gpa(g)) {
                gpa_ok += r == 0;
                gpa_failed += r != 0;
                if (r == 0 && nfr) {                         /* keep the gathered bytes for the tap check */
                    const uint8_t *last = fr[nfr - 1].data + fr[nfr - 1].len;
                    uint32_t used = (uint32_t)(last - s->mg);
                    if (ARENA - s->arena_used < used)
                        lost = 1;
                    else {
                        memcpy(s->arena + s->arena_used, s->mg, used);
                        for (uint32_t i = 0; i < nfr; i++)
                            fr[i].data = s->arena + s->arena_used + (fr[i].data - s->mg);
                        s->arena_used += used;
                    }
                }
            }
            offl |= mo;
            sends++;
            frames += nfr;
            CHECK(s->cq_n < MAXG, "completion queue");
            s->comp_st[(s->cq_head + s->cq_n) % MAXG] = st;
            s->comp_q[(s->cq_head + s->cq_n++) % MAXG] = g->tid;
            for (uint32_t i = 0; i < nfr; i++) {
                if (ne == 256) {
                    lost = 1;
                    break;
                }
                eptr[ne] = fr[i].data;
                elen[ne++] = fr[i].len;
            }
        } else {
            comps++;
        }
        g->who = 1;
        s->head++;
    }
    CHECK(s->p.c.tx_completions - c0.tx_completions == sends, "tx_completions +%llu for %llu sends taken",
          (unsigned long long)(s->p.c.tx_completions - c0.tx_completions), (unsigned long long)sends);
    CHECK(s->p.c.completions_unknown - c0.completions_unknown == comps, "completions_unknown +%llu for %llu",
          (unsigned long long)(s->p.c.completions_unknown - c0.completions_unknown), (unsigned long long)comps);
    CHECK(s->p.c.rx_completions == 0, "a forged completion freed sections");
    CHECK(s->p.c.tx_gpa - c0.tx_gpa == gpa_ok && s->p.c.tx_gpa_rejected - c0.tx_gpa_rejected == gpa_failed,
          "tx_gpa +%llu / tx_gpa_rejected +%llu for %llu / %llu", (unsigned long long)(s->p.c.tx_gpa - c0.tx_gpa),
          (unsigned long long)(s->p.c.tx_gpa_rejected - c0.tx_gpa_rejected), (unsigned long long)gpa_ok,
          (unsigned long long)gpa_failed);
    uint64_t out_frames = (s->p.c.tx_frames - c0.tx_frames) + (s->p.c.tx_net_errors - c0.tx_net_errors);
    if (!offl)
        CHECK(out_frames == frames, "%llu frames out or failed for %llu frames sent", (unsigned long long)out_frames,
              (unsigned long long)frames);
    else
        CHECK(out_frames >= frames, "%llu frames out or failed for %llu frames sent", (unsigned long long)out_frames,
              (unsigned long long)frames);
    /* the tap */
    uint32_t got = 0, vlen = s->p.vnet_hdr ? 12 : 0;
    int exact = !offl && !lost && s->p.c.tx_net_errors == c0.tx_net_errors && s->tap[0] >= 0;
    for (;;) {
        ssize_t n = s->tap[1] >= 0 ? recv(s->tap[1], s->buf, sizeof(s->buf), MSG_DONTWAIT) : -1;
        if (n < 0)
            break;
        CHECK((uint32_t)n >= vlen && (uint32_t)n - vlen <= HVU_GSO_MAX_FRAME, "tap datagram of %zd bytes", n);
        if (exact) {
            CHECK(got < ne, "more frames on the tap than sent");
            static const uint8_t z[12];
            CHECK((uint32_t)n == vlen + elen[got] && memcmp(s->buf, z, vlen) == 0 &&
                      memcmp(s->buf + vlen, eptr[got], elen[got]) == 0,
                  "tap frame %u differs from the data of its RNDIS message", got);
        }
        got++;
    }
    if (exact)
        CHECK(got == frames, "%u frames on the tap, %llu sent", got, (unsigned long long)frames);
    /* why it stopped */
    struct gpkt *g = s->head < s->ng ? &s->g[s->head] : NULL;
    if (rc == HVU_SIM_RUN_FAULT) {
        CHECK(s->p.dead, "FAULT and not dead");
        if (!s->dead) {
            uint32_t w = hdr(s->out, 0);
            uint32_t want;
            if (!m_index_ok(w, s->out_d))
                want = HVU_SIM_R_BAD_WRITE_INDEX;
            else {
                uint32_t avail = m_avail(w, rd1, s->out_d);
                CHECK(g != NULL || avail > 0, "FAULT with nothing to read");
                want = avail < 24 ? HVU_SIM_R_SHORT_AVAIL : g ? m_desc_fault(g, avail) : HVU_SIM_R_SHORT_AVAIL;
            }
            CHECK(want != 0 && s->p.reason == want, "FAULT reason %u (%s), docs/VMBUS.md says %u", s->p.reason,
                  hvu_sim_reason_text(s->p.reason), want);
        }
        s->dead = 1;
    } else {
        CHECK(!s->dead, "a dead pump ran again (%d)", rc);
        CHECK(rc == HVU_SIM_RUN_CONTROL || rc == HVU_SIM_RUN_TIMEOUT || rc == HVU_SIM_RUN_SIGNAL,
              "hvu_sim_pump_run returned %d", rc);
        if (g) {
            uint32_t w = hdr(s->out, 0);
            CHECK(m_index_ok(w, s->out_d) && m_desc_fault(g, m_avail(w, rd1, s->out_d)) == 0,
                  "a packet docs/VMBUS.md refuses was not a fault");
        }
    }
    if (rc == HVU_SIM_RUN_CONTROL) {
        CHECK(g != NULL, "CONTROL with nothing unread");
        CHECK(s->p.c.handoffs == c0.handoffs + 1, "hand-off not counted");
        uint32_t want = HVU_SIM_R_CONTROL;
        int mo = 0;
        CHECK(!is_comp(s, g), "CONTROL at a completion naming a section of the pump's");
        if (is_send(g) || is_gpa(g)) {
            want = is_send(g) ? m_send(s, g, fr, &nfr, &mo) : m_gpa(s, g, fr, &nfr, &mo);
            CHECK(want != HVU_SIM_R_GPA_PAGE, "CONTROL at a GPA-direct send with a page outside guest memory");
            if (want == 0 && mo)
                want = HVU_SIM_R_OFFLOAD;
        }
        CHECK(want != 0 && s->p.reason == want, "CONTROL reason %u (%s), the model says %u", s->p.reason,
              hvu_sim_reason_text(s->p.reason), want);
        /* Python reads exactly that packet */
        wr32le(s->out + 4, (g->off + g->total) % s->out_d);
        g->who = 2;
        s->head++;
    } else if (rc != HVU_SIM_RUN_FAULT && g) {
        CHECK(is_send(g) || is_gpa(g), "the pump stopped before packet %u of kind %d", s->head, g->kind);
        CHECK(s->p.c.tx_wait_ring_full > c0.tx_wait_ring_full, "the pump stopped at a send without waiting for room");
        uint32_t need = ((16 + s->p.nvsp_pad + 7) & ~7u) + 8;
        CHECK(m_free(hdr(s->in, 0), s->gr, s->in_d) <= need, "the pump waited with room in the inbound ring");
        CHECK(hdr(s->in, 12) == need, "pending_send_sz %u, need %u", hdr(s->in, 12), need);
    }
}

/* ---- set-up ------------------------------------------------------------------------------------------ */

static const uint32_t RD[] = {128, 256, 4096, 16384};
static const uint32_t SSECT[] = {256, 2048, 6144, 65536};
static const uint32_t MAXF[] = {60, 1514, 9014, 65535};
static const uint32_t PADS[] = {8, 16, 40, 64};
static const uint32_t LSOM[] = {65535, 62780, 9000, 1500};

static void setup(struct st *s, struct fz *f)
{
    memset(s, 0, offsetof(struct st, buf));
    struct hvu_sim_pump *p = &s->p;
    uint8_t a = fz_u8(f), b = fz_u8(f), c = fz_u8(f), d = fz_u8(f);
    s->out_d = s->in_d = RD[a % 4];                          /* one ring_size for both rings */
    s->out = calloc(1, HDR + s->out_d);
    s->in = calloc(1, HDR + s->in_d);
    uint32_t so = (fz_u16(f) % s->out_d) & ~7u, si = (fz_u16(f) % s->in_d) & ~7u;
    wr32le(s->out, so);
    wr32le(s->out + 4, so);
    wr32le(s->in, si);
    wr32le(s->in + 4, si);
    s->gw = so;
    s->gr = si;
    p->out_ring = s->out;
    p->in_ring = s->in;
    p->ring_size = HDR + s->out_d;
    p->header_size = HDR;
    s->recv = calloc(1, 1024);
    p->recv_buf = s->recv;
    p->recv_size = 1024;
    p->recv_section = 256;
    p->recv_count = NSECT;
    p->send_section = SSECT[b % 4];
    uint32_t count = 1 + (b / 4) % 8;
    p->send_size = (uint64_t)p->send_section * count + ((b & 0x80) ? fz_u16(f) % 4096 : 0);
    s->send = calloc(1, p->send_size);
    p->send_buf = s->send;
    p->max_frame = MAXF[c % 4];
    p->nvsp_pad = PADS[(c / 4) % 4];
    p->strict = (c & 0x10) != 0;
    p->rndis_max_pkts = 1 + (c >> 5);
    p->rndis_align = 1u << (d % 8);
    p->rx_enabled = 0;
    p->rx_batch = 1;
    p->vnet_hdr = (d & 8) != 0;
    p->tap_gso = (d & 16) != 0;
    p->off_tx = fz_u8(f) & 0x7F;
    p->lso_max = (d & 32) ? fz_u32(f) : LSOM[(d >> 6) & 3];
    if (fz_rare(f, 64)) {
        p->monitor_word = &s->monitor;
        p->monitor_bit = fz_pick(f, 32);
    }
    s->sec_state = calloc(NSECT, 1);
    s->free_stack = calloc(NSECT, 4);
    s->sec_next = calloc(NSECT, 4);
    p->sec_state = s->sec_state;
    p->free_stack = s->free_stack;
    p->sec_next = s->sec_next;
    s->scratch = malloc(p->max_frame);
    p->scratch = s->scratch;
    p->scratch_len = p->max_frame;
    s->gso = malloc(HVU_VNET_HLEN + HVU_GSO_MAX_FRAME);
    p->gso_buf = s->gso;
    p->gso_buf_len = HVU_VNET_HLEN + HVU_GSO_MAX_FRAME;
    s->tap[0] = s->tap[1] = -1;
    if (!fz_rare(f, 16)) {
        CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->tap) == 0, "socketpair");
        int big = 4 << 20;
        setsockopt(s->tap[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    }
    p->tap_fd = s->tap[0];
    p->irq = NULL;
    s->snap_in = malloc(HDR + s->in_d);
    s->snap_out = malloc(HDR + s->out_d);
    s->snap_send = malloc(p->send_size);
    uint8_t gm = fz_u8(f);                                   /* guest memory: bit 0 none; bits 1-2 buffer */
    static const uint32_t GPAB[] = {GPA_FULL, 4096, 300, 65536};
    if (!(gm & 1)) {
        s->gmem = calloc(GM_PAGES, 4096);
        s->snap_gmem = malloc(GM_PAGES * 4096);
        p->gmem = s->gmem;
        p->gmem_size = GM_PAGES * 4096;
        p->gmem_first_pfn = GM_BASE;
        p->gpa_buf_len = GPAB[(gm >> 1) & 3];
        s->gpa_buf = malloc(p->gpa_buf_len);                 /* exactly its size: ASan sees any overrun */
        p->gpa_buf = s->gpa_buf;
    }
    s->mg = malloc(GPA_FULL);
    s->arena = malloc(ARENA);
    int rc = hvu_sim_pump_init(p);
    CHECK(rc == 0, "hvu_sim_pump_init refused a valid configuration: %d", rc);
    uint32_t idx[NSECT], n = 0;
    s->owned = fz_u8(f) % (1u << NSECT);                     /* the rest stay Python's */
    for (uint32_t i = 0; i < NSECT; i++)
        if (s->owned >> i & 1)
            idx[n++] = i;
    CHECK(hvu_sim_pump_add_sections(p, idx, n) == (int)n, "hvu_sim_pump_add_sections refused free sections");
}

static void teardown(struct st *s)
{
    for (int i = 0; i < 2; i++)
        if (s->tap[i] >= 0)
            close(s->tap[i]);
    free(s->out);
    free(s->in);
    free(s->recv);
    free(s->send);
    free(s->sec_state);
    free(s->free_stack);
    free(s->sec_next);
    free(s->scratch);
    free(s->gso);
    free(s->snap_in);
    free(s->snap_out);
    free(s->snap_send);
    free(s->gmem);
    free(s->snap_gmem);
    free(s->gpa_buf);
    free(s->mg);
    free(s->arena);
    for (uint32_t i = 0; i < s->ng; i++)
        free(s->g[i].gh);
}

/* ---- vRSS (rss.c) ------------------------------------------------------------------------------ */

/* The steering itself runs on the receive path, which this harness leaves off (rx_enabled 0): the
 * hash and the queue are checked here on frames of every shape (tagged, truncated, IPv4 with
 * options, fragments, IPv6, UDP), each an exact heap block, against a reference: the NDIS hash
 * types (IPv4 / IPv6 addresses, + TCP / UDP ports when enabled and present, never for an IPv4
 * fragment) and the Toeplitz hash computed bit by bit from the key. */
static struct hvu_sim_pump RP;

static uint32_t ref_toeplitz(const uint8_t *key, const uint8_t *in, uint32_t n)
{
    uint32_t h = 0;
    for (uint32_t i = 0; i < n * 8; i++) {
        if (!((in[i / 8] >> (7 - i % 8)) & 1))
            continue;
        uint32_t w = 0;
        for (uint32_t b = 0; b < 32; b++)
            w = w << 1 | ((key[(i + b) / 8] >> (7 - (i + b) % 8)) & 1u);
        h ^= w;
    }
    return h;
}

static uint32_t ref_rss(const uint8_t *key, uint32_t info, const uint8_t *f, uint32_t n, uint32_t *hash)
{
    uint8_t in[36];
    uint32_t at = 14, len, type, et;
    if (n < 14)
        return 0;
    et = (uint32_t)f[12] << 8 | f[13];
    if (et == 0x8100 && n >= 18) {
        et = (uint32_t)f[16] << 8 | f[17];
        at = 18;
    }
    if (et == 0x0800 && n >= at + 20 && f[at] >> 4 == 4) {
        uint32_t ihl = (f[at] & 15u) * 4, lt = f[at + 9] == 6 ? 0x200u : f[at + 9] == 17 ? 0x4000u : 0;
        int frag = (((uint32_t)f[at + 6] << 8 | f[at + 7]) & 0x3FFFu) != 0;
        memcpy(in, f + at + 12, 8);
        len = 8;
        type = 0x100;
        if ((lt & info) && !frag && ihl >= 20 && n >= at + ihl + 4) {
            memcpy(in + 8, f + at + ihl, 4);
            len = 12;
            type = lt;
        }
    } else if (et == 0x86DD && n >= at + 40 && f[at] >> 4 == 6) {
        uint32_t lt = f[at + 6] == 6 ? 0x1000u : f[at + 6] == 17 ? 0x8000u : 0;
        memcpy(in, f + at + 8, 32);
        len = 32;
        type = 0x400;
        if ((lt & info) && n >= at + 44) {
            memcpy(in + 32, f + at + 40, 4);
            len = 36;
            type = lt;
        }
    } else {
        return 0;
    }
    if (!(type & info))
        return 0;
    *hash = ref_toeplitz(key, in, len);
    return type;
}

static void rss_check(struct st *s, struct fz *f)
{
    struct hvu_sim_pump *p = &RP;
    p->rss_on = fz_chance(f, 240);
    p->rss_hash_info = fz_chance(f, 224) ? fz_u16(f) : fz_u32(f);
    p->rss_queues = fz_pick(f, 65);
    p->rss_table_len = fz_chance(f, 240) ? 1 + fz_u8(f) : fz_u16(f);
    uint32_t mul = fz_u8(f), add = fz_u8(f), mod = p->rss_queues + 1 + fz_pick(f, 3);
    for (uint32_t i = 0; i < 256; i++)
        p->rss_table[i] = (uint16_t)((i * mul + add) % mod);
    if (fz_rare(f, 32))
        p->rss_table[fz_u8(f)] = fz_u16(f);
    fz_blob(f, p->rss_key, sizeof(p->rss_key));
    struct netf nf;
    uint32_t how = fz_u8(f);
    uint32_t len = fn_build(f, s->frame, 256, fz_range(f, 64), how, &nf);
    if (len == 0 || fz_rare(f, 48)) {                         /* anything, or cut short */
        uint32_t n = fz_range(f, 128);
        if (len == 0 || n < len)
            len = n;
        if (fz_rare(f, 64))
            fz_blob(f, s->frame, len);
    }
    if (len >= 24 && fz_rare(f, 32)) {                          /* a fragment, another protocol, IHL */
        uint32_t l3 = (how & 2) ? 18 : 14;
        s->frame[l3 + (fz_chance(f, 128) ? 6 : fz_chance(f, 128) ? 9 : 0)] = fz_u8(f);
    }
    uint8_t *fr = malloc(len ? len : 1);                         /* exact: ASan sees a read past it */
    memcpy(fr, s->frame, len);
    uint32_t h = 0, want_h = 0;
    uint32_t t = hvu_sim_rss_hash(p->rss_key, p->rss_hash_info, fr, len, &h);
    uint32_t want = ref_rss(p->rss_key, p->rss_hash_info, fr, len, &want_h);
    CHECK(t == want && (t == 0 || h == want_h), "RSS hash type %#x hash %08x, the reference says %#x %08x", t, h,
          want, want_h);
    uint32_t q = hvu_sim_rss_queue(p, fr, len), want_q = 0;
    if (p->rss_on && p->rss_table_len >= 1 && p->rss_table_len <= 256 && want) {
        want_q = p->rss_table[want_h % p->rss_table_len];
        if (want_q >= p->rss_queues)
            want_q = 0;
    }
    CHECK(q == want_q, "RSS queue %u, the reference says %u", q, want_q);
    free(fr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f;
    fz_init(&f, data, size);
    struct st *s = &S;
    setup(s, &f);
    for (int n = 0; n < MAX_OPS && fz_left(&f) > 0; n++) {
        uint8_t op = fz_u8(&f) % 14;
        if (op <= 3)
            guest_send(s, &f);
        else if (op == 4)
            guest_other(s, &f, 0);
        else if (op == 5)
            guest_other(s, &f, 1);
        else if (op == 6 && fz_rare(&f, 24))
            guest_other(s, &f, 2);
        else if (op == 7) {
            if (fz_rare(&f, 8) && !s->bad_w) {               /* a write_index the host must refuse */
                uint32_t v = fz_u32(&f);
                if (!m_index_ok(v, s->out_d)) {
                    wr32le(s->out, v);
                    s->bad_w = 1;
                }
            } else {
                uint32_t off = fz_range(&f, (uint32_t)s->p.send_size), k = 1 + fz_pick(&f, 8);
                for (uint32_t i = 0; i < k && off + i < s->p.send_size; i++)
                    s->send[off + i] = fz_u8(&f);
            }
        } else if (op == 8)
            guest_read(s);
        else if (op == 12)
            guest_gpa_send(s, &f);
        else if (op == 13)
            rss_check(s, &f);
        else
            run(s);
    }
    for (int i = 0; i < 64 && !s->dead; i++) {                /* the rest, as a guest would wait for */
        guest_read(s);
        run(s);
        if (s->head == s->ng)
            break;
    }
    guest_read(s);
    CHECK(s->cq_n == 0, "%u completions owed at the end", s->cq_n);
    teardown(s);
    return 0;
}
