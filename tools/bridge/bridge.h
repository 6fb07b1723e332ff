/*
 * bridge.h - shmq-bridge: routes between local shmq queues and NATS JetStream.
 *
 * One process, one NATS connection (conn.c), one thread per route:
 *   out  (route_out.c)  local queue -> JetStream subject. An ordinary shmq consumer
 *                       (shmq_receive_batch); publishes asynchronously with Nats-Msg-Id =
 *                       HOST/QUEUE/ID, at most `window` in flight; acks the shmq message only
 *                       after JetStream's publish ack for it (shmq_ack_batch of the confirmed
 *                       ones), nacks it (with a delay) when the publish fails or times out.
 *   in   (route_in.c)   JetStream durable pull consumer -> local queue. Fetches batches,
 *                       shmq_publish_batch() them (shmq_publish_timed() for a message the queue
 *                       had no room for), acks each to JetStream only after its local publish
 *                       was reported done; NakWithDelay when the local publish fails.
 * The chain is at-least-once end to end: every step acks only after the next one holds the
 * message. Duplicates: the out route's republish after a crash is dropped by JetStream's
 * duplicate window (same Nats-Msg-Id); an in-route crash between the local publish and the
 * JetStream ack delivers the message twice into the local queue (counted by readers, not here).
 *
 * Threads: main (signals, periodic counters), one per route, the NATS library's own threads
 * (connection events, publish acks). Counters are relaxed atomics: they are only read for logs.
 */
#ifndef SHMQ_BRIDGE_H
#define SHMQ_BRIDGE_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>
#include <shmq/shmq.h>

#include "logfmt.h"

/* Exit codes (also in --help). */
#define BRIDGE_EXIT_OK 0
#define BRIDGE_EXIT_RUNTIME 1 /* a route failed after start (see the log) */
#define BRIDGE_EXIT_USAGE 2   /* bad option, config file or subject */
#define BRIDGE_EXIT_QUEUE 3   /* a local queue cannot be opened (unknown queue, permission) */
#define BRIDGE_EXIT_CONNECT 4 /* the NATS server cannot be reached at start */
#define BRIDGE_EXIT_STREAM 5  /* JetStream refused a stream, consumer or subject */

#define BRIDGE_ROUTES_MAX 32
#define BRIDGE_SUBJECT_MAX 256
#define BRIDGE_HOST_MAX 64

enum route_kind { ROUTE_OUT, ROUTE_IN };

/* Counters of one route; written by its thread (and the ack handler), read by main. */
struct route_counters {
    _Atomic uint64_t bridged;    /* messages handed on and acked on both sides */
    _Atomic uint64_t duplicates; /* out: publish acks JetStream marked Duplicate */
    _Atomic uint64_t failed;     /* out: publishes failed (nacked); in: local publishes failed */
    _Atomic uint64_t stale;      /* out: shmq acks refused (-ESTALE: fenced, redelivered) */
    _Atomic int64_t inflight;    /* out: published, ack not yet received */
    _Atomic int64_t lag;         /* in: consumer's NumPending at the last fetch; out: ready */
};

struct bridge_opts;

struct route {
    enum route_kind kind;
    char queue[SHMQ_NAME_MAX + 1];
    char group[SHMQ_GROUP_NAME_MAX + 1]; /* out: the consumer group (QUEUE@GROUP); "": default */
    char subject[BRIDGE_SUBJECT_MAX]; /* out: publish subject; in: optional filter subject */
    char stream[BRIDGE_SUBJECT_MAX];  /* in */
    char durable[BRIDGE_SUBJECT_MAX]; /* in */
    shmq_t *q;
    struct route_counters n;
    const struct bridge_opts *o;
    void *state; /* route_out.c / route_in.c private */
};

struct stream_spec {
    char name[BRIDGE_SUBJECT_MAX];
    char subjects[BRIDGE_SUBJECT_MAX]; /* comma-separated */
};

struct bridge_opts {
    const char *server; /* URL list, comma-separated */
    struct route routes[BRIDGE_ROUTES_MAX];
    int n_routes;
    struct stream_spec streams[BRIDGE_ROUTES_MAX];
    int n_streams;
    uint32_t window;             /* out: publishes in flight per route */
    uint32_t batch;              /* in: messages per fetch */
    uint32_t publish_timeout_ms; /* out: wait for a JetStream publish ack */
    uint32_t retry_delay_ms;     /* out: nack delay; in: NakWithDelay */
    uint32_t local_wait_ms;      /* in: wait for room in a full local queue, then nak */
    uint32_t ack_wait_ms;        /* in: AckWait of a consumer the bridge creates */
    uint32_t dup_window_ms;      /* --create-stream: duplicate window */
    uint32_t stats_interval_ms;  /* periodic counters line; 0: none */
    uint32_t drain_timeout_ms;   /* SIGTERM: wait this long for publish acks in flight */
    uint32_t connect_timeout_ms; /* initial connect */
    uint32_t reconnect_max_ms;   /* backoff cap between reconnect attempts */
    char host[BRIDGE_HOST_MAX];  /* Shmq-Host header and Nats-Msg-Id prefix */
    const char *metrics_file;    /* --metrics-file: Prometheus text, or NULL */
};

/* options.c */
/* 0; 1 when --help or --version was printed (exit 0); -1 on a usage error (printed) */
int opts_parse(struct bridge_opts *o, int argc, char **argv);
bool subject_valid(const char *s, bool wildcards);

/* log.c: one logfmt line per event on stdout. fields is a printf format of "k=v k=v". */
enum log_level { LOG_INFO, LOG_WARN, LOG_ERROR };
void blog(enum log_level level, const char *event, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* metrics.c: rewrite --metrics-file (if set) from the counters; 0 or -errno */
int metrics_write(struct bridge_opts *o);

/* conn.c */
extern atomic_bool g_connected; /* false between disconnected and reconnected */
extern atomic_bool g_closing;   /* main is closing the connection on purpose */
int conn_open(const struct bridge_opts *o, natsConnection **nc);
int conn_create_streams(const struct bridge_opts *o, natsConnection *nc);
const char *nats_err(natsStatus s); /* natsStatus text with the library's last error */

/* route_out.c / route_in.c: setup at start (exit code on failure), run in the route's thread */
int route_out_setup(struct route *r, const struct bridge_opts *o, natsConnection *nc);
void *route_out_run(void *route);
void route_out_teardown(struct route *r); /* shmq and NATS handles; after the conn is closed */
void route_out_free(struct route *r);     /* memory; after nats_CloseAndWait() */
int route_in_setup(struct route *r, const struct bridge_opts *o, natsConnection *nc);
void *route_in_run(void *route);
void route_in_teardown(struct route *r);
void route_in_free(struct route *r);

/* main.c: set by SIGTERM/SIGINT; routes poll it */
extern volatile sig_atomic_t g_stop;
extern atomic_int g_route_failed; /* a route thread gave up */

#endif /* SHMQ_BRIDGE_H */
