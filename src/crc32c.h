/*
 * crc32c.h - CRC32C (Castagnoli), the checksum of segment headers and log records.
 */
#ifndef SHMQ_CRC32C_H
#define SHMQ_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (0 to start) over len bytes at data. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

/* Copy len bytes from src to at + n (not overlapping at[0..n + len)) and return the CRC32C
 * (from 0) of at[0..n + len) as then stored: crc32c(0, at, n + len) after the memcpy, in one
 * pass over src (a log record: its header and prefix written, then its payload). */
uint32_t crc32c_copy_after(const void *at, size_t n, const void *src, size_t len);

/* crc32c(0, p, 24): a log record header's bytes 8..32, a record with no payload (an ACK). */
uint32_t crc32c_24(const void *p);

#endif
