/* Data path glue: configuration checks, signalling the host, the pump loop, faults, counters.
 *
 * What lives here: hvu_dp_init (every size and pointer checked once, so rx.c/tx.c can trust
 * them), hvu_dp_signal (VMBUS.md §3.12: monitor-page bit or a 4-byte write to the irq fd), hvu_dp_run
 * (poll on irq fd, tap fd and stop fd; interrupt mask handling, VMBUS.md §3.11/1.10), the fault and
 * drop records, and the counter/name tables. What must not: packet parsing (rx.c, tx.c),
 * allocation, printing.
 */
#define _POSIX_C_SOURCE 200809L   /* poll, readv/writev, clock_gettime under -std=c11 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "datapath.h"

size_t hvu_dp_sizeof(void) { return sizeof(struct hvu_dp); }

/* cfg as documented in datapath_api.h; the rings must already be attached in the right
 * directions. Returns 0, -EINVAL, or -EMSGSIZE for an outbound ring too small for one message
 * (with a GPA pool: one type-9 packet naming a whole slot). Nothing is kept on failure. */
int hvu_dp_init(struct hvu_dp *dp, const struct hvu_dp_config *cfg)
{
    if (dp == NULL || cfg == NULL || cfg->tx_ring == NULL || cfg->rx_ring == NULL ||
        cfg->tx_ring == cfg->rx_ring || !cfg->tx_ring->attached || !cfg->rx_ring->attached ||
        cfg->tx_ring->dir != HVU_RING_TX || cfg->rx_ring->dir != HVU_RING_RX)
        return -EINVAL;
    /* every message the pump writes must fit, or each one fails with -EMSGSIZE for ever */
    if (hvu_ring_data_size(cfg->tx_ring) < HVU_DP_TX_RING_MIN)
        return -EMSGSIZE;
    if (cfg->recv_buf == NULL || cfg->recv_buf_size == 0 || cfg->recv_section_size == 0 ||
        cfg->recv_section_size > cfg->recv_buf_size)
        return -EINVAL;
    uint32_t hdr = HVU_DP_RNDIS_PKT_SIZE + ((cfg->flags & HVU_DP_F_TX_HASH) ? HVU_DP_RNDIS_HASH_PPI_SIZE : 0);
    if (cfg->send_buf == NULL || cfg->send_section_count == 0 ||
        cfg->send_section_count > HVU_DP_MAX_SECTIONS ||
        cfg->send_section_size < hdr + HVU_DP_ETH_HLEN ||
        (uint64_t)cfg->send_section_size * ((uint64_t)cfg->send_section_first + cfg->send_section_count) >
            cfg->send_buf_size)
        return -EINVAL;
    if (cfg->fanout_count > HVU_DP_FANOUT_MAX || (cfg->fanout_count != 0 && cfg->fanout_fds == NULL))
        return -EINVAL;
    for (uint32_t i = 0; i < cfg->fanout_count; i++)
        if (cfg->fanout_fds[i] < 0)
            return -EINVAL;
    if (cfg->pkt_buf == NULL || cfg->pkt_buf_size < HVU_DESC_SIZE + 64 ||
        cfg->range_buf == NULL || cfg->range_buf_size < cfg->recv_section_size)
        return -EINVAL;
    if (cfg->tap_fd < 0 || cfg->irq_fd < 0 || cfg->mtu < HVU_DP_MTU_MIN || cfg->mtu > HVU_DP_MTU_MAX)
        return -EINVAL;
    if (cfg->monitor_page != NULL && cfg->monitor_id >= HVU_MONITOR_MAX_ID)
        return -EINVAL;
    if ((cfg->flags & ~(uint32_t)(HVU_DP_F_VNET_HDR | HVU_DP_F_BUSY_POLL | HVU_DP_F_MANAGE_MASK |
                                  HVU_DP_F_TX_HASH | HVU_DP_F_TAP_OFFLOAD | HVU_DP_F_TX_CSUM_TCP4 |
                                  HVU_DP_F_TX_CSUM_UDP4 | HVU_DP_F_TX_CSUM_TCP6 |
                                  HVU_DP_F_TX_CSUM_UDP6 | HVU_DP_F_TX_LSO4 | HVU_DP_F_TX_LSO6 |
                                  HVU_DP_F_RX_CSUM | HVU_DP_F_WAKE_FD | HVU_DP_F_TAP_URING)) != 0)
        return -EINVAL;
    if ((cfg->flags & HVU_DP_F_WAKE_FD) && cfg->wake_fd < 0)
        return -EINVAL;
    /* offloads: the tap's vnet header carries them, the stage holds a whole GSO frame, and a
     * section must hold the RNDIS header, two pktinfo and at least Ethernet + IP + TCP headers */
    if ((cfg->flags & HVU_DP_F_TAP_OFFLOAD) &&
        (!(cfg->flags & HVU_DP_F_VNET_HDR) || cfg->tx_stage == NULL ||
         cfg->tx_stage_size < HVU_DP_VNET_HDR_SIZE + HVU_DP_GSO_MAX ||
         cfg->send_section_size < hdr + 2 * HVU_DP_PPI_SIZE + HVU_DP_OFFLOAD_HDRS_MIN))
        return -EINVAL;
    /* without a vnet header, segments of a long RSC frame are cut after it (rx.c) */
    if (cfg->rsc_buf != NULL &&
        cfg->rsc_buf_size < HVU_DP_RSC_MAX_BYTES + ((cfg->flags & HVU_DP_F_VNET_HDR) ? 0 :
                                                    cfg->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN))
        return -EINVAL;
    if (cfg->tx_agg_align > HVU_DP_TX_AGG_ALIGN_MAX || (cfg->tx_agg_align & (cfg->tx_agg_align - 1)) != 0)
        return -EINVAL;
    memset(dp, 0, sizeof(*dp));
    dp->tx = cfg->tx_ring;
    dp->rx = cfg->rx_ring;
    dp->recv_buf = cfg->recv_buf;
    dp->recv_size = cfg->recv_buf_size;
    dp->recv_section = cfg->recv_section_size;
    dp->send_first = cfg->send_section_first;
    dp->send_buf = (uint8_t *)cfg->send_buf + (size_t)cfg->send_section_first * cfg->send_section_size;
    dp->send_section = cfg->send_section_size;
    dp->send_count = cfg->send_section_count;
    dp->pkt_buf = cfg->pkt_buf;
    dp->pkt_cap = cfg->pkt_buf_size;
    dp->range_buf = cfg->range_buf;
    dp->range_cap = cfg->range_buf_size;
    dp->tap_fd = cfg->tap_fd;
    dp->irq_fd = cfg->irq_fd;
    dp->wake_fd = (cfg->flags & HVU_DP_F_WAKE_FD) ? cfg->wake_fd : -1;
    dp->nfanout = cfg->fanout_count;
    for (uint32_t i = 0; i < cfg->fanout_count; i++)
        dp->fanout[i] = cfg->fanout_fds[i];
    dp->idle_poll_ms = cfg->idle_poll_ms;
    dp->mon_page = cfg->monitor_page;
    dp->mon_id = cfg->monitor_id;
    dp->mtu = cfg->mtu;
    dp->flags = cfg->flags;
    dp->tx_hash = cfg->tx_hash_value;
    dp->tx_hdr_len = hdr;
    dp->busy_poll_ns = (uint64_t)cfg->busy_poll_us * 1000u;
    dp->stage = cfg->tx_stage;
    dp->stage_cap = cfg->tx_stage != NULL ? cfg->tx_stage_size - HVU_DP_VNET_HDR_SIZE : 0;
    dp->rsc_buf = cfg->rsc_buf;
    dp->rsc_cap = cfg->rsc_buf != NULL ? HVU_DP_RSC_MAX_BYTES : 0;
    dp->lso_max = cfg->lso_max_size;
    dp->held = -1;
    dp->rsc_vlan = dp->stage_vlan = dp->gpa_frame_vlan = HVU_DP_NO_VLAN;
    dp->agg_pkts = cfg->tx_agg_packets > 1 ? cfg->tx_agg_packets : 1;
    dp->agg_align = cfg->tx_agg_align > 1 ? cfg->tx_agg_align : 1;
    dp->agg_size = cfg->tx_agg_bytes != 0 && cfg->tx_agg_bytes < dp->send_section ? cfg->tx_agg_bytes
                                                                                   : dp->send_section;
    /* GPA-direct (tx_gpa.c): a slot holds the largest message, header with hash and one more
     * pktinfo in front of a 64 KiB GSO frame */
    int rc = hvu_dp_gpa_init(dp, cfg, hdr + HVU_DP_PPI_SIZE + HVU_DP_GSO_MAX);
    if (rc < 0) {
        memset(dp, 0, sizeof(*dp));
        return rc;
    }
    dp->gpa_plain = dp->gpa_slot != 0 && !(dp->flags & HVU_DP_F_TAP_OFFLOAD) &&
                    dp->send_section - hdr < dp->mtu + HVU_DP_ETH_HLEN + HVU_DP_VLAN_HLEN;
    /* batched tap I/O (tapio.c): last, so nothing after it can fail with the ring open */
    rc = hvu_dp_io_init(dp, cfg);
    if (rc < 0) {
        memset(dp, 0, sizeof(*dp));
        return rc;
    }
    dp->initialised = 1;
    return 0;
}

