/*
 * consume.c - receive, ack, nack, extend, and the consumer's life cycle.
 *
 * Receive: take an index off the ready ring; C1: CAS its slot READY(g) -> INFLIGHT(self, g+1)
 * with acquire (pairs with the producer's P1); write attempt and the ack deadline. An index
 * whose slot is not READY (a stale or duplicate entry) is dropped. Ack: A1: CAS
 * INFLIGHT(self, g) -> FREE(g+1), seq_cst (its release: our reads of the payload are done
 * before a producer's claim, which acquires, reuses the slot), then enqueue it on the free ring
 * unless the slot before it is FREE (F3: a producer's cursor reaches it from there;
 * docs/DESIGN.md "The free slots"). Every
 * CAS expects the exact word of the delivery (token gen), so a delivery that maintenance took
 * back (its gen moved on) fails with -ESTALE: that is the fence.
 * Crash windows: killed after the dequeue and before C1, the slot stays READY in no ring: an
 * orphan that maintenance re-enqueues; killed while INFLIGHT, maintenance reclaims the slot
 * from the dead owner; killed after A1 and before the enqueue, the slot is a FREE orphan (or,
 * after a FREE slot, reached from that one).
 *
 * A consumer receives in one group (shmq_consumer_open_group; docs/DESIGN.md, "Consumer
 * groups"): every step above works on its group's cell of the slot (group 0's cell is the slot
 * itself) and its group's rings; the payload is the slot's. In a queue with groups a new message
 * is not on a ready ring: after its group's ring (redeliveries, repairs) a receive reads the
 * fan-out ring with its group's cursor (claim_fanned; docs/DESIGN.md, "The fan-out ring"). An ack of group g >= 1 frees the
 * cell, and the slot once no group holds it (cell_finish). Only group 0's transitions are
 * logged so far (the log does not carry groups yet: DESIGN, status).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "crashpoint.h"
#include "expire.h"
#include "groups.h"
#include "hdrblock.h"
#include "nocancel.h"
#include "queue.h"
#include "registry.h"
#include "settings.h"
#include "slot.h"
#include "slotmove.h"
#include "wait.h"

#define COOP_PERIOD_NS (250ull * 1000000ull)
#define COOP_LEASE_MS 1000u
/* a blocked receive reads the heartbeat timeout again every this many sleeps (K4) */
#define HB_REREAD_SLEEPS 4u

static struct proc_entry *c_self(const shmq_consumer_t *c)
{
    return c->entry;
}

static bool fenced(const shmq_consumer_t *c)
{
    /* acquire: if maintenance fenced us, see that before touching slots */
    return atomic_load_explicit(&c_self(c)->word, memory_order_acquire) != c->self_word;
}

/* With no watchdog holding the lease, maintain the queue ourselves now and then. */
static void cooperate(shmq_consumer_t *c, uint64_t now)
{
    if (now < c->next_coop_ns)
        return;
    c->next_coop_ns = now + COOP_PERIOD_NS;
    shmq_maintain_if_unwatched(c->q, COOP_LEASE_MS);
}

/* now: the call's one reading of the coarse clock. g: the consumer's group, passed as a
 * constant 0 for group 0 (claim_ready_slot), so the one-group path is compiled without the
 * groups' branches. */
/* A claim (C1) made, not yet delivered: its index, slot, group cell and INFLIGHT word. */
struct claimed {
    uint32_t idx;
    struct slot *sl, *cl;
    uint64_t mine;
};

/* C1 on index idx, just taken off group g's ready ring: true and *k if we hold it now, false
 * for a stale or duplicate entry or a lost race (nothing to deliver). */
