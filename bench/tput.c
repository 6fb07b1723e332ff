/*
 * tput.c - throughput of publish + receive + ack between processes.
 *
 * The parent creates a queue with a unique name, forks P producers and C consumers (each opens
 * the queue by name), waits until all of them are attached, takes t0 and opens the start
 * barrier. Producers publish msgs messages in all (split evenly); consumers receive and ack
 * until every message has been acked. The time is t0 .. the last ack (see "End of the run").
 * The parent then checks that what was acked is exactly what was published and prints one line
 * of JSON on stdout. Diagnostics go to stderr.
 *
 * Every message carries (producer, seq) in its first 16 bytes and a guard byte at its end.
 * Consumers check the length and the guard byte and add a 64-bit hash of (producer, seq) to a
 * sum; the parent compares the sum with the one expected, so a message lost, duplicated or
 * corrupted fails the run, not only a wrong count. Consumers read the header and the last byte
 * (zero-copy: the payload is not copied out).
 *
 * Waiting modes (-m):
 *   poll:  shmq_receive(.., 0) in a loop; shmq_publish() retried on -EAGAIN (full queue) with
 *          a short pause-spin, then sched_yield().
 *   block: shmq_receive(.., -w ms) and shmq_publish_timed(.., -w ms); a timeout is retried.
 * On the test machines waking an idle core costs ~40 us: block-mode figures measure that, not
 * the queue. Report the two modes as separate rows.
 *
 * Batches (-B N, N > 1): producers publish N messages a call (shmq_publish_batch, the rest of
 * a batch retried on -EAGAIN as a single publish is), consumers take up to N a call
 * (shmq_receive_batch) and ack them in one (shmq_ack_batch); the same checks per message.
 *
 * Consumer groups (-G G, issue 18's fan-out): the queue has G groups ("default", g1, ...),
 * consumer j opens in group j mod G (so -c G: one consumer per group), and every group must
 * receive and ack every message: the checks above hold per group (its consumers' sum against
 * the expected one). msgs_per_s is then messages published per second, each received and acked
 * by all G groups (deliveries_per_s = G x that).
 *
 * Durability (-d): the queue's mode; by default the library's (process: every publish and ack
 * appends a record to an mmap'd log file). The JSON line says which mode ran and how many log
 * bytes and fdatasyncs the run made (shmq_stats()). The queue and its log are deleted at the end.
 *
 * End of the run: in block mode each consumer stores the CLOCK_MONOTONIC time after each ack;
 * the end is the latest one. In poll mode a clock read per message would cost ~20 ns (a third
 * of a message at 13 M/s), so instead a consumer that finds the queue empty after the producers
 * finished sums the consumers' counts; the first consumer to see the total reached stores the
 * time. That time is at most one empty poll after the last ack (the minimum over consumers).
 *
 * Exit status: 0 ok, 1 the messages acked differ from those published, 2 usage, a library
 * error, a crashed child or the watchdog (-T) firing; the state of each child is then printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq/shmq.h"

#define MAX_WORKERS 256
#define HDR_BYTES 16 /* producer (u32), pad (u32), seq (u64) */
#define GUARD_BYTE 0xA5

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

enum mode { MODE_POLL, MODE_BLOCK };

struct opts {
    unsigned producers, consumers;
    uint32_t size, capacity;
    uint64_t msgs;
    enum mode mode;
    int pin;
    int wait_ms;       /* block mode: receive / publish_timed timeout */
    unsigned batch;    /* -B: messages per batch call; 1: the single calls */
    unsigned groups;   /* -G: consumer groups, each receives every message (1: the default) */
    unsigned grace_ms; /* an empty queue with messages missing is given up after this */
    unsigned watchdog_s;
    int durability;      /* SHMQ_DURABILITY_*, or -1: the library's default */
    const char *log_dir; /* NULL: the library's default (the state directory) */
};

static const char *const durability_names[] = {"none", "process", "sync"};

/* One child's results, on its own cache lines: written by that child, read by the parent after
 * it exited (and by the other consumers for count, see "End of the run"). */
