/*
 * recover.c - `shmq recover NAME [--log-dir DIR] [--json]`: rebuild a queue's segment from its
 * log now (shmq_recover()), and say what was found.
 *
 * shmq_open() rebuilds a lost segment by itself, from the log the state directory names; this
 * is the explicit form: for a log the state directory does not name (moved, or made by another
 * user), or to see the report. A rebuild from --log-dir also makes the state directory name that
 * log, so the queue is found by name afterwards.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <string.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

void cmd_recover_help(FILE *out)
{
    fprintf(out,
            "Usage: %s recover NAME [--log-dir DIR] [--json]\n"
            "\n"
            "Rebuild the segment /dev/shm/shmq.NAME from the queue's write-ahead log: every\n"
            "message published and not acked or dead-lettered comes back, ids continue after\n"
            "the highest one logged. Nothing is done while NAME has a valid segment.\n"
            "The log is DIR/NAME with --log-dir DIR (relative: from the working directory);\n"
            "else the state directory's entry NAME (the log itself, or a link to where\n"
            "`create --log-dir` put it). Rebuilding from --log-dir also makes the state\n"
            "directory's entry link there.\n"
            "\n"
            "Prints: rebuilt (yes/no), the log directory, files and records read, messages\n"
            "restored and resolved (acked or dead-lettered), the highest id, torn tails and\n"
            "corrupt regions skipped.\n"
            "\n"
            "Options:\n"
            "  --log-dir DIR  the directory given to `%s create --log-dir`\n"
            "  --json         one JSON document\n"
            "  -h, --help     this text\n"
            "\n"
            "Exit status: 0 rebuilt, or nothing to do (a valid segment exists); 1 no log, an\n"
            "unreadable log or another error (on stderr); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s recover orders\n"
            "  %s recover orders --log-dir /srv/queues --json\n",
            cli_progname, cli_progname, cli_progname, cli_progname);
}

static void report(bool json, const char *name, const char *dir, bool rebuilt,
                   const shmq_recovery_report_t *r)
{
    struct emitter e;
    emit_init(&e, stdout, json);
    emit_bytes(&e, "queue", name, strlen(name));
    emit_bool(&e, "rebuilt", rebuilt);
    emit_bytes(&e, "log_dir", dir, strlen(dir));
    if (rebuilt) {
        emit_u64(&e, "files", r->files);
        emit_u64(&e, "records", r->records);
        emit_u64(&e, "restored", r->restored);
        emit_u64(&e, "resolved", r->resolved);
        emit_u64(&e, "highest_id", r->highest_id);
        emit_u64(&e, "torn_tails", r->torn_tails);
        emit_u64(&e, "corrupt_regions", r->corrupt_regions);
        emit_u64(&e, "holes", r->holes);
        emit_u64(&e, "bytes_skipped", r->bytes_skipped);
    }
    emit_finish(&e);
}

int cmd_recover(int argc, char **argv)
{
    enum { OPT_LOG_DIR = 256 };
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"log-dir", required_argument, NULL, OPT_LOG_DIR},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false;
    const char *log_dir = NULL;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case OPT_LOG_DIR: log_dir = optarg; break;
        case 'h': cmd_recover_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("recover", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("recover", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("recover", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("recover", name)) != 0)
        return rc;
    char abs_dir[SHMQ_LOG_DIR_MAX + 1];
    if (log_dir && (rc = cli_log_dir("recover", log_dir, abs_dir, sizeof(abs_dir))) != 0)
        return rc;

    shmq_recovery_report_t rep;
    int err = shmq_recover(name, log_dir ? abs_dir : NULL, &rep);
    struct inspect_log_where where; /* after: a rebuilt segment names its log */
    if (inspect_log_locate(name, log_dir ? abs_dir : NULL, &where) != 0)
        snprintf(where.dir, sizeof(where.dir), "?");
    if (err && err != -EEXIST) {
        const char *why = err == -ENOENT   ? "no log there (or no state directory: HOME unset)"
                          : err == -EPERM  ? "the state or log directory is not yours or others "
                                             "can write it"
                          : err == -EBADMSG ? "no readable log file"
                                            : shmq_strerror(err);
        fprintf(stderr, "%s recover: %s: %s: %s\n", cli_progname, name, where.dir, why);
        return CLI_EXIT_RUNTIME;
    }
    report(json, name, where.dir, err == 0, &rep);
    return CLI_EXIT_OK;
}
