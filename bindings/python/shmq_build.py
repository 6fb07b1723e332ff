"""shmq_build.py - the cffi builder (API mode) of the Python package's native module shmq._native.

It compiles a small C module against the installed libshmq, found by pkg-config (set
PKG_CONFIG_PATH for a custom prefix). The declarations below are checked by the C compiler
against the real <shmq/shmq.h>: structs are declared with "...;" so cffi takes their layout
from the header, never from a hand copy (fields the library adds later do not break the module;
functions that the header defines as macros over a *_size call work as written).

A library outside the linker's default directories is found at run time through an rpath set
to pkg-config's libdir, so no LD_LIBRARY_PATH is needed.

Run by setup.py (cffi_modules) and by tests/conftest.py for an in-tree build.
"""
import os
import subprocess

from cffi import FFI

CDEF = r"""
typedef struct shmq shmq_t;
typedef struct shmq_consumer shmq_consumer_t;
typedef struct shmq_replay shmq_replay_t;
typedef int... mode_t;

#define SHMQ_DURABILITY_NONE ...
#define SHMQ_DURABILITY_PROCESS ...
#define SHMQ_DURABILITY_SYNC ...
#define SHMQ_MSG_REDELIVERED ...
#define SHMQ_PURGE_DELAYED ...
#define SHMQ_DEAD_MAX_ATTEMPTS ...
#define SHMQ_DEAD_CORRUPT ...
#define SHMQ_NAME_MAX ...
#define SHMQ_DEDUP_KEY_MAX ...
#define SHMQ_GROUP_BLOCK ...
#define SHMQ_GROUP_OVERRUN ...
#define SHMQ_CONSUMER_NAME_MAX ...
#define SHMQ_PROC_CLAIMED ...
#define SHMQ_PROC_ACTIVE ...
#define SHMQ_PROC_FENCED ...
#define SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS ...
#define SHMQ_CONFIG_ACK_DEADLINE_MS ...
#define SHMQ_CONFIG_MAX_ATTEMPTS ...
#define SHMQ_CONFIG_BACKOFF_BASE_MS ...
#define SHMQ_CONFIG_BACKOFF_CAP_MS ...
#define SHMQ_CONFIG_BACKOFF_MULTIPLIER ...
#define SHMQ_CONFIG_DEFAULT_TTL_MS ...
#define SHMQ_CONFIG_LOG_RETENTION_BYTES ...
#define SHMQ_CONFIG_EXPIRE_POLICY ...
#define SHMQ_SEEN_KEY_MAX ...
#define SHMQ_SEEN_ENTRIES_MAX ...
#define SHMQ_SEEN_SYNC_DATA ...
#define SHMQ_SEEN_SYNC_WRITE ...

typedef struct shmq_config {
    uint32_t capacity, max_msg_size, max_procs, heartbeat_timeout_ms, ack_deadline_ms;
    uint32_t max_attempts, backoff_base_ms, backoff_cap_ms;
    double backoff_multiplier;
    mode_t mode;
    int durability;
    const char *log_dir;
    uint32_t wal_file_size;
    uint64_t log_retention_bytes;
    uint32_t dedup_window_count, dedup_window_ms;
    uint32_t default_ttl_ms, expire_policy, max_groups, max_header_bytes, max_headers;
    ...;
} shmq_config_t;

typedef struct shmq_msg {
    uint64_t id;
    const void *data;
    size_t len;
    uint32_t attempt;
    uint64_t token;
    uint32_t flags;
    ...;
} shmq_msg_t;

typedef struct shmq_stats {
    uint64_t published, delivered, acked, nacked, redelivered, dead_lettered, reclaimed;
    uint64_t dedup_hits, wal_bytes, wal_flushes;
    uint32_t wal_files;
    uint32_t ready, inflight, delayed, reserved, dead, free;
    uint32_t consumers, procs;
    int64_t oldest_age_ms;
    uint64_t wal_errors;
    int32_t wal_last_error;
    uint32_t wal_healthy, wal_flush_failed, pinned, recovered_holes, recovered_bad_regions;
    ...;
} shmq_stats_t;

typedef struct shmq_dead_letter {
    uint64_t id;
    uint32_t attempt;
    uint32_t reason;
    size_t len;
    const void *data;
    ...;
} shmq_dead_letter_t;

typedef struct shmq_header {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    ...;
} shmq_header_t;

typedef struct shmq_pub_opts {
    uint32_t delay_ms;
    const shmq_header_t *headers;
    uint32_t n_headers;
    const void *dedup_key;
    size_t dedup_key_len;
    ...;
} shmq_pub_opts_t;

typedef struct shmq_peek_msg {
    uint64_t id;
    uint32_t attempt;
    size_t len;
    const void *data;
    size_t copied;
    ...;
} shmq_peek_msg_t;

typedef struct shmq_peek_headers {
    const void *block;
    size_t len;
    ...;
} shmq_peek_headers_t;

typedef struct shmq_group_info {
    uint32_t index, policy, bound, deleting;
    uint64_t first_id, held, overrun;
    char name[...];
    ...;
} shmq_group_info_t;

typedef struct shmq_group_stats {
    uint32_t index, ready, inflight, delayed, dead;
    uint64_t held, lag;
    int64_t oldest_age_ms;
    uint64_t overrun, newest_id, first_id;
    char name[...];
    uint64_t delivered, acked, nacked;
    uint32_t consumers;
    ...;
} shmq_group_stats_t;

typedef struct shmq_consumer_stats {
    uint32_t index;
    int32_t pid;
    int state;
    char name[...];
    uint64_t delivered, acked, nacked, redelivered, dead_lettered, reclaimed_from;
    ...;
} shmq_consumer_stats_t;

typedef struct shmq_seen shmq_seen_t;
typedef struct shmq_seen_stats {
    size_t entries, max_entries;
    uint64_t added, evicted, loaded, bad_bytes, file_records, compactions;
    ...;
} shmq_seen_stats_t;

typedef struct shmq_replay_from {
    uint64_t id;
    int64_t unix_ms;
    ...;
} shmq_replay_from_t;

void shmq_config_init(shmq_config_t *cfg);
int shmq_create(const char *name, const shmq_config_t *cfg, shmq_t **q);
int shmq_open(const char *name, shmq_t **q);
int shmq_close(shmq_t *q);
int shmq_unlink(const char *name);
int shmq_get_config(const shmq_t *q, shmq_config_t *cfg);
int shmq_stats(shmq_t *q, shmq_stats_t *st);
int shmq_purge(shmq_t *q, unsigned flags, uint32_t *count);

/* data is declared as char *: bytes pass without a copy or a conversion call */
int shmq_publish(shmq_t *q, const char *data, size_t len, uint64_t *id);
int shmq_publish_delayed(shmq_t *q, const char *data, size_t len, uint32_t delay_ms,
                         uint64_t *id);
int shmq_publish_timed(shmq_t *q, const char *data, size_t len, uint64_t *id, int timeout_ms);
int shmq_publish_dedup(shmq_t *q, const char *data, size_t len, const char *key,
                       size_t key_len, uint64_t *id);
void shmq_pub_opts_init(shmq_pub_opts_t *opts);
int shmq_publish_ex(shmq_t *q, const char *data, size_t len, const shmq_pub_opts_t *opts,
                    uint64_t *id);

/* batches: pyshmq_publish_joined is the module's own C (SOURCE below) */
int pyshmq_publish_joined(shmq_t *q, const char *buf, const size_t *lens, size_t n,
                          uint64_t *ids, size_t *done);
void pyshmq_lens(const shmq_msg_t *msgs, size_t n, size_t *lens);
int shmq_receive_batch(shmq_consumer_t *c, shmq_msg_t *msgs, size_t max, size_t *got,
                       int timeout_ms);
int shmq_ack_batch(shmq_consumer_t *c, const shmq_msg_t *msgs, size_t n, size_t *done);

int shmq_consumer_open(shmq_t *q, const char *name, shmq_consumer_t **c);
int shmq_group_create(shmq_t *q, const char *name, uint32_t policy, uint32_t bound);
int shmq_group_delete(shmq_t *q, const char *name);
int shmq_group_list(shmq_t *q, shmq_group_info_t *out, size_t max, size_t *n);
int shmq_group_stats(shmq_t *q, const char *group, shmq_group_stats_t *st);
int shmq_consumer_open_group(shmq_t *q, const char *group, const char *name,
                             shmq_consumer_t **c);
int shmq_msg_headers(shmq_consumer_t *c, const shmq_msg_t *msg, shmq_header_t *out,
                     size_t max, size_t *n);
int shmq_consumer_close(shmq_consumer_t *c);
int shmq_receive(shmq_consumer_t *c, shmq_msg_t *msg, int timeout_ms);
int shmq_ack(shmq_consumer_t *c, const shmq_msg_t *msg);
int shmq_nack(shmq_consumer_t *c, const shmq_msg_t *msg, uint32_t delay_ms);
int shmq_extend(shmq_consumer_t *c, const shmq_msg_t *msg, uint32_t ms);
int shmq_consumer_heartbeat_thread(shmq_consumer_t *c, uint32_t interval_ms);

int shmq_set_config(shmq_t *q, const shmq_config_t *cfg, uint32_t fields);
int shmq_consumer_stats(shmq_t *q, shmq_consumer_stats_t *out, size_t max, size_t *n);
int shmq_peek_headers(shmq_t *q, shmq_peek_msg_t *out, shmq_peek_headers_t *hdrs, size_t max,
                      void *buf, size_t buf_size, size_t *n);
int shmq_peek_group(shmq_t *q, const char *group, shmq_peek_msg_t *out,
                    shmq_peek_headers_t *hdrs, size_t max, void *buf, size_t buf_size, size_t *n);
int shmq_purge_group(shmq_t *q, const char *group, unsigned flags, uint32_t *count);
int shmq_headers_decode(const void *block, size_t len, shmq_header_t *out, size_t max,
                        size_t *n);

int shmq_seen_open(const char *path, size_t max_entries, shmq_seen_t **s);
int shmq_seen_check(shmq_seen_t *s, const char *key, size_t len);
int shmq_seen_add(shmq_seen_t *s, const char *key, size_t len);
int shmq_seen_check_and_add(shmq_seen_t *s, const char *key, size_t len);
int shmq_seen_id(shmq_seen_t *s, uint64_t msg_id);
int shmq_seen_set_sync(shmq_seen_t *s, int mode);
int shmq_seen_stats(shmq_seen_t *s, shmq_seen_stats_t *st);
int shmq_seen_close(shmq_seen_t *s);

int shmq_dlq_list(shmq_t *q, shmq_dead_letter_t *out, size_t max, size_t *n);
int shmq_dlq_list_group(shmq_t *q, const char *group, shmq_dead_letter_t *out, size_t max,
                        size_t *n);
int shmq_dlq_redrive_group(shmq_t *q, const char *group, uint64_t id, uint32_t *moved);
int shmq_dlq_purge_group(shmq_t *q, const char *group, uint64_t id, uint32_t *purged);
int shmq_dlq_redrive(shmq_t *q, uint64_t id, uint32_t *moved);
int shmq_dlq_purge(shmq_t *q, uint64_t id, uint32_t *purged);

int shmq_replay_open(shmq_t *q, const shmq_replay_from_t *from, shmq_replay_t **r);
int shmq_replay_next(shmq_replay_t *r, shmq_msg_t *msg);
int64_t shmq_replay_unix_ms(const shmq_replay_t *r);
int shmq_replay_close(shmq_replay_t *r);

/* fast.c: adds QueueBase, ConsumerBase, MessageBase and _fast_init to shmq._native */
int pyshmq_install(void);

const char *shmq_strerror(int err);
const char *shmq_last_error_detail(void);
const char *shmq_version(void);
"""


