/*
 * test_groups.c - consumer groups (fan-out, docs/DESIGN.md "Consumer groups"): the group table,
 * one payload delivered to every group, a slot freed only when every group is done with it.
 *
 *  - table: create, list, delete, the limits and errors (names, -EEXIST, -ENOSPC, -EPERM for
 *    "default", -ENOENT), max_groups 1 (no room), a consumer of a deleted group gets -ENOENT.
 *  - exactly_once_per_group: three producers, three groups of two consumers each: every group
 *    receives every message exactly once, each consumer in order per producer, and every payload
 *    carries a guard pattern checked at each receive (a slot reused under a group that still
 *    holds it shows up as a torn guard); all slots free at the end.
 *  - slot_held_until_every_group_is_done: a full queue stays full until the last group acks.
 *  - delete_releases_what_the_group_held: a group that holds every slot is deleted: the slots
 *    come back; its in-flight message is still acked by its holder.
 *  - token_names_its_group: a token acked through a consumer of another group is -EINVAL, a
 *    stale one -ESTALE; nack and dead letters are the group's own.
 *  - producer_killed_after_commit_is_fanned_out_by_maintenance (fanout_after_commit): P1 done,
 *    no group's cell moved on: maintenance delivers it to every group.
 *  - producer_killed_after_fill_is_helped_by_the_next (fan_after_fill): the fan-out ring's
 *    filler killed before moving fan_head: the next publish helps, both arrive, in order.
 *  - consumer_killed_after_take_is_delivered_after_repair (fan_after_take): a taker killed
 *    after moving its group's cursor, before its claim: the repair delivers it.
 *  - released_slots_do_not_pile_up_on_the_free_ring: a slot the last group releases goes onto
 *    the free ring only when an ack's F3 would put it there.
 *  - producer_killed_after_prepare_leaves_no_cell_behind (fanout_after_prepare): the dead
 *    reservation is freed with its prepared cells, so the slot's next message reaches group a.
 *  - consumer_killed_before_release_is_freed_by_maintenance (group_release_before_free): the
 *    last group acked and died before freeing the slot: maintenance frees it.
 *  - consumer_killed_before_count_down_is_repaired (group_done_before_count): the last group's
 *    cell went FREE and its finisher died before counting itself out of the release count:
 *    maintenance recounts from the cells and frees the slot.
 *  - stopped_count_down_leaves_the_next_message_alone (group_done_before_count, SIGSTOP): the
 *    same finisher stopped there; maintenance repairs and the slot is reused; the finisher,
 *    continued, must not count down the next message (its tag), which group a still holds.
 *  - group_sleeper_killed_is_uncounted_from_its_own_group: a group g consumer killed asleep in
 *    receive is uncounted from group g's waiter count, not group 0's, whose sleeper the next
 *    publish must still wake.
 *  - delete_wakes_the_groups_sleepers: a receive asleep in a deleted group ends with -ENOENT.
 *  - a_late_fanout_commit_leaves_the_next_message_of_its_slot_alone (fanout_after_commit and
 *    fanout_after_prepare, two threads of one process parked): a stale F4 must not commit the
 *    cell another thread of the process prepared for the slot's next message.
 *
 * shmq-test-label: threaded
 */
#include "helpers.h"
#include "gcell.h"

#include <pthread.h>
#include <stdatomic.h>

TestSuite(groups, .fini = h_cleanup, .timeout = 240);

static shmq_config_t groups_config(uint32_t capacity, uint32_t max_groups)
{
    shmq_config_t cfg = h_small_config(capacity, 256, 64);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_groups = max_groups;
    cfg.ack_deadline_ms = 600000;
    cfg.heartbeat_timeout_ms = 60000;
    return cfg;
}

