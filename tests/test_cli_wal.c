/*
 * test_cli_wal.c - `shmq wal NAME inspect|verify`, run as a user runs it.
 *
 * The built tool (dirname(/proc/self/exe)/../shmq) runs as a separate process with stdout and
 * stderr captured, so the tests see the text, the JSON, the exit code and any crash signal.
 * Logs live in $SHMQ_STATE_DIR (ctest: <build>/test-state) or in a temporary directory given
 * as --log-dir; every queue is unlinked and every temporary directory removed by cleanup().
 *
 * What is proved:
 *   - help and usage: --help documents the exit codes; a missing or unknown action is exit 2;
 *     `shmq help` lists wal;
 *   - inspect on a live queue's log after publishing N and acking M: N PUBLISH and M ACK
 *     records, N-M live messages with the right id range, M resolved, the highest id, in the
 *     JSON (parsed) and the text; verify passes on it; and after the segment is gone, the log
 *     is found by the state directory rule and what inspect predicts is what shmq_recover()
 *     then restores;
 *   - verify exits 0 on a clean log (a queue made with `shmq create --log-dir DIR`, written by
 *     `shmq pub`/`sub`, closed) and 1 after bytes in the middle of one of its files are
 *     flipped, naming the file and the offset; inspect lists the bad region and still exits 0;
 *   - a hole (records' worth of zeros followed by valid records: a failed or killed append)
 *     is listed under warnings and counted; with the segment, whose messages all still have
 *     their PUBLISH, verify exits 0 (--strict too); without it the hole is "unexplained":
 *     exit 0, and 1 with --strict; recovery counts it as a hole and restores what inspect
 *     predicted; one flipped byte in a record is exit 1;
 *   - the PUBLISH of a message the segment holds zeroed (review3 F-4a), or the end of an older
 *     file zeroed (F-4c): verify exits 1 naming "lost publish of id N"; without the segment,
 *     an unexplained hole (exit 1 with --strict);
 *   - a record whose crc was never stored (a writer killed in its append, F-4b) is a hole,
 *     not damage: verify exits 0 and recovery counts a hole;
 *   - a torn tail (garbage after the last record) of the newest file written to is reported
 *     as a warning and allowed (exit 0);
 *   - truncated files (shorter than the header: skipped; shorter than the header says: read up
 *     to the cut, as recovery does, and reported), a garbage
 *     file, an empty file, a directory named like a log file and a file missing in the middle
 *     are each reported, and neither inspect nor verify dies of a signal;
 *   - a queue without a log (durability none) is exit 1 with a message.
 */
#include "cli.h"

#include <limits.h>
#include <stddef.h>
#include <sys/mman.h>

#include "walscan.h"

/* Temporary directories of a test, removed by cleanup() even when an assertion ends it. */
static char tmp_dirs[4][64];
static int n_tmp_dirs;

static void cleanup(void)
{
    h_cleanup();
    for (int i = 0; i < n_tmp_dirs; i++)
        h_remove_tree(tmp_dirs[i]);
    n_tmp_dirs = 0;
}

TestSuite(cli_wal, .fini = cleanup, .timeout = 120);

static const char *make_tmp_dir(void)
{
    cr_assert(n_tmp_dirs < 4);
    char *d = tmp_dirs[n_tmp_dirs];
    snprintf(d, sizeof tmp_dirs[0], "/tmp/shmq-test-wal-XXXXXX");
    cr_assert_not_null(mkdtemp(d), "mkdtemp: %s", strerror(errno));
    n_tmp_dirs++;
    return d;
}

/* ------------------------------------------------------------------ JSON of inspect */

/* The file entry named `name` in doc.files, or NULL. */
static struct jval *jfile(struct jval *doc, const char *name)
{
    struct jval *files = jget(doc, "files");
    cr_assert(files && files->type == J_ARR, "JSON: no files array");
    for (size_t i = 0; i < files->n; i++) {
        struct jval *n = jget(files->items[i], "name");
        if (n && n->type == J_STR && strcmp(n->str, name) == 0)
            return files->items[i];
    }
    return NULL;
}

/* Does one of doc.<key> (an array of strings) contain needle? */
static bool jlist_has(struct jval *doc, const char *key, const char *needle)
{
    struct jval *a = jget(doc, key);
    cr_assert(a && a->type == J_ARR, "JSON: no %s array", key);
    for (size_t i = 0; i < a->n; i++)
        if (a->items[i]->type == J_STR && strstr(a->items[i]->str, needle))
            return true;
    return false;
}

/* ------------------------------------------------------------------ log files */

struct scanned {
    bool header_ok;
    uint64_t size;
    struct walscan_stats st;
};

