#ifndef HVUIO_H
#define HVUIO_H
/* Real header shared by the C sources; the callable API is in hvuio_api.h.
 * struct hvu_ring is complete here (C layers such as rx.c/tx.c embed or point at it) and
 * opaque to Python, which allocates hvu_ring_sizeof() bytes for it. */
#include <stddef.h>
#include <stdint.h>

#include "hvuio_api.h"
#include "counters.h"

struct hvu_ring_counters {
#define HVU_COUNTER_FIELD(name) uint64_t name;
    HVU_RING_COUNTERS(HVU_COUNTER_FIELD)
#undef HVU_COUNTER_FIELD
};

struct hvu_ring {
    struct hvu_ring_hdr *hdr;   /* shared header page (peer-writable) */
    uint8_t *data;              /* shared data area, D bytes, at hdr + header_size */
    uint32_t dsize;             /* D = ring size - header size; multiple of 8 */
    int dir;                    /* enum hvu_ring_dir */
    uint32_t accept;            /* bit t set: packet type t accepted by the reader */
    uint32_t windex;            /* TX: private copy of our write_index (VMBUS.md §4.2) */
    uint32_t rindex;            /* RX: private read index, published at close (VMBUS.md §4.2) */
    uint32_t cur_total;         /* RX: len + trailer of the peeked packet, 0 if none */
    struct hvu_pkt_desc cur;    /* RX: the validated descriptor of that packet */
    uint32_t batch_bytes;       /* RX: bytes consumed since the last close (VMBUS.md §3.11 b: R) */
    uint32_t attached;          /* 1 between attach and detach */
    struct hvu_fault fault;     /* first refused host value; sticky until re-attach */
    struct hvu_ring_counters ctr;
};

#endif
