/*
 * test_crash.c - every crash point, SIGKILL and SIGSTOP: the queue keeps flowing, every message
 * whose publish returned success is acked, nothing is stuck, and the counters add up.
 *
 * For each name in crashpoint_names[] (one parameterized test each, times KILL and STOP) a
 * victim process that fits the point is sent to it: a producer (publish_*), a consumer
 * (receive_*, ack_after_free, nack_after_requeue: receive + ack, or receive + nack(0)), or a
 * maintainer (maintain_after_fence: it reclaims the in-flight message of a consumer that was
 * SIGKILLed while holding it). The victim is armed with SHMQ_CRASH_AT, SHMQ_CRASH_SKIP (so some
 * operations succeed first) and, for STOP, SHMQ_CRASH_SIGNAL=STOP.
 *
 * Then another producer and a rescue consumer run while the test process plays the watchdog
 * (it holds the maintenance lease at priority 1, so consumers do not maintain behind its back,
 * and calls shmq_maintain() every 10 ms). KILL: the victim is dead and reaped. STOP: the victim
 * stays stopped while everything that was published is acked, then it gets SIGCONT and must
 * finish cleanly. At the end:
 *  - every message whose publish returned 0 was acked (one successful ack: an ack that returned
 *    0 twice for one message is a failure), no payload was corrupt;
 *  - after maintenance, shmq_stats() shows every slot FREE and only the test's own registry
 *    entry active, and a full cycle (capacity publishes, capacity receives) succeeds, so no slot
 *    was lost from its ring;
 *  - the counters match the book: published, delivered, acked, nacked;
 *  - the repair named by the point's row in docs/DESIGN.md happened (reservation freed, orphan
 *    requeued, in-flight reclaimed from the dead or hung).
 * maintain_after_fence is in the one function every move of maintenance goes through; besides
 * the reclaim above, the maintain_after_fence_* tests kill a maintainer in each other move
 * (firing a delayed message, freeing a dead reservation, releasing a fenced slot,
 * dead-lettering) and check that the next maintainer finishes it.
 * The dedup_* points (a keyed publish, shmq_publish_dedup) have a keyed victim producer (keys
 * "crash-key-SEQ") and a producer restarted after it that retries the same keys from the one
 * the victim crashed in. Each key is delivered exactly once and every publish of it that
 * returned 0 returned the delivered id: killed at dedup_after_decide, maintenance rolls the
 * decided message forward and the retry is answered its id; killed at dedup_before_decide, the
 * reservation is freed and the retry publishes it. STOP: the retry gets -EINPROGRESS while an
 * undecided publish of its key is stopped, and the decided one's id at once (that message is
 * delivered after SIGCONT: a live producer's reservation is its own).
 * SHMQ_CRASH_ONLY=NAME runs the parameterized tests for that point only (debugging).
 */
#include "torture.h"

#include <criterion/parameterized.h>

TestSuite(crash, .init = t_setup, .fini = t_teardown, .timeout = 90);

#define CAP 16
#define VICTIM_MSGS 6 /* a producer victim publishes these; it crashes in the 3rd */
#define SETUP_MSGS 8  /* published before a consumer victim starts */
#define OTHER_MSGS 40 /* published by the other producer while the victim is down */
#define SEQS 64       /* book size per producer */
#define WAIT_MS 10000 /* bound of every wait for progress */

enum { P_VICTIM, P_SETUP, P_OTHER, P_COUNT };
enum role { R_PRODUCER, R_CONSUMER_ACK, R_CONSUMER_NACK, R_MAINTAINER, R_DEDUP_PRODUCER };
enum cmode { C_RESCUE, C_VICTIM_ACK, C_VICTIM_NACK, C_HOLDER };

struct shared {
    char qname[SHMQ_NAME_MAX + 1];
    struct t_book *book;
    _Atomic int stop;           /* rescue consumers: drain and exit */
    _Atomic int holding;        /* holder: has its message */
    _Atomic long victim_in_ack; /* record index + 1 while the victim is inside shmq_ack */
    _Atomic long victim_in_nack;
    _Atomic int victim_estale; /* the victim saw -ESTALE (fenced) */
    _Atomic int victim_ops;
    _Atomic int victim_may_exit; /* a victim consumer that finds nothing more may end */
    /* keyed publishes (the dedup_* points): the id each keyed producer got per victim seq (0:
     * none yet), the id each delivery of a victim seq carried, -EINPROGRESS answers the
     * restarted producer got for the crashed seq, and the last unexpected error */
    _Atomic uint64_t keyed_id[2][SEQS];
    _Atomic uint64_t delivered_id[SEQS];
    _Atomic int retry_inprogress;
    _Atomic int keyed_error;
};

struct prod_arg {
    struct shared *sh;
    uint32_t producer, first, count;
};

struct cons_arg {
    struct shared *sh;
    int mode;
    int max_ops;
};

static int producer_main(void *argp)
{
    struct prod_arg *a = argp;
    shmq_t *q;
    if (shmq_open(a->sh->qname, &q) != 0)
        return 10;
    int64_t end = t_now_ms() + WAIT_MS;
    for (uint32_t s = a->first; s < a->first + a->count; s++) {
        int rc;
        while ((rc = t_publish(q, a->sh->book, a->producer, s, 200)) == -ETIMEDOUT)
            if (t_now_ms() > end)
                return 11;
        if (rc != 0)
            return 12;
    }
    shmq_close(q);
    return 0;
}

static long rec_index(struct t_book *b, const struct t_rec *r)
{
    return r ? (long)(r - b->rec) : -1;
}

/*
 * A keyed producer (the dedup_* points): publishes the victim's messages (P_VICTIM, seq) with
 * the key "crash-key-SEQ", so the victim (who 0) and a producer restarted after it (who 1)
 * that retries the same seqs publish the same bytes under the same keys. -EINPROGRESS (a
 * publish of that key under way elsewhere) and -EAGAIN (full) are retried within WAIT_MS.
 */
