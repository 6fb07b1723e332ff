/*
 * test_batch.c - the batch calls (shmq_publish_batch, shmq_receive_batch, shmq_ack_batch;
 * issue 17): each message of a batch keeps every guarantee of the single-message calls.
 *
 *  - order_and_ids_*: a batch longer than a run (64) is published in order with increasing
 *    ids, received in that order with those ids and payloads (durability NONE and PROCESS).
 *  - partial_on_full_queue: a batch larger than the free slots publishes a prefix: -EAGAIN,
 *    done = the free slots, ids[0..done) set, exactly msgs[0..done) delivered; the rest can be
 *    published after.
 *  - bad_message_publishes_nothing: a message too long in the middle: -EMSGSIZE, done 0, nothing
 *    queued.
 *  - receive_batch_takes_what_is_ready: fewer ready than max: all of them, no waiting (also with
 *    a timeout); empty: -EAGAIN / -ETIMEDOUT with got 0; a blocked receive_batch wakes up when a
 *    batch is published by another thread and gets at least one.
 *  - ack_batch_skips_a_stale_one: one message of five acked already: ack_batch acks the other
 *    four, returns -ESTALE with done 4; none is delivered again; a bad token alike (-EINVAL).
 *  - multiproc_exactly_once: producers publish batches of random size (retrying the rest after
 *    -EAGAIN), consumers receive and ack batches of random size, with a log of small files (runs
 *    cross file ends): every message is delivered exactly once (no process dies), with its
 *    payload.
 *  - segment_loss_restores_the_batch: after a PROCESS publish_batch returned, the segment is
 *    lost; the rebuild from the log restores every message of the batch with its id and payload,
 *    in order (the batch's records span two log files).
 *  - sync_batch_is_one_flush: a SYNC batch returns once flushed, with far fewer flushes than
 *    messages.
 *  - sync_flush_failure_wins_over_a_full_queue: a SYNC batch stopped by a full queue whose
 *    flush then fails returns -EIO with done = the published prefix (shmq.h said -EIO meant
 *    done == n: a caller trusting that dropped the rest).
 *  - killed_inside_the_records_*: a producer killed between two records of its batch's one log
 *    reservation (crash point wal_batch_after_first): the rest of the range is one hole, the
 *    written record comes back after a segment loss (a publish that never returned: at least
 *    once), or not once maintenance freed the reservations (ACK|ABORT); nothing corrupt.
 *  - a_batch_wakes_a_sleeping_consumer_per_message: four consumers asleep in a blocking receive,
 *    a batch of four: each gets one at once (one FUTEX_WAKE of 1 for the batch left three asleep
 *    for up to a third of the heartbeat timeout).
 */
#include "helpers.h"
#include "io.h"
#include "queue.h"
#include "ring.h"
#include "segment.h"

#include <pthread.h>

#ifdef SHMQ_CRASH_POINTS
#define SKIP_WITHOUT_FAULTS() \
    do {                       \
    } while (0)
#else
#define SKIP_WITHOUT_FAULTS() cr_skip_test("the library was built without SHMQ_CRASH_POINTS")
#endif

TestSuite(batch, .fini = h_cleanup, .timeout = 240);

static shmq_config_t config(uint32_t capacity, uint32_t max_msg, int durability)
{
    shmq_config_t cfg = h_small_config(capacity, max_msg, 64);
    cfg.durability = durability;
    cfg.wal_file_size = 64u << 10;
    cfg.ack_deadline_ms = 600000;
    cfg.heartbeat_timeout_ms = 60000;
    return cfg;
}

/* Message i's payload: "m<i>" then filler up to len (at least the text). */
static size_t payload(uint32_t i, char *buf, size_t len)
{
    int n = snprintf(buf, len, "m%u:", i);
    for (size_t j = (size_t)n; j < len; j++)
        buf[j] = (char)('a' + (i + j) % 26);
    return len > (size_t)n ? len : (size_t)n;
}

/* Receive exactly n messages one by one (poll, maintaining nothing) and check them against
 * payload(first + i) and ids[i], in order; then the queue is empty. */
