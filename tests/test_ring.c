/*
 * test_ring.c - unit and stress tests of the SCQ ring of slot indices (src/ring.c).
 *
 * Each test is named after the property it asserts. The crash windows of ring.c are simulated
 * in one process: a dead enqueuer is a bare FAA on tail, a dead dequeuer a bare FAA on head, an
 * enqueuer that died before resetting the threshold a threshold stored back to -1. The threaded
 * tests run P producers and C consumers on orders 3 and 4 (4 or 8 entries in 8 or 16 cells) so
 * that the tickets lap the ring thousands of times under contention; every payload is a plain
 * (non-atomic) word, so TSan checks the ring's R1/R2 publication edge too.
 *
 * shmq-test-label: threaded
 */
#define _GNU_SOURCE
#include "ring.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------------- */

struct test_ring {
    struct ring r;
    void *mem;
};

static void ring_new(struct test_ring *t, uint32_t order)
{
    size_t bytes = (ring_bytes(order) + 63) & ~(size_t)63;
    t->mem = aligned_alloc(64, bytes);
    cr_assert_not_null(t->mem);
    for (size_t i = 0; i < bytes / sizeof(uint64_t); i++) /* init must not rely on zeroes */
        ((uint64_t *)t->mem)[i] = 0xa5a5a5a5a5a5a5a5ull;
    ring_bind(&t->r, t->mem, order);
    ring_init_empty(&t->r);
}

static void ring_free(struct test_ring *t) { free(t->mem); }

static uint64_t half_of(uint32_t order) /* the ring's capacity n = 2^(order-1) */
{
    return 1ull << (order - 1);
}

static uint64_t enq(struct ring *r, uint32_t idx)
{
    uint64_t ticket = UINT64_MAX;
    int rc = ring_enqueue(r, idx, &ticket);
    cr_assert_eq(rc, 0, "enqueue %u: %d", idx, rc);
    return ticket;
}

static uint32_t deq(struct ring *r, uint64_t *ticket)
{
    uint32_t idx = UINT32_MAX;
    uint64_t t;
    int rc = ring_dequeue(r, &idx, &t);
    cr_assert_eq(rc, 0, "dequeue: %d", rc);
    if (ticket)
        *ticket = t;
    return idx;
}

static void assert_empty(struct ring *r)
{
    uint32_t idx;
    uint64_t t;
    for (int i = 0; i < 3; i++) /* repeatedly: an empty ring stays empty */
        cr_assert_eq(ring_dequeue(r, &idx, &t), -EAGAIN);
}

/* Everything a dequeuer may write: head, tail, threshold and every cell. */
struct ring_image {
    uint64_t head, tail;
    int64_t threshold;
    uint64_t cells[1u << 6];
};

static void ring_snapshot(const struct ring *r, struct ring_image *im)
{
    cr_assert_leq(r->mask + 1, sizeof(im->cells) / sizeof(im->cells[0]));
    memset(im, 0, sizeof(*im));
    im->head = atomic_load(&r->shm->head);
    im->tail = atomic_load(&r->shm->tail);
    im->threshold = atomic_load(&r->shm->threshold);
    for (uint64_t i = 0; i <= r->mask; i++)
        im->cells[i] = atomic_load(&r->shm->cells[i]);
}

/* Poll an empty ring as an idle consumer does: -EAGAIN every time, and no write (R3). */
static void poll_idle(struct ring *r, int polls)
{
    struct ring_image before, after;
    ring_snapshot(r, &before);
    uint32_t idx;
    uint64_t t;
    for (int i = 0; i < polls; i++)
        cr_assert_eq(ring_dequeue(r, &idx, &t), -EAGAIN, "poll %d", i);
    ring_snapshot(r, &after);
    cr_assert_eq(after.head, before.head, "head moved: %llu -> %llu",
                 (unsigned long long)before.head, (unsigned long long)after.head);
    cr_assert_eq(after.tail, before.tail, "tail moved");
    cr_assert_eq(after.threshold, before.threshold, "threshold moved");
    cr_assert_arr_eq(after.cells, before.cells, sizeof(after.cells), "a cell changed");
}

/* ---- single-threaded ------------------------------------------------------------------- */

Test(ring, empty_dequeue_returns_eagain)
{
    struct test_ring t;
    ring_new(&t, 3);
    assert_empty(&t.r);
    /* and after something went through */
    enq(&t.r, 7);
    cr_assert_eq(deq(&t.r, NULL), 7);
    assert_empty(&t.r);
    ring_free(&t);
}

Test(ring, empty_poll_writes_nothing)
{
    /* An idle consumer polling an empty ring must not write head, tail, threshold or a cell:
     * each write pulls a line the producer's next enqueue needs back to the polling core. In
     * every state an empty ring is left in: new; just drained (threshold reset, head == tail);
     * drained across laps; and after a dequeuer passed the tickets of dead enqueuers. */
    struct test_ring t;
    ring_new(&t, 3);
    poll_idle(&t.r, 100);
    enq(&t.r, 1);
    cr_assert_eq(deq(&t.r, NULL), 1);
    poll_idle(&t.r, 100); /* more than the threshold's 3n - 1 = 11 failed dequeues */
    for (uint32_t i = 0; i < 20; i++) { /* laps */
        enq(&t.r, i);
        enq(&t.r, i + 1);
        cr_assert_eq(deq(&t.r, NULL), i);
        cr_assert_eq(deq(&t.r, NULL), i + 1);
        poll_idle(&t.r, 30);
    }
    atomic_fetch_add(&t.r.shm->tail, 3); /* enqueuers that took tickets and died */
    uint32_t idx;
    cr_assert_eq(ring_dequeue(&t.r, &idx, NULL), -EAGAIN); /* passes their tickets, once */
    cr_assert_eq(ring_head(&t.r), ring_tail(&t.r));
    poll_idle(&t.r, 30);
    enq(&t.r, 5);
    cr_assert_eq(deq(&t.r, NULL), 5);
    poll_idle(&t.r, 30);
    ring_free(&t);
}

