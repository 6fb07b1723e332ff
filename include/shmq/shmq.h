/*
 * shmq.h - crash-safe, lock-free shared-memory message queue for processes on one host.
 *
 * This header is the manual. Every function returns 0 on success or a negative errno value
 * (shmq_strerror() turns it into text); out-parameters come last. Nothing here calls exit() or
 * abort(), and nothing keeps global error state (shmq_last_error_detail()'s text is per thread).
 *
 * Concurrency in one sentence: any number of processes (and threads) may publish to one queue at
 * once; any number of consumers may receive from it at once; one shmq_consumer_t is used by one
 * thread at a time. A process may be SIGKILLed or SIGSTOPped at any instruction without stopping
 * the others (see docs/DESIGN.md for the protocol and the crash windows).
 *
 * Costs: publish, receive, ack and nack make no system call and no heap allocation unless they
 * must sleep (receive on an empty queue, publish_timed on a full one) or wake a sleeper.
 *
 * Threads and cancellation (pthread_cancel, deferred: the default). A shmq call acts on a
 * cancellation request at one place only: asleep in a blocking wait, i.e. shmq_receive() and
 * shmq_receive_batch() with a timeout other than 0 on an empty queue, and shmq_publish_timed() on
 * a full one. There the thread is cancelled at once (also by a request made before it went to
 * sleep), having taken nothing: no message is received or slot claimed, and the consumer and the
 * queue stay usable by other threads (shmq_consumer_close() from another thread, say). Anywhere
 * else inside a call (file operations, a SYNC publish's flush or its wait for another's, open,
 * create, maintenance, close) the request stays pending and acts at the caller's next
 * cancellation point after the call returned, so a call is never cut off holding a lock, a
 * descriptor or a log mapping. Asynchronous cancellation (PTHREAD_CANCEL_ASYNCHRONOUS) must not
 * be enabled around shmq calls (POSIX allows it only around async-cancel-safe functions); a
 * thread that ends inside a call by other means (pthread_exit() from a signal handler) leaves
 * the log's mappings free to go, but may leave a lock held.
 */
#ifndef SHMQ_SHMQ_H
#define SHMQ_SHMQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmq/version.h" /* SHMQ_VERSION_MAJOR/MINOR/PATCH/STRING/NUMBER (generated) */

