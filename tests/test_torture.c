/*
 * test_torture.c - producers, consumers and a maintainer under random SIGKILL, SIGSTOP and
 * armed crash points: every message whose publish returned success is acked at least once,
 * no payload is corrupt, nothing stays stuck.
 *
 * 2 producers, 3 consumers and 1 maintainer process run for SHMQ_TORTURE_SECONDS (default 5)
 * seconds while the test process, every 10-40 ms, picks at random: SIGKILL a child and start a
 * new one in its role (a third of the new ones armed with a random crash point, skip and
 * KILL/STOP), SIGSTOP a child for 50-400 ms, or run shmq_maintain() itself. Children that hit
 * their crash point are restarted (KILL) or continued later (STOP) the same way. Consumers ack
 * most messages, nack some (with and without delay), and are sometimes slower than the ack
 * deadline; consumers also maintain cooperatively (no lease is held), so several maintainers
 * race. SHMQ_TORTURE_SEED fixes the random choices of the test process; SHMQ_TORTURE_CAPACITY
 * sets the queue's capacity (default 64).
 *
 * Poison messages: one seq in POISON_EVERY of each producer hangs the consumers that take it
 * (the consumer SIGSTOPs itself) on its first POISON_HANGS deliveries; the test continues such a
 * consumer only after 500-1000 ms, well past the heartbeat timeout, so it is fenced as hung and
 * the message goes on to the next consumer, which hangs too: consumers stopped in a row on the
 * same message (fencing that composes, issue 16). Each must still end acked.
 *
 * At the end: stop everything, continue the stopped, maintain and drain with a fresh consumer
 * until every published message is acked and the queue is quiet (bounded), then check the
 * book: losses (published, never acked) must be 0, corrupt payloads 0, messages acked
 * successfully twice 0, child errors 0; duplicates (deliveries beyond the first) are counted
 * and printed, as are messages, kills and stops. A full cycle of the queue then proves that no
 * slot was lost from its ring.
 *
 * kill_stop_restart_no_loss_with_groups: the same with a second consumer group (issue 18,
 * docs/DESIGN.md "Consumer groups"): the consumers are split between the group "default" and
 * the group "fan", each group keeps its own book, and every message published must end acked
 * in both groups (a slot freed while one group still needs it would show up as a corrupt
 * payload or a loss in that group's book: the payload carries its checksum). At the end the
 * group "fan" is deleted and the full cycle runs on the group "default" alone. The queue has
 * its log (durability process, the default): every group's records go through it.
 *
 * kill_stop_restart_no_loss_with_headers_and_delays: the same with the broker features of a
 * message (issue 19): every second message is published with two headers (one names its
 * producer and seq), every fifth with a delay of 1-25 ms, through shmq_publish_ex; a consumer
 * checks every delivery's headers against its seq (a message with headers that lost them, or
 * one without that got some, or a wrong value, counts as corrupt).
 */
#include "torture.h"

TestSuite(torture, .init = t_setup, .fini = t_teardown, .timeout = 600);

#define CAP_DEFAULT 64
static uint32_t CAP =
    CAP_DEFAULT; /* SHMQ_TORTURE_CAPACITY overrides (small: more wrap, more contention) */
#define PRODUCERS 2
#define CONSUMERS 3
#define NCHILD (PRODUCERS + CONSUMERS + 1)

enum role { R_PRODUCER, R_CONSUMER, R_MAINTAINER };

#define POISON_EVERY 4096 /* seq % POISON_EVERY == POISON_SEQ: a poison message */
#define POISON_SEQ 100
#define POISON_HANGS 2    /* its first deliveries hang their consumers */

#define MAX_GROUPS 2
/* 2: kill_stop_restart_no_loss_with_groups. The children read it from their struct shared (they
 * are forked by the spawner, made before the test set this) */
static uint32_t NGROUPS = 1;
static const char *const group_names[MAX_GROUPS] = {NULL, "fan"}; /* NULL: "default" */

