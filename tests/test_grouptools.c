/*
 * test_grouptools.c - the per-group tools (issue 18, "the groups appear in every tool"): dead
 * letters, purge, peek and stats of one consumer group, in the C API and in `shmq`.
 *
 *  - dlq_per_group: dead letters made in group "a" are listed, redriven and purged in "a"
 *    alone; "default" and "b" keep their own view of the same messages, and the plain calls
 *    (group 0) do not see group a's dead letters; every slot is free at the end.
 *  - cli_dlq_group: `shmq dlq NAME list|redrive|purge --group G`, and a group that does not
 *    exist is exit 1.
 *  - purge_and_peek_per_group: a peek of a group shows what is ready for it alone (with that
 *    group's attempts); a purge of group a (ready, then delayed) drops a's messages only: the
 *    others still receive them, and the slots come back once every group is done.
 *  - cli_purge_peek_group: `shmq peek|purge NAME --group G`.
 *  - logged_group_purges_stay_purged_after_a_rebuild: with a log, group a's purge (ready) and
 *    dead-letter purge are ACK records of a, its redrive a PUBLISH for a: after a segment loss
 *    the rebuilt queue has them as a left them, and default still has every message.
 *  - group_stats_counts_and_lag: shmq_group_stats of three groups that are at different places
 *    of the same five messages: counts by state, held, lag, overrun, newest_id.
 *  - inspect_snapshot_has_each_group: the inspection layer's snapshot has the same three groups
 *    counted as shmq_group_stats() counts them, with each entry and its consumers.
 *  - group_counters_count_each_groups_consumers: a group's delivered/acked/nacked are its
 *    consumers', closed ones included; a consumer of a deleted group counts in none, not in a
 *    group made again at its index (shmq_group_stats and `shmq stat --json`).
 *  - cli_group_list_shows_lag: `shmq group NAME list` (text, --json) has each group's lag.
 *  - wal_inspect_lists_the_groups_a_rebuild_makes: `shmq wal NAME inspect` names the groups the
 *    log records (a deleted one not restored), and a rebuild makes the same ones.
 *  - cli_stat_dump_top_show_each_group: `shmq stat` (text, --json), `dump` and `top` show a line
 *    per group; a queue with "default" alone reads as before in text.
 */
#include "helpers.h"

#include "cli.h"
#include "inspect.h"

#include <inttypes.h>

TestSuite(grouptools, .fini = h_cleanup, .timeout = 120);

static shmq_config_t gt_config(uint32_t capacity)
{
    shmq_config_t cfg = h_small_config(capacity, 256, 64);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_groups = 4;
    cfg.max_attempts = 1; /* a nack is a dead letter */
    cfg.ack_deadline_ms = 600000;
    cfg.heartbeat_timeout_ms = 60000;
    return cfg;
}

/* Receive every ready message of c (none may take longer than 5 s to show) and ack or nack
 * each: nack_mask bit id-1 set means nack. Returns how many were received. */
static size_t drain(shmq_consumer_t *c, size_t want, uint64_t nack_mask)
{
    size_t got = 0;
    shmq_msg_t m;
    while (got < want) {
        h_assert_rc(shmq_receive(c, &m, 5000), 0);
        got++;
        if (nack_mask >> (m.id - 1) & 1)
            h_assert_rc(shmq_nack(c, &m, 0), 0);
        else
            h_assert_rc(shmq_ack(c, &m), 0);
    }
    return got;
}

static void assert_all_free(shmq_t *q, uint32_t capacity)
{
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.free, capacity, "free %u of %u (ready %u inflight %u dead %u)", st.free,
                 capacity, st.ready, st.inflight, st.dead);
}

