/*
 * logfmt.c - quoting logfmt values (see logfmt.h).
 */
#include "logfmt.h"

#include <stdbool.h>
#include <stdio.h>

const char *logfmt_quote(const char *s, char *buf, size_t size)
{
    if (!s)
        s = "";
    bool plain = *s != 0;
    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            plain = false;
    if (plain) {
        snprintf(buf, size, "%s", s);
        return buf;
    }
    if (size < 3) {
        if (size)
            buf[0] = 0;
        return buf;
    }
    size_t k = 0;
    buf[k++] = '"';
    for (const char *p = s; *p && k + 3 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[k++] = '\\';
            buf[k++] = (char)c;
        } else {
            buf[k++] = c < ' ' || c == 0x7f ? '?' : (char)c;
        }
    }
    buf[k++] = '"';
    buf[k] = 0;
    return buf;
}
