/* Data path, host -> guest: transfer-page packets -> RNDIS data messages -> frames on the tap.
 *
 * What lives here: hvu_dp_rx (one read batch of the inbound ring), the transfer-page and RNDIS
 * packet checks, the receive offloads (checksum info -> vnet flags, RSC fragment assembly), the
 * 802.1Q pktinfo put back into the frame as a tag (vlan.c), and the receive-completion queue;
 * the tap write itself (writev, or queued on the io_uring) is tapio.c. Completions of our own sends are handed to tx.c. Packets for Python are left unread (HVU_DP_CONTROL); the data
 * messages of a mixed packet come back from Python through hvu_dp_rx_data. The rules
 * and their sources are in datapath.h's header comment. No allocation, no printing.
 */
#define _POSIX_C_SOURCE 200809L   /* poll, readv/writev, clock_gettime under -std=c11 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "datapath.h"

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* ---- receive completions ------------------------------------------------------------------ */

/* One hn_nvs_rndis_ack {108, status, 32 reserved} as a type 0xb packet, flags 0. */
static int send_completion(struct hvu_dp *dp, uint64_t trans_id, uint32_t status)
{
    uint8_t msg[HVU_DP_NVS_MSG_SIZE];
    uint32_t type = HVU_NVS_TYPE_RNDIS_ACK;
    memset(msg, 0, sizeof(msg));
    memcpy(msg, &type, 4);
    memcpy(msg + 4, &status, 4);
    struct hvu_seg seg = {msg, sizeof(msg)};
    int rc = hvu_ring_send(dp->tx, HVU_PKT_COMP, 0, trans_id, &seg, 1, &dp->need_signal);
    if (rc == 0)
        dp->ctr.rx_comp_sent++;
    return rc;
}

/* Oldest first; stops at the first refusal. Returns 0 or -EIO (outbound ring corrupt). */
int hvu_dp_flush_completions(struct hvu_dp *dp)
{
    while (dp->npend > 0) {
        struct hvu_dp_pending *p = &dp->pend[dp->pend_head];
        int rc = send_completion(dp, p->trans_id, p->status);
        if (rc == -EAGAIN)
            return 0;
        if (rc < 0)
            return rc;
        dp->pend_head = (dp->pend_head + 1) % HVU_DP_PENDING_MAX;
        dp->npend--;
    }
    return 0;
}

/* Callers guarantee room in pend[] (checked before the packet is consumed). The completion is
 * sent or queued, never lost; returns -EIO (after queueing) if the outbound ring is refused. */
int hvu_dp_complete_rx(struct hvu_dp *dp, uint64_t trans_id, uint32_t status)
{
    int rc = 0;
    if (dp->npend == 0) {
        rc = send_completion(dp, trans_id, status);
        if (rc == 0)
            return 0;
    }
    uint32_t slot = (dp->pend_head + dp->npend) % HVU_DP_PENDING_MAX;
    dp->pend[slot].trans_id = trans_id;
    dp->pend[slot].status = status;
    dp->npend++;
    dp->ctr.rx_comp_busy++;
    return rc == -EAGAIN ? 0 : rc;
}

/* ---- one RNDIS packet message -> one frame ---------------------------------------------------- */

static int rndis_bad(struct hvu_dp *dp, int reason, uint64_t value)
{
    dp->ctr.rx_bad_rndis++;
    dp->ctr.rx_range_drops++;
    hvu_dp_drop_note(dp, reason, value);
    return -1;
}

/* Per-packet info: elements of {size, type, offset} walk exactly inside [ppi, ppi + len). */
static int pktinfo_ok(const uint8_t *ppi, uint32_t len)
{
    while (len > 0) {
        if (len < HVU_DP_PPI_HEAD)
            return 0;
        uint32_t size = get_u32(ppi);
        uint32_t off = get_u32(ppi + 8);
        if (size < HVU_DP_PPI_HEAD || (size & 3u) != 0 || size > len || off > size)
            return 0;
        ppi += size;
        len -= size;
    }
    return 1;
}

/* The 4-byte value of the first pktinfo of `type` whose data holds 4 bytes (Linux
 * rndis_get_ppi); the area was checked by pktinfo_ok. 1 if found. */
