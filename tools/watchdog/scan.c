/*
 * scan.c - which queues to watch: the names given on the command line, or (--all) every
 * segment /dev/shm/shmq.NAME.
 *
 * Every --scan-ms the set is reconciled with /dev/shm (opening goes through opener.c). A queue
 * whose segment file was unlinked or replaced by another file of the same name (compared by device
 * and inode) is closed and logged queue_removed; a new one is opened and logged queue_added. A name
 * that cannot be opened is retried at every scan, except a segment that failed validation, which is
 * retried only once its file changes; each failure is logged once per error and file. With names
 * given, the watched set never changes: a missing or removed queue is waited for, and one whose
 * segment is lost while its log remains is rebuilt by the open (opener.c, shmq_open()). --all
 * follows /dev/shm only: it never rebuilds, so it cannot bring back a queue being deleted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "watchdog.h"

static struct watch *find(struct watch_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->w[i]->name, name) == 0)
            return l->w[i];
    return NULL;
}

struct watch *watches_add(struct watch_list *l, const char *name)
{
    struct watch *w = find(l, name);
    if (w)
        return w;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct watch **a = realloc(l->w, cap * sizeof *a);
        if (!a)
            return NULL;
        l->w = a;
        l->cap = cap;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    strncpy(w->name, name, SHMQ_NAME_MAX);
    l->w[l->n++] = w;
    return w;
}

static void watch_free(struct watch *w)
{
    watch_close(w, NULL);
    free(w->procs);
    free(w->after);
    free(w->exited);
    free(w->consumers);
    free(w);
}

/* --all: mark every queue whose segment is in /dev/shm as listed, adding new names. */
static int list_shm(struct watch_list *l)
{
    char **names;
    size_t n;
    int err = inspect_queue_names(&names, &n);
    if (err)
        return err;
    for (size_t i = 0; i < l->n; i++)
        l->w[i]->listed = false;
    for (size_t i = 0; i < n; i++) {
        struct watch *w = watches_add(l, names[i]);
        if (w)
            w->listed = true;
    }
    inspect_names_free(names, n);
    return 0;
}

int watches_scan(struct watch_list *l, struct opener *op, const struct wd_options *o)
{
    if (l->all) {
        int err = list_shm(l);
        if (err) {
            static int logged;
            if (!logged++)
                wd_log(WD_ERROR, NULL, "error", "op=scan dir=%s err=%d", inspect_segment_dir, -err);
            return err;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        struct watch *w = l->w[i];
        if (w->q && !watch_still_there(w))
            watch_close(w, "unlinked");
        if (l->all && !w->listed && !w->q && !w->opening) { /* gone from /dev/shm */
            watch_free(w);
            continue;
        }
        l->w[k++] = w;
        if (watch_wants_open(w) && opener_request(op, w->name) == 0)
            w->opening = true;
    }
    l->n = k;
    return 0;
}

void watches_collect(struct watch_list *l, struct opener *op, const struct wd_options *o)
{
    struct open_result r;
    while (opener_result(op, &r)) {
        struct watch *w = find(l, r.name);
        if (!w || w->q) { /* forgotten meanwhile (or a duplicate): not wanted */
            if (r.q)
                shmq_close(r.q);
            continue;
        }
        watch_adopt(w, &r, o);
    }
}

void watches_free(struct watch_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        watch_free(l->w[i]);
    free(l->w);
    l->w = NULL;
    l->n = l->cap = 0;
}
