/*
 * test_setconfig.c - shmq_set_config() and `shmq config` (src/setconfig.c, settings.h): the
 * changeable settings change for every handle at once and take effect; the fixed ones are
 * refused and nothing changes; a change survives a segment loss, also once log retention has
 * deleted the file its CONFIG record was written in (K3); a lowered heartbeat timeout does not
 * fence a consumer still sleeping at the old pace (K4); readers racing changes see each setting
 * old or new.
 *
 * shmq-test-label: threaded
 */
#include "cli.h"

#include <pthread.h>

TestSuite(setconfig, .fini = h_cleanup, .timeout = 90);

static shmq_config_t changed(void)
{
    shmq_config_t c;
    shmq_config_init(&c);
    c.heartbeat_timeout_ms = 7000;
    c.ack_deadline_ms = 45000;
    c.max_attempts = 9;
    c.backoff_base_ms = 250;
    c.backoff_cap_ms = 9000;
    c.backoff_multiplier = 3.5;
    c.default_ttl_ms = 86400000;
    c.expire_policy = SHMQ_EXPIRE_DEAD_LETTER;
    c.log_retention_bytes = 12345;
    return c;
}

static void assert_changed(const shmq_config_t *c)
{
    cr_assert_eq(c->heartbeat_timeout_ms, 7000);
    cr_assert_eq(c->ack_deadline_ms, 45000);
    cr_assert_eq(c->max_attempts, 9);
    cr_assert_eq(c->backoff_base_ms, 250);
    cr_assert_eq(c->backoff_cap_ms, 9000);
    cr_assert(c->backoff_multiplier == 3.5);
    cr_assert_eq(c->default_ttl_ms, 86400000);
    cr_assert_eq(c->expire_policy, SHMQ_EXPIRE_DEAD_LETTER);
    cr_assert_eq(c->log_retention_bytes, 12345);
}

/* A change made through one handle is what every handle's shmq_get_config() shows; the fields
 * not named keep their values; the layout's fields are untouched. */
