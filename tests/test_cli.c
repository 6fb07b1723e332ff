/*
 * test_cli.c - the subcommands of the `shmq` tool, run as a user runs them.
 *
 * The built tool (dirname(/proc/self/exe)/../shmq) runs as a separate process with stdin,
 * stdout and stderr redirected, or inside a real shell pipeline (sh -c), so the tests see what
 * a user or a script sees: the text, the JSON, the exit code, and any crash signal.
 *
 * What is proved:
 *   - help: `shmq help` lists every subcommand; each `--help` documents exit codes and gives
 *     examples; unknown options, missing or extra arguments exit 2;
 *   - every subcommand (and shmq-watchdog, shmq-bridge) refuses an unknown short option with
 *     exit 2 and a message naming it, inside a cluster too, never with help and exit 0;
 *   - JSON output (sub, dlq list, replay) passes a payload that is valid UTF-8 through
 *     unchanged and one that is not as data_b64 that decodes to the same bytes;
 *   - the READMEs' shmq-bridge shell examples pass every option they write to the bridge (a
 *     subject with a wildcard is quoted, not a redirection);
 *   - the man pages made by help2man name tool, section and version, and shmq(1) holds the
 *     --help of every command;
 *   - version: `shmq --version`, `shmq-watchdog --version` and `shmq-bridge --version` print
 *     "NAME VERSION" with the library's version (the headers' SHMQ_VERSION_STRING);
 *   - create applies every option (read back with shmq_get_config()), durability and log
 *     directory included; an existing queue is exit 1; a value out of range is exit 2;
 *     delete of a durable queue removes its log too;
 *   - stat --json is one JSON document whose every field matches the queue's state (config,
 *     counters, slots by state, depth, oldest message age, consumers, our registry entries with
 *     their pid and in-flight count, watchdog); --interval-ms adds rates;
 *   - list shows the queue (text and JSON) with its depth and consumers;
 *   - delete refuses (exit 3) while another process is attached, succeeds once it left, and
 *     --force deletes under it;
 *   - pub | sub round trip through real shell pipelines (seq | pub; sub | sort; sub | pub into
 *     a second queue), nothing lost, duplicated or altered; pub -v prints the ids; pub on a
 *     full queue fails after --timeout-ms (exit 1) saying how many went in; sub --count with
 *     too few messages exits 4 after --timeout-ms; sub --json lines are valid JSON objects;
 *   - dlq: sub --nack on a max_attempts=1 queue makes dead letters; list (text, JSON) shows
 *     them, redrive ID brings exactly that one back, purge drops the rest; an unknown ID is 1;
 *   - top --iterations N draws N frames with ANSI redraws and rates, and exits 0;
 *   - every subcommand on a missing queue, a corrupted header and a truncated segment exits 1
 *     with a message on stderr and no crash signal.
 */
#include "cli.h"

#include <inttypes.h>
#include <poll.h>
#include <sys/resource.h>

#include "layout.h"

TestSuite(cli, .fini = h_cleanup, .timeout = 120);

/* ------------------------------------------------------------------ a shell pipeline */

/*
 * Run a shell command line (sh -c) in the background of a bounded wait: its stdout is returned
 * (malloc'd), *status gets its wait status. The tool is reachable as $SHMQ.
 */
static char *run_shell(const char *script, int *status)
{
    FILE *out = tmpfile();
    cr_assert(out);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setenv("SHMQ", cli_tool_path("shmq"), 1);
        dup2(fileno(out), 1);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    h_track(pid, -1);
    int rc = h_waitpid(pid, 60000, 0, status);
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        h_untrack(pid);
    }
    cr_assert_eq(rc, 0, "shell pipeline did not finish within 60 s: %s", script);
    return cli_slurp(out, NULL);
}

/* ------------------------------------------------------------------ fixtures */

static shmq_t *create_queue(const char *name, uint32_t capacity, uint32_t max_attempts)
{
    shmq_config_t cfg = h_small_config(capacity, 256, 16);
    cfg.max_attempts = max_attempts;
    cfg.durability = SHMQ_DURABILITY_NONE; /* no log: a damaged segment stays damaged */
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q = NULL;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    return q;
}

static void publish_text(shmq_t *q, const char *text)
{
    h_assert_rc(shmq_publish(q, text, strlen(text), NULL), 0);
}

/* Receive one message (bounded) and copy its text into buf. */
static shmq_msg_t receive_text(shmq_consumer_t *c, char *buf, size_t size)
{
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 5000), 0);
    size_t n = m.len < size - 1 ? m.len : size - 1;
    memcpy(buf, m.data, n);
    buf[n] = 0;
    return m;
}

/* ------------------------------------------------------------------ help and usage */

static const char *const commands[] = {"list", "create", "delete", "stat",   "top",
                                       "pub",  "sub",    "replay", "peek",   "purge",
                                       "dlq",  "dump",   "wal",    "recover", "group"};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

Test(cli, help_lists_every_command_and_each_documents_exit_codes)
{
    struct run r = RUN("help");
    assert_exit(&r, 0, "shmq help");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char needle[32];
        snprintf(needle, sizeof needle, "  %s ", commands[i]);
        assert_contains(r.out, needle, "shmq help");
    }
    run_free(&r);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        r = RUN(commands[i], "--help");
        assert_exit(&r, 0, commands[i]);
        assert_contains(r.out, "Usage: shmq ", commands[i]);
        assert_contains(r.out, "Exit status", commands[i]);
        assert_contains(r.out, "Example", commands[i]);
        run_free(&r);
        RUN_EXPECT_EXIT(0, commands[i], "help", commands[i]);
        r = RUN(commands[i], "--no-such-option");
        assert_exit(&r, 2, commands[i]);
        assert_contains(r.err, "unknown option", commands[i]);
        run_free(&r);
    }
    static const char *const need_name[] = {"create", "delete", "stat", "pub",
                                            "sub",    "dlq",    "group"};
    for (size_t i = 0; i < sizeof need_name / sizeof need_name[0]; i++) {
        r = RUN(need_name[i]);
        assert_exit(&r, 2, need_name[i]);
        assert_contains(r.err, "missing queue NAME", need_name[i]);
        run_free(&r);
        RUN_EXPECT_EXIT(2, need_name[i], need_name[i], "bad/name");
    }
    RUN_EXPECT_EXIT(2, "unknown command", "nosuchcommand");
    RUN_EXPECT_EXIT(2, "sub --ack --nack", "sub", "q", "--ack", "--nack");
    RUN_EXPECT_EXIT(2, "dlq unknown action", "dlq", "q", "explode");
    RUN_EXPECT_EXIT(2, "group unknown action", "group", "q", "explode");
    RUN_EXPECT_EXIT(2, "group add without GROUP", "group", "q", "add");
    RUN_EXPECT_EXIT(2, "group --overrun 0", "group", "q", "add", "g", "--overrun", "0");
    RUN_EXPECT_EXIT(2, "create --max-groups 65", "create", "q", "--max-groups", "65");
    RUN_EXPECT_EXIT(2, "create --capacity 0", "create", "q", "--capacity", "0");
    RUN_EXPECT_EXIT(2, "create --mode 999", "create", "q", "--mode", "999");
    RUN_EXPECT_EXIT(2, "sub --count abc", "sub", "q", "--count", "abc");
}

/* `shmq ARGS...` is a usage error: exit 2, nothing on stdout (no help text), and a message on
 * stderr that contains needle (the option as the user wrote it). */
static void expect_usage_error(const char *needle, const char *const *args)
{
    struct run r = run_argv(NULL, args);
    char what[160];
    snprintf(what, sizeof what, "shmq %s %s %s", args[0], args[1] ? args[1] : "",
             args[1] && args[2] ? args[2] : "");
    assert_exit(&r, 2, what);
    cr_assert_str_eq(r.out, "", "%s printed on stdout (help?):\n%s", what, r.out);
    assert_contains(r.err, needle, what);
    run_free(&r);
}
#define EXPECT_USAGE_ERROR(needle, ...)                                                            \
    expect_usage_error((needle), (const char *const[]){__VA_ARGS__, NULL})

/* Options each in range but out of range together: a usage error that says why, with the
 * library's shmq_last_error_detail() (the segment's size and its limit). */
Test(cli, create_out_of_range_as_a_whole_says_why)
{
    EXPECT_USAGE_ERROR("the segment would be ", "create", "q", "--capacity", "4194304",
                       "--max-msg-size", "67108864", "--durability", "none");
    EXPECT_USAGE_ERROR("above the limit 68719476736", "create", "q", "--capacity", "4194304",
                       "--max-msg-size", "67108864", "--durability", "none");
    EXPECT_USAGE_ERROR("two log records of max_msg_size 1048576", "create", "q",
                       "--max-msg-size", "1048576", "--wal-file-size", "65536");
}

/* Every subcommand refuses an unknown short option with exit 2 and names it, also inside a
 * cluster and after other arguments (getopt leaves optind at the cluster there, so the word
 * before it is not the culprit); a missing value and a value given to a flag name the option. */
