/*
 * test_inspect.c - the inspection layer (src/inspect/inspect.h) tells the truth about a queue
 * and survives whatever segment or log it is given.
 *
 * What is proved:
 *   - a snapshot of a live queue agrees with shmq_stats() (counters, slot counts, consumers,
 *     log bytes) and with what was done to it: next id, registry entries (pid, role, name,
 *     alive, in-flight count), slot states, the in-flight slot's id and delivery token, ring
 *     contents, the lease, the log position; reading it registers nothing;
 *   - the slot walk in small batches lists every non-free slot once and counts all of them;
 *   - the registry entry of a process that died holding a message is shown dead, holding it;
 *   - out-of-range states, owners, lingers, lengths, ring cells and lease holders are flagged
 *     on the item and described in the notes, never followed;
 *   - a missing, corrupted, truncated, foreign-version or non-regular segment is refused with
 *     its own error; a segment truncated under the mapping gives -EFAULT, not SIGBUS, and the
 *     SIGBUS handler of the program is the same after the read as before;
 *   - a log's files, record counts by type, keyed records, message bytes and id range match
 *     what was written, across two files, and the recovery prediction matches what
 *     shmq_recover() then restores;
 *   - damage to the log (garbage in a file, a file missing in the middle, a bad header, a torn
 *     tail in the newest file) is judged as `shmq wal verify` documents it.
 */
#include "helpers.h"

#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stddef.h>

#include "inspect.h"
#include "layout.h"
#include "registry.h"
#include "ring.h"
#include "segment.h"
#include "slot.h"
#include "wal.h"

TestSuite(inspect, .fini = h_cleanup, .timeout = 120);

/* ------------------------------------------------------------------ helpers */

static bool notes_have(const struct inspect_notes *n, const char *needle)
{
    for (uint64_t i = 0; i < n->count && i < INSPECT_NOTES_KEPT; i++)
        if (strstr(n->text[i], needle))
            return true;
    return false;
}

static void dump_notes(const struct inspect_notes *n)
{
    for (uint64_t i = 0; i < n->count && i < INSPECT_NOTES_KEPT; i++)
        cr_log_info("note: %s", n->text[i]);
}

#define assert_note(n, needle)                                                                     \
    do {                                                                                           \
        if (!notes_have((n), (needle)))                                                            \
            dump_notes(n);                                                                         \
        cr_assert(notes_have((n), (needle)), "no note contains \"%s\"", (needle));                 \
    } while (0)

static const struct inspect_proc *proc_named(const struct inspect_snapshot *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_procs; i++)
        if (strcmp(s->procs[i].name, name) == 0)
            return &s->procs[i];
    return NULL;
}

/* Every non-free slot of seg, walked in batches of `batch`; *n of them (malloc'd). */
static struct inspect_slot *all_slots(struct inspect_segment *seg, uint32_t capacity,
                                      uint32_t batch, struct inspect_slot_cursor *cur, uint32_t *n,
                                      struct inspect_notes *notes)
{
    struct inspect_slot *out = calloc(capacity, sizeof(*out));
    cr_assert_not_null(out);
    inspect_slot_cursor_init(cur, 0);
    *n = 0;
    unsigned calls = 0;
    while (cur->next < capacity) {
        uint32_t got;
        h_assert_rc(inspect_slots(seg, cur, out + *n, batch, &got, notes), 0);
        cr_assert_leq(got, batch);
        *n += got;
        cr_assert_lt(++calls, 10 * capacity + 10, "the slot walk does not advance");
    }
    return out;
}

static const struct inspect_slot *slot_with_id(const struct inspect_slot *v, uint32_t n,
                                               uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i].id == id && v[i].state != INSPECT_SLOT_FREE)
            return &v[i];
    return NULL;
}

/* ------------------------------------------------------------------ a live queue */

