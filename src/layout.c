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
#include "errdetail.h"
#include "fanring.h"
#include "ring.h"

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

/* Each refusal names the field and the limit (shmq_last_error_detail()). */
static int config_check(const shmq_config_t *c)
{
    if (c->capacity < 1 || c->capacity > SHMQ_CAPACITY_MAX)
        return err_detail(-EINVAL, "capacity %u is outside 1..%u (SHMQ_CAPACITY_MAX)",
                          c->capacity, SHMQ_CAPACITY_MAX);
    if (c->max_msg_size < 1 || c->max_msg_size > SHMQ_MSG_SIZE_MAX)
        return err_detail(-EINVAL, "max_msg_size %u is outside 1..%u (SHMQ_MSG_SIZE_MAX)",
                          c->max_msg_size, SHMQ_MSG_SIZE_MAX);
    if (c->max_procs < 2 || c->max_procs > SHMQ_PROCS_MAX)
        return err_detail(-EINVAL, "max_procs %u is outside 2..%u (SHMQ_PROCS_MAX)",
                          c->max_procs, SHMQ_PROCS_MAX);
    if (c->heartbeat_timeout_ms < 1)
        return err_detail(-EINVAL, "heartbeat_timeout_ms is 0 (at least 1)");
    if (c->ack_deadline_ms < 1)
        return err_detail(-EINVAL, "ack_deadline_ms is 0 (at least 1)");
    if (c->max_attempts < 1 || c->max_attempts > SHMQ_ATTEMPTS_MAX)
        return err_detail(-EINVAL, "max_attempts %u is outside 1..%u (SHMQ_ATTEMPTS_MAX: the log "
                          "keeps attempts in 16 bits)", c->max_attempts, SHMQ_ATTEMPTS_MAX);
    if (c->backoff_base_ms > c->backoff_cap_ms)
        return err_detail(-EINVAL, "backoff_base_ms %u is above backoff_cap_ms %u",
                          c->backoff_base_ms, c->backoff_cap_ms);
    if (!isfinite(c->backoff_multiplier) || c->backoff_multiplier < 1.0 ||
        c->backoff_multiplier > 1000.0)
        return err_detail(-EINVAL, "backoff_multiplier %g is outside 1..1000",
                          c->backoff_multiplier);
    if (c->mode & ~0777u)
        return err_detail(-EINVAL, "mode %#o has bits beyond 0777", (unsigned)c->mode);
    if (c->durability < SHMQ_DURABILITY_NONE || c->durability > SHMQ_DURABILITY_SYNC)
        return err_detail(-EINVAL, "durability %d is not a SHMQ_DURABILITY_* (0..2)",
                          c->durability);
    if (c->durability != SHMQ_DURABILITY_NONE) {
        /* with headers, a record may carry a due time, its block and the block's length too */
        uint64_t hdrs = c->max_header_bytes ? WAL_PUBLISH_DUE_LEN + WAL_PUBLISH_HDRS_LEN +
                                                  (uint64_t)c->max_header_bytes
                                            : 0;
        uint64_t need =
            WAL_HEADER_SIZE +
            2 * wal_rec_size((uint32_t)(c->max_msg_size + WAL_PUBLISH_PREFIX + WAL_KEY_MAX + hdrs));
        if (c->wal_file_size < WAL_FILE_MIN || c->wal_file_size % 4096 != 0)
            return err_detail(-EINVAL, "wal_file_size %u is not a multiple of 4096 of at least "
                              "%u (SHMQ_WAL_FILE_MIN)", c->wal_file_size, WAL_FILE_MIN);
        if (c->wal_file_size < need) /* a file must hold two records of the largest size */
            return err_detail(-EINVAL, "wal_file_size %u is below %llu bytes, two log records "
                              "of max_msg_size %u (and max_header_bytes %u)", c->wal_file_size,
                              (unsigned long long)need, c->max_msg_size, c->max_header_bytes);
    }
    if (c->max_header_bytes > SHMQ_HEADER_BYTES_MAX)
        return err_detail(-EINVAL, "max_header_bytes %u is above %u (SHMQ_HEADER_BYTES_MAX)",
                          c->max_header_bytes, SHMQ_HEADER_BYTES_MAX);
    if (c->max_header_bytes && (c->max_headers < 1 || c->max_headers > SHMQ_HEADERS_MAX))
        return err_detail(-EINVAL, "max_headers %u is outside 1..%u (SHMQ_HEADERS_MAX) with "
                          "max_header_bytes %u", c->max_headers, SHMQ_HEADERS_MAX,
                          c->max_header_bytes);
    if (c->log_dir && strlen(c->log_dir) > SHMQ_LOG_DIR_MAX)
        return err_detail(-EINVAL, "log_dir is %zu bytes long, above %d (SHMQ_LOG_DIR_MAX)",
                          strlen(c->log_dir), SHMQ_LOG_DIR_MAX);
    if (c->max_groups < 1 || c->max_groups > SHMQ_GROUPS_MAX)
        return err_detail(-EINVAL, "max_groups %u is outside 1..%d (SHMQ_GROUPS_MAX)",
                          c->max_groups, SHMQ_GROUPS_MAX);
    if (c->dedup_window_count > SHMQ_DEDUP_WINDOW_MAX)
        return err_detail(-EINVAL, "dedup_window_count %u is above %u (SHMQ_DEDUP_WINDOW_MAX)",
                          c->dedup_window_count, SHMQ_DEDUP_WINDOW_MAX);
    if (c->dedup_window_count && c->dedup_window_ms == 0)
        return err_detail(-EINVAL, "dedup_window_ms is 0 with a dedup window of %u keys",
                          c->dedup_window_count);
    if (c->expire_policy != SHMQ_EXPIRE_DROP && c->expire_policy != SHMQ_EXPIRE_DEAD_LETTER)
        return err_detail(-EINVAL, "expire_policy %u is not a SHMQ_EXPIRE_*", c->expire_policy);
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
    l->max_header_bytes = cfg->max_header_bytes;
    l->max_headers = cfg->max_header_bytes ? cfg->max_headers : 0;
    /* the header block, if any, follows the payload's room: a u32 length and the bytes */
    l->slot_stride = (uint32_t)(SLOT_HEADER_SIZE + align_up(cfg->max_msg_size, CACHE_LINE) +
                                (cfg->max_header_bytes
                                     ? align_up(4 + (uint64_t)cfg->max_header_bytes, CACHE_LINE)
                                     : 0));

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
    l->max_groups = cfg->max_groups;
    struct group_regions g;
    layout_group_regions(l, &g);
    l->total_size = align_up(g.end, 4096);
    if (l->total_size > SHMQ_SEGMENT_MAX) /* each field in range, not all of them together */
        return err_detail(-EINVAL, "the segment would be %llu bytes, above the limit %llu "
                          "(SHMQ_SEGMENT_MAX): lower capacity (%u), max_msg_size (%u), "
                          "max_procs (%u), dedup_window_count (%u) or max_groups (%u)",
                          (unsigned long long)l->total_size, (unsigned long long)SHMQ_SEGMENT_MAX,
                          cfg->capacity, cfg->max_msg_size, cfg->max_procs,
                          cfg->dedup_window_count, cfg->max_groups);
    return 0;
}

