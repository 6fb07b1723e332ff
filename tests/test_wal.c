/*
 * test_wal.c - the write-ahead log: records as written, torn tails, bit flips, holes, foreign
 * epochs, rotation and bounded disk use, recovery after rotation, group commit in SYNC mode.
 *
 * Log files are read from $SHMQ_STATE_DIR/NAME/wal.NNNNNNNNNN (ctest sets the variable; set it
 * yourself when running the binary by hand). Damage is always done to a COPY of a file's
 * content, written into a scratch log directory of its own (DIR/NAME2/wal.N), which
 * shmq_recover(NAME2, DIR, ...) then rebuilds a queue from.
 */
#include "helpers.h"

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>

#include "crc32c.h"
#include "segment.h"
#include "layout.h"
#include "walscan.h"

#define FILE_SIZE (64u << 10)

static const char *state_dir(void)
{
    const char *s = getenv("SHMQ_STATE_DIR");
    cr_assert(s && *s, "SHMQ_STATE_DIR must be set (ctest sets it)");
    return s;
}

static void log_dir_of(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", state_dir(), name);
}

static void *read_all(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    uint8_t *buf = malloc((size_t)st.st_size ? (size_t)st.st_size : 1);
    cr_assert(buf);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        cr_assert(n > 0, "read %s: %s", path, strerror(errno));
        got += (size_t)n;
    }
    close(fd);
    *size = got;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, (const uint8_t *)buf + done, size - done);
        cr_assert(n > 0, "write %s: %s", path, strerror(errno));
        done += (size_t)n;
    }
    close(fd);
}

/* wal.* files in dir: count, and the bytes they occupy on disk (st_blocks * 512). */
static uint32_t count_wal_files(const char *dir, uint64_t *disk_bytes, uint64_t *lowest,
                                uint64_t *highest)
{
    DIR *d = opendir(dir);
    uint32_t n = 0;
    uint64_t bytes = 0, lo = UINT64_MAX, hi = 0;
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            if (strncmp(e->d_name, "wal.", 4) != 0)
                continue;
            char path[512];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) != 0)
                continue;
            n++;
            bytes += (uint64_t)st.st_blocks * 512u;
            if (strlen(e->d_name) == 14) {
                uint64_t seq = strtoull(e->d_name + 4, NULL, 10);
                lo = seq < lo ? seq : lo;
                hi = seq > hi ? seq : hi;
            }
        }
        closedir(d);
    }
    if (disk_bytes)
        *disk_bytes = bytes;
    if (lowest)
        *lowest = lo;
    if (highest)
        *highest = hi;
    return n;
}

static void wal_path(const char *dir, uint64_t seq, char *buf, size_t size)
{
    snprintf(buf, size, "%s/wal.%010llu", dir, (unsigned long long)seq);
}

/* ---- records as the scanner sees them ---- */

struct rec {
    uint64_t off, id;
    uint16_t type, attempt;
    uint32_t len, hash;
};

struct recs {
    struct rec v[8192];
    size_t n;
    int pads;
};

static int collect(void *arg, uint64_t offset, const struct wal_rec *r, const void *payload)
{
    struct recs *rs = arg;
    if (r->type == WAL_PAD) {
        rs->pads++;
        return 0;
    }
    if (r->type == WAL_MARK)
        return 0; /* written by maintenance before it deletes files */
    cr_assert(rs->n < sizeof(rs->v) / sizeof(rs->v[0]));
    const void *data = payload;
    uint32_t len = r->len;
    if (r->type == WAL_PUBLISH) { /* the message after the publish prefix */
        struct wal_publish pub;
        cr_assert_eq(wal_parse_publish(r, payload, &pub), 0, "PUBLISH record at %llu",
                     (unsigned long long)offset);
        data = pub.data;
        len = pub.len;
    }
    rs->v[rs->n++] = (struct rec){.off = offset,
                                  .id = r->id,
                                  .type = r->type,
                                  .attempt = r->attempt,
                                  .len = len,
                                  .hash = h_fnv1a(data, len)};
    return 0;
}

/* Scan a buffer holding one log file; returns the header check's result. */
static int scan(const void *buf, size_t size, struct recs *rs, struct walscan_stats *st)
{
    const struct wal_file_header *h;
    memset(st, 0, sizeof(*st));
    rs->n = 0;
    rs->pads = 0;
    int rc = walscan_header(buf, size, &h);
    if (rc == 0)
        walscan_records(buf, size, h, collect, rs, st);
    return rc;
}

static void make_payload(uint64_t k, uint8_t *buf, size_t len)
{
    uint64_t s = k * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(h_rand(&s) >> 56);
    if (len >= 8)
        memcpy(buf, &k, 8);
}

static shmq_config_t wal_config(uint32_t capacity, uint32_t msg, uint32_t file_size)
{
    shmq_config_t cfg = h_small_config(capacity, msg, 16);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = file_size;
    return cfg;
}

/* A queue NAME with a log (wal_config(capacity, msg, FILE_SIZE)) and one consumer. */
static shmq_t *create_with_consumer(const char *name, uint32_t capacity, uint32_t msg,
                                    const char *consumer, shmq_consumer_t **c)
{
    shmq_config_t cfg = wal_config(capacity, msg, FILE_SIZE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, consumer, c), 0);
    return q;
}

/*
 * A queue with n messages of len bytes published and nothing else; its single log file is
 * read into *buf. ids[k] gets message k's id.
 */
