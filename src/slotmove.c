/*
 * slotmove.c - moving a slot on (slotmove.h): one CAS, then onto the ring of its new state; and
 * the transitions that end a slot's use, aware of lingering former owners.
 *
 * A message taken back from a live process (ack deadline passed, or the process was fenced as
 * hung) is redelivered in place, and the slot's linger names that delivery (owner and gen of
 * its INFLIGHT word, slot.h): the process may still be reading the payload. When the message is
 * finally done with (ack, purge), the slot then goes to FENCED(NO_OWNER) instead of FREE, and
 * is freed only when the process lets go of that delivery (its stale ack or nack, its close) or
 * dies (maintenance). Nothing a live process may still read is ever reused under it.
 *
 * A FENCED slot has up to two readers: its linger, and its owner (a second live former holder
 * the message was copied away from, maintain.c; or NO_OWNER). It becomes FREE when both are
 * gone. Each reader lets go by clearing its own mark (linger -> 0, or owner -> NO_OWNER by a CAS
 * that bumps gen) and then looking at the other one; the finisher moves to FENCED(NO_OWNER) and
 * then looks at the linger (V1, seq_cst on every side: Dekker pairs, so of two parties at once
 * at least one sees the other gone and frees the slot). Maintenance clears the marks of dead
 * readers the same way. The linger's state machine is in docs/DESIGN.md (T1-T5).
 */
#include "slotmove.h"

#include <errno.h>

#include "wait.h"

void queue_enqueue_slot(shmq_t *q, uint32_t idx, uint64_t w)
{
    struct seg_header *h = q->seg.hdr;
    switch (sw_state(w)) {
    case SLOT_FREE:
        slot_enqueue_on(q, &q->seg.free_ring, idx, w, false);
        wait_wake(&h->free_futex, &h->free_waiters);
        break;
    case SLOT_READY:
        slot_enqueue_on(q, &q->seg.ready_ring, idx, w, false);
        wait_wake(&h->ready_futex, &h->ready_waiters);
        break;
    case SLOT_DEAD: slot_enqueue_on(q, &q->seg.dead_ring, idx, w, false); break;
    }
}

bool slot_move(shmq_t *q, uint32_t idx, uint64_t w, uint64_t next)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* acq_rel: acquire the writes of whoever made the slot w, release ours (payload reads or
     * writes, attempt, reason) to whoever takes it as next */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return false;
    queue_enqueue_slot(q, idx, next);
    return true;
}

int slot_dead_letter(shmq_t *q, uint32_t idx, uint64_t w, uint32_t reason)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    uint64_t dead = sw_next(w, SLOT_DEAD, NO_OWNER);
    sl->dead_reason = reason;
    /* logged BEFORE the move: a redrive acts only on a slot it saw DEAD, so its PUBLISH record
     * follows this one and wins (docs/DESIGN.md, "Records that decide in the right order") */
    if (queue_log_dead(q, sl->id, sl->attempt, reason) == -EIDRM)
        return -EIDRM;
    if (!slot_move(q, idx, w, dead)) /* its release publishes dead_reason with DEAD */
        return -ESTALE;
    return 0;
}

_Static_assert(SHMQ_PROCS_MAX < (1 << LINGER_OWNER_BITS), "a linger holds owner + 1");

/* slot_finish's rare path: the slot has a linger (lg, non-zero). Out of line, so the common
 * ack (no linger) pays nothing for it. */
