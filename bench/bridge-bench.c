/*
 * bridge-bench.c - throughput of shmq-bridge against a plain JetStream publish loop from the
 * same client library (libnats), side by side in one run.
 *
 * It starts its own `nats-server -js` (loopback, free port, a temporary store directory, file
 * storage) and, for each payload size (64 B and 1 KiB by default) and each repetition, measures
 * in an interleaved order:
 *   plain      js_PublishAsync loop, MaxPending = the bridge's window, then
 *              js_PublishAsyncComplete: what the client library alone does
 *   plain+id   js_PublishMsgAsync with Nats-Msg-Id alone (unique): what the bridge's
 *              at-least-once guarantee needs at the least (JetStream drops a republish by it)
 *   plain+hdr  js_PublishMsgAsync with the five headers the bridge sets (Nats-Msg-Id unique,
 *              so the server's duplicate tracking works as for the bridge)
 *   out        shmq-bridge --out: N messages pre-filled into a local queue, then the bridge is
 *              started; from its first shmq ack to its N-th (every message acked locally only
 *              after JetStream's publish ack)
 *   round-trip shmq-bridge --out A:S --in STREAM:DUR:B: pre-filled A, timed at B's consumer
 *              (this program) from its first receive to its N-th
 * The stream is purged between measurements. Each row prints the median messages/s, the
 * min-max over the repetitions and the ratio of medians to `plain`, and the cpu time per
 * message (median) of the client (plain: this process during the loop; out: the bridge
 * process; round trip: the bridge and this process's receive loop) and of nats-server, over
 * the timed interval only (/proc/PID/stat, clock ticks): on a small machine they share the
 * cpus, so cpu per message is what decides the rate, and unlike the rate it hardly moves with
 * other load; then one JSON line per row
 * ({"bench":"bridge","row":...,"size":...,"median_msgs_per_s":...,"vs_plain":...}) for
 * bench/run and bench/report.py.
 *
 *   bridge-bench [-n MESSAGES] [-r REPS] [-w WINDOW] [-b BATCH] [-s SIZE[,SIZE]]
 * (-w: the out routes' --window and the plain loops' MaxPending; -b: the in route's --batch)
 *
 * The bridge binary is the build's (dirname(/proc/self/exe)/../shmq-bridge); nats-server from
 * PATH. Queue logs go to a temporary state directory (durability NONE: the figure is the
 * bridge's, not the log's).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <shmq/shmq.h>

#define REPS_MAX 21
#define SIZES_MAX 4

static char tmpdir[64];
static char queue_a[64], queue_b[64]; /* the local queues, unlinked by cleanup() */
static pid_t server_pid, bridge_pid;
static int port;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* cpu seconds used by this process, and by nats-server (clock ticks: 10 ms on most kernels) */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double proc_cpu(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char *p = strrchr(buf, ')'); /* the command may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The cpu seconds of the last measurement's timed interval: the client's and the server's. */
static double last_client_cpu, last_server_cpu;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void cleanup(void)
{
    if (bridge_pid > 0) {
        kill(bridge_pid, SIGKILL);
        waitpid(bridge_pid, NULL, 0);
        bridge_pid = 0;
    }
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
    if (queue_a[0])
        shmq_unlink(queue_a);
    if (queue_b[0])
        shmq_unlink(queue_b);
    queue_a[0] = queue_b[0] = 0;
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "bridge-bench: could not remove %s\n", tmpdir);
        tmpdir[0] = 0;
    }
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bridge-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup();
    exit(1);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        die("free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t spawn(const char *const *argv, const char *log)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void server_start(void)
{
    port = free_port();
    char p[16], store[128], log[128];
    snprintf(p, sizeof p, "%d", port);
    snprintf(store, sizeof store, "%s/store", tmpdir);
    snprintf(log, sizeof log, "%s/server.log", tmpdir);
    const char *argv[] = {"nats-server", "-js", "-a", "127.0.0.1", "-p", p, "-sd", store, NULL};
    server_pid = spawn(argv, log);
}

static natsConnection *connect_server(void)
{
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    natsConnection *nc = NULL;
    for (int i = 0; i < 500; i++) { /* up to 5 s for the server to listen */
        if (natsConnection_ConnectTo(&nc, url) == NATS_OK)
            return nc;
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid)
            die("nats-server exited at start (is it installed? see %s/server.log)", tmpdir);
        sleep_ms(10);
    }
    die("cannot connect to nats-server on port %d", port);
}

