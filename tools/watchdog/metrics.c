/*
 * metrics.c - `--metrics HOST:PORT`: the counters and gauges of every watched queue in the
 * Prometheus text exposition format (version 0.0.4), on GET /metrics.
 *
 * Threads: libmicrohttpd runs the listening socket and every connection on its own internal
 * thread (MHD_USE_INTERNAL_POLLING_THREAD); the maintenance loop never waits for HTTP. The
 * loop renders the text from its latest samples (watch_sample(), every --sample-ms) off-lock,
 * then swaps it in under `lock`; a request copies the current text under the same lock. The
 * lock is held for a pointer swap or one memcpy, never across I/O, so a slow or stuck client
 * cannot hold up maintenance. The HTTP thread reads nothing else of the daemon.
 *
 * Format: each family is one HELP line, one TYPE line, then its samples, one per queue (and per
 * state for shmq_messages); label values are escaped (\\, \", \n). Counters end in _total.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "watchdog.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock; /* guards text and len */
    char *text;
    size_t len;
};

int metrics_parse_addr(const char *s, struct sockaddr_storage *addr, bool *loopback)
{
    memset(addr, 0, sizeof *addr);
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return -EINVAL;
    char host[64];
    size_t hlen = (size_t)(colon - s);
    if (s[0] == '[') { /* [IPv6]:PORT */
        if (hlen < 3 || s[hlen - 1] != ']' || hlen - 2 >= sizeof host)
            return -EINVAL;
        memcpy(host, s + 1, hlen - 2);
        host[hlen - 2] = 0;
    } else {
        if (hlen >= sizeof host)
            return -EINVAL;
        memcpy(host, s, hlen);
        host[hlen] = 0;
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || port > 65535 || colon[1] == '-' || colon[1] == '+')
        return -EINVAL;
    struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
    if (s[0] != '[' && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
        return 0;
    }
    if (s[0] == '[' && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
        return 0;
    }
    return -EINVAL;
}

/* The request handler, on libmicrohttpd's thread. */
static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **con_cls)
{
    struct metrics *m = cls;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)con_cls;
    unsigned status = MHD_HTTP_OK;
    char *body = NULL;
    size_t len = 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = strdup("only GET /metrics\n");
    } else if (strcmp(url, "/metrics") != 0) {
        status = MHD_HTTP_NOT_FOUND;
        body = strdup("not found: try /metrics\n");
    } else {
        pthread_mutex_lock(&m->lock);
        len = m->len;
        body = malloc(len + 1);
        if (body) {
            memcpy(body, m->text ? m->text : "", len);
            body[len] = 0;
        }
        pthread_mutex_unlock(&m->lock);
    }
    if (!body)
        return MHD_NO;
    if (status != MHD_HTTP_OK)
        len = strlen(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            status == MHD_HTTP_OK ? CONTENT_TYPE : "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

int metrics_start(const struct sockaddr_storage *addr, struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (addr->ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port =
        ntohs(addr->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
                                          : ((const struct sockaddr_in *)addr)->sin_port);
    m->daemon =
        MHD_start_daemon(flags, port, NULL, NULL, handle, m, MHD_OPTION_SOCK_ADDR,
                         (const struct sockaddr *)addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!m->daemon) {
        int err = errno ? -errno : -EADDRINUSE;
        pthread_mutex_destroy(&m->lock);
        free(m);
        return err;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, host, sizeof host);
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, host, sizeof host);
    wd_log(WD_INFO, NULL, "metrics_listening", "addr=%s%s%s:%u path=/metrics",
           addr->ss_family == AF_INET6 ? "[" : "", host, addr->ss_family == AF_INET6 ? "]" : "",
           info ? (unsigned)info->port : (unsigned)port);
    *out = m;
    return 0;
}

/* A label value with \\, \" and \n escaped (queue names need none, but the format says so). */
static void label_value(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*s, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(FILE *f, const char *name, const struct watch *w, const char *extra,
                       uint64_t v)
{
    fprintf(f, "%s{queue=\"", name);
    label_value(f, w->name);
    fprintf(f, "\"%s} %llu\n", extra ? extra : "", (unsigned long long)v);
}

static bool live(const struct watch *w) { return w->q && w->sampled; }

/* Each consumer's own counters (shmq_consumer_stats()), labelled by its name and registry
 * entry (names need not be unique): at most max_procs series per queue and family. An entry
 * reused by another consumer starts from 0 (a counter reset, as a restart). */
static void render_consumers(FILE *f, const struct watch_list *l)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"shmq_consumer_delivered_total", "Deliveries to this consumer (redeliveries included).",
         offsetof(shmq_consumer_stats_t, delivered)},
        {"shmq_consumer_acked_total", "Messages this consumer acknowledged.",
         offsetof(shmq_consumer_stats_t, acked)},
        {"shmq_consumer_nacked_total", "Messages this consumer gave back (nack).",
         offsetof(shmq_consumer_stats_t, nacked)},
        {"shmq_consumer_reclaimed_from_total",
         "In-flight messages taken back from this consumer (ack deadline passed, or fenced as "
         "hung or dead).",
         offsetof(shmq_consumer_stats_t, reclaimed_from)},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        family(f, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < l->n; i++) {
            const struct watch *w = l->w[i];
            if (!live(w))
                continue;
            for (size_t k = 0; k < w->n_consumers; k++) {
                const shmq_consumer_stats_t *cs = &w->consumers[k];
                uint64_t v;
                memcpy(&v, (const char *)cs + counters[c].off, sizeof v);
                fprintf(f, "%s{queue=\"", counters[c].name);
                label_value(f, w->name);
                fprintf(f, "\",consumer=\"");
                label_value(f, cs->name);
                fprintf(f, "\",entry=\"%u\"} %llu\n", cs->index, (unsigned long long)v);
            }
        }
    }
}

