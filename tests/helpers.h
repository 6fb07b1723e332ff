/*
 * helpers.h - shared helpers of the shmq tests: unique queue names, forked children with
 * bounded waits, a start gate, shared result memory, checksums and clocks.
 *
 * Every test registers the queues it names (h_qname()) and the children it forks (h_fork());
 * h_cleanup(), run as the suite's .fini, kills every child still alive (stopped ones too) and
 * unlinks every queue, so a failing test leaves nothing behind. Children never return into
 * Criterion: they end with _exit(), and report through their exit code or shared memory.
 *
 * Children that must hit a crash point (test_stall.c) are forked through h_fork_gated() before
 * the test process makes its first library call. A crash point reads SHMQ_CRASH_AT at its first
 * hit in each process; until it also checked the pid, a child forked after its parent hit a
 * crash point inherited the parent's "no target" and ran past its point (seen under ctest -j3
 * on a loaded machine: 'the child was not killed at ...', exit 12; which call of the parent
 * passed a crash point before the fork there was not found).
 */
#ifndef SHMQ_TEST_HELPERS_H
#define SHMQ_TEST_HELPERS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq/shmq.h"

#define H_UNUSED __attribute__((unused))

#define H_MAX_NAMES 16
#define H_MAX_PIDS 64

static char h_state_dir[64];
static char h_names[H_MAX_NAMES][SHMQ_NAME_MAX + 1];
static int h_nnames;
static pid_t h_pids[H_MAX_PIDS];
static int h_gate_fd[H_MAX_PIDS] = {-1};
static int h_npids;

/* CLOCK_MONOTONIC in milliseconds. */
static H_UNUSED int64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static H_UNUSED void h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/*
 * The state directory where queue logs (durability PROCESS/SYNC) go: $SHMQ_STATE_DIR if set
 * (ctest sets it), else a private /tmp/shmq-test-XXXXXX made for this test, exported to forked
 * children and removed by h_cleanup(), so a test run by hand never writes the real state
 * directory or leaves logs behind.
 */
static H_UNUSED const char *h_state_dir_path(void)
{
    const char *env = getenv("SHMQ_STATE_DIR");
    if (env && *env)
        return env;
    snprintf(h_state_dir, sizeof h_state_dir, "/tmp/shmq-test-XXXXXX");
    cr_assert_not_null(mkdtemp(h_state_dir), "mkdtemp: %s", strerror(errno));
    setenv("SHMQ_STATE_DIR", h_state_dir, 1);
    return h_state_dir;
}

/* rm -r path (no symlinks followed). */
static H_UNUSED void h_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                h_remove_tree(sub);
            else
                unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

/*
 * A unique queue name "t-TAG-PID-N" (at most SHMQ_NAME_MAX bytes), registered for h_cleanup().
 * A stale segment of that name (from a killed earlier run) is unlinked first. The first call
 * sets up the test's private state directory.
 */
static H_UNUSED const char *h_qname(const char *tag)
{
    h_state_dir_path();
    cr_assert(h_nnames < H_MAX_NAMES, "too many queue names in one test");
    char *buf = h_names[h_nnames];
    snprintf(buf, SHMQ_NAME_MAX + 1, "t-%.40s-%d-%d", tag, (int)getpid(), h_nnames);
    h_nnames++;
    shmq_unlink(buf);
    return buf;
}

/* "/dev/shm/shmq.NAME" into buf. */
static H_UNUSED void h_shm_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "/dev/shm/shmq.%s", name);
}

/* Write len bytes at offset off of the file at path (damaging a segment or a log file). */
static H_UNUSED void h_write_at(const char *path, off_t off, const void *p, size_t len)
{
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert(pwrite(fd, p, len, off) == (ssize_t)len, "pwrite %s: %s", path, strerror(errno));
    close(fd);
}

