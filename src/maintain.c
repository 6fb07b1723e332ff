/*
 * maintain.c - one maintenance step: reclaim, repair, fire delayed messages, fence the hung.
 *
 * Every repair is a CAS on a state word that expects the exact word observed, so the step is
 * idempotent and several maintainers may run at once: of two that try the same repair, one
 * CAS wins and the other fails harmlessly. Re-enqueueing when unsure is safe because a stale
 * or duplicate ring entry fails the dequeuer's state check (principle 1 of docs/DESIGN.md).
 *
 *  1. Registry: an ACTIVE or CLAIMED entry whose process is dead (pid gone, zombie or reused;
 *     a CLAIMED entry judged by the claimer's pid in its word, G3 in registry.h) becomes FENCED;
 *     so does a consumer that is hung by the rule in shmq.h (stale heartbeat: 1x the timeout if
 *     stopped, 3x otherwise). The sleepers a dead entry left counted are uncounted (wait.h).
 *  2. Slots: INFLIGHT of a fenced owner, or past its ack deadline -> READY (or DEAD at
 *     max_attempts). If the owner still lives, the slot's linger names its delivery first, so
 *     the slot is not reused while it may read it (slotmove.c; docs/DESIGN.md T1-T5); if
 *     another live reader lingers there already, the message is copied out to a free slot
 *     (copy_out). RESERVED of a dead owner -> FREE; DELAYED and due -> READY; FENCED whose
 *     readers let go or died -> FREE; a READY or FREE slot that no ring holds (its ring's head
 *     passed the recorded ticket, or none was recorded) for longer than ORPHAN_GRACE_NS with its
 *     word unchanged -> same state, gen + 1 (fencing a late dequeuer that may still hold the
 *     entry), enqueued again.
 *  3. A FENCED entry of a dead process that no slot names (as owner or linger) becomes FREE
 *     (a fenced process that lives releases its entry itself when it closes).
 *  4. Log retention: files below both the file being written when the pass began and the lowest
 *     file a kept slot refers to are deleted, unless a copy-out began during the scan (M1/M2).
 *
 * Consumer groups (docs/DESIGN.md, "Consumer groups"): step 2 also looks at each group >= 1's
 * cell of every slot and repairs it as a slot (take-back with the cell's linger, firing, orphans
 * on the group's ring, FENCED cells), except that a take-back that finds the cell's linger set
 * waits for a later pass (no copy-out for groups >= 1) and nothing of groups >= 1 is logged yet.
 * Two repairs are the groups' own: a cell still RESERVED under a committed slot (its producer
 * died or stopped between P1 and F4) is made READY after the orphan grace (who finishes the
 * fan-out), and a slot HELD whose groups are all done (a finisher killed before its release
 * check) is freed. Deleted groups are swept (groups.c), and an OVERRUN group holding more than
 * its bound loses its oldest ready messages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "clock.h"
#include "crashpoint.h"
#include "dedup.h"
#include "expire.h"
#include "gcell.h"
#include "groups.h"
#include "queue.h"
#include "registry.h"
#include "setconfig.h"
#include "settings.h"
#include "slot.h"
#include "slotmove.h"
#include "wait.h"

#define ORPHAN_GRACE_NS (100ull * 1000000ull)
#define CHECKPOINT_LAG_FILES 2
#define TICKET_BITS 40

struct pass {
    shmq_t *q;
    shmq_maint_report_t *rep;
    uint64_t now_ns, now_ms;
    uint32_t *refs;   /* slots naming each registry entry, as owner or linger */
    uint8_t *dead;    /* per registry entry: 1 if its process is dead or the entry is free */
    uint8_t *fenced;  /* per registry entry: 1 if FENCED or FREE (its deliveries are void) */
    uint64_t *words;  /* per registry entry: its word when dead/fenced were decided */
    uint64_t min_wal_seq; /* lowest log file a slot refers to */
    uint64_t wal_cur;     /* the file being written when the pass began */
    uint64_t held[SHMQ_GROUPS_MAX]; /* messages each group holds (cells not FREE) */
};

/* A consumer's progress: its deliveries, acks and nacks (relaxed: tallies its one thread
 * stores; some recent value is enough). */
static uint64_t progress(const struct proc_entry *e)
{
    return atomic_load_explicit(&e->counters[CNT_DELIVERED], memory_order_relaxed) +
           atomic_load_explicit(&e->counters[CNT_ACKED], memory_order_relaxed) +
           atomic_load_explicit(&e->counters[CNT_NACKED], memory_order_relaxed);
}

/* H1: an ack or a nack reads no clock and refreshes no heartbeat (issue 17: one clock read per
 * message); its count is the sign of life instead. A pass that finds a consumer's progress
 * changed since the last pass saw it refreshes the heartbeat for it, to the pass's time, before
 * judging it: a consumer that only acks (a batch handled one by one) stays alive as long as it
 * acks, judged at most one pass interval late (docs/DESIGN.md, "Registry and liveness"). */
static void note_progress(const struct pass *p, struct proc_entry *e)
{
    uint64_t done = progress(e);
    /* relaxed: a hint between maintainers; two that race store the same or a newer sum */
    if (done == atomic_load_explicit(&e->progress_seen, memory_order_relaxed))
        return;
    atomic_store_explicit(&e->progress_seen, done, memory_order_relaxed);
    uint64_t hb = atomic_load_explicit(&e->heartbeat_ns, memory_order_relaxed);
    /* relaxed CAS: never moves the heartbeat back over a newer one the consumer stored */
    if (hb < p->now_ns)
        atomic_compare_exchange_strong_explicit(&e->heartbeat_ns, &hb, p->now_ns,
                                                memory_order_relaxed, memory_order_relaxed);
}

/* Is a live consumer hung? (the rule documented at shmq_maintain) */
static bool consumer_hung(const struct pass *p, const struct proc_entry *e)
{
    uint64_t hb = atomic_load_explicit(&e->heartbeat_ns, memory_order_relaxed);
    /* the timeout in use, or the one before a lowering while its grace lasts (K4) */
    uint64_t timeout =
        (uint64_t)settings_liveness_timeout_ms(&p->q->seg.hdr->settings, p->now_ms / 1000) *
        1000000ull;
    if (!(e->role & ROLE_CONSUMER) || hb + timeout >= p->now_ns || hb > p->now_ns)
        return false;
    char st = proc_run_state(e->pid);
    uint64_t limit = (st == 'T' || st == 't') ? timeout : 3 * timeout;
    return p->now_ns - hb > limit;
}

/* Count an entry fenced as dead and name its process (judged by pid: G3) in the report, once,
 * while there is room. */
static void note_dead_pid(shmq_maint_report_t *r, int32_t pid)
{
    r->procs_dead++;
    for (uint32_t i = 0; i < r->dead_pids_n; i++)
        if (r->dead_pids[i] == pid)
            return;
    if (r->dead_pids_n < SHMQ_MAINT_DEAD_PIDS)
        r->dead_pids[r->dead_pids_n++] = pid;
}