Test(groups, table)
{
    const char *name = h_qname("gtable");
    shmq_config_t cfg = groups_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_group_info_t gi[8];
    size_t n = 0;
    h_assert_rc(shmq_group_list(q, gi, 8, &n), 0);
    cr_assert(n == 1 && gi[0].index == 0 && strcmp(gi[0].name, "default") == 0, "n %zu", n);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), -EEXIST);
    h_assert_rc(shmq_group_create(q, "bad name", SHMQ_GROUP_BLOCK, 0), -EINVAL);
    h_assert_rc(shmq_group_create(q, "", SHMQ_GROUP_BLOCK, 0), -EINVAL);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_OVERRUN, 0), -EINVAL);
    h_assert_rc(shmq_group_create(q, "b", 7, 0), -EINVAL);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_OVERRUN, 100), 0);
    h_assert_rc(shmq_group_create(q, "c", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "d", SHMQ_GROUP_BLOCK, 0), -ENOSPC);
    h_assert_rc(shmq_group_list(q, gi, 8, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert(strcmp(gi[1].name, "audit") == 0 && strcmp(gi[2].name, "b") == 0 &&
              gi[2].policy == SHMQ_GROUP_OVERRUN && gi[2].bound == 100 && gi[1].first_id == 1);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open_group(q, "nope", "c", &c), -ENOENT);
    h_assert_rc(shmq_consumer_open_group(q, "audit", "c", &c), 0);
    h_assert_rc(shmq_group_delete(q, "default"), -EPERM);
    h_assert_rc(shmq_group_delete(q, "nope"), -ENOENT);
    h_assert_rc(shmq_group_delete(q, "audit"), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -ENOENT);
    h_assert_rc(shmq_receive(c, &m, 100), -ENOENT);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_group_list(q, gi, 8, &n), 0);
    cr_assert_eq(n, 3, "the deleted group is gone from the list (its sweep was clean)");
    h_assert_rc(shmq_group_create(q, "d", SHMQ_GROUP_BLOCK, 0), 0); /* its entry was freed */
    h_assert_rc(shmq_close(q), 0);

    const char *one = h_qname("gone");
    cfg = groups_config(16, 1);
    h_assert_rc(shmq_create(one, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), -ENOSPC);
    h_assert_rc(shmq_close(q), 0);
    cfg.max_groups = 0;
    h_assert_rc(shmq_create(h_qname("zero"), &cfg, &q), -EINVAL);
    cfg.max_groups = SHMQ_GROUPS_MAX + 1;
    h_assert_rc(shmq_create(h_qname("many"), &cfg, &q), -EINVAL);
    /* the log carries groups (test_grouplog.c): a logged queue may have them */
    cfg.max_groups = 2;
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    h_assert_rc(shmq_create(h_qname("logged"), &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_close(q), 0);
}

#define PRODUCERS 3
#define PER_PRODUCER 4000
#define GROUPS 3
#define CONSUMERS_PER_GROUP 2
#define GUARD_WORDS 24

struct payload {
    uint32_t producer, seq;
    uint64_t guard[GUARD_WORDS]; /* (producer, seq) spread over the payload */
};

static uint64_t guard_word(uint32_t p, uint32_t s, int i)
{
    uint64_t x = ((uint64_t)p << 32 | s) * 0x9e3779b97f4a7c15ull + (uint64_t)i;
    return x ^ (x >> 29);
}

static const char *group_names[GROUPS] = {NULL, "audit", "billing"};

struct run {
    shmq_t *q;
    uint32_t producer;
    uint32_t group;
    _Atomic uint32_t *seen;       /* [GROUPS][PRODUCERS][PER_PRODUCER] deliveries */
    _Atomic uint32_t *done;       /* per group: messages acked */
    _Atomic int bad;              /* torn guards, out-of-order deliveries */
};

static struct run *the_run;

