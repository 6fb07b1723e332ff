/*
 * dump.c - `shmq dump NAME [--json]`: print a queue's segment without taking part in the queue.
 *
 * Read-only by construction: seg_open_readonly() (snapshot.c: segment_open(name, true, ...)
 * plus a check that the file is a regular one, so that a FIFO planted in /dev/shm cannot hang
 * the tool) validates the header and maps the segment PROT_READ; the tool never registers, writes,
 * or takes a ring ticket, so running it cannot change what it looks at.
 *
 * Shared memory is hostile input (docs/DESIGN.md, principle 4). The geometry (capacity, strides,
 * offsets, ring order) comes only from the validated private copy seg.layout, and is checked
 * once more against the mapping size (seg_check_geometry()) so that a validation bug cannot
 * turn into an out-of-bounds read. Every value read from shm that could steer a read (slot state,
 * owner, length, ring cell index, pid) goes through a range check before use; what fails one is
 * recorded as an inconsistency, printed under "errors", and makes the exit status 1. A SIGBUS
 * (the file shrank under the mapping) is caught and reported the same way.
 *
 * A live queue may change while it is dumped: each word is read once with a relaxed load, so a
 * dump is a best-effort picture, not an atomic snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "emit.h"
#include "layout.h"
#include "registry.h"
#include "ring.h"
#include "segment.h"
#include "slot.h"
#include "snapshot.h"

#define PREVIEW_BYTES 32u
#define ERRORS_KEPT 32u /* inconsistencies listed one by one; the rest are only counted */
#define ERROR_TEXT 160u

struct dump {
    const struct segment *seg;
    struct emitter em;
    uint64_t now_ns; /* CLOCK_MONOTONIC, the clock of every *_ns in the segment */
    unsigned n_errors;
    char errors[ERRORS_KEPT][ERROR_TEXT];
};

static const char *const slot_state_names[] = {"FREE",    "RESERVED", "READY", "INFLIGHT",
                                               "DELAYED", "DEAD",     "FENCED"};
#define N_SLOT_STATES (sizeof(slot_state_names) / sizeof(slot_state_names[0]))

static const char *const proc_state_names[] = {"FREE", "CLAIMED", "ACTIVE", "FENCED"};
#define N_PROC_STATES (sizeof(proc_state_names) / sizeof(proc_state_names[0]))

static const char *const counter_names[] = {"published",   "delivered",     "acked",
                                            "nacked",      "redelivered",   "dead_lettered",
                                            "reclaimed",   "dedup_hits"};
/* one name per enum counter (layout.h): a counter added there must be named here */
_Static_assert(sizeof(counter_names) / sizeof(counter_names[0]) == CNT__COUNT,
               "counter_names matches enum counter");

