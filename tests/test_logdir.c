/*
 * test_logdir.c - where a queue's log lives, how it is found again, who may use it (logdir.h).
 *
 *  - a relative log_dir is refused (create, recover);
 *  - a log created elsewhere is found by name after the segment is lost (the state directory's
 *    link), the rebuilt segment records the real directory, delete removes link and log;
 *  - shmq_recover(name, DIR) finds a log the state directory does not name, and names it;
 *  - a lost log directory fails a publish; a deleted queue's publish still succeeds;
 *  - no HOME: no state directory (no /tmp fallback); a state directory others can write, or
 *    that belongs to someone else, is refused;
 *  - a shared mode shares the log directory and files; another uid (nobody, when root) publishes
 *    and acks in a shared queue with logging, and the log alone brings back exactly that.
 */
#include "helpers.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>

TestSuite(logdir, .fini = h_cleanup, .timeout = 120);

static char tmpdirs[4][64];
static int ntmp;

/* A fresh directory under /tmp (removed at the end of the test), mode `mode`. */
static const char *tmp_dir(mode_t mode)
{
    cr_assert(ntmp < 4);
    char *d = tmpdirs[ntmp++];
    snprintf(d, 64, "/tmp/shmq-test-logdir-XXXXXX");
    cr_assert_not_null(mkdtemp(d), "mkdtemp: %s", strerror(errno));
    cr_assert_eq(chmod(d, mode), 0);
    return d;
}

static void cleanup(void)
{
    h_cleanup();
    for (int i = 0; i < ntmp; i++)
        h_remove_tree(tmpdirs[i]);
    ntmp = 0;
}

static void state_entry(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", h_state_dir_path(), name);
}

static void publish_n(shmq_t *q, int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        char m[32];
        int len = snprintf(m, sizeof m, "%s-%d", tag, i);
        h_assert_rc(shmq_publish(q, m, (size_t)len, NULL), 0);
    }
}

static uint64_t ready_of(shmq_t *q)
{
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    return st.ready;
}

Test(logdir, relative_log_dir_is_refused, .fini = cleanup)
{
    const char *name = h_qname("rel");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.log_dir = "some/relative/dir";
    shmq_t *q = NULL;
    h_assert_rc(shmq_create(name, &cfg, &q), -EINVAL);
    cr_expect_eq(access("some", F_OK), -1, "a relative directory was made");
    h_assert_rc(shmq_recover(name, "relative", NULL), -EINVAL);
}

Test(logdir, log_elsewhere_is_found_by_name_after_segment_loss, .fini = cleanup)
{
    const char *name = h_qname("else");
    const char *base = tmp_dir(0700);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.log_dir = base;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 3, "a");
    h_assert_rc(shmq_close(q), 0);

    char entry[256], target[256], real[256];
    state_entry(name, entry, sizeof entry);
    snprintf(real, sizeof real, "%s/%s", base, name);
    ssize_t n = readlink(entry, target, sizeof target - 1);
    cr_assert(n > 0, "no link %s: %s", entry, strerror(errno));
    target[n] = 0;
    cr_assert_str_eq(target, real);

    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0); /* rebuilt from the log the link names */
    cr_expect_eq(ready_of(q), 3u);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    publish_n(q, 1, "b");
    h_assert_rc(shmq_close(q), 0);

    /* the rebuilt segment writes to the real directory, not through the link: lose it again */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    cr_expect_eq(ready_of(q), 4u);
    h_assert_rc(shmq_close(q), 0);

    h_assert_rc(shmq_unlink(name), 0);
    struct stat st;
    cr_expect_neq(lstat(entry, &st), 0, "delete left the link %s", entry);
    cr_expect_neq(stat(real, &st), 0, "delete left the log %s", real);
}

