/* libFuzzer harness: the guest's TX pump (hvu_dp_tx, tx.c / tx_stage.c / tx_gpa.c / offload.c) and
 * its handling of the host's completions (hvu_dp_rx -> hvu_dp_tx_complete) against a hostile host.
 *
 * Real memory and fds as in dp_rx.c: both rings, the send buffer (one heap block of exactly
 * sections x section size), the stage buffer, a SOCK_DGRAM socketpair as the tap (the host side
 * sends frames, with a vnet header when the configuration has one) and another as the irq fd, or a
 * monitor page. The configuration (section size and count across bitmap words, MTU, vnet header,
 * tap offloads, checksum / LSO offloads, hash pktinfo, the host's aggregation limits, ring sizes,
 * a GPA-direct pool of 1-4 slots with shuffled page numbers) comes from the input. The script: frames to the tap (random bytes, or Ethernet/IP/TCP|UDP frames
 * with a vnet header that asks for a checksum or carries a GSO super-frame, every field sometimes
 * wrong, an empty datagram = the end of the tap), completions (valid, duplicate, unknown, for the
 * section being filled, untagged = Python's, with good or bad NVS payloads), received frames (their
 * receive completions compete with the sends for the outbound ring and hold TX back), host drains
 * of the outbound ring, a corrupt outbound read_index, and pump calls with a budget. Frames may
 * carry an 802.1Q tag (sent plain, GPA-direct, as LSO packets: the tag goes into the pktinfo), and
 * the capture hook (trace.c) may be on, to a memfd or /dev/null, its cap large or small (checks:
 * fuzz_trace.h).
 *
 * Invariants (abort on violation), checked after every call:
 *  - a section is never reused while outstanding: every NVS 107 send the pump writes (seen by
 *    scanning the outbound ring right after the call) names a section not in the shadow set of
 *    sections sent and not validly completed since; the bytes of every outstanding section stay
 *    exactly as they were sent (the pump never writes a section the host may be reading);
 *    sections_in_use = outstanding + the one held; the same for GPA-direct slots (a type-9 send
 *    names a slot not outstanding, its bytes stay as sent until completed, gpa_slots_in_use =
 *    outstanding + the one holding a plain tap's frame not sent yet);
 *  - each type-9 send: completion requested, trans_id = tag | GPA bit | slot, reserved 0, one
 *    range at offset 0 of exactly the pages its byte count covers, and those are the slot's pages
 *    of the pool by their page numbers (read back through the numbers, not the index); NVS {107,
 *    data, 0xFFFFFFFF, 0}; the message larger than a section could hold (or, for a plain tap,
 *    sent when no section was free); tx_gpa grows by what the scan saw;
 *  - completions: a valid one (tagged, outstanding, not the held section) frees exactly its section
 *    or slot, a duplicate / unknown / held one frees nothing (GPA ids included); tx_completions, tx_bad_comp and tx_errors
 *    grow by exactly what the shadow says;
 *  - each send: type 0x6, completion requested, trans_id = tag | section, NVS {107, data, section,
 *    size}, size within the section (and the host's aggregate limit when aggregated); the messages in
 *    it tile [0, size) exactly, at most max_packets_per_message of them, each but the first at the
 *    host's alignment; each one's data and per-packet info lie inside it; the pktinfo are the hash
 *    (exactly when configured, with its value), at most one checksum or LSO, each only for an
 *    offload the host enabled and agreeing with the frame (family, protocol, transport offset),
 *    and the 802.1Q one exactly when the tap frame was tagged, with its tag (the frame sent is the
 *    tap frame without those 4 bytes; offsets count from it);
 *    an LSO packet is >= 2 segments, within lso_max and the section, IPv4 checksum 0 and the
 *    length-less pseudo-header sum in TCP; a frame without LSO is within mtu + 18;
 *  - content: a model of the drop rules (length, vnet flags / csum bounds / gso type / gso_size /
 *    header stack, section room) says what becomes of each tap frame, in order: the frames sent are
 *    exactly the kept tap frames (without offloads, byte for byte); with offloads a frame sent whole
 *    differs at most in its requested checksum field (filled by the virtio rule when no pktinfo
 *    asks the host), a GSO frame comes out as consecutive segments / LSO packets with the payload
 *    and TCP sequence where they belong, IP lengths fixed and checksums right for the mode (full,
 *    pseudo-header for the checksum pktinfo, length-less pseudo-header and IPv4 0 for LSO); at the
 *    end the frames dropped equal tx_runt + tx_oversize + tx_vnet_bad;
 *  - each received frame the pump took gets exactly one receive completion (NVS 108, OK or FAILED);
 *  - tx_sends / tx_packets / tx_bytes / tx_lso / tx_csum_ppi grow by what the scan saw; no counter
 *    decreases; the pump never writes the inbound data area or the receive buffer; only 4-byte 1s
 *    on the irq fd or the trigger bit on the monitor page.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "fuzz_net.h"
#include "datapath.h"
#include "fuzz_trace.h"

#define HDR 4096
#define MAX_OPS 300
#define MAXQ 600
#define MAXS 4096
#define MAXP 512
#define TAG (1ull << 63)
#define GBIT (1ull << 62)
#define GPA_SLOT (17u * 4096u)
#define PFN0 0x5000u

struct tframe {
    uint8_t *b;                 /* the frame (after the vnet header) */
    uint32_t len;               /* frame bytes */
    uint32_t dgram;             /* datagram bytes (vnet header included) */
    uint8_t v[12];
};

struct srec {
    uint32_t idx, size;
    int done;                   /* validly completed */
    int gpa;                    /* a type-9 send: idx is the slot */
    uint8_t *snap;              /* the section (slot) as sent */
};

struct hpkt {                   /* a packet the host put in the inbound ring */
    uint64_t tid;
    int control;                /* Python's */
    int consumed;               /* taken by the pump */
    int xfer;                   /* a received frame (transfer pages): owes a receive completion */
    int comps;                  /* receive completions seen for it */
    uint32_t plen;
    uint8_t pl[40];
};

struct st {
    uint32_t tx_d, rx_d;
    uint8_t *tx_mem, *rx_mem;
    struct hvu_ring tx, rx, hw, hr;
    uint8_t *recv, *send, *pkt, *range, *stage, *mon;
    uint32_t sect, count, send_size, mtu, flags, hash, lso_max, agg_pkts, agg_align, agg_size, mon_id, hdr_len;
    int tap[2], irq[2];
    struct hvu_dp *dp;
    int offload, vnet;
    /* tap frames */
    struct tframe q[MAXQ];
    uint32_t nq, ti, seg_next, skipped;
    int eof;                    /* an empty datagram was sent */
    int tx_fault;               /* a bad outbound read_index was written */
    /* sends */
    struct srec r[MAXS];
    uint32_t nr, drained;
    int32_t inflight[HVU_DP_MAX_SECTIONS];
    uint32_t ninflight;
    /* GPA-direct pool */
    uint8_t *gpa;
    uint64_t *pfns;
    uint32_t nslots, gpa_pages, seen_gpa;
    int32_t ginflight[64];
    uint32_t nginflight;
    uint32_t scan_pos;          /* outbound ring position scanned up to */
    uint64_t seen_pkts, seen_bytes, seen_lso, seen_csum;
    /* inbound packets */
    struct hpkt p[MAXP];
    uint32_t np, head;
    uint8_t *snap_in, *snap_recv, snap_mon[4096];
    struct fz_trace tr;
    uint8_t buf[70000];
};

static struct st S;

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/* ---- content: does output frame o come from the tap frames in order? --------------------------- */

enum { M_NONE, M_WHOLE, M_CSUM, M_SEG };

