/* Data path, guest -> host: frames from the tap -> RNDIS packet messages in send-buffer sections
 * -> NVS 107 messages in the outbound ring; the host's completions free the sections.
 *
 * What lives here: the section bitmap, the held send (one section being filled, several RNDIS
 * packets in it when the host allows aggregation), hvu_dp_tx (one batch of tap reads), stop/wake
 * of the queue with the outbound pending_send_sz, the handling of tagged completions, where a
 * message may be; a tagged frame's tag moved into the 802.1Q pktinfo (vlan.c). The offload stage (vnet headers, checksum/LSO pktinfo, GSO frames cut to sections
 * or slots) is tx_stage.c; slots, the type-9 packet, where a message goes when GPA-direct is on
 * and a plain tap's read into a slot are tx_gpa.c; the tap read itself (readv, or the io_uring)
 * is tapio.c. The rules and their sources are in datapath.h's header comment. No allocation, no
 * printing.
 */
#define _POSIX_C_SOURCE 200809L   /* poll, readv/writev, clock_gettime under -std=c11 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "datapath.h"

/* descriptor + NVS message, already a multiple of 8, plus the trailer: must stay < free bytes */
#define NVS_PKT_TOTAL (HVU_DESC_SIZE + HVU_DP_NVS_MSG_SIZE + HVU_TRAILER_SIZE)
_Static_assert(HVU_DP_TX_RING_MIN == NVS_PKT_TOTAL + 8,
               "the smallest outbound ring holds one NVS message and the 8 bytes kept free");

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof(v)); }

/* 1 when a packet may go GPA-direct: a pool, and either offloads (the stage decides per packet)
 * or a plain tap whose largest frame does not fit a section */
int hvu_dp_gpa_emit(const struct hvu_dp *dp)
{
    return dp->gpa_slot != 0 && ((dp->flags & HVU_DP_F_TAP_OFFLOAD) || dp->gpa_plain);
}

/* Ring bytes the next packet may take (descriptor, payload, trailer). */
static uint32_t pkt_need(const struct hvu_dp *dp)
{
    return hvu_dp_gpa_emit(dp) && dp->gpa_pkt_total > NVS_PKT_TOTAL ? dp->gpa_pkt_total : NVS_PKT_TOTAL;
}

/* The largest RNDIS message one packet may be: a section, or a slot when GPA-direct is on. */
uint32_t hvu_dp_tx_msg_cap(const struct hvu_dp *dp)
{
    return hvu_dp_gpa_emit(dp) && dp->gpa_slot > dp->send_section ? dp->gpa_slot : dp->send_section;
}

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
    if (trans_id & HVU_DP_GPA_BIT) {
        hvu_dp_gpa_complete(dp, trans_id, payload, plen);
        return;
    }
    uint64_t idx = trans_id & ~HVU_DP_TX_TAG;
    if (idx >= dp->send_count || !sect_busy(dp, (uint32_t)idx) || (int64_t)idx == dp->held) {
        dp->ctr.tx_bad_comp++;
        hvu_dp_drop_note(dp, HVU_DP_COMP_UNKNOWN, trans_id);
        return;
    }
    sect_clear(dp, (uint32_t)idx);
    dp->ctr.tx_completions++;
    hvu_dp_tx_comp_status(dp, payload, plen);
}

