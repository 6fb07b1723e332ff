/*
 * test_divide.c - divisor_div() (src/divide.h) against the divide instruction: quotient and
 * remainder for divisors from 1 to near 2^64, at the numerators where a reciprocal is most
 * likely off (multiples of d and their neighbours, 2^64 - 1, powers of two) and at random ones.
 */
#include "divide.h"

#include <criterion/criterion.h>

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t next(void) /* xorshift64 */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void check(const struct divisor *v, uint64_t n)
{
    uint64_t rem = UINT64_MAX;
    uint64_t q = divisor_div(v, n, &rem);
    cr_assert(q == n / v->d && rem == n % v->d,
              "%llu / %llu: got %llu rem %llu, want %llu rem %llu", (unsigned long long)n,
              (unsigned long long)v->d, (unsigned long long)q, (unsigned long long)rem,
              (unsigned long long)(n / v->d), (unsigned long long)(n % v->d));
    cr_assert_eq(divisor_div(v, n, NULL), q);
}

static void check_divisor(uint64_t d)
{
    struct divisor v = divisor_make(d);
    uint64_t top = UINT64_MAX / d; /* the largest quotient */
    uint64_t any = top == UINT64_MAX ? next() : next() % (top + 1);
    uint64_t qs[] = {0, 1, 2, 3, top / 2, top - 2, top - 1, top, any};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        uint64_t m = qs[i] * d; /* a multiple of d (top - 2 wraps when top < 2: fine too) */
        for (int64_t k = -3; k <= 3; k++)
            check(&v, m + (uint64_t)k); /* wraps at 0 and 2^64: still valid numerators */
    }
    for (int b = 0; b < 64; b++)
        check(&v, 1ull << b);
    check(&v, UINT64_MAX);
    for (int i = 0; i < 200; i++)
        check(&v, next());
}

Test(divide, small_divisors_every_numerator_to_4096)
{
    for (uint64_t d = 1; d <= 64; d++) {
        struct divisor v = divisor_make(d);
        for (uint64_t n = 0; n <= 4096; n++)
            check(&v, n);
        check_divisor(d);
    }
}

Test(divide, log_file_sizes)
{
    /* the log divides by a file size less its 4 KiB header: every 4 KiB multiple up to 1 GiB
     * that a config may choose is too many; these and their neighbours */
    for (uint64_t mib = 1; mib <= 4096; mib *= 2)
        for (int64_t k = -1; k <= 1; k++)
            check_divisor((mib << 20) - 4096 + (uint64_t)k);
}

Test(divide, random_divisors_of_every_size)
{
    for (int bits = 1; bits <= 64; bits++)
        for (int i = 0; i < 50; i++) {
            uint64_t d = next() >> (64 - bits);
            check_divisor(d ? d : 1);
        }
    check_divisor(UINT64_MAX);
    check_divisor(UINT64_MAX - 1);
    check_divisor(1ull << 63);
    check_divisor((1ull << 63) + 1);
}