static int pktinfo_find(const uint8_t *ppi, uint32_t len, uint32_t type, uint32_t *value)
{
    while (len >= HVU_DP_PPI_HEAD) {
        uint32_t size = get_u32(ppi), off = get_u32(ppi + 8);
        if (get_u32(ppi + 4) == type && off <= size && size - off >= 4) {
            *value = get_u32(ppi + off);
            return 1;
        }
        ppi += size;
        len -= size;
    }
    return 0;
}

/* The 802.1Q pktinfo of the area (checked by pktinfo_ok): 1 and *value when present, 0 when
 * absent, -1 when an element of that type holds fewer than 4 data bytes (*value = its size):
 * Linux's rndis_get_ppi skips such an element with an error, here the frame is dropped and
 * counted, since delivering it untagged would put it on the wrong network. */
static int pktinfo_vlan(const uint8_t *ppi, uint32_t len, uint32_t *value)
{
    while (len >= HVU_DP_PPI_HEAD) {
        uint32_t size = get_u32(ppi), off = get_u32(ppi + 8);
        if (get_u32(ppi + 4) == HVU_NDIS_PKTINFO_VLAN) {
            if (size - off < 4) {
                *value = size;
                return -1;
            }
            *value = get_u32(ppi + off);
            return 1;
        }
        ppi += size;
        len -= size;
    }
    return 0;
}

/* receive checksum info bits (golden ndis_ppi_bits NDIS_RXCSUM_INFO_*) */
#define RXCSUM_TCP_FAILED 0x1u
#define RXCSUM_UDP_FAILED 0x2u
#define RXCSUM_TCP_OK 0x8u
#define RXCSUM_UDP_OK 0x10u
/* RNDIS_PKTINFO_ID flag byte (golden linux:rndis_pktinfo_id_flags) */
#define PKTID_SUBALLOC 0x1u
#define PKTID_FIRST 0x2u
#define PKTID_LAST 0x4u

static int csum_ok(uint32_t info)
{
    return (info & (RXCSUM_TCP_OK | RXCSUM_UDP_OK)) != 0 &&
           (info & (RXCSUM_TCP_FAILED | RXCSUM_UDP_FAILED)) == 0;
}

static int rsc_drop(struct hvu_dp *dp, int reason, uint64_t value, uint32_t frags)
{
    dp->ctr.rx_rsc_drop += frags;
    dp->ctr.rx_range_drops += frags;
    hvu_dp_drop_note(dp, reason, value);
    dp->rsc_cnt = 0;
    dp->rsc_len = 0;
    return -1;
}

/* 1 if the TCP checksum of the frame is right as it stands (pseudo-header included). */
static int tcp_csum_ok(const uint8_t *f, uint32_t len, const struct hvu_l34 *h)
{
    uint32_t l4_len = len - h->l4;
    return hvu_csum_fold(hvu_csum_pseudo(f, h, l4_len) + hvu_csum_add(0, f + h->l4, l4_len)) == 0xFFFF;
}

/* The frame cut into TCP segments of mss payload bytes for a tap without vnet header, each
 * built in the room after the frame in rsc_buf (hvu_dp_init keeps mtu + 18 bytes there; a
 * segment is at most l3 + mtu) and written whole. 0, or -1 when a write failed: the segments
 * after it are not tried and count as tap drops too, like the one that failed. */
static int rsc_segment(struct hvu_dp *dp, const uint8_t *f, uint32_t len, const struct hvu_l34 *h,
                       uint32_t mss)
{
    static const struct hvu_vnet none = {0, HVU_VNET_GSO_NONE, 0, 0, 0, 0};
    uint8_t *out = dp->rsc_buf + dp->rsc_cap;
    uint32_t payload = len - h->hdrs, nseg = (payload + mss - 1) / mss;
    for (uint32_t i = 0; i < nseg; i++) {
        uint32_t off = i * mss, pay = payload - off < mss ? payload - off : mss;
        uint32_t n = hvu_off_build_seg(out, f, h, off, pay, i, i == 0, i == nseg - 1, HVU_SEG_FULL);
        if (hvu_dp_tap_write(dp, &none, out, n, HVU_DP_NO_VLAN, 0) < 0) {
            dp->ctr.rx_tap_drop += nseg - 1 - i;
            return -1;
        }
    }
    dp->ctr.rx_rsc_sw_seg++;
    return 0;
}

