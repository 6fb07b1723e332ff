/*
 * recovery.c - how long a SIGKILLed consumer's messages take to come back.
 *
 *   recovery -q NAME [-w] [-k msgs] [-r runs] [-t timeout_ms]
 *
 * Creates queue NAME (durability none, default deadlines: ack 30 s, heartbeat 5 s, so that
 * what brings the messages back is the death of the consumer, not a deadline). Each run: the
 * parent publishes k messages; a child consumer takes all k without acking, says so, and
 * waits; the parent SIGKILLs it (SIGCHLD is ignored, so the child is reaped at once and leaves
 * no zombie behind) and, as a rescuing consumer busy-polling receive(.., 0), times from just
 * before kill() to the first and to the last of the k redeliveries (each flagged REDELIVERED,
 * acked). The rescuer's receive maintains the queue itself when no watchdog holds the lease
 * (cooperative: at most every 250 ms); with -w the runner has started shmq-watchdog on NAME
 * and the program first waits until a watchdog (priority 1) holds the maintenance lease.
 * One JSON line per run on stdout; the queue is unlinked at the end.
 */
#include "peers/common.h"

#include "shmq/shmq.h"

struct flag {
    _Atomic uint32_t taken;
};

static int victim(const char *name, unsigned k, struct flag *f)
{
    shmq_t *q;
    shmq_consumer_t *c;
    if (shmq_open(name, &q) || shmq_consumer_open(q, "victim", &c))
        return 2;
    unsigned got = 0;
    while (got < k) {
        shmq_msg_t m;
        int rc = shmq_receive(c, &m, 100);
        if (rc == 0)
            got++;
        else if (rc != -EAGAIN && rc != -ETIMEDOUT && rc != -EINTR)
            return 2;
    }
    atomic_store(&f->taken, 1);
    for (;;)
        pause(); /* SIGKILLed here, holding k messages */
}

int main(int argc, char **argv)
{
    const char *name = NULL;
    int watchdog = 0, ch;
    unsigned k = 16, runs = 5, timeout_ms = 10000;
    while ((ch = getopt(argc, argv, "q:wk:r:t:")) != -1) {
        switch (ch) {
        case 'q': name = optarg; break;
        case 'w': watchdog = 1; break;
        case 'k': k = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'r': runs = (unsigned)strtoul(optarg, NULL, 0); break;
        case 't': timeout_ms = (unsigned)strtoul(optarg, NULL, 0); break;
        default: name = NULL; optind = argc + 1;
        }
    }
    if (!name || optind != argc || k < 1) {
        fprintf(stderr, "usage: recovery -q NAME [-w] [-k msgs] [-r runs] [-t timeout_ms]\n");
        return 2;
    }
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = 1024;
    cfg.max_msg_size = 64;
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    if (rc) {
        fprintf(stderr, "recovery: create %s: %s\n", name, shmq_strerror(rc));
        return 2;
    }
    int status = 0;
    shmq_consumer_t *c = NULL;
    if (watchdog) { /* wait for the watchdog to hold the lease */
        uint64_t deadline = now_ns() + 20000000000ull;
        shmq_lease_info_t li;
        while (!(shmq_lease_get(q, &li) == 0 && li.held && li.priority == 1)) {
            if (now_ns() > deadline) {
                fprintf(stderr, "recovery: no watchdog holds the lease of %s after 20 s\n", name);
                status = 2;
                goto out;
            }
            usleep(1000);
        }
    }
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel: no zombie */
    struct flag *f =
        mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char payload[64] = "recovery";
    for (unsigned r = 0; r < runs && status == 0; r++) {
        for (unsigned i = 0; i < k; i++)
            if ((rc = shmq_publish(q, payload, sizeof payload, NULL)) != 0) {
                fprintf(stderr, "recovery: publish: %s\n", shmq_strerror(rc));
                status = 2;
                goto out;
            }
        atomic_store(&f->taken, 0);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
            _exit(victim(name, k, f));
        while (!atomic_load(&f->taken))
            usleep(100);
        usleep(50000); /* the consumer has been up a while, as a real one would be */
        if (!c && (rc = shmq_consumer_open(q, "rescuer", &c)) != 0) {
            fprintf(stderr, "recovery: consumer_open: %s\n", shmq_strerror(rc));
            status = 2;
            break;
        }
        uint64_t t0 = now_ns(), first = 0, last = 0;
        kill(pid, SIGKILL);
        unsigned back = 0, spins = 0;
        while (back < k) {
            shmq_msg_t m;
            rc = shmq_receive(c, &m, 0);
            if (rc == 0) {
                if (!(m.flags & SHMQ_MSG_REDELIVERED))
                    fprintf(stderr, "recovery: a message not flagged REDELIVERED\n");
                uint64_t t = now_ns();
                if (!back)
                    first = t;
                last = t;
                back++;
                shmq_ack(c, &m);
                spins = 0;
                continue;
            }
            if (rc != -EAGAIN) {
                fprintf(stderr, "recovery: receive: %s\n", shmq_strerror(rc));
                status = 2;
                break;
            }
            if (now_ns() - t0 > (uint64_t)timeout_ms * 1000000ull) {
                fprintf(stderr, "recovery: %u of %u back after %u ms\n", back, k, timeout_ms);
                status = 1;
                break;
            }
            backoff(&spins);
        }
        printf("{\"bench\":\"recovery\",\"watchdog\":%s,\"run\":%u,\"msgs\":%u,\"back\":%u,"
               "\"first_ms\":%.3f,\"all_ms\":%.3f}\n",
               watchdog ? "true" : "false", r, k, back, first ? (first - t0) / 1e6 : -1.0,
               last ? (last - t0) / 1e6 : -1.0);
        fflush(stdout);
    }
out:
    if (c)
        shmq_consumer_close(c);
    shmq_close(q);
    shmq_unlink(name);
    return status;
}
