/*
 * test_bridge.c - shmq-bridge carries messages host-A queue -> JetStream -> host-B queue at
 * least once: every message arrives with its bytes (in order for one producer while nothing
 * fails), none is lost when the bridge is SIGKILLed at random moments or when the NATS server
 * is stopped and restarted, and a bad configuration is refused with a clear error.
 *
 * Fixtures, not mocks: each test starts its own `nats-server -js` on a free loopback port with
 * a store directory of its own (a missing nats-server fails the test and says how to install
 * it), and runs the bridge binary of this build (dirname(/proc/self/exe)/../shmq-bridge) as a
 * child, its stdout and stderr in a log file whose logfmt events the tests read. Two local
 * queues stand for the two hosts; one bridge process carries both routes:
 *   --out A:SUBJ  --in STREAM:DURABLE:B
 *
 * Messages carry their producer's sequence number, their length and a checksum, so that loss
 * (a seq never seen), duplication (seen twice), corruption (bad checksum or length) and
 * reordering are told apart; a shared array counts deliveries per seq. Every wait is bounded.
 * A SIGSTOPped bridge is fenced by maintenance and must reattach on SIGCONT without loss.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.h"

static void bridge_fini(void);
TestSuite(bridge, .fini = bridge_fini, .timeout = 180);

#define READY_WAIT_MS 10000    /* nats-server up, or a log line we expect */
#define EXIT_WAIT_MS 10000     /* a bridge or server exits after a signal */
#define DELIVERY_WAIT_MS 90000 /* every message reaches queue B */

/* ---- the NATS server fixture ---- */

struct server {
    pid_t pid;
    int port, http_port;
    char dir[64]; /* its own: store/ and server.log */
};
static struct server srv;
static char tmpdir[64]; /* this test's files: bridge logs, the store */

static const char *find_in_path(const char *prog)
{
    static char path[PATH_MAX];
    const char *env = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", env ? env : "/usr/local/bin:/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof path, "%s/%s", d, prog);
        if (access(path, X_OK) == 0)
            return path;
    }
    if (access("/usr/sbin/nats-server", X_OK) == 0 && strcmp(prog, "nats-server") == 0)
        return "/usr/sbin/nats-server";
    return NULL;
}

/* A loopback TCP port nobody listens on now (bind to 0, read it, close). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    socklen_t len = sizeof a;
    cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0, "getsockname");
    close(fd);
    return ntohs(a.sin_port);
}

/* Whether file path contains needle (read whole; the files here are small). */
static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    static char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static bool wait_file_has(const char *path, const char *needle, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    while (!file_has(path, needle)) {
        if (h_now_ms() >= end)
            return false;
        h_sleep_ms(10);
    }
    return true;
}

static bool keep_tmpdir; /* a test failed: keep its logs */

static void make_tmpdir(void)
{
    if (tmpdir[0])
        return;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/shmq-bridge-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
}

/* Start nats-server -js on srv.port (chosen on the first start, kept for restarts) with the
 * store in tmpdir/store; wait until it logs "Server is ready". */
static void server_start(void)
{
    const char *bin = find_in_path("nats-server");
    cr_assert_not_null(bin, "nats-server is not installed (not in PATH): the bridge tests need a "
                            "real JetStream server. Install it with tools/install-deps (Debian "
                            "package nats-server).");
    make_tmpdir();
    if (!srv.port) {
        srv.port = free_port();
        srv.http_port = free_port();
    }
    char store[128], log[128], port[16], hport[16];
    snprintf(store, sizeof store, "%s/store", tmpdir);
    snprintf(log, sizeof log, "%s/server.log", tmpdir);
    snprintf(port, sizeof port, "%d", srv.port);
    snprintf(hport, sizeof hport, "%d", srv.http_port);
    unlink(log);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execl(bin, bin, "-js", "-a", "127.0.0.1", "-p", port, "-m", hport, "-sd", store,
              (char *)NULL);
        _exit(127);
    }
    h_track(pid, -1);
    srv.pid = pid;
    cr_assert(wait_file_has(log, "Server is ready", READY_WAIT_MS),
              "nats-server (pid %d, port %d) did not log 'Server is ready' within %d ms; see %s",
              (int)pid, srv.port, READY_WAIT_MS, log);
}

/* Stop the server (SIGTERM, then SIGKILL after EXIT_WAIT_MS) and reap it. */
static void server_stop(void)
{
    if (srv.pid <= 0)
        return;
    kill(srv.pid, SIGTERM);
    if (h_waitpid(srv.pid, EXIT_WAIT_MS, 0, NULL) != 0) {
        kill(srv.pid, SIGKILL);
        waitpid(srv.pid, NULL, 0);
        h_untrack(srv.pid);
    }
    srv.pid = 0;
}

static void bridge_fini(void)
{
    server_stop();
    h_cleanup();
    if (tmpdir[0]) {
        if (getenv("SHMQ_BRIDGE_TEST_KEEP") || keep_tmpdir) /* to read the logs after a run */
            printf("test_bridge: kept %s\n", tmpdir);
        else
            h_remove_tree(tmpdir);
        tmpdir[0] = 0;
    }
    memset(&srv, 0, sizeof srv);
}

/* "nats://127.0.0.1:PORT" */
static const char *server_url(void)
{
    static char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", srv.port);
    return url;
}

