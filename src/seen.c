/*
 * seen.c - the consumer-side dedup helper (include/shmq/seen.h): a bounded set of processed
 * keys in liburcu's lock-free hash table, optionally backed by an append-only file.
 *
 * The state: a cds_lfht of nodes (hash, len, key) and a ring of max_entries node pointers in
 * insertion order, with a 64-bit ticket counter. The table holds exactly the nodes the ring
 * holds, except for the adds in progress (inserted, not yet in the ring; or swapped out of the
 * ring, not yet deleted).
 *
 * Add (any thread): insert with cds_lfht_add_unique() (S1: its full barriers publish the
 * node's fields to lookups; pairs with S2); if a node of that key was there, free ours (never
 * published) and report "seen". Else take a ticket t (FAA, relaxed: it orders nothing) and swap
 * the node into ring[t % max] (S3, acq_rel: the node we get out was published by its own S3,
 * pairs with itself); the node swapped out is the oldest (under concurrency: one of the oldest),
 * owned by us alone now: cds_lfht_del() then call_rcu() frees it after a grace period, so
 * lookups that still hold it read valid memory. Each node enters the ring once and leaves it
 * once (an atomic exchange), so it is deleted and freed exactly once.
 *
 * Check (any thread): an RCU read-side lookup (S2: cds_lfht_lookup is an rcu_dereference).
 *
 * The file: appends are write() of one whole record with O_APPEND (one system call: records do
 * not interleave) under the shared side of a rwlock; compaction (more than 4 x max records)
 * takes it exclusively, writes the ring's nodes oldest first into PATH.tmp (under an RCU read
 * lock: a node swapped out concurrently is not freed under it), fdatasyncs, renames it over
 * PATH, fsyncs the directory and swaps the fd. A crash at any point leaves PATH either the old
 * file or the new one, plus at most a torn last record, which open skips.
 *
 * TSan does not see the synchronization inside liburcu (not instrumented): SEEN_TSAN_* mark the
 * edges S1/S2 and grace period -> free for it.
 */
#include "shmq/seen.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>

#include "abi.h"
#include "crc32c.h"
#include "io.h"
#include "nocancel.h"

#if defined(__SANITIZE_THREAD__)
#define SEEN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SEEN_TSAN 1
#endif
#endif
#ifdef SEEN_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define SEEN_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define SEEN_TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define SEEN_TSAN_ACQUIRE(p) ((void)(p))
#define SEEN_TSAN_RELEASE(p) ((void)(p))
#endif

#define FILE_MAGIC "SHMQSEEN"
#define FILE_VERSION 1u
#define FILE_HEADER 16u
#define REC_MAGIC 0x4e454553u /* "SEEN" */
#define REC_OVERHEAD 12u      /* magic, len, crc */
#define COMPACT_FACTOR 4u

struct seen_node {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    uint32_t len;
    unsigned char key[];
};

struct lookup_key {
    const void *p;
    uint32_t len;
};

struct shmq_seen {
    struct cds_lfht *ht;
    size_t max;
    uint64_t seed;
    _Atomic(struct seen_node *) *ring; /* max entries, by ticket % max */
    _Atomic uint64_t tickets;          /* adds that reached the ring */
    _Atomic uint64_t added, evicted;
    /* The file (path NULL: memory only; set at open, then read-only). fd is swapped by
     * compaction: read it under file_lock only. */
    int fd, lock_fd;
    _Atomic int sync_mode;
    char *path;
    pthread_rwlock_t file_lock; /* shared: append; exclusive: compact (swaps fd) */
    _Atomic uint64_t file_records;
    _Atomic int compacting;
    uint64_t loaded, bad_bytes, compactions;
};

/* The grace period -> free edge, for TSan only (see the top). */
static char tsan_grace;

/* ---- Thread registration with urcu-memb (lazy, undone at thread exit). ---- */

static pthread_key_t reg_key;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static _Thread_local int registered;

static void unregister_at_exit(void *arg)
{
    (void)arg;
    if (registered) {
        urcu_memb_unregister_thread();
        registered = 0;
    }
}

static void make_reg_key(void) { pthread_key_create(&reg_key, unregister_at_exit); }