/* ---- records ----------------------------------------------------------------------------------- */

void hvu_dp_drop_note(struct hvu_dp *dp, int reason, uint64_t value)
{
    dp->last_drop.reason = reason;
    dp->last_drop.value = value;
    if (reason > 0 && reason < HVU_DP_REASON_END)
        dp->drops[reason]++;
}

/* Remembers which fd failed; returns -err for the caller to pass up. */
int hvu_dp_sys_error(struct hvu_dp *dp, int fd_role, int err)
{
    dp->err_fd = fd_role;
    dp->err_no = err;
    return -err;
}

/* The first ring fault (inbound checked first) and the last failed syscall; returns 1 if any. */
int hvu_dp_fault(const struct hvu_dp *dp, struct hvu_dp_fault *out)
{
    struct hvu_fault f;
    memset(out, 0, sizeof(*out));
    if (hvu_ring_fault(dp->rx, &f) != HVU_OK) {
        out->ring = 1;
        out->reason = f.reason;
        out->value = f.value;
    } else if (hvu_ring_fault(dp->tx, &f) != HVU_OK) {
        out->ring = 2;
        out->reason = f.reason;
        out->value = f.value;
    }
    out->fd = dp->err_fd;
    out->err = dp->err_no;
    return out->ring != 0 || out->fd != 0;
}

