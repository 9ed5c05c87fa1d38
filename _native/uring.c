/* A minimal io_uring over the raw system calls: set-up, SQE hand-out, enter, CQE harvest.
 *
 * What lives here: the ring itself (uring.h says what it offers and the ABI rules it follows).
 * What must not: anything about taps or frames (tapio.c), allocation beyond the ring's own
 * mappings, printing.
 */
#define _GNU_SOURCE   /* syscall() */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uring.h"

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

int hvu_uring_open(struct hvu_uring *u, unsigned entries)
{
    memset(u, 0, sizeof(*u));
    u->fd = -1;
#if defined(__NR_io_uring_setup) && defined(__NR_io_uring_enter)
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    long fd = syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0)
        return -errno;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {   /* kernels before 5.4: not supported here */
        close((int)fd);
        return -ENOSYS;
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    u->ring_len = sq_len > cq_len ? sq_len : cq_len;
    u->sqe_len = p.sq_entries * sizeof(struct io_uring_sqe);
    u->ring_map = mmap(NULL, u->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, (int)fd,
                       IORING_OFF_SQ_RING);
    if (u->ring_map == MAP_FAILED) {
        int e = errno;
        close((int)fd);
        memset(u, 0, sizeof(*u));
        u->fd = -1;
        return -e;
    }
    u->sqe_map = mmap(NULL, u->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, (int)fd,
                      IORING_OFF_SQES);
    if (u->sqe_map == MAP_FAILED) {
        int e = errno;
        munmap(u->ring_map, u->ring_len);
        close((int)fd);
        memset(u, 0, sizeof(*u));
        u->fd = -1;
        return -e;
    }
    uint8_t *r = u->ring_map;
    u->fd = (int)fd;
    u->sq_entries = p.sq_entries;
    u->sq_head = (unsigned *)(r + p.sq_off.head);
    u->sq_tail = (unsigned *)(r + p.sq_off.tail);
    u->sq_mask = (unsigned *)(r + p.sq_off.ring_mask);
    u->sq_array = (unsigned *)(r + p.sq_off.array);
    u->cq_head = (unsigned *)(r + p.cq_off.head);
    u->cq_tail = (unsigned *)(r + p.cq_off.tail);
    u->cq_mask = (unsigned *)(r + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
    u->sqes = u->sqe_map;
    u->sq_local = *u->sq_tail;
    /* the SQ array maps slot i to SQE i once and for all */
    for (unsigned i = 0; i < p.sq_entries; i++)
        u->sq_array[i] = i;
    return 0;
#else
    (void)entries;
    return -ENOSYS;
#endif
}

void hvu_uring_close(struct hvu_uring *u)
{
    if (u->fd < 0)
        return;
    munmap(u->sqe_map, u->sqe_len);
    munmap(u->ring_map, u->ring_len);
    close(u->fd);
    u->fd = -1;
    u->sqes = NULL;
    u->cqes = NULL;
}

unsigned hvu_uring_pending(const struct hvu_uring *u)
{
    return u->fd < 0 ? 0 : u->sq_local - LOAD_ACQ(u->sq_head);
}

struct io_uring_sqe *hvu_uring_sqe(struct hvu_uring *u)
{
    if (u->fd < 0 || hvu_uring_pending(u) >= u->sq_entries)
        return NULL;
    struct io_uring_sqe *s = &u->sqes[u->sq_local & *u->sq_mask];
    memset(s, 0, sizeof(*s));
    u->sq_local++;
    return s;
}

int hvu_uring_enter(struct hvu_uring *u, unsigned wait_nr)
{
    if (u->fd < 0)
        return -EBADF;
    unsigned tail = *u->sq_tail, submit = u->sq_local - tail;
    STORE_REL(u->sq_tail, u->sq_local);
    long r;
    do {
        u->enters++;
        r = syscall(__NR_io_uring_enter, u->fd, submit, wait_nr, wait_nr ? IORING_ENTER_GETEVENTS : 0,
                    NULL, 0);
        if (r >= 0)
            return (int)r;
        submit = u->sq_local - LOAD_ACQ(u->sq_head);   /* an interrupted wait: some may be in */
    } while (errno == EINTR);
    return -errno;
}

int hvu_uring_cqe(struct hvu_uring *u, struct io_uring_cqe *out)
{
    if (u->fd < 0)
        return 0;
    unsigned head = *u->cq_head;
    if (head == LOAD_ACQ(u->cq_tail))
        return 0;
    *out = u->cqes[head & *u->cq_mask];
    STORE_REL(u->cq_head, head + 1);
    return 1;
}