#define CRASH_SEQ 2 /* the keyed victim crashes in its 3rd publish (skip 2) */

struct keyed_arg {
    struct shared *sh;
    int who; /* 0: the victim, 1: the restarted producer */
    uint32_t first, count;
};

static int keyed_producer_main(void *argp)
{
    struct keyed_arg *a = argp;
    struct shared *sh = a->sh;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    int64_t end = t_now_ms() + 2 * WAIT_MS;
    for (uint32_t s = a->first; s < a->first + a->count; s++) {
        struct t_wire w;
        size_t n = t_fill(&w, P_VICTIM, s);
        char key[32];
        int klen = snprintf(key, sizeof key, "crash-key-%u", s);
        struct t_rec *r = t_rec_of(sh->book, P_VICTIM, s);
        atomic_fetch_add(&r->pub_begun, 1);
        uint64_t id = 0;
        int rc;
        while ((rc = shmq_publish_dedup(q, &w, n, key, (size_t)klen, &id)) != 0) {
            if (rc != -EINPROGRESS && rc != -EAGAIN) {
                atomic_store(&sh->keyed_error, rc);
                return 12;
            }
            if (rc == -EINPROGRESS && a->who == 1 && s == CRASH_SEQ)
                atomic_fetch_add(&sh->retry_inprogress, 1);
            if (t_now_ms() > end)
                return 11;
            t_sleep_ms(1);
        }
        atomic_store(&sh->keyed_id[a->who][s], id);
        atomic_fetch_add(&r->published, 1);
    }
    shmq_close(q);
    return 0;
}

static int consumer_main(void *argp)
{
    struct cons_arg *a = argp;
    struct shared *sh = a->sh;
    struct t_book *b = sh->book;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    if (shmq_consumer_open(q, "crash-test", &c) != 0)
        return 11;
    int64_t end = t_now_ms() + 3 * WAIT_MS;
    int ops = 0;
    while (t_now_ms() < end) {
        if (a->mode == C_RESCUE && atomic_load(&sh->stop))
            break;
        if (a->mode != C_RESCUE && ops >= a->max_ops)
            break;
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 100);
        if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR) {
            if (a->mode != C_RESCUE && atomic_load(&sh->victim_may_exit))
                break;
            continue;
        }
        if (rc == -ESTALE) { /* fenced: a victim stops here; a rescuer reopens */
            atomic_fetch_add(&b->estale_receive, 1);
            shmq_consumer_close(c);
            if (a->mode != C_RESCUE) {
                atomic_store(&sh->victim_estale, 1);
                shmq_close(q);
                return 0;
            }
            atomic_fetch_add(&b->reopen, 1);
            if (shmq_consumer_open(q, "crash-test", &c) != 0)
                return 12;
            continue;
        }
        if (rc != 0) {
            atomic_fetch_add(&b->other_errors, 1);
            return 13;
        }
        struct t_rec *r = t_book_delivery(b, &m);
        long ri = rec_index(b, r);
        if (ri >= 0 && ri / b->per_producer == P_VICTIM)
            atomic_store(&sh->delivered_id[ri % b->per_producer], m.id);
        if (a->mode == C_HOLDER) {
            atomic_store(&sh->holding, 1);
            for (;;)
                pause(); /* the test kills us holding it */
        }
        if (a->mode == C_VICTIM_NACK) {
            atomic_store(&sh->victim_in_nack, rec_index(b, r) + 1);
            rc = shmq_nack(c, &m, 0);
            atomic_store(&sh->victim_in_nack, 0);
            if (rc == 0 && r)
                atomic_fetch_add(&r->nacked, 1);
        } else {
            if (a->mode != C_RESCUE)
                atomic_store(&sh->victim_in_ack, rec_index(b, r) + 1);
            rc = t_ack(c, r, &m);
            atomic_store(&sh->victim_in_ack, 0);
        }
        if (rc != 0 && rc != -ESTALE) {
            atomic_fetch_add(&b->other_errors, 1);
            return 14;
        }
        ops++;
        atomic_store(&sh->victim_ops, ops);
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

static int maintainer_main(void *argp)
{
    struct shared *sh = *(struct shared **)argp;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    for (int i = 0; i < 100; i++) {
        if (shmq_maintain(q, NULL) != 0)
            return 11;
        t_sleep_ms(5);
    }
    shmq_close(q);
    return 0;
}

/* ---------------------------------------------------------------- the parent */

struct crash_param {
    int point; /* index into crashpoint_names[] */
    int stop;  /* 0: SIGKILL, 1: SIGSTOP */
};

static enum role role_of(const char *name)
{
    if (strncmp(name, "publish_", 8) == 0 || strcmp(name, "attach_after_claim") == 0)
        return R_PRODUCER; /* attach: the producer's shmq_open */
    if (strncmp(name, "receive_", 8) == 0 || strcmp(name, "ack_after_free") == 0)
        return R_CONSUMER_ACK;
    if (strcmp(name, "nack_after_requeue") == 0 || strcmp(name, "nack_before_move") == 0)
        return R_CONSUMER_NACK;
    if (strcmp(name, "maintain_after_fence") == 0)
        return R_MAINTAINER;
    if (strncmp(name, "dedup_", 6) == 0)
        return R_DEDUP_PRODUCER;
    if (strncmp(name, "recover_", 8) == 0)
        return R_PRODUCER; /* not run here: each has its case in tests/test_epoch.c */
    cr_assert_fail("crash point %s has no scenario in test_crash.c: add one", name);
    return R_PRODUCER;
}

