/*
 * clock.h - the one time source: CLOCK_MONOTONIC in nanoseconds (vDSO: no system call), read
 * exactly (maintenance, timeouts) or as of the last tick (the fast path).
 */
#ifndef SHMQ_CLOCK_H
#define SHMQ_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The same clock as kept by the last timer tick (a few ms coarse), for the fast path: hearts,
 * deadlines in ms, message ages. Cheaper than now_ns() (no TSC read). */
static inline uint64_t now_ns_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* How far behind now_ns() the coarse clock may be (one tick), read once per process. */
static inline uint64_t coarse_lag_ns(void)
{
    static _Atomic uint64_t lag; /* relaxed: any thread may fill it; all compute the same */
    uint64_t v = atomic_load_explicit(&lag, memory_order_relaxed);
    if (!v) {
        struct timespec ts;
        v = clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0
                ? (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec
                : 10000000ull;
        atomic_store_explicit(&lag, v, memory_order_relaxed);
    }
    return v;
}

#endif
