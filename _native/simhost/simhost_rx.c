/* The emulated host's network -> guest path (the C fast path of simhost.c's pump).
 *
 * What lives here: frames read from the tap (plain, or with a virtio_net_hdr: GSO -> vRSC fragments
 * or software segments, NEEDS_CSUM completed; with vlan_oob an 802.1Q tag moved into the 802.1Q
 * per-packet info, rx_vlan_untag) -> RNDIS_PACKET_MSGs in free receive sections ->
 * transfer-page packets (several frames per packet, completion requested, trans_id = the first
 * section's index, as simhost.c's top comment describes) in the receive layout the pump was
 * given (rx_layout: openvmm or compact, below), and the guest's completions of those, which free the
 * sections once (one pool for all channels: a completion on any channel frees its batch); with
 * vRSS each frame goes out on the channel the guest's table names (rss.c picks the queue), or,
 * when the pump does not serve that channel yet, is handed over in steer_buf. What must not: reading the outbound ring (simhost.c's drain hands completions
 * here), ring index handling (packets go out through hvu_sim_in_write), the guest -> network path
 * (simhost_tx.c), allocation, logging, Python.
 */
#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>

#include "simhost.h"
#include "simhost_int.h"
#include "offload.h"

/* ---- receive sections ------------------------------------------------------------------------- */

/* Free the batch whose first section is `head`. */
static void free_batch(struct hvu_sim_pump *p, uint32_t head)
{
    uint32_t s = head;
    while (s != NONE) {
        uint32_t next = p->sec_next[s];
        p->sec_state[s] = SEC_FREE;
        p->sec_next[s] = NONE;
        p->free_stack[p->nfree++] = s;
        s = next;
    }
}

/* A guest completion naming one of our sections: free its batch once. */
void hvu_sim_rx_completion(struct hvu_sim_pump *p, uint64_t tid, const uint8_t *payload, uint32_t plen)
{
    if (tid >= p->recv_count || p->sec_state[tid] != SEC_HEAD) {
        p->c.completions_unknown++;
        reject(p, HVU_SIM_R_UNKNOWN_TID, tid);
        return;
    }
    if (plen < 8 || rd32(payload) != NVSP_RNDIS_PKT_COMPLETE) {
        /* Python's host faults on this; we free (the id matched) and count. */
        p->c.rx_completion_failed++;
        reject(p, HVU_SIM_R_COMPLETION_TYPE, plen < 4 ? plen : rd32(payload));
    } else if (rd32(payload + 4) != NVSP_STAT_SUCCESS) {
        p->c.rx_completion_failed++;
    }
    free_batch(p, (uint32_t)tid);
    p->c.rx_completions++;
}

/* ---- network -> guest ------------------------------------------------------------------------- */

/* Ranges of one transfer-page packet being built. */
struct rxb {
    uint32_t n;
    uint32_t secs[MAX_BATCH];
    uint32_t lens[MAX_BATCH];
};

/* Write the batch as one transfer-page packet (completion requested). 0 ok/nothing, -1 fault. */
static int rx_flush(struct hvu_sim_pump *p, struct rxb *b)
{
    uint8_t hdr[24 + 8 * MAX_BATCH];
    uint8_t nv[MAX_NVSP_PAD];
    uint32_t n = b->n, i, hlen;
    uint64_t tid;
    int rc;

    if (n == 0)
        return 0;
    b->n = 0;
    tid = b->secs[0];  /* OpenVMM: the batch's first rx id (netvsp lib.rs process_endpoint_rx) */
    hlen = 24 + 8 * n;
    hdr[0] = PKT_XFER; hdr[1] = 0;
    hdr[2] = (uint8_t)(hlen / 8); hdr[3] = (uint8_t)((hlen / 8) >> 8);
    {
        uint32_t len8 = (hlen + p->nvsp_pad + 7) / 8;
        hdr[4] = (uint8_t)len8; hdr[5] = (uint8_t)(len8 >> 8);
    }
    hdr[6] = FLAG_RC; hdr[7] = 0;
    memcpy(hdr + 8, &tid, 8);
    hdr[16] = (uint8_t)PAGESET_ID; hdr[17] = (uint8_t)(PAGESET_ID >> 8); hdr[18] = 0; hdr[19] = 0;
    wr32(hdr + 20, n);
    for (i = 0; i < n; i++) {
        wr32(hdr + 24 + 8 * i, b->lens[i]);                                        /* byte_count */
        wr32(hdr + 28 + 8 * i, (uint32_t)((uint64_t)b->secs[i] * p->recv_section)); /* byte_offset */
    }
    memset(nv, 0, sizeof nv);
    wr32(nv, NVSP_RNDIS_PKT);
    wr32(nv + 4, 0);            /* channel type: data */
    wr32(nv + 8, NO_SECTION);
    wr32(nv + 12, 0);
    /* link the batch before writing: the guest may complete at once */
    for (i = 0; i < n; i++) {
        p->sec_state[b->secs[i]] = i == 0 ? SEC_HEAD : SEC_BUSY;
        p->sec_next[b->secs[i]] = i + 1 < n ? b->secs[i + 1] : NONE;
    }
    rc = hvu_sim_in_write(p, hdr, hlen, nv, p->nvsp_pad);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        free_batch(p, b->secs[0]);
        p->c.rx_dropped_ring_full += n;
        return 0;
    }
    p->c.rx_frames += n;
    p->c.rx_packets++;
    p->chans[p->cur].rx_frames += n;
    p->chans[p->cur].rx_packets++;
    return 0;
}

