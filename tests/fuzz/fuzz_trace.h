/* The data path's capture hook (trace.c) for the dp_rx and dp_tx harnesses: an input may turn it
 * on, writing to a memfd (whose bytes are then checked) or to /dev/null, with a cap large or small.
 *
 * Checks: the file holds exactly `used` + the bytes the writer counts, never more than the cap;
 * it is a sequence of well-formed Enhanced Packet Blocks (docs/TRACE.md) on interface 0 (frames),
 * each with a direction the harness allows, as many as the writer counts, each frame within the
 * lengths the harness allows (dp_rx: what it may write to the tap; dp_tx: whatever a read gave).
 */
#ifndef HVU_FUZZ_TRACE_H
#define HVU_FUZZ_TRACE_H

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "trace.h"

struct fz_trace {
    struct hvu_trace *t;        /* NULL: off */
    int fd, memfd;
    uint64_t cap, used;
};

/* one byte decides: bit 0 memfd (else /dev/null), bit 1 a small cap (two more bytes) */
static void fz_trace_on(struct fz_trace *z, struct fz *f, struct hvu_dp *dp)
{
    uint8_t t = fz_u8(f);
    z->memfd = (t & 1) != 0;
    z->fd = z->memfd ? memfd_create("fz-trace", MFD_CLOEXEC) : open("/dev/null", O_WRONLY | O_APPEND | O_CLOEXEC);
    CHECK(z->fd >= 0, "trace fd");
    if (z->memfd)
        CHECK(fcntl(z->fd, F_SETFL, O_APPEND) == 0, "O_APPEND");
    z->used = 32;                                        /* stands for the section header + interfaces */
    uint8_t head[32];
    memset(head, 0xEE, sizeof(head));
    CHECK(write(z->fd, head, sizeof(head)) == (ssize_t)sizeof(head), "trace head");
    z->cap = (t & 2) ? z->used + fz_u16(f) : (64u << 20);
    z->t = calloc(1, hvu_trace_sizeof());
    CHECK(hvu_trace_init(z->t, z->fd, z->cap, z->used) == 0, "hvu_trace_init refused a valid configuration");
    hvu_dp_set_trace(dp, z->t);
}

/* dirs: bit mask of the directions allowed (1 << HVU_TRACE_IN, 1 << HVU_TRACE_OUT); min_frame,
 * max_frame: the shortest and the longest frame a block may hold */
static void fz_trace_check(struct fz_trace *z, uint32_t dirs, uint32_t min_frame, uint32_t max_frame)
{
    if (!z->t)
        return;
    uint64_t bytes = hvu_trace_counter(z->t, HVU_TRACE_BYTES), frames = hvu_trace_counter(z->t, HVU_TRACE_FRAMES);
    CHECK(bytes <= z->cap, "trace of %llu bytes over its cap %llu", (unsigned long long)bytes,
          (unsigned long long)z->cap);
    CHECK(hvu_trace_counter(z->t, HVU_TRACE_CONTROL) == 0, "a control block from the data path");
    if (!z->memfd)
        return;
    struct stat st;
    CHECK(fstat(z->fd, &st) == 0, "fstat");
    CHECK((uint64_t)st.st_size == bytes, "trace file of %lld bytes, the writer counts %llu", (long long)st.st_size,
          (unsigned long long)bytes);
    if (st.st_size <= (off_t)z->used) {
        CHECK(frames == 0, "%llu frames counted, none in the file", (unsigned long long)frames);
        return;
    }
    uint8_t *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, z->fd, 0);
    CHECK(m != MAP_FAILED, "mmap");
    uint64_t pos = z->used, n = 0;
    while (pos < (uint64_t)st.st_size) {
        CHECK((uint64_t)st.st_size - pos >= HVU_TRACE_EPB_OVERHEAD, "a truncated block at %llu",
              (unsigned long long)pos);
        const uint8_t *b = m + pos;
        uint32_t total = rd32le(b + 4), cl = rd32le(b + 20), ol = rd32le(b + 24);
        uint32_t pad = (4 - (cl & 3)) & 3;
        CHECK(rd32le(b) == 6 && rd32le(b + 8) == HVU_TRACE_IF_FRAMES, "block %llu: type %u interface %u",
              (unsigned long long)n, rd32le(b), rd32le(b + 8));
        CHECK(total == HVU_TRACE_EPB_OVERHEAD + cl + pad && cl == ol && total <= (uint64_t)st.st_size - pos,
              "block %llu: total %u, captured %u, original %u", (unsigned long long)n, total, cl, ol);
        CHECK(cl >= min_frame && cl <= max_frame, "block %llu: a frame of %u bytes (%u..%u)", (unsigned long long)n,
              cl, min_frame, max_frame);
        const uint8_t *opt = b + 28 + cl + pad;
        CHECK(rd32le(opt) == (2u | 4u << 16) && rd32le(opt + 8) == 0 && rd32le(opt + 12) == total,
              "block %llu: options / trailer", (unsigned long long)n);
        uint32_t dir = rd32le(opt + 4);
        CHECK(dir < 32 && ((dirs >> dir) & 1), "block %llu: direction %u", (unsigned long long)n, dir);
        pos += total;
        n++;
    }
    CHECK(n == frames, "%llu blocks in the file, the writer counts %llu", (unsigned long long)n,
          (unsigned long long)frames);
    munmap(m, (size_t)st.st_size);
}

static void fz_trace_off(struct fz_trace *z)
{
    if (!z->t)
        return;
    close(z->fd);
    free(z->t);
    z->t = NULL;
}

#endif