Test(setconfig, a_change_is_seen_by_every_handle)
{
    const char *name = h_qname("scall");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *a, *b;
    h_assert_rc(shmq_create(name, &cfg, &a), 0);
    h_assert_rc(shmq_open(name, &b), 0);
    shmq_config_t want = changed();
    h_assert_rc(shmq_set_config(a, &want, SHMQ_CONFIG_MAX_ATTEMPTS), 0);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(b, &got), 0);
    cr_assert_eq(got.max_attempts, 9);
    cr_assert_eq(got.ack_deadline_ms, cfg.ack_deadline_ms, "a field not named is unchanged");
    h_assert_rc(shmq_set_config(b, &want, SHMQ_CONFIG_CHANGEABLE), 0);
    h_assert_rc(shmq_get_config(a, &got), 0);
    assert_changed(&got);
    cr_assert_eq(got.capacity, 16);
    cr_assert_eq(got.max_msg_size, 64);
    cr_assert_eq(got.max_procs, 8);
    h_assert_rc(shmq_close(b), 0);
    h_assert_rc(shmq_close(a), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Fixed fields, no fields, unknown bits and values outside the limits are -EINVAL, and nothing
 * changes, not even the valid fields named with them. */
Test(setconfig, fixed_fields_and_bad_values_are_refused)
{
    const char *name = h_qname("scbad");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_config_t c = changed();
    c.capacity = 32;
    c.max_msg_size = 128;
    static const uint32_t fixed[] = {SHMQ_CONFIG_CAPACITY,
                                     SHMQ_CONFIG_MAX_MSG_SIZE,
                                     SHMQ_CONFIG_MAX_PROCS,
                                     SHMQ_CONFIG_MODE,
                                     SHMQ_CONFIG_DURABILITY,
                                     SHMQ_CONFIG_LOG_DIR,
                                     SHMQ_CONFIG_WAL_FILE_SIZE,
                                     SHMQ_CONFIG_DEDUP_WINDOW_COUNT,
                                     SHMQ_CONFIG_DEDUP_WINDOW_MS,
                                     1u << 15,
                                     1u << 31};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        h_assert_rc(shmq_set_config(q, &c, fixed[i] | SHMQ_CONFIG_MAX_ATTEMPTS), -EINVAL);
    h_assert_rc(shmq_set_config(q, &c, SHMQ_CONFIG_CAPACITY), -EINVAL);
    cr_assert(strstr(shmq_last_error_detail(), "capacity cannot change"), "detail: %s",
              shmq_last_error_detail());
    h_assert_rc(shmq_set_config(q, &c, 0), -EINVAL);
    h_assert_rc(shmq_set_config(NULL, &c, SHMQ_CONFIG_MAX_ATTEMPTS), -EINVAL);
    h_assert_rc(shmq_set_config(q, NULL, SHMQ_CONFIG_MAX_ATTEMPTS), -EINVAL);
    shmq_config_t bad = changed();
    bad.max_attempts = 0;
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_CHANGEABLE), -EINVAL);
    bad = changed();
    bad.ack_deadline_ms = 0;
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_CHANGEABLE), -EINVAL);
    bad = changed();
    bad.heartbeat_timeout_ms = 0;
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_CHANGEABLE), -EINVAL);
    bad = changed();
    bad.backoff_multiplier = 0.5;
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_CHANGEABLE), -EINVAL);
    bad = changed();
    bad.max_attempts = SHMQ_ATTEMPTS_MAX + 1; /* more than the log's 16 bits keep */
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_MAX_ATTEMPTS), -EINVAL);
    cr_assert(strstr(shmq_last_error_detail(), "max_attempts 65536 is outside 1..65535"),
              "detail: %s", shmq_last_error_detail());
    shmq_config_t big = cfg;
    big.max_attempts = SHMQ_ATTEMPTS_MAX + 1;
    shmq_t *q2;
    const char *bigname = h_qname("scbig");
    h_assert_rc(shmq_create(bigname, &big, &q2), -EINVAL);
    big.max_attempts = SHMQ_ATTEMPTS_MAX;
    h_assert_rc(shmq_create(bigname, &big, &q2), 0);
    h_assert_rc(shmq_close(q2), 0);
    h_assert_rc(shmq_unlink(bigname), 0);
    bad = changed();
    bad.expire_policy = 7;
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_EXPIRE_POLICY), -EINVAL);
    cr_assert(strstr(shmq_last_error_detail(), "expire_policy 7"), "detail: %s",
              shmq_last_error_detail());
    /* base above the cap in use (30000 by default), the cap not named */
    bad = changed();
    bad.backoff_base_ms = 40000;
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_BACKOFF_BASE_MS), -EINVAL);
    cr_assert(strstr(shmq_last_error_detail(), "backoff_base_ms 40000 is above backoff_cap_ms"),
              "detail: %s", shmq_last_error_detail());
    bad.size = 12; /* a size no shmq_config_t ever had */
    h_assert_rc(shmq_set_config(q, &bad, SHMQ_CONFIG_MAX_ATTEMPTS), -EINVAL);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.max_attempts, cfg.max_attempts, "nothing changed");
    cr_assert_eq(got.backoff_base_ms, cfg.backoff_base_ms);
    cr_assert_eq(got.capacity, 16);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Maintain q until a pass takes back an expired delivery or expires a message (at most 20 s):
 * that pass's report (all zero if none did). */
static shmq_maint_report_t maintain_until_something_expires(shmq_t *q)
{
    shmq_maint_report_t rep = {0};
    int64_t bound = h_now_ms() + 20000;
    while (h_now_ms() < bound) {
        h_assert_rc(shmq_maintain(q, &rep), 0);
        if (rep.deadline_expired || rep.expired)
            break;
        h_sleep_ms(10);
    }
    return rep;
}

