/*
 * test_expiry.c - expiry (a queue's default_ttl_ms and expire_policy; src/expire.c): a message
 * past its expiry is never delivered, it is dropped or dead-lettered as the queue says, counted,
 * and logged so that a rebuild does not bring it back as ready.
 *
 * Timing: a test waits until a message's expiry has passed by the test's own clock (plus a
 * margin for the coarse clock's tick) before it looks; a check that a message NOT past its expiry
 * is delivered is made only when the receive returned within its time to live (a machine that
 * stalls longer makes that check vacuous, never false).
 *
 *  - dropped_not_delivered: drop policy: the expired message is not received (-EAGAIN), its slot
 *    is free again, stats.expired counts it; a fresh message is delivered.
 *  - dead_lettered_with_reason: dead-letter policy: the expired message is on the dead-letter
 *    ring with reason SHMQ_DEAD_EXPIRED, counted in expired and dead_lettered.
 *  - maintenance_expires_ready: no receive: a maintenance pass expires it (report.expired).
 *  - inflight_is_not_taken_back: a message received before its expiry stays the consumer's past
 *    it (maintenance leaves it), and its ack succeeds.
 *  - nacked_after_expiry_expires: a nack after the expiry does not bring it back.
 *  - delayed_expires_before_due: a delayed message whose expiry comes before its due time
 *    expires at the expiry, never delivered.
 *  - peek_skips_expired: peek does not show a message past its expiry.
 *  - per_message_ttl, cli_pub_ttl: shmq_pub_opts_t.ttl_ms (and `shmq pub --ttl-ms`): a message's
 *    own time to live, on a queue with or without a default, keyed or not, kept by a rebuild.
 *  - config: the policy is checked (-EINVAL) and kept (shmq_get_config).
 *  - cli: `shmq create --ttl-ms --expire` makes such a queue, `shmq stat --json` shows the
 *    config and the expired count, a bad policy is a usage error (exit 2).
 *  - maintainer_killed_after_claim / _before_its_record / maintainer_stopped_after_claim: a
 *    maintainer killed or stopped at the crash points of expire.c: the message is expired once,
 *    never delivered, no delivery counted, and a rebuild agrees.
 *  - unexpired_message_of_a_killed_consumer_is_delivered: at least once for a message that had
 *    not expired (a consumer killed after its claim).
 *  - group_cells_expire_in_maintenance (drop, dead letter): a consumer group's ready and delayed
 *    cells past the expiry are expired by maintenance too, so a group nobody receives from does
 *    not keep the slots of expired messages.
 *  - group_expiry_survives_rebuild: with groups and a log, what expired in both groups stays
 *    expired after a segment loss.
 *  - a_redrive_in_one_group_does_not_lift_another_groups_expiry: group 0's redrive lifted the
 *    message's (shared) expiry, and group audit then received it past its expiry.
 *  - logged_expiry_survives_rebuild (drop, dead letter): after an expiry, the segment is lost;
 *    the rebuild does not bring the message back as ready.
 *  - rebuild_stopped_between_clocks_expires_nothing_early: a rebuild stopped 3 s between the
 *    clock readings that turn logged expiries back into the monotonic clock
 *    (recover_between_clocks): the monotonic clock was read first, so every expiry came 3 s early.
 *  - stopped_between_clocks_logs_no_early_expiry: a producer stopped for 3 s between the two
 *    clock readings that turn its expiry into wall-clock time (expire_between_clocks); the wall
 *    clock was read first, so the log said 3 s early, and a rebuild dropped a 5 s message after 3.
 */
#include "cli.h"

TestSuite(expiry, .fini = h_cleanup, .timeout = 240);

/* The coarse clock (a tick) and the ms truncations: how long past an expiry a test waits. */
#define MARGIN_MS 50

static shmq_config_t ttl_config(uint32_t ttl_ms, uint32_t policy, int durability)
{
    shmq_config_t cfg = h_log_config(16);
    cfg.durability = durability;
    cfg.default_ttl_ms = ttl_ms;
    cfg.expire_policy = policy;
    return cfg;
}