Test(grouptools, dlq_per_group)
{
    const char *name = h_qname("gtdlq");
    shmq_config_t cfg = gt_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca, *cb;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    h_assert_rc(shmq_consumer_open_group(q, "b", "cb", &cb), 0);
    h_assert_rc(shmq_publish(q, "m1", 2, NULL), 0);
    h_assert_rc(shmq_publish(q, "m2", 2, NULL), 0);
    h_assert_rc(shmq_publish(q, "m3", 2, NULL), 0);
    drain(ca, 3, 0x3); /* ids 1 and 2 dead in a, 3 acked */

    shmq_dead_letter_t dl[8];
    size_t n = 99;
    h_assert_rc(shmq_dlq_list_group(q, "a", dl, 8, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert(dl[0].id == 1 && dl[1].id == 2 && dl[0].reason == SHMQ_DEAD_MAX_ATTEMPTS &&
                  dl[0].attempt == 1 && dl[0].len == 2 && memcmp(dl[0].data, "m1", 2) == 0,
              "id %" PRIu64 " reason %u attempt %u", dl[0].id, dl[0].reason, dl[0].attempt);
    h_assert_rc(shmq_dlq_list(q, dl, 8, &n), 0);
    cr_assert_eq(n, 0, "group a's dead letters are not default's");
    h_assert_rc(shmq_dlq_list_group(q, NULL, dl, 8, &n), 0);
    cr_assert_eq(n, 0);
    h_assert_rc(shmq_dlq_list_group(q, "b", dl, 8, &n), 0);
    cr_assert_eq(n, 0);
    h_assert_rc(shmq_dlq_list_group(q, "nope", dl, 8, &n), -ENOENT);
    h_assert_rc(shmq_dlq_list_group(q, "a", NULL, 8, &n), -EINVAL);
    uint32_t moved = 99;
    h_assert_rc(shmq_dlq_redrive(q, 0, &moved), 0);
    cr_assert_eq(moved, 0, "the plain redrive is default's");
    h_assert_rc(shmq_dlq_purge_group(q, "nope", 0, &moved), -ENOENT);
    h_assert_rc(shmq_dlq_redrive_group(q, "nope", 0, &moved), -ENOENT);

    /* redrive id 1 in a: a receives it again, attempt 1; purge id 2 in a */
    h_assert_rc(shmq_dlq_redrive_group(q, "a", 1, &moved), 0);
    cr_assert_eq(moved, 1);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(ca, &m, 5000), 0);
    cr_assert(m.id == 1 && m.attempt == 1 && m.len == 2 && memcmp(m.data, "m1", 2) == 0,
              "id %" PRIu64 " attempt %u", m.id, m.attempt);
    h_assert_rc(shmq_ack(ca, &m), 0);
    h_assert_rc(shmq_receive(ca, &m, 0), -EAGAIN);
    h_assert_rc(shmq_dlq_purge_group(q, "a", 0, &moved), 0);
    cr_assert_eq(moved, 1);
    h_assert_rc(shmq_dlq_list_group(q, "a", dl, 8, &n), 0);
    cr_assert_eq(n, 0);

    /* default and b still have all three; b's nack of 3 is b's dead letter, purged in b */
    drain(c0, 3, 0);
    drain(cb, 3, 0x4);
    h_assert_rc(shmq_dlq_list_group(q, "b", dl, 8, &n), 0);
    cr_assert(n == 1 && dl[0].id == 3, "n %zu", n);
    h_assert_rc(shmq_dlq_purge(q, 0, &moved), 0);
    cr_assert_eq(moved, 0, "the plain purge is default's");
    h_assert_rc(shmq_dlq_purge_group(q, "b", 3, &moved), 0);
    cr_assert_eq(moved, 1);
    assert_all_free(q, cfg.capacity);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_consumer_close(cb), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(grouptools, cli_dlq_group)
{
    const char *name = h_qname("gtcli");
    shmq_config_t cfg = gt_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *ca;
    h_assert_rc(shmq_consumer_open_group(q, "audit", "ca", &ca), 0);
    h_assert_rc(shmq_publish(q, "gone-bad", 8, NULL), 0);
    h_assert_rc(shmq_publish(q, "also-bad", 8, NULL), 0);
    drain(ca, 2, 0x3);
    h_assert_rc(shmq_consumer_close(ca), 0);

    struct run r = RUN("dlq", name, "list", "--group", "audit", "--json");
    assert_exit(&r, 0, "dlq list --group audit --json");
    struct jval *doc = json_parse(r.out);
    cr_assert_str_eq(jstr(doc, "group"), "audit");
    cr_assert_str_eq(jstr(doc, "dead_letters.0.data"), "gone-bad");
    jassert_num(doc, "dead_letters.1.id", 2);
    json_free(doc);
    run_free(&r);
    r = RUN("dlq", name, "list");
    assert_exit(&r, 0, "dlq list (default)");
    cr_assert(!strstr(r.out, "gone-bad"), "default shows audit's dead letter:\n%s", r.out);
    run_free(&r);
    RUN_EXPECT_EXIT(1, "dlq list --group nope", "dlq", name, "list", "--group", "nope");
    r = RUN("dlq", name, "redrive", "1", "-g", "audit");
    assert_exit(&r, 0, "dlq redrive 1 -g audit");
    assert_contains(r.out, "1 dead letter redriven", "dlq redrive");
    run_free(&r);
    r = RUN("dlq", name, "purge", "--group", "audit");
    assert_exit(&r, 0, "dlq purge --group audit");
    assert_contains(r.out, "1 dead letter purged", "dlq purge");
    run_free(&r);
    r = RUN("sub", name, "--group", "audit", "--count", "1", "--timeout-ms", "5000");
    assert_exit(&r, 0, "sub --group audit");
    assert_contains(r.out, "gone-bad", "the redriven message");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

/* Peek group g (NULL: default) into ids[]: how many. */
static size_t peek_ids(shmq_t *q, const char *g, uint64_t *ids, uint32_t *attempts, size_t max)
{
    shmq_peek_msg_t m[16];
    char buf[16 * 64];
    size_t n = 0;
    cr_assert(max <= 16);
    h_assert_rc(shmq_peek_group(q, g, m, NULL, max, buf, sizeof buf, &n), 0);
    for (size_t i = 0; i < n; i++) {
        ids[i] = m[i].id;
        if (attempts)
            attempts[i] = m[i].attempt;
    }
    return n;
}

Test(grouptools, purge_and_peek_per_group)
{
    const char *name = h_qname("gtpurge");
    shmq_config_t cfg = gt_config(16);
    cfg.max_attempts = 5;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_BLOCK, 0), 0);
    shmq_consumer_t *c0, *ca, *cb;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    h_assert_rc(shmq_consumer_open_group(q, "b", "cb", &cb), 0);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, "mm", 2, NULL), 0);
    /* a takes 1 (in flight) and nacks 2 with a long delay; default acks 1 */
    shmq_msg_t a1, a2, d1;
    h_assert_rc(shmq_receive(ca, &a1, 5000), 0);
    h_assert_rc(shmq_receive(ca, &a2, 5000), 0);
    cr_assert(a1.id == 1 && a2.id == 2);
    h_assert_rc(shmq_nack(ca, &a2, 600000), 0);
    h_assert_rc(shmq_receive(c0, &d1, 5000), 0);
    h_assert_rc(shmq_ack(c0, &d1), 0);

    uint64_t ids[16];
    uint32_t att[16];
    size_t n = peek_ids(q, "a", ids, att, 16);
    cr_assert(n == 2 && ids[0] == 3 && ids[1] == 4, "a's ready: %zu", n);
    n = peek_ids(q, NULL, ids, att, 16);
    cr_assert(n == 3 && ids[0] == 2 && ids[2] == 4, "default's ready: %zu", n);
    n = peek_ids(q, "b", ids, att, 16);
    cr_assert(n == 4 && ids[0] == 1 && att[0] == 0, "b's ready: %zu", n);
    shmq_peek_msg_t pm;
    char pbuf[8];
    size_t pn;
    h_assert_rc(shmq_peek_group(q, "nope", &pm, NULL, 1, pbuf, sizeof pbuf, &pn), -ENOENT);
    /* b nacks 1 at once: its attempt shows in b's peek, not in default's */
    shmq_msg_t b1;
    h_assert_rc(shmq_receive(cb, &b1, 5000), 0);
    h_assert_rc(shmq_nack(cb, &b1, 1), 0); /* due in 1 ms */
    int64_t until = h_now_ms() + 20000;
    while ((n = peek_ids(q, "b", ids, att, 16)) != 4 && h_now_ms() < until) {
        h_assert_rc(shmq_maintain(q, NULL), 0); /* fires the nack's backoff */
        h_sleep_ms(5);
    }
    cr_assert(n == 4 && ids[0] == 1 && att[0] == 1, "b's redelivery: n %zu attempt %u", n,
              att[0]);

    uint32_t purged = 99;
    h_assert_rc(shmq_purge_group(q, "nope", 0, &purged), -ENOENT);
    h_assert_rc(shmq_purge_group(q, "a", 0, &purged), 0);
    cr_assert_eq(purged, 2, "a's ready 3 and 4");
    cr_assert_eq(peek_ids(q, "a", ids, NULL, 16), 0);
    cr_assert_eq(peek_ids(q, NULL, ids, NULL, 16), 3, "default keeps its own");
    cr_assert_eq(peek_ids(q, "b", ids, NULL, 16), 4, "b keeps its own");
    h_assert_rc(shmq_purge_group(q, "a", SHMQ_PURGE_DELAYED, &purged), 0);
    cr_assert_eq(purged, 1, "a's delayed 2");
    h_assert_rc(shmq_ack(ca, &a1), 0); /* in flight: the purge left it */
    shmq_msg_t m;
    h_assert_rc(shmq_receive(ca, &m, 0), -EAGAIN);
    drain(c0, 3, 0);
    h_assert_rc(shmq_purge_group(q, "b", 0, &purged), 0);
    cr_assert_eq(purged, 4);
    assert_all_free(q, cfg.capacity);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_consumer_close(cb), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(grouptools, cli_purge_peek_group)
{
    const char *name = h_qname("gtcpp");
    shmq_config_t cfg = gt_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "audit", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_publish(q, "first", 5, NULL), 0);
    h_assert_rc(shmq_publish(q, "second", 6, NULL), 0);
    shmq_consumer_t *c0;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    drain(c0, 1, 0); /* default acks "first" */
    h_assert_rc(shmq_consumer_close(c0), 0);

    struct run r = RUN("peek", name, "--group", "audit", "--json");
    assert_exit(&r, 0, "peek --group audit");
    assert_contains(r.out, "\"first\"", "peek --group audit");
    assert_contains(r.out, "\"second\"", "peek --group audit");
    run_free(&r);
    r = RUN("peek", name);
    assert_exit(&r, 0, "peek (default)");
    cr_assert(!strstr(r.out, "first") && strstr(r.out, "second"), "peek default:\n%s", r.out);
    run_free(&r);
    RUN_EXPECT_EXIT(1, "peek --group nope", "peek", name, "--group", "nope");
    RUN_EXPECT_EXIT(1, "purge --group nope", "purge", name, "--group", "nope");
    r = RUN("purge", name, "-g", "audit", "--json");
    assert_exit(&r, 0, "purge -g audit");
    struct jval *doc = json_parse(r.out);
    jassert_num(doc, "purged", 2);
    cr_assert_str_eq(jstr(doc, "group"), "audit");
    json_free(doc);
    run_free(&r);
    r = RUN("peek", name, "--group", "audit");
    assert_exit(&r, 0, "peek --group audit after its purge");
    cr_assert_str_eq(r.out, "", "audit's messages were purged");
    run_free(&r);
    r = RUN("peek", name);
    assert_exit(&r, 0, "peek (default) after audit's purge");
    assert_contains(r.out, "second", "default keeps its own");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

