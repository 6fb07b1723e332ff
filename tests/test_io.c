/*
 * test_io.c - the I/O layer (src/io.h) and its fault injection: every operation can be failed
 * at its nth call with the errno chosen, the per-op counters count, arming is one-shot and can
 * be undone, a spec string and SHMQ_IO_FAULT arm the same way, concurrent callers see exactly
 * one failure; and a failure injected under shmq_create() comes back as its own errno and
 * leaves no segment behind.
 *
 * Each operation is driven through a small "call" below that sets up with plain system calls,
 * makes exactly one wrapper call of the operation under test (io_dir_each: one opendir and a
 * readdir per entry), and cleans up with plain system calls, so only that operation's counter
 * moves.
 *
 * shmq-test-label: threaded
 */
#include "helpers.h"

#include <pthread.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>

#include "io.h"

TestSuite(io, .fini = h_cleanup, .timeout = 60);

#ifdef SHMQ_CRASH_POINTS

/* A scratch directory on tmpfs (fallocate works there) with one 4 KiB file open in it. */
struct ctx {
    char dir[64];
    char file[96];
    char shm[64];
    int fd;
    int entries; /* io_dir_each: entries seen by the last walk */
};

static struct ctx *ctx_new(void)
{
    struct ctx *c = calloc(1, sizeof(*c));
    cr_assert_not_null(c);
    snprintf(c->dir, sizeof(c->dir), "/dev/shm/shmq-test-io-XXXXXX");
    cr_assert_not_null(mkdtemp(c->dir), "mkdtemp: %s", strerror(errno));
    snprintf(c->file, sizeof(c->file), "%s/f", c->dir);
    snprintf(c->shm, sizeof(c->shm), "/shmq-test-io-%d", (int)getpid());
    c->fd = open(c->file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert(c->fd >= 0, "open %s: %s", c->file, strerror(errno));
    cr_assert_eq(ftruncate(c->fd, 4096), 0);
    return c;
}

static void ctx_free(struct ctx *c)
{
    close(c->fd);
    shm_unlink(c->shm);
    h_remove_tree(c->dir);
    free(c);
}

static void path_in(const struct ctx *c, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", c->dir, name);
}

/* Create an empty file (plain system calls). */
static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    close(fd);
}

/* Each call returns the wrapper's result folded to 0 / -errno. */
static int call_shm_open(struct ctx *c)
{
    int fd = io_shm_open(c->shm, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    return fd < 0 ? fd : 0;
}

static int call_shm_unlink(struct ctx *c)
{
    int fd = shm_open(c->shm, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "shm_open: %s", strerror(errno));
    close(fd);
    return io_shm_unlink(c->shm);
}

static int call_open(struct ctx *c)
{
    int fd = io_open(c->file, O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0)
        close(fd);
    return fd < 0 ? fd : 0;
}

static int call_openat(struct ctx *c)
{
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert(dfd >= 0);
    int fd = io_openat(dfd, "f", O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0)
        close(fd);
    close(dfd);
    return fd < 0 ? fd : 0;
}

static int call_close(struct ctx *c)
{
    int fd = open(c->file, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0);
    int rc = io_close(fd);
    /* failed or not, the descriptor is gone (as with a failed close on Linux) */
    cr_assert(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "io_close left fd %d open", fd);
    return rc;
}

static int call_fstat(struct ctx *c)
{
    struct stat st;
    return io_fstat(c->fd, &st);
}

static int call_fchmod(struct ctx *c) { return io_fchmod(c->fd, 0600); }
static int call_ftruncate(struct ctx *c) { return io_ftruncate(c->fd, 4096); }
static int call_fallocate(struct ctx *c) { return io_fallocate(c->fd, 0, 4096); }
static int call_pwrite(struct ctx *c) { return io_pwrite(c->fd, "0123456789abcdef", 16, 0); }

static int call_pread(struct ctx *c)
{
    char buf[16];
    ssize_t n = io_pread(c->fd, buf, sizeof(buf), 0);
    if (n >= 0)
        cr_assert_eq(n, (ssize_t)sizeof(buf), "pread read %zd bytes of a 4 KiB file", n);
    return n < 0 ? (int)n : 0;
}

static int call_write(struct ctx *c)
{
    int fd = open(c->file, O_WRONLY | O_APPEND | O_CLOEXEC);
    cr_assert(fd >= 0);
    int rc = io_write(fd, "x", 1);
    close(fd);
    return rc;
}

static int call_mmap(struct ctx *c)
{
    void *p = NULL;
    int rc = io_mmap(c->fd, 0, 4096, PROT_READ, MAP_SHARED, &p);
    if (rc == 0)
        munmap(p, 4096);
    return rc;
}

static int call_munmap(struct ctx *c)
{
    void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, c->fd, 0);
    cr_assert(p != MAP_FAILED);
    int rc = io_munmap(p, 4096);
    if (rc != 0)
        munmap(p, 4096); /* the injected failure left it mapped */
    return rc;
}

