/*
 * inspect.c - the inspection layer (inspect/inspect.h): the segment and the log read from
 * outside, validated, into plain structs.
 *
 * The only file that knows both the bytes (layout.h, slot.h, ring.h, registry.h, wal.h) and
 * what the tools show; a format change lands here. Sections: the SIGBUS guard; names and
 * places; the segment (open and geometry, snapshot, rings, slots); the log (files, records,
 * judging, recovery's prediction).
 *
 * The rule of every reader here: a read of shm or of a log file is steered only by the
 * validated private layout (struct segment.layout, checked once more by check_geometry()) or by
 * the size of the mapping; a value read from the bytes is range-checked before it steers
 * anything. Reads of a mapping run inside guarded() and only load and compute: no system call,
 * no allocation that a fault could interrupt half-way (the realloc() in log_record() runs
 * between reads, never during one). Everything that needs the system (liveness, formatting the
 * notes) happens after, on the copies.
 */
#include "inspect.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "io.h"
#include "layout.h"
#include "loghead.h"
#include "registry.h"
#include "ring.h"
#include "segment.h"
#include "settings.h"
#include "slot.h"
#include "stats.h"
#include "wal.h"
#include "walgroups.h"
#include "walscan.h"

/* ------------------------------------------------------------------ the SIGBUS guard */

/*
 * A file truncated under a mapping makes the next access to a page past its end fault with
 * SIGBUS. guarded(fn, arg, lo, len) runs fn with a SIGBUS handler that jumps back out when the
 * fault is its own, and then returns -EFAULT:
 *   - its own: a fault the kernel raised (si_code > 0, not kill() or sigqueue()), on the thread
 *     that runs the guarded read, at an address inside [lo, lo + len) (the mapping being read;
 *     any address when len is 0, while the mapping is being made).
 *   - anything else is handed to the handler that was there before (or, if that was the
 *     default or "ignore", the signal is re-raised with the default action: a fault elsewhere
 *     in the program still ends it as it would have without us).
 * The handler is installed only for the duration of the read and the previous one restored
 * after; a mutex serialises guarded reads, so that threads do not install and restore over
 * each other. A program that changes SIGBUS's disposition from another thread during a read is
 * not supported (tools are single-threaded). fn may not call guarded() (the mutex is not
 * recursive); what it writes through arg before a fault stays written.
 */
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static sigjmp_buf guard_jump;
static struct sigaction guard_prev;
static _Atomic long guard_tid; /* the thread in a guarded read, 0 if none */
static uintptr_t guard_lo, guard_hi;

static long this_thread(void) { return (long)syscall(SYS_gettid); } /* async-signal-safe */

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    uintptr_t addr = (uintptr_t)si->si_addr;
    /* relaxed: set by this very thread before the access that faulted, if it is ours */
    if (si->si_code > 0 &&
        atomic_load_explicit(&guard_tid, memory_order_relaxed) == this_thread() &&
        (guard_lo == guard_hi || (addr >= guard_lo && addr < guard_hi)))
        siglongjmp(guard_jump, 1);
    if (guard_prev.sa_flags & SA_SIGINFO) {
        guard_prev.sa_sigaction(sig, si, ctx);
        return;
    }
    if (guard_prev.sa_handler != SIG_DFL && guard_prev.sa_handler != SIG_IGN) {
        guard_prev.sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig); /* blocked in here: delivered, with the default action, when we return */
}

/* Run fn(arg) with the mapping [lo, lo + len) guarded: fn's return value, or -EFAULT. */
static int guarded(int (*fn)(void *), void *arg, const void *lo, size_t len)
{
    volatile int rc = -EFAULT;
    pthread_mutex_lock(&guard_lock);
    struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &guard_prev) != 0) {
        rc = -errno;
        pthread_mutex_unlock(&guard_lock);
        return rc;
    }
    guard_lo = (uintptr_t)lo;
    guard_hi = (uintptr_t)lo + len;
    if (sigsetjmp(guard_jump, 1) == 0) {
        atomic_store_explicit(&guard_tid, this_thread(), memory_order_relaxed);
        rc = fn(arg);
    }
    atomic_store_explicit(&guard_tid, 0, memory_order_relaxed);
    sigaction(SIGBUS, &guard_prev, NULL);
    pthread_mutex_unlock(&guard_lock);
    return rc;
}

const char *inspect_strerror(int err)
{
    if (err == INSPECT_ENOTREG)
        return "not a regular file, so not a shmq segment";
    if (err == -EFAULT)
        return "segment truncated while it was read (SIGBUS)";
    return shmq_strerror(err);
}

/* ------------------------------------------------------------------ notes */

static void note(struct inspect_notes *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(struct inspect_notes *n, const char *fmt, ...)
{
    if (!n)
        return;
    if (n->count < INSPECT_NOTES_KEPT) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(n->text[n->count], INSPECT_NOTE_TEXT, fmt, ap);
        va_end(ap);
    }
    n->count++;
}

/* ------------------------------------------------------------------ names and places */

const char inspect_segment_dir[] = "/dev/shm"; /* where shm_open() keeps its files on Linux */

int inspect_name_check(const char *name) { return segment_check_name(name); }

int inspect_segment_path(const char *name, char *buf, size_t size)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    if (err)
        return err;
    if ((size_t)snprintf(buf, size, "%s%s", inspect_segment_dir, shm_name) >= size)
        return -EINVAL;
    return 0;
}

void inspect_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* io_dir_each() callback of inspect_queue_names(): keep "shmq.NAME" entries with a valid NAME. */
struct name_list {
    const char *prefix;
    size_t plen;
    char **names;
    size_t n, cap;
};

static int add_queue_name(void *arg, int dirfd, const char *entry)
{
    struct name_list *nl = arg;
    if (strncmp(entry, nl->prefix, nl->plen) != 0)
        return 0;
    const char *name = entry + nl->plen;
    if (segment_check_name(name) != 0)
        return 0; /* not a name shmq_open() would accept */
    if (nl->n == nl->cap) {
        size_t ncap = nl->cap ? 2 * nl->cap : 16;
        char **a = realloc(nl->names, ncap * sizeof(*a));
        if (!a)
            return -ENOMEM;
        nl->names = a;
        nl->cap = ncap;
    }
    if (!(nl->names[nl->n] = strdup(name)))
        return -ENOMEM;
    nl->n++;
    return 0;
}

int inspect_queue_names(char ***out, size_t *n)
{
    char prefix[16];
    /* the shm name of a queue is "/shmq.NAME": its file in the directory is "shmq.NAME" */
    if (segment_shm_name("x", prefix, sizeof(prefix)) != 0)
        return -EINVAL;
    size_t plen = strlen(prefix) - 2; /* without the leading '/' and the trailing "x" */
    memmove(prefix, prefix + 1, plen);
    prefix[plen] = '\0';

    struct name_list nl = {.prefix = prefix, .plen = plen};
    int err = io_dir_each(inspect_segment_dir, add_queue_name, &nl);
    char **names = nl.names;
    size_t k = nl.n;
    if (err) {
        inspect_names_free(names, k);
        return err;
    }
    if (k > 1)
        qsort(names, k, sizeof(*names), by_name);
    *out = names;
    *n = k;
    return 0;
}

int inspect_logged_names(char ***out, size_t *n)
{
    char state[SHMQ_LOG_DIR_MAX + 64], dir[SHMQ_LOG_DIR_MAX + 64];
    int err = logdir_state(state, sizeof(state));
    if (err)
        return err;
    struct name_list nl = {.prefix = "", .plen = 0};
    err = io_dir_each(state, add_queue_name, &nl);
    if (err == -ENOENT)
        err = 0; /* no state directory yet: no log there */
    size_t k = 0;
    for (size_t i = 0; i < nl.n; i++) { /* keep the entries that hold (or link to) a log */
        if (!err && logdir_find(nl.names[i], NULL, dir, sizeof(dir)) == 0 && logdir_has_log(dir))
            nl.names[k++] = nl.names[i];
        else
            free(nl.names[i]);
    }
    if (err) {
        free(nl.names);
        return err;
    }
    if (k > 1)
        qsort(nl.names, k, sizeof(*nl.names), by_name);
    *out = nl.names;
    *n = k;
    return 0;
}

/* ------------------------------------------------------------------ words shown by name */

/* enum inspect_counter in the order of enum counter (layout.h), with their names. */
static const struct {
    enum counter cnt;
    const char *name;
} counter_map[INSPECT_COUNTERS] = {
    [INSPECT_PUBLISHED] = {CNT_PUBLISHED, "published"},
    [INSPECT_DELIVERED] = {CNT_DELIVERED, "delivered"},
    [INSPECT_ACKED] = {CNT_ACKED, "acked"},
    [INSPECT_NACKED] = {CNT_NACKED, "nacked"},
    [INSPECT_REDELIVERED] = {CNT_REDELIVERED, "redelivered"},
    [INSPECT_DEAD_LETTERED] = {CNT_DEAD_LETTERED, "dead_lettered"},
    [INSPECT_RECLAIMED] = {CNT_RECLAIMED, "reclaimed"},
    [INSPECT_DEDUP_HITS] = {CNT_DEDUP_HITS, "dedup_hits"},
};
/* a counter added to enum counter must be added to enum inspect_counter and named above */
_Static_assert((int)INSPECT_COUNTERS == (int)CNT__COUNT,
               "enum inspect_counter matches enum counter");

/* The public limit create checks --wal-file-size against is the log's own. */
_Static_assert(SHMQ_WAL_FILE_MIN == WAL_FILE_MIN, "SHMQ_WAL_FILE_MIN matches WAL_FILE_MIN");

const char *inspect_counter_name(int c)
{
    return c >= 0 && c < INSPECT_COUNTERS ? counter_map[c].name : "?";
}