/* Walk a log file with the library's reader (to know where its records end). */
static struct scanned scan_file(const char *path)
{
    struct scanned s = {0};
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    s.size = (uint64_t)st.st_size;
    void *base = mmap(NULL, s.size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    cr_assert(base != MAP_FAILED);
    const struct wal_file_header *h;
    if (walscan_header(base, s.size, &h) == 0) {
        s.header_ok = true;
        walscan_records(base, s.size, h, NULL, NULL, &s.st);
    }
    munmap(base, s.size);
    return s;
}

static void write_at(const char *path, off_t off, const void *p, size_t len)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(pwrite(fd, p, len, off), (ssize_t)len, "pwrite %s", path);
    close(fd);
}

static void log_path(char *buf, size_t size, const char *dir, const char *name, unsigned seq)
{
    snprintf(buf, size, "%s/%s/wal.%010u", dir, name, seq);
}

/* How many wal.0000000000, wal.0000000001, ... exist in DIR/NAME (from 0, without a gap). */
static unsigned count_files(const char *dir, const char *name)
{
    unsigned n = 0;
    char path[PATH_MAX];
    for (;; n++) {
        log_path(path, sizeof path, dir, name, n);
        if (access(path, F_OK) != 0)
            return n;
    }
}

/*
 * A closed queue with a log of several 64 KiB files in DIR/NAME, made as a user makes it:
 * `shmq create --log-dir DIR`, `shmq pub` of n messages ("I-" and pad x's), `shmq sub --count
 * acked`. The oldest message left is in the first file, so no file is deleted by retention.
 * Returns the number of log files.
 */
