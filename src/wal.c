/*
 * wal.c - appending to a queue's write-ahead log (format and rules in wal.h).
 *
 * Each process maps the files it writes into. Mappings are cached by seq % WAL_CACHE; a writer
 * uses a cached mapping inside a section (quiesce.h: a plain store of a per-thread counter on
 * each side, no locked instruction), and a mapping that left the cache (evicted, or its file
 * deleted) is unmapped once a grace period begun after it left is over: no thread of this
 * process that could have read it from the cache is still inside that section (docs/DESIGN.md,
 * "The log's mapping cache"). A mapping keeps no descriptor (a stopped thread holds back many
 * mappings, never descriptors: EMFILE): the group commit flushes a file through its mapping
 * (io_datasync_map), never by its name. A file is made complete under a temporary name and
 * link()ed into place, so a visible wal.N always has a valid header: a writer that finds no file
 * makes it, and two that race both succeed (the loser of link() maps the winner's file). Every
 * file operation is relative to the log directory opened once by wal_open() (dirfd), never to
 * its path: a process of a queue deleted and made again by the same name works in the deleted
 * directory, where nothing can be made, and never touches the new one (docs/DESIGN.md,
 * "Delete, then make again by the same name").
 *
 * Retention: a file is deleted (wal_maintain) only below both the file being written and the
 * lowest file any slot still refers to (slot.wal_seq, set to a lower bound before a publish
 * reserves log space). Deleted files are thus always a prefix of the log, so an ACK or DEAD
 * record deleted with them only ever resolved a PUBLISH record deleted too.
 *
 * Group commit (SYNC): a waiter lowers wal_sync_low to its file, then takes a ticket from
 * wal_sync_req. A leader (wal_sync_leader CAS from 0 to its thread id) reads the ticket count,
 * reads wal_sync_low, fdatasyncs those files, clears the low only if they all succeeded (a CAS
 * on a version-counted word), publishes the count in wal_sync_done, and wakes the others. Every
 * ticket up to the count was taken after its record was written, so one flush covers them all.
 * A leader that dies or stalls is taken over; it took nothing with it (GC1-GC4 in DESIGN.md).
 * The fdatasync calls run one round at a time, under a flush lock (GC5/GC6): a round records
 * its failure before the next one flushes, so no leader reports success for a file whose
 * writeback error another leader's fdatasync consumed (review R2-3). A lock holder that is dead
 * or stopped is taken over, its flush's outcome unknown: the records it may have covered get
 * -EIO, the log is not failed (GC7, GC8: a stopped one may still flush late).
 *
 * Storage failures (docs/DESIGN.md, "Storage failures"): files are preallocated before they are
 * linked into place, so stores into a mapping cannot fault; an append fails only when its file
 * cannot be made or mapped, after its reservation was taken: the range is remembered (pend[]) and
 * closed with a PAD record once the file can be mapped. Every failure is counted in the segment
 * (wal_errors, wal_health). A file number far beyond the oldest file with nothing on disk near it
 * comes from a garbage wal_pos: no file is made for it.
 */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <urcu/futex.h>

#include "clock.h"
#include "crashpoint.h"
#include "crc32c.h"
#include "divide.h"
#include "io.h"
#include "loghead.h"
#include "nocancel.h"
#include "quiesce.h"
#include "registry.h"
#include "settings.h"

#define WAL_CACHE 8
#define WAL_PENDING 16           /* failed reservations a process remembers to close with PAD */
/* Log files a process keeps mapped per queue at most: the cache's, and those left mapped after
 * their eviction while a thread of the process stays inside a section (sweep_maps). Beyond it a
 * miss fails with -EBUSY rather than run the process into vm.max_map_count (65530 mappings of
 * every kind: malloc, thread stacks and dlopen fail there too) and hold deleted files' space. */
#define WAL_MAPS_MAX (WAL_CACHE + 256)
#define WAL_SEQ_MAX 9999999999ull /* file names have 10 digits */
#define WAL_POS_SLACK 1024       /* files beyond the oldest believed without a look at the disk */
#define WAL_PREPARE_AHEAD 4      /* files a maintenance pass prepares ahead at most */
_Static_assert(WAL_PREPARE_AHEAD < WAL_GEN_GAP, "an old preparer stays below a new generation");

struct walmap {
    _Atomic uint64_t seq; /* set before the cache store that publishes it; fixed while cached */
    uint64_t epoch;
    uint8_t *base; /* the file's only hold of ours: no descriptor is kept (map_file) */
    bool populated;         /* prefaulted for writing by wal_maintain (under w->lock) */
    bool graced;            /* out of the cache, a grace period begun after (under w->lock) */
    struct qs_grace *grace; /* that grace period (NULL: nobody was inside a section) */
    struct walmap *next;    /* every mapping this process made, for close */
};

struct wal {
    struct segment *seg;
    struct loghead head; /* the log's generations (loghead.h) */
    uint64_t gen;        /* ours: the segment's log_gen */
    char dir[SHMQ_LOG_DIR_MAX + 64];
    int dirfd; /* dir, opened once by wal_open(): every log file is reached relative to it */
    uint64_t file_size, usable;
    struct divisor per_file; /* usable, for positions -> (file, offset) without a divide */
    pthread_mutex_t lock; /* the miss path: mapping, evicting */
    _Atomic(struct walmap *) cache[WAL_CACHE];
    struct walmap *all;     /* mapped */
    struct walmap *retired; /* unmapped after their grace period: reused for the next file */
    uint32_t structs;       /* walmap structs allocated (all + retired): bounded by reuse */
    uint32_t mapped;        /* on w->all: at most WAL_MAPS_MAX */
    /* Reservations this process could not fill (their file could not be made or mapped): each
     * is closed with a PAD record once the file can be mapped, so it does not stay a hole.
     * Under lock; npend is read without it as a hint. */
    struct {
        uint64_t seq, off, len;
    } pend[WAL_PENDING];
    _Atomic int npend;
    _Atomic uint64_t pend_next_ns; /* no new try before (CLOCK_MONOTONIC): a full disk is slow */
    _Atomic uint64_t last_round_ns; /* the last group commit round this process led (stall rule) */
    /* wal_maintain's, under its caller's lock (shmq_maintain): the current file at this
     * process's last pass, and how many files it prepares ahead (raised, never lowered) */
    uint64_t prep_cur, prep_ahead;
};

uint32_t wal_rec_crc(const struct wal_rec *r, const void *payload)
{
    const char *h = (const char *)r + 8;
    if (r->type != WAL_PAD && payload == (const char *)r + WAL_REC_HEADER)
        return crc32c(0, h, WAL_REC_HEADER - 8 + (size_t)r->len); /* one pass, same value */
    uint32_t c = crc32c(0, h, WAL_REC_HEADER - 8);
    return r->type == WAL_PAD ? c : crc32c(c, payload, r->len);
}

uint32_t wal_header_crc(const struct wal_file_header *h)
{
    return crc32c(0, h, offsetof(struct wal_file_header, crc));
}

/* The name of log file seq in w->dirfd. */
static void file_name(uint64_t seq, char *buf, size_t size)
{
    snprintf(buf, size, "wal.%010llu", (unsigned long long)seq);
}

uint64_t wal_seq_of(const struct wal *w, uint64_t pos)
{
    return divisor_div(&w->per_file, pos, NULL);
}

uint64_t wal_current_seq(const struct wal *w)
{
    return wal_seq_of(w, atomic_load(&w->seg->hdr->wal_pos));
}

/*
 * Log health (seg_header.wal_health, wal_errors): a failure sets the errno bits and counts; the
 * next write that succeeds clears the errno bits (a load of a word nobody writes while the log
 * is healthy, then nothing). relaxed: a gauge and a counter, ordered against nothing; the
 * sticky flush bit has its own ordering (lead_sync).
 */