static void ensure_registered(void)
{
    if (registered)
        return;
    pthread_once(&reg_once, make_reg_key);
    urcu_memb_register_thread();
    registered = 1;
    pthread_setspecific(reg_key, &registered); /* non-NULL: the destructor runs */
}

/* ---- Hashing and matching. ---- */

/* FNV-1a over the key from a per-table random seed, then murmur3's finalizer. */
static unsigned long key_hash(uint64_t seed, const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (unsigned long)h;
}

static int node_match(struct cds_lfht_node *n, const void *arg)
{
    const struct seen_node *sn = caa_container_of(n, struct seen_node, node);
    const struct lookup_key *k = arg;
    SEEN_TSAN_ACQUIRE(sn); /* S2 */
    return sn->len == k->len && memcmp(sn->key, k->p, k->len) == 0;
}

static void free_node_rcu(struct rcu_head *head)
{
    SEEN_TSAN_ACQUIRE(&tsan_grace); /* every reader's unlock before the grace period ended */
    free(caa_container_of(head, struct seen_node, rcu));
}

static void read_lock(void) { urcu_memb_read_lock(); }

static void read_unlock(void)
{
    SEEN_TSAN_RELEASE(&tsan_grace);
    urcu_memb_read_unlock();
}

static int check_key(const shmq_seen_t *s, const void *key, size_t len)
{
    if (!s || !key || len == 0)
        return -EINVAL;
    if (len > SHMQ_SEEN_KEY_MAX)
        return -EMSGSIZE;
    return 0;
}

/* ---- The file. ---- */

/* One record (magic, len, key, crc) into buf; its size. */
static size_t encode_record(unsigned char *buf, const void *key, uint32_t len)
{
    uint32_t magic = REC_MAGIC;
    memcpy(buf, &magic, 4);
    memcpy(buf + 4, &len, 4);
    memcpy(buf + 8, key, len);
    uint32_t crc = crc32c(0, buf, 8 + (size_t)len);
    memcpy(buf + 8 + len, &crc, 4);
    return REC_OVERHEAD + len;
}

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int err = io_fsync_dir(dirname(copy));
    free(copy);
    return err;
}

/* Rewrite the file with the nodes the ring holds, oldest first. Holds file_lock exclusively
 * (or is single-threaded at open). */
static int compact_locked(shmq_seen_t *s)
{
    size_t plen = strlen(s->path);
    char *tmp = malloc(plen + 5);
    unsigned char *buf = malloc(REC_OVERHEAD + SHMQ_SEEN_KEY_MAX);
    int err = 0, fd = -1;
    uint64_t records = 0;
    if (!tmp || !buf) {
        err = -ENOMEM;
        goto out;
    }
    memcpy(tmp, s->path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = fd;
        goto out;
    }
    unsigned char hdr[FILE_HEADER] = {0};
    uint32_t version = FILE_VERSION;
    memcpy(hdr, FILE_MAGIC, 8);
    memcpy(hdr + 8, &version, 4);
    err = io_write(fd, hdr, sizeof(hdr));
    /* Oldest first: tickets t-max .. t-1. A slot may be NULL (never filled) or refilled by a
     * concurrent add (this table's appends wait on file_lock; their keys are written again by
     * their own append after us: a duplicate record, harmless). */
    uint64_t t = atomic_load_explicit(&s->tickets, memory_order_relaxed);
    read_lock(); /* a node swapped out of the ring meanwhile is not freed under us */
    for (uint64_t i = t > s->max ? t - s->max : 0; !err && i < t; i++) {
        /* acquire: pairs with S3, the node's fields are visible */
        struct seen_node *n = atomic_load_explicit(&s->ring[i % s->max], memory_order_acquire);
        if (!n)
            continue;
        err = io_write(fd, buf, encode_record(buf, n->key, n->len));
        records++;
    }
    read_unlock();
    if (!err)
        err = io_fdatasync(fd);
    if (!err)
        err = io_rename(tmp, s->path);
    if (err) {
        io_unlink(tmp);
        goto out;
    }
    fsync_dir_of(s->path); /* best effort: the old file or the new one, both are right */
    if (s->fd >= 0)
        io_close(s->fd);
    s->fd = fd;
    fd = -1;
    atomic_store_explicit(&s->file_records, records, memory_order_relaxed);
    s->compactions++;
out:
    if (fd >= 0)
        io_close(fd);
    free(tmp);
    free(buf);
    return err;
}

