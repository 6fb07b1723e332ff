/*
 * test_segloss.c - the randomized test of issue 14: producers, consumers and a maintainer are
 * SIGKILLed and SIGSTOPped at random while the queue's segment is lost at random (unlinked, or
 * one header byte corrupted), round after round; then a final recovery and a drain.
 *
 * What must hold at the end (the book of torture.h, plus two checks of its own):
 *   - every publish that returned 0 was delivered and acked at least once by the end (the
 *     final drain acks everything), unless its acker was killed inside shmq_ack (the ack may
 *     have counted): no loss across any number of segment losses;
 *   - a message whose ack returned 0 is never delivered again (recovery honours the ACK) to a
 *     receive called after that ack returned. A receive called before it is concurrent with the
 *     ack and may return the message at least once more: a consumer that claimed the message in
 *     the old segment before a rebuild (E5 lets a claim before E3 through) and was stopped or
 *     preempted before returning, while the rebuilt queue delivered the message to another
 *     consumer that acked it. Such a delivery is counted ("overlapped") and printed, never a
 *     failure; its own ack gets -EIDRM. (A global tick orders ack returns and receive calls.)
 *   - no id is handed out for two different messages (a hash of id -> message, in shared
 *     memory, checked at every delivery);
 *   - nothing corrupt, no double ack.
 * A publish or ack that returned -EIDRM (the process held a segment of an older generation of
 * the log) is "not acknowledged": it may or may not take effect; the process reopens the queue.
 *
 * Segment losses come in two kinds. QUIESCED: every child is killed first, the segment is lost,
 * the next round's processes rebuild it (several at once, in shmq_open). LIVE: the segment is
 * lost while the processes run, so old processes keep their mapping: the generation fence
 * (issue 14 item 1) makes that safe, and the test first checks that it is there
 * (fence_present(): a handle on a lost segment publishes after another rebuilt it: -EIDRM).
 *
 * Producers keep the queue full most of the time, so a rebuild often finds more unresolved
 * messages than slots (a message logged but never committed, or acked without its ACK record,
 * next to a full ring): recovery must grow the queue rather than refuse (-ENOSPC) or drop one.
 *
 * SHMQ_SEGLOSS_KEEP=DIR: at the first "acked then redelivered", every child is stopped and the
 * log copied to DIR for a post-mortem (shmq wal ... inspect --log-dir); the queue then keeps
 * 32 MiB of log history (log_retention_bytes), so the id's records are still there.
 *
 * CI: a few seconds (SEGLOSS_ROUNDS rounds). Soak: SHMQ_SOAK_SECONDS=N runs rounds for N
 * seconds. Either prints the number of segment losses survived. The book holds 2^21 messages
 * per producer (the arena's size); a soak that publishes them all (about 4 minutes here) goes
 * on losing segments with consumers and the maintainer only.
 */
#include "torture.h"

#include <fcntl.h>
#include <sys/stat.h>

#define SEGLOSS_ROUNDS 6
#define NPROD 2
#define NCONS 2
#define PER_CI (1u << 18)   /* message seqs per producer slot, over all incarnations */
#define PER_SOAK (1u << 21)
#define IDMAP_BITS 22
#define CAPACITY 64

static void teardown(void) { t_teardown(); }

TestSuite(segloss, .init = t_setup, .fini = teardown, .timeout = 900);

struct world {
    struct t_book *book;
    _Atomic uint32_t next_seq[NPROD];   /* the next seq of producer slot p */
    _Atomic int64_t in_ack[NCONS];      /* rec index + 1 a consumer is acking, 0 if none */
    _Atomic uint64_t idmap[1u << IDMAP_BITS]; /* (rec index + 1) << 40 | id: see id_check() */
    _Atomic uint64_t id_clash, acked_redelivered, eidrm, reopens, child_failed;
    _Atomic uint64_t losses; /* segment losses so far (diagnostics) */
    _Atomic uint64_t *ack_id; /* per message: the id its successful ack named, losses then */
    _Atomic uint32_t *ack_losses;
    _Atomic uint32_t *ack_tick; /* per message: tick after its first successful ack returned */
    _Atomic uint64_t tick;      /* the order of ack returns and receive calls (see consumer) */
    _Atomic uint64_t overlapped; /* redelivered to a receive called before the ack returned */
    _Atomic int stop;
};

static struct world *W;

struct child_arg {
    char name[SHMQ_NAME_MAX + 1];
    int slot;
    struct world *w; /* in the arena, mapped before the spawner forked: valid in every child */
};

