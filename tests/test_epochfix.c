/*
 * test_epochfix.c - findings of the review of log generations (issue 14), one test each.
 *
 *  - recreate_same_name (F2): a handle of a deleted queue, the queue made again by its name: the
 *    old handle's publishes write nothing into the new queue's log (returning 0, as a deleted
 *    queue's do), and a rebuild of the new queue delivers exactly the new queue's messages.
 *  - recreate_while_a_writer_makes_a_file (R2-4): a writer of a deleted queue, stopped as it
 *    is about to make a log file, continues after the queue was made again by its name: it makes
 *    nothing in the new queue's directory (its directory is the deleted one) and gets an error;
 *    every publish of the new queue succeeds.
 *  - head_never_completed (F7, F6): a head whose words are still 0 (what a recovery killed inside
 *    its head remake left before heads were made whole and renamed into place) does not make an
 *    intact log "no such queue"; the head made again has the shared queue's file mode.
 *  - redrive_killed_before_append (F5): a redriver killed after it claimed a dead letter and
 *    before its PUBLISH; maintenance and retention run; the segment is lost: the dead letter is
 *    restored (its record was still pinned).
 *  - dedup_key_age_survives_rebuild (F3): a rebuild restores a dedup key with what is left of
 *    its window: an expired key is not a duplicate after the rebuild, and a half-aged key
 *    expires when its original window ends, not a full window after the rebuild.
 *  - no_abort_for_a_stale_id (F1): a producer killed right after claiming a slot (its id not
 *    written: the slot still names the previous, acked message); maintenance frees the
 *    reservation and logs no ACK|ABORT for the previous occupant's id.
 *  - checkpoint_keeps_the_key (F10): a keyed message held (delayed) while the log moves on;
 *    maintenance runs; the segment is lost: a retry of the key inside its window is a duplicate.
 *
 * Children that must hit crash points are forked gated before the first library call.
 */
#include "helpers.h"

#include <dirent.h>

#include "io.h"
#include "wal.h"
#include "walscan.h"

TestSuite(epochfix, .fini = h_cleanup, .timeout = 240);

static shmq_config_t log_config(uint32_t capacity)
{
    shmq_config_t cfg = h_small_config(capacity, 64, 64);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = 64u << 10;
    cfg.ack_deadline_ms = 600000;
    cfg.heartbeat_timeout_ms = 60000;
    return cfg;
}

/* Receive and ack everything; payloads (strings) into got[], returns the count. */
static int drain_strings(shmq_t *q, char got[][16], int max)
{
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    int n = 0;
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0) {
        cr_assert_lt(n, max, "more messages than published");
        snprintf(got[n++], 16, "%.*s", (int)m.len, (const char *)m.data);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_consumer_close(c);
    return n;
}

Test(epochfix, recreate_same_name)
{
    const char *name = h_qname("recreate");
    shmq_config_t cfg = log_config(64);
    shmq_t *old, *nq;
    h_assert_rc(shmq_create(name, &cfg, &old), 0);
    h_assert_rc(shmq_unlink(name), 0);
    h_assert_rc(shmq_create(name, &cfg, &nq), 0);
    char buf[16];
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "NEW-%d", i);
        h_assert_rc(shmq_publish(nq, buf, strlen(buf), NULL), 0);
    }
    for (int i = 0; i < 2; i++) { /* the deleted queue's handle: as good as before the delete */
        snprintf(buf, sizeof buf, "OLD-%d", i);
        h_assert_rc(shmq_publish(old, buf, strlen(buf), NULL), 0);
    }
    h_assert_rc(shmq_maintain(old, NULL), 0); /* its retention deletes nothing of the new log */
    shmq_close(old);
    shmq_close(nq);
    h_assert_rc(shmq_unlink_segment(name), 0); /* the new queue's segment is lost */
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 3, "restored %llu", (unsigned long long)rep.restored);
    h_assert_rc(shmq_open(name, &nq), 0);
    char got[8][16];
    int n = drain_strings(nq, got, 8);
    cr_assert_eq(n, 3, "delivered %d", n);
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "NEW-%d", i);
        cr_assert_str_eq(got[i], buf, "message %d: %s, published %s", i, got[i], buf);
    }
    shmq_close(nq);
}

#ifdef SHMQ_CRASH_POINTS
static const char *rw_name;
static int *rw_rc; /* shared: the stale writer's publish result */

/* Opens the queue, then publishes: its first record needs wal.0, which nobody made yet; it stops
 * at make_file_before_create. Its second unlink from then on fails (EIO): where a file is made
 * by path (in the directory made again by the name), the first unlink is the temporary name's
 * and the second the file's own, taken back as fenced by the delete: the file then stays, as it
 * would if the writer were stopped again (or killed) between its link and that unlink. */
static int stale_writer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "make_file_before_create", 1);
    setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    if (shmq_open(rw_name, &q))
        return 10;
    io_fault_arm(IO_UNLINK, 2, EIO);
    *rw_rc = shmq_publish(q, "OLD", 3, NULL);
    return 0;
}

