/*
 * io.c - the I/O layer's wrappers and, in test builds, its fault injection (see io.h).
 *
 * Fault injection state, per op: calls (a counter) and fail_at (the call number to fail, 0:
 * none) with its err. A call takes its number with one fetch-add, so of any number of threads
 * exactly one gets the number armed, and fails.
 */
#define _GNU_SOURCE /* fallocate() */
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nocancel.h"

#ifdef SHMQ_CRASH_POINTS
#include <pthread.h>
#include <stdlib.h>

struct fault {
    _Atomic uint64_t calls;   /* calls so far */
    _Atomic uint64_t fail_at; /* the call number to fail, 0: none */
    _Atomic int err;          /* what it fails with (positive) */
};
static struct fault faults[IO_OP__COUNT];
static struct fault any;          /* the nth call of any op (io_fault_arm_any) */
static _Atomic bool any_fired;    /* that call came and was failed */
static _Atomic int any_op;        /* its op */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static const char *const op_names[IO_OP__COUNT] = {
    [IO_SHM_OPEN] = "shm_open",   [IO_SHM_UNLINK] = "shm_unlink",
    [IO_OPEN] = "open",           [IO_OPENAT] = "openat",
    [IO_CLOSE] = "close",         [IO_FSTAT] = "fstat",
    [IO_FCHMOD] = "fchmod",       [IO_FTRUNCATE] = "ftruncate",
    [IO_FALLOCATE] = "fallocate", [IO_PWRITE] = "pwrite",
    [IO_PREAD] = "pread",         [IO_WRITE] = "write",
    [IO_MMAP] = "mmap",           [IO_MUNMAP] = "munmap",
    [IO_FSYNC] = "fsync",         [IO_FDATASYNC] = "fdatasync",
    [IO_LINK] = "link",           [IO_RENAME] = "rename",
    [IO_UNLINK] = "unlink",       [IO_MKDIR] = "mkdir",
    [IO_RMDIR] = "rmdir",         [IO_ACCESS] = "access",
    [IO_FLOCK] = "flock",         [IO_OPENDIR] = "opendir",
    [IO_READDIR] = "readdir",     [IO_GETRANDOM] = "getrandom",
    [IO_SYMLINK] = "symlink",     [IO_READLINK] = "readlink",
};

/* The errno names a spec may use (or a number). */
static const struct {
    const char *name;
    int err;
} err_names[] = {
    {"EIO", EIO},
    {"ENOSPC", ENOSPC},
    {"EDQUOT", EDQUOT},
    {"EFBIG", EFBIG},
    {"EROFS", EROFS},
    {"EACCES", EACCES},
    {"EPERM", EPERM},
    {"ENOENT", ENOENT},
    {"EEXIST", EEXIST},
    {"ENOMEM", ENOMEM},
    {"EMFILE", EMFILE},
    {"ENFILE", ENFILE},
    {"EINTR", EINTR},
    {"EAGAIN", EAGAIN},
    {"EBUSY", EBUSY},
    {"EINVAL", EINVAL},
    {"ENOTDIR", ENOTDIR},
    {"EISDIR", EISDIR},
    {"EBADF", EBADF},
    {"ENODEV", ENODEV},
    {"ENXIO", ENXIO},
    {"EXDEV", EXDEV},
    {"ESTALE", ESTALE},
    {"EOVERFLOW", EOVERFLOW},
    {"ENAMETOOLONG", ENAMETOOLONG},
    {"EOPNOTSUPP", EOPNOTSUPP},
};

const char *io_op_name(enum io_op op) { return (unsigned)op < IO_OP__COUNT ? op_names[op] : NULL; }

