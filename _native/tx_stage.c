/* Data path, guest -> host, with tap offloads (HVU_DP_F_TAP_OFFLOAD): one tap frame at a time in
 * the private stage buffer, its vnet header checked, emitted as one or more RNDIS packets.
 *
 * What lives here: the vnet header checks (every field, drops tx_vnet_bad with a reason), the
 * 802.1Q tag of a frame taken out into its pktinfo (offsets then count from the untagged frame), the
 * choice between the checksum pktinfo and a software checksum, and the cutting of a TCP GSO
 * frame into LSO packets or single segments that fit a send section, or a GPA-direct slot when
 * there is a pool (the rules and their sources are in datapath.h's header comment). What must
 * not: section and slot bookkeeping, aggregation and sending (tx.c / tx_gpa.c: hvu_dp_tx_dest /
 * hvu_dp_tx_done decide where each packet goes), ring access, allocation, printing.
 */
#define _POSIX_C_SOURCE 200809L   /* readv under -std=c11 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "datapath.h"

enum { STAGE_WHOLE = 1, STAGE_CSUM = 2, STAGE_SEGS = 3 };

/* checksum pktinfo transmit bits and LSOv2 pktinfo fields (golden ndis_ppi_bits) */
#define TXCSUM_IPV4 0x1u
#define TXCSUM_IPV6 0x2u
#define TXCSUM_TCP 0x4u
#define TXCSUM_UDP 0x8u
#define TXCSUM_THOFF_SHIFT 16
#define LSO2_THOFF_SHIFT 20
#define LSO2_ISLSO2 0x40000000u
#define LSO2_ISIPV6 0x80000000u

static int vnet_bad(struct hvu_dp *dp, int reason, uint64_t value)
{
    dp->ctr.tx_vnet_bad++;
    hvu_dp_drop_note(dp, reason, value);
    return 0;
}

static int stage_oversize(struct hvu_dp *dp, uint64_t value)
{
    dp->ctr.tx_oversize++;
    hvu_dp_drop_note(dp, HVU_DP_TX_OVERSIZE, value);
    return 0;
}

/* The checksum pktinfo for a TCP/UDP frame whose partial checksum the host may finish, or 0 when
 * the host did not enable that checksum or the headers are not plain IP + TCP/UDP at csum_start. */
static uint32_t csum_ppi_for(const struct hvu_dp *dp, const uint8_t *f, uint32_t len,
                             const struct hvu_vnet *v)
{
    struct hvu_l34 h;
    if (hvu_off_parse(f, len, &h) < 0 || h.l4 != v->csum_start || h.l4 > 0x3FF)
        return 0;
    uint32_t fam = h.ipv6 ? TXCSUM_IPV6 : TXCSUM_IPV4;
    if (h.proto == HVU_IPPROTO_TCP && v->csum_offset == HVU_TCP_CSUM_OFF &&
        (dp->flags & (h.ipv6 ? HVU_DP_F_TX_CSUM_TCP6 : HVU_DP_F_TX_CSUM_TCP4)))
        return fam | TXCSUM_TCP | (h.l4 << TXCSUM_THOFF_SHIFT);
    if (h.proto == HVU_IPPROTO_UDP && v->csum_offset == HVU_UDP_CSUM_OFF &&
        (dp->flags & (h.ipv6 ? HVU_DP_F_TX_CSUM_UDP6 : HVU_DP_F_TX_CSUM_UDP4)))
        return fam | TXCSUM_UDP | (h.l4 << TXCSUM_THOFF_SHIFT);
    return 0;
}

/* A frame needing a checksum and sent whole: pktinfo if the host does it and the pktinfo fits
 * the section (or slot) next to the frame (a frame of the largest MTU may not leave room), else
 * software. */
static void stage_whole_csum(struct hvu_dp *dp, uint8_t *f, uint32_t len, const struct hvu_vnet *v)
{
    uint32_t info = 0;
    if ((uint64_t)dp->tx_hdr_len + HVU_DP_PPI_SIZE + hvu_dp_vlan_ppi_len(dp->stage_vlan) + len <=
        hvu_dp_tx_msg_cap(dp))
        info = csum_ppi_for(dp, f, len, v);
    if (info != 0) {
        dp->stage_kind = STAGE_CSUM;
        dp->stage_csum = info;
    } else {
        hvu_off_finish_csum(f, len, v->csum_start, v->csum_offset);
        dp->ctr.tx_sw_csum++;
        dp->stage_kind = STAGE_WHOLE;
    }
}

