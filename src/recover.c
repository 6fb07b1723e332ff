/*
 * recover.c - rebuild a queue's segment from its log (shmq_recover).
 *
 * Holds an exclusive flock on LOGDIR/.recover while it works, so concurrent recoverers
 * serialise and a second one finds the segment the first built (-EEXIST). Reads every valid
 * file (walscan.c), keeps for each id its latest PUBLISH or resolving (ACK, DEAD) record and its
 * highest NACK attempt, and builds a new segment whose slots hold the live messages in id order,
 * READY on the ready ring, before the magic is published (segment_create_begin/_publish). The
 * log continues in a new file after the highest one read; old files are deleted by maintenance
 * once no slot refers to them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "dedup.h"
#include "io.h"
#include "segment.h"
#include "slot.h"
#include "wal.h"
#include "walscan.h"

struct logfile {
    uint64_t seq;
    const uint8_t *base;
    size_t size;
    const struct wal_file_header *h;
};

struct entry { /* one record, for sorting by (id, log order) */
    uint64_t id, order;
    const void *payload, *key;
    uint32_t len, seq, key_len;
    uint16_t type, attempt;
};

struct scan_ctx {
    struct entry *v;
    size_t n, cap;
    uint64_t seq;
    int oom;
};

static int collect(void *arg, uint64_t offset, const struct wal_rec *r, const void *payload)
{
    struct scan_ctx *c = arg;
    if (r->type == WAL_PAD)
        return 0;
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
    c->v[c->n++] = (struct entry){.id = r->id,
                                  .order = (c->seq << 32) | (offset / WAL_ALIGN),
                                  .payload = pub.data,
                                  .len = pub.len,
                                  .seq = (uint32_t)c->seq,
                                  .type = r->type,
                                  .attempt = r->attempt,
                                  .key = r->type == WAL_PUBLISH ? pub.key : NULL,
                                  .key_len = r->type == WAL_PUBLISH ? pub.key_len : 0};
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
    uint64_t max_seq;
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
    int fd = io_openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    struct stat st;
    if (fd < 0 || io_fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        if (fd >= 0)
            io_close(fd);
        ld->rep->corrupt_regions++;
        return 0;
    }
    void *base = NULL;
    if (io_mmap(fd, 0, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, &base) != 0)
        base = NULL;
    io_close(fd);
    const struct wal_file_header *h;
    if (!base || walscan_header(base, (size_t)st.st_size, &h) != 0 || h->seq != seq) {
        if (base)
            io_munmap(base, (size_t)st.st_size);
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
    ld->files[ld->n++] = (struct logfile){seq, base, (size_t)st.st_size, h};
    return 0;
}

/* Map every wal.N file of dir that has a valid header. On error, *out holds what was mapped. */
static int load_files(const char *dir, struct logfile **out, size_t *n, uint64_t *max_seq,
                      shmq_recovery_report_t *rep)
{
    struct loading ld = {.max_seq = *max_seq, .rep = rep};
    int err = io_dir_each(dir, load_file, &ld);
    *out = ld.files;
    *n = ld.n;
    *max_seq = ld.max_seq;
    if (!err && ld.n)
        qsort(ld.files, ld.n, sizeof(*ld.files), by_seq);
    return err;
}

struct rebuild {
    struct entry *all; /* every record, by id then log order */
    size_t nall;
    struct entry **live; /* the latest PUBLISH of each live id, by id */
    uint32_t *attempts;
    size_t n;
    uint64_t highest_id, oldest_seq, now_ns;
};

/* Fill the new segment's slots (before its magic is published: single-threaded). */
static int populate(struct segment *s, void *arg)
{
    struct rebuild *rb = arg;
    for (size_t i = 0; i < rb->n; i++) {
        uint32_t idx, slot_idx;
        uint64_t ticket;
        if (ring_dequeue(&s->free_ring, &idx, &ticket) != 0 || !segment_slot(s, idx))
            return -ENOSPC;
        slot_idx = idx;
        struct slot *sl = segment_slot(s, slot_idx);
        const struct entry *e = rb->live[i];
        uint64_t w = atomic_load_explicit(&sl->state, memory_order_relaxed);
        uint64_t ready = sw_next(w, SLOT_READY, NO_OWNER);
        if (e->len > s->layout.max_msg_size)
            return -EBADMSG;
        memcpy(slot_payload(sl), e->payload, e->len);
        sl->publish_ns = rb->now_ns;
        sl->id = e->id;
        sl->len = e->len;
        sl->attempt = rb->attempts[i];
        atomic_store_explicit(&sl->wal_seq, e->seq + 1, memory_order_relaxed);
        atomic_store_explicit(&sl->state, ready, memory_order_relaxed);
        if (ring_enqueue(&s->ready_ring, slot_idx, &ticket) != 0)
            return -ENOSPC;
        atomic_store_explicit(&sl->ticket, tagged_make(ticket, ready), memory_order_relaxed);
    }
    /* the dedup window: every keyed publish the log still holds, latest ids winning */
    uint64_t now_ms = 0; /* the segment was made just now: its clock starts at 0 */
    for (size_t i = 0; i < rb->nall; i++)
        if (rb->all[i].type == WAL_PUBLISH && rb->all[i].key_len)
            dedup_insert_committed(s, rb->all[i].key, rb->all[i].key_len, rb->all[i].id, now_ms);
    atomic_store_explicit(&s->hdr->next_id, rb->highest_id, memory_order_relaxed);
    atomic_store_explicit(&s->hdr->wal_oldest_seq, rb->oldest_seq, memory_order_relaxed);
    return 0;
}

/* Decide each id's fate from its records (sorted by id, then log order). */
static int decide(struct scan_ctx *c, struct rebuild *rb, shmq_recovery_report_t *rep)
{
    if (c->n)
        qsort(c->v, c->n, sizeof(*c->v), by_id_order);
    rb->live = malloc((c->n ? c->n : 1) * sizeof(*rb->live));
    rb->attempts = malloc((c->n ? c->n : 1) * sizeof(*rb->attempts));
    if (!rb->live || !rb->attempts)
        return -ENOMEM;
    for (size_t i = 0; i < c->n;) {
        size_t j = i;
        struct entry *latest_pub = NULL;
        uint32_t attempt = 0;
        int resolved = 0;
        for (; j < c->n && c->v[j].id == c->v[i].id; j++) {
            struct entry *e = &c->v[j];
            if (e->type == WAL_PUBLISH) {
                if (resolved)
                    attempt = 0; /* redriven from the dead letters: attempts start again */
                latest_pub = e;
                resolved = 0;
            } else if (e->type == WAL_ACK || e->type == WAL_DEAD) {
                resolved = 1;
            } else if (e->type == WAL_NACK && e->attempt > attempt) {
                attempt = e->attempt;
            }
        }
        if (c->v[i].id > rb->highest_id)
            rb->highest_id = c->v[i].id;
        if (latest_pub && !resolved) {
            rb->live[rb->n] = latest_pub;
            rb->attempts[rb->n++] = attempt;
        } else if (latest_pub) {
            rep->resolved++;
        }
        i = j;
    }
    return 0;
}

int shmq_recover(const char *name, const char *log_dir, shmq_recovery_report_t *report)
{
    shmq_recovery_report_t local;
    shmq_recovery_report_t *rep = report ? report : &local;
    memset(rep, 0, sizeof(*rep));
    char dir[SHMQ_LOG_DIR_MAX + 64], lockpath[SHMQ_LOG_DIR_MAX + 80], base[SHMQ_LOG_DIR_MAX + 64];
    int err = segment_check_name(name);
    /* log_dir/NAME, or the log the state directory names (logdir.h); the rebuilt segment
     * records the directory itself, so its writers never go through the link */
    if (err || (err = logdir_find(name, log_dir, dir, sizeof(dir))) != 0 ||
        (err = logdir_parent(dir, base, sizeof(base))) != 0)
        return err;
    snprintf(lockpath, sizeof(lockpath), "%s/.recover", dir);
    int lock = io_open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0)
        return lock;
    io_flock(lock, LOCK_EX); /* released if we die */

    struct segment existing;
    err = segment_open(name, true, &existing);
    if (err == 0) {
        segment_close(&existing);
        io_close(lock);
        return -EEXIST;
    }
    struct logfile *files = NULL;
    size_t nfiles = 0;
    struct scan_ctx c = {0};
    struct rebuild rb = {0};
    uint64_t max_seq = 0;
    if ((err = load_files(dir, &files, &nfiles, &max_seq, rep)) != 0)
        goto out;
    if (nfiles == 0) {
        err = rep->corrupt_regions ? -EBADMSG : -ENOENT;
        goto out;
    }
    rep->files = (uint32_t)nfiles;
    for (size_t i = 0; i < nfiles; i++) {
        struct walscan_stats st;
        c.seq = files[i].seq;
        walscan_records(files[i].base, files[i].size, files[i].h, collect, &c, &st);
        if (c.oom) {
            err = -ENOMEM;
            goto out;
        }
        rep->records += st.records;
        rep->corrupt_regions += (uint32_t)st.bad_regions;
        rep->torn_tails += st.torn_offset != 0;
        rep->bytes_skipped += st.bad_bytes;
    }
    if ((err = decide(&c, &rb, rep)) != 0)
        goto out;
    rep->restored = rb.n;
    rep->highest_id = rb.highest_id;
    rb.oldest_seq = files[0].seq;
    rb.all = c.v;
    rb.nall = c.n;
    rb.now_ns = now_ns();

    /* The newest file's header holds the queue's config; the log goes on after it. */
    const struct seg_layout *l = &files[nfiles - 1].h->layout;
    shmq_config_t cfg;
    layout_to_config(l, &cfg);
    cfg.log_dir = base;
    if (rb.n > cfg.capacity) {
        err = -ENOSPC;
        goto out;
    }
    if (err == 0) {
        segment_unlink(name); /* a corrupt one, if any: we hold the recovery lock */
        uint64_t usable = (uint64_t)cfg.wal_file_size - WAL_HEADER_SIZE;
        struct segment seg;
        err = segment_create_with(name, &cfg, (max_seq + 1) * usable, populate, &rb, &seg);
        if (err == 0)
            segment_close(&seg);
        if (err == 0 && log_dir)
            logdir_point(name, dir); /* found by name from now on (best effort: rebuilt anyway) */
    }
out:
    for (size_t i = 0; i < nfiles; i++)
        io_munmap((void *)files[i].base, files[i].size);
    free(files);
    free(c.v);
    free(rb.live);
    free(rb.attempts);
    io_close(lock);
    return err;
}
