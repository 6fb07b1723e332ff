/*
 * log.c - one structured line per event, in logfmt, on stdout.
 *
 *   ts=2026-11-25T19:00:00.123Z level=info event=route_started route=out queue=orders ...
 *
 * Each line is written with one fwrite() under a lock and flushed at once: route threads and
 * the NATS library's callback threads log concurrently, and a test reading the pipe sees each
 * event as it happens. A write error (stdout closed) is ignored.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bridge.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_name(enum log_level l)
{
    return l == LOG_ERROR ? "error" : l == LOG_WARN ? "warn" : "info";
}

void blog(enum log_level level, const char *event, const char *fields, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int k = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_name(level), event);
    if (fields && *fields && k < (int)sizeof line - 1) {
        line[k++] = ' ';
        va_list ap;
        va_start(ap, fields);
        k += vsnprintf(line + k, sizeof line - (size_t)k, fields, ap);
        va_end(ap);
    }
    if (k > (int)sizeof line - 2)
        k = (int)sizeof line - 2; /* truncated: still one whole line */
    line[k++] = '\n';
    pthread_mutex_lock(&log_lock);
    fwrite(line, 1, (size_t)k, stdout);
    fflush(stdout);
    pthread_mutex_unlock(&log_lock);
}
