/*
 * instr.c - per-message cost of publish(64 B) -> receive(poll) -> ack in one process.
 *
 * Meant to run under valgrind --tool=callgrind, which counts instructions where the test
 * machines have no hardware counters. Run it with two iteration counts N1 < N2 and take
 * (Ir(N2) - Ir(N1)) / (N2 - N1): the set-up (dynamic loader, shmq_create, the first touch of
 * every slot) is the same in both runs and cancels out. bench/first-figures does this.
 *
 *   instr [-b|-e|-f] [-B batch] [-s size] [-q capacity] [-d none|process|sync] N
 *     -d  the queue's durability (default: the library's, PROCESS: a log record per publish
 *         and per ack, written into an mmap'd file)
 *     -b  baseline: the same loop with the queue replaced by a memcpy of the payload into a
 *         ring of plain buffers and a read of it back, through non-inlined calls. It is the
 *         floor for any queue that copies the payload in and hands a pointer out.
 *     -e  empty poll: one message through the queue (as a busy consumer would have just taken
 *         one), then N calls of receive(.., 0) on the empty queue (each must be -EAGAIN): what
 *         a busy-polling consumer spends, and writes to shared lines, while it waits. The SCQ
 *         ring takes a slower path for the first ~3 x capacity failed polls after an enqueue
 *         (its threshold): keep N1, N2 below that to measure that path, far above for the other.
 *     -f  full queue: fill the queue, then N calls of publish() that must fail with -EAGAIN:
 *         what a producer spends while it waits for a free slot.
 *     -B  batches: the loop moves its N messages (N rounded down to a multiple of batch) with
 *         shmq_publish_batch -> shmq_receive_batch(poll) -> shmq_ack_batch of batch messages
 *         each; the figures stay per message.
 *     -g  consumer groups (fan-out, README "Fan-out"): a queue of max_groups G with G groups
 *         ("default" and G-1 more), one consumer in each; every message is received and acked
 *         in every group. bench/groups-cost reads shmq_publish's own cost out of it.
 *
 * Without valgrind it also prints the wall-clock ns per message of the N iterations alone (one
 * core, no contention: a lower bound of the latency of the calls, not a throughput figure).
 * Exit status: 0, or 2 when a call returned an error (printed on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq/shmq.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static volatile uint64_t sink;
static uint64_t loop_t0, loop_t1; /* the timed part: the N iterations, not the set-up */
static int durability = -1;       /* SHMQ_DURABILITY_*; -1: the library's default */
static size_t batch;              /* -B: messages per batch call; 0: single calls */
static uint32_t groups = 1;       /* -g: consumer groups, each receives every message */
static const char *const durability_names[] = {"none", "process", "sync"};

/* The baseline's "queue": copy in, hand the pointer out, read it back. */
#define BASE_SLOTS 1024
static unsigned char base_ring[BASE_SLOTS][1024];

__attribute__((noinline)) static void *base_publish(const void *data, size_t len, uint64_t i)
{
    void *slot = base_ring[i % BASE_SLOTS];
    memcpy(slot, data, len);
    return slot;
}

__attribute__((noinline)) static uint64_t base_consume(const void *slot)
{
    uint64_t v;
    memcpy(&v, slot, sizeof(v));
    return v;
}

static int run_baseline(uint64_t n, size_t size)
{
    unsigned char msg[1024];
    memset(msg, 0x5a, sizeof(msg));
    loop_t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof(i));
        void *slot = base_publish(msg, size, i);
        sink += base_consume(slot);
    }
    loop_t1 = now_ns();
    return 0;
}

enum what { LOOP, EMPTY_POLL, FULL_PUBLISH };

/* -e / -f: n calls that must each fail with -EAGAIN. */
static int run_failing(shmq_t *q, shmq_consumer_t *c, enum what what, uint64_t n, size_t size,
                       uint32_t capacity)
{
    unsigned char msg[1024];
    memset(msg, 0x5a, sizeof(msg));
    int rc;
    if (what == EMPTY_POLL) {
        shmq_msg_t m;
        if ((rc = shmq_publish(q, msg, size, NULL)) != 0 || (rc = shmq_receive(c, &m, 0)) != 0 ||
            (rc = shmq_ack(c, &m)) != 0) {
            fprintf(stderr, "instr: first message: %s (%d)\n", shmq_strerror(rc), rc);
            return 2;
        }
    }
    if (what == FULL_PUBLISH) {
        for (uint32_t i = 0; i < capacity; i++) {
            if ((rc = shmq_publish(q, msg, size, NULL)) != 0) {
                fprintf(stderr, "instr: filling slot %u of %u: shmq_publish: %s (%d)\n", i,
                        capacity, shmq_strerror(rc), rc);
                return 2;
            }
        }
    }
    loop_t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        shmq_msg_t m;
        rc = what == EMPTY_POLL ? shmq_receive(c, &m, 0) : shmq_publish(q, msg, size, NULL);
        if (rc != -EAGAIN) {
            fprintf(stderr, "instr: iteration %llu: %s returned %d (%s), expected -EAGAIN\n",
                    (unsigned long long)i, what == EMPTY_POLL ? "shmq_receive" : "shmq_publish", rc,
                    shmq_strerror(rc));
            return 2;
        }
    }
    loop_t1 = now_ns();
    return 0;
}