/* The new settings take effect: a lower max_attempts sends the next nack of a message that
 * has had that many deliveries to the dead letters; a shorter ack deadline applies to the next
 * delivery (maintenance takes it back then). */
Test(setconfig, new_settings_take_effect)
{
    const char *name = h_qname("sceff");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_attempts = 10;
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    cfg.ack_deadline_ms = 600000;
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "eff", &c), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0); /* attempt 1 of 10: back to ready */
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    cr_assert_eq(m.attempt, 2);
    shmq_config_t set = cfg;
    set.max_attempts = 2;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_MAX_ATTEMPTS), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 1, "the nack at the new max_attempts dead-lettered it");

    set.ack_deadline_ms = 40;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_ACK_DEADLINE_MS), 0);
    h_assert_rc(shmq_publish(q, "n", 1, NULL), 0);
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    uint32_t expired = maintain_until_something_expires(q).deadline_expired;
    cr_assert_eq(expired, 1, "the delivery after the change had the 40 ms deadline");
    h_assert_rc(shmq_ack(c, &m), -ESTALE);
    h_assert_rc(shmq_receive(c, &m, 1000), 0); /* redelivered: done with it */
    h_assert_rc(shmq_ack(c, &m), 0);

    /* a default time to live set now applies to messages published after it */
    set.default_ttl_ms = 30;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_DEFAULT_TTL_MS), 0);
    h_assert_rc(shmq_publish(q, "t", 1, NULL), 0);
    uint32_t gone = maintain_until_something_expires(q).expired;
    cr_assert_eq(gone, 1, "the message published after the change expired");
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 1, "dropped, as the policy the queue was made with says");

    /* the expire policy set now applies to the next expiry: a dead letter, reason expired */
    set.expire_policy = SHMQ_EXPIRE_DEAD_LETTER;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_EXPIRE_POLICY), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    gone = maintain_until_something_expires(q).expired;
    cr_assert_eq(gone, 1, "the message published after the policy change expired");
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 2, "and became a dead letter, as the new policy says");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Publish, receive and ack n messages of 64 B, with a maintenance pass every 200. */
static void traffic(shmq_t *q, shmq_consumer_t *c, int n)
{
    char payload[64] = {0};
    for (int i = 0; i < n; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0);
        h_assert_rc(shmq_receive(c, &m, 1000), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
        if (i % 200 == 0)
            h_assert_rc(shmq_maintain(q, NULL), 0);
    }
    h_assert_rc(shmq_maintain(q, NULL), 0);
}

static void lose_segment_and_reopen(const char *name, shmq_t **q)
{
    h_assert_rc(shmq_close(*q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, q), 0); /* rebuilt from the log */
}

/* A logged change survives the loss of the segment, and a second loss (the rebuilt segment's
 * layout holds the settings, its log has no CONFIG record until the next change). */
Test(setconfig, a_change_survives_a_segment_loss)
{
    const char *name = h_qname("scloss");
    shmq_config_t cfg = h_log_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_config_t want = changed();
    h_assert_rc(shmq_set_config(q, &want, SHMQ_CONFIG_CHANGEABLE), 0);
    h_assert_rc(shmq_publish(q, "kept", 4, NULL), 0);
    lose_segment_and_reopen(name, &q);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    assert_changed(&got);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready, 1, "the message came back too");
    lose_segment_and_reopen(name, &q);
    h_assert_rc(shmq_get_config(q, &got), 0);
    assert_changed(&got);
    /* a change after a rebuild is logged in the new generation, and kept by the next */
    want.max_attempts = 4;
    h_assert_rc(shmq_set_config(q, &want, SHMQ_CONFIG_MAX_ATTEMPTS), 0);
    lose_segment_and_reopen(name, &q);
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.max_attempts, 4);
    cr_assert_eq(got.ack_deadline_ms, 45000);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Retention deletes the file the CONFIG record was written in only after maintenance logged
 * the settings again (K3): after many files of traffic, acked and deleted, a segment loss
 * still brings the changed settings back. */
