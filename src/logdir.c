/*
 * logdir.c - the log directory of a queue: naming, finding, making, trusting (see logdir.h).
 */
#define _GNU_SOURCE /* O_PATH */
#include "logdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "shmq/shmq.h"

#define PATH_BUF (SHMQ_LOG_DIR_MAX + 64)

/* stat(2) of path through io.h; with O_NOFOLLOW a final link is described, not followed. */
static int stat_path(const char *path, int flags, struct stat *st)
{
    int fd = io_open(path, O_PATH | O_CLOEXEC | flags, 0);
    if (fd < 0)
        return fd;
    int err = io_fstat(fd, st);
    io_close(fd);
    return err;
}

/* The state directory may only be the caller's own: nobody else may plant links in it. */
static int check_private(const char *dir)
{
    struct stat st;
    int err = stat_path(dir, 0, &st);
    if (err == -ENOENT)
        return 0; /* made (0700) when first needed */
    if (err)
        return err;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return -EPERM;
    return 0;
}

int logdir_state(char *buf, size_t size)
{
    const char *env = getenv("SHMQ_STATE_DIR"), *xdg = getenv("XDG_STATE_HOME"),
               *home = getenv("HOME");
    int n;
    if (env && *env)
        n = snprintf(buf, size, "%s", env);
    else if (geteuid() == 0)
        n = snprintf(buf, size, "/var/lib/shmq");
    else if (xdg && xdg[0] == '/') /* XDG: a relative value is to be ignored */
        n = snprintf(buf, size, "%s/shmq", xdg);
    else if (home && home[0])
        n = snprintf(buf, size, "%s/.local/state/shmq", home);
    else
        return -ENOENT; /* no /tmp fallback: another user could own the directory there */
    if (n < 0 || (size_t)n >= size || strlen(buf) > SHMQ_LOG_DIR_MAX)
        return -ENAMETOOLONG;
    if (buf[0] != '/')
        return -EINVAL;
    return check_private(buf);
}

int wal_dir_path(const char *name, const char *log_dir, char *buf, size_t size)
{
    char base[PATH_BUF];
    int err = 0;
    if (!log_dir)
        err = logdir_state(base, sizeof(base));
    else if (log_dir[0] != '/')
        err = -EINVAL; /* relative: another directory in every working directory */
    else if (strlen(log_dir) > SHMQ_LOG_DIR_MAX)
        err = -ENAMETOOLONG;
    else
        snprintf(base, sizeof(base), "%s", log_dir);
    if (err)
        return err;
    if ((size_t)snprintf(buf, size, "%s/%s", base, name) >= size)
        return -ENAMETOOLONG;
    return 0;
}

int logdir_find(const char *name, const char *log_dir, char *buf, size_t size)
{
    int err = wal_dir_path(name, log_dir, buf, size);
    if (err || log_dir)
        return err;
    char target[PATH_BUF];
    ssize_t n = io_readlink(buf, target, sizeof(target));
    if (n == -EINVAL || n == -ENOENT)
        return 0; /* a directory (the log is in the state directory), or nothing */
    if (n < 0)
        return (int)n;
    if (target[0] != '/')
        return -EBADMSG; /* logdir_point() writes absolute paths only */
    if ((size_t)snprintf(buf, size, "%s", target) >= size)
        return -ENAMETOOLONG;
    return 0;
}

int logdir_parent(const char *dir, char *buf, size_t size)
{
    const char *slash = strrchr(dir, '/');
    size_t len = slash && slash != dir ? (size_t)(slash - dir) : 1;
    if (len >= size)
        return -ENAMETOOLONG;
    memcpy(buf, dir, len);
    buf[len] = 0;
    return 0;
}

static int is_log_file(void *arg, int dirfd, const char *name)
{
    (void)arg;
    (void)dirfd;
    return strncmp(name, "wal.", 4) == 0 && !strstr(name, ".tmp");
}

bool logdir_has_log(const char *dir) { return io_dir_each(dir, is_log_file, NULL) == 1; }

uint32_t logdir_file_mode(uint32_t mode) { return 0600 | (mode & 066); }

/* A log directory: rwx for the owner, r-x (and w if the mode writes) for whom the mode shares. */
static uint32_t dir_mode(uint32_t mode)
{
    uint32_t m = 0700;
    if (mode & 060)
        m |= 050 | (mode & 020);
    if (mode & 006)
        m |= 005 | (mode & 002);
    return m;
}

/* The search bits the users a mode shares with need on every directory above the log. */
static uint32_t search_bits(uint32_t mode) { return (mode & 060 ? 010 : 0) | (mode & 006 ? 001 : 0); }

/* Does st let those users through? (other's bit serves a group member too) */
static bool lets_through(const struct stat *st, uint32_t need)
{
    return !((need & 001) && !(st->st_mode & 001)) && !((need & 010) && !(st->st_mode & 011));
}

