/*
 * latency.c - one-way latency of shmq between two processes: a ping-pong over two queues.
 *
 *   latency [-s size] [-m poll|block] [-d none|process|sync] [-n samples] [-w warmup]
 *
 * The pinger (cpu 0) publishes a message of size bytes on queue A, then receives the answer
 * from queue B and acks it; the echo (cpu 1) receives from A, acks, and publishes the answer on
 * B. So each round trip holds two full publish -> receive -> ack paths, and one-way = RTT / 2.
 * Each round trip is timed with rdtscp (common.h) into a histogram: p50 / p99 / p99.9 / max.
 *   -m poll   receive(.., 0) in a loop (busy-poll; the waiting core never sleeps)
 *   -m block  receive(.., -1): the library spins briefly, then sleeps on its futex
 *   -d        the queues' durability (default none; process and sync write the log)
 * The echo checks each message's sequence number and guard byte. One JSON line on stdout.
 *
 *   latency -G groups [-s size] [-d ...] [-n samples] [-w warmup]
 * Fan-out (issue 18, beside `iox fan`): one queue with G consumer groups ("default", g1, ...),
 * one consumer process in each, one publisher; every message goes to every group. One-way
 * latency per delivery from a timestamp: the publisher's ticks() just before shmq_publish to
 * the consumer's just after shmq_receive returned the message, then it is checked and acked
 * (common.h fan_run: paced, busy-poll with backoff; all G x n samples in one histogram).
 */
#include "peers/common.h"

#include "shmq/shmq.h"

static const char *const durability_names[] = {"none", "process", "sync"};
static char name_a[SHMQ_NAME_MAX], name_b[SHMQ_NAME_MAX];
static unsigned size = 64, total;
static int block, durability = SHMQ_DURABILITY_NONE;
static unsigned char *buf;

struct side {
    shmq_t *out_q, *in_q;
    shmq_consumer_t *in;
    uint64_t seq;
};

static int open_side(struct side *s, const char *out, const char *in)
{
    int rc = shmq_open(out, &s->out_q);
    if (!rc)
        rc = shmq_open(in, &s->in_q);
    if (!rc)
        rc = shmq_consumer_open(s->in_q, "latency", &s->in);
    if (rc)
        fprintf(stderr, "latency: open: %s\n", shmq_strerror(rc));
    return rc;
}

static void close_side(struct side *s)
{
    shmq_consumer_close(s->in);
    shmq_close(s->in_q);
    shmq_close(s->out_q);
}

/* Take one message and ack it; check it carries seq. */
static inline int take(struct side *s, uint64_t seq)
{
    shmq_msg_t m;
    int rc;
    while ((rc = shmq_receive(s->in, &m, block ? -1 : 0)) != 0) {
        if (rc != -EAGAIN && rc != -EINTR && rc != -ETIMEDOUT) {
            fprintf(stderr, "latency: receive: %s\n", shmq_strerror(rc));
            return rc;
        }
        if (!block)
            cpu_relax();
    }
    uint64_t got;
    memcpy(&got, m.data, 8);
    if (m.len != size || got != seq || ((const unsigned char *)m.data)[m.len - 1] != 0xA5) {
        fprintf(stderr, "latency: bad message (len %zu seq %llu, want %llu)\n", m.len,
                (unsigned long long)got, (unsigned long long)seq);
        return -EBADMSG;
    }
    rc = shmq_ack(s->in, &m);
    if (rc)
        fprintf(stderr, "latency: ack: %s\n", shmq_strerror(rc));
    return rc;
}

static inline int put(struct side *s, uint64_t seq)
{
    memcpy(buf, &seq, 8);
    int rc;
    while ((rc = shmq_publish(s->out_q, buf, size, NULL)) == -EAGAIN)
        cpu_relax();
    if (rc)
        fprintf(stderr, "latency: publish: %s\n", shmq_strerror(rc));
    return rc;
}

static int echo(void *arg)
{
    struct side s = {0};
    if (open_side(&s, name_b, name_a))
        return 2;
    for (uint64_t i = 0; i < total; i++)
        if (take(&s, i) || put(&s, i))
            return 2;
    close_side(&s);
    return 0;
}

static struct side pinger;

static int ping(void *arg)
{
    /* Opened after the fork, at the first (warm-up) ping: the child inherits no handle. */
    if (!pinger.in && open_side(&pinger, name_a, name_b))
        return -1;
    uint64_t i = pinger.seq++;
    if (put(&pinger, i) || take(&pinger, i))
        return -1;
    return 0;
}

/* groups 0: the ping-pong's queues; >= 1: the fan-out queue with that many groups. */
static int create(const char *name, unsigned groups)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 64;
    cfg.max_msg_size = size;
    cfg.durability = durability;
    if (groups)
        cfg.max_groups = groups;
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    if (rc) {
        fprintf(stderr, "latency: create %s: %s\n", name, shmq_strerror(rc));
        return rc;
    }
    for (unsigned g = 1; g < groups && !rc; g++) {
        char gname[16];
        snprintf(gname, sizeof gname, "g%u", g);
        if ((rc = shmq_group_create(q, gname, SHMQ_GROUP_BLOCK, 0)))
            fprintf(stderr, "latency: group %s: %s\n", gname, shmq_strerror(rc));
    }
    int rc2 = shmq_close(q);
    return rc ? rc : rc2;
}

/* ---- fan-out: one publisher, a consumer in each of G groups (common.h fan_run) ---- */
static shmq_t *fan_q;
static shmq_consumer_t *fan_c;