/* A tagged frame in the stage loses its tag (it goes as the 802.1Q pktinfo, vlan.c): the MAC
 * addresses move 4 bytes on, the frame starts stage_off = 4 bytes later, and the vnet header's
 * offsets, which count from the tagged frame, count from the untagged one. 1 = done (or not
 * tagged), 0 = dropped (a checksum or header offset inside the tag: counted). */
static int stage_untag(struct hvu_dp *dp, uint32_t *len, struct hvu_vnet *v)
{
    uint8_t *f = dp->stage + HVU_DP_VNET_HDR_SIZE;
    dp->stage_off = 0;
    dp->stage_vlan = HVU_DP_NO_VLAN;
    if (!hvu_dp_vlan_info(f, *len, &dp->stage_vlan))
        return 1;
    if ((v->flags & HVU_VNET_F_NEEDS_CSUM) && v->csum_start < HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN)
        return vnet_bad(dp, HVU_DP_VNET_CSUM, ((uint64_t)v->csum_start << 16) | v->csum_offset);
    memmove(f + HVU_DP_VLAN_HLEN, f, 12);
    dp->stage_off = HVU_DP_VLAN_HLEN;
    *len -= HVU_DP_VLAN_HLEN;
    if (v->flags & HVU_VNET_F_NEEDS_CSUM)
        v->csum_start = (uint16_t)(v->csum_start - HVU_DP_VLAN_HLEN);
    if (v->hdr_len > HVU_DP_VLAN_HLEN)
        v->hdr_len = (uint16_t)(v->hdr_len - HVU_DP_VLAN_HLEN);
    return 1;
}

/* Checks the vnet header of the frame in the stage and decides how it goes out.
 * 1 = staged, 0 = dropped (counted). */