int io_fault_arm(enum io_op op, uint64_t nth, int err)
{
    if ((unsigned)op >= IO_OP__COUNT || (nth && (err <= 0 || err >= 4096)))
        return -EINVAL;
    struct fault *f = &faults[op];
    /* relaxed: err is published by the release store of fail_at below */
    atomic_store_explicit(&f->err, err, memory_order_relaxed);
    /* relaxed load: "from now" is as exact as a concurrent caller lets it be */
    uint64_t now = atomic_load_explicit(&f->calls, memory_order_relaxed);
    /* release: pairs with the acquire load in fault(): a caller that sees fail_at sees err */
    atomic_store_explicit(&f->fail_at, nth ? now + nth : 0, memory_order_release);
    return 0;
}

uint64_t io_fault_calls(enum io_op op)
{
    /* relaxed: a tally, ordered against nothing */
    return (unsigned)op < IO_OP__COUNT
               ? atomic_load_explicit(&faults[op].calls, memory_order_relaxed)
               : 0;
}

void io_fault_disarm_all(void)
{
    for (int op = 0; op < IO_OP__COUNT; op++)
        io_fault_arm((enum io_op)op, 0, 0);
    io_fault_arm_any(0, 0);
}

int io_fault_arm_any(uint64_t nth, int err)
{
    if (nth && (err <= 0 || err >= 4096))
        return -EINVAL;
    /* relaxed / release / acquire: as in io_fault_arm() */
    atomic_store_explicit(&any.err, err, memory_order_relaxed);
    atomic_store_explicit(&any_fired, false, memory_order_relaxed);
    uint64_t now = atomic_load_explicit(&any.calls, memory_order_relaxed);
    atomic_store_explicit(&any.fail_at, nth ? now + nth : 0, memory_order_release);
    return 0;
}

bool io_fault_any_fired(void)
{
    /* relaxed: read after the calls it reports on, by the thread that made them */
    return atomic_load_explicit(&any_fired, memory_order_relaxed);
}

enum io_op io_fault_any_op(void)
{
    /* relaxed: as io_fault_any_fired() */
    return (enum io_op)atomic_load_explicit(&any_op, memory_order_relaxed);
}

static int parse_err(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof(err_names) / sizeof(err_names[0]); i++)
        if (strlen(err_names[i].name) == n && strncmp(err_names[i].name, s, n) == 0)
            return err_names[i].err;
    char *end;
    long v = strtol(s, &end, 10);
    return end == s + n && v > 0 && v < 4096 ? (int)v : -1;
}

/* One "op:nth:ERR" item of a spec; on success *op, *nth, *err. */
static int parse_item(const char *s, size_t n, enum io_op *op, uint64_t *nth, int *err)
{
    const char *c1 = memchr(s, ':', n);
    const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - s)) : NULL;
    if (!c2)
        return -EINVAL;
    int found = -1;
    for (int i = 0; i < IO_OP__COUNT && found < 0; i++)
        if (strlen(op_names[i]) == (size_t)(c1 - s) && strncmp(op_names[i], s, c1 - s) == 0)
            found = i;
    char *end;
    unsigned long long v = strtoull(c1 + 1, &end, 10);
    int e = parse_err(c2 + 1, n - (size_t)(c2 + 1 - s));
    if (found < 0 || end != c2 || c1 + 1 == c2 || v == 0 || e < 0)
        return -EINVAL;
    *op = (enum io_op)found;
    *nth = v;
    *err = e;
    return 0;
}

int io_fault_arm_spec(const char *spec)
{
    if (!spec)
        return -EINVAL;
    /* check every item before arming any */
    for (int arm = 0; arm < 2; arm++) {
        for (const char *s = spec;; s++) {
            size_t n = strcspn(s, ",");
            enum io_op op;
            uint64_t nth;
            int err;
            if (parse_item(s, n, &op, &nth, &err) != 0)
                return -EINVAL; /* an empty item too: "", "a,,b", "a," */
            if (arm)
                io_fault_arm(op, nth, err);
            s += n;
            if (!*s)
                break;
        }
    }
    return 0;
}