static void fence_dead_procs(struct pass *p)
{
    struct segment *s = &p->q->seg;
    for (uint32_t i = 0; i < s->layout.max_procs; i++) {
        struct proc_entry *e = segment_proc(s, i);
        /* acquire: pairs with G1 (attach), so pid and start time are complete */
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
        unsigned st = pw_state(w);
        /* a CLAIMED entry is judged by the claimer's pid in its word (G3, registry.h) */
        p->dead[i] = st == PROC_FREE || registry_holder_dead(e, w);
        if (st == PROC_ACTIVE && !p->dead[i] && (e->role & ROLE_CONSUMER))
            note_progress(p, e);
        if (st == PROC_ACTIVE || st == PROC_CLAIMED) {
            bool hung = !p->dead[i] && st == PROC_ACTIVE && consumer_hung(p, e);
            uint64_t seen = w; /* a failed CAS must not replace the word the verdict is about */
            if ((p->dead[i] || hung) &&
                atomic_compare_exchange_strong(&e->word, &seen, pw_next(w, PROC_FENCED))) {
                if (hung)
                    p->rep->procs_hung++;
                else
                    note_dead_pid(p->rep, st == PROC_CLAIMED ? (int32_t)pw_claimer(w) : e->pid);
                st = PROC_FENCED;
            }
        }
        p->fenced[i] = st == PROC_FENCED || st == PROC_FREE;
        p->words[i] = st == PROC_FENCED && pw_state(w) != PROC_FENCED ? pw_next(w, PROC_FENCED) : w;
        /* sleepers of every kind it left counted; only while the entry is still the one judged
         * (F6: a newcomer may have attached and been fenced meanwhile) */
        if (st == PROC_FENCED && p->dead[i] &&
            atomic_load_explicit(&e->word, memory_order_acquire) == p->words[i]) {
            /* its group's count (written before G1, which our acquire of the word saw); one
             * out of range (a damaged entry) uncounts no ready sleeper */
            uint32_t g = e->group;
            _Atomic uint32_t none = 0;
            wait_uncount_dead(g < s->layout.max_groups ? group_ready_waiters(p->q, g) : &none,
                              g < s->layout.max_groups && groups_on(p->q) ? s->fan.waiters : NULL,
                              &s->hdr->free_waiters, e);
        }
    }
}

/* Move group g's cell of slot idx (the slot itself for g 0) from word w to next and enqueue it
 * (queue_enqueue_cell: a cell of g >= 1 going FREE releases the slot if no group holds it);
 * true if this call did it. */
static bool move_cell(struct pass *p, uint32_t g, uint32_t idx, uint64_t w, uint64_t next)
{
    if (g && sw_state(next) == SLOT_FREE) /* done: counted out of the release count (R-pre, R-dec) */
        return cell_move(p->q, g, idx, w, next);
    struct slot *sl = segment_cell(&p->q->seg, g, idx);
    /* acq_rel: acquire the last owner's writes, release ours to the next owner; seq_cst (the
     * same instruction) for a cell going FREE (V2) */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w, next, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return false;
    CRASH_POINT(maintain_after_fence);
    queue_enqueue_cell(p->q, g, idx, next);
    return true;
}

static bool move_slot(struct pass *p, uint32_t idx, uint64_t w, uint64_t next)
{
    return move_cell(p, 0, idx, w, next);
}

/* Did the receiver of in-flight word w count its delivery in attempt? It did once it stored
 * the deadline tagged with w (consume.c), and a nack under way stores its due time tagged with
 * the next word (gen + 1) before its CAS: counted too. Only a receiver that died (or stopped)
 * between C1 and its deadline store left it uncounted. */
static bool delivery_counted(const struct slot *sl, uint64_t w)
{
    uint64_t d = atomic_load_explicit(&sl->deadline, memory_order_relaxed), due;
    return tagged_get(d, w, &due) || (d & TAG_MASK) == ((sw_gen(w) + 1) & TAG_MASK);
}

/* Log and count a message taken back (NACK with its attempts, or DEAD). */
/* dead_logged: its DEAD record was written before the move (take_back) */
static void taken_back(struct pass *p, uint32_t g, uint64_t id, uint32_t attempt, bool dead,
                       bool dead_logged)
{
    if (!dead)
        queue_log_nack(p->q, g, id, attempt, 0);
    else if (!dead_logged) /* a copy out (below): logged after its move, an exception noted in
                            * docs/DESIGN.md ("Records that decide in the right order") */
        queue_log_dead(p->q, g, id, attempt, SHMQ_DEAD_MAX_ATTEMPTS);
    if (dead) {
        p->rep->dead_lettered++;
        count(q_self(p->q), CNT_DEAD_LETTERED);
    } else {
        count(q_self(p->q), CNT_RECLAIMED);
    }
}

/* A message was taken back from consumer entry owner (its in-flight word named it): add it to
 * the entry's taken_back, if the entry is still the one this pass judged (a consumer that
 * closed meanwhile is gone from the listing; its entry may already be someone else's). An
 * atomic add (several maintainers may count at once), relaxed: a tally. The check and the add
 * are two steps: an entry released and attached again between them (its consumer closed, a new
 * one attached, in that instant) gets the one count. */
static void count_taken_from(struct pass *p, uint32_t owner)
{
    if (owner >= p->q->seg.layout.max_procs)
        return;
    struct proc_entry *e = segment_proc(&p->q->seg, owner);
    if (e && atomic_load_explicit(&e->word, memory_order_relaxed) == p->words[owner])
        atomic_fetch_add_explicit(&e->taken_back, 1, memory_order_relaxed);
}

/*
 * Copy-out: the in-flight slot idx (word w) of a live holder already has a different lingering
 * reader, and one linger field cannot name two. So the message moves: a free slot is claimed,
 * the message copied into it and parked DELAYED (due one ack deadline from now: if we die here
 * it is delivered then, at least once); then the old slot goes INFLIGHT -> FENCED(owner = the
 * holder), keeping both readers, and the copy becomes READY (or DEAD). If the holder acked or
 * nacked first, the copy is freed. No free slot: a later pass tries again.
 * Between the copy's wal_seq and the FENCED CAS it bumps the header's moves (M1): a retention
 * scan that may have looked at the copy too early and at the source too late sees the bump and
 * deletes nothing that pass (M2, shmq_maintain), the copier's own pass included.
 */
