/*
 * test_unlink.c - shmq_unlink() racing a recovery and a create of the same name (issue 14,
 * review R2). Every interleaving is forced with crash points in SIGSTOP mode and, where a
 * process must be blocked on the .recover flock, by waiting for it in /proc/locks: nothing is
 * left to the scheduler. The table of interleavings: docs/DESIGN.md, "Delete, create and
 * recovery of one name".
 *
 *  - R2-1: a recovery that opened .recover before a delete and waited for its lock got the lock
 *    of the unlinked file while a create of the same name held the new one, and bumped the new
 *    queue's generation: every publish of the new queue returned -EIDRM.
 *  - R2-2: a delete removed the segment before it took the lock: a recovery in between (the
 *    segment already lost, or a recovery holding the lock) rebuilt the queue being deleted;
 *    afterwards shmq_open said -ENOENT and shmq_create -EEXIST.
 *
 * After each scenario the name works again: a queue made by it publishes, receives, and after a
 * segment loss is rebuilt by shmq_recover() with its message.
 */
#include "torture.h"
#include "io.h"

#include <dirent.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

TestSuite(unlink, .init = t_setup, .fini = t_teardown, .timeout = 120);

#define WAIT_MS 30000

struct ul_shared {
    char name[SHMQ_NAME_MAX + 1];
    _Atomic int rc; /* the child's library result */
};

static void ul_config(shmq_config_t *cfg)
{
    shmq_config_init(cfg);
    cfg->capacity = 8;
    cfg->max_msg_size = 64;
}

/* ul_config with its log in a directory of its own, STATE/TAG-PID (made here): a custom
 * log_dir, whose queue the state directory finds by a pointer. */
static void ul_custom_config(shmq_config_t *cfg, char *logdir, size_t size, const char *tag)
{
    const char *state = getenv("SHMQ_STATE_DIR");
    cr_assert(state && state[0] == '/', "SHMQ_STATE_DIR must be an absolute path");
    snprintf(logdir, size, "%s/%s-%d", state, tag, (int)getpid());
    mkdir(logdir, 0700);
    ul_config(cfg);
    cfg->log_dir = logdir;
}

static struct ul_shared *ul_setup(const char *tag)
{
    struct ul_shared *sh = t_shared(sizeof *sh);
    snprintf(sh->name, sizeof sh->name, "%s", t_qname(tag));
    atomic_store(&sh->rc, 1);
    return sh;
}

/* ---- the children: one library call each, its result in sh->rc */

static int recover_main(void *arg)
{
    struct ul_shared *sh = *(struct ul_shared **)arg;
    atomic_store(&sh->rc, shmq_recover(sh->name, NULL, NULL));
    return 0;
}

static int open_main(void *arg)
{
    struct ul_shared *sh = *(struct ul_shared **)arg;
    shmq_t *q;
    int rc = shmq_open(sh->name, &q);
    if (rc == 0)
        shmq_close(q);
    atomic_store(&sh->rc, rc);
    return 0;
}

/* A create that then publishes one message, "late" (rc: the create's, else the publish's). */
static int create_publish_main(void *arg)
{
    struct ul_shared *sh = *(struct ul_shared **)arg;
    shmq_config_t cfg;
    ul_config(&cfg);
    shmq_t *q;
    int rc = shmq_create(sh->name, &cfg, &q);
    if (rc == 0) {
        rc = shmq_publish(q, "late", 4, NULL);
        shmq_close(q);
    }
    atomic_store(&sh->rc, rc);
    return 0;
}

/* An open that then publishes one message, "late" (rc: the open's, else the publish's). */
static int open_publish_main(void *arg)
{
    struct ul_shared *sh = *(struct ul_shared **)arg;
    shmq_t *q;
    int rc = shmq_open(sh->name, &q);
    if (rc == 0) {
        rc = shmq_publish(q, "late", 4, NULL);
        shmq_close(q);
    }
    atomic_store(&sh->rc, rc);
    return 0;
}

static int unlink_main(void *arg)
{
    struct ul_shared *sh = *(struct ul_shared **)arg;
    atomic_store(&sh->rc, shmq_unlink(sh->name));
    return 0;
}

static int create_main(void *arg)
{
    struct ul_shared *sh = *(struct ul_shared **)arg;
    shmq_config_t cfg;
    ul_config(&cfg);
    shmq_t *q;
    int rc = shmq_create(sh->name, &cfg, &q);
    if (rc == 0)
        shmq_close(q);
    atomic_store(&sh->rc, rc);
    return 0;
}

/* ---- checks */

/* The queue's log directory (STATE/NAME: these queues have no log_dir). */
static void ul_dir(const char *name, char *buf, size_t size)
{
    const char *state = getenv("SHMQ_STATE_DIR");
    cr_assert(state && *state, "SHMQ_STATE_DIR is not set (run through ctest)");
    snprintf(buf, size, "%s/%s", state, name);
}

