/* Data path: the 802.1Q tag between the tap's frames and the host's per-packet info.
 *
 * What lives here: the conversion between a tag in the frame (TPID 0x8100 after the two MAC
 * addresses, then the TCI: priority in bits 13-15, CFI/DEI in bit 12, VLAN id in bits 0-11) and
 * the NDIS 802.1Q pktinfo value (type 6, one u32: priority in bits 0-2, CFI in bit 3, VLAN id in
 * bits 4-15, the rest 0: golden linux:ndis_pkt_8021q_info; Linux rndis_filter.c / netvsc_drv.c
 * and DPDK hn_rxtx.c read for behaviour). The guest announces 802.1Q at NVSP init, so a trunk-mode
 * Hyper-V port hands it tags out of band: rx.c puts them back into the frame for the tap, and
 * TX moves a tag the tap's frame carries into the pktinfo (Linux netvsc_xmit sends the tag of
 * every tagged skb as IEEE_8021Q_INFO), the frame 4 bytes shorter, so checksum and LSO offsets
 * count from the untagged frame, as OpenVMM's netvsp expects (its l2_len is always 14). No
 * state, no syscalls, no allocation.
 */
#include <string.h>

#include "datapath.h"

#define TPID_8021Q 0x8100u
#define INFO_PRI 0x7u        /* golden ndis_pkt_8021q_info.pri */
#define INFO_CFI 0x8u        /* .cfi */
#define INFO_ID 0xFFF0u      /* .vlanid */

/* 1 and *info when the frame carries an 802.1Q tag right after its MAC addresses (and room for
 * the inner EtherType), else 0. */
int hvu_dp_vlan_info(const uint8_t *f, uint32_t len, uint32_t *info)
{
    if (len < HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN || ((uint32_t)f[12] << 8 | f[13]) != TPID_8021Q)
        return 0;
    uint32_t tci = (uint32_t)f[14] << 8 | f[15];
    *info = (tci >> 13) | ((tci >> 12) & 1u) << 3 | (tci & 0xFFFu) << 4;
    return 1;
}

/* The 4 tag bytes (TPID, TCI) for an 802.1Q pktinfo value; its reserved bits are ignored. */
void hvu_dp_vlan_tag(uint32_t info, uint8_t tag[4])
{
    uint32_t tci = (info & INFO_PRI) << 13 | ((info & INFO_CFI) >> 3) << 12 | (info & INFO_ID) >> 4;
    tag[0] = (uint8_t)(TPID_8021Q >> 8);
    tag[1] = (uint8_t)TPID_8021Q;
    tag[2] = (uint8_t)(tci >> 8);
    tag[3] = (uint8_t)tci;
}

/* A tagged frame of len bytes at msg + from: its untagged form (len - 4 bytes) is moved to
 * msg + to (to >= from + 4; the caller checked that the buffer holds to + len - 4 bytes). */
void hvu_dp_vlan_untag(uint8_t *msg, uint32_t from, uint32_t to, uint32_t len)
{
    uint8_t macs[12];
    memcpy(macs, msg + from, sizeof(macs));
    memmove(msg + to + 12, msg + from + 16, len - 16);
    memcpy(msg + to, macs, sizeof(macs));
}
