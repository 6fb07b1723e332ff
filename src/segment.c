/*
 * segment.c - create, open, validate and map /dev/shm/shmq.NAME.
 *
 * Create: shm_open(O_EXCL) with the config's mode (fchmod, so the umask cannot widen or narrow
 * it), size it and allocate its pages (io_preallocate: no SIGBUS later), initialise registry, slots and rings, fill the free ring, and store the magic
 * last with release: an opener that sees the magic sees a complete segment (S1 pairs with S2).
 * Open: check the file size before touching anything, map, and validate (layout.c); a segment
 * whose magic is still 0 is being created: wait for it a little, then call it corrupted.
 */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "io.h"
#include "logdir.h"
#include "nocancel.h"
#include "settings.h"
#include "slot.h"

int segment_check_name(const char *name)
{
    if (!name)
        return -EINVAL;
    size_t n = strlen(name);
    if (n == 0 || n > SHMQ_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return -EINVAL;
    }
    return 0;
}

int segment_shm_name(const char *name, char *buf, size_t size)
{
    int err = segment_check_name(name);
    if (err)
        return err;
    if ((size_t)snprintf(buf, size, "/shmq.%s", name) >= size)
        return -EINVAL;
    return 0;
}

static void bind_regions(struct segment *s)
{
    const struct seg_layout *l = &s->layout;
    s->hdr = s->base;
    ring_bind(&s->free_ring, (char *)s->base + l->free_ring_off, l->ring_order);
    ring_bind(&s->ready_ring, (char *)s->base + l->ready_ring_off, l->ring_order);
    ring_bind(&s->dead_ring, (char *)s->base + l->dead_ring_off, l->ring_order);
    layout_group_regions(l, &s->groups);
    s->gready[0] = s->ready_ring;
    s->gdead[0] = s->dead_ring;
    for (uint32_t g = 1; g < l->max_groups; g++) {
        char *r = (char *)s->base + s->groups.grings_off + 2 * (g - 1) * l->ring_size;
        ring_bind(&s->gready[g], r, l->ring_order);
        ring_bind(&s->gdead[g], r + l->ring_size, l->ring_order);
    }
    fanring_bind(&s->fan, (char *)s->base + s->groups.fanring_off, l->max_groups, l->capacity,
                 s->groups.fan_cells);
}

static int init_contents(struct segment *s)
{
    struct seg_header *h = s->hdr;
    /* The file is fresh from ftruncate (all zero). Openers may map it already, but they use
     * nothing until they see the magic: copy the layout with magic 0 (never a moment with a
     * magic that S1 did not publish), and let S1 publish all the plain stores below. */
    struct seg_layout unpublished = s->layout;
    unpublished.magic = 0;
    memcpy(&h->layout, &unpublished, sizeof(unpublished));
    ring_init_empty(&s->free_ring);
    ring_init_empty(&s->ready_ring);
    ring_init_empty(&s->dead_ring);
    for (uint32_t i = 0; i < s->layout.capacity; i++) {
        struct slot *sl = segment_slot(s, i);
        uint64_t w = sw_make(SLOT_FREE, NO_OWNER, 0), ticket;
        atomic_store_explicit(&sl->state, w, memory_order_relaxed);
        if (ring_enqueue(&s->free_ring, i, &ticket) != 0)
            return -ENOSPC;
        atomic_store_explicit(&sl->ticket, tagged_make(ticket, w), memory_order_relaxed);
    }
    for (uint32_t g = 1; g < s->layout.max_groups; g++) {
        ring_init_empty(&s->gready[g]);
        ring_init_empty(&s->gdead[g]);
        for (uint32_t i = 0; i < s->layout.capacity; i++)
            atomic_store_explicit(&segment_cell(s, g, i)->state, sw_make(SLOT_FREE, NO_OWNER, 0),
                                  memory_order_relaxed);
    }
    if (s->layout.max_groups > 1)
        fanring_init(&s->fan, s->layout.max_groups, s->layout.capacity);
    /* group 0, "default", ACTIVE (groups.c); plain stores published by S1 */
    struct group_entry *g0 = (struct group_entry *)((char *)s->base + s->groups.groups_off);
    snprintf(g0->name, sizeof(g0->name), "default");
    g0->first_id = 1;
    atomic_store_explicit(&g0->word, GROUP_ACTIVE | 1u << 4, memory_order_relaxed);
    atomic_store_explicit(&h->groups_mask, 1, memory_order_relaxed);
    uint64_t usable = s->layout.wal_file_size - WAL_HEADER_SIZE;
    atomic_store_explicit(&h->wal_pos, s->layout.wal_base_pos, memory_order_relaxed);
    atomic_store_explicit(&h->wal_oldest_seq, s->layout.wal_base_pos / usable,
                          memory_order_relaxed);
    atomic_store_explicit(&h->wal_sync_low, UINT64_MAX, memory_order_relaxed);
    settings_init(&h->settings, &s->layout);
    return 0;
}

static void publish_magic(struct segment *s)
{
    /* S1 (release): publishes the whole initialised segment; pairs with S2 in segment_open_fd */
    atomic_store_explicit((_Atomic uint64_t *)&s->hdr->layout.magic, SHMQ_MAGIC,
                          memory_order_release);
}

