/*
 * replay.c - read a queue's history from its write-ahead log (include/shmq/replay.h).
 *
 * The reader's state is one log position: a file seq and an offset in it. It maps one file at
 * a time (PROT_READ, MAP_SHARED: it sees what writers append after it mapped the file), never
 * writes, and takes no lock, so live producers and consumers cannot be disturbed by it.
 *
 * Reading a record (record_at): R1 (acquire) loads its crc and pairs with L1 in wal.c's
 * write_record() (the writer stores the crc last, with release): a record whose crc matches
 * the bytes before it is complete, and a log file's bytes never change once written. The same
 * checks as walscan.c (magic, the file's epoch, type, len within the file, crc) apply to every
 * record: a file is input, nothing in it is trusted.
 *
 * Where the log ends. Positions below the segment's wal_pos were reserved by some writer. At an
 * invalid record whose position is not reserved yet, the replay is at the end: -EAGAIN. At an
 * invalid record whose position is reserved, its writer is still writing it, or died (a hole),
 * or it is the unused rest of a file: the replay waits (-EAGAIN) for SHMQ_REPLAY_HOLE_GRACE_MS
 * from the first time it met it, then scans forward 16 bytes at a time for the next valid
 * record (as recovery does). Two exceptions need no wait: 16 zero bytes followed by a valid
 * record are the spill of a reservation that crossed a file's end, too short for a PAD (wal.c
 * pad_spill()); a PAD record is skipped.
 *
 * Moving on. When the replay reaches the end of a file (less than a record header left, or a
 * PAD or hole reaching the end) and the writers have moved past the file (wal_pos beyond it),
 * it maps seq + 1: no record spans files, so nothing is left behind. The previous mapping is
 * unmapped at the next call (msg->data stays valid until then). A file deleted by retention
 * after it was mapped stays readable through the mapping. A file missing when the replay gets
 * to it was deleted (seq < wal_oldest_seq) or lost: the replay jumps to the next file that
 * exists and reports -ENODATA once.
 */
#include "shmq/replay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "hdrblock.h"
#include "io.h"
#include "queue.h"
#include "wal.h"
#include "walscan.h"

struct shmq_replay {
    shmq_t *q;
    shmq_replay_from_t from;
    int all; /* from NULL (or id 0, time <= 0): no filter, no -ENODATA at start */
    uint64_t file_size, usable;
    char dir[SHMQ_LOG_DIR_MAX + 64];
    /* The position: file seq, offset of the next record in it. */
    uint64_t seq, off;
    const uint8_t *base;    /* seq's mapping, or NULL when not mapped yet */
    uint64_t size;          /* bytes of it: file_size, less for a file cut short */
    int cut_short;          /* this file was truncated: what followed the cut is lost */
    uint64_t epoch;         /* seq's epoch (its header) */
    const uint8_t *retired; /* the previous mapping: unmapped at the next call */
    uint64_t retired_size;
    int history_deleted; /* files before the first one we found were deleted */
    int first_publish_met;
    int64_t unix_ms; /* publish time of the last message returned */
    const void *hdrs; /* and its header block (in the mapping), hdrs_len 0: none */
    uint32_t hdrs_len;
    /* A hole (or a missing file: off 0) met at (hole_seq, hole_off) since hole_since_ns. */
    uint64_t hole_seq, hole_off, hole_since_ns, hole_scan;
};

static void file_path(const struct shmq_replay *r, uint64_t seq, char *buf, size_t size)
{
    snprintf(buf, size, "%s/wal.%010llu", r->dir, (unsigned long long)seq);
}

struct lowest {
    uint64_t min_seq, seq;
    int found;
};

static int lower_file(void *arg, int dirfd, const char *name)
{
    struct lowest *lo = arg;
    char *end;
    if (strncmp(name, "wal.", 4) != 0 || strlen(name) != 14)
        return 0;
    uint64_t s = strtoull(name + 4, &end, 10);
    if (*end || s < lo->min_seq)
        return 0;
    if (!lo->found || s < lo->seq)
        lo->seq = s;
    lo->found = 1;
    return 0;
}

