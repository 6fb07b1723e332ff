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
 *
 * The log (docs/DESIGN.md, "The log with groups"): every GROUP record is appended under the
 * lock. Create: FREE -> CREATING (fields complete), since_pos, the record, -> ACTIVE, the bit;
 * a creator killed after CREATING is rolled forward by the next lock taker (the record again).
 * Delete: -> DELETING, the bit off, the record; an entry goes DELETING -> FREE only after a
 * delete record of it was appended (the deleter's, or one appended under the lock by the
 * maintenance pass that frees it), so the log never outlives a group the segment lost, and a
 * later group of the index is never followed by an earlier one's delete record.
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crashpoint.h"
#include "gcell.h"
#include "groups.h"
#include "nocancel.h"
#include "registry.h"
#include "slotmove.h"
#include "wait.h"

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

/* Under the lock: append the GROUP record (kind WAL_GROUP_*) of entry g as word w names it; the
 * entry's wal_seq pins the record's file (retention, groups_keep). 0 without a log. */
static int log_group(shmq_t *q, uint32_t g, uint64_t w, unsigned kind)
{
    if (!q->wal)
        return 0;
    struct group_entry *e = segment_group(&q->seg, g);
    struct wal_group r = {.gen = pw_gen(w), .policy = e->policy, .bound = e->bound,
                          .first_id = e->first_id, .since_pos = e->since_pos};
    _Static_assert(sizeof(r.name) == sizeof(e->name), "a name fills the record's field");
    memcpy(r.name, e->name, sizeof(r.name));
    /* a lower bound of the file the record lands in (as a publish's wal_seq), read by
     * maintenance under the lock or as a hint; lowered only: the entry's latest record (a copy's
     * original) stays pinned until this append returned. Raising it here let a pass delete that
     * file while a copier was stopped or killed before its append, or its append failed (-EIDRM
     * of a live segment loss): a rebuild then had no record of the group and lost it */
    wal_pin_lower(&e->wal_seq, wal_current_seq(q->wal));
    if (kind & WAL_GROUP_COPY)
        CRASH_POINT(group_copy_before_append);
    uint32_t seq = 0;
    int err = wal_append(q->wal, WAL_GROUP, g, kind, &r, sizeof(r), &seq);
    if (!err) /* relaxed: our record is in file seq, so the older ones may go */
        atomic_store_explicit(&e->wal_seq, seq + 1, memory_order_relaxed);
    return err;
}

/* Under the lock: a creator killed after CREATING is rolled forward (its record appended
 * again: the log may or may not hold it; the latest record of an index decides). An append
 * that fails leaves it CREATING for the next lock taker. */
static void finish_creates(shmq_t *q)
{
    for (uint32_t g = 1; g < q->seg.layout.max_groups; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        uint64_t w = atomic_load(&e->word);
        if (pw_state(w) == GROUP_CREATING && log_group(q, g, w, WAL_GROUP_CREATE) == 0)
            atomic_compare_exchange_strong(&e->word, &w, pw_next(w, GROUP_ACTIVE));
    }
}

/* Under the lock: the mask says exactly which entries are ACTIVE. */
static void repair_mask(shmq_t *q)
{
    finish_creates(q);
    uint64_t want = 0;
    for (uint32_t g = 0; g < q->seg.layout.max_groups; g++)
        if (pw_state(atomic_load(&segment_group(&q->seg, g)->word)) == GROUP_ACTIVE)
            want |= 1ull << g;
    _Atomic uint64_t *mask = &q->seg.hdr->groups_mask;
    uint64_t have = atomic_load(mask);
    if (have & ~want) /* seq_cst, as delete's: the sweep of a group that lost its bit follows */
        atomic_fetch_and(mask, want);
    for (uint32_t g = 1; g < q->seg.layout.max_groups; g++)
        if ((want & ~have) >> g & 1) /* as create's: it reads from the next position filled */
            fan_cursor_start(&q->seg.fan, g);
    if (want & ~have) /* release, as create's */
        atomic_fetch_or_explicit(mask, want & ~have, memory_order_release);
}