/* Messages the server stores in all its streams now (its monitoring endpoint /jsz). */
static long server_stored_messages(void)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "curl -s --max-time 5 http://127.0.0.1:%d/jsz", srv.http_port);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    pclose(p);
    buf[n] = 0;
    const char *m = strstr(buf, "\"messages\":");
    return m ? strtol(m + 11, NULL, 10) : -1;
}

/* ---- the bridge as a child ---- */

static const char *bridge_path(void)
{
    const char *path = cli_tool_location("shmq-bridge");
    cr_assert(access(path, X_OK) == 0,
              "the bridge binary is missing: %s (%s). It is built (tools/bridge/*.c) when "
              "pkg-config finds libnats: install libnats-dev (tools/install-deps).",
              path, strerror(errno));
    return path;
}

/* Start the bridge with args (NULL-terminated), output appended to tmpdir/NAME. */
static pid_t bridge_start(const char *logname, const char *const *args)
{
    const char *bin = bridge_path();
    make_tmpdir();
    char log[128];
    snprintf(log, sizeof log, "%s/%s", tmpdir, logname);
    /* appended to by every start (closed in the parent, and on exec for the child) */
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t pid = cli_spawn(bin, args, fd, fd);
    if (fd >= 0)
        close(fd);
    return pid;
}

static const char *tmp_path(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

/* Run the bridge to completion (bounded); its exit code, its output in out. */
static int bridge_run(const char *const *args, char *out, size_t size)
{
    char name[32];
    static int seq;
    snprintf(name, sizeof name, "run-%d.log", seq++);
    pid_t pid = bridge_start(name, args);
    int st = 0;
    int rc = h_waitpid(pid, EXIT_WAIT_MS, 0, &st);
    if (rc != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        h_untrack(pid);
    }
    cr_assert_eq(rc, 0, "shmq-bridge did not exit within %d ms", EXIT_WAIT_MS);
    FILE *f = fopen(tmp_path(name), "r");
    size_t n = f ? fread(out, 1, size - 1, f) : 0;
    if (f)
        fclose(f);
    out[n] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* SIGTERM the bridge, wait for its clean exit (0). */
static void bridge_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    int rc = h_waitpid(pid, EXIT_WAIT_MS + 10000, 0, &st);
    if (rc != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        h_untrack(pid);
    }
    cr_assert_eq(rc, 0, "shmq-bridge did not stop within %d ms of SIGTERM", EXIT_WAIT_MS + 10000);
    char buf[96];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shmq-bridge after SIGTERM: %s",
              h_status_str(st, buf, sizeof buf));
}

/* ---- messages: seq, length and checksum; bytes a function of seq ---- */

struct msg_head {
    uint32_t seq, len, sum;
};
#define MSG_MAX 1024

static size_t make_msg(uint32_t seq, unsigned char *buf)
{
    size_t len = sizeof(struct msg_head) + (seq * 37u) % 500u;
    for (size_t i = sizeof(struct msg_head); i < len; i++)
        buf[i] = (unsigned char)(seq * 31u + i * 7u);
    struct msg_head h = {seq, (uint32_t)len, h_fnv1a(buf + sizeof h, len - sizeof h) ^ seq};
    memcpy(buf, &h, sizeof h);
    return len;
}

/* The seq of a delivered message, or -1 if its length or checksum is wrong. */
static long check_msg(const shmq_msg_t *m)
{
    struct msg_head h;
    if (m->len < sizeof h)
        return -1;
    memcpy(&h, m->data, sizeof h);
    unsigned char want[MSG_MAX];
    if (h.len != m->len || make_msg(h.seq, want) != m->len || memcmp(want, m->data, m->len))
        return -1;
    return h.seq;
}

/* What the consumer child of queue B saw, in shared memory. */
struct tally {
    uint32_t n;                    /* messages expected: seq 0..n-1 */
    _Atomic uint32_t distinct;     /* seqs seen at least once */
    _Atomic uint32_t received;     /* deliveries in all */
    _Atomic uint32_t corrupt;      /* bad length or checksum */
    _Atomic uint32_t out_of_order; /* a first delivery whose seq is below the highest seen */
    _Atomic uint32_t done;
    uint8_t count[]; /* deliveries per seq (saturating) */
};

static struct tally *tally_new(uint32_t n)
{
    struct tally *t = h_shared_alloc(sizeof *t + n);
    t->n = n;
    return t;
}

struct consume_arg {
    const char *queue;
    struct tally *t;
    int timeout_ms;
};

/* Child: receive from B until every seq was seen (or the bound), ack each. */
static int consume_child(void *p)
{
    struct consume_arg *a = p;
    struct tally *t = a->t;
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(a->queue, &q) || shmq_consumer_open(q, "test-b", &c))
        return 10;
    int64_t end = h_now_ms() + a->timeout_ms;
    long highest = -1;
    while (t->distinct < t->n && h_now_ms() < end) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 100);
        if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR)
            continue;
        if (rc)
            return 11;
        t->received++;
        long seq = check_msg(&m);
        if (seq < 0 || (uint32_t)seq >= t->n) {
            t->corrupt++;
        } else {
            if (t->count[seq] == 0) {
                t->distinct++;
                if (seq < highest)
                    t->out_of_order++;
            }
            if (t->count[seq] < 255)
                t->count[seq]++;
            if (seq > highest)
                highest = seq;
        }
        shmq_ack(c, &m);
    }
    t->done = 1;
    shmq_consumer_close(c);
    shmq_close(q);
    return t->distinct == t->n ? 0 : 12;
}

