/*
 * test_cancel.c - thread cancellation (include/shmq/shmq.h, "Threads and cancellation";
 * src/nocancel.h): a shmq call never acts on a cancellation request inside itself, where it
 * may hold a lock, a descriptor or a section, except asleep in a blocking wait (a receive or a
 * timed publish), which is a cancellation point and undoes its sleep's counts.
 */
#include "helpers.h"

#include <pthread.h>
#include <sys/syscall.h>

#include "crashpoint.h"
#include "queue.h"

TestSuite(cancel, .fini = h_cleanup, .timeout = 240);

#ifdef SHMQ_CRASH_POINTS
static shmq_t *tq;
static shmq_consumer_t *tc;
static _Atomic int published, tid;

/* ASan leaves the scopes a cancelled thread unwinds through poisoned and reports its own teardown
 * of that thread (see test_walmap.c): these tests run in build/test. */
#if defined(__SANITIZE_ADDRESS__)
#define SKIP_UNDER_ASAN() cr_skip_test("pthread_cancel under ASan: a false report from its teardown")
#else
#define SKIP_UNDER_ASAN() ((void)0)
#endif

/* Join th within s seconds: its exit value. */
static void *join_within(pthread_t th, int s, const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += s;
    void *ret = NULL;
    int err = pthread_timedjoin_np(th, &ret, &ts);
    cr_assert_eq(err, 0, "%s did not end within %d s (%s)", what, s, strerror(err));
    return ret;
}

/* Publish, receive and ack until cancelled: the cancellation acts only at the loop's own
 * cancellation point, after a shmq call returned. */
static void *mover(void *arg)
{
    (void)arg;
    uint8_t payload[1000];
    memset(payload, 5, sizeof payload);
    for (;;) {
        if (shmq_publish(tq, payload, sizeof payload, NULL) == 0) {
            atomic_fetch_add(&published, 1);
            shmq_msg_t m;
            if (shmq_receive(tc, &m, 0) == 0)
                shmq_ack(tc, &m);
        }
        pthread_testcancel();
    }
    return NULL;
}

static _Atomic bool moved;

static void *move_on(void *arg)
{
    (void)arg;
    uint8_t payload[1000];
    memset(payload, 6, sizeof payload);
    for (int i = 0; i < 3 * 58; i++) { /* 58 records of 1000 bytes fill a 64 KiB file */
        if (shmq_publish(tq, payload, sizeof payload, NULL) != 0)
            return (void *)1;
        shmq_msg_t m;
        if (shmq_receive(tc, &m, 0) != 0 || shmq_ack(tc, &m) != 0)
            return (void *)2;
    }
    atomic_store(&moved, true);
    return NULL;
}

/*
 * A thread cancelled while its publish makes a log file (wal.c map_file, under the process's log
 * cache lock; the request arrives while it is paused at make_file_before_create, and openat,
 * the next call there, is a cancellation point): it must finish the publish and end at its own
 * cancellation point after it. Cancelled inside, it left the lock held and every later cache
 * miss of the process deadlocked: the next publishes that need a new file never return.
 */
Test(cancel, a_publish_cancelled_while_it_makes_a_log_file_finishes_and_holds_nothing)
{
    SKIP_UNDER_ASAN();
    const char *name = h_qname("cancelmap");
    shmq_config_t cfg = h_log_config(512);
    cfg.max_msg_size = 1024;
    h_assert_rc(shmq_create(name, &cfg, &tq), 0);
    h_assert_rc(shmq_consumer_open(tq, "c", &tc), 0);
    crashpoint_park_at("make_file_before_create");
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, mover, NULL), 0);
    int64_t end = h_now_ms() + 30000;
    while (!crashpoint_parked()) {
        cr_assert_lt(h_now_ms(), end, "the publisher made no log file (%d published)",
                     atomic_load(&published));
        h_sleep_ms(1);
    }
    int before = atomic_load(&published);
    cr_assert_eq(pthread_cancel(th), 0);
    crashpoint_unpark();
    cr_assert_eq(join_within(th, 30, "the cancelled publisher"), PTHREAD_CANCELED);
    cr_assert_eq(atomic_load(&published), before + 1, "the cancelled publish did not finish");
    /* the log moves on through new files: no lock was left held */
    pthread_t mv;
    cr_assert_eq(pthread_create(&mv, NULL, move_on, NULL), 0);
    end = h_now_ms() + 30000;
    while (!atomic_load(&moved) && h_now_ms() < end)
        h_sleep_ms(1);
    cr_assert(atomic_load(&moved), "publishes that need a new log file hang: a lock was left "
                                   "held by the cancelled thread");
    cr_assert_null(join_within(mv, 30, "the publisher after it"));
    h_assert_rc(shmq_consumer_close(tc), 0);
    h_assert_rc(shmq_close(tq), 0);
}