/* how o derives from tap frame t (as a segment only when segs); *seg_off / *seg_pay for segments */
static int derive(struct st *s, const struct tframe *t, const uint8_t *o, uint32_t olen, int segs,
                  uint32_t *seg_off, uint32_t *seg_pay)
{
    if (!segs && olen == t->len && memcmp(o, t->b, olen) == 0)
        return M_WHOLE;
    if (!s->offload)
        return M_NONE;
    uint32_t cs = t->v[6] | t->v[7] << 8, co = t->v[8] | t->v[9] << 8, at = cs + co;
    if (!segs && (t->v[0] & 1) && olen == t->len && at + 2 <= olen && memcmp(o, t->b, at) == 0 &&
        memcmp(o + at + 2, t->b + at + 2, olen - at - 2) == 0)
        return M_CSUM;
    struct netf nf;
    if (segs && (t->v[1] == 1 || t->v[1] == 4) && fn_parse(t->b, t->len, &nf, 1) == 0 && olen >= nf.hdrs && olen <= t->len &&
        memcmp(o, t->b, 12) == 0) {
        uint32_t off = be32(o + nf.l4 + 4) - be32(t->b + nf.l4 + 4), pay = olen - nf.hdrs;
        if (off <= t->len - nf.hdrs && pay <= t->len - nf.hdrs - off &&
            memcmp(o + nf.hdrs, t->b + nf.hdrs + off, pay) == 0) {
            *seg_off = off;
            *seg_pay = pay;
            return M_SEG;
        }
    }
    return M_NONE;
}

/* P_MAYBE: a tagged frame of a plain tap whose message (the tag moved into a 16-byte pktinfo)
 * may or may not fit where it was read: that depends on the held send it joined */
enum { P_DROP, P_WHOLE, P_SEGS, P_MAYBE };

/* 1 when the frame carries an 802.1Q tag the pump moves into the pktinfo (vlan.c) */
static int tagged(const struct tframe *t) { return t->len >= 18 && t->b[12] == 0x81 && t->b[13] == 0; }

/* What the pump must make of tap frame t (tx.c read_frame, tx_stage.c stage_read / stage_prepare /
 * stage_emit, written again): dropped (runt, oversize, vnet header refused), sent whole (as it is
 * or with its checksum filled), or cut into segments / LSO packets. A tagged frame goes 4 bytes
 * shorter behind a 16-byte 802.1Q pktinfo: 12 more message bytes. */
static int predict(struct st *s, const struct tframe *t)
{
    uint32_t vlen = s->vnet ? 12 : 0, len = t->len, limit = s->mtu + 18;
    uint32_t cap = s->nslots && GPA_SLOT > s->sect ? GPA_SLOT : s->sect;   /* the largest message */
    uint32_t tag = tagged(t) ? 12u : 0u;
    if (t->dgram < vlen + 14)
        return P_DROP;                                   /* runt */
    if (!s->offload) {
        /* the largest frame fits a section: the send buffer as ever; else a slot (when there is a pool) */
        int gpa = s->sect - s->hdr_len < limit && s->nslots;
        uint32_t room = s->sect - s->hdr_len >= limit ? s->sect - s->hdr_len : cap - s->hdr_len;
        uint32_t space = room < limit ? room : limit;
        if (len > space)
            return P_DROP;
        if (!tag)
            return P_WHOLE;
        if (gpa)
            return s->hdr_len + len + tag > GPA_SLOT ? P_DROP : P_WHOLE;
        if (len + tag <= space)
            return P_WHOLE;
        return s->hdr_len + len + tag > s->sect ? P_DROP : P_MAYBE;
    }
    if (len > HVU_DP_GSO_MAX)
        return P_DROP;                                   /* larger than the stage */
    uint32_t flags = t->v[0], gso = t->v[1], hdr_len = t->v[2] | t->v[3] << 8, mss = t->v[4] | t->v[5] << 8;
    uint32_t cs = t->v[6] | t->v[7] << 8, co = t->v[8] | t->v[9] << 8;
    uint32_t cut = tag ? 4u : 0u;                        /* the tag's bytes leave the frame */
    if ((flags & ~3u) || ((flags & 1) && (cs < 14 + cut || cs + co + 2 > len)))
        return P_DROP;
    /* sent whole: within the MTU and, without the checksum pktinfo, the section */
    int whole_drop = len - cut > limit || s->hdr_len + len + tag > cap;
    if (gso == 0)
        return whole_drop ? P_DROP : P_WHOLE;
    if ((gso != 1 && gso != 4) || !(flags & 1) || mss == 0 || hdr_len > len)
        return P_DROP;
    struct netf nf;
    if (fn_parse(t->b, len, &nf, 1) < 0 || nf.v6 != (gso == 4) || nf.l4 != cs || co != 16)
        return P_DROP;
    if (len - nf.hdrs <= mss)
        return whole_drop ? P_DROP : P_WHOLE;
    if (nf.hdrs - cut + mss > limit || cap - s->hdr_len - (tag ? 16u : 0u) < nf.hdrs - cut + mss)
        return P_DROP;
    return P_SEGS;
}

/* the checks of one output frame (its 802.1Q tag, if it came in a pktinfo, put back) against
 * its source; ppi: -1 none, 0 checksum, 2 LSO; vlan: the 802.1Q pktinfo value, or -1 */
static void match_frame(struct st *s, const uint8_t *o, uint32_t olen, int ppi, int64_t vlan)
{
    uint32_t off = 0, pay = 0;
    while (s->seg_next == 0 && s->ti < s->nq &&
           (predict(s, &s->q[s->ti]) == P_DROP ||
            (predict(s, &s->q[s->ti]) == P_MAYBE && derive(s, &s->q[s->ti], o, olen, 0, &off, &pay) != M_WHOLE))) {
        s->skipped++;                                    /* dropped: no output */
        s->ti++;
    }
    CHECK(s->ti < s->nq, "a frame of %u bytes was sent that no tap frame explains", olen);
    struct tframe *t = &s->q[s->ti];
    int want = predict(s, t);
    if (want == P_MAYBE)
        want = P_WHOLE;
    CHECK(tagged(t) == (vlan >= 0), "tap frame %u: tagged %d, 802.1Q pktinfo %lld", s->ti, tagged(t), (long long)vlan);
    if (vlan >= 0) {
        uint32_t tci = (uint32_t)t->b[14] << 8 | t->b[15];
        CHECK((uint32_t)vlan == ((tci >> 13) | ((tci >> 12) & 1u) << 3 | (tci & 0xFFFu) << 4),
              "802.1Q pktinfo %#llx for the tag %04x", (long long)vlan, tci);
    }
    int m = derive(s, t, o, olen, want == P_SEGS, &off, &pay);
    if (want == P_WHOLE)
        CHECK(m == M_WHOLE || m == M_CSUM, "tap frame %u (%u bytes) was not sent as it was (frame of %u bytes)",
              s->ti, t->len, olen);
    else
        CHECK(m == M_SEG && off == s->seg_next, "GSO frame %u: a frame of %u bytes is not its segment at %u", s->ti,
              olen, s->seg_next);
    if (m == M_CSUM && ppi < 0) {                        /* finished in software: the virtio rule */
        uint32_t cs = t->v[6] | t->v[7] << 8, co = t->v[8] | t->v[9] << 8;
        uint16_t c = (uint16_t)~fn_fold(fn_sum(0, t->b + cs, t->len - cs));
        CHECK(rd16be_(o + cs + co) == c, "software checksum %04x, expected %04x", rd16be_(o + cs + co), c);
    }
    if (m != M_SEG) {
        s->ti++;
        return;
    }
    struct netf nf;
    fn_parse(t->b, t->len, &nf, 1);
    if (nf.v6)
        CHECK(rd16be_(o + nf.l3 + 4) == olen - nf.l3 - 40, "segment IPv6 payload length");
    else
        CHECK(rd16be_(o + nf.l3 + 2) == olen - nf.l3, "segment IPv4 total length %u for %u bytes",
              rd16be_(o + nf.l3 + 2), olen - nf.l3);
    uint16_t c = rd16be_(o + nf.l4 + 16);
    if (ppi == 2) {
        CHECK(nf.v6 || rd16be_(o + nf.l3 + 10) == 0, "LSO packet with an IPv4 checksum");
        CHECK(c == fn_fold(fn_pseudo(o, &nf, 0)), "LSO packet: TCP checksum is not the length-less pseudo sum");
    } else {
        if (!nf.v6)
            CHECK(fn_fold(fn_sum(0, o + nf.l3, nf.l4 - nf.l3)) == 0xFFFF, "segment: IPv4 header checksum wrong");
        if (ppi == 0)
            CHECK(c == fn_fold(fn_pseudo(o, &nf, olen - nf.l4)), "segment with checksum info: TCP field %04x", c);
        else
            CHECK(fn_l4_ok(o, olen, &nf), "software segment: TCP checksum wrong");
    }
    if (off + pay == t->len - nf.hdrs) {
        s->seg_next = 0;
        s->ti++;
    } else {
        s->seg_next = off + pay;
    }
}