/* Three groups at different places of the same five messages: default 1 acked, 2 in flight
 * (held0), 3..5 ready; a (BLOCK) 1 dead (max_attempts 1), 2..5 ready; b (OVERRUN, bound 2)
 * 1..3 dropped by the bound, 4 and 5 ready. c0 consumes in default, ca in a. */
struct three {
    shmq_t *q;
    shmq_consumer_t *c0, *ca;
    shmq_msg_t held0;
};

static void three_groups(const char *name, struct three *t)
{
    shmq_config_t cfg = gt_config(16);
    h_assert_rc(shmq_create(name, &cfg, &t->q), 0);
    h_assert_rc(shmq_group_create(t->q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(t->q, "b", SHMQ_GROUP_OVERRUN, 2), 0);
    shmq_group_stats_t gs;
    h_assert_rc(shmq_group_stats(t->q, "a", &gs), 0);
    cr_assert(gs.held == 0 && gs.lag == 0 && gs.oldest_age_ms == -1 && gs.index == 1,
              "empty: held %" PRIu64 " lag %" PRIu64, gs.held, gs.lag);
    for (int i = 0; i < 5; i++)
        h_assert_rc(shmq_publish(t->q, "mm", 2, NULL), 0);
    h_assert_rc(shmq_consumer_open(t->q, "c0", &t->c0), 0);
    h_assert_rc(shmq_consumer_open_group(t->q, "a", "ca", &t->ca), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(t->c0, &m, 5000), 0);
    h_assert_rc(shmq_ack(t->c0, &m), 0);              /* default: 1 acked */
    h_assert_rc(shmq_receive(t->c0, &t->held0, 5000), 0); /* default: 2 in flight */
    h_assert_rc(shmq_receive(t->ca, &m, 5000), 0);
    h_assert_rc(shmq_nack(t->ca, &m, 0), 0);          /* a: 1 dead (max_attempts 1) */
    h_assert_rc(shmq_maintain(t->q, NULL), 0);        /* b: overrun drops 1..3, keeps 4, 5 */
}

static void three_close(struct three *t)
{
    h_assert_rc(shmq_ack(t->c0, &t->held0), 0);
    h_assert_rc(shmq_consumer_close(t->c0), 0);
    h_assert_rc(shmq_consumer_close(t->ca), 0);
    h_assert_rc(shmq_close(t->q), 0);
}

Test(grouptools, group_stats_counts_and_lag)
{
    struct three t;
    three_groups(h_qname("gtstats"), &t);
    shmq_t *q = t.q;
    shmq_group_stats_t gs;
    h_assert_rc(shmq_group_stats(q, NULL, &gs), 0);
    cr_assert_str_eq(gs.name, "default");
    cr_assert(gs.index == 0 && gs.ready == 3 && gs.inflight == 1 && gs.dead == 0 &&
                  gs.held == 4 && gs.lag == 4 && gs.newest_id == 5 && gs.oldest_age_ms >= 0,
              "default: ready %u inflight %u held %" PRIu64 " lag %" PRIu64, gs.ready,
              gs.inflight, gs.held, gs.lag);
    h_assert_rc(shmq_group_stats(q, "a", &gs), 0);
    cr_assert(gs.ready == 4 && gs.inflight == 0 && gs.dead == 1 && gs.held == 5 && gs.lag == 4,
              "a: ready %u dead %u held %" PRIu64 " lag %" PRIu64, gs.ready, gs.dead, gs.held,
              gs.lag);
    h_assert_rc(shmq_group_stats(q, "b", &gs), 0);
    cr_assert(gs.ready == 2 && gs.held == 2 && gs.lag == 2 && gs.overrun == 3 &&
                  gs.first_id == 1 && strcmp(gs.name, "b") == 0,
              "b: ready %u lag %" PRIu64 " overrun %" PRIu64, gs.ready, gs.lag, gs.overrun);
    h_assert_rc(shmq_group_stats(q, "nope", &gs), -ENOENT);
    h_assert_rc(shmq_group_stats(NULL, "a", &gs), -EINVAL);
    h_assert_rc(shmq_group_stats_size(q, "a", &gs, 8), -EINVAL);
    three_close(&t);
}

/* The inspection layer's snapshot (what `shmq stat`, `dump` and `top` show) has each group,
 * counted as shmq_group_stats() counts it, with its entry and its consumers. */
Test(grouptools, inspect_snapshot_has_each_group)
{
    const char *name = h_qname("gtinsp");
    struct three t;
    three_groups(name, &t);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(t.ca, &m, 5000), 0); /* a: one in flight, held by ca */
    static struct inspect_snapshot s;
    h_assert_rc(inspect_queue(name, &s), 0);
    cr_assert_eq(s.n_groups, 3);
    cr_assert_eq(s.notes.count, 0, "%s", s.notes.text[0]);
    const char *names[3] = {"default", "a", "b"};
    const uint32_t consumers[3] = {1, 1, 0}, policy[3] = {SHMQ_GROUP_BLOCK, SHMQ_GROUP_BLOCK,
                                                           SHMQ_GROUP_OVERRUN};
    for (uint32_t g = 0; g < 3; g++) {
        shmq_group_stats_t gs;
        h_assert_rc(shmq_group_stats(t.q, names[g], &gs), 0);
        const struct inspect_group *ig = inspect_group_at(&s, g);
        cr_assert_not_null(ig, "group %u", g);
        cr_assert_str_eq(ig->name, names[g]);
        cr_assert(ig->index == g && ig->state == INSPECT_GROUP_ACTIVE && ig->policy == policy[g] &&
                      ig->bound == (g == 2 ? 2u : 0u) && ig->first_id == gs.first_id,
                  "%s: entry", names[g]);
        cr_assert(ig->ready == gs.ready && ig->inflight == gs.inflight &&
                      ig->delayed == gs.delayed && ig->dead == gs.dead && ig->held == gs.held &&
                      ig->lag == gs.lag && ig->overrun == gs.overrun &&
                      (ig->oldest_age_ms >= 0) == (gs.oldest_age_ms >= 0),
                  "%s: ready %u/%u dead %u/%u lag %" PRIu64 "/%" PRIu64, names[g], ig->ready,
                  gs.ready, ig->dead, gs.dead, ig->lag, gs.lag);
        cr_assert_eq(ig->consumers, consumers[g], "%s: %u consumers", names[g], ig->consumers);
    }
    cr_assert_null(inspect_group_at(&s, 3));
    uint32_t seen = 0;
    for (uint32_t i = 0; i < s.n_procs; i++) {
        const struct inspect_proc *p = &s.procs[i];
        if (strcmp(p->name, "ca") == 0) {
            seen++;
            cr_assert_eq(p->group, 1, "ca receives in a");
            cr_assert_eq(p->inflight, 1, "ca holds one of a's messages");
        }
        if (strcmp(p->name, "c0") == 0) {
            seen++;
            cr_assert_eq(p->group, 0, "c0 receives in default");
            cr_assert_eq(p->inflight, 1, "c0 holds one");
        }
    }
    cr_assert_eq(seen, 2);
    inspect_snapshot_free(&s);
    three_close(&t);
}

