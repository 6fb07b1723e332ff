/*
 * top.c - `shmq top NAME [--interval-ms N] [--iterations N]`: `stat` refreshed in place.
 *
 * Every interval a new snapshot (the inspection layer's, read-only) is drawn over the previous
 * frame with ANSI escapes (cursor home, clear to end of screen), with rates per second computed
 * from it and the snapshot before. A queue that disappears or turns unreadable ends the loop (exit
 * 1).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

#define ANSI_HOME_CLEAR "\033[H\033[J"

void cmd_top_help(FILE *out)
{
    fprintf(out,
            "Usage: %s top NAME [--interval-ms N] [--iterations N]\n"
            "\n"
            "Show the state of the queue NAME as `%s stat` does, refreshed in place every\n"
            "interval, with the rates per second of every counter (published, delivered,\n"
            "acked, nacked, redelivered, dead_lettered, reclaimed) over the last interval.\n"
            "Read-only: the queue is not disturbed. Stop it with Ctrl-C (or --iterations).\n"
            "\n"
            "Options:\n"
            "  -i, --interval-ms N   between refreshes, 10..3600000 (default 1000)\n"
            "  -n, --iterations N    stop after N frames (default: until interrupted)\n"
            "  -h, --help            this text\n"
            "\n"
            "Exit status: 0 stopped by --iterations or by SIGINT/SIGTERM; 1 runtime error (no\n"
            "such queue, or it became unreadable: reason on stderr); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s top orders\n"
            "  %s top orders -i 250\n"
            "  %s top orders --iterations 2 --interval-ms 500 > frames.txt\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname);
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
    if (optind >= argc)
        return cli_usage_error("top", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("top", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("top", name)) != 0)
        return rc;

    struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: interrupt the sleep */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

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
        time_t t = time(NULL);
        struct tm tm;
        char when[32];
        strftime(when, sizeof when, "%H:%M:%S", localtime_r(&t, &tm));
        fputs(ANSI_HOME_CLEAR, stdout);
        printf("shmq top - %s - every %u ms (Ctrl-C to quit)\n\n", when, interval_ms);
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