struct worker {
    _Alignas(64) _Atomic uint64_t count; /* published or acked so far */
    _Atomic uint64_t end_ns;             /* consumer: see "End of the run" */
    uint64_t sum;                        /* consumer: sum of msg_hash() of what it acked */
    uint64_t retries;                    /* producer: -EAGAIN/-ETIMEDOUT; consumer: empty */
    uint64_t redelivered, bad_len, bad_guard, bad_header;
    int err;        /* first unexpected return value, 0 if none */
    char where[32]; /* the call that returned it */
    pid_t pid;
    int role; /* 'P' or 'C' */
};

/* The shared control block: an anonymous MAP_SHARED mapping made before fork(). */
struct control {
    _Alignas(64) _Atomic uint32_t attached; /* children ready at the barrier */
    _Alignas(64) _Atomic uint32_t start;    /* P0 (release) by the parent after t0; C0 pairs */
    _Alignas(64) _Atomic uint32_t producers_done;
    _Alignas(64) struct worker w[MAX_WORKERS]; /* producers first, then consumers */
};

static struct control *ctl;
static struct opts opt;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64 finaliser over (producer, seq): the per-message term of the checksum. */
static uint64_t msg_hash(uint32_t producer, uint64_t seq)
{
    uint64_t x = seq * 0x9E3779B97F4A7C15ull + ((uint64_t)producer << 48) + 1;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t producer_share(unsigned i)
{
    return opt.msgs / opt.producers + (i < opt.msgs % opt.producers ? 1 : 0);
}

static void fail(struct worker *me, const char *where, int err)
{
    if (me->err == 0) {
        me->err = err;
        snprintf(me->where, sizeof(me->where), "%s", where);
    }
    fprintf(stderr, "tput: %c pid %d: %s: %s (%d)\n", me->role, (int)getpid(), where,
            shmq_strerror(err), err);
    fflush(stderr);
}

/* Pin the calling child k to the (k mod n)-th of the n cpus it may run on: producer i on the
 * first allowed cpu + i, consumer j after the producers (cpu 0 and 1 for 1P/1C on most hosts;
 * a cpuset that starts elsewhere is respected). */
static void pin_child(unsigned k)
{
    cpu_set_t allowed, set;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) == 0) {
        fprintf(stderr, "tput: sched_getaffinity: %s: not pinned\n", strerror(errno));
        return;
    }
    unsigned want = k % (unsigned)CPU_COUNT(&allowed), seen = 0;
    int cpu = 0;
    for (; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed) && seen++ == want)
            break;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        fprintf(stderr, "tput: cannot pin pid %d to cpu %d: %s\n", (int)getpid(), cpu,
                strerror(errno));
}

/* Wait at the start barrier (C0, acquire: pairs with P0). */
static void wait_start(void)
{
    atomic_fetch_add_explicit(&ctl->attached, 1, memory_order_release);
    unsigned spins = 0;
    while (!atomic_load_explicit(&ctl->start, memory_order_acquire)) {
        if (++spins < 64)
            cpu_relax();
        else
            sched_yield();
    }
}

/* -B: publish the producer's share in batches of opt.batch, each message its own buffer. */
static int run_producer_batch(unsigned i, shmq_t *q)
{
    struct worker *me = &ctl->w[i];
    uint64_t n = producer_share(i);
    unsigned nb = opt.batch;
    unsigned char *buf = malloc((size_t)opt.size * nb);
    shmq_iov_t *iov = malloc(sizeof *iov * nb);
    if (!buf || !iov) {
        fail(me, "malloc", -ENOMEM);
        return 2;
    }
    uint32_t pid32 = i;
    for (unsigned k = 0; k < nb; k++) {
        unsigned char *m = buf + (size_t)k * opt.size;
        for (uint32_t b = 0; b < opt.size; b++)
            m[b] = (unsigned char)(b * 7u);
        m[opt.size - 1] = GUARD_BYTE;
        memcpy(m, &pid32, 4);
        iov[k] = (shmq_iov_t){m, opt.size};
    }
    wait_start();
    uint64_t retries = 0;
    for (uint64_t seq = 0; seq < n;) {
        size_t k = n - seq < nb ? (size_t)(n - seq) : nb, off = 0;
        for (size_t j = 0; j < k; j++) {
            uint64_t s = seq + j;
            memcpy(buf + j * opt.size + 8, &s, 8);
        }
        atomic_store_explicit(&me->count, seq, memory_order_relaxed);
        unsigned spins = 0;
        while (off < k) {
            size_t done = 0;
            int rc = shmq_publish_batch(q, iov + off, k - off, NULL, &done);
            off += done;
            if (rc == 0)
                break;
            if (rc == -EAGAIN) {
                retries++;
                if (++spins < 64)
                    cpu_relax();
                else
                    sched_yield();
                continue;
            }
            fail(me, "shmq_publish_batch", rc);
            me->retries = retries;
            free(buf);
            free(iov);
            return 2;
        }
        seq += k;
    }
    atomic_store_explicit(&me->count, n, memory_order_relaxed);
    me->retries = retries;
    /* D0 (release): as in run_producer. */
    atomic_fetch_add_explicit(&ctl->producers_done, 1, memory_order_release);
    free(buf);
    free(iov);
    return 0;
}

