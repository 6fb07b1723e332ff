/*
 * test_epoch.c - generations of the log (issue 14): one live segment per log, every state
 * restored, records that decide in the right order, the format version.
 *
 *  - fenced_old_handle: a handle opened before a rebuild gets -EIDRM from publish, receive,
 *    ack, nack, extend, maintain, redrive; nothing it did before is lost, nothing it tries after
 *    changes the rebuilt queue, and its maintenance deletes no file.
 *  - racing_publisher: a child publishing without pause while the parent drops and rebuilds the
 *    segment, several rounds: every publish that returned 0 is there after the last rebuild, ids
 *    never repeat with another payload (W1/W2 against R1/R2).
 *  - crash windows of recovery (recover_after_bump, recover_before_complete,
 *    recover_after_complete): a recoverer killed there; the next open rebuilds everything once.
 *  - delayed and dead letters come back as such, with attempts, reason and what is left of the
 *    delay; a redriven dead letter comes back ready.
 *  - a keyed publish killed before its decision (dedup_before_decide), its reservation freed by
 *    maintenance, then the segment lost: the retry publishes (ABORT), it is not a duplicate.
 *  - a log of format version 1 is refused with -EPROTO, and shmq_create will not overwrite it.
 *  - a checkpoint copy logged after the ACK of its message (its closing record lost) does not
 *    bring the message back.
 *  - the inspection layer (shmq wal) after a rebuild: reads the head, predicts from the complete
 *    generation only, and calls the gap between generations no loss.
 *
 * Children that must hit crash points set SHMQ_CRASH_AT before their first library call.
 */
#include "helpers.h"

#include <dirent.h>

#include "inspect.h"
#include "queue.h" /* q->wal: a record written as maintenance writes it */

TestSuite(epoch, .fini = h_cleanup, .timeout = 240);

static void log_dir_of(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", h_state_dir_path(), name);
}

static int count_wal_files(const char *name)
{
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, "wal.", 4) == 0;
    closedir(d);
    return n;
}

/* The head's live generation (docs/FORMAT.md 8.11: gen at byte 64); a new queue's is random. */
static uint64_t head_gen(const char *name)
{
    char path[600];
    log_dir_of(name, path, 512);
    strcat(path, "/head");
    uint64_t g = 0;
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "no head at %s", path);
    cr_assert_eq(pread(fd, &g, sizeof g, 64), (ssize_t)sizeof g);
    close(fd);
    return g;
}

/* Drain q: every message's first 8 bytes as a number, marked in seen[] (asserting no repeat
 * with another payload); returns how many were received. Acks them all. */
static uint32_t drain(shmq_t *q, uint8_t *seen, uint32_t nseen, uint64_t *ids)
{
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    uint32_t n = 0;
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0) {
        uint64_t v;
        cr_assert_eq(m.len, sizeof v);
        memcpy(&v, m.data, sizeof v);
        cr_assert_lt(v, nseen, "payload %llu out of range", (unsigned long long)v);
        if (ids) {
            cr_assert(ids[v] == 0 || ids[v] == m.id, "message %llu came back with id %llu, was %llu",
                      (unsigned long long)v, (unsigned long long)m.id, (unsigned long long)ids[v]);
            ids[v] = m.id;
        }
        seen[v] = 1;
        n++;
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_consumer_close(c);
    return n;
}

static void publish_n(shmq_t *q, uint64_t from, uint64_t to)
{
    for (uint64_t v = from; v < to; v++)
        h_assert_rc(shmq_publish(q, &v, sizeof v, NULL), 0);
}

/* Drop the segment (as a reboot) and rebuild it by opening the queue. */
static shmq_t *rebuild(const char *name, shmq_recovery_report_t *rep)
{
    h_assert_rc(shmq_unlink_segment(name), 0);
    if (rep)
        h_assert_rc(shmq_recover(name, NULL, rep), 0);
    shmq_t *q;
    h_assert_rc(shmq_open(name, &q), 0);
    return q;
}

