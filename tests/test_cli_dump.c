/*
 * test_cli_dump.c - `shmq dump` shows a queue as it is, and survives any segment it is given.
 *
 * The tool is run as a separate process (fork + exec of the built `shmq`, found next to the
 * tests' directory: dirname(/proc/self/exe)/../shmq), with stdout and stderr captured, so the
 * tests see exactly what a user sees: the text, the JSON, the exit code, and any crash signal.
 *
 * What is proved:
 *   - the dump of a live queue shows the in-flight slot with its id, owner and payload, the
 *     ready count, the registry entries (alive, with the consumer's name), counters (text, JSON);
 *   - --json is one valid JSON document (checked by a strict parser here), with names escaped;
 *   - a registry entry of a process that died is shown dead;
 *   - a corrupted or truncated header gives exit 1 and a message on stderr, never a signal;
 *   - out-of-range states, owners, lengths and ring indices are listed as errors (exit 1);
 *   - dumping a queue that other processes use at full speed reports no false inconsistency
 *     and does not disturb them;
 *   - random damage to everything after the header never crashes the tool (exit 0 or 1, and
 *     the JSON stays valid);
 *   - help and usage errors give the documented exit codes 0 and 2.
 */
#include "cli.h"

#include <inttypes.h>
#include <stddef.h>

#include "layout.h"
#include "segment.h"
#include "slot.h"

TestSuite(cli_dump, .fini = h_cleanup);

/* ------------------------------------------------------------------ running the tool */

/* Run `shmq ARGS...` (NULL-terminated) and wait for it (at most 20 s). */
#define run_shmq(...) cli_run("shmq", 20, NULL, (const char *const[]){__VA_ARGS__})

/* The line of text that contains needle, copied into buf (or NULL). */
static const char *line_with(const char *text, const char *needle, char *buf, size_t size)
{
    const char *p = strstr(text, needle);
    if (!p)
        return NULL;
    const char *start = p, *end = p;
    while (start > text && start[-1] != '\n')
        start--;
    while (*end && *end != '\n')
        end++;
    size_t n = (size_t)(end - start) < size - 1 ? (size_t)(end - start) : size - 1;
    memcpy(buf, start, n);
    buf[n] = '\0';
    return buf;
}

/* ------------------------------------------------------------------ a strict JSON checker */

struct json_parser {
    const char *s;
    size_t i, n;
    int depth;
};

static void js_ws(struct json_parser *p)
{
    while (p->i < p->n && strchr(" \t\r\n", p->s[p->i]))
        p->i++;
}

static bool js_lit(struct json_parser *p, const char *lit)
{
    size_t k = strlen(lit);
    if (p->n - p->i < k || memcmp(p->s + p->i, lit, k) != 0)
        return false;
    p->i += k;
    return true;
}

/* The length of the valid UTF-8 character (two to four bytes) at s, or 0. */
static size_t js_utf8_len(const unsigned char *s, size_t left)
{
    size_t need;
    uint32_t cp, min;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        need = 2, cp = s[0] & 0x1f, min = 0x80;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        need = 3, cp = s[0] & 0x0f, min = 0x800;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        need = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (left < need)
        return 0;
    for (size_t k = 1; k < need; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : need;
}

static bool js_string(struct json_parser *p)
{
    if (p->i >= p->n || p->s[p->i] != '"')
        return false;
    for (p->i++; p->i < p->n; p->i++) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            return true;
        }
        if (c < 0x20) /* control characters are escaped */
            return false;
        if (c >= 0x80) { /* the tool promises valid UTF-8 (RFC 3629) */
            size_t k = js_utf8_len((const unsigned char *)p->s + p->i, p->n - p->i);
            if (k == 0)
                return false;
            p->i += k - 1;
            continue;
        }
        if (c == '\\') {
            if (++p->i >= p->n)
                return false;
            c = (unsigned char)p->s[p->i];
            if (c == 'u') {
                for (int k = 0; k < 4; k++)
                    if (++p->i >= p->n || !strchr("0123456789abcdefABCDEF", p->s[p->i]))
                        return false;
            } else if (!strchr("\"\\/bfnrt", c)) {
                return false;
            }
        }
    }
    return false;
}

