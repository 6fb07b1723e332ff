/*
 * main.c - the `shmq` command-line tool: finds the subcommand and runs it.
 *
 * Usage: shmq COMMAND [ARGS...]; `shmq help [COMMAND]` and `shmq COMMAND --help` print help,
 * `shmq --version` the version.
 * Exit codes (cli.h): 0 ok, 1 runtime error (wal verify: a damaged log), 2 usage error,
 * 3 refused because processes are attached (delete), 4 timed out before --count messages (sub).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "version.h"

const char *cli_progname = "shmq";

static const struct cli_command commands[] = {
    {"list", "every queue on this host: depth, in flight, consumers, dead letters", cmd_list,
     cmd_list_help},
    {"create", "create a queue (capacity, message size, timeouts, retry policy, mode)", cmd_create,
     cmd_create_help},
    {"delete", "delete a queue (refused while processes are attached, unless --force)", cmd_delete,
     cmd_delete_help},
    {"stat", "counters, depth, oldest message age, consumers (once; rates with -i)", cmd_stat,
     cmd_stat_help},
    {"top", "stat refreshed in place, with rates per second", cmd_top, cmd_top_help},
    {"pub", "publish arguments, or lines of stdin, as messages", cmd_pub, cmd_pub_help},
    {"sub", "consume messages and print them, one per line", cmd_sub, cmd_sub_help},
    {"replay", "print a queue's history from its log, from an id or a time (read-only)", cmd_replay,
     cmd_replay_help},
    {"peek", "print ready messages without taking them (no attempt spent)", cmd_peek,
     cmd_peek_help},
    {"purge", "drop every ready message (--delayed: and the delayed ones); print the count",
     cmd_purge, cmd_purge_help},
    {"config", "change a running queue's timeouts and retry policy; print its settings", cmd_config,
     cmd_config_help},
    {"dlq", "dead letters: list, redrive, purge", cmd_dlq, cmd_dlq_help},
    {"group", "consumer groups (fan-out): add, delete, list", cmd_group, cmd_group_help},
    {"dump", "print a queue's segment: header, registry, rings, slots, counters", cmd_dump,
     cmd_dump_help},
    {"wal", "the write-ahead log: inspect files and records, verify; what recovery brings back",
     cmd_wal, cmd_wal_help},
    {"recover", "rebuild a lost segment from the log now (--log-dir: a log found elsewhere)",
     cmd_recover, cmd_recover_help},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: %s COMMAND [ARGS...]\n"
            "  or:  %s help [COMMAND]\n"
            "  or:  %s COMMAND --help\n"
            "  or:  %s --version\n"
            "\n"
            "Inspect and operate shmq shared-memory message queues (/dev/shm/shmq.NAME).\n"
            "\n"
            "Commands:\n",
            cli_progname, cli_progname, cli_progname, cli_progname);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-8s %s\n", "help", "print this text, or a command's help");
    fprintf(out, "\n  --version  print \"%s VERSION\" and exit\n", cli_progname);
    fprintf(out,
            "\n"
            "Examples:\n"
            "  %s list                           # every queue on this host\n"
            "  %s create orders --capacity 4096  # a new queue\n"
            "  seq 3 | %s pub orders             # three messages: 1, 2, 3\n"
            "  %s sub orders --count 3           # print (and ack) three messages\n"
            "  %s top orders                     # live counters and rates\n"
            "  %s dump orders --json             # everything in the segment, as JSON\n"
            "  %s wal orders verify              # is the write-ahead log sound?\n"
            "  %s help sub                       # the options of sub\n"
            "\n"
            "Exit status:\n"
            "  0 ok, 1 runtime error (no such queue, no permission, corrupted segment, damaged\n"
            "  log), 2 usage error, 3 refused: processes attached (delete), 4 timed out before\n"
            "  --count messages (sub). Each command's --help says which it uses.\n",
            cli_progname, cli_progname, cli_progname, cli_progname, cli_progname, cli_progname,
            cli_progname, cli_progname);
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (argc > 2) {
        fprintf(stderr, "%s help: too many arguments\n", cli_progname);
        return CLI_EXIT_USAGE;
    }
    const struct cli_command *c = find_command(argv[1]);
    if (!c) {
        if (strcmp(argv[1], "help") == 0) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        fprintf(stderr, "%s help: unknown command '%s' (try '%s help')\n", cli_progname, argv[1],
                cli_progname);
        return CLI_EXIT_USAGE;
    }
    c->help(stdout);
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    /* a write past RLIMIT_FSIZE (ulimit -f) is an EFBIG error each command reports, not a
     * SIGXFSZ that kills it mid-output (review F6) */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        return cmd_help(argc - 1, argv + 1);
    if (strcmp(name, "--version") == 0) {
        if (argc > 2) {
            fprintf(stderr, "%s --version: unexpected argument '%s'\n", cli_progname, argv[2]);
            return CLI_EXIT_USAGE;
        }
        return tool_print_version(cli_progname) == 0 ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
    }
    const struct cli_command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "%s: unknown command '%s' (try '%s help')\n", cli_progname, name,
                cli_progname);
        return CLI_EXIT_USAGE;
    }
    int rc = c->run(argc - 1, argv + 1);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) {
        perror("shmq: writing output");
        rc = CLI_EXIT_RUNTIME;
    }
    return rc;
}
