/*
 * list.c - `shmq list [--json]`: every queue on this host (/dev/shm/shmq.*), one line each, then
 * the queues that exist only as a log in the state directory (their segment lost).
 *
 * Each segment is read as `stat` reads it (a snapshot of the inspection layer: mapped
 * read-only, never registered in), so listing disturbs no queue, and a segment that cannot be
 * read is one line with its error (and exit status 1) rather than the end of the listing.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

void cmd_list_help(FILE *out)
{
    fprintf(out,
            "Usage: %s list [--json]\n"
            "\n"
            "List every queue on this host (each /dev/shm/shmq.NAME), sorted by name, without\n"
            "taking part in any (segments are mapped read-only; nothing registers).\n"
            "\n"
            "Columns:\n"
            "  NAME        the queue\n"
            "  CAPACITY    message slots\n"
            "  READY       messages waiting for a consumer (the depth)\n"
            "  DELAYED     messages nacked with a delay, not yet due\n"
            "  INFLIGHT    messages delivered and not yet acked\n"
            "  DEAD        dead letters (see `%s dlq`)\n"
            "  CONSUMERS   attached consumers\n"
            "  OLDEST_MS   age of the oldest message not yet acked (- if none)\n"
            "  DURABILITY  none (shared memory only), process (write-ahead log: survives the\n"
            "              loss of the segment) or sync (log on stable storage)\n"
            "  WATCHDOG    active:PID (a shmq-watchdog holds the lease), cooperative:PID (a\n"
            "              consumer maintains), expired (the holder's lease ran out), none\n"
            "A segment that cannot be read is listed with its error instead of numbers.\n"
            "A queue that exists only as a log in (or linked from) the state directory, its\n"
            "segment lost, is listed last as \"log only\" with its log directory.\n"
            "\n"
            "Options:\n"
            "  --json      one JSON document: {\"queues\": [{\"name\": ..., \"capacity\": ...}]}\n"
            "              (\"watchdog\" is the object `stat --json` has: status, pid,\n"
            "              expires_in_ms)\n"
            "              (an unreadable segment has \"error\" instead of numbers; a\n"
            "              log-only queue has \"segment\": false and \"log_dir\")\n"
            "  -h, --help  this text\n"
            "\n"
            "Exit status: 0 every segment was read; 1 one or more could not be (each named on\n"
            "stderr), or /dev/shm cannot be read; 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s list\n"
            "  %s list --json | jq -r '.queues[] | select(.ready > 1000) | .name'\n",
            cli_progname, cli_progname, cli_progname, cli_progname);
}

static void print_row(const char *name, const struct inspect_snapshot *s)
{
    char wd[48], oldest[24];
    if (s->oldest_age_ms >= 0)
        snprintf(oldest, sizeof oldest, "%lld", (long long)s->oldest_age_ms);
    else
        snprintf(oldest, sizeof oldest, "-");
    printf("%-24s %8u %8u %8u %8u %8u %9u %9s %-10s %s\n", name, s->cfg.capacity,
           s->slots[INSPECT_SLOT_READY], s->slots[INSPECT_SLOT_DELAYED],
           s->slots[INSPECT_SLOT_INFLIGHT], s->slots[INSPECT_SLOT_DEAD], s->consumers, oldest,
           inspect_durability_name(s->cfg.durability), inspect_watchdog_text(s, wd, sizeof wd));
}

static void emit_row(struct emitter *e, const char *name, const struct inspect_snapshot *s)
{
    emit_begin(e, NULL, name, EMIT_INLINE);
    emit_bytes(e, "name", name, strlen(name));
    emit_u64(e, "capacity", s->cfg.capacity);
    emit_u64(e, "ready", s->slots[INSPECT_SLOT_READY]);
    emit_u64(e, "delayed", s->slots[INSPECT_SLOT_DELAYED]);
    emit_u64(e, "inflight", s->slots[INSPECT_SLOT_INFLIGHT]);
    emit_u64(e, "dead", s->slots[INSPECT_SLOT_DEAD]);
    emit_u64(e, "consumers", s->consumers);
    if (s->oldest_age_ms >= 0)
        emit_i64(e, "oldest_age_ms", s->oldest_age_ms);
    else
        emit_null(e, "oldest_age_ms");
    emit_word(e, "durability", inspect_durability_name(s->cfg.durability));
    stat_emit_watchdog(e, s); /* the same object as `stat --json` */
    emit_end(e);
}

