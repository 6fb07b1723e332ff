/*
 * publish.c - reserve a free slot, write it, commit it READY, enqueue it on the ready ring.
 *
 * Protocol (state word transitions are single CASes, see slot.h and docs/DESIGN.md):
 *   1. find a FREE slot: the one at our cursor (or a few after it), else one off the free
 *      ring; CAS it FREE(g) -> RESERVED(self, g+1) (an index whose slot is not FREE is a stale
 *      or duplicate ring entry: drop it; docs/DESIGN.md "The free slots")
 *   2. write id, len, payload
 *   3. P1: CAS RESERVED(self, g+1) -> READY(g+2) with release: publishes step 2
 *   4. enqueue the index on the ready ring, record the ticket, wake a sleeping consumer
 * Crash windows: after 1 or 2 the slot is RESERVED by a dead process: maintenance frees it.
 * After 3 the slot is READY in no ring (or in one, ticket unrecorded): maintenance finds the
 * orphan after a grace period and enqueues it (the message is delivered though publish never
 * returned: at-least-once). No step waits for another process.
 *
 * A delayed publish (shmq_publish_delayed) logs its due time in its PUBLISH record (wal.h,
 * WAL_PUB_DUE), then stores the due time tagged with the DELAYED word it is about to install,
 * then replaces 3-4 by P1D: CAS RESERVED -> DELAYED(g+2) with release. It joins no ring:
 * maintenance fires a DELAYED slot when its tagged due time has passed (maintain.c). So no
 * window shows the message READY before its due time, in shm or in the log: before P1D the
 * slot is RESERVED (freed by maintenance, ACK|ABORT logged; a rebuild before that restores it
 * DELAYED from its record), after P1D it is DELAYED with its due time (docs/DESIGN.md, "Delayed
 * publish").
 *
 * With consumer groups (max_groups > 1; docs/DESIGN.md, "Consumer groups") the commit fans out:
 * F1 reads the ACTIVE groups, F3 prepares each group's cell RESERVED (a fence, then F3b gives
 * back the cells of groups deleted meanwhile), F2 records the mask in the slot's `others`, P1
 * commits the slot READY (or DELAYED) for group 0, or HELD when group 0 is not in the mask.
 * Then a READY publish leaves the prepared cells RESERVED ("pending": ready for their group
 * under the committed slot) and puts the slot once into the fan-out ring (fanring.h), which every
 * group of the queue, group 0 included, reads with a cursor of its own: no ready ring, no
 * per-group CAS (docs/DESIGN.md, "The fan-out ring"); a delayed one's F4 moves each cell
 * DELAYED. Killed between P1 and the fill (or F4), maintenance finishes the fan-out (a cell
 * RESERVED, or group 0's READY word, that no cursor can reach). The payload is written once.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "clock.h"
#include "crashpoint.h"
#include "dedup.h"
#include "expire.h"
#include "hdrblock.h"
#include "queue.h"
#include "settings.h"
#include "slot.h"
#include "slotmove.h"
#include "wait.h"

/* Step 1: claim a free slot for self, from our cursor or the free ring (slotmove.h). 0 and
 * *idx, or -EAGAIN when none is free. */
static inline int claim_free_slot(shmq_t *q, uint32_t *idx)
{
    return slot_claim(q, q->self, CLAIM_SPAN, idx);
}

/* The slot index of a reservation's buffer, or -EINVAL if buf is no slot payload. */
static int slot_of_buf(const shmq_t *q, const void *buf, uint32_t *idx)
{
    const struct seg_layout *l = &q->seg.layout;
    uintptr_t first = (uintptr_t)q->seg.base + l->slots_off + SLOT_HEADER_SIZE;
    uintptr_t p = (uintptr_t)buf;
    if (p < first || (p - first) % l->slot_stride != 0 ||
        (p - first) / l->slot_stride >= l->capacity)
        return -EINVAL;
    *idx = (uint32_t)((p - first) / l->slot_stride);
    return 0;
}

static int check_publish_args(const shmq_t *q, const void *data, size_t len)
{
    if (!q || (!data && len > 0))
        return -EINVAL;
    if (len > q->seg.layout.max_msg_size)
        return -EMSGSIZE;
    return 0;
}

/* The dedup side of a keyed publish (dedup.c): its key and the bucket it claimed. */
struct keyed {
    const void *key;
    uint32_t key_len;
    uint64_t bucket, bucket_word;
    uint64_t now_ns; /* the publish's one reading of the coarse clock */
};

/* The headers of a publish (shmq_publish_ex): the caller's array, checked and measured. */
struct pub_hdrs {
    const shmq_header_t *h;
    uint32_t n, size; /* size: the encoded block's bytes (hdrs_measure), > 0 */
};

/* What a publish may add to its message besides a key: a delay, headers. One pointer, NULL for
 * a plain publish, so the plain path passes no more arguments than it needs (instr-guard). */
struct pub_more {
    uint32_t delay_ms;          /* > 0: parked DELAYED */
    const struct pub_hdrs *hd; /* NULL: no headers */
    uint32_t ttl_ms;            /* > 0: its own time to live; 0: the queue's default_ttl_ms */
};

/* A reservation we hold (word w) goes back to the free ring unpublished. */
static int give_back(shmq_t *q, uint32_t idx, uint64_t w)
{
    /* our writes to the payload are done before the slot is reused */
    return slot_move(q, idx, w, sw_next(w, SLOT_FREE, NO_OWNER)) ? 0 : -ESTALE;
}