/* wait_ms 0: one try (maintenance: busy, the next pass). */
static int lock_groups_within(shmq_t *q, int wait_ms)
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
        if (waited >= wait_ms)
            return -EBUSY;
        NOCANCEL(nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL));
    }
}

static int lock_groups(shmq_t *q) { return lock_groups_within(q, LOCK_WAIT_MS); }

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

/* For create and delete: the lock taken (-EIDRM when the queue was rebuilt, or lock_groups'
 * error: not taken), then *g the ACTIVE group named name (its word in *w) or -ENOENT. */
static int lock_and_find(shmq_t *q, const char *name, int *g, uint64_t *w)
{
    if (!queue_gen_live(q))
        return -EIDRM;
    int err = lock_groups(q);
    if (!err)
        *g = find(q, name, GROUP_ACTIVE, w);
    return err;
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
    int found;
    uint64_t w;
    int err = lock_and_find(q, name, &found, &w);
    if (err)
        return err;
    if (found >= 0) {
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
        /* rule R-G: read before our record and our fetch_or, so every publish that sees our bit
         * logs above it (docs/DESIGN.md, "The log with groups"); the log's position now */
        e->since_pos = q->wal ? wal_sync_from(q->wal) : 0;
        atomic_store_explicit(&e->overrun, 0, memory_order_relaxed);
        atomic_store_explicit(&e->held, 0, memory_order_relaxed);
        for (int i = 0; i < CNT__COUNT; i++)
            atomic_store_explicit(&e->retired[i], 0, memory_order_relaxed);
        /* release: the fields above to whoever sees the entry CREATING, ACTIVE (consumer
         * open, list) or rolls it forward (finish_creates) */
        uint64_t creating = pw_next(w, GROUP_CREATING);
        if (!atomic_compare_exchange_strong_explicit(&e->word, &w, creating, memory_order_release,
                                                     memory_order_relaxed))
            continue; /* never while we hold the lock */
        CRASH_POINT(group_create_before_record);
        /* the record before the group exists in shm: no publish names it before the log does */
        err = log_group(q, g, creating, WAL_GROUP_CREATE);
        if (err) { /* nothing published saw it: the entry goes back */
            atomic_compare_exchange_strong(&e->word, &creating, pw_next(creating, GROUP_FREE));
            break;
        }
        CRASH_POINT(group_create_after_record);
        /* seq_cst, as every other change of the word */
        if (!atomic_compare_exchange_strong(&e->word, &creating, pw_next(creating, GROUP_ACTIVE)))
            continue; /* never while we hold the lock */
        CRASH_POINT(group_create_before_mask);
        /* the group reads the fan-out ring from the next position filled (docs/DESIGN.md, "The
         * fan-out ring"); published by the fetch_or below */
        fan_cursor_start(&q->seg.fan, g);
        /* release: pairs with a publisher's F1 (acquire): it sees the entry complete (and its
         * cursor: the publisher's fill reads fan_head after this) */
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
        case SLOT_RESERVED:
            if (cell_pending(q, i, w)) { /* committed, waiting in the fan-out ring: as READY */
                cell_finish(q, g, i, w);
                if (sw_state(atomic_load(&c->state)) == SLOT_FREE)
                    break;
            }
            clean = false; /* a publish under way: its F3b gives it back, or it commits it */
            break;
        default: clean = false; /* INFLIGHT, FENCED: later */
        }
    }
    return clean;
}

