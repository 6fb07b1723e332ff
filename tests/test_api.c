/*
 * test_api.c - the public API of include/shmq/shmq.h in one process: defaults, lifecycle,
 * argument and config checking, error codes, FIFO order, zero-copy publish, ack/nack/extend,
 * redelivery, dead letters and statistics. Each test asserts the property it is named after.
 */

#include "helpers.h" /* first: it defines _GNU_SOURCE */

#include <math.h>
#include <pthread.h>
#include <stddef.h>

TestSuite(api, .fini = h_cleanup, .timeout = 120);

/* Open a queue with cfg and a consumer on it. */
static void open_q(const char *name, const shmq_config_t *cfg, shmq_t **q, shmq_consumer_t **c)
{
    h_assert_rc(shmq_create(name, cfg, q), 0);
    if (c)
        h_assert_rc(shmq_consumer_open(*q, "tester", c), 0);
}

static void close_q(const char *name, shmq_t *q, shmq_consumer_t *c)
{
    if (c)
        h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

static bool segment_exists(const char *name)
{
    char path[128];
    struct stat st;
    h_shm_path(name, path, sizeof path);
    return stat(path, &st) == 0;
}

/* ---- version ---------------------------------------------------------------------------- */

/* The library's version is the headers' (both generated from project(VERSION)), in every form:
 * the string is MAJOR.MINOR.PATCH of the macros, the number encodes the same three. */
Test(api, version_matches_the_header_macros)
{
    char want[64];
    snprintf(want, sizeof want, "%u.%u.%u", (unsigned)SHMQ_VERSION_MAJOR,
             (unsigned)SHMQ_VERSION_MINOR, (unsigned)SHMQ_VERSION_PATCH);
    cr_assert_str_eq(SHMQ_VERSION_STRING, want);
    cr_assert(shmq_version() != NULL);
    cr_assert_str_eq(shmq_version(), SHMQ_VERSION_STRING);
    cr_assert_eq(shmq_version_number(), (uint32_t)SHMQ_VERSION_NUMBER);
    cr_assert_eq(shmq_version_number(), (uint32_t)SHMQ_VERSION_MAJOR * 1000000u +
                                            (uint32_t)SHMQ_VERSION_MINOR * 1000u +
                                            (uint32_t)SHMQ_VERSION_PATCH);
    /* later versions compare greater, whichever part moved */
    cr_assert_gt(SHMQ_VERSION_ENCODE(0, 2, 0), SHMQ_VERSION_ENCODE(0, 1, 999));
    cr_assert_gt(SHMQ_VERSION_ENCODE(1, 0, 0), SHMQ_VERSION_ENCODE(0, 999, 999));
}

/* ---- configuration ---------------------------------------------------------------------- */

Test(api, config_defaults_match_header)
{
    shmq_config_t cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    shmq_config_init(&cfg);
    cr_expect_eq(cfg.capacity, 1024u);
    cr_expect_eq(cfg.max_msg_size, 1024u);
    cr_expect_eq(cfg.max_procs, 64u);
    cr_expect_eq(cfg.heartbeat_timeout_ms, 5000u);
    cr_expect_eq(cfg.ack_deadline_ms, 30000u);
    cr_expect_eq(cfg.max_attempts, 5u);
    cr_expect(cfg.backoff_multiplier == 2.0, "backoff_multiplier %g", cfg.backoff_multiplier);
    cr_expect_eq(cfg.mode & 07777, 0600, "mode %o", (unsigned)cfg.mode);
    cr_expect(cfg.backoff_base_ms <= cfg.backoff_cap_ms, "base %u cap %u", cfg.backoff_base_ms,
              cfg.backoff_cap_ms);
    cr_expect_eq(cfg.durability, SHMQ_DURABILITY_PROCESS);
    cr_expect_null(cfg.log_dir);
    cr_expect_eq(cfg.wal_file_size, 64u << 20);
}

Test(api, get_config_returns_stored_config)
{
    const char *name = h_qname("getcfg");
    shmq_config_t cfg = h_small_config(16, 200, 8), got;
    cfg.heartbeat_timeout_ms = 1234;
    cfg.ack_deadline_ms = 4321;
    cfg.max_attempts = 7;
    cfg.backoff_base_ms = 3;
    cfg.backoff_cap_ms = 300;
    cfg.backoff_multiplier = 1.5;
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_expect_eq(got.capacity, 16u);
    cr_expect_eq(got.max_msg_size, 200u);
    cr_expect_eq(got.max_procs, 8u);
    cr_expect_eq(got.heartbeat_timeout_ms, 1234u);
    cr_expect_eq(got.ack_deadline_ms, 4321u);
    cr_expect_eq(got.max_attempts, 7u);
    cr_expect_eq(got.backoff_base_ms, 3u);
    cr_expect_eq(got.backoff_cap_ms, 300u);
    cr_expect(got.backoff_multiplier == 1.5);
    cr_expect_eq(got.mode & 07777, 0600);
    close_q(name, q, NULL);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

Test(api, create_open_close_unlink)
{
    const char *name = h_qname("life");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q = NULL, *q2 = NULL;
    h_assert_rc(shmq_open(name, &q2), -ENOENT);
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    cr_assert_not_null(q);
    cr_assert(segment_exists(name), "segment file missing after create");

    /* A second handle sees what the first one published. */
    h_assert_rc(shmq_open(name, &q2), 0);
    cr_assert_not_null(q2);
    uint64_t id;
    h_assert_rc(shmq_publish(q, "hello", 5, &id), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q2, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.id, id);
    cr_assert_eq(m.len, 5u);
    cr_assert_arr_eq(m.data, "hello", 5);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q2), 0);
    h_assert_rc(shmq_close(q), 0);

    /* Closed, not unlinked: it opens again and keeps its state. */
    h_assert_rc(shmq_open(name, &q), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 1u);
    cr_expect_eq(st.acked, 1u);
    h_assert_rc(shmq_close(q), 0);

    h_assert_rc(shmq_unlink(name), 0);
    cr_assert(!segment_exists(name), "segment file left after unlink");
    h_assert_rc(shmq_open(name, &q), -ENOENT);
    h_assert_rc(shmq_unlink(name), -ENOENT);
}

Test(api, unlink_keeps_existing_mappings)
{
    const char *name = h_qname("unlmap");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_unlink(name), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.len, 1u);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(api, double_create_is_eexist)
{
    const char *name = h_qname("eexist");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q, *q2 = NULL;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_create(name, &cfg, &q2), -EEXIST);
    /* The existing queue is untouched. */
    h_assert_rc(shmq_publish(q, "a", 1, NULL), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 1u);
    cr_expect_eq(st.ready, 1u);
    close_q(name, q, NULL);
}

Test(api, close_with_open_consumer_is_ebusy)
{
    const char *name = h_qname("ebusy");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_close(q), -EBUSY);
    close_q(name, q, c);
}

/* ---- permissions -------------------------------------------------------------------------- */

static unsigned file_mode(const char *name)
{
    char path[128];
    struct stat st;
    h_shm_path(name, path, sizeof path);
    cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st.st_mode & 07777;
}

Test(api, segment_mode_default_0600)
{
    const char *name = h_qname("mode600");
    umask(022);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    cr_expect_eq(file_mode(name), 0600u, "mode %o", file_mode(name));
    close_q(name, q, NULL);
}

Test(api, segment_mode_0640_honoured)
{
    const char *name = h_qname("mode640");
    umask(022);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.mode = 0640;
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    cr_expect_eq(file_mode(name), 0640u, "mode %o", file_mode(name));
    close_q(name, q, NULL);
}

/* ---- bad arguments ------------------------------------------------------------------------ */

