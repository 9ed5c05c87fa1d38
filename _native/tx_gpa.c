/* Data path, guest -> host, GPA-direct: RNDIS packets too large for a send section go out as
 * VMBus type-9 packets naming the guest-physical pages of a slot in the caller's pinned pool.
 *
 * What lives here: the pool's configuration checks, the slot bitmap (one word, at most 64 slots),
 * the type-9 packet (VMBUS.md §3.7: reserved u32, range_count u32, one range {byte_count,
 * byte_offset 0, PFN list}, then NVS 107 at offset8 * 8) with the bounds checks made before it is
 * written, the completions that free slots, where a message goes when GPA-direct is on
 * (hvu_dp_tx_dest: the send buffer while it fits a section, else a slot) and a plain tap's frame
 * read through a slot (hvu_dp_tx_read_gpa). The rules and their sources are in datapath.h's
 * header comment. What must not: the section bitmap and the held send (tx.c), the offload stage
 * (tx_stage.c), allocation, printing.
 */
#define _POSIX_C_SOURCE 200809L   /* readv under -std=c11 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "datapath.h"

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof(v)); }

uint32_t hvu_dp_gpa_slots_in_use(const struct hvu_dp *dp) { return dp->gpa_used; }

uint32_t hvu_dp_gpa_slot_count(const struct hvu_dp *dp) { return dp->gpa_count; }

/* Checks the pool and fills dp->gpa_*: 0, -EINVAL (a pointer, size or page number is wrong), or
 * -EMSGSIZE (the outbound ring cannot hold one type-9 packet). max_msg: the largest RNDIS
 * message the data path can build (header with pktinfo + HVU_DP_GSO_MAX); a slot must hold it. */
int hvu_dp_gpa_init(struct hvu_dp *dp, const struct hvu_dp_config *cfg, uint32_t max_msg)
{
    dp->gpa_frame = -1;
    if (cfg->gpa_slot_size == 0)
        return 0;
    uint32_t slot = cfg->gpa_slot_size, size = cfg->gpa_buf_size;
    if (cfg->gpa_buf == NULL || cfg->gpa_pfns == NULL || slot % HVU_HV_PAGE_SIZE != 0 ||
        size % HVU_HV_PAGE_SIZE != 0 || slot < max_msg ||
        slot / HVU_HV_PAGE_SIZE > HVU_DP_GPA_SLOT_PAGES_MAX || size < slot)
        return -EINVAL;
    uint32_t pages = size / HVU_HV_PAGE_SIZE;
    for (uint32_t i = 0; i < pages; i++)
        if (cfg->gpa_pfns[i] == 0 || cfg->gpa_pfns[i] > HVU_DP_GPA_PFN_MAX)
            return -EINVAL;
    uint32_t slot_pages = slot / HVU_HV_PAGE_SIZE;
    /* descriptor + type-9 header + NVS message (all multiples of 8) + trailer */
    uint32_t total = HVU_DESC_SIZE + 8u + 8u + 8u * slot_pages + HVU_DP_NVS_MSG_SIZE + HVU_TRAILER_SIZE;
    if (hvu_ring_data_size(cfg->tx_ring) < total + 8u)   /* + the 8 bytes a ring keeps free */
        return -EMSGSIZE;
    uint32_t count = size / slot;
    dp->gpa_buf = cfg->gpa_buf;
    dp->gpa_pfns = cfg->gpa_pfns;
    dp->gpa_pages = pages;
    dp->gpa_slot = slot;
    dp->gpa_slot_pages = slot_pages;
    dp->gpa_count = count < HVU_DP_GPA_MAX_SLOTS ? count : HVU_DP_GPA_MAX_SLOTS;
    dp->gpa_pkt_total = total;
    return 0;
}

/* ---- slots --------------------------------------------------------------------------------------- */

static int slot_busy(const struct hvu_dp *dp, uint32_t i) { return (dp->gpa_map >> i) & 1u; }

