/*
 * fuzz_wal.c - libFuzzer target over the log reader (walscan_header, walscan_records).
 *
 * Each input is a log file's bytes. It is scanned twice, each time from a buffer of exactly
 * the input's size (so ASan sees any read past it):
 *   1. as it is;
 *   2. "repaired": the header's magic, version, header size and file size are set so that it
 *      validates, its crc recomputed, and every 16-byte-aligned place that starts with the
 *      record magic gets the file's epoch and, when its length fits, a correct crc. Random
 *      bytes almost never pass two CRC32C checks; the repair lets the fuzzer reach the record
 *      walk, resync, holes and torn tails.
 * Invariants checked (abort on failure): records are 16-aligned, after the header, inside the
 * buffer, in increasing order, do not overlap; a PUBLISH record's key, header block and
 * message, as wal_parse_publish() splits them, lie inside its payload; the header block, split
 * by hdrs_decode() (what recovery, replay and a receive hand out), gives headers whose key and
 * value lie inside the block, each followed by its NUL; the stats stay within the buffer. The
 * input as a whole is also decoded as a header block (a slot's block is shm input too). The
 * records of consumer groups (docs/FORMAT.md section 9): every record passed has a type this
 * version reads (wal_type_valid: a group byte only on ACK, DEAD, NACK, below 64), a GROUP
 * record's fields are read only when its payload holds them, and a PUBLISH with WAL_PUB_GROUPS
 * parses with its mask inside the payload (the seed log has groups: tests/run).
 *
 * Build: cmake -DSHMQ_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 (target fuzz_wal); tests/run runs it
 * briefly over a corpus made from a real log.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "hdrblock.h"
#include "walscan.h"

struct walk {
    const uint8_t *base;
    size_t size;
    uint64_t last_end;
    uint64_t sum;
};

static void fail(const char *what, uint64_t off)
{
    fprintf(stderr, "fuzz_wal: invariant broken: %s at offset %llu\n", what,
            (unsigned long long)off);
    abort();
}

/* Split block[0..len) as a header block; whatever it accepts lies inside it, NUL-terminated. */
static void check_headers(const uint8_t *block, size_t len, uint64_t off, uint64_t *sum)
{
    shmq_header_t h[8];
    size_t n = 0;
    if (hdrs_decode(block, len, h, 8, &n) != 0)
        return;
    for (size_t i = 0; i < n && i < 8; i++) {
        const uint8_t *k = (const uint8_t *)h[i].key, *v = (const uint8_t *)h[i].value;
        if (h[i].key_len == 0 || k < block || k + h[i].key_len >= block + len ||
            v < block || v + h[i].value_len >= block + len || k[h[i].key_len] != 0 ||
            v[h[i].value_len] != 0)
            fail("header outside its block or not NUL-terminated", off);
        *sum += k[0] + (h[i].value_len ? v[h[i].value_len - 1] : 0);
    }
}

static int visit(void *arg, uint64_t off, const struct wal_rec *r, const void *payload)
{
    struct walk *w = arg;
    if (off % WAL_ALIGN || off < WAL_HEADER_SIZE)
        fail("misaligned record", off);
    if (off < w->last_end)
        fail("overlapping or out-of-order record", off);
    if ((const uint8_t *)r != w->base + off || (const uint8_t *)payload != w->base + off + 32)
        fail("record pointer", off);
    if (off + WAL_REC_HEADER > w->size || r->len > w->size - off - WAL_REC_HEADER)
        fail("record past the end", off);
    const uint8_t *p = payload;
    for (uint32_t i = 0; i < r->len; i++) /* touch every payload byte */
        w->sum += p[i];
    w->last_end = off + WAL_REC_HEADER + r->len;
    if (!wal_type_valid(r->type))
        fail("a record of a type this version does not read", off);
    if (r->type == WAL_GROUP && r->len >= WAL_GROUP_LEN) { /* what recovery reads of it */
        struct wal_group g;
        memcpy(&g, payload, sizeof g);
        w->sum += g.gen + g.policy + g.bound + g.first_id + g.since_pos + (uint8_t)g.name[31];
    }
    struct wal_publish pub;
    if (r->type == WAL_PUBLISH && wal_parse_publish(r, payload, &pub) == 0) {
        /* the key and the message lie inside the record's payload */
        const uint8_t *lo = payload, *hi = lo + r->len;
        const uint8_t *k = pub.key, *d = pub.data, *hb = pub.hdrs;
        if ((pub.key_len && (k < lo || k > hi || pub.key_len > (size_t)(hi - k))) ||
            (pub.hdrs_len && (hb < lo || hb > hi || pub.hdrs_len > (size_t)(hi - hb))) ||
            (pub.len && (d < lo || d > hi || pub.len > (size_t)(hi - d))))
            fail("publish parts outside the record", off);
        if (!(r->attempt & WAL_PUB_GROUPS) && pub.groups != 1)
            fail("a publish without a mask is not group 0's alone", off);
        w->sum += pub.groups;
        check_headers(hb, pub.hdrs_len, off, &w->sum);
        for (uint32_t i = 0; i < pub.key_len; i++)
            w->sum += k[i];
        for (uint32_t i = 0; i < pub.len; i++)
            w->sum += d[i];
    }
    return 0;
}

static void scan(const uint8_t *buf, size_t size)
{
    const struct wal_file_header *h = NULL;
    if (walscan_header(buf, size, &h) != 0)
        return;
    if ((const uint8_t *)h != buf)
        fail("header pointer", 0);
    struct walk w = {buf, size, WAL_HEADER_SIZE, 0};
    struct walscan_stats st;
    walscan_records(buf, size, h, visit, &w, &st);
    if (st.end_offset > size || st.bad_bytes > size || st.torn_offset > size)
        fail("stats past the end", st.end_offset);
    if (st.torn_offset && st.torn_offset < WAL_HEADER_SIZE)
        fail("torn offset inside the header", st.torn_offset);
}

static void repair(uint8_t *buf, size_t size)
{
    if (size < WAL_HEADER_SIZE)
        return;
    struct wal_file_header h;
    memcpy(&h, buf, sizeof h);
    h.magic = WAL_FILE_MAGIC;
    h.version = WAL_VERSION;
    h.header_size = WAL_HEADER_SIZE;
    h.file_size = size;
    h.crc = wal_header_crc(&h);
    memcpy(buf, &h, sizeof h);
    for (uint64_t off = WAL_HEADER_SIZE; off + WAL_REC_HEADER <= size; off += WAL_ALIGN) {
        struct wal_rec r;
        memcpy(&r, buf + off, sizeof r);
        if (r.magic != WAL_REC_MAGIC)
            continue;
        r.epoch = h.epoch;
        if (r.len <= size - off - WAL_REC_HEADER)
            r.crc = wal_rec_crc(&r, buf + off + WAL_REC_HEADER);
        memcpy(buf + off, &r, sizeof r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1); /* exactly size bytes: overreads are caught */
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    uint64_t sum = 0;
    check_headers(buf, size, 0, &sum);
    scan(buf, size);
    repair(buf, size);
    scan(buf, size);
    free(buf);
    return 0;
}
