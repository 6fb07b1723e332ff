/*
 * test_stall.c - stopped and killed peers, through the crash points of src/crashpoint.h.
 *
 * A child process is stopped (SIGSTOP, SHMQ_CRASH_SIGNAL=STOP) or killed (SIGKILL) at one
 * named crash point of publish, receive, ack, nack or maintain. While it is stopped, other
 * processes publish and receive many messages through a small queue, so the rings wrap past
 * the stalled process's position many times: the queue must not stall (DESIGN.md, principle
 * 2). Then the child is continued (its operation completes) or was killed (maintenance repairs
 * what it left), and the test checks where its message went: delivered exactly once when it was
 * published, never when its payload was not committed, and no slot leaked.
 *
 * Crash-point children are forked through h_fork_gated() before this process makes a library
 * call that passes a crash point (see helpers.h). Every wait is bounded.
 */
#include "helpers.h"
#include "segment.h"

#include <sched.h>

TestSuite(stall, .fini = h_cleanup, .timeout = 180);

#define CAP 16
#define TRAFFIC 600 /* messages through the queue while a peer is stalled */
#define REPAIR_BOUND_MS 3000

enum sig { SIG_STOP, SIG_KILL };

struct peer {
    char qname[SHMQ_NAME_MAX + 1];
    char point[48];
    enum sig sig;
    int recv_timeout_ms;
    uint32_t nack_delay_ms;
    /* results, written by the child */
    _Atomic int attached;
    _Atomic int rc;     /* of the operation that met the crash point */
    _Atomic int ack_rc; /* of the ack that followed a receive */
    _Atomic int rc2;    /* of a receive after that */
    _Atomic uint64_t id;
    _Atomic uint32_t attempt;
    char data[32];
};

static void skip_without_crash_points(void)
{
#ifndef SHMQ_CRASH_POINTS
    cr_skip_test("the library was built without SHMQ_CRASH_POINTS");
#endif
}

static void arm(const struct peer *p)
{
    setenv("SHMQ_CRASH_AT", p->point, 1);
    if (p->sig == SIG_STOP)
        setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    else
        unsetenv("SHMQ_CRASH_SIGNAL");
    unsetenv("SHMQ_CRASH_SKIP");
}

static struct peer *new_peer(const char *qname, const char *point, enum sig sig)
{
    struct peer *p = h_shared_alloc(sizeof *p);
    snprintf(p->qname, sizeof p->qname, "%s", qname);
    snprintf(p->point, sizeof p->point, "%s", point);
    p->sig = sig;
    p->rc = 1;
    p->ack_rc = 1;
    p->rc2 = 1;
    p->recv_timeout_ms = 2000;
    return p;
}

/* ---- the children ------------------------------------------------------------------------ */

/* Publish "STALLED" once, crash point armed. */
static int stalled_producer(void *arg)
{
    struct peer *p = arg;
    arm(p);
    shmq_t *q;
    if (shmq_open(p->qname, &q) != 0)
        return 50;
    atomic_store(&p->attached, 1);
    uint64_t id = 0;
    int rc = shmq_publish(q, "STALLED", 7, &id);
    atomic_store(&p->id, id);
    atomic_store(&p->rc, rc);
    shmq_close(q);
    return rc == 0 ? 0 : 51;
}

/* Receive one message (crash point armed), record it, ack it, try one more receive. */
static int stalled_consumer(void *arg)
{
    struct peer *p = arg;
    arm(p);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(p->qname, &q) != 0 || shmq_consumer_open(q, "stalled", &c) != 0)
        return 60;
    atomic_store(&p->attached, 1);
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, p->recv_timeout_ms);
    if (rc == 0) {
        memcpy(p->data, m.data, m.len < sizeof p->data ? m.len : sizeof p->data - 1);
        atomic_store(&p->id, m.id);
        atomic_store(&p->attempt, m.attempt);
    }
    atomic_store(&p->rc, rc);
    if (rc == 0)
        atomic_store(&p->ack_rc, shmq_ack(c, &m));
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

/* Receive one message and nack it (crash point armed: nack_after_requeue). */
static int stalled_nacker(void *arg)
{
    struct peer *p = arg;
    arm(p);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(p->qname, &q) != 0 || shmq_consumer_open(q, "nacker", &c) != 0)
        return 70;
    atomic_store(&p->attached, 1);
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, p->recv_timeout_ms);
    atomic_store(&p->rc, rc);
    if (rc != 0)
        return 71;
    atomic_store(&p->id, m.id);
    atomic_store(&p->ack_rc, shmq_nack(c, &m, p->nack_delay_ms));
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

/* Run one maintenance step (crash point armed: maintain_after_fence). */
static int stalled_maintainer(void *arg)
{
    struct peer *p = arg;
    arm(p);
    shmq_t *q;
    if (shmq_open(p->qname, &q) != 0)
        return 80;
    atomic_store(&p->attached, 1);
    atomic_store(&p->rc, shmq_maintain(q, NULL));
    shmq_close(q);
    return 0;
}

/* A plain producer of TRAFFIC messages "h%05d" (no crash point). */
struct traffic {
    const char *qname;
    int count;
    _Atomic int failed;
};

static int traffic_producer(void *arg)
{
    struct traffic *t = arg;
    shmq_t *q;
    if (shmq_open(t->qname, &q) != 0)
        return 90;
    for (int i = 0; i < t->count; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "h%05d", i % 100000);
        int rc = shmq_publish_timed(q, buf, 6, NULL, 3000);
        if (rc != 0) {
            atomic_store(&t->failed, rc);
            shmq_close(q);
            return 91;
        }
    }
    shmq_close(q);
    return 0;
}

