/*
 * create.c - `shmq create NAME [options]`: make a new queue with shmq_create().
 *
 * Every option maps to one field of shmq_config_t; what is not given keeps the default of
 * shmq_config_init(). Ranges are checked here against the limits of shmq.h (a usage error),
 * so that -EINVAL from the library means only what it cannot tell from the fields one by one
 * (the whole segment too large): a usage error too, with shmq_last_error_detail()'s text
 * ("the segment would be N bytes, above the limit M ...").
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *durability_name(int d)
{
    return d == SHMQ_DURABILITY_NONE ? "none" : d == SHMQ_DURABILITY_SYNC ? "sync" : "process";
}

void cmd_create_help(FILE *out)
{
    shmq_config_t d;
    shmq_config_init(&d);
    fprintf(out,
            "Usage: %s create NAME [options]\n"
            "\n"
            "Create the queue NAME (the segment /dev/shm/shmq.NAME). Fails if it exists.\n"
            "\n"
            "Options (default in brackets):\n"
            "  --capacity N              message slots, 1..%u [%u]\n"
            "  --max-msg-size N          bytes in one message, 1..%u [%u]\n"
            "  --max-procs N             attached processes and consumers, 2..%u [%u]\n"
            "  --heartbeat-timeout-ms N  a silent consumer is declared hung after this [%u]\n"
            "  --ack-deadline-ms N       a message in flight longer is redelivered [%u]\n"
            "  --max-attempts N          deliveries before the dead-letter ring, 1.. [%u]\n"
            "  --backoff-base-ms N       first nack delay [%u]\n"
            "  --backoff-cap-ms N        largest nack delay [%u]\n"
            "  --backoff-multiplier X    delay growth per attempt, >= 1.0 [%g]\n"
            "  --mode MODE               segment file mode, octal [0%o]\n"
            "  --durability D            none: shared memory only (survives process crashes);\n"
            "                            process: + a write-ahead log (survives the loss of the\n"
            "                            segment: unlink, corruption); sync: + the log on stable\n"
            "                            storage (survives power loss) [%s]\n"
            "  --log-dir DIR             where the log directory NAME/ goes (made absolute;\n"
            "                            the state directory gets a link NAME -> DIR/NAME, so\n"
            "                            the log is found by name after a segment loss) [the\n"
            "                            state directory: $SHMQ_STATE_DIR, /var/lib/shmq for\n"
            "                            root, else $XDG_STATE_HOME/shmq or ~/.local/state/shmq;\n"
            "                            no HOME: an error]. A --mode that shares the queue\n"
            "                            shares its log directory and files the same way\n"
            "  --wal-file-size N         bytes per log file, %u..4294967295, a multiple of 4096\n"
            "                            [%u]\n"
            "  --log-retention-bytes N   resolved history the log keeps, for replay [0]\n"
            "  --dedup-window N          keys remembered for shmq_publish_dedup (0: none) [%u]\n"
            "  --dedup-window-ms N       and for how long [%u]\n"
            "  --ttl-ms N                every message's time to live: one not delivered within\n"
            "                            it expires (0: never) [0]\n"
            "  --expire POLICY           what an expired message becomes: drop (freed, counted)\n"
            "                            or dead-letter (reason expired) [drop]\n"
            "  --max-groups N            consumer groups it can hold at once, 1..%u (the group\n"
            "                            \"default\" is made; add more with `shmq group`) [%u]\n"
            "  --max-header-bytes N      room for one message's headers (key + value + 5\n"
            "                            bytes each; 0: the queue carries none), 0..%u [0]\n"
            "  --max-headers N           headers per message, 1..%u [%u]\n"
            "  -h, --help                this text\n"
            "\n"
            "Exit status: 0 created; 1 runtime error (the queue exists, or its log does: open\n"
            "or recover it instead; no permission; the segment would be too large; /dev/shm or\n"
            "the log's file system is full: reason on stderr); 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  %s create orders\n"
            "  %s create jobs --capacity 65536 --max-msg-size 4096 --max-attempts 3\n"
            "  %s create shared --mode 0660 --durability none   # group-shared, no log\n"
            "  %s create quotes --ttl-ms 5000 --expire dead-letter # stale after 5 s\n",
            cli_progname, SHMQ_CAPACITY_MAX, d.capacity, SHMQ_MSG_SIZE_MAX, d.max_msg_size,
            (unsigned)SHMQ_PROCS_MAX, d.max_procs, d.heartbeat_timeout_ms, d.ack_deadline_ms,
            d.max_attempts, d.backoff_base_ms, d.backoff_cap_ms, d.backoff_multiplier,
            (unsigned)d.mode, durability_name(d.durability), (unsigned)SHMQ_WAL_FILE_MIN,
            d.wal_file_size, d.dedup_window_count, d.dedup_window_ms, (unsigned)SHMQ_GROUPS_MAX,
            d.max_groups, SHMQ_HEADER_BYTES_MAX, SHMQ_HEADERS_MAX, d.max_headers, cli_progname,
            cli_progname, cli_progname, cli_progname);
}

enum {
    OPT_CAPACITY = 256,
    OPT_MSG_SIZE,
    OPT_PROCS,
    OPT_HEARTBEAT,
    OPT_ACK_DEADLINE,
    OPT_ATTEMPTS,
    OPT_BASE,
    OPT_CAP,
    OPT_MULT,
    OPT_MODE,
    OPT_DURABILITY,
    OPT_LOG_DIR,
    OPT_WAL_SIZE,
    OPT_RETENTION,
    OPT_DEDUP,
    OPT_DEDUP_MS,
    OPT_TTL,
    OPT_EXPIRE,
    OPT_GROUPS,
    OPT_HDR_BYTES,
    OPT_HEADERS
};

static int parse_durability(const char *s, int *out)
{
    static const char *const names[] = {"none", "process", "sync"};
    static const int values[] = {SHMQ_DURABILITY_NONE, SHMQ_DURABILITY_PROCESS,
                                 SHMQ_DURABILITY_SYNC};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = values[i];
            return 0;
        }
    }
    fprintf(stderr, "%s create: --durability: '%s' is not none, process or sync\n", cli_progname,
            s);
    return CLI_EXIT_USAGE;
}

static int parse_mode(const char *s, mode_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (errno || end == s || *end || *s == '-' || v > 0777) {
        fprintf(stderr, "%s create: --mode: '%s' is not an octal file mode (0..0777)\n",
                cli_progname, s);
        return CLI_EXIT_USAGE;
    }
    *out = (mode_t)v;
    return 0;
}

static int parse_multiplier(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 1.0 || v > 1000.0) {
        fprintf(stderr, "%s create: --backoff-multiplier: '%s' is not a number in 1..1000\n",
                cli_progname, s);
        return CLI_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

/* Apply one option to cfg: 0 or CLI_EXIT_USAGE. */
static int apply(int c, const char *v, shmq_config_t *cfg)
{
    const char *cmd = "create";
    switch (c) {
    case OPT_CAPACITY: return cli_u32(cmd, "--capacity", v, 1, SHMQ_CAPACITY_MAX, &cfg->capacity);
    case OPT_MSG_SIZE:
        return cli_u32(cmd, "--max-msg-size", v, 1, SHMQ_MSG_SIZE_MAX, &cfg->max_msg_size);
    case OPT_PROCS: return cli_u32(cmd, "--max-procs", v, 2, SHMQ_PROCS_MAX, &cfg->max_procs);
    case OPT_HEARTBEAT:
        return cli_u32(cmd, "--heartbeat-timeout-ms", v, 1, UINT32_MAX, &cfg->heartbeat_timeout_ms);
    case OPT_ACK_DEADLINE:
        return cli_u32(cmd, "--ack-deadline-ms", v, 1, UINT32_MAX, &cfg->ack_deadline_ms);
    case OPT_ATTEMPTS: return cli_u32(cmd, "--max-attempts", v, 1, SHMQ_ATTEMPTS_MAX, &cfg->max_attempts);
    case OPT_BASE:
        return cli_u32(cmd, "--backoff-base-ms", v, 0, UINT32_MAX, &cfg->backoff_base_ms);
    case OPT_CAP: return cli_u32(cmd, "--backoff-cap-ms", v, 0, UINT32_MAX, &cfg->backoff_cap_ms);
    case OPT_MULT: return parse_multiplier(v, &cfg->backoff_multiplier);
    case OPT_MODE: return parse_mode(v, &cfg->mode);
    case OPT_DURABILITY: return parse_durability(v, &cfg->durability);
    case OPT_LOG_DIR: {
        static char abs_dir[SHMQ_LOG_DIR_MAX + 1];
        int rc = cli_log_dir(cmd, v, abs_dir, sizeof(abs_dir));
        if (rc == 0)
            cfg->log_dir = abs_dir;
        return rc;
    }
    case OPT_WAL_SIZE:
        return cli_u32(cmd, "--wal-file-size", v, SHMQ_WAL_FILE_MIN, UINT32_MAX,
                       &cfg->wal_file_size);
    case OPT_RETENTION:
        return cli_u64(cmd, "--log-retention-bytes", v, 0, UINT64_MAX, &cfg->log_retention_bytes);
    case OPT_DEDUP:
        return cli_u32(cmd, "--dedup-window", v, 0, SHMQ_DEDUP_WINDOW_MAX,
                       &cfg->dedup_window_count);
    case OPT_DEDUP_MS:
        return cli_u32(cmd, "--dedup-window-ms", v, 1, UINT32_MAX, &cfg->dedup_window_ms);
    case OPT_TTL: return cli_u32(cmd, "--ttl-ms", v, 0, UINT32_MAX, &cfg->default_ttl_ms);
    case OPT_EXPIRE: return cli_expire_policy(cmd, v, &cfg->expire_policy);
    case OPT_GROUPS:
        return cli_u32(cmd, "--max-groups", v, 1, SHMQ_GROUPS_MAX, &cfg->max_groups);
    case OPT_HDR_BYTES:
        return cli_u32(cmd, "--max-header-bytes", v, 0, SHMQ_HEADER_BYTES_MAX,
                       &cfg->max_header_bytes);
    case OPT_HEADERS:
        return cli_u32(cmd, "--max-headers", v, 1, SHMQ_HEADERS_MAX, &cfg->max_headers);
    }
    return CLI_EXIT_USAGE;
}