/* The assembled RSC frame in rsc_buf: IP/TCP checked against its length, IPv4 header checksum
 * recomputed, then one write (a TCP GSO frame when it holds more than one MSS), or, for a tap
 * without vnet header, one write per MSS-sized segment. */
static int rsc_emit(struct hvu_dp *dp)
{
    uint8_t *f = dp->rsc_buf;
    uint32_t len = dp->rsc_len, frags = dp->rsc_cnt;
    uint32_t limit = dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    uint32_t cut = 0;               /* > 0: cut into segments of this payload size (no vnet header) */
    struct hvu_vnet v = {0, HVU_VNET_GSO_NONE, 0, 0, 0, 0};
    struct hvu_l34 h = {0, 0, 0, 0, 0};
    int valid = dp->rsc_has_csum && csum_ok(dp->rsc_csum) && (dp->flags & HVU_DP_F_RX_CSUM);
    int vnet = (dp->flags & HVU_DP_F_VNET_HDR) != 0;
    int tagged = dp->rsc_vlan != HVU_DP_NO_VLAN;
    dp->rsc_cnt = 0;
    dp->rsc_len = 0;
    if (tagged) {   /* the first fragment's 802.1Q tag goes back after the MAC addresses */
        if (len + HVU_DP_VLAN_HLEN > dp->rsc_cap)
            return rsc_drop(dp, HVU_DP_RSC_TOO_LONG, (uint64_t)len + HVU_DP_VLAN_HLEN, frags);
        memmove(f + 16, f + 12, len - 12);
        hvu_dp_vlan_tag(dp->rsc_vlan, f + 12);
        len += HVU_DP_VLAN_HLEN;
    }
    if (hvu_off_parse_tcp(f, len, &h) == 0) {
        uint32_t l3_len = len - h.l3;
        uint32_t ip_len = h.ipv6 ? (uint32_t)((f[h.l3 + 4] << 8) | f[h.l3 + 5]) + 40u
                                 : (uint32_t)((f[h.l3 + 2] << 8) | f[h.l3 + 3]);
        if (ip_len != l3_len)
            return rsc_drop(dp, HVU_DP_RSC_FRAME, ip_len, frags);
        hvu_off_ip4_csum(f, &h);
        /* MSS = MTU - IP - TCP headers: no segment count comes with the frame */
        uint32_t l34 = h.hdrs - h.l3;
        if (l34 >= dp->mtu)         /* headers alone fill the MTU: no segment of it can exist */
            return rsc_drop(dp, HVU_DP_RSC_FRAME, l34, frags);
        uint32_t mss = dp->mtu - l34;
        if (len - h.hdrs > mss && vnet) {
            v.gso_type = (uint8_t)(h.ipv6 ? HVU_VNET_GSO_TCPV6 : HVU_VNET_GSO_TCPV4);
            v.gso_size = (uint16_t)mss;
            v.hdr_len = (uint16_t)h.hdrs;
        } else if (len - h.hdrs > mss) {
            /* no vnet header: cut here, as GSO would, with fresh checksums, so one the host did
             * not vouch for must be right first (the stack would have checked it) */
            if (!valid && !tcp_csum_ok(f, len, &h)) {
                const uint8_t *c = f + h.l4 + HVU_TCP_CSUM_OFF;
                return rsc_drop(dp, HVU_DP_RSC_CSUM, (uint32_t)((c[0] << 8) | c[1]), frags);
            }
            cut = mss;
        }
        if (valid && cut == 0) {
            /* NEEDS_CSUM with the pseudo-header sum: the stack takes it as verified */
            uint32_t l4_len = len - h.l4;
            uint16_t seed = hvu_csum_fold(hvu_csum_pseudo(f, &h, l4_len));
            f[h.l4 + HVU_TCP_CSUM_OFF] = (uint8_t)(seed >> 8);
            f[h.l4 + HVU_TCP_CSUM_OFF + 1] = (uint8_t)seed;
            v.flags = HVU_VNET_F_NEEDS_CSUM;
            v.csum_start = (uint16_t)h.l4;
            v.csum_offset = HVU_TCP_CSUM_OFF;
            if (!vnet)      /* no header to carry NEEDS_CSUM: complete the sum here */
                hvu_off_finish_csum(f, len, h.l4, HVU_TCP_CSUM_OFF);
        }
        if (valid)
            dp->ctr.rx_csum_valid++;
    } else if (len > limit) {
        return rsc_drop(dp, HVU_DP_RSC_FRAME, len, frags);
    } else if (valid) {
        v.flags = HVU_VNET_F_DATA_VALID;
        dp->ctr.rx_csum_valid++;
    }
    if (dp->rsc_has_csum && (dp->rsc_csum & (RXCSUM_TCP_FAILED | RXCSUM_UDP_FAILED)))
        dp->ctr.rx_csum_bad++;
    if ((cut ? rsc_segment(dp, f, len, &h, cut) : hvu_dp_tap_write(dp, &v, f, len, HVU_DP_NO_VLAN, 0)) < 0) {
        dp->ctr.rx_range_drops += frags;   /* not delivered whole: every fragment counts as dropped */
        return -1;
    }
    if (tagged)
        dp->ctr.rx_vlan++;
    dp->ctr.rx_rsc_frames++;
    dp->ctr.rx_rsc_frags += frags;
    dp->ctr.rx_ranges_written += frags;
    return 0;
}

