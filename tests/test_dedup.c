/*
 * test_dedup.c - idempotent publish (shmq_publish_dedup): the dedup window in the segment.
 *
 *  - duplicates within the window answer the first id and enqueue nothing (stats.dedup_hits);
 *  - after dedup_window_ms the same key publishes again;
 *  - the window by count: a flood of distinct keys forgets the oldest, the segment keeps the
 *    size its config implies (memory bounded), and the last dedup_window_count keys are
 *    remembered (what shmq.h promises);
 *  - a producer killed right after its publish returned, restarted, retries: one delivery;
 *  - two processes racing on the same keys: each key delivered once, every call 0 (same id for
 *    a key in both) or -EINPROGRESS (retried until 0);
 *  - -ENOTSUP without a window, -EINVAL for an empty, NULL or oversize key;
 *  - the window survives recovery (shmq_unlink_segment + shmq_open rebuild it from the log);
 *  - crash windows the crash test does not cover: a keyed publish killed before its decision
 *    and then a recovery; a keyed publish killed before its bucket records its slot, with its
 *    registry entry reused by the restarted producer.
 * Children are spawned through torture.h (crash points need a clean fork). Every queue name
 * carries the test's pid (t_qname) and is unlinked at the end.
 */
#include "torture.h"

#include <sched.h>
#include <sys/stat.h>

TestSuite(dedup, .init = t_setup, .fini = t_teardown, .timeout = 120);

#define WAIT_MS 10000

static shmq_config_t base_config(uint32_t capacity, uint32_t window_count, uint32_t window_ms)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.max_msg_size = 128;
    cfg.max_procs = 32;
    cfg.dedup_window_count = window_count;
    cfg.dedup_window_ms = window_ms;
    return cfg;
}

static shmq_t *create_queue(const char *name, const shmq_config_t *cfg)
{
    shmq_t *q;
    int rc = shmq_create(name, cfg, &q);
    cr_assert_eq(rc, 0, "create %s: %s", name, shmq_strerror(rc));
    return q;
}

static int pub_key(shmq_t *q, const char *key, const char *data, uint64_t *id)
{
    return shmq_publish_dedup(q, data, strlen(data) + 1, key, strlen(key), id);
}

/* Receive everything ready now (poll, with maintenance between empty polls for a bound of
 * ms), ack it; the ids go to ids[] (up to max), the count is returned. */
static size_t drain(shmq_t *q, shmq_consumer_t *c, uint64_t *ids, size_t max, int ms)
{
    size_t n = 0;
    int64_t end = t_now_ms() + ms;
    for (;;) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 0);
        if (rc == 0) {
            if (ids && n < max)
                ids[n] = m.id;
            n++;
            cr_assert_eq(shmq_ack(c, &m), 0);
            continue;
        }
        cr_assert_eq(rc, -EAGAIN, "receive: %s", shmq_strerror(rc));
        if (t_now_ms() >= end)
            return n;
        shmq_maintain(q, NULL);
        t_sleep_ms(5);
    }
}

static off_t segment_size(const char *name)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
    cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
    return st.st_size;
}

/* ---------------------------------------------------------------- the window */

