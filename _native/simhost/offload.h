#ifndef HVU_SIM_OFFLOAD_H
#define HVU_SIM_OFFLOAD_H
/* NDIS task offloads of the emulated host's C data path (offload.c): the same rules as
 * hvuio/sim/host_offload.py, which documents them and their sources. Pure functions on buffers:
 * no pump state, no I/O. Internal to the module (not in the cffi cdef). */
#include <stdint.h>

#define HVU_VNET_HLEN 12u
#define HVU_VNET_F_NEEDS_CSUM 1u
#define HVU_VNET_F_DATA_VALID 2u
#define HVU_GSO_NONE 0u
#define HVU_GSO_TCPV4 1u
#define HVU_GSO_TCPV6 4u
#define HVU_GSO_ECN 0x80u
#define HVU_GSO_MAX_FRAME (65535u + 14u + 4u)
#define HVU_PPI_CSUM 0u
#define HVU_PPI_LSO 2u
#define HVU_PPI_VLAN 6u
#define HVU_PPI_PKTINFO_ID 0x80000001u
#define HVU_PKTINFO_SUBALLOC 1u
#define HVU_PKTINFO_1ST_FRAG 2u
#define HVU_PKTINFO_LAST_FRAG 4u

struct hvu_l34 {
    uint32_t v6, l3, l4, proto, l4len;
};

enum hvu_off_action { HVU_OFF_TX_ASIS = 0, HVU_OFF_TX_CSUM = 1, HVU_OFF_TX_LSO_ONE = 2, HVU_OFF_TX_GSO = 3, HVU_OFF_TX_IGNORED = 4 };

struct hvu_off_plan {
    uint32_t action;          /* enum hvu_off_action */
    uint32_t want_ip, want_l4;
    uint32_t hdr_len, mss;
    struct hvu_l34 h;
};

int hvu_off_locate(const uint8_t *f, uint32_t n, int lso, struct hvu_l34 *h);
/* 0 and a plan, or 1 = refused (Python re-checks, logs and answers with a failure status) */
int hvu_off_tx_check(const uint8_t *f, uint32_t n, int has_csum, uint32_t csum, int has_lso, uint32_t lso,
                     uint32_t off_tx, uint32_t lso_max, uint32_t max_frame, struct hvu_off_plan *pl);
/* Apply a CSUM / LSO plan to a private copy; GSO: fills the 12-byte virtio_net_hdr */
void hvu_off_tx_apply(uint8_t *f, uint32_t n, const struct hvu_off_plan *pl, uint8_t *vnet);
uint32_t hvu_off_nseg(uint32_t hdr_len, uint32_t end, uint32_t mss);
/* Segment i of nseg of a TCP GSO frame into out (hdr_len + mss bytes); returns its length */
uint32_t hvu_off_segment(const uint8_t *f, const struct hvu_l34 *h, uint32_t hdr_len, uint32_t mss,
                         uint32_t i, uint32_t nseg, uint8_t *out);
/* TCP header length of h's segment, 0 if malformed */
uint32_t hvu_off_tcp_hdr_len(const uint8_t *f, uint32_t n, const struct hvu_l34 *h);
/* NEEDS_CSUM: fold from csum_start into csum_start + csum_offset; -1 if outside the frame */
int hvu_off_complete(uint8_t *f, uint32_t n, uint32_t start, uint32_t offset);
/* vRSC: IP lengths and every checksum valid for the whole coalesced frame */
void hvu_off_rsc_fixup(uint8_t *f, uint32_t n, struct hvu_l34 *h);
/* Receive checksum-info flags to mark (0: none); off_rx = HVU_SIM_OFF_* receive bits */
uint32_t hvu_off_rx_mark(const uint8_t *f, uint32_t n, uint32_t off_rx, int trusted);

#endif