#define BATCH_MAX 256

/* -B: n messages (rounded down to a multiple of batch) in batches: publish, receive, ack. */
static int run_batches(shmq_t *q, shmq_consumer_t *c, uint64_t n, size_t size)
{
    static unsigned char msgs[BATCH_MAX][1024];
    shmq_iov_t iov[BATCH_MAX];
    shmq_msg_t in[BATCH_MAX];
    for (size_t j = 0; j < batch; j++) {
        memset(msgs[j], 0x5a, size);
        iov[j] = (shmq_iov_t){msgs[j], size};
    }
    loop_t0 = now_ns();
    for (uint64_t i = 0; i + batch <= n; i += batch) {
        for (size_t j = 0; j < batch; j++) {
            uint64_t seq = i + j;
            memcpy(msgs[j], &seq, sizeof(seq));
        }
        size_t done = 0, got = 0;
        int rc = shmq_publish_batch(q, iov, batch, NULL, &done);
        if (rc || done != batch) {
            fprintf(stderr, "instr: message %llu: shmq_publish_batch: %s (%d), done %zu\n",
                    (unsigned long long)i, shmq_strerror(rc), rc, done);
            return 2;
        }
        rc = shmq_receive_batch(c, in, batch, &got, 0);
        if (rc || got != batch) {
            fprintf(stderr, "instr: message %llu: shmq_receive_batch: %s (%d), got %zu\n",
                    (unsigned long long)i, shmq_strerror(rc), rc, got);
            return 2;
        }
        for (size_t j = 0; j < got; j++) {
            uint64_t seq;
            memcpy(&seq, in[j].data, sizeof(seq));
            if (in[j].len != size || seq != i + j) {
                fprintf(stderr, "instr: message %llu: got len %zu seq %llu\n",
                        (unsigned long long)(i + j), in[j].len, (unsigned long long)seq);
                return 2;
            }
            sink += seq;
        }
        rc = shmq_ack_batch(c, in, got, &done);
        if (rc || done != got) {
            fprintf(stderr, "instr: message %llu: shmq_ack_batch: %s (%d), done %zu\n",
                    (unsigned long long)i, shmq_strerror(rc), rc, done);
            return 2;
        }
    }
    loop_t1 = now_ns();
    return 0;
}

static int run_queue(enum what what, uint64_t n, size_t size, uint32_t capacity)
{
    char name[SHMQ_NAME_MAX];
    snprintf(name, sizeof(name), "bench-instr.%d.%llx", (int)getpid(),
             (unsigned long long)now_ns());
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.max_msg_size = (uint32_t)size;
    if (durability >= 0)
        cfg.durability = durability;
    cfg.max_groups = groups;
    shmq_t *q = NULL, *watch = NULL;
    shmq_consumer_t *c = NULL, *gc[SHMQ_GROUPS_MAX] = {NULL};
    int status = 2;
    int rc = shmq_create(name, &cfg, &q);
    if (rc) {
        fprintf(stderr, "instr: shmq_create: %s (%d)\n", shmq_strerror(rc), rc);
        return 2;
    }
    /* A watchdog's lease, held by a second handle for the whole run, as where a watchdog
     * maintains: the consumer's cooperative passes (shmq_maintain_if_unwatched, every 1024
     * deliveries once 250 ms have passed) then stop at the lease check. Without it how many
     * passes fell inside the loop followed the wall clock, so the machine's load: +17
     * instructions per message per pass of N2 - N1 = 10000, +50 seen on a loaded machine. */
    if ((rc = shmq_open(name, &watch)) != 0 ||
        (rc = shmq_lease_acquire(watch, 24u * 3600u * 1000u, 1)) != 0) {
        fprintf(stderr, "instr: the watchdog's lease: %s (%d)\n", shmq_strerror(rc), rc);
        goto out_close;
    }
    rc = shmq_consumer_open(q, "instr", &c);
    if (rc) {
        fprintf(stderr, "instr: shmq_consumer_open: %s (%d)\n", shmq_strerror(rc), rc);
        goto out_close;
    }
    for (uint32_t g = 1; g < groups; g++) {
        char gname[16];
        snprintf(gname, sizeof(gname), "g%u", g);
        if ((rc = shmq_group_create(q, gname, SHMQ_GROUP_BLOCK, 0)) != 0 ||
            (rc = shmq_consumer_open_group(q, gname, "instr", &gc[g])) != 0) {
            fprintf(stderr, "instr: group %s: %s (%d)\n", gname, shmq_strerror(rc), rc);
            goto out_consumer;
        }
    }

    if (what != LOOP) {
        status = run_failing(q, c, what, n, size, capacity);
        goto out_consumer;
    }
    if (batch) {
        status = run_batches(q, c, n, size);
        goto out_consumer;
    }
    unsigned char msg[1024];
    memset(msg, 0x5a, sizeof(msg));
    loop_t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof(i));
        rc = shmq_publish(q, msg, size, NULL);
        if (rc) {
            fprintf(stderr, "instr: iteration %llu: shmq_publish: %s (%d)\n", (unsigned long long)i,
                    shmq_strerror(rc), rc);
            goto out_consumer;
        }
        shmq_msg_t m;
        rc = shmq_receive(c, &m, 0);
        if (rc) {
            fprintf(stderr, "instr: iteration %llu: shmq_receive: %s (%d)\n", (unsigned long long)i,
                    shmq_strerror(rc), rc);
            goto out_consumer;
        }
        uint64_t got;
        memcpy(&got, m.data, sizeof(got));
        if (m.len != size || got != i) {
            fprintf(stderr, "instr: iteration %llu: got len %zu seq %llu\n", (unsigned long long)i,
                    m.len, (unsigned long long)got);
            goto out_consumer;
        }
        sink += got;
        rc = shmq_ack(c, &m);
        if (rc) {
            fprintf(stderr, "instr: iteration %llu: shmq_ack: %s (%d)\n", (unsigned long long)i,
                    shmq_strerror(rc), rc);
            goto out_consumer;
        }
        for (uint32_t g = 1; g < groups; g++) { /* the same message in every other group */
            if ((rc = shmq_receive(gc[g], &m, 0)) != 0 || (rc = shmq_ack(gc[g], &m)) != 0) {
                fprintf(stderr, "instr: iteration %llu: group %u: %s (%d)\n",
                        (unsigned long long)i, g, shmq_strerror(rc), rc);
                goto out_consumer;
            }
        }
    }
    loop_t1 = now_ns();
    status = 0;
