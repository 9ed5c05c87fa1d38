/* NDIS task offloads of the emulated host's C data path: checksums, LSOv2 -> GSO, software TCP
 * segmentation, vRSC fix-up, receive checksum marks. The rules (and their public sources) are
 * hvuio/sim/host_offload.py's; tests drive both and compare bytes. Frames are caller-owned private
 * copies (never guest memory when modified); every offset is checked against the frame length
 * before use. No allocation, no I/O. */
#include <string.h>

#include "simhost.h"
#include "offload.h"

#define ETH_HLEN 14u
#define IPPROTO_TCP 6u
#define IPPROTO_UDP 17u
#define TXCSUM_IPV4 0x1u
#define TXCSUM_IPV6 0x2u
#define TXCSUM_TCP 0x4u
#define TXCSUM_UDP 0x8u
#define TXCSUM_IP 0x10u
#define LSO_V2 0x40000000u
#define LSO_IPV6 0x80000000u
#define RX_TCP_FAILED 0x1u
#define RX_UDP_FAILED 0x2u
#define RX_IP_FAILED 0x4u
#define RX_TCP_OK 0x8u
#define RX_UDP_OK 0x10u
#define RX_IP_OK 0x20u
#define TCP_FIN 0x01u
#define TCP_PSH 0x08u
#define TCP_CWR 0x80u

static inline uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Unfolded one's-complement sum: 32-bit big-endian words fold to the same 16-bit sum. */
static uint64_t sum_add(const uint8_t *p, uint32_t n, uint64_t s)
{
    while (n >= 4) { s += be32(p); p += 4; n -= 4; }
    if (n >= 2) { s += be16(p); p += 2; n -= 2; }
    if (n) s += (uint32_t)p[0] << 8;
    return s;
}

static uint32_t fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFFu) + (s >> 16);
    return (uint32_t)s;
}

int hvu_off_locate(const uint8_t *f, uint32_t n, int lso, struct hvu_l34 *h)
{
    uint32_t et, l3 = ETH_HLEN;
    if (n < ETH_HLEN + 20)
        return -1;
    et = be16(f + 12);
    if (et == 0x0800) {
        uint32_t ihl = (f[l3] & 0xFu) * 4u, tot;
        if (f[l3] >> 4 != 4 || ihl < 20 || l3 + ihl > n)
            return -1;
        tot = be16(f + l3 + 2);
        if (tot == 0 && lso)
            tot = n - l3;
        if (tot < ihl || tot > n - l3)
            return -1;
        if (be16(f + l3 + 6) & 0x3FFFu)
            return -1;  /* offloads never apply to IP fragments */
        h->v6 = 0; h->l3 = l3; h->l4 = l3 + ihl; h->proto = f[l3 + 9]; h->l4len = tot - ihl;
        return 0;
    }
    if (et == 0x86DD) {
        uint32_t plen, nxt, pos;
        if (n < l3 + 40 || f[l3] >> 4 != 6)
            return -1;
        plen = be16(f + l3 + 4);
        if (plen == 0 && lso)
            plen = n - l3 - 40;
        if (plen > n - l3 - 40)
            return -1;
        nxt = f[l3 + 6];
        pos = l3 + 40;
        while (nxt == 0 || nxt == 43 || nxt == 60) {  /* hop-by-hop, routing, destination options */
            uint32_t len8;
            if (pos + 8 > n)
                return -1;
            len8 = f[pos + 1];
            nxt = f[pos];
            pos += 8u * (len8 + 1u);
        }
        if (pos > l3 + 40 + plen)
            return -1;
        h->v6 = 1; h->l3 = l3; h->l4 = pos; h->proto = nxt; h->l4len = l3 + 40 + plen - pos;
        return 0;
    }
    return -1;
}

static uint64_t pseudo(const uint8_t *f, const struct hvu_l34 *h, uint32_t l4len)
{
    return sum_add(f + h->l3 + (h->v6 ? 8u : 12u), h->v6 ? 32u : 8u, 0) + h->proto + l4len;
}

static void fill_ip4(uint8_t *f, uint32_t l3)
{
    uint32_t ihl = (f[l3] & 0xFu) * 4u;
    put16(f + l3 + 10, 0);
    put16(f + l3 + 10, ~fold(sum_add(f + l3, ihl, 0)) & 0xFFFFu);
}

static void fill_l4(uint8_t *f, const struct hvu_l34 *h)
{
    uint32_t field = h->l4 + (h->proto == IPPROTO_TCP ? 16u : 6u), v;
    put16(f + field, 0);
    v = ~fold(sum_add(f + h->l4, h->l4len, pseudo(f, h, h->l4len))) & 0xFFFFu;
    if (h->proto == IPPROTO_UDP && v == 0)
        v = 0xFFFFu;  /* RFC 768 */
    put16(f + field, v);
}

