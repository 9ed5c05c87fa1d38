/* The emulated host's guest -> network path (the C fast path of simhost.c's pump).
 *
 * What lives here: the RNDIS data of one NVSP 107 send, checked whole before anything is sent
 * (every RNDIS_PACKET_MSG as HostRndis.parse_data, its packet header and per-packet info inside
 * the range it starts in when the data came in ranges, checksum/LSO per-packet info against the
 * offloads on offer; a send with 802.1Q info is Python's, which tags the frame), its frames
 * written to the tap (as given, checksummed, GSO or cut into segments), and its NVSP 108
 * completion; the in-band send out of the send buffer (hvu_sim_tx_send: any sub-range of it, a
 * send may span sections). GPA-direct sends are gathered in simhost_gpa.c and come back here
 * (hvu_sim_tx_data). What must not: reading the outbound ring (simhost.c's drain hands the send
 * here and consumes it on 1), ring index handling (the completion goes out through
 * hvu_sim_in_write), the network -> guest path (simhost_rx.c), allocation, logging, Python.
 */
#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>

#include "simhost.h"
#include "simhost_int.h"
#include "offload.h"

/* ---- guest -> network ------------------------------------------------------------------------- */

struct frame_ref {
    const uint8_t *data;
    uint32_t len;
    uint32_t has_csum, csum, has_lso, lso;  /* checksum / LSO per-packet info, if given */
};

/* One frame to the network: [virtio_net_hdr (zeros when vnet is NULL)] + frame. 1 written, 0 not. */
static int tap_write(struct hvu_sim_pump *p, const uint8_t *vnet, const uint8_t *f, uint32_t n)
{
    static const uint8_t zeros[HVU_VNET_HLEN];
    if (p->tap_fd < 0)
        return 0;
    if (p->vnet_hdr) {
        struct iovec iov[2];
        iov[0].iov_base = (void *)(uintptr_t)(vnet ? vnet : zeros);
        iov[0].iov_len = HVU_VNET_HLEN;
        iov[1].iov_base = (void *)(uintptr_t)f;
        iov[1].iov_len = n;
        return writev(p->tap_fd, iov, 2) == (ssize_t)(HVU_VNET_HLEN + n);
    }
    return write(p->tap_fd, f, n) == (ssize_t)n;
}

static void tx_count(struct hvu_sim_pump *p, int ok, uint32_t n)
{
    if (!ok) {
        p->c.tx_net_errors++;
        return;
    }
    p->c.tx_frames++;
    p->c.tx_bytes += n;
    p->chans[p->cur].tx_frames++;
}

/* One frame with offload requests (already checked on guest memory): copied, re-checked on the
 * copy (the guest may write its buffer meanwhile), checksums filled, written whole (GSO) or cut. */
static void tx_offloaded(struct hvu_sim_pump *p, const struct frame_ref *fr, struct hvu_off_plan *pl)
{
    uint8_t *buf = p->gso_buf, vnet[HVU_VNET_HLEN];
    uint32_t n = fr->len, i, nseg;
    if (pl->action == HVU_OFF_TX_ASIS || pl->action == HVU_OFF_TX_IGNORED) {
        p->c.tx_offload_ignored += pl->action == HVU_OFF_TX_IGNORED;
        tx_count(p, tap_write(p, NULL, fr->data, n), n);
        return;
    }
    memcpy(buf, fr->data, n);
    if (hvu_off_tx_check(buf, n, (int)fr->has_csum, fr->csum, (int)fr->has_lso, fr->lso, p->off_tx, p->lso_max,
                         p->max_frame, pl) != 0 || (pl->action != HVU_OFF_TX_CSUM && pl->action != HVU_OFF_TX_LSO_ONE
                                                    && pl->action != HVU_OFF_TX_GSO)) {
        p->c.tx_offload_race++;
        p->c.tx_net_errors++;
        return;
    }
    hvu_off_tx_apply(buf, n, pl, vnet);
    if (pl->action != HVU_OFF_TX_GSO) {
        p->c.tx_csum++;
        tx_count(p, tap_write(p, NULL, buf, n), n);
        return;
    }
    if (p->vnet_hdr && p->tap_gso) {
        p->c.tx_gso++;
        tx_count(p, tap_write(p, vnet, buf, n), n);
        return;
    }
    pl->h.l4len = n - pl->h.l4;
    nseg = hvu_off_nseg(pl->hdr_len, n, pl->mss);
    for (i = 0; i < nseg; i++) {  /* hdr_len + mss <= max_frame <= scratch_len (checked) */
        uint32_t len = hvu_off_segment(buf, &pl->h, pl->hdr_len, pl->mss, i, nseg, p->scratch);
        p->c.tx_segments++;
        tx_count(p, tap_write(p, NULL, p->scratch, len), len);
    }
}