static void *producer_main(void *arg)
{
    struct run *r = arg;
    for (uint32_t s = 0; s < PER_PRODUCER; s++) {
        struct payload p = {.producer = r->producer, .seq = s};
        for (int i = 0; i < GUARD_WORDS; i++)
            p.guard[i] = guard_word(r->producer, s, i);
        int err;
        while ((err = shmq_publish_timed(r->q, &p, sizeof p, NULL, 100)) == -ETIMEDOUT)
            ;
        cr_assert_eq(err, 0, "publish: %s", shmq_strerror(err));
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct run *r = arg;
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open_group(r->q, group_names[r->group], "c", &c), 0);
    int64_t last[PRODUCERS] = {-1, -1, -1};
    uint32_t total = PRODUCERS * PER_PRODUCER;
    int64_t deadline = h_now_ms() + 120000;
    while (atomic_load(&r->done[r->group]) < total && h_now_ms() < deadline) {
        shmq_msg_t m;
        int err = shmq_receive(c, &m, 50);
        if (err == -ETIMEDOUT)
            continue;
        cr_assert_eq(err, 0, "receive: %s", shmq_strerror(err));
        struct payload p;
        cr_assert_eq(m.len, sizeof p);
        memcpy(&p, m.data, sizeof p);
        bool ok = p.producer < PRODUCERS && p.seq < PER_PRODUCER;
        for (int i = 0; ok && i < GUARD_WORDS; i++)
            ok = p.guard[i] == guard_word(p.producer, p.seq, i);
        if (ok && (int64_t)p.seq <= last[p.producer])
            ok = false; /* out of order for this consumer */
        if (!ok) {
            atomic_fetch_add(&r->bad, 1);
        } else {
            last[p.producer] = p.seq;
            atomic_fetch_add(&r->seen[(r->group * PRODUCERS + p.producer) * PER_PRODUCER + p.seq], 1);
        }
        h_assert_rc(shmq_ack(c, &m), 0);
        atomic_fetch_add(&r->done[r->group], 1);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    return NULL;
}

Test(groups, exactly_once_per_group)
{
    const char *name = h_qname("once");
    shmq_config_t cfg = groups_config(64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "billing", SHMQ_GROUP_BLOCK, 0), 0);
    static _Atomic uint32_t seen[GROUPS * PRODUCERS * PER_PRODUCER];
    static _Atomic uint32_t done[GROUPS];
    struct run base = {.q = q, .seen = seen, .done = done};
    the_run = &base;
    struct run prod[PRODUCERS], cons[GROUPS * CONSUMERS_PER_GROUP];
    pthread_t pt[PRODUCERS], ct[GROUPS * CONSUMERS_PER_GROUP];
    for (int i = 0; i < GROUPS * CONSUMERS_PER_GROUP; i++) {
        cons[i] = base;
        cons[i].group = (uint32_t)(i / CONSUMERS_PER_GROUP);
        cr_assert_eq(pthread_create(&ct[i], NULL, consumer_main, &cons[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        prod[i] = base;
        prod[i].producer = (uint32_t)i;
        cr_assert_eq(pthread_create(&pt[i], NULL, producer_main, &prod[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    for (int i = 0; i < GROUPS * CONSUMERS_PER_GROUP; i++)
        pthread_join(ct[i], NULL);
    int bad = 0;
    for (int i = 0; i < GROUPS * CONSUMERS_PER_GROUP; i++)
        bad += atomic_load(&cons[i].bad);
    cr_assert_eq(bad, 0, "%d deliveries torn or out of order", bad);
    for (int g = 0; g < GROUPS; g++)
        for (int p = 0; p < PRODUCERS; p++)
            for (int s = 0; s < PER_PRODUCER; s++) {
                uint32_t k = atomic_load(&seen[(g * PRODUCERS + p) * PER_PRODUCER + s]);
                cr_assert_eq(k, 1, "group %d producer %d seq %d delivered %u times", g, p, s, k);
            }
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert(st.ready == 0 && st.inflight == 0, "ready %u inflight %u", st.ready, st.inflight);
    /* every slot free again: capacity publishes succeed without a consumer */
    for (uint32_t i = 0; i < cfg.capacity; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), -EAGAIN);
    h_assert_rc(shmq_close(q), 0);
}

Test(groups, slot_held_until_every_group_is_done)
{
    const char *name = h_qname("held");
    shmq_config_t cfg = groups_config(2, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    h_assert_rc(shmq_publish(q, "one", 3, NULL), 0);
    h_assert_rc(shmq_publish(q, "two", 3, NULL), 0);
    h_assert_rc(shmq_publish(q, "three", 5, NULL), -EAGAIN);
    shmq_msg_t m0, m1, a0;
    h_assert_rc(shmq_receive(c0, &m0, 0), 0);
    h_assert_rc(shmq_receive(c0, &m1, 0), 0);
    h_assert_rc(shmq_receive(ca, &a0, 0), 0);
    cr_assert(a0.data == m0.data && a0.id == m0.id, "one payload, one pointer for both groups");
    cr_assert(memcmp(a0.data, "one", 3) == 0);
    h_assert_rc(shmq_ack(c0, &m0), 0);
    h_assert_rc(shmq_ack(c0, &m1), 0);
    h_assert_rc(shmq_publish(q, "three", 5, NULL), -EAGAIN); /* group a holds both */
    h_assert_rc(shmq_ack(ca, &a0), 0);
    h_assert_rc(shmq_publish(q, "three", 5, NULL), 0); /* the first slot came back */
    h_assert_rc(shmq_publish(q, "four", 4, NULL), -EAGAIN);
    h_assert_rc(shmq_ack(ca, &a0), -ESTALE);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(groups, delete_releases_what_the_group_held)
{
    const char *name = h_qname("del");
    shmq_config_t cfg = groups_config(4, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "slow", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *cs;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "slow", "cs", &cs), 0);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, &i, sizeof i, NULL), 0);
    shmq_msg_t held, m;
    h_assert_rc(shmq_receive(cs, &held, 0), 0);
    for (int i = 0; i < 4; i++) {
        h_assert_rc(shmq_receive(c0, &m, 0), 0);
        h_assert_rc(shmq_ack(c0, &m), 0);
    }
    h_assert_rc(shmq_publish(q, "x", 1, NULL), -EAGAIN); /* "slow" holds all four */
    h_assert_rc(shmq_group_delete(q, "slow"), 0);
    /* the three it had not taken are released; the one in flight waits for its holder */
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), -EAGAIN);
    h_assert_rc(shmq_receive(cs, &m, 0), -ENOENT);
    h_assert_rc(shmq_ack(cs, &held), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    shmq_group_info_t gi[4];
    size_t n;
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0); /* its entry is freed once nothing is held */
    h_assert_rc(shmq_group_list(q, gi, 4, &n), 0);
    cr_assert_eq(n, 1, "%zu groups listed", n);
    h_assert_rc(shmq_consumer_close(cs), 0);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(groups, token_names_its_group)
{
    const char *name = h_qname("token");
    shmq_config_t cfg = groups_config(8, 4);
    cfg.max_attempts = 2;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m0, a0, a1;
    h_assert_rc(shmq_receive(c0, &m0, 0), 0);
    h_assert_rc(shmq_receive(ca, &a0, 0), 0);
    h_assert_rc(shmq_ack(c0, &a0), -EINVAL); /* a token of group a */
    h_assert_rc(shmq_ack(ca, &m0), -EINVAL); /* a token of group 0 */
    /* a nack in group a redelivers in group a only, with group a's attempts */
    h_assert_rc(shmq_nack(ca, &a0, 0 + 1), 0);
    h_assert_rc(shmq_ack(ca, &a0), -ESTALE);
    shmq_msg_t again;
    h_assert_rc(shmq_receive(c0, &again, 0), -EAGAIN);
    shmq_maint_report_t rep;
    int64_t until = h_now_ms() + 20000;
    int err;
    while ((err = shmq_receive(ca, &a1, 0)) == -EAGAIN && h_now_ms() < until) {
        h_assert_rc(shmq_maintain(q, &rep), 0); /* fires the delayed nack */
        h_sleep_ms(5);
    }
    h_assert_rc(err, 0);
    cr_assert(a1.id == a0.id && a1.attempt == 2, "attempt %u", a1.attempt);
    /* its last attempt: a nack sends it to group a's dead letters, group 0 is unaffected */
    h_assert_rc(shmq_nack(ca, &a1, 0), 0);
    h_assert_rc(shmq_ack(c0, &m0), 0);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* The index of q's group name (asserted to exist and not to be "default"). */
static uint32_t group_index(shmq_t *q, const char *name)
{
    shmq_group_info_t gl[4];
    size_t n = 0;
    uint32_t gi = 0;
    h_assert_rc(shmq_group_list(q, gl, 4, &n), 0);
    for (size_t i = 0; i < n && i < 4; i++)
        if (strcmp(gl[i].name, name) == 0)
            gi = gl[i].index;
    cr_assert(gi > 0, "no group %s", name);
    return gi;
}

/* Crash points of the fan-out (docs/DESIGN.md, "Crash windows of groups"): a child forked before
 * the test's first library call (helpers.h) is killed at one, then maintenance must answer. */
static const char *crash_name;

/* publish "fan" (role 'p'), or receive and ack one message in group "a" (role 'a'); killed at
 * the crash point in arg */
struct crash_child {
    const char *point;
    char role;
    bool stop; /* stopped (SIGSTOP) at the point, not killed */
};

static int crash_child_main(void *arg)
{
    const struct crash_child *cc = arg;
    setenv("SHMQ_CRASH_AT", cc->point, 1);
    if (cc->stop)
        setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    if (cc->role == 'p') {
        shmq_publish(q, "fan", 3, NULL);
        return 12; /* not killed at its crash point */
    }
    if (cc->role == 'd') {
        shmq_group_delete(q, "a");
        return 12;
    }
    shmq_consumer_t *c;
    shmq_msg_t m;
    if (shmq_consumer_open_group(q, "a", "child", &c) || shmq_receive(c, &m, 10000))
        return 11;
    shmq_ack(c, &m);
    return 12;
}

static shmq_t *crash_queue(uint32_t capacity, const struct crash_child *cc, pid_t *child)
{
    *child = h_fork_gated(crash_child_main, (void *)cc);
    shmq_config_t cfg = groups_config(capacity, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    return q;
}

static void wait_killed(pid_t k, const char *point)
{
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the child was not killed at %s (status %d)", point, st);
}

/* Receive want in both groups (default through c0, "a" through ca), maintaining meanwhile, at
 * most 20 s; acks what it receives. */
static void both_groups_receive(shmq_t *q, shmq_consumer_t *c0, shmq_consumer_t *ca,
                                const char *want)
{
    bool got0 = false, gota = false;
    int64_t until = h_now_ms() + 20000;
    while ((!got0 || !gota) && h_now_ms() < until) {
        shmq_maintain(q, NULL);
        shmq_msg_t m;
        for (int k = 0; k < 2; k++) {
            shmq_consumer_t *c = k ? ca : c0;
            int rc = shmq_receive(c, &m, 10);
            if (rc == -ETIMEDOUT || rc == -EAGAIN)
                continue;
            h_assert_rc(rc, 0);
            if (m.len == strlen(want) && memcmp(m.data, want, m.len) == 0)
                *(k ? &gota : &got0) = true;
            h_assert_rc(shmq_ack(c, &m), 0);
        }
    }
    cr_assert(got0, "group default never received '%s'", want);
    cr_assert(gota, "group a never received '%s'", want);
}

Test(groups, producer_killed_after_commit_is_fanned_out_by_maintenance)
{
    crash_name = h_qname("kcommit");
    struct crash_child cc = {"fanout_after_commit", 'p', false};
    pid_t k;
    shmq_t *q = crash_queue(4, &cc, &k);
    h_open_gate(k);
    wait_killed(k, cc.point);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    both_groups_receive(q, c0, ca, "fan");
    shmq_consumer_close(c0);
    shmq_consumer_close(ca);
    shmq_close(q);
}

Test(groups, producer_killed_after_prepare_leaves_no_cell_behind)
{
    crash_name = h_qname("kprep");
    struct crash_child cc = {"fanout_after_prepare", 'p', false};
    pid_t k;
    shmq_t *q = crash_queue(1, &cc, &k);
    h_open_gate(k);
    wait_killed(k, cc.point);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.reservations_freed, 1);
    /* the one slot again, with its cell of group a prepared anew: both groups get "next" */
    h_assert_rc(shmq_publish(q, "next", 4, NULL), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    both_groups_receive(q, c0, ca, "next");
    shmq_consumer_close(c0);
    shmq_consumer_close(ca);
    shmq_close(q);
}

/* Receive want in c now (no wait, no maintenance: what the fan-out ring carries by itself, after
 * publishes that returned). */
static void receive_now(shmq_consumer_t *c, const char *want)
{
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0,
              "received '%.*s', not '%s'", (int)m.len, (const char *)m.data, want);
    h_assert_rc(shmq_ack(c, &m), 0);
}

/* The fan-out ring (docs/DESIGN.md, "The fan-out ring"): a producer killed after its fill (FH1)
 * and before it moved fan_head (FH2) left no hole: the next publish helps fan_head past it and
 * fills the next position, and both groups receive both messages in order, through the ring
 * alone (no maintenance pass: the repair would not touch them, they are reachable). */
Test(groups, producer_killed_after_fill_is_helped_by_the_next)
{
    crash_name = h_qname("kfill");
    struct crash_child cc = {"fan_after_fill", 'p', false};
    pid_t k;
    shmq_t *q = crash_queue(4, &cc, &k);
    h_open_gate(k);
    wait_killed(k, cc.point);
    h_assert_rc(shmq_publish(q, "next", 4, NULL), 0); /* helps, then fills after "fan" */
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    receive_now(c0, "fan");
    receive_now(c0, "next");
    receive_now(ca, "fan");
    receive_now(ca, "next");
    shmq_consumer_close(c0);
    shmq_consumer_close(ca);
    shmq_close(q);
}

/* A consumer of group a killed after it took a position of the fan-out ring (FC2, its cursor
 * moved past the message) and before its claim: the cell stays pending behind a's cursor, which
 * no receive reaches any more; maintenance's fan-out repair makes it READY on a's ring after the
 * grace, and a's next consumer receives it. */
Test(groups, consumer_killed_after_take_is_delivered_after_repair)
{
    crash_name = h_qname("ktake");
    struct crash_child cc = {"fan_after_take", 'a', false};
    pid_t k;
    shmq_t *q = crash_queue(4, &cc, &k);
    h_assert_rc(shmq_publish(q, "fan", 3, NULL), 0);
    h_open_gate(k);
    wait_killed(k, cc.point);
    shmq_consumer_t *ca;
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(ca, &m, 0), -EAGAIN); /* behind the cursor: not in the ring */
    int rc = -EAGAIN;
    for (int64_t until = h_now_ms() + 20000; rc != 0 && h_now_ms() < until;) {
        h_assert_rc(shmq_maintain(q, NULL), 0);
        rc = shmq_receive(ca, &m, 20);
        cr_assert(rc == 0 || rc == -ETIMEDOUT, "receive: %d", rc);
    }
    h_assert_rc(rc, 0);
    cr_assert(m.len == 3 && memcmp(m.data, "fan", 3) == 0);
    h_assert_rc(shmq_ack(ca, &m), 0);
    shmq_consumer_close(ca);
    shmq_close(q);
}

/* A slot freed by the last group's release goes onto the free ring only as an ack's F3 says (the
 * slot before it not FREE): producers claim at their cursor, so entries for every release piled
 * up as stale ones until the ring was full and each enqueue scanned all of it. Sequential
 * publish, receive and ack in both groups: the free ring holds no more than it began with. */
Test(groups, released_slots_do_not_pile_up_on_the_free_ring)
{
    const char *name = h_qname("gfree");
    shmq_config_t cfg = groups_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    struct ring *fr = &q->seg.free_ring;
    uint64_t before = ring_tail(fr) - ring_head(fr);
    for (int i = 0; i < 1000; i++) {
        h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
        receive_now(c0, "m");
        receive_now(ca, "m"); /* the last group: its release frees the slot */
    }
    uint64_t after = ring_tail(fr) - ring_head(fr);
    cr_assert(after <= before, "free ring entries %llu, %llu before",
              (unsigned long long)after, (unsigned long long)before);
    shmq_consumer_close(c0);
    shmq_consumer_close(ca);
    shmq_close(q);
}

/* One slot, group 0 done with its message (HELD for group a); the child, group a's consumer,
 * acks and is killed or stopped at cc's point: the slot stays held until maintenance's release
 * repair frees it, and "x" takes it. Returns the queue, c0 and the child. */
static shmq_t *finisher_stopped_then_repaired(struct crash_child *cc, shmq_consumer_t **c0,
                                              pid_t *k)
{
    shmq_t *q = crash_queue(1, cc, k);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    h_assert_rc(shmq_consumer_open(q, "c0", c0), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(*c0, &m, 0), 0);
    h_assert_rc(shmq_ack(*c0, &m), 0); /* group 0 done: the slot is HELD for group a */
    h_open_gate(*k);
    int st = 0;
    cr_assert_eq(h_waitpid(*k, 30000, cc->stop ? WUNTRACED : 0, &st), 0);
    cr_assert(cc->stop ? WIFSTOPPED(st) : WIFSIGNALED(st), "the child was not %s at %s (%d)",
              cc->stop ? "stopped" : "killed", cc->point, st);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), -EAGAIN);
    h_assert_rc(shmq_maintain(q, NULL), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    return q;
}

Test(groups, consumer_killed_before_release_is_freed_by_maintenance)
{
    crash_name = h_qname("krel");
    struct crash_child cc = {"group_release_before_free", 'a', false};
    pid_t k;
    shmq_consumer_t *c0;
    shmq_t *q = finisher_stopped_then_repaired(&cc, &c0, &k);
    shmq_consumer_close(c0);
    shmq_close(q);
}

Test(groups, consumer_killed_before_count_down_is_repaired)
{
    crash_name = h_qname("kcnt");
    struct crash_child cc = {"group_done_before_count", 'a', false};
    pid_t k;
    shmq_consumer_t *c0;
    shmq_t *q = finisher_stopped_then_repaired(&cc, &c0, &k);
    shmq_consumer_close(c0);
    shmq_close(q);
}

Test(groups, stopped_count_down_leaves_the_next_message_alone)
{
    crash_name = h_qname("scnt");
    struct crash_child cc = {"group_done_before_count", 'a', true};
    pid_t k;
    shmq_consumer_t *c0, *ca;
    shmq_t *q = finisher_stopped_then_repaired(&cc, &c0, &k);
    /* "x" holds the slot for both groups; the old finisher counts down now, too late */
    cr_assert_eq(kill(k, SIGCONT), 0);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 12, "child status %d", st);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c0, &m, 0), 0);
    h_assert_rc(shmq_ack(c0, &m), 0);
    /* group a still holds "x": the slot is not free (a count-down of the old message's
     * finisher landing on x's count would have freed it under group a) */
    h_assert_rc(shmq_publish(q, "y", 1, NULL), -EAGAIN);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    h_assert_rc(shmq_receive(ca, &m, 0), 0);
    cr_assert(m.len == 1 && memcmp(m.data, "x", 1) == 0, "group a got another message");
    h_assert_rc(shmq_ack(ca, &m), 0);
    h_assert_rc(shmq_publish(q, "y", 1, NULL), 0);
    shmq_consumer_close(ca);
    shmq_consumer_close(c0);
    shmq_close(q);
}