/* The lowest wal.N of the directory with N >= min_seq: 0, or -ENOENT. */
static int lowest_file(const struct shmq_replay *r, uint64_t min_seq, uint64_t *seq)
{
    struct lowest lo = {.min_seq = min_seq};
    io_dir_each(r->dir, lower_file, &lo); /* a walk cut short: the lowest of what it saw */
    if (!lo.found)
        return -ENOENT;
    *seq = lo.seq;
    return 0;
}

/* Map file r->seq read-only: 0, -ENOENT, -EBADMSG (not a valid log file of this seq), -errno.
 * A file cut short (shorter than its header says, as walscan_header() allows) is mapped as far
 * as it goes: its records up to the cut are read. */
static int map_current(struct shmq_replay *r)
{
    char path[SHMQ_LOG_DIR_MAX + 96];
    file_path(r, r->seq, path, sizeof(path));
    int fd = io_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    struct stat st;
    if (io_fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)WAL_HEADER_SIZE ||
        (uint64_t)st.st_size > r->file_size) {
        io_close(fd);
        return -EBADMSG;
    }
    uint64_t size = (uint64_t)st.st_size;
    void *base;
    int err = io_mmap(fd, 0, size, PROT_READ, MAP_SHARED, &base);
    io_close(fd);
    if (err)
        return err;
    const struct wal_file_header *h;
    /* The header is complete before the file gets its name (wal.c make_file): plain reads. */
    if (walscan_header(base, size, &h) != 0 || h->seq != r->seq || h->file_size != r->file_size) {
        io_munmap(base, size);
        return -EBADMSG;
    }
    r->base = base;
    r->size = size;
    r->cut_short = size < r->file_size;
    r->epoch = h->epoch;
    r->off = WAL_HEADER_SIZE;
    return 0;
}

/* Leave the current file; its mapping is unmapped at the next call (msg->data may be in it). */
static void retire_current(struct shmq_replay *r)
{
    if (r->retired)
        io_munmap((void *)r->retired, r->retired_size);
    r->retired = r->base;
    r->retired_size = r->size;
    r->base = NULL;
    r->off = WAL_HEADER_SIZE;
}

/* Is there a valid record at offset off of the current file? Its header in *rec, the bytes it
 * occupies in *size. */