struct produce_arg {
    const char *queue;
    uint32_t n;
    uint32_t every; /* pause after this many messages (0: never) */
    int pause_us;
};

/* Child: publish seq 0..n-1 into A, blocking while it is full. */
static int produce_child(void *p)
{
    struct produce_arg *a = p;
    shmq_t *q;
    if (shmq_open(a->queue, &q))
        return 20;
    unsigned char buf[MSG_MAX];
    for (uint32_t s = 0; s < a->n; s++) {
        size_t len = make_msg(s, buf);
        int rc;
        do
            rc = shmq_publish_timed(q, buf, len, NULL, 60000);
        while (rc == -EINTR);
        if (rc)
            return 21;
        if (a->every && s % a->every == a->every - 1)
            usleep((useconds_t)a->pause_us);
    }
    shmq_close(q);
    return 0;
}

static void create_queue(const char *name, uint32_t capacity)
{
    shmq_config_t cfg = h_small_config(capacity, MSG_MAX, 64);
    cfg.durability = SHMQ_DURABILITY_NONE;
    cfg.max_attempts = 1000; /* a message in flight at many kills must not be dead-lettered */
    cfg.heartbeat_timeout_ms = 2000;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    shmq_close(q);
}

/* The pieces every traffic test uses: queue A (out), queue B (in), one stream, one durable. */
struct setup {
    const char *qa, *qb;
    char out[160], in[160], stream[64], create[128];
};

static void setup_routes(struct setup *s, const char *tag, uint32_t capacity)
{
    char ta[32], tb[32];
    snprintf(ta, sizeof ta, "%s-a", tag);
    snprintf(tb, sizeof tb, "%s-b", tag);
    s->qa = h_qname(ta);
    s->qb = h_qname(tb);
    create_queue(s->qa, capacity);
    create_queue(s->qb, capacity);
    snprintf(s->stream, sizeof s->stream, "BR%d", (int)getpid());
    snprintf(s->out, sizeof s->out, "%s:bridge.%d.x", s->qa, (int)getpid());
    snprintf(s->in, sizeof s->in, "%s:dur:%s", s->stream, s->qb);
    snprintf(s->create, sizeof s->create, "%s:bridge.%d.>", s->stream, (int)getpid());
}

/* Print what a consumer of B that did not get every message leaves to explain: the tally, the
 * first missing seqs, both queues' slot counts, the bridge's warnings. The temporary directory
 * is kept (its logs named). */
static void explain_shortfall(const struct setup *s, const struct tally *t, const char *log)
{
    printf("test_bridge: %u of %u distinct, %u deliveries; missing:", (unsigned)t->distinct, t->n,
           (unsigned)t->received);
    for (uint32_t i = 0, shown = 0; i < t->n && shown < 8; i++)
        if (t->count[i] == 0) {
            printf(" %u", i);
            shown++;
        }
    printf("\n");
    const char *names[2] = {s->qa, s->qb};
    for (int i = 0; i < 2; i++) {
        shmq_t *q;
        shmq_stats_t st;
        if (shmq_open(names[i], &q) == 0) {
            if (shmq_stats(q, &st) == 0)
                printf("test_bridge: %s ready=%u inflight=%u delayed=%u reserved=%u dead=%u "
                       "free=%u\n",
                       names[i], st.ready, st.inflight, st.delayed, st.reserved, st.dead, st.free);
            shmq_close(q);
        }
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "grep -E 'level=(warn|error)|event=stats' %s | tail -n 20",
             tmp_path(log));
    fflush(stdout);
    if (system(cmd) != 0)
        printf("test_bridge: no warnings in %s\n", tmp_path(log));
    keep_tmpdir = true;
}

/* Wait for the consumer of B; explain a shortfall before failing. */
static void assert_consumer_done(pid_t cons, const struct setup *s, const struct tally *t,
                                 const char *log)
{
    int st = 0;
    int rc = h_waitpid(cons, DELIVERY_WAIT_MS + 5000, 0, &st);
    if (rc != 0) {
        kill(cons, SIGKILL);
        waitpid(cons, NULL, 0);
        h_untrack(cons);
    }
    if (rc != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        explain_shortfall(s, t, log);
    cr_assert(rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "consumer of B: %s (bridge log %s kept)",
              rc != 0 ? "did not finish" : "did not receive every message", tmp_path(log));
}

/* Parse "key=N" from the last line of log holding "event=EVENT" and needle. -1 if none. */
static long log_last_value(const char *path, const char *event, const char *needle, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[2048], ev[64], k[64];
    snprintf(ev, sizeof ev, "event=%s ", event);
    snprintf(k, sizeof k, " %s=", key);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, ev) || !strstr(line, needle))
            continue;
        const char *p = strstr(line, k);
        if (p)
            v = strtol(p + strlen(k), NULL, 10);
    }
    fclose(f);
    return v;
}

/* ---- the tests ---- */

