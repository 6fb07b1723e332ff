/*
 * criterion-tsan-shim.c - lets Criterion tests run under ThreadSanitizer (SHMQ_SANITIZE=thread).
 *
 * Linked into every test executable of a TSan build only (tests/CMakeLists.txt), never into the
 * library. The problem (Criterion issue #274, open since 2018): at start-up Criterion's BoxFort
 * maps an "inheritable arena" with MAP_FIXED at a random 16 MiB-aligned address
 * 0x200000000000 + (rand_r() & 0x3fffff) * 16 MiB. Nearly all of that range is TSan's shadow,
 * its metadata or gaps TSan has reserved, so the mapping fails ("Could not initialize
 * inheritable arena") or lands somewhere that crashes the runner later; the few addresses that
 * work are in TSan's "mid application" range 0x550000000000..0x568000000000.
 *
 * The fix: this rand_r() replaces libc's for the whole executable. Called from libcriterion, it
 * returns a value that puts the arena inside that range (still random, so that BoxFort's retry
 * on an occupied address still has other candidates); called from anywhere else it is libc's
 * rand_r() unchanged.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* Arena slots of 16 MiB counted from BoxFort's base 0x200000000000: TSan's mid app range. */
#define ARENA_SLOT_FIRST 0x350000 /* 0x550000000000 */
#define ARENA_SLOTS 0x18000       /* up to 0x568000000000 */

static int called_from_criterion(const void *return_address)
{
    Dl_info info;
    return dladdr(return_address, &info) && info.dli_fname &&
           strstr(info.dli_fname, "libcriterion") != NULL;
}

int rand_r(unsigned int *seed)
{
    static int (*libc_rand_r)(unsigned int *);
    if (!libc_rand_r)
        libc_rand_r = (int (*)(unsigned int *))dlsym(RTLD_NEXT, "rand_r");
    int r = libc_rand_r(seed);
    if (called_from_criterion(__builtin_return_address(0)))
        return ARENA_SLOT_FIRST + r % ARENA_SLOTS;
    return r;
}
