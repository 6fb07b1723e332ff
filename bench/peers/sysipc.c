/*
 * sysipc.c - the kernel's IPC as peers: AF_UNIX SOCK_SEQPACKET, pipes, POSIX message queues.
 *
 *   sysipc lat -t unix|pipe|mq [-m poll|block] [-s size] [-n samples] [-w warmup]
 *       Ping-pong between two processes (common.h lat_run: echo on cpu 1, pinger on cpu 0),
 *       one-way = RTT / 2. poll: non-blocking receive in a loop (MSG_DONTWAIT, O_NONBLOCK);
 *       block: the plain blocking call (the waiting core sleeps; its wake-up is in the figure).
 *   sysipc tput -t unix [-p P] [-c C] [-s size] [-n msgs] [-a] [-T cap_s]
 *       P producers send on one end of a SOCK_SEQPACKET socketpair, C consumers (C == P)
 *       receive from the other (blocking calls): an MPMC queue in the kernel, each datagram
 *       taken by one consumer. Producer i sends its share, then one end marker; a consumer
 *       stops at the marker it takes (with P == C the last marker follows every message).
 * One JSON line on stdout.
 */
#include "common.h"

#include <fcntl.h>
#include <mqueue.h>
#include <sys/socket.h>

enum kind { UNIX_SP, PIPE, MQ };
static enum kind kind;
static int block;
static unsigned size = 64, total;
static int a_fd[2], b_fd[2]; /* unix: a socketpair in a_fd; pipe: a ping pipe, b pong pipe */
static mqd_t mq_a, mq_b;
static char mq_name_a[64], mq_name_b[64];
static unsigned char *buf;

/* Receive exactly size bytes from fd (pipe: a stream) or one datagram / message. */
static int recv_one(int which)
{
    for (;;) {
        ssize_t r;
        if (kind == UNIX_SP) {
            r = recv(a_fd[which], buf, size, block ? 0 : MSG_DONTWAIT);
        } else if (kind == PIPE) {
            int fd = which == 0 ? b_fd[0] : a_fd[0];
            size_t got = 0;
            while (got < size) {
                r = read(fd, buf + got, size - got);
                if (r > 0) {
                    got += (size_t)r;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                    cpu_relax();
                    continue;
                }
                return -1;
            }
            return 0;
        } else {
            r = mq_receive(which == 0 ? mq_b : mq_a, (char *)buf, size, NULL);
        }
        if (r == (ssize_t)size)
            return 0;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            cpu_relax();
            continue;
        }
        perror("sysipc: receive");
        return -1;
    }
}

static int send_one(int which)
{
    for (;;) {
        ssize_t r;
        if (kind == UNIX_SP)
            r = send(a_fd[which], buf, size, 0);
        else if (kind == PIPE)
            r = write(which == 0 ? a_fd[1] : b_fd[1], buf, size);
        else
            r = mq_send(which == 0 ? mq_a : mq_b, (const char *)buf, size, 0) == 0 ? (ssize_t)size
                                                                                   : -1;
        if (r == (ssize_t)size)
            return 0;
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        perror("sysipc: send");
        return -1;
    }
}

static int echo(void *arg)
{
    for (unsigned i = 0; i < total; i++)
        if (recv_one(1) || send_one(1))
            return 2;
    return 0;
}

static int ping(void *arg) { return send_one(0) || recv_one(0) ? -1 : 0; }

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int lat_main(unsigned n, unsigned warm)
{
    total = warm + n;
    if (kind == UNIX_SP) {
        if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, a_fd))
            return perror("socketpair"), 2;
    } else if (kind == PIPE) {
        if (pipe(a_fd) || pipe(b_fd))
            return perror("pipe"), 2;
        if (!block && (set_nonblock(a_fd[0]) || set_nonblock(b_fd[0])))
            return 2;
    } else {
        struct mq_attr at = {.mq_maxmsg = 10, .mq_msgsize = size};
        int fl = O_CREAT | O_EXCL | O_RDWR | (block ? 0 : O_NONBLOCK);
        snprintf(mq_name_a, sizeof mq_name_a, "/bench-mq-a.%d", (int)getpid());
        snprintf(mq_name_b, sizeof mq_name_b, "/bench-mq-b.%d", (int)getpid());
        mq_a = mq_open(mq_name_a, fl, 0600, &at);
        mq_b = mq_open(mq_name_b, fl, 0600, &at);
        if (mq_a == (mqd_t)-1 || mq_b == (mqd_t)-1) {
            perror("mq_open");
            mq_unlink(mq_name_a);
            return 2;
        }
        mq_unlink(mq_name_a); /* the descriptors keep them; nothing left behind */
        mq_unlink(mq_name_b);
    }
    struct hist *h = lat_run(warm, n, echo, ping, NULL);
    if (!h)
        return 2;
    static const char *const names[] = {"af_unix", "pipe", "posix_mq"};
    lat_print(names[kind], block ? "block" : "poll", size, NULL, h);
    return 0;
}

