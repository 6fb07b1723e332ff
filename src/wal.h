/*
 * wal.h - the write-ahead log beside a queue: format, appending, group commit, retention.
 *
 * The format (docs/FORMAT.md, "The log"): a queue's log directory holds files wal.NNNNNNNNNN
 * (sequence number, 10 digits), each wal_file_size bytes: a 4096-byte file header, then
 * records aligned to 16 bytes. A record is a 32-byte header and a payload:
 *
 *   0       4       8     10      12      16              24              32
 *   +-------+-------+-----+-------+-------+---------------+---------------+------------ - -
 *   | magic |  crc  |type |attempt|  len  |     epoch     |      id       | payload (len)
 *   +-------+-------+-----+-------+-------+---------------+---------------+------------ - -
 *
 * crc is CRC32C over bytes 8..32+len (for PAD: over 8..32 only) and is stored last, with
 * release: a record is valid iff magic, epoch (the file's, from its header) and crc match and
 * it fits in the file. The log position of a byte is a 64-bit number; file seq holds positions
 * [seq*U, (seq+1)*U), U = wal_file_size - 4096. Appenders reserve space with one FAA on the
 * segment's wal_pos; a reservation that would cross a file's end is filled with PAD records
 * (the rest of this file, and the spilled part at the start of the next one when it can hold a
 * record header) and taken again, so no record spans files and nobody waits for anybody.
 *
 * Generations (loghead.h, docs/DESIGN.md "Generations"): every segment belongs to one; a file
 * belongs to its maker's (layout.log_gen in its header); an append checks the log's live
 * generation before (E1) and after (E2) its record and fails with -EIDRM if it moved.
 *
 * Reading the log (recover.c), the files of the complete generation only: the latest record of
 * an id decides its fate: PUBLISH (live), ACK (resolved), DEAD (a dead letter); NACK sets its
 * attempts and, with a due time, makes it DELAYED. An invalid record is skipped by scanning
 * forward 16 bytes at a time for the next valid one: bad bytes followed by valid records are a
 * hole (a writer died after reserving) or corruption, bad bytes at a file's end a torn tail.
 */
#ifndef SHMQ_WAL_H
#define SHMQ_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h" /* the log's magics and sizes, wal_rec_size() */
#include "logdir.h" /* wal_dir_path(): where the log lives */
#include "segment.h"

/* MARK: ids up to its id were handed out (written before files are deleted, so recovery never
 * hands out an id again even when the records that carried the highest ids are gone).
 * CONFIG: the queue's changeable settings after a change (shmq_set_config(); settings.h, K2):
 * its id is the settings' version, not a message id; its payload a struct settings_values
 * (WAL_CONFIG_LEN bytes, or more: later settings follow). */
enum wal_type {
    WAL_PUBLISH = 1,
    WAL_ACK = 2,
    WAL_DEAD = 3,
    WAL_NACK = 4,
    WAL_PAD = 5,
    WAL_MARK = 6,
    WAL_CONFIG = 7,
    WAL_GROUP = 8 /* a consumer group created or deleted (below) */
};
#define WAL_TYPE_MAX WAL_GROUP /* a record of a higher type is invalid */

/* The type field: the type in its low byte; an ACK, DEAD or NACK of consumer group g (1..63)
 * carries g in its high byte (group 0's records have none). docs/FORMAT.md section 9. */
#define WAL_MAX_GROUPS 64u
static inline unsigned wal_type_of(unsigned type, uint32_t g) { return type | g << 8; }
static inline unsigned wal_type_base(unsigned type) { return type & 0xffu; }
static inline uint32_t wal_type_group(unsigned type) { return type >> 8; }
/* Is type a type this version reads (walscan, replay)? */
static inline bool wal_type_valid(unsigned type)
{
    unsigned t = type & 0xffu, g = type >> 8;
    return t >= WAL_PUBLISH && t <= WAL_TYPE_MAX &&
           (g == 0 || (g < WAL_MAX_GROUPS && (t == WAL_ACK || t == WAL_DEAD || t == WAL_NACK)));
}

