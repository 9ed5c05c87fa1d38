/* Tap I/O: every read and write of the pump on the tap fd, one readv/writev per frame or batched
 * through one io_uring (uring.c), many frames per system call.
 *
 * What lives here: hvu_dp_tap_readv (tx.c's reads: runts, the end of the tap, the trace) and
 * hvu_dp_tap_write (rx.c's writes: the vnet header, the 802.1Q tag put back, counting), and under
 * them, with HVU_DP_F_TAP_URING (the rules below are what datapath.h's header relies on):
 *  - Set-up (hvu_dp_io_init): the caller's io memory is cut into TX slots and RX slots; a ring of
 *    at least as many entries as slots is asked for. A kernel that refuses (io_uring_setup: ENOSYS,
 *    EPERM with kernel.io_uring_disabled, a seccomp filter ...) leaves io.on = 0 and the errno in
 *    io.setup_err: the pump runs one readv/writev per frame, as without the flag.
 *    hvu_dp_tap_io_probe makes the same ring set-up without a pump and closes it at once
 *    (`hvuio doctor` asks it whether pumps started here will batch).
 *  - TX (tap -> host): reads come in bursts: when tx.c wants a frame and none is read ahead, one
 *    io_uring_enter submits `burst` IORING_OP_READs of the tap fd into TX slots, each with
 *    RWF_NOWAIT, so a read that finds the tap empty completes -EAGAIN inside that call rather
 *    than stay armed (tun supports the no-wait retry: without the flag io_uring would arm a poll
 *    and finish the read later, through task work on the submitting thread, costing a wake-up
 *    per frame). Every read of a burst has completed when the call returns, in the order they
 *    were issued, which is the order the frames left the tap; the completions are taken from the
 *    CQ ring without a system call into a FIFO, and hvu_dp_tap_readv hands the oldest frame to
 *    tx.c's read path with readv's result (cut to the caller's iov as readv cuts), so sections,
 *    GPA slots, the offload stage, VLAN and trace work unchanged. A burst that ended with empty
 *    reads stands for readv's EAGAIN for the rest of that hvu_dp_tx call; the next burst is
 *    twice as long after one that read a frame with every read, half as long after one that read
 *    fewer than half (4 .. the slots). Nothing stays armed: frames stay in the tap while the pump
 *    does not read, as with readv, and the pump's wait polls the tap fd as before. 0 is the end
 *    of the tap (tx.c reads it no more). While the frames read lately are large (a running mean
 *    over about 8 above IO_BIG_FRAME: GSO super-frames, jumbo frames) and none is read ahead,
 *    a read is one readv straight into tx.c's destination instead: copying such a frame out of
 *    a slot would cost more than the system call a burst saves.
 *  - RX (host -> tap): a frame that fits an RX slot is copied there (vnet header, the frame with
 *    its 802.1Q tag put back) and queued as one IORING_OP_WRITE with RWF_NOWAIT (a full queue
 *    answers -EAGAIN and the frame is dropped and counted, as writev's EAGAIN is, never waited
 *    for). hvu_dp_io_reap submits the queued writes with one io_uring_enter that also waits for
 *    them (a tap write completes inside the call), counts each (rx_packets/rx_bytes/rx_vlan and
 *    rx_ranges_written, or rx_tap_drop + the tap_write drop reason and rx_range_drops), and only
 *    then sends the receive completions of the transfer-page packets those frames came from
 *    (status FAILED when one of its writes failed): a packet is completed after its writes
 *    completed, as with writev. Reaped at the end of every hvu_dp_rx (rx.c), when the slots are
 *    all queued, and before any write that is not queued (RSC frames, frames longer than a slot),
 *    so frames reach the tap in the order the host sent them.
 *  - hvu_dp_close reaps what is queued and closes the ring before the caller's memory goes;
 *    frames a burst read ahead and the pump did not send are counted (tx_tap_closed).
 * What must not: frame parsing or building (rx.c, tx.c), allocation, printing.
 */
#define _GNU_SOURCE   /* RWF_NOWAIT */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "datapath.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define IO_WRITE_BIT (1ULL << 32)
#define IO_CANCEL_ID (1ULL << 33)
#define IO_BURST_MIN 4
/* Mean frame size above which a read goes straight to its destination (readv) rather than
 * through a slot: copying ~2 KiB out of a slot costs about the system call a burst saves. */
#define IO_BIG_FRAME 2048

static void arm(struct hvu_dp *dp, uint32_t i);
static void harvest(struct hvu_dp *dp);
static int io_enter(struct hvu_dp *dp, unsigned wait_nr);