/* ---- throughput: AF_UNIX SOCK_SEQPACKET, MPMC over one socketpair ---- */
static int tput_producer(unsigned i, void *arg)
{
    unsigned char *m = calloc(1, size);
    uint64_t n = tput_share(i);
    tput_wait_start();
    for (uint64_t s = 0; s < n; s++) {
        if (atomic_load_explicit(&tctl->stop, memory_order_relaxed))
            break;
        m[0] = 1;
        memcpy(m + 8, &s, 8);
        if (send(a_fd[0], m, size, 0) != (ssize_t)size && errno != EINTR)
            return perror("send"), 2;
    }
    tput_producer_finished();
    m[0] = 0; /* the end marker */
    if (send(a_fd[0], m, size, 0) != (ssize_t)size)
        return perror("send"), 2;
    return 0;
}

static int tput_consumer(unsigned j, void *arg)
{
    unsigned char *m = calloc(1, size);
    struct timeval tv = {.tv_usec = 100000}; /* re-check the stop flag (time cap) */
    setsockopt(a_fd[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    _Atomic uint64_t *count = &tctl->w[tctl->producers + j].count;
    uint64_t n = 0;
    tput_wait_start();
    for (;;) {
        ssize_t r = recv(a_fd[1], m, size, 0);
        if (r == (ssize_t)size) {
            if (m[0] == 0) {
                tput_consumer_done();
                return 0;
            }
            atomic_store_explicit(count, ++n, memory_order_relaxed);
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (atomic_load_explicit(&tctl->stop, memory_order_relaxed))
                return 0;
            continue;
        }
        perror("recv");
        return 2;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "lat") && strcmp(argv[1], "tput"))) {
        fprintf(stderr, "usage: sysipc lat|tput -t unix|pipe|mq [options] (see the source)\n");
        return 2;
    }
    int is_lat = !strcmp(argv[1], "lat"), pin = 0;
    unsigned n = 0, warm = 1000, P = 1, C = 1;
    double cap = 60;
    int ch;
    optind = 2;
    while ((ch = getopt(argc, argv, "t:m:s:n:w:p:c:aT:")) != -1) {
        switch (ch) {
        case 't':
            kind = !strcmp(optarg, "unix") ? UNIX_SP : !strcmp(optarg, "pipe") ? PIPE : MQ;
            if (kind == MQ && strcmp(optarg, "mq"))
                return 2;
            break;
        case 'm': block = !strcmp(optarg, "block"); break;
        case 's': size = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'w': warm = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'p': P = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'c': C = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'a': pin = 1; break;
        case 'T': cap = atof(optarg); break;
        default: return 2;
        }
    }
    if (size < 16)
        return 2;
    buf = calloc(1, size);
    if (is_lat)
        return lat_main(n ? n : 100000, warm);
    if (kind != UNIX_SP || P != C || P < 1) {
        fprintf(stderr, "sysipc tput: -t unix with -p P -c P\n");
        return 2;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, a_fd))
        return perror("socketpair"), 2;
    uint64_t msgs = n ? n : 1000000, taken;
    double secs;
    int capped;
    int rc =
        tput_run(P, C, msgs, pin, cap, tput_producer, tput_consumer, NULL, &secs, &taken, &capped);
    if (rc)
        return rc;
    tput_print("af_unix", "seqpacket", P, C, size, pin, msgs, secs, taken, capped);
    return 0;
}