/* Receive layouts (hvu_sim_pump.rx_layout; hvuio.sim.host.receive has the Python host's twin):
 * compact: the frame right after the 44-byte header and its PPIs, the range as long as the message;
 * openvmm (microsoft/openvmm vm/devices/net/netvsp/src/buffers.rs BufferPool::write_header and
 * lib.rs process_endpoint_rx): message_length and the range's byte count are the whole section,
 * the frame at byte RX_HEADER_LEN, checksum info always the first PPI, the rest not written. */

/* Where the frame starts in its section. */
static uint32_t rx_data_at(const struct hvu_sim_pump *p, uint32_t ppi_len)
{
    return p->rx_layout ? RX_HEADER_LEN : RNDIS_PKT_SIZE + ppi_len;
}

/* Frame bytes a section holds after `ppi_len` bytes of PPIs (0: none). */
static uint32_t rx_capacity(const struct hvu_sim_pump *p, uint32_t ppi_len)
{
    uint32_t used = p->rx_layout ? RX_HEADER_LEN + RX_FOOTER_LEN : RNDIS_PKT_SIZE + ppi_len;
    return p->recv_section > used ? p->recv_section - used : 0;
}

/* The RNDIS_PACKET_MSG header (44 bytes) for `len` data bytes after `ppi_len` bytes of PPIs;
 * returns the range's byte count (the message's length). */
static uint32_t rndis_hdr(const struct hvu_sim_pump *p, uint8_t *dst, uint32_t ppi_len, uint32_t len)
{
    uint32_t msg_len = p->rx_layout ? p->recv_section : RNDIS_PKT_SIZE + ppi_len + len;
    wr32(dst, RNDIS_PACKET_MSG);
    wr32(dst + 4, msg_len);
    wr32(dst + 8, rx_data_at(p, ppi_len) - RNDIS_HDR);
    wr32(dst + 12, len);
    memset(dst + 16, 0, RNDIS_PKT_SIZE - 16);
    if (ppi_len) {
        wr32(dst + 28, RNDIS_OFFSET_MIN);
        wr32(dst + 32, ppi_len);
    }
    return msg_len;
}

static uint32_t put_ppi(uint8_t *dst, uint32_t type, uint32_t value)
{
    wr32(dst, RNDIS_PPI_SIZE + 4);
    wr32(dst + 4, type);
    wr32(dst + 8, RNDIS_PPI_SIZE);
    wr32(dst + 12, value);
    return RNDIS_PPI_SIZE + 4;
}

/* One RNDIS packet (PPIs + data) into a free section, appended to the batch (caller checked room). */
static void rx_put(struct hvu_sim_pump *p, struct rxb *b, const uint8_t *ppi, uint32_t ppi_len,
                   const uint8_t *data, uint32_t len)
{
    uint32_t s = p->free_stack[--p->nfree];
    uint8_t *dst = p->recv_buf + (uint64_t)s * p->recv_section;
    b->lens[b->n] = rndis_hdr(p, dst, ppi_len, len);
    memcpy(dst + RNDIS_PKT_SIZE, ppi, ppi_len);
    memcpy(dst + rx_data_at(p, ppi_len), data, len);
    b->secs[b->n] = s;
    b->n++;
    p->c.rx_bytes += len;
}

/* Make room for k ranges that belong together: flush first if they do not fit the batch.
 * 1 room, 0 drop (counted), -1 fault. */
