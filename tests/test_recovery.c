/*
 * test_recovery.c - rebuilding a queue from its log after the segment is lost.
 *
 *  - process_mode_kills: producers and consumers SIGKILLed at random points (crash points
 *    included) while a maintainer runs; then everything is killed, the segment unlinked, and
 *    shmq_open recovers: every message whose publish returned and that was not acked comes
 *    back exactly once, acked ones only if their ack raced the kill, ones nacked with a
 *    10-minute delay come back delayed (not delivered at once), ids continue after the highest.
 *  - nack attempts survive recovery; a corrupted segment is rebuilt from the log; two processes
 *    opening a lost segment at once both succeed and each message comes back once.
 *
 * Children that must hit crash points set SHMQ_CRASH_AT before their first library call; the
 * test process itself never passes a crash point before it forks them (it only creates the
 * queue and reads stats), see helpers.h.
 */
#include "helpers.h"

#include <dirent.h>
#include <poll.h>

TestSuite(recovery, .fini = h_cleanup, .timeout = 240);

/* ---- the kill test ---- */

#define MAXP 512 /* producer incarnations */
#define PER 4096 /* messages per incarnation */
#define MSG_LEN 48

enum { PUB_STARTED = 1, PUB_OK = 2 };
enum { CONS_ACK_STARTED = 3, CONS_ACKED = 4, CONS_NACKED = 5, CONS_NACK_STARTED = 6 };

struct shared {
    _Atomic int stop;
    _Atomic uint32_t published, acked, nacked, estale;
    _Atomic uint8_t pub[MAXP][PER];
    _Atomic uint8_t cons[MAXP][PER];
    _Atomic uint64_t id[MAXP][PER];
};

static struct shared *sh;
static const char *kq;
static uint32_t nack_every;    /* 0: ack everything */
static uint32_t cons_delay_us; /* a consumer's pause after each message: builds a backlog */

struct payload {
    uint32_t p, s, check, pad;
    uint8_t fill[MSG_LEN - 16];
};

static uint32_t check_of(uint32_t p, uint32_t s)
{
    return (p * 2654435761u) ^ (s * 40503u) ^ 0x5a5a5a5au;
}

static const char *const producer_points[] = {"publish_after_reserve", "publish_after_write",
                                              "publish_after_log", "publish_after_commit",
                                              "publish_after_enqueue"};
static const char *const consumer_points[] = {"receive_after_dequeue", "receive_after_claim",
                                              "ack_after_free", "nack_after_requeue"};

static void maybe_crash_point(uint32_t seed, const char *const *points, size_t n)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 7;
    uint64_t r = h_rand(&s);
    if (r % 3 != 0) /* two in three run without a crash point (killed by the parent) */
        return;
    char skip[16];
    snprintf(skip, sizeof skip, "%u", (unsigned)(h_rand(&s) % 300));
    setenv("SHMQ_CRASH_AT", points[h_rand(&s) % n], 1);
    setenv("SHMQ_CRASH_SKIP", skip, 1);
}

static int producer(void *arg)
{
    uint32_t p = (uint32_t)(uintptr_t)arg;
    maybe_crash_point(p, producer_points, sizeof producer_points / sizeof producer_points[0]);
    shmq_t *q;
    if (shmq_open(kq, &q))
        return 10;
    struct payload m;
    memset(&m, 0, sizeof m);
    for (uint32_t s = 0; s < PER && !atomic_load(&sh->stop);) {
        m.p = p;
        m.s = s;
        m.check = check_of(p, s);
        memset(m.fill, (int)(s & 0xff), sizeof m.fill);
        atomic_store(&sh->pub[p][s], PUB_STARTED);
        uint64_t id;
        int rc = shmq_publish(q, &m, sizeof m, &id);
        if (rc == -EAGAIN) { /* full: give the consumers time */
            atomic_store(&sh->pub[p][s], 0);
            usleep(1000);
            continue;
        }
        if (rc == -ESTALE) {
            /* the reservation was taken from us (see the report: maintenance may free the
             * reservation of a process that attached after its registry scan); the PUBLISH
             * record may be in the log: the message may come back, it need not */
            atomic_fetch_add(&sh->estale, 1);
            s++;
            continue;
        }
        if (rc) {
            fprintf(stderr, "producer %u: publish: %s\n", p, shmq_strerror(rc));
            return 11;
        }
        atomic_store(&sh->id[p][s], id);
        atomic_store(&sh->pub[p][s], PUB_OK);
        atomic_fetch_add(&sh->published, 1);
        s++;
        usleep(150);
    }
    shmq_close(q);
    return 0;
}

