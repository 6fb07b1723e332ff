/*
 * cli.h - what the subcommands of the `shmq` tool share: exit codes, the command table entry,
 * and the output helpers (escaped text and JSON strings) in output.c.
 *
 * Each subcommand lives in its own file (dump.c, ...) and exports a run and a help function;
 * main.c lists them in its command table. A subcommand returns one of the CLI_EXIT_* codes and
 * never calls exit() itself, so main.c stays the only place where the process ends.
 */
#ifndef SHMQ_TOOLS_CLI_H
#define SHMQ_TOOLS_CLI_H

#include <stddef.h>
#include <stdio.h>

/* Exit codes of every subcommand (documented in each --help text). */
#define CLI_EXIT_OK 0      /* done */
#define CLI_EXIT_RUNTIME 1 /* runtime error: no such queue, no permission, corrupted segment */
#define CLI_EXIT_USAGE 2   /* bad command line */

struct cli_command {
    const char *name;
    const char *summary;                /* one line for `shmq help` */
    int (*run)(int argc, char **argv);  /* argv[0] is the subcommand's name */
    void (*help)(FILE *out);            /* the full --help text */
};

/* dump.c */
int cmd_dump(int argc, char **argv);
void cmd_dump_help(FILE *out);

/* main.c: the program name used in messages ("shmq"). */
extern const char *cli_progname;

/* output.c */

/* Write len bytes of s as a JSON string literal with its quotes. Bytes outside printable ASCII
 * are written as \u00XX (read as Latin-1), so the result is valid JSON whatever s holds. */
void json_string(FILE *out, const char *s, size_t len);

/* Write len bytes of s between double quotes, with \", \\, \n, \r, \t and \xNN escapes. */
void text_quoted(FILE *out, const char *s, size_t len);

/* Write len bytes as lowercase hex pairs, no separators. */
void hex_bytes(FILE *out, const unsigned char *p, size_t len);

/* True if every byte is printable ASCII, tab, newline or carriage return. */
int bytes_printable(const unsigned char *p, size_t len);

#endif