Test(inspect, live_snapshot_matches_stats_and_what_was_done)
{
    enum { CAP = 16, N = 6 };
    const char *name = h_qname("live");
    shmq_config_t cfg = h_small_config(CAP, 128, 8);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t ids[N];
    for (int i = 0; i < N; i++) {
        char msg[64];
        int len = snprintf(msg, sizeof msg, "message %d of the live test, long enough", i);
        h_assert_rc(shmq_publish(q, msg, (size_t)len, &ids[i]), 0);
    }
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "inspected", &c), 0);
    shmq_msg_t acked, delayed, held;
    h_assert_rc(shmq_receive(c, &acked, 0), 0);
    h_assert_rc(shmq_ack(c, &acked), 0);
    h_assert_rc(shmq_receive(c, &delayed, 0), 0);
    h_assert_rc(shmq_nack(c, &delayed, 600000), 0);
    h_assert_rc(shmq_receive(c, &held, 0), 0);
    h_assert_rc(shmq_lease_acquire(q, 60000, 1), 0);

    struct inspect_segment *seg;
    const char *why = "unset";
    h_assert_rc(inspect_segment_open(name, &seg, &why), 0);
    cr_assert_null(why);
    struct inspect_snapshot s;
    h_assert_rc(inspect_segment_read(seg, &s), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);

    /* counters: the layer's names, shmq_stats' values */
    const uint64_t want[INSPECT_COUNTERS] = {[INSPECT_PUBLISHED] = st.published,
                                             [INSPECT_DELIVERED] = st.delivered,
                                             [INSPECT_ACKED] = st.acked,
                                             [INSPECT_NACKED] = st.nacked,
                                             [INSPECT_REDELIVERED] = st.redelivered,
                                             [INSPECT_DEAD_LETTERED] = st.dead_lettered,
                                             [INSPECT_RECLAIMED] = st.reclaimed,
                                             [INSPECT_DEDUP_HITS] = st.dedup_hits};
    for (int i = 0; i < INSPECT_COUNTERS; i++)
        cr_assert_eq(s.counters[i], want[i], "%s: %" PRIu64 " vs shmq_stats %" PRIu64,
                     inspect_counter_name(i), s.counters[i], want[i]);
    cr_assert_eq(s.counters[INSPECT_PUBLISHED], N);
    cr_assert_eq(s.counters[INSPECT_DELIVERED], 3);
    cr_assert_eq(s.counters[INSPECT_ACKED], 1);
    cr_assert_eq(s.counters[INSPECT_NACKED], 1);
    cr_assert_str_eq(inspect_counter_name(INSPECT_DEAD_LETTERED), "dead_lettered");

    /* slot counts: shmq_stats' and what was done */
    cr_assert_eq(s.slots[INSPECT_SLOT_READY], st.ready);
    cr_assert_eq(s.slots[INSPECT_SLOT_INFLIGHT], st.inflight);
    cr_assert_eq(s.slots[INSPECT_SLOT_DELAYED], st.delayed);
    cr_assert_eq(s.slots[INSPECT_SLOT_FREE], st.free);
    cr_assert_eq(s.slots[INSPECT_SLOT_READY], N - 3);
    cr_assert_eq(s.slots[INSPECT_SLOT_INFLIGHT], 1);
    cr_assert_eq(s.slots[INSPECT_SLOT_DELAYED], 1);
    cr_assert_eq(s.slots[INSPECT_SLOT_FREE], CAP - (N - 1));
    cr_assert_eq(s.slots[INSPECT_SLOT_INVALID], 0);
    cr_assert_geq(s.oldest_age_ms, 0);

    /* header, config, ids */
    cr_assert_eq(s.header.magic, SHMQ_MAGIC);
    cr_assert_eq(s.header.version, SHMQ_FORMAT_VERSION);
    cr_assert_geq(s.header.mapped_size, s.header.total_size);
    cr_assert_eq(s.cfg.capacity, CAP);
    cr_assert_eq(s.cfg.max_msg_size, 128);
    cr_assert_eq(s.cfg.max_procs, 8);
    cr_assert_null(s.cfg.log_dir);
    cr_assert_eq(s.next_id, ids[N - 1]);
    cr_assert_gt(s.n_layout, 0);
    cr_assert_gt(s.n_words, 0);
    cr_assert_str_eq(s.words[0].key, "next_id");
    cr_assert_eq(s.words[0].value, s.next_id);

    /* the registry: the queue handle's entry and the consumer's, both this process */
    cr_assert_eq(s.n_procs, 2);
    cr_assert_eq(s.procs_active, st.procs);
    cr_assert_eq(s.consumers, st.consumers);
    cr_assert_eq(s.consumers, 1);
    cr_assert_eq(s.procs_alive, 2);
    const struct inspect_proc *cp = proc_named(&s, "inspected");
    cr_assert_not_null(cp, "the consumer's entry is listed by its name");
    cr_assert_eq(cp->pid, getpid());
    cr_assert(cp->role & SHMQ_ROLE_CONSUMER);
    cr_assert_eq(cp->state, INSPECT_PROC_ACTIVE);
    cr_assert_eq(cp->liveness, INSPECT_ALIVE);
    cr_assert(cp->alive);
    cr_assert(cp->heartbeat_seen);
    cr_assert_eq(cp->inflight, 1);
    cr_assert_eq(cp->counters[INSPECT_DELIVERED], 3);
    cr_assert_eq(cp->counters[INSPECT_ACKED], 1);
    char role[64];
    cr_assert_str_eq(inspect_role_text(cp->role, role, sizeof role), "consumer");
    cr_assert_eq(s.notes.count, 0, "a healthy queue has no inconsistency");

    /* the lease we took: held by the queue handle's entry, priority 1 */
    cr_assert(s.lease.recorded);
    cr_assert(s.lease.holder_valid);
    cr_assert(s.lease.held);
    cr_assert_eq(s.lease.pid, getpid());
    cr_assert_eq(s.lease.priority, 1);
    cr_assert_gt(s.lease.expires_in_ms, 0);
    char wd[48], wd_want[48];
    snprintf(wd_want, sizeof wd_want, "active:%d", (int)getpid());
    cr_assert_str_eq(inspect_watchdog_text(&s, wd, sizeof wd), wd_want);

    /* the log position */
    cr_assert(s.log.enabled);
    cr_assert_eq(s.log.bytes, st.wal_bytes);
    cr_assert_gt(s.log.bytes, 0);
    cr_assert_eq(s.log.file_size, cfg.wal_file_size);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", h_state_dir_path(), name);
    cr_assert_str_eq(s.log.dir, dir);

    /* the slots one by one, three at a time */
    struct inspect_slot_cursor cur;
    uint32_t n;
    struct inspect_notes *notes = calloc(1, sizeof(*notes));
    cr_assert_not_null(notes);
    struct inspect_slot *v = all_slots(seg, CAP, 3, &cur, &n, notes);
    cr_assert_eq(n, N - 1, "non-free slots listed: %u", n);
    cr_assert_eq(notes->count, 0);
    for (int i = 0; i < INSPECT_SLOT_STATES; i++)
        cr_assert_eq(cur.counts[i], s.slots[i], "%s: walk %u vs snapshot %u",
                     inspect_slot_state_name(i), cur.counts[i], s.slots[i]);
    const struct inspect_slot *h = slot_with_id(v, n, held.id);
    cr_assert_not_null(h);
    cr_assert_eq(h->state, INSPECT_SLOT_INFLIGHT);
    cr_assert(h->has_token);
    cr_assert_eq(h->token, held.token, "the delivery token an ack must carry");
    cr_assert(h->has_owner);
    cr_assert_eq(h->owner, cp->index);
    cr_assert(h->has_deadline);
    cr_assert_gt(h->deadline_in_ms, 0);
    cr_assert_eq(h->attempt, held.attempt);
    cr_assert_eq(h->len, held.len);
    cr_assert(h->len_valid);
    cr_assert_eq(h->preview_len, INSPECT_PREVIEW_BYTES);
    cr_assert_arr_eq(h->preview, held.data, INSPECT_PREVIEW_BYTES);
    cr_assert(h->has_wal_seq);
    cr_assert_eq(h->wal_seq, 0);
    const struct inspect_slot *d = slot_with_id(v, n, delayed.id);
    cr_assert_not_null(d);
    cr_assert_eq(d->state, INSPECT_SLOT_DELAYED);
    cr_assert(d->has_deadline);
    cr_assert_gt(d->deadline_in_ms, 500000, "nacked for 600 s: %" PRId64, d->deadline_in_ms);
    cr_assert_not(d->has_token);
    cr_assert_null(slot_with_id(v, n, acked.id), "the acked message's slot is free");
    for (uint32_t i = 0; i < n; i++)
        if (v[i].state == INSPECT_SLOT_READY)
            cr_assert(v[i].has_ticket, "a ready slot records its ring ticket");
    free(v);

    /* the ready ring of a quiet queue holds exactly the ready slots. The free ring no longer
     * matches the FREE slots since f154893 (a producer claims the FREE slot at its cursor and
     * leaves its ring entry stale; an ack whose slot follows a FREE one enqueues nothing:
     * DESIGN "The free slots"), so only its cells' range is checked (below) */
    struct inspect_ring rings[INSPECT_RINGS_MAX];
    uint32_t nr;
    h_assert_rc(inspect_rings(seg, rings, &nr, notes), 0);
    cr_assert_eq(nr, 3);
    cr_assert_str_eq(rings[0].name, "free");
    cr_assert_str_eq(rings[1].name, "ready");
    cr_assert_str_eq(rings[2].name, "dead");
    cr_assert_eq(rings[1].nonempty_cells, s.slots[INSPECT_SLOT_READY]);
    cr_assert_eq(rings[2].nonempty_cells, 0);
    for (uint32_t i = 0; i < nr; i++) {
        cr_assert_eq(rings[i].bad_cells, 0);
        cr_assert_eq(rings[i].cells & (rings[i].cells - 1), 0, "a power of two");
        cr_assert_geq(rings[i].cells, 2 * CAP);
    }
    cr_assert_eq(notes->count, 0);
    free(notes);

    /* reading registered nothing and changed nothing */
    inspect_snapshot_free(&s);
    inspect_segment_close(seg);
    h_assert_rc(inspect_queue(name, &s), 0);
    cr_assert_eq(s.n_procs, 2, "the reader took no registry entry");
    cr_assert_eq(s.counters[INSPECT_DELIVERED], 3);
    cr_assert_eq(s.slots[INSPECT_SLOT_READY], N - 3);
    inspect_snapshot_free(&s);

    h_assert_rc(shmq_ack(c, &held), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

struct die_arg {
    char name[SHMQ_NAME_MAX + 1];
};

/* Attach a consumer, take a message, die without a word. */
static int take_and_die(void *arg)
{
    struct die_arg *a = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    if (shmq_open(a->name, &q) != 0 || shmq_consumer_open(q, "doomed", &c) != 0 ||
        shmq_receive(c, &m, 5000) != 0)
        _exit(1);
    _exit(0);
}

Test(inspect, entry_of_a_process_that_died_is_dead_and_holds_its_message)
{
    const char *name = h_qname("dead");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    struct die_arg a;
    snprintf(a.name, sizeof a.name, "%s", name);
    pid_t pid = h_fork(take_and_die, &a);
    h_assert_child_ok(pid, 10000, "take_and_die");

    struct inspect_snapshot s;
    h_assert_rc(inspect_queue(name, &s), 0);
    const struct inspect_proc *p = proc_named(&s, "doomed");
    cr_assert_not_null(p);
    cr_assert_eq(p->pid, pid);
    cr_assert_eq(p->state, INSPECT_PROC_ACTIVE, "nobody fenced it yet");
    cr_assert_eq(p->liveness, INSPECT_DEAD);
    cr_assert_not(p->alive);
    cr_assert_eq(p->inflight, 1);
    cr_assert_eq(s.slots[INSPECT_SLOT_INFLIGHT], 1);
    cr_assert_eq(s.procs_alive, 1, "only our own queue handle lives");
    cr_assert_not(s.log.enabled);
    cr_assert_str_eq(inspect_durability_name(s.cfg.durability), "none");
    cr_assert_not(s.lease.recorded);
    char wd[48];
    cr_assert_str_eq(inspect_watchdog_text(&s, wd, sizeof wd), "none");
    inspect_snapshot_free(&s);
    h_assert_rc(shmq_close(q), 0);
}

/* ------------------------------------------------------------------ hostile segments */

/* A closed queue: 3 messages, one of them received by a consumer that then closed. */
static const char *make_closed_queue(const char *tag, char *path, size_t size)
{
    const char *name = h_qname(tag);
    shmq_config_t cfg = h_small_config(16, 128, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.dedup_window_count = 0;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "payload", 7, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
    h_shm_path(name, path, size);
    return name;
}

Test(inspect, out_of_range_values_are_flagged_and_noted_never_followed)
{
    char path[128];
    const char *name = make_closed_queue("bad", path, sizeof path);
    struct segment seg;
    h_assert_rc(segment_open(name, false, &seg), 0);
    atomic_store(&segment_slot(&seg, 0)->state, sw_make(15, NO_OWNER, 7));
    atomic_store(&segment_slot(&seg, 1)->state, sw_make(SLOT_READY, NO_OWNER, 9));
    segment_slot(&seg, 1)->len = UINT32_MAX;
    atomic_store(&segment_slot(&seg, 2)->state, sw_make(SLOT_INFLIGHT, NO_OWNER - 1, 11));
    atomic_store(&segment_slot(&seg, 3)->state, sw_make(SLOT_FENCED, NO_OWNER, 13));
    atomic_store(&segment_slot(&seg, 3)->linger, 1000);
    struct proc_entry *pe = segment_proc(&seg, 5);
    pe->pid = -1;
    atomic_store(&pe->word, 9);
    pe = segment_proc(&seg, 6);
    pe->pid = 0;
    pe->group = 70; /* a consumer of a group index out of range */
    pe->role = ROLE_CONSUMER;
    atomic_store(&pe->word, pw_make(PROC_ACTIVE, 3, 0));
    segment_group(&seg, 0)->policy = 9;
    for (uint64_t i = 0; i < 4; i++)
        atomic_store(&seg.dead_ring.shm->cells[i], (1ull << RING_INDEX_BITS) | (16 + 5));
    atomic_store(&seg.hdr->lease_word, (uint64_t)4000 << 48); /* holder 3999 of 8 */
    segment_close(&seg);

    struct inspect_segment *is;
    h_assert_rc(inspect_segment_open(name, &is, NULL), 0);
    struct inspect_snapshot *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    h_assert_rc(inspect_segment_read(is, s), 0);
    cr_assert_eq(s->slots[INSPECT_SLOT_INVALID], 1);
    cr_assert(s->lease.recorded);
    cr_assert_not(s->lease.holder_valid);
    cr_assert_not(s->lease.held);
    assert_note(&s->notes, "lease: holder 3999 >= max_procs 8");
    assert_note(&s->notes, "registry entry 5: invalid state 9");
    assert_note(&s->notes, "registry entry 6: ACTIVE with pid 0");
    assert_note(&s->notes, "registry entry 6: group 70 >= max_groups 1");
    assert_note(&s->notes, "group entry 0: unknown policy 9");
    cr_assert_eq(s->n_groups, 1);
    cr_assert_eq(s->groups[0].consumers, 0, "an entry of an out-of-range group counts nowhere");
    bool saw5 = false;
    for (uint32_t i = 0; i < s->n_procs; i++) {
        const struct inspect_proc *p = &s->procs[i];
        if (p->index == 5) {
            saw5 = true;
            cr_assert_eq(p->state, INSPECT_PROC_INVALID);
            cr_assert_eq(p->raw_state, 9);
            cr_assert_eq(p->liveness, INSPECT_NO_PID, "a pid -1 never reaches kill()");
        }
        if (p->index == 6)
            cr_assert_eq(p->liveness, INSPECT_NO_PID, "a pid 0 never reaches kill()");
    }
    cr_assert(saw5, "an entry in an invalid state is listed");

    struct inspect_ring rings[INSPECT_RINGS_MAX];
    uint32_t nr;
    h_assert_rc(inspect_rings(is, rings, &nr, &s->notes), 0);
    cr_assert_eq(rings[2].bad_cells, 4);
    assert_note(&s->notes, "dead ring: cell 0 holds slot index 21 >= capacity 16");
    assert_note(&s->notes, "dead ring: 4 cells hold an out-of-range slot index");

    struct inspect_slot_cursor cur;
    uint32_t n;
    struct inspect_slot *v = all_slots(is, 16, 16, &cur, &n, &s->notes);
    cr_assert_eq(v[0].index, 0);
    cr_assert_eq(v[0].state, INSPECT_SLOT_INVALID);
    cr_assert_eq(v[0].raw_state, 15);
    cr_assert_eq(v[1].index, 1);
    cr_assert_not(v[1].len_valid);
    cr_assert_eq(v[1].preview_len, 0, "a length past max_msg_size is never read");
    cr_assert_eq(v[2].owner, NO_OWNER - 1);
    cr_assert_eq(v[3].state, INSPECT_SLOT_FENCED);
    cr_assert(v[3].has_linger);
    cr_assert_eq(v[3].linger, 999);
    assert_note(&s->notes, "slot 0: invalid state 15");
    assert_note(&s->notes, "slot 1: len 4294967295 > max_msg_size 128");
    assert_note(&s->notes, "slot 2: owner 1048574 >= max_procs 8");
    assert_note(&s->notes, "slot 3: linger 999 >= max_procs 8");
    cr_assert_eq(s->notes.count, 11, "notes: %" PRIu64, s->notes.count);
    free(v);
    inspect_snapshot_free(s);
    free(s);
    inspect_segment_close(is);
}

static void assert_refused(const char *name, int want, const char *what)
{
    struct inspect_segment *is = NULL;
    int err = inspect_segment_open(name, &is, NULL);
    cr_assert_eq(err, want, "%s: %d (%s), expected %d (%s)", what, err, inspect_strerror(err), want,
                 inspect_strerror(want));
    cr_assert_null(is);
    struct inspect_snapshot s;
    cr_assert_eq(inspect_queue(name, &s), want, "%s: inspect_queue", what);
}

Test(inspect, bad_segments_are_refused_with_their_own_error)
{
    char path[128];
    const char *name;

    assert_refused(h_qname("missing"), -ENOENT, "a missing segment");
    assert_refused("bad/name", -EINVAL, "an invalid name");

    name = make_closed_queue("magic", path, sizeof path);
    h_write_at(path, offsetof(struct seg_layout, magic), "NOTSHMQ!", 8);
    assert_refused(name, -EBADMSG, "bad magic");

    name = make_closed_queue("version", path, sizeof path);
    uint32_t version = SHMQ_FORMAT_VERSION + 1;
    h_write_at(path, offsetof(struct seg_layout, version), &version, sizeof version);
    assert_refused(name, -EPROTO, "another format version");

    name = make_closed_queue("crc", path, sizeof path);
    uint32_t cap = 1u << 30;
    h_write_at(path, offsetof(struct seg_layout, capacity), &cap, sizeof cap);
    assert_refused(name, -EBADMSG, "a changed capacity (CRC mismatch)");

    name = make_closed_queue("half", path, sizeof path);
    struct stat st;
    cr_assert(stat(path, &st) == 0);
    cr_assert(truncate(path, st.st_size / 2) == 0);
    assert_refused(name, -EBADMSG, "truncated to half");

    name = make_closed_queue("short", path, sizeof path);
    cr_assert(truncate(path, 100) == 0);
    assert_refused(name, -EBADMSG, "truncated below the header");

    name = h_qname("fifo");
    h_shm_path(name, path, sizeof path);
    cr_assert(mkfifo(path, 0600) == 0, "mkfifo: %s", strerror(errno));
    assert_refused(name, INSPECT_ENOTREG, "a FIFO");
    cr_assert_str_eq(inspect_strerror(INSPECT_ENOTREG),
                     "not a regular file, so not a shmq segment");

    if (geteuid() != 0) { /* root reads a file of mode 0 all the same */
        name = make_closed_queue("perm", path, sizeof path);
        cr_assert(chmod(path, 0) == 0);
        assert_refused(name, -EACCES, "no permission");
    }
}

static sigjmp_buf app_jump;
static volatile sig_atomic_t app_bus;

static void app_on_sigbus(int sig)
{
    (void)sig;
    app_bus++;
    siglongjmp(app_jump, 1);
}

Test(inspect, segment_truncated_under_the_mapping_is_efault_not_sigbus)
{
    char path[128];
    const char *name = make_closed_queue("shrink", path, sizeof path);
    struct inspect_segment *is;
    h_assert_rc(inspect_segment_open(name, &is, NULL), 0);
    struct inspect_snapshot s;
    h_assert_rc(inspect_segment_read(is, &s), 0);
    inspect_snapshot_free(&s);

    /* the program's own SIGBUS handler: it must be in place again after each read */
    struct sigaction mine = {.sa_handler = app_on_sigbus}, before;
    sigemptyset(&mine.sa_mask);
    cr_assert(sigaction(SIGBUS, &mine, &before) == 0);

    cr_assert(truncate(path, 0) == 0, "truncate: %s", strerror(errno));
    h_assert_rc(inspect_segment_read(is, &s), -EFAULT);
    inspect_snapshot_free(&s);
    struct inspect_ring rings[INSPECT_RINGS_MAX];
    uint32_t nr;
    h_assert_rc(inspect_rings(is, rings, &nr, NULL), -EFAULT);
    cr_assert_eq(nr, 0);
    struct inspect_slot_cursor cur;
    struct inspect_slot slots[4];
    uint32_t n;
    inspect_slot_cursor_init(&cur, 0);
    h_assert_rc(inspect_slots(is, &cur, slots, 4, &n, NULL), -EFAULT);
    cr_assert_eq(n, 0);
    cr_assert_eq(app_bus, 0, "the faults were the layer's: the program's handler saw none");

    struct sigaction now;
    cr_assert(sigaction(SIGBUS, NULL, &now) == 0);
    cr_assert(now.sa_handler == app_on_sigbus, "the program's SIGBUS handler was restored");
    if (sigsetjmp(app_jump, 1) == 0)
        raise(SIGBUS);
    cr_assert_eq(app_bus, 1, "and it still gets the program's own SIGBUS");
    cr_assert(sigaction(SIGBUS, &before, NULL) == 0);
    inspect_segment_close(is);
    cr_assert_str_eq(inspect_strerror(-EFAULT), "segment truncated while it was read (SIGBUS)");
}

Test(inspect, names_and_places)
{
    char path[128];
    const char *name = make_closed_queue("names", path, sizeof path);
    cr_assert_eq(inspect_name_check(name), 0);
    cr_assert_eq(inspect_name_check(""), -EINVAL);
    cr_assert_eq(inspect_name_check("a/b"), -EINVAL);
    cr_assert_eq(inspect_name_check(".."), -EINVAL);
    char got[128];
    h_assert_rc(inspect_segment_path(name, got, sizeof got), 0);
    cr_assert_str_eq(got, path);
    char **names;
    size_t n;
    h_assert_rc(inspect_queue_names(&names, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        found |= strcmp(names[i], name) == 0;
        cr_assert_eq(inspect_name_check(names[i]), 0);
        if (i > 0)
            cr_assert_lt(strcmp(names[i - 1], names[i]), 0, "sorted");
    }
    cr_assert(found, "%s is among the %zu queues listed", name, n);
    inspect_names_free(names, n);
}

/* ------------------------------------------------------------------ the log */

struct written {
    uint64_t ids[1024];
    uint32_t lens[1024];
    int n, keyed, acked, nacked;
    uint64_t bytes, min_id, max_id;
};

/* A logged queue whose log spans two 64 KiB files: n messages, every 10th with a dedup key,
 * the first `acks` acked and one more nacked. */
static const char *make_logged_queue(const char *tag, int n, int acks, struct written *w,
                                     shmq_t **qp)
{
    const char *name = h_qname(tag);
    shmq_config_t cfg = h_small_config(1024, 256, 8);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    memset(w, 0, sizeof(*w));
    for (int i = 0; i < n; i++) {
        char msg[200];
        int len = snprintf(msg, sizeof msg, "%0*d", 20 + i % 100, i);
        if (i % 10 == 0) {
            char key[16];
            int klen = snprintf(key, sizeof key, "k%d", i);
            h_assert_rc(shmq_publish_dedup(q, msg, (size_t)len, key, (size_t)klen, &w->ids[i]), 0);
            w->keyed++;
        } else {
            h_assert_rc(shmq_publish(q, msg, (size_t)len, &w->ids[i]), 0);
        }
        w->lens[i] = (uint32_t)len;
        w->bytes += (uint64_t)len;
    }
    w->n = n;
    w->min_id = w->ids[0];
    w->max_id = w->ids[n - 1];
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "logged", &c), 0);
    for (int i = 0; i < acks; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 5000), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 5000), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    w->acked = acks;
    w->nacked = 1;
    h_assert_rc(shmq_consumer_close(c), 0);
    *qp = q;
    return name;
}

