/*
 * maintain.c - one maintenance step: reclaim, repair, fire delayed messages.
 *
 * Every repair is a CAS on a state word that expects the exact word observed, so the step is
 * idempotent and several maintainers may run at once: of two that try the same repair, one
 * CAS wins and the other fails harmlessly. Re-enqueueing when unsure is safe because a stale
 * or duplicate ring entry fails the dequeuer's state check (principle 1 of docs/DESIGN.md).
 *
 *  1. Registry: an ACTIVE or CLAIMED entry whose process is dead (pid gone or reused) becomes
 *     FENCED; a sleeper it left counted in ready_waiters is uncounted.
 *  2. Slots: INFLIGHT of a fenced/free owner, or past its ack deadline -> READY (attempt kept;
 *     the next delivery counts it) or DEAD when max_attempts is reached; RESERVED of a dead
 *     owner -> FREE; DELAYED and due -> READY; a READY or FREE slot that no ring holds (its
 *     ring's head passed the recorded ticket, or no ticket was recorded) for longer than
 *     ORPHAN_GRACE_NS with its word unchanged -> same state, gen + 1 (fencing a late dequeuer
 *     that may still hold the entry), enqueued again.
 *  3. A FENCED entry that no slot names as owner any more becomes FREE.
 * A live process is never fenced here, however late: its messages come back through their
 * ack deadline instead, and what it may still touch is never freed under it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "crashpoint.h"
#include "queue.h"
#include "registry.h"
#include "slot.h"

#define ORPHAN_GRACE_NS (100ull * 1000000ull)
#define TICKET_BITS 40

struct pass {
    shmq_t *q;
    shmq_maint_report_t *rep;
    uint64_t now_ns, now_ms;
    uint32_t *owner_refs; /* slots still naming each registry entry as owner */
};

static bool owner_gone(const struct segment *s, uint32_t owner)
{
    struct proc_entry *e = segment_proc(s, owner);
    if (!e)
        return true;
    unsigned st = pw_state(atomic_load_explicit(&e->word, memory_order_acquire));
    return st == PROC_FREE || st == PROC_FENCED;
}

static void fence_dead_procs(struct pass *p)
{
    struct segment *s = &p->q->seg;
    for (uint32_t i = 0; i < s->layout.max_procs; i++) {
        struct proc_entry *e = segment_proc(s, i);
        /* acquire: pairs with G1 (attach), so pid and start time are complete */
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
        unsigned st = pw_state(w);
        if ((st == PROC_ACTIVE || st == PROC_CLAIMED) && registry_pid_dead(e) &&
            atomic_compare_exchange_strong(&e->word, &w, pw_next(w, PROC_FENCED))) {
            p->rep->procs_dead++;
            st = PROC_FENCED;
        }
        uint32_t one = 1;
        if (st == PROC_FENCED &&
            atomic_compare_exchange_strong(&e->sleeping, &one, 0)) /* once per sleeper */
            atomic_fetch_sub(&s->hdr->ready_waiters, 1);
    }
}

/* Move slot idx from word w to next and enqueue it; true if this call did it. */
static bool move_slot(struct pass *p, uint32_t idx, uint64_t w, uint64_t next)
{
    struct slot *sl = segment_slot(&p->q->seg, idx);
    /* acq_rel: acquire the last owner's writes, release ours to the next owner */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return false;
    CRASH_POINT(maintain_after_fence);
    queue_enqueue_slot(p->q, idx, next);
    return true;
}

/* An in-flight message goes back to the ready ring, or to the dead-letter ring. */
static bool take_back(struct pass *p, uint32_t idx, struct slot *sl, uint64_t w)
{
    if (sl->attempt >= p->q->seg.layout.max_attempts) {
        sl->dead_reason = 1; /* max attempts */
        if (!move_slot(p, idx, w, sw_next(w, SLOT_DEAD, NO_OWNER)))
            return false;
        p->rep->dead_lettered++;
        count(q_self(p->q), CNT_DEAD_LETTERED);
        return true;
    }
    if (!move_slot(p, idx, w, sw_next(w, SLOT_READY, NO_OWNER)))
        return false;
    count(q_self(p->q), CNT_RECLAIMED);
    return true;
}

/* The full ticket behind a 40-bit recorded one, given its ring's head now. */
static uint64_t widen_ticket(uint64_t stored, uint64_t head)
{
    const uint64_t mod = 1ull << TICKET_BITS;
    uint64_t ahead = (stored - head) & (mod - 1);
    return ahead < mod / 2 ? head + ahead : head - (mod - ahead);
}

/* Is this READY or FREE slot held by no ring? (suspected orphan) */
static bool looks_orphaned(struct pass *p, uint32_t idx, struct slot *sl, uint64_t w,
                           uint64_t *ticket, bool *has_ticket)
{
    struct ring *r = sw_state(w) == SLOT_READY ? &p->q->seg.ready_ring : &p->q->seg.free_ring;
    uint64_t stored;
    *has_ticket = tagged_get(atomic_load_explicit(&sl->ticket, memory_order_relaxed), w, &stored);
    if (!*has_ticket)
        return true; /* its enqueuer died before recording it, or never enqueued it */
    uint64_t head = ring_head(r);
    *ticket = widen_ticket(stored, head);
    /* head not past the ticket: an ordinary entry waiting its turn */
    return ticket_before(*ticket, head);
    (void)idx;
}