/* ---- the test process's side ---------------------------------------------------------------- */

struct tally {
    int helper;  /* traffic messages received, in order */
    int stalled; /* "STALLED" or "TARGET" messages received */
    uint32_t stalled_attempt;
    uint32_t stalled_flags;
};

static bool is_special(const shmq_msg_t *m)
{
    return (m->len == 7 && memcmp(m->data, "STALLED", 7) == 0) ||
           (m->len == 6 && memcmp(m->data, "TARGET", 6) == 0);
}

/* Take one message: count it in t (checking the traffic order) and ack it. */
static void take(shmq_consumer_t *c, const shmq_msg_t *m, struct tally *t)
{
    if (is_special(m)) {
        t->stalled++;
        t->stalled_attempt = m->attempt;
        t->stalled_flags = m->flags;
    } else {
        char want[16];
        snprintf(want, sizeof want, "h%05d", t->helper % TRAFFIC); /* per traffic run */
        cr_assert(m->len == 6 && memcmp(m->data, want, 6) == 0,
                  "traffic out of order or corrupt: got %.*s, expected %s", (int)m->len,
                  (const char *)m->data, want);
        t->helper++;
    }
    h_assert_rc(shmq_ack(c, m), 0);
}

/*
 * While a peer is stalled: a forked producer publishes TRAFFIC messages through the CAP-slot
 * queue and this process receives them all. Fails if the queue stalls.
 */
static void run_traffic(const char *qname, shmq_consumer_t *c, struct tally *t)
{
    struct traffic *tr = h_shared_alloc(sizeof *tr);
    tr->qname = qname;
    tr->count = TRAFFIC;
    pid_t pid = h_fork(traffic_producer, tr);
    int64_t end = h_now_ms() + 60000;
    int start = t->helper;
    while (t->helper - start < TRAFFIC) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 20000);
        cr_assert_eq(rc, 0, "queue stalled: receive = %d (%s) after %d of %d traffic messages", rc,
                     shmq_strerror(rc), t->helper - start, TRAFFIC);
        take(c, &m, t);
        cr_assert(h_now_ms() < end, "traffic took too long");
    }
    h_assert_child_ok(pid, 30000, "traffic producer");
    cr_assert_eq(tr->failed, 0);
    munmap(tr, sizeof *tr);
}

/* Drain what is ready now (poll) into t. */
static void drain(shmq_consumer_t *c, struct tally *t)
{
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0)
        take(c, &m, t);
}

/* Wait for the gated child to stop at its crash point. */
static void expect_stopped(pid_t pid, const char *point)
{
    int st = 0;
    char buf[96];
    int rc = h_wait_stopped(pid, 5000, &st);
    cr_assert_eq(rc, 0, "child did not stop at %s (%s)", point,
                 rc == -ETIMEDOUT ? "timed out" : h_status_str(st, buf, sizeof buf));
}

/* Wait for the gated child to be killed at its crash point, and reap it. */
static void expect_killed(pid_t pid, const char *point)
{
    int st = 0;
    char buf[96];
    int rc = h_waitpid(pid, 30000, 0, &st);
    cr_assert_eq(rc, 0, "child did not die at %s within 5 s", point);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child at %s: %s", point,
              h_status_str(st, buf, sizeof buf));
}

static shmq_t *create_queue(const char *name, shmq_consumer_t **c)
{
    shmq_config_t cfg = h_small_config(CAP, 64, 16);
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "main", c), 0);
    return q;
}

/*
 * Run maintenance and drain until done(t) or REPAIR_BOUND_MS; *rep accumulates the reports.
 * Returns true if done(t) held.
 */
static bool repair_loop(shmq_t *q, shmq_consumer_t *c, struct tally *t,
                        bool (*done)(shmq_t *, const struct tally *), shmq_maint_report_t *rep)
{
    int64_t end = h_now_ms() + REPAIR_BOUND_MS;
    for (;;) {
        shmq_maint_report_t r = {0};
        h_assert_rc(shmq_maintain(q, &r), 0);
        rep->procs_dead += r.procs_dead;
        rep->reclaimed += r.reclaimed;
        rep->deadline_expired += r.deadline_expired;
        rep->orphans_requeued += r.orphans_requeued;
        rep->reservations_freed += r.reservations_freed;
        rep->delayed_fired += r.delayed_fired;
        rep->dead_lettered += r.dead_lettered;
        drain(c, t);
        if (done(q, t))
            return true;
        if (h_now_ms() >= end)
            return false;
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 20);
        if (rc == 0)
            take(c, &m, t);
    }
}

static bool all_free(shmq_t *q)
{
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    return st.free == CAP;
}

static bool done_all_free(shmq_t *q, const struct tally *t) { return all_free(q); }

static bool done_delivered(shmq_t *q, const struct tally *t) { return t->stalled >= 1; }

static bool done_delivered_and_free(shmq_t *q, const struct tally *t)
{
    return t->stalled >= 1 && all_free(q);
}

/* The queue still takes CAP messages at once (no slot leaked, even one absent from the free
 * ring); they are drained again afterwards. */