static const char *bridge_path(void)
{
    static char path[PATH_MAX];
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        die("readlink /proc/self/exe");
    self[n] = 0;
    snprintf(path, sizeof path, "%s/../shmq-bridge", dirname(self));
    if (access(path, X_OK))
        die("no bridge binary at %s", path);
    return path;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- the four measurements; each returns messages/s ---- */

/* headers: 0 none (js_PublishAsync), 1 Nats-Msg-Id alone, 5 the bridge's five */
static double plain(natsConnection *nc, int n, int size, int window, int headers)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = window;
    jo.PublishAsync.StallWait = 30000; /* a slow ack (the store syncing) is not an error */
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK)
        die("JetStream context");
    char *buf = calloc(1, (size_t)size);
    static uint64_t seq;
    double c0 = self_cpu(), s0 = proc_cpu(server_pid);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        natsStatus s;
        if (!headers) {
            s = js_PublishAsync(js, "bench.plain", buf, size, NULL);
        } else {
            natsMsg *m = NULL;
            char id[64], v[24];
            s = natsMsg_Create(&m, "bench.plain", NULL, buf, size);
            snprintf(id, sizeof id, "bench/plain/%" PRIu64, ++seq);
            snprintf(v, sizeof v, "%" PRIu64, seq);
            natsMsgHeader_Set(m, "Nats-Msg-Id", id);
            if (headers > 1) {
                natsMsgHeader_Set(m, "Shmq-Id", v);
                natsMsgHeader_Set(m, "Shmq-Attempt", "1");
                natsMsgHeader_Set(m, "Shmq-Host", "bench");
                natsMsgHeader_Set(m, "Shmq-Queue", "plain");
            }
            if (s == NATS_OK)
                s = js_PublishMsgAsync(js, &m, NULL);
            natsMsg_Destroy(m);
        }
        if (s != NATS_OK)
            die("publish: %s", natsStatus_GetText(s));
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    if (js_PublishAsyncComplete(js, &po) != NATS_OK)
        die("js_PublishAsyncComplete timed out");
    double dt = now_s() - t0;
    last_client_cpu = self_cpu() - c0;
    last_server_cpu = proc_cpu(server_pid) - s0;
    free(buf);
    jsCtx_Destroy(js);
    return n / dt;
}

static void fill(const char *queue, int n, int size)
{
    shmq_t *q;
    if (shmq_open(queue, &q))
        die("open %s", queue);
    char *buf = calloc(1, (size_t)size);
    for (int i = 0; i < n; i++) {
        memcpy(buf, &i, sizeof i);
        if (shmq_publish(q, buf, (size_t)size, NULL))
            die("prefill %s", queue);
    }
    free(buf);
    shmq_close(q);
}

static void bridge_start(const char *const *args)
{
    const char *argv[24] = {bridge_path()};
    int k = 1;
    for (; args[k - 1]; k++)
        argv[k] = args[k - 1];
    argv[k] = NULL;
    char log[128];
    snprintf(log, sizeof log, "%s/bridge.log", tmpdir);
    bridge_pid = spawn(argv, log);
}

static void bridge_stop(void)
{
    kill(bridge_pid, SIGTERM);
    int st = 0;
    waitpid(bridge_pid, &st, 0);
    bridge_pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("shmq-bridge failed (status 0x%x); see %s/bridge.log", st, tmpdir);
}