Test(dedup, duplicates_within_the_window_answer_the_first_id)
{
    const char *name = t_qname("ddup");
    shmq_config_t cfg = base_config(16, 64, 60000);
    shmq_t *q = create_queue(name, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);

    uint64_t first = 0, id = 0, other = 0;
    cr_assert_eq(pub_key(q, "order-1", "first", &first), 0);
    cr_assert_neq(first, 0);
    for (int i = 0; i < 5; i++) {
        id = 0;
        cr_assert_eq(pub_key(q, "order-1", "again", &id), 0);
        cr_assert_eq(id, first, "duplicate %d got id %llu, the first %llu", i,
                     (unsigned long long)id, (unsigned long long)first);
    }
    cr_assert_eq(pub_key(q, "order-2", "second", &other), 0);
    cr_assert_neq(other, first);
    /* a duplicate whose id is not wanted */
    cr_assert_eq(pub_key(q, "order-1", "again", NULL), 0);
    /* the key is a byte string: a key one byte longer is another key */
    uint64_t longer = 0;
    cr_assert_eq(shmq_publish_dedup(q, "x", 2, "order-1\0", 8, &longer), 0);
    cr_assert(longer != first && longer != other);

    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, 3, "published %llu", (unsigned long long)st.published);
    cr_assert_eq(st.dedup_hits, 6, "dedup_hits %llu", (unsigned long long)st.dedup_hits);
    cr_assert_eq(st.ready, 3);

    /* the first message, with its own bytes: the duplicates enqueued nothing */
    shmq_msg_t m;
    cr_assert_eq(shmq_receive(c, &m, 1000), 0);
    cr_assert_eq(m.id, first);
    cr_assert_str_eq((const char *)m.data, "first");
    cr_assert_eq(shmq_ack(c, &m), 0);
    /* acked: still inside the window, still a duplicate */
    id = 0;
    cr_assert_eq(pub_key(q, "order-1", "after ack", &id), 0);
    cr_assert_eq(id, first);
    uint64_t ids[8];
    cr_assert_eq(drain(q, c, ids, 8, 50), 2);
    cr_assert(ids[0] == other && ids[1] == longer);

    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

/* One round of the window test on a fresh queue. Returns false, asserting nothing about the
 * window, when a step meant to fall inside the 200 ms window took longer than the window on
 * this (busy) machine: the caller then tries a fresh queue. Steps meant to fall past it wait
 * by the clock, however long that takes. */
#define WINDOW_MS 200
static bool window_round(const char *name)
{
    shmq_config_t cfg = base_config(16, 64, WINDOW_MS);
    shmq_t *q = create_queue(name, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);

    uint64_t a = 0, b = 0, d = 0, e = 0;
    int64_t t0 = t_now_ms();
    cr_assert_eq(pub_key(q, "k", "one", &a), 0);
    cr_assert_eq(pub_key(q, "k", "dup", &b), 0);
    bool in_time = t_now_ms() - t0 < WINDOW_MS;
    if (in_time) {
        cr_assert_eq(b, a, "inside the window");
        while (t_now_ms() - t0 <= WINDOW_MS + 50) /* past the window, from the first publish */
            t_sleep_ms(20);
        int64_t t1 = t_now_ms();
        cr_assert_eq(pub_key(q, "k", "two", &d), 0);
        cr_assert_neq(d, a, "after the window the key must publish again");
        cr_assert_gt(d, a);
        /* and the new publish opens a new window */
        cr_assert_eq(pub_key(q, "k", "dup2", &e), 0);
        in_time = t_now_ms() - t1 < WINDOW_MS;
    }
    if (in_time) {
        cr_assert_eq(e, d);
        shmq_stats_t st;
        cr_assert_eq(shmq_stats(q, &st), 0);
        cr_assert_eq(st.published, 2);
        cr_assert_eq(st.dedup_hits, 2);
        uint64_t ids[4];
        cr_assert_eq(drain(q, c, ids, 4, 50), 2);
        cr_assert(ids[0] == a && ids[1] == d);
    }
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
    return in_time;
}

Test(dedup, after_the_window_the_same_key_publishes_again)
{
    const char *name = t_qname("dwin");
    int round = 0;
    while (!window_round(name))
        cr_assert_lt(++round, 50, "no round kept two publishes within %d ms", WINDOW_MS);
}

#define COUNT_WINDOW 64u

