/*
 * output.c - escaping for the shmq tool's text and JSON output.
 *
 * Everything printed from a segment (consumer names, payloads, previews) is untrusted bytes:
 * these helpers make sure it cannot break a terminal line or a JSON document. Valid UTF-8
 * (RFC 3629: shortest form, no surrogates, at most U+10FFFF) passes through as it is; control
 * characters (C0, DEL and C1) are escaped. A byte that is not part of valid UTF-8 cannot be a
 * JSON string's content: json_string() writes U+FFFD for it, and a payload is written whole as
 * base64 instead (json_payload()), so that no payload is ever changed on its way out.
 */
#include <stdbool.h>
#include <string.h>

#include "cli.h"

size_t utf8_char_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t min, cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0; /* a continuation byte, 0xc0/0xc1 (always overlong) or 0xf5.. */
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, beyond Unicode, or a UTF-16 surrogate */
    return n;
}

bool utf8_valid(const void *p, size_t len)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_char_len(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t utf8_cut_tail(const unsigned char *p, size_t len)
{
    size_t i = len;
    for (int k = 0; k < 3 && i > 0 && (p[i - 1] & 0xc0) == 0x80; k++)
        i--; /* back over continuation bytes to the last character's first byte */
    if (i == 0 || p[i - 1] < 0xc2 || p[i - 1] > 0xf4)
        return len; /* it ends in ASCII, or in bytes no cut explains: leave them */
    size_t start = i - 1, need = p[start] >= 0xf0 ? 4 : p[start] >= 0xe0 ? 3 : 2;
    return len - start < need ? start : len;
}

/* A C1 control character (U+0080..U+009F) is the two bytes 0xc2 0x80..0x9f. */
static bool c1_control(const unsigned char *p, size_t n)
{
    return n == 2 && p[0] == 0xc2 && p[1] < 0xa0;
}

int bytes_printable(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t n = utf8_char_len(p + i, len - i);
            if (n == 0 || c1_control(p + i, n))
                return 0;
            i += n;
            continue;
        }
        if ((c < 0x20 || c == 0x7f) && c != '\t' && c != '\n' && c != '\r')
            return 0;
        i++;
    }
    return 1;
}

void hex_bytes(FILE *out, const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        fprintf(out, "%02x", p[i]);
}

/* Write s between quotes: printable ASCII and valid UTF-8 as they are; quote, backslash and
 * control characters escaped (\n, \t, ...; JSON \u00XX, text \xNN; C1 controls \u0080..);
 * a byte that is not valid UTF-8 as \ufffd in JSON (the replacement character: JSON strings
 * are Unicode) and as \xNN in text. */
static void quoted(FILE *out, const char *s, size_t len, bool json)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t n = utf8_char_len(p + i, len - i);
            if (n == 0 && json)
                fputs("\\ufffd", out);
            else if (n == 0)
                fprintf(out, "\\x%02x", c);
            else if (c1_control(p + i, n))
                fprintf(out, "\\u%04x", p[i + 1]); /* U+0080..U+009F */
            else
                fwrite(p + i, 1, n, out);
            i += n ? n : 1;
            continue;
        }
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(out, json ? "\\u%04x" : "\\x%02x", c);
            else
                fputc(c, out);
        }
        i++;
    }
    fputc('"', out);
}

void json_string(FILE *out, const char *s, size_t len)
{
    quoted(out, s, len, true);
}

void text_quoted(FILE *out, const char *s, size_t len)
{
    quoted(out, s, len, false);
}

void base64_write(FILE *out, const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char q[4] = {alphabet[v >> 18], alphabet[v >> 12 & 63], alphabet[v >> 6 & 63],
                     alphabet[v & 63]};
        fwrite(q, 1, 4, out);
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        char q[4] = {alphabet[v >> 18], alphabet[v >> 12 & 63], '=', '='};
        fwrite(q, 1, 4, out);
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        char q[4] = {alphabet[v >> 18], alphabet[v >> 12 & 63], alphabet[v >> 6 & 63], '='};
        fwrite(q, 1, 4, out);
    }
}

void json_headers(FILE *out, const shmq_header_t *h, size_t n)
{
    if (n == 0)
        return;
    fputs(",\"headers\":{", out);
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        bool later = false; /* a key that repeats: a JSON object keeps one, the last */
        for (size_t j = i + 1; j < n && !later; j++)
            later = h[j].key_len == h[i].key_len && memcmp(h[j].key, h[i].key, h[i].key_len) == 0;
        if (later)
            continue;
        if (!first)
            fputc(',', out);
        first = false;
        json_string(out, h[i].key, h[i].key_len);
        fputc(':', out);
        json_string(out, h[i].value, h[i].value_len);
    }
    fputc('}', out);
}

void json_payload(FILE *out, const char *key, const void *data, size_t len)
{
    if (utf8_valid(data, len)) {
        fprintf(out, "\"%s\":", key);
        json_string(out, data, len);
    } else {
        fprintf(out, "\"%s_b64\":\"", key);
        base64_write(out, data, len);
        fputc('"', out);
    }
}
