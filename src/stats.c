/*
 * stats.c - counters summed over the registry, and slots counted by state; a consumer group's
 * messages counted by state (its cells: group 0's are the slots) and its lag (stats.h: the
 * inspection layer counts with the same function).
 */
#include <errno.h>
#include <string.h>

#include "abi.h"
#include "clock.h"
#include "gcell.h"
#include "groups.h"
#include "queue.h"
#include "registry.h"
#include "slot.h"
#include "stats.h"

static int stats(shmq_t *q, shmq_stats_t *st)
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
    st->dedup_hits = sum[CNT_DEDUP_HITS];
    st->wal_bytes = atomic_load(&s->hdr->wal_pos) - s->layout.wal_base_pos;
    st->wal_flushes = atomic_load(&s->hdr->wal_flushes);
    st->wal_files = q->wal ? wal_count_files(q->wal) : 0;
    struct wal_health health;
    wal_health_of(s->hdr, &health);
    st->wal_errors = health.errors;
    st->wal_last_error = health.last_error;
    st->wal_healthy = !health.flush_failed && health.last_error == 0;
    st->wal_flush_failed = health.flush_failed;
    st->recovered_holes = s->hdr->recovered_holes;
    st->recovered_bad_regions = s->hdr->recovered_bad_regions;
    st->expired = atomic_load_explicit(&s->hdr->expired, memory_order_relaxed);
    uint64_t now = now_ns(), oldest = UINT64_MAX;
    for (uint32_t i = 0; i < s->layout.capacity; i++) {
        struct slot *sl = segment_slot(s, i);
        /* acquire: publish_ns was written before the release that made the slot READY */
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
        unsigned state = sw_state(w);
        switch (state) {
        case SLOT_FREE: st->free++; break;
        case SLOT_RESERVED: st->reserved++; break;
        case SLOT_READY: st->ready++; break;
        case SLOT_INFLIGHT: st->inflight++; break;
        case SLOT_DELAYED: st->delayed++; break;
        case SLOT_DEAD: st->dead++; break;
        }
        /* the same rule as maintenance's pinned gauge (maintain.c) */
        if (state == SLOT_FENCED || atomic_load_explicit(&sl->linger, memory_order_relaxed))
            st->pinned++;
        if (state == SLOT_READY || state == SLOT_INFLIGHT || state == SLOT_DELAYED) {
            uint64_t t = sl->publish_ns; /* racy read of a hint; only used for the gauge */
            if (t && t < oldest)
                oldest = t;
        }
    }
    st->oldest_age_ms = oldest == UINT64_MAX ? -1 : (int64_t)((now > oldest ? now - oldest : 0) / 1000000ull);
    return 0;
}

/* shmq_stats() for the caller's struct of size bytes (abi.h): filled in the library's layout,
 * then copied. */
int shmq_stats_size(shmq_t *q, shmq_stats_t *st, size_t size)
{
    if (!st || !abi_size_ok(size, ABI_STATS_SIZE_0, sizeof(shmq_stats_t)))
        return -EINVAL;
    shmq_stats_t own = {0};
    int err = stats(q, &own);
    abi_copy_out(st, size, &own, sizeof(own));
    return err;
}

/* The plain symbol (no header macro reaches it): the first layout. */
int(shmq_stats)(shmq_t *q, shmq_stats_t *st)
{
    return shmq_stats_size(q, st, ABI_STATS_SIZE_0);
}

/* The counters of group g's consumers: its entry's retired (the released ones', registry.c)
 * and its live entries' (each of the same group incarnation: group_same()), and how many are
 * attached. A racy sum, as stats()'s: an entry folded meanwhile is missed, never counted twice. */
