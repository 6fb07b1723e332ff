/*
 * test_storage_faults.c - the I/O fault loop (issue 15), in the style of SQLite's I/O error
 * tests: for each scenario (create, publish, sync publish, ack, maintenance, recovery) and each
 * errno (ENOSPC, EIO, EACCES, ENOMEM), fail the Nth I/O call the scenario makes
 * (io_fault_arm_any: any op of src/io.h), for N = 1, 2, ... until a run in which the Nth call
 * never came. Each run is a forked child, so that a signal shows as its death. Each run:
 *   - no signal (the child exits by itself);
 *   - no false success: after the fault is lifted, every message whose publish returned 0 is
 *     delivered (maintenance runs to fire messages a nack or a rebuild left delayed);
 *   - a failed call returns an error (counted, and printed per scenario).
 * The numbers (fault points per scenario, how many runs saw an error returned) are printed by
 * `test_storage_faults --verbose` and quoted in the README.
 *
 * Log files and the state directory go to a private directory on /dev/shm (tmpfs: fsync is
 * cheap there), so the loop takes seconds.
 */
#include "helpers.h"

#include "io.h"

TestSuite(faults, .fini = h_cleanup, .timeout = 600);

#ifdef SHMQ_CRASH_POINTS

#define K 25           /* messages per scenario: with acks, just more than a log file holds */
#define MSG_LEN 2400   /* with 64 KiB log files: the records cross into a second file */
#define MAX_POINTS 400 /* a scenario with more calls than this is a bug of the loop */

enum scenario { S_CREATE, S_PUBLISH, S_SYNC, S_ACK, S_MAINTAIN, S_RECOVER, S__COUNT };
static const char *const scenario_names[S__COUNT] = {"create", "publish", "sync-publish",
                                                     "ack", "maintenance", "recovery"};
static const int errs[] = {ENOSPC, EIO, EACCES, ENOMEM};
#define NERRS (int)(sizeof(errs) / sizeof(errs[0]))

/* What a child tells the parent. */
struct outcome {
    int fired;      /* the Nth call came and was failed */
    int op;         /* its op */
    int errors;     /* calls of the scenario that returned an error */
    int successes;  /* calls of the scenario that returned 0 */
    int lost;       /* messages published with 0 and never delivered */
    char why[160];  /* the first problem */
};

static const char *name_of(int s, int e, uint64_t n)
{
    static char buf[SHMQ_NAME_MAX + 1];
    snprintf(buf, sizeof(buf), "t-f%d%d-%d-%llu", s, e, (int)getpid(), (unsigned long long)n);
    return buf;
}

static shmq_config_t config(bool sync)
{
    shmq_config_t cfg = h_small_config(64, MSG_LEN, 8);
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    cfg.durability = sync ? SHMQ_DURABILITY_SYNC : SHMQ_DURABILITY_PROCESS;
    cfg.dedup_window_count = 64;
    cfg.log_retention_bytes = 0; /* maintenance deletes every file nothing live needs */
    return cfg;
}

static int publish_nth(shmq_t *q, int i)
{
    char msg[MSG_LEN];
    memset(msg, 'a' + i % 26, sizeof(msg));
    memcpy(msg, &i, sizeof(i));
    return shmq_publish(q, msg, sizeof(msg), NULL);
}

/* Receive (and ack) until every message in want[] came, maintenance firing delayed ones, for at
 * most 20 s: how many of want[] never came. got[] marks what came (before, too). */
static int collect(shmq_t *q, const bool *want, bool *got)
{
    shmq_consumer_t *c;
    if (shmq_consumer_open(q, "check", &c) != 0)
        return K;
    for (int64_t end = h_now_ms() + 20000; h_now_ms() < end;) {
        int missing = 0;
        for (int i = 0; i < K; i++)
            missing += want[i] && !got[i];
        if (!missing)
            break;
        shmq_maintain(q, NULL);
        shmq_msg_t m;
        if (shmq_receive(c, &m, 20) != 0)
            continue;
        int i;
        memcpy(&i, m.data, sizeof(i));
        if (i >= 0 && i < K)
            got[i] = true;
        shmq_ack(c, &m);
    }
    shmq_consumer_close(c);
    int lost = 0;
    for (int i = 0; i < K; i++)
        lost += want[i] && !got[i];
    return lost;
}