int hvu_dp_last_drop(const struct hvu_dp *dp, struct hvu_dp_drop *out)
{
    *out = dp->last_drop;
    return out->reason;
}

/* Drops noted with this reason since init (one per note: an RSC drop of many fragments is one). */
uint64_t hvu_dp_drop_count(const struct hvu_dp *dp, int reason)
{
    return reason > 0 && reason < HVU_DP_REASON_END ? dp->drops[reason] : 0;
}

static const char *const dp_reason_names[HVU_DP_REASON_END - HVU_DP_NVS_SHORT] = {
    "nvs_short", "nvs_type", "rndis_short", "rndis_msg_len", "rndis_data_offset",
    "rndis_data_len", "rndis_pktinfo", "rx_oversize", "tap_write", "completion_id",
    "tx_oversize", "tx_runt", "rndis_type", "vnet_flags", "vnet_gso_type", "vnet_csum",
    "vnet_gso", "rsc_sequence", "rsc_too_long", "rsc_frame", "rsc_csum", "gpa_completion_id",
    "rx_vlan_pktinfo",
};

/* Names for both the ring's reasons (< 32) and the data path's. */
const char *hvu_dp_reason_name(int reason)
{
    if (reason >= HVU_DP_NVS_SHORT && reason < HVU_DP_REASON_END)
        return dp_reason_names[reason - HVU_DP_NVS_SHORT];
    return hvu_reason_name(reason);
}

uint32_t hvu_dp_pending_completions(const struct hvu_dp *dp) { return dp->npend; }

static const char *const dp_counter_names[] = {
#define HVU_DP_COUNTER_NAME(name) #name,
    HVU_DP_COUNTERS(HVU_DP_COUNTER_NAME)
#undef HVU_DP_COUNTER_NAME
};

#define NDPCOUNTERS ((int)(sizeof(dp_counter_names) / sizeof(dp_counter_names[0])))

int hvu_dp_counter_count(void) { return NDPCOUNTERS; }

const char *hvu_dp_counter_name(int i)
{
    return (i < 0 || i >= NDPCOUNTERS) ? NULL : dp_counter_names[i];
}

uint64_t hvu_dp_counter(const struct hvu_dp *dp, int i)
{
    if (i < 0 || i >= NDPCOUNTERS)
        return 0;
    const uint64_t *v = (const uint64_t *)&dp->ctr;
    return v[i];
}