/* One RSC fragment (pktinfo id with SUBALLOC; Linux rndis_filter_receive_data's rules: the
 * first/last flags delimit a sequence, the pkt_id is not looked at). 0 = taken (or frame
 * written), -1 = dropped. */
static int rsc_add(struct hvu_dp *dp, uint32_t id, const uint8_t *data, uint32_t len, int has_csum,
                   uint32_t csum, uint32_t vlan)
{
    uint32_t flag = (id >> 8) & 0xFF;
    if (flag & PKTID_FIRST) {
        if (dp->rsc_cnt > 0)   /* the open sequence never got its last fragment */
            rsc_drop(dp, HVU_DP_RSC_SEQUENCE, flag, dp->rsc_cnt);
        dp->rsc_len = 0;
        dp->rsc_has_csum = has_csum;
        dp->rsc_csum = csum;
        dp->rsc_vlan = vlan;
    } else if (dp->rsc_cnt == 0) {
        return rsc_drop(dp, HVU_DP_RSC_SEQUENCE, flag, 1);
    }
    if (dp->rsc_buf == NULL || dp->rsc_cnt >= HVU_DP_RSC_MAX_FRAGS || len > dp->rsc_cap - dp->rsc_len)
        return rsc_drop(dp, HVU_DP_RSC_TOO_LONG, (uint64_t)dp->rsc_len + len, dp->rsc_cnt + 1);
    memcpy(dp->rsc_buf + dp->rsc_len, data, len);
    dp->rsc_len += len;
    dp->rsc_cnt++;
    if (!(flag & PKTID_LAST))
        return 0;
    return rsc_emit(dp);
}

/* msg: a private copy of one range, n bytes. Returns 0 if a frame went out (or an RSC fragment
 * was taken), -1 if dropped. */