Test(cli, unknown_short_option_is_a_usage_error_in_every_command)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        EXPECT_USAGE_ERROR("unknown option '-x'", commands[i], "-x");
        EXPECT_USAGE_ERROR("unknown option '-x'", commands[i], "-x", "q");
        EXPECT_USAGE_ERROR("unknown option '-x'", commands[i], "q", "-x");
        EXPECT_USAGE_ERROR("unknown option '--no-such'", commands[i], "--no-such", "q");
    }
    EXPECT_USAGE_ERROR("unknown option '-x'", "create", "q", "-x");
    EXPECT_USAGE_ERROR("unknown option '-x'", "pub", "-xv", "q");
    EXPECT_USAGE_ERROR("unknown option '-x'", "pub", "-vx", "q");
    EXPECT_USAGE_ERROR("unknown option '-x'", "sub", "q", "-xc", "1");
    EXPECT_USAGE_ERROR("unknown option '-x'", "sub", "--json", "-xc", "1", "q");
    EXPECT_USAGE_ERROR("option '-c' needs a value", "sub", "q", "-c");
    EXPECT_USAGE_ERROR("option '--count' needs a value", "sub", "q", "--count");
    EXPECT_USAGE_ERROR("option '--capacity' needs a value", "create", "q", "--capacity");
    EXPECT_USAGE_ERROR("option '--json' takes no value", "stat", "q", "--json=1");
    /* the daemons say it the same way, without their whole help text */
    struct run r = cli_run("shmq-watchdog", 30, NULL, (const char *const[]){"-x", "q", NULL});
    assert_exit(&r, 2, "shmq-watchdog -x");
    assert_contains(r.err, "shmq-watchdog: unknown option '-x'", "shmq-watchdog -x");
    cr_assert(!strstr(r.err, "Usage:"), "shmq-watchdog -x printed its help:\n%s", r.err);
    run_free(&r);
    if (access(cli_tool_location("shmq-bridge"), X_OK) == 0) {
        r = cli_run("shmq-bridge", 30, NULL, (const char *const[]){"-x", NULL});
        assert_exit(&r, 2, "shmq-bridge -x");
        assert_contains(r.err, "shmq-bridge: unknown option '-x'", "shmq-bridge -x");
        run_free(&r);
    }
}

/* ------------------------------------------------------------------ README examples */

/* The text of file (relative to the source tree: this file's ../), malloc'd. */
static char *source_file(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    cr_assert(slash, "__FILE__ has no directory: %s", __FILE__);
    snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "../%s", rel);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s: %s", path, strerror(errno));
    return cli_slurp(f, NULL);
}

/* Options (" --" words) on the shmq-bridge command lines of a shell block: lines that start
 * with shmq-bridge and the continuation lines after them (a line ending in '\'). */
static int bridge_options_written(const char *block)
{
    int n = 0;
    bool in_cmd = false;
    for (const char *line = block; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (strncmp(line, "shmq-bridge ", 12) == 0)
            in_cmd = true;
        if (in_cmd)
            for (const char *p = line; p < line + len && (p = strstr(p, " --")) && p < line + len;
                 p += 3)
                n++;
        in_cmd = in_cmd && len > 0 && line[len - 1] == '\\';
        line += len + (end ? 1 : 0);
    }
    return n;
}

/* Every ```sh block of README.md and tools/bridge/README.md that runs shmq-bridge, run by bash
 * with shmq-bridge (and shmq, nats-server) replaced by functions that print their arguments:
 * each option written reaches the bridge, and nothing is redirected into a file (an unquoted
 * subject with '>' is a redirection that swallowed the next option, issue 20). */
Test(cli, readme_bridge_examples_pass_every_option_to_the_bridge)
{
    static const char *const docs[] = {"README.md", "tools/bridge/README.md"};
    int blocks = 0;
    for (size_t d = 0; d < sizeof docs / sizeof docs[0]; d++) {
        char *text = source_file(docs[d]);
        for (char *b = strstr(text, "```sh\n"); b; b = strstr(b, "```sh\n")) {
            b += 6;
            char *e = strstr(b, "```");
            cr_assert(e, "%s: an unterminated ```sh block", docs[d]);
            *e = 0;
            if (strstr(b, "shmq-bridge ")) {
                blocks++;
                char dir[] = "/tmp/shmq-readme-XXXXXX";
                cr_assert(mkdtemp(dir));
                size_t size = strlen(b) + 512;
                char *script = malloc(size);
                cr_assert(script);
                snprintf(script, size,
                         "cd %s || exit 1\n"
                         "shmq-bridge() { for a in \"$@\"; do printf '%%s\\n' \"$a\"; done; }\n"
                         "shmq() { :; }\nnats-server() { :; }\n%s\n"
                         "ls -A | sed 's/^/FILE: /'\n",
                         dir, b);
                char cmd[64];
                snprintf(cmd, sizeof cmd, "/bin/bash -c \"$README_SCRIPT\"");
                setenv("README_SCRIPT", script, 1);
                int status;
                char *out = run_shell(cmd, &status);
                unsetenv("README_SCRIPT");
                h_remove_tree(dir);
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s block:\n%s", docs[d],
                          b);
                cr_assert(!strstr(out, "FILE: "),
                          "%s: a shell example wrote a file (an unquoted '>'?):\n%s\n%s", docs[d],
                          b, out);
                int got = 0;
                for (const char *p = out; (p = strstr(p, "--")); p += 2)
                    got += p == out || p[-1] == '\n';
                cr_assert_eq(got, bridge_options_written(b),
                             "%s: the bridge got %d of the %d options written in:\n%s\nit got:\n%s",
                             docs[d], got, bridge_options_written(b), b, out);
                free(script);
                free(out);
            }
            b = e + 3;
        }
        free(text);
    }
    cr_assert_geq(blocks, 2, "no shmq-bridge example found in the READMEs");
}

/* ------------------------------------------------------------------ --version */

/* `TOOL --version` of the built tool at path: exit 0 and exactly "NAME VERSION\n", VERSION being
 * the library's, from which the headers' SHMQ_VERSION_STRING comes too. */
static void assert_tool_version(const char *tool, const char *first_arg)
{
    struct run r = cli_run(tool, 30, NULL, (const char *const[]){first_arg, NULL});
    char what[64], want[96];
    snprintf(what, sizeof what, "%s %s", tool, first_arg);
    assert_exit(&r, 0, what);
    snprintf(want, sizeof want, "%s %s\n", tool, shmq_version());
    cr_assert_str_eq(r.out, want, "%s printed '%s'", what, r.out);
    cr_assert_str_eq(shmq_version(), SHMQ_VERSION_STRING);
    cr_assert_str_eq(r.err, "", "%s wrote to stderr: %s", what, r.err);
    run_free(&r);
}

Test(cli, every_tool_prints_name_and_version)
{
    assert_tool_version("shmq", "--version");
    assert_tool_version("shmq-watchdog", "--version");
    /* the bridge is built only where libnats is (tools/install-deps installs it) */
    if (access(cli_tool_location("shmq-bridge"), X_OK) == 0)
        assert_tool_version("shmq-bridge", "--version");
    else
        cr_log_warn("shmq-bridge not built (no libnats): its --version is not checked");
    /* --help names the option */
    struct run r = RUN("--help");
    assert_exit(&r, 0, "shmq --help");
    assert_contains(r.out, "--version", "shmq --help");
    run_free(&r);
    RUN_EXPECT_EXIT(2, "shmq --version with an argument", "--version", "extra");
}

/* The man pages built from the tools' help (cmake/ShmqMan.cmake, where help2man is installed):
 * each names its tool, section and version in .TH, and shmq(1) holds every command's own help
 * (a command added to the tool reaches the page with no one editing it). */
Test(cli, man_pages_are_the_tools_help)
{
    static const struct {
        const char *page, *th;
    } pages[] = {
        {"man/man1/shmq.1", ".TH SHMQ \"1\""},
        {"man/man8/shmq-watchdog.8", ".TH SHMQ-WATCHDOG \"8\""},
        {"man/man1/shmq-bridge.1", ".TH SHMQ-BRIDGE \"1\""},
    };
    if (access(cli_tool_location("man/man1/shmq.1"), R_OK) != 0)
        cr_skip_test("man pages not built (no help2man): not checked");
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        if (i == 2 && access(cli_tool_location("shmq-bridge"), X_OK) != 0)
            continue; /* no bridge, no page */
        FILE *f = fopen(cli_tool_location(pages[i].page), "r");
        cr_assert(f, "%s: %s", pages[i].page, strerror(errno));
        char *text = cli_slurp(f, NULL);
        assert_contains(text, pages[i].th, pages[i].page);
        assert_contains(text, shmq_version(), pages[i].page);
        if (i == 0) {
            for (size_t k = 0; k < N_COMMANDS; k++) {
                char want[64];
                snprintf(want, sizeof want, ".SS \"shmq %s\"\n.nf\n.in 0\nUsage: shmq %s",
                         commands[k], commands[k]);
                assert_contains(text, want, "shmq(1) holds each command's --help");
            }
            assert_contains(text, "  --capacity N ", "shmq(1) has create's options");
        }
        free(text);
    }
}