void cmd_dump_help(FILE *out)
{
    fprintf(out,
            "Usage: %s dump NAME [--json]\n"
            "\n"
            "Print everything in the segment of the queue NAME (/dev/shm/shmq.NAME) without\n"
            "taking part in the queue: the segment is validated and mapped read-only; the tool\n"
            "does not register and writes nothing. Safe on a live queue, where the picture is\n"
            "best-effort (each word is read once), not an atomic snapshot.\n"
            "\n"
            "Sections:\n"
            "  header       magic, format version, header and segment size, creation time\n"
            "  config       capacity, max_msg_size, max_procs, timeouts, attempts, backoff, mode\n"
            "  layout       slot stride, ring order and size, offsets of every region\n"
            "  state        next_id, futex words and waiter counts, maintenance passes\n"
            "  lease        the maintenance lease: holder (registry index), priority, expiry\n"
            "  registry     each non-free entry: index, state, gen, pid, role, name, heartbeat\n"
            "               age in ms, alive/dead (kill(pid, 0) plus the start time in\n"
            "               /proc/PID/stat, so a reused pid counts as dead)\n"
            "  rings        free, ready and dead rings: head, tail, threshold, non-empty cells\n"
            "  slots        each non-free slot: index, state, gen, owner (registry index), id,\n"
            "               attempt, len, age in ms, deadline, ticket, delivery token, dead\n"
            "               reason, linger (a former owner that may still read it), and the\n"
            "               first %u payload bytes (as text if printable, else hex)\n"
            "               States: RESERVED READY INFLIGHT DELAYED DEAD FENCED (INVALID: none\n"
            "               of these, an inconsistency)\n"
            "  slot_counts  slots by state\n"
            "  counters     published, delivered, acked, ... summed over the live registry\n"
            "               entries and the header's retired counters\n"
            "  retired_counters  the header's part: counters of released registry entries\n"
            "  errors       inconsistencies: a state, owner, linger, length or ring index out\n"
            "               of range\n"
            "\n"
            "Options:\n"
            "  --json       print one JSON document (same fields) instead of text\n"
            "  -h, --help   print this help\n"
            "\n"
            "Exit status:\n"
            "  0  the segment was dumped and is consistent\n"
            "  1  runtime error: no such queue, no permission, another format version, a\n"
            "     truncated or corrupted segment (reason on stderr). When the header is valid\n"
            "     but entries are not, the dump is still printed with its errors listed.\n"
            "     If the file shrinks while it is read (SIGBUS), the output stops there.\n"
            "  2  usage error\n"
            "\n"
            "Examples:\n"
            "  %s dump orders\n"
            "  %s dump orders --json | jq '.slots[] | select(.state == \"INFLIGHT\")'\n"
            "  %s dump orders --json | jq .slot_counts.ready\n",
            cli_progname, PREVIEW_BYTES, cli_progname, cli_progname, cli_progname);
}

static void inconsistent(struct dump *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record an inconsistency found in shm; it will be listed under "errors" and exit status is 1. */
static void inconsistent(struct dump *d, const char *fmt, ...)
{
    if (d->n_errors < ERRORS_KEPT) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->errors[d->n_errors], ERROR_TEXT, fmt, ap);
        va_end(ap);
    }
    d->n_errors++;
}

static uint64_t now_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Milliseconds from then_ns to now (negative if then_ns lies in the future). */
static int64_t age_ms(const struct dump *d, uint64_t then_ns)
{
    return (int64_t)(d->now_ns - then_ns) / 1000000;
}

/*
 * The maintenance lease word, decoded as lease.c writes it: holder << 48 | priority << 47 |
 * expiry_ms, holder = registry index + 1 (0: nobody), expiry_ms counted from created_ns.
 */
static void dump_lease(struct dump *d, uint64_t w)
{
    const struct seg_layout *l = &d->seg->layout;
    struct emitter *e = &d->em;
    uint32_t holder = (uint32_t)(w >> 48);
    uint64_t expiry_ms = w & ((1ull << 47) - 1);

    emit_begin(e, "lease", NULL, EMIT_INLINE);
    emit_hex(e, "word", w);
    if (holder == 0) {
        emit_null(e, "holder");
        emit_null(e, "priority");
        emit_null(e, "expires_in_ms");
    } else {
        emit_u64(e, "holder", holder - 1);
        emit_u64(e, "priority", (w >> 47) & 1);
        emit_i64(e, "expires_in_ms",
                 (int64_t)(l->created_ns / 1000000 + expiry_ms) - (int64_t)(d->now_ns / 1000000));
        if (holder - 1 >= l->max_procs)
            inconsistent(d, "lease: holder %" PRIu32 " >= max_procs %" PRIu32, holder - 1,
                         l->max_procs);
    }
    emit_end(e);
}