static int deliver(struct hvu_dp *dp, const uint8_t *msg, uint32_t n)
{
    if (n < HVU_DP_RNDIS_PKT_SIZE)
        return rndis_bad(dp, HVU_DP_RNDIS_SHORT, n);
    uint32_t type = get_u32(msg), msg_len = get_u32(msg + 4);
    uint32_t data_off = get_u32(msg + 8), data_len = get_u32(msg + 12);
    uint32_t oob_len = get_u32(msg + 20);
    uint32_t ppi_off = get_u32(msg + 28), ppi_len = get_u32(msg + 32);
    if (type != HVU_RNDIS_PACKET_MSG)
        return rndis_bad(dp, HVU_DP_RNDIS_TYPE, type);
    if (msg_len > n || msg_len < HVU_DP_RNDIS_PKT_SIZE ||
        (uint64_t)data_len + oob_len + ppi_len > msg_len)
        return rndis_bad(dp, HVU_DP_RNDIS_LEN, msg_len);
    if (data_off < HVU_DP_RNDIS_OFFSET_MIN ||
        HVU_DP_RNDIS_OFFSET_BASE + (uint64_t)data_off + data_len > msg_len)
        return rndis_bad(dp, HVU_DP_RNDIS_OFFSET, data_off);
    uint32_t csum = 0, id = 0, vlan = HVU_DP_NO_VLAN;
    int has_csum = 0, has_id = 0;
    if (ppi_len > 0) {
        if (ppi_off < HVU_DP_RNDIS_OFFSET_MIN || (ppi_off & 3u) != 0 ||
            HVU_DP_RNDIS_OFFSET_BASE + (uint64_t)ppi_off + ppi_len > msg_len)
            return rndis_bad(dp, HVU_DP_RNDIS_PKTINFO, ppi_off);
        const uint8_t *ppi = msg + HVU_DP_RNDIS_OFFSET_BASE + ppi_off;
        if (!pktinfo_ok(ppi, ppi_len))
            return rndis_bad(dp, HVU_DP_RNDIS_PKTINFO, ppi_len);
        has_csum = pktinfo_find(ppi, ppi_len, HVU_NDIS_PKTINFO_CSUM, &csum);
        has_id = pktinfo_find(ppi, ppi_len, (uint32_t)HVU_RNDIS_PKTINFO_ID_TYPE, &id);
        uint32_t value;
        int v = pktinfo_vlan(ppi, ppi_len, &value);
        if (v < 0) {
            dp->ctr.rx_vlan_bad++;
            dp->ctr.rx_range_drops++;
            hvu_dp_drop_note(dp, HVU_DP_RX_VLAN_PPI, value);
            return -1;
        }
        if (v > 0)
            vlan = value & 0xFFFFu;   /* the reserved bits 16-31 are not looked at */
    }
    const uint8_t *data = msg + HVU_DP_RNDIS_OFFSET_BASE + data_off;
    uint32_t rsc_flag = has_id ? (id >> 8) & 0xFF : 0;
    /* A whole frame or a first fragment starts with an Ethernet header; a continuation fragment
     * is any non-empty piece of the coalesced frame (a host cuts it wherever a section ends). */
    int continuation = (rsc_flag & PKTID_SUBALLOC) && !(rsc_flag & PKTID_FIRST);
    if (data_len < (continuation ? 1u : HVU_DP_ETH_HLEN))
        return rndis_bad(dp, HVU_DP_RNDIS_DATA_LEN, data_len);
    if (rsc_flag & PKTID_SUBALLOC)
        return rsc_add(dp, id, data, data_len, has_csum, csum, vlan);
    if (dp->rsc_cnt > 0)        /* a whole packet inside an open sequence: that sequence is broken */
        rsc_drop(dp, HVU_DP_RSC_SEQUENCE, 0, dp->rsc_cnt);
    uint32_t tag_len = vlan == HVU_DP_NO_VLAN ? 0u : HVU_DP_VLAN_HLEN;
    if (data_len + tag_len > dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN) {
        dp->ctr.rx_oversize++;
        dp->ctr.rx_range_drops++;
        hvu_dp_drop_note(dp, HVU_DP_RX_OVERSIZE, data_len + tag_len);
        return -1;
    }
    struct hvu_vnet v = {0, HVU_VNET_GSO_NONE, 0, 0, 0, 0};
    if (has_csum && (dp->flags & HVU_DP_F_RX_CSUM)) {
        if (csum_ok(csum)) {
            v.flags = HVU_VNET_F_DATA_VALID;
            dp->ctr.rx_csum_valid++;
        } else if (csum & (RXCSUM_TCP_FAILED | RXCSUM_UDP_FAILED)) {
            dp->ctr.rx_csum_bad++;
        }
    }
    int w = hvu_dp_tap_write(dp, &v, data, data_len, vlan, 1);
    if (w < 0) {
        dp->ctr.rx_range_drops++;
        return -1;
    }
    if (w == 0)
        dp->ctr.rx_ranges_written++;   /* queued (1): counted when the write completes */
    return 0;
}