static unsigned make_logged_queue(const char *name, const char *dir, int n, int pad, int acked)
{
    struct run r = RUN("create", name, "--capacity", "4096", "--durability", "process",
                       "--log-dir", dir, "--wal-file-size", "65536");
    assert_exit(&r, 0, "create --log-dir");
    run_free(&r);
    size_t cap = (size_t)n * (size_t)(pad + 16) + 1;
    char *lines = malloc(cap), *p = lines;
    cr_assert(lines);
    for (int i = 1; i <= n; i++)
        p += snprintf(p, cap - (size_t)(p - lines), "%d-%.*s\n", i, pad,
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    r = RUN_IN(lines, "pub", name);
    assert_exit(&r, 0, "pub");
    run_free(&r);
    free(lines);
    char count[16];
    snprintf(count, sizeof count, "%d", acked);
    RUN_EXPECT_EXIT(0, "sub --count", "sub", name, "--count", count, "--timeout-ms", "10000");
    unsigned files = count_files(dir, name);
    cr_assert_geq(files, 2, "the log spans several files");
    return files;
}

/* ------------------------------------------------------------------ tests */

Test(cli_wal, help_and_usage)
{
    struct run r = RUN("wal", "--help");
    assert_exit(&r, 0, "wal --help");
    assert_contains(r.out, "Exit status", "wal --help");
    assert_contains(r.out, "inspect", "wal --help");
    assert_contains(r.out, "verify", "wal --help");
    assert_contains(r.out, "--log-dir", "wal --help");
    run_free(&r);
    r = RUN("help");
    assert_exit(&r, 0, "help");
    assert_contains(r.out, "  wal ", "help lists wal");
    cr_assert(!strstr(r.out, "Not yet"), "no 'Not yet' note:\n%s", r.out);
    run_free(&r);
    RUN_EXPECT_EXIT(2, "wal without an action", "wal", "q");
    RUN_EXPECT_EXIT(2, "wal with an unknown action", "wal", "q", "frobnicate");
    RUN_EXPECT_EXIT(2, "wal with an extra argument", "wal", "q", "inspect", "extra");
    RUN_EXPECT_EXIT(2, "wal with an invalid queue name", "wal", "bad/name", "verify");
}

Test(cli_wal, inspect_live_log_counts_records_and_predicts_recovery)
{
    enum { N = 40, M = 15 };
    const char *name = h_qname("walive");
    shmq_config_t cfg = h_small_config(64, 64, 16);
    cfg.durability = SHMQ_DURABILITY_PROCESS; /* the log in $SHMQ_STATE_DIR/NAME */
    cfg.wal_file_size = 65536;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    uint64_t ids[N];
    for (int i = 0; i < N; i++) {
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%d", i);
        h_assert_rc(shmq_publish(q, msg, (size_t)len, &ids[i]), 0);
    }
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "acker", &c), 0);
    bool acked[N] = {false};
    for (int i = 0; i < M; i++) {
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 5000), 0);
        for (int k = 0; k < N; k++)
            if (ids[k] == m.id)
                acked[k] = true;
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    uint64_t lo = UINT64_MAX, hi = 0, highest = 0;
    for (int k = 0; k < N; k++) {
        if (ids[k] > highest)
            highest = ids[k];
        if (acked[k])
            continue;
        lo = ids[k] < lo ? ids[k] : lo;
        hi = ids[k] > hi ? ids[k] : hi;
    }

    /* the queue is live: consumer attached, segment there */
    struct run r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "inspect --json on a live queue");
    struct jval *doc = json_parse(r.out);
    cr_assert_str_eq(jstr(doc, "queue"), name);
    cr_assert_str_eq(jstr(doc, "log_dir_from"), "segment");
    cr_assert_str_eq(jstr(doc, "segment"), "valid");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", getenv("SHMQ_STATE_DIR"), name);
    cr_assert_str_eq(jstr(doc, "log_dir"), dir);
    jassert_num(doc, "totals.publish", N);
    jassert_num(doc, "totals.ack", M);
    jassert_num(doc, "totals.dead", 0);
    jassert_num(doc, "totals.nack", 0);
    jassert_num(doc, "totals.bad_regions", 0);
    jassert_num(doc, "totals.torn_tails", 0);
    jassert_num(doc, "files.0.seq", 0);
    cr_assert_str_eq(jstr(doc, "files.0.header"), "ok");
    jassert_num(doc, "files.0.size", 65536);
    jassert_num(doc, "files.0.records.publish", N);
    jassert_num(doc, "files.0.records.ack", M);
    cr_assert_gt(jnum(doc, "files.0.used_bytes"), 4096);
    jassert_num(doc, "recovery.live", N - M);
    jassert_num(doc, "recovery.resolved", M);
    jassert_num(doc, "recovery.first_live_id", (double)lo);
    jassert_num(doc, "recovery.last_live_id", (double)hi);
    jassert_num(doc, "recovery.highest_id", (double)highest);
    jassert_num(doc, "recovery.capacity", 64);
    cr_assert_str_eq(jstr(doc, "recovery.outcome"), "refused while the segment exists");
    cr_assert(jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);

    /* the text holds the same counts */
    r = RUN("wal", name, "inspect");
    assert_exit(&r, 0, "inspect (text)");
    char want[96];
    snprintf(want, sizeof want, "publish=%d ack=%d", N, M);
    assert_contains(r.out, want, "inspect text");
    snprintf(want, sizeof want, "live: %d\n", N - M);
    assert_contains(r.out, want, "inspect text");
    run_free(&r);
    r = RUN("wal", name, "verify");
    assert_exit(&r, 0, "verify on a live, clean log");
    assert_contains(r.out, "ok: true", "verify");
    run_free(&r);

    /* the segment is lost: the log is found by the state directory rule, and what inspect
     * predicts is what recovery restores */
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    h_assert_rc(shmq_unlink_segment(name), 0);
    r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "inspect without a segment");
    doc = json_parse(r.out);
    cr_assert_str_eq(jstr(doc, "log_dir_from"), "state directory");
    cr_assert_str_eq(jstr(doc, "segment"), "missing");
    cr_assert_str_eq(jstr(doc, "log_dir"), dir);
    cr_assert_str_eq(jstr(doc, "recovery.outcome"), "restores the live messages");
    double live = jnum(doc, "recovery.live"), resolved = jnum(doc, "recovery.resolved");
    double top = jnum(doc, "recovery.highest_id");
    json_free(doc);
    run_free(&r);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, NULL, &rep), 0);
    cr_assert_eq((double)rep.restored, live, "restored %llu, inspect said %g",
                 (unsigned long long)rep.restored, live);
    cr_assert_eq((double)rep.resolved, resolved);
    cr_assert_eq((double)rep.highest_id, top);
}

Test(cli_wal, inspect_shows_delayed_records_and_their_due_time)
{
    const char *name = h_qname("waldue");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = 65536;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t0 = (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000);
    h_assert_rc(shmq_publish_delayed(q, "later", 5, 600000, NULL), 0);
    h_assert_rc(shmq_publish_delayed(q, "soon", 4, 300000, NULL), 0);
    h_assert_rc(shmq_publish(q, "now", 3, NULL), 0);
    /* a nacked delay counts too: the ready one, nacked for 100 s */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 5000), 0);
    h_assert_rc(shmq_nack(c, &m, 100000), 0);
    h_assert_rc(shmq_consumer_close(c), 0);
    struct run r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "wal inspect --json");
    struct jval *doc = json_parse(r.out);
    jassert_num(doc, "files.0.delayed", 2);
    jassert_num(doc, "recovery.live", 3);
    jassert_num(doc, "recovery.live_delayed", 3);
    double next = jnum(doc, "recovery.next_due_unix_ms");
    cr_assert(next >= t0 + 100000 - 50 && next <= t0 + 100000 + 60000,
              "next_due_unix_ms %.0f is not the nack's due time (about %.0f)", next, t0 + 100000);
    json_free(doc);
    run_free(&r);
    r = RUN("wal", name, "inspect");
    assert_exit(&r, 0, "wal inspect");
    assert_contains(r.out, "live_delayed: 3", "wal inspect text");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

