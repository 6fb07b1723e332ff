/*
 * test_consumer_stats.c - per-consumer counters (shmq_consumer_stats(), `shmq stat`): each
 * consumer's delivered, acked, nacked are what it did, they add up to the queue's totals, and
 * reclaimed_from counts what maintenance took back from it.
 *
 * shmq-test-label: threaded
 */
#include "cli.h"

#include <pthread.h>

TestSuite(consumer_stats, .fini = h_cleanup, .timeout = 60);

#define CONSUMERS 4
#define MESSAGES 4000
#define RUN_BOUND_MS 30000

struct crun {
    shmq_t *q;
    _Atomic uint64_t acked_all; /* acks of every consumer: the run ends at MESSAGES */
    _Atomic int failed;
};

struct worker {
    struct crun *run;
    shmq_consumer_t *c;
    int me;
    uint64_t delivered, acked, nacked; /* what this consumer did, by its own count */
};

/* Receive until every message was acked by someone; nack every 7th delivery of ours (back to
 * the ready ring at once), ack the rest. */
static void *consume(void *arg)
{
    struct worker *w = arg;
    int64_t bound = h_now_ms() + RUN_BOUND_MS;
    while (atomic_load(&w->run->acked_all) < MESSAGES && h_now_ms() < bound) {
        shmq_msg_t m;
        int rc = shmq_receive(w->c, &m, 20);
        if (rc == -ETIMEDOUT || rc == -EAGAIN)
            continue;
        if (rc != 0) {
            atomic_store(&w->run->failed, rc);
            break;
        }
        w->delivered++;
        if (w->delivered % 7 == 0) {
            if (shmq_nack(w->c, &m, 0) != 0)
                atomic_store(&w->run->failed, -1000);
            w->nacked++;
            continue;
        }
        if (shmq_ack(w->c, &m) != 0)
            atomic_store(&w->run->failed, -1001);
        w->acked++;
        atomic_fetch_add(&w->run->acked_all, 1);
    }
    return NULL;
}

static const shmq_consumer_stats_t *find_entry(const shmq_consumer_stats_t *cs, size_t n,
                                               const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(cs[i].name, name) == 0)
            return &cs[i];
    return NULL;
}

/* Four consumers in threads, each with its own registry entry, share the queue: each one's
 * counters are exactly what it did, and summed they are the queue's totals (no consumer closed,
 * so nothing was folded away). */