/* A free slot, or -1 (none, or GPA-direct off). */
int hvu_dp_gpa_find(struct hvu_dp *dp)
{
    if (dp->gpa_count == 0)
        return -1;
    uint64_t all = dp->gpa_count == 64 ? ~0ULL : (1ULL << dp->gpa_count) - 1;
    uint64_t free_bits = ~dp->gpa_map & all;
    return free_bits != 0 ? __builtin_ctzll(free_bits) : -1;
}

void hvu_dp_gpa_take(struct hvu_dp *dp, uint32_t slot)
{
    dp->gpa_map |= 1ULL << slot;
    dp->gpa_used++;
}

void hvu_dp_gpa_release(struct hvu_dp *dp, uint32_t slot)
{
    dp->gpa_map &= ~(1ULL << slot);
    dp->gpa_used--;
}

uint8_t *hvu_dp_gpa_slot_mem(const struct hvu_dp *dp, uint32_t slot)
{
    return dp->gpa_buf + (size_t)slot * dp->gpa_slot;
}

/* ---- the type-9 packet -------------------------------------------------------------------------- */

int hvu_dp_gpa_send(struct hvu_dp *dp, uint32_t slot, uint32_t msg_len)
{
    uint32_t first = slot * dp->gpa_slot_pages;
    uint32_t npages = (msg_len + HVU_HV_PAGE_SIZE - 1) / HVU_HV_PAGE_SIZE;
    /* the checks before the data leaves: a real slot of ours, a non-empty message inside it,
     * every page index inside the pool, every page number a valid one */
    if (slot >= dp->gpa_count || !slot_busy(dp, slot) || msg_len == 0 || msg_len > dp->gpa_slot ||
        npages > dp->gpa_slot_pages || npages > HVU_DP_GPA_SLOT_PAGES_MAX ||
        (uint64_t)first + npages > dp->gpa_pages)
        return -EINVAL;
    uint8_t hdr[HVU_DP_GPA_HDR_MAX];
    put_u32(hdr, 0);                  /* reserved */
    put_u32(hdr + 4, 1);              /* range_count */
    put_u32(hdr + 8, msg_len);        /* byte_count */
    put_u32(hdr + 12, 0);             /* byte_offset: the message starts the slot's first page */
    for (uint32_t i = 0; i < npages; i++) {
        uint64_t pfn = dp->gpa_pfns[first + i];
        if (pfn == 0 || pfn > HVU_DP_GPA_PFN_MAX)
            return -EINVAL;
        memcpy(hdr + 16 + 8 * i, &pfn, sizeof(pfn));
    }
    uint8_t msg[HVU_DP_NVS_MSG_SIZE];
    memset(msg, 0, sizeof(msg));
    put_u32(msg, HVU_NVS_TYPE_RNDIS);
    put_u32(msg + 4, HVU_NVS_RNDIS_DATA);
    put_u32(msg + 8, 0xFFFFFFFFu);    /* no send-buffer section */
    put_u32(msg + 12, 0);
    struct hvu_seg seg = {msg, sizeof(msg)};
    /* hvu_ring_send_hdr: offset8 = 2 + hdr_len / 8, so the NVS message starts right after the
     * range's PFN list (hdr_len = 16 + 8 * npages is a multiple of 8) */
    return hvu_ring_send_hdr(dp->tx, HVU_PKT_GPA_DIRECT, HVU_PKT_FLAG_COMPLETION_REQUESTED,
                             HVU_DP_TX_TAG | HVU_DP_GPA_BIT | slot, hdr, 16u + 8u * npages, &seg, 1,
                             &dp->need_signal);
}

/* trans_id has both tags. A slot not in flight (unknown, duplicate, or the one holding a frame not
 * sent yet) is counted and ignored, never freed twice; a known one is freed whatever the payload
 * says, a payload that is not NVS 108 with status OK counts as a TX error. */
void hvu_dp_gpa_complete(struct hvu_dp *dp, uint64_t trans_id, const uint8_t *payload, uint32_t plen)
{
    uint64_t idx = trans_id & ~(HVU_DP_TX_TAG | HVU_DP_GPA_BIT);
    if (idx >= dp->gpa_count || !slot_busy(dp, (uint32_t)idx) || (int64_t)idx == dp->gpa_frame) {
        dp->ctr.tx_bad_comp++;
        hvu_dp_drop_note(dp, HVU_DP_GPA_COMP_UNKNOWN, trans_id);
        return;
    }
    hvu_dp_gpa_release(dp, (uint32_t)idx);
    dp->ctr.tx_completions++;
    hvu_dp_tx_comp_status(dp, payload, plen);
}

