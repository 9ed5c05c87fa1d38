#ifndef HVU_OFFLOAD_H
#define HVU_OFFLOAD_H
/* Checksum and TCP segmentation helpers for the data path's offloads (tx.c, rx.c).
 *
 * What lives here: the virtio_net_hdr (12 bytes, little-endian: the tap has TUNSETVNETLE) read
 * and write, the Internet checksum, the parse of an Ethernet/IPv4/IPv6/TCP header stack, and the
 * builder of one TCP segment (or LSO chunk) from a larger TCP frame with its IP/TCP fields fixed.
 * Pure functions on caller memory: no state, no syscalls, no allocation. Every length is checked
 * by the caller against its buffer before a call; the parse functions check the frame itself.
 */
#include <stdint.h>

#define HVU_VNET_F_NEEDS_CSUM 1u
#define HVU_VNET_F_DATA_VALID 2u
#define HVU_VNET_GSO_NONE 0u
#define HVU_VNET_GSO_TCPV4 1u
#define HVU_VNET_GSO_TCPV6 4u

#define HVU_ETH_P_IP 0x0800u
#define HVU_ETH_P_IPV6 0x86DDu
#define HVU_ETH_P_8021Q 0x8100u
#define HVU_IPPROTO_TCP 6u
#define HVU_IPPROTO_UDP 17u
#define HVU_TCP_CSUM_OFF 16u
#define HVU_UDP_CSUM_OFF 6u

struct hvu_vnet {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
};

/* Where the headers of one frame are (offsets from the frame's first byte). */
struct hvu_l34 {
    uint32_t l3;       /* IP header: 14, or 18 behind one 802.1Q tag */
    uint32_t l4;       /* transport header, right after the IPv4 header (ihl) or the 40-byte IPv6 one */
    uint32_t hdrs;     /* hvu_off_parse_tcp only: l4 + TCP data offset * 4 */
    int ipv6;          /* 1 for IPv6, 0 for IPv4 */
    uint32_t proto;    /* IPv4 protocol / IPv6 next header */
};

void hvu_vnet_read(const uint8_t *p, struct hvu_vnet *v);
void hvu_vnet_write(uint8_t *p, const struct hvu_vnet *v);

/* One's-complement sum of n bytes (big-endian 16-bit words) added to sum; fold with csum_fold. */
uint64_t hvu_csum_add(uint64_t sum, const uint8_t *p, uint32_t n);
uint16_t hvu_csum_fold(uint64_t sum);
/* Pseudo-header sum (addresses, protocol, l4_len) of the frame's IP header. */
uint64_t hvu_csum_pseudo(const uint8_t *f, const struct hvu_l34 *h, uint32_t l4_len);

/* 0 and *h filled if f[0..len) is Ethernet (+ one VLAN tag) + IPv4/IPv6 with the transport header
 * inside the frame; -1 otherwise. IPv6 extension headers are not walked (proto = next header). */
int hvu_off_parse(const uint8_t *f, uint32_t len, struct hvu_l34 *h);
/* hvu_off_parse plus a TCP header (data offset >= 5) that fits the frame; fills h->hdrs. */
int hvu_off_parse_tcp(const uint8_t *f, uint32_t len, struct hvu_l34 *h);

/* Completes a partial checksum (virtio NEEDS_CSUM): the sum of f[start..len) folded, inverted
 * and stored big-endian at start + off. The caller checked start + off + 2 <= len. */
void hvu_off_finish_csum(uint8_t *f, uint32_t len, uint32_t start, uint32_t off);
/* Recomputes the IPv4 header checksum at f + l3 (no-op for IPv6). */
void hvu_off_ip4_csum(uint8_t *f, const struct hvu_l34 *h);

enum hvu_seg_mode {
    HVU_SEG_FULL = 0,      /* complete IPv4 header checksum and TCP checksum (software) */
    HVU_SEG_PARTIAL = 1,   /* IPv4 checksum complete, TCP checksum = pseudo-header sum (csum PPI) */
    HVU_SEG_LSO = 2        /* IPv4 checksum 0, TCP checksum = pseudo-header sum with length 0 (LSO PPI) */
};

/* Writes to out the headers of f (h from hvu_off_parse_tcp) followed by payload bytes
 * [pay_off, pay_off + pay_len) of f, with IPv4 total length / IPv6 payload length for this piece,
 * IPv4 id + seg_index, TCP seq + pay_off, FIN and PSH kept only if last, CWR only if first, and
 * the checksums of `mode`. Returns the bytes written (h->hdrs + pay_len). */
uint32_t hvu_off_build_seg(uint8_t *out, const uint8_t *f, const struct hvu_l34 *h, uint32_t pay_off,
                           uint32_t pay_len, uint32_t seg_index, int first, int last, int mode);

#endif