/* Sleep until the clock has passed t_ms. */
static void wait_past(int64_t t_ms)
{
    while (h_now_ms() <= t_ms)
        h_sleep_ms(10);
}

static shmq_stats_t stats_of(shmq_t *q)
{
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    return st;
}

Test(expiry, dropped_not_delivered)
{
    const char *name = h_qname("drop");
    shmq_config_t cfg = ttl_config(300, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_NONE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "old", 3, NULL), 0);
    wait_past(t0 + 300 + MARGIN_MS);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 1, "expired %llu", (unsigned long long)st.expired);
    cr_assert_eq(st.free, 16, "free %u: the expired message's slot is free again", st.free);
    cr_assert_eq(st.delivered, 0);
    cr_assert_eq(st.dead, 0);

    int64_t t1 = h_now_ms();
    h_assert_rc(shmq_publish(q, "new", 3, NULL), 0);
    int rc = shmq_receive(c, &m, 0);
    if (h_now_ms() - t1 < 300 - MARGIN_MS) { /* not stalled past its expiry */
        h_assert_rc(rc, 0);
        cr_assert(m.len == 3 && memcmp(m.data, "new", 3) == 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(expiry, dead_lettered_with_reason)
{
    const char *name = h_qname("dead");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DEAD_LETTER, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    uint64_t id;
    h_assert_rc(shmq_publish(q, "old", 3, &id), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_dead_letter_t dl[2];
    size_t n;
    h_assert_rc(shmq_dlq_list(q, dl, 2, &n), 0);
    cr_assert_eq(n, 1, "dead letters %zu", n);
    cr_assert_eq(dl[0].id, id);
    cr_assert_eq(dl[0].reason, SHMQ_DEAD_EXPIRED, "reason %u", dl[0].reason);
    cr_assert_eq(dl[0].attempt, 0, "never delivered: attempt %u", dl[0].attempt);
    cr_assert(dl[0].len == 3 && memcmp(dl[0].data, "old", 3) == 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 1);
    cr_assert_eq(st.dead_lettered, 1);
    cr_assert_eq(st.dead, 1);
    /* a redriven expired message has no expiry any more: it is delivered however late */
    uint32_t moved;
    h_assert_rc(shmq_dlq_redrive(q, 0, &moved), 0);
    cr_assert_eq(moved, 1);
    wait_past(h_now_ms() + 200 + MARGIN_MS);
    h_assert_rc(shmq_consumer_open(q, "c2", &c), 0);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.id, id);
    h_assert_rc(shmq_ack(c, &m), 0);
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(expiry, maintenance_expires_ready)
{
    const char *name = h_qname("maint");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    for (int i = 0; i < 5; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.expired, 5, "maintenance expired %u", rep.expired);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 5);
    cr_assert_eq(st.ready, 0);
    cr_assert_eq(st.free, 16);
    cr_assert_eq(st.inflight, 0, "nothing left held by the maintainer");
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.expired, 0);
    shmq_close(q);
}

Test(expiry, inflight_is_not_taken_back)
{
    const char *name = h_qname("held");
    shmq_config_t cfg = ttl_config(300, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    int64_t t0;
    for (;;) { /* a receive within the time to live (a stall past it: try again) */
        t0 = h_now_ms();
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
        int rc = shmq_receive(c, &m, 0);
        if (rc == 0)
            break;
        h_assert_rc(rc, -EAGAIN);
        cr_assert_gt(h_now_ms() - t0, 300 - MARGIN_MS, "a fresh message was not delivered");
    }
    wait_past(t0 + 300 + MARGIN_MS);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.expired, 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.inflight, 1);
    h_assert_rc(shmq_ack(c, &m), 0);
    st = stats_of(q);
    cr_assert_eq(st.expired, 0);
    cr_assert_eq(st.acked, 1);
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(expiry, nacked_after_expiry_expires)
{
    const char *name = h_qname("nack");
    shmq_config_t cfg = ttl_config(300, SHMQ_EXPIRE_DEAD_LETTER, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    int64_t t0;
    for (;;) {
        t0 = h_now_ms();
        uint32_t purged;
        h_assert_rc(shmq_dlq_purge(q, 0, &purged), 0); /* earlier tries' expired ones */
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
        int rc = shmq_receive(c, &m, 0);
        if (rc == 0)
            break;
        h_assert_rc(rc, -EAGAIN);
    }
    wait_past(t0 + 300 + MARGIN_MS);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_dead_letter_t dl;
    size_t n;
    h_assert_rc(shmq_dlq_list(q, &dl, 1, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(dl.reason, SHMQ_DEAD_EXPIRED);
    cr_assert_eq(dl.attempt, 1, "its one delivery counts: attempt %u", dl.attempt);
    shmq_stats_t st = stats_of(q);
    cr_assert_geq(st.expired, 1);
    cr_assert_eq(st.nacked, 1);
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(expiry, delayed_expires_before_due)
{
    const char *name = h_qname("delay");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.expired, 1);
    cr_assert_eq(rep.delayed_fired, 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.delayed, 0);
    cr_assert_eq(st.free, 16);
    shmq_close(q);
}

Test(expiry, config)
{
    const char *name = h_qname("cfg");
    shmq_config_t cfg = ttl_config(1234, 7, SHMQ_DURABILITY_NONE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), -EINVAL);
    cfg.expire_policy = SHMQ_EXPIRE_DEAD_LETTER;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.default_ttl_ms, 1234);
    cr_assert_eq(got.expire_policy, SHMQ_EXPIRE_DEAD_LETTER);
    shmq_config_t def;
    shmq_config_init(&def);
    cr_assert_eq(def.default_ttl_ms, 0);
    cr_assert_eq(def.expire_policy, SHMQ_EXPIRE_DROP);
    shmq_close(q);
}

/* Expire one message by a receive, lose the segment, rebuild: it must not come back ready. */
static void expired_then_rebuilt(uint32_t policy)
{
    const char *name = h_qname(policy == SHMQ_EXPIRE_DROP ? "rdrop" : "rdead");
    shmq_config_t cfg = ttl_config(200, policy, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "old", 3, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 0, "restored %llu", (unsigned long long)rep.restored);
    cr_assert_eq(rep.dead_letters, policy == SHMQ_EXPIRE_DEAD_LETTER);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.ready, 0);
    cr_assert_eq(st.dead, policy == SHMQ_EXPIRE_DEAD_LETTER);
    if (policy == SHMQ_EXPIRE_DEAD_LETTER) {
        shmq_dead_letter_t dl;
        size_t n;
        h_assert_rc(shmq_dlq_list(q, &dl, 1, &n), 0);
        cr_assert_eq(dl.reason, SHMQ_DEAD_EXPIRED);
    }
    shmq_close(q);
}

Test(expiry, logged_drop_survives_rebuild) { expired_then_rebuilt(SHMQ_EXPIRE_DROP); }
Test(expiry, logged_dead_letter_survives_rebuild) { expired_then_rebuilt(SHMQ_EXPIRE_DEAD_LETTER); }

/* The expiry is in the PUBLISH record: a rebuild before it restores the message with it. */
Test(expiry, rebuild_keeps_the_expiry)
{
    const char *name = h_qname("keep");
    shmq_config_t cfg = ttl_config(2000, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    if (h_now_ms() < t0 + 2000 - MARGIN_MS) /* the rebuild came before the expiry */
        cr_assert_eq(rep.restored, 1, "restored %llu", (unsigned long long)rep.restored);
    h_assert_rc(shmq_open(name, &q), 0);
    wait_past(t0 + 2000 + MARGIN_MS);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 1, "expired %llu", (unsigned long long)st.expired);
    shmq_close(q);
}

/* Expired while the segment was gone: the rebuild expires it at once, as the policy says. */
static void expired_while_gone(uint32_t policy)
{
    const char *name = h_qname(policy == SHMQ_EXPIRE_DROP ? "gdrop" : "gdead");
    shmq_config_t cfg = ttl_config(200, policy, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish_delayed(q, "d", 1, 600000, NULL), 0);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.expired, 2, "expired %llu", (unsigned long long)rep.expired);
    cr_assert_eq(rep.restored, 0);
    cr_assert_eq(rep.dead_letters, policy == SHMQ_EXPIRE_DEAD_LETTER ? 2 : 0);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 2);
    cr_assert_eq(st.ready + st.delayed, 0);
    cr_assert_eq(st.dead, policy == SHMQ_EXPIRE_DEAD_LETTER ? 2 : 0);
    shmq_close(q);
    /* and a second rebuild (from the generation the first re-logged) agrees */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 0);
    cr_assert_eq(rep.dead_letters, policy == SHMQ_EXPIRE_DEAD_LETTER ? 2 : 0);
}

