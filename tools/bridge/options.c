/*
 * options.c - command line and config file of shmq-bridge.
 *
 * Both go through apply(): a config file (--config FILE) holds `key = value` lines whose keys
 * are the long option names (`out = orders:orders.eu`, `window = 512`), '#' starts a comment.
 * Routes add up from both; a scalar given twice keeps the last. Everything a route names is
 * checked here for syntax (queue name, subject tokens); that the queue exists and that a stream
 * captures the subject is checked at start by the routes (other exit codes).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "badopt.h"
#include "bridge.h"
#include "version.h"

enum {
    OPT_SERVER = 256,
    OPT_OUT,
    OPT_IN,
    OPT_CREATE_STREAM,
    OPT_WINDOW,
    OPT_BATCH,
    OPT_PUBLISH_TIMEOUT,
    OPT_RETRY_DELAY,
    OPT_LOCAL_WAIT,
    OPT_ACK_WAIT,
    OPT_DUP_WINDOW,
    OPT_STATS_INTERVAL,
    OPT_DRAIN_TIMEOUT,
    OPT_CONNECT_TIMEOUT,
    OPT_RECONNECT_MAX,
    OPT_HOST,
    OPT_CONFIG,
    OPT_METRICS_FILE,
};

static const struct option long_opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"out", required_argument, NULL, OPT_OUT},
    {"in", required_argument, NULL, OPT_IN},
    {"create-stream", required_argument, NULL, OPT_CREATE_STREAM},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"publish-timeout-ms", required_argument, NULL, OPT_PUBLISH_TIMEOUT},
    {"retry-delay-ms", required_argument, NULL, OPT_RETRY_DELAY},
    {"local-wait-ms", required_argument, NULL, OPT_LOCAL_WAIT},
    {"ack-wait-ms", required_argument, NULL, OPT_ACK_WAIT},
    {"dup-window-ms", required_argument, NULL, OPT_DUP_WINDOW},
    {"stats-interval-ms", required_argument, NULL, OPT_STATS_INTERVAL},
    {"drain-timeout-ms", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"connect-timeout-ms", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"reconnect-max-ms", required_argument, NULL, OPT_RECONNECT_MAX},
    {"host", required_argument, NULL, OPT_HOST},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"metrics-file", required_argument, NULL, OPT_METRICS_FILE},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, TOOL_OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f, const char *prog)
{
    fprintf(
        f,
        "Usage: %s [OPTIONS] --out QUEUE[@GROUP]:SUBJECT ... --in STREAM:DURABLE:QUEUE ...\n"
        "Bridge shmq queues and NATS JetStream, at least once in both directions.\n"
        "\n"
        "Routes (one or more, in any mix):\n"
        "  --out QUEUE[@GROUP]:SUBJECT  receive from local queue QUEUE as a shmq consumer\n"
        "                        (of consumer group GROUP; default: \"default\"), publish to\n"
        "                        JetStream SUBJECT (Nats-Msg-Id HOST/QUEUE[@GROUP]/ID, headers\n"
        "                        Shmq-Id, Shmq-Attempt, Shmq-Host, Shmq-Queue); ack locally only\n"
        "                        after JetStream's publish ack, nack (retry delay) on failure\n"
        "  --in STREAM:DURABLE:QUEUE[:FILTER]  pull from the durable consumer DURABLE of\n"
        "                        STREAM (created with FILTER subject if missing), publish each\n"
        "                        message into local queue QUEUE, ack to JetStream after that;\n"
        "                        a failed local publish is nacked with the retry delay\n"
        "  --create-stream NAME:SUBJ[,SUBJ...]  create the stream (file storage, duplicate\n"
        "                        window --dup-window-ms) if it does not exist\n"
        "\n"
        "Options:\n"
        "  --server URL[,URL]    NATS server(s) (default nats://127.0.0.1:4222)\n"
        "  --window N            out: publishes in flight per route (default 256)\n"
        "  --batch N             in: messages per fetch (default 256)\n"
        "  --publish-timeout-ms MS  out: publish ack wait before the message is nacked (5000)\n"
        "  --retry-delay-ms MS   delay of a nack on either side (1000)\n"
        "  --local-wait-ms MS    in: wait for room in a full local queue, then nak (30000)\n"
        "  --ack-wait-ms MS      in: AckWait of a consumer the bridge creates (30000)\n"
        "  --dup-window-ms MS    --create-stream: duplicate window (120000)\n"
        "  --stats-interval-ms MS  a counters line this often; 0: never (10000)\n"
        "  --drain-timeout-ms MS on SIGTERM, wait for publish acks this long (10000)\n"
        "  --connect-timeout-ms MS  initial connection attempt (2000)\n"
        "  --reconnect-max-ms MS cap of the reconnect backoff (2000); reconnects forever\n"
        "  --host NAME           source host in headers and message ids (default hostname)\n"
        "  --metrics-file PATH   write the counters there in the Prometheus text format\n"
        "                        every --stats-interval-ms (atomically: PATH.tmp, rename)\n"
        "  --config FILE         read `key = value` lines (keys: the long options above)\n"
        "  -h, --help            this text\n"
        "  --version             print \"shmq-bridge VERSION\" and exit\n"
        "\n"
        "Log: one logfmt line per event on stdout: connected, disconnected, reconnected,\n"
        "closed, nats_error, stream_created, stream_exists, consumer_created,\n"
        "route_started, route_stopped, publish_failed, ack_failed, fetch_failed,\n"
        "local_publish_failed, consumer_reopened, stats (per route: connected, bridged,\n"
        "duplicates, failed, stale, inflight, lag), stopping, stopped; a start-up error's\n"
        "event names what failed (connect_failed, queue_open_failed, ...).\n"
        "SIGTERM/SIGINT: stop taking messages, wait for the acks in flight, exit 0.\n"
        "\n"
        "Exit status: 0 stopped by a signal; 1 a route failed while running; 2 usage or\n"
        "config error (bad option, bad subject); 3 a local queue cannot be opened; 4 the NATS\n"
        "server cannot be reached at start; 5 JetStream refused a stream, consumer or subject.\n",
        prog);
}

/* A NATS subject: dot-separated non-empty tokens of printable non-space characters; '*' and
 * '>' only as whole tokens, and only if wildcards are allowed ('>' last). */
