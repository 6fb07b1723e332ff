/*
 * wal.c - `shmq wal NAME inspect|verify [--log-dir DIR] [--json]`: read a queue's write-ahead
 * log without taking part in the queue.
 *
 * The inspection layer (inspect.h) does the reading and the judging: it finds the log
 * directory (DIR/NAME with --log-dir DIR; else the one recorded in a readable segment; else the
 * library's state directory rule, where recovery looks when the segment is gone), maps each
 * wal.NNNNNNNNNN file read-only without taking any lock (not even recovery's .recover flock),
 * validates headers and walks records with the reader recovery uses, reports a file that
 * shrinks under the mapping instead of dying of SIGBUS, lists the problems and the allowed
 * warnings (a torn tail in the newest file written; holes, which an append that failed or was
 * killed leaves but lost records do too), cross-checks the messages a live segment holds
 * against the log (a message whose PUBLISH is gone is a problem; with none, the holes lost
 * nothing), and predicts what shmq_recover() would bring back with recovery's own rule. This
 * file lays the report out.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

void cmd_wal_help(FILE *out)
{
    fprintf(out,
            "Usage: %s wal NAME inspect [--log-dir DIR] [--json]\n"
            "       %s wal NAME verify  [--log-dir DIR] [--strict] [--json]\n"
            "\n"
            "Read the write-ahead log of the queue NAME without taking part in the queue:\n"
            "each log file (wal.NNNNNNNNNN) is mapped read-only; nothing is locked, created\n"
            "or written, so it is safe on a live queue and while the segment is gone.\n"
            "\n"
            "The log directory is DIR/NAME with --log-dir DIR (the --log-dir given to\n"
            "create); else the one recorded in the queue's segment; else, when there is no\n"
            "readable segment, NAME under the state directory ($SHMQ_STATE_DIR, /var/lib/shmq\n"
            "for root, else $XDG_STATE_HOME/shmq or ~/.local/state/shmq), where recovery\n"
            "looks.\n"
            "\n"
            "  inspect  for each file: seq, size, header (epoch, capacity, file size),\n"
            "           whether it is truncated (shorter than its header says: the records\n"
            "           before the cut still count), records by type (publish, ack, dead,\n"
            "           nack, pad, mark), message bytes, PUBLISH records with a dedup key\n"
            "           and with a due time (delayed publishes),\n"
            "           malformed PUBLISH bodies, bytes used (offset of the end of the last\n"
            "           valid record), ids seen, bad regions (offset, length: garbage),\n"
            "           holes (offset, length: zeros a writer reserved and never filled)\n"
            "           and a torn tail (offset, length); files missing between the oldest\n"
            "           and the newest;\n"
            "           then what shmq_recover() would bring back: live messages (ids whose\n"
            "           latest record is a PUBLISH), their id range, how many would come\n"
            "           back delayed and the earliest due time (next_due_unix_ms: wall\n"
            "           clock, ms since 1970), how many were resolved\n"
            "           (acked or dead-lettered), the highest id (ids go on after it), and\n"
            "           the outcome (fails if no file is readable, or the live messages do\n"
            "           not fit the capacity or max_msg_size of the newest file's header;\n"
            "           refused while the segment exists); these counts are the group\n"
            "           \"default\"'s view (a message another consumer group still holds\n"
            "           comes back for it too); then the consumer groups the log records\n"
            "           (groups: in text only when there are some): index, name, policy,\n"
            "           bound, first_id, latest (create or delete: its latest GROUP record)\n"
            "           and restored (whether a rebuild makes it again); and the problems\n"
            "           found (as verify judges them)\n"
            "  verify   check the log: every file has a valid header whose seq matches its\n"
            "           name, no truncated file, no bad regions, no malformed PUBLISH body,\n"
            "           no file missing in the middle of the log, no torn tail but in the\n"
            "           newest file written to (a crash while writing: reported under\n"
            "           warnings and allowed, as recovery ignores it). Bytes that do not\n"
            "           parse (garbage, a record whose non-zero crc fails) are damage.\n"
            "           With the queue's segment present (and its log in this directory),\n"
            "           every message the segment holds (ready, in flight, delayed, dead)\n"
            "           must have its PUBLISH record in the log, in the file its slot names\n"
            "           or later: a missing one is a problem, \"lost publish of id N\" (a\n"
            "           rebuild would lose it); slots are read before and after the log,\n"
            "           so a message acked meanwhile is no loss.\n"
            "           A hole (zeros, or records whose crc was never stored, followed by a\n"
            "           valid record; or zeros at the end of a file older than the newest\n"
            "           written) is what an append leaves that failed (a full disk) or\n"
            "           whose writer was killed, but lost records look the same. With the\n"
            "           segment checked and no lost publish, holes are harmless (a warning,\n"
            "           exit 0 even with --strict). Without a segment (the case recovery is\n"
            "           for) nothing can tell: each is an \"unexplained hole\", a warning\n"
            "           (exit 0), or a problem (exit 1) with --strict. Zeros after the last\n"
            "           record of the newest file are unused space. Prints each file in one\n"
            "           line, the problems, the warnings and the verdict (ok)\n"
            "\n"
            "Options:\n"
            "  --log-dir DIR  read DIR/NAME (DIR as given to `%s create --log-dir`)\n"
            "  --strict       an unexplained hole is a problem (exit 1)\n"
            "  --json         one JSON document with the same fields\n"
            "  -h, --help     this text\n"
            "\n"
            "On a live queue the picture is best-effort: a record being written at that\n"
            "moment may show as a hole or a torn tail; run verify again, or on a stopped\n"
            "queue.\n"
            "\n"
            "Exit status:\n"
            "  0  inspect: the log was read (problems, if any, are listed in the report);\n"
            "     verify: the log is sound (a torn tail in the newest file is allowed, and\n"
            "     holes: harmless when the segment vouched for them, unexplained without\n"
            "     --strict; an empty log directory is sound)\n"
            "  1  verify: the log is damaged or lost a message the segment holds, or\n"
            "     (--strict) holds an unexplained hole (problems listed, a summary on\n"
            "     stderr);\n"
            "     both: the log directory cannot be read (missing: no log, or durability\n"
            "     none), or out of memory\n"
            "  2  usage error\n"
            "\n"
            "Examples:\n"
            "  %s wal orders inspect\n"
            "  %s wal orders verify && echo log ok\n"
            "  %s wal orders verify --strict   # monitoring: any doubt is exit 1\n"
            "  %s wal orders inspect --json | jq .recovery.live\n"
            "  %s wal orders verify --log-dir /srv/queues   # a log moved elsewhere\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname,
            cli_progname, cli_progname);
}

/* ------------------------------------------------------------------ output */

