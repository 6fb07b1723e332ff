/*
 * sub.c - `shmq sub NAME [--count N] [--timeout-ms N] [--ack|--nack] [--json]`: consume
 * messages and print each on one line of stdout.
 *
 * The order per message is: receive, write and flush the line, then ack (or nack). A message
 * whose line could not be written (the reader of the pipe went away: EPIPE, SIGPIPE ignored)
 * is not acked: closing the consumer gives it back to the queue. "Written" means handed to
 * the kernel: lines that sit in a pipe's buffer when its reader exits were acked and are lost
 * to the queue (`sub | head -1` consumes up to a pipe's worth), so a reader that wants N
 * messages says --count N. A helper thread keeps the consumer's heartbeat fresh while a slow
 * reader holds up a write. SIGINT and SIGTERM end the loop cleanly (messages in hand go back).
 *
 * Batches: shmq_receive_batch takes what is ready (up to SUB_BATCH, never more than --count
 * still wants: it waits as shmq_receive for the first, then takes only what is there), the
 * batch's lines are rendered into memory and handed to the kernel with write(), and exactly
 * the messages whose whole line was written are acked (shmq_ack_batch) or nacked: a write that
 * stops part way (EPIPE, EFBIG past ulimit -f) leaves the message it stopped in, and the ones
 * after it, unacked, as the per-message write and flush did. While stdout cannot take more at
 * once (poll: a pipe whose reader is behind), sub takes one message at a time, as it did before
 * batches: a message then waits in hand only for its own line, not for a batch's lines before
 * it, so a slow reader does not run later messages past their ack deadline.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define SUB_BATCH 64       /* messages per shmq_receive_batch */
#define STOP_CHECK_MS 1000 /* longest receive wait between two looks at stop_requested */

void cmd_sub_help(FILE *out)
{
    fprintf(
        out,
        "Usage: %s sub NAME [--count N] [--timeout-ms N] [--ack | --nack] [--json]\n"
        "\n"
        "Consume messages from the queue NAME and print each payload on its own line of\n"
        "stdout, as it arrives (a payload that holds newlines spans several lines: use\n"
        "--json for such data). Each message is acked once its line is written; one that\n"
        "cannot be written (the pipe's reader left) goes back to the queue. Lines still in a\n"
        "pipe's buffer when its reader exits were acked: to take N messages, say --count N\n"
        "(not `| head -n N`).\n"
        "\n"
        "Options:\n"
        "  -c, --count N       stop after N messages (default: run until --timeout-ms,\n"
        "                      SIGINT or SIGTERM)\n"
        "  -t, --timeout-ms N  stop after N ms in all (default -1: no limit)\n"
        "  --ack               acknowledge each message after printing it (the default)\n"
        "  --nack              give each message back after printing it, for redelivery\n"
        "                      after the queue's backoff delay (or to the dead letters once\n"
        "                      it reaches max_attempts)\n"
        "  --json              one JSON object per line: {\"id\":N,\"attempt\":N,\n"
        "                      \"redelivered\":BOOL,\"len\":N,\"data\":\"...\"}; data is the\n"
        "                      payload as it is when it is valid UTF-8 (control characters\n"
        "                      escaped), else \"data_b64\":\"...\" holds it in base64\n"
        "  -n, --name NAME     the consumer's name in the registry (default shmq-sub)\n"
        "  -g, --group GROUP   receive in consumer group GROUP (`shmq group`; default: the\n"
        "                      group \"default\")\n"
        "  -h, --help          this text\n"
        "\n"
        "Exit status: 0 --count messages were consumed, or (without --count) the run\n"
        "ended by --timeout-ms or a signal; 1 runtime error (no such queue, corrupted\n"
        "segment, the consumer was fenced, stdout could not be written); 2 usage error;\n"
        "4 --timeout-ms passed before --count messages came (those that came are printed).\n"
        "\n"
        "Examples:\n"
        "  %s sub orders --count 1                  # one message, then exit\n"
        "  %s sub orders --timeout-ms 5000 > out    # whatever comes within 5 s\n"
        "  seq 5 | %s pub q && %s sub q --count 5 | sort -n\n"
        "  %s sub orders --count 10 --json | jq -r .data\n",
        cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname);
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Render one message (received by c) as its line, into out. */
static void print_msg(FILE *out, shmq_consumer_t *c, const shmq_msg_t *m, bool json)
{
    if (json) {
        fprintf(out,
                "{\"id\":%" PRIu64 ",\"attempt\":%" PRIu32 ",\"redelivered\":%s,\"len\":%zu,",
                m->id, m->attempt, (m->flags & SHMQ_MSG_REDELIVERED) ? "true" : "false", m->len);
        json_payload(out, "data", m->data, m->len);
        shmq_header_t h[SHMQ_HEADERS_MAX];
        size_t n = 0;
        if (shmq_msg_headers(c, m, h, SHMQ_HEADERS_MAX, &n) == 0)
            json_headers(out, h, n < SHMQ_HEADERS_MAX ? n : SHMQ_HEADERS_MAX);
        fputs("}\n", out);
    } else {
        fwrite(m->data, 1, m->len, out);
        fputc('\n', out);
    }
}

/* stdout takes more at once: not a pipe (or tty) full of what its reader has not read yet. */
static bool out_ready(void)
{
    struct pollfd pfd = {.fd = STDOUT_FILENO, .events = POLLOUT};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT);
}