Test(inspect, log_files_and_records_match_what_was_written)
{
    enum { N = 600, ACKS = 100 };
    static struct written w;
    shmq_t *q;
    const char *name = make_logged_queue("log", N, ACKS, &w, &q);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);

    struct inspect_log_where where;
    h_assert_rc(inspect_log_locate(name, NULL, &where), 0);
    cr_assert_eq(where.from, INSPECT_DIR_SEGMENT);
    cr_assert_eq(where.segment, INSPECT_SEG_VALID);
    cr_assert_not(where.durability_none);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", h_state_dir_path(), name);
    cr_assert_str_eq(where.dir, dir);

    struct inspect_log *log;
    h_assert_rc(inspect_log_read(where.dir, true, &log), 0);
    cr_assert_geq(log->n_files, 2, "600 messages of 20..119 bytes fill more than one file");
    cr_assert_eq(log->n_files, st.wal_files);
    uint64_t publish = 0, keyed = 0, bytes = 0, min_id = UINT64_MAX, max_id = 0;
    for (size_t i = 0; i < log->n_files; i++) {
        const struct inspect_log_file *f = &log->files[i];
        char want[32];
        snprintf(want, sizeof want, "wal.%010u", (unsigned)i);
        cr_assert_str_eq(f->name, want);
        cr_assert_eq(f->seq, i);
        cr_assert_null(f->header_problem, "%s: %s", f->name, f->header_problem);
        cr_assert(f->scanned && f->readable);
        cr_assert_not(f->truncated);
        cr_assert_eq(f->header_seq, i);
        cr_assert_eq(f->size, SHMQ_WAL_FILE_MIN);
        cr_assert_eq(f->header_file_size, SHMQ_WAL_FILE_MIN);
        cr_assert_eq(f->capacity, 1024);
        cr_assert_eq(f->max_msg_size, 256);
        cr_assert_eq(f->bad_regions, 0);
        cr_assert_eq(f->torn_offset, 0);
        cr_assert_eq(f->malformed, 0);
        uint64_t typed = 0;
        for (int t = 0; t < INSPECT_REC_TYPES; t++)
            typed += f->by_type[t];
        cr_assert_eq(typed, f->records, "every record has a type");
        publish += f->by_type[INSPECT_REC_PUBLISH];
        keyed += f->keyed;
        bytes += f->message_bytes;
        if (f->n_ids) {
            min_id = f->min_id < min_id ? f->min_id : min_id;
            max_id = f->max_id > max_id ? f->max_id : max_id;
        }
    }
    cr_assert_eq(publish, N);
    cr_assert_eq(log->by_type[INSPECT_REC_PUBLISH], N);
    cr_assert_eq(log->by_type[INSPECT_REC_ACK], w.acked);
    cr_assert_eq(log->by_type[INSPECT_REC_NACK], w.nacked);
    cr_assert_eq(log->by_type[INSPECT_REC_DEAD], 0);
    cr_assert_eq(keyed, w.keyed);
    cr_assert_eq(bytes, w.bytes);
    cr_assert_eq(min_id, w.min_id);
    cr_assert_eq(max_id, w.max_id);
    uint64_t newest_written = 0; /* maintenance may have made the next file, still empty */
    for (size_t i = 0; i < log->n_files; i++)
        if (log->files[i].records)
            newest_written = log->files[i].seq;
    cr_assert(log->any_written);
    cr_assert_eq(log->last_written_seq, newest_written);
    cr_assert(log->ok);
    cr_assert_eq(log->problems.count, 0);
    cr_assert_eq(log->warnings.count, 0);

    const struct inspect_log_recovery *rc = &log->recovery;
    cr_assert_eq(rc->live, N - ACKS);
    cr_assert_eq(rc->resolved, ACKS);
    cr_assert_eq(rc->live_with_attempts, 1, "the nacked message");
    cr_assert_eq(rc->highest_id, w.max_id);
    cr_assert_eq(rc->last_live_id, w.max_id);
    cr_assert_eq(rc->files_read, log->n_files);
    cr_assert_eq(rc->files_skipped, 0);
    cr_assert(rc->have_capacity);
    cr_assert_eq(rc->capacity, 1024);
    cr_assert_str_eq(rc->outcome, "refused while the segment exists");
    uint64_t live = rc->live, resolved = rc->resolved;
    inspect_log_free(log);

    /* the segment gone: found by the state directory rule; the prediction comes true */
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(inspect_log_locate(name, NULL, &where), 0);
    cr_assert_eq(where.from, INSPECT_DIR_STATE);
    cr_assert_eq(where.segment, INSPECT_SEG_MISSING);
    cr_assert_str_eq(where.dir, dir);
    h_assert_rc(inspect_log_read(where.dir, false, &log), 0);
    cr_assert_str_eq(log->recovery.outcome, "restores the live messages");
    inspect_log_free(log);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, live);
    cr_assert_eq(rep.resolved, resolved);

    /* --log-dir: DIR/NAME */
    h_assert_rc(inspect_log_locate(name, "/somewhere", &where), 0);
    cr_assert_eq(where.from, INSPECT_DIR_GIVEN);
    snprintf(dir, sizeof dir, "/somewhere/%s", name);
    cr_assert_str_eq(where.dir, dir);
    h_assert_rc(inspect_log_read("/nonexistent-shmq-log-dir", false, &log), -ENOENT);
}