static int consumer(void *arg)
{
    uint32_t k = (uint32_t)(uintptr_t)arg;
    maybe_crash_point(k * 7919u + 13, consumer_points,
                      sizeof consumer_points / sizeof consumer_points[0]);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(kq, &q) || shmq_consumer_open(q, "kc", &c))
        return 10;
    while (!atomic_load(&sh->stop)) {
        shmq_msg_t msg;
        int rc = shmq_receive(c, &msg, 20);
        if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR)
            continue;
        if (rc) {
            fprintf(stderr, "consumer: receive: %s\n", shmq_strerror(rc));
            return 11;
        }
        struct payload m;
        if (msg.len != sizeof m)
            return 12;
        memcpy(&m, msg.data, sizeof m);
        if (m.p >= MAXP || m.s >= PER || m.check != check_of(m.p, m.s))
            return 13;
        /* one in eight is nacked (first delivery) with a long delay: it stays live, with a
         * NACK record; the others are acked */
        if (nack_every && m.s % nack_every == 0 && msg.attempt == 1) {
            atomic_store(&sh->cons[m.p][m.s], CONS_NACK_STARTED);
            if (shmq_nack(c, &msg, 600000) == 0) {
                atomic_store(&sh->cons[m.p][m.s], CONS_NACKED);
                atomic_fetch_add(&sh->nacked, 1);
            }
        } else {
            atomic_store(&sh->cons[m.p][m.s], CONS_ACK_STARTED);
            if (shmq_ack(c, &msg) == 0) {
                atomic_store(&sh->cons[m.p][m.s], CONS_ACKED);
                atomic_fetch_add(&sh->acked, 1);
            }
        }
        if (cons_delay_us)
            usleep(cons_delay_us);
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

static int maintainer(void *arg)
{
    shmq_t *q;
    if (shmq_open(kq, &q))
        return 10;
    while (!atomic_load(&sh->stop)) {
        shmq_maintain(q, NULL);
        usleep(5000);
    }
    shmq_close(q);
    return 0;
}

