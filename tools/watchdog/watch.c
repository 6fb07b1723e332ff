/*
 * watch.c - one watched queue: the maintenance lease, maintenance passes and their events.
 *
 * Each pass (every --interval-ms, and at once when an attached process exits):
 *  1. shmq_lease_acquire(q, lease_ms, 1) takes or renews the lease. 0: we are the active
 *     maintainer. -EBUSY: another live holder has it (another watchdog): we are a standby and
 *     try again next pass, so we take over as soon as the holder's lease expires (it hung or
 *     was stopped: within one lease period) or its holder is dead (at once: its pidfd fires).
 *     Each change of role is logged once (lease_acquired, standby).
 *  2. The registry is listed (shmq_procs) before the pass.
 *  3. Active only: note which listed processes have exited already (their pidfds), then
 *     shmq_maintain(). Each non-zero field of its report is one event line with count=N. If
 *     it fenced processes, the registry is listed again, and each process whose entries were
 *     live before and are fenced or gone after is named once by pid (consumer_died /
 *     client_died if it had exited before the pass, consumer_hung if it lives, fenced).
 *  4. The pidfd set follows the latest listing (pidwatch.c); a process found gone without
 *     ever being watched gets a second pass at once.
 * Between passes watch_refresh() lists the registry (every min(interval, 5) ms) so that a
 * process that attached since is watched from then on.
 *
 * Maintenance is idempotent and safe with several maintainers (src/maintain.c), so a stale
 * active watchdog that has not yet noticed it lost the lease does no harm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "watchdog.h"

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

bool watch_wants_open(const struct watch *w)
{
    if (w->q || w->opening)
        return false;
    int e = w->last_open_err;
    if (e != -EBADMSG && e != -EPROTO && e != -EACCES && e != -EINVAL)
        return true; /* missing, registry full, ...: try again */
    struct stat st;
    return segment_stat(w->name, &st) != 0 || !same_file(&st, &w->last_err_st);
}

/* Size the registry snapshots for q's max_procs. */
static int size_snapshots(struct watch *w, size_t cap)
{
    if (cap <= w->procs_cap)
        return 0;
    shmq_proc_info_t *a = realloc(w->procs, cap * sizeof *a);
    if (a)
        w->procs = a;
    shmq_proc_info_t *b = a ? realloc(w->after, cap * sizeof *b) : NULL;
    if (b)
        w->after = b;
    uint8_t *x = b ? realloc(w->exited, cap) : NULL;
    if (x)
        w->exited = x;
    shmq_consumer_stats_t *c = x ? realloc(w->consumers, cap * sizeof *c) : NULL;
    if (c)
        w->consumers = c;
    if (!c)
        return -ENOMEM;
    w->procs_cap = cap;
    return 0;
}

/* Each consumer group's messages and lag (shmq_group_stats), for the metrics and the group_lag
 * rule: at most SHMQ_GROUPS_MAX series per family and queue. A group deleted between the list
 * and its stats is left out. */
