/*
 * expire.c - expiring a message past its time to live (expire.h).
 *
 * Expiry never takes a message from a consumer: only a slot that is ready or delayed (or one
 * being nacked by its holder) expires, and always from an INFLIGHT word its expirer holds, so
 * the move that ends it is the one an ack (drop) or a nack at max_attempts (dead letter) makes,
 * with their crash windows and their log records; docs/DESIGN.md, "Expiry", has the argument.
 */
#include "expire.h"

#include <time.h>

#include "clock.h"
#include "crashpoint.h"
#include "settings.h"
#include "slot.h"
#include "slotmove.h"

int expire_held_cell(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, struct proc_entry *e)
{
    struct slot *sl = segment_cell(&q->seg, g, idx);
    uint64_t id = segment_slot(&q->seg, idx)->id; /* ours while we hold w */
    if (settings_expire_policy(&q->seg.hdr->settings) == SHMQ_EXPIRE_DEAD_LETTER) {
        /* X2: DEAD logged before the move (as every dead letter), reason SHMQ_DEAD_EXPIRED */
        int err = cell_dead_letter(q, g, idx, w, SHMQ_DEAD_EXPIRED);
        /* failed: we read no more; moved: T3 (a take-back under way set its tag and failed) */
        if (err || atomic_load_explicit(&sl->linger, memory_order_relaxed) == linger_make(w))
            cell_let_go(q, g, idx, w);
        if (err)
            return err;
        count(e, CNT_DEAD_LETTERED);
        /* relaxed: a tally, ordered against nothing */
        atomic_fetch_add_explicit(&q->seg.hdr->expired, 1, memory_order_relaxed);
        return 0;
    }
    /* X2: done with as an ack (A1, FENCED while a former holder lingers); then its record */
    if (cell_finish(q, g, idx, w) != 0) {
        cell_let_go(q, g, idx, w); /* taken back first: we read it no more */
        return -ESTALE;
    }
    atomic_fetch_add_explicit(&q->seg.hdr->expired, 1, memory_order_relaxed); /* a tally */
    CRASH_POINT(expire_before_log);
    /* -EIDRM: dropped here; the rebuilt queue expires it from its PUBLISH record's expiry */
    return queue_log(q, wal_type_of(WAL_ACK, g), id, WAL_ACK_EXPIRED) == -EIDRM ? -EIDRM : 0;
}

int expire_held(shmq_t *q, uint32_t idx, uint64_t w, struct proc_entry *e)
{
    return expire_held_cell(q, 0, idx, w, e);
}

bool expire_claim(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, uint64_t now_ms)
{
    struct slot *sl = segment_cell(&q->seg, g, idx);
    uint64_t mine = sw_next(w, SLOT_INFLIGHT, q->self);
    /* X1 (acq_rel): the CAS a receive makes (C1): of the two (or a purge's, a firing's), one
     * wins; acquires the writes that made it READY/DELAYED */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, mine, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return false;
    /* relaxed, tagged with our word: a take-back after our death counts no delivery (it was
     * none), as for a receiver's claim (maintain.c, delivery_counted) */
    atomic_store_explicit(
        &sl->deadline, tagged_make(now_ms + settings_ack_deadline_ms(&q->seg.hdr->settings), mine),
        memory_order_relaxed);
    CRASH_POINT(expire_after_claim);
    return expire_held_cell(q, g, idx, mine, q_self(q)) == 0;
}

uint64_t expire_unix_ms(const shmq_t *q, uint64_t expire_ns)
{
    (void)q;
    if (expire_ns == EXPIRE_NEVER)
        return 0;
    /* the monotonic clock first, the wall clock after (as queue_unix_ms): time passing between
     * the two readings makes the logged expiry later, never earlier. The other way round a
     * publisher stopped there logged it early by the stop, and a rebuild dropped the message
     * (or dead-lettered it) that much before its expiry */
    uint64_t now = now_ns();
    CRASH_POINT(expire_between_clocks);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t left = expire_ns > now ? (expire_ns - now + 999999) / 1000000ull : 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + left;
}
