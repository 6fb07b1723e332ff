/*
 * args.c - command-line parsing shared by the subcommands of `shmq`: numbers with ranges,
 * timeouts, queue names, and getopt_long() error messages, all in one wording.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "badopt.h"
#include "cli.h"
#include "inspect.h"

int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t lo, uint64_t hi,
            uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || *s == '+' || v < lo || v > hi) {
        fprintf(stderr, "%s %s: %s: '%s' is not a whole number in %" PRIu64 "..%" PRIu64 "\n",
                cli_progname, cmd, opt, s, lo, hi);
        return CLI_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

int cli_u32(const char *cmd, const char *opt, const char *s, uint32_t lo, uint32_t hi,
            uint32_t *out)
{
    uint64_t v;
    int rc = cli_u64(cmd, opt, s, lo, hi, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

int cli_expire_policy(const char *cmd, const char *s, uint32_t *out)
{
    if (strcmp(s, "drop") == 0 || strcmp(s, "dead-letter") == 0) {
        *out = s[1] == 'r' ? SHMQ_EXPIRE_DROP : SHMQ_EXPIRE_DEAD_LETTER;
        return 0;
    }
    fprintf(stderr, "%s %s: --expire: '%s' is not drop or dead-letter\n", cli_progname, cmd, s);
    return CLI_EXIT_USAGE;
}

const char *cli_expire_name(uint32_t policy)
{
    return policy == SHMQ_EXPIRE_DEAD_LETTER ? "dead-letter" : "drop";
}

int cli_timeout(const char *cmd, const char *opt, const char *s, int *out)
{
    if (strcmp(s, "-1") == 0) {
        *out = -1;
        return 0;
    }
    uint32_t v;
    int rc = cli_u32(cmd, opt, s, 0, INT32_MAX, &v);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

int cli_name(const char *cmd, const char *name)
{
    if (inspect_name_check(name) == 0)
        return 0;
    fprintf(stderr, "%s %s: invalid queue name '%s' (1..%d bytes of [A-Za-z0-9._-])\n",
            cli_progname, cmd, name, SHMQ_NAME_MAX);
    return CLI_EXIT_USAGE;
}

int cli_bad_option(const char *cmd, int c, char **argv)
{
    tool_bad_option(cli_progname, cmd, c, argv);
    return CLI_EXIT_USAGE;
}

const char *cli_group_strerror(const char *group, int err)
{
    return err == -ENOENT && group ? "no such consumer group (shmq group NAME list)"
                                   : shmq_strerror(err);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s %s: ", cli_progname, cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (try '%s %s --help')\n", cli_progname, cmd);
    return CLI_EXIT_USAGE;
}

int cli_log_dir(const char *cmd, const char *arg, char *buf, size_t size)
{
    char cwd[SHMQ_LOG_DIR_MAX + 1];
    int n = -1;
    if (arg[0] == '/')
        n = snprintf(buf, size, "%s", arg);
    else if (arg[0] && getcwd(cwd, sizeof(cwd))) /* the library takes absolute paths only */
        n = snprintf(buf, size, "%s/%s", strcmp(cwd, "/") ? cwd : "", arg);
    if (n <= 0 || (size_t)n >= size || n > SHMQ_LOG_DIR_MAX) {
        fprintf(stderr, "%s %s: --log-dir: '%s' is empty or longer than %d bytes as an absolute path\n",
                cli_progname, cmd, arg, SHMQ_LOG_DIR_MAX);
        return CLI_EXIT_USAGE;
    }
    return 0;
}
