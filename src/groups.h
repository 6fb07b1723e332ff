/*
 * groups.h - the group table's upkeep for maintenance (groups.c): sweeping deleted groups.
 * The API (shmq_group_create/delete/list) is in shmq.h; what the state machine needs of groups
 * in gcell.h.
 */
#ifndef SHMQ_GROUPS_H
#define SHMQ_GROUPS_H

#include <stdbool.h>
#include <stdint.h>

#include "queue.h"

/* One sweep of group g (>= 1) that is not ACTIVE: its cells READY, DELAYED or DEAD are finished
 * (the slot freed when no group holds it), its rings drained. True when no cell of g is left
 * out of FREE. */
bool groups_sweep(shmq_t *q, uint32_t g);

/* Sweep every DELETING group and free the entries whose sweep came out clean (after their
 * delete record, under the lock); roll forward a dead creator's CREATING entry. */
void groups_maintain(shmq_t *q);

/* The ACTIVE group named group (NULL: group 0, "default"): its index and entry word (word may
 * be NULL), or -ENOENT. The entry may change right after: a consumer re-checks its word. */
int groups_find(shmq_t *q, const char *group, uint32_t *g, uint64_t *word);

/* Retention of the GROUP records (docs/DESIGN.md, "The log with groups"): the record of an
 * ACTIVE or DELETING entry whose file lies lag or more files behind cur is appended again (a
 * copy, under the lock taken without waiting: busy, the next pass); returns the lowest file
 * the entries' latest records are in (UINT64_MAX: none). */
uint64_t groups_keep(shmq_t *q, uint64_t cur, uint64_t lag);

#endif