Test(dedup, the_window_by_count_forgets_the_oldest_and_stays_bounded)
{
    /* what the config implies: the same queue without a window, plus the window's buckets
     * (shmq.h: "bounded in memory"; layout: 2 x count rounded up to a power of two, 64 B each,
     * page aligned) */
    const char *bare = t_qname("dbare");
    shmq_config_t cfg0 = base_config(16, 0, 60000);
    cfg0.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q0 = create_queue(bare, &cfg0);
    off_t size0 = segment_size(bare);
    cr_assert_eq(shmq_close(q0), 0);
    cr_assert_eq(shmq_unlink(bare), 0);

    const char *name = t_qname("dcnt");
    shmq_config_t cfg = base_config(16, COUNT_WINDOW, 600000);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q = create_queue(name, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    off_t size1 = segment_size(name);
    cr_assert_gt(size1, size0);
    cr_assert_leq(size1 - size0, (off_t)(4 * COUNT_WINDOW * 64 + 4096),
                  "the window costs %lld bytes for %u keys", (long long)(size1 - size0),
                  COUNT_WINDOW);

    uint64_t first = 0, id = 0;
    cr_assert_eq(pub_key(q, "the-first-key", "first", &first), 0);
    cr_assert_eq(drain(q, c, NULL, 0, 0), 1);
    /* a flood of distinct keys, 100 x the window */
    const uint32_t flood = 100 * COUNT_WINDOW;
    for (uint32_t i = 0; i < flood; i++) {
        char key[32];
        snprintf(key, sizeof key, "flood-%u", i);
        int rc = pub_key(q, key, "f", &id);
        cr_assert_eq(rc, 0, "flood %u: %s", i, shmq_strerror(rc));
        if (i % 8 == 7)
            cr_assert_eq(drain(q, c, NULL, 0, 0), 8);
    }
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, flood + 1);
    cr_assert_eq(st.dedup_hits, 0);
    cr_assert_eq(segment_size(name), size1, "the segment grew under the flood");

    /* the oldest key was forgotten: it publishes again */
    uint64_t again = 0;
    cr_assert_eq(pub_key(q, "the-first-key", "again", &again), 0);
    cr_assert_neq(again, first, "a key %u keys old is still remembered by a window of %u",
                  flood, COUNT_WINDOW);
    /* the newest is remembered */
    char key[32];
    snprintf(key, sizeof key, "flood-%u", flood - 1);
    uint64_t hit = 0;
    cr_assert_eq(pub_key(q, key, "dup", &hit), 0);
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dedup_hits, 1, "the newest key was forgotten");
    cr_assert_eq(st.published, flood + 2);
    cr_assert_eq(drain(q, c, NULL, 0, 0), 1);
    cr_assert_eq(segment_size(name), size1);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

/*
 * shmq.h: "Within the queue's dedup window (the last dedup_window_count keys, for
 * dedup_window_ms), a second publish with the same key enqueues nothing". So after N distinct
 * keys (N = dedup_window_count) published back to back, a retry of any of them is a duplicate.
 */