static void expect_full_capacity(shmq_t *q, shmq_consumer_t *c, struct tally *t)
{
    int64_t end = h_now_ms() + REPAIR_BOUND_MS;
    for (;;) {
        int n = 0, rc = 0;
        while (n < CAP && (rc = shmq_publish(q, "filler", 6, NULL)) == 0)
            n++;
        shmq_msg_t m;
        for (int i = 0; i < n; i++) {
            h_assert_rc(shmq_receive(c, &m, 1000), 0);
            cr_assert(m.len == 6 && memcmp(m.data, "filler", 6) == 0, "unexpected message");
            h_assert_rc(shmq_ack(c, &m), 0);
        }
        if (n == CAP)
            return;
        cr_assert(h_now_ms() < end, "only %d of %d slots usable after repair (last rc %d)", n, CAP,
                  rc);
        shmq_maintain(q, NULL);
        h_sleep_ms(20);
    }
}

static void finish(const char *name, shmq_t *q, shmq_consumer_t *c)
{
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.free, CAP,
                 "slots not free at the end: ready %u inflight %u reserved %u "
                 "delayed %u dead %u",
                 st.ready, st.inflight, st.reserved, st.delayed, st.dead);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* What start_stalled() gives a test: the queue (with our consumer "main") and the peer. */
struct stall {
    const char *name;
    struct peer *p;
    pid_t pid;
    shmq_t *q;
    shmq_consumer_t *c;
};

enum target { NO_TARGET, WITH_TARGET };

/*
 * The start of a test with one stalled peer: child (with a new peer meeting point, where it is
 * stopped or killed as sig says) is forked gated before this process makes a library call; then
 * the queue is made, TARGET published first when asked (its id in *target_id unless that is
 * NULL), the gate opened, and the child seen stopped at, or killed at, point.
 */
static struct stall start_stalled(const char *tag, const char *point, enum sig sig,
                                  h_child_fn child, enum target target, uint64_t *target_id)
{
    skip_without_crash_points();
    struct stall s;
    s.name = h_qname(tag);
    s.p = new_peer(s.name, point, sig);
    s.pid = h_fork_gated(child, s.p);
    s.q = create_queue(s.name, &s.c);
    if (target == WITH_TARGET)
        h_assert_rc(shmq_publish(s.q, "TARGET", 6, target_id), 0);
    h_open_gate(s.pid);
    if (sig == SIG_STOP)
        expect_stopped(s.pid, point);
    else
        expect_killed(s.pid, point);
    return s;
}

/* ---- producers ------------------------------------------------------------------------------ */

/* Is the message of a producer stopped at point visible to consumers before it continues? */
static bool payload_committed(const char *point)
{
    return strcmp(point, "publish_after_reserve") != 0 &&
           strcmp(point, "publish_after_write") != 0 && strcmp(point, "publish_after_log") != 0;
}

static void producer_stopped_at(const char *point)
{
    struct stall s = start_stalled("pstop", point, SIG_STOP, stalled_producer, NO_TARGET, NULL);

    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    drain(s.c, &t);
    if (!payload_committed(point))
        cr_assert_eq(t.stalled, 0, "%s: an uncommitted message was delivered", point);
    cr_assert(t.stalled <= 1, "%s: the stalled message was delivered %d times", point, t.stalled);

    /* Continued, its publish completes and its message is delivered (once). */
    kill(s.pid, SIGCONT);
    h_assert_child_ok(s.pid, 30000, point);
    h_assert_rc(s.p->rc, 0);
    if (t.stalled == 0) {
        shmq_msg_t m;
        int rc = shmq_receive(s.c, &m, 2000);
        cr_assert_eq(rc, 0, "%s: the continued producer's message never came (%d)", point, rc);
        cr_assert(is_special(&m), "%s: unexpected message", point);
        cr_expect_eq(m.id, s.p->id, "%s: id %llu, publish returned %llu", point,
                     (unsigned long long)m.id, (unsigned long long)s.p->id);
        take(s.c, &m, &t);
    }
    /* Maintenance must not make a duplicate of it either. */
    shmq_maint_report_t rep = {0};
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    h_sleep_ms(150); /* past the orphan grace period: a wrong re-enqueue would show now */
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 1, "%s: the stalled message was delivered %d times", point, t.stalled);
    finish(s.name, s.q, s.c);
}

Test(stall, producer_stopped_after_reserve) { producer_stopped_at("publish_after_reserve"); }
Test(stall, producer_stopped_after_write) { producer_stopped_at("publish_after_write"); }
Test(stall, producer_stopped_after_log) { producer_stopped_at("publish_after_log"); }
Test(stall, producer_stopped_after_commit) { producer_stopped_at("publish_after_commit"); }
Test(stall, producer_stopped_after_enqueue) { producer_stopped_at("publish_after_enqueue"); }

static void producer_killed_at(const char *point)
{
    struct stall s = start_stalled("pkill", point, SIG_KILL, stalled_producer, NO_TARGET, NULL);

    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    shmq_maint_report_t rep = {0};
    bool enqueued = strcmp(point, "publish_after_enqueue") == 0;
    bool ok = repair_loop(s.q, s.c, &t, enqueued ? done_delivered_and_free : done_all_free, &rep);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(s.q, &st), 0);
    cr_assert(ok, "%s: not repaired within %d ms: reserved %u ready %u free %u, delivered %d",
              point, REPAIR_BOUND_MS, st.reserved, st.ready, st.free, t.stalled);
    h_sleep_ms(150); /* past the orphan grace: no late duplicate */
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    if (!payload_committed(point)) {
        /* (the reservation may be freed by the cooperative maintenance inside receive, so
         * rep.reservations_freed of our own passes may be 0: free == CAP is the check) */
        cr_expect_eq(t.stalled, 0, "%s: an uncommitted message was delivered", point);
    } else if (enqueued) {
        cr_expect_eq(t.stalled, 1, "%s: the enqueued message was delivered %d times", point,
                     t.stalled);
    } else {
        /* READY in no ring: delivered (at-least-once) or not, but never twice, never leaked */
        cr_expect(t.stalled <= 1, "%s: delivered %d times", point, t.stalled);
    }
    cr_expect_eq(st.reserved, 0u);
    expect_full_capacity(s.q, s.c, &t);
    finish(s.name, s.q, s.c);
}