static __attribute__((noinline)) int finish_lingered(shmq_t *q, uint32_t idx, uint64_t w,
                                                     uint32_t lg)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    if (sw_state(w) == SLOT_INFLIGHT && lg == linger_make(w)) {
        /* T3: a take-back of this very delivery is under way and will fail (we move w); we
         * read no more, so its tag goes, and the slot is freed as usual */
        atomic_compare_exchange_strong(&sl->linger, &lg, 0);
        uint64_t next = sw_next(w, SLOT_FREE, NO_OWNER);
        /* A1 (release), as in slot_finish */
        if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_release,
                                                     memory_order_relaxed))
            return -ESTALE;
        queue_enqueue_slot(q, idx, next);
        return 0;
    }
    CRASH_POINT(finish_before_fence);
    /* V1 (seq_cst; release for our payload reads): FENCED before we look at the linger again,
     * paired with a reader's clear-then-look (slot_let_go) */
    if (!atomic_compare_exchange_strong(&sl->state, &w, sw_next(w, SLOT_FENCED, NO_OWNER)))
        return -ESTALE;
    slot_free_if_unread(q, idx);
    return 0;
}

/* wake: false for slot_finish_unwoken (its caller wakes once for many, after the last). */
static inline __attribute__((always_inline)) int finish(shmq_t *q, uint32_t idx, uint64_t w,
                                                        bool wake)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* V1 (seq_cst): the linger as of now; a tag set by a take-back before its move CAS reached
     * us through C1 (docs/DESIGN.md, "Why the finisher sees the tag") */
    uint32_t lg = atomic_load(&sl->linger);
    if (lg)
        return finish_lingered(q, idx, w, lg);
    uint64_t next = sw_next(w, SLOT_FREE, NO_OWNER);
    /* A1 (release): our reads of the payload happen before the slot's reuse, which a
     * producer's claim acquires */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_release,
                                                 memory_order_relaxed))
        return -ESTALE;
    CRASH_POINT(ack_after_free);
    if (wake)
        queue_enqueue_slot(q, idx, next);
    else
        slot_enqueue_on(q, &q->seg.free_ring, idx, next, false);
    return 0;
}

int slot_finish(shmq_t *q, uint32_t idx, uint64_t w)
{
    return finish(q, idx, w, true);
}

int slot_finish_unwoken(shmq_t *q, uint32_t idx, uint64_t w)
{
    return finish(q, idx, w, false);
}

void slot_free_if_unread(shmq_t *q, uint32_t idx)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* V1 (seq_cst): after our own mark was cleared (or the slot fenced), see the other's */
    uint64_t w = atomic_load(&sl->state);
    if (sw_state(w) != SLOT_FENCED || sw_owner(w) != NO_OWNER || atomic_load(&sl->linger) != 0)
        return;
    slot_move(q, idx, w, sw_next(w, SLOT_FREE, NO_OWNER));
}

/* Clear the marks the predicate names: a linger tag equal to tag (or, all_of: any tag of
 * owner), and the FENCED word's owner if it is owner (and, unless all_of, its gen is fgen). */
static void let_go(shmq_t *q, uint32_t idx, uint32_t owner, uint32_t tag, uint64_t fgen,
                   bool all_of)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    if (!sl)
        return;
    uint32_t lg = all_of ? atomic_load_explicit(&sl->linger, memory_order_relaxed) : tag;
    /* V1 (seq_cst; release for our reads of the payload): no longer a lingering reader */
    if (lg && (!all_of || linger_owner(lg) == owner))
        atomic_compare_exchange_strong(&sl->linger, &lg, 0);
    uint64_t w = atomic_load(&sl->state);
    /* V1: no longer the FENCED slot's owner (a CAS: gen + 1, so nobody acts on the old word) */
    if (sw_state(w) == SLOT_FENCED && sw_owner(w) == owner && (all_of || sw_gen(w) == fgen))
        atomic_compare_exchange_strong(&sl->state, &w, sw_next(w, SLOT_FENCED, NO_OWNER));
    slot_free_if_unread(q, idx);
}

void slot_let_go(shmq_t *q, uint32_t idx, uint64_t w)
{
    /* T4: our tag of delivery w, and the FENCED word copy-out made from w (gen + 1) */
    let_go(q, idx, sw_owner(w), linger_make(w), sw_gen(w) + 1, false);
}

void slot_let_go_all(shmq_t *q, uint32_t idx, uint32_t owner)
{
    let_go(q, idx, owner, 0, 0, true); /* T5 */
}
