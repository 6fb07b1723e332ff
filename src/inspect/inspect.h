/*
 * inspect.h - the inspection layer: a validated, read-only snapshot of a queue's segment and of
 * its log, for the tools (`shmq dump`, `stat`, `top`, `list`, `wal`, and whatever comes next).
 *
 * Why a layer. The segment and log formats change (recovery epochs, consumer groups, headers,
 * expiry); the tools that show them should not. Everything a tool learns about the bytes comes
 * through this header, whose types are plain structs of numbers, flags and names: no internal
 * type (struct seg_layout, struct slot, struct ring, enum counter, ...) appears here, and the
 * tools' include path holds this directory and include/ only (CMakeLists.txt, shmq_tool()), so
 * a stray internal include fails to compile. A format change is absorbed in src/inspect.c.
 *
 * What it guarantees.
 *  - No registration, no writes. A segment is opened O_RDONLY and mapped PROT_READ; the reader
 *    takes no registry entry, ring ticket or lock, so it cannot fill the registry, block behind
 *    a corrupted segment in shmq_open(), or change what it looks at. Log files likewise (no
 *    .recover lock either).
 *  - Validated geometry. A segment is used only after segment_open_fd() validated its header
 *    (magic, version, CRC, the layout its config implies) and a second check of every region
 *    against the mapping (what `why` reports); every later read is steered by that private
 *    copy, never by a value read from shm.
 *  - Hostile shared memory and files. Every value read from shm or a file that could steer a
 *    read (a slot state, owner, linger, length, ring cell index, registry index, pid, record
 *    length) is range-checked first; what fails is reported (a flag on the item and a line in
 *    `notes`), never followed. A pid <= 0 is never passed to kill().
 *  - No signal. A file truncated under the mapping makes the next access fault (SIGBUS). The
 *    reads of a mapping happen only inside this layer (every result is a copy), so the guard
 *    lives here, around them: a fault there makes the call return -EFAULT and nothing else.
 *    (In the tools the guard would have to wrap every call that might touch the mapping, and
 *    each tool carried its own copy.) See inspect.c, "The SIGBUS guard", for how it stays out
 *    of the application's way: it is installed only for the duration of a read, chains to the
 *    previous handler for faults that are not its own, and serialises readers across threads.
 *  - Best-effort consistency on a live queue. Each shared word is read once (atomically, with
 *    the acquire its writer's release pairs with where one exists), so a snapshot is a picture
 *    of roughly one instant, not an atomic one: counts and lists taken by separate calls may
 *    disagree by what happened in between.
 *
 * Errors are negative errno values: -ENOENT, -EACCES, -EPROTO (another format version),
 * -EBADMSG (truncated, corrupted, not shmq), INSPECT_ENOTREG (not a regular file: a FIFO
 * planted at the segment's path is refused without opening it for reading, so it cannot hang
 * the tool), -EFAULT (truncated while it was read), -ENOMEM. inspect_strerror() has the text.
 */
#ifndef SHMQ_INSPECT_H
#define SHMQ_INSPECT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shmq/shmq.h"

#define INSPECT_ENOTREG (-EMEDIUMTYPE) /* the path holds something other than a regular file */

/* Text for an error of this layer: "not a regular file...", "segment truncated while it was
 * read (SIGBUS)", else shmq_strerror(). Never NULL. */
const char *inspect_strerror(int err);

/* ------------------------------------------------------------------ names and places */

/* 0 if name is a valid queue name (1..SHMQ_NAME_MAX bytes of [A-Za-z0-9._-]), else -EINVAL. */
int inspect_name_check(const char *name);

/* The directory that holds the segments ("/dev/shm") and the path of NAME's segment in it. */
extern const char inspect_segment_dir[];
int inspect_segment_path(const char *name, char *buf, size_t size); /* 0 or -EINVAL */

/* The names of the queues whose segments are in inspect_segment_dir (entries that are not a
 * valid queue name are left out), sorted; *names is malloc'd (inspect_names_free()).
 * 0, -ENOMEM or -errno of reading the directory. */
