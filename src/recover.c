/*
 * recover.c - rebuild a queue's segment from its log (shmq_recover): a new generation.
 *
 * Under an exclusive flock on LOGDIR/.recover (concurrent recoverers serialise; a second one
 * finds the segment the first built: -EEXIST):
 *   E3  bump head.gen (seq_cst) and fsync the head: from here every process holding an older
 *       segment is fenced (-EIDRM, E1/E2 in wal.c);
 *   E4  then list and read the files of generation head.complete_gen (walscan.c); for each id
 *       and each consumer group its PUBLISH went to, the latest record of that group decides
 *       its state: READY, DELAYED (due time), DEAD (reason), resolved; the group table from the
 *       latest GROUP record of each index (rule R-G, docs/DESIGN.md "The log with groups");
 *   build the new segment unpublished, in the new generation, its log starting WAL_GEN_GAP files
 *   after every name in use; re-log every restored state into it (copies, with the new
 *   generation), fdatasync, store head.complete_gen = new, fsync; only then publish the segment.
 * A later recovery reads only the newest complete generation, so nothing an old process wrote
 * after E3 can overrule, delete or duplicate it. The argument: docs/DESIGN.md, "Generations".
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "abi.h"
#include "clock.h"
#include "crashpoint.h"
#include "dedup.h"
#include "gcell.h"
#include "io.h"
#include "loghead.h"
#include "registry.h"
#include "segment.h"
#include "settings.h"
#include "slot.h"
#include "wal.h"
#include "walgroups.h"
#include "walscan.h"

struct logfile {
    uint64_t seq;
    const uint8_t *base;
    size_t size;
    const struct wal_file_header *h;
};

struct entry { /* one record, for sorting by (id, log order) */
    uint64_t id, order, unix_ms;
    uint64_t pos;    /* its log position (rule R-G) */
    uint64_t groups; /* PUBLISH: the groups it went to (1: group 0 alone) */
    uint64_t due_unix_ms; /* PUBLISH with WAL_PUB_DUE: when the message becomes ready */
    uint64_t expire_unix_ms; /* PUBLISH with WAL_PUB_EXPIRE: when it expires */
    const void *payload, *key, *hdrs;
    uint32_t len, key_len, hdrs_len; /* hdrs: PUBLISH with WAL_PUB_HDRS, its header block */
    uint16_t type, attempt; /* type: the base type (wal_type_base) */
    uint8_t group;          /* ACK, DEAD, NACK: the group (wal_type_group) */
};

struct scan_ctx {
    struct entry *v;
    size_t n, cap;
    uint64_t seq;
    uint64_t usable; /* bytes of records per file of the file being read (its header's) */
    int oom;
    struct walgroup_latest grp[WAL_MAX_GROUPS]; /* by index, the latest (files and records in
                                                 * log order: walgroups.h) */
    /* the CONFIG record of the highest version (the later of equal ones: files and records are
     * read in log order), NULL if none (settings.h, K2) */
    const void *config;
    uint32_t config_len;
    uint64_t config_version;
};