/* Die if the bridge exited (a config or format error): its log says why. */
static void bridge_check(void)
{
    int st;
    if (bridge_pid > 0 && waitpid(bridge_pid, &st, WNOHANG) == bridge_pid) {
        bridge_pid = 0;
        char cmd[160];
        snprintf(cmd, sizeof cmd, "tail -5 %s/bridge.log >&2", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        die("shmq-bridge exited early (status 0x%x)", st);
    }
}

static double bridged_out(const char *url, const char *qa, int n, int size, const char *window)
{
    fill(qa, n, size);
    shmq_t *q;
    shmq_stats_t st;
    if (shmq_open(qa, &q) || shmq_stats(q, &st))
        die("stats %s", qa);
    uint64_t base = st.acked;
    char route[128];
    snprintf(route, sizeof route, "%s:bench.out", qa);
    const char *args[] = {
        "--server", url, "--out", route, "--window", window, "--stats-interval-ms", "0", NULL};
    bridge_start(args);
    double b0 = 0, s0 = 0;
    /* shmq_stats scans every slot (O(capacity)): polled every millisecond it took about 7% of
     * the machine's cpu in this row alone (perf), cpu the bridge and nats-server share on a
     * small host. So every millisecond only until the first ack and for the last messages
     * (the larger of 5% and 4000: at 200k/s more than 20 ms away), where t0 and t1 are read;
     * every 20 ms in between. */
    uint64_t near = (uint64_t)n / 20 > 4000 ? (uint64_t)n / 20 : 4000;
    double t0 = 0, t1 = 0, deadline = now_s() + 120;
    for (;;) {
        if (shmq_stats(q, &st))
            die("stats");
        uint64_t done = st.acked - base;
        if (done >= 1 && t0 == 0) {
            t0 = now_s();
            b0 = proc_cpu(bridge_pid);
            s0 = proc_cpu(server_pid);
        }
        if (done >= (uint64_t)n) {
            t1 = now_s();
            last_client_cpu = (proc_cpu(bridge_pid) - b0) * n / (n - 1); /* per n, as the rest */
            last_server_cpu = (proc_cpu(server_pid) - s0) * n / (n - 1);
            break;
        }
        bridge_check();
        if (now_s() > deadline)
            die("out route: %" PRIu64 " of %d acked after 120 s", done, n);
        sleep_ms(done == 0 || done + near >= (uint64_t)n ? 1 : 20);
    }
    bridge_stop();
    shmq_close(q);
    return (n - 1) / (t1 - t0);
}

static const char *batch = "256"; /* the bridge's default */

static double round_trip(const char *url, const char *qa, const char *qb, int n, int size,
                         const char *window, int run)
{
    fill(qa, n, size);
    char out[128], in[160], durable[32];
    snprintf(out, sizeof out, "%s:bench.rt", qa);
    snprintf(durable, sizeof durable, "d%d", run);
    snprintf(in, sizeof in, "BENCHRT:%s:%s", durable, qb);
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(qb, &q) || shmq_consumer_open(q, "bench", &c))
        die("open %s", qb);
    const char *args[] = {"--server",
                          url,
                          "--out",
                          out,
                          "--in",
                          in,
                          "--window",
                          window,
                          "--batch",
                          batch,
                          "--stats-interval-ms",
                          "0",
                          NULL};
    bridge_start(args);
    double t0 = 0, deadline = now_s() + 120, b0 = 0, s0 = 0, c0 = 0;
    int got = 0;
    while (got < n) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 100);
        if (rc == 0) {
            if (got++ == 0) {
                t0 = now_s();
                b0 = proc_cpu(bridge_pid);
                s0 = proc_cpu(server_pid);
                c0 = self_cpu();
            }
            shmq_ack(c, &m);
        } else if (rc != -ETIMEDOUT && rc != -EAGAIN && rc != -EINTR) {
            die("receive B: %s", shmq_strerror(rc));
        }
        if (rc != 0)
            bridge_check();
        if (now_s() > deadline)
            die("round trip: %d of %d after 120 s", got, n);
    }
    double dt = now_s() - t0;
    last_client_cpu = (proc_cpu(bridge_pid) - b0 + self_cpu() - c0) * n / (n - 1);
    last_server_cpu = (proc_cpu(server_pid) - s0) * n / (n - 1);
    bridge_stop();
    shmq_consumer_close(c);
    shmq_close(q);
    return (n - 1) / dt;
}