Test(epoch, fenced_old_handle)
{
    const char *name = h_qname("fence");
    shmq_config_t cfg = h_log_config(256);
    shmq_t *old;
    h_assert_rc(shmq_create(name, &cfg, &old), 0);
    publish_n(old, 0, 100);
    shmq_consumer_t *oc;
    h_assert_rc(shmq_consumer_open(old, "old", &oc), 0);
    shmq_msg_t held;
    h_assert_rc(shmq_receive(oc, &held, 0), 0); /* in flight in the old segment */

    shmq_recovery_report_t rep;
    uint64_t first = head_gen(name);
    shmq_t *q = rebuild(name, &rep);
    cr_assert_eq(rep.restored, 100, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.gen, first + 1, "the first rebuild makes generation %llu, got %llu",
                 (unsigned long long)first + 1, (unsigned long long)rep.gen);

    /* the old handle is fenced everywhere, and says so */
    uint64_t v = 1000;
    h_assert_rc(shmq_publish(old, &v, sizeof v, NULL), -EIDRM);
    h_assert_rc(shmq_ack(oc, &held), -EIDRM);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(oc, &m, 0), -EIDRM);
    h_assert_rc(shmq_extend(oc, &held, 1000), -EIDRM);
    int files = count_wal_files(name);
    h_assert_rc(shmq_maintain(old, NULL), -EIDRM);
    cr_assert_eq(count_wal_files(name), files, "a fenced maintainer deleted log files");
    cr_assert_str_eq(shmq_strerror(-EIDRM), "the queue was rebuilt from its log: reopen it");

    /* the new queue works, and a second rebuild has everything: the old 100 (the fenced ack
     * did not count) and the new 50, each once */
    publish_n(q, 100, 150);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_maintain(q, NULL), 0);
    shmq_close(q);
    q = rebuild(name, &rep);
    cr_assert_eq(rep.restored, 150, "restored %llu", (unsigned long long)rep.restored);
    uint8_t seen[1001] = {0};
    cr_assert_eq(drain(q, seen, 1001, NULL), 150);
    for (int i = 0; i < 150; i++)
        cr_assert(seen[i], "message %d lost", i);
    cr_assert(!seen[1000], "the fenced publish was delivered");
    shmq_consumer_close(oc);
    shmq_close(old);
    shmq_close(q);
}

/* ---- a publisher racing rebuilds ---- */

#define RACE_MAX 200000

struct race {
    _Atomic uint32_t ok[RACE_MAX]; /* 1: its publish returned 0 */
    _Atomic uint64_t next;         /* the next payload to publish */
    _Atomic int stop;
    _Atomic uint32_t fenced;       /* -EIDRM seen (then reopened) */
    char name[SHMQ_NAME_MAX + 1];
};

static struct race *rc_sh;

static int racing_publisher(void *arg)
{
    (void)arg;
    shmq_t *q = NULL;
    while (!atomic_load(&rc_sh->stop)) {
        if (!q && shmq_open(rc_sh->name, &q) != 0) {
            q = NULL;
            continue; /* the segment is being rebuilt */
        }
        uint64_t v = atomic_load(&rc_sh->next);
        if (v >= RACE_MAX)
            break;
        int rc = shmq_publish(q, &v, sizeof v, NULL);
        if (rc == 0) {
            atomic_store(&rc_sh->ok[v], 1);
            atomic_store(&rc_sh->next, v + 1);
        } else if (rc == -EIDRM) {
            atomic_fetch_add(&rc_sh->fenced, 1);
            atomic_store(&rc_sh->next, v + 1); /* may or may not come back: not counted */
            shmq_close(q);
            q = NULL;
        } else if (rc != -EAGAIN) {
            fprintf(stderr, "publisher: %s\n", shmq_strerror(rc));
            return 11;
        }
    }
    if (q)
        shmq_close(q);
    return 0;
}

