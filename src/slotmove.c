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
 *
 * Consumer groups: every function here works on a group's cell of a slot (group 0's cell is the
 * slot itself). A group >= 1 that is done with a message moves its cell to FREE (its lingering
 * readers first let go, the same T1-T5 on the cell); group 0 moves the slot to HELD instead of
 * FREE while other groups hold the message. A group >= 1 whose cell went FREE counts itself
 * out of the slot's release count (`holders`: R-pre before its CAS, R-dec after); whoever then
 * sees the slot word HELD (or FENCED with no reader) and the count 0 frees the slot (V2: group
 * 0's CAS to HELD and the last R-dec are seq_cst and each is followed by a seq_cst load of the
 * other's mark, so of the two at least one sees both done). O(1) per finisher; maintenance's
 * release repair (slot_release_repair) recounts from the cells what a killed finisher left.
 * docs/DESIGN.md, "Consumer groups".
 */
#include "slotmove.h"

#include <errno.h>

#include "wait.h"

/* Group g's cell of slot idx (both in range: the callers checked them, or took them from a
 * consumer handle). */
static inline struct slot *cell_of(shmq_t *q, uint32_t g, uint32_t idx)
{
    const struct segment *s = &q->seg;
    if (g == 0) {
        struct slot *sl = segment_slot(s, idx);
        if (!sl)
            __builtin_unreachable(); /* idx was checked */
        return sl;
    }
    return (struct slot *)((char *)s->base + s->groups.cells_off) +
           (uint64_t)(g - 1) * s->layout.capacity + idx;
}

/* R-pre: slot idx's release count as it names the message a cell of g >= 1 still holds, read
 * before that cell's CAS to FREE. Relaxed: F2's store reached us with the cell word we hold (F4's
 * or a maintainer's release, a C1's acquire); a stale value carries another tag, which R-dec
 * leaves alone (the release repair then frees the slot). */
static inline uint64_t holders_before(shmq_t *q, uint32_t idx)
{
    return atomic_load_explicit(&segment_slot(&q->seg, idx)->holders, memory_order_relaxed);
}

/* R-dec, after our CAS moved a cell of slot idx to FREE: count down h's message (R-pre's h),
 * never another message's (tag) nor below 0 (repaired meanwhile); the one that reaches 0 makes
 * the release check. */
static void count_done(shmq_t *q, uint32_t idx, uint64_t h)
{
    CRASH_POINT(group_done_before_count);
    _Atomic uint64_t *hp = &segment_slot(&q->seg, idx)->holders;
    uint64_t tag = holders_tag(h);
    while (holders_tag(h) == tag && holders_n(h) > 0) {
        /* seq_cst (V2): our cell FREE before the count goes down, the release check's load of
         * the slot word after; pairs with group 0's CAS to HELD and its load of the count */
        if (atomic_compare_exchange_weak(hp, &h, h - 1)) {
            if (holders_n(h) == 1)
                slot_free_if_unread(q, idx);
            return;
        }
    }
}

/* Inlined twice: with g the constant 0 (queue_enqueue_slot: the one-group path pays nothing
 * for groups) and with g a variable (queue_enqueue_cell). */
static inline __attribute__((always_inline)) void enqueue_cell(shmq_t *q, uint32_t g,
                                                               uint32_t idx, uint64_t w)
{
    struct seg_header *h = q->seg.hdr;
    switch (sw_state(w)) {
    case SLOT_FREE:
        if (g) { /* group g is done with it: its mover counted it out (count_done) already; the
                  * release check once more is harmless */
            slot_free_if_unread(q, idx);
            break;
        }
        if (free_ring_room(q, 1)) /* else FREE in no ring: found as a ring too full leaves it */
            slot_enqueue_on(q, &q->seg.free_ring, idx, w, false);
        wait_wake(&h->free_futex, &h->free_waiters);
        break;
    case SLOT_READY:
        cell_enqueue_on(&q->seg.gready[g], cell_of(q, g, idx), idx, w, false);
        wait_wake(group_ready_futex(q, g), group_ready_waiters(q, g));
        break;
    case SLOT_DEAD: cell_enqueue_on(&q->seg.gdead[g], cell_of(q, g, idx), idx, w, false); break;
    }
}

void queue_enqueue_cell(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w)
{
    enqueue_cell(q, g, idx, w);
}

void queue_enqueue_slot(shmq_t *q, uint32_t idx, uint64_t w)
{
    enqueue_cell(q, 0, idx, w);
}

bool cell_move(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, uint64_t next)
{
    struct slot *sl = cell_of(q, g, idx);
    bool done = g && sw_state(next) == SLOT_FREE;
    uint64_t h = done ? holders_before(q, idx) : 0; /* R-pre */
    /* acq_rel: acquire the writes of whoever made the cell w, release ours (payload reads or
     * writes, attempt, reason) to whoever takes it as next; seq_cst when a cell of g >= 1 goes
     * FREE (V2: its R-dec follows it) */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return false;
    if (done)
        count_done(q, idx, h); /* R-dec, and the release check at 0 */
    else
        queue_enqueue_cell(q, g, idx, next);
    return true;
}

bool slot_move(shmq_t *q, uint32_t idx, uint64_t w, uint64_t next)
{
    return cell_move(q, 0, idx, w, next);
}

int cell_dead_letter(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, uint32_t reason)
{
    if (g && !group_active(q, g)) /* a deleted group's message ends here */
        return cell_finish(q, g, idx, w);
    struct slot *sl = segment_slot(&q->seg, idx), *cl = cell_of(q, g, idx);
    uint64_t dead = sw_next(w, SLOT_DEAD, NO_OWNER);
    cl->dead_reason = reason;
    /* logged BEFORE the move: a redrive acts only on a slot it saw DEAD, so its PUBLISH record
     * follows this one and wins (docs/DESIGN.md, "Records that decide in the right order");
     * a group's names it (docs/FORMAT.md section 9) */
    if (queue_log_dead(q, g, sl->id, cl->attempt, reason) == -EIDRM)
        return -EIDRM;
    if (!cell_move(q, g, idx, w, dead)) /* its release publishes dead_reason with DEAD */
        return -ESTALE;
    return 0;
}

int slot_dead_letter(shmq_t *q, uint32_t idx, uint64_t w, uint32_t reason)
{
    return cell_dead_letter(q, 0, idx, w, reason);
}

_Static_assert(SHMQ_PROCS_MAX < (1 << LINGER_OWNER_BITS), "a linger holds owner + 1");

/* Where a group that is done with a message moves its cell when no reader lingers: FREE, but
 * for group 0 HELD while groups >= 1 still hold the message (its `others`, written before P1
 * and acquired through the word we hold). */
static inline unsigned done_state(shmq_t *q, uint32_t g, uint32_t idx)
{
    if (g || !groups_on(q))
        return SLOT_FREE;
    /* relaxed: written by the producer before P1, which our hold of the word acquired; bit 0
     * is group 0 itself */
    return atomic_load_explicit(segment_others(&q->seg, idx), memory_order_relaxed) >> 1
               ? SLOT_HELD
               : SLOT_FREE;
}

/* F3, after the seq_cst move of slot idx to FREE: does it need the free ring? Not when the slot
 * before it is FREE (seq_cst load): whoever claims that one looks at ours next (F1 after F2,
 * docs/DESIGN.md "The free slots"). */
static inline __attribute__((always_inline)) bool free_needs_ring(shmq_t *q, uint32_t idx)
{
    const struct seg_layout *l = &q->seg.layout;
    uint32_t prev = idx ? idx - 1 : (uint32_t)l->capacity - 1;
    struct slot *ps = (struct slot *)((char *)q->seg.base + l->slots_off +
                                      (uint64_t)prev * l->slot_stride);
    return sw_state(atomic_load(&ps->state)) != SLOT_FREE;
}

/* finish's rare path: the cell has a linger (lg, non-zero), or group 0 goes HELD. Out of line,
 * so the common ack (no linger, one group) pays nothing for it. */
static __attribute__((noinline)) int finish_slow(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w,
                                                 uint32_t lg, unsigned done)
{
    struct slot *sl = cell_of(q, g, idx);
    if (!lg || (sw_state(w) == SLOT_INFLIGHT && lg == linger_make(w))) {
        /* T3: a take-back of this very delivery is under way and will fail (we move w); we
         * read no more, so its tag goes, and the cell is done with as usual */
        if (lg)
            atomic_compare_exchange_strong(&sl->linger, &lg, 0);
        uint64_t next = sw_next(w, done, NO_OWNER);
        uint64_t h = g ? holders_before(q, idx) : 0; /* R-pre */
        /* A1 (release), as in finish; seq_cst (V2) when R-dec or the release check follows */
        if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_seq_cst,
                                                     memory_order_relaxed))
            return -ESTALE;
        if (g)
            count_done(q, idx, h); /* R-dec, and the release check at 0 */
        else if (done == SLOT_HELD)
            slot_free_if_unread(q, idx);
        else
            queue_enqueue_cell(q, g, idx, next);
        return 0;
    }
    CRASH_POINT(finish_before_fence);
    /* V1 (seq_cst; release for our payload reads): FENCED before we look at the linger again,
     * paired with a reader's clear-then-look (slot_let_go) */
    if (!atomic_compare_exchange_strong(&sl->state, &w, sw_next(w, SLOT_FENCED, NO_OWNER)))
        return -ESTALE;
    cell_free_if_unread(q, g, idx);
    return 0;
}

