/*
 * pub.c - `shmq pub NAME [MSG...]`: publish each argument, or else each line of stdin, as one
 * message (shmq_publish_timed; with --delay-ms, --ttl-ms or --header, shmq_publish_ex). Stops at
 * the first message that fails, so a script knows that exactly the messages before it went in.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define FULL_POLL_MS 10 /* --delay-ms on a full queue: retry this often (no API waits for it) */

void cmd_pub_help(FILE *out)
{
    fprintf(out,
            "Usage: %s pub NAME [options] [MSG...]\n"
            "\n"
            "Publish each MSG as one message to the queue NAME, in order. Without MSG, publish\n"
            "each line of stdin (without its newline; an empty line is an empty message).\n"
            "When the queue is full, wait for a free slot (as a pipe makes its writer wait),\n"
            "at most --timeout-ms. Stops at the first message that cannot be published.\n"
            "\n"
            "Options:\n"
            "  -t, --timeout-ms N  wait at most N ms per message for a free slot: 0 fails at\n"
            "                      once on a full queue, -1 waits forever (default -1)\n"
            "  -d, --delay-ms N    each message becomes ready N ms after it is published\n"
            "                      (delayed publish; 0: at once, the default). Until then no\n"
            "                      consumer gets it and `shmq stat` counts it as delayed; a\n"
            "                      rebuild from the log keeps what is left of the delay\n"
            "  -H, --header K=V    give each message the header K with the value V (repeat it\n"
            "                      for more; the queue must be made with --max-header-bytes).\n"
            "                      K: printable ASCII without ':' or '='; V: the rest, after\n"
            "                      the first '='. `shmq sub --json` shows them\n"
            "  --ttl-ms N          each message expires N ms after it is published unless\n"
            "                      delivered before (dropped or dead-lettered, as the queue\n"
            "                      was created: `create --expire`); 0: the queue's --ttl-ms\n"
            "  -v, --verbose       print the id of each message published, one per line\n"
            "  -h, --help          this text\n"
            "  --                  what follows is MSG, even if it starts with '-'\n"
            "\n"
            "Exit status: 0 every message was published; 1 runtime error: no such queue, a\n"
            "corrupted segment, a message larger than max_msg_size, the queue stayed full for\n"
            "--timeout-ms (stderr says which message failed and how many went in before it);\n"
            "2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s pub orders 'hello world'\n"
            "  %s pub orders --delay-ms 60000 'remind me in a minute'\n"
            "  %s pub orders -H content-type=application/json -H trace=abc '{\"n\":1}'\n"
            "  %s pub quotes --ttl-ms 5000 'EURUSD 1.0842'   # stale after 5 s\n"
            "  %s pub -v orders one two three       # prints three ids\n"
            "  seq 1000 | %s pub orders --timeout-ms 5000\n"
            "  %s sub in --count 10 | tr a-z A-Z | %s pub out   # a pipeline stage\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname,
            cli_progname, cli_progname, cli_progname);
}

struct pub {
    shmq_t *q;
    const char *name;
    int timeout_ms;
    uint32_t delay_ms, ttl_ms;
    bool verbose;
    uint64_t done;
    shmq_header_t headers[SHMQ_HEADERS_MAX]; /* --header, in order */
    uint32_t n_headers;
};

/* A publish with options (a delay, headers, a time to live) that waits up to timeout_ms (-1: forever) for a
 * free slot, polling (no API call waits for one with options). */
