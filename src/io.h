/*
 * io.h - every file, directory and mapping operation of the library, in one place.
 *
 * In the spirit of SQLite's VFS: the library's sources never call shm_open, open, ftruncate,
 * mmap, fsync, rename, ... themselves; they call io_*(). Each wrapper makes the one system call
 * (or the loop that a short write or EINTR calls for) and returns 0 (or a value >= 0: a
 * descriptor, a byte count) or a NEGATIVE errno that is the real cause, never a blanket -EIO;
 * callers do not read errno. The wrappers keep no state and take no lock:
 * they are as thread-safe as the calls they wrap.
 *
 * What stays outside: reading /proc/PID/stat for liveness (registry.c) is asking the kernel about
 * a process, not storage; it has its own failure rule (no file: the process is gone) and is not
 * a call a storage fault test should fail. The futex calls (wait.c, wal.c), clock reads and the
 * getrandom() that seeds seen.c's hash table are not file operations either (the getrandom()
 * whose bytes go into a log file's header is: io_getrandom).
 *
 * Fault injection (test builds only). With SHMQ_CRASH_POINTS defined, each wrapper first counts
 * its call per operation and may fail it on purpose: io_fault_arm(op, nth, err) makes the nth
 * call of op from now on return -err without making the call (io_close closes the descriptor
 * all the same, as Linux does when close fails). A test can thus count the calls an operation
 * makes (io_fault_calls), then fail each of them in turn. The environment variable
 *   SHMQ_IO_FAULT=op:nth:ERRNAME[,op:nth:ERRNAME...]     e.g. ftruncate:1:ENOSPC,fdatasync:3:EIO
 * is read once per process, at its first I/O call, and arms the same way (nth counted from the
 * process's first call; ERRNAME an errno name or number). It reaches programs that link
 * shmq_internal (the tests and anything they build); the tools under tools/ link the installed,
 * crash-point-free library, so the `shmq` CLI and the daemons ignore it. Without
 * SHMQ_CRASH_POINTS none of this is compiled: the installed libraries carry no io_fault_*
 * symbol (cmake/check-install.sh checks).
 */
#ifndef SHMQ_IO_H
#define SHMQ_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* One per wrapper: the unit that fault injection counts and fails. */
enum io_op {
    IO_SHM_OPEN,
    IO_SHM_UNLINK,
    IO_OPEN,
    IO_OPENAT,
    IO_CLOSE,
    IO_FSTAT,
    IO_FCHMOD,
    IO_FTRUNCATE,
    IO_FALLOCATE,
    IO_PWRITE,
    IO_PREAD,
    IO_WRITE,
    IO_MMAP,
    IO_MUNMAP,
    IO_FSYNC,
    IO_FDATASYNC,
    IO_LINK,
    IO_RENAME,
    IO_UNLINK,
    IO_MKDIR,
    IO_RMDIR,
    IO_ACCESS,
    IO_FLOCK,
    IO_OPENDIR,
    IO_READDIR,
    IO_GETRANDOM,
    IO_SYMLINK,
    IO_READLINK,
    IO_OP__COUNT
};

/* Descriptors: >= 0, or -errno. */
int io_shm_open(const char *name, int flags, mode_t mode);
int io_open(const char *path, int flags, mode_t mode);
int io_openat(int dirfd, const char *path, int flags, mode_t mode);

/* 0 or -errno. The descriptor is closed either way. */
int io_close(int fd);

int io_shm_unlink(const char *name);
int io_fstat(int fd, struct stat *st);
int io_fchmod(int fd, mode_t mode);
/*
 * The calls that can grow a file (io_ftruncate, io_fallocate, io_preallocate, io_pwrite,
 * io_write) return -EFBIG, without making the call, when the file would grow past the process's
 * RLIMIT_FSIZE: the kernel would kill the process with SIGXFSZ instead.
 */
/* -EFBIG if size does not fit an off_t. */
int io_ftruncate(int fd, uint64_t size);
/* Allocate [off, off + len) of the file (fallocate(2), mode 0: the size grows to cover it), so
 * that later writes through a mapping cannot fail for want of space. Not posix_fallocate(): where
 * the file system cannot allocate, glibc's fallback writes a byte per block, slowly and not
 * atomically; here the caller gets -EOPNOTSUPP and decides. */
int io_fallocate(int fd, uint64_t off, uint64_t len);
/* Reserve [off, off + len) for real, for a range that holds no data yet: io_fallocate(), or
 * where the file system cannot (-EOPNOTSUPP) zeros written with io_pwrite(). After 0, stores
 * through a mapping of the range cannot fail for want of space (no SIGBUS): -ENOSPC, -EDQUOT,
 * -EFBIG come back here instead. Fault injection fails it as IO_FALLOCATE (and IO_PWRITE). */
int io_preallocate(int fd, uint64_t off, uint64_t len);
/* Write zeros over [off, off + len): the pages then sit in the page cache, their blocks written
 * (not an fallocate's unwritten extents), so that a first store through a mapping is a minor
 * fault, not an allocation (a log file prepared ahead, wal.c). One call for fault injection
 * (IO_PWRITE), however many writes it takes. */
int io_write_zeros(int fd, uint64_t off, uint64_t len);