/* ---- one send, found in the outbound ring right after the call that wrote it -------------------- */

static uint32_t lo_lim(const struct st *s) { return s->mtu + 18; }

static void check_message(struct st *s, const uint8_t *m, uint32_t mlen, int last, uint32_t *frame_bytes,
                          int *lso_out, int *csum_out)
{
    CHECK(mlen >= 44, "RNDIS message of %u bytes", mlen);
    uint32_t type = rd32le(m), ml = rd32le(m + 4), doff = rd32le(m + 8), dlen = rd32le(m + 12);
    uint32_t poff = rd32le(m + 28), plen = rd32le(m + 32);
    CHECK(type == 1 && ml == mlen, "RNDIS message type %u msg_len %u in a slot of %u", type, ml, mlen);
    for (int i = 16; i < 28; i++)
        CHECK(m[i] == 0, "RNDIS OOB / VC fields set");
    for (int i = 36; i < 44; i++)
        CHECK(m[i] == 0, "RNDIS reserved fields set");
    CHECK(doff >= 36 && 8 + (uint64_t)doff + dlen <= ml, "data %u+%u outside msg_len %u", doff, dlen, ml);
    CHECK(dlen >= 14, "a frame of %u bytes sent", dlen);
    (void)last;
    int hash = 0, csum = -1, lso = -1;
    int64_t vlan = -1;
    uint32_t csum_v = 0, lso_v = 0;
    if (plen) {
        CHECK(poff >= 36 && 8 + (uint64_t)poff + plen <= 8 + doff, "pktinfo %u+%u not before the data at %u", poff, plen,
              doff);
        const uint8_t *p = m + 8 + poff;
        uint32_t left = plen;
        while (left) {
            CHECK(left >= 12, "pktinfo tail of %u bytes", left);
            uint32_t sz = rd32le(p), pt = rd32le(p + 4), po = rd32le(p + 8);
            CHECK(sz >= 16 && sz <= left && po == 12 && sz == 16, "pktinfo element size %u offset %u", sz, po);
            uint32_t v = rd32le(p + 12);
            if (pt == 8) {
                CHECK(!hash && csum < 0 && lso < 0, "hash pktinfo twice or not first");
                CHECK((s->flags & HVU_DP_F_TX_HASH) && v == s->hash, "hash pktinfo %u unasked or wrong", v);
                hash = 1;
            } else if (pt == 0) {
                CHECK(csum < 0 && lso < 0, "a second checksum / LSO pktinfo");
                csum = 1;
                csum_v = v;
            } else if (pt == 2) {
                CHECK(csum < 0 && lso < 0, "a second checksum / LSO pktinfo");
                lso = 1;
                lso_v = v;
            } else if (pt == 6) {
                CHECK(vlan < 0 && (v >> 16) == 0, "802.1Q pktinfo twice or with reserved bits (%#x)", v);
                vlan = v;
            } else {
                CHECK(0, "pktinfo type %u", pt);
            }
            p += sz;
            left -= sz;
        }
    }
    if (s->flags & HVU_DP_F_TX_HASH)
        CHECK(hash, "no hash pktinfo");
    const uint8_t *fr = m + 8 + doff;
    struct netf nf;
    if (csum > 0) {
        CHECK(s->offload, "checksum pktinfo without tap offloads");
        int tcp = (csum_v & 4) != 0, udp = (csum_v & 8) != 0, v4 = csum_v & 1, v6 = (csum_v & 2) != 0;
        CHECK(tcp != udp && v4 != v6 && (csum_v & ~(0x3FFu << 16 | 0xF)) == 0, "checksum pktinfo %#x", csum_v);
        CHECK(fn_parse(fr, dlen, &nf, 0) == 0 && nf.v6 == (uint32_t)v6 && nf.proto == (tcp ? 6u : 17u) &&
                  nf.l4 == ((csum_v >> 16) & 0x3FF),
              "checksum pktinfo %#x does not fit the frame", csum_v);
        uint32_t need = tcp ? (v6 ? HVU_DP_F_TX_CSUM_TCP6 : HVU_DP_F_TX_CSUM_TCP4)
                            : (v6 ? HVU_DP_F_TX_CSUM_UDP6 : HVU_DP_F_TX_CSUM_UDP4);
        CHECK(s->flags & need, "checksum pktinfo %#x for an offload the host did not enable", csum_v);
    }
    if (lso > 0) {
        uint32_t mss = lso_v & 0xFFFFF, th = (lso_v >> 20) & 0x3FF, v6 = lso_v >> 31;
        CHECK(s->offload && (lso_v & 0x40000000u), "LSO pktinfo %#x", lso_v);
        CHECK(s->flags & (v6 ? HVU_DP_F_TX_LSO6 : HVU_DP_F_TX_LSO4), "LSO for an offload the host did not enable");
        CHECK(fn_parse(fr, dlen, &nf, 1) == 0 && nf.v6 == v6 && nf.l4 == th, "LSO pktinfo %#x does not fit the frame",
              lso_v);
        CHECK(mss > 0 && dlen - nf.hdrs > mss, "LSO packet of one segment (payload %u, mss %u)", dlen - nf.hdrs, mss);
        CHECK(dlen <= s->lso_max, "LSO packet of %u bytes over lso_max %u", dlen, s->lso_max);
    } else {
        CHECK(dlen <= lo_lim(s), "frame of %u bytes over mtu %u + 18", dlen, s->mtu);
    }
    *frame_bytes += dlen;
    *lso_out += lso > 0;
    *csum_out += csum > 0;
    if (vlan >= 0) {                                     /* the tag back where the tap frame had it */
        static uint8_t tagged_frame[HVU_DP_GSO_MAX + 8];
        uint32_t tci = ((uint32_t)vlan & 7u) << 13 | ((uint32_t)vlan >> 3 & 1u) << 12 | ((uint32_t)vlan >> 4 & 0xFFFu);
        CHECK(dlen + 4 <= sizeof(tagged_frame), "tagged frame of %u bytes", dlen + 4);
        memcpy(tagged_frame, fr, 12);
        tagged_frame[12] = 0x81;
        tagged_frame[13] = 0;
        tagged_frame[14] = (uint8_t)(tci >> 8);
        tagged_frame[15] = (uint8_t)tci;
        memcpy(tagged_frame + 16, fr + 12, dlen - 12);
        match_frame(s, tagged_frame, dlen + 4, csum > 0 ? 0 : lso > 0 ? 2 : -1, vlan);
    } else {
        match_frame(s, fr, dlen, csum > 0 ? 0 : lso > 0 ? 2 : -1, -1);
    }
}

