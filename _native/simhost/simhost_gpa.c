/* The emulated host's GPA-direct data sends (VMBus packet type 9) in the C fast path.
 *
 * What lives here: one type-9 NVSP 107 data send (channel_type 0, send_buf_section_index
 * 0xFFFFFFFF): its range header parsed by OpenVMM's rules ([OV] microsoft/openvmm
 * vm/devices/vmbus/vmbus_ring/src/gparange.rs parse: range_count >= 1, byte_count > 0,
 * byte_offset <= 0xFFF, every page number present inside the header), every page checked against
 * the guest-memory mapping (GUEST_PFN_BASE <= pfn < GUEST_PFN_BASE + size / 4096, the emulator's
 * contract, hvuio/sim/vsp/guestmem.py) before one byte is read, the bytes gathered page by page into
 * the pump's private buffer, then the same RNDIS data handling as a send-buffer send
 * (hvu_sim_tx_data in simhost_tx.c, with the ranges' ends for the first-range rule).
 *
 * A page outside guest memory fails the send, not the channel: the send is completed with NVSP
 * status FAILED and counted (tx_gpa_rejected, reason HVU_SIM_R_GPA_PAGE with the page number),
 * which Python logs as a rejection ([OV] vm/devices/net/netvsp/src/lib.rs handle_rndis probes
 * every page, GpaDirectError; process_ring_buffer completes with Status::FAILURE). Everything
 * else the fast path does not serve goes to Python unread (HostNvsp decides): a malformed range
 * header (Python ends the channel, as [OV] parse_packet does), no guest memory mapped (proc mode:
 * /proc/<pid>/mem is read by Python), a send-buffer section as well (the mixed form), a send
 * larger than the gather buffer, control messages (channel_type 1), no completion requested.
 *
 * What must not: reading the outbound ring or its indices (simhost.c copies the header out and
 * consumes the packet on 1), RNDIS parsing (simhost_tx.c), allocation, logging, Python.
 */
#include <string.h>

#include "simhost.h"
#include "simhost_int.h"

#define HV_PAGE 4096u
#define MAX_BYTE_OFFSET 0xFFFu
#define MAX_RANGES 64u

/* One range's header: byte_count, byte_offset; its page numbers follow. 0 ok, else a reason. */
static int range_at(const uint8_t *hdr, uint32_t hlen, uint32_t pos, uint32_t *count, uint32_t *offset,
                    uint32_t *npages)
{
    uint64_t pages;
    if (hlen - pos < 8)
        return 1;
    *count = rd32(hdr + pos);
    *offset = rd32(hdr + pos + 4);
    if (*count == 0 || *offset > MAX_BYTE_OFFSET)
        return 1;
    pages = ((uint64_t)*offset + *count + HV_PAGE - 1) / HV_PAGE;
    if (pages > (hlen - pos - 8) / 8)
        return 1;
    *npages = (uint32_t)pages;
    return 0;
}

int hvu_sim_tx_gpa(struct hvu_sim_pump *p, uint8_t flags, uint64_t tid, const uint8_t *hdr, uint32_t hlen,
                   const uint8_t *nv, uint32_t plen)
{
    uint32_t ends[MAX_RANGES];
    uint32_t nranges, i, pos, total = 0, count, offset, npages;
    uint64_t first = p->gmem_first_pfn, pages = p->gmem_size / HV_PAGE;
    int rc;

    if (plen < 16)
        return reject(p, HVU_SIM_R_NVSP_SHORT, plen), 0;
    if (rd32(nv + 4) != 0)
        return reject(p, HVU_SIM_R_CONTROL, rd32(nv + 4)), 0;
    if (rd32(nv + 8) != NO_SECTION)
        return reject(p, HVU_SIM_R_GPA_PYTHON, rd32(nv + 8)), 0;
    if (!(flags & FLAG_RC))
        return reject(p, HVU_SIM_R_NO_COMPLETION_FLAG, flags), 0;
    if (!p->gmem || !p->gpa_buf)
        return reject(p, HVU_SIM_R_GPA_PYTHON, 0), 0;
    if (hlen < 8 || rd32(hdr + 4) == 0)
        return reject(p, HVU_SIM_R_GPA_HEADER, hlen), 0;
    nranges = rd32(hdr + 4);
    if (nranges > MAX_RANGES)
        return reject(p, HVU_SIM_R_GPA_PYTHON, nranges), 0;
    /* the whole header first: shape, sizes, then every page of every range */
    for (i = 0, pos = 8; i < nranges; i++) {
        if (range_at(hdr, hlen, pos, &count, &offset, &npages) != 0)
            return reject(p, HVU_SIM_R_GPA_HEADER, i), 0;
        if (count > p->gpa_buf_len - total)
            return reject(p, HVU_SIM_R_GPA_PYTHON, count), 0;
        total += count;
        ends[i] = total;
        pos += 8 + 8 * npages;
    }
    for (i = 0, pos = 8; i < nranges; i++) {
        uint32_t k;
        range_at(hdr, hlen, pos, &count, &offset, &npages);
        for (k = 0; k < npages; k++) {
            uint64_t pfn;
            memcpy(&pfn, hdr + pos + 8 + 8 * k, 8);
            if (pfn < first || pfn - first >= pages) {
                rc = hvu_sim_tx_complete(p, tid, NVSP_STAT_FAIL);
                if (rc == 1) {  /* counted once: a send waiting for room comes back */
                    p->c.tx_gpa_rejected++;
                    reject(p, HVU_SIM_R_GPA_PAGE, pfn);
                }
                return rc;
            }
        }
        pos += 8 + 8 * npages;
    }
    /* gather: page by page, each page at its own place in guest memory */
    total = 0;
    for (i = 0, pos = 8; i < nranges; i++) {
        uint32_t k, left, off;
        range_at(hdr, hlen, pos, &count, &offset, &npages);
        left = count;
        off = offset;
        for (k = 0; k < npages && left; k++) {
            uint64_t pfn;
            uint32_t n = HV_PAGE - off < left ? HV_PAGE - off : left;
            memcpy(&pfn, hdr + pos + 8 + 8 * k, 8);
            memcpy(p->gpa_buf + total, p->gmem + (pfn - first) * HV_PAGE + off, n);
            total += n;
            left -= n;
            off = 0;
        }
        pos += 8 + 8 * npages;
    }
    rc = hvu_sim_tx_data(p, tid, p->gpa_buf, total, ends, nranges);
    if (rc == 1)
        p->c.tx_gpa++;
    return rc;
}
