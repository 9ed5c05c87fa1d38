/* The emulated uio_hv_generic interrupt of one device, raised from C or Python.
 *
 * What lives here: the device's event count and the list of open /dev/uioN connections (the
 * emulator's seam: each open is a seqpacket socket that receives the 4-byte count, VMBUS.md §1.9),
 * and hvu_sim_irq_raise, which does what the kernel's channel callback does for a host
 * interrupt: mask the channel's inbound interrupts when the profile says the ISR does, count
 * the event, wake every reader. The host pump calls it without the GIL, so a guest interrupt
 * costs a send() and no trip through Python. What must not: ring parsing, policy about *when*
 * to interrupt (the caller decides, VMBUS.md §3.11), Python.
 *
 * Locking: the kernel thread replaces the connection list while a pump may be raising. A small
 * spin lock orders the two; the kernel swaps the list before it closes a socket, so a raise
 * never sends to a closed (or reused) descriptor number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>

#include "simhost.h"

#define OFF_MASK 8   /* interrupt_mask in the ring header (VMBUS.md §3.1) */

static void irq_lock(struct hvu_sim_irq *irq)
{
    while (__atomic_exchange_n(&irq->lock, 1u, __ATOMIC_ACQUIRE) != 0)
        sched_yield();   /* held for a few send()s at most */
}

static void irq_unlock(struct hvu_sim_irq *irq)
{
    __atomic_store_n(&irq->lock, 0u, __ATOMIC_RELEASE);
}

int hvu_sim_irq_set_conns(struct hvu_sim_irq *irq, const int *fds, uint32_t n)
{
    if (irq == NULL || n > HVU_SIM_IRQ_MAX_CONNS || (n > 0 && fds == NULL))
        return -EINVAL;
    irq_lock(irq);
    for (uint32_t i = 0; i < n; i++)
        irq->conn[i] = fds[i];
    irq->nconn = n;
    irq_unlock(irq);
    return 0;
}

uint32_t hvu_sim_irq_raise(struct hvu_sim_irq *irq, uint8_t *in_ring)
{
    uint32_t event = 0;
    if (irq == NULL)
        return 0;
    irq_lock(irq);
    if (irq->nconn > 0) {
        if (in_ring != NULL)   /* the ISR masks before it notifies (profile auto_mask) */
            __atomic_store_n((uint32_t *)(void *)(in_ring + OFF_MASK), 1u, __ATOMIC_SEQ_CST);
        event = ++irq->event & 0x7fffffffu;   /* what read() returns is an int32 count */
        irq->raised++;
        for (uint32_t i = 0; i < irq->nconn; i++) {
            ssize_t w;
            do {
                w = send(irq->conn[i], &event, sizeof(event), MSG_DONTWAIT | MSG_NOSIGNAL);
            } while (w < 0 && errno == EINTR);
            if (w < 0)   /* queue full: the reader will see a later count (uio coalesces) */
                irq->send_failed++;
        }
    }
    irq_unlock(irq);
    return event;
}

uint32_t hvu_sim_irq_event(struct hvu_sim_irq *irq)
{
    return irq == NULL ? 0 : __atomic_load_n(&irq->event, __ATOMIC_ACQUIRE);
}
