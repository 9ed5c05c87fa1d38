#ifndef HVU_SIMHOST_INT_H
#define HVU_SIMHOST_INT_H
/* Internal header of the emulated host's C data path, shared by simhost.c (pump, outbound reader,
 * inbound writer, run loop), simhost_rx.c (network -> guest), rss.c (its queue choice) and
 * simhost_tx.c (guest -> network).
 *
 * What lives here: the wire and ring-header constants (kept as one table, as in docs/VMBUS.md, though a
 * few serve one file only), the tiny ring-access helpers (atomic header-field loads/stores,
 * unaligned u32 copies, the data size, the reject record), and the prototypes of the few functions
 * one of the files calls in another. What must not: anything Python calls (that is simhost_api.h,
 * the cffi cdef), the offload rules (offload.h), code that is not tiny, or any include of the
 * guest's C core (see build.py).
 */
#include <stdint.h>
#include <string.h>

#include "simhost.h"

#define DESC 16u
#define TRAILER 8u
#define PKT_INBAND 0x6
#define PKT_XFER 0x7
#define PKT_GPA 0x9
#define PKT_COMP 0xb
#define FLAG_RC 1u
#define OFF_WRITE 0
#define OFF_READ 4
#define OFF_MASK 8
#define OFF_PENDING 12
#define OFF_FEATURES 64
#define NVSP_RNDIS_PKT 107u
#define NVSP_RNDIS_PKT_COMPLETE 108u
#define NVSP_STAT_SUCCESS 1u
#define NVSP_STAT_FAIL 2u
#define NO_SECTION 0xFFFFFFFFu
#define PAGESET_ID 0xCAFEu
#define RNDIS_PACKET_MSG 1u
#define RNDIS_HDR 8u
#define RNDIS_PKT_SIZE 44u         /* header + 9 u32 */
#define RNDIS_OFFSET_MIN 36u       /* data may not overlap the header */
#define RNDIS_PPI_SIZE 12u
#define ETH_HLEN 14u
#define RX_HEADER_LEN 256u         /* openvmm receive layout: the frame's offset in its section */
#define RX_FOOTER_LEN 36u          /* ... and the section's last bytes left unused */
#define MAX_BATCH 64u
#define MAX_MSGS 16u               /* RNDIS messages per send handled here; more -> Python */
#define NONE 0xFFFFFFFFu
#define MAX_NVSP_PAD 64u
#define GPA_HDR_MAX 2048u          /* GPA-direct range headers the fast path copies; larger -> Python */
#define SEC_NOT_OURS 0
#define SEC_FREE 1
#define SEC_BUSY 2
#define SEC_HEAD 3                 /* in flight, first of its batch: the batch's trans_id */

static inline uint32_t *hdr32(uint8_t *ring, uint32_t off) { return (uint32_t *)(void *)(ring + off); }
static inline uint32_t ld_acq(uint8_t *ring, uint32_t off)
{
    return __atomic_load_n(hdr32(ring, off), __ATOMIC_ACQUIRE);
}
static inline void st_rel(uint8_t *ring, uint32_t off, uint32_t v)
{
    __atomic_store_n(hdr32(ring, off), v, __ATOMIC_RELEASE);
}
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static inline uint32_t dsize(const struct hvu_sim_pump *p) { return p->ring_size - p->header_size; }

static inline int reject(struct hvu_sim_pump *p, uint32_t reason, uint64_t value)
{
    p->reason = reason;
    p->value = value;
    return (int)reason;
}

/* simhost.c: the inbound writer (host -> guest), used by both directions */

/* Free bytes of the inbound ring, or -1 on a corrupt guest read_index (fault set). */
int64_t hvu_sim_in_free(struct hvu_sim_pump *p);
/* One packet from two parts (+ zero padding + trailer). 1 written, 0 full, -1 fault; may set p->signal. */
int hvu_sim_in_write(struct hvu_sim_pump *p, const void *a, uint32_t alen, const void *b, uint32_t blen);

/* Serve channel i from now on (its ring fields loaded; the current one's saved, its signal raised). */
void hvu_sim_chan_select(struct hvu_sim_pump *p, uint32_t i);

/* simhost_rx.c: network -> guest */

/* A guest completion carrying our tag: free its sections once. */
void hvu_sim_rx_completion(struct hvu_sim_pump *p, uint64_t tid, const uint8_t *payload, uint32_t plen);
/* Read frames from the tap into free sections, one transfer-page packet per batch.
 * Returns frames read (0: none pending), -1 fault. */
int hvu_sim_rx_batch(struct hvu_sim_pump *p);

/* simhost_tx.c: guest -> network */

/* An in-band NVSP 107 data send: 1 handled, 0 hand to Python (reason set), 2 no room yet, -1 fault. */
int hvu_sim_tx_send(struct hvu_sim_pump *p, uint8_t flags, uint64_t tid, const uint8_t *nv, uint32_t plen);
/* The RNDIS data of one send (a private copy or the send buffer) to the tap, then its completion;
 * ends/nends: where its ranges end (GPA-direct) or NULL. Same returns as hvu_sim_tx_send. */
int hvu_sim_tx_data(struct hvu_sim_pump *p, uint64_t tid, const uint8_t *data, uint32_t size,
                    const uint32_t *ends, uint32_t nends);
/* Just a completion with `status`: 1 written, 2 no room yet (pending_send_sz set), -1 fault. */
int hvu_sim_tx_complete(struct hvu_sim_pump *p, uint64_t tid, uint32_t status);

/* rss.c: vRSS */

/* The queue the guest's RSS table names for a frame (0 without RSS or when it is not hashed). */
uint32_t hvu_sim_rss_queue(const struct hvu_sim_pump *p, const uint8_t *f, uint32_t n);

/* simhost_gpa.c: GPA-direct (type 9) data sends */

/* hdr/hlen: the type-specific header after the descriptor (reserved, range_count, ranges), a
 * private copy; nv/plen the NVSP message. Same returns as hvu_sim_tx_send. */
int hvu_sim_tx_gpa(struct hvu_sim_pump *p, uint8_t flags, uint64_t tid, const uint8_t *hdr, uint32_t hlen,
                   const uint8_t *nv, uint32_t plen);

#endif