/* A gauge of shmq_stats_t: a uint32_t field at off, one sample per live queue. */
struct gauge {
    const char *name, *help;
    size_t off;
};
static const struct gauge gauges_before_age[] = {
    {"shmq_consumers", "Consumers attached to the queue.", offsetof(shmq_stats_t, consumers)},
    {"shmq_processes",
     "Registry entries in use (a consumer process has two: its handle's and its consumer's).",
     offsetof(shmq_stats_t, procs)},
};
static const struct gauge gauges_after_age[] = {
    {"shmq_pinned_slots",
     "Slots held back for live consumers fenced as hung while holding them (their messages were "
     "redelivered); each returns when its process lets go or dies.",
     offsetof(shmq_stats_t, pinned)},
    {"shmq_recovered_holes",
     "Holes (failed or killed appends) the rebuild that made the segment read past in the log; "
     "0 for a queue made by create.",
     offsetof(shmq_stats_t, recovered_holes)},
    {"shmq_recovered_bad_regions",
     "Damaged log regions the rebuild that made the segment read past (messages in them are "
     "lost: see shmq wal NAME verify); 0 for a queue made by create.",
     offsetof(shmq_stats_t, recovered_bad_regions)},
    {"shmq_wal_files", "Write-ahead log files on disk (0: no log).",
     offsetof(shmq_stats_t, wal_files)},
    {"shmq_wal_healthy",
     "1 if the last write-ahead log write worked and no flush failed (1 without a log); 0: the "
     "log is failing (see the watchdog's log_error lines).",
     offsetof(shmq_stats_t, wal_healthy)},
};

static void render_gauges(FILE *f, const struct watch_list *l, const struct gauge *g, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        family(f, g[k].name, "gauge", g[k].help);
        for (size_t i = 0; i < l->n; i++) {
            if (!live(l->w[i]))
                continue;
            uint32_t v;
            memcpy(&v, (const char *)&l->w[i]->stats + g[k].off, sizeof v);
            sample_u64(f, g[k].name, l->w[i], NULL, v);
        }
    }
}

/* One sample of group gs of queue w: NAME{queue="...",group="..."EXTRA} value. */
static void group_sample(FILE *f, const char *name, const struct watch *w,
                         const shmq_group_stats_t *gs, const char *extra, const char *value)
{
    fprintf(f, "%s{queue=\"", name);
    label_value(f, w->name);
    fprintf(f, "\",group=\"");
    label_value(f, gs->name);
    fprintf(f, "\"%s} %s\n", extra ? extra : "", value);
}

/* Each consumer group's messages by state, lag, age, overrun, its consumers and their counters
 * (shmq_group_stats), labelled group: at most SHMQ_GROUPS_MAX series per queue and family. */
