/*
 * ring.h - lock-free MPMC ring of slot indices that no stopped or killed process can block.
 *
 * An SCQ-style ring (Nikolaev, DISC 2019): 2^order cells for at most 2^(order-1) entries; each
 * cell carries the cycle of the ticket it was written for, a "safe" bit and an index. The
 * algorithm, its memory-ordering argument and its crash windows are in ring.c and
 * docs/DESIGN.md ("The ring").
 */
#ifndef SHMQ_RING_H
#define SHMQ_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RING_MIN_ORDER 3u
#define RING_MAX_ORDER 26u
#define RING_INDEX_BITS 23u
#define RING_INDEX_MAX ((1u << RING_INDEX_BITS) - 2u) /* largest index a cell can hold */

/* The ring as it lies in shared memory; cells follow the header. */
struct ring_shm {
    _Alignas(64) _Atomic uint64_t head;     /* next ticket to dequeue */
    _Alignas(64) _Atomic uint64_t tail;     /* next ticket to enqueue */
    _Alignas(64) _Atomic int64_t threshold; /* dequeue attempts left before "empty" */
    _Alignas(64) _Atomic uint64_t cells[];
};

/* A process's handle on one ring: geometry from the validated config, never re-read from shm. */
struct ring {
    struct ring_shm *shm;
    uint32_t order;
    uint32_t spread;       /* order - 3: cell_pos()'s shift */
    uint64_t mask;         /* 2^order - 1 */
    int64_t threshold_max; /* 3 * 2^(order-1) - 1 */
};

/* Bytes a ring of 2^order cells occupies. */
uint64_t ring_bytes(uint32_t order);

/* Bind r to the memory at shm (no access to shm). order must lie in [RING_MIN_ORDER,
 * RING_MAX_ORDER] (the caller validates it; asserted in debug builds). */
void ring_bind(struct ring *r, void *shm, uint32_t order);

/* Make the ring empty. Single-threaded: only while creating a segment. */
void ring_init_empty(struct ring *r);

/*
 * Append idx. *ticket (if ticket is not NULL) gets the ticket at which it landed. Multi-producer
 * safe, lock-free, no syscall. The ring must hold at most 2^(order-1) entries, counting cells
 * stuck with a dead dequeuer's entry and repair's duplicates. Returns 0, or
 *   -EINVAL  idx > RING_INDEX_MAX (nothing enqueued);
 *   -ENOSPC  2^order tries met older entries still unconsumed (more entries than the ring is
 *            sized for: a broken invariant or a corrupted segment; never in correct use), or
 *            an implausible number of tries was overtaken by dequeuers (corrupted segment).
 * On error some tickets were used up; the ring stays consistent.
 */
int ring_enqueue(struct ring *r, uint32_t idx, uint64_t *ticket);

/* Take the oldest entry: 0 and *idx, *ticket (if ticket is not NULL), or -EAGAIN when empty.
 * Multi-consumer safe, lock-free, no syscall. The index is untrusted: the caller range-checks
 * it. Polling an empty ring costs four loads (threshold, head, head's cell, tail) and no store
 * (R3 in ring.c), except the one dequeue that passes tickets dead enqueuers left behind. */
int ring_dequeue(struct ring *r, uint32_t *idx, uint64_t *ticket);

/* The most entries a batch caller passes to one ring_enqueue_batch (its arrays' size). */
#define RING_BATCH_MAX 64

/* A ticket no entry landed at (ring_enqueue_batch's tickets[] for an entry it failed). */
#define RING_NO_TICKET UINT64_MAX

/*
 * Append idx[0..k) in that order with one FAA of k on tail (ring.c, "Batches"): each entry's
 * cell is tried as ring_enqueue tries its one, the threshold is reset once after the last. If a
 * cell cannot take its entry (a dequeuer was there first), the rest go one by one with
 * ring_enqueue, after the range. tickets[j] (if tickets is not NULL) gets idx[j]'s ticket, or
 * RING_NO_TICKET if it was not enqueued (ring_enqueue's -EINVAL or -ENOSPC). Returns how many
 * were enqueued (k in correct use). Multi-producer safe, lock-free, no syscall.
 */
size_t ring_enqueue_batch(struct ring *r, const uint32_t *idx, size_t k, uint64_t *tickets);

/*
 * Take up to max (at most RING_BATCH_MAX) of the oldest entries, in ticket order: their count (0: empty), idx[0..count)
 * and tickets[0..count) (if tickets is not NULL). One FAA of n on head for the n entries already
 * written from head on (read-only look first); with none written at head it is one
 * ring_dequeue, which alone reports "empty" (so a blocking try keeps its W1/W2 argument).
 * Multi-consumer safe, lock-free, no syscall. The indexes are untrusted, as ring_dequeue's.
 */
size_t ring_dequeue_batch(struct ring *r, uint32_t *idx, uint64_t *tickets, size_t max);

/* Repair of crash window (2) in ring.c: an enqueuer died between its cell CAS and resetting the
 * threshold, so dequeuers see "empty". Finds such an entry and resets the threshold: true if it
 * did. For maintenance (reads up to 2^order cells); safe at any time. */
bool ring_unstrand(struct ring *r);

/* Head and tail tickets as they are now (for repair and the dump tool). */
uint64_t ring_head(const struct ring *r);
uint64_t ring_tail(const struct ring *r);

/* True if the cell of ticket still holds idx for that ticket's cycle (not yet consumed).
 * False for idx > RING_INDEX_MAX. Read-only, wait-free; safe at any time. */
bool ring_holds(const struct ring *r, uint64_t ticket, uint32_t idx);

/* Empty the cell of ticket if it still holds idx for that ticket's cycle: true if this call
 * emptied it (of this call and the ticket's late dequeuer, exactly one gets the entry). False
 * for idx > RING_INDEX_MAX. Used by repair after a dequeuer took the ticket and died; if head
 * has not reached the ticket yet, the entry is simply removed and its dequeuer skips the cell.
 * Safe concurrently with everything; lock-free. */
bool ring_clear(struct ring *r, uint64_t ticket, uint32_t idx);

/* Decode the cell at memory position pos (0 .. 2^order-1; not a ticket: tickets are spread
 * over cache lines) for the dump tool. */
struct ring_cell {
    uint64_t cycle;
    bool safe, empty;
    uint32_t idx;
};
struct ring_cell ring_cell_at(const struct ring *r, uint64_t pos);

/* Wrap-safe comparison of two tickets: a < b. */
static inline bool ticket_before(uint64_t a, uint64_t b) { return (int64_t)(a - b) < 0; }

#endif
