/*
 * queue.c - the process-local handle's helpers (queue.h): its clock and its log.
 */
#include "queue.h"

#include <time.h>

#include "clock.h"
#include "crashpoint.h"

uint64_t queue_now_ms(const shmq_t *q)
{
    return queue_ms_at(q, now_ns_coarse());
}

uint64_t queue_now_ms_exact(const shmq_t *q)
{
    return (now_ns() - q->seg.layout.created_ns) / 1000000ull;
}

int queue_log_dead(shmq_t *q, uint32_t g, uint64_t id, uint32_t attempt, uint32_t reason)
{
    return q->wal ? wal_append(q->wal, wal_type_of(WAL_DEAD, g), id, attempt, &reason,
                               WAL_DEAD_REASON_LEN, NULL)
                  : 0;
}

int queue_log_slot(shmq_t *q, struct slot *sl, uint64_t id, unsigned flags,
                   const struct wal_times *t, uint32_t len, uint32_t *seq)
{
    const struct slot_hdrs *sh = slot_headers(&q->seg, sl);
    uint32_t hl = slot_headers_len(&q->seg, sh);
    return wal_append_publish_timed(q->wal, id, flags, t, NULL, 0, hl ? sh->bytes : NULL, hl,
                                    slot_payload(sl), len, seq);
}

uint64_t queue_unix_ms(const shmq_t *q, uint64_t due_ms)
{
    /* the queue's clock first, the wall clock after: time passing between the two readings
     * (a preemption, a stop) makes the logged due time later, never earlier. The other way
     * round a publisher stopped there logged it early by the stop, and a rebuild delivered
     * the message that much before its due time */
    uint64_t now_q = queue_now_ms_exact(q);
    CRASH_POINT(due_between_clocks);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u +
           (due_ms > now_q ? due_ms - now_q : 0);
}

int queue_log_nack(shmq_t *q, uint32_t g, uint64_t id, uint32_t attempt, uint64_t due_ms)
{
    if (!q->wal)
        return 0;
    if (!due_ms)
        return wal_append(q->wal, wal_type_of(WAL_NACK, g), id, attempt, NULL, 0, NULL);
    /* the due time in wall-clock ms, so that recovery after a reboot knows what is left */
    uint64_t due_unix = queue_unix_ms(q, due_ms);
    return wal_append(q->wal, wal_type_of(WAL_NACK, g), id, attempt, &due_unix, WAL_NACK_DUE_LEN,
                      NULL);
}