static void kill_run(const char *tag, uint32_t nack, uint32_t delay_us, uint32_t wal_file_size)
{
    kq = h_qname(tag);
    nack_every = nack;
    cons_delay_us = delay_us;
    sh = h_shared_alloc(sizeof *sh);
    shmq_config_t cfg = h_small_config(16384, MSG_LEN, 512);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = wal_file_size;
    cfg.heartbeat_timeout_ms = 60000;
    cfg.ack_deadline_ms = 600000;
    shmq_t *q;
    h_assert_rc(shmq_create(kq, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);

    enum { NP = 2, NC = 2 };
    pid_t prod[NP], cons[NC];
    uint32_t next_p = 0, next_c = 0;
    for (int i = 0; i < NP; i++)
        prod[i] = h_fork(producer, (void *)(uintptr_t)next_p++);
    for (int i = 0; i < NC; i++)
        cons[i] = h_fork(consumer, (void *)(uintptr_t)next_c++);
    pid_t maint = h_fork(maintainer, NULL);

    uint64_t rng = (uint64_t)getpid() * 1000003u;
    int64_t end = h_now_ms() + 3000;
    unsigned kills = 0, crashes = 0;
    while (h_now_ms() < end && next_p < MAXP - 1) {
        h_sleep_ms(5 + (int)(h_rand(&rng) % 40));
        /* kill one at random */
        int who = (int)(h_rand(&rng) % (NP + NC));
        pid_t victim = who < NP ? prod[who] : cons[who - NP];
        if (h_rand(&rng) % 2 == 0) {
            kill(victim, SIGKILL);
            kills++;
        }
        /* replace every child that ended (killed, crash point, or done) */
        for (int i = 0; i < NP + NC; i++) {
            pid_t *slot = i < NP ? &prod[i] : &cons[i - NP];
            int st;
            if (h_waitpid(*slot, 0, 0, &st) != 0)
                continue;
            if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
                char b[96];
                cr_assert_fail("child %d %s", (int)*slot, h_status_str(st, b, sizeof b));
            }
            if (WIFSIGNALED(st))
                crashes++;
            *slot = i < NP ? h_fork(producer, (void *)(uintptr_t)next_p++)
                           : h_fork(consumer, (void *)(uintptr_t)next_c++);
        }
    }
    /* kill everything at once, wherever it is */
    for (int i = 0; i < NP; i++)
        kill(prod[i], SIGKILL);
    for (int i = 0; i < NC; i++)
        kill(cons[i], SIGKILL);
    kill(maint, SIGKILL);
    for (int i = 0; i < NP; i++)
        h_waitpid(prod[i], 10000, 0, NULL);
    for (int i = 0; i < NC; i++)
        h_waitpid(cons[i], 10000, 0, NULL);
    h_waitpid(maint, 10000, 0, NULL);

    /* the log files left (maintenance deletes those no live message needs) */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", getenv("SHMQ_STATE_DIR"), kq);
    unsigned nfiles = 0;
    unsigned long long lowest = ~0ull;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strncmp(e->d_name, "wal.", 4) == 0 && strlen(e->d_name) == 14) {
            unsigned long long seq = strtoull(e->d_name + 4, NULL, 10);
            lowest = seq < lowest ? seq : lowest;
            nfiles++;
        }
    }
    if (d)
        closedir(d);

    /* the segment is lost; shmq_open rebuilds it from the log */
    h_assert_rc(shmq_unlink_segment(kq), 0);
    int64_t t0 = h_now_ms();
    shmq_recovery_report_t rrep;
    h_assert_rc(shmq_recover(kq, NULL, &rrep), 0);
    h_assert_rc(shmq_open(kq, &q), 0);
    int64_t t_open = h_now_ms() - t0;
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    static uint16_t seen[MAXP][PER];
    static uint32_t att[MAXP][PER];
    memset(seen, 0, sizeof seen);
    uint64_t back = 0, max_id = 0, prev_id = 0;
    unsigned out_of_order = 0;
    shmq_msg_t msg;
    while (shmq_receive(c, &msg, 0) == 0) {
        struct payload m;
        cr_assert_eq(msg.len, sizeof m);
        memcpy(&m, msg.data, sizeof m);
        cr_assert(m.p < MAXP && m.s < PER && m.check == check_of(m.p, m.s),
                  "a recovered message is corrupt");
        seen[m.p][m.s]++;
        att[m.p][m.s] = msg.attempt;
        if (atomic_load(&sh->pub[m.p][m.s]) == PUB_OK)
            cr_assert_eq(msg.id, atomic_load(&sh->id[m.p][m.s]), "id of (%u,%u)", m.p, m.s);
        out_of_order += msg.id < prev_id;
        prev_id = msg.id;
        back++;
        h_assert_rc(shmq_ack(c, &msg), 0);
    }
    uint64_t must = 0, missing = 0, dups = 0, phantoms = 0, acked_back = 0, raced_back = 0;
    uint64_t nacked_back = 0, bad_attempt = 0, maybe_back = 0, nacked_live = 0, nack_raced = 0;
    for (uint32_t p = 0; p < next_p; p++) {
        for (uint32_t s = 0; s < PER; s++) {
            uint8_t ps = atomic_load(&sh->pub[p][s]), cs = atomic_load(&sh->cons[p][s]);
            uint64_t id = atomic_load(&sh->id[p][s]);
            if (ps == PUB_OK && id > max_id)
                max_id = id;
            if (seen[p][s] > 1)
                dups++;
            if (seen[p][s] && ps == 0)
                phantoms++;
            /* nacked with a 10-minute delay: restored DELAYED (counted below), not receivable */
            nacked_live += ps == PUB_OK && cs == CONS_NACKED;
            /* nacked or nacking whatever the producer's mark: a producer killed after its
             * publish returned, before it marked PUB_OK, leaves a message a consumer may nack */
            nack_raced += (ps != PUB_OK && cs == CONS_NACKED) || cs == CONS_NACK_STARTED;
            if (ps == PUB_OK && cs != CONS_ACK_STARTED && cs != CONS_ACKED && cs != CONS_NACKED &&
                cs != CONS_NACK_STARTED) {
                must++;
                if (!seen[p][s]) {
                    missing++;
                    if (missing <= 5)
                        fprintf(stderr, "missing: (%u,%u) id %llu cons state %u\n", p, s,
                                (unsigned long long)id, cs);
                }
            }
            if (seen[p][s] && ps == PUB_STARTED)
                maybe_back++;
            if (seen[p][s] && cs == CONS_ACKED)
                acked_back++;
            if (seen[p][s] && cs == CONS_ACK_STARTED)
                raced_back++;
            if (seen[p][s] && cs == CONS_NACKED) {
                nacked_back++;
                if (att[p][s] < 2)
                    bad_attempt++;
            }
        }
    }
    fprintf(stderr,
            "%s: %u producers, %u consumers started; %u SIGKILLs sent, %u "
            "children died by signal; published %u, acked %u, nacked %u\n"
            "  recovery (shmq_open) %lld ms: %llu messages back, %llu required, %llu missing, "
            "%llu duplicates, %llu phantoms; acked and back %llu, ack raced and back %llu, "
            "publish unreturned and back %llu; nacked back %llu (attempt lost: %llu), out of "
            "id order %u; publishes fenced (-ESTALE) %u; log files %u from wal.%llu\n",
            kq, next_p, next_c, kills, crashes, atomic_load(&sh->published),
            atomic_load(&sh->acked), atomic_load(&sh->nacked), (long long)t_open,
            (unsigned long long)back, (unsigned long long)must, (unsigned long long)missing,
            (unsigned long long)dups, (unsigned long long)phantoms, (unsigned long long)acked_back,
            (unsigned long long)raced_back, (unsigned long long)maybe_back,
            (unsigned long long)nacked_back, (unsigned long long)bad_attempt, out_of_order,
            atomic_load(&sh->estale), nfiles, lowest);
    cr_assert_gt(atomic_load(&sh->published), 1000, "too little was published to test anything");
    cr_assert_gt(kills + crashes, 10);
    cr_assert_gt(must + nacked_live, 300, "too few messages were live at the end to test anything");
    cr_assert_eq(missing, 0, "%llu messages published and not acked were lost",
                 (unsigned long long)missing);
    cr_assert_eq(dups, 0);
    cr_assert_eq(phantoms, 0);
    cr_assert_eq(out_of_order, 0, "recovered messages come back in id order");
    cr_assert_eq(bad_attempt, 0, "nacked messages came back without their attempt count");
    cr_assert_eq(nacked_back, 0, "%llu messages nacked for 10 minutes were delivered at once",
                 (unsigned long long)nacked_back);
    cr_assert(rrep.delayed >= nacked_live && rrep.delayed <= nacked_live + nack_raced,
              "%llu restored delayed, %llu nacked (and %llu nacks raced the kill or a "
              "producer's mark)",
              (unsigned long long)rrep.delayed, (unsigned long long)nacked_live,
              (unsigned long long)nack_raced);
    cr_assert_leq(acked_back, 5 + atomic_load(&sh->acked) / 1000, "%llu acked messages came back",
                  (unsigned long long)acked_back);
    /* ids continue after the highest */
    uint64_t id;
    h_assert_rc(shmq_publish(q, "after", 5, &id), 0);
    cr_assert_gt(id, max_id, "id %llu after recovery, highest published %llu",
                 (unsigned long long)id, (unsigned long long)max_id);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(kq), 0);
    munmap(sh, sizeof *sh);
}