/* The inode of NAME's .recover now (0 if it has none). */
static ino_t ul_recover_ino(const char *name)
{
    char path[PATH_MAX];
    ul_dir(name, path, sizeof path);
    strncat(path, "/.recover", sizeof path - strlen(path) - 1);
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* Is pid blocked waiting for a flock of inode ino? (/proc/locks: "N: -> FLOCK ... PID MAJ:MIN:INO") */
static bool ul_blocked_on(pid_t pid, ino_t ino)
{
    FILE *f = fopen("/proc/locks", "r");
    cr_assert(f, "/proc/locks: %s", strerror(errno));
    char line[256];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        const char *w = strstr(line, "-> FLOCK");
        int p;
        unsigned maj, min;
        unsigned long i;
        if (w && sscanf(w, "-> FLOCK %*s %*s %d %x:%x:%lu", &p, &maj, &min, &i) == 4)
            found = p == pid && i == (unsigned long)ino;
    }
    fclose(f);
    return found;
}

/* Wait (bounded) until pid is blocked on the flock of inode ino, or has ended (then false). */
static bool ul_wait_blocked(pid_t pid, ino_t ino)
{
    for (int64_t end = t_now_ms() + WAIT_MS; t_now_ms() < end; t_sleep_ms(2)) {
        if (ul_blocked_on(pid, ino))
            return true;
        siginfo_t si = {0}; /* left to t_wait() to reap */
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return false;
    }
    cr_assert_fail("pid %d neither blocked on the .recover lock nor ended", (int)pid);
    return false;
}

static void ul_stopped(pid_t pid, const char *what)
{
    int st = 0;
    cr_assert_eq(t_wait(pid, WAIT_MS, WUNTRACED, &st), 0, "%s never stopped", what);
    cr_assert(WIFSTOPPED(st), "%s ended instead of stopping at its crash point", what);
}

