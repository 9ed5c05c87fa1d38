#ifndef HVU_TRACE_H
#define HVU_TRACE_H
/* The capture hooks the data path calls (rx.c after a frame went to the tap, tx.c after a frame
 * was read from it), each behind one `if (dp->trace)` at its call site: no cost while tracing is
 * off. The writer and its format are trace.c's; the callable API is trace_api.h.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "trace_api.h"

/* One frame of `len` bytes at `data`. */
void hvu_trace_frame(struct hvu_trace *t, uint32_t dir, const uint8_t *data, uint32_t len);
/* The frame a readv of `total` bytes put into iov[0..n), its first `skip` bytes (the vnet
 * header) left out. */
void hvu_trace_frame_iov(struct hvu_trace *t, uint32_t dir, const struct iovec *iov, int n, size_t total,
                         size_t skip);

#endif
