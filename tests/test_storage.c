/*
 * test_storage.c - full or failing storage is an error return, never a signal, never a false
 * success (issue 15): process limits (RLIMIT_FSIZE, RLIMIT_AS) and small tmpfs mounts for
 * /dev/shm and the log directory in a private mount namespace.
 *
 * Each case runs in a forked child, so a signal (SIGBUS, SIGXFSZ) shows as the child's death
 * and the limits and mounts stay in the child. The tmpfs cases need `unshare(CLONE_NEWNS)` and
 * mount(2) (root or a user namespace); they skip with a line saying so when the machine cannot.
 */
#include "helpers.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "inspect.h"
#include "io.h"
#include "segment.h"
#include "wal.h"

TestSuite(storage, .fini = h_cleanup, .timeout = 120);

/* Exit codes of the children: 0 ok, else which step failed (printed by the parent). */
#define CHECK(cond, code)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child step %d: %s\n", (code), #cond);                                 \
            return (code);                                                                         \
        }                                                                                          \
    } while (0)

static bool segment_exists(const char *name)
{
    char path[128];
    struct stat st;
    h_shm_path(name, path, sizeof(path));
    return stat(path, &st) == 0;
}

/* Files in dir whose name contains part (0 if dir is missing). */
static int count_files(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strstr(e->d_name, part) != NULL;
    closedir(d);
    return n;
}

static void log_dir_of(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", h_state_dir_path(), name);
}

/* A SYNC queue of 16 slots with the smallest log files, created (the group commit tests). */
static shmq_t *create_sync_queue(const char *name)
{
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_SYNC;
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    return q;
}

/* ---- RLIMIT_FSIZE: -EFBIG, no SIGXFSZ, nothing half-made. ---- */

struct limit_arg {
    const char *name;
    char dir[256];
};

static int create_over_fsize(void *p)
{
    struct limit_arg *a = p;
    struct rlimit rl = {64 << 10, 64 << 10};
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, 1);
    shmq_config_t cfg = h_small_config(1024, 1024, 8); /* a segment of > 1 MiB */
    shmq_t *q = NULL;
    CHECK(shmq_create(a->name, &cfg, &q) == -EFBIG, 2);
    CHECK(q == NULL && !segment_exists(a->name), 3);
    return 0;
}

Test(storage, create_past_the_file_size_limit_is_EFBIG_and_leaves_nothing)
{
    struct limit_arg a = {.name = h_qname("st-fsize")};
    h_assert_child_ok(h_fork(create_over_fsize, &a), 60000, "create under RLIMIT_FSIZE");
    cr_assert(!segment_exists(a.name));
}

static int publish_over_fsize(void *p)
{
    struct limit_arg *a = p;
    shmq_t *q;
    CHECK(shmq_open(a->name, &q) == 0, 1);
    struct rlimit rl = {64 << 10, 64 << 10}; /* below one log file */
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, 2);
    CHECK(shmq_publish(q, "m", 1, NULL) == -EFBIG, 3);
    CHECK(count_files(a->dir, "tmp") == 0, 4);
    rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0 || errno == EPERM, 5);
    shmq_close(q);
    return 0;
}

