/* Data path, guest -> host: frames from the tap -> RNDIS packet messages in send-buffer sections
 * -> NVS 107 messages in the outbound ring; the host's completions free the sections.
 *
 * What lives here: the section bitmap, hvu_dp_tx (one batch of tap reads), stop/wake of the
 * queue with the outbound pending_send_sz, the handling of tagged completions, and the offload
 * stage (vnet header checks, checksum/LSO pktinfo, GSO frames cut to send sections). The rules and
 * their sources are in datapath.h's header comment. No allocation, no printing.
 */
#define _POSIX_C_SOURCE 200809L   /* poll, readv/writev, clock_gettime under -std=c11 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "datapath.h"

/* descriptor + NVS message, already a multiple of 8, plus the trailer: must stay < free bytes */
#define NVS_PKT_TOTAL (HVU_DESC_SIZE + HVU_DP_NVS_MSG_SIZE + HVU_TRAILER_SIZE)

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof(v)); }

/* ---- section bitmap ------------------------------------------------------------------------------ */

static int sect_busy(const struct hvu_dp *dp, uint32_t i)
{
    return (dp->sect_map[i / 64] >> (i % 64)) & 1u;
}

/* A free section index, or -1. Searches from the last hit so allocation stays O(1) on average. */
static int sect_find(struct hvu_dp *dp)
{
    uint32_t words = (dp->send_count + 63) / 64;
    for (uint32_t k = 0; k < words; k++) {
        uint32_t w = (dp->sect_hint + k) % words;
        uint64_t free_bits = ~dp->sect_map[w];
        if (w == words - 1 && dp->send_count % 64 != 0)
            free_bits &= (1ULL << (dp->send_count % 64)) - 1;
        if (free_bits != 0) {
            dp->sect_hint = w;
            return (int)(w * 64 + (uint32_t)__builtin_ctzll(free_bits));
        }
    }
    return -1;
}

static void sect_set(struct hvu_dp *dp, uint32_t i)
{
    dp->sect_map[i / 64] |= 1ULL << (i % 64);
    dp->sect_used++;
}

static void sect_clear(struct hvu_dp *dp, uint32_t i)
{
    dp->sect_map[i / 64] &= ~(1ULL << (i % 64));
    dp->sect_used--;
}

uint32_t hvu_dp_sections_in_use(const struct hvu_dp *dp) { return dp->sect_used; }

/* ---- completions --------------------------------------------------------------------------------- */

/* trans_id has the TX tag. Unknown or already-free sections are counted and ignored; a known
 * section is freed whatever the payload says (VMBus completes by trans_id), but a completion that
 * is not NVS 108 with status OK counts as a TX error. */
void hvu_dp_tx_complete(struct hvu_dp *dp, uint64_t trans_id, const uint8_t *payload, uint32_t plen)
{
    uint64_t idx = trans_id & ~HVU_DP_TX_TAG;
    if (idx >= dp->send_count || !sect_busy(dp, (uint32_t)idx) || (int64_t)idx == dp->held) {
        dp->ctr.tx_bad_comp++;
        hvu_dp_drop_note(dp, HVU_DP_COMP_UNKNOWN, trans_id);
        return;
    }
    sect_clear(dp, (uint32_t)idx);
    dp->ctr.tx_completions++;
    uint32_t type = 0, status = 0;
    if (plen >= 8) {
        memcpy(&type, payload, 4);
        memcpy(&status, payload + 4, 4);
    }
    if (plen < 8) {
        dp->ctr.tx_errors++;
        hvu_dp_drop_note(dp, HVU_DP_NVS_SHORT, plen);
    } else if (type != HVU_NVS_TYPE_RNDIS_ACK) {
        dp->ctr.tx_errors++;
        hvu_dp_drop_note(dp, HVU_DP_NVS_TYPE, type);
    } else if (status != HVU_NVS_STATUS_OK) {
        dp->ctr.tx_errors++;
    }
}

/* ---- stop / wake ----------------------------------------------------------------------------------- */

static void tx_block(struct hvu_dp *dp, int ring_full)
{
    if (!dp->tx_blocked) {
        dp->tx_blocked = 1;
        dp->ctr.stop_queue++;
    }
    if (ring_full && !dp->pending_sz_set) {
        /* ask for an interrupt once a quarter of the ring is free (spec 3.11 c) */
        uint32_t want = (hvu_ring_data_size(dp->tx) / 4) & ~7u;
        if (want >= NVS_PKT_TOTAL && hvu_ring_set_pending_send_sz(dp->tx, want) == 0)
            dp->pending_sz_set = 1;
    }
}

