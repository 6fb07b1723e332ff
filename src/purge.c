/*
 * purge.c - drop a queue's ready messages (and, asked, its delayed ones): shmq_purge.
 *
 * Purge takes ready messages the way a consumer does: it dequeues indices from the ready ring
 * (as many entries as the ring held when it began, so it ends while producers go on) and, for a
 * slot still READY(g), ends it with one CAS from that exact word (slot_finish: FREE, or FENCED
 * while a fenced former holder may still read the payload). A receiving consumer CASes the same
 * word to INFLIGHT (C1): of the two CASes exactly one succeeds, so a message is either delivered
 * or purged, never both; a stale or duplicate entry fails the state check and is dropped, as in
 * receive. With SHMQ_PURGE_DELAYED it then scans the slots for DELAYED ones (they are in no
 * ring) and ends each from its exact word, racing maintenance's firing CAS the same way.
 * In-flight, reserved and dead slots are never touched, nor a copy-out's copy parked DELAYED
 * for a message still in flight (purge_delayed).
 *
 * Each purged message is logged as an ACK of its id after its CAS (as shmq_ack), so a rebuild
 * from the log does not bring it back. Crash windows: killed between the CAS and the ACK record,
 * the slot is gone from shm but the log still says live: a rebuild after a segment loss brings
 * that one message back (at least once, never a loss; the same window as ack's). Killed after a
 * dequeue and before the CAS: the READY slot is an orphan that maintenance re-enqueues, as for a
 * consumer killed there (receive_after_dequeue).
 *
 * Per group (shmq_purge_group): the same on group g's cells and its ready ring (group 0's cell
 * is the slot, its ring the queue's ready ring); the message's id is the slot's. In a queue with
 * groups a new message is in no ready ring but in the fan-out ring (docs/DESIGN.md, "The fan-out
 * ring"): a scan of the cells then purges what is ready or pending (purge_fanned). A purged cell
 * is finished as an ack of that group finishes it: the slot is freed once no group holds the
 * message (V2), so the other groups keep theirs. Copy-out (and so a parked copy) is group 0's
 * only. A purged cell's record is an ACK of its group (wal_type_of(WAL_ACK, g)), as its ack's.
 */
#include <errno.h>
#include <stdlib.h>

#include "gcell.h"
#include "groups.h"
#include "queue.h"
#include "slot.h"
#include "slotmove.h"

/* End group g's cell of slot idx, whose message was ready or delayed as word w: 1 if this call
 * ended it, 0 if the word moved on first (delivered, fired, or purged by someone else), -EIDRM. */
static int purge_slot(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w)
{
    struct slot *sl = segment_slot(&q->seg, idx);
    /* read after the caller's acquire load of w; ours only if the CAS from w succeeds (a word
     * never repeats, so the slot held this message all along) */
    uint64_t id = sl->id;
    if (cell_finish(q, g, idx, w) != 0)
        return 0;
    /* after the CAS, as an ack: the record never resolves a message someone else took */
    return queue_log(q, wal_type_of(WAL_ACK, g), id, 0) == -EIDRM ? -EIDRM : 1;
}

/* In a queue with groups, group g's messages waiting in the fan-out ring (docs/DESIGN.md, "The
 * fan-out ring": a pending cell, or a READY slot word for group 0, in no ring), found by a scan:
 * g's cursor is first raised to the position being filled now (what is purged needs no hint;
 * one filled later stays for the receivers), then each ready or pending cell is purged, racing a
 * receive's C1 on it as the ring's entries do. */
static int purge_fanned(shmq_t *q, uint32_t g, uint32_t *count)
{
    fan_cursor_raise(&q->seg.fan, g, fan_head_now(&q->seg.fan));
    for (uint32_t i = 0; i < q->seg.layout.capacity; i++) {
        struct slot *cl = segment_cell(&q->seg, g, i);
        /* acquire: pairs with P1 or F3's release (and cell_pending's slot load with P1): id is
         * the message's */
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        if (!cell_ready(q, g, i, w))
            continue;
        int r = purge_slot(q, g, i, w);
        if (r < 0)
            return r;
        *count += (uint32_t)r;
    }
    return 0;
}