static void new_send(struct st *s, const struct hvu_pkt_desc *d, const uint8_t *nvs)
{
    uint32_t idx = rd32le(nvs + 8), size = rd32le(nvs + 12);
    CHECK(d->type == 6 && d->flags == 1 && d->offset8 == 2 && d->len8 == 7, "send descriptor type %u flags %u", d->type,
          d->flags);
    CHECK(rd32le(nvs) == 107 && rd32le(nvs + 4) == 0, "NVS message %u channel %u", rd32le(nvs), rd32le(nvs + 4));
    for (int i = 16; i < 40; i++)
        CHECK(nvs[i] == 0, "NVS reserved byte set");
    CHECK(idx < s->count, "send names section %u of %u", idx, s->count);
    CHECK(d->trans_id == (TAG | idx), "send trans_id %llx for section %u", (unsigned long long)d->trans_id, idx);
    CHECK(s->inflight[idx] < 0, "section %u sent again while outstanding (send %d)", idx, s->inflight[idx]);
    CHECK(size > 0 && size <= s->sect, "send of %u bytes (section %u)", size, s->sect);
    CHECK(s->nr < MAXS, "too many sends");
    const uint8_t *sec = s->send + (size_t)idx * s->sect;
    /* the messages tile [0, size) */
    uint32_t off = 0, n = 0, fb = 0;
    int lso = 0, csum = 0;
    while (off < size) {
        CHECK(size - off >= 44, "%u bytes left in the send", size - off);
        uint32_t ml = rd32le(sec + off + 4);
        CHECK(ml >= 44 && ml <= size - off, "msg_len %u at %u of %u", ml, off, size);
        CHECK(off == 0 || off % s->agg_align == 0, "message at %u not aligned to %u", off, s->agg_align);
        n++;
        CHECK(n <= s->agg_pkts, "%u messages in one send (host allows %u)", n, s->agg_pkts);
        check_message(s, sec + off, ml, off + ml == size, &fb, &lso, &csum);
        off += ml;
    }
    if (n >= 2)
        CHECK(size <= s->agg_size, "an aggregated send of %u bytes (host allows %u)", size, s->agg_size);
    struct srec *r = &s->r[s->nr];
    r->idx = idx;
    r->size = size;
    r->done = 0;
    r->gpa = 0;
    r->snap = malloc(s->sect);
    memcpy(r->snap, sec, s->sect);
    s->inflight[idx] = (int32_t)s->nr++;
    s->ninflight++;
    s->seen_pkts += n;
    s->seen_bytes += fb;
    s->seen_lso += lso;
    s->seen_csum += csum;
}

/* A type-9 send: its header (after the descriptor, offset8 * 8 - 16 bytes) and NVS message. */
static void new_gpa_send(struct st *s, const struct hvu_pkt_desc *d, const uint8_t *hdr, uint32_t hlen,
                         const uint8_t *nvs)
{
    uint64_t slot = d->trans_id & ~(TAG | GBIT);
    CHECK(d->flags == 1 && (d->trans_id & (TAG | GBIT)) == (TAG | GBIT), "type-9 flags %u trans_id %llx", d->flags,
          (unsigned long long)d->trans_id);
    CHECK(s->nslots > 0 && slot < s->nslots, "type-9 send for slot %llu of %u", (unsigned long long)slot, s->nslots);
    CHECK(s->ginflight[slot] < 0, "slot %llu sent again while outstanding", (unsigned long long)slot);
    CHECK(hlen >= 16 && rd32le(hdr) == 0 && rd32le(hdr + 4) == 1 && rd32le(hdr + 12) == 0,
          "type-9 header: reserved %u, %u ranges, offset %u", rd32le(hdr), rd32le(hdr + 4), rd32le(hdr + 12));
    uint32_t count = rd32le(hdr + 8), np = (count + 4095) / 4096;
    CHECK(count > 0 && count <= GPA_SLOT && hlen == 16 + 8 * np, "range of %u bytes with a %u-byte header", count, hlen);
    CHECK(d->len8 * 8u == 16 + hlen + 40, "type-9 packet of %u bytes", d->len8 * 8u);
    CHECK(rd32le(nvs) == 107 && rd32le(nvs + 4) == 0 && rd32le(nvs + 8) == 0xFFFFFFFFu && rd32le(nvs + 12) == 0,
          "type-9 NVS %u %u %x %u", rd32le(nvs), rd32le(nvs + 4), rd32le(nvs + 8), rd32le(nvs + 12));
    for (int i = 16; i < 40; i++)
        CHECK(nvs[i] == 0, "NVS reserved byte set");
    uint8_t *msg = malloc(np * 4096);
    for (uint32_t i = 0; i < np; i++) {                  /* the host's view: page by page number */
        uint64_t pfn;
        memcpy(&pfn, hdr + 16 + 8 * i, 8);
        uint32_t page = UINT32_MAX;
        for (uint32_t k = 0; k < s->gpa_pages; k++)
            if (s->pfns[k] == pfn)
                page = k;
        CHECK(page != UINT32_MAX, "type-9 range names page number %llx outside the pool", (unsigned long long)pfn);
        CHECK(page == slot * (GPA_SLOT / 4096) + i, "type-9 range page %u is pool page %u, not slot %llu's",
              i, page, (unsigned long long)slot);
        memcpy(msg + (size_t)i * 4096, s->gpa + (size_t)page * 4096, 4096);
    }
    CHECK(s->nr < MAXS, "too many sends");
    uint32_t fb = 0;
    int lso = 0, csum = 0;
    check_message(s, msg, count, 1, &fb, &lso, &csum);
    CHECK(s->offload ? count > s->sect : s->sect - s->hdr_len < s->mtu + 18,
          "a message of %u bytes went GPA-direct (section %u, mtu %u, offload %d)", count, s->sect, s->mtu, s->offload);
    struct srec *r = &s->r[s->nr];
    r->idx = (uint32_t)slot;
    r->size = count;
    r->done = 0;
    r->gpa = 1;
    r->snap = msg;
    s->ginflight[slot] = (int32_t)s->nr++;
    s->nginflight++;
    s->seen_pkts++;
    s->seen_gpa++;
    s->seen_bytes += fb;
    s->seen_lso += lso;
    s->seen_csum += csum;
}

/* the packets the pump wrote to the outbound ring since the last scan */
static void scan(struct st *s)
{
    uint32_t w = rd32le(s->tx_mem), d = s->tx_d;
    uint8_t *data = s->tx_mem + HDR;
    CHECK(m_index_ok(w, d), "outbound write_index %u", w);
    while (s->scan_pos != w) {
        struct hvu_pkt_desc desc;
        uint8_t nvs[40];
        ring_get(data, d, s->scan_pos, &desc, 16);
        uint32_t total = (uint32_t)desc.len8 * 8 + 8;
        CHECK(desc.len8 * 8u >= 16 && total <= m_avail(w, s->scan_pos, d), "outbound packet len8 %u", desc.len8);
        if (desc.type == 9) {
            uint8_t hdr[16 + 8 * 32];
            uint32_t hlen = desc.offset8 * 8u - 16;
            CHECK(desc.offset8 >= 2 && hlen <= sizeof(hdr) && desc.len8 * 8u == desc.offset8 * 8u + 40,
                  "type-9 offset8 %u len8 %u", desc.offset8, desc.len8);
            ring_get(data, d, (s->scan_pos + 16) % d, hdr, hlen);
            ring_get(data, d, (s->scan_pos + desc.offset8 * 8u) % d, nvs, 40);
            new_gpa_send(s, &desc, hdr, hlen, nvs);
            s->scan_pos = (s->scan_pos + total) % d;
            continue;
        }
        CHECK(desc.len8 == 7, "outbound packet of %u bytes", desc.len8 * 8u);
        ring_get(data, d, (s->scan_pos + 16) % d, nvs, 40);
        if (desc.type == 11) {                           /* a receive completion */
            uint32_t i = (uint32_t)desc.trans_id;
            CHECK(desc.flags == 0 && desc.offset8 == 2 && rd32le(nvs) == 108 &&
                      (rd32le(nvs + 4) == 1 || rd32le(nvs + 4) == 2),   /* 2: the frame was dropped (dp_rx checks why) */
                  "receive completion flags %u NVS %u status %u", desc.flags, rd32le(nvs), rd32le(nvs + 4));
            CHECK(i < s->np && s->p[i].tid == desc.trans_id && s->p[i].xfer && s->p[i].consumed,
                  "receive completion for %llx, never received", (unsigned long long)desc.trans_id);
            CHECK(s->p[i].comps++ == 0, "second receive completion for %llx", (unsigned long long)desc.trans_id);
        } else {
            new_send(s, &desc, nvs);
        }
        s->scan_pos = (s->scan_pos + total) % d;
    }
}

