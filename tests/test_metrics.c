/*
 * test_metrics.c - shmq-watchdog's /metrics endpoint and its alert rules, seen from outside.
 *
 * The built daemon (dirname(/proc/self/exe)/../shmq-watchdog) runs as a child with its log
 * (stdout) in a temporary file; the endpoint is fetched with curl, the alert commands append
 * to a temporary file. Every wait is bounded (polling with a deadline), every child is killed
 * and every queue unlinked by h_cleanup().
 *
 * What is proved:
 *   - the exposition is well formed, line by line: every sample's family has HELP then TYPE
 *     before its first sample, each family once; names match [a-zA-Z_:][a-zA-Z0-9_:]*; labels
 *     are name="value" pairs with valid escapes; values parse as floats; counters end in
 *     _total; and the numbers are the queue's (published, ready, capacity, consumers, lease);
 *   - other paths are 404, and HTTP never holds up maintenance (a stalled client connection
 *     does not delay a consumer's death being handled);
 *   - --metrics refuses a non-loopback address without --metrics-public (exit 2);
 *   - shmq_oldest_message_age_seconds is 0 with no message waiting and grows with the age of
 *     the oldest unacked one;
 *   - each alert rule (depth, dead_letters, consumer_died, no_lease, age) fires exactly once when
 *     its condition starts, with SHMQ_ALERT, SHMQ_QUEUE, SHMQ_VALUE, SHMQ_THRESHOLD set for
 *     --alert-cmd, stays quiet while it holds, and (depth) fires again after it cleared; (age)
 *     clears once the old message is acked;
 *   - each consumer group has its own series, labelled group (shmq_group_messages by state,
 *     shmq_group_lag_messages), and --alert-group-lag fires on the group that lags, and clears
 *     once it caught up.
 */
#include "cli.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* Temporary files of a test, removed by cleanup() even when an assertion ends it early. */
static char tmp_paths[16][64];
static int n_tmp;

static void track_tmp(const char *path)
{
    if (n_tmp < 16)
        snprintf(tmp_paths[n_tmp++], sizeof tmp_paths[0], "%s", path);
}

static void cleanup(void)
{
    h_cleanup(); /* kills the watchdogs first */
    for (int i = 0; i < n_tmp; i++)
        unlink(tmp_paths[i]);
    n_tmp = 0;
}

TestSuite(metrics, .fini = cleanup, .timeout = 120);

/* ------------------------------------------------------------------ the daemon */

struct daemon {
    pid_t pid;
    char log[64]; /* its stdout and stderr */
};

/* Start shmq-watchdog ARGS... (NULL-terminated) with its output in a temporary file. */
#define start_watchdog(...) start_watchdog_args((const char *const[]){__VA_ARGS__})

