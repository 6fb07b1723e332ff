/*
 * dump.c - `shmq dump NAME [--json]`: print a queue's segment without taking part in the queue.
 *
 * Everything comes from the inspection layer (inspect.h), which opens the segment read-only
 * without registering, validates its geometry, range-checks every value read from shm before
 * it steers a read, turns a SIGBUS (the file shrank under the mapping) into -EFAULT, and lists
 * what fails a check as an inconsistency. This file only lays the result out: the header,
 * config, layout and shared words; the lease; the registry; the rings; every non-free slot
 * (read in batches, so a queue of millions of slots needs no more memory than one batch); the
 * counters; and the inconsistencies, which make the exit status 1.
 *
 * A live queue may change while it is dumped: each word is read once, so a dump is a
 * best-effort picture, not an atomic snapshot.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emit.h"
#include "inspect.h"

#define ERRORS_SHOWN 32u /* inconsistencies listed one by one; the rest are only counted */
#define SLOT_BATCH 256u  /* slots read per call of inspect_slots() */

void cmd_dump_help(FILE *out)
{
    fprintf(out,
            "Usage: %s dump NAME [--json]\n"
            "\n"
            "Print everything in the segment of the queue NAME (/dev/shm/shmq.NAME) without\n"
            "taking part in the queue: the segment is validated and mapped read-only; the tool\n"
            "does not register and writes nothing. Safe on a live queue, where the picture is\n"
            "best-effort (each word is read once), not an atomic snapshot.\n"
            "\n"
            "Sections:\n"
            "  header       magic, format version, header and segment size, creation time\n"
            "  config       capacity, max_msg_size, max_procs, timeouts, attempts, backoff, mode\n"
            "  layout       slot stride, ring order and size, offsets of every region\n"
            "  state        next_id, futex words and waiter counts, maintenance passes\n"
            "  lease        the maintenance lease: holder (registry index), priority, expiry\n"
            "  registry     each non-free entry: index, state, gen, pid, role, name, heartbeat\n"
            "               age in ms, alive/dead (the registry's rule: a pid that is gone or\n"
            "               a zombie is dead; one with another start time in /proc/PID/stat\n"
            "               was reused: pid-reused), group (the index of the consumer group\n"
            "               it receives in; shown where groups are)\n"
            "  groups       each consumer group (in text when the queue has one besides\n"
            "               \"default\"; always in --json), as `%s stat` shows it: index,\n"
            "               name, state, policy, bound, its messages by state, held, lag,\n"
            "               oldest_message_age_ms, overrun, first_id, consumers, delivered,\n"
            "               acked, nacked\n"
            "  rings        free, ready and dead rings: head, tail, threshold, non-empty cells\n"
            "  slots        each non-free slot: index, state, gen, owner (registry index), id,\n"
            "               attempt, len, age in ms, deadline, ticket, delivery token, dead\n"
            "               reason, linger (a former owner that may still read it), and the\n"
            "               first %u payload bytes (as text if printable, else hex)\n"
            "               States: RESERVED READY INFLIGHT DELAYED DEAD FENCED (INVALID: none\n"
            "               of these, an inconsistency)\n"
            "  slot_counts  slots by state\n"
            "  counters     published, delivered, acked, ... summed over the live registry\n"
            "               entries and the header's retired counters\n"
            "  retired_counters  the header's part: counters of released registry entries\n"
            "  errors       inconsistencies: a state, owner, linger, length or ring index out\n"
            "               of range\n"
            "\n"
            "Options:\n"
            "  --json       print one JSON document (same fields) instead of text\n"
            "  -h, --help   print this help\n"
            "\n"
            "Exit status:\n"
            "  0  the segment was dumped and is consistent\n"
            "  1  runtime error: no such queue, no permission, another format version, a\n"
            "     truncated or corrupted segment (reason on stderr). When the header is valid\n"
            "     but entries are not, the dump is still printed with its errors listed.\n"
            "     If the file shrinks while it is read (SIGBUS), the output stops there.\n"
            "  2  usage error\n"
            "\n"
            "Examples:\n"
            "  %s dump orders\n"
            "  %s dump orders --json | jq '.slots[] | select(.state == \"INFLIGHT\")'\n"
            "  %s dump orders --json | jq .slot_counts.ready\n",
            cli_progname, cli_progname, INSPECT_PREVIEW_BYTES, cli_progname, cli_progname,
            cli_progname);
}