static void tx_wake(struct hvu_dp *dp)
{
    if (dp->pending_sz_set) {
        hvu_ring_set_pending_send_sz(dp->tx, 0);
        dp->pending_sz_set = 0;
    }
    if (dp->tx_blocked) {
        dp->tx_blocked = 0;
        dp->ctr.wake_queue++;
    }
}

/* 1 if one more frame can go out now, 0 if blocked, negative errno if the outbound ring failed. */
int hvu_dp_tx_can_send(struct hvu_dp *dp)
{
    if (dp->npend > 0) {   /* receive completions come first; they wait for ring space too */
        tx_block(dp, 1);
        return 0;
    }
    int64_t room = hvu_ring_bytes_free(dp->tx);
    if (room < 0)
        return (int)room;
    if (room <= NVS_PKT_TOTAL) {
        dp->ctr.tx_busy++;
        tx_block(dp, 1);
        return 0;
    }
    if (dp->held < 0 && dp->sect_used >= dp->send_count) {
        dp->ctr.tx_no_space++;
        tx_block(dp, 0);
        return 0;
    }
    return 1;
}

/* ---- one frame --------------------------------------------------------------------------------------- */

/* RNDIS packet message header in front of the frame: the optional hash pktinfo, then one more
 * pktinfo of type ppi_type (checksum or LSO) when ppi_type >= 0. Returns the header length. */
static uint32_t write_rndis_header(struct hvu_dp *dp, uint8_t *sect, uint32_t frame_len, int ppi_type,
                                   uint32_t ppi_value)
{
    uint32_t hdr = dp->tx_hdr_len + (ppi_type >= 0 ? HVU_DP_PPI_SIZE : 0);
    uint32_t ppi_len = hdr - HVU_DP_RNDIS_PKT_SIZE;
    memset(sect, 0, hdr);
    put_u32(sect, HVU_RNDIS_PACKET_MSG);
    put_u32(sect + 4, hdr + frame_len);                     /* msg_len */
    put_u32(sect + 8, hdr - HVU_DP_RNDIS_OFFSET_BASE);     /* data_offset, from byte 8 */
    put_u32(sect + 12, frame_len);                          /* data_len */
    if (ppi_len > 0) {
        put_u32(sect + 28, HVU_DP_RNDIS_PKT_SIZE - HVU_DP_RNDIS_OFFSET_BASE);  /* pktinfo_offset */
        put_u32(sect + 32, ppi_len);                                            /* pktinfo_len */
    }
    uint8_t *ppi = sect + HVU_DP_RNDIS_PKT_SIZE;
    if (dp->flags & HVU_DP_F_TX_HASH) {
        put_u32(ppi, HVU_DP_RNDIS_HASH_PPI_SIZE);
        put_u32(ppi + 4, HVU_DP_NDIS_HASHVAL);
        put_u32(ppi + 8, HVU_DP_PPI_HEAD);
        put_u32(ppi + 12, dp->tx_hash);
        ppi += HVU_DP_RNDIS_HASH_PPI_SIZE;
    }
    if (ppi_type >= 0) {
        put_u32(ppi, HVU_DP_PPI_SIZE);
        put_u32(ppi + 4, (uint32_t)ppi_type);
        put_u32(ppi + 8, HVU_DP_PPI_HEAD);
        put_u32(ppi + 12, ppi_value);
    }
    return hdr;
}

/* NVS 107 for section idx; 0, -EAGAIN (ring full: the section stays held) or -EIO. */
static int send_section(struct hvu_dp *dp, uint32_t idx, uint32_t msg_len)
{
    uint8_t msg[HVU_DP_NVS_MSG_SIZE];
    memset(msg, 0, sizeof(msg));
    put_u32(msg, HVU_NVS_TYPE_RNDIS);
    put_u32(msg + 4, HVU_NVS_RNDIS_DATA);
    put_u32(msg + 8, idx);
    put_u32(msg + 12, msg_len);
    struct hvu_seg seg = {msg, sizeof(msg)};
    return hvu_ring_send(dp->tx, HVU_PKT_INBAND, HVU_PKT_FLAG_COMPLETION_REQUESTED,
                         HVU_DP_TX_TAG | idx, &seg, 1, &dp->need_signal);
}

static int send_held(struct hvu_dp *dp)
{
    uint32_t idx = (uint32_t)dp->held;
    int rc = send_section(dp, idx, dp->held_msg);
    if (rc < 0)
        return rc;
    dp->held = -1;
    dp->ctr.tx_packets++;
    if (dp->held_lso)
        dp->ctr.tx_lso++;
    dp->ctr.tx_bytes += dp->held_len;
    return 0;
}