static int record_at(const struct shmq_replay *r, uint64_t off, struct wal_rec *rec, uint64_t *size)
{
    if (off > r->size || r->size - off < WAL_REC_HEADER)
        return 0;
    const uint8_t *p = r->base + off;
    /* R1 (acquire): pairs with L1 in write_record(); a crc that matches means every byte of
     * the record was written before we read it */
    uint32_t crc =
        atomic_load_explicit((const _Atomic uint32_t *)(const void *)(p + 4), memory_order_acquire);
    memcpy(rec, p, sizeof(*rec));
    rec->crc = crc;
    if (rec->magic != WAL_REC_MAGIC || rec->epoch != r->epoch || !wal_type_valid(rec->type))
        return 0;
    if (rec->len > r->size - off - WAL_REC_HEADER)
        return 0;
    if (wal_rec_crc(rec, p + WAL_REC_HEADER) != crc)
        return 0;
    *size = wal_rec_size(rec->len);
    if (*size > r->size - off)
        *size = r->size - off;
    return 1;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* The log position of offset off of file seq. */
static uint64_t log_pos(const struct shmq_replay *r, uint64_t seq, uint64_t off)
{
    return seq * r->usable + (off - WAL_HEADER_SIZE);
}

/* relaxed: wal_pos is a hint of how far writers reserved; R1 decides what is valid */
static uint64_t reserved_end(const struct shmq_replay *r)
{
    return atomic_load_explicit(&r->q->seg.hdr->wal_pos, memory_order_relaxed);
}

/* Has the hole at (seq, off) been there for the grace period? Starts its clock if it is new. */
static int hole_expired(struct shmq_replay *r, uint64_t off)
{
    uint64_t now = now_ns();
    if (r->hole_since_ns == 0 || r->hole_seq != r->seq || r->hole_off != off) {
        r->hole_seq = r->seq;
        r->hole_off = off;
        r->hole_since_ns = now;
        r->hole_scan = off + WAL_ALIGN;
        return 0;
    }
    return now - r->hole_since_ns >= (uint64_t)SHMQ_REPLAY_HOLE_GRACE_MS * 1000000u;
}

static void hole_clear(struct shmq_replay *r) { r->hole_since_ns = 0; }

/* The current file is missing. 1: go on (r->seq moved; *err holds -ENODATA to report), 0: wait
 * (-EAGAIN). */
static int handle_missing(struct shmq_replay *r, int *err)
{
    /* acquire: pairs with the release in wal_maintain(): files below it were deleted */
    uint64_t oldest = atomic_load_explicit(&r->q->seg.hdr->wal_oldest_seq, memory_order_acquire);
    uint64_t next;
    int later = lowest_file(r, r->seq + 1, &next) == 0;
    if (r->seq >= oldest && (!later || !hole_expired(r, 0)))
        return 0; /* not made yet (a writer is making it), or lost: wait the grace first */
    hole_clear(r);
    r->seq = later ? next : (oldest > r->seq ? oldest : r->seq + 1);
    r->off = WAL_HEADER_SIZE;
    *err = -ENODATA;
    return 1;
}

/* Does PUBLISH record rec (parsed into pub) pass the replay's filter? */
static int wanted(const struct shmq_replay *r, const struct wal_rec *rec,
                  const struct wal_publish *pub)
{
    if (r->all)
        return 1;
    if (r->from.id)
        return rec->id >= r->from.id;
    return (int64_t)pub->unix_ms >= r->from.unix_ms;
}

/* Is the log's first PUBLISH (rec) later than where the replay was asked to start? */
static int starts_after_from(const struct shmq_replay *r, const struct wal_rec *rec,
                             const struct wal_publish *pub)
{
    if (r->all)
        return 0;
    if (r->from.id)
        return rec->id > r->from.id;
    return (int64_t)pub->unix_ms > r->from.unix_ms;
}

int shmq_replay_open(shmq_t *q, const shmq_replay_from_t *from, shmq_replay_t **out)
{
    if (!q || !out)
        return -EINVAL;
    *out = NULL;
    if (!q->wal || q->seg.layout.durability == SHMQ_DURABILITY_NONE)
        return -EOPNOTSUPP;
    struct shmq_replay *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->q = q;
    if (from)
        r->from = *from;
    r->all = !from || (from->id == 0 && from->unix_ms <= 0);
    r->file_size = q->seg.layout.wal_file_size;
    r->usable = r->file_size - WAL_HEADER_SIZE;
    snprintf(r->dir, sizeof(r->dir), "%s", q->seg.layout.log_dir);
    r->off = WAL_HEADER_SIZE;
    if (lowest_file(r, 0, &r->seq) != 0) /* no file yet: where the log will begin */
        r->seq = atomic_load_explicit(&q->seg.hdr->wal_oldest_seq, memory_order_acquire);
    /* A queue's log starts at file 0 (shmq_create; recovery keeps the files it read): files
     * before the lowest one kept were deleted by retention. */
    r->history_deleted = r->seq > 0;
    *out = r;
    return 0;
}

int shmq_replay_next(shmq_replay_t *r, shmq_msg_t *msg)
{
    if (!r || !msg)
        return -EINVAL;
    if (r->retired) {
        io_munmap((void *)r->retired, r->retired_size);
        r->retired = NULL;
    }
    for (;;) {
        if (!r->base) {
            int err = map_current(r);
            if (err == -ENOENT) {
                if (!handle_missing(r, &err))
                    return -EAGAIN;
                return err; /* -ENODATA: the next call goes on from r->seq */
            }
            if (err == -EBADMSG) {
                r->seq++; /* a damaged file: skip it, say so once */
                return err;
            }
            if (err)
                return err;
        }
        struct wal_rec rec;
        uint64_t size, off = r->off;
        if (r->size - off >= WAL_REC_HEADER && record_at(r, off, &rec, &size)) {
            hole_clear(r);
            r->off = off + size;
            struct wal_publish pub;
            if (rec.type != WAL_PUBLISH || (rec.attempt & WAL_PUB_CHECKPOINT) ||
                wal_parse_publish(&rec, r->base + off + WAL_REC_HEADER, &pub) != 0)
                continue; /* PAD, ACK, NACK, DEAD, MARK, a checkpoint's copy; or malformed */
            if (!r->first_publish_met) {
                r->first_publish_met = 1;
                if (r->history_deleted && starts_after_from(r, &rec, &pub)) {
                    r->off = off; /* returned by the next call */
                    return -ENODATA;
                }
            }
            if (!wanted(r, &rec, &pub))
                continue;
            memset(msg, 0, sizeof(*msg));
            msg->id = rec.id;
            msg->data = pub.data;
            msg->len = pub.len;
            r->unix_ms = (int64_t)pub.unix_ms;
            r->hdrs = pub.hdrs;
            r->hdrs_len = pub.hdrs_len;
            return 0;
        }
        /* No valid record at off. */
        uint64_t file_end_pos = log_pos(r, r->seq, r->file_size);
        uint64_t reserved = reserved_end(r);
        int writers_left = reserved >= file_end_pos; /* nobody reserves in this file again */
        if (r->size - off >= WAL_REC_HEADER) {
            if (reserved <= log_pos(r, r->seq, off))
                return -EAGAIN; /* the end of what was written */
            if (r->size - off >= WAL_REC_HEADER + WAL_ALIGN && all_zero(r->base + off, WAL_ALIGN) &&
                record_at(r, off + WAL_ALIGN, &rec, &size)) {
                r->off = off + WAL_ALIGN; /* a spill too short for a PAD */
                continue;
            }
            if (!hole_expired(r, off))
                return -EAGAIN; /* being written, most likely */
            /* A hole: the next valid record, within what writers reserved. */
            uint64_t limit = r->size;
            if (!writers_left) {
                uint64_t frontier =
                    WAL_HEADER_SIZE + (reserved - log_pos(r, r->seq, WAL_HEADER_SIZE));
                limit = frontier < limit ? frontier : limit;
            }
            uint64_t o = r->hole_scan;
            for (; o + WAL_REC_HEADER <= limit; o += WAL_ALIGN)
                if (record_at(r, o, &rec, &size))
                    break;
            if (o + WAL_REC_HEADER <= limit) {
                hole_clear(r);
                r->off = o;
                continue;
            }
            r->hole_scan = o;
            if (!writers_left)
                return -EAGAIN;
            /* nothing valid up to the file's end: a torn tail or unused space */
        }
        if (!writers_left)
            return -EAGAIN; /* the rest of the file may still be written */
        hole_clear(r);
        int was_cut = r->cut_short;
        retire_current(r);
        r->seq++;
        if (was_cut)
            return -EBADMSG; /* what followed the cut is lost: say so once */
    }
}

int64_t shmq_replay_unix_ms(const shmq_replay_t *r) { return r ? r->unix_ms : 0; }

int shmq_replay_headers(const shmq_replay_t *r, shmq_header_t *out, size_t max, size_t *n)
{
    if (!r || !n || (!out && max))
        return -EINVAL;
    *n = 0;
    return r->hdrs_len ? hdrs_decode(r->hdrs, r->hdrs_len, out, max, n) : 0;
}

int shmq_replay_close(shmq_replay_t *r)
{
    if (!r)
        return 0;
    if (r->base)
        io_munmap((void *)r->base, r->size);
    if (r->retired)
        io_munmap((void *)r->retired, r->retired_size);
    free(r);
    return 0;
}