/* Is every message whose publish returned 0 acked (or in a victim's ack that was killed)? */
static bool all_acked(struct shared *sh, long pending_ack)
{
    struct t_book *b = sh->book;
    for (size_t i = 0; i < (size_t)b->producers * b->per_producer; i++) {
        struct t_rec *r = &b->rec[i];
        if (atomic_load(&r->published) && !atomic_load(&r->acked) && (long)i + 1 != pending_ack)
            return false;
    }
    return true;
}

/* Maintain every 10 ms until every published message is acked; false on timeout. */
static bool wait_all_acked(shmq_t *q, struct shared *sh, long pending_ack, shmq_maint_report_t *sum,
                           int timeout_ms)
{
    int64_t end = t_now_ms() + timeout_ms;
    while (!all_acked(sh, pending_ack)) {
        if (t_now_ms() > end)
            return false;
        t_maintain(q, sum);
        t_sleep_ms(10);
    }
    return true;
}

static void describe_losses(shmq_t *q, struct shared *sh, const char *when)
{
    struct t_book *b = sh->book;
    for (size_t i = 0; i < (size_t)b->producers * b->per_producer; i++) {
        struct t_rec *r = &b->rec[i];
        if (atomic_load(&r->published) && !atomic_load(&r->acked))
            fprintf(stderr,
                    "%s: message (producer %zu, seq %zu) published, delivered %u, acked 0\n", when,
                    i / b->per_producer, i % b->per_producer, atomic_load(&r->delivered));
    }
    shmq_stats_t st;
    shmq_stats(q, &st);
    fprintf(stderr, "%s: " T_STATS_FMT "\n", when, T_STATS_ARGS(st, CAP));
    t_dump(sh->qname);
}

/* Points where the victim producer's slot is still RESERVED (nothing committed yet). */
static bool still_reserved(const char *name)
{
    return !strcmp(name, "publish_after_reserve") || !strcmp(name, "publish_after_write") ||
           !strcmp(name, "publish_after_log");
}

/* Points of a keyed publish: RESERVED too, but decided (after) or not (before) by its bucket. */
static bool keyed_point(const char *name)
{
    return strncmp(name, "dedup_", 6) == 0;
}

/* What the crash window's row in docs/DESIGN.md promises that maintenance does; NULL if done. */
static const char *repair_missing(const char *name, int stop, const shmq_maint_report_t *rep)
{
    if ((still_reserved(name) || !strcmp(name, "dedup_before_decide")) && !stop &&
        rep->reservations_freed < 1)
        return "the dead producer's reservation was not freed";
    /* ack_after_free is not here: a slot freed after a FREE one needs no ring (F3, docs/DESIGN.md
     * "The free slots"), so it is an orphan only when the slot before it was in use
     * (hotpath::an_acker_killed_after_an_out_of_order_free_is_repaired) */
    if ((!strcmp(name, "publish_after_commit") || !strcmp(name, "receive_after_dequeue") ||
         !strcmp(name, "nack_after_requeue") || !strcmp(name, "maintain_after_fence")) &&
        rep->orphans_requeued < 1)
        return "no orphan was requeued";
    if (!strcmp(name, "attach_after_claim") && !stop && rep->procs_dead < 1)
        return "the entry of the claimer killed inside attach was not reclaimed";
    if (!strcmp(name, "receive_after_claim") || !strcmp(name, "nack_before_move")) {
        if (rep->reclaimed < 1)
            return "the in-flight message was not reclaimed";
        if (stop && rep->procs_hung < 1)
            return "the stopped consumer was not fenced as hung";
        if (!stop && rep->procs_dead < 1)
            return "the killed consumer was not found dead";
    }
    return NULL;
}