Test(dedup, the_last_window_count_keys_are_all_remembered)
{
    const uint32_t n = 1024;
    const char *name = t_qname("dlast");
    shmq_config_t cfg = base_config(2048, n, 600000);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q = create_queue(name, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    /* older keys first (they fill the window), then the n keys under test */
    for (uint32_t i = 0; i < 2 * n; i++) {
        char key[32];
        snprintf(key, sizeof key, "key-%u", i);
        cr_assert_eq(pub_key(q, key, "m", NULL), 0);
        if (i % 512 == 511)
            drain(q, c, NULL, 0, 0);
    }
    drain(q, c, NULL, 0, 0);
    uint32_t forgotten = 0, first_forgotten = UINT32_MAX;
    shmq_stats_t st0, st;
    cr_assert_eq(shmq_stats(q, &st0), 0);
    for (uint32_t i = 2 * n; i-- > n;) { /* newest first: a retry must not evict the others */
        char key[32];
        snprintf(key, sizeof key, "key-%u", i);
        uint64_t before = st0.published;
        cr_assert_eq(pub_key(q, key, "retry", NULL), 0);
        cr_assert_eq(shmq_stats(q, &st), 0);
        if (st.published != before) {
            forgotten++;
            if (first_forgotten == UINT32_MAX)
                first_forgotten = 2 * n - 1 - i;
            st0 = st;
        }
    }
    fprintf(stderr,
            "dedup: window of %u keys: %u of the last %u keys forgotten (the newest forgotten "
            "was %u keys old)\n",
            n, forgotten, n, first_forgotten);
    /* the documented bound (shmq.h, shmq_publish_dedup): fewer than 1 key in 100 forgotten */
    cr_expect(forgotten * 100 < n,
              "%u of the last %u keys (dedup_window_count) were forgotten, more than 1 in 100; "
              "the newest of them was only %u keys old",
              forgotten, n, first_forgotten);
    drain(q, c, NULL, 0, 0);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

/* ---------------------------------------------------------------- argument checks */

Test(dedup, enotsup_without_a_window)
{
    const char *name = t_qname("dnone");
    shmq_config_t cfg = base_config(8, 0, 60000);
    shmq_t *q = create_queue(name, &cfg);
    uint64_t id = 7;
    cr_assert_eq(pub_key(q, "k", "x", &id), -ENOTSUP);
    cr_assert_eq(id, 7);
    shmq_config_t got;
    cr_assert_eq(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.dedup_window_count, 0);
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, 0);
    cr_assert_eq(st.ready, 0);
    /* plain publishes are unaffected */
    cr_assert_eq(shmq_publish(q, "x", 1, &id), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

Test(dedup, einval_for_a_bad_key)
{
    const char *name = t_qname("dinv");
    shmq_config_t cfg = base_config(8, 64, 60000);
    shmq_t *q = create_queue(name, &cfg);
    char big[SHMQ_DEDUP_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    uint64_t id = 0;
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, "k", 0, &id), -EINVAL, "empty key");
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, NULL, 0, &id), -EINVAL, "NULL key");
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, NULL, 4, &id), -EINVAL, "NULL key, length 4");
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, big, sizeof big, &id), -EINVAL, "oversize key");
    cr_assert_eq(shmq_publish_dedup(NULL, "x", 1, "k", 1, &id), -EINVAL, "NULL queue");
    cr_assert_eq(shmq_publish_dedup(q, NULL, 1, "k", 1, &id), -EINVAL, "NULL data");
    char huge[256] = {0};
    cr_assert_eq(shmq_publish_dedup(q, huge, sizeof huge, "k", 1, &id), -EMSGSIZE);
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, 0);
    /* the rejected calls claimed nothing: the keys publish now, once */
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, big, SHMQ_DEDUP_KEY_MAX, &id), 0, "longest key");
    uint64_t id2 = 0;
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, big, SHMQ_DEDUP_KEY_MAX, &id2), 0);
    cr_assert_eq(id2, id);
    cr_assert_eq(shmq_publish_dedup(q, "x", 1, "k", 1, &id2), 0);
    cr_assert_neq(id2, id);
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, 2);
    cr_assert_eq(st.reserved, 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

/* ---------------------------------------------------------------- processes */

struct proc_shared {
    char qname[SHMQ_NAME_MAX + 1];
    _Atomic uint64_t id;
    _Atomic int rc;
};

/* Publish "K" once; record the answer; die by SIGKILL right after it returned. */
static int publish_then_die(void *argp)
{
    struct proc_shared *sh = *(struct proc_shared **)argp;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    uint64_t id = 0;
    int rc = pub_key(q, "K", "payload", &id);
    atomic_store(&sh->id, id);
    atomic_store(&sh->rc, rc);
    raise(SIGKILL);
    return 11;
}

/* A restarted producer: retry "K" until 0 or the bound (-EINPROGRESS: again). */
static int retry_key(void *argp)
{
    struct proc_shared *sh = *(struct proc_shared **)argp;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    int64_t end = t_now_ms() + 2000;
    uint64_t id = 0;
    int rc;
    while ((rc = pub_key(q, "K", "payload", &id)) == -EINPROGRESS && t_now_ms() < end)
        t_sleep_ms(1);
    atomic_store(&sh->id, id);
    atomic_store(&sh->rc, rc);
    shmq_close(q);
    return 0;
}

Test(dedup, killed_after_publishing_then_restarted_retries_once)
{
    struct proc_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname("dkill"));
    shmq_config_t cfg = base_config(16, 64, 60000);
    shmq_t *q = create_queue(sh->qname, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);

    atomic_store(&sh->rc, 1);
    pid_t p = t_spawn(publish_then_die, &sh, sizeof sh);
    int st = 0;
    cr_assert_eq(t_wait(p, WAIT_MS, 0, &st), 0);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    cr_assert_eq(atomic_load(&sh->rc), 0, "the first publish: %s",
                 shmq_strerror(atomic_load(&sh->rc)));
    uint64_t first = atomic_load(&sh->id);
    cr_assert_neq(first, 0);
    t_maintain(q, NULL); /* the dead producer's entry is fenced and freed */

    atomic_store(&sh->rc, 1);
    atomic_store(&sh->id, 0);
    p = t_spawn(retry_key, &sh, sizeof sh);
    t_assert_exit0(p, WAIT_MS, "restarted producer");
    cr_assert_eq(atomic_load(&sh->rc), 0, "the retry: %s", shmq_strerror(atomic_load(&sh->rc)));
    cr_assert_eq(atomic_load(&sh->id), first, "the retry got id %llu, the first publish %llu",
                 (unsigned long long)atomic_load(&sh->id), (unsigned long long)first);

    uint64_t ids[4];
    cr_assert_eq(drain(q, c, ids, 4, 200), 1, "exactly one delivery");
    cr_assert_eq(ids[0], first);
    shmq_stats_t s;
    cr_assert_eq(shmq_stats(q, &s), 0);
    cr_assert_eq(s.published, 1);
    cr_assert_eq(s.dedup_hits, 1);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(sh->qname), 0);
}