static struct daemon start_watchdog_args(const char *const *args)
{
    struct daemon d;
    snprintf(d.log, sizeof d.log, "/tmp/shmq-test-wd-XXXXXX");
    int fd = mkstemp(d.log);
    cr_assert(fd >= 0);
    track_tmp(d.log);
    d.pid = cli_spawn(cli_tool_path("shmq-watchdog"), args, fd, fd);
    close(fd);
    return d;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

static int count_lines_with(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Wait until the daemon's log holds `needle` at least `times` times: true, or false after
 * timeout_ms. */
static bool wait_log(const struct daemon *d, const char *needle, int times, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    do {
        char *log = read_file(d->log);
        int n = count_lines_with(log, needle);
        free(log);
        if (n >= times)
            return true;
        h_sleep_ms(10);
    } while (h_now_ms() < end);
    return false;
}

static void stop_watchdog(struct daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    int st;
    if (h_waitpid(d->pid, 30000, 0, &st) != 0) {
        kill(d->pid, SIGKILL);
        h_waitpid(d->pid, 30000, 0, &st);
    }
    d->pid = 0;
    char *log = read_file(d->log);
    unlink(d->log);
    /* a sanitizer build reports through stderr, which is in the log */
    cr_assert(!strstr(log, "Sanitizer") && !strstr(log, "runtime error:"),
              "watchdog: sanitizer report:\n%s", log);
    free(log);
}

#define assert_log(d, needle, times, what)                                                         \
    do {                                                                                           \
        if (!wait_log((d), (needle), (times), 10000)) {                                            \
            char *log_ = read_file((d)->log);                                                      \
            cr_assert_fail("%s: no %d x \"%s\" in the watchdog's log:\n%s", (what), (times),       \
                           (needle), log_);                                                        \
        }                                                                                          \
    } while (0)

/* The port from the metrics_listening line. */
static int metrics_port(const struct daemon *d)
{
    assert_log(d, "event=metrics_listening", 1, "metrics start");
    char *log = read_file(d->log);
    const char *p = strstr(log, "event=metrics_listening addr=127.0.0.1:");
    cr_assert(p, "%s", log);
    int port = atoi(p + strlen("event=metrics_listening addr=127.0.0.1:"));
    free(log);
    cr_assert(port > 0 && port < 65536);
    return port;
}

/* GET http://127.0.0.1:port/path with curl (bounded): the body; *code the HTTP status. */
static char *http_get(int port, const char *path, int *code)
{
    char cmd[256], out[64];
    snprintf(out, sizeof out, "/tmp/shmq-test-curl-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "curl -s --max-time 5 -o %s -w '%%{http_code}' http://127.0.0.1:%d%s",
             out, port, path);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen curl");
    char status[16] = "";
    if (!fgets(status, sizeof status, p))
        status[0] = 0;
    int rc = pclose(p);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "curl failed (%d): is curl installed?", rc);
    *code = atoi(status);
    char *body = read_file(out);
    unlink(out);
    return body;
}

/* Fetch /metrics until `needle` is in it (the daemon samples every --sample-ms). */
static char *fetch_until(int port, const char *needle)
{
    int64_t end = h_now_ms() + 10000;
    for (;;) {
        int code;
        char *body = http_get(port, "/metrics", &code);
        cr_assert_eq(code, 200, "GET /metrics: %d", code);
        if (strstr(body, needle))
            return body;
        if (h_now_ms() > end)
            cr_assert_fail("no \"%s\" in /metrics:\n%s", needle, body);
        free(body);
        h_sleep_ms(20);
    }
}

/* ------------------------------------------------------------------ the exposition format */

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

#define MAX_FAMILIES 64

struct family {
    char name[128];
    bool help, type, sampled;
    char kind[16];
};

static struct family *find_family(struct family *f, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

/*
 * Check the text line by line against the Prometheus text format 0.0.4. Returns the number of
 * samples. Fails the test at the first violation, naming the line.
 */
static int check_exposition(const char *text)
{
    struct family fam[MAX_FAMILIES];
    int nfam = 0, samples = 0;
    char *copy = strdup(text), *save;
    cr_assert(text[0] == 0 || text[strlen(text) - 1] == '\n', "the text ends with a newline");
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            char kw[8], name[128];
            int off = 0;
            cr_assert_eq(sscanf(line, "# %7s %127s %n", kw, name, &off), 2, "comment: %s", line);
            cr_assert(name_ok(name, strlen(name)), "metric name in: %s", line);
            struct family *f = find_family(fam, nfam, name);
            if (strcmp(kw, "HELP") == 0) {
                cr_assert(!f, "HELP after the family began (or twice): %s", line);
                cr_assert(nfam < MAX_FAMILIES);
                f = &fam[nfam++];
                memset(f, 0, sizeof *f);
                snprintf(f->name, sizeof f->name, "%s", name);
                f->help = true;
                cr_assert(strlen(line + off) > 0, "HELP has text: %s", line);
            } else if (strcmp(kw, "TYPE") == 0) {
                cr_assert(f && f->help && !f->type && !f->sampled, "TYPE once, after HELP: %s",
                          line);
                f->type = true;
                snprintf(f->kind, sizeof f->kind, "%s", line + off);
                cr_assert(strcmp(f->kind, "counter") == 0 || strcmp(f->kind, "gauge") == 0,
                          "type: %s", line);
                if (strcmp(f->kind, "counter") == 0) {
                    size_t n = strlen(name);
                    cr_assert(n > 6 && strcmp(name + n - 6, "_total") == 0,
                              "a counter ends in _total: %s", line);
                }
            }
            continue;
        }
        /* sample: name [{labels}] value */
        const char *p = line;
        size_t n = strcspn(p, "{ ");
        char name[128];
        cr_assert(n < sizeof name && name_ok(p, n), "sample name: %s", line);
        memcpy(name, p, n);
        name[n] = 0;
        p += n;
        struct family *f = find_family(fam, nfam, name);
        cr_assert(f && f->help && f->type, "HELP and TYPE before the sample: %s", line);
        f->sampled = true;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t ln = strcspn(p, "=");
                cr_assert(name_ok(p, ln) && p[ln] == '=' && p[ln + 1] == '"', "label: %s", line);
                cr_assert(strncmp(p, "__", 2) != 0, "reserved label name: %s", line);
                p += ln + 2;
                while (*p && *p != '"') {
                    if (*p == '\\') {
                        cr_assert(p[1] == '\\' || p[1] == '"' || p[1] == 'n', "escape: %s", line);
                        p++;
                    }
                    p++;
                }
                cr_assert(*p == '"', "unterminated label value: %s", line);
                p++;
                if (*p == ',')
                    p++;
                else
                    cr_assert(*p == '}', "label separator: %s", line);
            }
            p++;
        }
        cr_assert(*p == ' ', "a space before the value: %s", line);
        p++;
        char *end;
        double v = strtod(p, &end);
        cr_assert(end != p && (*end == 0 || *end == ' '), "value parses as a float: %s", line);
        cr_assert(!isnan(v), "value: %s", line);
        samples++;
    }
    for (int i = 0; i < nfam; i++)
        cr_assert(fam[i].type, "family %s has a TYPE", fam[i].name);
    free(copy);
    return samples;
}

