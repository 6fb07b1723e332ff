/*
 * test_multiproc.c - several processes on one queue: no loss, no duplicates, no corruption,
 * per-producer order, and sleepers woken by other processes.
 *
 * Producers are forked processes that publish K messages each, carrying (producer, seq, len,
 * checksum of the payload); consumers are forked processes that receive with a timeout, check
 * the checksum, ack, and count each (producer, seq) in an array shared by all (MAP_SHARED |
 * MAP_ANONYMOUS). At the end every message was received and acked exactly once. Loss,
 * duplication, reordering and corruption are each counted apart, so a failure says which.
 */
#include "helpers.h"

TestSuite(multiproc, .fini = h_cleanup, .timeout = 180);

#define MAX_PAYLOAD 200
#define RUN_BOUND_MS 30000 /* every child gives up after this: the test never hangs */

struct wire {
    uint32_t producer, seq, len, csum;
    unsigned char payload[MAX_PAYLOAD];
};

struct shared {
    const char *qname;
    int producers, consumers;
    uint32_t per_producer;
    int64_t deadline_ms;       /* CLOCK_MONOTONIC bound of the whole run */
    _Atomic uint64_t received; /* messages received and acked, all consumers */
    _Atomic uint64_t corrupt;  /* checksum, length or header mismatch */
    _Atomic uint64_t out_of_range;
    _Atomic uint64_t reordered;    /* per-producer order violations seen by one consumer */
    _Atomic uint64_t id_reordered; /* per-producer ids not increasing, seen by one consumer */
    _Atomic uint64_t redelivered;
    _Atomic uint64_t ack_failed;
    _Atomic uint64_t publish_failed;
    _Atomic uint64_t receive_failed;
    _Atomic int consumers_done;
    _Atomic uint32_t counts[]; /* producers * per_producer */
};

static void fill_payload(struct wire *w, uint32_t producer, uint32_t seq)
{
    uint64_t s = ((uint64_t)producer << 32 | seq) * 0x9e3779b97f4a7c15ull + 1;
    w->producer = producer;
    w->seq = seq;
    w->len = (uint32_t)(h_rand(&s) % (MAX_PAYLOAD + 1));
    for (uint32_t i = 0; i < w->len; i++)
        w->payload[i] = (unsigned char)h_rand(&s);
    w->csum = h_fnv1a(w->payload, w->len) ^ producer ^ (seq * 2654435761u);
}

struct producer_arg {
    struct shared *sh;
    uint32_t me;
};

static int producer_main(void *arg)
{
    struct shared *sh = ((struct producer_arg *)arg)->sh;
    uint32_t me = ((struct producer_arg *)arg)->me;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 10;
    struct wire w;
    for (uint32_t seq = 0; seq < sh->per_producer; seq++) {
        fill_payload(&w, me, seq);
        int rc;
        while ((rc = shmq_publish_timed(q, &w, offsetof(struct wire, payload) + w.len, NULL,
                                        500)) == -ETIMEDOUT) {
            if (h_now_ms() > sh->deadline_ms) {
                atomic_fetch_add(&sh->publish_failed, 1);
                shmq_close(q);
                return 11;
            }
        }
        if (rc != 0) {
            atomic_fetch_add(&sh->publish_failed, 1);
            shmq_close(q);
            return 12;
        }
    }
    return shmq_close(q) == 0 ? 0 : 13;
}