static void group_consumers(const struct segment *s, uint32_t g, shmq_group_stats_t *st)
{
    const struct group_entry *ge = segment_group(s, g);
    /* relaxed: the word that names this incarnation; the tallies are ordered against nothing */
    uint64_t gw = atomic_load_explicit(&ge->word, memory_order_relaxed);
    uint64_t sum[3] = {0};
    static const int cnt[3] = {CNT_DELIVERED, CNT_ACKED, CNT_NACKED};
    for (int k = 0; k < 3; k++)
        sum[k] = atomic_load_explicit(&ge->retired[cnt[k]], memory_order_relaxed);
    for (uint32_t i = 0; i < s->layout.max_procs; i++) {
        const struct proc_entry *e = segment_proc(s, i);
        /* acquire: pairs with G1 (attach): role, group and group_word are complete */
        unsigned state = pw_state(atomic_load_explicit(&e->word, memory_order_acquire));
        if (state == PROC_FREE || !(e->role & ROLE_CONSUMER) || e->group != g ||
            !group_same(e->group_word, gw))
            continue;
        for (int k = 0; k < 3; k++)
            sum[k] += atomic_load_explicit(&e->counters[cnt[k]], memory_order_relaxed);
        st->consumers += state == PROC_ACTIVE;
    }
    st->delivered = sum[0];
    st->acked = sum[1];
    st->nacked = sum[2];
}

void group_count(const struct segment *s, uint32_t g, uint64_t now, shmq_group_stats_t *st)
{
    const struct group_entry *e = segment_group(s, g);
    memset(st, 0, sizeof(*st));
    if (!e)
        return; /* g >= max_groups: nothing of it */
    st->index = g;
    memcpy(st->name, e->name, SHMQ_GROUP_NAME_MAX);
    st->first_id = e->first_id; /* plain: written before the CAS that made it ACTIVE (acquired) */
    st->overrun = atomic_load_explicit(&e->overrun, memory_order_relaxed); /* a tally */
    /* relaxed: a gauge's reference; ids handed out after it may show in the scan (lag 0 then) */
    st->newest_id = atomic_load_explicit(&s->hdr->next_id, memory_order_relaxed);
    uint64_t oldest = UINT64_MAX, low = UINT64_MAX;
    for (uint32_t i = 0; i < s->layout.capacity; i++) {
        const struct slot *sl = segment_slot(s, i), *cl = segment_cell(s, g, i);
        /* acquire: pairs with the release that made the cell so (P1, F4, ...): the slot's id
         * and publish_ns are this message's (racy hints for the gauges all the same) */
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        /* a pending cell (RESERVED under a committed slot: waiting in the fan-out ring) is ready */
        unsigned state = g && seg_cell_pending(s, i, w) ? SLOT_READY : sw_state(w);
        switch (state) {
        case SLOT_READY: st->ready++; break;
        case SLOT_INFLIGHT: st->inflight++; break;
        case SLOT_DELAYED: st->delayed++; break;
        case SLOT_DEAD: st->dead++; continue;
        default: continue;
        }
        uint64_t t = sl->publish_ns, id = sl->id;
        if (t && t < oldest)
            oldest = t;
        if (id && id < low)
            low = id;
    }
    st->held = (uint64_t)st->ready + st->inflight + st->delayed + st->dead;
    st->lag = low != UINT64_MAX && st->newest_id >= low ? st->newest_id - low + 1 : 0;
    st->oldest_age_ms =
        oldest == UINT64_MAX ? -1 : (int64_t)((now > oldest ? now - oldest : 0) / 1000000ull);
    group_consumers(s, g, st);
}

int shmq_group_stats_size(shmq_t *q, const char *group, shmq_group_stats_t *st, size_t size)
{
    uint32_t g;
    uint64_t w;
    if (!q || !st || !abi_size_ok(size, ABI_GROUP_STATS_SIZE_0, sizeof(shmq_group_stats_t)))
        return -EINVAL;
    if (!queue_gen_live(q))
        return -EIDRM;
    int err = groups_find(q, group, &g, &w);
    if (err)
        return err;
    shmq_group_stats_t own;
    group_count(&q->seg, g, now_ns(), &own);
    /* the entry unchanged: the name and first_id copied are this group's (a seqlock reader) */
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&segment_group(&q->seg, g)->word, memory_order_relaxed) != w)
        return -ENOENT;
    abi_copy_out(st, size, &own, sizeof(own));
    return 0;
}

/* The plain symbol (no header macro reaches it): the first layout. */
int(shmq_group_stats)(shmq_t *q, const char *group, shmq_group_stats_t *st)
{
    return shmq_group_stats_size(q, group, st, ABI_GROUP_STATS_SIZE_0);
}
