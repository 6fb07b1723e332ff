/*
 * test_headers.c - publish options (shmq_publish_ex) and message headers.
 *
 *  - pub_opts_delay_and_dedup: shmq_publish_ex with delay_ms parks the message DELAYED (as
 *    shmq_publish_delayed), with a dedup key answers a second publish with the first id (as
 *    shmq_publish_dedup); NULL opts is a plain publish.
 *  - pub_opts_size: a caller's size smaller than the first version, larger than the library's
 *    (newer headers) or not a multiple of 8 is refused (-EINVAL); a key with a delay is
 *    -ENOTSUP.
 *  - round_trip: headers published with shmq_publish_ex come back from shmq_msg_headers in
 *    order, in place and NUL-terminated; the slot's next message (capacity 1: the same slot),
 *    published without headers, a batch or a zero-copy commit, has none; peek copies them;
 *    replay returns them; keyed and delayed publishes carry them too.
 *  - limits: too many or too large headers are -EMSGSIZE, a bad key or value -EINVAL, a queue
 *    without headers -ENOTSUP, a config beyond the limits -EINVAL; a small out[] gets the
 *    first ones and the count.
 *  - segment_loss_restores_them: after shmq_unlink_segment the rebuild from the log returns
 *    every live message with its headers: ready, delayed, keyed, redriven from the dead
 *    letters, and one copied by a checkpoint (its original record's file deleted); with a TTL,
 *    so the records carry due time, expiry, key and header block together.
 *  - killed_publishing_*: a producer killed at each crash point of a publish with headers: the
 *    message is either not delivered or delivered with all its headers, after maintenance and
 *    after a rebuild from the log.
 */
#include "helpers.h"

#include "shmq/replay.h"

TestSuite(headers, .fini = h_cleanup, .timeout = 240);

Test(headers, pub_opts_delay_and_dedup)
{
    const char *name = h_qname("hdr");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t a = 0, b = 0, c = 0;
    h_assert_rc(shmq_publish_ex(q, "now", 3, NULL, &a), 0);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.delay_ms = 600000;
    h_assert_rc(shmq_publish_ex(q, "late", 4, &o, &b), 0);
    shmq_pub_opts_init(&o);
    o.dedup_key = "k1";
    o.dedup_key_len = 2;
    h_assert_rc(shmq_publish_ex(q, "keyed", 5, &o, &c), 0);
    uint64_t again = 0;
    h_assert_rc(shmq_publish_ex(q, "keyed", 5, &o, &again), 0);
    cr_assert_eq(again, c, "a second keyed publish gave id %llu, not %llu",
                 (unsigned long long)again, (unsigned long long)c);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready, 2u, "ready %u", st.ready);
    cr_assert_eq(st.delayed, 1u, "delayed %u", st.delayed);
    cr_assert_eq(st.dedup_hits, 1u, "dedup hits %llu", (unsigned long long)st.dedup_hits);
    h_assert_rc(shmq_close(q), 0);
}

Test(headers, pub_opts_size)
{
    const char *name = h_qname("hdr");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    cr_assert_eq(o.size, sizeof(o));
    o.size = 4;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EINVAL);
    shmq_pub_opts_init(&o);
    o.dedup_key = "k";
    o.dedup_key_len = 1;
    o.delay_ms = 10;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -ENOTSUP);
    shmq_pub_opts_init(&o);
    o.n_headers = 1;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EINVAL); /* NULL headers */
    /* sizes the library does not know: from newer headers, or not a whole word */
    struct {
        shmq_pub_opts_t o;
        char later[32];
    } big;
    memset(&big, 0, sizeof big);
    shmq_pub_opts_init(&big.o);
    big.o.size = sizeof(shmq_pub_opts_t) + 8;
    h_assert_rc(shmq_publish_ex(q, "y", 1, &big.o, NULL), -EINVAL);
    big.o.size = sizeof(shmq_pub_opts_t) - 4;
    h_assert_rc(shmq_publish_ex(q, "y", 1, &big.o, NULL), -EINVAL);
    big.o.size = sizeof(shmq_pub_opts_t);
    uint64_t id = 0;
    h_assert_rc(shmq_publish_ex(q, "y", 1, &big.o, &id), 0);
    cr_assert_neq(id, 0);
    h_assert_rc(shmq_close(q), 0);
}

