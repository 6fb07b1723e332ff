/*
 * instr.c - per-message cost of publish(64 B) -> receive(poll) -> ack in one process.
 *
 * Meant to run under valgrind --tool=callgrind, which counts instructions where the test
 * machines have no hardware counters. Run it with two iteration counts N1 < N2 and take
 * (Ir(N2) - Ir(N1)) / (N2 - N1): the set-up (dynamic loader, shmq_create, the first touch of
 * every slot) is the same in both runs and cancels out. bench/first-figures does this.
 *
 *   instr [-b] [-s size] [-q capacity] N
 *     -b  baseline: the same loop with the queue replaced by a memcpy of the payload into a
 *         ring of plain buffers and a read of it back, through non-inlined calls. It is the
 *         floor for any queue that copies the payload in and hands a pointer out.
 *
 * Without valgrind it also prints the wall-clock ns per message (one core, no contention: a
 * lower bound of the latency of the three calls, not a throughput figure).
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
    for (uint64_t i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof(i));
        void *slot = base_publish(msg, size, i);
        sink += base_consume(slot);
    }
    return 0;
}

static int run_queue(uint64_t n, size_t size, uint32_t capacity)
{
    char name[SHMQ_NAME_MAX];
    snprintf(name, sizeof(name), "bench-instr.%d.%llx", (int)getpid(),
             (unsigned long long)now_ns());
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.max_msg_size = (uint32_t)size;
    shmq_t *q = NULL;
    shmq_consumer_t *c = NULL;
    int status = 2;
    int rc = shmq_create(name, &cfg, &q);
    if (rc) {
        fprintf(stderr, "instr: shmq_create: %s (%d)\n", shmq_strerror(rc), rc);
        return 2;
    }
    rc = shmq_consumer_open(q, "instr", &c);
    if (rc) {
        fprintf(stderr, "instr: shmq_consumer_open: %s (%d)\n", shmq_strerror(rc), rc);
        goto out_close;
    }

    unsigned char msg[1024];
    memset(msg, 0x5a, sizeof(msg));
    for (uint64_t i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof(i));
        rc = shmq_publish(q, msg, size, NULL);
        if (rc) {
            fprintf(stderr, "instr: iteration %llu: shmq_publish: %s (%d)\n",
                    (unsigned long long)i, shmq_strerror(rc), rc);
            goto out_consumer;
        }
        shmq_msg_t m;
        rc = shmq_receive(c, &m, 0);
        if (rc) {
            fprintf(stderr, "instr: iteration %llu: shmq_receive: %s (%d)\n",
                    (unsigned long long)i, shmq_strerror(rc), rc);
            goto out_consumer;
        }
        uint64_t got;
        memcpy(&got, m.data, sizeof(got));
        if (m.len != size || got != i) {
            fprintf(stderr, "instr: iteration %llu: got len %zu seq %llu\n",
                    (unsigned long long)i, m.len, (unsigned long long)got);
            goto out_consumer;
        }
        sink += got;
        rc = shmq_ack(c, &m);
        if (rc) {
            fprintf(stderr, "instr: iteration %llu: shmq_ack: %s (%d)\n",
                    (unsigned long long)i, shmq_strerror(rc), rc);
            goto out_consumer;
        }
    }
    status = 0;
out_consumer:
    rc = shmq_consumer_close(c);
    if (rc) {
        fprintf(stderr, "instr: shmq_consumer_close: %s (%d)\n", shmq_strerror(rc), rc);
        status = 2;
    }
out_close:
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
    unsigned long size = 64, capacity = 1024;
    while ((ch = getopt(argc, argv, "bs:q:")) != -1) {
        switch (ch) {
        case 'b': baseline = 1; break;
        case 's': size = strtoul(optarg, NULL, 0); break;
        case 'q': capacity = strtoul(optarg, NULL, 0); break;
        default: goto usage;
        }
    }
    if (optind + 1 != argc || size < 8 || size > 1024 || capacity < 1)
        goto usage;
    uint64_t n = strtoull(argv[optind], NULL, 0);

    uint64_t t0 = now_ns();
    int status = baseline ? run_baseline(n, size) : run_queue(n, size, (uint32_t)capacity);
    uint64_t t1 = now_ns();
    if (status == 0)
        printf("{\"bench\":\"instr\",\"baseline\":%s,\"size\":%lu,\"iters\":%llu,"
               "\"seconds\":%.6f,\"ns_per_msg_wall\":%.1f}\n",
               baseline ? "true" : "false", size, (unsigned long long)n, (t1 - t0) / 1e9,
               n ? (double)(t1 - t0) / (double)n : 0.0);
    return status;

usage:
    fprintf(stderr, "usage: %s [-b] [-s size(8..1024)] [-q capacity] iterations\n", argv[0]);
    return 2;
}
