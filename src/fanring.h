/*
 * fanring.h - the fan-out ring of a queue with consumer groups: one shared, ordered list of the
 * messages published for groups >= 1, read by each group with a cursor of its own, so a publish
 * pays one fill for all its groups instead of a ring enqueue per group. A hint, never the
 * truth: the group's cell decides every delivery, and what the ring fails to carry maintenance
 * finds from the cells (fan_reachable). The steps (FP0, FH1/FH2, FC1-FC4), their memory order
 * and crash windows: docs/DESIGN.md, "The fan-out ring"; the layout: docs/FORMAT.md 9.
 *
 * In shared memory at fanring_off (layout.h, group_regions): fan_head (u64) at 0, the summary
 * waiter count (u32) at 64, cursor[g] (u64) at 128 + 64 * g, then fanpos[capacity] (u64), then
 * the ring's cells (u64, fan_cells of them): pos mod 2^41 << 23 | slot index (2^23 - 1: none).
 */
#ifndef SHMQ_FANRING_H
#define SHMQ_FANRING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define FAN_IDX_BITS 23u
#define FAN_IDX_NONE ((1u << FAN_IDX_BITS) - 1u)
#define FAN_POS_BITS (64u - FAN_IDX_BITS)
#define FANPOS_NONE UINT64_MAX /* fanpos of a slot not filled (yet) */
/* Bit 63 set: not filled; the rest names the preparation (FP0: its RESERVED slot word), so a
 * filler whose message is not the slot's any more cannot fill it (fan_fill, review11). */
#define FANPOS_UNFILLED (1ull << 63)
static inline uint64_t fan_token(uint64_t reserved_word) { return FANPOS_UNFILLED | reserved_word; }

/* A process's handle on the ring (bound from the validated layout, never re-read from shm). */
struct fanring {
    _Atomic uint64_t *head;    /* the next position to fill */
    _Atomic uint32_t *waiters; /* sleepers of groups >= 1 (W2F), the publisher's W1F */
    char *cursors;             /* cursor of group g: (_Atomic uint64_t *)(cursors + 64 * g) */
    _Atomic uint64_t *pos;     /* fanpos[capacity] */
    _Atomic uint64_t *cells;
    uint64_t mask;             /* cells - 1; 0: no ring (max_groups 1) */
};

/* Bytes of the region for max_groups groups, capacity slots and cells ring cells. */
static inline uint64_t fanring_bytes(uint32_t max_groups, uint32_t capacity, uint64_t cells)
{
    return 128 + 64ull * max_groups + 8ull * capacity + 8ull * cells;
}

/* Bind f to the region at base (cells: layout's fan_cells, 0 for none). */
void fanring_bind(struct fanring *f, void *base, uint32_t max_groups, uint32_t capacity,
                  uint64_t cells);

/* Initialise a fresh region (single-threaded: while the segment is made). */
void fanring_init(struct fanring *f, uint32_t max_groups, uint32_t capacity);

static inline _Atomic uint64_t *fan_cursor(const struct fanring *f, uint32_t g)
{
    return (_Atomic uint64_t *)(f->cursors + 64u * g);
}

/* FP0: slot idx, held RESERVED by the caller, is not filled; before its F3 (release) stores.
 * token: fan_token() of the caller's RESERVED word, which its fan_fill() passes (FANPOS_NONE:
 * never filled). */
static inline void fan_unfilled(const struct fanring *f, uint32_t idx, uint64_t token)
{
    /* relaxed: published to a cell's acquirer by F3's release stores (FC4) */
    atomic_store_explicit(&f->pos[idx], token, memory_order_relaxed);
}

/* FH: put slot idx, committed (after P1), at the next position. Lock-free; no hole is left
 * (a filler killed after FH1 is helped by the next one). */
void fan_fill(const struct fanring *f, uint32_t idx, uint64_t token);

/* FC1-FC2 and FC4 for group g: the next position whose hint names a slot filled there: 0 and
 * *idx, *pos (this caller alone took it for g; FC3/FC4 are the caller's, fan_filled_at), or
 * -EAGAIN when g has read everything filled. */
int fan_take(const struct fanring *f, uint32_t g, uint32_t *idx, uint64_t *pos);

/* FC4: was slot idx's message filled at pos? After the caller's acquire load of the cell. */
static inline bool fan_filled_at(const struct fanring *f, uint32_t idx, uint64_t pos)
{
    /* relaxed: ordered after the caller's FC3 (acquire) and FC1 (docs/DESIGN.md) */
    return atomic_load_explicit(&f->pos[idx], memory_order_relaxed) == pos;
}

/* Can group g still reach slot idx's message through the ring (filled, still held by its ring
 * cell, not behind g's cursor)? False: the fan-out repair's case (maintain.c). */
bool fan_reachable(const struct fanring *f, uint32_t g, uint32_t idx);

/* A new group g starts at the next position (group create, before its mask bit). */
void fan_cursor_start(const struct fanring *f, uint32_t g);

/* Group g needs no hint before position to (purge): its cursor is raised there, never lowered. */
void fan_cursor_raise(const struct fanring *f, uint32_t g, uint64_t to);

/* The next position to fill now (relaxed: a bound for purge, a figure for tools). */
static inline uint64_t fan_head_now(const struct fanring *f)
{
    return atomic_load_explicit(f->head, memory_order_relaxed);
}

#endif