/* One message in eight nacked with a long delay (live to the end, with a NACK record). */
Test(recovery, process_mode_kills) { kill_run("kill", 8, 0, 256u << 10); }

/* Everything acked, but consumers slower than producers (a backlog that moves), 64 KiB log
 * files: maintenance deletes files while producers and consumers are killed; what was live at
 * the end must still be in the files that remain. */
Test(recovery, process_mode_kills_with_retention) { kill_run("killret", 0, 400, 64u << 10); }

/* ---- attempts, corruption, concurrent recovery ---- */

static shmq_config_t log_config(uint32_t capacity)
{
    shmq_config_t cfg = h_small_config(capacity, 128, 32);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = 1u << 20;
    cfg.max_attempts = 10;
    cfg.backoff_base_ms = cfg.backoff_cap_ms = 0;
    return cfg;
}

Test(recovery, nack_attempts_survive)
{
    const char *name = h_qname("att");
    shmq_config_t cfg = log_config(16);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "att", &c), 0);
    uint64_t ids[3];
    for (int k = 0; k < 3; k++)
        h_assert_rc(shmq_publish(q, "m", 1, &ids[k]), 0);
    /* message 0 nacked three times, message 1 once, message 2 never delivered */
    int nacks[3] = {3, 1, 0};
    for (int round = 0; round < 10; round++) {
        shmq_msg_t m;
        if (shmq_receive(c, &m, 0) != 0)
            break;
        int k = m.id == ids[0] ? 0 : m.id == ids[1] ? 1 : 2;
        if (nacks[k] > 0) {
            nacks[k]--;
            h_assert_rc(shmq_nack(c, &m, 0), 0);
        }
        /* else leave it in flight: its delivery is not logged, only nacks are */
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "att2", &c), 0);
    uint32_t want[3] = {4, 2, 1}; /* the next delivery's attempt */
    for (int n = 0; n < 3; n++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        int k = m.id == ids[0] ? 0 : m.id == ids[1] ? 1 : 2;
        cr_assert_eq(m.id, ids[n], "id order");
        cr_assert_eq(m.attempt, want[k], "message %d: attempt %u after recovery, expected %u", k,
                     m.attempt, want[k]);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Publish n (payload "msg K"), ack those with k % 4 == 0; return how many are live. */
static unsigned fill(const char *name, unsigned n, uint64_t *ids)
{
    shmq_config_t cfg = log_config(1024);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "fill", &c), 0);
    for (unsigned k = 0; k < n; k++) {
        char buf[32];
        int len = snprintf(buf, sizeof buf, "msg %u", k);
        h_assert_rc(shmq_publish(q, buf, (size_t)len, &ids[k]), 0);
    }
    unsigned live = 0;
    for (unsigned k = 0; k < n; k++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        cr_assert_eq(m.id, ids[k]);
        if (k % 4 == 0) {
            h_assert_rc(shmq_ack(c, &m), 0);
        } else {
            /* live, delayed 1 ms: due again by the time the segment is rebuilt (a longer delay
             * would come back as a delay: test_epoch.c) */
            h_assert_rc(shmq_nack(c, &m, 1), 0);
            live++;
        }
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    return live;
}

