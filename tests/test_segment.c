/*
 * test_segment.c - a bad segment never crashes its opener.
 *
 * Each test creates a queue, closes it, then rewrites /dev/shm/shmq.NAME directly (truncated,
 * bytes flipped, random contents) and opens it in a forked child: the child must exit normally
 * (no SIGBUS, no SIGSEGV, no hang) and shmq_open() must return the documented error: -EBADMSG
 * for a truncated, corrupted or foreign segment, -EPROTO for another format version.
 * The header fields are located with src/layout.h; layout_crc() re-signs a header so that the
 * checks behind the CRC (layout recomputed from the config, file size) are reached too.
 * The queues are made with durability NONE: with a log, shmq_open() rebuilds a corrupt segment
 * from it instead (tested at the end of this file).
 */

#include "helpers.h" /* first: it defines _GNU_SOURCE */

#include <math.h>
#include <stddef.h>
#include "layout.h"
#include "ring.h"

TestSuite(segment, .fini = h_cleanup, .timeout = 180);

static void use_in_child(const char *name, const char *what);

struct image {
    const char *name;
    char path[128];
    unsigned char *bytes; /* the intact segment */
    size_t size;
};

/* Create a small queue with a few messages in it, close it, and keep a copy of its bytes. */
static struct image make_image(const char *tag)
{
    struct image im = {0};
    im.name = h_qname(tag);
    h_shm_path(im.name, im.path, sizeof im.path);
    shmq_config_t cfg = h_small_config(8, 64, 4);
    cfg.durability = SHMQ_DURABILITY_NONE; /* no log to recover from: the segment is all */
    shmq_t *q;
    h_assert_rc(shmq_create(im.name, &cfg, &q), 0);
    for (int i = 0; i < 3; i++)
        h_assert_rc(shmq_publish(q, "payload", 7, NULL), 0);
    h_assert_rc(shmq_close(q), 0);

    int fd = open(im.path, O_RDONLY);
    cr_assert(fd >= 0, "open %s: %s", im.path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    im.size = (size_t)st.st_size;
    cr_assert(im.size >= sizeof(struct seg_header), "segment smaller than its header");
    im.bytes = malloc(im.size);
    cr_assert_not_null(im.bytes);
    cr_assert_eq(pread(fd, im.bytes, im.size, 0), (ssize_t)im.size);
    close(fd);
    return im;
}

/* Replace the segment file's contents by len bytes of data (O_TRUNC, then write). */
static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)data + done, len - done);
        cr_assert(n > 0, "write %s: %s", path, strerror(errno));
        done += (size_t)n;
    }
    close(fd);
}

/* Make the segment file hold the first len bytes of an image (intact or modified). */
static void write_variant(const struct image *im, const unsigned char *copy, size_t len)
{
    write_file(im->path, copy, len);
}

static int child_open(void *arg)
{
    const char *name = arg;
    shmq_t *q = NULL;
    int rc = shmq_open(name, &q);
    if (rc == 0)
        return shmq_close(q) == 0 ? 0 : 253;
    return rc < 0 && rc > -250 ? -rc : 254;
}

/*
 * Open the queue in a forked child: assert the child ended normally within 5 s, and return
 * what shmq_open() returned there (0 or a negative errno).
 */
static int open_in_child(const char *name, const char *what)
{
    pid_t pid = h_fork(child_open, (void *)name);
    int st = 0;
    int rc = h_waitpid(pid, 30000, 0, &st);
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        h_untrack(pid);
    }
    cr_assert_eq(rc, 0, "%s: shmq_open() did not return within 5 s", what);
    char buf[96];
    cr_assert(WIFEXITED(st), "%s: the opener crashed: %s", what, h_status_str(st, buf, sizeof buf));
    int code = WEXITSTATUS(st);
    cr_assert(code != 253 && code != 254, "%s: shmq_close failed or odd return (%d)", what, code);
    return -code;
}