static bool copy_out(struct pass *p, uint32_t idx, struct slot *sl, uint64_t w)
{
    shmq_t *q = p->q;
    const struct seg_layout *l = &q->seg.layout;
    uint32_t to;
    if (slot_claim(q, q->self, CLAIM_ALL, &to) != 0) /* every slot: the copy needs any free one */
        return false;
    struct slot *ns = segment_slot(&q->seg, to);
    uint64_t nw = atomic_load_explicit(&ns->state, memory_order_relaxed); /* RESERVED(us) */
    uint32_t len = sl->len, attempt = sl->attempt + (delivery_counted(sl, w) ? 0 : 1);
    if (len > l->max_msg_size)
        len = 0; /* a corrupted length: never copied out of bounds */
    ns->id = sl->id;
    ns->len = len;
    ns->attempt = attempt;
    ns->publish_ns = sl->publish_ns;
    if (groups_on(q)) { /* a copy is group 0's only: F2 with m = {0} (published by the CAS
                         * below); never filled (FP0): no hint of the slot's last message
                         * names it */
        fan_unfilled(&q->seg.fan, to, FANPOS_NONE);
        fanout_record(&q->seg, to, 1);
    }
    /* parked, the copy is the message in flight (its live holder may still ack or nack the
     * source): it expires no earlier than it is due, so no pass expires it under the holder (a
     * dead letter besides the holder's ack, or a second one besides its nack past the expiry);
     * its own expiry is put back once the source is fenced. Fired by another maintainer (we
     * died or stopped), it is READY at its due time, which it is then past if its expiry was
     * earlier: expired at once, never delivered */
    uint64_t expire = slot_expire(sl);
    uint64_t due_ms = p->now_ms + settings_ack_deadline_ms(&q->seg.hdr->settings);
    uint64_t due_ns = l->created_ns + due_ms * 1000000ull; /* fired when queue ms >= due_ms */
    uint64_t parked_expire = expire > due_ns ? expire : due_ns;
    slot_set_expire(ns, parked_expire);
    atomic_store_explicit(&ns->dedup, 0, memory_order_relaxed);
    /* F3: no wal_seq while RESERVED: freed after our death, the reservation must not look like
     * a logged publish (its ACK|ABORT would resolve the live message's id in the log) */
    atomic_store_explicit(&ns->wal_seq, 0, memory_order_relaxed);
    memcpy(slot_payload(ns), slot_payload(sl), len);
    struct slot_hdrs *nh = slot_headers(&q->seg, ns), *oh = slot_headers(&q->seg, sl);
    if (nh) { /* the headers go with it (a bad length: none) */
        nh->len = slot_headers_len(&q->seg, oh);
        memcpy(nh->bytes, oh->bytes, nh->len);
    }
    CRASH_POINT(copy_out_after_copy);
    uint64_t parked = sw_next(nw, SLOT_DELAYED, NO_OWNER);
    atomic_store_explicit(&ns->deadline, tagged_make(due_ms, parked), memory_order_relaxed);
    /* the mark of a parked copy (fire_delayed): the reason it dies of if it fires at
     * max_attempts; a nack's backoff clears it (published by the CAS below) */
    ns->dead_reason = SHMQ_DEAD_MAX_ATTEMPTS;
    /* release: the copy is complete for whoever fires or frees the parked slot. A CAS: a
     * reservation is never taken from a live process, but we do not write over one that was */
    if (!atomic_compare_exchange_strong_explicit(&ns->state, &nw, parked, memory_order_release,
                                                 memory_order_relaxed))
        return false;
    /* relaxed: the source (still INFLIGHT) pins its log file until the FENCED CAS below; M1
     * (release, below) orders this store before both */
    atomic_store_explicit(&ns->wal_seq, atomic_load_explicit(&sl->wal_seq, memory_order_relaxed),
                          memory_order_relaxed);
    CRASH_POINT(copy_out_after_park);
    /* M1 (release): a retention scan that reads this bump (M2, before its scan) sees the copy's
     * wal_seq stored above; one that sees the source FENCED (the CAS below releases this bump)
     * reads it after its scan and deletes nothing this pass (shmq_maintain) */
    atomic_fetch_add_explicit(&q->seg.hdr->moves, 1, memory_order_release);
    /* acq_rel: the holder's writes before w are ours; ours (the copy) precede the FENCED word */
    if (!atomic_compare_exchange_strong_explicit(&sl->state, &w,
                                                 sw_next(w, SLOT_FENCED, sw_owner(w)),
                                                 memory_order_acq_rel, memory_order_relaxed)) {
        move_slot(p, to, parked, sw_next(parked, SLOT_FREE, NO_OWNER)); /* acked meanwhile */
        return false;
    }
    CRASH_POINT(copy_out_after_fence);
    count_taken_from(p, sw_owner(w));
    bool dead = attempt >= settings_max_attempts(&q->seg.hdr->settings);
    /* dead: its dead_reason is the parked copy's mark, max attempts (no write here: another
     * maintainer firing the copy reads it) */
    /* taken from the holder now: its own expiry again. A CAS from the parked one: fired by
     * another maintainer meanwhile (we stopped here past its due time), the slot may hold
     * another message by now, whose expiry is not ours to change (relaxed: the move below
     * publishes it) */
    atomic_compare_exchange_strong_explicit(&ns->expire_ns, &parked_expire, expire,
                                            memory_order_relaxed, memory_order_relaxed);
    if (!move_slot(p, to, parked, sw_next(parked, dead ? SLOT_DEAD : SLOT_READY, NO_OWNER)))
        return true; /* fired by another maintainer: delivered all the same */
    p->rep->copied_out++;
    taken_back(p, 0, ns->id, attempt, dead, false);
    return true;
}

/*
 * An in-flight message goes back to the ready ring (or the dead-letter ring). From a live
 * owner, the slot's linger is set to that delivery's tag first (T1, docs/DESIGN.md), and only
 * the maintainer whose CAS set it redelivers in place; a take-back that finds any linger already
 * set copies the message out to another slot (copy_out) and this one waits FENCED.
 */
static bool take_back(struct pass *p, uint32_t g, uint32_t idx, struct slot *sl, uint64_t w)
{
    uint32_t owner = sw_owner(w), none = 0, tag = linger_make(w);
    bool set_linger = owner < p->q->seg.layout.max_procs && !p->dead[owner];
    if (g && !group_active(p->q, g)) /* a deleted group: a dead holder's message ends here; a
                                      * live holder's ack, nack or close ends it */
        return !set_linger && cell_finish(p->q, g, idx, w) == 0;
    /* T1 (seq_cst; V1 against a finisher and a holder letting go): the tag is visible to
     * whoever sees the slot's next state (its C1 acquires our move below). A tag we did not set
     * protects a view we know nothing of, even one equal to ours (F1): copy out (group 0; a
     * group >= 1 waits for a later pass, docs/DESIGN.md "Consumer groups"). */
    if (set_linger && !atomic_compare_exchange_strong(&sl->linger, &none, tag))
        return g ? false : copy_out(p, idx, sl, w);
    uint32_t attempt = sl->attempt;
    uint64_t id = segment_slot(&p->q->seg, idx)->id;
    bool counted = delivery_counted(sl, w);
    if (!counted) /* its receiver died (or stopped) before counting the delivery: count it,
                   * published by the CAS below. Never on a nack under way (delivery_counted),
                   * so a nack racing us cannot count one delivery twice. */
        attempt++;
    bool dead = attempt >= settings_max_attempts(&p->q->seg.hdr->settings);
    uint64_t next = sw_next(w, dead ? SLOT_DEAD : SLOT_READY, NO_OWNER);
    if (!counted)
        sl->attempt = attempt;
    if (dead)
        sl->dead_reason = SHMQ_DEAD_MAX_ATTEMPTS;
    /* DEAD is logged before the move, so a redrive's PUBLISH follows it (docs/DESIGN.md) */
    bool fenced_log = dead &&
                      queue_log_dead(p->q, g, id, attempt, SHMQ_DEAD_MAX_ATTEMPTS) == -EIDRM;
    CRASH_POINT(take_back_before_move);
    if (fenced_log || !move_cell(p, g, idx, w, next)) {
        /* T2 failed: no in-place redelivery ran under our tag and nobody else relies on it
         * (only a tag's setter moves in place). V1 (seq_cst): clear it, then look whether a
         * finisher fenced the slot on it meanwhile */
        if (set_linger && atomic_compare_exchange_strong(&sl->linger, &tag, 0))
            cell_free_if_unread(p->q, g, idx);
        /* our DEAD record may follow the owner's ACK: if the owner's own ack ended w (FREE, or
         * FENCED(NO_OWNER) on a linger, one gen on), say so again. Any other word proves
         * nothing: a copy-out's FENCED(owner) word, and what follows it, left the message alive
         * in the copy (an ACK would resolve it); then no ACK: at worst a dead letter returns */
        uint64_t now = atomic_load_explicit(&sl->state, memory_order_relaxed);
        if (dead && !fenced_log &&
            (now == sw_next(w, SLOT_FREE, NO_OWNER) || now == sw_next(w, SLOT_FENCED, NO_OWNER) ||
             now == sw_next(w, SLOT_HELD, NO_OWNER)))
            queue_log(p->q, wal_type_of(WAL_ACK, g), id, 0);
        return false;
    }
    count_taken_from(p, owner);
    taken_back(p, g, id, attempt, dead, true);
    return true;
}