static int stage_prepare(struct hvu_dp *dp, uint32_t len)
{
    uint8_t *f = dp->stage + HVU_DP_VNET_HDR_SIZE;
    uint32_t limit = dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    struct hvu_vnet v;
    hvu_vnet_read(dp->stage, &v);
    if (v.flags & ~(HVU_VNET_F_NEEDS_CSUM | HVU_VNET_F_DATA_VALID))
        return vnet_bad(dp, HVU_DP_VNET_FLAGS, v.flags);
    if (stage_untag(dp, &len, &v) == 0)
        return 0;
    f += dp->stage_off;
    if ((v.flags & HVU_VNET_F_NEEDS_CSUM) &&
        (v.csum_start < HVU_DP_ETH_HLEN || (uint32_t)v.csum_start + v.csum_offset + 2u > len))
        return vnet_bad(dp, HVU_DP_VNET_CSUM, ((uint64_t)v.csum_start << 16) | v.csum_offset);
    if (v.gso_type == HVU_VNET_GSO_NONE) {
        if (len > limit)
            return stage_oversize(dp, len);
        if (v.flags & HVU_VNET_F_NEEDS_CSUM)
            stage_whole_csum(dp, f, len, &v);
        else
            dp->stage_kind = STAGE_WHOLE;
        dp->stage_len = len;
        return 1;
    }
    if (v.gso_type != HVU_VNET_GSO_TCPV4 && v.gso_type != HVU_VNET_GSO_TCPV6)
        return vnet_bad(dp, HVU_DP_VNET_GSO_TYPE, v.gso_type);
    if (!(v.flags & HVU_VNET_F_NEEDS_CSUM) || v.gso_size == 0 || v.hdr_len > len)
        return vnet_bad(dp, HVU_DP_VNET_GSO, v.gso_size);
    struct hvu_l34 h;
    if (hvu_off_parse_tcp(f, len, &h) < 0 || h.ipv6 != (v.gso_type == HVU_VNET_GSO_TCPV6) ||
        h.l4 != v.csum_start || v.csum_offset != HVU_TCP_CSUM_OFF)
        return vnet_bad(dp, HVU_DP_VNET_GSO, v.csum_start);
    dp->ctr.tx_gso++;
    uint32_t payload = len - h.hdrs, mss = v.gso_size;
    if (payload <= mss) {                   /* one segment: an ordinary checksummed frame */
        if (len > limit)
            return stage_oversize(dp, len);
        stage_whole_csum(dp, f, len, &v);
        dp->stage_len = len;
        return 1;
    }
    if (h.hdrs + mss > limit)
        return stage_oversize(dp, mss);
    uint32_t cap = hvu_dp_tx_msg_cap(dp);   /* a section, or a slot with GPA-direct */
    uint32_t base = dp->tx_hdr_len + hvu_dp_vlan_ppi_len(dp->stage_vlan);
    if (cap - base < h.hdrs + mss)
        return stage_oversize(dp, mss);   /* not even one segment fits a section (slot) */
    uint32_t room = cap - base - HVU_DP_PPI_SIZE;   /* with one more pktinfo */
    uint32_t per = 1;
    int lso = (dp->flags & (h.ipv6 ? HVU_DP_F_TX_LSO6 : HVU_DP_F_TX_LSO4)) != 0 && h.l4 <= 0x3FF &&
              mss <= 0xFFFFF;
    if (lso) {
        per = room >= h.hdrs ? (room - h.hdrs) / mss : 0;
        if (dp->lso_max > h.hdrs && (dp->lso_max - h.hdrs) / mss < per)
            per = (dp->lso_max - h.hdrs) / mss;
        if (dp->lso_max <= h.hdrs || per < 2) {
            lso = 0;
            per = 1;
        }
    }
    dp->stage_kind = STAGE_SEGS;
    dp->stage_lso = lso;
    dp->stage_mss = mss;
    dp->stage_per = per * mss;
    dp->stage_next = 0;
    dp->stage_seg = 0;
    dp->stage_l3 = h.l3;
    dp->stage_l4 = h.l4;
    dp->stage_hdrs = h.hdrs;
    dp->stage_v6 = (uint32_t)h.ipv6;
    dp->stage_proto = h.proto;
    dp->stage_len = len;
    return 1;
}

/* Reads one tap frame (vnet header + frame) into the stage. 1 = staged, 0 = dropped (counted),
 * -EAGAIN = tap empty, other negative = tap error. */
static int stage_read(struct hvu_dp *dp)
{
    uint8_t probe;
    struct iovec iov[2];
    iov[0].iov_base = dp->stage;
    iov[0].iov_len = HVU_DP_VNET_HDR_SIZE + (size_t)dp->stage_cap;
    iov[1].iov_base = &probe;
    iov[1].iov_len = 1;
    ssize_t r = hvu_dp_tap_readv(dp, iov, 2, HVU_DP_VNET_HDR_SIZE + HVU_DP_ETH_HLEN);
    if (r <= 0)
        return (int)r;
    uint32_t len = (uint32_t)((size_t)r - HVU_DP_VNET_HDR_SIZE);
    if (len > dp->stage_cap)
        return stage_oversize(dp, len);
    return stage_prepare(dp, len);
}

/* Builds the next RNDIS packet of the staged frame where hvu_dp_tx_dest puts it. 1 = placed or
 * sent, 0 = the frame was dropped (counted), HVU_DP_TX_FLUSH = the held send must go out first,
 * HVU_DP_TX_WAIT = no section / slot / ring room now (the stage keeps the frame either way, and
 * the packet is built again next time: nothing advances before it is placed), negative errno. */
