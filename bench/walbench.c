/*
 * walbench.c - figures of the write-ahead log that bench/tput does not give.
 *
 *   walbench recover [-n 1000000] [-s 64] [-q 1048576] [-f wal_file_size] [-r runs] [-c]
 *       Create a queue (PROCESS), publish n messages of s bytes and ack none, lose the segment
 *       (shmq_unlink_segment) and time shmq_recover(), r times over the same log (the log's
 *       pages in the page cache: warm; -c: written back and dropped from the cache before each
 *       run, posix_fadvise DONTNEED on the log files only: cold). Then time a shmq_open() that
 *       recovers, and check by draining that n messages came back.
 *   walbench steady [-n 5000000] [-s 64] [-f wal_file_size] [-m maintain_every]
 *       One process publishes, receives and acks n messages of s bytes, calling shmq_maintain()
 *       every m messages; samples the log directory (wal.* files, bytes on disk = st_blocks *
 *       512) at each maintenance, and at the end also counts the log files this process still
 *       holds open after they were deleted (their blocks are not freed until it lets go).
 *
 * The log goes to $SHMQ_STATE_DIR/NAME (set SHMQ_STATE_DIR). One line of JSON on stdout.
 * Uses only the public header.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmq/shmq.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "walbench: %s: %s (%d)\n", what, shmq_strerror(rc), rc);
    exit(2);
}

static char log_dir[512];

static void set_log_dir(const char *name)
{
    const char *s = getenv("SHMQ_STATE_DIR");
    if (!s || !*s) {
        fprintf(stderr, "walbench: set SHMQ_STATE_DIR (the log goes there)\n");
        exit(2);
    }
    snprintf(log_dir, sizeof log_dir, "%s/%s", s, name);
}

/* wal.* files of the queue's log directory and their bytes on disk. */
static uint32_t disk_use(uint64_t *bytes, uint64_t *apparent)
{
    DIR *d = opendir(log_dir);
    uint32_t n = 0;
    *bytes = 0;
    if (apparent)
        *apparent = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "wal.", 4) != 0)
            continue;
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", log_dir, e->d_name);
        if (stat(p, &st) == 0) {
            n++;
            *bytes += (uint64_t)st.st_blocks * 512u;
            if (apparent)
                *apparent += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return n;
}

/* Log files this process holds open although they were deleted, and their blocks. */
static uint32_t deleted_but_open(uint64_t *bytes)
{
    DIR *d = opendir("/proc/self/fd");
    uint32_t n = 0;
    *bytes = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[300], t[1024];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(p, t, sizeof t - 1);
        if (len <= 0)
            continue;
        t[len] = 0;
        if (!strstr(t, "/wal.") || !strstr(t, "(deleted)"))
            continue;
        struct stat st;
        if (stat(p, &st) == 0) {
            n++;
            *bytes += (uint64_t)st.st_blocks * 512u;
        }
    }
    if (d)
        closedir(d);
    return n;
}

struct opts {
    uint64_t n;
    uint32_t size, capacity, file_size, every, runs;
    int cold; /* drop the log files' pages from the page cache before each recovery */
};

/* Write back and drop the cached pages of the queue's log files (only those files: the rest of
 * the page cache is left alone), so recovery reads them from the disk. */
static void drop_log_cache(void)
{
    DIR *d = opendir(log_dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strncmp(e->d_name, "wal.", 4) != 0)
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", log_dir, e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    if (d)
        closedir(d);
}

static int cmd_recover(struct opts *o)
{
    char name[64];
    snprintf(name, sizeof name, "walbench-rec.%d", (int)getpid());
    set_log_dir(name);
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = o->capacity;
    cfg.max_msg_size = o->size;
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = o->file_size;
    shmq_t *q;
    int rc = shmq_create(name, &cfg, &q);
    if (rc)
        die("shmq_create", rc);
    char *payload = calloc(1, o->size);
    uint64_t t0 = now_ns();
    for (uint64_t k = 0; k < o->n; k++) {
        memcpy(payload, &k, o->size < 8 ? o->size : 8);
        if ((rc = shmq_publish(q, payload, o->size, NULL)) != 0)
            die("shmq_publish", rc);
    }
    double publish_s = (double)(now_ns() - t0) / 1e9;
    shmq_close(q);
    uint64_t bytes, apparent;
    uint32_t files = disk_use(&bytes, &apparent);

    double best = 1e9, worst = 0, sum = 0;
    shmq_recovery_report_t rep;
    memset(&rep, 0, sizeof rep);
    for (uint32_t r = 0; r < o->runs; r++) {
        shmq_unlink_segment(name);
        if (o->cold)
            drop_log_cache();
        t0 = now_ns();
        if ((rc = shmq_recover(name, NULL, &rep)) != 0)
            die("shmq_recover", rc);
        double s = (double)(now_ns() - t0) / 1e9;
        best = s < best ? s : best;
        worst = s > worst ? s : worst;
        sum += s;
        fprintf(stderr, "walbench: recover run %u: %.3f s, %llu restored\n", r + 1, s,
                (unsigned long long)rep.restored);
    }
    /* shmq_open of a lost segment recovers by itself */
    shmq_unlink_segment(name);
    t0 = now_ns();
    if ((rc = shmq_open(name, &q)) != 0)
        die("shmq_open (recovering)", rc);
    double open_s = (double)(now_ns() - t0) / 1e9;
    shmq_consumer_t *c;
    if ((rc = shmq_consumer_open(q, "walbench", &c)) != 0)
        die("shmq_consumer_open", rc);
    uint64_t back = 0;
    shmq_msg_t m;
    while (shmq_receive(c, &m, 0) == 0)
        back++; /* left in flight: the queue is deleted next */
    shmq_consumer_close(c);
    shmq_close(q);
    shmq_unlink(name);
    printf("{\"bench\":\"walbench-recover\",\"msgs\":%llu,\"size\":%u,\"capacity\":%u,"
           "\"wal_file_size\":%u,\"publish_s\":%.3f,\"log_files\":%u,\"log_bytes_disk\":%llu,"
           "\"log_bytes_apparent\":%llu,\"records\":%llu,\"restored\":%llu,\"runs\":%u,"
           "\"cache\":\"%s\",\"recover_s_min\":%.3f,\"recover_s_mean\":%.3f,\"recover_s_max\":%.3f,"
           "\"open_recovering_s\":%.3f,\"drained\":%llu,\"ok\":%s}\n",
           (unsigned long long)o->n, o->size, o->capacity, o->file_size, publish_s, files,
           (unsigned long long)bytes, (unsigned long long)apparent, (unsigned long long)rep.records,
           (unsigned long long)rep.restored, o->runs, o->cold ? "cold" : "warm", best,
           sum / o->runs, worst, open_s, (unsigned long long)back,
           back == o->n && rep.restored == o->n ? "true" : "false");
    return back == o->n ? 0 : 1;
}

