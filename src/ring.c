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
 * Batches (ring_enqueue_batch, ring_dequeue_batch). A batch draws k tickets with one FAA of k
 * and then works on each ticket exactly as a single operation works on the one it drew
 * (enq_cell, deq_cell: the same code). The paper's argument is per ticket and lets any process
 * pause anywhere, so one FAA of k is k enqueuers (or dequeuers) that drew consecutive tickets
 * and then ran one after the other: every cell sees the steps it would see from them, and the
 * safe-bit and cycle rules hold per cell unchanged. What differs, and why it is sound:
 *  - Memory ordering. The FAA is seq_cst as before; each cell's R1 (enqueue CAS) and R2 (its
 *    acquire load, then the consume CAS) are the single operation's, so the slot written
 *    before a batch enqueue is published to the dequeuer of that very cell, pairwise.
 *  - The threshold is reset once, after the range's last R1, not after each. Until then the
 *    range's entries are in their cells with their reset not done yet: crash window (2) for
 *    each, which a later reset ends (ours, any other enqueuer's, or ring_unstrand()); a
 *    dequeuer that reports "empty" meanwhile linearizes before the batch's enqueues, which are
 *    all still under way. The paper's bound 3n-1 counts at most n entries and fewer than n
 *    enqueuers under way; a batch's tickets under way each stand for a slot its caller holds
 *    (a slot is in one ring cell at most, or in one enqueuer's hands, so entries plus tickets
 *    under way stay at most the capacity, n/2 or less: every ring has 4 x capacity cells).
 *  - A range cell that cannot take its entry (a dequeuer was there first: only if one drew a
 *    ticket of the range before its R1) ends the range: the entries left go one by one
 *    (ring_enqueue), at tickets after the range, so the caller's order holds. The tickets of
 *    the range left unused are a dead enqueuer's tickets (crash window (1)): dequeuers move
 *    their cells on and pass them, each a failed attempt against the threshold, which the
 *    single enqueues after them reset again.
 *  - A stopped or killed batch enqueuer is k stopped enqueuers: tickets whose cells were not
 *    written yet are crash window (1) (passed by their dequeuers), written ones are crash
 *    window (2) until some reset. Nothing waits for it.
 *  - The batch dequeue first reads head, then the cells from head on (read-only, a hint) and
 *    draws only as many tickets as cells already hold their entries: a consumer does not run
 *    ahead of a batch being written (it would move those cells on and make the enqueuer draw
 *    again). Each drawn ticket then goes through deq_cell; one that fails (another dequeuer
 *    drew h first, so ours lie later, or repair cleared the entry) is a failed dequeue of the
 *    paper: the threshold counts it and tail is pulled up to the range's end if the range
 *    overtook it (catchup), as after a failed single dequeue. A killed or stopped batch
 *    dequeuer is n stopped dequeuers: their cells keep their entries until repair (crash window
 *    (3)), which finds each by the ticket its enqueuer recorded, as for a single dequeuer.
 *  - Only the single dequeue reports "empty": a batch that found no entry written at head, or
 *    whose tickets all failed, ends in one ring_dequeue. So a blocking receive's last try keeps
 *    the W1/W2 argument above.
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

/* What one enqueue try at a ticket came to. */
enum { ENQ_DONE, ENQ_PASSED, ENQ_FULL };

/* One enqueue try: put idx into the cell of ticket t, which the caller drew from tail. ENQ_DONE
 * (the caller resets the threshold), ENQ_PASSED (the dequeuer of t, or a later one, was there
 * first, or the cell is unsafe behind head: nobody would take it) or ENQ_FULL (an older entry
 * still waits for its late or dead dequeuer). Shared by ring_enqueue and ring_enqueue_batch. */
static inline __attribute__((always_inline)) int enq_cell(const struct ring *r, uint64_t t,
                                                          uint32_t idx)
{
    struct ring_shm *q = r->shm;
    uint64_t cycle = t >> r->order;
    _Atomic uint64_t *cell = &q->cells[cell_pos(r, t)];
    /* acquire: a cell emptied by a dequeuer is seen with that dequeuer's writes */
    uint64_t e = atomic_load_explicit(cell, memory_order_acquire);
    for (;;) {
        if (!cycle_before(cell_cycle(e), cycle))
            return ENQ_PASSED; /* the dequeuer of t (or a later one) was here first */
        if (cell_idx(e) != BOT)
            return ENQ_FULL;
        if (!cell_safe(e) && ticket_before(t, atomic_load(&q->head)))
            return ENQ_PASSED; /* unsafe, and the dequeuer of t has passed: nobody would take it */
        /* R1 (seq_cst): publishes the caller's slot writes; pairs with R2 */
        if (atomic_compare_exchange_strong(cell, &e, cell_make(cycle, true, idx)))
            return ENQ_DONE;
    }
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
        int rc = enq_cell(r, t, idx);
        if (rc == ENQ_DONE) {
            /* crash window (2): a death here leaves the entry for ring_unstrand() */
            reset_threshold(r);
            if (ticket)
                *ticket = t;
            return 0;
        }
        full += rc == ENQ_FULL; /* an older entry still waits for its (late or dead) dequeuer */
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

/* The dequeue at ticket h, which the caller drew from head, of the cell of h: true and *idx if
 * the cell held h's entry (consumed), else false, with the cell made safe for the paper's
 * argument (an empty one moved to h's cycle so a late enqueuer of h fails, an occupied older
 * one marked unsafe). Shared by ring_dequeue and ring_dequeue_batch. */
static inline __attribute__((always_inline)) bool deq_cell(const struct ring *r,
                                                           _Atomic uint64_t *cell, uint64_t h,
                                                           uint32_t *idx)
{
    uint64_t cycle = h >> r->order;
    /* R2 (acquire): see the slot the enqueuer published before R1 */
    uint64_t e = atomic_load_explicit(cell, memory_order_acquire);
    for (;;) {
        uint64_t ec = cell_cycle(e), next;
        if (holds_entry_of(r, e, h)) {
            /* consume by CAS, not OR: a late dequeuer must not erase a newer entry */
            if (atomic_compare_exchange_strong(cell, &e, cell_make(ec, cell_safe(e), BOT))) {
                *idx = (uint32_t)cell_idx(e);
                return true;
            }
            continue;
        }
        if (!cycle_before(ec, cycle))
            return false; /* a later cycle's cell, or our own entry cleared by repair */
        if (cell_idx(e) == BOT)
            next = cell_make(cycle, cell_safe(e), BOT); /* a late enqueuer of h must fail */
        else
            next = cell_make(ec, false, cell_idx(e)); /* its dequeuer is late: unsafe */
        if (next == e || atomic_compare_exchange_strong(cell, &e, next))
            return false;
    }
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
        if (deq_cell(r, cell, h, idx)) {
            if (ticket)
                *ticket = h;
            return 0;
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

size_t ring_enqueue_batch(struct ring *rp, const uint32_t *idx, size_t k, uint64_t *tickets)
{
    const struct ring r = *rp; /* a copy: its fields stay in registers across the atomics */
    if (k == 0)
        return 0;
    /* seq_cst, as ring_enqueue's FAA: the tickets [t0, t0 + k), one per entry ("Batches") */
    uint64_t t0 = atomic_fetch_add(&r.shm->tail, k);
    size_t j = 0;
    while (j < k && idx[j] <= RING_INDEX_MAX && enq_cell(&r, t0 + j, idx[j]) == ENQ_DONE) {
        if (tickets)
            tickets[j] = t0 + j;
        j++;
    }
    if (j)
        reset_threshold(&r); /* after the last R1 of the range: crash window (2) for them all */
    if (j == k)
        return k;
    /* The rest one by one, at tickets after the range (the order holds); our tickets
     * [t0 + j, t0 + k) stay unused, as a dead enqueuer's would (crash window (1)). */
    size_t done = j;
    for (; j < k; j++) {
        uint64_t t = RING_NO_TICKET;
        if (ring_enqueue(rp, idx[j], &t) == 0)
            done++;
        if (tickets)
            tickets[j] = t;
    }
    return done;
}

size_t ring_dequeue_batch(struct ring *rp, uint32_t *idx, uint64_t *tickets, size_t max)
{
    const struct ring r = *rp; /* a copy: its fields stay in registers across the atomics */
    struct ring_shm *q = r.shm;
    uint64_t seen[RING_BATCH_MAX]; /* the cells as the look found them */
    if (max > RING_BATCH_MAX)
        max = RING_BATCH_MAX;
    if (max == 0 || atomic_load(&q->threshold) < 0) /* one load: the ring is known empty */
        return 0;
    uint64_t h = atomic_load(&q->head); /* seq_cst, as R3 */
    size_t n = 0;
    /* read-only: how many tickets from h on hold their entries already (relaxed: a hint, each
     * entry is taken by a CAS below, which reads it again) */
    for (; n < max; n++) {
        seen[n] = atomic_load_explicit(&q->cells[cell_pos(&r, h + n)], memory_order_relaxed);
        if (!holds_entry_of(&r, seen[n], h + n))
            break;
    }
    if (n == 0) /* nothing written at head yet: the single dequeue decides (R3, passing dead
                 * enqueuers' tickets, "empty") */
        goto one;
    /* seq_cst, as ring_dequeue's FAA: the tickets [mine, mine + n), each dequeued as
     * ring_dequeue dequeues its one */
    uint64_t mine = atomic_fetch_add(&q->head, n);
    size_t got = 0, failed = 0;
    for (size_t j = 0; j < n; j++) {
        uint64_t t = mine + j, e = seen[j];
        _Atomic uint64_t *cell = &q->cells[cell_pos(&r, t)];
        /* Our tickets are the ones looked at (nobody drew between): consume the entry seen by
         * a CAS from it (seq_cst: R2's acquire of the enqueuer's R1, and the consume of
         * deq_cell, whose cycle and safe bit it keeps); else, or if the cell changed
         * meanwhile (repair cleared it), deq_cell decides from the cell as it is now. */
        bool took;
        if (mine == h && atomic_compare_exchange_strong(cell, &e, e | BOT)) {
            idx[got] = (uint32_t)cell_idx(e);
            took = true;
        } else {
            took = deq_cell(&r, cell, t, &idx[got]);
        }
        if (took) {
            if (tickets)
                tickets[got] = t;
            got++;
        } else {
            failed++;
        }
    }
    if (failed) { /* others took tickets meanwhile: what ring_dequeue does after failed ones */
        uint64_t t = atomic_load(&q->tail);
        if (!ticket_before(mine + n, t)) /* tail <= our last ticket + 1: pull it up */
            catchup(q, t, mine + n);
        atomic_fetch_sub(&q->threshold, (int64_t)failed);
    }
    if (got)
        return got;
one:
    /* only the single dequeue reports "empty" (a blocking try's W1/W2 argument is its) */
    return ring_dequeue(rp, idx, tickets) == 0 ? 1 : 0;
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
