/*
 * config.c - `shmq config NAME [--max-attempts N ...] [--json]`: change the settings of a
 * running queue that do not change its layout (shmq_set_config()), then print the settings in
 * use. Options that name a setting fixed at create are usage errors naming it.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emit.h"

void cmd_config_help(FILE *out)
{
    fprintf(out,
            "Usage: %s config NAME [SETTING VALUE...] [--json]\n"
            "\n"
            "Change the settings of the queue NAME while it runs, for every process using it,\n"
            "then print the settings in use (with no SETTING: print them). With a log the\n"
            "change is logged, so a rebuild from the log keeps it.\n"
            "\n"
            "Settings that change:\n"
            "  --heartbeat-timeout-ms N  a silent consumer is judged hung after this (a lowered\n"
            "                            one counts after twice the old one)\n"
            "  --ack-deadline-ms N       deliveries made from now on (in flight ones keep theirs)\n"
            "  --max-attempts N          deliveries before the dead letters (next nack or\n"
            "                            take-back of each message)\n"
            "  --backoff-base-ms N, --backoff-cap-ms N, --backoff-multiplier X\n"
            "                            the nack delay policy (base <= cap; 1 <= X <= 1000)\n"
            "  --ttl-ms N                time to live of messages published from now on (0:\n"
            "                            none; a message keeps the expiry it was published with)\n"
            "  --expire POLICY           what expiries from now on do: drop or dead-letter\n"
            "  --log-retention-bytes N   acked history the log keeps for replay (lowered: the\n"
            "                            older history is deleted at the next maintenance pass)\n"
            "Settings fixed at create (an error here): --capacity, --max-msg-size,\n"
            "--max-procs, --mode, --durability, --log-dir, --wal-file-size, --dedup-window,\n"
            "--dedup-window-ms. To change them, create a new queue and move the messages\n"
            "(README \"Changing settings\").\n"
            "\n"
            "Options:\n"
            "  --json      print the settings as one JSON object\n"
            "  -h, --help  this text\n"
            "\n"
            "Exit status: 0 ok; 1 runtime error (no such queue, the log could not be written:\n"
            "the change is in effect but a rebuild may not keep it); 2 usage error (a fixed\n"
            "setting, a value out of range).\n"
            "\n"
            "Examples:\n"
            "  %s config orders\n"
            "  %s config orders --max-attempts 10 --ack-deadline-ms 60000\n"
            "  %s config orders --backoff-base-ms 200 --backoff-cap-ms 60000 --json\n",
            cli_progname, cli_progname, cli_progname, cli_progname);
}

enum {
    OPT_HEARTBEAT = 256,
    OPT_ACK_DEADLINE,
    OPT_ATTEMPTS,
    OPT_BASE,
    OPT_CAP,
    OPT_MULT,
    OPT_TTL,
    OPT_EXPIRE,
    OPT_RETENTION,
    OPT_JSON,
    OPT_FIXED /* every option of a fixed setting: its name is in the table */
};

static const struct option opts[] = {
    {"heartbeat-timeout-ms", required_argument, NULL, OPT_HEARTBEAT},
    {"ack-deadline-ms", required_argument, NULL, OPT_ACK_DEADLINE},
    {"max-attempts", required_argument, NULL, OPT_ATTEMPTS},
    {"backoff-base-ms", required_argument, NULL, OPT_BASE},
    {"backoff-cap-ms", required_argument, NULL, OPT_CAP},
    {"backoff-multiplier", required_argument, NULL, OPT_MULT},
    {"ttl-ms", required_argument, NULL, OPT_TTL},
    {"expire", required_argument, NULL, OPT_EXPIRE},
    {"expire-policy", required_argument, NULL, OPT_EXPIRE},
    {"log-retention-bytes", required_argument, NULL, OPT_RETENTION},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {"capacity", required_argument, NULL, OPT_FIXED},
    {"max-msg-size", required_argument, NULL, OPT_FIXED},
    {"max-procs", required_argument, NULL, OPT_FIXED},
    {"mode", required_argument, NULL, OPT_FIXED},
    {"durability", required_argument, NULL, OPT_FIXED},
    {"log-dir", required_argument, NULL, OPT_FIXED},
    {"wal-file-size", required_argument, NULL, OPT_FIXED},
    {"dedup-window", required_argument, NULL, OPT_FIXED},
    {"dedup-window-ms", required_argument, NULL, OPT_FIXED},
    {0}};