static void read_env(void)
{
    const char *spec = getenv("SHMQ_IO_FAULT");
    if (spec && *spec)
        io_fault_arm_spec(spec); /* a bad spec arms nothing */
}

/* Count a call of op: 0, or the -errno it is to fail with. */
static int fault(enum io_op op)
{
    pthread_once(&env_once, read_env);
    struct fault *f = &faults[op];
    /* relaxed: the number only has to be unique; fail_at's acquire orders err */
    uint64_t n = atomic_fetch_add_explicit(&f->calls, 1, memory_order_relaxed) + 1;
    /* relaxed: as above, for the count over every op */
    uint64_t n_any = atomic_fetch_add_explicit(&any.calls, 1, memory_order_relaxed) + 1;
    /* acquire: pairs with the release store in io_fault_arm_any() */
    if (atomic_load_explicit(&any.fail_at, memory_order_acquire) == n_any) {
        atomic_store_explicit(&any_op, (int)op, memory_order_relaxed);
        atomic_store_explicit(&any_fired, true, memory_order_relaxed);
        return -atomic_load_explicit(&any.err, memory_order_relaxed);
    }
    /* acquire: pairs with the release store in io_fault_arm() */
    if (atomic_load_explicit(&f->fail_at, memory_order_acquire) != n)
        return 0;
    return -atomic_load_explicit(&f->err, memory_order_relaxed);
}

#define FAULT(op)                                                                                  \
    do {                                                                                           \
        int fault_err_ = fault(op);                                                                \
        if (fault_err_)                                                                            \
            return fault_err_;                                                                     \
    } while (0)
#else
#define FAULT(op) ((void)0)
#endif

/* A system call's -1 as -errno, anything else as it is. */
static int ret(int r) { return r < 0 ? -errno : r; }

int io_shm_open(const char *name, int flags, mode_t mode)
{
    FAULT(IO_SHM_OPEN);
    return ret(NOCANCEL(shm_open(name, flags, mode)));
}

int io_open(const char *path, int flags, mode_t mode)
{
    FAULT(IO_OPEN);
    return ret(NOCANCEL(open(path, flags, mode)));
}

int io_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    FAULT(IO_OPENAT);
    return ret(NOCANCEL(openat(dirfd, path, flags, mode)));
}

int io_close(int fd)
{
#ifdef SHMQ_CRASH_POINTS
    int err = fault(IO_CLOSE);
    if (err) {
        NOCANCEL(close(fd)); /* a failed close releases the descriptor all the same */
        return err;
    }
#endif
    return ret(NOCANCEL(close(fd)));
}

int io_shm_unlink(const char *name)
{
    FAULT(IO_SHM_UNLINK);
    return ret(shm_unlink(name));
}

int io_fstat(int fd, struct stat *st)
{
    FAULT(IO_FSTAT);
    return ret(fstat(fd, st));
}

int io_fchmod(int fd, mode_t mode)
{
    FAULT(IO_FCHMOD);
    return ret(fchmod(fd, mode));
}

/*
 * -EFBIG if a file would grow to end bytes past RLIMIT_FSIZE: the kernel answers such a call
 * with SIGXFSZ, whose default action kills the process, and then EFBIG. Checked before the call
 * instead (a setrlimit() racing the call is not covered: nobody lowers their own limit under
 * their own feet). Only for the calls that can grow a file; one getrlimit(), off the fast path.
 */
static int fsize_check(uint64_t end)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0;
    return end > (uint64_t)rl.rlim_cur ? -EFBIG : 0;
}

int io_ftruncate(int fd, uint64_t size)
{
    FAULT(IO_FTRUNCATE);
    if (size > (uint64_t)INT64_MAX)
        return -EFBIG;
    int err = fsize_check(size);
    return err ? err : ret(ftruncate(fd, (off_t)size));
}

