/*
 * crashpoint.h - named points where a test build can kill or stop this process.
 *
 * In a build with SHMQ_CRASH_POINTS defined, CRASH_POINT(name) compares name with the
 * environment variable SHMQ_CRASH_AT (read at the first hit in each process, a forked child
 * included: it does not inherit its parent's reading); on a match it raises SIGKILL, or
 * SIGSTOP when SHMQ_CRASH_SIGNAL=STOP (a stalled peer), after SHMQ_CRASH_SKIP earlier matches
 * (default 0). In other builds it compiles to nothing. The list of points is the list of crash
 * windows in docs/DESIGN.md; crashpoint_names[] (crashpoint.c) holds it for the tests.
 * Points that only a targeted test arms are not in that list (the generic crash tests have no
 * scenario for them): sync_after_ticket (wal.c, a SYNC waiter right after it took its ticket)
 * and sync_while_leading (wal.c, a SYNC group commit leader before its flush), sync_after_flush
 * (wal.c, a leader whose fdatasync returned, its outcome not yet recorded): tests/test_storage.c; take_back_before_move, copy_out_after_copy, copy_out_after_park and
 * copy_out_after_fence (maintain.c, a maintainer inside a take-back or a copy-out) and
 * finish_before_fence (slotmove.c, an ack that read a linger and has not fenced the slot yet):
 * tests/test_fencing.c; checkpoint_after_copy (maintain.c, a checkpoint that appended its copy
 * and no state record yet): tests/test_fencing.c; redrive_before_append (dlq.c, a redriver that
 * claimed a dead letter, before its PUBLISH) and make_file_before_create (wal.c, a writer about
 * to make a log file that does not exist yet): tests/test_epochfix.c; lock_before_flock
 * (loghead.c, a locker that opened .recover, before its flock) and create_before_segment
 * (open.c, a creator under the lock, its log's generation made, no segment yet) and
 * create_before_attach (open.c, a creator whose segment exists, before it points to its log and
 * maps it), open_before_attach (open.c, an opener that mapped the segment, before it opens the
 * log) and remove_before_rmdir (wal.c, a delete that removed every file of the log, before its
 * rmdir), create_before_lock (open.c, a create that made its log directory, before it makes
 * and locks .recover), unlink_before_unpoint (open.c, a delete that fenced the head, before it removes the
 * state directory's pointer) and unlink_before_bury (open.c, a delete that removed the state
 * directory's pointer, before its rename): tests/test_unlink.c.
 */
#ifndef SHMQ_CRASHPOINT_H
#define SHMQ_CRASHPOINT_H

/* Targeted too: publish_delayed_before_park (publish.c, a delayed publish that logged its record
 * and stored its due time, slot still RESERVED): tests/test_delayed.c; prepare_before_link
 * (wal.c, a maintainer that made a log file ahead of the writers, allocated and pre-touched
 * under its temporary name, before its link) and make_file_after_link (wal.c, a file maker whose
 * link is made, before its fsync of the directory): tests/test_walprep.c; due_between_clocks
 * (queue.c, a due time being turned into wall-clock time between its two clock readings):
 * tests/test_delayed.c; expire_between_clocks (expire.c, the same for an expiry) and
 * recover_between_clocks (recover.c, a rebuild between its wall and monotonic clock readings):
 * tests/test_expiry.c; append_after_reserve
 * (wal.c, a writer that reserved its record's space and holds its file's mapping, nothing
 * written yet; parked per thread with crashpoint_park_at): tests/test_walprep.c. Consumer groups
 * (docs/DESIGN.md, "Crash windows of groups"): fanout_after_prepare (publish.c, cells prepared,
 * slot RESERVED), fanout_after_commit (publish.c, P1 done, no cell moved on),
 * group_done_before_count (slotmove.c, a cell of group >= 1 FREE, its finisher not yet counted
 * out of the slot's release count), group_release_before_free (slotmove.c, every group done,
 * the slot not yet freed) and group_delete_before_wake (groups.c, a delete that cleared the
 * mask bit, its sleepers not woken yet): tests/test_groups.c; group_create_before_mask,
 * group_delete_after_mask and group_copy_before_append (groups.c, a maintainer copying a
 * group's record, before its append): tests/test_grouplog.c. */

#ifdef SHMQ_CRASH_POINTS
#include <stdbool.h>
void crashpoint_hit(const char *name);
/* Park one thread, not the process: the next thread of this process that passes point name
 * waits there until crashpoint_unpark() (its other threads go on). For tests of what threads of
 * one process do to each other (tests/test_walprep.c). */
void crashpoint_park_at(const char *name);
bool crashpoint_parked(void); /* a thread waits at the point now */
void crashpoint_unpark(void);
/* The same in pen 0 or 1: two threads parked at once, each released on its own. */
void crashpoint_park_at_pen(int pen, const char *name);
bool crashpoint_parked_pen(int pen);
void crashpoint_unpark_pen(int pen);
/* The park is no cancellation point (it stands for a pause, not a call: nocancel.h); on: it is
 * one, so that a test can end a thread inside the section it parked in (pthread_cancel). */
void crashpoint_park_cancellable(bool on);
#define CRASH_POINT(name) crashpoint_hit(#name)
#else
#define CRASH_POINT(name) ((void)0)
#endif

/* NULL-terminated list of every crash point's name (always compiled, for tests and docs). */
extern const char *const crashpoint_names[];

#endif