Test(ring, fifo_single_threaded)
{
    struct test_ring t;
    ring_new(&t, 4);
    for (uint32_t i = 0; i < 5; i++)
        enq(&t.r, 100 + i);
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(deq(&t.r, NULL), 100 + i);
    assert_empty(&t.r);
    ring_free(&t);
}

Test(ring, fill_to_capacity_and_drain)
{
    for (uint32_t order = RING_MIN_ORDER; order <= 10; order++) {
        struct test_ring t;
        ring_new(&t, order);
        uint64_t n = half_of(order);
        for (int pass = 0; pass < 3; pass++) {
            for (uint64_t i = 0; i < n; i++)
                enq(&t.r, (uint32_t)(i * 3 + pass));
            for (uint64_t i = 0; i < n; i++)
                cr_assert_eq(deq(&t.r, NULL), i * 3 + pass, "order %u pass %d i %lu", order, pass,
                             (unsigned long)i);
            assert_empty(&t.r);
        }
        ring_free(&t);
    }
}

Test(ring, largest_index_round_trips)
{
    struct test_ring t;
    ring_new(&t, 3);
    enq(&t.r, 0);
    enq(&t.r, RING_INDEX_MAX);
    cr_assert_eq(deq(&t.r, NULL), 0);
    cr_assert_eq(deq(&t.r, NULL), RING_INDEX_MAX);
    assert_empty(&t.r);
    ring_free(&t);
}

Test(ring, out_of_range_index_is_rejected)
{
    struct test_ring t;
    ring_new(&t, 3);
    uint64_t ticket;
    cr_assert_eq(ring_enqueue(&t.r, RING_INDEX_MAX + 1, &ticket), -EINVAL); /* BOT */
    cr_assert_eq(ring_enqueue(&t.r, UINT32_MAX, &ticket), -EINVAL);
    assert_empty(&t.r);
    uint64_t tk = enq(&t.r, 5);
    cr_assert_not(ring_holds(&t.r, tk, RING_INDEX_MAX + 1));
    cr_assert_not(ring_clear(&t.r, tk, RING_INDEX_MAX + 1));
    cr_assert_eq(deq(&t.r, NULL), 5);
    cr_assert_not(ring_holds(&t.r, tk, RING_INDEX_MAX + 1), "BOT must not match an empty cell");
    cr_assert_not(ring_clear(&t.r, tk, RING_INDEX_MAX + 1));
    ring_free(&t);
}

Test(ring, wrap_around_many_laps_keeps_fifo)
{
    for (uint32_t order = 3; order <= 5; order++) {
        struct test_ring t;
        ring_new(&t, order);
        uint64_t n = half_of(order), cells = 1ull << order, next_in = 0, next_out = 0;
        /* vary the fill level so entries straddle the lap boundary at every offset */
        for (uint64_t step = 0; step < 5000; step++) {
            uint64_t k = 1 + step % n;
            for (uint64_t i = 0; i < k; i++)
                enq(&t.r, (uint32_t)(next_in++ % (RING_INDEX_MAX + 1)));
            uint64_t m = 1 + (step * 7) % k;
            for (uint64_t i = 0; i < m; i++)
                cr_assert_eq(deq(&t.r, NULL), next_out++ % (RING_INDEX_MAX + 1));
            while (next_out < next_in && next_in - next_out >= n) /* keep room */
                cr_assert_eq(deq(&t.r, NULL), next_out++ % (RING_INDEX_MAX + 1));
        }
        while (next_out < next_in)
            cr_assert_eq(deq(&t.r, NULL), next_out++ % (RING_INDEX_MAX + 1));
        assert_empty(&t.r);
        cr_assert_gt(ring_tail(&t.r) / cells, 1000, "only %lu laps",
                     (unsigned long)(ring_tail(&t.r) / cells));
        ring_free(&t);
    }
}

Test(ring, cycles_wrap_modulo_2_40)
{
    /* Start where the tickets' cycle is 2^40: it reads as 0 in a cell, and the fresh cells hold
     * cycle 2^40-1. FIFO must hold across that wrap and the laps after it. */
    const uint32_t order = 3;
    struct test_ring t;
    ring_new(&t, order);
    uint64_t start = 1ull << (40 + order);
    atomic_store(&t.r.shm->head, start);
    atomic_store(&t.r.shm->tail, start);
    uint64_t prev = start - 1;
    for (uint32_t lap = 0; lap < 100; lap++) {
        uint64_t tk[4];
        for (uint32_t i = 0; i < 4; i++) {
            tk[i] = enq(&t.r, lap * 4 + i);
            cr_assert(ticket_before(prev, tk[i]));
            prev = tk[i];
            cr_assert(ring_holds(&t.r, tk[i], lap * 4 + i));
        }
        for (uint32_t i = 0; i < 4; i++) {
            uint64_t got;
            cr_assert_eq(deq(&t.r, &got), lap * 4 + i);
            cr_assert_eq(got, tk[i]);
        }
        assert_empty(&t.r);
    }
    ring_free(&t);
}

