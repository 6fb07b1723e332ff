/*
 * test_purge.c - shmq_purge (src/purge.c): drops ready (and, asked, delayed) messages, leaves
 * in-flight ones to their consumers, never both delivers and purges a message, and logs what it
 * dropped so a rebuild does not bring it back.
 *
 *  - ready_not_inflight: ready messages go, in-flight ones stay (their ack works, a nacked one
 *    comes back), delayed ones stay without SHMQ_PURGE_DELAYED and go with it; counts exact.
 *  - rebuild_after_purge_brings_nothing_back: a segment loss after a purge of ready and delayed
 *    messages restores none of them (each was logged as acked), only the one in flight.
 *  - racing_receivers_never_both: four consumer threads receive and ack while a producer
 *    publishes and a purger purges over and over: every message is delivered once or purged
 *    once (delivered + purged == published, no id delivered twice).
 *  - duplicate_entry_delivered_once, duplicate_entry_purged_once: a producer killed between its
 * enqueue and its ticket (publish_after_enqueue) leaves a READY slot that maintenance enqueues
 * again: two ring entries for one message. Received through one, the purge that dequeues the other
 *    leaves it in flight (its ack works); purged through one, no receive gets it through the
 *    other.
 *
 * shmq-test-label: threaded
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>

TestSuite(purge, .fini = h_cleanup, .timeout = 240);

static void publish_n(shmq_t *q, int n)
{
    for (int i = 0; i < n; i++)
        h_assert_rc(shmq_publish(q, &i, sizeof i, NULL), 0);
}

Test(purge, ready_not_inflight)
{
    const char *name = h_qname("ready");
    shmq_config_t cfg = h_log_config(32);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 5);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t a, b;
    h_assert_rc(shmq_receive(c, &a, 0), 0);
    h_assert_rc(shmq_receive(c, &b, 0), 0);
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    uint32_t n = 99;
    h_assert_rc(shmq_purge(q, 0, &n), 0);
    cr_assert_eq(n, 3, "purged %u of the 3 ready", n);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert(st.ready == 0 && st.inflight == 2 && st.delayed == 1,
              "ready %u inflight %u delayed %u", st.ready, st.inflight, st.delayed);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    /* the in-flight ones were left to their consumer */
    h_assert_rc(shmq_ack(c, &a), 0);
    h_assert_rc(shmq_nack(c, &b, 1000000), 0); /* delayed now */
    h_assert_rc(shmq_purge(q, 0, &n), 0);
    cr_assert_eq(n, 0, "purged %u with nothing ready", n);
    h_assert_rc(shmq_purge(q, SHMQ_PURGE_DELAYED, &n), 0);
    cr_assert_eq(n, 2, "purged %u of the 2 delayed", n);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert(st.ready + st.inflight + st.delayed == 0 && st.free == 32,
              "ready %u inflight %u delayed %u free %u", st.ready, st.inflight, st.delayed,
              st.free);
    /* a nacked message comes back after a purge that found it in flight */
    publish_n(q, 1);
    h_assert_rc(shmq_receive(c, &a, 0), 0);
    h_assert_rc(shmq_purge(q, SHMQ_PURGE_DELAYED, &n), 0);
    cr_assert_eq(n, 0);
    h_assert_rc(shmq_nack(c, &a, 1), 0);
    shmq_maintain(q, NULL);
    int64_t until = h_now_ms() + 20000;
    int rc;
    while ((rc = shmq_receive(c, &m, 20)) != 0 && h_now_ms() < until)
        shmq_maintain(q, NULL);
    h_assert_rc(rc, 0);
    cr_assert_eq(m.id, a.id);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_purge(q, 4, &n), -EINVAL);
    h_assert_rc(shmq_purge(NULL, 0, &n), -EINVAL);
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(purge, rebuild_after_purge_brings_nothing_back)
{
    const char *name = h_qname("rebuild");
    shmq_config_t cfg = h_log_config(32);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 6);
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t held;
    h_assert_rc(shmq_receive(c, &held, 0), 0);
    uint32_t n = 0;
    h_assert_rc(shmq_purge(q, SHMQ_PURGE_DELAYED, &n), 0);
    cr_assert_eq(n, 6, "purged %u", n);
    shmq_consumer_close(c); /* the held one goes back to ready: it was never purged */
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 1,
                 "restored %llu: purged messages came back (or the held one "
                 "was lost)",
                 (unsigned long long)rep.restored);
    cr_assert_eq(rep.delayed, 0, "the purged delayed message came back");
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c2", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.id, held.id, "the message restored is not the one that was in flight");
    h_assert_rc(shmq_ack(c, &m), 0);
    shmq_consumer_close(c);
    shmq_close(q);
}

/* ------------------------------------------------------------------ racing receivers */

enum { RACE_MSGS = 20000, RACE_CONSUMERS = 4 };

struct race {
    shmq_t *q;
    _Atomic uint32_t delivered, purged;
    _Atomic int producing;
    _Atomic uint8_t seen[RACE_MSGS + 1]; /* by id (ids are 1..RACE_MSGS: one producer) */
    _Atomic int dup;
};

static bool race_done(struct race *r)
{
    return atomic_load(&r->delivered) + atomic_load(&r->purged) >= RACE_MSGS &&
           !atomic_load(&r->producing);
}