static int fan_open_pub(void *arg)
{
    int rc = shmq_open(name_a, &fan_q);
    if (rc)
        fprintf(stderr, "latency: open: %s\n", shmq_strerror(rc));
    return rc;
}

static int fan_open_recv(unsigned k, void *arg)
{
    char gname[16];
    snprintf(gname, sizeof gname, "g%u", k);
    int rc = shmq_open(name_a, &fan_q);
    if (!rc)
        rc = shmq_consumer_open_group(fan_q, k ? gname : NULL, "latency", &fan_c);
    if (rc)
        fprintf(stderr, "latency: consumer of group %u: %s\n", k, shmq_strerror(rc));
    return rc;
}

static int fan_pub(uint64_t seq, void *arg)
{
    uint64_t t0 = ticks();
    memcpy(buf, &seq, 8);
    memcpy(buf + 8, &t0, 8);
    int rc;
    unsigned spins = 0;
    while ((rc = shmq_publish(fan_q, buf, size, NULL)) == -EAGAIN)
        backoff(&spins);
    if (rc)
        fprintf(stderr, "latency: publish: %s\n", shmq_strerror(rc));
    return rc;
}

static int fan_recv(unsigned k, void *arg, uint64_t *seq, uint64_t *stamp, uint64_t *t1)
{
    shmq_msg_t m;
    int rc;
    unsigned spins = 0;
    while ((rc = shmq_receive(fan_c, &m, 0)) != 0) {
        if (rc != -EAGAIN && rc != -EINTR) {
            fprintf(stderr, "latency: receive: %s\n", shmq_strerror(rc));
            return -1;
        }
        if (fan_stopped())
            return 1;
        backoff(&spins);
    }
    *t1 = ticks();
    memcpy(seq, m.data, 8);
    memcpy(stamp, (const char *)m.data + 8, 8);
    if (m.len != size || ((const unsigned char *)m.data)[m.len - 1] != 0xA5) {
        fprintf(stderr, "latency: bad message (len %zu)\n", m.len);
        return -1;
    }
    if ((rc = shmq_ack(fan_c, &m)))
        fprintf(stderr, "latency: ack: %s\n", shmq_strerror(rc));
    return rc ? -1 : 0;
}

static void fan_close_recv(unsigned k, void *arg)
{
    shmq_consumer_close(fan_c);
    shmq_close(fan_q);
}

static const struct fan_peer shmq_fan = {fan_open_pub, fan_open_recv, fan_pub, fan_recv,
                                         fan_close_recv};

static int fan_main(unsigned groups, unsigned warm, unsigned n)
{
    snprintf(name_a, sizeof name_a, "bench-lat-fan.%d", (int)getpid());
    if (create(name_a, groups)) {
        shmq_unlink(name_a);
        return 2;
    }
    uint64_t skewed = 0;
    struct hist *h = fan_run(groups, warm, n, &shmq_fan, NULL, &skewed);
    int status = 2;
    if (h) {
        char extra[96], peer[32];
        snprintf(extra, sizeof extra, "\"durability\":\"%s\",\"receivers\":%u,\"skewed\":%llu",
                 durability_names[durability], groups, (unsigned long long)skewed);
        snprintf(peer, sizeof peer, "shmq-%s", durability_names[durability]);
        lat_print(peer, "fan", size, extra, h);
        status = 0;
    }
    if (fan_q)
        shmq_close(fan_q);
    shmq_unlink(name_a);
    return status;
}

int main(int argc, char **argv)
{
    unsigned n = 200000, warm = 10000, groups = 0;
    int ch;
    while ((ch = getopt(argc, argv, "s:m:d:n:w:G:")) != -1) {
        switch (ch) {
        case 'G': groups = (unsigned)strtoul(optarg, NULL, 0); break;
        case 's': size = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'm': block = !strcmp(optarg, "block"); break;
        case 'd':
            durability = -1;
            for (int d = 0; d < 3; d++)
                if (!strcmp(optarg, durability_names[d]))
                    durability = d;
            break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'w': warm = (unsigned)strtoul(optarg, NULL, 0); break;
        default: durability = -1;
        }
    }
    if (size < 16 || durability < 0 || optind != argc || groups > FAN_MAX || (groups && block)) {
        fprintf(stderr, "usage: latency [-s size>=16] [-m poll|block] [-d none|process|sync] "
                        "[-n samples] [-w warmup]\n"
                        "       latency -G groups(1..%d) [-s size>=16] [-d ...] [-n samples] "
                        "[-w warmup]\n", FAN_MAX);
        return 2;
    }
    buf = calloc(1, size);
    buf[size - 1] = 0xA5;
    warm = warm ? warm : 1;
    total = warm + n;
    if (groups)
        return fan_main(groups, warm, n);
    snprintf(name_a, sizeof name_a, "bench-lat-a.%d", (int)getpid());
    snprintf(name_b, sizeof name_b, "bench-lat-b.%d", (int)getpid());
    if (create(name_a, 0) || create(name_b, 0)) {
        shmq_unlink(name_a);
        return 2;
    }
    int status = 2;
    struct hist *h = lat_run(warm ? warm : 1, n, echo, ping, NULL);
    if (h) {
        char extra[64];
        snprintf(extra, sizeof extra, "\"durability\":\"%s\"", durability_names[durability]);
        char peer[32];
        snprintf(peer, sizeof peer, "shmq-%s", durability_names[durability]);
        lat_print(peer, block ? "block" : "poll", size, extra, h);
        status = 0;
    }
    if (pinger.in)
        close_side(&pinger);
    shmq_unlink(name_a);
    shmq_unlink(name_b);
    return status;
}