static int stage_emit(struct hvu_dp *dp)
{
    const uint8_t *f = dp->stage + HVU_DP_VNET_HDR_SIZE + dp->stage_off;
    uint32_t len = dp->stage_len, hdr, vlan = dp->stage_vlan, vlan_len = hvu_dp_vlan_ppi_len(vlan);
    uint8_t *msg;
    struct hvu_dp_dest d;
    int rc;
    if (dp->stage_kind != STAGE_SEGS) {
        int csum = dp->stage_kind == STAGE_CSUM;
        hdr = dp->tx_hdr_len + (csum ? HVU_DP_PPI_SIZE : 0) + vlan_len;
        if ((uint64_t)hdr + len > hvu_dp_tx_msg_cap(dp)) {
            dp->stage_len = 0;
            return stage_oversize(dp, len);
        }
        rc = hvu_dp_tx_dest(dp, hdr + len, &d);
        if (rc != 1)
            return rc;
        msg = d.msg;
        hvu_dp_tx_header_vlan(dp, msg, len, csum ? HVU_NDIS_PKTINFO_CSUM : -1, dp->stage_csum, vlan);
        memcpy(msg + hdr, f, len);
        rc = hvu_dp_tx_done(dp, &d, hdr + len, len, 0);
        if (rc != 1)
            return rc;
        dp->stage_len = 0;
        if (csum)
            dp->ctr.tx_csum_ppi++;
        if (vlan_len)
            dp->ctr.tx_vlan++;
        return 1;
    }
    struct hvu_l34 h = {dp->stage_l3, dp->stage_l4, dp->stage_hdrs, (int)dp->stage_v6, dp->stage_proto};
    uint32_t payload = len - h.hdrs, mss = dp->stage_mss;
    uint32_t pay = payload - dp->stage_next;
    if (pay > dp->stage_per)
        pay = dp->stage_per;
    uint32_t nseg = (pay + mss - 1) / mss, info = 0;
    int first = dp->stage_next == 0, last = dp->stage_next + pay == payload;
    int mode = HVU_SEG_FULL, ppi = -1;
    if (dp->stage_lso && nseg >= 2) {
        info = mss | (h.l4 << LSO2_THOFF_SHIFT) | LSO2_ISLSO2 | (h.ipv6 ? LSO2_ISIPV6 : 0);
        ppi = HVU_NDIS_PKTINFO_LSO;
        mode = HVU_SEG_LSO;
    } else if ((dp->flags & (h.ipv6 ? HVU_DP_F_TX_CSUM_TCP6 : HVU_DP_F_TX_CSUM_TCP4)) &&
               dp->tx_hdr_len + vlan_len + HVU_DP_PPI_SIZE + h.hdrs + pay <= hvu_dp_tx_msg_cap(dp)) {
        info = (h.ipv6 ? TXCSUM_IPV6 : TXCSUM_IPV4) | TXCSUM_TCP | (h.l4 << TXCSUM_THOFF_SHIFT);
        ppi = HVU_NDIS_PKTINFO_CSUM;
        mode = HVU_SEG_PARTIAL;
    }
    hdr = dp->tx_hdr_len + (ppi >= 0 ? HVU_DP_PPI_SIZE : 0) + vlan_len;
    rc = hvu_dp_tx_dest(dp, hdr + h.hdrs + pay, &d);
    if (rc != 1)
        return rc;
    msg = d.msg;
    hvu_dp_tx_header_vlan(dp, msg, h.hdrs + pay, ppi, info, vlan);
    uint32_t n = hvu_off_build_seg(msg + hdr, f, &h, dp->stage_next, pay, dp->stage_seg, first, last, mode);
    rc = hvu_dp_tx_done(dp, &d, hdr + n, n, mode == HVU_SEG_LSO);
    if (rc != 1)
        return rc;
    if (vlan_len)
        dp->ctr.tx_vlan++;
    if (mode != HVU_SEG_LSO) {
        dp->ctr.tx_sw_seg++;
        if (mode == HVU_SEG_PARTIAL)
            dp->ctr.tx_csum_ppi++;
        else
            dp->ctr.tx_sw_csum++;
    }
    dp->stage_next += pay;
    dp->stage_seg += nseg;
    if (last)
        dp->stage_len = 0;
    return 1;
}

/* The next RNDIS packet from the tap through the stage: a new frame is read when the stage is
 * empty. Returns as stage_emit, or -EAGAIN (tap empty) / another negative errno (tap error). */
int hvu_dp_tx_stage_next(struct hvu_dp *dp)
{
    if (dp->stage_len == 0) {
        int rc = stage_read(dp);
        if (rc <= 0)
            return rc;
    }
    return stage_emit(dp);
}