/* `shmq stat` (text and --json), `dump` and `top` show a line per group; a queue with the group
 * "default" only reads as before in text (and has it alone in --json). */
Test(grouptools, cli_stat_dump_top_show_each_group)
{
    const char *name = h_qname("gtcli3");
    struct three t;
    three_groups(name, &t);

    struct run r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    struct jval *d = json_parse(r.out);
    struct jval *gr = jget(d, "groups");
    cr_assert(gr && gr->type == J_ARR && gr->n == 3, "three groups");
    cr_assert_str_eq(jstr(d, "groups.0.name"), "default");
    cr_assert_str_eq(jstr(d, "groups.0.state"), "ACTIVE");
    jassert_num(d, "groups.0.ready", 3);
    jassert_num(d, "groups.0.inflight", 1);
    jassert_num(d, "groups.0.lag", 4);
    jassert_num(d, "groups.0.consumers", 1);
    cr_assert_str_eq(jstr(d, "groups.1.name"), "a");
    cr_assert_str_eq(jstr(d, "groups.1.policy"), "block");
    jassert_num(d, "groups.1.index", 1);
    jassert_num(d, "groups.1.ready", 4);
    jassert_num(d, "groups.1.dead", 1);
    jassert_num(d, "groups.1.held", 5);
    jassert_num(d, "groups.1.lag", 4);
    jassert_num(d, "groups.1.consumers", 1);
    cr_assert(jnum(d, "groups.1.oldest_message_age_ms") >= 0);
    cr_assert_str_eq(jstr(d, "groups.2.name"), "b");
    cr_assert_str_eq(jstr(d, "groups.2.policy"), "overrun");
    jassert_num(d, "groups.2.bound", 2);
    jassert_num(d, "groups.2.ready", 2);
    jassert_num(d, "groups.2.lag", 2);
    jassert_num(d, "groups.2.overrun", 3);
    jassert_num(d, "groups.2.first_id", 1);
    jassert_num(d, "groups.2.consumers", 0);
    bool saw_ca = false;
    struct jval *procs = jget(d, "processes");
    for (size_t i = 0; procs && i < procs->n; i++)
        if (jget(procs->items[i], "name") && strcmp(jstr(procs->items[i], "name"), "ca") == 0) {
            saw_ca = true;
            cr_assert_str_eq(jstr(procs->items[i], "group"), "a");
        }
    cr_assert(saw_ca, "the consumer of a is listed with its group");
    json_free(d);
    run_free(&r);

    r = RUN("stat", name);
    assert_exit(&r, 0, "stat");
    assert_contains(r.out, "groups:\n", "stat text");
    assert_contains(r.out,
                    "group 1: index=1 name=\"a\" state=ACTIVE policy=block bound=0 ready=4 "
                    "inflight=0 delayed=0 dead=1 held=5 lag=4",
                    "stat text: group a");
    assert_contains(r.out, "group 2: index=2 name=\"b\" state=ACTIVE policy=overrun bound=2 ready=2",
                    "stat text: group b");
    assert_contains(r.out, "name=\"ca\"", "stat text");
    assert_contains(r.out, "group=\"a\"", "stat text: ca's group");
    run_free(&r);

    r = RUN("dump", name, "--json");
    assert_exit(&r, 0, "dump --json");
    d = json_parse(r.out);
    jassert_num(d, "groups.2.overrun", 3);
    jassert_num(d, "groups.1.dead", 1);
    procs = jget(d, "registry");
    saw_ca = false;
    for (size_t i = 0; procs && i < procs->n; i++)
        if (strcmp(jstr(procs->items[i], "name"), "ca") == 0) {
            saw_ca = true;
            jassert_num(procs->items[i], "group", 1);
        }
    cr_assert(saw_ca, "dump lists the consumer of a with its group");
    json_free(d);
    run_free(&r);
    r = RUN("dump", name);
    assert_exit(&r, 0, "dump");
    assert_contains(r.out, "groups:\n", "dump text");
    assert_contains(r.out, "name=\"b\" state=ACTIVE policy=overrun", "dump text: group b");
    run_free(&r);

    /* a queue with "default" alone: no group lines in text, "default" alone in --json */
    const char *one = h_qname("gtone");
    shmq_config_t cfg = gt_config(16);
    cfg.max_groups = 1;
    shmq_t *q1;
    h_assert_rc(shmq_create(one, &cfg, &q1), 0);
    r = RUN("stat", one);
    assert_exit(&r, 0, "stat (one group)");
    cr_assert(!strstr(r.out, "groups:") && !strstr(r.out, "group "), "one group:\n%s", r.out);
    run_free(&r);
    r = RUN("dump", one);
    assert_exit(&r, 0, "dump (one group)");
    cr_assert(!strstr(r.out, "groups:") && !strstr(r.out, "group="), "one group:\n%s", r.out);
    run_free(&r);
    r = RUN("stat", one, "--json");
    assert_exit(&r, 0, "stat --json (one group)");
    d = json_parse(r.out);
    gr = jget(d, "groups");
    cr_assert(gr && gr->type == J_ARR && gr->n == 1, "default alone");
    cr_assert_str_eq(jstr(d, "groups.0.name"), "default");
    json_free(d);
    run_free(&r);

    r = RUN("top", name, one, "--iterations", "1", "--interval-ms", "10");
    assert_exit(&r, 0, "top (table)");
    assert_contains(r.out, "  @default ", "top: a row per group");
    assert_contains(r.out, "  @a ", "top: a row per group");
    assert_contains(r.out, "lag=4", "top: a's lag");
    assert_contains(r.out, "lag=2", "top: b's lag");
    const char *row1 = strstr(r.out, one); /* the rows are in the order of the names */
    cr_assert(row1 && !strstr(row1, "  @"), "the one-group queue has no group rows:\n%s", r.out);
    run_free(&r);
    h_assert_rc(shmq_close(q1), 0);
    three_close(&t);
}

