/*
 * replay.c - `shmq replay NAME [--from ID|TIME] [--count N] [--follow] [--json]`: print a
 * queue's history from its write-ahead log (include/shmq/replay.h), one message per line.
 *
 * It reads the log read-only: nothing is received, acked or changed, and live consumers do not
 * notice it. Without --follow it stops at the end of what is written now; with it, it keeps
 * polling the log for new messages until --count, SIGINT or SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "shmq/replay.h"

void cmd_replay_help(FILE *out)
{
    fprintf(
        out,
        "Usage: %s replay NAME [--from ID|TIME] [--count N] [--follow] [--json]\n"
        "\n"
        "Print the messages published to the queue NAME, as its write-ahead log still holds\n"
        "them, in log order (publish order for one producer), one per line. Nothing is\n"
        "consumed or acked: live consumers are not disturbed. The log keeps history only as\n"
        "long as retention does (a file is deleted once no message in the queue refers to it),\n"
        "and a queue created with durability none has no log.\n"
        "\n"
        "Options:\n"
        "  -f, --from ID|TIME  start at message id ID (messages with id >= ID), or at TIME\n"
        "                      (messages published at or after it). TIME is unix ms (a number\n"
        "                      of 13 digits or more, or ms:N) or ISO-8601 in UTC or with an\n"
        "                      offset: 2026-11-25T19:00:00Z, 2026-11-25T19:00:00.250+01:00,\n"
        "                      2026-11-25 (midnight UTC). A number below 10^12 is an id (id:N\n"
        "                      forces an id). Default: everything the log holds\n"
        "  -c, --count N       stop after N messages\n"
        "  -F, --follow        at the end of the log, wait for new messages (poll) until\n"
        "                      --count, SIGINT or SIGTERM\n"
        "  --json              one JSON object per line: {\"id\":N,\"unix_ms\":N,\"len\":N,\n"
        "                      \"data\":\"...\"}, or \"data_b64\":\"...\" (base64) for a payload\n"
        "                      that is not valid UTF-8\n"
        "  -h, --help          this text\n"
        "\n"
        "Exit status: 0 done; 1 runtime error (no such queue, no log, stdout could not be\n"
        "written), or history was missing: the log no longer reaches back to --from\n"
        "(retention deleted it) or a damaged or truncated log file was met (what could be\n"
        "read is printed; a warning on stderr says what was missing); 2 usage error.\n"
        "\n"
        "Examples:\n"
        "  %s replay orders --from 1000 --count 10        # ids 1000 on, ten of them\n"
        "  %s replay orders --from 2026-11-25T19:00:00Z   # since 19:00 UTC\n"
        "  %s replay orders --from 1764097200000 --json | jq -r .data\n"
        "  %s replay orders --follow                      # all, then new ones as they come\n",
        cli_progname, cli_progname, cli_progname, cli_progname, cli_progname);
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Digits only, into *v (no overflow). */
static bool parse_u64(const char *s, uint64_t *v)
{
    if (!*s)
        return false;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return true;
}