Test(bridge, round_trip_every_message_in_order_with_its_bytes)
{
    server_start();
    struct setup s;
    setup_routes(&s, "rt", 8192);
    const uint32_t n = 5000;
    char prom[128];
    snprintf(prom, sizeof prom, "%s/rt.prom", tmpdir);
    const char *args[] = {
        "--server", server_url(), "--create-stream",     s.create, "--out",          s.out,
        "--in",     s.in,         "--stats-interval-ms", "500",    "--metrics-file", prom,
        NULL};
    pid_t b = bridge_start("rt.log", args);
    cr_assert(wait_file_has(tmp_path("rt.log"), "event=route_started route=in", READY_WAIT_MS),
              "the bridge did not start its routes; see %s", tmp_path("rt.log"));

    shmq_t *qa;
    h_assert_rc(shmq_open(s.qa, &qa), 0);
    unsigned char buf[MSG_MAX];
    for (uint32_t i = 0; i < n; i++)
        h_assert_rc(shmq_publish(qa, buf, make_msg(i, buf), NULL), 0);
    shmq_close(qa);

    struct tally *t = tally_new(n);
    struct consume_arg ca = {s.qb, t, DELIVERY_WAIT_MS};
    pid_t c = h_fork(consume_child, &ca);
    assert_consumer_done(c, &s, t, "rt.log");
    bridge_stop(b);

    cr_expect_eq(t->corrupt, 0, "%u messages arrived with wrong bytes", t->corrupt);
    cr_expect_eq(t->distinct, n, "%u of %u messages arrived", t->distinct, n);
    cr_expect_eq(t->received, n, "%u deliveries for %u messages (no failure: no duplicate)",
                 t->received, n);
    cr_expect_eq(t->out_of_order, 0, "%u messages arrived out of order", t->out_of_order);
    long bridged_out = log_last_value(tmp_path("rt.log"), "route_stopped", "route=out", "bridged");
    long bridged_in = log_last_value(tmp_path("rt.log"), "route_stopped", "route=in", "bridged");
    cr_expect_eq(bridged_out, n, "out route bridged %ld", bridged_out);
    cr_expect_eq(bridged_in, n, "in route bridged %ld", bridged_in);
    cr_expect_eq(server_stored_messages(), n, "the stream holds %ld messages, expected %u",
                 server_stored_messages(), n);
    /* The same counters in the metrics file (written at exit). */
    char want[256];
    snprintf(want, sizeof want,
             "shmq_bridge_bridged_total{route=\"in\",queue=\"%s\",stream=\"%s\",durable=\"dur\"} "
             "%u\n",
             s.qb, s.stream, n);
    cr_expect(file_has(prom, want), "the metrics file lacks: %s", want);
    cr_expect(file_has(prom, "# TYPE shmq_bridge_connected gauge\n"),
              "the metrics file lacks the connected gauge");
}

/* The in route publishes a fetched batch with shmq_publish_batch into a queue far smaller than
 * the batch: each batch stops on the full queue, the message it stopped at waits for room alone,
 * then the rest goes on as a batch. Every message arrives once, in order, and only published
 * ones are acked to JetStream (a message acked but not published would be missing; one
 * published twice, or naked after its publish, would arrive twice). */
Test(bridge, in_route_batches_into_a_small_queue_lose_and_repeat_nothing)
{
    server_start();
    struct setup s;
    setup_routes(&s, "small", 8192);
    h_assert_rc(shmq_unlink(s.qb), 0);
    create_queue(s.qb, 16);
    const uint32_t n = 3000;
    const char *args[] = {"--server", server_url(), "--create-stream", s.create, "--out", s.out,
                          "--in",     s.in,         "--batch",         "256",    NULL};
    pid_t b = bridge_start("small.log", args);
    cr_assert(wait_file_has(tmp_path("small.log"), "event=route_started route=in", READY_WAIT_MS),
              "the bridge did not start its routes; see %s", tmp_path("small.log"));
    shmq_t *qa;
    h_assert_rc(shmq_open(s.qa, &qa), 0);
    unsigned char buf[MSG_MAX];
    for (uint32_t i = 0; i < n; i++)
        h_assert_rc(shmq_publish(qa, buf, make_msg(i, buf), NULL), 0);
    shmq_close(qa);

    struct tally *t = tally_new(n);
    struct consume_arg ca = {s.qb, t, DELIVERY_WAIT_MS};
    pid_t c = h_fork(consume_child, &ca);
    assert_consumer_done(c, &s, t, "small.log");
    bridge_stop(b);
    cr_expect_eq(t->corrupt, 0, "%u messages arrived with wrong bytes", t->corrupt);
    cr_expect_eq(t->distinct, n, "%u of %u messages arrived", t->distinct, n);
    cr_expect_eq(t->received, n, "%u deliveries for %u messages", t->received, n);
    cr_expect_eq(t->out_of_order, 0, "%u messages arrived out of order", t->out_of_order);
    long bridged_in = log_last_value(tmp_path("small.log"), "route_stopped", "route=in", "bridged");
    cr_expect_eq(bridged_in, n, "in route bridged %ld", bridged_in);
    shmq_t *qb; /* nothing left behind the consumer either: no late second copy */
    shmq_stats_t st;
    h_assert_rc(shmq_open(s.qb, &qb), 0);
    h_assert_rc(shmq_stats(qb, &st), 0);
    cr_expect_eq(st.ready + st.inflight, 0, "%u ready, %u in flight in B after the run", st.ready,
                 st.inflight);
    shmq_close(qb);
}