uint32_t hvu_off_tcp_hdr_len(const uint8_t *f, uint32_t n, const struct hvu_l34 *h)
{
    uint32_t doff;
    if (h->proto != IPPROTO_TCP || h->l4 + 20 > n)
        return 0;
    doff = (uint32_t)(f[h->l4 + 12] >> 4) * 4u;
    if (doff < 20 || h->l4 + doff > n)
        return 0;
    return h->l4 + doff;
}

int hvu_off_tx_check(const uint8_t *f, uint32_t n, int has_csum, uint32_t csum, int has_lso, uint32_t lso,
                     uint32_t off_tx, uint32_t lso_max, uint32_t max_frame, struct hvu_off_plan *pl)
{
    memset(pl, 0, sizeof *pl);
    if (has_lso) {
        uint32_t v6 = !!(lso & LSO_IPV6), mss = lso & 0xFFFFFu, thoff = (lso >> 20) & 0x3FFu;
        if (!(lso & LSO_V2) || !(off_tx & (v6 ? HVU_SIM_OFF_LSO6 : HVU_SIM_OFF_LSO4)) || mss == 0 || n > lso_max)
            return 1;
        if (hvu_off_locate(f, n, 1, &pl->h) || pl->h.v6 != v6 || pl->h.proto != IPPROTO_TCP || thoff != pl->h.l4)
            return 1;
        pl->hdr_len = hvu_off_tcp_hdr_len(f, n, &pl->h);
        if (pl->hdr_len == 0 || pl->hdr_len + mss > max_frame)
            return 1;
        pl->mss = mss;
        pl->action = n - pl->hdr_len <= mss ? HVU_OFF_TX_LSO_ONE : HVU_OFF_TX_GSO;
        return 0;
    }
    if (has_csum) {
        uint32_t ip = !!(csum & TXCSUM_IP), tcp = !!(csum & TXCSUM_TCP), udp = !!(csum & TXCSUM_UDP), v6, et;
        uint32_t need = 0;
        if (!(ip || tcp || udp))
            return pl->action = HVU_OFF_TX_ASIS, 0;
        if (!(csum & TXCSUM_IPV4) == !(csum & TXCSUM_IPV6) || (tcp && udp))
            return 1;
        v6 = !!(csum & TXCSUM_IPV6);
        if (ip && v6)
            return 1;
        if (ip) need |= HVU_SIM_OFF_IP4;
        if (tcp) need |= v6 ? HVU_SIM_OFF_TCP6 : HVU_SIM_OFF_TCP4;
        if (udp) need |= v6 ? HVU_SIM_OFF_UDP6 : HVU_SIM_OFF_UDP4;
        if ((off_tx & need) != need)
            return pl->action = HVU_OFF_TX_IGNORED, 0;  /* not enabled: sent as it is */
        et = n >= ETH_HLEN ? be16(f + 12) : 0;
        if (et != 0x0800 && et != 0x86DD)
            return pl->action = HVU_OFF_TX_IGNORED, 0;  /* nothing to compute in a non-IP frame */
        if (hvu_off_locate(f, n, 0, &pl->h) || pl->h.v6 != v6)
            return 1;
        if (tcp || udp) {
            if (pl->h.proto != (tcp ? IPPROTO_TCP : IPPROTO_UDP) || ((csum >> 16) & 0x3FFu) != pl->h.l4
                || pl->h.l4len < (tcp ? 20u : 8u))
                return 1;
        }
        pl->want_ip = ip;
        pl->want_l4 = tcp || udp;
        pl->action = HVU_OFF_TX_CSUM;
        return 0;
    }
    pl->action = HVU_OFF_TX_ASIS;
    return 0;
}

void hvu_off_tx_apply(uint8_t *f, uint32_t n, const struct hvu_off_plan *pl, uint8_t *vnet)
{
    struct hvu_l34 h = pl->h;
    if (pl->action == HVU_OFF_TX_CSUM) {
        if (pl->want_l4)
            fill_l4(f, &h);
        if (pl->want_ip)
            fill_ip4(f, h.l3);
        return;
    }
    if (pl->action != HVU_OFF_TX_LSO_ONE && pl->action != HVU_OFF_TX_GSO)
        return;
    /* LSOv2 leaves the IP lengths 0 and a length-less pseudo-header sum: make the frame whole */
    if (h.v6) {
        put16(f + h.l3 + 4, n - h.l3 - 40);
    } else {
        put16(f + h.l3 + 2, n - h.l3);
        fill_ip4(f, h.l3);
    }
    h.l4len = n - h.l4;
    if (pl->action == HVU_OFF_TX_LSO_ONE) {
        fill_l4(f, &h);
        return;
    }
    put16(f + h.l4 + 16, fold(pseudo(f, &h, h.l4len)));  /* CHECKSUM_PARTIAL: the pseudo-header sum */
    memset(vnet, 0, HVU_VNET_HLEN);
    vnet[0] = HVU_VNET_F_NEEDS_CSUM;
    vnet[1] = (uint8_t)(h.v6 ? HVU_GSO_TCPV6 : HVU_GSO_TCPV4);
    vnet[2] = (uint8_t)pl->hdr_len; vnet[3] = (uint8_t)(pl->hdr_len >> 8);
    vnet[4] = (uint8_t)pl->mss; vnet[5] = (uint8_t)(pl->mss >> 8);
    vnet[6] = (uint8_t)h.l4; vnet[7] = (uint8_t)(h.l4 >> 8);
    vnet[8] = 16;
}

