/*
 * expire.h - a message's time to live: the expiry time its slot carries, and expiring it.
 *
 * A slot's expire_ns is the CLOCK_MONOTONIC time (ns, the clock publish_ns is read on) from
 * which the message is expired, or UINT64_MAX for never: so the check on the fast path is one
 * compare against the clock value its call already read, whether the queue has a TTL or not.
 * An expired message is never delivered: whoever finds it past its expiry while it is ready or
 * delayed (a receive after its claim C1, a nack of it, a maintenance pass) expires it from a word
 * it holds (INFLIGHT, its own), by the queue's expire_policy: dead letter (reason
 * SHMQ_DEAD_EXPIRED, logged DEAD before the move) or drop (freed as an ack, logged ACK|EXPIRED
 * after). The state machine and its crash windows: docs/DESIGN.md, "Expiry".
 */
#ifndef SHMQ_EXPIRE_H
#define SHMQ_EXPIRE_H

#include <stdbool.h>
#include <stdint.h>

#include "queue.h"

#define EXPIRE_NEVER UINT64_MAX

/* The expiry time of a message published at publish_ns with a time to live of ttl_ms (0:
 * none). */
static inline uint64_t expire_at(uint64_t publish_ns, uint32_t ttl_ms)
{
    return ttl_ms ? publish_ns + (uint64_t)ttl_ms * 1000000ull : EXPIRE_NEVER;
}

/* Expire the message of slot idx, which we hold as INFLIGHT word w (claimed and not delivered,
 * or a delivery being nacked), by the queue's policy; counted in the header's expired (and
 * dead_lettered on entry e). 0; -ESTALE when w was taken from us first (then it is not ours to
 * expire, and we read the slot no more); -EIDRM (dead letter: not moved). */
int expire_held(shmq_t *q, uint32_t idx, uint64_t w, struct proc_entry *e);

/* The same for a message held in group g's cell of slot idx (consumer groups: the expiry is
 * the slot's, each group expires its own delivery; groups >= 1 are not logged yet). */
int expire_held_cell(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, struct proc_entry *e);

/* Maintenance: group g's cell of slot idx (g 0: the slot) is READY or DELAYED as word w (read
 * with acquire) and the message is past its expiry at now_ms (queue ms): take it as a receive
 * would (the same CAS, to INFLIGHT(q->self)) and expire it. true if this call expired it. */
bool expire_claim(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, uint64_t now_ms);

/* The wall-clock time (unix ms) of expiry time expire_ns (EXPIRE_NEVER: 0), for the log. */
uint64_t expire_unix_ms(const shmq_t *q, uint64_t expire_ns);

#endif
