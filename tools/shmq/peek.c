/*
 * peek.c - `shmq peek NAME [--count N] [--group G] [--json]`: print ready messages without taking them
 * (shmq_peek_group, --group G; without it "default"): no attempt spent, nothing acked, nothing
 * logged.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cmd_peek_help(FILE *out)
{
    fprintf(out,
            "Usage: %s peek NAME [--count N] [--group GROUP] [--json]\n"
            "\n"
            "Print up to N ready messages of the queue NAME, lowest id first, without taking\n"
            "them: they stay ready for consumers, no delivery attempt is spent, nothing is\n"
            "acked or logged. One message per line as `sub` prints it, or with --json one\n"
            "object per line: id, attempt (deliveries so far), len and data (valid UTF-8) or\n"
            "data_b64. Messages in flight, delayed or dead are not shown. The result is no\n"
            "snapshot: messages received or published meanwhile may or may not be in it.\n"
            "With consumer groups (`shmq group`), the messages ready for one group (without\n"
            "--group, the group \"default\"), attempt counting that group's deliveries.\n"
            "\n"
            "Options:\n"
            "  -c, --count N      at most N messages (default 10)\n"
            "  -g, --group GROUP  the consumer group's ready messages (default: \"default\")\n"
            "  --json             one JSON object per line\n"
            "  -h, --help         this text\n"
            "\n"
            "Exit status: 0 printed (perhaps nothing: no ready message); 1 runtime error (no\n"
            "such queue or group, out of memory, ...); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s peek orders\n"
            "  %s peek orders --count 1 --json | jq .id\n"
            "  %s peek orders --group audit\n",
            cli_progname, cli_progname, cli_progname, cli_progname);
}

int cmd_peek(int argc, char **argv)
{
    static const struct option opts[] = {{"count", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false;
    uint32_t count = 10;
    const char *group = NULL; /* "default" */
    int c, rc;
    while ((c = getopt_long(argc, argv, ":c:hg:", opts, NULL)) != -1) {
        switch (c) {
        case 'g': group = optarg; break;
        case 'c':
            if ((rc = cli_u32("peek", "--count", optarg, 1, SHMQ_CAPACITY_MAX, &count)))
                return rc;
            break;
        case 'j': json = true; break;
        case 'h': cmd_peek_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("peek", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("peek", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("peek", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("peek", name)) != 0)
        return rc;
    shmq_t *q;
    char why[512];
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s peek: %s: %s\n", cli_progname, name,
                cli_why(err, name, NULL, why, sizeof why));
        return CLI_EXIT_RUNTIME;
    }
    shmq_config_t cfg;
    shmq_get_config(q, &cfg);
    size_t n = 0, buf_size = (size_t)count * ((size_t)cfg.max_msg_size + cfg.max_header_bytes);
    shmq_peek_msg_t *m = calloc(count, sizeof(*m));
    shmq_peek_headers_t *mh = calloc(count, sizeof(*mh));
    void *buf = malloc(buf_size ? buf_size : 1);
    err = m && mh && buf ? shmq_peek_group(q, group, m, mh, count, buf, buf_size, &n) : -ENOMEM;
    shmq_close(q);
    for (size_t i = 0; !err && i < n; i++) {
        if (json) {
            printf("{\"id\":%" PRIu64 ",\"attempt\":%" PRIu32 ",\"len\":%zu,", m[i].id,
                   m[i].attempt, m[i].len);
            json_payload(stdout, "data", m[i].data, m[i].copied);
            shmq_header_t h[SHMQ_HEADERS_MAX];
            size_t nh = 0;
            if (mh[i].block && shmq_headers_decode(mh[i].block, mh[i].len, h, SHMQ_HEADERS_MAX,
                                                   &nh) == 0)
                json_headers(stdout, h, nh < SHMQ_HEADERS_MAX ? nh : SHMQ_HEADERS_MAX);
            fputs("}\n", stdout);
        } else {
            fwrite(m[i].data, 1, m[i].copied, stdout);
            fputc('\n', stdout);
        }
    }
    free(m);
    free(mh);
    free(buf);
    if (err) {
        fprintf(stderr, "%s peek: %s: %s\n", cli_progname, name,
                err == -ENOENT ? cli_group_strerror(group, err)
                               : cli_why(err, name, NULL, why, sizeof why));
        return CLI_EXIT_RUNTIME;
    }
    return fflush(stdout) == 0 && !ferror(stdout) ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
}