/* Two processes publish the same keys at once. */
#define RACE_KEYS 3000u

struct race_shared {
    char qname[SHMQ_NAME_MAX + 1];
    _Atomic int go;
    _Atomic int ready;
    _Atomic uint32_t progress[2]; /* keys done by each racer: lockstep, key by key */
    _Atomic uint64_t id[2][RACE_KEYS];
    _Atomic int64_t call_us[2][RACE_KEYS], done_us[2][RACE_KEYS]; /* the call that returned 0 */
    _Atomic uint64_t inprogress[2], again[2];
    _Atomic int bad_rc[2];      /* the first rc not 0 nor -EINPROGRESS */
    _Atomic uint32_t bad_key[2];
};

struct race_arg {
    struct race_shared *sh;
    int who;
};

static int racer_main(void *argp)
{
    struct race_arg *a = argp;
    struct race_shared *sh = a->sh;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    atomic_fetch_add(&sh->ready, 1);
    while (!atomic_load(&sh->go))
        ;
    int64_t end = t_now_ms() + 30000;
    for (uint32_t k = 0; k < RACE_KEYS; k++) {
        /* lockstep: start key k when the other has finished key k-1, so both publish each key
         * at the same moment (bounded: a racer that stalls lets the other run on) */
        for (int spin = 0; atomic_load(&sh->progress[!a->who]) < k && spin < 1000000; spin++)
            if (spin > 1000)
                sched_yield();
        char key[32], data[32];
        snprintf(key, sizeof key, "race-%u", k);
        snprintf(data, sizeof data, "msg-%u", k);
        uint64_t id = 0;
        int rc;
        int64_t call = t_now_us();
        while ((rc = pub_key(q, key, data, &id)) != 0) {
            if (rc == -EAGAIN) { /* full: the test drains */
                atomic_fetch_add(&sh->again[a->who], 1);
            } else if (rc == -EINPROGRESS) {
                atomic_fetch_add(&sh->inprogress[a->who], 1);
            } else {
                if (!atomic_load(&sh->bad_rc[a->who])) {
                    atomic_store(&sh->bad_key[a->who], k);
                    atomic_store(&sh->bad_rc[a->who], rc);
                }
                break; /* recorded; the key is left to the other */
            }
            if (t_now_ms() > end)
                return 11;
            sched_yield();
            call = t_now_us();
        }
        if (rc == 0) {
            atomic_store(&sh->done_us[a->who][k], t_now_us());
            atomic_store(&sh->call_us[a->who][k], call);
            atomic_store(&sh->id[a->who][k], id);
        }
        atomic_store(&sh->progress[a->who], k + 1);
    }
    shmq_close(q);
    return 0;
}

/* window_ms: 600000 outlives the test; a short one (50) makes every bucket the racers claim
 * one whose recorded time is past the window (a fresh bucket's time is 0), while each key is
 * raced within microseconds, far inside it. */
