/*
 * main.c - shmq-bridge: start-up, signals, periodic counters, clean stop.
 *
 * Start-up checks everything a route names before any message moves (exit codes in bridge.h
 * and --help): options, the server, the streams to create, each route's queue, subject, stream
 * and durable consumer. Then one thread per route; main waits for SIGTERM/SIGINT with
 * sigtimedwait() (the signals are blocked in every thread, the library's included, so they are
 * taken only here) and logs a stats line per route every --stats-interval-ms.
 *
 * Stop: g_stop is set; out routes take nothing more and wait up to --drain-timeout-ms for the
 * publish acks in flight (acking or nacking each), in routes finish their batch; then the
 * connection is flushed (the JetStream acks of the in routes) and closed, and the consumers are
 * closed (whatever is still unacked goes back to its queue at once).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"

volatile sig_atomic_t g_stop;
atomic_int g_route_failed;

static void log_stats(struct bridge_opts *o)
{
    for (int i = 0; i < o->n_routes; i++) {
        struct route *r = &o->routes[i];
        if (r->kind == ROUTE_OUT) {
            shmq_stats_t qs;
            int64_t ready = -1;
            if (r->q && shmq_stats(r->q, &qs) == 0)
                ready = qs.ready + qs.delayed;
            atomic_store(&r->n.lag, ready); /* for the metrics file */
            blog(LOG_INFO, "stats",
                 "route=out queue=%s subject=%s connected=%d bridged=%" PRIu64
                 " duplicates=%" PRIu64 " failed=%" PRIu64 " stale=%" PRIu64 " inflight=%" PRId64
                 " lag=%" PRId64,
                 r->queue, r->subject, (int)atomic_load(&g_connected), atomic_load(&r->n.bridged),
                 atomic_load(&r->n.duplicates), atomic_load(&r->n.failed), atomic_load(&r->n.stale),
                 atomic_load(&r->n.inflight), ready);
        } else {
            blog(LOG_INFO, "stats",
                 "route=in stream=%s durable=%s queue=%s connected=%d "
                 "bridged=%" PRIu64 " failed=%" PRIu64 " lag=%" PRId64,
                 r->stream, r->durable, r->queue, (int)atomic_load(&g_connected),
                 atomic_load(&r->n.bridged), atomic_load(&r->n.failed), atomic_load(&r->n.lag));
        }
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    static struct bridge_opts o;
    int rc = opts_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? BRIDGE_EXIT_OK : BRIDGE_EXIT_USAGE;

    /* Block the stop signals before any thread exists: all inherit the mask. */
    sigset_t stopset;
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGTERM);
    sigaddset(&stopset, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stopset, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a log past RLIMIT_FSIZE is EFBIG, not a death (review F6) */
    srandom((unsigned)(now_ms() ^ getpid()));

    natsConnection *nc = NULL;
    pthread_t threads[BRIDGE_ROUTES_MAX];
    int started = 0, set_up = 0;
    rc = conn_open(&o, &nc);
    if (rc)
        goto out;
    rc = conn_create_streams(&o, nc);
    if (rc)
        goto out_conn;
    for (; set_up < o.n_routes; set_up++) {
        struct route *r = &o.routes[set_up];
        rc = r->kind == ROUTE_OUT ? route_out_setup(r, &o, nc) : route_in_setup(r, &o, nc);
        if (rc) {
            set_up++; /* its half-done state is torn down too */
            goto out_routes;
        }
    }
    for (; started < o.n_routes; started++) {
        struct route *r = &o.routes[started];
        int e = pthread_create(&threads[started], NULL,
                               r->kind == ROUTE_OUT ? route_out_run : route_in_run, r);
        if (e) {
            fprintf(stderr, "shmq-bridge: pthread_create: %s\n", strerror(e));
            rc = BRIDGE_EXIT_RUNTIME;
            g_stop = 1;
            goto out_threads;
        }
    }

    int64_t next_stats = o.stats_interval_ms ? now_ms() + o.stats_interval_ms : INT64_MAX;
    while (!g_stop) {
        struct timespec ts = {0, 200L * 1000000};
        int sig = sigtimedwait(&stopset, NULL, &ts);
        if (sig > 0) {
            blog(LOG_INFO, "stopping", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            g_stop = 1;
        }
        if (atomic_load(&g_route_failed)) {
            blog(LOG_ERROR, "stopping", "reason=route_failed");
            rc = BRIDGE_EXIT_RUNTIME;
            g_stop = 1;
        }
        if (now_ms() >= next_stats) {
            log_stats(&o);
            metrics_write(&o);
            next_stats = now_ms() + o.stats_interval_ms; /* no catch-up after a stop */
        }
    }

out_threads:
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    log_stats(&o);
    metrics_write(&o);
    /* The in routes' acks are buffered in the connection: send them before closing. */
    natsConnection_FlushTimeout(nc, 2000);
out_routes:
    atomic_store(&g_closing, true);
    natsConnection_Close(nc); /* no more publish-ack callbacks after this */
    for (int i = 0; i < set_up; i++) {
        struct route *r = &o.routes[i];
        if (r->kind == ROUTE_OUT)
            route_out_teardown(r);
        else
            route_in_teardown(r);
    }
out_conn:
    natsConnection_Destroy(nc);
    nats_CloseAndWait(2000); /* the library's threads are gone: no callback after this */
    for (int i = 0; i < set_up; i++) {
        if (o.routes[i].kind == ROUTE_OUT)
            route_out_free(&o.routes[i]);
        else
            route_in_free(&o.routes[i]);
    }
out:
    blog(rc ? LOG_ERROR : LOG_INFO, "stopped", "exit=%d", rc);
    return rc;
}
