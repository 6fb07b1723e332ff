/*
 * stats.h - a consumer group's messages counted by state, and its lag: the one count that
 * shmq_group_stats() (stats.c) and the inspection layer (inspect.c, `shmq stat`/`dump`/`top`)
 * both show, so that a change of how a group holds its messages is made here once.
 */
#ifndef SHMQ_STATS_H
#define SHMQ_STATS_H

#include <stdint.h>

#include "segment.h"
#include "shmq/shmq.h"

/*
 * Fill *st for group g (< max_groups) of s: index, name, first_id, overrun, newest_id, the
 * cells by state (group 0's are the slots), held, lag and the age at now (CLOCK_MONOTONIC ns)
 * of the oldest message it holds ready, delayed or in flight; its consumers' counters and how
 * many are attached (registry entries of g, group_same()). Only loads (no system call):
 * the inspection layer runs it inside its SIGBUS guard. Every word is read once; the name is
 * copied as it is (NUL-terminated here, not checked).
 */
void group_count(const struct segment *s, uint32_t g, uint64_t now, shmq_group_stats_t *st);

#endif
