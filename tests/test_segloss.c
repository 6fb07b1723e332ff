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
 *
 * random_kills_stops_and_segment_losses_with_groups: the same with consumer groups (issue 18,
 * docs/DESIGN.md "The log with groups", rule R-G). The queue (max_groups 3) has "default", "a"
 * and "b" at the start, two consumers in "default" and one in each other group, all killed and
 * stopped like the rest. In round DEL_ROUND the test pauses a's and b's consumers (they receive
 * nothing, so the queue fills with messages both hold), then an admin child deletes "b",
 * creates "late" (at b's index: max_groups leaves no other), loses the segment and rebuilds it
 * before a's consumers go on: the rebuild reads late's create record after PUBLISH records whose
 * bit of that index is b's, of messages a still holds, and must give late none of them. (A call
 * that returned -EIDRM is made again on a fresh handle until it is answered; the admin is a
 * child so that a lock or a rebuild held by a stopped process stops it, not the chaos.) Each
 * group has its own book, so everything above holds per group: every publish that returned 0
 * is acked at least once in every group that existed when it began (for "late": began after
 * its create returned) and still exists at the end; no acked message of a group comes back in
 * that group; no corrupt payload in any group (the payload carries its checksum: a slot freed
 * or reused while a group still needs it shows up as torn). And "late" never gets a message
 * whose publish returned before its create began. At the end "b" must be gone and "late"
 * there. The soak keeps the book at 2^18 messages per producer (four books share the arena).
 * Checked to fail: recovery ignoring since_pos (R-G) gives late 2-65 of b's messages in 5 runs
 * of 6; ignoring the ACKs of groups >= 1 brings a's acked messages back; restoring group 0
 * alone loses a's and late's.
 */
#include "torture.h"

#include <fcntl.h>
#include <sys/stat.h>

#define SEGLOSS_ROUNDS 6
#define NPROD 2
#define NCONS_MAX 5
#define PER_CI (1u << 18)   /* message seqs per producer slot, over all incarnations */
#define PER_SOAK (1u << 21)
#define IDMAP_BITS 22
#define CAPACITY 64

/* The test's consumer groups (the groups variant; the first test has "default" alone). */
#define NGROUPS_MAX 4
#define G_B 2    /* "b": deleted in round DEL_ROUND */
#define G_LATE 3 /* "late": created once b's delete was answered (the same round, mostly) */
#define DEL_ROUND 2
static const char *const gname[NGROUPS_MAX] = {NULL, "a", "b", "late"}; /* NULL: "default" */

static void teardown(void) { t_teardown(); }

TestSuite(segloss, .init = t_setup, .fini = teardown, .timeout = 900);

/* What one consumer group did with the messages: its book, and per message its acks. */
struct gbook {
    struct t_book *book;
    _Atomic uint64_t *ack_id; /* per message: the id its successful ack named, losses then */
    _Atomic uint32_t *ack_losses;
    _Atomic uint32_t *ack_tick; /* per message: tick after its first successful ack returned */
    /* ticks (W->tick) around the group's create: 1 for a group there from the start, 0 while
     * not yet made. A publish that began after born must reach the group; one that returned
     * before born_begin must not (its mask bit at this index, if any, was an older group's). */
    _Atomic uint64_t born_begin, born;
};