static void sample_groups(struct watch *w)
{
    shmq_group_info_t gi[SHMQ_GROUPS_MAX];
    size_t n = 0;
    w->n_groups = 0;
    if (shmq_group_list(w->q, gi, SHMQ_GROUPS_MAX, &n) != 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (!gi[i].deleting && shmq_group_stats(w->q, gi[i].name, &w->groups[w->n_groups]) == 0)
            w->n_groups++;
}

int watch_adopt(struct watch *w, const struct open_result *r, const struct wd_options *o)
{
    w->opening = false;
    int err = r->err;
    shmq_config_t cfg = {0};
    if (!err) {
        err = shmq_get_config(r->q, &cfg);
        if (!err)
            err = size_snapshots(w, cfg.max_procs ? cfg.max_procs : 64);
        if (err)
            shmq_close(r->q);
    }
    if (err == -EAGAIN)
        return err; /* replaced while it was opened: the next scan tries again */
    if (err) {
        bool same =
            err == w->last_open_err && (err == -ENOENT || same_file(&r->st, &w->last_err_st));
        if (!same) {
            char msg[128];
            wd_log(err == -ENOENT ? WD_WARN : WD_ERROR, w->name,
                   err == -ENOENT ? "queue_missing" : "open_failed", "err=%d msg=%s", -err,
                   logfmt_quote(shmq_strerror(err), msg, sizeof msg));
        }
        w->last_open_err = err;
        w->last_err_st = r->st;
        return err;
    }
    w->q = r->q;
    w->dev = r->st.st_dev;
    w->ino = r->st.st_ino;
    w->role = ROLE_NONE;
    w->last_open_err = 0;
    w->capacity = cfg.capacity;
    w->sampled = false;
    wd_log(WD_INFO, w->name, "queue_added",
           "capacity=%u max_procs=%u heartbeat_timeout_ms=%u ack_deadline_ms=%u", cfg.capacity,
           cfg.max_procs, cfg.heartbeat_timeout_ms, cfg.ack_deadline_ms);
    watch_pass(w, o);
    return 0;
}

void watch_close(struct watch *w, const char *reason)
{
    if (!w->q)
        return;
    shmq_lease_release(w->q);
    int err = shmq_close(w->q);
    if (err)
        wd_log(WD_WARN, w->name, "error", "op=close err=%d", -err);
    w->q = NULL;
    w->role = ROLE_NONE;
    w->sampled = false;
    memset(w->firing, 0, sizeof w->firing); /* a queue that comes back starts armed */
    w->log_failing = false;
    pidset_clear(&w->pids);
    if (reason)
        wd_log(WD_INFO, w->name, "queue_removed", "reason=%s", reason);
}

bool watch_still_there(const struct watch *w)
{
    struct stat st;
    return segment_stat(w->name, &st) == 0 && st.st_ino == w->ino && st.st_dev == w->dev;
}

/*
 * The no_lease alert, after a lease attempt (err) made as role `was`. A standby finds no live
 * holder when it takes the lease over (the holder died, hung past its lease, or released it)
 * or when lease_get says nobody holds it; it fires then, once, and is armed again at the
 * next pass that finds a holder (us, after the takeover). Deciding on the acquire's own
 * result, not on a read before it, leaves no window: a holder that dies between a read and
 * the acquire is still seen.
 */
static void check_no_lease(struct watch *w, const struct wd_options *o, enum watch_role was,
                           int err)
{
    if (!o->alerts->on[ALERT_NO_LEASE])
        return;
    bool none = false;
    if (was == ROLE_STANDBY && err == 0) {
        none = true; /* took over: nobody held it */
    } else if (was == ROLE_STANDBY && err == -EBUSY) {
        shmq_lease_info_t li = {0};
        none = shmq_lease_get(w->q, &li) == 0 && !li.held;
    }
    alert_update(w, o->alerts, ALERT_NO_LEASE, none, 0, 1);
}

/* Step 1: the lease, and the log line when our role changes. */
static void take_lease(struct watch *w, const struct wd_options *o)
{
    enum watch_role was = w->role;
    int err = shmq_lease_acquire(w->q, o->lease_ms, 1);
    check_no_lease(w, o, was, err);
    if (err == 0) {
        if (w->role != ROLE_ACTIVE)
            wd_log(WD_INFO, w->name, "lease_acquired", "lease_ms=%u%s", o->lease_ms,
                   w->role == ROLE_STANDBY ? " took_over=1" : "");
        w->role = ROLE_ACTIVE;
    } else if (err == -EBUSY) {
        if (w->role != ROLE_STANDBY) {
            shmq_lease_info_t li = {0};
            shmq_lease_get(w->q, &li);
            wd_log(WD_INFO, w->name, "standby", "holder_pid=%d holder_priority=%d%s", (int)li.pid,
                   li.priority, w->role == ROLE_ACTIVE ? " lost_lease=1" : "");
        }
        w->role = ROLE_STANDBY;
    } else {
        wd_log(WD_ERROR, w->name, "error", "op=lease_acquire err=%d", -err);
    }
}

/*
 * Before a pass: which live-listed entries belong to a process that has exited already
 * (w->exited[i] for w->procs[i]). Decided before shmq_maintain() runs, because the pass itself
 * wakes consumers that may detach cleanly and exit before we list the registry again, and
 * such a process must not be reported as dead. A watched process has exited when its pidfd
 * is readable (one poll() for the queue); an unwatched one is checked by pid.
 */
static void note_exited(struct watch *w, size_t n)
{
    pidset_poll(&w->pids);
    for (size_t i = 0; i < n; i++) {
        const shmq_proc_info_t *p = &w->procs[i];
        w->exited[i] = 0;
        if (p->state != SHMQ_PROC_ACTIVE && p->state != SHMQ_PROC_CLAIMED)
            continue;
        int r = pidset_exited(&w->pids, p->index, p->pid);
        w->exited[i] = (uint8_t)(r < 0 ? pid_exited(p->pid) : r);
    }
}

/* Is entry (index, pid) still live (not fenced, not freed) in list? */
static bool still_live(const shmq_proc_info_t *list, size_t n, const shmq_proc_info_t *e)
{
    for (size_t j = 0; j < n; j++)
        if (list[j].index == e->index && list[j].pid == e->pid && list[j].state != SHMQ_PROC_FENCED)
            return true;
    return false;
}

/* Was entry e fenced in list (still there, FENCED)? */
static bool fenced_in(const shmq_proc_info_t *list, size_t n, const shmq_proc_info_t *e)
{
    for (size_t j = 0; j < n; j++)
        if (list[j].index == e->index && list[j].pid == e->pid && list[j].state == SHMQ_PROC_FENCED)
            return true;
    return false;
}

/* Was entry e live before the pass and is it fenced or gone after? */
static bool lost(const shmq_proc_info_t *e, const shmq_proc_info_t *after, size_t na)
{
    return (e->state == SHMQ_PROC_ACTIVE || e->state == SHMQ_PROC_CLAIMED) &&
           !still_live(after, na, e);
}

/* The lost entries of process b->pid (from index i on): their roles, count, consumer name,
 * and whether its consumer entry is FENCED after the pass. */
struct lost_proc {
    uint32_t roles, entries;
    bool fenced;
    const char *name;
};

static struct lost_proc lost_entries(const struct watch *w, size_t i, size_t nb,
                                     const shmq_proc_info_t *after, size_t na)
{
    struct lost_proc lp = {.name = ""};
    for (size_t j = i; j < nb; j++) {
        const shmq_proc_info_t *e = &w->procs[j];
        if (e->pid != w->procs[i].pid || !lost(e, after, na))
            continue;
        lp.roles |= e->role;
        lp.entries++;
        lp.fenced = lp.fenced || (e->role & SHMQ_ROLE_CONSUMER && fenced_in(after, na, e));
        if (!lp.name[0] && e->name[0])
            lp.name = e->name;
    }
    return lp;
}

/* Is w->procs[i] the first lost entry of its process? */
static bool first_lost(const struct watch *w, size_t i, const shmq_proc_info_t *after, size_t na)
{
    if (!lost(&w->procs[i], after, na))
        return false;
    for (size_t j = 0; j < i; j++)
        if (w->procs[j].pid == w->procs[i].pid && lost(&w->procs[j], after, na))
            return false;
    return true;
}

static void log_died(struct watch *w, const shmq_proc_info_t *b, const struct lost_proc *lp,
                     const shmq_maint_report_t *r)
{
    char qname[2 * SHMQ_CONSUMER_NAME_MAX + 3];
    logfmt_quote(lp->name[0] ? lp->name : "-", qname, sizeof qname);
    wd_log(WD_INFO, w->name, lp->roles & SHMQ_ROLE_CONSUMER ? "consumer_died" : "client_died",
           "pid=%d name=%s entries=%u reclaimed=%u", (int)b->pid, qname, lp->entries,
           r->reclaimed);
    if (lp->roles & SHMQ_ROLE_CONSUMER)
        w->consumer_deaths++; /* for the consumer_died alert (watch_sample) */
}

/* Does the pass's report name pid among the processes it found dead? */
static bool reported_dead(const shmq_maint_report_t *r, int32_t pid)
{
    for (uint32_t i = 0; i < r->dead_pids_n && i < SHMQ_MAINT_DEAD_PIDS; i++)
        if (r->dead_pids[i] == pid)
            return true;
    return false;
}

/*
 * After a pass that fenced someone: name each process whose entries were live before and are
 * fenced or gone after, once per pid. consumer_died / client_died: it had exited before the
 * pass began (an entry that vanished from a live process may be a clean detach the pass
 * itself provoked, so it is not named). consumer_hung: its consumer entry is FENCED and the
 * process lives. A hung consumer whose entry was fenced and freed within the same pass (it
 * held nothing) is counted by the procs_hung line only.
 *
 * A process that dies between note_exited() and the library's own liveness check in the pass
 * is counted by the pass (procs_dead) but was alive for note_exited() (so is one whose pidfd is
 * not readable yet: a thread group leader's is readable once every thread is gone, while the
 * library judges it dead once its main thread is a zombie and the others exit). The report
 * names the processes the pass found dead (dead_pids): such a process is named from it. Only
 * past SHMQ_MAINT_DEAD_PIDS of them, the lost entries of processes that have exited by now are
 * named when they account for exactly the dead entries left unnamed: otherwise one of them may
 * be a clean detach, and none is named. Before the report named them, that count was all there
 * was, and a consumer the pass's own reclaim woke, which took the message, acked, detached and
 * exited before the listing after the pass, hid the dead one: procs_dead count=2, no
 * consumer_died (watchdog::consumer_killed_while_another_detaches_is_named).
 */
static void log_fenced(struct watch *w, size_t nb, const shmq_proc_info_t *after, size_t na,
                       const shmq_maint_report_t *r)
{
    uint32_t named_entries = 0, late_entries = 0;
    for (size_t i = 0; i < nb; i++) {
        const shmq_proc_info_t *b = &w->procs[i];
        if (!first_lost(w, i, after, na))
            continue;
        struct lost_proc lp = lost_entries(w, i, nb, after, na);
        if (w->exited[i]) {
            log_died(w, b, &lp, r);
            named_entries += lp.entries;
        } else if (lp.fenced && r->procs_hung && !pid_exited(b->pid)) {
            char qname[2 * SHMQ_CONSUMER_NAME_MAX + 3];
            logfmt_quote(lp.name[0] ? lp.name : "-", qname, sizeof qname);
            wd_log(WD_WARN, w->name, "consumer_hung",
                   "pid=%d name=%s heartbeat_age_ms=%llu reclaimed=%u", (int)b->pid, qname,
                   (unsigned long long)b->heartbeat_age_ms, r->reclaimed);
        } else if (reported_dead(r, b->pid)) {
            log_died(w, b, &lp, r);
            named_entries += lp.entries;
        } else if (r->dead_pids_n == SHMQ_MAINT_DEAD_PIDS && pid_exited(b->pid)) {
            w->exited[i] = 2; /* a candidate: the report had no room to name it */
            late_entries += lp.entries;
        }
    }
    if (late_entries == 0 || r->procs_dead <= named_entries ||
        late_entries != r->procs_dead - named_entries)
        return;
    for (size_t i = 0; i < nb; i++) {
        if (w->exited[i] != 2 || !first_lost(w, i, after, na))
            continue;
        struct lost_proc lp = lost_entries(w, i, nb, after, na);
        log_died(w, &w->procs[i], &lp, r);
    }
}

/* Step 3's summary: one line per non-zero report field. */
static void log_report(struct watch *w, const shmq_maint_report_t *r)
{
    static const struct {
        const char *event;
        size_t off;
        enum wd_level level;
    } fields[] = {
        {"procs_dead", offsetof(shmq_maint_report_t, procs_dead), WD_INFO},
        {"procs_hung", offsetof(shmq_maint_report_t, procs_hung), WD_WARN},
        {"reclaimed", offsetof(shmq_maint_report_t, reclaimed), WD_INFO},
        {"deadline_expired", offsetof(shmq_maint_report_t, deadline_expired), WD_WARN},
        {"orphans_requeued", offsetof(shmq_maint_report_t, orphans_requeued), WD_INFO},
        {"reservations_freed", offsetof(shmq_maint_report_t, reservations_freed), WD_INFO},
        {"delayed_fired", offsetof(shmq_maint_report_t, delayed_fired), WD_INFO},
        {"dead_lettered", offsetof(shmq_maint_report_t, dead_lettered), WD_WARN},
        {"fenced_released", offsetof(shmq_maint_report_t, fenced_released), WD_INFO},
        {"copied_out", offsetof(shmq_maint_report_t, copied_out), WD_WARN},
        {"expired", offsetof(shmq_maint_report_t, expired), WD_INFO},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        uint32_t v;
        memcpy(&v, (const char *)r + fields[i].off, sizeof v);
        if (v)
            wd_log(fields[i].level, w->name, fields[i].event, "count=%u", v);
    }
}

static size_t list_procs(struct watch *w, shmq_proc_info_t *out)
{
    size_t n = 0;
    int err = shmq_procs(w->q, out, w->procs_cap, &n);
    if (err) {
        wd_log(WD_ERROR, w->name, "error", "op=procs err=%d", -err);
        return 0;
    }
    return n;
}

/*
 * Step 3: maintain once. w->procs holds the registry as listed before (*n entries); if the
 * pass fenced anyone, it holds the listing after on return.
 */
static int maintain_once(struct watch *w, size_t *n)
{
    note_exited(w, *n);
    shmq_maint_report_t rep = {0};
    int err = shmq_maintain(w->q, &rep);
    w->passes++;
    if (err) {
        char msg[128];
        wd_log(WD_ERROR, w->name, "error", "op=maintain err=%d msg=%s", -err,
               logfmt_quote(shmq_strerror(err), msg, sizeof msg));
        return err;
    }
    if (rep.procs_dead || rep.procs_hung) {
        size_t na = list_procs(w, w->after);
        log_fenced(w, *n, w->after, na, &rep);
        shmq_proc_info_t *t = w->procs;
        w->procs = w->after;
        w->after = t;
        *n = na;
    }
    log_report(w, &rep);
    return 0;
}

int watch_refresh(struct watch *w, const struct wd_options *o)
{
    if (!w->q)
        return 0;
    size_t n = list_procs(w, w->procs);
    if (pidset_refresh(&w->pids, w->procs, n) > 0) /* one left unseen: a pass now */
        return watch_pass(w, o);
    return 0;
}

int watch_pass(struct watch *w, const struct wd_options *o)
{
    if (!w->q)
        return 0;
    take_lease(w, o);
    size_t n = list_procs(w, w->procs);
    int err = 0;
    if (w->role == ROLE_ACTIVE)
        err = maintain_once(w, &n);
    /* an entry whose process is gone already (no pidfd to wait for): fence it at once */
    if (pidset_refresh(&w->pids, w->procs, n) > 0 && w->role == ROLE_ACTIVE && !err) {
        err = maintain_once(w, &n);
        pidset_refresh(&w->pids, w->procs, n);
    }
    return err;
}

/* The log's health between two samples: a log_error line when writes or flushes failed since
 * the last one (or at the first sample of a failing log); then log_healthy once it works again
 * (in the same sample too, when the failures stopped before it). */
static void log_health_events(struct watch *w, const shmq_stats_t *st)
{
    uint64_t before = w->sampled ? w->stats.wal_errors : 0;
    if (st->wal_errors > before || (!w->sampled && !st->wal_healthy)) {
        wd_log(WD_ERROR, w->name, "log_error",
               "count=%llu total=%llu last_error=\"%s\" flush_failed=%d healthy=%u",
               (unsigned long long)(st->wal_errors - before), (unsigned long long)st->wal_errors,
               st->wal_last_error ? strerror(-st->wal_last_error) : "none",
               st->wal_flush_failed, st->wal_healthy);
        w->log_failing = true;
    }
    if (w->log_failing && st->wal_healthy) {
        wd_log(WD_INFO, w->name, "log_healthy", "total=%llu", (unsigned long long)st->wal_errors);
        w->log_failing = false;
    }
}

int watch_sample(struct watch *w, const struct wd_options *o)
{
    if (!w->q)
        return 0;
    shmq_stats_t st;
    int err = shmq_stats(w->q, &st);
    if (err) {
        wd_log(WD_ERROR, w->name, "error", "op=stats err=%d", -err);
        return err;
    }
    const struct alert_rules *r = o->alerts;
    alert_update(w, r, ALERT_DEPTH, st.ready > r->depth, st.ready, r->depth);
    /* oldest_age_ms is -1 when no message waits: the condition is false then (it clears) */
    uint64_t age = st.oldest_age_ms > 0 ? (uint64_t)st.oldest_age_ms : 0;
    alert_update(w, r, ALERT_AGE, st.oldest_age_ms >= 0 && age > r->age_ms, age, r->age_ms);
    alert_update(w, r, ALERT_PINNED, st.pinned > r->pinned, st.pinned, r->pinned);
    if (w->sampled) { /* the rules on increases need a sample before */
        uint64_t added = st.dead_lettered > w->stats.dead_lettered
                             ? st.dead_lettered - w->stats.dead_lettered
                             : 0;
        alert_update(w, r, ALERT_DEAD_LETTERS, added > 0, added, 0);
        uint64_t died = w->consumer_deaths - w->deaths_sampled;
        alert_update(w, r, ALERT_CONSUMER_DIED, died > 0, died, 0);
    }
    log_health_events(w, &st);
    if (!w->sampled && (r->on[ALERT_DEAD_LETTERS] || r->on[ALERT_CONSUMER_DIED]))
        wd_log(WD_INFO, w->name, "alerts_armed", "dead_lettered=%llu consumer_deaths=%llu",
               (unsigned long long)st.dead_lettered, (unsigned long long)w->consumer_deaths);
    w->deaths_sampled = w->consumer_deaths;
    /* the consumers' own counters, for the metrics (at most max_procs: bounded cardinality) */
    size_t nc = 0;
    if (shmq_consumer_stats(w->q, w->consumers, w->procs_cap, &nc) != 0)
        nc = 0;
    w->n_consumers = nc;
    sample_groups(w);
    uint64_t lag = 0;
    for (size_t g = 0; g < w->n_groups; g++)
        lag = w->groups[g].lag > lag ? w->groups[g].lag : lag;
    alert_update(w, r, ALERT_GROUP_LAG, lag > r->group_lag, lag, r->group_lag);
    w->stats = st;
    w->sampled = true;
    return 0;
}