static void dump_header(struct emitter *e, const struct inspect_snapshot *s)
{
    const struct inspect_header *h = &s->header;
    char magic[9] = {0};
    memcpy(magic, &h->magic, 8);

    emit_begin(e, "header", NULL, EMIT_BLOCK);
    emit_hex(e, "magic", h->magic);
    emit_bytes(e, "magic_text", magic, bytes_printable((unsigned char *)magic, 8) ? 8 : 0);
    emit_u64(e, "version", h->version);
    emit_u64(e, "header_size", h->header_size);
    emit_u64(e, "total_size", h->total_size);
    emit_u64(e, "mapped_size", h->mapped_size);
    emit_hex(e, "header_crc", h->header_crc);
    emit_u64(e, "created_ns", h->created_ns);
    emit_i64(e, "created_age_ms", h->created_age_ms);
    emit_end(e);

    const shmq_config_t *c = &s->cfg;
    emit_begin(e, "config", NULL, EMIT_BLOCK);
    emit_u64(e, "capacity", c->capacity);
    emit_u64(e, "max_msg_size", c->max_msg_size);
    emit_u64(e, "max_procs", c->max_procs);
    emit_u64(e, "heartbeat_timeout_ms", c->heartbeat_timeout_ms);
    emit_u64(e, "ack_deadline_ms", c->ack_deadline_ms);
    emit_u64(e, "max_attempts", c->max_attempts);
    emit_u64(e, "backoff_base_ms", c->backoff_base_ms);
    emit_u64(e, "backoff_cap_ms", c->backoff_cap_ms);
    emit_double(e, "backoff_multiplier", c->backoff_multiplier);
    emit_oct(e, "mode", (uint32_t)c->mode);
    emit_end(e);

    emit_begin(e, "layout", NULL, EMIT_BLOCK);
    for (uint32_t i = 0; i < s->n_layout; i++)
        emit_u64(e, s->layout[i].key, s->layout[i].value);
    emit_end(e);
    emit_begin(e, "state", NULL, EMIT_BLOCK);
    for (uint32_t i = 0; i < s->n_words; i++)
        emit_u64(e, s->words[i].key, s->words[i].value);
    emit_end(e);

    const struct inspect_lease *l = &s->lease;
    emit_begin(e, "lease", NULL, EMIT_INLINE);
    emit_hex(e, "word", l->word);
    if (!l->recorded) {
        emit_null(e, "holder");
        emit_null(e, "priority");
        emit_null(e, "expires_in_ms");
    } else {
        emit_u64(e, "holder", l->holder);
        emit_u64(e, "priority", (uint64_t)l->priority);
        emit_i64(e, "expires_in_ms", l->expires_in_ms);
    }
    emit_end(e);
}

static void emit_counters(struct emitter *e, const char *key, enum emit_kind kind,
                          const uint64_t *counters)
{
    emit_begin(e, key, NULL, kind);
    for (int c = 0; c < INSPECT_COUNTERS; c++)
        emit_u64(e, inspect_counter_name(c), counters[c]);
    emit_end(e);
}

static void dump_registry(struct emitter *e, const struct inspect_snapshot *s)
{
    emit_begin(e, "registry", NULL, EMIT_ARRAY);
    for (uint32_t i = 0; i < s->n_procs; i++) {
        const struct inspect_proc *p = &s->procs[i];
        char label[32], role[64];
        snprintf(label, sizeof(label), "entry %" PRIu32, p->index);
        emit_begin(e, NULL, label, EMIT_INLINE);
        emit_u64(e, "index", p->index);
        emit_word(e, "state", inspect_proc_state_name(p->state));
        emit_u64(e, "gen", p->gen);
        emit_i64(e, "pid", p->pid);
        emit_word(e, "role", inspect_role_text(p->role, role, sizeof(role)));
        emit_bytes(e, "name", p->name, strnlen(p->name, sizeof(p->name)));
        emit_u64(e, "start_time", p->start_time);
        if (p->heartbeat_seen) {
            emit_i64(e, "heartbeat_age_ms", p->heartbeat_age_ms);
            emit_bool(e, "heartbeat_stale", p->heartbeat_stale);
        } else {
            emit_null(e, "heartbeat_age_ms");
            emit_null(e, "heartbeat_stale");
        }
        emit_word(e, "liveness", inspect_liveness_name(p->liveness));
        emit_bool(e, "alive", p->alive);
        if (e->json || inspect_has_groups(s))
            emit_u64(e, "group", p->group);
        emit_counters(e, "counters", EMIT_INLINE, p->counters);
        emit_end(e);
    }
    emit_end(e);
    emit_begin(e, "registry_summary", NULL, EMIT_INLINE);
    emit_u64(e, "entries", s->cfg.max_procs);
    emit_u64(e, "in_use", s->n_procs);
    emit_u64(e, "alive", s->procs_alive);
    emit_end(e);
    stat_emit_groups(e, s);
}