/* deferred: a slot freed at once is neither enqueued nor woken for: 1 and its FREE word in
 * *freed when it must go onto the free ring (slot_finish_deferred: its caller enqueues a
 * range, then wakes once for many). */
static inline __attribute__((always_inline)) int finish(shmq_t *q, uint32_t g, uint32_t idx,
                                                        uint64_t w, bool deferred,
                                                        uint64_t *freed)
{
    struct slot *sl = cell_of(q, g, idx);
    /* V1 (seq_cst): the linger as of now; a tag set by a take-back before its move CAS reached
     * us through C1 (docs/DESIGN.md, "Why the finisher sees the tag") */
    uint32_t lg = atomic_load(&sl->linger);
    unsigned done = done_state(q, g, idx);
    if (lg || done != SLOT_FREE || g)
        return finish_slow(q, g, idx, w, lg, done);
    uint64_t next = sw_next(w, SLOT_FREE, NO_OWNER);
    /* A1 (seq_cst; release: our reads of the payload happen before the slot's reuse, which a
     * producer's claim acquires): FREE before we look at the slot before it (F3), and before
     * W1 (a sleeping producer's last try sees it: docs/DESIGN.md "The free slots") */
    if (!atomic_compare_exchange_strong(&sl->state, &w, next))
        return -ESTALE;
    CRASH_POINT(ack_after_free);
    /* F3 (seq_cst): the slot before it FREE means whoever claims that one looks at ours next
     * (F1 after F2): no ring needed. Otherwise onto the free ring (queue_enqueue_slot's FREE
     * case, in line; sl is the slot, g 0), or into the caller's range (deferred) */
    bool ring = free_needs_ring(q, idx) && free_ring_room(q, 1);
    if (deferred) {
        *freed = next;
        return ring; /* 0: nothing for the caller to enqueue */
    }
    if (ring)
        cell_enqueue_on(&q->seg.free_ring, sl, idx, next, false);
    wait_wake(&q->seg.hdr->free_futex, &q->seg.hdr->free_waiters);
    return 0;
}

