/*
 * snapshot.c - read-only views of a queue for `list`, `stat`, `top` (and the mapping `dump`
 * uses): see snapshot.h.
 *
 * Invariant: a read of shm is steered only by the validated private copy seg->layout, checked
 * against the mapping by seg_check_geometry(); values read from shm (states, owners, pids) are
 * range-checked before use. A SIGBUS (the file was truncated under the mapping) jumps back to
 * snapshot_take(), which reports -EFAULT.
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"
#include "ring.h"
#include "slot.h"

const char *const snapshot_counter_names[] = {
    "published", "delivered", "acked", "nacked", "redelivered", "dead_lettered", "reclaimed",
    "dedup_hits"};
/* one name per enum counter (layout.h): a counter added there must be named here */
_Static_assert(sizeof(snapshot_counter_names) / sizeof(snapshot_counter_names[0]) == CNT__COUNT,
               "snapshot_counter_names matches enum counter");

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* a + b <= limit without overflow. */
static bool fits(uint64_t off, uint64_t len, uint64_t limit)
{
    return off <= limit && len <= limit - off;
}

const char *seg_check_geometry(const struct segment *s)
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
    return NULL;
}

int seg_open_readonly(const char *name, struct segment *seg)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    if (err)
        return err;
    int fd = shm_open(shm_name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0)
        err = -errno;
    else if (!S_ISREG(st.st_mode))
        err = ERR_NOT_REGULAR;
    else
        err = segment_open_fd(fd, true, seg);
    close(fd);
    return err;
}

const char *seg_strerror(int err)
{
    if (err == ERR_NOT_REGULAR)
        return "not a regular file, so not a shmq segment";
    if (err == -EFAULT)
        return "segment truncated while it was read (SIGBUS)";
    return shmq_strerror(err);
}

/* "alive" per the registry's rule: the pid exists and its start time is the recorded one. */
static bool pid_alive(int32_t pid, uint64_t start_time)
{
    if (pid <= 0)
        return false;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return false;
    uint64_t now_start = proc_start_time(pid);
    return now_start == 0 || now_start == start_time;
}

static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
    if (bus_armed)
        siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void read_registry(const struct segment *seg, struct snapshot *s)
{
    const struct seg_layout *l = &seg->layout;
    for (uint32_t i = 0; i < l->max_procs; i++) {
        struct proc_entry *p = segment_proc(seg, i);
        /* acquire: pairs with G1 (attach): pid, role and name are complete */
        unsigned state = pw_state(atomic_load_explicit(&p->word, memory_order_acquire));
        if (state == PROC_FREE || state > PROC_FENCED)
            continue;
        for (int c = 0; c < CNT__COUNT; c++)
            s->counters[c] += atomic_load_explicit(&p->counters[c], memory_order_relaxed);
        uint64_t hb = atomic_load_explicit(&p->heartbeat_ns, memory_order_relaxed);
        struct snap_proc *o = &s->proc[s->n_proc++];
        o->index = i;
        o->pid = p->pid;
        o->role = p->role;
        o->state = (int)state;
        o->heartbeat_age_ms = hb == 0            ? -1
                              : hb < s->taken_ns ? (int64_t)((s->taken_ns - hb) / 1000000)
                                                 : 0;
        o->alive = pid_alive(o->pid, p->start_time);
        memcpy(o->name, p->name, sizeof(o->name));
        o->name[sizeof(o->name) - 1] = 0;
        o->inflight = 0;
        if (state == PROC_ACTIVE) {
            s->procs++;
            if (o->role & ROLE_CONSUMER)
                s->consumers++;
        }
    }
}

static struct snap_proc *proc_by_index(struct snapshot *s, uint32_t index)
{
    for (uint32_t i = 0; i < s->n_proc; i++)
        if (s->proc[i].index == index)
            return &s->proc[i];
    return NULL;
}

static void read_slots(const struct segment *seg, struct snapshot *s)
{
    const struct seg_layout *l = &seg->layout;
    uint64_t oldest_ns = 0;
    for (uint32_t i = 0; i < l->capacity; i++) {
        struct slot *sl = segment_slot(seg, i);
        /* acquire: pairs with the writer's release of the state word: publish_ns is (at
         * least) this message's */
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
        unsigned st = sw_state(w);
        switch (st) {
        case SLOT_FREE: s->free++; break;
        case SLOT_RESERVED: s->reserved++; break;
        case SLOT_READY: s->ready++; break;
        case SLOT_INFLIGHT: s->inflight++; break;
        case SLOT_DELAYED: s->delayed++; break;
        case SLOT_DEAD: s->dead++; break;
        case SLOT_FENCED: s->fenced++; break;
        default: s->invalid++; break;
        }
        if (st == SLOT_INFLIGHT) {
            struct snap_proc *p = proc_by_index(s, sw_owner(w));
            if (p)
                p->inflight++;
        }
        if (st == SLOT_READY || st == SLOT_INFLIGHT || st == SLOT_DELAYED) {
            uint64_t t = sl->publish_ns;
            if (t && t <= s->taken_ns && (oldest_ns == 0 || t < oldest_ns))
                oldest_ns = t;
        }
    }
    s->oldest_age_ms = oldest_ns ? (int64_t)((s->taken_ns - oldest_ns) / 1000000) : -1;
}