static int call_fsync(struct ctx *c) { return io_fsync(c->fd); }
static int call_fdatasync(struct ctx *c) { return io_fdatasync(c->fd); }

static int call_link(struct ctx *c)
{
    char to[128];
    path_in(c, "linked", to, sizeof(to));
    int rc = io_link(c->file, to);
    unlink(to);
    return rc;
}

static int call_symlink(struct ctx *c)
{
    char to[128];
    path_in(c, "sym", to, sizeof(to));
    int rc = io_symlink(c->file, to);
    unlink(to);
    return rc;
}

static int call_readlink(struct ctx *c)
{
    char to[128], got[128];
    path_in(c, "sym", to, sizeof(to));
    cr_assert_eq(symlink(c->file, to), 0);
    ssize_t n = io_readlink(to, got, sizeof(got));
    unlink(to);
    if (n >= 0)
        cr_assert_str_eq(got, c->file);
    return n < 0 ? (int)n : 0;
}

static int call_rename(struct ctx *c)
{
    char a[128], b[128];
    path_in(c, "a", a, sizeof(a));
    path_in(c, "b", b, sizeof(b));
    touch(a);
    int rc = io_rename(a, b);
    unlink(a);
    unlink(b);
    return rc;
}

static int call_unlink(struct ctx *c)
{
    char p[128];
    path_in(c, "u", p, sizeof(p));
    touch(p);
    int rc = io_unlink(p);
    unlink(p);
    return rc;
}

static int call_mkdir(struct ctx *c)
{
    char p[128];
    path_in(c, "d", p, sizeof(p));
    int rc = io_mkdir(p, 0700);
    rmdir(p);
    return rc;
}

static int call_rmdir(struct ctx *c)
{
    char p[128];
    path_in(c, "r", p, sizeof(p));
    cr_assert_eq(mkdir(p, 0700), 0);
    int rc = io_rmdir(p);
    rmdir(p);
    return rc;
}

static int call_access(struct ctx *c) { return io_access(c->file, F_OK); }

static int call_flock(struct ctx *c)
{
    int rc = io_flock(c->fd, LOCK_SH);
    flock(c->fd, LOCK_UN);
    return rc;
}

