/*
 * iox.c - iceoryx (Eclipse, v2 C binding) as a peer. RouDi (iox-roudi) must be running: the
 * runner starts it and stops it with SIGINT. Each process has its own runtime (a unique name).
 *
 *   iox lat [-m poll|block] [-s size] [-n samples] [-w warmup]
 *       Ping-pong (common.h lat_run): the pinger loans a chunk, writes size bytes, publishes on
 *       "ping", then takes the answer from "pong" and releases it; the echo takes, releases,
 *       loans and publishes. poll: iox_sub_take_chunk in a loop; block: a WaitSet on the
 *       subscriber's HAS_DATA state (iox_ws_wait), then take.
 *   iox tput [-p P] [-c P] [-s size] [-n msgs] [-a] [-T cap_s]
 *       P publisher / subscriber pairs, each pair on its own topic (iceoryx is publish /
 *       subscribe: every subscriber of a topic gets every sample, so a shared topic is not a
 *       work queue). Loan + write + publish, take + read + release. Publishers wait for a slow
 *       subscriber (WAIT_FOR_CONSUMER / BLOCK_PRODUCER): nothing is dropped; the count is
 *       checked. Busy-poll.
 *       -F: fan-out (issue 18): one publisher (-p 1) and C subscribers of one topic, each
 *       taking every sample; the rate is samples published per second (each taken C times).
 *   iox fan [-S subs] [-s size] [-n samples] [-w warmup]
 *       One publisher, S subscribers (4) of one topic; one-way latency from a timestamp the
 *       publisher takes just before iox_pub_loan_chunk to the subscriber's clock just after
 *       iox_sub_take_chunk returned the sample (common.h fan_run: paced, busy-poll with
 *       backoff, the samples of all subscribers in one histogram).
 * Before the first sample each side waits for SubscribeState_SUBSCRIBED and
 * iox_pub_has_subscribers() (fan: until all S subscribers are there). One JSON line on stdout.
 */
#include "common.h"

#include <iceoryx_binding_c/enums.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>

static unsigned size = 64, total;
static int block;
static char instance[32];

struct endpoint {
    iox_pub_storage_t pub_st;
    iox_sub_storage_t sub_st;
    iox_ws_storage_t ws_st;
    iox_pub_t pub;
    iox_sub_t sub;
    iox_ws_t ws;
    uint64_t seq;
};

static void runtime(const char *role)
{
    char name[64];
    snprintf(name, sizeof name, "bench-%s-%d", role, (int)getpid());
    iox_runtime_init(name);
}

static void open_endpoint(struct endpoint *e, const char *out, const char *in, int with_ws)
{
    if (out) {
        iox_pub_options_t po;
        iox_pub_options_init(&po);
        po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
        e->pub = iox_pub_init(&e->pub_st, "bench", instance, out, &po);
    }
    if (in) {
        iox_sub_options_t so;
        iox_sub_options_init(&so);
        so.queueCapacity = 256;
        so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
        e->sub = iox_sub_init(&e->sub_st, "bench", instance, in, &so);
        if (with_ws) {
            e->ws = iox_ws_init(&e->ws_st);
            iox_ws_attach_subscriber_state(e->ws, e->sub, SubscriberState_HAS_DATA, 0, NULL);
        }
    }
}

/* Wait until the subscription is up in both directions (or 20 s). */
static int wait_connected(struct endpoint *e)
{
    uint64_t deadline = now_ns() + 20000000000ull;
    while ((e->sub && iox_sub_get_subscription_state(e->sub) != SubscribeState_SUBSCRIBED) ||
           (e->pub && !iox_pub_has_subscribers(e->pub))) {
        if (now_ns() > deadline) {
            fprintf(stderr, "iox: no connection after 20 s (is iox-roudi running?)\n");
            return -1;
        }
        usleep(1000);
    }
    return 0;
}

static inline int put(struct endpoint *e, uint64_t seq)
{
    void *p;
    unsigned spins = 0;
    while (iox_pub_loan_chunk(e->pub, &p, size) != AllocationResult_SUCCESS) {
        if (tctl && atomic_load_explicit(&tctl->stop, memory_order_relaxed))
            return 1;
        backoff(&spins);
    }
    memcpy(p, &seq, 8);
    ((unsigned char *)p)[size - 1] = 0xA5;
    iox_pub_publish_chunk(e->pub, p);
    return 0;
}

