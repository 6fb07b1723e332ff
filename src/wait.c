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

void wait_wake(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters)
{
    /* W1 (seq_cst fence): our change (a ring CAS) is ordered before reading waiters; pairs
     * with W2 */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(waiters, memory_order_relaxed) == 0)
        return;
    /* relaxed: the futex syscall orders the rest; the value only has to differ */
    atomic_fetch_add_explicit(futex_word, 1, memory_order_relaxed);
    futex_async((int32_t *)futex_word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static int sleep_once(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters,
                      struct proc_entry *self, uint64_t sleep_ns, int (*try_fn)(void *), void *arg)
{
    uint32_t seen = atomic_load_explicit(futex_word, memory_order_acquire);
    if (self)
        atomic_store_explicit(&self->sleeping, 1, memory_order_relaxed);
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
    if (self)
        atomic_store_explicit(&self->sleeping, 0, memory_order_relaxed);
    return r;
}

int wait_until(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters, struct proc_entry *self,
               uint64_t deadline_ns, uint64_t max_sleep_ns, int (*try_fn)(void *), void *arg)
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
        int r = sleep_once(futex_word, waiters, self, sleep_ns, try_fn, arg);
        if (r == -EINTR || r != -EAGAIN)
            return r;
        r = try_fn(arg);
        if (r != -EAGAIN)
            return r;
    }
}
