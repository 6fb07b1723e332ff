/*
 * route_out.c - local queue -> JetStream subject.
 *
 * The route thread is an ordinary shmq consumer. It takes what is ready with shmq_receive_batch
 * (up to RECV_BATCH, never more than the window has room for); for each message it builds a
 * NATS message (payload copied; headers Nats-Msg-Id = HOST/QUEUE/ID, Shmq-Id, Shmq-Attempt,
 * Shmq-Host, Shmq-Queue), records it in the in-flight ring, and publishes it asynchronously.
 * The library's publish-ack handler (its own thread) marks the ring entry done; the route
 * thread pops done entries in order from the head and acks (success, or duplicate: one
 * shmq_ack_batch for what one pop took) or nacks (error or timeout, with --retry-delay-ms) the
 * shmq message. A message is acked only once its own publish ack came: batching changes how
 * many calls settle them, not when each may be settled. Only the route thread touches the
 * shmq consumer (one thread at a time, as shmq.h requires); the heartbeat thread keeps it alive
 * while it waits for acks.
 *
 * The ring: entries [head, tail) are in flight, at most --window of them. The route thread
 * alone moves tail (append) and head (pop); the ack handler only changes the state of an entry
 * in [head, tail). All three under `mu`; `cv` wakes the route thread when an entry completes.
 *
 * Crash points and what follows (at-least-once, duplicates dropped by JetStream):
 *   killed before the publish reached the server: the watchdog (or any consumer's maintenance)
 *     redelivers the message, the next bridge publishes it;
 *   killed after JetStream stored it, before the shmq ack: redelivered, republished with the
 *     same Nats-Msg-Id, and JetStream's duplicate window drops it (pub ack Duplicate=true).
 * A consumer fenced while waiting (-ESTALE) is reopened; the acks of its old deliveries are
 * skipped (the messages come back and are deduplicated the same way).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bridge.h"

#define RECV_BATCH 64 /* messages per shmq_receive_batch */

enum entry_state { PENDING, DONE_OK, DONE_DUP, DONE_FAILED };

struct entry {
    natsMsg *nm; /* identity of the publish (the library hands it back to the handler); once
                  * done ours again, destroyed by the route thread when it pops the entry */
    shmq_msg_t m;   /* the delivery to ack or nack */
    uint32_t epoch; /* consumer epoch that received it */
    enum entry_state state;
    natsStatus err;
    int jserr;
};

struct out_state {
    shmq_consumer_t *c;
    uint32_t epoch; /* bumped when the consumer is reopened */
    natsConnection *nc;
    jsCtx *js;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* signalled by the ack handler when the route thread waits */
    uint64_t completed; /* publish acks (or errors) received so far */
    uint64_t wake_at;   /* the route thread waits until completed reaches this */
    bool waiting;       /* ... asleep on cv: only then does the handler signal */
    struct entry *ring;
    uint32_t cap;        /* --window */
    uint64_t head, tail; /* monotonic; ring[i % cap] */
    uint64_t pending;    /* no entry in [head, pending) is PENDING: the ack handler's search
                          * starts here (acks come in publish order, so it finds the first) */
    char consumer_name[SHMQ_CONSUMER_NAME_MAX];
    /* "HOST/QUEUE[@GROUP]/", the Nats-Msg-Id of every message but its id, made once */
    char msgid_prefix[BRIDGE_HOST_MAX + SHMQ_NAME_MAX + SHMQ_GROUP_NAME_MAX + 8];
    size_t msgid_prefix_len;
    struct timespec last_fail_log;
    uint64_t fails_unlogged;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until n more publish acks came in, or ms passed. Waking a thread costs tens of
 * microseconds on an idle core: with a full window the route thread sleeps until an eighth of
 * it completed, not once per ack. */
static void wait_completions(struct out_state *st, uint64_t n, int ms)
{
    pthread_mutex_lock(&st->mu);
    st->wake_at = st->completed + n;
    st->waiting = true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)ms * 1000000;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    while (st->completed < st->wake_at &&
           pthread_cond_timedwait(&st->cv, &st->mu, &ts) != ETIMEDOUT)
        ;
    st->waiting = false;
    pthread_mutex_unlock(&st->mu);
}

