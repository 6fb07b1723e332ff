/*
 * logtomb.h - tombstones: a deleted queue's log directory, renamed away before it is removed.
 *
 * shmq_unlink() renames the log directory LOG_DIR/NAME, under its .recover lock and after it
 * fenced the head, to LOG_DIR/.deleted~NAME~PID~RANDOM (hidden; '~' is in no queue name, so no
 * queue, `shmq list` or the state directory's listing ever takes it for one), then removes it.
 * From the rename on no path lookup reaches the directory being removed: a create, recovery or
 * opener that looks NAME up finds nothing or a new queue's directory, never a half-removed one
 * (review3 F-2a: a locker made .recover again between the delete's unlink of it and its rmdir;
 * the rmdir failed -ENOTEMPTY). What still reaches a tombstone is a process that opened the
 * directory before (its descriptor, R2-4): its head is fenced (LOG_GEN_DELETED), so it makes no
 * log file there; a maintenance pass may make .recover again (its lock is taken with O_CREAT),
 * so the removal walks again when rmdir finds the directory not empty.
 *
 * A tombstone that cannot be removed (an I/O error, a permission, a crash in between) is left;
 * a later delete in the same LOG_DIR sweeps the tombstones whose owner is gone (or is itself:
 * a delete of its own that failed earlier). A tombstone is garbage from the rename on, so two
 * removals of one (a sweep beside its owner, an owner in another pid namespace that looks
 * gone) only find files gone (-ENOENT), which counts as removed.
 */
#ifndef SHMQ_LOGTOMB_H
#define SHMQ_LOGTOMB_H

#include <stddef.h>

/* Rename dir (LOG_DIR/NAME) to a new tombstone in LOG_DIR, its path into tomb. 0 or -errno
 * (then dir is where it was). */
int logtomb_bury(const char *dir, char *tomb, size_t size);

/* Remove tombstone tomb: its log files, then the directory. 0 (also when it is gone already)
 * or -errno (the first failure; the tombstone is left). */
int logtomb_remove(const char *tomb);

/* In dir's LOG_DIR, remove the tombstones whose owner is gone or is this process, but skip
 * (the caller's own, a path logtomb_bury() gave; or NULL). Best effort: one that cannot be
 * removed is left. The number of those of dir's NAME removed. */
int logtomb_sweep(const char *dir, const char *skip);

#endif
