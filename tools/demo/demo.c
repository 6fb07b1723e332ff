/*
 * demo.c - the whole story of shmq in one run: producers, consumers and a watchdog as
 * processes; one consumer SIGKILLed mid-message, another SIGSTOPped (its late ack fenced), a
 * poison message retried with backoff into the dead-letter ring, and a closing count.
 *
 * Usage: shmq-demo [--messages N]   (the README's first command runs it through tools/demo)
 */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq/shmq.h"

#define PRODUCERS 2
#define CONSUMERS 3
#define MAX_MSGS 100000

/* Shared between the demo's processes (MAP_SHARED|MAP_ANONYMOUS), indexed by message id. */
struct board {
    _Atomic uint32_t acked[MAX_MSGS + 8];     /* successful acks per id */
    _Atomic uint32_t delivered[MAX_MSGS + 8]; /* deliveries per id */
    _Atomic uint64_t published;               /* publishes that returned success */
    _Atomic uint64_t poison_id;
    _Atomic int holding[CONSUMERS];           /* consumer i is inside a slow handler */
    _Atomic int stale_acks;                   /* acks refused with -ESTALE */
    _Atomic int stop;
};

static struct board *board;
static char queue[64];

static void say(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *who, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    printf("%-10s %s\n", who, line);
    fflush(stdout);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void producer(int n, int count)
{
    shmq_t *q;
    if (shmq_open(queue, &q) != 0)
        _exit(1);
    char buf[64];
    for (int i = 0; i < count; i++) {
        int len = snprintf(buf, sizeof(buf), "order %d from producer %d", i, n);
        uint64_t id;
        if (shmq_publish_timed(q, buf, (size_t)len, &id, 5000) == 0)
            atomic_fetch_add(&board->published, 1);
        if (i % 64 == 0)
            sleep_ms(1); /* a steady stream, not a burst */
    }
    if (n == 0) {
        uint64_t id;
        if (shmq_publish_timed(q, "POISON", 6, &id, 5000) == 0) {
            atomic_store(&board->poison_id, id);
            atomic_fetch_add(&board->published, 1);
            say("producer", "published a poison message, id %llu", (unsigned long long)id);
        }
    }
    shmq_close(q);
    _exit(0);
}

/* Consumer n; slow_at: the delivery number at which it enters a slow handler (0: never). */
static void consumer(int n, int slow_at)
{
    shmq_t *q;
    shmq_consumer_t *c;
    char name[32];
    snprintf(name, sizeof(name), "consumer-%d", n);
    if (shmq_open(queue, &q) != 0 || shmq_consumer_open(q, name, &c) != 0)
        _exit(1);
    int got = 0;
    while (!atomic_load(&board->stop)) {
        shmq_msg_t m;
        int r = shmq_receive(c, &m, 100);
        if (r == -ETIMEDOUT || r == -EAGAIN)
            continue;
        if (r == -ESTALE) {
            say(name, "receive: %s: closing and reopening", shmq_strerror(r));
            shmq_consumer_close(c);
            if (shmq_consumer_open(q, name, &c) != 0)
                _exit(1);
            continue;
        }
        if (r != 0)
            break;
        if (m.id < MAX_MSGS)
            atomic_fetch_add(&board->delivered[m.id], 1);
        if (m.len == 6 && memcmp(m.data, "POISON", 6) == 0) {
            say(name, "poison id %llu, attempt %u: nack (backoff)", (unsigned long long)m.id,
                m.attempt);
            shmq_nack(c, &m, 0);
            continue;
        }
        if (++got == slow_at) {
            say(name, "slow handler for id %llu (%.*s)", (unsigned long long)m.id, (int)m.len,
                (const char *)m.data);
            atomic_store(&board->holding[n], 1);
            while (atomic_load(&board->holding[n]) == 1)
                sleep_ms(1); /* the parent kills or stops us here */
        }
        r = shmq_ack(c, &m);
        if (r == 0 && m.id < MAX_MSGS) {
            atomic_fetch_add(&board->acked[m.id], 1);
        } else if (r == -ESTALE) {
            atomic_fetch_add(&board->stale_acks, 1);
            say(name, "late ack of id %llu refused: %s", (unsigned long long)m.id,
                shmq_strerror(r));
        }
    }
    shmq_consumer_close(c);
    shmq_close(q);
    _exit(0);
}

static pid_t spawn_watchdog(const char *self)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s", self);
    char *slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, sizeof(path) - (size_t)(slash ? slash + 1 - path : 0),
             "shmq-watchdog");
    pid_t pid = fork();
    if (pid == 0) {
        execl(path, "shmq-watchdog", "--interval-ms", "5", queue, (char *)NULL);
        perror(path);
        _exit(127);
    }
    return pid;
}