static int rx_room(struct hvu_sim_pump *p, struct rxb *b, uint32_t k)
{
    if (k > MAX_BATCH) {
        p->c.rx_dropped_too_big++;
        return 0;
    }
    if (b->n && b->n + k > (p->rx_batch > k ? p->rx_batch : k) && rx_flush(p, b) < 0)
        return -1;
    if (b->n + k > MAX_BATCH && rx_flush(p, b) < 0)
        return -1;
    if (p->nfree < k) {
        p->c.rx_dropped_no_section++;
        return 0;
    }
    return 1;
}

/* One plain frame (checksums complete) to the guest, with the receive checksum info if marked
 * and the 802.1Q info of the frame being delivered (rx_vlan_untag). */
static int rx_plain(struct hvu_sim_pump *p, struct rxb *b, const uint8_t *f, uint32_t n, int trusted)
{
    uint8_t ppi[2 * (RNDIS_PPI_SIZE + 4)];
    uint32_t flags = hvu_off_rx_mark(f, n, p->off_rx, trusted), ppi_len = 0;
    int rc;
    if (flags || p->rx_layout)  /* openvmm: always, 0 = not checked */
        ppi_len = put_ppi(ppi, HVU_PPI_CSUM, flags);
    if (p->rx_vlan != NONE)  /* after the checksum info, as OpenVMM orders them */
        ppi_len += put_ppi(ppi + ppi_len, HVU_PPI_VLAN, p->rx_vlan);
    if (n < ETH_HLEN || n > p->max_frame || n > rx_capacity(p, ppi_len)) {
        p->c.rx_dropped_too_big++;
        return 0;
    }
    rc = rx_room(p, b, 1);
    if (rc <= 0)
        return rc;
    rx_put(p, b, ppi, ppi_len, f, n);
    return 0;
}

/* vRSC: the coalesced frame as fragments of one section each, all in one transfer-page packet. */
static int rx_rsc(struct hvu_sim_pump *p, struct rxb *b, uint8_t *f, uint32_t n, int trusted)
{
    uint8_t ppi[3 * (RNDIS_PPI_SIZE + 4)];
    uint32_t flags = hvu_off_rx_mark(f, n, p->off_rx, trusted), csum_len = flags ? RNDIS_PPI_SIZE + 4 : 0;
    uint32_t id_len = RNDIS_PPI_SIZE + 4, first, rest, k, pos, i;
    int rc;
    uint32_t vlan_len = p->rx_vlan != NONE ? RNDIS_PPI_SIZE + 4 : 0;  /* the first fragment's */
    if (p->rx_layout)  /* every fragment carries checksum info; 0 (not checked) after the first */
        csum_len = RNDIS_PPI_SIZE + 4;
    first = rx_capacity(p, id_len + csum_len + vlan_len);
    rest = rx_capacity(p, id_len + (p->rx_layout ? csum_len : 0));
    if (first == 0 || rest == 0) {
        p->c.rx_dropped_too_big++;
        return 0;
    }
    k = n <= first ? 1 : 1 + (n - first + rest - 1) / rest;
    rc = rx_room(p, b, k);
    if (rc <= 0)
        return rc;
    for (i = 0, pos = 0; i < k; i++) {
        uint32_t room = i == 0 ? first : rest, len = n - pos < room ? n - pos : room, plen = 0;
        uint32_t fl = HVU_PKTINFO_SUBALLOC | (i == 0 ? HVU_PKTINFO_1ST_FRAG : 0)
                      | (i == k - 1 ? HVU_PKTINFO_LAST_FRAG : 0);
        if (csum_len && (i == 0 || p->rx_layout))
            plen += put_ppi(ppi, HVU_PPI_CSUM, i == 0 ? flags : 0);
        if (i == 0 && vlan_len)
            plen += put_ppi(ppi + plen, HVU_PPI_VLAN, p->rx_vlan);
        plen += put_ppi(ppi + plen, HVU_PPI_PKTINFO_ID, 1u | fl << 8);  /* ver 1, flag, pkt_id 0 */
        rx_put(p, b, ppi, plen, f + pos, len);
        pos += len;
    }
    p->c.rx_rsc_fragments += k;
    return 0;
}