/* A logged queue carrying up to 4 headers in 128 bytes. */
static shmq_config_t hdr_config(uint32_t capacity)
{
    shmq_config_t cfg = h_log_config(capacity);
    cfg.max_header_bytes = 128;
    cfg.max_headers = 4;
    return cfg;
}

static const shmq_header_t three[] = {
    {"content-type", 12, "text/plain", 10},
    {"traceparent", 11, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55},
    {"empty", 5, "", 0},
};

/* Assert that got[0..n) are want[0..n), and NUL-terminated. */
static void expect_headers(const shmq_header_t *got, size_t n, const shmq_header_t *want,
                           size_t nwant)
{
    cr_assert_eq(n, nwant, "%zu headers, expected %zu", n, nwant);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(got[i].key_len, want[i].key_len, "header %zu: key length", i);
        cr_assert(memcmp(got[i].key, want[i].key, want[i].key_len) == 0, "header %zu: key", i);
        cr_assert_eq(got[i].value_len, want[i].value_len, "header %zu: value length", i);
        cr_assert(memcmp(got[i].value, want[i].value, want[i].value_len) == 0,
                  "header %zu: value", i);
        cr_assert(got[i].key[got[i].key_len] == 0 && got[i].value[got[i].value_len] == 0,
                  "header %zu: not NUL-terminated", i);
    }
}

/* Receive one message (waiting up to 20 s) and check its payload and headers; ack it. */
static void receive_with(shmq_t *q, const char *payload, const shmq_header_t *want, size_t nwant)
{
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    int64_t until = h_now_ms() + 20000;
    int rc;
    while ((rc = shmq_receive(c, &m, 100)) == -ETIMEDOUT && h_now_ms() < until)
        shmq_maintain(q, NULL);
    h_assert_rc(rc, 0);
    cr_assert_eq(m.len, strlen(payload));
    cr_assert(memcmp(m.data, payload, m.len) == 0, "payload %.*s, expected %s", (int)m.len,
              (const char *)m.data, payload);
    shmq_header_t h[8];
    size_t n = 99;
    h_assert_rc(shmq_msg_headers(c, &m, h, 8, &n), 0);
    expect_headers(h, n, want, nwant);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
}

static uint64_t publish_with(shmq_t *q, const char *payload, const shmq_header_t *h, uint32_t n)
{
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.headers = h;
    o.n_headers = n;
    uint64_t id = 0;
    h_assert_rc(shmq_publish_ex(q, payload, strlen(payload), &o, &id), 0);
    return id;
}