/* Open the queue, retrying while a rebuild is under way elsewhere (bounded). */
static int open_retry(const char *name, shmq_t **q)
{
    int rc = -1;
    for (int i = 0; i < 2000 && !atomic_load(&W->stop); i++) {
        if ((rc = shmq_open(name, q)) == 0)
            return 0;
        t_sleep_ms(2);
    }
    return rc;
}

/* No id for two messages: the first message delivered with an id owns it. */
static void id_check(uint64_t id, size_t rec)
{
    const uint64_t low = (1ull << 40) - 1; /* ids stay far below 2^40; rec indexes below 2^23 */
    uint64_t want = (uint64_t)(rec + 1) << 40 | (id & low);
    uint64_t mask = (1u << IDMAP_BITS) - 1;
    for (uint64_t h = (id * 0x9e3779b97f4a7c15ull) >> (64 - IDMAP_BITS), n = 0; n <= mask;
         h = (h + 1) & mask, n++) {
        uint64_t cur = atomic_load(&W->idmap[h]);
        if (cur == 0 && atomic_compare_exchange_strong(&W->idmap[h], &cur, want))
            return;
        if ((cur & low) != (id & low))
            continue; /* another id's bucket */
        if (cur != want)
            atomic_fetch_add(&W->id_clash, 1);
        return;
    }
}

/* A message whose ack returned 0 was delivered again: say what we know. */
static void acked_redelivered(struct t_rec *r, const shmq_msg_t *m, const char *who)
{
    size_t idx = (size_t)(r - W->book->rec);
    atomic_fetch_add(&W->acked_redelivered, 1);
    fprintf(stderr,
            "segloss: %s: message %zu (producer %zu seq %zu) acked with id %llu after %u losses, "
            "delivered again as id %llu attempt %u flags %u after %llu losses (delivered %u, "
            "acked %u, stale acks %u)\n",
            who, idx, idx / W->book->per_producer, idx % W->book->per_producer,
            (unsigned long long)atomic_load(&W->ack_id[idx]), atomic_load(&W->ack_losses[idx]),
            (unsigned long long)m->id, m->attempt, m->flags,
            (unsigned long long)atomic_load(&W->losses), atomic_load(&r->delivered),
            atomic_load(&r->acked), atomic_load(&r->ack_stale));
}

static int producer(void *arg)
{
    const struct child_arg *a = arg;
    W = a->w;
    shmq_t *q;
    if (open_retry(a->name, &q) != 0)
        return 2;
    for (;;) {
        uint32_t seq = atomic_fetch_add(&W->next_seq[a->slot], 1);
        if (seq >= W->book->per_producer)
            break;
        int rc;
        while ((rc = t_publish(q, W->book, (uint32_t)a->slot, seq, 100)) == -EAGAIN ||
               rc == -ETIMEDOUT)
            ;
        if (rc == -EIDRM || rc == -ENOENT || rc == -EBADMSG) { /* fenced: not acknowledged */
            atomic_fetch_add(&W->eidrm, rc == -EIDRM);
            atomic_fetch_add(&W->reopens, 1);
            shmq_close(q);
            if (open_retry(a->name, &q) != 0)
                return 3;
        } else if (rc) {
            atomic_fetch_add(&W->book->other_errors, 1);
        }
    }
    shmq_close(q);
    return 0;
}