static int run_producer(unsigned i, shmq_t *q)
{
    struct worker *me = &ctl->w[i];
    uint64_t n = producer_share(i);
    unsigned char *buf = malloc(opt.size);
    if (!buf) {
        fail(me, "malloc", -ENOMEM);
        return 2;
    }
    for (uint32_t b = 0; b < opt.size; b++)
        buf[b] = (unsigned char)(b * 7u);
    buf[opt.size - 1] = GUARD_BYTE;
    uint32_t pid32 = i;
    memcpy(buf, &pid32, 4);

    wait_start();
    uint64_t retries = 0;
    for (uint64_t seq = 0; seq < n; seq++) {
        memcpy(buf + 8, &seq, 8);
        if ((seq & 1023) == 0) /* progress for dump_state(); own cache line, relaxed */
            atomic_store_explicit(&me->count, seq, memory_order_relaxed);
        unsigned spins = 0;
        for (;;) {
            int rc;
            if (opt.mode == MODE_POLL)
                rc = shmq_publish(q, buf, opt.size, NULL);
            else
                rc = shmq_publish_timed(q, buf, opt.size, NULL, opt.wait_ms);
            if (rc == 0)
                break;
            if (rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EINTR) {
                retries++;
                if (++spins < 64)
                    cpu_relax();
                else
                    sched_yield();
                continue;
            }
            fail(me, opt.mode == MODE_POLL ? "shmq_publish" : "shmq_publish_timed", rc);
            atomic_store_explicit(&me->count, seq, memory_order_relaxed);
            me->retries = retries;
            free(buf);
            return 2;
        }
    }
    atomic_store_explicit(&me->count, n, memory_order_relaxed);
    me->retries = retries;
    /* D0 (release): this producer's publishes are done; pairs with D1 in the consumers. */
    atomic_fetch_add_explicit(&ctl->producers_done, 1, memory_order_release);
    free(buf);
    return 0;
}

/* Sum of the consumers' counts (they are stored relaxed: a lower bound of what was acked). */
static uint64_t acked_total(void)
{
    uint64_t total = 0;
    for (unsigned j = 0; j < opt.consumers; j++)
        total += atomic_load_explicit(&ctl->w[opt.producers + j].count, memory_order_relaxed);
    return total;
}

/* Acks that end the run: every message in every group. */
static uint64_t acks_wanted(void)
{
    return opt.msgs * opt.groups;
}