Test(expiry, expired_while_gone_dropped) { expired_while_gone(SHMQ_EXPIRE_DROP); }
Test(expiry, expired_while_gone_dead_lettered) { expired_while_gone(SHMQ_EXPIRE_DEAD_LETTER); }

Test(expiry, cli)
{
    const char *name = h_qname("cli");
    RUN_EXPECT_EXIT(2, "a bad policy", "create", name, "--ttl-ms", "200", "--expire", "later");
    RUN_EXPECT_EXIT(0, "create", "create", name, "--ttl-ms", "200", "--expire", "dead-letter",
                    "--durability", "none");
    shmq_t *q;
    h_assert_rc(shmq_open(name, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.expired, 1);
    shmq_close(q);
    struct run r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat");
    struct jval *d = json_parse(r.out);
    cr_assert_eq(jnum(d, "config.ttl_ms"), 200);
    cr_assert_str_eq(jstr(d, "config.expire"), "dead-letter");
    cr_assert_eq(jnum(d, "expired"), 1);
    cr_assert_eq(jnum(d, "messages.dead"), 1);
    json_free(d);
    run_free(&r);
    r = RUN("dlq", name, "list");
    assert_exit(&r, 0, "dlq");
    assert_contains(r.out, "expired", "dlq lists the reason");
    run_free(&r);
}

/* Peek shows what a receive would deliver: not a message past its expiry. */
Test(expiry, peek_skips_expired)
{
    const char *name = h_qname("peek");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_NONE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_peek_msg_t m;
    char buf[8];
    size_t n;
    h_assert_rc(shmq_peek(q, &m, 1, buf, sizeof buf, &n), 0);
    cr_assert_eq(n, 0, "peek showed an expired message");
    shmq_close(q);
}

/* ---------------------------------------------------------------- crash points */

static const char *crash_name;

/* A maintainer armed to stop or die at crash point arg (SHMQ_CRASH_SIGNAL from the parent's
 * choice below) while its pass expires the queue's expired message. */
static int expiring_maintainer(void *arg)
{
    const char *const *how = arg; /* {point, signal} */
    setenv("SHMQ_CRASH_AT", how[0], 1);
    setenv("SHMQ_CRASH_SIGNAL", how[1], 1);
    shmq_t *q;
    if (shmq_open(crash_name, &q))
        return 10;
    shmq_maintain(q, NULL);
    shmq_close(q);
    return 12; /* not stopped for good at its crash point */
}

/* Create crash_name with cfg, publish one message, wait past its expiry, and let a maintainer
 * armed at point with signal ("KILL" or "STOP") expire it: its pid. */
static pid_t expire_with_crash(const shmq_config_t *cfg, const char *point, const char *signal)
{
    static const char *how[2];
    how[0] = point;
    how[1] = signal;
    pid_t k = h_fork_gated(expiring_maintainer, (void *)how);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, cfg, &q), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    shmq_close(q);
    wait_past(t0 + cfg->default_ttl_ms + MARGIN_MS);
    h_open_gate(k);
    return k;
}

