/*
 * slotmove.h - moving a slot on: one CAS to its next state, then onto the ring of that state;
 * and ending a slot's use when a former owner may still read it (linger). Publish, consume,
 * maintenance and the dead-letter calls make their transitions through these (slotmove.c).
 */
#ifndef SHMQ_SLOTMOVE_H
#define SHMQ_SLOTMOVE_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "crashpoint.h"
#include "gcell.h"
#include "queue.h"
#include "slot.h"

/* Put slot idx, whose cell (the slot itself for group 0, else the group's cell of it) has state
 * word w now, on ring and record the ticket it landed at in the cell. An overfull ring leaves
 * the slot an orphan, which maintenance enqueues later. from_publish: the crash point between
 * the enqueue and the ticket is publish's (docs/DESIGN.md, crash windows). Inline: publish's
 * fast path calls it. */
static inline void cell_enqueue_on(struct ring *ring, struct slot *sl, uint32_t idx, uint64_t w,
                                   bool from_publish)
{
    uint64_t ticket;
    /* R1 inside ring_enqueue publishes our state-word CAS to the dequeuer */
    if (ring_enqueue(ring, idx, &ticket) != 0)
        return; /* overfull ring: the slot is an orphan now; maintenance enqueues it later */
    if (from_publish)
        CRASH_POINT(publish_after_enqueue);
    /* relaxed: a repair hint, validated by its gen tag (slot.h) */
    atomic_store_explicit(&sl->ticket, tagged_make(ticket, w), memory_order_relaxed);
}

/* The same for group 0 (the slot's own word). */
static inline void slot_enqueue_on(shmq_t *q, struct ring *ring, uint32_t idx, uint64_t w,
                                   bool from_publish)
{
    cell_enqueue_on(ring, segment_slot(&q->seg, idx), idx, w, from_publish);
}

/* Has the free ring room for k more entries (docs/DESIGN.md "The free slots", stale entries)?
 * Its entries are hints that a cursor claim leaves behind, so unlike the other rings it is not
 * bounded by one entry per slot; a producer that always claims at its cursor never drains it,
 * and out-of-order acks would fill every cell (each ack then spends laps of failed tickets,
 * and the threshold's 3n-1 counts n entries at most). An enqueue is skipped while head..tail
 * would span n = cells / 2 tickets or more with them: entries stay at most n plus the enqueues
 * under way (one per acking thread, or an ack batch's range of at most 64). A skipped slot is
 * FREE in no ring: what a ring too full to take it leaves, found by cursors, the failed claims' sweep, a blocking publish's look and maintenance.
 * Except while the threshold is spent (below).
 * Rare path only (an ack whose previous slot is in use, the other frees): two seq_cst loads. */
static inline bool free_ring_room(shmq_t *q, uint64_t k)
{
    const struct ring *r = &q->seg.free_ring;
    uint64_t head = ring_head(r); /* seq_cst: head first, so tail - head never undercounts */
    if ((int64_t)(ring_tail(r) - head + k) <= (int64_t)((r->mask + 1) / 2))
        return true;
    /* seq_cst, as the dequeuers' own read: with the threshold spent they draw no tickets, so
     * head would never come back within n of tickets dead enqueuers left: enqueue (its reset
     * lets them pass those tickets). At most one entry (or range) past n per threshold spent. */
    return atomic_load(&r->shm->threshold) < 0;
}

/* Take a slot off the free ring for owner: CAS FREE(g) -> RESERVED(owner). 0 and *idx, or
 * -EAGAIN when none is free. An index whose slot is not FREE is a stale or duplicate entry:
 * dropped. Inline: publish's fast path calls it. */