static uint32_t vnet_len(const struct hvu_dp *dp)
{
    return (dp->flags & HVU_DP_F_VNET_HDR) ? HVU_DP_VNET_HDR_SIZE : 0;
}

/* Entries of the ring for `slots` TX + RX slots: the next power of two (one SQE per slot). */
static unsigned io_ring_entries(uint32_t slots)
{
    unsigned entries = 1;
    while (entries < slots)
        entries <<= 1;
    return entries;
}

int hvu_dp_io_init(struct hvu_dp *dp, const struct hvu_dp_config *cfg)
{
    struct hvu_dp_io *io = &dp->io;
    io->ring.fd = -1;
    if (!(cfg->flags & HVU_DP_F_TAP_URING))
        return 0;
    uint32_t frame_max = (cfg->flags & HVU_DP_F_TAP_OFFLOAD) ? cfg->tx_stage_size - HVU_DP_VNET_HDR_SIZE
                                                             : cfg->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    uint64_t tx_need = (uint64_t)vnet_len(dp) + frame_max + 1;   /* + the probe byte of tx.c */
    uint64_t rx_need = (uint64_t)vnet_len(dp) + cfg->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    if (cfg->io_buf == NULL || cfg->io_tx_slots == 0 || cfg->io_tx_slots > HVU_DP_IO_SLOTS_MAX ||
        cfg->io_rx_slots == 0 || cfg->io_rx_slots > HVU_DP_IO_SLOTS_MAX ||
        cfg->io_tx_slot_size < tx_need || cfg->io_rx_slot_size < rx_need ||
        (uint64_t)cfg->io_tx_slots * cfg->io_tx_slot_size + (uint64_t)cfg->io_rx_slots * cfg->io_rx_slot_size >
            cfg->io_buf_size)
        return -EINVAL;
    int rc = hvu_uring_open(&io->ring, io_ring_entries(cfg->io_tx_slots + cfg->io_rx_slots));
    if (rc < 0) {
        io->setup_err = -rc;
        return 0;
    }
    io->tx_mem = cfg->io_buf;
    io->tx_slots = cfg->io_tx_slots;
    io->tx_slot = cfg->io_tx_slot_size;
    io->rx_mem = io->tx_mem + (size_t)io->tx_slots * io->tx_slot;
    io->rx_slots = cfg->io_rx_slots;
    io->rx_slot = cfg->io_rx_slot_size;
    io->on = 1;
    io->burst = io->tx_slots < IO_BURST_MIN ? io->tx_slots : IO_BURST_MIN;
    dp->ctr.tap_uring = 1;
    return 0;
}

int hvu_dp_tap_io(const struct hvu_dp *dp) { return dp->io.on; }

int hvu_dp_tap_io_probe(uint32_t slots)
{
    if (slots == 0 || slots > 2 * HVU_DP_IO_SLOTS_MAX)
        return EINVAL;
    struct hvu_uring ring;
    int rc = hvu_uring_open(&ring, io_ring_entries(slots));
    if (rc < 0)
        return -rc;
    hvu_uring_close(&ring);
    return 0;
}

int hvu_dp_tap_io_error(const struct hvu_dp *dp) { return dp->io.setup_err; }

static int io_enter(struct hvu_dp *dp, unsigned wait_nr)
{
    dp->ctr.uring_enters++;
    return hvu_uring_enter(&dp->io.ring, wait_nr);
}

/* Prepares the read of TX slot i (submitted by the next io_enter). RWF_NOWAIT: a read that finds
 * the tap empty completes -EAGAIN inside that io_uring_enter instead of staying armed, so every
 * read of a burst has completed when the call returns, in the order the SQEs were issued. */
static void arm(struct hvu_dp *dp, uint32_t i)
{
    struct hvu_dp_io *io = &dp->io;
    struct io_uring_sqe *s = hvu_uring_sqe(&io->ring);
    if (s == NULL)   /* cannot happen: requests in flight never exceed the slots */
        return;
    s->opcode = IORING_OP_READ;
    s->fd = dp->tap_fd;
    s->addr = (uint64_t)(uintptr_t)(io->tx_mem + (size_t)i * io->tx_slot);
    s->len = io->tx_slot;
    s->off = (uint64_t)-1;   /* no file position: a tap (or a socket) is a stream */
    s->rw_flags = RWF_NOWAIT;
    s->user_data = i;
    io->tx_armed++;
}

/* One burst: `burst` reads in one io_uring_enter; they complete within it (RWF_NOWAIT). The
 * next burst is twice as long when this one was all frames, half as long (at least
 * IO_BURST_MIN) when fewer than half were: a trickle costs few empty reads, a flood few calls.
 * Returns the frames read, or -errno of io_uring_enter. */