static int run_consumer(unsigned j, shmq_t *q)
{
    struct worker *me = &ctl->w[opt.producers + j];
    shmq_consumer_t *c = NULL;
    char name[32];
    snprintf(name, sizeof(name), "tput-c%u", j);
    char group[16];
    snprintf(group, sizeof(group), "g%u", j % opt.groups);
    int rc = shmq_consumer_open_group(q, j % opt.groups ? group : NULL, name, &c);
    if (rc) {
        fail(me, "shmq_consumer_open_group", rc);
        return 2;
    }
    const int timeout = opt.mode == MODE_POLL ? 0 : opt.wait_ms;
    uint64_t n = 0, sum = 0, empty = 0, redelivered = 0;
    uint64_t bad_len = 0, bad_guard = 0, bad_header = 0;
    int status = 0;
    uint64_t starved_since = 0; /* when the queue was first seen empty with messages missing */

    shmq_msg_t *ms = malloc(sizeof *ms * opt.batch);
    if (!ms) {
        fail(me, "malloc", -ENOMEM);
        return 2;
    }
    size_t got = 0, at = 0; /* -B: ms[at..got) still to check, then acked together */
    wait_start();
    unsigned spins = 0;
    for (;;) {
        shmq_msg_t m;
        /* Block mode: do not go to sleep once everything was acked (D1 as below). */
        if (opt.mode == MODE_BLOCK &&
            atomic_load_explicit(&ctl->producers_done, memory_order_acquire) == opt.producers &&
            acked_total() >= acks_wanted())
            break;
        if (opt.batch > 1) {
            if (at == got) {
                at = got = 0;
                rc = shmq_receive_batch(c, ms, opt.batch, &got, timeout);
            } else {
                rc = 0;
            }
            if (rc == 0)
                m = ms[at++];
        } else {
            rc = shmq_receive(c, &m, timeout);
        }
        if (rc == 0) {
            spins = 0;
            starved_since = 0;
            if (m.len != opt.size || !m.data) {
                bad_len++;
            } else {
                const unsigned char *d = m.data;
                uint32_t prod;
                uint64_t seq;
                memcpy(&prod, d, 4);
                memcpy(&seq, d + 8, 8);
                if (d[m.len - 1] != GUARD_BYTE)
                    bad_guard++;
                if (prod >= opt.producers || seq >= producer_share(prod))
                    bad_header++;
                else
                    sum += msg_hash(prod, seq);
            }
            if (m.flags & SHMQ_MSG_REDELIVERED)
                redelivered++;
            if (opt.batch > 1) { /* the whole batch checked: ack it in one call */
                size_t acked = 0;
                rc = at == got ? shmq_ack_batch(c, ms, got, &acked) : 0;
                if (rc) {
                    fail(me, "shmq_ack_batch", rc);
                    status = 2;
                    break;
                }
                n++;
                if (at < got)
                    continue;
            } else {
                rc = shmq_ack(c, &m);
                if (rc) {
                    fail(me, "shmq_ack", rc);
                    status = 2;
                    break;
                }
                n++;
            }
            atomic_store_explicit(&me->count, n, memory_order_relaxed);
            if (opt.mode == MODE_BLOCK)
                atomic_store_explicit(&me->end_ns, now_ns(), memory_order_relaxed);
            continue;
        }
        if (rc != -EAGAIN && rc != -ETIMEDOUT && rc != -EINTR) {
            fail(me, "shmq_receive", rc);
            status = 2;
            break;
        }
        empty++;
        /* D1 (acquire): pairs with D0; only then is an empty queue worth a look at the total. */
        if (atomic_load_explicit(&ctl->producers_done, memory_order_acquire) == opt.producers) {
            if (acked_total() >= acks_wanted()) {
                if (opt.mode == MODE_POLL)
                    atomic_store_explicit(&me->end_ns, now_ns(), memory_order_relaxed);
                break;
            }
            /* Every message was published, some are not acked, and the queue looks empty:
             * they may be in another consumer's hands, or lost. Give up after -g ms. */
            uint64_t t = now_ns();
            if (starved_since == 0)
                starved_since = t;
            else if (t - starved_since > (uint64_t)opt.grace_ms * 1000000ull) {
                fprintf(stderr,
                        "tput: C%u: queue empty for %u ms after the producers finished, "
                        "%llu of %llu acked: giving up\n",
                        j, opt.grace_ms, (unsigned long long)acked_total(),
                        (unsigned long long)acks_wanted());
                fflush(stderr);
                break;
            }
        }
        if (opt.mode == MODE_POLL) {
            if (++spins < 64)
                cpu_relax();
            else
                sched_yield();
        }
    }
    free(ms);
    me->sum = sum;
    me->retries = empty;
    me->redelivered = redelivered;
    me->bad_len = bad_len;
    me->bad_guard = bad_guard;
    me->bad_header = bad_header;
    rc = shmq_consumer_close(c);
    if (rc && !status) {
        fail(me, "shmq_consumer_close", rc);
        status = 2;
    }
    return status;
}

