/*
 * logtomb.c - tombstones of deleted log directories (logtomb.h).
 */
#include "logtomb.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "logdir.h"
#include "registry.h"
#include "shmq/shmq.h"
#include "wal.h"

#define TOMB_PREFIX ".deleted~"
#define PATH_BUF (SHMQ_LOG_DIR_MAX + 128)

int logtomb_bury(const char *dir, char *tomb, size_t size)
{
    char parent[PATH_BUF];
    int err = logdir_parent(dir, parent, sizeof(parent));
    if (err)
        return err;
    uint64_t r = 0;
    if (io_getrandom(&r, sizeof(r), GRND_NONBLOCK) != 0) {
        struct timespec ts; /* unique enough with the pid: one delete at a time per thread */
        clock_gettime(CLOCK_REALTIME, &ts);
        r = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    const char *base = dir + strlen(parent) + (strcmp(parent, "/") != 0);
    if ((size_t)snprintf(tomb, size, "%s/" TOMB_PREFIX "%s~%d~%016" PRIx64, parent, base,
                         (int)getpid(), r) >= size)
        return -ENAMETOOLONG;
    return io_rename(dir, tomb); /* the same LOG_DIR: atomic, and the flock moves with it */
}

int logtomb_remove(const char *tomb)
{
    int err = 0;
    /* a maintenance pass of a holder of the deleted queue may make .recover again (through its
     * descriptor of the directory): walk again. It makes it once, then finds the head fenced */
    for (int i = 0; i < 3; i++)
        if ((err = wal_remove_dir(tomb)) != -ENOTEMPTY)
            break;
    return err == -ENOENT ? 0 : err;
}

struct sweep {
    const char *parent, *base, *skip; /* skip: the caller's own tombstone (or NULL) */
    size_t base_len;
    int mine; /* tombstones of base removed */
};

/* io_dir_each() callback: remove one tombstone whose owner is gone (or is us). */
static int sweep_one(void *arg, int dirfd, const char *entry)
{
    struct sweep *s = arg;
    if (strncmp(entry, TOMB_PREFIX, strlen(TOMB_PREFIX)) != 0 || (s->skip && !strcmp(entry, s->skip)))
        return 0;
    const char *name = entry + strlen(TOMB_PREFIX), *tilde = strchr(name, '~');
    if (!tilde)
        return 0;
    char *end;
    long pid = strtol(tilde + 1, &end, 10);
    if (*end != '~' || pid <= 0 || pid > INT32_MAX)
        return 0;
    if (pid != (long)getpid() && !pid_gone((int)pid))
        return 0; /* its owner may be removing it now */
    struct stat st; /* only a directory of ours: never follow a link planted in a shared LOG_DIR */
    if (io_fstatat(dirfd, entry, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid())
        return 0;
    char path[PATH_BUF + 256];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", s->parent, entry) >= sizeof(path))
        return 0;
    /* wal_remove_dir() opens it O_NOFOLLOW: a link swapped in meanwhile is not followed */
    if (logtomb_remove(path) == 0 && (size_t)(tilde - name) == s->base_len &&
        memcmp(name, s->base, s->base_len) == 0)
        s->mine++;
    return 0;
}

int logtomb_sweep(const char *dir, const char *skip)
{
    char parent[PATH_BUF];
    if (logdir_parent(dir, parent, sizeof(parent)) != 0)
        return 0;
    const char *base = dir + strlen(parent) + (strcmp(parent, "/") != 0);
    const char *slash = skip ? strrchr(skip, '/') : NULL;
    struct sweep s = {parent, base, slash ? slash + 1 : skip, strlen(base), 0};
    io_dir_each(parent, sweep_one, &s);
    return s.mine;
}
