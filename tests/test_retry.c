/*
 * test_retry.c - nack with a delay, the backoff policy, max_attempts and the dead-letter ring.
 *
 *  - nack(…, 200): the message is not delivered before its due time, nor after it without a
 *    maintenance pass (delayed messages become ready through shmq_maintain()), and is
 *    delivered (attempt 2, SHMQ_MSG_REDELIVERED) after the first pass once due.
 *  - Lateness of delayed retries with a maintainer process ticking every millisecond and a
 *    consumer blocked in receive: p50/p99/max printed; only generous bounds asserted (never
 *    early, p99 under a second).
 *  - Backoff: base 20 ms, multiplier 2, cap 200 ms: the delay each nack(…, 0) chose (the due
 *    time it stored in the slot, against the queue clock read around the call) lies in
 *    [d/2, d] (equal jitter) for d = 20, 40, 80, 160, 200, 200, 200, so the delays grow and stop
 *    at the cap; no redelivery comes before its due time. Nothing is judged on wall-clock gaps
 *    (they failed on a loaded machine: 66 ms of lateness made nack 1 look longer than nack 3).
 *  - max_attempts = 3: the 3rd nack puts the message in the dead-letter ring (attempt 3, reason
 *    SHMQ_DEAD_MAX_ATTEMPTS), from where it is not delivered; shmq_dlq_redrive() makes it
 *    deliverable again with attempt 1; shmq_dlq_purge() frees its slot. The same for a message
 *    whose ack deadline passes at its last attempt.
 *  - A purged dead letter stays purged after a segment loss (its purge logs an ACK).
 *
 * The test process holds the maintenance lease as a watchdog, and its consumer is on another
 * queue handle, so no receive maintains cooperatively behind the test's back.
 */
#include "torture.h"

#include "queue.h"
#include "segment.h"
#include "slot.h"

TestSuite(retry, .init = t_setup, .fini = t_teardown, .timeout = 60);

#define CAP 64

struct fixture {
    char qname[SHMQ_NAME_MAX + 1];
    shmq_t *q, *q2; /* q: the watchdog (lease); q2: the consumer's handle */
    shmq_consumer_t *c;
};

static void open_queue(struct fixture *f, const char *tag, const shmq_config_t *cfg, bool lease)
{
    snprintf(f->qname, sizeof f->qname, "%s", t_qname(tag));
    int rc = shmq_create(f->qname, cfg, &f->q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    if (lease)
        cr_assert_eq(shmq_lease_acquire(f->q, 600000, 1), 0);
    cr_assert_eq(shmq_open(f->qname, &f->q2), 0);
    cr_assert_eq(shmq_consumer_open(f->q2, "retry", &f->c), 0);
}

static void close_queue(struct fixture *f)
{
    cr_assert_eq(shmq_consumer_close(f->c), 0);
    cr_assert_eq(shmq_close(f->q2), 0);
    shmq_stats_t st = t_settle(f->q, CAP, 2000, NULL);
    cr_assert(t_quiet(&st, CAP), "not quiet at the end: " T_STATS_FMT, T_STATS_ARGS(st, CAP));
    t_full_cycle(f->q, CAP);
    shmq_lease_release(f->q);
    cr_assert_eq(shmq_close(f->q), 0);
}

static shmq_config_t retry_config(void)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = CAP;
    cfg.max_msg_size = 128;
    cfg.max_procs = 16;
    cfg.max_attempts = 20;
    return cfg;
}

static uint64_t publish_one(shmq_t *q, uint32_t seq)
{
    struct t_wire w;
    size_t n = t_fill(&w, 0, seq);
    uint64_t id = 0;
    int rc = shmq_publish(q, &w, n, &id);
    cr_assert_eq(rc, 0, "publish: %s", shmq_strerror(rc));
    return id;
}

static void check_msg(const shmq_msg_t *m, uint32_t want_seq)
{
    uint32_t p, s;
    cr_assert_eq(t_check(m->data, m->len, &p, &s), 0, "corrupt payload");
    cr_assert_eq(s, want_seq);
}