/* ------------------------------------------------------------------ create, stat, list */

Test(cli, create_applies_every_option)
{
    const char *name = h_qname("create");
    struct run r = RUN("create", name, "--capacity", "32", "--max-msg-size", "300", "--max-procs",
                       "10", "--heartbeat-timeout-ms", "1234", "--ack-deadline-ms", "4321",
                       "--max-attempts", "7", "--backoff-base-ms", "11", "--backoff-cap-ms", "99",
                       "--backoff-multiplier", "1.5", "--mode", "0640", "--durability", "none");
    assert_exit(&r, 0, "create");
    run_free(&r);
    shmq_t *q = NULL;
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_config_t cfg;
    h_assert_rc(shmq_get_config(q, &cfg), 0);
    cr_assert_eq(cfg.capacity, 32);
    cr_assert_eq(cfg.max_msg_size, 300);
    cr_assert_eq(cfg.max_procs, 10);
    cr_assert_eq(cfg.heartbeat_timeout_ms, 1234);
    cr_assert_eq(cfg.ack_deadline_ms, 4321);
    cr_assert_eq(cfg.max_attempts, 7);
    cr_assert_eq(cfg.backoff_base_ms, 11);
    cr_assert_eq(cfg.backoff_cap_ms, 99);
    cr_assert_float_eq(cfg.backoff_multiplier, 1.5, 1e-9);
    cr_assert_eq(cfg.durability, SHMQ_DURABILITY_NONE);
    h_assert_rc(shmq_close(q), 0);
    char path[128];
    h_shm_path(name, path, sizeof path);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0640, "mode %o", st.st_mode & 0777);

    r = RUN("create", name);
    assert_exit(&r, 1, "create an existing queue");
    assert_contains(r.err, "already exists", "create an existing queue");
    run_free(&r);

    /* a durable queue with its log where we say; stat and list show both */
    const char *durable = h_qname("createwal");
    char logdir[] = "/tmp/shmq-test-cli-XXXXXX";
    cr_assert(mkdtemp(logdir));
    r = RUN("create", durable, "--capacity", "8", "--durability", "sync", "--log-dir", logdir,
            "--wal-file-size", "65536");
    assert_exit(&r, 0, "create --durability sync");
    run_free(&r);
    r = RUN("stat", durable, "--json");
    assert_exit(&r, 0, "stat of a durable queue");
    struct jval *d = json_parse(r.out);
    cr_assert_str_eq(jstr(d, "durability"), "sync");
    char want_dir[128];
    snprintf(want_dir, sizeof want_dir, "%s/%s", logdir, durable);
    cr_assert_str_eq(jstr(d, "log_dir"), want_dir);
    json_free(d);
    run_free(&r);
    RUN_EXPECT_EXIT(0, "delete a durable queue", "delete", durable);
    cr_assert(access(want_dir, F_OK) != 0, "delete removes the log too");
    rmdir(logdir);
    RUN_EXPECT_EXIT(2, "create --durability maybe", "create", "x", "--durability", "maybe");
}

Test(cli, stat_json_matches_the_queue_field_by_field)
{
    const char *name = h_qname("stat");
    shmq_t *q = create_queue(name, 16, 5);
    for (int i = 0; i < 4; i++)
        publish_text(q, "payload");
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "statcons", &c), 0);
    char buf[64];
    shmq_msg_t m1 = receive_text(c, buf, sizeof buf);
    shmq_msg_t m2 = receive_text(c, buf, sizeof buf);
    h_assert_rc(shmq_ack(c, &m1), 0); /* m2 stays in flight */
    (void)m2;
    h_sleep_ms(20); /* the oldest message gets an age > 0 */

    struct run r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    struct jval *d = json_parse(r.out);
    cr_assert_str_eq(jstr(d, "queue"), name);
    cr_assert_str_eq(jstr(d, "durability"), "none");
    cr_assert(jget(d, "log_dir") && jget(d, "log_dir")->type == J_NULL);
    jassert_num(d, "config.capacity", 16);
    jassert_num(d, "config.max_msg_size", 256);
    jassert_num(d, "config.max_procs", 16);
    jassert_num(d, "config.max_attempts", 5);
    shmq_config_t cfg;
    h_assert_rc(shmq_get_config(q, &cfg), 0);
    jassert_num(d, "config.heartbeat_timeout_ms", cfg.heartbeat_timeout_ms);
    jassert_num(d, "config.ack_deadline_ms", cfg.ack_deadline_ms);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    jassert_num(d, "counters.published", 4);
    jassert_num(d, "counters.delivered", 2);
    jassert_num(d, "counters.acked", 1);
    jassert_num(d, "counters.nacked", 0);
    jassert_num(d, "counters.redelivered", 0);
    jassert_num(d, "counters.dead_lettered", 0);
    jassert_num(d, "counters.reclaimed", 0);
    cr_assert(jget(d, "rates") && jget(d, "rates")->type == J_NULL, "rates without -i: null");
    jassert_num(d, "messages.ready", 2);
    jassert_num(d, "messages.inflight", 1);
    jassert_num(d, "messages.delayed", 0);
    jassert_num(d, "messages.reserved", 0);
    jassert_num(d, "messages.dead", 0);
    jassert_num(d, "messages.fenced", 0);
    jassert_num(d, "messages.free", 13);
    jassert_num(d, "messages.invalid", 0);
    jassert_num(d, "depth", 2);
    double age = jnum(d, "oldest_message_age_ms");
    cr_assert(age >= 20 && age < 60000, "oldest_message_age_ms %g", age);
    jassert_num(d, "consumers", st.consumers);
    jassert_num(d, "procs", st.procs);
    cr_assert_eq(st.consumers, 1);
    cr_assert_str_eq(jstr(d, "watchdog.status"), "none");
    struct jval *procs = jget(d, "processes");
    cr_assert(procs && procs->type == J_ARR && procs->n == 2, "two registry entries of ours");
    bool seen_consumer = false;
    for (size_t i = 0; i < procs->n; i++) {
        struct jval *p = procs->items[i];
        cr_assert_eq(jnum(p, "pid"), (double)getpid());
        cr_assert_str_eq(jstr(p, "state"), "ACTIVE");
        cr_assert(jget(p, "alive")->type == J_BOOL && jget(p, "alive")->b);
        cr_assert(jnum(p, "heartbeat_age_ms") >= 0);
        if (strcmp(jstr(p, "role"), "consumer") == 0) {
            seen_consumer = true;
            cr_assert_str_eq(jstr(p, "name"), "statcons");
            jassert_num(p, "inflight", 1);
        } else {
            jassert_num(p, "inflight", 0);
        }
    }
    cr_assert(seen_consumer, "the consumer's entry is listed");
    json_free(d);
    run_free(&r);

    /* text: the same facts; with -i, rates */
    r = RUN("stat", name, "-i", "50");
    assert_exit(&r, 0, "stat -i");
    assert_contains(r.out, "depth: 2", "stat text");
    assert_contains(r.out, "published_per_s=", "stat -i");
    assert_contains(r.out, "name=\"statcons\"", "stat text");
    run_free(&r);

    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(cli, list_shows_the_queue_in_text_and_json)
{
    const char *name = h_qname("list");
    shmq_t *q = create_queue(name, 8, 5);
    publish_text(q, "a");
    publish_text(q, "b");
    publish_text(q, "c");
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "l", &c), 0);

    struct run r = RUN("list", "--json");
    /* other tests' queues may be corrupt on purpose: exit 0 or 1, but ours must be listed */
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) <= 1, "list --json: %s", r.err);
    struct jval *d = json_parse(r.out);
    struct jval *qs = jget(d, "queues");
    cr_assert(qs && qs->type == J_ARR);
    struct jval *mine = NULL;
    for (size_t i = 0; i < qs->n; i++)
        if (strcmp(jstr(qs->items[i], "name"), name) == 0)
            mine = qs->items[i];
    cr_assert(mine, "%s not in list --json", name);
    jassert_num(mine, "capacity", 8);
    jassert_num(mine, "ready", 3);
    jassert_num(mine, "inflight", 0);
    jassert_num(mine, "dead", 0);
    jassert_num(mine, "consumers", 1);
    cr_assert_str_eq(jstr(mine, "durability"), "none");
    /* the watchdog as `stat --json` shows it: one shape in both */
    cr_assert_str_eq(jstr(mine, "watchdog.status"), "none");
    cr_assert(jget(mine, "watchdog.pid") && jget(mine, "watchdog.pid")->type == J_NULL);
    cr_assert(jget(mine, "watchdog.expires_in_ms") &&
              jget(mine, "watchdog.expires_in_ms")->type == J_NULL);
    json_free(d);
    run_free(&r);

    r = RUN("list");
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) <= 1);
    assert_contains(r.out, "NAME", "list header");
    char line[256];
    const char *p = strstr(r.out, name);
    cr_assert(p, "%s not in list", name);
    sscanf(p, "%255[^\n]", line);
    char lname[80];
    unsigned cap, ready, delayed, inflight, dead, consumers;
    cr_assert_eq(sscanf(line, "%79s %u %u %u %u %u %u", lname, &cap, &ready, &delayed, &inflight,
                        &dead, &consumers),
                 7, "list line: %s", line);
    cr_assert_eq(cap, 8);
    cr_assert_eq(ready, 3);
    cr_assert_eq(consumers, 1);
    run_free(&r);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* ------------------------------------------------------------------ delete */