static void make_queue(const char *name, uint32_t capacity)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.max_msg_size = 1024;
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_unlink(name);
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    if (rc)
        die("create %s: %s", name, shmq_strerror(rc));
    shmq_close(q);
}

static void add_stream(jsCtx *js, const char *name, const char *subject)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = 120LL * 1000000000;
    jsErrCode jerr = 0;
    if (js_AddStream(NULL, js, &cfg, NULL, &jerr) != NATS_OK)
        die("add stream %s: error %d", name, (int)jerr);
}

int main(int argc, char **argv)
{
    int n = 50000, reps = 5, sizes[SIZES_MAX] = {64, 1024}, nsizes = 2;
    const char *window = "256";
    int c;
    while ((c = getopt(argc, argv, "n:r:w:b:s:h")) != -1) {
        switch (c) {
        case 'n': n = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'w': window = optarg; break;
        case 'b': batch = optarg; break;
        case 's': {
            nsizes = 0;
            for (char *t = strtok(optarg, ","); t && nsizes < SIZES_MAX; t = strtok(NULL, ","))
                sizes[nsizes++] = atoi(t);
            break;
        }
        default:
            fprintf(stderr,
                    "usage: %s [-n MESSAGES] [-r REPS] [-w WINDOW] [-b BATCH] [-s SIZE[,SIZE]]\n",
                    argv[0]);
            return c == 'h' ? 0 : 2;
        }
    }
    if (n < 2 || n > (int)SHMQ_CAPACITY_MAX || reps < 1 || reps > REPS_MAX)
        die("bad -n or -r");
    for (int i = 0; i < nsizes; i++)
        if (sizes[i] < 4 || sizes[i] > 1024)
            die("sizes are 4..1024 bytes");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bridge-bench-XXXXXX");
    if (!mkdtemp(tmpdir))
        die("mkdtemp: %s", strerror(errno));
    char state[128];
    snprintf(state, sizeof state, "%s/state", tmpdir);
    mkdir(state, 0700);
    setenv("SHMQ_STATE_DIR", state, 1);
    signal(SIGPIPE, SIG_IGN);

    server_start();
    natsConnection *nc = connect_server();
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
        die("JetStream");
    add_stream(js, "BENCHPLAIN", "bench.plain");
    add_stream(js, "BENCHOUT", "bench.out");
    add_stream(js, "BENCHRT", "bench.rt");

    snprintf(queue_a, sizeof queue_a, "bench-bridge-a-%d", (int)getpid());
    snprintf(queue_b, sizeof queue_b, "bench-bridge-b-%d", (int)getpid());
    uint32_t cap = 1;
    while (cap < (uint32_t)n)
        cap <<= 1;
    make_queue(queue_a, cap);
    make_queue(queue_b, cap);

    enum { PLAIN, PLAIN_ID, PLAIN_HDR, OUT, RT, ROWS };
    static const char *const names[ROWS] = {"plain js_PublishAsync", "plain + Nats-Msg-Id",
                                            "plain + bridge headers", "shmq-bridge out",
                                            "shmq-bridge round trip"};
    static const char *const keys[ROWS] = {"plain", "plain_id", "plain_hdr", "out", "round_trip"};
    double med_all[SIZES_MAX][ROWS], lo_all[SIZES_MAX][ROWS], hi_all[SIZES_MAX][ROWS];
    static double r[SIZES_MAX][ROWS][REPS_MAX], cc[SIZES_MAX][ROWS][REPS_MAX],
        sc[SIZES_MAX][ROWS][REPS_MAX];
    double cc_med[SIZES_MAX][ROWS], sc_med[SIZES_MAX][ROWS];
    const char *streams[ROWS] = {"BENCHPLAIN", "BENCHPLAIN", "BENCHPLAIN", "BENCHOUT", "BENCHRT"};
    int run = 0;
    for (int rep = 0; rep < reps; rep++) {
        for (int si = 0; si < nsizes; si++) {
            for (int row = 0; row < ROWS; row++) {
                int size = sizes[si];
                double v = row == PLAIN       ? plain(nc, n, size, atoi(window), 0)
                           : row == PLAIN_ID  ? plain(nc, n, size, atoi(window), 1)
                           : row == PLAIN_HDR ? plain(nc, n, size, atoi(window), 5)
                           : row == OUT       ? bridged_out(url, queue_a, n, size, window)
                                        : round_trip(url, queue_a, queue_b, n, size, window, run++);
                r[si][row][rep] = v;
                cc[si][row][rep] = last_client_cpu / n * 1e6; /* µs per message */
                sc[si][row][rep] = last_server_cpu / n * 1e6;
                js_PurgeStream(js, streams[row], NULL, NULL);
                fprintf(stderr, "rep %d size %d %-24s %10.0f msg/s\n", rep + 1, size, names[row],
                        v);
            }
        }
    }

    printf("# bridge-bench: %d messages per measurement, %d repetitions (interleaved), window "
           "%s, file storage, nats-server on loopback, 1 stream per row\n",
           n, reps, window);
    printf("%-26s %6s %12s %25s %8s %10s %10s\n", "row", "bytes", "median/s", "min-max/s",
           "vs plain", "client us", "server us");
    for (int si = 0; si < nsizes; si++) {
        double med[ROWS];
        for (int row = 0; row < ROWS; row++) {
            double *v = r[si][row];
            qsort(v, (size_t)reps, sizeof *v, cmp_double);
            med[row] = reps % 2 ? v[reps / 2] : (v[reps / 2 - 1] + v[reps / 2]) / 2;
            double *cv = cc[si][row], *sv = sc[si][row];
            qsort(cv, (size_t)reps, sizeof *cv, cmp_double);
            qsort(sv, (size_t)reps, sizeof *sv, cmp_double);
            cc_med[si][row] = reps % 2 ? cv[reps / 2] : (cv[reps / 2 - 1] + cv[reps / 2]) / 2;
            sc_med[si][row] = reps % 2 ? sv[reps / 2] : (sv[reps / 2 - 1] + sv[reps / 2]) / 2;
            char range[64];
            snprintf(range, sizeof range, "%.0f-%.0f", v[0], v[reps - 1]);
            printf("%-26s %6d %12.0f %25s %7.2fx %10.1f %10.1f\n", names[row], sizes[si], med[row],
                   range, med[row] / med[PLAIN], cc_med[si][row], sc_med[si][row]);
            med_all[si][row] = med[row];
            lo_all[si][row] = v[0];
            hi_all[si][row] = v[reps - 1];
        }
    }
    for (int si = 0; si < nsizes; si++)
        for (int row = 0; row < ROWS; row++)
            printf("{\"bench\":\"bridge\",\"row\":\"%s\",\"size\":%d,\"msgs\":%d,\"reps\":%d,"
                   "\"window\":%s,\"median_msgs_per_s\":%.0f,\"min_msgs_per_s\":%.0f,"
                   "\"max_msgs_per_s\":%.0f,\"vs_plain\":%.4f,\"client_cpu_us\":%.2f,"
                   "\"server_cpu_us\":%.2f}\n",
                   keys[row], sizes[si], n, reps, window, med_all[si][row], lo_all[si][row],
                   hi_all[si][row], med_all[si][row] / med_all[si][PLAIN], cc_med[si][row],
                   sc_med[si][row]);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    cleanup();
    return 0;
}