/* `shmq group NAME list` shows each group's lag beside what it held. */
Test(grouptools, cli_group_list_shows_lag)
{
    const char *name = h_qname("gtlist");
    struct three t;
    three_groups(name, &t);
    struct run r = RUN("group", name, "list", "--json");
    assert_exit(&r, 0, "group list --json");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "groups.0.lag", 4);
    jassert_num(d, "groups.1.lag", 4);
    jassert_num(d, "groups.2.lag", 2);
    json_free(d);
    run_free(&r);
    r = RUN("group", name, "list");
    assert_exit(&r, 0, "group list");
    assert_contains(r.out, " LAG ", "group list: a LAG column");
    const char *row = strstr(r.out, "\n2 "); /* b's: INDEX GROUP POLICY BOUND HELD LAG ... */
    char gname[40], policy[16], lag[24];
    unsigned bound;
    unsigned long long held;
    cr_assert(row && sscanf(row + 1, "%*u %39s %15s %u %llu %23s", gname, policy, &bound, &held,
                            lag) == 5,
              "group list: b's row:\n%s", r.out);
    cr_assert(strcmp(gname, "b") == 0 && strcmp(lag, "2") == 0, "b's lag %s:\n%s", lag, r.out);
    run_free(&r);
    three_close(&t);
}