int inspect_queue_names(char ***names, size_t *n);
void inspect_names_free(char **names, size_t n);
/* The names of the queues whose log the state directory holds or links to (whether or not they
 * have a segment), sorted, as inspect_queue_names(). 0, -ENOMEM, or an error of finding the
 * state directory (-ENOENT: no HOME; -EPERM: not the caller's own) or reading it. */
int inspect_logged_names(char ***names, size_t *n);

/* ------------------------------------------------------------------ words shown by name */

enum inspect_counter {
    INSPECT_PUBLISHED,
    INSPECT_DELIVERED,
    INSPECT_ACKED,
    INSPECT_NACKED,
    INSPECT_REDELIVERED,
    INSPECT_DEAD_LETTERED,
    INSPECT_RECLAIMED,
    INSPECT_DEDUP_HITS,
    INSPECT_COUNTERS
};
const char *inspect_counter_name(int c); /* "published", ... ; "?" out of range */

enum inspect_slot_state {
    INSPECT_SLOT_FREE,
    INSPECT_SLOT_RESERVED,
    INSPECT_SLOT_READY,
    INSPECT_SLOT_INFLIGHT,
    INSPECT_SLOT_DELAYED,
    INSPECT_SLOT_DEAD,
    INSPECT_SLOT_FENCED,
    INSPECT_SLOT_HELD,    /* consumer groups: group 0 done, other groups hold the message */
    INSPECT_SLOT_INVALID, /* a state no code writes: an inconsistency */
    INSPECT_SLOT_STATES
};
const char *inspect_slot_state_name(int s); /* "FREE", ..., "HELD", "INVALID" */

enum inspect_proc_state {
    INSPECT_PROC_FREE,
    INSPECT_PROC_CLAIMED,
    INSPECT_PROC_ACTIVE,
    INSPECT_PROC_FENCED,
    INSPECT_PROC_INVALID
};
const char *inspect_proc_state_name(int s); /* "FREE", "CLAIMED", "ACTIVE", "FENCED", "INVALID" */

/* The registry's liveness rule (what maintenance applies): dead when the pid is gone or a
 * zombie, pid-reused when /proc/PID/stat shows another start time than the one recorded. */
enum inspect_liveness { INSPECT_ALIVE, INSPECT_DEAD, INSPECT_PID_REUSED, INSPECT_NO_PID };
const char *inspect_liveness_name(int l); /* "alive", "dead", "pid-reused", "no-pid" */

/* "client", "consumer|maintainer", ...; unknown bits as "0x..". Returns buf. */
const char *inspect_role_text(uint32_t role, char *buf, size_t size);

const char *inspect_dead_reason_name(uint32_t reason); /* "max-attempts", "corrupt", "expired", "none" */
const char *inspect_durability_name(int durability);   /* "none", "process", "sync", "unknown" */

/* Lines describing inconsistencies or problems, in the order they were found: the first
 * INSPECT_NOTES_KEPT are kept, the rest only counted. */
#define INSPECT_NOTES_KEPT 64
#define INSPECT_NOTE_TEXT 200
struct inspect_notes {
    uint64_t count;
    char text[INSPECT_NOTES_KEPT][INSPECT_NOTE_TEXT];
};

/* ------------------------------------------------------------------ the segment */

struct inspect_segment; /* an open, validated, read-only mapping of one queue's segment */

/*
 * Open NAME's segment read-only (never registering) and validate it. 0, or -ENOENT, -EACCES,
 * -EPROTO, -EBADMSG, INSPECT_ENOTREG, -EFAULT, -ENOMEM, -errno. When the header is valid but
 * the second geometry check fails, -EBADMSG and *why (if why is not NULL) names the first
 * problem; otherwise *why is NULL.
 */
int inspect_segment_open(const char *name, struct inspect_segment **out, const char **why);
void inspect_segment_close(struct inspect_segment *seg);

/* A named number, for sections whose members are format details shown as they are. */
struct inspect_field {
    const char *key;
    uint64_t value;
};
#define INSPECT_FIELDS_MAX 16

struct inspect_header {
    uint64_t magic;
    uint32_t version; /* the segment format version */
    uint32_t header_size;
    uint64_t total_size;  /* bytes the segment says it has */
    uint64_t mapped_size; /* bytes of the file as mapped */
    uint32_t header_crc;
    uint64_t created_ns; /* CLOCK_MONOTONIC at creation */
    int64_t created_age_ms;
};

