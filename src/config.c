/*
 * config.c - the defaults of a queue's configuration, for a caller's struct of any size the
 * library knows (abi.h).
 */
#include "shmq/shmq.h"

#include <errno.h>
#include <string.h>

#include "abi.h"

static void defaults(shmq_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->size = sizeof(*cfg);
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
    cfg->max_groups = 1;
    cfg->max_header_bytes = 0;
    cfg->max_headers = 32;
}

int shmq_config_init_size(shmq_config_t *cfg, size_t size)
{
    if (!cfg)
        return -EINVAL;
    if (size % 8 != 0 || !abi_size_ok(size, ABI_CONFIG_SIZE_0, sizeof(shmq_config_t))) {
        if (size >= sizeof(cfg->size))
            cfg->size = 0; /* shmq_create() refuses it as well */
        return -EINVAL;
    }
    shmq_config_t own;
    defaults(&own);
    abi_copy_out(cfg, size, &own, sizeof(own));
    cfg->size = (uint32_t)size;
    return 0;
}

/* The plain symbol (no header macro reaches it): the first layout. */
void(shmq_config_init)(shmq_config_t *cfg)
{
    shmq_config_init_size(cfg, ABI_CONFIG_SIZE_0);
}
