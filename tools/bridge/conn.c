/*
 * conn.c - the one NATS connection of the bridge, its events and its reconnect backoff;
 * --create-stream.
 *
 * The connection reconnects forever (MaxReconnect -1) with a backoff from the library's
 * custom-delay hook: 50 ms doubling per attempt up to --reconnect-max-ms, +-20% jitter. While
 * it is down the out routes stop taking messages (the local queue is the buffer) and the in
 * routes stop fetching; g_connected tells them. It is written only by the library's connection
 * callbacks (one thread) and read by the routes: relaxed is enough, as it orders nothing, it
 * only steers when to try (a route that acts on a stale value gets an error and retries).
 * The first connection is not retried: a server unreachable at start is a config error.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

atomic_bool g_connected;
atomic_bool g_closing; /* set by main before it closes the connection: no disconnect alarm */

const char *nats_err(natsStatus s)
{
    static _Thread_local char buf[512];
    natsStatus last = NATS_OK;
    const char *text = nats_GetLastError(&last);
    if (text && *text && last == s)
        snprintf(buf, sizeof buf, "%s", text);
    else
        snprintf(buf, sizeof buf, "%s", natsStatus_GetText(s));
    return buf;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    atomic_store_explicit(&g_connected, false, memory_order_relaxed);
    if (!atomic_load(&g_closing))
        blog(LOG_WARN, "disconnected", "reason=connection_lost");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    char url[256] = "", q[300];
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    atomic_store_explicit(&g_connected, true, memory_order_relaxed);
    blog(LOG_INFO, "reconnected", "server=%s", logfmt_quote(url, q, sizeof q));
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    atomic_store_explicit(&g_connected, false, memory_order_relaxed);
    blog(LOG_INFO, "closed", "state=closed");
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    char q[300];
    blog(LOG_WARN, "nats_error", "error=%s", logfmt_quote(natsStatus_GetText(err), q, sizeof q));
}

/* Backoff between reconnect attempts: 50 ms * 2^attempts, capped, +-20% jitter. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    const struct bridge_opts *o = closure;
    int64_t d = 50;
    for (int i = 1; i < attempts && d < o->reconnect_max_ms; i++)
        d *= 2;
    if (d > o->reconnect_max_ms)
        d = o->reconnect_max_ms;
    int64_t jitter = d / 5;
    if (jitter > 0)
        d += (int64_t)(random() % (2 * jitter + 1)) - jitter;
    return d;
}

int conn_open(const struct bridge_opts *o, natsConnection **nc)
{
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, o->server);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, "shmq-bridge");
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, o->connect_timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(no, reconnect_delay, (void *)o);
    if (s == NATS_OK) /* detect a silent server in ~4 s, not the default 4 minutes */
        s = natsOptions_SetPingInterval(no, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(no, 2);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(no, on_async_error, NULL);
    if (s != NATS_OK) {
        char q[600];
        blog(LOG_ERROR, "bad_server_option", "server=%s error=%s", logfmt_quote(o->server, q, 300),
             logfmt_quote(nats_err(s), q + 300, 300));
        fprintf(stderr, "shmq-bridge: --server %s: %s\n", o->server, nats_err(s));
        natsOptions_Destroy(no);
        return BRIDGE_EXIT_USAGE;
    }
    s = natsConnection_Connect(nc, no);
    natsOptions_Destroy(no);
    char q[300], q2[300];
    if (s != NATS_OK) {
        blog(LOG_ERROR, "connect_failed", "server=%s error=%s", logfmt_quote(o->server, q, sizeof q),
             logfmt_quote(nats_err(s), q2, sizeof q2));
        fprintf(stderr, "shmq-bridge: cannot connect to NATS server %s: %s\n", o->server,
                nats_err(s));
        return BRIDGE_EXIT_CONNECT;
    }
    atomic_store_explicit(&g_connected, true, memory_order_relaxed);
    char url[256] = "";
    natsConnection_GetConnectedUrl(*nc, url, sizeof url);
    blog(LOG_INFO, "connected", "server=%s", logfmt_quote(url, q, sizeof q));
    return 0;
}

int conn_create_streams(const struct bridge_opts *o, natsConnection *nc)
{
    jsCtx *js = NULL;
    natsStatus s = natsConnection_JetStream(&js, nc, NULL);
    if (s != NATS_OK) {
        fprintf(stderr, "shmq-bridge: JetStream context: %s\n", nats_err(s));
        return BRIDGE_EXIT_STREAM;
    }
    int rc = 0;
    for (int i = 0; i < o->n_streams && rc == 0; i++) {
        const struct stream_spec *sp = &o->streams[i];
        char tmp[BRIDGE_SUBJECT_MAX], *save = NULL;
        const char *subjects[BRIDGE_ROUTES_MAX];
        int n = 0;
        snprintf(tmp, sizeof tmp, "%s", sp->subjects);
        for (char *t = strtok_r(tmp, ",", &save); t && n < BRIDGE_ROUTES_MAX;
             t = strtok_r(NULL, ",", &save))
            subjects[n++] = t;
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = sp->name;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = n;
        cfg.Storage = js_FileStorage;
        cfg.Duplicates = (int64_t)o->dup_window_ms * 1000000; /* ns */
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        char q[300], q2[300];
        s = js_AddStream(&si, js, &cfg, NULL, &jerr);
        if (s == NATS_OK) {
            blog(LOG_INFO, "stream_created", "stream=%s subjects=%s dup_window_ms=%u", sp->name,
                 logfmt_quote(sp->subjects, q, sizeof q), o->dup_window_ms);
        } else if (jerr == JSStreamNameExistErr) {
            /* It exists with another config: keep it, as a second bridge would. */
            blog(LOG_INFO, "stream_exists", "stream=%s", sp->name);
        } else {
            blog(LOG_ERROR, "stream_create_failed", "stream=%s subjects=%s error=%s jserr=%d",
                 sp->name, logfmt_quote(sp->subjects, q, sizeof q), logfmt_quote(nats_err(s), q2, sizeof q2),
                 (int)jerr);
            fprintf(stderr, "shmq-bridge: --create-stream %s:%s: %s (JetStream error %d)\n",
                    sp->name, sp->subjects, nats_err(s), (int)jerr);
            rc = BRIDGE_EXIT_STREAM;
        }
        jsStreamInfo_Destroy(si);
    }
    jsCtx_Destroy(js);
    return rc;
}