void layout_group_regions(const struct seg_layout *l, struct group_regions *g)
{
    uint64_t off = l->dedup_buckets ? l->dedup_off + (uint64_t)l->dedup_buckets * DEDUP_BUCKET_SIZE
                                    : l->dead_ring_off + l->ring_size;
    uint64_t extra = l->max_groups > 1 ? l->max_groups - 1u : 0;
    g->groups_off = off = align_up(off, 4096);
    off += (uint64_t)l->max_groups * sizeof(struct group_entry);
    g->fanout_off = off = align_up(off, 4096);
    off += extra ? (uint64_t)l->capacity * sizeof(uint64_t) : 0;
    g->cells_off = off = align_up(off, 4096);
    off += extra * l->capacity * sizeof(struct slot);
    g->grings_off = off = align_up(off, 4096);
    off += extra * 2 * l->ring_size;
    g->fanring_off = off = align_up(off, 4096);
    g->fan_cells = 0;
    if (extra) {
        uint64_t cells = 1;
        while (cells < 2ull * l->capacity)
            cells <<= 1;
        g->fan_cells = cells;
        off += fanring_bytes(l->max_groups, l->capacity, cells);
    }
    g->end = off;
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
    cfg->max_groups = l->max_groups ? l->max_groups : 1; /* 0: a log file from before groups */
    cfg->max_header_bytes = l->max_header_bytes;
    cfg->max_headers = l->max_headers;
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