/* A keyed publish (dedup window) and a delayed one fan out too: the keyed one once per group
 * however often its key is published, the delayed one in each group only when due. */
Test(groups, keyed_and_delayed_publishes_reach_every_group)
{
    const char *name = h_qname("keyed");
    shmq_config_t cfg = groups_config(8, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    uint64_t id1, id2;
    h_assert_rc(shmq_publish_dedup(q, "k", 1, "key", 3, &id1), 0);
    h_assert_rc(shmq_publish_dedup(q, "k", 1, "key", 3, &id2), 0);
    cr_assert_eq(id1, id2);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_delayed(q, "later", 5, 300, NULL), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    for (int k = 0; k < 2; k++) {
        shmq_consumer_t *c = k ? ca : c0;
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        cr_assert(m.id == id1 && m.len == 1);
        h_assert_rc(shmq_ack(c, &m), 0);
        h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN); /* once; the delayed one is not due */
    }
    both_groups_receive(q, c0, ca, "later");
    cr_assert_geq(h_now_ms() - t0, 300, "a delayed message was delivered early");
    shmq_consumer_close(c0);
    shmq_consumer_close(ca);
    shmq_close(q);
}

/* A child that sleeps in a blocking receive of group "g" until killed. */
static int sleep_in_group(void *arg)
{
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    if (shmq_open(arg, &q) != 0 || shmq_consumer_open_group(q, "g", "sleeper", &c) != 0)
        return 2;
    return shmq_receive(c, &m, -1) == 0 ? 3 : 4;
}

