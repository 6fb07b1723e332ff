/*
 * test_seen.c - the consumer dedup helper (src/seen.c, include/shmq/seen.h): redeliveries are
 * detected, in memory and across a consumer's restart with the file; max_entries bounds the
 * table and the file; check_and_add is an exact test-and-set between threads.
 *
 * shmq-test-label: threaded
 */
#include "helpers.h"

#include <pthread.h>

#include "shmq/seen.h"

TestSuite(seen, .fini = h_cleanup, .timeout = 120);

/* Under TSan: liburcu is not instrumented, so TSan cannot see the synchronization inside it and
 * reports its internal work queue's malloc (one thread) and free (its worker) as a race. Ignore
 * the allocations liburcu makes itself; ours (nodes, freed by our call_rcu callback) stay
 * checked, with the edges src/seen.c annotates (SEEN_TSAN_*). */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:liburcu-cds.so\ncalled_from_lib:liburcu.so\n"
           "called_from_lib:liburcu-common.so\n";
}

/* Under TSan: the restart test's child starts liburcu's threads after a fork() of a process
 * that has threads (Criterion's), which TSan refuses by default. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "die_after_fork=0"; }

/* A scratch path for a seen file in the test's state directory. */
static void seen_path(const char *tag, char *buf, size_t size)
{
    const char *dir = h_state_dir_path();
    mkdir(dir, 0700); /* ctest names it; nothing may have made it yet */
    snprintf(buf, size, "%s/seen-%s-%d", dir, tag, (int)getpid());
    unlink(buf);
}

static void remove_seen(const char *path)
{
    char p[512];
    unlink(path);
    snprintf(p, sizeof p, "%s.lock", path);
    unlink(p);
    snprintf(p, sizeof p, "%s.tmp", path);
    unlink(p);
}