/* The value of the sample whose line starts with `prefix` (name{labels}). */
static double sample_value(const char *text, const char *prefix)
{
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", prefix);
    const char *p = strstr(text, needle);
    cr_assert(p, "no sample %s in:\n%s", prefix, text);
    return strtod(p + strlen(needle), NULL);
}

static shmq_t *make_queue(const char *name, uint32_t capacity, uint32_t max_attempts)
{
    shmq_config_t cfg = h_small_config(capacity, 64, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_attempts = max_attempts;
    cfg.backoff_base_ms = 0;
    cfg.backoff_cap_ms = 0;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    return q;
}

/* ------------------------------------------------------------------ metrics */

Test(metrics, exposition_is_well_formed_and_holds_the_queue_numbers)
{
    const char *name = h_qname("metrics");
    shmq_t *q = make_queue(name, 16, 5);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "mc", &c), 0);

    struct daemon d = start_watchdog(name, "--metrics", "127.0.0.1:0", "--sample-ms", "20", NULL);
    int port = metrics_port(&d);
    assert_log(&d, "event=lease_acquired", 1, "the watchdog maintains");
    char want[160];
    snprintf(want, sizeof want, "shmq_watchdog_lease_held{queue=\"%s\"} 1", name);
    char *text = fetch_until(port, want);
    int samples = check_exposition(text);
    cr_assert_geq(samples, 7 + 6 + 5, "every family has a sample for the queue");

    char key[192];
    snprintf(key, sizeof key, "shmq_messages_published_total{queue=\"%s\"}", name);
    cr_assert_eq(sample_value(text, key), 3);
    snprintf(key, sizeof key, "shmq_messages_acked_total{queue=\"%s\"}", name);
    cr_assert_eq(sample_value(text, key), 0);
    snprintf(key, sizeof key, "shmq_messages{queue=\"%s\",state=\"ready\"}", name);
    cr_assert_eq(sample_value(text, key), 3);
    snprintf(key, sizeof key, "shmq_messages{queue=\"%s\",state=\"free\"}", name);
    cr_assert_eq(sample_value(text, key), 13);
    snprintf(key, sizeof key, "shmq_messages{queue=\"%s\",state=\"dead\"}", name);
    cr_assert_eq(sample_value(text, key), 0);
    snprintf(key, sizeof key, "shmq_capacity{queue=\"%s\"}", name);
    cr_assert_eq(sample_value(text, key), 16);
    snprintf(key, sizeof key, "shmq_consumers{queue=\"%s\"}", name);
    cr_assert_eq(sample_value(text, key), 1);
    free(text);

    /* the numbers follow the queue */
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    snprintf(want, sizeof want, "shmq_messages_acked_total{queue=\"%s\"} 1", name);
    text = fetch_until(port, want);
    check_exposition(text);
    snprintf(key, sizeof key, "shmq_messages{queue=\"%s\",state=\"ready\"}", name);
    cr_assert_eq(sample_value(text, key), 2);
    free(text);

    int code;
    char *body = http_get(port, "/other", &code);
    cr_assert_eq(code, 404);
    free(body);

    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
}

