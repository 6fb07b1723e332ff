/*
 * stats.c - counters summed over the registry, and slots counted by state.
 */
#include <errno.h>
#include <string.h>

#include "queue.h"
#include "registry.h"
#include "slot.h"

int shmq_stats(shmq_t *q, shmq_stats_t *st)
{
    if (!q || !st)
        return -EINVAL;
    memset(st, 0, sizeof(*st));
    const struct segment *s = &q->seg;
    uint64_t sum[CNT__COUNT];
    for (int c = 0; c < CNT__COUNT; c++)
        sum[c] = atomic_load_explicit(&s->hdr->retired[c], memory_order_relaxed);
    for (uint32_t i = 0; i < s->layout.max_procs; i++) {
        struct proc_entry *e = segment_proc(s, i);
        unsigned state = pw_state(atomic_load_explicit(&e->word, memory_order_acquire));
        if (state == PROC_FREE)
            continue;
        for (int c = 0; c < CNT__COUNT; c++)
            sum[c] += atomic_load_explicit(&e->counters[c], memory_order_relaxed);
        if (state == PROC_ACTIVE) {
            st->procs++;
            if (e->role & ROLE_CONSUMER)
                st->consumers++;
        }
    }
    st->published = sum[CNT_PUBLISHED];
    st->delivered = sum[CNT_DELIVERED];
    st->acked = sum[CNT_ACKED];
    st->nacked = sum[CNT_NACKED];
    st->redelivered = sum[CNT_REDELIVERED];
    st->dead_lettered = sum[CNT_DEAD_LETTERED];
    st->reclaimed = sum[CNT_RECLAIMED];
    st->wal_bytes = atomic_load(&s->hdr->wal_pos) - s->layout.wal_base_pos;
    st->wal_flushes = atomic_load(&s->hdr->wal_flushes);
    st->wal_files = q->wal ? wal_count_files(q->wal) : 0;
    for (uint32_t i = 0; i < s->layout.capacity; i++) {
        uint64_t w = atomic_load_explicit(&segment_slot(s, i)->state, memory_order_relaxed);
        switch (sw_state(w)) {
        case SLOT_FREE: st->free++; break;
        case SLOT_RESERVED: st->reserved++; break;
        case SLOT_READY: st->ready++; break;
        case SLOT_INFLIGHT: st->inflight++; break;
        case SLOT_DELAYED: st->delayed++; break;
        case SLOT_DEAD: st->dead++; break;
        }
    }
    return 0;
}
