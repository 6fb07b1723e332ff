/*
 * format.h - the constants of shmq's on-disk and in-shm formats that more than one layer needs.
 *
 * The bottom of the library: it includes nothing of src/. The segment's layout (layout.c) is
 * computed from these and from the config alone, so it needs the log's record sizes and the
 * dedup window's geometry without including the code that writes them (wal.c, dedup.c). The
 * structures stay with the code that owns them (layout.h: segment header, registry, slots;
 * dedup.h: buckets; wal.h: log records and file headers); docs/FORMAT.md draws the bytes. A
 * change here is a format change: bump the version it belongs to.
 */
#ifndef SHMQ_FORMAT_H
#define SHMQ_FORMAT_H

#include <stdint.h>

/* The segment (/dev/shm/shmq.NAME). */
#define SHMQ_MAGIC 0x31474553514d4853ull /* "SHMQSEG1" little-endian */
#define SHMQ_FORMAT_VERSION 2u /* 2: seg_layout.log_gen (the log generation) */
#define CACHE_LINE 64 /* every region and contended word starts on one */

/* The dedup window in the segment: buckets of one cache line, in sets of DEDUP_WAYS. */
#define DEDUP_WAYS 4u
#define DEDUP_BUCKET_SIZE 64u

/* The write-ahead log (wal.h): files of wal_file_size bytes, a header, records aligned to 16. */
#define WAL_FILE_MAGIC 0x314c4157514d4853ull /* "SHMQWAL1" */
#define WAL_REC_MAGIC 0x4c415751u            /* "QWAL" */
#define WAL_VERSION 2u /* 2: generations (head file, log_gen), NACK/DEAD payloads, ACK flags */
#define WAL_HEADER_SIZE 4096u /* bytes before the first record of a file */
#define WAL_REC_HEADER 32u    /* bytes of a record header */
#define WAL_ALIGN 16u         /* records start on multiples of this */
#define WAL_FILE_MIN (64u << 10)
#define WAL_FILE_DEFAULT (64u << 20)
#define WAL_PUBLISH_PREFIX 10u /* a PUBLISH payload's unix_ms and key_len, before the key */
#define WAL_PUBLISH_DUE_LEN 8u /* and, flag WAL_PUB_DUE, its due time between the two */
#define WAL_PUBLISH_HDRS_LEN 4u /* and, flag WAL_PUB_HDRS, its header block's length after
                                * key_len */
#define WAL_KEY_MAX 128u       /* bytes of a dedup key in a PUBLISH record */
#define WAL_GEN_GAP 16u        /* files left unused between one generation's files and the next */

/* The log's head file (loghead.h): the live generation and the last complete one. */
#define LOG_HEAD_MAGIC 0x44414548514d4853ull /* "SHMQHEAD" */
#define LOG_HEAD_SIZE 4096u

/* Bytes a record with len payload bytes occupies. */
static inline uint64_t wal_rec_size(uint32_t len)
{
    return ((uint64_t)WAL_REC_HEADER + len + WAL_ALIGN - 1) & ~(uint64_t)(WAL_ALIGN - 1);
}

#endif