int segment_create(const char *name, const shmq_config_t *cfg, struct segment *seg)
{
    return segment_create_with(name, cfg, 0, 0, NULL, NULL, seg);
}

int segment_create_with(const char *name, const shmq_config_t *cfg, uint64_t wal_base_pos,
                        uint64_t log_gen, int (*populate)(struct segment *, void *), void *arg, struct segment *seg)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    if (err || !cfg || !seg)
        return err ? err : -EINVAL;
    memset(seg, 0, sizeof(*seg));
    if ((err = layout_compute(cfg, &seg->layout)) != 0)
        return err;
    if (cfg->durability != SHMQ_DURABILITY_NONE &&
        (err = wal_dir_path(name, cfg->log_dir, seg->layout.log_dir,
                            sizeof(seg->layout.log_dir))) != 0)
        return err;
    seg->layout.wal_base_pos = wal_base_pos;
    seg->layout.log_gen = log_gen;
    seg->layout.created_ns = now_ns();
    seg->layout.magic = SHMQ_MAGIC;
    seg->layout.header_crc = layout_crc(&seg->layout);

    int fd = io_shm_open(shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, cfg->mode);
    if (fd < 0)
        return fd;
    /* Size it, then allocate every page for real: tmpfs makes a sized file sparse, and a store
     * (even a load) into a page it cannot allocate later is a SIGBUS in whoever touches it. Out
     * of space is -ENOSPC here instead, and the file goes. */
    if ((err = io_fchmod(fd, cfg->mode)) != 0 ||
        (err = io_ftruncate(fd, seg->layout.total_size)) != 0 ||
        (err = io_preallocate(fd, 0, seg->layout.total_size)) != 0)
        goto fail_unlink;
    seg->size = seg->layout.total_size;
    if ((err = io_mmap(fd, 0, seg->size, PROT_READ | PROT_WRITE, MAP_SHARED, &seg->base)) != 0)
        goto fail_unlink;
    io_close(fd);
    bind_regions(seg);
    if ((err = init_contents(seg)) != 0 || (populate && (err = populate(seg, arg)) != 0))
        goto fail_unmap;
    publish_magic(seg);
    return 0;

fail_unmap:
    io_munmap(seg->base, seg->size);
    fd = -1;
fail_unlink:
    if (fd >= 0)
        io_close(fd);
    io_shm_unlink(shm_name);
    memset(seg, 0, sizeof(*seg));
    return err;
}

int segment_open_fd(int fd, bool readonly, struct segment *seg)
{
    struct stat st;
    memset(seg, 0, sizeof(*seg));
    /* A creator may be between shm_open and storing the magic: give it up to ~1 s. */
    for (int tries = 0;; tries++) {
        int err = io_fstat(fd, &st);
        if (err)
            return err;
        if (!S_ISREG(st.st_mode))
            return -EBADMSG; /* a FIFO or device planted in /dev/shm: not a segment */
        if (st.st_nlink == 0)
            return -ENOENT; /* its creator failed (a full /dev/shm) and unlinked it */
        uint64_t pmagic = 0;
        /* F2: read the magic with pread before mapping. A creator sizes the file, then
         * allocates it; until its magic (S1, stored after the allocation) the file may be
         * sparse, and on a full tmpfs a load through a mapping from a hole is a SIGBUS. pread
         * serves a hole from the zero page, allocating nothing. */
        if ((uint64_t)st.st_size >= sizeof(struct seg_header) &&
            (err = (int)io_pread(fd, &pmagic, sizeof(pmagic), 0)) < 0)
            return err;
        if (pmagic != 0) {
            void *base;
            int prot = readonly ? PROT_READ : PROT_READ | PROT_WRITE;
            if ((err = io_mmap(fd, 0, (size_t)st.st_size, prot, MAP_SHARED, &base)) != 0)
                return err;
            struct seg_header *h = base;
            /* S2 (acquire): pairs with S1; a non-zero magic means the contents are complete */
            uint64_t magic =
                atomic_load_explicit((_Atomic uint64_t *)&h->layout.magic, memory_order_acquire);
            if (magic != 0) {
                memcpy(&seg->layout, &h->layout, sizeof(seg->layout));
                if ((err = layout_validate(&seg->layout, (uint64_t)st.st_size)) != 0) {
                    io_munmap(base, (size_t)st.st_size);
                    memset(seg, 0, sizeof(*seg));
                    return err;
                }
                seg->base = base;
                seg->size = (size_t)st.st_size;
                bind_regions(seg);
                return 0;
            }
            io_munmap(base, (size_t)st.st_size);
        }
        if (tries >= 100)
            return -EBADMSG;
        NOCANCEL(usleep(10000));
    }
}

int segment_open(const char *name, bool readonly, struct segment *seg)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    if (err || !seg)
        return err ? err : -EINVAL;
    /* O_NONBLOCK: opening a FIFO planted under our name must not hang us */
    int fd = io_shm_open(shm_name, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0)
        return fd == -EISDIR ? -EBADMSG : fd;
    err = segment_open_fd(fd, readonly, seg);
    io_close(fd);
    return err;
}

int segment_unlink(const char *name)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    return err ? err : io_shm_unlink(shm_name);
}

void segment_close(struct segment *seg)
{
    if (seg && seg->base)
        io_munmap(seg->base, seg->size);
    if (seg)
        memset(seg, 0, sizeof(*seg));
}