static void repair_orphan(struct pass *p, uint32_t idx, struct slot *sl, uint64_t w)
{
    shmq_t *q = p->q;
    uint64_t ticket;
    bool has_ticket;
    if (!looks_orphaned(p, idx, sl, w, &ticket, &has_ticket)) {
        q->suspect_word[idx] = 0;
        return;
    }
    if (q->suspect_word[idx] != w + 1) { /* +1: a word of 0 is a real state word */
        q->suspect_word[idx] = w + 1;
        q->suspect_ns[idx] = p->now_ns;
        return;
    }
    if (p->now_ns - q->suspect_ns[idx] < ORPHAN_GRACE_NS)
        return;
    struct ring *r = sw_state(w) == SLOT_READY ? &q->seg.ready_ring : &q->seg.free_ring;
    if (has_ticket)
        ring_clear(r, ticket, idx); /* a dequeuer took this ticket and never consumed it */
    if (move_slot(p, idx, w, sw_next(w, sw_state(w), NO_OWNER)))
        p->rep->orphans_requeued++;
    q->suspect_word[idx] = 0;
}

static void repair_slot(struct pass *p, uint32_t idx)
{
    struct segment *s = &p->q->seg;
    struct slot *sl = segment_slot(s, idx);
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire), due;
    uint32_t owner = sw_owner(w);
    switch (sw_state(w)) {
    case SLOT_INFLIGHT:
        if (owner_gone(s, owner)) {
            if (take_back(p, idx, sl, w)) {
                p->rep->reclaimed++;
                return;
            }
        } else if (tagged_get(atomic_load_explicit(&sl->deadline, memory_order_relaxed), w,
                              &due) && p->now_ms >= due) {
            if (take_back(p, idx, sl, w))
                p->rep->deadline_expired++;
        }
        break;
    case SLOT_RESERVED:
        if (owner_gone(s, owner) && move_slot(p, idx, w, sw_next(w, SLOT_FREE, NO_OWNER))) {
            p->rep->reservations_freed++;
            return;
        }
        break;
    case SLOT_DELAYED:
        if (!tagged_get(atomic_load_explicit(&sl->deadline, memory_order_relaxed), w, &due) ||
            p->now_ms >= due) {
            if (move_slot(p, idx, w, sw_next(w, SLOT_READY, NO_OWNER)))
                p->rep->delayed_fired++;
        }
        return;
    case SLOT_READY:
    case SLOT_FREE:
        repair_orphan(p, idx, sl, w);
        return;
    default:
        return;
    }
    /* still owned (or a CAS lost a race): keep its owner's entry from being released */
    w = atomic_load_explicit(&sl->state, memory_order_relaxed);
    if ((sw_state(w) == SLOT_INFLIGHT || sw_state(w) == SLOT_RESERVED) &&
        sw_owner(w) < s->layout.max_procs)
        p->owner_refs[sw_owner(w)]++;
}

static void release_fenced_procs(struct pass *p)
{
    struct segment *s = &p->q->seg;
    for (uint32_t i = 0; i < s->layout.max_procs; i++) {
        uint64_t w = atomic_load_explicit(&segment_proc(s, i)->word, memory_order_acquire);
        if (pw_state(w) == PROC_FENCED && p->owner_refs[i] == 0)
            registry_release_fenced(s, i, w);
    }
}

int shmq_maintain(shmq_t *q, shmq_maint_report_t *report)
{
    if (!q)
        return -EINVAL;
    shmq_maint_report_t local;
    struct pass p = {.q = q, .rep = report ? report : &local};
    memset(p.rep, 0, sizeof(*p.rep));
    const struct seg_layout *l = &q->seg.layout;
    pthread_mutex_lock(&q->maint_lock);
    if (!q->suspect_word) {
        q->suspect_word = calloc(l->capacity, sizeof(uint64_t));
        q->suspect_ns = calloc(l->capacity, sizeof(uint64_t));
    }
    p.owner_refs = calloc(l->max_procs, sizeof(uint32_t));
    if (!q->suspect_word || !q->suspect_ns || !p.owner_refs) {
        free(p.owner_refs);
        pthread_mutex_unlock(&q->maint_lock);
        return -ENOMEM;
    }
    p.now_ns = now_ns();
    p.now_ms = queue_now_ms(q);
    fence_dead_procs(&p);
    for (uint32_t i = 0; i < l->capacity; i++)
        repair_slot(&p, i);
    release_fenced_procs(&p);
    free(p.owner_refs);
    atomic_fetch_add_explicit(&q->seg.hdr->maint_passes, 1, memory_order_relaxed);
    pthread_mutex_unlock(&q->maint_lock);
    return 0;
}
