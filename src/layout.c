/*
 * layout.c - where each region of a segment lies, derived from the config alone.
 *
 * Invariant: a segment's stored layout equals layout_compute() of the config stored beside it,
 * its CRC matches, and total_size <= the file's size. layout_validate() checks all three, so a
 * reader never uses an offset that the config does not imply.
 */
#include "layout.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "crc32c.h"
#include "ring.h"

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static int config_check(const shmq_config_t *c)
{
    if (c->capacity < 1 || c->capacity > SHMQ_CAPACITY_MAX)
        return -EINVAL;
    if (c->max_msg_size < 1 || c->max_msg_size > SHMQ_MSG_SIZE_MAX)
        return -EINVAL;
    if (c->max_procs < 2 || c->max_procs > SHMQ_PROCS_MAX)
        return -EINVAL;
    if (c->heartbeat_timeout_ms < 1 || c->ack_deadline_ms < 1 || c->max_attempts < 1)
        return -EINVAL;
    if (c->backoff_base_ms > c->backoff_cap_ms)
        return -EINVAL;
    if (!isfinite(c->backoff_multiplier) || c->backoff_multiplier < 1.0 ||
        c->backoff_multiplier > 1000.0)
        return -EINVAL;
    if (c->mode & ~0777u)
        return -EINVAL;
    if (c->durability < SHMQ_DURABILITY_NONE || c->durability > SHMQ_DURABILITY_SYNC)
        return -EINVAL;
    if (c->durability != SHMQ_DURABILITY_NONE &&
        (c->wal_file_size < WAL_FILE_MIN || c->wal_file_size % 4096 != 0 ||
         (uint64_t)c->wal_file_size - WAL_HEADER_SIZE <
             2 * wal_rec_size(c->max_msg_size + WAL_PUBLISH_PREFIX + WAL_KEY_MAX)))
        return -EINVAL; /* a file must hold at least two records of the largest size */
    if (c->log_dir && strlen(c->log_dir) > SHMQ_LOG_DIR_MAX)
        return -EINVAL;
    if (c->dedup_window_count > SHMQ_DEDUP_WINDOW_MAX ||
        (c->dedup_window_count && c->dedup_window_ms == 0))
        return -EINVAL;
    if (c->expire_policy != SHMQ_EXPIRE_DROP && c->expire_policy != SHMQ_EXPIRE_DEAD_LETTER)
        return -EINVAL;
    return 0;
}

int layout_compute(const shmq_config_t *cfg, struct seg_layout *l)
{
    int err = config_check(cfg);
    if (err)
        return err;
    memset(l, 0, sizeof(*l));
    l->version = SHMQ_FORMAT_VERSION;
    l->header_size = sizeof(struct seg_header);
    l->capacity = cfg->capacity;
    l->max_msg_size = cfg->max_msg_size;
    l->max_procs = cfg->max_procs;
    l->heartbeat_timeout_ms = cfg->heartbeat_timeout_ms;
    l->ack_deadline_ms = cfg->ack_deadline_ms;
    l->max_attempts = cfg->max_attempts;
    l->backoff_base_ms = cfg->backoff_base_ms;
    l->backoff_cap_ms = cfg->backoff_cap_ms;
    l->backoff_multiplier = cfg->backoff_multiplier;
    l->mode = cfg->mode;
    l->durability = (uint32_t)cfg->durability;
    l->log_retention_bytes = cfg->log_retention_bytes;
    l->default_ttl_ms = cfg->default_ttl_ms;
    l->expire_policy = cfg->expire_policy;
    l->wal_file_size = cfg->durability != SHMQ_DURABILITY_NONE ? cfg->wal_file_size : WAL_FILE_MIN;
    l->slot_stride = (uint32_t)(SLOT_HEADER_SIZE + align_up(cfg->max_msg_size, CACHE_LINE));

    /* 4 cells per slot: SCQ needs 2n cells for n entries, and repair may add duplicates. */
    uint32_t order = RING_MIN_ORDER;
    while ((1ull << order) < 4ull * cfg->capacity)
        order++;
    l->ring_order = order;
    l->ring_size = align_up(ring_bytes(order), CACHE_LINE);

    uint64_t off = align_up(sizeof(struct seg_header), CACHE_LINE);
    l->registry_off = off;
    off += (uint64_t)cfg->max_procs * sizeof(struct proc_entry);
    l->slots_off = off = align_up(off, 4096);
    off += (uint64_t)cfg->capacity * l->slot_stride;
    l->free_ring_off = off = align_up(off, 4096);
    l->ready_ring_off = off += l->ring_size;
    l->dead_ring_off = off += l->ring_size;
    off += l->ring_size;
    /* the dedup window: four buckets per key it remembers, in sets of DEDUP_WAYS buckets (a set
     * then overflows, forgetting a key early, for about 1 key in 250) */
    l->dedup_window_count = cfg->dedup_window_count;
    l->dedup_window_ms = cfg->dedup_window_count ? cfg->dedup_window_ms : 0;
    if (cfg->dedup_window_count) {
        uint32_t buckets = DEDUP_WAYS;
        while (buckets < 4ull * cfg->dedup_window_count)
            buckets <<= 1;
        l->dedup_buckets = buckets;
        l->dedup_off = off = align_up(off, 4096);
        off += (uint64_t)buckets * DEDUP_BUCKET_SIZE;
    }
    l->total_size = align_up(off, 4096);
    if (l->total_size > SHMQ_SEGMENT_MAX)
        return -EINVAL;
    return 0;
}