/* The maintenance lease. */
struct inspect_lease {
    uint64_t word;         /* as stored (for display only: its encoding is the layer's) */
    bool recorded;         /* a holder is recorded (then holder, priority, expires_in_ms) */
    uint32_t holder;       /* its registry index */
    bool holder_valid;     /* holder < max_procs */
    int priority;          /* 1: a watchdog; 0: a consumer maintaining cooperatively */
    int64_t expires_in_ms; /* negative: expired that long ago */
    int32_t pid;           /* the holder's pid, 0 if its entry is free */
    bool held;             /* not expired, holder ACTIVE and alive */
};

/* One non-free registry entry. */
struct inspect_proc {
    uint32_t index;
    int state; /* INSPECT_PROC_* (INVALID: raw_state is none of them) */
    unsigned raw_state;
    uint64_t gen; /* bumped by every change of the entry */
    int32_t pid;
    uint32_t role;                     /* bits: SHMQ_ROLE_CLIENT, SHMQ_ROLE_CONSUMER, others */
    uint64_t start_time;               /* /proc/PID/stat field 22 at attach */
    bool heartbeat_seen;               /* false: never beat (then no age) */
    int64_t heartbeat_age_ms;          /* negative when the stored time is after the snapshot's */
    bool heartbeat_stale;              /* older than heartbeat_timeout_ms */
    int liveness;                      /* INSPECT_ALIVE, ... */
    bool alive;                        /* liveness == INSPECT_ALIVE */
    bool sleeping;                     /* blocked in a receive, counted as a waiter */
    uint32_t inflight;                 /* INFLIGHT slots (and group cells) it owns */
    char name[SHMQ_CONSUMER_NAME_MAX]; /* NUL-terminated (untrusted bytes) */
    uint64_t counters[INSPECT_COUNTERS];
    uint64_t reclaimed_from; /* messages maintenance took back from it (taken_back) */
    uint32_t group;          /* the consumer group it receives in (0: "default"); one
                              * >= max_groups is noted and counted in no group */
    bool group_gone;         /* a consumer whose group was deleted (the index may hold
                              * another group now): counted in none */
};

/* A consumer group's entry (consumer groups: README "Fan-out"). */
enum inspect_group_state {
    INSPECT_GROUP_CREATING, /* being made (or its maker died: maintenance finishes it) */
    INSPECT_GROUP_ACTIVE,
    INSPECT_GROUP_DELETING, /* being deleted: it receives nothing more */
    INSPECT_GROUP_INVALID   /* a state no code writes: an inconsistency */
};
const char *inspect_group_state_name(int s);        /* "CREATING", "ACTIVE", "DELETING", "INVALID" */
const char *inspect_group_policy_name(uint32_t p);  /* "block", "overrun", "unknown" */

/* One consumer group: its entry, and its messages counted as shmq_group_stats() counts them. */
struct inspect_group {
    uint32_t index; /* 0 .. max_groups-1; 0 is "default" */
    int state;      /* INSPECT_GROUP_* */
    char name[SHMQ_GROUP_NAME_MAX + 1]; /* NUL-terminated (untrusted bytes) */
    uint32_t policy;                    /* SHMQ_GROUP_BLOCK or _OVERRUN (else "unknown") */
    uint32_t bound;                     /* OVERRUN: the messages it may hold */
    uint64_t first_id;                  /* the queue's next id when it was made */
    uint32_t ready, inflight, delayed, dead; /* its messages by state */
    uint64_t held;                      /* the sum of those four */
    uint64_t lag;          /* ids published since the oldest message it has not finished */
    int64_t oldest_age_ms; /* since publish, of that message; -1 if none */
    uint64_t overrun;      /* messages the OVERRUN policy dropped from it */
    uint32_t consumers;    /* ACTIVE consumer entries in it */
    uint64_t delivered, acked, nacked; /* its consumers' counters: the attached ones' and those
                                        * of the ones released since it was made */
};

