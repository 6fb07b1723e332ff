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
    case -ESTALE:
        /* a second ack of one delivery, or any call after a fence: never "reclaimed", which
         * told a double ack's author that the message went to someone else */
        return "stale delivery or consumer: already acked or fenced (a fenced consumer's "
               "messages are redelivered to others)";
    case -EMSGSIZE: return "message larger than the queue's max_msg_size";
    case -EINVAL: return "invalid argument (name, config, NULL pointer or token)";
    case -EEXIST: return "queue already exists";
    case -ENOENT: return "no such queue";
    case -EPROTO: return "segment or log has another format version (made by another shmq release: drain it with that release, or delete it)";
    case -EIDRM: return "the queue was rebuilt from its log: reopen it";
    case -EBADMSG: return "segment is truncated, corrupted or not a shmq segment";
    case -EUSERS: return "registry full: too many attached processes";
    case -EBUSY:
        return "busy: consumers are still open on this queue, another holds the lock, or (a "
               "publish) a thread of this process stopped inside a log write holds back too "
               "many log file mappings (retry once it goes on)";
    case -ENOSPC:
        return "no space left on a file system (/dev/shm for the segment, the log directory's "
               "for the log), or a rebuild found more live messages than the capacity";
    case -EDQUOT: return "disk quota exceeded (the segment's or the log's file system)";
    case -EFBIG: return "file size limit reached (RLIMIT_FSIZE, ulimit -f) or file too large";
    case -EIO:
        return "I/O error writing or flushing the log (sync: the message may not be on disk; "
               "the log stays failed until the segment is rebuilt)";
    case -EROFS: return "read-only file system (the log directory or /dev/shm)";
    case -EACCES: return "permission denied (the segment, the log directory or its files)";
    case -ENOMEM: return "out of memory or address space (RLIMIT_AS): a mapping failed";
    case -EINPROGRESS: return "a publish with this dedup key is under way (retry)";
    case -ENOTSUP: return "not supported by this queue (no dedup window or no log)";
    case -ENODATA: return "history from there is no longer in the log (retention)";
    case -EMFILE: return "too many open files";
    case -EXDEV: return "the queue is in use by a process of another pid namespace (liveness "
                        "is judged by pid; share a pid namespace)";
    case -EPERM: return "not permitted (a state or log directory not owned by you, or writable by others)";
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}