Test(epoch, racing_publisher)
{
    rc_sh = h_shared_alloc(sizeof *rc_sh);
    snprintf(rc_sh->name, sizeof rc_sh->name, "%s", h_qname("race"));
    shmq_config_t cfg = h_log_config(8192);
    shmq_t *q;
    h_assert_rc(shmq_create(rc_sh->name, &cfg, &q), 0);
    shmq_close(q);
    pid_t pub = h_fork(racing_publisher, NULL);
    enum { ROUNDS = 6 };
    uint32_t rounds = 0;
    for (; rounds < ROUNDS; rounds++) {
        uint64_t at = atomic_load(&rc_sh->next);
        int64_t end = h_now_ms() + 20000;
        while (atomic_load(&rc_sh->next) < at + 300 && h_now_ms() < end)
            h_sleep_ms(1); /* wait for progress (an event, with a bound) */
        cr_assert_lt(h_now_ms(), end, "the publisher made no progress in round %u", rounds);
        shmq_unlink_segment(rc_sh->name);
        int rc = shmq_recover(rc_sh->name, NULL, NULL);
        cr_assert(rc == 0 || rc == -EEXIST, "recover: %s", shmq_strerror(rc));
        if (atomic_load(&rc_sh->next) > RACE_MAX - 10000)
            break;
    }
    atomic_store(&rc_sh->stop, 1);
    h_assert_child_ok(pub, 30000, "racing publisher");
    shmq_unlink_segment(rc_sh->name);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(rc_sh->name, NULL, &rep), 0);
    h_assert_rc(shmq_open(rc_sh->name, &q), 0);
    uint64_t n = atomic_load(&rc_sh->next);
    uint8_t *seen = calloc(RACE_MAX, 1);
    uint64_t *ids = calloc(RACE_MAX, sizeof *ids);
    drain(q, seen, RACE_MAX, ids);
    uint32_t lost = 0;
    for (uint64_t v = 0; v < n; v++)
        lost += atomic_load(&rc_sh->ok[v]) && !seen[v];
    cr_assert_eq(lost, 0, "%u of %llu acknowledged publishes lost over %u rebuilds", lost,
                 (unsigned long long)n, rounds);
    cr_log_info("racing_publisher: %llu published, %u rebuilds, %u fenced publishes",
                (unsigned long long)n, rounds + 1, atomic_load(&rc_sh->fenced));
    /* ids: one per payload, and no id for two payloads */
    for (uint64_t a = 0; a < n; a++)
        for (uint64_t b = a + 1; b < n && ids[a]; b++)
            if (ids[b] == ids[a])
                cr_assert_fail("id %llu handed out for payloads %llu and %llu",
                               (unsigned long long)ids[a], (unsigned long long)a,
                               (unsigned long long)b);
    free(seen);
    free(ids);
    shmq_close(q);
}

/* ---- crash windows of recovery ---- */

static const char *cw_name;

static int crashing_recoverer(void *arg)
{
    setenv("SHMQ_CRASH_AT", (const char *)arg, 1);
    shmq_t *q;
    int rc = shmq_open(cw_name, &q); /* recovers, and is killed inside */
    return rc == 0 ? 20 : 21;
}

static void crash_window(const char *point)
{
    cw_name = h_qname("cwin");
    pid_t k = h_fork_gated(crashing_recoverer, (void *)point); /* before we pass any point */
    shmq_config_t cfg = h_log_config(256);
    shmq_t *old;
    h_assert_rc(shmq_create(cw_name, &cfg, &old), 0);
    publish_n(old, 0, 40);
    h_assert_rc(shmq_unlink_segment(cw_name), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0, "%s: the recoverer did not end", point);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: the recoverer was not killed there",
              point);
    /* R1 happened in every window: the old handle is fenced */
    uint64_t v = 999;
    h_assert_rc(shmq_publish(old, &v, sizeof v, NULL), -EIDRM);
    shmq_t *q;
    h_assert_rc(shmq_open(cw_name, &q), 0); /* rebuilds (again) */
    uint8_t seen[1000] = {0};
    cr_assert_eq(drain(q, seen, 1000, NULL), 40, "%s: not every message came back once", point);
    publish_n(q, 100, 110);
    shmq_close(q);
    q = rebuild(cw_name, NULL);
    memset(seen, 0, sizeof seen);
    cr_assert_eq(drain(q, seen, 1000, NULL), 10, "%s: a second rebuild", point);
    shmq_close(q);
    shmq_close(old);
}

Test(epoch, crash_after_bump) { crash_window("recover_after_bump"); }
Test(epoch, crash_before_complete) { crash_window("recover_before_complete"); }
Test(epoch, crash_after_complete) { crash_window("recover_after_complete"); }

