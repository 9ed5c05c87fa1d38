/* Frame and checksum helpers shared by the data-path harnesses (dp_rx.c, dp_tx.c, simhost_tx.c).
 *
 * What lives here: an Internet checksum (RFC 1071) written again for the harnesses, and a builder
 * of Ethernet [+ 802.1Q] + IPv4 | IPv6 + TCP | UDP frames whose lengths agree (so the code under
 * test gets past its header parsing) with checksums right or wrong as the input says. No state.
 */
#ifndef HVU_FUZZ_NET_H
#define HVU_FUZZ_NET_H

#include "fuzz_common.h"

static inline uint64_t fn_sum(uint64_t s, const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}

static inline uint16_t fn_fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)s;
}

struct netf {
    uint32_t len, l3, l4, hdrs, v6, proto;
};

/* pseudo-header sum of the frame's IP header for an L4 length */
static inline uint64_t fn_pseudo(const uint8_t *fr, const struct netf *nf, uint32_t l4len)
{
    if (nf->v6)
        return fn_sum(0, fr + nf->l3 + 8, 32) + (l4len >> 16) + (l4len & 0xFFFF) + nf->proto;
    return fn_sum(0, fr + nf->l3 + 12, 8) + l4len + nf->proto;
}

/* 1 if the L4 checksum of fr[0..len) (transport from nf->l4 to len) verifies */
static inline int fn_l4_ok(const uint8_t *fr, uint32_t len, const struct netf *nf)
{
    uint32_t l4len = len - nf->l4;
    return fn_fold(fn_pseudo(fr, nf, l4len) + fn_sum(0, fr + nf->l4, l4len)) == 0xFFFF;
}

/* Ethernet [+ one 802.1Q tag] + IPv4 | IPv6 [+ TCP when tcp]: hvu_off_parse's rules, written again.
 * 0 and nf filled (hdrs = end of the TCP header, or l4), or -1. */
static inline int fn_parse(const uint8_t *f, uint32_t len, struct netf *nf, int tcp)
{
    if (len < 14)
        return -1;
    uint32_t l3 = 14, et = rd16be_(f + 12);
    if (et == 0x8100) {
        if (len < 18)
            return -1;
        et = rd16be_(f + 16);
        l3 = 18;
    }
    if (et == 0x0800) {
        if (len < l3 + 20 || (f[l3] >> 4) != 4 || (f[l3] & 15) * 4u < 20 || len < l3 + (f[l3] & 15) * 4u)
            return -1;
        nf->v6 = 0;
        nf->proto = f[l3 + 9];
        nf->l4 = l3 + (f[l3] & 15) * 4u;
    } else if (et == 0x86DD) {
        if (len < l3 + 40 || (f[l3] >> 4) != 6)
            return -1;
        nf->v6 = 1;
        nf->proto = f[l3 + 6];
        nf->l4 = l3 + 40;
    } else {
        return -1;
    }
    nf->l3 = l3;
    nf->hdrs = nf->l4;
    nf->len = len;
    if (tcp) {
        if (nf->proto != 6 || len < nf->l4 + 20)
            return -1;
        uint32_t doff = (f[nf->l4 + 12] >> 4) * 4u;
        if (doff < 20 || len < nf->l4 + doff)
            return -1;
        nf->hdrs = nf->l4 + doff;
    }
    return 0;
}

/* Builds a frame of `payload` L4 payload bytes into out (cap bytes); returns its length (0 if it
 * would not fit). Options (bits of `how`): 1 IPv6, 2 VLAN tag, 4 UDP, 8 correct checksums,
 * 16 IP/TCP options. */
static inline uint32_t fn_build(struct fz *f, uint8_t *out, uint32_t cap, uint32_t payload, uint32_t how,
                                struct netf *nf)
{
    uint32_t v6 = how & 1, vlan = (how >> 1) & 1, udp = (how >> 2) & 1, good = (how >> 3) & 1, opts = (how >> 4) & 1;
    uint32_t l3 = vlan ? 18 : 14;
    uint32_t iphl = v6 ? 40 : 20 + (opts ? 4 * fz_pick(f, 4) : 0);
    uint32_t thl = udp ? 8 : 20 + (opts ? 4 * fz_pick(f, 6) : 0);
    uint32_t l4 = l3 + iphl, hdrs = l4 + thl, len = hdrs + payload;
    if (len > cap)
        return 0;
    memset(out, 0, hdrs);
    fz_copy(f, out, 12);                                /* MAC addresses */
    if (vlan) {
        wr16be_(out + 12, 0x8100);
        wr16be_(out + 14, fz_u16(f) & 0x0FFF);
    }
    wr16be_(out + l3 - 2, v6 ? 0x86DD : 0x0800);
    uint8_t *ip = out + l3, *t = out + l4;
    uint32_t proto = udp ? 17 : 6;
    if (v6) {
        ip[0] = 0x60;
        wr16be_(ip + 4, thl + payload);
        ip[6] = (uint8_t)proto;
        ip[7] = 64;
        fz_copy(f, ip + 8, 32);
    } else {
        ip[0] = (uint8_t)(0x40 | iphl / 4);
        wr16be_(ip + 2, iphl + thl + payload);
        wr16be_(ip + 4, fz_u16(f));
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = (uint8_t)proto;
        fz_copy(f, ip + 12, 8);
        for (uint32_t i = 20; i < iphl; i++)
            ip[i] = 1;                                  /* NOP options */
        if (good)
            wr16be_(ip + 10, (uint16_t)~fn_fold(fn_sum(0, ip, iphl)));
        else
            wr16be_(ip + 10, fz_u16(f));
    }
    fz_copy(f, t, 4);                                   /* ports */
    if (udp) {
        wr16be_(t + 4, thl + payload);
    } else {
        fz_copy(f, t + 4, 8);                           /* seq, ack */
        t[12] = (uint8_t)((thl / 4) << 4);
        t[13] = fz_u8(f);                               /* flags: FIN/PSH/CWR as the input says */
        wr16be_(t + 14, 0xFFFF);
        for (uint32_t i = 20; i < thl; i++)
            t[i] = 1;
    }
    fz_blob(f, out + hdrs, payload);
    nf->len = len;
    nf->l3 = l3;
    nf->l4 = l4;
    nf->hdrs = hdrs;
    nf->v6 = v6;
    nf->proto = proto;
    uint32_t coff = l4 + (udp ? 6 : 16);
    if (good) {
        wr16be_(out + coff, 0);
        uint16_t c = (uint16_t)~fn_fold(fn_pseudo(out, nf, len - l4) + fn_sum(0, out + l4, len - l4));
        if (udp && c == 0)
            c = 0xFFFF;
        wr16be_(out + coff, c);
    } else {
        wr16be_(out + coff, fz_u16(f));
    }
    return len;
}

#endif
