/*
 * quiesce.c - per-thread sections and grace periods (the argument is in quiesce.h).
 */
#include "quiesce.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

_Thread_local struct qs_thread *qs_self __attribute__((tls_model("initial-exec")));
bool qs_fence_needed;

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct qs_thread *all; /* every record ever made (under list_lock) */
static pthread_key_t exit_key;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static long membarrier(int cmd)
{
    return syscall(SYS_membarrier, cmd, 0, 0);
}

/*
 * A thread that exits gives its record back, outside any section. It may end inside one:
 * pthread_exit() from a signal handler, or an asynchronous cancellation its caller enabled
 * (deferred cancellation, the default, never acts inside a shmq call: nocancel.h). It uses nothing any more, so it leaves the section here:
 * left odd, the counter would hold back every grace period of the process until a thread takes
 * the record (no evicted mapping unmapped, their fds piling up), and that thread would then read
 * "outside" while inside its sections (its mapping unmapped under it).
 */
static void thread_exit(void *arg)
{
    struct qs_thread *t = arg;
    uint64_t c = atomic_load_explicit(&t->ctr, memory_order_relaxed);
    if (c & 1) /* release: as qs_leave's (what the ended section did happens before a free) */
        atomic_store_explicit(&t->ctr, c + 1, memory_order_release);
    t->depth = 0;
    pthread_mutex_lock(&list_lock);
    t->used = false;
    pthread_mutex_unlock(&list_lock);
    qs_self = NULL; /* a later call of this thread's exit takes a record again */
}

/* fork(): the list lock is held across it, so the child's copy is consistent. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&list_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&list_lock);
}

/* In the child only the forking thread exists: every other record is free and outside (a
 * thread that was inside a section at the fork would otherwise hold back every free). */
static void fork_child(void)
{
    for (struct qs_thread *t = all; t; t = t->next) {
        if (t == qs_self || !t->used)
            continue;
        uint64_t c = atomic_load_explicit(&t->ctr, memory_order_relaxed);
        /* relaxed: the child has one thread */
        atomic_store_explicit(&t->ctr, c + (c & 1), memory_order_relaxed);
        t->depth = 0;
        t->used = false;
    }
    pthread_mutex_unlock(&list_lock);
}

static void init(void)
{
    pthread_key_create(&exit_key, thread_exit);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    long cmds = membarrier(MEMBARRIER_CMD_QUERY);
    qs_fence_needed = cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
                      membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0;
}

struct qs_thread *qs_self_slow(void)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&list_lock);
    struct qs_thread *t = all;
    while (t && t->used)
        t = t->next;
    if (!t && (t = aligned_alloc(64, 64)) != NULL) { /* a line of its own: no false sharing */
        atomic_init(&t->ctr, 0);
        t->next = all;
        all = t;
    }
    if (t) {
        t->used = true;
        t->depth = 0;
    }
    pthread_mutex_unlock(&list_lock);
    if (t) {
        pthread_setspecific(exit_key, t);
        qs_self = t;
    }
    return t;
}

_Static_assert(sizeof(struct qs_thread) <= 64, "a record is one line");

int qs_grace_begin(struct qs_grace **out)
{
    *out = NULL;
    pthread_once(&once, init);
    if (qs_fence_needed)
        atomic_thread_fence(memory_order_seq_cst); /* QE2: pairs with QE1's fence */
    else if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) /* QE2 */
        return -errno;
    pthread_mutex_lock(&list_lock);
    uint32_t n = 0;
    for (struct qs_thread *t = all; t; t = t->next)
        n++;
    struct qs_grace *g = malloc(sizeof(*g) + n * sizeof(g->e[0]));
    if (!g) {
        pthread_mutex_unlock(&list_lock);
        return -ENOMEM;
    }
    g->n = 0;
    for (struct qs_thread *t = all; t; t = t->next) {
        /* acquire: pairs with qs_leave's release (what an ended section did happens before);
         * after QE2's barrier: a section that began before it is seen here (odd) */
        uint64_t c = atomic_load_explicit(&t->ctr, memory_order_acquire);
        if (c & 1) {
            g->e[g->n].t = t;
            g->e[g->n].ctr = c;
            g->n++;
        }
    }
    pthread_mutex_unlock(&list_lock);
    if (g->n == 0)
        free(g);
    else
        *out = g;
    return 0;
}

bool qs_grace_over(const struct qs_grace *g)
{
    for (uint32_t i = 0; g && i < g->n; i++)
        /* acquire: as in qs_grace_begin (the section's uses happen before the free) */
        if (atomic_load_explicit(&g->e[i].t->ctr, memory_order_acquire) == g->e[i].ctr)
            return false;
    return true;
}
