/*
 * dlq.c - the dead-letter ring: list, redrive, purge.
 *
 * A dead letter is a slot in state DEAD whose index was enqueued on the dead ring. Redrive and
 * purge drain the ring once (as many entries as it held when they began): a matching DEAD slot
 * moves on (READY with attempt 0, or done with via slot_finish), a non-matching one is put back,
 * a stale entry (slot no longer DEAD) is dropped. A DEAD slot that no entry named (its
 * dead-letterer died before enqueueing it) is then found by a scan. Every move is a CAS from
 * the observed word, so concurrent callers and maintainers cannot move a slot twice.
 *
 * Per group (the *_group calls): the same on group g's cells and its dead ring (group 0's cell
 * is the slot itself, its ring the queue's dead ring). The message's id, length and payload are
 * the slot's; attempt and reason the cell's. A redrive makes the cell READY on g's ready ring;
 * a purge finishes the cell (the slot is freed once no group holds it, V2). Their records are
 * the group's: a purge's ACK of group g, a redrive's PUBLISH with the mask {g} (FORMAT.md 9).
 */
#include <errno.h>
#include <stdlib.h>

#include "crashpoint.h"
#include "expire.h"
#include "groups.h"
#include "queue.h"
#include "slot.h"
#include "slotmove.h"

