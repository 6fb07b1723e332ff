/*
 * lease.c - the maintenance lease: at most one maintainer at a time, and takeover on expiry.
 *
 * lease_word (seg_header): holder << 48 | priority << 47 | expiry_ms, where holder is the
 * holder's registry index + 1 (0: nobody) and expiry_ms counts from the segment's creation.
 * Taking or renewing is one CAS from the word read. A lease is free to take when it is 0, has
 * expired, its holder's registry entry is no longer ACTIVE (fenced as dead or hung), or the
 * taker has priority over the holder (a watchdog over a consumer maintaining cooperatively).
 * The lease only decides who maintains: maintenance is correct with several maintainers at
 * once (maintain.c), so a stale holder that has not noticed its loss does no harm.
 */
#include <errno.h>

#include "queue.h"
#include "registry.h"

#define EXPIRY_MASK ((1ull << 47) - 1)

static uint64_t lease_make(uint32_t holder, int priority, uint64_t expiry_ms)
{
    return ((uint64_t)holder << 48) | ((uint64_t)(priority ? 1 : 0) << 47) |
           (expiry_ms & EXPIRY_MASK);
}
static uint32_t lease_holder(uint64_t w) { return (uint32_t)(w >> 48); }
static int lease_priority(uint64_t w) { return (int)((w >> 47) & 1); }
static uint64_t lease_expiry(uint64_t w) { return w & EXPIRY_MASK; }

/* Is the holder's registry entry still ACTIVE with a live process? */
static bool holder_alive(const shmq_t *q, uint32_t holder)
{
    struct proc_entry *e = segment_proc(&q->seg, holder - 1);
    if (!e)
        return false;
    uint64_t pw = atomic_load_explicit(&e->word, memory_order_acquire);
    return pw_state(pw) == PROC_ACTIVE && !registry_pid_dead(e);
}

int shmq_lease_acquire(shmq_t *q, uint32_t lease_ms, int priority)
{
    if (!q || lease_ms == 0)
        return -EINVAL;
    uint64_t now = queue_now_ms_exact(q);
    uint32_t me = q->self + 1;
    _Atomic uint64_t *lw = &q->seg.hdr->lease_word;
    /* relaxed: the lease orders no data; maintenance is safe under any interleaving */
    uint64_t w = atomic_load_explicit(lw, memory_order_relaxed);
    uint32_t holder = lease_holder(w);
    bool takeable = holder == 0 || holder == me || lease_expiry(w) < now ||
                    (priority && !lease_priority(w)) || !holder_alive(q, holder);
    if (!takeable)
        return -EBUSY;
    uint64_t mine = lease_make(me, priority, now + lease_ms);
    return atomic_compare_exchange_strong_explicit(lw, &w, mine, memory_order_relaxed,
                                                   memory_order_relaxed)
               ? 0
               : -EBUSY;
}

int shmq_lease_release(shmq_t *q)
{
    if (!q)
        return -EINVAL;
    _Atomic uint64_t *lw = &q->seg.hdr->lease_word;
    uint64_t w = atomic_load_explicit(lw, memory_order_relaxed);
    if (lease_holder(w) != q->self + 1)
        return 0;
    atomic_compare_exchange_strong_explicit(lw, &w, 0, memory_order_relaxed, memory_order_relaxed);
    return 0;
}

int shmq_lease_get(shmq_t *q, shmq_lease_info_t *info)
{
    if (!q || !info)
        return -EINVAL;
    uint64_t w = atomic_load_explicit(&q->seg.hdr->lease_word, memory_order_relaxed);
    uint32_t holder = lease_holder(w);
    struct proc_entry *e = holder ? segment_proc(&q->seg, holder - 1) : NULL;
    info->pid = e ? e->pid : 0;
    info->priority = lease_priority(w);
    info->expires_in_ms = holder ? (int64_t)lease_expiry(w) - (int64_t)queue_now_ms_exact(q) : 0;
    info->held = holder && info->expires_in_ms >= 0 && holder_alive(q, holder);
    return 0;
}

int shmq_maintain_if_unwatched(shmq_t *q, uint32_t lease_ms)
{
    if (!q)
        return -EINVAL;
    if (shmq_lease_acquire(q, lease_ms, 0) != 0)
        return 0;
    int err = queue_maintain_light(q);
    return err ? err : 1;
}
