/*
 * procs.c - list the registry for the watchdog and tools: its entries (shmq_procs) and the
 * consumers' counters (shmq_consumer_stats).
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "queue.h"
#include "registry.h"

int shmq_procs(shmq_t *q, shmq_proc_info_t *out, size_t max, size_t *n)
{
    if (!q || !n || (!out && max))
        return -EINVAL;
    const struct segment *s = &q->seg;
    uint64_t now = now_ns();
    size_t k = 0;
    for (uint32_t i = 0; i < s->layout.max_procs && k < max; i++) {
        struct proc_entry *e = segment_proc(s, i);
        /* acquire: pairs with G1 (attach): pid and role are complete */
        unsigned st = pw_state(atomic_load_explicit(&e->word, memory_order_acquire));
        if (st == PROC_FREE)
            continue;
        uint64_t hb = atomic_load_explicit(&e->heartbeat_ns, memory_order_relaxed);
        shmq_proc_info_t *o = &out[k++];
        o->index = i;
        o->pid = e->pid;
        o->role = e->role;
        o->state = (int)st;
        o->heartbeat_age_ms = hb < now ? (now - hb) / 1000000ull : 0;
        memcpy(o->name, e->name, sizeof(o->name));
        o->name[sizeof(o->name) - 1] = 0;
    }
    *n = k;
    return 0;
}

int shmq_consumer_stats(shmq_t *q, shmq_consumer_stats_t *out, size_t max, size_t *n)
{
    if (!q || !n || (!out && max))
        return -EINVAL;
    const struct segment *s = &q->seg;
    size_t k = 0;
    for (uint32_t i = 0; i < s->layout.max_procs && k < max; i++) {
        struct proc_entry *e = segment_proc(s, i);
        /* acquire: pairs with G1 (attach): pid, role and name are complete */
        unsigned st = pw_state(atomic_load_explicit(&e->word, memory_order_acquire));
        if (st == PROC_FREE || !(e->role & ROLE_CONSUMER))
            continue;
        shmq_consumer_stats_t *o = &out[k++];
        memset(o, 0, sizeof(*o));
        o->index = i;
        o->pid = e->pid;
        o->state = (int)st;
        memcpy(o->name, e->name, sizeof(o->name));
        o->name[sizeof(o->name) - 1] = 0;
        /* relaxed: tallies (count_own() by the consumer, taken_back by maintainers), ordered
         * against nothing */
        o->delivered = atomic_load_explicit(&e->counters[CNT_DELIVERED], memory_order_relaxed);
        o->acked = atomic_load_explicit(&e->counters[CNT_ACKED], memory_order_relaxed);
        o->nacked = atomic_load_explicit(&e->counters[CNT_NACKED], memory_order_relaxed);
        o->redelivered = atomic_load_explicit(&e->counters[CNT_REDELIVERED], memory_order_relaxed);
        o->dead_lettered =
            atomic_load_explicit(&e->counters[CNT_DEAD_LETTERED], memory_order_relaxed);
        o->reclaimed_from = atomic_load_explicit(&e->taken_back, memory_order_relaxed);
    }
    *n = k;
    return 0;
}