bool subject_valid(const char *s, bool wildcards)
{
    if (!s || !*s || strlen(s) >= BRIDGE_SUBJECT_MAX)
        return false;
    const char *tok = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == 0) {
            size_t len = (size_t)(p - tok);
            if (len == 0)
                return false;
            bool wild = len == 1 && (*tok == '*' || *tok == '>');
            if (wild && !wildcards)
                return false;
            if (len == 1 && *tok == '>' && *p != 0)
                return false;
            if (!wild)
                for (const char *c = tok; c < p; c++)
                    if (*c == '*' || *c == '>')
                        return false;
            if (*p == 0)
                return true;
            tok = p + 1;
        } else if (*p <= ' ' || *p == 0x7f) {
            return false;
        }
    }
}

static bool name_valid(const char *s, size_t max)
{
    if (!*s || strlen(s) > max)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return true;
}

static bool copy_field(char *dst, size_t size, const char *src, size_t len)
{
    if (len == 0 || len >= size)
        return false;
    memcpy(dst, src, len);
    dst[len] = 0;
    return true;
}

static int parse_u32(const char *prog, const char *name, const char *v, uint32_t min, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x < min || x > UINT32_MAX || *v == '-') {
        fprintf(stderr, "%s: --%s: expected an integer >= %u, got '%s'\n", prog, name, min, v);
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static struct route *new_route(struct bridge_opts *o, const char *prog)
{
    if (o->n_routes == BRIDGE_ROUTES_MAX) {
        fprintf(stderr, "%s: at most %d routes\n", prog, BRIDGE_ROUTES_MAX);
        return NULL;
    }
    struct route *r = &o->routes[o->n_routes];
    memset(r, 0, sizeof *r);
    r->o = o;
    return r;
}

/* --out QUEUE[@GROUP]:SUBJECT */
static int parse_out(struct bridge_opts *o, const char *prog, const char *v)
{
    struct route *r = new_route(o, prog);
    if (!r)
        return -1;
    const char *colon = strchr(v, ':');
    const char *at = memchr(v, '@', colon ? (size_t)(colon - v) : 0);
    const char *qend = at ? at : colon;
    r->kind = ROUTE_OUT;
    if (!colon || !copy_field(r->queue, sizeof r->queue, v, (size_t)(qend - v)) ||
        !name_valid(r->queue, SHMQ_NAME_MAX) ||
        (at && (!copy_field(r->group, sizeof r->group, at + 1, (size_t)(colon - at - 1)) ||
                !name_valid(r->group, SHMQ_GROUP_NAME_MAX)))) {
        fprintf(stderr,
                "%s: --out '%s': expected QUEUE[@GROUP]:SUBJECT with queue and group names "
                "of [A-Za-z0-9._-]\n",
                prog, v);
        return -1;
    }
    if (!subject_valid(colon + 1, false)) {
        fprintf(stderr,
                "%s: --out '%s': bad subject '%s' (dot-separated tokens, no spaces, no "
                "wildcards)\n",
                prog, v, colon + 1);
        return -1;
    }
    snprintf(r->subject, sizeof r->subject, "%s", colon + 1);
    o->n_routes++;
    return 0;
}

/* --in STREAM:DURABLE:QUEUE[:FILTER] */
static int parse_in(struct bridge_opts *o, const char *prog, const char *v)
{
    struct route *r = new_route(o, prog);
    if (!r)
        return -1;
    r->kind = ROUTE_IN;
    const char *c1 = strchr(v, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    const char *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
    size_t qlen = c2 ? (c3 ? (size_t)(c3 - c2 - 1) : strlen(c2 + 1)) : 0;
    if (!c1 || !c2 || !copy_field(r->stream, sizeof r->stream, v, (size_t)(c1 - v)) ||
        !copy_field(r->durable, sizeof r->durable, c1 + 1, (size_t)(c2 - c1 - 1)) ||
        !copy_field(r->queue, sizeof r->queue, c2 + 1, qlen)) {
        fprintf(stderr, "%s: --in '%s': expected STREAM:DURABLE:QUEUE[:FILTER]\n", prog, v);
        return -1;
    }
    if (!name_valid(r->stream, 200) || !name_valid(r->durable, 200) || strchr(r->durable, '.') ||
        strchr(r->stream, '.')) {
        fprintf(stderr, "%s: --in '%s': stream and durable names are [A-Za-z0-9_-]\n", prog, v);
        return -1;
    }
    if (!name_valid(r->queue, SHMQ_NAME_MAX)) {
        fprintf(stderr, "%s: --in '%s': bad queue name '%s' ([A-Za-z0-9._-])\n", prog, v, r->queue);
        return -1;
    }
    if (c3) {
        if (!subject_valid(c3 + 1, true)) {
            fprintf(stderr, "%s: --in '%s': bad filter subject '%s'\n", prog, v, c3 + 1);
            return -1;
        }
        snprintf(r->subject, sizeof r->subject, "%s", c3 + 1);
    }
    o->n_routes++;
    return 0;
}

/* --create-stream NAME:SUBJ[,SUBJ...] */
static int parse_stream(struct bridge_opts *o, const char *prog, const char *v)
{
    if (o->n_streams == BRIDGE_ROUTES_MAX) {
        fprintf(stderr, "%s: at most %d streams\n", prog, BRIDGE_ROUTES_MAX);
        return -1;
    }
    struct stream_spec *s = &o->streams[o->n_streams];
    const char *colon = strchr(v, ':');
    if (!colon || !copy_field(s->name, sizeof s->name, v, (size_t)(colon - v)) ||
        !name_valid(s->name, 200) || strchr(s->name, '.') ||
        !copy_field(s->subjects, sizeof s->subjects, colon + 1, strlen(colon + 1))) {
        fprintf(stderr, "%s: --create-stream '%s': expected NAME:SUBJECT[,SUBJECT...]\n", prog, v);
        return -1;
    }
    char tmp[BRIDGE_SUBJECT_MAX], *save = NULL;
    snprintf(tmp, sizeof tmp, "%s", s->subjects);
    for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (!subject_valid(t, true)) {
            fprintf(stderr, "%s: --create-stream '%s': bad subject '%s'\n", prog, v, t);
            return -1;
        }
    o->n_streams++;
    return 0;
}

static int read_config(struct bridge_opts *o, const char *prog, const char *path, int depth);

static int apply(struct bridge_opts *o, const char *prog, int opt, const char *name, const char *v,
                 int depth)
{
    switch (opt) {
    case OPT_SERVER: {
        char *dup = strdup(v);
        if (!dup)
            return -1;
        o->server = dup; /* lives as long as the process */
        return 0;
    }
    case OPT_OUT: return parse_out(o, prog, v);
    case OPT_IN: return parse_in(o, prog, v);
    case OPT_CREATE_STREAM: return parse_stream(o, prog, v);
    case OPT_WINDOW: return parse_u32(prog, name, v, 1, &o->window);
    case OPT_BATCH: return parse_u32(prog, name, v, 1, &o->batch);
    case OPT_PUBLISH_TIMEOUT: return parse_u32(prog, name, v, 1, &o->publish_timeout_ms);
    case OPT_RETRY_DELAY: return parse_u32(prog, name, v, 0, &o->retry_delay_ms);
    case OPT_LOCAL_WAIT: return parse_u32(prog, name, v, 0, &o->local_wait_ms);
    case OPT_ACK_WAIT: return parse_u32(prog, name, v, 1, &o->ack_wait_ms);
    case OPT_DUP_WINDOW: return parse_u32(prog, name, v, 1, &o->dup_window_ms);
    case OPT_STATS_INTERVAL: return parse_u32(prog, name, v, 0, &o->stats_interval_ms);
    case OPT_DRAIN_TIMEOUT: return parse_u32(prog, name, v, 0, &o->drain_timeout_ms);
    case OPT_CONNECT_TIMEOUT: return parse_u32(prog, name, v, 1, &o->connect_timeout_ms);
    case OPT_RECONNECT_MAX: return parse_u32(prog, name, v, 1, &o->reconnect_max_ms);
    case OPT_HOST:
        if (!name_valid(v, BRIDGE_HOST_MAX - 1)) {
            fprintf(stderr, "%s: --host '%s': expected [A-Za-z0-9._-], at most %d bytes\n", prog, v,
                    BRIDGE_HOST_MAX - 1);
            return -1;
        }
        snprintf(o->host, sizeof o->host, "%s", v);
        return 0;
    case OPT_CONFIG: return read_config(o, prog, v, depth + 1);
    case OPT_METRICS_FILE: {
        char *dup = strdup(v);
        if (!dup || !*dup || strlen(dup) > 4000) {
            fprintf(stderr, "%s: --metrics-file: expected a path\n", prog);
            free(dup);
            return -1;
        }
        o->metrics_file = dup; /* lives as long as the process */
        return 0;
    }
    }
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static int read_config(struct bridge_opts *o, const char *prog, const char *path, int depth)
{
    if (depth > 4) {
        fprintf(stderr, "%s: %s: config files nest too deep\n", prog, path);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: --config %s: %s\n", prog, path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            fprintf(stderr, "%s: %s:%d: expected key = value\n", prog, path, lineno);
            rc = -1;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        const struct option *opt = NULL;
        for (const struct option *p = long_opts; p->name; p++)
            if (p->has_arg == required_argument && strcmp(p->name, key) == 0)
                opt = p;
        if (!opt) {
            fprintf(stderr, "%s: %s:%d: unknown key '%s'\n", prog, path, lineno, key);
            rc = -1;
            break;
        }
        if (apply(o, prog, opt->val, opt->name, val, depth) < 0) {
            fprintf(stderr, "%s: (in %s:%d)\n", prog, path, lineno);
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

int opts_parse(struct bridge_opts *o, int argc, char **argv)
{
    const char *prog = "shmq-bridge"; /* in messages, whatever the path */
    memset(o, 0, sizeof *o);
    o->server = "nats://127.0.0.1:4222";
    o->window = 256;
    o->batch = 256;
    o->publish_timeout_ms = 5000;
    o->retry_delay_ms = 1000;
    o->local_wait_ms = 30000;
    o->ack_wait_ms = 30000;
    o->dup_window_ms = 120000;
    o->stats_interval_ms = 10000;
    o->drain_timeout_ms = 10000;
    o->connect_timeout_ms = 2000;
    o->reconnect_max_ms = 2000;
    if (gethostname(o->host, sizeof o->host) != 0 || !name_valid(o->host, BRIDGE_HOST_MAX - 1))
        snprintf(o->host, sizeof o->host, "localhost");

    int c, idx;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_opts, &idx)) != -1) {
        if (c == 'h') {
            usage(stdout, prog);
            return 1;
        }
        if (c == TOOL_OPT_VERSION)
            return tool_print_version(prog) == 0 ? 1 : -1;
        if (c == '?' || c == ':') {
            tool_bad_option(prog, NULL, c, argv);
            return -1;
        }
        if (apply(o, prog, c, long_opts[idx].name, optarg, 0) < 0)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, argv[optind]);
        return -1;
    }
    if (o->n_routes == 0) {
        fprintf(stderr, "%s: no route: give at least one --out or --in (see --help)\n", prog);
        return -1;
    }
    return 0;
}
