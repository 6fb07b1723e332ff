/*
 * walgroups.h - the consumer groups a log's GROUP records leave (rule R-G, docs/DESIGN.md "The
 * log with groups"): the latest record of each group index, and the groups a rebuild restores.
 * One rule for recovery (recover.c) and for the inspection layer's prediction (inspect.c,
 * `shmq wal NAME inspect`).
 */
#ifndef SHMQ_WALGROUPS_H
#define SHMQ_WALGROUPS_H

#include <stdint.h>

#include "wal.h"

/* The latest GROUP record of an index (kind 0: none). */
struct walgroup_latest {
    unsigned kind;  /* WAL_GROUP_CREATE or WAL_GROUP_DELETE, 0: none */
    uint64_t order; /* the record's place in the log: file seq << 32 | offset / WAL_ALIGN */
    struct wal_group rec;
};

/* GROUP record r (type WAL_GROUP) with its payload, at order, read in log order: it becomes the
 * latest of its index (grp[WAL_MAX_GROUPS]). One with an index out of range or a short payload
 * is left out. */
void walgroups_note(struct walgroup_latest *grp, const struct wal_rec *r, const void *payload,
                    uint64_t order);

/* The groups the records leave created (bit 0 always): each index < ngroups whose latest record
 * is a create, except one whose name a later create took (walgroups.c). */
uint64_t walgroups_created(const struct walgroup_latest *grp, uint32_t ngroups);

#endif