/* The kept regions of one kind: garbage (damage) or zeros (holes, harmless). */
static void emit_regions(struct emitter *e, const char *key, const struct inspect_log_file *f,
                         bool zeros)
{
    emit_begin(e, key, NULL, EMIT_ARRAY);
    for (uint64_t k = 0; k < f->n_regions && k < INSPECT_LOG_REGIONS_KEPT; k++) {
        if (f->regions[k].zeros != zeros)
            continue;
        emit_begin(e, NULL, zeros ? "hole" : "region", EMIT_INLINE);
        emit_u64(e, "offset", f->regions[k].offset);
        emit_u64(e, "length", f->regions[k].length);
        emit_word(e, "kind", zeros ? "zeros" : "garbage");
        emit_end(e);
    }
    emit_end(e);
}

static void emit_file(struct emitter *e, const struct inspect_log_file *f, bool detailed)
{
    emit_begin(e, NULL, f->name, detailed ? EMIT_BLOCK : EMIT_INLINE);
    emit_word(e, "name", f->name);
    emit_u64(e, "seq", f->seq);
    emit_u64(e, "size", f->size);
    const char *header = f->open_err         ? "unreadable"
                         : f->not_regular    ? "not a regular file"
                         : f->faulted        ? "truncated while read"
                         : f->header_problem ? f->header_problem
                         : f->seq_mismatch   ? "seq differs from the name"
                                             : "ok";
    emit_bytes(e, "header", header, strlen(header));
    emit_bool(e, "recovery_reads", f->readable);
    emit_bool(e, "truncated", f->truncated);
    if (!detailed) {
        emit_u64(e, "records", f->records);
        emit_u64(e, "bad_regions", f->bad_regions);
        emit_u64(e, "holes", f->holes);
        emit_u64(e, "tail_zeros", f->tail_zeros);
        if (f->torn_offset)
            emit_u64(e, "torn_tail", f->torn_offset);
        else
            emit_null(e, "torn_tail");
        emit_end(e);
        return;
    }
    if (f->scanned) {
        emit_hex(e, "epoch", f->epoch);
        emit_u64(e, "header_seq", f->header_seq);
        emit_u64(e, "header_file_size", f->header_file_size);
        emit_u64(e, "capacity", f->capacity);
        emit_u64(e, "max_msg_size", f->max_msg_size);
    } else {
        emit_null(e, "epoch");
        emit_null(e, "header_seq");
        emit_null(e, "header_file_size");
        emit_null(e, "capacity");
        emit_null(e, "max_msg_size");
    }
    emit_begin(e, "records", NULL, EMIT_INLINE);
    emit_u64(e, "total", f->records);
    for (int t = 0; t < INSPECT_REC_TYPES; t++)
        emit_u64(e, inspect_rec_type_name(t), f->by_type[t]);
    emit_end(e);
    emit_u64(e, "message_bytes", f->message_bytes);
    emit_u64(e, "keyed", f->keyed);
    emit_u64(e, "delayed", f->delayed);
    emit_u64(e, "malformed", f->malformed);
    emit_u64(e, "used_bytes", f->used_bytes);
    if (f->n_ids) {
        emit_u64(e, "min_id", f->min_id);
        emit_u64(e, "max_id", f->max_id);
    } else {
        emit_null(e, "min_id");
        emit_null(e, "max_id");
    }
    emit_u64(e, "bad_bytes", f->bad_bytes);
    emit_regions(e, "bad_regions", f, false);
    emit_u64(e, "bad_regions_total", f->bad_regions);
    emit_regions(e, "holes", f, true);
    emit_u64(e, "holes_total", f->holes);
    emit_u64(e, "hole_bytes", f->hole_bytes);
    emit_u64(e, "tail_zeros", f->tail_zeros);
    if (f->torn_offset) {
        emit_begin(e, "torn_tail", NULL, EMIT_INLINE);
        emit_u64(e, "offset", f->torn_offset);
        emit_u64(e, "length", f->size - f->torn_offset);
        emit_end(e);
    } else {
        emit_null(e, "torn_tail");
    }
    emit_end(e);
}