Test(api, bad_names_are_einval)
{
    char longname[SHMQ_NAME_MAX + 2];
    memset(longname, 'a', SHMQ_NAME_MAX + 1);
    longname[SHMQ_NAME_MAX + 1] = 0;
    const char *bad[] = {"",    longname, "a/b",  "/abs", "..",  "../x",
                         "a b", " ",      "a\nb", "a*b",  "x\\y"};
    shmq_config_t cfg = h_small_config(8, 64, 8);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shmq_t *q = NULL;
        int rc = shmq_create(bad[i], &cfg, &q);
        cr_expect_eq(rc, -EINVAL, "create(\"%s\") = %d (%s)", bad[i], rc, shmq_strerror(rc));
        if (rc == 0) {
            shmq_close(q);
            shmq_unlink(bad[i]);
        }
        rc = shmq_open(bad[i], &q);
        cr_expect_eq(rc, -EINVAL, "open(\"%s\") = %d (%s)", bad[i], rc, shmq_strerror(rc));
        rc = shmq_unlink(bad[i]);
        cr_expect_eq(rc, -EINVAL, "unlink(\"%s\") = %d (%s)", bad[i], rc, shmq_strerror(rc));
    }
}

Test(api, name_of_max_length_accepted)
{
    /* SHMQ_NAME_MAX is the number of bytes a name may have. */
    char name[SHMQ_NAME_MAX + 1];
    int n = snprintf(name, sizeof name, "t-maxlen-%d-", (int)getpid());
    memset(name + n, 'z', SHMQ_NAME_MAX - n);
    name[SHMQ_NAME_MAX] = 0;
    cr_assert_eq(strlen(name), SHMQ_NAME_MAX);
    shmq_unlink(name);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

Test(api, null_arguments_are_einval)
{
    const char *name = h_qname("nullarg");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q = NULL;
    h_assert_rc(shmq_create(NULL, &cfg, &q), -EINVAL);
    h_assert_rc(shmq_create(name, NULL, &q), -EINVAL);
    h_assert_rc(shmq_create(name, &cfg, NULL), -EINVAL);
    cr_assert(!segment_exists(name), "a failed create left a segment");
    h_assert_rc(shmq_open(NULL, &q), -EINVAL);
    h_assert_rc(shmq_unlink(NULL), -EINVAL);

    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_open(name, NULL), -EINVAL);
    h_assert_rc(shmq_publish(NULL, "x", 1, NULL), -EINVAL);
    h_assert_rc(shmq_publish(q, NULL, 1, NULL), -EINVAL);
    h_assert_rc(shmq_publish_timed(NULL, "x", 1, NULL, 0), -EINVAL);
    h_assert_rc(shmq_publish_timed(q, NULL, 1, NULL, 0), -EINVAL);
    shmq_consumer_t *c = NULL;
    h_assert_rc(shmq_consumer_open(NULL, "c", &c), -EINVAL);
    h_assert_rc(shmq_consumer_open(q, "c", NULL), -EINVAL);

    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 0u, "a rejected publish was counted");
    cr_expect_eq(st.ready, 0u);
    close_q(name, q, NULL);
}

Test(api, consumer_open_null_name_is_einval)
{
    /* shmq.h: shmq_consumer_open() returns "-EINVAL for NULL arguments". */
    const char *name = h_qname("nullcname");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    shmq_consumer_t *c = NULL;
    int rc = shmq_consumer_open(q, NULL, &c);
    if (rc == 0)
        shmq_consumer_close(c);
    cr_expect_eq(rc, -EINVAL, "shmq_consumer_open(q, NULL, &c) = %d (%s)", rc, shmq_strerror(rc));
    close_q(name, q, NULL);
}

Test(api, empty_message_allowed)
{
    const char *name = h_qname("empty");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, NULL, 0, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.len, 0u);
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

/* ... and shmq_last_error_detail() names what was refused: it contains `detail`. */
static void expect_bad_config(const char *name, const shmq_config_t *cfg, const char *what,
                              const char *detail)
{
    shmq_t *q = NULL;
    int rc = shmq_create(name, cfg, &q);
    cr_expect_eq(rc, -EINVAL, "%s: create = %d (%s), expected -EINVAL", what, rc,
                 shmq_strerror(rc));
    cr_expect(strstr(shmq_last_error_detail(), detail) != NULL,
              "%s: shmq_last_error_detail() is '%s', without '%s'", what,
              shmq_last_error_detail(), detail);
    if (rc == 0) {
        shmq_close(q);
        shmq_unlink(name);
    }
    cr_expect(!segment_exists(name), "%s: a rejected create left a segment", what);
}

Test(api, absurd_configs_are_einval)
{
    const char *name = h_qname("badcfg");
    shmq_config_t cfg;
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        cfg = h_small_config(8, 64, 8);                                                            \
        cfg.field = (value);                                                                       \
        expect_bad_config(name, &cfg, #field " = " #value, #field);                                \
    } while (0)
    BAD(capacity, 0);
    BAD(capacity, SHMQ_CAPACITY_MAX + 1);
    BAD(capacity, UINT32_MAX);
    BAD(max_msg_size, 0);
    BAD(max_msg_size, SHMQ_MSG_SIZE_MAX + 1);
    BAD(max_msg_size, UINT32_MAX);
    BAD(max_procs, 0);
    BAD(max_procs, 1);
    BAD(max_procs, SHMQ_PROCS_MAX + 1);
    BAD(max_attempts, 0);
    BAD(backoff_multiplier, 0.5);
    BAD(backoff_multiplier, 0.0);
    BAD(backoff_multiplier, -2.0);
    BAD(backoff_multiplier, NAN);
    BAD(durability, 3);
    BAD(durability, -1);
    BAD(wal_file_size, (64u << 10) - 1);
    BAD(wal_file_size, 0);
    char longdir[SHMQ_LOG_DIR_MAX + 2];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = 0;
    BAD(log_dir, longdir);
#undef BAD
    /* Each field within its limit, but the whole segment beyond SHMQ_SEGMENT_MAX. */
    const char *whole = "the segment would be ";
    cfg = h_small_config(SHMQ_CAPACITY_MAX, SHMQ_MSG_SIZE_MAX, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    expect_bad_config(name, &cfg, "capacity max * msg size max", whole);
    cfg = h_small_config(SHMQ_CAPACITY_MAX, 1u << 20, 8); /* 4 Ti */
    cfg.durability = SHMQ_DURABILITY_NONE;
    expect_bad_config(name, &cfg, "capacity max * 1 MiB", whole);
    cfg = h_small_config(1u << 12, SHMQ_MSG_SIZE_MAX, 8); /* 256 GiB */
    cfg.durability = SHMQ_DURABILITY_NONE;
    expect_bad_config(name, &cfg, "4096 * 64 MiB",
                      "above the limit 68719476736 (SHMQ_SEGMENT_MAX)");
    cfg = h_small_config(8, 1u << 20, 8); /* a 64 KiB log file cannot hold two 1 MiB records */
    cfg.wal_file_size = 64u << 10;
    expect_bad_config(name, &cfg, "log files smaller than two records", "two log records");
}

/* The detail is the calling thread's: a create that succeeds clears it, and another thread's
 * refused create neither shows nor changes it. */
static void *refuse_capacity_zero(void *name)
{
    shmq_config_t cfg = h_small_config(0, 64, 8);
    shmq_t *q;
    intptr_t ok = shmq_create(name, &cfg, &q) == -EINVAL &&
                  strstr(shmq_last_error_detail(), "capacity 0") != NULL;
    return (void *)ok;
}

Test(api, error_detail_is_per_thread_and_cleared)
{
    const char *name = h_qname("detail");
    shmq_config_t cfg = h_small_config(8, 64, 0);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), -EINVAL);
    cr_assert(strstr(shmq_last_error_detail(), "max_procs 0 is outside 2..") != NULL, "'%s'",
              shmq_last_error_detail());
    pthread_t t;
    void *ok;
    cr_assert_eq(pthread_create(&t, NULL, refuse_capacity_zero, (void *)name), 0);
    cr_assert_eq(pthread_join(t, &ok), 0);
    cr_assert(ok, "the other thread did not see its own detail");
    cr_assert(strstr(shmq_last_error_detail(), "max_procs 0") != NULL,
              "another thread's create changed this thread's detail: '%s'",
              shmq_last_error_detail());
    cfg.max_procs = 8;
    cfg.durability = SHMQ_DURABILITY_NONE;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    cr_assert_str_eq(shmq_last_error_detail(), "");
    h_assert_rc(shmq_close(q), 0);
}