/* One RNDIS data message the control path met in a transfer-page packet it owns (a packet that
 * holds control messages too: datapath.h, "Mixed packets"). msg: the caller's private copy, len
 * bytes, at most a receive section. The same checks, offloads and RSC sequence as a range the
 * pump reads itself; the caller completes the packet. 0 = frame written or RSC fragment taken,
 * 1 = dropped (counted), -EINVAL. */
int hvu_dp_rx_data(struct hvu_dp *dp, const uint8_t *msg, uint32_t len)
{
    if (dp == NULL || !dp->initialised || msg == NULL || len > dp->recv_section)
        return -EINVAL;
    dp->ctr.rx_ranges++;
    dp->ctr.rx_ctl_data++;
    dp->io.cur_failed = 0;
    int r = deliver(dp, msg, len);
    /* the caller completes the packet: the write must have completed (tapio.c) */
    if (dp->io.on && hvu_dp_io_reap(dp) < 0)
        return -dp->err_no;
    return r < 0 || dp->io.cur_failed ? 1 : 0;
}

/* ---- one transfer-page packet ----------------------------------------------------------------- */

static int range_ok(const struct hvu_dp *dp, const struct hvu_xfer_range *rg)
{
    return rg->byte_offset <= dp->recv_size && rg->byte_count != 0 &&
           rg->byte_count <= dp->recv_size - rg->byte_offset && rg->byte_count <= dp->recv_section;
}

/* pkt: private copy of a type 0x7 packet, len bytes. Returns 1 to leave it for Python, 0 when
 * handled (the caller consumes it), or a negative errno. */
static int rx_xfer(struct hvu_dp *dp, const uint8_t *pkt, uint32_t len, const struct hvu_pkt_desc *d)
{
    struct hvu_fault f;
    int bad_ranges = 0;
    if (hvu_xfer_check(pkt, len, HVU_XFER_PAGESET_ID_NETVSC, dp->recv_size, dp->recv_section, &f) < 0) {
        if (f.reason != HVU_BAD_RANGE) {
            dp->ctr.rx_bad_xfer++;   /* header unusable: dropped without completion, as Linux */
            hvu_dp_drop_note(dp, f.reason, f.value);
            return 0;
        }
        bad_ranges = 1;              /* header fine; ranges are checked one by one below */
    }
    uint32_t hlen = (uint32_t)d->offset8 * 8u;
    const uint8_t *nvs = pkt + hlen;
    uint32_t plen = len - hlen;
    if (plen < 8) {
        dp->ctr.rx_bad_nvs++;
        hvu_dp_drop_note(dp, HVU_DP_NVS_SHORT, plen);
        return 0;
    }
    uint32_t nvs_type = get_u32(nvs);
    if (nvs_type != HVU_NVS_TYPE_RNDIS) {
        dp->ctr.rx_bad_nvs++;
        hvu_dp_drop_note(dp, HVU_DP_NVS_TYPE, nvs_type);
        return 0;
    }
    if (get_u32(nvs + 4) != HVU_NVS_RNDIS_DATA)
        return 1;
    struct hvu_xfer_hdr xh;
    memcpy(&xh, pkt + HVU_DESC_SIZE, sizeof(xh));
    const uint8_t *ranges = pkt + HVU_DESC_SIZE + sizeof(xh);
    /* Pass 1: any RNDIS message that is not a data packet makes the whole packet Python's (its
     * data messages come back one by one through hvu_dp_rx_data). */
    for (uint32_t i = 0; i < xh.range_cnt; i++) {
        struct hvu_xfer_range rg;
        memcpy(&rg, ranges + (size_t)i * sizeof(rg), sizeof(rg));
        if (range_ok(dp, &rg) && rg.byte_count >= 4 &&
            get_u32(dp->recv_buf + rg.byte_offset) != HVU_RNDIS_PACKET_MSG)
            return 1;
    }
    /* Pass 2: copy each range out (VMBUS.md §4.16), then parse only the copy. */
    uint32_t status = HVU_NVS_STATUS_OK;
    dp->io.cur_failed = 0;
    for (uint32_t i = 0; i < xh.range_cnt; i++) {
        struct hvu_xfer_range rg;
        memcpy(&rg, ranges + (size_t)i * sizeof(rg), sizeof(rg));
        dp->ctr.rx_ranges++;
        if (bad_ranges && !range_ok(dp, &rg)) {
            dp->ctr.rx_bad_xfer++;
            dp->ctr.rx_range_drops++;
            hvu_dp_drop_note(dp, HVU_BAD_RANGE,
                             rg.byte_offset > dp->recv_size ? rg.byte_offset : rg.byte_count);
            status = HVU_NVS_STATUS_FAILED;
            continue;
        }
        memcpy(dp->range_buf, dp->recv_buf + rg.byte_offset, rg.byte_count);
        if (deliver(dp, dp->range_buf, rg.byte_count) < 0)
            status = HVU_NVS_STATUS_FAILED;
    }
    if (dp->io.cur_failed)
        status = HVU_NVS_STATUS_FAILED;
    if (dp->io.cur_queued > 0) {
        /* its frames are queued on the io_uring: completed after they are written (tapio.c) */
        dp->io.defer[dp->io.ndefer].trans_id = d->trans_id;
        dp->io.defer[dp->io.ndefer].status = status;
        dp->io.ndefer++;
        dp->io.cur_queued = 0;
        return 0;
    }
    int rc = hvu_dp_complete_rx(dp, d->trans_id, status);
    return rc < 0 ? rc : 0;
}

