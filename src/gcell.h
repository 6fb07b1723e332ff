/*
 * gcell.h - what the slot state machine needs to know of consumer groups: whether a queue has
 * more than one, which are ACTIVE, and each group's futex words. Group 0 is the slot itself;
 * group g >= 1 has a cell per slot (segment_cell(), a slot header whose message fields are
 * unused) and rings of its own (segment.gready / gdead). docs/DESIGN.md, "Consumer groups".
 * The group table's operations (create, delete, list, sweep) are in groups.c, above.
 */
#ifndef SHMQ_GCELL_H
#define SHMQ_GCELL_H

#include <stdbool.h>
#include <stdint.h>

#include "queue.h"
#include "slot.h"

/* Does the queue have room for more than one group? (The one-group path skips the rest.) */
static inline bool groups_on(const shmq_t *q) { return q->seg.layout.max_groups > 1; }

/* Is group g ACTIVE now? A move that would put a message of a group that is not back on its
 * rings (READY, DELAYED, DEAD) finishes it instead. */
static inline bool group_active(const shmq_t *q, uint32_t g)
{
    /* relaxed: a message of a group deleted meanwhile that is requeued once more is released by
     * the next sweep (docs/DESIGN.md, "Groups created and deleted under load") */
    return (atomic_load_explicit(&q->seg.hdr->groups_mask, memory_order_relaxed) >> g) & 1u;
}

/* Is w, the word just read (acquire) of a cell of group g >= 1 of slot idx, pending: RESERVED
 * under a committed slot word (not FREE, not RESERVED), i.e. ready for g, waiting in the fan-out
 * ring (docs/DESIGN.md, "The fan-out ring")? The slot word is read after the cell (acquire: P1,
 * so F2's release count, before the caller's R-pre); a CAS from w stays safe either way. */
static inline bool seg_cell_pending(const struct segment *s, uint32_t idx, uint64_t w)
{
    if (sw_state(w) != SLOT_RESERVED)
        return false;
    unsigned st = sw_state(atomic_load_explicit(&segment_slot(s, idx)->state, memory_order_acquire));
    return st != SLOT_RESERVED && st != SLOT_FREE;
}
static inline bool cell_pending(const shmq_t *q, uint32_t idx, uint64_t w)
{
    return seg_cell_pending(&q->seg, idx, w);
}

/* Is group g's cell word w of slot idx ready for g: READY, or (g >= 1) pending? */
static inline bool cell_ready(const shmq_t *q, uint32_t g, uint32_t idx, uint64_t w)
{
    return sw_state(w) == SLOT_READY || (g && cell_pending(q, idx, w));
}

/* The futex word and waiter count of group g's sleeping consumers. */
static inline _Atomic uint32_t *group_ready_futex(const shmq_t *q, uint32_t g)
{
    return g ? &segment_group(&q->seg, g)->ready_futex : &q->seg.hdr->ready_futex;
}
static inline _Atomic uint32_t *group_ready_waiters(const shmq_t *q, uint32_t g)
{
    return g ? &segment_group(&q->seg, g)->ready_waiters : &q->seg.hdr->ready_waiters;
}

/* The release count (slot.holders, docs/DESIGN.md "Consumer groups", V2): tag << 8 | n, the tag
 * the low 56 bits of the message's id, n the groups >= 1 of `others` not done with it yet. */
#define HOLDERS_N_BITS 8
static inline uint64_t holders_make(uint64_t tag, uint32_t n) { return tag << HOLDERS_N_BITS | n; }
static inline uint32_t holders_n(uint64_t h) { return (uint32_t)(h & ((1u << HOLDERS_N_BITS) - 1)); }
static inline uint64_t holders_tag(uint64_t h) { return h >> HOLDERS_N_BITS; }

/* How many bits of x are set: SWAR, a dozen instructions (__builtin_popcountll without -mpopcnt
 * is a libgcc call of about 40, on every publish with groups). */
static inline uint32_t bits_set(uint64_t x)
{
    x -= (x >> 1) & 0x5555555555555555ull;
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (uint32_t)((x * 0x0101010101010101ull) >> 56);
}

/* F2 for slot idx, which we hold RESERVED with its id written: the message goes to the groups of
 * m (bit 0: group 0), the n groups >= 1 of m hold it. Relaxed: published by P1 (or a copy-out's
 * parking CAS) and by F4's release CAS on each cell; a rebuild's by publishing the segment. */
static inline void fanout_record_n(struct segment *s, uint32_t idx, uint64_t m, uint32_t n)
{
    struct slot *sl = segment_slot(s, idx);
    atomic_store_explicit(segment_others(s, idx), m, memory_order_relaxed);
    atomic_store_explicit(&sl->holders, holders_make(sl->id, n), memory_order_relaxed);
}

/* The same, n counted from m. */
static inline void fanout_record(struct segment *s, uint32_t idx, uint64_t m)
{
    fanout_record_n(s, idx, m, bits_set(m >> 1));
}

/* Group tokens (docs/FORMAT.md 9): 1 << 63 | g << 57 | idx << 35 | gen & (2^35 - 1). Group 0's
 * tokens are slot.h's (bit 63 clear: idx < 2^22). */
#define GTOKEN_GEN_BITS 35
#define GTOKEN_GEN_MASK ((1ull << GTOKEN_GEN_BITS) - 1)
static inline uint64_t gtoken_make(uint32_t g, uint32_t idx, uint64_t w)
{
    return 1ull << 63 | (uint64_t)g << 57 | (uint64_t)idx << GTOKEN_GEN_BITS |
           (sw_gen(w) & GTOKEN_GEN_MASK);
}
static inline bool token_is_group(uint64_t t) { return t >> 63; }
static inline uint32_t gtoken_group(uint64_t t) { return (uint32_t)(t >> 57) & 63u; }
static inline uint32_t gtoken_idx(uint64_t t) { return (uint32_t)(t >> GTOKEN_GEN_BITS) & ((1u << 22) - 1); }
static inline uint64_t gtoken_gen(uint64_t t) { return t & GTOKEN_GEN_MASK; }

#endif