/* The counters of a group's consumers (shmq_group_stats, `shmq stat`): the attached ones' plus
 * those of the ones that closed; a consumer of a deleted group counts in no group, not even in
 * one made again at its index. */
Test(grouptools, group_counters_count_each_groups_consumers)
{
    const char *name = h_qname("gtcnt");
    shmq_config_t cfg = gt_config(16);
    cfg.max_groups = 3; /* "c" below can only take b's index */
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_BLOCK, 0), 0);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, "mm", 2, NULL), 0);
    shmq_consumer_t *c0, *ca1, *ca2, *cb;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca1", &ca1), 0);
    h_assert_rc(shmq_consumer_open_group(q, "b", "cb", &cb), 0);
    drain(c0, 4, 0);     /* default: 4 delivered, 4 acked */
    drain(ca1, 2, 0x2);  /* a: 1 acked, 2 nacked (a dead letter) */
    h_assert_rc(shmq_consumer_close(ca1), 0); /* its counters stay a's */
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca2", &ca2), 0);
    drain(ca2, 1, 0);    /* a: 3 acked */
    drain(cb, 1, 0);     /* b: 1 acked */

    shmq_group_stats_t gs;
    h_assert_rc(shmq_group_stats(q, NULL, &gs), 0);
    cr_assert(gs.delivered == 4 && gs.acked == 4 && gs.nacked == 0 && gs.consumers == 1,
              "default: delivered %" PRIu64 " acked %" PRIu64 " consumers %u", gs.delivered,
              gs.acked, gs.consumers);
    h_assert_rc(shmq_group_stats(q, "a", &gs), 0);
    cr_assert(gs.delivered == 3 && gs.acked == 2 && gs.nacked == 1 && gs.consumers == 1,
              "a: delivered %" PRIu64 " acked %" PRIu64 " nacked %" PRIu64 " consumers %u",
              gs.delivered, gs.acked, gs.nacked, gs.consumers);
    h_assert_rc(shmq_group_stats(q, "b", &gs), 0);
    cr_assert(gs.delivered == 1 && gs.acked == 1 && gs.consumers == 1, "b: delivered %" PRIu64,
              gs.delivered);

    struct run r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "groups.1.delivered", 3);
    jassert_num(d, "groups.1.acked", 2);
    jassert_num(d, "groups.1.nacked", 1);
    jassert_num(d, "groups.1.consumers", 1);
    jassert_num(d, "groups.0.delivered", 4);
    json_free(d);
    run_free(&r);

    /* b deleted while cb is attached, c made at b's index: cb is of no group */
    h_assert_rc(shmq_group_delete(q, "b"), 0);
    int err = -ENOSPC;
    for (int i = 0; i < 100 && err == -ENOSPC; i++) {
        h_assert_rc(shmq_maintain(q, NULL), 0); /* frees b's entry once swept */
        err = shmq_group_create(q, "c", SHMQ_GROUP_BLOCK, 0);
    }
    h_assert_rc(err, 0);
    h_assert_rc(shmq_group_stats(q, "c", &gs), 0);
    cr_assert_eq(gs.index, 2, "c took b's index");
    cr_assert(gs.delivered == 0 && gs.acked == 0 && gs.consumers == 0,
              "c: b's consumer counted: delivered %" PRIu64 " consumers %u", gs.delivered,
              gs.consumers);
    r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    d = json_parse(r.out);
    struct jval *procs = jget(d, "processes");
    bool saw_cb = false;
    for (size_t i = 0; procs && i < procs->n; i++)
        if (strcmp(jstr(procs->items[i], "name"), "cb") == 0) {
            saw_cb = true;
            struct jval *g = jget(procs->items[i], "group");
            cr_assert(g && g->type == J_NULL, "cb's group is gone, not c");
        }
    cr_assert(saw_cb);
    json_free(d);
    run_free(&r);
    h_assert_rc(shmq_consumer_close(cb), 0);
    h_assert_rc(shmq_group_stats(q, "c", &gs), 0);
    cr_assert(gs.delivered == 0 && gs.acked == 0, "c: b's consumer folded in: delivered %" PRIu64,
              gs.delivered);
    h_assert_rc(shmq_consumer_close(ca2), 0);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_close(q), 0);
}