/* The state letter of thread t of this process (/proc/self/task/T/stat), or 0. */
static char thread_state(int t)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", t);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

static void *receiver(void *arg)
{
    (void)arg;
    atomic_store(&tid, (int)syscall(SYS_gettid));
    shmq_msg_t m;
    int rc = shmq_receive(tc, &m, -1); /* an empty queue: asleep until cancelled */
    return (void *)(intptr_t)(rc == 0 ? 1 : 2);
}

/*
 * A receive asleep on an empty queue (timeout -1) is a cancellation point: cancelled, its
 * thread ends at once (bound: 10 s; it sleeps 20 s at a time, a third of the heartbeat timeout:
 * before, the request waited for that wake-up and then acted at whatever cancellation point the
 * receive reached next, a /proc read of a liveness check, a maintenance file call), and its
 * sleep's counts are undone: the consumer receives and acks as before.
 */
Test(cancel, a_receive_asleep_is_a_cancellation_point)
{
    SKIP_UNDER_ASAN();
    const char *name = h_qname("cancelrecv");
    shmq_config_t cfg = h_small_config(64, 64, 64);
    cfg.heartbeat_timeout_ms = 60000; /* a blocked receive sleeps 20 s at a time */
    h_assert_rc(shmq_create(name, &cfg, &tq), 0);
    h_assert_rc(shmq_consumer_open(tq, "c", &tc), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, receiver, NULL), 0);
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(&tid) || thread_state(atomic_load(&tid)) != 'S') {
        cr_assert_lt(h_now_ms(), end, "the receiver did not go to sleep");
        h_sleep_ms(1);
    }
    cr_assert_eq(pthread_cancel(th), 0);
    cr_assert_eq(join_within(th, 10, "the cancelled receive"), PTHREAD_CANCELED);
    struct seg_header *h = tq->seg.hdr;
    cr_assert_eq(atomic_load(&h->ready_waiters), 0, "the cancelled sleeper is still counted");
    cr_assert_eq(atomic_load(&segment_proc(&tq->seg, tc->self)->sleeping), 0,
                 "the cancelled sleeper is still marked in its entry");
    h_assert_rc(shmq_publish(tq, "after", 5, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(tc, &m, 1000), 0);
    cr_assert(m.len == 5 && memcmp(m.data, "after", 5) == 0);
    h_assert_rc(shmq_ack(tc, &m), 0);
    h_assert_rc(shmq_consumer_close(tc), 0);
    h_assert_rc(shmq_close(tq), 0);
}

static void *timed_publisher(void *arg)
{
    (void)arg;
    atomic_store(&tid, (int)syscall(SYS_gettid));
    int rc = shmq_publish_timed(tq, "late", 4, NULL, -1); /* a full queue: asleep */
    return (void *)(intptr_t)(rc == 0 ? 1 : 2);
}

/*
 * A timed publish asleep on a full queue is a cancellation point too (it sleeps 100 ms at a
 * time and its tries make no call that is one: before, it was never cancelled), and takes no
 * slot: once a message is taken out, a publish gets the slot.
 */
Test(cancel, a_timed_publish_asleep_is_a_cancellation_point)
{
    SKIP_UNDER_ASAN();
    const char *name = h_qname("cancelpub");
    shmq_config_t cfg = h_small_config(4, 64, 64);
    h_assert_rc(shmq_create(name, &cfg, &tq), 0);
    h_assert_rc(shmq_consumer_open(tq, "c", &tc), 0);
    for (int i = 0; i < 4; i++)
        h_assert_rc(shmq_publish(tq, "full", 4, NULL), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, timed_publisher, NULL), 0);
    int64_t end = h_now_ms() + 30000;
    while (!atomic_load(&tid) || thread_state(atomic_load(&tid)) != 'S') {
        cr_assert_lt(h_now_ms(), end, "the publisher did not go to sleep");
        h_sleep_ms(1);
    }
    cr_assert_eq(pthread_cancel(th), 0);
    cr_assert_eq(join_within(th, 10, "the cancelled timed publish"), PTHREAD_CANCELED);
    cr_assert_eq(atomic_load(&tq->seg.hdr->free_waiters), 0, "the cancelled sleeper is counted");
    cr_assert_eq(atomic_load(&q_self(tq)->sleeping), 0, "the cancelled sleeper is marked");
    shmq_msg_t m;
    h_assert_rc(shmq_receive(tc, &m, 0), 0);
    h_assert_rc(shmq_ack(tc, &m), 0);
    h_assert_rc(shmq_publish(tq, "after", 5, NULL), 0);
    h_assert_rc(shmq_consumer_close(tc), 0);
    h_assert_rc(shmq_close(tq), 0);
}
#endif