/* ---- every state restored ---- */

Test(epoch, delayed_and_dead_restored)
{
    const char *name = h_qname("states");
    shmq_config_t cfg = h_log_config(64);
    cfg.max_attempts = 3;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 0, 4); /* 0: delayed long, 1: delayed short, 2: dead, 3: nacked once, ready */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    int64_t due1 = 0; /* when message 1 is due (its delay survives the rebuild) */
    for (int i = 0; i < 4; i++) {
        shmq_msg_t m;
        uint64_t v;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        memcpy(&v, m.data, sizeof v);
        uint32_t delay = v == 0 ? 600000 : v == 1 ? 3000 : 1; /* (0 would be the backoff) */
        if (v == 1)
            due1 = h_now_ms() + 3000;
        h_assert_rc(shmq_nack(c, &m, delay), 0);
    }
    shmq_msg_t m;
    int64_t until = h_now_ms() + 20000;
    bool dead2 = false, have3 = false; /* 2 nacked to death while 3 is held, then 3 nacked */
    shmq_msg_t m3;
    while ((!dead2 || !have3) && h_now_ms() < until) {
        shmq_maintain(q, NULL); /* fires the 1 ms delays */
        if (shmq_receive(c, &m, 50) != 0)
            continue;
        uint64_t v;
        memcpy(&v, m.data, sizeof v);
        cr_assert(v == 2 || (v == 3 && !have3), "message %llu delivered early",
                  (unsigned long long)v);
        if (v == 3) {
            m3 = m;
            have3 = true;
            continue;
        }
        dead2 |= m.attempt == 3;
        h_assert_rc(shmq_nack(c, &m, 1), 0);
    }
    cr_assert(dead2 && have3, "the nacks did not happen");
    h_assert_rc(shmq_nack(c, &m3, 1), 0);
    shmq_consumer_close(c);
    shmq_close(q);

    shmq_recovery_report_t rep;
    q = rebuild(name, &rep);
    /* 0 and 1; and 3 too if its 1 ms was not over yet when the rebuild read the clock */
    cr_assert(rep.delayed == 2 || rep.delayed == 3, "delayed %llu", (unsigned long long)rep.delayed);
    cr_assert_eq(rep.dead_letters, 1, "dead %llu", (unsigned long long)rep.dead_letters);
    shmq_dead_letter_t dl[4];
    size_t n = 0;
    h_assert_rc(shmq_dlq_list(q, dl, 4, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(dl[0].attempt, 3, "dead letter attempts %u", dl[0].attempt);
    cr_assert_eq(dl[0].reason, SHMQ_DEAD_MAX_ATTEMPTS);
    h_assert_rc(shmq_consumer_open(q, "c2", &c), 0);
    /* message 3 (a short delay, probably past) comes with its attempts; then 1 after what was
     * left of its 3 s; 0 not within that time */
    bool got1 = false, got3 = false;
    int64_t end = h_now_ms() + 20000;
    while ((!got1 || !got3) && h_now_ms() < end) {
        shmq_maintain(q, NULL); /* fires due delayed messages */
        if (shmq_receive(c, &m, 50) != 0)
            continue;
        uint64_t v;
        memcpy(&v, m.data, sizeof v);
        cr_assert(v == 1 || v == 3, "message %llu delivered (it should wait or be dead)",
                  (unsigned long long)v);
        if (v == 1) {
            got1 = true;
            /* not before its due time (100 ms for the clocks' rounding: wall clock in the
             * log, monotonic here) */
            cr_assert_geq(h_now_ms(), due1 - 100, "the delayed message came %lld ms early",
                          (long long)(due1 - h_now_ms()));
            cr_assert_eq(m.attempt, 2, "attempts of a delayed message: %u", m.attempt);
        } else {
            got3 = true;
            cr_assert_eq(m.attempt, 3, "attempts of message 3: %u", m.attempt);
        }
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_assert(got1 && got3, "delayed or nacked messages did not come back");
    /* the dead letter, redriven, then the segment lost again: it comes back ready */
    uint32_t moved = 0;
    h_assert_rc(shmq_dlq_redrive(q, 0, &moved), 0);
    cr_assert_eq(moved, 1);
    shmq_consumer_close(c);
    shmq_close(q);
    q = rebuild(name, &rep);
    cr_assert_eq(rep.dead_letters, 0, "a redriven dead letter came back dead");
    cr_assert_eq(rep.restored, 2, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.delayed, 1, "the long delay did not survive a second rebuild");
    shmq_close(q);
}

/* ---- a keyed publish that never decided ---- */

static const char *kq_name;

static int keyed_victim(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "dedup_before_decide", 1);
    shmq_t *q;
    if (shmq_open(kq_name, &q))
        return 10;
    uint64_t v = 7;
    shmq_publish_dedup(q, &v, sizeof v, "order-7", 7, NULL);
    return 12; /* not reached: killed before the decision */
}

Test(epoch, keyed_abort_not_a_duplicate)
{
    kq_name = h_qname("abort");
    pid_t k = h_fork_gated(keyed_victim, NULL); /* before we pass any crash point */
    shmq_config_t cfg = h_log_config(64);
    cfg.dedup_window_count = 64;
    shmq_t *q;
    h_assert_rc(shmq_create(kq_name, &cfg, &q), 0);
    shmq_close(q);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the keyed publisher was not killed at its crash point");
    h_assert_rc(shmq_open(kq_name, &q), 0);
    shmq_maint_report_t mr;
    h_assert_rc(shmq_maintain(q, &mr), 0);
    cr_assert_eq(mr.reservations_freed, 1, "the dead reservation was not freed");
    shmq_close(q);
    q = rebuild(kq_name, NULL);
    uint64_t v = 7, id = 0;
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "order-7", 7, &id), 0);
    shmq_stats_t s;
    h_assert_rc(shmq_stats(q, &s), 0);
    cr_assert_eq(s.dedup_hits, 0, "the retry was taken for a duplicate");
    uint8_t seen[8] = {0};
    cr_assert_eq(drain(q, seen, 8, NULL), 1, "the retried keyed message was not delivered once");
    /* and now the key is committed: it survives a rebuild as such */
    shmq_close(q);
    q = rebuild(kq_name, NULL);
    uint64_t id2 = 0;
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "order-7", 7, &id2), 0);
    cr_assert_eq(id2, id, "a committed key was forgotten by the rebuild");
    shmq_close(q);
}