/*
 * Write the PUBLISH record of a slot we hold RESERVED. Before reserving log space, the slot
 * names (as a lower bound) the file being written now, so maintenance cannot delete the file
 * the record lands in while we write it (wal.c, retention).
 */
static int log_publish(shmq_t *q, struct slot *sl, uint64_t id, size_t len, const struct keyed *k,
                       uint64_t due, const struct slot_hdrs *sh, uint64_t m, uint32_t *seq)
{
    /* relaxed: maintenance reads it in its slot scan; published to consumers by P1 */
    atomic_store_explicit(&sl->wal_seq, (uint32_t)wal_current_seq(q->wal) + 1,
                          memory_order_relaxed);
    int err;
    uint64_t expire = slot_expire(sl);
    if (sh || expire != EXPIRE_NEVER || m != 1) { /* the times a rebuild restores (a TTL),
                                                   * headers, the groups (m): not the fast path */
        struct wal_times t = {0, due ? queue_unix_ms(q, due) : 0,
                              expire != EXPIRE_NEVER ? expire_unix_ms(q, expire) : 0, m};
        err = wal_append_publish_timed(q->wal, id, 0, &t, k ? k->key : NULL, k ? k->key_len : 0,
                                       sh ? sh->bytes : NULL, sh ? sh->len : 0,
                                       slot_payload(sl), (uint32_t)len, seq);
    } else if (due) {
        err = wal_append_publish_due(q->wal, id, queue_unix_ms(q, due), slot_payload(sl),
                                     (uint32_t)len, seq);
    } else {
        err = wal_append_publish(q->wal, id, 0, k ? k->key : NULL, k ? k->key_len : 0,
                                 slot_payload(sl), (uint32_t)len, seq);
    }
    if (!err)
        atomic_store_explicit(&sl->wal_seq, *seq + 1, memory_order_relaxed);
    return err;
}

/* F1-F3 for slot idx, which we hold RESERVED: the ACTIVE groups (F1, acquire: pairs with
 * create's release fetch_or, the group's entry is complete), FP0, each group >= 1's cell
 * prepared RESERVED(self) (F3, a release store: no one else moves a cell of a RESERVED slot),
 * then a seq_cst fence and the mask again (F3b: a group deleted meanwhile gets its cell back;
 * Dekker pair with delete's fetch_and and sweep), and the mask recorded in `others` with the
 * release count (F2, relaxed: published by P1). Returns the mask; 1 (group 0 only) without
 * groups. Out of line: the one-group path pays one predictable branch. F3 is the one cost a
 * publish pays per group (docs/DESIGN.md, "The fan-out ring"): its loop walks the set bits and
 * steps from group 1's cell of the slot by the cell region's group stride. */
static __attribute__((noinline)) uint64_t prepare_groups(shmq_t *q, uint32_t idx, uint64_t w)
{
    struct segment *s = &q->seg;
    uint64_t m = atomic_load_explicit(&s->hdr->groups_mask, memory_order_acquire);
    uint32_t mg = s->layout.max_groups; /* 2..64: bits from shm past it are dropped */
    m &= mg >= 64 ? ~0ull : (1ull << mg) - 1;
    fan_unfilled(&s->fan, idx, fan_token(w)); /* FP0: before F3's release stores */
    struct slot *first = segment_cell(s, 1, idx); /* idx is ours: in range */
    size_t stride = s->layout.capacity; /* cells between (g, idx) and (g + 1, idx) */
    uint64_t mine = sw_make(SLOT_RESERVED, q->self, 0);
    uint32_t n = 0; /* F2's count of the groups >= 1 */
    for (uint64_t x = m & ~1ull; x; x &= x - 1) {
        uint32_t g = (uint32_t)__builtin_ctzll(x);
        struct slot *c = first + (size_t)(g - 1) * stride;
        uint64_t cw = atomic_load_explicit(&c->state, memory_order_relaxed);
        if (sw_state(cw) != SLOT_FREE) { /* a cell not done: never in correct use */
            m &= ~(1ull << g);
            continue;
        }
        c->attempt = 0;
        /* F3 (release: FP0 before it, for FC4; and a late F4 of an earlier message of this
         * slot by another thread of ours that acquires this word sees the slot's reuse, so the
         * release count's new tag: review10; the same mov as relaxed on x86-64) */
        atomic_store_explicit(&c->state, sw_make(SLOT_RESERVED, 0, sw_gen(cw) + 1) | mine,
                              memory_order_release);
        n++;
    }
    if (n) {
        atomic_thread_fence(memory_order_seq_cst); /* F3b: after our cells, before the mask */
        /* acquire: a bit set again by a create since F1 (its index reused) is that group's, and
         * its since_pos (read before its fetch_or, release) lies below our record (rule R-G) */
        uint64_t now = atomic_load_explicit(&s->hdr->groups_mask, memory_order_acquire);
        for (uint64_t x = m & ~now & ~1ull; x; x &= x - 1) {
            uint32_t g = (uint32_t)__builtin_ctzll(x);
            struct slot *c = first + (size_t)(g - 1) * stride;
            uint64_t cw = atomic_load_explicit(&c->state, memory_order_relaxed);
            atomic_store_explicit(&c->state, sw_next(cw, SLOT_FREE, NO_OWNER), memory_order_relaxed);
            m &= ~(1ull << g);
            n--;
        }
    }
    fanout_record_n(s, idx, m, n); /* F2: `others` and the release count, of the final m */
    CRASH_POINT(fanout_after_prepare);
    return m;
}

