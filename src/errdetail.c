/*
 * errdetail.c - the calling thread's detail of its last refused argument (errdetail.h).
 *
 * One buffer per thread (_Thread_local): no lock, no allocation, and a thread never sees
 * another's text. Only calls that check arguments at start-up write it, never the fast path.
 */
#include "errdetail.h"

#include <stdarg.h>
#include <stdio.h>

#include "shmq/shmq.h"

static _Thread_local char detail[256];

void err_detail_clear(void)
{
    detail[0] = '\0';
}

int err_detail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    return err;
}

const char *shmq_last_error_detail(void)
{
    return detail;
}