struct recv_arg {
    shmq_consumer_t *c;
    _Atomic int rc;
};

static void *receive_forever(void *arg)
{
    struct recv_arg *a = arg;
    shmq_msg_t m;
    int rc = shmq_receive(a->c, &m, -1);
    if (rc == 0)
        rc = shmq_ack(a->c, &m);
    atomic_store(&a->rc, rc == 0 ? 1 : rc);
    return NULL;
}

/* Poll up to 20 s until *w == v. */
static bool waiters_reach(_Atomic uint32_t *w, uint32_t v)
{
    for (int64_t end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(1))
        if (atomic_load(w) == v)
            return true;
    return false;
}

/* review8: a consumer of group g >= 1 killed asleep is counted in group g's waiter count, but
 * maintenance uncounted it from group 0's (wait_uncount_dead knew only the header's): a sleeping
 * consumer of group 0 went uncounted, and the next publish's W1 found nobody to wake (it slept
 * on to its max_sleep, a third of the heartbeat timeout: 20 s here). */
Test(groups, group_sleeper_killed_is_uncounted_from_its_own_group)
{
    const char *name = h_qname("gsleepk");
    shmq_config_t cfg = groups_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "g", SHMQ_GROUP_BLOCK, 0), 0);
    struct recv_arg a = {0};
    h_assert_rc(shmq_consumer_open(q, "zero", &a.c), 0);
    uint32_t gi = group_index(q, "g");
    _Atomic uint32_t *wg = group_ready_waiters(q, gi);
    pid_t pid = h_fork(sleep_in_group, (void *)name);
    cr_assert(waiters_reach(wg, 1), "group g's consumer never slept (%u)", atomic_load(wg));
    pthread_t t; /* after the fork: the child copies no sleeping thread */
    cr_assert(pthread_create(&t, NULL, receive_forever, &a) == 0);
    _Atomic uint32_t *w0 = group_ready_waiters(q, 0);
    cr_assert(waiters_reach(w0, 1), "group 0's consumer never slept (%u)", atomic_load(w0));
    kill(pid, SIGKILL);
    int st;
    h_assert_rc(h_waitpid(pid, 20000, 0, &st), 0);
    h_assert_rc(shmq_maintain(q, NULL), 0);
    cr_expect_eq(atomic_load(w0), 1, "group 0's sleeper uncounted for group g's dead one");
    cr_expect_eq(atomic_load(wg), 0, "group g's dead sleeper still counted");
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    int64_t end = h_now_ms() + 10000;
    while (atomic_load(&a.rc) == 0 && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert_eq(atomic_load(&a.rc), 1, "group 0's sleeper not woken within 10 s of the publish");
    pthread_join(t, NULL);
    h_assert_rc(shmq_consumer_close(a.c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* review8: a consumer asleep in a blocking receive when its group is deleted gets -ENOENT at
 * once: the delete wakes the group's sleepers (it woke nobody: the receive slept on to its
 * max_sleep, a third of the heartbeat timeout, 20 s here). */
Test(groups, delete_wakes_the_groups_sleepers)
{
    const char *name = h_qname("gdelwake");
    shmq_config_t cfg = groups_config(16, 4);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "g", SHMQ_GROUP_BLOCK, 0), 0);
    struct recv_arg a = {0};
    h_assert_rc(shmq_consumer_open_group(q, "g", "sleeper", &a.c), 0);
    uint32_t gi = group_index(q, "g");
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, receive_forever, &a) == 0);
    _Atomic uint32_t *wg = group_ready_waiters(q, gi);
    cr_assert(waiters_reach(wg, 1), "group g's consumer never slept (%u)", atomic_load(wg));
    h_assert_rc(shmq_group_delete(q, "g"), 0);
    int64_t end = h_now_ms() + 10000;
    while (atomic_load(&a.rc) == 0 && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert_eq(atomic_load(&a.rc), -ENOENT, "the sleeper's receive: %d (0: still asleep 10 s on)",
                 atomic_load(&a.rc));
    pthread_join(t, NULL);
    h_assert_rc(shmq_consumer_close(a.c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* A deleter killed between clearing the group's mask bit and waking its sleepers
 * (group_delete_before_wake): maintenance wakes them, so a receive asleep in the deleted group
 * ends with -ENOENT at the next pass, not at its max_sleep (a third of the heartbeat timeout,
 * 20 s here). */
Test(groups, deleter_killed_before_its_wake_is_answered_by_maintenance)
{
    crash_name = h_qname("kdelwake");
    struct crash_child cc = {"group_delete_before_wake", 'd', false};
    pid_t k;
    shmq_t *q = crash_queue(4, &cc, &k);
    struct recv_arg a = {0};
    h_assert_rc(shmq_consumer_open_group(q, "a", "sleeper", &a.c), 0);
    uint32_t gi = group_index(q, "a");
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, receive_forever, &a) == 0);
    _Atomic uint32_t *wg = group_ready_waiters(q, gi);
    cr_assert(waiters_reach(wg, 1), "group a's consumer never slept (%u)", atomic_load(wg));
    h_open_gate(k);
    wait_killed(k, cc.point);
    cr_assert_eq(atomic_load(&a.rc), 0, "woken before maintenance: the test shows nothing");
    h_assert_rc(shmq_maintain(q, NULL), 0);
    int64_t end = h_now_ms() + 10000;
    while (atomic_load(&a.rc) == 0 && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert_eq(atomic_load(&a.rc), -ENOENT,
                 "the sleeper's receive: %d (0: still asleep 10 s after the pass)",
                 atomic_load(&a.rc));
    pthread_join(t, NULL);
    h_assert_rc(shmq_consumer_close(a.c), 0);
    h_assert_rc(shmq_close(q), 0);
}

#ifdef SHMQ_CRASH_POINTS
#include "crashpoint.h"

struct stale_pub {
    shmq_t *q;
    const char *msg;
    int rc;
};

static void *stale_pub_main(void *arg)
{
    struct stale_pub *p = arg;
    p->rc = shmq_publish(p->q, p->msg, strlen(p->msg), NULL);
    return NULL;
}

static pthread_t stale_pub_start(struct stale_pub *p, int pen, const char *point)
{
    crashpoint_park_at_pen(pen, point);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, stale_pub_main, p), 0);
    for (int64_t end = h_now_ms() + 30000; !crashpoint_parked_pen(pen); h_sleep_ms(1))
        cr_assert_lt(h_now_ms(), end, "the publisher never reached %s", point);
    return t;
}

