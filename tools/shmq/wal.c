/*
 * wal.c - `shmq wal NAME inspect|verify [--log-dir DIR] [--json]`: read a queue's write-ahead
 * log without taking part in the queue.
 *
 * Where the log is: DIR/NAME with --log-dir DIR; else the log directory recorded in the
 * queue's segment (layout.log_dir) when the segment can be read; else the state directory
 * rule of the library (wal_dir_path(name, NULL, ...): $SHMQ_STATE_DIR, /var/lib/shmq for
 * root, $XDG_STATE_HOME/shmq or ~/.local/state/shmq), which is where recovery looks when the
 * segment is gone.
 *
 * Read-only by construction: each wal.NNNNNNNNNN file is opened O_RDONLY and mapped PROT_READ;
 * the tool takes no lock (not even recovery's .recover flock), creates nothing and writes
 * nothing, so it cannot disturb writers or a recovery. The files are hostile input: a header
 * is checked by walscan_header() and records are walked by walscan_records() (src/walscan.c,
 * the reader recovery uses), which check every length against the mapping; a file that
 * shrinks under the mapping raises SIGBUS, which is caught and reported for that file.
 *
 * What recovery would bring back is computed with recovery's own rule (src/recover.c,
 * decide()): the records of each id are taken in log order (file seq, then offset) and the
 * latest PUBLISH or resolving record decides: PUBLISH -> live, ACK or DEAD -> resolved; NACK
 * raises the attempt count, which a PUBLISH after a resolution (a redrive) resets. Like
 * load_files() there, only files whose header is valid and whose header seq matches the name
 * are read, and like collect() there, a PUBLISH whose body wal_parse_publish() rejects is left
 * out (and reported here).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "emit.h"
#include "snapshot.h"
#include "wal.h"
#include "walscan.h"

#define REGIONS_KEPT 16u  /* bad regions listed per file; the rest are only counted */
#define PROBLEMS_KEPT 64u /* problems listed; the rest are only counted */
#define PROBLEM_TEXT 200u

void cmd_wal_help(FILE *out)
{
    fprintf(out,
            "Usage: %s wal NAME inspect [--log-dir DIR] [--json]\n"
            "       %s wal NAME verify  [--log-dir DIR] [--json]\n"
            "\n"
            "Read the write-ahead log of the queue NAME without taking part in the queue:\n"
            "each log file (wal.NNNNNNNNNN) is mapped read-only; nothing is locked, created\n"
            "or written, so it is safe on a live queue and while the segment is gone.\n"
            "\n"
            "The log directory is DIR/NAME with --log-dir DIR (the --log-dir given to\n"
            "create); else the one recorded in the queue's segment; else, when there is no\n"
            "readable segment, NAME under the state directory ($SHMQ_STATE_DIR, /var/lib/shmq\n"
            "for root, else $XDG_STATE_HOME/shmq or ~/.local/state/shmq), where recovery\n"
            "looks.\n"
            "\n"
            "  inspect  for each file: seq, size, header (epoch, capacity, file size),\n"
            "           whether it is truncated (shorter than its header says: the records\n"
            "           before the cut still count), records by type (publish, ack, dead,\n"
            "           nack, pad, mark), message bytes, PUBLISH records with a dedup key,\n"
            "           malformed PUBLISH bodies, bytes used (offset of the end of the last\n"
            "           valid record), ids seen, bad regions (offset, length, kind: garbage,\n"
            "           or zeros = a hole a writer reserved and never filled) and a torn tail\n"
            "           (offset, length); files missing between the oldest and the newest;\n"
            "           then what shmq_recover() would bring back: live messages (ids whose\n"
            "           latest record is a PUBLISH), their id range, how many were resolved\n"
            "           (acked or dead-lettered), the highest id (ids go on after it), and\n"
            "           the outcome (fails if no file is readable, or the live messages do\n"
            "           not fit the capacity or max_msg_size of the newest file's header;\n"
            "           refused while the segment exists); and the problems found (as verify\n"
            "           judges them)\n"
            "  verify   check the log: every file has a valid header whose seq matches its\n"
            "           name, no truncated file, no bad regions, no malformed PUBLISH body,\n"
            "           no file missing in the middle of the log, no torn tail but in the\n"
            "           newest file written to (a crash while writing: reported under\n"
            "           warnings and allowed, as recovery ignores it). Prints each file in\n"
            "           one line, the problems, the warnings and the verdict (ok)\n"
            "\n"
            "Options:\n"
            "  --log-dir DIR  read DIR/NAME (DIR as given to `%s create --log-dir`)\n"
            "  --json         one JSON document with the same fields\n"
            "  -h, --help     this text\n"
            "\n"
            "On a live queue the picture is best-effort: a record being written at that\n"
            "moment may show as a hole or a torn tail; run verify again, or on a stopped\n"
            "queue.\n"
            "\n"
            "Exit status:\n"
            "  0  inspect: the log was read (problems, if any, are listed in the report);\n"
            "     verify: the log is sound (a torn tail in the newest file is allowed; an\n"
            "     empty log directory is sound)\n"
            "  1  verify: the log is damaged (problems listed, a summary on stderr);\n"
            "     both: the log directory cannot be read (missing: no log, or durability\n"
            "     none), or out of memory\n"
            "  2  usage error\n"
            "\n"
            "Examples:\n"
            "  %s wal orders inspect\n"
            "  %s wal orders verify && echo log ok\n"
            "  %s wal orders inspect --json | jq .recovery.live\n"
            "  %s wal orders verify --log-dir /srv/queues   # a log moved elsewhere\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname,
            cli_progname);
}