/* ---- where a message goes with GPA-direct on ---------------------------------------------------- */

int hvu_dp_tx_wait_for(struct hvu_dp *dp, int what)
{
    if (what == HVU_DP_WAIT_SLOT)
        dp->ctr.tx_gpa_busy++;
    else
        dp->ctr.tx_no_space++;
    dp->tx_wait = what;
    hvu_dp_tx_block(dp, 0);
    return HVU_DP_TX_WAIT;
}

/* Where the next message of msg_len bytes (<= hvu_dp_tx_msg_cap, the caller checked) is to be
 * built: the held send or a free section when it fits one (hvu_dp_tx_place), else the start of a
 * free slot, taken now (GPA-direct). 1 = *d says where, HVU_DP_TX_FLUSH = send the held section
 * first (it may not join, or a GPA-direct packet must not pass it), HVU_DP_TX_WAIT = no free
 * section / slot (counted, TX stopped), -EMSGSIZE = larger than a slot. */
int hvu_dp_tx_dest(struct hvu_dp *dp, uint32_t msg_len, struct hvu_dp_dest *d)
{
    if (msg_len <= dp->send_section) {
        d->msg = hvu_dp_tx_place(dp, msg_len);
        d->slot = -1;
        if (d->msg == NULL)
            return dp->held >= 0 ? HVU_DP_TX_FLUSH : hvu_dp_tx_wait_for(dp, HVU_DP_WAIT_SECTION);
    } else {
        if (dp->gpa_slot == 0 || msg_len > dp->gpa_slot)
            return -EMSGSIZE;
        if (dp->held >= 0)
            return HVU_DP_TX_FLUSH;
        d->slot = hvu_dp_gpa_find(dp);
        if (d->slot < 0)
            return hvu_dp_tx_wait_for(dp, HVU_DP_WAIT_SLOT);
        hvu_dp_gpa_take(dp, (uint32_t)d->slot);
        d->msg = hvu_dp_gpa_slot_mem(dp, (uint32_t)d->slot);
    }
    dp->tx_wait = HVU_DP_WAIT_NONE;
    return 1;
}

/* Sends the message at the start of slot (taken) GPA-direct and counts it: 0, HVU_DP_TX_WAIT
 * (ring full: nothing written, the slot stays taken, TX stopped), or a negative errno. */
static int gpa_go(struct hvu_dp *dp, uint32_t slot, uint32_t msg_len, uint32_t frame_len, int lso)
{
    int rc = hvu_dp_gpa_send(dp, slot, msg_len);
    if (rc == -EAGAIN) {   /* not expected after can_send, which asked room for the largest */
        dp->ctr.tx_busy++;
        hvu_dp_tx_block(dp, 1);
        return HVU_DP_TX_WAIT;
    }
    if (rc < 0)
        return rc;
    dp->ctr.tx_sends++;
    dp->ctr.tx_packets++;
    dp->ctr.tx_bytes += frame_len;
    dp->ctr.tx_lso += (uint32_t)(lso != 0);
    dp->ctr.tx_gpa++;
    dp->ctr.tx_gpa_bytes += frame_len;
    return 0;
}

/* The message built where hvu_dp_tx_dest said: joins the held send, or goes GPA-direct now.
 * 1 = done, HVU_DP_TX_WAIT = ring full (the slot is given back: the source keeps the packet and
 * builds it again), negative errno = the ring failed or a check refused the packet. */
int hvu_dp_tx_done(struct hvu_dp *dp, const struct hvu_dp_dest *d, uint32_t msg_len,
                   uint32_t frame_len, int lso)
{
    if (d->slot < 0) {
        hvu_dp_tx_commit(dp, msg_len, frame_len, lso);
        return 1;
    }
    int rc = gpa_go(dp, (uint32_t)d->slot, msg_len, frame_len, lso);
    if (rc != 0)
        hvu_dp_gpa_release(dp, (uint32_t)d->slot);
    return rc == 0 ? 1 : rc;
}

