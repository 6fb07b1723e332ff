/*
 * dedup.h - the dedup window in the segment: keyed publishes answered once (see dedup.c).
 */
#ifndef SHMQ_DEDUP_H
#define SHMQ_DEDUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h" /* DEDUP_WAYS, DEDUP_BUCKET_SIZE */

struct dedup_bucket {
    _Atomic uint64_t word;    /* state | owner << 2 | gen << 14 | fingerprint high 40 bits << 24 */
    _Atomic uint64_t fp_lo;   /* fingerprint low 64 bits (written before COMMITTED) */
    _Atomic uint64_t id;      /* the message's id */
    _Atomic uint64_t time_ms; /* queue ms when claimed, then when committed */
    _Atomic uint64_t token;   /* the slot and RESERVED word of the publish (slot.h token) */
    _Atomic uint64_t claimer; /* the claimer's registry word when it claimed (0: not yet known) */
    uint64_t reserved[2];
};
_Static_assert(sizeof(struct dedup_bucket) == DEDUP_BUCKET_SIZE, "one cache line per bucket");

struct shmq;
struct slot;

/* A RESERVED slot: is it a keyed publish that was decided (its bucket COMMITTED and naming this
 * reservation)? Then maintenance commits it, whether its publisher lives or not: after D1 the
 * publisher writes nothing into the slot. owner_dead: also forget an undecided claim that
 * already names this reservation (a claim that died before naming it is taken over by the next
 * publish of its key, or by any claim in its set: its claimer's registry word changed). */
bool dedup_should_roll_forward(struct shmq *q, uint32_t idx, struct slot *sl, uint64_t w,
                               bool owner_dead);

/*
 * For publish.c, a keyed publish: look key (1..SHMQ_DEDUP_KEY_MAX bytes; the queue has a window)
 * up in the window and, unless it is there, claim a bucket for it. Returns
 *   DEDUP_DUPLICATE and *id: the key's message was published (a dedup hit, counted);
 *   0 and *bucket, *bucket_word: claimed; publish under it, then dedup_commit() or
 *     dedup_abandon();
 *   -EINPROGRESS: a publish of the key is under way (or the set is all live claims).
 */
#define DEDUP_DUPLICATE 1
int dedup_claim(struct shmq *q, const void *key, size_t key_len, uint64_t now_ms, uint64_t *bucket,
                uint64_t *bucket_word, uint64_t *id);

/* Record the message of a claimed bucket and decide it (D1); -ESTALE if the claim was taken
 * over. dedup_abandon gives a claim back undecided. now_ms (both calls): the queue's clock
 * (queue_ms_at()) as the publish read it, once. */
int dedup_commit(struct shmq *q, uint64_t bucket, uint64_t bucket_word, uint64_t msg_id,
                 uint64_t token, uint64_t now_ms);
void dedup_abandon(struct shmq *q, uint64_t bucket, uint64_t bucket_word);

/* Rebuild: remember key -> id as committed now (recovery, single-threaded). */
struct segment;
void dedup_insert_committed(struct segment *s, const void *key, uint32_t key_len, uint64_t id,
                            uint64_t now_ms);

#endif