static int child_main(unsigned k, const char *qname)
{
    struct worker *me = &ctl->w[k];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 2;
    if (opt.pin)
        pin_child(k);
    shmq_t *q = NULL;
    int rc = shmq_open(qname, &q);
    if (rc) {
        fail(me, "shmq_open", rc);
        atomic_fetch_add_explicit(&ctl->attached, 1, memory_order_release);
        return 2;
    }
    int status = me->role == 'P' ? (opt.batch > 1 ? run_producer_batch(k, q) : run_producer(k, q)) : run_consumer(k - opt.producers, q);
    rc = shmq_close(q);
    if (rc && !status) {
        fail(me, "shmq_close", rc);
        status = 2;
    }
    fflush(stdout);
    fflush(stderr);
    return status;
}

static void dump_state(shmq_t *q)
{
    fprintf(stderr, "tput: state: producers_done=%u/%u\n", atomic_load(&ctl->producers_done),
            opt.producers);
    for (unsigned k = 0; k < opt.producers + opt.consumers; k++) {
        struct worker *w = &ctl->w[k];
        fprintf(stderr, "tput:   %c%u pid %d count=%llu retries=%llu err=%d%s%s\n", w->role,
                w->role == 'P' ? k : k - opt.producers, (int)w->pid,
                (unsigned long long)atomic_load(&w->count), (unsigned long long)w->retries, w->err,
                w->err ? " in " : "", w->where);
    }
    shmq_stats_t st;
    int rc = shmq_stats(q, &st);
    if (rc) {
        fprintf(stderr, "tput:   shmq_stats: %s\n", shmq_strerror(rc));
        return;
    }
    fprintf(stderr,
            "tput:   stats: published=%llu delivered=%llu acked=%llu nacked=%llu redelivered=%llu "
            "dead_lettered=%llu reclaimed=%llu | slots ready=%u inflight=%u delayed=%u "
            "reserved=%u dead=%u free=%u | consumers=%u procs=%u\n",
            (unsigned long long)st.published, (unsigned long long)st.delivered,
            (unsigned long long)st.acked, (unsigned long long)st.nacked,
            (unsigned long long)st.redelivered, (unsigned long long)st.dead_lettered,
            (unsigned long long)st.reclaimed, st.ready, st.inflight, st.delayed, st.reserved,
            st.dead, st.free, st.consumers, st.procs);
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-p producers] [-c consumers] [-s size] [-n msgs] [-q capacity]\n"
            "          [-m poll|block] [-a] [-w wait_ms] [-g grace_ms] [-d durability]\n"
            "          [-L log_dir] [-T watchdog_s] [-B batch] [-G groups]\n"
            "  -p 1  producer processes        -c 1  consumer processes\n"
            "  -s 64 message bytes (>= %d); also the queue's max_msg_size\n"
            "  -n 1000000 messages in all      -q 4096 queue capacity (slots)\n"
            "  -m poll: receive(0)/publish in a loop; block: receive/publish_timed(-w ms)\n"
            "  -a    pin: producer i on allowed cpu i, consumer j on P+j (mod allowed cpus)\n"
            "  -w 200 block-mode timeout in ms (-1: forever; needs -c 1)\n"
            "  -g 2000 a consumer that finds the queue empty this long after the producers\n"
            "        finished, with messages not acked, stops (the run then fails: lost)\n"
            "  -d none|process|sync  durability (default: the library's, PROCESS)\n"
            "  -B 1  messages per batch call (publish_batch / receive_batch / ack_batch)\n"
            "  -G 1  consumer groups; consumer j in group j mod G; each group gets every message\n"
            "  -L dir  log directory (default: the library's state directory)\n"
            "  -T 120 watchdog: after this many seconds dump the state and fail\n",
            argv0, HDR_BYTES);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_opts(int argc, char **argv)
{
    opt = (struct opts){.producers = 1,
                        .consumers = 1,
                        .size = 64,
                        .capacity = 4096,
                        .msgs = 1000000,
                        .mode = MODE_POLL,
                        .wait_ms = 200,
                        .watchdog_s = 120,
                        .grace_ms = 2000,
                        .durability = -1,
                        .batch = 1,
                        .groups = 1};
    int ch;
    uint64_t v;
    while ((ch = getopt(argc, argv, "p:c:s:n:q:m:aw:T:g:d:L:B:G:h")) != -1) {
        switch (ch) {
        case 'p':
            if (parse_u64(optarg, &v) || v < 1)
                return -1;
            opt.producers = (unsigned)v;
            break;
        case 'c':
            if (parse_u64(optarg, &v) || v < 1)
                return -1;
            opt.consumers = (unsigned)v;
            break;
        case 's':
            if (parse_u64(optarg, &v) || v < HDR_BYTES || v > SHMQ_MSG_SIZE_MAX)
                return -1;
            opt.size = (uint32_t)v;
            break;
        case 'n':
            if (parse_u64(optarg, &v) || v < 1)
                return -1;
            opt.msgs = v;
            break;
        case 'q':
            if (parse_u64(optarg, &v) || v < 1 || v > SHMQ_CAPACITY_MAX)
                return -1;
            opt.capacity = (uint32_t)v;
            break;
        case 'm':
            if (!strcmp(optarg, "poll"))
                opt.mode = MODE_POLL;
            else if (!strcmp(optarg, "block"))
                opt.mode = MODE_BLOCK;
            else
                return -1;
            break;
        case 'a': opt.pin = 1; break;
        case 'd':
            opt.durability = -2;
            for (int d = 0; d < 3; d++)
                if (!strcmp(optarg, durability_names[d]))
                    opt.durability = d;
            if (opt.durability == -2)
                return -1;
            break;
        case 'L': opt.log_dir = optarg; break;
        case 'B':
            if (parse_u64(optarg, &v) || v < 1 || v > 1024)
                return -1;
            opt.batch = (unsigned)v;
            break;
        case 'G':
            if (parse_u64(optarg, &v) || v < 1 || v > SHMQ_GROUPS_MAX)
                return -1;
            opt.groups = (unsigned)v;
            break;
        case 'w':
            opt.wait_ms = atoi(optarg);
            if (opt.wait_ms < -1)
                return -1;
            break;
        case 'T':
            if (parse_u64(optarg, &v))
                return -1;
            opt.watchdog_s = (unsigned)v;
            break;
        case 'g':
            if (parse_u64(optarg, &v))
                return -1;
            opt.grace_ms = (unsigned)v;
            break;
        default: return -1;
        }
    }
    if (optind != argc || opt.producers + opt.consumers > MAX_WORKERS)
        return -1;
    if (opt.consumers < opt.groups) {
        fprintf(stderr, "tput: -G %u needs at least %u consumers (one per group)\n", opt.groups,
                opt.groups);
        return -1;
    }
    if (opt.mode == MODE_BLOCK && opt.wait_ms == -1 && opt.consumers > 1) {
        fprintf(stderr, "tput: -w -1 with several consumers never ends (idle ones sleep on)\n");
        return -1;
    }
    return 0;
}

