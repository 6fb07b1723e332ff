/*
 * walscan.c - validate and walk log files (see walscan.h and the format in wal.h).
 */
#include "walscan.h"

#include <errno.h>
#include <string.h>

int walscan_header(const void *base, size_t size, const struct wal_file_header **out)
{
    if (size < WAL_HEADER_SIZE)
        return -EBADMSG;
    const struct wal_file_header *h = base;
    if (h->magic != WAL_FILE_MAGIC)
        return -EBADMSG;
    if (h->version != WAL_VERSION)
        return -EPROTO;
    /* a file shorter than its header says was truncated: its records up to the cut still count
     * (the reader sees a torn tail there), so only a file longer than that is refused */
    if (h->header_size != WAL_HEADER_SIZE || h->file_size < size || wal_header_crc(h) != h->crc)
        return -EBADMSG;
    *out = h;
    return 0;
}

/* Is there a valid record at off? Its size in *size. */
static int valid_at(const uint8_t *base, uint64_t off, uint64_t end, uint64_t epoch,
                    uint64_t *size)
{
    if (end - off < WAL_REC_HEADER)
        return 0;
    struct wal_rec r;
    memcpy(&r, base + off, sizeof(r));
    if (r.magic != WAL_REC_MAGIC || r.epoch != epoch || !wal_type_valid(r.type))
        return 0;
    if (r.len > end - off - WAL_REC_HEADER)
        return 0;
    if (wal_rec_crc(&r, base + off + WAL_REC_HEADER) != r.crc)
        return 0;
    *size = wal_rec_size(r.len);
    if (*size > end - off)
        *size = end - off;
    return 1;
}

static int all_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Is [from, to) only what appends that never finished leave: whole WAL_ALIGN blocks of zeros (a
 * reservation never written) and records cut before their crc (L1: the crc is stored last and
 * the file was made zero-filled, so a writer killed after some of its stores leaves a header of
 * this file's epoch, a prefix of its payload and crc 0), each whole inside the run? */
int walscan_unfinished(const void *buf, uint64_t from, uint64_t to, uint64_t epoch)
{
    const uint8_t *base = buf;
    uint64_t p = from;
    while (p < to) {
        if (to - p >= WAL_ALIGN && all_zero(base + p, WAL_ALIGN)) {
            p += WAL_ALIGN;
            continue;
        }
        if (to - p < WAL_REC_HEADER)
            return all_zero(base + p, to - p);
        struct wal_rec r;
        memcpy(&r, base + p, sizeof(r));
        if (r.magic != WAL_REC_MAGIC || r.epoch != epoch || r.crc != 0 || !wal_type_valid(r.type) || r.len > to - p - WAL_REC_HEADER ||
            wal_rec_size(r.len) > to - p)
            return 0;
        p += wal_rec_size(r.len);
    }
    return 1;
}

void walscan_records(const void *buf, size_t size, const struct wal_file_header *h,
                     walscan_fn fn, void *arg, struct walscan_stats *st)
{
    const uint8_t *base = buf;
    uint64_t off = WAL_HEADER_SIZE, end = size, bad_from = 0, rec_size;
    int in_bad = 0;
    memset(st, 0, sizeof(*st));
    st->end_offset = off;
    while (off < end) {
        if (valid_at(base, off, end, h->epoch, &rec_size)) {
            if (in_bad) {
                uint64_t len = off - bad_from;
                if (!walscan_unfinished(base, bad_from, off, h->epoch)) {
                    st->bad_regions++;
                    st->bad_bytes += len;
                } else if (len >= WAL_REC_HEADER) { /* shorter: a short crossing's zeros */
                    /* a hole: zeros, or appends cut before their crc */
                    st->holes++;
                    st->hole_bytes += len;
                    st->bad_bytes += len;
                }
                in_bad = 0;
            }
            st->records++;
            const struct wal_rec *r = (const struct wal_rec *)(base + off);
            if (fn && fn(arg, off, r, base + off + WAL_REC_HEADER))
                return;
            off += rec_size;
            st->end_offset = off;
            continue;
        }
        if (!in_bad) {
            in_bad = 1;
            bad_from = off;
        }
        off += WAL_ALIGN;
    }
    if (in_bad && !walscan_unfinished(base, bad_from, end, h->epoch)) {
        st->torn_offset = bad_from;
        st->bad_bytes += end - bad_from;
    } else if (size < h->file_size && !st->torn_offset) {
        st->torn_offset = size; /* cut short: whatever followed is gone */
    }
}
