/*
 * errors.c - text for the negative errno values shmq returns.
 */
#include "shmq/shmq.h"

#include <errno.h>
#include <string.h>

const char *shmq_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case -EAGAIN: return "queue full or empty (try again)";
    case -ETIMEDOUT: return "timed out";
    case -ESTALE: return "stale delivery or consumer: it was fenced (reclaimed and redelivered)";
    case -EMSGSIZE: return "message larger than the queue's max_msg_size";
    case -EINVAL: return "invalid argument (name, config, NULL pointer or token)";
    case -EEXIST: return "queue already exists";
    case -ENOENT: return "no such queue";
    case -EPROTO: return "segment has another format version";
    case -EBADMSG: return "segment is truncated, corrupted or not a shmq segment";
    case -EUSERS: return "registry full: too many attached processes";
    case -EBUSY: return "consumers are still open on this queue";
    case -ENOSPC: return "no space (ring overfull or segment too large)";
    case -EINPROGRESS: return "a publish with this dedup key is under way (retry)";
    case -ENOTSUP: return "not supported by this queue (no dedup window or no log)";
    case -ENODATA: return "history from there is no longer in the log (retention)";
    case -EMFILE: return "too many open files";
    case -EPERM: return "not permitted (a state or log directory not owned by you, or writable by others)";
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}
