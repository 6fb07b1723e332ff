/*
 * wait.h - spin, then sleep on a futex word in shm; wake only when somebody sleeps.
 *
 * Sleeper: count itself in *waiters (and mark its registry entry sleeping, so maintenance can
 * uncount a sleeper that died), read the futex word, try once more, then FUTEX_WAIT on the
 * value read. Waker: after making its change visible, a seq_cst fence, then read *waiters; only
 * if it is non-zero bump the futex word and FUTEX_WAKE. W1 (waker's fence) and W2 (sleeper's
 * seq_cst increment of waiters) form a Dekker pair: either the waker sees the sleeper counted,
 * or the sleeper's last try sees the waker's change.
 */
#ifndef SHMQ_WAIT_H
#define SHMQ_WAIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

/* Called after a change a sleeper may wait for. No system call unless someone sleeps. */
void wait_wake(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters);

/*
 * Wait until try_fn(arg) returns something other than -EAGAIN, or deadline_ns passes
 * (0: forever). Spins first. Returns try_fn's result, -ETIMEDOUT, or -EINTR.
 * self may be NULL; else its sleeping flag is kept while counted in *waiters.
 * max_sleep_ns bounds each sleep (so the caller can refresh its heartbeat via try_fn).
 */
int wait_until(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters, struct proc_entry *self,
               uint64_t deadline_ns, uint64_t max_sleep_ns, int (*try_fn)(void *), void *arg);

#endif