static void dump_header(struct dump *d)
{
    const struct seg_layout *l = &d->seg->layout;
    struct emitter *e = &d->em;
    char magic[9] = {0};
    memcpy(magic, &l->magic, 8);

    emit_begin(e, "header", NULL, EMIT_BLOCK);
    emit_hex(e, "magic", l->magic);
    emit_bytes(e, "magic_text", magic, bytes_printable((unsigned char *)magic, 8) ? 8 : 0);
    emit_u64(e, "version", l->version);
    emit_u64(e, "header_size", l->header_size);
    emit_u64(e, "total_size", l->total_size);
    emit_u64(e, "mapped_size", d->seg->size);
    emit_hex(e, "header_crc", l->header_crc);
    emit_u64(e, "created_ns", l->created_ns);
    emit_i64(e, "created_age_ms", age_ms(d, l->created_ns));
    emit_end(e);

    emit_begin(e, "config", NULL, EMIT_BLOCK);
    emit_u64(e, "capacity", l->capacity);
    emit_u64(e, "max_msg_size", l->max_msg_size);
    emit_u64(e, "max_procs", l->max_procs);
    emit_u64(e, "heartbeat_timeout_ms", l->heartbeat_timeout_ms);
    emit_u64(e, "ack_deadline_ms", l->ack_deadline_ms);
    emit_u64(e, "max_attempts", l->max_attempts);
    emit_u64(e, "backoff_base_ms", l->backoff_base_ms);
    emit_u64(e, "backoff_cap_ms", l->backoff_cap_ms);
    emit_double(e, "backoff_multiplier", l->backoff_multiplier);
    emit_oct(e, "mode", l->mode);
    emit_end(e);

    emit_begin(e, "layout", NULL, EMIT_BLOCK);
    emit_u64(e, "slot_stride", l->slot_stride);
    emit_u64(e, "ring_order", l->ring_order);
    emit_u64(e, "ring_cells", 1ull << l->ring_order);
    emit_u64(e, "ring_size", l->ring_size);
    emit_u64(e, "registry_off", l->registry_off);
    emit_u64(e, "slots_off", l->slots_off);
    emit_u64(e, "free_ring_off", l->free_ring_off);
    emit_u64(e, "ready_ring_off", l->ready_ring_off);
    emit_u64(e, "dead_ring_off", l->dead_ring_off);
    emit_end(e);

    const struct seg_header *h = d->seg->base;
    emit_begin(e, "state", NULL, EMIT_BLOCK);
    emit_u64(e, "next_id", atomic_load_explicit(&h->next_id, memory_order_relaxed));
    emit_u64(e, "ready_futex", atomic_load_explicit(&h->ready_futex, memory_order_relaxed));
    emit_u64(e, "ready_waiters", atomic_load_explicit(&h->ready_waiters, memory_order_relaxed));
    emit_u64(e, "free_futex", atomic_load_explicit(&h->free_futex, memory_order_relaxed));
    emit_u64(e, "free_waiters", atomic_load_explicit(&h->free_waiters, memory_order_relaxed));
    emit_u64(e, "maint_passes", atomic_load_explicit(&h->maint_passes, memory_order_relaxed));
    emit_end(e);
    dump_lease(d, atomic_load_explicit(&h->lease_word, memory_order_relaxed));
}

/* "alive", "dead", "pid-reused" or "no-pid": kill(pid, 0) plus the start time check. */
static const char *liveness(int32_t pid, uint64_t start_time)
{
    if (pid <= 0) /* never kill() 0 or a negative pid: that names process groups */
        return "no-pid";
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return "dead";
    /* the same rule as registry_pid_dead(): a start time other than the recorded one */
    uint64_t now_start = proc_start_time(pid);
    if (now_start != 0 && now_start != start_time)
        return "pid-reused";
    return "alive";
}

static void emit_role(struct emitter *e, uint32_t role)
{
    char buf[64] = "";
    size_t n = 0;
    static const struct {
        uint32_t bit;
        const char *name;
    } roles[] = {
        {ROLE_CLIENT, "client"}, {ROLE_CONSUMER, "consumer"}, {ROLE_MAINTAINER, "maintainer"}};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (role & roles[i].bit)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? "|" : "", roles[i].name);
    uint32_t unknown = role & ~(uint32_t)(ROLE_CLIENT | ROLE_CONSUMER | ROLE_MAINTAINER);
    if (unknown || n == 0)
        snprintf(buf + n, sizeof(buf) - n, "%s0x%" PRIx32, n ? "|" : "", unknown);
    emit_word(e, "role", buf);
}