static int consumer_main(void *arg)
{
    struct shared *sh = arg;
    uint64_t total = (uint64_t)sh->producers * sh->per_producer;
    shmq_t *q;
    if (shmq_open(sh->qname, &q) != 0)
        return 20;
    shmq_consumer_t *c;
    if (shmq_consumer_open(q, "mp", &c) != 0)
        return 21;
    int64_t last_seq[16];
    uint64_t last_id[16] = {0};
    for (int i = 0; i < 16; i++)
        last_seq[i] = -1;
    while (atomic_load(&sh->received) < total && h_now_ms() < sh->deadline_ms) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 100);
        if (rc == -ETIMEDOUT || rc == -EAGAIN)
            continue;
        if (rc != 0) {
            atomic_fetch_add(&sh->receive_failed, 1);
            break;
        }
        const struct wire *w = m.data;
        size_t hdr = offsetof(struct wire, payload);
        if (m.len < hdr || m.len != hdr + w->len || w->len > MAX_PAYLOAD) {
            atomic_fetch_add(&sh->corrupt, 1);
        } else if (w->producer >= (uint32_t)sh->producers || w->seq >= sh->per_producer) {
            atomic_fetch_add(&sh->out_of_range, 1);
        } else {
            uint32_t cs = h_fnv1a(w->payload, w->len) ^ w->producer ^ (w->seq * 2654435761u);
            if (cs != w->csum) {
                atomic_fetch_add(&sh->corrupt, 1);
            } else {
                if ((int64_t)w->seq <= last_seq[w->producer])
                    atomic_fetch_add(&sh->reordered, 1);
                last_seq[w->producer] = w->seq;
                /* ids: "unique, increasing per queue (in publish order for one producer)" */
                if (m.id <= last_id[w->producer])
                    atomic_fetch_add(&sh->id_reordered, 1);
                last_id[w->producer] = m.id;
                atomic_fetch_add(&sh->counts[w->producer * sh->per_producer + w->seq], 1);
            }
        }
        if (m.attempt != 1 || (m.flags & SHMQ_MSG_REDELIVERED))
            atomic_fetch_add(&sh->redelivered, 1);
        if (shmq_ack(c, &m) != 0)
            atomic_fetch_add(&sh->ack_failed, 1);
        atomic_fetch_add(&sh->received, 1);
    }
    atomic_fetch_add(&sh->consumers_done, 1);
    if (shmq_consumer_close(c) != 0)
        return 22;
    return shmq_close(q) == 0 ? 0 : 23;
}

static void run_mpmc_cd(const char *tag, int producers, int consumers, uint32_t per_producer,
                        bool check_order, int durability, uint32_t capacity)
{
    cr_assert(producers <= 16);
    const char *name = h_qname(tag);
    shmq_config_t cfg = h_small_config(capacity, sizeof(struct wire), 32);
    cfg.durability = durability;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);

    size_t n = (size_t)producers * per_producer;
    struct shared *sh = h_shared_alloc(sizeof *sh + n * sizeof(sh->counts[0]));
    sh->qname = name; /* the children inherit this process's memory: the pointer is valid */
    sh->producers = producers;
    sh->consumers = consumers;
    sh->per_producer = per_producer;
    sh->deadline_ms = h_now_ms() + RUN_BOUND_MS;

    pid_t cons[8], prods[16];
    for (int i = 0; i < consumers; i++)
        cons[i] = h_fork(consumer_main, sh);
    struct producer_arg pa[16];
    for (int i = 0; i < producers; i++) {
        pa[i] = (struct producer_arg){sh, (uint32_t)i};
        prods[i] = h_fork(producer_main, &pa[i]);
    }
    for (int i = 0; i < producers; i++)
        h_assert_child_ok(prods[i], RUN_BOUND_MS + 5000, "producer");
    for (int i = 0; i < consumers; i++)
        h_assert_child_ok(cons[i], RUN_BOUND_MS + 5000, "consumer");

    cr_expect_eq(sh->publish_failed, 0u, "publishes failed");
    cr_expect_eq(sh->receive_failed, 0u, "receives failed");
    cr_expect_eq(sh->corrupt, 0u, "corrupted messages");
    cr_expect_eq(sh->out_of_range, 0u, "messages with a bad producer or seq");
    cr_expect_eq(sh->ack_failed, 0u, "acks failed");
    cr_expect_eq(sh->redelivered, 0u, "messages redelivered although nothing crashed");
    if (check_order)
        cr_expect_eq(sh->reordered, 0u, "per-producer order broken");
    if (check_order)
        cr_expect_eq(sh->id_reordered, 0u, "ids not increasing in one producer's order");
    size_t lost = 0, dup = 0, first_bad = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = sh->counts[i];
        if (k == 0)
            lost++;
        if (k > 1)
            dup++;
        if (k != 1 && first_bad == SIZE_MAX)
            first_bad = i;
    }
    cr_expect(lost == 0 && dup == 0,
              "%zu lost, %zu duplicated of %zu; first: producer %zu seq %zu seen %u times", lost,
              dup, n, first_bad / per_producer, first_bad % per_producer,
              first_bad < n ? sh->counts[first_bad] : 0);
    cr_expect_eq(sh->received, n, "received %llu of %zu", (unsigned long long)sh->received, n);

    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_expect_eq(st.published, n);
    cr_expect_eq(st.delivered, n);
    cr_expect_eq(st.acked, n);
    cr_expect_eq(st.redelivered, 0u);
    cr_expect_eq(st.free, capacity, "slots not free at the end: ready %u inflight %u reserved %u",
                 st.ready, st.inflight, st.reserved);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
    munmap(sh, sizeof *sh + n * sizeof(sh->counts[0]));
}