static void log_failed(struct wal *w, int err)
{
    struct seg_header *h = w->seg->hdr;
    atomic_fetch_add_explicit(&h->wal_errors, 1, memory_order_relaxed);
    uint32_t cur = atomic_load_explicit(&h->wal_health, memory_order_relaxed), e = (uint32_t)-err;
    while (!atomic_compare_exchange_weak_explicit(&h->wal_health, &cur,
                                                  (cur & ~WAL_HEALTH_ERRNO) | (e & WAL_HEALTH_ERRNO),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

static void log_ok(struct wal *w)
{
    struct seg_header *h = w->seg->hdr;
    uint32_t cur = atomic_load_explicit(&h->wal_health, memory_order_relaxed);
    while ((cur & WAL_HEALTH_ERRNO) &&
           !atomic_compare_exchange_weak_explicit(&h->wal_health, &cur, cur & ~WAL_HEALTH_ERRNO,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

void wal_health_of(const struct seg_header *h, struct wal_health *out)
{
    /* relaxed: a snapshot of a gauge and a counter */
    uint32_t v = atomic_load_explicit(&((struct seg_header *)h)->wal_health, memory_order_relaxed);
    out->errors = atomic_load_explicit(&((struct seg_header *)h)->wal_errors, memory_order_relaxed);
    out->last_error = -(int)(v & WAL_HEALTH_ERRNO);
    out->flush_failed = (v & WAL_HEALTH_FLUSH_FAILED) != 0;
}

static inline bool gen_live(const struct wal *w)
{
    /* relaxed: E1 is a hint that stops old writers early; E2 (after a seq_cst fence) is what
     * the proof needs (docs/DESIGN.md, "Generations") */
    return atomic_load_explicit(&w->head.h->gen, memory_order_relaxed) == w->gen;
}

bool wal_gen_live(const struct wal *w) { return gen_live(w); }

/* Fenced: -EIDRM, or 0 when the queue was deleted (shmq_unlink fenced its head, loghead.h): an
 * append of a deleted queue is as good as one made just before the delete, and writes nothing
 * (never into the files of a queue made again by that name). */
static inline int fenced(const struct wal *w)
{
    return atomic_load_explicit(&w->head.h->gen, memory_order_relaxed) == LOG_GEN_DELETED ? 0 : -EIDRM;
}


const _Atomic uint64_t *wal_gen_word(const struct wal *w, uint64_t *mine)
{
    *mine = w->gen;
    return &w->head.h->gen;
}

/* Make the names in our log directory durable (fsync). A failure is counted and, with SYNC
 * durability, fails the log as a failed flush does: a name lost at a power loss takes every
 * record of its file, and a later fsync of the directory may say 0 all the same (the error is
 * reported once): sticky until a rebuild (seq_cst, as lead_sync's). */
static void sync_dir(struct wal *w)
{
    int err = io_fsync(w->dirfd);
    if (!err)
        return;
    log_failed(w, err);
    if (w->seg->layout.durability == SHMQ_DURABILITY_SYNC)
        atomic_fetch_or(&w->seg->hdr->wal_health, WAL_HEALTH_FLUSH_FAILED);
}

/* Make wal.seq complete under a temporary name, then link it into place. prepare: made ahead of
 * the writers (prepare_file): its pages are written with zeros too before the link (best effort:
 * a file whose zeros could not be written is as complete as one made by a writer). */
static int make_file(struct wal *w, uint64_t seq, bool prepare)
{
    char tmp[64], path[32];
    file_name(seq, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%lx", path, (int)getpid(), (unsigned long)pthread_self());
    uint32_t mode = logdir_file_mode(w->seg->layout.mode); /* a shared queue's users log too */
    CRASH_POINT(make_file_before_create);
    /* in OUR directory: once shmq_unlink() removed it, this fails (-ENOENT), also when a queue
     * was made again by that name: a directory of the same path is another one (R2-4) */
    int fd = io_openat(w->dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return fd;
    struct wal_file_header h;
    memset(&h, 0, sizeof(h));
    h.magic = WAL_FILE_MAGIC;
    h.version = WAL_VERSION;
    h.header_size = WAL_HEADER_SIZE;
    h.seq = seq;
    h.file_size = w->file_size;
    h.layout = w->seg->layout;
    if (io_getrandom(&h.epoch, sizeof(h.epoch), 0) != 0)
        h.epoch = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&h ^ seq;
    h.crc = wal_header_crc(&h);
    /* allocated for real before anyone maps it: appends store through the mapping, and a
     * store into a page the file system cannot allocate is a SIGBUS, not an error */
    int err = io_fchmod(fd, mode); /* exactly: the umask neither widens nor narrows it */
    if (!err)
        err = io_ftruncate(fd, w->file_size);
    if (!err)
        err = io_preallocate(fd, 0, w->file_size);
    if (!err)
        err = io_pwrite(fd, &h, sizeof(h), 0);
    if (!err)
        err = io_fsync(fd);
    /* pre-touch: the pages in the page cache, their blocks written, so that a writer's first
     * store into a page is a minor fault (~1 us per 16 pages here), not the allocation of a page
     * never written (10-12 us per page). Not fsynced: a crash leaves zeros either way. Its
     * failure fails nothing: the file is allocated, only slower to write into */
    if (!err && prepare) {
        io_write_zeros(fd, WAL_HEADER_SIZE, w->file_size - WAL_HEADER_SIZE);
        CRASH_POINT(prepare_before_link);
    }
    io_close(fd);
    bool linked = false;
    if (!err && (err = io_linkat(w->dirfd, tmp, w->dirfd, path)) == -EEXIST)
        err = 0; /* a racer made it first: use theirs */
    else if (!err)
        linked = true;
    int uerr = io_unlinkat(w->dirfd, tmp);
    if (uerr && uerr != -ENOENT)
        log_failed(w, uerr); /* a full-size file left: counted; maintenance removes it later */
    /* F1 (a seq_cst load after our link, a system call): retention moves wal_oldest_seq before
     * it unlinks, so either it unlinks after our link or we see the new bound and take our
     * file back: a deleted file never comes back to stay. (Only a file below retention: nothing
     * acknowledged can be in it. A file made by a writer of an older generation is left: a
     * recovery may have read it, and its other writers' records with it; docs/DESIGN.md.) */
    if (linked && seq < atomic_load(&w->seg->hdr->wal_oldest_seq)) {
        io_unlinkat(w->dirfd, path);
        return -ESTALE;
    }
    if (linked && !gen_live(w)) {
        if (fenced(w) == 0)
            io_unlinkat(w->dirfd, path); /* a deleted queue's file, in its directory going away */
        return -EIDRM;                   /* fenced meanwhile: write nothing more */
    }
    CRASH_POINT(make_file_after_link);
    sync_dir(w); /* the new name is durable too (SYNC promises power-loss safety) */
    return err;
}

/*
 * Can the log have reached file seq? Far beyond the oldest file, only if it or the one before it
 * is on disk (or it is the segment's first file): a garbage wal_pos in a damaged segment must not
 * make files with 11-digit names, nor send the deletion loop through billions of numbers.
 */
static bool seq_believable(struct wal *w, uint64_t seq)
{
    if (seq > WAL_SEQ_MAX)
        return false;
    if (seq <= atomic_load(&w->seg->hdr->wal_oldest_seq) + WAL_POS_SLACK ||
        seq == w->seg->layout.wal_base_pos / w->usable)
        return true;
    char name[32];
    file_name(seq, name, sizeof(name));
    if (io_faccessat(w->dirfd, name, F_OK) == 0)
        return true;
    file_name(seq - 1, name, sizeof(name));
    return io_faccessat(w->dirfd, name, F_OK) == 0;
}

static void close_pending(struct wal *w);

/* Map wal.seq, making it if it does not exist (and was not deleted as old). */
static int map_file(struct wal *w, uint64_t seq, struct walmap **out)
{
    char name[32];
    file_name(seq, name, sizeof(name));
    int fd = io_openat(w->dirfd, name, O_RDWR | O_CLOEXEC, 0);
    if (fd == -ENOENT) {
        /* acquire: pairs with the release in wal_maintain: deleted files stay deleted */
        if (seq < atomic_load_explicit(&w->seg->hdr->wal_oldest_seq, memory_order_acquire))
            return -ESTALE;
        if (!seq_believable(w, seq))
            return -EBADMSG; /* wal_pos in shm is garbage: make no file for it */
        int err = make_file(w, seq, false); /* nobody prepared it: no pre-touch on this path */
        if (err)
            return err;
        fd = io_openat(w->dirfd, name, O_RDWR | O_CLOEXEC, 0);
    } else if (fd >= 0 && w->seg->layout.durability == SHMQ_DURABILITY_SYNC) {
        /* made by another (a writer, a maintainer's preparation) whose fsync of the directory
         * may not have returned yet: our sync publishes in this file must not be covered by its
         * flush alone (review10). Once per file per process (the mapping is kept) */
        sync_dir(w);
    }
    if (fd < 0)
        return fd;
    struct stat st;
    struct walmap *m = w->retired; /* reused, never freed before wal_close (sweep_maps) */
    if (m)
        w->retired = m->next;
    else if ((m = calloc(1, sizeof(*m))) != NULL)
        w->structs++;
    void *base = NULL;
    int err = m ? io_fstat(fd, &st) : -ENOMEM;
    /* a file of another size is not one of ours (a torn one is never linked into place) */
    if (!err && (uint64_t)st.st_size != w->file_size)
        err = -EBADMSG;
    if (!err)
        err = io_mmap(fd, 0, w->file_size, PROT_READ | PROT_WRITE, MAP_SHARED, &base);
    /* the mapping holds the open file (its inode, and the open file's writeback error mark,
     * which lead_sync's msync checks as fdatasync would): no descriptor is kept, so mappings
     * held back by a thread stopped inside a section cost no descriptor (EMFILE) */
    io_close(fd);
    const struct wal_file_header *h = base;
    if (!err && (h->magic != WAL_FILE_MAGIC || h->seq != seq || h->file_size != w->file_size ||
                 wal_header_crc(h) != h->crc))
        err = -EBADMSG;
    else if (!err && h->layout.log_gen != w->gen) /* never mix generations in one file */
        err = gen_live(w) ? -EIO : -EIDRM;
    if (err) {
        if (base)
            io_munmap(base, w->file_size);
        if (m) { /* back to the retired list, for the next map_file */
            m->next = w->retired;
            w->retired = m;
        }
        return err;
    }
    atomic_store_explicit(&m->seq, seq, memory_order_relaxed); /* published by the cache store */
    m->populated = false;
    m->epoch = h->epoch;
    m->base = base;
    *out = m;
    return 0;
}

static void sweep_maps(struct wal *w);

/* get_map's miss, inside the caller's section: map file seq (or find it among ours) and cache
 * it, under w->lock. */
static __attribute__((noinline)) int get_map_miss(struct wal *w, uint64_t seq,
                                                  struct walmap **out)
{
    _Atomic(struct walmap *) *c = &w->cache[seq % WAL_CACHE];
    pthread_mutex_lock(&w->lock);
    struct walmap *m = atomic_load(c);
    int err = 0;
    if (!m || m->seq != seq) {
        for (m = w->all; m && m->seq != seq; m = m->next) {
        }
        if (!m && w->mapped >= WAL_MAPS_MAX)
            sweep_maps(w); /* a grace period may have ended since the last one */
        if (!m && w->mapped >= WAL_MAPS_MAX)
            err = -EBUSY; /* a thread of ours stays inside a section: held back (sweep_maps) */
        else if (!m && (err = map_file(w, seq, &m)) == 0) {
            m->next = w->all;
            w->all = m;
            w->mapped++;
        }
        /* seq_cst (release at least): publishes the mapping and its fields to get_map's
         * acquire load; the one it replaces is unmapped by sweep_maps after its grace period */
        if (!err)
            atomic_store(c, m);
    }
    sweep_maps(w);
    pthread_mutex_unlock(&w->lock);
    *out = m;
    return err;
}

/* Done with a mapping get_map() gave: the end of our section (quiesce.h). */
static inline __attribute__((always_inline)) void put_map(struct walmap *m)
{
    (void)m;
    qs_leave();
}

/*
 * Under w->lock: unmap every mapping that is no longer cached (evicted, or dropped as deleted)
 * once no thread of ours can be writing into it. The first sweep that finds it out of the cache
 * begins a grace period for it (QE2: it was removed from the cache before, under this lock); a
 * later sweep that finds that grace period over (every thread inside a section then has left
 * it) unmaps it: a section that began after the grace period began cannot have read it from
 * the cache (QE1, quiesce.h). A mapping put back in the cache meanwhile (get_map finds it in
 * w->all) drops its grace period: readers of the cache use it again. Nothing waits: a thread
 * stopped inside its section keeps the mapping until it goes on. The small struct stays
 * allocated (on w->retired); only the mapping and the file go, so deleted files do not stay
 * open. map_file() reuses a retired struct for the next file, so a long-lived process holds as
 * many structs as it ever had mappings at once (not one per file it ever mapped: the watchdog of
 * a queue with small files grew by ~9 KiB a minute).
 */
static void sweep_maps(struct wal *w)
{
    uint64_t oldest = atomic_load(&w->seg->hdr->wal_oldest_seq);
    for (int i = 0; i < WAL_CACHE; i++) { /* deleted files leave the cache */
        struct walmap *m = atomic_load(&w->cache[i]);
        if (m && m->seq < oldest)
            atomic_compare_exchange_strong(&w->cache[i], &m, NULL);
    }
    for (struct walmap **pp = &w->all, *m; (m = *pp);) {
        if (atomic_load(&w->cache[m->seq % WAL_CACHE]) == m) {
            free(m->grace); /* cached again: a grace period begun before means nothing now */
            m->grace = NULL;
            m->graced = false;
            pp = &m->next;
            continue;
        }
        if (!m->graced) {
            m->graced = qs_grace_begin(&m->grace) == 0; /* QE2; on failure: the next sweep */
            pp = &m->next;
            continue;
        }
        if (!qs_grace_over(m->grace)) {
            pp = &m->next;
            continue;
        }
        free(m->grace);
        m->grace = NULL;
        m->graced = false;
        io_munmap(m->base, w->file_size);
        m->base = NULL;
        *pp = m->next;
        m->next = w->retired;
        w->retired = m;
        w->mapped--;
    }
}

/*
 * The mapping of file seq, mapped on a miss (system calls, under w->lock), inside a section of
 * ours (quiesce.h) that put_map() ends; on an error no section is open. The hit: a load of the
 * cache and of the file number, no locked instruction.
 */
static inline __attribute__((always_inline)) int get_map(struct wal *w, uint64_t seq,
                                                         struct walmap **out)
{
    if (!qs_enter()) /* QE1 */
        return -ENOMEM;
    _Atomic(struct walmap *) *c = &w->cache[seq % WAL_CACHE];
    /* acquire: pairs with the release of the store that cached it (its fields and mapping are
     * there); after QE1: a mapping read here is not unmapped before our put_map */
    struct walmap *m = atomic_load_explicit(c, memory_order_acquire);
    /* relaxed: fixed while it is cached, and it cannot be reused before our section ends */
    if (__builtin_expect(m && atomic_load_explicit(&m->seq, memory_order_relaxed) == seq, 1)) {
        *out = m;
        return 0;
    }
    int err = get_map_miss(w, seq, out);
    if (err)
        qs_leave();
    return err;
}

/* The head of a live version-2 segment's log is gone (deleted by hand): make it again, naming
 * the segment's generation live and complete, under the exclusive lock. */
static int remake_head(struct wal *w)
{
    uint32_t mode = logdir_file_mode(w->seg->layout.mode);
    /* .recover is not made here (mode 0): without it as without the head, the directory is
     * one a delete is removing (it unlinks .recover, then the head, then rmdir). A head made
     * there was live: the opener's publishes went into the deleted queue's log, and the next
     * open rebuilt it (and the delete's rmdir failed, -ENOTEMPTY) */
    int lock = loghead_lock_at(w->dirfd, LOCK_EX, 0);
    if (lock < 0)
        return lock;
    int err = loghead_open(w->dir, false, 0, &w->head); /* another opener remade it first */
    if (err == -ENOENT)
        err = loghead_make(w->dir, mode, w->gen, &w->head); /* whole or not at all (F7) */
    io_close(lock);
    return err;
}

int wal_open(struct segment *seg, bool create, struct wal **out)
{
    struct wal *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->seg = seg;
    w->file_size = seg->layout.wal_file_size;
    w->usable = w->file_size - WAL_HEADER_SIZE;
    w->per_file = divisor_make(w->usable); /* config validation keeps files far above the header */
    snprintf(w->dir, sizeof(w->dir), "%s", seg->layout.log_dir);
    w->gen = seg->layout.log_gen;
    w->dirfd = -1;
    w->prep_cur = UINT64_MAX; /* no pass yet: the first prepares one file ahead */
    /* checked, then opened once: every log file operation from now on is relative to this
     * directory, never to its path (R2-4: a queue deleted and made again by the same name has
     * another directory at the same path). Never made here: the creator made it, and a
     * directory a delete removed is not made again (no queue's log) */
    int err = logdir_check(w->dir, seg->layout.mode);
    if (!err) {
        w->dirfd = io_open(w->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        err = w->dirfd < 0 ? w->dirfd : 0;
    }
    /* the head by path, once, here: were the directory replaced since the open above, the head
     * is another queue's, whose generation is not ours (random at create): fenced (E1) */
    if (!err)
        err = loghead_open(w->dir, false, 0, &w->head);
    if (err == -ENOENT && w->dirfd >= 0 && !create) /* the creator holds the lock */
        err = remake_head(w);
    if (err) {
        if (w->dirfd >= 0)
            io_close(w->dirfd);
        free(w);
        return err;
    }
    pthread_mutex_init(&w->lock, NULL);
    *out = w;
    return 0;
}

void wal_close(struct wal *w)
{
    if (!w)
        return;
    atomic_store_explicit(&w->pend_next_ns, 0, memory_order_relaxed); /* a last try */
    close_pending(w);
    for (struct walmap *m = w->all, *next; m; m = next) {
        next = m->next;
        io_munmap(m->base, w->file_size);
        free(m->grace);
        free(m);
    }
    for (struct walmap *m = w->retired, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    loghead_close(&w->head);
    io_close(w->dirfd);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

struct part {
    const void *p;
    uint32_t len;
};

static inline __attribute__((always_inline)) void
write_record(struct walmap *m, uint64_t off, unsigned type, uint64_t id, uint32_t attempt,
             const struct part *parts, int nparts, uint32_t len)
{
    struct wal_rec *r = (struct wal_rec *)(m->base + WAL_HEADER_SIZE + off);
    r->magic = WAL_REC_MAGIC;
    r->type = (uint16_t)type;
    r->attempt = (uint16_t)(attempt > 0xffff ? 0xffff : attempt);
    r->len = len;
    r->epoch = m->epoch;
    r->id = id;
    if (type == WAL_PAD)
        nparts = 0;
    char *dst = (char *)(r + 1);
    for (int i = 0; i < nparts - 1; dst += parts[i].len, i++)
        if (parts[i].len)
            memcpy(dst, parts[i].p, parts[i].len);
    /* wal_rec_crc(r, r + 1), inline: one pass over header bytes 8..32 and the payload after
     * them (a PAD record's header only), the last part copied into place in the same pass */
    size_t done = (size_t)(dst - ((char *)r + 8));
    uint32_t crc = nparts ? crc32c_copy_after((char *)r + 8, done, parts[nparts - 1].p,
                                              parts[nparts - 1].len)
                          : crc32c_24((char *)r + 8);
    /* L1 (release): the record is complete before its crc makes it valid; pairs with a live
     * reader's acquire load of the crc (replay), and is what a crash leaves torn if cut */
    atomic_store_explicit((_Atomic uint32_t *)&r->crc, crc, memory_order_release);
}

/* A PUBLISH record with no due time, expiry, groups or headers (the publish fast path):
 * write_record() with the prefix stored directly (no memcpy calls) and the payload copied in
 * the crc's pass. */
static inline __attribute__((always_inline)) void
write_publish(struct walmap *m, uint64_t off, uint64_t id, unsigned flags, uint64_t unix_ms,
              const void *key, uint16_t klen, const void *data, uint32_t len)
{
    struct wal_rec *r = (struct wal_rec *)(m->base + WAL_HEADER_SIZE + off);
    r->magic = WAL_REC_MAGIC;
    r->type = WAL_PUBLISH;
    r->attempt = (uint16_t)flags;
    r->len = WAL_PUBLISH_PREFIX + klen + len;
    r->epoch = m->epoch;
    r->id = id;
    char *p = (char *)(r + 1);
    memcpy(p, &unix_ms, 8);
    memcpy(p + 8, &klen, 2);
    if (klen)
        memcpy(p + WAL_PUBLISH_PREFIX, key, klen);
    uint32_t crc = crc32c_copy_after((char *)r + 8, WAL_REC_HEADER - 8 + WAL_PUBLISH_PREFIX + klen,
                                     data, len);
    /* L1 (release), as write_record() */
    atomic_store_explicit((_Atomic uint32_t *)&r->crc, crc, memory_order_release);
}

/* Remember [off, off + len) of file seq, a reservation of ours that could not be written, to
 * close it with a PAD record later (close_pending). A range too short for a record header is
 * below the readers' hole threshold; one beyond the list's room stays a hole. */
static void add_pending(struct wal *w, uint64_t seq, uint64_t off, uint64_t len)
{
    if (len < WAL_REC_HEADER)
        return;
    pthread_mutex_lock(&w->lock);
    int n = atomic_load_explicit(&w->npend, memory_order_relaxed);
    if (n < WAL_PENDING) {
        w->pend[n].seq = seq;
        w->pend[n].off = off;
        w->pend[n].len = len;
        /* relaxed: a hint for the fast path; the list itself is read under lock */
        atomic_store_explicit(&w->npend, n + 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&w->lock);
}

/* Close the remembered reservations whose files can be mapped now with PAD records. */
static void close_pending(struct wal *w)
{
    if (atomic_load_explicit(&w->npend, memory_order_relaxed) == 0)
        return;
    /* relaxed: a rate limit (one try per 100 ms), ordered against nothing */
    uint64_t now = now_ns(), next = atomic_load_explicit(&w->pend_next_ns, memory_order_relaxed);
    if (now < next || !atomic_compare_exchange_strong_explicit(&w->pend_next_ns, &next,
                                                               now + 100000000u,
                                                               memory_order_relaxed,
                                                               memory_order_relaxed))
        return;
    for (int i = 0;; i++) {
        pthread_mutex_lock(&w->lock);
        int n = atomic_load_explicit(&w->npend, memory_order_relaxed);
        if (i >= n) {
            pthread_mutex_unlock(&w->lock);
            return;
        }
        uint64_t seq = w->pend[i].seq, off = w->pend[i].off, len = w->pend[i].len;
        pthread_mutex_unlock(&w->lock);
        struct walmap *m;
        int err = get_map(w, seq, &m);
        if (err == 0) {
            write_record(m, off, WAL_PAD, 0, 0, NULL, 0, (uint32_t)(len - WAL_REC_HEADER));
            put_map(m);
        }
        if (err == 0 || err == -ESTALE || err == -EBADMSG || err == -EIDRM) {
            /* padded, or its file was deleted (or is not one of ours): done with it */
            pthread_mutex_lock(&w->lock);
            n = atomic_load_explicit(&w->npend, memory_order_relaxed);
            for (int j = 0; j < n; j++) {
                if (w->pend[j].seq == seq && w->pend[j].off == off) {
                    w->pend[j] = w->pend[n - 1];
                    atomic_store_explicit(&w->npend, n - 1, memory_order_relaxed);
                    i--;
                    break;
                }
            }
            pthread_mutex_unlock(&w->lock);
        }
    }
}

/* The part of a crossing reservation that fell into the next file: a PAD record, so readers
 * see no hole there (a spill too short for a record header is below their hole threshold). */
static void pad_spill(struct wal *w, uint64_t seq, uint64_t spill)
{
    struct walmap *m;
    if (spill < WAL_REC_HEADER)
        return;
    int err = get_map(w, seq, &m);
    if (err) {
        if (err != -ESTALE)
            add_pending(w, seq, 0, spill);
        return;
    }
    write_record(m, 0, WAL_PAD, 0, 0, NULL, 0, (uint32_t)(spill - WAL_REC_HEADER));
    put_map(m);
}

/* Our log directory (the one wal_open() opened) was removed, or its path names another one. */
static bool dir_gone(const struct wal *w)
{
    struct stat ours, now;
    if (io_fstat(w->dirfd, &ours) != 0)
        return false; /* cannot tell: not taken as deleted */
    return ours.st_nlink == 0 || io_fstatat(AT_FDCWD, w->dir, &now, 0) != 0 ||
           now.st_ino != ours.st_ino || now.st_dev != ours.st_dev;
}

/*
 * Our log directory is gone. shmq_unlink() removes the segment's name before the directory, so
 * a segment name that is gone too means the queue was deleted (the log went with it, and the
 * publish is as good as one made just before the delete); a name still there means the log was
 * lost under a live queue: an error, never a success nothing recorded.
 */
static bool queue_deleted(const struct wal *w)
{
    char shm[SHMQ_NAME_MAX + 16];
    const char *name = strrchr(w->dir, '/'); /* the directory is LOGDIR/NAME */
    if (!name || segment_shm_name(name + 1, shm, sizeof(shm)) != 0)
        return false;
    int fd = io_shm_open(shm, O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0)
        io_close(fd);
    return fd == -ENOENT;
}

/*
 * Reserve size bytes of log within one file (one FAA on wal_pos, taken again past a file's
 * end): 0 with *m in hand (get_map: inside our section until put_map) and the record(s) to be written at *off of file *seq; 1 when the queue
 * was deleted (shmq_unlink: its log went with it, nothing to write, the append counts as done);
 * or an error (-EIDRM: fenced; the log's errors, the range then remembered to be padded).
 * Inlined into each caller (with append_done()): the publish fast path (bench/instr-guard).
 */
static inline __attribute__((always_inline)) int reserve(struct wal *w, uint64_t size,
                                                         struct walmap **mp, uint64_t *offp,
                                                         uint64_t *seqp)
{
    for (int tries = 0; tries < 64; tries++) {
        if (!gen_live(w)) /* E1: the log moved to a newer generation: append nothing */
            return fenced(w) ? -EIDRM : 1;
        /* relaxed: a reservation orders nothing; L1 publishes the record */
        uint64_t pos = atomic_fetch_add_explicit(&w->seg->hdr->wal_pos, size, memory_order_relaxed);
        uint64_t off, seq = divisor_div(&w->per_file, pos, &off);
        struct walmap *m;
        int err = seq > WAL_SEQ_MAX ? -EBADMSG : get_map(w, seq, &m); /* a garbage wal_pos? */
        if (err == -ESTALE)
            continue; /* a reservation in a file already retired: take another */
        if (err == -EIDRM)
            return fenced(w) ? -EIDRM : 1; /* fenced (a newer generation): not a log failure */
        if (err == -ENOENT && dir_gone(w) && queue_deleted(w))
            return 1; /* the queue was deleted (shmq_unlink): its log with it; else the
                       * log directory is lost: an error like any other (below) */
        /* acquire: pairs with the release in wal_maintain. The file was there to be made but
         * is gone: retention deleted it under a writer stopped since its reservation (take
         * another, as -ESTALE), or a newer generation removed it (fenced). Never an error that
         * an ack would answer with 0 and no record. */
        if (err == -ENOENT &&
            seq < atomic_load_explicit(&w->seg->hdr->wal_oldest_seq, memory_order_acquire))
            continue;
        if (err == -ENOENT && !gen_live(w))
            return -EIDRM;
        if (err) {
            /* the reservation stays unwritten: close it with PAD once its file can be mapped
             * (close_pending), and say that the log is failing */
            if (err != -EBADMSG) {
                uint64_t in_file = off + size > w->usable ? w->usable - off : size;
                add_pending(w, seq, off, in_file);
                if (in_file < size)
                    add_pending(w, seq + 1, 0, size - in_file);
            }
            log_failed(w, err);
            return err;
        }
        if (off + size > w->usable) { /* would cross the file's end: pad both parts, again */
            if (w->usable - off >= WAL_REC_HEADER)
                write_record(m, off, WAL_PAD, 0, 0, NULL, 0,
                             (uint32_t)(w->usable - off - WAL_REC_HEADER));
            put_map(m);
            pad_spill(w, seq + 1, off + size - w->usable);
            continue;
        }
        *mp = m;
        *offp = off;
        *seqp = seq;
        return 0;
    }
    log_failed(w, -EIO);
    return -EIO;
}

/* After the records of a reservation of file seq were written and its map put: the health
 * bookkeeping, then E2. 0, or fenced(w). */
static inline __attribute__((always_inline)) int append_done(struct wal *w, uint64_t seq,
                                                             uint32_t *seq_out)
{
    /* relaxed loads of words nobody writes while the log is healthy: two loads and two
     * branches on the fast path, the calls only after a failure */
    if (atomic_load_explicit(&w->seg->hdr->wal_health, memory_order_relaxed) & WAL_HEALTH_ERRNO)
        log_ok(w);
    if (atomic_load_explicit(&w->npend, memory_order_relaxed))
        close_pending(w);
    if (seq_out)
        *seq_out = (uint32_t)seq;
    /* E2: the records' stores, then a seq_cst fence, then the generation: pairs with E3
     * (recover.c). Seeing ours here proves the records precede E3, so recovery reads them. */
    atomic_thread_fence(memory_order_seq_cst);
    return gen_live(w) ? 0 : fenced(w);
}

/* Inlined into each caller: each passes a fixed list of parts, whose copies the compiler then
 * unrolls and inlines (left to itself it made one shared copy once there were three callers:
 * +80 instructions per logged publish, bench/instr-guard). */
static inline __attribute__((always_inline)) int append_parts(struct wal *w, unsigned type,
                                                              uint64_t id, uint32_t attempt,
                                                              const struct part *parts, int nparts,
                                                              uint32_t *seq_out)
{
    uint64_t len64 = 0;
    for (int i = 0; i < nparts; i++)
        len64 += parts[i].len;
    if (len64 > UINT32_MAX)
        return -EMSGSIZE;
    uint32_t len = (uint32_t)len64;
    uint64_t size = wal_rec_size(len);
    if (size > w->usable)
        return -EMSGSIZE;
    struct walmap *m;
    uint64_t off, seq;
    int err = reserve(w, size, &m, &off, &seq);
    if (err)
        return err > 0 ? 0 : err;
    CRASH_POINT(append_after_reserve);
    write_record(m, off, type, id, attempt, parts, nparts, len);
    put_map(m);
    return append_done(w, seq, seq_out);
}

int wal_append(struct wal *w, unsigned type, uint64_t id, uint32_t attempt,
               const void *payload, uint32_t len, uint32_t *seq)
{
    if (!len)
        return wal_append_bare(w, type, id, attempt, seq);
    struct part one = {payload, len};
    return append_parts(w, type, id, attempt, &one, 1, seq);
}

int wal_append_bare(struct wal *w, unsigned type, uint64_t id, uint32_t attempt, uint32_t *seq)
{
    return append_parts(w, type, id, attempt, NULL, 0, seq); /* the constants inlined */
}

static uint64_t unix_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* exact: replay by time orders by it */
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A PUBLISH record with no due time, expiry, groups or headers: in line in both entries below,
 * so that the publish fast path (wal_append_publish) makes one call, not two. */
static inline __attribute__((always_inline)) int
append_publish(struct wal *w, uint64_t id, unsigned flags, uint64_t unix_ms, const void *key,
               uint32_t key_len, const void *data, uint32_t len, uint32_t *seq)
{
    if (key_len > WAL_KEY_MAX)
        return -EINVAL;
    uint64_t plen = (uint64_t)WAL_PUBLISH_PREFIX + key_len + len;
    uint64_t size = wal_rec_size((uint32_t)plen);
    if (plen > UINT32_MAX || size > w->usable)
        return -EMSGSIZE;
    if (!unix_ms)
        unix_ms = unix_ms_now();
    struct walmap *m;
    uint64_t off, fseq;
    int err = reserve(w, size, &m, &off, &fseq);
    if (err)
        return err > 0 ? 0 : err;
    CRASH_POINT(append_after_reserve);
    write_publish(m, off, id, flags & ~WAL_PUB_DUE, unix_ms, key, (uint16_t)key_len, data, len);
    put_map(m);
    return append_done(w, fseq, seq);
}

int wal_append_publish(struct wal *w, uint64_t id, unsigned flags, const void *key,
                       uint32_t key_len, const void *data, uint32_t len, uint32_t *seq)
{
    return append_publish(w, id, flags, 0, key, key_len, data, len, seq);
}

int wal_append_publish_at(struct wal *w, uint64_t id, unsigned flags, uint64_t unix_ms,
                          const void *key, uint32_t key_len, const void *data, uint32_t len,
                          uint32_t *seq)
{
    return append_publish(w, id, flags, unix_ms, key, key_len, data, len, seq);
}

/* Its own parts rather than an optional one in wal_append_publish_at(): there the compiler
 * inlines the copies of a fixed list, the publish fast path (bench/instr-guard). */
int wal_append_publish_due(struct wal *w, uint64_t id, uint64_t due_unix_ms, const void *data,
                           uint32_t len, uint32_t *seq)
{
    uint64_t unix_ms = unix_ms_now();
    uint16_t klen = 0; /* a delayed publish has no key */
    struct part parts[4] = {
        {&unix_ms, 8}, {&due_unix_ms, WAL_PUBLISH_DUE_LEN}, {&klen, 2}, {data, len}};
    return append_parts(w, WAL_PUBLISH, id, WAL_PUB_DUE, parts, 4, seq);
}

int wal_append_publish_timed(struct wal *w, uint64_t id, unsigned flags, const struct wal_times *t,
                             const void *key, uint32_t key_len, const void *hdrs,
                             uint32_t hdrs_len, const void *data, uint32_t len, uint32_t *seq)
{
    uint64_t unix_ms = t->unix_ms ? t->unix_ms : unix_ms_now();
    uint16_t klen = (uint16_t)key_len;
    if (key_len > WAL_KEY_MAX)
        return -EINVAL;
    struct part parts[9] = {{&unix_ms, 8}};
    int n = 1;
    flags &= ~(WAL_PUB_DUE | WAL_PUB_EXPIRE | WAL_PUB_HDRS | WAL_PUB_GROUPS);
    if (t->due_unix_ms) {
        parts[n++] = (struct part){&t->due_unix_ms, WAL_PUBLISH_DUE_LEN};
        flags |= WAL_PUB_DUE;
    }
    if (t->expire_unix_ms) {
        parts[n++] = (struct part){&t->expire_unix_ms, WAL_PUBLISH_EXPIRE_LEN};
        flags |= WAL_PUB_EXPIRE;
    }
    if (t->groups > 1) { /* 0 or 1: group 0 alone, the records of a one-group queue */
        parts[n++] = (struct part){&t->groups, WAL_PUBLISH_GROUPS_LEN};
        flags |= WAL_PUB_GROUPS;
    }
    parts[n++] = (struct part){&klen, 2};
    if (hdrs_len) {
        parts[n++] = (struct part){&hdrs_len, WAL_PUBLISH_HDRS_LEN};
        flags |= WAL_PUB_HDRS;
    }
    parts[n++] = (struct part){key, key_len};
    parts[n++] = (struct part){hdrs, hdrs_len};
    parts[n++] = (struct part){data, len};
    return append_parts(w, WAL_PUBLISH, id, flags, parts, n, seq);
}

static uint64_t item_size(const struct wal_item *it)
{
    return wal_rec_size(it->type == WAL_PUBLISH ? WAL_PUBLISH_PREFIX + it->len +
                                                      (it->expire_unix_ms ? WAL_PUBLISH_EXPIRE_LEN : 0) +
                                                      (it->groups > 1 ? WAL_PUBLISH_GROUPS_LEN : 0)
                                                : 0);
}

/*
 * A run of records in one reservation: the records lie back to back, each complete with its
 * own header and crc (L1), as if each had been appended alone at that place; E1 before and E2
 * after the run. A writer killed inside the run leaves the records before it valid and the rest
 * of the range zero: a hole, which readers skip as they skip a single writer's (walscan.c).
 */
int wal_append_batch(struct wal *w, uint64_t unix_ms, const struct wal_item *items, size_t n,
                     size_t *written, uint32_t *seq_out)
{
    *written = 0;
    if (n == 0)
        return 0;
    uint64_t size = item_size(&items[0]), limit = w->usable / 4;
    size_t k = 1;
    for (; k < n && size + item_size(&items[k]) <= limit; k++)
        size += item_size(&items[k]);
    if (size > w->usable)
        return -EMSGSIZE;
    if (!unix_ms)
        unix_ms = unix_ms_now();
    struct walmap *m;
    uint64_t off, seq;
    int err = reserve(w, size, &m, &off, &seq);
    if (err) {
        if (err > 0)
            *written = k; /* the queue was deleted: as good as written (append_parts) */
        return err > 0 ? 0 : err;
    }
    uint16_t klen = 0; /* batch records have no key */
    for (size_t i = 0; i < k; i++) {
        const struct wal_item *it = &items[i];
        if (it->type == WAL_PUBLISH && it->groups > 1) { /* a queue with groups: any times */
            struct part parts[5] = {{&unix_ms, 8}};
            int np = 1;
            if (it->expire_unix_ms)
                parts[np++] = (struct part){&it->expire_unix_ms, WAL_PUBLISH_EXPIRE_LEN};
            parts[np++] = (struct part){&it->groups, WAL_PUBLISH_GROUPS_LEN};
            parts[np++] = (struct part){&klen, 2};
            parts[np++] = (struct part){it->data, it->len};
            uint32_t plen = WAL_PUBLISH_PREFIX + it->len + WAL_PUBLISH_GROUPS_LEN +
                            (it->expire_unix_ms ? WAL_PUBLISH_EXPIRE_LEN : 0);
            write_record(m, off, WAL_PUBLISH, it->id,
                         WAL_PUB_GROUPS | (it->expire_unix_ms ? WAL_PUB_EXPIRE : 0), parts, np,
                         plen);
        } else if (it->type == WAL_PUBLISH && it->expire_unix_ms) {
            struct part parts[4] = {
                {&unix_ms, 8}, {&it->expire_unix_ms, 8}, {&klen, 2}, {it->data, it->len}};
            write_record(m, off, WAL_PUBLISH, it->id, WAL_PUB_EXPIRE, parts, 4,
                         WAL_PUBLISH_PREFIX + WAL_PUBLISH_EXPIRE_LEN + it->len);
        } else if (it->type == WAL_PUBLISH) {
            struct part parts[3] = {{&unix_ms, 8}, {&klen, 2}, {it->data, it->len}};
            write_record(m, off, WAL_PUBLISH, it->id, 0, parts, 3, WAL_PUBLISH_PREFIX + it->len);
        } else {
            write_record(m, off, it->type, it->id, 0, NULL, 0, 0);
        }
        off += item_size(it);
        if (i == 0)
            CRASH_POINT(wal_batch_after_first);
    }
    put_map(m);
    *written = k;
    return append_done(w, seq, seq_out);
}

int wal_parse_publish(const struct wal_rec *r, const void *payload, struct wal_publish *out)
{
    const char *p = payload;
    uint32_t due = r->attempt & WAL_PUB_DUE ? WAL_PUBLISH_DUE_LEN : 0;
    uint32_t exp = r->attempt & WAL_PUB_EXPIRE ? WAL_PUBLISH_EXPIRE_LEN : 0;
    uint32_t klen_at = 8 + due + exp + (r->attempt & WAL_PUB_GROUPS ? WAL_PUBLISH_GROUPS_LEN : 0);
    uint32_t prefix = klen_at + 2 + (r->attempt & WAL_PUB_HDRS ? WAL_PUBLISH_HDRS_LEN : 0);
    uint16_t klen;
    uint32_t hlen = 0;
    if (r->type != WAL_PUBLISH || r->len < prefix)
        return -EBADMSG;
    memcpy(&out->unix_ms, p, 8);
    out->due_unix_ms = 0;
    out->expire_unix_ms = 0;
    if (r->attempt & WAL_PUB_DUE)
        memcpy(&out->due_unix_ms, p + 8, WAL_PUBLISH_DUE_LEN);
    if (r->attempt & WAL_PUB_EXPIRE)
        memcpy(&out->expire_unix_ms, p + 8 + due, WAL_PUBLISH_EXPIRE_LEN);
    out->groups = 1;
    if (r->attempt & WAL_PUB_GROUPS)
        memcpy(&out->groups, p + 8 + due + exp, WAL_PUBLISH_GROUPS_LEN);
    memcpy(&klen, p + klen_at, 2);
    if (r->attempt & WAL_PUB_HDRS)
        memcpy(&hlen, p + klen_at + 2, WAL_PUBLISH_HDRS_LEN);
    if (klen > WAL_KEY_MAX || klen > r->len - prefix || hlen > r->len - prefix - klen)
        return -EBADMSG;
    out->key = p + prefix;
    out->key_len = klen;
    out->hdrs = p + prefix + klen;
    out->hdrs_len = hlen;
    out->data = p + prefix + klen + hlen;
    out->len = r->len - prefix - klen - hlen;
    return 0;
}

/* wal_sync_low: (version << 34) | low file; low SYNC_LOW_NONE: nothing asked (docs/DESIGN.md,
 * "Group commit survives a stopped or dead leader", GC1-GC4). */
#define SYNC_LOW_BITS 34
#define SYNC_LOW_NONE ((1ull << SYNC_LOW_BITS) - 1)

static uint64_t sync_low_next(uint64_t word, uint64_t low)
{
    return ((word >> SYNC_LOW_BITS) + 1) << SYNC_LOW_BITS | low; /* version + 1, wraps */
}

/* GC1: lower the low to seq, bumping the version even when it does not move (a leader's clear
 * CASes from an exact value: it must fail after any lowering since its read). */
static void sync_lower(_Atomic uint64_t *word, uint64_t seq)
{
    uint64_t cur = atomic_load(word);
    for (;;) {
        uint64_t low = cur & SYNC_LOW_NONE;
        /* seq_cst: before the ticket's fetch_add, so a leader that reads the ticket sees this */
        if (atomic_compare_exchange_weak(word, &cur, sync_low_next(cur, seq < low ? seq : low)))
            return;
    }
}

/*
 * The flush lock, wal_sync_flusher (docs/DESIGN.md, "One flush at a time" and "A stopped or dead
 * flusher is taken over", GC5-GC8): holder half (bits 0-31) the tid of the thread inside a
 * round's fdatasync calls, with FLUSH_RETURNED once its last fdatasync returned and its failure,
 * if any, is recorded; straggler half (bits 32-63) a holder taken over while stopped without
 * FLUSH_RETURNED: it may yet enter, or have just left, an fdatasync outside the lock.
 */
#define FLUSH_RETURNED (1u << 31) /* tids are below 2^22 (pid_max) */

static uint32_t straggler_of(uint64_t word)
{
    return (uint32_t)(word >> 32);
}

static bool tid_stopped(uint32_t tid)
{
    char st = proc_run_state((int)tid); /* /proc/TID/stat: that thread's own state */
    return st == 'T' || st == 't';
}

/* GC7: every record below the log position now may have been covered by an fdatasync whose
 * outcome is unknown; a waiter whose record may lie below it gets -EIO (the log is not failed). */
static void mark_unknown(struct seg_header *h)
{
    /* seq_cst: read after the holder was seen stopped or dead (its fdatasync returned, or never
     * will); a record reserved after this read was written after that fdatasync */
    uint64_t pos = atomic_load(&h->wal_pos);
    uint64_t old = atomic_load(&h->wal_sync_unknown);
    /* seq_cst: before the takeover's CAS (GC5) or the round's GC4, whose release carries it */
    while (old < pos && !atomic_compare_exchange_weak(&h->wal_sync_unknown, &old, pos)) {
    }
}

/* CAS the holder half from `from` to `to`, keeping the straggler half. False when the holder is
 * not `from` (we were taken over). *seen: the word replaced, or the one that did not match. */
static bool flush_hold(struct seg_header *h, uint32_t from, uint32_t to, uint64_t *seen)
{
    uint64_t cur = atomic_load(&h->wal_sync_flusher);
    bool ok = false;
    /* seq_cst (acq_rel at least): orders our failure bit (set before) against the next holder,
     * and a takeover's GC7 mark against us */
    while ((uint32_t)cur == from &&
           !(ok = atomic_compare_exchange_weak(&h->wal_sync_flusher, &cur,
                                               (cur & ~(uint64_t)UINT32_MAX) | to))) {
    }
    *seen = cur;
    return ok;
}

/* A straggler that is gone, or that recorded its late fdatasync, leaves the straggler half. */
static void straggler_clear(struct seg_header *h, uint32_t tid)
{
    uint64_t cur = atomic_load(&h->wal_sync_flusher);
    /* seq_cst: after the straggler's failure bit (it clears itself after setting it) */
    while (straggler_of(cur) == tid &&
           !atomic_compare_exchange_weak(&h->wal_sync_flusher, &cur, (uint32_t)cur)) {
    }
}

/*
 * GC5: take the flush lock before our first fdatasync. A holder running or in D state (a slow
 * disk) is waited for. One that is dead or stopped is taken over (GC7): with FLUSH_RETURNED its
 * outcome is recorded and nothing is to be done; without it, its fdatasync may have consumed a
 * writeback error that ours, through a descriptor opened later, would never be told, so every
 * record below the log position now is marked unknown; a stopped one becomes the straggler
 * (it may not even have entered its fdatasync yet: GC8). A second straggler while one lives is
 * not taken: we wait. Returns with the lock held.
 */
static void flush_lock(struct wal *w, uint32_t me)
{
    struct seg_header *h = w->seg->hdr;
    uint64_t word = atomic_load(&h->wal_sync_flusher);
    for (;;) {
        uint32_t holder = (uint32_t)word & ~FLUSH_RETURNED, s = straggler_of(word);
        uint64_t take = (uint64_t)s << 32 | me;
        bool ok = false;
        if (!holder) {
            /* seq_cst: pairs with GC6's unlock, so the last holder's failure bit is seen */
            if (atomic_compare_exchange_strong(&h->wal_sync_flusher, &word, take))
                return;
            continue;
        }
        if (s && pid_gone((int)s)) { /* GC8: a dead straggler's last fdatasync is unknown */
            mark_unknown(h);
            straggler_clear(h, s);
            word = atomic_load(&h->wal_sync_flusher);
            continue;
        }
        bool gone = pid_gone((int)holder);
        if (gone || tid_stopped(holder)) {
            if ((uint32_t)word & FLUSH_RETURNED) {
                ok = true;
            } else if (gone || !s) {
                mark_unknown(h); /* GC7 */
                if (!gone)
                    take = (uint64_t)holder << 32 | me; /* GC8: it becomes the straggler */
                ok = true;
            }
        }
        /* seq_cst: after GC7's mark; from exactly the word judged (a holder continued since
         * has changed it: the CAS fails and we judge again) */
        if (ok && atomic_compare_exchange_strong(&h->wal_sync_flusher, &word, take))
            return;
        if (!ok) {
            struct timespec ts = {0, 2000000}; /* bounded: judge the holder again */
            NOCANCEL(nanosleep(&ts, NULL));
            word = atomic_load(&h->wal_sync_flusher);
        }
    }
}

/* After each of our fdatasync calls, its failure already set: say it returned (FLUSH_RETURNED).
 * False when we were taken over meanwhile (stopped): our failure is recorded, the round is
 * abandoned to the leader that took over, and we leave the straggler half (GC8). */
static bool flush_returned(struct seg_header *h, uint32_t me)
{
    uint64_t seen;
    if (flush_hold(h, me, me | FLUSH_RETURNED, &seen))
        return true;
    straggler_clear(h, me);
    return false;
}

/* GC6: give the flush lock back, after every failure of our round is recorded. False when we
 * were taken over (stopped after our last FLUSH_RETURNED). While a straggler is in the word,
 * its late fdatasync may have consumed an error our flush needed: our round's outcome is
 * unknown (GC8), and a dead straggler is cleared. */
static bool flush_unlock(struct seg_header *h, uint32_t me)
{
    uint64_t seen;
    if (!flush_hold(h, me | FLUSH_RETURNED, 0, &seen))
        return false;
    uint32_t s = straggler_of(seen);
    if (s) {
        mark_unknown(h);
        if (pid_gone((int)s))
            straggler_clear(h, s);
    }
    return true;
}

/*
 * As leader: flush files [low, current], clear the low only once that succeeded, and publish
 * the tickets covered (GC2-GC4). The fdatasync calls run under the flush lock (GC5/GC6): a
 * failed one sets the sticky WAL_HEALTH_FLUSH_FAILED before the lock is given back and before
 * the tickets are published, so every waiter they cover, and every later round's, sees it
 * (docs/DESIGN.md, "One flush at a time"). A file that cannot be mapped (a limit of this
 * process, finding F8) is no failed flush: nothing is cleared, set or published, and its error
 * is returned (the next leader tries again).
 */
_Static_assert(offsetof(struct seg_header, wal_sync_flusher) == 728 &&
                   offsetof(struct seg_header, wal_sync_unknown) == 736,
               "docs/FORMAT.md, 3.2");

static int lead_sync(struct wal *w, uint32_t me)
{
    struct seg_header *h = w->seg->hdr;
    uint64_t target = atomic_load(&h->wal_sync_req); /* GC2, seq_cst: after the tickets' GC1 */
    uint64_t w0 = atomic_load(&h->wal_sync_low);     /* GC2, seq_cst: read only, never taken */
    uint64_t cur = wal_seq_of(w, atomic_load(&h->wal_pos));
    uint64_t from = w0 & SYNC_LOW_NONE;
    if (from > cur)
        from = cur;
    /* files below this segment's first one are an older generation's: not ours to flush (a
     * writer maps only files of its own generation) */
    uint64_t first = w->seg->layout.wal_base_pos / w->usable;
    if (from < first)
        from = first;
    int failed = 0;
    bool locked = false;
    CRASH_POINT(sync_while_leading);
    for (uint64_t s = from; s <= cur && s <= WAL_SEQ_MAX; s++) {
        struct walmap *m;
        int err = get_map(w, s, &m);
        if (err == -ESTALE || err == -EIDRM)
            continue; /* deleted, or of a newer generation (the queue was rebuilt): not ours */
        if (err) {
            log_failed(w, err);
            if (locked)
                flush_unlock(h, me);
            return err; /* F8: the low stays in the word for the next leader */
        }
        uint64_t seen;
        if (!locked) {
            flush_lock(w, me); /* GC5 */
            locked = true;
        } else if (!flush_hold(h, me | FLUSH_RETURNED, me, &seen)) {
            put_map(m);
            return -EIO; /* taken over between two files: that leader covers our tickets */
        }
        err = io_datasync_map(m->base, w->file_size); /* the mapped file itself: no name */
        CRASH_POINT(sync_after_flush);
        atomic_fetch_add_explicit(&h->wal_flushes, 1, memory_order_relaxed);
        put_map(m);
        if (err) {
            failed = err;
            log_failed(w, err);
            /* seq_cst, before FLUSH_RETURNED, GC6 and the release of wal_sync_done below: every
             * waiter it covers, and every leader after us, sees it; also when we were taken
             * over (a real failure is recorded whoever holds the lock) */
            atomic_fetch_or(&h->wal_health, WAL_HEALTH_FLUSH_FAILED);
        }
        if (!flush_returned(h, me))
            return -EIO; /* taken over while stopped: no GC3/GC4 of ours */
    }
    if (locked && !flush_unlock(h, me)) /* GC6 */
        return -EIO;
    if (!failed) /* GC3, seq_cst: clear what was flushed; fails if anyone lowered since GC2 */
        atomic_compare_exchange_strong(&h->wal_sync_low, &w0, sync_low_next(w0, SYNC_LOW_NONE));
    /* GC4, release: the flush (and the failure bit) happen before a waiter sees its ticket
     * covered */
    uint64_t done = atomic_load(&h->wal_sync_done);
    while (done < target && !atomic_compare_exchange_weak(&h->wal_sync_done, &done, target)) {
    }
    return 0;
}

/* Lead once (from 0, or taking over from a dead or stalled thread), then give leadership back
 * and wake the waiters. The CAS back to 0 leaves a leader that took over from us in place. */
static int lead(struct wal *w, uint32_t me)
{
    struct seg_header *h = w->seg->hdr;
    uint64_t t0 = now_ns();
    int err = lead_sync(w, me);
    /* relaxed: this process's own estimate of a round's length (the stall rule) */
    atomic_store_explicit(&w->last_round_ns, now_ns() - t0, memory_order_relaxed);
    uint32_t mine = me;
    atomic_compare_exchange_strong(&h->wal_sync_leader, &mine, 0); /* GC4: only our own claim */
    atomic_fetch_add(&h->wal_sync_futex, 1);
    if (atomic_load(&h->wal_sync_waiters))
        futex_async((int32_t *)&h->wal_sync_futex, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
    return err;
}

static bool flush_failed(const struct seg_header *h)
{
    return atomic_load(&((struct seg_header *)h)->wal_health) & WAL_HEALTH_FLUSH_FAILED;
}

/* How long a live leader may show no progress before a waiter takes over: WAL_SYNC_STALL_MS, or
 * 4 times the last round this process led if that is longer (a slow disk is not a stall, F9). */
static uint64_t stall_ns(const struct wal *w)
{
    uint64_t min = (uint64_t)WAL_SYNC_STALL_MS * 1000000u;
    uint64_t round = 4 * atomic_load_explicit(&((struct wal *)w)->last_round_ns,
                                              memory_order_relaxed);
    return round > min ? round : min;
}

uint64_t wal_sync_from(const struct wal *w)
{
    /* relaxed: our own later reservation (fetch_add) reads this value or a later one */
    return atomic_load_explicit(&w->seg->hdr->wal_pos, memory_order_relaxed);
}

int wal_sync(struct wal *w, uint32_t seq, uint64_t from)
{
    struct seg_header *h = w->seg->hdr;
    if (flush_failed(h))
        return -EIO; /* sticky: what a failed flush left in the page cache may never reach disk */
    sync_lower(&h->wal_sync_low, seq); /* GC1 */
    uint64_t ticket = atomic_fetch_add(&h->wal_sync_req, 1) + 1; /* seq_cst: after GC1 */
    CRASH_POINT(sync_after_ticket);
    /* the leader is named by thread, not process: two threads of one process are two leaders */
    uint32_t me = (uint32_t)syscall(SYS_gettid);
    /* progress as this waiter saw it last: the leader word and the tickets done, and when */
    uint32_t seen_leader = 0;
    uint64_t seen_done = 0, seen_ns = 0;
    for (;;) {
        /* seq_cst (acquire at least): pairs with the leader's raise of wal_sync_done (GC4) */
        uint64_t done = atomic_load(&h->wal_sync_done);
        if (done >= ticket) /* GC7: read after that acquire, so a takeover's mark is seen */
            return flush_failed(h) || from < atomic_load(&h->wal_sync_unknown) ? -EIO : 0;
        uint32_t leader = 0;
        bool take = atomic_compare_exchange_strong(&h->wal_sync_leader, &leader, me);
        if (!take && pid_gone((int)leader)) /* dead (or a zombie): take over from exactly it */
            take = atomic_compare_exchange_strong(&h->wal_sync_leader, &leader, me);
        if (!take) {
            uint64_t now = now_ns();
            if (leader != seen_leader || done != seen_done || !seen_ns) {
                seen_leader = leader;
                seen_done = done;
                seen_ns = now;
            } else if (now - seen_ns > stall_ns(w)) {
                /* alive but no progress (stopped, descheduled): take over from exactly it */
                take = atomic_compare_exchange_strong(&h->wal_sync_leader, &leader, me);
            }
        }
        if (take) {
            seen_ns = 0;
            if (lead(w, me) && atomic_load(&h->wal_sync_done) < ticket)
                return -EIO; /* a file could not be mapped (F8), or our round taken over (GC7) */
            continue;
        }
        uint32_t seen = atomic_load(&h->wal_sync_futex);
        atomic_fetch_add(&h->wal_sync_waiters, 1);
        if (atomic_load(&h->wal_sync_done) < ticket && atomic_load(&h->wal_sync_leader) != 0) {
            struct timespec ts = {0, 2000000}; /* bounded: re-check the leader's progress */
            futex_async((int32_t *)&h->wal_sync_futex, FUTEX_WAIT, (int32_t)seen, &ts, NULL, 0);
        }
        atomic_fetch_sub(&h->wal_sync_waiters, 1);
    }
}

static int count_file(void *arg, int dirfd, const char *name)
{
    *(uint32_t *)arg += strncmp(name, "wal.", 4) == 0 && strlen(name) == 14;
    return 0;
}

uint32_t wal_count_files(struct wal *w)
{
    uint32_t n = 0;
    return io_dir_each_at(w->dirfd, ".", count_file, &n) == 0 ? n : 0;
}

/* The lowest wal.N in the directory that is >= *(uint64_t *)arg's floor (arg: {floor, min}). */
static int lowest_file(void *arg, int dirfd, const char *name)
{
    uint64_t *fm = arg;
    char *end;
    if (strncmp(name, "wal.", 4) != 0 || strlen(name) != 14)
        return 0;
    unsigned long long v = strtoull(name + 4, &end, 10);
    if (*end == 0 && v >= fm[0] && v < fm[1])
        fm[1] = v;
    return 0;
}

/* wal.N.tmp.PID.TID of a process that is gone: a make_file killed (or whose unlink of its
 * temporary name failed) before it cleaned up, a preallocated file nobody will ever link. */
static int remove_dead_tmp(void *arg, int dirfd, const char *name)
{
    const char *t = strstr(name, ".tmp.");
    if (strncmp(name, "wal.", 4) != 0 || !t)
        return 0;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    if (*end != '.' || pid <= 0 || pid > INT32_MAX || !pid_gone((int)pid))
        return 0;
    io_unlinkat(dirfd, name); /* dirfd: the walk's, of our directory */
    return 0;
}

/*
 * Prepare file seq ahead of the writers, if nobody made it yet: made complete, allocated and
 * (touch) pre-touched (make_file), and linked. Not mapped here: a writer maps it when it gets there.
 * False when it is not there and could not be made; that is no log failure (nothing counted):
 * the writer that needs it makes it itself, and gets the error of that try if it fails again.
 */
static bool prepare_file(struct wal *w, uint64_t seq, bool touch)
{
    char name[32];
    file_name(seq, name, sizeof(name));
    int err = seq > WAL_SEQ_MAX ? -EBADMSG : io_faccessat(w->dirfd, name, F_OK);
    if (err != -ENOENT)
        return err == 0;
    /* acquire: pairs with the release in wal_maintain (below retention: never made again); and
     * only in our generation, checked before each file (docs/DESIGN.md, "Log files prepared
     * ahead") */
    if (seq < atomic_load_explicit(&w->seg->hdr->wal_oldest_seq, memory_order_acquire) ||
        !gen_live(w))
        return false;
    return make_file(w, seq, touch) == 0;
}

/*
 * Prefault file seq's mapping for writing in this process, once, when this process writes the
 * log (file cur is in its cache): its appends there then take no page fault at all (the pages of
 * a prepared file are in the page cache already; what is left is this process's page table).
 * Best effort: a failure (an older kernel: -EINVAL) leaves the minor faults.
 */
static void populate_ahead(struct wal *w, uint64_t cur, uint64_t seq)
{
    /* relaxed: a hint (a struct is never freed before wal_close: its seq can be read) */
    struct walmap *m = atomic_load_explicit(&w->cache[cur % WAL_CACHE], memory_order_relaxed);
    if (!m || atomic_load_explicit(&m->seq, memory_order_relaxed) != cur || get_map(w, seq, &m))
        return;
    pthread_mutex_lock(&w->lock);
    bool todo = !m->populated;
    m->populated = true;
    pthread_mutex_unlock(&w->lock);
    if (todo)
        io_populate_write(m->base, w->file_size);
    put_map(m);
}

int wal_maintain(struct wal *w, uint64_t min_live_seq, uint64_t cur, bool light)
{
    struct seg_header *h = w->seg->hdr;
    if (!seq_believable(w, cur)) {
        log_failed(w, -EBADMSG);
        return -EBADMSG;
    }
    close_pending(w);
    /* the next file(s) before the writers need them: as many as the log ever moved between two
     * of this process's passes, plus one (a fast log fills several between two passes), at most
     * WAL_PREPARE_AHEAD; the first that cannot be made ends it */
    uint64_t moved = cur > w->prep_cur ? cur - w->prep_cur + 1 : 1;
    if (moved > w->prep_ahead)
        w->prep_ahead = moved < WAL_PREPARE_AHEAD ? moved : WAL_PREPARE_AHEAD;
    w->prep_cur = cur;
    for (uint64_t k = 1; k <= w->prep_ahead && prepare_file(w, cur + k, !light); k++)
        if (!light)
            populate_ahead(w, cur, cur + k);
    uint64_t limit = min_live_seq < cur ? min_live_seq : cur;
    uint64_t keep = settings_log_retention_bytes(&h->settings), pos = atomic_load(&h->wal_pos);
    if (keep) { /* retention: files holding the last `keep` bytes stay, for replay */
        uint64_t keep_from = pos > keep ? wal_seq_of(w, pos - keep) : 0;
        if (keep_from < limit)
            limit = keep_from;
    }
    uint64_t oldest = atomic_load(&h->wal_oldest_seq);
    int deleted = 0, lock = -1;
    if (limit > oldest + WAL_CACHE) {
        /* a long way to go (a garbage or very old wal_oldest_seq): start at the lowest file on
         * disk instead of unlinking every number on the way; below it nothing exists */
        uint64_t fm[2] = {oldest, limit};
        if (io_dir_each_at(w->dirfd, ".", lowest_file, fm) == 0 && fm[1] > oldest)
            /* release: as below: the files skipped do not exist, and are never made again */
            atomic_compare_exchange_strong_explicit(&h->wal_oldest_seq, &oldest, fm[1],
                                                    memory_order_release, memory_order_relaxed);
        oldest = atomic_load(&h->wal_oldest_seq);
    }
    if (oldest < limit) { /* the files going may hold the highest ids: say how far ids went */
        int err = wal_append(w, WAL_MARK, atomic_load(&h->next_id), 0, NULL, 0, NULL);
        if (err)
            return err;
        /* deletions only with the log in our generation, and no recovery reading it */
        lock = loghead_lock_at(w->dirfd, LOCK_SH | LOCK_NB, logdir_file_mode(w->seg->layout.mode));
        if (lock < 0)
            limit = oldest; /* a recovery is at work: skip deleting this pass */
        else if (!wal_gen_live(w)) {
            io_close(lock);
            return -EIDRM;
        }
    }
    while (oldest < limit) {
        /* release: a writer that sees the new bound never re-creates a deleted file */
        if (!atomic_compare_exchange_strong_explicit(&h->wal_oldest_seq, &oldest, oldest + 1,
                                                     memory_order_release, memory_order_relaxed))
            continue;
        char name[32];
        file_name(oldest, name, sizeof(name));
        int err = io_unlinkat(w->dirfd, name);
        if (err && err != -ENOENT) {
            /* F3: the file stays, so does the bound (it is still there; a writer that saw the
             * new bound made nothing): counted, and the next pass tries it again. relaxed: a
             * move back of our own CAS, ordered against nothing new */
            uint64_t next = oldest + 1;
            atomic_compare_exchange_strong_explicit(&h->wal_oldest_seq, &next, oldest,
                                                    memory_order_relaxed, memory_order_relaxed);
            log_failed(w, err);
            deleted = err;
            break;
        }
        deleted += err == 0;
        oldest++;
    }
    if (lock >= 0) {
        if (deleted > 0) /* files of makers killed (or whose unlink failed) before cleaning up */
            io_dir_each_at(w->dirfd, ".", remove_dead_tmp, NULL);
        io_close(lock);
    }
    pthread_mutex_lock(&w->lock);
    sweep_maps(w);
    pthread_mutex_unlock(&w->lock);
    return deleted;
}

struct remove {
    bool heads; /* this walk removes the head files (the last walk), else the others */
    int err;
};

static int remove_file(void *arg, int dirfd, const char *name)
{
    struct remove *r = arg;
    bool head = strncmp(name, "head", 4) == 0; /* head, and a head.tmp.PID left by a kill */
    if (head ? r->heads : strncmp(name, "wal.", 4) == 0 || strcmp(name, ".recover") == 0) {
        int err = io_unlinkat(dirfd, name); /* in the directory walked, whatever its path */
        if (err && err != -ENOENT && !r->err)
            r->err = err; /* F4: the first real failure is the answer, not rmdir's ENOTEMPTY */
    }
    return 0;
}

/* The head goes last, and only once every log file went: a head left (fenced by shmq_unlink)
 * keeps a recovery from rebuilding the deleted queue out of the files a failure left (F4). */
int wal_remove_dir(const char *dir)
{
    struct remove r = {false, 0};
    /* O_NOFOLLOW: a directory, never a link to one (logtomb.c sweeps names in a LOG_DIR
     * others may write to) */
    int fd = io_open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    int err = io_dir_each_at(fd, ".", remove_file, &r);
    if (!err && !r.err) {
        r.heads = true;
        err = io_dir_each_at(fd, ".", remove_file, &r);
    }
    io_close(fd);
    if (!err)
        err = r.err;
    if (!err)
        CRASH_POINT(remove_before_rmdir);
    return err ? err : io_rmdir(dir);
}