/* A plain tap whose largest frame needs a slot: the frame is read into a free slot after the RNDIS
 * header space (a tagged frame moves behind room for its 802.1Q pktinfo, the tag taken out, at
 * once); a frame whose message fits a section is copied into the held send or a free
 * section, else (or when no section is free) it goes GPA-direct from its slot. The slot keeps a
 * frame that must wait (held send first, ring full) in dp->gpa_frame. Returns as tx.c read_frame
 * (1 sent or joined, 0 dropped, HVU_DP_TX_FLUSH, -EAGAIN tap empty, other negative errno), or
 * HVU_DP_TX_WAIT (no free slot, or ring full). */
int hvu_dp_tx_read_gpa(struct hvu_dp *dp)
{
    uint32_t hdr = dp->tx_hdr_len;
    if (dp->gpa_frame < 0) {
        int slot = hvu_dp_gpa_find(dp);
        if (slot < 0)
            return hvu_dp_tx_wait_for(dp, HVU_DP_WAIT_SLOT);
        ssize_t r = hvu_dp_tap_read_frame(dp, hvu_dp_gpa_slot_mem(dp, (uint32_t)slot) + hdr, dp->gpa_slot - hdr);
        if (r <= 0)
            return (int)r;
        uint32_t frame = (uint32_t)r, vlan = HVU_DP_NO_VLAN;
        uint8_t *mem = hvu_dp_gpa_slot_mem(dp, (uint32_t)slot);
        if (hvu_dp_vlan_info(mem + hdr, frame, &vlan)) {
            /* the tag goes as the 802.1Q pktinfo: the frame, 4 bytes shorter, after its room */
            if (hdr + HVU_DP_PPI_SIZE + frame - HVU_DP_VLAN_HLEN > dp->gpa_slot) {
                dp->ctr.tx_oversize++;
                hvu_dp_drop_note(dp, HVU_DP_TX_OVERSIZE, frame);
                return 0;
            }
            hvu_dp_vlan_untag(mem, hdr, hdr + HVU_DP_PPI_SIZE, frame);
            frame -= HVU_DP_VLAN_HLEN;
        }
        hvu_dp_gpa_take(dp, (uint32_t)slot);
        dp->gpa_frame = slot;
        dp->gpa_frame_len = frame;
        dp->gpa_frame_vlan = vlan;
    }
    dp->tx_wait = HVU_DP_WAIT_NONE;
    uint32_t slot = (uint32_t)dp->gpa_frame, frame = dp->gpa_frame_len, vlan = dp->gpa_frame_vlan;
    uint8_t *mem = hvu_dp_gpa_slot_mem(dp, slot);
    hdr += hvu_dp_vlan_ppi_len(vlan);
    if (hdr + frame <= dp->send_section) {
        uint8_t *msg = hvu_dp_tx_place(dp, hdr + frame);
        if (msg != NULL) {
            hvu_dp_tx_header_vlan(dp, msg, frame, -1, 0, vlan);
            memcpy(msg + hdr, mem + hdr, frame);
            hvu_dp_tx_commit(dp, hdr + frame, frame, 0);
            dp->gpa_frame = -1;
            hvu_dp_gpa_release(dp, slot);
            dp->ctr.tx_vlan += vlan != HVU_DP_NO_VLAN;
            return 1;
        }
    }
    if (dp->held >= 0)
        return HVU_DP_TX_FLUSH;   /* it may not join, and a GPA-direct packet must not pass it */
    hvu_dp_tx_header_vlan(dp, mem, frame, -1, 0, vlan);
    int rc = gpa_go(dp, slot, hdr + frame, frame, 0);
    if (rc == HVU_DP_TX_WAIT)
        return rc;                /* the slot keeps the frame */
    dp->gpa_frame = -1;
    if (rc < 0) {
        hvu_dp_gpa_release(dp, slot);
        return rc;
    }
    dp->ctr.tx_vlan += vlan != HVU_DP_NO_VLAN;
    return 1;
}
