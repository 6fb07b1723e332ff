/*
 * common.h - what every benchmark program under bench/ shares: clocks (CLOCK_MONOTONIC and a
 * calibrated rdtscp), pinning, a latency histogram, and a fork-based throughput harness with a
 * start barrier in an anonymous MAP_SHARED mapping. Header-only (static functions), so that each
 * program is one .c file plus this.
 *
 * Latency: a pinger (cpu 0) and an echo (cpu 1) process; the pinger times each round trip with
 * rdtscp (TSC ticks converted to ns with a ratio calibrated against CLOCK_MONOTONIC over 50 ms)
 * and adds RTT/2 to a log-linear histogram: exact below 1024 ns, 1024 sub-buckets per power of
 * two above (error < 0.1 %). Percentiles are read from the histogram; the maximum is exact.
 *
 * Throughput: lat_/tput_ helpers below; each program supplies its producer and consumer bodies.
 * The time is from the start barrier to the moment the consumers have taken every message; a
 * run that exceeds its time cap is stopped and reported with "capped":true and the rate of what
 * was taken until then (a collapse must show, not hang the suite).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H
#pragma GCC diagnostic ignored "-Wunused-function" /* each program uses a part */

#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define cpu_relax() __builtin_ia32_pause()
#define HAVE_TSC 1
#else
#define cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#define HAVE_TSC 0
#endif

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- timestamps: rdtscp where there is a TSC, else CLOCK_MONOTONIC ---- */
static double ns_per_tick = 1.0;

static inline uint64_t ticks(void)
{
#if HAVE_TSC
    unsigned aux;
    return __rdtscp(&aux);
#else
    return now_ns();
#endif
}

static void calibrate_ticks(void)
{
#if HAVE_TSC
    uint64_t t0 = now_ns(), c0 = ticks();
    while (now_ns() - t0 < 50000000ull)
        ;
    uint64_t t1 = now_ns(), c1 = ticks();
    ns_per_tick = (double)(t1 - t0) / (double)(c1 - c0);
#endif
}

/* ---- pinning: the k-th cpu (mod count) of those this process may use ---- */
static int pin_index(unsigned k)
{
    cpu_set_t allowed, set;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) == 0)
        return -1;
    unsigned want = k % (unsigned)CPU_COUNT(&allowed), seen = 0;
    int cpu = 0;
    for (; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed) && seen++ == want)
            break;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? cpu : -1;
}

/* ---- histogram of nanoseconds ---- */
#define HIST_SUB 1024u
#define HIST_BUCKETS (HIST_SUB * 40u)
struct hist {
    uint64_t n, max, sum;
    uint32_t b[HIST_BUCKETS];
};

static inline unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned i = (msb - 9u) * HIST_SUB + (unsigned)((v >> (msb - 10u)) - HIST_SUB);
    return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

static uint64_t hist_value(unsigned i) /* the lower bound of bucket i */
{
    if (i < HIST_SUB)
        return i;
    unsigned msb = i / HIST_SUB + 9u;
    return (uint64_t)(HIST_SUB + i % HIST_SUB) << (msb - 10u);
}

static inline void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    uint64_t want = (uint64_t)((double)h->n * p / 100.0 + 0.999999), acc = 0;
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want)
            return hist_value(i) > h->max ? h->max : hist_value(i);
    }
    return h->max;
}

static struct hist *hist_new(void)
{
    struct hist *h = calloc(1, sizeof(*h));
    if (!h) {
        perror("calloc");
        exit(2);
    }
    return h;
}

