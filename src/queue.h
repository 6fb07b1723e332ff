/*
 * queue.h - the process-local handles behind shmq_t and shmq_consumer_t.
 */
#ifndef SHMQ_QUEUE_H
#define SHMQ_QUEUE_H

#include <pthread.h>
#include <stdatomic.h>

#include "loghead.h"
#include "segment.h"
#include "wal.h"

struct shmq {
    struct segment seg;
    uint32_t self;             /* our registry entry (role client: producer reservations) */
    uint64_t self_word;        /* its ACTIVE word: changes if we are fenced */
    _Atomic int consumers;     /* consumers open on this handle */
    char name[SHMQ_NAME_MAX + 1];
    struct wal *wal;           /* the queue's log; NULL with durability NONE */
    const _Atomic uint64_t *gen_word; /* the log's live generation (wal_gen_word()); NULL: none */
    uint64_t gen;                     /* our segment's generation */
    _Atomic uint32_t cursor;          /* the next slot our claims look at (slot_claim) */
    /* Maintenance bookkeeping (maintain.c), allocated on first use: what each slot looked
     * like when it was first suspected of being an orphan, and when. */
    pthread_mutex_t maint_lock;
    uint64_t *suspect_word, *suspect_ns;
};

struct shmq_consumer {
    shmq_t *q;
    uint32_t self;            /* registry entry of this consumer */
    uint64_t self_word;       /* its ACTIVE word */
    struct proc_entry *entry; /* segment_proc(self), found once at open (the fast path's) */
    uint64_t rng;             /* xorshift state for backoff jitter */
    pthread_t hb_thread;
    _Atomic int hb_stop;
    int hb_running;
    uint32_t hb_interval_ms;  /* the heartbeat thread's period; 0: a third of the timeout */
    uint32_t deliveries;      /* every 1024th checks whether maintenance is unwatched */
    uint32_t lag_pad_ms;      /* the coarse clock's lag in ms, rounded up (added to deadlines) */
    uint64_t next_coop_ns;    /* earliest time for the next such check */
    uint32_t group;           /* the consumer group it receives in (0: "default") */
    uint64_t group_word;      /* that group's entry word when it opened: changed = deleted */
};

/* The registry entry of a handle (always in range: we attached it). */
static inline struct proc_entry *q_self(const shmq_t *q)
{
    return segment_proc(&q->seg, q->self);
}

/* Add 1 to counter cnt of registry entry e, which threads of this process may share (a queue
 * handle's entry): an atomic add, relaxed (a tally, ordered against nothing). */
static inline void count(struct proc_entry *e, enum counter cnt)
{
    atomic_fetch_add_explicit(&e->counters[cnt], 1, memory_order_relaxed);
}

/* The same for an entry only one thread writes (a consumer's): a plain load and store, no
 * locked instruction; readers (stats) see some recent value. */
static inline void count_own(struct proc_entry *e, enum counter cnt)
{
    uint64_t v = atomic_load_explicit(&e->counters[cnt], memory_order_relaxed);
    atomic_store_explicit(&e->counters[cnt], v + 1, memory_order_relaxed);
}

/* ms since the segment was created at now_ns (CLOCK_MONOTONIC ns, exact or coarse): the unit
 * of slot deadlines. The fast path reads the clock once per call and converts here; the divisor
 * is a constant, so the compiler makes it a multiplication and a shift (no divide). */
static inline uint64_t queue_ms_at(const shmq_t *q, uint64_t now_ns)
{
    uint64_t created = q->seg.layout.created_ns;
    return now_ns > created ? (now_ns - created) / 1000000ull : 0;
}

/* The same, reading the clock: queue_now_ms() the coarse one (up to a tick early),
 * queue_now_ms_exact() the exact one. */
uint64_t queue_now_ms(const shmq_t *q);
uint64_t queue_now_ms_exact(const shmq_t *q);

/* The wall-clock time (CLOCK_REALTIME, unix ms) of due_ms in the queue's clock (never before
 * now): what the log records of a due time, so that a rebuild after a reboot knows what is
 * left of a delay (recover.c). */
uint64_t queue_unix_ms(const shmq_t *q, uint64_t due_ms);

/* Log a record for message id (0 without a log): the append's error (-EIDRM: the queue was
 * rebuilt, wal.h). The caller decides whether the operation reports it. type: a wal_type, or
 * wal_type_of(WAL_ACK, g) for group g's. In line: an ack without a log pays one test. */
static inline int queue_log(shmq_t *q, unsigned type, uint64_t id, uint32_t attempt)
{
    return q->wal ? wal_append_bare(q->wal, type, id, attempt, NULL) : 0;
}

/* A DEAD record of group g (0: the slot's own) with its reason (SHMQ_DEAD_*); a NACK record of
 * group g with the due time of a delayed one (due_ms in the queue's clock, 0: none), logged as
 * wall-clock unix ms. */
int queue_log_dead(shmq_t *q, uint32_t g, uint64_t id, uint32_t attempt, uint32_t reason);
int queue_log_nack(shmq_t *q, uint32_t g, uint64_t id, uint32_t attempt, uint64_t due_ms);

/* A cooperative maintenance pass (shmq_maintain_if_unwatched: inside a consumer's receive, or a
 * caller's loop): shmq_maintain() but for the log's pre-touch and prefault of the files it
 * prepares, which would stall that call for tens of ms a file (wal_maintain, light). */
int queue_maintain_light(shmq_t *q);
/* A new PUBLISH record (flags WAL_PUB_CHECKPOINT or 0, no key, times t) of the message in slot
 * sl: id, len payload bytes and its header block: a checkpoint's copy, a redrive. The caller
 * holds the slot or re-checks its word after (a block length from shm is bounded here). */
int queue_log_slot(shmq_t *q, struct slot *sl, uint64_t id, unsigned flags,
                   const struct wal_times *t, uint32_t len, uint32_t *seq);

/* Is the queue's log still in our segment's generation (true without a log)? One relaxed load
 * (a E1-like check: it only makes a fenced process notice early). */
static inline bool queue_gen_live(const shmq_t *q)
{
    if (!q->gen_word)
        return true;
    uint64_t g = atomic_load_explicit(q->gen_word, memory_order_relaxed);
    return g == q->gen || g == LOG_GEN_DELETED; /* deleted: the handle works on, unlogged */
}

/* The same with a seq_cst load (a plain load on x86): E5, after a seq_cst claim (consume.c). */
static inline bool queue_gen_live_sc(const shmq_t *q)
{
    if (!q->gen_word)
        return true;
    uint64_t g = atomic_load_explicit(q->gen_word, memory_order_seq_cst);
    return g == q->gen || g == LOG_GEN_DELETED; /* deleted: the handle works on, unlogged */
}

#endif
