/*
 * divide.h - n / d and n % d for a divisor fixed at run time, without a divide instruction.
 *
 * A 64-bit div costs tens of cycles; the log divides every position by its files' usable size
 * (wal.c: which file, which offset), several times per message. The divisor is fixed when the
 * log is opened, so its reciprocal inv = floor((2^64 - 1) / d) is computed once; then
 * q' = floor(n * inv / 2^64) (one 64x64->128 multiplication) is the quotient or one short:
 *   inv <= 2^64 / d, so q' <= n / d, hence q' <= q;
 *   inv >= (2^64 - 1) / d - (d - 1) / d = (2^64 - d) / d, so n * inv / 2^64 >= n / d - n / 2^64
 *   > n / d - 1 (n < 2^64), hence q' >= q - 1.
 * The remainder n - q' d is then below 2d and one subtraction makes it exact. Any d >= 1.
 */
#ifndef SHMQ_DIVIDE_H
#define SHMQ_DIVIDE_H

#include <stdint.h>

struct divisor {
    uint64_t d, inv; /* inv = floor((2^64 - 1) / d) */
};

static inline struct divisor divisor_make(uint64_t d)
{
    return (struct divisor){.d = d, .inv = d ? UINT64_MAX / d : 0};
}

/* n / v->d, and n % v->d into *rem if rem is not NULL. v->d must not be 0. */
static inline uint64_t divisor_div(const struct divisor *v, uint64_t n, uint64_t *rem)
{
    uint64_t q = (uint64_t)(((unsigned __int128)n * v->inv) >> 64);
    uint64_t r = n - q * v->d;
    if (r >= v->d) { /* one short (file comment) */
        q++;
        r -= v->d;
    }
    if (rem)
        *rem = r;
    return q;
}

#endif