static void dump_registry(struct dump *d, uint64_t totals[CNT__COUNT])
{
    const struct seg_layout *l = &d->seg->layout;
    struct emitter *e = &d->em;
    unsigned in_use = 0, alive = 0;

    emit_begin(e, "registry", NULL, EMIT_ARRAY);
    for (uint32_t i = 0; i < l->max_procs; i++) {
        struct proc_entry *p = segment_proc(d->seg, i);
        if (!p)
            break;
        uint64_t word = atomic_load_explicit(&p->word, memory_order_acquire);
        unsigned state = (unsigned)(word & 15u);
        if (state == PROC_FREE)
            continue;
        in_use++;
        int32_t pid = p->pid;
        uint32_t role = p->role;
        uint64_t start_time = p->start_time;
        uint64_t heartbeat_ns = atomic_load_explicit(&p->heartbeat_ns, memory_order_relaxed);
        char name[SHMQ_CONSUMER_NAME_MAX];
        memcpy(name, p->name, sizeof(name));
        uint64_t counters[CNT__COUNT];
        for (int c = 0; c < CNT__COUNT; c++)
            counters[c] = atomic_load_explicit(&p->counters[c], memory_order_relaxed);

        char label[32];
        snprintf(label, sizeof(label), "entry %" PRIu32, i);
        emit_begin(e, NULL, label, EMIT_INLINE);
        emit_u64(e, "index", i);
        if (state < N_PROC_STATES) {
            emit_word(e, "state", proc_state_names[state]);
        } else {
            emit_word(e, "state", "INVALID");
            inconsistent(d, "registry entry %" PRIu32 ": invalid state %u", i, state);
        }
        emit_u64(e, "gen", word >> 4);
        emit_i64(e, "pid", pid);
        emit_role(e, role);
        emit_bytes(e, "name", name, strnlen(name, sizeof(name)));
        emit_u64(e, "start_time", start_time);
        if (heartbeat_ns) {
            int64_t hb_age = age_ms(d, heartbeat_ns);
            emit_i64(e, "heartbeat_age_ms", hb_age);
            emit_bool(e, "heartbeat_stale", hb_age > (int64_t)l->heartbeat_timeout_ms);
        } else {
            emit_null(e, "heartbeat_age_ms");
            emit_null(e, "heartbeat_stale");
        }
        const char *live = liveness(pid, start_time);
        bool is_alive = strcmp(live, "alive") == 0;
        alive += is_alive;
        emit_word(e, "liveness", live);
        emit_bool(e, "alive", is_alive);
        if (pid <= 0 && state == PROC_ACTIVE)
            inconsistent(d, "registry entry %" PRIu32 ": ACTIVE with pid %" PRId32, i, pid);
        emit_begin(e, "counters", NULL, EMIT_INLINE);
        for (int c = 0; c < CNT__COUNT; c++) {
            emit_u64(e, counter_names[c], counters[c]);
            totals[c] += counters[c];
        }
        emit_end(e);
        emit_end(e);
    }
    emit_end(e);
    emit_begin(e, "registry_summary", NULL, EMIT_INLINE);
    emit_u64(e, "entries", l->max_procs);
    emit_u64(e, "in_use", in_use);
    emit_u64(e, "alive", alive);
    emit_end(e);
}

static void dump_ring(struct dump *d, const char *name, const struct ring *r)
{
    const struct seg_layout *l = &d->seg->layout;
    struct emitter *e = &d->em;
    uint64_t cells = r->mask + 1, nonempty = 0, bad = 0;
    for (uint64_t pos = 0; pos < cells; pos++) {
        struct ring_cell c = ring_cell_at(r, pos);
        if (c.empty)
            continue;
        nonempty++;
        if (c.idx >= l->capacity) {
            if (bad++ == 0)
                inconsistent(d,
                             "%s ring: cell %" PRIu64 " holds slot index %" PRIu32
                             " >= capacity %" PRIu32,
                             name, pos, c.idx, l->capacity);
        }
    }
    if (bad > 1)
        inconsistent(d, "%s ring: %" PRIu64 " cells hold an out-of-range slot index", name, bad);

    emit_begin(e, name, NULL, EMIT_INLINE);
    emit_u64(e, "head", ring_head(r));
    emit_u64(e, "tail", ring_tail(r));
    emit_i64(e, "threshold", atomic_load_explicit(&r->shm->threshold, memory_order_relaxed));
    emit_u64(e, "nonempty_cells", nonempty);
    emit_u64(e, "cells", cells);
    emit_end(e);
}

