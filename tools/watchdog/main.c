/*
 * main.c - shmq-watchdog: keeps shmq queues maintained, and takes over from a dead or hung
 * peer watchdog (options, signals, the poll loop).
 *
 * The loop: every --interval-ms each queue gets a pass (watch.c); every --scan-ms the set of
 * queues is reconciled with /dev/shm (scan.c); in between the process sleeps in poll() on a
 * signalfd (SIGTERM, SIGINT) and on the pidfds of every attached process (pidwatch.c). A
 * readable pidfd gives its queue a pass at once, so the messages of a killed consumer are
 * ready again about a millisecond after its death. On SIGTERM or SIGINT every lease is
 * released (a standby takes over at once rather than after the lease period), every queue
 * closed, and the process exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "badopt.h"
#include "version.h"
#include "watchdog.h"

#define EXIT_CLEAN 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

enum {
    OPT_METRICS = 256, OPT_METRICS_PUBLIC, OPT_SAMPLE, OPT_ALERT_DEPTH, OPT_ALERT_DEAD,
    OPT_ALERT_DIED, OPT_ALERT_NO_LEASE, OPT_ALERT_AGE, OPT_ALERT_PINNED, OPT_ALERT_GROUP_LAG, OPT_ALERT_CMD
};

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "Usage: %s [options] NAME...\n"
            "  or:  %s [options] --all\n"
            "\n"
            "Maintain shmq queues: redeliver the messages of dead, hung or late consumers, free\n"
            "the reservations of dead producers, repair half-done operations, fire delayed\n"
            "messages and move poisoned ones to the dead-letter ring (shmq_maintain()). One\n"
            "watchdog per queue holds the maintenance lease and maintains; others stand by and\n"
            "take over within one lease period if it hangs, at once if it dies. Each attached\n"
            "process is watched through a pidfd: the death of a consumer triggers maintenance\n"
            "at once.\n"
            "\n"
            "  NAME                 a queue to watch (the segment /dev/shm/shmq.NAME). A queue\n"
            "                       that does not exist yet, or is deleted, is waited for; one\n"
            "                       whose segment is lost but whose log remains (found through\n"
            "                       the state directory) is rebuilt from the log (shmq_open)\n"
            "  -a, --all            watch every /dev/shm/shmq.* segment, following queues\n"
            "                       created and unlinked later (no NAME then; a lost segment is\n"
            "                       not rebuilt: name the queue for that)\n"
            "  -i, --interval-ms N  milliseconds between maintenance passes and lease renewals\n"
            "                       (1..60000; default 5). Newly attached processes are picked\n"
            "                       up for death detection every min(N, 5) ms regardless.\n"
            "  -l, --lease-ms N     maintenance lease period: how long a hung watchdog keeps\n"
            "                       its standby waiting (at least 2x the interval; default 500)\n"
            "  -s, --scan-ms N      milliseconds between checks of /dev/shm for new, missing\n"
            "                       and unlinked queues (1..600000; default 500)\n"
            "\n"
            "Metrics, alerts and the log's health (each queue is sampled with shmq_stats every\n"
            "--sample-ms):\n"
            "  --metrics HOST:PORT  serve the Prometheus text format on http://HOST:PORT/metrics\n"
            "                       (HOST: an IPv4 address or [IPv6]; PORT 0 picks a free port,\n"
            "                       logged by the metrics_listening event). Loopback only\n"
            "                       unless --metrics-public is given. Metrics per queue:\n"
            "                       shmq_messages_{published,delivered,acked,nacked,\n"
            "                       redelivered,dead_lettered,reclaimed,expired}_total\n"
            "                       (counters),\n"
            "                       shmq_messages{state=ready|inflight|delayed|reserved|dead|\n"
            "                       free}, shmq_capacity, shmq_consumers, shmq_processes,\n"
            "                       shmq_watchdog_lease_held, shmq_oldest_message_age_seconds\n"
            "                       (gauges: the age since publish of the oldest message not\n"
            "                       yet acked; 0 when there is none); the write-ahead log:\n"
            "                       shmq_wal_bytes_appended_total, shmq_wal_flushes_total,\n"
            "                       shmq_wal_files, shmq_wal_errors_total, shmq_wal_healthy;\n"
            "                       per consumer (labels consumer=NAME, entry=INDEX, at most\n"
            "                       max_procs per queue): shmq_consumer_{delivered,acked,\n"
            "                       nacked,reclaimed_from}_total\n"
            "  --metrics-public     allow a --metrics address that is not loopback\n"
            "  --sample-ms N        milliseconds between samples (10..600000; default 1000)\n"
            "  --alert-depth N      alert when more than N messages are ready\n"
            "  --alert-dead-letters alert when dead letters were added since the last sample\n"
            "  --alert-consumer-died  alert when a consumer died since the last sample\n"
            "  --alert-no-lease     alert when, as a standby, this watchdog finds nobody\n"
            "                       holding the maintenance lease (it then takes over)\n"
            "  --alert-age-ms T     alert when the oldest message not yet acked (ready,\n"
            "                       delayed or in flight) is older than T ms since publish\n"
            "                       (cleared when it is no longer: acked, or none left)\n"
            "  --alert-pinned N     alert when more than N slots are pinned: held back for\n"
            "                       live consumers fenced as hung while holding them (their\n"
            "                       messages were redelivered; the slots return when those\n"
            "                       processes let go or die: restart them)\n"
            "  --alert-group-lag N  alert when a consumer group lags more than N messages: ids\n"
            "                       published since the oldest message it has not finished\n"
            "                       (shmq_group_stats; SHMQ_VALUE: the largest group's lag)\n"
            "  --alert-cmd CMD      run CMD through /bin/sh -c when an alert fires, not waited\n"
            "                       for, with SHMQ_ALERT (depth, dead_letters, consumer_died,\n"
            "                       no_lease, age, pinned, group_lag), SHMQ_QUEUE, SHMQ_VALUE,\n"
            "                       SHMQ_THRESHOLD set\n"
            "                       (age: both in ms)\n"
            "Each alert is edge-triggered: one line event=alert (and CMD) when its condition\n"
            "starts, one line event=alert_cleared when it ends (then it may fire again).\n"
            "  -h, --help           this text\n"
            "  --version            print \"shmq-watchdog VERSION\" and exit\n"
            "\n"
            "Output: one logfmt line per event on stdout, flushed per line:\n"
            "  ts=2026-11-25T19:00:00.123Z level=info queue=NAME event=consumer_died pid=123 ...\n"
            "Events: start, stop, queue_added, queue_removed, queue_missing, open_failed,\n"
            "lease_acquired (took_over=1 after a standby period), standby, consumer_died,\n"
            "client_died, consumer_hung, metrics_listening, alert, alert_cleared,\n"
            "alerts_armed (the first sample: increases after it fire dead_letters and\n"
            "consumer_died),\n"
            "log_error (the queue's log failed to write or flush: count=, last_error=,\n"
            "flush_failed=), log_healthy (it works again),\n"
            "alert_cmd_failed, and one per non-zero field of a maintenance report\n"
            "with count=N: procs_dead, procs_hung, reclaimed, deadline_expired,\n"
            "orphans_requeued, reservations_freed, delayed_fired, dead_lettered,\n"
            "fenced_released, copied_out, expired; error (op=, err=) for a failed library call.\n"
            "\n"
            "Signals: SIGTERM or SIGINT release every lease, close the queues and exit.\n"
            "\n"
            "Exit status: 0 clean stop (signal), 1 runtime error (a system call the loop needs\n"
            "failed, or the --metrics address cannot be bound), 2 usage error (a non-loopback\n"
            "--metrics address without --metrics-public too).\n",
            prog, prog);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The poll set: the signalfd, the opener's eventfd, then the live pidfds of every queue. */