static inline __attribute__((always_inline)) bool claim_c1(shmq_consumer_t *c, uint32_t g,
                                                           uint32_t idx, struct claimed *k)
{
    shmq_t *q = c->q;
    struct slot *sl = segment_slot(&q->seg, idx);
    if (!sl)
        return false; /* garbage from shm: drop it */
    struct slot *cl = g ? segment_cell(&q->seg, g, idx) : sl; /* our group's cell */
    uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
    if (sw_state(w) != SLOT_READY)
        return false; /* stale or duplicate entry */
    uint64_t mine = sw_next(w, SLOT_INFLIGHT, c->self);
    /* C1 (acquire): pairs with P1 (commit) and with the release of whoever made it READY;
     * seq_cst (the same instruction on x86) for E5 in claims_hold() */
    if (!atomic_compare_exchange_strong_explicit(&cl->state, &w, mine, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return false;
    CRASH_POINT(receive_after_claim);
    *k = (struct claimed){idx, sl, cl, mine};
    return true;
}

/* After claims ks[0..n) (C1 each, all before this call): 0 if they stand, else the error
 * (-ESTALE, -EIDRM) with every one of them given back READY. One check covers them all: each
 * claim is sequenced before it, as a single receive's one claim is. */
static inline __attribute__((always_inline)) int claims_hold(shmq_consumer_t *c, uint32_t g,
                                                             const struct claimed *ks, size_t n)
{
    int err = 0;
    if (fenced(c)) /* fenced between the check and the claims: give them straight back */
        err = -ESTALE;
    /* E5 (seq_cst load after the seq_cst claims): a claim after a rebuild's E3 sees the new
     * generation: this segment is no longer the queue, give the copies back undelivered. A
     * claim before E3 is a delivery before the rebuild (the rebuilt queue may deliver the
     * message again: at least once). */
    else if (!queue_gen_live_sc(c->q))
        err = -EIDRM;
    for (size_t j = 0; err && j < n; j++)
        cell_move(c->q, g, ks[j].idx, ks[j].mine, sw_next(ks[j].mine, SLOT_READY, NO_OWNER));
    return err;
}

/* The ack deadline of a delivery at now (the call's coarse clock reading), in queue ms: plus
 * the clock's lag rounded up (lag_pad_ms), so a deadline may pass a tick late, never early; the
 * ack deadline in use now (K1: relaxed, a read-mostly line). */
static inline uint64_t ack_due(const shmq_consumer_t *c, uint64_t now)
{
    return queue_ms_at(c->q, now) + c->lag_pad_ms +
           settings_ack_deadline_ms(&c->q->seg.hdr->settings);
}

/* Deliver claim k into msg (its deadline due): 0, or 1 when there is nothing to deliver (past
 * its expiry: expired; a corrupted length: dead-lettered). Counters are the caller's. */
static inline __attribute__((always_inline)) int deliver(shmq_consumer_t *c, shmq_msg_t *msg,
                                                         uint64_t now, uint64_t due, uint32_t g,
                                                         const struct claimed *k)
{
    shmq_t *q = c->q;
    struct slot *sl = k->sl, *cl = k->cl;
    /* X1: past its expiry it is never delivered (expire.h); a queue without a TTL stores
     * EXPIRE_NEVER: one compare against the try's clock reading either way */
    if (now >= slot_expire(sl)) {
        expire_held_cell(q, g, k->idx, k->mine, q_self(q));
        return 1;
    }
    uint32_t attempt = cl->attempt + 1;
    cl->attempt = attempt;
    /* relaxed: validated by its gen tag (slot.h) */
    atomic_store_explicit(&cl->deadline, tagged_make(due, k->mine), memory_order_relaxed);
    uint32_t len = sl->len;
    if (len > q->seg.layout.max_msg_size) { /* corrupted slot: never hand it out */
        cell_dead_letter(q, g, k->idx, k->mine, SHMQ_DEAD_CORRUPT);
        return 1;
    }
    msg->id = sl->id;
    msg->data = slot_payload(sl);
    msg->len = len;
    msg->attempt = attempt;
    msg->token = g ? gtoken_make(g, k->idx, k->mine) : token_make(k->idx, k->mine);
    msg->flags = attempt > 1 ? SHMQ_MSG_REDELIVERED : 0;
    return 0;
}

/* Count n deliveries of which r redelivered (count_own: only this thread writes them), and now
 * and then (every 1024 deliveries) cooperate. */
static inline void delivered(shmq_consumer_t *c, uint32_t n, uint32_t r, uint64_t now)
{
    struct proc_entry *e = c_self(c);
    /* relaxed, a plain load and store: a tally in an entry only this thread writes */
    atomic_store_explicit(&e->counters[CNT_DELIVERED],
                          atomic_load_explicit(&e->counters[CNT_DELIVERED],
                                               memory_order_relaxed) + n,
                          memory_order_relaxed);
    if (r)
        atomic_store_explicit(&e->counters[CNT_REDELIVERED],
                              atomic_load_explicit(&e->counters[CNT_REDELIVERED],
                                                   memory_order_relaxed) + r,
                              memory_order_relaxed);
    uint32_t before = c->deliveries;
    c->deliveries = before + n;
    if ((before ^ c->deliveries) >> 10) /* crossed a multiple of 1024 */
        cooperate(c, now);
}

/* A receive in group g of a queue with groups that found g's ready ring empty: the fan-out ring
 * (docs/DESIGN.md, "The fan-out ring"): each position taken (FC1-FC2) names a slot; its cell
 * must still be pending (FC3: RESERVED under a committed slot word, for group 0 the slot word
 * READY) for the message filled at that position (FC4), else the hint is stale and the next is
 * taken. Counts its delivery itself. Out of line: a one-group queue never comes here. */
static __attribute__((noinline)) int claim_fanned(shmq_consumer_t *c, shmq_msg_t *msg,
                                                  uint64_t now, uint32_t g)
{
    shmq_t *q = c->q;
    uint32_t idx;
    uint64_t pos;
    while (fan_take(&q->seg.fan, g, &idx, &pos) == 0) {
        struct slot *sl = segment_slot(&q->seg, idx), *cl = segment_cell(&q->seg, g, idx);
        if (!sl || !cl)
            continue; /* garbage from shm: drop it */
        /* FC3 (acquire): a later message's F3 or P1 (release, after its FP0) makes FC4 fail;
         * a cell of g >= 1 must be pending, its slot word committed (read after the cell): a
         * filler stopped past the grace may fill a stale hint for a slot reused meanwhile
         * (review10), which must not let us take the next message's cell before its P1 */
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        if (!(g ? cell_pending(q, idx, w) : sw_state(w) == SLOT_READY) ||
            !fan_filled_at(&q->seg.fan, idx, pos)) /* FC4 */
            continue; /* not for g, finished already, or the slot holds a later message */
        uint64_t mine = sw_next(w, SLOT_INFLIGHT, c->self);
        /* C1 on the pending cell (seq_cst, as C1 for E5): of this, a purge, a sweep and the
         * fan-out repair exactly one moves it */
        if (!atomic_compare_exchange_strong_explicit(&cl->state, &w, mine, memory_order_seq_cst,
                                                     memory_order_relaxed))
            continue;
        CRASH_POINT(receive_after_claim);
        struct claimed k = {idx, sl, cl, mine};
        int err = claims_hold(c, g, &k, 1);
        if (err)
            return err;
        if (deliver(c, msg, now, ack_due(c, now), g, &k) == 0) {
            delivered(c, 1, msg->attempt > 1, now);
            return 0;
        }
    }
    return -EAGAIN;
}

/* now: the call's one reading of the coarse clock. g: the consumer's group, passed as a
 * constant 0 for group 0 (claim_ready_slot), so the one-group path is compiled without the
 * groups' branches. */
static inline __attribute__((always_inline)) int claim_in_group(shmq_consumer_t *c,
                                                                shmq_msg_t *msg, uint64_t now,
                                                                uint32_t g)
{
    uint64_t ticket;
    uint32_t idx;
    while (ring_dequeue(&c->q->seg.gready[g], &idx, &ticket) == 0) {
        CRASH_POINT(receive_after_dequeue);
        struct claimed k;
        if (!claim_c1(c, g, idx, &k))
            continue;
        int err = claims_hold(c, g, &k, 1);
        if (err)
            return err;
        if (deliver(c, msg, now, ack_due(c, now), g, &k) == 0) {
            delivered(c, 1, msg->attempt > 1, now);
            return 0;
        }
    }
    return g || groups_on(c->q) ? claim_fanned(c, msg, now, g) : -EAGAIN;
}

/* A receive batch's claims in group g: up to max messages into msgs, the ready ring's entries
 * taken as ranges (ring_dequeue_batch, "Batches" in ring.c), each claimed as claim_in_group
 * claims one (C1), one fence and rebuild check after a range's claims (claims_hold), then each
 * delivered. The count taken (> 0), or -EAGAIN or the error when none was. An error after some
 * were taken ends the batch with them (the next call reports it). */
static __attribute__((noinline)) int claim_batch(shmq_consumer_t *c, shmq_msg_t *msgs,
                                                 size_t max, uint64_t now, uint32_t g)
{
    shmq_t *q = c->q;
    uint32_t idx[RING_BATCH_MAX];
    struct claimed ks[RING_BATCH_MAX];
    uint64_t due = ack_due(c, now);
    size_t got = 0, n;
    uint32_t redelivered = 0;
    int err = 0;
    while (got < max) {
        size_t want = max - got < RING_BATCH_MAX ? max - got : RING_BATCH_MAX, m = 0;
        if ((n = ring_dequeue_batch(&q->seg.gready[g], idx, NULL, want)) == 0)
            break;
        CRASH_POINT(receive_after_dequeue);
        for (size_t j = 0; j < n; j++)
            m += g ? claim_c1(c, g, idx[j], &ks[m]) : claim_c1(c, 0, idx[j], &ks[m]);
        if (m && (err = claims_hold(c, g, ks, m)) != 0)
            break;
        for (size_t j = 0; j < m; j++) {
            if ((g ? deliver(c, &msgs[got], now, due, g, &ks[j])
                   : deliver(c, &msgs[got], now, due, 0, &ks[j])) == 0)
                redelivered += msgs[got++].attempt > 1;
        }
    }
    if (got)
        delivered(c, (uint32_t)got, redelivered, now);
    if (err)
        return got ? (int)got : err;
    while (got < max && groups_on(q)) { /* then the fan-out ring, one at a time */
        int r = claim_fanned(c, msgs + got, now, g);
        if (r < 0)
            return got ? (int)got : r;
        got++;
    }
    return got ? (int)got : -EAGAIN;
}

static inline __attribute__((always_inline)) int claim_ready_slot(shmq_consumer_t *c,
                                                                  shmq_msg_t *msg, uint64_t now)
{
    return c->group ? claim_in_group(c, msg, now, c->group) : claim_in_group(c, msg, now, 0);
}

/* A receive of up to max messages into msgs (shmq_receive: max 1); got so far. */
struct recv_ctx {
    shmq_consumer_t *c;
    shmq_msg_t *msgs;
    size_t max, got;
};

/* One try; the caller checked that we are not fenced. Takes what is ready, up to max: 0 once
 * one was taken (a fence or rebuild noticed after that ends the batch, and the next call
 * reports it), else claim_ready_slot's error. On an empty queue it writes no shared line but
 * our heartbeat, and that at most once per coarse tick (registry_heartbeat()): the ring's
 * check is read-only (ring.c, R3), counters count deliveries only, and cooperate() maintains
 * at most every COOP_PERIOD_NS. In line in receive() (its fast path) and try_receive(). */
static inline __attribute__((always_inline)) int receive_once(struct recv_ctx *ctx)
{
    uint64_t now = now_ns_coarse(); /* the one clock read of the try */
    registry_heartbeat_at(c_self(ctx->c), now);
    size_t got = 0; /* 0 on entry: a try that took one returns */
    int r;
    if (ctx->max > 1) { /* a batch: the ring's entries as ranges */
        r = claim_batch(ctx->c, ctx->msgs, ctx->max, now, ctx->c->group);
        got = r > 0 ? (size_t)r : 0;
    } else if ((r = claim_ready_slot(ctx->c, ctx->msgs, now)) == 0) {
        got = 1;
    }
    ctx->got = got;
    if (got)
        return 0;
    if (r == -EAGAIN)
        cooperate(ctx->c, now);
    return r;
}

/* Was the consumer's group deleted (-ENOENT)? One relaxed load, with groups only. */
static int group_gone(const shmq_consumer_t *c)
{
    if (!groups_on(c->q))
        return 0;
    const struct group_entry *e = segment_group(&c->q->seg, c->group);
    return atomic_load_explicit(&e->word, memory_order_relaxed) == c->group_word ? 0 : -ENOENT;
}

static int try_receive(void *arg)
{
    struct recv_ctx *ctx = arg;
    if (fenced(ctx->c)) /* declared dead while it slept: its entry is not its own any more */
        return -ESTALE;
    int err = group_gone(ctx->c);
    if (err)
        return err;
    return receive_once(ctx);
}

/* shmq_receive and shmq_receive_batch: block (spin, then futex) until one message is taken,
 * then take what is ready up to max in the same try. */
/* The blocking part of a receive that found nothing: sleep on the futex until a message is
 * taken or timeout_ms (not 0; -1: forever) passes. Out of line: the fast path stays small. */
static __attribute__((noinline)) int receive_wait(struct recv_ctx *ctx, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    shmq_consumer_t *c = ctx->c;
    struct seg_header *h = c->q->seg.hdr;
    for (;;) {
        /* sleep at most a third of the heartbeat timeout, so a blocked consumer stays alive;
         * read it again every HB_REREAD_SLEEPS sleeps, so a changed one is followed within the
         * grace a lowering gives (K4, settings.h) */
        uint64_t max_sleep =
            (uint64_t)settings_heartbeat_timeout_ms(&h->settings) * 1000000ull / 3 + 1;
        uint64_t until = now_ns() + HB_REREAD_SLEEPS * max_sleep;
        bool last = deadline && deadline <= until;
        int r =
            wait_until(group_ready_futex(c->q, c->group), group_ready_waiters(c->q, c->group),
                       groups_on(c->q) ? c->q->seg.fan.waiters : NULL, c_self(c), WAIT_READY, last ? deadline : until, max_sleep, try_receive, ctx);
        if (r != -ETIMEDOUT || last)
            return r;
    }
}

static int receive(shmq_consumer_t *c, shmq_msg_t *msgs, size_t max, size_t *got, int timeout_ms)
{
    if (fenced(c))
        return -ESTALE;
    if (!queue_gen_live(c->q)) /* the queue was rebuilt: this segment is no longer the queue */
        return -EIDRM;
    int r = group_gone(c);
    if (r)
        return r;
    struct recv_ctx ctx = {.c = c, .msgs = msgs, .max = max};
    r = receive_once(&ctx); /* fenced: checked just above */
    if (r == -EAGAIN && timeout_ms != 0)
        r = receive_wait(&ctx, timeout_ms);
    *got = ctx.got;
    return r;
}

int shmq_receive(shmq_consumer_t *c, shmq_msg_t *msg, int timeout_ms)
{
    size_t got;
    if (!c || !msg)
        return -EINVAL;
    return receive(c, msg, 1, &got, timeout_ms);
}

int shmq_receive_batch(shmq_consumer_t *c, shmq_msg_t *msgs, size_t max, size_t *got,
                       int timeout_ms)
{
    if (got)
        *got = 0;
    if (!c || !msgs || !got || max == 0)
        return -EINVAL;
    return receive(c, msgs, max, got, timeout_ms);
}

/* A delivery we hold: its slot index, its cell (the slot for group 0), and the INFLIGHT word
 * its token names. */
struct held {
    uint32_t idx;
    struct slot *sl, *cl;
    uint64_t w;
};

/* A group token (rare path, out of line): it must name our group; its gen's low bits must be
 * the cell's, whose full gen the expected word then takes (gcell.h). */
static __attribute__((noinline)) struct held held_group_cell(const shmq_consumer_t *c,
                                                             uint64_t token)
{
    struct held h = {.idx = gtoken_idx(token)};
    h.sl = segment_slot(&c->q->seg, h.idx);
    if (gtoken_group(token) != c->group || !h.sl)
        return (struct held){.sl = NULL};
    h.cl = segment_cell(&c->q->seg, c->group, h.idx);
    /* relaxed: only rebuilds the expected word; the CAS that uses it decides */
    uint64_t now = atomic_load_explicit(&h.cl->state, memory_order_relaxed);
    uint64_t gen = (sw_gen(now) & GTOKEN_GEN_MASK) == gtoken_gen(token)
                       ? sw_gen(now)
                       : (sw_gen(now) & ~GTOKEN_GEN_MASK) | gtoken_gen(token); /* stale */
    h.w = sw_make(SLOT_INFLIGHT, c->self, gen);
    return h;
}

/* g: the consumer's group, a constant 0 on the one-group path (ack_slot). */
static inline __attribute__((always_inline)) int held_cell(const shmq_consumer_t *c,
                                                           const shmq_msg_t *msg, struct held *h,
                                                           uint32_t g)
{
    if (!c || !msg)
        return -EINVAL;
    if (g) {
        if (!token_is_group(msg->token))
            return -EINVAL; /* a token of group 0 */
        *h = held_group_cell(c, msg->token);
        return h->sl ? 0 : -EINVAL;
    }
    /* a group token (bit 63) names no slot here: segment_slot() refuses its index */
    h->idx = token_idx(msg->token);
    h->sl = h->cl = segment_slot(&c->q->seg, h->idx);
    if (!h->sl)
        return -EINVAL;
    h->w = sw_make(SLOT_INFLIGHT, c->self, token_gen(msg->token));
    return 0;
}

#define ACK_RUN 64 /* ACK records per log reservation, freed slots per free-ring range */

/* An ack batch's slots freed by A1 and not yet on the free ring (slot_finish_deferred). */
struct freed {
    size_t n;
    uint32_t idx[ACK_RUN];
    uint64_t w[ACK_RUN];
    struct slot *sl[ACK_RUN];
};

/* The segment side of an ack: A1 on the delivery msg names. 0 and *id (its message), or
 * -ESTALE / -EINVAL. fr: NULL to enqueue a freed slot and wake (shmq_ack), else the ack
 * batch's list the slot joins: the caller enqueues them as one range and wakes free-slot
 * sleepers once for many acks (group 0's). */
static inline __attribute__((always_inline)) int ack_slot(shmq_consumer_t *c,
                                                          const shmq_msg_t *msg, uint64_t *id,
                                                          struct freed *fr, uint32_t g)
{
    struct held h;
    int err = held_cell(c, msg, &h, g);
    if (err)
        return err;
    *id = h.sl->id; /* read while we may still own it; used only if the CAS succeeds */
    /* group 0's finish compiled for group 0 (slot_finish), not for any group (cell_finish) */
    int r = g    ? cell_finish(c->q, g, h.idx, h.w)
            : fr ? slot_finish_deferred(c->q, h.idx, h.w, &fr->w[fr->n])
                 : slot_finish(c->q, h.idx, h.w);
    if (r < 0) {
        cell_let_go(c->q, g, h.idx, h.w); /* we will not read it again */
        return -ESTALE;
    }
    if (r == 1) { /* A1 freed it: onto the free ring with the batch's others */
        fr->idx[fr->n] = h.idx;
        fr->sl[fr->n++] = h.sl;
    }
    return 0;
}

/* The ack batch's freed slots onto the free ring, as one range (no wake: the batch wakes once
 * after its last, W1 in wait_wake_n then follows every enqueue). */
static void enqueue_freed(shmq_t *q, struct freed *fr)
{
    /* room for the whole range, else FREE orphans, as one ring too full leaves */
    if (fr->n && free_ring_room(q, fr->n))
        cells_enqueue_batch(&q->seg.free_ring, fr->sl, fr->idx, fr->w, fr->n, false);
    fr->n = 0;
}

/* Read in place: the slot is ours (INFLIGHT) until the ack or nack, so nobody writes its block;
 * C1's acquire made the producer's writes visible (P1 published the block with the payload). */
int shmq_msg_headers(shmq_consumer_t *c, const shmq_msg_t *msg, shmq_header_t *out, size_t max,
                     size_t *n)
{
    if (!c || !msg || !n || (!out && max))
        return -EINVAL;
    *n = 0;
    /* a group's delivery names the message's slot in its own token format (gcell.h) */
    uint32_t idx = c->group ? gtoken_idx(msg->token) : token_idx(msg->token);
    struct slot *sl = segment_slot(&c->q->seg, idx);
    if (!sl)
        return -EINVAL;
    const struct slot_hdrs *sh = slot_headers(&c->q->seg, sl);
    if (!sh)
        return 0; /* the queue carries no headers */
    uint32_t len = sh->len; /* from shm: checked before use */
    if (len > c->q->seg.layout.max_header_bytes)
        return -EBADMSG;
    return hdrs_decode(sh->bytes, len, out, max, n);
}

/* shmq_ack in group g >= 1 (out of line: the one-group path stays as it was); its ACK record
 * names the group (docs/FORMAT.md section 9). */
static __attribute__((noinline)) int ack_in_group(shmq_consumer_t *c, const shmq_msg_t *msg)
{
    uint64_t id;
    int err = ack_slot(c, msg, &id, NULL, c->group);
    if (err)
        return err;
    err = queue_log(c->q, wal_type_of(WAL_ACK, c->group), id, 0);
    count_own(c_self(c), CNT_ACKED); /* our sign of life: H1 (maintain.c) */
    return err == -EIDRM ? err : 0; /* as shmq_ack */
}

int shmq_ack(shmq_consumer_t *c, const shmq_msg_t *msg)
{
    if (c && c->group)
        return ack_in_group(c, msg);
    uint64_t id;
    int err = ack_slot(c, msg, &id, NULL, 0);
    if (err)
        return err;
    err = queue_log(c->q, WAL_ACK, id, 0);
    /* no heartbeat, no clock read: the count is our sign of life (H1, maintain.c) */
    count_own(c_self(c), CNT_ACKED);
    return err == -EIDRM ? err : 0; /* other log errors: the ack happened (a redelivery at worst) */
}

/* The ACK records of ids[0..n): -EIDRM, or 0 (other log errors: the acks happened, as in
 * shmq_ack; the failure is counted by the log). */
static int log_acks(shmq_t *q, uint32_t g, const uint64_t *ids, size_t n)
{
    struct wal_item items[ACK_RUN];
    for (size_t j = 0; j < n; j++)
        items[j] = (struct wal_item){wal_type_of(WAL_ACK, g), 0, ids[j], NULL, 0, 0};
    for (size_t at = 0; at < n;) {
        size_t wrote;
        int err = wal_append_batch(q->wal, 0, items + at, n - at, &wrote, NULL);
        if (err == -EIDRM)
            return err;
        if (err)
            return 0;
        at += wrote;
    }
    return 0;
}

int shmq_ack_batch(shmq_consumer_t *c, const shmq_msg_t *msgs, size_t n, size_t *done)
{
    if (done)
        *done = 0;
    if (!c || (!msgs && n))
        return -EINVAL;
    uint64_t ids[ACK_RUN];
    struct freed fr;
    fr.n = 0;
    size_t acked = 0, k = 0;
    int first = 0, idrm = 0;
    for (size_t i = 0; i < n; i++) {
        int err = c->group ? ack_slot(c, &msgs[i], &ids[k], NULL, c->group)
                           : ack_slot(c, &msgs[i], &ids[k], &fr, 0);
        if (err) {
            if (!first)
                first = err;
            continue;
        }
        acked++;
        if (++k == ACK_RUN) {
            enqueue_freed(c->q, &fr);
            if (c->q->wal && log_acks(c->q, c->group, ids, k) == -EIDRM)
                idrm = -EIDRM;
            k = 0;
        }
    }
    enqueue_freed(c->q, &fr);
    if (k && c->q->wal && log_acks(c->q, c->group, ids, k) == -EIDRM)
        idrm = -EIDRM;
    if (acked) /* one wake-up for the batch's freed slots, after the last (W1, wait.h): up to
                * one sleeping producer per freed slot */
        wait_wake_n(&c->q->seg.hdr->free_futex, &c->q->seg.hdr->free_waiters, acked);
    /* relaxed, a plain load and store: a tally in an entry only this thread writes (count_own) */
    struct proc_entry *e = c_self(c);
    atomic_store_explicit(&e->counters[CNT_ACKED],
                          atomic_load_explicit(&e->counters[CNT_ACKED], memory_order_relaxed) +
                              acked,
                          memory_order_relaxed); /* our sign of life: H1 (maintain.c) */
    if (done)
        *done = acked;
    return idrm ? idrm : first;
}

static uint64_t next_random(shmq_consumer_t *c)
{
    uint64_t x = c->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return c->rng = x;
}

/* The backoff policy: base * multiplier^(attempt-1), capped, with equal jitter. The three
 * settings are read one by one (K1): from two changes at once they give min(base * mult^k,
 * cap) of values someone set, a delay between the two policies' (a base above the cap: cap). */
static uint32_t backoff_ms(shmq_consumer_t *c, uint32_t attempt)
{
    struct settings_values v;
    settings_read(&c->q->seg.hdr->settings, &v);
    double d = v.backoff_base_ms * pow(v.backoff_multiplier, attempt > 0 ? attempt - 1 : 0);
    uint32_t delay = d >= v.backoff_cap_ms ? v.backoff_cap_ms : (uint32_t)d;
    if (delay < 2)
        return delay;
    return delay / 2 + (uint32_t)(next_random(c) % (delay / 2 + 1));
}

int shmq_nack(shmq_consumer_t *c, const shmq_msg_t *msg, uint32_t delay_ms)
{
    struct held h;
    int err = c ? held_cell(c, msg, &h, c->group) : -EINVAL;
    if (err)
        return err;
    shmq_t *q = c->q;
    uint32_t g = c->group, idx = h.idx;
    struct slot *sl = h.cl; /* the cell: attempt, deadline, linger are our group's */
    uint64_t w = h.w;
    if (atomic_load_explicit(&sl->state, memory_order_relaxed) != w) {
        cell_let_go(q, g, idx, w);
        return -ESTALE;
    }
    uint32_t attempt = sl->attempt;
    uint64_t id = h.sl->id;
    /* a nacked message past its expiry expires instead of coming back (the clock is read only
     * for one that has an expiry) */
    uint64_t expire = slot_expire(h.sl);
    if (expire != EXPIRE_NEVER && now_ns_coarse() >= expire) {
        err = expire_held_cell(q, g, idx, w, q_self(q));
        if (err != -ESTALE)
            count_own(c_self(c), CNT_NACKED);
        return err;
    }
    if (attempt >= settings_max_attempts(&q->seg.hdr->settings) || !group_active(q, g)) {
        err = cell_dead_letter(q, g, idx, w, SHMQ_DEAD_MAX_ATTEMPTS);
        if (!err) {
            count_own(c_self(c), CNT_NACKED);
            count_own(c_self(c), CNT_DEAD_LETTERED);
        }
        /* failed: we read no more; moved: T3, as below */
        if (err || atomic_load_explicit(&sl->linger, memory_order_relaxed) == linger_make(w))
            cell_let_go(q, g, idx, w);
        return err;
    }
    uint32_t delay = delay_ms ? delay_ms : backoff_ms(c, attempt);
    uint64_t next = sw_next(w, delay ? SLOT_DELAYED : SLOT_READY, NO_OWNER);
    uint64_t due = delay ? queue_now_ms_exact(q) + delay : 0;
    if (delay) { /* the tag names the DELAYED word, so it counts only once we reach it */
        atomic_store_explicit(&sl->deadline, tagged_make(due, next), memory_order_relaxed);
        sl->dead_reason = 0; /* not a parked copy (maintain.c, fire_delayed); the CAS publishes it */
    }
    CRASH_POINT(nack_before_move);
    /* release: our reads of the payload happen before the next delivery */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_release,
                                                 memory_order_relaxed)) {
        cell_let_go(q, g, idx, w);
        return -ESTALE;
    }
    /* T3: a take-back of this delivery under way set its tag and will fail; we read no more */
    if (atomic_load_explicit(&sl->linger, memory_order_relaxed) == linger_make(w))
        cell_let_go(q, g, idx, w);
    count_own(c_self(c), CNT_NACKED); /* a nack that took effect (a stale one is not counted) */
    /* keeps the attempt count and the due time across recovery */
    err = queue_log_nack(q, g, id, attempt, due);
    if (!delay) {
        CRASH_POINT(nack_after_requeue);
        queue_enqueue_cell(q, g, idx, next);
    }
    return err == -EIDRM ? err : 0;
}