out_consumer:
    for (uint32_t g = 1; g < groups; g++)
        if (gc[g])
            shmq_consumer_close(gc[g]);
    /* close with messages still ready (-f) is fine: the queue is unlinked below */
    rc = shmq_consumer_close(c);
    if (rc) {
        fprintf(stderr, "instr: shmq_consumer_close: %s (%d)\n", shmq_strerror(rc), rc);
        status = 2;
    }
out_close:
    if (watch) {
        shmq_lease_release(watch);
        shmq_close(watch);
    }
    rc = shmq_close(q);
    if (rc) {
        fprintf(stderr, "instr: shmq_close: %s (%d)\n", shmq_strerror(rc), rc);
        status = 2;
    }
    shmq_unlink(name);
    return status;
}

int main(int argc, char **argv)
{
    int baseline = 0, ch;
    enum what what = LOOP;
    unsigned long size = 64, capacity = 1024;
    while ((ch = getopt(argc, argv, "befB:s:q:d:g:")) != -1) {
        switch (ch) {
        case 'd':
            durability = -2;
            for (int d = 0; d < 3; d++)
                if (!strcmp(optarg, durability_names[d]))
                    durability = d;
            if (durability == -2)
                goto usage;
            break;
        case 'b': baseline = 1; break;
        case 'e': what = EMPTY_POLL; break;
        case 'f': what = FULL_PUBLISH; break;
        case 'B': batch = strtoul(optarg, NULL, 0); break;
        case 's': size = strtoul(optarg, NULL, 0); break;
        case 'q': capacity = strtoul(optarg, NULL, 0); break;
        case 'g': groups = (uint32_t)strtoul(optarg, NULL, 0); break;
        default: goto usage;
        }
    }
    if (optind + 1 != argc || size < 8 || size > 1024 || capacity < 1 || batch > BATCH_MAX ||
        (batch && (what != LOOP || baseline || batch > capacity)) || groups < 1 ||
        groups > SHMQ_GROUPS_MAX || (groups > 1 && (what != LOOP || batch || baseline)))
        goto usage;
    uint64_t n = strtoull(argv[optind], NULL, 0);

    int status = baseline ? run_baseline(n, size) : run_queue(what, n, size, (uint32_t)capacity);
    uint64_t t0 = loop_t0, t1 = loop_t1;
    static const char *const names[] = {"loop", "empty_poll", "full_publish"};
    if (status == 0)
        printf("{\"bench\":\"instr\",\"what\":\"%s\",\"durability\":\"%s\",\"size\":%lu,"
               "\"batch\":%zu,\"iters\":%llu,\"seconds\":%.6f,\"ns_per_msg_wall\":%.1f}\n",
               baseline ? "baseline" : batch ? "batch" : names[what],
               durability >= 0 ? durability_names[durability] : "default", size, batch ? batch : 1,
               (unsigned long long)n, (t1 - t0) / 1e9, n ? (double)(t1 - t0) / (double)n : 0.0);
    return status;

usage:
    fprintf(stderr,
            "usage: %s [-b|-e|-f|-B batch(1..256, <= capacity)|-g groups(1..64)] [-s size(8..1024)] "
            "[-q capacity] iterations\n",
            argv[0]);
    return 2;
}
