/*
 * top.c - `shmq top [NAME...] [--interval-ms N] [--iterations N]`: queues refreshed in place.
 *
 * Every interval new snapshots (the inspection layer's, read-only) are drawn over the previous
 * frame with ANSI escapes (cursor home, clear to end of screen), with rates per second computed
 * from each queue's snapshot before. One NAME: `stat`'s view of it; a queue that disappears or
 * turns unreadable ends the loop (exit 1). No NAME (every queue on the host, listed afresh each
 * frame) or several: a table, one row per queue, rates rounded for reading; a queue that cannot
 * be read is a row with its error, and the loop goes on.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

#define ANSI_HOME_CLEAR "\033[H\033[J"

void cmd_top_help(FILE *out)
{
    fprintf(out,
            "Usage: %s top [NAME...] [--interval-ms N] [--iterations N]\n"
            "\n"
            "With one NAME: show the state of that queue as `%s stat` does, refreshed in\n"
            "place every interval, with the rates per second of every counter (published,\n"
            "delivered, acked, nacked, redelivered, dead_lettered, reclaimed) over the last\n"
            "interval. With no NAME (every queue on this host) or several: a table, one row\n"
            "per queue: READY INFLIGHT DELAYED DEAD CONS, the rates PUB/s DELIV/s ACK/s\n"
            "NACK/s REDEL/s DLQ/s rounded for reading (950, 12.5k, 3.1M), OLDEST (age of\n"
            "the oldest message not yet acked: 850ms, 12s, 5m, 3h) and WATCHDOG. A queue with\n"
            "consumer groups besides \"default\" has a row per group under its own, \"  @GROUP\":\n"
            "the group's messages by state, its consumers, their DELIV/s ACK/s NACK/s, OLDEST,\n"
            "and its lag (ids published since the oldest message it has not finished) where\n"
            "WATCHDOG is.\n"
            "Read-only: no queue is disturbed. Stop it with Ctrl-C (or --iterations).\n"
            "\n"
            "Options:\n"
            "  -i, --interval-ms N   between refreshes, 10..3600000 (default 1000)\n"
            "  -n, --iterations N    stop after N frames (default: until interrupted)\n"
            "  -h, --help            this text\n"
            "\n"
            "Exit status: 0 stopped by --iterations or by SIGINT/SIGTERM; 1 runtime error (one\n"
            "NAME: no such queue, or it became unreadable: reason on stderr; a table shows\n"
            "such a queue as a row with its error and goes on); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s top\n"
            "  %s top orders payments -i 250\n"
            "  %s top orders\n"
            "  %s top orders --iterations 2 --interval-ms 500 > frames.txt\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname);
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (!stop_requested && nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* A rate for reading: 0, 7.5, 950, 12.5k, 125k, 3.1M. */
static const char *rate_text(double r, char *buf, size_t size)
{
    if (r < 10)
        snprintf(buf, size, r == 0 ? "0" : "%.1f", r);
    else if (r < 1e3)
        snprintf(buf, size, "%.0f", r);
    else if (r < 1e4)
        snprintf(buf, size, "%.1fk", r / 1e3);
    else if (r < 1e6)
        snprintf(buf, size, "%.0fk", r / 1e3);
    else if (r < 1e7)
        snprintf(buf, size, "%.1fM", r / 1e6);
    else
        snprintf(buf, size, "%.0fM", r / 1e6);
    return buf;
}

/* An age for reading: -, 850ms, 12s, 5m, 3h, 2d. */
static const char *age_text(int64_t ms, char *buf, size_t size)
{
    if (ms < 0)
        snprintf(buf, size, "-");
    else if (ms < 1000)
        snprintf(buf, size, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(buf, size, "%llds", (long long)(ms / 1000));
    else if (ms < 3600000)
        snprintf(buf, size, "%lldm", (long long)(ms / 60000));
    else if (ms < 86400000)
        snprintf(buf, size, "%lldh", (long long)(ms / 3600000));
    else
        snprintf(buf, size, "%lldd", (long long)(ms / 86400000));
    return buf;
}

/* The queues a table frame shows, each with its snapshot (ok == false: err says why). */
struct top_row {
    char *name;
    bool ok;
    int err;
    struct inspect_snapshot snap;
};

struct top_table {
    struct top_row *rows;
    size_t n;
};

static void table_free(struct top_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->rows[i].ok)
            inspect_snapshot_free(&t->rows[i].snap);
        free(t->rows[i].name);
    }
    free(t->rows);
    t->rows = NULL;
    t->n = 0;
}