Test(ring, tickets_returned_are_increasing)
{
    struct test_ring t;
    ring_new(&t, 3);
    uint64_t last_enq = 0, last_deq = 0;
    bool first = true;
    for (uint32_t round = 0; round < 200; round++) {
        uint64_t tks[3];
        for (uint32_t i = 0; i < 3; i++) {
            tks[i] = enq(&t.r, i);
            cr_assert(first || ticket_before(last_enq, tks[i]), "enqueue ticket went back");
            last_enq = tks[i];
        }
        for (uint32_t i = 0; i < 3; i++) {
            uint64_t got;
            cr_assert_eq(deq(&t.r, &got), i);
            cr_assert(first || ticket_before(last_deq, got), "dequeue ticket went back");
            cr_assert_eq(got, tks[i], "an entry is dequeued at the ticket it was enqueued at");
            last_deq = got;
            first = false;
        }
        if (round % 3 == 0)
            assert_empty(&t.r); /* empty dequeues burn tickets; numbers still only grow */
    }
    cr_assert(ticket_before(UINT64_MAX, 0), "ticket_before is wrap-safe");
    cr_assert_not(ticket_before(0, UINT64_MAX));
    ring_free(&t);
}

Test(ring, null_ticket_pointers_are_allowed)
{
    struct test_ring t;
    ring_new(&t, 3);
    uint32_t idx;
    cr_assert_eq(ring_enqueue(&t.r, 9, NULL), 0);
    cr_assert_eq(ring_dequeue(&t.r, &idx, NULL), 0);
    cr_assert_eq(idx, 9);
    ring_free(&t);
}

Test(ring, overfull_ring_reports_enospc_and_recovers)
{
    /* A broken invariant (more than n entries) must end in -ENOSPC, not a hang. */
    const uint32_t order = 3;
    struct test_ring t;
    ring_new(&t, order);
    uint64_t cells = 1ull << order;
    for (uint32_t i = 0; i < cells; i++)
        enq(&t.r, i);
    uint64_t ticket;
    cr_assert_eq(ring_enqueue(&t.r, 99, &ticket), -ENOSPC);
    for (uint32_t i = 0; i < cells; i++)
        cr_assert_eq(deq(&t.r, NULL), i);
    assert_empty(&t.r);
    enq(&t.r, 42);
    cr_assert_eq(deq(&t.r, NULL), 42);
    assert_empty(&t.r);
    ring_free(&t);
}

Test(ring, empty_dequeue_pulls_tail_up_to_head)
{
    /* catchup: dequeuers that overtook tail move it up, so the next enqueue wastes no ticket */
    struct test_ring t;
    ring_new(&t, 3);
    enq(&t.r, 1);
    cr_assert_eq(deq(&t.r, NULL), 1);
    for (int i = 0; i < 5; i++) {
        uint32_t idx;
        cr_assert_eq(ring_dequeue(&t.r, &idx, NULL), -EAGAIN);
        cr_assert_eq(ring_tail(&t.r), ring_head(&t.r), "poll %d", i);
    }
    uint64_t head = ring_head(&t.r);
    cr_assert_eq(enq(&t.r, 2), head);
    ring_free(&t);
}

Test(ring, unsafe_cell_is_not_reused_behind_head)
{
    /* The safe bit. A late dequeuer sits on ticket h0 (cycle c). The dequeuer of h0 + 8 (cycle
     * c+1) finds the cell still occupied, marks it unsafe and moves on. Then the late entry is
     * consumed (here by repair). An enqueuer holding ticket h0 + 8 since before (simulated by
     * rewinding tail) must not use the cell: its dequeuer has passed, the entry would be lost. */
    const uint32_t order = 3;
    const uint64_t cells = 1ull << order;
    struct test_ring t;
    ring_new(&t, order);
    uint64_t h0 = enq(&t.r, 50);
    cr_assert_eq(atomic_fetch_add(&t.r.shm->head, 1), h0); /* the late dequeuer */
    /* enqueuers that took tickets h0+1 .. h0+8 and died: dequeuers take those tickets (an
     * empty poll with tail <= head would take none) */
    atomic_store(&t.r.shm->tail, h0 + cells + 1);
    uint32_t idx;
    for (int i = 0; i < 100 && ring_head(&t.r) != h0 + cells + 1; i++)
        cr_assert_eq(ring_dequeue(&t.r, &idx, NULL), -EAGAIN);
    cr_assert_eq(ring_head(&t.r), h0 + cells + 1);
    struct ring_cell c = ring_cell_at(&t.r, h0 & (cells - 1)); /* order 3: no remap */
    cr_assert(!c.empty && c.idx == 50 && !c.safe, "the passing dequeuer marks the cell unsafe");
    cr_assert(ring_clear(&t.r, h0, 50)); /* the late consume */
    c = ring_cell_at(&t.r, h0 & (cells - 1));
    cr_assert(c.empty && !c.safe, "consuming keeps the cell unsafe");

    atomic_store(&t.r.shm->tail, h0 + cells); /* an enqueuer that took h0+8 long ago */
    uint64_t tk = enq(&t.r, 51);
    cr_assert_neq(tk, h0 + cells, "entry placed where no dequeuer will look");
    cr_assert_eq(deq(&t.r, NULL), 51);
    assert_empty(&t.r);
    ring_free(&t);
}

