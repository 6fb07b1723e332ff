/*
 * delete.c - `shmq delete NAME [--force]`: delete a queue (segment and log, shmq_unlink()),
 * unless processes use it.
 *
 * The check opens the queue (shmq_open registers us for a moment) and lists its registry with
 * shmq_procs(): an entry other than our own whose process lives counts as attached (a fenced
 * entry of a live, hung process too: it may still read its slots). Processes that have the
 * queue mapped keep their mapping after the unlink, so deleting under them would split the
 * queue in two; hence the refusal. A segment that cannot be opened (corrupted without a log to
 * rebuild it from, other version) cannot be checked: it is refused too, and --force deletes it
 * without looking. (shmq_open() rebuilds a missing or corrupted segment from its log first.)
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

void cmd_delete_help(FILE *out)
{
    fprintf(out,
            "Usage: %s delete NAME [--force]\n"
            "\n"
            "Delete the queue NAME for good: its segment /dev/shm/shmq.NAME and its write-ahead\n"
            "log, if it has one (shmq_unlink). Its messages are lost.\n"
            "Refused while other processes are attached to it (a process that has it open keeps\n"
            "its mapping after the unlink and would go on using a queue nobody else sees), and\n"
            "when its segment cannot be opened to check (corrupted, another format version).\n"
            "\n"
            "Options:\n"
            "  -f, --force   unlink without checking\n"
            "  -h, --help    this text\n"
            "\n"
            "Exit status: 0 deleted; 1 runtime error (no such queue, no permission, segment\n"
            "cannot be checked: reason on stderr); 2 usage error; 3 refused: processes are\n"
            "attached (their pids on stderr).\n"
            "\n"
            "Examples:\n"
            "  %s delete orders\n"
            "  %s delete orders --force   # even with consumers attached\n",
            cli_progname, cli_progname, cli_progname);
}

static bool pid_lives(int32_t pid) { return pid > 0 && !(kill(pid, 0) != 0 && errno == ESRCH); }

/* Count the live processes attached to q other than us; print them. -errno on failure. */
static int attached(shmq_t *q, const char *name)
{
    shmq_config_t cfg;
    int err = shmq_get_config(q, &cfg);
    if (err)
        return err;
    shmq_proc_info_t *procs = calloc(cfg.max_procs, sizeof(*procs));
    if (!procs)
        return -ENOMEM;
    size_t n = 0;
    err = shmq_procs(q, procs, cfg.max_procs, &n);
    int count = 0;
    int32_t self = (int32_t)getpid();
    for (size_t i = 0; !err && i < n; i++) {
        const shmq_proc_info_t *p = &procs[i];
        if (p->pid == self || !pid_lives(p->pid))
            continue;
        bool seen = false; /* one line per process, not per entry */
        for (size_t j = 0; j < i && !seen; j++)
            seen = procs[j].pid == p->pid;
        if (seen)
            continue;
        uint32_t roles = 0;
        const char *pname = "";
        for (size_t j = i; j < n; j++) {
            if (procs[j].pid != p->pid)
                continue;
            roles |= procs[j].role;
            if (!pname[0])
                pname = procs[j].name;
        }
        fprintf(stderr, "%s delete: %s: attached: pid %d%s%s%s\n", cli_progname, name, (int)p->pid,
                roles & SHMQ_ROLE_CONSUMER ? " consumer" : " client", pname[0] ? " " : "", pname);
        count++;
    }
    free(procs);
    return err ? err : count;
}

int cmd_delete(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'}, {0}};
    bool force = false;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":fh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': force = true; break;
        case 'h': cmd_delete_help(stdout); return CLI_EXIT_OK;
        default: return cli_bad_option("delete", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("delete", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("delete", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("delete", name)) != 0)
        return rc;

    if (!force) {
        shmq_t *q = NULL;
        int err = shmq_open(name, &q);
        if (err) {
            fprintf(stderr, "%s delete: %s: %s%s\n", cli_progname, name, shmq_strerror(err),
                    err == -ENOENT ? ""
                                   : " (cannot check for attached processes; --force "
                                     "deletes it without checking)");
            return CLI_EXIT_RUNTIME;
        }
        int n = attached(q, name);
        shmq_close(q);
        if (n < 0) {
            fprintf(stderr, "%s delete: %s: %s\n", cli_progname, name, shmq_strerror(n));
            return CLI_EXIT_RUNTIME;
        }
        if (n > 0) {
            fprintf(stderr,
                    "%s delete: %s: refused: %d process%s attached (--force deletes anyway)\n",
                    cli_progname, name, n, n == 1 ? "" : "es");
            return CLI_EXIT_BUSY;
        }
    }
    int err = shmq_unlink(name);
    if (err) {
        fprintf(stderr, "%s delete: %s: %s\n", cli_progname, name, shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}
