/*
 * fanring.c - the fan-out ring (fanring.h; docs/DESIGN.md, "The fan-out ring").
 *
 * Fill (FH): read fan_head h; if cell h % cap already holds h, help (move fan_head) and retry;
 * else store fanpos[idx] = h and CAS the cell from the older position's word to (idx, h) (FH1),
 * then move fan_head h -> h + 1 (FH2; a failure: someone helped). fan_head passes h only after
 * cell h holds h, so no position is skipped, and a position is filled once (FH1 expects the
 * older word, which the one FH1 that lands replaces).
 * Take (FC1-FC2): read cursor c and cell c % cap (FC1); an older position there: empty; a newer
 * one: the ring lapped c, the cursor jumps to the oldest position still held; c itself: CAS the
 * cursor c -> c + 1 (FC2), one winner per position per group. The winner checks the slot's cell
 * (FC3, the caller's) and fanpos (FC4) before its claim: the hint may be stale.
 * Crash windows: a filler killed after FH1 before FH2 is helped by the next filler (receivers
 * read cell h without looking at fan_head); killed before FH1, its cells stay pending with
 * fanpos NONE or unfilled, and a taker killed after FC2 leaves a pending cell behind the
 * cursor: maintenance's fan-out repair finds both (fan_reachable false) and makes them READY
 * on the group's ring.
 */
#include "fanring.h"

#include <errno.h>
#include <stddef.h>

#include "crashpoint.h"

#define POS_MASK ((1ull << FAN_POS_BITS) - 1)

static inline uint64_t cell_make(uint64_t pos, uint32_t idx)
{
    return (pos & POS_MASK) << FAN_IDX_BITS | idx;
}
static inline uint32_t cell_idx(uint64_t e) { return (uint32_t)(e & FAN_IDX_NONE); }

/* Position p (64-bit) against the position a cell holds (41 bits): < 0 older, 0 the same,
 * > 0 newer. Wrap-safe while the two lie within 2^40 of each other (cap <= 2^23). */
static inline int64_t cell_vs(uint64_t e, uint64_t p)
{
    uint64_t d = ((e >> FAN_IDX_BITS) - p) & POS_MASK;
    return (int64_t)(d << FAN_IDX_BITS) >> FAN_IDX_BITS; /* sign-extend 41 bits */
}

void fanring_bind(struct fanring *f, void *base, uint32_t max_groups, uint32_t capacity,
                  uint64_t cells)
{
    char *b = base;
    f->head = (_Atomic uint64_t *)b;
    f->waiters = (_Atomic uint32_t *)(b + 64);
    f->cursors = b + 128;
    f->pos = (_Atomic uint64_t *)(b + 128 + 64ull * max_groups);
    f->cells = f->pos + capacity;
    f->mask = cells ? cells - 1 : 0;
}

void fanring_init(struct fanring *f, uint32_t max_groups, uint32_t capacity)
{
    uint64_t cap = f->mask + 1;
    /* relaxed: published with the segment (its magic, S1) */
    atomic_store_explicit(f->head, cap, memory_order_relaxed);
    atomic_store_explicit(f->waiters, 0, memory_order_relaxed);
    for (uint32_t g = 0; g < max_groups; g++)
        atomic_store_explicit(fan_cursor(f, g), cap, memory_order_relaxed);
    for (uint32_t i = 0; i < capacity; i++)
        atomic_store_explicit(&f->pos[i], FANPOS_NONE, memory_order_relaxed);
    for (uint64_t j = 0; j < cap; j++) /* position j, before every real one (they start at cap) */
        atomic_store_explicit(&f->cells[j], cell_make(j, FAN_IDX_NONE), memory_order_relaxed);
}

