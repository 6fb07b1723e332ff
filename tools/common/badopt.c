/*
 * badopt.c - the message for an option getopt_long() refused (see badopt.h).
 *
 * getopt_long() leaves only optind and optopt behind, and they say different things for a long
 * option, a short one that ended its argument (optind moved past it) and a short one inside a
 * cluster (optind still at the cluster): argv[optind - 1] alone names the wrong word for
 * `-xv` (the word before) or `q -xc 1`. So:
 *   - a short option still inside its cluster: argv[optind] is that cluster and holds optopt;
 *   - else a long option: argv[optind - 1] starts with "--" (optopt 0: unknown; with '=': it
 *     takes no value; ':' a missing value);
 *   - else the short option optopt that ended argv[optind - 1].
 */
#include "badopt.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool in_cluster(const char *arg, int opt)
{
    return arg && arg[0] == '-' && arg[1] && arg[1] != '-' && opt > 0 && opt < 256 &&
           strchr(arg + 1, opt);
}

void tool_bad_option(const char *prog, const char *cmd, int c, char **argv)
{
    char who[128], opt[128];
    snprintf(who, sizeof who, "%s%s%s", prog, cmd ? " " : "", cmd ? cmd : "");
    const char *cur = optind > 0 ? argv[optind - 1] : NULL;
    const char *next = argv[optind]; /* argv[argc] is NULL */
    const char *what = c == ':' ? "needs a value" : NULL;
    if (in_cluster(next, optopt) || !cur || strncmp(cur, "--", 2) != 0) {
        snprintf(opt, sizeof opt, "-%c", optopt > 32 && optopt < 127 ? optopt : '?');
    } else {
        const char *eq = strchr(cur, '=');
        int n = eq ? (int)(eq - cur) : (int)strlen(cur);
        snprintf(opt, sizeof opt, "%.*s", n, cur);
        if (c == '?' && eq && optopt != 0)
            what = "takes no value";
    }
    if (what)
        fprintf(stderr, "%s: option '%s' %s (try '%s --help')\n", who, opt, what, who);
    else
        fprintf(stderr, "%s: unknown option '%s' (try '%s --help')\n", who, opt, who);
}
