/*
 * test_replay.c - replay of a queue's history from its log (src/replay.c,
 * include/shmq/replay.h): from an id and from a time it returns the bytes that were published,
 * in order, while a live producer and consumer keep running (and the consumer still gets
 * every message exactly once); it tails the log (-EAGAIN at the end, then the new records);
 * history deleted by retention is reported (-ENODATA); damaged records and files never crash it.
 *
 * Messages carry (seq, len, checksum) and a payload made from seq, so a replayed message is
 * checked byte for byte against what its publisher wrote, and its seq gives the order.
 * Log files are 64 KiB so that a run crosses many of them.
 */
#include "cli.h"

#include "shmq/replay.h"

TestSuite(replay, .fini = h_cleanup, .timeout = 120);

#define FILE_SIZE (64u << 10)
#define MAX_PAYLOAD 200
#define HISTORY 1000 /* published by the test before the live phase */
#define LIVE 2000    /* published by the live producer during it */

struct wire {
    uint32_t seq, len, csum;
    unsigned char payload[MAX_PAYLOAD];
};

static size_t fill(struct wire *w, uint32_t seq)
{
    uint64_t s = (uint64_t)seq * 0x9e3779b97f4a7c15ull + 7;
    w->seq = seq;
    w->len = (uint32_t)(h_rand(&s) % (MAX_PAYLOAD + 1));
    for (uint32_t i = 0; i < w->len; i++)
        w->payload[i] = (unsigned char)h_rand(&s);
    w->csum = h_fnv1a(w->payload, w->len) ^ (seq * 2654435761u);
    return offsetof(struct wire, payload) + w->len;
}

/* The seq of a message if its bytes are exactly what fill() makes for it, else -1. */
static int64_t check_bytes(const void *data, size_t len)
{
    struct wire got, want;
    if (len < offsetof(struct wire, payload) || len > sizeof got)
        return -1;
    memcpy(&got, data, len);
    size_t n = fill(&want, got.seq);
    if (n != len || memcmp(&got, &want, n) != 0)
        return -1;
    return got.seq;
}

static int64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static shmq_t *make_queue_keeping(const char *name, uint32_t capacity, uint64_t retention)
{
    shmq_config_t cfg = h_small_config(capacity, 256, 16);
    cfg.log_retention_bytes = retention;
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = FILE_SIZE;
    cfg.heartbeat_timeout_ms = 60000; /* the test's own consumer holds a message all along */
    cfg.ack_deadline_ms = 120000;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    return q;
}

/* A queue whose log keeps no history beyond what live messages need. */
static shmq_t *make_queue(const char *name, uint32_t capacity)
{
    return make_queue_keeping(name, capacity, 0);
}

static void publish_seq(shmq_t *q, uint32_t seq, uint64_t *id)
{
    struct wire w;
    size_t n = fill(&w, seq);
    h_assert_rc(shmq_publish_timed(q, &w, n, id, 5000), 0);
}

/* ---- The live phase: a producer and a consumer process. ---- */

struct live {
    const char *name;
    _Atomic uint32_t counts[HISTORY + LIVE]; /* deliveries of each seq to the live consumer */
    _Atomic uint32_t corrupt, producer_done;
};

static int producer_main(void *arg)
{
    struct live *l = arg;
    shmq_t *q;
    if (shmq_open(l->name, &q) != 0)
        return 10;
    for (uint32_t seq = HISTORY; seq < HISTORY + LIVE; seq++) {
        struct wire w;
        size_t n = fill(&w, seq);
        if (shmq_publish_timed(q, &w, n, NULL, 5000) != 0)
            return 11;
        if (seq % 64 == 0)
            h_sleep_ms(1); /* keep the run going while the replays read */
    }
    atomic_store(&l->producer_done, 1);
    shmq_close(q);
    return 0;
}

/* Consumes everything but seq 0 (which the test holds in flight), until it has it all. */
static int consumer_main(void *arg)
{
    struct live *l = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(l->name, &q) != 0 || shmq_consumer_open(q, "live", &c) != 0)
        return 10;
    int64_t end = h_now_ms() + 30000;
    uint32_t got = 0;
    while (got < HISTORY + LIVE - 1 && h_now_ms() < end) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 200);
        if (rc == -ETIMEDOUT || rc == -EAGAIN)
            continue;
        if (rc != 0)
            return 12;
        int64_t seq = check_bytes(m.data, m.len);
        if (seq < 0 || seq >= HISTORY + LIVE)
            atomic_fetch_add(&l->corrupt, 1);
        else
            atomic_fetch_add(&l->counts[seq], 1);
        if (shmq_ack(c, &m) != 0)
            return 13;
        got++;
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return got == HISTORY + LIVE - 1 ? 0 : 14;
}