Test(ring, unsafe_cell_is_reused_ahead_of_head)
{
    /* ... but an unsafe empty cell whose ticket no dequeuer has reached yet is fine to use. */
    const uint32_t order = 3;
    const uint64_t cells = 1ull << order;
    struct test_ring t;
    ring_new(&t, order);
    uint64_t h0 = enq(&t.r, 60);
    atomic_fetch_add(&t.r.shm->head, 1);   /* the late dequeuer */
    for (uint64_t i = 1; i < cells; i++) { /* tickets h0+1 .. h0+7, one entry at a time */
        cr_assert_eq(enq(&t.r, (uint32_t)i), h0 + i);
        cr_assert_eq(deq(&t.r, NULL), i);
    }
    /* ticket h0+8 meets the occupied cell: the enqueuer skips it, its dequeuer marks it unsafe */
    cr_assert_eq(enq(&t.r, (uint32_t)cells), h0 + cells + 1);
    cr_assert_eq(deq(&t.r, NULL), cells, "the entry skipped past the occupied cell");
    cr_assert_not(ring_cell_at(&t.r, h0 & (cells - 1)).safe);
    cr_assert(ring_clear(&t.r, h0, 60));
    /* with head <= its ticket, an enqueuer of a later lap may take the unsafe cell */
    uint64_t head = ring_head(&t.r), target = h0 + 2 * cells;
    cr_assert(!ticket_before(target, head));
    atomic_store(&t.r.shm->tail, target);
    atomic_store(&t.r.shm->head, target);
    cr_assert_eq(enq(&t.r, 61), target);
    cr_assert_eq(deq(&t.r, NULL), 61);
    ring_free(&t);
}

/* ---- ring_holds / ring_clear ----------------------------------------------------------- */

Test(ring, holds_is_true_after_enqueue_and_false_after_dequeue)
{
    struct test_ring t;
    ring_new(&t, 3);
    for (uint32_t lap = 0; lap < 20; lap++) {
        uint64_t a = enq(&t.r, 11), b = enq(&t.r, 12);
        cr_assert(ring_holds(&t.r, a, 11));
        cr_assert(ring_holds(&t.r, b, 12));
        cr_assert_not(ring_holds(&t.r, a, 12), "wrong index");
        cr_assert_not(ring_holds(&t.r, a + 8, 11), "same cell, next lap");
        cr_assert_eq(deq(&t.r, NULL), 11);
        cr_assert_not(ring_holds(&t.r, a, 11));
        cr_assert(ring_holds(&t.r, b, 12));
        cr_assert_eq(deq(&t.r, NULL), 12);
        cr_assert_not(ring_holds(&t.r, b, 12));
    }
    ring_free(&t);
}

Test(ring, clear_empties_an_unconsumed_cell_exactly_once_and_dequeue_skips_it)
{
    struct test_ring t;
    ring_new(&t, 3);
    for (uint32_t lap = 0; lap < 20; lap++) {
        uint64_t a = enq(&t.r, 1), b = enq(&t.r, 2), c = enq(&t.r, 3);
        cr_assert_not(ring_clear(&t.r, b, 1), "wrong index: no effect");
        cr_assert_not(ring_clear(&t.r, b + 8, 2), "wrong cycle: no effect");
        cr_assert(ring_clear(&t.r, b, 2));
        cr_assert_not(ring_clear(&t.r, b, 2), "second clear");
        cr_assert_not(ring_holds(&t.r, b, 2));
        cr_assert(ring_holds(&t.r, a, 1));
        cr_assert(ring_holds(&t.r, c, 3));
        cr_assert_eq(deq(&t.r, NULL), 1);
        uint64_t tk;
        cr_assert_eq(deq(&t.r, &tk), 3, "dequeue skips the cleared cell");
        cr_assert_eq(tk, c);
        assert_empty(&t.r);
        cr_assert_not(ring_clear(&t.r, a, 1), "clear after consume");
    }
    ring_free(&t);
}

Test(ring, clear_of_the_only_entry_leaves_the_ring_empty)
{
    struct test_ring t;
    ring_new(&t, 3);
    uint64_t a = enq(&t.r, 4);
    cr_assert(ring_clear(&t.r, a, 4));
    assert_empty(&t.r);
    enq(&t.r, 5);
    cr_assert_eq(deq(&t.r, NULL), 5);
    assert_empty(&t.r);
    ring_free(&t);
}

/* ---- batches (ring_enqueue_batch, ring_dequeue_batch) ---------------------------------- */

/* Take everything with ring_dequeue_batch of at most max a call: into out, in order; returns
 * how many. */
static size_t deq_all_batched(struct ring *r, uint32_t *out, size_t cap, size_t max)
{
    size_t n = 0, got;
    uint32_t idx[64];
    uint64_t tk[64];
    cr_assert_leq(max, 64);
    while ((got = ring_dequeue_batch(r, idx, tk, max)) > 0) {
        cr_assert_leq(got, max);
        for (size_t j = 0; j < got; j++) {
            cr_assert_lt(n, cap, "more entries than were enqueued");
            if (j)
                cr_assert(ticket_before(tk[j - 1], tk[j]), "tickets out of order");
            out[n++] = idx[j];
        }
    }
    return n;
}

Test(ring, batch_round_trips_in_order_with_consecutive_tickets)
{
    struct test_ring t;
    ring_new(&t, 6); /* 32 entries */
    uint32_t in[32], out[32];
    uint64_t tk[32];
    for (uint32_t lap = 0; lap < 50; lap++) { /* laps, with batch sizes 1..32 */
        size_t k = 1 + lap % 32;
        uint64_t tail = ring_tail(&t.r);
        for (size_t j = 0; j < k; j++)
            in[j] = (uint32_t)(lap * 100 + j);
        cr_assert_eq(ring_enqueue_batch(&t.r, in, k, tk), k);
        for (size_t j = 0; j < k; j++)
            cr_assert_eq(tk[j], tail + j, "one FAA: the range is consecutive");
        cr_assert_eq(ring_tail(&t.r), tail + k);
        size_t max = 1 + (lap * 7) % 32;
        cr_assert_eq(deq_all_batched(&t.r, out, 32, max), k);
        cr_assert_arr_eq(out, in, k * sizeof(uint32_t));
        cr_assert_eq(ring_head(&t.r), ring_tail(&t.r), "no ticket drawn past the entries");
        assert_empty(&t.r);
    }
    ring_free(&t);
}