/* Receive everything; check each live message exactly once with its payload. A message nacked
 * with 1 ms may come back DELAYED (the rebuild ran within its millisecond): wait for it, bounded;
 * once every live message is back, what is left must be nothing. */
static void check_back(const char *name, unsigned n, const uint64_t *ids, unsigned live)
{
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "check", &c), 0);
    uint8_t *seen = calloc(n, 1);
    unsigned got = 0;
    shmq_msg_t m;
    for (int64_t end = h_now_ms() + 20000;;) {
        int rc = shmq_receive(c, &m, got < live ? 100 : 0);
        if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR) {
            if (got < live && h_now_ms() < end)
                continue;
            break;
        }
        h_assert_rc(rc, 0);
        unsigned k = 0;
        while (k < n && ids[k] != m.id)
            k++;
        cr_assert(k < n, "unknown id %llu", (unsigned long long)m.id);
        cr_assert_neq(k % 4, 0, "acked message %u came back", k);
        cr_assert_eq(seen[k], 0, "message %u came back twice", k);
        char buf[32];
        int len = snprintf(buf, sizeof buf, "msg %u", k);
        cr_assert(m.len == (size_t)len && memcmp(m.data, buf, (size_t)len) == 0);
        seen[k] = 1;
        got++;
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_assert_eq(got, live, "%u messages back, %u live", got, live);
    free(seen);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

static void flip_segment(const char *name, off_t off, size_t n)
{
    char path[128];
    h_shm_path(name, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    uint8_t b[64];
    cr_assert(n <= sizeof b);
    cr_assert_eq(pread(fd, b, n, off), (ssize_t)n);
    for (size_t i = 0; i < n; i++)
        b[i] ^= 0x5a;
    cr_assert_eq(pwrite(fd, b, n, off), (ssize_t)n);
    close(fd);
}

Test(recovery, corrupted_segment_rebuilt)
{
    /* flipped: the magic, the capacity, the ring order (all covered by the header crc) */
    const off_t offsets[] = {0, 24, 72};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        const char *name = h_qname("corrupt");
        enum { N = 100 };
        uint64_t ids[N];
        unsigned live = fill(name, N, ids);
        flip_segment(name, offsets[i], 4);
        check_back(name, N, ids, live);
        h_assert_rc(shmq_unlink(name), 0);
    }
}

