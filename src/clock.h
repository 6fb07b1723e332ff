/*
 * clock.h - the one time source: CLOCK_MONOTONIC in nanoseconds (vDSO: no system call), read
 * exactly (maintenance, timeouts) or as of the last tick (the fast path).
 */
#ifndef SHMQ_CLOCK_H
#define SHMQ_CLOCK_H

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

#endif
