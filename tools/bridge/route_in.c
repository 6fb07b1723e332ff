/*
 * route_in.c - JetStream durable pull consumer -> local queue.
 *
 * The route thread fetches up to --batch messages from the durable consumer DURABLE of STREAM
 * (created with explicit acks, --ack-wait-ms, unlimited deliveries and the optional filter
 * subject if it does not exist; an existing one is used as it is, so several bridges may share
 * it as competing consumers). The fetched messages are published into the local queue with
 * shmq_publish_batch() (a queue without headers; with headers one shmq_publish_ex() each); a
 * message the batch could not take (the queue is full) is published alone with
 * shmq_publish_timed() (waiting up to --local-wait-ms for room, with InProgress acks to keep
 * JetStream from redelivering meanwhile), then the batch goes on. Only a message the local
 * publish reported published (in durability SYNC: after the log flush) is acked to JetStream. A failed local publish (queue full past the
 * wait, message too large, ...) is NakWithDelay'd (--retry-delay-ms): never dropped.
 *
 * Crash points: killed before the local publish, or after it but before JetStream saw the ack:
 * JetStream redelivers after AckWait. The second case gives the local queue the message twice
 * (at-least-once; the payload is the same, a reader that must see it once dedups by content or
 * by the sender's id). A batch is always finished, even when stopping.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"

struct in_state {
    jsCtx *js;
    natsSubscription *sub;
    int64_t last_err_log_ms;
    bool headers; /* the local queue carries headers (max_header_bytes > 0) */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int ensure_consumer(struct route *r, const struct bridge_opts *o, struct in_state *st)
{
    char q[300];
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, st->js, r->stream, r->durable, NULL, &jerr);
    if (s == NATS_OK) {
        if (!r->subject[0] && ci->Config && ci->Config->FilterSubject)
            snprintf(r->subject, sizeof r->subject, "%s", ci->Config->FilterSubject);
        jsConsumerInfo_Destroy(ci);
        return 0;
    }
    if (jerr == JSStreamNotFoundErr) {
        blog(LOG_ERROR, "stream_not_found", "route=in stream=%s", r->stream);
        fprintf(stderr,
                "shmq-bridge: --in %s:%s:%s: stream '%s' not found (create it, e.g. "
                "--create-stream %s:SUBJECT)\n",
                r->stream, r->durable, r->queue, r->stream, r->stream);
        return BRIDGE_EXIT_STREAM;
    }
    if (jerr != JSConsumerNotFoundErr) {
        blog(LOG_ERROR, "consumer_info_failed", "route=in stream=%s durable=%s error=%s jserr=%d",
             r->stream, r->durable, logfmt_quote(nats_err(s), q, sizeof q), (int)jerr);
        fprintf(stderr, "shmq-bridge: --in %s:%s:%s: %s (JetStream error %d)\n", r->stream,
                r->durable, r->queue, nats_err(s), (int)jerr);
        return BRIDGE_EXIT_STREAM;
    }
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = r->durable;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckWait = (int64_t)o->ack_wait_ms * 1000000; /* ns */
    cc.MaxDeliver = -1;
    if (r->subject[0])
        cc.FilterSubject = r->subject;
    s = js_AddConsumer(&ci, st->js, r->stream, &cc, NULL, &jerr);
    if (s != NATS_OK) {
        blog(LOG_ERROR, "consumer_create_failed", "route=in stream=%s durable=%s error=%s jserr=%d",
             r->stream, r->durable, logfmt_quote(nats_err(s), q, sizeof q), (int)jerr);
        fprintf(stderr,
                "shmq-bridge: --in %s:%s:%s: cannot create durable consumer: %s "
                "(JetStream error %d)\n",
                r->stream, r->durable, r->queue, nats_err(s), (int)jerr);
        return BRIDGE_EXIT_STREAM;
    }
    blog(LOG_INFO, "consumer_created", "route=in stream=%s durable=%s filter=%s ack_wait_ms=%u",
         r->stream, r->durable, r->subject[0] ? r->subject : "-", o->ack_wait_ms);
    jsConsumerInfo_Destroy(ci);
    return 0;
}

