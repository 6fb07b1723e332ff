/*
 * metrics.c - --metrics-file PATH: the bridge's state in the Prometheus text format, rewritten
 * every --stats-interval-ms and at exit (node_exporter's textfile collector reads such files;
 * a script or `cat` does too).
 *
 * The file is written whole to PATH.tmp and renamed over PATH, so a reader sees the previous or
 * the new state, never half of one. Gauges and counters:
 *   shmq_bridge_connected                     1 while connected to the NATS server
 *   shmq_bridge_bridged_total{route,queue,...} messages carried and acked on both sides
 *   shmq_bridge_duplicates_total{route="out"}  publish acks JetStream marked Duplicate
 *   shmq_bridge_failed_total{route}            failed publishes (out) / local publishes (in)
 *   shmq_bridge_inflight{route="out"}          published, ack not yet received
 *   shmq_bridge_lag{route}                     out: ready+delayed in the local queue; in: what
 *                                              the durable consumer still holds (NumPending)
 * Names, queues and subjects are [A-Za-z0-9._-] and dots (checked by options.c): no escaping.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bridge.h"

static void labels(const struct route *r, char *buf, size_t size)
{
    if (r->kind == ROUTE_OUT)
        snprintf(buf, size, "route=\"out\",queue=\"%s\",subject=\"%s\"", r->queue, r->subject);
    else
        snprintf(buf, size, "route=\"in\",queue=\"%s\",stream=\"%s\",durable=\"%s\"", r->queue,
                 r->stream, r->durable);
}

static void series(FILE *f, const char *name, const char *type, const char *help,
                   struct bridge_opts *o, int kind_mask, int which)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < o->n_routes; i++) {
        struct route *r = &o->routes[i];
        if (!(kind_mask & (1 << r->kind)))
            continue;
        char l[600];
        labels(r, l, sizeof l);
        int64_t v = 0;
        switch (which) {
        case 0: v = (int64_t)atomic_load(&r->n.bridged); break;
        case 1: v = (int64_t)atomic_load(&r->n.duplicates); break;
        case 2: v = (int64_t)atomic_load(&r->n.failed); break;
        case 3: v = atomic_load(&r->n.inflight); break;
        default: v = atomic_load(&r->n.lag); break;
        }
        fprintf(f, "%s{%s} %" PRId64 "\n", name, l, v);
    }
}

int metrics_write(struct bridge_opts *o)
{
    if (!o->metrics_file)
        return 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", o->metrics_file);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    const int out = 1 << ROUTE_OUT, both = (1 << ROUTE_OUT) | (1 << ROUTE_IN);
    fprintf(f,
            "# HELP shmq_bridge_connected 1 while connected to the NATS server\n"
            "# TYPE shmq_bridge_connected gauge\nshmq_bridge_connected %d\n",
            (int)atomic_load(&g_connected));
    series(f, "shmq_bridge_bridged_total", "counter", "Messages carried and acked on both sides", o,
           both, 0);
    series(f, "shmq_bridge_duplicates_total", "counter",
           "Publish acks JetStream marked as duplicates (republishes it dropped)", o, out, 1);
    series(f, "shmq_bridge_failed_total", "counter",
           "Failed publishes (out: to JetStream; in: into the local queue), retried", o, both, 2);
    series(f, "shmq_bridge_inflight", "gauge", "Publishes waiting for JetStream's ack", o, out, 3);
    series(f, "shmq_bridge_lag", "gauge",
           "Messages waiting: out, in the local queue; in, in the durable consumer", o, both, 4);
    int rc = ferror(f) ? -EIO : 0;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, o->metrics_file) != 0)
        rc = -errno;
    return rc;
}