/* The NVS payload of a completion that freed a section or slot: not 108 / OK = a TX error. */
void hvu_dp_tx_comp_status(struct hvu_dp *dp, const uint8_t *payload, uint32_t plen)
{
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

void hvu_dp_tx_block(struct hvu_dp *dp, int ring_full)
{
    if (!dp->tx_blocked) {
        dp->tx_blocked = 1;
        dp->ctr.stop_queue++;
    }
    if (ring_full && !dp->pending_sz_set) {
        /* ask for an interrupt once a quarter of the ring is free (VMBUS.md §3.11 c) */
        uint32_t want = (hvu_ring_data_size(dp->tx) / 4) & ~7u;
        if (want >= pkt_need(dp) && hvu_ring_set_pending_send_sz(dp->tx, want) == 0)
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
        hvu_dp_tx_block(dp, 1);
        return 0;
    }
    int64_t room = hvu_ring_bytes_free(dp->tx);
    if (room < 0)
        return (int)room;
    if (room <= pkt_need(dp)) {
        dp->ctr.tx_busy++;
        hvu_dp_tx_block(dp, 1);
        return 0;
    }
    /* without GPA-direct every packet needs a section; with it the packet source says what the
     * packet it keeps waits for (HVU_DP_TX_WAIT) and TX waits here for that */
    int no_section = dp->held < 0 && dp->sect_used >= dp->send_count;
    if (!hvu_dp_gpa_emit(dp) ? no_section : dp->tx_wait == HVU_DP_WAIT_SECTION && no_section) {
        dp->ctr.tx_no_space++;
        hvu_dp_tx_block(dp, 0);
        return 0;
    }
    if (hvu_dp_gpa_emit(dp) && dp->tx_wait == HVU_DP_WAIT_SLOT && dp->gpa_used >= dp->gpa_count) {
        dp->ctr.tx_gpa_busy++;
        hvu_dp_tx_block(dp, 0);
        return 0;
    }
    return 1;
}

/* ---- RNDIS packet header ------------------------------------------------------------------------ */

/* RNDIS packet message header at msg, in front of the frame: the optional hash pktinfo, then one
 * more pktinfo of type ppi_type (checksum or LSO) when ppi_type >= 0. Returns the header length. */
uint32_t hvu_dp_tx_header(struct hvu_dp *dp, uint8_t *msg, uint32_t frame_len, int ppi_type, uint32_t ppi_value)
{
    return hvu_dp_tx_header_vlan(dp, msg, frame_len, ppi_type, ppi_value, HVU_DP_NO_VLAN);
}

/* The same, then the 802.1Q pktinfo when vlan != HVU_DP_NO_VLAN (Linux netvsc_xmit adds it next
 * to the checksum or LSO one). */
uint32_t hvu_dp_tx_header_vlan(struct hvu_dp *dp, uint8_t *msg, uint32_t frame_len, int ppi_type,
                               uint32_t ppi_value, uint32_t vlan)
{
    uint32_t hdr = dp->tx_hdr_len + (ppi_type >= 0 ? HVU_DP_PPI_SIZE : 0) + hvu_dp_vlan_ppi_len(vlan);
    uint32_t ppi_len = hdr - HVU_DP_RNDIS_PKT_SIZE;
    memset(msg, 0, hdr);
    put_u32(msg, HVU_RNDIS_PACKET_MSG);
    put_u32(msg + 4, hdr + frame_len);                     /* msg_len */
    put_u32(msg + 8, hdr - HVU_DP_RNDIS_OFFSET_BASE);     /* data_offset, from byte 8 */
    put_u32(msg + 12, frame_len);                          /* data_len */
    if (ppi_len > 0) {
        put_u32(msg + 28, HVU_DP_RNDIS_PKT_SIZE - HVU_DP_RNDIS_OFFSET_BASE);  /* pktinfo_offset */
        put_u32(msg + 32, ppi_len);                                            /* pktinfo_len */
    }
    uint8_t *ppi = msg + HVU_DP_RNDIS_PKT_SIZE;
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
        ppi += HVU_DP_PPI_SIZE;
    }
    if (vlan != HVU_DP_NO_VLAN) {
        put_u32(ppi, HVU_DP_PPI_SIZE);
        put_u32(ppi + 4, HVU_NDIS_PKTINFO_VLAN);
        put_u32(ppi + 8, HVU_DP_PPI_HEAD);
        put_u32(ppi + 12, vlan);
    }
    return hdr;
}

/* ---- the held send: one section, one or more RNDIS packets ------------------------------------- */

/* Where a message of msg_len bytes would start in the held section, or 0 when it cannot join:
 * the host's packet count or aggregate size would be passed. Every message but the last of a
 * send is padded to the host's alignment (Linux netvsc_copy_to_send_buf, DPDK hn_try_txagg). */