/* ---- the host: drains, completes, feeds the tap --------------------------------------------------- */

static void host_drain(struct st *s)
{
    struct hvu_pkt_desc d;
    int rc;
    for (rc = hvu_ring_first(&s->hr, &d); rc == 0; rc = hvu_ring_next(&s->hr, &d)) {
        int n = hvu_ring_copyout(&s->hr, s->buf, sizeof(s->buf), &d);
        if (d.type == 11)
            continue;                                    /* a receive completion: checked by scan */
        CHECK(s->drained < s->nr, "outbound packet of %d bytes, %u of %u sends drained", n, s->drained, s->nr);
        struct srec *r = &s->r[s->drained++];
        if (d.type == 9) {
            CHECK(r->gpa && (d.trans_id & ~(TAG | GBIT)) == r->idx && rd32le(s->buf + 16 + 8) == r->size,
                  "the host read a type-9 send other than the one scanned");
            continue;
        }
        CHECK(n == 56 && !r->gpa, "outbound packet %d bytes", n);
        CHECK(rd32le(s->buf + 16 + 8) == r->idx && rd32le(s->buf + 16 + 12) == r->size,
              "the host read a send other than the one scanned");
    }
    CHECK(rc == -EAGAIN, "the host's reader refused the outbound ring: %d", rc);
    hvu_ring_close(&s->hr);
}

static void host_send_inbound(struct st *s, uint64_t tid, const uint8_t *pl, uint32_t plen, int control)
{
    if (s->np >= MAXP)
        return;
    struct hvu_seg seg = {pl, plen};
    if (hvu_ring_send(&s->hw, 11, 0, tid, &seg, plen ? 1 : 0, NULL) != 0)
        return;
    struct hpkt *p = &s->p[s->np++];
    memset(p, 0, sizeof(*p));
    p->tid = tid;
    p->control = control;
    p->plen = plen;
    memcpy(p->pl, pl, plen);
}

/* A received frame: one RNDIS packet in the receive buffer, one transfer-page packet for it. Its
 * receive completion competes with the sends for the outbound ring (and blocks TX while held). */
static void host_receive(struct st *s, struct fz *f)
{
    if (s->np >= MAXP)
        return;
    uint32_t flen = 14 + fz_pick(f, 100);
    memset(s->recv, 0, 44);
    wr32le(s->recv, 1);
    wr32le(s->recv + 4, 44 + flen);
    wr32le(s->recv + 8, 36);
    wr32le(s->recv + 12, flen);
    fz_blob(f, s->recv + 44, flen);
    uint8_t hdr[16], nvs[40];
    memset(hdr, 0, sizeof(hdr));
    memset(nvs, 0, sizeof(nvs));
    hdr[0] = 0xFE;
    hdr[1] = 0xCA;
    wr32le(hdr + 4, 1);
    wr32le(hdr + 8, 44 + flen);
    wr32le(nvs, 107);
    wr32le(nvs + 8, 0xFFFFFFFFu);
    uint64_t tid = (1ull << 40) | s->np;
    struct hvu_seg seg = {nvs, sizeof(nvs)};
    if (hvu_ring_send_hdr(&s->hw, 7, 1, tid, hdr, sizeof(hdr), &seg, 1, NULL) != 0)
        return;
    struct hpkt *p = &s->p[s->np++];
    memset(p, 0, sizeof(*p));
    p->tid = tid;
    p->xfer = 1;
}

static void host_complete(struct st *s, struct fz *f, uint8_t kind)
{
    uint8_t pl[40];
    memset(pl, 0, sizeof(pl));
    uint32_t plen = 40;
    uint8_t pv = fz_u8(f);
    wr32le(pl, pv < 235 ? 108 : 107);
    wr32le(pl + 4, pv < 200 ? 1 : pv < 220 ? 2 : 1);
    if (pv >= 245)
        plen = 0;
    else if (pv >= 240)
        plen = 8;
    uint64_t tid;
    switch (kind % 8) {
    case 0:
    case 1: {                                              /* an outstanding one */
        uint32_t k = fz_u16(f), i;
        if (s->ninflight == 0)
            return;
        k %= s->ninflight;
        for (i = 0; i < s->count; i++)
            if (s->inflight[i] >= 0 && k-- == 0)
                break;
        tid = TAG | i;
        break;
    }
    case 2: {                                              /* one sent before */
        uint32_t k = fz_u16(f);
        if (s->nr == 0)
            return;
        tid = TAG | s->r[k % s->nr].idx;
        break;
    }
    case 3:
        tid = TAG | (fz_rare(f, 64) ? fz_u64(f) : fz_range(f, s->count + 8));
        break;
    case 4: {                                              /* the section being filled */
        uint32_t k = fz_u16(f) % s->count;
        tid = TAG | (uint32_t)(s->dp->held >= 0 ? (uint32_t)s->dp->held : k);
        break;
    }
    case 6: {                                              /* an outstanding GPA-direct slot */
        uint32_t k = fz_u16(f), i;
        if (s->nginflight == 0)
            return;
        k %= s->nginflight;
        for (i = 0; i < s->nslots; i++)
            if (s->ginflight[i] >= 0 && k-- == 0)
                break;
        tid = TAG | GBIT | i;
        break;
    }
    case 7:                                                /* a GPA id: any slot, the one holding a frame, junk */
        tid = TAG | GBIT | (fz_rare(f, 64) ? fz_u64(f) : fz_range(f, s->nslots + 4));
        break;
    default:                                               /* not tagged: a control completion */
        host_send_inbound(s, fz_u32(f), pl, plen, 1);
        return;
    }
    host_send_inbound(s, tid, pl, plen, 0);
}

static void host_frame(struct st *s, struct fz *f)
{
    if (s->nq >= MAXQ || s->eof)
        return;
    uint8_t how = fz_u8(f);
    uint32_t cap = (how & 0x80) ? HVU_DP_GSO_MAX + 64 : s->mtu + 64;
    uint8_t *fr = malloc(cap);
    struct netf nf;
    uint32_t len = 0;
    int l34 = 0;
    if (how & 1) {
        uint32_t pay = (how & 0x80) ? fz_range(f, 65535) : fz_range(f, s->mtu + 8);
        len = fn_build(f, fr, cap, pay, fz_u8(f), &nf);
        l34 = len > 0;
    }
    if (!l34) {
        len = (how & 0x40) ? fz_range(f, cap) : fz_range(f, s->mtu + 32);
        if (len > cap)
            len = cap;
        fz_blob(f, fr, len);
    }
    uint8_t v[12];
    memset(v, 0, 12);
    if (s->vnet) {
        uint8_t vm = fz_u8(f) % 5;
        if (vm == 1 && l34) {                               /* checksum request */
            v[0] = 1;
            v[6] = (uint8_t)nf.l4;
            v[7] = (uint8_t)(nf.l4 >> 8);
            v[8] = nf.proto == 6 ? 16 : 6;
        } else if (vm >= 2 && vm <= 3 && l34) {             /* GSO */
            uint32_t mss = 1 + fz_range(f, s->mtu);
            v[0] = 1;
            v[1] = nf.v6 ? 4 : 1;
            v[2] = (uint8_t)nf.hdrs;
            v[4] = (uint8_t)mss;
            v[5] = (uint8_t)(mss >> 8);
            v[6] = (uint8_t)nf.l4;
            v[7] = (uint8_t)(nf.l4 >> 8);
            v[8] = 16;
        } else if (vm == 4) {
            fz_copy(f, v, 10);
        }
        if (fz_rare(f, 24)) {
            uint32_t at = fz_pick(f, 10);
            v[at] = fz_u8(f);
        }
    }
    uint32_t vlen = s->vnet ? 12 : 0;
    if (vlen + len == 0) {                                  /* an empty datagram would end the tap */
        free(fr);
        return;
    }
    uint8_t *dg = malloc(12 + len);
    memcpy(dg, v, vlen);
    memcpy(dg + vlen, fr, len);
    ssize_t w = send(s->tap[1], dg, vlen + len, MSG_DONTWAIT);
    if (w == (ssize_t)(vlen + len) && vlen + len > 0) {
        struct tframe *t = &s->q[s->nq++];
        t->b = malloc(len ? len : 1);
        memcpy(t->b, fr, len);
        t->len = len;
        t->dgram = vlen + len;
        memcpy(t->v, v, 12);
    }
    free(dg);
    free(fr);
}

