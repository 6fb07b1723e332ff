/*
 * ring.h - the body shared by ckring.c and rtering.c: a bare ring of pointer-sized values in a
 * MAP_SHARED segment, as the upper bound for index passing between processes.
 *
 *   PROG tput [-v VARIANT] [-p P] [-c C] [-n msgs] [-a] [-T cap_s]
 *       P producers enqueue their share of msgs values (producer << 40 | seq + 1), C consumers
 *       dequeue; a full or empty ring is retried with pause, then sched_yield after 64 tries
 *       (the same policy as bench/tput). Consumers sum the values; the parent checks the sum.
 *   PROG instr [-v VARIANT] N
 *       One process: N x (enqueue one value, dequeue it): run under callgrind with two N and
 *       take the difference (instructions per message, set-up cancelled).
 * The including file defines RING_NAME, ring_setup(variant, capacity) returning the shared
 * ring, ring_put(r, v) and ring_get(r, &v) (1 on success), and VARIANTS (a usage string).
 */
#include "common.h"

#define RING_CAPACITY 4096u /* as bench/tput's queue */

static const char *variant = NULL;
static void *ring;

static uint64_t value_of(unsigned producer, uint64_t seq)
{
    return ((uint64_t)producer << 40) | (seq + 1);
}

static int ring_producer(unsigned i, void *arg)
{
    uint64_t n = tput_share(i);
    tput_wait_start();
    for (uint64_t s = 0; s < n; s++) {
        unsigned spins = 0;
        while (!ring_put(ring, value_of(i, s))) {
            if (atomic_load_explicit(&tctl->stop, memory_order_relaxed))
                goto out;
            backoff(&spins);
        }
    }
out:
    tput_producer_finished();
    return 0;
}

static int ring_consumer(unsigned j, void *arg)
{
    _Atomic uint64_t *count = &tctl->w[tctl->producers + j].count;
    uint64_t n = 0, sum = 0, v;
    unsigned spins = 0;
    tput_wait_start();
    for (;;) {
        if (ring_get(ring, &v)) {
            sum += v;
            atomic_store_explicit(count, ++n, memory_order_relaxed);
            spins = 0;
            continue;
        }
        if (tput_consumer_done())
            break;
        backoff(&spins);
    }
    tctl->w[tctl->producers + j].sum = sum;
    return 0;
}

static volatile uint64_t sink;

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "tput") && strcmp(argv[1], "instr"))) {
        fprintf(stderr, "usage: %s tput|instr [-v %s] ... (see bench/peers/ring.h)\n", argv[0],
                VARIANTS);
        return 2;
    }
    int is_tput = !strcmp(argv[1], "tput"), pin = 0, ch;
    unsigned P = 1, C = 1;
    uint64_t msgs = 1000000;
    double cap = 60;
    optind = 2;
    while ((ch = getopt(argc, argv, "v:p:c:n:aT:")) != -1) {
        switch (ch) {
        case 'v': variant = optarg; break;
        case 'p': P = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'c': C = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'n': msgs = strtoull(optarg, NULL, 0); break;
        case 'a': pin = 1; break;
        case 'T': cap = atof(optarg); break;
        default: return 2;
        }
    }
    ring = ring_setup(variant, RING_CAPACITY);
    if (!ring)
        return 2;
    if (!is_tput) {
        if (optind >= argc)
            return 2;
        uint64_t n = strtoull(argv[optind], NULL, 0), v = 0;
        for (uint64_t i = 0; i < n; i++) {
            if (!ring_put(ring, i + 1) || !ring_get(ring, &v))
                return 2;
            sink += v;
        }
        printf("{\"bench\":\"instr\",\"peer\":\"%s\",\"variant\":\"%s\",\"n\":%llu}\n", RING_NAME,
               variant, (unsigned long long)n);
        return 0;
    }
    if ((!strcmp(variant, "spsc") || !strcmp(variant, "sp_sc")) && (P != 1 || C != 1)) {
        fprintf(stderr, "%s: variant %s needs -p 1 -c 1\n", RING_NAME, variant);
        return 2;
    }
    double secs;
    uint64_t taken;
    int capped;
    int rc =
        tput_run(P, C, msgs, pin, cap, ring_producer, ring_consumer, NULL, &secs, &taken, &capped);
    if (rc)
        return rc;
    if (!capped) {
        uint64_t want = 0, got = 0;
        for (unsigned i = 0; i < P; i++)
            for (uint64_t s = 0; s < tput_share(i); s++)
                want += value_of(i, s);
        for (unsigned j = 0; j < C; j++)
            got += tctl->w[P + j].sum;
        if (want != got) {
            fprintf(stderr, "%s: checksum mismatch: lost or duplicated values\n", RING_NAME);
            return 1;
        }
    }
    tput_print(RING_NAME, variant, P, C, 8, pin, msgs, secs, taken, capped);
    return 0;
}