static void read_lease(const struct segment *seg, struct snapshot *s)
{
    const struct seg_layout *l = &seg->layout;
    uint64_t w = atomic_load_explicit(&seg->hdr->lease_word, memory_order_relaxed);
    uint32_t holder = (uint32_t)(w >> 48);
    uint64_t expiry_ms = w & ((1ull << 47) - 1);
    s->lease_priority = (int)((w >> 47) & 1);
    s->lease_pid = 0;
    s->lease_held = false;
    s->lease_expires_in_ms = 0;
    if (holder == 0 || holder - 1 >= l->max_procs)
        return;
    uint64_t now_ms = (s->taken_ns - l->created_ns) / 1000000;
    s->lease_expires_in_ms = (int64_t)expiry_ms - (int64_t)now_ms;
    struct snap_proc *p = proc_by_index(s, holder - 1);
    if (!p)
        return;
    s->lease_pid = p->pid;
    s->lease_held = s->lease_expires_in_ms >= 0 && p->state == SHMQ_PROC_ACTIVE && p->alive;
}

int snapshot_take(const struct segment *seg, struct snapshot *s)
{
    memset(s, 0, sizeof(*s));
    const struct seg_layout *l = &seg->layout;
    s->proc = calloc(l->max_procs ? l->max_procs : 1, sizeof(*s->proc));
    if (!s->proc)
        return -ENOMEM;
    layout_to_config(l, &s->cfg);
    if (l->durability != SHMQ_DURABILITY_NONE) {
        memcpy(s->log_dir, l->log_dir, sizeof(s->log_dir)); /* validated: NUL-terminated */
        s->log_dir[sizeof(s->log_dir) - 1] = '\0';
    }
    s->taken_ns = mono_ns();

    struct sigaction sa = {.sa_handler = on_sigbus}, old_sa;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old_sa);
    if (sigsetjmp(bus_jump, 1)) {
        bus_armed = 0;
        sigaction(SIGBUS, &old_sa, NULL);
        snapshot_free(s);
        return -EFAULT;
    }
    bus_armed = 1;
    for (int c = 0; c < CNT__COUNT; c++)
        s->counters[c] = atomic_load_explicit(&seg->hdr->retired[c], memory_order_relaxed);
    s->next_id = atomic_load_explicit(&seg->hdr->next_id, memory_order_relaxed);
    s->maint_passes = atomic_load_explicit(&seg->hdr->maint_passes, memory_order_relaxed);
    read_registry(seg, s);
    read_slots(seg, s);
    read_lease(seg, s);
    bus_armed = 0;
    sigaction(SIGBUS, &old_sa, NULL);
    return 0;
}

void snapshot_free(struct snapshot *s)
{
    free(s->proc);
    s->proc = NULL;
    s->n_proc = 0;
}

int snapshot_queue(const char *name, struct snapshot *s)
{
    struct segment seg;
    memset(&seg, 0, sizeof(seg));
    memset(s, 0, sizeof(*s));
    int err = seg_open_readonly(name, &seg);
    if (err)
        return err;
    if (seg_check_geometry(&seg)) {
        segment_close(&seg);
        return -EBADMSG;
    }
    err = snapshot_take(&seg, s);
    segment_close(&seg);
    return err;
}

const char *snapshot_durability(const struct snapshot *s)
{
    switch (s->cfg.durability) {
    case SHMQ_DURABILITY_NONE: return "none";
    case SHMQ_DURABILITY_PROCESS: return "process";
    case SHMQ_DURABILITY_SYNC: return "sync";
    default: return "unknown";
    }
}

const char *snapshot_watchdog(const struct snapshot *s, char *buf, size_t size)
{
    if (s->lease_pid == 0)
        snprintf(buf, size, "none");
    else if (!s->lease_held)
        snprintf(buf, size, "expired");
    else
        snprintf(buf, size, "%s:%d", s->lease_priority ? "active" : "cooperative",
                 (int)s->lease_pid);
    return buf;
}
