/*
 * rtering.c - DPDK's rte_ring in a MAP_SHARED segment (rte_ring_init on the mapping; no EAL
 * needed), bare index passing. Variants: mpmc (the default multi-producer / multi-consumer
 * head/tail ring: a producer that moved the head waits for the earlier producers to move the
 * tail, so a preempted one stalls the rest) and spsc (RING_F_SP_ENQ | RING_F_SC_DEQ, 1P/1C).
 * See ring.h for the modes.
 */
#include "common.h"

#include <rte_ring.h>

#define RING_NAME "rte_ring"
#define VARIANTS "mpmc|spsc"

static void *ring_setup(const char *v, unsigned capacity);

static inline int ring_put(void *r, uint64_t v)
{
    return rte_ring_enqueue(r, (void *)(uintptr_t)v) == 0;
}

static inline int ring_get(void *r, uint64_t *v)
{
    void *p;
    if (rte_ring_dequeue(r, &p) != 0)
        return 0;
    *v = (uint64_t)(uintptr_t)p;
    return 1;
}

#include "ring.h"

static void *ring_setup(const char *v, unsigned capacity)
{
    unsigned flags = 0;
    if (!v)
        variant = v = "mpmc";
    if (!strcmp(v, "spsc"))
        flags = RING_F_SP_ENQ | RING_F_SC_DEQ;
    else if (strcmp(v, "mpmc")) {
        fprintf(stderr, "rte_ring: variant mpmc or spsc\n");
        return NULL;
    }
    ssize_t bytes = rte_ring_get_memsize(capacity);
    if (bytes < 0)
        return NULL;
    struct rte_ring *r =
        mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED)
        return NULL;
    if (rte_ring_init(r, "bench", capacity, flags) != 0) {
        fprintf(stderr, "rte_ring_init failed\n");
        return NULL;
    }
    return r;
}