Test(ring, batch_cell_taken_by_a_dequeuer_keeps_the_order)
{
    /* A dequeuer drew a ticket of the range before the enqueuer's R1 there and moved the cell
     * to its cycle: that entry and the ones after it go one by one after the range, so the
     * order holds, nothing is lost and the unused tickets are passed. */
    struct test_ring t;
    ring_new(&t, 4);
    for (uint32_t lap = 0; lap < 40; lap++) {
        uint64_t tail = ring_tail(&t.r), stolen = tail + lap % 5;
        _Atomic uint64_t *cells = t.r.shm->cells;
        uint64_t pos = ((stolen & 7) << t.r.spread) | ((stolen & t.r.mask) >> 3);
        uint64_t e = atomic_load(&cells[pos]);
        /* as deq_cell leaves an empty cell it passed: its cycle, safe bit kept, empty */
        atomic_store(&cells[pos], ((stolen >> t.r.order) << (RING_INDEX_BITS + 1)) |
                                      (e & (1ull << RING_INDEX_BITS)) |
                                      ((1ull << RING_INDEX_BITS) - 1));
        uint32_t in[5] = {lap, lap + 100, lap + 200, lap + 300, lap + 400}, out[8];
        uint64_t tk[5];
        cr_assert_eq(ring_enqueue_batch(&t.r, in, 5, tk), 5);
        for (size_t j = 0; j < 5; j++) {
            if (tail + j < stolen)
                cr_assert_eq(tk[j], tail + j);
            else
                cr_assert_geq(tk[j], tail + 5, "entry %zu landed at %llu inside the range", j,
                              (unsigned long long)tk[j]);
            if (j)
                cr_assert(ticket_before(tk[j - 1], tk[j]));
        }
        cr_assert_eq(deq_all_batched(&t.r, out, 8, 8), 5);
        cr_assert_arr_eq(out, in, sizeof(in));
        assert_empty(&t.r);
    }
    ring_free(&t);
}

Test(ring, batch_dequeue_draws_only_tickets_whose_entries_are_written)
{
    /* An enqueuer drew tickets and has not written them yet (a batch under way, or dead): the
     * batch dequeue takes the entries before them and leaves head there; only the single
     * dequeue it falls back to passes an unwritten ticket. */
    struct test_ring t;
    ring_new(&t, 4);
    uint32_t in[3] = {1, 2, 3}, idx[8];
    cr_assert_eq(ring_enqueue_batch(&t.r, in, 3, NULL), 3);
    uint64_t range = ring_tail(&t.r);
    atomic_fetch_add(&t.r.shm->tail, 4); /* drawn, not written */
    cr_assert_eq(ring_dequeue_batch(&t.r, idx, NULL, 8), 3);
    cr_assert_eq(idx[0], 1);
    cr_assert_eq(idx[2], 3);
    cr_assert_eq(ring_head(&t.r), range, "head ran into the range under way");
    cr_assert_eq(ring_tail(&t.r), range + 4);
    /* the range's enqueuer died: the next tries pass its tickets and find what follows */
    uint32_t more[2] = {7, 8};
    cr_assert_eq(ring_enqueue_batch(&t.r, more, 2, NULL), 2);
    uint32_t out[4];
    cr_assert_eq(deq_all_batched(&t.r, out, 4, 8), 2);
    cr_assert_eq(out[0], 7);
    cr_assert_eq(out[1], 8);
    assert_empty(&t.r);
    ring_free(&t);
}

Test(ring, batch_enqueue_after_a_threshold_left_unreset_is_found)
{
    /* Crash window (2) for a range: its R1s landed, the reset did not (threshold -1). The next
     * enqueue, single or batch, resets it, and every entry is found. */
    struct test_ring t;
    ring_new(&t, 4);
    uint32_t in[4] = {10, 11, 12, 13}, out[8];
    cr_assert_eq(ring_enqueue_batch(&t.r, in, 4, NULL), 4);
    atomic_store(&t.r.shm->threshold, -1);
    uint32_t idx;
    cr_assert_eq(ring_dequeue_batch(&t.r, &idx, NULL, 8), 0, "threshold < 0 reads empty");
    cr_assert(ring_unstrand(&t.r), "repair finds the range's entries");
    cr_assert_eq(deq_all_batched(&t.r, out, 8, 3), 4);
    cr_assert_arr_eq(out, in, sizeof(in));
    ring_free(&t);
}

/* ---- crash windows ---------------------------------------------------------------------- */

Test(ring, dead_enqueuer_blocks_nobody_and_loses_nothing)
{
    const uint32_t order = 3;
    struct test_ring t;
    ring_new(&t, order);
    uint32_t next_in = 0, next_out = 0;
    for (uint32_t lap = 0; lap < 200; lap++) {
        /* a producer took a ticket and died: in an empty ring, between entries, at the end */
        switch (lap % 4) {
        case 0: atomic_fetch_add(&t.r.shm->tail, 1); break;
        case 1:
            enq(&t.r, next_in++);
            atomic_fetch_add(&t.r.shm->tail, 1);
            enq(&t.r, next_in++);
            break;
        case 2:
            enq(&t.r, next_in++);
            atomic_fetch_add(&t.r.shm->tail, 1);
            atomic_fetch_add(&t.r.shm->tail, 1);
            break;
        default: break; /* a lap without a death */
        }
        for (int i = 0; i < 3; i++)
            enq(&t.r, next_in++);
        while (next_out < next_in)
            cr_assert_eq(deq(&t.r, NULL), next_out++);
        assert_empty(&t.r);
    }
    ring_free(&t);
}