static void tally(struct outcome *o, int rc)
{
    if (rc == 0)
        o->successes++;
    else
        o->errors++;
    if (rc != 0 && !o->why[0])
        snprintf(o->why, sizeof(o->why), "first error: %s", shmq_strerror(rc));
}

struct run {
    int scenario, err;
    uint64_t nth;
    struct outcome *out;
};

static int child(void *arg)
{
    struct run *r = arg;
    struct outcome *o = r->out;
    const char *name = name_of(r->scenario, r->err, r->nth);
    shmq_config_t cfg = config(r->scenario == S_SYNC);
    bool want[K] = {0}, got[K] = {0};
    shmq_t *q = NULL;
    int rc;

    if (r->scenario == S_CREATE) {
        io_fault_arm_any(r->nth, r->err);
        rc = shmq_create(name, &cfg, &q);
        o->fired = io_fault_any_fired();
        o->op = io_fault_any_op();
        io_fault_disarm_all();
        tally(o, rc);
        if (rc != 0 && (rc = shmq_create(name, &cfg, &q)) != 0) {
            /* a failed create must leave nothing in the way of the next one */
            snprintf(o->why, sizeof(o->why), "create after a failed one: %s", shmq_strerror(rc));
            return 1;
        }
        for (int i = 0; i < K; i++)
            want[i] = publish_nth(q, i) == 0;
        o->lost = collect(q, want, got);
        shmq_close(q);
        shmq_unlink(name);
        return 0;
    }

    if ((rc = shmq_create(name, &cfg, &q)) != 0) {
        snprintf(o->why, sizeof(o->why), "setup create: %s", shmq_strerror(rc));
        return 2;
    }
    bool fault_publishes = r->scenario == S_PUBLISH || r->scenario == S_SYNC;
    if (fault_publishes)
        io_fault_arm_any(r->nth, r->err);
    for (int i = 0; i < K; i++) {
        rc = publish_nth(q, i);
        /* sync: -EIO says "not known durable": queued all the same, delivered or not */
        want[i] = rc == 0;
        if (fault_publishes)
            tally(o, rc);
    }
    if (fault_publishes) {
        o->fired = io_fault_any_fired();
        o->op = io_fault_any_op();
        io_fault_disarm_all();
        /* review F5: a failed group commit flush must be an error of some sync publish (the
         * sticky bit: every later one too), never 0 for all of them */
        if (r->scenario == S_SYNC && o->fired && o->op == IO_FDATASYNC && o->errors == 0) {
            snprintf(o->why, sizeof(o->why), "a failed fdatasync, and every sync publish said 0");
            return 7;
        }
        /* review F5: what a publish said 0 to is in the log: drop the segment and rebuild it
         * from the log (a new handle, as a restarted process after a segment loss) */
        shmq_close(q);
        q = NULL;
        shmq_unlink_segment(name);
        if ((rc = shmq_open(name, &q)) != 0) {
            snprintf(o->why, sizeof(o->why), "rebuild after the faulted publishes: %s",
                     shmq_strerror(rc));
            return 8;
        }
    }

    if (r->scenario == S_ACK) {
        shmq_consumer_t *c;
        if (shmq_consumer_open(q, "acker", &c) != 0)
            return 3;
        io_fault_arm_any(r->nth, r->err);
        for (int i = 0; i < K / 2; i++) {
            shmq_msg_t m;
            if (shmq_receive(c, &m, 1000) != 0)
                break;
            int idx;
            memcpy(&idx, m.data, sizeof(idx));
            rc = shmq_ack(c, &m);
            tally(o, rc);
            if (rc == 0 && idx >= 0 && idx < K)
                got[idx] = true;
        }
        o->fired = io_fault_any_fired();
        o->op = io_fault_any_op();
        io_fault_disarm_all();
        shmq_consumer_close(c);
    } else if (r->scenario == S_MAINTAIN || r->scenario == S_RECOVER) {
        shmq_consumer_t *c; /* ack first: maintenance then has files to delete (review F5: all
                             * of them for maintenance, so no live message pins a file) */
        if (shmq_consumer_open(q, "acker", &c) != 0)
            return 4;
        for (int i = 0; i < (r->scenario == S_MAINTAIN ? K : K / 2); i++) {
            shmq_msg_t m;
            if (shmq_receive(c, &m, 1000) != 0)
                break;
            int idx;
            memcpy(&idx, m.data, sizeof(idx));
            if (shmq_ack(c, &m) == 0 && idx >= 0 && idx < K)
                got[idx] = true;
        }
        shmq_consumer_close(c);
        if (r->scenario == S_MAINTAIN) {
            io_fault_arm_any(r->nth, r->err);
            for (int i = 0; i < 3; i++)
                tally(o, shmq_maintain(q, NULL));
            o->fired = io_fault_any_fired();
            o->op = io_fault_any_op();
            io_fault_disarm_all();
        } else {
            shmq_close(q);
            q = NULL;
            shmq_unlink_segment(name);
            io_fault_arm_any(r->nth, r->err);
            rc = shmq_open(name, &q); /* rebuilds the segment from the log */
            o->fired = io_fault_any_fired();
            o->op = io_fault_any_op();
            io_fault_disarm_all();
            tally(o, rc);
            if (rc != 0 && (rc = shmq_open(name, &q)) != 0) {
                snprintf(o->why, sizeof(o->why), "open after a failed rebuild: %s",
                         shmq_strerror(rc));
                return 5;
            }
        }
    }

    /* the fault is lifted: a new handle (as a restarted process would) must see everything */
    o->lost = collect(q, want, got);
    if (o->lost)
        snprintf(o->why, sizeof(o->why), "%d of the messages published with 0 never came",
                 o->lost);
    shmq_close(q);
    shmq_unlink(name);
    return o->lost ? 6 : 0;
}

