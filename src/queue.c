/*
 * queue.c - open and close a queue: map its segment and register this process in it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "queue.h"
#include "registry.h"

static int attach(shmq_t **out, struct segment *seg, const char *name)
{
    shmq_t *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->seg = *seg;
    strncpy(q->name, name, SHMQ_NAME_MAX);
    pthread_mutex_init(&q->maint_lock, NULL);
    int err = registry_attach(&q->seg, ROLE_CLIENT, "", &q->self, &q->self_word);
    if (err) {
        pthread_mutex_destroy(&q->maint_lock);
        free(q);
        return err;
    }
    *out = q;
    return 0;
}

int shmq_create(const char *name, const shmq_config_t *cfg, shmq_t **q)
{
    if (!q)
        return -EINVAL;
    struct segment seg;
    int err = segment_create(name, cfg, &seg);
    if (err)
        return err;
    if ((err = attach(q, &seg, name)) != 0) {
        segment_close(&seg);
        shmq_unlink(name);
    }
    return err;
}

int shmq_open(const char *name, shmq_t **q)
{
    if (!q)
        return -EINVAL;
    struct segment seg;
    int err = segment_open(name, false, &seg);
    if (err)
        return err;
    if ((err = attach(q, &seg, name)) != 0)
        segment_close(&seg);
    return err;
}

int shmq_close(shmq_t *q)
{
    if (!q)
        return -EINVAL;
    if (atomic_load(&q->consumers) > 0)
        return -EBUSY;
    registry_detach(&q->seg, q->self, q->self_word);
    segment_close(&q->seg);
    pthread_mutex_destroy(&q->maint_lock);
    free(q->suspect_word);
    free(q->suspect_ns);
    free(q);
    return 0;
}

int shmq_unlink(const char *name)
{
    char shm_name[SHMQ_NAME_MAX + 8];
    int err = segment_shm_name(name, shm_name, sizeof(shm_name));
    if (err)
        return err;
    return shm_unlink(shm_name) == 0 ? 0 : -errno;
}

int shmq_get_config(const shmq_t *q, shmq_config_t *cfg)
{
    if (!q || !cfg)
        return -EINVAL;
    layout_to_config(&q->seg.layout, cfg);
    return 0;
}