int route_in_setup(struct route *r, const struct bridge_opts *o, natsConnection *nc)
{
    char q[300];
    int rc = shmq_open(r->queue, &r->q);
    if (rc < 0) {
        blog(LOG_ERROR, "queue_open_failed", "route=in queue=%s error=%s", r->queue,
             logfmt_quote(shmq_strerror(rc), q, sizeof q));
        fprintf(stderr, "shmq-bridge: --in %s:%s:%s: cannot open queue '%s': %s\n", r->stream,
                r->durable, r->queue, r->queue, shmq_strerror(rc));
        return BRIDGE_EXIT_QUEUE;
    }
    struct in_state *st = calloc(1, sizeof *st);
    if (!st)
        return BRIDGE_EXIT_RUNTIME;
    r->state = st;
    shmq_config_t cfg;
    st->headers = shmq_get_config(r->q, &cfg) == 0 && cfg.max_header_bytes > 0;
    natsStatus s = natsConnection_JetStream(&st->js, nc, NULL);
    if (s != NATS_OK) {
        fprintf(stderr, "shmq-bridge: JetStream context: %s\n", nats_err(s));
        return BRIDGE_EXIT_STREAM;
    }
    rc = ensure_consumer(r, o, st);
    if (rc)
        return rc;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = r->stream;
    so.Consumer = r->durable; /* bind: never create or change it here */
    jsErrCode jerr = 0;
    s = js_PullSubscribe(&st->sub, st->js, r->subject[0] ? r->subject : NULL, r->durable, NULL, &so,
                         &jerr);
    if (s != NATS_OK) {
        blog(LOG_ERROR, "subscribe_failed", "route=in stream=%s durable=%s error=%s jserr=%d",
             r->stream, r->durable, logfmt_quote(nats_err(s), q, sizeof q), (int)jerr);
        fprintf(stderr, "shmq-bridge: --in %s:%s:%s: pull subscribe: %s (JetStream error %d)\n",
                r->stream, r->durable, r->queue, nats_err(s), (int)jerr);
        return BRIDGE_EXIT_STREAM;
    }
    return 0;
}

/* The headers a consumer on this host deduplicates and traces by, without an envelope. */
static bool identity_header(const char *key)
{
    return strcmp(key, "Nats-Msg-Id") == 0 || strcmp(key, "Shmq-Id") == 0 ||
           strcmp(key, "Shmq-Host") == 0;
}

/* The NATS headers of msg as shmq headers, into h (at most max), the identity ones
 * (identity_header) first, so that neither the cap nor a fallback to them alone loses them;
 * with only_identity, those alone. The strings belong to msg. *n gets how many, *all how many
 * msg has (more than *n: some did not fit); 0 when it has none or they cannot be read. */
static void nats_headers(natsMsg *msg, shmq_header_t *h, size_t max, bool only_identity,
                         uint32_t *n, uint32_t *all)
{
    const char **keys = NULL;
    int nk = 0;
    *n = *all = 0;
    if (natsMsgHeader_Keys(msg, &keys, &nk) != NATS_OK)
        return;
    for (int pass = 0; pass < (only_identity ? 1 : 2); pass++) {
        for (int i = 0; i < nk; i++) {
            if (identity_header(keys[i]) != (pass == 0))
                continue;
            const char **vals = NULL;
            int nv = 0;
            if (natsMsgHeader_Values(msg, keys[i], &vals, &nv) != NATS_OK)
                continue;
            for (int j = 0; j < nv; j++, (*all)++)
                if (*n < max)
                    h[(*n)++] = (shmq_header_t){keys[i], strlen(keys[i]), vals[j], strlen(vals[j])};
            free((void *)vals);
        }
    }
    free((void *)keys);
}

/* Publish data with the n headers h (n 0: none), polling a full queue up to until. */
static int publish_headers(struct route *r, const void *data, size_t len,
                           const shmq_header_t *h, uint32_t n, int64_t until, uint64_t *id)
{
    if (!n)
        return shmq_publish_timed(r->q, data, len, id, (int)(until > now_ms() ? until - now_ms() : 0));
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.headers = h;
    o.n_headers = n;
    for (;;) {
        int rc = shmq_publish_ex(r->q, data, len, &o, id);
        if (rc != -EAGAIN || now_ms() >= until)
            return rc == -EAGAIN ? -ETIMEDOUT : rc;
        sleep_ms(10);
    }
}