static int attach_and_wait(void *arg)
{
    const char *name = arg;
    shmq_t *q;
    if (shmq_open(name, &q) != 0)
        return 1;
    pause(); /* killed by the test */
    return 0;
}

static void wait_for_procs(const char *name, uint32_t want)
{
    shmq_t *q;
    h_assert_rc(shmq_open(name, &q), 0);
    int64_t end = h_now_ms() + 30000;
    shmq_stats_t st;
    do {
        h_assert_rc(shmq_stats(q, &st), 0);
        if (st.procs >= want + 1) /* ours too */
            break;
        h_sleep_ms(5);
    } while (h_now_ms() < end);
    cr_assert_geq(st.procs, want + 1, "the child did not attach");
    h_assert_rc(shmq_close(q), 0);
}

Test(cli, delete_refuses_while_attached_and_force_overrides)
{
    const char *name = h_qname("delete");
    shmq_t *q = create_queue(name, 8, 5);
    h_assert_rc(shmq_close(q), 0);
    pid_t child = h_fork(attach_and_wait, (void *)name);
    wait_for_procs(name, 1);

    struct run r = RUN("delete", name);
    assert_exit(&r, 3, "delete while attached");
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "pid %d", (int)child);
    assert_contains(r.err, pidtext, "delete names the attached process");
    assert_contains(r.err, "refused", "delete while attached");
    run_free(&r);
    char path[128];
    h_shm_path(name, path, sizeof path);
    cr_assert_eq(access(path, F_OK), 0, "the segment is still there");

    kill(child, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(child, 30000, 0, &st), 0);
    r = RUN("delete", name); /* the dead child's entry does not count */
    assert_exit(&r, 0, "delete after the process died");
    run_free(&r);
    cr_assert(access(path, F_OK) != 0, "the segment is gone");

    r = RUN("delete", name);
    assert_exit(&r, 1, "delete a missing queue");
    assert_contains(r.err, "no such queue", "delete a missing queue");
    run_free(&r);

    q = create_queue(name, 8, 5);
    h_assert_rc(shmq_close(q), 0);
    child = h_fork(attach_and_wait, (void *)name);
    wait_for_procs(name, 1);
    RUN_EXPECT_EXIT(0, "delete --force while attached", "delete", "--force", name);
    cr_assert(access(path, F_OK) != 0, "the segment is gone");
    kill(child, SIGKILL);
    h_waitpid(child, 30000, 0, &st);
}

/* ------------------------------------------------------------------ pub and sub */

Test(cli, pub_sub_round_trip_through_shell_pipelines)
{
    const char *a = h_qname("pipeA");
    const char *b = h_qname("pipeB");
    shmq_t *qa = create_queue(a, 64, 5);
    shmq_t *qb = create_queue(b, 256, 5);
    h_assert_rc(shmq_close(qa), 0);

    /* 200 lines through a 64-slot queue: pub waits for sub to make room, both in one pipeline
     * of two concurrent shells */
    char script[1024];
    snprintf(script, sizeof script,
             "seq 1 200 | \"$SHMQ\" pub %s --timeout-ms 10000 & "
             "\"$SHMQ\" sub %s --count 200 --timeout-ms 20000 | \"$SHMQ\" pub %s "
             "--timeout-ms 10000; rc=$?; wait $! || exit 10; exit $rc",
             a, a, b);
    int status;
    char *out = run_shell(script, &status);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "pipeline: status 0x%x", status);
    free(out);

    /* every line arrived in queue B once, unchanged, in order (one producer, one consumer) */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(qb, "check", &c), 0);
    for (int i = 1; i <= 200; i++) {
        char buf[32], want[32];
        shmq_msg_t m = receive_text(c, buf, sizeof buf);
        snprintf(want, sizeof want, "%d", i);
        cr_assert_str_eq(buf, want, "message %d", i);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    h_assert_rc(shmq_consumer_close(c), 0);

    /* args, -v ids, and sub into sort */
    snprintf(script, sizeof script,
             "\"$SHMQ\" pub -v %s 'hello world' '' 'x y' --timeout-ms 1000 > /dev/null && "
             "\"$SHMQ\" sub %s --count 3 --timeout-ms 5000 | sort",
             b, b);
    out = run_shell(script, &status);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_str_eq(out, "\nhello world\nx y\n");
    free(out);

    struct run r = RUN("pub", "-v", b, "one", "two");
    assert_exit(&r, 0, "pub -v");
    uint64_t id1, id2;
    cr_assert_eq(sscanf(r.out, "%" SCNu64 "\n%" SCNu64, &id1, &id2), 2, "ids: %s", r.out);
    cr_assert_eq(id2, id1 + 1);
    run_free(&r);
    r = RUN("sub", b, "--count", "2", "--json", "--timeout-ms", "5000");
    assert_exit(&r, 0, "sub --json");
    char *save, *line = strtok_r(r.out, "\n", &save);
    for (int i = 0; i < 2; i++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert(line, "two JSON lines");
        struct jval *d = json_parse(line);
        jassert_num(d, "id", (double)(i ? id2 : id1));
        jassert_num(d, "attempt", 1);
        cr_assert_str_eq(jstr(d, "data"), i ? "two" : "one");
        jassert_num(d, "len", 3);
        json_free(d);
    }
    run_free(&r);
    h_assert_rc(shmq_close(qb), 0);
}

/* ------------------------------------------------------------------ payloads in JSON */

/* True if s[0..n) is valid UTF-8 (RFC 3629), written here apart from the tool's own check. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need, cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        for (unsigned k = 1; k <= need; k++) {
            if (i + k >= n || (s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

/* Decode standard padded base64 into out (at most max bytes); the length. Fails the test on
 * anything that is not strict base64. */
static size_t b64_decode(const char *in, unsigned char *out, size_t max)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), k = 0;
    cr_assert(n % 4 == 0, "base64 '%s': length %zu is not a multiple of 4", in, n);
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char ch = in[i + j];
            const char *pos = ch ? strchr(alphabet, ch) : NULL;
            if (ch == '=' && i + 4 == n && j >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            cr_assert(pos && !pad, "base64 '%s': bad character at %zu", in, i + j);
            v = v << 6 | (uint32_t)(pos - alphabet);
        }
        for (int j = 0; j < 3 - pad; j++) {
            cr_assert(k < max, "base64 '%s' decodes to more than %zu bytes", in, max);
            out[k++] = (unsigned char)(v >> (16 - 8 * j));
        }
    }
    return k;
}

/* obj carries payload want (len bytes) as the tools promise: "data", the string itself, when it
 * is valid UTF-8; else only "data_b64", which decodes to exactly those bytes. */
static void assert_payload(struct jval *obj, const void *want, size_t len, const char *what)
{
    if (utf8_ok(want, len)) {
        cr_assert_null(jget(obj, "data_b64"), "%s: valid UTF-8 sent as data_b64", what);
        const char *got = jstr(obj, "data");
        cr_assert(strlen(got) == len && memcmp(got, want, len) == 0,
                  "%s: data '%s' is not the payload", what, got);
        return;
    }
    cr_assert_null(jget(obj, "data"), "%s: a payload that is not UTF-8 came as data", what);
    unsigned char got[64];
    size_t n = b64_decode(jstr(obj, "data_b64"), got, sizeof got);
    cr_assert(n == len && memcmp(got, want, len) == 0, "%s: data_b64 '%s' is not the payload",
              what, jstr(obj, "data_b64"));
}

/* sub --json, dlq list --json and replay --json print a payload that is valid UTF-8 unchanged
 * ("é", "€", an emoji: the same bytes in the output, not \u00XX per byte) and one that is not
 * (0xff 0x00; a cut-off sequence) as data_b64 that decodes to the same bytes; every output is
 * valid UTF-8. */