static int burst(struct hvu_dp *dp)
{
    struct hvu_dp_io *io = &dp->io;
    for (uint32_t i = 0; i < io->burst; i++)
        arm(dp, i);
    int rc = io_enter(dp, io->burst);
    if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR)
        return rc;
    harvest(dp);
    uint32_t got = 0;
    for (uint32_t k = 0; k < io->nready; k++)
        got += io->ready_res[(io->ready_head + k) % HVU_DP_IO_SLOTS_MAX] != -EAGAIN;
    io->drained = got < io->burst;
    if (got == io->burst)
        io->burst = io->burst * 2 > io->tx_slots ? io->tx_slots : io->burst * 2;
    else if (got < io->burst / 2)
        io->burst = io->burst / 2 < IO_BURST_MIN ? (io->tx_slots < IO_BURST_MIN ? io->tx_slots : IO_BURST_MIN)
                                                  : io->burst / 2;
    return (int)got;
}

static void write_done(struct hvu_dp *dp, uint32_t i, int32_t res)
{
    struct hvu_dp_io *io = &dp->io;
    const struct hvu_dp_io_write *w = &io->wr[i];
    io->rx_inflight--;
    dp->ctr.uring_writes++;
    if (res >= 0 && (uint32_t)res == w->want) {
        dp->ctr.rx_packets++;
        dp->ctr.rx_bytes += w->want - vnet_len(dp);
        dp->ctr.rx_vlan += w->tagged;
        dp->ctr.rx_ranges_written++;
        return;
    }
    dp->ctr.rx_tap_drop++;
    dp->ctr.rx_range_drops++;
    hvu_dp_drop_note(dp, HVU_DP_TAP_WRITE, res < 0 ? (uint64_t)-res : (uint64_t)res);
    if (w->xfer < io->ndefer)
        io->defer[w->xfer].status = HVU_NVS_STATUS_FAILED;
    else
        io->cur_failed = 1;
}

/* Takes every completion from the CQ ring (no system call): reads join the FIFO, writes are
 * counted. */
static void harvest(struct hvu_dp *dp)
{
    struct hvu_dp_io *io = &dp->io;
    struct io_uring_cqe c;
    while (hvu_uring_cqe(&io->ring, &c)) {
        if (c.user_data & IO_CANCEL_ID)
            continue;
        uint32_t i = (uint32_t)c.user_data;
        if (c.user_data & IO_WRITE_BIT) {
            if (i < io->rx_slots && io->rx_inflight > 0)
                write_done(dp, i, c.res);
            continue;
        }
        if (i >= io->tx_slots || io->nready >= HVU_DP_IO_SLOTS_MAX)
            continue;   /* not ours: cannot happen */
        io->tx_armed--;
        uint32_t at = (io->ready_head + io->nready) % HVU_DP_IO_SLOTS_MAX;
        io->ready[at] = (uint16_t)i;
        io->ready_res[at] = c.res;
        io->nready++;
    }
}

int hvu_dp_io_poll(struct hvu_dp *dp)
{
    struct hvu_dp_io *io = &dp->io;
    if (!io->on)
        return 0;
    if (hvu_uring_pending(&io->ring) > 0) {
        int rc = io_enter(dp, 0);
        if (rc < 0 && rc != -EAGAIN && rc != -EBUSY)
            return hvu_dp_sys_error(dp, HVU_DP_FD_TAP, -rc);
    }
    harvest(dp);
    return (int)io->nready;
}

static ssize_t io_readv(struct hvu_dp *dp, struct iovec *iov, int n)
{
    struct hvu_dp_io *io = &dp->io;
    for (;;) {
        if (io->nready == 0) {
            if (io->drained) {   /* the last burst emptied the tap: that is this batch's EAGAIN */
                io->drained = 0;
                return -EAGAIN;
            }
            int rc = burst(dp);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                io->nready = 0;   /* all -EAGAIN */
                io->drained = 0;
                return -EAGAIN;
            }
        }
        uint32_t i = io->ready[io->ready_head];
        int32_t res = io->ready_res[io->ready_head];
        io->ready_head = (io->ready_head + 1) % HVU_DP_IO_SLOTS_MAX;
        io->nready--;
        if (res == -EAGAIN || res == -EINTR || res == -ECANCELED)
            continue;       /* a read that found the tap empty (a frame may follow it) */
        dp->ctr.uring_reads++;
        if (res <= 0)
            return res;     /* 0: the end of the tap (tx.c never reads again); -errno: a tap error */
        const uint8_t *src = io->tx_mem + (size_t)i * io->tx_slot;
        size_t left = (size_t)res, done = 0;
        for (int k = 0; k < n && left > 0; k++) {
            size_t take = iov[k].iov_len < left ? iov[k].iov_len : left;
            memcpy(iov[k].iov_base, src + done, take);
            done += take;
            left -= take;
        }
        return (ssize_t)done;
    }
}

