/*
 * walscan.h - reading log files: validate a file, walk its records, resync past bad bytes.
 *
 * Pure functions over bytes in memory: recovery, `shmq wal inspect|verify` and the fuzz target
 * share them. Nothing read from the file is trusted: every length is checked against what is
 * left of the buffer before it is used.
 */
#ifndef SHMQ_WALSCAN_H
#define SHMQ_WALSCAN_H

#include <stddef.h>
#include <stdint.h>

#include "wal.h"

/* Check a file's header: 0, -EBADMSG (not a log file, bad crc, size mismatch), -EPROTO. */
int walscan_header(const void *base, size_t size, const struct wal_file_header **out);

struct walscan_stats {
    uint64_t records;     /* valid records (PAD included) */
    uint64_t bad_regions; /* runs of invalid bytes, not all zero, followed by a valid record */
    uint64_t holes;       /* runs of at least a record header of zeros and records cut before
                           * their crc, followed by a valid record: appends that never finished
                           * (or lost data: walscan cannot tell) */
    uint64_t hole_bytes;  /* bytes in those holes */
    uint64_t bad_bytes;   /* bytes in bad regions, holes and a torn tail (what is skipped) */
    uint64_t torn_offset; /* offset of a torn tail, 0 if the file ends cleanly */
    uint64_t end_offset;  /* end of the last valid record */
};

/* Called for each valid record; return non-zero to stop. payload points into the buffer. */
typedef int (*walscan_fn)(void *arg, uint64_t offset, const struct wal_rec *rec,
                          const void *payload);

/*
 * Walk the records of a file whose header is valid. A run of invalid bytes followed by a valid
 * record is a hole if it holds only what unfinished appends leave (walscan_unfinished(): zeros,
 * a reservation never written, and records cut before their crc, a writer killed in its
 * stores; nothing in it was ever reported written, unless it is lost data: only the segment
 * can tell, `shmq wal verify` checks) and a bad region otherwise (corruption: garbage, a wrong
 * non-zero crc); either way the walk resyncs past it. Invalid bytes after the last valid record
 * are a torn tail unless they are such leftovers, which count as unused space.
 */
/* Is [from, to) of a file of this epoch only what unfinished appends leave (zeros, and records
 * cut before their crc was stored)? 1 if so. */
int walscan_unfinished(const void *base, uint64_t from, uint64_t to, uint64_t epoch);

void walscan_records(const void *base, size_t size, const struct wal_file_header *h,
                     walscan_fn fn, void *arg, struct walscan_stats *st);

#endif