/* ------------------------------------------------------------------ the model */

struct region {
    uint64_t off, len;
    bool zeros; /* all zero bytes: reserved and never written */
};

struct logfile {
    char name[16];   /* "wal.NNNNNNNNNN" */
    uint64_t seq;    /* from the name */
    uint64_t size;   /* of the file */
    int open_err;    /* -errno of open/fstat/mmap, or 0 */
    bool not_regular;
    bool bus;        /* SIGBUS while reading: it shrank under the mapping */
    const char *header_problem; /* NULL: the header is valid */
    bool seq_mismatch;          /* valid header, but its seq is not the name's */
    bool truncated;             /* valid header, but the file is shorter than its file_size */
    uint64_t hdr_file_size;
    bool readable;              /* recovery reads it: valid header, matching seq */
    /* from a valid header */
    uint64_t epoch, hdr_seq;
    uint32_t capacity, max_msg_size, durability;
    /* from the records */
    uint64_t by_type[WAL_MARK + 1];
    uint64_t payload_bytes;  /* message bytes of the PUBLISH records */
    uint64_t keyed;          /* PUBLISH records with a dedup key */
    uint64_t malformed;      /* PUBLISH records whose body does not parse (recovery skips) */
    uint64_t first_malformed; /* offset of the first one */
    uint64_t min_id, max_id; /* of PUBLISH/ACK/DEAD/NACK records (n_ids of them) */
    uint64_t n_ids;
    struct walscan_stats st;
    struct region regions[REGIONS_KEPT];
    uint64_t n_regions; /* found by the callback (all, not only the kept ones) */
    uint64_t prev_end;  /* scan state: end of the previous valid record */
    const uint8_t *base;
};

struct entry { /* one record for the recovery decision: sorted by (id, log order) */
    uint64_t id, order;
    uint32_t len; /* PUBLISH: message bytes */
    uint16_t type, attempt;
};

struct problem {
    char text[PROBLEM_TEXT];
};

