/*
 * setconfig.h - change a running queue's settings (shmq_set_config, setconfig.c) and keep the
 * log file of the latest change (settings.h has the protocol, K1-K4).
 */
#ifndef SHMQ_SETCONFIG_H
#define SHMQ_SETCONFIG_H

#include <stdint.h>

#include "queue.h"

/*
 * Maintenance (K3): the lowest log file the settings need, UINT64_MAX if none (no change was
 * logged since the segment was made: its layout, in every file header, holds them). If the
 * latest CONFIG record's file lags lag_files or more behind wal_cur (the file being written
 * when the pass began, read before this call), the settings are logged again first and the
 * file moves to the copy's, unless a change came meanwhile. Needs q->wal.
 */
uint64_t settings_keep(shmq_t *q, uint64_t wal_cur, uint32_t lag_files);

#endif