static void run_mpmc_d(const char *tag, int producers, int consumers, uint32_t per_producer,
                       bool check_order, int durability)
{
    run_mpmc_cd(tag, producers, consumers, per_producer, check_order, durability, 256);
}

/* The default durability (PROCESS: every publish is also appended to the log). */
static void run_mpmc(const char *tag, int producers, int consumers, uint32_t per_producer,
                     bool check_order)
{
    shmq_config_t def;
    shmq_config_init(&def);
    run_mpmc_d(tag, producers, consumers, per_producer, check_order, def.durability);
}

Test(multiproc, one_producer_one_consumer_exactly_once_in_order)
{
    run_mpmc("mp11", 1, 1, 20000, true);
}

Test(multiproc, two_producers_two_consumers_exactly_once) { run_mpmc("mp22", 2, 2, 10000, false); }

Test(multiproc, four_producers_two_consumers_exactly_once) { run_mpmc("mp42", 4, 2, 5000, false); }

Test(multiproc, eight_producers_one_consumer_exactly_once_in_order)
{
    /* One consumer sees each producer's messages in that producer's order. */
    run_mpmc("mp81", 8, 1, 2000, true);
}

Test(multiproc, two_producers_two_consumers_durability_none_exactly_once)
{
    run_mpmc_d("mp22none", 2, 2, 10000, false, SHMQ_DURABILITY_NONE);
}

Test(multiproc, two_producers_two_consumers_durability_sync_exactly_once)
{
    /* SYNC: publish returns after the record is on stable storage (group commit). */
    run_mpmc_d("mp22sync", 2, 2, 1000, false, SHMQ_DURABILITY_SYNC);
}

Test(multiproc, capacity_one_queue_exactly_once_in_order)
{
    /* One slot: producer and consumer hand it back and forth; every publish waits for an ack. */
    run_mpmc_cd("mpcap1", 1, 1, 3000, true, SHMQ_DURABILITY_NONE, 1);
}

Test(multiproc, capacity_two_queue_two_by_two_exactly_once)
{
    run_mpmc_cd("mpcap2", 2, 2, 3000, false, SHMQ_DURABILITY_NONE, 2);
}

/* ---- wake-ups across processes -------------------------------------------------------------- */

struct wake {
    const char *qname;
    int timeout_ms;
    _Atomic int ready;
    _Atomic int rc;
    char data[16];
    _Atomic int64_t got_ms;
};

static int blocking_receiver(void *arg)
{
    struct wake *w = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(w->qname, &q) != 0 || shmq_consumer_open(q, "sleeper", &c) != 0)
        return 30;
    atomic_store(&w->ready, 1);
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, w->timeout_ms);
    atomic_store(&w->got_ms, h_now_ms());
    atomic_store(&w->rc, rc);
    if (rc == 0) {
        memcpy(w->data, m.data, m.len < sizeof w->data ? m.len : sizeof w->data - 1);
        if (shmq_ack(c, &m) != 0)
            return 31;
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return rc == 0 ? 0 : 32;
}

/* Wait until the child flagged ready and then went to sleep in the kernel. */
static void wait_asleep(pid_t pid, _Atomic int *ready)
{
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(ready) && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert(atomic_load(ready), "child did not attach in time");
    cr_assert_eq(h_wait_sleeping(pid, 30000), 0, "child did not go to sleep in receive");
}

static void check_wake(int timeout_ms)
{
    const char *name = h_qname(timeout_ms < 0 ? "wakeforever" : "wakelong");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct wake *w = h_shared_alloc(sizeof *w);
    w->qname = name;
    w->timeout_ms = timeout_ms;
    w->rc = 1;
    pid_t pid = h_fork(blocking_receiver, w);
    wait_asleep(pid, &w->ready);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_publish(q, "wake up", 7, NULL), 0);
    h_assert_child_ok(pid, 30000, "blocked receiver after a publish");
    int64_t dt = w->got_ms - t0;
    cr_expect(dt < 1000, "receiver woke %lld ms after the publish", (long long)dt);
    cr_expect_eq(w->rc, 0);
    cr_expect_str_eq(w->data, "wake up");
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