Test(api, limit_configs_accepted)
{
    const char *name = h_qname("limcfg");
    shmq_config_t cfg = h_small_config(1, 1, 2);
    cfg.backoff_multiplier = 1.0;
    cfg.max_attempts = 1;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "a", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "b", 1, NULL), -EAGAIN);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(((const char *)m.data)[0], 'a');
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

/* ---- publish ------------------------------------------------------------------------------ */

Test(api, oversize_publish_is_emsgsize_and_enqueues_nothing)
{
    const char *name = h_qname("emsgsize");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    char buf[200] = {0};
    uint64_t id = 777;
    h_assert_rc(shmq_publish(q, buf, 65, &id), -EMSGSIZE);
    h_assert_rc(shmq_publish(q, buf, sizeof buf, &id), -EMSGSIZE);
    h_assert_rc(shmq_publish_timed(q, buf, 65, &id, 10), -EMSGSIZE);
    void *r = NULL;
    h_assert_rc(shmq_reserve(q, 65, &r), -EMSGSIZE);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 0u);
    cr_expect_eq(st.ready, 0u);
    cr_expect_eq(st.reserved, 0u);
    cr_expect_eq(st.free, 8u, "a rejected publish leaked a slot: free %u", st.free);
    /* Exactly max_msg_size is fine. */
    h_assert_rc(shmq_publish(q, buf, 64, &id), 0);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.len, 64u);
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

Test(api, full_queue_is_eagain)
{
    const char *name = h_qname("full");
    shmq_config_t cfg = h_small_config(4, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, &i, sizeof i, NULL), 0);
    int x = 4;
    h_assert_rc(shmq_publish(q, &x, sizeof x, NULL), -EAGAIN);
    void *r;
    h_assert_rc(shmq_reserve(q, 4, &r), -EAGAIN);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 4u);
    cr_expect_eq(st.ready, 4u);
    cr_expect_eq(st.free, 0u);
    /* One ack frees one slot. */
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_publish(q, &x, sizeof x, NULL), -EAGAIN); /* in flight still holds it */
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_publish(q, &x, sizeof x, NULL), 0);
    h_assert_rc(shmq_publish(q, &x, sizeof x, NULL), -EAGAIN);
    for (int i = 0; i < 4; i++) {
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    close_q(name, q, c);
}

Test(api, publish_timed_on_full_queue_times_out)
{
    const char *name = h_qname("ptimed");
    shmq_config_t cfg = h_small_config(2, 64, 8);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_publish(q, "a", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "b", 1, NULL), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish_timed(q, "c", 1, NULL, 200), -ETIMEDOUT);
    int64_t dt = h_now_ms() - t0;
    cr_expect(dt >= 190 && dt < 2000, "publish_timed(200 ms) returned after %lld ms",
              (long long)dt);
    /* timeout 0 is a poll: -EAGAIN (as receive's poll) or -ETIMEDOUT, at once. */
    t0 = h_now_ms();
    int rc = shmq_publish_timed(q, "c", 1, NULL, 0);
    cr_expect(rc == -EAGAIN || rc == -ETIMEDOUT, "publish_timed(0) on a full queue = %d", rc);
    dt = h_now_ms() - t0;
    cr_expect(dt < 500, "publish_timed(0) took %lld ms", (long long)dt);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 2u);
    close_q(name, q, NULL);
}

/* ---- receive ------------------------------------------------------------------------------ */

Test(api, receive_on_empty_queue_poll_and_timeout)
{
    const char *name = h_qname("rempty");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    shmq_msg_t m;
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    cr_expect(h_now_ms() - t0 < 500, "poll took %lld ms", (long long)(h_now_ms() - t0));
    t0 = h_now_ms();
    h_assert_rc(shmq_receive(c, &m, 150), -ETIMEDOUT);
    int64_t dt = h_now_ms() - t0;
    cr_expect(dt >= 140 && dt < 2000, "receive(150 ms) returned after %lld ms", (long long)dt);
    close_q(name, q, c);
}

Test(api, fifo_one_producer_one_consumer)
{
    const char *name = h_qname("fifo");
    shmq_config_t cfg = h_small_config(64, 128, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    uint64_t seed = 42, prev_id = 0;
    for (int round = 0; round < 20; round++) {
        uint64_t ids[50];
        unsigned char sent[50][128];
        size_t lens[50];
        for (int i = 0; i < 50; i++) {
            lens[i] = h_rand(&seed) % 129;
            for (size_t k = 0; k < lens[i]; k++)
                sent[i][k] = (unsigned char)h_rand(&seed);
            h_assert_rc(shmq_publish(q, sent[i], lens[i], &ids[i]), 0);
            cr_assert(ids[i] > prev_id, "ids not increasing: %llu after %llu",
                      (unsigned long long)ids[i], (unsigned long long)prev_id);
            prev_id = ids[i];
        }
        for (int i = 0; i < 50; i++) {
            shmq_msg_t m;
            h_assert_rc(shmq_receive(c, &m, 0), 0);
            cr_assert_eq(m.id, ids[i], "round %d msg %d: id %llu, expected %llu", round, i,
                         (unsigned long long)m.id, (unsigned long long)ids[i]);
            cr_assert_eq(m.len, lens[i]);
            cr_assert(m.len == 0 || memcmp(m.data, sent[i], m.len) == 0,
                      "round %d msg %d: bytes differ", round, i);
            cr_assert_eq(m.attempt, 1u);
            cr_assert_eq(m.flags & SHMQ_MSG_REDELIVERED, 0u);
            h_assert_rc(shmq_ack(c, &m), 0);
        }
    }
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    close_q(name, q, c);
}

/* ---- zero-copy publish -------------------------------------------------------------------- */

Test(api, reserve_commit_zero_copy)
{
    const char *name = h_qname("reserve");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    void *buf = NULL;
    h_assert_rc(shmq_reserve(q, 64, &buf), 0);
    cr_assert_not_null(buf);
    memset(buf, 'z', 64);
    memcpy(buf, "zero-copy", 9);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.reserved, 1u);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN); /* reserved is not ready */
    uint64_t id = 0;
    h_assert_rc(shmq_commit(q, buf, 9, &id), 0); /* shorter than reserved: fine */
    cr_assert_neq(id, 0u);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.id, id);
    cr_expect_eq(m.len, 9u);
    cr_expect_arr_eq(m.data, "zero-copy", 9);
    h_assert_rc(shmq_ack(c, &m), 0);
    /* The reservation is spent: committing it again is not a reservation of q. */
    h_assert_rc(shmq_commit(q, buf, 9, &id), -EINVAL);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    close_q(name, q, c);
}