static int cmd_steady(struct opts *o)
{
    char name[64];
    snprintf(name, sizeof name, "walbench-steady.%d", (int)getpid());
    set_log_dir(name);
    shmq_config_t cfg;
    shmq_config_init(&cfg);
    cfg.capacity = o->capacity;
    cfg.max_msg_size = o->size;
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    cfg.wal_file_size = o->file_size;
    shmq_t *q;
    shmq_consumer_t *c;
    int rc = shmq_create(name, &cfg, &q);
    if (rc)
        die("shmq_create", rc);
    if ((rc = shmq_consumer_open(q, "steady", &c)) != 0)
        die("shmq_consumer_open", rc);
    char *payload = calloc(1, o->size);
    uint32_t max_files = 0;
    uint64_t max_bytes = 0;
    uint64_t t0 = now_ns();
    for (uint64_t k = 0; k < o->n; k++) {
        memcpy(payload, &k, o->size < 8 ? o->size : 8);
        if ((rc = shmq_publish(q, payload, o->size, NULL)) != 0)
            die("shmq_publish", rc);
        shmq_msg_t m;
        if ((rc = shmq_receive(c, &m, 0)) != 0)
            die("shmq_receive", rc);
        if ((rc = shmq_ack(c, &m)) != 0)
            die("shmq_ack", rc);
        if (k % o->every == o->every - 1) {
            shmq_maintain(q, NULL);
            uint64_t b;
            uint32_t f = disk_use(&b, NULL);
            max_files = f > max_files ? f : max_files;
            max_bytes = b > max_bytes ? b : max_bytes;
        }
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    shmq_stats_t st;
    shmq_stats(q, &st);
    uint64_t bytes, held_bytes;
    uint32_t files = disk_use(&bytes, NULL);
    uint32_t held = deleted_but_open(&held_bytes);
    shmq_consumer_close(c);
    shmq_close(q);
    uint64_t held_after_close_bytes;
    uint32_t held_after_close = deleted_but_open(&held_after_close_bytes);
    shmq_unlink(name);
    printf("{\"bench\":\"walbench-steady\",\"msgs\":%llu,\"size\":%u,\"wal_file_size\":%u,"
           "\"maintain_every\":%u,\"seconds\":%.3f,\"wal_bytes_written\":%llu,"
           "\"max_files\":%u,\"max_bytes_disk\":%llu,\"end_files\":%u,\"end_bytes_disk\":%llu,"
           "\"deleted_files_still_open\":%u,\"deleted_bytes_still_held\":%llu,"
           "\"deleted_still_open_after_close\":%u,\"ok\":true}\n",
           (unsigned long long)o->n, o->size, o->file_size, o->every, secs,
           (unsigned long long)st.wal_bytes, max_files, (unsigned long long)max_bytes, files,
           (unsigned long long)bytes, held, (unsigned long long)held_bytes, held_after_close);
    (void)held_after_close_bytes;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "recover") && strcmp(argv[1], "steady"))) {
        fprintf(stderr, "usage: walbench recover|steady [-n msgs] [-s size] [-q capacity] "
                        "[-f wal_file_size] [-m maintain_every] [-r runs] [-c]\n");
        return 2;
    }
    int recover = !strcmp(argv[1], "recover");
    struct opts o = {.n = recover ? 1000000 : 5000000,
                     .size = 64,
                     .capacity = recover ? 1048576 : 1024,
                     .file_size = 64u << 20,
                     .every = 10000,
                     .runs = 3};
    int ch;
    optind = 2;
    while ((ch = getopt(argc, argv, "n:s:q:f:m:r:c")) != -1) {
        if (ch == 'c') {
            o.cold = 1;
            continue;
        }
        unsigned long long v = strtoull(optarg, NULL, 0);
        switch (ch) {
        case 'n': o.n = v; break;
        case 's': o.size = (uint32_t)v; break;
        case 'q': o.capacity = (uint32_t)v; break;
        case 'f': o.file_size = (uint32_t)v; break;
        case 'm': o.every = v ? (uint32_t)v : 1; break;
        case 'r': o.runs = v ? (uint32_t)v : 1; break;
        default: return 2;
        }
    }
    return recover ? cmd_recover(&o) : cmd_steady(&o);
}
