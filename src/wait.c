/*
 * wait.c - spin-then-futex waiting on shm words (protocol in wait.h).
 */
#include "wait.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <urcu/futex.h>

#include "clock.h"


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

void wait_wake_all(_Atomic uint32_t *futex_word)
{
    /* release: the change before the bump; pairs with sleep_once's acquire read of the word */
    atomic_fetch_add_explicit(futex_word, 1, memory_order_release);
    futex_async((int32_t *)futex_word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* What a sleeper cancelled in its futex wait undoes (sleep_once). */
struct sleeper {
    _Atomic uint32_t *futex_word, *waiters, *summary;
    struct proc_entry *self;
    uint32_t unit;
};

/* The cleanup of a sleeper cancelled in its futex wait: uncounted as sleep_once's return would
 * (W2, S1), and a wake it may have taken passed on: a FUTEX_WAKE of 1 (wait_wake) for a change
 * that now waits for another sleeper, who would otherwise sleep up to its max_sleep_ns. */
static void sleep_cancelled(void *arg)
{
    struct sleeper *s = arg;
    atomic_fetch_sub(s->waiters, 1);
    if (s->summary)
        atomic_fetch_sub(s->summary, 1); /* W2F undone */
    atomic_fetch_sub(&s->self->sleeping, s->unit); /* S1 */
    wait_wake(s->futex_word, s->waiters);
}

/*
 * The futex wait, the library's one cancellation point (shmq.h, "Threads and cancellation";
 * nocancel.h): a raw syscall is none by itself, so cancellation is made asynchronous across it
 * alone, where this thread holds nothing but its counts, which the cleanup undoes. A request
 * that came during the spin or the tries acts as the type is set (glibc checks it then). With
 * cancellation disabled by the caller, the type changes nothing. Both calls are no system call
 * (glibc: an atomic update of the thread's flags), on the sleeping path only.
 */
static long futex_sleep(struct sleeper *s, uint32_t seen, const struct timespec *ts)
{
    long r;
    int type;
    pthread_cleanup_push(sleep_cancelled, s);
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &type);
    r = futex_async((int32_t *)s->futex_word, FUTEX_WAIT, (int32_t)seen, ts, NULL, 0);
    int e = errno;
    pthread_setcanceltype(type, NULL);
    errno = e;
    pthread_cleanup_pop(0);
    return r;
}

static int sleep_once(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters,
                      _Atomic uint32_t *summary, struct proc_entry *self, uint32_t unit,
                      uint64_t sleep_ns, int (*try_fn)(void *), void *arg)
{
    uint32_t seen = atomic_load_explicit(futex_word, memory_order_acquire);
    /* S1 (seq_cst): marked in our entry before we are counted (W2), unmarked after we are
     * uncounted: maintenance that sees a dead sleeper's mark may uncount it (a kill between the
     * two leaves at most one too few counted, which the saturating uncount absorbs) */
    atomic_fetch_add(&self->sleeping, unit);
    /* W2 (seq_cst): counted before the last try; pairs with W1 */
    atomic_fetch_add(waiters, 1);
    if (summary) /* W2F (seq_cst): counted in the summary too before the last try; pairs with W1F */
        atomic_fetch_add(summary, 1);
    int r = try_fn(arg);
    if (r == -EAGAIN) {
        struct timespec ts = {.tv_sec = (time_t)(sleep_ns / 1000000000ull),
                              .tv_nsec = (long)(sleep_ns % 1000000000ull)};
        struct sleeper me = {futex_word, waiters, summary, self, unit};
        if (futex_sleep(&me, seen, &ts) != 0 && errno == EINTR)
            r = -EINTR;
    }
    atomic_fetch_sub(waiters, 1);
    if (summary)
        atomic_fetch_sub(summary, 1);
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

void wait_uncount_dead(_Atomic uint32_t *ready_waiters, _Atomic uint32_t *summary,
                       _Atomic uint32_t *free_waiters, struct proc_entry *e)
{
    /* S1: one exchange, so of two maintainers only one uncounts */
    uint32_t v = atomic_exchange(&e->sleeping, 0);
    sub_floor(ready_waiters, v & 0xffffu);
    if (summary)
        sub_floor(summary, v & 0xffffu);
    sub_floor(free_waiters, v >> 16);
}

int wait_until(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters, _Atomic uint32_t *summary,
               struct proc_entry *self, enum wait_kind kind, uint64_t deadline_ns,
               uint64_t max_sleep_ns, int (*try_fn)(void *), void *arg)
{
    for (int i = 0; i < WAIT_SPIN_TRIES; i++) {
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
        int r = sleep_once(futex_word, waiters, summary, self, (uint32_t)kind, sleep_ns, try_fn,
                           arg);
        if (r == -EINTR || r != -EAGAIN)
            return r;
        r = try_fn(arg);
        if (r != -EAGAIN)
            return r;
    }
}