static void maybe_compact(shmq_seen_t *s)
{
    if (atomic_load_explicit(&s->file_records, memory_order_relaxed) <= COMPACT_FACTOR * s->max)
        return;
    int zero = 0;
    if (!atomic_compare_exchange_strong(&s->compacting, &zero, 1))
        return; /* another thread does it */
    pthread_rwlock_wrlock(&s->file_lock);
    if (atomic_load_explicit(&s->file_records, memory_order_relaxed) > COMPACT_FACTOR * s->max)
        compact_locked(s); /* on failure the old file goes on growing: retried next add */
    pthread_rwlock_unlock(&s->file_lock);
    atomic_store(&s->compacting, 0);
}

static int append_record(shmq_seen_t *s, const void *key, uint32_t len)
{
    unsigned char buf[REC_OVERHEAD + SHMQ_SEEN_KEY_MAX];
    size_t n = encode_record(buf, key, len);
    pthread_rwlock_rdlock(&s->file_lock);
    int err = io_write(s->fd, buf, n);
    if (!err && atomic_load_explicit(&s->sync_mode, memory_order_relaxed) == SHMQ_SEEN_SYNC_DATA)
        err = io_fdatasync(s->fd);
    if (!err)
        atomic_fetch_add_explicit(&s->file_records, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&s->file_lock);
    if (!err)
        maybe_compact(s);
    return err;
}

/* ---- The table. ---- */

/* Insert key; 1 if it was there, 0 if added (and, when log, appended to the file). */
static int insert(shmq_seen_t *s, const void *key, uint32_t len, int log)
{
    struct seen_node *n = malloc(sizeof(*n) + len);
    if (!n)
        return -ENOMEM;
    cds_lfht_node_init(&n->node);
    n->len = len;
    memcpy(n->key, key, len);
    struct lookup_key k = {key, len};
    unsigned long hash = key_hash(s->seed, key, len);
    SEEN_TSAN_RELEASE(n); /* S1 */
    read_lock();
    struct cds_lfht_node *got = cds_lfht_add_unique(s->ht, hash, node_match, &k, &n->node);
    read_unlock();
    if (got != &n->node) {
        free(n); /* never published: no grace period needed */
        return 1;
    }
    /* relaxed: the ticket only picks a ring cell; S3 orders the node */
    uint64_t t = atomic_fetch_add_explicit(&s->tickets, 1, memory_order_relaxed);
    /* S3 (acq_rel): release publishes n to compaction's acquire load; acquire makes the old
     * node's fields (its own S3) visible to us */
    struct seen_node *old = atomic_exchange_explicit(&s->ring[t % s->max], n, memory_order_acq_rel);
    if (old) {
        read_lock();
        cds_lfht_del(s->ht, &old->node); /* ours alone: the exchange handed it to us */
        read_unlock();
        urcu_memb_call_rcu(&old->rcu, free_node_rcu);
        atomic_fetch_add_explicit(&s->evicted, 1, memory_order_relaxed);
    }
    if (!log)
        return 0;
    atomic_fetch_add_explicit(&s->added, 1, memory_order_relaxed);
    return s->path ? append_record(s, key, len) : 0; /* s->fd changes under file_lock */
}

/* Read the file back into the table; count the records and skipped bytes. -EBADMSG if it is
 * not a seen file. */
