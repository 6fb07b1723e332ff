/*
 * setconfig.c - shmq_set_config(): change the settings that do not change the segment's layout,
 * in the segment (K1) and in the log (K2), and keep the log file of the latest change (K3).
 * The protocol and its argument: settings.h and docs/DESIGN.md, "Settings that change".
 *
 * Crash windows: killed between the stores (K1), some settings are changed and others not, no
 * version bumped and nothing logged: the segment runs with them, a rebuild from the log does
 * not keep them (the call did not return: call it again). Killed after the bump and before the
 * CONFIG record, the same (a later change's record, or a maintenance copy, reads them and logs
 * them). Killed after the record: done. A maintainer killed after its copy and before raising
 * wal_seq leaves the older file kept: the next pass copies again.
 */
#include <errno.h>
#include <stdint.h>

#include "abi.h"
#include "errdetail.h"
#include "setconfig.h"
#include "settings.h"

/* Lower wal_seq to file seq + 1 (never raise it; 0 is "none", above every file): wal.h */
static void pin_file(struct seg_settings *st, uint64_t seq) { wal_pin_lower(&st->wal_seq, seq); }

/* K2: the CONFIG record of the settings as they are now, with id version; SYNC: flushed. */
static int log_settings(shmq_t *q, uint64_t version)
{
    struct seg_settings *st = &q->seg.hdr->settings;
    struct settings_values v;
    settings_read(st, &v); /* after our bump: every store before it is here (K2) */
    bool sync = q->seg.layout.durability == SHMQ_DURABILITY_SYNC;
    uint64_t from = sync ? wal_sync_from(q->wal) : 0;
    pin_file(st, wal_current_seq(q->wal)); /* K3: a lower bound, before we reserve */
    uint32_t seq;
    int err = wal_append(q->wal, WAL_CONFIG, version, 0, &v, sizeof(v), &seq);
    if (err == 0 && sync)
        err = wal_sync(q->wal, seq, from);
    return err;
}

/* K4: a lowered heartbeat timeout keeps the larger one for liveness until every sleeper has
 * read the new one: 2 x the old timeout (a blocked receive reads it every 4 sleeps of a third,
 * a heartbeat thread every beat). A grace still running from an earlier lowering is kept. */
static void start_heartbeat_grace(shmq_t *q, uint32_t old_ms)
{
    struct seg_settings *st = &q->seg.hdr->settings;
    uint64_t now_s = queue_now_ms_exact(q) / 1000;
    uint64_t g = atomic_load_explicit(&st->heartbeat_grace, memory_order_relaxed);
    uint32_t prev = old_ms;
    if (g && now_s < (uint32_t)g && (uint32_t)(g >> 32) > prev)
        prev = (uint32_t)(g >> 32);
    uint64_t until = now_s + (2ull * prev + 999) / 1000 + 1;
    /* relaxed: published by the release store of the timeout that follows (K4) */
    atomic_store_explicit(&st->heartbeat_grace, (uint64_t)prev << 32 | (uint32_t)until,
                          memory_order_relaxed);
}