Test(multiproc, blocking_receive_forever_woken_by_publish) { check_wake(-1); }

Test(multiproc, blocking_receive_with_long_timeout_woken_by_publish) { check_wake(20000); }

Test(multiproc, every_sleeping_consumer_is_woken)
{
    /* Three consumers asleep, three messages published one by one: each consumer gets one
     * (no lost wake-up when several sleep on the same futex). */
    const char *name = h_qname("wakeall");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct wake *w = h_shared_alloc(3 * sizeof *w);
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        w[i].qname = name;
        w[i].timeout_ms = -1;
        w[i].rc = 1;
        pids[i] = h_fork(blocking_receiver, &w[i]);
    }
    for (int i = 0; i < 3; i++)
        wait_asleep(pids[i], &w[i].ready);
    for (int i = 0; i < 3; i++) {
        char msg[8];
        snprintf(msg, sizeof msg, "m%d", i);
        h_assert_rc(shmq_publish(q, msg, strlen(msg), NULL), 0);
    }
    for (int i = 0; i < 3; i++)
        h_assert_child_ok(pids[i], 30000, "sleeping consumer");
    bool seen[3] = {false};
    for (int i = 0; i < 3; i++) {
        cr_expect(w[i].data[0] == 'm' && w[i].data[1] >= '0' && w[i].data[1] <= '2', "got %s",
                  w[i].data);
        int k = w[i].data[1] - '0';
        if (k >= 0 && k < 3) {
            cr_expect(!seen[k], "m%d delivered twice", k);
            seen[k] = true;
        }
    }
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

struct pubwake {
    const char *qname;
    _Atomic int ready;
    _Atomic int rc;
    _Atomic int64_t done_ms;
};

static int blocking_publisher(void *arg)
{
    struct pubwake *p = arg;
    shmq_t *q;
    if (shmq_open(p->qname, &q) != 0)
        return 40;
    atomic_store(&p->ready, 1);
    int rc = shmq_publish_timed(q, "late", 4, NULL, 20000);
    atomic_store(&p->done_ms, h_now_ms());
    atomic_store(&p->rc, rc);
    shmq_close(q);
    return rc == 0 ? 0 : 41;
}

