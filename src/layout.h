/*
 * layout.h - the bytes of a shmq segment: header, registry, slots, rings.
 *
 * docs/FORMAT.md draws this layout; keep the two in step. Every region starts on a 64-byte
 * boundary. Nothing in the segment is a pointer: regions are found by offsets that the opener
 * recomputes from the config and compares with the stored ones (layout_compute()), so a value in
 * shm is never trusted as an offset. Indices read from shm go through segment_slot() and segment_proc()
 * (segment.h), which range-check them.
 */
#ifndef SHMQ_LAYOUT_H
#define SHMQ_LAYOUT_H

#include <stdatomic.h>
#include <stdint.h>

#include "format.h"
#include "shmq/shmq.h"

/* The part of the header written once at create time and covered by header_crc. */
struct seg_layout {
    uint64_t magic;          /* SHMQ_MAGIC, stored last at create time (release) */
    uint32_t version;        /* SHMQ_FORMAT_VERSION */
    uint32_t header_size;    /* sizeof(struct seg_header) */
    uint64_t total_size;     /* bytes of the segment */
    uint32_t capacity, max_msg_size, max_procs, heartbeat_timeout_ms;
    uint32_t ack_deadline_ms, max_attempts, backoff_base_ms, backoff_cap_ms;
    double backoff_multiplier;
    uint32_t mode;
    uint32_t slot_stride;    /* bytes per slot: slot header + payload (+ header block), multiple
                              * of 64 */
    uint32_t ring_order;     /* every ring has 2^ring_order cells */
    uint32_t dedup_window_count;
    uint64_t registry_off, slots_off, free_ring_off, ready_ring_off, dead_ring_off;
    uint64_t ring_size;      /* bytes of one ring (header + cells) */
    uint64_t dedup_off;      /* the dedup window's buckets (dedup.c) */
    uint32_t dedup_buckets;  /* a power of two, or 0: no window */
    uint32_t dedup_window_ms;
    uint64_t created_ns;     /* CLOCK_MONOTONIC at create time */
    uint32_t durability;     /* SHMQ_DURABILITY_* */
    uint32_t wal_file_size;  /* bytes per log file */
    uint64_t wal_base_pos;   /* log position of this segment's first record (wal.c) */
    uint64_t log_retention_bytes; /* resolved history kept behind the write position */
    uint64_t log_gen;        /* the log generation this segment belongs to (loghead.h); 0 without a log */
    uint32_t default_ttl_ms; /* a message's time to live (0: none): expire.c */
    uint32_t expire_policy;  /* SHMQ_EXPIRE_* */
    char log_dir[SHMQ_LOG_DIR_MAX + 48]; /* the queue's own log directory, NUL-terminated */
    uint32_t max_groups;     /* consumer groups it can hold (1..SHMQ_GROUPS_MAX): groups.h */
    uint32_t reserved2;
    uint32_t max_header_bytes; /* room for a message's header block (hdrblock.h); 0: none */
    uint32_t max_headers;      /* headers per message; 0 without max_header_bytes */
    uint32_t header_crc;     /* CRC32C of this struct up to (not including) this field */
    uint32_t reserved1;
};