/* The log as the segment sees it (durability other than none). */
struct inspect_log_position {
    bool enabled;
    char dir[SHMQ_LOG_DIR_MAX + 56]; /* the queue's own log directory */
    uint32_t file_size;              /* bytes per log file */
    uint64_t base_pos;               /* position of this segment's first record */
    uint64_t write_pos;              /* the next position to reserve */
    uint64_t bytes;                  /* write_pos - base_pos */
    uint64_t current_seq;            /* the file write_pos falls in */
    uint64_t oldest_seq;             /* files below it were deleted */
    uint64_t flushes;                /* fdatasync calls */
    uint64_t errors;                 /* failed log writes and flushes */
    int last_error;                  /* -errno of the last failed write, 0 if the last worked */
    bool flush_failed;               /* sticky: a flush failed (SYNC publishes return -EIO) */
};

struct inspect_snapshot {
    uint64_t taken_ns; /* CLOCK_MONOTONIC when it was taken: every age is relative to it */
    struct inspect_header header;
    shmq_config_t cfg;                               /* log_dir: NULL (log.dir has the directory) */
    struct inspect_field layout[INSPECT_FIELDS_MAX]; /* strides, ring geometry, offsets */
    uint32_t n_layout;
    struct inspect_field words[INSPECT_FIELDS_MAX]; /* the header's shared words */
    uint32_t n_words;
    uint64_t next_id;      /* the last id handed out */
    uint64_t maint_passes; /* maintenance steps completed */
    struct inspect_log_position log;
    uint64_t counters[INSPECT_COUNTERS]; /* totals: released entries' plus every entry's */
    uint64_t retired[INSPECT_COUNTERS];  /* the released entries' part */
    struct inspect_lease lease;
    struct inspect_proc *procs; /* n_procs non-free registry entries, by index (malloc'd) */
    uint32_t n_procs;
    uint32_t procs_active;               /* ACTIVE entries */
    uint32_t consumers;                  /* ACTIVE entries with the consumer role */
    uint32_t procs_alive;                /* non-free entries whose process is alive */
    uint32_t slots[INSPECT_SLOT_STATES]; /* slots by state */
    uint32_t pinned; /* slots held back for a live fenced reader: FENCED, or with a linger
                      * (shmq_stats_t.pinned) */
    uint32_t recovered_holes, recovered_bad_regions; /* what the rebuild that made the
                                                      * segment read past (0: created) */
    uint64_t expired; /* messages expired since the segment was made (shmq_stats_t.expired) */
    int64_t oldest_age_ms;      /* since publish, of the oldest message ready, delayed or in flight;
                                 * -1 if there is none */
    /* The consumer groups whose entry is not free, by index ("default", index 0, first): one
     * for a queue created with max_groups 1. */
    struct inspect_group groups[SHMQ_GROUPS_MAX];
    uint32_t n_groups;
    struct inspect_notes notes; /* inconsistencies: lease, registry (then what inspect_rings()
                                 * and inspect_slots() append when given &notes) */
};

/* Read header, config, counters, lease, registry and slot counts of seg. 0, -ENOMEM, -EFAULT.
 * Free with inspect_snapshot_free() (also after an error). */
int inspect_segment_read(struct inspect_segment *seg, struct inspect_snapshot *out);
void inspect_snapshot_free(struct inspect_snapshot *s);

/* The group of index index in s (NULL: its entry is free, or index is out of range). */
const struct inspect_group *inspect_group_at(const struct inspect_snapshot *s, uint32_t index);

/* Does s hold a consumer group besides "default"? (The tools show groups then.) */
static inline bool inspect_has_groups(const struct inspect_snapshot *s) { return s->n_groups > 1; }

/* Open NAME, read a snapshot, close: the errors of both (geometry: -EBADMSG). */
int inspect_queue(const char *name, struct inspect_snapshot *out);

/* "active:PID" (a watchdog holds the lease), "cooperative:PID" (a consumer maintains),
 * "expired" (the recorded holder's lease ran out or it is gone), or "none". Returns buf. */
const char *inspect_watchdog_text(const struct inspect_snapshot *s, char *buf, size_t size);

