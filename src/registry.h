/*
 * registry.h - the processes and consumers attached to a queue, and whether they still live.
 *
 * An entry's word is state | gen << 4 | claimer << 40, and every change bumps gen (as slot
 * state words do). FREE -> CLAIMED (attach, filling) -> ACTIVE -> CLAIMED (detach, folding
 * counters) -> FREE. ACTIVE/CLAIMED -> FENCED (maintenance found it dead) -> FREE once its
 * slots are reclaimed. An entry is never FREE while a slot names it as owner, so an owner index
 * is never reused under a message it still holds.
 *
 * A CLAIMED word carries the pid of the process that claimed it (the claimer writes pid, start
 * time, role... with plain stores after its claim CAS): maintenance judges a CLAIMED entry by
 * that pid, never by the pid field the claimer may be writing, so a live claimer (however slow
 * or stopped) is never fenced, and never writes into an entry that was fenced and handed to
 * somebody else. Other words carry claimer 0.
 */
#ifndef SHMQ_REGISTRY_H
#define SHMQ_REGISTRY_H

#include <stdbool.h>

#include "segment.h"

#define PW_GEN_MASK ((1ull << 36) - 1)
#define PW_CLAIMER_MAX ((1u << 24) - 1) /* pids are below 2^22 on Linux (PID_MAX_LIMIT) */

static inline uint64_t pw_make(unsigned state, uint64_t gen, uint32_t claimer)
{
    return (uint64_t)claimer << 40 | (gen & PW_GEN_MASK) << 4 | (state & 15u);
}
static inline unsigned pw_state(uint64_t w) { return (unsigned)(w & 15u); }
static inline uint64_t pw_gen(uint64_t w) { return (w >> 4) & PW_GEN_MASK; }
/* The pid that claimed a CLAIMED entry (0: unknown, a word written by an older library). */
static inline uint32_t pw_claimer(uint64_t w) { return (uint32_t)(w >> 40); }
/* The word after w in state (not CLAIMED). */
static inline uint64_t pw_next(uint64_t w, unsigned state)
{
    return pw_make(state, pw_gen(w) + 1, 0);
}
/* The CLAIMED word after w, claimed by this process. */
uint64_t pw_claim(uint64_t w);

/* Is a consumer that joined its group when the group entry's word was joined (proc_entry.
 * group_word) still of that group, the entry's word being cur? Yes while it is that ACTIVE word
 * or the DELETING one right after it; a group deleted and made again at the same index is
 * another group. 0 (no consumer) is of no group. */
static inline bool group_same(uint64_t joined, uint64_t cur)
{
    return joined != 0 && (cur == joined || cur == pw_next(joined, GROUP_DELETING));
}

/* Claim a free entry for this process: 0 and *idx, *word (its ACTIVE word), -EUSERS, or -EXDEV
 * when a process of another pid namespace is attached (liveness is judged by pid: a pid from
 * another namespace is not ours to check, so the two could declare each other dead). */
int registry_attach(struct segment *s, uint32_t role, const char *name, uint32_t *idx,
                    uint64_t *word);
/* As registry_attach, for a consumer of group (proc_entry.group) whose entry word it found
 * ACTIVE as group_word (proc_entry.group_word). */
int registry_attach_group(struct segment *s, uint32_t role, const char *name, uint32_t group,
                          uint64_t group_word, uint32_t *idx, uint64_t *word);

/* Release our entry (idx, word from attach), folding its counters into the header (and, a
 * consumer of a group that still exists, into the group entry's retired: stats.h). */
void registry_detach(struct segment *s, uint32_t idx, uint64_t word);

/* Release a FENCED entry: fold its counters, mark it FREE. True if this call did it. */
bool registry_release_fenced(struct segment *s, uint32_t idx, uint64_t fenced_word);

/* Refresh an entry's heartbeat to now_ns (now_ns_coarse(), read by the caller once per API
 * call): a plain store, made only when the coarse clock has ticked since the last one (a busy
 * poller dirties the line at most once per tick); no system call. */
static inline void registry_heartbeat_at(struct proc_entry *e, uint64_t now_ns)
{
    /* relaxed: a hint for the maintainer, ordered against nothing */
    if (atomic_load_explicit(&e->heartbeat_ns, memory_order_relaxed) != now_ns)
        atomic_store_explicit(&e->heartbeat_ns, now_ns, memory_order_relaxed);
}

/* The same, reading the coarse clock itself. */
void registry_heartbeat(struct proc_entry *e);

/* The process start time of pid (/proc/PID/stat field 22), or 0 if it has none. */
uint64_t proc_start_time(int pid);

/* The state letter of /proc/PID/stat (R, S, D, T, t, Z...), or 0 if there is no such process. */
char proc_run_state(int pid);

/* True if pid names no process, or a zombie. */
bool pid_gone(int pid);

/* The pid namespace of this process (inode of /proc/self/ns/pid), 0 if unknown. */
uint32_t registry_pidns_self(void);

/* True if the process recorded in e is gone or its pid was reused (never for an entry of
 * another pid namespace: its pid is not ours to check). */
bool registry_pid_dead(const struct proc_entry *e);

/* True if the holder behind entry word w (read with acquire from e) is dead: for a CLAIMED
 * word its claimer (the pid in the word), else the process recorded in e. */
bool registry_holder_dead(const struct proc_entry *e, uint64_t w);

#endif
