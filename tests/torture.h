/*
 * torture.h - helpers of the crash, fencing, retry and torture tests (test_crash.c,
 * test_fencing.c, test_retry.c, test_torture.c).
 *
 * The spawner. A crash point reads SHMQ_CRASH_AT at its first hit in a process and keeps the
 * answer (crashpoint.c reads it again in a forked child, but a test must not rely on a child
 * forked from a test process that has already passed crash points: any publish, receive, ack
 * or maintain, with its threads and state). So t_setup()
 * forks, before the test makes any library call, a spawner process that never calls the
 * library; every child of a test is forked by it (t_spawn()), with SHMQ_CRASH_* set in the
 * child before its first library call. The spawner double-forks and the test process is a
 * child subreaper (PR_SET_CHILD_SUBREAPER), so every spawned process becomes a child of the
 * test process: waitpid() (WUNTRACED too), kill() and reaping work as for a plain fork().
 *
 * The book. Messages carry (producer, seq, len, checksum); a shared array (MAP_SHARED |
 * MAP_ANONYMOUS, mapped before the spawner is forked, so every child sees it) records per
 * message what the processes did with it: publish begun / returned success, deliveries,
 * acks begun / returned success, nacks. Loss (published, never acked), duplication (delivered
 * more than once), corruption (bad checksum or length) and double acks are told apart.
 *
 * Every child sets alarm() and PR_SET_PDEATHSIG, so none outlives a test that went wrong;
 * t_teardown() (the suites' .fini) kills and reaps every tracked child and unlinks the queues.
 */
#ifndef SHMQ_TEST_TORTURE_H
#define SHMQ_TEST_TORTURE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashpoint.h"
#include "shmq/shmq.h"

#define T_UNUSED __attribute__((unused))
#define T_MAX_PIDS 256
#define T_MAX_NAMES 8
#define T_ARG_MAX 256
#define T_CHILD_ALARM_S 120 /* backstop: no child lives longer than this */

/* ---------------------------------------------------------------- clocks */

static T_UNUSED int64_t t_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static T_UNUSED int64_t t_now_ms(void) { return t_now_us() / 1000; }