static inline uint64_t fanout_prepare(shmq_t *q, uint32_t idx, uint64_t w)
{
    return groups_on(q) ? prepare_groups(q, idx, w) : 1;
}

/* A reservation given back unpublished after fanout_prepare(): its prepared cells are FREE
 * again, before the slot goes back. A CAS from RESERVED(self), relaxed: if we were judged dead
 * meanwhile (our reservation fenced), M0 resets the cells and the slot may be someone else's;
 * else no one else moves a cell of a RESERVED slot (F3). */
static void fanout_unprepare(shmq_t *q, uint32_t idx, uint64_t m)
{
    for (uint32_t g = 1; m >> g; g++) {
        if (!(m >> g & 1))
            continue;
        struct slot *c = segment_cell(&q->seg, g, idx);
        uint64_t cw = atomic_load_explicit(&c->state, memory_order_relaxed);
        if (sw_state(cw) == SLOT_RESERVED && sw_owner(cw) == q->self)
            atomic_compare_exchange_strong_explicit(&c->state, &cw, sw_next(cw, SLOT_FREE, NO_OWNER),
                                                    memory_order_relaxed, memory_order_relaxed);
    }
}

/* The slot word's state at P1 for a message of mask m: state (READY or DELAYED) if group 0 is
 * in it, else HELD (other groups hold it, or nobody: freed at once after F4). */
static inline unsigned p1_state(uint64_t m, unsigned state) { return m & 1 ? state : SLOT_HELD; }

/* F4 for a delayed publish's slot idx after P1D, mask m, message id: each prepared cell of
 * g >= 1 moves RESERVED(self) -> DELAYED with due time due_ms (stored tagged before the CAS as
 * P0D), with release; a CAS that fails found the fan-out finished by maintenance. A cell
 * RESERVED(self) may be another thread's preparation of a later message of this slot (we paused
 * past the orphan grace: maintenance finished ours, the slot was freed and reused; review10):
 * the release count then has another tag, or 0 (ours while any cell of ours is not FREE, F2),
 * and we stop: that cell is not ours to commit. */
static void fanout_commit_delayed(shmq_t *q, uint32_t idx, uint64_t m, uint64_t due_ms,
                                  uint64_t id)
{
    CRASH_POINT(fanout_after_commit);
    _Atomic uint64_t *holders = &segment_slot(&q->seg, idx)->holders;
    for (uint32_t g = 1; m >> g; g++) {
        if (!(m >> g & 1))
            continue;
        struct slot *c = segment_cell(&q->seg, g, idx);
        /* acquire: pairs with F3's release: a later preparation read here shows us its slot's
         * reuse, after the count of our message went to 0 */
        uint64_t cw = atomic_load_explicit(&c->state, memory_order_acquire);
        if (sw_state(cw) != SLOT_RESERVED || sw_owner(cw) != q->self)
            continue; /* finished by maintenance already */
        /* relaxed, after that acquire: our F2's value, or a later one */
        uint64_t h = atomic_load_explicit(holders, memory_order_relaxed);
        if (holders_tag(h) != holders_tag(holders_make(id, 0)) || holders_n(h) == 0)
            return; /* not our message any more (nor the free-at-once below: its slot is reused) */
        uint64_t next = sw_next(cw, SLOT_DELAYED, NO_OWNER);
        /* P0D on the cell: the due time before the word */
        atomic_store_explicit(&c->deadline, tagged_make(due_ms, next), memory_order_release);
        /* release: the payload (and P1D's slot word) before the maintainer that fires it */
        atomic_compare_exchange_strong_explicit(&c->state, &cw, next, memory_order_release,
                                                memory_order_relaxed);
    }
    if (!(m >> 1)) /* delivered to nobody (no group was ACTIVE): free it at once */
        slot_free_if_unread(q, idx);
}

/* The fan-out of a READY publish after P1, mask m (docs/DESIGN.md, "The fan-out ring"): the
 * slot word is READY for group 0 (if in m) and the prepared cells of groups >= 1 stay RESERVED
 * ("pending": ready for their group under the committed slot); the slot goes into the fan-out
 * ring once for them all (FH), then one wake pass. Killed before the fill, maintenance's fan-out
 * and orphan repairs put the message on each group's ring (fanout_after_commit). */
static void fanout_publish(shmq_t *q, uint32_t idx, uint64_t m, uint64_t w)
{
    CRASH_POINT(fanout_after_commit);
    if (!m) { /* delivered to nobody (no group was ACTIVE): free it at once */
        slot_free_if_unread(q, idx);
        return;
    }
    fan_fill(&q->seg.fan, idx, fan_token(w)); /* w: our RESERVED word, FP0's token */
    /* W1F (seq_cst load after FH1, a seq_cst CAS): pairs with a sleeper's W2F; only when some
     * group has a sleeper does each group of m get its own W1 */
    if (atomic_load_explicit(q->seg.fan.waiters, memory_order_seq_cst) == 0)
        return;
    for (uint64_t x = m; x; x &= x - 1) {
        uint32_t g = (uint32_t)__builtin_ctzll(x);
        wait_wake(group_ready_futex(q, g), group_ready_waiters(q, g));
    }
}