static void emit_notes(struct emitter *e, const char *key, const struct inspect_notes *n)
{
    emit_begin(e, key, NULL, EMIT_ARRAY);
    for (uint64_t i = 0; i < n->count && i < INSPECT_NOTES_KEPT; i++)
        emit_bytes(e, NULL, n->text[i], strlen(n->text[i]));
    if (n->count > INSPECT_NOTES_KEPT) {
        char more[64];
        snprintf(more, sizeof(more), "... and %" PRIu64 " more", n->count - INSPECT_NOTES_KEPT);
        emit_bytes(e, NULL, more, strlen(more));
    }
    emit_end(e);
}

static void emit_report(struct emitter *e, const char *name, const struct inspect_log_where *where,
                        const struct inspect_log *log, bool inspect)
{
    static const char *const dir_from[] = {[INSPECT_DIR_GIVEN] = "--log-dir",
                                           [INSPECT_DIR_SEGMENT] = "segment",
                                           [INSPECT_DIR_STATE] = "state directory"};
    static const char *const segment[] = {[INSPECT_SEG_VALID] = "valid",
                                          [INSPECT_SEG_MISSING] = "missing",
                                          [INSPECT_SEG_DAMAGED] = "damaged"};
    emit_bytes(e, "queue", name, strlen(name));
    emit_bytes(e, "log_dir", where->dir, strlen(where->dir));
    emit_word(e, "log_dir_from", dir_from[where->from]);
    emit_word(e, "segment", segment[where->segment]);
    emit_begin(e, "files", NULL, EMIT_ARRAY);
    for (size_t i = 0; i < log->n_files; i++)
        emit_file(e, &log->files[i], inspect);
    emit_end(e);

    emit_begin(e, "totals", NULL, inspect ? EMIT_BLOCK : EMIT_INLINE);
    emit_u64(e, "files", log->n_files);
    emit_u64(e, "records", log->records);
    if (inspect)
        for (int t = 0; t < INSPECT_REC_TYPES; t++)
            emit_u64(e, inspect_rec_type_name(t), log->by_type[t]);
    emit_u64(e, "bad_regions", log->bad_regions);
    emit_u64(e, "holes", log->holes);
    emit_u64(e, "torn_tails", log->torn_tails);
    emit_u64(e, "unexplained_holes", log->unexplained);
    emit_end(e);

    emit_begin(e, "segment_check", NULL, EMIT_INLINE); /* the segment's messages vs the log */
    emit_bool(e, "done", log->cross_checked);
    emit_u64(e, "messages", log->kept_checked);
    emit_u64(e, "lost_publishes", log->lost_publishes);
    emit_end(e);

    if (inspect) {
        const struct inspect_log_recovery *rc = &log->recovery;
        emit_begin(e, "recovery", NULL, EMIT_BLOCK);
        emit_u64(e, "files_read", rc->files_read);
        emit_u64(e, "files_skipped", rc->files_skipped);
        emit_u64(e, "live", rc->live);
        if (rc->live) {
            emit_u64(e, "first_live_id", rc->first_live_id);
            emit_u64(e, "last_live_id", rc->last_live_id);
        } else {
            emit_null(e, "first_live_id");
            emit_null(e, "last_live_id");
        }
        emit_u64(e, "live_with_attempts", rc->live_with_attempts);
        emit_u64(e, "live_delayed", rc->live_delayed);
        if (rc->next_due_unix_ms)
            emit_u64(e, "next_due_unix_ms", rc->next_due_unix_ms);
        else
            emit_null(e, "next_due_unix_ms");
        emit_u64(e, "resolved", rc->resolved);
        emit_u64(e, "resolved_without_publish", rc->orphans);
        emit_u64(e, "highest_id", rc->highest_id);
        if (rc->have_capacity)
            emit_u64(e, "capacity", rc->capacity);
        else
            emit_null(e, "capacity");
        emit_bytes(e, "outcome", rc->outcome, strlen(rc->outcome));
        if (e->json || rc->n_groups) { /* text: a log with groups only, as before without */
            emit_begin(e, "groups", NULL, EMIT_ARRAY);
            for (uint32_t i = 0; i < rc->n_groups; i++) {
                const struct inspect_log_group *g = &rc->groups[i];
                char label[32];
                snprintf(label, sizeof label, "group %u", g->index);
                emit_begin(e, NULL, label, EMIT_INLINE);
                emit_u64(e, "index", g->index);
                emit_bytes(e, "name", g->name, strlen(g->name));
                emit_word(e, "policy", inspect_group_policy_name(g->policy));
                emit_u64(e, "bound", g->bound);
                emit_u64(e, "first_id", g->first_id);
                emit_word(e, "latest", g->deleted ? "delete" : "create");
                emit_bool(e, "restored", g->restored);
                emit_end(e);
            }
            emit_end(e);
        }
        emit_end(e);
    }
    emit_notes(e, "problems", &log->problems);
    emit_notes(e, "warnings", &log->warnings);
    emit_bool(e, "ok", log->ok);
}

