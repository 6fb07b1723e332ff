/*
 * logdir.h - where a queue's log lives, how it is found again, and who may use it.
 *
 * Below the segment (which stores the path in its layout) and the log (which writes there), so
 * that neither has to include the other to know it.
 *
 * The rule (README "Where the log lives"): a queue's log is the directory LOGDIR/NAME, LOGDIR
 * an absolute path (a relative one is refused: it would name another directory in another
 * working directory). Without a log_dir, LOGDIR is the state directory. With one, the state
 * directory gets a symbolic link STATE/NAME -> LOGDIR/NAME at create, so that a queue whose
 * segment is lost is found by its name alone (shmq_open, shmq_recover(name, NULL), `shmq wal`,
 * `shmq sub`, the watchdog) wherever it was created.
 *
 * Trust: the state directory must be owned by the caller and writable by nobody else; a log
 * directory must be owned by the caller or root, or belong to a shared queue, and be writable by
 * group/others only as far as the queue's mode shares it (-EPERM otherwise). A shared queue
 * (mode with group/other bits) gets those bits on its log directory and files, so its other
 * users can log too.
 */
#ifndef SHMQ_LOGDIR_H
#define SHMQ_LOGDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The state directory into buf: $SHMQ_STATE_DIR, else /var/lib/shmq for root, else
 * $XDG_STATE_HOME/shmq (if absolute), else $HOME/.local/state/shmq. No /tmp fallback: 0,
 * -ENOENT (no HOME nor any of the others), -EINVAL (the one chosen is relative),
 * -ENAMETOOLONG, -EPERM (it exists and is not a directory owned by the caller, or is writable
 * by group or others).
 */
int logdir_state(char *buf, size_t size);

/*
 * The log directory of queue name into buf: log_dir/NAME, or with log_dir NULL the state
 * directory's STATE/NAME. 0, -EINVAL (log_dir relative or empty), -ENAMETOOLONG, or an error
 * of logdir_state().
 */
int wal_dir_path(const char *name, const char *log_dir, char *buf, size_t size);

/*
 * Find NAME's log: log_dir/NAME when log_dir is given; else STATE/NAME, or the directory that
 * STATE/NAME links to. buf gets an absolute path whether or not the directory exists (the caller
 * finds out when it opens it); 0 or an error as wal_dir_path(). -EBADMSG: the link is not
 * absolute.
 */
int logdir_find(const char *name, const char *log_dir, char *buf, size_t size);

/* The LOGDIR part of dir (LOGDIR/NAME) into buf. 0 or -ENAMETOOLONG. */
int logdir_parent(const char *dir, char *buf, size_t size);

/* Does dir hold log files (wal.N)? Then a queue's log is there. */
bool logdir_has_log(const char *dir);

/*
 * At create: make dir (mkdir -p) for a queue of mode `mode`: dir gets the group/other bits the
 * mode shares, directories made on the way are private (0700, plus search bits for a shared
 * queue). A shared queue whose log directory others cannot reach (an ancestor without their
 * search bit) is refused: -EACCES. Then logdir_check().
 */
int logdir_make(const char *dir, uint32_t mode);

/* The trust rule above for an existing log directory: 0, -EPERM, -ENOTDIR, -ENOENT, -errno. */
int logdir_check(const char *dir, uint32_t mode);

/* The mode of a log file of a queue of mode `mode` (0600 plus what the mode shares). */
uint32_t logdir_file_mode(uint32_t mode);

/*
 * At create: when dir is not STATE/NAME itself, make STATE/NAME a link to it (replacing a link
 * or an empty directory that holds no log). -EEXIST: STATE/NAME is another queue's log.
 */
int logdir_point(const char *name, const char *dir);

/* At delete: remove STATE/NAME if it is a link to dir (or to nothing that exists). */
void logdir_unpoint(const char *name, const char *dir);

#endif