Test(stall, producer_killed_after_reserve) { producer_killed_at("publish_after_reserve"); }
Test(stall, producer_killed_after_write) { producer_killed_at("publish_after_write"); }
Test(stall, producer_killed_after_log) { producer_killed_at("publish_after_log"); }
Test(stall, producer_killed_after_commit) { producer_killed_at("publish_after_commit"); }
Test(stall, producer_killed_after_enqueue) { producer_killed_at("publish_after_enqueue"); }

/* ---- consumers ------------------------------------------------------------------------------ */

static void consumer_stopped_at(const char *point)
{
    uint64_t target;
    struct stall s =
        start_stalled("cstop", point, SIG_STOP, stalled_consumer, WITH_TARGET, &target);

    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    drain(s.c, &t);
    bool claimed = strcmp(point, "receive_after_claim") == 0;
    if (claimed)
        cr_assert_eq(t.stalled, 0,
                     "%s: a message in flight to a live (briefly stopped) consumer was "
                     "delivered to another one",
                     point);

    /* Continued: its receive completes with TARGET (unless repair already gave TARGET to us,
     * which fences its stale ring entry), and its ack succeeds. */
    kill(s.pid, SIGCONT);
    h_assert_child_ok(s.pid, 30000, point);
    bool child_got = s.p->rc == 0 && strcmp(s.p->data, "TARGET") == 0;
    if (s.p->rc == 0) {
        cr_expect(child_got, "%s: the continued consumer got %s", point, s.p->data);
        h_assert_rc(s.p->ack_rc, 0);
        cr_expect_eq(s.p->id, target);
    } else {
        cr_expect(s.p->rc == -ETIMEDOUT, "%s: the continued consumer's receive = %d", point,
                  s.p->rc);
    }
    shmq_maint_report_t rep = {0};
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    h_sleep_ms(150);
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled + (child_got ? 1 : 0), 1,
                 "%s: TARGET delivered %d times to us and %d to the stopped consumer", point,
                 t.stalled, child_got ? 1 : 0);
    finish(s.name, s.q, s.c);
}

Test(stall, consumer_stopped_after_dequeue) { consumer_stopped_at("receive_after_dequeue"); }
Test(stall, consumer_stopped_after_claim) { consumer_stopped_at("receive_after_claim"); }

static void consumer_killed_at(const char *point)
{
    uint64_t target;
    struct stall s =
        start_stalled("ckill", point, SIG_KILL, stalled_consumer, WITH_TARGET, &target);

    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    /* The published TARGET must come back through maintenance (bounded). */
    shmq_maint_report_t rep = {0};
    bool ok = repair_loop(s.q, s.c, &t, done_delivered_and_free, &rep);
    cr_assert(ok,
              "%s: TARGET not delivered within %d ms of maintenance (orphans requeued %u, "
              "reclaimed %u, procs dead %u)",
              point, REPAIR_BOUND_MS, rep.orphans_requeued, rep.reclaimed, rep.procs_dead);
    h_sleep_ms(150);
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 1, "%s: TARGET delivered %d times", point, t.stalled);
    if (strcmp(point, "receive_after_claim") == 0) {
        /* The claim made it INFLIGHT, but the receive never returned it to the application
         * (attempt is counted after this point): attempt 1 or 2 are both honest, and the flag
         * must agree with the attempt. */
        cr_expect(t.stalled_attempt == 1 || t.stalled_attempt == 2, "%s: redelivery has attempt %u",
                  point, t.stalled_attempt);
        cr_expect_eq(!!(t.stalled_flags & SHMQ_MSG_REDELIVERED), t.stalled_attempt > 1,
                     "%s: attempt %u but flags %#x", point, t.stalled_attempt, t.stalled_flags);
    }
    finish(s.name, s.q, s.c);
}

Test(stall, consumer_killed_after_dequeue) { consumer_killed_at("receive_after_dequeue"); }
Test(stall, consumer_killed_after_claim) { consumer_killed_at("receive_after_claim"); }

/* ---- ack, nack, maintain -------------------------------------------------------------------- */

Test(stall, acker_killed_after_free_leaks_no_slot)
{
    struct stall s =
        start_stalled("ackkill", "ack_after_free", SIG_KILL, stalled_consumer, WITH_TARGET, NULL);
    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    shmq_maint_report_t rep = {0};
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 0, "an acked message was delivered again");
    expect_full_capacity(s.q, s.c, &t);
    finish(s.name, s.q, s.c);
}

Test(stall, acker_stopped_after_free_does_not_stall_queue)
{
    struct stall s =
        start_stalled("ackstop", "ack_after_free", SIG_STOP, stalled_consumer, WITH_TARGET, NULL);
    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    kill(s.pid, SIGCONT);
    h_assert_child_ok(s.pid, 30000, "ack_after_free");
    h_assert_rc(s.p->ack_rc, 0);
    shmq_maint_report_t rep = {0};
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 0, "an acked message was delivered again");
    expect_full_capacity(s.q, s.c, &t);
    finish(s.name, s.q, s.c);
}