Test(bridge, sigkill_at_random_loses_nothing)
{
    server_start();
    struct setup s;
    setup_routes(&s, "kill", 4096);
    const uint32_t n = 20000;
    const int kills = 10;
    /* AckWait 2 s: what a killed bridge fetched from JetStream comes back soon. */
    const char *args[] = {"--server",
                          server_url(),
                          "--create-stream",
                          s.create,
                          "--out",
                          s.out,
                          "--in",
                          s.in,
                          "--ack-wait-ms",
                          "2000",
                          "--stats-interval-ms",
                          "50",
                          NULL};
    struct tally *t = tally_new(n);
    struct consume_arg ca = {s.qb, t, DELIVERY_WAIT_MS};
    struct produce_arg pa = {s.qa, n, 20, 4000}; /* ~5k msg/s: traffic during every kill */

    /* The first bridge creates the stream and the durable before the traffic starts. */
    pid_t b = bridge_start("kill-0.log", args);
    cr_assert(wait_file_has(tmp_path("kill-0.log"), "event=route_started route=in", READY_WAIT_MS),
              "the first bridge did not start; see %s", tmp_path("kill-0.log"));
    pid_t prod = h_fork(produce_child, &pa);
    pid_t cons = h_fork(consume_child, &ca);

    uint64_t rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
    for (int k = 0; k < kills; k++) {
        h_sleep_ms(50 + (int)(h_rand(&rng) % 350));
        kill(b, SIGKILL);
        cr_assert_eq(h_waitpid(b, EXIT_WAIT_MS, 0, NULL), 0, "killed bridge not reaped");
        char name[32];
        snprintf(name, sizeof name, "kill-%d.log", k + 1);
        b = bridge_start(name, args);
    }
    h_assert_child_ok(prod, DELIVERY_WAIT_MS, "producer into A");
    assert_consumer_done(cons, &s, t, "kill-*.log");
    bridge_stop(b);

    uint32_t lost = 0, dups = 0;
    for (uint32_t i = 0; i < n; i++) {
        lost += t->count[i] == 0;
        dups += t->count[i] > 1 ? t->count[i] - 1u : 0u;
    }
    /* Republishes JetStream dropped: each bridge's last counters line (every 50 ms; a killed
     * bridge's last 50 ms are not counted, so this is a lower bound). */
    long dropped = 0;
    for (int k = 0; k <= kills; k++) {
        char name[32];
        snprintf(name, sizeof name, "kill-%d.log", k);
        long d = log_last_value(tmp_path(name), "stats", "route=out", "duplicates");
        dropped += d > 0 ? d : 0;
    }
    long stored = server_stored_messages();
    printf("bridge kill test: %d SIGKILLs, %u messages: lost %u, corrupt %u; duplicates "
           "delivered into B: %u (%.2f%%, in-route kills between local publish and JetStream "
           "ack); out-route republishes dropped by JetStream's duplicate window: >= %ld; "
           "duplicates that reached the stream: %ld (it holds %ld)\n",
           kills, n, lost, t->corrupt, dups, 100.0 * dups / n, dropped, stored - (long)n, stored);
    fflush(stdout);
    cr_expect_eq(lost, 0, "%u messages lost", lost);
    cr_expect_eq(t->corrupt, 0, "%u messages corrupt", t->corrupt);
    cr_expect_eq(stored, n,
                 "the stream holds %ld messages for %u sent: the Nats-Msg-Id "
                 "header should have dropped every republish",
                 stored, n);
}

Test(bridge, server_outage_is_absorbed_by_the_local_queue)
{
    server_start();
    struct setup s;
    setup_routes(&s, "outage", 16384);
    const uint32_t n = 10000;
    const char *args[] = {"--server",
                          server_url(),
                          "--create-stream",
                          s.create,
                          "--out",
                          s.out,
                          "--in",
                          s.in,
                          "--stats-interval-ms",
                          "500",
                          "--reconnect-max-ms",
                          "500",
                          NULL};
    pid_t b = bridge_start("outage.log", args);
    cr_assert(wait_file_has(tmp_path("outage.log"), "event=route_started route=in", READY_WAIT_MS),
              "the bridge did not start; see %s", tmp_path("outage.log"));
    struct tally *t = tally_new(n);
    struct consume_arg ca = {s.qb, t, DELIVERY_WAIT_MS};
    struct produce_arg pa = {s.qa, n, 10, 5000}; /* ~2k msg/s for ~5 s */
    pid_t prod = h_fork(produce_child, &pa);
    pid_t cons = h_fork(consume_child, &ca);

    /* messages flow before the outage (an event, bounded: not a fixed 1 s) */
    for (int64_t end = h_now_ms() + DELIVERY_WAIT_MS; t->distinct == 0 && h_now_ms() < end;)
        h_sleep_ms(10);
    uint32_t before = t->distinct;
    server_stop();
    int64_t down_at = h_now_ms();
    shmq_t *qa;
    h_assert_rc(shmq_open(s.qa, &qa), 0);
    uint32_t max_depth = 0;
    /* the backlog grows in A: an outage of at least 1.5 s, longer until a backlog is seen */
    while (h_now_ms() - down_at < 1500 || (max_depth == 0 && h_now_ms() - down_at < 30000)) {
        shmq_stats_t st;
        if (shmq_stats(qa, &st) == 0 && st.ready > max_depth)
            max_depth = st.ready;
        h_sleep_ms(50);
    }
    shmq_close(qa);
    cr_assert(wait_file_has(tmp_path("outage.log"), "event=disconnected", READY_WAIT_MS),
              "no event=disconnected in %s", tmp_path("outage.log"));
    server_start(); /* same port, same store */
    cr_assert(wait_file_has(tmp_path("outage.log"), "event=reconnected", READY_WAIT_MS),
              "the bridge did not reconnect within %d ms; see %s", READY_WAIT_MS,
              tmp_path("outage.log"));

    h_assert_child_ok(prod, DELIVERY_WAIT_MS, "producer into A");
    assert_consumer_done(cons, &s, t, "outage.log");
    bridge_stop(b);
    uint32_t dups = 0;
    for (uint32_t i = 0; i < n; i++)
        dups += t->count[i] > 1 ? t->count[i] - 1u : 0u;
    printf("bridge outage test: %u messages, %u through before the stop, backlog in A during "
           "the outage (at least 1.5 s) up to %u, duplicates into B %u\n",
           n, before, max_depth, dups);
    fflush(stdout);
    cr_expect_gt(before, 0, "nothing flowed before the outage");
    cr_expect_gt(max_depth, 0, "the local queue held no backlog during the outage");
    cr_expect_eq(t->distinct, n, "%u of %u messages arrived", t->distinct, n);
    cr_expect_eq(t->corrupt, 0, "%u messages corrupt", t->corrupt);
}