Test(cli, json_passes_utf8_unchanged_and_base64s_the_rest)
{
    static const struct {
        const char *bytes;
        size_t len;
    } payloads[] = {
#define P(lit) {lit, sizeof lit - 1}
        P("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6"), /* café € and U+1F4E6 */
        P("tab\there\x01\n"),                       /* valid, with controls to escape */
        P("\xff\x00"),                                /* not UTF-8, and a NUL */
        P("ok\xc3"),                                   /* a sequence cut short */
        P("\xed\xa0\x80"),                            /* an encoded surrogate */
#undef P
    };
    enum { N = sizeof payloads / sizeof payloads[0] };
    const char *name = h_qname("utf8");
    shmq_config_t cfg = h_small_config(16, 256, 16);
    cfg.max_attempts = 1; /* sub --nack makes each a dead letter */
    cfg.durability = SHMQ_DURABILITY_PROCESS; /* replay reads the log */
    shmq_t *q = NULL;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    for (size_t i = 0; i < N; i++)
        h_assert_rc(shmq_publish(q, payloads[i].bytes, payloads[i].len, NULL), 0);

    struct run r = RUN("sub", name, "--count", "5", "--nack", "--json", "--timeout-ms", "10000");
    assert_exit(&r, 0, "sub --json");
    cr_assert(utf8_ok((const unsigned char *)r.out, r.out_len), "sub --json is not UTF-8");
    assert_contains(r.out, "\"data\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6\"",
                    "sub --json passes UTF-8 through as it is");
    char *save, *line = strtok_r(r.out, "\n", &save);
    for (size_t i = 0; i < N; i++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert(line, "sub --json: line %zu missing", i + 1);
        struct jval *d = json_parse(line);
        jassert_num(d, "len", (double)payloads[i].len);
        assert_payload(d, payloads[i].bytes, payloads[i].len, "sub --json");
        json_free(d);
    }
    run_free(&r);

    r = RUN("dlq", name, "list", "--json");
    assert_exit(&r, 0, "dlq list --json");
    cr_assert(utf8_ok((const unsigned char *)r.out, r.out_len), "dlq list --json is not UTF-8");
    struct jval *doc = json_parse(r.out);
    for (size_t i = 0; i < N; i++) {
        char path[32];
        snprintf(path, sizeof path, "dead_letters.%zu", i);
        struct jval *d = jget(doc, path);
        cr_assert(d, "dlq list --json: %s missing", path);
        assert_payload(d, payloads[i].bytes, payloads[i].len, "dlq list --json");
    }
    json_free(doc);
    run_free(&r);

    r = RUN("replay", name, "--count", "5", "--json");
    assert_exit(&r, 0, "replay --json");
    cr_assert(utf8_ok((const unsigned char *)r.out, r.out_len), "replay --json is not UTF-8");
    line = strtok_r(r.out, "\n", &save);
    for (size_t i = 0; i < N; i++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert(line, "replay --json: line %zu missing", i + 1);
        struct jval *d = json_parse(line);
        assert_payload(d, payloads[i].bytes, payloads[i].len, "replay --json");
        json_free(d);
    }
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

Test(cli, pub_on_full_queue_and_sub_short_of_count_fail_with_documented_codes)
{
    const char *name = h_qname("full");
    shmq_t *q = create_queue(name, 2, 5);
    struct run r = RUN("pub", name, "a", "b", "c", "--timeout-ms", "50");
    assert_exit(&r, 1, "pub on a full queue");
    assert_contains(r.err, "queue full", "pub on a full queue");
    assert_contains(r.err, "2 published before it", "pub on a full queue");
    run_free(&r);

    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    RUN_EXPECT_EXIT(0, "drain", "sub", name, "--count", "2", "--timeout-ms", "2000");
    r = RUN("pub", name, big);
    assert_exit(&r, 1, "pub of a message larger than max_msg_size");
    assert_contains(r.err, "max_msg_size", "pub too large");
    run_free(&r);

    /* stdin: lines; an empty queue then gives sub exit 4 after its timeout */
    r = RUN_IN("l1\n", "pub", name, "--timeout-ms", "100");
    assert_exit(&r, 0, "pub from stdin");
    run_free(&r);
    int64_t t0 = h_now_ms();
    r = RUN("sub", name, "--count", "3", "--timeout-ms", "300");
    assert_exit(&r, 4, "sub short of --count");
    cr_assert_str_eq(r.out, "l1\n");
    assert_contains(r.err, "timed out after 1 of 3", "sub short of --count");
    cr_assert(h_now_ms() - t0 >= 300, "sub waited its timeout");
    run_free(&r);
    r = RUN("sub", name, "--timeout-ms", "100"); /* no --count: the timeout is the normal end */
    assert_exit(&r, 0, "sub without --count");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

/* ------------------------------------------------------------------ pub and sub in batches */

/* Start `shmq ARGS...` with stdin from in_fd and stdout to out_fd (-1: the test's own); pid,
 * tracked. The other pipe ends are O_CLOEXEC, so the tool holds only its own. */
static pid_t spawn_piped(const char *const *args, int in_fd, int out_fd)
{
    const char *tool = cli_tool_path("shmq");
    const char *argv[16] = {tool};
    for (int k = 0; args[k]; k++) {
        cr_assert(k < 14);
        argv[k + 1] = args[k];
    }
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (in_fd >= 0)
            dup2(in_fd, STDIN_FILENO);
        if (out_fd >= 0)
            dup2(out_fd, STDOUT_FILENO);
        execv(tool, (char *const *)argv);
        _exit(127);
    }
    h_track(pid, -1);
    return pid;
}

static void write_text(int fd, const char *text)
{
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len, "write: %s", strerror(errno));
}

/* Read from fd into buf (size) until it holds `lines` newlines; fails after timeout_ms. The
 * number of bytes read. */
static size_t read_lines(int fd, char *buf, size_t size, int lines, int timeout_ms)
{
    size_t have = 0;
    int seen = 0;
    int64_t end = h_now_ms() + timeout_ms;
    while (seen < lines) {
        int left = (int)(end - h_now_ms());
        cr_assert(left > 0, "%d of %d lines within %d ms; got:\n%.*s", seen, lines, timeout_ms,
                  (int)have, buf);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        cr_assert(have < size - 1, "more output than expected");
        ssize_t r = read(fd, buf + have, size - 1 - have);
        cr_assert(r > 0, "read: %zd (%s) after %d lines", r, r ? strerror(errno) : "EOF", seen);
        for (ssize_t i = 0; i < r; i++)
            seen += buf[have + (size_t)i] == '\n';
        have += (size_t)r;
    }
    buf[have] = 0;
    return have;
}

/* pub is a pipeline stage: a line is published as soon as it was read, never held back to
 * fill a batch; a partial line waits for its newline; every line goes in once, in order, also
 * through a queue smaller than the input (pub waits for room) and across batches. A bad line in
 * the middle of a batch stops pub there with the lines before it published. */