Test(stall, nacker_killed_after_requeue_message_redelivered)
{
    struct stall s = start_stalled("nackkill", "nack_after_requeue", SIG_KILL, stalled_nacker,
                                   WITH_TARGET, NULL);
    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    shmq_maint_report_t rep = {0};
    bool ok = repair_loop(s.q, s.c, &t, done_delivered_and_free, &rep);
    cr_assert(ok, "nacked TARGET not redelivered within %d ms", REPAIR_BOUND_MS);
    h_sleep_ms(150);
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 1, "TARGET delivered %d times", t.stalled);
    cr_expect_eq(t.stalled_attempt, 2u);
    finish(s.name, s.q, s.c);
}

Test(stall, nacker_stopped_after_requeue_does_not_stall_queue)
{
    struct stall s = start_stalled("nackstop", "nack_after_requeue", SIG_STOP, stalled_nacker,
                                   WITH_TARGET, NULL);
    struct tally t = {0};
    run_traffic(s.name, s.c, &t);
    kill(s.pid, SIGCONT);
    h_assert_child_ok(s.pid, 30000, "nack_after_requeue");
    h_assert_rc(s.p->ack_rc, 0); /* the nack's result */
    shmq_maint_report_t rep = {0};
    bool ok = repair_loop(s.q, s.c, &t, done_delivered_and_free, &rep);
    cr_assert(ok, "nacked TARGET not redelivered within %d ms", REPAIR_BOUND_MS);
    h_sleep_ms(150);
    repair_loop(s.q, s.c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 1, "TARGET delivered %d times", t.stalled);
    finish(s.name, s.q, s.c);
}

/* A consumer that receives TARGET and is then killed by the test (no crash point). */
static int plain_receiver(void *arg)
{
    struct peer *p = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(p->qname, &q) != 0 || shmq_consumer_open(q, "victim", &c) != 0)
        return 100;
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, 2000);
    atomic_store(&p->rc, rc);
    atomic_store(&p->attached, 1);
    for (;;)
        pause(); /* holds TARGET in flight until killed */
}

Test(stall, maintainer_killed_after_fence_next_one_finishes)
{
    skip_without_crash_points();
    const char *name = h_qname("mkill");
    struct peer *mp = new_peer(name, "maintain_after_fence", SIG_KILL);
    pid_t maint = h_fork_gated(stalled_maintainer, mp);
    struct peer *vp = new_peer(name, "", SIG_KILL);
    shmq_consumer_t *c;
    shmq_t *q = create_queue(name, &c);
    h_assert_rc(shmq_publish(q, "TARGET", 6, NULL), 0);
    pid_t victim = h_fork(plain_receiver, vp);
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(&vp->attached) && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert(vp->attached && vp->rc == 0, "victim did not receive TARGET (%d)", vp->rc);
    kill(victim, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(victim, 30000, 0, &st), 0);

    /* The maintainer fences the dead victim's delivery and dies before re-enqueueing it. */
    h_open_gate(maint);
    int rc = h_waitpid(maint, 30000, 0, &st);
    cr_assert_eq(rc, 0, "maintainer did not finish");
    char buf[96];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "maintainer did not die at maintain_after_fence: %s (maintain = %d)",
              h_status_str(st, buf, sizeof buf), mp->rc);

    struct tally t = {0};
    shmq_maint_report_t rep = {0};
    bool ok = repair_loop(q, c, &t, done_delivered_and_free, &rep);
    cr_assert(ok, "TARGET not redelivered after the maintainer died (within %d ms)",
              REPAIR_BOUND_MS);
    h_sleep_ms(150);
    repair_loop(q, c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled, 1, "TARGET delivered %d times", t.stalled);
    cr_expect_eq(t.stalled_attempt, 2u);
    run_traffic(name, c, &t);
    finish(name, q, c);
}

/* ---- a stopped consumer declared dead is fenced ------------------------------------------- */

static int self_stopping_consumer(void *arg)
{
    struct peer *p = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(p->qname, &q) != 0 || shmq_consumer_open(q, "sleepy", &c) != 0)
        return 110;
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, 2000);
    atomic_store(&p->rc, rc);
    if (rc != 0)
        return 111;
    atomic_store(&p->attached, 1);
    raise(SIGSTOP); /* a consumer stalled in its handler */
    atomic_store(&p->ack_rc, shmq_ack(c, &m));
    shmq_msg_t m2;
    atomic_store(&p->rc2, shmq_receive(c, &m2, 0));
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(stall, stopped_consumer_past_heartbeat_timeout_is_fenced)
{
    const char *name = h_qname("hbfence");
    shmq_config_t cfg = h_small_config(CAP, 64, 16);
    cfg.heartbeat_timeout_ms = 300;
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "main", &c), 0);
    /* idle until the child stops: without beats it would itself be fenced after 900 ms, which
     * a loaded machine can take (issue 16 item 4) */
    h_assert_rc(shmq_consumer_heartbeat_thread(c, 20), 0);
    h_assert_rc(shmq_publish(q, "TARGET", 6, NULL), 0);
    struct peer *p = new_peer(name, "", SIG_STOP);
    pid_t pid = h_fork(self_stopping_consumer, p);
    expect_stopped(pid, "raise(SIGSTOP) after receive");
    cr_assert_eq(p->rc, 0);

    /* Past the heartbeat timeout, maintenance reclaims TARGET for another consumer. (Its slot
     * then stays FENCED, not free, while the stopped consumer lives: shmq.h, liveness rule.) */
    struct tally t = {0};
    shmq_maint_report_t rep = {0};
    bool ok = repair_loop(q, c, &t, done_delivered, &rep);
    cr_assert(ok,
              "TARGET of a consumer stopped past the heartbeat timeout was not "
              "redelivered within %d ms",
              REPAIR_BOUND_MS);
    cr_expect_eq(t.stalled_attempt, 2u);
    cr_expect(t.stalled_flags & SHMQ_MSG_REDELIVERED);

    /* The stale consumer wakes up: its ack and its next receive are fenced. */
    kill(pid, SIGCONT);
    h_assert_child_ok(pid, 30000, "fenced consumer");
    cr_expect_eq(p->ack_rc, -ESTALE, "ack of a fenced delivery = %d", p->ack_rc);
    cr_expect_eq(p->rc2, -ESTALE, "receive of a consumer declared dead = %d", p->rc2);
    /* It has let go (closed, exited): the fenced slot is freed. */
    ok = repair_loop(q, c, &t, done_all_free, &rep);
    cr_expect(ok, "the fenced slot was not freed after its consumer let go");
    cr_expect_eq(t.stalled, 1);
    finish(name, q, c);
}

