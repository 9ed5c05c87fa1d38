/* The trace writer: pcapng Enhanced Packet Blocks appended to a file, within a byte cap.
 *
 * What lives here: struct hvu_trace (fd, cap, counters) and the one routine that writes a block,
 * used by the data path's capture hooks (trace.h: frames, interface 0) and by Python (control
 * records, interface 1, hvuio/native/trace.py). The file's section header, its interface
 * descriptions and the control record's layout are Python's (hvuio/trace/, docs/TRACE.md).
 *
 * Rules: several writers at once (one pump thread per channel, Python's thread): each block is
 * one writev on an O_APPEND fd, which Linux appends whole for a regular file, and bytes are
 * reserved with an atomic add before the write, so the file never passes max_bytes. A block that
 * would pass it is not written and counted (frames and control records apart): the capture stops
 * at the cap, it does not rotate. A failed or short write is counted, never retried. No
 * allocation, no printing, no Python.h.
 */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, writev under -std=c11 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "datapath.h"
#include "trace.h"

struct hvu_trace {
    int fd;
    uint64_t max_bytes;
    uint64_t used;                        /* atomic: bytes reserved (written or being written) */
    uint64_t ctr[HVU_TRACE_COUNTERS];     /* atomic */
};

enum { EPB_TYPE = 6, OPT_EPB_FLAGS = 2, MAX_IOV = 8 };

size_t hvu_trace_sizeof(void) { return sizeof(struct hvu_trace); }

int hvu_trace_init(struct hvu_trace *t, int fd, uint64_t max_bytes, uint64_t used)
{
    if (t == NULL || fd < 0 || used > max_bytes)
        return -EINVAL;
    memset(t, 0, sizeof(*t));
    t->fd = fd;
    t->max_bytes = max_bytes;
    t->used = used;
    t->ctr[HVU_TRACE_BYTES] = used;
    return 0;
}

uint64_t hvu_trace_counter(const struct hvu_trace *t, int which)
{
    if (which < 0 || which >= HVU_TRACE_COUNTERS)
        return 0;
    return __atomic_load_n(&t->ctr[which], __ATOMIC_RELAXED);
}

void hvu_dp_set_trace(struct hvu_dp *dp, struct hvu_trace *t) { dp->trace = t; }

static void count(struct hvu_trace *t, int which, uint64_t n)
{
    __atomic_fetch_add(&t->ctr[which], n, __ATOMIC_RELAXED);
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof(v)); }

/* Writes one block whose packet data are the `n` segments of `seg` (together `len` bytes). */
static int write_block(struct hvu_trace *t, uint32_t iface, uint32_t dir, const struct iovec *seg, int n,
                       uint32_t len)
{
    int capped = iface == HVU_TRACE_IF_FRAMES ? HVU_TRACE_FRAMES_CAPPED : HVU_TRACE_CONTROL_CAPPED;
    if (len > HVU_TRACE_MAX_DATA || n > MAX_IOV - 2) {
        count(t, HVU_TRACE_WRITE_ERRORS, 1);
        return -EMSGSIZE;
    }
    uint32_t pad = (4 - (len & 3)) & 3;
    uint32_t total = HVU_TRACE_EPB_OVERHEAD + len + pad;
    uint64_t before = __atomic_fetch_add(&t->used, total, __ATOMIC_RELAXED);
    if (before + total > t->max_bytes) {
        __atomic_fetch_sub(&t->used, total, __ATOMIC_RELAXED);
        count(t, capped, 1);
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
    uint8_t head[28], tail[3 + 16];
    put32(head, EPB_TYPE);
    put32(head + 4, total);
    put32(head + 8, iface);
    put32(head + 12, (uint32_t)(us >> 32));
    put32(head + 16, (uint32_t)us);
    put32(head + 20, len);
    put32(head + 24, len);
    memset(tail, 0, sizeof(tail));
    uint8_t *opt = tail + pad;
    put32(opt, OPT_EPB_FLAGS | (4u << 16));   /* code 2, length 4 (little-endian u16 pair) */
    put32(opt + 4, dir & 3);
    put32(opt + 8, 0);                         /* opt_endofopt */
    put32(opt + 12, total);
    struct iovec iov[MAX_IOV];
    int k = 0;
    iov[k].iov_base = head;
    iov[k++].iov_len = sizeof(head);
    for (int i = 0; i < n; i++)
        iov[k++] = seg[i];
    iov[k].iov_base = tail;
    iov[k++].iov_len = pad + 16;
    ssize_t w;
    do {
        w = writev(t->fd, iov, k);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)total) {
        count(t, HVU_TRACE_WRITE_ERRORS, 1);
        return w < 0 ? -errno : -EIO;
    }
    count(t, iface == HVU_TRACE_IF_FRAMES ? HVU_TRACE_FRAMES : HVU_TRACE_CONTROL, 1);
    count(t, HVU_TRACE_BYTES, total);
    return 1;
}

int hvu_trace_block(struct hvu_trace *t, uint32_t iface, uint32_t dir, const uint8_t *data, uint32_t len)
{
    if (t == NULL || iface > HVU_TRACE_IF_CONTROL || (data == NULL && len))
        return -EINVAL;
    struct iovec seg = {(void *)data, len};
    return write_block(t, iface, dir, &seg, 1, len);
}

void hvu_trace_frame(struct hvu_trace *t, uint32_t dir, const uint8_t *data, uint32_t len)
{
    struct iovec seg = {(void *)data, len};
    write_block(t, HVU_TRACE_IF_FRAMES, dir, &seg, 1, len);
}

void hvu_trace_frame_iov(struct hvu_trace *t, uint32_t dir, const struct iovec *iov, int n, size_t total,
                         size_t skip)
{
    struct iovec seg[MAX_IOV - 2];
    int k = 0;
    size_t left = total, len = 0;
    for (int i = 0; i < n && left > 0 && k < MAX_IOV - 2; i++) {
        size_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
        left -= take;
        if (skip >= take) {
            skip -= take;
            continue;
        }
        seg[k].iov_base = (uint8_t *)iov[i].iov_base + skip;
        seg[k++].iov_len = take - skip;
        len += take - skip;
        skip = 0;
    }
    write_block(t, HVU_TRACE_IF_FRAMES, dir, seg, k, (uint32_t)(len > HVU_TRACE_MAX_DATA ? HVU_TRACE_MAX_DATA + 1 : len));
}