/* Take one sample (poll or block), check it, release it. 1: nothing (tput: stop), -1: bad. */
static inline int take(struct endpoint *e, uint64_t want, int check)
{
    const void *p;
    while (iox_sub_take_chunk(e->sub, &p) != ChunkReceiveResult_SUCCESS) {
        if (block) {
            iox_notification_info_t info[4];
            uint64_t missed;
            iox_ws_wait(e->ws, info, 4, &missed);
        } else {
            cpu_relax();
        }
    }
    uint64_t got;
    memcpy(&got, p, 8);
    int bad = ((const unsigned char *)p)[size - 1] != 0xA5 || (check && got != want);
    iox_sub_release_chunk(e->sub, p);
    if (bad)
        fprintf(stderr, "iox: bad sample (seq %llu, want %llu)\n", (unsigned long long)got,
                (unsigned long long)want);
    return bad ? -1 : 0;
}

/* A child leaves through exit(), not the harness's _exit(): the runtime's destructors
 * deregister it from RouDi (else RouDi finds it unresponsive later, and aborts at shutdown when
 * it cannot SIGTERM the vanished process). */
static int leave(int status)
{
    fflush(stdout);
    fflush(stderr);
    exit(status);
}

static int echo(void *arg)
{
    struct endpoint e = {0};
    runtime("iox-echo");
    open_endpoint(&e, "pong", "ping", block);
    if (wait_connected(&e))
        return 2;
    for (uint64_t i = 0; i < total; i++)
        if (take(&e, i, 1) || put(&e, i))
            return 2;
    usleep(10000); /* let the last answer be taken before this publisher goes */
    return leave(0);
}

static struct endpoint pinger;
static int pinger_ready;

static int ping(void *arg)
{
    if (!pinger_ready) {
        runtime("iox-ping");
        open_endpoint(&pinger, "ping", "pong", block);
        if (wait_connected(&pinger))
            return -1;
        pinger_ready = 1;
    }
    uint64_t i = pinger.seq++;
    return put(&pinger, i) || take(&pinger, i, 1) ? -1 : 0;
}

/* ---- fan-out latency: one publisher, S subscribers of the topic "fan" ---- */
static struct endpoint fan_ep;
static unsigned fan_subs = 4;

static int fan_open_pub(void *arg)
{
    runtime("iox-fanpub");
    open_endpoint(&fan_ep, "fan", NULL, 0);
    if (wait_connected(&fan_ep))
        return -1;
    /* iox_pub_has_subscribers() says one is there; the pacing's first wait (every receiver
     * attached, i.e. subscribed) covers the others. */
    return 0;
}

static int fan_open_recv(unsigned k, void *arg)
{
    runtime("iox-fansub");
    open_endpoint(&fan_ep, NULL, "fan", 0);
    return wait_connected(&fan_ep);
}

static int fan_pub(uint64_t seq, void *arg)
{
    uint64_t t0 = ticks();
    void *p;
    unsigned spins = 0;
    while (iox_pub_loan_chunk(fan_ep.pub, &p, size) != AllocationResult_SUCCESS) {
        if (fan_stopped())
            return -1;
        backoff(&spins);
    }
    memcpy(p, &seq, 8);
    memcpy((char *)p + 8, &t0, 8);
    ((unsigned char *)p)[size - 1] = 0xA5;
    iox_pub_publish_chunk(fan_ep.pub, p);
    return 0;
}

static int fan_recv(unsigned k, void *arg, uint64_t *seq, uint64_t *stamp, uint64_t *t1)
{
    const void *p;
    unsigned spins = 0;
    while (iox_sub_take_chunk(fan_ep.sub, &p) != ChunkReceiveResult_SUCCESS) {
        if (fan_stopped())
            return 1;
        backoff(&spins);
    }
    *t1 = ticks();
    memcpy(seq, p, 8);
    memcpy(stamp, (const char *)p + 8, 8);
    int bad = ((const unsigned char *)p)[size - 1] != 0xA5;
    iox_sub_release_chunk(fan_ep.sub, p);
    if (bad)
        fprintf(stderr, "iox fan: bad sample (seq %llu)\n", (unsigned long long)*seq);
    return bad ? -1 : 0;
}

static void fan_close_recv(unsigned k, void *arg)
{
    leave(0); /* exit(), not _exit(): see leave() */
}

static const struct fan_peer iox_fan = {fan_open_pub, fan_open_recv, fan_pub, fan_recv,
                                        fan_close_recv};

