/*
 * nocancel.h - the library acts on no thread cancellation request inside itself, except asleep
 * in a blocking wait (include/shmq/shmq.h, "Threads and cancellation").
 *
 * pthread_cancel() (deferred, the default) acts at the target's next cancellation point: open,
 * close, pwrite, fdatasync, msync, nanosleep, fopen, ... A shmq call cancelled at one of its own
 * would end its thread holding what it holds there: w->lock in a log cache miss (every later
 * miss of the process deadlocks), a descriptor or an flock (the .recover lock), the group commit's
 * flush lock, a section (quiesce.h). So every such call the library makes runs with
 * cancellation disabled across it, NOCANCEL(call): the io.c wrappers (every file operation) and
 * the few calls outside them (registry.c's /proc read, the naps of lock waits, seen.c's
 * getrandom, consumer close's pthread_join). A request made meanwhile stays pending and acts at
 * the caller's next cancellation point after the shmq call returned. pthread_setcancelstate is
 * no system call (an atomic update of the thread's flags in glibc), and none of these calls is
 * on a fast path: they are all system calls or waits already.
 *
 * The exception, wait.c: a receive or a timed publish asleep on its futex (a raw syscall, no
 * cancellation point of itself) is made one, with a cleanup that undoes its sleep's counts.
 */
#ifndef SHMQ_NOCANCEL_H
#define SHMQ_NOCANCEL_H

#include <errno.h>
#include <pthread.h>

/* Evaluate call with cancellation disabled; its value, and errno as it left it. */
#define NOCANCEL(call)                                                                             \
    __extension__({                                                                                \
        int nc_old_;                                                                               \
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &nc_old_);                                  \
        __typeof__(call) nc_r_ = (call);                                                           \
        int nc_errno_ = errno;                                                                     \
        pthread_setcancelstate(nc_old_, NULL);                                                     \
        errno = nc_errno_;                                                                         \
        nc_r_;                                                                                     \
    })

#endif
