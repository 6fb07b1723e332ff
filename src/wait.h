/*
 * wait.h - spin, then sleep on a futex word in shm; wake only when somebody sleeps.
 *
 * Sleeper: count itself in its registry entry's `sleeping` word (so maintenance can uncount a
 * sleeper that died), then in *waiters, read the futex word, try once more, then FUTEX_WAIT on
 * the value read. Waker: after making its change, read *waiters with a seq_cst load (W1); only
 * if it is non-zero bump the futex word and FUTEX_WAKE. W1 and W2 (the sleeper's seq_cst
 * increment of waiters) form a Dekker pair: either the waker sees the sleeper counted, or the
 * sleeper's last try sees the waker's change. That needs the change made by seq_cst atomics and
 * the try to read it with seq_cst ones, and it is: every change a sleeper waits for is a ring
 * enqueue (FAA of tail, cell CAS R1, threshold reset: all seq_cst) or an ack's A1 (a seq_cst
 * CAS to FREE, which may join no ring: docs/DESIGN.md "The free slots"), and every try a ring
 * dequeue (R3's loads, FAA of head: seq_cst) or a producer's look at slot words (seq_cst
 * loads; after the spin, at every slot). All of them, W1 and W2 are then in the one seq_cst total
 * order S: if W1 precedes W2 in S, so do the enqueue's writes, and the try's loads after W2 read
 * them (or later values); else W1 reads W2's increment (or a later value). So W1 needs no fence
 * of its own (it was one until issue 17: 2 locked instructions per message); a caller whose
 * change were not seq_cst would need a seq_cst fence before calling these.
 *
 * `sleeping` counts the entry's sleepers of each kind: ready-ring sleepers (consumers) in its
 * low 16 bits, free-ring sleepers (producers in shmq_publish_timed; several threads may share
 * one producer entry) in its high 16 bits. Maintenance takes the whole word of a dead entry
 * (one exchange: once) and subtracts it from the two waiter counts, never below zero: the ready
 * part from the ready count of the entry's group (proc_entry.group), where it slept.
 */
#ifndef SHMQ_WAIT_H
#define SHMQ_WAIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

/* The waker's system call once W1 found sleepers counted: bump the futex word, FUTEX_WAKE of
 * up to n of them. Out of line: publish and ack call it only when somebody sleeps. */
void wait_wake_counted(_Atomic uint32_t *futex_word, size_t n);

/* As wait_wake, once after n changes (a batch's n enqueues): wakes up to n sleepers, one per
 * change. One FUTEX_WAKE of 1 for them all left every other sleeper counted before W1 asleep
 * until its max_sleep_ns with the changes it waited for there to take (the W1/W2 pair only
 * promises that a counted sleeper is woken, and only one was). */
static inline void wait_wake_n(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters, size_t n)
{
    /* W1 (seq_cst load): our change, a ring enqueue whose FAA of tail and cell CAS (R1) are
     * seq_cst, precedes this load in the seq_cst order; pairs with W2 (above). No fence: a
     * seq_cst load after seq_cst writes needs none (a plain load on x86-64) */
    if (atomic_load_explicit(waiters, memory_order_seq_cst) != 0)
        wait_wake_counted(futex_word, n);
}

/* Called after a change a sleeper may wait for. No system call unless someone sleeps; in line
 * up to W1's load. */
static inline void wait_wake(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters)
{
    wait_wake_n(futex_word, waiters, 1);
}

/* Wake every sleeper on futex_word, counted or not, after a change no ring enqueue carries (a
 * group deleted: its consumers' receives end with -ENOENT). No W1: the release bump pairs with
 * the sleeper's acquire read of the word before its last try, so a sleeper that read the bumped
 * value sees the change there, and one that read the old value is woken or finds it changed. */
void wait_wake_all(_Atomic uint32_t *futex_word);

/* How many tries wait_until() spins before it sleeps (each later try is a last one before a
 * sleep or the first after one). */
#define WAIT_SPIN_TRIES 2000

/* What a sleeper waits for: its unit in proc_entry.sleeping. */
enum wait_kind { WAIT_READY = 1, WAIT_FREE = 1 << 16 };

/*
 * Wait until try_fn(arg) returns something other than -EAGAIN, or deadline_ns passes
 * (0: forever). Spins first. Returns try_fn's result, -ETIMEDOUT, or -EINTR.
 * self: the sleeper's registry entry, counted in its sleeping word (kind) while counted in
 * *waiters (and in *summary unless it is NULL: a consumer of a group >= 1 in the fan-out ring's
 * count of sleepers, W2F, docs/DESIGN.md "The fan-out ring"). max_sleep_ns bounds each sleep (so the caller can refresh its heartbeat via try_fn,
 * and a wake-up lost to a repaired count costs at most one such sleep).
 */
int wait_until(_Atomic uint32_t *futex_word, _Atomic uint32_t *waiters, _Atomic uint32_t *summary,
               struct proc_entry *self, enum wait_kind kind, uint64_t deadline_ns,
               uint64_t max_sleep_ns, int (*try_fn)(void *), void *arg);

/* The holder of e is dead: uncount the sleepers it left in the waiter counts, its ready sleepers
 * from ready_waiters (its group's: proc_entry.group) and from summary (NULL: none; the fan-out
 * ring's count of sleepers of groups >= 1), its free sleepers from free_waiters. */
void wait_uncount_dead(_Atomic uint32_t *ready_waiters, _Atomic uint32_t *summary,
                       _Atomic uint32_t *free_waiters,
                       struct proc_entry *e);

#endif
