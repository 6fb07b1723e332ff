/*
 * settings.h - the settings of a queue that can change while it runs (shmq_set_config()):
 * heartbeat_timeout_ms, ack_deadline_ms, max_attempts, backoff_base_ms, backoff_cap_ms,
 * backoff_multiplier, default_ttl_ms, expire_policy, log_retention_bytes. What changes the segment's layout (capacity, max_msg_size,
 * max_procs, the log's geometry, ...) stays in struct seg_layout, fixed at create.
 *
 * Where they live: seg_header.settings (layout.h), one word per setting, initialised from the
 * layout when the segment is made (settings_init, before S1 publishes it). The layout's fields
 * keep the values the segment was made with; every reader uses the words here.
 *
 * The protocol (docs/DESIGN.md, "Settings that change"):
 *  K1  A change (setconfig.c) stores each changed word (relaxed, but heartbeat_timeout_ms with
 *      release, after heartbeat_grace), then bumps `version` (seq_cst RMW: it releases the
 *      stores before it). Readers load one word per setting, relaxed: each sees the old or the
 *      new value of that setting, never a mix of bytes. Two settings read one after the other
 *      may come from different changes (a reader between the stores of one change): each is a
 *      value someone set; what a mixed pair does is written at each reader (backoff: base and
 *      cap from two changes give min(base * mult^k, cap) of those values; nothing else reads
 *      two settings together).
 *  K2  With a log, the change then appends a CONFIG record (wal.h) holding every setting as read
 *      after its bump, with id = the version its bump made: the record of the highest version
 *      holds every store made before that bump. Recovery applies the CONFIG record of the
 *      highest version (the later in log order of equal ones) over the layout of the newest
 *      file header, so a rebuilt segment starts with the settings in use (and its layout holds
 *      them: its own log needs no CONFIG record until the next change).
 *  K3  Retention: `wal_seq` (+ 1) names a file at or before the latest CONFIG record. A change
 *      lowers it (CAS, never raises) to the file being written BEFORE it appends (a lower bound,
 *      as a publish does for its slot: a pass that read wal_cur after our reservation sees it).
 *      Maintenance keeps every file from wal_seq on and, once wal_seq lags CHECKPOINT_LAG_FILES
 *      behind, logs the settings again (a copy with the version read before reading them) and
 *      raises wal_seq to the copy's file only if `version` is unchanged after its append
 *      (seq_cst load): a change whose bump the load missed appends after the copy (its FAA on
 *      wal_pos follows the copy's in the total order), so no newer record is left behind.
 *  K4  A lowered heartbeat timeout: consumers sleep at most a third of the timeout they read,
 *      and read it again every few sleeps; until they have, their heartbeats come at the old
 *      pace. So the change first stores heartbeat_grace = (old timeout, now + 2 x old), then
 *      the new timeout (release); maintenance (acquire) judges liveness by the larger of the
 *      two until the grace ends.
 */
#ifndef SHMQ_SETTINGS_H
#define SHMQ_SETTINGS_H

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "layout.h"

/* The settings as values: a CONFIG record's payload (WAL_CONFIG_LEN bytes, wal.h) in this
 * order; a longer payload carries settings added later (a reader takes the ones it knows). */
struct settings_values {
    uint32_t heartbeat_timeout_ms, ack_deadline_ms, max_attempts;
    uint32_t backoff_base_ms, backoff_cap_ms;
    uint32_t reserved; /* 0 */
    double backoff_multiplier;
    uint32_t default_ttl_ms;
    uint32_t reserved2; /* 0 */
    /* added later in version 2: a 40-byte CONFIG payload ends before them (recovery keeps the
     * header's values for them then) */
    uint32_t expire_policy; /* SHMQ_EXPIRE_* */
    uint32_t reserved3;     /* 0 */
    uint64_t log_retention_bytes;
};
_Static_assert(sizeof(struct settings_values) == 56, "a CONFIG payload: docs/FORMAT.md 8.6");
#define SETTINGS_VALUES_LEN_0 40u /* the first CONFIG payload: up to default_ttl_ms */

static inline uint64_t settings_double_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

static inline double settings_bits_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

/* A new segment's settings: its layout's (single-threaded, before S1 publishes the segment). */
static inline void settings_init(struct seg_settings *s, const struct seg_layout *l)
{
    atomic_store_explicit(&s->heartbeat_timeout_ms, l->heartbeat_timeout_ms, memory_order_relaxed);
    atomic_store_explicit(&s->ack_deadline_ms, l->ack_deadline_ms, memory_order_relaxed);
    atomic_store_explicit(&s->max_attempts, l->max_attempts, memory_order_relaxed);
    atomic_store_explicit(&s->backoff_base_ms, l->backoff_base_ms, memory_order_relaxed);
    atomic_store_explicit(&s->backoff_cap_ms, l->backoff_cap_ms, memory_order_relaxed);
    atomic_store_explicit(&s->backoff_multiplier, settings_double_bits(l->backoff_multiplier),
                          memory_order_relaxed);
    atomic_store_explicit(&s->default_ttl_ms, l->default_ttl_ms, memory_order_relaxed);
    atomic_store_explicit(&s->expire_policy, l->expire_policy, memory_order_relaxed);
    atomic_store_explicit(&s->log_retention_bytes, l->log_retention_bytes, memory_order_relaxed);
    atomic_store_explicit(&s->wal_seq, 0, memory_order_relaxed);
    atomic_store_explicit(&s->heartbeat_grace, 0, memory_order_relaxed);
    atomic_store_explicit(&s->version, 0, memory_order_relaxed);
}

