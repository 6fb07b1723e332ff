/*
 * groups.c - a queue's consumer groups: create, delete, list, and the sweep that releases what
 * a deleted group held (docs/DESIGN.md, "Consumer groups").
 *
 * The table's entries (layout.h, struct group_entry) go FREE -> ACTIVE -> DELETING -> FREE;
 * every change is a CAS that bumps the word's gen, so a consumer that opened in a group sees
 * any change (its receive returns -ENOENT). Create and delete, which are rare, run under
 * `groups_lock` (a pid in the header, taken over from a dead holder): two creates of one name
 * cannot both succeed, and the mask of ACTIVE groups (`groups_mask`) is made to match the
 * entries whenever the lock is taken (a holder killed between its entry CAS and its mask update
 * leaves them apart until then). Publishers read the mask without the lock (F1) and give back
 * what they prepared for a group deleted meanwhile (F3b, publish.c); the sweep and F3b are a
 * Dekker pair, so a group's entry is freed only once no cell of it holds a message and no
 * producer can still prepare one (a producer that read the old mask either left its RESERVED
 * cell for the sweep to see, or sees the bit gone).
 *
 * Group 0 ("default") is made at create and is not deleted in this version: its state is the
 * slot word itself, which a producer holds RESERVED before it reads the mask, so its sweep
 * would need every reservation to end (DESIGN, status).
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gcell.h"
#include "groups.h"
#include "nocancel.h"
#include "registry.h"
#include "slotmove.h"

#define LOCK_WAIT_MS 10000 /* a live holder this long: -EBUSY */

static int check_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > SHMQ_GROUP_NAME_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return -EINVAL;
    }
    return 0;
}

/* Under the lock: the mask says exactly which entries are ACTIVE. */
static void repair_mask(shmq_t *q)
{
    uint64_t want = 0;
    for (uint32_t g = 0; g < q->seg.layout.max_groups; g++)
        if (pw_state(atomic_load(&segment_group(&q->seg, g)->word)) == GROUP_ACTIVE)
            want |= 1ull << g;
    _Atomic uint64_t *mask = &q->seg.hdr->groups_mask;
    uint64_t have = atomic_load(mask);
    if (have & ~want) /* seq_cst, as delete's: the sweep of a group that lost its bit follows */
        atomic_fetch_and(mask, want);
    if (want & ~have) /* release, as create's */
        atomic_fetch_or_explicit(mask, want & ~have, memory_order_release);
}

static int lock_groups(shmq_t *q)
{
    _Atomic uint32_t *lock = &q->seg.hdr->groups_lock;
    uint32_t me = (uint32_t)getpid();
    for (int waited = 0;; waited++) {
        uint32_t v = atomic_load_explicit(lock, memory_order_relaxed);
        /* acquire: the previous holder's changes to the table */
        if ((v == 0 || (v != me && pid_gone((int)v))) &&
            atomic_compare_exchange_strong_explicit(lock, &v, me, memory_order_acquire,
                                                    memory_order_relaxed)) {
            repair_mask(q);
            return 0;
        }
        if (waited >= LOCK_WAIT_MS)
            return -EBUSY;
        NOCANCEL(nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL));
    }
}

static void unlock_groups(shmq_t *q)
{
    /* release: our changes to the table before the next holder's acquire */
    atomic_store_explicit(&q->seg.hdr->groups_lock, 0, memory_order_release);
}

/* The index of the group name whose entry is in state (ACTIVE), or -ENOENT. */
static int find(shmq_t *q, const char *name, unsigned state, uint64_t *word)
{
    for (uint32_t g = 0; g < q->seg.layout.max_groups; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
        if (pw_state(w) == state && strncmp(e->name, name, sizeof(e->name)) == 0) {
            *word = w;
            return (int)g;
        }
    }
    return -ENOENT;
}

int groups_find(shmq_t *q, const char *group, uint32_t *g, uint64_t *word)
{
    for (uint32_t i = 0; i < q->seg.layout.max_groups; i++) {
        const struct group_entry *e = segment_group(&q->seg, i);
        /* acquire: pairs with create's release CAS to ACTIVE (the name is complete) */
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
        if (pw_state(w) != GROUP_ACTIVE)
            continue;
        if (group ? strncmp(e->name, group, sizeof(e->name)) == 0 : i == 0) {
            *g = i;
            if (word)
                *word = w;
            return 0;
        }
    }
    return -ENOENT;
}