/* The rest of a delayed publish, after its record: park the slot we hold as word w DELAYED
 * until due (queue ms). No ring: maintenance fires it when due. */
static int park_delayed(shmq_t *q, uint32_t idx, struct slot *sl, uint64_t w, uint64_t due,
                        uint64_t m, uint64_t id)
{
    uint64_t delayed = sw_next(w, p1_state(m, SLOT_DELAYED), NO_OWNER);
    /* P0D (release): the due time, tagged with the DELAYED word, is there before that word is:
     * maintenance fires a DELAYED slot without it at once. Read as P0 by M0 (maintain.c): a
     * RESERVED slot whose deadline names the next gen holds this reservation's id */
    atomic_store_explicit(&sl->deadline, tagged_make(due, delayed), memory_order_release);
    CRASH_POINT(publish_delayed_before_park);
    /* P1D (release): publishes id, len and payload (and the due time) to the maintainer that
     * fires it (its acquire load of the word in repair_slot) and to every later reader */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, delayed, memory_order_release,
                                                 memory_order_relaxed))
        return -ESTALE; /* our reservation was fenced: we were declared dead */
    if (m != 1)
        fanout_commit_delayed(q, idx, m, due, id);
    return 0;
}

/* Steps 3-4 for the slot idx we hold as RESERVED word w, written and logged: 0; 1 when a keyed
 * publish was decided (D1) and maintenance made it READY for us; -ESTALE. m: the groups it goes
 * to (fanout_prepare(), done before D1: once a keyed publish is decided, maintenance may commit
 * the slot for a stalled producer, and the cells must be prepared by then; fan-out repair
 * finishes them). Inlined twice: with m the constant 1 and fan false (one group: today's ready
 * ring) and with the mask and fan true (every group through the fan-out ring). */
static inline __attribute__((always_inline)) int commit_ready(shmq_t *q, uint32_t idx,
                                                               struct slot *sl, uint64_t w,
                                                               const struct keyed *k,
                                                               uint64_t msg_id, uint64_t m,
                                                               bool fan)
{
    if (k && dedup_commit(q, k->bucket, k->bucket_word, msg_id, token_make(idx, w),
                          queue_ms_at(q, k->now_ns)) != 0) {
        fanout_unprepare(q, idx, m);
        give_back(q, idx, w);
        /* its PUBLISH record must not come back, nor its key */
        queue_log(q, WAL_ACK, msg_id, WAL_ACK_ABORT);
        return -ESTALE;
    }
    uint64_t ready = sw_next(w, p1_state(m, SLOT_READY), NO_OWNER);
    /* P1 (release): publishes id, len and payload; pairs with C1 in claim_ready_slot() */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, ready, memory_order_release,
                                                 memory_order_relaxed))
        return k ? 1 : -ESTALE; /* unkeyed: our reservation was fenced (we were judged dead) */
    CRASH_POINT(publish_after_commit);
    if (fan) { /* a queue with groups: every group through the fan-out ring */
        fanout_publish(q, idx, m, w); /* w: the RESERVED word P1 replaced */
        return 0;
    }
    cell_enqueue_on(&q->seg.ready_ring, sl, idx, ready, true); /* sl: no second lookup */
    wait_wake(&q->seg.hdr->ready_futex, &q->seg.hdr->ready_waiters);
    return 0;
}

static __attribute__((noinline)) int commit_fanout(shmq_t *q, uint32_t idx, struct slot *sl,
                                                   uint64_t w, const struct keyed *k,
                                                   uint64_t msg_id, uint64_t m)
{
    return commit_ready(q, idx, sl, w, k, msg_id, m, true);
}

/* In line in both commit_slot_in copies (a call each cost shmq_publish about 35 instructions). */
static inline __attribute__((always_inline)) int make_ready(shmq_t *q, uint32_t idx,
                                                            struct slot *sl, uint64_t w,
                                                            const struct keyed *k, uint64_t msg_id,
                                                            uint64_t m)
{
    if (groups_on(q))
        return commit_fanout(q, idx, sl, w, k, msg_id, m);
    return commit_ready(q, idx, sl, w, k, msg_id, 1, false);
}

/* Step 2's header block, if the queue has room for one: hd's headers, or none (length 0: the
 * slot's block may hold an earlier message's). Before P0/P1, which publish it with the payload.
 * The block to log, or NULL when the message has no headers. */
static inline const struct slot_hdrs *write_headers(shmq_t *q, struct slot *sl,
                                                    const struct pub_hdrs *hd)
{
    struct slot_hdrs *sh = slot_headers(&q->seg, sl);
    if (!sh)
        return NULL;
    sh->len = hd ? hd->size : 0;
    if (!hd)
        return NULL;
    hdrs_encode(hd->h, hd->n, sh->bytes);
    return sh;
}

/* Steps 2-4 for a slot we hold RESERVED; in_place: the payload is already there (shmq_commit),
 * else it is copied from data. k: the dedup claim of a keyed publish, or NULL. more: NULL, or a
 * delay (> 0: a delayed publish, no key, parked DELAYED instead of steps 3-4) and headers.
 * Compiled twice: in line in shmq_publish with k and more NULL (no branch on them, one
 * function's entry and exit for the call), and as commit_slot() for every other publish. */