static T_UNUSED void t_sleep_us(int64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static T_UNUSED void t_sleep_ms(int ms) { t_sleep_us((int64_t)ms * 1000); }

/* xorshift64*: cheap, deterministic for a seed. */
static T_UNUSED uint64_t t_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

/* ---------------------------------------------------------------- shared memory, names */

/*
 * Shared memory for the test and all its children: carved from one arena that t_setup() maps
 * before it forks the spawner (a mapping made later would not reach the spawned children).
 * Zeroed; only the pages touched cost memory.
 */
#define T_ARENA_SIZE (256ull << 20)
static unsigned char *t_arena;
static size_t t_arena_used;

static T_UNUSED void *t_shared(size_t size)
{
    cr_assert(t_arena, "t_setup() did not run");
    size = (size + 63) & ~(size_t)63;
    cr_assert(t_arena_used + size <= T_ARENA_SIZE, "shared arena exhausted (%zu bytes)", size);
    void *p = t_arena + t_arena_used;
    t_arena_used += size;
    return p;
}

static char t_names[T_MAX_NAMES][SHMQ_NAME_MAX + 1];
static int t_nnames;

/* A unique queue name "TAG-PID-N", unlinked by t_teardown(). */
static T_UNUSED const char *t_qname(const char *tag)
{
    cr_assert(t_nnames < T_MAX_NAMES, "too many queues in one test");
    char *b = t_names[t_nnames++];
    snprintf(b, SHMQ_NAME_MAX + 1, "%.30s-%d-%d", tag, (int)getpid(), t_nnames);
    shmq_unlink(b);
    return b;
}

/* ---------------------------------------------------------------- the spawner */

struct t_request {
    int (*fn)(void *arg);
    char crash_at[48]; /* "" for none */
    int crash_stop;    /* SHMQ_CRASH_SIGNAL=STOP */
    int crash_skip;
    unsigned alarm_s; /* the child's backstop */
    size_t arglen;
    unsigned char arg[T_ARG_MAX];
};

static pid_t t_spawner_pid = -1;
static int t_req_fd = -1, t_resp_fd = -1;
static pid_t t_pids[T_MAX_PIDS];
static int t_npids;
static pid_t t_test_pid;

static int t_read_full(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int t_write_full(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Seconds a child may live (its alarm()); a soak raises it before spawning. */
static unsigned t_child_alarm_s = T_CHILD_ALARM_S;

/* In a grandchild: wait until the test process adopted us, then die with it. */
static void t_child_start(unsigned alarm_s)
{
    for (int i = 0; i < 5000 && getppid() != t_test_pid; i++)
        t_sleep_us(200);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != t_test_pid)
        _exit(98);
    alarm(alarm_s);
}

static void t_spawner_main(int req, int resp)
{
    struct t_request r;
    signal(SIGCHLD, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    while (t_read_full(req, &r, sizeof r) == 0) {
        int p[2];
        if (pipe(p) != 0)
            _exit(97);
        pid_t mid = fork();
        if (mid == 0) {
            close(p[0]);
            pid_t pid = fork();
            if (pid == 0) {
                close(p[1]);
                close(req);
                close(resp);
                unsetenv("SHMQ_CRASH_AT");
                unsetenv("SHMQ_CRASH_SIGNAL");
                unsetenv("SHMQ_CRASH_SKIP");
                if (r.crash_at[0]) {
                    char skip[16];
                    snprintf(skip, sizeof skip, "%d", r.crash_skip);
                    setenv("SHMQ_CRASH_AT", r.crash_at, 1);
                    setenv("SHMQ_CRASH_SKIP", skip, 1);
                    if (r.crash_stop)
                        setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
                }
                t_child_start(r.alarm_s);
                int rc = r.fn(r.arg);
                fflush(NULL);
                _exit(rc & 0xff);
            }
            t_write_full(p[1], &pid, sizeof pid);
            _exit(0); /* the grandchild is adopted by the subreaper, the test process */
        }
        close(p[1]);
        pid_t pid = -1;
        if (mid < 0 || t_read_full(p[0], &pid, sizeof pid) != 0)
            pid = -1;
        close(p[0]);
        if (mid > 0)
            waitpid(mid, NULL, 0); /* once it is reaped, its child has been reparented */
        if (t_write_full(resp, &pid, sizeof pid) != 0)
            break;
    }
    _exit(0);
}

/* The suites' .init: become a subreaper and fork the spawner before any library call. */
static T_UNUSED void t_setup(void)
{
    unsetenv("SHMQ_CRASH_AT");
    unsetenv("SHMQ_CRASH_SIGNAL");
    unsetenv("SHMQ_CRASH_SKIP");
    t_test_pid = getpid();
    t_arena = mmap(NULL, T_ARENA_SIZE, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cr_assert(t_arena != MAP_FAILED, "mmap arena: %s", strerror(errno));
    t_arena_used = 0;
    cr_assert(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "subreaper: %s", strerror(errno));
    int req[2], resp[2];
    cr_assert(pipe(req) == 0 && pipe(resp) == 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(req[1]);
        close(resp[0]);
        t_spawner_main(req[0], resp[1]);
    }
    close(req[0]);
    close(resp[1]);
    t_spawner_pid = pid;
    t_req_fd = req[1];
    t_resp_fd = resp[0];
}

static T_UNUSED void t_track(pid_t pid)
{
    for (int i = 0; i < t_npids; i++)
        if (t_pids[i] == 0) {
            t_pids[i] = pid;
            return;
        }
    cr_assert(t_npids < T_MAX_PIDS, "too many children");
    t_pids[t_npids++] = pid;
}

static T_UNUSED void t_untrack(pid_t pid)
{
    for (int i = 0; i < t_npids; i++)
        if (t_pids[i] == pid)
            t_pids[i] = 0;
}

/*
 * Run fn(copy of arg) in a new process, a child of the test process. crash_at: a crash point
 * name or NULL; stop: SIGSTOP instead of SIGKILL there; skip: matches to pass first.
 */
static T_UNUSED pid_t t_spawn_crash(int (*fn)(void *), const void *arg, size_t arglen,
                                    const char *crash_at, int stop, int skip)
{
    struct t_request r;
    memset(&r, 0, sizeof r);
    cr_assert(arglen <= T_ARG_MAX);
    r.fn = fn;
    if (crash_at)
        snprintf(r.crash_at, sizeof r.crash_at, "%s", crash_at);
    r.crash_stop = stop;
    r.crash_skip = skip;
    r.alarm_s = t_child_alarm_s;
    r.arglen = arglen;
    if (arglen)
        memcpy(r.arg, arg, arglen);
    cr_assert(t_spawner_pid > 0, "t_setup() did not run");
    cr_assert(t_write_full(t_req_fd, &r, sizeof r) == 0, "spawner gone");
    pid_t pid = -1;
    cr_assert(t_read_full(t_resp_fd, &pid, sizeof pid) == 0 && pid > 0, "spawn failed");
    t_track(pid);
    return pid;
}

static T_UNUSED pid_t t_spawn(int (*fn)(void *), const void *arg, size_t arglen)
{
    return t_spawn_crash(fn, arg, arglen, NULL, 0, 0);
}

/*
 * Wait up to timeout_ms for pid to change state (flags 0: end; WUNTRACED: or stop).
 * 0 and *status on a change; -ETIMEDOUT. A child that ended is untracked.
 */
static T_UNUSED int t_wait(pid_t pid, int timeout_ms, int flags, int *status)
{
    int64_t end = t_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG | flags);
        if (r == pid) {
            if (WIFEXITED(st) || WIFSIGNALED(st))
                t_untrack(pid);
            if (status)
                *status = st;
            return 0;
        }
        if (r < 0 && errno != EINTR)
            return -errno;
        if (t_now_ms() >= end)
            return -ETIMEDOUT;
        t_sleep_us(500);
    }
}

static T_UNUSED const char *t_status_str(int st, char *buf, size_t size)
{
    if (WIFEXITED(st))
        snprintf(buf, size, "exited with %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, size, "killed by %s", strsignal(WTERMSIG(st)));
    else if (WIFSTOPPED(st))
        snprintf(buf, size, "stopped by %s", strsignal(WSTOPSIG(st)));
    else
        snprintf(buf, size, "status 0x%x", st);
    return buf;
}

/* Kill and reap. */
static T_UNUSED void t_kill_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    kill(pid, SIGCONT);
    waitpid(pid, NULL, 0);
    t_untrack(pid);
}

/* Print pid's stacks (gdb, if installed) and its /proc state: diagnostics for a hang. */
static T_UNUSED void t_diag_stack(pid_t pid)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "cat /proc/%d/stat >&2; command -v gdb >/dev/null && gdb -batch -p %d -ex "
             "'thread apply all bt' 2>&1 | grep -E '^#|^Thread' | head -40 >&2",
             (int)pid, (int)pid);
    fflush(NULL);
    if (system(cmd) < 0)
        perror("system");
}