/* One JSON line for a latency run: one-way = RTT / 2 (the histogram holds one-way ns). */
static void lat_print(const char *peer, const char *mode, unsigned size, const char *extra,
                      const struct hist *h)
{
    printf("{\"bench\":\"latency\",\"peer\":\"%s\",\"mode\":\"%s\",\"size\":%u,\"samples\":%llu,"
           "\"p50_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu,\"max_ns\":%llu,\"mean_ns\":%.1f,"
           "\"ns_per_tick\":%.6f%s%s}\n",
           peer, mode, size, (unsigned long long)h->n, (unsigned long long)hist_pct(h, 50),
           (unsigned long long)hist_pct(h, 99), (unsigned long long)hist_pct(h, 99.9),
           (unsigned long long)h->max, h->n ? (double)h->sum / (double)h->n : 0.0, ns_per_tick,
           extra && *extra ? "," : "", extra ? extra : "");
    fflush(stdout);
    /* $BENCH_HIST_DIR set: also the histogram, "lower_bound_ns count" per non-empty bucket, in
     * DIR/PEER-MODE-SIZE.hist (bench/run draws the percentile plot from it). */
    const char *dir = getenv("BENCH_HIST_DIR");
    if (dir && *dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s-%s-%u.hist", dir, peer, mode, size);
        FILE *f = fopen(path, "w");
        if (f) {
            for (unsigned i = 0; i < HIST_BUCKETS; i++)
                if (h->b[i])
                    fprintf(f, "%llu %u\n", (unsigned long long)hist_value(i), h->b[i]);
            fclose(f);
        }
    }
}

/* Spin with pause, then yield: the waiting policy of every busy-polling loop in the suite. */
static inline void backoff(unsigned *spins)
{
    if (++*spins < 64)
        cpu_relax();
    else
        sched_yield();
}

/* ---- throughput harness ---- */
#define TPUT_MAX 64
struct tput_ctl {
    _Alignas(64) _Atomic uint32_t attached;
    _Alignas(64) _Atomic uint32_t start;
    _Alignas(64) _Atomic uint32_t stop; /* the parent's time cap fired */
    _Alignas(64) _Atomic uint32_t producers_done;
    _Alignas(64) _Atomic uint64_t end_ns;
    struct {
        _Alignas(64) _Atomic uint64_t count; /* consumer: taken so far; producer: put */
        uint64_t sum;                        /* consumer: sum of the values taken */
        int err;
    } w[TPUT_MAX];
    uint64_t msgs;
    unsigned producers, consumers;
    unsigned fan; /* deliveries per message: 1, or the receivers of a fan-out (tput_fan) */
};

/* Set before tput_run for a fan-out run: every message is taken by each of tput_fan consumers,
 * so the run ends when the consumers took msgs x tput_fan in all. */
static unsigned tput_fan = 1;

static struct tput_ctl *tctl;

static inline void tput_wait_start(void)
{
    atomic_fetch_add_explicit(&tctl->attached, 1, memory_order_release);
    unsigned spins = 0;
    while (!atomic_load_explicit(&tctl->start, memory_order_acquire))
        backoff(&spins);
}

static inline uint64_t tput_share(unsigned i)
{
    return tctl->msgs / tctl->producers + (i < tctl->msgs % tctl->producers ? 1 : 0);
}

/* A consumer found nothing: is the run over? Stores the end time the first time it is. */
static inline int tput_consumer_done(void)
{
    if (atomic_load_explicit(&tctl->stop, memory_order_relaxed))
        return 1;
    if (atomic_load_explicit(&tctl->producers_done, memory_order_acquire) != tctl->producers)
        return 0;
    uint64_t total = 0;
    for (unsigned j = 0; j < tctl->consumers; j++)
        total += atomic_load_explicit(&tctl->w[tctl->producers + j].count, memory_order_relaxed);
    if (total < tctl->msgs * tctl->fan)
        return 0;
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&tctl->end_ns, &zero, now_ns());
    return 1;
}

typedef int (*tput_fn)(unsigned index, void *arg);

/*
 * Fork P producers and C consumers (children call prod(i) / cons(j); the harness pins child k
 * to allowed cpu k mod n when pin), start them together, wait until done or cap_s seconds.
 * Prints nothing; fills *seconds, *taken; returns 0 or 2 if a child failed.
 */
