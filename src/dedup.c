/*
 * dedup.c - idempotent publish: a window of recent dedup keys in the segment.
 *
 * The window is a table of buckets in sets of DEDUP_WAYS (one set per key: fingerprint mod
 * sets). A bucket's word is state | owner | gen | fp_hi: EMPTY, CLAIMED (a publish of that key is
 * under way by owner) or COMMITTED (its id is final). Keys are compared by a 128-bit
 * fingerprint: its high 40 bits live in the word, so one load tells whether a bucket may hold
 * our key; the low 64 bits are written before COMMITTED.
 *
 * Publish with a key (shmq_publish_dedup() in publish.c: steps 1 and 2 are dedup_claim(), the
 * decision in step 3 is dedup_commit()):
 *   1. Look in the key's set. COMMITTED with our fingerprint and inside the window: a duplicate,
 *      answer its id. CLAIMED with our fp_hi by a live owner: -EINPROGRESS.
 *   2. Else CAS a free bucket (EMPTY, expired, claimed by an owner that is no longer ACTIVE, or
 *      the oldest COMMITTED when the set is full) to CLAIMED(self). Then look at the set again:
 *      if another bucket holds our key too (two publishers raced for different buckets), give
 *      ours back and answer as in 1. Claim-then-look on both sides (seq_cst) means at least one
 *      of two racers sees the other, and whoever sees the other backs off: never two publishes.
 *   3. Reserve a slot, write the message, record id and the slot's token in the bucket, write
 *      the PUBLISH record, then D1: CAS the bucket CLAIMED -> COMMITTED (release). This is the
 *      decision: from here the message will be published, by us (P1) or, if we die, by
 *      maintenance rolling the RESERVED slot forward (dedup_should_roll_forward).
 * A publisher killed before D1 leaves a CLAIMED bucket of a dead owner: a retry takes it over,
 * maintenance frees the slot. Killed after D1: maintenance commits the slot, and a retry finds
 * COMMITTED and answers the same id. Either way: exactly one message, and the retry's answer
 * names it.
 */
#include "dedup.h"

#include <errno.h>
#include <string.h>

#include "clock.h"
#include "crashpoint.h"
#include "queue.h"
#include "registry.h"
#include "slot.h"

enum { B_EMPTY = 0, B_CLAIMED = 1, B_COMMITTED = 2 };
#define FP_HI_BITS 40


/* Is a COMMITTED bucket of time t expired at now? The difference is signed: recovery stores a
 * key committed before the segment existed with a time before its start (0 - age, two's
 * complement, docs/FORMAT.md 6A), and a t a tick after a coarse now is not expired. */
static inline bool dedup_expired(uint64_t now, uint64_t t, uint64_t window)
{
    int64_t age = (int64_t)(now - t);
    return age > 0 && (uint64_t)age > window;
}

static uint64_t bw_make(unsigned state, uint32_t owner, uint64_t gen, uint64_t fp_hi)
{
    return (fp_hi << 24) | ((gen & 1023) << 14) | ((uint64_t)(owner & 4095) << 2) | state;
}
static unsigned bw_state(uint64_t w) { return (unsigned)(w & 3); }
static uint32_t bw_owner(uint64_t w) { return (uint32_t)((w >> 2) & 4095); }
static uint64_t bw_gen(uint64_t w) { return (w >> 14) & 1023; }
static uint64_t bw_fp(uint64_t w) { return w >> 24; }

