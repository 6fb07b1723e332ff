/*
 * queue.c - the process-local handle's helpers (queue.h): its clock and its log.
 */
#include "queue.h"

#include "clock.h"

uint64_t queue_now_ms(const shmq_t *q)
{
    uint64_t now = now_ns_coarse(), created = q->seg.layout.created_ns;
    return now > created ? (now - created) / 1000000ull : 0;
}

uint64_t queue_now_ms_exact(const shmq_t *q)
{
    return (now_ns() - q->seg.layout.created_ns) / 1000000ull;
}

void queue_log(shmq_t *q, enum wal_type type, uint64_t id, uint32_t attempt)
{
    if (q->wal)
        wal_append(q->wal, type, id, attempt, NULL, 0, NULL);
}