static uint32_t agg_offset(const struct hvu_dp *dp, uint32_t msg_len)
{
    if (dp->held < 0 || dp->held_cnt >= dp->agg_pkts)
        return 0;
    uint64_t off = ((uint64_t)dp->held_msg + dp->agg_align - 1) & ~(uint64_t)(dp->agg_align - 1);
    if (off + msg_len > dp->agg_size)
        return 0;
    return (uint32_t)off;
}

/* Where the next message of msg_len bytes (<= a section, the caller checked) is to be written:
 * after the held one when it may join, else at the start of a free section when none is held.
 * NULL: see hvu_dp_tx_no_place. hvu_dp_tx_commit makes it part of the held send. */
uint8_t *hvu_dp_tx_place(struct hvu_dp *dp, uint32_t msg_len)
{
    uint32_t off = 0;
    int idx = dp->held;
    if (idx >= 0) {
        off = agg_offset(dp, msg_len);
        if (off == 0)
            return NULL;
    } else {
        idx = sect_find(dp);
        if (idx < 0)
            return NULL;
    }
    dp->place_idx = (uint32_t)idx;
    dp->place_off = off;
    return dp->send_buf + (size_t)idx * dp->send_section + off;
}

/* Why hvu_dp_tx_place gave NULL: HVU_DP_TX_FLUSH (send the held section first), or -ENOSPC (no
 * free section: cannot happen after hvu_dp_tx_can_send said yes). */
int hvu_dp_tx_no_place(const struct hvu_dp *dp)
{
    return dp->held >= 0 ? HVU_DP_TX_FLUSH : -ENOSPC;
}

/* The message just written where hvu_dp_tx_place said joins the held send. */
void hvu_dp_tx_commit(struct hvu_dp *dp, uint32_t msg_len, uint32_t frame_len, int lso)
{
    uint8_t *sect = dp->send_buf + (size_t)dp->place_idx * dp->send_section;
    if (dp->held >= 0) {
        uint32_t pad = dp->place_off - dp->held_msg;   /* the previous message grows by the padding */
        memset(sect + dp->held_msg, 0, pad);
        put_u32(sect + dp->held_last + 4, dp->held_last_len + pad);
        dp->held_cnt++;
    } else {
        sect_set(dp, dp->place_idx);
        dp->held = (int)dp->place_idx;
        dp->held_cnt = 1;
        dp->held_len = 0;
        dp->held_lso = 0;
    }
    dp->held_last = dp->place_off;
    dp->held_last_len = msg_len;
    dp->held_msg = dp->place_off + msg_len;
    dp->held_len += frame_len;
    dp->held_lso += (uint32_t)(lso != 0);
}

/* 1 when no further message can join the held send (count reached, or not even a runt fits). */
static int held_full(const struct hvu_dp *dp)
{
    return agg_offset(dp, dp->tx_hdr_len + HVU_DP_ETH_HLEN) == 0;
}

/* NVS 107 for section idx; 0, -EAGAIN (ring full: the section stays held) or -EIO. */
static int send_section(struct hvu_dp *dp, uint32_t idx, uint32_t msg_len)
{
    uint8_t msg[HVU_DP_NVS_MSG_SIZE];
    memset(msg, 0, sizeof(msg));
    put_u32(msg, HVU_NVS_TYPE_RNDIS);
    put_u32(msg + 4, HVU_NVS_RNDIS_DATA);
    put_u32(msg + 8, dp->send_first + idx);   /* the buffer-wide index (per-queue share, datapath_api.h) */
    put_u32(msg + 12, msg_len);
    struct hvu_seg seg = {msg, sizeof(msg)};
    return hvu_ring_send(dp->tx, HVU_PKT_INBAND, HVU_PKT_FLAG_COMPLETION_REQUESTED,
                         HVU_DP_TX_TAG | idx, &seg, 1, &dp->need_signal);
}

