/* Ring counters: one X-macro list generates the struct (hvuio.h) and the name table (ring.c).
 *
 * Names follow the kernel's netvsc ethtool statistics where the meaning is the same
 * (tx_packets, tx_bytes, rx_packets, rx_bytes, tx_too_big); the rest are ring-level events.
 * Add a counter by adding one line; the order is the index hvu_counter_name(i) reports.
 */
#ifndef HVU_COUNTERS_H
#define HVU_COUNTERS_H

#define HVU_RING_COUNTERS(X)                                                                    \
    X(tx_packets)         /* packets published by the writer */                                \
    X(tx_bytes)           /* ring bytes published: descriptor..padding plus the 8-byte trailer */ \
    X(rx_packets)         /* packets consumed by the reader */                                 \
    X(rx_bytes)           /* ring bytes consumed, trailers included */                         \
    X(rx_batches)         /* read batches closed (read_index published) */                     \
    X(ring_full)          /* writes refused: free <= packet + trailer (VMBUS.md §3.8 step 2) */     \
    X(ring_empty)         /* reads that found no packet */                                     \
    X(tx_too_big)         /* writes refused: packet can never fit (len8 > 0xffff or > D - 8) */ \
    X(ring_signals)       /* signal decisions that said "signal the peer" */                   \
    X(ring_signals_masked) /* writer decisions suppressed because interrupt_mask was set */    \
    X(ring_corrupt)       /* host data that failed a VMBUS.md §4 check (first detection) */         \
    X(ring_refused)       /* calls refused because the ring is already marked corrupt */

#endif