static int tput_run(unsigned P, unsigned C, uint64_t msgs, int pin, double cap_s, tput_fn prod,
                    tput_fn cons, void *arg, double *seconds, uint64_t *taken, int *capped)
{
    if (P + C > TPUT_MAX)
        return 2;
    tctl = mmap(NULL, sizeof(*tctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (tctl == MAP_FAILED)
        return 2;
    tctl->msgs = msgs;
    tctl->producers = P;
    tctl->consumers = C;
    tctl->fan = tput_fan;
    pid_t pids[TPUT_MAX];
    fflush(stdout);
    fflush(stderr);
    for (unsigned k = 0; k < P + C; k++) {
        pid_t pid = fork();
        if (pid < 0)
            return 2;
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (pin)
                pin_index(k);
            int rc = k < P ? prod(k, arg) : cons(k - P, arg);
            fflush(stdout);
            fflush(stderr);
            _exit(rc);
        }
        pids[k] = pid;
    }
    while (atomic_load_explicit(&tctl->attached, memory_order_acquire) < P + C)
        usleep(100);
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(cap_s * 1e9);
    atomic_store_explicit(&tctl->start, 1, memory_order_release);
    int status = 0;
    unsigned alive = P + C;
    *capped = 0;
    while (alive) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid > 0) {
            alive--;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "child %d failed (status 0x%x)\n", (int)pid, st);
                status = 2;
                atomic_store(&tctl->stop, 1);
            }
            continue;
        }
        if (!*capped && now_ns() > deadline) {
            *capped = 1;
            uint64_t zero = 0;
            atomic_compare_exchange_strong(&tctl->end_ns, &zero, now_ns());
            atomic_store(&tctl->stop, 1);
        }
        usleep(1000);
    }
    (void)pids;
    uint64_t total = 0;
    for (unsigned j = 0; j < C; j++)
        total += atomic_load(&tctl->w[P + j].count);
    uint64_t end = atomic_load(&tctl->end_ns);
    *seconds = end > t0 ? (double)(end - t0) / 1e9 : 0;
    *taken = total; /* deliveries: msgs x tput_fan when complete */
    if (!*capped && total != msgs * tput_fan) {
        fprintf(stderr, "taken %llu of %llu\n", (unsigned long long)total,
                (unsigned long long)(msgs * tput_fan));
        status = 2;
    }
    return status;
}

static void tput_print(const char *peer, const char *variant, unsigned P, unsigned C, unsigned size,
                       int pin, uint64_t msgs, double seconds, uint64_t taken, int capped)
{
    double mps = seconds > 0 ? (double)taken / seconds : 0;
    printf("{\"bench\":\"tput\",\"peer\":\"%s\",\"variant\":\"%s\",\"producers\":%u,"
           "\"consumers\":%u,\"size\":%u,\"pinned\":%s,\"msgs\":%llu,\"taken\":%llu,"
           "\"seconds\":%.6f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,\"capped\":%s}\n",
           peer, variant, P, C, size, pin ? "true" : "false", (unsigned long long)msgs,
           (unsigned long long)taken, seconds, mps, mps * size / 1e6, capped ? "true" : "false");
    fflush(stdout);
}

/* A producer has put its share (D0, release: pairs with the acquire in tput_consumer_done). */
static inline void tput_producer_finished(void)
{
    atomic_fetch_add_explicit(&tctl->producers_done, 1, memory_order_release);
}

/* ---- latency harness: the echo child on allowed cpu 1, the pinger on cpu 0 ---- */
typedef int (*lat_fn)(void *arg);

/*
 * Fork the echo child (echo(arg) answers warm + n pings, then returns its exit status), pin
 * this process, time warm + n calls of ping(arg) (one round trip each) and keep the last n.
 * Returns the histogram of one-way ns (RTT / 2), or NULL if a call or the child failed.
 */