static int by_id(const void *a, const void *b)
{
    const shmq_dead_letter_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int dlq_list(shmq_t *q, uint32_t g, shmq_dead_letter_t *out, size_t max, size_t *n)
{
    const struct seg_layout *l = &q->seg.layout;
    shmq_dead_letter_t *all = malloc(sizeof(*all) * l->capacity);
    if (!all)
        return -ENOMEM;
    size_t k = 0;
    for (uint32_t i = 0; i < l->capacity; i++) {
        struct slot *sl = segment_slot(&q->seg, i), *cl = segment_cell(&q->seg, g, i);
        /* acquire: pairs with the release that made the cell DEAD: reason complete, and the
         * slot's id and len (P1, before the cell's F4 release) */
        if (sw_state(atomic_load_explicit(&cl->state, memory_order_acquire)) != SLOT_DEAD)
            continue;
        uint32_t len = sl->len;
        all[k++] = (shmq_dead_letter_t){.id = sl->id, .attempt = cl->attempt,
                                        .reason = cl->dead_reason,
                                        .len = len <= l->max_msg_size ? len : 0,
                                        .data = slot_payload(sl)};
    }
    qsort(all, k, sizeof(*all), by_id);
    *n = k < max ? k : max;
    for (size_t i = 0; i < *n; i++)
        out[i] = all[i];
    free(all);
    return 0;
}

int shmq_dlq_list(shmq_t *q, shmq_dead_letter_t *out, size_t max, size_t *n)
{
    if (!q || !n || (!out && max))
        return -EINVAL;
    return dlq_list(q, 0, out, max, n);
}

int shmq_dlq_list_group(shmq_t *q, const char *group, shmq_dead_letter_t *out, size_t max,
                        size_t *n)
{
    uint32_t g;
    if (!q || !n || (!out && max))
        return -EINVAL;
    int err = groups_find(q, group, &g, NULL);
    return err ? err : dlq_list(q, g, out, max, n);
}

/*
 * Move one DEAD cell of group g (word w) on: redrive (READY, attempt 0) or purge (freed, an ACK of its id
 * logged). 1 if it moved, 0 if another caller moved it first, or the log's error (a purge's
 * -EIDRM only: its slot is freed). A redrive first claims the slot (CAS
 * DEAD(g) -> DEAD(self, g+1)), so that only one redrive writes its fields and its PUBLISH record;
 * it logs before it changes anything, and gives the slot back DEAD if logging fails.
 * A group >= 1's records name it (docs/FORMAT.md section 9: a purge's ACK is the group's, a
 * redrive's PUBLISH carries the mask {g}, so a rebuild makes the message ready again in g alone),
 * and its redrive in a group deleted meanwhile finishes the cell instead (no cell of a group
 * that is not ACTIVE goes READY).
 */
/* Does a group other than g hold the message of slot idx live (ready, delayed or in flight)?
 * A look, not a snapshot: a cell that moves on meanwhile only keeps an expiry a redrive could
 * have lifted. */
static bool others_hold_live(const shmq_t *q, uint32_t g, uint32_t idx)
{
    for (uint32_t h = 0; h < q->seg.layout.max_groups; h++) {
        const struct slot *c = h == g ? NULL : segment_cell(&q->seg, h, idx);
        /* relaxed: a hint (above) */
        unsigned st = c ? sw_state(atomic_load_explicit(&c->state, memory_order_relaxed)) : 0;
        /* a RESERVED cell of g >= 1 is pending (the slot is committed: we hold its word or a
         * cell of it DEAD): ready for its group in the fan-out ring */
        if (st == SLOT_READY || st == SLOT_DELAYED || st == SLOT_INFLIGHT ||
            (h && st == SLOT_RESERVED))
            return true;
    }
    return false;
}

static int move_dead(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w, bool redrive)
{
    struct slot *sl = segment_slot(&q->seg, idx), *cl = segment_cell(&q->seg, g, idx);
    if (!redrive) {
        uint64_t id = sl->id; /* the DEAD word's message (the caller's acquire load of w) */
        if (cell_finish(q, g, idx, w) != 0)
            return 0;
        /* after the CAS, as shmq_purge's: the dead letter's DEAD record was the latest of its
         * id, so a rebuild brought every purged dead letter back. Other log errors: purged in
         * the segment all the same (counted by the log) */
        return queue_log(q, wal_type_of(WAL_ACK, g), id, 0) == -EIDRM ? -EIDRM : 1;
    }
    uint64_t mine = sw_next(w, SLOT_DEAD, q->self);
    /* acquire: the dead-letterer's writes (reason, attempt) are seen; nobody else moves it now */
    if (!atomic_compare_exchange_strong_explicit(&cl->state, &w, mine, memory_order_acquire,
                                                 memory_order_relaxed))
        return 0;
    /* the expiry is the message's (the slot's), shared by its groups: a redrive lifts it only
     * when no other group holds the message live; else the redriven copy keeps it, and its
     * record says so (lifted for all, another group got the message past its expiry: review7) */
    uint64_t expire = groups_on(q) && others_hold_live(q, g, idx) ? slot_expire(sl) : EXPIRE_NEVER;
    uint64_t expire_unix = expire != EXPIRE_NEVER ? expire_unix_ms(q, expire) : 0;
    if (q->wal) { /* its DEAD record resolved it: a new PUBLISH record, after it, makes it live */
        uint32_t seq, len = sl->len;
        /* wal_seq keeps pinning the file of the dead letter's own records until the new PUBLISH
         * is written (it pins every later file too, so the one the new record lands in): moved
         * first, a redriver killed or stopped before its append left the dead letter with no
         * record retention would keep (review F5) */
        CRASH_POINT(redrive_before_append);
        int err = len > q->seg.layout.max_msg_size
                      ? -EBADMSG
                      : queue_log_slot(q, sl, sl->id, 0,
                                       &(struct wal_times){0, 0, expire_unix, 1ull << g}, len,
                                       &seq);
        if (err) { /* back to the dead letters, as it was */
            cell_move(q, g, idx, mine, sw_next(mine, SLOT_DEAD, NO_OWNER));
            return err;
        }
        /* with groups the slot keeps pinning its PUBLISH record: the other groups' states
         * rest on it (this record names g alone) */
        if (!groups_on(q))
            atomic_store_explicit(&sl->wal_seq, seq + 1, memory_order_relaxed);
    }
    cl->attempt = 0; /* the CAS below publishes these to the deliverer */
    cl->dead_reason = 0;
    slot_set_expire(sl, expire); /* redriven: none, or the one it shares (above) */
    if (g && !group_active(q, g)) { /* deleted meanwhile: its message ends here */
        cell_finish(q, g, idx, mine);
        return 0;
    }
    return cell_move(q, g, idx, mine, sw_next(mine, SLOT_READY, NO_OWNER));
}

static int dlq_move(shmq_t *q, uint32_t g, uint64_t id, uint32_t *moved, bool redrive)
{
    struct ring *dr = &q->seg.gdead[g];
    uint32_t count = 0, idx;
    int rc = 0;
    uint64_t ticket, pending = ring_tail(dr) - ring_head(dr);
    if (pending > dr->mask + 1)
        pending = dr->mask + 1;
    for (uint64_t i = 0; i < pending && ring_dequeue(dr, &idx, &ticket) == 0; i++) {
        struct slot *sl = segment_slot(&q->seg, idx), *cl = segment_cell(&q->seg, g, idx);
        if (!sl)
            continue;
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        if (sw_state(w) != SLOT_DEAD)
            continue; /* stale entry */
        if (id == 0 || sl->id == id) {
            int m = move_dead(q, g, idx, w, redrive);
            count += m > 0;
            if (m < 0) {
                rc = m; /* a redrive put it back on the dead ring; a purge freed it */
                break;
            }
        } else
            queue_enqueue_cell(q, g, idx, w); /* not ours to move: back on the ring */
    }
    for (uint32_t i = 0; i < q->seg.layout.capacity; i++) { /* dead letters no entry named */
        struct slot *sl = segment_slot(&q->seg, i), *cl = segment_cell(&q->seg, g, i);
        uint64_t w = atomic_load_explicit(&cl->state, memory_order_acquire);
        if (rc == 0 && sw_state(w) == SLOT_DEAD && (id == 0 || sl->id == id)) {
            int m = move_dead(q, g, i, w, redrive);
            count += m > 0;
            rc = m < 0 ? m : 0;
        }
    }
    if (moved)
        *moved = count;
    return rc;
}

/* The dead letters of group (NULL: group 0) moved on: redrive or purge. */
static int dlq_move_group(shmq_t *q, const char *group, uint64_t id, uint32_t *moved,
                          bool redrive)
{
    uint32_t g;
    if (moved)
        *moved = 0;
    if (!q)
        return -EINVAL;
    int err = groups_find(q, group, &g, NULL);
    return err ? err : dlq_move(q, g, id, moved, redrive);
}

int shmq_dlq_redrive(shmq_t *q, uint64_t id, uint32_t *moved)
{
    return dlq_move_group(q, NULL, id, moved, true);
}

int shmq_dlq_purge(shmq_t *q, uint64_t id, uint32_t *purged)
{
    return dlq_move_group(q, NULL, id, purged, false);
}

int shmq_dlq_redrive_group(shmq_t *q, const char *group, uint64_t id, uint32_t *moved)
{
    return dlq_move_group(q, group, id, moved, true);
}

int shmq_dlq_purge_group(shmq_t *q, const char *group, uint64_t id, uint32_t *purged)
{
    return dlq_move_group(q, group, id, purged, false);
}