/* Assert that pid exits with 0 within timeout_ms (killed otherwise). */
#define t_assert_exit0(pid, timeout_ms, what)                                                      \
    do {                                                                                           \
        int t_st_ = 0;                                                                             \
        char t_b_[96];                                                                             \
        int t_rc_ = t_wait((pid), (timeout_ms), 0, &t_st_);                                        \
        if (t_rc_ != 0) {                                                                          \
            t_diag_stack(pid);                                                                     \
            t_kill_reap(pid);                                                                      \
        }                                                                                          \
        cr_assert_eq(t_rc_, 0, "%s: pid %d did not end within %d ms", (what), (int)(pid),          \
                     (int)(timeout_ms));                                                           \
        cr_assert(WIFEXITED(t_st_) && WEXITSTATUS(t_st_) == 0, "%s: pid %d %s", (what),            \
                  (int)(pid), t_status_str(t_st_, t_b_, sizeof t_b_));                             \
    } while (0)

/* The suites' .fini: kill every child, stop the spawner, unlink the queues. */
static T_UNUSED void t_teardown(void)
{
    for (int i = 0; i < t_npids; i++)
        if (t_pids[i] > 0) {
            kill(t_pids[i], SIGKILL);
            kill(t_pids[i], SIGCONT);
            waitpid(t_pids[i], NULL, 0);
            t_pids[i] = 0;
        }
    t_npids = 0;
    if (t_req_fd >= 0) {
        close(t_req_fd);
        close(t_resp_fd);
        t_req_fd = t_resp_fd = -1;
    }
    if (t_spawner_pid > 0) {
        waitpid(t_spawner_pid, NULL, 0);
        t_spawner_pid = -1;
    }
    while (waitpid(-1, NULL, WNOHANG) > 0) /* anything else adopted */
        ;
    for (int i = 0; i < t_nnames; i++)
        shmq_unlink(t_names[i]);
    t_nnames = 0;
}

/* ---------------------------------------------------------------- messages and the book */

#define T_PAYLOAD_MAX 100

