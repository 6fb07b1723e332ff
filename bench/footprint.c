/*
 * footprint.c - what a queue costs in memory.
 *
 *   footprint [-q capacity] [-s max_msg_size] [-n msgs]
 *
 * 1. Shared memory: the size of /dev/shm/shmq.NAME (st_size, and st_blocks * 512 once every
 *    slot was touched) for the config, and for twice the capacity: the bytes one more slot
 *    costs = (size(2q) - size(q)) / q; the rest is the fixed part (header, registry, rings).
 * 2. Resident memory: a producer process publishes msgs messages of max_msg_size bytes and a
 *    consumer process receives and acks them (busy-poll); each then reads its own
 *    /proc/self/status: VmRSS, RssAnon, RssFile, RssShmem (the queue's pages it touched) and
 *    VmHWM. Durability none (no log mapping). One JSON line on stdout.
 */
#include "peers/common.h"

#include <sys/stat.h>

#include "shmq/shmq.h"

struct rss {
    long rss, anon, file, shmem, hwm;
};

struct shared {
    _Atomic uint32_t producer_done;
    struct rss prod, cons;
};

static void read_rss(struct rss *r)
{
    r->rss = r->anon = r->file = r->shmem = r->hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long *dst = !strncmp(line, "VmRSS:", 6)      ? &r->rss
                    : !strncmp(line, "RssAnon:", 8)  ? &r->anon
                    : !strncmp(line, "RssFile:", 8)  ? &r->file
                    : !strncmp(line, "RssShmem:", 9) ? &r->shmem
                    : !strncmp(line, "VmHWM:", 6)    ? &r->hwm
                                                     : NULL;
        if (dst)
            *dst = strtol(strchr(line, ':') + 1, NULL, 10);
    }
    fclose(f);
}

static int make(const char *name, uint32_t capacity, uint32_t size, struct stat *st)
{
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.max_msg_size = size;
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    if (rc) {
        fprintf(stderr, "footprint: create: %s\n", shmq_strerror(rc));
        return rc;
    }
    shmq_close(q);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
    return stat(path, st) ? -errno : 0;
}

int main(int argc, char **argv)
{
    uint32_t capacity = 4096, size = 64;
    uint64_t msgs = 100000;
    int ch;
    while ((ch = getopt(argc, argv, "q:s:n:")) != -1) {
        switch (ch) {
        case 'q': capacity = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 's': size = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'n': msgs = strtoull(optarg, NULL, 0); break;
        default: return 2;
        }
    }
    char name[64], name2[64];
    snprintf(name, sizeof name, "bench-fp.%d", (int)getpid());
    snprintf(name2, sizeof name2, "bench-fp2.%d", (int)getpid());
    struct stat st1, st2;
    if (make(name, capacity, size, &st1) || make(name2, 2 * capacity, size, &st2)) {
        shmq_unlink(name);
        return 2;
    }
    shmq_unlink(name2);

    struct shared *sh =
        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    fflush(stdout);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] != 0)
            continue;
        shmq_t *q;
        if (shmq_open(name, &q))
            _exit(2);
        unsigned char *buf = calloc(1, size);
        unsigned spins = 0;
        if (k == 0) {
            for (uint64_t i = 0; i < msgs; i++)
                while (shmq_publish(q, buf, size, NULL) == -EAGAIN)
                    backoff(&spins);
            read_rss(&sh->prod);
            atomic_store(&sh->producer_done, 1);
        } else {
            shmq_consumer_t *c;
            if (shmq_consumer_open(q, "footprint", &c))
                _exit(2);
            for (uint64_t i = 0; i < msgs;) {
                shmq_msg_t m;
                if (shmq_receive(c, &m, 0) == 0) {
                    shmq_ack(c, &m);
                    i++;
                    spins = 0;
                } else {
                    backoff(&spins);
                }
            }
            read_rss(&sh->cons);
            shmq_consumer_close(c);
        }
        shmq_close(q);
        _exit(0);
    }
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        int s;
        waitpid(kids[k], &s, 0);
        ok &= WIFEXITED(s) && WEXITSTATUS(s) == 0;
    }
    struct stat st3; /* after the traffic: every slot touched */
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/shmq.%s", name);
    stat(path, &st3);
    shmq_unlink(name);
    if (!ok) {
        fprintf(stderr, "footprint: a child failed\n");
        return 2;
    }
    double per_slot = (double)(st2.st_size - st1.st_size) / capacity;
    printf("{\"bench\":\"footprint\",\"capacity\":%u,\"max_msg_size\":%u,\"shm_bytes\":%lld,"
           "\"shm_bytes_2x\":%lld,\"bytes_per_slot\":%.1f,\"fixed_bytes\":%.0f,"
           "\"shm_resident_bytes\":%lld,\"msgs\":%llu,"
           "\"producer_rss_kib\":%ld,\"producer_anon_kib\":%ld,\"producer_file_kib\":%ld,"
           "\"producer_shmem_kib\":%ld,\"producer_hwm_kib\":%ld,"
           "\"consumer_rss_kib\":%ld,\"consumer_anon_kib\":%ld,\"consumer_file_kib\":%ld,"
           "\"consumer_shmem_kib\":%ld,\"consumer_hwm_kib\":%ld}\n",
           capacity, size, (long long)st1.st_size, (long long)st2.st_size, per_slot,
           (double)st1.st_size - per_slot * capacity, (long long)st3.st_blocks * 512,
           (unsigned long long)msgs, sh->prod.rss, sh->prod.anon, sh->prod.file, sh->prod.shmem,
           sh->prod.hwm, sh->cons.rss, sh->cons.anon, sh->cons.file, sh->cons.shmem, sh->cons.hwm);
    return 0;
}
