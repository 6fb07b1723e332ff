/*
 * dlq.c - `shmq dlq NAME list|redrive [ID]|purge [ID] [--group G]`: the dead letters of a
 * queue's consumer group, through shmq_dlq_list_group(), shmq_dlq_redrive_group() and
 * shmq_dlq_purge_group() (no --group: "default", the same as the plain calls).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emit.h"

#define PREVIEW_BYTES 64u

void cmd_dlq_help(FILE *out)
{
    fprintf(out,
            "Usage: %s dlq NAME list [--json] [--group GROUP]\n"
            "       %s dlq NAME redrive [ID] [--group GROUP]\n"
            "       %s dlq NAME purge [ID] [--group GROUP]\n"
            "\n"
            "The dead letters of the queue NAME: messages delivered max_attempts times without\n"
            "an ack (reason max-attempts), expired before a delivery (expired, with expire\n"
            "policy dead-letter), or found with an impossible length (corrupt). Each consumer\n"
            "group has its own (`shmq group`); without --group, the group \"default\".\n"
            "\n"
            "  list      each dead letter, oldest id first: id, attempt (deliveries it had),\n"
            "            reason, len, and the first %u bytes of its payload (text if printable,\n"
            "            else hex); with --json the whole payload: \"data\" (a string) when it\n"
            "            is valid UTF-8, else \"data_b64\" (base64)\n"
            "  redrive   put dead letter ID (all without ID) back on the queue, attempt 0, for\n"
            "            the group alone; prints how many moved\n"
            "  purge     drop dead letter ID (all without ID) from the group (its slot is free\n"
            "            once no group holds it); prints how many were dropped\n"
            "\n"
            "Options:\n"
            "  -g, --group GROUP  the consumer group's dead letters (default: \"default\")\n"
            "  --json      (list) one JSON document {\"dead_letters\": [...]}\n"
            "  -h, --help  this text\n"
            "\n"
            "Exit status: 0 ok (also when there was nothing to move); 1 runtime error (no such\n"
            "queue or group, corrupted segment, no dead letter with that ID); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s dlq orders list\n"
            "  %s dlq orders list --json | jq '.dead_letters[].id'\n"
            "  %s dlq orders redrive 42      # just message 42\n"
            "  %s dlq orders purge           # all of them\n"
            "  %s dlq orders list --group audit\n",
            cli_progname, cli_progname, cli_progname, PREVIEW_BYTES, cli_progname, cli_progname,
            cli_progname, cli_progname, cli_progname);
}

static const char *reason_name(uint32_t reason)
{
    switch (reason) {
    case SHMQ_DEAD_MAX_ATTEMPTS: return "max-attempts";
    case SHMQ_DEAD_CORRUPT: return "corrupt";
    case SHMQ_DEAD_EXPIRED: return "expired";
    default: return "unknown";
    }
}

static int list(shmq_t *q, const char *name, const char *group, bool json)
{
    shmq_config_t cfg;
    int err = shmq_get_config(q, &cfg);
    shmq_dead_letter_t *dl = err ? NULL : calloc(cfg.capacity, sizeof(*dl));
    size_t n = 0;
    if (!err && !dl)
        err = -ENOMEM;
    if (!err)
        err = shmq_dlq_list_group(q, group, dl, cfg.capacity, &n);
    if (err) {
        fprintf(stderr, "%s dlq: %s: list: %s\n", cli_progname, name,
                cli_group_strerror(group, err));
        free(dl);
        return CLI_EXIT_RUNTIME;
    }
    struct emitter e;
    if (json) {
        emit_init(&e, stdout, true);
        emit_bytes(&e, "queue", name, strlen(name));
        emit_bytes(&e, "group", group ? group : "default", strlen(group ? group : "default"));
        emit_begin(&e, "dead_letters", NULL, EMIT_ARRAY);
    } else {
        printf("%-12s %-7s %-12s %-8s %s\n", "ID", "ATTEMPT", "REASON", "LEN", "PAYLOAD");
    }
    for (size_t i = 0; i < n; i++) {
        const shmq_dead_letter_t *d = &dl[i];
        if (json) {
            emit_begin(&e, NULL, NULL, EMIT_INLINE);
            emit_u64(&e, "id", d->id);
            emit_u64(&e, "attempt", d->attempt);
            emit_word(&e, "reason", reason_name(d->reason));
            emit_u64(&e, "len", d->len);
            emit_payload(&e, "data", d->data, d->len);
            emit_end(&e);
            continue;
        }
        size_t k = d->len < PREVIEW_BYTES ? d->len : PREVIEW_BYTES;
        /* as text: up to the cut, less a UTF-8 character it split */
        size_t kt = d->len > k ? utf8_cut_tail(d->data, k) : k;
        printf("%-12" PRIu64 " %-7" PRIu32 " %-12s %-8zu ", d->id, d->attempt,
               reason_name(d->reason), d->len);
        if (bytes_printable(d->data, kt)) {
            text_quoted(stdout, d->data, kt);
        } else {
            fputs("0x", stdout);
            hex_bytes(stdout, d->data, k);
        }
        puts(d->len > k ? " ..." : "");
    }
    if (json)
        emit_finish(&e);
    free(dl);
    return CLI_EXIT_OK;
}

