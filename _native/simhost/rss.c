/* vRSS in the emulated host's C data path: the Toeplitz hash of a frame from the network and the
 * queue (channel) the guest's indirection table names for it. The same rules as
 * hvuio/sim/host/rss.py, which documents them and their sources (OpenVMM netvsp
 * oid_set_rss_parameters / net_mana get_queues_inner, the NDIS hash types); tests hold the two
 * equal frame by frame.
 *
 * What lives here: hvu_sim_rss_hash (what is hashed under which hash types, and the hash) and
 * hvu_sim_rss_queue (table entry, or queue 0). What must not: reading the tap or handing frames
 * over (simhost_rx.c), parsing the guest's parameters (Python's HostRndis does, and gives the pump
 * the result), allocation, I/O.
 */
#include <string.h>

#include "simhost.h"
#include "simhost_int.h"

#define HASH_IPV4 0x100u
#define HASH_TCP_IPV4 0x200u
#define HASH_IPV6 0x400u
#define HASH_TCP_IPV6 0x1000u
#define HASH_UDP_IPV4 0x4000u
#define HASH_UDP_IPV6 0x8000u
#define RSS_MAX_INPUT 36u

/* Toeplitz: for input bit i (most significant bit of byte 0 first) set, XOR key bits i..i+31. */
static uint32_t toeplitz(const uint8_t *key, const uint8_t *data, uint32_t len)
{
    uint32_t h = 0, win = (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];
    for (uint32_t i = 0; i < len; i++) {
        uint8_t next = key[i + 4];  /* len <= 36: i + 4 < 40 */
        for (uint32_t bit = 0; bit < 8; bit++) {
            if (data[i] & (0x80u >> bit))
                h ^= win;
            win = win << 1 | ((next >> (7 - bit)) & 1u);
        }
    }
    return h;
}

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

uint32_t hvu_sim_rss_hash(const uint8_t *key, uint32_t hash_info, const uint8_t *f, uint32_t n, uint32_t *hash)
{
    uint8_t in[RSS_MAX_INPUT];
    uint32_t type, at = ETH_HLEN, len, l4type = 0;
    if (n < ETH_HLEN)
        return 0;
    type = be16(f + 12);
    if (type == 0x8100u && n >= ETH_HLEN + 4) {  /* one 802.1Q tag */
        type = be16(f + 16);
        at += 4;
    }
    if (type == 0x0800u && n >= at + 20 && f[at] >> 4 == 4) {
        uint32_t ihl = (f[at] & 0xFu) * 4u, l4 = at + ihl, proto = f[at + 9];
        int fragment = (be16(f + at + 6) & 0x3FFFu) != 0;
        memcpy(in, f + at + 12, 8);
        len = 8;
        if (proto == 6)
            l4type = HASH_TCP_IPV4;
        else if (proto == 17)
            l4type = HASH_UDP_IPV4;
        if (ihl >= 20 && (l4type & hash_info) && !fragment && n >= l4 + 4) {
            memcpy(in + 8, f + l4, 4);
            *hash = toeplitz(key, in, 12);
            return l4type;
        }
        if (!(hash_info & HASH_IPV4))
            return 0;
        *hash = toeplitz(key, in, len);
        return HASH_IPV4;
    }
    if (type == 0x86DDu && n >= at + 40 && f[at] >> 4 == 6) {
        uint32_t l4 = at + 40, next = f[at + 6];
        memcpy(in, f + at + 8, 32);
        if (next == 6)
            l4type = HASH_TCP_IPV6;
        else if (next == 17)
            l4type = HASH_UDP_IPV6;
        if ((l4type & hash_info) && n >= l4 + 4) {
            memcpy(in + 32, f + l4, 4);
            *hash = toeplitz(key, in, 36);
            return l4type;
        }
        if (!(hash_info & HASH_IPV6))
            return 0;
        *hash = toeplitz(key, in, 32);
        return HASH_IPV6;
    }
    return 0;
}

uint32_t hvu_sim_rss_queue(const struct hvu_sim_pump *p, const uint8_t *f, uint32_t n)
{
    uint32_t hash = 0, q;
    if (!p->rss_on || p->rss_table_len == 0 || p->rss_table_len > 256)
        return 0;
    if (hvu_sim_rss_hash(p->rss_key, p->rss_hash_info, f, n, &hash) == 0)
        return 0;  /* not hashed: the default queue */
    q = p->rss_table[hash % p->rss_table_len];
    return q < p->rss_queues ? q : 0;  /* an entry naming no granted queue: queue 0 */
}