#ifdef __cplusplus
extern "C" {
#endif

/** An open queue (opaque). Safe to share between the threads of one process. */
typedef struct shmq shmq_t;
/** A consumer attached to a queue (opaque). One thread at a time. */
typedef struct shmq_consumer shmq_consumer_t;

/** Limits enforced by shmq_create(): a config outside them gets -EINVAL. */
#define SHMQ_NAME_MAX 64            /* bytes in a queue name, [A-Za-z0-9._-] only */
#define SHMQ_CONSUMER_NAME_MAX 32   /* bytes kept of a consumer's name */
#define SHMQ_CAPACITY_MAX (1u << 22) /* message slots */
#define SHMQ_MSG_SIZE_MAX (64u << 20) /* bytes in one message */
#define SHMQ_PROCS_MAX 4096         /* registry entries */
#define SHMQ_ATTEMPTS_MAX 65535u /* max_attempts, at most: the log keeps a message's attempts
                                  * in 16 bits (docs/FORMAT.md 8.1) */
#define SHMQ_SEGMENT_MAX (64ull << 30) /* bytes of one segment in all */
#define SHMQ_LOG_DIR_MAX 200         /* bytes in a log directory path */
#define SHMQ_WAL_FILE_MIN (64u << 10) /* bytes in one log file (wal_file_size), at least */

/** Durability modes (shmq_config_t.durability); the README's table says what each survives. */
#define SHMQ_DURABILITY_NONE 0    /* no log: survives any process crash (shm persists) */
#define SHMQ_DURABILITY_PROCESS 1 /* + the record is in the mmap'd log: survives the loss of the
                                   * segment (unlink, corruption, all processes gone) */
#define SHMQ_DURABILITY_SYNC 2    /* + the record is on stable storage (group commit): survives
                                   * power loss and kernel crashes */

/*
 * ABI: structs that can grow. shmq_config_t, shmq_pub_opts_t, shmq_stats_t,
 * shmq_recovery_report_t, shmq_maint_report_t (and shmq_seen_stats_t, seen.h) gain fields in later versions without
 * breaking a program built against an older shmq.h (README "ABI and versions"):
 *  - Fields are only ever appended, never moved, removed or retyped.
 *  - The library is always told the size of the caller's struct, the sizeof of the headers the
 *    caller was compiled with: shmq_config_t and shmq_pub_opts_t carry it in their leading
 *    `size` field, which shmq_config_init() and shmq_pub_opts_init() set (never set it by
 *    hand; a config not made by shmq_config_init() or shmq_get_config() has no valid size); the calls that fill a struct are macros that pass
 *    sizeof(TYPE) to their *_size function (shmq_stats(q, st) is
 *    shmq_stats_size(q, st, sizeof(shmq_stats_t))). Programs change nothing.
 *  - The library reads and writes only that many bytes. A config from older headers (smaller)
 *    is accepted: the fields it lacks take their defaults. A size the library does not know
 *    (larger than its own struct, from newer headers, smaller than the first layout, or not a
 *    multiple of 8 for the two structs the caller fills) is -EINVAL. These two end on a field,
 *    never on padding (src/abi.c asserts it), so an older size never covers a newer field.
 *  - The plain symbols (shmq_config_init, shmq_pub_opts_init, shmq_stats, shmq_get_config,
 *    shmq_maintain, shmq_recover, shmq_seen_stats), reached only by taking their address or by
 *    dlsym()/ctypes, act on each struct's first layout (the fields up to dedup_window_ms,
 *    dedup_key_len, recovered_bad_regions, holes, pinned, compactions); bindings that load symbols call the
 *    *_size functions with their own size.
 * Structs passed as arrays (shmq_msg_t, shmq_iov_t, shmq_peek_msg_t, shmq_proc_info_t,
 * shmq_dead_letter_t) and shmq_lease_info_t never change: more fields mean a new struct and
 * new calls.
 */

/** Queue configuration. Fill it with shmq_config_init(), then change what you need. New fields
 *  go at the end, and the struct keeps no tail padding (src/abi.c asserts it), so that a size
 *  from older headers always ends on a field of this one. */
typedef struct shmq_config {
    uint32_t size;                 /* sizeof the caller's shmq_config_t: set by
                                    * shmq_config_init(), read by shmq_create() (see "ABI") */
    uint32_t capacity;             /* message slots (1..SHMQ_CAPACITY_MAX); default 1024 */
    uint32_t max_msg_size;         /* bytes (1..SHMQ_MSG_SIZE_MAX); default 1024 */
    uint32_t max_procs;            /* attached processes and consumers (2..SHMQ_PROCS_MAX); 64 */
    uint32_t heartbeat_timeout_ms; /* a silent process is declared dead after this; 5000 */
    uint32_t ack_deadline_ms;      /* a message in flight longer than this is redelivered; 30000 */
    uint32_t max_attempts;         /* deliveries before the dead-letter ring
                                    * (1..SHMQ_ATTEMPTS_MAX); 5 */
    uint32_t backoff_base_ms, backoff_cap_ms; /* nack(…, 0) delay: base*mult^(attempt-1), capped */
    double backoff_multiplier;     /* >= 1.0; default 2.0 */
    mode_t mode;                   /* segment file mode; 0600 by default (private to the owner) */
    int durability;                /* SHMQ_DURABILITY_*; default PROCESS */
    const char *log_dir;           /* where the queue's log directory NAME/ goes, an absolute
                                    * path (else -EINVAL); the state directory links NAME to it.
                                    * NULL: the state directory ($SHMQ_STATE_DIR, else
                                    * /var/lib/shmq for root, else $XDG_STATE_HOME/shmq or
                                    * $HOME/.local/state/shmq; none: -ENOENT). README "Where the
                                    * log lives" */
    uint32_t wal_file_size;        /* bytes per log file (64 KiB..4 GiB-4 KiB, a multiple of
                                    * 4096); default 64 MiB */
    uint64_t log_retention_bytes;  /* acked history the log keeps behind its write position
                                    * (for replay); 0: files go as soon as nothing needs them */
    uint32_t dedup_window_count;   /* keys the dedup window remembers (0: no window); 4096 */
    uint32_t dedup_window_ms;      /* and for how long; default 120000 (2 minutes) */
    uint32_t default_ttl_ms;       /* time to live of every message (0: none, the default): a
                                    * message not delivered within it expires (README "Expiry") */
    uint32_t expire_policy;        /* what an expired message becomes: SHMQ_EXPIRE_DROP (the
                                    * default) or SHMQ_EXPIRE_DEAD_LETTER */
    uint32_t max_groups;           /* consumer groups the queue can hold at once (1..
                                    * SHMQ_GROUPS_MAX); default 1: the group "default" only.
                                    * With a log, the log carries every group: a rebuild
                                    * restores each group's state. README "Fan-out" */
    uint32_t reserved_groups;      /* 0 */
    uint32_t max_header_bytes;     /* room for one message's headers, encoded (each header
                                    * takes key + value + 5 bytes; 0..SHMQ_HEADER_BYTES_MAX);
                                    * 0 (the default): the queue carries no headers */
    uint32_t max_headers;          /* headers one message may carry (1..SHMQ_HEADERS_MAX);
                                    * default 32; ignored (stored 0) without max_header_bytes */
} shmq_config_t;

#define SHMQ_HEADER_BYTES_MAX (64u << 10) /* max_header_bytes, at most */
#define SHMQ_HEADERS_MAX 1024u            /* max_headers, at most */

/** shmq_config_t.expire_policy: an expired message is dropped (its slot freed, counted), or
 *  moved to the dead letters with reason SHMQ_DEAD_EXPIRED (where it holds its slot until
 *  redriven or purged: a queue whose messages expire faster than the dead letters are handled
 *  fills up with them). */
#define SHMQ_EXPIRE_DROP 0u
#define SHMQ_EXPIRE_DEAD_LETTER 1u

#define SHMQ_DEDUP_KEY_MAX 128 /* bytes in a dedup key */
#define SHMQ_DEDUP_WINDOW_MAX (1u << 22)
#define SHMQ_GROUPS_MAX 64     /* consumer groups of one queue (config max_groups), at most */
#define SHMQ_GROUP_NAME_MAX 31 /* bytes in a group name, [A-Za-z0-9._-] only */

/** Flags of a delivered message. */
#define SHMQ_MSG_REDELIVERED 1u /* an earlier delivery of this message was not acked */

/** A delivered message. data points into shared memory (zero-copy): valid until ack/nack. */
typedef struct shmq_msg {
    uint64_t id;        /* unique, increasing per queue (in publish order for one producer) */
    const void *data;   /* payload in shm: zero-copy, valid until ack/nack */
    size_t len;
    uint32_t attempt;   /* 1 on first delivery */
    uint64_t token;     /* opaque delivery token: slot + generation */
    uint32_t flags;     /* SHMQ_MSG_REDELIVERED */
} shmq_msg_t;

/** Fill *cfg with the defaults listed in shmq_config_t, and cfg->size with the size of the
 *  caller's struct (a macro: shmq_config_init_size(cfg, sizeof(shmq_config_t))). Returns 0;
 *  -EINVAL for NULL or a size shmq does not know (then cfg->size is left 0 if it fits, so
 *  that shmq_create() refuses the config too). */
void shmq_config_init(shmq_config_t *cfg);
int shmq_config_init_size(shmq_config_t *cfg, size_t size);
#define shmq_config_init(cfg) shmq_config_init_size((cfg), sizeof(shmq_config_t))

/**
 * Create the queue NAME: the segment /dev/shm/shmq.NAME with cfg->mode, and open it; with a
 * durability other than NONE also its log directory LOG_DIR/NAME (0700, files 0600).
 * Returns -EEXIST if it exists (a segment, or a log holding files: open or recover it instead), -EINVAL for a bad name, a NULL argument or a config outside the
 * limits or with a cfg->size shmq does not know (a config not made by shmq_config_init();
 * shmq_last_error_detail() names the field and the limit), -ENOSPC/-EDQUOT when /dev/shm (or the log's file system) has no room for the segment
 * (every page is allocated here, so no access faults later), -EFBIG past RLIMIT_FSIZE, -ENOMEM
 * when it cannot be mapped, -EACCES/-EROFS without permission; a failed create leaves nothing.
 * Blocking: yes (system calls); call it at start-up.
 */
int shmq_create(const char *name, const shmq_config_t *cfg, shmq_t **q);

/**
 * Open the existing queue NAME and register this process in it.
 * Returns -ENOENT if there is none, -EACCES without permission, -EPROTO for a segment of another
 * format version, -EBADMSG for a segment that is truncated, corrupted or not a shmq segment,
 * -EUSERS when the registry is full, -EXDEV when processes of another pid namespace use the
 * queue (liveness is judged by pid, which is not comparable across namespaces), -EINVAL for a
 * bad name or NULL; when the segment is
 * rebuilt from the log, that rebuild's error (-ENOSPC when /dev/shm has no room for it, ...).
 * Blocking: a segment still being created (too short, or magic not yet stored) is waited for up
 * to 1 s before it is called corrupted (-EBADMSG).
 */
int shmq_open(const char *name, shmq_t **q);

/** Unregister and unmap. Consumers opened on q must be closed first (-EBUSY otherwise). */
int shmq_close(shmq_t *q);

/** Delete the queue NAME for good: its segment and its log (the log directory the segment names,
 *  or the state directory's if the segment is gone). Processes that have it open keep their
 *  mappings. -ENOENT if neither existed, -EINVAL for a bad name. If the log could not be
 *  removed whole, the error of the first file that could not be (-EACCES, -EROFS, -EBUSY,
 *  ...), also when the segment went: the log's head was fenced first, so what is left is never
 *  recovered as the queue; call again once the cause is gone. */
int shmq_unlink(const char *name);

/** Remove only the segment /dev/shm/shmq.NAME, as a reboot would: the log stays, and the next
 *  shmq_open() rebuilds the queue from it. -ENOENT, -EINVAL. */
int shmq_unlink_segment(const char *name);

/** What rebuilding a queue from its log found. */
typedef struct shmq_recovery_report {
    uint32_t files;            /* log files read */
    uint64_t records;          /* valid records used */
    uint64_t restored;         /* messages brought back (published, not acked or dead-lettered) */
    uint64_t resolved;         /* messages seen acked or dead-lettered */
    uint64_t highest_id;       /* ids continue after this */
    uint32_t torn_tails;       /* files ending in a record cut short (a crash while writing) */
    uint32_t corrupt_regions;  /* bad bytes followed by valid records (a hole or corruption) */
    uint64_t bytes_skipped;    /* bytes of torn and corrupt regions */
    uint64_t delayed;          /* of those, brought back DELAYED with what is left of the delay */
    uint64_t dead_letters;     /* dead letters brought back (reason and attempts) */
    uint64_t gen;              /* the log generation the rebuilt segment belongs to */
    uint32_t other_gen_files;  /* files of other generations, not read (deleted by retention) */
    uint32_t capacity;         /* of the rebuilt segment: the logged one, or more if more came
                                * back (at-least-once duplicates: nothing is dropped) */
    uint32_t holes;            /* of corrupt_regions, the all-zero ones: space reserved and never
                                * written (an append that failed, or a writer killed before its
                                * record); harmless, nothing in them was reported written */
    uint64_t expired;          /* messages whose expiry passed while the segment was gone:
                                * dropped, or brought back as dead letters (expire_policy) */
} shmq_recovery_report_t;

/**
 * Rebuild the segment of queue NAME from its log in log_dir/NAME (log_dir absolute; NULL: the
 * state directory's entry NAME, or the directory it links to; a rebuild from log_dir makes that
 * link): every message published and not acked comes back, in id order, with its attempt
 * count, in its state: READY (in-flight ones too), DELAYED with what was left of its delay
 * (wall-clock time), DEAD on the dead-letter ring with its reason; committed dedup keys come
 * back into the window; ids continue after the highest seen. The rebuild is a new generation
 * of the log: a process that still holds the old segment gets -EIDRM from its next publish,
 * ack, nack, extend, receive or maintenance (it must reopen), and nothing it does can change
 * the rebuilt queue; every operation of it that returned success before is in the rebuilt
 * queue. A torn or corrupt record is reported in *rep, never fatal. -EEXIST if a valid segment
 * exists, -ENOENT if there is no log, -ENOSPC if more messages are live than
 * SHMQ_CAPACITY_MAX (more than the logged capacity: the rebuilt segment is made that large), -EBADMSG if no log file is readable, -EPROTO for a log of another format
 * version (version 1: drain it with the release that wrote it, or delete it with
 * shmq_unlink()). -EINVAL for a relative log_dir, -EPERM for a state or log directory that is
 * not the caller's or that others can write. A log file that exists but cannot be read now
 * fails the rebuild with its error (-EIO, -EMFILE, -ENOMEM, -EACCES) rather than rebuild
 * without its messages; -ENOSPC/-EDQUOT/-EFBIG when /dev/shm or the log's file system has no
 * room for the new segment or the re-logged state (retry once there is: nothing is lost).
 * shmq_open() does this by itself for a missing or corrupt segment whose log the state
 * directory names. rep may be NULL.
 * A macro: shmq_recover_size(name, log_dir, rep, sizeof(shmq_recovery_report_t)) (see "ABI").
 */
int shmq_recover(const char *name, const char *log_dir, shmq_recovery_report_t *rep);
int shmq_recover_size(const char *name, const char *log_dir, shmq_recovery_report_t *rep,
                      size_t size);
#define shmq_recover(name, log_dir, rep)                                                           \
    shmq_recover_size((name), (log_dir), (rep), sizeof(shmq_recovery_report_t))

/**
 * Copy len bytes into a free slot and make it ready. *id (if id is not NULL) gets its id.
 * Returns -EAGAIN when every slot is in use (the queue is full), -EMSGSIZE when
 * len > max_msg_size, -EINVAL for NULL q or NULL data with len > 0. With a log: when its record
 * cannot be written (nothing is queued then) -ENOSPC/-EDQUOT (the log's file system is full),
 * -EFBIG (RLIMIT_FSIZE), -ENOMEM (a log file cannot be mapped), -EACCES/-EROFS, -EBADMSG (the
 * segment's log position is garbage), -EBUSY (another thread of this process stays stopped
 * inside a log write, a debugger's stop or a long flush, while the log moved through 256 files:
 * the files it may still write into stay mapped, and no more are mapped; retry once it goes
 * on); SYNC: -EIO when the flush failed, now or before (the log is
 * then failed until the segment is rebuilt); also, without failing the log, when the flush that
 * covered it has an unknown outcome (its publisher was killed or stopped inside it), and while
 * such a publisher stays stopped: the message IS queued and will be delivered, but it may not
 * survive a crash. SYNC blocks until a flush covers the record (group commit; a publisher
 * stopped or killed inside its flush is taken over, it holds nobody up; only while two are
 * stopped inside their flushes at once does a third wait for one of them). -EIDRM when
 * the queue was rebuilt from its log since this process opened it (shmq_recover(): close and
 * reopen; the message may still be delivered, as the log may hold it).
 * Multi-producer safe; lock-free; no system call unless a consumer sleeps (one FUTEX_WAKE).
 */
int shmq_publish(shmq_t *q, const void *data, size_t len, uint64_t *id);

/**
 * Delayed publish: as shmq_publish(), but the message becomes ready delay_ms from now (0: at
 * once, exactly shmq_publish()). Until then it is DELAYED: no receive gets it, shmq_stats_t and
 * `shmq stat` count it under delayed; once due, maintenance (shmq_maintain(): the watchdog's
 * pass, or with no watchdog a receiving consumer's, which a receive blocked on an empty queue
 * runs at least every third of heartbeat_timeout_ms) makes it ready: it is delivered when due
 * or up to one maintenance period later, never before. With a log its PUBLISH
 * record carries the due time as wall-clock time (CLOCK_REALTIME), so a rebuild from the log
 * (shmq_recover()) restores it DELAYED with what is left of its delay, also after a reboot (a
 * wall clock set forward shortens the delay by as much). A publish that crashed before it
 * returned is, as for shmq_publish(), either not queued or queued with its due time: never
 * early. The delay does not count against max_attempts or the ack deadline.
 * Errors as shmq_publish(). Multi-producer safe; lock-free; no system call (no wake-up: nobody
 * can receive it yet).
 */
int shmq_publish_delayed(shmq_t *q, const void *data, size_t len, uint32_t delay_ms, uint64_t *id);

/** A ready message as shmq_peek() copied it. */
typedef struct shmq_peek_msg {
    uint64_t id;
    uint32_t attempt; /* deliveries so far (0: never delivered; nacked ones count) */
    size_t len;       /* the message's length */
    const void *data; /* its copy, in the caller's buf */
    size_t copied;    /* bytes copied: len, or less when buf ran out (then data holds the
                       * first copied bytes) */
} shmq_peek_msg_t;

/** The headers of a message shmq_peek_headers() copied (beside its shmq_peek_msg_t). */
typedef struct shmq_peek_headers {
    const void *block; /* its header block, copied into buf right after its data (decode it
                        * with shmq_headers_decode()); NULL when it has none, or when buf ran
                        * out before the whole block (copied < len, or no room left for it) */
    size_t len;        /* the block's bytes; 0 when block is NULL */
} shmq_peek_headers_t;

/**
 * Browse: copy up to max ready messages, lowest id first, into out[] and their bytes into buf
 * (buf_size bytes; each message's copy follows the previous one's), without taking them: no
 * attempt is spent, no consumer is delayed, nothing is logged. *n gets how many were copied.
 * Each copy is of one message as it was ready at some instant of the call (a slot taken or
 * reused while it was copied is skipped), but the set is no snapshot: messages received,
 * published or made due meanwhile may or may not be in it. In-flight, delayed and dead messages
 * are not shown (dead ones: shmq_dlq_list()), nor ready ones past their expiry (no receive
 * delivers them: README "Expiry"). -EINVAL for NULL q or n, or out NULL with max > 0,
 * or buf NULL with buf_size > 0; -ENOMEM if a scratch array of capacity entries cannot be
 * allocated. A scan of the slots (and a sort of the ready ones): not for the fast path. Safe
 * alongside any other call; read-only on the segment.
 */
int shmq_peek(shmq_t *q, shmq_peek_msg_t *out, size_t max, void *buf, size_t buf_size, size_t *n);

/**
 * shmq_peek() that also copies each message's headers: hdrs[i] (max entries, parallel to out)
 * gets the header block of out[i], copied into buf right after its data, under the same check
 * that the copy is untorn. A new call rather than fields of shmq_peek_msg_t: structs passed as
 * arrays never grow ("ABI"). hdrs NULL: shmq_peek(). Errors as shmq_peek().
 */
int shmq_peek_headers(shmq_t *q, shmq_peek_msg_t *out, shmq_peek_headers_t *hdrs, size_t max,
                      void *buf, size_t buf_size, size_t *n);

/**
 * shmq_peek_headers() of consumer group `group` (NULL: "default", as shmq_peek()): the messages
 * ready for that group (each group has its own view of a message: ready in one, in flight or
 * acked in another), attempt counting that group's deliveries. hdrs may be NULL. Errors as
 * shmq_peek(), and -ENOENT when no group of that name exists (or it is being deleted).
 */
int shmq_peek_group(shmq_t *q, const char *group, shmq_peek_msg_t *out,
                    shmq_peek_headers_t *hdrs, size_t max, void *buf, size_t buf_size, size_t *n);

/** shmq_purge() flags. */
#define SHMQ_PURGE_DELAYED                                                                         \
    1u /* also drop the delayed messages (nacked with a delay, or published                        \
        * with one), not only the ready ones */

/**
 * Drop every ready message of the queue (with SHMQ_PURGE_DELAYED, every delayed one too); *count
 * (may be NULL) gets how many were dropped. In-flight messages are left to their consumers (an
 * ack or nack of theirs works as usual, and a nacked one comes back after the purge); reserved
 * slots and dead letters (shmq_dlq_purge()) are not touched. Purge takes each message through the
 * same compare-and-swap a receive makes, so a message is either delivered or purged, never both.
 * It looks at the messages present when it starts: one published, nacked or made due while it
 * runs may be dropped or not. A ready message in no ring (left so by a crash, re-queued by the
 * next maintenance pass) is not seen. Each dropped message is logged as acked, so a rebuild from
 * the log does not bring it back (a purger killed between a drop and its record: that one may
 * come back after a segment loss). A message taken back from a hung consumer while it is moved
 * to another slot counts as in flight, not delayed. Returns -EINVAL for NULL q or an unknown
 * flag, -ENOMEM (SHMQ_PURGE_DELAYED: a scratch array of one id per slot cannot be allocated;
 * no delayed one is dropped then), -EIDRM when the queue was rebuilt from its log (reopen;
 * messages dropped before are dropped). A log record that cannot be written does not fail it
 * (counted in shmq_stats_t.wal_errors).
 * Safe alongside any publish, receive, maintenance or other purge; lock-free; two scans of the
 * slots and one allocation with SHMQ_PURGE_DELAYED, no system call unless a producer sleeps on
 * a full queue (or the allocation makes one).
 */
int shmq_purge(shmq_t *q, unsigned flags, uint32_t *count);

/**
 * shmq_purge() of consumer group `group` (NULL: "default", as shmq_purge()): the messages ready
 * (and with SHMQ_PURGE_DELAYED, delayed) for that group are dropped from it as if that group
 * had acked them; the other groups keep theirs, and a slot is freed once no group holds its
 * message. Errors as shmq_purge(), and -ENOENT when no group of that name exists (or it is being
 * deleted). With a log, each purged message is an ACK record of that group, so a rebuild does
 * not bring it back to that group.
 */
int shmq_purge_group(shmq_t *q, const char *group, unsigned flags, uint32_t *count);

/**
 * Idempotent publish: as shmq_publish(), with a dedup key (1..SHMQ_DEDUP_KEY_MAX bytes). Within
 * the queue's dedup window (about the last dedup_window_count keys, each for dedup_window_ms),
 * a second publish with the same key enqueues nothing and returns 0 with *id set to the first
 * one's id — also when the first publisher was killed after its publish and a restarted one
 * retries. Keys are compared by a 128-bit hash of their bytes. The window is a table of 4
 * buckets per key in sets of 4, each set forgetting its oldest key first: fewer than 1 key in
 * 100 is forgotten before dedup_window_count newer ones came (about 1 in 250 measured). Returns -EINPROGRESS when a
 * publish with the same key is under way in a live process or thread (retry later), -ESTALE if
 * this process was taken for dead meanwhile, -ENOTSUP when the queue has no dedup window,
 * -EINVAL for a bad key, else as shmq_publish(). Lock-free; costs a hash and a look at one set
 * (4 cache lines) on top of a publish; publishes without a key pay nothing.
 */
int shmq_publish_dedup(shmq_t *q, const void *data, size_t len, const void *key, size_t key_len,
                       uint64_t *id);

/** One header of a message: a key and a value, each with its length (no NUL needed). The key:
 *  1..SHMQ_HEADER_KEY_MAX bytes, printable ASCII (0x21..0x7e) but ':' and '='; the value:
 *  0..65535 bytes without NUL, CR or LF (so headers map to NATS/HTTP headers, print as lines and
 *  parse from `k=v`). Keys are compared as bytes (case matters); a key may repeat. Received
 *  headers (shmq_msg_headers) point into the message's slot, each key and value followed by a
 *  NUL (so both may be used as C strings). Encoded in a message, one header takes
 *  SHMQ_HEADER_SIZE(key_len, value_len) bytes (docs/FORMAT.md, "Header block"). */
typedef struct shmq_header {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} shmq_header_t;

#define SHMQ_HEADER_KEY_MAX 255u

/** A header from two NUL-terminated strings, for an initializer: SHMQ_HEADER_STR("k", "v")
 *  (needs <string.h>). */
#define SHMQ_HEADER_STR(k, v) {(k), strlen(k), (v), strlen(v)}

/**
 * Options of one publish (shmq_publish_ex). Fill it with shmq_pub_opts_init(), then set what you
 * need: size says which fields the caller knows, so the struct can grow at its end and a
 * program built against an older shmq.h keeps working (the fields past its size read as 0).
 */
typedef struct shmq_pub_opts {
    uint32_t size;                 /* sizeof(shmq_pub_opts_t) as compiled: set by _init() */
    uint32_t delay_ms;             /* > 0: a delayed publish (shmq_publish_delayed) */
    const shmq_header_t *headers;  /* n_headers headers (shmq_header_t), copied into the slot */
    uint32_t n_headers;
    const void *dedup_key;         /* non-NULL: a keyed publish (shmq_publish_dedup) */
    size_t dedup_key_len;
    uint32_t ttl_ms;               /* > 0: this message's time to live, instead of the queue's
                                    * default_ttl_ms (longer or shorter); 0: the queue's. Counted
                                    * from the publish, also for a delayed one (README "Expiry") */
    uint32_t reserved_1;           /* 0 (the struct grows in 8-byte words) */
    /* later fields go here, in whole 8-byte words (src/abi.c): no tail padding */
} shmq_pub_opts_t;

/** Bytes one header takes in a message's header block, the figure summed against the queue's
 *  max_header_bytes. */
#define SHMQ_HEADER_SIZE(key_len, value_len) ((key_len) + (value_len) + 5u)

/** Fill *opts with no option set, and opts->size with the size of the caller's struct (a
 *  macro: shmq_pub_opts_init_size(opts, sizeof(shmq_pub_opts_t)); see "ABI"). Returns 0;
 *  -EINVAL for NULL or a size shmq does not know (nothing written). */
void shmq_pub_opts_init(shmq_pub_opts_t *opts);
int shmq_pub_opts_init_size(shmq_pub_opts_t *opts, size_t size);
#define shmq_pub_opts_init(opts) shmq_pub_opts_init_size((opts), sizeof(shmq_pub_opts_t))

/**
 * Publish with options: as shmq_publish() with opts NULL or with none set; with delay_ms as
 * shmq_publish_delayed(); with dedup_key as shmq_publish_dedup() (every guarantee and error of
 * those calls holds). With headers, the message carries them: they are copied into its slot
 * beside the payload, logged in its PUBLISH record (so a rebuild from the log, replay and peek
 * return them), and read zero-copy on receive (shmq_msg_headers()).
 * With ttl_ms, the message expires ttl_ms after this call unless delivered before (README
 * "Expiry"; on any queue, whatever its default_ttl_ms).
 * Returns their errors, and -EINVAL for a size shmq does not know (smaller than the first
 * version of this struct, the fields up to dedup_key_len, or larger than this library's: a
 * newer caller's options it would ignore), for NULL headers with n_headers > 0, or for a header
 * whose key or value breaks the rules of shmq_header_t; -EMSGSIZE when the headers need more
 * than the queue's max_header_bytes (SHMQ_HEADER_SIZE() each) or are more than its max_headers
 * (for both and for a bad header, shmq_last_error_detail() says which and why); -ENOTSUP for a
 * dedup key together with a delay (not supported: a keyed publish is decided when it becomes
 * ready) or for headers on a queue without them (max_header_bytes 0).
 * Multi-producer safe; lock-free; costs what the options it uses cost.
 */
int shmq_publish_ex(shmq_t *q, const void *data, size_t len, const shmq_pub_opts_t *opts,
                    uint64_t *id);

/** As shmq_publish(), but waits up to timeout_ms (-1: forever) for a free slot: -ETIMEDOUT
 *  (timeout_ms 0 does not wait: -EAGAIN, as shmq_publish()). */
int shmq_publish_timed(shmq_t *q, const void *data, size_t len, uint64_t *id, int timeout_ms);

/**
 * Zero-copy publish, step 1: reserve a slot able to hold len bytes; *buf points into it.
 * Write the payload there, then shmq_commit() (or shmq_cancel()). Errors as shmq_publish().
 * A reservation of a process that dies is freed by maintenance; one of a live process is kept.
 */
int shmq_reserve(shmq_t *q, size_t len, void **buf);

/** Zero-copy publish, step 2: make the reserved buf (len <= reserved size) ready. -EINVAL for a
 *  buf that is not a reservation of q, -EMSGSIZE for len beyond max_msg_size. */
int shmq_commit(shmq_t *q, void *buf, size_t len, uint64_t *id);

/** Give a reservation back unpublished. -EINVAL for a buf that is not a reservation of q. */
int shmq_cancel(shmq_t *q, void *buf);

/** One message of a batch (shmq_publish_batch): len bytes at data. */
typedef struct shmq_iov {
    const void *data;
    size_t len;
} shmq_iov_t;

/**
 * Batch publish: publish msgs[0..n) in order, as n calls of shmq_publish() would, for less:
 * one clock read, one id block (ids[i] = ids[0] + i within each run of up to 64 messages; ids
 * stay unique and increasing per queue), one wake-up of sleeping consumers after the whole
 * batch, and with a log one record reservation for a run of records (each record still its
 * own, with its own crc: recovery and replay see n PUBLISH records). Free-slot and ready-ring
 * operations stay one per message. ids (may be NULL) gets n ids; done (may be NULL) gets how
 * many were published.
 * Partial success: the messages published are always a prefix, msgs[0..*done), in that order,
 * with ids[0..*done) set; msgs[*done..n) were not published (none of them is delivered, none is
 * in the log's replay) and may be published again. Returns 0 with *done == n, or the error that
 * stopped the batch at msgs[*done]:
 *   -EAGAIN: the queue filled up (the first *done are published; retry the rest);
 *   -EINVAL, -EMSGSIZE: a bad argument or message; checked before anything is published, so
 *     *done is 0;
 *   the log errors of shmq_publish() (-ENOSPC, -EDQUOT, -EFBIG, -ENOMEM, -EACCES, -EROFS,
 *     -EBADMSG): the records of msgs[*done..] could not be written, nothing of them is queued;
 *   -ESTALE: this process was taken for dead while it held the reservations (nothing from
 *     msgs[*done] on is queued); -EIDRM: as shmq_publish(), the queue was rebuilt: msgs[*done..]
 *     are not queued here, though the rebuilt queue may deliver some of them;
 *   SYNC: -EIO as shmq_publish(): msgs[0..*done) are queued but the flush that covers them
 *     failed (or its outcome is unknown). -EIO wins over the error that stopped the batch: with
 *     *done < n, msgs[*done..n) were not published (the queue filled up, or a log error), as
 *     for that error. One flush covers the whole batch, also when it stopped early; the call
 *     returns when it is on stable storage.
 * Each message keeps every guarantee of shmq_publish(): a publish reported done survives what
 * its durability mode says (a crash inside the call leaves each message of the batch either not
 * queued or queued, independently: at least once, never a half message); dedup keys are not
 * involved (use shmq_publish_dedup for keyed messages); delivery order is ids' order.
 * Multi-producer safe; lock-free; no system call unless a consumer sleeps (one FUTEX_WAKE for
 * the batch) or SYNC flushes.
 */
int shmq_publish_batch(shmq_t *q, const shmq_iov_t *msgs, size_t n, uint64_t *ids, size_t *done);

/*
 * Consumer groups (fan-out): README "Fan-out". A queue holds up to max_groups groups (a
 * create-time setting); it is created with one, "default" (index 0), which shmq_consumer_open()
 * joins. Each message published while a group exists is delivered at least once to that group;
 * the consumers of one group compete for its messages as today. The payload is written once and
 * every group's consumers receive the same zero-copy pointer; its slot is free again when every
 * group it was published to is done with it.
 */
#define SHMQ_GROUP_BLOCK 0u   /* a slow group keeps its messages: publishers see a full queue */
#define SHMQ_GROUP_OVERRUN 1u /* a group holding more than its bound loses its oldest ready ones */

/** One group as shmq_group_list() shows it (passed as an array: never changes, see "ABI"). */
typedef struct shmq_group_info {
    uint32_t index;      /* 0 .. max_groups-1; "default" is created as 0 */
    uint32_t policy;     /* SHMQ_GROUP_BLOCK or SHMQ_GROUP_OVERRUN */
    uint32_t bound;      /* OVERRUN: messages it may hold; 0 with BLOCK */
    uint32_t deleting;   /* 1 while a delete releases what it held */
    uint64_t first_id;   /* the queue's next id when it was created: it receives from about here */
    uint64_t held;       /* messages it held at the last maintenance pass */
    uint64_t overrun;    /* messages the OVERRUN policy dropped */
    char name[SHMQ_GROUP_NAME_MAX + 1];
    uint64_t reserved[4];
} shmq_group_info_t;

/**
 * Create consumer group name (policy SHMQ_GROUP_*, bound: OVERRUN's message bound, >= 1; 0
 * with BLOCK). It receives the messages published from now on (not the ones already in the
 * queue). -EEXIST (a group of that name exists), -ENOSPC (max_groups groups exist), -EINVAL
 * (bad name, policy or bound), -EIDRM (the queue was rebuilt: reopen).
 */
int shmq_group_create(shmq_t *q, const char *name, uint32_t policy, uint32_t bound);

/**
 * Delete consumer group name: it receives nothing more, and every message it held is released
 * (its slot freed once no other group holds it); its consumers get -ENOENT from their next
 * receive (one asleep in a blocking receive is woken for it), and acks of what they hold still
 * work. -ENOENT (no such group), -EIDRM.
 */
int shmq_group_delete(shmq_t *q, const char *name);

/** The groups of q, by index, into out[0..*n) (at most max). 0 or -EINVAL. */
int shmq_group_list(shmq_t *q, shmq_group_info_t *out, size_t max, size_t *n);

/**
 * Attach a consumer named name to q.
 * -EUSERS when the registry is full, -EXDEV as shmq_open, -EINVAL for NULL arguments.
 */
int shmq_consumer_open(shmq_t *q, const char *name, shmq_consumer_t **c);

/**
 * Attach a consumer named name to q in consumer group group (NULL: "default", index 0, as
 * shmq_consumer_open()). It receives the group's messages, competing with the group's other
 * consumers; its acks, nacks, retries and dead letters are the group's alone. -ENOENT (no such
 * group), and the errors of shmq_consumer_open(). When the group is deleted, receive returns
 * -ENOENT.
 */
int shmq_consumer_open_group(shmq_t *q, const char *group, const char *name, shmq_consumer_t **c);

/**
 * Take the next ready message. timeout_ms: 0 poll, -1 forever, else a bound.
 * Returns -EAGAIN (poll) or -ETIMEDOUT when nothing came, -EINTR if a signal interrupted the
 * sleep, -ESTALE if this consumer was declared dead (it must close and reopen), -EIDRM if the
 * queue was rebuilt from its log (shmq_recover(): close and reopen).
 * Spins briefly, then sleeps on a futex in shm. Refreshes the consumer's heartbeat. Asleep, it
 * is a cancellation point (pthread_cancel: the thread ends, nothing taken; see the top of this
 * header, "Threads and cancellation").
 */
int shmq_receive(shmq_consumer_t *c, shmq_msg_t *msg, int timeout_ms);

/**
 * The headers of a message this consumer received (shmq_receive, shmq_receive_batch), read in
 * place: out[i].key and .value point into the message's slot (zero-copy, each followed by a
 * NUL), valid as msg->data is, until the message is acked or nacked. Fills out[0..min(max, *n))
 * in the order they were published; *n gets how many the message has (0: none; more than max:
 * call again with a larger out; the queue's max_headers is always enough). A call, not a field
 * of shmq_msg_t: that struct cannot grow (arrays of it are passed by programs built against
 * this header), and an array filled once serves lookups by key as well as an iterator would.
 * Returns -EINVAL for NULL c, msg or n, out NULL with max > 0, or a token that names no slot;
 * -EBADMSG when the slot's header block is corrupt (nothing is read beyond the block).
 * Safe in the thread that owns c; no system call, no allocation, no write to shared memory.
 */
int shmq_msg_headers(shmq_consumer_t *c, const shmq_msg_t *msg, shmq_header_t *out, size_t max,
                     size_t *n);

/**
 * Decode a header block as shmq_peek_headers() copies one (shmq_peek_headers_t.block), as
 * shmq_msg_headers() does, the pointers into block. -EINVAL for NULL n, out NULL with max > 0,
 * or block NULL with len > 0; -EBADMSG for bytes that are not a header block. Pure: no system
 * call.
 */
int shmq_headers_decode(const void *block, size_t len, shmq_header_t *out, size_t max,
                        size_t *n);

/**
 * Batch receive: take up to max ready messages into msgs[0..*got), in ring order, each exactly
 * as shmq_receive() delivers one (zero-copy, its own token, attempt and ack deadline). It
 * blocks as shmq_receive() does (timeout_ms: 0 poll, -1 forever, else a bound; spins, then
 * sleeps on the futex) until at least one message is ready, then takes what is ready, up to
 * max, without blocking again. One fence and generation check, one clock read and one heartbeat
 * per call (and per wake-up), not per message.
 * Returns 0 with 1 <= *got <= max; or, with *got == 0, the errors of shmq_receive() (-EAGAIN,
 * -ETIMEDOUT, -EINTR, -ESTALE, -EIDRM) and -EINVAL for NULL arguments or max == 0. A fence or
 * rebuild noticed after the first message was taken ends the batch there with 0 (the messages
 * taken are delivered as by shmq_receive(); their acks say -ESTALE/-EIDRM if they were taken
 * back), and the next call returns the error.
 */
int shmq_receive_batch(shmq_consumer_t *c, shmq_msg_t *msgs, size_t max, size_t *got,
                       int timeout_ms);

/**
 * Batch ack: acknowledge msgs[0..n) as n calls of shmq_ack() would, each on its own: a message
 * that cannot be acked does not stop the others. No clock read (its acks are its sign of life,
 * as shmq_ack()'s: shmq_maintain(), "The liveness rule"), and with a log one
 * record reservation for the ACK records of up to 64 messages (each its own record).
 * *done (may be NULL) gets how many were acked. Returns 0 when all n were (*done == n); else
 * -EIDRM when the queue was rebuilt meanwhile (as shmq_ack(): the acks may or may not count);
 * else the error of the first message that was not acked (-ESTALE: already acked, or fenced and
 * its message redelivered; -EINVAL: a token that names no slot), and every other message of the
 * batch was still acked unless it failed too (*done < n counts the ones that did). A stale ack
 * needs no action (acking it again gives -ESTALE again); to know which failed, ack one by one.
 * A log that fails does not fail the acks (as shmq_ack()). -EINVAL for NULL c, or NULL msgs
 * with n > 0 (nothing acked).
 */
int shmq_ack_batch(shmq_consumer_t *c, const shmq_msg_t *msgs, size_t n, size_t *done);

/** Acknowledge msg: its slot becomes free. -ESTALE when the delivery was already acked or
 *  fenced (its consumer was declared dead or hung and the message redelivered), -EINVAL for a token that names no slot,
 *  -EIDRM when the queue was rebuilt meanwhile (reopen; the ack may or may not count: the
 *  rebuilt queue may deliver the message again). nack and extend return -EIDRM alike.
 *  A log that fails does not fail the ack: when the ACK record cannot be written (-ENOSPC,
 *  -EDQUOT, -EACCES, -EROFS, -ENOMEM, -EIO from the log; the file system full, ...) the ack
 *  still returns 0, because it is done in the segment: the slot is free and the message is
 *  not delivered again while the segment lives. The failed record is counted: wal_errors + 1
 *  and wal_healthy 0 in shmq_stats_t until a log write succeeds again (the watchdog's
 *  shmq_wal_errors_total and shmq_wal_healthy metrics and its log_error line). The only
 *  consequence is at the next segment loss: the rebuild from the log lacks that ACK, so the
 *  message comes back once more if the log still holds its PUBLISH record (at least once, as
 *  for an ack killed before its record). */
int shmq_ack(shmq_consumer_t *c, const shmq_msg_t *msg);

/**
 * Give msg back for redelivery after delay_ms (0: the queue's backoff policy for its attempt:
 * d = backoff_base_ms * backoff_multiplier^(attempt-1), capped at backoff_cap_ms, then a uniform
 * pick in [d/2, d] so that retries of many messages spread out).
 * A message that has reached max_attempts goes to the dead-letter ring instead.
 * Delayed messages become ready when due through maintenance (shmq_maintain()).
 * Errors as shmq_ack().
 */
int shmq_nack(shmq_consumer_t *c, const shmq_msg_t *msg, uint32_t delay_ms);

/** Move msg's ack deadline to now + ms (0: the queue's ack_deadline_ms). Errors as ack. */
int shmq_extend(shmq_consumer_t *c, const shmq_msg_t *msg, uint32_t ms);

/** Detach the consumer; its unacked messages go back to the queue at once. */
int shmq_consumer_close(shmq_consumer_t *c);

/**
 * Keep the consumer's heartbeat fresh from a helper thread every interval_ms (0: a third of the
 * heartbeat timeout in use at each beat, which shmq_set_config() may change), so a long handler
 * does not look hung. Stopped by shmq_consumer_close().
 */
int shmq_consumer_heartbeat_thread(shmq_consumer_t *c, uint32_t interval_ms);

/** Text for an error returned by shmq (negative errno); never NULL. */
const char *shmq_strerror(int err);

/**
 * What shmq_strerror() cannot say about this thread's last refused argument: which config field
 * shmq_create() refused and its limit ("capacity 0 is outside 1..4194304 (SHMQ_CAPACITY_MAX)"),
 * a config too large as a whole ("the segment would be N bytes, above the limit M
 * (SHMQ_SEGMENT_MAX): ..."), a config size shmq does not know. "" when there is nothing to add.
 * shmq_create() clears it when it starts, so read it right after the call that failed. Per
 * thread (another thread's calls never change it); never NULL; valid until this thread's next
 * shmq call.
 */
const char *shmq_last_error_detail(void);

/** The version of the library running, "MAJOR.MINOR.PATCH": SHMQ_VERSION_STRING of the
 *  headers it was built from, which may differ from the headers a program was compiled with. */
const char *shmq_version(void);

/** The same as one number, SHMQ_VERSION_ENCODE(MAJOR, MINOR, PATCH) (shmq/version.h). */
uint32_t shmq_version_number(void);

/** The queue's configuration as stored in its segment (log_dir NULL): the settings
 *  shmq_set_config() changes as they are in use now, the rest as created; cfg->size is set. A
 *  macro: shmq_get_config_size(q, cfg, sizeof(shmq_config_t)) (see "ABI"). */
int shmq_get_config(const shmq_t *q, shmq_config_t *cfg);
int shmq_get_config_size(const shmq_t *q, shmq_config_t *cfg, size_t size);
#define shmq_get_config(q, cfg) shmq_get_config_size((q), (cfg), sizeof(shmq_config_t))

/** Fields of shmq_config_t, for shmq_set_config()'s `fields`. The ones that may change: */
#define SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS (1u << 0)
#define SHMQ_CONFIG_ACK_DEADLINE_MS (1u << 1)
#define SHMQ_CONFIG_MAX_ATTEMPTS (1u << 2)
#define SHMQ_CONFIG_BACKOFF_BASE_MS (1u << 3)
#define SHMQ_CONFIG_BACKOFF_CAP_MS (1u << 4)
#define SHMQ_CONFIG_BACKOFF_MULTIPLIER (1u << 5)
#define SHMQ_CONFIG_DEFAULT_TTL_MS (1u << 6)
#define SHMQ_CONFIG_CHANGEABLE 0x0480007fu /* every field above, with the two below */
/** The ones fixed at create (they shape the segment or the log): always -EINVAL. To change
 *  them, make a new queue and move the messages (README "Changing settings"). */
#define SHMQ_CONFIG_CAPACITY (1u << 16)
#define SHMQ_CONFIG_MAX_MSG_SIZE (1u << 17)
#define SHMQ_CONFIG_MAX_PROCS (1u << 18)
#define SHMQ_CONFIG_MODE (1u << 19)
#define SHMQ_CONFIG_DURABILITY (1u << 20)
#define SHMQ_CONFIG_LOG_DIR (1u << 21)
#define SHMQ_CONFIG_WAL_FILE_SIZE (1u << 22)
#define SHMQ_CONFIG_LOG_RETENTION_BYTES (1u << 23) /* changeable */
#define SHMQ_CONFIG_DEDUP_WINDOW_COUNT (1u << 24)
#define SHMQ_CONFIG_DEDUP_WINDOW_MS (1u << 25)
#define SHMQ_CONFIG_EXPIRE_POLICY (1u << 26) /* changeable */

/**
 * Change settings of a running queue: the fields of *cfg that `fields` names (SHMQ_CONFIG_*
 * bits; the others are not read), as shmq_get_config() then shows. Typical use: fill a config
 * with shmq_config_init() or shmq_get_config(), set what changes, name it in fields.
 * Changeable: heartbeat_timeout_ms, ack_deadline_ms, max_attempts, backoff_base_ms,
 * backoff_cap_ms, backoff_multiplier, default_ttl_ms, expire_policy, log_retention_bytes
 * (SHMQ_CONFIG_CHANGEABLE). Every other field
 * shapes the segment or its log and stays as created: naming one is -EINVAL, nothing changed. When
 * each change takes effect, for every process of the queue at once:
 *  - ack_deadline_ms: deliveries made after the change (one in flight keeps its deadline);
 *    shmq_extend(…, 0) uses the new one;
 *  - max_attempts: the next nack or take-back of each message (one that has had the new
 *    maximum goes to the dead letters then, not before);
 *  - backoff_*: nacks after the change;
 *  - default_ttl_ms: messages published after the change (a message keeps the expiry it was
 *    published with);
 *  - expire_policy: expiries from then on (a message expired before stays dropped or dead);
 *  - log_retention_bytes: maintenance's next pass (lowered: older acked history is deleted
 *    then, and replay no longer finds it; raised: history from then on is kept longer);
 *  - heartbeat_timeout_ms: maintenance's liveness rule, blocked receives and heartbeat threads
 *    (interval 0) follow it within a few sleeps; a LOWERED timeout counts for liveness only
 *    after twice the old one, so no consumer still sleeping at the old pace is fenced.
 * Each setting is one word: a concurrent reader sees its old or its new value; two settings
 * changed in one call may be seen one changed and the other not for an instant (docs/DESIGN.md,
 * "Settings that change"). Two calls at once on different settings both take effect; on the
 * same one, one of them.
 * With a log, the change is logged (a CONFIG record) before the call returns (SYNC: flushed),
 * so a rebuild from the log (shmq_recover(), shmq_open() after a segment loss) keeps it; the
 * rebuilt segment starts with the settings in use.
 * Returns 0; -EINVAL (shmq_last_error_detail() names the field and why) for NULL q or cfg,
 * fields 0 or naming a field that is not changeable, a
 * cfg->size shmq does not know, or a value outside shmq_create()'s limits (heartbeat timeout,
 * ack deadline and max_attempts >= 1; backoff_base_ms <= backoff_cap_ms, with the unchanged
 * one as it is; 1.0 <= multiplier <= 1000): nothing changed then; -EIDRM when the queue was
 * rebuilt from its log since q was opened (reopen; nothing changed); SHMQ_CONFIG_DEFAULT_TTL_MS
 * or SHMQ_CONFIG_EXPIRE_POLICY with a cfg->size from headers older than that field: -EINVAL;
 * an expire_policy that is not a SHMQ_EXPIRE_*: -EINVAL. With a log, when the
 * CONFIG record cannot be written: the append's error (-ENOSPC, -EDQUOT, -EFBIG, -EIO, ... as
 * shmq_publish(), or -EIDRM when the queue was rebuilt meanwhile): the change IS in effect in
 * this segment, but a rebuild from the log may not keep it; call again once the log works.
 * Any thread or process; lock-free (stores and one atomic add); with a log, one append (no
 * system call unless it starts a log file; SYNC: blocks for the flush).
 */
int shmq_set_config(shmq_t *q, const shmq_config_t *cfg, uint32_t fields);

/** Counters summed over every process that ever attached. */
typedef struct shmq_stats {
    uint64_t published, delivered, acked, nacked, redelivered, dead_lettered, reclaimed;
    uint64_t dedup_hits;      /* keyed publishes answered from the dedup window */
    uint64_t wal_bytes;       /* log bytes appended since the segment was made */
    uint64_t wal_flushes;     /* fdatasync calls (SYNC mode: far fewer than publishes) */
    uint32_t wal_files;       /* log files on disk now */
    uint32_t ready, inflight, delayed, reserved, dead, free; /* slot counts by state, now */
    uint32_t consumers, procs;                               /* live registry entries */
    int64_t oldest_age_ms;    /* age since publish of the oldest message not yet acked (ready,
                               * delayed or in flight); -1 when there is none */
    /* The log's health (0 / 1 / 0 without a log). A failed write (file system full, EIO, a
     * limit) is returned to the publish that made it, or, for an ACK/NACK/DEAD record whose
     * state change already happened, only counted here. */
    uint64_t wal_errors;      /* log writes (appends, file creation) and flushes that failed */
    int32_t wal_last_error;   /* -errno of the last failed log write; 0 once a later one worked */
    uint32_t wal_healthy;     /* 1: the last log write worked and no flush ever failed; 0 when
                               * not (a failed flush is sticky: SYNC publishes return -EIO until
                               * the segment is rebuilt from the log); 1 without a log */
    uint32_t wal_flush_failed;/* 1: an fdatasync of the log failed (sticky, as above) */
    /* Slots held back for a live process that was fenced (hung) while it held them: FENCED, or
     * in use again with that former reader still named. Their messages were redelivered (copied
     * out when needed); the slot itself comes back when the process lets go (acks, nacks,
     * closes) or dies. A value that keeps growing means hung but living consumers are eating
     * the queue's capacity: find and restart them (`shmq stat` lists them). */
    uint32_t pinned;
    /* What the rebuild from the log that made this segment (shmq_open() or shmq_recover() after
     * a segment loss) read past; 0 for a segment made by shmq_create(). recovered_holes: holes
     * (zeros, appends cut before their crc: a failed or killed append, or lost records: nothing
     * is left to tell them apart; shmq_recovery_report_t.holes); recovered_bad_regions: the
     * other corrupt regions (garbage, unreadable files: damage). Non-zero: run `shmq wal NAME
     * inspect` on the log and compare what came back with what was expected. */
    uint32_t recovered_holes;
    uint32_t recovered_bad_regions;
    /* Messages that expired (their time to live passed before a delivery) since the segment
     * was made, dropped or dead-lettered as expire_policy says (dead-lettered ones count in
     * dead_lettered too); a rebuild from the log counts the ones that expired while the
     * segment was gone. */
    uint64_t expired;
} shmq_stats_t;

/** Read the counters and count slots by state (a scan of the slots: not for the fast path).
 *  A macro: shmq_stats_size(q, st, sizeof(shmq_stats_t)) (see "ABI"). */
int shmq_stats(shmq_t *q, shmq_stats_t *st);
int shmq_stats_size(shmq_t *q, shmq_stats_t *st, size_t size);
#define shmq_stats(q, st) shmq_stats_size((q), (st), sizeof(shmq_stats_t))

/** One consumer group's messages now (shmq_group_stats()). Grows at its end ("ABI"). */
typedef struct shmq_group_stats {
    uint32_t index;          /* 0 .. max_groups-1 ("default" is 0) */
    uint32_t ready, inflight, delayed, dead; /* the group's messages by state, now */
    uint32_t reserved_0;
    uint64_t held;           /* ready + inflight + delayed + dead: the slots it keeps */
    uint64_t lag;            /* how far it is behind the newest publish, in messages: the
                              * queue's last id - the lowest id it holds ready, delayed or in
                              * flight + 1 (the ids published since the oldest message it has
                              * not finished); 0 when it holds none (dead letters not counted) */
    int64_t oldest_age_ms;   /* age since publish of that oldest message; -1 when none */
    uint64_t overrun;        /* messages the OVERRUN policy dropped from it */
    uint64_t newest_id;      /* the queue's last id handed out (lag's reference) */
    uint64_t first_id;       /* the queue's next id when the group was created */
    char name[SHMQ_GROUP_NAME_MAX + 1];
    /* The group's consumers' counters (shmq_consumer_stats()) summed: its attached consumers'
     * and those of its consumers that closed or were released since it was created. A consumer
     * whose group was deleted counts in no group (nor in one made again under its name). */
    uint64_t delivered, acked, nacked;
    uint32_t consumers;      /* consumers attached in the group now */
    uint32_t reserved_1;
} shmq_group_stats_t;

/**
 * The messages of consumer group `group` (NULL: "default") by state, and its lag (see
 * shmq_group_stats_t): a scan of the group's cells (O(capacity); not for the fast path), each
 * read once, so a picture of roughly one instant. The same counts as shmq_stats_t's for a
 * queue with one group. -EINVAL (NULL q or st, a size it does not know), -ENOENT (no group of
 * that name, or it is being deleted), -EIDRM (the queue was rebuilt: reopen).
 * A macro: shmq_group_stats_size(q, group, st, sizeof(shmq_group_stats_t)) (see "ABI").
 */
int shmq_group_stats(shmq_t *q, const char *group, shmq_group_stats_t *st);
int shmq_group_stats_size(shmq_t *q, const char *group, shmq_group_stats_t *st, size_t size);
#define shmq_group_stats(q, group, st)                                                             \
    shmq_group_stats_size((q), (group), (st), sizeof(shmq_group_stats_t))

/** What one maintenance step did. */
#define SHMQ_MAINT_DEAD_PIDS 8 /* pids a maintenance report names (shmq_maint_report_t) */
typedef struct shmq_maint_report {
    uint32_t procs_dead;        /* registry entries of dead processes (pid gone or reused),
                                 * fenced; a consumer process has two: its queue handle's and
                                 * its consumer's */
    uint32_t procs_hung;        /* live consumers fenced for a stale heartbeat (see below) */
    uint32_t reclaimed;         /* in-flight messages of dead consumers made ready again */
    uint32_t deadline_expired;  /* in-flight messages past their ack deadline made ready again */
    uint32_t orphans_requeued;  /* ready or free slots that no ring held, re-enqueued */
    uint32_t reservations_freed;/* slots reserved by dead producers, freed */
    uint32_t delayed_fired;     /* delayed messages that became ready */
    uint32_t dead_lettered;     /* messages moved to the dead-letter ring */
    uint32_t fenced_released;   /* slots a fenced process held back, freed once it let go */
    uint32_t checkpointed;      /* long-lived messages logged again so old log files can go */
    uint32_t copied_out;        /* messages taken back from a second live holder, moved to
                                 * another slot (the first still lingers in theirs) */
    uint32_t pinned;            /* slots that live former holders may still read: FENCED, or
                                 * in use with a lingering reader (a gauge, now) */
    uint32_t expired;           /* ready or delayed messages past their expiry, dropped or
                                 * dead-lettered (expire_policy) */
    uint32_t dead_pids_n;       /* how many of dead_pids are set */
    int32_t dead_pids[SHMQ_MAINT_DEAD_PIDS]; /* the processes whose entries this pass fenced as
                                 * dead (procs_dead), each once, the first SHMQ_MAINT_DEAD_PIDS
                                 * of them: who died, told apart from a process that detached
                                 * cleanly meanwhile (the watchdog's consumer_died) */
} shmq_maint_report_t;

/**
 * One maintenance step: reclaim what dead or late processes hold, repair half-done operations,
 * fire due delayed messages. Idempotent; safe to run from several processes at once.
 * Scans every slot and registry entry: O(capacity + max_procs); makes system calls.
 * report may be NULL. -EIDRM when the queue was rebuilt from its log since q was opened: a
 * process holding the old segment maintains nothing and deletes no log file (reopen).
 *
 * The liveness rule. A process is dead when its pid is gone or was reused (start time differs):
 * what it held is taken back at once. A consumer whose pid lives is hung when its heartbeat is
 * older than heartbeat_timeout_ms and it is stopped or traced (/proc state T or t), or older
 * than 3 x heartbeat_timeout_ms in any other state (a process starved of CPU gets the longer
 * grace). Its heartbeat is refreshed by each receive (also one that finds nothing), by
 * shmq_extend() and by a heartbeat thread; acks and nacks read no clock: a pass that finds the
 * consumer's deliveries, acks or nacks counted up since the pass before refreshes the
 * heartbeat for it (so a consumer that acks a batch one by one stays alive while it acks,
 * judged at most one maintenance period later than by a heartbeat of its own). A hung consumer is fenced: its registry entry and deliveries become stale (-ESTALE
 * from its later receive, ack, nack), its messages are redelivered, but the slots it may still
 * read are never reused while it lives (they wait in state FENCED until it acks, closes or dies).
 * The same holds for a message taken back from a live consumer at its ack deadline.
 * A macro: shmq_maintain_size(q, report, sizeof(shmq_maint_report_t)) (see "ABI").
 */
int shmq_maintain(shmq_t *q, shmq_maint_report_t *report);
int shmq_maintain_size(shmq_t *q, shmq_maint_report_t *report, size_t size);
#define shmq_maintain(q, report) shmq_maintain_size((q), (report), sizeof(shmq_maint_report_t))

/* ---- The maintenance lease: one maintainer at a time, and a standby that takes over. ---- */

/** Who holds the lease. */
typedef struct shmq_lease_info {
    int held;             /* 1 if a live holder's lease has not expired */
    int32_t pid;          /* its process */
    int priority;         /* 1: a watchdog; 0: a consumer maintaining cooperatively */
    int64_t expires_in_ms;/* negative: expired that long ago */
} shmq_lease_info_t;

/**
 * Take or renew the maintenance lease for lease_ms. priority 1 (watchdogs) may take a lease
 * held by a priority-0 holder (a consumer). Returns 0 if q now holds it, -EBUSY if another live
 * holder does. Lock-free (one CAS); no system call unless the holder must be checked for life.
 */
int shmq_lease_acquire(shmq_t *q, uint32_t lease_ms, int priority);

/** Give the lease up if q holds it (a watchdog's clean exit). */
int shmq_lease_release(shmq_t *q);

/** Read the lease. */
int shmq_lease_get(shmq_t *q, shmq_lease_info_t *info);

/**
 * Run shmq_maintain() if no watchdog holds the lease: take a cooperative (priority 0) lease of
 * lease_ms and maintain. Consumers call this themselves from receive (when idle, and every
 * 1024 deliveries) so a queue without a daemon still redelivers. Returns 1 if it maintained,
 * 0 if someone else holds the lease.
 */
int shmq_maintain_if_unwatched(shmq_t *q, uint32_t lease_ms);

/* ---- Attached processes (for the watchdog and tools). ---- */

typedef struct shmq_proc_info {
    uint32_t index;        /* registry entry */
    int32_t pid;
    uint32_t role;         /* SHMQ_ROLE_* bits */
    int state;             /* SHMQ_PROC_ACTIVE / _FENCED / _CLAIMED */
    uint64_t heartbeat_age_ms;
    char name[SHMQ_CONSUMER_NAME_MAX];
} shmq_proc_info_t;
#define SHMQ_ROLE_CLIENT 1u
#define SHMQ_ROLE_CONSUMER 2u
#define SHMQ_PROC_CLAIMED 1
#define SHMQ_PROC_ACTIVE 2
#define SHMQ_PROC_FENCED 3

/** Fill up to max entries of out with the non-free registry entries; *n gets how many. */
int shmq_procs(shmq_t *q, shmq_proc_info_t *out, size_t max, size_t *n);

/** One consumer's counters (shmq_consumer_stats()), since it attached. */
typedef struct shmq_consumer_stats {
    uint32_t index; /* registry entry (as shmq_proc_info_t.index) */
    int32_t pid;
    int state; /* SHMQ_PROC_ACTIVE / _FENCED / _CLAIMED */
    char name[SHMQ_CONSUMER_NAME_MAX];
    uint64_t delivered;      /* messages received (redeliveries included) */
    uint64_t acked;          /* acks that took effect */
    uint64_t nacked;         /* nacks that took effect (those sent to the dead letters too) */
    uint64_t redelivered;    /* of delivered, the ones delivered before (to anyone) */
    uint64_t dead_lettered;  /* its nacks that sent a message to the dead letters */
    uint64_t reclaimed_from; /* in-flight messages maintenance took back from it (ack deadline
                              * passed, or fenced as hung or dead), redelivered or, at
                              * max_attempts, dead-lettered */
} shmq_consumer_stats_t;

/**
 * Fill up to max entries of out with the counters of every consumer attached to q (non-free
 * registry entries with the consumer role, by index); *n gets how many. A consumer's delivered,
 * acked, nacked, redelivered and dead_lettered are the part of shmq_stats_t's counters of the
 * same names that it made: summed over the consumers listed, they equal the queue's totals
 * minus what consumers that have closed or died made (shmq_stats_t counts those too, folded in
 * when their entries were released). A closed consumer's counters leave the list with it.
 * Values are read one by one without stopping the consumers: each is a recent value, the set
 * is no snapshot. Cost: a scan of the registry (O(max_procs)), no system call; any thread.
 * Counting costs the consumer no locked instruction (it alone writes its counters).
 * -EINVAL for NULL q or n, or NULL out with max > 0.
 */
int shmq_consumer_stats(shmq_t *q, shmq_consumer_stats_t *out, size_t max, size_t *n);

/* ---- Dead letters ---- */

#define SHMQ_DEAD_MAX_ATTEMPTS 1 /* nacked or timed out max_attempts times */
#define SHMQ_DEAD_CORRUPT 2      /* its slot held an impossible length */
#define SHMQ_DEAD_EXPIRED 3      /* its time to live passed before it was delivered (a queue
                                  * with expire_policy SHMQ_EXPIRE_DEAD_LETTER) */