/* Snapshot the named queues (names NULL: every queue on the host, listed now). */
static int table_take(char **names, size_t n, struct top_table *t)
{
    char **all = NULL;
    if (!names) {
        int err = inspect_queue_names(&all, &n);
        if (err)
            return err;
        names = all;
    }
    t->rows = calloc(n ? n : 1, sizeof *t->rows);
    t->n = 0;
    int err = t->rows ? 0 : -ENOMEM;
    for (size_t i = 0; !err && i < n; i++) {
        struct top_row *r = &t->rows[t->n];
        if (!(r->name = strdup(names[i]))) {
            err = -ENOMEM;
            break;
        }
        t->n++;
        r->err = inspect_queue(names[i], &r->snap);
        r->ok = r->err == 0;
    }
    if (all)
        inspect_names_free(all, n);
    if (err)
        table_free(t);
    return err;
}

static const struct top_row *table_find(const struct top_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rows[i].name, name) == 0)
            return &t->rows[i];
    return NULL;
}

static const int rate_columns[] = {INSPECT_PUBLISHED, INSPECT_DELIVERED,   INSPECT_ACKED,
                                   INSPECT_NACKED,    INSPECT_REDELIVERED, INSPECT_DEAD_LETTERED};

/* A group's name for the table: bytes other than a name's [A-Za-z0-9._-] shown as '?' (they
 * come from shared memory). */