/* [OV] handle_rndis_packet_message reads the packet header and per-packet info from one range
 * only: the one holding the first byte after the message header (hvuio.sim.host.send
 * _check_header_range). ends: where each range of the send ends in it, or NULL (one section). */
static int header_in_range(const uint32_t *ends, uint32_t nends, uint32_t body, uint32_t ppi_off,
                           uint32_t ppi_len)
{
    uint32_t i, end, need = RNDIS_PKT_SIZE - RNDIS_HDR;
    if (!ends || !nends)
        return 1;
    end = ends[nends - 1];
    for (i = 0; i < nends; i++)
        if (ends[i] > body) { end = ends[i]; break; }
    if (ppi_len && ppi_off + ppi_len > need)  /* both checked against the message before */
        need = ppi_off + ppi_len;
    return (uint64_t)body + need <= end;
}

/* Validate every RNDIS message of one send (as HostRndis.parse_data); fill frames. */
static int parse_send(struct hvu_sim_pump *p, const uint8_t *data, uint32_t size, const uint32_t *ends,
                      uint32_t nends, struct frame_ref *out, uint32_t *nout)
{
    uint32_t pos = 0, n = 0;
    while (pos < size) {
        uint32_t mtype, mlen, body, d_off, d_len, ppi_off, ppi_len, f[9];
        if (size - pos < RNDIS_HDR)
            return reject(p, HVU_SIM_R_RNDIS_LEN, pos);
        mtype = rd32(data + pos);
        mlen = rd32(data + pos + 4);
        if (mlen < RNDIS_HDR || mlen > size - pos)
            return reject(p, HVU_SIM_R_RNDIS_LEN, mlen);
        if (mtype != RNDIS_PACKET_MSG)
            return reject(p, HVU_SIM_R_RNDIS_TYPE, mtype);
        if (mlen < RNDIS_PKT_SIZE)
            return reject(p, HVU_SIM_R_RNDIS_LEN, mlen);
        if (n == MAX_MSGS)
            return reject(p, HVU_SIM_R_TOO_MANY_MSGS, n);
        if (p->strict && n > 0 && (n >= p->rndis_max_pkts || pos % p->rndis_align != 0))
            return reject(p, HVU_SIM_R_AGGREGATION, n >= p->rndis_max_pkts ? n + 1 : pos);
        memcpy(f, data + pos + 8, sizeof f);  /* read once: the send buffer is guest-writable */
        d_off = f[0]; d_len = f[1]; ppi_off = f[5]; ppi_len = f[6];
        if (f[2] || f[3] || f[4] || f[7])
            return reject(p, HVU_SIM_R_RNDIS_OOB, f[2] | f[3] | f[4] | f[7]);
        body = mlen - RNDIS_HDR;
        if (d_off < RNDIS_OFFSET_MIN || d_off > body || d_len > body - d_off || d_len == 0)
            return reject(p, HVU_SIM_R_RNDIS_DATA, d_off);
        out[n].has_csum = out[n].has_lso = out[n].csum = out[n].lso = 0;
        if (ppi_len) {
            uint32_t e, end, ptype;
            if (ppi_off < RNDIS_OFFSET_MIN || ppi_off > body || ppi_len > body - ppi_off)
                return reject(p, HVU_SIM_R_RNDIS_PPI, ppi_off);
            e = RNDIS_HDR + ppi_off;
            end = e + ppi_len;
            while (e < end) {
                uint32_t sz, poff;
                if (end - e < RNDIS_PPI_SIZE)
                    return reject(p, HVU_SIM_R_RNDIS_PPI, e);
                sz = rd32(data + pos + e);
                poff = rd32(data + pos + e + 8);
                if (sz < RNDIS_PPI_SIZE || sz > end - e || poff < RNDIS_PPI_SIZE || poff > sz)
                    return reject(p, HVU_SIM_R_RNDIS_PPI, sz);
                ptype = rd32(data + pos + e + 4);
                if (ptype == HVU_PPI_VLAN)       /* the tag goes onto the wire frame: Python's */
                    return reject(p, HVU_SIM_R_VLAN, e);
                if (ptype == HVU_PPI_CSUM || ptype == HVU_PPI_LSO) {  /* others: skipped, as NDIS */
                    uint32_t *has = ptype == HVU_PPI_CSUM ? &out[n].has_csum : &out[n].has_lso;
                    if (sz - poff < 4 || *has)  /* 4 data bytes; given once */
                        return reject(p, HVU_SIM_R_RNDIS_PPI, sz);
                    *has = 1;
                    *(ptype == HVU_PPI_CSUM ? &out[n].csum : &out[n].lso) = rd32(data + pos + e + poff);
                }
                e += sz;
            }
        }
        if (!header_in_range(ends, nends, pos + RNDIS_HDR, ppi_off, ppi_len))
            return reject(p, HVU_SIM_R_RNDIS_HDR_RANGE, pos);
        out[n].data = data + pos + RNDIS_HDR + d_off;
        out[n].len = d_len;
        n++;
        pos += mlen;
    }
    *nout = n;
    return 0;
}

