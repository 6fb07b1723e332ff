/*
 * hdrblock.c - encode, check and decode header blocks (the format: hdrblock.h).
 */
#include "hdrblock.h"

#include <errno.h>
#include <string.h>

#include "errdetail.h"

static int key_ok(const char *k, size_t len)
{
    if (!k || len < 1 || len > SHMQ_HEADER_KEY_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (k[i] < 0x21 || k[i] > 0x7e || k[i] == ':' || k[i] == '=')
            return 0;
    return 1;
}

static int value_ok(const char *v, size_t len)
{
    if (len > UINT16_MAX || (!v && len))
        return 0;
    return !memchr(v, 0, len) && !memchr(v, '\r', len) && !memchr(v, '\n', len);
}

int hdrs_measure(const shmq_header_t *h, uint32_t n, uint32_t max_bytes, uint32_t max_count,
                 uint32_t *size)
{
    uint64_t total = 0;
    err_detail_clear();
    for (uint32_t i = 0; i < n; i++) {
        if (!key_ok(h[i].key, h[i].key_len))
            return err_detail(-EINVAL, "header %u: a key is 1..%u bytes of printable ASCII "
                              "without ':' or '='", i, SHMQ_HEADER_KEY_MAX);
        if (!value_ok(h[i].value, h[i].value_len))
            return err_detail(-EINVAL, "header %u: a value is 0..65535 bytes without NUL, CR "
                              "or LF", i);
        total += SHMQ_HEADER_SIZE((uint64_t)h[i].key_len, (uint64_t)h[i].value_len);
    }
    if (n > max_count)
        return err_detail(-EMSGSIZE, "%u headers, above the queue's max_headers %u", n,
                          max_count);
    if (total > max_bytes)
        return err_detail(-EMSGSIZE, "the headers take %llu bytes (key + value + 5 each), above "
                          "the queue's max_header_bytes %u", (unsigned long long)total, max_bytes);
    *size = (uint32_t)total;
    return 0;
}

void hdrs_encode(const shmq_header_t *h, uint32_t n, unsigned char *out)
{
    for (uint32_t i = 0; i < n; i++) {
        uint16_t vlen = (uint16_t)h[i].value_len;
        out[0] = (unsigned char)h[i].key_len;
        out[1] = (unsigned char)(vlen & 0xff);
        out[2] = (unsigned char)(vlen >> 8);
        memcpy(out + 3, h[i].key, h[i].key_len);
        out += 3 + h[i].key_len;
        *out++ = 0;
        if (vlen)
            memcpy(out, h[i].value, vlen);
        out += vlen;
        *out++ = 0;
    }
}

int hdrs_decode(const void *block, size_t len, shmq_header_t *out, size_t max, size_t *n)
{
    const unsigned char *p = block, *end = p + len;
    size_t count = 0;
    while (p < end) {
        if (end - p < 5)
            return -EBADMSG;
        size_t klen = p[0], vlen = (size_t)p[1] | (size_t)p[2] << 8;
        if (klen == 0 || (size_t)(end - p) < SHMQ_HEADER_SIZE(klen, vlen) || p[3 + klen] != 0 ||
            p[4 + klen + vlen] != 0)
            return -EBADMSG;
        if (count < max)
            out[count] = (shmq_header_t){(const char *)p + 3, klen, (const char *)p + 4 + klen,
                                         vlen};
        count++;
        p += SHMQ_HEADER_SIZE(klen, vlen);
    }
    *n = count;
    return 0;
}

int shmq_headers_decode(const void *block, size_t len, shmq_header_t *out, size_t max, size_t *n)
{
    if (!n || (!out && max) || (!block && len))
        return -EINVAL;
    *n = 0;
    return hdrs_decode(block, len, out, max, n);
}
