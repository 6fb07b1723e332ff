/*
 * purge.c - `shmq purge NAME [--delayed] [--group G] [--json]`: drop the queue's ready messages
 * (and its delayed ones) of a consumer group with shmq_purge_group() (no --group: "default"),
 * and print how many went.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <string.h>

#include "cli.h"
#include "emit.h"

void cmd_purge_help(FILE *out)
{
    fprintf(out,
            "Usage: %s purge NAME [--delayed] [--group GROUP] [--json]\n"
            "\n"
            "Drop every ready message of the queue NAME (with --delayed, every delayed one\n"
            "too: nacked with a delay or published with --delay-ms) and print how many were\n"
            "dropped. Messages in flight are left to their consumers; dead letters are\n"
            "purged with `%s dlq NAME purge`. A message is either delivered or purged, never\n"
            "both, and a purged one does not come back when the queue is rebuilt from its log.\n"
            "With consumer groups (`shmq group`), a purge is of one group's messages (without\n"
            "--group, the group \"default\"'s): the other groups keep theirs.\n"
            "\n"
            "Options:\n"
            "  --delayed          also drop the delayed messages\n"
            "  -g, --group GROUP  the consumer group's messages (default: \"default\")\n"
            "  --json             print {\"queue\": NAME, \"group\": GROUP, \"purged\": N}\n"
            "  -h, --help         this text\n"
            "\n"
            "Exit status: 0 purged (N may be 0); 1 runtime error (no such queue or group,\n"
            "...); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s purge orders\n"
            "  %s purge orders --delayed --json\n"
            "  %s purge orders --group audit\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname);
}

int cmd_purge(int argc, char **argv)
{
    enum { OPT_DELAYED = 256 };
    static const struct option opts[] = {{"delayed", no_argument, NULL, OPT_DELAYED},
                                         {"json", no_argument, NULL, 'j'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false;
    unsigned flags = 0;
    const char *group = NULL; /* "default" */
    int c, rc;
    while ((c = getopt_long(argc, argv, ":hg:", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DELAYED: flags |= SHMQ_PURGE_DELAYED; break;
        case 'g': group = optarg; break;
        case 'j': json = true; break;
        case 'h': cmd_purge_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("purge", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("purge", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("purge", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("purge", name)) != 0)
        return rc;
    shmq_t *q;
    char why[512];
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s purge: %s: %s\n", cli_progname, name,
                cli_why(err, name, NULL, why, sizeof why));
        return CLI_EXIT_RUNTIME;
    }
    uint32_t n = 0;
    err = shmq_purge_group(q, group, flags, &n);
    shmq_close(q);
    if (err) {
        fprintf(stderr, "%s purge: %s: %s (%u purged before)\n", cli_progname, name,
                err == -ENOENT ? cli_group_strerror(group, err)
                               : cli_why(err, name, NULL, why, sizeof why),
                n);
        return CLI_EXIT_RUNTIME;
    }
    if (!json) {
        printf("%u\n", n);
        return CLI_EXIT_OK;
    }
    struct emitter e;
    emit_init(&e, stdout, true);
    emit_bytes(&e, "queue", name, strlen(name));
    emit_bytes(&e, "group", group ? group : "default", strlen(group ? group : "default"));
    emit_u64(&e, "purged", n);
    emit_finish(&e);
    return CLI_EXIT_OK;
}