static int io_write(struct hvu_dp *dp, const struct iovec *iov, int n, size_t want, int tagged)
{
    struct hvu_dp_io *io = &dp->io;
    if (!io->on || want > io->rx_slot)
        return 0;
    if (io->rx_queued >= io->rx_slots && hvu_dp_io_reap(dp) < 0)
        return 0;   /* the error is recorded; the caller writes this one itself */
    uint32_t i = io->rx_queued;
    uint8_t *dst = io->rx_mem + (size_t)i * io->rx_slot;
    size_t at = 0;
    for (int k = 0; k < n; k++) {
        memcpy(dst + at, iov[k].iov_base, iov[k].iov_len);
        at += iov[k].iov_len;
    }
    struct io_uring_sqe *s = hvu_uring_sqe(&io->ring);
    if (s == NULL)
        return 0;
    s->opcode = IORING_OP_WRITE;
    s->fd = dp->tap_fd;
    s->addr = (uint64_t)(uintptr_t)dst;
    s->len = (uint32_t)want;
    s->off = (uint64_t)-1;
    s->rw_flags = RWF_NOWAIT;   /* a full queue drops the frame (counted), never blocks the pump */
    s->user_data = IO_WRITE_BIT | i;
    io->wr[i].want = (uint32_t)want;
    io->wr[i].xfer = io->ndefer;
    io->wr[i].tagged = tagged != 0;
    io->rx_queued++;
    io->rx_inflight++;
    io->cur_queued++;
    return 1;
}

int hvu_dp_io_reap(struct hvu_dp *dp)
{
    struct hvu_dp_io *io = &dp->io;
    if (!io->on)
        return 0;
    int err = 0;
    if (io->rx_inflight == 0) {
        err = hvu_dp_io_poll(dp) < 0 ? -dp->err_no : 0;
    } else {
        while (io->rx_inflight > 0) {
            int rc = io_enter(dp, io->rx_inflight);
            if (rc < 0 && rc != -EAGAIN && rc != -EBUSY) {
                err = hvu_dp_sys_error(dp, HVU_DP_FD_TAP, -rc);
                break;
            }
            harvest(dp);
        }
    }
    if (io->rx_inflight != 0)
        return err;   /* the ring failed: the writes' packets stay uncompleted */
    io->rx_queued = 0;
    io->cur_queued = 0;   /* the packet being handled: its writes so far are counted */
    for (uint32_t k = 0; k < io->ndefer; k++) {
        int rc = hvu_dp_complete_rx(dp, io->defer[k].trans_id, io->defer[k].status);
        if (rc < 0 && err == 0)
            err = rc;
    }
    io->ndefer = 0;
    return err;
}

/* ---- the tap fd, both ways: readv/writev or the ring ------------------------------------------- */

/* One readv from the tap. > 0 = bytes read (at least `min`), 0 = a runt dropped (counted),
 * -EAGAIN = tap empty, -EPIPE = end of the tap (sticky: never read again), other negative =
 * tap error. */
ssize_t hvu_dp_tap_readv(struct hvu_dp *dp, struct iovec *iov, int n, size_t min)
{
    ssize_t r;
    int e = 0;
    if (dp->tap_eof)
        return -EPIPE;
    /* large frames lately (and none read ahead): readv straight to the caller, no slot copy */
    if (dp->io.on && (dp->io.nready > 0 || dp->io.avg_len <= IO_BIG_FRAME)) {
        r = io_readv(dp, iov, n);
        if (r < 0)
            e = (int)-r;
    } else {
        do {
            r = readv(dp->tap_fd, iov, n);
        } while (r < 0 && errno == EINTR);
        if (r < 0)
            e = errno;
    }
    if (r > 0)   /* a running mean over about the last 8 frames */
        dp->io.avg_len = dp->io.avg_len - dp->io.avg_len / 8 + (uint32_t)r / 8;
    if (r < 0) {
        if (e == EAGAIN || e == EWOULDBLOCK)
            return -EAGAIN;
        dp->ctr.tx_tap_err++;
        return hvu_dp_sys_error(dp, HVU_DP_FD_TAP, e);
    }
    if (r == 0) {
        /* end of file: a tap never hands over an empty frame, so its other end is gone; it
         * would read 0 again at once, for ever (each a "runt", the pump spinning) */
        dp->tap_eof = 1;
        dp->ctr.tx_tap_err++;
        return hvu_dp_sys_error(dp, HVU_DP_FD_TAP, EPIPE);
    }
    if ((size_t)r < min) {
        dp->ctr.tx_runt++;
        hvu_dp_drop_note(dp, HVU_DP_TX_RUNT, (uint64_t)r);
        return 0;
    }
    if (dp->trace)   /* trace.h; a frame too big for the room is recorded as read */
        hvu_trace_frame_iov(dp->trace, HVU_TRACE_OUT, iov, n, (size_t)r, dp->flags & HVU_DP_F_VNET_HDR ? HVU_DP_VNET_HDR_SIZE : 0);
    return r;
}