/* One readv from the tap. > 0 = bytes read (at least `min`), 0 = a runt dropped (counted),
 * -EAGAIN = tap empty, other negative = tap error. */
static ssize_t tap_readv(struct hvu_dp *dp, struct iovec *iov, int n, size_t min)
{
    ssize_t r;
    do {
        r = readv(dp->tap_fd, iov, n);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK)
            return -EAGAIN;
        dp->ctr.tx_tap_err++;
        return hvu_dp_sys_error(dp, HVU_DP_FD_TAP, e);
    }
    if ((size_t)r < min) {
        dp->ctr.tx_runt++;
        hvu_dp_drop_note(dp, HVU_DP_TX_RUNT, (uint64_t)r);
        return 0;
    }
    return r;
}

/* Reads one frame into a free section. 1 = a frame is held for sending, 0 = frame dropped
 * (counted), -EAGAIN = tap empty, other negative = tap error. */
static int read_frame(struct hvu_dp *dp)
{
    int idx = sect_find(dp);
    if (idx < 0)
        return -ENOSPC;   /* cannot happen: hvu_dp_tx_can_send checked sect_used */
    uint8_t *sect = dp->send_buf + (size_t)idx * dp->send_section;
    uint32_t space = dp->send_section - dp->tx_hdr_len;
    uint32_t limit = dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    if (space > limit)
        space = limit;
    uint8_t vnet[HVU_DP_VNET_HDR_SIZE], probe;
    struct iovec iov[3];
    int n = 0;
    uint32_t vlen = (dp->flags & HVU_DP_F_VNET_HDR) ? HVU_DP_VNET_HDR_SIZE : 0;
    if (vlen) {
        iov[n].iov_base = vnet;
        iov[n++].iov_len = vlen;
    }
    iov[n].iov_base = sect + dp->tx_hdr_len;
    iov[n++].iov_len = space;
    iov[n].iov_base = &probe;   /* one byte past the room: a frame reaching it is too big */
    iov[n++].iov_len = 1;
    ssize_t r = tap_readv(dp, iov, n, vlen + HVU_DP_ETH_HLEN);
    if (r <= 0)
        return (int)r;
    uint32_t frame = (uint32_t)((size_t)r - vlen);
    if (frame > space) {
        dp->ctr.tx_oversize++;
        hvu_dp_drop_note(dp, HVU_DP_TX_OVERSIZE, frame);
        return 0;
    }
    dp->held_msg = write_rndis_header(dp, sect, frame, -1, 0) + frame;
    sect_set(dp, (uint32_t)idx);
    dp->held = idx;
    dp->held_len = frame;
    dp->held_lso = 0;
    return 1;
}

/* ---- offloads: one tap frame in the stage, emitted in pieces -------------------------------------- */

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
 * the section next to the frame (a frame of the largest MTU may not leave room), else software. */
static void stage_whole_csum(struct hvu_dp *dp, uint8_t *f, uint32_t len, const struct hvu_vnet *v)
{
    uint32_t info = 0;
    if ((uint64_t)dp->tx_hdr_len + HVU_DP_PPI_SIZE + len <= dp->send_section)
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
    if (dp->send_section - dp->tx_hdr_len < h.hdrs + mss)
        return stage_oversize(dp, mss);   /* not even one segment fits a section */
    uint32_t room = dp->send_section - dp->tx_hdr_len - HVU_DP_PPI_SIZE;   /* with one pktinfo */
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
    ssize_t r = tap_readv(dp, iov, 2, HVU_DP_VNET_HDR_SIZE + HVU_DP_ETH_HLEN);
    if (r <= 0)
        return (int)r;
    uint32_t len = (uint32_t)((size_t)r - HVU_DP_VNET_HDR_SIZE);
    if (len > dp->stage_cap)
        return stage_oversize(dp, len);
    return stage_prepare(dp, len);
}

/* Builds the next RNDIS packet of the staged frame in a free section (the caller checked there
 * is one) and holds it for sending. 1 = held, 0 = the frame was dropped (counted). */