static void race_case(int durability, uint32_t window_ms)
{
    struct race_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s",
             t_qname(durability == SHMQ_DURABILITY_NONE ? "draceN" : "draceP"));
    /* a window far larger than the keys (no set overflows); room for every key (no -EAGAIN
     * retries that could outlast a short window) */
    shmq_config_t cfg = base_config(4096, 8 * RACE_KEYS, window_ms);
    cfg.durability = durability;
    shmq_t *q = create_queue(sh->qname, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    struct race_arg a0 = {sh, 0}, a1 = {sh, 1};
    pid_t p0 = t_spawn(racer_main, &a0, sizeof a0);
    pid_t p1 = t_spawn(racer_main, &a1, sizeof a1);
    int64_t end = t_now_ms() + WAIT_MS;
    while (atomic_load(&sh->ready) < 2 && t_now_ms() < end)
        t_sleep_ms(1);
    cr_assert_eq(atomic_load(&sh->ready), 2);
    if (window_ms < 1000)
        t_sleep_ms((int)window_ms + 20); /* the fresh buckets' time 0 is past the window */
    atomic_store(&sh->go, 1);

    static uint32_t delivered[RACE_KEYS];
    static uint64_t delivered_id[RACE_KEYS];
    memset(delivered, 0, sizeof delivered);
    memset(delivered_id, 0, sizeof delivered_id);
    uint64_t total = 0, foreign = 0;
    int done = 0, st;
    end = t_now_ms() + 60000;
    for (;;) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 10);
        if (rc == 0) {
            unsigned k;
            if (sscanf((const char *)m.data, "msg-%u", &k) == 1 && k < RACE_KEYS) {
                delivered[k]++;
                delivered_id[k] = m.id;
            } else {
                foreign++;
            }
            total++;
            cr_assert_eq(shmq_ack(c, &m), 0);
            continue;
        }
        cr_assert(rc == -ETIMEDOUT || rc == -EAGAIN, "receive: %s", shmq_strerror(rc));
        if (done == 2)
            break;
        cr_assert(t_now_ms() < end, "the racers did not finish");
        if (p0 > 0 && t_wait(p0, 0, 0, &st) == 0) {
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "racer 0 exit %d", st);
            p0 = -1, done++;
        }
        if (p1 > 0 && t_wait(p1, 0, 0, &st) == 0) {
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "racer 1 exit %d", st);
            p1 = -1, done++;
        }
    }
    total += drain(q, c, NULL, 0, 100);

    fprintf(stderr,
            "dedup race (%s, window %u ms): %u keys, %llu delivered, -EINPROGRESS %llu + %llu, "
            "-EAGAIN %llu + %llu\n",
            durability == SHMQ_DURABILITY_NONE ? "none" : "process", window_ms, RACE_KEYS,
            (unsigned long long)total, (unsigned long long)atomic_load(&sh->inprogress[0]),
            (unsigned long long)atomic_load(&sh->inprogress[1]),
            (unsigned long long)atomic_load(&sh->again[0]),
            (unsigned long long)atomic_load(&sh->again[1]));
    for (int w = 0; w < 2; w++)
        cr_expect_eq(atomic_load(&sh->bad_rc[w]), 0,
                     "racer %d: key %u: shmq_publish_dedup returned %s (only 0 or -EINPROGRESS "
                     "are expected)",
                     w, atomic_load(&sh->bad_key[w]), shmq_strerror(atomic_load(&sh->bad_rc[w])));
    cr_assert_eq(foreign, 0);
    uint32_t dup = 0, missing = 0, mismatch = 0, expired = 0;
    long first_bad = -1;
    for (uint32_t k = 0; k < RACE_KEYS; k++) {
        uint64_t i0 = atomic_load(&sh->id[0][k]), i1 = atomic_load(&sh->id[1][k]);
        bool bad = false;
        /* a racer stalled past the window (a loaded machine) may rightly publish the key
         * again: only if its call began more than window_ms after the other's (whose commit,
         * the bucket's time, came after its call began), give or take the ms clock */
        int64_t gap = 0;
        if (i0 && i1) {
            gap = atomic_load(&sh->call_us[1][k]) - atomic_load(&sh->call_us[0][k]);
            gap = gap < 0 ? -gap : gap;
        }
        if (gap + 2000 > (int64_t)window_ms * 1000) {
            expired++;
            continue;
        }
        if (delivered[k] > 1)
            dup++, bad = true;
        if (delivered[k] == 0)
            missing++, bad = true;
        if ((i0 && i0 != delivered_id[k]) || (i1 && i1 != delivered_id[k]))
            mismatch++, bad = true;
        if (bad && first_bad < 0)
            first_bad = k;
    }
    if (first_bad >= 0)
        fprintf(stderr,
                "dedup race: key %ld delivered %u (last id %llu), ids %llu / %llu, calls "
                "began %lld us apart, returned %lld us apart\n",
                first_bad, delivered[first_bad], (unsigned long long)delivered_id[first_bad],
                (unsigned long long)atomic_load(&sh->id[0][first_bad]),
                (unsigned long long)atomic_load(&sh->id[1][first_bad]),
                (long long)(atomic_load(&sh->call_us[1][first_bad]) -
                            atomic_load(&sh->call_us[0][first_bad])),
                (long long)(atomic_load(&sh->done_us[1][first_bad]) -
                            atomic_load(&sh->done_us[0][first_bad])));
    if (expired)
        fprintf(stderr, "dedup race: %u keys raced further apart than the window: not checked\n",
                expired);
    cr_assert_eq(dup, 0, "%u keys delivered more than once", dup);
    cr_assert_eq(missing, 0, "%u keys never delivered", missing);
    cr_assert_eq(mismatch, 0, "%u keys: a publish returned an id other than the delivered", mismatch);
    shmq_stats_t s;
    cr_assert_eq(shmq_stats(q, &s), 0);
    cr_assert_eq(s.published, RACE_KEYS + expired);
    cr_assert_eq(s.dedup_hits, RACE_KEYS - expired, "dedup_hits %llu",
                 (unsigned long long)s.dedup_hits);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(sh->qname), 0);
}

