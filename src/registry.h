/*
 * registry.h - the processes and consumers attached to a queue, and whether they still live.
 *
 * An entry's word is state | gen << 4, and every change bumps gen (as slot state words do).
 * FREE -> CLAIMED (attach, filling) -> ACTIVE -> CLAIMED (detach, folding counters) -> FREE.
 * ACTIVE/CLAIMED -> FENCED (maintenance found it dead) -> FREE once its slots are reclaimed.
 * An entry is never FREE while a slot names it as owner, so an owner index is never reused
 * under a message it still holds.
 */
#ifndef SHMQ_REGISTRY_H
#define SHMQ_REGISTRY_H

#include <stdbool.h>

#include "segment.h"

static inline uint64_t pw_make(unsigned state, uint64_t gen) { return (gen << 4) | (state & 15u); }
static inline unsigned pw_state(uint64_t w) { return (unsigned)(w & 15u); }
static inline uint64_t pw_next(uint64_t w, unsigned state) { return pw_make(state, (w >> 4) + 1); }

/* Claim a free entry for this process: 0 and *idx, *word (its ACTIVE word), or -EUSERS. */
int registry_attach(struct segment *s, uint32_t role, const char *name, uint32_t *idx,
                    uint64_t *word);

/* Release our entry (idx, word from attach), folding its counters into the header. */
void registry_detach(struct segment *s, uint32_t idx, uint64_t word);

/* Release a FENCED entry: fold its counters, mark it FREE. True if this call did it. */
bool registry_release_fenced(struct segment *s, uint32_t idx, uint64_t fenced_word);

/* Refresh an entry's heartbeat (a plain store: no system call). */
void registry_heartbeat(struct proc_entry *e);

/* The process start time of pid (/proc/PID/stat field 22), or 0 if it has none. */
uint64_t proc_start_time(int pid);

/* The state letter of /proc/PID/stat (R, S, D, T, t, Z...), or 0 if there is no such process. */
char proc_run_state(int pid);

/* True if pid names no process, or a zombie. */
bool pid_gone(int pid);

/* True if the process recorded in e is gone or its pid was reused. */
bool registry_pid_dead(const struct proc_entry *e);

#endif