static int send_held(struct hvu_dp *dp)
{
    if (dp->held < 0)
        return 0;   /* nothing held (the last packet went GPA-direct) */
    uint32_t idx = (uint32_t)dp->held;
    int rc = send_section(dp, idx, dp->held_msg);
    if (rc < 0)
        return rc;
    dp->held = -1;
    dp->ctr.tx_sends++;
    dp->ctr.tx_packets += dp->held_cnt;
    dp->ctr.tx_lso += dp->held_lso;
    dp->ctr.tx_bytes += dp->held_len;
    return 0;
}

/* ---- plain frames (no tap offloads) -------------------------------------------------------------- */

/* Reads one tap frame into dst, which has room for the largest frame the MTU allows (at most
 * `room` bytes); the vnet header, if the tap has one, is read aside and dropped. > 0 the frame's
 * length, 0 = dropped (runt or larger than the room: counted), -EAGAIN = tap empty, other negative
 * errno = tap error or its end (hvu_dp_tap_readv). */
ssize_t hvu_dp_tap_read_frame(struct hvu_dp *dp, uint8_t *dst, uint32_t room)
{
    uint32_t space = dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    if (space > room)
        space = room;
    uint8_t vnet[HVU_DP_VNET_HDR_SIZE], probe;
    struct iovec iov[3];
    int n = 0;
    uint32_t vlen = (dp->flags & HVU_DP_F_VNET_HDR) ? HVU_DP_VNET_HDR_SIZE : 0;
    if (vlen) {
        iov[n].iov_base = vnet;
        iov[n++].iov_len = vlen;
    }
    iov[n].iov_base = dst;
    iov[n++].iov_len = space;
    iov[n].iov_base = &probe;   /* one byte past the room: a frame reaching it is too big */
    iov[n++].iov_len = 1;
    ssize_t r = hvu_dp_tap_readv(dp, iov, n, vlen + HVU_DP_ETH_HLEN);
    if (r <= 0)
        return r;
    uint32_t frame = (uint32_t)((size_t)r - vlen);
    if (frame > space) {
        dp->ctr.tx_oversize++;
        hvu_dp_drop_note(dp, HVU_DP_TX_OVERSIZE, frame);
        return 0;
    }
    return frame;
}

/* A tagged frame read at msg + tx_hdr_len: the tag becomes the 802.1Q pktinfo and the frame,
 * 4 bytes shorter, moves behind it (12 bytes further), where the place still holds it; a frame
 * that then no longer fits is dropped as oversize. 1 = joined the held send, 0 = dropped. */
static int read_frame_tagged(struct hvu_dp *dp, uint8_t *msg, uint32_t frame, uint32_t vlan)
{
    uint32_t hdr = dp->tx_hdr_len + HVU_DP_PPI_SIZE, len = frame - HVU_DP_VLAN_HLEN;
    uint32_t room = (dp->held >= 0 ? dp->agg_size : dp->send_section) - dp->place_off;
    if (hdr + len > room) {
        dp->ctr.tx_oversize++;
        hvu_dp_drop_note(dp, HVU_DP_TX_OVERSIZE, frame);
        return 0;
    }
    hvu_dp_vlan_untag(msg, dp->tx_hdr_len, hdr, frame);
    hvu_dp_tx_header_vlan(dp, msg, len, -1, 0, vlan);
    hvu_dp_tx_commit(dp, hdr + len, len, 0);
    dp->ctr.tx_vlan++;
    return 1;
}

/* Reads one frame straight into its place in the send buffer: after the held message when the
 * largest frame would still fit there, else in a free section. 1 = the frame joined the held
 * send, 0 = frame dropped (counted), HVU_DP_TX_FLUSH = send the held section first, -EAGAIN =
 * tap empty, other negative = tap error or no section. */