static int dump_rings(struct emitter *e, struct inspect_segment *seg, struct inspect_notes *notes)
{
    struct inspect_ring rings[INSPECT_RINGS_MAX];
    uint32_t n;
    int err = inspect_rings(seg, rings, &n, notes);
    if (err)
        return err;
    emit_begin(e, "rings", NULL, EMIT_BLOCK);
    for (uint32_t i = 0; i < n; i++) {
        const struct inspect_ring *r = &rings[i];
        emit_begin(e, r->name, NULL, EMIT_INLINE);
        emit_u64(e, "head", r->head);
        emit_u64(e, "tail", r->tail);
        emit_i64(e, "threshold", r->threshold);
        emit_u64(e, "nonempty_cells", r->nonempty_cells);
        emit_u64(e, "cells", r->cells);
        emit_end(e);
    }
    emit_end(e);
    return 0;
}

/* One non-free slot. */
/* The preview's bytes shown as text: all of them, less a UTF-8 character the cut at
 * INSPECT_PREVIEW_BYTES split (so "é" at the cut does not turn the whole preview into hex). */
static size_t preview_text_len(const struct inspect_slot *o)
{
    bool cut = o->len > INSPECT_PREVIEW_BYTES;
    return cut ? utf8_cut_tail(o->preview, o->preview_len) : o->preview_len;
}

static void dump_slot(struct emitter *e, const struct inspect_slot *o)
{
    char label[32];
    snprintf(label, sizeof(label), "slot %" PRIu32, o->index);
    emit_begin(e, NULL, label, EMIT_INLINE);
    emit_u64(e, "index", o->index);
    emit_word(e, "state", inspect_slot_state_name(o->state));
    emit_u64(e, "gen", o->gen);
    if (o->has_owner)
        emit_u64(e, "owner", o->owner);
    else
        emit_null(e, "owner");
    emit_u64(e, "id", o->id);
    emit_u64(e, "attempt", o->attempt);
    emit_u64(e, "len", o->len);
    if (o->has_age)
        emit_i64(e, "age_ms", o->age_ms);
    else
        emit_null(e, "age_ms");
    if (o->has_deadline)
        emit_i64(e, "deadline_in_ms", o->deadline_in_ms);
    else
        emit_null(e, "deadline_in_ms");
    if (o->has_ticket)
        emit_u64(e, "ticket", o->ticket);
    else
        emit_null(e, "ticket");
    if (o->has_token)
        emit_hex(e, "token", o->token);
    else
        emit_null(e, "token");
    if (o->has_dead_reason)
        emit_word(e, "dead_reason", inspect_dead_reason_name(o->dead_reason));
    else
        emit_null(e, "dead_reason");
    if (o->has_linger)
        emit_u64(e, "linger", o->linger);
    else
        emit_null(e, "linger");
    if (!o->len_valid) {
        emit_null(e, "preview_encoding");
        emit_null(e, "preview");
    } else if (bytes_printable(o->preview, preview_text_len(o))) {
        emit_word(e, "preview_encoding", "text");
        emit_bytes(e, "preview", o->preview, preview_text_len(o));
    } else {
        emit_word(e, "preview_encoding", "hex");
        emit_hexbytes(e, "preview", o->preview, o->preview_len);
    }
    emit_bool(e, "preview_truncated", o->len_valid && o->len > INSPECT_PREVIEW_BYTES);
    emit_end(e);
}

/* Every non-free slot, then the counts by state of all of them. */
static int dump_slots(struct emitter *e, struct inspect_segment *seg,
                      const struct inspect_snapshot *s, struct inspect_notes *notes)
{
    static struct inspect_slot batch[SLOT_BATCH];
    struct inspect_slot_cursor cur;
    inspect_slot_cursor_init(&cur, s->taken_ns);
    emit_begin(e, "slots", NULL, EMIT_ARRAY);
    while (cur.next < s->cfg.capacity) {
        uint32_t n;
        int err = inspect_slots(seg, &cur, batch, SLOT_BATCH, &n, notes);
        if (err)
            return err;
        for (uint32_t i = 0; i < n; i++)
            dump_slot(e, &batch[i]);
    }
    emit_end(e);

    emit_begin(e, "slot_counts", NULL, EMIT_INLINE);
    for (int st = 0; st < INSPECT_SLOT_STATES; st++) {
        char key[16];
        const char *name = inspect_slot_state_name(st);
        size_t k;
        for (k = 0; name[k] && k < sizeof(key) - 1; k++)
            key[k] = (char)(name[k] | 0x20); /* lowercase */
        key[k] = '\0';
        emit_u64(e, key, cur.counts[st]);
    }
    emit_u64(e, "total", s->cfg.capacity);
    emit_end(e);
    return 0;
}

