/*
 * seen.h - the consumer-side dedup helper: "have I already processed this message?"
 *
 * shmq delivers at least once: a message is redelivered when its consumer nacks it, dies, hangs
 * or misses its ack deadline, and a message may come back after a segment is rebuilt from its
 * log. A handler that is not idempotent by nature keeps a shmq_seen_t: a bounded set of the
 * keys (message ids, or keys of its own) it has processed, held in a process-local lock-free
 * hash table (liburcu's cds_lfht, urcu-memb flavor), optionally backed by an append-only file
 * so that the set survives the consumer's restart.
 *
 * The exactly-once-processing recipe:
 *
 *     shmq_receive(c, &m, -1);
 *     if (shmq_seen_check(s, key, klen) == 1) {   // processed before: a redelivery
 *         shmq_ack(c, &m);                        // ack and skip
 *         continue;
 *     }
 *     process(&m);                                // the side effects
 *     shmq_seen_add(s, key, klen);                // durable when the table has a file
 *     shmq_ack(c, &m);
 *
 * (key: the message's id via shmq_seen_id(), or a key carried in the payload, e.g. the
 * producer's dedup key; several consumers processing the same queue in one process share one
 * table; with several processes, each process sees only its own table.)
 *
 * Its limits, which no consumer-side table can remove:
 * - A crash between process() and shmq_seen_add() returning reprocesses the message after the
 *   restart. Side effects must be idempotent, or made atomic with the seen record (written in
 *   the same transaction as them: then keep the seen keys in that store, not here).
 * - The window is bounded: after max_entries newer keys, a key is forgotten (oldest first), and
 *   a redelivery of it then looks new. Size max_entries above what can be redelivered: the
 *   queue's capacity plus the messages processed within the longest redelivery delay.
 * - Message ids are unique per queue while the queue lives: shmq_unlink() then shmq_create()
 *   starts ids again at 1; use a new file (or keys of your own) for a recreated queue. A
 *   producer that publishes the same content twice makes two ids: use producer dedup
 *   (shmq_publish_dedup) or a key of the content for that.
 * - Two consumers that race on redeliveries of one message (one fenced as hung, one given the
 *   redelivery) both pass shmq_seen_check() if both check before either adds. For "only one of
 *   them processes", use shmq_seen_check_and_add() before processing: then a crash after it and
 *   before the processing is done loses the message instead (at-most-once for that key).
 *
 * Threads. Every function but open and close may be called concurrently from any threads of
 * the process. liburcu requires each thread that uses the table to be registered with the
 * urcu-memb flavor: shmq does it lazily, on a thread's first call (a thread-local flag), and
 * unregisters the thread when it exits (a pthread key destructor). Do not register the thread
 * yourself with urcu-memb as well. fork(): a child must not use a table its parent opened; a
 * child that opens its own table must be forked with liburcu's urcu_memb_call_rcu_before_fork()
 * / _after_fork_parent() / _after_fork_child() around fork() if the parent used shmq_seen_*
 * before (liburcu's call_rcu thread is not inherited), or the child's evicted keys are never
 * freed.
 *
 * Costs. check: a hash and an RCU read-side lookup; no lock, no system call, wait-free for
 * readers. add / check_and_add: one malloc and a lock-free insert; with a file, a write() and
 * (SHMQ_SEEN_SYNC_DATA, the default) an fdatasync() per added key, under a shared lock that
 * only compaction takes exclusively.
 *
 * The file (path given): a 16-byte header ("SHMQSEEN", version 1, 4 zero bytes) then records
 * appended in the order keys were added: u32 magic 0x4e454553, u32 len, len key bytes, u32
 * CRC32C of the preceding 8 + len bytes (little-endian, unaligned). At open it is read back:
 * a torn last record (a crash while appending) or a corrupt region is skipped (bad bytes are
 * counted in shmq_seen_stats_t.bad_bytes and the file is rewritten without them); the last
 * max_entries distinct keys are kept. When it holds more than 4 x max_entries records it is
 * rewritten with the keys the table holds (PATH.tmp, fdatasync, rename, fsync of the
 * directory). Mode 0600. PATH.lock (0600, never removed) holds an exclusive flock while a
 * table is open on PATH, so two tables (in one or two processes) never share a file.
 */
#ifndef SHMQ_SEEN_H
#define SHMQ_SEEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A set of processed keys (opaque). Safe to share between the threads of one process. */
typedef struct shmq_seen shmq_seen_t;

#define SHMQ_SEEN_KEY_MAX 256u           /* bytes in one key */
#define SHMQ_SEEN_ENTRIES_MAX (1u << 24) /* max_entries limit */