static uint8_t *log_of_publishes(const char *name, unsigned n, uint32_t len, uint64_t *ids,
                                 size_t *size)
{
    shmq_config_t cfg = wal_config(256, 256, FILE_SIZE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint8_t payload[256];
    for (unsigned k = 0; k < n; k++) {
        make_payload(k, payload, len);
        h_assert_rc(shmq_publish(q, payload, len, &ids[k]), 0);
    }
    h_assert_rc(shmq_close(q), 0);
    char dir[512], path[600];
    log_dir_of(name, dir, sizeof dir);
    cr_assert_eq(count_wal_files(dir, NULL, NULL, NULL), 1, "one log file expected");
    wal_path(dir, 0, path, sizeof path);
    return read_all(path, size);
}

/* Recover the queue name2 from a single-file log buf (written to scratch/name2/wal.0). */
static int recover_from(const char *scratch, const char *name2, const void *buf, size_t size,
                        shmq_recovery_report_t *rep)
{
    char dir[600], path[700];
    shmq_unlink(name2); /* a previous round's segment and log */
    snprintf(dir, sizeof dir, "%s/%s", scratch, name2);
    cr_assert(mkdir(dir, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", dir, strerror(errno));
    wal_path(dir, 0, path, sizeof path);
    write_all(path, buf, size);
    return shmq_recover(name2, scratch, rep);
}

/* Open name2 (recovered), receive everything ready; returns how many; ids into got. */
static size_t drain(const char *name2, uint64_t *got, uint32_t *hashes, uint32_t *attempts,
                    size_t max)
{
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_open(name2, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    size_t n = 0;
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0) {
        cr_assert(n < max, "more messages than expected");
        got[n] = m.id;
        if (hashes)
            hashes[n] = h_fnv1a(m.data, m.len);
        if (attempts)
            attempts[n] = m.attempt;
        n++;
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    return n;
}

static void scratch_dir(char *buf, size_t size)
{
    snprintf(buf, size, "%s/scratch-%d", state_dir(), (int)getpid());
    cr_assert(mkdir(state_dir(), 0700) == 0 || errno == EEXIST);
    cr_assert(mkdir(buf, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", buf, strerror(errno));
}

TestSuite(wal, .fini = h_cleanup, .timeout = 240);

/* ------------------------------------------------------------------------------------------ */

/* CRC32C bit by bit (reflected 0x82F63B78), the reference for crc32c.c's two paths. */
static uint32_t crc_bitwise(const uint8_t *p, size_t len)
{
    uint32_t c = ~0u;
    while (len--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

/* The record crc's one pass (crc32c_copy_after: the header and prefix summed in place, the
 * payload copied and summed in the same pass; crc32c_24: a header alone) gives the CRC32C of the
 * bytes as stored, for every split, length and alignment; and the standard check value. */
Test(wal, crc32c_one_pass_matches_the_reference)
{
    cr_assert_eq(crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t src[300 + 8], buf[2 * 300 + 16];
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (uint8_t)(i * 131 + 7);
    cr_assert_eq(crc32c_24(src + 3), crc_bitwise(src + 3, 24));
    for (size_t a = 0; a < 8; a++)
        for (size_t n = 0; n <= 40; n += 1 + n / 8)
            for (size_t len = 0; len <= 300; len += 1 + len / 16) {
                memset(buf, 0xa5, sizeof(buf));
                memcpy(buf + a, src + 1, n); /* what the record holds before the payload */
                uint32_t got = crc32c_copy_after(buf + a, n, src + (a ^ 5), len);
                cr_assert(memcmp(buf + a + n, src + (a ^ 5), len) == 0,
                          "payload not copied (a %zu, n %zu, len %zu)", a, n, len);
                cr_assert_eq(buf[a + n + len], 0xa5, "wrote past the payload");
                cr_assert_eq(got, crc_bitwise(buf + a, n + len), "a %zu n %zu len %zu", a, n, len);
                cr_assert_eq(crc32c(0, buf + a, n + len), got);
            }
}

Test(wal, records_round_trip)
{
    const char *name = h_qname("walrt");
    shmq_config_t cfg = wal_config(64, 128, FILE_SIZE);
    cfg.max_attempts = 2;
    cfg.backoff_base_ms = cfg.backoff_cap_ms = 0; /* a nack makes the message ready at once */
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "rt", &c), 0);
    enum { N = 30 };
    uint64_t ids[N];
    uint8_t payload[128];
    uint32_t hash[N];
    for (unsigned k = 0; k < N; k++) {
        size_t len = 1 + (k * 37) % 128;
        make_payload(k, payload, len);
        hash[k] = h_fnv1a(payload, len);
        h_assert_rc(shmq_publish(q, payload, len, &ids[k]), 0);
    }
    /* expected records: (type, id, attempt) */
    struct rec want[4 * N];
    size_t nwant = 0;
    for (unsigned k = 0; k < N; k++)
        want[nwant++] = (struct rec){.type = WAL_PUBLISH, .id = ids[k], .hash = hash[k]};
    /* k % 3 == 0: ack; k % 3 == 1: nack then ack; k % 3 == 2: nack twice (dead at attempt 2) */
    unsigned acked = 0, nacked = 0, dead = 0;
    for (int rounds = 0; rounds < 200; rounds++) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 0);
        if (rc == -EAGAIN)
            break;
        h_assert_rc(rc, 0);
        unsigned k = 0;
        while (k < N && ids[k] != m.id)
            k++;
        cr_assert(k < N);
        if (k % 3 == 0 || (k % 3 == 1 && m.attempt == 2)) {
            h_assert_rc(shmq_ack(c, &m), 0);
            want[nwant++] = (struct rec){.type = WAL_ACK, .id = m.id};
            acked++;
        } else {
            h_assert_rc(shmq_nack(c, &m, 0), 0);
            if (m.attempt >= 2) {
                want[nwant++] = (struct rec){.type = WAL_DEAD, .id = m.id};
                dead++;
            } else {
                want[nwant++] = (struct rec){.type = WAL_NACK, .id = m.id, .attempt = 1};
                nacked++;
            }
        }
    }
    cr_assert_eq(acked, 20);
    cr_assert_eq(nacked, 20);
    cr_assert_eq(dead, 10);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);

    char dir[512], path[600];
    log_dir_of(name, dir, sizeof dir);
    wal_path(dir, 0, path, sizeof path);
    size_t size;
    uint8_t *buf = read_all(path, &size);
    cr_assert_eq(size, FILE_SIZE);
    static struct recs rs;
    struct walscan_stats st;
    h_assert_rc(scan(buf, size, &rs, &st), 0);
    cr_assert_eq(st.bad_regions, 0);
    cr_assert_eq(st.torn_offset, 0);
    cr_assert_eq(st.bad_bytes, 0);
    cr_assert_eq(rs.n, nwant, "records found %zu, written %zu", rs.n, nwant);
    /* in log order, the same (type, id, attempt), and the payloads of the PUBLISH records */
    size_t pub = 0;
    for (size_t i = 0; i < rs.n; i++) {
        const struct rec *r = &rs.v[i];
        if (r->type == WAL_PUBLISH) {
            cr_assert_eq(r->id, want[pub].id);
            cr_assert_eq(r->hash, want[pub].hash, "payload of id %llu", (unsigned long long)r->id);
            pub++;
            continue;
        }
        size_t j = N;
        while (j < nwant && !(want[j].type == r->type && want[j].id == r->id &&
                              (r->type != WAL_NACK || want[j].attempt == r->attempt)))
            j++;
        cr_assert(j < nwant, "unexpected record type %u id %llu attempt %u", r->type,
                  (unsigned long long)r->id, r->attempt);
        want[j].type = 0; /* used */
    }
    cr_assert_eq(pub, N);
    free(buf);
    h_assert_rc(shmq_unlink(name), 0);
}

/*
 * The damage cases below share one log: N PUBLISH records of 40-byte messages in file 0 and
 * nothing else, so record k starts at WAL_HEADER_SIZE + TREC k. The crc covers the first
 * TCOVER bytes of a record (header, publish prefix, message); the rest is alignment.
 */
enum { TN = 24, TLEN = 40 };
#define TCOVER ((uint64_t)WAL_REC_HEADER + WAL_PUBLISH_PREFIX + TLEN)
#define TREC wal_rec_size(WAL_PUBLISH_PREFIX + TLEN)
#define TOFF(k) (WAL_HEADER_SIZE + TREC * (uint64_t)(k))

struct tornctx {
    const char *name2;
    char scratch[512];
    uint64_t ids[TN];
    uint32_t hash[TN];
};

static void torn_setup(struct tornctx *t, const char *tag, uint8_t **buf, size_t *size)
{
    const char *name = h_qname(tag);
    t->name2 = h_qname("rec");
    scratch_dir(t->scratch, sizeof t->scratch);
    *buf = log_of_publishes(name, TN, TLEN, t->ids, size);
    uint8_t p[TLEN];
    for (unsigned k = 0; k < TN; k++) {
        make_payload(k, p, TLEN);
        t->hash[k] = h_fnv1a(p, TLEN);
    }
    static struct recs rs;
    struct walscan_stats st;
    h_assert_rc(scan(*buf, *size, &rs, &st), 0);
    cr_assert_eq(rs.n, TN);
    for (unsigned k = 0; k < TN; k++)
        cr_assert_eq(rs.v[k].off, TOFF(k), "record %u at %llu", k, (unsigned long long)rs.v[k].off);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Recovery of damaged content keeps exactly the messages listed in keep[] (by index). */
static void check_recovery(struct tornctx *t, const uint8_t *dmg, size_t size, const bool *keep,
                           shmq_recovery_report_t *rep, const char *what, uint64_t at)
{
    int rc = recover_from(t->scratch, t->name2, dmg, size, rep);
    cr_assert_eq(rc, 0, "%s at %llu: shmq_recover: %s", what, (unsigned long long)at,
                 shmq_strerror(rc));
    uint64_t got[TN + 1];
    uint32_t hashes[TN + 1];
    size_t n = drain(t->name2, got, hashes, NULL, TN + 1);
    size_t want = 0;
    for (unsigned k = 0; k < TN; k++) {
        if (!keep[k])
            continue;
        cr_assert(want < n && got[want] == t->ids[k],
                  "%s at %llu: message %u (id %llu) not recovered in order", what,
                  (unsigned long long)at, k, (unsigned long long)t->ids[k]);
        cr_assert_eq(hashes[want], t->hash[k], "%s at %llu: payload of message %u", what,
                     (unsigned long long)at, k);
        want++;
    }
    cr_assert_eq(n, want, "%s at %llu: %zu messages recovered, %zu expected", what,
                 (unsigned long long)at, n, want);
    cr_assert_eq(rep->restored, want);
    /* the next id continues after the highest kept */
    shmq_t *q;
    uint64_t id;
    h_assert_rc(shmq_open(t->name2, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, &id), 0);
    uint64_t hi = 0;
    for (unsigned k = 0; k < TN; k++)
        if (keep[k] && t->ids[k] > hi)
            hi = t->ids[k];
    cr_assert_gt(id, hi, "%s at %llu: id %llu reused (highest kept %llu)", what,
                 (unsigned long long)at, (unsigned long long)id, (unsigned long long)hi);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(t->name2), 0);
}

/* A crash while writing the tail: the file keeps its size, bytes from cut on are zero (never
 * written) or garbage (half-written); every byte offset of the last three records. */
Test(wal, torn_tail_every_offset)
{
    struct tornctx t;
    uint8_t *buf;
    size_t size;
    torn_setup(&t, "torn", &buf, &size);
    uint8_t *dmg = malloc(size);
    static struct recs rs;
    struct walscan_stats st;
    uint64_t cases = 0;
    for (int garbage = 0; garbage <= 1; garbage++) {
        for (uint64_t cut = TOFF(TN - 3); cut < TOFF(TN); cut++) {
            memcpy(dmg, buf, size);
            uint64_t s = cut * 7 + 1;
            for (uint64_t i = cut; i < TOFF(TN); i++) /* damage to the end of the records */
                dmg[i] = garbage ? (uint8_t)(h_rand(&s) >> 56) | 1 : 0;
            /* record k survives iff the bytes its crc covers all precede the cut */
            unsigned intact = 0;
            while (intact < TN && TOFF(intact) + TCOVER <= cut)
                intact++;
            /* a torn tail is reported iff non-zero bytes follow the last valid record */
            bool mid = intact < TN && (garbage || cut > TOFF(intact));
            h_assert_rc(scan(dmg, size, &rs, &st), 0);
            cr_assert_eq(rs.n, intact, "cut %llu (%s): %zu records, %u intact",
                         (unsigned long long)cut, garbage ? "garbage" : "zero", rs.n, intact);
            for (unsigned k = 0; k < intact; k++)
                cr_assert_eq(rs.v[k].id, t.ids[k]);
            cr_assert_eq(st.bad_regions, 0, "cut %llu: a torn tail is no bad region",
                         (unsigned long long)cut);
            if (mid) { /* the record cut short is reported as a torn tail */
                cr_assert_eq(st.torn_offset, TOFF(intact), "cut %llu: torn_offset %llu",
                             (unsigned long long)cut, (unsigned long long)st.torn_offset);
                cr_assert_geq(st.bad_bytes, cut > TOFF(intact) ? cut - TOFF(intact) : 1);
            } else {
                cr_assert_eq(st.torn_offset, 0);
            }
            {
                bool keep[TN];
                for (unsigned k = 0; k < TN; k++)
                    keep[k] = k < intact;
                shmq_recovery_report_t rep;
                check_recovery(&t, dmg, size, keep, &rep, garbage ? "garbage" : "zero", cut);
                cr_assert_eq(rep.torn_tails, mid ? 1u : 0u, "cut %llu: torn_tails %u",
                             (unsigned long long)cut, rep.torn_tails);
                cr_assert_eq(rep.corrupt_regions, 0);
                if (mid)
                    cr_assert_geq(rep.bytes_skipped, cut > TOFF(intact) ? cut - TOFF(intact) : 1);
                cases++;
            }
        }
    }
    cr_log_info("torn tails: %llu recoveries checked", (unsigned long long)cases);
    free(dmg);
    free(buf);
}

/*
 * The file itself cut short (a copy truncated at every byte offset of its last three records,
 * as a file system that lost the end of a file would leave it): recovery never crashes, and
 * keeps every record before the cut.
 */
Test(wal, truncated_file_keeps_intact_records)
{
    struct tornctx t;
    uint8_t *buf;
    size_t size;
    torn_setup(&t, "trunc", &buf, &size);
    for (uint64_t cut = TOFF(TN - 3); cut <= TOFF(TN); cut++) {
        unsigned intact = 0;
        while (intact < TN && TOFF(intact) + TCOVER <= cut)
            intact++;
        bool keep[TN];
        for (unsigned k = 0; k < TN; k++)
            keep[k] = k < intact;
        shmq_recovery_report_t rep;
        check_recovery(&t, buf, (size_t)cut, keep, &rep, "truncated", cut);
        if (intact < TN && cut > TOFF(intact)) /* part of a record is left: a torn tail */
            cr_assert_gt(rep.torn_tails + rep.corrupt_regions, 0, "truncation at %llu not reported",
                         (unsigned long long)cut);
    }
    free(buf);
}

/* A bit flipped in a record in the middle: that record is reported as corrupt and skipped, the
 * valid ones after it are still used. Every bit of the header and payload of record 10 (the
 * bytes its crc covers; the alignment after them is no part of the record). */
Test(wal, bit_flip_in_middle_record)
{
    struct tornctx t;
    uint8_t *buf;
    size_t size;
    torn_setup(&t, "flip", &buf, &size);
    uint8_t *dmg = malloc(size);
    static struct recs rs;
    struct walscan_stats st;
    const unsigned victim = 10;
    for (uint64_t byte = TOFF(victim); byte < TOFF(victim) + TCOVER; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(dmg, buf, size);
            dmg[byte] ^= (uint8_t)(1u << bit);
            h_assert_rc(scan(dmg, size, &rs, &st), 0);
            cr_assert_eq(rs.n, TN - 1, "flip %llu.%d: %zu records", (unsigned long long)byte, bit,
                         rs.n);
            for (unsigned k = 0, i = 0; k < TN; k++)
                if (k != victim)
                    cr_assert_eq(rs.v[i++].id, t.ids[k]);
            cr_assert_eq(st.bad_regions, 1, "flip %llu.%d: bad_regions %llu",
                         (unsigned long long)byte, bit, (unsigned long long)st.bad_regions);
            cr_assert_eq(st.bad_bytes, TREC);
            cr_assert_eq(st.torn_offset, 0);
            if (bit == (int)(byte % 8)) { /* one recovery per byte */
                bool keep[TN];
                for (unsigned k = 0; k < TN; k++)
                    keep[k] = k != victim;
                shmq_recovery_report_t rep;
                check_recovery(&t, dmg, size, keep, &rep, "bit flip", byte);
                cr_assert_eq(rep.corrupt_regions, 1);
                cr_assert_eq(rep.torn_tails, 0);
                cr_assert_eq(rep.bytes_skipped, TREC);
            }
        }
    }
    free(dmg);
    free(buf);
}

/* A hole: space reserved and never written (a writer killed between its FAA and its writes) is
 * zeros followed by valid records: resynced past and reported; the records after it are used. */
Test(wal, hole_is_resynced)
{
    struct tornctx t;
    uint8_t *buf;
    size_t size;
    torn_setup(&t, "hole", &buf, &size);
    uint8_t *dmg = malloc(size);
    static struct recs rs;
    struct walscan_stats st;
    for (unsigned width = 1; width <= 3; width++) { /* 1..3 records never written */
        memcpy(dmg, buf, size);
        memset(dmg + TOFF(5), 0, TREC * width);
        h_assert_rc(scan(dmg, size, &rs, &st), 0);
        cr_assert_eq(rs.n, TN - width);
        cr_assert_eq(st.bad_regions, 0, "zeros are a hole, not damage");
        cr_assert_eq(st.holes, 1);
        cr_assert_eq(st.hole_bytes, TREC * width);
        cr_assert_eq(st.bad_bytes, TREC * width);
        cr_assert_eq(st.torn_offset, 0);
        bool keep[TN];
        for (unsigned k = 0; k < TN; k++)
            keep[k] = k < 5 || k >= 5 + width;
        shmq_recovery_report_t rep;
        check_recovery(&t, dmg, size, keep, &rep, "hole", width);
        cr_assert_eq(rep.corrupt_regions, 1);
        cr_assert_eq(rep.holes, 1);
        cr_assert_eq(rep.bytes_skipped, TREC * width);
    }
    /* an append whose writer was killed in its stores (L1: the crc is stored last into a
     * zero-filled file): its header, a prefix of its payload, zeros, crc 0. Nothing in it was
     * reported written: a hole like zeros (review3 F-4b), in walscan and so in recovery */
    for (unsigned prefix = 0; prefix <= TLEN; prefix += TLEN / 2) {
        memcpy(dmg, buf, size);
        memset(dmg + TOFF(7) + 4, 0, 4); /* crc = 0 */
        memset(dmg + TOFF(7) + WAL_REC_HEADER + prefix, 0, TREC - WAL_REC_HEADER - prefix);
        h_assert_rc(scan(dmg, size, &rs, &st), 0);
        cr_assert_eq(rs.n, TN - 1);
        cr_assert_eq(st.bad_regions, 0, "an append cut before its crc is no damage (prefix %u)",
                     prefix);
        cr_assert_eq(st.holes, 1, "an append cut before its crc is a hole (prefix %u)", prefix);
        cr_assert_eq(st.hole_bytes, TREC);
    }
    /* the same as the last record of the file: unused space, not a torn tail */
    memcpy(dmg, buf, size);
    memset(dmg + TOFF(TN - 1) + 4, 0, 4);
    h_assert_rc(scan(dmg, size, &rs, &st), 0);
    cr_assert_eq(rs.n, TN - 1);
    cr_assert_eq(st.torn_offset, 0, "an unfinished last append is no torn tail");
    /* a record whose crc is wrong but not 0 stays damage */
    memcpy(dmg, buf, size);
    dmg[TOFF(7) + 4] ^= 0x01;
    h_assert_rc(scan(dmg, size, &rs, &st), 0);
    cr_assert_eq(rs.n, TN - 1);
    cr_assert_eq(st.bad_regions, 1);
    cr_assert_eq(st.holes, 0, "a record with a wrong crc is damage, not a hole");
    free(dmg);
    free(buf);
}

/* A record from another file (other epoch), copied in place of a valid one in the middle and
 * after the tail: never taken for a record of this file. */
Test(wal, foreign_epoch_rejected)
{
    struct tornctx t;
    uint8_t *buf, *other;
    size_t size, osize;
    torn_setup(&t, "epoch", &buf, &size);
    uint64_t oids[TN];
    other = log_of_publishes(h_qname("epoch2"), TN, TLEN, oids, &osize);
    const struct wal_file_header *h1, *h2;
    h_assert_rc(walscan_header(buf, size, &h1), 0);
    h_assert_rc(walscan_header(other, osize, &h2), 0);
    cr_assert_neq(h1->epoch, h2->epoch, "two files with the same epoch");
    uint8_t *dmg = malloc(size);
    static struct recs rs;
    struct walscan_stats st;
    /* in the middle: record 12 replaced by the other file's record 12 (a valid record there) */
    memcpy(dmg, buf, size);
    memcpy(dmg + TOFF(12), other + TOFF(12), TREC);
    h_assert_rc(scan(dmg, size, &rs, &st), 0);
    cr_assert_eq(rs.n, TN - 1);
    cr_assert_eq(st.bad_regions, 1);
    bool keep[TN];
    for (unsigned k = 0; k < TN; k++)
        keep[k] = k != 12;
    shmq_recovery_report_t rep;
    check_recovery(&t, dmg, size, keep, &rep, "foreign record", 12);
    cr_assert_eq(rep.corrupt_regions, 1);
    /* after the tail: a stale record of a reused file */
    memcpy(dmg, buf, size);
    memcpy(dmg + TOFF(TN), other + TOFF(3), TREC * 3);
    h_assert_rc(scan(dmg, size, &rs, &st), 0);
    cr_assert_eq(rs.n, TN);
    cr_assert_eq(st.torn_offset, TOFF(TN));
    for (unsigned k = 0; k < TN; k++)
        keep[k] = true;
    check_recovery(&t, dmg, size, keep, &rep, "stale tail", TN);
    cr_assert_eq(rep.torn_tails, 1);
    cr_assert_eq(rep.restored, TN);
    free(dmg);
    free(other);
    free(buf);
}

/* ---- rotation ---- */

/* publish + ack n messages of len bytes through q, maintaining every `every`; tracks the most
 * files and disk bytes seen in dir. */
static void publish_ack_run(shmq_t *q, shmq_consumer_t *c, const char *dir, unsigned n,
                            uint32_t len, unsigned every, uint32_t *max_files, uint64_t *max_bytes)
{
    uint8_t payload[1024];
    for (unsigned k = 0; k < n; k++) {
        make_payload(k, payload, len);
        h_assert_rc(shmq_publish(q, payload, len, NULL), 0);
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
        if (k % every == every - 1) {
            h_assert_rc(shmq_maintain(q, NULL), 0);
            uint64_t bytes;
            uint32_t files = count_wal_files(dir, &bytes, NULL, NULL);
            if (files > *max_files)
                *max_files = files;
            if (bytes > *max_bytes)
                *max_bytes = bytes;
        }
    }
}

Test(wal, rotation_keeps_disk_use_bounded)
{
    const char *name = h_qname("rot");
    shmq_consumer_t *c;
    shmq_t *q = create_with_consumer(name, 256, 1024, "rot", &c);
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    uint32_t max_files = 0;
    uint64_t max_bytes = 0;
    /* 1 KiB messages: ~60 per 64 KiB file; 12000 of them fill ~200 files */
    publish_ack_run(q, c, dir, 12000, 1000, 50, &max_files, &max_bytes);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    uint64_t bytes;
    uint32_t files = count_wal_files(dir, &bytes, NULL, NULL);
    cr_log_info("rotation: %llu log bytes written, at most %u files / %llu bytes on disk, now "
                "%u / %llu",
                (unsigned long long)st.wal_bytes, max_files, (unsigned long long)max_bytes, files,
                (unsigned long long)bytes);
    cr_assert_geq(st.wal_bytes, 100ull * FILE_SIZE, "wal_bytes %llu",
                  (unsigned long long)st.wal_bytes);
    cr_assert_leq(max_files, 4, "up to %u log files at once", max_files);
    cr_assert_leq(max_bytes, 4ull * FILE_SIZE, "up to %llu bytes on disk",
                  (unsigned long long)max_bytes);
    cr_assert_eq(st.wal_files, files);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* A long-lived writer maps every log file in turn: what it keeps per file it ever mapped must
 * not grow with the files (the watchdog of a queue with 64 KiB files grew by ~9 KiB a minute,
 * one retired mapping struct per file). The heap in use after ~150 more rotations is the same. */
Test(wal, rotation_does_not_grow_the_heap)
{
    const char *name = h_qname("rotheap");
    shmq_consumer_t *c;
    shmq_t *q = create_with_consumer(name, 256, 1024, "rotheap", &c);
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    uint32_t max_files = 0;
    uint64_t max_bytes = 0;
    publish_ack_run(q, c, dir, 3000, 1000, 50, &max_files, &max_bytes); /* ~50 files: warm */
    size_t before = mallinfo2().uordblks;
    publish_ack_run(q, c, dir, 9000, 1000, 50, &max_files, &max_bytes); /* ~150 files more */
    size_t after = mallinfo2().uordblks;
    cr_log_info("heap in use %zu -> %zu bytes over ~150 log files", before, after);
    cr_assert_leq(after, before + 1024, "the heap grew by %zu bytes over ~150 log files",
                  after - before);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* A message nobody acks must not pin every log file written after it: maintenance logs it again
 * (checkpoint) so the old files go, disk use stays bounded, and after losing the segment it still
 * comes back, delayed (the checkpoints carry its due time), once. */
Test(wal, long_lived_message_does_not_pin_the_log)
{
    const char *name = h_qname("pin");
    shmq_consumer_t *c;
    shmq_t *q = create_with_consumer(name, 256, 1024, "pin", &c);
    uint64_t stuck_id;
    h_assert_rc(shmq_publish(q, "stuck", 5, &stuck_id), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_nack(c, &m, 3600000), 0); /* delayed for an hour: live, attempt 1 */
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    uint32_t max_files = 0;
    uint64_t max_bytes = 0;
    publish_ack_run(q, c, dir, 12000, 1000, 50, &max_files, &max_bytes);
    shmq_maint_report_t rep;
    h_assert_rc(shmq_maintain(q, &rep), 0);
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_log_info("pinned: %llu log bytes written, at most %u files / %llu bytes on disk",
                (unsigned long long)st.wal_bytes, max_files, (unsigned long long)max_bytes);
    cr_assert_geq(st.wal_bytes, 100ull * FILE_SIZE);
    cr_assert_leq(max_files, 6, "a live message pinned the log: up to %u files", max_files);
    cr_assert_eq(st.delayed, 1);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);

    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rr;
    h_assert_rc(shmq_recover(name, NULL, &rr), 0);
    cr_assert_eq(rr.restored, 1, "restored %llu", (unsigned long long)rr.restored);
    /* the checkpoints carried its due time: it comes back delayed, not delivered at once */
    cr_assert_eq(rr.delayed, 1, "delayed %llu", (unsigned long long)rr.delayed);
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.delayed, 1);
    h_assert_rc(shmq_consumer_open(q, "after", &c), 0);
    cr_assert_eq(shmq_receive(c, &m, 0), -EAGAIN, "an hour's delay was lost by the rebuild");
    (void)stuck_id;
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Deleted log files must not stay open and mapped in a long-lived process: their disk space is
 * only freed when the last descriptor and mapping go, and a process that keeps one descriptor
 * per file it ever wrote runs out of descriptors. A child with RLIMIT_NOFILE 64 publishes and
 * acks through ~200 rotations. */
static int rotate_with_few_fds(void *arg)
{
    const char *name = arg;
    struct rlimit rl = {64, 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 10;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(name, &q) || shmq_consumer_open(q, "fds", &c))
        return 11;
    uint8_t payload[1000];
    memset(payload, 7, sizeof payload);
    for (unsigned k = 0; k < 12000; k++) {
        int rc = shmq_publish(q, payload, sizeof payload, NULL);
        if (rc) {
            fprintf(stderr, "publish %u failed: %s\n", k, shmq_strerror(rc));
            return 12;
        }
        shmq_msg_t m;
        if (shmq_receive(c, &m, 0) || shmq_ack(c, &m))
            return 13;
        if (k % 50 == 49)
            shmq_maintain(q, NULL);
    }
    /* descriptors of deleted log files still open */
    int stale = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[300], t[512];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(p, t, sizeof t - 1);
        if (n > 0) {
            t[n] = 0;
            stale += strstr(t, "/wal.") && strstr(t, "(deleted)");
        }
    }
    if (d)
        closedir(d);
    fprintf(stderr, "descriptors of deleted log files still open: %d\n", stale);
    shmq_consumer_close(c);
    shmq_close(q);
    return stale > 4 ? 14 : 0;
}

Test(wal, rotation_releases_deleted_files)
{
    const char *name = h_qname("rotfd");
    shmq_config_t cfg = wal_config(256, 1024, FILE_SIZE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_close(q), 0);
    pid_t pid = h_fork(rotate_with_few_fds, (void *)name);
    h_assert_child_ok(pid, 120000, "publish+ack through 200 rotations with 64 descriptors");
    h_assert_rc(shmq_unlink(name), 0);
}

/* After many rotations (old files deleted), the segment lost: recovery brings back exactly the
 * unacked messages, from the files that remain, and ids continue. */
Test(wal, recovery_after_rotation)
{
    const char *name = h_qname("rotrec");
    shmq_consumer_t *c;
    shmq_t *q = create_with_consumer(name, 512, 1024, "rot", &c);
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    uint32_t max_files = 0;
    uint64_t max_bytes = 0;
    publish_ack_run(q, c, dir, 3000, 900, 50, &max_files, &max_bytes);
    /* 300 messages left unacked, spread over several files (a maintenance pass between) */
    enum { LIVE = 300 };
    uint64_t ids[LIVE];
    uint32_t hash[LIVE];
    uint8_t payload[1024];
    for (unsigned k = 0; k < LIVE; k++) {
        size_t len = 100 + k * 3;
        make_payload(100000 + k, payload, len);
        hash[k] = h_fnv1a(payload, len);
        h_assert_rc(shmq_publish(q, payload, len, &ids[k]), 0);
        if (k % 50 == 0)
            h_assert_rc(shmq_maintain(q, NULL), 0);
    }
    uint64_t lo, hi;
    uint32_t files = count_wal_files(dir, NULL, &lo, &hi);
    cr_log_info("recovery after rotation: %u files (wal.%llu .. wal.%llu)", files,
                (unsigned long long)lo, (unsigned long long)hi);
    cr_assert_gt(lo, 10, "old files were deleted");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);

    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_log_info("report: files %u records %llu restored %llu resolved %llu torn %u corrupt %u "
                "skipped %llu",
                rep.files, (unsigned long long)rep.records, (unsigned long long)rep.restored,
                (unsigned long long)rep.resolved, rep.torn_tails, rep.corrupt_regions,
                (unsigned long long)rep.bytes_skipped);
    cr_assert_eq(rep.restored, LIVE);
    cr_assert_eq(rep.torn_tails, 0, "a clean log has no torn tail");
    cr_assert_eq(rep.corrupt_regions, 0, "a clean log (rotated, nobody killed) has no bad region");
    uint64_t got[LIVE + 1];
    uint32_t hashes[LIVE + 1];
    size_t n = drain(name, got, hashes, NULL, LIVE + 1);
    cr_assert_eq(n, LIVE);
    for (unsigned k = 0; k < LIVE; k++) {
        cr_assert_eq(got[k], ids[k]);
        cr_assert_eq(hashes[k], hash[k]);
    }
    h_assert_rc(shmq_open(name, &q), 0);
    uint64_t id;
    h_assert_rc(shmq_publish(q, "x", 1, &id), 0);
    cr_assert_gt(id, ids[LIVE - 1]);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* Ids never go back, even when maintenance has deleted every file that held a record and the
 * queue is recovered again: lose the segment, recover, maintain, lose it again, recover. */
Test(wal, ids_continue_after_second_recovery)
{
    const char *name = h_qname("ids");
    shmq_consumer_t *c;
    shmq_t *q = create_with_consumer(name, 64, 64, "ids", &c);
    uint64_t last = 0;
    for (int k = 0; k < 100; k++) {
        shmq_msg_t m;
        h_assert_rc(shmq_publish(q, "abc", 3, &last), 0);
        h_assert_rc(shmq_receive(c, &m, 0), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    for (int round = 0; round < 2; round++) {
        h_assert_rc(shmq_unlink_segment(name), 0);
        h_assert_rc(shmq_open(name, &q), 0); /* recovers */
        h_assert_rc(shmq_maintain(q, NULL), 0);
        h_assert_rc(shmq_close(q), 0);
    }
    h_assert_rc(shmq_unlink_segment(name), 0);
    int rc = shmq_open(name, &q);
    cr_assert_eq(rc, 0, "the queue is gone after maintenance and a second recovery: %s",
                 shmq_strerror(rc));
    uint64_t id;
    h_assert_rc(shmq_publish(q, "abc", 3, &id), 0);
    cr_assert_gt(id, last, "id %llu reused (last published %llu)", (unsigned long long)id,
                 (unsigned long long)last);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* ---- SYNC: group commit ---- */

struct sync_arg {
    const char *name;
    unsigned n;
};

static int sync_producer(void *arg)
{
    struct sync_arg *a = arg;
    shmq_t *q;
    if (shmq_open(a->name, &q))
        return 10;
    for (unsigned k = 0; k < a->n; k++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%d:%u", (int)getpid(), k);
        int rc = shmq_publish(q, buf, strlen(buf), NULL);
        if (rc) {
            fprintf(stderr, "sync publish: %s\n", shmq_strerror(rc));
            return 11;
        }
    }
    shmq_close(q);
    return 0;
}

Test(wal, sync_group_commit_shares_flushes)
{
    const char *name = h_qname("sync");
    enum { P = 4, PER = 250 };
    shmq_config_t cfg = h_small_config(2048, 64, 16);
    cfg.durability = SHMQ_DURABILITY_SYNC;
    cfg.wal_file_size = 1u << 20;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct sync_arg a = {name, PER};
    pid_t pids[P];
    for (int i = 0; i < P; i++)
        pids[i] = h_fork(sync_producer, &a);
    for (int i = 0; i < P; i++)
        h_assert_child_ok(pids[i], 120000, "sync producer");
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.published, P * PER);
    cr_log_info("sync: %llu publishes, %llu flushes (%.2f publishes per flush)",
                (unsigned long long)st.published, (unsigned long long)st.wal_flushes,
                st.wal_flushes ? (double)st.published / (double)st.wal_flushes : 0.0);
    fprintf(stderr,
            "sync group commit: %llu publishes by %d producers, %llu fdatasync calls "
            "(%.2f publishes per flush)\n",
            (unsigned long long)st.published, P, (unsigned long long)st.wal_flushes,
            st.wal_flushes ? (double)st.published / (double)st.wal_flushes : 0.0);
    cr_assert_gt(st.wal_flushes, 0, "SYNC mode flushed nothing");
    cr_assert_lt(st.wal_flushes, st.published, "flushes %llu not fewer than publishes %llu",
                 (unsigned long long)st.wal_flushes, (unsigned long long)st.published);
    /* every record is in the log */
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, P * PER);
    h_assert_rc(shmq_unlink(name), 0);
}

/* A SYNC leader that died and was not reaped yet (a zombie: kill(pid, 0) still succeeds) must
 * not hold every other SYNC publisher: the registry's liveness rule counts zombies as dead.
 * The leader word is set to a zombie's pid by hand, as a leader killed in fdatasync leaves it. */
static int one_sync_publish(void *arg)
{
    shmq_t *q;
    if (shmq_open(arg, &q))
        return 10;
    int rc = shmq_publish(q, "after the dead leader", 21, NULL);
    shmq_close(q);
    return rc ? 11 : 0;
}

Test(wal, sync_leader_zombie_does_not_block)
{
    const char *name = h_qname("zombie");
    shmq_config_t cfg = h_small_config(64, 64, 16);
    cfg.durability = SHMQ_DURABILITY_SYNC;
    cfg.wal_file_size = FILE_SIZE;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "first", 5, NULL), 0);
    pid_t zombie = fork();
    cr_assert(zombie >= 0);
    if (zombie == 0)
        _exit(0);
    h_sleep_ms(50); /* it has exited; we do not reap it yet */
    cr_assert_eq(h_proc_state(zombie), 'Z');
    struct segment seg;
    h_assert_rc(segment_open(name, false, &seg), 0);
    atomic_store(&seg.hdr->wal_sync_leader, (uint32_t)zombie);
    pid_t pid = h_fork(one_sync_publish, (void *)name);
    int st = 0;
    int rc = h_waitpid(pid, 30000, 0, &st);
    atomic_store(&seg.hdr->wal_sync_leader, 0); /* let it finish if it hung */
    waitpid(zombie, NULL, 0);
    if (rc == -ETIMEDOUT)
        h_waitpid(pid, 30000, 0, &st);
    segment_close(&seg);
    cr_assert_eq(rc, 0, "a SYNC publish waited > 5 s on a leader that is a zombie");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}

/* The newest log file with a damaged header (the next file, made ahead by maintenance, torn by a
 * crash while it was made, or corrupted): recovery skips it and reports it, and the rebuilt queue
 * must still be able to publish (its log must not continue in a file that cannot be mapped). */
Test(wal, recovery_past_damaged_newest_file)
{
    const char *name = h_qname("newest");
    shmq_config_t cfg = wal_config(64, 64, FILE_SIZE);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t ids[5];
    for (int k = 0; k < 5; k++)
        h_assert_rc(shmq_publish(q, "live", 4, &ids[k]), 0);
    h_assert_rc(shmq_maintain(q, NULL), 0); /* makes wal.1 ahead of the writers */
    h_assert_rc(shmq_close(q), 0);
    char dir[512], path[600];
    log_dir_of(name, dir, sizeof dir);
    wal_path(dir, 1, path, sizeof path);
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0, "maintenance made no next file %s", path);
    uint8_t b = 0xff;
    cr_assert_eq(pwrite(fd, &b, 1, 40), 1); /* inside the header (its crc fails) */
    close(fd);
    h_assert_rc(shmq_unlink_segment(name), 0);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq(rep.restored, 5);
    cr_assert_geq(rep.corrupt_regions, 1, "the damaged file is reported");
    h_assert_rc(shmq_open(name, &q), 0);
    uint64_t id;
    int rc = shmq_publish(q, "after", 5, &id);
    cr_assert_eq(rc, 0, "publish after recovery: %s", shmq_strerror(rc));
    cr_assert_gt(id, ids[4]);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink(name), 0);
}
