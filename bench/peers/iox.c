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
 * Before the first sample each side waits for SubscribeState_SUBSCRIBED and
 * iox_pub_has_subscribers(). One JSON line on stdout.
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

/* ---- throughput: P pairs ---- */
static int producer(unsigned i, void *arg)
{
    struct endpoint e = {0};
    char topic[16];
    snprintf(topic, sizeof topic, "t%u", i);
    runtime("iox-prod");
    open_endpoint(&e, topic, NULL, 0);
    if (wait_connected(&e))
        return 2;
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
    snprintf(topic, sizeof topic, "t%u", j);
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
    if (argc < 2 || (strcmp(argv[1], "lat") && strcmp(argv[1], "tput"))) {
        fprintf(stderr, "usage: iox lat|tput [options] (see bench/peers/iox.c)\n");
        return 2;
    }
    int is_lat = !strcmp(argv[1], "lat"), pin = 0, ch;
    unsigned n = 0, warm = 1000, P = 1, C = 1;
    double cap = 60;
    optind = 2;
    while ((ch = getopt(argc, argv, "m:s:n:w:p:c:aT:")) != -1) {
        switch (ch) {
        case 'm': block = !strcmp(optarg, "block"); break;
        case 's': size = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'w': warm = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'p': P = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'c': C = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'a': pin = 1; break;
        case 'T': cap = atof(optarg); break;
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
    if (P != C || P < 1) {
        fprintf(stderr, "iox tput: -p P -c P (pairs)\n");
        return 2;
    }
    uint64_t msgs = n ? n : 1000000, taken;
    double secs;
    int capped;
    int rc = tput_run(P, C, msgs, pin, cap, producer, consumer, NULL, &secs, &taken, &capped);
    if (rc)
        return rc;
    tput_print("iceoryx", "pairs", P, C, size, pin, msgs, secs, taken, capped);
    return 0;
}
