/*
 * procs.c - list the registry for the watchdog and tools.
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