static void run_crash_case(int point, int stop)
{
    const char *name = crashpoint_names[point];
    enum role role = role_of(name);
    const char *how = stop ? "STOP" : "KILL";
    const char *only = getenv("SHMQ_CRASH_ONLY"); /* debugging: run one point */
    if (only && strcmp(only, name) != 0)
        cr_skip_test("SHMQ_CRASH_ONLY=%s", only);
    if (strncmp(name, "recover_", 8) == 0)
        cr_skip_test("%s: a recovery's crash point, tested in tests/test_epoch.c", name);
    alarm(80);

    struct shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname(stop ? "crS" : "crK"));
    sh->book = t_book_new(P_COUNT, SEQS);

    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = CAP;
    cfg.max_msg_size = 128;
    cfg.max_procs = 32;
    cfg.heartbeat_timeout_ms = 100; /* a stopped consumer is hung after 100 ms */
    cfg.max_attempts = 100;         /* no dead letters here */
    cfg.backoff_base_ms = 0;        /* nack(…, 0) makes the message READY at once */
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    int rc = shmq_create(sh->qname, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    /* the test is the watchdog: consumers must not maintain cooperatively behind it */
    cr_assert_eq(shmq_lease_acquire(q, 600000, 1), 0);

    shmq_maint_report_t rep = {0};
    pid_t victim = -1;
    long pending_ack = 0; /* a record whose ack the killed victim had made effective */

    /* 1. Set up and send the victim to the crash point. */
    if (role == R_PRODUCER) {
        struct prod_arg pa = {sh, P_VICTIM, 0, VICTIM_MSGS};
        int skip = strcmp(name, "attach_after_claim") == 0 ? 0 : 2; /* its one attach */
        victim = t_spawn_crash(producer_main, &pa, sizeof pa, name, stop, skip);
    } else if (role == R_CONSUMER_ACK || role == R_CONSUMER_NACK) {
        for (uint32_t s = 0; s < SETUP_MSGS; s++)
            cr_assert_eq(t_publish(q, sh->book, P_SETUP, s, 0), 0);
        struct cons_arg ca = {sh, role == R_CONSUMER_NACK ? C_VICTIM_NACK : C_VICTIM_ACK, 3};
        victim = t_spawn_crash(consumer_main, &ca, sizeof ca, name, stop, 1);
    } else if (role == R_DEDUP_PRODUCER) {
        struct keyed_arg ka = {sh, 0, 0, VICTIM_MSGS};
        victim = t_spawn_crash(keyed_producer_main, &ka, sizeof ka, name, stop, CRASH_SEQ);
    } else {
        for (uint32_t s = 0; s < 4; s++)
            cr_assert_eq(t_publish(q, sh->book, P_SETUP, s, 0), 0);
        struct cons_arg ca = {sh, C_HOLDER, 1};
        pid_t holder = t_spawn(consumer_main, &ca, sizeof ca);
        int64_t end = t_now_ms() + WAIT_MS;
        while (!atomic_load(&sh->holding) && t_now_ms() < end)
            t_sleep_ms(1);
        cr_assert(atomic_load(&sh->holding), "the holder never received a message");
        t_kill_reap(holder); /* dead, reaped, holding one message in flight */
        victim = t_spawn_crash(maintainer_main, &sh, sizeof sh, name, stop, 0);
    }

    int st = 0;
    char sbuf[96];
    rc = t_wait(victim, WAIT_MS, stop ? WUNTRACED : 0, &st);
    cr_assert_eq(rc, 0, "%s/%s: the victim never reached the crash point", name, how);
    if (stop)
        cr_assert(WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP, "%s/%s: victim %s", name, how,
                  t_status_str(st, sbuf, sizeof sbuf));
    else
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s/%s: victim %s", name, how,
                  t_status_str(st, sbuf, sizeof sbuf));
    /* A victim inside shmq_ack at ack_after_free made its ack effective (the slot is FREE)
     * but has not returned: that message counts as acked while the victim is down. */
    pending_ack = atomic_load(&sh->victim_in_ack);
    /* a nack killed after its CAS took effect (and was counted); one killed before did not */
    long pending_nack =
        stop || !strcmp(name, "nack_before_move") ? 0 : atomic_load(&sh->victim_in_nack);

    /* A reservation is the producer's while it lives, and is freed once it is dead. */
    if (still_reserved(name) || keyed_point(name)) {
        shmq_stats_t s0;
        cr_assert_eq(shmq_stats(q, &s0), 0);
        cr_assert_eq(s0.reserved, 1, "%s/%s: reserved %u at the crash point", name, how,
                     s0.reserved);
        if (stop) {
            int64_t end = t_now_ms() + 300;
            while (t_now_ms() < end) {
                t_maintain(q, &rep);
                t_sleep_ms(10);
            }
            cr_assert_eq(shmq_stats(q, &s0), 0);
            if (strcmp(name, "dedup_after_decide") == 0) /* decided: rolled forward, not freed */
                cr_assert_eq(s0.reserved, 0, "%s/STOP: a decided keyed publish was not rolled "
                             "forward while its producer is stopped", name);
            else
                cr_assert_eq(s0.reserved, 1, "%s/STOP: a live producer's reservation was freed",
                             name);
            cr_assert_eq(rep.reservations_freed, 0);
        }
    }

    /* 2. Others keep the queue flowing: another producer and a rescue consumer. */
    struct prod_arg oa = {sh, P_OTHER, 0, OTHER_MSGS};
    pid_t other = t_spawn(producer_main, &oa, sizeof oa);
    struct cons_arg ra = {sh, C_RESCUE, 0};
    pid_t rescuer = t_spawn(consumer_main, &ra, sizeof ra);
    /* A keyed victim: a restarted producer retries its keys from the one it crashed in. KILL:
     * it may see -EINPROGRESS until maintenance finds the victim dead, so the test maintains
     * while it waits for it. STOP: the victim lives; the retry is waited for after SIGCONT. */
    pid_t retrier = -1;
    if (role == R_DEDUP_PRODUCER) {
        struct keyed_arg ka = {sh, 1, CRASH_SEQ, VICTIM_MSGS - CRASH_SEQ};
        retrier = t_spawn(keyed_producer_main, &ka, sizeof ka);
        if (!stop) {
            int64_t end = t_now_ms() + WAIT_MS;
            int wrc;
            while ((wrc = t_wait(retrier, 10, 0, &st)) == -ETIMEDOUT && t_now_ms() < end)
                t_maintain(q, &rep);
            if (wrc != 0)
                t_kill_reap(retrier);
            cr_assert_eq(wrc, 0, "%s/KILL: the restarted keyed producer did not end (-EINPROGRESS "
                         "%d times)", name, atomic_load(&sh->retry_inprogress));
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "%s/KILL: restarted keyed producer %s (error %s)", name,
                      t_status_str(st, sbuf, sizeof sbuf),
                      shmq_strerror(atomic_load(&sh->keyed_error)));
        }
    }
    /* STOP at dedup_after_decide: the retry was answered with the stopped victim's id, and the
     * decided message was rolled forward by maintenance: delivered while the victim is stopped. */
    struct t_rec *vr = t_rec_of(sh->book, P_VICTIM, CRASH_SEQ);
    long pending_stopped = 0;
    t_assert_exit0(other, WAIT_MS, "other producer");
    bool ok = wait_all_acked(q, sh, pending_ack ? pending_ack : pending_stopped, &rep, WAIT_MS);
    if (!ok)
        describe_losses(q, sh, name);
    cr_assert(ok, "%s/%s: published messages were not all acked %s", name, how,
              stop ? "while the victim was stopped" : "after the victim died");
    if (strcmp(name, "publish_after_commit") == 0 || strcmp(name, "publish_after_enqueue") == 0 ||
        (keyed_point(name) && !stop) || (stop && strcmp(name, "dedup_after_decide") == 0)) {
        /* committed before the crash: delivered even though publish never returned (yet) */
        int64_t end = t_now_ms() + WAIT_MS;
        while (!atomic_load(&vr->acked) && t_now_ms() < end) {
            t_maintain(q, &rep);
            t_sleep_ms(10);
        }
        cr_assert(atomic_load(&vr->acked), "%s/%s: the committed message was never delivered", name,
                  how);
    }
    if (stop) {
        /* Hold it stopped past the orphan grace period: the repair must not wait for it. */
        const char *missing;
        int64_t hold_end = t_now_ms() + 300, rend = t_now_ms() + 3000;
        while (((missing = repair_missing(name, stop, &rep)) != NULL || t_now_ms() < hold_end) &&
               t_now_ms() < rend) {
            t_maintain(q, &rep);
            t_sleep_ms(10);
        }
        cr_assert(missing == NULL, "%s/STOP: while the victim is stopped: %s", name, missing);
        cr_assert_eq(waitpid(victim, &st, WNOHANG), 0, "%s/STOP: the victim changed state", name);
        shmq_proc_info_t pi[32];
        size_t np = 0, victim_entries = 0;
        cr_assert_eq(shmq_procs(q, pi, 32, &np), 0);
        for (size_t i = 0; i < np; i++)
            victim_entries += pi[i].pid == victim;
        fprintf(stderr, "crash %-22s STOP: before SIGCONT the victim has %zu registry entries\n",
                name, victim_entries);
        if (role == R_DEDUP_PRODUCER) {
            uint64_t rid = atomic_load(&sh->keyed_id[1][CRASH_SEQ]);
            fprintf(stderr,
                    "crash %-22s STOP: before SIGCONT the retry got %d x -EINPROGRESS, id %llu; "
                    "the key's message delivered %u times\n",
                    name, atomic_load(&sh->retry_inprogress), (unsigned long long)rid,
                    atomic_load(&vr->delivered));
            if (!strcmp(name, "dedup_before_decide")) {
                /* undecided and its publisher lives: the retry must wait, not publish */
                cr_assert_eq(rid, 0, "%s/STOP: the retry published while the first publish of "
                             "its key was under way (id %llu)", name, (unsigned long long)rid);
                cr_assert_gt(atomic_load(&sh->retry_inprogress), 0);
                cr_assert_eq(atomic_load(&vr->delivered), 0);
            } else {
                cr_assert_neq(rid, 0, "%s/STOP: the retry was not answered (decided key)", name);
            }
        }
        atomic_store(&sh->victim_may_exit, 1);
        kill(victim, SIGCONT);
        t_assert_exit0(victim, WAIT_MS, name);
        if (retrier > 0)
            t_assert_exit0(retrier, WAIT_MS, "restarted keyed producer");
        ok = wait_all_acked(q, sh, 0, &rep, WAIT_MS);
        if (!ok)
            describe_losses(q, sh, name);
        cr_assert(ok, "%s/STOP: messages not all acked after SIGCONT", name);
    }
    atomic_store(&sh->stop, 1);
    t_assert_exit0(rescuer, WAIT_MS, "rescue consumer");
    if (still_reserved(name))
        cr_assert(stop || atomic_load(&vr->delivered) == 0,
                  "%s/KILL: a message never committed was delivered", name);
    if (role == R_DEDUP_PRODUCER) {
        /* Every key of the victim: delivered exactly once, with the id every publish of that
         * key returned (the victim's, for the seqs it finished, and the restarted one's). */
        cr_assert_eq(atomic_load(&sh->keyed_error), 0, "%s/%s: a keyed publish returned %s",
                     name, how, shmq_strerror(atomic_load(&sh->keyed_error)));
        for (uint32_t s = 0; s < VICTIM_MSGS; s++) {
            struct t_rec *r = t_rec_of(sh->book, P_VICTIM, s);
            uint64_t did = atomic_load(&sh->delivered_id[s]);
            cr_assert_eq(atomic_load(&r->delivered), 1, "%s/%s: key %u delivered %u times", name,
                         how, s, atomic_load(&r->delivered));
            for (int who = 0; who < 2; who++) {
                uint64_t got = atomic_load(&sh->keyed_id[who][s]);
                bool must = who == 0 ? (s < CRASH_SEQ || stop) : s >= CRASH_SEQ;
                cr_assert(!must || got != 0, "%s/%s: %s publish of key %u never returned 0",
                          name, how, who ? "the restarted" : "the victim's", s);
                cr_assert(got == 0 || got == did,
                          "%s/%s: key %u: %s publish returned id %llu, the delivered message "
                          "has id %llu",
                          name, how, s, who ? "the restarted" : "the victim's",
                          (unsigned long long)got, (unsigned long long)did);
            }
        }
    }

    /* 3. Nothing stuck, and the counters add up. */
    shmq_stats_t s = t_settle(q, CAP, 5000, &rep);
    if (!t_quiet(&s, CAP))
        t_dump(sh->qname);
    cr_assert(t_quiet(&s, CAP), "%s/%s: not quiet after maintenance: " T_STATS_FMT, name, how,
              T_STATS_ARGS(s, CAP));
    cr_assert_eq(s.procs, 1, "%s/%s: %u registry entries still active (only ours should be)", name,
                 how, s.procs);
    cr_assert_eq(s.consumers, 0);
    struct t_tally t = t_book_tally(sh->book);
    fprintf(stderr,
            "crash %-22s %s: published %llu delivered %llu duplicates %llu acked %llu stale "
            "acks %llu | rep dead %u hung %u reclaimed %u orphans %u resv_freed %u "
            "fenced_released %u | " T_STATS_FMT "\n",
            name, how, (unsigned long long)t.published, (unsigned long long)t.delivered,
            (unsigned long long)t.duplicates, (unsigned long long)t.acked_ok,
            (unsigned long long)t.stale_acks, rep.procs_dead, rep.procs_hung, rep.reclaimed,
            rep.orphans_requeued, rep.reservations_freed, rep.fenced_released,
            T_STATS_ARGS(s, CAP));
    cr_assert_eq(atomic_load(&sh->book->corrupt), 0, "%s/%s: corrupt payloads", name, how);
    cr_assert_eq(atomic_load(&sh->book->out_of_range), 0);
    cr_assert_eq(atomic_load(&sh->book->other_errors), 0);
    if (stop)
        pending_ack = 0; /* the victim has returned from its ack since */
    cr_assert_eq(t.lost - (pending_ack ? 1 : 0), 0, "%s/%s: %llu published messages never acked",
                 name, how, (unsigned long long)t.lost);
    cr_assert_eq(t.double_acked, 0, "%s/%s: a message was acked successfully twice", name, how);
    cr_assert_eq(s.published, t.published, "%s/%s: stats.published %llu, book %llu", name, how,
                 (unsigned long long)s.published, (unsigned long long)t.published);
    cr_assert_eq(s.delivered, t.delivered, "%s/%s: stats.delivered %llu, book %llu", name, how,
                 (unsigned long long)s.delivered, (unsigned long long)t.delivered);
    cr_assert_eq(s.acked, t.acked_ok, "%s/%s: stats.acked %llu, book %llu", name, how,
                 (unsigned long long)s.acked, (unsigned long long)t.acked_ok);
    cr_assert_eq(s.nacked, t.nacked + (pending_nack ? 1 : 0), "%s/%s: stats.nacked %llu, book %llu",
                 name, how, (unsigned long long)s.nacked, (unsigned long long)t.nacked);
    cr_assert_eq(s.dead_lettered, 0);
    cr_assert(s.redelivered <= s.delivered);
    if (role == R_DEDUP_PRODUCER) {
        /* KILL after the decision: the retry is the one hit; before it: none (the retry
         * publishes). STOP: both finish every key from the crashed one on, one of each pair
         * a hit. */
        uint64_t hits = stop ? VICTIM_MSGS - CRASH_SEQ : !strcmp(name, "dedup_after_decide");
        cr_assert_eq(s.dedup_hits, hits, "%s/%s: stats.dedup_hits %llu, expected %llu", name, how,
                     (unsigned long long)s.dedup_hits, (unsigned long long)hits);
    }

    /* 4. The repair named by the crash window happened (maintenance may need its grace). */
    const char *missing;
    int64_t rend = t_now_ms() + 3000;
    while ((missing = repair_missing(name, stop, &rep)) != NULL && t_now_ms() < rend) {
        t_maintain(q, &rep);
        t_sleep_ms(10);
    }
    cr_assert(missing == NULL, "%s/%s: %s", name, how, missing);

    /* 5. Every slot still reachable through its ring. */
    t_full_cycle(q, CAP);
    shmq_lease_release(q);
    cr_assert_eq(shmq_close(q), 0);
    alarm(0);
}