static void expect_open(const char *name, int want, const char *what)
{
    int rc = open_in_child(name, what);
    cr_expect_eq(rc, want, "%s: shmq_open = %d (%s), expected %d (%s)", what, rc, shmq_strerror(rc),
                 want, shmq_strerror(want));
}

/* A private copy of the intact image, to modify. */
static unsigned char *copy_of(const struct image *im)
{
    unsigned char *c = malloc(im->size);
    cr_assert_not_null(c);
    memcpy(c, im->bytes, im->size);
    return c;
}

/* Recompute header_crc of a modified copy, so that only the checks behind the CRC see it. */
static void resign(unsigned char *copy)
{
    struct seg_layout *l = (struct seg_layout *)copy;
    l->header_crc = layout_crc(l);
}

/* ---- the harness itself ------------------------------------------------------------------- */

Test(segment, intact_segment_opens)
{
    struct image im = make_image("intact");
    expect_open(im.name, 0, "intact");
    /* Rewritten byte for byte, it is still fine (the harness does not corrupt by itself). */
    write_variant(&im, im.bytes, im.size);
    expect_open(im.name, 0, "rewritten intact");
    /* And a re-signed intact header is too. */
    unsigned char *c = copy_of(&im);
    resign(c);
    write_variant(&im, c, im.size);
    expect_open(im.name, 0, "re-signed intact");
    free(c);
    free(im.bytes);
}

/* ---- truncation --------------------------------------------------------------------------- */