static bool js_digits(struct json_parser *p)
{
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
        p->i++;
    return p->i > start;
}

static bool js_number(struct json_parser *p)
{
    if (p->i < p->n && p->s[p->i] == '-')
        p->i++;
    if (p->i < p->n && p->s[p->i] == '0')
        p->i++;
    else if (!js_digits(p))
        return false;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (!js_digits(p))
            return false;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (!js_digits(p))
            return false;
    }
    return true;
}

static bool js_value(struct json_parser *p);

static bool js_container(struct json_parser *p, char open, char close, bool keyed)
{
    if (++p->depth > 64)
        return false;
    p->i++; /* open */
    js_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        p->depth--;
        return true;
    }
    for (;;) {
        js_ws(p);
        if (keyed) {
            if (!js_string(p))
                return false;
            js_ws(p);
            if (p->i >= p->n || p->s[p->i++] != ':')
                return false;
        }
        if (!js_value(p))
            return false;
        js_ws(p);
        if (p->i >= p->n)
            return false;
        char c = p->s[p->i++];
        if (c == close)
            break;
        if (c != ',')
            return false;
    }
    (void)open;
    p->depth--;
    return true;
}

static bool js_value(struct json_parser *p)
{
    js_ws(p);
    if (p->i >= p->n)
        return false;
    switch (p->s[p->i]) {
    case '{': return js_container(p, '{', '}', true);
    case '[': return js_container(p, '[', ']', false);
    case '"': return js_string(p);
    case 't': return js_lit(p, "true");
    case 'f': return js_lit(p, "false");
    case 'n': return js_lit(p, "null");
    default: return js_number(p);
    }
}

static bool json_valid(const char *s, size_t n)
{
    struct json_parser p = {.s = s, .n = n};
    if (!js_value(&p))
        return false;
    js_ws(&p);
    return p.i == p.n;
}

#define assert_json(r)                                                                            \
    cr_assert(json_valid((r)->out, (r)->out_len), "not valid JSON:\n%s", (r)->out)

/* ------------------------------------------------------------------ fixtures */

#define CAPACITY 16
#define MSG_SIZE 128

struct live_queue {
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t inflight;
    uint64_t ids[4];
};

/* A queue with 3 text messages and 1 binary one published, and the first one received. */
static const char *make_live_queue(const char *tag, const char *consumer_name,
                                   struct live_queue *lq)
{
    const char *name = h_qname(tag);
    shmq_config_t cfg = h_small_config(CAPACITY, MSG_SIZE, 8);
    /* no dedup window: random damage (random_damage_never_crashes_the_tool) must land in the
     * regions the dump checks, not in a megabyte of buckets */
    cfg.dedup_window_count = 0;
    h_assert_rc(shmq_create(name, &cfg, &lq->q), 0);
    for (int i = 0; i < 3; i++) {
        char text[32];
        snprintf(text, sizeof(text), "msg-%d says \"hi\"", i);
        h_assert_rc(shmq_publish(lq->q, text, strlen(text), &lq->ids[i]), 0);
    }
    unsigned char bin[48];
    for (int i = 0; i < 48; i++)
        bin[i] = (unsigned char)i;
    h_assert_rc(shmq_publish(lq->q, bin, sizeof(bin), &lq->ids[3]), 0);
    h_assert_rc(shmq_consumer_open(lq->q, consumer_name, &lq->c), 0);
    h_assert_rc(shmq_receive(lq->c, &lq->inflight, 0), 0);
    cr_assert_eq(lq->inflight.id, lq->ids[0]);
    return name;
}

static void close_live_queue(struct live_queue *lq)
{
    h_assert_rc(shmq_consumer_close(lq->c), 0);
    h_assert_rc(shmq_close(lq->q), 0);
}

/* ------------------------------------------------------------------ tests */