uint32_t hvu_off_nseg(uint32_t hdr_len, uint32_t end, uint32_t mss)
{
    uint32_t payload = end > hdr_len ? end - hdr_len : 0;
    return payload == 0 ? 1 : (payload + mss - 1) / mss;
}

uint32_t hvu_off_segment(const uint8_t *f, const struct hvu_l34 *h, uint32_t hdr_len, uint32_t mss,
                         uint32_t i, uint32_t nseg, uint8_t *out)
{
    uint32_t end = h->l4 + h->l4len, start = hdr_len + i * mss, chunk, len, flags;
    struct hvu_l34 s = *h;
    chunk = start < end ? (end - start < mss ? end - start : mss) : 0;
    memcpy(out, f, hdr_len);
    memcpy(out + hdr_len, f + start, chunk);
    len = hdr_len + chunk;
    flags = f[h->l4 + 13];
    if (i)
        flags &= ~TCP_CWR;
    if (i != nseg - 1)
        flags &= ~(TCP_FIN | TCP_PSH);
    out[h->l4 + 13] = (uint8_t)flags;
    put32(out + h->l4 + 4, be32(f + h->l4 + 4) + i * mss);
    if (h->v6) {
        put16(out + h->l3 + 4, len - h->l3 - 40);
    } else {
        put16(out + h->l3 + 2, len - h->l3);
        put16(out + h->l3 + 4, (be16(f + h->l3 + 4) + i) & 0xFFFFu);
        fill_ip4(out, h->l3);
    }
    s.l4len = len - h->l4;
    fill_l4(out, &s);
    return len;
}

int hvu_off_complete(uint8_t *f, uint32_t n, uint32_t start, uint32_t offset)
{
    uint32_t field = start + offset;
    if (start >= n || field < start || field > n - 2 || n < 2)
        return -1;
    put16(f + field, ~fold(sum_add(f + start, n - start, 0)) & 0xFFFFu);
    return 0;
}

void hvu_off_rsc_fixup(uint8_t *f, uint32_t n, struct hvu_l34 *h)
{
    if (h->v6) {
        put16(f + h->l3 + 4, n - h->l3 - 40);
    } else {
        put16(f + h->l3 + 2, n - h->l3);
        fill_ip4(f, h->l3);
    }
    h->l4len = n - h->l4;
    fill_l4(f, h);
}

uint32_t hvu_off_rx_mark(const uint8_t *f, uint32_t n, uint32_t off_rx, int trusted)
{
    struct hvu_l34 h;
    uint32_t fl = 0;
    if (!(off_rx & (HVU_SIM_OFF_IP4 | HVU_SIM_OFF_TCP4 | HVU_SIM_OFF_UDP4 | HVU_SIM_OFF_TCP6 | HVU_SIM_OFF_UDP6)))
        return 0;
    if (hvu_off_locate(f, n, 0, &h))
        return 0;
    if (!h.v6 && (off_rx & HVU_SIM_OFF_IP4)) {
        uint32_t ihl = (f[h.l3] & 0xFu) * 4u;
        fl |= trusted || fold(sum_add(f + h.l3, ihl, 0)) == 0xFFFFu ? RX_IP_OK : RX_IP_FAILED;
    }
    if (h.proto == IPPROTO_TCP && (off_rx & (h.v6 ? HVU_SIM_OFF_TCP6 : HVU_SIM_OFF_TCP4)) && h.l4len >= 20) {
        int ok = trusted || fold(sum_add(f + h.l4, h.l4len, pseudo(f, &h, h.l4len))) == 0xFFFFu;
        fl |= ok ? RX_TCP_OK : RX_TCP_FAILED;
    } else if (h.proto == IPPROTO_UDP && (off_rx & (h.v6 ? HVU_SIM_OFF_UDP6 : HVU_SIM_OFF_UDP4)) && h.l4len >= 8) {
        int ok = trusted || (!h.v6 && be16(f + h.l4 + 6) == 0)
                 || fold(sum_add(f + h.l4, h.l4len, pseudo(f, &h, h.l4len))) == 0xFFFFu;
        fl |= ok ? RX_UDP_OK : RX_UDP_FAILED;
    }
    return fl;
}