int shmq_extend(shmq_consumer_t *c, const shmq_msg_t *msg, uint32_t ms)
{
    struct held h;
    int err = c ? held_cell(c, msg, &h, c->group) : -EINVAL;
    if (err)
        return err;
    struct slot *sl = h.cl;
    uint64_t w = h.w;
    if (!queue_gen_live(c->q)) /* the queue was rebuilt: this delivery is no longer its */
        return -EIDRM;
    if (atomic_load_explicit(&sl->state, memory_order_relaxed) != w)
        return -ESTALE;
    uint64_t due =
        queue_now_ms_exact(c->q) + (ms ? ms : settings_ack_deadline_ms(&c->q->seg.hdr->settings));
    /* relaxed: tagged with our word; if maintenance took the slot meanwhile the tag is stale */
    atomic_store_explicit(&sl->deadline, tagged_make(due, w), memory_order_relaxed);
    registry_heartbeat(c_self(c));
    return atomic_load_explicit(&sl->state, memory_order_relaxed) == w ? 0 : -ESTALE;
}

int shmq_consumer_open_group(shmq_t *q, const char *group, const char *name,
                             shmq_consumer_t **out)
{
    if (!q || !name || !out)
        return -EINVAL;
    uint32_t g;
    uint64_t gw;
    int err = groups_find(q, group, &g, &gw);
    if (err)
        return err;
    shmq_consumer_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->q = q;
    c->group = g;
    c->group_word = gw;
    c->lag_pad_ms = (uint32_t)((coarse_lag_ns() + 999999) / 1000000); /* lag, rounded up */
    err = registry_attach_group(&q->seg, ROLE_CONSUMER, name, g, gw, &c->self, &c->self_word);
    if (err) {
        free(c);
        return err;
    }
    c->entry = segment_proc(&q->seg, c->self); /* in range: attach gave it */
    c->rng = now_ns() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c;
    if (!c->rng)
        c->rng = 1;
    atomic_fetch_add(&q->consumers, 1);
    *out = c;
    return 0;
}