/* A queue whose nack(…, 0) makes the message ready again at once. */
static shmq_t *make_queue(const char *name)
{
    shmq_config_t cfg = h_small_config(64, 256, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    cfg.max_attempts = 10;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    return q;
}

Test(seen, redelivery_is_detected_in_memory)
{
    const char *name = h_qname("seen-redeliver");
    shmq_t *q = make_queue(name);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "seen", &c), 0);
    shmq_seen_t *s;
    h_assert_rc(shmq_seen_open(NULL, 100, &s), 0);

    uint64_t id;
    h_assert_rc(shmq_publish(q, "order-17", 8, &id), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    cr_assert_eq(m.id, id);
    cr_assert_eq(m.attempt, 1);
    /* First delivery: new by id and by a key taken from the payload. */
    h_assert_rc(shmq_seen_id(s, m.id), 0);
    h_assert_rc(shmq_seen_check(s, m.data, m.len), 0);
    h_assert_rc(shmq_seen_check_and_add(s, m.data, m.len), 0);
    h_assert_rc(shmq_seen_check(s, m.data, m.len), 1);
    /* Processed, then the ack is lost: the queue delivers it again. */
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    cr_assert_eq(m.id, id, "the redelivery is the same message");
    cr_assert(m.flags & SHMQ_MSG_REDELIVERED);
    cr_assert_eq(m.attempt, 2);
    h_assert_rc(shmq_seen_id(s, m.id), 1);
    h_assert_rc(shmq_seen_check_and_add(s, m.data, m.len), 1);
    h_assert_rc(shmq_ack(c, &m), 0);

    /* Argument checks. */
    h_assert_rc(shmq_seen_check(s, "x", 0), -EINVAL);
    h_assert_rc(shmq_seen_check(NULL, "x", 1), -EINVAL);
    char big[SHMQ_SEEN_KEY_MAX + 1] = {0};
    h_assert_rc(shmq_seen_add(s, big, sizeof big), -EMSGSIZE);
    h_assert_rc(shmq_seen_add(s, big, SHMQ_SEEN_KEY_MAX), 0);
    h_assert_rc(shmq_seen_check(s, big, SHMQ_SEEN_KEY_MAX), 1);
    shmq_seen_t *bad;
    h_assert_rc(shmq_seen_open(NULL, 0, &bad), -EINVAL);
    h_assert_rc(shmq_seen_set_sync(s, 7), -EINVAL);

    h_assert_rc(shmq_seen_close(s), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* The consumer process of the restart test: handles messages by the recipe; on the message
 * with id *crash_on it adds it to the seen file and dies before acking it. */
struct consumer_arg {
    const char *queue, *path;
    uint64_t crash_on;
    _Atomic uint32_t *processed; /* shared: ids processed, by the child */
};

static int consumer_child(void *argp)
{
    struct consumer_arg *a = argp;
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_seen_t *s;
    if (shmq_open(a->queue, &q) || shmq_consumer_open(q, "child", &c) ||
        shmq_seen_open(a->path, 1000, &s))
        return 10;
    for (;;) {
        shmq_msg_t m;
        if (shmq_receive(c, &m, 2000) != 0)
            return 11;
        if (shmq_seen_check(s, &m.id, sizeof m.id) == 1) {
            shmq_ack(c, &m);
            continue;
        }
        atomic_fetch_add(a->processed, 1); /* "process" */
        if (shmq_seen_add(s, &m.id, sizeof m.id) != 0)
            return 12;
        if (m.id == a->crash_on)
            raise(SIGKILL); /* processed and marked, never acked */
        if (shmq_ack(c, &m) != 0)
            return 13;
    }
}

Test(seen, redelivery_is_detected_after_consumer_restart_with_file)
{
    const char *name = h_qname("seen-restart");
    char path[256];
    seen_path("restart", path, sizeof path);
    shmq_t *q = make_queue(name);
    uint64_t ids[10];
    for (int i = 0; i < 10; i++)
        h_assert_rc(shmq_publish(q, &i, sizeof i, &ids[i]), 0);

    _Atomic uint32_t *processed = h_shared_alloc(sizeof(*processed));
    struct consumer_arg a = {name, path, ids[5], processed};
    pid_t pid = h_fork(consumer_child, &a);
    int st;
    cr_assert_eq(h_waitpid(pid, 10000, 0, &st), 0, "the consumer did not die");
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the consumer died at its crash point");
    cr_assert_eq(atomic_load(processed), 6, "ids[0..5] were processed before the crash");

    /* Its unacked message comes back once maintenance finds the consumer dead. */
    h_assert_rc(shmq_maintain(q, NULL), 0);
    shmq_seen_t *s;
    h_assert_rc(shmq_seen_open(path, 1000, &s), 0);
    shmq_seen_stats_t ss;
    h_assert_rc(shmq_seen_stats(s, &ss), 0);
    cr_assert_eq(ss.loaded, 6, "six keys read back (got %llu)", (unsigned long long)ss.loaded);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "restarted", &c), 0);
    int again = 0, fresh = 0;
    for (int n = 0; n < 5; n++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 2000), 0);
        if (shmq_seen_check(s, &m.id, sizeof m.id) == 1) {
            cr_assert_eq(m.id, ids[5], "only the crashed one is seen");
            cr_assert(m.flags & SHMQ_MSG_REDELIVERED);
            again++;
        } else {
            h_assert_rc(shmq_seen_add(s, &m.id, sizeof m.id), 0);
            fresh++;
        }
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_assert_eq(again, 1, "the redelivered message was detected");
    cr_assert_eq(fresh, 4, "ids[6..9] were new");

    /* A second table may not share the file while this one has it. */
    shmq_seen_t *other;
    h_assert_rc(shmq_seen_open(path, 1000, &other), -EBUSY);
    h_assert_rc(shmq_seen_close(s), 0);

    /* A torn last record (a crash while appending) is skipped, the rest kept. */
    int fd = open(path, O_WRONLY | O_APPEND);
    cr_assert(fd >= 0);
    const unsigned char torn[] = {0x53, 0x45, 0x45, 0x4e, 8, 0, 0, 0, 1, 2, 3};
    cr_assert_eq(write(fd, torn, sizeof torn), (ssize_t)sizeof torn);
    close(fd);
    h_assert_rc(shmq_seen_open(path, 1000, &s), 0);
    h_assert_rc(shmq_seen_stats(s, &ss), 0);
    cr_assert_eq(ss.loaded, 10);
    cr_assert_eq(ss.bad_bytes, sizeof torn);
    for (int i = 0; i < 10; i++)
        h_assert_rc(shmq_seen_check(s, &ids[i], sizeof ids[i]), 1);
    h_assert_rc(shmq_seen_close(s), 0);
    /* ... and the file was rewritten clean. */
    h_assert_rc(shmq_seen_open(path, 1000, &s), 0);
    h_assert_rc(shmq_seen_stats(s, &ss), 0);
    cr_assert_eq(ss.bad_bytes, 0);
    cr_assert_eq(ss.loaded, 10);
    h_assert_rc(shmq_seen_close(s), 0);

    /* A file that is not a seen file is refused and left alone. */
    fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_eq(write(fd, "hello, world, not a seen file", 29), 29);
    close(fd);
    h_assert_rc(shmq_seen_open(path, 1000, &s), -EBADMSG);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_size, 29);

    remove_seen(path);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