static inline int slot_claim_free(shmq_t *q, uint32_t owner, uint32_t *idx)
{
    uint64_t ticket;
    uint32_t i;
    while (ring_dequeue(&q->seg.free_ring, &i, &ticket) == 0) {
        struct slot *sl = segment_slot(&q->seg, i);
        if (!sl)
            continue; /* garbage from shm: drop it */
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
        if (sw_state(w) != SLOT_FREE)
            continue;
        /* F2 (seq_cst; acquire: the last reader's reads of the old payload, its A1 release,
         * are done before we overwrite it): the claim precedes our next look at idx + 1 */
        if (atomic_compare_exchange_strong(&sl->state, &w, sw_next(w, SLOT_RESERVED, owner))) {
            *idx = i;
            return 0;
        }
    }
    return -EAGAIN;
}

/* How many slots a claim looks at from the handle's cursor before it tries the free ring
 * (CLAIM_SPAN), and the whole queue (the last try before a producer sleeps, a maintainer's
 * copy-out: those must find any FREE slot, docs/DESIGN.md "The free slots"). */
#define CLAIM_SPAN 8u
#define CLAIM_ALL UINT32_MAX

/* Claim a FREE slot for owner (docs/DESIGN.md, "The free slots"): look at the slot at the
 * handle's cursor and up to span - 1 after it (F1), claiming the first FREE one (F2); then take
 * one off the free ring. The cursor moves past what was looked at, and to the slot after the
 * one claimed. 0 and *idx, or -EAGAIN. Inline: publish's fast path calls it. */
static inline int slot_claim(shmq_t *q, uint32_t owner, uint32_t span, uint32_t *idx)
{
    const uint32_t cap = q->seg.layout.capacity;
    char *slots = (char *)q->seg.base + q->seg.layout.slots_off;
    /* relaxed: a hint of this handle's (threads of one handle may race on it: any value in
     * range is safe, a claim is a CAS) */
    uint32_t c = atomic_load_explicit(&q->cursor, memory_order_relaxed);
    if (c >= cap)
        c = 0;
    if (span > cap)
        span = cap;
    for (uint32_t k = 0; k < span; k++) {
        struct slot *sl = (struct slot *)(slots + (uint64_t)c * q->seg.layout.slot_stride);
        uint32_t i = c;
        c = c + 1 < cap ? c + 1 : 0;
        /* F1 (seq_cst): after our claim of the slot before it (F2), so an acker that saw that
         * one FREE after its A1 left this one to us; we see its A1 */
        uint64_t w = atomic_load(&sl->state);
        while (sw_state(w) == SLOT_FREE) {
            /* F2 (seq_cst; acquire pairs with A1: the last reader is done with the payload) */
            if (atomic_compare_exchange_strong(&sl->state, &w,
                                               sw_next(w, SLOT_RESERVED, owner))) {
                atomic_store_explicit(&q->cursor, c, memory_order_relaxed);
                *idx = i;
                return 0;
            }
        }
    }
    if (slot_claim_free(q, owner, idx) != 0) {
        atomic_store_explicit(&q->cursor, c, memory_order_relaxed); /* go on from there */
        return -EAGAIN;
    }
    /* the slot after a ring claim is where a chain of FREE slots may go on (F3) */
    atomic_store_explicit(&q->cursor, *idx + 1 < cap ? *idx + 1 : 0, memory_order_relaxed);
    return 0;
}

/* Put slots idx[0..k), whose words are w[0..k) and cells sls[0..k), on ring as one range
 * (ring_enqueue_batch) and record each one's ticket; an entry the ring did not take leaves its
 * slot an orphan, which maintenance enqueues later (as cell_enqueue_on). from_publish: as
 * cell_enqueue_on's. */
void cells_enqueue_batch(struct ring *ring, struct slot *const *sls, const uint32_t *idx,
                         const uint64_t *w, size_t k, bool from_publish);

/* Put slot idx, whose state word is now w (FREE, READY or DEAD), into the matching ring and
 * record the ticket; wake a sleeper if one waits. */
void queue_enqueue_slot(shmq_t *q, uint32_t idx, uint64_t w);

/* The same for group g's cell of slot idx: READY and DEAD go on g's rings; a cell of g >= 1
 * that is FREE (its group is done) releases the slot if no group holds it any more (V2). */