static int load_file(shmq_seen_t *s, int fd, int *dirty)
{
    struct stat st;
    int err = io_fstat(fd, &st);
    if (err)
        return err;
    if (!S_ISREG(st.st_mode))
        return -EBADMSG;
    if (st.st_size == 0) {
        *dirty = 1; /* new: write the header */
        return 0;
    }
    size_t size = (size_t)st.st_size;
    void *map;
    if ((err = io_mmap(fd, 0, size, PROT_READ, MAP_PRIVATE, &map)) != 0)
        return err;
    const unsigned char *p = map;
    uint32_t version;
    if (size < FILE_HEADER || memcmp(p, FILE_MAGIC, 8) != 0 ||
        (memcpy(&version, p + 8, 4), version != FILE_VERSION)) {
        io_munmap(map, size);
        return -EBADMSG;
    }
    size_t off = FILE_HEADER;
    while (off < size && !err) {
        uint32_t magic, len, crc;
        if (size - off >= REC_OVERHEAD) {
            memcpy(&magic, p + off, 4);
            memcpy(&len, p + off + 4, 4);
            if (magic == REC_MAGIC && len >= 1 && len <= SHMQ_SEEN_KEY_MAX &&
                len <= size - off - REC_OVERHEAD) {
                memcpy(&crc, p + off + 8 + len, 4);
                if (crc32c(0, p + off, 8 + (size_t)len) == crc) {
                    int rc = insert(s, p + off + 8, len, 0);
                    err = rc < 0 ? rc : 0;
                    s->loaded++;
                    off += REC_OVERHEAD + len;
                    continue;
                }
            }
        }
        s->bad_bytes++; /* resync: the next byte that starts a valid record */
        off++;
    }
    io_munmap(map, size);
    if (s->bad_bytes || s->loaded > COMPACT_FACTOR * s->max)
        *dirty = 1;
    atomic_store_explicit(&s->file_records, s->loaded, memory_order_relaxed);
    return err;
}

static int open_file(shmq_seen_t *s, const char *path)
{
    size_t plen = strlen(path);
    char *lockpath = malloc(plen + 6);
    s->path = strdup(path);
    if (!lockpath || !s->path) {
        free(lockpath);
        return -ENOMEM;
    }
    memcpy(lockpath, path, plen);
    memcpy(lockpath + plen, ".lock", 6);
    s->lock_fd = io_open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(lockpath);
    if (s->lock_fd < 0)
        return s->lock_fd;
    int err = io_flock(s->lock_fd, LOCK_EX | LOCK_NB);
    if (err)
        return err == -EWOULDBLOCK ? -EBUSY : err;
    int fd = io_open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return fd;
    int dirty = 0;
    if ((err = load_file(s, fd, &dirty)) != 0) {
        io_close(fd);
        return err;
    }
    s->fd = fd;
    /* A new file gets its header, a damaged or oversized one is rewritten clean. */
    return dirty ? compact_locked(s) : 0;
}

int shmq_seen_open(const char *path, size_t max_entries, shmq_seen_t **out)
{
    if (!out || max_entries < 1 || max_entries > SHMQ_SEEN_ENTRIES_MAX)
        return -EINVAL;
    *out = NULL;
    shmq_seen_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->max = max_entries;
    s->fd = -1;
    s->lock_fd = -1;
    s->ring = calloc(max_entries, sizeof(*s->ring));
    if (NOCANCEL(getrandom(&s->seed, sizeof(s->seed), GRND_NONBLOCK)) != sizeof(s->seed))
        s->seed = (uint64_t)(uintptr_t)s ^ (uint64_t)getpid() << 32;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* compaction must not starve behind a steady stream of appends */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->file_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    unsigned long init = 64;
    while (init < max_entries && init < (1ul << 16))
        init <<= 1;
    s->ht = cds_lfht_new_flavor(init, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
                                &urcu_memb_flavor, NULL);
    if (!s->ring || !s->ht) {
        shmq_seen_close(s);
        return -ENOMEM;
    }
    ensure_registered();
    if (path) {
        int err = open_file(s, path);
        if (err) {
            shmq_seen_close(s);
            return err;
        }
    }
    *out = s;
    return 0;
}

int shmq_seen_check(shmq_seen_t *s, const void *key, size_t len)
{
    int err = check_key(s, key, len);
    if (err)
        return err;
    ensure_registered();
    struct lookup_key k = {key, (uint32_t)len};
    struct cds_lfht_iter it;
    read_lock();
    cds_lfht_lookup(s->ht, key_hash(s->seed, key, len), node_match, &k, &it);
    int found = cds_lfht_iter_get_node(&it) != NULL;
    read_unlock();
    return found;
}

