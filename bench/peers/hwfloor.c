/*
 * hwfloor.c - the hardware floor for a round trip between two cores: a cache-line ping-pong
 * through a MAP_SHARED mapping, the echo pinned to cpu 1, the pinger to cpu 0.
 *
 *   hwfloor -l 1|2 [-m poll|block] [-n samples] [-w warmup]
 *     -l 1  one line: the pinger stores 2i+1, the echo answers 2i+2 in the same line
 *     -l 2  two lines, one per direction (what any queue needs at least: the floor for shmq)
 *     -m block  the two-line exchange with a FUTEX_WAIT / FUTEX_WAKE on each line: the floor
 *           for a blocking wait (an idle core's wake-up; ~40 us on KVM guests)
 * One JSON line (common.h lat_print): one-way = RTT / 2.
 */
#include "common.h"

#include <linux/futex.h>
#include <sys/syscall.h>

struct lines {
    _Alignas(64) _Atomic uint32_t ping;
    _Alignas(64) _Atomic uint32_t pong;
};

static struct lines *sh;
static int nlines = 2, block;
static unsigned total;
static uint32_t seq; /* pinger's counter */

static void fwait(_Atomic uint32_t *a, uint32_t old)
{
    syscall(SYS_futex, (uint32_t *)a, FUTEX_WAIT, old, NULL, NULL, 0);
}

static void fwake(_Atomic uint32_t *a)
{
    syscall(SYS_futex, (uint32_t *)a, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Wait until *a == want: spin (poll), or sleep on the futex (block). */
static inline void await(_Atomic uint32_t *a, uint32_t want)
{
    uint32_t v;
    while ((v = atomic_load_explicit(a, memory_order_acquire)) != want) {
        if (block)
            fwait(a, v);
        else
            cpu_relax();
    }
}

static int echo(void *arg)
{
    _Atomic uint32_t *in = &sh->ping, *out = nlines == 1 ? &sh->ping : &sh->pong;
    for (uint32_t i = 0; i < total; i++) {
        await(in, 2 * i + 1);
        atomic_store_explicit(out, 2 * i + 2, memory_order_release);
        if (block)
            fwake(out);
    }
    return 0;
}

static int ping(void *arg)
{
    _Atomic uint32_t *out = &sh->ping, *in = nlines == 1 ? &sh->ping : &sh->pong;
    atomic_store_explicit(out, 2 * seq + 1, memory_order_release);
    if (block)
        fwake(out);
    await(in, 2 * seq + 2);
    seq++;
    return 0;
}

int main(int argc, char **argv)
{
    unsigned n = 1000000, warm = 10000;
    int ch;
    while ((ch = getopt(argc, argv, "l:m:n:w:")) != -1) {
        switch (ch) {
        case 'l': nlines = atoi(optarg); break;
        case 'm': block = !strcmp(optarg, "block"); break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'w': warm = (unsigned)strtoul(optarg, NULL, 0); break;
        default:
            fprintf(stderr, "usage: hwfloor -l 1|2 [-m poll|block] [-n samples] [-w warmup]\n");
            return 2;
        }
    }
    if (nlines != 1 && nlines != 2) {
        fprintf(stderr, "hwfloor: -l 1 or 2\n");
        return 2;
    }
    if (block && nlines == 1) {
        fprintf(stderr, "hwfloor: -m block needs -l 2\n");
        return 2;
    }
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 2;
    total = warm + n;
    struct hist *h = lat_run(warm, n, echo, ping, NULL);
    if (!h)
        return 2;
    lat_print(nlines == 1 ? "hw-1line"
              : block     ? "hw-futex"
                          : "hw-2lines",
              block ? "block" : "poll", 64, NULL, h);
    return 0;
}
