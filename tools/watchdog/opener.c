/*
 * opener.c - open queues off the maintenance loop, on a helper thread.
 *
 * shmq_open() may block for up to a second: a segment whose magic is still 0 (being created,
 * or left half-made by a creator that died) or that is too short is re-read every 10 ms before
 * it is called corrupted. One such file in /dev/shm must not stop the maintenance of every
 * other queue, so the main loop only posts requests (names) here and collects results through
 * an eventfd in its poll set; each open runs on its own short-lived thread (at most
 * MAX_IN_FLIGHT at once), so one slow segment delays no other. shmq_t is safe to hand between
 * threads (shmq.h).
 *
 * The result carries the identity of the segment file opened (device, inode), taken by stat()
 * before and after shmq_open(): if they differ, the file was replaced meanwhile and the open is
 * reported as -EAGAIN (retried at the next scan). The same identity lets scan.c tell when the
 * queue is unlinked or replaced later.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "watchdog.h"

#define MAX_IN_FLIGHT 16 /* opens at once; more requests wait their turn */

struct item {
    struct item *next;
    struct opener *op;
    struct open_result r;
};

struct opener {
    pthread_mutex_t lock;
    pthread_cond_t idle;      /* signalled when in_flight drops */
    struct item *todo, *done; /* requests not started (FIFO); results (any order) */
    unsigned in_flight;       /* threads running open_one() */
    bool stop;
    bool rebuild; /* open_one(): rebuild missing segments from their logs */
    int efd;
};

static void start_some(struct opener *op);

int segment_stat(const char *name, struct stat *st)
{
    char path[SHMQ_NAME_MAX + 32];
    int err = inspect_segment_path(name, path, sizeof path);
    if (err)
        return err;
    return stat(path, st) == 0 ? 0 : -errno;
}

/* rebuild: a missing segment is opened anyway, and shmq_open() rebuilds it from the log the
 * state directory names (named queues); else a missing segment is -ENOENT (--all follows
 * /dev/shm, and must not bring back a queue being deleted). */
static void open_one(struct open_result *r, bool rebuild)
{
    struct stat after;
    r->q = NULL;
    r->err = segment_stat(r->name, &r->st);
    bool missing = r->err == -ENOENT && rebuild;
    if (r->err && !missing)
        return;
    r->err = shmq_open(r->name, &r->q);
    if (r->err)
        return;
    if (segment_stat(r->name, &after) != 0 ||
        (!missing && (after.st_ino != r->st.st_ino || after.st_dev != r->st.st_dev))) {
        shmq_close(r->q); /* replaced while we opened it */
        r->q = NULL;
        r->err = -EAGAIN;
        return;
    }
    r->st = after; /* the file opened (the rebuilt one, if it was missing) */
}

static void *open_thread(void *arg)
{
    struct item *it = arg;
    struct opener *op = it->op;
    open_one(&it->r, op->rebuild);
    pthread_mutex_lock(&op->lock);
    it->next = op->done;
    op->done = it;
    op->in_flight--;
    uint64_t one = 1;
    if (write(op->efd, &one, sizeof one) < 0) {
        /* cannot fail short of 2^64 - 1 unread results */
    }
    if (!op->stop)
        start_some(op);
    pthread_cond_broadcast(&op->idle);
    pthread_mutex_unlock(&op->lock);
    return NULL;
}

/* Start threads for waiting requests, up to MAX_IN_FLIGHT. Called with the lock held. */
static void start_some(struct opener *op)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (op->todo && op->in_flight < MAX_IN_FLIGHT) {
        struct item *it = op->todo;
        pthread_t t;
        /* the thread inherits our signal mask: SIGTERM/SIGINT stay blocked, for the signalfd */
        if (pthread_create(&t, &attr, open_thread, it) != 0)
            break; /* out of threads: the next request or result tries again */
        op->todo = it->next;
        op->in_flight++;
    }
    pthread_attr_destroy(&attr);
}

int opener_start(struct opener **out, bool rebuild)
{
    struct opener *op = calloc(1, sizeof *op);
    if (!op)
        return -ENOMEM;
    op->rebuild = rebuild;
    op->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (op->efd < 0) {
        int err = -errno;
        free(op);
        return err;
    }
    pthread_mutex_init(&op->lock, NULL);
    pthread_cond_init(&op->idle, NULL);
    *out = op;
    return 0;
}

int opener_fd(const struct opener *op) { return op->efd; }

int opener_request(struct opener *op, const char *name)
{
    struct item *it = calloc(1, sizeof *it);
    if (!it)
        return -ENOMEM;
    snprintf(it->r.name, sizeof it->r.name, "%s", name);
    it->op = op;
    pthread_mutex_lock(&op->lock);
    struct item **tail = &op->todo;
    while (*tail)
        tail = &(*tail)->next;
    *tail = it;
    start_some(op);
    pthread_mutex_unlock(&op->lock);
    return 0;
}

bool opener_result(struct opener *op, struct open_result *r)
{
    uint64_t n;
    if (read(op->efd, &n, sizeof n) < 0) {
        /* EAGAIN: nothing new signalled; results may still be queued */
    }
    pthread_mutex_lock(&op->lock);
    struct item *it = op->done;
    if (it)
        op->done = it->next;
    pthread_mutex_unlock(&op->lock);
    if (!it)
        return false;
    *r = it->r;
    free(it);
    return true;
}

void opener_stop(struct opener *op)
{
    if (!op)
        return;
    pthread_mutex_lock(&op->lock);
    op->stop = true;
    while (op->in_flight) /* each waits out at most one shmq_open() */
        pthread_cond_wait(&op->idle, &op->lock);
    pthread_mutex_unlock(&op->lock);
    for (struct item *it = op->todo, *next; it; it = next) {
        next = it->next;
        free(it);
    }
    for (struct item *it = op->done, *next; it; it = next) {
        next = it->next;
        if (it->r.q)
            shmq_close(it->r.q);
        free(it);
    }
    close(op->efd);
    pthread_mutex_destroy(&op->lock);
    pthread_cond_destroy(&op->idle);
    free(op);
}
