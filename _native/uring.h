#ifndef HVU_URING_H
#define HVU_URING_H
/* A minimal io_uring: one submission and one completion ring over the raw system calls
 * (io_uring_setup, io_uring_enter; no liburing), the rings mapped into this process.
 *
 * What lives here: struct hvu_uring, setting a ring up and tearing it down (mmap / munmap /
 * close, the only resources; nothing else is allocated), taking a free SQE, publishing the
 * prepared SQEs and entering the kernel (optionally waiting for completions), and reading
 * completions from the CQ ring without a system call. What must not: anything about frames, taps
 * or the data path (tapio.c builds on this), printing.
 *
 * Memory order follows the kernel's io_uring ABI (include/uapi/linux/io_uring.h and the
 * io_uring_setup(2) man page): SQEs are written, then the SQ tail is stored with release
 * semantics; the CQ tail is loaded with acquire semantics before a CQE is read, and the CQ head
 * is stored with release semantics after. The submitter never has more requests in flight than
 * SQ entries (the caller's rule), so with the default CQ of twice that size the CQ cannot
 * overflow.
 */
#include <stddef.h>
#include <stdint.h>
#include <linux/io_uring.h>

struct hvu_uring {
    int fd;                         /* the ring fd, or -1 */
    unsigned sq_entries;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned sq_local;              /* our tail: SQEs prepared, published by hvu_uring_enter */
    void *ring_map;                 /* SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP) */
    size_t ring_len;
    void *sqe_map;
    size_t sqe_len;
    uint64_t enters;                /* io_uring_enter calls made */
};

/* A ring of at least `entries` SQEs (a power of two <= 4096 is used as given). 0, or -errno of
 * io_uring_setup / mmap (-ENOSYS: no io_uring; -EPERM: kernel.io_uring_disabled or a
 * seccomp/LSM refusal; -ENOMEM ...). u->fd is -1 on failure. */
int hvu_uring_open(struct hvu_uring *u, unsigned entries);
/* Unmaps and closes (the kernel cancels what is still in flight). Safe on a closed ring. */
void hvu_uring_close(struct hvu_uring *u);
/* The next free SQE, zeroed, or NULL when every entry is prepared but not yet consumed. */
struct io_uring_sqe *hvu_uring_sqe(struct hvu_uring *u);
/* SQEs prepared and not yet consumed by the kernel. */
unsigned hvu_uring_pending(const struct hvu_uring *u);
/* Publishes the prepared SQEs and enters the kernel once: submits them and, when wait_nr > 0,
 * waits until the CQ holds at least wait_nr completions (EINTR restarts the wait). The number of
 * SQEs submitted, or -errno (-EAGAIN/-EBUSY: the kernel is short of resources, try again later). */
int hvu_uring_enter(struct hvu_uring *u, unsigned wait_nr);
/* Copies the oldest completion to *out and frees its CQ entry: 1, or 0 when the CQ is empty. No
 * system call. */
int hvu_uring_cqe(struct hvu_uring *u, struct io_uring_cqe *out);

#endif