/* ---- the guest ----------------------------------------------------------------------------------- */

#define NC 64

struct snapc {
    uint64_t c[NC];
    struct hvu_dp_counters k;
};

static void pre(struct st *s, struct snapc *c)
{
    for (int i = 0; i < hvu_dp_counter_count(); i++)
        c->c[i] = hvu_dp_counter(s->dp, i);
    c->k = s->dp->ctr;
    memcpy(s->snap_in, s->rx_mem + HDR, s->rx_d);
    memcpy(s->snap_recv, s->recv, 256);
    if (s->mon)
        memcpy(s->snap_mon, s->mon, 4096);
}

static void post(struct st *s, struct snapc *c)
{
    for (int i = 0; i < hvu_dp_counter_count(); i++)
        CHECK(hvu_dp_counter(s->dp, i) >= c->c[i], "counter %s went down", hvu_dp_counter_name(i));
    CHECK(memcmp(s->snap_in, s->rx_mem + HDR, s->rx_d) == 0, "the pump wrote the inbound data area");
    CHECK(memcmp(s->snap_recv, s->recv, 256) == 0, "the pump wrote the receive buffer");
    uint64_t p0 = s->seen_pkts, b0 = s->seen_bytes, l0 = s->seen_lso, c0 = s->seen_csum, n0 = s->nr;
    uint32_t g0 = s->seen_gpa;
    if (hvu_ring_fault(&s->tx, NULL) == HVU_OK)
        scan(s);
    struct hvu_dp_counters *a = &s->dp->ctr;
    CHECK(a->tx_sends - c->k.tx_sends == s->nr - n0, "tx_sends +%llu, %llu sends in the ring",
          (unsigned long long)(a->tx_sends - c->k.tx_sends), (unsigned long long)(s->nr - n0));
    CHECK(a->tx_packets - c->k.tx_packets == s->seen_pkts - p0, "tx_packets +%llu, %llu messages sent",
          (unsigned long long)(a->tx_packets - c->k.tx_packets), (unsigned long long)(s->seen_pkts - p0));
    CHECK(a->tx_bytes - c->k.tx_bytes == s->seen_bytes - b0, "tx_bytes");
    CHECK(a->tx_gpa - c->k.tx_gpa == s->seen_gpa - g0, "tx_gpa +%llu, %u type-9 sends seen",
          (unsigned long long)(a->tx_gpa - c->k.tx_gpa), s->seen_gpa - g0);
    CHECK(a->tx_lso - c->k.tx_lso == s->seen_lso - l0, "tx_lso");
    CHECK(a->tx_csum_ppi - c->k.tx_csum_ppi == s->seen_csum - c0, "tx_csum_ppi +%llu, %llu seen",
          (unsigned long long)(a->tx_csum_ppi - c->k.tx_csum_ppi), (unsigned long long)(s->seen_csum - c0));
    /* outstanding sections: untouched, and counted */
    for (uint32_t i = 0; i < s->nr; i++)
        if (!s->r[i].done && s->r[i].gpa)
            CHECK(memcmp(s->r[i].snap, s->gpa + (size_t)s->r[i].idx * GPA_SLOT, s->r[i].size) == 0,
                  "slot %u was written while outstanding", s->r[i].idx);
        else if (!s->r[i].done)
            CHECK(memcmp(s->r[i].snap, s->send + (size_t)s->r[i].idx * s->sect, s->sect) == 0,
                  "section %u was written while outstanding", s->r[i].idx);
    CHECK(hvu_dp_gpa_slots_in_use(s->dp) == s->nginflight + (s->dp->gpa_frame >= 0),
          "gpa_slots_in_use %u, outstanding %u, holding a frame %d", hvu_dp_gpa_slots_in_use(s->dp), s->nginflight,
          s->dp->gpa_frame);
    if (s->dp->gpa_frame >= 0)
        CHECK(s->ginflight[s->dp->gpa_frame] < 0, "the slot holding a frame is outstanding");
    CHECK(hvu_dp_sections_in_use(s->dp) == s->ninflight + (s->dp->held >= 0),
          "sections_in_use %u, outstanding %u, held %d", hvu_dp_sections_in_use(s->dp), s->ninflight, s->dp->held);
    if (s->dp->held >= 0)
        CHECK(s->inflight[s->dp->held] < 0, "the held section %d is outstanding", s->dp->held);
    for (;;) {                                           /* received frames the pump wrote to the tap */
        ssize_t r = recv(s->tap[1], s->buf, sizeof(s->buf), MSG_DONTWAIT);
        if (r < 0)
            break;
        CHECK(r >= 12 + 14 || (!s->vnet && r >= 14), "received frame of %zd bytes on the tap", r);
    }
    for (;;) {
        uint8_t sig[8];
        ssize_t r = recv(s->irq[1], sig, sizeof(sig), MSG_DONTWAIT);
        if (r < 0)
            break;
        CHECK(!s->mon && r == 4 && rd32le(sig) == 1, "irq datagram of %zd bytes", r);
    }
    if (s->mon) {
        uint32_t off = 8 + 8 * (s->mon_id / 32), bit = 1u << (s->mon_id % 32);
        wr32le(s->snap_mon + off, rd32le(s->snap_mon + off) | (rd32le(s->mon + off) & bit));
        CHECK(memcmp(s->snap_mon, s->mon, 4096) == 0, "monitor page changed beyond the trigger bit");
        wr32le(s->mon + off, rd32le(s->mon + off) & ~bit);
    }
}

static int guest_tx(struct st *s, unsigned budget)
{
    struct snapc c;
    pre(s, &c);
    int rc = hvu_dp_tx(s->dp, budget);
    if (rc == -EIO) {
        struct hvu_dp_fault fl;
        hvu_dp_fault(s->dp, &fl);
        CHECK(s->tx_fault && fl.ring == 2 && fl.reason == HVU_BAD_READ_INDEX, "TX -EIO with no corrupt read_index");
    } else if (rc == -EPIPE) {
        CHECK(s->eof, "TX -EPIPE without the end of the tap");
    } else {
        CHECK(rc == HVU_DP_IDLE || rc == HVU_DP_BUDGET || rc == HVU_DP_BLOCKED, "hvu_dp_tx returned %d", rc);
    }
    if (rc == HVU_DP_BLOCKED) {
        int64_t room = hvu_ring_bytes_free(&s->tx);
        uint32_t need = s->nslots ? 16 + 16 + 8 * (GPA_SLOT / 4096) + 40 + 8 : 64;
        CHECK(room <= need || hvu_dp_sections_in_use(s->dp) == s->count || hvu_dp_pending_completions(s->dp) > 0 ||
                  (s->nslots && hvu_dp_gpa_slots_in_use(s->dp) == s->nslots),
              "BLOCKED with %lld ring bytes free and %u of %u "
              "sections in use", (long long)room, hvu_dp_sections_in_use(s->dp), s->count);
    }
    post(s, &c);
    return rc;
}