/* What a log directory error means here (the rules are in README "Where the log lives"). */
static const char *log_hint(const shmq_config_t *cfg, int err)
{
    if (cfg->durability == SHMQ_DURABILITY_NONE)
        return "";
    if (err == -EACCES && (cfg->mode & 066))
        return " (the log directory's parents must let the users the mode shares with through:"
               " give --log-dir a directory they can reach)";
    if (err == -EPERM)
        return " (the state or log directory belongs to another user or others can write it)";
    if (err == -ENOENT)
        return " (no state directory for the log: set HOME or SHMQ_STATE_DIR)";
    return "";
}

int cmd_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"capacity", required_argument, NULL, OPT_CAPACITY},
        {"max-msg-size", required_argument, NULL, OPT_MSG_SIZE},
        {"max-procs", required_argument, NULL, OPT_PROCS},
        {"heartbeat-timeout-ms", required_argument, NULL, OPT_HEARTBEAT},
        {"ack-deadline-ms", required_argument, NULL, OPT_ACK_DEADLINE},
        {"max-attempts", required_argument, NULL, OPT_ATTEMPTS},
        {"backoff-base-ms", required_argument, NULL, OPT_BASE},
        {"backoff-cap-ms", required_argument, NULL, OPT_CAP},
        {"backoff-multiplier", required_argument, NULL, OPT_MULT},
        {"mode", required_argument, NULL, OPT_MODE},
        {"durability", required_argument, NULL, OPT_DURABILITY},
        {"log-dir", required_argument, NULL, OPT_LOG_DIR},
        {"wal-file-size", required_argument, NULL, OPT_WAL_SIZE},
        {"log-retention-bytes", required_argument, NULL, OPT_RETENTION},
        {"dedup-window", required_argument, NULL, OPT_DEDUP},
        {"dedup-window-ms", required_argument, NULL, OPT_DEDUP_MS},
        {"ttl-ms", required_argument, NULL, OPT_TTL},
        {"expire", required_argument, NULL, OPT_EXPIRE},
        {"max-groups", required_argument, NULL, OPT_GROUPS},
        {"max-header-bytes", required_argument, NULL, OPT_HDR_BYTES},
        {"max-headers", required_argument, NULL, OPT_HEADERS},
        {"help", no_argument, NULL, 'h'},
        {0}};
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            cmd_create_help(stdout);
            return CLI_EXIT_OK;
        }
        if (c == '?' || c == ':')
            return cli_bad_option("create", c, argv);
        if ((rc = apply(c, optarg, &cfg)) != 0)
            return rc;
    }
    if (optind >= argc)
        return cli_usage_error("create", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("create", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("create", name)) != 0)
        return rc;
    if (cfg.backoff_cap_ms < cfg.backoff_base_ms)
        return cli_usage_error("create", "--backoff-cap-ms %u is below --backoff-base-ms %u",
                               cfg.backoff_cap_ms, cfg.backoff_base_ms);

    shmq_t *q = NULL;
    int err = shmq_create(name, &cfg, &q);
    /* the options together: e.g. too large, or groups with a log */
    if ((err == -EINVAL || err == -ENOTSUP) && *shmq_last_error_detail())
        return cli_usage_error("create", "%s", shmq_last_error_detail());
    if (err) {
        char why[512];
        fprintf(stderr, "%s create: %s: %s%s\n", cli_progname, name,
                cli_why(err, name, cfg.log_dir, why, sizeof why), log_hint(&cfg, err));
        return CLI_EXIT_RUNTIME;
    }
    err = shmq_close(q);
    if (err) {
        fprintf(stderr, "%s create: %s: created, but closing it failed: %s\n", cli_progname, name,
                shmq_strerror(err));
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}