static void kill_children(void)
{
    for (unsigned k = 0; k < opt.producers + opt.consumers; k++)
        if (ctl->w[k].pid > 0)
            kill(ctl->w[k].pid, SIGKILL);
}

int main(int argc, char **argv)
{
    if (parse_opts(argc, argv)) {
        usage(argv[0]);
        return 2;
    }
    const unsigned nkids = opt.producers + opt.consumers;

    ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED) {
        perror("tput: mmap");
        return 2;
    }
    for (unsigned k = 0; k < nkids; k++)
        ctl->w[k].role = k < opt.producers ? 'P' : 'C';

    char qname[SHMQ_NAME_MAX];
    snprintf(qname, sizeof(qname), "bench-tput.%d.%llx", (int)getpid(),
             (unsigned long long)now_ns());
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = opt.capacity;
    cfg.max_msg_size = opt.size;
    if (opt.durability >= 0)
        cfg.durability = opt.durability;
    if (opt.log_dir)
        cfg.log_dir = opt.log_dir;
    /* One registry entry per process and one per consumer, plus the parent, plus slack. */
    if (1u + nkids + opt.consumers + 2u > cfg.max_procs)
        cfg.max_procs = 1u + nkids + opt.consumers + 2u;
    if (opt.groups > 1)
        cfg.max_groups = opt.groups;
    shmq_t *q = NULL;
    int rc = shmq_create(qname, &cfg, &q);
    if (rc) {
        fprintf(stderr, "tput: shmq_create(%s): %s (%d)\n", qname, shmq_strerror(rc), rc);
        return 2;
    }
    for (unsigned g = 1; g < opt.groups; g++) { /* group 0 is "default" */
        char group[16];
        snprintf(group, sizeof(group), "g%u", g);
        rc = shmq_group_create(q, group, SHMQ_GROUP_BLOCK, 0);
        if (rc) {
            fprintf(stderr, "tput: shmq_group_create(%s): %s (%d)\n", group, shmq_strerror(rc), rc);
            shmq_close(q);
            shmq_unlink(qname);
            return 2;
        }
    }

    /* SIGCHLD is blocked and taken with sigtimedwait(): the parent sleeps during the run. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    fflush(stdout);
    fflush(stderr);

    int status = 0;
    for (unsigned k = 0; k < nkids; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("tput: fork");
            kill_children();
            status = 2;
            break;
        }
        if (pid == 0) {
            sigprocmask(SIG_UNBLOCK, &chld, NULL);
            _exit(child_main(k, qname));
        }
        ctl->w[k].pid = pid;
    }

    uint64_t t0 = 0, deadline = now_ns() + (uint64_t)opt.watchdog_s * 1000000000ull;
    unsigned alive = 0, timed_out = 0;
    for (unsigned k = 0; k < nkids; k++)
        alive += ctl->w[k].pid > 0;

    if (status == 0) {
        /* Barrier: every child attached (or failed to); any early exit is seen below. */
        while (atomic_load_explicit(&ctl->attached, memory_order_acquire) < nkids) {
            int st;
            pid_t pid = waitpid(-1, &st, WNOHANG);
            if (pid > 0) {
                fprintf(stderr, "tput: child %d exited before the start\n", (int)pid);
                alive--;
                status = 2;
                break;
            }
            if (now_ns() > deadline) {
                timed_out = 1;
                break;
            }
            usleep(200);
        }
        if (status == 0 && !timed_out) {
            t0 = now_ns();
            /* P0 (release): start; pairs with C0 in wait_start(). */
            atomic_store_explicit(&ctl->start, 1, memory_order_release);
        }
    }

    while (alive > 0 && !timed_out && status == 0) {
        uint64_t t = now_ns();
        if (t >= deadline) {
            timed_out = 1;
            break;
        }
        uint64_t left = deadline - t;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000000000ull),
                              .tv_nsec = (long)(left % 1000000000ull)};
        int sig = sigtimedwait(&chld, NULL, &ts);
        if (sig < 0 && errno != EAGAIN && errno != EINTR) {
            perror("tput: sigtimedwait");
            status = 2;
            break;
        }
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            alive--;
            unsigned k = 0;
            while (k < nkids && ctl->w[k].pid != pid)
                k++;
            char who = k < nkids ? (char)ctl->w[k].role : '?';
            if (WIFSIGNALED(st)) {
                fprintf(stderr, "tput: %c pid %d killed by signal %d (%s)\n", who, (int)pid,
                        WTERMSIG(st), strsignal(WTERMSIG(st)));
                status = 2;
            } else if (WEXITSTATUS(st) != 0) {
                fprintf(stderr, "tput: %c pid %d exited with %d\n", who, (int)pid, WEXITSTATUS(st));
                status = 2;
            }
        }
    }
    if (timed_out) {
        fprintf(stderr, "tput: watchdog: no end after %u s (hang or livelock)\n", opt.watchdog_s);
        status = 2;
    }
    if (status) {
        dump_state(q);
        kill_children();
        while (wait(NULL) > 0)
            ;
        shmq_close(q);
        shmq_unlink(qname);
        return status;
    }

    /* Every child exited 0: check what was acked against what was published. */
    uint64_t published = 0, acked = 0, expect_sum = 0, end_ns = 0;
    uint64_t gsum[SHMQ_GROUPS_MAX] = {0}, gacked[SHMQ_GROUPS_MAX] = {0};
    uint64_t full = 0, empty = 0, redelivered = 0, bad = 0;
    for (unsigned i = 0; i < opt.producers; i++) {
        published += ctl->w[i].count;
        full += ctl->w[i].retries;
        for (uint64_t s = 0; s < producer_share(i); s++)
            expect_sum += msg_hash(i, s);
    }
    for (unsigned j = 0; j < opt.consumers; j++) {
        struct worker *w = &ctl->w[opt.producers + j];
        acked += w->count;
        gacked[j % opt.groups] += w->count;
        gsum[j % opt.groups] += w->sum;
        empty += w->retries;
        redelivered += w->redelivered;
        bad += w->bad_len + w->bad_guard + w->bad_header;
        uint64_t e = atomic_load(&w->end_ns);
        if (e && opt.mode == MODE_POLL)
            end_ns = end_ns == 0 || e < end_ns ? e : end_ns; /* first to see the total */
        else if (e > end_ns)
            end_ns = e; /* block: the last ack */
        if (w->bad_len || w->bad_guard || w->bad_header)
            fprintf(stderr, "tput: C%u: bad_len=%llu bad_guard=%llu bad_header=%llu\n", j,
                    (unsigned long long)w->bad_len, (unsigned long long)w->bad_guard,
                    (unsigned long long)w->bad_header);
    }
    int verdict = 0;
    for (unsigned g = 0; g < opt.groups; g++) { /* each group acked exactly what was published */
        if (published != opt.msgs || gacked[g] != published || gsum[g] != expect_sum || bad) {
            fprintf(stderr,
                    "tput: MISMATCH in group %u: msgs=%llu published=%llu acked=%llu checksum %s, "
                    "%llu bad\n",
                    g, (unsigned long long)opt.msgs, (unsigned long long)published,
                    (unsigned long long)gacked[g], gsum[g] == expect_sum ? "ok" : "WRONG",
                    (unsigned long long)bad);
            verdict = 1;
        }
    }
    if (verdict)
        dump_state(q);
    if (redelivered)
        fprintf(stderr, "tput: note: %llu deliveries flagged REDELIVERED\n",
                (unsigned long long)redelivered);

    /* The durability in force (as stored in the segment) and what the log did. */
    shmq_config_t used;
    const char *durability = "?";
    if (shmq_get_config(q, &used) == 0 && used.durability >= 0 && used.durability <= 2)
        durability = durability_names[used.durability];
    shmq_stats_t st;
    if (shmq_stats(q, &st) != 0)
        memset(&st, 0, sizeof(st));

    double seconds = end_ns > t0 ? (double)(end_ns - t0) / 1e9 : 0.0;
    /* messages per second, each acked in every group */
    double mps = seconds > 0 ? (double)acked / opt.groups / seconds : 0.0;
    printf("{\"bench\":\"tput\",\"producers\":%u,\"consumers\":%u,\"size\":%u,\"msgs\":%llu,"
           "\"seconds\":%.6f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,"
           "\"mode\":\"%s\",\"durability\":\"%s\",\"pinned\":%s,\"capacity\":%u,\"batch\":%u,"
           "\"groups\":%u,\"deliveries_per_s\":%.0f,"
           "\"full_retries\":%llu,\"empty_polls\":%llu,\"redelivered\":%llu,"
           "\"wal_bytes\":%llu,\"wal_flushes\":%llu,\"ok\":%s}\n",
           opt.producers, opt.consumers, opt.size, (unsigned long long)opt.msgs, seconds, mps,
           mps * opt.size / 1e6, opt.mode == MODE_POLL ? "poll" : "block", durability,
           opt.pin ? "true" : "false", opt.capacity, opt.batch, opt.groups, mps * opt.groups,
           (unsigned long long)full,
           (unsigned long long)empty, (unsigned long long)redelivered,
           (unsigned long long)st.wal_bytes, (unsigned long long)st.wal_flushes,
           verdict ? "false" : "true");
    fflush(stdout);

    rc = shmq_close(q);
    if (rc)
        fprintf(stderr, "tput: shmq_close: %s (%d)\n", shmq_strerror(rc), rc);
    rc = shmq_unlink(qname);
    if (rc)
        fprintf(stderr, "tput: shmq_unlink: %s (%d)\n", shmq_strerror(rc), rc);
    return verdict;
}