Test(bridge, stopped_bridge_is_fenced_then_resumes_without_loss)
{
    server_start();
    struct setup s;
    setup_routes(&s, "stop", 16384);
    const uint32_t n = 20000;
    const char *args[] = {"--server", server_url(), "--create-stream",     s.create, "--out", s.out,
                          "--in",     s.in,         "--stats-interval-ms", "500",    NULL};
    pid_t b = bridge_start("stop.log", args);
    cr_assert(wait_file_has(tmp_path("stop.log"), "event=route_started route=in", READY_WAIT_MS),
              "the bridge did not start; see %s", tmp_path("stop.log"));
    struct tally *t = tally_new(n);
    struct consume_arg ca = {s.qb, t, DELIVERY_WAIT_MS};
    struct produce_arg pa = {s.qa, n, 20, 2000}; /* ~10k msg/s: a window in flight */
    pid_t prod = h_fork(produce_child, &pa);
    pid_t cons = h_fork(consume_child, &ca);

    /* SIGSTOP past the queue's heartbeat timeout (2 s) while this process maintains queue A
     * as a watchdog would: the stopped bridge is fenced, its deliveries redelivered. */
    for (int64_t end = h_now_ms() + DELIVERY_WAIT_MS; t->distinct == 0 && h_now_ms() < end;)
        h_sleep_ms(10); /* messages flow through the bridge: it holds deliveries */
    kill(b, SIGSTOP);
    shmq_t *qa;
    h_assert_rc(shmq_open(s.qa, &qa), 0);
    uint32_t hung = 0;
    for (int64_t end = h_now_ms() + 30000; hung == 0 && h_now_ms() < end; h_sleep_ms(20)) {
        shmq_maint_report_t rep;
        if (shmq_maintain(qa, &rep) == 0)
            hung += rep.procs_hung;
    }
    kill(b, SIGCONT);
    shmq_close(qa);
    cr_expect_gt(hung, 0, "the stopped bridge was not declared hung");
    cr_assert(wait_file_has(tmp_path("stop.log"), "event=consumer_reopened", READY_WAIT_MS),
              "the bridge did not reattach its fenced consumer; see %s", tmp_path("stop.log"));

    h_assert_child_ok(prod, DELIVERY_WAIT_MS, "producer into A");
    assert_consumer_done(cons, &s, t, "stop.log");
    bridge_stop(b);
    uint32_t dups = 0;
    for (uint32_t i = 0; i < n; i++)
        dups += t->count[i] > 1 ? t->count[i] - 1u : 0u;
    printf("bridge stop test: %u messages, fenced once, duplicates into B %u, stream holds %ld\n",
           n, dups, server_stored_messages());
    fflush(stdout);
    cr_expect_eq(t->distinct, n, "%u of %u messages arrived", t->distinct, n);
    cr_expect_eq(t->corrupt, 0, "%u messages corrupt", t->corrupt);
    cr_expect_eq(server_stored_messages(), n,
                 "redeliveries of the fenced consumer reached the "
                 "stream: the Nats-Msg-Id should have dropped them");
}

/* Expect exit code want and text in the output. */
static void expect_refused(const char *const *args, int want, const char *text, const char *what)
{
    static char out[16384];
    int rc = bridge_run(args, out, sizeof out);
    cr_expect_eq(rc, want, "%s: exit %d, expected %d; output:\n%s", what, rc, want, out);
    cr_expect(strstr(out, text) != NULL, "%s: output lacks '%s':\n%s", what, text, out);
}