static inline __attribute__((always_inline)) int commit_slot_in(shmq_t *q, uint32_t idx,
                                                                const void *data, size_t len,
                                                                const struct keyed *k,
                                                                const struct pub_more *more,
                                                                uint64_t *id, bool in_place)
{
    uint32_t delay_ms = more ? more->delay_ms : 0;
    const struct pub_hdrs *hd = more ? more->hd : NULL;
    uint32_t ttl_ms = more && more->ttl_ms ? more->ttl_ms
                                           : settings_default_ttl_ms(&q->seg.hdr->settings);
    struct slot *sl = segment_slot(&q->seg, idx);
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_relaxed);
    /* a slot this call claimed that is no longer ours was taken from us (we were judged dead):
     * -ESTALE, as at P1; a buffer handed to shmq_commit that is not ours is bad input */
    if (sw_state(w) != SLOT_RESERVED || sw_owner(w) != q->self)
        return in_place ? -EINVAL : -ESTALE;
    if (data && !in_place)
        memcpy(slot_payload(sl), data, len);
    const struct slot_hdrs *sh = write_headers(q, sl, hd);
    /* relaxed: ids only need to be unique and increasing; P1 publishes the slot */
    uint64_t msg_id = atomic_fetch_add_explicit(&q->seg.hdr->next_id, 1, memory_order_relaxed) + 1;
    sl->id = msg_id;
    sl->len = (uint32_t)len;
    sl->attempt = 0;
    uint64_t now = k ? k->now_ns : now_ns_coarse(); /* the call's one clock read */
    sl->publish_ns = now;
    slot_set_expire(sl, expire_at(now, ttl_ms));
    /* P0 (release): the id above is this reservation's; the deadline field, tagged with our
     * RESERVED word, says so to maintenance (M0, acquire), which frees a dead producer's
     * reservation and logs ACK|ABORT only for an id it knows is its own. Before P0 the slot may
     * still name the previous occupant's id (with its wal_seq): a message copied out, live in
     * another slot, or a done keyed one (review F1). */
    atomic_store_explicit(&sl->deadline, tagged_make(1, w), memory_order_release);
    CRASH_POINT(publish_after_write);
    uint32_t seq = 0;
    /* + 1: the queue clock's ms are truncated; rounded up, a due time is never early */
    uint64_t due = delay_ms ? queue_now_ms_exact(q) + 1 + delay_ms : 0;
    if (k) /* a hint for maintenance, trusted only with the bucket's token (dedup.c) */
        atomic_store_explicit(&sl->dedup, (uint32_t)k->bucket + 1, memory_order_relaxed);
    uint64_t from = 0; /* SYNC: the log position before our record (GC7) */
    if (q->seg.layout.durability == SHMQ_DURABILITY_SYNC)
        from = wal_sync_from(q->wal);
    /* F1-F3b before the record, which names the groups it went to (docs/DESIGN.md, "The log
     * with groups"); the one-group path: m = 1, one predictable branch */
    uint64_t m = fanout_prepare(q, idx, w);
    if (q->wal) {
        int err = log_publish(q, sl, msg_id, len, k, due, sh, m, &seq);
        if (err) {
            fanout_unprepare(q, idx, m);
            give_back(q, idx, w);
            if (k)
                dedup_abandon(q, k->bucket, k->bucket_word);
            return err;
        }
        CRASH_POINT(publish_after_log);
    }
    int r = due ? park_delayed(q, idx, sl, w, due, m, msg_id) : make_ready(q, idx, sl, w, k, msg_id, m);
    if (r < 0)
        return r;
    if (id)
        *id = msg_id;
    if (r == 1)
        return 0; /* decided (D1): maintenance rolled it forward for us */
    count(q_self(q), CNT_PUBLISHED);
    if (q->seg.layout.durability == SHMQ_DURABILITY_SYNC)
        return wal_sync(q->wal, seq, from);
    return 0;
}

static __attribute__((noinline)) int commit_slot(shmq_t *q, uint32_t idx, const void *data,
                                                 size_t len, const struct keyed *k,
                                                 const struct pub_more *more, uint64_t *id,
                                                 bool in_place)
{
    return commit_slot_in(q, idx, data, len, k, more, id, in_place);
}

int shmq_reserve(shmq_t *q, size_t len, void **buf)
{
    int err = check_publish_args(q, buf, len);
    if (err || !buf)
        return err ? err : -EINVAL;
    uint32_t idx;
    if ((err = claim_free_slot(q, &idx)) != 0)
        return err;
    CRASH_POINT(publish_after_reserve);
    *buf = slot_payload(segment_slot(&q->seg, idx));
    return 0;
}

int shmq_commit(shmq_t *q, void *buf, size_t len, uint64_t *id)
{
    uint32_t idx;
    int err = check_publish_args(q, buf, len);
    if (err || (err = slot_of_buf(q, buf, &idx)) != 0)
        return err;
    return commit_slot(q, idx, NULL, len, NULL, NULL, id, true);
}

int shmq_cancel(shmq_t *q, void *buf)
{
    uint32_t idx;
    if (!q || slot_of_buf(q, buf, &idx) != 0)
        return -EINVAL;
    struct slot *sl = segment_slot(&q->seg, idx);
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_relaxed);
    if (sw_state(w) != SLOT_RESERVED || sw_owner(w) != q->self)
        return -EINVAL;
    return give_back(q, idx, w);
}

