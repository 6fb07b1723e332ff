/*
 * ckring.c - concurrencykit's ck_ring in a MAP_SHARED segment (struct and buffer both in the
 * mapping), bare index passing. Variants: mpmc (ck_ring_enqueue_mpmc / ck_ring_dequeue_mpmc,
 * any shape) and spsc (1P/1C only). See ring.h for the modes.
 */
#include "common.h"

#include <ck_ring.h>

#define RING_NAME "ck_ring"
#define VARIANTS "mpmc|spsc"

struct shared_ck {
    ck_ring_t ring;
    ck_ring_buffer_t buf[];
};

static int ck_mpmc = 1;

static void *ring_setup(const char *v, unsigned capacity);

static inline int ring_put(void *r, uint64_t v)
{
    struct shared_ck *s = r;
    void *p = (void *)(uintptr_t)v;
    return ck_mpmc ? ck_ring_enqueue_mpmc(&s->ring, s->buf, p)
                   : ck_ring_enqueue_spsc(&s->ring, s->buf, p);
}

static inline int ring_get(void *r, uint64_t *v)
{
    struct shared_ck *s = r;
    void *p;
    bool ok = ck_mpmc ? ck_ring_dequeue_mpmc(&s->ring, s->buf, &p)
                      : ck_ring_dequeue_spsc(&s->ring, s->buf, &p);
    if (ok)
        *v = (uint64_t)(uintptr_t)p;
    return ok;
}

#include "ring.h"

static void *ring_setup(const char *v, unsigned capacity)
{
    if (!v)
        variant = v = "mpmc";
    if (!strcmp(v, "spsc"))
        ck_mpmc = 0;
    else if (strcmp(v, "mpmc")) {
        fprintf(stderr, "ck_ring: variant mpmc or spsc\n");
        return NULL;
    }
    size_t bytes = sizeof(struct shared_ck) + capacity * sizeof(ck_ring_buffer_t);
    struct shared_ck *s =
        mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        return NULL;
    ck_ring_init(&s->ring, capacity);
    return s;
}