/* ---- format version 1 ---- */

Test(epoch, version1_log_refused)
{
    const char *name = h_qname("v1");
    char dir[512], path[600];
    log_dir_of(name, dir, sizeof dir);
    mkdir(dir, 0700);
    /* a version-1 log: the file header as the version-1 writer made it (magic, version 1; the
     * reader stops at the version), and no head file */
    snprintf(path, sizeof path, "%s/wal.0000000000", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(ftruncate(fd, 65536), 0);
    uint64_t magic = 0x314c4157514d4853ull;
    uint32_t ver[2] = {1, 4096};
    cr_assert_eq(pwrite(fd, &magic, 8, 0), 8);
    cr_assert_eq(pwrite(fd, ver, 8, 8), 8);
    close(fd);
    shmq_t *q;
    h_assert_rc(shmq_open(name, &q), -EPROTO);
    h_assert_rc(shmq_recover(name, NULL, NULL), -EPROTO);
    shmq_config_t cfg = h_log_config(16);
    h_assert_rc(shmq_create(name, &cfg, &q), -EEXIST);
    cr_assert(strstr(shmq_strerror(-EPROTO), "format version") != NULL);
    struct stat stb;
    cr_assert_eq(stat(path, &stb), 0, "the version-1 file was touched");

    /* a version-1 segment: its layout's version field says 1 */
    const char *sname = h_qname("v1seg");
    cfg.durability = SHMQ_DURABILITY_NONE;
    h_assert_rc(shmq_create(sname, &cfg, &q), 0);
    shmq_close(q);
    char spath[256];
    h_shm_path(sname, spath, sizeof spath);
    uint32_t one = 1;
    h_write_at(spath, 8, &one, sizeof one);
    h_assert_rc(shmq_open(sname, &q), -EPROTO);
}

/* ---- the inspection layer after a rebuild ---- */

Test(epoch, inspect_reads_the_complete_generation)
{
    const char *name = h_qname("insp");
    shmq_config_t cfg = h_log_config(64);
    cfg.max_attempts = 1;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    publish_n(q, 0, 10);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0); /* max_attempts 1: dead */
    shmq_consumer_close(c);
    shmq_close(q);
    uint64_t first = head_gen(name);
    q = rebuild(name, NULL);
    publish_n(q, 10, 12);
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    struct inspect_log *log;
    h_assert_rc(inspect_log_read(dir, true, &log), 0);
    const struct inspect_log_recovery *rc = &log->recovery;
    cr_assert(rc->have_head);
    cr_assert_eq(rc->gen, first + 1);
    cr_assert_eq(rc->complete_gen, first + 1);
    cr_assert_eq(rc->live, 11, "live %llu", (unsigned long long)rc->live);
    cr_assert_eq(rc->dead_letters, 1, "dead letters %llu", (unsigned long long)rc->dead_letters);
    cr_assert_geq(rc->files_skipped, 1, "the first generation's file is not read");
    cr_assert(log->ok, "a rebuilt log is judged damaged: %s",
              log->problems.count ? log->problems.text[0] : "");
    inspect_log_free(log);
    shmq_close(q);
}

