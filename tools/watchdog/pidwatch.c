/*
 * pidwatch.c - instant death detection: one pidfd per attached process of a queue.
 *
 * A pidfd (pidfd_open(2), Linux 5.3) becomes readable when its process exits, zombie or not,
 * so poll() on the set wakes the watchdog the moment a consumer dies instead of at the next
 * interval. The set is keyed by (registry entry, pid): an entry reused by a new process, even
 * one with the same pid, gets a new pidfd. A fired watch is left out of poll() (it would stay
 * readable) until maintenance fences its entry, then closed.
 *
 * pidfd_open() names a pid, not a process: a pid that died and was reused between the
 * registry's listing and the call would be watched in place of the dead one. The cost is only
 * that death's instant detection; the periodic pass, which compares start times, still finds
 * it. The watchdog's own entry is not watched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "watchdog.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same on every architecture */
#endif

static int open_pidfd(int32_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    return fd >= 0 ? fd : -errno;
}

bool pid_exited(int32_t pid)
{
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH))
        return true;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold ')' and spaces: take the last */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static bool watched_state(int state)
{
    return state == SHMQ_PROC_ACTIVE || state == SHMQ_PROC_CLAIMED;
}

static struct pid_watch *find(struct pid_set *s, uint32_t index, int32_t pid)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i].index == index && s->w[i].pid == pid)
            return &s->w[i];
    return NULL;
}

static struct pid_watch *append(struct pid_set *s)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        struct pid_watch *w = realloc(s->w, cap * sizeof *w);
        if (!w)
            return NULL;
        s->w = w;
        s->cap = cap;
    }
    return &s->w[s->n++];
}

int pidset_refresh(struct pid_set *s, const shmq_proc_info_t *procs, size_t n)
{
    int gone = 0;
    int32_t self = (int32_t)getpid();
    for (size_t i = 0; i < s->n; i++)
        s->w[i].seen = false;
    for (size_t i = 0; i < n; i++) {
        const shmq_proc_info_t *p = &procs[i];
        if (!watched_state(p->state) || p->pid == self || p->pid <= 0)
            continue;
        struct pid_watch *w = find(s, p->index, p->pid);
        if (w) {
            w->seen = true;
            w->role = p->role;
            continue;
        }
        w = append(s);
        if (!w)
            break; /* out of memory: the periodic pass still covers these */
        w->index = p->index;
        w->pid = p->pid;
        w->role = p->role;
        w->seen = true;
        w->fired = false;
        memcpy(w->name, p->name, sizeof w->name);
        w->name[sizeof w->name - 1] = 0;
        int fd = open_pidfd(p->pid);
        w->fd = fd >= 0 ? fd : -1;
        if (fd == -ESRCH) { /* died before we looked: maintain now */
            w->fired = true;
            gone++;
        }
    }
    size_t k = 0; /* keep the seen ones, close the rest */
    for (size_t i = 0; i < s->n; i++) {
        if (s->w[i].seen) {
            s->w[k++] = s->w[i];
        } else if (s->w[i].fd >= 0) {
            close(s->w[i].fd);
        }
    }
    s->n = k;
    return gone;
}

size_t pidset_pollfds(const struct pid_set *s, struct pollfd *out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n && k < max; i++) {
        if (s->w[i].fd < 0 || s->w[i].fired)
            continue;
        out[k].fd = s->w[i].fd;
        out[k].events = POLLIN;
        out[k].revents = 0;
        k++;
    }
    return k;
}

void pidset_poll(struct pid_set *s)
{
    struct pollfd fds[64];
    size_t i = 0;
    while (i < s->n) { /* in batches of 64, on the stack */
        size_t k = 0, idx[64];
        for (; i < s->n && k < 64; i++) {
            if (s->w[i].fd < 0 || s->w[i].fired)
                continue;
            fds[k] = (struct pollfd){.fd = s->w[i].fd, .events = POLLIN};
            idx[k++] = i;
        }
        if (k == 0 || poll(fds, k, 0) <= 0)
            continue;
        for (size_t j = 0; j < k; j++)
            if (fds[j].revents)
                s->w[idx[j]].fired = true;
    }
}

int pidset_exited(const struct pid_set *s, uint32_t index, int32_t pid)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i].index == index && s->w[i].pid == pid)
            return s->w[i].fired ? 1 : s->w[i].fd < 0 ? -1 : 0;
    return -1;
}

struct pid_watch *pidset_fired(struct pid_set *s, int fd)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->w[i].fd == fd) {
            s->w[i].fired = true;
            return &s->w[i];
        }
    }
    return NULL;
}

void pidset_clear(struct pid_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i].fd >= 0)
            close(s->w[i].fd);
    free(s->w);
    s->w = NULL;
    s->n = s->cap = 0;
}
