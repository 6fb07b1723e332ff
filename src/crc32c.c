/*
 * crc32c.c - CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the SSE4.2 crc32
 * instruction where the CPU has it, else a table. Both give the same values.
 *
 * The implementation is resolved once, when the library is loaded (a constructor: before any
 * thread of the program can call in), so a call pays no pthread_once and no CPU test: it is a
 * load of use_hw and the loop. A log record's crc is one call over its bytes (wal.c), which
 * also copies its payload into place (crc32c_copy_after: one pass over the payload, no memcpy).
 */
#include "crc32c.h"

#include <stdbool.h>
#include <string.h>

static uint32_t table[256];
static bool use_hw;

__attribute__((constructor)) static void crc32c_resolve(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#define HW __attribute__((target("sse4.2"), always_inline)) static inline

HW uint64_t ld64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The last len < 8 bytes at p. */
HW uint32_t crc_hw_tail(uint32_t c, const unsigned char *p, size_t len)
{
    if (len & 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        c = __builtin_ia32_crc32si(c, v);
        p += 4;
    }
    if (len & 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        c = __builtin_ia32_crc32hi(c, v);
        p += 2;
    }
    if (len & 1)
        c = __builtin_ia32_crc32qi(c, *p);
    return c;
}

/* 8 bytes an instruction, four to a loop turn (a record's header and prefix are 34 bytes, its
 * payload commonly a multiple of 8). */
HW uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t len)
{
    uint64_t c = crc;
    for (; len >= 32; p += 32, len -= 32) {
        c = __builtin_ia32_crc32di(c, ld64(p));
        c = __builtin_ia32_crc32di(c, ld64(p + 8));
        c = __builtin_ia32_crc32di(c, ld64(p + 16));
        c = __builtin_ia32_crc32di(c, ld64(p + 24));
    }
    for (; len >= 8; p += 8, len -= 8)
        c = __builtin_ia32_crc32di(c, ld64(p));
    return crc_hw_tail((uint32_t)c, p, len);
}

/* crc_hw over src while copying it to dst: each 8 bytes loaded once, stored and summed. */
HW uint32_t crc_hw_copy(uint32_t crc, unsigned char *dst, const unsigned char *src, size_t len)
{
    uint64_t c = crc;
    for (; len >= 32; src += 32, dst += 32, len -= 32) {
        uint64_t a = ld64(src), b = ld64(src + 8), d = ld64(src + 16), e = ld64(src + 24);
        memcpy(dst, &a, 8);
        memcpy(dst + 8, &b, 8);
        memcpy(dst + 16, &d, 8);
        memcpy(dst + 24, &e, 8);
        c = __builtin_ia32_crc32di(c, a);
        c = __builtin_ia32_crc32di(c, b);
        c = __builtin_ia32_crc32di(c, d);
        c = __builtin_ia32_crc32di(c, e);
    }
    for (; len >= 8; src += 8, dst += 8, len -= 8) {
        uint64_t a = ld64(src);
        memcpy(dst, &a, 8);
        c = __builtin_ia32_crc32di(c, a);
    }
    if (len)
        memcpy(dst, src, len);
    return crc_hw_tail((uint32_t)c, src, len);
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_ext(uint32_t crc, const void *p,
                                                              size_t len)
{
    return crc_hw(crc, p, len);
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_24(const unsigned char *p)
{
    uint64_t c = __builtin_ia32_crc32di(~0u, ld64(p));
    c = __builtin_ia32_crc32di(c, ld64(p + 8));
    return ~(uint32_t)__builtin_ia32_crc32di(c, ld64(p + 16));
}

__attribute__((target("sse4.2"))) static uint32_t copy_after_hw(const void *at, size_t n,
                                                                 const void *src, size_t len)
{
    return ~crc_hw_copy(crc_hw(~0u, at, n), (unsigned char *)at + n, src, len);
}
#endif

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
#if defined(__x86_64__)
    if (use_hw)
        return ~crc_hw_ext(~crc, p, len);
#endif
    return ~crc_table(~crc, p, len);
}

uint32_t crc32c_copy_after(const void *at, size_t n, const void *src, size_t len)
{
    const unsigned char *p = at;
    unsigned char *dst = (unsigned char *)at + n;
#if defined(__x86_64__)
    if (use_hw)
        return copy_after_hw(at, n, src, len);
#endif
    if (len)
        memcpy(dst, src, len);
    return ~crc_table(~0u, p, n + len);
}

uint32_t crc32c_24(const void *p)
{
#if defined(__x86_64__)
    if (use_hw)
        return crc_hw_24(p);
#endif
    return ~crc_table(~0u, p, 24);
}
