/*
 * test_walprep.c - log files prepared ahead of the writers (wal.c, prepare_file; docs/DESIGN.md,
 * "Log files prepared ahead"): maintenance makes the next files complete, allocated and
 * pre-touched before the writers reach them, so the publish path neither makes a file nor
 * touches a page never written; a preparation that fails or dies half-way costs nothing until a
 * writer needs the file, and then the writer's own try decides, as without preparation.
 */
#include "helpers.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "io.h"

TestSuite(walprep, .fini = h_cleanup, .timeout = 240);

static void log_dir_of(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", h_state_dir_path(), name);
}

static void wal_path(const char *name, uint64_t seq, char *buf, size_t size)
{
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    snprintf(buf, size, "%s/wal.%010llu", dir, (unsigned long long)seq);
}

static bool wal_exists(const char *name, uint64_t seq)
{
    char path[600];
    wal_path(name, seq, path, sizeof path);
    return access(path, F_OK) == 0;
}

/* wal.*.tmp.* files left in the log directory. */
static int tmp_files(const char *name)
{
    char dir[512];
    log_dir_of(name, dir, sizeof dir);
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strncmp(e->d_name, "wal.", 4) == 0 && strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return n;
}

static shmq_config_t prep_config(uint32_t capacity, uint32_t msg, uint32_t file_size)
{
    shmq_config_t cfg = h_log_config(capacity);
    cfg.max_msg_size = msg;
    cfg.wal_file_size = file_size;
    return cfg;
}

/* Receive and ack everything ready; how many. */
static int drain(shmq_consumer_t *c)
{
    shmq_msg_t m;
    int n = 0;
    while (shmq_receive(c, &m, 0) == 0) {
        h_assert_rc(shmq_ack(c, &m), 0);
        n++;
    }
    return n;
}

/* How many of the pages of log file seq are in the page cache (mincore), of how many. */
static size_t resident_pages(const char *name, uint64_t seq, uint64_t file_size, size_t *pages)
{
    char path[600];
    wal_path(name, seq, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    cr_assert_eq((uint64_t)st.st_size, file_size);
    cr_assert_geq((uint64_t)st.st_blocks * 512u, file_size, "not fully allocated");
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    cr_assert(base != MAP_FAILED, "mmap: %s", strerror(errno));
    size_t n = (size_t)st.st_size / 4096;
    unsigned char *vec = calloc(n, 1);
    cr_assert(mincore(base, (size_t)st.st_size, vec) == 0, "mincore: %s", strerror(errno));
    size_t resident = 0;
    for (size_t i = 0; i < n; i++)
        resident += vec[i] & 1;
    free(vec);
    munmap(base, (size_t)st.st_size);
    close(fd);
    *pages = n;
    return resident;
}

/* The pages of a file a full pass prepared are in the page cache before any writer touched them
 * (written zeros, not an fallocate's unwritten extents, whose first store costs 10-12 us a
 * page); a cooperative pass (inside a consumer's receive) prepares it allocated only, not to
 * stall that call writing 64 MiB. */
Test(walprep, the_next_file_is_made_and_pre_touched)
{
    const char *name = h_qname("pretouch");
    shmq_config_t cfg = prep_config(64, 64, 1u << 20);
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0); /* wal.0, made by the writer */
    cr_assert(!wal_exists(name, 1), "wal.1 exists before any maintenance pass");
    h_assert_rc(shmq_maintain_if_unwatched(q, 1000), 1); /* cooperative */
    cr_assert(wal_exists(name, 1), "a cooperative pass did not prepare wal.1");
    size_t pages, resident = resident_pages(name, 1, cfg.wal_file_size, &pages);
    cr_assert_leq(resident, pages / 10,
                  "%zu of %zu pages of the file a cooperative pass prepared are in the page "
                  "cache: it wrote them (a stall of that consumer's receive)",
                  resident, pages);
    h_assert_rc(shmq_close(q), 0);
    name = h_qname("pretouch2");
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_maintain(q, NULL), 0); /* a full pass */
    cr_assert(wal_exists(name, 1), "maintenance did not prepare wal.1");
    resident = resident_pages(name, 1, cfg.wal_file_size, &pages);
    cr_assert_geq(resident, pages * 9 / 10,
                  "%zu of %zu pages of the prepared file are in the page cache: not pre-touched",
                  resident, pages);
    h_assert_rc(shmq_close(q), 0);
}

static long faults(void)
{
    struct rusage ru;
    cr_assert(getrusage(RUSAGE_SELF, &ru) == 0);
    return ru.ru_minflt + ru.ru_majflt;
}