Test(setconfig, a_change_survives_log_retention)
{
    const char *name = h_qname("scret");
    shmq_config_t cfg = h_log_config(16); /* 64 KiB files */
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_config_t want = changed();
    h_assert_rc(shmq_set_config(q, &want, SHMQ_CONFIG_CHANGEABLE), 0);
    h_assert_rc(shmq_consumer_open(q, "ret", &c), 0);
    traffic(q, c, 4000); /* about 150 log bytes each: ten files and more */
    h_assert_rc(shmq_maintain(q, NULL), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_gt(st.wal_bytes, 8u * (64u << 10), "traffic filled many files");
    cr_assert_leq(st.wal_files, 5, "retention deleted the old files (%u left)", st.wal_files);
    h_assert_rc(shmq_consumer_close(c), 0);
    lose_segment_and_reopen(name, &q);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    assert_changed(&got);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* The log's retention changes while the queue runs: raised, the acked history stays on disk
 * (replay finds it); lowered again, the next maintenance pass deletes it; a rebuild keeps the
 * value in use. */
Test(setconfig, log_retention_changes_take_effect)
{
    const char *name = h_qname("scrtn");
    shmq_config_t cfg = h_log_config(16); /* 64 KiB files, no retention */
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "rtn", &c), 0);
    shmq_config_t set = cfg;
    set.log_retention_bytes = 4u << 20;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_LOG_RETENTION_BYTES), 0);
    traffic(q, c, 4000); /* about 150 log bytes each: ten files and more */
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_geq(st.wal_files, 9, "the raised retention kept the acked history (%u files)",
                  st.wal_files);
    set.log_retention_bytes = 0;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_LOG_RETENTION_BYTES), 0);
    h_assert_rc(shmq_maintain(q, NULL), 0);
    h_assert_rc(shmq_maintain(q, NULL), 0);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_leq(st.wal_files, 5, "the lowered retention deleted it (%u files left)",
                  st.wal_files);
    h_assert_rc(shmq_consumer_close(c), 0);
    lose_segment_and_reopen(name, &q);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.log_retention_bytes, 0, "the rebuild keeps the retention in use");
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

struct sleeper {
    shmq_consumer_t *c;
    _Atomic pid_t tid;
    _Atomic int got; /* 1: received, 2: -ESTALE (fenced), 3: another error */
};

static void *sleep_in_receive(void *arg)
{
    struct sleeper *s = arg;
    atomic_store(&s->tid, gettid());
    shmq_msg_t m;
    int rc = shmq_receive(s->c, &m, 30000);
    if (rc == 0)
        shmq_ack(s->c, &m);
    atomic_store(&s->got, rc == 0 ? 1 : rc == -ESTALE ? 2 : 3);
    return NULL;
}

/* A consumer blocked in receive sleeps a third of the heartbeat timeout it read (2 s of 6 s)
 * between heartbeats. Lowering the timeout to 200 ms would make it look hung at once (3 x 200
 * ms without a heartbeat); the grace (K4) judges it by the old timeout until it has read the
 * new one, so maintenance fences nobody and the consumer gets the next message. */