static int count_entry(void *arg, int dirfd, const char *name)
{
    struct ctx *c = arg;
    cr_assert(dirfd >= 0);
    cr_assert(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
    c->entries++;
    return 0;
}

static int call_dir_each(struct ctx *c)
{
    c->entries = 0;
    return io_dir_each(c->dir, count_entry, c);
}

static int call_getrandom(struct ctx *c)
{
    uint64_t v;
    return io_getrandom(&v, sizeof(v), 0);
}

static const struct op_case {
    enum io_op op;
    int (*call)(struct ctx *);
    int err; /* what the injected failure uses: a different errno for each op */
} cases[] = {
    {IO_SHM_OPEN, call_shm_open, EACCES},
    {IO_SHM_UNLINK, call_shm_unlink, EPERM},
    {IO_OPEN, call_open, EMFILE},
    {IO_OPENAT, call_openat, ENFILE},
    {IO_CLOSE, call_close, EIO},
    {IO_FSTAT, call_fstat, EOVERFLOW},
    {IO_FCHMOD, call_fchmod, EROFS},
    {IO_FTRUNCATE, call_ftruncate, EFBIG},
    {IO_FALLOCATE, call_fallocate, ENOSPC},
    {IO_PWRITE, call_pwrite, EDQUOT},
    {IO_PREAD, call_pread, EBADF},
    {IO_WRITE, call_write, ENOSPC},
    {IO_MMAP, call_mmap, ENOMEM},
    {IO_MUNMAP, call_munmap, EINVAL},
    {IO_FSYNC, call_fsync, EIO},
    {IO_FDATASYNC, call_fdatasync, EDQUOT},
    {IO_LINK, call_link, EXDEV},
    {IO_RENAME, call_rename, EBUSY},
    {IO_UNLINK, call_unlink, ENOENT},
    {IO_MKDIR, call_mkdir, EEXIST},
    {IO_RMDIR, call_rmdir, ENOTDIR},
    {IO_ACCESS, call_access, EACCES},
    {IO_FLOCK, call_flock, ENOLCK},
    {IO_OPENDIR, call_dir_each, ENOTDIR},
    {IO_READDIR, call_dir_each, ENOENT},
    {IO_GETRANDOM, call_getrandom, EAGAIN},
    {IO_SYMLINK, call_symlink, EEXIST},
    {IO_READLINK, call_readlink, EINVAL},
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* How many calls of c's op one successful call() makes. */
static uint64_t calls_per_call(const struct op_case *oc, const struct ctx *c)
{
    /* io_dir_each: a readdir per entry, plus ".", "..", and the one that finds the end */
    return oc->op == IO_READDIR ? (uint64_t)c->entries + 3 : 1;
}

/* Fail the nth call of oc's op: every call() before the one making that call succeeds, that
 * one returns exactly -err, and the next one succeeds again (one-shot). */
static void fail_nth(const struct op_case *oc, struct ctx *c, uint64_t nth)
{
    const char *name = io_op_name(oc->op);
    uint64_t start = io_fault_calls(oc->op);
    cr_assert_eq(io_fault_arm(oc->op, nth, oc->err), 0);
    for (int round = 0;; round++) {
        cr_assert(round <= (int)nth, "%s: call %llu never failed", name, (unsigned long long)nth);
        uint64_t before = io_fault_calls(oc->op);
        int rc = oc->call(c);
        uint64_t after = io_fault_calls(oc->op);
        cr_assert(after > before, "%s: its calls are not counted", name);
        if (after < start + nth) {
            cr_assert_eq(rc, 0, "%s: call %llu failed (%d) before call %llu", name,
                         (unsigned long long)after, rc, (unsigned long long)nth);
            cr_assert_eq(after - before, calls_per_call(oc, c), "%s: miscounted", name);
            continue;
        }
        cr_assert_eq(rc, -oc->err, "%s: call %llu returned %d, expected -%d", name,
                     (unsigned long long)nth, rc, oc->err);
        break;
    }
    uint64_t before = io_fault_calls(oc->op);
    cr_assert_eq(oc->call(c), 0, "%s: failed again after its one armed failure", name);
    cr_assert_eq(io_fault_calls(oc->op) - before, calls_per_call(oc, c), "%s: miscounted", name);
}

Test(io, every_op_fails_at_its_nth_call_with_the_errno_chosen)
{
    struct ctx *c = ctx_new();
    cr_assert_eq(NCASES, IO_OP__COUNT, "a case per op");
    for (size_t i = 0; i < NCASES; i++) {
        cr_assert_eq(cases[i].op, (enum io_op)i, "cases in enum order");
        cr_assert_not_null(io_op_name(cases[i].op));
        cr_assert_eq(cases[i].call(c), 0, "%s: fails without a fault armed",
                     io_op_name(cases[i].op));
        fail_nth(&cases[i], c, 1);
        fail_nth(&cases[i], c, 3);
    }
    ctx_free(c);
}

Test(io, disarming_one_op_or_all_lets_every_call_through)
{
    struct ctx *c = ctx_new();
    for (size_t i = 0; i < NCASES; i++)
        cr_assert_eq(io_fault_arm(cases[i].op, 1, cases[i].err), 0);
    cr_assert_eq(io_fault_arm(IO_FSYNC, 0, 0), 0); /* one op */
    cr_assert_eq(call_fsync(c), 0);
    cr_assert_eq(call_fstat(c), -EOVERFLOW, "other ops stay armed");
    for (size_t i = 0; i < NCASES; i++)
        cr_assert_eq(io_fault_arm(cases[i].op, 1, cases[i].err), 0);
    io_fault_disarm_all();
    for (size_t i = 0; i < NCASES; i++)
        cr_assert_eq(cases[i].call(c), 0, "%s: failed after io_fault_disarm_all()",
                     io_op_name(cases[i].op));
    ctx_free(c);
}

Test(io, arming_rejects_what_it_cannot_do)
{
    cr_assert_eq(io_fault_arm(IO_OP__COUNT, 1, EIO), -EINVAL);
    cr_assert_eq(io_fault_arm((enum io_op) - 1, 1, EIO), -EINVAL);
    cr_assert_eq(io_fault_arm(IO_FSYNC, 1, 0), -EINVAL);
    cr_assert_eq(io_fault_arm(IO_FSYNC, 1, -EIO), -EINVAL);
    cr_assert_eq(io_fault_arm(IO_FSYNC, 1, 5000), -EINVAL);
    cr_assert_null(io_op_name(IO_OP__COUNT));
    cr_assert_str_eq(io_op_name(IO_FTRUNCATE), "ftruncate");
}

Test(io, a_spec_arms_each_item_and_a_bad_one_arms_nothing)
{
    struct ctx *c = ctx_new();
    static const char *const bad[] = {
        "nosuch:1:EIO",
        "ftruncate:0:EIO",
        "ftruncate:1:ENOSUCH",
        "ftruncate:1",
        "ftruncate",
        "ftruncate:x:EIO",
        "ftruncate::EIO",
        "ftruncate:1:",
        "ftruncate:1:0",
        "ftruncate:1:EIO,",
        "fsync:1:EIO,,ftruncate:1:EIO",
        "",
        ",",
        "fsync:1:EIO,bad",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(io_fault_arm_spec(bad[i]), -EINVAL, "spec \"%s\" accepted", bad[i]);
        cr_assert_eq(call_fsync(c), 0, "spec \"%s\" armed something", bad[i]);
        cr_assert_eq(call_ftruncate(c), 0, "spec \"%s\" armed something", bad[i]);
    }
    cr_assert_eq(io_fault_arm_spec("ftruncate:2:ENOSPC,fsync:1:5"), 0);
    cr_assert_eq(call_fsync(c), -EIO, "a number names an errno (5: EIO)");
    cr_assert_eq(call_ftruncate(c), 0);
    cr_assert_eq(call_ftruncate(c), -ENOSPC);
    cr_assert_eq(call_ftruncate(c), 0);
    ctx_free(c);
}

Test(io, SHMQ_IO_FAULT_is_read_at_the_first_call)
{
    /* Criterion runs each test in a process of its own: nothing has called the layer yet */
    for (int op = 0; op < IO_OP__COUNT; op++)
        cr_assert_eq(io_fault_calls((enum io_op)op), 0, "this process made I/O calls already");
    setenv("SHMQ_IO_FAULT", "getrandom:2:EACCES,access:1:ENOENT", 1);
    struct ctx *c = ctx_new(); /* plain system calls only */
    cr_assert_eq(call_getrandom(c), 0);
    cr_assert_eq(call_getrandom(c), -EACCES);
    cr_assert_eq(call_access(c), -ENOENT);
    cr_assert_eq(call_getrandom(c), 0);
    cr_assert_eq(call_access(c), 0);
    unsetenv("SHMQ_IO_FAULT");
    ctx_free(c);
}

/* Threads calling one op at once: each call is counted once, and of all of them exactly the
 * armed one fails. */
#define THREADS 4
#define PER_THREAD 2000

struct race {
    const char *path;
    _Atomic int failures;
};

static void *hammer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        int rc = io_access(r->path, F_OK);
        if (rc == -EDQUOT)
            atomic_fetch_add(&r->failures, 1);
        else if (rc != 0)
            atomic_fetch_add(&r->failures, 1000); /* anything else is wrong */
    }
    return NULL;
}

