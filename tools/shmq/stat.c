/*
 * stat.c - `shmq stat NAME [--json] [--interval-ms N]`: counters, depth, oldest message age and
 * the attached processes of one queue, read without taking part (a snapshot of the inspection
 * layer, inspect.h). With an interval, two snapshots N ms apart give rates per second.
 * stat_emit() is shared with `top`.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

void cmd_stat_help(FILE *out)
{
    fprintf(out,
            "Usage: %s stat NAME [--json] [--interval-ms N]\n"
            "\n"
            "Print the state of the queue NAME, read without taking part in it (the segment is\n"
            "mapped read-only; nothing registers):\n"
            "  queue, durability    the name; none, process or sync (see `%s create --help`)\n"
            "  log_dir              the queue's write-ahead log directory (null: none)\n"
            "  config               capacity, max_msg_size, max_procs, timeouts, max_attempts,\n"
            "                       ttl_ms (0: messages never expire), expire (drop or\n"
            "                       dead-letter)\n"
            "  counters             published, delivered, acked, nacked, redelivered,\n"
            "                       dead_lettered, reclaimed, dedup_hits (publishes with a\n"
            "                       dedup key already seen): totals since creation\n"
            "  expired              messages whose time to live passed before a delivery\n"
            "                       (dropped or dead-lettered, as expire says) since the\n"
            "                       segment was made\n"
            "  rates                the same per second over --interval-ms (null without it)\n"
            "  messages             slots by state: ready, inflight, delayed, reserved, dead,\n"
            "                       fenced, free (and invalid: a state no slot may have)\n"
            "  pinned               slots held back for live consumers that were fenced as\n"
            "                       hung while holding them (their messages were redelivered);\n"
            "                       each comes back when its process lets go or dies\n"
            "  recovered            what the rebuild that made this segment read past in\n"
            "                       the log: holes (failed or killed appends) and bad_regions\n"
            "                       (damage: see `wal NAME verify`); 0 for a created queue\n"
            "  depth                ready messages\n"
            "  oldest_message_age_ms  age since publish of the oldest message not yet acked\n"
            "                       (ready, delayed or in flight); null if there is none\n"
            "  consumers, procs     attached consumers, attached processes (active entries)\n"
            "  groups               each consumer group (shown in text when the queue has one\n"
            "                       besides \"default\"; always in --json): index, name, state\n"
            "                       (ACTIVE, DELETING, CREATING), policy (block, overrun),\n"
            "                       bound, its messages ready, inflight, delayed, dead and\n"
            "                       held (their sum), lag (ids published since the oldest\n"
            "                       message it has not finished; 0: caught up),\n"
            "                       oldest_message_age_ms, overrun (messages its bound\n"
            "                       dropped), first_id, consumers, and its consumers'\n"
            "                       counters delivered, acked, nacked (the attached ones' and\n"
            "                       those of the ones that closed)\n"
            "  watchdog             the maintenance lease: status (active, cooperative, expired,\n"
            "                       none), pid, expires_in_ms\n"
            "  processes            each registry entry: index, pid, role, state, name, alive,\n"
            "                       heartbeat_age_ms, inflight (messages it holds); a\n"
            "                       consumer also its group (where groups are shown; null:\n"
            "                       deleted) and\n"
            "                       its own counters: delivered, acked, nacked,\n"
            "                       redelivered, dead_lettered, reclaimed_from (messages taken\n"
            "                       back from it: ack deadline passed, or fenced as hung)\n"
            "\n"
            "Options:\n"
            "  --json              one JSON document with the fields above\n"
            "  -i, --interval-ms N take two samples N ms apart (1..3600000) and add rates\n"
            "  -h, --help          this text\n"
            "\n"
            "Exit status: 0 ok; 1 runtime error (no such queue, no permission, a truncated or\n"
            "corrupted segment, another format version: reason on stderr); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s stat orders\n"
            "  %s stat orders --json | jq .depth\n"
            "  %s stat orders -i 1000      # with rates over one second\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname);
}

static const char *role_name(uint32_t role)
{
    if (role & SHMQ_ROLE_CONSUMER)
        return "consumer";
    if (role & SHMQ_ROLE_CLIENT)
        return "client";
    return "other";
}

static void emit_processes(struct emitter *e, const struct inspect_snapshot *s)
{
    emit_begin(e, "processes", NULL, EMIT_ARRAY);
    for (uint32_t i = 0; i < s->n_procs; i++) {
        const struct inspect_proc *p = &s->procs[i];
        char label[32];
        snprintf(label, sizeof label, "entry %u", p->index);
        emit_begin(e, NULL, label, EMIT_INLINE);
        emit_u64(e, "index", p->index);
        emit_i64(e, "pid", p->pid);
        emit_word(e, "role", role_name(p->role));
        emit_word(e, "state", inspect_proc_state_name(p->state));
        emit_bytes(e, "name", p->name, strnlen(p->name, sizeof p->name));
        emit_bool(e, "alive", p->alive);
        if (p->heartbeat_seen) /* a time after the snapshot's: 0 ms ago */
            emit_i64(e, "heartbeat_age_ms", p->heartbeat_age_ms > 0 ? p->heartbeat_age_ms : 0);
        else
            emit_null(e, "heartbeat_age_ms");
        emit_u64(e, "inflight", p->inflight);
        if ((p->role & SHMQ_ROLE_CONSUMER) && (e->json || inspect_has_groups(s))) {
            const struct inspect_group *g = p->group_gone ? NULL : inspect_group_at(s, p->group);
            if (g) /* the group it receives in */
                emit_bytes(e, "group", g->name, strlen(g->name));
            else /* gone (deleted) or out of range */
                emit_null(e, "group");
        }
        if (p->role & SHMQ_ROLE_CONSUMER) { /* its own counters (shmq_consumer_stats()) */
            emit_u64(e, "delivered", p->counters[INSPECT_DELIVERED]);
            emit_u64(e, "acked", p->counters[INSPECT_ACKED]);
            emit_u64(e, "nacked", p->counters[INSPECT_NACKED]);
            emit_u64(e, "redelivered", p->counters[INSPECT_REDELIVERED]);
            emit_u64(e, "dead_lettered", p->counters[INSPECT_DEAD_LETTERED]);
            emit_u64(e, "reclaimed_from", p->reclaimed_from);
        }
        emit_end(e);
    }
    emit_end(e);
}