Test(cli_dump, help_and_usage_exit_codes)
{
    struct run r = run_shmq("help", NULL);
    assert_exit(&r, 0, "shmq help");
    assert_contains(r.out, "dump", "shmq help");
    run_free(&r);

    r = run_shmq("dump", "--help", NULL);
    assert_exit(&r, 0, "shmq dump --help");
    assert_contains(r.out, "Usage: shmq dump NAME [--json]", "dump --help");
    assert_contains(r.out, "Exit status", "dump --help");
    assert_contains(r.out, "Examples", "dump --help");
    run_free(&r);

    r = run_shmq("help", "dump", NULL);
    assert_exit(&r, 0, "shmq help dump");
    assert_contains(r.out, "--json", "help dump");
    run_free(&r);

    const char *const bad[][3] = {
        {"dump", NULL, NULL},          {"dump", "a", "b"},
        {"dump", "--bogus", "a"},      {"nosuchcommand", NULL, NULL},
        {"dump", "bad/name", NULL},    {"help", "nosuchcommand", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = run_shmq(bad[i][0], bad[i][1], bad[i][2], NULL);
        assert_exit(&r, 2, bad[i][0]);
        cr_assert(r.err[0] != '\0', "usage error %zu printed nothing on stderr", i);
        run_free(&r);
    }
    r = run_shmq(NULL);
    assert_exit(&r, 2, "shmq without arguments");
    run_free(&r);
}

Test(cli_dump, missing_queue_exits_1)
{
    const char *name = h_qname("nosuch");
    struct run r = run_shmq("dump", name, NULL);
    assert_exit(&r, 1, "dump of a missing queue");
    assert_contains(r.err, "no such queue", "stderr");
    cr_assert_eq(r.out_len, 0, "stdout should be empty:\n%s", r.out);
    run_free(&r);
}

/* A UTF-8 payload longer than the preview is previewed as text, as it is, up to the last whole
 * character before the cut (not as hex because the cut split an "é"), in text and JSON; a
 * payload that is not UTF-8 stays hex. */
Test(cli_dump, utf8_preview_ends_at_a_whole_character)
{
    const char *name = h_qname("u8prev");
    shmq_config_t cfg = h_small_config(CAPACITY, MSG_SIZE, 8);
    cfg.dedup_window_count = 0;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    char text[64] = "x"; /* 1 + 2 * 20 bytes: the 32-byte cut falls inside the 16th "é" */
    for (int i = 0; i < 20; i++)
        strcat(text, "\xc3\xa9");
    uint64_t id;
    h_assert_rc(shmq_publish(q, text, strlen(text), &id), 0);
    char want[96] = "preview=\"x";
    for (int i = 0; i < 15; i++)
        strcat(want, "\xc3\xa9");
    strcat(want, "\" preview_truncated=true");

    struct run r = run_shmq("dump", name, NULL);
    assert_exit(&r, 0, "dump");
    char line[1024], idw[48];
    snprintf(idw, sizeof idw, " id=%" PRIu64 " ", id);
    cr_assert(line_with(r.out, idw, line, sizeof(line)), "no slot with id %" PRIu64, id);
    assert_contains(line, "preview_encoding=text", "a cut UTF-8 preview");
    assert_contains(line, want, "a cut UTF-8 preview");
    run_free(&r);

    r = run_shmq("dump", name, "--json", NULL);
    assert_exit(&r, 0, "dump --json");
    assert_json(&r);
    assert_contains(r.out, "\"preview_encoding\": \"text\"", "a cut UTF-8 preview in JSON");
    char jwant[96] = "\"preview\": \"x";
    for (int i = 0; i < 15; i++)
        strcat(jwant, "\xc3\xa9");
    strcat(jwant, "\",");
    assert_contains(r.out, jwant, "the same characters in JSON");
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

Test(cli_dump, text_shows_inflight_slot_ready_count_and_registry)
{
    struct live_queue lq;
    const char *name = make_live_queue("text", "worker-1", &lq);
    struct run r = run_shmq("dump", name, NULL);
    assert_exit(&r, 0, "dump");

    char line[1024], want[96];
    assert_contains(r.out, "magic: 0x31474553514d4853", "header");
    assert_contains(r.out, "capacity: 16", "config");
    assert_contains(r.out, "max_msg_size: 128", "config");

    /* the in-flight slot: its id, its owner and its payload */
    cr_assert(line_with(r.out, "state=INFLIGHT", line, sizeof(line)), "no INFLIGHT slot:\n%s",
              r.out);
    snprintf(want, sizeof(want), " id=%" PRIu64 " ", lq.inflight.id);
    assert_contains(line, want, "INFLIGHT slot");
    assert_contains(line, "attempt=1", "INFLIGHT slot");
    assert_contains(line, "preview=\"msg-0 says \\\"hi\\\"\"", "INFLIGHT slot");
    assert_contains(line, "preview_encoding=text", "INFLIGHT slot");
    cr_assert(!strstr(line, "owner=-"), "INFLIGHT slot without owner: %s", line);
    snprintf(want, sizeof(want), "token=0x%" PRIx64, lq.inflight.token);
    assert_contains(line, want, "INFLIGHT slot");

    /* the binary message is shown in hex, first 32 bytes */
    snprintf(want, sizeof(want), " id=%" PRIu64 " ", lq.ids[3]);
    cr_assert(line_with(r.out, want, line, sizeof(line)), "no slot with id %" PRIu64, lq.ids[3]);
    assert_contains(line, "preview_encoding=hex", "binary slot");
    assert_contains(line,
                    "preview=000102030405060708090a0b0c0d0e0f"
                    "101112131415161718191a1b1c1d1e1f ",
                    "binary slot");
    assert_contains(line, "preview_truncated=true", "binary slot");
    assert_contains(line, "len=48", "binary slot");

    cr_assert(line_with(r.out, "slot_counts:", line, sizeof(line)));
    assert_contains(line, " ready=3 ", "slot_counts");
    assert_contains(line, " inflight=1 ", "slot_counts");
    assert_contains(line, " free=12 ", "slot_counts");

    /* registry: this process, alive; the consumer by name */
    cr_assert(line_with(r.out, "name=\"worker-1\"", line, sizeof(line)), "no consumer entry");
    snprintf(want, sizeof(want), " pid=%d ", (int)getpid());
    assert_contains(line, want, "consumer entry");
    assert_contains(line, "liveness=alive", "consumer entry");
    assert_contains(line, "role=consumer", "consumer entry");
    assert_contains(line, "heartbeat_age_ms=", "consumer entry");

    cr_assert(line_with(r.out, "  ready: head=", line, sizeof(line)), "no ready ring line");
    assert_contains(line, "nonempty_cells=3", "ready ring");

    assert_contains(r.out, "  published: 4\n", "counters");
    assert_contains(r.out, "  delivered: 1\n", "counters");
    cr_assert(!strstr(r.out, "errors:"), "a healthy queue reported errors:\n%s", r.out);
    run_free(&r);
    close_live_queue(&lq);
}

Test(cli_dump, json_is_valid_and_holds_the_same_facts)
{
    struct live_queue lq;
    /* a name that needs escaping in JSON */
    const char *name = make_live_queue("json", "q\"uote\\d\tx", &lq);
    struct run r = run_shmq("dump", name, "--json", NULL);
    assert_exit(&r, 0, "dump --json");
    assert_json(&r);

    char want[128];
    assert_contains(r.out, "\"magic\": \"0x31474553514d4853\"", "json header");
    assert_contains(r.out, "\"state\": \"INFLIGHT\"", "json");
    snprintf(want, sizeof(want), "\"id\": %" PRIu64 ",", lq.inflight.id);
    const char *slot = strstr(r.out, "\"state\": \"INFLIGHT\"");
    cr_assert(slot && strstr(slot, want), "no %s after the INFLIGHT state:\n%s", want, r.out);
    assert_contains(r.out, "\"ready\": 3,", "json slot_counts");
    assert_contains(r.out, "\"inflight\": 1,", "json slot_counts");
    assert_contains(r.out, "\"name\": \"q\\\"uote\\\\d\\tx\"", "json escaped name");
    assert_contains(r.out, "\"preview\": \"msg-0 says \\\"hi\\\"\"", "json preview");
    assert_contains(r.out, "\"liveness\": \"alive\"", "json registry");
    assert_contains(r.out, "\"published\": 4,", "json counters");
    assert_contains(r.out, "\"inconsistencies\": 0,", "json");
    assert_contains(r.out, "\"errors\": []", "json");
    run_free(&r);
    close_live_queue(&lq);
}

static int attach_and_die(void *arg)
{
    shmq_t *q;
    if (shmq_open(arg, &q) != 0)
        return 1;
    _exit(0); /* no shmq_close(): the registry entry stays, with a dead pid */
}

Test(cli_dump, entry_of_a_dead_process_is_shown_dead)
{
    const char *name = h_qname("dead");
    shmq_config_t cfg = h_small_config(CAPACITY, MSG_SIZE, 8);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    pid_t child = h_fork(attach_and_die, (void *)name);
    h_assert_child_ok(child, 10000, "attach_and_die");

    struct run r = run_shmq("dump", name, "--json", NULL);
    assert_exit(&r, 0, "dump --json");
    assert_json(&r);
    char want[64];
    snprintf(want, sizeof(want), "\"pid\": %d,", (int)child);
    const char *entry = strstr(r.out, want);
    cr_assert(entry, "no registry entry of pid %d:\n%s", (int)child, r.out);
    const char *live = strstr(entry, "\"liveness\": ");
    cr_assert(live && strncmp(live, "\"liveness\": \"dead\"", 18) == 0,
              "entry of dead pid %d not shown dead:\n%s", (int)child, entry);
    snprintf(want, sizeof(want), "\"pid\": %d,", (int)getpid());
    entry = strstr(r.out, want);
    cr_assert(entry, "no registry entry of our pid %d", (int)getpid());
    live = strstr(entry, "\"liveness\": ");
    cr_assert(live && strncmp(live, "\"liveness\": \"alive\"", 19) == 0,
              "our own entry is not shown alive:\n%s", entry);
    run_free(&r);
    h_assert_rc(shmq_close(q), 0);
}

/* A closed queue of the fixture's shape whose file can then be damaged. */
static const char *make_closed_queue(const char *tag, char *path, size_t size)
{
    struct live_queue lq;
    const char *name = make_live_queue(tag, "w", &lq);
    close_live_queue(&lq);
    h_shm_path(name, path, size);
    return name;
}

static void write_at(const char *path, off_t off, const void *p, size_t len)
{
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert(pwrite(fd, p, len, off) == (ssize_t)len, "pwrite: %s", strerror(errno));
    close(fd);
}

static void truncate_to(const char *path, off_t size)
{
    cr_assert(truncate(path, size) == 0, "truncate %s: %s", path, strerror(errno));
}

/* dump NAME (text and JSON) must exit 1 with a message, print nothing, and not crash. */
static void assert_rejected(const char *name, const char *what)
{
    for (int json = 0; json < 2; json++) {
        struct run r = run_shmq("dump", name, json ? "--json" : NULL, NULL);
        assert_exit(&r, 1, what);
        assert_contains(r.err, "shmq dump: ", what);
        cr_assert_eq(r.out_len, 0, "%s: stdout should be empty:\n%s", what, r.out);
        run_free(&r);
    }
}

Test(cli_dump, corrupted_or_truncated_header_exits_1)
{
    char path[128];
    struct run r;
    const char *name;

    name = make_closed_queue("crc", path, sizeof(path));
    uint32_t cap = 1u << 30;
    write_at(path, offsetof(struct seg_layout, capacity), &cap, sizeof(cap));
    assert_rejected(name, "capacity changed (CRC mismatch)");
    r = run_shmq("dump", name, NULL);
    assert_contains(r.err, "corrupted", "CRC mismatch message");
    run_free(&r);

    name = make_closed_queue("magic", path, sizeof(path));
    write_at(path, offsetof(struct seg_layout, magic), "NOTSHMQ!", 8);
    assert_rejected(name, "bad magic");

    name = make_closed_queue("version", path, sizeof(path));
    uint32_t version = SHMQ_FORMAT_VERSION + 1;
    write_at(path, offsetof(struct seg_layout, version), &version, sizeof(version));
    assert_rejected(name, "other version");

    name = make_closed_queue("trunc", path, sizeof(path));
    truncate_to(path, 100);
    assert_rejected(name, "truncated below the header");
    r = run_shmq("dump", name, NULL);
    assert_contains(r.err, "truncated", "truncation message");
    run_free(&r);

    name = make_closed_queue("half", path, sizeof(path));
    struct stat st;
    cr_assert(stat(path, &st) == 0);
    truncate_to(path, st.st_size / 2);
    assert_rejected(name, "truncated to half");

    name = make_closed_queue("empty", path, sizeof(path));
    truncate_to(path, 0);
    assert_rejected(name, "empty file");

    /* a FIFO in its place: open() must not block the tool forever */
    name = h_qname("fifo");
    h_shm_path(name, path, sizeof(path));
    cr_assert(mkfifo(path, 0600) == 0, "mkfifo %s: %s", path, strerror(errno));
    assert_rejected(name, "a FIFO");

    name = make_closed_queue("garbage", path, sizeof(path));
    unsigned char junk[sizeof(struct seg_layout)];
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)h_rand(&seed);
    memcpy(junk, "SHMQSEG1", 8); /* the right magic, garbage behind it */
    write_at(path, 0, junk, sizeof(junk));
    assert_rejected(name, "garbage header");
}

Test(cli_dump, out_of_range_entries_are_listed_as_errors)
{
    char path[128];
    const char *name = make_closed_queue("entries", path, sizeof(path));
    struct segment seg;
    h_assert_rc(segment_open(name, false, &seg), 0);
    /* slot 0: a state no code writes */
    atomic_store(&segment_slot(&seg, 0)->state, sw_make(15, NO_OWNER, 7));
    /* slot 1: READY with a length beyond max_msg_size */
    atomic_store(&segment_slot(&seg, 1)->state, sw_make(SLOT_READY, NO_OWNER, 9));
    segment_slot(&seg, 1)->len = UINT32_MAX;
    /* slot 2: INFLIGHT, owned by a registry index that does not exist */
    atomic_store(&segment_slot(&seg, 2)->state, sw_make(SLOT_INFLIGHT, NO_OWNER - 1, 11));
    /* registry entry 5: an invalid state and a pid that must never reach kill() */
    struct proc_entry *pe = segment_proc(&seg, 5);
    pe->pid = -1;
    atomic_store(&pe->word, 9);
    /* the dead ring: every cell names a slot beyond the capacity */
    for (uint64_t i = 0; i < (1ull << seg.layout.ring_order); i++)
        atomic_store(&seg.dead_ring.shm->cells[i], (1ull << RING_INDEX_BITS) | (CAPACITY + 5));
    segment_close(&seg);

    struct run r = run_shmq("dump", name, NULL);
    assert_exit(&r, 1, "dump of a queue with bad entries");
    assert_contains(r.out, "errors:", "text");
    assert_contains(r.out, "slot 0: invalid state 15", "text errors");
    assert_contains(r.out, "slot 1: len 4294967295 > max_msg_size 128", "text errors");
    assert_contains(r.out, "slot 2: owner 1048574 >= max_procs 8", "text errors");
    assert_contains(r.out, "registry entry 5: invalid state 9", "text errors");
    assert_contains(r.out, "dead ring: cell", "text errors");
    assert_contains(r.out, "liveness=no-pid", "registry entry with pid -1");
    assert_contains(r.err, "segment is corrupted", "stderr");
    run_free(&r);

    r = run_shmq("dump", name, "--json", NULL);
    assert_exit(&r, 1, "dump --json of a queue with bad entries");
    assert_json(&r);
    assert_contains(r.out, "\"state\": \"INVALID\"", "json");
    assert_contains(r.out, "\"inconsistencies\": 6,", "json");
    run_free(&r);
}

Test(cli_dump, random_damage_never_crashes_the_tool)
{
    char path[128];
    const char *name = make_closed_queue("fuzz", path, sizeof(path));
    struct stat st;
    cr_assert(stat(path, &st) == 0);
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0);
    unsigned char *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert(base != MAP_FAILED);
    close(fd);

    /* Everything after the validated layout: mutable header words, registry, slots, rings. */
    size_t first = sizeof(struct seg_layout), span = (size_t)st.st_size - first;
    uint64_t seed = 0x5eed;
    int exits[2] = {0, 0};
    for (int round = 0; round < 60; round++) {
        int writes = 1 + (int)(h_rand(&seed) % 64);
        for (int k = 0; k < writes; k++) {
            size_t off = first + h_rand(&seed) % span;
            uint64_t v = h_rand(&seed);
            if (h_rand(&seed) % 4 == 0)
                v &= 0xff; /* small values hit the state and index fields */
            size_t n = off + 8 <= (size_t)st.st_size ? 8 : (size_t)st.st_size - off;
            memcpy(base + off, &v, n);
        }
        bool json = round % 2;
        struct run r = run_shmq("dump", name, json ? "--json" : NULL, NULL);
        char buf[96];
        cr_assert(WIFEXITED(r.status) &&
                      (WEXITSTATUS(r.status) == 0 || WEXITSTATUS(r.status) == 1),
                  "round %d: shmq %s\nstderr:\n%s", round, h_status_str(r.status, buf, sizeof(buf)),
                  r.err);
        exits[WEXITSTATUS(r.status)]++;
        if (json)
            assert_json(&r);
        if (WEXITSTATUS(r.status) == 1)
            assert_contains(r.err, "shmq dump: ", "an exit 1 explains itself");
        run_free(&r);
    }
    munmap(base, (size_t)st.st_size);
    cr_assert(exits[1] > 0, "60 rounds of damage found no inconsistency");
}