/*
 * A process that writes the log and maintains it takes no page fault in its publish and ack
 * calls once it writes into files it prepared: the pages are in the page cache (pre-touch) and
 * its own mapping of them was prefaulted for writing (MADV_POPULATE_WRITE). 1 MiB files, 64-byte
 * messages (144 bytes of log each): about 2 files counted, after the writer left wal.0 and wal.1.
 * Before, every page of the log cost the writer a fault (one per 4 KiB written); with the
 * pre-touch alone, one every 2-3 pages (cheap ones).
 */
Test(walprep, a_maintaining_writer_takes_no_page_fault)
{
    const char *name = h_qname("nofault");
    shmq_config_t cfg = prep_config(256, 64, 1u << 20);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    char payload[64];
    memset(payload, 4, sizeof payload);
    long counted = 0, msgs = 0;
    for (int i = 0; i < 30000; i++) {
        bool count = wal_exists(name, 2) && i % 1000 != 0; /* past wal.0 and wal.1 */
        long f0 = faults();
        h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0);
        long f1 = faults();
        shmq_msg_t m;
        h_assert_rc(shmq_receive(c, &m, 0), 0); /* may maintain: not counted */
        long f2 = faults();
        h_assert_rc(shmq_ack(c, &m), 0);
        if (count) {
            counted += (f1 - f0) + (faults() - f2);
            msgs++;
        }
        if (i % 1000 == 999)
            h_assert_rc(shmq_maintain(q, NULL), 0);
    }
    cr_assert_geq(msgs, 10000, "only %ld messages counted", msgs);
    long allowed = 8;
#if defined(__SANITIZE_ADDRESS__)
    /* ASan checks each store against its shadow (one byte per 8): the first store into each
     * 32 KiB of log touches a fresh shadow page, a fault that is the sanitizer's, not the log's
     * (one per 8 log pages; without the prefault there is one per log page besides) */
    allowed += msgs * 144 / (32 * 1024) + 1;
#endif
    cr_assert_leq(counted, allowed,
                  "%ld page faults in %ld publish+ack calls (%ld KiB of log): the writer's "
                  "files were not prepared and prefaulted ahead of it",
                  counted, msgs, msgs * 144 / 1024);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

#ifdef SHMQ_CRASH_POINTS
/*
 * Steady state: maintenance every ~2 files' worth of messages; once it has seen the log move
 * that fast, the publish and ack calls make no log file (no link()) however many files they
 * fill: the files are there ahead of them. Without preparing ahead more than the one next file,
 * the writers made about one file a round.
 */
Test(walprep, writers_make_no_file_in_steady_state)
{
    const char *name = h_qname("steady");
    shmq_config_t cfg = prep_config(256, 1024, 64u << 10);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    uint8_t payload[1000];
    memset(payload, 5, sizeof payload);
    uint64_t made = 0, made_late = 0;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 120; i++) { /* ~ 2 files of PUBLISH + ACK records */
            uint64_t before = io_fault_calls(IO_LINK);
            h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0);
            shmq_msg_t m;
            uint64_t mid = io_fault_calls(IO_LINK);
            h_assert_rc(shmq_receive(c, &m, 0), 0); /* may maintain: not counted */
            uint64_t mid2 = io_fault_calls(IO_LINK);
            h_assert_rc(shmq_ack(c, &m), 0);
            uint64_t n = (mid - before) + (io_fault_calls(IO_LINK) - mid2);
            made += n;
            if (round >= 3)
                made_late += n;
        }
        h_assert_rc(shmq_maintain(q, NULL), 0);
    }
    cr_assert_eq(made_late, 0,
                 "the publish and ack calls made %llu log files after the warm-up (%llu in all): "
                 "the files were not prepared ahead of them",
                 (unsigned long long)made_late, (unsigned long long)made);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

/*
 * A preparation that fails (no space for the allocation, or the pre-touch's writes failing) is
 * no log failure: nothing counted, the pass succeeds, publishes go on. A file whose zeros could
 * not be written is still linked (allocated, only not pre-touched). When a writer needs a file
 * nobody could prepare, it makes it itself, and gets the error of that try if it fails too
 * (what a publish got before files were prepared; here -EFBIG: RLIMIT_FSIZE below the file).
 */