Test(cli_wal, verify_clean_log_then_flipped_bytes)
{
    const char *name = h_qname("walflip");
    const char *base = make_tmp_dir();
    unsigned files = make_logged_queue(name, base, 2500, 0, 1000);

    struct run r = RUN("wal", name, "verify");
    assert_exit(&r, 0, "verify on a clean log");
    assert_contains(r.out, "ok: true", "verify");
    run_free(&r);
    r = RUN("wal", name, "verify", "--log-dir", base, "--json");
    assert_exit(&r, 0, "verify --log-dir --json on a clean log");
    struct jval *doc = json_parse(r.out);
    cr_assert_str_eq(jstr(doc, "log_dir_from"), "--log-dir");
    jassert_num(doc, "totals.files", files);
    cr_assert(jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);

    /* flip 40 bytes in the middle of the first file's records */
    char path[PATH_MAX];
    log_path(path, sizeof path, base, name, 0);
    struct scanned s = scan_file(path);
    cr_assert(s.header_ok && s.st.records > 100);
    uint64_t mid = (WAL_HEADER_SIZE + s.st.end_offset) / 2;
    unsigned char junk[40];
    memset(junk, 0xa5, sizeof junk);
    write_at(path, (off_t)mid, junk, sizeof junk);

    r = RUN("wal", name, "verify");
    assert_exit(&r, 1, "verify after flipping bytes");
    assert_contains(r.out, "wal.0000000000: bad region at offset", "verify names file and offset");
    assert_contains(r.out, "ok: false", "verify");
    assert_contains(r.err, "damaged", "verify's summary on stderr");
    run_free(&r);
    r = RUN("wal", name, "verify", "--json");
    assert_exit(&r, 1, "verify --json after flipping bytes");
    doc = json_parse(r.out);
    cr_assert(!jbool(doc, "ok"));
    cr_assert(jlist_has(doc, "problems", "wal.0000000000: bad region"));
    json_free(doc);
    run_free(&r);

    /* inspect lists the region (offset within a record's span around mid) and exits 0 */
    r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "inspect of a damaged log");
    doc = json_parse(r.out);
    struct jval *f = jfile(doc, "wal.0000000000");
    cr_assert(f, "file 0 listed");
    jassert_num(f, "bad_regions_total", 1);
    double off = jnum(f, "bad_regions.0.offset"), len = jnum(f, "bad_regions.0.length");
    cr_assert(off <= (double)mid && off + len >= (double)mid + sizeof junk,
              "region [%g, +%g) covers the flipped bytes at %llu", off, len,
              (unsigned long long)mid);
    cr_assert_str_eq(jstr(f, "bad_regions.0.kind"), "garbage");
    cr_assert(!jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);
}

/* Offsets and sizes of the valid records of a log file. */
struct rec_spans {
    uint64_t off[4096], size[4096], id[4096];
    size_t n;
};

static int note_span(void *arg, uint64_t offset, const struct wal_rec *rec, const void *payload)
{
    (void)payload;
    struct rec_spans *rs = arg;
    if (rs->n < sizeof(rs->off) / sizeof(rs->off[0])) {
        rs->off[rs->n] = offset;
        rs->id[rs->n] = rec->id;
        rs->size[rs->n++] = wal_rec_size(rec->len);
    }
    return 0;
}

static void record_spans(const char *path, struct rec_spans *rs)
{
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    cr_assert(base != MAP_FAILED);
    const struct wal_file_header *h;
    cr_assert_eq(walscan_header(base, (size_t)st.st_size, &h), 0);
    struct walscan_stats ws;
    rs->n = 0;
    walscan_records(base, (size_t)st.st_size, h, note_span, rs, &ws);
    munmap(base, (size_t)st.st_size);
}

/* A hole (records' worth of zeros followed by valid records: what an append that failed, or
 * whose writer was killed, leaves) is listed and counted but is no damage: verify exits 0, and
 * recovery reads past it and counts it as a hole. A flipped byte in a record is damage. */