static int move(shmq_t *q, const char *name, const char *group, const char *action, uint64_t id)
{
    uint32_t moved = 0;
    bool redrive = strcmp(action, "redrive") == 0;
    int err = redrive ? shmq_dlq_redrive_group(q, group, id, &moved)
                      : shmq_dlq_purge_group(q, group, id, &moved);
    if (err) {
        fprintf(stderr, "%s dlq: %s: %s: %s\n", cli_progname, name, action,
                cli_group_strerror(group, err));
        return CLI_EXIT_RUNTIME;
    }
    printf("%" PRIu32 " dead letter%s %s\n", moved, moved == 1 ? "" : "s",
           redrive ? "redriven" : "purged");
    if (id && moved == 0) {
        fprintf(stderr, "%s dlq: %s: %s: no dead letter with id %" PRIu64 "\n", cli_progname, name,
                action, id);
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}

int cmd_dlq(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"group", required_argument, NULL, 'g'},
        {"help", no_argument, NULL, 'h'}, {0}};
    bool json = false;
    const char *group = NULL; /* "default" */
    int c, rc;
    while ((c = getopt_long(argc, argv, ":hg:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'g': group = optarg; break;
        case 'h': cmd_dlq_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("dlq", c, argv);
        }
    }
    int nargs = argc - optind;
    if (nargs < 1)
        return cli_usage_error("dlq", "missing queue NAME");
    if (nargs < 2)
        return cli_usage_error("dlq", "missing action: list, redrive or purge");
    const char *name = argv[optind], *action = argv[optind + 1];
    if ((rc = cli_name("dlq", name)) != 0)
        return rc;
    bool is_list = strcmp(action, "list") == 0;
    if (!is_list && strcmp(action, "redrive") != 0 && strcmp(action, "purge") != 0)
        return cli_usage_error("dlq", "unknown action '%s' (list, redrive or purge)", action);
    uint64_t id = 0;
    if (is_list && nargs > 2)
        return cli_usage_error("dlq", "list takes no ID");
    if (nargs > 3)
        return cli_usage_error("dlq", "unexpected argument '%s'", argv[optind + 3]);
    if (nargs == 3 && (rc = cli_u64("dlq", "ID", argv[optind + 2], 1, UINT64_MAX, &id)))
        return rc;
    if (json && !is_list)
        return cli_usage_error("dlq", "--json goes with list only");

    shmq_t *q = NULL;
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s dlq: %s: %s\n", cli_progname, name, shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    rc = is_list ? list(q, name, group, json) : move(q, name, group, action, id);
    shmq_close(q);
    return rc;
}