/* Drain group g's ready ring once: READY cells are purged, stale entries dropped. */
static int purge_ready(shmq_t *q, uint32_t g, uint32_t *count)
{
    struct ring *rr = &q->seg.gready[g];
    uint64_t ticket, pending = ring_tail(rr) - ring_head(rr);
    if (pending > rr->mask + 1)
        pending = rr->mask + 1;
    uint32_t idx;
    for (uint64_t i = 0; i < pending && ring_dequeue(rr, &idx, &ticket) == 0; i++) {
        struct slot *cl = segment_cell(&q->seg, g, idx);
        if (!cl)
            continue; /* garbage from shm: drop it */
        /* acquire: pairs with P1 / F4 (or whichever release made it READY): id is the
         * message's */
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        if (sw_state(w) != SLOT_READY)
            continue; /* stale or duplicate entry, as in receive */
        int r = purge_slot(q, g, idx, w);
        if (r < 0)
            return r;
        *count += (uint32_t)r;
    }
    return 0;
}

static int by_value(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Purge every DELAYED slot (none is in a ring: a scan), except a copy-out's parked copy: a
 * DELAYED slot whose id a slot held INFLIGHT when the scan began (maintain.c, copy_out: the
 * copy waits DELAYED while the source is still in flight with a live holder). That message is
 * in flight: its holder may still ack or nack it, and an ACK of its id logged for the copy
 * would resolve it in the log while the nacked source lives on in shm (a segment loss then
 * lost it). A copy parked for a delivery made after that first look is not recognised (it
 * needs a receive, its whole ack deadline and a take-back within one purge). */
static int purge_delayed(shmq_t *q, uint32_t g, uint32_t *count)
{
    uint32_t cap = q->seg.layout.capacity, n = 0;
    uint64_t *held = malloc((cap ? cap : 1) * sizeof(*held));
    if (!held)
        return -ENOMEM;
    for (uint32_t i = 0; i < cap && g == 0; i++) { /* copy-out parks copies in group 0 only */
        struct slot *sl = segment_slot(&q->seg, i);
        /* acquire: the id read next is the INFLIGHT word's message (a hint: only skips) */
        if (sw_state(atomic_load_explicit(&sl->state, memory_order_acquire)) == SLOT_INFLIGHT)
            held[n++] = sl->id;
    }
    qsort(held, n, sizeof(*held), by_value);
    int err = 0;
    for (uint32_t i = 0; i < cap && !err; i++) {
        struct slot *sl = segment_slot(&q->seg, i), *cl = segment_cell(&q->seg, g, i);
        /* acquire: pairs with the release that made it DELAYED (a nack, P1D / F4, a parking) */
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        if (sw_state(w) != SLOT_DELAYED)
            continue;
        uint64_t id = sl->id; /* the DELAYED word's message (the acquire above) */
        if (n && bsearch(&id, held, n, sizeof(*held), by_value))
            continue; /* a parked copy of a message in flight */
        int r = purge_slot(q, g, i, w);
        if (r < 0)
            err = r;
        else
            *count += (uint32_t)r;
    }
    free(held);
    return err;
}

int shmq_purge(shmq_t *q, unsigned flags, uint32_t *count)
{
    return shmq_purge_group(q, NULL, flags, count);
}

int shmq_purge_group(shmq_t *q, const char *group, unsigned flags, uint32_t *count)
{
    uint32_t n = 0, g;
    if (count)
        *count = 0;
    if (!q || (flags & ~SHMQ_PURGE_DELAYED))
        return -EINVAL;
    if (!queue_gen_live(q)) /* the queue was rebuilt: this segment is no longer the queue */
        return -EIDRM;
    int err = groups_find(q, group, &g, NULL);
    if (err)
        return err;
    /* delayed first: one fired meanwhile is still purged from the ring below */
    err = (flags & SHMQ_PURGE_DELAYED) ? purge_delayed(q, g, &n) : 0;
    if (!err)
        err = purge_ready(q, g, &n);
    if (!err && groups_on(q))
        err = purge_fanned(q, g, &n);
    if (count)
        *count = n;
    return err;
}