/*
 * F4 of a thread paused between P1 and its fan-out commit (fanout_after_commit) past the orphan
 * grace: maintenance finished its fan-out, both groups took and acked the message and the slot
 * was freed; another thread of the same process (the same handle: the cells it prepares carry
 * the same owner) has reserved the slot again and prepared its cells (fanout_after_prepare, no
 * P1 yet). The first thread then goes on. Its F4 must leave the second message's cell alone:
 * before, it found the cell RESERVED by "itself", made it READY and enqueued it, and group a
 * received a message whose publish had not committed (had that publish failed, the slot would
 * have been given back and reused under group a's reader). Review10.
 */
Test(groups, a_late_fanout_commit_leaves_the_next_message_of_its_slot_alone)
{
    const char *name = h_qname("stalef4");
    shmq_config_t cfg = groups_config(1, 2);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    struct stale_pub one = {q, "one", 1}, two = {q, "two", 1};
    pthread_t t1 = stale_pub_start(&one, 0, "fanout_after_commit");
    both_groups_receive(q, c0, ca, "one"); /* finished by maintenance after the grace */
    pthread_t t2 = stale_pub_start(&two, 1, "fanout_after_prepare");
    crashpoint_unpark_pen(0);
    cr_assert_eq(pthread_join(t1, NULL), 0);
    h_assert_rc(one.rc, 0);
    shmq_msg_t m;
    int rc = shmq_receive(ca, &m, 0);
    cr_assert_neq(rc, 0, "group a received '%.*s' before its publish committed",
                  rc ? 0 : (int)m.len, rc ? "" : (const char *)m.data);
    crashpoint_unpark_pen(1);
    cr_assert_eq(pthread_join(t2, NULL), 0);
    h_assert_rc(two.rc, 0);
    both_groups_receive(q, c0, ca, "two");
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_close(q), 0);
}