/* Step 1 of a publish without a key, its arguments checked first: 0 and *idx, or the error. */
static inline int claim_checked(shmq_t *q, const void *data, size_t len, uint32_t *idx)
{
    int err = check_publish_args(q, data, len);
    if (err || (err = claim_free_slot(q, idx)) != 0)
        return err;
    CRASH_POINT(publish_after_reserve);
    return 0;
}

/* A publish without a key: at once, or with more (a delay, headers). */
static inline int publish_unkeyed(shmq_t *q, const void *data, size_t len,
                                  const struct pub_more *more, uint64_t *id)
{
    uint32_t idx;
    int err = claim_checked(q, data, len, &idx);
    return err ? err : commit_slot(q, idx, data, len, NULL, more, id, false);
}

int shmq_publish(shmq_t *q, const void *data, size_t len, uint64_t *id)
{
    uint32_t idx;
    int err = claim_checked(q, data, len, &idx);
    return err ? err : commit_slot_in(q, idx, data, len, NULL, NULL, id, false);
}

int shmq_publish_delayed(shmq_t *q, const void *data, size_t len, uint32_t delay_ms, uint64_t *id)
{
    struct pub_more more = {delay_ms, NULL, 0};
    return publish_unkeyed(q, data, len, delay_ms ? &more : NULL, id);
}

/* A keyed publish (the protocol: dedup.c): claim the key's bucket, then publish under it. */
static int publish_keyed(shmq_t *q, const void *data, size_t len, const void *key, size_t key_len,
                         const struct pub_more *more, uint64_t *id)
{
    if (!q || (!data && len) || !key || key_len == 0 || key_len > SHMQ_DEDUP_KEY_MAX)
        return -EINVAL;
    if (len > q->seg.layout.max_msg_size)
        return -EMSGSIZE;
    if (!q->seg.layout.dedup_buckets)
        return -ENOTSUP;
    uint64_t found = 0;
    struct keyed k = {key, (uint32_t)key_len, 0, 0, now_ns_coarse()};
    int rc =
        dedup_claim(q, key, key_len, queue_ms_at(q, k.now_ns), &k.bucket, &k.bucket_word, &found);
    if (rc == DEDUP_DUPLICATE) {
        if (id)
            *id = found;
        return 0;
    }
    if (rc)
        return rc;
    uint32_t idx;
    if (claim_free_slot(q, &idx) != 0) {
        dedup_abandon(q, k.bucket, k.bucket_word);
        return -EAGAIN;
    }
    CRASH_POINT(publish_after_reserve);
    return commit_slot(q, idx, data, len, &k, more, id, false);
}

int shmq_publish_dedup(shmq_t *q, const void *data, size_t len, const void *key, size_t key_len,
                       uint64_t *id)
{
    return publish_keyed(q, data, len, key, key_len, NULL, id);
}

/* The first version of shmq_pub_opts_t ends here; a caller's size below it is bad input, and
 * so is one above this library's (a newer caller's options would be ignored) (shmq.h "ABI"). */
#define PUB_OPTS_V1_SIZE (offsetof(shmq_pub_opts_t, dedup_key_len) + sizeof(size_t))

static bool pub_opts_size_ok(size_t size)
{
    return size % 8 == 0 && size >= PUB_OPTS_V1_SIZE && size <= sizeof(shmq_pub_opts_t);
}

int shmq_pub_opts_init_size(shmq_pub_opts_t *opts, size_t size)
{
    if (!opts || !pub_opts_size_ok(size))
        return -EINVAL;
    memset(opts, 0, size); /* the caller's bytes only: its struct may be an older, smaller one */
    opts->size = (uint32_t)size;
    return 0;
}

/* The plain symbol (no header macro reaches it): the first layout. */
void(shmq_pub_opts_init)(shmq_pub_opts_t *opts)
{
    shmq_pub_opts_init_size(opts, PUB_OPTS_V1_SIZE);
}

/* The caller's options as this library's struct: the fields past its size read as 0. */
static int read_pub_opts(const shmq_pub_opts_t *opts, shmq_pub_opts_t *o)
{
    shmq_pub_opts_init(o);
    if (!opts)
        return 0;
    if (!pub_opts_size_ok(opts->size))
        return -EINVAL;
    memcpy(o, opts, opts->size < sizeof(*o) ? opts->size : sizeof(*o));
    o->size = sizeof(*o);
    return 0;
}

int shmq_publish_ex(shmq_t *q, const void *data, size_t len, const shmq_pub_opts_t *opts,
                    uint64_t *id)
{
    shmq_pub_opts_t o;
    int err = read_pub_opts(opts, &o);
    if (err)
        return err;
    if (!q || (o.n_headers && !o.headers))
        return -EINVAL;
    struct pub_hdrs hd = {o.headers, o.n_headers, 0};
    if (o.n_headers) {
        const struct seg_layout *l = &q->seg.layout;
        if (!l->max_header_bytes)
            return -ENOTSUP;
        if ((err = hdrs_measure(o.headers, o.n_headers, l->max_header_bytes, l->max_headers,
                                &hd.size)) != 0)
            return err;
    }
    if (o.dedup_key && o.delay_ms)
        return -ENOTSUP;
    const struct pub_hdrs *h = hd.size ? &hd : NULL;
    struct pub_more more = {o.delay_ms, h, o.ttl_ms};
    const struct pub_more *m = o.delay_ms || h || o.ttl_ms ? &more : NULL;
    if (o.dedup_key)
        return publish_keyed(q, data, len, o.dedup_key, o.dedup_key_len, m, id);
    return publish_unkeyed(q, data, len, m, id);
}