Test(api, cancel_gives_reservation_back)
{
    const char *name = h_qname("cancel");
    shmq_config_t cfg = h_small_config(2, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    void *b1, *b2, *b3;
    h_assert_rc(shmq_reserve(q, 10, &b1), 0);
    h_assert_rc(shmq_reserve(q, 10, &b2), 0);
    cr_assert_neq(b1, b2);
    h_assert_rc(shmq_reserve(q, 10, &b3), -EAGAIN);
    h_assert_rc(shmq_cancel(q, b1), 0);
    h_assert_rc(shmq_cancel(q, b1), -EINVAL); /* no longer a reservation */
    h_assert_rc(shmq_commit(q, b1, 1, NULL), -EINVAL);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
    h_assert_rc(shmq_reserve(q, 10, &b3), 0); /* the cancelled slot is free again */
    h_assert_rc(shmq_cancel(q, b2), 0);
    h_assert_rc(shmq_cancel(q, b3), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.free, 2u);
    cr_expect_eq(st.reserved, 0u);
    cr_expect_eq(st.published, 0u);
    close_q(name, q, c);
}

Test(api, commit_and_cancel_reject_foreign_buffers)
{
    const char *name = h_qname("foreign");
    shmq_config_t cfg = h_small_config(4, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    char local[64];
    h_assert_rc(shmq_commit(q, local, 1, NULL), -EINVAL);
    h_assert_rc(shmq_cancel(q, local), -EINVAL);
    h_assert_rc(shmq_commit(q, NULL, 1, NULL), -EINVAL);
    h_assert_rc(shmq_cancel(q, NULL), -EINVAL);
    void *buf;
    h_assert_rc(shmq_reserve(q, 8, &buf), 0);
    /* Inside the reservation, but not its start. */
    h_assert_rc(shmq_commit(q, (char *)buf + 1, 1, NULL), -EINVAL);
    h_assert_rc(shmq_commit(q, buf, 65, NULL), -EMSGSIZE);
    h_assert_rc(shmq_commit(q, buf, 3, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.len, 3u);
    /* The delivered message's data is not a reservation either. */
    h_assert_rc(shmq_commit(q, (void *)m.data, 1, NULL), -EINVAL);
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

/* ---- ack, nack, extend -------------------------------------------------------------------- */

Test(api, ack_twice_is_estale)
{
    const char *name = h_qname("acktwice");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_ack(c, &m), -ESTALE);
    /* the text says what happened (acked already), not that the message was reclaimed */
    cr_assert(strstr(shmq_strerror(-ESTALE), "already acked or fenced"), "%s",
              shmq_strerror(-ESTALE));
    cr_assert(!strstr(shmq_strerror(-ESTALE), "reclaimed"), "%s", shmq_strerror(-ESTALE));
    h_assert_rc(shmq_nack(c, &m, 0), -ESTALE);
    h_assert_rc(shmq_extend(c, &m, 0), -ESTALE);
    /* Even after the slot was reused for another message. */
    h_assert_rc(shmq_publish(q, "n", 1, NULL), 0);
    shmq_msg_t m2;
    h_assert_rc(shmq_receive(c, &m2, 0), 0);
    h_assert_rc(shmq_ack(c, &m), -ESTALE);
    h_assert_rc(shmq_ack(c, &m2), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.acked, 2u);
    close_q(name, q, c);
}

Test(api, ack_with_garbage_token_is_rejected)
{
    const char *name = h_qname("garbage");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    uint64_t tokens[] = {0,
                         UINT64_MAX,
                         m.token ^ 1,
                         m.token + 1,
                         m.token - 1,
                         m.token + (1ull << 40),   /* the next slot, same gen */
                         m.token + (100ull << 40), /* a slot beyond capacity */
                         (uint64_t)(8) << 40,      /* slot == capacity */
                         0x8000000000000000ull,
                         0x0123456789abcdefull};
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        shmq_msg_t bad = m;
        bad.token = tokens[i];
        int rc = shmq_ack(c, &bad);
        cr_expect(rc == -EINVAL || rc == -ESTALE, "ack(token %#llx) = %d (%s)",
                  (unsigned long long)tokens[i], rc, shmq_strerror(rc));
        rc = shmq_nack(c, &bad, 0);
        cr_expect(rc == -EINVAL || rc == -ESTALE, "nack(token %#llx) = %d (%s)",
                  (unsigned long long)tokens[i], rc, shmq_strerror(rc));
        rc = shmq_extend(c, &bad, 0);
        cr_expect(rc == -EINVAL || rc == -ESTALE, "extend(token %#llx) = %d (%s)",
                  (unsigned long long)tokens[i], rc, shmq_strerror(rc));
    }
    /* None of them touched the real delivery. */
    h_assert_rc(shmq_ack(c, &m), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.acked, 1u);
    cr_expect_eq(st.nacked, 0u);
    cr_expect_eq(st.free, 8u);
    close_q(name, q, c);
}

Test(api, ack_by_another_consumer_of_same_queue)
{
    /* The token carries slot + generation: another consumer acking it is not stale by itself.
     * The header does not forbid it; what it must not do is crash or double-free. */
    const char *name = h_qname("ackother");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c, *c2;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_consumer_open(q, "other", &c2), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    int rc = shmq_ack(c2, &m);
    cr_expect(rc == 0 || rc == -ESTALE || rc == -EINVAL, "ack by other = %d", rc);
    int rc2 = shmq_ack(c, &m);
    cr_expect(rc == 0 ? rc2 == -ESTALE : rc2 == 0, "ack by owner after other's %d = %d", rc, rc2);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.acked, 1u);
    cr_expect_eq(st.free, 8u);
    h_assert_rc(shmq_consumer_close(c2), 0);
    close_q(name, q, c);
}

/* Receive within bound_ms, running maintenance between tries (delayed messages fire there). */
static int receive_with_maintain(shmq_t *q, shmq_consumer_t *c, shmq_msg_t *m, int bound_ms)
{
    int64_t end = h_now_ms() + bound_ms;
    for (;;) {
        int rc = shmq_receive(c, m, 20);
        if (rc != -ETIMEDOUT && rc != -EAGAIN)
            return rc;
        if (h_now_ms() >= end)
            return rc;
        shmq_maintain(q, NULL);
    }
}

Test(api, nack_redelivers_with_attempt_2)
{
    const char *name = h_qname("nack");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    uint64_t id;
    h_assert_rc(shmq_publish(q, "again", 5, &id), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.attempt, 1u);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    h_assert_rc(shmq_ack(c, &m), -ESTALE); /* the nacked delivery is over */
    shmq_msg_t m2;
    h_assert_rc(receive_with_maintain(q, c, &m2, 2000), 0);
    cr_expect_eq(m2.id, id);
    cr_expect_eq(m2.len, 5u);
    cr_expect_arr_eq(m2.data, "again", 5);
    cr_expect_eq(m2.attempt, 2u);
    cr_expect(m2.flags & SHMQ_MSG_REDELIVERED, "flags %#x", m2.flags);
    cr_expect_neq(m2.token, m.token);
    h_assert_rc(shmq_ack(c, &m2), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.nacked, 1u);
    cr_expect_eq(st.redelivered, 1u);
    cr_expect_eq(st.delivered, 2u);
    cr_expect_eq(st.acked, 1u);
    close_q(name, q, c);
}

Test(api, nack_with_delay_waits_then_redelivers)
{
    const char *name = h_qname("nackdelay");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "later", 5, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_nack(c, &m, 300), 0);
    shmq_maintain(q, NULL);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    if (h_now_ms() - t0 < 250) {
        cr_expect_eq(st.delayed, 1u, "a nack with delay is not DELAYED");
        shmq_msg_t tmp;
        cr_expect_eq(shmq_receive(c, &tmp, 0), -EAGAIN, "delayed message delivered early");
    }
    h_assert_rc(receive_with_maintain(q, c, &m, 3000), 0);
    int64_t dt = h_now_ms() - t0;
    cr_expect(dt >= 290, "redelivered after %lld ms, delay was 300", (long long)dt);
    cr_expect_eq(m.attempt, 2u);
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

Test(api, max_attempts_dead_letters)
{
    const char *name = h_qname("dlq");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    cfg.max_attempts = 2;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "poison", 6, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    h_assert_rc(receive_with_maintain(q, c, &m, 2000), 0);
    cr_assert_eq(m.attempt, 2u);
    h_assert_rc(shmq_nack(c, &m, 0), 0);
    h_assert_rc(receive_with_maintain(q, c, &m, 300), -ETIMEDOUT);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.dead_lettered, 1u);
    cr_expect_eq(st.dead, 1u);
    cr_expect_eq(st.ready + st.delayed + st.inflight, 0u);
    close_q(name, q, c);
}