static struct hist *lat_run(unsigned warm, unsigned n, lat_fn echo, lat_fn ping, void *arg)
{
    calibrate_ticks();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return NULL;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin_index(1);
        int rc = echo(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    pin_index(0);
    struct hist *h = hist_new();
    int failed = 0;
    for (unsigned i = 0; i < warm + n; i++) {
        uint64_t t0 = ticks();
        if (ping(arg)) {
            failed = 1;
            break;
        }
        uint64_t t1 = ticks();
        if (i >= warm)
            hist_add(h, (uint64_t)((double)(t1 - t0) * ns_per_tick / 2.0 + 0.5));
    }
    int st;
    if (failed)
        kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    if (failed || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "latency: %s (child status 0x%x)\n", failed ? "ping failed" : "echo failed",
                st);
        free(h);
        return NULL;
    }
    return h;
}

/* ---- fan-out latency harness: one publisher, S receivers, one-way from a timestamp ----
 *
 * Issue 18's comparison (shmq with S consumer groups of one consumer each, iceoryx with one
 * publisher and S subscribers of one topic). The ping-pong's RTT / 2 does not apply to one
 * message delivered S times, so one-way is measured directly and defined alike for every peer:
 *   t0  ticks() in the publisher just before its first send call for the message (shmq_publish;
 *       iceoryx: iox_pub_loan_chunk), written into the message;
 *   t1  ticks() in the receiver just after its receive call returned the message
 *       (shmq_receive; iox_sub_take_chunk), before it is read, checked and acked / released;
 *   one-way = t1 - t0, one sample per message per receiver.
 * The TSC is one clock for every cpu here (invariant TSC, one VM); a sample with t1 < t0 counts
 * as 0 ns and in "skewed". Pacing: message i is published only once every receiver took
 * message i - 1 (its done word), so no sample includes queueing behind earlier messages. Pinning:
 * the publisher on allowed cpu 0, receiver k on allowed cpu k + 1 (mod the cpu count: with 2
 * cpus and 4 receivers, two share cpu 1 and two share the publisher's cpu 0). Every wait (the
 * receivers' polls, the publisher's wait for the done words) is a pause-spin, then sched_yield
 * after 64 tries (backoff()), so processes that share a cpu take turns: the figures then show
 * this turn-taking, the same for every peer. Each receiver keeps its own histogram in a shared
 * mapping; the result is the histogram of all S x n samples.
 */
#define FAN_MAX 8
struct fan_ctl {
    _Alignas(64) _Atomic uint32_t attached;
    _Alignas(64) _Atomic uint32_t start;
    _Alignas(64) _Atomic uint32_t stop;  /* a side failed: everyone leaves */
    struct {
        _Alignas(64) _Atomic uint64_t done; /* messages this receiver took (its last seq + 1) */
        uint64_t skewed;
    } r[FAN_MAX];
    struct hist h[FAN_MAX];
};
static struct fan_ctl *fctl;

/* The body a peer supplies. pub(seq, arg): send message seq carrying stamp = ticks() taken just
 * before the send call (pub takes it itself). recv(k, arg, &seq, &stamp, &t1): take one message
 * (busy-poll with backoff, returning 1 when fctl->stop is set), t1 = ticks() just after the
 * receive call returned it; then check and ack / release it. 0 ok, -1 failed. open_pub / open_recv:
 * set-up in the child or the publisher (after fork), with the wait until connected. */
struct fan_peer {
    int (*open_pub)(void *arg);
    int (*open_recv)(unsigned k, void *arg);
    int (*pub)(uint64_t seq, void *arg);
    int (*recv)(unsigned k, void *arg, uint64_t *seq, uint64_t *stamp, uint64_t *t1);
    void (*close_recv)(unsigned k, void *arg); /* may be NULL; called before _exit */
};

static inline int fan_stopped(void)
{
    return atomic_load_explicit(&fctl->stop, memory_order_relaxed) != 0;
}