struct claim_ctx {
    shmq_t *q;
    uint32_t idx;
    uint32_t tries;
};

/* A blocking publish's try. Past the spin, each try is the last before a sleep or the first
 * after one: it looks at every slot, so a sleeper never sleeps past a FREE slot that an ack
 * left off the free ring (its W1 may have come before our W2: docs/DESIGN.md "The free
 * slots"). */
static int try_claim(void *arg)
{
    struct claim_ctx *ctx = arg;
    uint32_t span = ctx->tries < WAIT_SPIN_TRIES ? CLAIM_SPAN : CLAIM_ALL;
    ctx->tries++;
    return slot_claim(ctx->q, ctx->q->self, span, &ctx->idx);
}

int shmq_publish_timed(shmq_t *q, const void *data, size_t len, uint64_t *id, int timeout_ms)
{
    int err = check_publish_args(q, data, len);
    if (err)
        return err;
    struct claim_ctx ctx = {.q = q};
    if (timeout_ms == 0) {
        err = try_claim(&ctx);
    } else {
        uint64_t deadline = timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000ull;
        err = wait_until(&q->seg.hdr->free_futex, &q->seg.hdr->free_waiters, NULL, q_self(q),
                         WAIT_FREE, deadline, 100000000ull, try_claim, &ctx);
    }
    if (err)
        return err;
    CRASH_POINT(publish_after_reserve);
    return commit_slot(q, ctx.idx, data, len, NULL, NULL, id, false);
}

/*
 * Batch publish (shmq_publish_batch): runs of up to BATCH_RUN messages. Each message goes
 * through the steps of a single publish (claim, write, P0, record, P1, enqueue) in the same
 * order, so every crash window is one of the single publish's (docs/DESIGN.md, "Batches");
 * what a run shares is one clock read, one FAA on next_id for its ids, one log reservation for
 * its records (wal_append_batch) and, for the whole batch, one wake-up.
 */
#define BATCH_RUN 64

/* Publish what is left of a failed run unpublished: slots [from, k) of idx/w, RESERVED by
 * us. logged: their PUBLISH records are in the log, so each gets ACK|ABORT (as a reservation
 * maintenance frees does, M0): the record must not come back in a rebuild. */
static void give_back_run(shmq_t *q, const uint32_t *idx, const uint64_t *w, const uint64_t *ids,
                          const uint64_t *m, size_t from, size_t k, bool logged)
{
    for (size_t j = from; j < k; j++) {
        fanout_unprepare(q, idx[j], m[j]);
        if (give_back(q, idx[j], w[j]) == 0 && logged) /* ABORT: for every group (FORMAT 9) */
            queue_log(q, WAL_ACK, ids[j], WAL_ACK_ABORT);
    }
}

/* Log the PUBLISH records of slots [0, k) (written, P0 done), with as few reservations as the
 * file size allows. 0 and *logged = k, or the error that stopped it and *logged = the records
 * written before it (their slots may be published). *seq: the file of the first one (the
 * lowest: a SYNC flush from there covers them all). */
static int log_run(shmq_t *q, struct slot *const *sls, const uint64_t *ids, const uint64_t *m,
                   size_t k, size_t *logged, uint32_t *seq)
{
    struct wal_item items[BATCH_RUN];
    uint32_t lower = (uint32_t)wal_current_seq(q->wal) + 1;
    for (size_t j = 0; j < k; j++) {
        struct slot *sl = sls[j];
        /* relaxed: a lower bound of the file its record lands in, as in log_publish() */
        atomic_store_explicit(&sl->wal_seq, lower, memory_order_relaxed);
        /* the expiry's wall-clock time: two clock reads, only for a message that has one */
        uint64_t expire = slot_expire(sl);
        uint64_t exp = expire != EXPIRE_NEVER ? expire_unix_ms(q, expire) : 0;
        items[j] = (struct wal_item){WAL_PUBLISH, sl->len, ids[j], slot_payload(sl), exp, m[j]};
    }
    uint64_t unix_ms = 0; /* the run's records share one wall-clock reading (replay by time) */
    *logged = 0;
    while (*logged < k) {
        size_t n;
        uint32_t in = 0;
        int err = wal_append_batch(q->wal, unix_ms, items + *logged, k - *logged, &n, &in);
        if (*logged == 0)
            *seq = in;
        for (size_t j = *logged; j < *logged + n; j++) /* relaxed, as in log_publish() */
            atomic_store_explicit(&sls[j]->wal_seq, in + 1, memory_order_relaxed);
        if (err == -EIDRM)
            return err; /* written or not, this segment is no longer the queue: none counts */
        *logged += n;
        if (err)
            return err;
    }
    return 0;
}

/* One run: msgs[0..k), k <= BATCH_RUN. *done gets how many were published (a prefix); *seq
 * the log file of the first record. */
