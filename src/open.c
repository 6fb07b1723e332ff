/*
 * open.c - open, create and delete a queue: map its segment, open its log, register.
 *
 * The top of the library: opening a queue whose segment is gone or broken rebuilds it from the
 * log (shmq_recover(), recover.c), so this file sits above recovery.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "abi.h"
#include "crashpoint.h"
#include "errdetail.h"
#include "io.h"
#include "loghead.h"
#include "logtomb.h"
#include "queue.h"
#include "registry.h"
#include "settings.h"

static int attach(shmq_t **out, struct segment *seg, const char *name, bool create)
{
    shmq_t *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->seg = *seg;
    strncpy(q->name, name, SHMQ_NAME_MAX);
    pthread_mutex_init(&q->maint_lock, NULL);
    int err = 0;
    if (q->seg.layout.durability != SHMQ_DURABILITY_NONE &&
        (err = wal_open(&q->seg, create, &q->wal)) == 0)
        q->gen_word = wal_gen_word(q->wal, &q->gen);
    if (!err)
        err = registry_attach(&q->seg, ROLE_CLIENT, "", &q->self, &q->self_word);
    /* producers start their claims apart (slot_claim): spread by registry index */
    if (!err)
        atomic_store_explicit(&q->cursor,
                              (uint32_t)((uint64_t)q->self * 2654435761u % q->seg.layout.capacity),
                              memory_order_relaxed);
    if (err) {
        wal_close(q->wal);
        pthread_mutex_destroy(&q->maint_lock);
        free(q);
        return err;
    }
    *out = q;
    return 0;
}

/*
 * The first generation of a new queue's log (under the exclusive .recover flock, which the
 * caller holds until its segment exists): the head made, or, if a head is left from a queue
 * whose segment is gone and whose log holds no file, both its words bumped, so that a process
 * still holding that old segment is fenced. Nothing to re-log: the generation is complete.
 */
static int first_generation(const char *dir, uint32_t mode, uint64_t *gen)
{
    struct loghead lh;
    int err = loghead_open(dir, true, mode, &lh);
    if (err)
        return err;
    /* E3 of a create. A fresh head (or one a delete fenced and did not remove) starts at a
     * random generation: a process of a deleted queue by the same name never matches it */
    uint64_t old = atomic_load(&lh.h->gen);
    *gen = old == 0 || old == LOG_GEN_DELETED ? loghead_first_gen() : old + 1;
    atomic_store(&lh.h->gen, *gen); /* under the exclusive lock: no other writer of the word */
    atomic_store(&lh.h->complete_gen, *gen);
    err = loghead_sync(&lh);
    loghead_close(&lh);
    return err;
}

/* Is dir a log directory (not the state directory's pointer to one) whose head is fenced deleted
 * (loghead_fence_deleted)? Only a delete fences a head, under the exclusive lock: a head seen
 * live without the lock is a queue's (or one a delete has not fenced yet). A pointer left by a delete
 * killed before its unpoint names a log that is found by name: a second delete finishes it (a
 * rename here would move the link itself, and the log would be found by nobody). */