/* The library's publish-ack handler: runs on its thread, once per async publish. */
static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct route *r = closure;
    struct out_state *st = r->state;
    pthread_mutex_lock(&st->mu);
    bool found = false;
    if (st->pending < st->head)
        st->pending = st->head;
    while (st->pending < st->tail && st->ring[st->pending % st->cap].state != PENDING)
        st->pending++;
    for (uint64_t i = st->pending; i < st->tail; i++) {
        struct entry *e = &st->ring[i % st->cap];
        if (e->nm == msg && e->state == PENDING) {
            /* Kept, not destroyed here: the route thread that made it frees it, so its
             * memory goes back to the allocator's cache of the thread that allocates the next
             * message (a free from this thread takes the arena's lock, and costs both threads
             * more than the message itself). Not a PENDING entry any more, so its address
             * cannot match again until then. */
            if (pa)
                e->state = pa->Duplicate ? DONE_DUP : DONE_OK;
            else {
                e->state = DONE_FAILED;
                e->err = pae ? pae->Err : NATS_ERR;
                e->jserr = pae ? (int)pae->ErrCode : 0;
            }
            found = true;
            break;
        }
    }
    st->completed++;
    if (st->waiting && st->completed >= st->wake_at) /* one wake-up per batch of acks */
        pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (!found) {
        blog(LOG_WARN, "pub_ack_unknown", "route=out queue=%s", r->queue);
        natsMsg_Destroy(msg);
    }
}

static void log_fail(struct route *r, struct out_state *st, const char *what, natsStatus s,
                     int jserr, uint64_t id)
{
    /* At most one line a second per route: an outage fails a whole window at once. */
    int64_t now = now_ms();
    int64_t last = (int64_t)st->last_fail_log.tv_sec * 1000 + st->last_fail_log.tv_nsec / 1000000;
    if (now - last < 1000 && last != 0) {
        st->fails_unlogged++;
        return;
    }
    st->last_fail_log.tv_sec = now / 1000;
    st->last_fail_log.tv_nsec = (now % 1000) * 1000000;
    char q[300];
    blog(LOG_WARN, what,
         "route=out queue=%s subject=%s id=%" PRIu64
         " error=%s jserr=%d retry_delay_ms=%u suppressed=%" PRIu64,
         r->queue, r->subject, id, logfmt_quote(natsStatus_GetText(s), q, sizeof q), jserr,
         r->o->retry_delay_ms, st->fails_unlogged);
    st->fails_unlogged = 0;
}

/* Ack msgs[0..n), whose publishes JetStream confirmed, in one call. */
static void ack_confirmed(struct route *r, struct out_state *st, const shmq_msg_t *msgs, size_t n)
{
    size_t acked = 0;
    int rc = shmq_ack_batch(st->c, msgs, n, &acked);
    atomic_fetch_add_explicit(&r->n.bridged, acked, memory_order_relaxed);
    if (rc == -ESTALE) {
        /* Fenced and redelivered meanwhile: the next delivery is deduplicated by JetStream. */
        atomic_fetch_add_explicit(&r->n.stale, n - acked, memory_order_relaxed);
    } else if (rc < 0) {
        blog(LOG_WARN, "ack_failed",
             "route=out queue=%s ids=%" PRIu64 "..%" PRIu64 " failed=%zu error=\"%s\"", r->queue,
             msgs[0].id, msgs[n - 1].id, n - acked, shmq_strerror(rc));
    }
}

/* Pop the done entries at the head and settle them: the failed ones nacked one by one, the
 * confirmed ones acked together. Returns how many are still in flight. */