static void render_groups(FILE *f, const struct watch_list *l)
{
    static const struct {
        const char *state;
        size_t off;
    } states[] = {
        {"ready", offsetof(shmq_group_stats_t, ready)},
        {"inflight", offsetof(shmq_group_stats_t, inflight)},
        {"delayed", offsetof(shmq_group_stats_t, delayed)},
        {"dead", offsetof(shmq_group_stats_t, dead)},
    };
    char v[48], extra[32];
    family(f, "shmq_group_messages", "gauge",
           "A consumer group's messages by state now (each group has its own view of a message).");
    for (size_t i = 0; i < l->n; i++)
        for (size_t g = 0; live(l->w[i]) && g < l->w[i]->n_groups; g++)
            for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
                uint32_t x;
                memcpy(&x, (const char *)&l->w[i]->groups[g] + states[s].off, sizeof x);
                snprintf(v, sizeof v, "%u", x);
                snprintf(extra, sizeof extra, ",state=\"%s\"", states[s].state);
                group_sample(f, "shmq_group_messages", l->w[i], &l->w[i]->groups[g], extra, v);
            }
    family(f, "shmq_group_lag_messages", "gauge",
           "How far a consumer group is behind the newest publish: ids published since the "
           "oldest message it has not finished (0: caught up).");
    for (size_t i = 0; i < l->n; i++)
        for (size_t g = 0; live(l->w[i]) && g < l->w[i]->n_groups; g++) {
            snprintf(v, sizeof v, "%llu", (unsigned long long)l->w[i]->groups[g].lag);
            group_sample(f, "shmq_group_lag_messages", l->w[i], &l->w[i]->groups[g], NULL, v);
        }
    family(f, "shmq_group_oldest_message_age_seconds", "gauge",
           "Age since publish of the oldest message a consumer group has not finished (ready, "
           "delayed or in flight); 0 when none.");
    for (size_t i = 0; i < l->n; i++)
        for (size_t g = 0; live(l->w[i]) && g < l->w[i]->n_groups; g++) {
            int64_t ms = l->w[i]->groups[g].oldest_age_ms;
            snprintf(v, sizeof v, "%lld.%03lld", ms > 0 ? (long long)(ms / 1000) : 0LL,
                     ms > 0 ? (long long)(ms % 1000) : 0LL);
            group_sample(f, "shmq_group_oldest_message_age_seconds", l->w[i],
                         &l->w[i]->groups[g], NULL, v);
        }
    family(f, "shmq_group_overrun_total", "counter",
           "Messages the OVERRUN policy dropped from a consumer group.");
    for (size_t i = 0; i < l->n; i++)
        for (size_t g = 0; live(l->w[i]) && g < l->w[i]->n_groups; g++) {
            snprintf(v, sizeof v, "%llu", (unsigned long long)l->w[i]->groups[g].overrun);
            group_sample(f, "shmq_group_overrun_total", l->w[i], &l->w[i]->groups[g], NULL, v);
        }
    /* its consumers' counters, summed (those of its consumers that closed or died included) */
    static const struct {
        const char *name, *help;
        size_t off;
    } totals[] = {
        {"shmq_group_messages_delivered_total",
         "Messages a consumer group's consumers received (redeliveries included).",
         offsetof(shmq_group_stats_t, delivered)},
        {"shmq_group_messages_acked_total", "Acks of a consumer group's consumers.",
         offsetof(shmq_group_stats_t, acked)},
        {"shmq_group_messages_nacked_total", "Nacks of a consumer group's consumers.",
         offsetof(shmq_group_stats_t, nacked)},
    };
    for (size_t k = 0; k < sizeof totals / sizeof totals[0]; k++) {
        family(f, totals[k].name, "counter", totals[k].help);
        for (size_t i = 0; i < l->n; i++)
            for (size_t g = 0; live(l->w[i]) && g < l->w[i]->n_groups; g++) {
                uint64_t x;
                memcpy(&x, (const char *)&l->w[i]->groups[g] + totals[k].off, sizeof x);
                snprintf(v, sizeof v, "%llu", (unsigned long long)x);
                group_sample(f, totals[k].name, l->w[i], &l->w[i]->groups[g], NULL, v);
            }
    }
    family(f, "shmq_group_consumers", "gauge", "Consumers attached in a consumer group now.");
    for (size_t i = 0; i < l->n; i++)
        for (size_t g = 0; live(l->w[i]) && g < l->w[i]->n_groups; g++) {
            snprintf(v, sizeof v, "%u", l->w[i]->groups[g].consumers);
            group_sample(f, "shmq_group_consumers", l->w[i], &l->w[i]->groups[g], NULL, v);
        }
}

