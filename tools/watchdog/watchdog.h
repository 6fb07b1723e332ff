/*
 * watchdog.h - the pieces of shmq-watchdog and how they meet.
 *
 *   main.c     options, signals (a signalfd), the poll loop
 *   watch.c    one watched queue: lease (active / standby), maintenance passes, events
 *   pidwatch.c one pidfd per attached process of a queue: instant death detection
 *   scan.c     which queues to watch: the names given, or every /dev/shm/shmq.* (--all)
 *   opener.c   shmq_open() on helper threads (it may block for a second)
 *   log.c      one logfmt line per event on stdout, flushed per line
 *   metrics.c  --metrics: the latest samples in the Prometheus text format, served over HTTP
 *              by libmicrohttpd's own thread
 *   alerts.c   --alert-*: edge-triggered rules, one log line and an optional command each
 *
 * The daemon is single-threaded. Every --interval-ms each queue takes or renews the
 * maintenance lease (shmq_lease_acquire, priority 1) and, while it holds it, runs
 * shmq_maintain(). Between passes it sleeps in poll() on the pidfds of every attached process:
 * a process that exits makes its pidfd readable and the queue gets a pass at once.
 * With --metrics or an --alert-* rule, every --sample-ms each queue is also sampled
 * (shmq_stats, watch_sample()): the samples feed the alert rules and the metrics text, which
 * is handed to the HTTP thread under a mutex held only to swap a pointer.
 */
#ifndef SHMQ_WATCHDOG_H
#define SHMQ_WATCHDOG_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "inspect.h"
#include "logfmt.h"
#include "shmq/shmq.h"

/* ---- log.c ---- */

enum wd_level { WD_INFO, WD_WARN, WD_ERROR };

/*
 * Write one line "ts=... level=... queue=NAME event=EVENT <fields>" to stdout and flush it.
 * queue may be NULL (no queue= field). fields is a printf format for extra "key=value" pairs
 * (may be NULL); values that may hold spaces must go through logfmt_quote().
 */