static bool has_segment(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* The queues that exist only as a log (their segment lost): one line each, after the others. */
static int list_log_only(struct emitter *e, char **segs, size_t nsegs)
{
    char **names = NULL;
    size_t n = 0;
    int err = inspect_logged_names(&names, &n);
    if (err == -ENOENT)
        return CLI_EXIT_OK; /* no state directory (no HOME): no log to list there */
    if (err) {
        fprintf(stderr, "%s list: cannot read the state directory: %s\n", cli_progname,
                strerror(-err));
        return CLI_EXIT_RUNTIME;
    }
    for (size_t i = 0; i < n; i++) {
        if (has_segment(segs, nsegs, names[i]))
            continue;
        struct inspect_log_where where;
        if (inspect_log_locate(names[i], NULL, &where) != 0)
            snprintf(where.dir, sizeof(where.dir), "?");
        if (e) {
            emit_begin(e, NULL, names[i], EMIT_INLINE);
            emit_bytes(e, "name", names[i], strlen(names[i]));
            emit_bool(e, "segment", false);
            emit_bytes(e, "log_dir", where.dir, strlen(where.dir));
            emit_end(e);
        } else {
            printf("%-24s log only: no segment (log %s; `%s recover %s` or any open rebuilds "
                   "it)\n", names[i], where.dir, cli_progname, names[i]);
        }
    }
    inspect_names_free(names, n);
    return CLI_EXIT_OK;
}

int cmd_list(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'h': cmd_list_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("list", c, argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("list", "unexpected argument '%s'", argv[optind]);

    char **names = NULL;
    size_t n = 0;
    int err = inspect_queue_names(&names, &n);
    if (err) {
        fprintf(stderr, "%s list: cannot read %s: %s\n", cli_progname, inspect_segment_dir,
                strerror(-err));
        return CLI_EXIT_RUNTIME;
    }
    int rc = CLI_EXIT_OK;
    struct emitter e;
    if (json) {
        emit_init(&e, stdout, true);
        emit_begin(&e, "queues", NULL, EMIT_ARRAY);
    } else {
        printf("%-24s %8s %8s %8s %8s %8s %9s %9s %-10s %s\n", "NAME", "CAPACITY", "READY",
               "DELAYED", "INFLIGHT", "DEAD", "CONSUMERS", "OLDEST_MS", "DURABILITY", "WATCHDOG");
    }
    for (size_t i = 0; i < n; i++) {
        struct inspect_snapshot s;
        err = inspect_queue(names[i], &s);
        if (err) {
            fprintf(stderr, "%s list: %s: %s\n", cli_progname, names[i], inspect_strerror(err));
            rc = CLI_EXIT_RUNTIME;
            if (json) {
                emit_begin(&e, NULL, names[i], EMIT_INLINE);
                emit_bytes(&e, "name", names[i], strlen(names[i]));
                const char *msg = inspect_strerror(err);
                emit_bytes(&e, "error", msg, strlen(msg));
                emit_end(&e);
            } else {
                printf("%-24s error: %s\n", names[i], inspect_strerror(err));
            }
        } else {
            if (json)
                emit_row(&e, names[i], &s);
            else
                print_row(names[i], &s);
            inspect_snapshot_free(&s);
        }
    }
    rc |= list_log_only(json ? &e : NULL, names, n);
    inspect_names_free(names, n);
    if (json)
        emit_finish(&e);
    return rc;
}
