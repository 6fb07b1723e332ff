/*
 * test_abi.c - the structs that can grow (include/shmq/shmq.h "ABI", src/abi.h): a config
 * carries the caller's size and a config without one is refused; an older, smaller struct is
 * accepted (its missing fields take their defaults) and never written past its end; a size the
 * library does not know is -EINVAL; the plain symbols act on the first layout.
 */

#include "helpers.h" /* first: it defines _GNU_SOURCE */

#include "abi.h"

TestSuite(abi, .fini = h_cleanup, .timeout = 20);

#define CANARY 0x5a

/* A struct of `size` bytes as a caller would own it, followed by canary bytes up to `room`. */
struct caller_buf {
    _Alignas(16) unsigned char b[512];
};

static bool canary_intact(const struct caller_buf *c, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (c->b[i] != CANARY)
            return false;
    return true;
}

Test(abi, config_init_sets_the_size)
{
    shmq_config_t cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    shmq_config_init(&cfg);
    cr_assert_eq(cfg.size, sizeof(shmq_config_t));
    cr_assert_eq(sizeof(shmq_config_t) % 8, 0);
    shmq_config_t got;
    memset(&got, 0xa5, sizeof got);
    const char *name = h_qname("abisz");
    shmq_t *q;
    cfg.durability = SHMQ_DURABILITY_NONE;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.size, sizeof(shmq_config_t));
    cr_assert_eq(got.capacity, cfg.capacity);
    h_assert_rc(shmq_close(q), 0);
}

/* A config not made by shmq_config_init() (size 0), or one whose size the library does not
 * know, creates nothing. */
Test(abi, a_config_without_a_known_size_is_refused)
{
    const char *name = h_qname("abibad");
    shmq_config_t good = h_small_config(8, 64, 8);
    good.durability = SHMQ_DURABILITY_NONE;
    const uint32_t own = (uint32_t)sizeof(shmq_config_t), first = (uint32_t)ABI_CONFIG_SIZE_0;
    const uint32_t bad[] = {0, 4, first - 8, own - 4, own + 8, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shmq_config_t cfg = good;
        cfg.size = bad[i];
        shmq_t *q = NULL;
        int rc = shmq_create(name, &cfg, &q);
        cr_assert_eq(rc, -EINVAL, "size %u: create returned %d (%s)", bad[i], rc,
                     shmq_strerror(rc));
        cr_assert_null(q);
    }
    shmq_config_t zero = {0};
    memcpy((char *)&zero + sizeof(zero.size), (char *)&good + sizeof(good.size),
           sizeof(good) - sizeof(good.size)); /* every field set by hand, the size not */
    shmq_t *q = NULL;
    h_assert_rc(shmq_create(name, &zero, &q), -EINVAL);
}

/* An older caller's config: init and create see only its size bytes; what lies beyond is not
 * the config's (garbage here), and the fields there take their defaults. */
Test(abi, an_older_smaller_config_takes_the_defaults_it_lacks)
{
    size_t old = ABI_CONFIG_SIZE_0;
    struct caller_buf c;
    memset(c.b, CANARY, sizeof c.b);
    shmq_config_t *cfg = (shmq_config_t *)c.b;
    h_assert_rc(shmq_config_init_size(cfg, old), 0);
    cr_assert_eq(cfg->size, old);
    cr_assert(canary_intact(&c, old, sizeof c.b), "init wrote past the caller's %zu bytes", old);
    cfg->capacity = 8;
    cfg->max_msg_size = 64;
    cfg->durability = SHMQ_DURABILITY_NONE;
    const char *name = h_qname("abiold");
    shmq_t *q;
    h_assert_rc(shmq_create(name, cfg, &q), 0);
    /* the same queue made from today's config with its defaults: what the old caller's queue
     * must be in every field past the old size (as stored: e.g. max_headers reads 0 on a queue
     * without headers, whatever the default) */
    shmq_config_t got, def, want;
    shmq_config_init(&def);
    def.capacity = 8;
    def.max_msg_size = 64;
    def.durability = SHMQ_DURABILITY_NONE;
    const char *name_new = h_qname("abinew");
    shmq_t *q_new;
    h_assert_rc(shmq_create(name_new, &def, &q_new), 0);
    h_assert_rc(shmq_get_config(q_new, &want), 0);
    h_assert_rc(shmq_close(q_new), 0);
    h_assert_rc(shmq_get_config(q, &got), 0);
    cr_assert_eq(got.capacity, 8);
    cr_assert_eq(got.max_msg_size, 64);
    cr_assert_eq(memcmp((char *)&got + old, (char *)&want + old, sizeof got - old), 0,
                 "a field the old config lacks did not take its default");
    /* and reading it back into the old caller's struct writes its bytes only */
    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(shmq_get_config_size(q, cfg, old), 0);
    cr_assert_eq(cfg->size, old);
    cr_assert_eq(cfg->capacity, 8);
    cr_assert(canary_intact(&c, old, sizeof c.b));
    h_assert_rc(shmq_close(q), 0);
}