Test(api, extend_and_ack_deadline_redelivery)
{
    const char *name = h_qname("deadline");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.ack_deadline_ms = 200;
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "slow", 4, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_extend(c, &m, 10000), 0);
    /* Extended: maintenance past the original deadline leaves it in flight. */
    h_sleep_ms(300);
    shmq_maint_report_t rep = {0};
    h_assert_rc(shmq_maintain(q, &rep), 0);
    cr_expect_eq(rep.deadline_expired, 0u);
    shmq_msg_t tmp;
    h_assert_rc(shmq_receive(c, &tmp, 0), -EAGAIN);
    /* Back to the default deadline: it expires and is redelivered. */
    h_assert_rc(shmq_extend(c, &m, 0), 0);
    shmq_msg_t m2;
    h_assert_rc(receive_with_maintain(q, c, &m2, 3000), 0);
    cr_expect_eq(m2.id, m.id);
    cr_expect_eq(m2.attempt, 2u);
    cr_expect(m2.flags & SHMQ_MSG_REDELIVERED);
    h_assert_rc(shmq_ack(c, &m), -ESTALE); /* fenced */
    h_assert_rc(shmq_ack(c, &m2), 0);
    close_q(name, q, c);
}

Test(api, consumer_close_returns_unacked)
{
    const char *name = h_qname("cclose");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c1, *c2;
    open_q(name, &cfg, &q, &c1);
    h_assert_rc(shmq_consumer_open(q, "second", &c2), 0);
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(q, &i, sizeof i, &ids[i]), 0);
    shmq_msg_t m;
    for (int i = 0; i < 3; i++) {
        h_assert_rc(shmq_receive(c1, &m, 0), 0);
        cr_assert_eq(m.id, ids[i]);
    }
    h_assert_rc(shmq_consumer_close(c1), 0);
    bool seen[4] = {false};
    for (int i = 0; i < 4; i++) {
        h_assert_rc(shmq_receive(c2, &m, 0), 0); /* "at once": no maintenance needed */
        int k = -1;
        for (int j = 0; j < 4; j++)
            if (m.id == ids[j])
                k = j;
        cr_assert(k >= 0 && !seen[k], "unexpected or duplicate id %llu", (unsigned long long)m.id);
        seen[k] = true;
        if (k < 3) {
            cr_expect_eq(m.attempt, 2u, "returned message %d: attempt %u", k, m.attempt);
            cr_expect(m.flags & SHMQ_MSG_REDELIVERED);
        } else {
            cr_expect_eq(m.attempt, 1u);
        }
        h_assert_rc(shmq_ack(c2, &m), 0);
    }
    h_assert_rc(shmq_receive(c2, &m, 0), -EAGAIN);
    close_q(name, q, c2);
}

Test(api, registry_full_is_eusers)
{
    const char *name = h_qname("eusers");
    shmq_config_t cfg = h_small_config(8, 64, 2);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    shmq_consumer_t *cs[4];
    int n = 0, rc = 0;
    while (n < 4 && (rc = shmq_consumer_open(q, "c", &cs[n])) == 0)
        n++;
    cr_expect_eq(rc, -EUSERS, "consumer_open #%d on a 2-entry registry = %d (%s)", n + 1, rc,
                 shmq_strerror(rc));
    cr_expect(n >= 1, "not even one consumer fits in max_procs 2");
    /* A closed consumer's entry is reusable. */
    if (n > 0) {
        h_assert_rc(shmq_consumer_close(cs[--n]), 0);
        h_assert_rc(shmq_consumer_open(q, "again", &cs[n]), 0);
        n++;
    }
    while (n > 0)
        h_assert_rc(shmq_consumer_close(cs[--n]), 0);
    close_q(name, q, NULL);
}

/* ---- stats and errors --------------------------------------------------------------------- */

Test(api, stats_counters_add_up)
{
    const char *name = h_qname("stats");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.free, 16u);
    cr_expect_eq(st.published + st.delivered + st.acked + st.nacked, 0u);
    cr_expect_eq(st.consumers, 1u);
    cr_expect(st.procs >= 1u, "procs %u", st.procs);

    for (int i = 0; i < 10; i++)
        h_assert_rc(shmq_publish(q, &i, sizeof i, NULL), 0);
    void *r;
    h_assert_rc(shmq_reserve(q, 4, &r), 0);
    shmq_msg_t m[6];
    for (int i = 0; i < 6; i++)
        h_assert_rc(shmq_receive(c, &m[i], 0), 0);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_ack(c, &m[i]), 0);
    h_assert_rc(shmq_nack(c, &m[4], 60000), 0); /* delayed for a minute */

    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 10u);
    cr_expect_eq(st.delivered, 6u);
    cr_expect_eq(st.acked, 4u);
    cr_expect_eq(st.nacked, 1u);
    cr_expect_eq(st.redelivered, 0u);
    cr_expect_eq(st.dead_lettered, 0u);
    cr_expect_eq(st.ready, 4u);
    cr_expect_eq(st.inflight, 1u);
    cr_expect_eq(st.delayed, 1u);
    cr_expect_eq(st.reserved, 1u);
    cr_expect_eq(st.dead, 0u);
    cr_expect_eq(st.free, 16u - 10u + 4u - 1u);
    cr_expect_eq(st.ready + st.inflight + st.delayed + st.reserved + st.dead + st.free, 16u,
                 "slot counts do not add up to capacity");
    cr_expect_eq(st.consumers, 1u);

    h_assert_rc(shmq_commit(q, r, 4, NULL), 0);
    h_assert_rc(shmq_ack(c, &m[5]), 0);
    for (int i = 0; i < 5; i++) {
        shmq_msg_t x;
        h_assert_rc(shmq_receive(c, &x, 0), 0);
        h_assert_rc(shmq_ack(c, &x), 0);
    }
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 11u);
    cr_expect_eq(st.delivered, 11u);
    cr_expect_eq(st.acked, 10u);
    cr_expect_eq(st.delayed, 1u);
    cr_expect_eq(st.free, 15u);
    cr_expect_eq(st.delivered, st.acked + st.inflight + st.nacked,
                 "delivered != acked + inflight + nacked");
    close_q(name, q, c);
}

Test(api, stats_survive_close_of_a_handle)
{
    const char *name = h_qname("statsret");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q, *q2;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_open(name, &q2), 0);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q2, "x", 1, NULL), 0);
    h_assert_rc(shmq_close(q2), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, 3u, "counters of a closed handle were lost");
    close_q(name, q, NULL);
}

Test(api, strerror_never_null)
{
    const int errs[] = {0,        -EINVAL, -EEXIST, -ENOENT,   -EACCES,        -EPROTO,
                        -EBADMSG, -EUSERS, -EAGAIN, -EMSGSIZE, -ETIMEDOUT,     -EINTR,
                        -ESTALE,  -EBUSY,  -ENOMEM, -ENOSPC,   -EPERM,         -EIO,
                        -99999,   99999,   1,       -1,        (int)0x80000000};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *s = shmq_strerror(errs[i]);
        cr_assert_not_null(s, "shmq_strerror(%d) is NULL", errs[i]);
        if (errs[i] < 0 && errs[i] > -4096)
            cr_expect(s[0] != 0, "shmq_strerror(%d) is empty", errs[i]);
    }
    cr_expect_str_neq(shmq_strerror(-EBADMSG), shmq_strerror(-EPROTO));
}

/* ---- more lifecycle ------------------------------------------------------------------------- */

Test(api, recreate_after_unlink_is_a_new_queue)
{
    const char *name = h_qname("recreate");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q1, *q2;
    shmq_consumer_t *c1, *c2;
    open_q(name, &cfg, &q1, &c1);
    h_assert_rc(shmq_publish(q1, "old", 3, NULL), 0);
    h_assert_rc(shmq_unlink(name), 0);
    open_q(name, &cfg, &q2, &c2);
    h_assert_rc(shmq_publish(q2, "new", 3, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c1, &m, 0), 0);
    cr_expect_arr_eq(m.data, "old", 3);
    h_assert_rc(shmq_ack(c1, &m), 0);
    h_assert_rc(shmq_receive(c1, &m, 0), -EAGAIN);
    h_assert_rc(shmq_receive(c2, &m, 0), 0);
    cr_expect_arr_eq(m.data, "new", 3);
    h_assert_rc(shmq_ack(c2, &m), 0);
    h_assert_rc(shmq_consumer_close(c1), 0);
    h_assert_rc(shmq_close(q1), 0);
    close_q(name, q2, c2);
}

