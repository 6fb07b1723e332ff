/*
 * abi.c - a caller's struct of another version in the library's layout, and back (abi.h).
 *
 * Why a config (and shmq_pub_opts_t, read by publish.c the same way) must end without tail
 * padding: a program built against an older shmq.h passes sizeof(its shmq_config_t). If that
 * size included padding, a field appended later could land in it, and the library would read as that field bytes the program never set (a struct copy
 * need not copy padding). Ending every layout on a field means a caller's size always covers
 * whole fields it knows; the assertion below names the last field and fails the build when a
 * field is appended without updating it. Append fields in 8-byte words (a lone uint32_t takes a
 * `uint32_t reserved_N` beside it, zero and ignored).
 */
#include "abi.h"

#include <errno.h>
#include <string.h>

#include "errdetail.h"

_Static_assert(sizeof(shmq_config_t) == ABI_END(shmq_config_t, max_headers),
               "shmq_config_t: append fields in whole 8-byte words and name the last one here");
_Static_assert(sizeof(shmq_config_t) % 8 == 0, "shmq_config_t: a size is a multiple of 8");
_Static_assert(sizeof(shmq_pub_opts_t) == ABI_END(shmq_pub_opts_t, reserved_1),
               "shmq_pub_opts_t: append fields in whole 8-byte words and name the last one here");
_Static_assert(sizeof(shmq_pub_opts_t) % 8 == 0, "shmq_pub_opts_t: a size is a multiple of 8");

int abi_config_in(const shmq_config_t *in, shmq_config_t *out)
{
    if (!in)
        return err_detail(-EINVAL, "the config is NULL");
    if (in->size % 8 != 0 || !abi_size_ok(in->size, ABI_CONFIG_SIZE_0, sizeof(shmq_config_t)))
        return err_detail(-EINVAL, "config size %u is not one this library knows (%zu..%zu, a "
                          "multiple of 8): make the config with shmq_config_init()", in->size,
                          (size_t)ABI_CONFIG_SIZE_0, sizeof(shmq_config_t));
    shmq_config_init(out);
    memcpy(out, in, in->size);
    out->size = sizeof(*out);
    return 0;
}

void abi_copy_out(void *dst, size_t size, const void *src, size_t own)
{
    memcpy(dst, src, size < own ? size : own);
}