struct walrep {
    char dir[SHMQ_LOG_DIR_MAX + 64];
    const char *dir_from; /* "--log-dir", "segment" or "state directory" */
    const char *segment;  /* "valid", "missing" or "damaged" */
    bool durability_none; /* the segment says the queue has no log */
    struct logfile *f;
    size_t n, cap;
    struct entry *v;
    size_t nv, capv;
    bool oom;
    struct problem problems[PROBLEMS_KEPT];
    uint64_t n_problems;
    struct problem warnings[PROBLEMS_KEPT];
    uint64_t n_warnings;
    uint64_t last_written_seq; /* newest file with records or a torn tail */
    bool any_written;
    /* what recovery would do */
    uint64_t live, resolved, live_min, live_max, highest_id, with_attempts, orphans;
    uint32_t live_max_len; /* the longest live message */
    uint64_t files_read, files_skipped;
};

static void add_note(struct problem *list, uint64_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_note(struct problem *list, uint64_t *n, const char *fmt, ...)
{
    if (*n < PROBLEMS_KEPT) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(list[*n].text, sizeof(list[*n].text), fmt, ap);
        va_end(ap);
    }
    (*n)++;
}
#define PROBLEM(r, ...) add_note((r)->problems, &(r)->n_problems, __VA_ARGS__)
#define WARNING(r, ...) add_note((r)->warnings, &(r)->n_warnings, __VA_ARGS__)