/* R2-4: a writer stopped inside its append while the queue is deleted and made again used to
 * make its log file by path, in the new queue's directory, with its own (deleted) generation in
 * the header: the new queue's publishes that needed that file failed with -EIO. */
Test(epochfix, recreate_while_a_writer_makes_a_file)
{
    rw_name = h_qname("remake");
    rw_rc = h_shared_alloc(sizeof(*rw_rc));
    *rw_rc = 1;
    pid_t k = h_fork_gated(stale_writer, NULL);
    shmq_config_t cfg = log_config(64);
    shmq_t *q;
    h_assert_rc(shmq_create(rw_name, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_wait_stopped(k, 30000, &st), 0, "the writer did not stop at its crash point");
    cr_assert(WIFSTOPPED(st), "the writer did not stop at its crash point (%d)", st);
    h_assert_rc(shmq_unlink(rw_name), 0);
    h_assert_rc(shmq_create(rw_name, &cfg, &q), 0); /* nothing published yet: no wal.0 */
    h_assert_rc(kill(k, SIGCONT), 0);
    h_assert_child_ok(k, 30000, "the stale writer");
    cr_expect_eq(
        *rw_rc, -EIDRM,
        "the deleted queue's writer got %d (%s), not -EIDRM (the name is another queue's now)",
        *rw_rc, shmq_strerror(*rw_rc));
    char buf[16];
    for (int i = 0; i < 20; i++) {
        snprintf(buf, sizeof buf, "NEW-%d", i);
        int rc = shmq_publish(q, buf, strlen(buf), NULL);
        cr_assert_eq(rc, 0, "publish %d of the new queue: %d (%s)", i, rc, shmq_strerror(rc));
    }
    char got[32][16];
    int n = drain_strings(q, got, 32);
    cr_assert_eq(n, 20, "delivered %d of 20", n);
    for (int i = 0; i < 20; i++) {
        snprintf(buf, sizeof buf, "NEW-%d", i);
        cr_assert_str_eq(got[i], buf, "message %d: %s, published %s", i, got[i], buf);
    }
    h_assert_rc(shmq_close(q), 0);
}
#endif

static void head_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s/head", h_state_dir_path(), name);
}

Test(epochfix, head_never_completed)
{
    const char *name = h_qname("headgen0");
    shmq_config_t cfg = log_config(16);
    cfg.mode = 0660;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    for (int i = 0; i < 5; i++)
        h_assert_rc(shmq_publish(q, "XXXX", 4, NULL), 0);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    char path[600];
    head_path(name, path, sizeof path);
    uint64_t zero[2] = {0, 0};
    h_write_at(path, 64, zero, sizeof zero); /* gen = complete_gen = 0 */
    h_assert_rc(chmod(path, 0600), 0);       /* and the mode a remake used to give it */
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    int n = 0;
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0) {
        h_assert_rc(shmq_ack(c, &m), 0);
        n++;
    }
    cr_assert_eq(n, 5, "delivered %d of 5 after the rebuild", n);
    shmq_consumer_close(c);
    shmq_close(q);
    struct stat st;
    h_assert_rc(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0660, "the remade head is %o, the queue is shared 0660",
                 (unsigned)(st.st_mode & 0777));
    /* and a head lost altogether comes back with the shared mode too */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(unlink(path), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_close(q);
    h_assert_rc(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0660, "the remade head is %o", (unsigned)(st.st_mode & 0777));
}

static const char *rd_name;

static int redriver(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "redrive_before_append", 1);
    shmq_t *q;
    if (shmq_open(rd_name, &q))
        return 10;
    uint32_t moved = 0;
    shmq_dlq_redrive(q, 0, &moved);
    return 12; /* not killed at its crash point */
}

