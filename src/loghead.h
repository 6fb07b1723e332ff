/*
 * loghead.h - the head file of a queue's log: its live generation and its last complete one.
 *
 * LOG_DIR/NAME/head (docs/FORMAT.md 8.11) is mapped by every process that opens the log. `gen`
 * is the live generation: a process whose segment belongs to another one is fenced (-EIDRM,
 * E1/E2 in wal.c). `complete_gen` is the newest generation whose re-logged state is complete:
 * recovery reads only its files (docs/DESIGN.md, "Generations"). Both are changed only under an
 * exclusive flock on LOG_DIR/NAME/.recover (loghead_lock()).
 */
#ifndef SHMQ_LOGHEAD_H
#define SHMQ_LOGHEAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "format.h"

struct log_head {
    uint64_t magic;   /* LOG_HEAD_MAGIC */
    uint32_t version; /* WAL_VERSION */
    uint32_t size;    /* LOG_HEAD_SIZE */
    uint32_t crc;     /* CRC32C of bytes 0..16 */
    uint32_t reserved;
    _Alignas(CACHE_LINE) _Atomic uint64_t gen; /* the live generation (E3 bumps it) */
    _Atomic uint64_t complete_gen;             /* the newest generation recovery may read */
};

struct loghead {
    struct log_head *h; /* mapped read-write, shared */
    int fd;
};

/* A head's gen after shmq_unlink() fenced it (both words): every process still holding the
 * deleted queue fails E1/E2 and writes nothing more; its appends return 0, as if made just before
 * the delete (wal.c). No generation ever takes this value (loghead_first_gen()). */
#define LOG_GEN_DELETED UINT64_MAX

/* The first generation of a new log: random in [1, 2^62), so that a queue deleted and made
 * again under the same name never has the generation of the deleted one (whose processes
 * would otherwise map and write the new log's files: docs/DESIGN.md, "Generations"). */
uint64_t loghead_first_gen(void);

/* Fence every holder of the log in dir before it is deleted: gen and complete_gen set to
 * LOG_GEN_DELETED (caller holds the exclusive lock). 0, -ENOENT (no head), -errno. */
int loghead_fence_deleted(const char *dir);

/* Map LOG_DIR/NAME/head. create: make it (gen 0, file mode `mode`, see logdir_file_mode()) if
 * missing or empty; the caller holds the exclusive lock then. 0, -ENOENT (no head: a log of
 * format version 1, or none), -EPROTO (another version), -EBADMSG (not a head, or damaged),
 * -errno. */
int loghead_open(const char *dir, bool create, uint32_t mode, struct loghead *out);
void loghead_close(struct loghead *lh);

/* Make LOG_DIR/NAME/head complete under a temporary name (gen = complete_gen = gen, file mode
 * `mode` exactly, fsynced), rename it into place (replacing a damaged one) and map it: a process
 * killed at any instruction leaves the old head or the whole new one, never one whose words are
 * still 0 (review F7). The caller holds the exclusive lock. */
int loghead_make(const char *dir, uint32_t mode, uint64_t gen, struct loghead *out);

/* Is h (a copy of a head file's first bytes) a valid head of this version? (inspection) */
bool loghead_valid(const struct log_head *h);

/* Make gen and complete_gen durable (fsync). */
int loghead_sync(struct loghead *lh);

/* Open LOG_DIR/NAME/.recover (read-only: flock needs no more; made with file mode `mode` if
 * missing, never with mode 0: -ENOENT) and flock it with op (LOCK_EX, LOCK_SH | LOCK_NB, ...): the fd (close it to
 * unlock), or -errno (-EWOULDBLOCK when LOCK_NB finds it held). The lock returned is on the
 * file the name has once it is held: one unlinked meanwhile (a delete) is let go and the name
 * opened again; -ENOENT when the directory went with it (the queue was deleted). */
int loghead_lock(const char *dir, int op, uint32_t mode);
/* The same in the directory open as dirfd (wal.c: a removed directory stays removed for it:
 * -ENOENT, never the lock of a directory made again by that path). */
int loghead_lock_at(int dirfd, int op, uint32_t mode);

#endif