/* Mutable, shared words of the header, each on its own cache line where contention demands. */
struct seg_header {
    struct seg_layout layout;
    _Alignas(CACHE_LINE) _Atomic uint64_t next_id;       /* last id handed out */
    /* Bit g: group g is ACTIVE (receives new publishes; groups.c). On next_id's line: a publish
     * reads it right after its FAA there, no extra miss. */
    _Atomic uint64_t groups_mask;
    /* pid of the process creating or deleting a group now (groups.c), 0 if none: serializes
     * those (rare) calls; taken over from a dead holder. Publish and receive never take it. */
    _Atomic uint32_t groups_lock;
    _Alignas(CACHE_LINE) _Atomic uint32_t ready_futex;   /* bumped when a message is ready */
    _Atomic uint32_t ready_waiters;                      /* consumers asleep on ready_futex */
    _Alignas(CACHE_LINE) _Atomic uint32_t free_futex;    /* bumped when a slot is freed */
    _Atomic uint32_t free_waiters;                       /* producers asleep on free_futex */
    _Alignas(CACHE_LINE) _Atomic uint64_t lease_word;    /* maintenance lease (lease.c) */
    _Atomic uint64_t maint_passes;                       /* completed maintenance steps */
    _Atomic uint64_t moves;  /* copy-outs begun (maintain.c, M1/M2): retention skips on a change */
    /* Group commit's flush lock (wal.c, GC5-GC8): bits 0-30 the thread id inside a round's
     * fdatasync calls (0 if none), bit 31 "its last fdatasync returned and is recorded", bits
     * 32-63 a straggler (a holder taken over while stopped before it could say so). On this cold
     * line: written twice per fdatasync of a SYNC round. */
    _Atomic uint64_t wal_sync_flusher;
    /* Log position below which a record may have been covered by an fdatasync whose outcome is
     * unknown (its leader was taken over while stopped, or died, inside its flush: GC7). */
    _Atomic uint64_t wal_sync_unknown;
    /* What the rebuild that made this segment read past (0: made by create): its holes, and its
     * other corrupt regions (bad regions, unreadable files). Plain: written once by recovery's
     * populate, published by S1; shmq_stats() shows them (shmq_open() discards the report). */
    uint32_t recovered_holes;
    uint32_t recovered_bad_regions;
    /* Messages expired (expire.c): one relaxed add per expiry, by whoever expired it (a tally;
     * rare, so one shared word rather than a registry counter); a rebuild stores its count. */
    _Atomic uint64_t expired;
    /* Counters of registry entries that were released, folded in so totals survive them. */
    _Alignas(CACHE_LINE) _Atomic uint64_t retired[8];
    /* The write-ahead log (wal.c): the next byte position to reserve; group commit state. */
    _Alignas(CACHE_LINE) _Atomic uint64_t wal_pos;
    _Alignas(CACHE_LINE) _Atomic uint64_t wal_sync_req;  /* sync requests made */
    _Atomic uint64_t wal_sync_done;                      /* requests covered by a flush */
    _Atomic uint32_t wal_sync_leader;                    /* pid flushing now, 0 if none */
    _Atomic uint32_t wal_sync_futex;                     /* bumped after each flush */
    _Atomic uint32_t wal_sync_waiters;
    _Atomic uint32_t wal_health;                         /* WAL_HEALTH_* (wal.h): last error, sticky flush failure */
    _Atomic uint64_t wal_sync_low;                       /* lowest file a waiter needs */
    _Atomic uint64_t wal_flushes;                        /* fdatasync calls made */
    _Atomic uint64_t wal_oldest_seq;                     /* files below this were deleted */
    _Atomic uint64_t wal_errors;                         /* log writes and flushes that failed */
    /* The settings shmq_set_config() changes (settings.h has the protocol, K1-K4): the values
     * in use, one word each, initialised from the layout (whose fields keep the values the
     * segment was made with). Own line, written only by a change: read-mostly for the fast
     * path's ack deadline. */
    _Alignas(CACHE_LINE) struct seg_settings {
        _Atomic uint32_t heartbeat_timeout_ms, ack_deadline_ms, max_attempts;
        _Atomic uint32_t backoff_base_ms, backoff_cap_ms;
        _Atomic uint32_t default_ttl_ms; /* a new message's time to live (0: none) */
        _Atomic uint32_t wal_seq;        /* log file of the latest CONFIG record + 1 (a lower
                                          * bound, as slot.wal_seq); 0: none was logged */
        _Atomic uint32_t expire_policy;  /* SHMQ_EXPIRE_*: what an expiry does from now on */
        _Atomic uint64_t backoff_multiplier; /* the double's bits */
        _Atomic uint64_t heartbeat_grace;    /* after a lowered heartbeat timeout: the previous
                                              * one (ms) << 32 | until when it still counts (s of
                                              * the queue's clock); 0: none */
        _Atomic uint64_t version;            /* changes made to this segment's settings */
        _Atomic uint64_t log_retention_bytes; /* acked history maintenance keeps (0: none) */
    } settings;
};

/* Counter indices, per registry entry and in seg_header.retired. */
enum counter {
    CNT_PUBLISHED, CNT_DELIVERED, CNT_ACKED, CNT_NACKED,
    CNT_REDELIVERED, CNT_DEAD_LETTERED, CNT_RECLAIMED, CNT_DEDUP_HITS, CNT__COUNT
};

/* Registry entry states (low 4 bits of proc_entry.word; the rest is a generation). */
enum proc_state { PROC_FREE = 0, PROC_CLAIMED = 1, PROC_ACTIVE = 2, PROC_FENCED = 3 };
enum proc_role { ROLE_CLIENT = 1, ROLE_CONSUMER = 2, ROLE_MAINTAINER = 4 };