/* -EINVAL naming the first field of `fixed` (bits outside SHMQ_CONFIG_CHANGEABLE). */
static int refuse_fixed(uint32_t fixed)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {{SHMQ_CONFIG_CAPACITY, "capacity"},
                 {SHMQ_CONFIG_MAX_MSG_SIZE, "max_msg_size"},
                 {SHMQ_CONFIG_MAX_PROCS, "max_procs"},
                 {SHMQ_CONFIG_MODE, "mode"},
                 {SHMQ_CONFIG_DURABILITY, "durability"},
                 {SHMQ_CONFIG_LOG_DIR, "log_dir"},
                 {SHMQ_CONFIG_WAL_FILE_SIZE, "wal_file_size"},
                 {SHMQ_CONFIG_DEDUP_WINDOW_COUNT, "dedup_window_count"},
                 {SHMQ_CONFIG_DEDUP_WINDOW_MS, "dedup_window_ms"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (fixed & names[i].bit)
            return err_detail(-EINVAL,
                              "%s cannot change: it is fixed at create (create a new queue and "
                              "move the messages)",
                              names[i].name);
    return err_detail(-EINVAL, "fields 0x%x names no field of shmq_config_t", fixed);
}

/* -EINVAL naming what in next is outside the limits (settings_valid() said so). */
static int refuse_value(const struct settings_values *v)
{
    if (v->heartbeat_timeout_ms < 1)
        return err_detail(-EINVAL, "heartbeat_timeout_ms 0 is outside 1..%u", UINT32_MAX);
    if (v->ack_deadline_ms < 1)
        return err_detail(-EINVAL, "ack_deadline_ms 0 is outside 1..%u", UINT32_MAX);
    if (v->max_attempts < 1 || v->max_attempts > SHMQ_ATTEMPTS_MAX)
        return err_detail(-EINVAL, "max_attempts %u is outside 1..%u (SHMQ_ATTEMPTS_MAX: the log "
                          "keeps attempts in 16 bits)", v->max_attempts, SHMQ_ATTEMPTS_MAX);
    if (v->backoff_base_ms > v->backoff_cap_ms)
        return err_detail(-EINVAL, "backoff_base_ms %u is above backoff_cap_ms %u",
                          v->backoff_base_ms, v->backoff_cap_ms);
    if (v->expire_policy != SHMQ_EXPIRE_DROP && v->expire_policy != SHMQ_EXPIRE_DEAD_LETTER)
        return err_detail(-EINVAL, "expire_policy %u is not a SHMQ_EXPIRE_*", v->expire_policy);
    return err_detail(-EINVAL, "backoff_multiplier %g is outside 1..1000", v->backoff_multiplier);
}

int shmq_set_config(shmq_t *q, const shmq_config_t *cfg, uint32_t fields)
{
    err_detail_clear();
    if (!q || !cfg || fields == 0)
        return -EINVAL;
    if (fields & ~SHMQ_CONFIG_CHANGEABLE)
        return refuse_fixed(fields & ~SHMQ_CONFIG_CHANGEABLE);
    shmq_config_t in;
    int err = abi_config_in(cfg, &in);
    if (err)
        return err;
    if ((fields & SHMQ_CONFIG_DEFAULT_TTL_MS) && cfg->size < ABI_END(shmq_config_t, default_ttl_ms))
        return err_detail(-EINVAL, "default_ttl_ms is not in a shmq_config_t of %u bytes",
                          cfg->size); /* the caller's (older) struct does not have it */
    if ((fields & SHMQ_CONFIG_EXPIRE_POLICY) && cfg->size < ABI_END(shmq_config_t, expire_policy))
        return err_detail(-EINVAL, "expire_policy is not in a shmq_config_t of %u bytes",
                          cfg->size);
    struct seg_settings *st = &q->seg.hdr->settings;
    struct settings_values cur, next;
    settings_read(st, &cur);
    next = cur;
    if (fields & SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS)
        next.heartbeat_timeout_ms = in.heartbeat_timeout_ms;
    if (fields & SHMQ_CONFIG_ACK_DEADLINE_MS)
        next.ack_deadline_ms = in.ack_deadline_ms;
    if (fields & SHMQ_CONFIG_MAX_ATTEMPTS)
        next.max_attempts = in.max_attempts;
    if (fields & SHMQ_CONFIG_BACKOFF_BASE_MS)
        next.backoff_base_ms = in.backoff_base_ms;
    if (fields & SHMQ_CONFIG_BACKOFF_CAP_MS)
        next.backoff_cap_ms = in.backoff_cap_ms;
    if (fields & SHMQ_CONFIG_BACKOFF_MULTIPLIER)
        next.backoff_multiplier = in.backoff_multiplier;
    if (fields & SHMQ_CONFIG_DEFAULT_TTL_MS)
        next.default_ttl_ms = in.default_ttl_ms;
    if (fields & SHMQ_CONFIG_EXPIRE_POLICY)
        next.expire_policy = in.expire_policy;
    if (fields & SHMQ_CONFIG_LOG_RETENTION_BYTES)
        next.log_retention_bytes = in.log_retention_bytes;
    if (!settings_valid(&next) || next.backoff_base_ms > next.backoff_cap_ms)
        return refuse_value(&next);
    if (!queue_gen_live(q)) /* rebuilt: this segment is no longer the queue */
        return -EIDRM;
    /* K1: each changed word on its own (relaxed: the bump below releases them) */
    if (fields & SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS) {
        if (next.heartbeat_timeout_ms < cur.heartbeat_timeout_ms)
            start_heartbeat_grace(q, cur.heartbeat_timeout_ms);
        /* K4 (release): whoever reads the lowered timeout (acquire) reads its grace too */
        atomic_store_explicit(&st->heartbeat_timeout_ms, next.heartbeat_timeout_ms,
                              memory_order_release);
    }
    if (fields & SHMQ_CONFIG_ACK_DEADLINE_MS)
        atomic_store_explicit(&st->ack_deadline_ms, next.ack_deadline_ms, memory_order_relaxed);
    if (fields & SHMQ_CONFIG_MAX_ATTEMPTS)
        atomic_store_explicit(&st->max_attempts, next.max_attempts, memory_order_relaxed);
    if (fields & SHMQ_CONFIG_BACKOFF_BASE_MS)
        atomic_store_explicit(&st->backoff_base_ms, next.backoff_base_ms, memory_order_relaxed);
    if (fields & SHMQ_CONFIG_BACKOFF_CAP_MS)
        atomic_store_explicit(&st->backoff_cap_ms, next.backoff_cap_ms, memory_order_relaxed);
    if (fields & SHMQ_CONFIG_BACKOFF_MULTIPLIER)
        atomic_store_explicit(&st->backoff_multiplier,
                              settings_double_bits(next.backoff_multiplier), memory_order_relaxed);
    if (fields & SHMQ_CONFIG_DEFAULT_TTL_MS)
        atomic_store_explicit(&st->default_ttl_ms, next.default_ttl_ms, memory_order_relaxed);
    if (fields & SHMQ_CONFIG_EXPIRE_POLICY)
        atomic_store_explicit(&st->expire_policy, next.expire_policy, memory_order_relaxed);
    if (fields & SHMQ_CONFIG_LOG_RETENTION_BYTES)
        atomic_store_explicit(&st->log_retention_bytes, next.log_retention_bytes,
                              memory_order_relaxed);
    /* K1/K3 (seq_cst RMW): releases the stores above to whoever reads this version; in the
     * total order with a maintenance copy's re-read of the version (settings_keep) */
    uint64_t version = atomic_fetch_add(&st->version, 1) + 1;
    return q->wal ? log_settings(q, version) : 0;
}

uint64_t settings_keep(shmq_t *q, uint64_t wal_cur, uint32_t lag_files)
{
    struct seg_settings *st = &q->seg.hdr->settings;
    /* relaxed: a change whose reservation our wal_cur load read pinned before it (K3) */
    uint32_t ws = atomic_load_explicit(&st->wal_seq, memory_order_relaxed);
    if (ws == 0)
        return UINT64_MAX;
    if (ws - 1 + lag_files <= wal_cur) {
        /* K3: the version before the values (seq_cst), the values, the copy; then the version
         * again (seq_cst): unchanged, no change's bump precedes this load, so every change
         * still to be logged reserves after our copy, in a file at or after its file */
        uint64_t version = atomic_load(&st->version);
        struct settings_values v;
        settings_read(st, &v);
        uint32_t seq;
        if (wal_append(q->wal, WAL_CONFIG, version, 0, &v, sizeof(v), &seq) == 0 &&
            atomic_load(&st->version) == version)
            atomic_compare_exchange_strong(&st->wal_seq, &ws, seq + 1); /* a change lowered
                                                                         * it: keep theirs */
    }
    ws = atomic_load_explicit(&st->wal_seq, memory_order_relaxed);
    return ws ? ws - 1 : UINT64_MAX;
}