/* Hand buf[0..len) to stdout's kernel object: how many bytes were written (len, or fewer with
 * errno set). A signal that stops sub (SIGINT, SIGTERM) ends a blocked write as an error. */
static size_t write_out(const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDOUT_FILENO, buf + off, len - off);
        if (w < 0 && errno == EINTR && !stop_requested)
            continue;
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return off;
}

struct sub_opts {
    uint64_t count; /* 0: no limit */
    int timeout_ms;
    bool nack, json;
    const char *consumer_name;
    const char *group; /* NULL: "default" */
};

/* Ack (or nack) msgs[0..n), whose lines were written: 0, or CLI_EXIT_RUNTIME (printed). */
static int settle(shmq_consumer_t *c, const char *name, const struct sub_opts *o,
                  const shmq_msg_t *msgs, size_t n)
{
    for (size_t i = 0; o->nack && i < n; i++) {
        int err = shmq_nack(c, &msgs[i], 0);
        if (err) {
            fprintf(stderr, "%s sub: %s: nack of message %" PRIu64 ": %s\n", cli_progname, name,
                    msgs[i].id, shmq_strerror(err));
            return CLI_EXIT_RUNTIME;
        }
    }
    size_t done = 0;
    int err = o->nack || n == 0 ? 0 : shmq_ack_batch(c, msgs, n, &done);
    if (err) {
        if (n == 1)
            fprintf(stderr, "%s sub: %s: ack of message %" PRIu64 ": %s\n", cli_progname, name,
                    msgs[0].id, shmq_strerror(err));
        else
            fprintf(stderr,
                    "%s sub: %s: ack of messages %" PRIu64 "..%" PRIu64 ": %s (%zu of %zu acked)\n",
                    cli_progname, name, msgs[0].id, msgs[n - 1].id, shmq_strerror(err), done, n);
        return CLI_EXIT_RUNTIME;
    }
    return 0;
}