Test(abi, init_and_get_config_refuse_an_unknown_size)
{
    struct caller_buf c;
    memset(c.b, CANARY, sizeof c.b);
    shmq_config_t *cfg = (shmq_config_t *)c.b;
    h_assert_rc(shmq_config_init_size(cfg, sizeof(shmq_config_t) + 8), -EINVAL);
    cr_assert_eq(cfg->size, 0, "a refused init leaves a size create refuses");
    cr_assert(canary_intact(&c, sizeof cfg->size, sizeof c.b));
    h_assert_rc(shmq_config_init_size(cfg, ABI_CONFIG_SIZE_0 - 8), -EINVAL);
    h_assert_rc(shmq_config_init_size(cfg, sizeof(shmq_config_t) - 4), -EINVAL);
    h_assert_rc(shmq_config_init_size(NULL, sizeof(shmq_config_t)), -EINVAL);

    shmq_config_t good = h_small_config(8, 64, 8);
    good.durability = SHMQ_DURABILITY_NONE;
    const char *name = h_qname("abiget");
    shmq_t *q;
    h_assert_rc(shmq_create(name, &good, &q), 0);
    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(shmq_get_config_size(q, cfg, sizeof(shmq_config_t) + 8), -EINVAL);
    h_assert_rc(shmq_get_config_size(q, cfg, ABI_CONFIG_SIZE_0 - 8), -EINVAL);
    cr_assert(canary_intact(&c, 0, sizeof c.b), "a refused get_config wrote");
    h_assert_rc(shmq_close(q), 0);
}

/* Output structs: the macro passes the caller's sizeof; an older, smaller struct gets its
 * bytes and no more; an unknown size is refused before anything is written. */
Test(abi, reports_fill_the_callers_size_only)
{
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    const char *name = h_qname("abiout");
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);

    struct caller_buf c;
    shmq_stats_t full;
    h_assert_rc(shmq_stats(q, &full), 0);
    cr_assert_eq(full.published, 1);
    cr_assert_eq(full.ready, 1);
    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(shmq_stats_size(q, (shmq_stats_t *)c.b, ABI_STATS_SIZE_0), 0);
    cr_assert_eq(((shmq_stats_t *)c.b)->published, 1);
    cr_assert(canary_intact(&c, ABI_STATS_SIZE_0, sizeof c.b));
    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(shmq_stats_size(q, (shmq_stats_t *)c.b, sizeof(shmq_stats_t) + 8), -EINVAL);
    h_assert_rc(shmq_stats_size(q, (shmq_stats_t *)c.b, ABI_STATS_SIZE_0 - 1), -EINVAL);
    cr_assert(canary_intact(&c, 0, sizeof c.b));

    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(shmq_maintain_size(q, (shmq_maint_report_t *)c.b, ABI_MAINT_SIZE_0), 0);
    cr_assert(canary_intact(&c, ABI_MAINT_SIZE_0, sizeof c.b));
    h_assert_rc(shmq_maintain_size(q, NULL, 0), 0);
    h_assert_rc(shmq_maintain_size(q, (shmq_maint_report_t *)c.b, sizeof(shmq_maint_report_t) + 8),
                -EINVAL);
    h_assert_rc(shmq_close(q), 0);
}