Test(storage, publish_whose_log_file_passes_the_file_size_limit_is_EFBIG)
{
    struct limit_arg a = {.name = h_qname("st-fsize-log")};
    log_dir_of(a.name, a.dir, sizeof(a.dir));
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.wal_file_size = 1u << 20;
    shmq_t *q;
    h_assert_rc(shmq_create(a.name, &cfg, &q), 0);
    h_assert_child_ok(h_fork(publish_over_fsize, &a), 60000, "publish under RLIMIT_FSIZE");
    /* the limit was the child's: here the same publish works */
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* ---- RLIMIT_AS: a log file that cannot be mapped is -ENOMEM, not -EIO. ---- */

/* The process's virtual size now (bytes), from /proc/self/statm. */
static uint64_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int publish_over_as(void *p)
{
    struct limit_arg *a = p;
    shmq_t *q;
    CHECK(shmq_open(a->name, &q) == 0, 1);
    uint64_t lim = vm_size() + (8u << 20); /* room for small things, not for a 64 MiB file */
    struct rlimit rl = {lim, lim};
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0, 2);
    int rc = shmq_publish(q, "m", 1, NULL);
    if (rc != -ENOMEM)
        fprintf(stderr, "publish under RLIMIT_AS returned %d (%s)\n", rc, shmq_strerror(rc));
    CHECK(rc == -ENOMEM, 3);
    shmq_close(q);
    return 0;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define H_SANITIZED 1 /* the sanitizers reserve terabytes of address space: no RLIMIT_AS */
#else
#define H_SANITIZED 0
#endif

Test(storage, a_log_file_that_cannot_be_mapped_is_ENOMEM)
{
    if (H_SANITIZED)
        cr_skip_test("RLIMIT_AS cannot be set under a sanitizer (its shadow memory)");
    struct limit_arg a = {.name = h_qname("st-as")};
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.wal_file_size = 64u << 20;
    shmq_t *q;
    h_assert_rc(shmq_create(a.name, &cfg, &q), 0);
    h_assert_child_ok(h_fork(publish_over_as, &a), 60000, "publish under RLIMIT_AS");
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* ---- Small tmpfs mounts in a private mount namespace. ---- */

/* Make this (child) process's mounts private and put a tmpfs of size_kb KiB on path: 0, or 77
 * when the machine cannot (no unshare, no mount permission): the parent skips then. */
static int private_tmpfs_mode(const char *path, unsigned size_kb, unsigned mode)
{
    char opt[64];
    if (unshare(CLONE_NEWNS) != 0)
        return 77;
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return 77;
    snprintf(opt, sizeof(opt), "size=%uk,mode=%o", size_kb, mode);
    return mount("shmq-test", path, "tmpfs", 0, opt) == 0 ? 0 : 77;
}

static int private_tmpfs(const char *path, unsigned size_kb)
{
    return private_tmpfs_mode(path, size_kb, 01777);
}

/* Fill the file system holding dir: write a file there until ENOSPC. Its path into out. */
static int fill_fs(const char *dir, char *out, size_t size)
{
    static int n;
    snprintf(out, size, "%s/filler-%d-%d", dir, (int)getpid(), n++);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    static char buf[4096];
    while (write(fd, buf, sizeof(buf)) > 0) {
    }
    int err = errno == ENOSPC ? 0 : -errno;
    close(fd);
    return err;
}

/* Run fn in a child; skip the test when it says the machine cannot (exit 77). */
static void run_or_skip(h_child_fn fn, void *arg, const char *what)
{
    pid_t pid = h_fork(fn, arg);
    int st = 0;
    char buf[96];
    cr_assert_eq(h_waitpid(pid, 120000, 0, &st), 0, "%s: child did not finish", what);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("%s: needs unshare(CLONE_NEWNS) and a tmpfs mount (root): not here", what);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child %s", what,
              h_status_str(st, buf, sizeof(buf)));
}

struct shm_arg {
    const char *name, *name2;
};

/* /dev/shm of 4 MiB: a queue too large for it is -ENOSPC with nothing left behind; a queue that
 * fits keeps working when the file system is then filled up (its pages were allocated at
 * create: no SIGBUS), and a rebuild of a lost segment that cannot fit is -ENOSPC too. */
static int small_dev_shm(void *p)
{
    struct shm_arg *a = p;
    int err = private_tmpfs("/dev/shm", 4096);
    if (err)
        return err;
    shmq_config_t big = h_small_config(8192, 1024, 8); /* more than 8 MiB */
    big.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q = NULL;
    CHECK(shmq_create(a->name, &big, &q) == -ENOSPC, 1);
    CHECK(q == NULL && !segment_exists(a->name), 2);

    shmq_config_t cfg = h_small_config(64, 1024, 8); /* about 100 KiB, with a log */
    err = shmq_create(a->name2, &cfg, &q);
    if (err)
        fprintf(stderr, "create: %s\n", shmq_strerror(err));
    CHECK(err == 0, 3);
    char filler[128], filler2[128];
    CHECK(fill_fs("/dev/shm", filler, sizeof(filler)) == 0, 4);
    char msg[1024];
    memset(msg, 'x', sizeof(msg));
    for (int i = 0; i < 64; i++)
        CHECK(shmq_publish(q, msg, sizeof(msg), NULL) == 0, 5);
    shmq_consumer_t *c;
    CHECK(shmq_consumer_open(q, "c", &c) == 0, 6);
    for (int i = 0; i < 32; i++) {
        shmq_msg_t m;
        CHECK(shmq_receive(c, &m, 1000) == 0 && m.len == sizeof(msg), 7);
        CHECK(shmq_ack(c, &m) == 0, 8);
    }
    CHECK(shmq_consumer_close(c) == 0, 9);
    shmq_stats_t st;
    CHECK(shmq_stats(q, &st) == 0 && st.ready == 32, 10);
    CHECK(shmq_close(q) == 0, 11);

    /* the segment is lost while /dev/shm is full: rebuilding it is -ENOSPC, then works */
    CHECK(shmq_unlink_segment(a->name2) == 0, 12);
    CHECK(fill_fs("/dev/shm", filler2, sizeof(filler2)) == 0, 13);
    err = shmq_open(a->name2, &q);
    if (err != -ENOSPC)
        fprintf(stderr, "open: %s\n", shmq_strerror(err));
    CHECK(err == -ENOSPC, 13);
    CHECK(!segment_exists(a->name2), 14);
    CHECK(unlink(filler) == 0 && unlink(filler2) == 0, 15);
    CHECK(shmq_open(a->name2, &q) == 0, 16);
    CHECK(shmq_stats(q, &st) == 0 && st.ready == 32, 17);
    CHECK(shmq_close(q) == 0 && shmq_unlink(a->name2) == 0, 18);
    return 0;
}

Test(storage, a_full_dev_shm_is_ENOSPC_at_create_and_rebuild_and_no_signal_later)
{
    struct shm_arg a = {h_qname("st-shm-big"), h_qname("st-shm-ok")};
    run_or_skip(small_dev_shm, &a, "small /dev/shm");
}

/* ---- The log: failed appends, failed flushes, a garbage wal_pos (fault injection). ---- */

#ifdef SHMQ_CRASH_POINTS

static void stats_of(shmq_t *q, shmq_stats_t *st) { h_assert_rc(shmq_stats(q, st), 0); }

/* Receive every ready message (each acked), up to max: how many came. */
static int drain(shmq_t *q, int max)
{
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    int n = 0;
    shmq_msg_t m;
    while (n < max && shmq_receive(c, &m, 0) == 0) {
        h_assert_rc(shmq_ack(c, &m), 0);
        n++;
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    return n;
}

/* The log judged as `shmq wal verify` judges it. */
static void assert_log_ok(const char *name)
{
    char dir[256];
    log_dir_of(name, dir, sizeof(dir));
    struct inspect_log *log = NULL;
    h_assert_rc(inspect_log_read(dir, true, &log), 0);
    cr_assert(log->ok && log->bad_regions == 0,
              "the log is judged damaged (%llu bad regions, %llu problems)",
              (unsigned long long)log->bad_regions, (unsigned long long)log->problems.count);
    inspect_log_free(log);
}

/* A publish whose log file cannot be made returns that error; the log reports itself failing
 * until a write works again; the reservation the failed publish took is closed with a PAD
 * record, so verify finds no hole. */
Test(storage, a_failed_append_is_reported_counted_and_leaves_no_hole)
{
    const char *name = h_qname("st-pad");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_stats_t st;
    stats_of(q, &st);
    cr_assert(st.wal_healthy && st.wal_errors == 0 && st.wal_last_error == 0);

    cr_assert_eq(io_fault_arm(IO_FALLOCATE, 1, ENOSPC), 0); /* the first log file's */
    h_assert_rc(shmq_publish(q, "lost", 4, NULL), -ENOSPC);
    stats_of(q, &st);
    cr_assert(!st.wal_healthy && st.wal_errors == 1 && st.wal_last_error == -ENOSPC,
              "healthy %u errors %llu last %d", st.wal_healthy, (unsigned long long)st.wal_errors,
              st.wal_last_error);

    h_assert_rc(shmq_publish(q, "kept", 4, NULL), 0);
    stats_of(q, &st);
    cr_assert(st.wal_healthy && st.wal_errors == 1 && st.wal_last_error == 0);
    cr_assert_eq(st.ready, 1);
    assert_log_ok(name);
    cr_assert_eq(drain(q, 10), 1);
    h_assert_rc(shmq_close(q), 0);
}

/* An ack whose ACK record cannot be written (its record needs a new log file, which cannot be
 * made) returns 0: the ack happened in the segment, and the message is not delivered again
 * while the segment lives. The failed record is counted (wal_errors + 1, wal_healthy 0 until a
 * write works again). The one consequence: after a segment loss, while the log still holds
 * its PUBLISH record, the rebuild brings that message back (at least once), and only that one. */
Test(storage, an_ack_whose_record_cannot_be_written_is_counted)
{
    const char *name = h_qname("st-ack");
    shmq_config_t cfg = h_small_config(64, 2400, 8);
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    cfg.log_retention_bytes = 1u << 20; /* the file of the PUBLISH records stays (replay) */
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    char msg[2400];
    memset(msg, 'x', sizeof(msg));
    /* fill the first log file to its last few hundred bytes: the acks' records cross into the
     * next file, whose making fails once */
    int n = 0;
    while (n < 64) {
        h_assert_rc(shmq_publish(q, msg, sizeof(msg), NULL), 0);
        n++;
        shmq_stats_t st;
        stats_of(q, &st);
        if ((st.wal_bytes % (SHMQ_WAL_FILE_MIN - 4096)) + 2448 > SHMQ_WAL_FILE_MIN - 4096)
            break;
    }
    cr_assert_eq(io_fault_arm(IO_FALLOCATE, 1, ENOSPC), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    uint64_t failed_at = 0;
    for (int i = 0; i < n; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 1000), 0);
        h_assert_rc(shmq_ack(c, &m), 0); /* never fails for its record */
        shmq_stats_t st;
        stats_of(q, &st);
        if (!failed_at && st.wal_errors) {
            failed_at = m.id;
            cr_assert(!st.wal_healthy && st.wal_last_error == -ENOSPC);
        }
    }
    cr_assert(failed_at, "no ACK record failed: the test did not reach a new log file");
    shmq_stats_t st;
    stats_of(q, &st);
    cr_assert(st.wal_healthy && st.wal_errors == 1, "healthy %u errors %llu", st.wal_healthy,
              (unsigned long long)st.wal_errors);
    /* done in the segment: nothing is ready, in flight or delayed, nothing comes again */
    cr_assert(st.ready == 0 && st.inflight == 0 && st.delayed == 0,
              "ready %llu inflight %llu delayed %llu", (unsigned long long)st.ready,
              (unsigned long long)st.inflight, (unsigned long long)st.delayed);
    shmq_msg_t again;
    h_assert_rc(shmq_receive(c, &again, 0), -EAGAIN);

    /* the segment is lost while the log still holds the PUBLISH records (retention keeps
     * them): the log lacks that one ACK, so that one message comes back */
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_t *q2;
    h_assert_rc(shmq_open(name, &q2), 0);
    shmq_consumer_close(c); /* of the old generation: its result does not matter here */
    shmq_close(q);
    q = q2;
    h_assert_rc(shmq_consumer_open(q, "after", &c), 0);
    h_assert_rc(shmq_receive(c, &again, 0), 0);
    cr_assert_eq(again.id, failed_at, "came back: id %llu, the failed ACK was for %llu",
                 (unsigned long long)again.id, (unsigned long long)failed_at);
    h_assert_rc(shmq_ack(c, &again), 0);
    h_assert_rc(shmq_receive(c, &again, 0), -EAGAIN); /* only the message whose ACK failed */
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* SYNC: a flush that fails fails the publish it covered (-EIO), and every later one: the log is
 * failed (sticky) until the segment is rebuilt from the log. The messages are delivered all the
 * same (a failed sync publish may still be delivered). */
Test(storage, a_failed_flush_fails_sync_publishes_until_the_segment_is_rebuilt)
{
    const char *name = h_qname("st-eio");
    shmq_t *q = create_sync_queue(name);
    h_assert_rc(shmq_publish(q, "a", 1, NULL), 0);
    cr_assert_eq(io_fault_arm(IO_FDATASYNC, 1, EIO), 0);
    h_assert_rc(shmq_publish(q, "b", 1, NULL), -EIO);
    h_assert_rc(shmq_publish(q, "c", 1, NULL), -EIO); /* sticky: no flush is trusted now */
    shmq_stats_t st;
    stats_of(q, &st);
    cr_assert(!st.wal_healthy && st.wal_flush_failed && st.wal_errors >= 1);
    cr_assert_eq(st.ready, 3, "a failed sync publish is still delivered");
    h_assert_rc(shmq_close(q), 0);

    /* rebuilt from what the log holds: healthy again, nothing lost */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    stats_of(q, &st);
    cr_assert(st.wal_healthy && !st.wal_flush_failed);
    h_assert_rc(shmq_publish(q, "d", 1, NULL), 0);
    cr_assert_eq(drain(q, 10), 4);
    h_assert_rc(shmq_close(q), 0);
}

/* SYNC: a new log file's name is made durable by an fsync of the log directory after its link
 * (make_file). When that fsync fails, the name may be lost at a power loss with every record of
 * the file, and a later fsync of the directory may say 0 all the same (a writeback error is
 * reported once): the log is failed as by a failed flush, and sync publishes return -EIO until
 * the segment is rebuilt. Before (review10), the failure was ignored: sync publishes in that
 * file returned 0. */
Test(storage, a_failed_directory_flush_fails_sync_publishes_until_the_segment_is_rebuilt)
{
    const char *name = h_qname("st-direio");
    shmq_t *q = create_sync_queue(name);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    h_assert_rc(shmq_publish(q, "a", 1, NULL), 0);
    uint64_t before = io_fault_calls(IO_FSYNC);
    /* the next file made: make_file's fsync of the file, then the directory's */
    cr_assert_eq(io_fault_arm(IO_FSYNC, 2, EIO), 0);
    int rc = 0, n = 0;
    for (; n < 20000 && rc == 0 && io_fault_calls(IO_FSYNC) < before + 2; n++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
        rc = shmq_publish(q, "m", 1, NULL);
    }
    io_fault_disarm_all();
    cr_assert_geq(io_fault_calls(IO_FSYNC), before + 2, "no log file was made in %d publishes", n);
    rc = shmq_publish(q, "x", 1, NULL);
    cr_assert_eq(rc, -EIO, "a sync publish after a failed flush of the log directory: %d (%s)", rc,
                 shmq_strerror(rc));
    shmq_stats_t st;
    stats_of(q, &st);
    cr_assert(!st.wal_healthy && st.wal_flush_failed, "the failure is not shown");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    /* rebuilt from what the log holds: healthy again */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    stats_of(q, &st);
    cr_assert(st.wal_healthy && !st.wal_flush_failed);
    h_assert_rc(shmq_publish(q, "d", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* A garbage wal_pos (a damaged segment) is reported, never iterated: maintenance returns at
 * once without making files with 11-digit names; a publish gets an error. */
Test(storage, a_garbage_wal_pos_is_reported_not_iterated)
{
    const char *name = h_qname("st-walpos");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    struct segment seg;
    h_assert_rc(segment_open(name, false, &seg), 0);
    uint64_t good = atomic_load(&seg.hdr->wal_pos);
    uint64_t bad[] = {UINT64_MAX / 2, 1ull << 40, good + (uint64_t)(SHMQ_WAL_FILE_MIN - 4096) * 5000};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        atomic_store(&seg.hdr->wal_pos, bad[i]);
        int64_t t0 = h_now_ms();
        shmq_maint_report_t rep;
        shmq_maintain(q, &rep);
        cr_assert_lt(h_now_ms() - t0, 10000, "one maintenance pass took %lld ms",
                     (long long)(h_now_ms() - t0));
        shmq_stats_t st;
        stats_of(q, &st);
        cr_assert(st.wal_errors >= i + 1 && st.wal_last_error == -EBADMSG,
                  "wal_pos %llu: errors %llu last %d", (unsigned long long)bad[i],
                  (unsigned long long)st.wal_errors, st.wal_last_error);
        char dir[256];
        log_dir_of(name, dir, sizeof(dir));
        cr_assert_leq(count_files(dir, "wal."), 3, "files made for a garbage wal_pos");
    }
    atomic_store(&seg.hdr->wal_pos, good);
    segment_close(&seg);
    h_assert_rc(shmq_publish(q, "n", 1, NULL), 0);
    cr_assert_eq(drain(q, 10), 2);
    h_assert_rc(shmq_close(q), 0);
}

/* Issue 16 item 2: a SYNC producer stopped while it leads a group commit (SIGSTOP at the crash
 * point inside the flush) must not hold the other SYNC publishes: a waiter takes over after
 * WAL_SYNC_STALL_MS without progress. When the stopped leader is continued, its own publish
 * completes too (its flush, done twice, is harmless), and every message is delivered. */
struct takeover_arg {
    const char *name;
};

static int stopped_leader(void *p)
{
    struct takeover_arg *a = p;
    setenv("SHMQ_CRASH_AT", "sync_while_leading", 1);
    setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    CHECK(shmq_open(a->name, &q) == 0, 1);
    int rc = shmq_publish(q, "leader", 6, NULL); /* stops inside, as the leader */
    if (rc)
        fprintf(stderr, "the stopped leader's publish returned %s\n", shmq_strerror(rc));
    CHECK(rc == 0, 2);
    CHECK(shmq_close(q) == 0, 3);
    return 0;
}

static int next_sync_publisher(void *p)
{
    struct takeover_arg *a = p;
    shmq_t *q;
    CHECK(shmq_open(a->name, &q) == 0, 1);
    for (int i = 0; i < 3; i++)
        CHECK(shmq_publish(q, "next", 4, NULL) == 0, 2);
    CHECK(shmq_close(q) == 0, 3);
    return 0;
}

Test(storage, a_stopped_sync_leader_does_not_block_other_sync_publishes)
{
    struct takeover_arg a = {h_qname("st-leader")};
    pid_t leader = h_fork_gated(stopped_leader, &a); /* before any crash point is passed here */
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_SYNC;
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(a.name, &cfg, &q), 0);
    h_open_gate(leader);
    int st = 0;
    cr_assert_eq(h_wait_stopped(leader, 30000, &st), 0, "the leader never stopped at the point");
    cr_assert(WIFSTOPPED(st), "the leader did not stop: %d", st);

    pid_t next = h_fork(next_sync_publisher, &a);
    int rc = h_waitpid(next, 30000, 0, &st);
    kill(leader, SIGCONT);
    cr_assert_eq(rc, 0, "SYNC publishes waited > 30 s behind a stopped leader");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the other publisher exited %d", st);
    h_assert_child_ok(leader, 30000, "the continued leader");
    cr_assert_eq(drain(q, 10), 4);
    h_assert_rc(shmq_close(q), 0);
}

/* Review finding F1a: a SYNC waiter V has lowered wal_sync_low to its file and taken its ticket
 * (stopped there, crash point sync_after_ticket); a leader L reads the ticket count and the low
 * and is killed at sync_while_leading, before any flush; the log moves on to the next file. V
 * then takes over from the dead L. Its publish may return 0 only if the file holding its record
 * was flushed: before the fix L had taken the low out of the word, so V flushed only the new
 * file (one fdatasync) and returned 0 for an unflushed record. */
static int sync_publisher_at(const char *name, const char *point, const char *sig)
{
    setenv("SHMQ_CRASH_AT", point, 1);
    if (sig)
        setenv("SHMQ_CRASH_SIGNAL", sig, 1);
    shmq_t *q;
    CHECK(shmq_open(name, &q) == 0, 1);
    int rc = shmq_publish(q, "v", 1, NULL);
    if (rc)
        fprintf(stderr, "sync publish: %s\n", shmq_strerror(rc));
    CHECK(rc == 0, 2);
    CHECK(shmq_close(q) == 0, 3);
    return 0;
}

static int waiter_stopped_after_ticket(void *p)
{
    return sync_publisher_at(p, "sync_after_ticket", "STOP");
}

static int leader_killed_in_flush(void *p) { return sync_publisher_at(p, "sync_while_leading", NULL); }

Test(storage, a_dead_sync_leader_takes_no_waiters_file_with_it)
{
    const char *name = h_qname("st-deadlead");
    pid_t v = h_fork_gated(waiter_stopped_after_ticket, (void *)name);
    pid_t l = h_fork_gated(leader_killed_in_flush, (void *)name);
    shmq_t *q = create_sync_queue(name);
    h_open_gate(v);
    int st = 0;
    cr_assert_eq(h_wait_stopped(v, 30000, &st), 0, "the waiter never stopped after its ticket");
    cr_assert(WIFSTOPPED(st), "the waiter did not stop: %d", st);
    h_open_gate(l);
    cr_assert_eq(h_waitpid(l, 30000, 0, &st), 0, "the leader never reached its flush");
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the leader was not killed: %d", st);

    /* the log moves on to file 1 (records of nobody's sync) */
    struct segment seg;
    struct wal *w;
    h_assert_rc(segment_open(name, false, &seg), 0);
    h_assert_rc(wal_open(&seg, false, &w), 0);
    cr_assert_eq(wal_current_seq(w), 0);
    static char pad[4096];
    while (wal_current_seq(w) < 1)
        h_assert_rc(wal_append(w, WAL_MARK, 0, 0, pad, sizeof(pad), NULL), 0);
    uint64_t before = atomic_load(&seg.hdr->wal_flushes);
    kill(v, SIGCONT);
    h_assert_child_ok(v, 30000, "the waiter that took over");
    uint64_t flushed = atomic_load(&seg.hdr->wal_flushes) - before;
    wal_close(w);
    segment_close(&seg);
    /* files 0 (the waiter's record) and 1 (the current one): two fdatasyncs */
    cr_assert_geq(flushed, 2, "the waiter returned 0 after %llu flush(es): its file 0 was not flushed",
                  (unsigned long long)flushed);
    h_assert_rc(shmq_close(q), 0);
}

/* Review finding R2-3: two group commit leaders at once (a waiter took over from a leader that
 * stalled or died inside its flush). Leader A's fdatasync fails (the fault layer stands for a
 * writeback error); A stops (or dies) before it records the failure. Waiter V, whose record A's
 * failed flush covered, takes over and flushes the same file through its own descriptor: the
 * kernel reports a writeback error once per descriptor and not to one opened after it was seen,
 * so V's fdatasync returns 0. V must not return 0 for a record whose flush failed: it waits for
 * A's outcome (A stopped), or takes the log as failed (A dead). Before the fix V returned 0. */
static int *r23_rc; /* shared: [0] the waiter's publish, [1] the failing leader's */

static int r23_publisher(const char *name, const char *point, const char *sig, int *rc, bool eio)
{
    setenv("SHMQ_CRASH_AT", point, 1);
    if (sig)
        setenv("SHMQ_CRASH_SIGNAL", sig, 1);
    shmq_t *q;
    CHECK(shmq_open(name, &q) == 0, 1);
    if (eio)
        CHECK(io_fault_arm(IO_FDATASYNC, 1, EIO) == 0, 4); /* its first fdatasync */
    *rc = shmq_publish(q, "v", 1, NULL);
    CHECK(shmq_close(q) == 0, 3);
    return 0;
}

static int r23_waiter(void *p) { return r23_publisher(p, "sync_after_ticket", "STOP", &r23_rc[0], false); }
static int r23_stopped_leader(void *p)
{
    return r23_publisher(p, "sync_after_flush", "STOP", &r23_rc[1], true);
}
static int r23_dead_leader(void *p) { return r23_publisher(p, "sync_after_flush", NULL, &r23_rc[1], true); }

static void r23_two_leaders(bool leader_dies)
{
    const char *name = h_qname(leader_dies ? "st-r23d" : "st-r23s");
    r23_rc = h_shared_alloc(2 * sizeof(int));
    r23_rc[0] = r23_rc[1] = 1;
    pid_t v = h_fork_gated(r23_waiter, (void *)name);
    pid_t a = h_fork_gated(leader_dies ? r23_dead_leader : r23_stopped_leader, (void *)name);
    shmq_t *q = create_sync_queue(name);
    h_open_gate(v);
    int st = 0;
    cr_assert_eq(h_wait_stopped(v, 30000, &st), 0, "the waiter never stopped after its ticket");
    cr_assert(WIFSTOPPED(st), "the waiter did not stop: %d", st);
    h_open_gate(a); /* leads (V took its ticket, not the lead), covers V's ticket, fails */
    if (leader_dies) {
        cr_assert_eq(h_waitpid(a, 30000, 0, &st), 0, "the leader never reached its flush");
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the leader was not killed: %d", st);
    } else {
        cr_assert_eq(h_wait_stopped(a, 30000, &st), 0, "the leader never reached its flush");
        cr_assert(WIFSTOPPED(st), "the leader did not stop: %d", st);
    }
    struct segment seg;
    h_assert_rc(segment_open(name, false, &seg), 0);
    kill(v, SIGCONT); /* takes over from A (dead, or stalled: after the stall time) */
    if (!leader_dies) {
        /* until V has returned, or leads and waits for the flush lock A holds */
        int64_t end = h_now_ms() + 30000;
        while (h_now_ms() < end && h_waitpid(v, 1, 0, &st) == -ETIMEDOUT &&
               !(atomic_load(&seg.hdr->wal_sync_leader) == (uint32_t)v &&
                 (uint32_t)atomic_load(&seg.hdr->wal_sync_flusher) == (uint32_t)a)) {
        }
        kill(a, SIGCONT);
        h_assert_child_ok(a, 30000, "the continued leader");
        cr_expect_eq(r23_rc[1], -EIO, "the leader whose flush failed returned %d", r23_rc[1]);
    }
    if (kill(v, 0) == 0)
        h_assert_child_ok(v, 30000, "the waiter that took over");
    cr_assert_eq(r23_rc[0], -EIO,
                 "the waiter whose record's flush failed returned %d (%s), not -EIO", r23_rc[0],
                 shmq_strerror(r23_rc[0]));
    shmq_stats_t sst;
    stats_of(q, &sst);
    int later = shmq_publish(q, "later", 5, NULL);
    if (leader_dies) {
        /* A's flush has an unknown outcome, not a known failure: the log is not failed, and a
         * record written after the takeover is flushed by a leader that is told of any error */
        cr_assert(!sst.wal_flush_failed, "a killed leader's unknown flush failed the log for good");
        cr_assert_eq(later, 0, "a later sync publish returned %d (%s), not 0", later,
                     shmq_strerror(later));
    } else {
        /* the continued A recorded its real failure */
        cr_assert(sst.wal_flush_failed, "the log is not marked failed");
        cr_assert_eq(later, -EIO, "a sync publish after a failed flush returned %d", later);
    }
    cr_assert_eq(drain(q, 10), 3, "a failed sync publish is still delivered");
    segment_close(&seg);
    h_assert_rc(shmq_close(q), 0);
}

Test(storage, r2_3_a_takeover_does_not_succeed_over_a_stopped_leaders_failed_flush)
{
    r23_two_leaders(false);
}

Test(storage, r2_3_a_takeover_does_not_succeed_over_a_dead_leaders_unknown_flush)
{
    r23_two_leaders(true);
}

/* A SYNC leader stopped inside its flush (crash point sync_after_flush: its fdatasync returned,
 * which is where a SIGSTOP that arrives during the call takes effect) must not hold the other
 * SYNC publishes (guarantee 1, issue 16 item 2): another producer's sync publish returns within
 * the bound, 0 or -EIO (the stopped flush's outcome is unknown, GC7/GC8), while the leader stays
 * stopped; once it is continued, sync publishes return 0 again. Before the fix the other
 * producer waited for the flush lock until the leader was continued. */
static int gc8_leader(void *p)
{
    return r23_publisher(p, "sync_after_flush", "STOP", &r23_rc[1], false);
}

static int gc8_publisher(void *p)
{
    shmq_t *q;
    CHECK(shmq_open(p, &q) == 0, 1);
    r23_rc[0] = shmq_publish(q, "other", 5, NULL);
    CHECK(shmq_close(q) == 0, 3);
    return 0;
}

static void gc8_stopped_leader(bool killed)
{
    const char *name = h_qname(killed ? "st-gc8k" : "st-gc8");
    r23_rc = h_shared_alloc(2 * sizeof(int));
    r23_rc[0] = r23_rc[1] = 1;
    pid_t a = h_fork_gated(gc8_leader, (void *)name);
    shmq_t *q = create_sync_queue(name);
    h_open_gate(a);
    int st = 0;
    cr_assert_eq(h_wait_stopped(a, 30000, &st), 0, "the leader never reached its flush");
    cr_assert(WIFSTOPPED(st), "the leader did not stop: %d", st);

    pid_t p = h_fork(gc8_publisher, (void *)name);
    int rc = h_waitpid(p, 30000, 0, &st);
    if (rc) { /* do not leave them behind */
        kill(p, SIGKILL);
        kill(a, SIGKILL);
    }
    cr_assert_eq(rc, 0, "a sync publish waited > 30 s behind a leader stopped in its flush");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the other publisher exited %d", st);
    cr_assert(r23_rc[0] == 0 || r23_rc[0] == -EIO, "the other sync publish returned %d", r23_rc[0]);
    int mine = shmq_publish(q, "mine", 4, NULL); /* the leader still stopped */
    cr_assert(mine == 0 || mine == -EIO, "a sync publish returned %d", mine);

    if (killed) { /* a straggler that dies is cleared by the next round that finds it gone */
        kill(a, SIGKILL);
        cr_assert_eq(h_waitpid(a, 30000, 0, &st), 0, "the killed leader was not reaped");
    } else {
        kill(a, SIGCONT);
        h_assert_child_ok(a, 30000, "the continued leader");
        cr_assert(r23_rc[1] == 0 || r23_rc[1] == -EIO,
                  "the continued leader's publish returned %d", r23_rc[1]);
    }
    shmq_stats_t sst;
    stats_of(q, &sst);
    cr_assert(!sst.wal_flush_failed, "no flush failed, yet the log is marked failed");
    /* the first may still find the straggler (and clear it if dead): -EIO once at most */
    int first = shmq_publish(q, "later", 5, NULL);
    cr_assert(first == 0 || (killed && first == -EIO), "a later sync publish returned %d", first);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "later", 5, NULL), 0);
    cr_assert_eq(drain(q, 10), 7, "a sync publish was lost"); /* the killed one's is ready */
    h_assert_rc(shmq_close(q), 0);
}

Test(storage, a_sync_leader_stopped_in_its_flush_does_not_block_other_sync_publishes)
{
    gc8_stopped_leader(false);
}

/* The same leader killed while it stays taken over (the straggler, GC8): sync publishes return 0
 * again. Before the fix a leader killed holding the flush lock failed the log for good. */
Test(storage, a_sync_leader_killed_after_its_flush_was_taken_over_leaves_no_lasting_failure)
{
    gc8_stopped_leader(true);
}

/* Review finding F8: a group commit leader that cannot map a file to flush it (a limit of its
 * own process: ENOMEM, EMFILE) gets -EIO for its own sync, but sets no sticky flush-failed bit:
 * nothing was lost from the page cache, and the next sync (here the same, with the limit gone)
 * succeeds. Before the fix the bit was set and every later sync of every process failed. */
Test(storage, a_sync_leader_that_cannot_map_a_file_does_not_fail_the_log_for_good)
{
    const char *name = h_qname("st-mapfail");
    shmq_t *q = create_sync_queue(name);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    struct segment seg;
    struct wal *w; /* a handle of its own: file 0 is not in its mapping cache */
    h_assert_rc(segment_open(name, false, &seg), 0);
    h_assert_rc(wal_open(&seg, false, &w), 0);
    h_assert_rc(io_fault_arm(IO_MMAP, 1, ENOMEM), 0);
    int rc = wal_sync(w, 0, 0);
    io_fault_disarm_all();
    cr_assert_eq(rc, -EIO, "a sync whose file could not be mapped returned %d", rc);
    cr_assert_eq(atomic_load(&seg.hdr->wal_health) & WAL_HEALTH_FLUSH_FAILED, 0,
                 "a mapping failure set the sticky flush-failed bit");
    h_assert_rc(wal_sync(w, 0, 0), 0);
    wal_close(w);
    segment_close(&seg);
    h_assert_rc(shmq_publish(q, "n", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* Review finding F3: maintenance whose unlink of an old log file fails (here EACCES, once) must
 * count it and try the file again on a later pass; before the fix wal_oldest_seq moved past it
 * first and the file stayed for good, with nothing counted. A preallocated wal.N.tmp.PID.* of a
 * dead maker is removed by a pass that deletes files. */
static bool file_exists(const char *dir, const char *file)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return access(path, F_OK) == 0;
}

static int exit_at_once(void *p) { return 0; }

Test(storage, a_failed_retention_unlink_is_counted_and_retried)
{
    const char *name = h_qname("st-unlink");
    shmq_config_t cfg = h_small_config(64, 4096, 8);
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    cfg.log_retention_bytes = 0;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    static char buf[4000];
    for (int i = 0; i < 60; i++) {
        h_assert_rc(shmq_publish(q, buf, sizeof(buf), NULL), 0);
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 10000), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    char dir[256];
    log_dir_of(name, dir, sizeof(dir));
    cr_assert(file_exists(dir, "wal.0000000000"));
    pid_t dead = h_fork(exit_at_once, NULL);
    h_assert_child_ok(dead, 30000, "the child that exits");
    char tmp[400];
    snprintf(tmp, sizeof(tmp), "%s/wal.0000000099.tmp.%d.1", dir, (int)dead);
    int fd = open(tmp, O_CREAT | O_WRONLY | O_EXCL, 0600);
    cr_assert(fd >= 0, "%s: %s", tmp, strerror(errno));
    close(fd);

    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    uint64_t errors = st.wal_errors;
    /* unlink 1 is the next file's temporary name, 2 the first deletion (wal.0000000000) */
    h_assert_rc(io_fault_arm(IO_UNLINK, 2, EACCES), 0);
    shmq_maintain(q, NULL);
    io_fault_disarm_all();
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_gt(st.wal_errors, errors, "a failed unlink in maintenance was not counted");
    for (int i = 0; i < 3; i++)
        shmq_maintain(q, NULL);
    cr_assert(!file_exists(dir, "wal.0000000000"), "the file whose unlink failed stays for good");
    cr_assert(access(tmp, F_OK) != 0, "a dead maker's preallocated temporary file stays");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* Review finding F4: shmq_unlink whose removal of a log file fails must not return 0 (it did:
 * the segment went), and the queue must not come back from what is left. */
Test(storage, an_unlink_that_cannot_remove_the_log_fails_and_nothing_comes_back)
{
    /* the log directory holds wal.0000000000, head and .recover: fail each unlink in turn */
    for (int nth = 1; nth <= 3; nth++) {
        const char *name = h_qname("st-resurrect");
        shmq_config_t cfg = h_small_config(16, 64, 8);
        cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
        shmq_t *q;
        h_assert_rc(shmq_create(name, &cfg, &q), 0);
        for (int i = 0; i < 3; i++)
            h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
        h_assert_rc(shmq_close(q), 0);
        h_assert_rc(io_fault_arm(IO_UNLINK, (uint64_t)nth, EACCES), 0);
        int rc = shmq_unlink(name);
        io_fault_disarm_all();
        cr_assert_eq(rc, -EACCES, "unlink %d failing: shmq_unlink returned %d", nth, rc);
        rc = shmq_open(name, &q);
        if (rc == 0)
            shmq_close(q);
        cr_assert_neq(rc, 0, "unlink %d failing: the deleted queue came back from its log", nth);
        h_assert_rc(shmq_unlink(name), 0); /* once the cause is gone */
        char dir[256];
        log_dir_of(name, dir, sizeof(dir));
        cr_assert(access(dir, F_OK) != 0, "unlink %d failing: the log directory stays", nth);
    }
}

/* The watchdog says when a queue's log fails: a log_error event line (here its own maintenance
 * meets a garbage wal_pos), then log_healthy once a write works again. */
static void tool_path(const char *tool, char *buf, size_t size)
{
    char exe[512];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert(n > 0);
    exe[n] = 0;
    *strrchr(exe, '/') = 0; /* BUILD/tests */
    *strrchr(exe, '/') = 0; /* BUILD */
    snprintf(buf, size, "%s/%s", exe, tool);
}

/* Read the watchdog's output (fd) until a line holds word, for at most timeout_ms. */
static bool output_has(int fd, char *buf, size_t size, size_t *len, const char *word,
                       int timeout_ms)
{
    for (int64_t end = h_now_ms() + timeout_ms; h_now_ms() < end;) {
        buf[*len] = 0;
        if (strstr(buf, word))
            return true;
        ssize_t n = read(fd, buf + *len, size - 1 - *len);
        if (n > 0)
            *len += (size_t)n;
        else
            h_sleep_ms(5); /* non-blocking pipe: nothing yet */
    }
    buf[*len] = 0;
    return strstr(buf, word) != NULL;
}

Test(storage, the_watchdog_logs_log_errors)
{
    const char *name = h_qname("st-wd");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    struct segment seg;
    h_assert_rc(segment_open(name, false, &seg), 0);
    uint64_t good = atomic_load(&seg.hdr->wal_pos);
    atomic_store(&seg.hdr->wal_pos, UINT64_MAX / 2);

    char wd[600];
    tool_path("shmq-watchdog", wd, sizeof(wd));
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        execl(wd, wd, "--sample-ms", "20", name, (char *)NULL);
        _exit(127);
    }
    h_track(pid, -1);
    close(p[1]);
    static char out[65536];
    size_t len = 0;
    bool failed = output_has(p[0], out, sizeof(out), &len, "event=log_error", 30000);
    atomic_store(&seg.hdr->wal_pos, good);
    h_assert_rc(shmq_publish(q, "n", 1, NULL), 0); /* a write that works */
    bool healthy = failed && output_has(p[0], out, sizeof(out), &len, "event=log_healthy", 30000);
    kill(pid, SIGTERM);
    h_waitpid(pid, 10000, 0, NULL);
    close(p[0]);
    segment_close(&seg);
    cr_assert(failed, "no log_error line; the watchdog said:\n%s", out);
    cr_assert(strstr(out, "last_error=") != NULL, "%s", out);
    cr_assert(healthy, "no log_healthy line; the watchdog said:\n%s", out);
    h_assert_rc(shmq_close(q), 0);
}

#else

Test(storage, needs_crash_points) { cr_skip_test("the library was built without SHMQ_CRASH_POINTS"); }

#endif

/* Review finding F2: an opener that finds a segment its creator has sized but not yet allocated
 * (a sparse file, magic 0) on a full /dev/shm must not touch it through a mapping: the load of
 * the magic from a hole needs a page, and there is none (SIGBUS). Made deterministic here: the
 * sparse file is made by hand, as a creator leaves it between ftruncate and its failed
 * fallocate. The opener waits for the magic (about 1 s) and gives up with an error. */
static int open_while_created_on_full_shm(void *p)
{
    struct shm_arg *a = p;
    int err = private_tmpfs("/dev/shm", 256);
    if (err)
        return err;
    char path[128], filler[128];
    h_shm_path(a->name, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0, 1);
    CHECK(ftruncate(fd, 1 << 20) == 0, 2); /* sparse: nothing allocated */
    CHECK(fill_fs("/dev/shm", filler, sizeof(filler)) == 0, 3);
    struct segment seg;
    err = segment_open(a->name, false, &seg); /* a SIGBUS kills this child */
    if (err == 0)
        segment_close(&seg);
    CHECK(err != 0, 4);
    close(fd);
    return 0;
}

Test(storage, opening_a_segment_not_yet_allocated_on_a_full_dev_shm_is_no_sigbus)
{
    struct shm_arg a = {h_qname("st-sparse"), NULL};
    run_or_skip(open_while_created_on_full_shm, &a, "sparse segment on a full /dev/shm");
}

/* The log's file system fills up (a 2 MiB tmpfs as cfg.log_dir): the publish that needs a new
 * log file returns -ENOSPC (no SIGBUS), the log reports itself failing; rebuilding the segment
 * while the file system is still full is an error or works, never a signal; once space returns,
 * every message whose publish returned 0 and was not acked is there, and publishing works. */
struct logfs_arg {
    const char *name;
    char dir[64];
};

static int full_log_fs(void *p)
{
    struct logfs_arg *a = p;
    int err = private_tmpfs_mode(a->dir, 2048, 0700);
    if (err)
        return err;
    shmq_config_t cfg = h_small_config(64, 512, 8);
    cfg.log_dir = a->dir;
    cfg.wal_file_size = 256u << 10;
    shmq_t *q;
    err = shmq_create(a->name, &cfg, &q);
    if (err)
        fprintf(stderr, "create: %s\n", shmq_strerror(err));
    CHECK(err == 0, 1);
    char msg[512];
    memset(msg, 'm', sizeof(msg));
    for (int i = 0; i < 10; i++) /* live, never acked: must survive everything below */
        CHECK(shmq_publish(q, msg, sizeof(msg), NULL) == 0, 2);
    char filler[128];
    CHECK(fill_fs(a->dir, filler, sizeof(filler)) == 0, 3);
    shmq_consumer_t *c;
    CHECK(shmq_consumer_open(q, "c", &c) == 0, 4);
    int ok = 0, acked = 0;
    for (;; ok++) { /* publish and ack (oldest first) until the log needs a file it cannot have */
        err = shmq_publish(q, msg, sizeof(msg), NULL);
        if (err)
            break;
        shmq_msg_t m;
        CHECK(shmq_receive(c, &m, 1000) == 0, 5);
        if (m.id <= 10) { /* one of the live ten: give it back, take the new one */
            CHECK(shmq_nack(c, &m, 0) == 0, 6);
            continue;
        }
        CHECK(shmq_ack(c, &m) == 0, 7);
        acked++;
        CHECK(ok < 100000, 8);
    }
    if (err != -ENOSPC)
        fprintf(stderr, "publish on a full log file system: %s\n", shmq_strerror(err));
    CHECK(err == -ENOSPC, 9);
    shmq_stats_t st;
    CHECK(shmq_stats(q, &st) == 0 && !st.wal_healthy && st.wal_errors >= 1, 10);
    CHECK(shmq_consumer_close(c) == 0 && shmq_close(q) == 0, 11);

    CHECK(shmq_unlink_segment(a->name) == 0, 12);
    err = shmq_recover(a->name, a->dir, NULL); /* the file system still full */
    if (err && err != -ENOSPC)
        fprintf(stderr, "recovery on a full log file system: %s\n", shmq_strerror(err));
    CHECK(err == 0 || err == -ENOSPC, 13);
    CHECK(unlink(filler) == 0, 14);
    if (err)
        CHECK(shmq_recover(a->name, a->dir, NULL) == 0, 15);
    CHECK(shmq_open(a->name, &q) == 0, 16);
    CHECK(shmq_publish(q, msg, sizeof(msg), NULL) == 0, 17);
    CHECK(shmq_consumer_open(q, "c2", &c) == 0, 18);
    /* the nacked ones come back delayed (their backoff survives the rebuild): maintenance
     * fires them; wait for all, with a generous bound */
    int live = 0, after = 0, want = 10 + (ok - acked + 1);
    shmq_msg_t m;
    for (int64_t end = h_now_ms() + 60000; live + after < want && h_now_ms() < end;) {
        shmq_maintain(q, NULL);
        if (shmq_receive(c, &m, 50) != 0)
            continue;
        live += m.id <= 10;
        after += m.id > 10;
        CHECK(shmq_ack(c, &m) == 0, 19);
    }
    /* every publish that returned 0 and was not acked: the ten, the unacked new ones, and one */
    if (live != 10 || after != ok - acked + 1)
        fprintf(stderr, "after the rebuild: %d of the 10 live messages, %d of %d others\n", live,
                after, ok - acked + 1);
    CHECK(live == 10 && after == ok - acked + 1, 20);
    CHECK(shmq_consumer_close(c) == 0 && shmq_close(q) == 0, 21);
    CHECK(shmq_unlink(a->name) == 0 || true, 22);
    return 0;
}

Test(storage, a_full_log_file_system_is_ENOSPC_and_loses_nothing)
{
    struct logfs_arg a = {.name = h_qname("st-logfs")};
    snprintf(a.dir, sizeof(a.dir), "/tmp/shmq-test-logfs-XXXXXX");
    cr_assert_not_null(mkdtemp(a.dir));
    run_or_skip(full_log_fs, &a, "small log file system");
    rmdir(a.dir);
}