Test(bridge, bad_config_is_refused_with_a_clear_error)
{
    server_start();
    struct setup s;
    setup_routes(&s, "bad", 64);
    char create[128], nosuch[128], nostream[128];
    snprintf(create, sizeof create, "BAD%d:bad.%d.>", (int)getpid(), (int)getpid());
    snprintf(nosuch, sizeof nosuch, "t-nosuch-%d:bad.%d.x", (int)getpid(), (int)getpid());
    snprintf(nostream, sizeof nostream, "NOSTREAM%d:d:%s", (int)getpid(), s.qb);

    const char *unknown_queue[] = {"--server", server_url(), "--create-stream", create, "--out",
                                   nosuch,     NULL};
    expect_refused(unknown_queue, 3, "cannot open queue", "unknown queue");

    /* --out QUEUE@GROUP consumes in that group: one the queue lacks is refused as the queue's
     * consumer would be; a bad group name is a usage error */
    char nogroup[160], badgroup[160];
    snprintf(nogroup, sizeof nogroup, "%s@nope:bad.%d.x", s.qa, (int)getpid());
    snprintf(badgroup, sizeof badgroup, "%s@no pe:bad.%d.x", s.qa, (int)getpid());
    const char *unknown_group[] = {"--server", server_url(), "--create-stream", create, "--out",
                                   nogroup,    NULL};
    expect_refused(unknown_group, 3, "no consumer group nope", "unknown group");
    const char *bad_group[] = {"--server", server_url(), "--out", badgroup, NULL};
    expect_refused(bad_group, 2, "QUEUE[@GROUP]:SUBJECT", "bad group name");

    char unreachable[64];
    snprintf(unreachable, sizeof unreachable, "nats://127.0.0.1:%d", free_port());
    char out_ok[160];
    snprintf(out_ok, sizeof out_ok, "%s:bad.%d.x", s.qa, (int)getpid());
    const char *no_server[] = {"--server", unreachable, "--connect-timeout-ms", "500", "--out",
                               out_ok,     NULL};
    expect_refused(no_server, 4, "cannot connect to NATS server", "unreachable server");

    char bad_subj[160];
    snprintf(bad_subj, sizeof bad_subj, "%s:bad..subject", s.qa);
    const char *bad_subject[] = {"--server", server_url(), "--out", bad_subj, NULL};
    expect_refused(bad_subject, 2, "bad subject", "bad subject syntax");

    char wild[160];
    snprintf(wild, sizeof wild, "%s:bad.*", s.qa);
    const char *wildcard[] = {"--server", server_url(), "--out", wild, NULL};
    expect_refused(wildcard, 2, "bad subject", "wildcard publish subject");

    char uncaptured[160];
    snprintf(uncaptured, sizeof uncaptured, "%s:nobody.captures.%d", s.qa, (int)getpid());
    const char *no_stream_subject[] = {"--server", server_url(), "--out", uncaptured, NULL};
    expect_refused(no_stream_subject, 5, "no JetStream stream captures", "subject of no stream");

    const char *no_stream[] = {"--server", server_url(), "--in", nostream, NULL};
    expect_refused(no_stream, 5, "not found", "unknown stream");

    const char *no_route[] = {"--server", server_url(), NULL};
    expect_refused(no_route, 2, "no route", "no route");
    const char *unknown_opt[] = {"--bogus", NULL};
    expect_refused(unknown_opt, 2, "unknown option", "unknown option");
    const char *bad_window[] = {"--window", "0", "--out", out_ok, NULL};
    expect_refused(bad_window, 2, "--window", "window 0");

    /* A config file: the same keys; a bad key names its line. */
    char conf[128];
    snprintf(conf, sizeof conf, "%s/bad.conf", tmpdir);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "# comment\nserver = %s\nwindwo = 3\n", server_url());
    fclose(f);
    const char *bad_conf[] = {"--config", conf, NULL};
    expect_refused(bad_conf, 2, "bad.conf:3: unknown key 'windwo'", "config file typo");

    /* A good config file is read as the options would be: its route reaches the subject check. */
    f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "server = %s   # the fixture\nwindow = 8\nout = %s\n", server_url(), uncaptured);
    fclose(f);
    expect_refused(bad_conf, 5, "no JetStream stream captures", "config file route");

    const char *help[] = {"--help", NULL};
    expect_refused(help, 0, "Exit status", "--help");
}

/* Queues A and B (B's headers limited to qb_header_bytes) and a bridge from A through the
 * stream into B, started; its log in LOG. */
static pid_t headers_bridge(struct setup *s, const char *tag, uint32_t qb_header_bytes,
                            const char *log)
{
    server_start();
    char ta[32], tb[32];
    snprintf(ta, sizeof ta, "%s-a", tag);
    snprintf(tb, sizeof tb, "%s-b", tag);
    s->qa = h_qname(ta);
    s->qb = h_qname(tb);
    for (int i = 0; i < 2; i++) {
        shmq_config_t cfg = h_small_config(64, MSG_MAX, 64);
        cfg.durability = SHMQ_DURABILITY_NONE;
        cfg.max_header_bytes = i ? qb_header_bytes : 1024;
        shmq_t *q;
        h_assert_rc(shmq_create(i ? s->qb : s->qa, &cfg, &q), 0);
        shmq_close(q);
    }
    snprintf(s->stream, sizeof s->stream, "BR%s%d", tag, (int)getpid());
    snprintf(s->out, sizeof s->out, "%s:bridge.%s.%d.x", s->qa, tag, (int)getpid());
    snprintf(s->in, sizeof s->in, "%s:dur:%s", s->stream, s->qb);
    snprintf(s->create, sizeof s->create, "%s:bridge.%s.%d.>", s->stream, tag, (int)getpid());
    const char *args[] = {"--server", server_url(), "--create-stream", s->create, "--out", s->out,
                          "--in", s->in, NULL};
    pid_t b = bridge_start(log, args);
    cr_assert(wait_file_has(tmp_path(log), "event=route_started route=in", READY_WAIT_MS),
              "the bridge did not start its routes; see %s", tmp_path(log));
    return b;
}

/* A message that crossed the bridge: B's handle and consumer, the message and its headers,
 * and its id in A. */
struct crossed {
    shmq_t *qb;
    shmq_consumer_t *c;
    shmq_msg_t m;
    shmq_header_t got[32];
    size_t n;
    uint64_t id;
};

/* Publish "payload" with the nh headers h into A, receive it from B (its payload checked) with
 * its headers. */