Test(retry, nack_delay_not_early_and_delivered_after_maintenance)
{
    alarm(30);
    struct fixture f;
    shmq_config_t cfg = retry_config();
    open_queue(&f, "rtD", &cfg, true);
    uint64_t id = publish_one(f.q, 1);
    shmq_msg_t m;
    cr_assert_eq(shmq_receive(f.c, &m, 1000), 0);
    int64_t t0 = t_now_us();
    cr_assert_eq(shmq_nack(f.c, &m, 200), 0);

    /* Before the due time: not delivered, and a maintenance pass does not fire it. */
    shmq_maint_report_t rep = {0};
    while (t_now_us() < t0 + 150000) {
        int rc = shmq_receive(f.c, &m, 0);
        cr_assert_eq(rc, -EAGAIN, "delivered %lld ms after nack(200): %s",
                     (long long)(t_now_us() - t0) / 1000, shmq_strerror(rc));
        t_maintain(f.q, &rep);
        t_sleep_ms(2);
    }
    cr_assert_eq(rep.delayed_fired, 0, "fired before its due time");
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(f.q, &st), 0);
    cr_assert_eq(st.delayed, 1);

    /* Past due but no maintenance: still not delivered. */
    t_sleep_ms(100);
    cr_assert_eq(shmq_receive(f.c, &m, 0), -EAGAIN, "delivered without a maintenance pass");

    /* The first pass once due makes it ready. */
    memset(&rep, 0, sizeof rep);
    t_maintain(f.q, &rep);
    int64_t elapsed_ms = (t_now_us() - t0) / 1000;
    cr_assert_eq(rep.delayed_fired, 1, "due and maintained, but not fired");
    int rc = shmq_receive(f.c, &m, 0);
    cr_assert_eq(rc, 0, "fired but not deliverable: %s", shmq_strerror(rc));
    cr_assert_eq(m.id, id);
    cr_assert_eq(m.attempt, 2);
    cr_assert(m.flags & SHMQ_MSG_REDELIVERED);
    check_msg(&m, 1);
    cr_assert_geq(elapsed_ms, 199);
    cr_assert_eq(shmq_ack(f.c, &m), 0);
    close_queue(&f);
    alarm(0);
}

/* ---------------------------------------------------------------- lateness */