/* One frame read with its virtio_net_hdr: GSO -> vRSC or segments; NEEDS_CSUM -> completed. */
static int rx_offloaded(struct hvu_sim_pump *p, struct rxb *b, uint8_t *f, uint32_t n, const uint8_t *vh)
{
    uint32_t vflags = vh[0], gso = vh[1] & ~HVU_GSO_ECN, mss = (uint32_t)vh[4] | (uint32_t)vh[5] << 8;
    uint32_t start = (uint32_t)vh[6] | (uint32_t)vh[7] << 8, off = (uint32_t)vh[8] | (uint32_t)vh[9] << 8;
    int trusted = !!(vflags & (HVU_VNET_F_NEEDS_CSUM | HVU_VNET_F_DATA_VALID));
    if (gso == HVU_GSO_TCPV4 || gso == HVU_GSO_TCPV6) {
        struct hvu_l34 h;
        uint32_t hdr_len, nseg, i;
        p->c.rx_gso++;
        if (hvu_off_locate(f, n, 1, &h) || (hdr_len = hvu_off_tcp_hdr_len(f, n, &h)) == 0 || mss == 0) {
            p->c.rx_dropped_bad_gso++;
            return 0;
        }
        if (p->off_rx & (h.v6 ? HVU_SIM_OFF_RSC6 : HVU_SIM_OFF_RSC4)) {
            hvu_off_rsc_fixup(f, n, &h);
            return rx_rsc(p, b, f, n, trusted);
        }
        if (hdr_len + mss > p->scratch_len) {
            p->c.rx_dropped_too_big++;
            return 0;
        }
        nseg = hvu_off_nseg(hdr_len, h.l4 + h.l4len, mss);
        for (i = 0; i < nseg; i++) {
            uint32_t len = hvu_off_segment(f, &h, hdr_len, mss, i, nseg, p->scratch);
            p->c.rx_segments++;
            if (rx_plain(p, b, p->scratch, len, trusted) < 0)
                return -1;
        }
        return 0;
    }
    if (vflags & HVU_VNET_F_NEEDS_CSUM) {
        if (hvu_off_complete(f, n, start, off) < 0) {
            p->c.rx_dropped_bad_gso++;
            return 0;
        }
        p->c.rx_csum_completed++;
    }
    return rx_plain(p, b, f, n, trusted);
}

/* HostProfile.vlan_oob (a trunk-mode port): a frame read into gso_buf (vnet header first when the
 * tap has one) loses its 802.1Q tag, which rx_plain / rx_rsc put in the 802.1Q info (p->rx_vlan;
 * none without a tag). The MAC addresses move 4 bytes on; the vnet offsets move with them (a
 * checksum offset inside the tag leaves the frame tagged). Returns the frame's new start. */
static uint8_t *rx_vlan_untag(struct hvu_sim_pump *p, uint8_t *f, uint32_t *n, uint8_t *vh)
{
    p->rx_vlan = NONE;
    if (!p->vlan_oob || *n < ETH_HLEN + 4 || f[12] != 0x81 || f[13] != 0x00)
        return f;
    uint32_t cs = vh ? ((uint32_t)vh[6] | (uint32_t)vh[7] << 8) : 0, hl = vh ? ((uint32_t)vh[2] | (uint32_t)vh[3] << 8) : 0;
    if (vh && (vh[0] & HVU_VNET_F_NEEDS_CSUM) && cs < ETH_HLEN + 4)
        return f;
    uint32_t tci = (uint32_t)f[14] << 8 | f[15];
    p->rx_vlan = (tci >> 13) | ((tci >> 12) & 1u) << 3 | (tci & 0xFFFu) << 4;
    memmove(f + 4, f, 12);
    *n -= 4;
    if (vh && (vh[0] & HVU_VNET_F_NEEDS_CSUM)) {
        vh[6] = (uint8_t)(cs - 4);
        vh[7] = (uint8_t)((cs - 4) >> 8);
    }
    if (vh && hl > 4) {
        vh[2] = (uint8_t)(hl - 4);
        vh[3] = (uint8_t)((hl - 4) >> 8);
    }
    p->c.rx_vlan++;
    return f + 4;
}

/* vRSS: a frame (the `r` tap bytes in gso_buf) the guest's table puts on a queue `q` the pump does
 * not serve becomes a steer_buf record for Python ({u32 length, u32 queue, bytes, zero pad to 8}). */
static void rx_steer(struct hvu_sim_pump *p, uint32_t r, uint32_t q)
{
    uint8_t *rec = p->steer_buf + p->steer_used;
    uint32_t size = (8u + r + 7u) & ~7u;
    wr32(rec, r);
    wr32(rec + 4, q);
    memcpy(rec + 8, p->gso_buf, r);
    memset(rec + 8 + r, 0, size - 8 - r);
    p->steer_used += size;
    p->c.rx_steered++;
}