int slot_finish(shmq_t *q, uint32_t idx, uint64_t w)
{
    return finish(q, 0, idx, w, false, NULL);
}

int slot_finish_deferred(shmq_t *q, uint32_t idx, uint64_t w, uint64_t *freed)
{
    return finish(q, 0, idx, w, true, freed);
}

int cell_finish(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w)
{
    return finish(q, g, idx, w, false, NULL);
}

void cells_enqueue_batch(struct ring *ring, struct slot *const *sls, const uint32_t *idx,
                         const uint64_t *w, size_t k, bool from_publish)
{
    uint64_t tickets[RING_BATCH_MAX];
    for (size_t at = 0; at < k; at += RING_BATCH_MAX) {
        size_t n = k - at < RING_BATCH_MAX ? k - at : RING_BATCH_MAX;
        /* R1 of each cell inside ring_enqueue_batch publishes that slot's state-word CAS */
        ring_enqueue_batch(ring, idx + at, n, tickets);
        if (from_publish)
            CRASH_POINT(publish_after_enqueue);
        for (size_t j = 0; j < n; j++) /* relaxed: a repair hint, validated by its gen tag */
            if (tickets[j] != RING_NO_TICKET)
                atomic_store_explicit(&sls[at + j]->ticket, tagged_make(tickets[j], w[at + j]),
                                      memory_order_relaxed);
    }
}

/* V2: no group >= 1 holds slot idx's message: its release count is 0 (seq_cst, after the
 * caller's seq_cst look at the slot word; pairs with the last R-dec). */
static bool groups_done(shmq_t *q, uint32_t idx)
{
    if (!groups_on(q))
        return true;
    return holders_n(atomic_load(&segment_slot(&q->seg, idx)->holders)) == 0;
}

/* Is the slot word w done with by group 0 and unread (HELD, or FENCED with neither owner nor
 * linger)? V1 (seq_cst linger load), after the caller's seq_cst load of w. */