static int collect(void *arg, uint64_t offset, const struct wal_rec *r, const void *payload)
{
    struct scan_ctx *c = arg;
    if (r->type == WAL_PAD)
        return 0;
    if (r->type == WAL_GROUP) { /* names no message: its id is the group's index */
        walgroups_note(c->grp, r, payload, (c->seq << 32) | (offset / WAL_ALIGN));
        return 0;
    }
    if (r->type == WAL_CONFIG) { /* no message's: its id is the settings' version */
        if (!c->config || r->id >= c->config_version) {
            c->config = payload;
            c->config_len = r->len;
            c->config_version = r->id;
        }
        return 0;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4096;
        struct entry *v = realloc(c->v, cap * sizeof(*v));
        if (!v) {
            c->oom = 1;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    struct wal_publish pub = {.data = payload, .len = r->len};
    if (r->type == WAL_PUBLISH && wal_parse_publish(r, payload, &pub) != 0)
        return 0; /* a valid CRC over a malformed body: not ours to guess at */
    bool is_pub = r->type == WAL_PUBLISH;
    c->v[c->n++] = (struct entry){.id = r->id,
                                  .order = (c->seq << 32) | (offset / WAL_ALIGN),
                                  .pos = c->seq * c->usable + (offset - WAL_HEADER_SIZE),
                                  .groups = is_pub ? pub.groups : 0,
                                  .group = (uint8_t)wal_type_group(r->type),
                                  .unix_ms = pub.unix_ms,
                                  .due_unix_ms = r->type == WAL_PUBLISH ? pub.due_unix_ms : 0,
                                  .expire_unix_ms =
                                      r->type == WAL_PUBLISH ? pub.expire_unix_ms : 0,
                                  .payload = pub.data,
                                  .len = pub.len,
                                  .type = (uint16_t)wal_type_base(r->type),
                                  .attempt = r->attempt,
                                  .key = r->type == WAL_PUBLISH ? pub.key : NULL,
                                  .key_len = r->type == WAL_PUBLISH ? pub.key_len : 0,
                                  .hdrs = r->type == WAL_PUBLISH ? pub.hdrs : NULL,
                                  .hdrs_len = r->type == WAL_PUBLISH ? pub.hdrs_len : 0};
    return 0;
}

static int by_id_order(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int by_seq(const void *a, const void *b)
{
    const struct logfile *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct loading {
    struct logfile *files;
    size_t n, cap;
    uint64_t max_seq, min_seq, max_gen;
    uint32_t old_version; /* files of another format version */
    shmq_recovery_report_t *rep;
};

/* io_dir_each: map the directory entry name if it is a log file with a valid header. */
static int load_file(void *arg, int dirfd, const char *name)
{
    struct loading *ld = arg;
    if (strncmp(name, "wal.", 4) != 0 || strlen(name) != 14 || strspn(name + 4, "0123456789") != 10)
        return 0; /* exactly ten digits: no sign, no space, no overflow */
    uint64_t seq = strtoull(name + 4, NULL, 10);
    if (seq > ld->max_seq) /* valid or not: the log must go on after every name in use */
        ld->max_seq = seq;
    if (seq < ld->min_seq)
        ld->min_seq = seq;
    /* A file that cannot be read NOW (EIO, EMFILE, ENOMEM, EACCES, ...) fails the whole
     * recovery with that error: skipping it would rebuild the queue without its messages. Only
     * what is not a log file (not regular, empty, bad header) is skipped as corrupt. */
    int fd = io_openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd == -ENOENT)
        return 0; /* deleted since the listing */
    if (fd < 0)
        return fd;
    struct stat st;
    int err = io_fstat(fd, &st);
    if (err) {
        io_close(fd);
        return err;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
        io_close(fd);
        ld->rep->corrupt_regions++;
        return 0;
    }
    void *base = NULL;
    err = io_mmap(fd, 0, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, &base);
    io_close(fd);
    if (err)
        return err;
    const struct wal_file_header *h;
    int herr = base ? walscan_header(base, (size_t)st.st_size, &h) : -EBADMSG;
    if (herr || h->seq != seq) {
        if (base)
            io_munmap(base, (size_t)st.st_size);
        if (herr == -EPROTO)
            ld->old_version++;
        else
            ld->rep->corrupt_regions++;
        return 0;
    }
    if (ld->n == ld->cap) {
        size_t cap = ld->cap ? ld->cap * 2 : 16;
        struct logfile *v = realloc(ld->files, cap * sizeof(*v));
        if (!v) {
            io_munmap(base, (size_t)st.st_size);
            return -ENOMEM;
        }
        ld->files = v;
        ld->cap = cap;
    }
    if (h->layout.log_gen > ld->max_gen)
        ld->max_gen = h->layout.log_gen;
    ld->files[ld->n++] = (struct logfile){seq, base, (size_t)st.st_size, h};
    return 0;
}

static void unload_files(struct loading *ld)
{
    for (size_t i = 0; i < ld->n; i++)
        io_munmap((void *)ld->files[i].base, ld->files[i].size);
    free(ld->files);
    ld->files = NULL;
    ld->n = ld->cap = 0;
}

/* Map every wal.N file of dir that has a valid header, by seq. */
static int load_files(const char *dir, struct loading *ld)
{
    ld->min_seq = UINT64_MAX;
    int err = io_dir_each(dir, load_file, ld);
    if (!err && ld->n)
        qsort(ld->files, ld->n, sizeof(*ld->files), by_seq);
    return err;
}

/* One group's state of a restored message. */
struct gstate {
    unsigned state;       /* SLOT_READY, SLOT_DELAYED, SLOT_DEAD; 0: resolved, or never had it */
    uint32_t attempt, reason;
    uint64_t due_unix_ms; /* DELAYED: when */
};

/* What a message comes back as. */
struct restored {
    const struct entry *pub; /* its latest PUBLISH that counted: the payload */
    const struct entry *key; /* its latest keyed PUBLISH, if its key counts (NULL if none) */
    uint64_t live;           /* the groups that still hold it (bit 0: group 0) */
    size_t gs;               /* its states: rebuild.gst[gs + g] for group g */
};

struct rebuild {
    struct restored *live; /* by id */
    size_t n;
    struct gstate *gst;    /* ngroups per restored message */
    uint32_t ngroups;      /* the queue's max_groups */
    const struct walgroup_latest *grp; /* the group table from the GROUP records (scan_ctx.grp) */
    uint64_t groups;       /* the groups rebuilt: bit g iff grp[g] is a create (bit 0 always) */
    const struct entry **keys; /* the latest keyed PUBLISH of every id whose key counts */
    const bool *key_live;      /* per key: its message is in live[] (re-logged with it) */
    size_t nkeys;
    uint64_t highest_id, oldest_seq, now_ns, now_unix_ms;
    uint32_t expire_policy; /* the queue's (SHMQ_EXPIRE_*): for messages that expired meanwhile */
    struct loghead *head;
    uint64_t gen;
    shmq_recovery_report_t *rep;
};

static uint64_t unix_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Group g's cell c of slot idx (the slot itself for group 0) takes state st in the unpublished
 * segment s: its word, attempts, reason, due time, and its ring (group g's ready or dead). */
static int restore_cell(struct segment *s, const struct rebuild *rb, uint32_t g, uint32_t idx,
                        const struct gstate *st)
{
    struct slot *c = segment_cell(s, g, idx);
    uint64_t w = atomic_load_explicit(&c->state, memory_order_relaxed);
    uint64_t next = sw_next(w, st->state, NO_OWNER), ticket;
    c->attempt = st->attempt;
    c->dead_reason = st->state == SLOT_DEAD ? st->reason : 0;
    if (st->state == SLOT_DELAYED) { /* the remaining delay, in the new segment's clock */
        uint64_t left = st->due_unix_ms - rb->now_unix_ms;
        uint64_t q_now = (now_ns() - s->layout.created_ns) / 1000000ull;
        atomic_store_explicit(&c->deadline, tagged_make(q_now + left, next), memory_order_relaxed);
    }
    atomic_store_explicit(&c->state, next, memory_order_relaxed);
    struct ring *ring = st->state == SLOT_READY  ? (g ? &s->gready[g] : &s->ready_ring)
                        : st->state == SLOT_DEAD ? (g ? &s->gdead[g] : &s->dead_ring)
                                                 : NULL;
    if (ring) {
        if (ring_enqueue(ring, idx, &ticket) != 0)
            return -ENOSPC;
        atomic_store_explicit(&c->ticket, tagged_make(ticket, next), memory_order_relaxed);
    }
    return 0;
}

/* Put restored message r into a free slot of the unpublished segment s, in its states: group
 * 0's in the slot word (HELD when group 0 does not hold it), each other group's in its cell. */
static int restore_slot(struct segment *s, const struct rebuild *rb, const struct restored *r,
                        struct slot **out)
{
    uint32_t idx;
    uint64_t ticket;
    if (ring_dequeue(&s->free_ring, &idx, &ticket) != 0 || !segment_slot(s, idx))
        return -ENOSPC;
    struct slot *sl = segment_slot(s, idx);
    const struct entry *e = r->pub;
    const struct gstate *gs = &rb->gst[r->gs];
    if (e->len > s->layout.max_msg_size)
        return -EBADMSG;
    memcpy(slot_payload(sl), e->payload, e->len);
    struct slot_hdrs *sh = slot_headers(s, sl);
    if (sh) { /* a block larger than the queue's room is no header block of this queue: none */
        sh->len = e->hdrs_len <= s->layout.max_header_bytes ? e->hdrs_len : 0;
        if (sh->len)
            memcpy(sh->bytes, e->hdrs, sh->len);
    }
    sl->publish_ns = rb->now_ns;
    /* the expiry in the new segment's clock (a message past it was expired by decide()); a
     * message only dead letters hold does not expire */
    bool all_dead = true;
    for (uint32_t g = 0; g < rb->ngroups; g++)
        if (r->live >> g & 1 && gs[g].state != SLOT_DEAD)
            all_dead = false;
    uint64_t exp = e->expire_unix_ms;
    uint64_t left_ms = exp > rb->now_unix_ms ? exp - rb->now_unix_ms : 0;
    slot_set_expire(sl, exp && !all_dead ? rb->now_ns + left_ms * 1000000ull
                                         : UINT64_MAX); /* EXPIRE_NEVER */
    sl->id = e->id;
    sl->len = e->len;
    if (s->layout.max_groups > 1) /* the segment is not published yet; F2 with the groups
                                   * that hold it: `others` and the release count (gcell.h) */
        fanout_record(s, idx, r->live);
    for (uint32_t g = 1; g < rb->ngroups; g++) {
        int err = r->live >> g & 1 ? restore_cell(s, rb, g, idx, &gs[g]) : 0;
        if (err)
            return err;
    }
    const struct gstate held = {.state = SLOT_HELD};
    int err = restore_cell(s, rb, 0, idx, r->live & 1 ? &gs[0] : &held);
    if (err)
        return err;
    *out = sl;
    return 0;
}

/* Append the state record of group g that follows a re-logged copy: NACK (attempts, due time)
 * or DEAD. */
static int relog_state(struct wal *w, uint32_t g, uint64_t id, const struct gstate *st)
{
    if (st->state == SLOT_DEAD)
        return wal_append(w, wal_type_of(WAL_DEAD, g), id, st->attempt, &st->reason,
                          WAL_DEAD_REASON_LEN, NULL);
    if (st->state == SLOT_DELAYED)
        return wal_append(w, wal_type_of(WAL_NACK, g), id, st->attempt, &st->due_unix_ms,
                          WAL_NACK_DUE_LEN, NULL);
    /* even with 0 attempts: it closes the copy (a copy no record follows is not read) */
    return wal_append(w, wal_type_of(WAL_NACK, g), id, st->attempt, NULL, 0, NULL);
}

/* The group table of the unpublished segment s: every group the GROUP records leave created,
 * ACTIVE, counting from the new generation's first position, its record re-logged first. */
static int restore_groups(struct segment *s, const struct rebuild *rb, struct wal *w)
{
    for (uint32_t g = 1; g < rb->ngroups; g++) {
        if (!(rb->groups >> g & 1))
            continue;
        const struct wal_group *r = &rb->grp[g].rec;
        struct group_entry *e = segment_group(s, g);
        if (!e)
            continue;
        memcpy(e->name, r->name, sizeof(e->name));
        e->name[sizeof(e->name) - 1] = 0;
        e->policy = r->policy;
        e->bound = r->bound;
        e->first_id = r->first_id;
        e->since_pos = s->layout.wal_base_pos; /* every record of the new generation is above */
        uint64_t word = pw_make(GROUP_ACTIVE, r->gen + 1, 0);
        /* plain stores: the segment is not published yet (S1) */
        atomic_store_explicit(&e->word, word, memory_order_relaxed);
        atomic_fetch_or_explicit(&s->hdr->groups_mask, 1ull << g, memory_order_relaxed);
        struct wal_group copy = *r;
        copy.gen = pw_gen(word);
        copy.since_pos = e->since_pos;
        uint32_t seq = 0;
        int err = wal_append(w, WAL_GROUP, g, WAL_GROUP_CREATE | WAL_GROUP_COPY, &copy,
                             sizeof(copy), &seq);
        if (err)
            return err;
        atomic_store_explicit(&e->wal_seq, seq + 1, memory_order_relaxed);
    }
    return 0;
}

/*
 * Fill the new segment (before its magic is published: single-threaded) and re-log what it
 * holds into the new generation; then mark the generation complete.
 */
static int populate(struct segment *s, void *arg)
{
    struct rebuild *rb = arg;
    struct wal *w;
    int err = wal_open(s, false, &w);
    if (err)
        return err;
    if (rb->ngroups > 1)
        err = restore_groups(s, rb, w);
    for (size_t i = 0; i < rb->n && !err; i++) {
        const struct restored *r = &rb->live[i];
        const struct entry *e = r->pub;
        const struct gstate *gs = &rb->gst[r->gs];
        struct slot *sl;
        uint32_t seq = 0;
        if ((err = restore_slot(s, rb, r, &sl)) != 0)
            break;
        bool all_dead = true;
        for (uint32_t g = 0; g < rb->ngroups; g++)
            if (r->live >> g & 1 && gs[g].state != SLOT_DEAD)
                all_dead = false;
        struct wal_times t = {e->unix_ms, 0, !all_dead ? e->expire_unix_ms : 0, r->live};
        const struct slot_hdrs *sh = slot_headers(s, sl);
        err = wal_append_publish_timed(w, e->id, WAL_PUB_CHECKPOINT, &t,
                                       r->key ? r->key->key : NULL, r->key ? r->key->key_len : 0,
                                       sh ? sh->bytes : NULL, sh ? sh->len : 0, e->payload, e->len,
                                       &seq);
        for (uint32_t g = 0; g < rb->ngroups && !err; g++)
            if (r->live >> g & 1)
                err = relog_state(w, g, e->id, &gs[g]);
        atomic_store_explicit(&sl->wal_seq, seq + 1, memory_order_relaxed);
    }
    /* the dedup window: keys of committed publishes; those of resolved messages are re-logged
     * as an empty keyed copy and its ACK */
    for (size_t i = 0; i < rb->nkeys && !err; i++) {
        const struct entry *k = rb->keys[i];
        /* a key keeps what is left of its window, by the wall clock (clamped to [0, window]);
         * one whose window is over is not restored nor re-logged (review F3) */
        uint64_t window = s->layout.dedup_window_ms;
        uint64_t age = rb->now_unix_ms > k->unix_ms ? rb->now_unix_ms - k->unix_ms : 0;
        if (age > window)
            continue;
        dedup_insert_committed(s, k->key, k->key_len, k->id, 0 - age /* before the segment's start */);
        if (!rb->key_live[i] &&
            (err = wal_append_publish_at(w, k->id, WAL_PUB_CHECKPOINT, k->unix_ms, k->key,
                                         k->key_len, NULL, 0, NULL)) == 0)
            err = wal_append(w, WAL_ACK, k->id, 0, NULL, 0, NULL);
    }
    if (!err)
        err = wal_append(w, WAL_MARK, rb->highest_id, 0, NULL, 0, NULL);
    if (!err) /* the copies are on disk before the generation counts */
        err = wal_sync(w,
                       (uint32_t)(s->layout.wal_base_pos /
                                  (s->layout.wal_file_size - WAL_HEADER_SIZE)),
                       s->layout.wal_base_pos);
    wal_close(w);
    if (err)
        return err;
    atomic_store_explicit(&s->hdr->next_id, rb->highest_id, memory_order_relaxed);
    atomic_store_explicit(&s->hdr->wal_oldest_seq, rb->oldest_seq, memory_order_relaxed);
    /* plain: the segment is not published yet (S1 stores its magic after populate) */
    _Static_assert(offsetof(struct seg_header, recovered_holes) == 744 &&
                       sizeof(struct seg_header) == 1024,
                   "FORMAT.md section 3");
    s->hdr->recovered_holes = rb->rep->holes;
    s->hdr->recovered_bad_regions = rb->rep->corrupt_regions - rb->rep->holes;
    /* relaxed: the segment is not published yet */
    atomic_store_explicit(&s->hdr->expired, rb->rep->expired, memory_order_relaxed);
    CRASH_POINT(recover_before_complete);
    /* seq_cst: the re-log is complete before a later recovery may read this generation */
    atomic_store(&rb->head->h->complete_gen, rb->gen);
    if ((err = loghead_sync(rb->head)) != 0)
        return err;
    CRASH_POINT(recover_after_complete);
    return 0;
}

/* The settings of the latest CONFIG record over cfg (the newest file header's): a change made
 * since this generation began (K2). A record whose values no queue may have (it passed its
 * CRC, so only a bug wrote it) is not used: the rebuild goes on with the header's. */
static void apply_config_record(const struct scan_ctx *c, shmq_config_t *cfg)
{
    struct settings_values v;
    _Static_assert(sizeof(v) == WAL_CONFIG_LEN, "the payload this version writes");
    if (!c->config || c->config_len < SETTINGS_VALUES_LEN_0)
        return;
    /* a first-layout payload (40 bytes) lacks the settings added later: the header's stay */
    v.expire_policy = cfg->expire_policy;
    v.reserved3 = 0;
    v.log_retention_bytes = cfg->log_retention_bytes;
    memcpy(&v, c->config, c->config_len < sizeof(v) ? c->config_len : sizeof(v));
    /* later settings may follow: not read here */
    if (settings_valid(&v))
        settings_to_config(&v, cfg);
}

/* The groups whose state a PUBLISH at position pos with mask m sets: those of m the group table
 * keeps whose records count from at or before pos (rule R-G); group 0 always. */
static uint64_t counted_groups(const struct rebuild *rb, uint64_t m, uint64_t pos)
{
    uint64_t out = m & 1;
    for (uint32_t g = 1; g < rb->ngroups && m >> g; g++)
        if ((m & rb->groups) >> g & 1 && rb->grp[g].rec.since_pos <= pos)
            out |= 1ull << g;
    return out;
}

/* Decide each id's state in each group from its records (sorted by id, then log order). */
static int decide(struct scan_ctx *c, struct rebuild *rb)
{
    shmq_recovery_report_t *rep = rb->rep;
    if (c->n)
        qsort(c->v, c->n, sizeof(*c->v), by_id_order);
    size_t cap = c->n ? c->n : 1;
    uint32_t G = rb->ngroups;
    rb->live = malloc(cap * sizeof(*rb->live));
    rb->keys = malloc(cap * sizeof(*rb->keys));
    rb->gst = malloc(cap * G * sizeof(*rb->gst));
    bool *key_live = malloc(cap * sizeof(*key_live));
    rb->key_live = key_live;
    if (!rb->live || !rb->keys || !key_live || !rb->gst)
        return -ENOMEM;
    for (size_t i = 0; i < c->n;) {
        struct restored r = {.gs = rb->n * G};
        struct gstate *st = &rb->gst[r.gs]; /* this id's, kept if it is restored */
        memset(st, 0, G * sizeof(*st));
        uint64_t had = 0; /* groups a counted PUBLISH gave it to */
        const struct entry *key = NULL;
        size_t end = i;
        size_t closed[SHMQ_GROUPS_MAX] = {0}; /* per group: past the id's last closing record */
        for (; end < c->n && c->v[end].id == c->v[i].id; end++) {
            unsigned t = c->v[end].type;
            if ((t == WAL_ACK || t == WAL_DEAD || t == WAL_NACK) && c->v[end].group < G)
                closed[c->v[end].group] = end + 1;
        }
        for (size_t j = i; j < end; j++) {
            const struct entry *e = &c->v[j];
            uint32_t g = e->group;
            if (e->type == WAL_PUBLISH) {
                bool copy = e->attempt & WAL_PUB_CHECKPOINT, counted = false;
                uint64_t m = counted_groups(rb, e->groups, e->pos);
                for (uint32_t h = 0; h < G && m >> h; h++) {
                    if (!(m >> h & 1))
                        continue;
                    if (copy && j >= closed[h])
                        continue; /* a copy no record of this group follows: its maker died
                                   * (or was fenced) before its closing record; if the id was
                                   * resolved in a file since deleted, the copy alone would
                                   * revive it. The original still counts: the copy never
                                   * moved wal_seq, so its file is kept. */
                    counted = true;
                    if (copy && had >> h & 1 && (st[h].state == 0 || st[h].state == SLOT_DEAD))
                        continue; /* a copy after the ACK or DEAD that resolved it for this
                                   * group is stale (its maker looked before the resolution, or
                                   * died before logging it): it carries the payload forward
                                   * and changes nothing else */
                    had |= 1ull << h;
                    st[h] = (struct gstate){.state = SLOT_READY};
                    if (e->due_unix_ms > rb->now_unix_ms) { /* a delayed publish, not yet due */
                        st[h].state = SLOT_DELAYED;
                        st[h].due_unix_ms = e->due_unix_ms;
                    }
                }
                if (counted) {
                    r.pub = e;
                    if (e->key_len)
                        key = e;
                }
            } else if (g >= G || !(had >> g & 1)) {
                /* a group this id never counted for (deleted, R-G), or a record whose PUBLISH is
                 * gone; but an ABORT (group 0's) ends every group: never published */
                if (e->type == WAL_ACK && (e->attempt & WAL_ACK_ABORT) && r.pub) {
                    memset(st, 0, G * sizeof(*st));
                    if (key && key == e - 1)
                        key = NULL;
                }
            } else if (e->type == WAL_ACK) {
                st[g].state = 0;
                /* never published: no group counts it, nor its key. Only right after its own
                 * PUBLISH: maintenance may log ABORT with the id a reused slot held before (a
                 * producer that died before writing its id), a message done long ago whose key
                 * stays */
                if (e->attempt & WAL_ACK_ABORT) {
                    memset(st, 0, G * sizeof(*st));
                    if (key && key == e - 1)
                        key = NULL;
                }
            } else if (e->type == WAL_DEAD) {
                st[g].state = SLOT_DEAD;
                st[g].attempt = e->attempt > st[g].attempt ? e->attempt : st[g].attempt;
                st[g].reason = SHMQ_DEAD_MAX_ATTEMPTS;
                if (e->len >= WAL_DEAD_REASON_LEN)
                    memcpy(&st[g].reason, e->payload, WAL_DEAD_REASON_LEN);
            } else if (e->type == WAL_NACK) {
                st[g].attempt = e->attempt > st[g].attempt ? e->attempt : st[g].attempt;
                if (st[g].state == SLOT_READY || st[g].state == SLOT_DELAYED) {
                    st[g].state = SLOT_READY;
                    st[g].due_unix_ms = 0;
                    if (e->len >= WAL_NACK_DUE_LEN) {
                        memcpy(&st[g].due_unix_ms, e->payload, WAL_NACK_DUE_LEN);
                        if (st[g].due_unix_ms > rb->now_unix_ms)
                            st[g].state = SLOT_DELAYED;
                    }
                }
            }
        }
        if (c->v[i].id > rb->highest_id)
            rb->highest_id = c->v[i].id;
        /* expired while the segment was gone (an in-flight one too: it comes back as a
         * redelivery would): dropped (resolved, not re-logged) or a dead letter, by the policy,
         * in every group that has it ready or delayed */
        bool expired = false;
        for (uint32_t g = 0; g < G && r.pub; g++) {
            if (!(had >> g & 1) || (st[g].state != SLOT_READY && st[g].state != SLOT_DELAYED) ||
                !r.pub->expire_unix_ms || r.pub->expire_unix_ms > rb->now_unix_ms)
                continue;
            expired = true;
            st[g].state = rb->expire_policy == SHMQ_EXPIRE_DEAD_LETTER ? SLOT_DEAD : 0;
            st[g].reason = SHMQ_DEAD_EXPIRED;
        }
        rep->expired += expired;
        bool dead_only = true, delayed = false;
        for (uint32_t g = 0; g < G && r.pub; g++) {
            if (!(had >> g & 1) || st[g].state == 0)
                continue;
            r.live |= 1ull << g;
            dead_only = dead_only && st[g].state == SLOT_DEAD;
            delayed = delayed || st[g].state == SLOT_DELAYED;
        }
        bool live = r.live != 0;
        if (live) {
            rb->live[rb->n++] = r;
            if (dead_only)
                rep->dead_letters++;
            else
                rep->restored++;
            rep->delayed += delayed;
        } else if (r.pub) {
            rep->resolved++;
        }
        if (live)
            rb->live[rb->n - 1].key = key;
        if (key) {
            rb->keys[rb->nkeys] = key;
            key_live[rb->nkeys++] = live;
        }
        i = end;
    }
    return 0;
}

/* A head that is missing or damaged while version-2 files exist: make it again, naming the
 * newest generation found as live and complete (the best that is left to go on). */
static int remake_head(const char *dir, struct loghead *lh, shmq_recovery_report_t *rep)
{
    struct loading pre = {.rep = rep};
    shmq_recovery_report_t scratch = {0};
    pre.rep = &scratch;
    int err = load_files(dir, &pre);
    uint64_t gen = pre.max_gen;
    size_t n = pre.n;
    uint32_t old = pre.old_version;
    /* the mode a shared queue's files have (the newest file's layout): its users map the head */
    uint32_t mode = n ? logdir_file_mode(pre.files[n - 1].h->layout.mode) : 0600;
    unload_files(&pre);
    if (err)
        return err;
    if (n == 0)
        return old ? -EPROTO : scratch.corrupt_regions ? -EBADMSG : -ENOENT;
    return loghead_make(dir, mode, gen, lh); /* complete, then renamed into place (F7) */
}

static int recover(const char *name, const char *log_dir, shmq_recovery_report_t *report)
{
    shmq_recovery_report_t local;
    shmq_recovery_report_t *rep = report ? report : &local;
    memset(rep, 0, sizeof(*rep));
    char dir[SHMQ_LOG_DIR_MAX + 64], base[SHMQ_LOG_DIR_MAX + 64];
    int err = segment_check_name(name);
    /* log_dir/NAME, or the log the state directory names (logdir.h); the rebuilt segment
     * records the directory itself, so its writers never go through the link */
    if (err || (err = logdir_find(name, log_dir, dir, sizeof(dir))) != 0 ||
        (err = logdir_parent(dir, base, sizeof(base))) != 0)
        return err;
    int lock = loghead_lock(dir, LOCK_EX, 0600); /* released if we die (made at create) */
    if (lock < 0)
        return lock;

    struct segment existing;
    err = segment_open(name, true, &existing);
    if (err == 0) {
        segment_close(&existing);
        io_close(lock);
        return -EEXIST;
    }
    struct loading ld = {.rep = rep};
    struct scan_ctx c = {0};
    struct rebuild rb = {.rep = rep};
    struct loghead lh = {.h = NULL, .fd = -1};
    err = loghead_open(dir, false, 0, &lh);
    if (!err && atomic_load(&lh.h->complete_gen) == LOG_GEN_DELETED) {
        loghead_close(&lh); /* a delete that did not finish (loghead.h): no queue to rebuild */
        err = -ENOENT;
        goto out;
    }
    if (!err && atomic_load(&lh.h->complete_gen) == 0) {
        loghead_close(&lh); /* never completed (a head made 0/0 by an older release, killed) */
        err = -EBADMSG;
    }
    if (err == -ENOENT || err == -EBADMSG)
        err = remake_head(dir, &lh, rep);
    if (err)
        goto out;
    uint64_t complete = atomic_load(&lh.h->complete_gen);
    /* E3 (seq_cst): every old process's next append fails (E1/E2, wal.c) */
    rb.gen = atomic_fetch_add(&lh.h->gen, 1) + 1;
    rb.head = &lh;
    if ((err = loghead_sync(&lh)) != 0)
        goto out;
    CRASH_POINT(recover_after_bump);
    /* E4: list and read the log only now, after E3 */
    if ((err = load_files(dir, &ld)) != 0)
        goto out;
    const struct logfile *newest = NULL;
    for (size_t i = 0; i < ld.n; i++) {
        if (ld.files[i].h->layout.log_gen != complete) {
            rep->other_gen_files++; /* an older generation, or a recovery that never completed */
            continue;
        }
        struct walscan_stats st;
        c.seq = ld.files[i].seq;
        c.usable = ld.files[i].h->file_size - WAL_HEADER_SIZE;
        walscan_records(ld.files[i].base, ld.files[i].size, ld.files[i].h, collect, &c, &st);
        if (c.oom) {
            err = -ENOMEM;
            goto out;
        }
        newest = &ld.files[i];
        rep->files++;
        rep->records += st.records;
        rep->corrupt_regions += (uint32_t)(st.bad_regions + st.holes);
        rep->holes += (uint32_t)st.holes;
        rep->torn_tails += st.torn_offset != 0;
        rep->bytes_skipped += st.bad_bytes;
    }
    if (!newest) {
        err = ld.old_version ? -EPROTO : rep->corrupt_regions ? -EBADMSG : -ENOENT;
        goto out;
    }
    /* The newest file's header holds the queue's config; the log goes on after every name. */
    shmq_config_t cfg;
    layout_to_config(&newest->h->layout, &cfg);
    apply_config_record(&c, &cfg);
    cfg.log_dir = base;
    /* the wall clock first, the monotonic one after (as expire_unix_ms, the other way): time
     * passing between the two readings makes each restored expiry (and due time) later, never
     * earlier. The other way round a rebuild stopped there expired every message that much
     * early (review7) */
    rb.now_unix_ms = unix_ms_now();
    CRASH_POINT(recover_between_clocks);
    rb.now_ns = now_ns();
    rb.expire_policy = cfg.expire_policy;
    /* the groups: from the latest GROUP record of each index (group 0 is made with the queue) */
    rb.ngroups = cfg.max_groups > 1 && cfg.max_groups <= SHMQ_GROUPS_MAX ? cfg.max_groups : 1;
    rb.grp = c.grp;
    rb.groups = walgroups_created(c.grp, rb.ngroups);
    if ((err = decide(&c, &rb)) != 0)
        goto out;
    /* More to restore than the queue holds: messages whose resolution a crash kept out of the
     * log (an ack killed before its record, an append that returned -EIDRM) came back with the
     * ones that took their slots. None may be dropped: the rebuilt segment grows to hold them. */
    if (rb.n > cfg.capacity) {
        if (rb.n > SHMQ_CAPACITY_MAX) {
            err = -ENOSPC;
            goto out;
        }
        cfg.capacity = (uint32_t)rb.n;
    }
    rep->capacity = cfg.capacity;
    rep->highest_id = rb.highest_id;
    rep->gen = rb.gen;
    rb.oldest_seq = ld.min_seq; /* retention of the new generation deletes the older ones */
    segment_unlink(name); /* a corrupt one, if any: we hold the recovery lock */
    uint64_t usable = (uint64_t)cfg.wal_file_size - WAL_HEADER_SIZE;
    struct segment seg;
    err = segment_create_with(name, &cfg, (ld.max_seq + 1 + WAL_GEN_GAP) * usable, rb.gen,
                              populate, &rb, &seg);
    if (err == 0)
        segment_close(&seg);
    if (err == 0 && log_dir)
        logdir_point(name, dir); /* found by name from now on (best effort: rebuilt anyway) */
out:
    unload_files(&ld);
    loghead_close(&lh);
    free(c.v);
    free(rb.live);
    free(rb.gst);
    free(rb.keys);
    free((void *)rb.key_live);
    io_close(lock);
    return err;
}

/* shmq_recover() for the caller's struct of size bytes (abi.h): filled in the library's layout,
 * then copied. */
int shmq_recover_size(const char *name, const char *log_dir, shmq_recovery_report_t *rep,
                      size_t size)
{
    if (rep && !abi_size_ok(size, ABI_RECOVERY_SIZE_0, sizeof(shmq_recovery_report_t)))
        return -EINVAL;
    shmq_recovery_report_t own = {0};
    int err = recover(name, log_dir, &own);
    if (rep)
        abi_copy_out(rep, size, &own, sizeof(own));
    return err;
}

/* The plain symbol (no header macro reaches it): the first layout. */
int(shmq_recover)(const char *name, const char *log_dir, shmq_recovery_report_t *rep)
{
    return shmq_recover_size(name, log_dir, rep, ABI_RECOVERY_SIZE_0);
}