uint32_t layout_crc(const struct seg_layout *l)
{
    return crc32c(0, l, offsetof(struct seg_layout, header_crc));
}

void layout_to_config(const struct seg_layout *l, shmq_config_t *cfg)
{
    shmq_config_init(cfg);
    cfg->capacity = l->capacity;
    cfg->max_msg_size = l->max_msg_size;
    cfg->max_procs = l->max_procs;
    cfg->heartbeat_timeout_ms = l->heartbeat_timeout_ms;
    cfg->ack_deadline_ms = l->ack_deadline_ms;
    cfg->max_attempts = l->max_attempts;
    cfg->backoff_base_ms = l->backoff_base_ms;
    cfg->backoff_cap_ms = l->backoff_cap_ms;
    cfg->backoff_multiplier = l->backoff_multiplier;
    cfg->mode = l->mode;
    cfg->durability = (int)l->durability;
    cfg->wal_file_size = l->wal_file_size;
    cfg->log_dir = NULL;
    cfg->log_retention_bytes = l->log_retention_bytes;
    cfg->dedup_window_count = l->dedup_window_count;
    cfg->dedup_window_ms = l->dedup_window_ms;
    cfg->default_ttl_ms = l->default_ttl_ms;
    cfg->expire_policy = l->expire_policy;
}

int layout_validate(const struct seg_layout *stored, uint64_t file_size)
{
    if (stored->magic != SHMQ_MAGIC)
        return -EBADMSG;
    if (stored->version != SHMQ_FORMAT_VERSION)
        return -EPROTO;
    if (stored->header_size != sizeof(struct seg_header) ||
        layout_crc(stored) != stored->header_crc)
        return -EBADMSG;
    shmq_config_t cfg;
    struct seg_layout expect;
    layout_to_config(stored, &cfg);
    if (layout_compute(&cfg, &expect) != 0)
        return -EBADMSG;
    if (memchr(stored->log_dir, 0, sizeof(stored->log_dir)) == NULL)
        return -EBADMSG;
    expect.magic = stored->magic;
    expect.created_ns = stored->created_ns;
    expect.wal_base_pos = stored->wal_base_pos;
    expect.log_gen = stored->log_gen;
    memcpy(expect.log_dir, stored->log_dir, sizeof(expect.log_dir));
    expect.header_crc = stored->header_crc;
    if (memcmp(&expect, stored, sizeof(expect)) != 0)
        return -EBADMSG;
    if (stored->total_size > file_size)
        return -EBADMSG;
    return 0;
}