struct fingerprint {
    uint64_t hi, lo;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static struct fingerprint fingerprint(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t a = 0xcbf29ce484222325ull ^ len, b = 0x84222325cbf29ce4ull + len;
    for (size_t i = 0; i < len; i++) {
        a = (a ^ p[i]) * 0x100000001b3ull;
        b = (b + p[i]) * 0x9e3779b97f4a7c15ull;
        b ^= b >> 29;
    }
    return (struct fingerprint){mix(a) & ((1ull << FP_HI_BITS) - 1), mix(b ^ (a << 1))};
}

static struct dedup_bucket *bucket_at(void *base, const struct seg_layout *l, uint64_t i)
{
    return (struct dedup_bucket *)((char *)base + l->dedup_off) + (i & (l->dedup_buckets - 1));
}

/* Is the claim of bucket b still its claimer's? The claimer's registry word is recorded at claim
 * time: a claimer that died or was fenced changed it (a newcomer on the same entry too). */
static bool claim_alive(const shmq_t *q, const struct dedup_bucket *b, uint64_t w)
{
    struct proc_entry *e = segment_proc(&q->seg, bw_owner(w));
    uint64_t claimer = atomic_load_explicit(&b->claimer, memory_order_acquire);
    if (!e)
        return false;
    uint64_t now = atomic_load_explicit(&e->word, memory_order_acquire);
    if (claimer == 0) /* claimed a moment ago, recorded next: alive if its entry is */
        return pw_state(now) == PROC_ACTIVE;
    return now == claimer;
}

/* What the set says about our key. */
enum verdict { V_NONE, V_DUPLICATE, V_IN_PROGRESS };

static enum verdict look(shmq_t *q, uint64_t set, const struct fingerprint *fp, uint64_t now,
                         uint64_t skip, uint64_t *id)
{
    const struct seg_layout *l = &q->seg.layout;
    for (uint32_t i = 0; i < DEDUP_WAYS; i++) {
        if (set + i == skip)
            continue;
        struct dedup_bucket *b = bucket_at(q->seg.base, l, set + i);
        /* acquire: pairs with D1: fp_lo, id and time of a COMMITTED bucket are complete */
        uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
        if (bw_state(w) == B_EMPTY || bw_fp(w) != fp->hi)
            continue;
        if (bw_state(w) == B_CLAIMED) {
            if (claim_alive(q, b, w))
                return V_IN_PROGRESS; /* never expired: a live claim is a publish under way */
            continue;
        }
        uint64_t t = atomic_load_explicit(&b->time_ms, memory_order_relaxed);
        if (dedup_expired(now, t, l->dedup_window_ms))
            continue; /* expired */
        {
            if (atomic_load_explicit(&b->fp_lo, memory_order_relaxed) != fp->lo)
                continue;
            *id = atomic_load_explicit(&b->id, memory_order_relaxed);
            /* the bucket may have been reused between the loads: trust only an unchanged word */
            if (atomic_load_explicit(&b->word, memory_order_acquire) == w)
                return V_DUPLICATE;
            continue;
        }
    }
    return V_NONE;
}

/* Pick and claim a bucket of the set for us. -EAGAIN: lost a race, look again. */
static int claim_bucket(shmq_t *q, uint64_t set, const struct fingerprint *fp, uint64_t now,
                        uint64_t *bi, uint64_t *bw)
{
    const struct seg_layout *l = &q->seg.layout;
    uint64_t victim = UINT64_MAX, victim_w = 0, oldest = UINT64_MAX;
    for (uint32_t i = 0; i < DEDUP_WAYS && victim == UINT64_MAX; i++) {
        struct dedup_bucket *b = bucket_at(q->seg.base, l, set + i);
        uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
        uint64_t t = atomic_load_explicit(&b->time_ms, memory_order_relaxed);
        uint64_t bid = atomic_load_explicit(&b->id, memory_order_relaxed);
        bool expired = bw_state(w) == B_COMMITTED && dedup_expired(now, t, l->dedup_window_ms);
        if (bw_state(w) == B_EMPTY || expired ||
            (bw_state(w) == B_CLAIMED && !claim_alive(q, b, w))) {
            victim = set + i;
            victim_w = w;
        } else if (bw_state(w) == B_COMMITTED && bid < oldest) {
            oldest = bid; /* a full set forgets its oldest key (ids grow with time) */
            victim_w = w;
            *bi = set + i;
        }
    }
    if (victim == UINT64_MAX) {
        if (oldest == UINT64_MAX)
            return -EINPROGRESS; /* every bucket is a live claim */
        victim = *bi;
    }
    struct dedup_bucket *b = bucket_at(q->seg.base, l, victim);
    uint64_t mine = bw_make(B_CLAIMED, q->self, bw_gen(victim_w) + 1, fp->hi);
    /* seq_cst: claim before looking at the set again (the race rule in the file comment) */
    if (!atomic_compare_exchange_strong(&b->word, &victim_w, mine))
        return -EAGAIN;
    /* release: whoever sees our claimer word sees the claim it belongs to */
    atomic_store_explicit(&b->claimer, q->self_word, memory_order_release);
    atomic_store_explicit(&b->time_ms, now, memory_order_relaxed);
    atomic_store_explicit(&b->fp_lo, fp->lo, memory_order_relaxed);
    atomic_store_explicit(&b->id, UINT64_MAX, memory_order_relaxed); /* not evictable yet */
    atomic_store_explicit(&b->token, 0, memory_order_relaxed);
    *bi = victim;
    *bw = mine;
    return 0;
}

static void release_bucket(shmq_t *q, uint64_t bi, uint64_t bw)
{
    struct dedup_bucket *b = bucket_at(q->seg.base, &q->seg.layout, bi);
    if (atomic_compare_exchange_strong(&b->word, &bw, bw_make(B_EMPTY, 0, bw_gen(bw) + 1, 0)))
        atomic_store_explicit(&b->claimer, 0, memory_order_relaxed);
}

int dedup_claim(shmq_t *q, const void *key, size_t key_len, uint64_t now, uint64_t *bi,
                uint64_t *bw, uint64_t *id)
{
    struct fingerprint fp = fingerprint(key, key_len);
    uint64_t set = (mix(fp.lo) % (q->seg.layout.dedup_buckets / DEDUP_WAYS)) * DEDUP_WAYS;
    uint64_t found = 0;
    for (int tries = 0;; tries++) {
        enum verdict v = look(q, set, &fp, now, UINT64_MAX, &found);
        if (v == V_DUPLICATE) {
            count(q_self(q), CNT_DEDUP_HITS);
            *id = found;
            return DEDUP_DUPLICATE;
        }
        if (v == V_IN_PROGRESS || tries > 64)
            return -EINPROGRESS;
        int err = claim_bucket(q, set, &fp, now, bi, bw);
        if (err == -EAGAIN)
            continue;
        if (err)
            return err;
        v = look(q, set, &fp, now, *bi, &found); /* did a racer claim another bucket for it? */
        if (v != V_NONE) {
            release_bucket(q, *bi, *bw);
            continue; /* answer as the other bucket says */
        }
        return 0;
    }
}

/* Called by publish.c between writing the message and its commit (P1): record and decide. */
int dedup_commit(shmq_t *q, uint64_t bi, uint64_t bw, uint64_t msg_id, uint64_t token,
                 uint64_t now_ms)
{
    struct dedup_bucket *b = bucket_at(q->seg.base, &q->seg.layout, bi);
    if (atomic_load_explicit(&b->word, memory_order_acquire) != bw)
        return -ESTALE; /* taken over (we were taken for dead): write nothing into it */
    atomic_store_explicit(&b->id, msg_id, memory_order_relaxed);
    atomic_store_explicit(&b->token, token, memory_order_relaxed);
    atomic_store_explicit(&b->time_ms, now_ms, memory_order_relaxed);
    CRASH_POINT(dedup_before_decide);
    uint64_t committed = bw_make(B_COMMITTED, bw_owner(bw), bw_gen(bw) + 1, bw_fp(bw));
    /* D1 (release): id, token, fp_lo and time are complete when COMMITTED is seen */
    if (!atomic_compare_exchange_strong_explicit(&b->word, &bw, committed, memory_order_release,
                                                 memory_order_relaxed))
        return -ESTALE; /* our claim was taken over: we were taken for dead */
    CRASH_POINT(dedup_after_decide);
    return 0;
}

void dedup_abandon(shmq_t *q, uint64_t bi, uint64_t bw) { release_bucket(q, bi, bw); }

bool dedup_should_roll_forward(struct shmq *q, uint32_t idx, struct slot *sl, uint64_t w,
                               bool owner_dead)
{
    uint32_t hint = atomic_load_explicit(&sl->dedup, memory_order_relaxed);
    const struct seg_layout *l = &q->seg.layout;
    if (!hint || !l->dedup_buckets || hint - 1 >= l->dedup_buckets)
        return false;
    struct dedup_bucket *b = bucket_at(q->seg.base, l, hint - 1);
    uint64_t bw = atomic_load_explicit(&b->word, memory_order_acquire);
    /* the bucket speaks for this reservation only if it names this slot's RESERVED word */
    if (atomic_load_explicit(&b->token, memory_order_relaxed) != token_make(idx, w))
        return false;
    if (bw_state(bw) == B_COMMITTED)
        return true;
    if (owner_dead && bw_state(bw) == B_CLAIMED && bw_owner(bw) == sw_owner(w))
        release_bucket(q, hint - 1, bw); /* died before deciding: forget the claim */
    return false;
}

void dedup_insert_committed(struct segment *s, const void *key, uint32_t key_len, uint64_t id,
                            uint64_t now_ms)
{
    const struct seg_layout *l = &s->layout;
    if (!l->dedup_buckets)
        return;
    struct fingerprint fp = fingerprint(key, key_len);
    uint64_t set = (mix(fp.lo) % (l->dedup_buckets / DEDUP_WAYS)) * DEDUP_WAYS;
    uint64_t pick = set, oldest = UINT64_MAX;
    for (uint32_t i = 0; i < DEDUP_WAYS; i++) {
        struct dedup_bucket *b = bucket_at(s->base, l, set + i);
        uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
        if (bw_state(w) == B_EMPTY ||
            (bw_fp(w) == fp.hi && atomic_load_explicit(&b->fp_lo, memory_order_relaxed) == fp.lo)) {
            pick = set + i;
            break;
        }
        uint64_t bid = atomic_load_explicit(&b->id, memory_order_relaxed);
        if (bid < oldest) {
            oldest = bid;
            pick = set + i;
        }
    }
    struct dedup_bucket *b = bucket_at(s->base, l, pick);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    atomic_store_explicit(&b->fp_lo, fp.lo, memory_order_relaxed);
    atomic_store_explicit(&b->id, id, memory_order_relaxed);
    atomic_store_explicit(&b->time_ms, now_ms, memory_order_relaxed);
    atomic_store_explicit(&b->token, 0, memory_order_relaxed);
    atomic_store_explicit(&b->claimer, 0, memory_order_relaxed);
    atomic_store_explicit(&b->word, bw_make(B_COMMITTED, 0, bw_gen(w) + 1, fp.hi),
                          memory_order_relaxed);
}
