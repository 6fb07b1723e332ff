/*
 * crc32c.h - CRC32C (Castagnoli), the checksum of segment headers and log records.
 */
#ifndef SHMQ_CRC32C_H
#define SHMQ_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (0 to start) over len bytes at data. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