/* Maintain q until pred(stats) holds, at most 30 s. */
static shmq_stats_t maintain_until(shmq_t *q, bool (*pred)(const shmq_stats_t *), const char *what)
{
    int64_t end = h_now_ms() + 30000;
    shmq_stats_t st = stats_of(q);
    while (!pred(&st) && h_now_ms() < end) {
        h_assert_rc(shmq_maintain(q, NULL), 0);
        h_sleep_ms(5);
        st = stats_of(q);
    }
    cr_assert(pred(&st), "%s within 30 s: expired %llu, inflight %u, free %u, dead %u", what,
              (unsigned long long)st.expired, st.inflight, st.free, st.dead);
    return st;
}

static bool expired_and_settled(const shmq_stats_t *st)
{
    return st->expired == 1 && st->inflight == 0 && st->ready == 0;
}

static bool all_free(const shmq_stats_t *st)
{
    return st->free == 16;
}

/* A maintainer killed after claiming the expired message (INFLIGHT in its name): the next pass
 * takes it back from the dead process and expires it; no delivery is counted for it, it is
 * never delivered, and a rebuild keeps it a dead letter. */
Test(expiry, maintainer_killed_after_claim)
{
    crash_name = h_qname("kclaim");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DEAD_LETTER, SHMQ_DURABILITY_PROCESS);
    pid_t k = expire_with_crash(&cfg, "expire_after_claim", "KILL");
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the maintainer was not killed at expire_after_claim");
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    shmq_stats_t s = stats_of(q);
    cr_assert_eq(s.inflight, 1, "the dead maintainer holds it: inflight %u", s.inflight);
    cr_assert_eq(s.expired, 0);
    maintain_until(q, expired_and_settled, "taken back and expired");
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_dead_letter_t dl;
    size_t n;
    h_assert_rc(shmq_dlq_list(q, &dl, 1, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(dl.reason, SHMQ_DEAD_EXPIRED);
    cr_assert_eq(dl.attempt, 0, "the claim counted as a delivery: attempt %u", dl.attempt);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 0);
    cr_assert_eq(rep.dead_letters, 1);
}