/* ---- many stalled peers at once ------------------------------------------------------------ */

Test(stall, many_peers_stopped_at_once_do_not_stall_queue)
{
    /* Three producers and two consumers stopped at different crash points at the same time:
     * traffic still flows; continued, each completes, and every message is delivered once. */
    skip_without_crash_points();
    const char *name = h_qname("many");
    const char *ppoints[] = {"publish_after_reserve", "publish_after_commit",
                             "publish_after_enqueue"};
    const char *cpoints[] = {"receive_after_dequeue", "receive_after_claim"};
    struct peer *pp[3], *cp[2];
    pid_t ppid[3], cpid[2];
    for (int i = 0; i < 2; i++) {
        cp[i] = new_peer(name, cpoints[i], SIG_STOP);
        cp[i]->recv_timeout_ms = 3000;
        cpid[i] = h_fork_gated(stalled_consumer, cp[i]);
    }
    for (int i = 0; i < 3; i++) {
        pp[i] = new_peer(name, ppoints[i], SIG_STOP);
        ppid[i] = h_fork_gated(stalled_producer, pp[i]);
    }
    shmq_consumer_t *c;
    shmq_t *q = create_queue(name, &c);
    h_assert_rc(shmq_publish(q, "TARGET", 6, NULL), 0);
    h_assert_rc(shmq_publish(q, "TARGET", 6, NULL), 0);
    for (int i = 0; i < 2; i++) {
        h_open_gate(cpid[i]);
        expect_stopped(cpid[i], cpoints[i]);
    }
    for (int i = 0; i < 3; i++) {
        h_open_gate(ppid[i]);
        expect_stopped(ppid[i], ppoints[i]);
    }
    struct tally t = {0};
    run_traffic(name, c, &t);
    run_traffic(name, c, &t);
    for (int i = 0; i < 3; i++)
        kill(ppid[i], SIGCONT);
    for (int i = 0; i < 2; i++)
        kill(cpid[i], SIGCONT);
    for (int i = 0; i < 3; i++) {
        h_assert_child_ok(ppid[i], 30000, ppoints[i]);
        h_assert_rc(pp[i]->rc, 0);
    }
    int child_got = 0;
    for (int i = 0; i < 2; i++) {
        h_assert_child_ok(cpid[i], 6000, cpoints[i]);
        if (cp[i]->rc == 0) {
            cr_expect(strcmp(cp[i]->data, "TARGET") == 0 || strcmp(cp[i]->data, "STALLED") == 0,
                      "%s: got %s", cpoints[i], cp[i]->data);
            h_assert_rc(cp[i]->ack_rc, 0);
            child_got++;
        }
    }
    shmq_maint_report_t rep = {0};
    int64_t end = h_now_ms() + REPAIR_BOUND_MS;
    while (t.stalled + child_got < 5 && h_now_ms() < end)
        repair_loop(q, c, &t, done_all_free, &rep);
    h_sleep_ms(150);
    repair_loop(q, c, &t, done_all_free, &rep);
    cr_expect_eq(t.stalled + child_got, 5,
                 "2 TARGET + 3 STALLED: %d delivered here, %d to the continued consumers",
                 t.stalled, child_got);
    finish(name, q, c);
}

/* ---- a consumer declared dead while asleep in receive ------------------------------------- */

