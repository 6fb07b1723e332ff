/*
 * logdir.h - where a queue's log lives: the directory its segment records at create time.
 *
 * Below the segment (which stores the path in its layout) and the log (which writes there), so
 * that neither has to include the other to know it.
 */
#ifndef SHMQ_LOGDIR_H
#define SHMQ_LOGDIR_H

#include <stddef.h>

/*
 * The log directory of queue name into buf: log_dir/NAME, or with log_dir NULL the state
 * directory's: $SHMQ_STATE_DIR, else /var/lib/shmq for root, else $XDG_STATE_HOME/shmq, else
 * $HOME/.local/state/shmq (/tmp/.local/state/shmq without a HOME). 0, or -ENAMETOOLONG.
 */
int wal_dir_path(const char *name, const char *log_dir, char *buf, size_t size);

#endif
