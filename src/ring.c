/*
 * ring.c - the SCQ-style ring of slot indices (Nikolaev, "A Scalable, Portable, and
 * Memory-Efficient Lock-Free FIFO Queue", DISC 2019), adapted to processes that may die.
 *
 * State. head and tail are 64-bit tickets that only grow (fetch-and-add). Ticket t maps to cell
 * map(t mod 2^order) and has cycle t >> order. A cell is one 64-bit word:
 *
 *     63                         24  23   22                0
 *     +----------------------------+----+-------------------+
 *     | cycle (low 40 bits)        |safe| index (BOT=all 1s)|
 *     +----------------------------+----+-------------------+
 *
 * Enqueue(idx): take t = FAA(tail). If the cell's cycle is older than t's, the cell is empty,
 * and it is safe (or no dequeuer has reached t yet: head <= t), CAS it to {cycle(t), safe, idx};
 * else take another ticket. Dequeue: if threshold < 0 the ring is empty. Take h = FAA(head).
 * If the cell holds an entry of h's cycle, CAS it to {cycle, safe, BOT} and return the index.
 * If the cell is older: an empty one is moved to h's cycle (so a late enqueuer of ticket h
 * fails its CAS and moves on), an occupied one is marked unsafe (its dequeuer is late; no
 * enqueuer of a later cycle may use the cell once it is emptied unless head <= its ticket).
 * Then if tail <= h + 1 the ring is empty (tail is pulled up to head: catchup); the threshold
 * (3n-1, reset by every enqueue) bounds the failed dequeues of a livelocked empty ring.
 * The ring holds at most n = 2^(order-1) entries (stuck cells and repair's duplicates count);
 * that bound is the caller's invariant, and what lets an enqueuer always find a cell.
 *
 * Why nobody waits for anybody. No step waits for another process's step: an enqueuer killed
 * after its FAA leaves a ticket whose cell the dequeuer of that ticket moves on from; a dequeuer
 * stopped after its FAA leaves its cell occupied, and later dequeuers mark it unsafe and move
 * on. The one difference from the paper: a dequeuer consumes with a CAS instead of an atomic
 * OR, so a dequeuer that wakes after repair emptied its cell (ring_clear()) fails harmlessly
 * instead of erasing a newer entry. A killed dequeuer's entry is thus never lost for good:
 * the slot it names stays READY or FREE with its ticket recorded, and repair (maintain.c)
 * finds it (ring_holds()/ring_clear()) and enqueues it again. ring_clear() is the dead
 * dequeuer's consume done by someone else: it keeps the cell's cycle and safe bit, exactly as
 * the paper's OR would, so the safe-bit argument is unchanged.
 *
 * The read-only empty poll (R3). Before taking a ticket a dequeuer reads head (h), then the
 * cell of ticket h, then tail (t); if the cell holds no entry of h's cycle and t <= h it reports
 * empty having written nothing. Without it every poll of an empty ring took a ticket (FAA head),
 * moved a cell to its cycle (CAS), pulled tail up (catchup CAS) and decremented the threshold:
 * four locked writes to lines the producer's next enqueue needs back, for the 3n-1 polls after
 * each enqueue reset the threshold. Why "empty" is right (linearized at the load of tail):
 *  - an entry lives only at the ticket its enqueuer drew (FAA tail, before its cell CAS R1),
 *    and only the dequeuer that draws the same ticket takes it (or repair, for a dead one:
 *    ring_clear()); an enqueuer whose ticket's dequeuer came first fails its CAS (the cell was
 *    moved to that cycle, or marked unsafe with head past it) and draws again;
 *  - head and tail only grow, and head was read first: at the load of tail, head >= h >= t;
 *  - so every entry whose R1 precedes that load sits at a ticket < t <= head: a ticket some
 *    dequeuer already drew, whose operation is under way (it took the ticket before our load)
 *    and takes that entry; linearize those dequeues first and the ring holds nothing for us.
 *    An enqueue whose R1 follows the load linearizes after us. This is the same argument as the
 *    paper's own "tail <= h + 1: empty" after a failed ticket, with the ticket not taken.
 * The cell is read only so that a poll that finds an entry (the common case under load) does not
 * also pull the enqueuers' tail line; it decides nothing on its own (an entry may sit past a
 * ticket an enqueuer skipped), so a cell without an entry always falls back to tail. A ring whose
 * tickets run ahead of its entries (dead enqueuers' tickets, skipped cells: tail > head with
 * nothing to take) costs one writing dequeue, whose catchup brings tail to head; polls after it
 * are read-only again. The threshold still bounds that dequeue's rounds as in the paper.
 * Blocking (wait.c): a consumer's last try before FUTEX_WAIT follows its seq_cst increment of
 * the waiter count (W2); an enqueuer's FAA tail and R1 precede its seq_cst read of that count
 * (W1). If the enqueuer read no waiter, W1 precedes W2 in the seq_cst order, so the
 * sleeper's loads of threshold, head and tail see the reset threshold and a tail past the new
 * entry's ticket x: either head <= x < tail and the try takes a ticket (and finds the entry, or
 * another dequeuer holds x), or head > x and a dequeuer under way holds x. Either way no sleeper
 * waits on an entry nobody will take: the property the futex protocol needs, as before.
 *
 * Crash windows. (1) Enqueuer after FAA(tail), before its CAS: a skipped ticket, as above.
 * (2) Enqueuer after its CAS (R1), before resetting the threshold: its entry is in the ring but
 * dequeuers that see threshold < 0 report "empty" without looking. Repair (maintenance) looks:
 * with threshold < 0 and head < tail it scans the cells of [head, tail) for an entry of its
 * ticket's cycle and, on finding one, resets the threshold for it (ring_unstrand()). This is
 * not done by every dequeuer that finds the ring empty: reading head and tail there made a
 * producer spinning on a full queue fight the consumer's acks for their cache lines.
 * (3) Dequeuer after FAA(head), before its CAS: the entry stays in its cell until repair clears
 * it; the cell is out of use until then (it counts against the n entries). (4) A process
 * stopped for 2^39 laps or more: cycles are kept modulo 2^40, so a stuck cell's cycle may then
 * compare as newer (the cell is skipped) or, after 2^40 laps, equal (its stale index is handed
 * out once; the slot's generation CAS drops it, DESIGN.md principle 1).
 *
 * Memory ordering. head, tail, threshold and the cell CAS are seq_cst, so the paper's proof,
 * written for sequential consistency, applies unchanged; on x86-64 every one of them is a
 * locked instruction or a plain load either way. The edges that matter to callers:
 *   R1 (enqueue cell CAS, seq_cst >= release) publishes everything the enqueuer wrote before it
 *      (the slot's state word and payload); pairs with R2.
 *   R2 (dequeue cell load, acquire, and its CAS) makes the slot the index names visible to the
 *      dequeuer; pairs with R1.
 *   R3 (dequeue's read-only check: seq_cst loads of head, then tail) orders as above; its
 *      relaxed cell load is a hint only (the entry is taken after R2).
 */