Test(dedup, two_processes_racing_on_the_same_keys_none)
{
    race_case(SHMQ_DURABILITY_NONE, 600000);
}

Test(dedup, two_processes_racing_on_the_same_keys_process)
{
    race_case(SHMQ_DURABILITY_PROCESS, 600000);
}

Test(dedup, two_processes_racing_on_the_same_keys_short_window)
{
    race_case(SHMQ_DURABILITY_NONE, 50);
}

/* ---------------------------------------------------------------- recovery */

static void reopen_rebuilt(const char *name, shmq_t **q)
{
    cr_assert_eq(shmq_unlink_segment(name), 0);
    int rc = shmq_open(name, q);
    cr_assert_eq(rc, 0, "open (rebuild from the log): %s", shmq_strerror(rc));
}

Test(dedup, the_window_survives_recovery)
{
    const char *name = t_qname("drec");
    shmq_config_t cfg = base_config(16, 64, 600000);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q = create_queue(name, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    uint64_t acked = 0, live = 0, id = 0;
    cr_assert_eq(pub_key(q, "rec-acked", "a", &acked), 0);
    cr_assert_eq(pub_key(q, "rec-live", "b", &live), 0);
    shmq_msg_t m;
    cr_assert_eq(shmq_receive(c, &m, 1000), 0);
    cr_assert_eq(m.id, acked);
    cr_assert_eq(shmq_ack(c, &m), 0);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);

    reopen_rebuilt(name, &q);
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    cr_assert_eq(pub_key(q, "rec-acked", "a again", &id), 0);
    cr_assert_eq(id, acked, "after recovery: id %llu, the original %llu", (unsigned long long)id,
                 (unsigned long long)acked);
    cr_assert_eq(pub_key(q, "rec-live", "b again", &id), 0);
    cr_assert_eq(id, live);
    uint64_t fresh = 0;
    cr_assert_eq(pub_key(q, "rec-new", "c", &fresh), 0);
    cr_assert_gt(fresh, live, "ids continue after recovery");
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dedup_hits, 2);
    uint64_t ids[4];
    cr_assert_eq(drain(q, c, ids, 4, 50), 2, "only the live message and the new one");
    cr_assert(ids[0] == live && ids[1] == fresh);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

/* A keyed publish armed to die at a crash point. */
static int keyed_victim(void *argp)
{
    struct proc_shared *sh = *(struct proc_shared **)argp;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    pub_key(q, "K", "payload", NULL);
    return 20; /* the crash point was not reached */
}