def _pkg_config(*args):
    try:
        out = subprocess.check_output(["pkg-config", *args, "shmq"], text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            "shmq_build: pkg-config cannot find shmq (%s); install libshmq (cmake --install) "
            "and set PKG_CONFIG_PATH to its lib/pkgconfig" % e
        )
    return out.split()


def _flags():
    include_dirs, library_dirs, libraries, extra = [], [], [], []
    for f in _pkg_config("--cflags", "--libs"):
        if f.startswith("-I"):
            include_dirs.append(f[2:])
        elif f.startswith("-L"):
            library_dirs.append(f[2:])
        elif f.startswith("-l"):
            libraries.append(f[2:])
        else:
            extra.append(f)
    libdir = _pkg_config("--variable=libdir")
    # The system's own directories need no rpath; any other prefix does.
    rpath = [d for d in libdir if not d.startswith(("/usr/lib", "/lib"))]
    return dict(
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=libraries,
        extra_compile_args=[f for f in extra if not f.startswith("-Wl")] + ["-std=gnu11"],
        runtime_library_dirs=rpath,
    )


# C of the module itself (not of the library): what a loop in Python would do per message.
SOURCE = r"""
#include <shmq/shmq.h>
#include <shmq/replay.h>
#include <shmq/seen.h>

/* Publish n messages laid end to end in buf (lens[i] bytes each) through shmq_publish_batch,
 * 64 at a time; *done counts the published ones (a prefix), ids gets their ids. Returns 0 or
 * the error of the batch that stopped. */
static int pyshmq_publish_joined(shmq_t *q, const char *buf, const size_t *lens, size_t n,
                                 uint64_t *ids, size_t *done)
{
    shmq_iov_t iov[64];
    *done = 0;
    while (*done < n) {
        size_t k = n - *done < 64 ? n - *done : 64, d = 0;
        for (size_t i = 0; i < k; i++) {
            iov[i].data = buf;
            iov[i].len = lens[*done + i];
            buf += iov[i].len;
        }
        int rc = shmq_publish_batch(q, iov, k, ids + *done, &d);
        *done += d;
        if (rc)
            return rc;
    }
    return 0;
}

/* lens[i] = msgs[i].len: the lengths of a batch in one call (a Message keeps its length). */
static void pyshmq_lens(const shmq_msg_t *msgs, size_t n, size_t *lens)
{
    for (size_t i = 0; i < n; i++)
        lens[i] = msgs[i].len;
}
"""

# The per-message calls, written against the CPython API (fast.c says why). They need the
# full API (vectorcall, the bytes and list macros), so the module is built for this Python
# version, not for the limited API (abi3) cffi uses by default.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fast.c")) as f:
    SOURCE += f.read()

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "shmq._native",
    SOURCE,
    py_limited_api=False,
    define_macros=[("_CFFI_NO_LIMITED_API", None)],
    **_flags(),
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.environ.get("SHMQ_BUILD_TMP", "build"), verbose=True)