Test(ring, dead_enqueuer_before_threshold_reset_entry_is_found_by_repair)
{
    /* Crash window (2): the producer's cell CAS landed, its threshold reset did not. */
    struct test_ring t;
    ring_new(&t, 3);
    for (int lap = 0; lap < 50; lap++) {
        poll_idle(&t.r, 3);
        if (lap % 2)
            atomic_fetch_add(&t.r.shm->tail, 1); /* and a dead ticket before it */
        uint64_t tk = enq(&t.r, 6);
        atomic_store(&t.r.shm->threshold, -1); /* undo the reset it died before */
        uint64_t got;
        uint32_t idx;
        cr_assert_eq(ring_dequeue(&t.r, &idx, &got), -EAGAIN, "hidden until repair looks");
        cr_assert(ring_unstrand(&t.r), "repair finds the stranded entry");
        cr_assert_eq(deq(&t.r, &got), 6);
        cr_assert_eq(got, tk);
    }
    ring_free(&t);
}

Test(ring, dead_dequeuer_leaves_one_cell_stuck_and_the_ring_keeps_flowing)
{
    const uint32_t order = 3;
    const uint32_t stuck_idx = RING_INDEX_MAX; /* the others count up from 0 */
    struct test_ring t;
    ring_new(&t, order);
    uint32_t next_in = 0, next_out = 0;

    /* a consumer took the ticket of stuck_idx and died before consuming it */
    enq(&t.r, 1000);
    cr_assert_eq(deq(&t.r, NULL), 1000);
    uint64_t stuck_ticket = enq(&t.r, stuck_idx);
    uint64_t h = atomic_fetch_add(&t.r.shm->head, 1);
    cr_assert_eq(h, stuck_ticket);

    /* n - 1 = 3 entries may be live beside the stuck one */
    for (uint32_t round = 0; round < 2000; round++) {
        uint32_t k = 1 + round % 3;
        for (uint32_t i = 0; i < k; i++)
            enq(&t.r, next_in++);
        while (next_out < next_in) {
            uint32_t got = deq(&t.r, NULL);
            cr_assert_neq(got, stuck_idx, "the dead dequeuer's entry was handed out");
            cr_assert_eq(got, next_out++);
        }
        assert_empty(&t.r);
        cr_assert(ring_holds(&t.r, stuck_ticket, stuck_idx));
    }
    cr_assert_gt(ring_head(&t.r) - stuck_ticket, 1000, "the ring lapped the stuck cell");

    /* repair: clear the stuck cell, then the index can go round again */
    cr_assert(ring_clear(&t.r, stuck_ticket, stuck_idx));
    cr_assert_not(ring_clear(&t.r, stuck_ticket, stuck_idx));
    cr_assert_not(ring_holds(&t.r, stuck_ticket, stuck_idx));
    for (uint32_t round = 0; round < 100; round++) {
        /* the full capacity of n = 4 is usable again */
        enq(&t.r, stuck_idx);
        for (uint32_t i = 0; i < 3; i++)
            enq(&t.r, next_in++);
        cr_assert_eq(deq(&t.r, NULL), stuck_idx);
        for (uint32_t i = 0; i < 3; i++)
            cr_assert_eq(deq(&t.r, NULL), next_out++);
        assert_empty(&t.r);
    }
    ring_free(&t);
}

Test(ring, dead_dequeuer_of_an_empty_cell_strands_at_most_one_entry_for_repair)
{
    /* A consumer took a ticket ahead of every entry and died before touching its cell. The
     * paper lets the next producer fill that (safe) cell even though head has passed it: the
     * ticket's dequeuer is presumed on its way. Nobody else will take that entry; the property
     * that matters is that the ring keeps flowing and repair can find the entry by its ticket
     * (head has passed it, ring_holds() is true), clear it and enqueue the index again. */
    struct test_ring t;
    ring_new(&t, 3);
    enq(&t.r, 1);
    cr_assert_eq(deq(&t.r, NULL), 1);    /* threshold >= 0: consumers are taking tickets */
    atomic_fetch_add(&t.r.shm->head, 1); /* the dead consumer, before loading its cell */
    uint64_t tk8 = enq(&t.r, 8);
    enq(&t.r, 9);
    bool got8 = false, got9 = false;
    uint32_t idx;
    while (ring_dequeue(&t.r, &idx, NULL) == 0) {
        cr_assert(idx == 8 || idx == 9);
        got8 |= idx == 8;
        got9 |= idx == 9;
    }
    cr_assert(got9, "the ring flows past the dead consumer's cell");
    if (!got8) {
        cr_assert(ticket_before(tk8, ring_head(&t.r)), "head passed it: an orphan for repair");
        cr_assert(ring_holds(&t.r, tk8, 8));
        cr_assert(ring_clear(&t.r, tk8, 8));
        enq(&t.r, 8);
        cr_assert_eq(deq(&t.r, NULL), 8);
    }
    assert_empty(&t.r);
    ring_free(&t);
}

/* ---- threaded MPMC stress ---------------------------------------------------------------- */

#define STRESS_MAX_IDX 8
#define STRESS_SECONDS 20 /* a loop bound far above the expected run time, even under TSan */

