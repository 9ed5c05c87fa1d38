/* Checksum and TCP segmentation helpers (offload.h). No state, no syscalls, no allocation.
 *
 * Facts used (behaviour only, from reading): RFC 1071 for the Internet checksum and its
 * pseudo-headers (RFC 793 for IPv4, RFC 8200 8.1 for IPv6); the virtio_net_hdr layout of Linux
 * include/uapi/linux/virtio_net.h; how Linux tcp_gso_segment fixes each segment (seq advanced by
 * the payload before it, FIN/PSH only on the last, CWR only on the first, IPv4 id incremented).
 */
#include <string.h>

#include "offload.h"

static uint16_t rd16be(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t rd32be(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void wr16be(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void wr32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static uint16_t rd16le(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr16le(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

void hvu_vnet_read(const uint8_t *p, struct hvu_vnet *v)
{
    v->flags = p[0];
    v->gso_type = p[1];
    v->hdr_len = rd16le(p + 2);
    v->gso_size = rd16le(p + 4);
    v->csum_start = rd16le(p + 6);
    v->csum_offset = rd16le(p + 8);
}

/* All 12 bytes: num_buffers (bytes 10-11) is 0. */
void hvu_vnet_write(uint8_t *p, const struct hvu_vnet *v)
{
    p[0] = v->flags;
    p[1] = v->gso_type;
    wr16le(p + 2, v->hdr_len);
    wr16le(p + 4, v->gso_size);
    wr16le(p + 6, v->csum_start);
    wr16le(p + 8, v->csum_offset);
    p[10] = p[11] = 0;
}

uint64_t hvu_csum_add(uint64_t sum, const uint8_t *p, uint32_t n)
{
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)   /* four words per step; the 64-bit sum cannot overflow for 64 KiB */
        sum += (uint64_t)rd16be(p + i) + rd16be(p + i + 2) + rd16be(p + i + 4) + rd16be(p + i + 6);
    for (; i + 2 <= n; i += 2)
        sum += rd16be(p + i);
    if (i < n)
        sum += (uint64_t)p[i] << 8;   /* odd byte: padded with a zero (RFC 1071) */
    return sum;
}

uint16_t hvu_csum_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)sum;
}

uint64_t hvu_csum_pseudo(const uint8_t *f, const struct hvu_l34 *h, uint32_t l4_len)
{
    uint64_t sum;
    if (h->ipv6)
        sum = hvu_csum_add(0, f + h->l3 + 8, 32) + (l4_len >> 16) + (l4_len & 0xFFFF);
    else
        sum = hvu_csum_add(0, f + h->l3 + 12, 8) + l4_len;
    return sum + h->proto;
}

int hvu_off_parse(const uint8_t *f, uint32_t len, struct hvu_l34 *h)
{
    if (len < 14)
        return -1;
    uint32_t l3 = 14;
    uint16_t etype = rd16be(f + 12);
    if (etype == HVU_ETH_P_8021Q) {
        if (len < 18)
            return -1;
        etype = rd16be(f + 16);
        l3 = 18;
    }
    if (etype == HVU_ETH_P_IP) {
        if (len < l3 + 20 || (f[l3] >> 4) != 4)
            return -1;
        uint32_t ihl = (uint32_t)(f[l3] & 0x0F) * 4u;
        if (ihl < 20 || len < l3 + ihl)
            return -1;
        h->ipv6 = 0;
        h->proto = f[l3 + 9];
        h->l4 = l3 + ihl;
    } else if (etype == HVU_ETH_P_IPV6) {
        if (len < l3 + 40 || (f[l3] >> 4) != 6)
            return -1;
        h->ipv6 = 1;
        h->proto = f[l3 + 6];
        h->l4 = l3 + 40;
    } else {
        return -1;
    }
    h->l3 = l3;
    h->hdrs = h->l4;
    return 0;
}

int hvu_off_parse_tcp(const uint8_t *f, uint32_t len, struct hvu_l34 *h)
{
    if (hvu_off_parse(f, len, h) < 0 || h->proto != HVU_IPPROTO_TCP || len < h->l4 + 20)
        return -1;
    uint32_t doff = (uint32_t)(f[h->l4 + 12] >> 4) * 4u;
    if (doff < 20 || len < h->l4 + doff)
        return -1;
    h->hdrs = h->l4 + doff;
    return 0;
}

void hvu_off_finish_csum(uint8_t *f, uint32_t len, uint32_t start, uint32_t off)
{
    uint16_t c = (uint16_t)~hvu_csum_fold(hvu_csum_add(0, f + start, len - start));
    wr16be(f + start + off, c);
}

void hvu_off_ip4_csum(uint8_t *f, const struct hvu_l34 *h)
{
    if (h->ipv6)
        return;
    uint8_t *ip = f + h->l3;
    uint32_t ihl = h->l4 - h->l3;
    wr16be(ip + 10, 0);
    wr16be(ip + 10, (uint16_t)~hvu_csum_fold(hvu_csum_add(0, ip, ihl)));
}

uint32_t hvu_off_build_seg(uint8_t *out, const uint8_t *f, const struct hvu_l34 *h, uint32_t pay_off,
                           uint32_t pay_len, uint32_t seg_index, int first, int last, int mode)
{
    uint32_t hdrs = h->hdrs;
    memcpy(out, f, hdrs);
    memcpy(out + hdrs, f + hdrs + pay_off, pay_len);
    uint8_t *ip = out + h->l3, *tcp = out + h->l4;
    uint32_t l4_len = hdrs - h->l4 + pay_len;
    if (h->ipv6) {
        wr16be(ip + 4, (uint16_t)(hdrs - h->l3 - 40 + pay_len));
    } else {
        wr16be(ip + 2, (uint16_t)(hdrs - h->l3 + pay_len));
        wr16be(ip + 4, (uint16_t)(rd16be(ip + 4) + seg_index));
        if (mode == HVU_SEG_LSO)
            wr16be(ip + 10, 0);
        else
            hvu_off_ip4_csum(out, h);
    }
    wr32be(tcp + 4, rd32be(tcp + 4) + pay_off);
    if (!last)
        tcp[13] &= (uint8_t)~0x09u;   /* FIN, PSH */
    if (!first)
        tcp[13] &= (uint8_t)~0x80u;   /* CWR */
    if (mode == HVU_SEG_LSO) {
        wr16be(tcp + HVU_TCP_CSUM_OFF, hvu_csum_fold(hvu_csum_pseudo(out, h, 0)));
    } else if (mode == HVU_SEG_PARTIAL) {
        wr16be(tcp + HVU_TCP_CSUM_OFF, hvu_csum_fold(hvu_csum_pseudo(out, h, l4_len)));
    } else {
        wr16be(tcp + HVU_TCP_CSUM_OFF, 0);
        uint64_t sum = hvu_csum_pseudo(out, h, l4_len) + hvu_csum_add(0, tcp, l4_len);
        wr16be(tcp + HVU_TCP_CSUM_OFF, (uint16_t)~hvu_csum_fold(sum));
    }
    return hdrs + pay_len;
}