static int fan_receiver(unsigned k, unsigned S, unsigned warm, unsigned n, const struct fan_peer *p,
                        void *arg)
{
    if (p->open_recv(k, arg)) {
        atomic_store(&fctl->stop, 1);
        atomic_fetch_add_explicit(&fctl->attached, 1, memory_order_release);
        return 2;
    }
    atomic_fetch_add_explicit(&fctl->attached, 1, memory_order_release);
    for (uint64_t i = 0; i < (uint64_t)warm + n; i++) {
        uint64_t seq, stamp, t1;
        int rc = p->recv(k, arg, &seq, &stamp, &t1);
        if (rc) {
            atomic_store(&fctl->stop, 1);
            return rc > 0 ? 0 : 2;
        }
        if (seq != i) {
            fprintf(stderr, "fan: receiver %u got seq %llu, want %llu\n", k,
                    (unsigned long long)seq, (unsigned long long)i);
            atomic_store(&fctl->stop, 1);
            return 2;
        }
        if (i >= warm) {
            if (t1 < stamp)
                fctl->r[k].skewed++;
            hist_add(&fctl->h[k], t1 > stamp ? (uint64_t)((double)(t1 - stamp) * ns_per_tick + 0.5) : 0);
        }
        /* Release: the publisher's acquire load sees this receiver done with message i. */
        atomic_store_explicit(&fctl->r[k].done, i + 1, memory_order_release);
    }
    if (p->close_recv)
        p->close_recv(k, arg);
    (void)S;
    return 0;
}

/*
 * Fork S receivers, run the publisher here, send warm + n messages paced as above. Returns the
 * histogram of all receivers' samples after the warm-up (one-way ns), or NULL if a side failed.
 * *skewed: samples with t1 < t0.
 */
static struct hist *fan_run(unsigned S, unsigned warm, unsigned n, const struct fan_peer *p,
                            void *arg, uint64_t *skewed)
{
    if (S < 1 || S > FAN_MAX)
        return NULL;
    calibrate_ticks();
    fctl = mmap(NULL, sizeof(*fctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (fctl == MAP_FAILED)
        return NULL;
    pid_t pids[FAN_MAX];
    fflush(stdout);
    fflush(stderr);
    for (unsigned k = 0; k < S; k++) {
        pid_t pid = fork();
        if (pid < 0)
            return NULL;
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            pin_index(k + 1);
            int rc = fan_receiver(k, S, warm, n, p, arg);
            fflush(stdout);
            fflush(stderr);
            _exit(rc);
        }
        pids[k] = pid;
    }
    pin_index(0);
    int failed = p->open_pub(arg) != 0;
    unsigned spins = 0;
    while (!failed && atomic_load_explicit(&fctl->attached, memory_order_acquire) < S)
        backoff(&spins);
    for (uint64_t i = 0; !failed && i < (uint64_t)warm + n; i++) {
        for (unsigned k = 0; k < S && !failed; k++) {
            spins = 0;
            /* Acquire: pairs with receiver k's release of done. */
            while (atomic_load_explicit(&fctl->r[k].done, memory_order_acquire) < i) {
                if (fan_stopped()) {
                    failed = 1;
                    break;
                }
                backoff(&spins);
            }
        }
        if (!failed && (fan_stopped() || p->pub(i, arg)))
            failed = 1;
    }
    if (failed)
        atomic_store(&fctl->stop, 1);
    struct hist *all = hist_new();
    for (unsigned k = 0; k < S; k++) {
        int st;
        waitpid(pids[k], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fan: receiver %u failed (status 0x%x)\n", k, st);
            failed = 1;
        }
    }
    if (failed) {
        free(all);
        return NULL;
    }
    *skewed = 0;
    for (unsigned k = 0; k < S; k++) {
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            all->b[b] += fctl->h[k].b[b];
        all->n += fctl->h[k].n;
        all->sum += fctl->h[k].sum;
        if (fctl->h[k].max > all->max)
            all->max = fctl->h[k].max;
        *skewed += fctl->r[k].skewed;
    }
    return all;
}

/* VmRSS and VmHWM of this process in KiB. */
static void rss_kib(long *rss, long *hwm)
{
    *rss = *hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6))
            *rss = strtol(line + 6, NULL, 10);
        else if (!strncmp(line, "VmHWM:", 6))
            *hwm = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

#endif