static void expect_in_order(shmq_consumer_t *c, uint32_t first, size_t n, const uint64_t *ids,
                            const size_t *lens)
{
    for (size_t i = 0; i < n; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        char want[1024];
        size_t len = payload(first + (uint32_t)i, want, lens[i]);
        cr_assert_eq(m.id, ids[i], "message %zu: id %llu, expected %llu", i,
                     (unsigned long long)m.id, (unsigned long long)ids[i]);
        cr_assert(m.len == len && memcmp(m.data, want, len) == 0, "message %zu: wrong payload", i);
        cr_assert_eq(m.attempt, 1);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
}

static void order_and_ids(int durability)
{
    const char *name = h_qname("border");
    shmq_config_t cfg = config(256, 128, durability);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    enum { N = 150 };
    static char bufs[N][128];
    shmq_iov_t iov[N];
    size_t lens[N];
    uint64_t ids[N];
    for (uint32_t i = 0; i < N; i++) {
        lens[i] = (i * 7) % 110 + 12;
        lens[i] = payload(i, bufs[i], lens[i]);
        iov[i] = (shmq_iov_t){bufs[i], lens[i]};
    }
    size_t done = 999;
    h_assert_rc(shmq_publish_batch(q, iov, N, ids, &done), 0);
    cr_assert_eq(done, N);
    for (size_t i = 1; i < N; i++)
        cr_assert_gt(ids[i], ids[i - 1], "ids must increase: ids[%zu]=%llu, ids[%zu]=%llu", i - 1,
                     (unsigned long long)ids[i - 1], i, (unsigned long long)ids[i]);
    expect_in_order(c, 0, N, ids, lens);
    /* one more single publish: its id follows the batch's */
    uint64_t after;
    h_assert_rc(shmq_publish(q, "x", 1, &after), 0);
    cr_assert_gt(after, ids[N - 1]);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.id, after);
    h_assert_rc(shmq_ack(c, &m), 0);
    /* n == 0 is a no-op */
    h_assert_rc(shmq_publish_batch(q, iov, 0, ids, &done), 0);
    cr_assert_eq(done, 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, order_and_ids_none) { order_and_ids(SHMQ_DURABILITY_NONE); }
Test(batch, order_and_ids_process) { order_and_ids(SHMQ_DURABILITY_PROCESS); }

Test(batch, partial_on_full_queue)
{
    const char *name = h_qname("bfull");
    shmq_config_t cfg = config(8, 64, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    h_assert_rc(shmq_publish(q, "pre", 3, NULL), 0); /* one slot taken: 7 free */
    enum { N = 20 };
    char bufs[N][64];
    shmq_iov_t iov[N];
    size_t lens[N];
    uint64_t ids[N];
    memset(ids, 0, sizeof ids);
    for (uint32_t i = 0; i < N; i++) {
        lens[i] = payload(i, bufs[i], 10);
        iov[i] = (shmq_iov_t){bufs[i], lens[i]};
    }
    size_t done = 999;
    h_assert_rc(shmq_publish_batch(q, iov, N, ids, &done), -EAGAIN);
    cr_assert_eq(done, 7, "done %zu, expected the 7 free slots", done);
    for (size_t i = 0; i < N; i++)
        cr_assert((ids[i] != 0) == (i < done), "ids[%zu] = %llu with done %zu", i,
                  (unsigned long long)ids[i], done);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready, 8);
    cr_assert_eq(st.reserved, 0, "no reservation is left behind");
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert(m.len == 3 && memcmp(m.data, "pre", 3) == 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    expect_in_order(c, 0, done, ids, lens);
    /* the rest, published now, follows */
    size_t done2;
    h_assert_rc(shmq_publish_batch(q, iov + done, 8, ids + done, &done2), 0);
    cr_assert_eq(done2, 8);
    cr_assert_gt(ids[done], ids[done - 1]);
    expect_in_order(c, (uint32_t)done, 8, ids + done, lens + done);
    /* a full queue publishes nothing: -EAGAIN, done 0 */
    for (int i = 0; i < 8; i++)
        h_assert_rc(shmq_publish(q, "f", 1, NULL), 0);
    h_assert_rc(shmq_publish_batch(q, iov, 3, ids, &done), -EAGAIN);
    cr_assert_eq(done, 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, bad_message_publishes_nothing)
{
    const char *name = h_qname("bbad");
    shmq_config_t cfg = config(16, 32, SHMQ_DURABILITY_NONE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    char big[64] = {0};
    shmq_iov_t iov[3] = {{"a", 1}, {big, sizeof big}, {"c", 1}};
    size_t done = 999;
    h_assert_rc(shmq_publish_batch(q, iov, 3, NULL, &done), -EMSGSIZE);
    cr_assert_eq(done, 0);
    iov[1] = (shmq_iov_t){NULL, 5};
    h_assert_rc(shmq_publish_batch(q, iov, 3, NULL, &done), -EINVAL);
    h_assert_rc(shmq_publish_batch(q, NULL, 3, NULL, &done), -EINVAL);
    h_assert_rc(shmq_publish_batch(NULL, iov, 3, NULL, &done), -EINVAL);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready + st.reserved, 0, "nothing was queued");
    h_assert_rc(shmq_close(q), 0);
}

struct late_pub {
    shmq_t *q;
    _Atomic int go;
};

static void *late_publisher(void *arg)
{
    struct late_pub *p = arg;
    while (!atomic_load(&p->go))
        h_sleep_ms(1);
    shmq_iov_t iov[3] = {{"x0", 2}, {"x1", 2}, {"x2", 2}};
    size_t done = 0;
    int rc = shmq_publish_batch(p->q, iov, 3, NULL, &done);
    return (void *)(intptr_t)(rc == 0 && done == 3 ? 0 : 1);
}

Test(batch, receive_batch_takes_what_is_ready)
{
    const char *name = h_qname("brecv");
    shmq_config_t cfg = config(64, 32, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t msgs[32];
    size_t got = 999;
    h_assert_rc(shmq_receive_batch(c, msgs, 32, &got, 0), -EAGAIN);
    cr_assert_eq(got, 0);
    h_assert_rc(shmq_receive_batch(c, msgs, 32, &got, 30), -ETIMEDOUT);
    cr_assert_eq(got, 0);
    h_assert_rc(shmq_receive_batch(c, msgs, 0, &got, 0), -EINVAL);
    h_assert_rc(shmq_receive_batch(c, msgs, 32, NULL, 0), -EINVAL);

    uint64_t ids[5];
    shmq_iov_t iov[5] = {{"p0", 2}, {"p1", 2}, {"p2", 2}, {"p3", 2}, {"p4", 2}};
    h_assert_rc(shmq_publish_batch(q, iov, 5, ids, NULL), 0);
    /* 5 ready, max 32, a long timeout: all 5 at once, no wait for more */
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_receive_batch(c, msgs, 32, &got, 20000), 0);
    cr_assert_eq(got, 5);
    cr_assert_lt(h_now_ms() - t0, 10000, "it waited for more than what was ready");
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(msgs[i].id, ids[i]);
        cr_assert(msgs[i].len == 2 && memcmp(msgs[i].data, iov[i].data, 2) == 0);
        cr_assert_eq(msgs[i].attempt, 1);
    }
    size_t done;
    h_assert_rc(shmq_ack_batch(c, msgs, 5, &done), 0);
    cr_assert_eq(done, 5);
    /* max smaller than what is ready: max, the rest stays */
    h_assert_rc(shmq_publish_batch(q, iov, 5, ids, NULL), 0);
    h_assert_rc(shmq_receive_batch(c, msgs, 2, &got, 0), 0);
    cr_assert_eq(got, 2);
    cr_assert(msgs[0].id == ids[0] && msgs[1].id == ids[1]);
    h_assert_rc(shmq_receive_batch(c, msgs + 2, 30, &got, 0), 0);
    cr_assert_eq(got, 3);
    cr_assert(msgs[2].id == ids[2] && msgs[4].id == ids[4]);
    h_assert_rc(shmq_ack_batch(c, msgs, 5, &done), 0);

    /* blocked on an empty queue, woken by another thread's batch: at least one, then the rest */
    struct late_pub p = {.q = q};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, late_publisher, &p), 0);
    atomic_store(&p.go, 1);
    h_assert_rc(shmq_receive_batch(c, msgs, 32, &got, 30000), 0);
    cr_assert(got >= 1 && got <= 3, "got %zu", got);
    size_t total = got;
    int64_t until = h_now_ms() + 30000;
    while (total < 3 && h_now_ms() < until) {
        size_t more = 0;
        int rc = shmq_receive_batch(c, msgs + total, 32 - total, &more, 100);
        cr_assert(rc == 0 || rc == -ETIMEDOUT, "rc %d", rc);
        total += more;
    }
    cr_assert_eq(total, 3);
    for (size_t i = 0; i < 3; i++)
        cr_assert(msgs[i].len == 2 && ((const char *)msgs[i].data)[1] == (char)('0' + i));
    void *res;
    pthread_join(t, &res);
    cr_assert_eq((intptr_t)res, 0, "the late publisher failed");
    h_assert_rc(shmq_ack_batch(c, msgs, 3, &done), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, ack_batch_skips_a_stale_one)
{
    const char *name = h_qname("back");
    shmq_config_t cfg = config(16, 32, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_iov_t iov[5] = {{"a", 1}, {"b", 1}, {"c", 1}, {"d", 1}, {"e", 1}};
    h_assert_rc(shmq_publish_batch(q, iov, 5, NULL, NULL), 0);
    shmq_msg_t msgs[5];
    size_t got, done = 999;
    h_assert_rc(shmq_receive_batch(c, msgs, 5, &got, 0), 0);
    cr_assert_eq(got, 5);
    h_assert_rc(shmq_ack(c, &msgs[2]), 0); /* the middle one is acked already: stale */
    h_assert_rc(shmq_ack_batch(c, msgs, 5, &done), -ESTALE);
    cr_assert_eq(done, 4, "the other four are acked: done %zu", done);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.acked, 5);
    cr_assert_eq(st.free, 16, "every slot is free again: %u", st.free);
    cr_assert_eq(st.inflight + st.ready, 0);
    /* acked is final: all five are stale now, and nothing comes back */
    h_assert_rc(shmq_ack_batch(c, msgs, 5, &done), -ESTALE);
    cr_assert_eq(done, 0);
    h_assert_rc(shmq_maintain(q, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);

    /* a token naming no slot in the middle: -EINVAL, the others acked */
    h_assert_rc(shmq_publish_batch(q, iov, 3, NULL, NULL), 0);
    h_assert_rc(shmq_receive_batch(c, msgs, 3, &got, 0), 0);
    cr_assert_eq(got, 3);
    shmq_msg_t bad[3] = {msgs[0], msgs[1], msgs[2]};
    bad[1].token = ~0ull;
    h_assert_rc(shmq_ack_batch(c, bad, 3, &done), -EINVAL);
    cr_assert_eq(done, 2);
    h_assert_rc(shmq_ack(c, &msgs[1]), 0);
    h_assert_rc(shmq_ack_batch(c, msgs, 0, &done), 0);
    cr_assert_eq(done, 0);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.free, 16);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* ---- several processes ---- */

enum { NPROD = 2, NCONS = 2, PER_PROD = 20000, MAXB = 40 };

struct mp_world {
    char name[SHMQ_NAME_MAX + 1];
    _Atomic uint32_t seen[NPROD][PER_PROD];
    _Atomic uint32_t delivered, bad;
};

struct mp_arg {
    struct mp_world *w;
    int who;
};

static int mp_producer(void *arg)
{
    struct mp_arg *a = arg;
    shmq_t *q;
    if (shmq_open(a->w->name, &q) != 0)
        return 10;
    uint64_t rng = 0x1234567ull + (uint64_t)a->who * 7919;
    static char bufs[MAXB][32];
    shmq_iov_t iov[MAXB];
    uint64_t ids[MAXB];
    uint32_t next = 0;
    int64_t until = h_now_ms() + 120000;
    while (next < PER_PROD) {
        if (h_now_ms() > until)
            return 11;
        size_t n = 1 + h_rand(&rng) % MAXB;
        if (n > PER_PROD - next)
            n = PER_PROD - next;
        for (size_t i = 0; i < n; i++) {
            int len = snprintf(bufs[i], sizeof bufs[i], "%d:%u:", a->who, next + (uint32_t)i);
            bufs[i][len] = (char)('A' + (next + i) % 26);
            iov[i] = (shmq_iov_t){bufs[i], (size_t)len + 1};
        }
        size_t done = 0;
        int rc = shmq_publish_batch(q, iov, n, ids, &done);
        if (rc != 0 && rc != -EAGAIN)
            return 12;
        if ((rc == 0) != (done == n))
            return 13;
        for (size_t i = 1; i < done; i++)
            if (ids[i] <= ids[i - 1])
                return 14;
        next += (uint32_t)done;
        if (done == 0)
            h_sleep_ms(1); /* full: let the consumers in */
    }
    return shmq_close(q) == 0 ? 0 : 15;
}

static int mp_consumer(void *arg)
{
    struct mp_arg *a = arg;
    struct mp_world *w = a->w;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(w->name, &q) != 0 || shmq_consumer_open(q, "mp", &c) != 0)
        return 20;
    uint64_t rng = 0xabcdefull + (uint64_t)a->who * 104729;
    shmq_msg_t msgs[MAXB];
    int64_t until = h_now_ms() + 120000;
    while (atomic_load(&w->delivered) < NPROD * PER_PROD) {
        if (h_now_ms() > until)
            return 21;
        size_t max = 1 + h_rand(&rng) % MAXB, got = 0;
        int rc = shmq_receive_batch(c, msgs, max, &got, 50);
        if (rc == -ETIMEDOUT || rc == -EAGAIN)
            continue;
        if (rc != 0 || got == 0 || got > max)
            return 22;
        for (size_t i = 0; i < got; i++) {
            int p = -1;
            unsigned s = 0;
            char tail = 0;
            char text[40] = {0};
            memcpy(text, msgs[i].data, msgs[i].len < 39 ? msgs[i].len : 39);
            if (sscanf(text, "%d:%u:%c", &p, &s, &tail) != 3 || p < 0 || p >= NPROD ||
                s >= PER_PROD || tail != (char)('A' + s % 26) || msgs[i].attempt != 1) {
                atomic_fetch_add(&w->bad, 1);
                continue;
            }
            atomic_fetch_add(&w->seen[p][s], 1);
            atomic_fetch_add(&w->delivered, 1);
        }
        size_t done = 0;
        if (shmq_ack_batch(c, msgs, got, &done) != 0 || done != got)
            return 23;
    }
    return shmq_consumer_close(c) == 0 && shmq_close(q) == 0 ? 0 : 24;
}

Test(batch, multiproc_exactly_once)
{
    struct mp_world *w = h_shared_alloc(sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", h_qname("bmp"));
    shmq_config_t cfg = config(64, 32, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(w->name, &cfg, &q), 0);
    struct mp_arg args[NPROD + NCONS];
    pid_t pids[NPROD + NCONS];
    for (int i = 0; i < NPROD + NCONS; i++) {
        args[i] = (struct mp_arg){w, i < NPROD ? i : i - NPROD};
        pids[i] = h_fork(i < NPROD ? mp_producer : mp_consumer, &args[i]);
    }
    for (int i = 0; i < NPROD + NCONS; i++)
        h_assert_child_ok(pids[i], 180000, i < NPROD ? "producer" : "consumer");
    cr_assert_eq(atomic_load(&w->bad), 0, "corrupt or redelivered messages");
    for (int p = 0; p < NPROD; p++)
        for (int s = 0; s < PER_PROD; s++)
            cr_assert_eq(atomic_load(&w->seen[p][s]), 1, "message %d:%d delivered %u times", p, s,
                         atomic_load(&w->seen[p][s]));
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, NPROD * PER_PROD);
    cr_assert_eq(st.acked, NPROD * PER_PROD);
    cr_assert_eq(st.free, 64);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, segment_loss_restores_the_batch)
{
    const char *name = h_qname("bloss");
    shmq_config_t cfg = config(256, 512, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    /* fill most of the first log file first, so the batch's records cross into the second */
    for (int i = 0; i < 100; i++)
        h_assert_rc(shmq_publish(q, "filler-filler-filler-filler-filler-filler", 41, NULL), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    for (int i = 0; i < 100; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    enum { N = 200 };
    static char bufs[N][512];
    shmq_iov_t iov[N];
    size_t lens[N];
    uint64_t ids[N];
    for (uint32_t i = 0; i < N; i++) {
        lens[i] = payload(i, bufs[i], 100 + (i * 37) % 400);
        iov[i] = (shmq_iov_t){bufs[i], lens[i]};
    }
    size_t done;
    h_assert_rc(shmq_publish_batch(q, iov, N, ids, &done), 0);
    cr_assert_eq(done, N);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_geq(st.wal_files, 2, "the batch was meant to span two log files");
    h_assert_rc(shmq_close(q), 0);

    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, N, "restored %llu of the batch's %d", (unsigned long long)rep.restored,
                 N);
    cr_assert_eq(rep.corrupt_regions, 0);
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    expect_in_order(c, 0, N, ids, lens);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, sync_batch_is_one_flush)
{
    const char *name = h_qname("bsync");
    shmq_config_t cfg = config(128, 64, SHMQ_DURABILITY_SYNC);
    cfg.wal_file_size = 1u << 20;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_stats_t before, after;
    h_assert_rc(shmq_stats(q, &before), 0);
    shmq_iov_t iov[50];
    for (int i = 0; i < 50; i++)
        iov[i] = (shmq_iov_t){"sync-message", 12};
    size_t done;
    h_assert_rc(shmq_publish_batch(q, iov, 50, NULL, &done), 0);
    cr_assert_eq(done, 50);
    h_assert_rc(shmq_stats(q, &after), 0);
    uint64_t flushes = after.wal_flushes - before.wal_flushes;
    cr_assert(flushes >= 1 && flushes <= 2, "%llu flushes for one batch",
              (unsigned long long)flushes);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, sync_flush_failure_wins_over_a_full_queue)
{
    SKIP_WITHOUT_FAULTS();
    const char *name = h_qname("bsyncf");
    shmq_config_t cfg = config(4, 64, SHMQ_DURABILITY_SYNC);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_iov_t iov[8];
    for (int i = 0; i < 8; i++)
        iov[i] = (shmq_iov_t){"sync-message", 12};
    cr_assert_eq(io_fault_arm(IO_FDATASYNC, 1, EIO), 0);
    size_t done = 99;
    int rc = shmq_publish_batch(q, iov, 8, NULL, &done);
    io_fault_disarm_all();
    h_assert_rc(rc, -EIO);
    cr_assert_eq(done, 4, "done %zu: the prefix that fitted", done);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready, 4, "the published prefix is queued: %u ready", st.ready);
    h_assert_rc(shmq_close(q), 0);
}

/* ---- a producer killed between two records of one reservation ---- */

static const char *crash_name;

static int batch_producer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "wal_batch_after_first", 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    shmq_iov_t iov[10];
    for (int i = 0; i < 10; i++)
        iov[i] = (shmq_iov_t){"batched", 7};
    shmq_publish_batch(q, iov, 10, NULL, NULL);
    return 12; /* not killed at its crash point */
}

/* The producer is killed after the first record of its batch of 10; then one single publish
 * "after" lands behind the batch's reservation. maintain: run maintenance before the loss. */
static void killed_inside_the_records(bool maintain)
{
    pid_t k = h_fork_gated(batch_producer, NULL);
    shmq_config_t cfg = config(32, 64, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the producer was not killed inside its records");
    h_assert_rc(shmq_publish(q, "after", 5, NULL), 0);
    if (maintain) {
        shmq_maint_report_t mr;
        h_assert_rc(shmq_maintain(q, &mr), 0);
        cr_assert_eq(mr.reservations_freed, 10, "freed %u", mr.reservations_freed);
    }
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    /* the batch never returned: its one written record may come back (at least once), unless
     * maintenance freed the reservation (ACK|ABORT) */
    cr_assert_eq(rep.restored, maintain ? 1 : 2, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.holes, 1, "the unwritten rest of the reservation is one hole: %u", rep.holes);
    cr_assert_eq(rep.corrupt_regions, rep.holes, "a region that is not a hole");
    h_assert_rc(shmq_open(crash_name, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m[4];
    size_t got;
    h_assert_rc(shmq_receive_batch(c, m, 4, &got, 0), 0);
    cr_assert_eq(got, rep.restored);
    cr_assert(m[got - 1].len == 5 && memcmp(m[got - 1].data, "after", 5) == 0);
    if (got == 2)
        cr_assert(m[0].len == 7 && memcmp(m[0].data, "batched", 7) == 0);
    h_assert_rc(shmq_ack_batch(c, m, got, NULL), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(batch, killed_inside_the_records_leaves_a_hole)
{
    crash_name = h_qname("bkill");
    killed_inside_the_records(false);
}

Test(batch, killed_inside_the_records_then_maintained)
{
    crash_name = h_qname("bkillm");
    killed_inside_the_records(true);
}

/* A consumer thread: one blocking receive, kept unacked. */
struct sleeper {
    shmq_t *q;
    _Atomic pid_t tid;
    _Atomic int got; /* 1 once its receive returned a message, -1 on an error */
};

static void *one_receive(void *arg)
{
    struct sleeper *s = arg;
    shmq_consumer_t *c;
    if (shmq_consumer_open(s->q, "sleeper", &c) != 0) {
        atomic_store(&s->got, -1);
        return NULL;
    }
    atomic_store(&s->tid, (pid_t)gettid());
    shmq_msg_t m;
    atomic_store(&s->got, shmq_receive(c, &m, -1) == 0 ? 1 : -1);
    return NULL; /* the consumer stays open: its message stays in flight */
}

static int sleepers_done(struct sleeper *s, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++)
        done += atomic_load(&s[i].got) == 1;
    return done;
}

/* publish_batch woke one sleeping consumer for a whole batch (FUTEX_WAKE 1): the others slept
 * on, their messages ready, until their sleep's bound (a third of the heartbeat timeout: here
 * 100 s). Every sleeper counted before the batch's W1 must be woken, up to one per message;
 * ack_batch's wake of free-slot sleepers alike (shmq_publish_timed). */
Test(batch, a_batch_wakes_a_sleeping_consumer_per_message)
{
    enum { N = 4 };
    const char *name = h_qname("bwake");
    shmq_config_t cfg = config(64, 32, SHMQ_DURABILITY_NONE);
    cfg.heartbeat_timeout_ms = 300000; /* a blocked receive sleeps up to 100 s at a time */
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct segment seg;
    h_assert_rc(segment_open(name, true, &seg), 0);
    struct sleeper s[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        s[i] = (struct sleeper){.q = q};
        cr_assert_eq(pthread_create(&t[i], NULL, one_receive, &s[i]), 0);
    }
    /* all N counted as waiters and asleep in the kernel (their futex wait) */
    int64_t end = h_now_ms() + 30000;
    for (;;) {
        int asleep = 0;
        for (int i = 0; i < N; i++)
            asleep += atomic_load(&s[i].tid) && h_proc_state(atomic_load(&s[i].tid)) == 'S';
        if (asleep == N && atomic_load(&seg.hdr->ready_waiters) == N)
            break;
        cr_assert_lt(h_now_ms(), end, "the consumers did not go to sleep (%d asleep)", asleep);
        h_sleep_ms(2);
    }
    shmq_iov_t iov[N] = {{"w0", 2}, {"w1", 2}, {"w2", 2}, {"w3", 2}};
    size_t done;
    h_assert_rc(shmq_publish_batch(q, iov, N, NULL, &done), 0);
    end = h_now_ms() + 30000;
    while (sleepers_done(s, N) < N && h_now_ms() < end)
        h_sleep_ms(2);
    cr_assert_eq(sleepers_done(s, N), N, "%d of %d sleeping consumers got a message of the batch",
                 sleepers_done(s, N), N);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    segment_close(&seg);
}

/* ---- a process killed in the middle of a batch (the ring's ranges: ring.c "Batches") ---- */

enum { MID_N = 10, MID_CAP = 64 };

/* The killed child: SHMQ_CRASH_AT point after skip earlier passes; what it does is role's. */
struct mid_kill {
    const char *point, *role; /* role: "publish", "receive", "ack" */
    int skip;
};

static int mid_child(void *arg)
{
    const struct mid_kill *mk = arg;
    char skip[16];
    snprintf(skip, sizeof skip, "%d", mk->skip);
    setenv("SHMQ_CRASH_AT", mk->point, 1);
    setenv("SHMQ_CRASH_SKIP", skip, 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    if (!strcmp(mk->role, "publish")) { /* batch A returns; batch B is where it dies */
        shmq_iov_t a[MID_N], b[MID_N];
        for (int i = 0; i < MID_N; i++) {
            a[i] = (shmq_iov_t){"A", 1};
            b[i] = (shmq_iov_t){"B", 1};
        }
        size_t done = 0;
        if (shmq_publish_batch(q, a, MID_N, NULL, &done) || done != MID_N)
            return 11;
        shmq_publish_batch(q, b, MID_N, NULL, NULL);
        return 12;
    }
    shmq_consumer_t *c;
    if (shmq_consumer_open(q, "victim", &c))
        return 13;
    shmq_msg_t m[MID_N];
    size_t got = 0;
    int rc = shmq_receive_batch(c, m, MID_N, &got, 5000);
    if (!strcmp(mk->role, "ack") && rc == 0 && got == MID_N)
        shmq_ack_batch(c, m, got, NULL);
    return 14;
}

/* Receive and ack (maintaining the queue meanwhile) until want messages came, up to ms: their
 * count, *a of payload "A" and *b of "B" (no other payload). */
static size_t mid_drain(shmq_t *q, shmq_consumer_t *c, size_t want, int ms, size_t *a, size_t *b)
{
    int64_t end = h_now_ms() + ms;
    *a = *b = 0;
    while (*a + *b < want && h_now_ms() < end) {
        shmq_maint_report_t mr;
        h_assert_rc(shmq_maintain(q, &mr), 0);
        shmq_msg_t m[MID_N];
        size_t got = 0;
        int rc = shmq_receive_batch(c, m, MID_N, &got, 10);
        if (rc == -EAGAIN || rc == -ETIMEDOUT)
            continue;
        h_assert_rc(rc, 0);
        for (size_t i = 0; i < got; i++) {
            cr_assert_eq(m[i].len, 1);
            char p = *(const char *)m[i].data;
            cr_assert(p == 'A' || p == 'B', "payload %c", p);
            if (p == 'A')
                (*a)++;
            else
                (*b)++;
        }
        h_assert_rc(shmq_ack_batch(c, m, got, NULL), 0);
    }
    return *a + *b;
}

/* Every slot of the queue is usable again (maintenance returned the dead process's): a batch of
 * the whole capacity goes in, within 20 s of maintenance passes; then it is drained. */
static void mid_all_slots_back(shmq_t *q, shmq_consumer_t *c)
{
    shmq_iov_t iov[MID_CAP];
    for (int i = 0; i < MID_CAP; i++)
        iov[i] = (shmq_iov_t){"C", 1};
    size_t in = 0;
    int64_t end = h_now_ms() + 20000;
    while (in < MID_CAP && h_now_ms() < end) {
        shmq_maint_report_t mr;
        h_assert_rc(shmq_maintain(q, &mr), 0);
        size_t done = 0;
        int rc = shmq_publish_batch(q, iov, MID_CAP - in, NULL, &done);
        cr_assert(rc == 0 || rc == -EAGAIN, "publish_batch: %d", rc);
        in += done;
        if (rc == -EAGAIN)
            h_sleep_ms(5);
    }
    cr_assert_eq(in, MID_CAP, "only %zu of %u slots came back", in, MID_CAP);
    for (size_t out = 0; out < MID_CAP;) {
        shmq_msg_t m[MID_N];
        size_t got = 0;
        h_assert_rc(shmq_receive_batch(c, m, MID_N, &got, 0), 0);
        h_assert_rc(shmq_ack_batch(c, m, got, NULL), 0);
        out += got;
    }
}

/* A process killed at point (after skip passes) inside a batch of MID_N. Whatever a call
 * reported published is delivered; what the killed batch had made READY is delivered too
 * (orphans that maintenance requeues), what it held RESERVED is not; an unacked delivery of a
 * killed consumer comes back; and every slot is usable again. want_b: the B messages (the
 * killed publish batch's) expected; acked: the messages a killed ack batch acked before. */
static void killed_mid_batch(const char *qname, struct mid_kill mk, size_t want_b, size_t acked)
{
    crash_name = h_qname(qname);
    pid_t k = h_fork_gated(mid_child, &mk);
    shmq_config_t cfg = config(MID_CAP, 64, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    bool publisher = !strcmp(mk.role, "publish");
    if (!publisher) { /* reported published: the consumer child dies with them in hand */
        shmq_iov_t a[MID_N];
        for (int i = 0; i < MID_N; i++)
            a[i] = (shmq_iov_t){"A", 1};
        size_t done = 0;
        h_assert_rc(shmq_publish_batch(q, a, MID_N, NULL, &done), 0);
        cr_assert_eq(done, MID_N);
    }
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the child was not killed at %s (exit %d)", mk.point,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    size_t a, b, want_a = MID_N - acked;
    mid_drain(q, c, want_a + want_b, 20000, &a, &b);
    cr_assert_eq(a, want_a, "%zu of the %zu A messages reported published came", a, want_a);
    cr_assert_eq(b, want_b, "%zu of the killed batch's messages came, expected %zu", b, want_b);
    mid_all_slots_back(q, c);
    size_t more_a, more_b;
    /* nothing else turns up within ten orphan graces (maintain.c: 100 ms) */
    mid_drain(q, c, 1, 1000, &more_a, &more_b);
    cr_assert_eq(more_a + more_b, 0, "a message came twice or from nowhere");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* P1 done for 6 of the run, none on the ready ring yet (one range after the run's P1s). */
Test(batch, killed_after_some_commits_of_a_run_loses_nothing)
{
    SKIP_WITHOUT_FAULTS();
    killed_mid_batch("bkc", (struct mid_kill){"publish_after_commit", "publish", MID_N + 5}, 6,
                     0);
}

/* The run's range on the ready ring, its tickets not recorded. */
Test(batch, killed_after_the_ready_range_loses_nothing)
{
    SKIP_WITHOUT_FAULTS();
    killed_mid_batch("bke", (struct mid_kill){"publish_after_enqueue", "publish", 1}, MID_N, 0);
}

/* A consumer took a range of MID_N off the ready ring and died before its claims. */
Test(batch, consumer_killed_after_taking_a_range_loses_nothing)
{
    SKIP_WITHOUT_FAULTS();
    killed_mid_batch("bkr", (struct mid_kill){"receive_after_dequeue", "receive", 0}, 0, 0);
}

/* A consumer's ack batch killed after 4 A1s, their slots not on the free ring yet. */
Test(batch, consumer_killed_inside_an_ack_batch_loses_nothing)
{
    SKIP_WITHOUT_FAULTS();
    killed_mid_batch("bka", (struct mid_kill){"ack_after_free", "ack", 3}, 0, 4);
}

/* The free ring holds at most n = cells / 2 entries (ring.c's caller invariant; its entries are
 * hints a cursor claim leaves behind, so free_ring_room() bounds them). An ack batch puts the
 * slots F3 sends to the ring on it as one range: the room it checks is the range's. Each round
 * publishes the whole queue at the cursor and receives it; even rounds ack the odd messages in
 * one batch (each follows a slot in use: a range of four onto the ring), then the others; odd
 * rounds ack message 1 alone, then the rest in order (only message 0 follows a slot in use).
 * The ring then holds 8, 12, 14 entries before a range of four: checking room for one entry
 * took it to 18 (n = 16). */
Test(batch, an_ack_batch_never_overfills_the_free_ring)
{
    const char *name = h_qname("bfsfull");
    enum { CAP = 8 };
    shmq_config_t cfg = h_small_config(CAP, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    const struct ring *r = &q->seg.free_ring;
    uint64_t cells = r->mask + 1, most = 0;
    for (int round = 0; round < 64; round++) {
        shmq_msg_t m[CAP], first[CAP], rest[CAP];
        for (uint32_t i = 0; i < CAP; i++)
            h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
        for (uint32_t i = 0; i < CAP; i++)
            h_assert_rc(shmq_receive(c, &m[i], 0), 0);
        size_t nf = 0, nr = 0, done;
        for (uint32_t i = 0; i < CAP; i++) {
            bool early = round % 2 == 0 ? i % 2 == 1 : i == 1;
            if (early)
                first[nf++] = m[i];
            else
                rest[nr++] = m[i];
        }
        h_assert_rc(shmq_ack_batch(c, first, nf, &done), 0);
        h_assert_rc(shmq_ack_batch(c, rest, nr, &done), 0);
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