/* The full ticket behind a 40-bit recorded one, given its ring's head now. */
static uint64_t widen_ticket(uint64_t stored, uint64_t head)
{
    const uint64_t mod = 1ull << TICKET_BITS;
    uint64_t ahead = (stored - head) & (mod - 1);
    return ahead < mod / 2 ? head + ahead : head - (mod - ahead);
}

/* Is the verdict on entry i still about the same holder? A process that attached to it during
 * this pass changed its word (every change bumps its gen): then leave its slots alone. */
static bool verdict_current(const struct pass *p, uint32_t i)
{
    struct proc_entry *e = segment_proc(&p->q->seg, i);
    return !e || atomic_load_explicit(&e->word, memory_order_acquire) == p->words[i];
}

/* The ring a READY or FREE cell of group g belongs on. */
static struct ring *home_ring(struct pass *p, uint32_t g, uint64_t w)
{
    return sw_state(w) == SLOT_READY ? &p->q->seg.gready[g] : &p->q->seg.free_ring;
}

/* Is this READY or FREE cell held by no ring? ticket, has_ticket: what it recorded. */
static bool looks_orphaned(struct pass *p, uint32_t g, struct slot *sl, uint64_t w,
                           uint64_t *ticket, bool *has_ticket)
{
    struct ring *r = home_ring(p, g, w);
    uint64_t stored;
    *has_ticket = tagged_get(atomic_load_explicit(&sl->ticket, memory_order_relaxed), w, &stored);
    if (!*has_ticket)
        return true; /* its enqueuer died before recording it, or never enqueued it */
    uint64_t head = ring_head(r);
    *ticket = widen_ticket(stored, head);
    /* head not past the ticket: an ordinary entry waiting its turn */
    return ticket_before(*ticket, head);
}

/* Has cell (g, idx) shown word w for ORPHAN_GRACE_NS (since an earlier pass first saw it)? */
static bool suspect_long_enough(struct pass *p, uint32_t g, uint32_t idx, uint64_t w)
{
    shmq_t *q = p->q;
    size_t k = (size_t)g * q->seg.layout.capacity + idx;
    if (q->suspect_word[k] != w + 1) { /* +1: a word of 0 is a real state word */
        q->suspect_word[k] = w + 1;
        q->suspect_ns[k] = p->now_ns;
        return false;
    }
    if (p->now_ns - q->suspect_ns[k] < ORPHAN_GRACE_NS)
        return false;
    q->suspect_word[k] = 0;
    return true;
}

static void unsuspect(struct pass *p, uint32_t g, uint32_t idx)
{
    p->q->suspect_word[(size_t)g * p->q->seg.layout.capacity + idx] = 0;
}

static void repair_orphan(struct pass *p, uint32_t g, uint32_t idx, struct slot *sl, uint64_t w)
{
    uint64_t ticket = 0;
    bool has_ticket;
    /* a READY slot of a queue with groups that group 0 can still reach through the fan-out
     * ring (docs/DESIGN.md, "The fan-out ring") is in no ring by design: group 0 reads it there,
     * in order */
    bool fanned = g == 0 && sw_state(w) == SLOT_READY && groups_on(p->q) &&
                  fan_reachable(&p->q->seg.fan, 0, idx);
    if (fanned || !looks_orphaned(p, g, sl, w, &ticket, &has_ticket)) {
        unsuspect(p, g, idx);
        return;
    }
    if (!suspect_long_enough(p, g, idx, w))
        return;
    if (has_ticket)
        ring_clear(home_ring(p, g, w), ticket, idx); /* a dequeuer took it, never consumed it */
    if (move_cell(p, g, idx, w, sw_next(w, sw_state(w), NO_OWNER)))
        p->rep->orphans_requeued++;
}

/* Is the slot before slot idx FREE (F3's test, relaxed: a pass's snapshot)? */
static bool free_follows_free(const struct segment *s, uint32_t idx)
{
    struct slot *prev = segment_slot(s, idx ? idx - 1 : s->layout.capacity - 1);
    return sw_state(atomic_load_explicit(&prev->state, memory_order_relaxed)) == SLOT_FREE;
}

/* Is registry entry i (a slot's owner or linger) gone for this pass: out of range, NO_OWNER,
 * or dead by a verdict that is still about its holder? */
static bool reader_gone(const struct pass *p, uint32_t i)
{
    return i >= p->q->seg.layout.max_procs || (p->dead[i] && verdict_current(p, i));
}

/* A slot whose linger names a process that died: nobody reads it any more. */
static void clear_dead_linger(struct pass *p, struct slot *sl)
{
    uint32_t lg = atomic_load_explicit(&sl->linger, memory_order_relaxed);
    if (lg && reader_gone(p, linger_owner(lg)))
        atomic_compare_exchange_strong(&sl->linger, &lg, 0); /* V1 */
}

/* A FENCED slot waits for its readers (owner and linger, slotmove.c): a dead owner is struck
 * off (CAS, gen + 1; a dead linger was cleared by clear_dead_linger), and with neither left
 * the slot is freed. */
static void release_fenced_slot(struct pass *p, uint32_t g, uint32_t idx, struct slot *sl,
                                uint64_t w)
{
    uint32_t owner = sw_owner(w);
    if (owner != NO_OWNER) {
        if (!reader_gone(p, owner))
            return; /* its reader lives and has not let go */
        uint64_t seen = w;
        if (!atomic_compare_exchange_strong(&sl->state, &seen, sw_next(w, SLOT_FENCED, NO_OWNER)))
            return; /* V1 */
    }
    /* V1 (seq_cst): the owner is struck off; is the linger gone too? (as slot_free_if_unread) */
    w = atomic_load(&sl->state);
    if (sw_state(w) == SLOT_FENCED && sw_owner(w) == NO_OWNER && atomic_load(&sl->linger) == 0) {
        if (!g && groups_on(p->q)) /* other groups may still hold it (V2); release repair */
            slot_release_repair(p->q, idx);
        else if (move_cell(p, g, idx, w, sw_next(w, SLOT_FREE, NO_OWNER)))
            p->rep->fenced_released++;
    }
}

/* States whose message the log must keep (its PUBLISH record's file is pinned). */
static bool kept_state(unsigned st)
{
    return st == SLOT_READY || st == SLOT_INFLIGHT || st == SLOT_DELAYED || st == SLOT_DEAD;
}

/* As kept_state for group g's cell word w of slot idx: a pending cell (ready for g, waiting in
 * the fan-out ring) is kept as a READY one. */