int io_fallocate(int fd, uint64_t off, uint64_t len)
{
    FAULT(IO_FALLOCATE);
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return -EFBIG;
    int r = fsize_check(off + len);
    if (r)
        return r;
    while ((r = NOCANCEL(fallocate(fd, 0, (off_t)off, (off_t)len))) != 0 && errno == EINTR) {
    }
    return ret(r);
}

static int write_all(int fd, const void *buf, size_t len, int64_t at);

int io_preallocate(int fd, uint64_t off, uint64_t len)
{
    int err = io_fallocate(fd, off, len);
    /* the file system cannot allocate without writing: write the zeros ourselves */
    return err == -EOPNOTSUPP ? io_write_zeros(fd, off, len) : err;
}

int io_write_zeros(int fd, uint64_t off, uint64_t len)
{
    FAULT(IO_PWRITE);
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return -EFBIG;
    int err = fsize_check(off + len);
    static const char zeros[65536];
    for (uint64_t done = 0; done < len && !err;) {
        size_t n = len - done < sizeof(zeros) ? (size_t)(len - done) : sizeof(zeros);
        err = write_all(fd, zeros, n, (int64_t)(off + done));
        done += n;
    }
    return err;
}

/* The loop behind io_pwrite (at >= 0: at that offset) and io_write (at < 0). */
static int write_all(int fd, const void *buf, size_t len, int64_t at)
{
    const char *p = buf;
    while (len) {
        ssize_t n = NOCANCEL(at >= 0 ? pwrite(fd, p, len, (off_t)at) : write(fd, p, len));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* no progress and no errno to tell why (not seen on Linux files) */
        p += n;
        len -= (size_t)n;
        if (at >= 0)
            at += n;
    }
    return 0;
}

int io_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    FAULT(IO_PWRITE);
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return -EFBIG;
    int err = fsize_check(off + len);
    return err ? err : write_all(fd, buf, len, (int64_t)off);
}

/* Where a write at the file position lands: the end for O_APPEND, else the position. */
static int64_t write_at(int fd)
{
    int fl = NOCANCEL(fcntl(fd, F_GETFL));
    struct stat st;
    if (fl >= 0 && (fl & O_APPEND))
        return fstat(fd, &st) == 0 ? (int64_t)st.st_size : -1;
    return (int64_t)lseek(fd, 0, SEEK_CUR);
}

int io_write(int fd, const void *buf, size_t len)
{
    FAULT(IO_WRITE);
    int64_t at = write_at(fd);
    int err = at >= 0 ? fsize_check((uint64_t)at + len) : 0; /* a pipe: no size limit */
    return err ? err : write_all(fd, buf, len, -1);
}

ssize_t io_pread(int fd, void *buf, size_t len, uint64_t off)
{
    FAULT(IO_PREAD);
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)SSIZE_MAX)
        return -EINVAL;
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = NOCANCEL(pread(fd, p + got, len - got, (off_t)(off + got)));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break; /* end of file */
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int io_mmap(int fd, uint64_t off, size_t len, int prot, int flags, void **out)
{
    FAULT(IO_MMAP);
    if (off > (uint64_t)INT64_MAX)
        return -EINVAL;
    void *p = mmap(NULL, len, prot, flags, fd, (off_t)off);
    if (p == MAP_FAILED)
        return -errno;
    *out = p;
    return 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

int io_populate_write(void *addr, size_t len)
{
    FAULT(IO_MMAP);
    int r;
    while ((r = madvise(addr, len, MADV_POPULATE_WRITE)) != 0 && errno == EINTR) {
    }
    return ret(r);
}

int io_munmap(void *addr, size_t len)
{
    FAULT(IO_MUNMAP);
    return ret(munmap(addr, len));
}

int io_fsync(int fd)
{
    FAULT(IO_FSYNC);
    return ret(NOCANCEL(fsync(fd)));
}

int io_fdatasync(int fd)
{
    FAULT(IO_FDATASYNC);
    return ret(NOCANCEL(fdatasync(fd)));
}

int io_datasync_map(void *addr, size_t len)
{
    FAULT(IO_FDATASYNC);
    return ret(NOCANCEL(msync(addr, len, MS_SYNC)));
}

int io_fsync_dir(const char *path)
{
    int dfd = io_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0)
        return dfd;
    int err = io_fsync(dfd);
    io_close(dfd);
    return err;
}