/* ---- signalling (VMBUS.md §3.12) ---------------------------------------------------------------------- */

/* One signal to the host for this channel. 0, or -errno if the irq fd write failed. */
int hvu_dp_signal(struct hvu_dp *dp)
{
    dp->need_signal = 0;
    dp->ctr.signals++;
    if (dp->mon_page != NULL)   /* monitor.c: atomic OR of our trigger bit (VMBUS.md §3.12) */
        return hvu_monitor_signal(dp->mon_page, HVU_HV_PAGE_SIZE, dp->mon_id);
    uint32_t one = 1;
    ssize_t w;
    do {
        w = write(dp->irq_fd, &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
    /* EAGAIN: the fd's queue is full of signals the peer has not consumed yet, so it will
     * look at the rings anyway (an emulator's socket; a uio fd never returns it) */
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (w != (ssize_t)sizeof(one))
        return hvu_dp_sys_error(dp, HVU_DP_FD_IRQ, w < 0 ? errno : EIO);
    return 0;
}

/* ---- the pump ---------------------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ms(void) { return now_ns() / 1000000; }

/* The wake fd is readable: consume it. For the irq fd (re-arms the uio event) also wake every
 * other channel's pump: uio has one event counter for all channels of a device, and whoever reads
 * it takes the wake-up from the rest (VMBUS.md §1.7 item 30). Their eventfds count, so two
 * wake-ups before a pump runs are one pass over its rings, never a lost one. 0 or -errno. */
static int wake_up(struct hvu_dp *dp)
{
    ssize_t rd;
    if (dp->wake_fd >= 0) {
        uint64_t n;
        rd = read(dp->wake_fd, &n, sizeof(n));
        if (rd < 0 && errno != EAGAIN && errno != EINTR)
            return hvu_dp_sys_error(dp, HVU_DP_FD_WAKE, errno);
        if (rd > 0)
            dp->ctr.irq_wakeups++;
        return 0;
    }
    uint32_t count;
    rd = read(dp->irq_fd, &count, sizeof(count));   /* re-arms the uio event */
    if (rd < 0 && errno != EAGAIN && errno != EINTR)
        return hvu_dp_sys_error(dp, HVU_DP_FD_IRQ, errno);
    if (rd == 0)
        return hvu_dp_sys_error(dp, HVU_DP_FD_IRQ, EIO);   /* peer gone (emulator) */
    if (rd < 0)
        return 0;
    dp->ctr.irq_wakeups++;
    for (uint32_t i = 0; i < dp->nfanout; i++) {
        uint64_t one = 1;
        ssize_t w;
        do {
            w = write(dp->fanout[i], &one, sizeof(one));
        } while (w < 0 && errno == EINTR);
        /* EAGAIN: that counter is at its maximum, so its pump is woken anyway */
        if (w < 0 && errno != EAGAIN)
            return hvu_dp_sys_error(dp, HVU_DP_FD_WAKE, errno);
    }
    return 0;
}

/* Packets moved so far, either way: a change means the last pass did work. */
static uint64_t activity(const struct hvu_dp *dp)
{
    return dp->ctr.rx_xfer + dp->ctr.tx_packets + dp->ctr.tx_completions;
}

/* Runs rx and tx until stop_fd is readable (HVU_DP_STOPPED), a packet for Python is next
 * (HVU_DP_CONTROL), timeout_ms passes (HVU_DP_TIMEOUT; < 0 = never), or an error (negative).
 * stop_fd is only polled, never read: the caller drains it. */
int hvu_dp_run(struct hvu_dp *dp, int stop_fd, int timeout_ms, unsigned budget)
{
    if (dp == NULL || !dp->initialised || stop_fd < 0 || budget == 0)
        return -EINVAL;
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    int manage = (dp->flags & HVU_DP_F_MANAGE_MASK) != 0;
    for (;;) {
        if (manage)
            hvu_ring_set_interrupt_mask(dp->rx, 1);   /* draining: the host need not interrupt */
        int r = hvu_dp_rx(dp, budget);
        if (r < 0 || r == HVU_DP_CONTROL)
            return r;
        int t = hvu_dp_tx(dp, budget);
        if (t < 0)
            return t;
        int more = r == HVU_DP_BUDGET || t == HVU_DP_BUDGET;
        if (dp->io.on) {
            /* tapio.c: frames a burst read ahead are work now unless TX is blocked */
            int ready = hvu_dp_io_poll(dp);
            if (ready < 0)
                return ready;
            if (ready > 0 && t != HVU_DP_BLOCKED)
                more = 1;
        }
        int wait_ms = 0;
        int spinning = 0;
        if (dp->busy_poll_ns != 0) {
            /* busy poll (like Linux's net.core.busy_poll): right after traffic the next packet
             * (a reply, an ACK) is likely microseconds away, sooner than a sleep + wake-up; the
             * inbound mask stays set meanwhile, so the host need not interrupt either */
            uint64_t act = activity(dp);
            int64_t now = now_ns();
            if (act != dp->bp_seen) {
                dp->bp_seen = act;
                dp->bp_last_work_ns = now;
            }
            /* at the deadline, stop spinning: return the usual way (unmasked, rings re-checked) */
            spinning = dp->bp_last_work_ns != 0 && now - dp->bp_last_work_ns < (int64_t)dp->busy_poll_ns &&
                       (deadline < 0 || now / 1000000 < deadline);
        }
        if (!more && !spinning && !(dp->flags & HVU_DP_F_BUSY_POLL)) {
            if (manage) {
                /* unmask, then re-check: a packet published before the unmask raised no
                 * interrupt (the host interrupts on empty -> non-empty only, VMBUS.md §3.11 d) */
                hvu_ring_set_interrupt_mask(dp->rx, 0);
                int64_t avail = hvu_ring_bytes_to_read(dp->rx);
                if (avail < 0)
                    return (int)avail;
                if (avail > 0 && r != HVU_DP_BLOCKED)
                    continue;
            }
            if (deadline < 0) {
                wait_ms = -1;
            } else {
                int64_t left = deadline - now_ms();
                wait_ms = left > 0 ? (int)(left > 0x7fffffff ? 0x7fffffff : left) : 0;
            }
            if (dp->idle_poll_ms != 0 && (wait_ms < 0 || (uint32_t)wait_ms > dp->idle_poll_ms))
                wait_ms = (int)dp->idle_poll_ms;
        }
        struct pollfd pfd[3];
        pfd[0].fd = stop_fd;
        pfd[0].events = POLLIN;
        pfd[1].fd = dp->wake_fd >= 0 ? dp->wake_fd : dp->irq_fd;
        pfd[1].events = POLLIN;
        pfd[2].fd = dp->tap_eof ? -1 : dp->tap_fd;   /* an ended tap stays readable (POLLHUP) */
        pfd[2].events = t == HVU_DP_BLOCKED ? 0 : POLLIN;   /* backpressure: leave frames queued */
        pfd[0].revents = pfd[1].revents = pfd[2].revents = 0;
        if (wait_ms != 0)
            dp->ctr.polls++;
        int n = poll(pfd, 3, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return hvu_dp_sys_error(dp, HVU_DP_FD_NONE, errno);
        }
        if (pfd[0].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))
            return pfd[0].revents & POLLNVAL ? hvu_dp_sys_error(dp, HVU_DP_FD_STOP, EBADF) : HVU_DP_STOPPED;
        int wake_role = dp->wake_fd >= 0 ? HVU_DP_FD_WAKE : HVU_DP_FD_IRQ;
        if (pfd[1].revents & POLLNVAL)
            return hvu_dp_sys_error(dp, wake_role, EBADF);
        if (pfd[1].revents & (POLLIN | POLLERR | POLLHUP)) {
            int r2 = wake_up(dp);
            if (r2 < 0)
                return r2;
        }
        if (pfd[2].revents & POLLNVAL)
            return hvu_dp_sys_error(dp, HVU_DP_FD_TAP, EBADF);
        if (deadline >= 0 && now_ms() >= deadline && !more) {
            if (spinning && manage) {
                /* the deadline came mid-spin, still masked: leave the usual way, unmasked and
                 * re-checked, or a packet published meanwhile would raise no interrupt */
                hvu_ring_set_interrupt_mask(dp->rx, 0);
                int64_t avail = hvu_ring_bytes_to_read(dp->rx);
                if (avail < 0)
                    return (int)avail;
                if (avail > 0)
                    continue;
            }
            return HVU_DP_TIMEOUT;
        }
    }
}