static int sleeping_consumer(void *arg)
{
    struct peer *p = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(p->qname, &q) != 0 || shmq_consumer_open(q, "sleeper", &c) != 0)
        return 120;
    atomic_store(&p->attached, 1);
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, 5000);
    atomic_store(&p->rc, rc);
    if (rc == 0) {
        memcpy(p->data, m.data, m.len < sizeof p->data ? m.len : sizeof p->data - 1);
        atomic_store(&p->ack_rc, shmq_ack(c, &m));
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(stall, consumer_fenced_while_asleep_in_receive_gets_estale)
{
    /* shmq.h: receive returns -ESTALE "if this consumer was declared dead". A consumer stopped
     * while asleep in receive, fenced past its heartbeat timeout, then continued, must not
     * take the next message: it belongs to live consumers. */
    const char *name = h_qname("fencedsleep");
    shmq_config_t cfg = h_small_config(CAP, 64, 16);
    cfg.heartbeat_timeout_ms = 300;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct peer *p = new_peer(name, "", SIG_STOP);
    pid_t pid = h_fork(sleeping_consumer, p);
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(&p->attached) && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert(atomic_load(&p->attached));
    cr_assert_eq(h_wait_sleeping(pid, 30000), 0, "consumer did not go to sleep in receive");
    kill(pid, SIGSTOP);
    expect_stopped(pid, "SIGSTOP while asleep in receive");

    /* Maintenance declares it hung (stopped, heartbeat older than the timeout). */
    uint32_t hung = 0;
    end = h_now_ms() + REPAIR_BOUND_MS;
    while (hung == 0 && h_now_ms() < end) {
        shmq_maint_report_t r = {0};
        h_assert_rc(shmq_maintain(q, &r), 0);
        hung += r.procs_hung;
        h_sleep_ms(20);
    }
    cr_assert(hung >= 1, "a consumer stopped past its heartbeat timeout was not declared hung");

    h_assert_rc(shmq_publish(q, "AFTER", 5, NULL), 0);
    kill(pid, SIGCONT);
    h_assert_child_ok(pid, 8000, "fenced sleeper");
    cr_expect_eq(p->rc, -ESTALE,
                 "receive of a consumer declared dead while it slept = %d (%s)%s%s (its ack: %d)",
                 p->rc, shmq_strerror(p->rc), p->rc == 0 ? ", and it took " : "",
                 p->rc == 0 ? p->data : "", p->ack_rc);

    /* The message is for the living: processed once in all (a fenced consumer's ack fails). */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "main", &c), 0);
    int here = 0;
    end = h_now_ms() + REPAIR_BOUND_MS;
    for (;;) {
        shmq_maintain(q, NULL);
        shmq_msg_t m;
        while (shmq_receive(c, &m, 0) == 0) {
            cr_expect(m.len == 5 && memcmp(m.data, "AFTER", 5) == 0, "unexpected message");
            here++;
            h_assert_rc(shmq_ack(c, &m), 0);
        }
        if (all_free(q) || h_now_ms() >= end)
            break;
        h_sleep_ms(20);
    }
    bool child_processed = p->rc == 0 && p->ack_rc == 0;
    cr_expect_eq(here + (child_processed ? 1 : 0), 1,
                 "AFTER acked %d times here and %s by the fenced consumer (its ack = %d)", here,
                 child_processed ? "once" : "not", p->ack_rc);
    finish(name, q, c);
}

/* ---- a process stopped or killed inside attach ------------------------------------------- */

struct attacher {
    char qname[SHMQ_NAME_MAX + 1];
    int arm;             /* 0: no crash point; 1: stop, 2: kill at attach_after_claim */
    _Atomic int attached; /* set once shmq_open returned and it published */
    _Atomic int go;       /* set by the test: close and exit */
    _Atomic int rc;
};

static int attacher_main(void *arg)
{
    struct attacher *a = arg;
    if (a->arm) {
        setenv("SHMQ_CRASH_AT", "attach_after_claim", 1);
        if (a->arm == 1)
            setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
        else
            unsetenv("SHMQ_CRASH_SIGNAL");
        unsetenv("SHMQ_CRASH_SKIP");
    }
    shmq_t *q;
    int rc = shmq_open(a->qname, &q);
    if (rc == 0)
        rc = shmq_publish(q, "A", 1, NULL);
    atomic_store(&a->rc, rc);
    atomic_store(&a->attached, 1);
    int64_t end = h_now_ms() + 20000;
    while (!atomic_load(&a->go) && h_now_ms() < end)
        h_sleep_ms(1);
    if (rc == 0)
        shmq_close(q);
    return rc == 0 ? 0 : 40;
}

static struct attacher *new_attacher(const char *name, int arm)
{
    struct attacher *a = h_shared_alloc(sizeof *a);
    snprintf(a->qname, sizeof a->qname, "%s", name);
    a->arm = arm;
    a->rc = 1;
    return a;
}