Test(headers, round_trip)
{
    const char *name = h_qname("hdr");
    shmq_config_t cfg = hdr_config(1); /* one slot: every message reuses it */
    cfg.log_retention_bytes = 1u << 20;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t first = publish_with(q, "hello", three, 3);
    /* peek copies the block after the payload */
    shmq_peek_msg_t pm;
    shmq_peek_headers_t ph;
    char buf[256];
    size_t n = 0;
    h_assert_rc(shmq_peek_headers(q, &pm, &ph, 1, buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_not_null(ph.block, "peek copied no headers");
    cr_assert_eq((const char *)ph.block, buf + 5, "the block is not right after the data");
    shmq_header_t h[8];
    size_t nh = 0;
    h_assert_rc(shmq_headers_decode(ph.block, ph.len, h, 8, &nh), 0);
    expect_headers(h, nh, three, 3);
    h_assert_rc(shmq_peek_headers(q, &pm, &ph, 1, buf, 5, &n), 0); /* room for the data only */
    cr_assert_eq(n, 1);
    cr_assert_null(ph.block, "headers copied past the buffer's room");
    receive_with(q, "hello", three, 3);
    /* the same slot, now without headers: none of the last message's show */
    h_assert_rc(shmq_publish(q, "plain", 5, NULL), 0);
    receive_with(q, "plain", NULL, 0);
    publish_with(q, "again", three + 1, 1);
    receive_with(q, "again", three + 1, 1);
    shmq_iov_t iov = {"batch", 5};
    h_assert_rc(shmq_publish_batch(q, &iov, 1, NULL, NULL), 0);
    receive_with(q, "batch", NULL, 0);
    publish_with(q, "again", three, 2);
    receive_with(q, "again", three, 2);
    void *zc;
    h_assert_rc(shmq_reserve(q, 4, &zc), 0);
    memcpy(zc, "zero", 4);
    h_assert_rc(shmq_commit(q, zc, 4, NULL), 0);
    receive_with(q, "zero", NULL, 0);
    /* keyed and delayed publishes carry them too */
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.headers = three;
    o.n_headers = 3;
    o.dedup_key = "key";
    o.dedup_key_len = 3;
    h_assert_rc(shmq_publish_ex(q, "keyed", 5, &o, NULL), 0);
    receive_with(q, "keyed", three, 3);
    o.dedup_key = NULL;
    o.delay_ms = 1;
    h_assert_rc(shmq_publish_ex(q, "delayed", 7, &o, NULL), 0);
    receive_with(q, "delayed", three, 3);
    /* replay: the first message with its headers, the plain one without */
    shmq_replay_t *r;
    shmq_replay_from_t from = {first, 0};
    h_assert_rc(shmq_replay_open(q, &from, &r), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_replay_next(r, &m), 0);
    cr_assert_eq(m.id, first);
    h_assert_rc(shmq_replay_headers(r, h, 8, &nh), 0);
    expect_headers(h, nh, three, 3);
    h_assert_rc(shmq_replay_next(r, &m), 0);
    cr_assert(m.len == 5 && memcmp(m.data, "plain", 5) == 0);
    h_assert_rc(shmq_replay_headers(r, h, 8, &nh), 0);
    cr_assert_eq(nh, 0, "the plain message replayed with %zu headers", nh);
    shmq_replay_close(r);
    h_assert_rc(shmq_close(q), 0);
}

Test(headers, limits)
{
    const char *name = h_qname("hdr");
    shmq_config_t cfg = hdr_config(8);
    shmq_t *q;
    cfg.max_header_bytes = SHMQ_HEADER_BYTES_MAX + 1;
    h_assert_rc(shmq_create(name, &cfg, &q), -EINVAL);
    cr_assert(strstr(shmq_last_error_detail(), "max_header_bytes"), "detail: %s",
              shmq_last_error_detail());
    cfg = hdr_config(8);
    cfg.max_headers = 0;
    h_assert_rc(shmq_create(name, &cfg, &q), -EINVAL);
    cfg.max_headers = SHMQ_HEADERS_MAX + 1;
    h_assert_rc(shmq_create(name, &cfg, &q), -EINVAL);
    cfg = hdr_config(8);
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    /* five headers, one more than max_headers */
    shmq_header_t five[5];
    for (int i = 0; i < 5; i++)
        five[i] = (shmq_header_t){"k", 1, "v", 1};
    o.headers = five;
    o.n_headers = 5;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EMSGSIZE);
    cr_assert(strstr(shmq_last_error_detail(), "max_headers 4"), "detail: %s",
              shmq_last_error_detail());
    o.n_headers = 4;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), 0);
    /* 128 bytes: one header of 123 value bytes and a 1-byte key fits exactly, one more not */
    char big[200];
    memset(big, 'v', sizeof big);
    shmq_header_t one = {"k", 1, big, 122};
    o.headers = &one;
    o.n_headers = 1;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), 0);
    one.value_len = 123;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EMSGSIZE);
    cr_assert(strstr(shmq_last_error_detail(), "129 bytes") &&
                  strstr(shmq_last_error_detail(), "max_header_bytes 128"),
              "detail: %s", shmq_last_error_detail());
    /* bad keys and values */
    const shmq_header_t bad[] = {
        {"", 0, "v", 1},       {"a:b", 3, "v", 1}, {"a=b", 3, "v", 1},  {"a b", 3, "v", 1},
        {"k", 1, "a\nb", 3},   {"k", 1, "a\rb", 3}, {"k", 1, "a\0b", 3}, {NULL, 1, "v", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.headers = &bad[i];
        h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EINVAL);
    }
    char longkey[SHMQ_HEADER_KEY_MAX + 1];
    memset(longkey, 'k', sizeof longkey);
    shmq_header_t lk = {longkey, sizeof longkey, "", 0};
    o.headers = &lk;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EINVAL);
    /* a small out[]: the first headers and the count */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    shmq_header_t h[2];
    size_t n = 0;
    h_assert_rc(shmq_msg_headers(c, &m, h, 2, &n), 0);
    cr_assert_eq(n, 4, "count %zu", n);
    h_assert_rc(shmq_msg_headers(c, &m, NULL, 0, &n), 0);
    cr_assert_eq(n, 4, "count %zu", n);
    h_assert_rc(shmq_msg_headers(c, &m, NULL, 1, &n), -EINVAL);
    shmq_consumer_close(c);
    h_assert_rc(shmq_close(q), 0);
    /* a queue without headers */
    const char *plain = h_qname("hdr");
    cfg = h_log_config(8);
    h_assert_rc(shmq_create(plain, &cfg, &q), 0);
    o.headers = three;
    o.n_headers = 1;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -ENOTSUP);
    h_assert_rc(shmq_publish(q, "y", 1, NULL), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_msg_headers(c, &m, h, 2, &n), 0);
    cr_assert_eq(n, 0);
    shmq_consumer_close(c);
    h_assert_rc(shmq_close(q), 0);
}