Test(abi, recover_report_fills_the_callers_size_only)
{
    shmq_config_t cfg = h_log_config(8);
    const char *name = h_qname("abirec");
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    struct caller_buf c;
    memset(c.b, CANARY, sizeof c.b);
    shmq_recovery_report_t *rep = (shmq_recovery_report_t *)c.b;
    h_assert_rc(shmq_recover_size(name, NULL, rep, sizeof(shmq_recovery_report_t) + 8), -EINVAL);
    cr_assert(canary_intact(&c, 0, sizeof c.b));
    h_assert_rc(shmq_recover_size(name, NULL, rep, ABI_RECOVERY_SIZE_0), 0);
    cr_assert_eq(rep->restored, 1);
    cr_assert(canary_intact(&c, ABI_RECOVERY_SIZE_0, sizeof c.b));
}

/* A caller that binds by symbol (a function pointer, dlsym, ctypes) reaches the plain
 * functions, which use each struct's first layout. */
Test(abi, plain_symbols_use_the_first_layout)
{
    void (*init)(shmq_config_t *) = shmq_config_init;
    int (*stats)(shmq_t *, shmq_stats_t *) = shmq_stats;
    int (*get)(const shmq_t *, shmq_config_t *) = shmq_get_config;
    struct caller_buf c;
    memset(c.b, CANARY, sizeof c.b);
    shmq_config_t *cfg = (shmq_config_t *)c.b;
    init(cfg);
    cr_assert_eq(cfg->size, ABI_CONFIG_SIZE_0);
    cr_assert_eq(cfg->capacity, 1024);
    cr_assert(canary_intact(&c, ABI_CONFIG_SIZE_0, sizeof c.b));
    cfg->capacity = 8;
    cfg->max_msg_size = 64;
    cfg->durability = SHMQ_DURABILITY_NONE;
    const char *name = h_qname("abisym");
    shmq_t *q;
    h_assert_rc(shmq_create(name, cfg, &q), 0);
    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(get(q, cfg), 0);
    cr_assert_eq(cfg->capacity, 8);
    cr_assert(canary_intact(&c, ABI_CONFIG_SIZE_0, sizeof c.b));
    memset(c.b, CANARY, sizeof c.b);
    h_assert_rc(stats(q, (shmq_stats_t *)c.b), 0);
    cr_assert(canary_intact(&c, ABI_STATS_SIZE_0, sizeof c.b));
    h_assert_rc(shmq_close(q), 0);
}

/* Publish options: init writes the caller's bytes only; a size from newer headers (options this
 * library would ignore) is refused. */
Test(abi, pub_opts_follow_the_size_rule)
{
    size_t first = ABI_END(shmq_pub_opts_t, dedup_key_len);
    struct caller_buf c;
    memset(c.b, CANARY, sizeof c.b);
    shmq_pub_opts_t *o = (shmq_pub_opts_t *)c.b;
    h_assert_rc(shmq_pub_opts_init_size(o, first), 0);
    cr_assert_eq(o->size, first);
    cr_assert(canary_intact(&c, first, sizeof c.b), "init wrote past the caller's struct");
    h_assert_rc(shmq_pub_opts_init_size(o, sizeof(shmq_pub_opts_t) + 8), -EINVAL);
    h_assert_rc(shmq_pub_opts_init_size(o, first - 8), -EINVAL);

    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    const char *name = h_qname("abiopt");
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_pub_opts_init_size(o, first), 0);
    h_assert_rc(shmq_publish_ex(q, "a", 1, o, NULL), 0);
    o->size = (uint32_t)sizeof(shmq_pub_opts_t) + 8; /* a newer caller's: not ignored silently */
    h_assert_rc(shmq_publish_ex(q, "b", 1, o, NULL), -EINVAL);
    void (*init)(shmq_pub_opts_t *) = shmq_pub_opts_init;
    memset(c.b, CANARY, sizeof c.b);
    init(o);
    cr_assert_eq(o->size, first);
    cr_assert(canary_intact(&c, first, sizeof c.b));
    h_assert_rc(shmq_close(q), 0);
}