/* ------------------------------------------------------------------ the command */

int cmd_wal(int argc, char **argv)
{
    enum { OPT_LOG_DIR = 256 };
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"log-dir", required_argument, NULL, OPT_LOG_DIR},
                                         {"strict", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false, strict = false;
    const char *log_dir = NULL;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 's': strict = true; break;
        case OPT_LOG_DIR: log_dir = optarg; break;
        case 'h': cmd_wal_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("wal", c, argv);
        }
    }
    int nargs = argc - optind;
    if (nargs < 1)
        return cli_usage_error("wal", "missing queue NAME");
    if (nargs < 2)
        return cli_usage_error("wal", "missing action: inspect or verify");
    if (nargs > 2)
        return cli_usage_error("wal", "unexpected argument '%s'", argv[optind + 2]);
    const char *name = argv[optind], *action = argv[optind + 1];
    if ((rc = cli_name("wal", name)) != 0)
        return rc;
    bool inspect = strcmp(action, "inspect") == 0;
    if (!inspect && strcmp(action, "verify") != 0)
        return cli_usage_error("wal", "unknown action '%s' (inspect or verify)", action);
    char abs_dir[SHMQ_LOG_DIR_MAX + 1];
    if (log_dir && (rc = cli_log_dir("wal", log_dir, abs_dir, sizeof(abs_dir))) != 0)
        return rc;

    struct inspect_log_where where;
    if ((rc = inspect_log_locate(name, log_dir ? abs_dir : NULL, &where)) != 0) {
        fprintf(stderr, "%s wal: %s: cannot find its log: %s\n", cli_progname, name,
                rc == -ENOENT  ? "no state directory (set HOME or SHMQ_STATE_DIR)"
                : rc == -EPERM ? "the state directory is not yours or others can write it"
                               : strerror(-rc));
        return CLI_EXIT_RUNTIME;
    }
    struct inspect_log *log;
    struct inspect_log_opts o = {
        .segment_exists = where.segment == INSPECT_SEG_VALID, .name = name, .strict = strict};
    int err = inspect_log_check(where.dir, &o, &log);
    if (err) {
        if (err == -ENOENT)
            fprintf(stderr, "%s wal: %s: no log directory %s%s\n", cli_progname, name, where.dir,
                    where.durability_none ? " (the queue's durability is none: it keeps no log)"
                                          : "");
        else
            fprintf(stderr, "%s wal: %s: %s: %s\n", cli_progname, name, where.dir, strerror(-err));
        return CLI_EXIT_RUNTIME;
    }

    struct emitter e;
    emit_init(&e, stdout, json);
    emit_report(&e, name, &where, log, inspect);
    emit_finish(&e);
    rc = CLI_EXIT_OK;
    if (!inspect && !log->ok) {
        uint64_t n = log->problems.count;
        fflush(stdout);
        fprintf(stderr, "%s wal: %s: the log in %s is damaged: %" PRIu64 " problem%s (listed)\n",
                cli_progname, name, where.dir, n, n == 1 ? "" : "s");
        rc = CLI_EXIT_RUNTIME;
    }
    inspect_log_free(log);
    return rc;
}