/* One local publish of msg, waiting up to wait_ms for room: with its NATS headers when the
 * queue carries headers (shmq_publish_ex, polled on a full queue), else as before. Headers the
 * queue refuses (more or larger than its limits, or more than 64) are dropped, said in the
 * log, rather than the message: the payload is what the route promises to carry. The identity
 * headers (Nats-Msg-Id, Shmq-Id, Shmq-Host) are kept when they alone fit, so a consumer can
 * still deduplicate. */
static int local_publish(struct route *r, struct in_state *st, natsMsg *msg, int wait_ms,
                         uint64_t *id)
{
    const void *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    shmq_header_t h[64];
    uint32_t n = 0, all = 0;
    if (st->headers)
        nats_headers(msg, h, sizeof h / sizeof h[0], false, &n, &all);
    int64_t until = now_ms() + wait_ms;
    int rc = publish_headers(r, data, len, h, n, until, id);
    if (n && (rc == -EMSGSIZE || rc == -EINVAL)) {
        char q[300];
        logfmt_quote(shmq_last_error_detail(), q, sizeof q);
        uint32_t kept = 0;
        nats_headers(msg, h, sizeof h / sizeof h[0], true, &kept, &all);
        rc = publish_headers(r, data, len, h, kept, until, id);
        if (kept && (rc == -EMSGSIZE || rc == -EINVAL))
            rc = publish_headers(r, data, len, h, kept = 0, until, id);
        blog(LOG_WARN, "headers_dropped", "route=in queue=%s count=%u kept=%u error=%s",
             r->queue, n - kept, kept, q);
    } else if (all > n) {
        blog(LOG_WARN, "headers_dropped", "route=in queue=%s count=%u kept=%u error=%s",
             r->queue, all - n, n, "\"more than 64 headers\"");
    }
    return rc;
}

static void settle(struct route *r, struct in_state *st, natsMsg *msg, int rc, uint64_t id);

/* Hand one fetched message to the local queue, then ack or nak it to JetStream. */
static void deliver(struct route *r, struct in_state *st, natsMsg *msg)
{
    const struct bridge_opts *o = r->o;
    /* A full local queue is back-pressure, not a failure: wait for room (up to
     * --local-wait-ms), telling JetStream every second that the message is in progress so it
     * is not redelivered meanwhile, and so that the order of the stream is kept. */
    uint64_t id = 0;
    int rc;
    int64_t give_up = now_ms() + o->local_wait_ms;
    for (;;) {
        int64_t left = give_up - now_ms();
        rc = local_publish(r, st, msg,
                           left <= 0     ? 0
                           : left > 1000 ? 1000
                                         : (int)left,
                           &id);
        if (rc == -EINTR && !g_stop)
            continue;
        if ((rc != -ETIMEDOUT && rc != -EAGAIN) || g_stop || now_ms() >= give_up)
            break;
        natsMsg_InProgress(msg, NULL);
    }
    settle(r, st, msg, rc, id);
}

/* The local publish of msg returned rc: ack it to JetStream (0), else nak it with a delay. */
static void settle(struct route *r, struct in_state *st, natsMsg *msg, int rc, uint64_t id)
{
    const struct bridge_opts *o = r->o;
    char q[300];
    if (rc == 0) {
        natsStatus s = natsMsg_Ack(msg, NULL);
        atomic_fetch_add_explicit(&r->n.bridged, 1, memory_order_relaxed);
        if (s != NATS_OK) /* redelivered after AckWait: a duplicate in the local queue */
            blog(LOG_WARN, "ack_failed",
                 "route=in stream=%s durable=%s queue=%s id=%" PRIu64 " error=%s", r->stream,
                 r->durable, r->queue, id, logfmt_quote(nats_err(s), q, sizeof q));
        return;
    }
    atomic_fetch_add_explicit(&r->n.failed, 1, memory_order_relaxed);
    natsStatus s = natsMsg_NakWithDelay(msg, o->retry_delay_ms, NULL);
    int64_t now = now_ms();
    if (now - st->last_err_log_ms >= 1000) {
        st->last_err_log_ms = now;
        blog(LOG_WARN, "local_publish_failed",
             "route=in stream=%s durable=%s queue=%s error=%s "
             "len=%d nak=%s retry_delay_ms=%u",
             r->stream, r->durable, r->queue, logfmt_quote(shmq_strerror(rc), q, sizeof q),
             natsMsg_GetDataLength(msg), s == NATS_OK ? "sent" : "failed", o->retry_delay_ms);
    }
}