/* Killed after the drop's CAS, before its ACK|EXPIRED record: the slot is free; a segment loss
 * then finds only the PUBLISH record, whose expiry has passed: the rebuild drops it again. */
Test(expiry, maintainer_killed_before_its_record)
{
    crash_name = h_qname("klog");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    pid_t k = expire_with_crash(&cfg, "expire_before_log", "KILL");
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the maintainer was not killed at expire_before_log");
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    shmq_stats_t s = stats_of(q);
    cr_assert_eq(s.expired, 1);
    cr_assert_eq(s.ready + s.inflight, 0);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(crash_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(crash_name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 0, "the rebuild brought the expired message back");
    cr_assert_eq(rep.expired, 1);
}

/* A maintainer stopped after its claim holds the message like a stopped consumer: at its ack
 * deadline another maintainer takes it back and expires it; continued, the stopped one finds it
 * gone (its CAS fails), counts nothing and lets go: expired once, the slot freed. */
Test(expiry, maintainer_stopped_after_claim)
{
    crash_name = h_qname("sclaim");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    cfg.ack_deadline_ms = 500;
    pid_t k = expire_with_crash(&cfg, "expire_after_claim", "STOP");
    int st = 0;
    cr_assert_eq(h_wait_stopped(k, 30000, &st), 0, "the maintainer did not stop at its claim");
    shmq_t *q;
    h_assert_rc(shmq_open(crash_name, &q), 0);
    maintain_until(q, expired_and_settled, "taken back at the deadline and expired");
    kill(k, SIGCONT);
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 12, "the maintainer did not finish its pass");
    shmq_stats_t s = maintain_until(q, all_free, "the slot freed once the stopped one let go");
    cr_assert_eq(s.expired, 1, "expired %llu times", (unsigned long long)s.expired);
    shmq_close(q);
}