/* Receive every message (waiting up to 20 s for count of them) and check that each payload's
 * headers are those publish_all() gave it; ack them. */
struct expect {
    const char *payload;
    const shmq_header_t *h;
    size_t n;
};

static void receive_all(shmq_t *q, const struct expect *e, size_t count)
{
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    bool seen[8] = {0};
    size_t got = 0;
    int64_t until = h_now_ms() + 20000;
    while (got < count && h_now_ms() < until) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 100);
        if (rc == -ETIMEDOUT) {
            shmq_maintain(q, NULL);
            continue;
        }
        h_assert_rc(rc, 0);
        size_t i = 0;
        while (i < count && !(strlen(e[i].payload) == m.len &&
                              memcmp(e[i].payload, m.data, m.len) == 0))
            i++;
        cr_assert_lt(i, count, "an unexpected message %.*s", (int)m.len, (const char *)m.data);
        cr_assert(!seen[i], "%s delivered twice", e[i].payload);
        seen[i] = true;
        got++;
        shmq_header_t h[8];
        size_t n = 0;
        h_assert_rc(shmq_msg_headers(c, &m, h, 8, &n), 0);
        expect_headers(h, n, e[i].h, e[i].n);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_assert_eq(got, count, "%zu of %zu messages came back", got, count);
    h_assert_rc(shmq_consumer_close(c), 0);
}

