/*
 * group.c - `shmq group NAME add GROUP [--overrun N] | delete GROUP | list [--json]`: a queue's
 * consumer groups (fan-out), through shmq_group_create(), shmq_group_delete() and
 * shmq_group_list().
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emit.h"

void cmd_group_help(FILE *out)
{
    fprintf(out,
            "Usage: %s group NAME add GROUP [--overrun N]\n"
            "       %s group NAME delete GROUP\n"
            "       %s group NAME list [--json]\n"
            "\n"
            "The consumer groups of the queue NAME (README \"Fan-out\"). Every message published\n"
            "while a group exists is delivered to that group: its consumers (`shmq sub --group`,\n"
            "shmq_consumer_open_group) compete for it, with the group's own acks, retries and\n"
            "dead letters. A queue holds at most --max-groups groups (`shmq create`); the group\n"
            "\"default\" is made with it.\n"
            "\n"
            "  add       make GROUP; it receives the messages published from now on. A slow\n"
            "            group holds its messages and publishers see a full queue, unless\n"
            "            --overrun N: it then loses its oldest ready messages beyond N\n"
            "  delete    GROUP receives nothing more and what it held is released (\"default\"\n"
            "            stays)\n"
            "  list      each group: index, name, policy, messages held at the last maintenance\n"
            "            pass, its lag now (ids published since the oldest message it has not\n"
            "            finished; 0: caught up; - or null while it is deleted), messages\n"
            "            dropped by --overrun, the id it started from\n"
            "\n"
            "Options:\n"
            "  --overrun N  (add) the OVERRUN policy with bound N messages, 1..4294967295\n"
            "  --json       (list) one JSON document {\"groups\": [...]}\n"
            "  -h, --help   this text\n"
            "\n"
            "Exit status: 0 ok; 1 runtime error (no such queue or group, the group exists, no\n"
            "room for another group); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s create orders --max-groups 8\n"
            "  %s group orders add audit\n"
            "  %s group orders add metrics --overrun 1000\n"
            "  %s group orders list\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname,
            cli_progname);
}

static int list(shmq_t *q, const char *name, bool json)
{
    shmq_group_info_t g[SHMQ_GROUPS_MAX];
    size_t n = 0;
    int err = shmq_group_list(q, g, SHMQ_GROUPS_MAX, &n);
    if (err) {
        fprintf(stderr, "%s group: %s: list: %s\n", cli_progname, name, shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    struct emitter e;
    if (json) {
        emit_init(&e, stdout, true);
        emit_bytes(&e, "queue", name, strlen(name));
        emit_begin(&e, "groups", NULL, EMIT_ARRAY);
    } else {
        printf("%-5s %-32s %-8s %-10s %-10s %-10s %-10s %s\n", "INDEX", "GROUP", "POLICY",
               "BOUND", "HELD", "LAG", "OVERRUN", "FIRST_ID");
    }
    for (size_t i = 0; i < n; i++) {
        const char *policy = g[i].policy == SHMQ_GROUP_OVERRUN ? "overrun" : "block";
        /* its lag now (a scan of its cells); none for a group being deleted */
        shmq_group_stats_t st;
        bool have_lag = !g[i].deleting && shmq_group_stats(q, g[i].name, &st) == 0;
        char lag[24] = "-";
        if (have_lag)
            snprintf(lag, sizeof lag, "%" PRIu64, st.lag);
        if (json) {
            emit_begin(&e, NULL, NULL, EMIT_INLINE);
            emit_u64(&e, "index", g[i].index);
            emit_bytes(&e, "name", g[i].name, strlen(g[i].name));
            emit_word(&e, "policy", policy);
            emit_u64(&e, "bound", g[i].bound);
            emit_u64(&e, "held", g[i].held);
            if (have_lag)
                emit_u64(&e, "lag", st.lag);
            else
                emit_null(&e, "lag");
            emit_u64(&e, "overrun", g[i].overrun);
            emit_u64(&e, "first_id", g[i].first_id);
            emit_bool(&e, "deleting", g[i].deleting);
            emit_end(&e);
            continue;
        }
        printf("%-5" PRIu32 " %-32s %-8s %-10" PRIu32 " %-10" PRIu64 " %-10s %-10" PRIu64
               " %" PRIu64 "%s\n",
               g[i].index, g[i].name, policy, g[i].bound, g[i].held, lag, g[i].overrun,
               g[i].first_id, g[i].deleting ? " (deleting)" : "");
    }
    if (json)
        emit_finish(&e);
    return CLI_EXIT_OK;
}

int cmd_group(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"overrun", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false, overrun = false;
    uint32_t bound = 0;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'o':
            if ((rc = cli_u32("group", "--overrun", optarg, 1, UINT32_MAX, &bound)) != 0)
                return rc;
            overrun = true;
            break;
        case 'h': cmd_group_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("group", c, argv);
        }
    }
    int nargs = argc - optind;
    if (nargs < 1)
        return cli_usage_error("group", "missing queue NAME");
    if (nargs < 2)
        return cli_usage_error("group", "missing action: add, delete or list");
    const char *name = argv[optind], *action = argv[optind + 1];
    if ((rc = cli_name("group", name)) != 0)
        return rc;
    bool is_list = strcmp(action, "list") == 0, is_add = strcmp(action, "add") == 0;
    if (!is_list && !is_add && strcmp(action, "delete") != 0)
        return cli_usage_error("group", "unknown action '%s' (add, delete or list)", action);
    if (is_list ? nargs > 2 : nargs != 3)
        return nargs > 3 || is_list
                   ? cli_usage_error("group", "unexpected argument '%s'", argv[optind + 2 + !is_list])
                   : cli_usage_error("group", "missing GROUP");
    if (json && !is_list)
        return cli_usage_error("group", "--json goes with list only");
    if (overrun && !is_add)
        return cli_usage_error("group", "--overrun goes with add only");

    shmq_t *q = NULL;
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s group: %s: %s\n", cli_progname, name, shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    if (is_list) {
        rc = list(q, name, json);
    } else {
        const char *group = argv[optind + 2];
        err = is_add ? shmq_group_create(q, group, overrun ? SHMQ_GROUP_OVERRUN : SHMQ_GROUP_BLOCK,
                                         bound)
                     : shmq_group_delete(q, group);
        rc = CLI_EXIT_OK;
        if (err) {
            const char *why = err == -ENOSPC   ? " (the queue holds --max-groups groups already)"
                              : err == -EINVAL ? " (a group name is 1-31 of [A-Za-z0-9._-])"
                                               : "";
            if (err == -EPERM)
                fprintf(stderr, "%s group: %s: the group \"default\" cannot be deleted\n",
                        cli_progname, name);
            else
                fprintf(stderr, "%s group: %s: %s %s: %s%s\n", cli_progname, name, action, group,
                        shmq_strerror(err), why);
            rc = CLI_EXIT_RUNTIME;
        }
    }
    shmq_close(q);
    return rc;
}