/* One frame (+ vnet header when the tap has one) to the tap, with the 802.1Q tag of `vlan` put
 * after its MAC addresses unless vlan is HVU_DP_NO_VLAN. 0 written, -1 when the write failed, 1
 * queued on the io_uring (`queue` and the frame fits a slot: counted when it completes, and the
 * range with it). Any other write waits for the queued ones first: the tap gets the
 * frames in order. */
int hvu_dp_tap_write(struct hvu_dp *dp, const struct hvu_vnet *v, const uint8_t *data, uint32_t len,
                     uint32_t vlan, int queue)
{
    uint8_t vnet[HVU_DP_VNET_HDR_SIZE], tag[HVU_DP_VLAN_HLEN];
    struct iovec iov[4];
    int niov = 0;
    size_t want = len;
    if (dp->flags & HVU_DP_F_VNET_HDR) {
        hvu_vnet_write(vnet, v);
        iov[niov].iov_base = vnet;
        iov[niov++].iov_len = sizeof(vnet);
        want += sizeof(vnet);
    }
    if (vlan != HVU_DP_NO_VLAN) {   /* the caller checked len >= 14 */
        hvu_dp_vlan_tag(vlan, tag);
        iov[niov].iov_base = (void *)data;
        iov[niov++].iov_len = 12;
        iov[niov].iov_base = tag;
        iov[niov++].iov_len = sizeof(tag);
        data += 12;
        len -= 12;
        want += sizeof(tag);
    }
    iov[niov].iov_base = (void *)data;
    iov[niov++].iov_len = len;
    if (dp->trace)   /* trace.h: the frame as written to the tap, its 802.1Q tag included */
        hvu_trace_frame_iov(dp->trace, HVU_TRACE_IN, iov, niov, want,
                            dp->flags & HVU_DP_F_VNET_HDR ? HVU_DP_VNET_HDR_SIZE : 0);
    if (dp->io.on) {
        if (queue && io_write(dp, iov, niov, want, vlan != HVU_DP_NO_VLAN) == 1)
            return 1;
        if (dp->io.rx_inflight > 0 && hvu_dp_io_reap(dp) < 0) {
            dp->ctr.rx_tap_drop++;   /* the ring failed (recorded): this frame cannot follow */
            hvu_dp_drop_note(dp, HVU_DP_TAP_WRITE, (uint64_t)dp->err_no);
            return -1;
        }
    }
    ssize_t w;
    do {
        w = writev(dp->tap_fd, iov, niov);
    } while (w < 0 && errno == EINTR);
    if (w < 0 || (size_t)w != want) {
        dp->ctr.rx_tap_drop++;
        hvu_dp_drop_note(dp, HVU_DP_TAP_WRITE, w < 0 ? (uint64_t)errno : (uint64_t)w);
        return -1;
    }
    dp->ctr.rx_packets++;
    dp->ctr.rx_bytes += want - ((dp->flags & HVU_DP_F_VNET_HDR) ? HVU_DP_VNET_HDR_SIZE : 0);
    if (vlan != HVU_DP_NO_VLAN)
        dp->ctr.rx_vlan++;
    return 0;
}

void hvu_dp_close(struct hvu_dp *dp)
{
    if (dp == NULL)
        return;
    struct hvu_dp_io *io = &dp->io;
    if (io->on) {
        hvu_dp_io_reap(dp);
        for (uint32_t k = 0; k < io->nready; k++)
            if (io->ready_res[(io->ready_head + k) % HVU_DP_IO_SLOTS_MAX] > 0)
                dp->ctr.tx_tap_closed++;
        io->nready = 0;
        hvu_uring_close(&io->ring);
        io->on = 0;
    }
    dp->initialised = 0;
}