struct poll_set {
    struct pollfd *fds;
    struct watch **owner;
    size_t n, cap;
};

#define FIXED_FDS 2

static int poll_set_build(struct poll_set *p, int sigfd, int openfd, const struct watch_list *l)
{
    size_t need = FIXED_FDS;
    for (size_t i = 0; i < l->n; i++)
        need += l->w[i]->pids.n;
    if (need > p->cap) {
        struct pollfd *f = realloc(p->fds, need * sizeof *f);
        if (f)
            p->fds = f;
        struct watch **o = f ? realloc(p->owner, need * sizeof *o) : NULL;
        if (!f || !o)
            return -ENOMEM;
        p->owner = o;
        p->cap = need;
    }
    p->fds[0] = (struct pollfd){.fd = sigfd, .events = POLLIN};
    p->fds[1] = (struct pollfd){.fd = openfd, .events = POLLIN};
    p->owner[0] = p->owner[1] = NULL;
    p->n = FIXED_FDS;
    for (size_t i = 0; i < l->n; i++) {
        size_t k = pidset_pollfds(&l->w[i]->pids, p->fds + p->n, p->cap - p->n);
        for (size_t j = 0; j < k; j++)
            p->owner[p->n + j] = l->w[i];
        p->n += k;
    }
    return 0;
}