Test(segment, truncated_segments_are_ebadmsg)
{
    struct image im = make_image("trunc");
    struct {
        size_t len;
        const char *what;
    } cuts[] = {
        {0, "truncated to 0"},
        {sizeof(struct seg_layout) / 2, "truncated to half the layout"},
        {sizeof(struct seg_header) - 1, "one byte short of the header"},
        {sizeof(struct seg_header), "header only"},
        {im.size / 2, "half the segment"},
        {im.size - 4096, "one page short"},
        {im.size - 1, "one byte short"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_variant(&im, im.bytes, cuts[i].len);
        expect_open(im.name, -EBADMSG, cuts[i].what);
    }
    /* ftruncate of the intact file (the other way to lose the end). */
    write_variant(&im, im.bytes, im.size);
    int fd = open(im.path, O_RDWR);
    cr_assert(fd >= 0);
    cr_assert(ftruncate(fd, (off_t)im.size - 1) == 0);
    close(fd);
    expect_open(im.name, -EBADMSG, "ftruncate to size - 1");
    free(im.bytes);
}

Test(segment, empty_file_is_ebadmsg)
{
    const char *name = h_qname("emptyfile");
    char path[128];
    h_shm_path(name, path, sizeof path);
    write_file(path, "", 0);
    expect_open(name, -EBADMSG, "empty file");
}

/* ---- the header --------------------------------------------------------------------------- */

Test(segment, bad_magic_is_ebadmsg)
{
    struct image im = make_image("magic");
    for (size_t b = 0; b < sizeof(uint64_t); b++) {
        unsigned char *c = copy_of(&im);
        c[offsetof(struct seg_layout, magic) + b] ^= 0x20;
        write_variant(&im, c, im.size);
        char what[64];
        snprintf(what, sizeof what, "magic byte %zu flipped", b);
        expect_open(im.name, -EBADMSG, what);
        resign(c);
        write_variant(&im, c, im.size);
        snprintf(what, sizeof what, "magic byte %zu flipped, re-signed", b);
        expect_open(im.name, -EBADMSG, what);
        free(c);
    }
    free(im.bytes);
}

Test(segment, zero_magic_is_ebadmsg)
{
    /* A creator that died before storing the magic leaves this behind. */
    struct image im = make_image("zeromagic");
    unsigned char *c = copy_of(&im);
    ((struct seg_layout *)c)->magic = 0;
    write_variant(&im, c, im.size);
    expect_open(im.name, -EBADMSG, "magic 0");
    free(c);
    free(im.bytes);
}

Test(segment, other_version_is_eproto)
{
    struct image im = make_image("version");
    const uint32_t versions[] = {0, SHMQ_FORMAT_VERSION + 1, SHMQ_FORMAT_VERSION ^ 0x100,
                                 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        unsigned char *c = copy_of(&im);
        ((struct seg_layout *)c)->version = versions[i];
        char what[64];
        snprintf(what, sizeof what, "version %u", versions[i]);
        write_variant(&im, c, im.size);
        expect_open(im.name, -EPROTO, what);
        resign(c);
        snprintf(what, sizeof what, "version %u, re-signed", versions[i]);
        write_variant(&im, c, im.size);
        expect_open(im.name, -EPROTO, what);
        free(c);
    }
    free(im.bytes);
}

/* Fields of the layout covered by header_crc (all but magic, version and header_crc). */
static const struct field {
    size_t off, size;
    const char *name;
} layout_fields[] = {
#define F(f)                                                                                       \
    {                                                                                              \
        offsetof(struct seg_layout, f), sizeof(((struct seg_layout *)0)->f), #f                    \
    }
    F(header_size),     F(total_size),           F(capacity),           F(max_msg_size),
    F(max_procs),       F(heartbeat_timeout_ms), F(ack_deadline_ms),    F(max_attempts),
    F(backoff_base_ms), F(backoff_cap_ms),       F(backoff_multiplier), F(mode),
    F(slot_stride),     F(ring_order),           F(registry_off),       F(slots_off),
    F(free_ring_off),   F(ready_ring_off),       F(dead_ring_off),      F(ring_size),
    F(created_ns),      F(max_header_bytes),     F(max_headers),
#undef F
};

Test(segment, config_byte_flips_fail_header_crc)
{
    struct image im = make_image("crc");
    for (size_t i = 0; i < sizeof layout_fields / sizeof layout_fields[0]; i++) {
        const struct field *f = &layout_fields[i];
        for (size_t b = 0; b < f->size; b++) {
            unsigned char *c = copy_of(&im);
            c[f->off + b] ^= 0x01;
            write_variant(&im, c, im.size);
            char what[96];
            snprintf(what, sizeof what, "%s byte %zu flipped", f->name, b);
            expect_open(im.name, -EBADMSG, what);
            free(c);
        }
    }
    unsigned char *c = copy_of(&im);
    ((struct seg_layout *)c)->header_crc ^= 0x80;
    write_variant(&im, c, im.size);
    expect_open(im.name, -EBADMSG, "header_crc flipped");
    free(c);
    free(im.bytes);
}

/* Set a field of a copy to value (of the field's size) and re-sign it. */
static void set_field(unsigned char *c, const struct field *f, uint64_t value)
{
    if (f->size == 4) {
        uint32_t v = (uint32_t)value;
        memcpy(c + f->off, &v, 4);
    } else {
        memcpy(c + f->off, &value, 8);
    }
    resign(c);
}

static const struct field *field_named(const char *name)
{
    for (size_t i = 0; i < sizeof layout_fields / sizeof layout_fields[0]; i++)
        if (strcmp(layout_fields[i].name, name) == 0)
            return &layout_fields[i];
    cr_assert_fail("no field %s", name);
    return NULL;
}

Test(segment, region_offsets_corrupted_are_ebadmsg)
{
    /* Each geometry field flipped in several bits, without and with a valid CRC: the opener
     * must recompute the layout from the config and refuse any other one. */
    struct image im = make_image("offsets");
    const char *geometry[] = {"header_size",   "total_size", "slot_stride",   "ring_order",
                              "registry_off",  "slots_off",  "free_ring_off", "ready_ring_off",
                              "dead_ring_off", "ring_size"};
    const unsigned bits[] = {0, 3, 6, 12, 20, 31};
    for (size_t i = 0; i < sizeof geometry / sizeof geometry[0]; i++) {
        const struct field *f = field_named(geometry[i]);
        for (size_t k = 0; k < sizeof bits / sizeof bits[0]; k++) {
            unsigned char *c = copy_of(&im);
            uint64_t v = 0;
            memcpy(&v, c + f->off, f->size);
            set_field(c, f, v ^ (1ull << bits[k]));
            char what[96];
            snprintf(what, sizeof what, "%s bit %u flipped, re-signed", f->name, bits[k]);
            write_variant(&im, c, im.size);
            expect_open(im.name, -EBADMSG, what);
            /* The same, then a byte flipped after signing: the CRC catches it. */
            c[f->off] ^= 0x40;
            write_variant(&im, c, im.size);
            snprintf(what, sizeof what, "%s byte 0 flipped after re-sign", f->name);
            expect_open(im.name, -EBADMSG, what);
            free(c);
        }
        /* Far out of range (pointing beyond the file, or wrapping). */
        const uint64_t wild[] = {UINT64_MAX, (uint64_t)im.size, (uint64_t)im.size * 16, 1ull << 40,
                                 0};
        for (size_t k = 0; k < sizeof wild / sizeof wild[0]; k++) {
            unsigned char *c = copy_of(&im);
            set_field(c, f, wild[k]);
            if (memcmp(c + f->off, im.bytes + f->off, f->size) == 0) {
                free(c);
                continue; /* the wild value is the real one */
            }
            char what[96];
            snprintf(what, sizeof what, "%s = %#llx, re-signed", f->name,
                     (unsigned long long)wild[k]);
            write_variant(&im, c, im.size);
            expect_open(im.name, -EBADMSG, what);
            free(c);
        }
    }
    free(im.bytes);
}

Test(segment, config_outside_limits_is_ebadmsg)
{
    /* A well-signed header whose config shmq_create() would refuse: never trusted. */
    struct image im = make_image("badconf");
    struct {
        const char *field;
        uint64_t value;
    } bad[] = {
        {"capacity", 0},          {"capacity", 9},     {"capacity", SHMQ_CAPACITY_MAX + 1},
        {"capacity", UINT32_MAX}, {"max_msg_size", 0}, {"max_msg_size", UINT32_MAX},
        {"max_procs", 0},         {"max_procs", 1},    {"max_procs", UINT32_MAX},
        {"max_attempts", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *c = copy_of(&im);
        set_field(c, field_named(bad[i].field), bad[i].value);
        char what[96];
        snprintf(what, sizeof what, "%s = %llu, re-signed", bad[i].field,
                 (unsigned long long)bad[i].value);
        write_variant(&im, c, im.size);
        expect_open(im.name, -EBADMSG, what);
        free(c);
    }
    const double mults[] = {NAN, 0.5, -1.0, 0.0};
    for (size_t i = 0; i < sizeof mults / sizeof mults[0]; i++) {
        unsigned char *c = copy_of(&im);
        ((struct seg_layout *)c)->backoff_multiplier = mults[i];
        resign(c);
        char what[96];
        snprintf(what, sizeof what, "backoff_multiplier = %g, re-signed", mults[i]);
        write_variant(&im, c, im.size);
        expect_open(im.name, -EBADMSG, what);
        free(c);
    }
    free(im.bytes);
}

Test(segment, shrunken_config_never_crashes_users)
{
    /* capacity 8 -> 7 or max_procs 4 -> 3, re-signed: the layout may still be consistent
     * (regions padded), so shmq_open() may accept it, but the free ring still names slot 7
     * and the registry has an entry 3: indices from shm must be range-checked before use. */
    struct image im = make_image("shrunk");
    const struct {
        const char *field;
        uint64_t value;
    } cases[] = {{"capacity", 7}, {"capacity", 1}, {"max_procs", 3}, {"max_procs", 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *c = copy_of(&im);
        set_field(c, field_named(cases[i].field), cases[i].value);
        write_variant(&im, c, im.size);
        char what[96];
        snprintf(what, sizeof what, "%s = %llu, re-signed", cases[i].field,
                 (unsigned long long)cases[i].value);
        int rc = open_in_child(im.name, what);
        cr_expect(rc == 0 || rc == -EBADMSG, "%s: shmq_open = %d", what, rc);
        use_in_child(im.name, what);
        free(c);
    }
    free(im.bytes);
}

Test(segment, consistent_header_of_a_bigger_queue_is_ebadmsg)
{
    /* A header that is valid in every way but describes more bytes than the file has: mapping
     * what it claims would SIGBUS. */
    struct image im = make_image("bigger");
    shmq_config_t cfg = h_small_config(1024, 1024, 64);
    cfg.durability = SHMQ_DURABILITY_NONE; /* as the image: the segment is all */
    struct seg_layout big;
    memset(&big, 0, sizeof big);
    h_assert_rc(layout_compute(&cfg, &big), 0);
    big.magic = SHMQ_MAGIC;
    big.version = SHMQ_FORMAT_VERSION;
    big.header_crc = layout_crc(&big);
    cr_assert(big.total_size > im.size);
    unsigned char *c = copy_of(&im);
    memcpy(c, &big, sizeof big);
    write_variant(&im, c, im.size);
    expect_open(im.name, -EBADMSG, "header of a 1024-slot queue on an 8-slot file");
    /* The same header with the file as large as it claims opens fine (control). */
    unsigned char *full = calloc(1, big.total_size);
    cr_assert_not_null(full);
    /* only the header: the small image's other bytes (its slots, its rings) would lie where the
     * big layout keeps its registry, and read as attached entries of some other process */
    memcpy(full, c, sizeof(struct seg_header));
    memcpy(full, &big, sizeof big);
    write_file(im.path, full, big.total_size);
    int rc = open_in_child(im.name, "header of a 1024-slot queue on a file of its size");
    cr_expect(rc == 0 || rc == -EBADMSG, "control: %d", rc);
    free(full);
    free(c);
    free(im.bytes);
}

/* ---- foreign files ------------------------------------------------------------------------ */

Test(segment, random_files_are_ebadmsg)
{
    const char *name = h_qname("random");
    char path[128];
    h_shm_path(name, path, sizeof path);
    /* Files shorter than a header are waited for (1 s, a creator may be writing): few. */
    const size_t sizes[] = {
        7, sizeof(struct seg_layout), sizeof(struct seg_header), 4096, 65536, 1u << 20};
    uint64_t seed = 0x5eed;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int rep = 0; rep < (sizes[i] < sizeof(struct seg_header) ? 1 : 3); rep++) {
            unsigned char *buf = malloc(sizes[i]);
            cr_assert_not_null(buf);
            for (size_t k = 0; k < sizes[i]; k++)
                buf[k] = (unsigned char)h_rand(&seed);
            char what[96];
            snprintf(what, sizeof what, "%zu random bytes (rep %d)", sizes[i], rep);
            write_file(path, buf, sizes[i]);
            expect_open(name, -EBADMSG, what);
            if (sizes[i] >= sizeof(struct seg_header)) {
                /* The right magic and version in front of noise. */
                struct seg_layout *l = (struct seg_layout *)buf;
                l->magic = SHMQ_MAGIC;
                l->version = SHMQ_FORMAT_VERSION;
                write_file(path, buf, sizes[i]);
                snprintf(what, sizeof what, "magic + version + %zu random bytes", sizes[i]);
                expect_open(name, -EBADMSG, what);
                l->header_crc = layout_crc(l);
                write_file(path, buf, sizes[i]);
                snprintf(what, sizeof what, "signed random header, %zu bytes", sizes[i]);
                expect_open(name, -EBADMSG, what);
            }
            free(buf);
        }
    }
}

Test(segment, zero_filled_file_is_ebadmsg)
{
    struct image im = make_image("zeros");
    unsigned char *z = calloc(1, im.size);
    cr_assert_not_null(z);
    write_file(im.path, z, im.size);
    expect_open(im.name, -EBADMSG, "zero-filled file of a segment's size");
    free(z);
    free(im.bytes);
}

/* ---- a valid header over a hostile body ----------------------------------------------------- */

static int child_use_queue(void *arg)
{
    const char *name = arg;
    shmq_t *q = NULL;
    int rc = shmq_open(name, &q);
    if (rc != 0)
        return 0; /* refusing the segment is fine too */
    shmq_consumer_t *c = NULL;
    if (shmq_consumer_open(q, "hostile", &c) != 0)
        c = NULL;
    for (int i = 0; i < 40; i++) {
        uint64_t id;
        shmq_publish(q, "x", 1, &id);
        void *buf;
        if (shmq_reserve(q, 8, &buf) == 0)
            shmq_cancel(q, buf);
        if (c) {
            shmq_msg_t m;
            if (shmq_receive(c, &m, 0) == 0) {
                volatile const char *d = m.data;
                for (size_t k = 0; k < m.len && k < 64; k++)
                    (void)d[k];
                if (i % 2)
                    shmq_ack(c, &m);
                else
                    shmq_nack(c, &m, 1);
            }
        }
        shmq_maintain(q, NULL);
        shmq_stats_t st;
        shmq_stats(q, &st);
    }
    if (c)
        shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

static void use_in_child(const char *name, const char *what)
{
    pid_t pid = h_fork(child_use_queue, (void *)name);
    h_assert_child_ok(pid, 10000, what);
}

Test(segment, hostile_body_never_crashes)
{
    /* The header is intact and signed; everything after it is garbage. Every index, length
     * and offset read from it must be range-checked (DESIGN.md, principle 4). */
    struct image im = make_image("hostile");
    size_t hdr = sizeof(struct seg_header);
    uint64_t seed = 0xbad;
    for (int variant = 0; variant < 4; variant++) {
        unsigned char *c = copy_of(&im);
        for (size_t k = hdr; k < im.size; k++) {
            switch (variant) {
            case 0: c[k] = (unsigned char)h_rand(&seed); break;
            case 1: c[k] = 0xff; break;
            case 2: c[k] = (k % 8 == 7) ? 0 : (unsigned char)h_rand(&seed); break; /* small */
            default:
                if (h_rand(&seed) % 16 == 0)
                    c[k] ^= (unsigned char)h_rand(&seed);
                break;
            }
        }
        write_variant(&im, c, im.size);
        char what[64];
        snprintf(what, sizeof what, "hostile body, variant %d", variant);
        use_in_child(im.name, what);
        free(c);
    }
    free(im.bytes);
}

/* ---- not a file --------------------------------------------------------------------------- */

Test(segment, fifo_or_directory_in_place_of_segment_does_not_hang)
{
    const char *name = h_qname("fifo");
    char path[128];
    h_shm_path(name, path, sizeof path);
    cr_assert(mkfifo(path, 0600) == 0, "mkfifo: %s", strerror(errno));
    int rc = open_in_child(name, "a FIFO named like the segment");
    cr_expect(rc < 0, "shmq_open of a FIFO = %d", rc);
    shmq_config_t cfg = h_small_config(8, 64, 4);
    cfg.durability = SHMQ_DURABILITY_NONE;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), -EEXIST);
    unlink(path);

    cr_assert(mkdir(path, 0700) == 0, "mkdir: %s", strerror(errno));
    rc = open_in_child(name, "a directory named like the segment");
    rmdir(path);
    cr_expect(rc < 0, "shmq_open of a directory = %d", rc);
}

