/*
 * test_peek.c - shmq_peek (src/peek.c): copies ready messages out without taking them.
 *
 *  - copies_ready_without_taking: the ready messages come out lowest id first with their bytes
 *    and attempts; in-flight and delayed ones do not; afterwards every one is still delivered,
 *    with its attempt unchanged (no attempt spent); a buffer too small copies what fits.
 *  - copies_are_never_torn: a peeker copies over and over while a producer publishes and
 *    consumers receive and ack, so slots are reused under it: every copy it returns is exactly
 *    the message its id names (the payload is derived from the id), never a mix of two. The
 *    producer waits for a peek call every 1000 messages (so copies do overlap the reuse), and
 *    at the end, with the consumers stopped, for the peeker to find a message left ready (so
 *    the check is not vacuous); neither depends on the machine being idle.
 */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>

TestSuite(peek, .fini = h_cleanup, .timeout = 240);

Test(peek, copies_ready_without_taking)
{
    const char *name = h_qname("peek");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = 64u << 10;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    const char *text[] = {"zero", "one", "two", "three", "four"};
    uint64_t ids[5];
    for (int i = 0; i < 5; i++)
        h_assert_rc(shmq_publish(q, text[i], strlen(text[i]), &ids[i]), 0);
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t a, b;
    h_assert_rc(shmq_receive(c, &a, 0), 0); /* "zero": in flight */
    h_assert_rc(shmq_receive(c, &b, 0), 0); /* "one": nacked back, attempt 1 */
    h_assert_rc(shmq_nack(c, &b, 1), 0);
    int64_t until = h_now_ms() + 20000;
    shmq_peek_msg_t m[8];
    char buf[256];
    size_t n = 0;
    while (h_now_ms() < until) { /* until maintenance fired the nacked one (1 ms) */
        shmq_maintain(q, NULL);
        h_assert_rc(shmq_peek(q, m, 8, buf, sizeof buf, &n), 0);
        if (n == 4)
            break;
        h_sleep_ms(5);
    }
    cr_assert_eq(n, 4, "peeked %zu ready messages of 4", n);
    for (int i = 0; i < 4; i++) {
        const char *want = text[i + 1];
        cr_assert_eq(m[i].id, ids[i + 1], "peek %d: id %llu", i, (unsigned long long)m[i].id);
        cr_assert_eq(m[i].len, strlen(want));
        cr_assert_eq(m[i].copied, m[i].len);
        cr_assert(memcmp(m[i].data, want, m[i].len) == 0, "peek %d: wrong bytes", i);
        cr_assert_eq(m[i].attempt, i == 0 ? 1u : 0u, "peek %d: attempt %u", i, m[i].attempt);
    }
    /* peek again: the same; then a small buffer copies what fits */
    h_assert_rc(shmq_peek(q, m, 2, buf, 5, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert(m[0].copied == 3 && m[1].copied == 2 && m[1].len == 3, "copied %zu, %zu", m[0].copied,
              m[1].copied);
    cr_assert(memcmp(m[1].data, "tw", 2) == 0);
    h_assert_rc(shmq_peek(q, NULL, 0, NULL, 0, &n), 0);
    cr_assert_eq(n, 0);
    h_assert_rc(shmq_peek(q, NULL, 1, buf, 1, &n), -EINVAL);
    /* nothing was taken and no attempt spent: the four are delivered (the nacked one in ring
     * order, last), attempts as before + 1 */
    bool got[4] = {false};
    for (int k = 0; k < 4; k++) {
        shmq_msg_t r;
        h_assert_rc(shmq_receive(c, &r, 5000), 0);
        int i = (int)(r.id - ids[1]);
        cr_assert(i >= 0 && i < 4 && !got[i], "received id %llu", (unsigned long long)r.id);
        got[i] = true;
        cr_assert_eq(r.attempt, i == 0 ? 2u : 1u, "received attempt %u", r.attempt);
        h_assert_rc(shmq_ack(c, &r), 0);
    }
    h_assert_rc(shmq_ack(c, &a), 0);
    shmq_consumer_close(c);
    shmq_close(q);
}

/* ------------------------------------------------------------------ under reuse */

enum { TORN_MSGS = 20000, TORN_LEN = 48 };

struct torn {
    shmq_t *q;
    _Atomic int stop_consumers, stop;
    _Atomic uint64_t calls, peeked, bad;
};

/* Message id's bytes: a pattern no other id shares. */
static void fill(uint64_t id, unsigned char *p)
{
    for (int i = 0; i < TORN_LEN; i++)
        p[i] = (unsigned char)(id * 131u + (uint64_t)i * 7u);
}

static void *torn_consumer(void *arg)
{
    struct torn *t = arg;
    shmq_consumer_t *c;
    if (shmq_consumer_open(t->q, "torn", &c) != 0)
        return (void *)1;
    while (!atomic_load(&t->stop_consumers)) {
        shmq_msg_t m;
        if (shmq_receive(c, &m, 10) == 0)
            shmq_ack(c, &m);
    }
    shmq_consumer_close(c);
    return NULL;
}

static void *torn_peeker(void *arg)
{
    struct torn *t = arg;
    shmq_peek_msg_t m[16];
    static unsigned char buf[16 * TORN_LEN];
    unsigned char want[TORN_LEN];
    while (!atomic_load(&t->stop)) {
        size_t n = 0;
        if (shmq_peek(t->q, m, 16, buf, sizeof buf, &n) != 0)
            return (void *)1;
        for (size_t i = 0; i < n; i++) {
            fill(m[i].id, want);
            if (m[i].len != TORN_LEN || m[i].copied != TORN_LEN ||
                memcmp(m[i].data, want, TORN_LEN) != 0)
                atomic_fetch_add(&t->bad, 1);
        }
        atomic_fetch_add(&t->peeked, n);
        atomic_fetch_add(&t->calls, 1);
    }
    return NULL;
}

Test(peek, copies_are_never_torn)
{
    const char *name = h_qname("torn");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    static struct torn t;
    memset(&t, 0, sizeof t);
    h_assert_rc(shmq_create(name, &cfg, &t.q), 0);
    pthread_t cons[2], peeker;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&cons[i], NULL, torn_consumer, &t), 0);
    cr_assert_eq(pthread_create(&peeker, NULL, torn_peeker, &t), 0);
    uint64_t calls_seen = 0;
    for (uint64_t id = 1; id <= TORN_MSGS; id++) { /* one producer: ids are 1, 2, ... */
        unsigned char p[TORN_LEN];
        fill(id, p);
        uint64_t got = 0;
        h_assert_rc(shmq_publish_timed(t.q, p, sizeof p, &got, 30000), 0);
        cr_assert_eq(got, id);
        if (id % 1000 == 0) { /* the peeker has run during this stretch of reuse (an event,
                               * not a schedule: wait for its next call, bounded) */
            int64_t until = h_now_ms() + 60000;
            while (atomic_load(&t.calls) == calls_seen && h_now_ms() < until)
                h_sleep_ms(1);
            cr_assert_neq(atomic_load(&t.calls), calls_seen, "the peeker made no call in 60 s");
            calls_seen = atomic_load(&t.calls);
        }
    }
    /* Whether a copy under reuse found a ready message depends on the schedule; that the
     * peeker finds one left ready does not: the consumers stop, one more message stays. */
    atomic_store(&t.stop_consumers, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(cons[i], NULL);
    unsigned char last[TORN_LEN];
    fill(TORN_MSGS + 1, last);
    h_assert_rc(shmq_publish_timed(t.q, last, sizeof last, NULL, 30000), 0);
    int64_t until = h_now_ms() + 60000;
    while (atomic_load(&t.peeked) == 0 && h_now_ms() < until)
        h_sleep_ms(1);
    atomic_store(&t.stop, 1);
    void *ret;
    pthread_join(peeker, &ret);
    cr_assert_null(ret, "a peek failed");
    cr_assert_eq(atomic_load(&t.bad), 0, "%llu torn or wrong copies of %llu",
                 (unsigned long long)atomic_load(&t.bad),
                 (unsigned long long)atomic_load(&t.peeked));
    cr_assert_gt(atomic_load(&t.peeked), 0, "the peeker never saw a ready message");
    shmq_close(t.q);
}
