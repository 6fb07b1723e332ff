/*
 * logfmt.h - quoting values for the logfmt lines the daemons print (shmq-watchdog, shmq-bridge).
 */
#ifndef SHMQ_TOOLS_LOGFMT_H
#define SHMQ_TOOLS_LOGFMT_H

#include <stddef.h>

/* s as a logfmt value in buf: as is when it is plain (non-empty, no space, quote, '=', '\\' or
 * control character), else in double quotes with '"' and '\\' escaped and control characters as
 * '?', cut to fit size. NULL is taken as "". Returns buf. */
const char *logfmt_quote(const char *s, char *buf, size_t size);

#endif
