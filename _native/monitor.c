/* Guest -> host signal for a monitored channel (VMBUS.md §3.12): set bit id % 32 in the `pending`
 * word of trigger group id / 32 of the monitor page (map 2); the hypervisor scans it.
 * The page is shared by every VMBus channel of the guest, so the OR must be atomic (item 61). */
#include <errno.h>

#include "hvuio.h"

#define MON_TRIG_PENDING_OFFSET ((size_t)HVU_MONITOR_PENDING_OFFSET) /* trigger_group[0].pending;
                                                                    * groups are 8 bytes apart */
#define MON_MAX_ID ((uint32_t)HVU_MONITOR_MAX_ID) /* 4 groups x 32 bits: only ids 0..127 */

int hvu_monitor_signal(void *page, size_t page_len, uint32_t monitor_id)
{
    if (page == NULL || monitor_id >= MON_MAX_ID)
        return -EINVAL;
    size_t off = MON_TRIG_PENDING_OFFSET + 8u * (monitor_id / 32u);
    if (off + sizeof(uint32_t) > page_len)
        return -EINVAL;
    uint32_t *pending = (uint32_t *)((uint8_t *)page + off);
    /* seq_cst: the ring's write_index must be visible before the host sees the trigger bit. */
    __atomic_fetch_or(pending, 1u << (monitor_id % 32u), __ATOMIC_SEQ_CST);
    return 0;
}