/* ---------------------------------------------------------------- the parameters */

static size_t count_points(void)
{
    size_t n = 0;
    while (crashpoint_names[n])
        n++;
    return n;
}

ParameterizedTestParameters(crash, sigkill)
{
    static struct crash_param params[64];
    size_t n = count_points();
    cr_assert(n > 0 && n <= 64);
    for (size_t i = 0; i < n; i++)
        params[i] = (struct crash_param){(int)i, 0};
    return cr_make_param_array(struct crash_param, params, n);
}

ParameterizedTest(struct crash_param *p, crash, sigkill) { run_crash_case(p->point, 0); }

ParameterizedTestParameters(crash, sigstop)
{
    static struct crash_param params[64];
    size_t n = count_points();
    cr_assert(n > 0 && n <= 64);
    for (size_t i = 0; i < n; i++)
        params[i] = (struct crash_param){(int)i, 1};
    return cr_make_param_array(struct crash_param, params, n);
}

ParameterizedTest(struct crash_param *p, crash, sigstop) { run_crash_case(p->point, 1); }

/* Every crash point of the list is exercised by a scenario above (none silently skipped). */
Test(crash, every_point_has_a_scenario)
{
    size_t n = count_points();
    cr_assert_geq(n, 9, "crashpoint_names[] lists %zu points", n);
    for (size_t i = 0; i < n; i++)
        (void)role_of(crashpoint_names[i]);
}