Test(logdir, recover_from_a_log_the_state_directory_does_not_name, .fini = cleanup)
{
    const char *name = h_qname("moved");
    const char *base = tmp_dir(0700);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.log_dir = base;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 2, "m");
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    char entry[256];
    state_entry(name, entry, sizeof entry);
    cr_assert_eq(unlink(entry), 0); /* the link is lost (another machine, a wiped home) */

    h_assert_rc(shmq_open(name, &q), -ENOENT);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, base, &rep), 0);
    cr_expect_eq(rep.restored, 2u);
    h_assert_rc(shmq_open(name, &q), 0);
    cr_expect_eq(ready_of(q), 2u);
    h_assert_rc(shmq_close(q), 0);

    /* and the state directory names it again */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    cr_expect_eq(ready_of(q), 2u);
    h_assert_rc(shmq_close(q), 0);
}

/* Publish max-size messages until the log needs a new file (at most 64 files' worth). */
static int publish_past_file(shmq_t *q, int *ok)
{
    char big[4096];
    memset(big, 'x', sizeof big);
    *ok = 0;
    for (int i = 0; i < 64; i++) {
        int rc = shmq_publish(q, big, sizeof big, NULL);
        if (rc)
            return rc;
        ++*ok;
        shmq_msg_t m;
        shmq_consumer_t *c;
        h_assert_rc(shmq_consumer_open(q, "t", &c), 0);
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
        h_assert_rc(shmq_consumer_close(c), 0);
    }
    return 0;
}

Test(logdir, a_lost_log_directory_fails_publish_a_deleted_queue_does_not, .fini = cleanup)
{
    const char *name = h_qname("lost");
    const char *base = tmp_dir(0700);
    shmq_config_t cfg = h_small_config(4, 4096, 8);
    cfg.log_dir = base;
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 1, "x");
    char real[256];
    snprintf(real, sizeof real, "%s/%s", base, name);
    h_remove_tree(real); /* the log directory goes; the segment stays */
    int ok, rc = publish_past_file(q, &ok);
    cr_expect_eq(rc, -ENOENT, "publish into a lost log returned %d (%s) after %d successes", rc,
                 shmq_strerror(rc), ok);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);

    const char *name2 = h_qname("deleted");
    h_assert_rc(shmq_create(name2, &cfg, &q), 0);
    h_assert_rc(shmq_unlink(name2), 0); /* deleted under an open handle: segment and log */
    rc = publish_past_file(q, &ok);
    cr_expect_eq(rc, 0, "publish into a deleted queue returned %d (%s)", rc, shmq_strerror(rc));
    h_assert_rc(shmq_close(q), 0);
}

static int uid_nobody(uid_t *uid, gid_t *gid)
{
    struct passwd *pw = getpwnam("nobody");
    if (!pw)
        return -1;
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

/* Child: no HOME, no state directory variable, not root: no state directory at all. */
static int no_home_child(void *arg)
{
    const char *name = arg;
    unsetenv("SHMQ_STATE_DIR");
    unsetenv("HOME");
    unsetenv("XDG_STATE_HOME");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    if (rc != -ENOENT)
        return 10;
    cfg.durability = SHMQ_DURABILITY_NONE; /* no log: no state directory needed */
    if (shmq_create(name, &cfg, &q) != 0)
        return 11;
    shmq_close(q);
    shmq_unlink(name);
    return 0;
}

Test(logdir, no_home_means_no_state_directory_not_tmp, .fini = cleanup)
{
    const char *name = h_qname("nohome");
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (uid == 0 && uid_nobody(&uid, &gid) != 0)
        cr_skip_test("running as root and there is no user nobody to drop to");
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (getuid() == 0 && (setgid(gid) != 0 || setuid(uid) != 0))
            _exit(20);
        _exit(no_home_child((void *)name));
    }
    h_track(pid, -1);
    h_assert_child_ok(pid, 30000, "create without HOME");
}