/* Read frames from the tap into free sections; one transfer-page packet per batch.
 * Without a vnet header, receive marks, vlan_oob or vRSS frames are read straight into their
 * section; otherwise through gso_buf (a GSO frame is up to 64 KiB), and with vRSS a frame for a
 * queue not served goes to steer_buf (the read stops while steer_buf could not take one more).
 * Returns frames read (0: none pending), -1 fault. */
int hvu_sim_rx_batch(struct hvu_sim_pump *p)
{
    struct rxb b;
    int got = 0;
    int direct = !p->vnet_hdr && !p->rss_on && !p->vlan_oob
                 && !(p->off_rx & (HVU_SIM_OFF_IP4 | HVU_SIM_OFF_TCP4 | HVU_SIM_OFF_UDP4
                                   | HVU_SIM_OFF_TCP6 | HVU_SIM_OFF_UDP6));
    b.n = 0;
    p->rx_vlan = NONE;
    hvu_sim_chan_select(p, 0);  /* the batch is the current channel's; queue 0 first */
    while (b.n < p->rx_batch && got < (int)(4 * MAX_BATCH)) {
        uint8_t *dst;
        uint32_t room, s, ppi_len;
        ssize_t r;
        if (p->rss_on && (!p->steer_buf || p->steer_buf_len - p->steer_used < 16u + p->gso_buf_len))
            break;  /* Python first takes the frames steered so far (HVU_SIM_RUN_STEER) */
        if (p->nfree == 0 && !p->rss_on) {
            r = read(p->tap_fd, p->gso_buf, p->gso_buf_len);  /* a host with no section drops */
            if (r < 0)
                break;
            got++;
            p->c.rx_dropped_no_section++;
            continue;
        }
        if (!direct) {
            uint32_t vh = p->vnet_hdr ? HVU_VNET_HLEN : 0, q;
            r = read(p->tap_fd, p->gso_buf, p->gso_buf_len);
            if (r < 0)
                break;
            got++;
            q = p->rss_on && (uint32_t)r >= vh ? hvu_sim_rss_queue(p, p->gso_buf + vh, (uint32_t)r - vh) : 0;
            if (q != 0 && (q >= p->nchans || !p->chans[q].in_ring)) {
                rx_steer(p, (uint32_t)r, q);  /* tagged as read: Python's delivery moves the tag */
                continue;
            }
            if (q != p->cur) {  /* vRSS: the frame goes out on its channel, in a batch of its own */
                if (rx_flush(p, &b) < 0)
                    return -1;
                hvu_sim_chan_select(p, q);
            }
            if (p->nfree == 0) {  /* a host with no section drops (vRSS: after steering, one pool) */
                p->c.rx_dropped_no_section++;
                continue;
            }
            uint32_t n = (uint32_t)r;
            if (!p->vnet_hdr) {
                uint8_t *f = rx_vlan_untag(p, p->gso_buf, &n, NULL);
                if (rx_plain(p, &b, f, n, 0) < 0)
                    return -1;
            } else if (n < HVU_VNET_HLEN + ETH_HLEN) {
                p->c.rx_dropped_too_big++;
            } else {
                n -= HVU_VNET_HLEN;
                uint8_t *f = rx_vlan_untag(p, p->gso_buf + HVU_VNET_HLEN, &n, p->gso_buf);
                if (rx_offloaded(p, &b, f, n, p->gso_buf) < 0)
                    return -1;
            }
            p->rx_vlan = NONE;
            continue;
        }
        s = p->free_stack[p->nfree - 1];
        dst = p->recv_buf + (uint64_t)s * p->recv_section;
        ppi_len = p->rx_layout ? RNDIS_PPI_SIZE + 4 : 0;  /* openvmm: checksum info 0, not checked */
        room = p->recv_section - rx_data_at(p, ppi_len);  /* never past the section */
        r = read(p->tap_fd, dst + rx_data_at(p, ppi_len), room < p->max_frame + 1 ? room : p->max_frame + 1);
        if (r < 0)
            break;  /* EAGAIN or error: nothing more now */
        got++;
        if ((uint32_t)r < ETH_HLEN || (uint32_t)r > p->max_frame || (uint32_t)r > rx_capacity(p, ppi_len)) {
            p->c.rx_dropped_too_big++;
            continue;
        }
        p->nfree--;
        if (ppi_len)
            put_ppi(dst + RNDIS_PKT_SIZE, HVU_PPI_CSUM, 0);
        b.lens[b.n] = rndis_hdr(p, dst, ppi_len, (uint32_t)r);
        b.secs[b.n] = s;
        b.n++;
        p->c.rx_bytes += (uint64_t)r;
    }
    if (rx_flush(p, &b) < 0)
        return -1;
    return got;
}