static H_UNUSED void h_track(pid_t pid, int gate_fd)
{
    for (int i = 0; i < h_npids; i++) {
        if (h_pids[i] == 0 && h_gate_fd[i] < 0) { /* reuse the entry of a reaped child */
            h_pids[i] = pid;
            h_gate_fd[i] = gate_fd;
            return;
        }
    }
    cr_assert(h_npids < H_MAX_PIDS, "too many live children in one test");
    h_pids[h_npids] = pid;
    h_gate_fd[h_npids] = gate_fd;
    h_npids++;
}

static H_UNUSED void h_untrack(pid_t pid)
{
    for (int i = 0; i < h_npids; i++)
        if (h_pids[i] == pid)
            h_pids[i] = 0;
}

/* Kill (SIGKILL) and reap every child still tracked, close gates, unlink every named queue. */
static H_UNUSED void h_cleanup(void)
{
    for (int i = 0; i < h_npids; i++) {
        if (h_pids[i] > 0) {
            kill(h_pids[i], SIGKILL);
            waitpid(h_pids[i], NULL, 0);
            h_pids[i] = 0;
        }
        if (h_gate_fd[i] >= 0) {
            close(h_gate_fd[i]);
            h_gate_fd[i] = -1;
        }
    }
    h_npids = 0;
    for (int i = 0; i < h_nnames; i++)
        shmq_unlink(h_names[i]);
    h_nnames = 0;
    if (h_state_dir[0]) { /* made by h_state_dir_path(): ours to remove */
        h_remove_tree(h_state_dir);
        unsetenv("SHMQ_STATE_DIR");
        h_state_dir[0] = 0;
    }
}

/* Body of a child: returns its exit code (0 = success). */
typedef int (*h_child_fn)(void *arg);

/* Fork a child that runs fn(arg) and _exit()s with its result. */
static H_UNUSED pid_t h_fork(h_child_fn fn, void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int rc = fn(arg);
        _exit(rc & 0xff);
    }
    h_track(pid, -1);
    return pid;
}

/*
 * Fork a child that waits at a gate (a pipe) until h_open_gate(pid), then runs fn(arg).
 * Call it before the test process makes any library call that could pass a crash point.
 * A child whose parent goes away without opening the gate exits with 99.
 */
static H_UNUSED pid_t h_fork_gated(h_child_fn fn, void *arg)
{
    int p[2];
    cr_assert(pipe(p) == 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[1]);
        char c;
        ssize_t n;
        while ((n = read(p[0], &c, 1)) == -1 && errno == EINTR)
            ;
        close(p[0]);
        if (n != 1)
            _exit(99);
        int rc = fn(arg);
        _exit(rc & 0xff);
    }
    close(p[0]);
    h_track(pid, p[1]);
    return pid;
}

/* Let a gated child run. */
static H_UNUSED void h_open_gate(pid_t pid)
{
    for (int i = 0; i < h_npids; i++) {
        if (h_pids[i] == pid && h_gate_fd[i] >= 0) {
            char c = 'g';
            cr_assert(write(h_gate_fd[i], &c, 1) == 1, "gate write: %s", strerror(errno));
            close(h_gate_fd[i]);
            h_gate_fd[i] = -1;
            return;
        }
    }
    cr_assert_fail("no gate for pid %d", (int)pid);
}

/*
 * Wait up to timeout_ms for pid to change state. flags: 0 (terminated) or WUNTRACED (also
 * stopped). 0 and *status on a change; -ETIMEDOUT otherwise (the child is left as it is).
 * A terminated child is untracked. The loop polls waitpid(WNOHANG) every millisecond: a
 * bounded wait, not a timing assumption.
 */
static H_UNUSED int h_waitpid(pid_t pid, int timeout_ms, int flags, int *status)
{
    int64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG | flags);
        if (r == pid) {
            if (WIFEXITED(st) || WIFSIGNALED(st))
                h_untrack(pid);
            if (status)
                *status = st;
            return 0;
        }
        if (r == -1 && errno != EINTR)
            return -errno;
        if (h_now_ms() >= end)
            return -ETIMEDOUT;
        h_sleep_ms(1);
    }
}

