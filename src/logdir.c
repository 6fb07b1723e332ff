/*
 * logdir.c - the log directory of a queue (see logdir.h).
 */
#include "logdir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmq/shmq.h"

static const char *state_dir(char *buf, size_t size)
{
    const char *env = getenv("SHMQ_STATE_DIR");
    if (env && *env)
        return env;
    if (geteuid() == 0)
        return "/var/lib/shmq";
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(buf, size, "%s/shmq", xdg);
    else
        snprintf(buf, size, "%s/.local/state/shmq", home && *home ? home : "/tmp");
    return buf;
}

int wal_dir_path(const char *name, const char *log_dir, char *buf, size_t size)
{
    char tmp[SHMQ_LOG_DIR_MAX + 64];
    const char *base = log_dir ? log_dir : state_dir(tmp, sizeof(tmp));
    if (strlen(base) > SHMQ_LOG_DIR_MAX)
        return -ENAMETOOLONG;
    if ((size_t)snprintf(buf, size, "%s/%s", base, name) >= size)
        return -ENAMETOOLONG;
    return 0;
}
