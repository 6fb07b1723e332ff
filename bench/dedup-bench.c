/*
 * dedup-bench.c - the cost of dedup keys on publish: publish + receive(poll) + ack in one
 * process, with shmq_publish() and with shmq_publish_dedup() (a distinct 16-byte key per
 * message), for durability none and process.
 *
 *   dedup-bench [-n N] [-r RUNS] [-s SIZE] [-w WINDOW_COUNT]
 *     N messages per run (default 200000), RUNS runs of each case (5), SIZE payload bytes (64),
 *     WINDOW_COUNT the queue's dedup_window_count (default 4096, the library's default).
 *
 * Cases, for each durability: "plain-nowin" shmq_publish on a queue without a window
 * (dedup_window_count 0), "plain" shmq_publish on a queue with the window, "keyed"
 * shmq_publish_dedup with distinct keys (a flood: the window is full and evicts after the first
 * WINDOW_COUNT keys, its steady state). Every run makes a fresh queue (capacity 1024) and times
 * N iterations after a warm-up of 2048 (slots and log touched once). The runs are interleaved
 * (run 1 of every case, then run 2, ...) so that noise falls on all alike. Printed: the median
 * (min, max) ns per message and msgs/s of each case, and per durability the ratio of the
 * keyed median throughput to the plain one (and plain to plain-nowin).
 * The log (process) goes to $SHMQ_STATE_DIR if set, else a directory under /tmp. Exit status 2
 * when a call fails.
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

enum { C_NOWIN, C_PLAIN, C_KEYED, C_COUNT };
static const char *const case_names[C_COUNT] = {"plain-nowin", "plain", "keyed"};
static const char *const dur_names[2] = {"none", "process"};
#define MAX_RUNS 64

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "dedup-bench: %s: %s\n", what, shmq_strerror(rc));
    exit(2);
}

static uint64_t key_counter;

/* A distinct 16-byte key per call (hex of a counter). */
static void next_key(char key[16])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t k = ++key_counter;
    for (int i = 15; i >= 0; i--, k >>= 4)
        key[i] = hex[k & 15];
}

static void one(shmq_t *q, shmq_consumer_t *c, int keyed, const unsigned char *msg, size_t size)
{
    int rc;
    if (keyed) {
        char key[16];
        next_key(key);
        rc = shmq_publish_dedup(q, msg, size, key, sizeof key, NULL);
    } else {
        rc = shmq_publish(q, msg, size, NULL);
    }
    if (rc)
        fail(keyed ? "publish_dedup" : "publish", rc);
    shmq_msg_t m;
    if ((rc = shmq_receive(c, &m, 0)) != 0)
        fail("receive", rc);
    if ((rc = shmq_ack(c, &m)) != 0)
        fail("ack", rc);
}

/* One run: ns per message. */
static double run(int cs, int dur, uint64_t n, size_t size, uint32_t window, const char *log_dir)
{
    char name[64];
    snprintf(name, sizeof name, "dedup-bench-%d", (int)getpid());
    shmq_unlink(name);
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 1024;
    cfg.max_msg_size = (uint32_t)(size > 64 ? size : 64);
    cfg.durability = dur ? SHMQ_DURABILITY_PROCESS : SHMQ_DURABILITY_NONE;
    cfg.log_dir = log_dir;
    cfg.dedup_window_count = cs == C_NOWIN ? 0 : window;
    shmq_t *q;
    shmq_consumer_t *c;
    int rc = shmq_create(name, &cfg, &q);
    if (rc)
        fail("create", rc);
    if ((rc = shmq_consumer_open(q, "bench", &c)) != 0)
        fail("consumer_open", rc);
    unsigned char msg[4096];
    memset(msg, 0x5a, sizeof msg);
    for (int i = 0; i < 2048; i++)
        one(q, c, cs == C_KEYED, msg, size);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof i);
        one(q, c, cs == C_KEYED, msg, size);
    }
    uint64_t t1 = now_ns();
    shmq_stats_t st;
    shmq_stats(q, &st);
    if (st.dedup_hits)
        fail("distinct keys were answered as duplicates", -EPROTO);
    shmq_consumer_close(c);
    shmq_close(q);
    shmq_unlink(name);
    return (double)(t1 - t0) / (double)n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t n = 200000;
    int runs = 5;
    size_t size = 64;
    uint32_t window = 4096;
    int opt;
    while ((opt = getopt(argc, argv, "n:r:s:w:")) != -1) {
        switch (opt) {
        case 'n': n = strtoull(optarg, NULL, 10); break;
        case 'r': runs = atoi(optarg); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        case 'w': window = (uint32_t)strtoul(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: dedup-bench [-n N] [-r RUNS] [-s SIZE] [-w WINDOW_COUNT]\n");
            return 1;
        }
    }
    if (runs < 1 || runs > MAX_RUNS || n == 0 || size > 4096 || window == 0) {
        fprintf(stderr, "dedup-bench: bad arguments\n");
        return 1;
    }
    char tmpdir[64] = "";
    const char *log_dir = getenv("SHMQ_STATE_DIR");
    if (!log_dir) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/dedup-bench-%d", (int)getpid());
        log_dir = tmpdir;
    }
    static double ns[2][C_COUNT][MAX_RUNS];
    for (int r = 0; r < runs; r++)
        for (int d = 0; d < 2; d++)
            for (int cs = 0; cs < C_COUNT; cs++)
                ns[d][cs][r] = run(cs, d, n, size, window, log_dir);
    if (tmpdir[0])
        rmdir(tmpdir);

    printf("dedup-bench: %llu x publish(%zu B) + receive + ack in one process, %d runs each "
           "(interleaved), window %u keys, 16-byte distinct keys\n",
           (unsigned long long)n, size, runs, window);
    printf("%-8s %-12s %10s %10s %10s %12s\n", "durab.", "case", "median ns", "min ns", "max ns",
           "median msg/s");
    double med[2][C_COUNT];
    for (int d = 0; d < 2; d++)
        for (int cs = 0; cs < C_COUNT; cs++) {
            double v[MAX_RUNS];
            memcpy(v, ns[d][cs], sizeof(double) * (size_t)runs);
            qsort(v, (size_t)runs, sizeof(double), cmp_double);
            med[d][cs] = runs % 2 ? v[runs / 2] : (v[runs / 2 - 1] + v[runs / 2]) / 2;
            printf("%-8s %-12s %10.1f %10.1f %10.1f %12.0f\n", dur_names[d], case_names[cs],
                   med[d][cs], v[0], v[runs - 1], 1e9 / med[d][cs]);
        }
    for (int d = 0; d < 2; d++)
        printf("%-8s throughput keyed/plain %.3f (cost of a key: %+.1f ns/msg)   "
               "plain/plain-nowin %.3f\n",
               dur_names[d], med[d][C_PLAIN] / med[d][C_KEYED],
               med[d][C_KEYED] - med[d][C_PLAIN], med[d][C_NOWIN] / med[d][C_PLAIN]);
    return 0;
}
