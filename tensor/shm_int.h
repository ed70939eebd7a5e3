/*
 * tensor/shm_int.h: internals shared by shm.c and shm_registry.c.
 */
#ifndef KILN_TENSOR_SHM_INT_H
#define KILN_TENSOR_SHM_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/refcount.h"
#include "tensor/shm.h"
#include "tensor/tensor_int.h"

struct kiln_shm_region {
    kiln_refcount ref;      /* the registry's while registered + users + storages */
    kiln_shm_registry *reg; /* holds a registry reference until the unmap */
    kiln_shm_region *next;  /* registry list; guarded by reg->mu */
    char name[KILN_SHM_NAME_MAX + 1];
    char key[KILN_SHM_KEY_MAX + 1];
    uint64_t offset;
    uint64_t byte_size;
    void *map_base;
    size_t map_len;
    unsigned char *data;            /* map_base + (offset % page) */
    atomic_uint_fast64_t last_used; /* registry clock, for the idle TTL */
    atomic_bool registered;         /* false once unregistered: no more stamps */
    int cuda_device;                /* >= 0: a client's CUDA buffer (data is a device pointer) */
};

/* Opens r->key and maps [r->offset, +r->byte_size). Errors name the region, not the key. */
kiln_status kiln__shm_map(kiln_shm_region *r, kiln_err *err);
void kiln__shm_unmap(kiln_shm_region *r);

/* Drops a region reference; the last one unmaps and releases the registry reference. */
void kiln__shm_region_unref(kiln_shm_region *r);

#endif /* KILN_TENSOR_SHM_INT_H */