static int consumer(void *arg)
{
    const struct child_arg *a = arg;
    W = a->w;
    shmq_t *q;
    shmq_consumer_t *c;
    if (open_retry(a->name, &q) != 0 || shmq_consumer_open(q, "segloss", &c) != 0)
        return 2;
    for (;;) {
        shmq_msg_t m;
        uint64_t t0 = atomic_load(&W->tick); /* acks that returned before this receive */
        int rc = shmq_receive(c, &m, 50);
        if (rc == -EAGAIN || rc == -ETIMEDOUT)
            continue;
        if (rc == 0) {
            struct t_rec *r = t_book_delivery(W->book, &m);
            if (r) {
                size_t idx = (size_t)(r - W->book->rec);
                id_check(m.id, idx);
                /* only an ack that returned before this receive was called counts: one that
                 * returned while the receive ran is concurrent with it (see the top) */
                uint32_t at = atomic_load(&W->ack_tick[idx]);
                bool overlap = atomic_load(&r->acked) && !(at && at <= t0);
                if (atomic_load(&r->acked) && !overlap)
                    acked_redelivered(r, &m, "consumer");
                atomic_store(&W->in_ack[a->slot], (int64_t)idx + 1);
                uint64_t losses = atomic_load(&W->losses);
                rc = t_ack(c, r, &m);
                if (overlap) {
                    atomic_fetch_add(&W->overlapped, 1);
                    fprintf(stderr, "segloss: overlapped: message %zu id %llu attempt %u flags %u "
                            "acked (ack tick %u, receive called at tick %llu); this delivery's "
                            "ack: %d\n", idx, (unsigned long long)m.id, m.attempt, m.flags, at,
                            (unsigned long long)t0, rc);
                }
                if (rc == 0) {
                    uint32_t zero = 0, now = (uint32_t)atomic_fetch_add(&W->tick, 1) + 1;
                    atomic_compare_exchange_strong(&W->ack_tick[idx], &zero, now);
                    atomic_store(&W->ack_id[idx], m.id);
                    atomic_store(&W->ack_losses[idx], (uint32_t)losses);
                }
                atomic_store(&W->in_ack[a->slot], 0);
            } else {
                rc = shmq_ack(c, &m);
            }
            if (rc == 0 || rc == -ESTALE)
                continue;
        }
        if (rc == -ESTALE) { /* fenced as hung: a new consumer */
            shmq_consumer_close(c);
            if (shmq_consumer_open(q, "segloss", &c) != 0)
                return 4;
            continue;
        }
        /* -EIDRM (an older generation), or the segment went bad: reopen */
        atomic_fetch_add(&W->eidrm, rc == -EIDRM);
        atomic_fetch_add(&W->reopens, 1);
        shmq_consumer_close(c);
        shmq_close(q);
        if (open_retry(a->name, &q) != 0 || shmq_consumer_open(q, "segloss", &c) != 0)
            return 5;
    }
}

static int maintainer(void *arg)
{
    const struct child_arg *a = arg;
    W = a->w;
    shmq_t *q;
    if (open_retry(a->name, &q) != 0)
        return 2;
    for (;;) {
        shmq_maint_report_t rep;
        int rc = shmq_maintain(q, &rep);
        if (rc && rc != -EBUSY) {
            atomic_fetch_add(&W->eidrm, rc == -EIDRM);
            shmq_close(q);
            if (open_retry(a->name, &q) != 0)
                return 3;
        }
        t_sleep_ms(5);
    }
}

/* Lose the segment: unlink it, or corrupt its first header byte (the magic). */
static void lose_segment(const char *name, uint64_t *rng)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
    if (t_rand(rng) & 1) {
        unlink(path);
        return;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    unsigned char b = 0;
    if (pread(fd, &b, 1, 0) == 1) {
        b ^= 0x5a;
        cr_assert_eq(pwrite(fd, &b, 1, 0), 1);
    }
    close(fd);
}

/*
 * Does the library fence a process that holds a lost segment? A handle publishes after another
 * rebuilt the segment: -EIDRM is the fence; 0 is the old behaviour (its message is lost).
 */
static bool fence_present(void)
{
    const char *name = t_qname("sl-probe");
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 8;
    cfg.max_msg_size = 64;
    shmq_t *old, *rebuilt;
    cr_assert_eq(shmq_create(name, &cfg, &old), 0);
    cr_assert_eq(shmq_publish(old, "a", 1, NULL), 0);
    cr_assert_eq(shmq_unlink_segment(name), 0);
    cr_assert_eq(shmq_open(name, &rebuilt), 0);
    int rc = shmq_publish(old, "b", 1, NULL);
    shmq_close(old);
    shmq_close(rebuilt);
    shmq_unlink(name);
    return rc == -EIDRM;
}

struct proc {
    pid_t pid;
    int kind; /* 0 producer, 1 consumer, 2 maintainer */
    int slot;
    bool stopped;
};

static pid_t spawn_kind(const char *name, int kind, int slot)
{
    struct child_arg a;
    memset(&a, 0, sizeof a);
    snprintf(a.name, sizeof a.name, "%s", name);
    a.slot = slot;
    a.w = W;
    int (*fn[])(void *) = {producer, consumer, maintainer};
    return t_spawn(fn[kind], &a, sizeof a);
}

/* SIGKILL p and reap it; a consumer killed inside shmq_ack may have acked. */
static void kill_proc(struct proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    int st = 0;
    t_wait(p->pid, 10000, 0, &st);
    if ((WIFEXITED(st) && WEXITSTATUS(st) != 0) ||
        (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)) { /* it ended by itself: say why */
        atomic_fetch_add(&W->child_failed, 1);
        fprintf(stderr, "segloss: a %s ended: status 0x%x\n",
                p->kind == 0 ? "producer" : p->kind == 1 ? "consumer" : "maintainer", st);
    }
    if (p->kind == 1) {
        int64_t in = atomic_exchange(&W->in_ack[p->slot], 0);
        if (in > 0)
            atomic_store(&W->book->rec[in - 1].ack_killed, 1);
    }
    p->pid = 0;
    p->stopped = false;
}