int shmq_consumer_open(shmq_t *q, const char *name, shmq_consumer_t **out)
{
    return shmq_consumer_open_group(q, NULL, name, out);
}

/* Give every message this consumer holds back to its group's ready ring (or, the group
 * deleted, end it there). */
static void return_inflight(shmq_consumer_t *c)
{
    shmq_t *q = c->q;
    uint32_t g = c->group;
    for (uint32_t i = 0; i < q->seg.layout.capacity; i++) {
        struct slot *sl = segment_cell(&q->seg, g, i);
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_relaxed);
        if (sw_state(w) != SLOT_INFLIGHT || sw_owner(w) != c->self)
            continue;
        if (group_active(q, g)) /* we read it no more */
            cell_move(q, g, i, w, sw_next(w, SLOT_READY, NO_OWNER));
        else
            cell_finish(q, g, i, w);
    }
}

/* Closing: we read none of the slots taken back from us any more. */
static void let_go_all(shmq_consumer_t *c)
{
    for (uint32_t i = 0; i < c->q->seg.layout.capacity; i++)
        cell_let_go_all(c->q, c->group, i, c->self);
}

static void *heartbeat_main(void *arg)
{
    shmq_consumer_t *c = arg;
    while (!atomic_load_explicit(&c->hb_stop, memory_order_acquire)) {
        registry_heartbeat(c_self(c));
        /* 0: a third of the heartbeat timeout in use now (read each time: K4) */
        uint32_t ms = c->hb_interval_ms
                          ? c->hb_interval_ms
                          : settings_heartbeat_timeout_ms(&c->q->seg.hdr->settings) / 3 + 1;
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int shmq_consumer_heartbeat_thread(shmq_consumer_t *c, uint32_t interval_ms)
{
    if (!c || c->hb_running)
        return -EINVAL;
    c->hb_interval_ms = interval_ms; /* 0: follow the queue's heartbeat timeout */
    atomic_store(&c->hb_stop, 0);
    int err = pthread_create(&c->hb_thread, NULL, heartbeat_main, c);
    if (err)
        return -err;
    c->hb_running = 1;
    return 0;
}

int shmq_consumer_close(shmq_consumer_t *c)
{
    if (!c)
        return -EINVAL;
    if (c->hb_running) {
        atomic_store_explicit(&c->hb_stop, 1, memory_order_release);
        NOCANCEL(pthread_join(c->hb_thread, NULL));
    }
    /* A fenced consumer's messages were taken back already, and maintenance releases its
     * entry once nothing names it; either way we read none of our slots any more. */
    /* Our deliveries go back at once, fenced or not (a fenced entry we release here could be
     * reused at once, and a slot naming it would then wait for its ack deadline). */
    bool was_fenced = fenced(c);
    return_inflight(c);
    let_go_all(c);
    if (!was_fenced) {
        registry_detach(&c->q->seg, c->self, c->self_word);
    } else {
        uint64_t w = atomic_load_explicit(&c_self(c)->word, memory_order_acquire);
        if (pw_state(w) == PROC_FENCED && w == pw_next(c->self_word, PROC_FENCED))
            registry_release_fenced(&c->q->seg, c->self, w); /* still ours: fold, free */
    }
    atomic_fetch_sub(&c->q->consumers, 1);
    free(c);
    return 0;
}