int shmq_group_create(shmq_t *q, const char *name, uint32_t policy, uint32_t bound)
{
    if (!q || check_name(name) != 0 || policy > SHMQ_GROUP_OVERRUN ||
        (policy == SHMQ_GROUP_OVERRUN) != (bound > 0))
        return -EINVAL;
    if (!queue_gen_live(q))
        return -EIDRM;
    int err = lock_groups(q);
    if (err)
        return err;
    uint64_t w;
    if (find(q, name, GROUP_ACTIVE, &w) >= 0) {
        unlock_groups(q);
        return -EEXIST;
    }
    err = -ENOSPC;
    for (uint32_t g = 1; g < q->seg.layout.max_groups; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        w = atomic_load_explicit(&e->word, memory_order_acquire);
        if (pw_state(w) != GROUP_FREE)
            continue;
        /* plain: FREE entries are written only under the lock; published by the CAS below */
        memset(e->name, 0, sizeof(e->name));
        memcpy(e->name, name, strlen(name));
        e->policy = policy;
        e->bound = bound;
        e->first_id = atomic_load_explicit(&q->seg.hdr->next_id, memory_order_relaxed) + 1;
        atomic_store_explicit(&e->overrun, 0, memory_order_relaxed);
        atomic_store_explicit(&e->held, 0, memory_order_relaxed);
        for (int i = 0; i < CNT__COUNT; i++)
            atomic_store_explicit(&e->retired[i], 0, memory_order_relaxed);
        /* release: the fields above to whoever sees the group ACTIVE (consumer open, list) */
        if (!atomic_compare_exchange_strong_explicit(&e->word, &w, pw_next(w, GROUP_ACTIVE),
                                                     memory_order_release, memory_order_relaxed))
            continue; /* never while we hold the lock */
        CRASH_POINT(group_create_before_mask);
        /* release: pairs with a publisher's F1 (acquire): it sees the entry complete */
        atomic_fetch_or_explicit(&q->seg.hdr->groups_mask, 1ull << g, memory_order_release);
        err = 0;
        break;
    }
    unlock_groups(q);
    return err;
}

/* Drain ring r: its entries are hints, the cells decide (a sweep finishes them from the cells). */
static void drain(struct ring *r)
{
    uint32_t idx;
    uint64_t ticket, n = 0;
    while (n++ <= r->mask && ring_dequeue(r, &idx, &ticket) == 0) {
    }
}

bool groups_sweep(shmq_t *q, uint32_t g)
{
    if (g == 0 || g >= q->seg.layout.max_groups)
        return false;
    drain(&q->seg.gready[g]);
    drain(&q->seg.gdead[g]);
    bool clean = true;
    for (uint32_t i = 0; i < q->seg.layout.capacity; i++) {
        struct slot *c = segment_cell(&q->seg, g, i);
        /* seq_cst: the sweep's half of the Dekker pair with F3b (after delete's fetch_and) */
        uint64_t w = atomic_load(&c->state);
        switch (sw_state(w)) {
        case SLOT_FREE: break;
        case SLOT_READY:
        case SLOT_DELAYED:
        case SLOT_DEAD:
            cell_finish(q, g, i, w); /* FREE (or FENCED while a reader lingers) */
            if (sw_state(atomic_load(&c->state)) != SLOT_FREE)
                clean = false;
            break;
        default: clean = false; /* RESERVED (a publish under way), INFLIGHT, FENCED: later */
        }
    }
    return clean;
}

int shmq_group_delete(shmq_t *q, const char *name)
{
    if (!q || check_name(name) != 0)
        return -EINVAL;
    if (!queue_gen_live(q))
        return -EIDRM;
    int err = lock_groups(q);
    if (err)
        return err;
    uint64_t w;
    int g = find(q, name, GROUP_ACTIVE, &w);
    if (g <= 0) {
        unlock_groups(q);
        return g == 0 ? -EPERM : g; /* "default" stays (groups.c, top) */
    }
    struct group_entry *e = segment_group(&q->seg, (uint32_t)g);
    uint64_t deleting = pw_next(w, GROUP_DELETING);
    /* seq_cst: the entry DELETING before the bit goes */
    if (!atomic_compare_exchange_strong(&e->word, &w, deleting)) {
        unlock_groups(q);
        return -ENOENT;
    }
    /* seq_cst: the delete's half of the Dekker pair with F3b; its sweep follows */
    atomic_fetch_and(&q->seg.hdr->groups_mask, ~(1ull << g));
    CRASH_POINT(group_delete_after_mask);
    unlock_groups(q);
    if (groups_sweep(q, (uint32_t)g)) /* else maintenance sweeps again (groups_maintain) */
        atomic_compare_exchange_strong(&e->word, &deleting, pw_next(deleting, GROUP_FREE));
    return 0;
}

void groups_maintain(shmq_t *q)
{
    for (uint32_t g = 1; g < q->seg.layout.max_groups; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        uint64_t w = atomic_load(&e->word);
        if (pw_state(w) != GROUP_DELETING)
            continue;
        if (atomic_load(&q->seg.hdr->groups_mask) >> g & 1)
            continue; /* its deleter was killed before the mask: the next lock taker fixes it */
        if (groups_sweep(q, g))
            atomic_compare_exchange_strong(&e->word, &w, pw_next(w, GROUP_FREE));
    }
}

int shmq_group_list(shmq_t *q, shmq_group_info_t *out, size_t max, size_t *n)
{
    if (!q || !n || (!out && max))
        return -EINVAL;
    *n = 0;
    for (uint32_t g = 0; g < q->seg.layout.max_groups && *n < max; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        /* acquire: the fields written before the CAS that made the word; checked again after
         * the copy (a seqlock reader: a group deleted and made again meanwhile is skipped) */
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
        if (pw_state(w) != GROUP_ACTIVE && pw_state(w) != GROUP_DELETING)
            continue;
        shmq_group_info_t *o = &out[*n];
        memset(o, 0, sizeof(*o));
        o->index = g;
        o->policy = e->policy;
        o->bound = e->bound;
        o->deleting = pw_state(w) == GROUP_DELETING;
        o->first_id = e->first_id;
        o->held = atomic_load_explicit(&e->held, memory_order_relaxed);
        o->overrun = atomic_load_explicit(&e->overrun, memory_order_relaxed);
        memcpy(o->name, e->name, SHMQ_GROUP_NAME_MAX);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->word, memory_order_relaxed) == w)
            (*n)++;
    }
    return 0;
}
