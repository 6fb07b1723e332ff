/*
 * badopt.h - the one message every tool prints for a command-line option getopt_long() refused
 * (shmq and each of its subcommands, shmq-watchdog, shmq-bridge).
 */
#ifndef SHMQ_TOOLS_BADOPT_H
#define SHMQ_TOOLS_BADOPT_H

/*
 * After getopt_long() returned '?' or ':' (optstring starting with ':', or opterr = 0), print
 * on stderr "PROG[ CMD]: unknown option '-x' (try 'PROG[ CMD] --help')", or "option '--count'
 * needs a value", or "option '--json' takes no value", naming the option as the user wrote it:
 * a short option by its letter (also inside a cluster such as -vx), a long one by its name.
 * cmd may be NULL (a tool without subcommands).
 */
void tool_bad_option(const char *prog, const char *cmd, int c, char **argv);

#endif