static void dump_errors(struct emitter *e, const struct inspect_notes *notes)
{
    if (!e->json && notes->count == 0)
        return;
    emit_u64(e, "inconsistencies", notes->count);
    emit_begin(e, "errors", NULL, EMIT_ARRAY);
    uint64_t shown = notes->count < ERRORS_SHOWN ? notes->count : ERRORS_SHOWN;
    for (uint64_t i = 0; i < shown; i++)
        emit_bytes(e, NULL, notes->text[i], strlen(notes->text[i]));
    if (notes->count > shown) {
        char more[64];
        snprintf(more, sizeof(more), "... and %" PRIu64 " more", notes->count - shown);
        emit_bytes(e, NULL, more, strlen(more));
    }
    emit_end(e);
}

static const char *open_error(int err)
{
    switch (err) {
    case -ENOENT: return "no such queue";
    case -EACCES: return "permission denied";
    case -EPROTO: return "segment of another format version";
    case -EBADMSG: return "segment is truncated, corrupted or not a shmq segment";
    case INSPECT_ENOTREG: return "not a regular file, so not a shmq segment";
    case -EFAULT: return "segment truncated while it was read (SIGBUS)";
    default: return strerror(-err);
    }
}

/* Parse argv: NAME and --json. 0, or CLI_EXIT_USAGE (message printed), or -1 for --help. */
static int parse_args(int argc, char **argv, const char **name, bool *json)
{
    bool options_done = false;
    *name = NULL;
    *json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                options_done = true;
            } else if (strcmp(a, "--json") == 0) {
                *json = true;
            } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                return -1;
            } else {
                fprintf(stderr, "%s dump: unknown option '%s' (try '%s dump --help')\n",
                        cli_progname, a, cli_progname);
                return CLI_EXIT_USAGE;
            }
        } else if (*name) {
            fprintf(stderr, "%s dump: unexpected argument '%s' (one queue NAME only)\n",
                    cli_progname, a);
            return CLI_EXIT_USAGE;
        } else {
            *name = a;
        }
    }
    if (!*name) {
        fprintf(stderr, "%s dump: missing queue NAME (try '%s dump --help')\n", cli_progname,
                cli_progname);
        return CLI_EXIT_USAGE;
    }
    if (inspect_name_check(*name) != 0) {
        fprintf(stderr, "%s dump: invalid queue name '%s' (1..%d bytes of [A-Za-z0-9._-])\n",
                cli_progname, *name, SHMQ_NAME_MAX);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cmd_dump(int argc, char **argv)
{
    const char *name;
    bool json;
    int rc = parse_args(argc, argv, &name, &json);
    if (rc < 0) {
        cmd_dump_help(stdout);
        return CLI_EXIT_OK;
    }
    if (rc)
        return rc;

    struct inspect_segment *seg;
    const char *why;
    int err = inspect_segment_open(name, &seg, &why);
    if (err) {
        char path[SHMQ_NAME_MAX + 32];
        if (why)
            fprintf(stderr, "%s dump: %s: segment layout inconsistent after validation: %s\n",
                    cli_progname, name, why);
        else if (inspect_segment_path(name, path, sizeof(path)) == 0)
            fprintf(stderr, "%s dump: %s: %s (%s: %s)\n", cli_progname, name, open_error(err), path,
                    err == INSPECT_ENOTREG ? "not a file" : strerror(-err));
        else
            fprintf(stderr, "%s dump: %s: %s\n", cli_progname, name, open_error(err));
        return CLI_EXIT_RUNTIME;
    }
    /* static: a snapshot holds its inconsistency notes (kilobytes) */
    static struct inspect_snapshot s;
    err = inspect_segment_read(seg, &s);
    struct emitter e;
    bool started = !err; /* the output has begun: a later error ends it half-way */
    if (!err) {
        emit_init(&e, stdout, json);
        emit_bytes(&e, "queue", name, strlen(name));
        dump_header(&e, &s);
        dump_registry(&e, &s);
        err = dump_rings(&e, seg, &s.notes);
    }
    if (!err)
        err = dump_slots(&e, seg, &s, &s.notes);
    inspect_segment_close(seg);
    if (err) {
        fflush(stdout);
        fprintf(stderr, "%s%s dump: %s: %s\n", started ? "\n" : "", cli_progname, name,
                open_error(err));
        inspect_snapshot_free(&s);
        return CLI_EXIT_RUNTIME;
    }
    emit_counters(&e, "counters", EMIT_BLOCK, s.counters);
    emit_counters(&e, "retired_counters", EMIT_INLINE, s.retired);
    dump_errors(&e, &s.notes);
    emit_finish(&e);
    uint64_t problems = s.notes.count;
    inspect_snapshot_free(&s);
    if (problems) {
        fflush(stdout);
        fprintf(stderr,
                "%s dump: %s: segment is corrupted: %" PRIu64 " inconsistenc%s (listed under "
                "errors)\n",
                cli_progname, name, problems, problems == 1 ? "y" : "ies");
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}