static int run(struct watch_list *l, const struct wd_options *o, int sigfd, struct opener *op,
               struct metrics *m)
{
    struct poll_set ps = {0};
    uint64_t interval_ns = (uint64_t)o->interval_ms * 1000000ull;
    uint64_t scan_ns = (uint64_t)o->scan_ms * 1000000ull;
    uint64_t refresh_ns = (uint64_t)o->refresh_ms * 1000000ull;
    uint64_t now = mono_ns(), next_pass = now, next_scan = now, next_refresh = now;
    /* always: the log's health (log_error / log_healthy lines) comes from the samples too */
    bool sampling = true;
    uint64_t sample_ns = (uint64_t)o->sample_ms * 1000000ull;
    uint64_t next_sample = sampling ? now : UINT64_MAX;
    int rc = EXIT_CLEAN;
    for (;;) {
        alerts_reap();
        now = mono_ns();
        if (now >= next_scan) {
            watches_scan(l, op, o);
            next_scan = now + scan_ns;
        }
        if (now >= next_pass) {
            for (size_t i = 0; i < l->n; i++)
                watch_pass(l->w[i], o);
            next_pass += interval_ns;
            if (next_pass <= now) /* fell behind: do not try to catch up */
                next_pass = now + interval_ns;
            next_refresh = now + refresh_ns; /* a pass refreshes the pidfds too */
        } else if (now >= next_refresh) {
            for (size_t i = 0; i < l->n; i++)
                watch_refresh(l->w[i], o);
            next_refresh = now + refresh_ns;
        }
        if (now >= next_sample) {
            for (size_t i = 0; i < l->n; i++)
                watch_sample(l->w[i], o);
            metrics_publish(m, l);
            next_sample = now + sample_ns;
        }
        if (poll_set_build(&ps, sigfd, opener_fd(op), l) != 0) {
            wd_log(WD_ERROR, NULL, "error", "op=alloc err=%d", ENOMEM);
            rc = EXIT_RUNTIME;
            break;
        }
        now = mono_ns();
        uint64_t wake = next_pass < next_scan ? next_pass : next_scan;
        if (next_refresh < wake)
            wake = next_refresh;
        if (next_sample < wake)
            wake = next_sample;
        int timeout_ms = wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
        int r = poll(ps.fds, ps.n, timeout_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            wd_log(WD_ERROR, NULL, "error", "op=poll err=%d", errno);
            rc = EXIT_RUNTIME;
            break;
        }
        if (ps.fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
                wd_log(WD_INFO, NULL, "stop", "signal=%s", sigabbrev_np((int)si.ssi_signo));
                break;
            }
        }
        if (ps.fds[1].revents & POLLIN)
            watches_collect(l, op, o);
        /* a process exited: a pass for its queue now (one per queue, however many died) */
        for (size_t i = FIXED_FDS; i < ps.n; i++) {
            if (!ps.fds[i].revents)
                continue;
            pidset_fired(&ps.owner[i]->pids, ps.fds[i].fd);
        }
        for (size_t i = FIXED_FDS; i < ps.n; i++) {
            struct watch *w = ps.owner[i];
            if (!ps.fds[i].revents || !w)
                continue;
            for (size_t j = i; j < ps.n; j++) /* once per queue */
                if (ps.owner[j] == w)
                    ps.owner[j] = NULL;
            watch_pass(w, o);
        }
    }
    free(ps.fds);
    free(ps.owner);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'a'},
        {"interval-ms", required_argument, NULL, 'i'},
        {"lease-ms", required_argument, NULL, 'l'},
        {"scan-ms", required_argument, NULL, 's'},
        {"metrics", required_argument, NULL, OPT_METRICS},
        {"metrics-public", no_argument, NULL, OPT_METRICS_PUBLIC},
        {"sample-ms", required_argument, NULL, OPT_SAMPLE},
        {"alert-depth", required_argument, NULL, OPT_ALERT_DEPTH},
        {"alert-dead-letters", no_argument, NULL, OPT_ALERT_DEAD},
        {"alert-consumer-died", no_argument, NULL, OPT_ALERT_DIED},
        {"alert-no-lease", no_argument, NULL, OPT_ALERT_NO_LEASE},
        {"alert-age-ms", required_argument, NULL, OPT_ALERT_AGE},
        {"alert-pinned", required_argument, NULL, OPT_ALERT_PINNED},
        {"alert-group-lag", required_argument, NULL, OPT_ALERT_GROUP_LAG},
        {"alert-cmd", required_argument, NULL, OPT_ALERT_CMD},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, TOOL_OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    static struct alert_rules rules;
    struct wd_options o = {.interval_ms = 5, .lease_ms = 500, .scan_ms = 500, .refresh_ms = 5,
                           .sample_ms = 1000, .alerts = &rules};
    const char *metrics_addr = NULL;
    bool metrics_public = false;
    struct watch_list l = {0};
    const char *prog = "shmq-watchdog"; /* in help and messages, whatever the path */
    int c;
    while ((c = getopt_long(argc, argv, ":ai:l:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'a': l.all = true; break;
        case 'i':
            if (parse_u32(optarg, 1, 60000, &o.interval_ms) != 0) {
                fprintf(stderr, "%s: --interval-ms: expected 1..60000, got '%s'\n", prog, optarg);
                return EXIT_USAGE;
            }
            break;
        case 'l':
            if (parse_u32(optarg, 1, 3600000, &o.lease_ms) != 0) {
                fprintf(stderr, "%s: --lease-ms: expected 1..3600000, got '%s'\n", prog, optarg);
                return EXIT_USAGE;
            }
            break;
        case 's':
            if (parse_u32(optarg, 1, 600000, &o.scan_ms) != 0) {
                fprintf(stderr, "%s: --scan-ms: expected 1..600000, got '%s'\n", prog, optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_METRICS: metrics_addr = optarg; break;
        case OPT_METRICS_PUBLIC: metrics_public = true; break;
        case OPT_SAMPLE:
            if (parse_u32(optarg, 10, 600000, &o.sample_ms) != 0) {
                fprintf(stderr, "%s: --sample-ms: expected 10..600000, got '%s'\n", prog, optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_ALERT_DEPTH: {
            uint32_t depth;
            if (parse_u32(optarg, 0, UINT32_MAX, &depth) != 0) {
                fprintf(stderr, "%s: --alert-depth: expected a message count, got '%s'\n", prog,
                        optarg);
                return EXIT_USAGE;
            }
            rules.depth = depth;
            rules.on[ALERT_DEPTH] = true;
            break;
        }
        case OPT_ALERT_DEAD: rules.on[ALERT_DEAD_LETTERS] = true; break;
        case OPT_ALERT_DIED: rules.on[ALERT_CONSUMER_DIED] = true; break;
        case OPT_ALERT_NO_LEASE: rules.on[ALERT_NO_LEASE] = true; break;
        case OPT_ALERT_AGE: {
            uint32_t age;
            if (parse_u32(optarg, 0, UINT32_MAX, &age) != 0) {
                fprintf(stderr, "%s: --alert-age-ms: expected milliseconds, got '%s'\n", prog,
                        optarg);
                return EXIT_USAGE;
            }
            rules.age_ms = age;
            rules.on[ALERT_AGE] = true;
            break;
        }
        case OPT_ALERT_PINNED: {
            uint32_t n;
            if (parse_u32(optarg, 0, UINT32_MAX, &n) != 0) {
                fprintf(stderr, "%s: --alert-pinned: expected a slot count, got '%s'\n", prog,
                        optarg);
                return EXIT_USAGE;
            }
            rules.pinned = n;
            rules.on[ALERT_PINNED] = true;
            break;
        }
        case OPT_ALERT_GROUP_LAG: {
            uint32_t n;
            if (parse_u32(optarg, 0, UINT32_MAX, &n) != 0) {
                fprintf(stderr, "%s: --alert-group-lag: expected a message count, got '%s'\n",
                        prog, optarg);
                return EXIT_USAGE;
            }
            rules.group_lag = n;
            rules.on[ALERT_GROUP_LAG] = true;
            break;
        }
        case OPT_ALERT_CMD:
            if (!*optarg) {
                fprintf(stderr, "%s: --alert-cmd: empty command\n", prog);
                return EXIT_USAGE;
            }
            rules.cmd = optarg;
            break;
        case 'h': usage(stdout, prog); return EXIT_CLEAN;
        case TOOL_OPT_VERSION:
            return tool_print_version("shmq-watchdog") == 0 ? EXIT_CLEAN : EXIT_RUNTIME;
        default: tool_bad_option("shmq-watchdog", NULL, c, argv); return EXIT_USAGE;
        }
    }
    struct sockaddr_storage maddr;
    if (metrics_addr) {
        bool loopback = false;
        if (metrics_parse_addr(metrics_addr, &maddr, &loopback) != 0) {
            fprintf(stderr,
                    "%s: --metrics: expected IPv4:PORT or [IPv6]:PORT (e.g. 127.0.0.1:9464), "
                    "got '%s'\n", prog, metrics_addr);
            return EXIT_USAGE;
        }
        if (!loopback && !metrics_public) {
            fprintf(stderr,
                    "%s: --metrics: %s is not a loopback address; add --metrics-public to serve "
                    "metrics beyond this host\n", prog, metrics_addr);
            return EXIT_USAGE;
        }
    }
    if (rules.cmd && !alerts_any(&rules)) {
        fprintf(stderr, "%s: --alert-cmd needs at least one --alert-* rule\n", prog);
        return EXIT_USAGE;
    }
    if (o.interval_ms < o.refresh_ms)
        o.refresh_ms = o.interval_ms;
    if (o.lease_ms < 2 * o.interval_ms) {
        fprintf(stderr, "%s: --lease-ms (%u) must be at least twice --interval-ms (%u)\n", prog,
                o.lease_ms, o.interval_ms);
        return EXIT_USAGE;
    }
    if (l.all == (optind < argc)) {
        fprintf(stderr, "%s: give queue NAMEs or --all (one of the two)\n", prog);
        usage(stderr, prog);
        return EXIT_USAGE;
    }
    for (int i = optind; i < argc; i++) {
        if (inspect_name_check(argv[i]) != 0) {
            fprintf(stderr, "%s: '%s' is not a queue name ([A-Za-z0-9._-], 1..%d bytes)\n", prog,
                    argv[i], SHMQ_NAME_MAX);
            watches_free(&l);
            return EXIT_USAGE;
        }
        if (!watches_add(&l, argv[i])) {
            fprintf(stderr, "%s: out of memory\n", prog);
            watches_free(&l);
            return EXIT_RUNTIME;
        }
    }

    /* SIGTERM and SIGINT arrive through a signalfd in the poll set: no handler races. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    int sigfd = -1;
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
        (sigfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0) {
        fprintf(stderr, "%s: signalfd: %s\n", prog, strerror(errno));
        watches_free(&l);
        return EXIT_RUNTIME;
    }
    signal(SIGPIPE, SIG_IGN); /* a closed stdout must not kill the maintainer */
    signal(SIGXFSZ, SIG_IGN); /* a log past RLIMIT_FSIZE is EFBIG, not a death (review F6) */

    wd_log(WD_INFO, NULL, "start",
           "pid=%d mode=%s queues=%zu interval_ms=%u lease_ms=%u scan_ms=%u", (int)getpid(),
           l.all ? "all" : "names", l.n, o.interval_ms, o.lease_ms, o.scan_ms);
    struct opener *op = NULL;
    int err = opener_start(&op, !l.all); /* named queues are rebuilt from their logs */
    if (err) {
        wd_log(WD_ERROR, NULL, "error", "op=opener_start err=%d", -err);
        watches_free(&l);
        close(sigfd);
        return EXIT_RUNTIME;
    }
    struct metrics *m = NULL;
    if (metrics_addr) { /* after the signal mask is set: its thread inherits it */
        err = metrics_start(&maddr, &m);
        if (err) {
            wd_log(WD_ERROR, NULL, "error", "op=metrics_start addr=%s err=%d", metrics_addr,
                   -err);
            watches_free(&l);
            opener_stop(op);
            close(sigfd);
            return EXIT_RUNTIME;
        }
    }
    int rc = run(&l, &o, sigfd, op, m);
    metrics_stop(m);
    watches_free(&l); /* releases every lease first: a standby takes over at once */
    opener_stop(op);
    close(sigfd);
    return rc;
}