void queue_enqueue_cell(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w);

/* CAS slot idx from word w to next (FREE, READY or DEAD) and put it on that ring: true if this
 * call moved it, false if w was no longer the slot's word. */
bool slot_move(shmq_t *q, uint32_t idx, uint64_t w, uint64_t next);

/* Move slot idx, which we hold as word w (INFLIGHT, ours), to the dead-letter ring with reason
 * (SHMQ_DEAD_*): its DEAD record is logged first. 0; -EIDRM (not moved); -ESTALE when w was no
 * longer the slot's word (taken back from us meanwhile). */
int slot_dead_letter(shmq_t *q, uint32_t idx, uint64_t w, uint32_t reason);

/* The same for group g's cell of slot idx (logged for group 0 only, so far); a message of a
 * group no longer ACTIVE is finished instead. */
int cell_dead_letter(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, uint32_t reason);

/* The same on group g's cell of slot idx (queue_enqueue_cell after it). */
bool cell_move(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, uint64_t next);

/* Group g is done with slot idx held as cell word w: as slot_finish, for any group. For group
 * 0 with other groups holding the message the slot goes HELD (not FREE), for g >= 1 the cell
 * goes FREE; either way the slot is freed by whoever sees every group done (V2, docs/DESIGN.md
 * "Consumer groups"). */
int cell_finish(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w);

/* Group g's holder of delivery w lets go of slot idx (slot_let_go for any group). */
void cell_let_go(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w);

/* Registry entry owner (a consumer of group g) reads slot idx no more at all: its close. */
void cell_let_go_all(shmq_t *q, uint32_t g, uint32_t idx, uint32_t owner);

/* Slot idx is HELD or FENCED with no owner and no linger: FREE it (onto the free ring) if no
 * group >= 1 holds it (V2). For group g >= 1: its cell FENCED(NO_OWNER) with no linger goes
 * FREE, then the same for the slot. */
void cell_free_if_unread(shmq_t *q, uint32_t g, uint32_t idx);

/* Done with slot idx held as word w: FREE and onto the free ring, or FENCED(NO_OWNER) while a
 * lingering delivery may still be read (freed at once if it let go meanwhile). An ack of the very
 * delivery the linger names clears it (T3, docs/DESIGN.md). 0, or -ESTALE if w is not the slot's
 * word any more. */
int slot_finish(shmq_t *q, uint32_t idx, uint64_t w);

/* As slot_finish, but a slot it frees at once is neither enqueued nor woken for: 1 and *freed
 * (its FREE word) when the caller must put it on the free ring (cells_enqueue_batch, then one
 * wake); 0 when it was finished otherwise (HELD, FENCED, freed by a reader; or FREE after a
 * FREE slot, F3); -ESTALE as slot_finish. Between the two the slot is a FREE orphan, the window
 * of an ack killed after A1. */
int slot_finish_deferred(shmq_t *q, uint32_t idx, uint64_t w, uint64_t *freed);

/* The holder of delivery w (INFLIGHT word of its token) will not read slot idx again: clear
 * that delivery's linger tag, and its name as owner of the FENCED word copy-out made from w;
 * free the slot once no reader is left (slot_free_if_unread). */
void slot_let_go(shmq_t *q, uint32_t idx, uint64_t w);

/* Registry entry owner reads slot idx no more at all (its close): clear every mark naming it. */
void slot_let_go_all(shmq_t *q, uint32_t idx, uint32_t owner);

/* Slot idx is FENCED with no owner and no linger (or HELD), and no other group holds it (its
 * release count is 0): FREE it and put it on the free ring. */
void slot_free_if_unread(shmq_t *q, uint32_t idx);

/* Maintenance's release repair (docs/DESIGN.md "Consumer groups"): slot idx as
 * slot_free_if_unread, after setting its release count to 0 if every cell of `others` is FREE
 * (a finisher killed between its cell's CAS and its count-down left it above 0). */
void slot_release_repair(shmq_t *q, uint32_t idx);

#endif
