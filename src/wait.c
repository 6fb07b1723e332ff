/*
 * wait.c - spin-then-futex waiting on shm words (protocol in wait.h).
 */
#include "wait.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <urcu/futex.h>

#include "clock.h"

#define SPIN_TRIES 2000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

void wait_wake_counted(_Atomic uint32_t *futex_word, size_t n)
{
    /* relaxed: the futex syscall orders the rest; the value only has to differ */
    atomic_fetch_add_explicit(futex_word, 1, memory_order_relaxed);
    futex_async((int32_t *)futex_word, FUTEX_WAKE, n > INT_MAX ? INT_MAX : (int)n, NULL, NULL, 0);
}

static int sleep_once(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters,
                      struct proc_entry *self, uint32_t unit, uint64_t sleep_ns,
                      int (*try_fn)(void *), void *arg)
{
    uint32_t seen = atomic_load_explicit(futex_word, memory_order_acquire);
    /* S1 (seq_cst): marked in our entry before we are counted (W2), unmarked after we are
     * uncounted: maintenance that sees a dead sleeper's mark may uncount it (a kill between the
     * two leaves at most one too few counted, which the saturating uncount absorbs) */
    atomic_fetch_add(&self->sleeping, unit);
    /* W2 (seq_cst): counted before the last try; pairs with W1 */
    atomic_fetch_add(waiters, 1);
    int r = try_fn(arg);
    if (r == -EAGAIN) {
        struct timespec ts = {.tv_sec = (time_t)(sleep_ns / 1000000000ull),
                              .tv_nsec = (long)(sleep_ns % 1000000000ull)};
        if (futex_async((int32_t *)futex_word, FUTEX_WAIT, (int32_t)seen, &ts, NULL, 0) != 0 &&
            errno == EINTR)
            r = -EINTR;
    }
    atomic_fetch_sub(waiters, 1);
    atomic_fetch_sub(&self->sleeping, unit); /* S1 */
    return r;
}

/* *count -= n, never below zero. */
static void sub_floor(_Atomic uint32_t *count, uint32_t n)
{
    uint32_t v = atomic_load(count);
    while (n && !atomic_compare_exchange_weak(count, &v, v > n ? v - n : 0))
        ;
}

void wait_uncount_dead(struct seg_header *h, struct proc_entry *e)
{
    /* S1: one exchange, so of two maintainers only one uncounts */
    uint32_t v = atomic_exchange(&e->sleeping, 0);
    sub_floor(&h->ready_waiters, v & 0xffffu);
    sub_floor(&h->free_waiters, v >> 16);
}

int wait_until(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters, struct proc_entry *self,
               enum wait_kind kind, uint64_t deadline_ns, uint64_t max_sleep_ns,
               int (*try_fn)(void *), void *arg)
{
    for (int i = 0; i < SPIN_TRIES; i++) {
        int r = try_fn(arg);
        if (r != -EAGAIN)
            return r;
        cpu_relax();
    }
    for (;;) {
        uint64_t now = now_ns(), sleep_ns = max_sleep_ns;
        if (deadline_ns) {
            if (now >= deadline_ns)
                return -ETIMEDOUT;
            if (deadline_ns - now < sleep_ns)
                sleep_ns = deadline_ns - now;
        }
        int r = sleep_once(futex_word, waiters, self, (uint32_t)kind, sleep_ns, try_fn, arg);
        if (r == -EINTR || r != -EAGAIN)
            return r;
        r = try_fn(arg);
        if (r != -EAGAIN)
            return r;
    }
}