/* A pin of the log files a record needs (a file seq + 1; 0: none, above every file): lowered to
 * file seq before an append reserves (a lower bound of where the record lands, as a publish's
 * wal_seq), never raised by it: the record it stands for may be in an older file and stays the
 * only one until the append returned (a writer killed or failing in between). Raised by the
 * caller after its append returned only. relaxed: ordered before the record's reservation by
 * that FAA (seq_cst, a release): a maintenance pass whose wal_cur load read the reservation
 * sees the pin (K3). Settings (setconfig.c) and group entries (groups.c). */
static inline void wal_pin_lower(_Atomic uint32_t *pin, uint64_t seq)
{
    uint32_t want = (uint32_t)seq + 1;
    uint32_t ws = atomic_load_explicit(pin, memory_order_relaxed);
    while ((ws == 0 || ws > want) &&
           !atomic_compare_exchange_weak_explicit(pin, &ws, want, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

/* A GROUP record (id: the group's index): attempt WAL_GROUP_CREATE or WAL_GROUP_DELETE, with
 * WAL_GROUP_COPY on a retention or recovery copy; payload struct wal_group (WAL_GROUP_LEN bytes,
 * or more: later fields follow). since_pos: bit g of a PUBLISH at log position B counts for
 * this group iff its latest GROUP record is a create with since_pos <= B (rule R-G,
 * docs/DESIGN.md "The log with groups"). */
#define WAL_GROUP_CREATE 1u
#define WAL_GROUP_DELETE 2u
#define WAL_GROUP_COPY 4u
#define WAL_GROUP_LEN 64u
struct wal_group {
    uint64_t gen;
    uint32_t policy, bound;
    uint64_t first_id;
    uint64_t since_pos;
    char name[32];
};
_Static_assert(sizeof(struct wal_group) == WAL_GROUP_LEN, "docs/FORMAT.md section 9");
#define WAL_CONFIG_LEN 56u      /* bytes of a CONFIG payload this version writes (40 before
                                 * expire_policy and log_retention_bytes could change) */

struct wal_rec {
    uint32_t magic;
    uint32_t crc;
    uint16_t type;
    uint16_t attempt;
    uint32_t len;
    uint64_t epoch;
    uint64_t id;
};
_Static_assert(sizeof(struct wal_rec) == WAL_REC_HEADER, "record header is 32 bytes");

/* The first bytes of every log file; covered by crc up to the crc field. */
struct wal_file_header {
    uint64_t magic;        /* WAL_FILE_MAGIC, stored last when the file is made */
    uint32_t version, header_size;
    uint64_t epoch;        /* random per file: a record of another file never validates here */
    uint64_t seq;
    uint64_t file_size;
    struct seg_layout layout; /* the queue's config and geometry, to rebuild its segment */
    uint32_t crc;
    uint32_t reserved;
};

/*
 * A PUBLISH record's payload: the publish time, the dedup key (may be empty, at most
 * WAL_KEY_MAX bytes), the message; WAL_PUBLISH_PREFIX (10) bytes come before the key.
 *   0         8         10            10+key_len
 *   +---------+---------+-------------+------------ - -
 *   | unix_ms | key_len |  key bytes  | message bytes
 *   +---------+---------+-------------+------------ - -
 * With flag WAL_PUB_DUE (a delayed publish), WAL_PUBLISH_DUE_LEN (8) bytes more, after
 * unix_ms: the due time, CLOCK_REALTIME unix ms (u64); key_len then starts at 16.
 *   0         8          16        18            18+key_len
 *   +---------+----------+---------+-------------+------------ - -
 *   | unix_ms | due_unix | key_len |  key bytes  | message bytes
 *   +---------+----------+---------+-------------+------------ - -
 * With flag WAL_PUB_EXPIRE (a message with a time to live), 8 bytes more after those: its
 * expiry, CLOCK_REALTIME unix ms (u64). With both flags: unix_ms, due, expiry, key_len (at 24).
 * With flag WAL_PUB_GROUPS (a queue with groups, a message not for group 0 alone), 8 bytes more
 * after those times: the mask of groups it was fanned out to (u64, bit 0 group 0).
 * With flag WAL_PUB_HDRS (a message with headers), WAL_PUBLISH_HDRS_LEN (4) bytes more, after
 * key_len: the header block's length (u32, > 0); the block (hdrblock.h) follows the key:
 *   0         8          [+8]         [+8]           +2          +4          +key_len      +hdrs_len
 *   +---------+----------+------------+--------------+-----------+-----------+-------------+------- -
 *   | unix_ms | [due]    | [expiry]   | key_len      | hdrs_len  | key bytes | header block| message
 *   +---------+----------+------------+--------------+-----------+-----------+-------------+------- -
 */
/* A PUBLISH record's attempt field holds flags: */
#define WAL_PUB_CHECKPOINT 1u /* a copy made by a checkpoint or a recovery, not a publish (replay
                               * skips it) */
/* the payload carries a due time: the message is DELAYED until then (shmq_publish_delayed);
 * records without it read as before */
#define WAL_PUB_DUE 2u
/* the payload carries an expiry time (expire.h): a rebuild restores it, or expires the message
 * at once if it passed; a redrive's record has none */
#define WAL_PUB_EXPIRE 4u
#define WAL_PUBLISH_EXPIRE_LEN 8u
/* the payload carries a header block (shmq_publish_ex with headers); records without it read
 * as before */
#define WAL_PUB_HDRS 8u
/* the payload carries the group mask (docs/FORMAT.md section 9); without it: group 0 alone */
#define WAL_PUB_GROUPS 16u
#define WAL_PUBLISH_GROUPS_LEN 8u
/* An ACK record's attempt field holds flags: */
#define WAL_ACK_ABORT 1u /* a reservation given up unpublished: its PUBLISH record (and dedup key)
                          * never counted */
#define WAL_ACK_EXPIRED 2u /* dropped at its expiry (expire_policy SHMQ_EXPIRE_DROP), not
                            * consumed; resolves it as any ACK */
#define WAL_ACK_OVERRUN 4u /* dropped by its group's overrun policy; resolves it as any ACK */
/* A NACK record's payload: nothing (READY again), or the due time of a delayed nack as
 * CLOCK_REALTIME unix ms (u64), so the remaining delay survives a reboot. A DEAD record's
 * payload: the reason (u32, SHMQ_DEAD_*). Their attempt field: the slot's attempts. */
#define WAL_NACK_DUE_LEN 8u
#define WAL_DEAD_REASON_LEN 4u

struct wal_publish {
    uint64_t unix_ms;
    uint64_t due_unix_ms; /* WAL_PUB_DUE: when it becomes ready (unix ms); 0 without the flag */
    uint64_t expire_unix_ms; /* WAL_PUB_EXPIRE: when it expires (unix ms); 0 without the flag */
    uint64_t groups; /* WAL_PUB_GROUPS: the groups it went to; 1 (group 0) without the flag */
    const void *key;
    uint32_t key_len;
    const void *hdrs;  /* WAL_PUB_HDRS: the header block (hdrblock.h); hdrs_len 0 without */
    uint32_t hdrs_len;
    const void *data;
    uint32_t len;
};

/* Split a PUBLISH record's payload; -EBADMSG if it is too short for what it claims. */
int wal_parse_publish(const struct wal_rec *r, const void *payload, struct wal_publish *out);

/* CRC of a record as stored (header bytes 8..32 and, but for PAD, the payload). */
uint32_t wal_rec_crc(const struct wal_rec *r, const void *payload);

/* CRC of a file header up to its crc field. */
uint32_t wal_header_crc(const struct wal_file_header *h);

struct wal; /* a process's handle on a queue's log */

/* Open the log of the segment's queue (its log_dir) and map its head (loghead.h); a head
 * deleted by hand is made again. create: the caller made the directory and the head and holds
 * the exclusive lock (shmq_create): nothing is made (-ENOENT if missing). */
int wal_open(struct segment *seg, bool create, struct wal **out);

/* Is the log still in this segment's generation? (One relaxed load: E1.) Every append checks
 * it before (E1) and after (E2, behind a seq_cst fence) and fails with -EIDRM otherwise: the
 * queue was rebuilt by a recovery, this process holds the old segment and must reopen. */
bool wal_gen_live(const struct wal *w);

/* The live-generation word of the log's head and (in *mine) this segment's generation, for a
 * caller that checks it without a call (queue.h). */
const _Atomic uint64_t *wal_gen_word(const struct wal *w, uint64_t *mine);

void wal_close(struct wal *w);

/*
 * Append a record; *seq gets the file it landed in. -EIDRM: the log moved to a newer
 * generation (E1: nothing written; E2: written, and recovery may or may not have read it). Lock-free between processes: one FAA on
 * wal_pos, then writes into the mapped file. A system call only when this process first
 * touches a file (mapping it, creating it if nobody prepared it). -ENOSPC, -EIO, -errno.
 */
int wal_append(struct wal *w, unsigned type, uint64_t id, uint32_t attempt,
               const void *payload, uint32_t len, uint32_t *seq);

/* wal_append() of a record with no payload (an ACK, a NACK without due time, a MARK): its own
 * function, so that an ack's call passes four arguments and the append keeps fewer registers. */
int wal_append_bare(struct wal *w, unsigned type, uint64_t id, uint32_t attempt, uint32_t *seq);

/* Append the PUBLISH record of message id (key may be NULL with key_len 0); flags WAL_PUB_*. */
int wal_append_publish(struct wal *w, uint64_t id, unsigned flags, const void *key,
                       uint32_t key_len, const void *data, uint32_t len, uint32_t *seq);

/* The same with the publish time given (unix ms; 0: now): a copy keeps its message's time. */
int wal_append_publish_at(struct wal *w, uint64_t id, unsigned flags, uint64_t unix_ms,
                          const void *key, uint32_t key_len, const void *data, uint32_t len,
                          uint32_t *seq);

/* The PUBLISH record of a delayed message (flag WAL_PUB_DUE): ready at due_unix_ms (unix ms). */
int wal_append_publish_due(struct wal *w, uint64_t id, uint64_t due_unix_ms, const void *data,
                           uint32_t len, uint32_t *seq);

/* The times a PUBLISH record may carry (unix ms, 0: none): publish time (0: now), due time
 * (flag WAL_PUB_DUE), expiry (flag WAL_PUB_EXPIRE). */
struct wal_times {
    uint64_t unix_ms, due_unix_ms, expire_unix_ms;
    uint64_t groups; /* not a time: the group mask (flag WAL_PUB_GROUPS); 0 or 1: group 0 alone */
};

/* Any PUBLISH record: flags WAL_PUB_CHECKPOINT (the others follow the times given, and a header
 * block: hdrs_len 0 none, else flag WAL_PUB_HDRS). Not the fast path's (its callers: a publish
 * with a time to live or headers, checkpoints, redrives, recovery). */
int wal_append_publish_timed(struct wal *w, uint64_t id, unsigned flags, const struct wal_times *t,
                             const void *key, uint32_t key_len, const void *hdrs,
                             uint32_t hdrs_len, const void *data, uint32_t len, uint32_t *seq);

/* One record of a run (wal_append_batch): a PUBLISH record of message id (no key, no due
 * time, data[0..len)) or an ACK record (no payload: len and data unused). */
struct wal_item {
    unsigned type; /* WAL_PUBLISH, or WAL_ACK (of a group: wal_type_of()) */
    uint32_t len;
    uint64_t id;
    const void *data;
    uint64_t expire_unix_ms; /* PUBLISH: its expiry (WAL_PUB_EXPIRE), 0: none */
    uint64_t groups;         /* PUBLISH: its group mask (WAL_PUB_GROUPS), 0 or 1: group 0 alone */
};

/*
 * Append a run of items[0..n) with ONE reservation (one FAA on wal_pos): the longest prefix
 * whose records fit in a quarter of a file (at least one record), so that a run crossing a
 * file's end fits in the next one when taken again; *written gets its length (call again for
 * the rest), *seq the file it landed in. Every record is the one wal_append/wal_append_publish
 * would write (its own header and crc); PUBLISH records carry unix_ms (0: now) as their
 * publish time. Errors as wal_append (E1/E2 once for the run): on an error *written is 0 (but
 * -EIDRM from E2: the run is written, recovery may or may not have read it, *written says how
 * many).
 */
int wal_append_batch(struct wal *w, uint64_t unix_ms, const struct wal_item *items, size_t n,
                     size_t *written, uint32_t *seq);

/*
 * Wait until every record this process appended is on stable storage (group commit: one
 * fdatasync covers every producer waiting at that moment). Blocking. 0, or -EIO when the flush
 * that covered this call failed, or any flush of the log failed before (sticky: the log is
 * failed until its segment is rebuilt), or when this call led a round that could not map a file
 * to flush it (not sticky: that is a limit of one process, nothing was lost from the page
 * cache), or when a flush that may have covered it has an unknown outcome (its leader was taken
 * over while stopped, or died, inside it: not sticky either, GC7/GC8 in docs/DESIGN.md). A
 * leader that dies, or makes no progress for the stall time (WAL_SYNC_STALL_MS or 4 times this
 * process's last round, the longer), is taken over; a file flushed twice is harmless.
 */
int wal_sync(struct wal *w, uint32_t seq, uint64_t from);

/* For wal_sync's `from`: a log position read before the records to be synced were appended (no
 * record appended after this call lies below it). wal_sync returns -EIO, without failing the log,
 * when a flush whose outcome is unknown may have covered a record at or after `from` (GC7). */
uint64_t wal_sync_from(const struct wal *w);

/* A sync leader that has not finished for this long is taken over by a waiter. */
#define WAL_SYNC_STALL_MS 100

/*
 * seg_header.wal_health: bits 0..15 the errno of the last log write that failed, 0 once a
 * later one succeeded; WAL_HEALTH_FLUSH_FAILED (sticky) once an fdatasync of the log failed.
 * seg_header.wal_errors counts every failed log write (append, its file's creation or mapping,
 * an ACK/NACK/DEAD record that could not be written) and every failed flush.
 */
#define WAL_HEALTH_ERRNO 0xffffu
#define WAL_HEALTH_FLUSH_FAILED (1u << 16)

/* The log's health as the segment records it (see above). */
struct wal_health {
    uint64_t errors;   /* failed log writes and flushes */
    int last_error;    /* negative errno of the last failed write, 0 if the last one succeeded */
    bool flush_failed; /* sticky: a flush failed; SYNC publishes return -EIO */
};
void wal_health_of(const struct seg_header *h, struct wal_health *out);

/* Maintenance: prepare the next files ahead of the writers (made and allocated, up to
 * WAL_PREPARE_AHEAD; and but for a light (cooperative) pass pre-touched, and prefaulted in this
 * process if it writes the log; docs/DESIGN.md, "Log files prepared ahead"; a failure there is
 * no error: the writer that needs the file makes it); delete the files below both
 * min_live_seq (the lowest file a slot refers to; UINT64_MAX if none) and cur (the file being
 * written, read BEFORE the slots were scanned), holding the .recover flock shared (skipped if a
 * recovery holds it) and only in our generation. Returns files deleted, -EIDRM (fenced: nothing
 * deleted), or -EBADMSG (counted as a log error, nothing done) when wal_pos in shm is garbage
 * (its file is not on disk, far beyond the oldest one, or past the 10-digit file names). A file
 * that cannot be deleted (unlink fails but for ENOENT) stops the pass: it is counted as a log
 * error, wal_oldest_seq stays at it (the next pass tries again) and its -errno is returned.
 * A pass that deleted files also removes wal.N.tmp.PID.* files of processes that are gone. */
int wal_maintain(struct wal *w, uint64_t min_live_seq, uint64_t cur, bool light);

/* The file the log is being written in now. */
uint64_t wal_current_seq(const struct wal *w);

/* The file seq a log position falls in. */
uint64_t wal_seq_of(const struct wal *w, uint64_t pos);

/* How many wal.* files the directory holds now. */
uint32_t wal_count_files(struct wal *w);

/* Remove the log directory path (a directory, not a link: opened O_NOFOLLOW) and its wal
 * files, head and .recover: 0, or the first unlink failure (but ENOENT), or rmdir's. */
int wal_remove_dir(const char *dir);

#endif