static int guest_rx(struct st *s, unsigned budget)
{
    struct snapc c;
    pre(s, &c);
    uint64_t ring0 = s->rx.ctr.rx_packets;
    int held = s->dp->held, gframe = s->dp->gpa_frame;
    int rc = hvu_dp_rx(s->dp, budget);
    CHECK(rc >= 0 || (rc == -EIO && s->tx_fault), "hvu_dp_rx returned %d", rc);
    uint32_t consumed = (uint32_t)(s->rx.ctr.rx_packets - ring0);
    uint64_t good = 0, bad = 0, errs = 0;
    for (uint32_t i = 0; i < consumed; i++) {
        CHECK(s->head < s->np, "the pump consumed more than was sent");
        struct hpkt *p = &s->p[s->head++];
        CHECK(!p->control, "the pump consumed an untagged completion");
        p->consumed = 1;
        if (p->xfer)
            continue;                                    /* its completion shows up in the scan */
        uint64_t idx = p->tid & ~TAG;
        if (p->tid & GBIT) {
            uint64_t g = p->tid & ~(TAG | GBIT);
            if (g < s->nslots && s->ginflight[g] >= 0 && (int64_t)g != gframe) {
                good++;
                s->r[s->ginflight[g]].done = 1;
                s->ginflight[g] = -1;
                s->nginflight--;
                if (p->plen < 8 || rd32le(p->pl) != 108 || rd32le(p->pl + 4) != 1)
                    errs++;
            } else {
                bad++;
            }
        } else if (idx < s->count && s->inflight[idx] >= 0 && (int64_t)idx != held) {
            good++;
            s->r[s->inflight[idx]].done = 1;
            s->inflight[idx] = -1;
            s->ninflight--;
            if (p->plen < 8 || rd32le(p->pl) != 108 || rd32le(p->pl + 4) != 1)
                errs++;
        } else {
            bad++;
        }
    }
    struct hvu_dp_counters *a = &s->dp->ctr;
    CHECK(a->tx_completions - c.k.tx_completions == good, "tx_completions +%llu, %llu valid",
          (unsigned long long)(a->tx_completions - c.k.tx_completions), (unsigned long long)good);
    CHECK(a->tx_bad_comp - c.k.tx_bad_comp == bad, "tx_bad_comp +%llu, %llu invalid",
          (unsigned long long)(a->tx_bad_comp - c.k.tx_bad_comp), (unsigned long long)bad);
    CHECK(a->tx_errors - c.k.tx_errors == errs, "tx_errors");
    if (rc == HVU_DP_CONTROL) {
        CHECK(s->head < s->np && s->p[s->head].control, "CONTROL before a packet of the pump's");
        struct hvu_pkt_desc d;
        CHECK(hvu_ring_peek(&s->rx, &d) == 0 && d.trans_id == s->p[s->head].tid, "Python's packet not at the head");
        hvu_ring_consume(&s->rx);
        hvu_ring_close(&s->rx);
        s->head++;
    } else if (rc == HVU_DP_IDLE) {
        CHECK(s->head == s->np, "IDLE with %u inbound packets left", s->np - s->head);
    }
    post(s, &c);
    return rc;
}

/* ---- set-up --------------------------------------------------------------------------------------- */

static const uint32_t TXD[] = {72, 128, 256, 1024, 16384, 65536};
static const uint32_t SECT[] = {128, 256, 1024, 2048, 6144};
static const uint32_t MTU[] = {68, 576, 1500, 9000, 65535};
static const uint32_t LSOMAX[] = {0, 1500, 9000, 62780, 65535, 131072, 200, 0};
static const uint32_t AGGP[] = {0, 1, 2, 3, 8, 32};
static const uint32_t AGGA[] = {0, 1, 8, 64, 4096, 4};