/* ISO-8601: YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|(+|-)HH:MM]; no zone means UTC. */
static bool parse_iso8601(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, n = 0;
    double sec = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return false;
    s += n;
    if (*s == 'T' || *s == 't' || *s == ' ') {
        s++;
        if (sscanf(s, "%2d:%2d%n", &h, &mi, &n) != 2 || n != 5)
            return false;
        s += n;
        if (*s == ':') {
            char *end;
            sec = strtod(s + 1, &end);
            if (end == s + 1 || sec < 0 || sec >= 61)
                return false;
            s = end;
        }
    }
    int64_t offset_min = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int oh, om;
        int sign = *s == '-' ? -1 : 1;
        if (sscanf(s + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
            return false;
        offset_min = sign * (oh * 60 + om);
        s += 1 + n;
    }
    if (*s || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *ms = ((int64_t)t - offset_min * 60) * 1000 + (int64_t)(sec * 1000.0 + 0.5);
    return true;
}

/* --from: an id, unix ms or an ISO-8601 time (see the help). */
static int parse_from(const char *s, shmq_replay_from_t *from)
{
    uint64_t v;
    int64_t ms;
    memset(from, 0, sizeof(*from));
    if (strncmp(s, "id:", 3) == 0 && parse_u64(s + 3, &v) && v > 0) {
        from->id = v;
        return 0;
    }
    if (strncmp(s, "ms:", 3) == 0 && parse_u64(s + 3, &v) && v > 0 && v <= INT64_MAX) {
        from->unix_ms = (int64_t)v;
        return 0;
    }
    if (parse_u64(s, &v)) {
        if (v == 0)
            return cli_usage_error("replay", "--from: ids start at 1");
        if (v < 1000000000000ull) /* 10^12 ms is September 2001: below it, an id */
            from->id = v;
        else if (v <= INT64_MAX)
            from->unix_ms = (int64_t)v;
        else
            return cli_usage_error("replay", "--from: '%s' is out of range", s);
        return 0;
    }
    if (parse_iso8601(s, &ms) && ms > 0) {
        from->unix_ms = ms;
        return 0;
    }
    return cli_usage_error("replay",
                           "--from: '%s' is not an id, unix ms or an ISO-8601 time "
                           "(2026-11-25T19:00:00Z)",
                           s);
}

static bool print_msg(shmq_replay_t *r, const shmq_msg_t *m, int64_t unix_ms, bool json)
{
    if (json) {
        printf("{\"id\":%" PRIu64 ",\"unix_ms\":%" PRId64 ",\"len\":%zu,", m->id, unix_ms, m->len);
        json_payload(stdout, "data", m->data, m->len);
        shmq_header_t h[SHMQ_HEADERS_MAX];
        size_t n = 0;
        if (shmq_replay_headers(r, h, SHMQ_HEADERS_MAX, &n) == 0)
            json_headers(stdout, h, n < SHMQ_HEADERS_MAX ? n : SHMQ_HEADERS_MAX);
        fputs("}\n", stdout);
    } else {
        fwrite(m->data, 1, m->len, stdout);
        fputc('\n', stdout);
    }
    return !ferror(stdout);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: the loop checks stop_requested */
}

struct replay_opts {
    bool have_from, follow, json;
    shmq_replay_from_t from;
    uint64_t count; /* 0: no limit */
};

static int run(shmq_replay_t *r, const char *name, const struct replay_opts *o)
{
    uint64_t got = 0;
    int rc = CLI_EXIT_OK, idle_ms = 1;
    while (!stop_requested && (o->count == 0 || got < o->count)) {
        shmq_msg_t m;
        int err = shmq_replay_next(r, &m);
        if (err == -EAGAIN) {
            if (!o->follow)
                break;
            if (fflush(stdout) != 0)
                break;
            sleep_ms(idle_ms);
            idle_ms = idle_ms < 50 ? idle_ms * 2 : 50; /* poll, backing off to 50 ms */
            continue;
        }
        if (err == -ENODATA || err == -EBADMSG) {
            fprintf(stderr, "%s replay: %s: warning: %s\n", cli_progname, name,
                    err == -ENODATA ? "history missing: the log no longer holds it (retention "
                                      "deleted it); going on with what it holds"
                                    : "a damaged or truncated log file: its unreadable "
                                      "records were skipped");
            rc = CLI_EXIT_RUNTIME;
            continue;
        }
        if (err) {
            fprintf(stderr, "%s replay: %s: %s\n", cli_progname, name, shmq_strerror(err));
            return CLI_EXIT_RUNTIME;
        }
        idle_ms = 1;
        if (!print_msg(r, &m, shmq_replay_unix_ms(r), o->json)) {
            fprintf(stderr, "%s replay: %s: writing stdout: %s\n", cli_progname, name,
                    strerror(errno));
            return CLI_EXIT_RUNTIME;
        }
        got++;
    }
    return rc;
}

enum { OPT_JSON = 256 };

int cmd_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'}, {"count", required_argument, NULL, 'c'},
        {"follow", no_argument, NULL, 'F'},     {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},       {0}};
    struct replay_opts o = {0};
    int c, rc;
    while ((c = getopt_long(argc, argv, ":f:c:Fh", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if ((rc = parse_from(optarg, &o.from)))
                return rc;
            o.have_from = true;
            break;
        case 'c':
            if ((rc = cli_u64("replay", "--count", optarg, 1, UINT64_MAX, &o.count)))
                return rc;
            break;
        case 'F': o.follow = true; break;
        case OPT_JSON: o.json = true; break;
        case 'h': cmd_replay_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("replay", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("replay", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("replay", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("replay", name)) != 0)
        return rc;

    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed pipe is a write error */

    shmq_t *q = NULL;
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s replay: %s: %s\n", cli_progname, name, shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    shmq_replay_t *r = NULL;
    err = shmq_replay_open(q, o.have_from ? &o.from : NULL, &r);
    if (err) {
        fprintf(stderr, "%s replay: %s: %s\n", cli_progname, name,
                err == -EOPNOTSUPP ? "the queue has no log (durability none)" : shmq_strerror(err));
        shmq_close(q);
        return CLI_EXIT_RUNTIME;
    }
    rc = run(r, name, &o);
    shmq_replay_close(r);
    shmq_close(q);
    return rc;
}
