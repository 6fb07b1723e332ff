/*
 * abi.h - the sizes of the public structs that can grow (include/shmq/shmq.h, "ABI").
 *
 * A caller tells the library the sizeof of its struct (shmq_config_t.size, or the size the
 * header's macro passes to a *_size call). ABI_*_SIZE_0 is each struct's first layout, the
 * smallest size accepted and the one the plain symbols use; the largest is the library's own
 * sizeof. These numbers are offsets of named fields, which never move.
 */
#ifndef SHMQ_ABI_H
#define SHMQ_ABI_H

#include <stddef.h>

#include "shmq/seen.h"
#include "shmq/shmq.h"

#define ABI_END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
#define ABI_CONFIG_SIZE_0 ABI_END(shmq_config_t, dedup_window_ms)
#define ABI_STATS_SIZE_0 ABI_END(shmq_stats_t, recovered_bad_regions)
#define ABI_RECOVERY_SIZE_0 ABI_END(shmq_recovery_report_t, holes)
#define ABI_MAINT_SIZE_0 ABI_END(shmq_maint_report_t, pinned)
#define ABI_GROUP_STATS_SIZE_0 ABI_END(shmq_group_stats_t, name)
#define ABI_SEEN_STATS_SIZE_0 ABI_END(shmq_seen_stats_t, compactions)

/* Whether a caller's struct of size bytes is one the library knows: first..own. */
static inline int abi_size_ok(size_t size, size_t first, size_t own)
{
    return size >= first && size <= own;
}

/* The caller's config in the library's own layout: the fields the caller's (possibly older,
 * smaller) struct lacks take their defaults. -EINVAL for NULL or a size it does not know. */
int abi_config_in(const shmq_config_t *in, shmq_config_t *out);

/* Copy a filled struct of the library's layout (own bytes) to the caller's size bytes. */
void abi_copy_out(void *dst, size_t size, const void *src, size_t own);

#endif /* SHMQ_ABI_H */