static void dump_rings(struct dump *d)
{
    emit_begin(&d->em, "rings", NULL, EMIT_BLOCK);
    dump_ring(d, "free", &d->seg->free_ring);
    dump_ring(d, "ready", &d->seg->ready_ring);
    dump_ring(d, "dead", &d->seg->dead_ring);
    emit_end(&d->em);
}

static const char *dead_reason_name(uint32_t reason)
{
    switch (reason) {
    case SHMQ_DEAD_MAX_ATTEMPTS: return "max-attempts";
    case SHMQ_DEAD_CORRUPT: return "corrupt";
    case 0: return "none";
    default: return "unknown";
    }
}

/* One non-free slot. state is the slot's state field, maybe out of range (then "INVALID"). */
static void dump_slot(struct dump *d, uint32_t idx, struct slot *sl, uint64_t w)
{
    const struct seg_layout *l = &d->seg->layout;
    struct emitter *e = &d->em;
    unsigned state = sw_state(w);
    uint32_t owner = sw_owner(w);
    uint64_t ticket_w = atomic_load_explicit(&sl->ticket, memory_order_relaxed);
    uint64_t deadline_w = atomic_load_explicit(&sl->deadline, memory_order_relaxed);
    uint64_t id = sl->id, publish_ns = sl->publish_ns;
    uint32_t len = sl->len, attempt = sl->attempt, dead_reason = sl->dead_reason;
    uint32_t linger = atomic_load_explicit(&sl->linger, memory_order_relaxed);

    char label[32];
    snprintf(label, sizeof(label), "slot %" PRIu32, idx);
    emit_begin(e, NULL, label, EMIT_INLINE);
    emit_u64(e, "index", idx);
    if (state < N_SLOT_STATES) {
        emit_word(e, "state", slot_state_names[state]);
    } else {
        emit_word(e, "state", "INVALID");
        inconsistent(d, "slot %" PRIu32 ": invalid state %u", idx, state);
    }
    emit_u64(e, "gen", sw_gen(w));
    if (owner == NO_OWNER) {
        emit_null(e, "owner");
    } else {
        emit_u64(e, "owner", owner);
        if (owner >= l->max_procs)
            inconsistent(d, "slot %" PRIu32 ": owner %" PRIu32 " >= max_procs %" PRIu32, idx, owner,
                         l->max_procs);
    }
    emit_u64(e, "id", id);
    emit_u64(e, "attempt", attempt);
    emit_u64(e, "len", len);
    if (publish_ns)
        emit_i64(e, "age_ms", age_ms(d, publish_ns));
    else
        emit_null(e, "age_ms");

    uint64_t v;
    if ((state == SLOT_INFLIGHT || state == SLOT_DELAYED) && tagged_get(deadline_w, w, &v))
        emit_i64(e, "deadline_in_ms",
                 (int64_t)(l->created_ns / 1000000 + v) - (int64_t)(d->now_ns / 1000000));
    else
        emit_null(e, "deadline_in_ms");
    if (tagged_get(ticket_w, w, &v))
        emit_u64(e, "ticket", v);
    else
        emit_null(e, "ticket");
    if (state == SLOT_INFLIGHT)
        emit_hex(e, "token", token_make(idx, w));
    else
        emit_null(e, "token");
    if (state == SLOT_DEAD)
        emit_word(e, "dead_reason", dead_reason_name(dead_reason));
    else
        emit_null(e, "dead_reason");
    /* linger: registry index + 1 of a former owner that may still read the payload */
    if (linger == 0) {
        emit_null(e, "linger");
    } else {
        emit_u64(e, "linger", linger - 1);
        if (linger - 1 >= l->max_procs)
            inconsistent(d, "slot %" PRIu32 ": linger %" PRIu32 " >= max_procs %" PRIu32, idx,
                         linger - 1, l->max_procs);
    }

    /* len comes from shm: never read past max_msg_size (seg_check_geometry(): inside the slot). */
    if (len > l->max_msg_size) {
        inconsistent(d, "slot %" PRIu32 ": len %" PRIu32 " > max_msg_size %" PRIu32, idx, len,
                     l->max_msg_size);
        emit_null(e, "preview_encoding");
        emit_null(e, "preview");
    } else {
        unsigned char buf[PREVIEW_BYTES];
        size_t n = len < PREVIEW_BYTES ? len : PREVIEW_BYTES;
        memcpy(buf, slot_payload(sl), n);
        if (bytes_printable(buf, n)) {
            emit_word(e, "preview_encoding", "text");
            emit_bytes(e, "preview", buf, n);
        } else {
            emit_word(e, "preview_encoding", "hex");
            emit_hexbytes(e, "preview", buf, n);
        }
    }
    emit_bool(e, "preview_truncated", len > PREVIEW_BYTES && len <= l->max_msg_size);
    emit_end(e);
}

