/*
 * walgroups.c - the group table a log's GROUP records leave (walgroups.h).
 */
#include "walgroups.h"

#include <stdbool.h>
#include <string.h>

void walgroups_note(struct walgroup_latest *grp, const struct wal_rec *r, const void *payload,
                    uint64_t order)
{
    if (r->id < 1 || r->id >= WAL_MAX_GROUPS || r->len < WAL_GROUP_LEN)
        return;
    grp[r->id].kind = r->attempt & (WAL_GROUP_CREATE | WAL_GROUP_DELETE);
    grp[r->id].order = order;
    memcpy(&grp[r->id].rec, payload, WAL_GROUP_LEN);
}

/* Whether the creation recorded in a is older than the one in b (both creates). */
static bool created_before(const struct walgroup_latest *a, const struct walgroup_latest *b)
{
    return a->rec.since_pos != b->rec.since_pos ? a->rec.since_pos < b->rec.since_pos
                                                : a->order < b->order;
}

/* Names are unique among live groups (create refuses a name an ACTIVE group has), so a later
 * create of the same name means the earlier group was being deleted then: its deleter cleared
 * its bit and was killed (or stopped) before its delete record (group_delete_after_mask), and a
 * segment loss came before maintenance logged the delete. Restored, it would be a second group
 * of that name, and a consumer opening the name could get the old one (review9). Its messages
 * go with it, as a delete's do. */
uint64_t walgroups_created(const struct walgroup_latest *grp, uint32_t ngroups)
{
    uint64_t out = 1;
    for (uint32_t g = 1; g < ngroups && g < WAL_MAX_GROUPS; g++) {
        if (grp[g].kind != WAL_GROUP_CREATE)
            continue;
        bool renamed = false;
        for (uint32_t h = 1; h < ngroups && h < WAL_MAX_GROUPS && !renamed; h++)
            renamed = h != g && grp[h].kind == WAL_GROUP_CREATE &&
                      strncmp(grp[g].rec.name, grp[h].rec.name, sizeof(grp[g].rec.name)) == 0 &&
                      created_before(&grp[g], &grp[h]);
        if (!renamed)
            out |= 1ull << g;
    }
    return out;
}