static void ul_publish_one(const char *name, const char *msg)
{
    shmq_t *q;
    int rc = shmq_open(name, &q);
    cr_assert_eq(rc, 0, "open %s: %s", name, shmq_strerror(rc));
    rc = shmq_publish(q, msg, strlen(msg), NULL);
    cr_assert_eq(rc, 0, "publish: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
}

/* The queue NAME (made again, or never deleted) works: a publish is received and acked, a
 * message left unacked comes back after a segment loss through shmq_recover(). */
static void ul_works(const char *name)
{
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    int rc = shmq_open(name, &q);
    cr_assert_eq(rc, 0, "open %s: %s", name, shmq_strerror(rc));
    rc = shmq_publish(q, "ping", 4, NULL);
    cr_assert_eq(rc, 0, "publish into the queue made again: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_consumer_open(q, "C", &c), 0);
    rc = shmq_receive(c, &m, 5000);
    cr_assert_eq(rc, 0, "receive: %s", shmq_strerror(rc));
    cr_assert(m.len == 4 && memcmp(m.data, "ping", 4) == 0);
    rc = shmq_ack(c, &m);
    cr_assert_eq(rc, 0, "ack: %s", shmq_strerror(rc));
    rc = shmq_publish(q, "kept", 4, NULL);
    cr_assert_eq(rc, 0, "publish: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    rc = shmq_recover(name, NULL, &rep);
    cr_assert_eq(rc, 0, "recover after a segment loss: %s", shmq_strerror(rc));
    cr_assert_eq(rep.restored, 1);
    cr_assert_eq(shmq_open(name, &q), 0);
    cr_assert_eq(shmq_consumer_open(q, "C", &c), 0);
    rc = shmq_receive(c, &m, 5000);
    cr_assert_eq(rc, 0, "the rebuilt queue lost its message: %s", shmq_strerror(rc));
    cr_assert(m.len == 4 && memcmp(m.data, "kept", 4) == 0);
    cr_assert_eq(shmq_ack(c, &m), 0);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
}

/* NAME is deleted whole: no open finds it, a create makes it again (and it works). */
static void ul_deleted_whole(const char *name)
{
    shmq_t *q;
    int rc = shmq_open(name, &q);
    cr_assert_eq(rc, -ENOENT, "open of a deleted queue: %s", shmq_strerror(rc));
    shmq_config_t cfg;
    ul_config(&cfg);
    rc = shmq_create(name, &cfg, &q);
    cr_assert_eq(rc, 0, "create after the delete (a half-deleted queue?): %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
    ul_works(name);
}

static void ul_make(const char *name)
{
    shmq_config_t cfg;
    ul_config(&cfg);
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
    ul_publish_one(name, "old");
}

#define SKIP_WITHOUT_CRASH_POINTS()                                                                \
    do {                                                                                           \
    } while (0)
#ifndef SHMQ_CRASH_POINTS
#undef SKIP_WITHOUT_CRASH_POINTS
#define SKIP_WITHOUT_CRASH_POINTS() cr_skip_test("the library was built without SHMQ_CRASH_POINTS")
#endif

Test(unlink, r2_1_a_recovery_waiting_across_a_delete_leaves_the_new_queue_alone)
{
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *rs = ul_setup("ulR1"), *cs = t_shared(sizeof *cs);
    snprintf(cs->name, sizeof cs->name, "%s", rs->name);
    atomic_store(&cs->rc, 1);
    ul_make(rs->name);
    /* R opened the old .recover and stops before its flock */
    pid_t r = t_spawn_crash(recover_main, &rs, sizeof rs, "lock_before_flock", 1, 0);
    ul_stopped(r, "recovery R");
    cr_assert_eq(shmq_unlink(rs->name), 0);
    /* C makes the name again and stops under its (new) lock, generation made, no segment */
    pid_t c = t_spawn_crash(create_main, &cs, sizeof cs, "create_before_segment", 1, 0);
    ul_stopped(c, "creator C");
    ino_t ino = ul_recover_ino(cs->name);
    cr_assert_neq(ino, 0);
    kill(r, SIGCONT);
    /* R either waits for C's lock (right) or ran on the old file's lock while C holds the new
     * one (R2-1: it bumped C's generation) */
    bool waited = ul_wait_blocked(r, ino);
    kill(c, SIGCONT);
    t_assert_exit0(c, WAIT_MS, "creator C");
    t_assert_exit0(r, WAIT_MS, "recovery R");
    cr_assert_eq(atomic_load(&cs->rc), 0, "create: %s", shmq_strerror(atomic_load(&cs->rc)));
    ul_works(rs->name); /* R2-1: every publish of the new queue got -EIDRM */
    cr_assert_eq(atomic_load(&rs->rc), -EEXIST, "R's recovery of the queue made again: %s",
                 shmq_strerror(atomic_load(&rs->rc)));
    cr_assert(waited, "R did not wait for the new queue's lock");
}

Test(unlink, r2_1_a_recovery_waiting_across_a_delete_finds_it_deleted)
{
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *rs = ul_setup("ulR1d");
    ul_make(rs->name);
    pid_t r = t_spawn_crash(recover_main, &rs, sizeof rs, "lock_before_flock", 1, 0);
    ul_stopped(r, "recovery R");
    cr_assert_eq(shmq_unlink(rs->name), 0);
    kill(r, SIGCONT);
    t_assert_exit0(r, WAIT_MS, "recovery R");
    cr_assert_eq(atomic_load(&rs->rc), -ENOENT, "R's recovery of the deleted queue: %s",
                 shmq_strerror(atomic_load(&rs->rc)));
    char dir[PATH_MAX];
    ul_dir(rs->name, dir, sizeof dir);
    cr_assert(access(dir, F_OK) != 0, "R left a log directory of the deleted queue");
    ul_deleted_whole(rs->name);
}

Test(unlink, r2_2_a_rebuild_before_the_deletes_lock_is_deleted_with_the_queue)
{
    /* The segment is lost; the delete looked the log up and stops before its flock; an open
     * rebuilds the queue meanwhile (before the delete: it may). Before R2-2 the delete had
     * removed the (missing) segment before that point, so the rebuilt one stayed: open said
     * -ENOENT (no log), create -EEXIST (a segment). */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *us = ul_setup("ulR2a");
    ul_make(us->name);
    cr_assert_eq(shmq_unlink_segment(us->name), 0);
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "lock_before_flock", 1, 0);
    ul_stopped(u, "delete U");
    shmq_t *q;
    int rc = shmq_open(us->name, &q); /* rebuilds */
    cr_assert_eq(rc, 0, "open (rebuild) before the delete: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
    kill(u, SIGCONT);
    t_assert_exit0(u, WAIT_MS, "delete U");
    cr_assert_eq(atomic_load(&us->rc), 0, "delete: %s", shmq_strerror(atomic_load(&us->rc)));
    ul_deleted_whole(us->name);
}

Test(unlink, r2_2_a_delete_waiting_for_a_rebuild_deletes_what_it_built)
{
    /* The segment is lost; a consumer's open rebuilds it and stops after E3, holding the lock;
     * the delete comes and waits for the lock. Before R2-2 it had removed the (missing) segment
     * first, so the rebuilt one stayed when the log went. */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *os = ul_setup("ulR2b"), *us = t_shared(sizeof *us);
    snprintf(us->name, sizeof us->name, "%s", os->name);
    atomic_store(&us->rc, 1);
    ul_make(os->name);
    cr_assert_eq(shmq_unlink_segment(os->name), 0);
    pid_t o = t_spawn_crash(open_main, &os, sizeof os, "recover_after_bump", 1, 0);
    ul_stopped(o, "opener O (recovering)");
    ino_t ino = ul_recover_ino(os->name);
    cr_assert_neq(ino, 0);
    pid_t u = t_spawn(unlink_main, &us, sizeof us);
    cr_assert(ul_wait_blocked(u, ino), "the delete did not wait for the rebuild's lock");
    kill(o, SIGCONT);
    t_assert_exit0(o, WAIT_MS, "opener O");
    t_assert_exit0(u, WAIT_MS, "delete U");
    /* O's open maps the segment it rebuilt after letting the lock go: before the delete (0, a
     * handle of the deleted queue) or after it (-ENOENT) */
    int orc = atomic_load(&os->rc);
    cr_assert(orc == 0 || orc == -ENOENT, "open (rebuild): %s", shmq_strerror(orc));
    cr_assert_eq(atomic_load(&us->rc), 0, "delete: %s", shmq_strerror(atomic_load(&us->rc)));
    ul_deleted_whole(os->name);
}

Test(unlink, a_delete_racing_a_create_leaves_no_log_behind)
{
    /* The creator made its segment and stops before it points to and maps its log; a delete
     * comes. It used to run whole (the create had let its lock go): the creator then made the
     * log directory again with a live head, its publish went there, and a later open rebuilt
     * the deleted queue from it. Now the creator keeps its lock until it is attached, the
     * delete waits and deletes the whole queue. */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *cs = ul_setup("ulCU"), *us = t_shared(sizeof *us);
    snprintf(us->name, sizeof us->name, "%s", cs->name);
    atomic_store(&us->rc, 1);
    pid_t c = t_spawn_crash(create_publish_main, &cs, sizeof cs, "create_before_attach", 1, 0);
    ul_stopped(c, "creator C");
    ino_t ino = ul_recover_ino(cs->name);
    cr_assert_neq(ino, 0);
    pid_t u = t_spawn(unlink_main, &us, sizeof us);
    bool waited = ul_wait_blocked(u, ino); /* or it ran whole (before the fix) */
    kill(c, SIGCONT);
    t_assert_exit0(c, WAIT_MS, "creator C");
    t_assert_exit0(u, WAIT_MS, "delete U");
    cr_assert_eq(atomic_load(&us->rc), 0, "delete: %s", shmq_strerror(atomic_load(&us->rc)));
    /* the create returned 0 before the delete; its publish is as good as done before it */
    cr_assert_eq(atomic_load(&cs->rc), 0, "create, publish: %s", shmq_strerror(atomic_load(&cs->rc)));
    ul_deleted_whole(cs->name);
    cr_assert(waited, "the delete did not wait for the create's lock");
}

Test(unlink, a_create_waiting_across_a_delete_makes_the_queue)
{
    /* The creator made the log directory and opened the old queue's .recover, and stops before
     * its flock; the old queue is deleted. Its lock is then on the unlinked file, the name is
     * gone with the directory (-ENOENT): it used to fail with "no such queue"; now it makes
     * the directory again and creates. */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *cs = ul_setup("ulCW");
    shmq_config_t cfg;
    ul_config(&cfg);
    shmq_t *q;
    int rc = shmq_create(cs->name, &cfg, &q); /* nothing published: no log file, a create may */
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
    pid_t c = t_spawn_crash(create_main, &cs, sizeof cs, "lock_before_flock", 1, 0);
    ul_stopped(c, "creator C");
    cr_assert_eq(shmq_unlink(cs->name), 0);
    kill(c, SIGCONT);
    t_assert_exit0(c, WAIT_MS, "creator C");
    rc = atomic_load(&cs->rc);
    cr_assert_eq(rc, 0, "a create after a delete: %s", shmq_strerror(rc));
    ul_works(cs->name);
}

Test(unlink, an_open_that_mapped_the_segment_before_a_delete_makes_no_head)
{
    /* The opener mapped the segment and stops before it opens the log; the delete removes the
     * segment and every file of the log (.recover, then the head) and stops before its rmdir,
     * holding its lock. The opener finds no head: it used to make one (and .recover) there,
     * live in the deleted queue's generation: the delete's rmdir failed and the opener's
     * publish made a log file, from which the next open rebuilt the deleted queue. */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *os = ul_setup("ulOD"), *us = t_shared(sizeof *us);
    snprintf(us->name, sizeof us->name, "%s", os->name);
    atomic_store(&us->rc, 1);
    ul_make(os->name);
    pid_t o = t_spawn_crash(open_publish_main, &os, sizeof os, "open_before_attach", 1, 0);
    ul_stopped(o, "opener O");
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "remove_before_rmdir", 1, 0);
    ul_stopped(u, "delete U");
    kill(o, SIGCONT);
    t_assert_exit0(o, WAIT_MS, "opener O");
    kill(u, SIGCONT);
    t_assert_exit0(u, WAIT_MS, "delete U");
    int orc = atomic_load(&os->rc);
    cr_assert_eq(atomic_load(&us->rc), 0, "delete: %s", shmq_strerror(atomic_load(&us->rc)));
    cr_assert_eq(orc, -ENOENT, "the opener of a queue being deleted: %s", shmq_strerror(orc));
    ul_deleted_whole(os->name);
}

/* ---- review3 F-2a: a delete racing openers, not forced: many rounds */

struct ul_race {
    char name[SHMQ_NAME_MAX + 1];
    _Atomic int stop;
    _Atomic long opens; /* the opener's shmq_open calls so far */
};

/* Open (and so recover, the segment being gone) the name, publish, close, until told to stop. */
static int race_opener_main(void *arg)
{
    struct ul_race *r = *(struct ul_race **)arg;
    while (!atomic_load(&r->stop)) {
        shmq_t *q;
        if (shmq_open(r->name, &q) == 0) {
            shmq_publish(q, "after-delete?", 13, NULL); /* a holder of a deleted queue may */
            shmq_close(q);
        }
        atomic_fetch_add(&r->opens, 1);
    }
    return 0;
}

Test(unlink, a_delete_racing_openers_deletes_for_good, .timeout = 180)
{
    /* A locker that made .recover again in the directory a delete was removing (between its
     * unlink of .recover and its rmdir) made the delete fail -ENOTEMPTY (216 of 4000 rounds),
     * and an opener that had mapped the segment could log into it: the next open rebuilt the
     * deleted queue. The delete now renames the directory away first (a tombstone). Bounded:
     * 2000 rounds or 20 s, whichever comes first. */
    struct ul_race *r = t_shared(sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", t_qname("ulRace"));
    pid_t o = t_spawn(race_opener_main, &r, sizeof r);
    for (int64_t end = t_now_ms() + WAIT_MS; atomic_load(&r->opens) < 10; t_sleep_ms(2))
        cr_assert(t_now_ms() < end, "the opener never ran");
    int rounds = 0, failed = 0, first_rc = 0;
    const char *what = "";
    for (int64_t end = t_now_ms() + 20000; rounds < 2000 && t_now_ms() < end && !failed;) {
        rounds++;
        shmq_config_t cfg;
        ul_config(&cfg);
        shmq_t *q;
        int rc = shmq_create(r->name, &cfg, &q);
        if (rc != 0) {
            failed = rounds, first_rc = rc, what = "create after a delete";
            break;
        }
        shmq_close(q);
        if ((rc = shmq_unlink(r->name)) != 0) {
            failed = rounds, first_rc = rc, what = "delete";
            break;
        }
        if ((rc = shmq_open(r->name, &q)) != -ENOENT) {
            if (rc == 0)
                shmq_close(q);
            failed = rounds, first_rc = rc, what = "open after the delete (want -ENOENT)";
        }
    }
    atomic_store(&r->stop, 1);
    t_assert_exit0(o, WAIT_MS, "opener");
    cr_assert_eq(failed, 0, "round %d of %d: %s: %d %s", failed, rounds, what, first_rc,
                 shmq_strerror(first_rc));
    cr_log_info("%d rounds, %ld opens beside them", rounds, atomic_load(&r->opens));
    ul_deleted_whole(r->name);
}

/* ---- review3 F-2b: a delete that cannot take the lock */

Test(unlink, a_delete_that_cannot_lock_deletes_nothing)
{
    /* The delete went on without its lock: the head unfenced, so a recovery beside it (the
     * segment gone) could rebuild part of the queue from the files not yet removed. Now it
     * fails with the lock's error and deletes nothing: the queue is whole, its message in it. */
    SKIP_WITHOUT_CRASH_POINTS();
    const char *name = t_qname("ulNoLock");
    ul_make(name); /* one message, "old" */
    cr_assert_eq(io_fault_arm(IO_FLOCK, 1, ENOLCK), 0);
    int rc = shmq_unlink(name);
    io_fault_disarm_all();
    cr_assert_eq(rc, -ENOLCK, "a delete without its lock: %s", shmq_strerror(rc));
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    rc = shmq_open(name, &q);
    cr_assert_eq(rc, 0, "the queue after a delete that failed: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_consumer_open(q, "C", &c), 0);
    rc = shmq_receive(c, &m, 5000);
    cr_assert_eq(rc, 0, "its message: %s", shmq_strerror(rc));
    cr_assert(m.len == 3 && memcmp(m.data, "old", 3) == 0);
    cr_assert_eq(shmq_ack(c, &m), 0);
    cr_assert_eq(shmq_consumer_close(c), 0);
    cr_assert_eq(shmq_close(q), 0);
    rc = shmq_unlink(name);
    cr_assert_eq(rc, 0, "the delete once it can lock: %s", shmq_strerror(rc));
    ul_deleted_whole(name);
}

/* ---- tombstones left behind (logtomb.h) */

/* How many tombstones of NAME the state directory holds (".deleted~NAME~PID~HEX"). */
/* Tombstones of name in LOG_DIR dir. */
static int ul_tombstones_in(const char *state, const char *name)
{
    char prefix[SHMQ_NAME_MAX + 16];
    snprintf(prefix, sizeof prefix, ".deleted~%s~", name);
    DIR *d = opendir(state);
    cr_assert(d, "%s: %s", state, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static int ul_tombstones(const char *name)
{
    const char *state = getenv("SHMQ_STATE_DIR");
    cr_assert(state && *state, "SHMQ_STATE_DIR is not set (run through ctest)");
    return ul_tombstones_in(state, name);
}

/* After a delete that left its tombstone: the name is free (open -ENOENT, create 0), and the
 * next delete removes the new queue and sweeps the tombstone. */
static void ul_tombstone_swept(const char *name)
{
    cr_assert_eq(ul_tombstones(name), 1, "the delete left no tombstone");
    shmq_t *q;
    int rc = shmq_open(name, &q);
    cr_assert_eq(rc, -ENOENT, "open with a tombstone left: %s", shmq_strerror(rc));
    ul_make(name);
    rc = shmq_unlink(name);
    cr_assert_eq(rc, 0, "the next delete: %s", shmq_strerror(rc));
    cr_assert_eq(ul_tombstones(name), 0, "the next delete did not sweep the tombstone");
    ul_deleted_whole(name);
}

Test(unlink, a_delete_that_cannot_remove_its_tombstone_frees_the_name)
{
    /* The first unlink in the log fails: the delete says so (F4), the tombstone stays, but the
     * name is free: a create makes a new queue at once (it used to be -EEXIST until a second
     * delete), and a second delete of the name (here of the new queue) sweeps it. */
    SKIP_WITHOUT_CRASH_POINTS();
    const char *name = t_qname("ulTombF");
    ul_make(name);
    cr_assert_eq(io_fault_arm(IO_UNLINK, 1, EACCES), 0);
    int rc = shmq_unlink(name);
    io_fault_disarm_all();
    cr_assert_eq(rc, -EACCES, "a delete whose removal failed: %s", shmq_strerror(rc));
    ul_tombstone_swept(name);
}

Test(unlink, a_delete_killed_while_removing_leaves_a_tombstone_the_next_delete_sweeps)
{
    /* killed after the rename, before its rmdir: the tombstone's owner is gone */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *us = ul_setup("ulTombK");
    ul_make(us->name);
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "remove_before_rmdir", 0, 0);
    int st = 0;
    cr_assert_eq(t_wait(u, WAIT_MS, 0, &st), 0, "delete U never ended");
    cr_assert(WIFSIGNALED(st), "delete U was not killed at its crash point");
    ul_tombstone_swept(us->name);
}

/* ---- review4 R4-1: a create during a delete's removal keeps the state directory's pointer */

Test(unlink, a_create_during_a_deletes_removal_is_found_by_name)
{
    /* The delete renamed LOG/NAME away, then (stopped here) a create of the name with the same
     * log_dir made LOG/NAME again and kept the pointer STATE/NAME -> LOG/NAME; the delete, going
     * on, removed that pointer: after a reboot (segment gone) shmq_open said -ENOENT and the
     * acknowledged message was found only by an explicit shmq_recover(NAME, LOG). The pointer
     * now goes before the rename. */
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *us = ul_setup("ulPtr");
    char logdir[PATH_MAX];
    shmq_config_t cfg;
    ul_custom_config(&cfg, logdir, sizeof logdir, "custom");
    shmq_t *q;
    int rc = shmq_create(us->name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "remove_before_rmdir", 1, 0);
    ul_stopped(u, "delete U");
    rc = shmq_create(us->name, &cfg, &q); /* the name is free: a new queue, same log_dir */
    cr_assert_eq(rc, 0, "create during the delete's removal: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_publish(q, "kept", 4, NULL), 0);
    cr_assert_eq(shmq_close(q), 0);
    kill(u, SIGCONT);
    t_assert_exit0(u, WAIT_MS, "delete U");
    cr_assert_eq(atomic_load(&us->rc), 0, "delete: %s", shmq_strerror(atomic_load(&us->rc)));
    cr_assert_eq(shmq_unlink_segment(us->name), 0); /* a reboot */
    rc = shmq_open(us->name, &q);
    cr_assert_eq(rc, 0, "the new queue is not found by name after a reboot: %s",
                 shmq_strerror(rc));
    shmq_stats_t st;
    cr_assert_eq(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready, 1, "the new queue's message after the rebuild: %u ready", st.ready);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(us->name), 0);
}

Test(unlink, a_delete_called_again_after_a_failed_removal_sweeps_a_custom_log_dirs_tombstone)
{
    /* a6c45a4 removes the state directory's pointer before the rename; a removal that then
     * failed (one file could not be unlinked) returned its error, and shmq.h says to call again
     * once the cause is gone. With the log in a custom log_dir that second call found neither
     * segment nor pointer: -ENOENT, and the tombstone (the whole log) stayed in LOG_DIR. */
    SKIP_WITHOUT_CRASH_POINTS();
    const char *name = t_qname("ulPtrF");
    char logdir[PATH_MAX];
    shmq_config_t cfg;
    ul_custom_config(&cfg, logdir, sizeof logdir, "customF");
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_publish(q, "old", 3, NULL), 0);
    cr_assert_eq(shmq_close(q), 0);
    /* the first unlink is the state directory's pointer's; the second, a file of the log */
    cr_assert_eq(io_fault_arm(IO_UNLINK, 2, EACCES), 0);
    rc = shmq_unlink(name);
    io_fault_disarm_all();
    cr_assert_eq(rc, -EACCES, "a delete whose removal failed: %s", shmq_strerror(rc));
    cr_assert_eq(ul_tombstones_in(logdir, name), 1, "the delete left no tombstone");
    rc = shmq_unlink(name); /* the cause is gone: called again */
    cr_assert_eq(rc, 0, "the delete called again: %s", shmq_strerror(rc));
    cr_assert_eq(ul_tombstones_in(logdir, name), 0,
                 "the delete called again left the tombstone of the log in %s", logdir);
    /* the name works again with that log_dir */
    rc = shmq_create(name, &cfg, &q);
    cr_assert_eq(rc, 0, "create after the delete: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(name), 0);
}

/* Killed between the pointer's removal and the rename: the segment is gone, the head fenced,
 * the state directory no longer points to the custom log_dir. A second delete finds nothing
 * (-ENOENT: the queue is deleted), and before this a create of the name with that log_dir said
 * -EEXIST for good (a log was there that nobody could remove but by hand). The create now
 * finishes the delete: the old log goes, none of its messages comes back, and the name works. */
Test(unlink, a_delete_killed_before_its_rename_is_finished_by_the_next_create)
{
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *us = ul_setup("ulBury");
    char logdir[PATH_MAX];
    shmq_config_t cfg;
    ul_custom_config(&cfg, logdir, sizeof logdir, "customB");
    shmq_t *q;
    int rc = shmq_create(us->name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_publish(q, "old", 3, NULL), 0);
    cr_assert_eq(shmq_close(q), 0);
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "unlink_before_bury", 0, 0);
    int st = 0;
    cr_assert_eq(t_wait(u, WAIT_MS, 0, &st), 0, "delete U never ended");
    cr_assert(WIFSIGNALED(st), "delete U was not killed at its crash point");
    rc = shmq_open(us->name, &q);
    cr_assert_eq(rc, -ENOENT, "the half-deleted queue opened: %s", shmq_strerror(rc));
    rc = shmq_create(us->name, &cfg, &q);
    cr_assert_eq(rc, 0, "create after a delete killed before its rename: %s", shmq_strerror(rc));
    shmq_stats_t sst;
    cr_assert_eq(shmq_stats(q, &sst), 0);
    cr_assert_eq(sst.ready, 0, "the deleted queue's message came back");
    cr_assert_eq(shmq_publish(q, "new", 3, NULL), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(ul_tombstones_in(logdir, us->name), 0, "a tombstone was left");
    cr_assert_eq(shmq_unlink_segment(us->name), 0); /* a reboot: the new queue is rebuilt */
    rc = shmq_open(us->name, &q);
    cr_assert_eq(rc, 0, "the new queue after a reboot: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_stats(q, &sst), 0);
    cr_assert_eq(sst.ready, 1, "only the new queue's message: %u ready", sst.ready);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(us->name), 0);
}

/* A create of a name whose queue exists answers -EEXIST at once, even while another process
 * holds the log's lock and is stopped there (a rebuild, or a maintainer's retention): only a
 * log whose head a delete fenced is locked to be finished. f0e316b took the exclusive lock
 * before looking at the head, so that create waited for the stopped holder, for good (review10:
 * a stopped peer stalled a caller that did not wait before). */
Test(unlink, a_create_of_an_existing_name_does_not_wait_for_a_stopped_lock_holder)
{
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *rs = ul_setup("ulHeld"), *cs = t_shared(sizeof *cs);
    snprintf(cs->name, sizeof cs->name, "%s", rs->name);
    atomic_store(&cs->rc, 1);
    shmq_config_t cfg;
    ul_config(&cfg);
    shmq_t *q;
    int rc = shmq_create(rs->name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_publish(q, "kept", 4, NULL), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink_segment(rs->name), 0); /* lost: the rebuild takes the lock */
    pid_t r = t_spawn_crash(recover_main, &rs, sizeof rs, "recover_after_bump", 1, 0);
    ul_stopped(r, "recovery R");
    pid_t c = t_spawn(create_main, &cs, sizeof cs);
    cr_assert(!ul_wait_blocked(c, ul_recover_ino(rs->name)),
              "a create of an existing name waits for the stopped recovery's lock");
    t_assert_exit0(c, WAIT_MS, "creator C");
    cr_assert_eq(atomic_load(&cs->rc), -EEXIST, "create: %s", shmq_strerror(atomic_load(&cs->rc)));
    kill(r, SIGCONT);
    t_assert_exit0(r, WAIT_MS, "recovery R");
    cr_assert_eq(atomic_load(&rs->rc), 0, "recovery: %s", shmq_strerror(atomic_load(&rs->rc)));
    rc = shmq_open(rs->name, &q);
    cr_assert_eq(rc, 0, "open: %s", shmq_strerror(rc));
    shmq_stats_t sst;
    cr_assert_eq(shmq_stats(q, &sst), 0);
    cr_assert_eq(sst.ready, 1, "the rebuilt queue's message: %u ready", sst.ready);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(rs->name), 0);
}

/* Killed between fencing the head and removing the state directory's pointer: the pointer
 * STATE/NAME -> LOG_DIR/NAME is still there, so the queue is found by name and a second delete
 * finishes it. A create of the name without a log_dir looks at STATE/NAME, which is that
 * pointer: it must say -EEXIST and leave it (f0e316b's finish renamed the link itself into a
 * tombstone it could not remove: the create failed, the pointer was gone, a second delete said
 * -ENOENT and the fenced log stayed behind with nobody to find it). */
Test(unlink, a_create_through_a_killed_deletes_pointer_leaves_it_to_the_second_delete)
{
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared *us = ul_setup("ulPoint");
    char logdir[PATH_MAX];
    shmq_config_t cfg, plain;
    ul_custom_config(&cfg, logdir, sizeof logdir, "customP");
    ul_config(&plain);
    shmq_t *q;
    int rc = shmq_create(us->name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_publish(q, "old", 3, NULL), 0);
    cr_assert_eq(shmq_close(q), 0);
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "unlink_before_unpoint", 0, 0);
    int st = 0;
    cr_assert_eq(t_wait(u, WAIT_MS, 0, &st), 0, "delete U never ended");
    cr_assert(WIFSIGNALED(st), "delete U was not killed at its crash point");
    rc = shmq_create(us->name, &plain, &q);
    cr_assert_eq(rc, -EEXIST, "a create through the killed delete's pointer: %s",
                 shmq_strerror(rc));
    rc = shmq_unlink(us->name);
    cr_assert_eq(rc, 0, "the second delete: %s", shmq_strerror(rc));
    char dir[PATH_MAX + SHMQ_NAME_MAX + 2];
    snprintf(dir, sizeof dir, "%s/%s", logdir, us->name);
    cr_assert_neq(access(dir, F_OK), 0, "the deleted queue's log directory is left");
    cr_assert_eq(ul_tombstones_in(logdir, us->name), 0, "a tombstone was left");
    rc = shmq_create(us->name, &plain, &q);
    cr_assert_eq(rc, 0, "create after the delete: %s", shmq_strerror(rc));
    shmq_stats_t sst;
    cr_assert_eq(shmq_stats(q, &sst), 0);
    cr_assert_eq(sst.ready, 0, "the deleted queue's message came back");
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_unlink(us->name), 0);
}

/* A create of a shared queue (mode 0660) in a custom log_dir, its result in sh->rc. */
struct ul_shared_create {
    struct ul_shared sh;
    char logdir[PATH_MAX];
};

static int create_shared_main(void *arg)
{
    struct ul_shared_create *sc = *(struct ul_shared_create **)arg;
    shmq_config_t cfg;
    ul_config(&cfg);
    cfg.log_dir = sc->logdir;
    cfg.mode = 0660;
    shmq_t *q;
    int rc = shmq_create(sc->sh.name, &cfg, &q);
    if (rc == 0)
        shmq_close(q);
    atomic_store(&sc->sh.rc, rc);
    return 0;
}

/* Two creates of a shared queue after a delete killed before its rename: B opened the fenced
 * directory's .recover to finish the delete and waits (lock_before_flock); A finished it, made
 * the new directory and stops before its lock (create_before_lock). B's lock then finds its file
 * unlinked and looks again: it must not make .recover itself (it did, with mode 0600), so that
 * the queue's .recover has the queue's mode: group members lock it for their retention and
 * rebuilds (with 0600 their retention never deleted a file, "a recovery is at work"). */
Test(unlink, a_create_finishing_a_delete_leaves_the_new_lock_file_its_mode)
{
    SKIP_WITHOUT_CRASH_POINTS();
    struct ul_shared_create *b = t_shared(sizeof *b), *a = t_shared(sizeof *a);
    snprintf(b->sh.name, sizeof b->sh.name, "%s", t_qname("ulMode"));
    atomic_store(&b->sh.rc, 1);
    char logdir[PATH_MAX];
    shmq_config_t cfg;
    ul_custom_config(&cfg, logdir, sizeof logdir, "customM");
    cr_assert_eq(chmod(logdir, 0750), 0); /* the group reaches the shared log */
    snprintf(b->logdir, sizeof b->logdir, "%s", logdir);
    *a = *b;
    cfg.mode = 0660;
    shmq_t *q;
    int rc = shmq_create(b->sh.name, &cfg, &q);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    cr_assert_eq(shmq_publish(q, "old", 3, NULL), 0); /* a log file: the killed delete's log */
    cr_assert_eq(shmq_close(q), 0);
    struct ul_shared *us = &b->sh;
    pid_t u = t_spawn_crash(unlink_main, &us, sizeof us, "unlink_before_bury", 0, 0);
    int st = 0;
    cr_assert_eq(t_wait(u, WAIT_MS, 0, &st), 0, "delete U never ended");
    cr_assert(WIFSIGNALED(st), "delete U was not killed at its crash point");
    pid_t pb = t_spawn_crash(create_shared_main, &b, sizeof b, "lock_before_flock", 1, 0);
    ul_stopped(pb, "creator B");
    pid_t pa = t_spawn_crash(create_shared_main, &a, sizeof a, "create_before_lock", 1, 0);
    ul_stopped(pa, "creator A");
    kill(pb, SIGCONT);
    t_assert_exit0(pb, WAIT_MS, "creator B");
    kill(pa, SIGCONT);
    t_assert_exit0(pa, WAIT_MS, "creator A");
    int rb = atomic_load(&b->sh.rc), ra = atomic_load(&a->sh.rc);
    cr_assert((rb == 0 && ra == -EEXIST) || (ra == 0 && rb == -EEXIST), "creates: B %s, A %s",
              shmq_strerror(rb), shmq_strerror(ra));
    char path[PATH_MAX + SHMQ_NAME_MAX + 16];
    snprintf(path, sizeof path, "%s/%s/.recover", logdir, b->sh.name);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(sb.st_mode & 0777, 0660, "the new queue's .recover has mode %o",
                 (unsigned)(sb.st_mode & 0777));
    cr_assert_eq(shmq_unlink(b->sh.name), 0);
}
