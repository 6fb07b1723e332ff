/*
 * loghead.c - the log's head file (loghead.h; bytes in docs/FORMAT.md 8.11).
 */
#include "loghead.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crashpoint.h"
#include "crc32c.h"
#include "io.h"
#include "shmq/shmq.h"

_Static_assert(sizeof(struct log_head) <= LOG_HEAD_SIZE, "head fits its file");

static uint32_t head_crc(const struct log_head *h)
{
    return crc32c(0, h, offsetof(struct log_head, crc));
}

/* A new head's static part, written while the file is still empty (under the exclusive lock). */
static int init_head(int fd, uint32_t mode)
{
    struct log_head h;
    memset(&h, 0, sizeof(h));
    h.magic = LOG_HEAD_MAGIC;
    h.version = WAL_VERSION;
    h.size = LOG_HEAD_SIZE;
    h.crc = head_crc(&h);
    int err = io_fchmod(fd, mode); /* exactly: a shared queue's users map it read-write */
    if (!err)
        err = io_ftruncate(fd, LOG_HEAD_SIZE);
    if (!err)
        err = io_pwrite(fd, &h, offsetof(struct log_head, gen), 0);
    return err ? err : io_fsync(fd);
}

/* A head whose making failed (I/O error, full disk) or was cut by a crash before its static part
 * was written: shorter than a head, or its magic still 0. A creator (under the exclusive lock)
 * makes it again, so a failed create leaves nothing in the way of the next one. */
static bool never_made(int fd, uint64_t size)
{
    __typeof__(((struct log_head *)0)->magic) magic = 0;
    if (size != LOG_HEAD_SIZE)
        return size < LOG_HEAD_SIZE;
    return io_pread(fd, &magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) && magic == 0;
}

int loghead_open(const char *dir, bool create, uint32_t mode, struct loghead *out)
{
    char path[SHMQ_LOG_DIR_MAX + 96];
    snprintf(path, sizeof(path), "%s/head", dir);
    int fd = io_open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK | (create ? O_CREAT : 0),
                     create ? mode : 0);
    if (fd < 0)
        return fd;
    struct stat st;
    int err = io_fstat(fd, &st);
    if (!err && !S_ISREG(st.st_mode))
        err = -EBADMSG;
    if (!err && create && never_made(fd, (uint64_t)st.st_size))
        err = init_head(fd, mode);
    else if (!err && st.st_size != LOG_HEAD_SIZE)
        err = -EBADMSG; /* checked before mapping: no access past the file's end (SIGBUS) */
    void *base = NULL;
    if (!err)
        err = io_mmap(fd, 0, LOG_HEAD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, &base);
    if (err) {
        io_close(fd);
        return err;
    }
    struct log_head *h = base;
    if (h->magic != LOG_HEAD_MAGIC || h->size != LOG_HEAD_SIZE || head_crc(h) != h->crc)
        err = -EBADMSG;
    else if (h->version != WAL_VERSION)
        err = -EPROTO;
    if (err) {
        io_munmap(base, LOG_HEAD_SIZE);
        io_close(fd);
        return err;
    }
    out->h = h;
    out->fd = fd;
    return 0;
}

int loghead_make(const char *dir, uint32_t mode, uint64_t gen, struct loghead *out)
{
    char path[SHMQ_LOG_DIR_MAX + 96], tmp[SHMQ_LOG_DIR_MAX + 128];
    snprintf(path, sizeof(path), "%s/head", dir);
    snprintf(tmp, sizeof(tmp), "%s/head.tmp.%d", dir, (int)getpid());
    int fd = io_open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return fd;
    int err = init_head(fd, mode); /* the static part, fsynced */
    uint64_t words[2] = {gen, gen};
    if (!err)
        err = io_pwrite(fd, words, sizeof(words), offsetof(struct log_head, gen));
    if (!err)
        err = io_fsync(fd);
    io_close(fd);
    if (!err)
        err = io_rename(tmp, path);
    if (err) {
        io_unlink(tmp);
        return err;
    }
    io_fsync_dir(dir); /* the new name is durable */
    return loghead_open(dir, false, 0, out);
}