/* ---- heartbeats ------------------------------------------------------------------------------ */

/* Hold m for hold_ms while running maintenance every 50 ms; returns the summed report. */
static shmq_maint_report_t hold_and_maintain(shmq_t *q, int hold_ms)
{
    shmq_maint_report_t sum = {0};
    int64_t end = h_now_ms() + hold_ms;
    while (h_now_ms() < end) {
        shmq_maint_report_t r = {0};
        h_assert_rc(shmq_maintain(q, &r), 0);
        sum.procs_hung += r.procs_hung;
        sum.procs_dead += r.procs_dead;
        sum.reclaimed += r.reclaimed;
        sum.deadline_expired += r.deadline_expired;
        h_sleep_ms(50);
    }
    return sum;
}

Test(api, heartbeat_thread_keeps_long_handler_alive)
{
    const char *name = h_qname("hbthread");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.heartbeat_timeout_ms = 200;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "long", 4, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_consumer_heartbeat_thread(c, 30), 0);
    /* A handler 5x the heartbeat timeout (past the 3x rule for a running process). */
    shmq_maint_report_t rep = hold_and_maintain(q, 1000);
    cr_expect_eq(rep.procs_hung, 0u, "a consumer with a heartbeat thread was declared hung");
    cr_expect_eq(rep.reclaimed + rep.deadline_expired, 0u);
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

Test(api, silent_consumer_past_3x_heartbeat_is_fenced)
{
    /* The control of the test above: no heartbeat thread, no receive for > 3x the timeout. */
    const char *name = h_qname("hbsilent");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.heartbeat_timeout_ms = 200;
    shmq_t *q;
    shmq_consumer_t *c, *c2;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "long", 4, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    shmq_maint_report_t rep = hold_and_maintain(q, 1000);
    cr_expect(rep.procs_hung >= 1, "a consumer silent for 5x its heartbeat timeout not fenced");
    h_assert_rc(shmq_ack(c, &m), -ESTALE);
    h_assert_rc(shmq_receive(c, &m, 0), -ESTALE);
    /* Its message goes to a new consumer. */
    h_assert_rc(shmq_consumer_open(q, "fresh", &c2), 0);
    shmq_msg_t m2;
    h_assert_rc(shmq_receive(c2, &m2, 1000), 0);
    cr_expect_arr_eq(m2.data, "long", 4);
    cr_expect_eq(m2.attempt, 2u);
    h_assert_rc(shmq_ack(c2, &m2), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    close_q(name, q, c2);
}

/* ---- dead letters ------------------------------------------------------------------------ */

/* Publish the three letters "A", "B", "C" and make each a dead letter (max_attempts 1). */
static void make_dead_letters(shmq_t *q, shmq_consumer_t *c, uint64_t ids[3])
{
    for (int i = 0; i < 3; i++) {
        char d = (char)('A' + i);
        h_assert_rc(shmq_publish(q, &d, 1, &ids[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_nack(c, &m, 0), 0);
    }
    shmq_maintain(q, NULL);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);
}

Test(api, dlq_list_redrive_purge)
{
    const char *name = h_qname("dlqops");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.max_attempts = 1;
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    uint64_t ids[3];
    make_dead_letters(q, c, ids);

    shmq_dead_letter_t dl[8];
    size_t n = 99;
    h_assert_rc(shmq_dlq_list(q, dl, 8, &n), 0);
    cr_assert_eq(n, 3u);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(dl[i].id, ids[i], "dead letter %d: id %llu, expected %llu (oldest first)", i,
                     (unsigned long long)dl[i].id, (unsigned long long)ids[i]);
        cr_expect_eq(dl[i].attempt, 1u);
        cr_expect_eq(dl[i].reason, (uint32_t)SHMQ_DEAD_MAX_ATTEMPTS);
        cr_expect_eq(dl[i].len, 1u);
        cr_expect(dl[i].data && ((const char *)dl[i].data)[0] == 'A' + i);
    }
    size_t n1 = 0;
    h_assert_rc(shmq_dlq_list(q, dl, 1, &n1), 0);
    cr_expect_eq(n1, 1u, "max 1 listed %zu", n1);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.dead, 3u);
    cr_expect_eq(st.dead_lettered, 3u);

    /* Redrive B: delivered again as a first attempt. */
    uint32_t moved = 0;
    h_assert_rc(shmq_dlq_redrive(q, ids[1], &moved), 0);
    cr_expect_eq(moved, 1u);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.id, ids[1]);
    cr_expect_arr_eq(m.data, "B", 1);
    cr_expect_eq(m.attempt, 1u, "redriven message attempt %u", m.attempt);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_receive(c, &m, 0), -EAGAIN);

    /* Purge A: its slot is free, it is gone. */
    uint32_t purged = 0;
    h_assert_rc(shmq_dlq_purge(q, ids[0], &purged), 0);
    cr_expect_eq(purged, 1u);
    h_assert_rc(shmq_dlq_list(q, dl, 8, &n), 0);
    cr_expect_eq(n, 1u);
    cr_expect_eq(dl[0].id, ids[2]);
    /* Unknown ids move nothing. */
    moved = purged = 77;
    int rc = shmq_dlq_redrive(q, ids[0], &moved);
    cr_expect(rc == 0 ? moved == 0 : rc == -ENOENT, "redrive of a purged id: %d, moved %u", rc,
              moved);
    rc = shmq_dlq_purge(q, 123456789, &purged);
    cr_expect(rc == 0 ? purged == 0 : rc == -ENOENT, "purge of an unknown id: %d, purged %u", rc,
              purged);

    /* Redrive all (id 0), then nothing is dead and every slot comes back free. */
    h_assert_rc(shmq_dlq_redrive(q, 0, &moved), 0);
    cr_expect_eq(moved, 1u);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_arr_eq(m.data, "C", 1);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_dlq_list(q, dl, 8, &n), 0);
    cr_expect_eq(n, 0u);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.dead, 0u);
    cr_expect_eq(st.free, 8u);
    close_q(name, q, c);
}

Test(api, dlq_purge_all_frees_every_slot)
{
    const char *name = h_qname("dlqpurge");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.max_attempts = 1;
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    uint64_t ids[3];
    make_dead_letters(q, c, ids);
    uint32_t purged = 0;
    h_assert_rc(shmq_dlq_purge(q, 0, &purged), 0);
    cr_expect_eq(purged, 3u);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.dead, 0u);
    cr_expect_eq(st.free, 8u);
    /* All 8 slots are usable again (the purged ones went back to the free ring). */
    for (int i = 0; i < 8; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), -EAGAIN);
    for (int i = 0; i < 8; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    close_q(name, q, c);
}

/* ---- the maintenance lease ---------------------------------------------------------------- */

struct lease_child {
    const char *qname;
    int priority;
    uint32_t lease_ms;
    bool hold; /* keep running (holding) until killed */
    _Atomic int done;
    _Atomic int acquire_rc, unwatched_rc;
};

static int lease_child_main(void *arg)
{
    struct lease_child *l = arg;
    shmq_t *q;
    if (shmq_open(l->qname, &q) != 0)
        return 10;
    atomic_store(&l->acquire_rc, shmq_lease_acquire(q, l->lease_ms, l->priority));
    if (!l->hold)
        atomic_store(&l->unwatched_rc, shmq_maintain_if_unwatched(q, 100));
    atomic_store(&l->done, 1);
    if (l->hold)
        for (;;)
            pause();
    shmq_close(q);
    return 0;
}