static void setup(struct st *s, struct fz *f)
{
    memset(s, 0, offsetof(struct st, buf));
    for (uint32_t i = 0; i < HVU_DP_MAX_SECTIONS; i++)
        s->inflight[i] = -1;
    for (uint32_t i = 0; i < 64; i++)
        s->ginflight[i] = -1;
    uint8_t a = fz_u8(f), b = fz_u8(f), c = fz_u8(f), d = fz_u8(f), e = fz_u8(f);
    s->tx_d = TXD[a % 6];
    if ((e & 0x40) && s->tx_d < 256)
        s->tx_d = 256;                                      /* with a pool: room for one type-9 packet */
    s->rx_d = (a & 0x80) ? 16384 : 4096;
    s->vnet = (d & 1) != 0;
    s->offload = s->vnet && (d & 2);
    s->flags = (s->vnet ? HVU_DP_F_VNET_HDR : 0) | (s->offload ? HVU_DP_F_TAP_OFFLOAD : 0);
    if (s->offload)
        s->flags |= (uint32_t)(e & 0x3F) << 5;              /* CSUM_TCP4 .. LSO6 */
    if (d & 4) {
        s->flags |= HVU_DP_F_TX_HASH;
        s->hash = fz_u32(f);
    }
    s->hdr_len = 44 + ((s->flags & HVU_DP_F_TX_HASH) ? 16 : 0);
    s->sect = SECT[b % 5];
    if (s->offload && s->sect < s->hdr_len + 32 + 128)
        s->sect = 256;
    s->count = 1 + (fz_rare(f, 16) ? fz_u16(f) % 200 : (b / 5) % 70);
    s->send_size = s->sect * s->count + (c & 0x80 ? fz_u8(f) : 0);
    s->mtu = MTU[c % 5];
    s->lso_max = (c & 0x40) ? fz_u32(f) : LSOMAX[(c >> 3) & 7];
    uint8_t g = fz_u8(f);
    s->agg_pkts = AGGP[g % 6];
    s->agg_align = AGGA[(g / 6) % 6];
    uint32_t agg_bytes = (g & 0x80) ? fz_u16(f) : 0;
    s->tx_mem = calloc(1, HDR + s->tx_d);
    s->rx_mem = calloc(1, HDR + s->rx_d);
    uint32_t so = (fz_u16(f) % s->tx_d) & ~7u, si = (fz_u16(f) % s->rx_d) & ~7u;
    wr32le(s->tx_mem, so);
    wr32le(s->tx_mem + 4, so);
    wr32le(s->rx_mem, si);
    wr32le(s->rx_mem + 4, si);
    s->scan_pos = so;
    CHECK(hvu_ring_attach(&s->tx, s->tx_mem, HDR + s->tx_d, HDR, HVU_RING_TX) == 0, "attach");
    CHECK(hvu_ring_attach(&s->rx, s->rx_mem, HDR + s->rx_d, HDR, HVU_RING_RX) == 0, "attach");
    CHECK(hvu_ring_attach(&s->hw, s->rx_mem, HDR + s->rx_d, HDR, HVU_RING_TX) == 0, "attach");
    CHECK(hvu_ring_attach(&s->hr, s->tx_mem, HDR + s->tx_d, HDR, HVU_RING_RX) == 0, "attach");
    s->recv = calloc(1, 256);
    s->send = calloc(1, s->send_size);
    s->pkt = malloc(4096);
    s->range = malloc(256);
    s->stage = s->offload ? malloc(12 + HVU_DP_GSO_MAX) : NULL;
    if (d & 8) {
        s->mon = calloc(1, 4096);
        s->mon_id = fz_u8(f) % 128;
    }
    if (e & 0x40) {                                         /* a GPA-direct pool: 1-4 slots, shuffled pages */
        s->nslots = 1 + fz_pick(f, 4);
        s->gpa_pages = s->nslots * (GPA_SLOT / 4096) + fz_pick(f, 3);
        s->gpa = calloc(s->gpa_pages, 4096);
        s->pfns = malloc(sizeof(uint64_t) * s->gpa_pages);
        uint32_t rot = fz_u8(f);                            /* pages rotated and reversed: no page */
        for (uint32_t k = 0; k < s->gpa_pages; k++)         /* number follows from its index */
            s->pfns[k] = PFN0 + (s->gpa_pages - 1 - (k + rot) % s->gpa_pages);
    }
    s->snap_in = malloc(s->rx_d);
    s->snap_recv = malloc(256);
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->tap) == 0, "socketpair");
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s->irq) == 0, "socketpair");
    int big = 4 << 20;
    setsockopt(s->tap[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct hvu_dp_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.tx_ring = &s->tx;
    cfg.rx_ring = &s->rx;
    cfg.recv_buf = s->recv;
    cfg.recv_buf_size = 256;
    cfg.recv_section_size = 256;
    cfg.send_buf = s->send;
    cfg.send_buf_size = s->send_size;
    cfg.send_section_size = s->sect;
    cfg.send_section_count = s->count;
    cfg.pkt_buf = s->pkt;
    cfg.pkt_buf_size = 4096;
    cfg.range_buf = s->range;
    cfg.range_buf_size = 256;
    cfg.tap_fd = s->tap[0];
    cfg.irq_fd = s->irq[0];
    cfg.monitor_page = s->mon;
    cfg.monitor_id = s->mon_id;
    cfg.mtu = s->mtu;
    cfg.flags = s->flags;
    cfg.tx_hash_value = s->hash;
    cfg.tx_stage = s->stage;
    cfg.tx_stage_size = s->stage ? 12 + HVU_DP_GSO_MAX : 0;
    cfg.lso_max_size = s->lso_max;
    cfg.tx_agg_packets = s->agg_pkts;
    cfg.tx_agg_align = s->agg_align;
    cfg.tx_agg_bytes = agg_bytes;
    cfg.gpa_buf = s->gpa;
    cfg.gpa_buf_size = s->gpa_pages * 4096;
    cfg.gpa_pfns = s->pfns;
    cfg.gpa_slot_size = s->nslots ? GPA_SLOT : 0;
    s->agg_pkts = s->agg_pkts > 1 ? s->agg_pkts : 1;
    s->agg_align = s->agg_align > 1 ? s->agg_align : 1;
    s->agg_size = agg_bytes && agg_bytes < s->sect ? agg_bytes : s->sect;
    s->dp = calloc(1, hvu_dp_sizeof());
    int rc = hvu_dp_init(s->dp, &cfg);
    CHECK(rc == 0, "hvu_dp_init refused a valid configuration: %d", rc);
    if (d & 0x10)                                           /* the capture hook: frames read and received */
        fz_trace_on(&s->tr, f, s->dp);
}

static void teardown(struct st *s)
{
    /* tap reads as read (runts and frames too long for the room included), received frames */
    fz_trace_check(&s->tr, 1u << HVU_TRACE_IN | 1u << HVU_TRACE_OUT, 0, HVU_TRACE_MAX_DATA);
    fz_trace_off(&s->tr);
    for (uint32_t i = 0; i < s->nq; i++)
        free(s->q[i].b);
    for (uint32_t i = 0; i < s->nr; i++)
        free(s->r[i].snap);
    for (int i = 0; i < 2; i++) {
        close(s->tap[i]);
        close(s->irq[i]);
    }
    free(s->tx_mem);
    free(s->rx_mem);
    free(s->recv);
    free(s->send);
    free(s->pkt);
    free(s->range);
    free(s->stage);
    free(s->mon);
    free(s->snap_in);
    free(s->snap_recv);
    free(s->gpa);
    free(s->pfns);
    free(s->dp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f;
    fz_init(&f, data, size);
    struct st *s = &S;
    setup(s, &f);
    struct hvu_dp_counters start = s->dp->ctr;
    for (int n = 0; n < MAX_OPS && fz_left(&f) > 0; n++) {
        uint8_t op = fz_u8(&f) % 16;
        if (op <= 3) {
            host_frame(s, &f);
        } else if (op <= 6) {
            host_complete(s, &f, fz_u8(&f));
        } else if (op == 7) {
            host_drain(s);
        } else if (op <= 10) {
            guest_tx(s, 1 + (fz_chance(&f, 160) ? fz_pick(&f, 8) : fz_u8(&f)));
        } else if (op <= 12) {
            guest_rx(s, 1 + fz_pick(&f, 32));
        } else if (op == 13 && fz_rare(&f, 8)) {
            if (fz_chance(&f, 128)) {
                uint32_t v = fz_u32(&f);
                if (!m_index_ok(v, s->tx_d)) {               /* a read_index the pump must refuse */
                    wr32le(s->tx_mem + 4, v);
                    s->tx_fault = 1;
                }
            } else if (s->nq < MAXQ && !s->eof) {           /* an empty datagram: the tap's end */
                if (send(s->tap[1], "", 0, MSG_DONTWAIT) == 0)
                    s->eof = 1;
            }
        } else if (op == 14) {
            host_drain(s);
        } else if (op == 15) {
            host_receive(s, &f);
        }
    }
    /* final flush: complete everything, run both directions until the tap is empty and nothing is
     * owed (or the outbound ring was refused: then nothing more can go out) */
    int rc = 0, quiet = 0, idle = 0;
    uint64_t progress = ~0ull;
    for (int i = 0; i < 3000 && idle < 3 && hvu_ring_fault(&s->tx, NULL) == HVU_OK; i++) {
        uint64_t now = s->dp->ctr.tx_packets + s->dp->ctr.tx_completions + s->dp->ctr.rx_xfer + s->head + s->np +
                       s->dp->ctr.tx_runt + s->dp->ctr.tx_oversize + s->dp->ctr.tx_vnet_bad + s->drained;
        idle = now == progress ? idle + 1 : 0;           /* stuck (e.g. no room left to complete): stop */
        progress = now;
        host_drain(s);
        for (uint32_t k = 0; k < s->count && s->np < MAXP; k++)
            if (s->inflight[k] >= 0) {
                uint8_t pl[40] = {108, 0, 0, 0, 1};
                int already = 0;
                for (uint32_t j = s->head; j < s->np; j++)
                    already |= !s->p[j].control && !s->p[j].xfer && s->p[j].tid == (TAG | k);
                if (!already)
                    host_send_inbound(s, TAG | k, pl, 40, 0);
            }
        for (uint32_t k = 0; k < s->nslots && s->np < MAXP; k++)
            if (s->ginflight[k] >= 0) {
                uint8_t pl[40] = {108, 0, 0, 0, 1};
                int already = 0;
                for (uint32_t j = s->head; j < s->np; j++)
                    already |= !s->p[j].control && !s->p[j].xfer && s->p[j].tid == (TAG | GBIT | k);
                if (!already)
                    host_send_inbound(s, TAG | GBIT | k, pl, 40, 0);
            }
        int r = guest_rx(s, 256);
        if (r == HVU_DP_CONTROL)
            continue;
        rc = guest_tx(s, 256);
        quiet = s->head == s->np && hvu_dp_pending_completions(s->dp) == 0;
        if (quiet && (rc == HVU_DP_IDLE || rc == -EPIPE))
            break;
    }
    int dead = hvu_ring_fault(&s->tx, NULL) != HVU_OK;
    if (quiet && !dead)
        for (uint32_t i = 0; i < s->np; i++)
            CHECK(!s->p[i].xfer || s->p[i].comps == s->p[i].consumed, "received packet %u: %d receive completions", i,
                  s->p[i].comps);
    if (quiet && rc == HVU_DP_IDLE && !s->eof && !dead) {
        CHECK(s->seg_next == 0, "a GSO frame was left half sent");
        uint64_t drops = (s->dp->ctr.tx_runt - start.tx_runt) + (s->dp->ctr.tx_oversize - start.tx_oversize) +
                         (s->dp->ctr.tx_vnet_bad - start.tx_vnet_bad);
        uint64_t skipped = s->skipped + (s->nq - s->ti);
        for (uint32_t i = s->ti; i < s->nq; i++)
            CHECK(predict(s, &s->q[i]) == P_DROP || predict(s, &s->q[i]) == P_MAYBE, "tap frame %u (%u bytes) never sent",
                  i, s->q[i].len);
        CHECK(skipped == drops, "%llu tap frames not sent, %llu drops counted", (unsigned long long)skipped,
              (unsigned long long)drops);
    }
    teardown(s);
    return 0;
}