/* One ring of slot indices. */
#define INSPECT_RINGS_MAX 8
struct inspect_ring {
    const char *name;    /* "free", "ready", "dead" */
    uint64_t head, tail; /* next tickets to dequeue / enqueue */
    int64_t threshold;
    uint64_t nonempty_cells; /* cells holding an entry */
    uint64_t cells;
    uint64_t bad_cells; /* cells naming a slot beyond the capacity */
};

/* Read every ring's cells: up to INSPECT_RINGS_MAX into out, *n of them; inconsistencies are
 * appended to notes (may be NULL). 0 or -EFAULT. Reads every cell: O(capacity). */
int inspect_rings(struct inspect_segment *seg, struct inspect_ring *out, uint32_t *n,
                  struct inspect_notes *notes);

#define INSPECT_PREVIEW_BYTES 32u

/* One slot in detail. An absent value (has_* false) does not apply to the slot's state or was
 * left by an earlier state (its generation tag does not match). */
struct inspect_slot {
    uint32_t index;
    int state; /* INSPECT_SLOT_* */
    unsigned raw_state;
    uint64_t gen;
    bool has_owner; /* owner: the registry index holding or writing it */
    uint32_t owner;
    uint64_t id;
    uint32_t attempt; /* deliveries so far */
    uint32_t len;
    bool len_valid; /* len <= max_msg_size: only then is there a preview */
    bool has_age;
    int64_t age_ms;    /* since publish */
    bool has_deadline; /* INFLIGHT: ack deadline; DELAYED: when it becomes ready */
    int64_t deadline_in_ms;
    bool has_ticket; /* the ring ticket of its last enqueue */
    uint64_t ticket;
    bool has_token; /* INFLIGHT: the delivery token an ack must carry */
    uint64_t token;
    bool has_dead_reason; /* DEAD: SHMQ_DEAD_* (or another value: unknown) */
    uint32_t dead_reason;
    bool has_linger; /* a live former owner (registry index) that may still read it */
    uint32_t linger;
    bool has_wal_seq; /* the log file that holds its latest PUBLISH record */
    uint32_t wal_seq;
    uint32_t preview_len; /* bytes copied into preview: min(len, INSPECT_PREVIEW_BYTES) */
    unsigned char preview[INSPECT_PREVIEW_BYTES];
};

/* A walk over the slot pool in batches (a queue may have millions of slots). */
struct inspect_slot_cursor {
    uint32_t next;                        /* the next slot index to read */
    uint64_t now_ns;                      /* ages are relative to it */
    uint32_t counts[INSPECT_SLOT_STATES]; /* every slot read so far, by state */
};

/* Start a walk; ages relative to now_ns (a snapshot's taken_ns; 0: now). */
void inspect_slot_cursor_init(struct inspect_slot_cursor *cur, uint64_t now_ns);

/*
 * Read the slots from cur->next on, until max non-free slots are in out (free ones are counted,
 * not listed) or the pool ends; *n gets how many were listed. Inconsistencies are appended to
 * notes (may be NULL). 0, -EINVAL (max is 0), or -EFAULT. Done when cur->next == the capacity.
 */
int inspect_slots(struct inspect_segment *seg, struct inspect_slot_cursor *cur,
                  struct inspect_slot *out, uint32_t max, uint32_t *n, struct inspect_notes *notes);

/* ------------------------------------------------------------------ the log */

enum inspect_rec_type {
    INSPECT_REC_PUBLISH,
    INSPECT_REC_ACK,
    INSPECT_REC_DEAD,
    INSPECT_REC_NACK,
    INSPECT_REC_PAD,
    INSPECT_REC_MARK,
    INSPECT_REC_CONFIG,
    INSPECT_REC_GROUP,
    INSPECT_REC_TYPES
};
const char *inspect_rec_type_name(int t); /* "publish", "ack", "dead", "nack", "pad", "mark",
                                           * "config", "group" */

/* Where a queue's log is. */
enum inspect_dir_from { INSPECT_DIR_GIVEN, INSPECT_DIR_SEGMENT, INSPECT_DIR_STATE };
enum inspect_seg_status { INSPECT_SEG_VALID, INSPECT_SEG_MISSING, INSPECT_SEG_DAMAGED };
struct inspect_log_where {
    char dir[SHMQ_LOG_DIR_MAX + 64];
    int from;             /* INSPECT_DIR_*: log_dir given; recorded in the segment; the state
                           * directory rule (where recovery looks when the segment is gone) */
    int segment;          /* INSPECT_SEG_*: the segment as found */
    bool durability_none; /* the segment says the queue keeps no log */
};