static bool cell_kept(shmq_t *q, uint32_t g, uint32_t idx, uint64_t w)
{
    return kept_state(sw_state(w)) || (g && cell_pending(q, idx, w));
}

/* Log what recovery needs to restore message id as group g holds it in word w of its cell c
 * (the slot sl itself for group 0; read with acquire). If the slot no longer holds id, or the
 * group holds it in no kept state, log nothing: the message was acked (the acker logs its ACK)
 * or moved to another slot by a copy-out (alive there: an ACK would resolve it, review F4).
 * Our copy then stays unclosed for that group, which recovery never reads. */
static int log_state(shmq_t *q, uint32_t g, uint32_t idx, struct slot *sl, struct slot *c,
                     uint64_t id, uint64_t w)
{
    uint64_t due;
    if (sl->id != id || !cell_kept(q, g, idx, w))
        return 0;
    if (sw_state(w) == SLOT_DEAD)
        return queue_log_dead(q, g, id, c->attempt, c->dead_reason);
    if (sw_state(w) == SLOT_DELAYED &&
        tagged_get(atomic_load_explicit(&c->deadline, memory_order_relaxed), w, &due))
        return queue_log_nack(q, g, id, c->attempt, due ? due : 1);
    return queue_log_nack(q, g, id, c->attempt, 0);
}

/* Group 0 is done with the slot's message (HELD, or FENCED while a former reader of group 0
 * lingers): in a queue with groups, other groups may still hold it. */
static bool group0_done(unsigned st)
{
    return st == SLOT_HELD || st == SLOT_FENCED;
}

/* The groups >= 1 that hold slot idx's message in a kept state, by their cells (acquire, as
 * the caller's load of the slot word); 0 in a queue without groups. */
static uint64_t groups_holding(shmq_t *q, uint32_t idx)
{
    if (!groups_on(q))
        return 0;
    uint64_t m = 0, others = atomic_load_explicit(segment_others(&q->seg, idx), memory_order_relaxed);
    for (uint32_t g = 1; g < q->seg.layout.max_groups && others >> g; g++) {
        struct slot *c = segment_cell(&q->seg, g, idx);
        if (others >> g & 1 &&
            cell_kept(q, g, idx, atomic_load_explicit(&c->state, memory_order_acquire)))
            m |= 1ull << g;
    }
    return m;
}

/* C2 for group g after a checkpoint's copy of message id: the record of the state its cell c
 * is in, again while the word keeps changing. 0: closed (or the group is done with it), else
 * the copy stays unused for g (a failed append, or still moving). */
static int close_copy(shmq_t *q, uint32_t g, uint32_t idx, struct slot *sl, struct slot *c,
                      uint64_t id)
{
    for (int tries = 0; tries <= 3; tries++) {
        uint64_t seen = atomic_load_explicit(&c->state, memory_order_acquire); /* C2 */
        if (log_state(q, g, idx, sl, c, id, seen) != 0)
            return -EIO;
        if (atomic_load_explicit(&c->state, memory_order_acquire) == seen)
            return 0;
    }
    return -EAGAIN; /* still moving: the next pass tries again */
}

/*
 * Checkpoint: a kept message (live or dead) whose PUBLISH record lies CHECKPOINT_LAG_FILES or
 * more behind the file being written is logged again (same id, payload from the slot, then the
 * record of its state: attempts, due time, dead reason), and its slot moves to the new record,
 * so one long-lived message does not pin every log file after its own: disk use and recovery
 * time stay bounded by the kept messages.
 *  - The id is the state's message: read between two equal loads of the state word (acquire,
 *    then an acquire fence before the second), as a seqlock reader.
 *  - After the copy, the state record is appended for the word seen then, and again while the
 *    word keeps changing (C2: acquire load after our append): the last one follows every
 *    transition before our last look, and each later one is logged by its actor after its
 *    CAS, so after ours. If the slot left the message meanwhile, nothing is logged (F4).
 * Returns the slot's wal_seq (+ 1) after the step.
 */
static uint32_t checkpoint_slot(struct pass *p, uint32_t idx, struct slot *sl, uint32_t ws)
{
    shmq_t *q = p->q;
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire);
    uint64_t id = sl->id;
    uint32_t len = sl->len, seq;
    /* the groups that hold it in a kept state: the copy names them (docs/DESIGN.md, "The log
     * with groups"); group 0 by the slot word, the others by their cells (acquire, as w) */
    bool g0 = kept_state(sw_state(w));
    uint64_t m = g0 || group0_done(sw_state(w)) ? (g0 ? 1 : 0) | groups_holding(q, idx) : 0;
    struct wal_times times = {0, 0, expire_unix_ms(q, slot_expire(sl)), m}; /* kept by the copy */
    uint64_t window_ns = (uint64_t)q->seg.layout.dedup_window_ms * 1000000u;
    /* a keyed message inside its dedup window is not copied (the copy has no key: once retention
     * dropped the original, a rebuild forgot the key and a retry published twice, review F10);
     * its file stays pinned for at most the window. The hint may be stale: the skip is bounded
     * by the current message's publish time either way. */
    bool keyed_young = window_ns && atomic_load_explicit(&sl->dedup, memory_order_relaxed) &&
                       now_ns_coarse() - sl->publish_ns < window_ns;
    atomic_thread_fence(memory_order_acquire); /* the reads above happen before the re-check */
    if (atomic_load_explicit(&sl->state, memory_order_relaxed) != w || !m || keyed_young ||
        len > q->seg.layout.max_msg_size ||
        queue_log_slot(q, sl, id, WAL_PUB_CHECKPOINT, &times, len, &seq) != 0)
        return ws;
    CRASH_POINT(checkpoint_after_copy);
    for (uint32_t g = 0; m >> g; g++)
        if (m >> g & 1 && close_copy(q, g, idx, sl, segment_cell(&q->seg, g, idx), id) != 0)
            return ws; /* the copy stays unused for g: the original's file stays pinned */
    /* the slot still holds the message (some group does): not ours to move otherwise */
    uint64_t now = atomic_load_explicit(&sl->state, memory_order_acquire);
    if (sl->id != id || !(kept_state(sw_state(now)) || group0_done(sw_state(now))))
        return ws;
    if (atomic_compare_exchange_strong(&sl->wal_seq, &ws, seq + 1))
        p->rep->checkpointed++;
    return atomic_load_explicit(&sl->wal_seq, memory_order_relaxed);
}

/* A due DELAYED slot (word w) goes READY; or DEAD at max_attempts if it is a copy-out's parked
 * copy (its dead_reason marked so): a copy whose copier stopped for an ack deadline, fired here,
 * goes to the dead letters as its copier would have sent it (F8). Any other DELAYED slot at
 * max_attempts is a nack's backoff from before max_attempts was lowered (a nack at its last
 * attempt dead-letters itself): READY, its next nack or take-back decides (shmq_set_config). */