Test(setconfig, a_lowered_heartbeat_timeout_does_not_fence_a_sleeping_consumer)
{
    const char *name = h_qname("schb");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.heartbeat_timeout_ms = 6000;
    shmq_t *q;
    struct sleeper s = {0};
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "sleepy", &s.c), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, sleep_in_receive, &s), 0);
    /* asleep in its futex wait (the thread's state S; bounded wait), its sleep 2 s long */
    int64_t bound = h_now_ms() + 20000;
    while (atomic_load(&s.tid) == 0 && h_now_ms() < bound)
        h_sleep_ms(1);
    cr_assert_eq(h_wait_sleeping(atomic_load(&s.tid), 20000), 0, "the consumer never blocked");
    shmq_config_t set = cfg;
    set.heartbeat_timeout_ms = 200;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS), 0);
    int64_t end = h_now_ms() + 3000; /* past 3 x 200 ms and past one 2 s sleep */
    uint32_t hung = 0;
    while (h_now_ms() < end) {
        shmq_maint_report_t rep;
        h_assert_rc(shmq_maintain(q, &rep), 0);
        hung += rep.procs_hung + rep.procs_dead;
        h_sleep_ms(20);
    }
    cr_assert_eq(hung, 0, "the sleeping consumer was fenced");
    cr_assert_eq(atomic_load(&s.got), 0, "still waiting");
    h_assert_rc(shmq_publish(q, "wake", 4, NULL), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&s.got), 1, "it received the message (2: fenced)");
    h_assert_rc(shmq_consumer_close(s.c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

struct flipper {
    shmq_t *q;
    _Atomic int stop;
    _Atomic uint64_t bad, reads;
};

static void *flip(void *arg)
{
    struct flipper *f = arg;
    shmq_config_t c;
    shmq_config_init(&c);
    for (uint32_t i = 0; !atomic_load(&f->stop); i++) {
        c.max_attempts = i & 1 ? 3 : 7;
        c.ack_deadline_ms = i & 1 ? 1000 : 2000;
        c.backoff_multiplier = i & 1 ? 1.5 : 4.0;
        shmq_set_config(f->q, &c,
                        SHMQ_CONFIG_MAX_ATTEMPTS | SHMQ_CONFIG_ACK_DEADLINE_MS |
                            SHMQ_CONFIG_BACKOFF_MULTIPLIER);
    }
    return NULL;
}

/* Readers racing changes see, for each setting, one of the values written (never a torn or
 * third value; a pair may mix two changes, which is allowed and not checked). */
Test(setconfig, readers_see_each_setting_old_or_new)
{
    const char *name = h_qname("scrace");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_attempts = 3;
    cfg.ack_deadline_ms = 1000;
    cfg.backoff_multiplier = 1.5;
    struct flipper f = {0};
    h_assert_rc(shmq_create(name, &cfg, &f.q), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, flip, &f), 0);
    int64_t end = h_now_ms() + 500;
    while (h_now_ms() < end) {
        shmq_config_t got;
        h_assert_rc(shmq_get_config(f.q, &got), 0);
        if ((got.max_attempts != 3 && got.max_attempts != 7) ||
            (got.ack_deadline_ms != 1000 && got.ack_deadline_ms != 2000) ||
            (got.backoff_multiplier != 1.5 && got.backoff_multiplier != 4.0))
            atomic_fetch_add(&f.bad, 1);
        atomic_fetch_add(&f.reads, 1);
    }
    atomic_store(&f.stop, 1);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&f.bad), 0);
    cr_assert_gt(atomic_load(&f.reads), 0);
    h_assert_rc(shmq_close(f.q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* `shmq config`: prints the settings, changes the ones given (stat shows them), and refuses a
 * fixed one with exit 2 naming it. */
Test(setconfig, the_config_command)
{
    const char *name = h_qname("sccli");
    shmq_config_t cfg = h_log_config(16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    struct run r = RUN("config", name, "--max-attempts", "11", "--ack-deadline-ms", "4321",
                       "--backoff-multiplier", "1.5", "--json");
    assert_exit(&r, 0, "config --json");
    struct jval *d = json_parse(r.out);
    jassert_num(d, "max_attempts", 11);
    jassert_num(d, "ack_deadline_ms", 4321);
    jassert_num(d, "backoff_multiplier", 1.5);
    jassert_num(d, "heartbeat_timeout_ms", cfg.heartbeat_timeout_ms);
    json_free(d);
    run_free(&r);
    r = RUN("stat", name, "--json");
    assert_exit(&r, 0, "stat --json");
    d = json_parse(r.out);
    jassert_num(d, "config.max_attempts", 11);
    jassert_num(d, "config.ack_deadline_ms", 4321);
    json_free(d);
    run_free(&r);
    r = RUN("config", name);
    assert_exit(&r, 0, "config (print)");
    assert_contains(r.out, "max_attempts: 11", "config text");
    run_free(&r);
    r = RUN("config", name, "--capacity", "32");
    assert_exit(&r, 2, "a fixed setting");
    assert_contains(r.err, "--capacity cannot change", "the fixed setting is named");
    run_free(&r);
    r = RUN("config", name, "--max-msg-size", "32");
    assert_exit(&r, 2, "a fixed setting");
    assert_contains(r.err, "--max-msg-size cannot change", "the fixed setting is named");
    run_free(&r);
    r = RUN("config", name, "--backoff-base-ms", "999999");
    assert_exit(&r, 2, "base above the cap");
    run_free(&r);
    r = RUN("config", name, "--max-attempts", "0");
    assert_exit(&r, 2, "out of range");
    run_free(&r);
    r = RUN("config", name, "--ttl-ms", "60000", "--json");
    assert_exit(&r, 0, "config --ttl-ms");
    d = json_parse(r.out);
    jassert_num(d, "default_ttl_ms", 60000);
    json_free(d);
    run_free(&r);
    r = RUN("config", name, "--expire", "dead-letter", "--log-retention-bytes", "1048576",
            "--json");
    assert_exit(&r, 0, "config --expire --log-retention-bytes");
    d = json_parse(r.out);
    cr_assert_str_eq(jstr(d, "expire"), "dead-letter");
    jassert_num(d, "log_retention_bytes", 1048576);
    json_free(d);
    run_free(&r);
    r = RUN("config", name, "--expire", "later");
    assert_exit(&r, 2, "a policy that is not one");
    assert_contains(r.err, "'later' is not drop or dead-letter", "the value is named");
    run_free(&r);
    r = RUN("config", name, "--dedup-window-ms", "5");
    assert_exit(&r, 2, "a fixed setting");
    assert_contains(r.err, "--dedup-window-ms cannot change", "the fixed setting is named");
    run_free(&r);
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_config_t got;
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.max_attempts, 11, "the refused calls changed nothing");
    cr_assert_eq(got.capacity, 16);
    lose_segment_and_reopen(name, &q);
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.max_attempts, 11, "the CLI's change is logged");
    cr_assert_eq(got.expire_policy, SHMQ_EXPIRE_DEAD_LETTER, "and the policy's");
    cr_assert_eq(got.log_retention_bytes, 1048576, "and the retention's");
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* review7: max_attempts lowered while a nacked message backs off (DELAYED, attempt 1): the
 * contract (shmq.h) is that the NEXT nack or take-back of a message that has had the new maximum
 * dead-letters it, not before. Maintenance firing its backoff took any DELAYED slot at the
 * maximum for a copy-out's parked copy (F8) and dead-lettered it undelivered. */
Test(setconfig, a_lowered_max_attempts_waits_for_the_next_nack)
{
    const char *name = h_qname("scbo");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_attempts = 5;
    cfg.ack_deadline_ms = 600000;
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "bo", &c), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    h_assert_rc(shmq_nack(c, &m, 100), 0); /* attempt 1 of 5: backs off 100 ms */
    shmq_config_t set = cfg;
    set.max_attempts = 1;
    h_assert_rc(shmq_set_config(q, &set, SHMQ_CONFIG_MAX_ATTEMPTS), 0);
    shmq_stats_t st;
    int64_t bound = h_now_ms() + 20000;
    do {
        h_sleep_ms(10);
        h_assert_rc(shmq_maintain(q, NULL), 0);
        h_assert_rc(shmq_stats(q, &st), 0);
    } while (st.delayed && h_now_ms() < bound);
    cr_assert_eq(st.delayed, 0, "the backoff never ended");
    cr_assert_eq(st.dead, 0, "dead-lettered when its backoff ended, before its next nack");
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    cr_assert_eq(m.attempt, 2);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.dead, 1, "the next nack dead-lettered it");
    shmq_consumer_close(c);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