void wd_log(enum wd_level level, const char *queue, const char *event, const char *fields, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- pidwatch.c ---- */

/* One attached process of a queue, watched through a pidfd. */
struct pid_watch {
    uint32_t index; /* registry entry */
    int32_t pid;
    uint32_t role; /* SHMQ_ROLE_* */
    int fd;        /* pidfd, or -1 (could not open: the pass handles it) */
    bool fired;    /* the pidfd became readable: the process exited */
    bool seen;     /* still listed by the latest refresh */
    char name[SHMQ_CONSUMER_NAME_MAX];
};

struct pid_set {
    struct pid_watch *w;
    size_t n, cap;
};

/*
 * Bring the set in line with procs (the queue's registry, shmq_procs()): open a pidfd for
 * every ACTIVE or CLAIMED entry not yet watched (except our own pid), close those of entries
 * that left or were fenced. Returns how many entries name a process that is already gone
 * (pidfd_open failed with ESRCH): the caller should run a pass for them.
 */
int pidset_refresh(struct pid_set *s, const shmq_proc_info_t *procs, size_t n);

/* Append a pollfd for each watched, not yet fired pidfd. Returns how many were added. */
size_t pidset_pollfds(const struct pid_set *s, struct pollfd *out, size_t max);

/* poll() every unfired pidfd of the set without waiting; mark those readable as fired. */
void pidset_poll(struct pid_set *s);

/* 1 if the watch of (index, pid) fired, 0 if it has not, -1 if there is no such watch. */
int pidset_exited(const struct pid_set *s, uint32_t index, int32_t pid);

/* Mark the watch of fd as fired (its process exited); returns it, or NULL. */
struct pid_watch *pidset_fired(struct pid_set *s, int fd);

/* Close every pidfd and free the set. */
void pidset_clear(struct pid_set *s);

/* Is pid gone or a zombie (exited, not yet reaped)? */
bool pid_exited(int32_t pid);

/* ---- opener.c ---- */

/* What opening a queue gave. */
struct open_result {
    char name[SHMQ_NAME_MAX + 1];
    shmq_t *q;      /* NULL on error */
    int err;        /* 0 or -errno (shmq_open's, or stat's: -ENOENT) */
    struct stat st; /* the segment file as found before opening (if err is not from stat) */
};

struct opener;

/* Set up the opener (threads start per request). Call with SIGTERM and SIGINT blocked: its
 * threads inherit the mask. rebuild: a queue whose segment is missing is opened all the same,
 * so shmq_open() rebuilds it from its log (the queues named on the command line). 0 or -errno. */
int opener_start(struct opener **op, bool rebuild);

/* An eventfd, readable when results wait. */
int opener_fd(const struct opener *op);

/* Ask for name to be opened. 0 or -ENOMEM. */
int opener_request(struct opener *op, const char *name);

/* Take one result, if any (non-blocking). */
bool opener_result(struct opener *op, struct open_result *r);

/* Wait for the opens in progress, close queues never collected, free. */
void opener_stop(struct opener *op);

/* stat() of /dev/shm/shmq.NAME: 0 or -errno. */
int segment_stat(const char *name, struct stat *st);

/* ---- alerts.c ---- */

enum alert_kind {
    ALERT_DEPTH,         /* --alert-depth N: more than N ready messages */
    ALERT_DEAD_LETTERS,  /* --alert-dead-letters: dead letters were added since the last sample */
    ALERT_CONSUMER_DIED, /* --alert-consumer-died: a consumer died since the last sample */
    ALERT_NO_LEASE,      /* --alert-no-lease: as a standby, found nobody holding the lease */
    ALERT_AGE,           /* --alert-age-ms T: the oldest unacked message is older than T ms */
    ALERT_PINNED,        /* --alert-pinned N: more than N slots pinned by fenced live readers */
    ALERT_GROUP_LAG,     /* --alert-group-lag N: a consumer group lags more than N messages */
    ALERT__COUNT
};

struct alert_rules {
    bool on[ALERT__COUNT];
    uint64_t depth;  /* threshold of ALERT_DEPTH */
    uint64_t age_ms; /* threshold of ALERT_AGE */
    uint64_t pinned; /* threshold of ALERT_PINNED */
    uint64_t group_lag; /* threshold of ALERT_GROUP_LAG */
    const char *cmd; /* --alert-cmd: run through /bin/sh -c when a rule fires, or NULL */
};

/* Name of a rule as in logs and SHMQ_ALERT: depth, dead_letters, consumer_died, no_lease,
 * age. */
const char *alert_name(enum alert_kind k);

/* Is any rule on? */
bool alerts_any(const struct alert_rules *r);

struct watch;

/*
 * Feed rule k of queue w with its condition now. Edge-triggered: when cond becomes true, one
 * log line (event=alert) and, with r->cmd, the command spawned (not waited for) with
 * SHMQ_ALERT, SHMQ_QUEUE, SHMQ_VALUE, SHMQ_THRESHOLD in its environment; while it stays true,
 * nothing; when it becomes false, one line event=alert_cleared and the rule is armed again.
 * A rule that is off is ignored.
 */
void alert_update(struct watch *w, const struct alert_rules *r, enum alert_kind k, bool cond,
                  uint64_t value, uint64_t threshold);

/* Reap alert commands that finished (waitpid WNOHANG on each); log those that failed. */
void alerts_reap(void);

/* ---- watch.c ---- */

struct wd_options {
    uint32_t interval_ms; /* between passes */
    uint32_t lease_ms;    /* lease period */
    uint32_t scan_ms;     /* between checks of /dev/shm */
    uint32_t refresh_ms;  /* between registry listings (new pidfds): min(interval, 5) */
    uint32_t sample_ms;   /* between samples for metrics and alerts */
    const struct alert_rules *alerts; /* never NULL */
};

enum watch_role { ROLE_NONE, ROLE_ACTIVE, ROLE_STANDBY };

/* One watched queue. */
struct watch {
    char name[SHMQ_NAME_MAX + 1];
    shmq_t *q; /* NULL while the queue is missing or failed to open */
    dev_t dev; /* identity of the segment file opened */
    ino_t ino;
    enum watch_role role;
    bool opening;            /* a request is with the opener */
    int last_open_err;       /* last open error logged (logged once per error and file) */
    struct stat last_err_st; /* the file that failed (not retried while it is unchanged) */
    bool listed;             /* found by the latest scan (--all) */
    shmq_proc_info_t *procs; /* registry snapshots: before and after a pass */
    shmq_proc_info_t *after;
    uint8_t *exited; /* per procs[i]: its process had exited before the pass */
    size_t procs_cap;
    struct pid_set pids;
    uint64_t passes;
    /* samples (watch_sample), for metrics and alerts */
    bool sampled;            /* stats holds a sample of the queue now open */
    shmq_stats_t stats;      /* the latest sample */
    shmq_consumer_stats_t *consumers; /* and its consumers' counters (procs_cap entries) */
    size_t n_consumers;
    shmq_group_stats_t groups[SHMQ_GROUPS_MAX]; /* and its consumer groups' (shmq_group_stats) */
    size_t n_groups;
    uint32_t capacity;       /* from shmq_get_config() at adoption */
    uint64_t consumer_deaths;/* consumer_died events logged, in all */
    uint64_t deaths_sampled; /* consumer_deaths at the latest sample */
    bool firing[ALERT__COUNT]; /* alert rules whose condition holds (alerts.c) */
    bool log_failing;          /* a log_error line was logged, no log_healthy since */
};

/* Take the result of opening w->name: logs queue_added (and runs a first pass), or the
 * failure once per error and file. 0 or the open's -errno. */
int watch_adopt(struct watch *w, const struct open_result *r, const struct wd_options *o);

/* Should w, not open, be (re)tried? Not while a request is out, nor while the file that
 * failed validation is unchanged (shmq_open() would block a second for nothing). */
bool watch_wants_open(const struct watch *w);

/* Release the lease, close the queue, drop the pidfds. reason: for the queue_removed line
 * (NULL: log nothing). */
void watch_close(struct watch *w, const char *reason);

/* Is the segment file still the one we opened? false once it is unlinked or replaced. */
bool watch_still_there(const struct watch *w);

/*
 * One pass: take or renew the lease; if held, shmq_maintain() and log what it did; refresh
 * the pidfds. Run every interval, and at once when a pidfd fires.
 * Returns 0, or -errno from the library (logged).
 */
int watch_pass(struct watch *w, const struct wd_options *o);

/*
 * Between passes: list the registry and open pidfds for processes attached since (a memory
 * scan, no system call unless the set changed), so that a consumer that attached after the
 * last pass is watched too. A process found gone already gets a pass at once. 0 or -errno.
 */
int watch_refresh(struct watch *w, const struct wd_options *o);

/*
 * Sample the queue (shmq_stats: a scan of its slots) and feed the alert rules depth,
 * dead_letters, consumer_died and age with it. 0 or -errno (logged).
 */
int watch_sample(struct watch *w, const struct wd_options *o);

/* ---- scan.c ---- */

struct watch_list {
    struct watch **w;
    size_t n, cap;
    bool all; /* --all: the set follows /dev/shm */
};

/* Add a queue by name (not opened yet). NULL on allocation failure. */
struct watch *watches_add(struct watch_list *l, const char *name);

/*
 * Reconcile the watched set with /dev/shm: drop queues whose segment was unlinked or
 * replaced, ask op to open those that are missing or new (--all: every shmq.* file).
 * Returns 0, or -errno if /dev/shm cannot be read (logged).
 */
int watches_scan(struct watch_list *l, struct opener *op, const struct wd_options *o);

/* Adopt every result op has ready. */
void watches_collect(struct watch_list *l, struct opener *op, const struct wd_options *o);

/* Close and free every watch. */
void watches_free(struct watch_list *l);

/* ---- metrics.c ---- */

struct metrics;

/*
 * Parse "HOST:PORT" (IPv4 dotted quad, or [IPv6]; PORT 0..65535, 0: any free port) into *addr.
 * *loopback tells whether HOST is a loopback address (127.0.0.0/8, ::1). 0 or -EINVAL.
 */
int metrics_parse_addr(const char *s, struct sockaddr_storage *addr, bool *loopback);

/* Start serving GET /metrics on addr from libmicrohttpd's own thread; logs metrics_listening
 * with the port bound. 0 or -errno. */
int metrics_start(const struct sockaddr_storage *addr, struct metrics **m);

/* Render the latest sample of every open queue and hand it to the HTTP thread. */
void metrics_publish(struct metrics *m, const struct watch_list *l);

/* Stop the HTTP thread and free everything. */
void metrics_stop(struct metrics *m);

#endif