Test(cli_wal, verify_allows_a_hole_and_fails_on_a_flipped_byte)
{
    const char *name = h_qname("walhole");
    const char *base = make_tmp_dir();
    make_logged_queue(name, base, 2500, 0, 1000);

    char path[PATH_MAX];
    log_path(path, sizeof path, base, name, 0);
    static struct rec_spans rs;
    record_spans(path, &rs);
    cr_assert_gt(rs.n, 100);
    /* three records in the middle of file 0 never written */
    size_t k = rs.n / 2;
    uint64_t hole_off = rs.off[k], hole_len = rs.off[k + 3] - rs.off[k];
    static const unsigned char zeros[4096];
    cr_assert_leq(hole_len, sizeof zeros);
    write_at(path, (off_t)hole_off, zeros, hole_len);

    struct run r = RUN("wal", name, "verify", "--log-dir", base);
    assert_exit(&r, 0, "verify allows a hole");
    char want[96];
    snprintf(want, sizeof want, "wal.0000000000: hole at offset %llu, %llu bytes",
             (unsigned long long)hole_off, (unsigned long long)hole_len);
    assert_contains(r.out, want, "verify lists the hole");
    assert_contains(r.out, "ok: true", "verify");
    run_free(&r);
    r = RUN("wal", name, "verify", "--log-dir", base, "--json");
    assert_exit(&r, 0, "verify --json with a hole");
    struct jval *doc = json_parse(r.out);
    jassert_num(doc, "totals.holes", 1);
    jassert_num(doc, "totals.bad_regions", 0);
    cr_assert(jlist_has(doc, "warnings", "wal.0000000000: hole at offset"));
    cr_assert(jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);
    r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "inspect with a hole");
    doc = json_parse(r.out);
    struct jval *f = jfile(doc, "wal.0000000000");
    cr_assert(f, "file 0 listed");
    jassert_num(f, "holes_total", 1);
    jassert_num(f, "holes.0.offset", (double)hole_off);
    jassert_num(f, "holes.0.length", (double)hole_len);
    jassert_num(f, "hole_bytes", (double)hole_len);
    jassert_num(f, "bad_regions_total", 0);
    double live = jnum(doc, "recovery.live");
    json_free(doc);
    run_free(&r);

    /* one byte of a later record flipped: damage, exit 1; restored: sound again */
    uint64_t at = rs.off[k + 10] + 40;
    unsigned char byte, flipped;
    int fd = open(path, O_RDONLY);
    cr_assert_eq(pread(fd, &byte, 1, (off_t)at), 1);
    close(fd);
    flipped = byte ^ 0x01;
    write_at(path, (off_t)at, &flipped, 1);
    r = RUN("wal", name, "verify", "--log-dir", base);
    assert_exit(&r, 1, "verify after flipping a byte");
    assert_contains(r.out, "wal.0000000000: bad region at offset", "the flipped record");
    assert_contains(r.err, "damaged", "verify's summary on stderr");
    run_free(&r);
    write_at(path, (off_t)at, &byte, 1);
    RUN_EXPECT_EXIT(0, "verify with the byte restored", "wal", name, "verify", "--log-dir", base);

    /* with the segment, every message it holds still has its PUBLISH (the zeroed ones were
     * acked): the hole is explained, --strict passes too */
    r = RUN("wal", name, "verify", "--log-dir", base, "--strict", "--json");
    assert_exit(&r, 0, "verify --strict with a hole the segment explains");
    doc = json_parse(r.out);
    cr_assert(jbool(doc, "segment_check.done"));
    jassert_num(doc, "segment_check.lost_publishes", 0);
    jassert_num(doc, "totals.unexplained_holes", 0);
    json_free(doc);
    run_free(&r);

    /* recovery agrees: it reads past the hole, counts it as a hole, and restores what inspect
     * predicted */
    h_assert_rc(shmq_unlink_segment(name), 0);
    /* without the segment nothing tells a failed append from lost data */
    r = RUN("wal", name, "verify", "--log-dir", base);
    assert_exit(&r, 0, "verify of an unexplained hole, not strict");
    snprintf(want, sizeof want, "wal.0000000000: unexplained hole at offset %llu",
             (unsigned long long)hole_off);
    assert_contains(r.out, want, "the hole, unexplained");
    assert_contains(r.out, "no segment to check against", "why");
    run_free(&r);
    r = RUN("wal", name, "verify", "--log-dir", base, "--strict");
    assert_exit(&r, 1, "verify --strict of an unexplained hole");
    assert_contains(r.out, want, "the hole, a problem");
    run_free(&r);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, base, &rep), 0);
    cr_assert_eq(rep.holes, 1, "recovery's holes %u", rep.holes);
    cr_assert_eq(rep.corrupt_regions, 1);
    cr_assert_eq(rep.bytes_skipped, hole_len);
    cr_assert_eq((double)rep.restored, live, "restored %llu, inspect said %g",
                 (unsigned long long)rep.restored, live);
}