static int publish_run(shmq_t *q, const shmq_iov_t *msgs, size_t k, uint64_t now,
                       uint64_t *ids_out, size_t *done, uint32_t *seq)
{
    uint32_t idx[BATCH_RUN];
    uint64_t w[BATCH_RUN], ids[BATCH_RUN], ms[BATCH_RUN];
    struct slot *sls[BATCH_RUN];
    *done = 0;
    size_t got = 0;
    while (got < k && claim_free_slot(q, &idx[got]) == 0) /* the cursor, then the free ring */
        got++;
    if (got == 0)
        return -EAGAIN;
    CRASH_POINT(publish_after_reserve);
    /* relaxed: ids only need to be unique and increasing; P1 publishes each slot */
    uint64_t first = atomic_fetch_add_explicit(&q->seg.hdr->next_id, got, memory_order_relaxed);
    /* the run's expiry: its one clock reading, the time to live in use now (K1: read once) */
    uint64_t expire = expire_at(now, settings_default_ttl_ms(&q->seg.hdr->settings));
    bool groups = groups_on(q);
    for (size_t j = 0; j < got; j++) {
        struct slot *sl = sls[j] = segment_slot(&q->seg, idx[j]);
        w[j] = atomic_load_explicit(&sl->state, memory_order_relaxed);
        if (msgs[j].len)
            memcpy(slot_payload(sl), msgs[j].data, msgs[j].len);
        write_headers(q, sl, NULL); /* batch messages carry no headers */
        ids[j] = first + 1 + j;
        sl->id = ids[j];
        sl->len = (uint32_t)msgs[j].len;
        sl->attempt = 0;
        sl->publish_ns = now;
        slot_set_expire(sl, expire);
        /* P0 (release), as in commit_slot(): the id above is this reservation's */
        atomic_store_explicit(&sl->deadline, tagged_make(1, w[j]), memory_order_release);
        /* F1-F3b before the record, as commit_slot() (fanout_prepare) */
        ms[j] = groups ? prepare_groups(q, idx[j], w[j]) : 1;
    }
    CRASH_POINT(publish_after_write);
    size_t logged = got;
    int err = 0;
    if (q->wal) {
        err = log_run(q, sls, ids, ms, got, &logged, seq);
        if (err == -EIDRM)
            logged = 0;
        CRASH_POINT(publish_after_log);
    }
    /* the slots that go onto the ready ring (group 0's): one range after the run's P1s */
    uint32_t ridx[BATCH_RUN];
    uint64_t rw[BATCH_RUN];
    struct slot *rsl[BATCH_RUN];
    size_t j = 0, nr = 0;
    for (; j < logged; j++) {
        struct slot *sl = sls[j];
        uint64_t m = ms[j];
        uint64_t ready = sw_next(w[j], p1_state(m, SLOT_READY), NO_OWNER);
        /* P1 (release): publishes id, len and payload; pairs with C1 in claim_ready_slot() */
        if (!atomic_compare_exchange_strong_explicit(&sl->state, &w[j], ready,
                                                     memory_order_release, memory_order_relaxed)) {
            err = -ESTALE; /* our reservations were fenced: we were judged dead */
            break;
        }
        CRASH_POINT(publish_after_commit);
        if (groups_on(q)) { /* every group through the fan-out ring (docs/DESIGN.md) */
            fanout_publish(q, idx[j], m, w[j]); /* w[j]: the RESERVED word P1 replaced */
        } else {
            ridx[nr] = idx[j];
            rw[nr] = ready;
            rsl[nr++] = sl;
        }
        if (ids_out)
            ids_out[j] = ids[j];
    }
    /* READY in no ring until here: orphans if we die first, as a single publish after P1 */
    cells_enqueue_batch(&q->seg.ready_ring, rsl, ridx, rw, nr, true);
    /* the rest goes back: not logged (a log error: nothing of it counts), or after a fence */
    give_back_run(q, idx, w, ids, ms, j == logged ? logged : j + 1, logged, true);
    give_back_run(q, idx, w, ids, ms, logged, got, false);
    *done = j;
    /* relaxed: a tally (count()), one add for the run */
    atomic_fetch_add_explicit(&q_self(q)->counters[CNT_PUBLISHED], j, memory_order_relaxed);
    if (err)
        return err;
    return got < k ? -EAGAIN : 0;
}

int shmq_publish_batch(shmq_t *q, const shmq_iov_t *msgs, size_t n, uint64_t *ids, size_t *done)
{
    size_t d = 0;
    if (done)
        *done = 0;
    if (!q || (!msgs && n))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) { /* bad input is refused before anything is published */
        int err = check_publish_args(q, msgs[i].data, msgs[i].len);
        if (err)
            return err;
    }
    uint64_t now = now_ns_coarse(); /* the batch's one clock read */
    uint32_t low = 0; /* the log file of the batch's first record */
    bool sync = q->seg.layout.durability == SHMQ_DURABILITY_SYNC;
    uint64_t from = sync ? wal_sync_from(q->wal) : 0; /* before the batch's records (GC7) */
    int err = 0;
    while (d < n && !err) {
        size_t k = n - d < BATCH_RUN ? n - d : BATCH_RUN, run;
        uint32_t seq = 0;
        err = publish_run(q, msgs + d, k, now, ids ? ids + d : NULL, &run, &seq);
        if (d == 0)
            low = seq;
        d += run;
    }
    if (d) /* W1 in wait_wake_n orders every enqueue of the batch before its look at waiters;
            * one sleeper woken per message, as d single publishes would */
        wait_wake_n(&q->seg.hdr->ready_futex, &q->seg.hdr->ready_waiters, d);
    if (done)
        *done = d;
    /* SYNC: one flush from the first record's file covers the batch; also when an error stopped
     * it, for the messages published before: its -EIO says they may not survive a crash */
    if (d && sync) {
        int s = wal_sync(q->wal, low, from);
        if (s)
            err = s;
    }
    return err;
}