static int parse_multiplier(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 1.0 || v > 1000.0) {
        fprintf(stderr, "%s config: --backoff-multiplier: '%s' is not a number in 1..1000\n",
                cli_progname, s);
        return CLI_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

/* One option into cfg and fields: 0 or CLI_EXIT_USAGE. */
static int apply(int c, const char *v, shmq_config_t *cfg, uint32_t *fields)
{
    const char *cmd = "config";
    switch (c) {
    case OPT_HEARTBEAT:
        *fields |= SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS;
        return cli_u32(cmd, "--heartbeat-timeout-ms", v, 1, UINT32_MAX, &cfg->heartbeat_timeout_ms);
    case OPT_ACK_DEADLINE:
        *fields |= SHMQ_CONFIG_ACK_DEADLINE_MS;
        return cli_u32(cmd, "--ack-deadline-ms", v, 1, UINT32_MAX, &cfg->ack_deadline_ms);
    case OPT_ATTEMPTS:
        *fields |= SHMQ_CONFIG_MAX_ATTEMPTS;
        return cli_u32(cmd, "--max-attempts", v, 1, SHMQ_ATTEMPTS_MAX, &cfg->max_attempts);
    case OPT_BASE:
        *fields |= SHMQ_CONFIG_BACKOFF_BASE_MS;
        return cli_u32(cmd, "--backoff-base-ms", v, 0, UINT32_MAX, &cfg->backoff_base_ms);
    case OPT_CAP:
        *fields |= SHMQ_CONFIG_BACKOFF_CAP_MS;
        return cli_u32(cmd, "--backoff-cap-ms", v, 0, UINT32_MAX, &cfg->backoff_cap_ms);
    case OPT_MULT:
        *fields |= SHMQ_CONFIG_BACKOFF_MULTIPLIER;
        return parse_multiplier(v, &cfg->backoff_multiplier);
    case OPT_TTL:
        *fields |= SHMQ_CONFIG_DEFAULT_TTL_MS;
        return cli_u32(cmd, "--ttl-ms", v, 0, UINT32_MAX, &cfg->default_ttl_ms);
    case OPT_EXPIRE:
        *fields |= SHMQ_CONFIG_EXPIRE_POLICY;
        return cli_expire_policy(cmd, v, &cfg->expire_policy);
    case OPT_RETENTION:
        *fields |= SHMQ_CONFIG_LOG_RETENTION_BYTES;
        return cli_u64(cmd, "--log-retention-bytes", v, 0, UINT64_MAX, &cfg->log_retention_bytes);
    }
    return CLI_EXIT_USAGE;
}

static void emit_settings(const char *name, const shmq_config_t *cfg, bool json)
{
    struct emitter e;
    emit_init(&e, stdout, json);
    emit_bytes(&e, "queue", name, strlen(name));
    emit_u64(&e, "heartbeat_timeout_ms", cfg->heartbeat_timeout_ms);
    emit_u64(&e, "ack_deadline_ms", cfg->ack_deadline_ms);
    emit_u64(&e, "max_attempts", cfg->max_attempts);
    emit_u64(&e, "backoff_base_ms", cfg->backoff_base_ms);
    emit_u64(&e, "backoff_cap_ms", cfg->backoff_cap_ms);
    emit_double(&e, "backoff_multiplier", cfg->backoff_multiplier);
    emit_u64(&e, "default_ttl_ms", cfg->default_ttl_ms);
    emit_word(&e, "expire", cli_expire_name(cfg->expire_policy));
    emit_u64(&e, "log_retention_bytes", cfg->log_retention_bytes);
    emit_finish(&e);
}

int cmd_config(int argc, char **argv)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    uint32_t fields = 0;
    bool json = false;
    int c, idx, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, &idx)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case 'h': cmd_config_help(stdout); return CLI_EXIT_OK;
        case OPT_FIXED:
            fprintf(stderr,
                    "%s config: --%s cannot change: it is fixed when the queue is created (it "
                    "shapes the segment or its log); create a new queue and move the messages "
                    "(README \"Changing settings\")\n",
                    cli_progname, opts[idx].name);
            return CLI_EXIT_USAGE;
        default:
            if (c >= OPT_HEARTBEAT && c <= OPT_RETENTION) {
                if ((rc = apply(c, optarg, &cfg, &fields)) != 0)
                    return rc;
                break;
            }
            return cli_bad_option("config", c, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error("config", "missing queue NAME");
    if (optind + 1 < argc)
        return cli_usage_error("config", "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if ((rc = cli_name("config", name)) != 0)
        return rc;
    shmq_t *q;
    char why[512];
    int err = shmq_open(name, &q);
    if (err) {
        fprintf(stderr, "%s config: %s: %s\n", cli_progname, name,
                cli_why(err, name, NULL, why, sizeof why));
        return CLI_EXIT_RUNTIME;
    }
    shmq_config_t now;
    char detail[256] = ""; /* shmq_last_error_detail() right after the call */
    if (fields) { /* base <= cap, counting the one not given as it is in use */
        shmq_get_config(q, &now);
        uint32_t base =
            fields & SHMQ_CONFIG_BACKOFF_BASE_MS ? cfg.backoff_base_ms : now.backoff_base_ms;
        uint32_t cap =
            fields & SHMQ_CONFIG_BACKOFF_CAP_MS ? cfg.backoff_cap_ms : now.backoff_cap_ms;
        if (base > cap) {
            shmq_close(q);
            fprintf(stderr,
                    "%s config: %s: backoff base %u ms would be above the cap %u ms (give "
                    "--backoff-cap-ms too)\n",
                    cli_progname, name, base, cap);
            return CLI_EXIT_USAGE;
        }
        err = shmq_set_config(q, &cfg, fields);
        snprintf(detail, sizeof detail, "%s", err == -EINVAL ? shmq_last_error_detail() : "");
    }
    shmq_get_config(q, &now);
    shmq_close(q);
    if (err) {
        fprintf(stderr, "%s config: %s: %s%s%s\n", cli_progname, name,
                cli_why(err, name, NULL, why, sizeof why), *detail ? ": " : "", detail);
        if (err != -EINVAL && err != -EIDRM)
            fprintf(stderr,
                    "%s config: %s: the change is in effect, but a rebuild from the log "
                    "may not keep it: run it again once the log works\n",
                    cli_progname, name);
        return err == -EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
    }
    emit_settings(name, &now, json);
    return CLI_EXIT_OK;
}