/* ---- the read batch ------------------------------------------------------------------------------- */

/* Handles packets at the head of the inbound ring until it is empty, the budget is used, a
 * packet for Python is next, or pend[] is full. Publishes read_index once and signals once. */
int hvu_dp_rx(struct hvu_dp *dp, unsigned budget)
{
    if (dp == NULL || !dp->initialised)
        return -EINVAL;
    int rc = hvu_dp_flush_completions(dp);
    int status = HVU_DP_IDLE, err = rc < 0 ? rc : 0;
    for (unsigned done = 0; err == 0; done++) {
        struct hvu_pkt_desc d;
        if (done >= budget) {
            status = HVU_DP_BUDGET;
            break;
        }
        rc = hvu_ring_peek(dp->rx, &d);
        if (rc == -EAGAIN)
            break;
        if (rc < 0) {
            err = rc;
            break;
        }
        uint32_t len = (uint32_t)d.len8 * 8u;
        int mine = len <= dp->pkt_cap &&
                   (d.type == HVU_PKT_XFER_PAGES ||
                    (d.type == HVU_PKT_COMP && (d.trans_id & HVU_DP_TX_TAG) != 0));
        if (!mine) {
            status = HVU_DP_CONTROL;
            break;
        }
        if (d.type == HVU_PKT_XFER_PAGES && dp->npend + dp->io.ndefer >= HVU_DP_PENDING_MAX) {
            status = HVU_DP_BLOCKED;   /* no room to remember its completion: wait for the ring */
            break;
        }
        rc = hvu_ring_copyout(dp->rx, dp->pkt_buf, dp->pkt_cap, &d);
        if (rc < 0) {
            err = rc;
            break;
        }
        uint32_t hlen = (uint32_t)d.offset8 * 8u;
        if (d.type == HVU_PKT_COMP) {
            hvu_dp_tx_complete(dp, d.trans_id, dp->pkt_buf + hlen, len - hlen);
        } else {
            rc = rx_xfer(dp, dp->pkt_buf, len, &d);
            if (rc == 1) {
                status = HVU_DP_CONTROL;
                break;
            }
            dp->ctr.rx_xfer++;
            if (rc < 0)
                err = rc;   /* handled and its completion queued: consume it, then stop */
        }
        rc = hvu_ring_consume(dp->rx);
        if (rc < 0 && err == 0)
            err = rc;
    }
    if (status == HVU_DP_CONTROL)
        dp->ctr.rx_control++;
    /* tapio.c: the batch's queued tap writes in one io_uring_enter, then their completions */
    rc = hvu_dp_io_reap(dp);
    if (rc < 0 && err == 0)
        err = rc;
    rc = hvu_ring_close(dp->rx);
    if (rc > 0)
        dp->need_signal = 1;
    else if (rc < 0 && err == 0)
        err = rc;
    if (dp->need_signal) {
        rc = hvu_dp_signal(dp);
        if (rc < 0 && err == 0)
            err = rc;
    }
    return err < 0 ? err : status;
}