struct stress {
    struct test_ring tr;
    uint32_t n_idx, producers, consumers, rounds, stuck; /* stuck: a dead dequeuer's cell */
    uint32_t batch; /* > 0: ring_enqueue_batch / ring_dequeue_batch of 1..batch entries */
    _Atomic uint32_t out_of_order; /* one producer, one consumer: entries not in FIFO order */
    /* payload[i]: plain, written by the producer before R1 and read by the consumer after R2 */
    uint64_t payload[STRESS_MAX_IDX];
    _Atomic uint32_t in_ring[STRESS_MAX_IDX]; /* 1 from enqueue to dequeue: catches duplicates */
    _Atomic uint32_t done[STRESS_MAX_IDX];    /* dequeues of each index */
    _Atomic uint64_t total;
    _Atomic uint32_t enq_errors, bad_idx, duplicates, bad_payload, ticket_errors, timeouts;
    struct timespec deadline;
};

struct worker {
    struct stress *s;
    uint32_t id;
    pthread_t th;
};

static bool past(const struct timespec *d)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->tv_sec || (now.tv_sec == d->tv_sec && now.tv_nsec >= d->tv_nsec);
}

static void *producer(void *arg)
{
    struct worker *w = arg;
    struct stress *s = w->s;
    uint64_t last = 0, rng = w->id + 1;
    bool first = true;
    unsigned spins = 0;
    uint32_t idx[STRESS_MAX_IDX];
    for (uint32_t round = 0; round < s->rounds; round++) {
        for (uint32_t i = w->id; i < s->n_idx; i += s->producers) {
            /* acquire: the consumer of the last round is done with payload[i] */
            while (atomic_load_explicit(&s->done[i], memory_order_acquire) != round) {
                if ((++spins & 1023) == 0 && past(&s->deadline)) {
                    atomic_fetch_add(&s->timeouts, 1);
                    return NULL;
                }
                sched_yield();
            }
            s->payload[i] = ((uint64_t)round << 32) | (i * 2654435761u);
            atomic_store_explicit(&s->in_ring[i], 1, memory_order_relaxed);
            uint64_t ticket[STRESS_MAX_IDX];
            size_t k = 1;
            idx[0] = i;
            if (s->batch) { /* the next few indexes of this round that are ready, as one range */
                size_t want = 1 + (size_t)(rng = rng * 6364136223846793005ull + 1) % s->batch;
                for (uint32_t j = i + s->producers; k < want && j < s->n_idx; j += s->producers) {
                    if (atomic_load_explicit(&s->done[j], memory_order_acquire) != round)
                        break;
                    s->payload[j] = ((uint64_t)round << 32) | (j * 2654435761u);
                    atomic_store_explicit(&s->in_ring[j], 1, memory_order_relaxed);
                    idx[k++] = j;
                    i = j;
                }
                if (ring_enqueue_batch(&s->tr.r, idx, k, ticket) != k) {
                    atomic_fetch_add(&s->enq_errors, 1);
                    return NULL;
                }
            } else if (ring_enqueue(&s->tr.r, i, &ticket[0]) != 0) {
                atomic_fetch_add(&s->enq_errors, 1);
                return NULL;
            }
            for (size_t j = 0; j < k; j++) {
                if (!first && !ticket_before(last, ticket[j]))
                    atomic_fetch_add(&s->ticket_errors, 1);
                last = ticket[j];
                first = false;
            }
        }
    }
    return NULL;
}

/* One dequeued entry: the checks of every mode. */
static void consumed(struct stress *s, uint32_t idx, uint64_t *expect)
{
    if (idx >= s->n_idx) {
        atomic_fetch_add(&s->bad_idx, 1);
        return;
    }
    if (atomic_exchange_explicit(&s->in_ring[idx], 0, memory_order_relaxed) != 1) {
        atomic_fetch_add(&s->duplicates, 1);
        return;
    }
    if (s->producers == 1 && s->consumers == 1 && idx != (*expect)++ % s->n_idx)
        atomic_fetch_add(&s->out_of_order, 1);
    uint32_t round = atomic_load_explicit(&s->done[idx], memory_order_relaxed);
    if (s->payload[idx] != (((uint64_t)round << 32) | (idx * 2654435761u)))
        atomic_fetch_add(&s->bad_payload, 1);
    s->payload[idx] = UINT64_MAX; /* a write, so TSan sees any race with the producer */
    atomic_fetch_add(&s->total, 1);
    /* release: hands payload[idx] back to its producer */
    atomic_store_explicit(&s->done[idx], round + 1, memory_order_release);
}

static void *consumer(void *arg)
{
    struct worker *w = arg;
    struct stress *s = w->s;
    uint64_t want = (uint64_t)s->n_idx * s->rounds, expect = 0, rng = w->id + 7;
    unsigned spins = 0;
    while (atomic_load_explicit(&s->total, memory_order_relaxed) < want) {
        uint32_t idx[STRESS_MAX_IDX];
        uint64_t ticket[STRESS_MAX_IDX];
        int rc = 0;
        if (s->batch) {
            size_t max = 1 + (size_t)(rng = rng * 6364136223846793005ull + 1) % s->batch;
            size_t got = ring_dequeue_batch(&s->tr.r, idx, ticket, max);
            for (size_t j = 0; j < got; j++) {
                if (j && !ticket_before(ticket[j - 1], ticket[j]))
                    atomic_fetch_add(&s->ticket_errors, 1);
                consumed(s, idx[j], &expect);
            }
            rc = got ? 0 : -EAGAIN;
        } else {
            rc = ring_dequeue(&s->tr.r, &idx[0], &ticket[0]);
            if (rc == 0)
                consumed(s, idx[0], &expect);
        }
        if (rc == -EAGAIN) {
            if ((++spins & 255) == 0) {
                if (past(&s->deadline)) {
                    atomic_fetch_add(&s->timeouts, 1);
                    return NULL;
                }
                sched_yield();
            }
            continue;
        }
    }
    return NULL;
}