Test(consumer_stats, counters_add_up_to_the_queue_totals)
{
    const char *name = h_qname("cstats");
    shmq_config_t cfg = h_small_config(256, 32, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_attempts = 1000; /* no dead letters: nacked messages come back */
    cfg.backoff_base_ms = 0; /* at once: READY, no maintenance needed to fire them */
    cfg.backoff_cap_ms = 0;
    struct crun run = {0};
    h_assert_rc(shmq_create(name, &cfg, &run.q), 0);
    /* hold the maintenance lease as a watchdog would: the consumers do not maintain (nothing
     * here needs it, and under TSan a cooperative pass's read of a reused slot's expiry time
     * races the publisher's write of it: a report about expiry, not about these counters) */
    shmq_t *watchdog; /* its own handle: the consumers' handle would count as the holder */
    h_assert_rc(shmq_open(name, &watchdog), 0);
    h_assert_rc(shmq_lease_acquire(watchdog, 600000, 1), 0);
    struct worker w[CONSUMERS];
    pthread_t t[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++) {
        char cname[16];
        snprintf(cname, sizeof cname, "worker%d", i);
        w[i] = (struct worker){.run = &run, .me = i};
        h_assert_rc(shmq_consumer_open(run.q, cname, &w[i].c), 0);
        cr_assert_eq(pthread_create(&t[i], NULL, consume, &w[i]), 0);
    }
    for (uint32_t i = 0; i < MESSAGES; i++) {
        int rc;
        while ((rc = shmq_publish_timed(run.q, &i, sizeof i, NULL, 100)) == -ETIMEDOUT)
            cr_assert_eq(atomic_load(&run.failed), 0);
        h_assert_rc(rc, 0);
    }
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&run.failed), 0, "a consumer failed: %d", atomic_load(&run.failed));
    cr_assert_eq(atomic_load(&run.acked_all), MESSAGES);

    shmq_consumer_stats_t cs[16];
    size_t n = 0;
    h_assert_rc(shmq_consumer_stats(run.q, cs, 16, &n), 0);
    cr_assert_eq(n, CONSUMERS, "one entry per consumer (the queue handle's is no consumer)");
    shmq_stats_t st;
    h_assert_rc(shmq_stats(run.q, &st), 0);
    uint64_t delivered = 0, acked = 0, nacked = 0, redelivered = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        char cname[16];
        snprintf(cname, sizeof cname, "worker%d", i);
        const shmq_consumer_stats_t *e = find_entry(cs, n, cname);
        cr_assert(e, "%s is listed", cname);
        cr_assert_eq(e->pid, getpid());
        cr_assert_eq(e->state, SHMQ_PROC_ACTIVE);
        cr_assert_eq(e->delivered, w[i].delivered, "%s delivered", cname);
        cr_assert_eq(e->acked, w[i].acked, "%s acked", cname);
        cr_assert_eq(e->nacked, w[i].nacked, "%s nacked", cname);
        cr_assert_eq(e->reclaimed_from, 0, "%s: nothing was taken back", cname);
        delivered += e->delivered;
        acked += e->acked;
        nacked += e->nacked;
        redelivered += e->redelivered;
    }
    cr_assert_eq(delivered, st.delivered);
    cr_assert_eq(acked, st.acked);
    cr_assert_eq(acked, MESSAGES);
    cr_assert_eq(nacked, st.nacked);
    cr_assert_eq(redelivered, st.redelivered);
    cr_assert_eq(delivered, acked + nacked, "every delivery was acked or nacked");
    cr_assert_gt(nacked, 0, "some were nacked");

    /* a short out buffer: the first entries only, *n says how many */
    h_assert_rc(shmq_consumer_stats(run.q, cs, 2, &n), 0);
    cr_assert_eq(n, 2);
    h_assert_rc(shmq_consumer_stats(run.q, NULL, 0, &n), 0);
    cr_assert_eq(n, 0);
    h_assert_rc(shmq_consumer_stats(run.q, NULL, 1, &n), -EINVAL);
    h_assert_rc(shmq_consumer_stats(NULL, cs, 1, &n), -EINVAL);
    h_assert_rc(shmq_consumer_stats(run.q, cs, 1, NULL), -EINVAL);

    /* a closed consumer leaves the list; the queue's totals keep what it did */
    h_assert_rc(shmq_consumer_close(w[0].c), 0);
    h_assert_rc(shmq_consumer_stats(run.q, cs, 16, &n), 0);
    cr_assert_eq(n, CONSUMERS - 1);
    cr_assert_null(find_entry(cs, n, "worker0"));
    shmq_stats_t after;
    h_assert_rc(shmq_stats(run.q, &after), 0);
    cr_assert_eq(after.acked, st.acked);
    for (int i = 1; i < CONSUMERS; i++)
        h_assert_rc(shmq_consumer_close(w[i].c), 0);
    h_assert_rc(shmq_close(watchdog), 0);
    h_assert_rc(shmq_close(run.q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* A delivery past its ack deadline is taken back from its consumer: that consumer's
 * reclaimed_from counts it, the other's does not; `shmq stat --json` shows the same per
 * consumer process. */
Test(consumer_stats, reclaimed_from_counts_what_was_taken_back)
{
    const char *name = h_qname("creclaim");
    shmq_config_t cfg = h_small_config(16, 32, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.ack_deadline_ms = 50;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_consumer_t *slow, *idle;
    h_assert_rc(shmq_consumer_open(q, "slow", &slow), 0);
    h_assert_rc(shmq_consumer_open(q, "idle", &idle), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "y", 1, NULL), 0);
    shmq_msg_t m1, m2;
    h_assert_rc(shmq_receive(slow, &m1, 1000), 0);
    h_assert_rc(shmq_receive(slow, &m2, 1000), 0);
    /* neither is acked: once their deadline passes, maintenance takes both back */
    uint32_t expired = 0;
    int64_t bound = h_now_ms() + 20000;
    while (expired < 2 && h_now_ms() < bound) {
        shmq_maint_report_t rep;
        h_assert_rc(shmq_maintain(q, &rep), 0);
        expired += rep.deadline_expired;
        if (expired < 2)
            h_sleep_ms(10);
    }
    cr_assert_eq(expired, 2, "both deliveries expired within 20 s");
    shmq_consumer_stats_t cs[8];
    size_t n;
    h_assert_rc(shmq_consumer_stats(q, cs, 8, &n), 0);
    cr_assert_eq(n, 2);
    const shmq_consumer_stats_t *s = find_entry(cs, n, "slow"), *i = find_entry(cs, n, "idle");
    cr_assert(s && i);
    cr_assert_eq(s->reclaimed_from, 2);
    cr_assert_eq(s->delivered, 2);
    cr_assert_eq(s->acked, 0);
    cr_assert_eq(i->reclaimed_from, 0);
    cr_assert_eq(i->delivered, 0);
    h_assert_rc(shmq_ack(slow, &m1), -ESTALE); /* taken back: not counted as acked */
    h_assert_rc(shmq_consumer_stats(q, cs, 8, &n), 0);
    cr_assert_eq(find_entry(cs, n, "slow")->acked, 0);

    /* shmq stat shows each consumer's own counters */
    struct run r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    struct jval *d = json_parse(r.out);
    struct jval *procs = jget(d, "processes");
    cr_assert(procs && procs->type == J_ARR);
    int seen = 0;
    for (size_t k = 0; k < procs->n; k++) {
        struct jval *p = procs->items[k];
        struct jval *pname = jget(p, "name");
        if (!pname || pname->type != J_STR)
            continue;
        if (strcmp(pname->str, "slow") == 0) {
            jassert_num(p, "delivered", 2);
            jassert_num(p, "acked", 0);
            jassert_num(p, "nacked", 0);
            jassert_num(p, "reclaimed_from", 2);
            seen++;
        } else if (strcmp(pname->str, "idle") == 0) {
            jassert_num(p, "delivered", 0);
            jassert_num(p, "reclaimed_from", 0);
            seen++;
        }
    }
    cr_assert_eq(seen, 2, "both consumers are listed with their counters");
    json_free(d);
    run_free(&r);

    h_assert_rc(shmq_consumer_close(slow), 0);
    h_assert_rc(shmq_consumer_close(idle), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