/* ---- ring counters from shm ---------------------------------------------------------------- */

static int child_ring_ops(void *arg)
{
    const char *name = arg;
    shmq_t *q = NULL;
    if (shmq_open(name, &q) != 0)
        return 0;
    shmq_consumer_t *c = NULL;
    if (shmq_consumer_open(q, "rings", &c) != 0)
        c = NULL;
    shmq_publish(q, "x", 1, NULL); /* free ring dequeue */
    if (c) {
        shmq_msg_t m;
        if (shmq_receive(c, &m, 0) == 0) /* ready ring dequeue */
            shmq_ack(c, &m);
    }
    shmq_dead_letter_t dl[4];
    size_t n;
    shmq_dlq_list(q, dl, 4, &n);
    uint32_t moved;
    shmq_dlq_redrive(q, 0, &moved); /* dead ring dequeue */
    shmq_maintain(q, NULL);
    if (c)
        shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(segment, corrupted_ring_counters_do_not_hang)
{
    /* A ring's head, tail and threshold live in shm: a dequeue must not loop for as long as a
     * garbage threshold (up to 2^63) says while a garbage tail lies far ahead of head. Every
     * bound on a loop must come from the validated geometry, never from shm. */
    struct image im = make_image("ringctr");
    const struct seg_layout *l = (const struct seg_layout *)im.bytes;
    const struct {
        const char *ring;
        uint64_t off;
    } rings[] = {
        {"free", l->free_ring_off}, {"ready", l->ready_ring_off}, {"dead", l->dead_ring_off}};
    const struct {
        const char *what;
        uint64_t head_add, tail_gap; /* head += head_add (older cells), tail = head + gap */
        int64_t threshold;
    } cases[] = {{"threshold INT64_MAX, tail 2^40 ahead", 0, 1ull << 40, INT64_MAX},
                 {"cells of an older cycle, threshold INT64_MAX, tail 2^40 ahead", 1ull << 20,
                  1ull << 40, INT64_MAX},
                 {"threshold INT64_MAX, tail == head", 1ull << 20, 0, INT64_MAX}};
    for (size_t r = 0; r < sizeof rings / sizeof rings[0]; r++) {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            unsigned char *c = copy_of(&im);
            unsigned char *ring = c + rings[r].off;
            uint64_t head, tail;
            memcpy(&head, ring + offsetof(struct ring_shm, head), 8);
            head += cases[k].head_add;
            tail = head + cases[k].tail_gap;
            memcpy(ring + offsetof(struct ring_shm, head), &head, 8);
            memcpy(ring + offsetof(struct ring_shm, tail), &tail, 8);
            memcpy(ring + offsetof(struct ring_shm, threshold), &cases[k].threshold, 8);
            write_variant(&im, c, im.size);
            free(c);
            pid_t pid = h_fork(child_ring_ops, (void *)im.name);
            int st = 0;
            char buf[96];
            int rc = h_waitpid(pid, 30000, 0, &st); /* a correct library needs milliseconds */
            if (rc == -ETIMEDOUT) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                h_untrack(pid);
            }
            cr_expect_eq(rc, 0, "%s ring, %s: publish/receive/dlq/maintain still running after 2 s",
                         rings[r].ring, cases[k].what);
            cr_expect(rc != 0 || (WIFEXITED(st) && WEXITSTATUS(st) == 0), "%s ring, %s: child %s",
                      rings[r].ring, cases[k].what, h_status_str(st, buf, sizeof buf));
        }
    }
    free(im.bytes);
}