static int read_frame(struct hvu_dp *dp)
{
    uint32_t space = dp->send_section - dp->tx_hdr_len;
    uint32_t limit = dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    if (space > limit)
        space = limit;
    uint8_t *msg = hvu_dp_tx_place(dp, dp->tx_hdr_len + space);   /* room for the largest frame */
    if (msg == NULL)
        return hvu_dp_tx_no_place(dp);
    ssize_t frame = hvu_dp_tap_read_frame(dp, msg + dp->tx_hdr_len, space);
    if (frame <= 0)
        return (int)frame;
    uint32_t vlan;
    if (hvu_dp_vlan_info(msg + dp->tx_hdr_len, (uint32_t)frame, &vlan))
        return read_frame_tagged(dp, msg, (uint32_t)frame, vlan);
    uint32_t hdr = hvu_dp_tx_header(dp, msg, (uint32_t)frame, -1, 0);
    hvu_dp_tx_commit(dp, hdr + (uint32_t)frame, (uint32_t)frame, 0);
    return 1;
}

/* ---- the batch ------------------------------------------------------------------------------------ */

/* Sends the held section; 0, 1 when the ring is full (it stays held, TX blocks), or -EIO. */
static int flush_held(struct hvu_dp *dp)
{
    int rc = send_held(dp);
    if (rc == -EAGAIN) {   /* not expected after can_send; the send stays held */
        dp->ctr.tx_busy++;
        hvu_dp_tx_block(dp, 1);
        return 1;
    }
    return rc;
}

/* Keeps the first error: a negative rc becomes err when there was none. */
static void break_err(int *err, int rc)
{
    if (rc < 0 && *err == 0)
        *err = rc;
}

/* Moves up to `budget` tap frames (or, with offloads, RNDIS packets cut from them) to the host.
 * Packets gather in the held section while the host's aggregation limits allow; what is held
 * when the tap runs dry, the budget ends or TX blocks is sent before returning, so aggregation
 * never delays a frame past this call. Signals once. */
int hvu_dp_tx(struct hvu_dp *dp, unsigned budget)
{
    if (dp == NULL || !dp->initialised)
        return -EINVAL;
    int err = hvu_dp_flush_completions(dp);
    int status = HVU_DP_IDLE;
    unsigned done = 0;
    dp->io.drained = 0;   /* tapio.c: whether the tap looked empty is asked anew each batch */
    while (err == 0) {
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
        int rc = (dp->flags & HVU_DP_F_TAP_OFFLOAD) ? hvu_dp_tx_stage_next(dp)
                 : dp->gpa_plain ? hvu_dp_tx_read_gpa(dp) : read_frame(dp);
        if (rc == HVU_DP_TX_WAIT) {   /* no section / slot or ring full: counted, TX stopped */
            status = HVU_DP_BLOCKED;
            break;
        }
        /* HVU_DP_TX_FLUSH: nothing read yet, the next packet needs a section of its own */
        if (rc != HVU_DP_TX_FLUSH) {
            if (rc == -EAGAIN)
                break;
            if (rc < 0) {
                err = rc;
                break;
            }
            done++;
            if (rc != 1 || dp->held < 0 || !held_full(dp))   /* GPA-direct: nothing held */
                continue;
        }
        rc = flush_held(dp);
        if (rc == 0)
            continue;
        if (rc > 0)
            status = HVU_DP_BLOCKED;
        break_err(&err, rc);
        break;
    }
    /* what the batch gathered goes now, unless TX is blocked by a full ring (it goes when the
     * host frees room, on a later call); waiting for a section or slot does not hold it back */
    if (dp->held >= 0 && (!dp->tx_blocked || dp->tx_wait != HVU_DP_WAIT_NONE)) {
        int rc = flush_held(dp);
        if (rc > 0 && err == 0)
            status = HVU_DP_BLOCKED;
        break_err(&err, rc);
    }
    /* tapio.c: the reads re-armed since the tap looked empty go to the kernel in one call */
    if (dp->io.on && hvu_uring_pending(&dp->io.ring) > 0) {
        int rc = hvu_dp_io_poll(dp);
        break_err(&err, rc);
    }
    if (dp->need_signal) {
        int rc = hvu_dp_signal(dp);
        if (rc < 0 && err == 0)
            err = rc;
    }
    return err < 0 ? err : status;
}