/* ---------------------------------------------------------------- every move of maintenance */

/*
 * maintain_after_fence sits in move_slot(), which every repair of maintenance goes through. The
 * parameterized tests above hit it on the reclaim of a dead consumer's message; these hit it on
 * each of the other moves, with the maintainer SIGKILLed between the state CAS and the enqueue:
 *   delayed   DELAYED and due -> READY            (the next pass requeues the READY orphan)
 *   reserve   RESERVED of a dead producer -> FREE (a FREE orphan: back to the free ring)
 *   fenced    FENCED whose reader died -> FREE    (a FREE orphan)
 *   dead      INFLIGHT at max_attempts -> DEAD    (in no dead ring: the DLQ's scan finds it)
 */
enum mmove { MV_DELAYED, MV_RESERVE, MV_FENCED, MV_DEAD };

struct mv_shared {
    char qname[SHMQ_NAME_MAX + 1];
    _Atomic int ready;
};

static int reserver_main(void *argp)
{
    struct mv_shared *sh = *(struct mv_shared **)argp;
    shmq_t *q;
    void *buf;
    if (shmq_open(sh->qname, &q) != 0 || shmq_reserve(q, 8, &buf) != 0)
        return 10;
    atomic_store(&sh->ready, 1);
    for (;;)
        pause();
}

static int mv_holder_main(void *argp)
{
    struct mv_shared *sh = *(struct mv_shared **)argp;
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    if (shmq_open(sh->qname, &q) != 0 || shmq_consumer_open(q, "mv", &c) != 0)
        return 10;
    if (shmq_receive(c, &m, 5000) != 0)
        return 11;
    atomic_store(&sh->ready, 1);
    for (;;)
        pause(); /* stopped or killed by the test */
}