/* Replay with from until seq last is returned; assert that the messages are seq first..last,
 * each once, in order, byte for byte, with increasing ids. */
static void replay_expect(shmq_t *q, const shmq_replay_from_t *from, uint32_t first, uint32_t last,
                          const char *what)
{
    shmq_replay_t *r;
    h_assert_rc(shmq_replay_open(q, from, &r), 0);
    uint32_t want = first;
    uint64_t last_id = 0;
    int64_t end = h_now_ms() + 30000;
    while (want <= last) {
        shmq_msg_t m;
        int rc = shmq_replay_next(r, &m);
        if (rc == -EAGAIN) {
            cr_assert_lt(h_now_ms(), end, "%s: stuck at seq %u", what, want);
            h_sleep_ms(1);
            continue;
        }
        h_assert_rc(rc, 0);
        int64_t seq = check_bytes(m.data, m.len);
        cr_assert_geq(seq, 0, "%s: message id %llu is not what was published", what,
                      (unsigned long long)m.id);
        cr_assert_eq(seq, want, "%s: got seq %lld, expected %u (log order = publish order)", what,
                     (long long)seq, want);
        cr_assert_gt(m.id, last_id, "%s: ids not increasing", what);
        cr_assert_eq(m.attempt, 0);
        cr_assert_eq(m.token, 0);
        last_id = m.id;
        want++;
    }
    /* The producer is done: nothing follows. */
    shmq_msg_t m;
    h_assert_rc(shmq_replay_next(r, &m), -EAGAIN);
    h_assert_rc(shmq_replay_close(r), 0);
}