/* ---- with a log, a corrupt segment is rebuilt ----------------------------------------------- */

static int child_open_and_drain(void *arg)
{
    const char *name = arg;
    shmq_t *q;
    int rc = shmq_open(name, &q);
    if (rc != 0)
        return rc < 0 && rc > -250 ? -rc : 254;
    shmq_consumer_t *c;
    if (shmq_consumer_open(q, "drain", &c) != 0)
        return 250;
    char want[16];
    for (int i = 0; i < 3; i++) {
        shmq_msg_t m;
        if (shmq_receive(c, &m, 1000) != 0)
            return 240 + i; /* message i not restored */
        snprintf(want, sizeof want, "logged-%d", i);
        if (m.len != strlen(want) || memcmp(m.data, want, m.len) != 0)
            return 245; /* restored wrong or out of order */
        shmq_ack(c, &m);
    }
    shmq_msg_t m;
    if (shmq_receive(c, &m, 0) != -EAGAIN)
        return 249; /* more than was published and not acked */
    shmq_consumer_close(c);
    shmq_close(q);
    return 0;
}

Test(segment, corrupt_segment_with_log_is_rebuilt_by_open)
{
    /* shmq.h: shmq_open() rebuilds a missing or corrupt segment whose log is in the state
     * directory (durability PROCESS, the default). */
    const char *name = h_qname("rebuilt");
    char path[128];
    h_shm_path(name, path, sizeof path);
    shmq_config_t cfg = h_small_config(8, 64, 4);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q;
    shmq_consumer_t *c;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_consumer_open(q, "c", &c), 0);
    h_assert_rc(shmq_publish(q, "acked", 5, NULL), 0);
    shmq_msg_t m;
    h_assert_rc(shmq_receive(c, &m, 0), 0);
    h_assert_rc(shmq_ack(c, &m), 0);
    for (int i = 0; i < 3; i++) {
        char d[16];
        snprintf(d, sizeof d, "logged-%d", i);
        h_assert_rc(shmq_publish(q, d, strlen(d), NULL), 0);
    }
    h_assert_rc(shmq_consumer_close(c), 0);
    h_assert_rc(shmq_close(q), 0);

    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0);
    uint64_t zero = 0x0123456789abcdefull;
    cr_assert_eq(pwrite(fd, &zero, 8, offsetof(struct seg_layout, magic)), 8);
    close(fd);
    pid_t pid = h_fork(child_open_and_drain, (void *)name);
    int st = 0;
    cr_assert_eq(h_waitpid(pid, 10000, 0, &st), 0, "open of a corrupt logged queue hangs");
    char buf[96];
    cr_assert(WIFEXITED(st), "opener crashed: %s", h_status_str(st, buf, sizeof buf));
    int code = WEXITSTATUS(st);
    cr_expect_eq(code, 0, "corrupt segment with a log: exit %d (%s)", code,
                 code >= 240 && code < 250 ? "messages not restored as published"
                 : code < 240              ? shmq_strerror(-code)
                                           : "other failure");
}

