/*
 * test_cli_logdir.c - finding a queue's log by name from the shell: `shmq create --log-dir`
 * with a relative path, `shmq list` of a queue that exists only as a log, `shmq wal` and
 * `shmq recover` from another working directory, `shmq sub` after the segment is lost.
 *
 * What is proved:
 *   - `create --log-dir rel` stores the absolute path (stat shows it) and links it from the
 *     state directory;
 *   - with the segment removed, `list` shows the queue as "log only" (text and JSON), `wal
 *     verify` run elsewhere finds the log through the state directory, `recover` rebuilds it
 *     (JSON: rebuilt, restored = what was published) and says so, a second `recover` has nothing
 *     to do; `sub` gets every message;
 *   - `recover --log-dir DIR` rebuilds from a log the state directory does not name, and a
 *     missing log is exit 1 with the directory it looked in;
 *   - shmq-watchdog, given the name, rebuilds a lost segment from a log created elsewhere.
 */
#include "cli.h"

TestSuite(cli_logdir, .fini = h_cleanup, .timeout = 120);

static char base[64];

static void cleanup(void)
{
    h_cleanup();
    if (base[0])
        h_remove_tree(base);
    base[0] = 0;
}

static void make_base(void)
{
    snprintf(base, sizeof base, "/tmp/shmq-test-clilog-XXXXXX");
    cr_assert_not_null(mkdtemp(base));
}

Test(cli_logdir, relative_log_dir_found_by_name_after_segment_loss, .fini = cleanup)
{
    const char *name = h_qname("clirel");
    make_base();
    cr_assert_eq(chdir(base), 0);
    RUN_EXPECT_EXIT(0, "create --log-dir relative", "create", name, "--log-dir", "logs");
    cr_assert_eq(chdir("/"), 0); /* everything after runs elsewhere */
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "one", "two", "three");
    char want[256], seg[128];
    snprintf(want, sizeof want, "%s/logs/%s", base, name);
    struct run r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat");
    struct jval *d = json_parse(r.out);
    cr_assert_str_eq(jstr(d, "log_dir"), want);
    json_free(d);
    run_free(&r);

    h_shm_path(name, seg, sizeof seg);
    cr_assert_eq(unlink(seg), 0);
    /* list exits 1 when some other segment in /dev/shm cannot be read (other tests' queues
     * being made right now): only our line matters here */
    r = RUN("list");
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) <= 1, "list: status 0x%x", r.status);
    char needle[128];
    snprintf(needle, sizeof needle, "%s", name);
    assert_contains(r.out, needle, "list of a log-only queue");
    assert_contains(r.out, "log only", "list of a log-only queue");
    run_free(&r);
    r = RUN("list", "--json");
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) <= 1, "list: status 0x%x", r.status);
    d = json_parse(r.out);
    bool found = false;
    for (size_t i = 0; jget(d, "queues") && i < jget(d, "queues")->n; i++) {
        struct jval *e = jget(d, "queues")->items[i];
        if (strcmp(jstr(e, "name"), name) == 0) {
            found = true;
            cr_expect(!jbool(e, "segment"));
            cr_expect_str_eq(jstr(e, "log_dir"), want);
        }
    }
    cr_expect(found, "list --json misses the log-only queue:\n%s", r.out);
    json_free(d);
    run_free(&r);

    r = RUN("wal", name, "verify", "--json");
    assert_exit(&r, 0, "wal verify of a log-only queue");
    d = json_parse(r.out);
    cr_expect_str_eq(jstr(d, "log_dir"), want);
    json_free(d);
    run_free(&r);

    r = RUN("recover", name, "--json");
    assert_exit(&r, 0, "recover");
    d = json_parse(r.out);
    cr_expect(jbool(d, "rebuilt"));
    jassert_num(d, "restored", 3);
    cr_expect_str_eq(jstr(d, "log_dir"), want);
    json_free(d);
    run_free(&r);
    r = RUN("recover", name);
    assert_exit(&r, 0, "recover with a valid segment");
    assert_contains(r.out, "rebuilt: false", "recover with a valid segment");
    run_free(&r);
    r = RUN("sub", name, "--count", "3", "--timeout-ms", "10000");
    assert_exit(&r, 0, "sub after recovery");
    cr_expect_str_eq(r.out, "one\ntwo\nthree\n");
    run_free(&r);
    RUN_EXPECT_EXIT(0, "delete", "delete", name);
}

Test(cli_logdir, recover_from_a_log_dir_the_state_directory_does_not_name, .fini = cleanup)
{
    const char *name = h_qname("climoved");
    make_base();
    RUN_EXPECT_EXIT(0, "create", "create", name, "--log-dir", base);
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "a", "b");
    char seg[128], link[256];
    h_shm_path(name, seg, sizeof seg);
    cr_assert_eq(unlink(seg), 0);
    snprintf(link, sizeof link, "%s/%s", h_state_dir_path(), name);
    cr_assert_eq(unlink(link), 0);

    struct run r = RUN("recover", name);
    assert_exit(&r, 1, "recover without a log the state directory names");
    assert_contains(r.err, "no log there", "recover without a log");
    run_free(&r);
    r = RUN("recover", name, "--log-dir", base, "--json");
    assert_exit(&r, 0, "recover --log-dir");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "restored", 2);
    json_free(d);
    run_free(&r);
    struct stat st;
    cr_expect_eq(lstat(link, &st), 0, "recover --log-dir did not link the log from %s", link);
    RUN_EXPECT_EXIT(0, "delete", "delete", name);
}

/* The watchdog, given the queue's name, rebuilds a lost segment from a log created elsewhere:
 * it reopens the name (shmq_open follows the state directory's link). The test only watches
 * /dev/shm (stat, never an open, which would rebuild it itself). */
Test(cli_logdir, watchdog_rebuilds_a_lost_segment_from_a_log_elsewhere, .fini = cleanup)
{
    const char *name = h_qname("cliwd");
    make_base();
    RUN_EXPECT_EXIT(0, "create", "create", name, "--log-dir", base);
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "x", "y");
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert(devnull >= 0);
    pid_t wd = cli_spawn(cli_tool_path("shmq-watchdog"),
                         (const char *const[]){"--scan-ms", "50", name, NULL}, devnull, devnull);
    close(devnull);
    char seg[128];
    h_shm_path(name, seg, sizeof seg);
    struct stat st, before;
    cr_assert_eq(stat(seg, &before), 0);
    cr_assert_eq(unlink(seg), 0);
    int64_t end = h_now_ms() + 20000;
    while (stat(seg, &st) != 0 && h_now_ms() < end)
        h_sleep_ms(10); /* polling for the file, with a bound: no event to wait on */
    cr_assert_eq(stat(seg, &st), 0, "the watchdog did not rebuild %s within 20 s", seg);
    kill(wd, SIGTERM);
    h_waitpid(wd, 10000, 0, NULL);
    shmq_t *q;
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_stats_t s;
    h_assert_rc(shmq_stats(q, &s), 0);
    cr_expect_eq(s.ready, 2u, "the rebuilt queue holds %llu messages", (unsigned long long)s.ready);
    h_assert_rc(shmq_close(q), 0);
}