/* `shmq wal NAME inspect` lists the groups the log records and whether a rebuild makes each
 * again; the rebuild agrees. */
Test(grouptools, wal_inspect_lists_the_groups_a_rebuild_makes)
{
    const char *name = h_qname("gtwal");
    shmq_config_t cfg = h_log_config(16);
    cfg.max_groups = 4;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    h_assert_rc(shmq_group_create(q, "b", SHMQ_GROUP_OVERRUN, 3), 0);
    h_assert_rc(shmq_publish(q, "mm", 2, NULL), 0);
    h_assert_rc(shmq_group_delete(q, "b"), 0);

    struct run r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "wal inspect --json");
    struct jval *d = json_parse(r.out);
    struct jval *gr = jget(d, "recovery.groups");
    cr_assert(gr && gr->type == J_ARR && gr->n == 2, "a and b:\n%s", r.out);
    cr_assert_str_eq(jstr(d, "recovery.groups.0.name"), "a");
    cr_assert_str_eq(jstr(d, "recovery.groups.0.latest"), "create");
    cr_assert(jbool(d, "recovery.groups.0.restored"), "a comes back");
    jassert_num(d, "recovery.groups.0.index", 1);
    cr_assert_str_eq(jstr(d, "recovery.groups.1.name"), "b");
    cr_assert_str_eq(jstr(d, "recovery.groups.1.policy"), "overrun");
    jassert_num(d, "recovery.groups.1.bound", 3);
    cr_assert_str_eq(jstr(d, "recovery.groups.1.latest"), "delete");
    cr_assert(!jbool(d, "recovery.groups.1.restored"), "b does not come back");
    json_free(d);
    run_free(&r);
    r = RUN("wal", name, "inspect");
    assert_exit(&r, 0, "wal inspect");
    assert_contains(r.out,
                    "group 1: index=1 name=\"a\" policy=block bound=0 first_id=1 latest=create "
                    "restored=true",
                    "wal inspect text");
    run_free(&r);

    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_group_info_t gi[4];
    size_t n;
    h_assert_rc(shmq_group_list(q, gi, 4, &n), 0);
    cr_assert(n == 2 && strcmp(gi[1].name, "a") == 0, "the rebuild made default and a (%zu)", n);
    h_assert_rc(shmq_close(q), 0);

    /* a log without groups: no group lines in text */
    const char *plain = h_qname("gtwal1");
    cfg = h_log_config(16);
    h_assert_rc(shmq_create(plain, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "mm", 2, NULL), 0);
    r = RUN("wal", plain, "inspect");
    assert_exit(&r, 0, "wal inspect (no groups)");
    cr_assert(!strstr(r.out, "groups:"), "no groups:\n%s", r.out);
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