Test(cli, pub_publishes_a_line_at_once_and_every_line_once)
{
    const char *name = h_qname("publine");
    shmq_t *q = create_queue(name, 64, 5);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "check", &c), 0);
    int in[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    pid_t pub = spawn_piped((const char *const[]){"pub", name, NULL}, in[0], -1);
    close(in[0]);

    /* one line while stdin stays open: published at once (20 s bound for a busy machine) */
    write_text(in[1], "first\n");
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 20000), 0);
    cr_assert(m.len == 5 && memcmp(m.data, "first", 5) == 0, "first line: %.*s", (int)m.len,
              (const char *)m.data);
    h_assert_rc(shmq_ack(c, &m), 0);
    cr_assert_eq(waitpid(pub, NULL, WNOHANG), 0, "pub still runs, reading stdin");
    /* half a line is not a message yet */
    write_text(in[1], "sec");
    h_assert_rc(shmq_receive(c, &m, 100), -ETIMEDOUT);
    write_text(in[1], "ond\n");
    h_assert_rc(shmq_receive(c, &m, 20000), 0);
    cr_assert(m.len == 6 && memcmp(m.data, "second", 6) == 0);
    h_assert_rc(shmq_ack(c, &m), 0);

    /* 500 more lines, many per write (more than a batch, and than the queue: pub waits for
     * room while this test drains it), the last without its newline: each arrives once, in
     * order */
    enum { N = 500 };
    char chunk[1024];
    size_t len = 0;
    for (int i = 1; i <= N; i++) {
        len += (size_t)snprintf(chunk + len, sizeof chunk - len, i == N ? "l%d" : "l%d\n", i);
        if (len > sizeof chunk - 16 || i == N) {
            chunk[len] = 0;
            write_text(in[1], chunk);
            len = 0;
        }
    }
    close(in[1]);
    int st;
    for (int i = 1; i <= N; i++) {
        h_assert_rc(shmq_receive(c, &m, 20000), 0);
        char want[16];
        snprintf(want, sizeof want, "l%d", i);
        cr_assert(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0,
                  "message %d: '%.*s', want '%s'", i, (int)m.len, (const char *)m.data, want);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_assert_eq(h_waitpid(pub, 20000, 0, &st), 0, "pub ends at the end of its input");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "pub exit status 0x%x", st);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN); /* nothing twice */

    /* a line longer than max_msg_size (256) in the middle of one read: the one before it is
     * published, the error names it, the one after it is not */
    char input[400];
    snprintf(input, sizeof input, "ok1\n%0300d\nok3\n", 0);
    struct run r = RUN_IN(input, "pub", name, "--timeout-ms", "1000");
    assert_exit(&r, 1, "pub of a too large line");
    assert_contains(r.err, "message 2 (300 bytes) not published", "pub too large");
    assert_contains(r.err, "1 published before it", "pub too large");
    run_free(&r);
    h_assert_rc(shmq_receive(c, &m, 5000), 0);
    cr_assert(m.len == 3 && memcmp(m.data, "ok1", 3) == 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* sub prints a message as soon as it came (one message, sub still running), then every one of
 * a burst once and in order; --count takes no more than it prints: what it leaves is not
 * redelivered (a batch that took more would give them back, attempt 2). */
Test(cli, sub_prints_a_message_at_once_and_takes_no_more_than_count)
{
    const char *name = h_qname("subline");
    shmq_t *q = create_queue(name, 512, 5);
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t sub = spawn_piped((const char *const[]){"sub", name, NULL}, -1, out[1]);
    close(out[1]);
    static char buf[8192];
    publish_text(q, "one");
    read_lines(out[0], buf, sizeof buf, 1, 20000);
    cr_assert_str_eq(buf, "one\n");
    cr_assert_eq(waitpid(sub, NULL, WNOHANG), 0, "sub still runs");

    enum { N = 300 };
    shmq_iov_t msgs[N];
    char text[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof text[i], "m%d", i);
        msgs[i] = (shmq_iov_t){text[i], strlen(text[i])};
    }
    size_t done = 0;
    h_assert_rc(shmq_publish_batch(q, msgs, N, NULL, &done), 0);
    size_t len = read_lines(out[0], buf, sizeof buf, N, 20000);
    char *p = buf;
    for (int i = 0; i < N; i++) {
        char *nl = memchr(p, '\n', len - (size_t)(p - buf));
        cr_assert(nl, "line %d", i);
        cr_assert(nl - p == (ptrdiff_t)strlen(text[i]) && memcmp(p, text[i], (size_t)(nl - p)) == 0,
                  "line %d: '%.*s', want '%s'", i, (int)(nl - p), p, text[i]);
        p = nl + 1;
    }
    cr_assert_eq(p, buf + len, "no more lines than messages");
    kill(sub, SIGTERM);
    int st;
    cr_assert_eq(h_waitpid(sub, 20000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sub after SIGTERM: 0x%x", st);
    close(out[0]);
    shmq_stats_t s;
    h_assert_rc(shmq_stats(q, &s), 0);
    cr_assert_eq(s.acked, N + 1, "acked %" PRIu64, s.acked);
    cr_assert_eq(s.redelivered, 0);

    /* --count 7 of 10 ready: 7 printed, the other 3 never taken */
    for (int i = 0; i < 10; i++)
        publish_text(q, text[i]);
    struct run r = RUN("sub", name, "--count", "7", "--timeout-ms", "20000");
    assert_exit(&r, 0, "sub --count 7");
    cr_assert_str_eq(r.out, "m0\nm1\nm2\nm3\nm4\nm5\nm6\n");
    run_free(&r);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "check", &c), 0);
    for (int i = 7; i < 10; i++) {
        char t[8];
        shmq_msg_t m = receive_text(c, t, sizeof t);
        cr_assert_str_eq(t, text[i]);
        cr_assert_eq(m.attempt, 1, "%s: attempt %u: sub took it", t, m.attempt);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* A write that stops part way (here at ulimit -f, in the middle of a batch's lines): exactly
 * the messages whose whole line reached the file are acked; the rest go back to the queue. */
Test(cli, sub_acks_exactly_the_lines_written)
{
    const char *name = h_qname("subpart");
    shmq_t *q = create_queue(name, 256, 5);
    enum { N = 200, LIMIT = 1024 }; /* lines of 10 bytes: 102 whole ones fit, the 103rd not */
    for (int i = 0; i < N; i++) {
        char t[16];
        snprintf(t, sizeof t, "msg-%05d", i);
        publish_text(q, t);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/subpart-%d.out", h_state_dir_path(), (int)getpid());
    const char *tool = cli_tool_path("shmq");
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(126);
        dup2(fd, STDOUT_FILENO);
        struct rlimit rl = {LIMIT, LIMIT};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(125);
        execl(tool, tool, "sub", name, "--count", "200", "--timeout-ms", "20000", (char *)NULL);
        _exit(127);
    }
    h_track(pid, -1);
    int st = 0;
    cr_assert_eq(h_waitpid(pid, 60000, 0, &st), 0, "sub did not finish");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "sub past ulimit -f: 0x%x", st);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    size_t len;
    char *text = cli_slurp(f, &len);
    unlink(path);
    int whole = 0;
    for (size_t i = 0; i < len; i++)
        whole += text[i] == '\n';
    free(text);
    cr_assert_eq(whole, LIMIT / 10, "%d whole lines in the file", whole);
    shmq_stats_t s;
    h_assert_rc(shmq_stats(q, &s), 0);
    cr_assert_eq(s.acked, (uint64_t)whole, "acked %" PRIu64 " for %d whole lines", s.acked, whole);
    /* the others are all there, once each */
    bool seen[N] = {false};
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "check", &c), 0);
    for (int k = whole; k < N; k++) {
        char t[16];
        shmq_msg_t m = receive_text(c, t, sizeof t);
        int i = atoi(t + 4);
        cr_assert(i >= whole && i < N && !seen[i], "%s after %d whole lines", t, whole);
        seen[i] = true;
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(cli, pub_delay_ms_holds_the_message_until_due)
{
    const char *name = h_qname("delay");
    shmq_t *q = create_queue(name, 8, 5);
    int64_t t0 = h_now_ms();
    struct run r = RUN("pub", name, "--delay-ms", "2000", "late");
    assert_exit(&r, 0, "pub --delay-ms");
    run_free(&r);
    RUN_EXPECT_EXIT(0, "pub now", "pub", name, "now");
    /* stat counts it delayed, dump shows when it is due */
    r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "messages.delayed", 1);
    jassert_num(d, "messages.ready", 1);
    json_free(d);
    run_free(&r);
    r = RUN("dump", name, "--json");
    assert_exit(&r, 0, "dump --json");
    d = json_parse(r.out);
    bool seen = false;
    for (int i = 0; i < 2; i++) {
        char path[64];
        snprintf(path, sizeof path, "slots.%d.state", i);
        if (strcmp(jstr(d, path), "DELAYED") != 0)
            continue;
        snprintf(path, sizeof path, "slots.%d.deadline_in_ms", i);
        double left = jnum(d, path);
        cr_assert(left > 0 && left <= 2001, "deadline_in_ms %g of a 2000 ms delay", left);
        seen = true;
    }
    cr_assert(seen, "dump shows no DELAYED slot");
    json_free(d);
    run_free(&r);
    /* sub gets the undelayed one at once, the delayed one only once due */
    r = RUN("sub", name, "--count", "2", "--timeout-ms", "30000");
    int64_t t1 = h_now_ms();
    assert_exit(&r, 0, "sub --count 2");
    cr_assert_str_eq(r.out, "now\nlate\n");
    cr_assert_geq(t1, t0 + 2000, "sub ended %lld ms before the delay was over",
                  (long long)(t0 + 2000 - t1));
    run_free(&r);
    RUN_EXPECT_EXIT(2, "a delay that is no number", "pub", name, "--delay-ms", "soon", "x");
    h_assert_rc(shmq_close(q), 0);
}

Test(cli, purge_prints_the_count_and_delayed_on_request)
{
    const char *name = h_qname("purge");
    shmq_t *q = create_queue(name, 16, 5);
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "a", "b", "c");
    RUN_EXPECT_EXIT(0, "pub --delay-ms", "pub", name, "--delay-ms", "600000", "late");
    struct run r = RUN("purge", name);
    assert_exit(&r, 0, "purge");
    cr_assert_str_eq(r.out, "3\n");
    run_free(&r);
    r = RUN("purge", name, "--delayed", "--json");
    assert_exit(&r, 0, "purge --delayed --json");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "purged", 1);
    cr_assert_str_eq(jstr(d, "queue"), name);
    json_free(d);
    run_free(&r);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert(st.ready == 0 && st.delayed == 0 && st.free == 16, "ready %u delayed %u free %u",
              st.ready, st.delayed, st.free);
    RUN_EXPECT_EXIT(1, "purge of no queue", "purge", "no-such-queue-here");
    RUN_EXPECT_EXIT(2, "purge without NAME", "purge");
    h_assert_rc(shmq_close(q), 0);
}

/* ------------------------------------------------------------------ dlq */