/* ---- throughput: P pairs, or -F one publisher and C subscribers of one topic ---- */
static int fanout;
static int producer(unsigned i, void *arg)
{
    struct endpoint e = {0};
    char topic[16];
    snprintf(topic, sizeof topic, "t%u", i);
    runtime("iox-prod");
    open_endpoint(&e, topic, NULL, 0);
    if (wait_connected(&e))
        return 2;
    /* Fan-out: every subscriber subscribed before the first sample (a late one would miss
     * the first samples; iceoryx keeps no history here). */
    while (fanout && atomic_load_explicit(&tctl->attached, memory_order_acquire) < tctl->consumers)
        usleep(1000);
    uint64_t n = tput_share(i);
    tput_wait_start();
    for (uint64_t s = 0; s < n; s++)
        if (put(&e, s))
            break;
    tput_producer_finished();
    /* Keep the publisher until its subscriber took everything (its chunks stay valid anyway,
     * but a publisher that goes away takes its port and unread samples with it). */
    while (!tput_consumer_done())
        usleep(1000);
    return leave(0);
}

static int consumer(unsigned j, void *arg)
{
    struct endpoint e = {0};
    char topic[16];
    snprintf(topic, sizeof topic, "t%u", fanout ? 0 : j);
    runtime("iox-cons");
    open_endpoint(&e, NULL, topic, 0);
    if (wait_connected(&e))
        return 2;
    _Atomic uint64_t *count = &tctl->w[tctl->producers + j].count;
    uint64_t n = 0;
    unsigned spins = 0;
    tput_wait_start();
    for (;;) {
        const void *p;
        if (iox_sub_take_chunk(e.sub, &p) == ChunkReceiveResult_SUCCESS) {
            if (((const unsigned char *)p)[size - 1] != 0xA5)
                return 1;
            iox_sub_release_chunk(e.sub, p);
            atomic_store_explicit(count, ++n, memory_order_relaxed);
            spins = 0;
            continue;
        }
        if (tput_consumer_done())
            break;
        backoff(&spins);
    }
    return leave(0);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "lat") && strcmp(argv[1], "tput") && strcmp(argv[1], "fan"))) {
        fprintf(stderr, "usage: iox lat|tput|fan [options] (see bench/peers/iox.c)\n");
        return 2;
    }
    int is_lat = !strcmp(argv[1], "lat"), is_fan = !strcmp(argv[1], "fan"), pin = 0, ch;
    unsigned n = 0, warm = 1000, P = 1, C = 1;
    double cap = 60;
    optind = 2;
    while ((ch = getopt(argc, argv, "m:s:n:w:p:c:aT:FS:")) != -1) {
        switch (ch) {
        case 'm': block = !strcmp(optarg, "block"); break;
        case 's': size = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'w': warm = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'p': P = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'c': C = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'a': pin = 1; break;
        case 'T': cap = atof(optarg); break;
        case 'F': fanout = 1; break;
        case 'S': fan_subs = (unsigned)strtoul(optarg, NULL, 0); break;
        default: return 2;
        }
    }
    if (size < 16)
        return 2;
    snprintf(instance, sizeof instance, "i%d", (int)getpid());
    if (is_lat) {
        warm = warm ? warm : 1;
        total = warm + (n ? n : 100000);
        struct hist *h = lat_run(warm, n ? n : 100000, echo, ping, NULL);
        if (!h)
            return 2;
        lat_print("iceoryx", block ? "block" : "poll", size, NULL, h);
        return 0;
    }
    if (is_fan) {
        uint64_t skewed = 0;
        n = n ? n : 100000;
        struct hist *h = fan_run(fan_subs, warm ? warm : 1, n, &iox_fan, NULL, &skewed);
        if (!h)
            return 2;
        char extra[64];
        snprintf(extra, sizeof extra, "\"receivers\":%u,\"skewed\":%llu", fan_subs,
                 (unsigned long long)skewed);
        lat_print("iceoryx", "fan", size, extra, h);
        return 0;
    }
    if (fanout ? P != 1 || C < 1 : P != C || P < 1) {
        fprintf(stderr, "iox tput: -p P -c P (pairs), or -F -p 1 -c C (one topic)\n");
        return 2;
    }
    tput_fan = fanout ? C : 1;
    uint64_t msgs = n ? n : 1000000, taken;
    double secs;
    int capped;
    int rc = tput_run(P, C, msgs, pin, cap, producer, consumer, NULL, &secs, &taken, &capped);
    if (rc)
        return rc;
    /* fan-out: samples published per second, each taken by every subscriber */
    tput_print("iceoryx", fanout ? "fanout" : "pairs", P, C, size, pin, msgs, secs,
               taken / tput_fan, capped);
    return 0;
}