const char *inspect_slot_state_name(int s)
{
    static const char *const names[INSPECT_SLOT_STATES] = {
        "FREE", "RESERVED", "READY", "INFLIGHT", "DELAYED", "DEAD", "FENCED", "HELD", "INVALID"};
    return s >= 0 && s < INSPECT_SLOT_STATES ? names[s] : "INVALID";
}

/* The state field of a slot's word as INSPECT_SLOT_*. */
static int slot_state_of(unsigned raw)
{
    switch (raw) {
    case SLOT_FREE: return INSPECT_SLOT_FREE;
    case SLOT_RESERVED: return INSPECT_SLOT_RESERVED;
    case SLOT_READY: return INSPECT_SLOT_READY;
    case SLOT_INFLIGHT: return INSPECT_SLOT_INFLIGHT;
    case SLOT_DELAYED: return INSPECT_SLOT_DELAYED;
    case SLOT_DEAD: return INSPECT_SLOT_DEAD;
    case SLOT_FENCED: return INSPECT_SLOT_FENCED;
    case SLOT_HELD: return INSPECT_SLOT_HELD;
    default: return INSPECT_SLOT_INVALID;
    }
}

const char *inspect_proc_state_name(int s)
{
    static const char *const names[] = {"FREE", "CLAIMED", "ACTIVE", "FENCED", "INVALID"};
    return s >= 0 && s <= INSPECT_PROC_INVALID ? names[s] : "INVALID";
}

static int proc_state_of(unsigned raw)
{
    switch (raw) {
    case PROC_FREE: return INSPECT_PROC_FREE;
    case PROC_CLAIMED: return INSPECT_PROC_CLAIMED;
    case PROC_ACTIVE: return INSPECT_PROC_ACTIVE;
    case PROC_FENCED: return INSPECT_PROC_FENCED;
    default: return INSPECT_PROC_INVALID;
    }
}

const char *inspect_group_state_name(int s)
{
    static const char *const names[] = {"CREATING", "ACTIVE", "DELETING", "INVALID"};
    return s >= 0 && s <= INSPECT_GROUP_INVALID ? names[s] : "INVALID";
}

static int group_state_of(unsigned raw)
{
    switch (raw) {
    case GROUP_CREATING: return INSPECT_GROUP_CREATING;
    case GROUP_ACTIVE: return INSPECT_GROUP_ACTIVE;
    case GROUP_DELETING: return INSPECT_GROUP_DELETING;
    default: return INSPECT_GROUP_INVALID;
    }
}

const char *inspect_group_policy_name(uint32_t p)
{
    switch (p) {
    case SHMQ_GROUP_BLOCK: return "block";
    case SHMQ_GROUP_OVERRUN: return "overrun";
    default: return "unknown";
    }
}

const char *inspect_liveness_name(int l)
{
    switch (l) {
    case INSPECT_ALIVE: return "alive";
    case INSPECT_DEAD: return "dead";
    case INSPECT_PID_REUSED: return "pid-reused";
    default: return "no-pid";
    }
}

const char *inspect_role_text(uint32_t role, char *buf, size_t size)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } roles[] = {
        {ROLE_CLIENT, "client"}, {ROLE_CONSUMER, "consumer"}, {ROLE_MAINTAINER, "maintainer"}};
    size_t n = 0;
    if (size)
        buf[0] = '\0';
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]) && n < size; i++)
        if (role & roles[i].bit)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? "|" : "", roles[i].name);
    uint32_t unknown = role & ~(uint32_t)(ROLE_CLIENT | ROLE_CONSUMER | ROLE_MAINTAINER);
    if ((unknown || n == 0) && n < size)
        snprintf(buf + n, size - n, "%s0x%" PRIx32, n ? "|" : "", unknown);
    return buf;
}

const char *inspect_dead_reason_name(uint32_t reason)
{
    switch (reason) {
    case SHMQ_DEAD_MAX_ATTEMPTS: return "max-attempts";
    case SHMQ_DEAD_CORRUPT: return "corrupt";
    case SHMQ_DEAD_EXPIRED: return "expired";
    case 0: return "none";
    default: return "unknown";
    }
}