static void dump_slots(struct dump *d)
{
    const struct seg_layout *l = &d->seg->layout;
    struct emitter *e = &d->em;
    uint64_t counts[N_SLOT_STATES] = {0}, invalid = 0;

    emit_begin(e, "slots", NULL, EMIT_ARRAY);
    for (uint32_t i = 0; i < l->capacity; i++) {
        struct slot *sl = segment_slot(d->seg, i);
        if (!sl)
            break;
        /* acquire: pairs with the writer's release of the state word, so the fields below
         * belong to (at least) this state; they may still be newer on a live queue. */
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
        unsigned state = sw_state(w);
        if (state < N_SLOT_STATES)
            counts[state]++;
        else
            invalid++;
        if (state != SLOT_FREE)
            dump_slot(d, i, sl, w);
    }
    emit_end(e);

    emit_begin(e, "slot_counts", NULL, EMIT_INLINE);
    for (unsigned s = 0; s < N_SLOT_STATES; s++) {
        char key[16];
        size_t k;
        for (k = 0; slot_state_names[s][k] && k < sizeof(key) - 1; k++)
            key[k] = (char)(slot_state_names[s][k] | 0x20); /* lowercase */
        key[k] = '\0';
        emit_u64(e, key, counts[s]);
    }
    emit_u64(e, "invalid", invalid);
    emit_u64(e, "total", l->capacity);
    emit_end(e);
}

static void dump_counters(struct dump *d, const uint64_t from_entries[CNT__COUNT])
{
    const struct seg_header *h = d->seg->base;
    struct emitter *e = &d->em;
    uint64_t retired[CNT__COUNT];
    for (int c = 0; c < CNT__COUNT; c++)
        retired[c] = atomic_load_explicit(&h->retired[c], memory_order_relaxed);

    emit_begin(e, "counters", NULL, EMIT_BLOCK);
    for (int c = 0; c < CNT__COUNT; c++)
        emit_u64(e, counter_names[c], from_entries[c] + retired[c]);
    emit_end(e);
    emit_begin(e, "retired_counters", NULL, EMIT_INLINE);
    for (int c = 0; c < CNT__COUNT; c++)
        emit_u64(e, counter_names[c], retired[c]);
    emit_end(e);
}

static void dump_errors(struct dump *d)
{
    struct emitter *e = &d->em;
    if (!e->json && d->n_errors == 0)
        return;
    emit_u64(e, "inconsistencies", d->n_errors);
    emit_begin(e, "errors", NULL, EMIT_ARRAY);
    unsigned kept = d->n_errors < ERRORS_KEPT ? d->n_errors : ERRORS_KEPT;
    for (unsigned i = 0; i < kept; i++)
        emit_bytes(e, NULL, d->errors[i], strlen(d->errors[i]));
    if (d->n_errors > kept) {
        char more[64];
        snprintf(more, sizeof(more), "... and %u more", d->n_errors - kept);
        emit_bytes(e, NULL, more, strlen(more));
    }
    emit_end(e);
}