static uint64_t drain_done(struct route *r, struct out_state *st)
{
    enum { BATCH = 64 };
    struct entry done[BATCH];
    shmq_msg_t confirmed[BATCH];
    for (;;) {
        int n = 0;
        pthread_mutex_lock(&st->mu);
        while (n < BATCH && st->head < st->tail && st->ring[st->head % st->cap].state != PENDING)
            done[n++] = st->ring[st->head++ % st->cap];
        uint64_t left = st->tail - st->head;
        pthread_mutex_unlock(&st->mu);
        size_t nc = 0;
        for (int i = 0; i < n; i++) {
            const struct entry *e = &done[i];
            natsMsg_Destroy(e->nm);
            atomic_fetch_sub_explicit(&r->n.inflight, 1, memory_order_relaxed);
            if (e->epoch != st->epoch)
                continue; /* a delivery of a consumer since reopened: it comes back by itself */
            if (e->state != DONE_FAILED) {
                if (e->state == DONE_DUP)
                    atomic_fetch_add_explicit(&r->n.duplicates, 1, memory_order_relaxed);
                confirmed[nc++] = e->m;
                continue;
            }
            atomic_fetch_add_explicit(&r->n.failed, 1, memory_order_relaxed);
            log_fail(r, st, "publish_failed", e->err, e->jserr, e->m.id);
            int rc = shmq_nack(st->c, &e->m, r->o->retry_delay_ms);
            if (rc == -ESTALE)
                atomic_fetch_add_explicit(&r->n.stale, 1, memory_order_relaxed);
            else if (rc < 0)
                blog(LOG_WARN, "ack_failed", "route=out queue=%s id=%" PRIu64 " error=\"%s\"",
                     r->queue, e->m.id, shmq_strerror(rc));
        }
        if (nc)
            ack_confirmed(r, st, confirmed, nc);
        if (n < BATCH)
            return left;
    }
}

static int open_consumer(struct route *r, struct out_state *st)
{
    int rc = shmq_consumer_open_group(r->q, r->group[0] ? r->group : NULL, st->consumer_name,
                                      &st->c);
    if (rc == 0) {
        rc = shmq_consumer_heartbeat_thread(st->c, 0);
        if (rc < 0) {
            shmq_consumer_close(st->c);
            st->c = NULL;
        }
    }
    return rc;
}

/* v in decimal, NUL-terminated, ending at end[-1]; returns where it starts. The headers of
 * every message are formatted here: snprintf took about 2,000 instructions a message of the
 * route thread (callgrind), for three numbers. */
