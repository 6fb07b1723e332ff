/*
 * replay.h - read a queue's history back from its write-ahead log.
 *
 * A replay walks the PUBLISH records of the queue's log (durability PROCESS or SYNC) from a
 * given message id or publish time, in log order, and then follows the log as it grows (like
 * `tail -f`). It reads the log files through read-only mappings and writes nothing anywhere:
 * live producers and consumers neither wait for it nor see it, and it does not count as a
 * consumer (acks, deliveries and the registry are untouched).
 *
 * What it returns: every PUBLISH record the log still holds whose id >= from.id (or, with
 * from.id 0, whose publish time >= from.unix_ms), in log order. That is the order in which
 * publishes reserved log space: id order for one producer; with several producers, ids that
 * were taken close together may appear slightly out of order (an id is taken before the record
 * is appended), and the filter is applied to each record, not as a starting point. A message
 * acked long ago is returned as long as its record is kept; a dead letter redriven is returned
 * again (redrive logs a new PUBLISH of the same id); a message whose publish crashed after its
 * record was written (publish had not returned) may be returned although it was never
 * delivered. Consumers' acks, nacks and attempts are not replayed.
 *
 * History kept: replay sees what the log keeps, nothing more. Retention (maintenance, see
 * docs/DESIGN.md "Retention") deletes a log file once no message in the queue refers to it,
 * writing has moved past it, and it lies more than the queue's log_retention_bytes behind the
 * write position (shmq_config_t; 0 by default, so by default the history of a queue whose
 * consumers keep up is short: about the current file and the one before). Set
 * log_retention_bytes at create time to the history you want to replay. A checkpoint's copy
 * of a long-lived message (flagged in the log) is not returned again.
 *
 * The publish time is CLOCK_REALTIME in ms, taken by the producer when it logs the message: a
 * clock step makes it jump, and replay by time filters each record by it.
 *
 * Threads: one shmq_replay_t is used by one thread at a time; any number of replays may run on
 * one queue, in any processes. A replay needs its shmq_t open for as long as it lives.
 */
#ifndef SHMQ_REPLAY_H
#define SHMQ_REPLAY_H

#include <stdint.h>

#include "shmq.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A reader of a queue's history (opaque). One thread at a time. */
typedef struct shmq_replay shmq_replay_t;

/** Where a replay starts. */
typedef struct shmq_replay_from {
    uint64_t id;     /* messages with id >= this; 0: by time */
    int64_t unix_ms; /* with id 0: messages published at or after this time (ms since the
                      * epoch, CLOCK_REALTIME); <= 0 with id 0: everything the log keeps */
} shmq_replay_from_t;

/**
 * A record is invalid while its writer is still writing it. One that stays invalid while a
 * later record is valid is a hole (its writer died, or is stopped) once this many ms passed
 * since the replay first met it: it is skipped. A writer stalled longer than this between
 * reserving log space and completing its record (SIGSTOP, a very slow disk when its file is
 * made) has its record skipped by replays that passed it: they return -EAGAIN during the
 * grace period.
 */
#define SHMQ_REPLAY_HOLE_GRACE_MS 1000

/**
 * Open a replay of q's log. from NULL: everything the log keeps.
 * Returns -EINVAL (NULL q or r), -EOPNOTSUPP (q has durability NONE: there is no log),
 * -ENOMEM. Reading starts at the oldest log file kept; nothing is read here but the directory.
 * Blocking: system calls (opendir, open, mmap).
 */
int shmq_replay_open(shmq_t *q, const shmq_replay_from_t *from, shmq_replay_t **r);

/**
 * The next message of the history. Fills msg->id, msg->data (it points into a read-only mapping
 * of the log file: valid until the next call on r or its close; do not write through it),
 * msg->len; msg->attempt, token and flags are 0 (a replayed message is not a delivery: never
 * ack or nack it).
 * Returns
 *   0         a message;
 *   -EAGAIN   the end of what is written now: call again later to follow the log (it tails the
 *             live log; poll, there is no wake-up);
 *   -ENODATA  history was lost before the replay could read it: at the start, records from
 *             `from` on were in log files that retention already deleted (or from asks for
 *             more than the oldest file kept holds); later, the replay fell behind and the file
 *             it needed next was deleted. Reported once; the next call goes on with the oldest
 *             file kept;
 *   -EBADMSG  a log file with a damaged header was skipped, or one cut short (truncated) was
 *             read up to the cut: its other records are lost (reported once, after its last
 *             readable record; the next call goes on with the next file);
 *   -EINVAL   NULL r or msg.
 * Damaged records inside a file are skipped silently, as recovery does (a torn tail, a hole
 * left by a writer that died: see SHMQ_REPLAY_HOLE_GRACE_MS).
 * Cost: no system call while it reads within one mapped file; opening the next file maps it
 * (open, mmap) and unmaps the previous one. Never blocks.
 */
int shmq_replay_next(shmq_replay_t *r, shmq_msg_t *msg);

/** The publish time (ms since the epoch, the producer's CLOCK_REALTIME) of the message the last
 *  shmq_replay_next() returned; 0 before the first one or for NULL r. No system call. */
int64_t shmq_replay_unix_ms(const shmq_replay_t *r);

/** The headers of the message the last shmq_replay_next() returned (none before the first, or
 *  for a message published without headers), as shmq_msg_headers() returns a delivery's: the
 *  pointers into the same read-only mapping as msg->data, valid until the next call on r or its
 *  close. -EINVAL for NULL r or n, or out NULL with max > 0; -EBADMSG for a malformed block. */
int shmq_replay_headers(const shmq_replay_t *r, shmq_header_t *out, size_t max, size_t *n);

/** Unmap and free the replay. r NULL: 0. */
int shmq_replay_close(shmq_replay_t *r);

#ifdef __cplusplus
}
#endif
#endif /* SHMQ_REPLAY_H */