static struct lease_child *run_lease_child(const char *name, int priority, uint32_t lease_ms,
                                           bool hold, pid_t *pid)
{
    struct lease_child *l = h_shared_alloc(sizeof *l);
    l->qname = name;
    l->priority = priority;
    l->lease_ms = lease_ms;
    l->hold = hold;
    l->acquire_rc = l->unwatched_rc = 99;
    *pid = h_fork(lease_child_main, l);
    if (hold) {
        int64_t end = h_now_ms() + 30000;
        while (!atomic_load(&l->done) && h_now_ms() < end)
            h_sleep_ms(1);
        cr_assert(atomic_load(&l->done), "lease child did not run");
    } else {
        h_assert_child_ok(*pid, 30000, "lease child");
    }
    return l;
}

Test(api, lease_excludes_others_and_is_released)
{
    const char *name = h_qname("lease");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_lease_acquire(q, 5000, 1), 0);
    h_assert_rc(shmq_lease_acquire(q, 5000, 1), 0); /* renew */
    shmq_lease_info_t li;
    h_assert_rc(shmq_lease_get(q, &li), 0);
    cr_expect_eq(li.held, 1);
    cr_expect_eq(li.pid, getpid());
    cr_expect_eq(li.priority, 1);
    cr_expect(li.expires_in_ms > 0 && li.expires_in_ms <= 5000, "expires in %lld ms",
              (long long)li.expires_in_ms);

    pid_t pid;
    struct lease_child *l = run_lease_child(name, 1, 5000, false, &pid);
    h_assert_rc(l->acquire_rc, -EBUSY);
    h_assert_rc(l->unwatched_rc, 0); /* a watchdog holds it: no cooperative maintenance */

    h_assert_rc(shmq_lease_release(q), 0);
    h_assert_rc(shmq_lease_get(q, &li), 0);
    cr_expect_eq(li.held, 0);
    l = run_lease_child(name, 0, 5000, false, &pid);
    h_assert_rc(l->acquire_rc, 0);
    close_q(name, q, NULL);
}

Test(api, watchdog_priority_takes_consumer_lease)
{
    const char *name = h_qname("leaseprio");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    pid_t pid;
    struct lease_child *l = run_lease_child(name, 0, 60000, true, &pid);
    h_assert_rc(l->acquire_rc, 0);
    h_assert_rc(shmq_lease_acquire(q, 5000, 0), -EBUSY); /* equal priority: busy */
    h_assert_rc(shmq_lease_acquire(q, 5000, 1), 0);      /* a watchdog takes it over */
    shmq_lease_info_t li;
    h_assert_rc(shmq_lease_get(q, &li), 0);
    cr_expect_eq(li.pid, getpid());
    cr_expect_eq(li.priority, 1);
    h_assert_rc(shmq_lease_release(q), 0);
    close_q(name, q, NULL);
}

Test(api, lease_of_dead_holder_is_taken)
{
    const char *name = h_qname("leasedead");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    pid_t pid;
    struct lease_child *l = run_lease_child(name, 1, 60000, true, &pid);
    h_assert_rc(l->acquire_rc, 0);
    h_assert_rc(shmq_lease_acquire(q, 5000, 1), -EBUSY);
    kill(pid, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(pid, 30000, 0, &st), 0);
    /* "-EBUSY if another live holder does": a dead one does not, whatever its expiry. */
    int rc = -EBUSY;
    int64_t end = h_now_ms() + 30000;
    while ((rc = shmq_lease_acquire(q, 5000, 1)) == -EBUSY && h_now_ms() < end) {
        shmq_maintain(q, NULL);
        h_sleep_ms(10);
    }
    h_assert_rc(rc, 0);
    close_q(name, q, NULL);
}

/* ---- the registry as seen by tools -------------------------------------------------------- */

Test(api, procs_lists_clients_and_consumers)
{
    const char *name = h_qname("procs");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c1, *c2;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_consumer_open(q, "alpha", &c1), 0);
    h_assert_rc(shmq_consumer_open(q, "beta", &c2), 0);
    shmq_proc_info_t pi[8];
    size_t n = 0;
    h_assert_rc(shmq_procs(q, pi, 8, &n), 0);
    cr_expect_eq(n, 3u, "entries: %zu", n);
    int consumers = 0, clients = 0;
    bool alpha = false, beta = false;
    for (size_t i = 0; i < n && i < 8; i++) {
        cr_expect_eq(pi[i].pid, getpid());
        cr_expect_eq(pi[i].state, SHMQ_PROC_ACTIVE);
        if (pi[i].role & SHMQ_ROLE_CONSUMER) {
            consumers++;
            alpha |= strcmp(pi[i].name, "alpha") == 0;
            beta |= strcmp(pi[i].name, "beta") == 0;
        }
        if (pi[i].role & SHMQ_ROLE_CLIENT)
            clients++;
    }
    cr_expect_eq(consumers, 2);
    cr_expect_eq(clients, 1);
    cr_expect(alpha && beta, "consumer names not listed");
    size_t n1 = 0;
    h_assert_rc(shmq_procs(q, pi, 1, &n1), 0);
    cr_expect(n1 <= 1, "max 1 filled %zu", n1);
    h_assert_rc(shmq_consumer_close(c2), 0);
    h_assert_rc(shmq_procs(q, pi, 8, &n), 0);
    cr_expect_eq(n, 2u);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.consumers, 1u);
    cr_expect_eq(st.procs, 2u);
    close_q(name, q, c1);
}

Test(api, long_consumer_name_is_truncated_not_overflowed)
{
    const char *name = h_qname("cname");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, NULL);
    char longname[200];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    h_assert_rc(shmq_consumer_open(q, longname, &c), 0);
    shmq_proc_info_t pi[4];
    size_t n = 0;
    h_assert_rc(shmq_procs(q, pi, 4, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (pi[i].role & SHMQ_ROLE_CONSUMER) {
            size_t len = strnlen(pi[i].name, SHMQ_CONSUMER_NAME_MAX);
            cr_expect(len < SHMQ_CONSUMER_NAME_MAX, "name not NUL-terminated");
            cr_expect(len > 0 && strncmp(pi[i].name, longname, len) == 0);
            found = true;
        }
    }
    cr_expect(found);
    close_q(name, q, c);
}

Test(api, nack_backoff_follows_policy)
{
    /* nack(…, 0): delay base * mult^(attempt-1), capped: 100, 200, 250 (cap) ms, with "equal
     * jitter" (docs/DESIGN.md): somewhere in [delay/2, delay]. */
    const char *name = h_qname("backoff");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.backoff_base_ms = 100;
    cfg.backoff_multiplier = 2.0;
    cfg.backoff_cap_ms = 250;
    cfg.max_attempts = 10;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    h_assert_rc(shmq_publish(q, "b", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    const int expect_ms[] = {100, 200, 250};
    for (int i = 0; i < 3; i++) {
        int64_t t0 = h_now_ms();
        h_assert_rc(shmq_nack(c, &m, 0), 0);
        h_assert_rc(receive_with_maintain(q, c, &m, 3000), 0);
        int64_t dt = h_now_ms() - t0;
        cr_expect(dt >= expect_ms[i] / 2 - 10 && dt < expect_ms[i] + 1000,
                  "attempt %d: redelivered after %lld ms, policy says %d..%d", i + 1, (long long)dt,
                  expect_ms[i] / 2, expect_ms[i]);
        cr_expect_eq(m.attempt, (uint32_t)(i + 2));
    }
    h_assert_rc(shmq_ack(c, &m), 0);
    close_q(name, q, c);
}

/* ---- the log directory ---------------------------------------------------------------------- */

static bool dir_mode(const char *path, unsigned *mode)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return false;
    *mode = st.st_mode & 07777;
    return true;
}

Test(api, log_directory_created_private_and_removed_by_unlink)
{
    const char *name = h_qname("logdir");
    char path[256];
    snprintf(path, sizeof path, "%s/%s", h_state_dir_path(), name);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    unsigned mode = 0;
    cr_assert(dir_mode(path, &mode), "no log directory %s", path);
    cr_expect_eq(mode, 0700u, "log directory mode %o", mode);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
    /* The log makes the name taken even without a segment. */
    h_assert_rc(shmq_unlink_segment(name), 0);
    cr_expect(!segment_exists(name));
    shmq_t *q2;
    h_assert_rc(shmq_create(name, &cfg, &q2), -EEXIST);
    h_assert_rc(shmq_unlink(name), 0);
    cr_expect(!dir_mode(path, &mode), "shmq_unlink left the log directory %s", path);
    h_assert_rc(shmq_unlink(name), -ENOENT);
    /* Now the name is free again. */
    h_assert_rc(shmq_create(name, &cfg, &q2), 0);
    close_q(name, q2, NULL);
}

Test(api, durability_none_writes_no_log)
{
    const char *name = h_qname("nolog");
    char path[256];
    snprintf(path, sizeof path, "%s/%s", h_state_dir_path(), name);
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    open_q(name, &cfg, &q, NULL);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    unsigned mode;
    cr_expect(!dir_mode(path, &mode), "durability NONE made a log directory");
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.wal_bytes, 0u);
    close_q(name, q, NULL);
}