/* One setting (K1: relaxed, each read is some change's value). */
static inline uint32_t settings_ack_deadline_ms(const struct seg_settings *s)
{
    return atomic_load_explicit(&s->ack_deadline_ms, memory_order_relaxed);
}

static inline uint32_t settings_max_attempts(const struct seg_settings *s)
{
    return atomic_load_explicit(&s->max_attempts, memory_order_relaxed);
}

/* The publish path's one read: a new message's time to live (0: none). */
static inline uint32_t settings_default_ttl_ms(const struct seg_settings *s)
{
    return atomic_load_explicit(&s->default_ttl_ms, memory_order_relaxed);
}

/* What an expiry does now (SHMQ_EXPIRE_*): read once per expiry, by the expirer. */
static inline uint32_t settings_expire_policy(const struct seg_settings *s)
{
    return atomic_load_explicit(&s->expire_policy, memory_order_relaxed);
}

/* The acked history retention keeps (bytes, 0: none): read once per maintenance pass. */
static inline uint64_t settings_log_retention_bytes(const struct seg_settings *s)
{
    return atomic_load_explicit(&s->log_retention_bytes, memory_order_relaxed);
}

static inline uint32_t settings_heartbeat_timeout_ms(const struct seg_settings *s)
{
    return atomic_load_explicit(&s->heartbeat_timeout_ms, memory_order_relaxed);
}

/* The heartbeat timeout liveness is judged by at now_s (seconds of the queue's clock): the
 * current one, or the one before a lowering while its grace lasts (K4). */
static inline uint32_t settings_liveness_timeout_ms(const struct seg_settings *s, uint64_t now_s)
{
    /* acquire: pairs with K4's release store of the timeout, so a lowered timeout comes with
     * its grace */
    uint32_t t = atomic_load_explicit(&s->heartbeat_timeout_ms, memory_order_acquire);
    uint64_t g = atomic_load_explicit(&s->heartbeat_grace, memory_order_relaxed);
    uint32_t prev = (uint32_t)(g >> 32);
    return g && now_s < (uint32_t)g && prev > t ? prev : t;
}

/* Every setting, each read once (K1: a value of some change, the set no snapshot). */
static inline void settings_read(const struct seg_settings *s, struct settings_values *v)
{
    memset(v, 0, sizeof(*v));
    v->heartbeat_timeout_ms = settings_heartbeat_timeout_ms(s);
    v->ack_deadline_ms = settings_ack_deadline_ms(s);
    v->max_attempts = settings_max_attempts(s);
    v->backoff_base_ms = atomic_load_explicit(&s->backoff_base_ms, memory_order_relaxed);
    v->backoff_cap_ms = atomic_load_explicit(&s->backoff_cap_ms, memory_order_relaxed);
    v->backoff_multiplier =
        settings_bits_double(atomic_load_explicit(&s->backoff_multiplier, memory_order_relaxed));
    v->default_ttl_ms = settings_default_ttl_ms(s);
    v->expire_policy = settings_expire_policy(s);
    v->log_retention_bytes = settings_log_retention_bytes(s);
}

/* Are these values a queue may run with (shmq_create()'s limits)? base > cap is allowed: two
 * changes at once may leave it (K1), and it means what cap alone means (every delay is cap). */
static inline bool settings_valid(const struct settings_values *v)
{
    return v->heartbeat_timeout_ms >= 1 && v->ack_deadline_ms >= 1 && v->max_attempts >= 1 &&
           v->max_attempts <= SHMQ_ATTEMPTS_MAX &&
           isfinite(v->backoff_multiplier) && v->backoff_multiplier >= 1.0 &&
           v->backoff_multiplier <= 1000.0 &&
           (v->expire_policy == SHMQ_EXPIRE_DROP || v->expire_policy == SHMQ_EXPIRE_DEAD_LETTER);
}

/* Put v into a config (shmq_get_config, inspection, recovery) (shmq_get_config, inspection,
 * recovery). */
static inline void settings_to_config(const struct settings_values *v, shmq_config_t *cfg)
{
    cfg->heartbeat_timeout_ms = v->heartbeat_timeout_ms;
    cfg->ack_deadline_ms = v->ack_deadline_ms;
    cfg->max_attempts = v->max_attempts;
    /* a config's base never exceeds its cap (shmq_create()'s rule): base > cap means cap */
    cfg->backoff_base_ms =
        v->backoff_base_ms <= v->backoff_cap_ms ? v->backoff_base_ms : v->backoff_cap_ms;
    cfg->backoff_cap_ms = v->backoff_cap_ms;
    cfg->backoff_multiplier = v->backoff_multiplier;
    cfg->default_ttl_ms = v->default_ttl_ms;
    cfg->expire_policy = v->expire_policy;
    cfg->log_retention_bytes = v->log_retention_bytes;
}

#endif
