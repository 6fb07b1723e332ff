/*
 * quiesce.h - which threads of this process may still use something made unreachable: sections
 * without a locked instruction, grace periods taken by the one who frees (docs/DESIGN.md, "The
 * log's mapping cache").
 *
 * A thread reads a shared pointer (wal.c: a cached log file mapping) only inside a section,
 * qs_enter() .. qs_leave(): no atomic read-modify-write, no fence, a plain store of a per-thread
 * counter on each side (odd inside). Whoever frees first makes the thing unreachable (removes
 * the pointer), then takes a grace period (qs_grace_begin): a membarrier(2) (expedited, private:
 * every running thread of the process executes a full barrier) and a snapshot of the threads
 * inside a section. The thing may be freed once every thread of the snapshot has left that
 * section (qs_grace_over): a section that began after the snapshot cannot have read the pointer.
 * Nothing ever waits: a thread stopped inside a section only delays the free to a later check
 * (what a pin count held by a stopped thread did before).
 *
 * The argument is liburcu's "memb" flavour: QE1 (reader) the counter's store, a compiler
 * barrier, then the loads of the shared pointer; QE2 (freer) the pointer removed, membarrier,
 * then the counters read (acquire). membarrier puts a full barrier into each running thread
 * between what it did before and after that point, so either the reader's counter store is
 * seen (it is in the snapshot) or its later loads see the removal. Where membarrier is not
 * available (an old kernel, a seccomp filter), qs_enter() does a seq_cst fence instead, which
 * makes the same pair with the freer's fence: correct, one locked instruction more.
 *
 * Sections nest (a depth per thread). A thread's record is never freed: it goes back to a free
 * list at the thread's exit (leaving a section it ended inside: cancelled, pthread_exit) and its
 * counter goes on counting for the next thread, so a snapshot never points at freed memory. In a child made by fork() only the forking thread exists: the
 * other records are released there (pthread_atfork).
 */
#ifndef SHMQ_QUIESCE_H
#define SHMQ_QUIESCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct qs_thread {
    _Atomic uint64_t ctr;    /* odd: inside a section; only its thread stores it */
    uint32_t depth;          /* its thread's nesting */
    bool used;               /* owned by a live thread (under the list lock) */
    struct qs_thread *next;  /* every record, ever */
};

/* A grace period: the threads inside a section when it began, and their counters then. */
struct qs_grace {
    uint32_t n;
    struct {
        struct qs_thread *t;
        uint64_t ctr;
    } e[];
};

/* This thread's record, made (or taken from the free list) at its first section; NULL: no
 * memory. */
struct qs_thread *qs_self_slow(void);
extern _Thread_local struct qs_thread *qs_self __attribute__((tls_model("initial-exec")));
extern bool qs_fence_needed;

/* QE1: enter a section (nests). False (nothing entered) only when this thread's first section
 * finds no memory for its record. */
static inline __attribute__((always_inline)) bool qs_enter(void)
{
    struct qs_thread *t = qs_self;
    if (__builtin_expect(!t, 0) && !(t = qs_self_slow()))
        return false; /* first section of this thread: its record */
    if (t->depth++ == 0) {
        /* relaxed: only this thread stores it; ordered against the freer's reads by the
         * barrier below (membarrier, or the fence where there is none) */
        atomic_store_explicit(&t->ctr, atomic_load_explicit(&t->ctr, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        if (__builtin_expect(qs_fence_needed, 0))
            atomic_thread_fence(memory_order_seq_cst); /* QE1 without membarrier: pairs with QE2 */
        else
            atomic_signal_fence(memory_order_seq_cst); /* QE1: membarrier makes it a full one */
    }
    return true;
}

/* Leave a section: every use of what was read inside is done. */
static inline __attribute__((always_inline)) void qs_leave(void)
{
    struct qs_thread *t = qs_self;
    if (--t->depth == 0)
        /* release: the section's loads (and stores into what it read) happen before a freer's
         * acquire load of this value (qs_grace_over) */
        atomic_store_explicit(&t->ctr, atomic_load_explicit(&t->ctr, memory_order_relaxed) + 1,
                              memory_order_release);
}

/*
 * QE2: after making something unreachable: a grace period for it (*out; NULL when no thread is
 * inside a section: it may be freed now). 0, or -ENOMEM / -errno of membarrier (do not free
 * it: try again later).
 */
int qs_grace_begin(struct qs_grace **out);

/* Has every thread of g left the section it was in? (g NULL: yes.) */
bool qs_grace_over(const struct qs_grace *g);

#endif