static int count_unread(shmq_t *q, shmq_consumer_t *c)
{
    int n = 0;
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0) {
        n++;
        shmq_ack(c, &m);
    }
    return n;
}

Test(api, unlinked_segment_rebuilt_from_log_by_open)
{
    /* shmq_unlink_segment() is "as a reboot would": the next open rebuilds the queue with the
     * messages published and not acked, ids continuing after the highest. */
    const char *name = h_qname("rebuild");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) {
        char d[8];
        snprintf(d, sizeof d, "m%d", i);
        h_assert_rc(shmq_publish(q, d, strlen(d), &ids[i]), 0);
    }
    shmq_msg_t m;
    for (int i = 0; i < 2; i++) { /* m0, m1 acked */
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_receive(c, &m, 0), 0); /* m2 in flight, not acked */
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);

    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "after", &c), 0);
    for (int i = 2; i < 6; i++) {
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        char d[8];
        snprintf(d, sizeof d, "m%d", i);
        cr_expect(m.len == strlen(d) && memcmp(m.data, d, m.len) == 0, "restored %.*s, want %s",
                  (int)m.len, (const char *)m.data, d);
        cr_expect_eq(m.id, ids[i]);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    cr_expect_eq(count_unread(q, c), 0, "acked messages came back");
    uint64_t id;
    h_assert_rc(shmq_publish(q, "new", 3, &id), 0);
    cr_expect(id > ids[5], "id %llu after rebuild does not continue after %llu",
              (unsigned long long)id, (unsigned long long)ids[5]);
    close_q(name, q, c);
}

Test(api, large_messages_round_trip)
{
    const char *name = h_qname("large");
    const uint32_t big = 1u << 20;
    shmq_config_t cfg = h_small_config(4, big, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    unsigned char *buf = malloc(big);
    cr_assert_not_null(buf);
    uint64_t seed = 7;
    for (uint32_t i = 0; i < big; i++)
        buf[i] = (unsigned char)h_rand(&seed);
    h_assert_rc(shmq_publish(q, buf, big, NULL), 0);
    void *r;
    h_assert_rc(shmq_reserve(q, big, &r), 0);
    memcpy(r, buf, big);
    ((unsigned char *)r)[big - 1] ^= 0xff;
    h_assert_rc(shmq_commit(q, r, big, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.len, big);
    cr_expect(memcmp(m.data, buf, big) == 0, "1 MiB payload differs");
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_assert_eq(m.len, big);
    cr_expect(memcmp(m.data, buf, big - 1) == 0 &&
                  ((const unsigned char *)m.data)[big - 1] == (buf[big - 1] ^ 0xff),
              "1 MiB zero-copy payload differs");
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_publish(q, buf, big + 1, NULL), -EMSGSIZE);
    free(buf);
    close_q(name, q, c);
}

Test(api, slot_taken_back_at_deadline_not_reused_while_old_reader_holds_it)
{
    /* shmq.h: a message taken back from a live consumer at its ack deadline is redelivered,
     * but its slot is not reused while the first consumer may still read it (it waits until
     * that consumer acks, closes or dies). */
    const char *name = h_qname("linger");
    shmq_config_t cfg = h_small_config(2, 64, 8);
    cfg.ack_deadline_ms = 100;
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    shmq_consumer_t *c1, *c2;
    open_q(name, &cfg, &q, &c1);
    h_assert_rc(shmq_consumer_open(q, "second", &c2), 0);
    h_assert_rc(shmq_publish(q, "SLOW", 4, NULL), 0);
    shmq_msg_t m1, m2;
    h_assert_rc(shmq_receive(c1, &m1, 0), 0);
    const void *data1 = m1.data;
    h_assert_rc(receive_with_maintain(q, c2, &m2, 3000), 0); /* past the deadline */
    cr_expect_arr_eq(m2.data, "SLOW", 4);
    cr_expect_eq(m2.attempt, 2u);
    h_assert_rc(shmq_ack(c2, &m2), 0);
    shmq_maintain(q, NULL);
    /* The old reader still holds its pointer: the slot must not carry a new message yet. */
    int published = 0;
    while (published < 4 && shmq_publish(q, "NEWER", 5, NULL) == 0)
        published++;
    cr_expect_eq(published, 1, "%d messages fit in a 2-slot queue while one slot lingers",
                 published);
    cr_expect_arr_eq(data1, "SLOW", 4, "the slow consumer's payload was overwritten");
    h_assert_rc(shmq_ack(c1, &m1), -ESTALE);
    shmq_maintain(q, NULL);
    /* It let go: the slot is free again. */
    h_assert_rc(shmq_publish(q, "LAST", 4, NULL), 0);
    shmq_msg_t m;
    for (int i = 0; i < published + 1; i++) {
        h_assert_rc(shmq_receive(c2, &m, 0), 0);
        h_assert_rc(shmq_ack(c2, &m), 0);
    }
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.free, 2u);
    h_assert_rc(shmq_consumer_close(c2), 0);
    close_q(name, q, c1);
}

Test(api, deadline_expiries_count_toward_max_attempts)
{
    /* shmq.h: SHMQ_DEAD_MAX_ATTEMPTS is "nacked or timed out max_attempts times". */
    const char *name = h_qname("dlqdeadline");
    shmq_config_t cfg = h_small_config(4, 64, 8);
    cfg.ack_deadline_ms = 100;
    cfg.max_attempts = 2;
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    shmq_consumer_t *c;
    open_q(name, &cfg, &q, &c);
    uint64_t id;
    h_assert_rc(shmq_publish(q, "late", 4, &id), 0);
    shmq_msg_t m1, m2, m3;
    h_assert_rc(shmq_receive(c, &m1, 0), 0);
    h_assert_rc(receive_with_maintain(q, c, &m2, 3000), 0); /* first deadline passed */
    cr_expect_eq(m2.attempt, 2u);
    /* Second deadline: attempts exhausted, dead letter, never delivered again. */
    h_assert_rc(receive_with_maintain(q, c, &m3, 1000), -ETIMEDOUT);
    shmq_dead_letter_t dl[2];
    size_t n = 0;
    h_assert_rc(shmq_dlq_list(q, dl, 2, &n), 0);
    cr_assert_eq(n, 1u, "dead letters: %zu", n);
    cr_expect_eq(dl[0].id, id);
    cr_expect_eq(dl[0].attempt, 2u);
    cr_expect_eq(dl[0].reason, (uint32_t)SHMQ_DEAD_MAX_ATTEMPTS);
    h_assert_rc(shmq_ack(c, &m1), -ESTALE);
    h_assert_rc(shmq_ack(c, &m2), -ESTALE);
    uint32_t purged;
    h_assert_rc(shmq_dlq_purge(q, 0, &purged), 0);
    shmq_maintain(q, NULL);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.free, 4u, "free %u after purge (dead %u)", st.free, st.dead);
    close_q(name, q, c);
}