/* SHMQ_SEGLOSS_KEEP=DIR: at the first violation stop every child and copy the log to DIR. */
static void keep_log(const char *name, struct proc *procs, int np)
{
    for (int i = 0; i < np; i++)
        if (procs[i].pid > 0 && !procs[i].stopped) {
            kill(procs[i].pid, SIGSTOP);
            procs[i].stopped = true;
        }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp -aL %s/%s %s", getenv("SHMQ_STATE_DIR"), name,
             getenv("SHMQ_SEGLOSS_KEEP"));
    fprintf(stderr, "segloss: keeping the log: %s: %s\n", cmd, system(cmd) == 0 ? "ok" : "failed");
}

Test(segloss, random_kills_stops_and_segment_losses)
{
    const char *soak = getenv("SHMQ_SOAK_SECONDS");
    int soak_s = soak ? atoi(soak) : 0;
    cr_assert(fence_present(), "a process holding a lost segment was not fenced (-EIDRM) after "
                               "a rebuild: live segment losses would lose messages");

    W = t_shared(sizeof *W);
    W->book = t_book_new(NPROD, soak_s ? PER_SOAK : PER_CI);
    size_t nrec = (size_t)NPROD * W->book->per_producer;
    W->ack_id = t_shared(nrec * sizeof *W->ack_id);
    W->ack_losses = t_shared(nrec * sizeof *W->ack_losses);
    W->ack_tick = t_shared(nrec * sizeof *W->ack_tick);
    const char *name = t_qname("sl");
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = CAPACITY;
    cfg.max_msg_size = sizeof(struct t_wire);
    cfg.heartbeat_timeout_ms = 300;
    cfg.ack_deadline_ms = 2000;
    cfg.max_attempts = SHMQ_ATTEMPTS_MAX; /* never dead-letter: every message must come out of
                                           * the drain */
    cfg.wal_file_size = SHMQ_WAL_FILE_MIN;
    if (getenv("SHMQ_SEGLOSS_KEEP")) /* the post-mortem needs the id's old records */
        cfg.log_retention_bytes = 32u << 20;
    shmq_t *q;
    cr_assert_eq(shmq_create(name, &cfg, &q), 0);
    cr_assert_eq(shmq_close(q), 0);

    uint64_t rng = (uint64_t)t_now_us() ^ (uint64_t)getpid() << 32;
    fprintf(stderr, "segloss: seed %llu\n", (unsigned long long)rng);
    struct proc procs[NPROD + NCONS + 1];
    int np = 0;
    for (int i = 0; i < NPROD; i++)
        procs[np++] = (struct proc){0, 0, i, false};
    for (int i = 0; i < NCONS; i++)
        procs[np++] = (struct proc){0, 1, i, false};
    procs[np++] = (struct proc){0, 2, 0, false};

    uint64_t losses = 0, live_losses = 0, kills = 0, stops = 0, rounds = 0;
    bool kept = false;
    int64_t soak_end = t_now_ms() + (int64_t)soak_s * 1000;
    for (;; rounds++) {
        if (soak_s ? t_now_ms() >= soak_end : rounds >= SEGLOSS_ROUNDS)
            break;
        for (int i = 0; i < np; i++)
            if (procs[i].pid == 0)
                procs[i].pid = spawn_kind(name, procs[i].kind, procs[i].slot);
        int64_t end = t_now_ms() + 400;
        while (t_now_ms() < end) {
            t_sleep_ms(10 + (int)(t_rand(&rng) % 40)); /* the pace of the chaos, not a wait */
            if (atomic_load(&W->acked_redelivered) && !kept && getenv("SHMQ_SEGLOSS_KEEP")) {
                keep_log(name, procs, np); /* for the post-mortem: freeze everyone, copy */
                kept = true;
            }
            struct proc *p = &procs[t_rand(&rng) % (uint64_t)np];
            switch (t_rand(&rng) % 4) {
            case 0:
                kill_proc(p);
                p->pid = spawn_kind(name, p->kind, p->slot);
                kills++;
                break;
            case 1:
                if (p->pid > 0 && !p->stopped) {
                    kill(p->pid, SIGSTOP);
                    p->stopped = true;
                    stops++;
                }
                break;
            case 2:
                if (p->pid > 0 && p->stopped) {
                    kill(p->pid, SIGCONT);
                    p->stopped = false;
                }
                break;
            case 3:
                if ((t_rand(&rng) & 3) == 0) {
                    lose_segment(name, &rng);
                    losses++;
                    atomic_fetch_add(&W->losses, 1);
                    live_losses++;
                }
                break;
            }
        }
        for (int i = 0; i < np; i++)
            kill_proc(&procs[i]);
        lose_segment(name, &rng); /* quiesced: the next round's processes rebuild it at once */
        losses++;
        atomic_fetch_add(&W->losses, 1);
    }

    /* the final recovery, and the drain: everything published comes out */
    int orc = shmq_open(name, &q);
    if (orc == -ENOSPC) { /* say what the log holds: more unresolved messages than slots */
        shmq_recovery_report_t rep;
        shmq_recover(name, NULL, &rep);
        fprintf(stderr, "segloss: the log holds %llu unresolved messages for %u slots (%llu "
                "resolved, %u files)\n", (unsigned long long)rep.restored, CAPACITY,
                (unsigned long long)rep.resolved, rep.files);
        if (getenv("SHMQ_SEGLOSS_KEEP")) {
            char cmd[512];
            snprintf(cmd, sizeof cmd, "cp -a %s/%s /tmp/segloss-kept", getenv("SHMQ_STATE_DIR"), name);
            if (system(cmd) != 0)
                fprintf(stderr, "segloss: could not keep the log\n");
        }
    }
    cr_assert_eq(orc, 0, "the final recovery failed: %s", shmq_strerror(orc));
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open(q, "drain", &c), 0);
    int64_t drain_end = t_now_ms() + 120000;
    for (;;) {
        cr_assert_lt(t_now_ms(), drain_end, "the drain did not end within 120 s");
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 500);
        if (rc == -EAGAIN || rc == -ETIMEDOUT) {
            shmq_stats_t st;
            cr_assert_eq(shmq_stats(q, &st), 0);
            if (st.ready + st.inflight + st.delayed == 0)
                break;
            shmq_maintain(q, NULL);
            continue;
        }
        cr_assert_eq(rc, 0, "drain receive: %s", shmq_strerror(rc));
        struct t_rec *r = t_book_delivery(W->book, &m);
        if (r) {
            id_check(m.id, (size_t)(r - W->book->rec));
            if (atomic_load(&r->acked))
                acked_redelivered(r, &m, "drain");
        }
        rc = r ? t_ack(c, r, &m) : shmq_ack(c, &m);
        cr_assert_eq(rc, 0, "drain ack: %s", shmq_strerror(rc));
    }
    shmq_consumer_close(c);
    shmq_close(q);

    struct t_tally t = t_book_tally(W->book);
    fprintf(stderr,
            "segloss: %llu rounds, %llu segment losses survived (%llu live), %llu kills, %llu "
            "stops; published %llu, delivered %llu, acked %llu, lost %llu, killed in ack %llu, "
            "reopens %llu (-EIDRM %llu), id clashes %llu, acked then redelivered %llu, corrupt "
            "%llu, other errors %llu; redelivered to a receive that overlapped the ack %llu\n",
            (unsigned long long)rounds, (unsigned long long)losses,
            (unsigned long long)live_losses, (unsigned long long)kills,
            (unsigned long long)stops, (unsigned long long)t.published,
            (unsigned long long)t.delivered, (unsigned long long)t.acked_ok,
            (unsigned long long)t.lost, (unsigned long long)t.killed_in_ack,
            (unsigned long long)atomic_load(&W->reopens), (unsigned long long)atomic_load(&W->eidrm),
            (unsigned long long)atomic_load(&W->id_clash),
            (unsigned long long)atomic_load(&W->acked_redelivered),
            (unsigned long long)atomic_load(&W->book->corrupt),
            (unsigned long long)atomic_load(&W->book->other_errors),
            (unsigned long long)atomic_load(&W->overlapped));
    cr_expect_gt(t.published, 0u, "nothing was published");
    cr_expect_eq(atomic_load(&W->child_failed), 0u, "a child gave up (above)");
    cr_expect_eq(t.lost, 0u, "%llu published messages never delivered (first: rec %ld)",
                 (unsigned long long)t.lost, t.first_lost);
    cr_expect_eq(atomic_load(&W->id_clash), 0u, "an id was handed out for two messages");
    cr_expect_eq(atomic_load(&W->acked_redelivered), 0u, "acked messages came back");
    cr_expect_eq(t.double_acked, 0u, "a message was acked twice with success");
    cr_expect_eq(atomic_load(&W->book->corrupt), 0u, "corrupt deliveries");
    cr_expect_eq(atomic_load(&W->book->out_of_range), 0u, "deliveries of unknown messages");
}