/* The totals of one scenario over every errno. */
struct totals {
    uint64_t points[NERRS]; /* calls failed (N values that fired) */
    uint64_t errors, successes;
};

Test(faults, every_io_call_of_every_scenario_fails_cleanly)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/dev/shm/shmq-test-faults-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    setenv("SHMQ_STATE_DIR", dir, 1);
    struct outcome *o = h_shared_alloc(sizeof(*o));
    struct totals tot[S__COUNT];
    memset(tot, 0, sizeof(tot));
    for (int s = 0; s < S__COUNT; s++) {
        for (int e = 0; e < NERRS; e++) {
            for (uint64_t n = 1;; n++) {
                cr_assert_lt(n, MAX_POINTS, "%s: more than %d I/O calls", scenario_names[s],
                             MAX_POINTS);
                memset(o, 0, sizeof(*o));
                struct run r = {s, errs[e], n, o};
                pid_t pid = h_fork(child, &r);
                int st = 0;
                char buf[96];
                int w = h_waitpid(pid, 120000, 0, &st);
                if (w == -ETIMEDOUT) {
                    kill(pid, SIGKILL);
                    waitpid(pid, NULL, 0);
                    h_untrack(pid);
                }
                cr_assert_eq(w, 0, "%s, call %llu failing with %s: no end in 120 s",
                             scenario_names[s], (unsigned long long)n, strerror(errs[e]));
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                          "%s, call %llu (%s) failing with %s: child %s (%s)",
                          scenario_names[s], (unsigned long long)n,
                          o->fired ? io_op_name((enum io_op)o->op) : "?", strerror(errs[e]),
                          h_status_str(st, buf, sizeof(buf)), o->why);
                if (!o->fired)
                    break; /* the scenario makes fewer than n calls: done with this errno */
                tot[s].points[e]++;
                tot[s].errors += o->errors != 0;
                tot[s].successes += o->errors == 0;
            }
        }
    }
    uint64_t all = 0;
    for (int s = 0; s < S__COUNT; s++) {
        uint64_t pts = 0;
        for (int e = 0; e < NERRS; e++)
            pts += tot[s].points[e];
        all += pts;
        cr_log_info("%-12s %3llu fault points per errno (ENOSPC %llu, EIO %llu, EACCES %llu, "
                    "ENOMEM %llu): %llu runs returned an error, %llu absorbed the failure; "
                    "no signal, nothing lost",
                    scenario_names[s], (unsigned long long)tot[s].points[0],
                    (unsigned long long)tot[s].points[0], (unsigned long long)tot[s].points[1],
                    (unsigned long long)tot[s].points[2], (unsigned long long)tot[s].points[3],
                    (unsigned long long)tot[s].errors, (unsigned long long)tot[s].successes);
        cr_assert_gt(pts, 0, "%s made no I/O call", scenario_names[s]);
    }
    cr_log_info("%llu faulted runs in all", (unsigned long long)all);
    h_remove_tree(dir);
}

#else

Test(faults, needs_crash_points) { cr_skip_test("the library was built without SHMQ_CRASH_POINTS"); }

#endif