Test(replay, from_id_and_time_returns_published_bytes_in_order_during_live_traffic)
{
    const char *name = h_qname("replay-live");
    shmq_t *q = make_queue_keeping(name, 4096, 1ull << 30); /* all history: what is replayed */
    uint64_t ids[HISTORY];
    int64_t t_mid = 0;
    for (uint32_t seq = 0; seq < HISTORY; seq++) {
        if (seq == 600) { /* seq < 600 were logged before t_mid, seq >= 600 at or after it */
            h_sleep_ms(3);
            t_mid = realtime_ms();
        }
        publish_seq(q, seq, &ids[seq]);
    }
    /* Hold seq 0 in flight as well (a live message while the log moves on). */
    shmq_consumer_t *holder;
    h_assert_rc(shmq_consumer_open(q, "holder", &holder), 0);
    shmq_msg_t held;
    h_assert_rc(shmq_receive(holder, &held, 1000), 0);
    cr_assert_eq(held.id, ids[0]);

    struct live *l = h_shared_alloc(sizeof(*l));
    l->name = name;
    pid_t cons = h_fork(consumer_main, l);
    pid_t prod = h_fork(producer_main, l);

    /* Both replays run while the producer publishes and the consumer consumes. */
    shmq_replay_from_t by_id = {.id = ids[300]};
    replay_expect(q, &by_id, 300, HISTORY + LIVE - 1, "from id");
    shmq_replay_from_t by_time = {.id = 0, .unix_ms = t_mid};
    replay_expect(q, &by_time, 600, HISTORY + LIVE - 1, "from time");
    replay_expect(q, NULL, 0, HISTORY + LIVE - 1, "everything");

    h_assert_child_ok(prod, 30000, "producer");
    h_assert_child_ok(cons, 30000, "consumer");
    cr_assert_eq(atomic_load(&l->corrupt), 0);
    cr_assert_eq(atomic_load(&l->counts[0]), 0, "seq 0 is held by the test");
    for (uint32_t s = 1; s < HISTORY + LIVE; s++)
        cr_assert_eq(atomic_load(&l->counts[s]), 1, "live consumer got seq %u %u times", s,
                     atomic_load(&l->counts[s]));
    /* The replays were no consumers: nothing was delivered, nacked or redelivered by them. */
    shmq_stats_t after;
    h_assert_rc(shmq_stats(q, &after), 0);
    cr_assert_eq(after.delivered, 1 + HISTORY + LIVE - 1);
    cr_assert_eq(after.redelivered, 0);
    cr_assert_eq(after.nacked, 0);
    cr_assert_gt(after.wal_files, 3, "the run crossed log files (%u)", after.wal_files);

    h_assert_rc(shmq_ack(holder, &held), 0);
    h_assert_rc(shmq_consumer_close(holder), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

Test(replay, tailing_returns_eagain_at_the_end_then_new_records)
{
    const char *name = h_qname("replay-tail");
    shmq_t *q = make_queue(name, 1024);
    shmq_replay_t *r;
    shmq_msg_t m;
    /* Opened on an empty log: the end at once. */
    h_assert_rc(shmq_replay_open(q, NULL, &r), 0);
    h_assert_rc(shmq_replay_next(r, &m), -EAGAIN);
    uint64_t id;
    uint32_t seq = 0;
    for (; seq < 3; seq++)
        publish_seq(q, seq, &id);
    for (uint32_t s = 0; s < 3; s++) {
        h_assert_rc(shmq_replay_next(r, &m), 0);
        cr_assert_eq(check_bytes(m.data, m.len), s);
    }
    h_assert_rc(shmq_replay_next(r, &m), -EAGAIN);
    h_assert_rc(shmq_replay_next(r, &m), -EAGAIN);
    /* One at a time, across several log files: each appears as soon as it is published. */
    for (; seq < 1000; seq++) {
        publish_seq(q, seq, &id);
        h_assert_rc(shmq_replay_next(r, &m), 0);
        cr_assert_eq(check_bytes(m.data, m.len), seq);
        cr_assert_eq(m.id, id);
        h_assert_rc(shmq_replay_next(r, &m), -EAGAIN);
    }
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_gt(st.wal_files, 2, "the tail crossed files");
    h_assert_rc(shmq_replay_close(r), 0);

    /* A queue without a log has nothing to replay. */
    const char *name2 = h_qname("replay-nolog");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q2;
    h_assert_rc(shmq_create(name2, &cfg, &q2), 0);
    h_assert_rc(shmq_replay_open(q2, NULL, &r), -EOPNOTSUPP);
    h_assert_rc(shmq_close(q2), 0);
    h_assert_rc(shmq_unlink(name2), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

Test(replay, history_deleted_by_retention_is_reported)
{
    const char *name = h_qname("replay-retention");
    shmq_t *q = make_queue(name, 1024);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    uint64_t first_id = 0, id;
    shmq_replay_t *lag;
    shmq_msg_t lm;
    /* Publish and consume enough to fill several files, then let retention delete them; a
     * replay opened early reads 10 messages of file 0, then lags. */
    for (uint32_t seq = 0; seq < 1500; seq++) {
        publish_seq(q, seq, &id);
        if (seq == 0)
            first_id = id;
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 1000), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
        if (seq == 99) {
            h_assert_rc(shmq_replay_open(q, NULL, &lag), 0);
            for (int i = 0; i < 10; i++) {
                h_assert_rc(shmq_replay_next(lag, &lm), 0);
                cr_assert_eq(check_bytes(lm.data, lm.len), i);
            }
        }
    }
    h_assert_rc(shmq_maintain(q, NULL), 0);
    char dir[512], f0[600];
    snprintf(dir, sizeof dir, "%s/%s", getenv("SHMQ_STATE_DIR"), name);
    snprintf(f0, sizeof f0, "%s/wal.0000000000", dir);
    cr_assert_neq(access(f0, F_OK), 0, "retention deleted the first file");

    /* The lagging replay: the rest of file 0 from its mapping (deleted under it), then the
     * files it missed are reported once, then what is kept, in order, to the end. */
    int64_t lprev = 9, lost = 0, nodata = 0;
    for (;;) {
        int rc = shmq_replay_next(lag, &lm);
        if (rc == -EAGAIN)
            break;
        if (rc == -ENODATA) {
            nodata++;
            continue;
        }
        h_assert_rc(rc, 0);
        int64_t seq = check_bytes(lm.data, lm.len);
        cr_assert_gt(seq, lprev, "in order");
        if (seq != lprev + 1) {
            cr_assert_eq(nodata, 1, "a gap (after seq %lld) only where -ENODATA said so",
                         (long long)lprev);
            lost += seq - lprev - 1;
        }
        lprev = seq;
    }
    cr_assert_eq(nodata, 1, "the deleted files were reported once");
    cr_assert_gt(lost, 0);
    cr_assert_eq(lprev, 1499);
    h_assert_rc(shmq_replay_close(lag), 0);

    shmq_replay_t *r;
    shmq_msg_t m;
    shmq_replay_from_t from = {.id = first_id};
    h_assert_rc(shmq_replay_open(q, &from, &r), 0);
    h_assert_rc(shmq_replay_next(r, &m), -ENODATA);
    /* Then what is kept, in order. */
    h_assert_rc(shmq_replay_next(r, &m), 0);
    int64_t prev = check_bytes(m.data, m.len);
    cr_assert_gt(prev, 0);
    int n = 1;
    while (shmq_replay_next(r, &m) == 0) {
        int64_t seq = check_bytes(m.data, m.len);
        cr_assert_eq(seq, prev + 1);
        prev = seq;
        n++;
    }
    cr_assert_eq(prev, 1499, "the kept history runs to the last message");
    h_assert_rc(shmq_replay_close(r), 0);

    /* From an id the log still holds: no -ENODATA. */
    from.id = id;
    h_assert_rc(shmq_replay_open(q, &from, &r), 0);
    h_assert_rc(shmq_replay_next(r, &m), 0);
    cr_assert_eq(m.id, id);
    h_assert_rc(shmq_replay_next(r, &m), -EAGAIN);
    h_assert_rc(shmq_replay_close(r), 0);

    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Overwrite n bytes at off of file path with pattern. */
static void damage(const char *path, off_t off, size_t n, unsigned char pattern)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    unsigned char buf[256];
    memset(buf, pattern, sizeof buf);
    cr_assert_eq(pwrite(fd, buf, n, off), (ssize_t)n);
    close(fd);
}

Test(replay, damaged_records_and_files_are_skipped_not_crashed_on)
{
    const char *name = h_qname("replay-damage");
    shmq_t *q = make_queue(name, 2048);
    uint64_t id;
    for (uint32_t seq = 0; seq < 1600; seq++) /* about 4 files of about 380 messages */
        publish_seq(q, seq, &id);
    char dir[512], f0[600], f1[600], f2[600];
    snprintf(dir, sizeof dir, "%s/%s", getenv("SHMQ_STATE_DIR"), name);
    snprintf(f0, sizeof f0, "%s/wal.0000000000", dir);
    snprintf(f1, sizeof f1, "%s/wal.0000000001", dir);
    snprintf(f2, sizeof f2, "%s/wal.0000000002", dir);
    /* Garbage over the middle of file 0 (records there are lost) and file 1's header; file 2
     * cut short (its records up to the cut are read). */
    damage(f0, 4096 + 20000, 200, 0xa5);
    damage(f1, 8, 16, 0xff);
    cr_assert_eq(truncate(f2, 4096 + 30000), 0);

    shmq_replay_t *r;
    h_assert_rc(shmq_replay_open(q, NULL, &r), 0);
    int64_t prev = -1, got = 0, gaps = 0, badfile = 0;
    int64_t end = h_now_ms() + 20000;
    for (;;) {
        shmq_msg_t m;
        int rc = shmq_replay_next(r, &m);
        if (rc == -EAGAIN) {
            if (prev == 1599)
                break;
            cr_assert_lt(h_now_ms(), end, "stuck after seq %lld", (long long)prev);
            h_sleep_ms(5);
            continue;
        }
        if (rc == -EBADMSG) {
            badfile++;
            continue;
        }
        h_assert_rc(rc, 0);
        int64_t seq = check_bytes(m.data, m.len);
        cr_assert_geq(seq, 0, "a replayed message has the bytes that were published");
        cr_assert_gt(seq, prev, "in order");
        gaps += seq != prev + 1;
        prev = seq;
        got++;
    }
    cr_assert_eq(badfile, 2, "the damaged file and the cut one were reported once each");
    cr_assert_geq(gaps, 3, "records lost to the damage are skipped");
    cr_assert_lt(got, 1600 - 300 - 150, "file 1 and the end of file 2 were lost (%lld)",
                 (long long)got);
    cr_assert_gt(got, 800);
    h_assert_rc(shmq_replay_close(r), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- The CLI: shmq replay ---- */

/* Run the built tool (dirname(/proc/self/exe)/../shmq) with args; its stdout (malloc'd) and
 * exit code (its stderr is copied to ours). Bounded: 30 s. */
static char *run_tool(const char *const *args, int *code)
{
    struct run r = cli_run("shmq", 30, NULL, args);
    fputs(r.err, stderr);
    free(r.err);
    cr_assert(WIFEXITED(r.status));
    *code = WEXITSTATUS(r.status);
    return r.out;
}

#define TOOL(code, ...) run_tool((const char *const[]){__VA_ARGS__, NULL}, (code))

Test(replay, cli_replays_from_an_id_and_a_time)
{
    const char *name = h_qname("replay-cli");
    shmq_t *q = make_queue(name, 64);
    uint64_t ids[15];
    int64_t t = 0;
    for (int i = 0; i < 15; i++) {
        char text[8];
        if (i == 10) {
            h_sleep_ms(3);
            t = realtime_ms();
        }
        int len = snprintf(text, sizeof text, "m%d", i);
        h_assert_rc(shmq_publish(q, text, (size_t)len, &ids[i]), 0);
    }
    int code;
    char from[64];
    snprintf(from, sizeof from, "%llu", (unsigned long long)ids[3]);
    char *out = TOOL(&code, "replay", name, "--from", from, "--count", "4");
    cr_assert_eq(code, 0);
    cr_assert_str_eq(out, "m3\nm4\nm5\nm6\n");
    free(out);

    /* The same time as unix ms and as ISO-8601 with milliseconds, UTC. */
    const char *want_after = "m10\nm11\nm12\nm13\nm14\n";
    snprintf(from, sizeof from, "%lld", (long long)t);
    out = TOOL(&code, "replay", name, "--from", from);
    cr_assert_eq(code, 0);
    cr_assert_str_eq(out, want_after);
    free(out);
    time_t secs = (time_t)(t / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char iso[64];
    size_t n = strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(iso + n, sizeof iso - n, ".%03dZ", (int)(t % 1000));
    out = TOOL(&code, "replay", name, "--from", iso);
    cr_assert_eq(code, 0, "--from %s", iso);
    cr_assert_str_eq(out, want_after, "--from %s", iso);
    free(out);

    snprintf(from, sizeof from, "id:%llu", (unsigned long long)ids[14]);
    out = TOOL(&code, "replay", name, "--from", from, "--json");
    cr_assert_eq(code, 0);
    cr_assert(strstr(out, "\"data\":\"m14\"") && strstr(out, "\"len\":3"), "json: %s", out);
    free(out);

    out = TOOL(&code, "replay", name, "--from", "yesterday");
    cr_assert_eq(code, 2, "a bad --from is a usage error");
    free(out);

    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- Several producers: log order keeps each producer's order. ---- */

struct multi {
    const char *name;
    uint32_t me;
};

static int multi_producer(void *arg)
{
    struct multi *m = arg;
    shmq_t *q;
    if (shmq_open(m->name, &q) != 0)
        return 10;
    for (uint32_t i = 0; i < 1000; i++) {
        struct wire w;
        size_t n = fill(&w, m->me * 1000 + i); /* producer me owns seq me*1000 .. +999 */
        if (shmq_publish_timed(q, &w, n, NULL, 5000) != 0)
            return 11;
    }
    shmq_close(q);
    return 0;
}

Test(replay, several_producers_each_in_order_every_message_once)
{
    const char *name = h_qname("replay-multi");
    shmq_t *q = make_queue(name, 4096);
    struct multi args[3];
    pid_t pids[3];
    for (uint32_t p = 0; p < 3; p++) {
        args[p] = (struct multi){name, p};
        pids[p] = h_fork(multi_producer, &args[p]);
    }
    for (int p = 0; p < 3; p++)
        h_assert_child_ok(pids[p], 30000, "producer");
    shmq_replay_t *r;
    h_assert_rc(shmq_replay_open(q, NULL, &r), 0);
    int64_t last_seq[3] = {-1, 999, 1999}; /* producer p starts at seq p * 1000 */
    uint64_t last_id[3] = {0, 0, 0};
    int got = 0;
    shmq_msg_t m;
    int rc;
    while ((rc = shmq_replay_next(r, &m)) == 0) {
        int64_t seq = check_bytes(m.data, m.len);
        cr_assert(seq >= 0 && seq < 3000, "bytes as published");
        int p = (int)(seq / 1000);
        cr_assert_eq(seq, last_seq[p] + 1, "producer %d: seq %lld after %lld", p, (long long)seq,
                     (long long)last_seq[p]);
        cr_assert_gt(m.id, last_id[p], "producer %d: ids increase", p);
        last_seq[p] = seq;
        last_id[p] = m.id;
        got++;
    }
    h_assert_rc(rc, -EAGAIN);
    cr_assert_eq(got, 3000, "every message once");
    h_assert_rc(shmq_replay_close(r), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
