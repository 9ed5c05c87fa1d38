/* Data-path counters: one X-macro list generates the struct (datapath.h) and the name table
 * (datapath.c), like counters.h does for the ring.
 *
 * Names follow the kernel's netvsc `ethtool -S` where the meaning is the same (tx_busy,
 * rx_comp_busy, stop_queue, wake_queue); tx_no_space is what the kernel calls tx_send_full, and
 * `hvuio stats` shows it under that name (docs/STATS.md); rx_packets/rx_bytes/tx_packets/tx_bytes
 * count Ethernet frames and their bytes (not ring packets: those are the ring's counters).
 * Every drop has a counter; nothing is dropped silently. The order is the index
 * hvu_dp_counter_name(i) reports; add a counter by adding one line.
 */
#ifndef HVU_DP_COUNTERS_H
#define HVU_DP_COUNTERS_H

#define HVU_DP_COUNTERS(X)                                                                      \
    X(rx_packets)        /* frames written to the tap */                                       \
    X(rx_bytes)          /* bytes of those frames (no vnet header) */                          \
    X(rx_xfer)           /* transfer-page packets taken from the inbound ring */               \
    X(rx_bad_xfer)       /* transfer-page packets dropped: header/range check failed (4.11) */ \
    X(rx_bad_nvs)        /* transfer-page packets dropped: payload not NVS 107 (4.13) */       \
    X(rx_bad_rndis)      /* ranges dropped: RNDIS packet message does not parse */             \
    X(rx_oversize)       /* frames dropped: longer than mtu + 14 + 4 */                        \
    X(rx_tap_drop)       /* frames dropped: tap write failed or was short (EAGAIN included) */ \
    X(rx_comp_sent)      /* receive completions (NVS 108) written to the outbound ring */      \
    X(rx_comp_busy)      /* completions queued because the outbound ring was full */           \
    X(rx_control)        /* times the pump stopped before a packet for Python */               \
    X(tx_packets)        /* RNDIS packets sent (frames, or LSO packets cut from GSO frames) */ \
    X(tx_bytes)          /* bytes of those frames */                                           \
    X(tx_busy)           /* sends deferred: outbound ring full */                              \
    X(tx_no_space)       /* sends deferred: every send section is in flight */                 \
    X(tx_oversize)       /* tap frames dropped: larger than a section/slot (or mtu + 18) */         \
    X(tx_runt)           /* tap frames dropped: shorter than an Ethernet header */             \
    X(tx_tap_err)        /* tap reads that failed with an error other than EAGAIN, or EOF */   \
    X(tx_completions)    /* host completions that freed a send section or GPA slot */              \
    X(tx_errors)         /* of those, completions with status != success or wrong NVS type */  \
    X(tx_bad_comp)       /* tagged completions for no outstanding section/slot: ignored */          \
    X(stop_queue)        /* TX went from running to blocked (no section or ring full) */       \
    X(wake_queue)        /* TX went from blocked back to running */                            \
    X(signals)           /* host signals sent (one per batch at most) */                       \
    X(irq_wakeups)       /* interrupts read from the irq fd */                                 \
    X(polls)             /* times the pump slept in poll() */                                 \
    X(tx_gso)            /* TCP GSO super-frames read from the tap */                          \
    X(tx_lso)            /* RNDIS packets sent with the LSOv2 pktinfo (>= 2 segments each) */  \
    X(tx_sw_seg)         /* single TCP segments cut from GSO frames (no LSO for them) */       \
    X(tx_csum_ppi)       /* RNDIS packets sent with the checksum pktinfo */                    \
    X(tx_sw_csum)        /* checksums completed in software (offload not enabled) */           \
    X(tx_vnet_bad)       /* tap frames dropped: vnet header fails a check (reason says which) */\
    X(rx_csum_valid)     /* frames written with vnet DATA_VALID (host checksum succeeded) */   \
    X(rx_csum_bad)       /* frames whose host checksum info says failed (passed on unmarked) */\
    X(rx_rsc_frames)     /* coalesced frames assembled from RSC fragments and written */       \
    X(rx_rsc_frags)      /* RSC fragments taken into a frame that was written */               \
    X(rx_rsc_drop)       /* RSC fragments dropped: broken sequence, too long, bad frame */     \
    X(tx_sends)          /* NVS 107 messages sent: tx_packets / tx_sends = packets per send */  \
    X(rx_rsc_sw_seg)     /* coalesced frames cut into MTU-sized segments here (no vnet header) */\
    X(tx_gpa)            /* RNDIS packets sent GPA-direct (type 9; also in tx_packets/tx_sends) */ \
    X(tx_gpa_bytes)      /* bytes of their frames (also in tx_bytes) */                        \
    X(tx_gpa_busy)       /* sends deferred: every GPA-direct slot is in flight */              \
    X(rx_ranges)         /* receive-buffer ranges of data packets taken (one RNDIS message each) */\
    X(rx_ranges_written) /* of those, whose frame reached the tap (a fragment: its whole frame) */ \
    X(rx_range_drops)    /* of those, dropped and counted (bad, oversize, RSC, tap refused); the */\
                         /* rest sit in an RSC sequence still open */                          \
    X(rx_ctl_data)       /* RNDIS data messages the control path handed over (mixed packets; */\
                         /* also in rx_ranges) */                                              \
    X(rx_vlan)           /* frames written with the 802.1Q tag of their pktinfo re-inserted */  \
    X(rx_vlan_bad)       /* ranges dropped: 802.1Q pktinfo too short for its 4-byte value */    \
    X(tx_vlan)           /* RNDIS packets sent with the 802.1Q pktinfo (tag taken out of the frame) */ \
    X(tap_uring)         /* 1 when the pump's tap I/O goes through an io_uring, 0 with readv/writev */ \
                         /* per frame (summed: the pumps that batch) */                        \
    X(uring_enters)      /* io_uring_enter calls (tapio.c): read bursts, submit and reap writes */ \
    X(uring_reads)       /* tap reads completed through the io_uring (frames, runts, errors) */  \
    X(uring_writes)      /* tap writes completed through the io_uring (written or dropped) */    \
    X(tx_tap_closed)     /* frames a read burst had taken from the tap, dropped at close */

#endif