/* Find NAME's log directory: log_dir/NAME if log_dir is given, else the directory recorded in
 * a valid segment, else the state directory's entry NAME (the directory it links to, for a log
 * created elsewhere). 0, -ENAMETOOLONG, -EINVAL (log_dir relative), -ENOENT (no state
 * directory: no HOME), -EPERM (a state directory someone else could write). */
int inspect_log_locate(const char *name, const char *log_dir, struct inspect_log_where *out);

#define INSPECT_LOG_REGIONS_KEPT 16
struct inspect_log_region {
    uint64_t offset, length;
    bool zeros; /* a hole: zeros and records cut before their crc, what appends that never
                 * finished leave (walscan_unfinished()); else garbage (damage) */
};

/* One wal.NNNNNNNNNN file. */
struct inspect_log_file {
    char name[16];
    uint64_t seq; /* from the name */
    uint64_t size;
    int open_err; /* -errno of open, fstat or mmap; 0 */
    bool not_regular;
    bool faulted;               /* it shrank while it was read (SIGBUS) */
    const char *header_problem; /* NULL: a valid header */
    bool scanned;               /* the header is valid and the records were walked */
    bool seq_mismatch;          /* valid header, but its seq is not the name's */
    bool truncated;             /* shorter than its header says (records before the cut count) */
    bool readable;              /* recovery reads it: valid header, matching seq, and of the
                                 * log's complete generation */
    bool other_gen;             /* valid, but of another generation (recovery skips it) */
    uint64_t gen;               /* its generation (from a valid header) */
    uint64_t epoch, header_seq, header_file_size; /* from a valid header */
    uint32_t capacity, max_msg_size;              /* the queue's, from a valid header */
    uint64_t records;                             /* valid records, PAD included */
    uint64_t by_type[INSPECT_REC_TYPES];
    uint64_t message_bytes;         /* of the PUBLISH records */
    uint64_t keyed;                 /* PUBLISH records with a dedup key */
    uint64_t delayed;               /* PUBLISH records with a due time (delayed publishes) */
    uint64_t malformed;             /* PUBLISH records whose body does not parse (recovery skips) */
    uint64_t first_malformed;       /* offset of the first */
    uint64_t n_ids, min_id, max_id; /* of PUBLISH, ACK, DEAD and NACK records */
    uint64_t used_bytes;            /* end of the last valid record */
    uint64_t bad_regions;           /* runs of invalid bytes, not all zero, followed by a valid
                                     * record (damage) */
    uint64_t holes, hole_bytes;     /* runs of zeros (and records cut before their crc) followed
                                     * by a valid record: a failed or killed append, or lost
                                     * records (the segment's messages tell: verify) */
    uint64_t bad_bytes;             /* in those runs, the holes and a torn tail */
    uint64_t torn_offset;           /* where a torn tail starts; 0: none */
    uint64_t tail_zeros;            /* zeros after the last record of a file older than the
                                     * newest written: such a file is full to its end (a
                                     * crossing is padded) unless an append failed or its
                                     * writer died there, or records were lost; 0: none */
    struct inspect_log_region regions[INSPECT_LOG_REGIONS_KEPT]; /* the first bad regions and
                                                                  * holes, in file order */
    uint64_t n_regions;
};

/* A consumer group the log's GROUP records name (index >= 1: "default" is made with the queue),
 * as its latest record left it. */
struct inspect_log_group {
    uint32_t index;
    char name[SHMQ_GROUP_NAME_MAX + 1]; /* NUL-terminated (untrusted bytes) */
    uint32_t policy, bound;
    uint64_t first_id;
    bool deleted;  /* its latest record is a delete */
    bool restored; /* a rebuild makes it: its latest record a create, and no later create took
                    * its name (then it was being deleted when the log stopped) */
};