/* SIGBUS: the segment file shrank under the mapping. Jump back to cmd_dump(). */
static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
    if (bus_armed)
        siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const char *open_error(int err)
{
    switch (err) {
    case -ENOENT: return "no such queue";
    case -EACCES: return "permission denied";
    case -EPROTO: return "segment of another format version";
    case -EBADMSG: return "segment is truncated, corrupted or not a shmq segment";
    case -EMEDIUMTYPE: return "not a regular file, so not a shmq segment";
    default: return strerror(-err);
    }
}

/* Parse argv: NAME and --json. 0, or CLI_EXIT_USAGE (message printed), or -1 for --help. */
static int parse_args(int argc, char **argv, const char **name, bool *json)
{
    bool options_done = false;
    *name = NULL;
    *json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                options_done = true;
            } else if (strcmp(a, "--json") == 0) {
                *json = true;
            } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                return -1;
            } else {
                fprintf(stderr, "%s dump: unknown option '%s' (try '%s dump --help')\n",
                        cli_progname, a, cli_progname);
                return CLI_EXIT_USAGE;
            }
        } else if (*name) {
            fprintf(stderr, "%s dump: unexpected argument '%s' (one queue NAME only)\n",
                    cli_progname, a);
            return CLI_EXIT_USAGE;
        } else {
            *name = a;
        }
    }
    if (!*name) {
        fprintf(stderr, "%s dump: missing queue NAME (try '%s dump --help')\n", cli_progname,
                cli_progname);
        return CLI_EXIT_USAGE;
    }
    if (segment_check_name(*name) != 0) {
        fprintf(stderr, "%s dump: invalid queue name '%s' (1..%d bytes of [A-Za-z0-9._-])\n",
                cli_progname, *name, SHMQ_NAME_MAX);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cmd_dump(int argc, char **argv)
{
    const char *name;
    bool json;
    int rc = parse_args(argc, argv, &name, &json);
    if (rc < 0) {
        cmd_dump_help(stdout);
        return CLI_EXIT_OK;
    }
    if (rc)
        return rc;

    static struct segment seg; /* static: unchanged by siglongjmp() */
    static struct dump d;
    memset(&seg, 0, sizeof(seg));
    int err = seg_open_readonly(name, &seg);
    if (err) {
        fprintf(stderr, "%s dump: %s: %s (/dev/shm/shmq.%s: %s)\n", cli_progname, name,
                open_error(err), name, err == ERR_NOT_REGULAR ? "not a file" : strerror(-err));
        return CLI_EXIT_RUNTIME;
    }
    const char *bad = seg_check_geometry(&seg);
    if (bad) {
        fprintf(stderr, "%s dump: %s: segment layout inconsistent after validation: %s\n",
                cli_progname, name, bad);
        segment_close(&seg);
        return CLI_EXIT_RUNTIME;
    }

    memset(&d, 0, sizeof(d));
    d.seg = &seg;
    d.now_ns = now_monotonic_ns();
    emit_init(&d.em, stdout, json);

    struct sigaction sa = {.sa_handler = on_sigbus}, old_sa;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old_sa);
    if (sigsetjmp(bus_jump, 1)) {
        bus_armed = 0;
        sigaction(SIGBUS, &old_sa, NULL);
        fflush(stdout);
        fprintf(stderr, "\n%s dump: %s: segment truncated while reading it (SIGBUS)\n",
                cli_progname, name);
        segment_close(&seg);
        return CLI_EXIT_RUNTIME;
    }
    bus_armed = 1;
    emit_bytes(&d.em, "queue", name, strlen(name));
    uint64_t totals[CNT__COUNT] = {0};
    dump_header(&d);
    dump_registry(&d, totals);
    dump_rings(&d);
    dump_slots(&d);
    dump_counters(&d, totals);
    dump_errors(&d);
    emit_finish(&d.em);

    bus_armed = 0;
    sigaction(SIGBUS, &old_sa, NULL);
    segment_close(&seg);
    if (d.n_errors) {
        fflush(stdout);
        fprintf(stderr,
                "%s dump: %s: segment is corrupted: %u inconsistenc%s (listed under "
                "errors)\n",
                cli_progname, name, d.n_errors, d.n_errors == 1 ? "y" : "ies");
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}