Test(grouptools, logged_group_purges_stay_purged_after_a_rebuild)
{
    const char *name = h_qname("gtlog");
    shmq_config_t cfg = h_log_config(16);
    cfg.max_groups = 4;
    cfg.max_attempts = 1;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, "mm", 2, NULL), 0);
    shmq_consumer_t *ca;
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    drain(ca, 2, 0x3); /* 1 and 2: a's dead letters */
    h_assert_rc(shmq_consumer_close(ca), 0);
    uint32_t n;
    h_assert_rc(shmq_dlq_purge_group(q, "a", 1, &n), 0);
    cr_assert_eq(n, 1);
    h_assert_rc(shmq_dlq_redrive_group(q, "a", 2, &n), 0);
    cr_assert_eq(n, 1);
    h_assert_rc(shmq_purge_group(q, "a", 0, &n), 0);
    cr_assert_eq(n, 3, "a's ready: 2 (redriven), 3, 4");

    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_group_stats_t gs;
    h_assert_rc(shmq_group_stats(q, "a", &gs), 0);
    cr_assert_eq(gs.held, 0, "a holds %" PRIu64 " after the rebuild (ready %u dead %u)",
                 gs.held, gs.ready, gs.dead);
    h_assert_rc(shmq_group_stats(q, NULL, &gs), 0);
    cr_assert_eq(gs.ready, 4, "default keeps all four");
    h_assert_rc(shmq_close(q), 0);
}