Test(headers, segment_loss_restores_them)
{
    const char *name = h_qname("hdrloss");
    shmq_config_t cfg = hdr_config(8);
    cfg.max_msg_size = 30000;
    cfg.max_attempts = 1;
    cfg.default_ttl_ms = 600000; /* records carry an expiry too: every optional part at once */
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_lease_acquire(q, 600000, 1), 0); /* maintenance is ours alone */
    publish_with(q, "ready", three, 3);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.headers = three + 1;
    o.n_headers = 2;
    o.delay_ms = 2000;
    h_assert_rc(shmq_publish_ex(q, "delayed", 7, &o, NULL), 0);
    shmq_pub_opts_init(&o);
    o.headers = three;
    o.n_headers = 1;
    o.dedup_key = "k";
    o.dedup_key_len = 1;
    h_assert_rc(shmq_publish_ex(q, "keyed", 5, &o, NULL), 0);
    /* a dead letter redriven: its new PUBLISH record carries the headers */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0); /* "ready" */
    h_assert_rc(shmq_nack(c, &m, 0), 0);    /* max_attempts 1: dead */
    uint32_t moved = 0;
    h_assert_rc(shmq_dlq_redrive(q, 0, &moved), 0);
    cr_assert_eq(moved, 1);
    /* the log moves on: the first file's records are checkpointed (copied with their headers)
     * and the file deleted, so the rebuild reads the copies */
    static char big[29000];
    memset(big, 'b', sizeof big);
    shmq_maint_report_t mr;
    uint64_t checkpointed = 0;
    for (int i = 0; i < 12; i++) {
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
        while (shmq_receive(c, &m, 0) == 0) /* ours stay in flight: live, kept, copied */
            if (m.len == sizeof big)
                h_assert_rc(shmq_ack(c, &m), 0);
        h_assert_rc(shmq_maintain(q, &mr), 0);
        checkpointed += mr.checkpointed;
    }
    cr_assert_gt(checkpointed, 0, "nothing was checkpointed");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 3, "restored %llu", (unsigned long long)rep.restored);
    h_assert_rc(shmq_open(name, &q), 0);
    const struct expect e[] = {{"ready", three, 3}, {"delayed", three + 1, 2},
                               {"keyed", three, 1}};
    receive_all(q, e, 3);
    h_assert_rc(shmq_close(q), 0);
}

static const char *crash_name;

static int headers_producer(void *arg)
{
    setenv("SHMQ_CRASH_AT", (const char *)arg, 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.headers = three;
    o.n_headers = 3;
    shmq_publish_ex(q, "victim", 6, &o, NULL);
    return 12; /* not killed at its crash point */
}

/* A producer killed at point while publishing "victim" with three headers. */
static void kill_headers_producer(const char *point)
{
    pid_t k = h_fork_gated(headers_producer, (void *)point);
    shmq_config_t cfg = hdr_config(8);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    shmq_close(q);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the producer was not killed at %s", point);
}

/* After the kill: maintenance repairs the slot; the message comes (delivered: true) with all
 * its headers, or never. */
static void after_maintenance(bool delivered)
{
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    if (delivered) {
        receive_with(q, "victim", three, 3); /* an orphan: requeued by maintenance */
    } else {
        shmq_maint_report_t mr;
        h_assert_rc(shmq_maintain(q, &mr), 0);
        cr_assert_eq(mr.reservations_freed, 1, "the dead producer's reservation was not freed");
        shmq_stats_t st;
        h_assert_rc(shmq_stats(q, &st), 0);
        cr_assert_eq(st.free, 8, "free %u", st.free);
    }
    h_assert_rc(shmq_close(q), 0);
}

/* After the kill, the segment lost: the rebuild restores the message with all its headers
 * (restored: true), or not at all. */
static void after_segment_loss(bool restored)
{
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, restored ? 1 : 0, "restored %llu",
                 (unsigned long long)rep.restored);
    if (!restored)
        return;
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    receive_with(q, "victim", three, 3);
    h_assert_rc(shmq_close(q), 0);
}

Test(headers, killed_publishing_after_write)
{
    crash_name = h_qname("hkw");
    kill_headers_producer("publish_after_write");
    after_maintenance(false);
    after_segment_loss(false);
}

/* (One kill per test: a process reads SHMQ_CRASH_AT once, and a child forked after the test
 * process passed a crash point inherits that reading.) */
Test(headers, killed_publishing_after_log_then_segment_loss)
{
    crash_name = h_qname("hkl");
    kill_headers_producer("publish_after_log");
    after_segment_loss(true); /* logged: a rebuild before maintenance restores it */
}

Test(headers, killed_publishing_after_log_then_maintenance)
{
    crash_name = h_qname("hkl");
    kill_headers_producer("publish_after_log");
    after_maintenance(false); /* freed, ACK|ABORT logged */
    after_segment_loss(false);
}

Test(headers, killed_publishing_after_commit_then_segment_loss)
{
    crash_name = h_qname("hkc");
    kill_headers_producer("publish_after_commit");
    after_segment_loss(true);
}

Test(headers, killed_publishing_after_commit_then_maintenance)
{
    crash_name = h_qname("hkc");
    kill_headers_producer("publish_after_commit");
    after_maintenance(true);
}