void stat_emit(struct emitter *e, const char *name, const struct inspect_snapshot *s,
               const struct inspect_snapshot *before)
{
    emit_bytes(e, "queue", name, strlen(name));
    emit_word(e, "durability", inspect_durability_name(s->cfg.durability));
    if (s->log.enabled)
        emit_bytes(e, "log_dir", s->log.dir, strlen(s->log.dir));
    else
        emit_null(e, "log_dir");

    emit_begin(e, "config", NULL, EMIT_INLINE);
    emit_u64(e, "capacity", s->cfg.capacity);
    emit_u64(e, "max_msg_size", s->cfg.max_msg_size);
    emit_u64(e, "max_procs", s->cfg.max_procs);
    emit_u64(e, "heartbeat_timeout_ms", s->cfg.heartbeat_timeout_ms);
    emit_u64(e, "ack_deadline_ms", s->cfg.ack_deadline_ms);
    emit_u64(e, "max_attempts", s->cfg.max_attempts);
    emit_u64(e, "ttl_ms", s->cfg.default_ttl_ms);
    emit_word(e, "expire", cli_expire_name(s->cfg.expire_policy));
    emit_end(e);

    emit_begin(e, "counters", NULL, EMIT_INLINE);
    for (int c = 0; c < INSPECT_COUNTERS; c++)
        emit_u64(e, inspect_counter_name(c), s->counters[c]);
    emit_end(e);

    if (before && s->taken_ns > before->taken_ns) {
        double dt = (double)(s->taken_ns - before->taken_ns) / 1e9;
        emit_begin(e, "rates", "rates/s", EMIT_INLINE);
        emit_double(e, "interval_s", dt);
        for (int c = 0; c < INSPECT_COUNTERS; c++) {
            uint64_t a = before->counters[c], b = s->counters[c];
            /* a counter folded into the header between the samples may dip: no negative rate */
            double r = b > a ? (double)(b - a) / dt : 0.0;
            char key[40];
            snprintf(key, sizeof key, "%s_per_s", inspect_counter_name(c));
            emit_double(e, key, r);
        }
        emit_end(e);
    } else {
        emit_null(e, "rates");
    }

    emit_begin(e, "messages", NULL, EMIT_INLINE);
    emit_u64(e, "ready", s->slots[INSPECT_SLOT_READY]);
    emit_u64(e, "inflight", s->slots[INSPECT_SLOT_INFLIGHT]);
    emit_u64(e, "delayed", s->slots[INSPECT_SLOT_DELAYED]);
    emit_u64(e, "reserved", s->slots[INSPECT_SLOT_RESERVED]);
    emit_u64(e, "dead", s->slots[INSPECT_SLOT_DEAD]);
    emit_u64(e, "fenced", s->slots[INSPECT_SLOT_FENCED]);
    emit_u64(e, "held", s->slots[INSPECT_SLOT_HELD]); /* groups: done by "default" only */
    emit_u64(e, "free", s->slots[INSPECT_SLOT_FREE]);
    emit_u64(e, "invalid", s->slots[INSPECT_SLOT_INVALID]);
    emit_end(e);
    emit_u64(e, "pinned", s->pinned);
    emit_u64(e, "expired", s->expired);
    emit_begin(e, "recovered", NULL, EMIT_INLINE);
    emit_u64(e, "holes", s->recovered_holes);
    emit_u64(e, "bad_regions", s->recovered_bad_regions);
    emit_end(e);
    emit_u64(e, "depth", s->slots[INSPECT_SLOT_READY]);
    if (s->oldest_age_ms >= 0)
        emit_i64(e, "oldest_message_age_ms", s->oldest_age_ms);
    else
        emit_null(e, "oldest_message_age_ms");
    emit_u64(e, "consumers", s->consumers);
    emit_u64(e, "procs", s->procs_active);
    stat_emit_groups(e, s);
    if (s->log.enabled) { /* the log's health: a failing file system or disk shows here */
        emit_begin(e, "log", NULL, EMIT_INLINE);
        emit_bool(e, "healthy", !s->log.flush_failed && s->log.last_error == 0);
        emit_u64(e, "errors", s->log.errors);
        if (s->log.last_error)
            emit_word(e, "last_error", strerror(-s->log.last_error));
        else
            emit_null(e, "last_error");
        emit_bool(e, "flush_failed", s->log.flush_failed);
        emit_end(e);
    } else {
        emit_null(e, "log");
    }

    stat_emit_watchdog(e, s);
    emit_processes(e, s);
}