Test(epochfix, redrive_killed_before_append)
{
    rd_name = h_qname("redrive");
    pid_t k = h_fork_gated(redriver, NULL);
    shmq_config_t cfg = log_config(8);
    cfg.max_msg_size = 30000;
    cfg.max_attempts = 1;
    shmq_t *q;
    h_assert_rc(shmq_create(rd_name, &cfg, &q), 0);
    h_assert_rc(shmq_lease_acquire(q, 600000, 1), 0); /* maintenance is ours alone */
    h_assert_rc(shmq_publish(q, "XXXXXXXX", 8, NULL), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0); /* max_attempts 1: a dead letter */
    static char big[29000];
    memset(big, 'f', sizeof big);
    for (int i = 0; i < 4; i++) { /* the log moves on beyond the dead letter's file */
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_consumer_close(c);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the redriver was not killed at its crash point");
    for (int i = 0; i < 3; i++)
        shmq_maintain(q, NULL);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(rd_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(rd_name, NULL, &rep), 0);
    cr_assert_eq(rep.dead_letters + rep.restored, 1,
                 "the dead letter was lost: restored %llu dead %llu",
                 (unsigned long long)rep.restored, (unsigned long long)rep.dead_letters);
}

/* Wait for the clock (CLOCK_MONOTONIC) to reach t: a time to pass, not an event to poll. */
static void until_ms(int64_t t)
{
    while (h_now_ms() < t)
        h_sleep_ms(5);
}

Test(epochfix, dedup_key_age_survives_rebuild)
{
    const char *name = h_qname("dedupage");
    shmq_config_t cfg = log_config(16);
    cfg.dedup_window_count = 16;
    cfg.dedup_window_ms = 1000;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t v = 1, a = 0, b = 0, again = 0;
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "k1", 2, &a), 0);
    until_ms(t0 + 1300); /* k1's window is over */
    int64_t t1 = h_now_ms();
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "k2", 2, &b), 0);
    until_ms(t1 + 500); /* k2 half way */
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0); /* rebuilt */
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "k1", 2, &again), 0);
    cr_assert_neq(again, a, "an expired key answered duplicate (id %llu) after a rebuild",
                  (unsigned long long)a);
    until_ms(t1 + 1300); /* k2's own window is over (the rebuild was less than a window ago) */
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "k2", 2, &again), 0);
    cr_assert_neq(again, b, "a restored key got a fresh window: id %llu answered again",
                  (unsigned long long)b);
    shmq_close(q);
}

struct abort_count {
    uint64_t id;
    int n;
};

static int count_abort(void *arg, uint64_t offset, const struct wal_rec *rec, const void *payload)
{
    (void)offset;
    (void)payload;
    struct abort_count *a = arg;
    a->n += rec->type == WAL_ACK && (rec->attempt & WAL_ACK_ABORT) && rec->id == a->id;
    return 0;
}

/* ACK|ABORT records for id in the queue's log files. */
static int aborts_logged(const char *name, uint64_t id)
{
    char dir[512], path[800];
    snprintf(dir, sizeof dir, "%s/%s", h_state_dir_path(), name);
    struct abort_count a = {id, 0};
    DIR *d = opendir(dir);
    cr_assert(d, "no log directory %s", dir);
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "wal.", 4) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY);
        struct stat st;
        cr_assert(fd >= 0 && fstat(fd, &st) == 0);
        void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        cr_assert_neq(base, MAP_FAILED);
        struct walscan_stats ws;
        walscan_records(base, (size_t)st.st_size, base, count_abort, &a, &ws);
        munmap(base, (size_t)st.st_size);
        close(fd);
    }
    closedir(d);
    return a.n;
}

static const char *sa_name;

static int reserve_victim(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "publish_after_reserve", 1); /* killed before it writes its id */
    shmq_t *q;
    if (shmq_open(sa_name, &q))
        return 10;
    uint64_t v = 9;
    shmq_publish(q, &v, sizeof v, NULL);
    return 12;
}

Test(epochfix, no_abort_for_a_stale_id)
{
    sa_name = h_qname("staleid");
    pid_t k = h_fork_gated(reserve_victim, NULL);
    shmq_config_t cfg = log_config(1); /* one slot: the victim claims the acked message's */
    shmq_t *q;
    h_assert_rc(shmq_create(sa_name, &cfg, &q), 0);
    uint64_t v = 1, id = 0;
    h_assert_rc(shmq_publish(q, &v, sizeof v, &id), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    shmq_consumer_close(c);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the producer was not killed at its crash point");
    shmq_maint_report_t mr;
    h_assert_rc(shmq_maintain(q, &mr), 0);
    cr_assert_eq(mr.reservations_freed, 1);
    int n = aborts_logged(sa_name, id);
    cr_assert_eq(n, 0, "maintenance logged %d ACK|ABORT for the slot's previous id %llu", n,
                 (unsigned long long)id);
    shmq_close(q);
}

Test(epochfix, checkpoint_keeps_the_key)
{
    const char *name = h_qname("ckptkey");
    shmq_config_t cfg = log_config(8);
    cfg.max_msg_size = 30000;
    cfg.dedup_window_count = 16;
    cfg.dedup_window_ms = 600000;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_lease_acquire(q, 600000, 1), 0);
    uint64_t id1 = 0, id2 = 0;
    h_assert_rc(shmq_publish_dedup(q, "ORDER-42", 8, "order-42", 8, &id1), 0);
    static char big[29000];
    memset(big, 'f', sizeof big);
    for (int i = 0; i < 6; i++)
        h_assert_rc(shmq_publish(q, big, sizeof big, NULL), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.id, id1);
    h_assert_rc(shmq_nack(c, &m, 600000), 0); /* held back, delayed */
    for (int i = 0; i < 6; i++) {
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_consumer_close(c);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_maintain(q, NULL), 0);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_publish_dedup(q, "ORDER-42", 8, "order-42", 8, &id2), 0);
    cr_assert_eq(id2, id1, "the key was forgotten after a rebuild: published again as %llu",
                 (unsigned long long)id2);
    shmq_close(q);
}