static int mv_maintainer_main(void *argp)
{
    struct mv_shared *sh = *(struct mv_shared **)argp;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    for (int i = 0; i < 100; i++) {
        shmq_maintain(q, NULL);
        t_sleep_ms(5);
    }
    return 20; /* never crashed: the move did not happen */
}

static void wait_flag(_Atomic int *f)
{
    int64_t end = t_now_ms() + 5000;
    while (!atomic_load(f) && t_now_ms() < end)
        t_sleep_ms(1);
    cr_assert(atomic_load(f), "the helper child never got ready");
}

static void maintain_move_case(int move)
{
    static const char *const names[] = {"delayed", "reserve", "fenced", "dead"};
    alarm(40);
    struct mv_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname("crM"));
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 8;
    cfg.max_msg_size = 64;
    cfg.max_procs = 16;
    cfg.heartbeat_timeout_ms = 100;
    cfg.max_attempts = move == MV_DEAD ? 1 : 10;
    shmq_t *q, *q2;
    shmq_consumer_t *c;
    int rc = shmq_create(sh->qname, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_lease_acquire(q, 600000, 1), 0);
    cr_assert_eq(shmq_open(sh->qname, &q2), 0);
    cr_assert_eq(shmq_consumer_open(q2, "mv-test", &c), 0);
    /* heartbeat 100 ms: beat while idle, or a loaded machine gets it fenced as hung */
    cr_assert_eq(shmq_consumer_heartbeat_thread(c, 10), 0);
    const char payload[] = "move";
    uint64_t id = 0;
    shmq_msg_t m;

    /* Set the slot up so that the armed maintainer's first move is the one under test. */
    if (move == MV_DELAYED) {
        cr_assert_eq(shmq_publish(q, payload, sizeof payload, &id), 0);
        cr_assert_eq(shmq_receive(c, &m, 1000), 0);
        cr_assert_eq(shmq_nack(c, &m, 30), 0);
        t_sleep_ms(50); /* due */
    } else if (move == MV_RESERVE) {
        pid_t p = t_spawn(reserver_main, &sh, sizeof sh);
        wait_flag(&sh->ready);
        t_kill_reap(p);
    } else if (move == MV_FENCED) {
        cr_assert_eq(shmq_publish(q, payload, sizeof payload, &id), 0);
        pid_t p = t_spawn(mv_holder_main, &sh, sizeof sh);
        wait_flag(&sh->ready);
        kill(p, SIGSTOP);
        cr_assert_eq(t_wait(p, 2000, WUNTRACED, NULL), 0);
        shmq_maint_report_t rep = {0};
        int64_t end = t_now_ms() + 3000;
        while (rep.reclaimed == 0 && t_now_ms() < end) { /* the test fences it, unarmed */
            t_maintain(q, &rep);
            t_sleep_ms(5);
        }
        cr_assert_eq(rep.reclaimed, 1);
        cr_assert_eq(shmq_receive(c, &m, 1000), 0);
        cr_assert_eq(shmq_ack(c, &m), 0); /* the slot is FENCED for the stopped reader */
        t_kill_reap(p);                   /* now its reader is dead: maintenance frees it */
    } else {
        cr_assert_eq(shmq_publish(q, payload, sizeof payload, &id), 0);
        pid_t p = t_spawn(mv_holder_main, &sh, sizeof sh);
        wait_flag(&sh->ready);
        t_kill_reap(p); /* dead at its last attempt: maintenance dead-letters the message */
    }
    pid_t mt = t_spawn_crash(mv_maintainer_main, &sh, sizeof sh, "maintain_after_fence", 0, 0);
    int st = 0;
    char sbuf[96];
    cr_assert_eq(t_wait(mt, 5000, 0, &st), 0, "%s: the maintainer did not end", names[move]);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "%s: the maintainer did not die at maintain_after_fence: %s", names[move],
              t_status_str(st, sbuf, sizeof sbuf));

    /* The next maintainer (the test) finishes the job. */
    shmq_maint_report_t rep = {0};
    if (move == MV_DELAYED) {
        int64_t end = t_now_ms() + 3000;
        while ((rc = shmq_receive(c, &m, 0)) == -EAGAIN && t_now_ms() < end) {
            t_maintain(q, &rep);
            t_sleep_ms(10);
        }
        cr_assert_eq(rc, 0, "delayed: the fired message never became deliverable");
        cr_assert_eq(m.id, id);
        cr_assert_eq(m.attempt, 2);
        cr_assert_eq(shmq_ack(c, &m), 0);
        cr_assert_geq(rep.orphans_requeued, 1);
    } else if (move == MV_DEAD) {
        shmq_dead_letter_t dl[2];
        size_t n = 0;
        cr_assert_eq(shmq_dlq_list(q, dl, 2, &n), 0);
        cr_assert_eq(n, 1, "dead: the dead letter is not listed");
        cr_assert_eq(dl[0].id, id);
        cr_assert_eq(dl[0].reason, SHMQ_DEAD_MAX_ATTEMPTS);
        uint32_t moved = 0;
        cr_assert_eq(shmq_dlq_redrive(q, id, &moved), 0);
        cr_assert_eq(moved, 1, "dead: a dead letter in no dead ring was not redriven");
        cr_assert_eq(shmq_receive(c, &m, 1000), 0);
        cr_assert_eq(m.id, id);
        cr_assert_eq(shmq_ack(c, &m), 0);
    }
    shmq_stats_t s = t_settle(q, 8, 3000, &rep);
    cr_assert(t_quiet(&s, 8), "%s: not quiet: " T_STATS_FMT, names[move], T_STATS_ARGS(s, 8));
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q2), 0);
    t_full_cycle(q, 8); /* the FREE orphans are back in the free ring */
    s = t_settle(q, 8, 3000, NULL);
    cr_assert_eq(s.procs, 1, "%s: %u registry entries active", names[move], s.procs);
    cr_assert_eq(shmq_close(q), 0);
    alarm(0);
}