int io_link(const char *from, const char *to) { return io_linkat(AT_FDCWD, from, AT_FDCWD, to); }

int io_linkat(int fromdir, const char *from, int todir, const char *to)
{
    FAULT(IO_LINK);
    return ret(linkat(fromdir, from, todir, to, 0));
}

int io_symlink(const char *target, const char *path)
{
    FAULT(IO_SYMLINK);
    return ret(symlink(target, path));
}

ssize_t io_readlink(const char *path, char *buf, size_t size)
{
    FAULT(IO_READLINK);
    if (size == 0)
        return -ENAMETOOLONG;
    ssize_t n = readlink(path, buf, size);
    if (n < 0)
        return -errno;
    if ((size_t)n >= size)
        return -ENAMETOOLONG; /* possibly cut short */
    buf[n] = 0;
    return n;
}

int io_rename(const char *from, const char *to)
{
    FAULT(IO_RENAME);
    return ret(rename(from, to));
}

int io_unlink(const char *path) { return io_unlinkat(AT_FDCWD, path); }

int io_unlinkat(int dirfd, const char *path)
{
    FAULT(IO_UNLINK);
    return ret(unlinkat(dirfd, path, 0));
}

int io_mkdir(const char *path, mode_t mode)
{
    FAULT(IO_MKDIR);
    return ret(mkdir(path, mode));
}

int io_rmdir(const char *path)
{
    FAULT(IO_RMDIR);
    return ret(rmdir(path));
}

int io_access(const char *path, int mode) { return io_faccessat(AT_FDCWD, path, mode); }

int io_faccessat(int dirfd, const char *path, int mode)
{
    FAULT(IO_ACCESS);
    return ret(faccessat(dirfd, path, mode, 0));
}

int io_fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    FAULT(IO_FSTAT);
    return ret(fstatat(dirfd, path, st, flags));
}

int io_flock(int fd, int op)
{
    FAULT(IO_FLOCK);
    int r;
    while ((r = NOCANCEL(flock(fd, op))) != 0 && errno == EINTR) {
    }
    return ret(r);
}

/* One readdir: 0 and *e (NULL at the end), or -errno. */
static int read_entry(DIR *d, struct dirent **e)
{
    FAULT(IO_READDIR);
    errno = 0;
    *e = readdir(d);
    return *e || errno == 0 ? 0 : -errno;
}

int io_dir_each(const char *path, int (*fn)(void *arg, int dirfd, const char *name), void *arg)
{
    return io_dir_each_at(AT_FDCWD, path, fn, arg);
}

int io_dir_each_at(int at, const char *path,
                   int (*fn)(void *arg, int dirfd, const char *name), void *arg)
{
    FAULT(IO_OPENDIR);
    /* opendir(3)'s flags, relative to at: an open file description of its own */
    int fd = NOCANCEL(openat(at, path, O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_CLOEXEC));
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = -errno;
        NOCANCEL(close(fd));
        return err;
    }
    int rc;
    struct dirent *e;
    while ((rc = read_entry(d, &e)) == 0 && e) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if ((rc = fn(arg, dirfd(d), e->d_name)) != 0)
            break;
    }
    NOCANCEL(closedir(d));
    return rc;
}

int io_getrandom(void *buf, size_t len, unsigned flags)
{
    FAULT(IO_GETRANDOM);
    char *p = buf;
    while (len) {
        ssize_t n = NOCANCEL(getrandom(p, len, flags));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EAGAIN; /* no bytes and no errno (not seen on Linux) */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