Test(cli, dlq_list_redrive_purge)
{
    const char *name = h_qname("dlq");
    shmq_t *q = create_queue(name, 8, 1);
    struct run r = RUN("pub", "-v", name, "m1", "m2", "m3");
    assert_exit(&r, 0, "pub");
    uint64_t ids[3];
    cr_assert_eq(sscanf(r.out, "%" SCNu64 "\n%" SCNu64 "\n%" SCNu64, &ids[0], &ids[1], &ids[2]), 3);
    run_free(&r);
    r = RUN("sub", name, "--count", "3", "--nack", "--timeout-ms", "5000");
    assert_exit(&r, 0, "sub --nack");
    cr_assert_str_eq(r.out, "m1\nm2\nm3\n");
    run_free(&r);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 3, "max_attempts 1: every nack is a dead letter");

    r = RUN("dlq", name, "list");
    assert_exit(&r, 0, "dlq list");
    assert_contains(r.out, "max-attempts", "dlq list");
    assert_contains(r.out, "\"m2\"", "dlq list");
    run_free(&r);
    r = RUN("dlq", name, "list", "--json");
    assert_exit(&r, 0, "dlq list --json");
    struct jval *d = json_parse(r.out);
    struct jval *dl = jget(d, "dead_letters");
    cr_assert(dl && dl->type == J_ARR && dl->n == 3);
    for (size_t i = 0; i < 3; i++) {
        char want[8];
        snprintf(want, sizeof want, "m%zu", i + 1);
        jassert_num(dl->items[i], "id", (double)ids[i]);
        jassert_num(dl->items[i], "attempt", 1);
        cr_assert_str_eq(jstr(dl->items[i], "reason"), "max-attempts");
        cr_assert_str_eq(jstr(dl->items[i], "data"), want);
    }
    json_free(d);
    run_free(&r);

    char id[32];
    snprintf(id, sizeof id, "%" PRIu64, ids[1]);
    r = RUN("dlq", name, "redrive", id);
    assert_exit(&r, 0, "dlq redrive ID");
    assert_contains(r.out, "1 dead letter redriven", "dlq redrive ID");
    run_free(&r);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 2);
    cr_assert_eq(st.ready, 1);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "dlqcheck", &c), 0);
    char buf[16];
    shmq_msg_t m = receive_text(c, buf, sizeof buf);
    cr_assert_str_eq(buf, "m2");
    cr_assert_eq(m.id, ids[1]);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_consumer_close(c), 0);

    r = RUN("dlq", name, "redrive", id); /* gone now */
    assert_exit(&r, 1, "dlq redrive of an unknown ID");
    assert_contains(r.err, "no dead letter with id", "dlq redrive of an unknown ID");
    run_free(&r);
    r = RUN("dlq", name, "purge");
    assert_exit(&r, 0, "dlq purge");
    assert_contains(r.out, "2 dead letters purged", "dlq purge");
    run_free(&r);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 0);
    cr_assert_eq(st.free, 8);
    h_assert_rc(shmq_close(q), 0);
}

/* ------------------------------------------------------------------ top */

Test(cli, top_draws_frames_in_place_with_rates)
{
    const char *name = h_qname("top");
    shmq_t *q = create_queue(name, 8, 5);
    publish_text(q, "x");
    struct run r = RUN("top", name, "--iterations", "3", "--interval-ms", "30");
    assert_exit(&r, 0, "top --iterations 3");
    int frames = 0;
    for (const char *p = r.out; (p = strstr(p, "\033[H\033[J")) != NULL; p++)
        frames++;
    cr_assert_eq(frames, 3, "three frames redrawn in place:\n%s", r.out);
    assert_contains(r.out, "published_per_s=", "top rates");
    assert_contains(r.out, "depth: 1", "top depth");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
    r = RUN("top", name, "--iterations", "1", "--interval-ms", "10");
    assert_exit(&r, 1, "top of a missing queue");
    assert_contains(r.err, "no such queue", "top of a missing queue");
    run_free(&r);
    RUN_EXPECT_EXIT(2, "top bad/name", "top", "bad/name");
}

/* The line of the last frame that starts with `name `, or NULL. */
static const char *last_row(const char *out, const char *name)
{
    const char *frame = out, *p;
    while ((p = strstr(frame + 1, "\033[H\033[J")) != NULL)
        frame = p;
    size_t n = strlen(name);
    for (p = frame; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return p;
    return NULL;
}

Test(cli, top_without_a_name_is_a_table_of_every_queue)
{
    const char *a = h_qname("topa"), *b = h_qname("topb");
    shmq_t *qa = create_queue(a, 8, 5), *qb = create_queue(b, 8, 5);
    publish_text(qa, "x");
    publish_text(qa, "y");
    struct run r = RUN("top", "--iterations", "2", "--interval-ms", "30");
    assert_exit(&r, 0, "top --iterations 2");
    int frames = 0;
    for (const char *p = r.out; (p = strstr(p, "\033[H\033[J")) != NULL; p++)
        frames++;
    cr_assert_eq(frames, 2, "two frames redrawn in place:\n%s", r.out);
    assert_contains(r.out, "NAME ", "top table header");
    assert_contains(r.out, "PUB/s", "top table header");
    const char *ra = last_row(r.out, a), *rb = last_row(r.out, b);
    cr_assert(ra && rb, "both queues are rows of the last frame:\n%s", r.out);
    unsigned ready = 99, inflight = 99;
    cr_assert_eq(sscanf(ra + strlen(a), "%u %u", &ready, &inflight), 2, "row: %.80s", ra);
    cr_assert(ready == 2 && inflight == 0, "row of %s: %.100s", a, ra);
    cr_assert_eq(sscanf(rb + strlen(b), "%u", &ready), 1);
    cr_assert_eq(ready, 0, "row of %s: %.100s", b, rb);
    run_free(&r);

    /* the ones named, in that order; a missing one is a row with its error, not the end */
    const char *gone = h_qname("topgone");
    r = RUN("top", b, gone, a, "--iterations", "1", "--interval-ms", "10");
    assert_exit(&r, 0, "top of three names");
    const char *pb = strstr(r.out, b), *pg = strstr(r.out, gone), *pa = strstr(r.out, a);
    cr_assert(pb && pg && pa && pb < pg && pg < pa, "rows in the order named:\n%s", r.out);
    assert_contains(last_row(r.out, gone), "error: no such queue", "a missing queue's row");
    run_free(&r);
    h_assert_rc(shmq_close(qa), 0);
    h_assert_rc(shmq_close(qb), 0);
}

/* ------------------------------------------------------------------ broken segments */

/* Every subcommand that reads NAME: exit 1, a message naming the queue, no signal. */
static void assert_all_fail(const char *name, const char *what)
{
    const char *const *cmds[] = {
        (const char *const[]){"stat", name, NULL},
        (const char *const[]){"stat", name, "--json", NULL},
        (const char *const[]){"top", name, "--iterations", "1", "--interval-ms", "10", NULL},
        (const char *const[]){"pub", name, "m", "--timeout-ms", "0", NULL},
        (const char *const[]){"sub", name, "--count", "1", "--timeout-ms", "100", NULL},
        (const char *const[]){"dlq", name, "list", NULL},
        (const char *const[]){"dlq", name, "redrive", NULL},
        (const char *const[]){"dlq", name, "purge", NULL},
        (const char *const[]){"delete", name, NULL},
        (const char *const[]){"dump", name, NULL},
        (const char *const[]){"create", name, "--durability", "none", NULL}, /* it exists */
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct run r = run_argv("", cmds[i]);
        char label[96];
        snprintf(label, sizeof label, "%s: shmq %s", what, cmds[i][0]);
        assert_exit(&r, 1, label);
        assert_contains(r.err, name, label);
        run_free(&r);
    }
    struct run r = RUN("list");
    assert_exit(&r, 1, what);
    char needle[128];
    snprintf(needle, sizeof needle, "%s: ", name);
    assert_contains(r.err, needle, "list names the broken segment");
    run_free(&r);
}

Test(cli, missing_corrupted_and_truncated_segments_exit_1_without_crashing)
{
    const char *name = h_qname("broken");
    struct run r = RUN("stat", name);
    assert_exit(&r, 1, "stat of a missing queue");
    assert_contains(r.err, "no such queue", "stat of a missing queue");
    run_free(&r);
    r = RUN("pub", name, "x");
    assert_exit(&r, 1, "pub to a missing queue");
    assert_contains(r.err, "no such queue", "pub to a missing queue");
    run_free(&r);

    char path[128];
    h_shm_path(name, path, sizeof path);
    shmq_t *q = create_queue(name, 8, 5);
    publish_text(q, "before damage");
    h_assert_rc(shmq_close(q), 0);

    /* a flipped byte in the checksummed header */
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0);
    unsigned char byte;
    cr_assert_eq(pread(fd, &byte, 1, offsetof(struct seg_layout, capacity)), 1);
    byte ^= 0x40;
    cr_assert_eq(pwrite(fd, &byte, 1, offsetof(struct seg_layout, capacity)), 1);
    close(fd);
    assert_all_fail(name, "corrupted header");
    RUN_EXPECT_EXIT(0, "delete --force of a corrupted segment", "delete", "--force", name);

    /* a segment cut short: the header is intact, the slots are not there */
    q = create_queue(name, 8, 5);
    h_assert_rc(shmq_close(q), 0);
    cr_assert_eq(truncate(path, 4096), 0);
    assert_all_fail(name, "truncated segment");

    /* garbage that is not a segment at all */
    cr_assert_eq(truncate(path, 0), 0);
    fd = open(path, O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "not a queue\n", 12), 12);
    close(fd);
    assert_all_fail(name, "garbage file");
    cr_assert_eq(unlink(path), 0);
}