/* Write all len bytes (at off / at the file position), retrying short writes and EINTR: 0, or
 * -errno of the call that failed (a write that stops after part of the buffer reports why on the
 * next try, e.g. -ENOSPC). */
int io_pwrite(int fd, const void *buf, size_t len, uint64_t off);
int io_write(int fd, const void *buf, size_t len);
/* Read up to len bytes at off, retrying short reads and EINTR: the bytes read (less than len
 * only at the end of the file), or -errno. */
ssize_t io_pread(int fd, void *buf, size_t len, uint64_t off);

/* Map len bytes of fd from off: 0 and *out, or -errno (*out untouched). */
int io_mmap(int fd, uint64_t off, size_t len, int prot, int flags, void **out);
int io_munmap(void *addr, size_t len);
/* Prefault [addr, addr + len) of a shared writable file mapping for writing (madvise
 * MADV_POPULATE_WRITE, Linux 5.14): this process's later stores there take no page fault.
 * -EINVAL where the kernel lacks it. Fault injection counts and fails it as IO_MMAP. */
int io_populate_write(void *addr, size_t len);

int io_fsync(int fd);
int io_fdatasync(int fd);
/*
 * fdatasync the file mapped (MAP_SHARED) at [addr, addr + len), through the mapping: msync(2)
 * MS_SYNC, which Linux makes vfs_fsync_range(its open file, range, datasync): the same flush,
 * and the same writeback error report (the open file's mark), as fdatasync on the descriptor the
 * mapping was made from, with no descriptor kept (the mapping holds the open file, whatever
 * became of its name). Fault injection counts and fails it as IO_FDATASYNC.
 */
int io_datasync_map(void *addr, size_t len);
/* fsync the directory path (so that a name made or removed in it is durable). */
int io_fsync_dir(const char *path);

int io_link(const char *from, const char *to);
int io_rename(const char *from, const char *to);
int io_unlink(const char *path);
/*
 * The same calls relative to an open directory (dirfd, or AT_FDCWD), so that a caller that opened
 * its directory once keeps working in THAT directory: once it is removed, names made there fail
 * (-ENOENT) and a directory made again by the same path is never touched (wal.c). Fault
 * injection counts and fails them as the path calls: IO_LINK, IO_UNLINK, IO_ACCESS, IO_FSTAT.
 */
int io_linkat(int fromdir, const char *from, int todir, const char *to);
int io_unlinkat(int dirfd, const char *path);
int io_faccessat(int dirfd, const char *path, int mode);
/* fstatat(2) with flags (AT_SYMLINK_NOFOLLOW, ...). */
int io_fstatat(int dirfd, const char *path, struct stat *st, int flags);
/* symlink(target, path); readlink(path) into buf, NUL-terminated: its length, -ENAMETOOLONG when
 * it does not fit, -EINVAL when path is not a symbolic link. */
int io_symlink(const char *target, const char *path);
ssize_t io_readlink(const char *path, char *buf, size_t size);
int io_mkdir(const char *path, mode_t mode);
int io_rmdir(const char *path);
int io_access(const char *path, int mode);
/* flock(2), retried on EINTR. */
int io_flock(int fd, int op);

/*
 * Call fn(arg, dirfd, name) for each entry of directory path but "." and ".." (dirfd: the open
 * directory, for openat()). 0 when every entry was seen, fn's non-zero return value when it
 * stopped the walk, or -errno of opendir or of a failed readdir (IO_OPENDIR, and IO_READDIR once
 * per readdir call, the one that finds the end included).
 */
int io_dir_each(const char *path, int (*fn)(void *arg, int dirfd, const char *name), void *arg);
/* The same for the directory path names relative to at ("." for the directory at itself: a walk
 * of its own, with its own position, so concurrent walks of one descriptor do not disturb each
 * other; a removed directory is walked as empty). */
int io_dir_each_at(int at, const char *path, int (*fn)(void *arg, int dirfd, const char *name),
                   void *arg);

/* Fill buf with len random bytes (getrandom(2) with flags): 0 or -errno. */
int io_getrandom(void *buf, size_t len, unsigned flags);

#ifdef SHMQ_CRASH_POINTS
/* Fail the nth call of op from now on (1: the next one) with -err, once; nth 0 disarms op. The
 * count is per op and shared by the process's threads. 0, or -EINVAL (op, err out of range). */
int io_fault_arm(enum io_op op, uint64_t nth, int err);
/* Calls of op this process made so far (failed ones included). */
uint64_t io_fault_calls(enum io_op op);
void io_fault_disarm_all(void);
/* Fail the nth I/O call of any op from now on (1: the next one) with -err, once; nth 0
 * disarms. For loops that fail every call an operation makes, one at a time, without knowing
 * which ops it uses. 0, or -EINVAL. */
int io_fault_arm_any(uint64_t nth, int err);
/* Did the call armed by io_fault_arm_any() come (and fail) since it was armed? */
bool io_fault_any_fired(void);
/* The op of that call (meaningful once io_fault_any_fired()). */
enum io_op io_fault_any_op(void);
/* Arm from a spec as SHMQ_IO_FAULT takes it ("op:nth:ERRNAME,..."): 0, or -EINVAL (nothing of
 * a bad spec is armed). */
int io_fault_arm_spec(const char *spec);
/* The name of op in a spec ("ftruncate"), or NULL. */
const char *io_op_name(enum io_op op);
#endif

#endif