/* Room for one completion, or 2 (pending_send_sz set: the drain waits), -1 on a corrupt ring. */
static int completion_room(struct hvu_sim_pump *p)
{
    uint32_t need = ((DESC + p->nvsp_pad + 7) & ~7u) + TRAILER;
    int64_t room = hvu_sim_in_free(p);
    if (room < 0)
        return -1;
    if (room <= (int64_t)need) {
        st_rel(p->in_ring, OFF_PENDING, need);
        p->pending_set = 1;
        p->c.tx_wait_ring_full++;
        return 2;
    }
    return 1;
}

static int write_completion(struct hvu_sim_pump *p, uint64_t tid, uint32_t status)
{
    uint8_t comp[DESC + MAX_NVSP_PAD];
    uint32_t comp_len = DESC + p->nvsp_pad;
    memset(comp, 0, sizeof comp);
    comp[0] = PKT_COMP;
    comp[2] = 2;
    comp[4] = (uint8_t)((comp_len + 7) / 8);
    memcpy(comp + 8, &tid, 8);
    wr32(comp + DESC, NVSP_RNDIS_PKT_COMPLETE);
    wr32(comp + DESC + 4, status);
    if (hvu_sim_in_write(p, comp, comp_len, NULL, 0) < 0)
        return -1;
    if (p->pending_set) {
        st_rel(p->in_ring, OFF_PENDING, 0);
        p->pending_set = 0;
    }
    p->c.tx_completions++;
    return 1;
}

int hvu_sim_tx_complete(struct hvu_sim_pump *p, uint64_t tid, uint32_t status)
{
    int rc = completion_room(p);
    return rc == 1 ? write_completion(p, tid, status) : rc;
}

int hvu_sim_tx_data(struct hvu_sim_pump *p, uint64_t tid, const uint8_t *data, uint32_t size,
                    const uint32_t *ends, uint32_t nends)
{
    struct frame_ref frames[MAX_MSGS];
    struct hvu_off_plan plans[MAX_MSGS];
    uint32_t nframes = 0, i;
    int rc;

    if (parse_send(p, data, size, ends, nends, frames, &nframes) != 0)
        return 0;
    /* offload requests: all checked before anything is sent; a refusal is Python's (it logs why
     * and completes with NVSP_STAT_FAIL, as for any malformed data message) */
    for (i = 0; i < nframes; i++) {
        plans[i].action = HVU_OFF_TX_ASIS;
        if (!frames[i].has_csum && !frames[i].has_lso)
            continue;
        if (frames[i].len > p->gso_buf_len
            || hvu_off_tx_check(frames[i].data, frames[i].len, (int)frames[i].has_csum, frames[i].csum,
                                (int)frames[i].has_lso, frames[i].lso, p->off_tx, p->lso_max, p->max_frame,
                                &plans[i]) != 0)
            return reject(p, HVU_SIM_R_OFFLOAD, i), 0;
    }
    /* room for the completion first: a send is consumed only when it can be completed */
    rc = completion_room(p);
    if (rc != 1)
        return rc;
    for (i = 0; i < nframes; i++) {
        if (frames[i].has_csum || frames[i].has_lso)
            tx_offloaded(p, &frames[i], &plans[i]);
        else
            tx_count(p, tap_write(p, NULL, frames[i].data, frames[i].len), frames[i].len);
    }
    return write_completion(p, tid, NVSP_STAT_SUCCESS);
}

/* An in-band NVSP 107 data send: 1 handled, 0 hand to Python (reason set), 2 no room yet. */
int hvu_sim_tx_send(struct hvu_sim_pump *p, uint8_t flags, uint64_t tid, const uint8_t *nv, uint32_t plen)
{
    uint32_t chan_type, index, size;
    uint64_t base;

    if (plen < 16)
        return reject(p, HVU_SIM_R_NVSP_SHORT, plen), 0;
    chan_type = rd32(nv + 4);
    index = rd32(nv + 8);
    size = rd32(nv + 12);
    if (chan_type != 0 || index == NO_SECTION)
        return reject(p, HVU_SIM_R_CONTROL, chan_type), 0;
    if (!(flags & FLAG_RC))
        return reject(p, HVU_SIM_R_NO_COMPLETION_FLAG, flags), 0;
    /* [OV] parse_packet: any sub-range of the send buffer, so a send may span sections; past
     * the buffer it is Python's (the channel ends there) */
    base = (uint64_t)index * p->send_section;
    if (base > p->send_size || size > p->send_size - base)
        return reject(p, HVU_SIM_R_BAD_SECTION, index), 0;
    return hvu_sim_tx_data(p, tid, p->send_buf + base, size, NULL, 0);
}