static void wait_attached(struct attacher *a, const char *who)
{
    int64_t end = h_now_ms() + 10000;
    while (!atomic_load(&a->attached) && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert(atomic_load(&a->attached), "%s did not attach in time", who);
    h_assert_rc(atomic_load(&a->rc), 0);
}

/* Registry entries listing pid, in an ACTIVE state. */
static int entries_of(shmq_t *q, pid_t pid)
{
    shmq_proc_info_t info[16];
    size_t n = 0;
    h_assert_rc(shmq_procs(q, info, 16, &n), 0);
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += info[i].pid == pid && info[i].state == SHMQ_PROC_ACTIVE;
    return k;
}

Test(stall, attacher_stopped_after_claim_is_never_fenced)
{
    /* Issue 16 (item 4): maintenance judged a CLAIMED entry by the pid field its claimer was
     * still writing (the previous holder's pid, or 0 in a fresh segment): it fenced and freed
     * the entry under a live claimer, handed it to another process, and the claimer's late
     * stores then wrote its pid (and zeroed counters) over the newcomer's: the newcomer was
     * later declared dead while alive. A claimer stopped right after its claim is the window. */
    skip_without_crash_points();
    const char *name = h_qname("claimstop");
    struct attacher *a = new_attacher(name, 1), *b = new_attacher(name, 0);
    pid_t pa = h_fork_gated(attacher_main, a), pb = h_fork_gated(attacher_main, b);
    shmq_config_t cfg = h_small_config(CAP, 64, 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_open_gate(pa);
    expect_stopped(pa, "attach_after_claim");
    for (int i = 0; i < 3; i++) {
        shmq_maint_report_t r = {0};
        h_assert_rc(shmq_maintain(q, &r), 0);
        cr_assert_eq(r.procs_dead, 0, "a live process stopped inside attach was fenced");
    }
    h_open_gate(pb);
    wait_attached(b, "the second attacher");
    kill(pa, SIGCONT);
    wait_attached(a, "the continued attacher");
    cr_expect_eq(entries_of(q, pa), 1, "the continued attacher's entry");
    cr_expect_eq(entries_of(q, pb), 1, "the second attacher's entry (not overwritten)");
    shmq_maint_report_t r = {0};
    h_assert_rc(shmq_maintain(q, &r), 0);
    cr_expect_eq(r.procs_dead + r.procs_hung, 0, "a live process was fenced");
    atomic_store(&a->go, 1);
    atomic_store(&b->go, 1);
    h_assert_child_ok(pa, 10000, "continued attacher");
    h_assert_child_ok(pb, 10000, "second attacher");
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 2, "publishes counted: %llu", (unsigned long long)st.published);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

Test(stall, attacher_killed_after_claim_entry_is_reclaimed)
{
    skip_without_crash_points();
    const char *name = h_qname("claimkill");
    struct attacher *a = new_attacher(name, 2);
    pid_t pa = h_fork_gated(attacher_main, a);
    shmq_config_t cfg = h_small_config(CAP, 64, 2); /* two entries: ours and the one it took */
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_open_gate(pa);
    expect_killed(pa, "attach_after_claim");
    shmq_maint_report_t r = {0};
    h_assert_rc(shmq_maintain(q, &r), 0);
    cr_expect_eq(r.procs_dead, 1, "the entry of a claimer killed inside attach");
    shmq_t *q2;
    h_assert_rc(shmq_open(name, &q2), 0); /* the only other entry is free again */
    h_assert_rc(shmq_close(q2), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- a producer killed asleep in shmq_publish_timed -------------------------------------- */

static int timed_publisher(void *arg)
{
    struct peer *p = arg;
    shmq_t *q;
    if (shmq_open(p->qname, &q) != 0)
        return 130;
    atomic_store(&p->attached, 1);
    atomic_store(&p->rc, shmq_publish_timed(q, "LATE", 4, NULL, -1)); /* sleeps: queue full */
    shmq_close(q);
    return 0;
}

static uint32_t free_waiters(struct segment *seg)
{
    return atomic_load(&seg->hdr->free_waiters);
}

Test(stall, producer_killed_asleep_in_publish_timed_is_uncounted)
{
    /* Issue 16 (item 3): nothing marked a producer asleep in shmq_publish_timed, so one killed
     * there stayed counted in free_waiters, and every later free paid a FUTEX_WAKE. */
    const char *name = h_qname("freesleep");
    shmq_config_t cfg = h_small_config(1, 64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "FULL", 4, NULL), 0); /* the one slot is taken */
    struct segment seg;
    h_assert_rc(segment_open(name, true, &seg), 0);
    struct peer *p = new_peer(name, "", SIG_KILL);
    pid_t pid = h_fork(timed_publisher, p);
    int64_t end = h_now_ms() + 10000;
    while ((free_waiters(&seg) == 0 || h_proc_state(pid) != 'S') && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert_eq(free_waiters(&seg), 1, "the producer did not go to sleep in publish_timed");
    kill(pid, SIGKILL);
    int st;
    h_assert_rc(h_waitpid(pid, 30000, 0, &st), 0);
    cr_assert_eq(free_waiters(&seg), 1, "a killed sleeper stays counted until maintenance");
    shmq_maint_report_t r = {0};
    h_assert_rc(shmq_maintain(q, &r), 0);
    cr_expect_eq(r.procs_dead, 1);
    cr_expect_eq(free_waiters(&seg), 0, "maintenance left a dead producer counted asleep");
    h_assert_rc(shmq_maintain(q, &r), 0);
    cr_expect_eq(free_waiters(&seg), 0, "a second pass uncounted it again");
    segment_close(&seg);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- pid namespaces ----------------------------------------------------------------------- */

static int other_ns_opener(void *arg)
{
    const char *name = arg;
    if (unshare(CLONE_NEWPID) != 0)
        return 77; /* not permitted here */
    pid_t pid = fork(); /* the first child of a new pid namespace is its pid 1 */
    if (pid < 0)
        return 78;
    if (pid == 0) {
        shmq_t *q;
        int rc = shmq_open(name, &q);
        if (rc == 0)
            shmq_close(q);
        _exit(rc == 0 ? 0 : (-rc) & 0x7f);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 79;
}

Test(stall, attach_from_another_pid_namespace_is_refused)
{
    /* Issue 16 item 5: liveness is judged by pid; a process of another pid namespace has a pid
     * that names another process (or none) here, so the two would declare each other dead and
     * take back what the other holds. shmq refuses the mix at attach with -EXDEV. */
    const char *name = h_qname("pidns");
    shmq_config_t cfg = h_small_config(CAP, 64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    pid_t pid = h_fork(other_ns_opener, (void *)name);
    int st = 0;
    h_assert_rc(h_waitpid(pid, 10000, 0, &st), 0);
    cr_assert(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        shmq_close(q);
        shmq_unlink(name);
        cr_skip_test("unshare(CLONE_NEWPID) is not permitted here (needs CAP_SYS_ADMIN)");
    }
    cr_expect_eq(WEXITSTATUS(st), EXDEV, "shmq_open from another pid namespace: %d (%s)",
                 WEXITSTATUS(st), strerror(WEXITSTATUS(st)));
    shmq_stats_t s;
    h_assert_rc(shmq_stats(q, &s), 0);
    cr_expect_eq(s.procs, 1, "the refused process left an entry behind");
    shmq_maint_report_t r = {0};
    h_assert_rc(shmq_maintain(q, &r), 0);
    cr_expect_eq(r.procs_dead, 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