typedef struct shmq_dead_letter {
    uint64_t id;
    uint32_t attempt;     /* deliveries it had */
    uint32_t reason;      /* SHMQ_DEAD_* */
    size_t len;
    const void *data;     /* in shm; valid until it is redriven or purged */
} shmq_dead_letter_t;

/** Copy up to max dead letters, oldest id first, into out; *n gets how many. A scan. */
int shmq_dlq_list(shmq_t *q, shmq_dead_letter_t *out, size_t max, size_t *n);

/** Move dead letter id (0: all) back to the ready ring with attempt 0. *moved may be NULL. */
int shmq_dlq_redrive(shmq_t *q, uint64_t id, uint32_t *moved);

/** Drop dead letter id (0: all): its slot is freed, and with a log an ACK of it is logged, so a
 *  rebuild from the log does not bring it back (as shmq_purge). *purged may be NULL. -EIDRM when
 *  the queue was rebuilt from its log (reopen). */
int shmq_dlq_purge(shmq_t *q, uint64_t id, uint32_t *purged);

/**
 * The dead letters of consumer group `group` (NULL: "default", the group the calls above act
 * on): each group has its own, made when one of its consumers nacked or timed out a message
 * max_attempts times (or, with SHMQ_EXPIRE_DEAD_LETTER, it expired before that group got it).
 * id, len and data are the message's (one payload, shared by every group that holds it);
 * attempt and reason are the group's. As shmq_dlq_list(), shmq_dlq_redrive() and
 * shmq_dlq_purge(), on that group only: a redrive makes the message ready again for that group
 * alone (with attempt 0, and no expiry: a message's time to live is lifted for every group that
 * still holds it); a purge drops it from that group (its slot is freed once no group holds it).
 * Errors: -EINVAL (NULL q or n, out NULL with max > 0), -ENOENT (no group of that name, or it
 * is being deleted), and those of the plain calls (-ENOMEM for the list; -EIDRM, or a log
 * error of the redrive's PUBLISH record). With a log, a redrive is a PUBLISH record for that
 * group alone and a purge an ACK record of that group.
 */
int shmq_dlq_list_group(shmq_t *q, const char *group, shmq_dead_letter_t *out, size_t max,
                        size_t *n);
int shmq_dlq_redrive_group(shmq_t *q, const char *group, uint64_t id, uint32_t *moved);
int shmq_dlq_purge_group(shmq_t *q, const char *group, uint64_t id, uint32_t *purged);

#ifdef __cplusplus
}
#endif
#endif /* SHMQ_SHMQ_H */