/* At least once for what had not expired: a consumer killed after claiming a message with a
 * long time to live; the message is taken back and delivered, not expired. */
static int claiming_consumer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "receive_after_claim", 1);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(crash_name, &q) || shmq_consumer_open(q, "victim", &c))
        return 10;
    shmq_msg_t m;
    shmq_receive(c, &m, 5000);
    return 12;
}

Test(expiry, unexpired_message_of_a_killed_consumer_is_delivered)
{
    crash_name = h_qname("alo");
    pid_t k = h_fork_gated(claiming_consumer, NULL);
    shmq_config_t cfg = ttl_config(600000, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(crash_name, &cfg, &q), 0);
    uint64_t id;
    h_assert_rc(shmq_publish(q, "x", 1, &id), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the consumer was not killed after its claim");
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    int64_t end = h_now_ms() + 30000;
    int rc;
    while ((rc = shmq_receive(c, &m, 0)) == -EAGAIN && h_now_ms() < end) {
        h_assert_rc(shmq_maintain(q, NULL), 0);
        h_sleep_ms(5);
    }
    h_assert_rc(rc, 0);
    cr_assert_eq(m.id, id);
    h_assert_rc(shmq_ack(c, &m), 0);
    shmq_consumer_close(c);
    cr_assert_eq(stats_of(q).expired, 0);
    shmq_close(q);
}

static const char *clk_name;

static int stalled_ttl_producer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "expire_between_clocks", 1);
    setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    if (shmq_open(clk_name, &q))
        return 10;
    int rc = shmq_publish(q, "x", 1, NULL);
    shmq_close(q);
    return rc == 0 ? 0 : 11;
}

Test(expiry, stopped_between_clocks_logs_no_early_expiry)
{
    clk_name = h_qname("kclk");
    pid_t k = h_fork_gated(stalled_ttl_producer, NULL);
    shmq_config_t cfg = ttl_config(5000, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(clk_name, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, WUNTRACED, &st), 0);
    cr_assert(WIFSTOPPED(st), "the producer did not stop between its clock readings");
    int64_t t0 = h_now_ms(); /* after the publish's clock read: its expiry is after t0 + 5000 */
    h_sleep_ms(3000); /* the stall under test, not a wait for an event */
    kill(k, SIGCONT);
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the producer's publish failed");
    h_assert_rc(shmq_unlink_segment(clk_name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(clk_name, NULL, &rep), 0);
    if (h_now_ms() < t0 + 5000 - MARGIN_MS) /* else it may be past its expiry anyway */
        cr_assert_eq(rep.restored, 1, "dropped by the rebuild %lld ms before its expiry",
                     (long long)(t0 + 5000 - h_now_ms()));
}

static int stalled_recovery(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "recover_between_clocks", 1);
    setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_recovery_report_t rep;
    return shmq_recover(clk_name, NULL, &rep) == 0 && rep.restored == 1 ? 0 : 11;
}

/* A rebuild turns each logged expiry (wall clock) back into the monotonic clock from one reading
 * of each clock: stopped 3 s between them (recover_between_clocks), the monotonic one read first
 * gave every message an expiry 3 s early (a 5 s message expired 2 s after its publish). The wall
 * clock is read first: a stall makes the expiry later, never earlier (review7). */
Test(expiry, rebuild_stopped_between_clocks_expires_nothing_early)
{
    clk_name = h_qname("rclk");
    pid_t k = h_fork_gated(stalled_recovery, NULL); /* before our first library call */
    shmq_config_t cfg = ttl_config(5000, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(clk_name, &cfg, &q), 0);
    int64_t t0 = h_now_ms(); /* before the publish: its expiry is after t0 + 5000 */
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(clk_name), 0);
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_waitpid(k, 30000, WUNTRACED, &st), 0);
    cr_assert(WIFSTOPPED(st), "the recovery did not stop between its clock readings (status %#x)", st);
    h_sleep_ms(3000); /* the stall under test, not a wait for an event */
    kill(k, SIGCONT);
    cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the recovery failed or restored nothing");
    h_assert_rc(shmq_open(clk_name, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, 0);
    if (h_now_ms() < t0 + 5000 - MARGIN_MS) /* else it may be past its expiry anyway */
        cr_assert_eq(rc, 0, "expired by the rebuilt queue %lld ms before its expiry",
                     (long long)(t0 + 5000 - h_now_ms()));
    shmq_consumer_close(c);
    shmq_close(q);
}

