/*
 * test_hotpath.c - what the fast path promises beyond delivering (issue 17): a consumer polling
 * an empty queue writes none of the ready ring's shared words (ring.c, R3), and the read-only
 * check does not cost a blocking receive its wake-up (wait.c, W1/W2).
 *
 * shmq-test-label: threaded
 */
#include "helpers.h" /* first: it defines _GNU_SOURCE */
#include "queue.h"

#include <pthread.h>

TestSuite(hotpath, .fini = h_cleanup, .timeout = 120);

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The words of a ring a dequeuer may write. */
struct ring_words {
    uint64_t head, tail;
    int64_t threshold;
    uint64_t cells[256];
};

static void ring_words(const struct ring *r, struct ring_words *w)
{
    cr_assert_leq(r->mask + 1, sizeof(w->cells) / sizeof(w->cells[0]));
    memset(w, 0, sizeof(*w));
    w->head = atomic_load(&r->shm->head);
    w->tail = atomic_load(&r->shm->tail);
    w->threshold = atomic_load(&r->shm->threshold);
    for (uint64_t i = 0; i <= r->mask; i++)
        w->cells[i] = atomic_load(&r->shm->cells[i]);
}

Test(hotpath, receive_polling_an_empty_queue_writes_no_ring_word)
{
    const char *name = h_qname("emptypoll");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "poller", &c), 0);
    shmq_msg_t m;
    /* a few messages through, so the ring's threshold is reset and its tickets have moved */
    for (int i = 0; i < 5; i++) {
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    struct ring_words before, after;
    ring_words(&q->seg.ready_ring, &before);
    /* far more polls than the SCQ threshold's 3n - 1 failed dequeues (n = ring cells / 2) */
    int polls = 20 * (int)(q->seg.ready_ring.mask + 1);
    for (int i = 0; i < polls; i++)
        h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    ring_words(&q->seg.ready_ring, &after);
    cr_expect_eq(after.head, before.head, "head %llu -> %llu after %d empty polls",
                 (unsigned long long)before.head, (unsigned long long)after.head, polls);
    cr_expect_eq(after.tail, before.tail, "tail %llu -> %llu", (unsigned long long)before.tail,
                 (unsigned long long)after.tail);
    cr_expect_eq(after.threshold, before.threshold, "threshold %lld -> %lld",
                 (long long)before.threshold, (long long)after.threshold);
    cr_expect_arr_eq(after.cells, before.cells, sizeof(after.cells), "a cell was written");
    /* and the queue still works */
    h_assert_rc(shmq_publish(q, "y", 1, NULL), 0);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.len, 1);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/*
 * Ping-pong with a blocking receive: each publish comes a random short while after the
 * consumer asked for the next message, so over many rounds some land while the consumer moves
 * from spinning to sleeping (its last try after W2, which is the read-only check when the ring
 * is empty). A missed wake-up would sleep until the bounded sleep ends: a third of the
 * heartbeat timeout, here 40 s, far beyond the receive's own 20 s timeout.
 */
#define PINGPONG_ROUNDS 3000

struct pingpong {
    shmq_t *q;
    shmq_consumer_t *c;
    _Atomic uint32_t asked; /* rounds the consumer has started a receive for */
    _Atomic int failed_rc;  /* first receive error */
    _Atomic uint32_t failed_round;
    _Atomic uint64_t slowest_ms;
};

static void *pingpong_consumer(void *arg)
{
    struct pingpong *p = arg;
    for (uint32_t i = 0; i < PINGPONG_ROUNDS; i++) {
        shmq_msg_t m;
        atomic_store(&p->asked, i + 1);
        int64_t t0 = h_now_ms();
        int rc = shmq_receive(p->c, &m, 20000);
        uint64_t dt = (uint64_t)(h_now_ms() - t0);
        if (dt > atomic_load(&p->slowest_ms))
            atomic_store(&p->slowest_ms, dt);
        if (rc == 0)
            rc = shmq_ack(p->c, &m);
        if (rc != 0) {
            atomic_store(&p->failed_round, i);
            atomic_store(&p->failed_rc, rc);
            return NULL;
        }
    }
    return NULL;
}

