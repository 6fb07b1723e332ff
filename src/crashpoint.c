/*
 * crashpoint.c - test-build hook behind CRASH_POINT() (see crashpoint.h).
 */
#include "crashpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nocancel.h"

const char *const crashpoint_names[] = {
    "publish_after_reserve",   /* free slot claimed (RESERVED), payload not written */
    "publish_after_write",     /* payload written, still RESERVED */
    "publish_after_log",       /* PUBLISH record in the log, slot still RESERVED */
    "dedup_before_decide",     /* keyed publish: message written, bucket still CLAIMED */
    "dedup_after_decide",      /* keyed publish: bucket COMMITTED, slot still RESERVED */
    "publish_after_commit",    /* READY, not yet in the ready ring */
    "publish_after_enqueue",   /* in the ready ring, ticket not yet recorded */
    "receive_after_dequeue",   /* index taken off the ready ring, slot not yet claimed */
    "receive_after_claim",     /* INFLIGHT, deadline not yet written */
    "ack_after_free",          /* FREE, not yet in the free ring */
    "nack_before_move",        /* nack: its due time stored (tagged gen + 1), still INFLIGHT */
    "nack_after_requeue",      /* READY again, not yet in the ready ring */
    "maintain_after_fence",    /* reclaim: slot taken from its owner, not yet re-enqueued */
    "attach_after_claim",      /* registry entry CLAIMED (names our pid), fields not written */
    "recover_after_bump",      /* recovery: head.gen bumped (E3), nothing read or built */
    "recover_before_complete", /* recovery: new generation re-logged, not marked complete */
    "recover_after_complete",  /* recovery: generation complete, segment not yet published */
    NULL,
};

#ifdef SHMQ_CRASH_POINTS
/* Two pens: two threads of a process can wait at once (each at its own point). Pen 0 is the one
 * crashpoint_park_at() and its companions use. */
#define PENS 2
static _Atomic(const char *) park_name[PENS]; /* the next thread to pass it parks there */
static _Atomic int park_state[PENS];          /* 0 nobody, 1 parked, 2 released */

void crashpoint_park_at_pen(int pen, const char *name)
{
    atomic_store(&park_state[pen], 0);
    atomic_store(&park_name[pen], name);
}

bool crashpoint_parked_pen(int pen)
{
    return atomic_load(&park_state[pen]) == 1;
}

void crashpoint_unpark_pen(int pen)
{
    atomic_store(&park_state[pen], 2);
}

void crashpoint_park_at(const char *name) { crashpoint_park_at_pen(0, name); }

bool crashpoint_parked(void) { return crashpoint_parked_pen(0); }

void crashpoint_unpark(void) { crashpoint_unpark_pen(0); }

static _Atomic bool park_cancellable;

void crashpoint_park_cancellable(bool on)
{
    atomic_store(&park_cancellable, on);
}

/* The one thread that claims the name waits, polling, until released: the others go on. The wait
 * stands for the thread pausing where it is (a stop, a slow call), not for a call: it is no
 * cancellation point (nocancel.h), so a cancellation requested meanwhile acts where the code
 * itself would act on it; unless a test made it one (crashpoint_park_cancellable). */
static void park(const char *name)
{
    int pen = 0;
    for (const char *p;; pen++) {
        if (pen == PENS)
            return;
        p = atomic_load(&park_name[pen]);
        if (p && strcmp(p, name) == 0 && atomic_compare_exchange_strong(&park_name[pen], &p, NULL))
            break;
    }
    atomic_store(&park_state[pen], 1);
    while (atomic_load(&park_state[pen]) == 1) {
        struct timespec ts = {0, 1000000};
        if (atomic_load(&park_cancellable))
            nanosleep(&ts, NULL);
        else
            NOCANCEL(nanosleep(&ts, NULL));
    }
}

void crashpoint_hit(const char *name)
{
    park(name);
    static _Atomic int skip = -1;
    static const char *target;
    static _Atomic pid_t reader; /* the process that read the environment: a forked child reads
                                  * it again (its parent may have read "no target" before the
                                  * fork, and the child set its own SHMQ_CRASH_AT after it) */
    if (atomic_load_explicit(&skip, memory_order_acquire) == -1 ||
        atomic_load_explicit(&reader, memory_order_relaxed) != getpid()) {
        atomic_store_explicit(&reader, getpid(), memory_order_relaxed);
        const char *s = getenv("SHMQ_CRASH_SKIP");
        target = getenv("SHMQ_CRASH_AT");
        atomic_store_explicit(&skip, s ? atoi(s) : 0, memory_order_release);
    }
    if (!target || strcmp(target, name) != 0)
        return;
    if (atomic_fetch_sub(&skip, 1) > 0)
        return;
    const char *sig = getenv("SHMQ_CRASH_SIGNAL");
    atomic_store(&skip, 1 << 30); /* a stopped process that is continued stops only once */
    raise(sig && strcmp(sig, "STOP") == 0 ? SIGSTOP : SIGKILL);
}
#endif