static void fire_delayed(struct pass *p, uint32_t g, uint32_t idx, struct slot *sl, uint64_t w)
{
    if (g && !group_active(p->q, g)) { /* a deleted group's: ends here */
        cell_finish(p->q, g, idx, w);
        return;
    }
    uint32_t attempt = sl->attempt; /* the copier's, published by its parking CAS (acquired) */
    bool dead = sl->dead_reason == SHMQ_DEAD_MAX_ATTEMPTS && /* as attempt: the CAS published it */
                attempt >= settings_max_attempts(&p->q->seg.hdr->settings);
    if (dead) {
        sl->dead_reason = SHMQ_DEAD_MAX_ATTEMPTS; /* published by the CAS below */
        /* logged before the move, as every DEAD (docs/DESIGN.md) */
        if (queue_log_dead(p->q, g, segment_slot(&p->q->seg, idx)->id, attempt,
                           SHMQ_DEAD_MAX_ATTEMPTS) == -EIDRM)
            return;
    }
    if (!move_cell(p, g, idx, w, sw_next(w, dead ? SLOT_DEAD : SLOT_READY, NO_OWNER)))
        return;
    if (!dead) {
        p->rep->delayed_fired++;
        return;
    }
    p->rep->dead_lettered++;
    count(q_self(p->q), CNT_DEAD_LETTERED);
}

/* A dead producer's reservation of slot idx is about to be freed: the cells it prepared (F3)
 * go back to FREE first (a CAS from its RESERVED word), so the next message finds them done. */
static void reset_prepared_cells(struct pass *p, uint32_t idx, uint32_t owner)
{
    for (uint32_t g = 1; g < p->q->seg.layout.max_groups; g++) {
        struct slot *c = segment_cell(&p->q->seg, g, idx);
        uint64_t cw = atomic_load_explicit(&c->state, memory_order_acquire);
        if (sw_state(cw) == SLOT_RESERVED && sw_owner(cw) == owner)
            atomic_compare_exchange_strong(&c->state, &cw, sw_next(cw, SLOT_FREE, NO_OWNER));
    }
}

/* Fan-out repair: cell (g, idx) is still RESERVED by its producer. Under a committed slot (not
 * FREE, not RESERVED) it is pending (docs/DESIGN.md, "The fan-out ring"): left alone while g can
 * still reach it through the fan-out ring in order (fan_reachable); else (its producer died or
 * stopped between P1 and its fill or F4, a consumer took its position and died before its
 * claim, the ring lapped g's cursor) after the orphan grace it goes READY (or DELAYED with the
 * slot's due time, for a delayed publish whose slot is still DELAYED) and onto g's ring; a
 * delayed producer's own F4 CAS then fails. Past its expiry it expires as a READY cell does.
 * Under a FREE slot it is a stale preparation (the producer was judged dead before P1): FREE
 * again. */
static void finish_fanout(struct pass *p, uint32_t g, uint32_t idx, struct slot *c, uint64_t cw)
{
    struct slot *sl = segment_slot(&p->q->seg, idx);
    /* acquire: P1's release (the message, `others`) before we make the cell deliverable */
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire), due = 0;
    if (sw_state(w) == SLOT_RESERVED) {
        unsuspect(p, g, idx);
        return; /* not committed: its producer finishes it, or its death frees both */
    }
    bool live = sw_state(w) != SLOT_FREE && group_active(p->q, g);
    if (live && p->now_ns >= slot_expire(sl)) { /* the slot's expiry, as a READY cell's */
        unsuspect(p, g, idx);
        p->rep->expired += expire_claim(p->q, g, idx, cw, p->now_ms);
        return;
    }
    if (live && fan_reachable(&p->q->seg.fan, g, idx)) {
        unsuspect(p, g, idx);
        return; /* pending: g reads it through the fan-out ring, in order */
    }
    if (!suspect_long_enough(p, g, idx, cw))
        return;
    unsigned to = SLOT_READY;
    if (sw_state(w) == SLOT_FREE)
        to = SLOT_FREE;
    else if (sw_state(w) == SLOT_DELAYED &&
             tagged_get(atomic_load_explicit(&sl->deadline, memory_order_relaxed), w, &due) &&
             due > p->now_ms)
        to = SLOT_DELAYED;
    uint64_t next = sw_next(cw, to, NO_OWNER);
    if (to == SLOT_DELAYED) /* as P0D: the due time before the word */
        atomic_store_explicit(&c->deadline, tagged_make(due, next), memory_order_release);
    if (to == SLOT_FREE) /* nothing to release: the slot is not this message's any more */
        atomic_compare_exchange_strong(&c->state, &cw, next);
    else if (move_cell(p, g, idx, cw, next))
        p->rep->orphans_requeued++;
}

/* Step 2 for group g's (>= 1) cell of slot idx: as repair_slot on the cell. */
static void repair_cell(struct pass *p, uint32_t g, uint32_t idx)
{
    struct segment *s = &p->q->seg;
    struct slot *c = segment_cell(s, g, idx);
    uint64_t w = atomic_load_explicit(&c->state, memory_order_acquire), due;
    uint32_t owner = sw_owner(w);
    unsigned st = sw_state(w);
    if (st == SLOT_FREE && !atomic_load_explicit(&c->linger, memory_order_relaxed))
        return; /* the common case: this group does not hold the slot */
    if ((st == SLOT_INFLIGHT || st == SLOT_RESERVED) && owner < s->layout.max_procs &&
        (p->fenced[owner] || p->dead[owner]) && !verdict_current(p, owner))
        return; /* its owner's entry changed hands during this pass: decide next pass */
    clear_dead_linger(p, c);
    bool owner_void = owner >= s->layout.max_procs || p->fenced[owner];
    switch (st) {
    case SLOT_INFLIGHT:
        if (owner_void) {
            if (take_back(p, g, idx, c, w))
                p->rep->reclaimed++;
        } else if (tagged_get(atomic_load_explicit(&c->deadline, memory_order_relaxed), w,
                              &due) && p->now_ms >= due) {
            if (take_back(p, g, idx, c, w))
                p->rep->deadline_expired++;
        }
        break;
    case SLOT_RESERVED: finish_fanout(p, g, idx, c, w); break;
    case SLOT_DELAYED:
        if (group_active(p->q, g) && p->now_ns >= slot_expire(segment_slot(s, idx))) {
            p->rep->expired += expire_claim(p->q, g, idx, w, p->now_ms); /* as group 0's */
            break;
        }
        if (!tagged_get(atomic_load_explicit(&c->deadline, memory_order_relaxed), w, &due) ||
            p->now_ms >= due || !group_active(p->q, g))
            fire_delayed(p, g, idx, c, w);
        break;
    case SLOT_FENCED: release_fenced_slot(p, g, idx, c, w); break;
    case SLOT_READY:
        if (!group_active(p->q, g))
            cell_finish(p->q, g, idx, w);
        else if (p->now_ns >= slot_expire(segment_slot(s, idx))) /* the slot's expiry */
            p->rep->expired += expire_claim(p->q, g, idx, w, p->now_ms);
        else
            repair_orphan(p, g, idx, c, w);
        break;
    case SLOT_DEAD:
        if (!group_active(p->q, g))
            cell_finish(p->q, g, idx, w);
        break;
    default: break;
    }
    /* keep every entry this cell still names from being released (a pending cell's producer
     * is named for nothing: not once its slot is committed); count what g holds */
    w = atomic_load_explicit(&c->state, memory_order_acquire);
    st = sw_state(w);
    if ((st == SLOT_INFLIGHT || (st == SLOT_RESERVED && !cell_pending(p->q, idx, w)) ||
         st == SLOT_FENCED) && sw_owner(w) < s->layout.max_procs)
        p->refs[sw_owner(w)]++;
    uint32_t lg = atomic_load_explicit(&c->linger, memory_order_relaxed);
    if (lg && linger_owner(lg) < s->layout.max_procs)
        p->refs[linger_owner(lg)]++;
    if (st == SLOT_FENCED || lg)
        p->rep->pinned++;
    if (st != SLOT_FREE)
        p->held[g]++;
}