static void cross(const struct setup *s, const shmq_header_t *h, uint32_t nh, struct crossed *x)
{
    shmq_t *qa;
    h_assert_rc(shmq_open(s->qa, &qa), 0);
    shmq_pub_opts_t o;
    shmq_pub_opts_init(&o);
    o.headers = h;
    o.n_headers = nh;
    x->id = 0;
    h_assert_rc(shmq_publish_ex(qa, "payload", 7, &o, &x->id), 0);
    shmq_close(qa);
    h_assert_rc(shmq_open(s->qb, &x->qb), 0);
    h_assert_rc(shmq_consumer_open(x->qb, "far", &x->c), 0);
    h_assert_rc(shmq_receive(x->c, &x->m, DELIVERY_WAIT_MS), 0);
    cr_assert(x->m.len == 7 && memcmp(x->m.data, "payload", 7) == 0, "wrong payload");
    x->n = 0;
    h_assert_rc(shmq_msg_headers(x->c, &x->m, x->got, 32, &x->n), 0);
}

/* Ack the crossed message, close B. */
static void crossed_done(struct crossed *x)
{
    h_assert_rc(shmq_ack(x->c, &x->m), 0);
    shmq_consumer_close(x->c);
    shmq_close(x->qb);
}

/* Headers cross the bridge both ways: a message published into A with headers arrives in B
 * with them, plus the bridge's Nats-Msg-Id (HOST/QUEUE/ID), Shmq-Id and Shmq-Host, which a
 * consumer on the far host can deduplicate by; a message's own header of one of those names
 * does not override the bridge's. */
Test(bridge, headers_cross_both_ways_with_the_bridge_ids)
{
    struct setup s;
    pid_t b = headers_bridge(&s, "hd", 1024, "hd.log");
    const char *trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    shmq_header_t h[] = {{"traceparent", 11, trace, strlen(trace)},
                         {"Shmq-Id", 7, "fake", 4},
                         {"reply-to", 8, "orders.replies", 14}};
    struct crossed x;
    cross(&s, h, 3, &x);
    const shmq_header_t *got = x.got;
    size_t n = x.n;
    uint64_t id = x.id;
    char want_id[32], want_msgid_tail[96];
    snprintf(want_id, sizeof want_id, "%llu", (unsigned long long)id);
    snprintf(want_msgid_tail, sizeof want_msgid_tail, "/%s/%llu", s.qa, (unsigned long long)id);
    const char *msgid = NULL, *shmqid = NULL, *host = NULL, *tp = NULL, *reply = NULL;
    int shmqids = 0;
    for (size_t i = 0; i < n && i < 32; i++) {
        if (strcmp(got[i].key, "Nats-Msg-Id") == 0)
            msgid = got[i].value;
        if (strcmp(got[i].key, "Shmq-Id") == 0)
            shmqid = got[i].value, shmqids++;
        if (strcmp(got[i].key, "Shmq-Host") == 0)
            host = got[i].value;
        if (strcmp(got[i].key, "traceparent") == 0)
            tp = got[i].value;
        if (strcmp(got[i].key, "reply-to") == 0)
            reply = got[i].value;
    }
    cr_assert(tp && strcmp(tp, trace) == 0, "traceparent did not cross: %s", tp ? tp : "none");
    cr_assert(reply && strcmp(reply, "orders.replies") == 0, "reply-to did not cross");
    cr_assert(msgid && strlen(msgid) > strlen(want_msgid_tail) &&
                  strcmp(msgid + strlen(msgid) - strlen(want_msgid_tail), want_msgid_tail) == 0,
              "Nats-Msg-Id %s, expected HOST%s", msgid ? msgid : "none", want_msgid_tail);
    cr_assert(shmqid && shmqids == 1 && strcmp(shmqid, want_id) == 0,
              "Shmq-Id %s (%d of them), expected the bridge's %s", shmqid ? shmqid : "none",
              shmqids, want_id);
    cr_assert(host && *host, "no Shmq-Host");
    crossed_done(&x);
    bridge_stop(b);
}

/* Headers that do not fit the local queue's limits are dropped, but the identity ones
 * (Nats-Msg-Id, Shmq-Id, Shmq-Host) are kept when they alone fit: before, every header went,
 * and a consumer on this host could no longer deduplicate (review7). */
Test(bridge, headers_over_the_limit_keep_the_identity_ones)
{
    struct setup s;
    pid_t b = headers_bridge(&s, "hl", 160, "hl.log");
    char big[301];
    memset(big, 'v', 300);
    big[300] = 0;
    shmq_header_t h[] = {{"big", 3, big, 300}};
    struct crossed x;
    cross(&s, h, 1, &x);
    const shmq_header_t *got = x.got;
    size_t n = x.n;
    int ids = 0, bigs = 0;
    for (size_t i = 0; i < n && i < 32; i++) {
        ids += strcmp(got[i].key, "Nats-Msg-Id") == 0 || strcmp(got[i].key, "Shmq-Id") == 0 ||
               strcmp(got[i].key, "Shmq-Host") == 0;
        bigs += strcmp(got[i].key, "big") == 0;
    }
    cr_assert_eq(ids, 3, "%d of the 3 identity headers kept (%zu headers)", ids, n);
    cr_assert_eq(bigs, 0, "the header over the limit crossed");
    cr_assert(wait_file_has(tmp_path("hl.log"), "event=headers_dropped", READY_WAIT_MS),
              "the dropped headers were not logged; see %s", tmp_path("hl.log"));
    crossed_done(&x);
    bridge_stop(b);
}