Test(hotpath, blocking_receive_is_woken_whenever_the_publish_lands)
{
    const char *name = h_qname("pingpong");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.heartbeat_timeout_ms = 120000;
    cfg.durability = SHMQ_DURABILITY_NONE;
    struct pingpong p = {0};
    h_assert_rc(shmq_create(name, &cfg, &p.q), 0);
    h_assert_rc(shmq_consumer_open(p.q, "sleeper", &p.c), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, pingpong_consumer, &p), 0);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (uint32_t i = 0; i < PINGPONG_ROUNDS && !atomic_load(&p.failed_rc); i++) {
        int64_t end = h_now_ms() + 30000;
        while (atomic_load(&p.asked) <= i && !atomic_load(&p.failed_rc) && h_now_ms() < end)
            sched_yield();
        cr_assert_gt(atomic_load(&p.asked), i, "consumer stuck before round %u", i);
        /* 0 .. 400 us: some rounds land in the consumer's spin (2000 tries), some at its move
         * to sleep, some after it */
        uint64_t until = now_ns() + h_rand(&seed) % 400000;
        while (now_ns() < until)
            ;
        h_assert_rc(shmq_publish(p.q, "ping", 4, NULL), 0);
    }
    pthread_join(th, NULL);
    cr_expect_eq(atomic_load(&p.failed_rc), 0, "receive of round %u returned %d",
                 atomic_load(&p.failed_round), atomic_load(&p.failed_rc));
    cr_expect_lt(atomic_load(&p.slowest_ms), 10000, "a receive took %llu ms: a lost wake-up",
                 (unsigned long long)atomic_load(&p.slowest_ms));
    h_assert_rc(shmq_consumer_close(p.c), 0);
    h_assert_rc(shmq_close(p.q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* H1 (maintain.c, note_progress): an ack reads no clock and stores no heartbeat; the pass that
 * sees the consumer's counts moved refreshes the heartbeat for it. A consumer that handles a
 * batch one message at a time, acking each, for far longer than 3 x the heartbeat timeout must
 * not be fenced while it acks; once it stops, it is fenced as before. Each pass follows an ack,
 * so a slow machine changes nothing: every pass sees progress. */
Test(hotpath, acks_alone_keep_a_consumer_alive)
{
    const char *name = h_qname("ackalive");
    shmq_config_t cfg = h_small_config(64, 64, 8);
    cfg.heartbeat_timeout_ms = 100; /* hung after 300 ms without a sign of life (not stopped) */
    cfg.ack_deadline_ms = 600000;
    shmq_t *q, *q2;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_open(name, &q2), 0); /* the maintainer's handle */
    h_assert_rc(shmq_consumer_open(q, "batcher", &c), 0);
    enum { N = 30 };
    for (int i = 0; i < N; i++)
        h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m[N];
    size_t got = 0;
    h_assert_rc(shmq_receive_batch(c, m, N, &got, 0), 0); /* its last heartbeat */
    cr_assert_eq(got, N);
    uint64_t t0 = now_ns();
    for (int i = 0; i < N; i++) {
        h_sleep_ms(40); /* 1.2 s in all: 4 x the 300 ms a silent consumer gets */
        h_assert_rc(shmq_ack(c, &m[i]), 0);
        shmq_maint_report_t rep;
        h_assert_rc(shmq_maintain(q2, &rep), 0);
        cr_assert_eq(rep.procs_hung, 0, "fenced while acking, after %d acks, %.0f ms", i + 1,
                     (double)(now_ns() - t0) / 1e6);
    }
    cr_assert_gt(now_ns() - t0, 3ull * 300 * 1000000ull, "the acks took less than 3 x 300 ms");
    /* it stops: no receive, no ack; fenced once its heartbeat (the last pass's) is old */
    bool fenced = false;
    for (int i = 0; i < 30000 / 20 && !fenced; i++) {
        h_sleep_ms(20);
        shmq_maint_report_t rep;
        h_assert_rc(shmq_maintain(q2, &rep), 0);
        fenced = rep.procs_hung == 1;
    }
    cr_assert(fenced, "a consumer that stopped acking was never fenced");
    shmq_msg_t x;
    h_assert_rc(shmq_receive(c, &x, 0), -ESTALE);
    shmq_consumer_close(c);
    shmq_close(q2);
    shmq_close(q);
}

/*
 * The free slots (docs/DESIGN.md, "The free slots"): a producer claims the slot at its handle's
 * cursor (or one of the few after it), an ack that frees a slot after a FREE one puts it on no
 * ring (F3), and one after a slot in use puts it on the free ring. These tests fill a queue of
 * FS_CAP slots (or f.cap) from one handle, so the handle's cursor is back where it started and
 * message i (0-based, in publish order) sits in slot cursor + i.
 */
#define FS_CAP 64u

struct fs {
    const char *name;
    uint32_t cap; /* 0: FS_CAP */
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t *m;
    uint32_t c0; /* the producer's cursor once full: message i is in slot c0 + i */
};

static uint32_t fs_slot_of(shmq_t *q, const shmq_msg_t *m)
{
    const struct seg_layout *l = &q->seg.layout;
    uintptr_t first = (uintptr_t)q->seg.base + l->slots_off + SLOT_HEADER_SIZE;
    return (uint32_t)(((uintptr_t)m->data - first) / l->slot_stride);
}

static shmq_config_t fs_config(uint32_t cap)
{
    shmq_config_t cfg = h_small_config(cap, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.ack_deadline_ms = 600000;
    cfg.heartbeat_timeout_ms = 60000;
    return cfg;
}

/* Create the queue, fill it (FS_CAP messages "0".."63") and, with receive, take them all. */
static void fs_fill(struct fs *f, const char *tag, bool receive)
{
    if (!f->cap)
        f->cap = FS_CAP;
    f->m = calloc(f->cap, sizeof(*f->m));
    cr_assert(f->m);
    shmq_config_t cfg = fs_config(f->cap);
    if (!f->name)
        f->name = h_qname(tag);
    h_assert_rc(shmq_create(f->name, &cfg, &f->q), 0);
    for (uint32_t i = 0; i < f->cap; i++) {
        char b[12];
        int n = snprintf(b, sizeof b, "%u", i);
        h_assert_rc(shmq_publish(f->q, b, (size_t)n, NULL), 0);
    }
    f->c0 = atomic_load(&f->q->cursor);
    h_assert_rc(shmq_publish(f->q, "x", 1, NULL), -EAGAIN); /* the cursor moves on by 8 */
    if (!receive)
        return;
    h_assert_rc(shmq_consumer_open(f->q, "fs", &f->c), 0);
    for (uint32_t i = 0; i < f->cap; i++) {
        h_assert_rc(shmq_receive(f->c, &f->m[i], 0), 0);
        cr_assert_eq(fs_slot_of(f->q, &f->m[i]), (f->c0 + i) % f->cap,
                     "message %u in slot %u, cursor %u", i, fs_slot_of(f->q, &f->m[i]), f->c0);
    }
}

static void fs_done(struct fs *f)
{
    if (f->c)
        h_assert_rc(shmq_consumer_close(f->c), 0);
    h_assert_rc(shmq_close(f->q), 0);
    h_assert_rc(shmq_unlink(f->name), 0);
    free(f->m);
}

/* Acks out of order on a full queue, far from the producer's cursor: the freed slots are found
 * at once. The first (after a slot in use) through the free ring; the second (after the first,
 * FREE then: F3 put it on no ring) because the claim from the ring moves the cursor to it. */
Test(hotpath, slots_acked_out_of_order_are_found_by_the_next_publishes)
{
    struct fs f = {0};
    fs_fill(&f, "fsorder", true);
    h_assert_rc(shmq_ack(f.c, &f.m[30]), 0);
    h_assert_rc(shmq_ack(f.c, &f.m[31]), 0);
    shmq_msg_t m;
    for (int k = 0; k < 2; k++)
        h_assert_rc(shmq_publish(f.q, "again", 5, NULL), 0);
    h_assert_rc(shmq_publish(f.q, "full", 4, NULL), -EAGAIN);
    for (int k = 0; k < 2; k++) {
        h_assert_rc(shmq_receive(f.c, &m, 0), 0);
        uint32_t want = (f.c0 + 30 + (uint32_t)k) % f.cap;
        cr_expect_eq(fs_slot_of(f.q, &m), want, "publish %d went to slot %u, not %u", k,
                     fs_slot_of(f.q, &m), want);
        h_assert_rc(shmq_ack(f.c, &m), 0);
    }
    fs_done(&f);
}

/* A run of FREE slots left at an idle producer's cursor: another producer, whose own cursor
 * and the few slots after it are in use, does not see it (-EAGAIN) until a maintenance pass
 * puts the run's first slot on the free ring; only that one (the others follow a FREE slot).
 * A blocking publish finds it without maintenance: its tries past the spin look at every slot
 * (in a queue this large, the spin's tries, 8 slots each, do not get round to it). */
static void fs_strand(struct fs *f, const char *tag, shmq_t **other)
{
    fs_fill(f, tag, true);
    for (uint32_t i = 0; i < 4; i++) /* slot c0 after one in use: on the free ring; the rest not */
        h_assert_rc(shmq_ack(f->c, &f->m[i]), 0);
    h_assert_rc(shmq_publish(f->q, "a", 1, NULL), 0); /* at its cursor: c0; the run c0+1..c0+3 */
    h_assert_rc(shmq_open(f->name, other), 0);
    atomic_store(&(*other)->cursor, (f->c0 + f->cap / 2) % f->cap); /* among slots in use */
    h_assert_rc(shmq_publish(*other, "b", 1, NULL), -EAGAIN);
}

Test(hotpath, maintenance_puts_the_first_of_a_stranded_run_of_free_slots_on_the_ring)
{
    struct fs f = {0};
    shmq_t *b;
    fs_strand(&f, "fsmaint", &b);
    shmq_maint_report_t rep;
    uint64_t requeued = 0;
    int64_t end = h_now_ms() + 30000, after = 0;
    /* passes until one requeued, then on for 3 orphan grace periods: no second one */
    while (h_now_ms() < end && (!after || h_now_ms() < after)) {
        h_assert_rc(shmq_maintain(b, &rep), 0);
        requeued += rep.orphans_requeued;
        if (requeued && !after)
            after = h_now_ms() + 300;
        usleep(10000);
    }
    cr_assert_eq(requeued, 1, "%llu slots requeued, not the run's first alone",
                 (unsigned long long)requeued);
    for (int k = 0; k < 3; k++)
        h_assert_rc(shmq_publish(b, "b", 1, NULL), 0);
    h_assert_rc(shmq_publish(b, "b", 1, NULL), -EAGAIN);
    h_assert_rc(shmq_close(b), 0);
    fs_done(&f);
}

Test(hotpath, a_blocking_publish_finds_a_stranded_free_slot)
{
    struct fs f = {.cap = 1u << 16};
    shmq_t *b;
    fs_strand(&f, "fsblock", &b);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_timed(b, "b", 1, NULL, 20000), 0);
    int64_t took = h_now_ms() - t0;
    cr_expect_lt(took, 10000, "the blocking publish took %lld ms", (long long)took);
    h_assert_rc(shmq_close(b), 0);
    fs_done(&f);
}

/* The ack_after_free window (src/crashpoint.h) for a slot freed after one in use: it is on no
 * ring and no producer's cursor is near it. Maintenance requeues it as an orphan once the
 * acker is dead, and the producer gets it. */
static const char *fs_crash_name;

static int fs_killed_acker(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "ack_after_free", 1);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(fs_crash_name, &q) || shmq_consumer_open(q, "victim", &c))
        return 10;
    shmq_msg_t m, keep;
    int kept = 0;
    for (uint32_t i = 0; i < FS_CAP; i++) {
        if (shmq_receive(c, &m, 0))
            return 11;
        if (m.len == 2 && memcmp(m.data, "20", 2) == 0) {
            keep = m;
            kept = 1;
        }
    }
    if (!kept)
        return 12;
    shmq_ack(c, &keep);
    return 13; /* not killed in its ack */
}

