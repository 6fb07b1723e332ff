/*
 * slotmove.c - moving a slot on (slotmove.h): one CAS, then onto the ring of its new state; and
 * the transitions that end a slot's use, aware of lingering former owners.
 *
 * A message taken back from a live process (ack deadline passed, or the process was fenced as
 * hung) is redelivered in place, and the slot's linger field names that process: it may still
 * be reading the payload. When the message is finally done with (ack, purge), the slot then
 * goes to FENCED instead of FREE, and is freed only when the process lets go (its stale ack or
 * nack, its close) or dies (maintenance). Nothing a live process may still read is ever reused
 * under it.
 *
 * A FENCED slot has up to two readers: its linger, and its owner (a second live former holder
 * the message was copied away from, maintain.c; or the lingering process itself, or NO_OWNER).
 * It becomes FREE when both are gone. Each reader lets go by clearing its own mark (linger -> 0,
 * or owner -> NO_OWNER by a CAS that bumps gen) and then looking at the other one (L1, seq_cst
 * on both sides: a Dekker pair, so of two readers letting go at once at least one sees the
 * other gone and frees the slot). Maintenance clears the marks of dead readers the same way.
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

int slot_finish(shmq_t *q, uint32_t idx, uint64_t w)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* acquire: a linger stored before the take-back CAS (maintain.c) is seen with it */
    uint32_t lg = atomic_load_explicit(&sl->linger, memory_order_acquire);
    uint64_t next = lg ? sw_next(w, SLOT_FENCED, lg - 1) : sw_next(w, SLOT_FREE, NO_OWNER);
    /* A1 (release): our reads of the payload happen before the slot's reuse, which a
     * producer's claim acquires */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_release,
                                                 memory_order_relaxed))
        return -ESTALE;
    if (!lg) {
        CRASH_POINT(ack_after_free);
        queue_enqueue_slot(q, idx, next);
    }
    return 0;
}

void slot_free_if_unread(shmq_t *q, uint32_t idx)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* L1 (seq_cst): after our own mark was cleared, see the other reader's */
    uint64_t w = atomic_load(&sl->state);
    if (sw_state(w) != SLOT_FENCED || sw_owner(w) != NO_OWNER || atomic_load(&sl->linger) != 0)
        return;
    slot_move(q, idx, w, sw_next(w, SLOT_FREE, NO_OWNER));
}

void slot_let_go(shmq_t *q, uint32_t idx, uint32_t owner)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    if (!sl)
        return;
    uint32_t mine = owner + 1;
    /* L1 (seq_cst; release for our reads of the payload): no longer a lingering reader */
    atomic_compare_exchange_strong(&sl->linger, &mine, 0);
    uint64_t w = atomic_load(&sl->state);
    /* L1: no longer the FENCED slot's owner (a CAS: gen + 1, so nobody acts on the old word) */
    if (sw_state(w) == SLOT_FENCED && sw_owner(w) == owner)
        atomic_compare_exchange_strong(&sl->state, &w, sw_next(w, SLOT_FENCED, NO_OWNER));
    slot_free_if_unread(q, idx);
}