static const char *cq;

static int concurrent_opener(void *arg)
{
    shmq_t *q;
    int rc = shmq_open(cq, &q);
    if (rc) {
        fprintf(stderr, "concurrent shmq_open: %s\n", shmq_strerror(rc));
        return 10;
    }
    shmq_close(q);
    return 0;
}

Test(recovery, concurrent_open_recovers_once)
{
    for (int round = 0; round < 5; round++) {
        cq = h_qname("conc");
        enum { N = 400 };
        uint64_t ids[N];
        unsigned live = fill(cq, N, ids);
        h_assert_rc(shmq_unlink_segment(cq), 0);
        pid_t a = h_fork_gated(concurrent_opener, NULL);
        pid_t b = h_fork_gated(concurrent_opener, NULL);
        h_open_gate(a);
        h_open_gate(b);
        h_assert_child_ok(a, 30000, "first opener");
        h_assert_child_ok(b, 30000, "second opener");
        check_back(cq, N, ids, live);
        h_assert_rc(shmq_unlink(cq), 0);
    }
}

/* ---- a live process's reservation or delivery is never taken from it ---- */

/*
 * Short-lived producers and consumers attach while a maintainer runs passes back to back. A
 * registry entry that a pass saw FREE may be taken by a new process before the same pass scans
 * the slots; the new process's reservation (or delivery) must not then be treated as a dead
 * process's: publish must not fail with -ESTALE, ack must not (the message would be delivered
 * twice, and its slot reused while the live consumer still reads it zero-copy).
 */
struct churn {
    _Atomic int stop;
    _Atomic uint32_t pub_estale, ack_estale, publishes, acks;
};
static struct churn *ch;
static const char *chq;

static int churn_maintainer(void *arg)
{
    shmq_t *q;
    if (shmq_open(chq, &q))
        return 10;
    while (!atomic_load(&ch->stop))
        shmq_maintain(q, NULL);
    shmq_close(q);
    return 0;
}

static int churn_client(void *arg)
{
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(chq, &q) || shmq_consumer_open(q, "churn", &c))
        return 10;
    for (int k = 0; k < 4; k++) {
        int rc = shmq_publish(q, "churn", 5, NULL);
        if (rc == -ESTALE)
            atomic_fetch_add(&ch->pub_estale, 1);
        else if (rc == 0)
            atomic_fetch_add(&ch->publishes, 1);
        shmq_msg_t m;
        if (shmq_receive(c, &m, 0) == 0) {
            rc = shmq_ack(c, &m);
            if (rc == -ESTALE)
                atomic_fetch_add(&ch->ack_estale, 1);
            else if (rc == 0)
                atomic_fetch_add(&ch->acks, 1);
        }
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(recovery, attach_churn_never_fences_the_living)
{
    chq = h_qname("churn");
    ch = h_shared_alloc(sizeof *ch);
    shmq_config_t cfg = h_small_config(4096, 64, 64);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.heartbeat_timeout_ms = 60000;
    shmq_t *q;
    h_assert_rc(shmq_create(chq, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    pid_t maint = h_fork(churn_maintainer, NULL);
    int64_t end = h_now_ms() + 3000;
    unsigned clients = 0;
    while (h_now_ms() < end) {
        pid_t a = h_fork(churn_client, NULL), b = h_fork(churn_client, NULL);
        h_assert_child_ok(a, 10000, "churn client");
        h_assert_child_ok(b, 10000, "churn client");
        clients += 2;
    }
    atomic_store(&ch->stop, 1);
    h_assert_child_ok(maint, 10000, "maintainer");
    fprintf(stderr,
            "attach churn: %u clients, %u publishes, %u acks; publish -ESTALE %u, ack "
            "-ESTALE %u\n",
            clients, atomic_load(&ch->publishes), atomic_load(&ch->acks),
            atomic_load(&ch->pub_estale), atomic_load(&ch->ack_estale));
    cr_assert_eq(atomic_load(&ch->pub_estale), 0, "a live producer's reservation was freed");
    cr_assert_eq(atomic_load(&ch->ack_estale), 0, "a live consumer's delivery was taken back");
    h_assert_rc(shmq_unlink(chq), 0);
    munmap(ch, sizeof *ch);
}