/* ---------------------------------------------------------------- per message */

static int publish_ttl(shmq_t *q, const char *s, uint32_t ttl_ms, const char *key, uint64_t *id)
{
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.ttl_ms = ttl_ms;
    o.dedup_key = key;
    o.dedup_key_len = key ? strlen(key) : 0;
    return shmq_publish_ex(q, s, strlen(s), &o, id);
}

/* shmq_pub_opts_t.ttl_ms: a message's own time to live, shorter or longer than the queue's (or
 * on a queue without one), also keyed; kept by a rebuild. */
Test(expiry, per_message_ttl)
{
    const char *name = h_qname("pm");
    shmq_config_t cfg = ttl_config(300, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    int64_t t0 = h_now_ms();
    uint64_t id_long, id_short, id_keyed, id_default;
    h_assert_rc(publish_ttl(q, "long", 600000, NULL, &id_long), 0);
    h_assert_rc(publish_ttl(q, "short", 100, NULL, &id_short), 0);
    h_assert_rc(publish_ttl(q, "keyed", 100, "k1", &id_keyed), 0);
    h_assert_rc(publish_ttl(q, "default", 0, NULL, &id_default), 0);
    wait_past(t0 + 100 + MARGIN_MS);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    if (h_now_ms() < t0 + 300 - MARGIN_MS) /* only the two short ones were due */
        cr_assert_eq(rep.expired, 2, "expired %u at 100 ms", rep.expired);
    wait_past(t0 + 300 + MARGIN_MS);
    h_assert_rc(shmq_maintain(q, &rep), 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 3, "expired %llu: short, keyed, default", (unsigned long long)st.expired);
    cr_assert_eq(st.ready, 1, "the long one is left");
    /* the long one keeps its own expiry across a rebuild: not the queue's 300 ms */
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rr;
    h_assert_rc(shmq_recover(name, NULL, &rr), 0);
    cr_assert_eq(rr.restored, 1);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.id, id_long);
    h_assert_rc(shmq_ack(c, &m), 0);
    shmq_consumer_close(c);
    shmq_close(q);

    /* a queue without a default: only the message with a ttl_ms expires */
    name = h_qname("pm0");
    cfg = ttl_config(0, SHMQ_EXPIRE_DEAD_LETTER, SHMQ_DURABILITY_NONE);
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    t0 = h_now_ms();
    h_assert_rc(publish_ttl(q, "short", 100, NULL, &id_short), 0);
    h_assert_rc(shmq_publish(q, "plain", 5, NULL), 0);
    wait_past(t0 + 100 + MARGIN_MS);
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_assert_eq(rep.expired, 1);
    st = stats_of(q);
    cr_assert_eq(st.dead, 1);
    cr_assert_eq(st.ready, 1);
    shmq_close(q);
}

Test(expiry, cli_pub_ttl)
{
    const char *name = h_qname("clipub");
    RUN_EXPECT_EXIT(0, "create", "create", name, "--durability", "none");
    int64_t t0 = h_now_ms();
    RUN_EXPECT_EXIT(0, "pub --ttl-ms", "pub", name, "--ttl-ms", "100", "stale");
    RUN_EXPECT_EXIT(0, "pub", "pub", name, "fresh");
    wait_past(t0 + 100 + MARGIN_MS);
    struct run r = RUN("sub", name, "--count", "1", "--ack", "--timeout-ms", "20000");
    assert_exit(&r, 0, "sub");
    cr_assert(strstr(r.out, "fresh") && !strstr(r.out, "stale"), "sub printed:\n%s", r.out);
    run_free(&r);
    r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat");
    struct jval *d = json_parse(r.out);
    cr_assert_eq(jnum(d, "expired"), 1);
    json_free(d);
    run_free(&r);
}

