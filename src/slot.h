/*
 * slot.h - a slot's state word and its gen-tagged side words.
 *
 * state word (64 bits):   63            24 23          4 3     0
 *                         +---------------+-------------+-------+
 *                         | gen (40 bits) | owner (20)  | state |
 *                         +---------------+-------------+-------+
 * Every transition is one CAS on this word and adds 1 to gen, so a word value is never seen
 * twice: an actor that read it and later CASes it fails if anything happened in between. The
 * owner is a registry index (NO_OWNER when none). A delivery token is (slot index << 40 | gen of
 * the INFLIGHT word): an ack whose token gen is not the slot's current INFLIGHT gen is stale.
 *
 * Tagged words (ticket, deadline): value << 24 | (gen & 0xffffff). A reader trusts the value
 * only if the tag equals the low 24 bits of the state word's gen it read: a value left from an
 * earlier state (the writer died before storing the new one) is recognised as such.
 *
 * linger (32 bits): 0, or the delivery a live former owner may still read:
 *   (gen of its INFLIGHT word & 0x7ffff) << 13 | (owner + 1)   (owner < SHMQ_PROCS_MAX = 4096)
 */
#ifndef SHMQ_SLOT_H
#define SHMQ_SLOT_H

#include <stdbool.h>
#include <stdint.h>

#define SLOT_OWNER_BITS 20
#define NO_OWNER ((1u << SLOT_OWNER_BITS) - 1)
#define GEN_SHIFT 24
#define GEN_MASK ((1ull << 40) - 1)
#define TAG_BITS 24
#define TAG_MASK ((1ull << TAG_BITS) - 1)

static inline uint64_t sw_make(unsigned state, uint32_t owner, uint64_t gen)
{
    return ((gen & GEN_MASK) << GEN_SHIFT) | ((uint64_t)(owner & NO_OWNER) << 4) | (state & 15u);
}
static inline unsigned sw_state(uint64_t w) { return (unsigned)(w & 15u); }
static inline uint32_t sw_owner(uint64_t w) { return (uint32_t)((w >> 4) & NO_OWNER); }
static inline uint64_t sw_gen(uint64_t w) { return w >> GEN_SHIFT; }

/* The word that follows w by one transition into state/owner. */
static inline uint64_t sw_next(uint64_t w, unsigned state, uint32_t owner)
{
    return sw_make(state, owner, sw_gen(w) + 1);
}

static inline uint64_t tagged_make(uint64_t value, uint64_t w)
{
    return (value << TAG_BITS) | (sw_gen(w) & TAG_MASK);
}
/* True (and *value set) if tagged belongs to state word w. */
static inline bool tagged_get(uint64_t tagged, uint64_t w, uint64_t *value)
{
    if ((tagged & TAG_MASK) != (sw_gen(w) & TAG_MASK))
        return false;
    *value = tagged >> TAG_BITS;
    return true;
}

static inline uint64_t token_make(uint32_t idx, uint64_t w)
{
    return ((uint64_t)idx << 40) | sw_gen(w);
}
static inline uint32_t token_idx(uint64_t token) { return (uint32_t)(token >> 40); }
static inline uint64_t token_gen(uint64_t token) { return token & GEN_MASK; }

#define LINGER_OWNER_BITS 13
#define LINGER_OWNER_MASK ((1u << LINGER_OWNER_BITS) - 1)

/* The linger tag of the delivery held as INFLIGHT word w (its owner, its gen). */
static inline uint32_t linger_make(uint64_t w)
{
    return (uint32_t)(sw_gen(w) << LINGER_OWNER_BITS) | ((sw_owner(w) + 1) & LINGER_OWNER_MASK);
}
/* The registry index a non-zero linger names. */
static inline uint32_t linger_owner(uint32_t lg) { return (lg & LINGER_OWNER_MASK) - 1; }

#endif