/* What shmq_recover() would bring back (recovery's rule: an id's latest PUBLISH, ACK or DEAD
 * record decides; NACK raises its attempts). The message counts are the group "default"'s
 * view: with consumer groups, a message another group still holds is restored for it too, which
 * these counts do not show (docs/DESIGN.md, "The log with groups"); groups[] are the groups. */
struct inspect_log_recovery {
    uint64_t files_read, files_skipped;
    uint64_t live; /* ids whose latest record is a PUBLISH */
    uint64_t first_live_id, last_live_id;
    uint64_t live_with_attempts;
    uint64_t live_delayed;     /* of the live: restored DELAYED (a due time still ahead, from a
                                * delayed PUBLISH or the latest NACK since it) */
    uint64_t next_due_unix_ms; /* the earliest of their due times (unix ms); 0: none */
    uint32_t live_max_len; /* the longest live message */
    uint64_t resolved;     /* published, then acked */
    uint64_t dead_letters; /* published, then dead-lettered: restored as dead letters */
    bool have_head;        /* the log's head file was read: */
    uint64_t gen, complete_gen; /* its live and complete generations (recovery reads the
                                 * complete one's files only) */
    uint64_t orphans;      /* resolved, their PUBLISH in a file already deleted */
    uint64_t highest_id;   /* ids go on after it */
    bool have_capacity;    /* a readable file exists: capacity is the newest one's */
    uint32_t capacity;
    struct inspect_log_group groups[SHMQ_GROUPS_MAX]; /* by index, those with a GROUP record */
    uint32_t n_groups;
    const char *outcome; /* "restores the live messages", "fails: ...", "refused while
                          * the segment exists" */
};

struct inspect_log {
    struct inspect_log_file *files; /* n_files, by seq */
    size_t n_files;
    uint64_t records, by_type[INSPECT_REC_TYPES], bad_regions, holes, torn_tails; /* all files */
    bool any_written;          /* some readable file holds records or a torn tail */
    uint64_t last_written_seq; /* the newest such file */
    struct inspect_log_recovery recovery;
    struct inspect_notes problems; /* what makes the log damaged */
    struct inspect_notes warnings; /* allowed: a torn tail in the newest file written, holes,
                                    * files of another generation */
    bool ok;                       /* no problems */
    /* For the cross-check: each id with a PUBLISH recovery reads (a checkpoint copy only once
     * closed), ascending, with the newest log file holding one. */
    struct inspect_published *published;
    size_t n_published;
    /* The cross-check with the segment (inspect_log_check() with a name): */
    bool cross_checked;      /* the segment's messages were checked against the log */
    uint64_t kept_checked;   /* messages the segment held all through the read */
    uint64_t lost_publishes; /* of those, ones whose PUBLISH the log lost (problems) */
    uint64_t unexplained;    /* holes and tail zeros the segment could not vouch for */
};
struct inspect_published {
    uint64_t id;
    uint64_t seq; /* the newest file with a PUBLISH of it that recovery reads */
};

/* How a log is judged. */
struct inspect_log_opts {
    bool segment_exists; /* the queue's segment is valid (recovery would refuse) */
    /* The queue's name: cross-check the messages its segment keeps (READY, INFLIGHT, DELAYED,
     * DEAD: what a rebuild must restore) against the log: each must have a PUBLISH (or a
     * closed checkpoint copy) in a file >= its slot's wal_seq, else "lost publish of id N", a
     * problem. Slots are read before the log and again after; one that changed meanwhile
     * (acked, moved on) proves nothing and is left out. When the check runs and finds nothing,
     * the holes are explained (appends that never finished) and allowed even with strict.
     * NULL, or no segment, or a segment whose log is another directory: no check, and a hole
     * is "unexplained" (a failed or killed append, or lost data). */
    const char *name;
    bool strict; /* an unexplained hole (or tail zeros) is a problem, not a warning */
};

/* Read every log file of dir (read-only, no lock) and judge the log as o says. 0, -ENOMEM,
 * -errno of opening dir. */
int inspect_log_check(const char *dir, const struct inspect_log_opts *o, struct inspect_log **out);
/* inspect_log_check() without a cross-check, not strict. */
int inspect_log_read(const char *dir, bool segment_exists, struct inspect_log **out);
void inspect_log_free(struct inspect_log *log);

#endif