static void *race_consumer(void *arg)
{
    struct race *r = arg;
    shmq_consumer_t *c;
    if (shmq_consumer_open(r->q, "racer", &c) != 0)
        return (void *)1;
    int64_t until = h_now_ms() + 60000;
    while (!race_done(r) && h_now_ms() < until) {
        shmq_msg_t m;
        if (shmq_receive(c, &m, 10) != 0)
            continue;
        if (m.id == 0 || m.id > RACE_MSGS || atomic_fetch_add(&r->seen[m.id], 1) != 0)
            atomic_store(&r->dup, 1);
        atomic_fetch_add(&r->delivered, 1);
        shmq_ack(c, &m);
    }
    shmq_consumer_close(c);
    return NULL;
}

static void *race_purger(void *arg)
{
    struct race *r = arg;
    int64_t until = h_now_ms() + 60000;
    while (!race_done(r) && h_now_ms() < until) {
        uint32_t n = 0;
        if (shmq_purge(r->q, 0, &n) != 0)
            return (void *)1;
        atomic_fetch_add(&r->purged, n);
    }
    return NULL;
}

Test(purge, racing_receivers_never_both)
{
    const char *name = h_qname("race");
    shmq_config_t cfg = h_small_config(64, 64, 64);
    cfg.durability = SHMQ_DURABILITY_NONE;
    static struct race r;
    memset(&r, 0, sizeof r);
    h_assert_rc(shmq_create(name, &cfg, &r.q), 0);
    atomic_store(&r.producing, 1);
    pthread_t cons[RACE_CONSUMERS], purger;
    for (int i = 0; i < RACE_CONSUMERS; i++)
        cr_assert_eq(pthread_create(&cons[i], NULL, race_consumer, &r), 0);
    cr_assert_eq(pthread_create(&purger, NULL, race_purger, &r), 0);
    for (int i = 0; i < RACE_MSGS; i++)
        h_assert_rc(shmq_publish_timed(r.q, &i, sizeof i, NULL, 30000), 0);
    atomic_store(&r.producing, 0);
    void *ret;
    for (int i = 0; i < RACE_CONSUMERS; i++) {
        pthread_join(cons[i], &ret);
        cr_assert_null(ret, "a consumer failed to open");
    }
    pthread_join(purger, &ret);
    cr_assert_null(ret, "a purge failed");
    uint32_t rest = 0;
    h_assert_rc(shmq_purge(r.q, 0, &rest), 0);
    uint32_t d = atomic_load(&r.delivered), p = atomic_load(&r.purged) + rest;
    cr_assert(!atomic_load(&r.dup), "a message was delivered twice");
    cr_assert_eq(d + p, RACE_MSGS, "delivered %u + purged %u != published %d", d, p, RACE_MSGS);
    /* how the work split is the scheduler's choice (on a busy machine the purger may find
     * nothing ready in the whole run): reported, not asserted; the one-or-the-other check is
     * what the duplicate_entry_* tests force deterministically */
    cr_log_info("purge race: delivered %u, purged %u", d, p);
    shmq_close(r.q);
}

/* ------------------------------------------------------------------ two entries, one message */

static const char *dup_name;

static int killed_producer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "publish_after_enqueue", 1);
    shmq_t *q;
    if (shmq_open(dup_name, &q))
        return 10;
    int rc = shmq_publish(q, "dup", 3, NULL);
    return rc ? 20 - rc : 12; /* not killed at its crash point: 12, or 20 + errno */
}

/* A queue whose one message has two ready-ring entries (the orphan repair's duplicate). */
static shmq_t *queue_with_duplicate_entry(const char *tag)
{
    dup_name = h_qname(tag);
    pid_t k = h_fork_gated(killed_producer, NULL);
    shmq_config_t cfg = h_small_config(4, 64, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    h_assert_rc(shmq_create(dup_name, &cfg, &q), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the producer was not killed at publish_after_enqueue (exit %d)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    int64_t until = h_now_ms() + 20000; /* a suspect is repaired after its grace (100 ms) */
    uint32_t requeued = 0;
    while (requeued == 0 && h_now_ms() < until) {
        shmq_maint_report_t rep;
        h_assert_rc(shmq_maintain(q, &rep), 0);
        requeued += rep.orphans_requeued;
        if (!requeued)
            h_sleep_ms(20);
    }
    cr_assert_eq(requeued, 1, "the orphan was not enqueued again");
    return q;
}

Test(purge, duplicate_entry_delivered_once)
{
    /* received through one entry: the purge finds it in flight through the other */
    shmq_t *q = queue_with_duplicate_entry("dupa");
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    uint32_t n = 9;
    h_assert_rc(shmq_purge(q, SHMQ_PURGE_DELAYED, &n), 0);
    cr_assert_eq(n, 0, "a message in flight was purged");
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_close(q);
}

/* (a test of its own: the producer must be forked before this process passes a crash point) */
Test(purge, duplicate_entry_purged_once)
{
    /* purged through one entry: no receive gets it through the other */
    shmq_t *q = queue_with_duplicate_entry("dupb");
    shmq_consumer_t *c;
    shmq_msg_t m;
    uint32_t n = 9;
    h_assert_rc(shmq_purge(q, 0, &n), 0);
    cr_assert_eq(n, 1, "purged %u of one message with two entries", n);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.free, 4, "free %u", st.free);
    shmq_close(q);
}