static int maintainer_main(void *argp)
{
    const char *name = argp;
    shmq_t *q;
    if (shmq_open(name, &q) != 0)
        return 10;
    if (shmq_lease_acquire(q, 600000, 1) != 0)
        return 11;
    for (;;) { /* killed by the test */
        if (shmq_maintain(q, NULL) != 0)
            return 12;
        t_sleep_us(1000);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

#define LAT_N 200
#define LAT_DELAY_MS 200

Test(retry, delayed_retry_lateness)
{
    alarm(30);
    struct fixture f;
    shmq_config_t cfg = retry_config();
    open_queue(&f, "rtL", &cfg, false);
    pid_t maint = t_spawn(maintainer_main, f.qname, sizeof f.qname);

    static int64_t nack_us[LAT_N], late_us[LAT_N];
    uint64_t first_id = 0;
    int published = 0, done = 0;
    int64_t start = t_now_us(), next_pub = start, end = start + 20000000;
    while (done < LAT_N && t_now_us() < end) {
        if (published < LAT_N && t_now_us() >= next_pub) { /* one every 5 ms */
            uint64_t id = publish_one(f.q, (uint32_t)published);
            if (!first_id)
                first_id = id;
            published++;
            next_pub += 5000;
        }
        shmq_msg_t m;
        int rc = shmq_receive(f.c, &m, 1);
        if (rc == -ETIMEDOUT || rc == -EAGAIN)
            continue;
        cr_assert_eq(rc, 0, "receive: %s", shmq_strerror(rc));
        int64_t now = t_now_us();
        uint64_t k = m.id - first_id;
        cr_assert_lt(k, LAT_N);
        check_msg(&m, (uint32_t)k);
        if (m.attempt == 1) {
            nack_us[k] = now;
            cr_assert_eq(shmq_nack(f.c, &m, LAT_DELAY_MS), 0);
        } else {
            cr_assert_eq(m.attempt, 2);
            late_us[k] = now - (nack_us[k] + LAT_DELAY_MS * 1000);
            cr_assert_eq(shmq_ack(f.c, &m), 0);
            done++;
        }
    }
    t_kill_reap(maint);
    cr_assert_eq(done, LAT_N, "only %d of %d delayed retries came back in 20 s", done, LAT_N);
    qsort(late_us, LAT_N, sizeof late_us[0], cmp_i64);
    int64_t p50 = late_us[LAT_N / 2], p99 = late_us[(LAT_N * 99) / 100], mx = late_us[LAT_N - 1];
    fprintf(stderr,
            "retry lateness (nack 200 ms, maintainer tick 1 ms, blocked consumer), n=%d: "
            "min %.3f p50 %.3f p99 %.3f max %.3f ms\n",
            LAT_N, late_us[0] / 1000.0, p50 / 1000.0, p99 / 1000.0, mx / 1000.0);
    /* due times count whole ms since the segment's creation: up to 1 ms early is rounding */
    cr_assert_geq(late_us[0], -1500, "a delayed retry came %.3f ms early", late_us[0] / 1000.0);
    cr_assert_lt(p99, 1000000, "p99 lateness %.3f ms", p99 / 1000.0);
    close_queue(&f);
    alarm(0);
}

/* ---------------------------------------------------------------- backoff */

#define BO_MSGS 4
#define BO_NACKS 7

/* The due time shmq_nack() stored for the DELAYED word the slot of m is in now (queue clock, ms
 * since the segment was made); false if the slot has moved on already. */
static bool stored_due(shmq_t *q, const shmq_msg_t *m, uint64_t *due)
{
    struct slot *sl = segment_slot(&q->seg, token_idx(m->token));
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
    return sw_state(w) == SLOT_DELAYED &&
           tagged_get(atomic_load_explicit(&sl->deadline, memory_order_relaxed), w, due);
}

Test(retry, backoff_delays_grow_with_jitter_and_cap)
{
    alarm(60);
    struct fixture f;
    shmq_config_t cfg = retry_config();
    cfg.backoff_base_ms = 20;
    cfg.backoff_multiplier = 2.0;
    cfg.backoff_cap_ms = 200;
    open_queue(&f, "rtB", &cfg, true);
    static const uint32_t d_ms[BO_NACKS] = {20, 40, 80, 160, 200, 200, 200};
    uint64_t due[BO_MSGS] = {0};
    uint64_t first = 0;
    for (uint32_t i = 0; i < BO_MSGS; i++) {
        uint64_t id = publish_one(f.q, i);
        if (!first)
            first = id;
    }
    /* The delay a nack chose is read from the slot (the due time it stored) and bounded by the
     * queue clock read just before and after the call: due - after <= delay <= due - before. No
     * wall-clock gap is judged, so a busy machine cannot fail this. */
    int finished = 0;
    int64_t end = t_now_ms() + 45000;
    while (finished < BO_MSGS && t_now_ms() < end) {
        shmq_msg_t m;
        int rc = shmq_receive(f.c, &m, 0);
        if (rc == -EAGAIN) {
            t_maintain(f.q, NULL);
            t_sleep_us(500);
            continue;
        }
        cr_assert_eq(rc, 0, "receive: %s", shmq_strerror(rc));
        uint64_t got_at = queue_now_ms_exact(f.q);
        uint64_t k = m.id - first;
        cr_assert_lt(k, BO_MSGS);
        check_msg(&m, (uint32_t)k);
        uint32_t a = m.attempt; /* delivery a follows nack a-1 */
        if (a > 1) /* never early (whole ms: 1 ms of rounding) */
            cr_assert_geq(got_at + 1, due[k], "message %llu, delivery %u: %llu ms early",
                          (unsigned long long)k, a, (unsigned long long)(due[k] - got_at));
        if (a > BO_NACKS) {
            cr_assert_eq(shmq_ack(f.c, &m), 0);
            finished++;
            continue;
        }
        uint64_t before = queue_now_ms_exact(f.q);
        cr_assert_eq(shmq_nack(f.c, &m, 0), 0);
        uint64_t after = queue_now_ms_exact(f.q);
        cr_assert(stored_due(f.q, &m, &due[k]), "nack %u left no DELAYED word", a);
        uint32_t d = d_ms[a - 1];
        fprintf(stderr, "retry backoff: message %llu nack %u (d = %3u ms, jitter [%u, %u]): "
                "delay in [%lld, %lld] ms\n", (unsigned long long)k, a, d, d / 2, d,
                (long long)(due[k] - after), (long long)(due[k] - before));
        cr_assert(due[k] >= before + d / 2 && due[k] <= after + d,
                  "message %llu nack %u: delay in [%lld, %lld] ms, outside [d/2, d] for d = %u",
                  (unsigned long long)k, a, (long long)(due[k] - after),
                  (long long)(due[k] - before), d);
    }
    cr_assert_eq(finished, BO_MSGS, "backoff retries did not finish in 45 s");
    close_queue(&f);
    alarm(0);
}

/* ---------------------------------------------------------------- dead letters */

static void nack_until_dead(struct fixture *f, uint64_t id, uint32_t max_attempts)
{
    for (uint32_t a = 1; a <= max_attempts; a++) {
        shmq_msg_t m;
        int rc = shmq_receive(f->c, &m, 1000);
        cr_assert_eq(rc, 0, "attempt %u not delivered: %s", a, shmq_strerror(rc));
        cr_assert_eq(m.id, id);
        cr_assert_eq(m.attempt, a);
        cr_assert_eq(shmq_nack(f->c, &m, 0), 0, "nack %u", a);
    }
}

Test(retry, max_attempts_dead_letter_redrive_purge)
{
    alarm(30);
    struct fixture f;
    shmq_config_t cfg = retry_config();
    cfg.max_attempts = 3;
    cfg.backoff_base_ms = 0; /* nack(…, 0): ready again at once */
    cfg.backoff_cap_ms = 0;
    open_queue(&f, "rtX", &cfg, true);

    uint64_t a_id = publish_one(f.q, 7);
    nack_until_dead(&f, a_id, 3);
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(f.q, &st), 0);
    cr_assert_eq(st.dead, 1, "after the 3rd nack: " T_STATS_FMT, T_STATS_ARGS(st, CAP));
    cr_assert_eq(st.dead_lettered, 1);
    for (int i = 0; i < 3; i++) { /* not deliverable, maintenance or not */
        shmq_msg_t m;
        cr_assert_eq(shmq_receive(f.c, &m, 0), -EAGAIN, "a dead letter was delivered");
        t_maintain(f.q, NULL);
        t_sleep_ms(50);
    }
    shmq_dead_letter_t dl[4];
    size_t n = 0;
    cr_assert_eq(shmq_dlq_list(f.q, dl, 4, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(dl[0].id, a_id);
    cr_assert_eq(dl[0].attempt, 3);
    cr_assert_eq(dl[0].reason, SHMQ_DEAD_MAX_ATTEMPTS);
    uint32_t p, s;
    cr_assert_eq(t_check(dl[0].data, dl[0].len, &p, &s), 0, "dead letter payload corrupt");
    cr_assert_eq(s, 7);

    uint32_t moved = 99;
    cr_assert_eq(shmq_dlq_redrive(f.q, a_id + 1000, &moved), 0);
    cr_assert_eq(moved, 0, "redrive of an unknown id moved %u", moved);
    cr_assert_eq(shmq_dlq_redrive(f.q, a_id, &moved), 0);
    cr_assert_eq(moved, 1);
    shmq_msg_t m;
    int rc = shmq_receive(f.c, &m, 1000);
    cr_assert_eq(rc, 0, "redriven message not delivered: %s", shmq_strerror(rc));
    cr_assert_eq(m.id, a_id);
    cr_assert_eq(m.attempt, 1, "redriven message delivered with attempt %u", m.attempt);
    check_msg(&m, 7);
    cr_assert_eq(shmq_ack(f.c, &m), 0);
    cr_assert_eq(shmq_dlq_list(f.q, dl, 4, &n), 0);
    cr_assert_eq(n, 0);

    /* Purge one by id, then all. */
    uint64_t b_id = publish_one(f.q, 8);
    nack_until_dead(&f, b_id, 3);
    uint64_t c_id = publish_one(f.q, 9);
    nack_until_dead(&f, c_id, 3);
    uint64_t d_id = publish_one(f.q, 10);
    nack_until_dead(&f, d_id, 3);
    cr_assert_eq(shmq_dlq_list(f.q, dl, 4, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert(dl[0].id == b_id && dl[1].id == c_id && dl[2].id == d_id, "not oldest id first");
    uint32_t purged = 99;
    cr_assert_eq(shmq_dlq_purge(f.q, b_id, &purged), 0);
    cr_assert_eq(purged, 1);
    cr_assert_eq(shmq_dlq_list(f.q, dl, 4, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(shmq_dlq_purge(f.q, 0, &purged), 0);
    cr_assert_eq(purged, 2);
    cr_assert_eq(shmq_dlq_list(f.q, dl, 4, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(shmq_stats(f.q, &st), 0);
    cr_assert(t_quiet(&st, CAP), "purged slots not freed: " T_STATS_FMT, T_STATS_ARGS(st, CAP));
    cr_assert_eq(st.dead_lettered, 4);
    close_queue(&f);
    alarm(0);
}

Test(retry, deadline_expiry_at_last_attempt_dead_letters)
{
    alarm(30);
    struct fixture f;
    shmq_config_t cfg = retry_config();
    cfg.max_attempts = 1;
    cfg.ack_deadline_ms = 50;
    open_queue(&f, "rtE", &cfg, true);
    uint64_t id = publish_one(f.q, 3);
    shmq_msg_t m;
    cr_assert_eq(shmq_receive(f.c, &m, 1000), 0);
    shmq_maint_report_t rep = {0};
    int64_t end = t_now_ms() + 3000;
    while (rep.dead_lettered == 0 && t_now_ms() < end) {
        t_maintain(f.q, &rep);
        t_sleep_ms(5);
    }
    cr_assert_eq(rep.dead_lettered, 1, "the expired last attempt was not dead-lettered");
    cr_assert_eq(shmq_ack(f.c, &m), -ESTALE, "ack after the deadline");
    shmq_dead_letter_t dl[2];
    size_t n = 0;
    cr_assert_eq(shmq_dlq_list(f.q, dl, 2, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(dl[0].id, id);
    cr_assert_eq(dl[0].attempt, 1);
    cr_assert_eq(dl[0].reason, SHMQ_DEAD_MAX_ATTEMPTS);
    uint32_t purged = 0;
    cr_assert_eq(shmq_dlq_purge(f.q, id, &purged), 0);
    cr_assert_eq(purged, 1);
    close_queue(&f);
    alarm(0);
}

Test(retry, purged_dead_letters_stay_purged_after_a_rebuild)
{
    /* shmq_dlq_purge freed the slot and logged nothing: the log's latest record of the id was
     * still its DEAD, so a segment loss brought every purged dead letter back (shmq_purge logs
     * an ACK of each message it drops, and a dead letter's purge now does too). */
    alarm(30);
    struct fixture f;
    shmq_config_t cfg = retry_config();
    cfg.max_attempts = 1;
    open_queue(&f, "rtDP", &cfg, true);
    uint64_t a_id = publish_one(f.q, 1), b_id = publish_one(f.q, 2);
    nack_until_dead(&f, a_id, 1);
    nack_until_dead(&f, b_id, 1);
    uint32_t purged = 99;
    cr_assert_eq(shmq_dlq_purge(f.q, a_id, &purged), 0);
    cr_assert_eq(purged, 1);
    cr_assert_eq(shmq_consumer_close(f.c), 0);
    cr_assert_eq(shmq_close(f.q2), 0);
    shmq_lease_release(f.q);
    cr_assert_eq(shmq_close(f.q), 0); /* b stays a dead letter */
    cr_assert_eq(shmq_unlink_segment(f.qname), 0);
    shmq_recovery_report_t rep;
    int rc = shmq_recover(f.qname, NULL, &rep);
    cr_assert_eq(rc, 0, "recover: %s", shmq_strerror(rc));
    cr_assert_eq(rep.dead_letters, 1, "the rebuild restored %llu dead letters (one was purged)",
                 (unsigned long long)rep.dead_letters);
    shmq_t *q;
    cr_assert_eq(shmq_open(f.qname, &q), 0);
    shmq_dead_letter_t dl[4];
    size_t n = 0;
    cr_assert_eq(shmq_dlq_list(q, dl, 4, &n), 0);
    cr_assert(n == 1 && dl[0].id == b_id, "the dead letter left is not the one not purged");
    cr_assert_eq(shmq_close(q), 0);
    alarm(0);
}