Test(crash, maintain_after_fence_firing_a_delayed_message) { maintain_move_case(MV_DELAYED); }

Test(crash, maintain_after_fence_freeing_a_dead_reservation) { maintain_move_case(MV_RESERVE); }

Test(crash, maintain_after_fence_releasing_a_fenced_slot) { maintain_move_case(MV_FENCED); }

Test(crash, maintain_after_fence_dead_lettering) { maintain_move_case(MV_DEAD); }

/* ---------------------------------------------------------------- a liveness check raced */

/*
 * A dead process reaped by its parent between pid_gone()'s kill(pid, 0) (a zombie: it succeeds)
 * and its read of /proc/PID/stat (gone: unreadable) was judged alive by that pass: its entry kept
 * its message. Under load this made watchdog::death_is_detected_between_passes fail once (the
 * pass its pidfd woke judged the victim alive; the next one was 30 s away). The maintainer stops
 * at pid_gone_before_state on the victim's consumer entry while the test reaps the victim.
 */
struct gone_shared {
    char qname[SHMQ_NAME_MAX + 1];
    _Atomic int got, done;
    _Atomic uint32_t procs_dead, reclaimed;
};

static int gone_victim_main(void *argp)
{
    struct gone_shared *sh = *(struct gone_shared **)argp;
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    if (shmq_open(sh->qname, &q) != 0 || shmq_consumer_open(q, "victim", &c) != 0 ||
        shmq_receive(c, &m, WAIT_MS) != 0)
        return 10;
    atomic_store(&sh->got, 1);
    for (;;) /* holds it until killed */
        t_sleep_ms(10);
}

static int gone_maintainer_main(void *argp)
{
    struct gone_shared *sh = *(struct gone_shared **)argp;
    shmq_t *q;
    shmq_maint_report_t r;
    if (shmq_open(sh->qname, &q) != 0 || shmq_maintain(q, &r) != 0)
        return 10;
    atomic_store(&sh->procs_dead, r.procs_dead);
    atomic_store(&sh->reclaimed, r.reclaimed);
    atomic_store(&sh->done, 1);
    return shmq_close(q) == 0 ? 0 : 11;
}

Test(crash, a_process_reaped_while_judged_is_dead)
{
    struct gone_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname("gone"));
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 8;
    cfg.max_msg_size = 64;
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.heartbeat_timeout_ms = 60000; /* only death may take the message back */
    cfg.ack_deadline_ms = 60000;
    shmq_t *q;
    cr_assert_eq(shmq_create(sh->qname, &cfg, &q), 0);
    cr_assert_eq(shmq_publish(q, "x", 1, NULL), 0);
    cr_assert_eq(shmq_close(q), 0); /* the registry holds the victim first, then the maintainer */
    pid_t v = t_spawn(gone_victim_main, &sh, sizeof sh);
    for (int64_t end = t_now_ms() + WAIT_MS; !atomic_load(&sh->got);) {
        cr_assert_lt(t_now_ms(), end, "the victim did not receive the message");
        t_sleep_ms(1);
    }
    kill(v, SIGKILL);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)v);
    for (int64_t end = t_now_ms() + WAIT_MS;;) { /* a zombie, not reaped */
        char buf[512] = {0};
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        const char *p = n ? strrchr(buf, ')') : NULL;
        if (p && p[1] == ' ' && p[2] == 'Z')
            break;
        cr_assert_lt(t_now_ms(), end, "the victim did not become a zombie");
        t_sleep_ms(1);
    }
    /* skip 1: past the victim's queue handle's entry, at its consumer's (which holds the
     * message), as in the watchdog's flake: the message stayed taken */
    pid_t m = t_spawn_crash(gone_maintainer_main, &sh, sizeof sh, "pid_gone_before_state", 1, 1);
    int st = 0;
    cr_assert_eq(t_wait(m, WAIT_MS, WUNTRACED, &st), 0);
    cr_assert(WIFSTOPPED(st), "the maintainer did not stop at pid_gone_before_state (0x%x)", st);
    cr_assert_eq(t_wait(v, WAIT_MS, 0, &st), 0, "the victim was not reaped");
    kill(m, SIGCONT);
    t_assert_exit0(m, WAIT_MS, "maintainer");
    cr_assert_eq(atomic_load(&sh->procs_dead), 2,
                 "the victim, reaped while the pass judged it, was judged alive: %u of its 2 "
                 "entries fenced, %u message reclaimed", atomic_load(&sh->procs_dead),
                 atomic_load(&sh->reclaimed));
    cr_assert_eq(atomic_load(&sh->reclaimed), 1);
}

/* A crash point reads SHMQ_CRASH_AT at its first hit in a process. A child forked by a process
 * that had already passed crash points (and read "no target" then) inherited that reading and
 * ran past the point it was armed for: crash-point tests failed with 'the child was not killed'
 * under ctest -j3 on a loaded machine. A forked child reads the environment again. */
Test(crash, a_child_forked_after_its_parent_passed_crash_points_reads_its_own_target)
{
    const char *name = t_qname("cpfork");
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 8;
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    cr_assert_eq(shmq_create(name, &cfg, &q), 0);
    cr_assert_eq(shmq_publish(q, "p", 1, NULL), 0); /* passes publish's points, no target set */
    fflush(NULL);
    pid_t k = fork();
    cr_assert(k >= 0);
    if (k == 0) {
        setenv("SHMQ_CRASH_AT", "publish_after_commit", 1);
        shmq_t *cq;
        if (shmq_open(name, &cq))
            _exit(10);
        shmq_publish(cq, "c", 1, NULL);
        _exit(12); /* not killed at its crash point */
    }
    int st = 0;
    cr_assert_eq(waitpid(k, &st, 0), k);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "the child ran past the crash point it set (status %d)", st);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}
