/*
 * test_storage_units.c - the watchdog's systemd units (tools/systemd/NAME.in, configured into the
 * build tree by cmake/ShmqSystemd.cmake): `systemd-analyze verify` finds nothing wrong with
 * them, with and without the metrics.conf drop-in; the state directory is writable under them
 * (StateDirectory=, SHMQ_STATE_DIR) and the installed copies run the installed watchdog; their
 * Documentation= names man:shmq-watchdog(8), which verify finds among the build's man pages
 * (BUILD/man, cmake/ShmqMan.cmake). Skips with a line saying so where systemd-analyze is
 * missing (and checks no man page where help2man was, so none was built).
 */
#include "helpers.h"

#include <limits.h>

TestSuite(units, .fini = h_cleanup, .timeout = 120);

/* The build tree's top (the test runs as BUILD/tests/test_storage_units). */
static void build_top(char *buf, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert(n > 0);
    exe[n] = 0;
    *strrchr(exe, '/') = 0; /* BUILD/tests */
    *strrchr(exe, '/') = 0; /* BUILD */
    snprintf(buf, size, "%s", exe);
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

Test(units, the_state_directory_is_writable_and_installed_units_run_the_installed_watchdog)
{
    char top[PATH_MAX], path[PATH_MAX + 64];
    build_top(top, sizeof(top));
    const char *units[] = {"shmq-watchdog@.service", "shmq-watchdog-all.service"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/systemd/%s", top, units[i]);
        cr_assert(file_has(path, "StateDirectory=shmq"), "%s: no StateDirectory=", units[i]);
        cr_assert(file_has(path, "Documentation=man:shmq-watchdog(8)"), "%s: no man page",
                  units[i]);
        cr_assert(file_has(path, "Environment=SHMQ_STATE_DIR=%S/shmq"), "%s", units[i]);
        cr_assert(file_has(path, "ReadWritePaths=/dev/shm"), "%s", units[i]);
        /* review F7: users' logs live in ~/.local/state; ProtectHome=yes hid them entirely */
        cr_assert(!file_has(path, "ProtectHome=yes"), "%s: users' logs are hidden", units[i]);
        snprintf(path, sizeof(path), "%s/systemd-install/%s", top, units[i]);
        cr_assert(file_has(path, "ExecStart=/"), "%s: ExecStart not an absolute path", units[i]);
        cr_assert(!file_has(path, "@SHMQ"), "%s: a placeholder left", units[i]);
    }
}

Test(units, systemd_analyze_verify_is_clean)
{
    if (run("command -v systemd-analyze >/dev/null 2>&1") != 0)
        cr_skip_test("systemd-analyze is not installed: units not verified");
    char top[PATH_MAX], dir[64], cmd[8 * PATH_MAX], page[PATH_MAX + 32], man[PATH_MAX + 64];
    build_top(top, sizeof(top));
    /* verify runs `man shmq-watchdog(8)` for Documentation=: it must find the page built here */
    snprintf(page, sizeof(page), "%s/man/man8/shmq-watchdog.8", top);
    if (access(page, R_OK) == 0) {
        snprintf(man, sizeof(man), "MANPATH=%s/man systemd-analyze verify", top);
    } else {
        cr_log_warn("%s not built (no help2man): the units' man page is not checked", page);
        snprintf(man, sizeof(man), "systemd-analyze verify --man=no");
    }
    snprintf(dir, sizeof(dir), "/tmp/shmq-test-units-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    /* an instance of the template, one with the metrics drop-in, and the --all unit */
    snprintf(cmd, sizeof(cmd),
             "set -e; cd %s; cp %s/systemd/shmq-watchdog@.service shmq-watchdog@q1.service; "
             "cp %s/systemd/shmq-watchdog@.service shmq-watchdog@q2.service; "
             "cp %s/systemd/shmq-watchdog-all.service .; mkdir shmq-watchdog@q2.service.d; "
             "cp %s/systemd/metrics.conf shmq-watchdog@q2.service.d/; "
             "%s ./shmq-watchdog@q1.service ./shmq-watchdog@q2.service "
             "./shmq-watchdog-all.service > out.txt 2>&1 || { cat out.txt >&2; exit 1; }; "
             "test ! -s out.txt || { cat out.txt >&2; exit 1; }",
             dir, top, top, top, top, man);
    int rc = run(cmd);
    h_remove_tree(dir);
    cr_assert_eq(rc, 0, "systemd-analyze verify reported problems (printed above)");
}