Test(cli_wal, torn_tail_in_newest_file_is_reported_and_allowed)
{
    const char *name = h_qname("waltorn");
    const char *base = make_tmp_dir();
    unsigned files = make_logged_queue(name, base, 2500, 0, 300);

    /* the newest file written to: the highest one holding records (maintenance may have made
     * an empty one after it) */
    char path[PATH_MAX];
    struct scanned s = {0};
    for (unsigned seq = files; seq-- > 0;) {
        log_path(path, sizeof path, base, name, seq);
        s = scan_file(path);
        if (s.header_ok && s.st.records > 0)
            break;
    }
    cr_assert(s.header_ok && s.st.records > 0 && s.st.end_offset + 64 < s.size);
    /* a record cut short: a header's first bytes and some payload, no valid crc */
    unsigned char torn[48];
    for (size_t i = 0; i < sizeof torn; i++)
        torn[i] = (unsigned char)(0x31 + i);
    write_at(path, (off_t)s.st.end_offset, torn, sizeof torn);

    struct run r = RUN("wal", name, "verify", "--log-dir", base);
    assert_exit(&r, 0, "verify allows a torn tail in the newest file");
    assert_contains(r.out, "torn tail at offset", "the torn tail is reported");
    assert_contains(r.out, "ok: true", "verify");
    run_free(&r);
    r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "inspect with a torn tail");
    struct jval *doc = json_parse(r.out);
    jassert_num(doc, "totals.torn_tails", 1);
    jassert_num(doc, "totals.bad_regions", 0);
    const char *fname = strrchr(path, '/') + 1;
    struct jval *f = jfile(doc, fname);
    cr_assert(f, "%s listed", fname);
    jassert_num(f, "torn_tail.offset", (double)s.st.end_offset);
    cr_assert(jlist_has(doc, "warnings", "torn tail"));
    cr_assert(jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);
}

Test(cli_wal, truncated_garbage_and_missing_files_are_reported_without_a_crash)
{
    const char *name = h_qname("walbad");
    const char *base = make_tmp_dir();
    unsigned files = make_logged_queue(name, base, 2000, 100, 100);
    cr_assert_geq(files, 4, "at least four files");

    char p0[PATH_MAX], p1[PATH_MAX], p2[PATH_MAX], p[PATH_MAX];
    log_path(p0, sizeof p0, base, name, 0);
    log_path(p1, sizeof p1, base, name, 1);
    log_path(p2, sizeof p2, base, name, 2);
    cr_assert_eq(truncate(p0, 3000), 0, "shorter than the header");
    cr_assert_eq(truncate(p1, 30000), 0, "shorter than its header says");
    /* a file in the middle is gone */
    cr_assert_eq(unlink(p2), 0);
    /* beyond the newest: garbage, empty, a directory */
    log_path(p, sizeof p, base, name, files + 1);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 70000 / 8; i++) {
        cr_assert_eq(write(fd, &x, sizeof x), (ssize_t)sizeof x);
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    }
    close(fd);
    log_path(p, sizeof p, base, name, files + 2);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    close(fd);
    log_path(p, sizeof p, base, name, files + 3);
    cr_assert_eq(mkdir(p, 0700), 0);

    struct run r = RUN("wal", name, "inspect", "--json");
    assert_exit(&r, 0, "inspect of a damaged log directory");
    struct jval *doc = json_parse(r.out);
    struct jval *f = jfile(doc, "wal.0000000000");
    cr_assert(f);
    assert_contains(jstr(f, "header"), "shorter than the 4096-byte file header", "file 0");
    cr_assert(!jbool(f, "recovery_reads"));
    f = jfile(doc, "wal.0000000001"); /* cut short: the records before the cut still count */
    cr_assert(f);
    cr_assert_str_eq(jstr(f, "header"), "ok");
    cr_assert(jbool(f, "truncated"), "file 1 is truncated");
    cr_assert(jbool(f, "recovery_reads"));
    jassert_num(f, "header_file_size", 65536);
    cr_assert_gt(jnum(f, "records.total"), 0, "records before the cut");
    cr_assert(jlist_has(doc, "problems", "wal.0000000001: truncated"));
    char want[64];
    snprintf(want, sizeof want, "wal.%010u", files + 1);
    f = jfile(doc, want);
    cr_assert(f, "%s listed", want);
    assert_contains(jstr(f, "header"), "bad magic", "garbage file");
    snprintf(want, sizeof want, "wal.%010u", files + 2);
    f = jfile(doc, want);
    cr_assert(f, "%s listed", want);
    assert_contains(jstr(f, "header"), "empty", "empty file");
    snprintf(want, sizeof want, "wal.%010u", files + 3);
    f = jfile(doc, want);
    cr_assert(f, "%s listed", want);
    assert_contains(jstr(f, "header"), "not a regular file", "directory");
    cr_assert(jlist_has(doc, "problems", "missing in the middle of the log"));
    cr_assert(!jbool(doc, "ok"));
    cr_assert_gt(jnum(doc, "recovery.files_read"), 0, "the sound files are still read");
    json_free(doc);
    run_free(&r);

    RUN_EXPECT_EXIT(0, "inspect (text) of a damaged log directory", "wal", name, "inspect");
    r = RUN("wal", name, "verify");
    assert_exit(&r, 1, "verify of a damaged log directory");
    assert_contains(r.out, "wal.0000000000: bad header", "verify");
    assert_contains(r.out, "wal.0000000001: truncated", "verify");
    assert_contains(r.out, "not a regular file", "verify");
    assert_contains(r.err, "damaged", "verify's summary");
    run_free(&r);
}