static void run_stress_batch(uint32_t order, uint32_t producers, uint32_t consumers,
                             uint32_t rounds, bool with_stuck_cell, uint32_t batch)
{
    struct stress *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->batch = batch;
    ring_new(&s->tr, order);
    s->n_idx = (uint32_t)half_of(order) - (with_stuck_cell ? 1 : 0);
    cr_assert_leq(s->n_idx, STRESS_MAX_IDX);
    s->producers = producers;
    s->consumers = consumers;
    s->rounds = rounds;
    clock_gettime(CLOCK_MONOTONIC, &s->deadline);
    s->deadline.tv_sec += STRESS_SECONDS;

    uint64_t stuck_ticket = 0;
    const uint32_t stuck_idx = 1234;
    if (with_stuck_cell) { /* a consumer took this entry's ticket and died */
        stuck_ticket = enq(&s->tr.r, stuck_idx);
        atomic_fetch_add(&s->tr.r.shm->head, 1);
    }

    struct worker w[16];
    uint32_t nw = 0;
    for (uint32_t i = 0; i < producers; i++, nw++) {
        w[nw] = (struct worker){.s = s, .id = i};
        cr_assert_eq(pthread_create(&w[nw].th, NULL, producer, &w[nw]), 0);
    }
    for (uint32_t i = 0; i < consumers; i++, nw++) {
        w[nw] = (struct worker){.s = s, .id = i};
        cr_assert_eq(pthread_create(&w[nw].th, NULL, consumer, &w[nw]), 0);
    }
    for (uint32_t i = 0; i < nw; i++)
        pthread_join(w[i].th, NULL);

    cr_expect_eq(atomic_load(&s->enq_errors), 0, "enqueue failed");
    cr_expect_eq(atomic_load(&s->bad_idx), 0, "index out of range");
    cr_expect_eq(atomic_load(&s->duplicates), 0, "index dequeued twice");
    cr_expect_eq(atomic_load(&s->bad_payload), 0, "payload not published with the index");
    cr_expect_eq(atomic_load(&s->ticket_errors), 0, "a producer's tickets went back");
    cr_expect_eq(atomic_load(&s->timeouts), 0, "lost entries: threads hit the deadline");
    cr_expect_eq(atomic_load(&s->out_of_order), 0, "one producer's entries out of order");
    cr_assert_eq(atomic_load(&s->total), (uint64_t)s->n_idx * rounds);
    for (uint32_t i = 0; i < s->n_idx; i++)
        cr_assert_eq(atomic_load(&s->done[i]), rounds, "index %u dequeued %u times, want %u", i,
                     atomic_load(&s->done[i]), rounds);
    uint32_t idx;
    uint64_t ticket;
    cr_assert_eq(ring_dequeue(&s->tr.r, &idx, &ticket), -EAGAIN, "left over entries");
    if (with_stuck_cell) {
        cr_assert(ring_holds(&s->tr.r, stuck_ticket, stuck_idx));
        cr_assert(ring_clear(&s->tr.r, stuck_ticket, stuck_idx));
        enq(&s->tr.r, stuck_idx);
        cr_assert_eq(deq(&s->tr.r, NULL), stuck_idx);
    }
    ring_free(&s->tr);
    free(s);
}

static void run_stress(uint32_t order, uint32_t producers, uint32_t consumers, uint32_t rounds,
                       bool with_stuck_cell)
{
    run_stress_batch(order, producers, consumers, rounds, with_stuck_cell, 0);
}

/* Rounds: about 20-40k ring operations per test, a few seconds under TSan on 2 cores. */
Test(ring_stress, mpmc_2p2c_order3_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress(3, 2, 2, 20000, false);
}

Test(ring_stress, mpmc_4p4c_order3_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress(3, 4, 4, 12000, false);
}

Test(ring_stress, mpmc_2p2c_order4_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress(4, 2, 2, 10000, false);
}

Test(ring_stress, mpmc_4p4c_order4_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress(4, 4, 4, 6000, false);
}

Test(ring_stress, mpmc_4p4c_order3_with_a_dead_dequeuers_cell_flows, .timeout = 60)
{
    alarm(60);
    run_stress(3, 4, 4, 12000, true);
}

/* Batches: ranges of 1..4 (order 3) or 1..8 (order 4) entries drawn with one FAA, taken by
 * batch dequeues of 1..batch, mixed with the single dequeue they fall back to; every index
 * exactly once, payloads published by the range's R1s, one producer's order kept. */
Test(ring_stress, batch_1p1c_order3_in_order_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress_batch(3, 1, 1, 20000, false, 4);
}

Test(ring_stress, batch_2p2c_order3_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress_batch(3, 2, 2, 20000, false, 4);
}

Test(ring_stress, batch_4p4c_order4_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress_batch(4, 4, 4, 6000, false, 8);
}

Test(ring_stress, batch_1p2c_order4_every_index_dequeued_exactly_once, .timeout = 60)
{
    alarm(60);
    run_stress_batch(4, 1, 2, 10000, false, 8);
}

Test(ring_stress, batch_2p2c_order3_with_a_dead_dequeuers_cell_flows, .timeout = 60)
{
    alarm(60);
    run_stress_batch(3, 2, 2, 12000, true, 3);
}
