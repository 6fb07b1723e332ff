/*
 * pub.c - `shmq pub NAME [MSG...]`: publish each argument, or else each line of stdin, as one
 * message (shmq_publish_timed; with --delay-ms, --ttl-ms or --header, shmq_publish_ex). Stops at
 * the first message that fails, so a script knows that exactly the messages before it went in.
 *
 * Plain messages (no option) go in batches (shmq_publish_batch, up to PUB_BATCH a call): the
 * arguments, or the lines of stdin that one read() returned. pub is a pipeline stage, so it
 * never waits to fill a batch: read() hands over what the pipe holds now (one line, when one
 * line was written), and every complete line of it is published before the next read. A batch
 * stopped by a full queue goes on with its next message published alone (shmq_publish_timed,
 * waiting up to --timeout-ms as every message does); one stopped by a bad message (checked
 * before any of the batch is published) goes on one by one, so the messages before the bad one
 * go in and the error names it, as without batches.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define FULL_POLL_MS 10 /* --delay-ms on a full queue: retry this often (no API waits for it) */
#define PUB_BATCH 64    /* messages per shmq_publish_batch (the library's run of ids) */
#define READ_CHUNK 65536

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

/* Say that message p->done + 1 (len bytes) failed with err; CLI_EXIT_RUNTIME. */
static int fail(struct pub *p, int err, size_t len)
{
    char buf[512];
    const char *why = cli_why(err, p->name, NULL, buf, sizeof buf);
    if (err == -EAGAIN || err == -ETIMEDOUT)
        why = "queue full (no free slot within --timeout-ms)";
    else if (p->n_headers && err == -ENOTSUP)
        why = "the queue carries no headers (create it with --max-header-bytes N)";
    else if (p->n_headers && (err == -EMSGSIZE || err == -EINVAL) && *shmq_last_error_detail())
        why = shmq_last_error_detail();
    fprintf(stderr,
            "%s pub: %s: message %" PRIu64 " (%zu bytes) not published: %s; %" PRIu64
            " published before it\n",
            cli_progname, p->name, p->done + 1, len, why, p->done);
    return CLI_EXIT_RUNTIME;
}

/* Publish one message: 0, or CLI_EXIT_RUNTIME (message printed). */
static int publish_one(struct pub *p, const char *data, size_t len)
{
    uint64_t id = 0;
    int err = p->delay_ms || p->n_headers || p->ttl_ms
                  ? publish_ex_timed(p, data, len, &id)
                  : shmq_publish_timed(p->q, data, len, &id, p->timeout_ms);
    if (err)
        return fail(p, err, len);
    p->done++;
    if (p->verbose)
        printf("%" PRIu64 "\n", id);
    return 0;
}

/* Publish msgs[0..n) in order: 0, or CLI_EXIT_RUNTIME at the first that failed (printed). */
static int publish_msgs(struct pub *p, const shmq_iov_t *msgs, size_t n)
{
    size_t i = 0;
    if (p->delay_ms || p->n_headers || p->ttl_ms) { /* options: no batch call carries them */
        int rc = 0;
        for (; i < n && rc == 0; i++)
            rc = publish_one(p, msgs[i].data, msgs[i].len);
        return rc;
    }
    while (i < n) {
        uint64_t ids[PUB_BATCH];
        size_t k = n - i < PUB_BATCH ? n - i : PUB_BATCH, done = 0;
        int err = shmq_publish_batch(p->q, msgs + i, k, ids, &done);
        if (err == -EIO) /* SYNC: queued, but the flush that covers them failed: reported as */
            done = 0;    /* a single publish's -EIO of the batch's first message */
        for (size_t j = 0; j < done && p->verbose; j++)
            printf("%" PRIu64 "\n", ids[j]);
        p->done += done;
        i += done;
        if (err == 0)
            continue;
        if (err != -EAGAIN && err != -EMSGSIZE && err != -EINVAL)
            return fail(p, err, msgs[i].len);
        /* Full: this one waits for a free slot (--timeout-ms); bad (nothing of the batch was
         * published): one by one up to the bad one, which publish_one names. */
        int rc = publish_one(p, msgs[i].data, msgs[i].len);
        if (rc)
            return rc;
        i++;
    }
    return 0;
}

/* Each line of stdin as one message, published as soon as read() returned it: every complete
 * line that one read() brought (up to PUB_BATCH a batch) before reading again. At the end of
 * input a last line without its newline is a message too, as getline() would return it. */
static int publish_stdin(struct pub *p)
{
    size_t cap = READ_CHUNK, have = 0;
    char *buf = malloc(cap);
    shmq_iov_t msgs[PUB_BATCH];
    int rc = 0;
    bool eof = false;
    if (!buf) {
        fprintf(stderr, "%s pub: out of memory\n", cli_progname);
        return CLI_EXIT_RUNTIME;
    }
    while (rc == 0 && !eof) {
        if (have == cap) { /* a line longer than the buffer: grow it */
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                fprintf(stderr, "%s pub: out of memory for a line of %zu bytes\n", cli_progname,
                        have);
                rc = CLI_EXIT_RUNTIME;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = read(STDIN_FILENO, buf + have, cap - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "%s pub: reading stdin: %s\n", cli_progname, strerror(errno));
            rc = CLI_EXIT_RUNTIME;
            break;
        }
        eof = r == 0;
        have += (size_t)r;
        size_t start = 0, n = 0;
        for (;;) {
            char *nl = memchr(buf + start, '\n', have - start);
            if (!nl && !(eof && start < have))
                break;
            size_t len = nl ? (size_t)(nl - (buf + start)) : have - start;
            msgs[n++] = (shmq_iov_t){buf + start, len};
            start += len + (nl != NULL);
            if (n == PUB_BATCH) {
                if ((rc = publish_msgs(p, msgs, n)) != 0)
                    break;
                n = 0;
            }
        }
        if (rc == 0 && n)
            rc = publish_msgs(p, msgs, n);
        memmove(buf, buf + start, have - start);
        have -= start;
    }
    free(buf);
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
        for (int i = optind; i < argc && rc == 0; i += PUB_BATCH) {
            shmq_iov_t msgs[PUB_BATCH];
            size_t n = 0;
            for (int j = i; j < argc && n < PUB_BATCH; j++)
                msgs[n++] = (shmq_iov_t){argv[j], strlen(argv[j])};
            rc = publish_msgs(&p, msgs, n);
        }
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