/** Durability of shmq_seen_add() with a file (shmq_seen_set_sync()). */
#define SHMQ_SEEN_SYNC_DATA 0 /* write() + fdatasync(): survives power loss (the default) */
#define SHMQ_SEEN_SYNC_WRITE                                                                       \
    1 /* write() only: survives the process's crash (the kernel has the                            \
       * bytes), not a power loss or kernel crash; far cheaper */

/**
 * Open a seen table of at most max_entries keys (1..SHMQ_SEEN_ENTRIES_MAX). path NULL: in
 * memory only (lost when the process ends). Otherwise the file at path is created (0600) or
 * read back (see the top of this file).
 * Returns -EINVAL (NULL s, max_entries out of range), -EBUSY (another table, in this process or
 * another, has path open), -EBADMSG (path exists and is not a seen file: it is left alone),
 * -ENOMEM, other -errno from open/read/write/fsync/rename.
 * Blocking: system calls, and reading the whole file; call it at start-up.
 */
int shmq_seen_open(const char *path, size_t max_entries, shmq_seen_t **s);

/**
 * Is key (len bytes, 1..SHMQ_SEEN_KEY_MAX) in the table? 1 seen, 0 not, -EINVAL (NULL s or key,
 * len 0), -EMSGSIZE (len > SHMQ_SEEN_KEY_MAX).
 * Any thread, concurrently with everything but close. Wait-free lookup; no system call (but a
 * thread's first call registers it with liburcu).
 */
int shmq_seen_check(shmq_seen_t *s, const void *key, size_t len);

/**
 * Mark key processed. 0 when it was added or was there already. With a file, the key is
 * durable when it returns (per shmq_seen_set_sync()). Adding may evict the oldest key when the
 * table is full. Errors: as check; -ENOMEM; -EIO/-ENOSPC/-errno from write or fdatasync, in
 * which case the key is marked in memory but its record may be missing from the file.
 * Any thread, concurrently with everything but close. Lock-free in memory; blocking (write,
 * fdatasync) with a file.
 */
int shmq_seen_add(shmq_seen_t *s, const void *key, size_t len);

/**
 * Atomic test-and-set: 1 if key was already there (nothing changes), 0 if this call added it
 * (durably, as shmq_seen_add()). Of several threads that call it with one key at once, exactly
 * one gets 0. Errors, concurrency and cost as shmq_seen_add().
 */
int shmq_seen_check_and_add(shmq_seen_t *s, const void *key, size_t len);

/**
 * shmq_seen_check_and_add() with the 8 bytes of msg_id (little-endian) as the key: 1 if this
 * message id was seen, 0 if it is new (and is now marked). Ids share the key space with 8-byte
 * keys of your own: keep one table per kind of key.
 */
int shmq_seen_id(shmq_seen_t *s, uint64_t msg_id);

/**
 * Set the durability of later adds with a file: SHMQ_SEEN_SYNC_DATA or SHMQ_SEEN_SYNC_WRITE.
 * -EINVAL for another mode or NULL s. A no-op in memory. Any thread; no system call.
 */
int shmq_seen_set_sync(shmq_seen_t *s, int mode);

/** What a table holds and did. */
typedef struct shmq_seen_stats {
    size_t entries; /* keys in the hash table now (counted by a traversal) */
    size_t max_entries;
    uint64_t added;        /* keys added since open (reloaded ones not counted) */
    uint64_t evicted;      /* keys forgotten to make room, since open */
    uint64_t loaded;       /* valid records read back from the file at open */
    uint64_t bad_bytes;    /* bytes of torn or corrupt records skipped at open */
    uint64_t file_records; /* records in the file now */
    uint64_t compactions;  /* rewrites of the file since open */
} shmq_seen_stats_t;

/**
 * Fill *st. entries is exact when no add runs concurrently; while adds run it may exceed
 * max_entries by the number of adds in progress (each inserts, then evicts). Any thread; a
 * traversal of the table (O(entries)): not for the fast path. The struct can grow (shmq.h
 * "ABI"): a macro, shmq_seen_stats_size(s, st, sizeof(shmq_seen_stats_t)).
 */
int shmq_seen_stats(shmq_seen_t *s, shmq_seen_stats_t *st);
int shmq_seen_stats_size(shmq_seen_t *s, shmq_seen_stats_t *st, size_t size);
#define shmq_seen_stats(s, st) shmq_seen_stats_size((s), (st), sizeof(shmq_seen_stats_t))

/**
 * Free the table (and close its file: every added key is in it already). No other call on s
 * may run or follow. Waits for liburcu's grace period and pending frees (urcu_memb_barrier):
 * do not call it from an RCU read-side critical section or a call_rcu callback. 0, or -errno
 * from close() of the file. s NULL: 0.
 */
int shmq_seen_close(shmq_seen_t *s);

#ifdef __cplusplus
}
#endif
#endif /* SHMQ_SEEN_H */