Test(io, concurrent_calls_are_counted_once_and_fail_exactly_once)
{
    struct ctx *c = ctx_new();
    struct race r = {.path = c->file};
    uint64_t start = io_fault_calls(IO_ACCESS);
    cr_assert_eq(io_fault_arm(IO_ACCESS, THREADS * PER_THREAD / 2, EDQUOT), 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, hammer, &r), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&r.failures), 1);
    cr_assert_eq(io_fault_calls(IO_ACCESS) - start, (uint64_t)THREADS * PER_THREAD);
    ctx_free(c);
}

/* ---- Preallocation and the file size limit. ---- */

/* io_preallocate on a file system that cannot allocate (EOPNOTSUPP, injected): zeros written
 * instead, the range reserved all the same; and a real failure of the fallback comes back. */
Test(io, preallocate_falls_back_to_writing_zeros)
{
    struct ctx *c = ctx_new();
    cr_assert_eq(io_fault_arm(IO_FALLOCATE, 1, EOPNOTSUPP), 0);
    uint64_t writes = io_fault_calls(IO_PWRITE);
    h_assert_rc(io_preallocate(c->fd, 0, 200000), 0);
    /* io_write_zeros: one call for fault injection, however many writes it takes */
    cr_assert_eq(io_fault_calls(IO_PWRITE) - writes, 1, "no zeros were written");
    struct stat st;
    cr_assert_eq(fstat(c->fd, &st), 0);
    cr_assert_eq(st.st_size, 200000);
    cr_assert(st.st_blocks * 512 >= 200000, "only %lld bytes allocated", (long long)st.st_blocks * 512);
    cr_assert_eq(io_fault_arm(IO_FALLOCATE, 1, EOPNOTSUPP), 0);
    cr_assert_eq(io_fault_arm(IO_PWRITE, 1, ENOSPC), 0);
    h_assert_rc(io_preallocate(c->fd, 0, 200000), -ENOSPC);
    io_fault_disarm_all();
    ctx_free(c);
}