const char *inspect_durability_name(int durability)
{
    switch (durability) {
    case SHMQ_DURABILITY_NONE: return "none";
    case SHMQ_DURABILITY_PROCESS: return "process";
    case SHMQ_DURABILITY_SYNC: return "sync";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------------ the segment: opening */

struct inspect_segment {
    struct segment seg; /* mapped PROT_READ; layout validated */
};

/* a + b <= limit without overflow. */
static bool fits(uint64_t off, uint64_t len, uint64_t limit)
{
    return off <= limit && len <= limit - off;
}

/* Check once more that every region a reader touches lies inside the mapping (guards against
 * a validation bug turning into an out-of-bounds read). NULL, or the first problem. */
static const char *check_geometry(const struct segment *s)
{
    const struct seg_layout *l = &s->layout;
    uint64_t size = s->size;
    if (!s->base || size < sizeof(struct seg_header))
        return "mapping smaller than the header";
    if (l->total_size > size)
        return "total_size larger than the mapping";
    if (l->capacity == 0 || l->capacity > SHMQ_CAPACITY_MAX || l->capacity > RING_INDEX_MAX)
        return "capacity out of range";
    if (l->max_procs > SHMQ_PROCS_MAX || l->max_procs >= NO_OWNER)
        return "max_procs out of range";
    if (l->slot_stride < SLOT_HEADER_SIZE || l->slot_stride % CACHE_LINE != 0 ||
        l->max_msg_size > l->slot_stride - SLOT_HEADER_SIZE)
        return "slot_stride does not hold a slot of max_msg_size";
    if (!fits(l->registry_off, (uint64_t)l->max_procs * sizeof(struct proc_entry), size))
        return "registry outside the mapping";
    if (!fits(l->slots_off, (uint64_t)l->capacity * l->slot_stride, size))
        return "slot pool outside the mapping";
    if (l->ring_order < RING_MIN_ORDER || l->ring_order > RING_MAX_ORDER)
        return "ring_order out of range";
    if (ring_bytes(l->ring_order) > l->ring_size)
        return "ring_size smaller than its cells";
    const uint64_t ring_offs[3] = {l->free_ring_off, l->ready_ring_off, l->dead_ring_off};
    const struct ring *rings[3] = {&s->free_ring, &s->ready_ring, &s->dead_ring};
    for (int i = 0; i < 3; i++) {
        if (ring_offs[i] % CACHE_LINE != 0 || !fits(ring_offs[i], l->ring_size, size))
            return "ring outside the mapping";
        if ((char *)rings[i]->shm != (char *)s->base + ring_offs[i] ||
            rings[i]->order != l->ring_order)
            return "ring handle does not match the layout";
    }
    if (l->registry_off % CACHE_LINE != 0 || l->slots_off % CACHE_LINE != 0)
        return "region offsets not aligned";
    const struct group_regions *gr = &s->groups;
    if (l->max_groups == 0 || l->max_groups > SHMQ_GROUPS_MAX)
        return "max_groups out of range";
    if (!fits(gr->groups_off, (uint64_t)l->max_groups * sizeof(struct group_entry), size))
        return "group table outside the mapping";
    if (l->max_groups > 1 &&
        !fits(gr->cells_off, (uint64_t)(l->max_groups - 1) * l->capacity * sizeof(struct slot),
              size))
        return "group cells outside the mapping";
    return NULL;
}

struct open_arg {
    int fd;
    struct segment *seg;
};

static int open_fd(void *arg)
{
    struct open_arg *a = arg;
    return segment_open_fd(a->fd, true, a->seg);
}

int inspect_segment_open(const char *name, struct inspect_segment **out, const char **why)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    if (why)
        *why = NULL;
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    if (err)
        return err;
    struct inspect_segment *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    /* O_NONBLOCK: a FIFO planted under the name must not hang the open */
    int fd = io_shm_open(shm_name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) {
        err = fd;
        goto fail;
    }
    struct stat st;
    err = io_fstat(fd, &st);
    if (!err && !S_ISREG(st.st_mode))
        err = INSPECT_ENOTREG;
    if (!err) /* a file cut short between segment_open_fd()'s fstat and its first read faults
               * there: the mapping it made is then lost (unmapped at exit) */
        err = guarded(open_fd, &(struct open_arg){fd, &s->seg}, NULL, 0);
    io_close(fd);
    if (err)
        goto fail;
    const char *bad = check_geometry(&s->seg);
    if (bad) {
        if (why)
            *why = bad;
        segment_close(&s->seg);
        err = -EBADMSG;
        goto fail;
    }
    *out = s;
    return 0;
fail:
    free(s);
    return err;
}

void inspect_segment_close(struct inspect_segment *s)
{
    if (!s)
        return;
    segment_close(&s->seg);
    free(s);
}

/* ------------------------------------------------------------------ the segment: snapshot */

/* What the guarded read of the segment copies, besides what goes straight into the snapshot. */
struct seg_read {
    const struct segment *seg;
    struct inspect_snapshot *out;
    uint32_t *inflight_by_index; /* max_procs of them */
    uint64_t oldest_ns;          /* publish time of the oldest unacked message; 0: none */
};

static int64_t age_ms(uint64_t now_ns, uint64_t then_ns)
{
    return (int64_t)(now_ns - then_ns) / 1000000;
}

/* ms from now to a time kept as ms since the segment's creation (deadlines, the lease). */
static int64_t in_ms(const struct seg_layout *l, uint64_t now_ns, uint64_t at_ms)
{
    return (int64_t)at_ms - (int64_t)(now_ns - l->created_ns) / 1000000;
}

static void read_header_words(const struct segment *seg, struct inspect_snapshot *s)
{
    const struct seg_header *h = seg->hdr;
    /* relaxed throughout: each word is a value on its own, ordered against nothing read here */
    s->next_id = atomic_load_explicit(&h->next_id, memory_order_relaxed);
    s->maint_passes = atomic_load_explicit(&h->maint_passes, memory_order_relaxed);
    const struct inspect_field words[] = {
        {"next_id", s->next_id},
        {"ready_futex", atomic_load_explicit(&h->ready_futex, memory_order_relaxed)},
        {"ready_waiters", atomic_load_explicit(&h->ready_waiters, memory_order_relaxed)},
        {"free_futex", atomic_load_explicit(&h->free_futex, memory_order_relaxed)},
        {"free_waiters", atomic_load_explicit(&h->free_waiters, memory_order_relaxed)},
        {"maint_passes", s->maint_passes},
        {"moves", atomic_load_explicit(&h->moves, memory_order_relaxed)},
        {"settings_version", atomic_load_explicit(&h->settings.version, memory_order_relaxed)},
        {"settings_wal_seq", atomic_load_explicit(&h->settings.wal_seq, memory_order_relaxed)},
    };
    _Static_assert(sizeof(words) / sizeof(words[0]) <= INSPECT_FIELDS_MAX, "fields fit");
    s->n_words = sizeof(words) / sizeof(words[0]);
    memcpy(s->words, words, sizeof(words));
    s->lease.word = atomic_load_explicit(&h->lease_word, memory_order_relaxed);
    /* the settings in use (shmq_set_config()) over the layout's values from create */
    struct settings_values v;
    settings_read(&h->settings, &v);
    settings_to_config(&v, &s->cfg);
    for (int c = 0; c < INSPECT_COUNTERS; c++) {
        s->retired[c] = atomic_load_explicit(&h->retired[counter_map[c].cnt], memory_order_relaxed);
        s->counters[c] = s->retired[c];
    }
    if (s->log.enabled) {
        s->log.write_pos = atomic_load_explicit(&h->wal_pos, memory_order_relaxed);
        s->log.oldest_seq = atomic_load_explicit(&h->wal_oldest_seq, memory_order_relaxed);
        s->log.flushes = atomic_load_explicit(&h->wal_flushes, memory_order_relaxed);
        struct wal_health health;
        wal_health_of(h, &health);
        s->log.errors = health.errors;
        s->log.last_error = health.last_error;
        s->log.flush_failed = health.flush_failed;
    }
}

static void read_registry(struct seg_read *r)
{
    const struct segment *seg = r->seg;
    struct inspect_snapshot *s = r->out;
    for (uint32_t i = 0; i < seg->layout.max_procs; i++) {
        const struct proc_entry *p = segment_proc(seg, i);
        /* acquire: pairs with G1 (attach): pid, role, start time and name are complete */
        uint64_t word = atomic_load_explicit(&p->word, memory_order_acquire);
        unsigned raw = pw_state(word);
        if (raw == PROC_FREE)
            continue;
        struct inspect_proc *o = &s->procs[s->n_procs++];
        o->index = i;
        o->raw_state = raw;
        o->state = proc_state_of(raw);
        o->gen = word >> 4;
        o->pid = p->pid;
        o->role = p->role;
        o->start_time = p->start_time;
        uint64_t hb = atomic_load_explicit(&p->heartbeat_ns, memory_order_relaxed);
        o->heartbeat_seen = hb != 0;
        o->heartbeat_age_ms = hb ? age_ms(s->taken_ns, hb) : 0;
        o->heartbeat_stale = hb && o->heartbeat_age_ms > (int64_t)s->cfg.heartbeat_timeout_ms;
        o->sleeping = atomic_load_explicit(&p->sleeping, memory_order_relaxed) != 0;
        memcpy(o->name, p->name, sizeof(o->name));
        o->name[sizeof(o->name) - 1] = '\0';
        o->group = p->group; /* plain: written before G1 (acquired above) */
        const struct group_entry *ge = segment_group(seg, o->group); /* NULL: out of range */
        /* relaxed: compared with the word it joined, ordered against nothing */
        o->group_gone = (o->role & ROLE_CONSUMER) && ge &&
                        !group_same(p->group_word,
                                    atomic_load_explicit(&ge->word, memory_order_relaxed));
        for (int c = 0; c < INSPECT_COUNTERS; c++) {
            /* relaxed: a tally written by its owner, ordered against nothing */
            o->counters[c] =
                atomic_load_explicit(&p->counters[counter_map[c].cnt], memory_order_relaxed);
            s->counters[c] += o->counters[c];
        }
        /* relaxed: a tally maintainers add to */
        o->reclaimed_from = atomic_load_explicit(&p->taken_back, memory_order_relaxed);
        if (o->state == INSPECT_PROC_ACTIVE) {
            s->procs_active++;
            if (o->role & ROLE_CONSUMER)
                s->consumers++;
        }
    }
}

static void read_slot_states(struct seg_read *r)
{
    const struct segment *seg = r->seg;
    struct inspect_snapshot *s = r->out;
    /* plain: written once by the rebuild that made the segment, before it was published */
    s->recovered_holes = seg->hdr->recovered_holes;
    s->recovered_bad_regions = seg->hdr->recovered_bad_regions;
    s->expired = atomic_load_explicit(&seg->hdr->expired, memory_order_relaxed);
    for (uint32_t i = 0; i < seg->layout.capacity; i++) {
        const struct slot *sl = segment_slot(seg, i);
        /* acquire: pairs with the writer's release of the state word: publish_ns is (at
         * least) this message's */
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
        int st = slot_state_of(sw_state(w));
        s->slots[st]++;
        if (st == INSPECT_SLOT_FENCED || atomic_load_explicit(&sl->linger, memory_order_relaxed))
            s->pinned++;
        if (st == INSPECT_SLOT_INFLIGHT && sw_owner(w) < seg->layout.max_procs)
            r->inflight_by_index[sw_owner(w)]++;
        if (st == INSPECT_SLOT_READY || st == INSPECT_SLOT_INFLIGHT || st == INSPECT_SLOT_DELAYED) {
            uint64_t t = sl->publish_ns;
            if (t && t <= s->taken_ns && (r->oldest_ns == 0 || t < r->oldest_ns))
                r->oldest_ns = t;
        }
    }
}

/* The group entries that are not free, each with its messages counted (stats.h: the count
 * shmq_group_stats() makes). */
static void read_groups(struct seg_read *r)
{
    const struct segment *seg = r->seg;
    struct inspect_snapshot *s = r->out;
    for (uint32_t g = 0; g < seg->layout.max_groups; g++) {
        const struct group_entry *e = segment_group(seg, g);
        /* acquire: pairs with the release CAS that made the entry CREATING: its name, policy,
         * bound and first_id are complete (a best-effort picture if it changes meanwhile) */
        unsigned raw = pw_state(atomic_load_explicit(&e->word, memory_order_acquire));
        if (raw == GROUP_FREE)
            continue;
        /* the in-flight messages of its consumers (group 0's are read_slot_states()'s) */
        for (uint32_t i = 0; g > 0 && i < seg->layout.capacity; i++) {
            /* relaxed: a count for display, ordered against nothing */
            uint64_t w = atomic_load_explicit(&segment_cell(seg, g, i)->state,
                                              memory_order_relaxed);
            if (sw_state(w) == SLOT_INFLIGHT && sw_owner(w) < seg->layout.max_procs)
                r->inflight_by_index[sw_owner(w)]++;
        }
        shmq_group_stats_t st;
        group_count(seg, g, s->taken_ns, &st);
        struct inspect_group *o = &s->groups[s->n_groups++];
        memset(o, 0, sizeof(*o));
        o->index = g;
        o->state = group_state_of(raw);
        memcpy(o->name, st.name, SHMQ_GROUP_NAME_MAX); /* o->name's last byte stays 0 */
        o->policy = e->policy;
        o->bound = e->bound;
        o->first_id = st.first_id;
        o->ready = st.ready;
        o->inflight = st.inflight;
        o->delayed = st.delayed;
        o->dead = st.dead;
        o->held = st.held;
        o->lag = st.lag;
        o->oldest_age_ms = st.oldest_age_ms;
        o->overrun = st.overrun;
        o->consumers = st.consumers;
        o->delivered = st.delivered;
        o->acked = st.acked;
        o->nacked = st.nacked;
    }
}

static int read_segment(void *arg)
{
    struct seg_read *r = arg;
    read_header_words(r->seg, r->out);
    read_registry(r);
    read_slot_states(r);
    read_groups(r);
    return 0;
}

const struct inspect_group *inspect_group_at(const struct inspect_snapshot *s, uint32_t index)
{
    for (uint32_t i = 0; i < s->n_groups; i++)
        if (s->groups[i].index == index)
            return &s->groups[i];
    return NULL;
}

/* Group entries and registry entries' groups out of range, noted. */
static void judge_groups(struct inspect_snapshot *s, uint32_t max_groups)
{
    for (uint32_t i = 0; i < s->n_groups; i++) {
        const struct inspect_group *g = &s->groups[i];
        if (g->state == INSPECT_GROUP_INVALID)
            note(&s->notes, "group entry %" PRIu32 ": invalid state", g->index);
        else if (g->policy != SHMQ_GROUP_BLOCK && g->policy != SHMQ_GROUP_OVERRUN)
            note(&s->notes, "group entry %" PRIu32 ": unknown policy %" PRIu32, g->index,
                 g->policy);
    }
    for (uint32_t i = 0; i < s->n_procs; i++) {
        const struct inspect_proc *p = &s->procs[i];
        if (p->group >= max_groups)
            note(&s->notes, "registry entry %" PRIu32 ": group %" PRIu32 " >= max_groups %" PRIu32,
                 p->index, p->group, max_groups);
    }
}

/* The liveness rule of the registry (registry_pid_dead()), told apart for display. */
static int liveness_of(int32_t pid, uint64_t start_time)
{
    if (pid <= 0) /* never kill() 0 or a negative pid: that names process groups */
        return INSPECT_NO_PID;
    if (pid_gone(pid))
        return INSPECT_DEAD;
    uint64_t now_start = proc_start_time(pid);
    if (now_start != 0 && now_start != start_time)
        return INSPECT_PID_REUSED;
    return INSPECT_ALIVE;
}

static const struct inspect_proc *proc_at(const struct inspect_snapshot *s, uint32_t index)
{
    for (uint32_t i = 0; i < s->n_procs; i++) /* by index: a binary search would do too */
        if (s->procs[i].index == index)
            return &s->procs[i];
    return NULL;
}

/*
 * The lease word, as lease.c writes it: holder << 48 | priority << 47 | expiry_ms, holder =
 * registry index + 1 (0: nobody), expiry_ms counted from created_ns.
 */
static void decode_lease(const struct seg_layout *l, struct inspect_snapshot *s)
{
    struct inspect_lease *ls = &s->lease;
    uint64_t w = ls->word;
    uint32_t holder = (uint32_t)(w >> 48);
    ls->recorded = holder != 0;
    if (!ls->recorded)
        return;
    ls->holder = holder - 1;
    ls->holder_valid = ls->holder < l->max_procs;
    ls->priority = (int)((w >> 47) & 1);
    ls->expires_in_ms = in_ms(l, s->taken_ns, w & ((1ull << 47) - 1));
    if (!ls->holder_valid)
        note(&s->notes, "lease: holder %" PRIu32 " >= max_procs %" PRIu32, ls->holder,
             l->max_procs);
}

static void judge_registry(const struct seg_read *r)
{
    struct inspect_snapshot *s = r->out;
    for (uint32_t i = 0; i < s->n_procs; i++) {
        struct inspect_proc *p = &s->procs[i];
        p->liveness = liveness_of(p->pid, p->start_time);
        p->alive = p->liveness == INSPECT_ALIVE;
        s->procs_alive += p->alive;
        p->inflight = r->inflight_by_index[p->index];
        if (p->state == INSPECT_PROC_INVALID)
            note(&s->notes, "registry entry %" PRIu32 ": invalid state %u", p->index, p->raw_state);
        if (p->pid <= 0 && p->state == INSPECT_PROC_ACTIVE)
            note(&s->notes, "registry entry %" PRIu32 ": ACTIVE with pid %" PRId32, p->index,
                 p->pid);
    }
    struct inspect_lease *ls = &s->lease;
    const struct inspect_proc *holder = ls->holder_valid ? proc_at(s, ls->holder) : NULL;
    if (ls->recorded && holder) {
        ls->pid = holder->pid;
        ls->held = ls->expires_in_ms >= 0 && holder->state == INSPECT_PROC_ACTIVE && holder->alive;
    }
}

/* What the snapshot takes from the validated private layout (no shm read). */
static void describe_layout(const struct segment *seg, struct inspect_snapshot *s)
{
    const struct seg_layout *l = &seg->layout;
    struct inspect_header *h = &s->header;
    h->magic = l->magic;
    h->version = l->version;
    h->header_size = l->header_size;
    h->total_size = l->total_size;
    h->mapped_size = seg->size;
    h->header_crc = l->header_crc;
    h->created_ns = l->created_ns;
    h->created_age_ms = age_ms(s->taken_ns, l->created_ns);
    layout_to_config(l, &s->cfg); /* cfg.log_dir: NULL; log.dir has the directory */
    const struct inspect_field fields[] = {
        {"slot_stride", l->slot_stride},       {"ring_order", l->ring_order},
        {"ring_cells", 1ull << l->ring_order}, {"ring_size", l->ring_size},
        {"registry_off", l->registry_off},     {"slots_off", l->slots_off},
        {"free_ring_off", l->free_ring_off},   {"ready_ring_off", l->ready_ring_off},
        {"dead_ring_off", l->dead_ring_off},
    };
    _Static_assert(sizeof(fields) / sizeof(fields[0]) <= INSPECT_FIELDS_MAX, "fields fit");
    s->n_layout = sizeof(fields) / sizeof(fields[0]);
    memcpy(s->layout, fields, sizeof(fields));
    if (l->durability != SHMQ_DURABILITY_NONE) {
        s->log.enabled = true;
        _Static_assert(sizeof(s->log.dir) >= sizeof(l->log_dir), "a log_dir fits");
        snprintf(s->log.dir, sizeof(s->log.dir), "%s", l->log_dir); /* validated: terminated */
        s->log.file_size = l->wal_file_size;
        s->log.base_pos = l->wal_base_pos;
    }
}

int inspect_segment_read(struct inspect_segment *is, struct inspect_snapshot *s)
{
    const struct segment *seg = &is->seg;
    memset(s, 0, sizeof(*s));
    s->taken_ns = now_ns();
    struct seg_read r = {.seg = seg, .out = s};
    uint32_t max_procs = seg->layout.max_procs ? seg->layout.max_procs : 1;
    s->procs = calloc(max_procs, sizeof(*s->procs));
    r.inflight_by_index = calloc(max_procs, sizeof(*r.inflight_by_index));
    if (!s->procs || !r.inflight_by_index) {
        free(r.inflight_by_index);
        inspect_snapshot_free(s);
        return -ENOMEM;
    }
    describe_layout(seg, s);
    int err = guarded(read_segment, &r, seg->base, seg->size);
    if (err) {
        free(r.inflight_by_index);
        inspect_snapshot_free(s);
        return err;
    }
    s->oldest_age_ms = r.oldest_ns ? (int64_t)((s->taken_ns - r.oldest_ns) / 1000000) : -1;
    if (s->log.enabled) {
        s->log.bytes = s->log.write_pos - s->log.base_pos;
        uint64_t per_file = s->log.file_size - WAL_HEADER_SIZE; /* validated: > 0 */
        s->log.current_seq = s->log.write_pos / per_file;
    }
    decode_lease(&seg->layout, s); /* notes in the order a reader meets them: lease first */
    judge_registry(&r);
    judge_groups(s, seg->layout.max_groups);
    free(r.inflight_by_index);
    return 0;
}

void inspect_snapshot_free(struct inspect_snapshot *s)
{
    free(s->procs);
    s->procs = NULL;
    s->n_procs = 0;
}

int inspect_queue(const char *name, struct inspect_snapshot *out)
{
    struct inspect_segment *seg;
    memset(out, 0, sizeof(*out));
    int err = inspect_segment_open(name, &seg, NULL);
    if (err)
        return err;
    err = inspect_segment_read(seg, out);
    inspect_segment_close(seg);
    return err;
}

const char *inspect_watchdog_text(const struct inspect_snapshot *s, char *buf, size_t size)
{
    if (s->lease.pid == 0)
        snprintf(buf, size, "none");
    else if (!s->lease.held)
        snprintf(buf, size, "expired");
    else
        snprintf(buf, size, "%s:%d", s->lease.priority ? "active" : "cooperative",
                 (int)s->lease.pid);
    return buf;
}

/* ------------------------------------------------------------------ the segment: rings */

struct rings_read {
    const struct segment *seg;
    struct inspect_ring *out;
    uint64_t first_bad_pos[3];
    uint32_t first_bad_idx[3];
};

static int read_rings(void *arg)
{
    struct rings_read *r = arg;
    const struct segment *seg = r->seg;
    const struct ring *rings[3] = {&seg->free_ring, &seg->ready_ring, &seg->dead_ring};
    static const char *const names[3] = {"free", "ready", "dead"};
    for (int i = 0; i < 3; i++) {
        const struct ring *ring = rings[i];
        struct inspect_ring *o = &r->out[i];
        o->name = names[i];
        o->cells = ring->mask + 1;
        for (uint64_t pos = 0; pos < o->cells; pos++) {
            struct ring_cell c = ring_cell_at(ring, pos);
            if (c.empty)
                continue;
            o->nonempty_cells++;
            if (c.idx >= seg->layout.capacity && o->bad_cells++ == 0) {
                r->first_bad_pos[i] = pos;
                r->first_bad_idx[i] = c.idx;
            }
        }
        o->head = ring_head(ring);
        o->tail = ring_tail(ring);
        /* relaxed: a value to show, ordered against nothing */
        o->threshold = atomic_load_explicit(&ring->shm->threshold, memory_order_relaxed);
    }
    return 0;
}

int inspect_rings(struct inspect_segment *is, struct inspect_ring *out, uint32_t *n,
                  struct inspect_notes *notes)
{
    const struct segment *seg = &is->seg;
    struct rings_read r = {.seg = seg, .out = out};
    _Static_assert(3 <= INSPECT_RINGS_MAX, "rings fit");
    memset(out, 0, 3 * sizeof(*out));
    *n = 0;
    int err = guarded(read_rings, &r, seg->base, seg->size);
    if (err)
        return err;
    *n = 3;
    for (int i = 0; i < 3; i++) {
        if (out[i].bad_cells)
            note(notes,
                 "%s ring: cell %" PRIu64 " holds slot index %" PRIu32 " >= capacity %" PRIu32,
                 out[i].name, r.first_bad_pos[i], r.first_bad_idx[i], seg->layout.capacity);
        if (out[i].bad_cells > 1)
            note(notes, "%s ring: %" PRIu64 " cells hold an out-of-range slot index", out[i].name,
                 out[i].bad_cells);
    }
    return 0;
}

/* ------------------------------------------------------------------ the segment: slots */

void inspect_slot_cursor_init(struct inspect_slot_cursor *cur, uint64_t now)
{
    memset(cur, 0, sizeof(*cur));
    cur->now_ns = now ? now : now_ns();
}

struct slots_read {
    const struct segment *seg;
    struct inspect_slot_cursor *cur;
    struct inspect_slot *out;
    uint32_t max, n;
};

/* Copy slot idx, whose state word is w, into o: each word read once; a gen-tagged word is
 * used only when its tag is w's. */
static void read_slot(const struct segment *seg, uint64_t now, uint32_t idx, const struct slot *sl,
                      uint64_t w, struct inspect_slot *o)
{
    const struct seg_layout *l = &seg->layout;
    memset(o, 0, sizeof(*o));
    o->index = idx;
    o->raw_state = sw_state(w);
    o->state = slot_state_of(o->raw_state);
    o->gen = sw_gen(w);
    o->owner = sw_owner(w);
    o->has_owner = o->owner != NO_OWNER;
    /* relaxed: the acquire of w ordered the fields below after its writer's; they may be
     * newer still on a live queue (best-effort) */
    uint64_t ticket_w = atomic_load_explicit(&sl->ticket, memory_order_relaxed);
    uint64_t deadline_w = atomic_load_explicit(&sl->deadline, memory_order_relaxed);
    o->id = sl->id;
    uint64_t publish_ns = sl->publish_ns;
    o->len = sl->len;
    o->attempt = sl->attempt;
    uint32_t dead_reason = sl->dead_reason;
    uint32_t linger = atomic_load_explicit(&sl->linger, memory_order_relaxed);
    uint32_t wal_seq = atomic_load_explicit(&sl->wal_seq, memory_order_relaxed);

    o->has_age = publish_ns != 0;
    o->age_ms = o->has_age ? age_ms(now, publish_ns) : 0;
    uint64_t v;
    if ((o->state == INSPECT_SLOT_INFLIGHT || o->state == INSPECT_SLOT_DELAYED) &&
        tagged_get(deadline_w, w, &v)) {
        o->has_deadline = true;
        o->deadline_in_ms = in_ms(l, now, v);
    }
    o->has_ticket = tagged_get(ticket_w, w, &o->ticket);
    if (o->state == INSPECT_SLOT_INFLIGHT) {
        o->has_token = true;
        o->token = token_make(idx, w);
    }
    if (o->state == INSPECT_SLOT_DEAD) {
        o->has_dead_reason = true;
        o->dead_reason = dead_reason;
    }
    o->has_linger = linger != 0; /* a delivery's tag: registry index + 1 in its low bits, slot.h */
    o->linger = linger ? linger_owner(linger) : 0;
    o->has_wal_seq = wal_seq != 0; /* file seq + 1 */
    o->wal_seq = wal_seq ? wal_seq - 1 : 0;
    /* len comes from shm: never read past max_msg_size (check_geometry(): inside the slot) */
    o->len_valid = o->len <= l->max_msg_size;
    if (o->len_valid) {
        o->preview_len = o->len < INSPECT_PREVIEW_BYTES ? o->len : INSPECT_PREVIEW_BYTES;
        memcpy(o->preview, (const char *)sl + SLOT_HEADER_SIZE, o->preview_len);
    }
}

static int read_slots(void *arg)
{
    struct slots_read *r = arg;
    const struct segment *seg = r->seg;
    struct inspect_slot_cursor *cur = r->cur;
    while (cur->next < seg->layout.capacity && r->n < r->max) {
        uint32_t idx = cur->next;
        const struct slot *sl = segment_slot(seg, idx);
        /* acquire: pairs with the writer's release of the state word, so the fields read
         * after it belong to (at least) this state */
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
        cur->counts[slot_state_of(sw_state(w))]++;
        cur->next++;
        if (sw_state(w) != SLOT_FREE)
            read_slot(seg, cur->now_ns, idx, sl, w, &r->out[r->n++]);
    }
    return 0;
}

int inspect_slots(struct inspect_segment *is, struct inspect_slot_cursor *cur,
                  struct inspect_slot *out, uint32_t max, uint32_t *n, struct inspect_notes *notes)
{
    const struct segment *seg = &is->seg;
    const struct seg_layout *l = &seg->layout;
    struct slots_read r = {.seg = seg, .cur = cur, .out = out, .max = max};
    *n = 0;
    if (max == 0)
        return -EINVAL; /* the walk would not advance */
    int err = guarded(read_slots, &r, seg->base, seg->size);
    if (err)
        return err;
    *n = r.n;
    for (uint32_t i = 0; i < r.n; i++) {
        const struct inspect_slot *o = &out[i];
        if (o->state == INSPECT_SLOT_INVALID)
            note(notes, "slot %" PRIu32 ": invalid state %u", o->index, o->raw_state);
        if (o->has_owner && o->owner >= l->max_procs)
            note(notes, "slot %" PRIu32 ": owner %" PRIu32 " >= max_procs %" PRIu32, o->index,
                 o->owner, l->max_procs);
        if (o->has_linger && o->linger >= l->max_procs)
            note(notes, "slot %" PRIu32 ": linger %" PRIu32 " >= max_procs %" PRIu32, o->index,
                 o->linger, l->max_procs);
        if (!o->len_valid)
            note(notes, "slot %" PRIu32 ": len %" PRIu32 " > max_msg_size %" PRIu32, o->index,
                 o->len, l->max_msg_size);
    }
    return 0;
}

/* ------------------------------------------------------------------ the log: where */

int inspect_log_locate(const char *name, const char *log_dir, struct inspect_log_where *out)
{
    memset(out, 0, sizeof(*out));
    struct inspect_segment *is = NULL;
    int err = inspect_segment_open(name, &is, NULL);
    out->segment = err == 0         ? INSPECT_SEG_VALID
                   : err == -ENOENT ? INSPECT_SEG_MISSING
                                    : INSPECT_SEG_DAMAGED;
    bool found = false;
    if (is && !log_dir) {
        const struct seg_layout *l = &is->seg.layout; /* validated: log_dir is NUL-terminated */
        if (l->durability != SHMQ_DURABILITY_NONE && l->log_dir[0]) {
            snprintf(out->dir, sizeof(out->dir), "%s", l->log_dir);
            out->from = INSPECT_DIR_SEGMENT;
            found = true;
        } else {
            out->durability_none = true;
        }
    }
    inspect_segment_close(is);
    if (found)
        return 0;
    out->from = log_dir ? INSPECT_DIR_GIVEN : INSPECT_DIR_STATE;
    return logdir_find(name, log_dir, out->dir, sizeof(out->dir)); /* a link followed */
}

/* ------------------------------------------------------------------ the log: reading */

const char *inspect_rec_type_name(int t)
{
    static const char *const names[INSPECT_REC_TYPES] = {"publish", "ack",  "dead",  "nack",
                                                         "pad",     "mark", "config", "group"};
    return t >= 0 && t < INSPECT_REC_TYPES ? names[t] : "?";
}

/* A record type (walscan only passes wal_type_valid() ones) as INSPECT_REC_*: a group's ACK,
 * DEAD or NACK counts as its type. */
static int rec_type_of(unsigned type)
{
    switch (wal_type_base(type)) {
    case WAL_PUBLISH: return INSPECT_REC_PUBLISH;
    case WAL_ACK: return INSPECT_REC_ACK;
    case WAL_DEAD: return INSPECT_REC_DEAD;
    case WAL_NACK: return INSPECT_REC_NACK;
    case WAL_PAD: return INSPECT_REC_PAD;
    case WAL_CONFIG: return INSPECT_REC_CONFIG;
    case WAL_GROUP: return INSPECT_REC_GROUP;
    default: return INSPECT_REC_MARK;
    }
}

struct entry { /* one record for the recovery decision: sorted by (id, log order) */
    uint64_t id, order;
    uint64_t due_unix_ms; /* a delayed PUBLISH's or a delayed NACK's due time; 0: none */
    uint32_t len; /* PUBLISH: message bytes */
    uint16_t type, attempt;
};

/* The log being read: the public report plus the records recovery would weigh. */
struct log_read {
    struct inspect_log *log;
    bool have_head;
    uint64_t complete_gen; /* recovery reads the files of this generation only */
    size_t cap;
    struct entry *v;
    size_t nv, capv;
    bool oom;
    int holes;   /* HOLES_*: what can explain a hole */
    bool strict; /* an unexplained hole is a problem */
    struct walgroup_latest grp[WAL_MAX_GROUPS]; /* the GROUP records recovery reads, as it
                                                 * keeps them (walgroups.h) */
    uint32_t max_groups; /* of the newest readable file's header */
};
_Static_assert(SHMQ_GROUPS_MAX == WAL_MAX_GROUPS, "a group table fits the log's");

/* What can tell a hole (an append that never finished) from lost records: */
enum {
    HOLES_NO_SEGMENT, /* nothing: the segment is gone (the case recovery is for) */
    HOLES_UNCHECKED,  /* the segment exists but its messages are not checked against the log */
    HOLES_CHECKED,    /* the segment's messages are (cross_check()): decided after the read */
};

static bool name_is_log_file(const char *s, uint64_t *seq)
{
    if (strncmp(s, "wal.", 4) != 0 || strlen(s) != 14)
        return false;
    uint64_t v = 0;
    for (const char *p = s + 4; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *seq = v;
    return true;
}

static int by_seq(const void *a, const void *b)
{
    const struct inspect_log_file *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_id_order(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* io_dir_each() callback of list_files(): one entry per log file name. */
static int add_log_file(void *arg, int dirfd, const char *name)
{
    struct log_read *r = arg;
    struct inspect_log *log = r->log;
    uint64_t seq;
    if (!name_is_log_file(name, &seq))
        return 0; /* temporary files (wal.N.tmp.*) and others: recovery ignores them too */
    if (log->n_files == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct inspect_log_file *f = realloc(log->files, cap * sizeof(*f));
        if (!f)
            return -ENOMEM;
        log->files = f;
        r->cap = cap;
    }
    struct inspect_log_file *f = &log->files[log->n_files++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->seq = seq;
    return 0;
}

/* List the log files of dir. 0 or -errno (the directory cannot be read). */
static int list_files(struct log_read *r, const char *dir)
{
    int err = io_dir_each(dir, add_log_file, r);
    if (err)
        return err;
    if (r->log->n_files)
        qsort(r->log->files, r->log->n_files, sizeof(*r->log->files), by_seq);
    return 0;
}

/* Why a header is not valid (NULL: walscan_header(), the library's judge, accepts it). */
static const char *header_problem(const uint8_t *base, uint64_t size)
{
    const struct wal_file_header *ok;
    if (walscan_header(base, (size_t)size, &ok) == 0)
        return NULL;
    if (size < WAL_HEADER_SIZE)
        return "shorter than the 4096-byte file header (truncated)";
    const struct wal_file_header *h = (const struct wal_file_header *)base;
    if (h->magic != WAL_FILE_MAGIC)
        return "not a log file (bad magic)";
    if (h->version != WAL_VERSION)
        return "another log format version";
    if (h->header_size != WAL_HEADER_SIZE)
        return "bad header_size";
    if (wal_header_crc(h) != h->crc)
        return "header checksum mismatch";
    if (h->file_size < size)
        return "longer than the header's file_size";
    return "invalid header";
}

/* One file being walked. */
struct file_scan {
    struct log_read *r;
    struct inspect_log_file *f;
    const uint8_t *base;
    uint64_t prev_end; /* end of the previous valid record */
};

/* A run of invalid bytes [from, to) before a valid record, by walscan's rule: a hole if it is
 * only what unfinished appends leave (zeros, records cut before their crc) and at least a
 * record header long, else a bad region. */
static void note_gap(struct file_scan *fs, uint64_t from, uint64_t to)
{
    struct inspect_log_file *f = fs->f;
    if (to <= from)
        return;
    bool zeros = walscan_unfinished(fs->base, from, to, f->epoch);
    if (zeros && to - from < WAL_REC_HEADER)
        return;
    if (f->n_regions < INSPECT_LOG_REGIONS_KEPT)
        f->regions[f->n_regions] = (struct inspect_log_region){from, to - from, zeros};
    f->n_regions++;
}

static int log_record(void *arg, uint64_t offset, const struct wal_rec *rec, const void *payload)
{
    struct file_scan *fs = arg;
    struct inspect_log_file *f = fs->f;
    struct log_read *r = fs->r;
    note_gap(fs, fs->prev_end, offset);
    uint64_t size = wal_rec_size(rec->len);
    fs->prev_end = offset + (size < f->size - offset ? size : f->size - offset);
    f->by_type[rec_type_of(rec->type)]++;
    if (rec->type == WAL_GROUP && f->readable) /* only loads: fine inside the guard */
        walgroups_note(r->grp, rec, payload, (f->seq << 32) | (offset / WAL_ALIGN));
    if (rec->type == WAL_PAD || rec->type == WAL_CONFIG || rec->type == WAL_GROUP)
        return 0; /* no message's record (a CONFIG record's id is the settings' version, a
                   * GROUP record's the group's index) */
    if (wal_type_group(rec->type))
        return 0; /* a record of a group >= 1: the judging below is group 0's view */
    struct wal_publish pub = {.len = rec->len};
    if (rec->type == WAL_PUBLISH) {
        if (wal_parse_publish(rec, payload, &pub) != 0) {
            if (f->malformed++ == 0)
                f->first_malformed = offset;
            return 0; /* recover.c's collect() leaves it out too */
        }
        f->message_bytes += pub.len;
        f->keyed += pub.key_len > 0;
        f->delayed += pub.due_unix_ms != 0;
    }
    if (rec->type != WAL_MARK) {
        if (f->n_ids == 0 || rec->id < f->min_id)
            f->min_id = rec->id;
        if (f->n_ids == 0 || rec->id > f->max_id)
            f->max_id = rec->id;
        f->n_ids++;
    }
    if (!f->readable)
        return 0;           /* recovery skips this file */
    if (r->nv == r->capv) { /* between reads of the mapping: a fault cannot land in here */
        size_t cap = r->capv ? r->capv * 2 : 4096;
        struct entry *v = realloc(r->v, cap * sizeof(*v));
        if (!v) {
            r->oom = true;
            return 1;
        }
        r->v = v;
        r->capv = cap;
    }
    /* the order recover.c's collect() gives: file seq, then offset */
    uint64_t due = pub.due_unix_ms;
    if (rec->type == WAL_NACK && rec->len >= WAL_NACK_DUE_LEN)
        memcpy(&due, payload, WAL_NACK_DUE_LEN);
    r->v[r->nv++] = (struct entry){.id = rec->id,
                                   .due_unix_ms = due,
                                   .order = (f->seq << 32) | (offset / WAL_ALIGN),
                                   .len = pub.len,
                                   .type = rec->type,
                                   .attempt = rec->attempt};
    return 0;
}

/* Check the header and walk the records of a mapped file (guarded). */
static int scan_file(void *arg)
{
    struct file_scan *fs = arg;
    struct inspect_log_file *f = fs->f;
    f->header_problem = header_problem(fs->base, f->size);
    if (f->header_problem)
        return 0;
    const struct wal_file_header *h = (const struct wal_file_header *)fs->base;
    f->scanned = true;
    f->epoch = h->epoch;
    f->header_seq = h->seq;
    f->capacity = h->layout.capacity;
    f->max_msg_size = h->layout.max_msg_size;
    f->seq_mismatch = h->seq != f->seq;
    f->header_file_size = h->file_size;
    f->truncated = h->file_size > f->size; /* the records before the cut still count */
    f->gen = h->layout.log_gen;
    f->other_gen = fs->r->have_head && f->gen != fs->r->complete_gen;
    f->readable = !f->seq_mismatch && !f->other_gen;
    if (f->readable) /* files are read by seq: the newest readable one's stays */
        fs->r->max_groups = h->layout.max_groups;
    fs->prev_end = WAL_HEADER_SIZE;
    struct walscan_stats st;
    walscan_records(fs->base, (size_t)f->size, h, log_record, fs, &st);
    f->records = st.records;
    f->bad_regions = st.bad_regions;
    f->holes = st.holes;
    f->hole_bytes = st.hole_bytes;
    f->bad_bytes = st.bad_bytes;
    f->torn_offset = st.torn_offset;
    f->used_bytes = st.end_offset;
    return 0;
}

static void read_file(struct log_read *r, int dfd, struct inspect_log_file *f)
{
    int fd = io_openat(dfd, f->name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW, 0);
    struct stat st;
    if (fd < 0) {
        f->open_err = fd;
        return;
    }
    int err = io_fstat(fd, &st);
    if (err) {
        f->open_err = err;
        io_close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        f->not_regular = true;
        io_close(fd);
        return;
    }
    f->size = (uint64_t)st.st_size;
    if (f->size == 0) {
        io_close(fd);
        f->header_problem = "empty file";
        return;
    }
    void *base;
    err = io_mmap(fd, 0, (size_t)f->size, PROT_READ, MAP_SHARED, &base);
    io_close(fd);
    if (err) {
        f->open_err = err;
        return;
    }
    size_t nv_before = r->nv;
    struct file_scan fs = {.r = r, .f = f, .base = base};
    if (guarded(scan_file, &fs, base, (size_t)f->size) == -EFAULT) {
        /* what was collected from this file is not trusted; what it showed is not either */
        r->nv = nv_before;
        struct inspect_log_file keep = *f;
        memset(f, 0, sizeof(*f));
        memcpy(f->name, keep.name, sizeof(f->name));
        f->seq = keep.seq;
        f->size = keep.size;
        f->faulted = true;
    }
    io_munmap(base, (size_t)f->size);
}

/* ------------------------------------------------------------------ the log: judging */

/* What shmq_recover() would restore: recover.c's decide(), on ids and types only. */
static void decide(struct log_read *r)
{
    struct inspect_log_recovery *rc = &r->log->recovery;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* the wall clock recovery would compare due times to */
    uint64_t now_unix_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    if (r->nv)
        qsort(r->v, r->nv, sizeof(*r->v), by_id_order);
    for (size_t i = 0; i < r->nv;) {
        size_t j = i;
        bool published = false, resolved = false, dead = false, resolution = false;
        uint32_t attempt = 0, len = 0;
        uint64_t due = 0;           /* recover.c: DELAYED until then, if still ahead */
        uint64_t pub_seq = 0;       /* the newest file with a PUBLISH of it that is read */
        size_t end = i, closed = i; /* recover.c: a copy no record follows is not read */
        while (end < r->nv && r->v[end].id == r->v[i].id) {
            unsigned t = r->v[end++].type;
            if (t == WAL_ACK || t == WAL_DEAD || t == WAL_NACK)
                closed = end;
        }
        for (; j < end; j++) {
            const struct entry *e = &r->v[j];
            if (e->type == WAL_PUBLISH && (e->attempt & WAL_PUB_CHECKPOINT) && j >= closed)
                continue;
            if (e->type == WAL_PUBLISH && e->order >> 32 > pub_seq)
                pub_seq = e->order >> 32;
            if (e->type == WAL_PUBLISH && (e->attempt & WAL_PUB_CHECKPOINT) && published &&
                (resolved || dead)) {
                len = e->len; /* a stale copy: carries the payload, revives nothing */
            } else if (e->type == WAL_PUBLISH) {
                attempt = 0; /* a redrive from the dead letters starts them again */
                published = true;
                resolved = dead = false;
                len = e->len;
                due = e->due_unix_ms;
            } else if (e->type == WAL_ACK) {
                resolved = true;
                dead = false;
                resolution = true;
            } else if (e->type == WAL_DEAD) {
                dead = true;
                resolution = true;
                attempt = e->attempt > attempt ? e->attempt : attempt;
            } else if (e->type == WAL_NACK) {
                if (e->attempt > attempt)
                    attempt = e->attempt;
                if (published && !resolved && !dead)
                    due = e->due_unix_ms;
            }
        }
        uint64_t id = r->v[i].id;
        if (id > rc->highest_id)
            rc->highest_id = id;
        if (published) { /* ascending: r->v is sorted by id */
            struct inspect_log *lg = r->log;
            if (lg->n_published % 4096 == 0) {
                struct inspect_published *nv =
                    realloc(lg->published, (lg->n_published + 4096) * sizeof(*nv));
                if (!nv) {
                    r->oom = true;
                    return;
                }
                lg->published = nv;
            }
            lg->published[lg->n_published++] = (struct inspect_published){id, pub_seq};
        }
        if (published && dead) {
            rc->dead_letters++;
        } else if (published && !resolved) {
            if (rc->live == 0 || id < rc->first_live_id)
                rc->first_live_id = id;
            if (rc->live == 0 || id > rc->last_live_id)
                rc->last_live_id = id;
            rc->live++;
            rc->live_with_attempts += attempt > 0;
            if (due > now_unix_ms) {
                rc->live_delayed++;
                if (!rc->next_due_unix_ms || due < rc->next_due_unix_ms)
                    rc->next_due_unix_ms = due;
            }
            if (len > rc->live_max_len)
                rc->live_max_len = len;
        } else if (published) {
            rc->resolved++;
        } else if (resolution) {
            rc->orphans++; /* its PUBLISH was in a file already deleted */
        }
        i = j;
    }
}

/* The groups the GROUP records name, and which of them a rebuild makes (recovery's rule). */
static void predict_groups(struct log_read *r)
{
    struct inspect_log_recovery *rc = &r->log->recovery;
    uint32_t ngroups = r->max_groups ? r->max_groups : 1; /* 0: a file from before groups */
    uint64_t made = walgroups_created(r->grp, ngroups);
    for (uint32_t g = 1; g < WAL_MAX_GROUPS; g++) {
        const struct walgroup_latest *l = &r->grp[g];
        if (!l->kind)
            continue;
        struct inspect_log_group *o = &rc->groups[rc->n_groups++];
        memset(o, 0, sizeof(*o));
        o->index = g;
        memcpy(o->name, l->rec.name, SHMQ_GROUP_NAME_MAX); /* o->name's last byte stays 0 */
        o->policy = l->rec.policy;
        o->bound = l->rec.bound;
        o->first_id = l->rec.first_id;
        o->deleted = l->kind == WAL_GROUP_DELETE;
        o->restored = made >> g & 1;
    }
}

/* Where the note of n holes goes, and the words that say what they may be. */
static struct inspect_notes *hole_notes(struct log_read *r, uint64_t n, const char **why)
{
    struct inspect_log *log = r->log;
    if (r->holes == HOLES_CHECKED) { /* cross_check() says what they were, after the read */
        *why = "zeros, or appends cut before their crc; recovery reads on past it";
        return &log->warnings;
    }
    log->unexplained += n;
    *why = r->holes == HOLES_NO_SEGMENT
               ? "a failed or killed append, or lost data: no segment to check against"
               : "a failed or killed append, or lost data: not checked against the segment";
    return r->strict ? &log->problems : &log->warnings;
}

static void judge_file(struct log_read *r, const struct inspect_log_file *f)
{
    struct inspect_log *log = r->log;
    struct inspect_notes *p = &log->problems;
    if (f->open_err) {
        note(p, "%s: cannot be read: %s", f->name, strerror(-f->open_err));
        return;
    }
    if (f->not_regular) {
        note(p, "%s: not a regular file", f->name);
        return;
    }
    if (f->faulted) {
        note(p, "%s: truncated while it was read (SIGBUS)", f->name);
        return;
    }
    if (f->header_problem) {
        note(p, "%s: bad header: %s (%" PRIu64 " bytes); recovery skips this file", f->name,
             f->header_problem, f->size);
        return;
    }
    if (f->seq_mismatch)
        note(p, "%s: its header says seq %" PRIu64 "; recovery skips this file", f->name,
             f->header_seq);
    if (f->malformed)
        note(p,
             "%s: %" PRIu64 " PUBLISH record%s with a malformed body (first at offset %" PRIu64
             "); recovery skips %s",
             f->name, f->malformed, f->malformed == 1 ? "" : "s", f->first_malformed,
             f->malformed == 1 ? "it" : "them");
    /* A hole (zeros and records cut before their crc, followed by a valid record) is what an
     * append leaves that never finished: its write failed (a file that could not be made or
     * mapped) or its writer died first; nothing in it was reported written. But lost records
     * (a zeroed block) look the same: only the messages the segment still holds can tell them
     * apart (cross_check()); without it a hole is unexplained. Recovery reads on past it. */
    const char *why, *prefix = r->holes == HOLES_CHECKED ? "" : "unexplained ";
    uint64_t bad_listed = 0, holes_listed = 0;
    for (uint64_t k = 0; k < f->n_regions && k < INSPECT_LOG_REGIONS_KEPT; k++) {
        const struct inspect_log_region *g = &f->regions[k];
        if (g->zeros) {
            holes_listed++;
            struct inspect_notes *n = hole_notes(r, 1, &why);
            note(n, "%s: %shole at offset %" PRIu64 ", %" PRIu64 " bytes (%s)", f->name, prefix,
                 g->offset, g->length, why);
        } else {
            bad_listed++;
            note(p,
                 "%s: bad region at offset %" PRIu64 ", %" PRIu64
                 " bytes (garbage); recovery skips it",
                 f->name, g->offset, g->length);
        }
    }
    if (f->bad_regions > bad_listed)
        note(p, "%s: %" PRIu64 " more bad regions", f->name, f->bad_regions - bad_listed);
    if (f->holes > holes_listed) {
        struct inspect_notes *n = hole_notes(r, f->holes - holes_listed, &why);
        note(n, "%s: %" PRIu64 " more %sholes (%s)", f->name, f->holes - holes_listed, prefix,
             why);
    }
    if (f->tail_zeros) {
        struct inspect_notes *n = hole_notes(r, 1, &why);
        note(n,
             "%s: %s%" PRIu64 " bytes of zeros at offset %" PRIu64
             " to its end, though newer files hold records (such a file is full to its end: %s)",
             f->name, prefix, f->tail_zeros, f->used_bytes, why);
    }
    if (f->truncated) { /* a file is made full size before it is named: never a crash */
        note(p,
             "%s: truncated: %" PRIu64 " bytes of the %" PRIu64
             " its header says; recovery reads the %" PRIu64 " records before the cut",
             f->name, f->size, f->header_file_size, f->records);
    } else if (f->torn_offset) {
        uint64_t len = f->size - f->torn_offset;
        if (log->any_written && f->seq == log->last_written_seq)
            note(&log->warnings,
                 "%s: torn tail at offset %" PRIu64 ", %" PRIu64
                 " bytes: a crash while writing the newest file (allowed; recovery ignores it)",
                 f->name, f->torn_offset, len);
        else
            note(p,
                 "%s: torn tail at offset %" PRIu64 ", %" PRIu64
                 " bytes, but newer files hold records (corruption)",
                 f->name, f->torn_offset, len);
    }
}

static void judge(struct log_read *r, bool segment_exists)
{
    struct inspect_log *log = r->log;
    struct inspect_log_recovery *rc = &log->recovery;
    const struct inspect_log_file *newest = NULL; /* holds the config recovery rebuilds with */
    for (size_t i = 0; i < log->n_files; i++) {
        const struct inspect_log_file *f = &log->files[i];
        if (f->readable && (f->records > 0 || f->torn_offset) &&
            (!log->any_written || f->seq > log->last_written_seq)) {
            log->last_written_seq = f->seq;
            log->any_written = true;
        }
        rc->files_read += f->readable;
        rc->files_skipped += !f->readable;
        if (f->readable)
            newest = f;
        for (int t = 0; t < INSPECT_REC_TYPES; t++)
            log->by_type[t] += f->by_type[t];
        log->records += f->records;
        log->bad_regions += f->bad_regions;
        log->holes += f->holes;
        log->torn_tails += f->torn_offset != 0;
    }
    for (size_t i = 0; i < log->n_files; i++) {
        struct inspect_log_file *f = &log->files[i];
        const struct inspect_log_file *prev = i > 0 ? &log->files[i - 1] : NULL;
        /* the log moved past a file only when a crossing was padded (or a writer died in it):
         * zeros at its end are a hole like any other */
        if (f->readable && !f->truncated && !f->torn_offset && f->seq < log->last_written_seq &&
            f->size - f->used_bytes >= WAL_REC_HEADER)
            f->tail_zeros = f->size - f->used_bytes;
        /* a gap between two generations is the rule (a rebuild starts 16 files further) */
        bool new_gen = prev && prev->scanned && f->scanned && prev->gen != f->gen;
        if (f->other_gen)
            note(&log->warnings,
                 "%s: of generation %" PRIu64 ", not the complete one (%" PRIu64
                 "): recovery does not read it; retention deletes it",
                 f->name, f->gen, log->recovery.complete_gen);
        if (prev && !new_gen && f->seq > prev->seq + 1) {
            uint64_t from = log->files[i - 1].seq + 1, to = f->seq - 1;
            if (from == to)
                note(&log->problems,
                     "wal.%010" PRIu64 ": missing in the middle of the log (1 file lost)", from);
            else
                note(&log->problems,
                     "wal.%010" PRIu64 "..wal.%010" PRIu64
                     ": missing in the middle of the log (%" PRIu64 " files lost)",
                     from, to, to - from + 1);
        }
        judge_file(r, f);
    }
    decide(r);
    predict_groups(r);
    rc->have_capacity = newest != NULL;
    rc->capacity = newest ? newest->capacity : 0;
    rc->outcome = !newest                       ? "fails: no readable log file"
                  : rc->live_max_len > newest->max_msg_size
                      ? "fails: a live message longer than max_msg_size"
                  : segment_exists ? "refused while the segment exists"
                                   : "restores the live messages";
    log->ok = log->problems.count == 0;
}

/* ------------------------------------------------------------------ the log: the cross-check */

/*
 * Verify's check that the log still holds what a rebuild must restore. A message the segment
 * keeps (READY, INFLIGHT, DELAYED, DEAD: maintain.c's kept_state(); a FENCED slot is a
 * copy-out's source, its copy is kept) names in wal_seq the file of its latest PUBLISH, and
 * retention keeps that file and every later one; so a PUBLISH of its id (or a checkpoint copy
 * that recovery reads, i.e. closed) must be in a file >= wal_seq. The slots are read before the
 * log and again after: a slot holding the same message (gen, id, wal_seq unchanged) held it
 * and pinned its file all through the read, so a PUBLISH missing then is lost, not acked or
 * moved meanwhile. A slot that changed proves nothing and is left out.
 */
struct kept {
    uint32_t index, wal_seq;
    uint64_t id, gen;
};
struct kept_set {
    struct kept *v; /* by slot index, as the walk goes */
    size_t n, cap;
    bool oom;
};

static bool kept_inspect_state(int st)
{
    return st == INSPECT_SLOT_READY || st == INSPECT_SLOT_INFLIGHT ||
           st == INSPECT_SLOT_DELAYED || st == INSPECT_SLOT_DEAD;
}

/* fn(arg, slot) for each non-free slot of seg. 0 or inspect_slots()'s error. */
static int walk_slots(struct inspect_segment *seg, void (*fn)(void *, const struct inspect_slot *),
                      void *arg)
{
    enum { BATCH = 256 };
    struct inspect_slot *buf = malloc(BATCH * sizeof(*buf));
    if (!buf)
        return -ENOMEM;
    struct inspect_slot_cursor cur;
    inspect_slot_cursor_init(&cur, 0);
    uint32_t n, cap = seg->seg.layout.capacity;
    int err = 0;
    while (cur.next < cap && (err = inspect_slots(seg, &cur, buf, BATCH, &n, NULL)) == 0)
        for (uint32_t i = 0; i < n; i++)
            fn(arg, &buf[i]);
    free(buf);
    return err;
}

static void collect_kept(void *arg, const struct inspect_slot *sl)
{
    struct kept_set *k = arg;
    if (!kept_inspect_state(sl->state) || !sl->has_wal_seq || k->oom)
        return; /* no wal_seq: a copy whose copy-out was cut short, a duplicate (DESIGN) */
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 256;
        struct kept *nv = realloc(k->v, cap * sizeof(*nv));
        if (!nv) {
            k->oom = true;
            return;
        }
        k->v = nv;
        k->cap = cap;
    }
    k->v[k->n++] = (struct kept){sl->index, sl->wal_seq, sl->id, sl->gen};
}

/* Open NAME's segment and read the messages it keeps; its log must be dir. 0 (*seg open), or
 * why not in *why. */
static int kept_read(const char *name, const char *dir, struct inspect_segment **seg,
                     struct kept_set *k, char *why, size_t why_size)
{
    int err = inspect_segment_open(name, seg, NULL);
    if (err) {
        snprintf(why, why_size, "the segment cannot be read: %s", strerror(-err));
        return err;
    }
    const struct seg_layout *l = &(*seg)->seg.layout; /* validated: log_dir NUL-terminated */
    struct stat a, b;
    if (io_fstatat(AT_FDCWD, l->log_dir, &a, 0) != 0 || io_fstatat(AT_FDCWD, dir, &b, 0) != 0 ||
        a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        snprintf(why, why_size, "the segment's log is %s, not this directory", l->log_dir);
        err = -EXDEV;
    } else if ((err = walk_slots(*seg, collect_kept, k)) == 0 && k->oom) {
        err = -ENOMEM;
    }
    if (err) {
        if (err != -EXDEV)
            snprintf(why, why_size, "the slots cannot be read: %s", strerror(-err));
        inspect_segment_close(*seg);
        *seg = NULL;
    }
    return err;
}

static int by_published_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = ((const struct inspect_published *)b)->id;
    return x < y ? -1 : x > y;
}

struct kept_check {
    struct inspect_log *log;
    const struct kept_set *k;
    size_t at;
};

static void check_kept(void *arg, const struct inspect_slot *sl)
{
    struct kept_check *c = arg;
    while (c->at < c->k->n && c->k->v[c->at].index < sl->index)
        c->at++;
    if (c->at == c->k->n || c->k->v[c->at].index != sl->index)
        return;
    const struct kept *k = &c->k->v[c->at];
    if (!kept_inspect_state(sl->state) || sl->gen != k->gen || sl->id != k->id ||
        !sl->has_wal_seq || sl->wal_seq != k->wal_seq)
        return; /* it moved on during the read: nothing proven */
    struct inspect_log *log = c->log;
    log->kept_checked++;
    const struct inspect_published *p = bsearch(&k->id, log->published, log->n_published,
                                                sizeof(*p), by_published_id);
    if (p && p->seq >= k->wal_seq)
        return;
    log->lost_publishes++;
    if (p)
        note(&log->problems,
             "lost publish of id %" PRIu64 " (slot %" PRIu32 " holds it; no PUBLISH in "
             "wal.%010" PRIu32 " or later, only in wal.%010" PRIu64
             ", which retention may delete): a rebuild would lose it",
             k->id, k->index, k->wal_seq, p->seq);
    else
        note(&log->problems,
             "lost publish of id %" PRIu64 " (slot %" PRIu32 " holds it; no PUBLISH in "
             "wal.%010" PRIu32 " or later): a rebuild would lose it",
             k->id, k->index, k->wal_seq);
}

/* After the read: check the kept messages again and say what the holes were. */
static void cross_check(struct log_read *r, struct inspect_segment *seg, const struct kept_set *k)
{
    struct inspect_log *log = r->log;
    uint64_t holes = 0;
    for (size_t i = 0; i < log->n_files; i++)
        holes += log->files[i].holes + (log->files[i].tail_zeros != 0);
    struct kept_check c = {log, k, 0};
    int err = walk_slots(seg, check_kept, &c);
    if (err) { /* nothing proven: the holes stay unexplained */
        log->unexplained += holes;
        note(r->strict && holes ? &log->problems : &log->warnings,
             "the segment's messages could not be checked against the log (%s)%s",
             strerror(-err), holes ? ": its holes are unexplained (a failed or killed append, "
                                     "or lost data)" : "");
        return;
    }
    log->cross_checked = true;
    if (holes && !log->lost_publishes)
        note(&log->warnings,
             "%" PRIu64 " hole%s: every message the segment holds (%" PRIu64
             ") has its PUBLISH in the log, so %s appends that never finished (a lost ACK "
             "there would only redeliver its message after a rebuild)",
             holes, holes == 1 ? "" : "s", log->kept_checked, holes == 1 ? "it is" : "they are");
}

int inspect_log_check(const char *dir, const struct inspect_log_opts *o, struct inspect_log **out)
{
    struct log_read r = {.log = calloc(1, sizeof(struct inspect_log)),
                         .holes = o->segment_exists ? HOLES_UNCHECKED : HOLES_NO_SEGMENT,
                         .strict = o->strict};
    if (!r.log)
        return -ENOMEM;
    struct inspect_segment *seg = NULL;
    struct kept_set kept = {0};
    char unchecked[2 * SHMQ_LOG_DIR_MAX] = ""; /* why the segment's messages are not checked */
    if (o->name && o->segment_exists &&
        kept_read(o->name, dir, &seg, &kept, unchecked, sizeof(unchecked)) == 0)
        r.holes = HOLES_CHECKED; /* read before the log */
    char hp[PATH_MAX];
    struct log_head head;
    snprintf(hp, sizeof(hp), "%s/head", dir);
    int hfd = io_open(hp, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW, 0);
    if (hfd >= 0) { /* a copy, read with pread: nothing of it is mapped */
        if (io_pread(hfd, &head, sizeof(head), 0) == (ssize_t)sizeof(head) && loghead_valid(&head)) {
            r.have_head = true;
            r.complete_gen = atomic_load_explicit(&head.complete_gen, memory_order_relaxed);
            r.log->recovery.have_head = true;
            r.log->recovery.gen = atomic_load_explicit(&head.gen, memory_order_relaxed);
            r.log->recovery.complete_gen = r.complete_gen;
        }
        io_close(hfd);
    }
    int err = list_files(&r, dir);
    if (!err) {
        int dfd = io_open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0) {
            err = dfd;
        } else {
            for (size_t i = 0; i < r.log->n_files && !r.oom; i++)
                read_file(&r, dfd, &r.log->files[i]);
            io_close(dfd);
            err = r.oom ? -ENOMEM : 0;
        }
    }
    if (!err) {
        judge(&r, o->segment_exists);
        err = r.oom ? -ENOMEM : 0;
    }
    if (!err && seg) {
        cross_check(&r, seg, &kept);
    } else if (!err && unchecked[0]) {
        note(&r.log->warnings, "the segment's messages were not checked against the log: %s",
             unchecked);
    }
    inspect_segment_close(seg);
    free(kept.v);
    free(r.v);
    if (err) {
        inspect_log_free(r.log);
        return err;
    }
    r.log->ok = r.log->problems.count == 0;
    *out = r.log;
    return 0;
}

int inspect_log_read(const char *dir, bool segment_exists, struct inspect_log **out)
{
    struct inspect_log_opts o = {.segment_exists = segment_exists};
    return inspect_log_check(dir, &o, out);
}

void inspect_log_free(struct inspect_log *log)
{
    if (!log)
        return;
    free(log->published);
    free(log->files);
    free(log);
}