static void wait_holding(int n)
{
    for (int i = 0; i < 5000 && atomic_load(&board->holding[n]) != 1; i++)
        sleep_ms(1);
}

int main(int argc, char **argv)
{
    int per_producer = 2000;
    if (argc == 3 && strcmp(argv[1], "--messages") == 0)
        per_producer = atoi(argv[2]) / PRODUCERS;
    if (per_producer < 10 || per_producer * PRODUCERS > MAX_MSGS - 10) {
        fprintf(stderr, "usage: shmq-demo [--messages N]  (20 <= N <= %d)\n", MAX_MSGS - 10);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    board = mmap(NULL, sizeof(*board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (board == MAP_FAILED)
        return 1;
    snprintf(queue, sizeof(queue), "demo-%d", (int)getpid());

    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 256;
    cfg.max_msg_size = 64;
    cfg.heartbeat_timeout_ms = 300;
    cfg.ack_deadline_ms = 5000;
    cfg.max_attempts = 4;
    cfg.backoff_base_ms = 50;
    cfg.backoff_cap_ms = 400;
    shmq_t *q;
    int r = shmq_create(queue, &cfg, &q);
    if (r != 0) {
        fprintf(stderr, "shmq_create %s: %s\n", queue, shmq_strerror(r));
        return 1;
    }
    say("demo", "queue %s: capacity %u, heartbeat timeout %u ms, max attempts %u", queue,
        cfg.capacity, cfg.heartbeat_timeout_ms, cfg.max_attempts);
    pid_t wd = spawn_watchdog(argv[0]);
    sleep_ms(100);

    pid_t cons[CONSUMERS], prod[PRODUCERS];
    for (int i = 0; i < CONSUMERS; i++)
        if ((cons[i] = fork()) == 0)
            consumer(i, i == 0 ? 50 : i == 1 ? 80 : 0);
    for (int i = 0; i < PRODUCERS; i++)
        if ((prod[i] = fork()) == 0)
            producer(i, per_producer);

    wait_holding(0);
    say("demo", "SIGKILL consumer-0 (pid %d) in the middle of a message", (int)cons[0]);
    kill(cons[0], SIGKILL);
    waitpid(cons[0], NULL, 0);

    wait_holding(1);
    say("demo", "SIGSTOP consumer-1 (pid %d) in the middle of a message", (int)cons[1]);
    kill(cons[1], SIGSTOP);
    atomic_store(&board->holding[1], 2); /* when it runs again, it acks */
    sleep_ms(3 * cfg.heartbeat_timeout_ms + 200);
    say("demo", "SIGCONT consumer-1: it was declared hung, its ack comes too late");
    kill(cons[1], SIGCONT);

    for (int i = 0; i < PRODUCERS; i++)
        waitpid(prod[i], NULL, 0);
    /* wait until every published message is acked or dead-lettered (bounded) */
    uint64_t total = atomic_load(&board->published);
    for (int t = 0; t < 20000; t++) {
        shmq_stats_t st;
        shmq_stats(q, &st);
        if (st.ready == 0 && st.inflight == 0 && st.delayed == 0 && st.reserved == 0)
            break;
        sleep_ms(1);
    }
    atomic_store(&board->stop, 1);
    for (int i = 1; i < CONSUMERS; i++)
        waitpid(cons[i], NULL, 0);

    shmq_dead_letter_t dl[4];
    size_t ndead = 0;
    shmq_dlq_list(q, dl, 4, &ndead);
    for (size_t i = 0; i < ndead; i++)
        say("demo", "dead letter: id %llu after %u attempts: %.*s", (unsigned long long)dl[i].id,
            dl[i].attempt, (int)dl[i].len, (const char *)dl[i].data);

    uint64_t delivered = 0, redelivered = 0, lost = 0, poison = atomic_load(&board->poison_id);
    for (uint64_t id = 1; id <= total && id < MAX_MSGS; id++) {
        uint32_t d = atomic_load(&board->delivered[id]);
        delivered += d;
        redelivered += d > 1 ? d - 1 : 0;
        if (id != poison && atomic_load(&board->acked[id]) == 0)
            lost++;
    }
    kill(wd, SIGTERM);
    waitpid(wd, NULL, 0);
    printf("\npublished=%llu delivered=%llu redelivered=%llu dead_lettered=%zu stale_acks=%d "
           "lost=%llu\n",
           (unsigned long long)total, (unsigned long long)delivered,
           (unsigned long long)redelivered, ndead, atomic_load(&board->stale_acks),
           (unsigned long long)lost);
    shmq_close(q);
    shmq_unlink(queue);
    return lost == 0 && ndead == 1 ? 0 : 1;
}