Test(cli_wal, queue_without_a_log_is_exit_1)
{
    const char *name = h_qname("walnone");
    shmq_config_t cfg = h_small_config(8, 64, 8);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct run r = RUN("wal", name, "inspect");
    assert_exit(&r, 1, "inspect of a queue without a log");
    assert_contains(r.err, "durability is none", "the reason");
    run_free(&r);
    r = RUN("wal", name, "verify", "--log-dir", "/nonexistent-shmq-dir");
    assert_exit(&r, 1, "verify of a missing --log-dir");
    assert_contains(r.err, "no log directory", "the reason");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

/* ------------------------------------------------------------------ what only the segment tells */

/* Zero the span [from, to) of path. */
static void zero_span(const char *path, uint64_t from, uint64_t to)
{
    static const unsigned char zeros[65536];
    cr_assert_leq(to - from, sizeof zeros);
    write_at(path, (off_t)from, zeros, (size_t)(to - from));
}

/* review3 F-4a: the PUBLISH record of a live message (published, never acked) zeroed in place
 * (a lost block, a misdirected write) looks exactly like a hole. With the segment verify sees
 * that a message it holds lost its PUBLISH: exit 1 naming it, where 3a2198d called it a
 * harmless hole (exit 0) and the rebuild silently came back one message short. */
Test(cli_wal, zeroed_publish_of_a_live_message_is_a_lost_publish)
{
    const char *name = h_qname("walzero");
    const char *base = make_tmp_dir();
    make_logged_queue(name, base, 2500, 0, 1); /* id 1 acked, 2..2500 live */
    char path[PATH_MAX];
    log_path(path, sizeof path, base, name, 0);
    static struct rec_spans rs;
    record_spans(path, &rs);
    size_t k = rs.n / 2; /* file 0 holds only PUBLISH records */
    uint64_t lost = rs.id[k];
    cr_assert_gt(lost, 1);
    zero_span(path, rs.off[k], rs.off[k] + rs.size[k]);

    char want[64];
    snprintf(want, sizeof want, "lost publish of id %llu ", (unsigned long long)lost);
    struct run r = RUN("wal", name, "verify", "--log-dir", base);
    assert_exit(&r, 1, "verify of a log that lost a live message's PUBLISH");
    assert_contains(r.out, want, "the lost message named");
    assert_contains(r.err, "damaged", "verify's summary on stderr");
    run_free(&r);
    r = RUN("wal", name, "verify", "--log-dir", base, "--json");
    assert_exit(&r, 1, "verify --json");
    struct jval *doc = json_parse(r.out);
    cr_assert(jbool(doc, "segment_check.done"));
    jassert_num(doc, "segment_check.messages", 2499);
    jassert_num(doc, "segment_check.lost_publishes", 1);
    cr_assert(!jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);

    /* what the check stood for: the rebuild comes back one short */
    h_assert_rc(shmq_unlink_segment(name), 0);
    r = RUN("wal", name, "verify", "--log-dir", base, "--strict");
    assert_exit(&r, 1, "verify --strict without the segment");
    assert_contains(r.out, "unexplained hole at offset", "the hole, unexplained");
    run_free(&r);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, base, &rep), 0);
    cr_assert_eq(rep.restored, 2498);
    cr_assert_eq(rep.holes, 1);
}

/* review3 F-4c: the same loss at the end of a full, older file (its last blocks zeroed from a
 * record boundary on): zeros there were "unused space", verify said nothing and recovery came
 * back 85 short with no hole counted. A file the log moved past is full to its end (a crossing
 * is padded), so those zeros are a hole: with the segment, lost publishes (exit 1); without
 * it, an unexplained hole (exit 1 with --strict). */