Test(walprep, a_failed_preparation_fails_no_publish)
{
    const char *name = h_qname("prepfail");
    shmq_config_t cfg = prep_config(256, 1024, 64u << 10);
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    uint8_t payload[1000];
    memset(payload, 6, sizeof payload);
    h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0); /* wal.0 */
    /* the pre-touch fails: the file is there all the same */
    uint64_t pw = io_fault_calls(IO_PWRITE);
    h_assert_rc(io_fault_arm(IO_PWRITE, 2, EIO), 0); /* 1: the header, 2: the zeros */
    h_assert_rc(shmq_maintain(q, NULL), 0);
    cr_assert_eq(io_fault_calls(IO_PWRITE) - pw, 2, "the preparation wrote %llu times, not 2",
                 (unsigned long long)(io_fault_calls(IO_PWRITE) - pw));
    io_fault_disarm_all();
    cr_assert(wal_exists(name, 1), "a file whose pre-touch failed was not linked");
    shmq_stats_t st;
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.wal_errors, 0, "a failed pre-touch counted as a log error");
    /* fill wal.0 and wal.1: then no file 2 can be prepared (no space) */
    for (int i = 0; i < 110; i++)
        h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0);
    cr_assert(!wal_exists(name, 2), "wal.2 made before it was asked for");
    /* no file can be made from here on: it would grow past RLIMIT_FSIZE (-EFBIG, io.h) */
    struct rlimit fsz, small;
    cr_assert(getrlimit(RLIMIT_FSIZE, &fsz) == 0);
    small = fsz;
    small.rlim_cur = 32u << 10;
    cr_assert(setrlimit(RLIMIT_FSIZE, &small) == 0, "setrlimit: %s", strerror(errno));
    h_assert_rc(shmq_maintain(q, NULL), 0);
    cr_assert(!wal_exists(name, 2), "a preparation whose file could not grow linked its file");
    cr_assert_eq(tmp_files(name), 0, "a failed preparation left its temporary file");
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_eq(st.wal_errors, 0, "a failed preparation counted as a log error");
    cr_assert_eq(st.wal_last_error, 0);
    /* the writer that needs wal.2 makes it itself; its own failure is the publish's error */
    int rc = 0, n = 0;
    for (; n < 100 && (rc = shmq_publish(q, payload, sizeof payload, NULL)) == 0; n++) {
    }
    cr_assert(setrlimit(RLIMIT_FSIZE, &fsz) == 0, "setrlimit: %s", strerror(errno));
    cr_assert_eq(rc, -EFBIG, "the publish that needed the unprepared file got %d (%s) after %d",
                 rc, shmq_strerror(rc), n);
    h_assert_rc(shmq_stats(q, &st), 0);
    cr_assert_geq(st.wal_errors, 1, "the writer's failure was not counted");
    /* and once space is back, publishes go on (the writer makes wal.2) */
    h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0);
    cr_assert(wal_exists(name, 2));
    int got = drain(c);
    cr_assert_eq(got, 1 + 110 + n + 1, "delivered %d of %d", got, 1 + 110 + n + 1);
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

static const char *kp_name;

/* A maintainer killed (or stopped) inside its preparation of wal.1: allocated and pre-touched
 * under its temporary name, not linked. */
static int dying_preparer(void *arg)
{
    setenv("SHMQ_CRASH_AT", "prepare_before_link", 1);
    if (arg)
        setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    if (shmq_open(kp_name, &q))
        return 10;
    shmq_maintain(q, NULL);
    return arg ? 0 : 11; /* killed: not reached; stopped: continued, its pass done */
}

/*
 * A preparer killed half-way leaves a temporary file and no wal.N: the writer that gets there
 * makes wal.N itself (no error, nothing lost); a later pass that deletes files removes the dead
 * preparer's temporary file. A preparer stopped there and continued after the writer made the
 * file finds it made (its link fails with EEXIST) and uses it: one file, the writer's records
 * in it.
 */