int shmq_seen_check_and_add(shmq_seen_t *s, const void *key, size_t len)
{
    int err = check_key(s, key, len);
    if (err)
        return err;
    ensure_registered();
    return insert(s, key, (uint32_t)len, 1);
}

int shmq_seen_add(shmq_seen_t *s, const void *key, size_t len)
{
    int rc = shmq_seen_check_and_add(s, key, len);
    return rc < 0 ? rc : 0;
}

int shmq_seen_id(shmq_seen_t *s, uint64_t msg_id)
{
    unsigned char key[8];
    for (int i = 0; i < 8; i++)
        key[i] = (unsigned char)(msg_id >> (8 * i));
    return shmq_seen_check_and_add(s, key, sizeof(key));
}

int shmq_seen_set_sync(shmq_seen_t *s, int mode)
{
    if (!s || (mode != SHMQ_SEEN_SYNC_DATA && mode != SHMQ_SEEN_SYNC_WRITE))
        return -EINVAL;
    atomic_store_explicit(&s->sync_mode, mode, memory_order_relaxed);
    return 0;
}

static int seen_stats(shmq_seen_t *s, shmq_seen_stats_t *st)
{
    if (!s || !st)
        return -EINVAL;
    ensure_registered();
    long before, after;
    unsigned long count;
    read_lock();
    cds_lfht_count_nodes(s->ht, &before, &count, &after);
    read_unlock();
    memset(st, 0, sizeof(*st));
    st->entries = count;
    st->max_entries = s->max;
    st->added = atomic_load_explicit(&s->added, memory_order_relaxed);
    st->evicted = atomic_load_explicit(&s->evicted, memory_order_relaxed);
    st->loaded = s->loaded;
    st->bad_bytes = s->bad_bytes;
    pthread_rwlock_rdlock(&s->file_lock);
    st->file_records = atomic_load_explicit(&s->file_records, memory_order_relaxed);
    st->compactions = s->compactions;
    pthread_rwlock_unlock(&s->file_lock);
    return 0;
}

int shmq_seen_close(shmq_seen_t *s)
{
    if (!s)
        return 0;
    int err = 0, rc;
    ensure_registered();
    if (s->ht && s->ring) {
        read_lock();
        for (size_t i = 0; i < s->max; i++) {
            struct seen_node *n = atomic_load_explicit(&s->ring[i], memory_order_acquire);
            if (n)
                cds_lfht_del(s->ht, &n->node);
        }
        read_unlock();
    }
    urcu_memb_synchronize_rcu(); /* no lookup holds a node any more */
    SEEN_TSAN_ACQUIRE(&tsan_grace);
    if (s->ring) {
        for (size_t i = 0; i < s->max; i++)
            free(atomic_load_explicit(&s->ring[i], memory_order_relaxed));
    }
    urcu_memb_barrier(); /* evicted nodes still queued for call_rcu are freed */
    if (s->ht)
        cds_lfht_destroy(s->ht, NULL);
    if (s->fd >= 0 && (rc = io_close(s->fd)) != 0)
        err = rc;
    if (s->lock_fd >= 0)
        io_close(s->lock_fd); /* releases the flock */
    pthread_rwlock_destroy(&s->file_lock);
    free(s->ring);
    free(s->path);
    free(s);
    return err;
}

/* shmq_seen_stats() for the caller's struct of size bytes (abi.h): filled in the library's layout,
 * then copied. */
int shmq_seen_stats_size(shmq_seen_t *s, shmq_seen_stats_t *st, size_t size)
{
    if (!st || !abi_size_ok(size, ABI_SEEN_STATS_SIZE_0, sizeof(shmq_seen_stats_t)))
        return -EINVAL;
    shmq_seen_stats_t own = {0};
    int err = seen_stats(s, &own);
    abi_copy_out(st, size, &own, sizeof(own));
    return err;
}

/* The plain symbol (no header macro reaches it): the first layout. */
int(shmq_seen_stats)(shmq_seen_t *s, shmq_seen_stats_t *st)
{
    return shmq_seen_stats_size(s, st, ABI_SEEN_STATS_SIZE_0);
}