static void key_of(uint64_t i, char *buf, size_t size, size_t *len)
{
    *len = (size_t)snprintf(buf, size, "key-%llu", (unsigned long long)i);
}

Test(seen, max_entries_bounds_table_and_file)
{
    enum { MAX = 1000, FLOOD = 100000 };
    char path[256], k[32];
    size_t klen;
    seen_path("flood", path, sizeof path);
    shmq_seen_t *s;
    h_assert_rc(shmq_seen_open(path, MAX, &s), 0);
    h_assert_rc(shmq_seen_set_sync(s, SHMQ_SEEN_SYNC_WRITE), 0);
    shmq_seen_stats_t st;
    for (uint64_t i = 0; i < FLOOD; i++) {
        key_of(i, k, sizeof k, &klen);
        h_assert_rc(shmq_seen_check_and_add(s, k, klen), 0);
        if (i % 1000 == 999) {
            h_assert_rc(shmq_seen_stats(s, &st), 0);
            cr_assert_leq(st.entries, MAX, "table holds %zu > %d keys", st.entries, MAX);
            cr_assert_leq(st.file_records, 4 * MAX + 1, "file holds %llu records",
                          (unsigned long long)st.file_records);
        }
    }
    h_assert_rc(shmq_seen_stats(s, &st), 0);
    cr_assert_eq(st.entries, MAX);
    cr_assert_eq(st.added, FLOOD);
    cr_assert_eq(st.evicted, FLOOD - MAX);
    cr_assert_gt(st.compactions, 0);
    /* The oldest are forgotten, the newest MAX kept. */
    key_of(0, k, sizeof k, &klen);
    h_assert_rc(shmq_seen_check(s, k, klen), 0);
    key_of(FLOOD - MAX - 1, k, sizeof k, &klen);
    h_assert_rc(shmq_seen_check(s, k, klen), 0);
    for (uint64_t i = FLOOD - MAX; i < FLOOD; i++) {
        key_of(i, k, sizeof k, &klen);
        h_assert_rc(shmq_seen_check(s, k, klen), 1);
    }
    h_assert_rc(shmq_seen_close(s), 0);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_leq(sb.st_size, 16 + (4 * MAX + 1) * (12 + 12), "file of %lld bytes",
                  (long long)sb.st_size);
    cr_assert_eq(sb.st_mode & 0777, 0600);

    /* Read back: exactly the newest MAX. */
    h_assert_rc(shmq_seen_open(path, MAX, &s), 0);
    h_assert_rc(shmq_seen_stats(s, &st), 0);
    cr_assert_eq(st.entries, MAX);
    key_of(FLOOD - MAX - 1, k, sizeof k, &klen);
    h_assert_rc(shmq_seen_check(s, k, klen), 0);
    key_of(FLOOD - MAX, k, sizeof k, &klen);
    h_assert_rc(shmq_seen_check(s, k, klen), 1);
    key_of(FLOOD - 1, k, sizeof k, &klen);
    h_assert_rc(shmq_seen_check(s, k, klen), 1);
    h_assert_rc(shmq_seen_close(s), 0);
    remove_seen(path);
}