struct world {
    uint32_t ngroups;           /* test groups (gname) */
    int ncons;                  /* consumer slots */
    int cons_group[NCONS_MAX];  /* consumer slot -> its test group */
    struct gbook g[NGROUPS_MAX];
    struct t_book *book;        /* g[0].book: the producers' (group "default") */
    _Atomic uint32_t *pub_done; /* per message: tick after its publish returned 0 */
    _Atomic uint32_t next_seq[NPROD];   /* the next seq of producer slot p */
    _Atomic int64_t in_ack[NCONS_MAX];  /* rec index + 1 a consumer is acking, 0 if none */
    _Atomic uint64_t idmap[1u << IDMAP_BITS]; /* (rec index + 1) << 40 | id: see id_check() */
    _Atomic uint64_t id_clash, acked_redelivered, eidrm, reopens, child_failed;
    _Atomic uint64_t losses; /* segment losses so far (diagnostics) */
    _Atomic uint64_t tick;   /* the order of publishes, ack returns and receive calls */
    _Atomic uint64_t overlapped; /* redelivered to a receive called before the ack returned */
    _Atomic uint64_t early;      /* a group got a message that returned before its create */
    _Atomic int paused[NGROUPS_MAX]; /* the group's consumers receive nothing while set */
    _Atomic int deleted, created;    /* the admin's delete of b and create of late answered */
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

/* A message whose ack returned 0 in group g was delivered again there: say what we know. */
static void acked_redelivered(uint32_t g, struct t_rec *r, const shmq_msg_t *m, const char *who)
{
    struct gbook *gb = &W->g[g];
    size_t idx = (size_t)(r - gb->book->rec);
    atomic_fetch_add(&W->acked_redelivered, 1);
    fprintf(stderr,
            "segloss: %s: group %s: message %zu (producer %zu seq %zu) acked with id %llu after "
            "%u losses, delivered again as id %llu attempt %u flags %u after %llu losses "
            "(delivered %u, acked %u, stale acks %u)\n",
            who, gname[g] ? gname[g] : "default", idx, idx / gb->book->per_producer,
            idx % gb->book->per_producer, (unsigned long long)atomic_load(&gb->ack_id[idx]),
            atomic_load(&gb->ack_losses[idx]), (unsigned long long)m->id, m->attempt, m->flags,
            (unsigned long long)atomic_load(&W->losses), atomic_load(&r->delivered),
            atomic_load(&r->acked), atomic_load(&r->ack_stale));
}

/* A delivery in group g: check it in g's book (the guard: checksum and length), that no id
 * names two messages, and that g existed when its publish began. Its record or NULL. */
static struct t_rec *delivered(uint32_t g, const shmq_msg_t *m)
{
    struct t_rec *r = t_book_delivery(W->g[g].book, m);
    if (!r)
        return NULL;
    size_t idx = (size_t)(r - W->g[g].book->rec);
    id_check(m->id, idx);
    uint64_t begin = atomic_load(&W->g[g].born_begin);
    uint32_t done = atomic_load(&W->pub_done[idx]);
    if (begin > 1 && done && done < begin) {
        atomic_fetch_add(&W->early, 1);
        fprintf(stderr, "segloss: group %s got message %zu id %llu, published (tick %u) before "
                "the group's create began (tick %llu)\n", gname[g], idx,
                (unsigned long long)m->id, done, (unsigned long long)begin);
    }
    return r;
}

/* Publish (slot, seq) until it is answered; on success, the books of the groups that existed
 * when it began count it published. 0 or the error that answered it. */
static int publish_seq(shmq_t *q, int slot, uint32_t seq)
{
    uint64_t t0 = atomic_fetch_add(&W->tick, 1) + 1; /* the publish begins after this */
    for (uint32_t g = 1; g < W->ngroups; g++)
        atomic_fetch_add(&t_rec_of(W->g[g].book, (uint32_t)slot, seq)->pub_begun, 1);
    int rc;
    while ((rc = t_publish(q, W->book, (uint32_t)slot, seq, 100)) == -EAGAIN || rc == -ETIMEDOUT)
        ;
    if (rc)
        return rc;
    struct t_rec *r0 = t_rec_of(W->book, (uint32_t)slot, seq);
    atomic_store(&W->pub_done[r0 - W->book->rec], (uint32_t)atomic_fetch_add(&W->tick, 1) + 1);
    for (uint32_t g = 1; g < W->ngroups; g++) {
        uint64_t born = atomic_load(&W->g[g].born);
        if (born && born < t0)
            atomic_fetch_add(&t_rec_of(W->g[g].book, (uint32_t)slot, seq)->published, 1);
    }
    return 0;
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
        int rc = publish_seq(q, a->slot, seq);
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

/* Open the queue and a consumer of group g. A group not made yet, or deleted (or not in the
 * segment this handle holds: a live loss), is -ENOENT: wait and reopen, until killed. */
static int consumer_open_retry(const char *name, uint32_t g, shmq_t **q, shmq_consumer_t **c)
{
    for (;;) {
        if (open_retry(name, q) != 0)
            return -1;
        int rc = shmq_consumer_open_group(*q, gname[g], "segloss", c);
        if (rc == 0)
            return 0;
        shmq_close(*q);
        if (rc != -ENOENT && rc != -EIDRM)
            return rc;
        t_sleep_ms(20);
    }
}

static int consumer(void *arg)
{
    const struct child_arg *a = arg;
    W = a->w;
    uint32_t g = (uint32_t)W->cons_group[a->slot];
    struct gbook *gb = &W->g[g];
    shmq_t *q;
    shmq_consumer_t *c;
    if (consumer_open_retry(a->name, g, &q, &c) != 0)
        return 2;
    for (;;) {
        while (atomic_load(&W->paused[g])) /* holds no delivery: see admin() */
            t_sleep_ms(5);
        shmq_msg_t m;
        uint64_t t0 = atomic_load(&W->tick); /* acks that returned before this receive */
        int rc = shmq_receive(c, &m, 50);
        if (rc == -EAGAIN || rc == -ETIMEDOUT)
            continue;
        if (rc == 0) {
            struct t_rec *r = delivered(g, &m);
            if (r) {
                size_t idx = (size_t)(r - gb->book->rec);
                /* only an ack that returned before this receive was called counts: one that
                 * returned while the receive ran is concurrent with it (see the top) */
                uint32_t at = atomic_load(&gb->ack_tick[idx]);
                bool overlap = atomic_load(&r->acked) && !(at && at <= t0);
                if (atomic_load(&r->acked) && !overlap)
                    acked_redelivered(g, r, &m, "consumer");
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
                    atomic_compare_exchange_strong(&gb->ack_tick[idx], &zero, now);
                    atomic_store(&gb->ack_id[idx], m.id);
                    atomic_store(&gb->ack_losses[idx], (uint32_t)losses);
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
            if ((rc = shmq_consumer_open_group(q, gname[g], "segloss", &c)) == 0)
                continue;
            c = NULL; /* its group went meanwhile, or the queue was rebuilt: as below */
        }
        /* -EIDRM (an older generation), the segment went bad, or the group was deleted
         * (-ENOENT): reopen */
        atomic_fetch_add(&W->eidrm, rc == -EIDRM);
        atomic_fetch_add(&W->reopens, 1);
        if (c)
            shmq_consumer_close(c);
        shmq_close(q);
        if (consumer_open_retry(a->name, g, &q, &c) != 0)
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

static void lose_segment(const char *name, uint64_t *rng);

/* One try of the delete of b (create false) or the create of late, on a handle of its own. True
 * once answered: the call returned 0, or what it did had counted already (a call that returned
 * -EIDRM may or may not have: the queue was rebuilt meanwhile). */
static bool group_op_try(const char *name, uint32_t g, bool create)
{
    shmq_t *q;
    if (open_retry(name, &q) != 0)
        return false;
    int rc = create ? shmq_group_create(q, gname[g], SHMQ_GROUP_BLOCK, 0)
                    : shmq_group_delete(q, gname[g]);
    if (rc == -ENOSPC) /* b's entry not free yet (a cell of b in flight): maintenance frees it */
        shmq_maintain(q, NULL);
    shmq_close(q);
    if (rc && rc != -EIDRM && rc != -EBUSY && rc != -ENOSPC && rc != (create ? -EEXIST : -ENOENT))
        fprintf(stderr, "segloss: group %s %s: %s\n", gname[g], create ? "create" : "delete",
                shmq_strerror(rc));
    return rc == 0 || rc == (create ? -EEXIST : -ENOENT);
}

/*
 * The groups variant's admin (a child, so that a lock or a rebuild held by a stopped process
 * stops it and not the chaos): deletes b, creates late (probably at b's index), loses the
 * segment and rebuilds it. The test pauses a's and b's consumers first (W->paused), so the log
 * then holds PUBLISH records of messages a still holds whose bit of that index is b's; the
 * rebuild reads late's create after them in one generation and must give late none of them
 * (rule R-G). Killed at a round's end, the next round's admin goes on where it was.
 */
static int admin(void *arg)
{
    const struct child_arg *a = arg;
    W = a->w;
    while (!atomic_load(&W->deleted)) {
        if (group_op_try(a->name, G_B, false))
            atomic_store(&W->deleted, 1);
        else
            t_sleep_ms(5);
    }
    struct gbook *gb = &W->g[G_LATE];
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&gb->born_begin, &zero, atomic_fetch_add(&W->tick, 1) + 1);
    while (!atomic_load(&gb->born)) {
        if (group_op_try(a->name, G_LATE, true))
            atomic_store(&gb->born, atomic_fetch_add(&W->tick, 1) + 1);
        else
            t_sleep_ms(5);
    }
    uint64_t rng = (uint64_t)t_now_us() | 1;
    lose_segment(a->name, &rng);
    atomic_fetch_add(&W->losses, 1);
    shmq_t *q;
    if (open_retry(a->name, &q) != 0) /* rebuilt while a's consumers are still paused */
        return 2;
    shmq_close(q);
    atomic_store(&W->created, 1);
    return 0;
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
        if (pwrite(fd, &b, 1, 0) != 1)
            fprintf(stderr, "segloss: could not corrupt the segment: %s\n", strerror(errno));
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
    int kind; /* 0 producer, 1 consumer, 2 maintainer, 3 admin */
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
    int (*fn[])(void *) = {producer, consumer, maintainer, admin};
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
                p->kind == 0   ? "producer"
                : p->kind == 1 ? "consumer"
                : p->kind == 2 ? "maintainer"
                               : "admin",
                st);
    }
    if (p->kind == 1) { /* in_ack names a record of the consumer's group's book */
        int64_t in = atomic_exchange(&W->in_ack[p->slot], 0);
        if (in > 0)
            atomic_store(&W->g[W->cons_group[p->slot]].book->rec[in - 1].ack_killed, 1);
    }
    p->pid = 0;
    p->stopped = false;
}

/* Message seqs the producers have begun to publish. */
static uint64_t seqs_begun(void)
{
    uint64_t n = 0;
    for (int i = 0; i < NPROD; i++)
        n += atomic_load(&W->next_seq[i]);
    return n;
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

/* The groups that exist (not deleting) in the queue: a bit per test group. */
static unsigned groups_present(shmq_t *q)
{
    shmq_group_info_t gi[SHMQ_GROUPS_MAX];
    size_t n = 0;
    cr_assert_eq(shmq_group_list(q, gi, SHMQ_GROUPS_MAX, &n), 0);
    unsigned have = 0;
    for (size_t i = 0; i < n; i++)
        for (uint32_t g = 0; g < W->ngroups; g++)
            if (!gi[i].deleting && strcmp(gi[i].name, gname[g] ? gname[g] : "default") == 0)
                have |= 1u << g;
    return have;
}

/* At a round's end (everyone killed; rebuilt here if a live loss was the last thing), does the
 * queue still have "default" and "a"? If not, say what the log holds and fail (this found a
 * group lost once in 53 runs under load, not yet explained: /work/notes/segloss.md). */
static void groups_kept(const char *name, uint64_t round)
{
    shmq_t *q;
    int rc = shmq_open(name, &q);
    cr_assert_eq(rc, 0, "rebuild after round %llu: %s", (unsigned long long)round,
                 shmq_strerror(rc));
    unsigned have = groups_present(q);
    shmq_close(q);
    if ((have & 3u) == 3u)
        return;
    char args[128];
    snprintf(args, sizeof args, "wal %s inspect", name);
    t_cli(args, 200);
    cr_assert_fail("after round %llu (%llu segment losses) the queue has groups 0x%x: a "
                   "group that was never deleted is gone", (unsigned long long)round,
                   (unsigned long long)atomic_load(&W->losses), have);
}

/* The final drain of group g: everything it holds comes out, checked and acked. */
static void drain(shmq_t *q, uint32_t g)
{
    shmq_consumer_t *c;
    cr_assert_eq(shmq_consumer_open_group(q, gname[g], "drain", &c), 0);
    int64_t drain_end = t_now_ms() + 120000;
    for (;;) {
        cr_assert_lt(t_now_ms(), drain_end, "the drain did not end within 120 s");
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 500);
        if (rc == -EAGAIN || rc == -ETIMEDOUT) {
            shmq_group_stats_t st;
            cr_assert_eq(shmq_group_stats(q, gname[g], &st), 0);
            if (st.ready + st.inflight + st.delayed == 0)
                break;
            shmq_maintain(q, NULL);
            continue;
        }
        cr_assert_eq(rc, 0, "drain receive: %s", shmq_strerror(rc));
        struct t_rec *r = delivered(g, &m);
        if (r && atomic_load(&r->acked))
            acked_redelivered(g, r, &m, "drain");
        rc = r ? t_ack(c, r, &m) : shmq_ack(c, &m);
        cr_assert_eq(rc, 0, "drain ack: %s", shmq_strerror(rc));
    }
    shmq_consumer_close(c);
}

static void run_segloss(uint32_t ngroups)
{
    const char *soak = getenv("SHMQ_SOAK_SECONDS");
    int soak_s = soak ? atoi(soak) : 0;
    cr_assert(fence_present(), "a process holding a lost segment was not fenced (-EIDRM) after "
                               "a rebuild: live segment losses would lose messages");

    W = t_shared(sizeof *W);
    W->ngroups = ngroups;
    /* two consumers compete in "default"; one in each other group */
    W->ncons = ngroups == 1 ? 2 : 1 + (int)ngroups;
    for (int i = 0; i < W->ncons; i++)
        W->cons_group[i] = i == 0 ? 0 : ngroups == 1 ? 0 : i - 1;
    uint32_t per = soak_s && ngroups == 1 ? PER_SOAK : PER_CI;
    size_t nrec = (size_t)NPROD * per;
    for (uint32_t g = 0; g < ngroups; g++) {
        struct gbook *gb = &W->g[g];
        gb->book = t_book_new(NPROD, per);
        gb->ack_id = t_shared(nrec * sizeof *gb->ack_id);
        gb->ack_losses = t_shared(nrec * sizeof *gb->ack_losses);
        gb->ack_tick = t_shared(nrec * sizeof *gb->ack_tick);
        if (g != G_LATE) /* there from the start */
            gb->born_begin = gb->born = 1;
    }
    W->book = W->g[0].book;
    W->pub_done = t_shared(nrec * sizeof *W->pub_done);
    W->tick = 1;
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
    if (ngroups > 1)
        cfg.max_groups = ngroups - 1; /* three at once: "late" takes b's index */
    if (getenv("SHMQ_SEGLOSS_KEEP")) /* the post-mortem needs the id's old records */
        cfg.log_retention_bytes = 32u << 20;
    shmq_t *q;
    cr_assert_eq(shmq_create(name, &cfg, &q), 0);
    for (uint32_t g = 1; g < ngroups; g++)
        if (g != G_LATE)
            cr_assert_eq(shmq_group_create(q, gname[g], SHMQ_GROUP_BLOCK, 0), 0);
    cr_assert_eq(shmq_close(q), 0);

    uint64_t rng = (uint64_t)t_now_us() ^ (uint64_t)getpid() << 32;
    fprintf(stderr, "segloss: seed %llu, %u groups\n", (unsigned long long)rng, ngroups);
    struct proc procs[NPROD + NCONS_MAX + 1];
    int np = 0;
    for (int i = 0; i < NPROD; i++)
        procs[np++] = (struct proc){0, 0, i, false};
    for (int i = 0; i < W->ncons; i++)
        procs[np++] = (struct proc){0, 1, i, false};
    procs[np++] = (struct proc){0, 2, 0, false};

    uint64_t kills = 0, stops = 0, rounds = 0;
    bool kept = false, b_killed = false;
    struct proc adm = {0, 3, 0, false}; /* the groups variant's admin, not in the chaos */
    if (ngroups == 1)
        W->deleted = W->created = 1;
    int64_t soak_end = t_now_ms() + (int64_t)soak_s * 1000;
    for (;; rounds++) {
        if (soak_s ? t_now_ms() >= soak_end : rounds >= SEGLOSS_ROUNDS)
            break;
        for (int i = 0; i < np; i++)
            if (procs[i].pid == 0)
                procs[i].pid = spawn_kind(name, procs[i].kind, procs[i].slot);
        int64_t start = t_now_ms(), end = start + 400, paused_ms = 0;
        uint64_t paused_at = 0; /* seqs begun when a and b were paused */
        /* the round of the groups' delete and create lasts until both are answered (3 s) */
        while (t_now_ms() < end ||
               (!W->created && rounds >= DEL_ROUND && t_now_ms() < start + 3000)) {
            t_sleep_ms(10 + (int)(t_rand(&rng) % 40)); /* the pace of the chaos, not a wait */
            if (atomic_load(&W->acked_redelivered) && !kept && getenv("SHMQ_SEGLOSS_KEEP")) {
                keep_log(name, procs, np); /* for the post-mortem: freeze everyone, copy */
                kept = true;
            }
            bool due = !atomic_load(&W->created) && rounds >= DEL_ROUND;
            if (due && !paused_ms && t_now_ms() >= start + 50) {
                atomic_store(&W->paused[1], 1);
                atomic_store(&W->paused[G_B], 1);
                paused_at = seqs_begun();
                paused_ms = t_now_ms();
            }
            /* the admin starts once some messages were published since: both a and b hold
             * them (unless the queue was full of messages one of them alone held: then soon) */
            if (due && paused_ms && adm.pid == 0 &&
                (seqs_begun() >= paused_at + 8 || t_now_ms() >= paused_ms + 500))
                adm.pid = spawn_kind(name, adm.kind, adm.slot);
            if (atomic_load(&W->deleted) && !b_killed) { /* b's in-flight cells go at once */
                for (int i = 0; i < np; i++)
                    if (procs[i].kind == 1 && W->cons_group[procs[i].slot] == G_B) {
                        kill_proc(&procs[i]);
                        procs[i].pid = spawn_kind(name, procs[i].kind, procs[i].slot);
                    }
                b_killed = true;
            }
            if (atomic_load(&W->created) && atomic_load(&W->paused[1])) {
                fprintf(stderr, "segloss: b deleted, late created, segment lost and rebuilt in "
                        "round %llu\n", (unsigned long long)rounds);
                atomic_store(&W->paused[1], 0);
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
            case 3: /* not between b's delete and late's create: their one generation */
                if ((t_rand(&rng) & 3) == 0 &&
                    atomic_load(&W->deleted) == atomic_load(&W->created)) {
                    lose_segment(name, &rng);
                    atomic_fetch_add(&W->losses, 1);
                }
                break;
            }
        }
        for (int i = 0; i < np; i++)
            kill_proc(&procs[i]);
        kill_proc(&adm);
        if (ngroups > 1) /* default and a live through every rebuild (b and late: the admin's) */
            groups_kept(name, rounds);
        lose_segment(name, &rng); /* quiesced: the next round's processes rebuild it at once */
        atomic_fetch_add(&W->losses, 1);
    }
    cr_assert(W->deleted && W->created, "the delete of b or the create of late was never "
              "answered");

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
    unsigned want = ngroups == 1 ? 1u : (1u << ngroups) - 1 - (1u << G_B);
    unsigned have = groups_present(q);
    cr_expect_eq(have, want, "groups at the end: 0x%x, not 0x%x (b deleted, late made)", have,
                 want);
    for (uint32_t g = 0; g < ngroups; g++)
        if (have & want & 1u << g)
            drain(q, g);
    shmq_close(q);

    fprintf(stderr,
            "segloss: %llu rounds, %llu segment losses survived (%llu live), %llu kills, %llu "
            "stops; reopens %llu (-EIDRM %llu), id clashes %llu, acked then redelivered %llu, "
            "redelivered to a receive that overlapped the ack %llu, given to a group made after "
            "it %llu\n",
            (unsigned long long)rounds, (unsigned long long)atomic_load(&W->losses),
            (unsigned long long)(atomic_load(&W->losses) - rounds), (unsigned long long)kills,
            (unsigned long long)stops, (unsigned long long)atomic_load(&W->reopens),
            (unsigned long long)atomic_load(&W->eidrm),
            (unsigned long long)atomic_load(&W->id_clash),
            (unsigned long long)atomic_load(&W->acked_redelivered),
            (unsigned long long)atomic_load(&W->overlapped),
            (unsigned long long)atomic_load(&W->early));
    for (uint32_t g = 0; g < ngroups; g++) {
        struct t_book *b = W->g[g].book;
        struct t_tally t = t_book_tally(b);
        const char *gn = gname[g] ? gname[g] : "default";
        fprintf(stderr,
                "segloss: group %s: published %llu, delivered %llu, acked %llu, lost %llu, "
                "killed in ack %llu, corrupt %llu, other errors %llu\n",
                gn, (unsigned long long)t.published, (unsigned long long)t.delivered,
                (unsigned long long)t.acked_ok, (unsigned long long)t.lost,
                (unsigned long long)t.killed_in_ack, (unsigned long long)atomic_load(&b->corrupt),
                (unsigned long long)atomic_load(&b->other_errors));
        cr_expect_eq(atomic_load(&b->corrupt), 0u, "group %s: corrupt deliveries", gn);
        cr_expect_eq(atomic_load(&b->out_of_range), 0u, "group %s: unknown messages", gn);
        cr_expect_eq(t.double_acked, 0u, "group %s: a message was acked twice with success", gn);
        if (!(want & 1u << g))
            continue; /* b: deleted, nothing owed */
        cr_expect_gt(t.published, 0u, "group %s: nothing was published", gn);
        cr_expect_eq(t.lost, 0u, "group %s: %llu published messages never delivered (first: "
                     "rec %ld)", gn, (unsigned long long)t.lost, t.first_lost);
    }
    cr_expect_eq(atomic_load(&W->child_failed), 0u, "a child gave up (above)");
    cr_expect_eq(atomic_load(&W->id_clash), 0u, "an id was handed out for two messages");
    cr_expect_eq(atomic_load(&W->acked_redelivered), 0u, "acked messages came back");
    cr_expect_eq(atomic_load(&W->early), 0u, "a group got a message published before it");
}

Test(segloss, random_kills_stops_and_segment_losses)
{
    run_segloss(1);
}

Test(segloss, random_kills_stops_and_segment_losses_with_groups)
{
    run_segloss(NGROUPS_MAX);
}