struct t_wire {
    uint32_t producer, seq, len, csum;
    unsigned char payload[T_PAYLOAD_MAX];
};
#define T_WIRE_HDR 16u

static T_UNUSED uint32_t t_csum(const unsigned char *p, uint32_t len, uint32_t producer,
                                uint32_t seq)
{
    uint32_t h = 2166136261u ^ producer ^ (seq * 2654435761u);
    for (uint32_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* Fill w for (producer, seq); returns the bytes to publish. */
static T_UNUSED size_t t_fill(struct t_wire *w, uint32_t producer, uint32_t seq)
{
    uint64_t s = ((uint64_t)producer << 32 | seq) * 0x9e3779b97f4a7c15ull + 7;
    w->producer = producer;
    w->seq = seq;
    w->len = (uint32_t)(t_rand(&s) % (T_PAYLOAD_MAX + 1));
    for (uint32_t i = 0; i < w->len; i++)
        w->payload[i] = (unsigned char)t_rand(&s);
    w->csum = t_csum(w->payload, w->len, producer, seq);
    return T_WIRE_HDR + w->len;
}

/* Check a delivered payload; 0 and (producer, seq), or -1 if it is corrupt. */
static T_UNUSED int t_check(const void *data, size_t len, uint32_t *producer, uint32_t *seq)
{
    struct t_wire w;
    if (!data || len < T_WIRE_HDR || len > sizeof w)
        return -1;
    memcpy(&w, data, len);
    if (w.len != len - T_WIRE_HDR || w.csum != t_csum(w.payload, w.len, w.producer, w.seq))
        return -1;
    struct t_wire ref;
    t_fill(&ref, w.producer, w.seq);
    if (ref.len != w.len || memcmp(ref.payload, w.payload, w.len) != 0)
        return -1;
    *producer = w.producer;
    *seq = w.seq;
    return 0;
}

struct t_rec {
    _Atomic uint32_t pub_begun, published; /* publish called / returned 0 */
    _Atomic uint32_t delivered;            /* receive returned it */
    _Atomic uint32_t ack_begun, acked;     /* ack called / returned 0 */
    _Atomic uint32_t ack_stale;            /* ack returned -ESTALE */
    _Atomic uint32_t nacked;               /* nack returned 0 */
    _Atomic uint32_t max_attempt;
    _Atomic uint32_t ack_killed; /* its acker was killed inside shmq_ack, or got -EIDRM: it may count */
};

struct t_book {
    uint32_t producers, per_producer;
    _Atomic uint64_t corrupt, out_of_range, other_errors;
    _Atomic uint64_t estale_receive, reopen;
    struct t_rec rec[]; /* producers * per_producer */
};

static T_UNUSED struct t_book *t_book_new(uint32_t producers, uint32_t per_producer)
{
    struct t_book *b =
        t_shared(sizeof(struct t_book) + sizeof(struct t_rec) * producers * per_producer);
    b->producers = producers;
    b->per_producer = per_producer;
    return b;
}

static T_UNUSED struct t_rec *t_rec_of(struct t_book *b, uint32_t producer, uint32_t seq)
{
    if (producer >= b->producers || seq >= b->per_producer)
        return NULL;
    return &b->rec[(size_t)producer * b->per_producer + seq];
}

/* Record a delivery: check it, count it. The record, or NULL (corrupt / out of range). */
static T_UNUSED struct t_rec *t_book_delivery(struct t_book *b, const shmq_msg_t *m)
{
    uint32_t p, s;
    if (t_check(m->data, m->len, &p, &s) != 0) {
        atomic_fetch_add(&b->corrupt, 1);
        return NULL;
    }
    struct t_rec *r = t_rec_of(b, p, s);
    if (!r) {
        atomic_fetch_add(&b->out_of_range, 1);
        return NULL;
    }
    atomic_fetch_add(&r->delivered, 1);
    uint32_t a = atomic_load(&r->max_attempt);
    while (m->attempt > a && !atomic_compare_exchange_weak(&r->max_attempt, &a, m->attempt))
        ;
    return r;
}

/* Publish (producer, seq) with the book kept: 0 or the error of shmq_publish_timed. */
static T_UNUSED int t_publish(shmq_t *q, struct t_book *b, uint32_t producer, uint32_t seq,
                              int timeout_ms)
{
    struct t_wire w;
    size_t n = t_fill(&w, producer, seq);
    struct t_rec *r = t_rec_of(b, producer, seq);
    atomic_fetch_add(&r->pub_begun, 1);
    int rc = shmq_publish_timed(q, &w, n, NULL, timeout_ms);
    if (rc == 0)
        atomic_fetch_add(&r->published, 1);
    return rc;
}

/* Ack with the book kept. */
static T_UNUSED int t_ack(shmq_consumer_t *c, struct t_rec *r, const shmq_msg_t *m)
{
    if (r)
        atomic_fetch_add(&r->ack_begun, 1);
    int rc = shmq_ack(c, m);
    if (r && rc == 0)
        atomic_fetch_add(&r->acked, 1);
    else if (r && rc == -ESTALE)
        atomic_fetch_add(&r->ack_stale, 1);
    else if (r && rc == -EIDRM) /* a rebuild raced the ack: it may have counted (shmq.h) */
        atomic_fetch_add(&r->ack_killed, 1);
    return rc;
}

struct t_tally {
    uint64_t published, lost, duplicates, double_acked, delivered, acked_ok, ack_begun, nacked;
    uint64_t pub_begun, unpublished_delivered, stale_acks, unasked_redeliveries;
    uint64_t killed_in_ack; /* published, never seen acked: the acker died inside shmq_ack */
    long first_lost;        /* index of the first lost record, -1 if none */
};

static T_UNUSED struct t_tally t_book_tally(struct t_book *b)
{
    struct t_tally t;
    memset(&t, 0, sizeof t);
    t.first_lost = -1;
    size_t n = (size_t)b->producers * b->per_producer;
    for (size_t i = 0; i < n; i++) {
        struct t_rec *r = &b->rec[i];
        uint32_t d = atomic_load(&r->delivered), a = atomic_load(&r->acked);
        t.pub_begun += atomic_load(&r->pub_begun);
        t.delivered += d;
        t.acked_ok += a;
        t.ack_begun += atomic_load(&r->ack_begun);
        t.nacked += atomic_load(&r->nacked);
        t.stale_acks += atomic_load(&r->ack_stale);
        uint32_t nk = atomic_load(&r->nacked);
        if (d > 1)
            t.duplicates += d - 1;
        if (d > 1 + nk)
            t.unasked_redeliveries += d - 1 - nk; /* not explained by a nack */
        if (a > 1)
            t.double_acked++;
        if (atomic_load(&r->published)) {
            t.published++;
            if (a == 0 && atomic_load(&r->ack_killed)) {
                t.killed_in_ack++; /* the ack may have taken effect: not a loss */
            } else if (a == 0) {
                t.lost++;
                if (t.first_lost < 0)
                    t.first_lost = (long)i;
            }
        } else if (d) {
            t.unpublished_delivered++;
        }
    }
    return t;
}

/* ---------------------------------------------------------------- maintenance */

static T_UNUSED void t_report_add(shmq_maint_report_t *sum, const shmq_maint_report_t *r)
{
    sum->procs_dead += r->procs_dead;
    sum->procs_hung += r->procs_hung;
    sum->reclaimed += r->reclaimed;
    sum->deadline_expired += r->deadline_expired;
    sum->orphans_requeued += r->orphans_requeued;
    sum->reservations_freed += r->reservations_freed;
    sum->delayed_fired += r->delayed_fired;
    sum->dead_lettered += r->dead_lettered;
    sum->fenced_released += r->fenced_released;
    sum->checkpointed += r->checkpointed;
    sum->copied_out += r->copied_out;
    sum->pinned = r->pinned; /* a gauge: the last pass's */
}

/* One maintenance pass, asserted to succeed, added to *sum (may be NULL). */
static T_UNUSED void t_maintain(shmq_t *q, shmq_maint_report_t *sum)
{
    shmq_maint_report_t r;
    int rc = shmq_maintain(q, &r);
    cr_assert_eq(rc, 0, "shmq_maintain: %s", shmq_strerror(rc));
    if (sum)
        t_report_add(sum, &r);
}

/* Is the queue quiet: every slot FREE (so nothing READY, INFLIGHT, RESERVED, FENCED...)? */
static T_UNUSED bool t_quiet(const shmq_stats_t *st, uint32_t capacity)
{
    return st->ready == 0 && st->inflight == 0 && st->reserved == 0 && st->delayed == 0 &&
           st->dead == 0 && st->free == capacity;
}

/* Maintain every 10 ms until the queue is quiet or timeout_ms passed; the last stats. */
static T_UNUSED shmq_stats_t t_settle(shmq_t *q, uint32_t capacity, int timeout_ms,
                                      shmq_maint_report_t *sum)
{
    shmq_stats_t st;
    int64_t end = t_now_ms() + timeout_ms;
    for (;;) {
        t_maintain(q, sum);
        cr_assert_eq(shmq_stats(q, &st), 0);
        if (t_quiet(&st, capacity) || t_now_ms() >= end)
            return st;
        t_sleep_ms(10);
    }
}

#define T_STATS_FMT                                                                                \
    "free %u ready %u inflight %u reserved %u delayed %u dead %u (fenced %u) | published %llu "    \
    "delivered %llu acked %llu nacked %llu redelivered %llu reclaimed %llu dead_lettered %llu"
#define T_STATS_ARGS(st, cap)                                                                      \
    (st).free, (st).ready, (st).inflight, (st).reserved, (st).delayed, (st).dead,                  \
        (cap) - (st).free - (st).ready - (st).inflight - (st).reserved - (st).delayed - (st).dead, \
        (unsigned long long)(st).published, (unsigned long long)(st).delivered,                    \
        (unsigned long long)(st).acked, (unsigned long long)(st).nacked,                           \
        (unsigned long long)(st).redelivered, (unsigned long long)(st).reclaimed,                  \
        (unsigned long long)(st).dead_lettered

/*
 * The full cycle: every slot can be claimed (by a cursor or from the free ring) and every
 * message found on the ready ring. Publishes capacity messages (retrying a bounded while with maintenance, in case
 * an orphan's grace period is still running), receives and acks them all, and settles. A slot
 * lost from its ring (a FREE or READY orphan that repair never returns) fails it.
 */
static T_UNUSED void t_full_cycle(shmq_t *q, uint32_t capacity)
{
    shmq_consumer_t *c;
    int rc = shmq_consumer_open(q, "full-cycle", &c);
    cr_assert_eq(rc, 0, "consumer_open: %s", shmq_strerror(rc));
    int64_t end = t_now_ms() + 3000;
    uint32_t published = 0, received = 0;
    const char msg[] = "full-cycle";
    while (published < capacity) {
        rc = shmq_publish(q, msg, sizeof msg, NULL);
        if (rc == 0) {
            published++;
            continue;
        }
        cr_assert_eq(rc, -EAGAIN, "publish: %s", shmq_strerror(rc));
        shmq_stats_t st;
        shmq_stats(q, &st);
        cr_assert(
            t_now_ms() < end,
            "full cycle: only %u of %u slots could be claimed (a slot is stuck): " T_STATS_FMT,
            published, capacity, T_STATS_ARGS(st, capacity));
        t_maintain(q, NULL);
        t_sleep_ms(10);
    }
    while (received < capacity) {
        shmq_msg_t m;
        rc = shmq_receive(c, &m, 0);
        if (rc == 0) {
            if (m.len == sizeof msg && memcmp(m.data, msg, sizeof msg) == 0)
                received++;
            cr_assert_eq(shmq_ack(c, &m), 0);
            continue;
        }
        cr_assert_eq(rc, -EAGAIN, "receive: %s", shmq_strerror(rc));
        shmq_stats_t st;
        shmq_stats(q, &st);
        cr_assert(t_now_ms() < end,
                  "full cycle: only %u of %u messages could be received: " T_STATS_FMT, received,
                  capacity, T_STATS_ARGS(st, capacity));
        t_maintain(q, NULL);
        t_sleep_ms(10);
    }
    cr_assert_eq(shmq_consumer_close(c), 0);
    shmq_stats_t st = t_settle(q, capacity, 2000, NULL);
    cr_assert(t_quiet(&st, capacity), "after the full cycle: " T_STATS_FMT,
              T_STATS_ARGS(st, capacity));
}

/* Run the CLI, if it was built, with args (diagnostics for a failure): its first lines. */
static T_UNUSED void t_cli(const char *args, int lines)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "for b in ./shmq ../shmq ../../shmq; do [ -x $b ] && exec $b %s; done 2>&1 | "
             "head -%d >&2",
             args, lines);
    fflush(NULL);
    if (system(cmd) < 0)
        perror("system");
}

/* Print the segment with the CLI (diagnostics for a failure). */
static T_UNUSED void t_dump(const char *name)
{
    char args[128];
    snprintf(args, sizeof args, "dump %s", name);
    t_cli(args, 80);
}

#endif