#include "ring.h"

#include <assert.h>
#include <errno.h>

#define IDX_MASK ((1ull << RING_INDEX_BITS) - 1)
#define BOT IDX_MASK
#define SAFE_BIT (1ull << RING_INDEX_BITS)
#define CYCLE_SHIFT (RING_INDEX_BITS + 1)

static inline uint64_t cell_make(uint64_t cycle, bool safe, uint64_t idx)
{
    return (cycle << CYCLE_SHIFT) | (safe ? SAFE_BIT : 0) | idx;
}
static inline uint64_t cell_cycle(uint64_t c) { return c >> CYCLE_SHIFT; }
static inline bool cell_safe(uint64_t c) { return (c & SAFE_BIT) != 0; }
static inline uint64_t cell_idx(uint64_t c) { return c & IDX_MASK; }

/* Cycles are kept modulo 2^40: compare by the sign of the difference in the top 40 bits. */
static inline bool cycle_before(uint64_t a, uint64_t b)
{
    return (int64_t)((a - b) << CYCLE_SHIFT) < 0;
}
static inline bool cycle_equal(uint64_t a, uint64_t b) { return ((a - b) << CYCLE_SHIFT) == 0; }

/* Spread consecutive tickets over cache lines (8 cells of 8 bytes per line). */
static inline uint64_t cell_pos(const struct ring *r, uint64_t ticket)
{
    uint64_t pos = ticket & r->mask;
    return ((pos & 7) << r->spread) | (pos >> 3);
}

/* Does the cell of ticket t hold an entry written for t (not yet consumed)? */
static inline bool holds_entry_of(const struct ring *r, uint64_t e, uint64_t t)
{
    return cycle_equal(cell_cycle(e), t >> r->order) && cell_idx(e) != BOT;
}

uint64_t ring_bytes(uint32_t order)
{
    return sizeof(struct ring_shm) + (sizeof(uint64_t) << order);
}

void ring_bind(struct ring *r, void *shm, uint32_t order)
{
    /* cell_pos() needs order >= 3; the cell format needs cycles of >= 38 bits */
    assert(order >= RING_MIN_ORDER && order <= RING_MAX_ORDER);
    r->shm = shm;
    r->order = order;
    r->spread = order - 3;
    r->mask = (1ull << order) - 1;
    r->threshold_max = 3 * (int64_t)(1ull << (order - 1)) - 1;
}