/* Describe a wait status for failure messages. */
static H_UNUSED const char *h_status_str(int st, char *buf, size_t size)
{
    if (WIFEXITED(st))
        snprintf(buf, size, "exited with %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else if (WIFSTOPPED(st))
        snprintf(buf, size, "stopped by signal %d", WSTOPSIG(st));
    else
        snprintf(buf, size, "status 0x%x", st);
    return buf;
}

/* Assert that pid exits normally with code 0 within timeout_ms (it is killed otherwise). */
#define h_assert_child_ok(pid, timeout_ms, what)                                                   \
    do {                                                                                           \
        int h_st_ = 0;                                                                             \
        char h_buf_[96];                                                                           \
        int h_rc_ = h_waitpid((pid), (timeout_ms), 0, &h_st_);                                     \
        if (h_rc_ == -ETIMEDOUT) {                                                                 \
            kill((pid), SIGKILL);                                                                  \
            waitpid((pid), NULL, 0);                                                               \
            h_untrack(pid);                                                                        \
        }                                                                                          \
        cr_assert_eq(h_rc_, 0, "%s: child %d did not finish within %d ms", (what), (int)(pid),     \
                     (int)(timeout_ms));                                                           \
        cr_assert(WIFEXITED(h_st_) && WEXITSTATUS(h_st_) == 0, "%s: child %s", (what),             \
                  h_status_str(h_st_, h_buf_, sizeof h_buf_));                                     \
    } while (0)

/* Wait until pid is stopped (SIGSTOP from a crash point): 0, or -ETIMEDOUT / -ECHILD. */
static H_UNUSED int h_wait_stopped(pid_t pid, int timeout_ms, int *status)
{
    int st = 0;
    int rc = h_waitpid(pid, timeout_ms, WUNTRACED, &st);
    if (status)
        *status = st;
    if (rc)
        return rc;
    return WIFSTOPPED(st) ? 0 : -ECHILD;
}

/* The state letter of /proc/PID/stat ('R', 'S', 'T', ...), or 0. */
static H_UNUSED char h_proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/*
 * Wait up to timeout_ms until pid sleeps in the kernel ('S': a blocking receive or publish
 * gone to its futex). Returns 0, or -ETIMEDOUT.
 */
static H_UNUSED int h_wait_sleeping(pid_t pid, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        if (h_proc_state(pid) == 'S')
            return 0;
        if (h_now_ms() >= end)
            return -ETIMEDOUT;
        h_sleep_ms(1);
    }
}

/* Zeroed memory shared with forked children (MAP_SHARED | MAP_ANONYMOUS). */
static H_UNUSED void *h_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(p != MAP_FAILED, "mmap shared: %s", strerror(errno));
    return p;
}

/* FNV-1a, 32 bits. */
static H_UNUSED uint32_t h_fnv1a(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* xorshift64*: a cheap deterministic PRNG. */
static H_UNUSED uint64_t h_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

/* A small queue config: capacity slots of max_msg_size bytes, max_procs entries. */
static H_UNUSED shmq_config_t h_small_config(uint32_t capacity, uint32_t max_msg_size,
                                             uint32_t max_procs)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.max_msg_size = max_msg_size;
    cfg.max_procs = max_procs;
    return cfg;
}

/* Assert that an shmq call returned want, printing both codes as text. */
/* A logged queue (PROCESS, 64 KiB log files) of capacity slots of 64 bytes whose deliveries
 * only a test takes back: ack deadline 10 min, heartbeat timeout 1 min. */
static H_UNUSED shmq_config_t h_log_config(uint32_t capacity)
{
    shmq_config_t cfg = h_small_config(capacity, 64, 64);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = 64u << 10;
    cfg.ack_deadline_ms = 600000;
    cfg.heartbeat_timeout_ms = 60000;
    return cfg;
}

#define h_assert_rc(expr, want)                                                                    \
    do {                                                                                           \
        int h_got_ = (expr);                                                                       \
        int h_want_ = (want);                                                                      \
        cr_assert_eq(h_got_, h_want_, "%s returned %d (%s), expected %d (%s)", #expr, h_got_,      \
                     shmq_strerror(h_got_), h_want_, shmq_strerror(h_want_));                      \
    } while (0)

#endif