/* ---- a stale checkpoint copy (issue 14 item 6, and what test_segloss found) ---- */

/*
 * A checkpoint copies a live message, and the ack lands between its look and its copy; its
 * closing record (an ACK again) never lands (the maintainer is killed, or fenced by a rebuild).
 * The log then holds PUBLISH, ACK, PUBLISH(copy). The copy must not revive the acked message.
 */
Test(epoch, stale_checkpoint_copy_revives_nothing)
{
    const char *name = h_qname("stale");
    shmq_config_t cfg = h_log_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t v = 5, id;
    h_assert_rc(shmq_publish(q, &v, sizeof v, &id), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    /* the checkpoint's copy, as maintain.c writes it, after the ACK */
    uint32_t seq;
    h_assert_rc(wal_append_publish(q->wal, id, WAL_PUB_CHECKPOINT, NULL, 0, &v, sizeof v, &seq),
                0);
    /* and a copy of a message whose ACK was in a file retention deleted since: the copy alone,
     * its maker killed before its closing record */
    h_assert_rc(wal_append_publish(q->wal, id + 1000, WAL_PUB_CHECKPOINT, NULL, 0, &v, sizeof v,
                                   &seq),
                0);
    shmq_consumer_close(c);
    shmq_close(q);
    shmq_recovery_report_t rep;
    q = rebuild(name, &rep);
    cr_assert_eq(rep.restored, 0, "an acked message came back from a stale checkpoint copy");
    shmq_close(q);
}

/* ---- an ABORT with a stale id does not cancel a committed key ---- */

static const char *sk_name;

static int reserve_victim(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "publish_after_reserve", 1); /* killed before it writes the id */
    shmq_t *q;
    if (shmq_open(sk_name, &q))
        return 10;
    uint64_t v = 9;
    shmq_publish(q, &v, sizeof v, NULL);
    return 12;
}

/*
 * One slot: a keyed message is published and acked; a producer dies holding the slot RESERVED
 * before writing its id, so the slot still names the acked message's id; maintenance frees it
 * and logs ACK with ABORT for that (stale) id. The key was committed and must stay so.
 */
Test(epoch, stale_abort_keeps_a_committed_key)
{
    sk_name = h_qname("sabort");
    pid_t k = h_fork_gated(reserve_victim, NULL);
    shmq_config_t cfg = h_log_config(1);
    cfg.dedup_window_count = 16;
    shmq_t *q;
    h_assert_rc(shmq_create(sk_name, &cfg, &q), 0);
    uint64_t v = 1, id = 0;
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "k1", 2, &id), 0);
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
    shmq_close(q);
    q = rebuild(sk_name, NULL);
    uint64_t again = 0;
    h_assert_rc(shmq_publish_dedup(q, &v, sizeof v, "k1", 2, &again), 0);
    cr_assert_eq(again, id, "a stale ABORT made a committed key publish again (id %llu)",
                 (unsigned long long)again);
    shmq_close(q);
}