void ring_init_empty(struct ring *r)
{
    /* Single-threaded, before the segment is visible to anybody: relaxed stores suffice; the
     * creator's release store of the magic (segment.c) publishes them. Cells start empty, safe,
     * at cycle -1 (mod 2^40), just before ticket 0's cycle. */
    for (uint64_t i = 0; i <= r->mask; i++)
        atomic_store_explicit(&r->shm->cells[i], UINT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&r->shm->head, 0, memory_order_relaxed);
    atomic_store_explicit(&r->shm->tail, 0, memory_order_relaxed);
    atomic_store_explicit(&r->shm->threshold, -1, memory_order_relaxed);
}

/* Let dequeuers look for n entries again (3n-1 failed attempts). */
static inline void reset_threshold(const struct ring *r)
{
    if (atomic_load(&r->shm->threshold) != r->threshold_max)
        atomic_store(&r->shm->threshold, r->threshold_max);
}

int ring_enqueue(struct ring *r, uint32_t idx, uint64_t *ticket)
{
    struct ring_shm *q = r->shm;
    if (idx > RING_INDEX_MAX)
        return -EINVAL; /* would spill into the safe bit and cycle, or read as BOT (empty) */
    /*
     * Only a try that meets an older, unconsumed entry hints that the ring is full: with at
     * most n entries, one lap of 2n tickets meets at most n of them, so 2n such tries take laps
     * of failures that in practice only an overfull ring (all 2n cells occupied) produces. The
     * original bound counted every try, so a live enqueuer overtaken by dequeuers (they moved
     * the cell to their cycle, or passed an unsafe cell: others made progress) could fail in
     * correct use, and its failed tries left tail far ahead of head, beyond what the threshold
     * lets dequeuers cross. Overtaken tries stay bounded, generously, against a corrupted
     * segment; in correct use they stop when the dequeuers' threshold runs out.
     */
    uint64_t full = 0, tries_max = (r->mask + 1) * 64 + 4096;
    for (uint64_t tries = 0; tries < tries_max && full <= r->mask; tries++) {
        /* seq_cst: orders against the dequeuers' FAA on head (see the file comment) */
        uint64_t t = atomic_fetch_add(&q->tail, 1);
        uint64_t cycle = t >> r->order;
        _Atomic uint64_t *cell = &q->cells[cell_pos(r, t)];
        /* acquire: a cell emptied by a dequeuer is seen with that dequeuer's writes */
        uint64_t e = atomic_load_explicit(cell, memory_order_acquire);
        for (;;) {
            if (!cycle_before(cell_cycle(e), cycle))
                break; /* the dequeuer of t (or a later one) was here first */
            if (cell_idx(e) != BOT) {
                full++; /* an older entry still waits for its (late or dead) dequeuer */
                break;
            }
            if (!cell_safe(e) && ticket_before(t, atomic_load(&q->head)))
                break; /* unsafe, and the dequeuer of t has passed: nobody would take it */
            /* R1 (seq_cst): publishes the caller's slot writes; pairs with R2 */
            if (atomic_compare_exchange_strong(cell, &e, cell_make(cycle, true, idx))) {
                /* crash window (2): a death here leaves the entry for ring_unstrand() */
                reset_threshold(r);
                if (ticket)
                    *ticket = t;
                return 0;
            }
        }
    }
    return -ENOSPC;
}

/* Pull tail up to head after dequeuers overtook it, so enqueuers skip the dead tickets. */
static void catchup(struct ring_shm *q, uint64_t tail, uint64_t head)
{
    while (!atomic_compare_exchange_weak(&q->tail, &tail, head)) {
        head = atomic_load(&q->head);
        tail = atomic_load(&q->tail);
        if (!ticket_before(tail, head))
            break;
    }
}

/*
 * threshold < 0 says "empty". It is wrong only if an enqueuer wrote its cell and stopped or
 * died before resetting the threshold (crash window 2): then its entry sits at a ticket in
 * [head, tail). Look there (read-only) and do the enqueuer's reset for it. A reset that turns
 * out needless only costs dequeuers up to 3n-1 failed attempts, as an enqueue would.
 */
bool ring_unstrand(struct ring *r)
{
    struct ring_shm *q = r->shm;
    uint64_t t = atomic_load(&q->tail), h = atomic_load(&q->head);
    if (!ticket_before(h, t))
        return false;
    uint64_t span = t - h <= r->mask ? t - h : r->mask + 1;
    for (uint64_t i = 0; i < span; i++) {
        /* relaxed: a hint only; whoever dequeues the entry synchronizes by R2 */
        uint64_t e = atomic_load_explicit(&q->cells[cell_pos(r, h + i)], memory_order_relaxed);
        if (holds_entry_of(r, e, h + i)) {
            reset_threshold(r);
            return true;
        }
    }
    return false;
}