/* Consumer groups: a group's ready and delayed cells past their expiry are expired by
 * maintenance too (review7): before, only group 0's were, so an expired message of a group
 * nobody received from held its slot (a queue of expired messages full for good). */
static void group_cells_expire_in_maintenance(uint32_t policy)
{
    const char *name = h_qname("gexp");
    shmq_config_t cfg = ttl_config(200, policy, SHMQ_DURABILITY_NONE);
    cfg.max_groups = 2;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    int64_t t0 = h_now_ms();
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    shmq_maint_report_t rep;
    uint32_t expired = 0;
    for (int pass = 0; pass < 3; pass++) {
        h_assert_rc(shmq_maintain(q, &rep), 0);
        expired += rep.expired;
    }
    cr_assert_eq(expired, 10, "5 messages in 2 groups: %u expired", expired);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.expired, 10);
    cr_assert_eq(st.delayed, 0);
    if (policy == SHMQ_EXPIRE_DROP)
        cr_assert_eq(st.free, 16, "every slot free again: %u free", st.free);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open_group(q, "audit", "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_close(q);
}

Test(expiry, group_cells_expire_in_maintenance_dropped)
{
    group_cells_expire_in_maintenance(SHMQ_EXPIRE_DROP);
}

Test(expiry, group_cells_expire_in_maintenance_dead_lettered)
{
    group_cells_expire_in_maintenance(SHMQ_EXPIRE_DEAD_LETTER);
}

/* review7 probe: a logged queue with groups: an expired message stays expired for every group
 * after a segment loss. */
Test(expiry, group_expiry_survives_rebuild)
{
    const char *name = h_qname("gexpl");
    shmq_config_t cfg = ttl_config(200, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_PROCESS);
    cfg.max_groups = 2;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish_delayed(q, "late", 4, 600000, NULL), 0);
    wait_past(t0 + 200 + MARGIN_MS);
    uint32_t expired = 0;
    shmq_maint_report_t rep;
    for (int pass = 0; pass < 3; pass++) {
        h_assert_rc(shmq_maintain(q, &rep), 0);
        expired += rep.expired;
    }
    cr_assert_eq(expired, 4, "2 messages in 2 groups: %u expired", expired);
    shmq_close(q);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rr;
    h_assert_rc(shmq_recover(name, NULL, &rr), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_stats_t st = stats_of(q);
    cr_assert_eq(st.free, 16, "restored %llu, free %u ready %u delayed %u",
                 (unsigned long long)rr.restored, st.free, st.ready, st.delayed);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open_group(q, "audit", "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_consumer_close(c);
    shmq_close(q);
}

/* review7 probe: redriving group 0's dead letter must not lift the expiry of the message for
 * another group that still holds it ready. */
Test(expiry, a_redrive_in_one_group_does_not_lift_another_groups_expiry)
{
    const char *name = h_qname("gredr");
    shmq_config_t cfg = ttl_config(400, SHMQ_EXPIRE_DROP, SHMQ_DURABILITY_NONE);
    cfg.max_groups = 2;
    cfg.max_attempts = 1;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "audit", "ca", &ca), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c0, &m, 0), 0);
    h_assert_rc(shmq_nack(c0, &m, 0), 0); /* attempt 1 of 1: group 0's dead letter */
    uint32_t moved = 0;
    h_assert_rc(shmq_dlq_redrive(q, 0, &moved), 0);
    cr_assert_eq(moved, 1);
    wait_past(t0 + 400 + MARGIN_MS);
    int rc = shmq_receive(ca, &m, 0);
    cr_assert_eq(rc, -EAGAIN, "audit received the message past its expiry (rc %d)", rc);
    shmq_consumer_close(c0);
    shmq_consumer_close(ca);
    shmq_close(q);
}