struct shared {
    char qname[SHMQ_NAME_MAX + 1];
    struct t_book *book;              /* the group "default"'s: books[0] */
    struct t_book *books[MAX_GROUPS]; /* per consumer group */
    uint32_t ngroups;
    bool broker; /* headers and delays (kill_stop_restart_no_loss_with_headers_and_delays) */
    _Atomic int stop;
    _Atomic uint32_t next_seq[PRODUCERS];
    _Atomic uint64_t child_errors, nacks_delayed, slow_acks, publish_timeouts, maint_passes;
    _Atomic int last_error;
    _Atomic long in_ack[NCHILD]; /* per child: record index + 1 while inside shmq_ack */
    _Atomic int poisoned[NCHILD]; /* per child: stopped itself on a poison message */
    _Atomic uint64_t poison_hangs[POISON_HANGS + 1]; /* self-stops by the attempt they hung at */
    _Atomic uint32_t poison_max_attempt;             /* highest attempt a poison message had */
};

struct child_arg {
    struct shared *sh;
    int role;
    uint32_t index;
    int slot; /* which of the test's children */
    uint64_t seed;
};

static int open_retry(struct shared *sh, shmq_t **q)
{
    int64_t end = t_now_ms() + 3000;
    int rc;
    while ((rc = shmq_open(sh->qname, q)) == -EUSERS && t_now_ms() < end)
        t_sleep_ms(20); /* the registry is full of dead entries until maintenance frees them */
    return rc;
}

static int fail(struct shared *sh, int code, int rc)
{
    atomic_fetch_add(&sh->child_errors, 1);
    atomic_store(&sh->last_error, code * 1000 - rc);
    return code;
}

/* The broker features of (producer, seq): headers on every second message, a 1-25 ms delay on
 * every fifth. The "t-id" header's value names the message ("producer/seq"). */
static bool has_headers(uint32_t seq) { return seq % 2 == 0; }

static void broker_id(char *buf, size_t size, uint32_t producer, uint32_t seq)
{
    snprintf(buf, size, "%u/%u", producer, seq);
}

/* As t_publish, through shmq_publish_ex with the options of (producer, seq); a full queue is
 * -ETIMEDOUT after a short wait, as shmq_publish_timed's. */
