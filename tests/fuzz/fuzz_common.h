/* Shared by the libFuzzer harnesses in tests/fuzz/ (each harness is one .c file that includes this).
 *
 * What lives here: the input reader (a script of operations: each operand is taken from the input,
 * zeros once it is used up, so every input is a valid script), a deterministic filler for bulk
 * bytes (a few bytes of the input seed a xorshift generator: large frames stay small inputs), and
 * CHECK, which aborts with a message when an invariant fails (libFuzzer then saves the input).
 * No allocation, no I/O besides the message on failure.
 */
#ifndef HVU_FUZZ_COMMON_H
#define HVU_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                            \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            fprintf(stderr, "INVARIANT VIOLATED %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                           \
            fputc('\n', stderr);                                                                    \
            abort();                                                                                \
        }                                                                                           \
    } while (0)

/* 1 if the comma-separated list in $HVU_FUZZ_ALLOW names this known finding */
static inline int fz_allowed(const char *name)
{
    const char *e = getenv("HVU_FUZZ_ALLOW");
    size_t n = strlen(name);
    while (e != NULL && *e) {
        const char *c = strchr(e, ',');
        size_t k = c ? (size_t)(c - e) : strlen(e);
        if (k == n && strncmp(e, name, n) == 0)
            return 1;
        e = c ? c + 1 : NULL;
    }
    return 0;
}

/* A violation already known and kept as a regression input (tests/fuzz/regressions/): it aborts
 * like CHECK unless $HVU_FUZZ_ALLOW names it, so that runs can look past it for new findings (each
 * allowed one is reported once per process). */
#define KNOWN(name, cond, ...)                                                                      \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            static int reported_;                                                                   \
            if (!fz_allowed(name)) {                                                                \
                fprintf(stderr, "KNOWN FINDING %s: ", name);                                        \
                CHECK(cond, __VA_ARGS__);                                                           \
            }                                                                                       \
            if (!reported_++)                                                                       \
                fprintf(stderr, "known finding %s seen (allowed by HVU_FUZZ_ALLOW)\n", name);      \
        }                                                                                           \
    } while (0)

struct fz {
    const uint8_t *p;
    size_t n, i;
};

static inline void fz_init(struct fz *f, const uint8_t *p, size_t n)
{
    f->p = p;
    f->n = n;
    f->i = 0;
}

static inline size_t fz_left(const struct fz *f) { return f->n - f->i; }

static inline uint8_t fz_u8(struct fz *f) { return f->i < f->n ? f->p[f->i++] : 0; }

static inline uint16_t fz_u16(struct fz *f)
{
    uint16_t v = fz_u8(f);
    return (uint16_t)(v | (uint16_t)fz_u8(f) << 8);
}

static inline uint32_t fz_u32(struct fz *f)
{
    uint32_t v = fz_u16(f);
    return v | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t fz_u64(struct fz *f)
{
    uint64_t v = fz_u32(f);
    return v | (uint64_t)fz_u32(f) << 32;
}

/* 0..n-1 (n >= 1) */
static inline uint32_t fz_pick(struct fz *f, uint32_t n) { return n <= 1 ? 0 : fz_u8(f) % n; }

/* 0..n-1 for larger n (two bytes) */
static inline uint32_t fz_range(struct fz *f, uint32_t n) { return n <= 1 ? 0 : fz_u16(f) % n; }

/* "usually": true unless the byte is >= in_256 (a zero byte, the input's default, says yes) */
static inline int fz_chance(struct fz *f, uint32_t in_256) { return fz_u8(f) < in_256; }

/* "rarely": true only for the top in_256 byte values (a zero byte says no) */
static inline int fz_rare(struct fz *f, uint32_t in_256) { return fz_u8(f) >= 256 - in_256; }

static inline void fz_copy(struct fz *f, void *dst, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    size_t k = fz_left(f) < n ? fz_left(f) : n;
    if (k)
        memcpy(d, f->p + f->i, k);
    f->i += k;
    if (n > k)
        memset(d + k, 0, n - k);
}

/* n bytes: up to 8 taken from the input, the rest from a generator seeded by them and n. */
static inline void fz_blob(struct fz *f, void *dst, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    size_t k = n < 8 ? n : 8;
    fz_copy(f, d, k);
    uint64_t s = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < k; i++)
        s = (s ^ d[i]) * 0x100000001B3ull;
    for (size_t i = k; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        d[i] = (uint8_t)(s >> 24);
    }
}

static inline uint32_t rd32le(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void wr32le(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static inline uint16_t rd16be_(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static inline void wr16be_(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* ring arithmetic of VMBUS.md §3.2, written here again (not taken from the code under test) */
static inline uint32_t m_free(uint32_t w, uint32_t r, uint32_t d) { return w >= r ? d - (w - r) : r - w; }
static inline uint32_t m_avail(uint32_t w, uint32_t r, uint32_t d) { return d - m_free(w, r, d); }
static inline int m_index_ok(uint32_t v, uint32_t d) { return v < d && (v & 7u) == 0; }

/* circular copies over a data area of d bytes (off < d, n <= d) */
static inline void ring_get(const uint8_t *data, uint32_t d, uint32_t off, void *dst, uint32_t n)
{
    uint32_t first = d - off < n ? d - off : n;
    memcpy(dst, data + off, first);
    if (n > first)
        memcpy((uint8_t *)dst + first, data, n - first);
}

static inline uint32_t ring_put_bytes(uint8_t *data, uint32_t d, uint32_t off, const void *src, uint32_t n)
{
    uint32_t first = d - off < n ? d - off : n;
    memcpy(data + off, src, first);
    if (n > first)
        memcpy(data, (const uint8_t *)src + first, n - first);
    uint64_t next = (uint64_t)off + n;
    return (uint32_t)(next >= d ? next - d : next);
}

#endif