/* Review finding F6: `shmq sub` and `shmq dump` writing to a file past RLIMIT_FSIZE (ulimit -f)
 * must fail with an error (EFBIG), not die of SIGXFSZ. The limit is set in the tool's own
 * process (a forked child, before exec), so the test process keeps its own. */
static int run_under_fsize(const char *const *args, const char *out_path)
{
    const char *tool = cli_tool_path("shmq");
    const char *argv[16] = {tool};
    for (int k = 0; args[k]; k++)
        argv[k + 1] = args[k];
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(126);
        dup2(fd, STDOUT_FILENO);
        struct rlimit rl = {1024, 1024};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(125);
        execv(tool, (char *const *)argv);
        _exit(127);
    }
    h_track(pid, -1);
    int st = 0;
    cr_assert_eq(h_waitpid(pid, 60000, 0, &st), 0, "%s %s did not finish", tool, args[0]);
    unlink(out_path);
    return st;
}

Test(cli, sub_and_dump_past_the_file_size_limit_fail_without_a_signal)
{
    const char *q = h_qname("cli-fsize");
    run_expect_exit(0, "create", (const char *const[]){"create", q, NULL});
    char msgs[3 * 901 + 1];
    for (int i = 0; i < 3; i++) {
        memset(msgs + i * 901, 'x', 900);
        msgs[i * 901 + 900] = '\n';
    }
    msgs[sizeof(msgs) - 1] = 0;
    struct run r = cli_run("shmq", 30, msgs, (const char *const[]){"pub", q, NULL});
    assert_exit(&r, 0, "pub");
    run_free(&r);
    char out[256];
    snprintf(out, sizeof(out), "%s/fsize-%d.out", h_state_dir_path(), (int)getpid());
    int st = run_under_fsize((const char *const[]){"sub", q, "--count", "3", NULL}, out);
    cr_assert(!WIFSIGNALED(st), "shmq sub died of signal %d under ulimit -f",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "shmq sub past ulimit -f exited %d", st);
    st = run_under_fsize((const char *const[]){"dump", q, NULL}, out);
    cr_assert(!WIFSIGNALED(st), "shmq dump died of signal %d under ulimit -f",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "shmq dump past ulimit -f exited %d", st);
}

Test(cli, peek_prints_ready_messages_and_takes_none)
{
    const char *name = h_qname("peek");
    shmq_t *q = create_queue(name, 16, 5);
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "a", "bb", "ccc");
    struct run r = RUN("peek", name);
    assert_exit(&r, 0, "peek");
    cr_assert_str_eq(r.out, "a\nbb\nccc\n");
    run_free(&r);
    r = RUN("peek", name, "--count", "1", "--json");
    assert_exit(&r, 0, "peek --count 1 --json");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "id", 1);
    jassert_num(d, "attempt", 0);
    jassert_num(d, "len", 1);
    cr_assert_str_eq(jstr(d, "data"), "a");
    json_free(d);
    int lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 1, "--count 1 printed %d lines: %s", lines, r.out);
    run_free(&r);
    /* nothing was taken: all three are delivered, first attempts */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    for (int i = 0; i < 3; i++) {
        char buf[8];
        shmq_msg_t m = receive_text(c, buf, sizeof buf);
        cr_assert_eq(m.attempt, 1, "attempt %u after a peek", m.attempt);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    RUN_EXPECT_EXIT(2, "peek --count 0", "peek", name, "--count", "0");
    h_assert_rc(shmq_close(q), 0);
}

/* shmq group: add, list (--json), sub --group receives the same message as the group
 * "default", delete; runtime errors exit 1 (README "Fan-out"). */
Test(cli, group_add_list_sub_delete)
{
    const char *name = h_qname("cgroup");
    RUN_EXPECT_EXIT(0, "create", "create", name, "--max-groups", "3", "--durability", "none");
    RUN_EXPECT_EXIT(0, "group add", "group", name, "add", "audit");
    RUN_EXPECT_EXIT(0, "group add --overrun", "group", name, "add", "metrics", "--overrun", "5");
    RUN_EXPECT_EXIT(1, "group add again", "group", name, "add", "audit");
    RUN_EXPECT_EXIT(1, "group add: no room", "group", name, "add", "more");
    struct run r = RUN("group", name, "list", "--json");
    assert_exit(&r, 0, "group list --json");
    struct jval *doc = json_parse(r.out);
    struct jval *g = jget(doc, "groups.1");
    cr_assert(g, "group list --json: groups.1 missing");
    jassert_num(g, "index", 1);
    json_free(doc);
    assert_contains(r.out, "\"audit\"", "group list --json");
    assert_contains(r.out, "\"overrun\"", "group list --json");
    run_free(&r);
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "fan");
    r = RUN("sub", name, "--count", "1", "--timeout-ms", "5000");
    assert_exit(&r, 0, "sub");
    assert_contains(r.out, "fan", "sub (default)");
    run_free(&r);
    r = RUN("sub", name, "--group", "audit", "--count", "1", "--timeout-ms", "5000");
    assert_exit(&r, 0, "sub --group audit");
    assert_contains(r.out, "fan", "sub --group audit");
    run_free(&r);
    RUN_EXPECT_EXIT(1, "sub --group nope", "sub", name, "--group", "nope", "--count", "1");
    RUN_EXPECT_EXIT(1, "group delete default", "group", name, "delete", "default");
    RUN_EXPECT_EXIT(0, "group delete", "group", name, "delete", "audit");
    RUN_EXPECT_EXIT(1, "group delete again", "group", name, "delete", "audit");
    r = RUN("group", name, "list");
    assert_exit(&r, 0, "group list");
    cr_assert(!strstr(r.out, "audit"), "a deleted group is listed:\n%s", r.out);
    run_free(&r);
}

/* Headers from the shell: `create --max-header-bytes`, `pub --header K=V` (repeatable), and
 * the "headers" object of `peek`, `replay` and `sub --json`; a queue without headers, a bad key
 * and headers too large fail the publish with exit 1 and say why. */
Test(cli, pub_header_shows_in_peek_replay_and_sub_json)
{
    const char *name = h_qname("hdrcli");
    RUN_EXPECT_EXIT(0, "create with headers", "create", name, "--max-header-bytes", "64",
                    "--log-retention-bytes", "1048576");
    RUN_EXPECT_EXIT(0, "pub with headers", "pub", name, "-H", "content-type=text/plain",
                    "--header", "trace=a=b", "hello");
    RUN_EXPECT_EXIT(0, "pub without", "pub", name, "plain");
    const char *const cmds[3][6] = {{"peek", name, "--json", NULL},
                                    {"replay", name, "--from", "1", "--json", NULL},
                                    {"sub", name, "--count", "2", "--json", NULL}};
    for (int i = 0; i < 3; i++) {
        struct run r = run_argv(NULL, cmds[i]);
        assert_exit(&r, 0, cmds[i][0]);
        char *second = strchr(r.out, '\n');
        cr_assert_not_null(second, "%s printed one line: %s", cmds[i][0], r.out);
        *second++ = 0;
        struct jval *d = json_parse(r.out);
        cr_assert_str_eq(jstr(d, "data"), "hello");
        cr_assert_str_eq(jstr(d, "headers.content-type"), "text/plain", "%s", cmds[i][0]);
        cr_assert_str_eq(jstr(d, "headers.trace"), "a=b", "%s: the value is all after the "
                         "first '='", cmds[i][0]);
        json_free(d);
        d = json_parse(second);
        cr_assert_str_eq(jstr(d, "data"), "plain");
        cr_assert_null(jget(d, "headers"), "%s: a message without headers shows none",
                       cmds[i][0]);
        json_free(d);
        run_free(&r);
    }
    struct run r = RUN("pub", name, "-H", "a:b=1", "x");
    assert_exit(&r, 1, "a bad key");
    assert_contains(r.err, "printable ASCII without ':'", "a bad key says why");
    run_free(&r);
    r = RUN("pub", name, "-H", "k=0123456789012345678901234567890123456789012345678901234567890",
            "x");
    assert_exit(&r, 1, "headers too large");
    assert_contains(r.err, "above the queue's max_header_bytes 64", "too large says why");
    run_free(&r);
    RUN_EXPECT_EXIT(2, "not K=V", "pub", name, "-H", "novalue", "x");
    const char *plain = h_qname("hdrcli");
    RUN_EXPECT_EXIT(0, "create without headers", "create", plain);
    r = RUN("pub", plain, "-H", "a=b", "x");
    assert_exit(&r, 1, "headers on a queue without them");
    assert_contains(r.err, "--max-header-bytes", "says how to make one with headers");
    run_free(&r);
}