/* Shared with the churning children. */
struct churn {
    char name[SHMQ_NAME_MAX + 1];
    _Atomic int stop;
    _Atomic uint64_t ops;
};

/* Publish one, receive and ack one, until told to stop: 0, or which call failed. */
static int churn_child(void *arg)
{
    struct churn *ch = arg;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(ch->name, &q) != 0)
        return 1;
    if (shmq_consumer_open(q, "churn", &c) != 0)
        return 2;
    for (uint64_t n = 0; !atomic_load(&ch->stop); n++) {
        char buf[48];
        int len = snprintf(buf, sizeof(buf), "churn %" PRIu64, n);
        int rc = shmq_publish(q, buf, (size_t)len, NULL);
        if (rc != 0 && rc != -EAGAIN)
            return 3;
        shmq_msg_t m;
        rc = shmq_receive(c, &m, 0);
        if (rc == 0 && shmq_ack(c, &m) != 0)
            return 4;
        if (rc != 0 && rc != -EAGAIN)
            return 5;
        atomic_fetch_add(&ch->ops, 1);
    }
    if (shmq_consumer_close(c) != 0 || shmq_close(q) != 0)
        return 6;
    return 0;
}

Test(cli_dump, live_queue_in_use_dumps_consistent_and_undisturbed)
{
    struct live_queue lq;
    const char *name = make_live_queue("live", "parent", &lq);
    struct churn *ch = h_shared_alloc(sizeof(*ch));
    snprintf(ch->name, sizeof(ch->name), "%s", name);
    pid_t kids[2];
    for (int i = 0; i < 2; i++)
        kids[i] = h_fork(churn_child, ch);
    while (atomic_load(&ch->ops) < 1000)
        h_sleep_ms(1);

    for (int round = 0; round < 30; round++) {
        bool json = round % 2;
        struct run r = run_shmq("dump", name, json ? "--json" : NULL, NULL);
        assert_exit(&r, 0, "dump of a queue in use");
        if (json)
            assert_json(&r);
        run_free(&r);
    }
    uint64_t ops_before = atomic_load(&ch->ops);
    h_sleep_ms(20);
    cr_assert(atomic_load(&ch->ops) > ops_before, "the churning children stalled");
    atomic_store(&ch->stop, 1);
    for (int i = 0; i < 2; i++)
        h_assert_child_ok(kids[i], 10000, "churn_child");
    close_live_queue(&lq);
}