Test(hotpath, an_acker_killed_after_an_out_of_order_free_is_repaired)
{
    fs_crash_name = h_qname("fskill");
    pid_t k = h_fork_gated(fs_killed_acker, NULL);
    struct fs f = {.name = fs_crash_name};
    fs_fill(&f, "fskill", false);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the acker was not killed at ack_after_free (status %d)", st);
    h_assert_rc(shmq_publish(f.q, "x", 1, NULL), -EAGAIN); /* slot c0 + 20: on no ring */
    shmq_maint_report_t rep;
    uint64_t requeued = 0;
    int64_t end = h_now_ms() + 30000;
    while (h_now_ms() < end && !requeued) {
        h_assert_rc(shmq_maintain(f.q, &rep), 0);
        requeued += rep.orphans_requeued;
        usleep(10000);
    }
    cr_assert_geq(requeued, 1, "the freed slot was not requeued");
    h_assert_rc(shmq_publish(f.q, "x", 1, NULL), 0);
    fs_done(&f);
}

/* The free ring holds at most n = cells / 2 entries (ring.c: the caller's invariant, what the
 * SCQ threshold and an enqueuer's finding a cell rest on). Since the free slots left it, a
 * slot claimed at a producer's cursor leaves its ring entry behind (stale), and an ack whose
 * slot follows one in use puts the slot on the ring again: a producer that always finds its
 * next slot at its cursor never dequeues, so out-of-order acks pile entries up without bound.
 * Each round here publishes the whole queue at the cursor, then acks every second message
 * before the others (so each of those follows a slot in use). */