/* ------------------------------------------------------------------ reading the files */

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
    const struct logfile *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_id_order(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* List the log files of r->dir. 0 or -errno (the directory cannot be read). */
static int list_files(struct walrep *r)
{
    DIR *d = opendir(r->dir);
    if (!d)
        return -errno;
    for (struct dirent *e; (e = readdir(d));) {
        uint64_t seq;
        if (!name_is_log_file(e->d_name, &seq))
            continue; /* temporary files (wal.N.tmp.*) and others: recovery ignores them too */
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 16;
            struct logfile *f = realloc(r->f, cap * sizeof(*f));
            if (!f) {
                closedir(d);
                return -ENOMEM;
            }
            r->f = f;
            r->cap = cap;
        }
        struct logfile *f = &r->f[r->n++];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", e->d_name);
        f->seq = seq;
    }
    closedir(d);
    if (r->n)
        qsort(r->f, r->n, sizeof(*r->f), by_seq);
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

static bool all_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* A run of invalid bytes [from, to) before a valid record: a bad region by walscan's rule
 * (any non-zero byte, or at least a record header's worth of zeros). */
static void note_gap(struct logfile *f, uint64_t from, uint64_t to)
{
    if (to <= from)
        return;
    bool zeros = all_zero(f->base + from, to - from);
    if (zeros && to - from < WAL_REC_HEADER)
        return;
    if (f->n_regions < REGIONS_KEPT)
        f->regions[f->n_regions] = (struct region){from, to - from, zeros};
    f->n_regions++;
}

struct scan_arg {
    struct walrep *r;
    struct logfile *f;
};

static int on_record(void *arg, uint64_t offset, const struct wal_rec *rec, const void *payload)
{
    struct scan_arg *a = arg;
    struct logfile *f = a->f;
    struct walrep *r = a->r;
    note_gap(f, f->prev_end, offset);
    uint64_t size = wal_rec_size(rec->len);
    f->prev_end = offset + (size < f->size - offset ? size : f->size - offset);
    if (rec->type <= WAL_MARK)
        f->by_type[rec->type]++;
    if (rec->type == WAL_PAD)
        return 0;
    struct wal_publish pub = {.len = rec->len};
    if (rec->type == WAL_PUBLISH) {
        if (wal_parse_publish(rec, payload, &pub) != 0) {
            if (f->malformed++ == 0)
                f->first_malformed = offset;
            return 0; /* recover.c's collect() leaves it out too */
        }
        f->payload_bytes += pub.len;
        f->keyed += pub.key_len > 0;
    }
    if (rec->type != WAL_MARK) {
        if (f->n_ids == 0 || rec->id < f->min_id)
            f->min_id = rec->id;
        if (f->n_ids == 0 || rec->id > f->max_id)
            f->max_id = rec->id;
        f->n_ids++;
    }
    if (!f->readable)
        return 0; /* recovery skips this file */
    if (r->nv == r->capv) {
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
    r->v[r->nv++] = (struct entry){.id = rec->id, .order = (f->seq << 32) | (offset / WAL_ALIGN),
                                   .len = pub.len, .type = rec->type,
                                   .attempt = rec->attempt};
    return 0;
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

/* Check the header and walk the records of f, mapped at base. -EFAULT on SIGBUS. */
static int scan_mapped(struct walrep *r, struct logfile *f, const uint8_t *base)
{
    size_t nv_before = r->nv;
    if (sigsetjmp(bus_jump, 1)) {
        bus_armed = 0;
        r->nv = nv_before; /* what was collected from this file is not trusted */
        return -EFAULT;
    }
    bus_armed = 1;
    f->base = base;
    f->header_problem = header_problem(base, f->size);
    if (!f->header_problem) {
        const struct wal_file_header *h = (const struct wal_file_header *)base;
        f->epoch = h->epoch;
        f->hdr_seq = h->seq;
        f->capacity = h->layout.capacity;
        f->max_msg_size = h->layout.max_msg_size;
        f->durability = h->layout.durability;
        f->seq_mismatch = h->seq != f->seq;
        f->hdr_file_size = h->file_size;
        f->truncated = h->file_size > f->size; /* the records before the cut still count */
        f->readable = !f->seq_mismatch;
        f->prev_end = WAL_HEADER_SIZE;
        struct scan_arg a = {r, f};
        walscan_records(base, (size_t)f->size, h, on_record, &a, &f->st);
    }
    bus_armed = 0;
    return 0;
}

static void read_file(struct walrep *r, int dfd, struct logfile *f)
{
    int fd = openat(dfd, f->name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0) {
        f->open_err = -errno;
        return;
    }
    if (fstat(fd, &st) != 0) {
        f->open_err = -errno;
        close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        f->not_regular = true;
        close(fd);
        return;
    }
    f->size = (uint64_t)st.st_size;
    if (f->size == 0) {
        close(fd);
        f->header_problem = "empty file";
        return;
    }
    void *base = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        f->open_err = -errno;
        return;
    }
    if (scan_mapped(r, f, base) == -EFAULT) {
        f->bus = true;
        f->readable = false;
    }
    f->base = NULL;
    munmap(base, (size_t)f->size);
}

static int read_files(struct walrep *r)
{
    int dfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    struct sigaction sa = {.sa_handler = on_sigbus}, old_sa;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old_sa);
    for (size_t i = 0; i < r->n && !r->oom; i++)
        read_file(r, dfd, &r->f[i]);
    sigaction(SIGBUS, &old_sa, NULL);
    close(dfd);
    return r->oom ? -ENOMEM : 0;
}

/* ------------------------------------------------------------------ judging */

/* What shmq_recover() would restore: recover.c's decide(), on ids and types only. */
static void decide(struct walrep *r)
{
    if (r->nv)
        qsort(r->v, r->nv, sizeof(*r->v), by_id_order);
    for (size_t i = 0; i < r->nv;) {
        size_t j = i;
        bool published = false, resolved = false, resolution = false;
        uint32_t attempt = 0, len = 0;
        for (; j < r->nv && r->v[j].id == r->v[i].id; j++) {
            const struct entry *e = &r->v[j];
            if (e->type == WAL_PUBLISH) {
                if (resolved)
                    attempt = 0; /* redriven from the dead letters: attempts start again */
                published = true;
                resolved = false;
                len = e->len;
            } else if (e->type == WAL_ACK || e->type == WAL_DEAD) {
                resolved = true;
                resolution = true;
            } else if (e->type == WAL_NACK && e->attempt > attempt) {
                attempt = e->attempt;
            }
        }
        uint64_t id = r->v[i].id;
        if (id > r->highest_id)
            r->highest_id = id;
        if (published && !resolved) {
            if (r->live == 0 || id < r->live_min)
                r->live_min = id;
            if (r->live == 0 || id > r->live_max)
                r->live_max = id;
            r->live++;
            r->with_attempts += attempt > 0;
            if (len > r->live_max_len)
                r->live_max_len = len;
        } else if (published) {
            r->resolved++;
        } else if (resolution) {
            r->orphans++; /* its PUBLISH was in a file already deleted */
        }
        i = j;
    }
}

static void judge(struct walrep *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct logfile *f = &r->f[i];
        if (f->readable && (f->st.records > 0 || f->st.torn_offset) &&
            (!r->any_written || f->seq > r->last_written_seq)) {
            r->last_written_seq = f->seq;
            r->any_written = true;
        }
        r->files_read += f->readable;
        r->files_skipped += !f->readable;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct logfile *f = &r->f[i];
        if (i > 0 && f->seq > r->f[i - 1].seq + 1) {
            uint64_t from = r->f[i - 1].seq + 1, to = f->seq - 1;
            if (from == to)
                PROBLEM(r, "wal.%010" PRIu64 ": missing in the middle of the log (1 file lost)",
                        from);
            else
                PROBLEM(r,
                        "wal.%010" PRIu64 "..wal.%010" PRIu64
                        ": missing in the middle of the log (%" PRIu64 " files lost)",
                        from, to, to - from + 1);
        }
        if (f->open_err) {
            PROBLEM(r, "%s: cannot be read: %s", f->name, strerror(-f->open_err));
            continue;
        }
        if (f->not_regular) {
            PROBLEM(r, "%s: not a regular file", f->name);
            continue;
        }
        if (f->bus) {
            PROBLEM(r, "%s: truncated while it was read (SIGBUS)", f->name);
            continue;
        }
        if (f->header_problem) {
            PROBLEM(r, "%s: bad header: %s (%" PRIu64 " bytes); recovery skips this file",
                    f->name, f->header_problem, f->size);
            continue;
        }
        if (f->seq_mismatch)
            PROBLEM(r, "%s: its header says seq %" PRIu64 "; recovery skips this file", f->name,
                    f->hdr_seq);
        if (f->malformed)
            PROBLEM(r,
                    "%s: %" PRIu64 " PUBLISH record%s with a malformed body (first at offset "
                    "%" PRIu64 "); recovery skips %s",
                    f->name, f->malformed, f->malformed == 1 ? "" : "s", f->first_malformed,
                    f->malformed == 1 ? "it" : "them");
        for (uint64_t k = 0; k < f->n_regions && k < REGIONS_KEPT; k++) {
            const struct region *g = &f->regions[k];
            PROBLEM(r,
                    "%s: bad region at offset %" PRIu64 ", %" PRIu64 " bytes (%s); recovery "
                    "skips it",
                    f->name, g->off, g->len,
                    g->zeros ? "zeros: space reserved and never written" : "garbage");
        }
        if (f->n_regions > REGIONS_KEPT)
            PROBLEM(r, "%s: %" PRIu64 " more bad regions", f->name, f->n_regions - REGIONS_KEPT);
        if (f->truncated) /* a file is made full size before it is named: never a crash */
            PROBLEM(r,
                    "%s: truncated: %" PRIu64 " bytes of the %" PRIu64
                    " its header says; recovery reads the %" PRIu64 " records before the cut",
                    f->name, f->size, f->hdr_file_size, f->st.records);
        else if (f->st.torn_offset) {
            uint64_t len = f->size - f->st.torn_offset;
            if (r->any_written && f->seq == r->last_written_seq)
                WARNING(r,
                        "%s: torn tail at offset %" PRIu64 ", %" PRIu64
                        " bytes: a crash while writing the newest file (allowed; recovery "
                        "ignores it)",
                        f->name, f->st.torn_offset, len);
            else
                PROBLEM(r,
                        "%s: torn tail at offset %" PRIu64 ", %" PRIu64
                        " bytes, but newer files hold records (corruption)",
                        f->name, f->st.torn_offset, len);
        }
    }
    decide(r);
}

/* ------------------------------------------------------------------ output */

static void emit_file(struct emitter *e, const struct logfile *f, bool detailed)
{
    emit_begin(e, NULL, f->name, detailed ? EMIT_BLOCK : EMIT_INLINE);
    emit_word(e, "name", f->name);
    emit_u64(e, "seq", f->seq);
    emit_u64(e, "size", f->size);
    const char *header = f->open_err      ? "unreadable"
                         : f->not_regular ? "not a regular file"
                         : f->bus         ? "truncated while read"
                         : f->header_problem ? f->header_problem
                         : f->seq_mismatch   ? "seq differs from the name"
                                             : "ok";
    emit_bytes(e, "header", header, strlen(header));
    bool scanned = !f->open_err && !f->not_regular && !f->bus && !f->header_problem;
    emit_bool(e, "recovery_reads", f->readable);
    emit_bool(e, "truncated", f->truncated);
    if (detailed) {
        if (scanned) {
            emit_hex(e, "epoch", f->epoch);
            emit_u64(e, "header_seq", f->hdr_seq);
            emit_u64(e, "header_file_size", f->hdr_file_size);
            emit_u64(e, "capacity", f->capacity);
            emit_u64(e, "max_msg_size", f->max_msg_size);
        } else {
            emit_null(e, "epoch");
            emit_null(e, "header_seq");
            emit_null(e, "header_file_size");
            emit_null(e, "capacity");
            emit_null(e, "max_msg_size");
        }
    }
    if (!detailed) {
        emit_u64(e, "records", f->st.records);
        emit_u64(e, "bad_regions", f->st.bad_regions);
        if (f->st.torn_offset)
            emit_u64(e, "torn_tail", f->st.torn_offset);
        else
            emit_null(e, "torn_tail");
        emit_end(e);
        return;
    }
    emit_begin(e, "records", NULL, EMIT_INLINE);
    emit_u64(e, "total", f->st.records);
    emit_u64(e, "publish", f->by_type[WAL_PUBLISH]);
    emit_u64(e, "ack", f->by_type[WAL_ACK]);
    emit_u64(e, "dead", f->by_type[WAL_DEAD]);
    emit_u64(e, "nack", f->by_type[WAL_NACK]);
    emit_u64(e, "pad", f->by_type[WAL_PAD]);
    emit_u64(e, "mark", f->by_type[WAL_MARK]);
    emit_end(e);
    emit_u64(e, "message_bytes", f->payload_bytes);
    emit_u64(e, "keyed", f->keyed);
    emit_u64(e, "malformed", f->malformed);
    emit_u64(e, "used_bytes", scanned ? f->st.end_offset : 0);
    if (f->n_ids) {
        emit_u64(e, "min_id", f->min_id);
        emit_u64(e, "max_id", f->max_id);
    } else {
        emit_null(e, "min_id");
        emit_null(e, "max_id");
    }
    emit_u64(e, "bad_bytes", f->st.bad_bytes);
    emit_begin(e, "bad_regions", NULL, EMIT_ARRAY);
    for (uint64_t k = 0; k < f->n_regions && k < REGIONS_KEPT; k++) {
        emit_begin(e, NULL, "region", EMIT_INLINE);
        emit_u64(e, "offset", f->regions[k].off);
        emit_u64(e, "length", f->regions[k].len);
        emit_word(e, "kind", f->regions[k].zeros ? "zeros" : "garbage");
        emit_end(e);
    }
    emit_end(e);
    emit_u64(e, "bad_regions_total", f->st.bad_regions);
    if (f->st.torn_offset) {
        emit_begin(e, "torn_tail", NULL, EMIT_INLINE);
        emit_u64(e, "offset", f->st.torn_offset);
        emit_u64(e, "length", f->size - f->st.torn_offset);
        emit_end(e);
    } else {
        emit_null(e, "torn_tail");
    }
    emit_end(e);
}

static void emit_notes(struct emitter *e, const char *key, const struct problem *list,
                       uint64_t n)
{
    emit_begin(e, key, NULL, EMIT_ARRAY);
    for (uint64_t i = 0; i < n && i < PROBLEMS_KEPT; i++)
        emit_bytes(e, NULL, list[i].text, strlen(list[i].text));
    if (n > PROBLEMS_KEPT) {
        char more[64];
        snprintf(more, sizeof(more), "... and %" PRIu64 " more", n - PROBLEMS_KEPT);
        emit_bytes(e, NULL, more, strlen(more));
    }
    emit_end(e);
}

static void emit_report(struct emitter *e, const char *name, const struct walrep *r,
                        bool inspect)
{
    emit_bytes(e, "queue", name, strlen(name));
    emit_bytes(e, "log_dir", r->dir, strlen(r->dir));
    emit_word(e, "log_dir_from", r->dir_from);
    emit_word(e, "segment", r->segment);
    emit_begin(e, "files", NULL, EMIT_ARRAY);
    for (size_t i = 0; i < r->n; i++)
        emit_file(e, &r->f[i], inspect);
    emit_end(e);

    uint64_t by_type[WAL_MARK + 1] = {0}, records = 0, bad = 0, torn = 0;
    for (size_t i = 0; i < r->n; i++) {
        for (int t = 0; t <= WAL_MARK; t++)
            by_type[t] += r->f[i].by_type[t];
        records += r->f[i].st.records;
        bad += r->f[i].st.bad_regions;
        torn += r->f[i].st.torn_offset != 0;
    }
    emit_begin(e, "totals", NULL, inspect ? EMIT_BLOCK : EMIT_INLINE);
    emit_u64(e, "files", r->n);
    emit_u64(e, "records", records);
    if (inspect) {
        emit_u64(e, "publish", by_type[WAL_PUBLISH]);
        emit_u64(e, "ack", by_type[WAL_ACK]);
        emit_u64(e, "dead", by_type[WAL_DEAD]);
        emit_u64(e, "nack", by_type[WAL_NACK]);
        emit_u64(e, "pad", by_type[WAL_PAD]);
        emit_u64(e, "mark", by_type[WAL_MARK]);
    }
    emit_u64(e, "bad_regions", bad);
    emit_u64(e, "torn_tails", torn);
    emit_end(e);

    if (inspect) {
        /* the newest file recovery reads holds the config it rebuilds the segment with */
        const struct logfile *newest = NULL;
        for (size_t i = 0; i < r->n; i++)
            if (r->f[i].readable)
                newest = &r->f[i];
        emit_begin(e, "recovery", NULL, EMIT_BLOCK);
        emit_u64(e, "files_read", r->files_read);
        emit_u64(e, "files_skipped", r->files_skipped);
        emit_u64(e, "live", r->live);
        if (r->live) {
            emit_u64(e, "first_live_id", r->live_min);
            emit_u64(e, "last_live_id", r->live_max);
        } else {
            emit_null(e, "first_live_id");
            emit_null(e, "last_live_id");
        }
        emit_u64(e, "live_with_attempts", r->with_attempts);
        emit_u64(e, "resolved", r->resolved);
        emit_u64(e, "resolved_without_publish", r->orphans);
        emit_u64(e, "highest_id", r->highest_id);
        if (newest)
            emit_u64(e, "capacity", newest->capacity);
        else
            emit_null(e, "capacity");
        const char *outcome =
            !newest                            ? "fails: no readable log file"
            : r->live > newest->capacity       ? "fails: more live messages than the capacity"
            : r->live_max_len > newest->max_msg_size ? "fails: a live message longer than "
                                                       "max_msg_size"
            : strcmp(r->segment, "valid") == 0 ? "refused while the segment exists"
                                               : "restores the live messages";
        emit_bytes(e, "outcome", outcome, strlen(outcome));
        emit_end(e);
    }
    emit_notes(e, "problems", r->problems, r->n_problems);
    emit_notes(e, "warnings", r->warnings, r->n_warnings);
    emit_bool(e, "ok", r->n_problems == 0);
}

/* ------------------------------------------------------------------ the command */

/* Where the log is; fills r->dir, r->dir_from, r->segment. 0 or CLI_EXIT_*. */
static int find_dir(struct walrep *r, const char *name, const char *log_dir)
{
    struct segment seg;
    memset(&seg, 0, sizeof(seg));
    int err = seg_open_readonly(name, &seg);
    bool seg_ok = err == 0 && seg_check_geometry(&seg) == NULL;
    r->segment = seg_ok ? "valid" : err == -ENOENT ? "missing" : "damaged";
    if (seg_ok && !log_dir) {
        const struct seg_layout *l = &seg.layout; /* validated: log_dir is NUL-terminated */
        if (l->durability != SHMQ_DURABILITY_NONE && l->log_dir[0]) {
            snprintf(r->dir, sizeof(r->dir), "%s", l->log_dir);
            r->dir_from = "segment";
        } else {
            r->durability_none = true;
        }
    }
    if (err == 0)
        segment_close(&seg);
    if (r->dir_from)
        return 0;
    r->dir_from = log_dir ? "--log-dir" : "state directory";
    if ((err = wal_dir_path(name, log_dir, r->dir, sizeof(r->dir))) != 0) {
        fprintf(stderr, "%s wal: %s: log directory path too long\n", cli_progname, name);
        return log_dir ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
    }
    return 0;
}

static void walrep_free(struct walrep *r)
{
    free(r->f);
    free(r->v);
    free(r);
}

int cmd_wal(int argc, char **argv)
{
    enum { OPT_LOG_DIR = 256 };
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"log-dir", required_argument, NULL, OPT_LOG_DIR},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false;
    const char *log_dir = NULL;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case OPT_LOG_DIR: log_dir = optarg; break;
        case 'h': cmd_wal_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("wal", c, argv);
        }
    }
    int nargs = argc - optind;
    if (nargs < 1)
        return cli_usage_error("wal", "missing queue NAME");
    if (nargs < 2)
        return cli_usage_error("wal", "missing action: inspect or verify");
    if (nargs > 2)
        return cli_usage_error("wal", "unexpected argument '%s'", argv[optind + 2]);
    const char *name = argv[optind], *action = argv[optind + 1];
    if ((rc = cli_name("wal", name)) != 0)
        return rc;
    bool inspect = strcmp(action, "inspect") == 0;
    if (!inspect && strcmp(action, "verify") != 0)
        return cli_usage_error("wal", "unknown action '%s' (inspect or verify)", action);
    if (log_dir && (!*log_dir || strlen(log_dir) > SHMQ_LOG_DIR_MAX))
        return cli_usage_error("wal", "--log-dir: empty or longer than %d bytes",
                               SHMQ_LOG_DIR_MAX);

    struct walrep *r = calloc(1, sizeof(*r));
    if (!r) {
        fprintf(stderr, "%s wal: out of memory\n", cli_progname);
        return CLI_EXIT_RUNTIME;
    }
    if ((rc = find_dir(r, name, log_dir)) != 0) {
        walrep_free(r);
        return rc;
    }
    int err = list_files(r);
    if (!err)
        err = read_files(r);
    if (err) {
        if (err == -ENOENT)
            fprintf(stderr, "%s wal: %s: no log directory %s%s\n", cli_progname, name, r->dir,
                    r->durability_none ? " (the queue's durability is none: it keeps no log)"
                                       : "");
        else
            fprintf(stderr, "%s wal: %s: %s: %s\n", cli_progname, name, r->dir, strerror(-err));
        walrep_free(r);
        return CLI_EXIT_RUNTIME;
    }
    judge(r);

    struct emitter e;
    emit_init(&e, stdout, json);
    emit_report(&e, name, r, inspect);
    emit_finish(&e);
    rc = CLI_EXIT_OK;
    if (!inspect && r->n_problems) {
        fflush(stdout);
        fprintf(stderr, "%s wal: %s: the log in %s is damaged: %" PRIu64 " problem%s (listed)\n",
                cli_progname, name, r->dir, r->n_problems, r->n_problems == 1 ? "" : "s");
        rc = CLI_EXIT_RUNTIME;
    }
    walrep_free(r);
    return rc;
}