static int publish_broker(shmq_t *q, struct t_book *b, uint32_t producer, uint32_t seq)
{
    struct t_wire w;
    size_t n = t_fill(&w, producer, seq);
    char id[32];
    broker_id(id, sizeof id, producer, seq);
    static const char trace[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    shmq_header_t hs[2] = {{"t-id", 4, id, strlen(id)},
                           {"traceparent", 11, trace, sizeof trace - 1}};
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    if (has_headers(seq)) {
        o.headers = hs;
        o.n_headers = 2;
    }
    if (seq % 5 == 0)
        o.delay_ms = 1 + seq % 25;
    struct t_rec *r = t_rec_of(b, producer, seq);
    atomic_fetch_add(&r->pub_begun, 1);
    int rc = shmq_publish_ex(q, &w, n, &o, NULL);
    if (rc == -EAGAIN) {
        t_sleep_ms(1);
        return -ETIMEDOUT;
    }
    if (rc == 0)
        atomic_fetch_add(&r->published, 1);
    return rc;
}

/* Does delivery m of record r carry the headers its publish gave it? */
static bool headers_intact(struct t_book *b, struct t_rec *r, shmq_consumer_t *c,
                           const shmq_msg_t *m)
{
    size_t i = (size_t)(r - b->rec);
    uint32_t producer = (uint32_t)(i / b->per_producer), seq = (uint32_t)(i % b->per_producer);
    shmq_header_t hs[4];
    size_t n = 0;
    if (shmq_msg_headers(c, m, hs, 4, &n) != 0)
        return false;
    if (!has_headers(seq))
        return n == 0;
    char id[32];
    broker_id(id, sizeof id, producer, seq);
    return n == 2 && hs[0].key_len == 4 && memcmp(hs[0].key, "t-id", 4) == 0 &&
           hs[0].value_len == strlen(id) && memcmp(hs[0].value, id, hs[0].value_len) == 0 &&
           hs[1].key_len == 11 && hs[1].value_len == 55;
}

static int producer_main(struct child_arg *a)
{
    struct shared *sh = a->sh;
    shmq_t *q;
    int rc = open_retry(sh, &q);
    if (rc)
        return fail(sh, 10, rc);
    while (!atomic_load(&sh->stop)) {
        uint32_t seq = atomic_fetch_add(&sh->next_seq[a->index], 1);
        if (seq >= sh->book->per_producer) {
            t_sleep_ms(10); /* book full: idle */
            continue;
        }
        /* the other groups' books see the same publish (one payload reaches every group) */
        for (uint32_t g = 1; g < sh->ngroups; g++)
            atomic_fetch_add(&t_rec_of(sh->books[g], a->index, seq)->pub_begun, 1);
        while ((rc = sh->broker ? publish_broker(q, sh->book, a->index, seq)
                                : t_publish(q, sh->book, a->index, seq, 100)) == -ETIMEDOUT) {
            atomic_fetch_add(&sh->publish_timeouts, 1);
            if (atomic_load(&sh->stop))
                break;
        }
        for (uint32_t g = 1; rc == 0 && g < sh->ngroups; g++)
            atomic_fetch_add(&t_rec_of(sh->books[g], a->index, seq)->published, 1);
        if (rc != 0 && rc != -ETIMEDOUT)
            return fail(sh, 11, rc);
    }
    shmq_close(q);
    return 0;
}

static int consumer_main(struct child_arg *a)
{
    struct shared *sh = a->sh;
    uint32_t group = a->index % sh->ngroups;
    struct t_book *b = sh->books[group];
    uint64_t rng = a->seed;
    shmq_t *q;
    shmq_consumer_t *c;
    int rc = open_retry(sh, &q);
    if (rc)
        return fail(sh, 20, rc);
    if ((rc = shmq_consumer_open_group(q, group_names[group], "torture", &c)) != 0)
        return fail(sh, 21, rc);
    while (!atomic_load(&sh->stop)) {
        shmq_msg_t m;
        rc = shmq_receive(c, &m, 50);
        if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR)
            continue;
        if (rc == -ESTALE) { /* fenced (we were stopped too long): start over */
            atomic_fetch_add(&b->estale_receive, 1);
            shmq_consumer_close(c);
            if ((rc = shmq_consumer_open_group(q, group_names[group], "torture", &c)) != 0)
                return fail(sh, 22, rc);
            atomic_fetch_add(&b->reopen, 1);
            continue;
        }
        if (rc != 0)
            return fail(sh, 23, rc);
        struct t_rec *r = t_book_delivery(b, &m);
        if (r && sh->broker && !headers_intact(b, r, c, &m)) {
            atomic_fetch_add(&b->corrupt, 1);
            r = NULL; /* not this record's: acked below without the book */
        }
        if (r && (size_t)(r - b->rec) % b->per_producer % POISON_EVERY == POISON_SEQ) {
            uint32_t mx = atomic_load(&sh->poison_max_attempt);
            while (m.attempt > mx &&
                   !atomic_compare_exchange_weak(&sh->poison_max_attempt, &mx, m.attempt))
                ;
            if (m.attempt <= POISON_HANGS && !atomic_load(&sh->stop)) {
                atomic_fetch_add(&sh->poison_hangs[m.attempt], 1);
                atomic_store(&sh->poisoned[a->slot], 1);
                raise(SIGSTOP); /* the handler hangs on it */
            }
        }
        uint32_t dice = (uint32_t)(t_rand(&rng) % 10000);
        if (dice < 1000) { /* 10%: nack, half with the backoff policy, half with 1-20 ms */
            uint32_t delay = dice < 500 ? 0 : 1 + (uint32_t)(t_rand(&rng) % 20);
            rc = shmq_nack(c, &m, delay);
            if (rc == 0 && r)
                atomic_fetch_add(&r->nacked, 1);
            if (delay)
                atomic_fetch_add(&sh->nacks_delayed, 1);
        } else {
            if (dice >= 9995) { /* 0.05%: slow, sometimes past the ack deadline */
                atomic_fetch_add(&sh->slow_acks, 1);
                t_sleep_ms(100 + (int)(t_rand(&rng) % 300));
            }
            atomic_store(&sh->in_ack[a->slot], r ? (long)(r - b->rec) + 1 : 0);
            rc = t_ack(c, r, &m);
            atomic_store(&sh->in_ack[a->slot], 0);
        }
        if (rc != 0 && rc != -ESTALE)
            return fail(sh, 24, rc);
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

static int maintainer_main(struct child_arg *a)
{
    struct shared *sh = a->sh;
    uint64_t rng = a->seed;
    shmq_t *q;
    int rc = open_retry(sh, &q);
    if (rc)
        return fail(sh, 30, rc);
    while (!atomic_load(&sh->stop)) {
        if ((rc = shmq_maintain(q, NULL)) != 0)
            return fail(sh, 31, rc);
        atomic_fetch_add(&sh->maint_passes, 1);
        t_sleep_ms(2 + (int)(t_rand(&rng) % 8));
    }
    shmq_close(q);
    return 0;
}

static int child_main(void *argp)
{
    struct child_arg *a = argp;
    switch (a->role) {
    case R_PRODUCER: return producer_main(a);
    case R_CONSUMER: return consumer_main(a);
    default: return maintainer_main(a);
    }
}

/* ---------------------------------------------------------------- the chaos monkey */

struct child {
    pid_t pid;
    struct child_arg arg;
    int64_t resume_ms; /* > 0: stopped, SIGCONT at this time */
};

struct chaos {
    struct shared *sh;
    uint64_t rng;
    struct child kids[NCHILD];
    uint64_t kills, stops, crash_kills, crash_stops, armed, restarts, parent_passes;
    uint64_t poison_stops;
    shmq_maint_report_t rep; /* the test's own passes */
    uint64_t points_armed[16];
};

static size_t count_points(void)
{
    size_t n = 0;
    while (crashpoint_names[n])
        n++;
    return n;
}

/*
 * Child k died: if it was inside shmq_ack, that ack may have taken effect (the slot is FREE)
 * without returning. Such a message is not counted as lost if nobody else acked it.
 */
static void note_death(struct chaos *ch, int k)
{
    long v = atomic_exchange(&ch->sh->in_ack[k], 0);
    /* in_ack names a record of the child's group's book (consumers: index % NGROUPS) */
    struct child_arg *a = &ch->kids[k].arg;
    struct t_book *b = ch->sh->books[a->role == R_CONSUMER ? a->index % NGROUPS : 0];
    if (v > 0)
        atomic_fetch_add(&b->rec[v - 1].ack_killed, 1);
}

static void start_child(struct chaos *ch, int k, bool may_arm)
{
    struct child *kid = &ch->kids[k];
    kid->arg.seed = t_rand(&ch->rng) | 1;
    kid->resume_ms = 0;
    if (may_arm && t_rand(&ch->rng) % 3 == 0) {
        size_t np = count_points();
        size_t p = (size_t)(t_rand(&ch->rng) % np);
        int stop = (int)(t_rand(&ch->rng) % 2);
        int skip = (int)(t_rand(&ch->rng) % 200);
        kid->pid =
            t_spawn_crash(child_main, &kid->arg, sizeof kid->arg, crashpoint_names[p], stop, skip);
        ch->armed++;
        if (p < 16)
            ch->points_armed[p]++;
    } else {
        kid->pid = t_spawn(child_main, &kid->arg, sizeof kid->arg);
    }
}

/* Collect state changes of the children: restart the dead, schedule SIGCONT for the stopped. */
static void reap(struct chaos *ch, int64_t now)
{
    for (int k = 0; k < NCHILD; k++) {
        struct child *kid = &ch->kids[k];
        int st;
        pid_t r = waitpid(kid->pid, &st, WNOHANG | WUNTRACED);
        if (r != kid->pid)
            continue;
        if (WIFSTOPPED(st)) {
            if (kid->resume_ms == 0 && atomic_exchange(&ch->sh->poisoned[k], 0)) {
                /* hung on a poison message: long enough to be fenced as hung */
                ch->poison_stops++;
                kid->resume_ms = now + 500 + (int64_t)(t_rand(&ch->rng) % 500);
            } else if (kid->resume_ms == 0) { /* stopped itself at an armed crash point */
                ch->crash_stops++;
                kid->resume_ms = now + 50 + (int64_t)(t_rand(&ch->rng) % 350);
            }
            continue;
        }
        t_untrack(kid->pid);
        note_death(ch, k);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
            ch->crash_kills++; /* an armed crash point */
        else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            atomic_fetch_add(&ch->sh->child_errors, 1);
        ch->restarts++;
        start_child(ch, k, true);
    }
}

static void chaos_step(struct chaos *ch, shmq_t *q)
{
    int64_t now = t_now_ms();
    for (int k = 0; k < NCHILD; k++) {
        struct child *kid = &ch->kids[k];
        if (kid->resume_ms && now >= kid->resume_ms) {
            kill(kid->pid, SIGCONT);
            kid->resume_ms = 0;
        }
    }
    reap(ch, now);
    uint32_t dice = (uint32_t)(t_rand(&ch->rng) % 100);
    int k = (int)(t_rand(&ch->rng) % NCHILD);
    struct child *kid = &ch->kids[k];
    if (dice < 30) {
        kill(kid->pid, SIGKILL);
        waitpid(kid->pid, NULL, 0);
        t_untrack(kid->pid);
        note_death(ch, k);
        ch->kills++;
        ch->restarts++;
        start_child(ch, k, true);
    } else if (dice < 50) {
        if (kid->resume_ms == 0) {
            kill(kid->pid, SIGSTOP);
            ch->stops++;
            kid->resume_ms = now + 50 + (int64_t)(t_rand(&ch->rng) % 350);
        }
    } else if (dice < 70) {
        t_maintain(q, &ch->rep);
        ch->parent_passes++;
    }
    t_sleep_ms(10 + (int)(t_rand(&ch->rng) % 30));
}

static void run_torture(uint32_t ngroups, bool broker)
{
    NGROUPS = ngroups;
    const char *env = getenv("SHMQ_TORTURE_SECONDS");
    int seconds = env ? atoi(env) : 5;
    if (seconds < 1)
        seconds = 1;
    alarm((unsigned)(seconds + 120));
    t_child_alarm_s = (unsigned)(seconds + 60); /* a child may live the whole run */
    const char *cap_env = getenv("SHMQ_TORTURE_CAPACITY");
    if (cap_env && atoi(cap_env) > 0)
        CAP = (uint32_t)atoi(cap_env);
    const char *seed_env = getenv("SHMQ_TORTURE_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)t_now_us() ^ getpid();

    uint32_t per_producer = (uint32_t)seconds * 250000u;
    if (per_producer < (1u << 20))
        per_producer = 1u << 20;
    uint32_t max_pp =
        (uint32_t)((T_ARENA_SIZE - (4u << 20)) / sizeof(struct t_rec) / PRODUCERS / ngroups);
    if (per_producer > max_pp)
        per_producer = max_pp;

    struct shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname("tort"));
    for (uint32_t g = 0; g < ngroups; g++)
        sh->books[g] = t_book_new(PRODUCERS, per_producer);
    sh->book = sh->books[0];
    sh->ngroups = ngroups;
    sh->broker = broker;
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = CAP;
    cfg.max_msg_size = 128;
    cfg.max_procs = 128;
    cfg.heartbeat_timeout_ms = 200;
    cfg.ack_deadline_ms = 300;
    cfg.max_attempts = 1000; /* no dead letters: every message must end acked */
    cfg.backoff_base_ms = 5;
    cfg.backoff_cap_ms = 50;
    cfg.max_groups = ngroups; /* with the default log (PROCESS): it carries every group */
    cfg.max_header_bytes = broker ? 128 : 0;
    shmq_t *q;
    int rc = shmq_create(sh->qname, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    for (uint32_t g = 1; g < ngroups; g++)
        cr_assert_eq(shmq_group_create(q, group_names[g], SHMQ_GROUP_BLOCK, 0), 0);

    struct chaos ch;
    memset(&ch, 0, sizeof ch);
    ch.sh = sh;
    ch.rng = seed | 1;
    for (int k = 0; k < NCHILD; k++) {
        struct child_arg *a = &ch.kids[k].arg;
        a->sh = sh;
        a->role = k < PRODUCERS               ? R_PRODUCER
                  : k < PRODUCERS + CONSUMERS ? R_CONSUMER
                                              : R_MAINTAINER;
        a->index = k < PRODUCERS ? (uint32_t)k : (uint32_t)(k - PRODUCERS);
        a->slot = k;
        start_child(&ch, k, false);
    }

    int64_t t_start = t_now_ms(), t_end = t_start + (int64_t)seconds * 1000;
    while (t_now_ms() < t_end)
        chaos_step(&ch, q);

    /* Stop everything: continue the stopped, let all end (an armed one may still crash). */
    atomic_store(&sh->stop, 1);
    int64_t quit_end = t_now_ms() + 5000;
    for (int k = 0; k < NCHILD; k++) {
        struct child *kid = &ch.kids[k];
        for (;;) {
            kill(kid->pid, SIGCONT);
            int st;
            pid_t r = waitpid(kid->pid, &st, WNOHANG);
            if (r == kid->pid) {
                t_untrack(kid->pid);
                note_death(&ch, k);
                if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
                    ch.crash_kills++;
                else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                    atomic_fetch_add(&sh->child_errors, 1);
                break;
            }
            if (t_now_ms() > quit_end) {
                t_diag_stack(kid->pid);
                cr_assert_fail("child %d (role %d) did not end after the stop flag", kid->pid,
                               kid->arg.role);
            }
            t_sleep_ms(2);
        }
    }
    int64_t run_ms = t_now_ms() - t_start;

    /* Maintain and drain with a fresh consumer per group until all is acked and quiet. */
    shmq_consumer_t *cs[MAX_GROUPS];
    for (uint32_t g = 0; g < ngroups; g++)
        cr_assert_eq(shmq_consumer_open_group(q, group_names[g], "drain", &cs[g]), 0);
    shmq_stats_t st;
    shmq_maint_report_t rep = {0};
    int64_t drain_end = t_now_ms() + 20000;
    uint64_t drained = 0, drain_reopens = 0;
    for (;;) {
        t_maintain(q, &rep);
        bool lost = false;
        for (uint32_t g = 0; g < ngroups; g++) {
            for (;;) {
                shmq_msg_t m;
                rc = shmq_receive(cs[g], &m, 20);
                if (rc != 0)
                    break;
                struct t_rec *r = t_book_delivery(sh->books[g], &m);
                rc = t_ack(cs[g], r, &m);
                cr_assert(rc == 0 || rc == -ESTALE, "drain ack: %s", shmq_strerror(rc));
                drained++;
            }
            if (rc == -ESTALE) {
                /* fenced as hung: the test's own maintenance pass judged this consumer by its
                 * heartbeat after the test had been descheduled longer than the timeout (a busy
                 * machine); its messages were taken back. Open another and go on draining */
                shmq_consumer_close(cs[g]);
                cr_assert_eq(shmq_consumer_open_group(q, group_names[g], "drain", &cs[g]), 0);
                drain_reopens++;
                rc = -EAGAIN;
            }
            cr_assert(rc == -ETIMEDOUT || rc == -EAGAIN, "drain receive: %s", shmq_strerror(rc));
            lost |= t_book_tally(sh->books[g]).lost != 0;
        }
        cr_assert_eq(shmq_stats(q, &st), 0);
        if ((!lost && t_quiet(&st, CAP)) || t_now_ms() > drain_end)
            break;
    }
    for (uint32_t g = 1; g < ngroups; g++) { /* the other groups' books, as group 0's below */
        struct t_tally tg = t_book_tally(sh->books[g]);
        fprintf(stderr,
                "torture: group %s: published %llu, delivered %llu, duplicates %llu, losses "
                "%llu, acked %llu, corrupt %llu, double acks %llu\n",
                group_names[g], (unsigned long long)tg.published, (unsigned long long)tg.delivered,
                (unsigned long long)tg.duplicates, (unsigned long long)tg.lost,
                (unsigned long long)tg.acked_ok,
                (unsigned long long)atomic_load(&sh->books[g]->corrupt),
                (unsigned long long)tg.double_acked);
        cr_assert_eq(atomic_load(&sh->books[g]->corrupt), 0,
                     "group %s: corrupt payloads delivered", group_names[g]);
        cr_assert_eq(atomic_load(&sh->books[g]->out_of_range), 0);
        cr_assert_eq(tg.lost, 0, "group %s: %llu published messages were never acked",
                     group_names[g], (unsigned long long)tg.lost);
        cr_assert_eq(tg.double_acked, 0, "group %s: acked successfully twice", group_names[g]);
    }
    struct t_tally t = t_book_tally(sh->book);
    uint64_t max_attempt = 0;
    for (size_t i = 0; i < (size_t)PRODUCERS * per_producer; i++)
        if (atomic_load(&sh->book->rec[i].max_attempt) > max_attempt)
            max_attempt = atomic_load(&sh->book->rec[i].max_attempt);
    fprintf(
        stderr,
        "torture: %d s (seed 0x%llx, capacity %u), run %lld ms: published %llu, delivered %llu, "
        "duplicates %llu (%llu not after a nack), losses %llu, acked %llu (stale acks %llu, acker "
        "killed inside "
        "shmq_ack %llu), nacked %llu, "
        "max attempt %llu, drained at the end %llu (drain consumers fenced and reopened %llu)\n",
        seconds, (unsigned long long)seed, CAP, (long long)run_ms, (unsigned long long)t.published,
        (unsigned long long)t.delivered, (unsigned long long)t.duplicates,
        (unsigned long long)t.unasked_redeliveries, (unsigned long long)t.lost,
        (unsigned long long)t.acked_ok, (unsigned long long)t.stale_acks,
        (unsigned long long)t.killed_in_ack, (unsigned long long)t.nacked,
        (unsigned long long)max_attempt, (unsigned long long)drained,
        (unsigned long long)drain_reopens);
    fprintf(stderr,
            "torture: kills %llu (SIGKILL by the test) + %llu (armed crash points), stops %llu "
            "(SIGSTOP by the test) + %llu (crash points), restarts %llu, armed %llu, "
            "receive -ESTALE %llu, publish timeouts %llu, maintenance passes %llu (children) + "
            "%llu (test), child errors %llu\n",
            (unsigned long long)ch.kills, (unsigned long long)ch.crash_kills,
            (unsigned long long)ch.stops, (unsigned long long)ch.crash_stops,
            (unsigned long long)ch.restarts, (unsigned long long)ch.armed,
            (unsigned long long)atomic_load(&sh->book->estale_receive),
            (unsigned long long)atomic_load(&sh->publish_timeouts),
            (unsigned long long)atomic_load(&sh->maint_passes),
            (unsigned long long)ch.parent_passes,
            (unsigned long long)atomic_load(&sh->child_errors));
    fprintf(stderr,
            "torture: poison: consumers hung at attempt 1 %llu, at attempt 2 %llu (stops %llu), "
            "highest attempt of a poison message %u; the test's passes copied out %u messages\n",
            (unsigned long long)atomic_load(&sh->poison_hangs[1]),
            (unsigned long long)atomic_load(&sh->poison_hangs[2]),
            (unsigned long long)ch.poison_stops, atomic_load(&sh->poison_max_attempt),
            ch.rep.copied_out);
    fprintf(stderr, "torture: corrupt payloads %llu, out of range %llu, double acks %llu\n",
            (unsigned long long)atomic_load(&sh->book->corrupt),
            (unsigned long long)atomic_load(&sh->book->out_of_range),
            (unsigned long long)t.double_acked);
    fprintf(stderr, "torture: final " T_STATS_FMT "\n", T_STATS_ARGS(st, CAP));
    if (t.lost) {
        size_t i = (size_t)t.first_lost;
        struct t_rec *r = &sh->book->rec[i];
        fprintf(stderr,
                "torture: first lost message: producer %zu seq %zu: pub_begun %u delivered %u "
                "ack_begun %u acked %u stale %u nacked %u max_attempt %u\n",
                i / per_producer, i % per_producer, atomic_load(&r->pub_begun),
                atomic_load(&r->delivered), atomic_load(&r->ack_begun), atomic_load(&r->acked),
                atomic_load(&r->ack_stale), atomic_load(&r->nacked), atomic_load(&r->max_attempt));
        t_dump(sh->qname);
    }
    cr_assert_eq(atomic_load(&sh->child_errors), 0, "child errors (last code %d)",
                 atomic_load(&sh->last_error));
    cr_assert_eq(atomic_load(&sh->book->corrupt), 0, "corrupt payloads delivered");
    cr_assert_eq(atomic_load(&sh->book->out_of_range), 0);
    cr_assert_eq(t.lost, 0, "%llu published messages were never acked", (unsigned long long)t.lost);
    cr_assert_eq(t.double_acked, 0, "%llu messages were acked successfully twice",
                 (unsigned long long)t.double_acked);
    cr_assert_gt(t.published, 0);
    cr_assert(t_quiet(&st, CAP), "not quiet after the drain: " T_STATS_FMT, T_STATS_ARGS(st, CAP));
    cr_assert_eq(st.dead_lettered, 0);
    /* counters may undercount (a process killed while folding them), never overcount */
    uint64_t ack_begun = 0; /* every group's acks count in stats.acked */
    for (uint32_t g = 0; g < ngroups; g++)
        ack_begun += t_book_tally(sh->books[g]).ack_begun;
    cr_assert_leq(st.acked, ack_begun, "stats.acked %llu > acks attempted %llu",
                  (unsigned long long)st.acked, (unsigned long long)ack_begun);
    cr_assert_leq(st.published, t.pub_begun);
    for (uint32_t g = 0; g < ngroups; g++)
        cr_assert_eq(shmq_consumer_close(cs[g]), 0);
    for (uint32_t g = 1; g < ngroups; g++) /* the full cycle below runs in "default" alone */
        cr_assert_eq(shmq_group_delete(q, group_names[g]), 0);
    st = t_settle(q, CAP, 3000, NULL);
    cr_assert_eq(st.procs, 1, "%u registry entries still active after everyone left", st.procs);
    t_full_cycle(q, CAP);
    cr_assert_eq(shmq_close(q), 0);
    alarm(0);
}

Test(torture, kill_stop_restart_no_loss)
{
    run_torture(1, false);
}

Test(torture, kill_stop_restart_no_loss_with_groups)
{
    run_torture(2, false);
}

Test(torture, kill_stop_restart_no_loss_with_headers_and_delays)
{
    run_torture(1, true);
}