/* Each consumer has its own series, labelled consumer (its name) and entry (its registry
 * index, as names need not be unique); a delivery taken back at its ack deadline counts in
 * shmq_consumer_reclaimed_from_total of the consumer that held it. */
Test(metrics, consumer_counters_carry_a_consumer_label)
{
    const char *name = h_qname("mcons");
    shmq_t *q = make_queue(name, 16, 5);
    shmq_consumer_t *a, *b;
    h_assert_rc(shmq_consumer_open(q, "alpha", &a), 0);
    h_assert_rc(shmq_consumer_open(q, "beta", &b), 0);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    for (int i = 0; i < 2; i++) {
        h_assert_rc(shmq_receive(a, &m, 1000), 0);
        h_assert_rc(shmq_ack(a, &m), 0);
    }
    h_assert_rc(shmq_receive(b, &m, 1000), 0);
    h_assert_rc(shmq_nack(b, &m, 0), 0);
    shmq_consumer_stats_t cs[8];
    size_t n;
    h_assert_rc(shmq_consumer_stats(q, cs, 8, &n), 0);
    cr_assert_eq(n, 2);
    uint32_t ea = strcmp(cs[0].name, "alpha") == 0 ? cs[0].index : cs[1].index;
    uint32_t eb = strcmp(cs[0].name, "beta") == 0 ? cs[0].index : cs[1].index;

    struct daemon d = start_watchdog(name, "--metrics", "127.0.0.1:0", "--sample-ms", "20", NULL);
    int port = metrics_port(&d);
    char want[256], key[256];
    snprintf(want, sizeof want,
             "shmq_consumer_acked_total{queue=\"%s\",consumer=\"alpha\",entry=\"%u\"} 2", name, ea);
    char *text = fetch_until(port, want);
    check_exposition(text);
    snprintf(key, sizeof key,
             "shmq_consumer_delivered_total{queue=\"%s\",consumer=\"alpha\",entry=\"%u\"}", name,
             ea);
    cr_assert_eq(sample_value(text, key), 2);
    snprintf(key, sizeof key,
             "shmq_consumer_nacked_total{queue=\"%s\",consumer=\"beta\",entry=\"%u\"}", name, eb);
    cr_assert_eq(sample_value(text, key), 1);
    snprintf(key, sizeof key,
             "shmq_consumer_reclaimed_from_total{queue=\"%s\",consumer=\"beta\",entry=\"%u\"}",
             name, eb);
    cr_assert_eq(sample_value(text, key), 0);
    free(text);

    /* beta takes the nacked message and sits on it past its ack deadline: the watchdog takes
     * it back, and beta's reclaimed_from says so */
    h_assert_rc(shmq_receive(b, &m, 1000), 0);
    h_assert_rc(shmq_extend(b, &m, 30), 0);
    snprintf(want, sizeof want,
             "shmq_consumer_reclaimed_from_total{queue=\"%s\",consumer=\"beta\",entry=\"%u\"} 1",
             name, eb);
    text = fetch_until(port, want);
    free(text);
    h_assert_rc(shmq_ack(b, &m), -ESTALE);

    h_assert_rc(shmq_consumer_close(a), 0);
    h_assert_rc(shmq_consumer_close(b), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
}

static int consume_and_die(void *arg)
{
    shmq_t *q;
    shmq_consumer_t *c;
    shmq_msg_t m;
    if (shmq_open(arg, &q) || shmq_consumer_open(q, "doomed", &c) || shmq_receive(c, &m, 5000))
        return 1;
    raise(SIGKILL);
    return 2;
}

Test(metrics, a_stalled_http_client_does_not_hold_up_maintenance)
{
    const char *name = h_qname("stall");
    shmq_t *q = make_queue(name, 8, 5);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    struct daemon d = start_watchdog(name, "--metrics", "127.0.0.1:0", "--sample-ms", "20", NULL);
    int port = metrics_port(&d);
    assert_log(&d, "event=lease_acquired", 1, "the watchdog maintains");

    /* a client that connects, sends half a request and stays silent */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(write(s, "GET /metr", 9), 9);

    /* a consumer dies holding the message: the watchdog reclaims it at once */
    pid_t child = h_fork(consume_and_die, (void *)name);
    int st;
    cr_assert_eq(h_waitpid(child, 10000, 0, &st), 0);
    cr_assert(WIFSIGNALED(st), "the consumer was killed holding its message");
    assert_log(&d, "event=consumer_died", 1, "death handled with a stalled HTTP client");
    shmq_stats_t stats;
    int64_t end = h_now_ms() + 30000;
    do {
        h_assert_rc(shmq_stats(q, &stats), 0);
        if (stats.ready == 1)
            break;
        h_sleep_ms(5);
    } while (h_now_ms() < end);
    cr_assert_eq(stats.ready, 1, "the message is ready again");
    int code;
    char *body = http_get(port, "/metrics", &code); /* and others are still served */
    cr_assert_eq(code, 200);
    free(body);
    close(s);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
}

Test(metrics, non_loopback_address_needs_metrics_public)
{
    struct daemon d = start_watchdog("q", "--metrics", "0.0.0.0:0", NULL);
    int st;
    cr_assert_eq(h_waitpid(d.pid, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit 2 for a public address");
    char *log = read_file(d.log);
    cr_assert(strstr(log, "--metrics-public"), "the message names the option:\n%s", log);
    free(log);
    unlink(d.log);
    d = start_watchdog("q", "--metrics", "nonsense", NULL);
    cr_assert_eq(h_waitpid(d.pid, 30000, 0, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit 2 for a bad address");
    unlink(d.log);

    const char *name = h_qname("public");
    d = start_watchdog(name, "--metrics", "0.0.0.0:0", "--metrics-public", NULL);
    assert_log(&d, "event=metrics_listening addr=0.0.0.0:", 1, "--metrics-public serves");
    stop_watchdog(&d);
}

Test(metrics, oldest_message_age_gauge)
{
    const char *name = h_qname("age");
    shmq_t *q = make_queue(name, 16, 5);
    struct daemon d = start_watchdog(name, "--metrics", "127.0.0.1:0", "--sample-ms", "20", NULL);
    int port = metrics_port(&d);
    char key[192];
    snprintf(key, sizeof key, "shmq_oldest_message_age_seconds{queue=\"%s\"}", name);
    char *text = fetch_until(port, key);
    check_exposition(text);
    cr_assert(strstr(text, "# TYPE shmq_oldest_message_age_seconds gauge\n"), "%s", text);
    cr_assert_eq(sample_value(text, key), 0, "no message: 0");
    free(text);

    h_assert_rc(shmq_publish(q, "old", 3, NULL), 0);
    int64_t published = h_now_ms();
    double age = 0;
    while (age < 0.3) { /* the gauge follows the message's age */
        cr_assert(h_now_ms() - published < 10000, "the age gauge did not grow: %g", age);
        h_sleep_ms(50);
        int code;
        text = http_get(port, "/metrics", &code);
        cr_assert_eq(code, 200);
        check_exposition(text);
        age = sample_value(text, key);
        free(text);
        cr_assert_leq(age, (double)(h_now_ms() - published) / 1000 + 0.05,
                      "not older than the message");
    }
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
}

/* ------------------------------------------------------------------ alerts */

struct alert_env {
    char file[64];
    char cmd[256];
};

static void alert_env_init(struct alert_env *a)
{
    snprintf(a->file, sizeof a->file, "/tmp/shmq-test-alerts-XXXXXX");
    int fd = mkstemp(a->file);
    cr_assert(fd >= 0);
    track_tmp(a->file);
    close(fd);
    snprintf(a->cmd, sizeof a->cmd,
             "echo \"$SHMQ_ALERT $SHMQ_QUEUE $SHMQ_VALUE $SHMQ_THRESHOLD\" >> %s", a->file);
}

/* Wait until the alert file has `lines` lines; then return its text. */
static char *alert_lines(const struct alert_env *a, int lines)
{
    int64_t end = h_now_ms() + 10000;
    for (;;) {
        char *t = read_file(a->file);
        if (count_lines_with(t, "\n") >= lines || h_now_ms() > end)
            return t;
        free(t);
        h_sleep_ms(10);
    }
}

/* After a condition fired: let several samples pass, then the file must still hold `lines`. */
static void assert_quiet(const struct alert_env *a, const struct daemon *d, int lines,
                         const char *event_needle, int events)
{
    h_sleep_ms(300); /* 15 samples at 20 ms */
    char *t = read_file(a->file);
    cr_assert_eq(count_lines_with(t, "\n"), lines, "the command ran once per firing:\n%s", t);
    free(t);
    char *log = read_file(d->log);
    cr_assert_eq(count_lines_with(log, event_needle), events, "one alert line per firing:\n%s",
                 log);
    free(log);
}

Test(metrics, depth_alert_fires_once_per_crossing)
{
    const char *name = h_qname("adepth");
    shmq_t *q = make_queue(name, 16, 5);
    struct alert_env a;
    alert_env_init(&a);
    struct daemon d =
        start_watchdog(name, "--sample-ms", "20", "--alert-depth", "2", "--alert-cmd", a.cmd, NULL);
    assert_log(&d, "event=lease_acquired", 1, "start");
    h_assert_rc(shmq_publish(q, "1", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "2", 1, NULL), 0);
    h_sleep_ms(100);
    char *t = read_file(a.file);
    cr_assert_str_eq(t, "", "depth 2 is not above 2");
    free(t);
    h_assert_rc(shmq_publish(q, "3", 1, NULL), 0);
    h_assert_rc(shmq_publish(q, "4", 1, NULL), 0);
    t = alert_lines(&a, 1);
    char want[160];
    snprintf(want, sizeof want, "depth %s ", name);
    cr_assert(strncmp(t, want, strlen(want)) == 0, "alert command environment: %s", t);
    unsigned value = 0, threshold = 0;
    cr_assert_eq(sscanf(t + strlen(want), "%u %u", &value, &threshold), 2);
    cr_assert(value >= 3 && threshold == 2, "value %u threshold %u", value, threshold);
    free(t);
    h_assert_rc(shmq_publish(q, "5", 1, NULL), 0); /* deeper still: no second alert */
    assert_quiet(&a, &d, 1, "event=alert alert=depth", 1);

    /* drain to 0: cleared; cross again: fires again */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    shmq_msg_t m;
    for (int i = 0; i < 5; i++) {
        h_assert_rc(shmq_receive(c, &m, 1000), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    assert_log(&d, "event=alert_cleared alert=depth", 1, "depth cleared");
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    t = alert_lines(&a, 2);
    free(t);
    assert_quiet(&a, &d, 2, "event=alert alert=depth", 2);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
    unlink(a.file);
}

Test(metrics, dead_letters_alert_fires_once)
{
    const char *name = h_qname("adead");
    shmq_t *q = make_queue(name, 16, 1);
    struct alert_env a;
    alert_env_init(&a);
    struct daemon d = start_watchdog(name, "--sample-ms", "20", "--alert-dead-letters",
                                     "--alert-cmd", a.cmd, NULL);
    assert_log(&d, "event=alerts_armed", 1, "a first sample: the baseline");
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "nacker", &c), 0);
    h_assert_rc(shmq_publish(q, "poison", 6, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    h_assert_rc(shmq_nack(c, &m, 0), 0); /* max_attempts 1: dead letter */
    char *t = alert_lines(&a, 1);
    char want[160];
    snprintf(want, sizeof want, "dead_letters %s 1 0\n", name);
    cr_assert_str_eq(t, want);
    free(t);
    assert_quiet(&a, &d, 1, "event=alert alert=dead_letters", 1);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
    unlink(a.file);
}

Test(metrics, pinned_gauge_and_alert_follow_a_late_living_consumer)
{
    /* A consumer that outlives its ack deadline keeps living: maintenance takes the message
     * back, and the slot stays pinned for that reader until it lets go (its ack: -ESTALE).
     * shmq_stats, /metrics and --alert-pinned must all see it come and go. */
    const char *name = h_qname("apinned");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.ack_deadline_ms = 100;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    struct alert_env a;
    alert_env_init(&a);
    struct daemon d = start_watchdog(name, "--metrics", "127.0.0.1:0", "--sample-ms", "20",
                                     "--alert-pinned", "0", "--alert-cmd", a.cmd, NULL);
    int port = metrics_port(&d);
    assert_log(&d, "event=lease_acquired", 1, "the watchdog maintains");
    char want[192];
    snprintf(want, sizeof want, "shmq_pinned_slots{queue=\"%s\"} 0", name);
    char *body = fetch_until(port, want);
    /* a created queue: its rebuild counters are there, and 0 */
    snprintf(want, sizeof want, "shmq_recovered_holes{queue=\"%s\"} 0", name);
    cr_assert(strstr(body, want), "no %s in /metrics", want);
    snprintf(want, sizeof want, "shmq_recovered_bad_regions{queue=\"%s\"} 0", name);
    cr_assert(strstr(body, want), "no %s in /metrics", want);
    free(body);

    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "late", &c), 0);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 1000), 0);
    snprintf(want, sizeof want, "shmq_pinned_slots{queue=\"%s\"} 1", name);
    free(fetch_until(port, want)); /* past the deadline the watchdog took it back */
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.pinned, 1, "shmq_stats: pinned %u", st.pinned);
    char *t = alert_lines(&a, 1);
    snprintf(want, sizeof want, "pinned %s 1 0\n", name);
    cr_assert_str_eq(t, want, "alert command environment");
    free(t);

    h_assert_rc(shmq_ack(c, &m), -ESTALE); /* lets go of the slot */
    snprintf(want, sizeof want, "shmq_pinned_slots{queue=\"%s\"} 0", name);
    free(fetch_until(port, want));
    assert_log(&d, "event=alert_cleared alert=pinned", 1, "pinned cleared");
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.pinned, 0, "shmq_stats: pinned %u after the let-go", st.pinned);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
    unlink(a.file);
}

Test(metrics, consumer_died_alert_fires_once)
{
    const char *name = h_qname("adied");
    shmq_t *q = make_queue(name, 16, 5);
    h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    struct alert_env a;
    alert_env_init(&a);
    struct daemon d = start_watchdog(name, "--sample-ms", "20", "--alert-consumer-died",
                                     "--alert-cmd", a.cmd, NULL);
    assert_log(&d, "event=alerts_armed", 1, "a first sample: the baseline");
    pid_t child = h_fork(consume_and_die, (void *)name);
    int st;
    cr_assert_eq(h_waitpid(child, 10000, 0, &st), 0);
    assert_log(&d, "event=consumer_died", 1, "death seen");
    char *t = alert_lines(&a, 1);
    char want[160];
    snprintf(want, sizeof want, "consumer_died %s 1 0\n", name);
    cr_assert_str_eq(t, want);
    free(t);
    assert_quiet(&a, &d, 1, "event=alert alert=consumer_died", 1);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
    unlink(a.file);
}

Test(metrics, no_lease_alert_fires_once_on_the_standby)
{
    const char *name = h_qname("alease");
    shmq_t *q = make_queue(name, 8, 5);
    h_assert_rc(shmq_close(q), 0);
    struct alert_env a;
    alert_env_init(&a);
    struct daemon active = start_watchdog(name, "--lease-ms", "200", NULL);
    assert_log(&active, "event=lease_acquired", 1, "the first watchdog is active");
    struct daemon standby =
        start_watchdog(name, "--lease-ms", "200", "--alert-no-lease", "--alert-cmd", a.cmd, NULL);
    assert_log(&standby, "event=standby", 1, "the second watchdog stands by");
    h_sleep_ms(300);
    char *t = read_file(a.file);
    cr_assert_str_eq(t, "", "no alert while the lease is held");
    free(t);

    kill(active.pid, SIGKILL); /* no clean release: the standby finds no live holder */
    int st;
    h_waitpid(active.pid, 30000, 0, &st);
    active.pid = 0;
    assert_log(&standby, "took_over=1", 1, "the standby takes over");
    t = alert_lines(&a, 1);
    char want[160];
    snprintf(want, sizeof want, "no_lease %s 0 1\n", name);
    cr_assert_str_eq(t, want);
    free(t);
    assert_quiet(&a, &standby, 1, "event=alert alert=no_lease", 1);
    stop_watchdog(&standby);
    unlink(active.log);
    unlink(a.file);
}

Test(metrics, age_alert_fires_once)
{
    const char *name = h_qname("aage");
    shmq_t *q = make_queue(name, 16, 5);
    struct alert_env a;
    alert_env_init(&a);
    struct daemon d = start_watchdog(name, "--sample-ms", "20", "--alert-age-ms", "200",
                                     "--alert-cmd", a.cmd, NULL);
    assert_log(&d, "event=lease_acquired", 1, "start");
    h_assert_rc(shmq_publish(q, "old", 3, NULL), 0);
    int64_t published = h_now_ms();
    h_sleep_ms(100);
    char *t = read_file(a.file);
    cr_assert_str_eq(t, "", "100 ms is not older than 200 ms");
    free(t);
    t = alert_lines(&a, 1);
    int64_t fired = h_now_ms() - published;
    char want[160];
    snprintf(want, sizeof want, "age %s ", name);
    cr_assert(strncmp(t, want, strlen(want)) == 0, "alert command environment: %s", t);
    unsigned value = 0, threshold = 0;
    cr_assert_eq(sscanf(t + strlen(want), "%u %u", &value, &threshold), 2);
    cr_assert(value > 200 && threshold == 200 && value <= fired + 50, "value %u threshold %u",
              value, threshold);
    free(t);
    h_assert_rc(shmq_publish(q, "new", 3, NULL), 0); /* older still, and more: no second alert */
    assert_quiet(&a, &d, 1, "event=alert alert=age", 1);

    /* acked: nothing waits, the alert clears */
    shmq_consumer_t *c;
    h_assert_rc(shmq_consumer_open(q, "drain", &c), 0);
    shmq_msg_t m;
    for (int i = 0; i < 2; i++) {
        h_assert_rc(shmq_receive(c, &m, 1000), 0);
        h_assert_rc(shmq_ack(c, &m), 0);
    }
    assert_log(&d, "event=alert_cleared alert=age", 1, "age cleared");
    assert_quiet(&a, &d, 1, "event=alert alert=age", 1);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
    unlink(a.file);
}

/* Two groups at different places of the same messages: default acked them all (lag 0), "a" has
 * them ready (lag 3): the series say so, and --alert-group-lag 2 fires, then clears when a
 * catches up. */
Test(metrics, groups_carry_a_group_label_and_their_lag_alerts)
{
    const char *name = h_qname("mgroups");
    shmq_config_t cfg = h_small_config(16, 64, 16);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_groups = 2;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_group_create(q, "a", SHMQ_GROUP_BLOCK, 0), 0);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "m", 1, NULL), 0);
    shmq_consumer_t *c0, *ca;
    h_assert_rc(shmq_consumer_open(q, "c0", &c0), 0);
    h_assert_rc(shmq_consumer_open_group(q, "a", "ca", &ca), 0);
    shmq_msg_t m;
    for (int i = 0; i < 3; i++) {
        h_assert_rc(shmq_receive(c0, &m, 1000), 0);
        h_assert_rc(shmq_ack(c0, &m), 0);
    }
    struct daemon d = start_watchdog(name, "--metrics", "127.0.0.1:0", "--sample-ms", "20",
                                     "--alert-group-lag", "2", NULL);
    int port = metrics_port(&d);
    char want[192];
    snprintf(want, sizeof want, "shmq_group_lag_messages{queue=\"%s\",group=\"a\"} 3", name);
    char *text = fetch_until(port, want);
    check_exposition(text);
    char key[192];
    snprintf(key, sizeof key, "shmq_group_lag_messages{queue=\"%s\",group=\"default\"}", name);
    cr_assert_eq(sample_value(text, key), 0);
    snprintf(key, sizeof key, "shmq_group_messages{queue=\"%s\",group=\"a\",state=\"ready\"}",
             name);
    cr_assert_eq(sample_value(text, key), 3);
    snprintf(key, sizeof key,
             "shmq_group_messages{queue=\"%s\",group=\"default\",state=\"ready\"}", name);
    cr_assert_eq(sample_value(text, key), 0);
    free(text);
    assert_log(&d, "event=alert alert=group_lag value=3 threshold=2", 1, "group a lags");
    for (int i = 0; i < 3; i++) {
        h_assert_rc(shmq_receive(ca, &m, 1000), 0);
        h_assert_rc(shmq_ack(ca, &m), 0);
    }
    assert_log(&d, "event=alert_cleared alert=group_lag", 1, "group a caught up");
    /* each group's consumers and their counters */
    snprintf(want, sizeof want, "shmq_group_messages_acked_total{queue=\"%s\",group=\"a\"} 3",
             name);
    text = fetch_until(port, want);
    check_exposition(text);
    snprintf(key, sizeof key,
             "shmq_group_messages_delivered_total{queue=\"%s\",group=\"default\"}", name);
    cr_assert_eq(sample_value(text, key), 3);
    snprintf(key, sizeof key, "shmq_group_messages_nacked_total{queue=\"%s\",group=\"a\"}",
             name);
    cr_assert_eq(sample_value(text, key), 0);
    snprintf(key, sizeof key, "shmq_group_consumers{queue=\"%s\",group=\"a\"}", name);
    cr_assert_eq(sample_value(text, key), 1);
    free(text);
    h_assert_rc(shmq_consumer_close(c0), 0);
    h_assert_rc(shmq_consumer_close(ca), 0);
    h_assert_rc(shmq_close(q), 0);
    stop_watchdog(&d);
}
