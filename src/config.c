/*
 * config.c - the defaults of a queue's configuration.
 */
#include "shmq/shmq.h"

#include <string.h>

void shmq_config_init(shmq_config_t *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->capacity = 1024;
    cfg->max_msg_size = 1024;
    cfg->max_procs = 64;
    cfg->heartbeat_timeout_ms = 5000;
    cfg->ack_deadline_ms = 30000;
    cfg->max_attempts = 5;
    cfg->backoff_base_ms = 100;
    cfg->backoff_cap_ms = 30000;
    cfg->backoff_multiplier = 2.0;
    cfg->mode = 0600;
    cfg->durability = SHMQ_DURABILITY_PROCESS;
    cfg->log_dir = NULL;
    cfg->wal_file_size = 64u << 20;
    cfg->dedup_window_count = 4096;
    cfg->dedup_window_ms = 120000;
}