struct late_pub {
    shmq_t *q;
    int rc;
};

static void *late_pub_main(void *arg)
{
    struct late_pub *p = arg;
    p->rc = shmq_publish_delayed(p->q, "late", 4, 600000, NULL);
    return NULL;
}

/*
 * review11: a filler paused past the orphan grace, between P1 and its fill (fanout_after_commit)
 * or inside fan_fill after its fanpos store, before FH1 (fan_before_fill): maintenance finished
 * its message, both groups acked it; another publish filled the position it had read; a delayed
 * publish reused its slot and is between P1D and F4 (its cells RESERVED under a DELAYED slot
 * word, which FC3 takes as pending). The filler goes on and, before the fix, stored fanpos for
 * the slot and filled it at the next position: group a received the delayed message (due in
 * 10 min) at once. FP0's token in fanpos now stops it (fan_fill's CAS).
 */
static void stale_fill_case(const char *point)
{
    const char *name = h_qname("stalefill");
    shmq_config_t cfg = groups_config(2, 2);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    atomic_store(&q->cursor, 0);
    struct stale_pub one = {q, "one", 1};
    pthread_t t1 = stale_pub_start(&one, 0, point); /* slot 0 */
    both_groups_receive(q, c0, ca, "one"); /* finished by maintenance after the grace */
    h_assert_rc(shmq_publish(q, "filler", 6, NULL), 0); /* slot 1, at one's position */
    both_groups_receive(q, c0, ca, "filler");
    atomic_store(&q->cursor, 0);
    struct late_pub late = {q, 1};
    crashpoint_park_at_pen(1, "fanout_after_commit");
    pthread_t t2;
    cr_assert_eq(pthread_create(&t2, NULL, late_pub_main, &late), 0);
    for (int64_t end = h_now_ms() + 30000; !crashpoint_parked_pen(1); h_sleep_ms(1))
        cr_assert_lt(h_now_ms(), end, "the delayed publisher never reached F4");
    crashpoint_unpark_pen(0);
    cr_assert_eq(pthread_join(t1, NULL), 0);
    h_assert_rc(one.rc, 0);
    shmq_msg_t m;
    int rc = shmq_receive(ca, &m, 0);
    cr_expect_neq(rc, 0, "group a received '%.*s' through a stale fill (%s)", rc ? 0 : (int)m.len,
                  rc ? "" : (const char *)m.data, point);
    crashpoint_unpark_pen(1);
    cr_assert_eq(pthread_join(t2, NULL), 0);
    h_assert_rc(late.rc, 0);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(groups, a_filler_paused_before_its_fill_does_not_deliver_a_delayed_message_early)
{
    stale_fill_case("fanout_after_commit");
}

Test(groups, a_filler_paused_inside_its_fill_does_not_deliver_a_delayed_message_early)
{
    stale_fill_case("fan_before_fill");
}
#endif