static bool head_deleted(const char *dir)
{
    struct loghead lh;
    struct stat st;
    bool deleted = false;
    if (io_fstatat(AT_FDCWD, dir, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
        loghead_open(dir, false, 0, &lh) == 0) {
        deleted = atomic_load(&lh.h->complete_gen) == LOG_GEN_DELETED;
        loghead_close(&lh);
    }
    return deleted;
}

/*
 * A log directory that a delete fenced and did not remove: the delete was killed between the
 * removal of the state directory's pointer and its rename (shmq_unlink). Nobody finds it by name
 * any more (a second delete says -ENOENT), so a create of the name finishes that delete, buries
 * and removes it, where it refused (-EEXIST) for good before. Under the exclusive lock, and only
 * a directory whose head is fenced deleted: a queue's log is never touched. A delete still
 * running (stopped, not killed) holds the lock; once it has gone on, the lock finds the name
 * gone (-ENOENT) or a new directory. 0 or -errno.
 * A live queue's head is not fenced: looked at first without the lock, so that such a create
 * says -EEXIST at once and never waits for a lock holder (a rebuild or a retention pass, stopped
 * there: review10).
 */
static int finish_deleted_log(const char *dir)
{
    if (!head_deleted(dir))
        return 0;
    /* mode 0: .recover is never made here (the delete that fenced the head locked it, so it is
     * there). Once a create beside us finished the delete, our lock's look again finds its new
     * directory: a .recover made by us then (0600) was the new queue's, and a shared queue's
     * group could not lock it (review10) */
    int lock = loghead_lock(dir, LOCK_EX, 0);
    if (lock < 0)
        return lock == -ENOENT ? 0 : lock;
    char tomb[SHMQ_LOG_DIR_MAX + 128];
    bool deleted = head_deleted(dir);
    int err = deleted ? logtomb_bury(dir, tomb, sizeof(tomb)) : 0;
    if (deleted && err == 0)
        err = logtomb_remove(tomb);
    io_close(lock);
    return err;
}

int shmq_create(const char *name, const shmq_config_t *caller_cfg, shmq_t **q)
{
    shmq_config_t own; /* the caller's config in this library's layout (abi.h) */
    err_detail_clear();
    if (!q)
        return err_detail(-EINVAL, "q is NULL");
    if (abi_config_in(caller_cfg, &own) != 0)
        return -EINVAL;
    const shmq_config_t *cfg = &own;
    char dir[SHMQ_LOG_DIR_MAX + 64];
    int err = segment_check_name(name), lock = -1;
    uint64_t gen = 0;
    struct segment seg;
    if (err)
        return err_detail(err, "a queue name is 1..%d bytes of [A-Za-z0-9._-] (not . or ..)",
                          SHMQ_NAME_MAX);
    if (cfg->durability != SHMQ_DURABILITY_NONE) {
        if ((err = wal_dir_path(name, cfg->log_dir, dir, sizeof(dir))) != 0) {
            if (err == -ENAMETOOLONG) /* log_dir/NAME does not fit a path */
                return err_detail(-EINVAL, "log_dir/NAME is too long a path (log_dir is %zu "
                                  "bytes, at most %d: SHMQ_LOG_DIR_MAX)",
                                  cfg->log_dir ? strlen(cfg->log_dir) : 0, SHMQ_LOG_DIR_MAX);
            if (err == -EINVAL && cfg->log_dir && cfg->log_dir[0] != '/')
                return err_detail(err, "log_dir '%s' is not an absolute path", cfg->log_dir);
            return err;
        }
        if (logdir_has_log(dir) && (err = finish_deleted_log(dir)) != 0)
            return err;
        if (logdir_has_log(dir))
            return -EEXIST;
        uint32_t fmode = logdir_file_mode(cfg->mode);
        /* the lock's -ENOENT: a delete of the name removed the directory after we made it
         * (loghead_lock()); the create comes after that delete: made again */
        do {
            if ((err = logdir_make(dir, cfg->mode)) != 0)
                return err;
            CRASH_POINT(create_before_lock);
        } while ((lock = loghead_lock(dir, LOCK_EX, fmode)) == -ENOENT);
        if (lock < 0)
            return lock;
        /* under the lock: no other creator or recoverer; a live queue is never fenced */
        if ((err = segment_open(name, true, &seg)) != -ENOENT) {
            if (!err)
                segment_close(&seg);
            io_close(lock);
            return err == 0 || err == -EBADMSG ? -EEXIST : err;
        }
        if (logdir_has_log(dir) || (err = first_generation(dir, fmode, &gen)) != 0) {
            io_close(lock);
            return err ? err : -EEXIST;
        }
        CRASH_POINT(create_before_segment);
    }
    err = segment_create_with(name, cfg, 0, gen, NULL, NULL, &seg);
    if (err) {
        if (lock >= 0)
            io_close(lock);
        return err;
    }
    CRASH_POINT(create_before_attach);
    /* a log elsewhere: the state directory points to it, so it is found by name (logdir.h) */
    if (cfg->durability != SHMQ_DURABILITY_NONE)
        err = logdir_point(name, dir);
    /* still under the lock: a delete waits until the log is pointed to and mapped (else it
     * removed the directory in between, and attach made it again with a live head: a log of
     * the deleted queue that a later recovery rebuilt) */
    if (err || (err = attach(q, &seg, name, true)) != 0) {
        segment_close(&seg);
        shmq_unlink_segment(name);
    }
    if (lock >= 0)
        io_close(lock);
    return err;
}

int shmq_open(const char *name, shmq_t **q)
{
    if (!q)
        return -EINVAL;
    struct segment seg;
    int err = segment_open(name, false, &seg);
    if (err == -ENOENT || err == -EBADMSG) {
        /* the segment is gone or broken: rebuild it from the log the state directory names */
        int rerr = shmq_recover(name, NULL, NULL);
        if (rerr == 0 || rerr == -EEXIST)
            err = segment_open(name, false, &seg);
        else if (rerr != -ENOENT)
            err = rerr; /* a log is there but the rebuild failed: say why (-ENOSPC, ...) */
    }
    if (err)
        return err;
    CRASH_POINT(open_before_attach);
    if ((err = attach(q, &seg, name, false)) != 0)
        segment_close(&seg);
    return err;
}

int shmq_close(shmq_t *q)
{
    if (!q)
        return -EINVAL;
    if (atomic_load(&q->consumers) > 0)
        return -EBUSY;
    registry_detach(&q->seg, q->self, q->self_word);
    wal_close(q->wal);
    segment_close(&q->seg);
    pthread_mutex_destroy(&q->maint_lock);
    free(q->suspect_word);
    free(q->suspect_ns);
    free(q);
    return 0;
}

int shmq_unlink_segment(const char *name) { return segment_unlink(name); }

/* The log directory of queue name into dir: the one its segment names, or with no segment the
 * one the state directory names; "" if neither (no log, or a queue without one). */
static void find_log(const char *name, char *dir, size_t size)
{
    struct segment seg;
    dir[0] = 0;
    if (segment_open(name, true, &seg) == 0) {
        snprintf(dir, size, "%.*s", (int)sizeof(seg.layout.log_dir), seg.layout.log_dir);
        segment_close(&seg);
    } else if (logdir_find(name, NULL, dir, size) != 0) {
        dir[0] = 0;
    }
}

/* Point the state directory's entry of name at dir again, after a delete removed the pointer
 * and then could not remove the log whole: the call made again finds LOG_DIR through it and
 * sweeps what is left. Only while the entry is absent: a create of the name meanwhile (the
 * name was free from the rename on) made its own entry, pointer or directory, and that one is
 * not ours to replace (logdir_point would take an empty log directory for a leftover). */
static void repoint_if_free(const char *name, const char *dir)
{
    char entry[SHMQ_LOG_DIR_MAX + 64];
    struct stat st;
    if (wal_dir_path(name, NULL, entry, sizeof(entry)) == 0 && strcmp(entry, dir) != 0 &&
        io_fstatat(AT_FDCWD, entry, &st, AT_SYMLINK_NOFOLLOW) == -ENOENT)
        logdir_point(name, dir); /* best effort */
}

/*
 * Delete: under the exclusive .recover flock, the segment, then the head fenced, then the log
 * directory renamed away (a tombstone, logtomb.h) and removed, then the state directory's
 * pointer (docs/DESIGN.md, "Delete, create and recovery of one name"). The lock comes first
 * (review R2-2): a recovery between the segment's removal and a later lock rebuilt the queue
 * being deleted, and what was left could be neither opened nor made again. Under the lock
 * nobody rebuilds nor creates, and a recovery that waits for it finds the directory gone
 * (loghead_lock(): -ENOENT) or its head fenced. The directory is looked up again under the
 * lock: a segment made meanwhile by the name may name another one. The rename (review3 F-2a)
 * keeps every path lookup out of the directory being removed: one that made .recover again
 * there made the rmdir fail. No lock, no delete (review3 F-2b): a delete that went on unlocked
 * removed the log with its head unfenced, and a recovery beside it rebuilt part of the queue.
 */
int shmq_unlink(const char *name)
{
    char dir[SHMQ_LOG_DIR_MAX + 64], again[SHMQ_LOG_DIR_MAX + 64], tomb[SHMQ_LOG_DIR_MAX + 128];
    int err = segment_check_name(name), lock = -1;
    if (err)
        return err;
    for (find_log(name, dir, sizeof(dir)); dir[0]; snprintf(dir, sizeof(dir), "%s", again)) {
        /* -ENOENT: the directory went (by hand, or another delete); the segment still goes.
         * Another error (EACCES, EMFILE, ...): nothing is deleted, the queue stays whole */
        lock = loghead_lock(dir, LOCK_EX, 0600);
        if (lock < 0 && lock != -ENOENT)
            return lock;
        find_log(name, again, sizeof(again));
        /* the same directory, and locked or still gone (not made since by a create) */
        if (strcmp(dir, again) == 0 && (lock != -ENOENT || io_access(dir, F_OK) != 0))
            break;
        if (lock >= 0)
            io_close(lock);
        lock = -1;
    }
    int seg_err = shmq_unlink_segment(name);
    if (!dir[0])
        return seg_err;
    int log_err = -ENOENT; /* no lock: no directory */
    tomb[0] = 0;
    if (lock >= 0) {
        /* fence every holder before the files go, so that none writes into the files of a
         * queue made again by this name (loghead.h) */
        loghead_fence_deleted(dir);
        CRASH_POINT(unlink_before_unpoint); /* killed: found by name, a second delete ends it */
        /* the state directory's pointer goes while the path is still ours: after the rename a
         * create of the name with the same log_dir makes a new directory there and keeps the
         * pointer, which was then removed under it (review4 R4-1: after a reboot the new
         * queue was not found by name) */
        logdir_unpoint(name, dir);
        CRASH_POINT(unlink_before_bury); /* a killed delete: the next create finishes it */
        log_err = logtomb_bury(dir, tomb, sizeof(tomb));
        if (log_err == 0) /* from here on the name is free: a create makes a new directory */
            log_err = logtomb_remove(tomb);
        else
            tomb[0] = 0;
        if (log_err) /* the log stays (the directory, or its tombstone): a second call finds it */
            repoint_if_free(name, dir);
    }
    /* tombstones left by deletes that failed (or were killed) in this LOG_DIR: one of this
     * name is what a delete that returned an error left, and this call finishes it (F4) */
    if (logtomb_sweep(dir, tomb[0] ? tomb : NULL) > 0 && log_err == -ENOENT)
        log_err = 0;
    /* the directory was gone already (by hand, or a delete called again after its removal
     * failed: the sweep above removed its tombstone); not if a create made it since */
    if (lock < 0 && io_access(dir, F_OK) != 0)
        logdir_unpoint(name, dir);
    if (lock >= 0)
        io_close(lock); /* after the rmdir: a waiter retries and finds no directory */
    if (log_err && log_err != -ENOENT)
        return log_err; /* F4: a log is left (fenced: never recovered as the queue) */
    return seg_err == 0 || log_err == 0 ? 0 : seg_err;
}

int shmq_get_config_size(const shmq_t *q, shmq_config_t *cfg, size_t size)
{
    if (!q || !cfg || size % 8 != 0 ||
        !abi_size_ok(size, ABI_CONFIG_SIZE_0, sizeof(shmq_config_t)))
        return -EINVAL;
    shmq_config_t own;
    layout_to_config(&q->seg.layout, &own);
    struct settings_values v; /* the settings in use (shmq_set_config()) */
    settings_read(&q->seg.hdr->settings, &v);
    settings_to_config(&v, &own);
    abi_copy_out(cfg, size, &own, sizeof(own));
    cfg->size = (uint32_t)size;
    return 0;
}

int(shmq_get_config)(const shmq_t *q, shmq_config_t *cfg)
{
    return shmq_get_config_size(q, cfg, ABI_CONFIG_SIZE_0);
}