/* chmod +bits of a directory we own, through io.h. */
static int add_bits(const char *path, const struct stat *st, uint32_t bits)
{
    if (st->st_uid != geteuid())
        return -EACCES;
    int fd = io_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    int err = io_fchmod(fd, (st->st_mode & 07777) | bits);
    io_close(fd);
    return err;
}

/*
 * Every directory above dir: made private if missing (plus the search bits a shared queue
 * needs, whatever the umask); existing ones must let the sharers through. The state directory
 * is ours: it gets the search bits added. Another one (a home directory, say) that does not let
 * them through refuses the queue (-EACCES): we do not open up the user's directories.
 */
static int make_parents(const char *dir, uint32_t need)
{
    char p[PATH_BUF], state[PATH_BUF];
    if (logdir_state(state, sizeof(state)) != 0)
        state[0] = 0;
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        int err = io_mkdir(p, 0700 | need);
        bool made = err == 0;
        struct stat st;
        if (err == 0 || err == -EEXIST)
            err = stat_path(p, 0, &st);
        if (!err && !S_ISDIR(st.st_mode))
            err = -ENOTDIR;
        if (!err && !lets_through(&st, need))
            err = made || strcmp(p, state) == 0 ? add_bits(p, &st, need) : -EACCES;
        *s = '/';
        if (err)
            return err;
    }
    return 0;
}

int logdir_check(const char *dir, uint32_t mode)
{
    struct stat st;
    int err = stat_path(dir, O_NOFOLLOW, &st);
    if (err)
        return err;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    bool shared = (mode & 066) != 0;
    if (st.st_uid != geteuid() && st.st_uid != 0 && !shared)
        return -EPERM; /* someone else's directory for a private queue */
    if (st.st_mode & 022 & ~dir_mode(mode))
        return -EPERM; /* writable by more users than the queue is shared with */
    return 0;
}

int logdir_make(const char *dir, uint32_t mode)
{
    uint32_t need = search_bits(mode);
    int err = make_parents(dir, need);
    if (err)
        return err;
    struct stat st;
    err = stat_path(dir, O_NOFOLLOW, &st);
    if (err == 0 && S_ISLNK(st.st_mode)) { /* a pointer left by an older queue: ours now */
        if ((err = io_unlink(dir)) == 0)
            err = -ENOENT;
    }
    if (err == -ENOENT && (err = io_mkdir(dir, 0700)) == 0)
        err = stat_path(dir, O_NOFOLLOW, &st);
    if (err)
        return err;
    if (S_ISDIR(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 0777) != dir_mode(mode)) {
        int fd = io_open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd < 0)
            return fd;
        err = io_fchmod(fd, dir_mode(mode)); /* exactly: the umask neither widens nor narrows */
        io_close(fd);
        if (err)
            return err;
    }
    return logdir_check(dir, mode);
}

int logdir_point(const char *name, const char *dir)
{
    char entry[PATH_BUF], cur[PATH_BUF], tmp[PATH_BUF + 32];
    int err = wal_dir_path(name, NULL, entry, sizeof(entry));
    if (err)
        return err;
    if (strcmp(entry, dir) == 0)
        return 0; /* the log is in the state directory itself */
    if ((err = logdir_find(name, NULL, cur, sizeof(cur))) != 0)
        return err;
    if (strcmp(cur, dir) == 0 && strcmp(cur, entry) != 0)
        return 0; /* already points there */
    if (logdir_has_log(cur))
        return -EEXIST; /* the name's log is elsewhere: another queue */
    if ((err = make_parents(entry, 0)) != 0)
        return err;
    struct stat st;
    if (stat_path(entry, O_NOFOLLOW, &st) == 0 && S_ISDIR(st.st_mode)) {
        char lock[PATH_BUF + 16]; /* an empty log directory left behind: only its lock file */
        snprintf(lock, sizeof(lock), "%s/.recover", entry);
        io_unlink(lock);
        if ((err = io_rmdir(entry)) != 0)
            return err;
    }
    snprintf(tmp, sizeof(tmp), "%s.link.%d", entry, (int)getpid());
    io_unlink(tmp);
    if ((err = io_symlink(dir, tmp)) == 0 && (err = io_rename(tmp, entry)) != 0)
        io_unlink(tmp);
    return err;
}

void logdir_unpoint(const char *name, const char *dir)
{
    char entry[PATH_BUF], cur[PATH_BUF];
    if (wal_dir_path(name, NULL, entry, sizeof(entry)) != 0 ||
        logdir_find(name, NULL, cur, sizeof(cur)) != 0 || strcmp(cur, entry) == 0)
        return; /* no link */
    struct stat st;
    if (strcmp(cur, dir) == 0 || stat_path(cur, 0, &st) == -ENOENT)
        io_unlink(entry);
}
