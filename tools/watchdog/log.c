/*
 * log.c - one structured line per event, in logfmt, on stdout.
 *
 *   ts=2026-11-25T19:00:00.123Z level=info queue=NAME event=consumer_died pid=123 reclaimed=4
 *
 * Each line is written with one fwrite() and flushed at once, so a pipe or a test reading the
 * output sees every event as it happens, and lines of one process never interleave. A write
 * error (stdout closed) is ignored: the watchdog keeps maintaining without its log.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "watchdog.h"

static const char *level_name(enum wd_level l)
{
    return l == WD_ERROR ? "error" : l == WD_WARN ? "warn" : "info";
}

void wd_log(enum wd_level level, const char *queue, const char *event, const char *fields, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int k = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_name(level));
    if (queue && k < (int)sizeof line)
        k += snprintf(line + k, sizeof line - (size_t)k, " queue=%s", queue);
    if (k < (int)sizeof line)
        k += snprintf(line + k, sizeof line - (size_t)k, " event=%s", event);
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
    fwrite(line, 1, (size_t)k, stdout);
    fflush(stdout);
}
