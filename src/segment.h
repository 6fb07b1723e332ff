/*
 * segment.h - create, open, validate and map a queue's shm segment; find its regions.
 *
 * A segment is trusted only after segment_open() has checked it: the file is at least as large
 * as the header, the magic, version and header CRC match, and the layout stored in it equals
 * the one its config implies and fits the file. After that, geometry comes from the private
 * copy in struct segment, never again from shm.
 */
#ifndef SHMQ_SEGMENT_H
#define SHMQ_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>

#include "fanring.h"
#include "layout.h"
#include "ring.h"

struct segment {
    void *base;
    size_t size;
    struct seg_layout layout; /* validated private copy */
    struct seg_header *hdr;
    struct ring free_ring, ready_ring, dead_ring;
    struct group_regions groups; /* where the group table, cells and rings lie (layout.h) */
    /* Each group's ready and dead-letter rings: group 0's are ready_ring and dead_ring. */
    struct ring gready[SHMQ_GROUPS_MAX], gdead[SHMQ_GROUPS_MAX];
    struct fanring fan; /* the fan-out ring of groups >= 1 (max_groups > 1; fanring.h) */
};

/* 0 if name is a valid queue name, else -EINVAL. */
int segment_check_name(const char *name);

/* Write "/shmq.NAME" (the shm_open name) into buf. -EINVAL for a bad name. */
int segment_shm_name(const char *name, char *buf, size_t size);

/* Create and initialise the segment of a new queue. -EEXIST, -EINVAL, -errno. */
int segment_create(const char *name, const shmq_config_t *cfg, struct segment *seg);

/* The same, with the log starting at wal_base_pos, the segment in log generation log_gen
 * (loghead.h), and populate(seg, arg) run on the initialised segment before its magic is
 * published (recovery fills slots and re-logs them there). */
int segment_create_with(const char *name, const shmq_config_t *cfg, uint64_t wal_base_pos,
                        uint64_t log_gen, int (*populate)(struct segment *, void *), void *arg,
                        struct segment *seg);

/*
 * Map and validate an existing segment. readonly: map it PROT_READ (the dump tool).
 * -ENOENT, -EACCES, -EPROTO (other format version), -EBADMSG (truncated, corrupted, not shmq).
 */
int segment_open(const char *name, bool readonly, struct segment *seg);

/* Same as segment_open() on an already open file descriptor (fuzzing, tools). */
int segment_open_fd(int fd, bool readonly, struct segment *seg);

void segment_close(struct segment *seg);

/* Remove the segment's name (shm_unlink): 0, -EINVAL (bad name), -ENOENT, -errno. Processes that
 * have it mapped keep their mapping. */
int segment_unlink(const char *name);

/* The slot idx, or NULL when idx is out of range (idx often comes from shm: check it here). */
static inline struct slot *segment_slot(const struct segment *s, uint64_t idx)
{
    if (idx >= s->layout.capacity)
        return NULL;
    return (struct slot *)((char *)s->base + s->layout.slots_off + idx * s->layout.slot_stride);
}

/* The payload of a slot returned by segment_slot(). */
static inline void *slot_payload(struct slot *sl)
{
    return (char *)sl + SLOT_HEADER_SIZE;
}

/* Group entry g, or NULL when g is out of range (g often comes from shm or a token). */
static inline struct group_entry *segment_group(const struct segment *s, uint64_t g)
{
    if (g >= s->layout.max_groups)
        return NULL;
    return (struct group_entry *)((char *)s->base + s->groups.groups_off) + g;
}

/* The cell of group g for slot idx: the slot itself for group 0, else a slot header of the
 * cells region whose message fields are unused. NULL when g or idx is out of range. */
static inline struct slot *segment_cell(const struct segment *s, uint64_t g, uint64_t idx)
{
    if (g == 0)
        return segment_slot(s, idx);
    if (g >= s->layout.max_groups || idx >= s->layout.capacity)
        return NULL;
    return (struct slot *)((char *)s->base + s->groups.cells_off) +
           (g - 1) * s->layout.capacity + idx;
}

/* The groups >= 1 the message in slot idx was fanned out to (valid while it is not FREE). Only
 * with max_groups > 1; idx must be in range. */
static inline _Atomic uint64_t *segment_others(const struct segment *s, uint64_t idx)
{
    return (_Atomic uint64_t *)((char *)s->base + s->groups.fanout_off) + idx;
}

/* The header block of a slot returned by segment_slot() (hdrblock.h): its length word, then
 * max_header_bytes of room; NULL when the queue carries no headers. */
struct slot_hdrs {
    uint32_t len; /* bytes used; 0: no headers. From shm: check it against max_header_bytes */
    unsigned char bytes[];
};

static inline struct slot_hdrs *slot_headers(const struct segment *s, struct slot *sl)
{
    if (!s->layout.max_header_bytes)
        return NULL;
    return (struct slot_hdrs *)((char *)sl + SLOT_HEADER_SIZE +
                                ((s->layout.max_msg_size + CACHE_LINE - 1) & ~(CACHE_LINE - 1u)));
}

/* The header block length of a slot, 0 when it has none or a bad one (> max_header_bytes). */
static inline uint32_t slot_headers_len(const struct segment *s, const struct slot_hdrs *h)
{
    uint32_t len = h ? h->len : 0;
    return len <= s->layout.max_header_bytes ? len : 0;
}

/* Registry entry i, or NULL when i is out of range. */
static inline struct proc_entry *segment_proc(const struct segment *s, uint64_t i)
{
    if (i >= s->layout.max_procs)
        return NULL;
    return (struct proc_entry *)((char *)s->base + s->layout.registry_off) + i;
}

#endif
