/*
 * hdrblock.h - a message's headers as bytes: the header block, in a slot and in a log record.
 *
 * One encoding everywhere (docs/FORMAT.md, "Header block"): the headers one after another, each
 *   0        1          3          3+key_len  4+key_len      4+key_len+value_len
 *   +--------+----------+----------+----------+--------------+------+
 *   | key_len| value_len|   key    |   NUL    |    value     | NUL  |
 *   |  (u8)  | (u16 LE) |          |          |              |      |
 *   +--------+----------+----------+----------+--------------+------+
 * so one header takes key_len + value_len + 5 bytes (SHMQ_HEADER_SIZE) and a block is the sum.
 * The NULs let a reader hand out keys and values as C strings, in place. In a slot the block
 * follows the payload's room (at SLOT_HEADER_SIZE + align_up(max_msg_size, 64)): a u32 length
 * (0: the message has no headers), then max_header_bytes of room. The producer writes it with
 * the payload, before P1, so whatever publishes the payload publishes the block.
 *
 * A block read from shm or a log file is input: hdrs_decode() checks every length against the
 * block's end and every NUL, before a pointer is handed out.
 */
#ifndef SHMQ_HDRBLOCK_H
#define SHMQ_HDRBLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "shmq/shmq.h"

/* The bytes of headers h[0..n) encoded, after checking each (key and value rules of
 * shmq_header_t: -EINVAL) and the queue's limits (-EMSGSIZE); *size gets the block's length. */
int hdrs_measure(const shmq_header_t *h, uint32_t n, uint32_t max_bytes, uint32_t max_count,
                 uint32_t *size);

/* Encode h[0..n) (measured by hdrs_measure) into out. */
void hdrs_encode(const shmq_header_t *h, uint32_t n, unsigned char *out);

/* Split block[0..len) into out[0..min(max, *n)); *n gets the count. -EBADMSG if malformed. */
int hdrs_decode(const void *block, size_t len, shmq_header_t *out, size_t max, size_t *n);

#endif