static void kill_keyed_victim(struct proc_shared *sh, const char *point)
{
    pid_t p = t_spawn_crash(keyed_victim, &sh, sizeof sh, point, 0, 0);
    int st = 0;
    char b[96];
    cr_assert_eq(t_wait(p, WAIT_MS, 0, &st), 0);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "victim at %s: %s", point,
              t_status_str(st, b, sizeof b));
}

/*
 * Killed before the decision (dedup_before_decide): its PUBLISH record is in the log, its
 * reservation is freed by maintenance, and the retry publishes the key anew (id Y), which is
 * delivered and acked. One delivery so far. After a rebuild from the log, the key must still
 * have been delivered once: nothing comes back, and the key answers Y.
 */
Test(dedup, killed_before_the_decision_then_recovery_delivers_once)
{
    struct proc_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname("dbdrec"));
    shmq_config_t cfg = base_config(16, 64, 600000);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q = create_queue(sh->qname, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    kill_keyed_victim(sh, "dedup_before_decide");

    shmq_maint_report_t rep = {0};
    t_maintain(q, &rep);
    cr_assert_eq(rep.reservations_freed, 1);
    pid_t p = t_spawn(retry_key, &sh, sizeof sh);
    t_assert_exit0(p, WAIT_MS, "restarted producer");
    cr_assert_eq(atomic_load(&sh->rc), 0, "retry: %s", shmq_strerror(atomic_load(&sh->rc)));
    uint64_t y = atomic_load(&sh->id);
    uint64_t ids[4];
    cr_assert_eq(drain(q, c, ids, 4, 100), 1);
    cr_assert_eq(ids[0], y);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);

    reopen_rebuilt(sh->qname, &q);
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    size_t n = drain(q, c, ids, 4, 100);
    cr_expect_eq(n, 0,
                 "after recovery %zu message(s) came back (first id %llu; the key's delivered "
                 "message was %llu): the killed, undecided publish of the key was restored "
                 "from its PUBLISH record, a second delivery of the key",
                 n, n ? (unsigned long long)ids[0] : 0ull, (unsigned long long)y);
    uint64_t id = 0;
    cr_assert_eq(pub_key(q, "K", "again", &id), 0);
    cr_expect_eq(id, y, "after recovery the key answers %llu, the delivered one was %llu",
                 (unsigned long long)id, (unsigned long long)y);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(sh->qname), 0);
}

/*
 * Killed after claiming the key's bucket but before the bucket names its slot
 * (publish_after_write, in the keyed path). Maintenance frees the reservation and the dead
 * producer's registry entry; the restarted producer attaches (taking the first free entry: the
 * dead one's) and retries the key. The key was never published: the retry must publish it, not
 * wait out the window.
 */
Test(dedup, killed_before_the_bucket_names_its_slot_restarted_retry_publishes)
{
    struct proc_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->qname, sizeof sh->qname, "%s", t_qname("dreuse"));
    shmq_config_t cfg = base_config(16, 64, 60000);
    shmq_t *q = create_queue(sh->qname, &cfg);
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "dd", &c), 0);
    kill_keyed_victim(sh, "publish_after_write");

    shmq_maint_report_t rep = {0};
    t_maintain(q, &rep);
    cr_assert_eq(rep.reservations_freed, 1);
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.procs, 2, "the dead producer's entry is released (ours and the consumer's)");

    atomic_store(&sh->rc, 1);
    pid_t p = t_spawn(retry_key, &sh, sizeof sh); /* retries -EINPROGRESS for 2 s */
    t_assert_exit0(p, WAIT_MS, "restarted producer");
    cr_assert_eq(atomic_load(&sh->rc), 0,
                 "the restarted producer's retry of a key that was never published got %s for "
                 "2 s (the window is 60 s): the dead publisher's CLAIMED bucket names a registry "
                 "entry that is live again",
                 shmq_strerror(atomic_load(&sh->rc)));
    uint64_t ids[4];
    cr_assert_eq(drain(q, c, ids, 4, 100), 1);
    cr_assert_eq(ids[0], atomic_load(&sh->id));
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(sh->qname), 0);
}