int shmq_group_delete(shmq_t *q, const char *name)
{
    if (!q || check_name(name) != 0)
        return -EINVAL;
    int g;
    uint64_t w;
    int err = lock_and_find(q, name, &g, &w);
    if (err)
        return err;
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
    CRASH_POINT(group_delete_before_wake); /* its sleepers: woken by maintenance instead */
    /* its consumers asleep in receive see the entry DELETING (group_gone: -ENOENT) now, not
     * after their max_sleep: no ring enqueue tells them */
    wait_wake_all(group_ready_futex(q, (uint32_t)g));
    CRASH_POINT(group_delete_after_mask);
    /* under the lock: no create of this index can come between (the entry is not FREE) */
    err = log_group(q, (uint32_t)g, deleting, WAL_GROUP_DELETE);
    unlock_groups(q);
    /* the entry goes FREE only after a delete record of it (else maintenance logs one first) */
    if (groups_sweep(q, (uint32_t)g) && err == 0)
        atomic_compare_exchange_strong(&e->word, &deleting, pw_next(deleting, GROUP_FREE));
    return err == -EIDRM ? err : 0; /* other log errors: deleted here, logged by maintenance */
}

void groups_maintain(shmq_t *q)
{
    for (uint32_t g = 1; g < q->seg.layout.max_groups; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        uint64_t w = atomic_load(&e->word);
        bool bit = atomic_load(&q->seg.hdr->groups_mask) >> g & 1;
        /* a dead creator's entry: CREATING, or ACTIVE without its bit (killed before its
         * fetch_or); a live one holds the lock, so the try fails */
        if ((pw_state(w) == GROUP_CREATING || (pw_state(w) == GROUP_ACTIVE && !bit)) &&
            lock_groups_within(q, 0) == 0) {
            unlock_groups(q); /* rolled forward, the mask repaired (repair_mask) */
            continue;
        }
        if (pw_state(w) != GROUP_DELETING)
            continue;
        if (atomic_load(&q->seg.hdr->groups_mask) >> g & 1)
            continue; /* its deleter was killed before the mask: the next lock taker fixes it */
        /* a deleter killed between the mask and its wake left the group's consumers asleep in
         * receive until their max_sleep: woken here (they see DELETING: -ENOENT). seq_cst
         * load: only when some sleep, so a pass costs no system call for a deleted group */
        if (atomic_load(group_ready_waiters(q, g)) != 0)
            wait_wake_all(group_ready_futex(q, g));
        if (!groups_sweep(q, g) || lock_groups_within(q, 0) != 0)
            continue; /* not clean yet, or the lock is busy: the next pass */
        /* under the lock, the entry still the one we swept: its delete record, then FREE */
        if (atomic_load(&e->word) == w && log_group(q, g, w, WAL_GROUP_DELETE) == 0)
            atomic_compare_exchange_strong(&e->word, &w, pw_next(w, GROUP_FREE));
        unlock_groups(q);
    }
}

uint64_t groups_keep(shmq_t *q, uint64_t cur, uint64_t lag)
{
    uint64_t low = UINT64_MAX;
    bool locked = false;
    for (uint32_t g = 1; q->wal && g < q->seg.layout.max_groups; g++) {
        struct group_entry *e = segment_group(&q->seg, g);
        uint64_t w = atomic_load(&e->word);
        unsigned st = pw_state(w);
        if (st == GROUP_FREE)
            continue;
        uint32_t ws = atomic_load_explicit(&e->wal_seq, memory_order_relaxed);
        if ((st == GROUP_ACTIVE || st == GROUP_DELETING) && ws && ws - 1 + lag <= cur &&
            (locked || (locked = lock_groups_within(q, 0) == 0)) && atomic_load(&e->word) == w)
            log_group(q, g, w, (st == GROUP_ACTIVE ? WAL_GROUP_CREATE : WAL_GROUP_DELETE) |
                                   WAL_GROUP_COPY); /* a failure: the old file stays pinned */
        /* 0: no record yet (a creator under way stores a lower bound before it reserves, so
         * its record lands at or after cur, read before: never deleted, as a publish's) */
        ws = atomic_load_explicit(&e->wal_seq, memory_order_relaxed);
        if (ws && ws - 1 < low)
            low = ws - 1;
    }
    if (locked)
        unlock_groups(q);
    return low;
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