struct proc_entry {
    _Atomic uint64_t word;        /* proc_state | gen << 4; every change bumps gen */
    int32_t pid;
    uint32_t role;
    uint64_t start_time;          /* /proc/PID/stat field 22, to detect pid reuse */
    _Atomic uint64_t heartbeat_ns;/* CLOCK_MONOTONIC of the last sign of life */
    _Atomic uint32_t sleeping;    /* sleepers counted: ready low 16 bits, free high (wait.h) */
    uint32_t pidns;               /* pid namespace (inode of /proc/self/ns/pid) at attach */
    char name[SHMQ_CONSUMER_NAME_MAX];
    /* In-flight messages maintenance took back from this entry's consumer (ack deadline passed,
     * or fenced as dead or hung): written by maintainers (an atomic add, relaxed: a tally),
     * read by shmq_consumer_stats(); in the first line's spare bytes, written rarely. Not
     * folded into the header when the entry is released (no queue total needs it). */
    _Atomic uint64_t taken_back;
    /* The holder's progress (delivered + acked + nacked counters) when a maintenance pass last
     * saw it change; that pass refreshed heartbeat_ns for it (maintain.c, note_progress: acks
     * and nacks read no clock). Written by maintainers (relaxed), zeroed at attach. */
    _Atomic uint64_t progress_seen;
    /* The consumer group whose ready_waiters its ready sleepers are counted in (0: the
     * header's), written at attach before G1, so the maintainer that uncounts a dead holder's
     * sleepers (wait_uncount_dead) takes them from that group's count, not group 0's. */
    uint32_t group;
    /* A consumer's group entry word (ACTIVE) when it joined, written at attach before G1; 0 for
     * an entry that is no consumer. Its counters are that group's (stats.h, group_same()) only
     * while the entry's word is still this one or its DELETING successor: a group deleted and
     * made again at the same index is another group. */
    uint64_t group_word;
    _Alignas(CACHE_LINE) _Atomic uint64_t counters[8]; /* enum counter; written by the owner */
};

/* Slot states (low 4 bits of slot.state). */
enum slot_state {
    SLOT_FREE = 0,     /* in the free ring (or an orphan of it) */
    SLOT_RESERVED = 1, /* owner is writing the payload */
    SLOT_READY = 2,    /* in the ready ring (or an orphan of it) */
    SLOT_INFLIGHT = 3, /* delivered to owner, deadline in slot.deadline */
    SLOT_DELAYED = 4,  /* waits for slot.deadline, then READY */
    SLOT_DEAD = 5,     /* in the dead-letter ring */
    SLOT_FENCED = 6,   /* done with, but owner (a live, fenced process) may still read it */
    SLOT_HELD = 7,     /* slot word only: published, group 0 does not hold it, other groups do
                        * (their cells); off every ring (docs/DESIGN.md, "Consumer groups") */
};

/* Two cache lines: the first holds what every publish and receive touch, the second what only
 * dead-lettering and keyed publishes do (and room to grow). */
struct slot {
    _Atomic uint64_t state;    /* see slot.h: state | owner | gen */
    _Atomic uint64_t ticket;   /* tagged: ring ticket of the last enqueue | gen tag */
    _Atomic uint64_t deadline; /* tagged: ms since created_ns (INFLIGHT, DELAYED) | gen tag */
    uint64_t id;
    uint64_t publish_ns;
    _Atomic uint64_t expire_ns; /* CLOCK_MONOTONIC ns at which the message expires, UINT64_MAX
                                 * for never (expire.c); written with id, published by P1; read
                                 * and written relaxed through slot_expire()/slot_set_expire():
                                 * maintenance reads it before its CAS, while the slot may be
                                 * reused under it (the CAS then fails: the value is unused) */
    uint32_t len;
    uint32_t attempt;          /* deliveries so far */
    _Atomic uint32_t linger;   /* registry index + 1 of a live former owner that may still read
                                * the payload (taken back from it), 0 if none: see maintain.c */
    _Atomic uint32_t wal_seq;  /* log file holding its latest PUBLISH record, + 1; 0 if none */
    /* second line, offset 64 */
    _Alignas(CACHE_LINE) uint32_t dead_reason; /* why it went to the dead-letter ring
                                * (SHMQ_DEAD_*); meaningful in DEAD only */
    _Atomic uint32_t dedup;    /* dedup bucket + 1 of a keyed publish (a hint: dedup.c) */
    _Atomic uint64_t holders;  /* max_groups > 1: the release count, id tag << 8 | groups >= 1
                                * not done yet (gcell.h, docs/DESIGN.md "Consumer groups") */
    uint8_t reserved[48];
    /* payload follows at offset 128 */
};