static bool slot_unread(struct slot *sl, uint64_t w)
{
    return sw_state(w) == SLOT_HELD ||
           (sw_state(w) == SLOT_FENCED && sw_owner(w) == NO_OWNER && atomic_load(&sl->linger) == 0);
}

void slot_free_if_unread(shmq_t *q, uint32_t idx)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* V1, V2 (seq_cst): after our own mark was cleared (or the slot fenced, or held, or our
     * cell freed), see the others' */
    uint64_t w = atomic_load(&sl->state);
    if (!slot_unread(sl, w) || !groups_done(q, idx))
        return;
    CRASH_POINT(group_release_before_free);
    uint64_t next = sw_next(w, SLOT_FREE, NO_OWNER);
    /* seq_cst, as A1: FREE before F3's look at the slot before it and before W1. Onto the free
     * ring only as an ack's F3 says: every group-released slot went there before, and with the
     * producers claiming at their cursor (the ring's entries mostly stale) the ring filled up,
     * each enqueue then scanning all of it (bench/groups-cost: 1.1e9 instructions in
     * ring_enqueue for 12000 messages at 4 groups) */
    if (!atomic_compare_exchange_strong(&sl->state, &w, next))
        return;
    if (free_needs_ring(q, idx) && free_ring_room(q, 1)) /* else FREE in no ring, as an ack's */
        cell_enqueue_on(&q->seg.free_ring, sl, idx, next, false);
    wait_wake(&q->seg.hdr->free_futex, &q->seg.hdr->free_waiters);
}

void slot_release_repair(shmq_t *q, uint32_t idx)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* seq_cst: the word, then the count and the cells, then the word again (DESIGN, release
     * repair): the word unchanged means the slot was not freed and reused under our loads */
    uint64_t w = atomic_load(&sl->state);
    if (!groups_on(q) || !slot_unread(sl, w))
        return;
    uint64_t h = atomic_load(&sl->holders);
    if (holders_n(h) > 0) {
        /* relaxed: written before P1, whose release sequence our load of w acquired */
        uint64_t others = atomic_load_explicit(segment_others(&q->seg, idx), memory_order_relaxed);
        for (uint32_t g = 1; others >> g; g++)
            if ((others >> g & 1) && sw_state(atomic_load(&cell_of(q, g, idx)->state)) != SLOT_FREE)
                return; /* a group still holds it */
        if (atomic_load(&sl->state) != w)
            return;
        /* seq_cst: a finisher killed before its R-dec is counted out; a live one's R-dec then
         * finds 0 (or, once the slot is reused, another tag) and does nothing */
        if (!atomic_compare_exchange_strong(&sl->holders, &h, holders_make(holders_tag(h), 0)))
            return; /* counted down meanwhile: the next pass looks again */
    }
    slot_free_if_unread(q, idx);
}

void cell_free_if_unread(shmq_t *q, uint32_t g, uint32_t idx)
{
    if (g == 0) {
        slot_free_if_unread(q, idx);
        return;
    }
    struct slot *c = cell_of(q, g, idx);
    /* V1 (seq_cst), on the cell: its readers are gone, the group is done with the message */
    uint64_t w = atomic_load(&c->state);
    if (sw_state(w) != SLOT_FENCED || sw_owner(w) != NO_OWNER || atomic_load(&c->linger) != 0)
        return;
    cell_move(q, g, idx, w, sw_next(w, SLOT_FREE, NO_OWNER)); /* then the slot (V2) */
}

/* Clear the marks the predicate names: a linger tag equal to tag (or, all_of: any tag of
 * owner), and the FENCED word's owner if it is owner (and, unless all_of, its gen is fgen). */
static void let_go(shmq_t *q, uint32_t g, uint32_t idx, uint32_t owner, uint32_t tag,
                   uint64_t fgen, bool all_of)
{
    struct slot *sl = segment_cell(&q->seg, g, idx);
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
    cell_free_if_unread(q, g, idx);
}

void cell_let_go(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w)
{
    /* T4: our tag of delivery w, and the FENCED word copy-out made from w (gen + 1) */
    let_go(q, g, idx, sw_owner(w), linger_make(w), sw_gen(w) + 1, false);
}

void slot_let_go(shmq_t *q, uint32_t idx, uint64_t w)
{
    cell_let_go(q, 0, idx, w);
}

void cell_let_go_all(shmq_t *q, uint32_t g, uint32_t idx, uint32_t owner)
{
    let_go(q, g, idx, owner, 0, 0, true); /* T5 */
}

void slot_let_go_all(shmq_t *q, uint32_t idx, uint32_t owner)
{
    cell_let_go_all(q, 0, idx, owner);
}