int ring_dequeue(struct ring *r, uint32_t *idx, uint64_t *ticket)
{
    struct ring_shm *q = r->shm;
    if (atomic_load(&q->threshold) < 0) /* one load: the ring is known empty */
        return -EAGAIN;
    /* R3 (seq_cst loads, head before tail): unless head's cell already shows its entry, tail <=
     * head means every ticket an entry can sit at is drawn by a dequeuer: report empty without
     * taking a ticket, writing nothing (file comment, "The read-only empty poll"). The cell is
     * read first so that a poll that finds an entry does not pull the enqueuers' tail line. */
    uint64_t h = atomic_load(&q->head);
    _Atomic uint64_t *cell = &q->cells[cell_pos(r, h)];
    /* relaxed: a hint; the entry is taken after R2 below */
    uint64_t e = atomic_load_explicit(cell, memory_order_relaxed);
    if (!holds_entry_of(r, e, h) && !ticket_before(h, atomic_load(&q->tail)))
        return -EAGAIN;
    /* In correct use the shared threshold ends the loop within 3n rounds; a corrupted one
     * (shm is input) must not make us spin: the same bound, kept locally. */
    for (int64_t round = 0; round <= r->threshold_max; round++) {
        uint64_t mine = atomic_fetch_add(&q->head, 1);
        if (mine != h) { /* someone took the ticket we looked at: ours has another cell */
            h = mine;
            cell = &q->cells[cell_pos(r, h)];
        }
        uint64_t cycle = h >> r->order;
        /* R2 (acquire): see the slot the enqueuer published before R1 */
        e = atomic_load_explicit(cell, memory_order_acquire);
        for (;;) {
            uint64_t ec = cell_cycle(e), next;
            if (holds_entry_of(r, e, h)) {
                /* consume by CAS, not OR: a late dequeuer must not erase a newer entry */
                if (atomic_compare_exchange_strong(cell, &e, cell_make(ec, cell_safe(e), BOT))) {
                    *idx = (uint32_t)cell_idx(e);
                    if (ticket)
                        *ticket = h;
                    return 0;
                }
                continue;
            }
            if (!cycle_before(ec, cycle))
                break; /* a later cycle's cell, or our own entry cleared by repair */
            if (cell_idx(e) == BOT)
                next = cell_make(cycle, cell_safe(e), BOT); /* a late enqueuer of h must fail */
            else
                next = cell_make(ec, false, cell_idx(e)); /* its dequeuer is late: unsafe */
            if (next == e || atomic_compare_exchange_strong(cell, &e, next))
                break;
        }
        uint64_t t = atomic_load(&q->tail);
        if (!ticket_before(h + 1, t)) { /* tail <= h + 1: nothing left */
            catchup(q, t, h + 1);
            atomic_fetch_sub(&q->threshold, 1);
            return -EAGAIN;
        }
        if (atomic_fetch_sub(&q->threshold, 1) <= 0)
            return -EAGAIN;
        h++; /* a guess at our next ticket; checked after the FAA */
        cell = &q->cells[cell_pos(r, h)];
    }
    return -EAGAIN;
}

uint64_t ring_head(const struct ring *r) { return atomic_load(&r->shm->head); }

uint64_t ring_tail(const struct ring *r) { return atomic_load(&r->shm->tail); }

bool ring_holds(const struct ring *r, uint64_t ticket, uint32_t idx)
{
    if (idx > RING_INDEX_MAX)
        return false; /* BOT would match an emptied cell */
    uint64_t e = atomic_load_explicit(&r->shm->cells[cell_pos(r, ticket)], memory_order_acquire);
    return cycle_equal(cell_cycle(e), ticket >> r->order) && cell_idx(e) == idx;
}

bool ring_clear(struct ring *r, uint64_t ticket, uint32_t idx)
{
    if (idx > RING_INDEX_MAX)
        return false; /* BOT would "empty" an already empty cell and report success */
    _Atomic uint64_t *cell = &r->shm->cells[cell_pos(r, ticket)];
    uint64_t e = atomic_load_explicit(cell, memory_order_acquire);
    while (cycle_equal(cell_cycle(e), ticket >> r->order) && cell_idx(e) == idx) {
        /* seq_cst: races with the late dequeuer's consume CAS; exactly one of them wins.
         * Keeps cycle and safe bit, as the dequeuer's consume would. */
        if (atomic_compare_exchange_strong(cell, &e, cell_make(cell_cycle(e), cell_safe(e), BOT)))
            return true;
    }
    return false;
}

struct ring_cell ring_cell_at(const struct ring *r, uint64_t pos)
{
    uint64_t e = atomic_load_explicit(&r->shm->cells[pos & r->mask], memory_order_relaxed);
    return (struct ring_cell){.cycle = cell_cycle(e),
                              .safe = cell_safe(e),
                              .empty = cell_idx(e) == BOT,
                              .idx = (uint32_t)cell_idx(e)};
}