Test(logdir, a_state_directory_others_can_write_is_refused, .fini = cleanup)
{
    const char *name = h_qname("openstate");
    const char *dir = tmp_dir(0777);
    char old[256];
    snprintf(old, sizeof old, "%s", h_state_dir_path());
    setenv("SHMQ_STATE_DIR", dir, 1);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q = NULL;
    int rc = shmq_create(name, &cfg, &q);
    cr_expect_eq(rc, -EPERM, "create in a world-writable state directory: %d (%s)", rc,
                 shmq_strerror(rc));
    uid_t uid;
    gid_t gid;
    if (geteuid() == 0 && uid_nobody(&uid, &gid) == 0) { /* someone else's directory */
        cr_assert_eq(chmod(dir, 0700), 0);
        cr_assert_eq(chown(dir, uid, gid), 0);
        rc = shmq_create(name, &cfg, &q);
        cr_expect_eq(rc, -EPERM, "create in another user's state directory: %d", rc);
    }
    setenv("SHMQ_STATE_DIR", old, 1);
    if (rc == 0)
        shmq_close(q);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
    return st.st_mode & 07777;
}

/* Child as another uid: open the shared queue, publish three messages and ack one, logged. */
static int other_user_child(void *arg)
{
    const char *name = arg;
    shmq_t *q;
    int rc = shmq_open(name, &q);
    if (rc)
        return 30 + (-rc & 0x1f);
    for (int i = 0; i < 3; i++)
        if ((rc = shmq_publish(q, "other", 5, NULL)) != 0)
            return 60 + (-rc & 0x1f);
    shmq_consumer_t *c; /* and one ack, logged too */
    shmq_msg_t m;
    if ((rc = shmq_consumer_open(q, "other", &c)) != 0 || (rc = shmq_receive(c, &m, 1000)) != 0 ||
        (rc = shmq_ack(c, &m)) != 0)
        return 90 + (-rc & 0x1f);
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(logdir, a_shared_queue_shares_its_log_with_another_user, .fini = cleanup)
{
    const char *name = h_qname("shared");
    const char *base = tmp_dir(0755);
    umask(022);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.mode = 0666;
    cfg.log_dir = base;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 1, "owner");
    char real[256], file[300];
    snprintf(real, sizeof real, "%s/%s", base, name);
    snprintf(file, sizeof file, "%s/wal.%010u", real, 0u);
    cr_expect_eq(mode_of(real), 0777u, "log directory mode %o", mode_of(real));
    cr_expect_eq(mode_of(file), 0666u, "log file mode %o", mode_of(file));

    uid_t uid;
    gid_t gid;
    if (geteuid() != 0 || uid_nobody(&uid, &gid) != 0) {
        h_assert_rc(shmq_close(q), 0);
        cr_skip_test("not root (or no user nobody): the second-uid half cannot run");
    }
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            _exit(20);
        _exit(other_user_child((void *)name));
    }
    h_track(pid, -1);
    h_assert_child_ok(pid, 30000, "publish as nobody into a shared queue");
    h_assert_rc(shmq_close(q), 0);
    /* what nobody published and acked was logged: 1 + 3 - 1 come back without the segment */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    cr_expect_eq(ready_of(q), 3u);
    h_assert_rc(shmq_close(q), 0);
}

Test(logdir, a_private_queue_refuses_a_log_directory_others_can_write, .fini = cleanup)
{
    const char *name = h_qname("openlog");
    const char *base = tmp_dir(0700);
    char real[256];
    snprintf(real, sizeof real, "%s/%s", base, name);
    cr_assert_eq(mkdir(real, 0700), 0);
    cr_assert_eq(chmod(real, 0777), 0);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.log_dir = base;
    shmq_t *q;
    /* create makes the directory its own mode again: then a planted world-writable bit is gone */
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    cr_expect_eq(mode_of(real), 0700u);
    h_assert_rc(shmq_close(q), 0);
    cr_assert_eq(chmod(real, 0777), 0); /* opened up afterwards: open refuses it */
    h_assert_rc(shmq_open(name, &q), -EPERM);
    cr_assert_eq(chmod(real, 0700), 0);
}