static int stage_emit(struct hvu_dp *dp)
{
    int idx = sect_find(dp);
    if (idx < 0)
        return -ENOSPC;   /* cannot happen: hvu_dp_tx_can_send checked sect_used */
    uint8_t *sect = dp->send_buf + (size_t)idx * dp->send_section;
    const uint8_t *f = dp->stage + HVU_DP_VNET_HDR_SIZE;
    uint32_t len = dp->stage_len, hdr, n;
    int lso = 0;
    if (dp->stage_kind != STAGE_SEGS) {
        int csum = dp->stage_kind == STAGE_CSUM;
        hdr = write_rndis_header(dp, sect, len, csum ? HVU_NDIS_PKTINFO_CSUM : -1, dp->stage_csum);
        dp->stage_len = 0;
        if (hdr + len > dp->send_section)
            return stage_oversize(dp, len);
        memcpy(sect + hdr, f, len);
        if (csum)
            dp->ctr.tx_csum_ppi++;
        n = len;
    } else {
        struct hvu_l34 h = {dp->stage_l3, dp->stage_l4, dp->stage_hdrs, (int)dp->stage_v6,
                            dp->stage_proto};
        uint32_t payload = len - h.hdrs, mss = dp->stage_mss;
        uint32_t pay = payload - dp->stage_next;
        if (pay > dp->stage_per)
            pay = dp->stage_per;
        uint32_t nseg = (pay + mss - 1) / mss;
        int first = dp->stage_next == 0, last = dp->stage_next + pay == payload;
        int mode;
        if (dp->stage_lso && nseg >= 2) {
            uint32_t info = mss | (h.l4 << LSO2_THOFF_SHIFT) | LSO2_ISLSO2 | (h.ipv6 ? LSO2_ISIPV6 : 0);
            hdr = write_rndis_header(dp, sect, h.hdrs + pay, HVU_NDIS_PKTINFO_LSO, info);
            mode = HVU_SEG_LSO;
            lso = 1;
        } else {
            uint32_t want = h.ipv6 ? HVU_DP_F_TX_CSUM_TCP6 : HVU_DP_F_TX_CSUM_TCP4;
            if ((dp->flags & want) &&
                dp->tx_hdr_len + HVU_DP_PPI_SIZE + h.hdrs + pay <= dp->send_section) {
                uint32_t info = (h.ipv6 ? TXCSUM_IPV6 : TXCSUM_IPV4) | TXCSUM_TCP |
                                (h.l4 << TXCSUM_THOFF_SHIFT);
                hdr = write_rndis_header(dp, sect, h.hdrs + pay, HVU_NDIS_PKTINFO_CSUM, info);
                mode = HVU_SEG_PARTIAL;
                dp->ctr.tx_csum_ppi++;
            } else {
                hdr = write_rndis_header(dp, sect, h.hdrs + pay, -1, 0);
                mode = HVU_SEG_FULL;
                dp->ctr.tx_sw_csum++;
            }
            dp->ctr.tx_sw_seg++;
        }
        n = hvu_off_build_seg(sect + hdr, f, &h, dp->stage_next, pay, dp->stage_seg, first, last, mode);
        dp->stage_next += pay;
        dp->stage_seg += nseg;
        if (last)
            dp->stage_len = 0;
    }
    sect_set(dp, (uint32_t)idx);
    dp->held = idx;
    dp->held_len = n;
    dp->held_msg = hdr + n;
    dp->held_lso = lso;
    return 1;
}

/* Moves up to `budget` frames from the tap to the host; signals once. */
int hvu_dp_tx(struct hvu_dp *dp, unsigned budget)
{
    if (dp == NULL || !dp->initialised)
        return -EINVAL;
    int err = hvu_dp_flush_completions(dp);
    int status = HVU_DP_IDLE;
    for (unsigned done = 0; err == 0; done++) {
        if (done >= budget) {
            status = HVU_DP_BUDGET;
            break;
        }
        int ok = hvu_dp_tx_can_send(dp);
        if (ok < 0) {
            err = ok;
            break;
        }
        if (ok == 0) {
            status = HVU_DP_BLOCKED;
            break;
        }
        tx_wake(dp);
        if (dp->held < 0 && (dp->flags & HVU_DP_F_TAP_OFFLOAD)) {
            if (dp->stage_len == 0) {
                int rc = stage_read(dp);
                if (rc == -EAGAIN)
                    break;
                if (rc < 0) {
                    err = rc;
                    break;
                }
                if (rc == 0)
                    continue;
            }
            int rc = stage_emit(dp);
            if (rc < 0) {
                err = rc;
                break;
            }
            if (rc == 0)
                continue;
        } else if (dp->held < 0) {
            int rc = read_frame(dp);
            if (rc == -EAGAIN)
                break;
            if (rc < 0) {
                err = rc;
                break;
            }
            if (rc == 0)
                continue;
        }
        int rc = send_held(dp);
        if (rc == -EAGAIN) {   /* not expected after can_send; the frame stays held */
            dp->ctr.tx_busy++;
            tx_block(dp, 1);
            status = HVU_DP_BLOCKED;
            break;
        }
        if (rc < 0)
            err = rc;
    }
    if (dp->need_signal) {
        int rc = hvu_dp_signal(dp);
        if (rc < 0 && err == 0)
            err = rc;
    }
    return err < 0 ? err : status;
}