static char *u64_dec(char *end, uint64_t v)
{
    char *p = end - 1;
    *p = 0;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

/* The headers the bridge sets itself: a message's own header of one of these names is not
 * copied (the bridge's value is the one a far consumer deduplicates by). */
static bool bridge_header(const char *key)
{
    static const char *const own[] = {"Nats-Msg-Id", "Shmq-Id", "Shmq-Attempt", "Shmq-Host",
                                      "Shmq-Queue"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcasecmp(key, own[i]) == 0)
            return true;
    return false;
}

/* The message's shmq headers (read in place: their key and value are NUL-terminated) as NATS
 * headers, after the bridge's own. */
static natsStatus copy_headers(shmq_consumer_t *c, const shmq_msg_t *m, natsMsg *nm)
{
    shmq_header_t h[SHMQ_HEADERS_MAX];
    size_t n = 0;
    if (shmq_msg_headers(c, m, h, SHMQ_HEADERS_MAX, &n) != 0)
        return NATS_OK; /* a corrupt block: the message goes on without them */
    for (size_t i = 0; i < n && i < SHMQ_HEADERS_MAX; i++) {
        if (bridge_header(h[i].key))
            continue;
        natsStatus s = natsMsgHeader_Add(nm, h[i].key, h[i].value);
        if (s != NATS_OK)
            return s;
    }
    return NATS_OK;
}

static natsStatus build_msg(struct route *r, shmq_consumer_t *c, const shmq_msg_t *m,
                            natsMsg **out)
{
    natsMsg *nm = NULL;
    natsStatus s = natsMsg_Create(&nm, r->subject, NULL, m->data, (int)m->len);
    if (s != NATS_OK)
        return s;
    const struct out_state *st = r->state;
    char msgid[sizeof st->msgid_prefix + 24], attempt[24];
    char *id = u64_dec(msgid + sizeof msgid, m->id);
    size_t idlen = (size_t)(msgid + sizeof msgid - 1 - id);
    memcpy(msgid, st->msgid_prefix, st->msgid_prefix_len);
    memmove(msgid + st->msgid_prefix_len, id, idlen + 1); /* HOST/QUEUE[@GROUP]/ID */
    id = msgid + st->msgid_prefix_len;
    if (natsMsgHeader_Set(nm, "Nats-Msg-Id", msgid) != NATS_OK ||
        natsMsgHeader_Set(nm, "Shmq-Id", id) != NATS_OK ||
        natsMsgHeader_Set(nm, "Shmq-Attempt", u64_dec(attempt + sizeof attempt, m->attempt)) !=
            NATS_OK ||
        natsMsgHeader_Set(nm, "Shmq-Host", r->o->host) != NATS_OK ||
        natsMsgHeader_Set(nm, "Shmq-Queue", r->queue) != NATS_OK ||
        copy_headers(c, m, nm) != NATS_OK) {
        natsMsg_Destroy(nm);
        return NATS_NO_MEMORY;
    }
    *out = nm;
    return NATS_OK;
}

/* Publish one received message; on a synchronous failure nack it at once. */
static void publish_one(struct route *r, struct out_state *st, const shmq_msg_t *m)
{
    natsMsg *nm = NULL;
    natsStatus s = build_msg(r, st->c, m, &nm);
    if (s != NATS_OK) {
        log_fail(r, st, "publish_failed", s, 0, m->id);
        atomic_fetch_add_explicit(&r->n.failed, 1, memory_order_relaxed);
        shmq_nack(st->c, m, r->o->retry_delay_ms);
        return;
    }
    pthread_mutex_lock(&st->mu);
    struct entry *e = &st->ring[st->tail % st->cap];
    *e = (struct entry){.nm = nm, .m = *m, .epoch = st->epoch, .state = PENDING};
    st->tail++;
    pthread_mutex_unlock(&st->mu);
    atomic_fetch_add_explicit(&r->n.inflight, 1, memory_order_relaxed);

    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = r->o->publish_timeout_ms; /* the handler gets NATS_TIMEOUT after this */
    natsMsg *owned = nm;
    s = js_PublishMsgAsync(st->js, &owned, &po);
    if (s == NATS_OK)
        return;
    /* Not taken by the library: no ack will come. The entry is the tail (only this thread
     * appends) and still PENDING (the handler never saw this message). */
    pthread_mutex_lock(&st->mu);
    st->tail--;
    pthread_mutex_unlock(&st->mu);
    atomic_fetch_sub_explicit(&r->n.inflight, 1, memory_order_relaxed);
    natsMsg_Destroy(owned);
    atomic_fetch_add_explicit(&r->n.failed, 1, memory_order_relaxed);
    log_fail(r, st, "publish_failed", s, 0, m->id);
    shmq_nack(st->c, m, r->o->retry_delay_ms);
}

int route_out_setup(struct route *r, const struct bridge_opts *o, natsConnection *nc)
{
    char q[300];
    int rc = shmq_open(r->queue, &r->q);
    if (rc < 0) {
        blog(LOG_ERROR, "queue_open_failed", "route=out queue=%s error=%s", r->queue,
             logfmt_quote(shmq_strerror(rc), q, sizeof q));
        fprintf(stderr, "shmq-bridge: --out %s:%s: cannot open queue '%s': %s\n", r->queue,
                r->subject, r->queue, shmq_strerror(rc));
        return BRIDGE_EXIT_QUEUE;
    }
    struct out_state *st = calloc(1, sizeof *st);
    if (!st)
        return BRIDGE_EXIT_RUNTIME;
    r->state = st;
    st->nc = nc;
    st->cap = o->window;
    st->ring = calloc(st->cap, sizeof *st->ring);
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(st->consumer_name, sizeof st->consumer_name, "bridge-out");
    /* a group's route names it: two groups of one queue bridged into one stream are two
     * deliveries, not duplicates */
    int pl = snprintf(st->msgid_prefix, sizeof st->msgid_prefix, "%s/%s%s%s/", o->host, r->queue,
                      r->group[0] ? "@" : "", r->group);
    if (pl < 0 || (size_t)pl >= sizeof st->msgid_prefix) /* cannot be: sized for the longest */
        return BRIDGE_EXIT_RUNTIME;
    st->msgid_prefix_len = (size_t)pl;
    if (!st->ring)
        return BRIDGE_EXIT_RUNTIME;

    /* A subject no stream captures would fail every publish: refuse it now. */
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Info.SubjectsFilter = r->subject;
    jsCtx *probe = NULL;
    jsStreamNamesList *names = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsConnection_JetStream(&probe, nc, NULL);
    if (s == NATS_OK)
        s = js_StreamNames(&names, probe, &jo, &jerr);
    int count = names ? names->Count : 0;
    jsStreamNamesList_Destroy(names);
    jsCtx_Destroy(probe);
    if ((s != NATS_OK && s != NATS_NOT_FOUND) || count == 0) {
        const char *why =
            s == NATS_OK || s == NATS_NOT_FOUND ? "no JetStream stream captures it" : nats_err(s);
        blog(LOG_ERROR, "subject_not_in_stream", "route=out queue=%s subject=%s error=%s", r->queue,
             r->subject, logfmt_quote(why, q, sizeof q));
        fprintf(stderr,
                "shmq-bridge: --out %s:%s: subject '%s': %s (create the stream, e.g. "
                "--create-stream NAME:%s)\n",
                r->queue, r->subject, r->subject, why, r->subject);
        return BRIDGE_EXIT_STREAM;
    }

    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = o->window;
    jo.PublishAsync.StallWait = o->publish_timeout_ms; /* never reached: we keep <= window */
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = r;
    s = natsConnection_JetStream(&st->js, nc, &jo);
    if (s != NATS_OK) {
        fprintf(stderr, "shmq-bridge: JetStream context: %s\n", nats_err(s));
        return BRIDGE_EXIT_STREAM;
    }
    rc = open_consumer(r, st);
    if (rc < 0) {
        blog(LOG_ERROR, "consumer_open_failed", "route=out queue=%s error=%s", r->queue,
             logfmt_quote(shmq_strerror(rc), q, sizeof q));
        fprintf(stderr, "shmq-bridge: --out %s: cannot attach a consumer: %s%s%s\n", r->queue,
                rc == -ENOENT && r->group[0] ? "no consumer group " : "",
                rc == -ENOENT && r->group[0] ? r->group : shmq_strerror(rc),
                rc == -ENOENT && r->group[0] ? " (shmq group QUEUE list)" : "");
        return BRIDGE_EXIT_QUEUE;
    }
    return 0;
}

/*
 * The consumer was declared hung (say, the bridge was SIGSTOPped) and fenced. Its deliveries
 * still in flight are settled with the old handle first, as their publish acks come in: a
 * fenced consumer's ack of a message it still holds completes it, or returns -ESTALE when the
 * message was redelivered meanwhile (then JetStream drops the republish). Then the handle is
 * closed and a new consumer attached. Entries whose ack has not come by the deadline are left
 * to the epoch check in finish(): their messages come back through the closed handle.
 */
static void reopen_consumer(struct route *r, struct out_state *st)
{
    int64_t deadline = now_ms() + r->o->publish_timeout_ms + 1000;
    uint64_t left;
    while ((left = drain_done(r, st)) > 0 && now_ms() < deadline) {
        wait_completions(st, 1, 50);
    }
    int close_rc = shmq_consumer_close(st->c);
    st->c = NULL;
    st->epoch++;
    int rc = open_consumer(r, st);
    blog(rc < 0 ? LOG_ERROR : LOG_WARN, "consumer_reopened",
         "route=out queue=%s reason=fenced unsettled=%" PRIu64 " close=\"%s\" result=\"%s\"",
         r->queue, left, close_rc < 0 ? shmq_strerror(close_rc) : "ok",
         rc < 0 ? shmq_strerror(rc) : "ok");
}

void *route_out_run(void *arg)
{
    struct route *r = arg;
    struct out_state *st = r->state;
    const struct bridge_opts *o = r->o;
    blog(LOG_INFO, "route_started", "route=out queue=%s subject=%s window=%u", r->queue, r->subject,
         o->window);
    while (!g_stop) {
        uint64_t left = drain_done(r, st);
        if (!atomic_load_explicit(&g_connected, memory_order_relaxed) || left >= st->cap) {
            /* Down, or the window is full: wait for acks (or time-outs), take nothing. */
            uint64_t batch = left >= st->cap && st->cap >= 8 ? st->cap / 8 : 1;
            wait_completions(st, batch, left >= st->cap ? 10 : 100);
            continue;
        }
        shmq_msg_t m[RECV_BATCH];
        size_t got = 0, room = st->cap - left;
        int rc = shmq_receive_batch(st->c, m, room < RECV_BATCH ? room : RECV_BATCH, &got,
                                    left ? 5 : 100);
        if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR)
            continue;
        if (rc == -ESTALE) {
            reopen_consumer(r, st);
            if (!st->c) {
                atomic_store(&g_route_failed, 1);
                break;
            }
            continue;
        }
        if (rc < 0) {
            blog(LOG_ERROR, "receive_failed", "route=out queue=%s error=\"%s\"", r->queue,
                 shmq_strerror(rc));
            atomic_store(&g_route_failed, 1);
            break;
        }
        for (size_t i = 0; i < got; i++)
            publish_one(r, st, &m[i]);
    }

    /* Stopping: take nothing more; wait for what is in flight to be acked or to time out. */
    int64_t deadline = now_ms() + o->drain_timeout_ms;
    uint64_t left;
    while ((left = drain_done(r, st)) > 0 && now_ms() < deadline) {
        wait_completions(st, 1, 50);
    }
    blog(LOG_INFO, "route_stopped",
         "route=out queue=%s subject=%s bridged=%" PRIu64 " left_inflight=%" PRIu64, r->queue,
         r->subject, atomic_load(&r->n.bridged), left);
    return NULL;
}

void route_out_teardown(struct route *r)
{
    struct out_state *st = r->state;
    if (st) {
        if (st->c) /* unacked deliveries go back to the queue at once */
            shmq_consumer_close(st->c);
        st->c = NULL;
        if (st->js)
            jsCtx_Destroy(st->js);
        st->js = NULL;
    }
    if (r->q)
        shmq_close(r->q);
    r->q = NULL;
}

void route_out_free(struct route *r)
{
    /* Only once the library's threads are gone (nats_CloseAndWait): a late publish ack would
     * take st->mu. */
    struct out_state *st = r->state;
    if (!st)
        return;
    for (uint64_t i = st->head; i < st->tail; i++) /* acked, not popped: ours to destroy */
        if (st->ring[i % st->cap].state != PENDING)
            natsMsg_Destroy(st->ring[i % st->cap].nm);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st->ring);
    free(st);
    r->state = NULL;
}