static void preparer_dies(bool stop)
{
    kp_name = h_qname(stop ? "prepstop" : "prepkill");
    /* forked before this process passes a crash point: a child reads SHMQ_CRASH_AT at its first */
    pid_t k = h_fork_gated(dying_preparer, stop ? (void *)1 : NULL);
    shmq_config_t cfg = prep_config(512, 1024, 64u << 10);
    cfg.log_retention_bytes = 0;
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(kp_name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    uint8_t payload[1000];
    memset(payload, 7, sizeof payload);
    h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0); /* wal.0 */
    h_open_gate(k);
    int st = 0;
    if (stop) {
        cr_assert_eq(h_wait_stopped(k, 30000, &st), 0, "the preparer did not stop");
    } else {
        cr_assert_eq(h_waitpid(k, 30000, 0, &st), 0, "the preparer did not die");
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the preparer was not killed: %d",
                  st);
    }
    cr_assert(!wal_exists(kp_name, 1), "a preparer killed before its link left wal.1");
    cr_assert_eq(tmp_files(kp_name), 1, "no temporary file of the preparer");
    int sent = 1;
    for (; sent < 300; sent++) /* through wal.1 into wal.2..4 */
        h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0);
    cr_assert(wal_exists(kp_name, 1), "the writer did not make wal.1");
    if (stop) {
        h_assert_rc(kill(k, SIGCONT), 0);
        h_assert_child_ok(k, 30000, "the continued preparer");
    }
    int got = drain(c);
    cr_assert_eq(got, sent, "delivered %d of %d", got, sent);
    /* a pass that deletes files removes a dead preparer's temporary file */
    for (int i = 0; i < 3; i++)
        cr_assert_geq(shmq_maintain(q, NULL), 0);
    cr_assert_eq(tmp_files(kp_name), 0, "the preparer's temporary file stayed");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
    /* and the log says the same: nothing lost, nothing twice, after a rebuild */
    h_assert_rc(shmq_unlink_segment(kp_name), 0);
    h_assert_rc(shmq_open(kp_name, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "after", &c), 0);
    cr_assert_eq(drain(c), 0, "acked messages came back after the rebuild");
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);
}

Test(walprep, a_preparer_killed_before_its_link_costs_nothing)
{
    preparer_dies(false);
}

Test(walprep, a_preparer_stopped_before_its_link_costs_nothing)
{
    preparer_dies(true);
}

/* A maintainer stopped between its link of wal.1 and its fsync of the directory. */
static int dirsync_preparer(void *arg)
{
    (void)arg;
    setenv("SHMQ_CRASH_AT", "make_file_after_link", 1);
    setenv("SHMQ_CRASH_SIGNAL", "STOP", 1);
    shmq_t *q;
    if (shmq_open(kp_name, &q))
        return 10;
    shmq_maintain(q, NULL);
    shmq_close(q);
    return 0;
}

/*
 * SYNC: wal.1 was made and linked by a maintainer that stopped before its fsync of the log
 * directory (make_file_after_link): the name is not known to be durable. A writer that then
 * writes into wal.1 must make the name durable itself before its sync publish can return 0: it
 * fsyncs the directory when it maps a file someone else made. Here that fsync fails (armed), so
 * the publish is -EIO and the log failed (sticky), as for a failed flush. Before (review10) it
 * made no fsync and returned 0: the record was flushed, its file's name perhaps not.
 */
Test(walprep, a_sync_writer_in_a_file_whose_makers_directory_flush_is_pending_flushes_it)
{
    kp_name = h_qname("dirsync");
    pid_t k = h_fork_gated(dirsync_preparer, NULL);
    shmq_config_t cfg = prep_config(512, 1024, 64u << 10);
    cfg.durability = SHMQ_DURABILITY_SYNC;
    shmq_t *q;
    h_assert_rc(shmq_create(kp_name, &cfg, &q), 0);
    uint8_t payload[1000];
    memset(payload, 7, sizeof payload);
    h_assert_rc(shmq_publish(q, payload, sizeof payload, NULL), 0); /* wal.0 */
    h_open_gate(k);
    int st = 0;
    cr_assert_eq(h_wait_stopped(k, 30000, &st), 0, "the preparer did not stop");
    cr_assert(wal_exists(kp_name, 1), "the preparer did not link wal.1");
    cr_assert_eq(io_fault_arm(IO_FSYNC, 1, EIO), 0); /* this process's next fsync */
    int rc = 0, sent = 1;
    for (; sent < 100 && rc == 0; sent++) /* ~63 records a file: into wal.1, not past it */
        rc = shmq_publish(q, payload, sizeof payload, NULL);
    io_fault_disarm_all();
    cr_assert(!wal_exists(kp_name, 2), "the writer went past wal.1: the armed fsync was another");
    cr_assert_eq(rc, -EIO, "a sync publish into wal.1, whose name its maker had not flushed, "
                           "after %d publishes: %d (%s)", sent, rc, shmq_strerror(rc));
    shmq_stats_t sst;
    h_assert_rc(shmq_stats(q, &sst), 0);
    cr_assert(sst.wal_flush_failed, "the failed directory flush does not fail the log");
    h_assert_rc(kill(k, SIGCONT), 0);
    h_assert_child_ok(k, 30000, "the continued preparer");
    h_assert_rc(shmq_close(q), 0);
}
#endif