/* ---- Threads ---- */

enum { THREADS = 4, KEYS = 20000 };

struct race {
    shmq_seen_t *s;
    _Atomic uint32_t *winners; /* per key: how many callers got 0 */
    _Atomic int go;
    int errors;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->go))
        ;
    for (uint64_t i = 0; i < KEYS; i++) {
        int rc = shmq_seen_id(r->s, i);
        if (rc == 0)
            atomic_fetch_add(&r->winners[i], 1);
        else if (rc != 1)
            r->errors++;
    }
    return NULL;
}

Test(seen, check_and_add_is_exact_between_threads)
{
    struct race r = {0};
    h_assert_rc(shmq_seen_open(NULL, KEYS, &r.s), 0);
    r.winners = calloc(KEYS, sizeof(*r.winners));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, racer, &r), 0);
    atomic_store(&r.go, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(r.errors, 0);
    for (int i = 0; i < KEYS; i++)
        cr_assert_eq(atomic_load(&r.winners[i]), 1, "key %d added %u times", i,
                     atomic_load(&r.winners[i]));
    shmq_seen_stats_t st;
    h_assert_rc(shmq_seen_stats(r.s, &st), 0);
    cr_assert_eq(st.entries, KEYS);
    free(r.winners);
    h_assert_rc(shmq_seen_close(r.s), 0);
}

/* Adders flood distinct keys through a small table (evicting all the time) while checkers
 * look keys up: nothing crashes, every add of a new key is new, the table stays bounded. */
struct churn {
    shmq_seen_t *s;
    int id;
    _Atomic int *stop;
    int errors;
};

static void *churn_adder(void *arg)
{
    struct churn *c = arg;
    for (uint64_t i = 0; i < 50000; i++) {
        uint64_t key = (uint64_t)c->id << 32 | i;
        if (shmq_seen_check_and_add(c->s, &key, sizeof key) != 0)
            c->errors++;
    }
    return NULL;
}

static void *churn_checker(void *arg)
{
    struct churn *c = arg;
    uint64_t rng = (uint64_t)c->id;
    while (!atomic_load(c->stop)) {
        uint64_t key = (h_rand(&rng) % 2) << 32 | (h_rand(&rng) % 50000);
        if (shmq_seen_check(c->s, &key, sizeof key) < 0)
            c->errors++;
    }
    return NULL;
}

Test(seen, eviction_under_concurrent_adds_and_checks)
{
    enum { MAX = 256 };
    char path[256];
    seen_path("churn", path, sizeof path);
    shmq_seen_t *s;
    h_assert_rc(shmq_seen_open(path, MAX, &s), 0);
    h_assert_rc(shmq_seen_set_sync(s, SHMQ_SEEN_SYNC_WRITE), 0);
    _Atomic int stop = 0;
    struct churn cs[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        cs[i] = (struct churn){s, i, &stop, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, i < 2 ? churn_adder : churn_checker, &cs[i]), 0);
    }
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    atomic_store(&stop, 1);
    pthread_join(t[2], NULL);
    pthread_join(t[3], NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(cs[i].errors, 0, "thread %d: %d errors", i, cs[i].errors);
    shmq_seen_stats_t st;
    h_assert_rc(shmq_seen_stats(s, &st), 0);
    cr_assert_eq(st.entries, MAX);
    cr_assert_eq(st.evicted, 2 * 50000 - MAX);
    cr_assert_leq(st.file_records, 4 * MAX + 2);
    h_assert_rc(shmq_seen_close(s), 0);
    /* The file holds the table's keys: reopened, MAX entries. */
    h_assert_rc(shmq_seen_open(path, MAX, &s), 0);
    h_assert_rc(shmq_seen_stats(s, &st), 0);
    cr_assert_eq(st.entries, MAX);
    h_assert_rc(shmq_seen_close(s), 0);
    remove_seen(path);
}