/* Under RLIMIT_FSIZE, every call that would grow a file past the limit returns -EFBIG and the
 * process gets no SIGXFSZ (the child would die by it: exit status 153). */
static int fsize_child(void *arg)
{
    struct ctx *c = arg;
    struct rlimit rl = {8192, 8192};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 10;
    if (io_ftruncate(c->fd, 8192) != 0 || io_ftruncate(c->fd, 8193) != -EFBIG)
        return 11;
    if (io_fallocate(c->fd, 4096, 8192) != -EFBIG || io_preallocate(c->fd, 0, 1 << 20) != -EFBIG)
        return 12;
    if (io_pwrite(c->fd, "x", 1, 8191) != 0 || io_pwrite(c->fd, "xy", 2, 8191) != -EFBIG)
        return 13;
    int fd = open(c->file, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0 || io_write(fd, "x", 1) != -EFBIG)
        return 14;
    close(fd);
    return 0;
}

Test(io, a_file_size_limit_is_EFBIG_never_SIGXFSZ)
{
    struct ctx *c = ctx_new();
    h_assert_child_ok(h_fork(fsize_child, c), 30000, "RLIMIT_FSIZE child");
    ctx_free(c);
}

/* ---- End to end: through shmq_create(). ---- */

static bool segment_exists(const char *name)
{
    char path[128];
    h_shm_path(name, path, sizeof(path));
    struct stat st;
    return stat(path, &st) == 0;
}

Test(io, create_whose_segment_cannot_be_sized_returns_that_errno_and_leaves_nothing)
{
    const char *name = h_qname("io-create");
    shmq_config_t cfg = h_small_config(16, 64, 4); /* default durability: with a log */
    cfg.wal_file_size = 1u << 20;
    shmq_t *q = NULL;
    /* the segment's ftruncate is the first one: log files are made on first use */
    cr_assert_eq(io_fault_arm(IO_FTRUNCATE, 1, ENOSPC), 0);
    h_assert_rc(shmq_create(name, &cfg, &q), -ENOSPC);
    cr_assert_null(q);
    cr_assert(!segment_exists(name), "a failed create left its segment behind");
    h_assert_rc(shmq_create(name, &cfg, &q), 0); /* nothing in the way */
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Fail each I/O call shmq_create() makes (without a log), one at a time: it returns the errno
 * injected or succeeds (the call was one whose failure does not matter, like a close), and a
 * failed create leaves no segment. */
Test(io, create_fails_cleanly_at_each_of_its_io_calls)
{
    const char *name = h_qname("io-each");
    shmq_config_t cfg = h_small_config(16, 64, 4);
    cfg.durability = SHMQ_DURABILITY_NONE;
    uint64_t before[IO_OP__COUNT], made[IO_OP__COUNT];
    for (int op = 0; op < IO_OP__COUNT; op++)
        before[op] = io_fault_calls((enum io_op)op);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    for (int op = 0; op < IO_OP__COUNT; op++)
        made[op] = io_fault_calls((enum io_op)op) - before[op];
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
    cr_assert(made[IO_SHM_OPEN] == 1 && made[IO_FTRUNCATE] == 1 && made[IO_MMAP] == 1,
              "shmq_create made %llu shm_open, %llu ftruncate, %llu mmap calls",
              (unsigned long long)made[IO_SHM_OPEN], (unsigned long long)made[IO_FTRUNCATE],
              (unsigned long long)made[IO_MMAP]);

    int failed = 0;
    for (int op = 0; op < IO_OP__COUNT; op++) {
        for (uint64_t n = 1; n <= made[op]; n++) {
            cr_assert_eq(io_fault_arm((enum io_op)op, n, EDQUOT), 0);
            q = NULL;
            int rc = shmq_create(name, &cfg, &q);
            io_fault_disarm_all();
            if (rc == 0) {
                h_assert_rc(shmq_close(q), 0);
                h_assert_rc(shmq_unlink(name), 0);
                continue;
            }
            failed++;
            cr_assert_eq(rc, -EDQUOT, "%s call %llu failed: create returned %d (%s)",
                         io_op_name((enum io_op)op), (unsigned long long)n, rc, shmq_strerror(rc));
            cr_assert(!segment_exists(name), "%s call %llu failed: segment left behind",
                      io_op_name((enum io_op)op), (unsigned long long)n);
        }
    }
    cr_assert(failed >= 4, "only %d injected failures reached the caller", failed);
}

#else

Test(io, needs_crash_points) { cr_skip_test("the library was built without SHMQ_CRASH_POINTS"); }

#endif