Test(cli_wal, zeroed_tail_of_an_older_file_is_reported)
{
    const char *name = h_qname("waltailz");
    const char *base = make_tmp_dir();
    make_logged_queue(name, base, 2500, 0, 1); /* ids 2..2500 live */
    char path[PATH_MAX];
    log_path(path, sizeof path, base, name, 0);
    static struct rec_spans rs;
    record_spans(path, &rs);
    size_t k = 0;
    while (k < rs.n && rs.off[k] < 65536 - 4096)
        k++;
    cr_assert(k < rs.n);
    uint64_t first_lost = rs.id[k];
    /* clean before: no tail zeros in any older file */
    RUN_EXPECT_EXIT(0, "verify --strict of the clean log", "wal", name, "verify", "--log-dir",
                    base, "--strict");
    zero_span(path, rs.off[k], 65536);

    char want[64];
    snprintf(want, sizeof want, "lost publish of id %llu ", (unsigned long long)first_lost);
    struct run r = RUN("wal", name, "verify", "--log-dir", base, "--json");
    assert_exit(&r, 1, "verify of an older file whose end was zeroed");
    struct jval *doc = json_parse(r.out);
    cr_assert(jlist_has(doc, "problems", want), "the first lost message named");
    double lost = jnum(doc, "segment_check.lost_publishes");
    jassert_num(jfile(doc, "wal.0000000000"), "tail_zeros", (double)(65536 - rs.off[k]));
    json_free(doc);
    run_free(&r);

    h_assert_rc(shmq_unlink_segment(name), 0);
    r = RUN("wal", name, "verify", "--log-dir", base);
    assert_exit(&r, 0, "verify without the segment, not strict");
    assert_contains(r.out, "bytes of zeros at offset", "the tail zeros, a warning");
    run_free(&r);
    r = RUN("wal", name, "verify", "--log-dir", base, "--strict");
    assert_exit(&r, 1, "verify --strict without the segment");
    assert_contains(r.out, "unexplained", "the tail zeros, unexplained");
    run_free(&r);
    shmq_recovery_report_t rep;
    h_assert_rc(shmq_recover(name, base, &rep), 0);
    cr_assert_eq((double)(2499 - rep.restored), lost, "verify counted %g lost, the rebuild %llu",
                 lost, 2499 - (unsigned long long)rep.restored);
}

/* review3 F-4b: an append whose writer was killed after some of its stores and before its crc
 * (L1: stored last, into a zero-filled file) leaves its header, a prefix of its payload and
 * crc 0. Nothing in it was ever reported written: a hole, not "garbage" (which made verify
 * exit 1 for good). */
Test(cli_wal, append_killed_before_its_crc_is_a_hole_not_damage)
{
    const char *name = h_qname("waltornrec");
    const char *base = make_tmp_dir();
    make_logged_queue(name, base, 2500, 0, 1000); /* the record below is of an acked message */
    char path[PATH_MAX];
    log_path(path, sizeof path, base, name, 0);
    static struct rec_spans rs;
    record_spans(path, &rs);
    size_t k = rs.n / 2;
    cr_assert_leq(rs.id[k], 1000);
    uint32_t zero = 0;
    write_at(path, (off_t)rs.off[k] + offsetof(struct wal_rec, crc), &zero, sizeof zero);
    zero_span(path, rs.off[k] + rs.size[k] - 8, rs.off[k] + rs.size[k]); /* payload's end */

    struct run r = RUN("wal", name, "verify", "--log-dir", base, "--json");
    assert_exit(&r, 0, "verify of a log with an append killed before its crc");
    struct jval *doc = json_parse(r.out);
    jassert_num(doc, "totals.bad_regions", 0);
    jassert_num(doc, "totals.holes", 1);
    cr_assert(jbool(doc, "ok"));
    json_free(doc);
    run_free(&r);
    shmq_t *q;
    shmq_stats_t st;
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.recovered_holes + st.recovered_bad_regions, 0, "a created segment");
    h_assert_rc(shmq_close(q), 0);
    /* recovery agrees (a hole), and shmq_open()'s rebuild, which discards its report, shows
     * what it read past in shmq_stats() */
    h_assert_rc(shmq_unlink_segment(name), 0);
    h_assert_rc(shmq_open(name, &q), 0);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.recovered_holes, 1, "the rebuild's hole in shmq_stats");
    cr_assert_eq(st.recovered_bad_regions, 0);
    cr_assert_eq(st.ready, 1500);
    struct run rs2 = RUN("stat", name, "--json"); /* and in shmq stat */
    assert_exit(&rs2, 0, "stat of the rebuilt queue");
    struct jval *sdoc = json_parse(rs2.out);
    jassert_num(sdoc, "recovered.holes", 1);
    jassert_num(sdoc, "recovered.bad_regions", 0);
    json_free(sdoc);
    run_free(&rs2);
    h_assert_rc(shmq_close(q), 0);
}