void stat_emit_groups(struct emitter *e, const struct inspect_snapshot *s)
{
    if (!e->json && !inspect_has_groups(s))
        return;
    emit_begin(e, "groups", NULL, EMIT_ARRAY);
    for (uint32_t i = 0; i < s->n_groups; i++) {
        const struct inspect_group *g = &s->groups[i];
        char label[32];
        snprintf(label, sizeof label, "group %u", g->index);
        emit_begin(e, NULL, label, EMIT_INLINE);
        emit_u64(e, "index", g->index);
        emit_bytes(e, "name", g->name, strlen(g->name));
        emit_word(e, "state", inspect_group_state_name(g->state));
        emit_word(e, "policy", inspect_group_policy_name(g->policy));
        emit_u64(e, "bound", g->bound);
        emit_u64(e, "ready", g->ready);
        emit_u64(e, "inflight", g->inflight);
        emit_u64(e, "delayed", g->delayed);
        emit_u64(e, "dead", g->dead);
        emit_u64(e, "held", g->held);
        emit_u64(e, "lag", g->lag);
        if (g->oldest_age_ms >= 0)
            emit_i64(e, "oldest_message_age_ms", g->oldest_age_ms);
        else
            emit_null(e, "oldest_message_age_ms");
        emit_u64(e, "overrun", g->overrun);
        emit_u64(e, "first_id", g->first_id);
        emit_u64(e, "consumers", g->consumers);
        emit_u64(e, "delivered", g->delivered);
        emit_u64(e, "acked", g->acked);
        emit_u64(e, "nacked", g->nacked);
        emit_end(e);
    }
    emit_end(e);
}

void stat_emit_watchdog(struct emitter *e, const struct inspect_snapshot *s)
{
    char wd[48];
    inspect_watchdog_text(s, wd, sizeof wd);
    emit_begin(e, "watchdog", NULL, EMIT_INLINE);
    char *colon = strchr(wd, ':');
    if (colon)
        *colon = '\0';
    emit_word(e, "status", wd);
    if (s->lease.pid)
        emit_i64(e, "pid", s->lease.pid);
    else
        emit_null(e, "pid");
    if (s->lease.pid)
        emit_i64(e, "expires_in_ms", s->lease.expires_in_ms);
    else
        emit_null(e, "expires_in_ms");
    emit_end(e);
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

int cmd_stat(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"interval-ms", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false;
    uint32_t interval_ms = 0;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":hi:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'i':
            if ((rc = cli_u32("stat", "--interval-ms", optarg, 1, 3600000, &interval_ms)))
                return rc;
            break;
        case 'h': cmd_stat_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("stat", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("stat", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("stat", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("stat", name)) != 0)
        return rc;

    struct inspect_snapshot before, now;
    bool have_before = false;
    int err;
    if (interval_ms) {
        if ((err = inspect_queue(name, &before)) != 0)
            goto fail;
        have_before = true;
        sleep_ms(interval_ms);
    }
    if ((err = inspect_queue(name, &now)) != 0)
        goto fail;
    struct emitter e;
    emit_init(&e, stdout, json);
    stat_emit(&e, name, &now, have_before ? &before : NULL);
    emit_finish(&e);
    inspect_snapshot_free(&now);
    if (have_before)
        inspect_snapshot_free(&before);
    return CLI_EXIT_OK;
fail:
    if (have_before)
        inspect_snapshot_free(&before);
    fprintf(stderr, "%s stat: %s: %s\n", cli_progname, name, inspect_strerror(err));
    return CLI_EXIT_RUNTIME;
}
