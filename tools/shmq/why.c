/*
 * why.c - an error's text, and for a storage error the file system or limit behind it.
 *
 * "No space left" alone does not say where: /dev/shm (the segment) and the log directory are
 * usually on different file systems, and a process limit looks like a full disk to the caller.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

#include "cli.h"
#include "inspect.h"

/* ", PATH: N MiB free of M MiB" (or why it cannot be read) appended at buf + *at. */
static void fs_room(char *buf, size_t size, size_t *at, const char *what, const char *path)
{
    struct statvfs sv;
    if (*at >= size)
        return;
    if (statvfs(path, &sv) != 0) {
        *at += (size_t)snprintf(buf + *at, size - *at, "; %s %s: %s", what, path, strerror(errno));
        return;
    }
    unsigned long long unit = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
    unsigned long long avail = sv.f_bavail * unit, total = sv.f_blocks * unit;
    *at += (size_t)snprintf(buf + *at, size - *at, "; %s %s: %llu KiB free of %llu KiB%s", what,
                            path, avail >> 10, total >> 10,
                            (sv.f_flag & ST_RDONLY) ? " (read-only)" : "");
}

static void limit_of(char *buf, size_t size, size_t *at, const char *what, int resource)
{
    struct rlimit rl;
    if (*at >= size || getrlimit(resource, &rl) != 0)
        return;
    if (rl.rlim_cur == RLIM_INFINITY)
        *at += (size_t)snprintf(buf + *at, size - *at, "; %s: unlimited", what);
    else
        *at += (size_t)snprintf(buf + *at, size - *at, "; %s: %llu bytes", what,
                                (unsigned long long)rl.rlim_cur);
}

const char *cli_why(int err, const char *name, const char *log_dir, char *buf, size_t size)
{
    size_t at = (size_t)snprintf(buf, size, "%s", shmq_strerror(err));
    struct inspect_log_where where;
    bool have_log = name && inspect_log_locate(name, log_dir, &where) == 0 && !where.durability_none;
    switch (err) {
    case -ENOSPC:
    case -EDQUOT:
    case -EROFS:
    case -EIO:
        fs_room(buf, size, &at, "segment file system", "/dev/shm");
        if (have_log) {
            /* the queue's directory may not exist yet (create): its parent's file system */
            char dir[sizeof where.dir];
            snprintf(dir, sizeof dir, "%s", where.dir);
            struct statvfs sv;
            char *slash = strrchr(dir, '/');
            if (statvfs(dir, &sv) != 0 && slash && slash != dir)
                *slash = '\0';
            fs_room(buf, size, &at, "log file system", dir);
        }
        break;
    case -EFBIG: limit_of(buf, size, &at, "RLIMIT_FSIZE (ulimit -f)", RLIMIT_FSIZE); break;
    case -ENOMEM: limit_of(buf, size, &at, "RLIMIT_AS (ulimit -v)", RLIMIT_AS); break;
    }
    return buf;
}