Test(multiproc, blocked_publish_woken_by_ack_in_another_process)
{
    const char *name = h_qname("pubwake");
    shmq_config_t cfg = h_small_config(2, 64, 8);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "acker", &c), 0);
    h_assert_rc(shmq_publish(q, "a", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "b", 1, NULL), 0);
    struct pubwake *p = h_shared_alloc(sizeof *p);
    p->qname = name;
    p->rc = 1;
    pid_t pid = h_fork(blocking_publisher, p);
    wait_asleep(pid, &p->ready);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    int64_t t0 = h_now_ms();
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_child_ok(pid, 30000, "blocked publisher after an ack");
    cr_expect(p->done_ms - t0 < 1000, "publisher woke %lld ms after the ack",
              (long long)(p->done_ms - t0));
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_arr_eq(m.data, "b", 1);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    cr_expect_eq(m.len, 4u);
    cr_expect_arr_eq(m.data, "late", 4);
    h_assert_rc(shmq_ack(c, &m), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- signals and deaths ------------------------------------------------------------------ */

static void on_usr1(int sig) { (void)sig; }

static int interruptible_receiver(void *arg)
{
    struct wake *w = arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(w->qname, &q) != 0 || shmq_consumer_open(q, "eintr", &c) != 0)
        return 30;
    atomic_store(&w->ready, 1);
    shmq_msg_t m;
    int rc = shmq_receive(c, &m, w->timeout_ms);
    atomic_store(&w->got_ms, h_now_ms());
    atomic_store(&w->rc, rc);
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(multiproc, blocking_receive_interrupted_by_signal_is_eintr)
{
    const char *name = h_qname("eintr");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct wake *w = h_shared_alloc(sizeof *w);
    w->qname = name;
    w->timeout_ms = 20000;
    w->rc = 1;
    pid_t pid = h_fork(interruptible_receiver, w);
    wait_asleep(pid, &w->ready);
    int64_t t0 = h_now_ms();
    kill(pid, SIGUSR1);
    h_assert_child_ok(pid, 30000, "receiver sent SIGUSR1");
    cr_expect_eq(w->rc, -EINTR, "receive interrupted by a signal = %d (%s)", w->rc,
                 shmq_strerror(w->rc));
    cr_expect(w->got_ms - t0 < 1000, "receive returned %lld ms after the signal",
              (long long)(w->got_ms - t0));
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

Test(multiproc, killed_sleeper_does_not_break_wakeups)
{
    /* A consumer dies while asleep in receive (counted as a waiter). Another sleeper must
     * still be woken by the next publish, before and after maintenance uncounts the dead one. */
    const char *name = h_qname("deadsleeper");
    shmq_config_t cfg = h_small_config(16, 64, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct wake *w = h_shared_alloc(3 * sizeof *w);
    for (int i = 0; i < 3; i++) {
        w[i].qname = name;
        w[i].timeout_ms = -1;
        w[i].rc = 1;
    }
    pid_t dead = h_fork(blocking_receiver, &w[0]);
    wait_asleep(dead, &w[0].ready);
    kill(dead, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(dead, 30000, 0, &st), 0);

    pid_t live = h_fork(blocking_receiver, &w[1]);
    wait_asleep(live, &w[1].ready);
    h_assert_rc(shmq_publish(q, "first", 5, NULL), 0);
    h_assert_child_ok(live, 30000, "sleeper after another sleeper died");
    cr_expect_str_eq(w[1].data, "first");

    shmq_maint_report_t rep = {0};
    h_assert_rc(shmq_maintain(q, &rep), 0);
    h_assert_rc(shmq_maintain(q, &rep), 0);
    pid_t live2 = h_fork(blocking_receiver, &w[2]);
    wait_asleep(live2, &w[2].ready);
    h_assert_rc(shmq_publish(q, "second", 6, NULL), 0);
    h_assert_child_ok(live2, 30000, "sleeper after maintenance uncounted the dead one");
    cr_expect_str_eq(w[2].data, "second");
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

struct opener {
    const char *qname;
    _Atomic int rc;
    _Atomic int opened;
};

static int open_and_hold(void *arg)
{
    struct opener *o = arg;
    shmq_t *q;
    int rc = shmq_open(o->qname, &q);
    atomic_store(&o->rc, rc);
    atomic_store(&o->opened, 1);
    if (rc != 0)
        return 0;
    for (;;)
        pause(); /* holds its registry entry until killed */
}

static int open_in_child_rc(const char *name)
{
    struct opener *o = h_shared_alloc(sizeof *o);
    o->qname = name;
    o->rc = 1;
    pid_t pid = h_fork(open_and_hold, o);
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(&o->opened) && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert(atomic_load(&o->opened), "opener did not finish shmq_open");
    int rc = o->rc;
    kill(pid, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(pid, 30000, 0, &st), 0);
    munmap(o, sizeof *o);
    return rc;
}

Test(multiproc, full_registry_eusers_and_dead_entries_reused)
{
    const char *name = h_qname("registry");
    shmq_config_t cfg = h_small_config(8, 64, 2);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0); /* entry 1 */
    struct opener *o = h_shared_alloc(sizeof *o);
    o->qname = name;
    o->rc = 1;
    pid_t holder = h_fork(open_and_hold, o); /* entry 2 */
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(&o->opened) && h_now_ms() < end)
        h_sleep_ms(1);
    h_assert_rc(o->rc, 0);
    /* A third process finds the registry full. */
    h_assert_rc(open_in_child_rc(name), -EUSERS);
    /* The holder dies without closing: maintenance frees its entry for the next process. */
    kill(holder, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(holder, 30000, 0, &st), 0);
    int rc = -EUSERS;
    end = h_now_ms() + 30000;
    while (h_now_ms() < end) {
        shmq_maintain(q, NULL);
        rc = open_in_child_rc(name);
        if (rc != -EUSERS)
            break;
        shmq_maintain(q, NULL);
    }
    h_assert_rc(rc, 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- a consumer killed in mid-stream ------------------------------------------------------ */

struct midstream {
    const char *qname;
    uint32_t total;
    int64_t deadline_ms;
    _Atomic uint32_t distinct; /* messages seen at least once */
    _Atomic uint32_t corrupt;
    _Atomic int publish_failed;
    _Atomic uint32_t counts[];
};

static int ms_producer(void *arg)
{
    struct midstream *ms = arg;
    shmq_t *q;
    if (shmq_open(ms->qname, &q) != 0)
        return 10;
    struct wire w;
    for (uint32_t seq = 0; seq < ms->total; seq++) {
        fill_payload(&w, 0, seq);
        int rc;
        while ((rc = shmq_publish_timed(q, &w, offsetof(struct wire, payload) + w.len, NULL,
                                        200)) == -ETIMEDOUT)
            if (h_now_ms() > ms->deadline_ms)
                break;
        if (rc != 0) {
            atomic_store(&ms->publish_failed, rc);
            return 11;
        }
    }
    shmq_close(q);
    return 0;
}

static int ms_consumer(void *arg)
{
    struct midstream *ms = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(ms->qname, &q) != 0 || shmq_consumer_open(q, "ms", &c) != 0)
        return 20;
    while (atomic_load(&ms->distinct) < ms->total && h_now_ms() < ms->deadline_ms) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 50);
        if (rc == -ETIMEDOUT || rc == -EAGAIN)
            continue;
        if (rc != 0)
            return 21;
        const struct wire *w = m.data;
        size_t hdr = offsetof(struct wire, payload);
        if (m.len < hdr || m.len != hdr + w->len || w->seq >= ms->total ||
            (h_fnv1a(w->payload, w->len) ^ w->producer ^ (w->seq * 2654435761u)) != w->csum) {
            atomic_fetch_add(&ms->corrupt, 1);
        } else if (atomic_fetch_add(&ms->counts[w->seq], 1) == 0) {
            atomic_fetch_add(&ms->distinct, 1);
        }
        shmq_ack(c, &m); /* may be -ESTALE for a redelivered message: fine */
    }
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(multiproc, consumer_killed_midstream_loses_nothing)
{
    /* Two consumers; one is SIGKILLed after a third of the stream. Every message is still
     * delivered (at least once), and at most the one it held in flight is delivered twice. */
    const char *name = h_qname("midstream");
    shmq_config_t cfg = h_small_config(64, sizeof(struct wire), 16);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    const uint32_t total = 20000;
    struct midstream *ms = h_shared_alloc(sizeof *ms + total * sizeof(ms->counts[0]));
    ms->qname = name;
    ms->total = total;
    ms->deadline_ms = h_now_ms() + RUN_BOUND_MS;
    pid_t victim = h_fork(ms_consumer, ms);
    pid_t survivor = h_fork(ms_consumer, ms);
    pid_t prod = h_fork(ms_producer, ms);
    int64_t end = h_now_ms() + 10000;
    while (atomic_load(&ms->distinct) < total / 3 && h_now_ms() < end)
        h_sleep_ms(1);
    kill(victim, SIGKILL);
    int st;
    cr_assert_eq(h_waitpid(victim, 30000, 0, &st), 0);
    /* Maintenance (as a watchdog would run it) until the survivor has seen everything. */
    while (atomic_load(&ms->distinct) < total && h_now_ms() < ms->deadline_ms) {
        shmq_maintain(q, NULL);
        h_sleep_ms(20);
    }
    h_assert_child_ok(prod, 30000, "producer");
    h_assert_child_ok(survivor, 30000, "surviving consumer");
    cr_expect_eq(ms->publish_failed, 0);
    cr_expect_eq(ms->corrupt, 0u, "corrupted messages");
    uint32_t lost = 0, dups = 0, first_lost = UINT32_MAX;
    for (uint32_t i = 0; i < total; i++) {
        if (ms->counts[i] == 0 && lost++ == 0)
            first_lost = i;
        if (ms->counts[i] > 1)
            dups += ms->counts[i] - 1;
    }
    cr_expect_eq(lost, 0u, "%u messages lost (first seq %u)", lost, first_lost);
    cr_expect(dups <= 1, "%u duplicate deliveries (the victim held at most one message)", dups);
    shmq_stats_t sts;
    h_assert_rc(shmq_stats(q, &sts), 0);
    cr_expect_eq(sts.published, total);
    cr_expect_eq(sts.ready + sts.inflight + sts.reserved, 0u);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