static int publish_ex_timed(struct pub *p, const char *data, size_t len, uint64_t *id)
{
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.delay_ms = p->delay_ms;
    o.headers = p->headers;
    o.n_headers = p->n_headers;
    o.ttl_ms = p->ttl_ms;
    int waited = 0;
    for (;;) {
        int err = shmq_publish_ex(p->q, data, len, &o, id);
        if (err != -EAGAIN || (p->timeout_ms >= 0 && waited >= p->timeout_ms))
            return err;
        struct timespec ts = {0, FULL_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
        waited += FULL_POLL_MS;
    }
}

/* Publish one message: 0, or CLI_EXIT_RUNTIME (message printed). */
static int publish_one(struct pub *p, const char *data, size_t len)
{
    uint64_t id = 0;
    int err = p->delay_ms || p->n_headers || p->ttl_ms
                  ? publish_ex_timed(p, data, len, &id)
                  : shmq_publish_timed(p->q, data, len, &id, p->timeout_ms);
    if (err) {
        char buf[512];
        const char *why = cli_why(err, p->name, NULL, buf, sizeof buf);
        if (err == -EAGAIN || err == -ETIMEDOUT)
            why = "queue full (no free slot within --timeout-ms)";
        else if (p->n_headers && err == -ENOTSUP)
            why = "the queue carries no headers (create it with --max-header-bytes N)";
        else if (p->n_headers && (err == -EMSGSIZE || err == -EINVAL) &&
                 *shmq_last_error_detail())
            why = shmq_last_error_detail();
        fprintf(stderr,
                "%s pub: %s: message %" PRIu64 " (%zu bytes) not published: %s; %" PRIu64
                " published before it\n",
                cli_progname, p->name, p->done + 1, len, why, p->done);
        return CLI_EXIT_RUNTIME;
    }
    p->done++;
    if (p->verbose)
        printf("%" PRIu64 "\n", id);
    return 0;
}

static int publish_stdin(struct pub *p)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, stdin)) != -1) {
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        rc = publish_one(p, line, len);
    }
    if (rc == 0 && ferror(stdin)) {
        fprintf(stderr, "%s pub: reading stdin: %s\n", cli_progname, strerror(errno));
        rc = CLI_EXIT_RUNTIME;
    }
    free(line);
    return rc;
}

int cmd_pub(int argc, char **argv)
{
    static const struct option opts[] = {{"timeout-ms", required_argument, NULL, 't'},
                                         {"delay-ms", required_argument, NULL, 'd'},
                                         {"header", required_argument, NULL, 'H'},
                                         {"ttl-ms", required_argument, NULL, 'T'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct pub p = {.timeout_ms = -1};
    int c, rc;
    while ((c = getopt_long(argc, argv, ":hd:t:vH:", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if ((rc = cli_timeout("pub", "--timeout-ms", optarg, &p.timeout_ms)))
                return rc;
            break;
        case 'T':
            if ((rc = cli_u32("pub", "--ttl-ms", optarg, 0, UINT32_MAX, &p.ttl_ms)))
                return rc;
            break;
        case 'd':
            if ((rc = cli_u32("pub", "--delay-ms", optarg, 0, UINT32_MAX, &p.delay_ms)))
                return rc;
            break;
        case 'H': {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return cli_usage_error("pub", "--header: '%s' is not K=V", optarg);
            if (p.n_headers == SHMQ_HEADERS_MAX)
                return cli_usage_error("pub", "--header: more than %u", SHMQ_HEADERS_MAX);
            p.headers[p.n_headers++] =
                (shmq_header_t){optarg, (size_t)(eq - optarg), eq + 1, strlen(eq + 1)};
            break;
        }
        case 'v': p.verbose = true; break;
        case 'h': cmd_pub_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("pub", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("pub", "missing queue NAME");
    p.name = argv[optind++];
    if ((rc = cli_name("pub", p.name)) != 0)
        return rc;

    int err = shmq_open(p.name, &p.q);
    if (err) {
        char why[512];
        fprintf(stderr, "%s pub: %s: %s\n", cli_progname, p.name,
                cli_why(err, p.name, NULL, why, sizeof why));
        return CLI_EXIT_RUNTIME;
    }
    rc = 0;
    if (optind < argc) {
        for (int i = optind; i < argc && rc == 0; i++)
            rc = publish_one(&p, argv[i], strlen(argv[i]));
    } else {
        rc = publish_stdin(&p);
    }
    err = shmq_close(p.q);
    if (err && rc == 0) {
        fprintf(stderr, "%s pub: %s: close: %s\n", cli_progname, p.name, shmq_strerror(err));
        rc = CLI_EXIT_RUNTIME;
    }
    return rc;
}