static void render(FILE *f, const struct watch_list *l)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"shmq_messages_published_total", "Messages published to the queue.",
         offsetof(shmq_stats_t, published)},
        {"shmq_messages_delivered_total", "Deliveries to consumers (redeliveries included).",
         offsetof(shmq_stats_t, delivered)},
        {"shmq_messages_acked_total", "Messages acknowledged.", offsetof(shmq_stats_t, acked)},
        {"shmq_messages_nacked_total", "Messages given back by a consumer (nack).",
         offsetof(shmq_stats_t, nacked)},
        {"shmq_messages_redelivered_total", "Deliveries of a message delivered before.",
         offsetof(shmq_stats_t, redelivered)},
        {"shmq_messages_dead_lettered_total", "Messages moved to the dead-letter ring.",
         offsetof(shmq_stats_t, dead_lettered)},
        {"shmq_messages_reclaimed_total",
         "In-flight messages taken back from dead, hung or late consumers.",
         offsetof(shmq_stats_t, reclaimed)},
        {"shmq_messages_expired_total",
         "Messages whose time to live passed before a delivery: dropped or dead-lettered "
         "(resets when the segment is rebuilt, to the ones that expired meanwhile).",
         offsetof(shmq_stats_t, expired)},
        {"shmq_wal_bytes_appended_total",
         "Write-ahead log bytes appended since the segment was made (resets when it is rebuilt).",
         offsetof(shmq_stats_t, wal_bytes)},
        {"shmq_wal_flushes_total", "Write-ahead log fdatasync calls (durability sync).",
         offsetof(shmq_stats_t, wal_flushes)},
        {"shmq_wal_errors_total",
         "Write-ahead log writes and flushes that failed (file system full, I/O error, limit).",
         offsetof(shmq_stats_t, wal_errors)},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        family(f, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < l->n; i++) {
            const struct watch *w = l->w[i];
            if (!live(w))
                continue;
            uint64_t v;
            memcpy(&v, (const char *)&w->stats + counters[c].off, sizeof v);
            sample_u64(f, counters[c].name, w, NULL, v);
        }
    }

    static const struct {
        const char *state;
        size_t off;
    } states[] = {
        {"ready", offsetof(shmq_stats_t, ready)},
        {"inflight", offsetof(shmq_stats_t, inflight)},
        {"delayed", offsetof(shmq_stats_t, delayed)},
        {"reserved", offsetof(shmq_stats_t, reserved)},
        {"dead", offsetof(shmq_stats_t, dead)},
        {"free", offsetof(shmq_stats_t, free)},
    };
    family(f, "shmq_messages", "gauge",
           "Message slots by state now (ready: the depth; free: unused slots).");
    for (size_t i = 0; i < l->n; i++) {
        const struct watch *w = l->w[i];
        if (!live(w))
            continue;
        for (size_t s = 0; s < sizeof states / sizeof states[0]; s++) {
            uint32_t v;
            memcpy(&v, (const char *)&w->stats + states[s].off, sizeof v);
            char extra[32];
            snprintf(extra, sizeof extra, ",state=\"%s\"", states[s].state);
            sample_u64(f, "shmq_messages", w, extra, v);
        }
    }
    family(f, "shmq_capacity", "gauge", "Message slots of the queue.");
    for (size_t i = 0; i < l->n; i++)
        if (live(l->w[i]))
            sample_u64(f, "shmq_capacity", l->w[i], NULL, l->w[i]->capacity);
    render_gauges(f, l, gauges_before_age, sizeof gauges_before_age / sizeof gauges_before_age[0]);
    family(f, "shmq_oldest_message_age_seconds", "gauge",
           "Age since publish of the oldest message not yet acked (ready, delayed or in "
           "flight); 0 when the queue holds none.");
    for (size_t i = 0; i < l->n; i++) {
        const struct watch *w = l->w[i];
        if (!live(w))
            continue;
        int64_t ms = w->stats.oldest_age_ms; /* -1: no such message */
        fprintf(f, "shmq_oldest_message_age_seconds{queue=\"");
        label_value(f, w->name);
        fprintf(f, "\"} %lld.%03lld\n", ms > 0 ? (long long)(ms / 1000) : 0LL,
                ms > 0 ? (long long)(ms % 1000) : 0LL);
    }
    render_gauges(f, l, gauges_after_age, sizeof gauges_after_age / sizeof gauges_after_age[0]);
    render_groups(f, l);
    render_consumers(f, l);
    family(f, "shmq_watchdog_lease_held", "gauge",
           "1 if this watchdog holds the queue's maintenance lease, else 0 (standby).");
    for (size_t i = 0; i < l->n; i++)
        if (live(l->w[i]))
            sample_u64(f, "shmq_watchdog_lease_held", l->w[i], NULL, l->w[i]->role == ROLE_ACTIVE);
}

void metrics_publish(struct metrics *m, const struct watch_list *l)
{
    if (!m)
        return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return; /* out of memory: keep serving the previous text */
    render(f, l);
    if (fclose(f) != 0) {
        free(text);
        return;
    }
    pthread_mutex_lock(&m->lock);
    char *old = m->text;
    m->text = text;
    m->len = len;
    pthread_mutex_unlock(&m->lock);
    free(old);
}

void metrics_stop(struct metrics *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->daemon);
    pthread_mutex_destroy(&m->lock);
    free(m->text);
    free(m);
}
