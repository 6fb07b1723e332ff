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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "shmq/shmq.h"

/* Exit codes of every subcommand (documented in each --help text). */
#define CLI_EXIT_OK 0      /* done */
#define CLI_EXIT_RUNTIME 1 /* runtime error: no such queue, no permission, corrupted segment */
#define CLI_EXIT_USAGE 2   /* bad command line */
#define CLI_EXIT_BUSY 3    /* delete: processes are attached (use --force) */
#define CLI_EXIT_TIMEOUT 4 /* sub: --count messages did not come within --timeout-ms */

struct cli_command {
    const char *name;
    const char *summary;               /* one line for `shmq help` */
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand's name */
    void (*help)(FILE *out);           /* the full --help text */
};

/* One pair per subcommand, each in its own file (dump.c, list.c, ...). */
#define CLI_DECLARE(cmd)                                                                           \
    int cmd_##cmd(int argc, char **argv);                                                          \
    void cmd_##cmd##_help(FILE *out)
CLI_DECLARE(dump);
CLI_DECLARE(list);
CLI_DECLARE(create);
CLI_DECLARE(delete);
CLI_DECLARE(stat);
CLI_DECLARE(top);
CLI_DECLARE(pub);
CLI_DECLARE(sub);
CLI_DECLARE(replay);
CLI_DECLARE(dlq);
CLI_DECLARE(group);
CLI_DECLARE(purge);
CLI_DECLARE(config);
CLI_DECLARE(peek);
CLI_DECLARE(wal);
CLI_DECLARE(recover);

/* main.c: the program name used in messages ("shmq"). */
extern const char *cli_progname;

/* args.c: command-line parsing shared by the subcommands. Each prints its own message
 * ("shmq CMD: ...") and returns 0 or CLI_EXIT_USAGE. */

/* Parse s as a decimal integer in lo..hi for option opt of command cmd. */
int cli_u32(const char *cmd, const char *opt, const char *s, uint32_t lo, uint32_t hi,
            uint32_t *out);
int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t lo, uint64_t hi,
            uint64_t *out);
/* An expire policy: "drop" or "dead-letter" (SHMQ_EXPIRE_*); and its name. */
int cli_expire_policy(const char *cmd, const char *s, uint32_t *out);
const char *cli_expire_name(uint32_t policy);
/* A timeout in ms: 0..INT32_MAX, or -1 for "forever". */
int cli_timeout(const char *cmd, const char *opt, const char *s, int *out);
/* A queue name valid for shmq_create()/shmq_open(). */
int cli_name(const char *cmd, const char *name);
/* --log-dir DIR as the absolute path the library takes (a relative one is made absolute
 * against the working directory, so it names the same directory for every process). */
int cli_log_dir(const char *cmd, const char *arg, char *buf, size_t size);
/* After getopt_long() returned '?' or ':' (optstring starting with ':'): print the message. */
int cli_bad_option(const char *cmd, int c, char **argv);
/* shmq_strerror(err) of a call on consumer group `group` (NULL: "default"): -ENOENT from such a
 * call means no group of that name (the queue itself was opened). */
const char *cli_group_strerror(const char *group, int err);
/* "missing queue NAME" / "unexpected argument". */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* stat.c: render a snapshot (and, with before != NULL, rates per second since before) through
 * an emitter; `stat` prints it once, `top` in place. */
struct emitter;
struct inspect_snapshot;
void stat_emit(struct emitter *e, const char *name, const struct inspect_snapshot *now,
               const struct inspect_snapshot *before);
/* The "watchdog" object (status, pid, expires_in_ms), as `stat` and `list --json` show it. */
void stat_emit_watchdog(struct emitter *e, const struct inspect_snapshot *s);
/* The consumer groups of s, one inline object each, as `stat` shows them (also in `dump`):
 * always in JSON, in text only when the queue has a group besides "default" (so the output
 * of a one-group queue reads as before groups). */
void stat_emit_groups(struct emitter *e, const struct inspect_snapshot *s);

/* why.c: shmq_strerror(err), and for a storage error (-ENOSPC, -EDQUOT, -EROFS, -EIO, -EFBIG,
 * -ENOMEM) the file system or limit behind it: free space of /dev/shm and of the log directory
 * of queue name (log_dir: as given to create, or NULL), the RLIMIT in force. Returns buf. */
const char *cli_why(int err, const char *name, const char *log_dir, char *buf, size_t size);

/* output.c */

/* Write len bytes of s as a JSON string literal with its quotes: valid UTF-8 as it is, control
 * characters escaped (\n, \u0001, ...), a byte that is not valid UTF-8 as \ufffd (a name or
 * path is then shown, not kept: payloads go through json_payload()). Always valid JSON. */
void json_string(FILE *out, const char *s, size_t len);

/* A payload as one JSON member: "KEY":"..." (json_string()) when it is valid UTF-8, else
 * "KEY_b64":"..." with the bytes in standard base64 (RFC 4648, padded), so that any payload
 * comes out unchanged; `sub --json`, `replay --json` and `dlq list --json` print "data" this
 * way (README, "The shmq command"). */
void json_payload(FILE *out, const char *key, const void *data, size_t len);

/* A message's headers as one JSON member, "headers":{"k":"v",...} (json_string() each; a key
 * that repeats keeps its last value), after a comma; nothing for n == 0. `sub`, `peek` and
 * `replay --json` print them so. */
void json_headers(FILE *out, const shmq_header_t *h, size_t n);

/* Write len bytes as standard base64 (RFC 4648 alphabet, '=' padding), no quotes. */
void base64_write(FILE *out, const void *data, size_t len);

/* Write len bytes of s between double quotes: printable ASCII and valid UTF-8 as they are,
 * \", \\, \n, \r, \t, \xNN for other bytes (\u0080.. for C1 controls). */
void text_quoted(FILE *out, const char *s, size_t len);

/* Write len bytes as lowercase hex pairs, no separators. */
void hex_bytes(FILE *out, const unsigned char *p, size_t len);

/* True if every character is printable: ASCII, tab, newline, carriage return, or valid UTF-8
 * other than a C1 control. */
int bytes_printable(const unsigned char *p, size_t len);

/* The length (1..4) of the valid UTF-8 character that starts p (left bytes available), or 0
 * if none does (RFC 3629: shortest form, no surrogates, at most U+10FFFF). */
size_t utf8_char_len(const unsigned char *p, size_t left);
/* len, less a UTF-8 character cut short at the end (the first bytes of a 2..4-byte sequence):
 * where a preview of the first N bytes of a payload should end. */
size_t utf8_cut_tail(const unsigned char *p, size_t len);
/* True if all len bytes are valid UTF-8 (an empty string is). */
bool utf8_valid(const void *p, size_t len);

#endif