Test(hotpath, out_of_order_acks_never_overfill_the_free_ring)
{
    const char *name = h_qname("fsfull");
    const uint32_t cap = 8;
    shmq_config_t cfg = h_small_config(cap, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    const struct ring *r = &q->seg.free_ring;
    uint64_t cells = r->mask + 1, most = 0;
    for (int round = 0; round < 64; round++) {
        shmq_msg_t m[8];
        for (uint32_t i = 0; i < cap; i++)
            h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
        for (uint32_t i = 0; i < cap; i++)
            h_assert_rc(shmq_receive(c, &m[i], 0), 0);
        for (uint32_t i = 1; i < cap; i += 2)
            h_assert_rc(shmq_ack(c, &m[i]), 0);
        for (uint32_t i = 0; i < cap; i += 2)
            h_assert_rc(shmq_ack(c, &m[i]), 0);
        uint64_t held = 0;
        for (uint64_t p = 0; p < cells; p++)
            held += !ring_cell_at(r, p).empty;
        most = held > most ? held : most;
    }
    cr_expect_leq(most, cells / 2, "the free ring held %llu entries, more than n = %llu",
                  (unsigned long long)most, (unsigned long long)(cells / 2));
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* The free ring's room check (free_ring_room) must not shut the ring for good: tickets dead
 * enqueuers left can put tail n or more past head while the threshold is spent, and then
 * dequeuers draw nothing, so head never comes back; an ack must enqueue (and reset the
 * threshold) then, or every later free skips the ring. The state is made by hand: 4n dead
 * tickets, the threshold spent as 3n failed dequeues leave it. */
Test(hotpath, a_spent_free_ring_with_dead_tickets_takes_the_next_free)
{
    const char *name = h_qname("fsspent");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m[2];
    for (int i = 0; i < 2; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    for (int i = 0; i < 2; i++)
        h_assert_rc(shmq_receive(c, &m[i], 0), 0);
    struct ring_shm *r = q->seg.free_ring.shm;
    atomic_fetch_add(&r->tail, 2 * (q->seg.free_ring.mask + 1));
    atomic_store(&r->threshold, -1);
    uint64_t tail = atomic_load(&r->tail);
    h_assert_rc(shmq_ack(c, &m[1]), 0); /* after a slot in use: onto the free ring */
    cr_expect_neq(atomic_load(&r->tail), tail, "the ack skipped the free ring");
    cr_expect_geq(atomic_load(&r->threshold), 0, "the free ring's threshold is still spent");
    h_assert_rc(shmq_ack(c, &m[0]), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