/* The OVERRUN policy's drop of group g's message in slot idx, ready (or pending) as word w:
 * true if this call dropped it (the same CAS a receive's C1 races: one of the two wins). */
static bool overrun_drop(struct pass *p, uint32_t g, struct group_entry *e, uint32_t idx,
                         uint64_t w)
{
    /* the message's id while the cell holds it at w (the CAS below checks that it still did:
     * the slot was not reused in between) */
    uint64_t id = segment_slot(&p->q->seg, idx)->id;
    if (cell_finish(p->q, g, idx, w) != 0)
        return false;
    queue_log(p->q, wal_type_of(WAL_ACK, g), id, WAL_ACK_OVERRUN); /* resolved for g */
    p->held[g]--;
    atomic_fetch_add_explicit(&e->overrun, 1, memory_order_relaxed); /* a tally */
    return true;
}

/* The OVERRUN policy: a group holding more than its bound loses its oldest ready messages (its
 * ring first, then the fan-out ring: both FIFO) down to the bound; in-flight, delayed and dead
 * ones are never dropped. */
static void enforce_overrun(struct pass *p, uint32_t g)
{
    struct group_entry *e = segment_group(&p->q->seg, g);
    uint64_t gw = atomic_load_explicit(&e->word, memory_order_acquire);
    if (pw_state(gw) != GROUP_ACTIVE || e->policy != SHMQ_GROUP_OVERRUN)
        return;
    struct ring *r = &p->q->seg.gready[g];
    uint64_t tries = r->mask + 1, ticket, pos;
    uint32_t idx;
    while (p->held[g] > e->bound && tries-- && ring_dequeue(r, &idx, &ticket) == 0) {
        struct slot *c = segment_cell(&p->q->seg, g, idx);
        if (!c)
            continue;
        uint64_t w = atomic_load_explicit(&c->state, memory_order_acquire);
        if (sw_state(w) == SLOT_READY)
            overrun_drop(p, g, e, idx, w);
    }
    tries = p->q->seg.fan.mask + 1;
    while (p->held[g] > e->bound && tries-- &&
           fan_take(&p->q->seg.fan, g, &idx, &pos) == 0) { /* as a receive's FC1-FC4 */
        struct slot *c = segment_cell(&p->q->seg, g, idx);
        if (!c)
            continue;
        uint64_t w = atomic_load_explicit(&c->state, memory_order_acquire); /* FC3 */
        if (cell_pending(p->q, idx, w) && fan_filled_at(&p->q->seg.fan, idx, pos)) /* FC4 */
            overrun_drop(p, g, e, idx, w);
    }
}

static void repair_slot(struct pass *p, uint32_t idx)
{
    struct segment *s = &p->q->seg;
    struct slot *sl = segment_slot(s, idx);
    uint64_t w = atomic_load_explicit(&sl->state, memory_order_acquire), due;
    uint32_t owner = sw_owner(w);
    bool owner_void = owner >= s->layout.max_procs || p->fenced[owner];
    unsigned st0 = sw_state(w);
    if ((st0 == SLOT_INFLIGHT || st0 == SLOT_RESERVED) && owner < s->layout.max_procs &&
        (p->fenced[owner] || p->dead[owner]) && !verdict_current(p, owner))
        return; /* its owner's entry changed hands during this pass: decide next pass */
    clear_dead_linger(p, sl);
    switch (sw_state(w)) {
    case SLOT_INFLIGHT:
        if (owner_void) {
            if (take_back(p, 0, idx, sl, w))
                p->rep->reclaimed++;
        } else if (tagged_get(atomic_load_explicit(&sl->deadline, memory_order_relaxed), w,
                              &due) && p->now_ms >= due) {
            if (take_back(p, 0, idx, sl, w))
                p->rep->deadline_expired++;
        }
        break;
    case SLOT_RESERVED: {
        bool gone = owner >= s->layout.max_procs || p->dead[owner];
        if (dedup_should_roll_forward(p->q, idx, sl, w, gone)) {
            /* a keyed publish was decided (D1): finish it, even for a stalled publisher */
            if (move_slot(p, idx, w, sw_next(w, SLOT_READY, NO_OWNER)))
                count(q_self(p->q), CNT_PUBLISHED);
        } else if (gone) {
            /* M0 (acquire, pairs with P0 in publish.c): the id is this reservation's only if
             * the producer tagged the deadline with this RESERVED word; else it may be the
             * previous occupant's (live elsewhere after a copy-out, or a done keyed message):
             * log nothing for it, this producer appended nothing (review F1) */
            uint64_t mark = 0, d = atomic_load_explicit(&sl->deadline, memory_order_acquire);
            /* a delayed publish replaced the mark by its due time tagged with the next word
             * (P0D, release, after P0): the id is its own as well */
            bool logged = (tagged_get(d, w, &mark) && mark == 1) ||
                          (d & TAG_MASK) == ((sw_gen(w) + 1) & TAG_MASK);
            uint64_t id = sl->id;
            reset_prepared_cells(p, idx, owner);
            if (move_slot(p, idx, w, sw_next(w, SLOT_FREE, NO_OWNER))) {
                p->rep->reservations_freed++;
                if (logged) /* its PUBLISH record may be in the log: it never counted */
                    queue_log(p->q, WAL_ACK, id, WAL_ACK_ABORT);
            }
        }
        break;
    }
    case SLOT_DELAYED:
        if (p->now_ns >= slot_expire(sl)) { /* expires before it is due: never ready */
            p->rep->expired += expire_claim(p->q, 0, idx, w, p->now_ms);
            break;
        }
        if (!tagged_get(atomic_load_explicit(&sl->deadline, memory_order_relaxed), w, &due) ||
            p->now_ms >= due)
            fire_delayed(p, 0, idx, sl, w);
        break;
    case SLOT_FENCED:
        release_fenced_slot(p, 0, idx, sl, w);
        break;
    case SLOT_READY:
        /* past its expiry: no receive takes it; expired here even if no receive comes (an
         * orphan too: its claim needs no ring) */
        if (p->now_ns >= slot_expire(sl)) {
            p->rep->expired += expire_claim(p->q, 0, idx, w, p->now_ms);
            break;
        }
        repair_orphan(p, 0, idx, sl, w);
        break;
    case SLOT_FREE:
        /* one after a FREE slot is reached from it (F3: docs/DESIGN.md "The free slots"); a
         * chain's first one is on the free ring, at a producer's cursor, or an orphan */
        if (free_follows_free(s, idx))
            unsuspect(p, 0, idx);
        else
            repair_orphan(p, 0, idx, sl, w);
        break;
    case SLOT_HELD: /* release repair: a finisher died before its count-down or its release
                     * check (V2) */
        slot_release_repair(p->q, idx);
        break;
    default:
        break;
    }
    /* keep every entry this slot still names from being released */
    w = atomic_load_explicit(&sl->state, memory_order_relaxed);
    unsigned st = sw_state(w);
    if ((st == SLOT_INFLIGHT || st == SLOT_RESERVED || st == SLOT_FENCED) &&
        sw_owner(w) < s->layout.max_procs)
        p->refs[sw_owner(w)]++;
    uint32_t lg = atomic_load_explicit(&sl->linger, memory_order_relaxed);
    if (lg && linger_owner(lg) < s->layout.max_procs)
        p->refs[linger_owner(lg)]++;
    if (st == SLOT_FENCED || lg) /* held back (or to be) for a live former reader */
        p->rep->pinned++;
    if (st != SLOT_FREE && st != SLOT_RESERVED && st != SLOT_HELD && st != SLOT_FENCED)
        p->held[0]++; /* group 0 holds the message */
    /* the oldest log file a kept message still needs (live or dead; done slots need none) */
    uint32_t ws = atomic_load_explicit(&sl->wal_seq, memory_order_relaxed);
    /* a FENCED slot of a queue with groups: group 0 is done (a former reader lingers), other
     * groups may still hold the message (review9: it pinned nothing, and a rebuild lost it) */
    bool kept = kept_state(st) || st == SLOT_HELD ||
                (st == SLOT_FENCED && groups_on(p->q) && groups_holding(p->q, idx));
    if (ws && kept && ws - 1 + CHECKPOINT_LAG_FILES <= p->wal_cur)
        ws = checkpoint_slot(p, idx, sl, ws);
    if (ws && st != SLOT_FREE && (st != SLOT_FENCED || kept) && ws - 1 < p->min_wal_seq)
        p->min_wal_seq = ws - 1;
}