/* A slot's expire_ns. Relaxed: the state word orders it (P1 publishes it; C1 or a
 * maintainer's CAS from the word it read validates a read of it); atomic only because a
 * maintainer may read it while a publisher reusing the slot writes it, and its CAS then fails. */
static inline uint64_t slot_expire(const struct slot *sl)
{
    return atomic_load_explicit(&sl->expire_ns, memory_order_relaxed);
}

static inline void slot_set_expire(struct slot *sl, uint64_t expire_ns)
{
    atomic_store_explicit(&sl->expire_ns, expire_ns, memory_order_relaxed);
}

#define SLOT_HEADER_SIZE 128u

_Static_assert(sizeof(struct seg_layout) % 8 == 0, "layout is 8-byte aligned");
_Static_assert(sizeof(struct slot) == SLOT_HEADER_SIZE, "slot header is two cache lines");
_Static_assert(sizeof(struct proc_entry) % CACHE_LINE == 0, "registry entries are aligned");
_Static_assert(sizeof(struct proc_entry) == 192, "registry entry: docs/FORMAT.md section 4");
_Static_assert(sizeof(struct seg_header) % CACHE_LINE == 0, "header is aligned");

/* One consumer group (groups.c), 256 bytes; group_entry(seg, g) finds entry g. */
enum group_state { GROUP_FREE = 0, GROUP_CREATING = 1, GROUP_ACTIVE = 2, GROUP_DELETING = 3 };
struct group_entry {
    _Atomic uint64_t word;   /* group_state | gen << 4 | claimer pid << 40; every change bumps gen */
    char name[SHMQ_GROUP_NAME_MAX + 1]; /* NUL-padded; written while CREATING */
    uint32_t policy, bound;  /* SHMQ_GROUP_*; written while CREATING */
    uint64_t first_id;       /* next_id + 1 when it was created */
    _Atomic uint64_t overrun;/* messages the OVERRUN policy dropped (maintenance, relaxed add) */
    _Alignas(CACHE_LINE) _Atomic uint64_t held; /* messages held at the last pass (maintenance) */
    uint64_t since_pos;      /* the log position its messages count from (rule R-G, wal.h);
                              * written while FREE, under groups_lock */
    _Atomic uint32_t wal_seq;/* file of its latest GROUP record + 1 (0: none): the retention pin */
    _Alignas(CACHE_LINE) _Atomic uint32_t ready_futex; /* groups 1..: as the header's, per group */
    _Atomic uint32_t ready_waiters;
    _Alignas(CACHE_LINE) _Atomic uint64_t retired[8]; /* released consumers' counters, folded in */
};
_Static_assert(sizeof(struct group_entry) == 256, "group entry: docs/FORMAT.md section 9");

/* Where the group regions lie: after everything else (the dedup window, or the dead ring),
 * derived from the layout alone. Groups 1..max_groups-1 have cells and rings; with max_groups 1
 * only the table (entry 0) exists and the other regions are empty. */
struct group_regions {
    uint64_t groups_off; /* struct group_entry[max_groups] */
    uint64_t fanout_off; /* uint64_t others[capacity] (max_groups > 1) */
    uint64_t cells_off;  /* struct slot headers [(max_groups-1) * capacity]: the group cells */
    uint64_t grings_off; /* per group 1..: ready ring, dead ring (ring_size each) */
    uint64_t fanring_off;/* the fan-out ring (max_groups > 1): fanring.h, FORMAT.md 9 */
    uint64_t fan_cells;  /* its cells: the power of two >= 2 * capacity (0: no ring) */
    uint64_t end;
};
void layout_group_regions(const struct seg_layout *l, struct group_regions *out);

/*
 * Compute the layout for cfg into *out (offsets, strides, sizes, config copy).
 * Returns 0, or -EINVAL when cfg is outside the limits of shmq.h.
 */
int layout_compute(const shmq_config_t *cfg, struct seg_layout *out);

/* Check a layout read from shm against the one its own config implies: 0, -EPROTO, -EBADMSG. */
int layout_validate(const struct seg_layout *stored, uint64_t file_size);

/* CRC32C over the layout up to header_crc. */
uint32_t layout_crc(const struct seg_layout *l);

void layout_to_config(const struct seg_layout *l, shmq_config_t *cfg);

#endif
