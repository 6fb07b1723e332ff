/*
 * snapshot.h - a queue seen from outside: the segment mapped read-only and summed up.
 *
 * `list`, `stat` and `top` read a queue without taking part in it, as `dump` does: the segment
 * is validated and mapped PROT_READ, the tool never registers (so it cannot fill the registry,
 * and a corrupted segment cannot make it block in shmq_open()), and every value read from shm
 * is range-checked before it steers a read. A snapshot is best-effort on a live queue: each
 * word is read once, relaxed, so it is a picture of roughly one instant, not an atomic one.
 */
#ifndef SHMQ_TOOLS_SNAPSHOT_H
#define SHMQ_TOOLS_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"
#include "segment.h"
#include "shmq/shmq.h"

#define ERR_NOT_REGULAR (-EMEDIUMTYPE) /* seg_open_readonly(): not a regular file */

/*
 * segment_open(name, true, seg), except that a file at /dev/shm/shmq.NAME that is not a
 * regular file (a FIFO would block open() forever) is refused at once with ERR_NOT_REGULAR.
 * Then the geometry is checked against the mapping (seg_check_geometry): -EBADMSG if it fails.
 * 0 or -errno (-ENOENT, -EACCES, -EPROTO, -EBADMSG, ERR_NOT_REGULAR, ...).
 */
int seg_open_readonly(const char *name, struct segment *seg);

/* Check once more that every region a reader touches lies inside the mapping (guards against
 * a validation bug). NULL, or a description of the first problem. */
const char *seg_check_geometry(const struct segment *s);

/* Text for an error of seg_open_readonly(): shmq_strerror(), or "not a regular file". */
const char *seg_strerror(int err);

/* One non-free registry entry. */
struct snap_proc {
    uint32_t index;
    int32_t pid;
    uint32_t role;            /* SHMQ_ROLE_* bits */
    int state;                /* SHMQ_PROC_* */
    int64_t heartbeat_age_ms; /* -1: never beat */
    bool alive;               /* pid lives and is not reused */
    uint32_t inflight;        /* INFLIGHT slots it owns */
    char name[SHMQ_CONSUMER_NAME_MAX];
};

struct snapshot {
    uint64_t taken_ns; /* CLOCK_MONOTONIC */
    shmq_config_t cfg;
    uint64_t counters[CNT__COUNT]; /* published, delivered, ... (layout.h enum counter) */
    /* slots by state, now */
    uint32_t free, reserved, ready, inflight, delayed, dead, fenced, invalid;
    uint32_t consumers, procs; /* ACTIVE entries (consumers: with the consumer role) */
    int64_t oldest_age_ms;     /* age since publish of the oldest message not yet acked
                                * (ready, delayed or in flight); -1 if there is none */
    uint64_t next_id;
    uint64_t maint_passes;
    char log_dir[SHMQ_LOG_DIR_MAX + 56]; /* the queue's log directory ("" without a log) */
    /* the maintenance lease */
    bool lease_held;    /* a live holder, not expired */
    int32_t lease_pid;  /* 0: no holder recorded */
    int lease_priority; /* 1: a watchdog, 0: a consumer maintaining cooperatively */
    int64_t lease_expires_in_ms;
    struct snap_proc *proc; /* n_proc entries (malloc'd; snapshot_free()) */
    uint32_t n_proc;
};

/*
 * Read a snapshot of seg (from seg_open_readonly()). A SIGBUS while reading (the file shrank
 * under the mapping) is caught: -EFAULT. 0, -ENOMEM, -EFAULT.
 */
int snapshot_take(const struct segment *seg, struct snapshot *s);
void snapshot_free(struct snapshot *s);

/* Open NAME read-only, take a snapshot and unmap. 0 or the errors of both. */
int snapshot_queue(const char *name, struct snapshot *s);

/* The watchdog column of `list`: "active:PID", "expired", "cooperative:PID" or "none". */
const char *snapshot_watchdog(const struct snapshot *s, char *buf, size_t size);

/* "none", "process" or "sync" (SHMQ_DURABILITY_*), or "unknown". */
const char *snapshot_durability(const struct snapshot *s);

/* Names of the counters, in enum counter order. */
extern const char *const snapshot_counter_names[]; /* CNT__COUNT of them */

/* stat.c: render a snapshot (and, with before != NULL, rates per second since before) through
 * an emitter; `stat` prints it once, `top` in place. */
struct emitter;
void stat_emit(struct emitter *e, const char *name, const struct snapshot *now,
               const struct snapshot *before);

#endif