uint64_t loghead_first_gen(void)
{
    uint64_t r = 0;
    if (io_getrandom(&r, sizeof(r), GRND_NONBLOCK) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 40);
    }
    r &= (UINT64_C(1) << 62) - 1; /* room for 2^62 rebuilds; never LOG_GEN_DELETED */
    return r ? r : 1;
}

int loghead_fence_deleted(const char *dir)
{
    struct loghead lh;
    int err = loghead_open(dir, false, 0, &lh);
    if (err)
        return err;
    /* seq_cst, as E3: a writer whose E2 (fence, load) misses this store wrote its record before
     * it, into a file that is about to be deleted with the queue */
    atomic_store(&lh.h->gen, LOG_GEN_DELETED);
    atomic_store(&lh.h->complete_gen, LOG_GEN_DELETED);
    loghead_close(&lh);
    return 0;
}

bool loghead_valid(const struct log_head *h)
{
    return h->magic == LOG_HEAD_MAGIC && h->size == LOG_HEAD_SIZE && head_crc(h) == h->crc &&
           h->version == WAL_VERSION;
}

void loghead_close(struct loghead *lh)
{
    if (!lh || !lh->h)
        return;
    io_munmap(lh->h, LOG_HEAD_SIZE);
    io_close(lh->fd);
    lh->h = NULL;
    lh->fd = -1;
}

int loghead_sync(struct loghead *lh) { return io_fsync(lh->fd); }

/* Is fd (flocked) still the file path (relative to at) names? 1, 0 (unlinked, or the name is
 * another file's now), or -errno. */
static int still_named(int fd, int at, const char *path)
{
    struct stat mine, named;
    int err = io_fstat(fd, &mine);
    if (err)
        return err;
    if (mine.st_nlink == 0)
        return 0;
    err = io_fstatat(at, path, &named, 0);
    if (err == -ENOENT)
        return 0;
    if (err)
        return err;
    return mine.st_dev == named.st_dev && mine.st_ino == named.st_ino;
}

/*
 * Open (made with file mode `mode` if missing) and flock the lock file at path, relative to at.
 * A lock on a file that no longer has the name locks nothing: shmq_unlink() renames the whole
 * directory away and removes it, .recover with it, while it holds the lock, and a locker that opened the file before
 * and waited gets the lock of an inode nobody else will ever lock again, while a queue made
 * again by the name locks its new .recover (review R2-1: such a recovery bumped the new queue's
 * generation, fencing all its processes). So after the flock the name is checked: still ours,
 * or we start again, and find the directory gone (-ENOENT: the queue was deleted) or the new
 * file. A delete releases its lock only after its rmdir, so the retry sees the outcome.
 */
static int lock_file(int at, const char *path, int op, uint32_t mode)
{
    for (;;) {
        int fd = io_openat(at, path, O_RDONLY | O_CLOEXEC, 0);
        if (fd == -ENOENT && mode &&
            (fd = io_openat(at, path, O_RDONLY | O_CREAT | O_CLOEXEC, mode)) >= 0)
            io_fchmod(fd, mode); /* best effort: the umask must not keep a shared queue's users out */
        if (fd < 0)
            return fd;
        CRASH_POINT(lock_before_flock);
        int err = io_flock(fd, op);
        if (!err && (err = still_named(fd, at, path)) == 1)
            return fd;
        io_close(fd);
        if (err)
            return err;
    }
}

int loghead_lock(const char *dir, int op, uint32_t mode)
{
    char path[SHMQ_LOG_DIR_MAX + 96];
    snprintf(path, sizeof(path), "%s/.recover", dir);
    return lock_file(AT_FDCWD, path, op, mode);
}

int loghead_lock_at(int dirfd, int op, uint32_t mode)
{
    return lock_file(dirfd, ".recover", op, mode);
}