static void release_fenced_procs(struct pass *p)
{
    struct segment *s = &p->q->seg;
    for (uint32_t i = 0; i < s->layout.max_procs; i++) {
        uint64_t w = atomic_load_explicit(&segment_proc(s, i)->word, memory_order_acquire);
        /* a fenced process that lives may still write its entry (counters): only its own
         * close or its death releases the entry */
        /* F6: only while the entry still holds the word the verdict is about: a newcomer that
         * attached during the walk, took slots it had passed and was fenced is not this one */
        if (pw_state(w) == PROC_FENCED && w == p->words[i] && p->refs[i] == 0 && p->dead[i])
            registry_release_fenced(s, i, w);
    }
}

static int maintain(shmq_t *q, shmq_maint_report_t *report, bool light)
{
    if (!q)
        return -EINVAL;
    shmq_maint_report_t local;
    struct pass p = {.q = q, .rep = report ? report : &local};
    memset(p.rep, 0, sizeof(*p.rep));
    const struct seg_layout *l = &q->seg.layout;
    pthread_mutex_lock(&q->maint_lock);
    if (!q->suspect_word) { /* per group and slot */
        q->suspect_word = calloc((size_t)l->max_groups * l->capacity, sizeof(uint64_t));
        q->suspect_ns = calloc((size_t)l->max_groups * l->capacity, sizeof(uint64_t));
    }
    p.refs = calloc(l->max_procs, sizeof(uint32_t));
    p.dead = calloc(l->max_procs, 1);
    p.fenced = calloc(l->max_procs, 1);
    p.words = calloc(l->max_procs, sizeof(uint64_t));
    int err = 0;
    if (!q->suspect_word || !q->suspect_ns || !p.refs || !p.dead || !p.fenced || !p.words) {
        err = -ENOMEM;
        goto out;
    }
    if (!queue_gen_live(q)) { /* the queue was rebuilt: this segment is no longer it */
        err = -EIDRM;
        goto out;
    }
    p.now_ns = now_ns();
    p.now_ms = queue_now_ms_exact(q);
    p.min_wal_seq = UINT64_MAX;
    /* read before the scan: a publish that starts after it lands in this file or a later one */
    uint64_t wal_cur = q->wal ? wal_current_seq(q->wal) : 0;
    p.wal_cur = wal_cur;
    /* M2 (acquire, pairs with M1): a copy-out whose bump we read here stored its copy's wal_seq
     * before our scan reads that slot */
    uint64_t moves = atomic_load_explicit(&q->seg.hdr->moves, memory_order_acquire);
    fence_dead_procs(&p);
    ring_unstrand(&q->seg.free_ring);
    ring_unstrand(&q->seg.ready_ring);
    ring_unstrand(&q->seg.dead_ring);
    for (uint32_t g = 1; g < l->max_groups; g++) {
        ring_unstrand(&q->seg.gready[g]);
        ring_unstrand(&q->seg.gdead[g]);
    }
    for (uint32_t i = 0; i < l->capacity; i++) {
        repair_slot(&p, i);
        for (uint32_t g = 1; g < l->max_groups; g++)
            repair_cell(&p, g, i);
    }
    if (groups_on(q)) {
        groups_maintain(q);
        for (uint32_t g = 0; g < l->max_groups; g++) {
            if (g)
                enforce_overrun(&p, g);
            atomic_store_explicit(&segment_group(&q->seg, g)->held, p.held[g],
                                  memory_order_relaxed); /* a gauge */
        }
    }
    release_fenced_procs(&p);
    /* M2 (acquire fence, pairs with the FENCED CAS of a copy-out, which follows its M1 bump): if
     * the scan saw any source slot FENCED by a copy-out, the load below sees that bump. A change
     * means a message may have moved from a slot not yet scanned into one already scanned (or
     * the scan saw neither): min_wal_seq may miss it, so nothing is deleted this pass (the next
     * one tries again; docs/DESIGN.md, "Retention racing a copy-out") */
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&q->seg.hdr->moves, memory_order_relaxed) != moves)
        p.min_wal_seq = 0;
    /* the latest CONFIG record's file, logged again first if it lags behind (K3) */
    if (q->wal) {
        uint64_t cfg_seq = settings_keep(q, wal_cur, CHECKPOINT_LAG_FILES);
        if (cfg_seq < p.min_wal_seq)
            p.min_wal_seq = cfg_seq;
        /* the groups' latest GROUP records, likewise (groups.c) */
        uint64_t grp_seq = groups_on(q) ? groups_keep(q, wal_cur, CHECKPOINT_LAG_FILES) : UINT64_MAX;
        if (grp_seq < p.min_wal_seq)
            p.min_wal_seq = grp_seq;
    }
    if (q->wal && wal_maintain(q->wal, p.min_wal_seq, wal_cur, light) == -EIDRM)
        err = -EIDRM;
    atomic_fetch_add_explicit(&q->seg.hdr->maint_passes, 1, memory_order_relaxed);
out:
    free(p.refs);
    free(p.dead);
    free(p.fenced);
    free(p.words);
    pthread_mutex_unlock(&q->maint_lock);
    return err;
}

/* shmq_maintain() for the caller's struct of size bytes (abi.h): filled in the library's layout,
 * then copied. */
int shmq_maintain_size(shmq_t *q, shmq_maint_report_t *report, size_t size)
{
    if (report && !abi_size_ok(size, ABI_MAINT_SIZE_0, sizeof(shmq_maint_report_t)))
        return -EINVAL;
    shmq_maint_report_t own = {0};
    int err = maintain(q, &own, false);
    if (report)
        abi_copy_out(report, size, &own, sizeof(own));
    return err;
}

int queue_maintain_light(shmq_t *q)
{
    return maintain(q, NULL, true);
}

/* The plain symbol (no header macro reaches it): the first layout. */
int(shmq_maintain)(shmq_t *q, shmq_maint_report_t *report)
{
    return shmq_maintain_size(q, report, ABI_MAINT_SIZE_0);
}