static int consume(shmq_consumer_t *c, const char *name, const struct sub_opts *o)
{
    int64_t deadline = o->timeout_ms >= 0 ? mono_ms() + o->timeout_ms : -1;
    uint64_t got = 0;
    shmq_msg_t msgs[SUB_BATCH];
    size_t ends[SUB_BATCH]; /* where the line of msgs[i] ends in buf */
    char *buf = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&buf, &size);
    if (!mem) {
        fprintf(stderr, "%s sub: %s: %s\n", cli_progname, name, strerror(errno));
        return CLI_EXIT_RUNTIME;
    }
    int rc = CLI_EXIT_OK;
    while (!stop_requested && (o->count == 0 || got < o->count)) {
        /* At most a second a wait: a signal that came after the loop's check and before the
         * receive went to sleep (while it spun) is seen within that, not never. */
        int wait_ms = STOP_CHECK_MS;
        if (deadline >= 0) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                break;
            wait_ms = left > STOP_CHECK_MS ? STOP_CHECK_MS : (int)left;
        }
        size_t max = out_ready() ? SUB_BATCH : 1, n = 0;
        if (o->count && o->count - got < max)
            max = (size_t)(o->count - got);
        int err = shmq_receive_batch(c, msgs, max, &n, wait_ms);
        if (err == -ETIMEDOUT || err == -EAGAIN || err == -EINTR)
            continue; /* the loop condition decides */
        if (err) {
            fprintf(stderr, "%s sub: %s: receive: %s\n", cli_progname, name, shmq_strerror(err));
            rc = CLI_EXIT_RUNTIME;
            break;
        }
        rewind(mem);
        for (size_t i = 0; i < n; i++) {
            print_msg(mem, c, &msgs[i], o->json);
            long end = ftell(mem);
            ends[i] = end < 0 ? 0 : (size_t)end;
        }
        size_t written = 0;
        errno = ENOMEM;
        if (fflush(mem) == 0 && !ferror(mem))
            written = write_out(buf, ends[n - 1]);
        size_t whole = 0; /* messages whose whole line was written */
        while (whole < n && ends[whole] <= written)
            whole++;
        int werr = errno;
        if ((rc = settle(c, name, o, msgs, whole)) != 0)
            break;
        got += whole;
        if (whole < n) {
            fprintf(stderr,
                    "%s sub: %s: writing stdout: %s (message %" PRIu64
                    " not acked: it goes back to the queue)\n",
                    cli_progname, name, strerror(werr), msgs[whole].id);
            rc = CLI_EXIT_RUNTIME;
            break;
        }
    }
    fclose(mem);
    free(buf);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (o->count && got < o->count && !stop_requested) {
        fprintf(stderr, "%s sub: %s: timed out after %" PRIu64 " of %" PRIu64 " messages\n",
                cli_progname, name, got, o->count);
        return CLI_EXIT_TIMEOUT;
    }
    return CLI_EXIT_OK;
}

enum { OPT_ACK = 256, OPT_NACK, OPT_JSON };

int cmd_sub(int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'c'}, {"timeout-ms", required_argument, NULL, 't'},
        {"ack", no_argument, NULL, OPT_ACK},     {"nack", no_argument, NULL, OPT_NACK},
        {"json", no_argument, NULL, OPT_JSON},   {"name", required_argument, NULL, 'n'},
        {"group", required_argument, NULL, 'g'}, {"help", no_argument, NULL, 'h'},
        {0}};
    struct sub_opts o = {.timeout_ms = -1, .consumer_name = "shmq-sub"};
    bool ack = false;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":c:t:n:g:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if ((rc = cli_u64("sub", "--count", optarg, 1, UINT64_MAX, &o.count)))
                return rc;
            break;
        case 't':
            if ((rc = cli_timeout("sub", "--timeout-ms", optarg, &o.timeout_ms)))
                return rc;
            break;
        case OPT_ACK: ack = true; break;
        case OPT_NACK: o.nack = true; break;
        case OPT_JSON: o.json = true; break;
        case 'n': o.consumer_name = optarg; break;
        case 'g': o.group = optarg; break;
        case 'h': cmd_sub_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("sub", c, argv);
        }
    }
    if (ack && o.nack)
        return cli_usage_error("sub", "--ack and --nack exclude each other");
    if (optind >= argc)
        return cli_usage_error("sub", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("sub", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("sub", name)) != 0)
        return rc;

    struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: wake a sleeping receive */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed pipe is a write error: the message is not acked */

    shmq_t *q = NULL;
    shmq_consumer_t *cons = NULL;
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s sub: %s: %s\n", cli_progname, name, shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    err = shmq_consumer_open_group(q, o.group, o.consumer_name, &cons);
    if (err) {
        fprintf(stderr, "%s sub: %s: consumer: %s\n", cli_progname, name, shmq_strerror(err));
        shmq_close(q);
        return CLI_EXIT_RUNTIME;
    }
    /* The heartbeat thread is started with SIGINT and SIGTERM blocked (it inherits this
     * thread's mask), so they always reach this thread: taken by the helper, a signal would set
     * stop_requested without waking a receive that waits without a bound. */
    sigset_t stops, old;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stops, &old);
    err = shmq_consumer_heartbeat_thread(cons, 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) /* not fatal: receive refreshes the heartbeat too */
        fprintf(stderr, "%s sub: %s: heartbeat thread: %s\n", cli_progname, name,
                shmq_strerror(err));
    rc = consume(cons, name, &o);
    shmq_consumer_close(cons);
    shmq_close(q);
    return rc;
}