static void group_label(const struct inspect_group *g, char *buf, size_t size)
{
    int n = snprintf(buf, size, "  @%s", g->name);
    for (int i = 3; i < n && (size_t)i < size - 1; i++) {
        char c = buf[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            buf[i] = '?';
    }
}

/* The rate of a counter from a before b, dt seconds apart, for reading ("-": no before). */
static const char *counter_rate(const uint64_t *b, uint64_t z, double dt, char *buf, size_t size)
{
    if (!b || dt <= 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    /* a counter folded between the samples may dip: no negative rate */
    return rate_text(z > *b ? (double)(z - *b) / dt : 0.0, buf, size);
}

/* Under a queue with groups besides "default": a row per group, its messages by state, its
 * consumers, their delivered, acked and nacked rates (from p, the snapshot before), the age of
 * its oldest message and its lag (and its state when not ACTIVE). */
static void table_draw_groups(const struct inspect_snapshot *s, const struct inspect_snapshot *p)
{
    if (!inspect_has_groups(s))
        return;
    double dt = p && s->taken_ns > p->taken_ns ? (double)(s->taken_ns - p->taken_ns) / 1e9 : 0;
    for (uint32_t i = 0; i < s->n_groups; i++) {
        const struct inspect_group *g = &s->groups[i];
        /* the same group before: same index and name (a group made again there starts anew) */
        const struct inspect_group *b = p ? inspect_group_at(p, g->index) : NULL;
        if (b && strcmp(b->name, g->name) != 0)
            b = NULL;
        char label[48], age[16], deliv[16], ack[16], nack[16];
        group_label(g, label, sizeof label);
        counter_rate(b ? &b->delivered : NULL, g->delivered, dt, deliv, sizeof deliv);
        counter_rate(b ? &b->acked : NULL, g->acked, dt, ack, sizeof ack);
        counter_rate(b ? &b->nacked : NULL, g->nacked, dt, nack, sizeof nack);
        printf("%-24s %7u %8u %7u %6u %4u %7s %7s %7s %7s %7s %7s %6s lag=%llu%s%s\n", label,
               g->ready, g->inflight, g->delayed, g->dead, g->consumers, "", deliv, ack, nack,
               "", "", age_text(g->oldest_age_ms, age, sizeof age), (unsigned long long)g->lag,
               g->state == INSPECT_GROUP_ACTIVE ? "" : " ",
               g->state == INSPECT_GROUP_ACTIVE ? "" : inspect_group_state_name(g->state));
    }
}

static void table_draw(const struct top_table *now, const struct top_table *before)
{
    printf("%-24s %7s %8s %7s %6s %4s %7s %7s %7s %7s %7s %7s %6s %s\n", "NAME", "READY",
           "INFLIGHT", "DELAYED", "DEAD", "CONS", "PUB/s", "DELIV/s", "ACK/s", "NACK/s",
           "REDEL/s", "DLQ/s", "OLDEST", "WATCHDOG");
    for (size_t i = 0; i < now->n; i++) {
        const struct top_row *r = &now->rows[i];
        if (!r->ok) {
            printf("%-24s error: %s\n", r->name, inspect_strerror(r->err));
            continue;
        }
        const struct inspect_snapshot *s = &r->snap;
        const struct top_row *b = table_find(before, r->name);
        const struct inspect_snapshot *p = b && b->ok ? &b->snap : NULL;
        char rates[6][16], age[16], wd[48];
        double dt = p && s->taken_ns > p->taken_ns ? (double)(s->taken_ns - p->taken_ns) / 1e9 : 0;
        for (int c = 0; c < 6; c++) {
            int k = rate_columns[c];
            counter_rate(p ? &p->counters[k] : NULL, s->counters[k], dt, rates[c],
                         sizeof rates[c]);
        }
        printf("%-24s %7u %8u %7u %6u %4u %7s %7s %7s %7s %7s %7s %6s %s\n", r->name,
               s->slots[INSPECT_SLOT_READY], s->slots[INSPECT_SLOT_INFLIGHT],
               s->slots[INSPECT_SLOT_DELAYED], s->slots[INSPECT_SLOT_DEAD], s->consumers,
               rates[0], rates[1], rates[2], rates[3], rates[4], rates[5],
               age_text(s->oldest_age_ms, age, sizeof age),
               inspect_watchdog_text(s, wd, sizeof wd));
        table_draw_groups(s, p);
    }
    if (now->n == 0)
        printf("(no queue)\n");
}

static void frame_title(uint32_t interval_ms)
{
    time_t t = time(NULL);
    struct tm tm;
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", localtime_r(&t, &tm));
    fputs(ANSI_HOME_CLEAR, stdout);
    printf("shmq top - %s - every %u ms (Ctrl-C to quit)\n\n", when, interval_ms);
}

/* Several queues (names NULL: all): a table per frame. */
static int top_table(char **names, size_t n, uint32_t interval_ms, uint64_t iterations)
{
    struct top_table prev = {0}, now = {0};
    int err = table_take(names, n, &prev);
    for (uint64_t frame = 0;
         !err && !stop_requested && (iterations == 0 || frame < iterations); frame++) {
        sleep_ms(interval_ms);
        if (stop_requested)
            break;
        if ((err = table_take(names, n, &now)) != 0)
            break;
        frame_title(interval_ms);
        table_draw(&now, &prev);
        table_free(&prev);
        prev = now;
        if (fflush(stdout) != 0)
            break; /* main() reports the write error */
    }
    table_free(&prev);
    if (err) {
        fprintf(stderr, "%s top: cannot read %s: %s\n", cli_progname, inspect_segment_dir,
                strerror(-err));
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}

int cmd_top(int argc, char **argv)
{
    static const struct option opts[] = {{"interval-ms", required_argument, NULL, 'i'},
                                         {"iterations", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    uint32_t interval_ms = 1000;
    uint64_t iterations = 0;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":hi:n:", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if ((rc = cli_u32("top", "--interval-ms", optarg, 10, 3600000, &interval_ms)))
                return rc;
            break;
        case 'n':
            if ((rc = cli_u64("top", "--iterations", optarg, 1, UINT64_MAX, &iterations)))
                return rc;
            break;
        case 'h': cmd_top_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("top", c, argv);
        }
    }
    for (int i = optind; i < argc; i++)
        if ((rc = cli_name("top", argv[i])) != 0)
            return rc;

    struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: interrupt the sleep */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (argc - optind != 1)
        return top_table(optind < argc ? argv + optind : NULL, (size_t)(argc - optind),
                         interval_ms, iterations);
    const char *name = argv[optind];

    struct inspect_snapshot prev, now;
    int err = inspect_queue(name, &prev);
    if (err) {
        fprintf(stderr, "%s top: %s: %s\n", cli_progname, name, inspect_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    rc = CLI_EXIT_OK;
    for (uint64_t frame = 0; !stop_requested && (iterations == 0 || frame < iterations); frame++) {
        sleep_ms(interval_ms);
        if (stop_requested)
            break;
        if ((err = inspect_queue(name, &now)) != 0) {
            fprintf(stderr, "%s top: %s: %s\n", cli_progname, name, inspect_strerror(err));
            rc = CLI_EXIT_RUNTIME;
            break;
        }
        frame_title(interval_ms);
        struct emitter e;
        emit_init(&e, stdout, false);
        stat_emit(&e, name, &now, &prev);
        emit_finish(&e);
        if (fflush(stdout) != 0) {
            inspect_snapshot_free(&now);
            break; /* main() reports the write error */
        }
        inspect_snapshot_free(&prev);
        prev = now;
    }
    inspect_snapshot_free(&prev);
    return rc;
}