static void log_file_path(char *buf, size_t size, const char *name, unsigned seq)
{
    snprintf(buf, size, "%s/%s/wal.%010u", h_state_dir_path(), name, seq);
}

Test(inspect, damaged_logs_are_judged)
{
    static struct written w;
    shmq_t *q;
    const char *name = make_logged_queue("dmg", 600, 0, &w, &q);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    struct inspect_log_where where;
    h_assert_rc(inspect_log_locate(name, NULL, &where), 0);
    struct inspect_log *log;
    h_assert_rc(inspect_log_read(where.dir, false, &log), 0);
    size_t files = log->n_files;
    cr_assert_geq(files, 2);
    uint64_t live = log->recovery.live;
    cr_assert(log->ok);
    inspect_log_free(log);

    /* garbage in the middle of file 0, a torn tail in the newest file */
    char path[PATH_MAX];
    log_file_path(path, sizeof path, name, 0);
    unsigned char junk[64];
    memset(junk, 0xa5, sizeof junk);
    h_write_at(path, WAL_HEADER_SIZE + 4096, junk, sizeof junk);
    log_file_path(path, sizeof path, name, (unsigned)files - 1);
    struct inspect_log_file newest;
    h_assert_rc(inspect_log_read(where.dir, false, &log), 0);
    newest = log->files[files - 1];
    inspect_log_free(log);
    h_write_at(path, (off_t)newest.used_bytes + 64, junk, sizeof junk);

    h_assert_rc(inspect_log_read(where.dir, false, &log), 0);
    cr_assert_not(log->ok);
    cr_assert_eq(log->files[0].bad_regions, 1);
    cr_assert_eq(log->files[0].n_regions, 1);
    cr_assert_not(log->files[0].regions[0].zeros);
    cr_assert_leq(log->files[0].regions[0].offset, WAL_HEADER_SIZE + 4096);
    assert_note(&log->problems, "wal.0000000000: bad region at offset");
    cr_assert_lt(log->recovery.live, live, "records in the garbage are lost");
    cr_assert_neq(log->files[files - 1].torn_offset, 0);
    assert_note(&log->warnings, "torn tail");
    inspect_log_free(log);

    /* a file missing in the middle, a file whose header is not a log's */
    char tail[PATH_MAX];
    log_file_path(tail, sizeof tail, name, (unsigned)files + 1);
    cr_assert(rename(path, tail) == 0);
    log_file_path(path, sizeof path, name, (unsigned)files + 3);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert(fd >= 0);
    cr_assert(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    h_assert_rc(inspect_log_read(where.dir, false, &log), 0);
    cr_assert_not(log->ok);
    assert_note(&log->problems, "missing in the middle of the log");
    cr_assert_not_null(log->files[log->n_files - 1].header_problem);
    cr_assert_not(log->files[log->n_files - 1].readable);
    assert_note(&log->problems, "bad header: shorter than the 4096-byte file header");
    const struct inspect_log_file *moved = &log->files[log->n_files - 2];
    cr_assert(moved->seq_mismatch, "its header says the seq it was written with");
    cr_assert_not(moved->readable);
    assert_note(&log->problems, "recovery skips this file");
    cr_assert_eq(log->recovery.files_skipped, 2);
    inspect_log_free(log);
}