Test(segment, unlink_of_corrupt_segment_removes_its_log)
{
    /* shmq_unlink() deletes "its segment and its log (the log directory the segment names, or
     * the state directory's if the segment is gone)": a corrupt segment names nothing it can
     * trust, so the state directory's log must go too, or the name stays taken (-EEXIST). */
    const char *name = h_qname("unlinkbad");
    char path[128], logdir[256];
    h_shm_path(name, path, sizeof path);
    snprintf(logdir, sizeof logdir, "%s/%s", h_state_dir_path(), name);
    shmq_config_t cfg = h_small_config(8, 64, 4);
    cfg.durability = SHMQ_DURABILITY_PROCESS;
    shmq_t *q;
    h_assert_rc(shmq_create(name, &cfg, &q), 0);
    h_assert_rc(shmq_publish(q, "x", 1, NULL), 0);
    h_assert_rc(shmq_close(q), 0);
    struct stat st;
    cr_assert(stat(logdir, &st) == 0, "no log directory at %s", logdir);
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0);
    cr_assert(ftruncate(fd, 100) == 0); /* corrupt: shorter than a header */
    close(fd);
    h_assert_rc(shmq_unlink(name), 0);
    cr_expect(stat(path, &st) != 0, "segment left");
    cr_expect(stat(logdir, &st) != 0, "shmq_unlink of a corrupt segment left its log %s", logdir);
    cfg.durability = SHMQ_DURABILITY_NONE;
    int rc = shmq_create(name, &cfg, &q);
    cr_expect_eq(rc, 0, "create after unlink = %d (%s)", rc, shmq_strerror(rc));
    if (rc == 0)
        shmq_close(q);
}