/* Hand a fetched list to the local queue in order: batches of what the queue takes at once
 * (shmq_publish_batch: the published ones are a prefix, acked to JetStream), a message the
 * batch stopped at delivered alone (deliver(): it waits for room, or names the error and naks),
 * then the rest as a batch again. A queue that carries headers gets one publish each (no batch
 * call takes headers). */
static void deliver_list(struct route *r, struct in_state *st, natsMsg **msgs, int count)
{
    enum { BATCH = 64 };
    int i = 0;
    while (i < count) {
        if (st->headers) {
            deliver(r, st, msgs[i++]);
            continue;
        }
        shmq_iov_t iov[BATCH];
        uint64_t ids[BATCH];
        size_t n = 0, done = 0;
        for (; n < BATCH && i + (int)n < count; n++)
            iov[n] = (shmq_iov_t){natsMsg_GetData(msgs[i + (int)n]),
                                  (size_t)natsMsg_GetDataLength(msgs[i + (int)n])};
        int rc = shmq_publish_batch(r->q, iov, n, ids, &done);
        /* SYNC -EIO: queued, the flush that covers them failed: nak each, as a single
         * publish's -EIO is (JetStream redelivers it: at least once) */
        for (size_t k = 0; k < done; k++)
            settle(r, st, msgs[i + (int)k], rc == -EIO ? -EIO : 0, ids[k]);
        i += (int)done;
        if (rc != 0 && i < count && (rc != -EIO || done == 0))
            deliver(r, st, msgs[i++]); /* full: wait for room; else its own error, nak */
    }
}

void *route_in_run(void *arg)
{
    struct route *r = arg;
    struct in_state *st = r->state;
    const struct bridge_opts *o = r->o;
    blog(LOG_INFO, "route_started", "route=in stream=%s durable=%s queue=%s batch=%u", r->stream,
         r->durable, r->queue, o->batch);
    int backoff_ms = 50;
    while (!g_stop) {
        if (!atomic_load_explicit(&g_connected, memory_order_relaxed)) {
            sleep_ms(50);
            continue;
        }
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s =
            natsSubscription_Fetch(&list, r->state ? st->sub : NULL, (int)o->batch, 500, &jerr);
        if (s == NATS_TIMEOUT) {
            backoff_ms = 50;
            continue;
        }
        if (s != NATS_OK) {
            /* Connection lost mid-fetch, server restarting, consumer deleted: retry with a
             * backoff; the connection callbacks log the outage itself. */
            int64_t now = now_ms();
            if (now - st->last_err_log_ms >= 1000) {
                char q[300];
                st->last_err_log_ms = now;
                blog(LOG_WARN, "fetch_failed", "route=in stream=%s durable=%s error=%s jserr=%d",
                     r->stream, r->durable, logfmt_quote(nats_err(s), q, sizeof q), (int)jerr);
            }
            sleep_ms(backoff_ms);
            if (backoff_ms < (int)o->reconnect_max_ms)
                backoff_ms *= 2;
            continue;
        }
        backoff_ms = 50;
        deliver_list(r, st, list.Msgs, list.Count); /* the whole batch, even when stopping */
        jsMsgMetaData *meta = NULL; /* lag: what the consumer still holds after this batch */
        if (list.Count > 0 && natsMsg_GetMetaData(&meta, list.Msgs[list.Count - 1]) == NATS_OK) {
            atomic_store_explicit(&r->n.lag, (int64_t)meta->NumPending, memory_order_relaxed);
            jsMsgMetaData_Destroy(meta);
        }
        natsMsgList_Destroy(&list);
    }
    blog(LOG_INFO, "route_stopped", "route=in stream=%s durable=%s queue=%s bridged=%" PRIu64,
         r->stream, r->durable, r->queue, atomic_load(&r->n.bridged));
    return NULL;
}

void route_in_teardown(struct route *r)
{
    struct in_state *st = r->state;
    if (st) {
        if (st->sub) /* unsubscribe only: the durable consumer stays for the next bridge */
            natsSubscription_Destroy(st->sub);
        st->sub = NULL;
        if (st->js)
            jsCtx_Destroy(st->js);
        st->js = NULL;
    }
    if (r->q)
        shmq_close(r->q);
    r->q = NULL;
}

void route_in_free(struct route *r)
{
    free(r->state);
    r->state = NULL;
}
