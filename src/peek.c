/*
 * peek.c - browse the ready messages without taking them (shmq_peek).
 *
 * A read-only scan: for each slot READY as word w (acquire load: pairs with P1 or whichever
 * release made it READY, so id, len, attempt and payload are the message's), copy them out, then
 * an acquire fence and a second load of the word. Equal words mean the slot held that message
 * throughout the copy (a word never repeats: every transition adds 1 to gen), as a seqlock
 * reader; else the copy is dropped: the message was received (or purged) and the slot may be
 * in reuse. Nothing is written to the segment, so no consumer or producer can be disturbed.
 * The copy races, by design, with the writes of whoever took the slot meanwhile (a receiver's
 * attempt, a producer's payload): a seqlock reader's race, whose result the re-check throws
 * away (as checkpoint_slot() in maintain.c). TSan reports it, so tests/test_peek.c carries no
 * `threaded` label; its torn-copy test is what checks the re-check.
 *
 * Per group (shmq_peek_group): the same on group g's cells (group 0's cell is the slot): the
 * READY word and the re-check are the cell's, the id, length, payload and headers the slot's.
 * An unchanged cell word means the group held the message throughout, so its slot was not
 * freed or reused meanwhile (V2: a slot is freed only when every group's cell is FREE).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gcell.h"
#include "hdrblock.h"
#include "groups.h"
#include "queue.h"
#include "slot.h"

struct seen {
    uint64_t id;
    uint32_t idx;
};

static int by_id(const void *a, const void *b)
{
    const struct seen *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Copy slot idx into *m and buf if group g's cell of it is still the READY message id: true if
 * it was. The payload first, then, if it was copied whole and the rest of buf holds it, its
 * header block (checked when the copy is known untorn, after the re-check). */
static bool copy_ready(shmq_t *q, uint32_t g, uint32_t idx, uint64_t id, shmq_peek_msg_t *m,
                       shmq_peek_headers_t *mh, char *buf, size_t room, uint64_t now)
{
    struct slot *sl = segment_slot(&q->seg, idx), *cl = segment_cell(&q->seg, g, idx);
    /* acquire: pairs with the release that made the cell READY (P1 or F4 after it, a nack...) */
    uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
    if (!cell_ready(q, g, idx, w) || sl->id != id)
        return false;
    if (now >= slot_expire(sl))
        return false; /* past its expiry: no receive would deliver it (expire.h) */
    size_t len = sl->len;
    if (len > q->seg.layout.max_msg_size)
        return false; /* a corrupted length: never read out of bounds */
    m->id = id;
    m->attempt = cl->attempt;
    m->len = len;
    m->copied = len < room ? len : room;
    m->data = buf;
    if (m->copied)
        memcpy(buf, slot_payload(sl), m->copied);
    const struct slot_hdrs *sh = mh ? slot_headers(&q->seg, sl) : NULL;
    uint32_t hl = slot_headers_len(&q->seg, sh);
    shmq_peek_headers_t got = {NULL, 0};
    if (hl && m->copied == len && room - len >= hl) {
        memcpy(buf + len, sh->bytes, hl);
        got = (shmq_peek_headers_t){buf + len, hl};
    }
    atomic_thread_fence(memory_order_acquire); /* the reads above happen before the re-check */
    if (atomic_load_explicit(&cl->state, memory_order_relaxed) != w)
        return false;
    size_t nh;
    if (got.block && hdrs_decode(got.block, got.len, NULL, 0, &nh) != 0)
        got = (shmq_peek_headers_t){NULL, 0}; /* untorn yet malformed: a corrupt slot */
    if (mh)
        *mh = got;
    return true;
}

int shmq_peek(shmq_t *q, shmq_peek_msg_t *out, size_t max, void *buf, size_t buf_size, size_t *n)
{
    return shmq_peek_headers(q, out, NULL, max, buf, buf_size, n);
}

int shmq_peek_headers(shmq_t *q, shmq_peek_msg_t *out, shmq_peek_headers_t *hdrs, size_t max,
                      void *buf, size_t buf_size, size_t *n)
{
    return shmq_peek_group(q, NULL, out, hdrs, max, buf, buf_size, n);
}

int shmq_peek_group(shmq_t *q, const char *group, shmq_peek_msg_t *out,
                    shmq_peek_headers_t *hdrs, size_t max, void *buf, size_t buf_size, size_t *n)
{
    uint32_t g;
    if (!q || !n || (!out && max) || (!buf && buf_size))
        return -EINVAL;
    *n = 0;
    int err = groups_find(q, group, &g, NULL);
    if (err)
        return err;
    uint32_t cap = q->seg.layout.capacity, k = 0;
    struct seen *v = malloc((cap ? cap : 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t i = 0; i < cap; i++) { /* which slots are ready, by id */
        struct slot *sl = segment_slot(&q->seg, i), *cl = segment_cell(&q->seg, g, i);
        /* acquire: the id read next is the READY (or pending) word's message (re-checked when
         * copied) */
        if (cell_ready(q, g, i, atomic_load_explicit(&cl->state, memory_order_acquire)))
            v[k++] = (struct seen){sl->id, i};
    }
    qsort(v, k, sizeof(*v), by_id);
    size_t used = 0;
    uint64_t now = now_ns_coarse(); /* the clock a receive judges expiry by */
    for (uint32_t j = 0; j < k && *n < max; j++) {
        shmq_peek_msg_t *m = &out[*n];
        char *dst = buf ? (char *)buf + used : NULL;
        shmq_peek_headers_t *mh = hdrs ? &hdrs[*n] : NULL;
        if (copy_ready(q, g, v[j].idx, v[j].id, m, mh, dst, buf_size - used, now)) {
            used += m->copied + (mh ? mh->len : 0);
            (*n)++;
        }
    }
    free(v);
    return 0;
}
