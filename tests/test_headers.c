/*
 * test_headers.c - publish options (shmq_publish_ex) and message headers.
 *
 *  - pub_opts_delay_and_dedup: shmq_publish_ex with delay_ms parks the message DELAYED (as
 *    shmq_publish_delayed), with a dedup key answers a second publish with the first id (as
 *    shmq_publish_dedup); NULL opts is a plain publish.
 *  - pub_opts_size: a caller's struct smaller than the first version is refused (-EINVAL); an
 *    older, shorter one within it is read up to its size (fields past it as 0); a key with a
 *    delay is -ENOTSUP.
 */
#include "helpers.h"

TestSuite(headers, .fini = h_cleanup, .timeout = 240);

Test(headers, pub_opts_delay_and_dedup)
{
    const char *name = h_qname("hdr");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t a = 0, b = 0, c = 0;
    h_assert_rc(shmq_publish_ex(q, "now", 3, NULL, &a), 0);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.delay_ms = 600000;
    h_assert_rc(shmq_publish_ex(q, "late", 4, &o, &b), 0);
    shmq_pub_opts_init(&o);
    o.dedup_key = "k1";
    o.dedup_key_len = 2;
    h_assert_rc(shmq_publish_ex(q, "keyed", 5, &o, &c), 0);
    uint64_t again = 0;
    h_assert_rc(shmq_publish_ex(q, "keyed", 5, &o, &again), 0);
    cr_assert_eq(again, c, "a second keyed publish gave id %llu, not %llu",
                 (unsigned long long)again, (unsigned long long)c);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.ready, 2u, "ready %u", st.ready);
    cr_assert_eq(st.delayed, 1u, "delayed %u", st.delayed);
    cr_assert_eq(st.dedup_hits, 1u, "dedup hits %llu", (unsigned long long)st.dedup_hits);
    h_assert_rc(shmq_close(q), 0);
}

Test(headers, pub_opts_size)
{
    const char *name = h_qname("hdr");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    cr_assert_eq(o.size, sizeof(o));
    o.size = 4;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EINVAL);
    shmq_pub_opts_init(&o);
    o.dedup_key = "k";
    o.dedup_key_len = 1;
    o.delay_ms = 10;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -ENOTSUP);
    shmq_pub_opts_init(&o);
    o.n_headers = 1;
    h_assert_rc(shmq_publish_ex(q, "x", 1, &o, NULL), -EINVAL); /* NULL headers */
    /* a struct of the first version: fields a later version adds past it read as 0 */
    struct {
        shmq_pub_opts_t o;
        char later[32];
    } big;
    memset(&big, 0xff, sizeof big);
    shmq_pub_opts_init(&big.o);
    big.o.size = (uint32_t)(offsetof(shmq_pub_opts_t, dedup_key_len) + sizeof(size_t));
    uint64_t id = 0;
    h_assert_rc(shmq_publish_ex(q, "y", 1, &big.o, &id), 0);
    cr_assert_neq(id, 0);
    h_assert_rc(shmq_close(q), 0);
}