void fan_fill(const struct fanring *f, uint32_t idx, uint64_t token)
{
    uint64_t mine = token; /* fanpos as FP0 of our message left it, then our own last store */
    for (;;) {
        /* relaxed: where to try; the cell's CAS decides */
        uint64_t h = atomic_load_explicit(f->head, memory_order_relaxed);
        _Atomic uint64_t *cell = &f->cells[h & f->mask];
        uint64_t e = atomic_load_explicit(cell, memory_order_relaxed);
        int64_t vs = cell_vs(e, h);
        if (vs == 0) { /* filled, fan_head not moved (its filler is slow or dead): help, FH2 */
            atomic_compare_exchange_strong_explicit(f->head, &h, h + 1, memory_order_relaxed,
                                                    memory_order_relaxed);
            continue;
        }
        if (vs > 0)
            continue; /* h is stale: fan_head moved on */
        /* relaxed: FH1 below publishes it (FC4). A CAS from what FP0 of our message or our
         * last try left: another value means FP0 of a later message of the slot (we paused
         * past the orphan grace, maintenance finished ours, the slot was reused; review11),
         * and our fill would name that message at a position its own publish never chose (a
         * delayed one between P1D and F4 delivered early): not ours to fill, stop */
        if (!atomic_compare_exchange_strong_explicit(&f->pos[idx], &mine, h, memory_order_relaxed,
                                                     memory_order_relaxed))
            return;
        mine = h;
        CRASH_POINT(fan_before_fill);
        /* FH1 (seq_cst): release publishes P1, F2, F3 and fanpos to FC1's acquire; seq_cst so
         * the wake's W1F (a seq_cst load after this) and a sleeper's W2F form a Dekker pair */
        if (!atomic_compare_exchange_strong_explicit(cell, &e, cell_make(h, idx),
                                                     memory_order_seq_cst, memory_order_relaxed))
            continue; /* another filler took h */
        CRASH_POINT(fan_after_fill);
        /* FH2 (relaxed): progress only; a failure means a helper moved it */
        atomic_compare_exchange_strong_explicit(f->head, &h, h + 1, memory_order_relaxed,
                                                memory_order_relaxed);
        return;
    }
}

int fan_take(const struct fanring *f, uint32_t g, uint32_t *idx, uint64_t *pos)
{
    _Atomic uint64_t *cur = fan_cursor(f, g);
    /* relaxed: FC2's CAS decides which taker gets c */
    uint64_t c = atomic_load_explicit(cur, memory_order_relaxed);
    for (;;) {
        /* FC1 (seq_cst): acquire pairs with FH1 (the slot's P1, F3 and fanpos); seq_cst for the
         * sleeper's last try after W2F (the wake's Dekker pair) */
        uint64_t e = atomic_load_explicit(&f->cells[c & f->mask], memory_order_seq_cst);
        int64_t vs = cell_vs(e, c);
        if (vs < 0)
            return -EAGAIN; /* c not filled yet: g has read everything */
        uint64_t next = c + 1;
        if (vs > 0) /* lapped: the oldest position the ring may still hold */
            next = c + (uint64_t)vs - f->mask;
        /* FC2 (relaxed): one winner per position per group; the cell decides the delivery */
        if (!atomic_compare_exchange_strong_explicit(cur, &c, next, memory_order_relaxed,
                                                     memory_order_relaxed))
            continue; /* c holds the cursor now */
        if (vs > 0) {
            c = next;
            continue;
        }
        CRASH_POINT(fan_after_take);
        *idx = cell_idx(e);
        *pos = c;
        if (*idx != FAN_IDX_NONE)
            return 0;
        c = next; /* never filled with a slot: cannot happen past cap, skip it */
    }
}

bool fan_reachable(const struct fanring *f, uint32_t g, uint32_t idx)
{
    /* relaxed, all: a hint for the repair, which also waits out the grace on the cell word */
    uint64_t p = atomic_load_explicit(&f->pos[idx], memory_order_relaxed);
    if (p & FANPOS_UNFILLED)
        return false;
    uint64_t e = atomic_load_explicit(&f->cells[p & f->mask], memory_order_relaxed);
    if (cell_vs(e, p) != 0 || cell_idx(e) != idx)
        return false; /* lapped, or its filler stopped before FH1 */
    uint64_t c = atomic_load_explicit(fan_cursor(f, g), memory_order_relaxed);
    return (int64_t)(p - c) >= 0;
}

void fan_cursor_start(const struct fanring *f, uint32_t g)
{
    /* relaxed: published by the group's CAS to ACTIVE and its fetch_or (release) */
    atomic_store_explicit(fan_cursor(f, g), atomic_load_explicit(f->head, memory_order_relaxed),
                          memory_order_relaxed);
}

void fan_cursor_raise(const struct fanring *f, uint32_t g, uint64_t to)
{
    _Atomic uint64_t *cur = fan_cursor(f, g);
    uint64_t c = atomic_load_explicit(cur, memory_order_relaxed);
    /* relaxed: as FC2, a cursor move decides nothing */
    while ((int64_t)(to - c) > 0 &&
           !atomic_compare_exchange_weak_explicit(cur, &c, to, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}
