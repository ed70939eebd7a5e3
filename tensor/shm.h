/*
 * tensor/shm.h: shared-memory regions: the server side of KServe v2 system shared memory.
 *
 * A client creates a POSIX shared-memory object and registers a window of it under a name
 * (SystemSharedMemoryRegister {name, key, offset, byte_size}). The registry opens `key`
 * read-write, checks that the object covers offset + byte_size (overflow-checked), maps exactly
 * that window once and closes the descriptor. Requests then name the region and an
 * (offset, size) inside the window; kiln_shm_view turns that into a tensor view pointing into
 * the mapping, with bounds checks and no copy.
 *
 * Lifetimes: a region is refcounted. The registry holds one reference while the name is
 * registered; kiln_shm_acquire adds one for a caller; every storage made from the region holds
 * one. Unregistering removes the name at once (new lookups get KILN_NOT_FOUND), while the
 * mapping stays until the last in-flight view is gone: unmap is deferred, never pulled from
 * under a reader.
 *
 * Limits: names are 1..KILN_SHM_NAME_MAX printable ASCII characters; keys are one leading '/'
 * then 1..KILN_SHM_KEY_MAX-1 characters of [A-Za-z0-9._-], never "..". The registry enforces a
 * byte quota on the total mapped (deferred unmaps count until they happen) and an optional
 * idle TTL after which a region no request holds is unmapped and dropped (logged).
 *
 * Error messages name the region and the sizes; they never echo a key (a file-system name).
 *
 * Capability: kiln_shm_registry_available() is false when POSIX shared memory does not work on
 * this host (no /dev/shm, shm_open fails) or was disabled; registration then fails with
 * KILN_UNAVAILABLE and callers use heap buffers (kiln_shm_alloc_storage does so itself). The
 * registry says so once in the log at creation.
 *
 * Thread-safety: all functions are safe from any thread; regions may be acquired, viewed and
 * released concurrently with register/unregister/sweep.
 */
#ifndef KILN_TENSOR_SHM_H
#define KILN_TENSOR_SHM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/clock.h"
#include "common/status.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_SHM_NAME_MAX 128 /* characters in a region name */
#define KILN_SHM_KEY_MAX  255 /* characters in a key, the leading '/' included (NAME_MAX) */

typedef struct kiln_shm_registry kiln_shm_registry;
typedef struct kiln_shm_region kiln_shm_region;

typedef struct kiln_shm_options {
    uint64_t quota_bytes; /* total mapped bytes allowed; 0 = unlimited */
    uint64_t idle_ttl_ns; /* unmap regions unused this long; 0 = never */
    bool disable;         /* act as if POSIX shared memory were unavailable */
    kiln_clock_fn clock;  /* time source for the TTL; NULL = kiln_clock_now_ns */
    void *clock_ctx;      /* must stay valid until kiln_shm_registry_destroy returns */
} kiln_shm_options;

/* What kiln_shm_status reports of one region. */
typedef struct kiln_shm_info {
    char name[KILN_SHM_NAME_MAX + 1];
    char key[KILN_SHM_KEY_MAX + 1];
    uint64_t offset;
    uint64_t byte_size;
    uint32_t users;  /* references held besides the registry's (in-flight requests, views) */
    int cuda_device; /* -1 for system shared memory, else the CUDA device of the buffer */
} kiln_shm_info;

/* Returns KILN_OK if `key` is a valid key, else KILN_INVALID_ARGUMENT naming the rule broken. */
kiln_status kiln_shm_key_validate(const char *key, kiln_err *err);

/* Returns KILN_OK if `name` is a valid region name, else KILN_INVALID_ARGUMENT. */
kiln_status kiln_shm_name_validate(const char *name, kiln_err *err);

/*
 * True if POSIX shared memory works here: creates, maps and unlinks a private object.
 * Costs a few syscalls; the registry calls it once at creation.
 */
bool kiln_shm_probe(void);

/*
 * Creates a registry. opts may be NULL (defaults: no quota, no TTL, enabled, real clock).
 * Probes capability (unless disabled) and logs once at warn level if unavailable.
 * Returns KILN_RESOURCE_EXHAUSTED if memory is short; *out is NULL then.
 */
kiln_status kiln_shm_registry_create(const kiln_shm_options *opts, kiln_shm_registry **out,
                                     kiln_err *err);

/*
 * Unregisters every region and drops the creator's reference. Mappings still viewed stay until
 * their views go. NULL is a no-op.
 */
void kiln_shm_registry_destroy(kiln_shm_registry *reg);

/* False if POSIX shared memory is unavailable or disabled (see the header comment). */
bool kiln_shm_registry_available(const kiln_shm_registry *reg);

/*
 * Registers the window [offset, offset + byte_size) of POSIX object `key` as region `name`.
 * Returns:
 *   KILN_INVALID_ARGUMENT  bad name or key, byte_size 0, offset + byte_size overflowing, an
 *                          object smaller than offset + byte_size, or a key that cannot be
 *                          opened (the message names the region and the sizes);
 *   KILN_PERMISSION_DENIED the server may not open the object (EACCES);
 *   KILN_ALREADY_EXISTS    `name` is registered;
 *   KILN_RESOURCE_EXHAUSTED the quota would be passed (quota and bytes mapped in the message),
 *                          or the kernel refused the mapping for lack of memory (ENOMEM);
 *   KILN_UNAVAILABLE       shared memory is unavailable on this host.
 */
kiln_status kiln_shm_register(kiln_shm_registry *reg, const char *name, const char *key,
                              uint64_t offset, uint64_t byte_size, kiln_err *err);

/*
 * Registers a client's CUDA buffer, shared as a serialized cudaIpcMemHandle_t, as region `name`
 * (one namespace with system regions, as in Triton). The buffer is opened on `device` and must
 * hold byte_size bytes. Views of it are CUDA tensors. Errors: as kiln_shm_register for names;
 * KILN_UNAVAILABLE without CUDA or a GPU; KILN_INVALID_ARGUMENT for a bad handle, device or
 * size. The quota counts host mappings only.
 */
kiln_status kiln_shm_register_cuda(kiln_shm_registry *reg, const char *name, const void *handle,
                                   size_t handle_len, int device, uint64_t byte_size,
                                   kiln_err *err);

/*
 * Removes `name`; its mapping goes when its last user does. KILN_NOT_FOUND if not registered.
 */
kiln_status kiln_shm_unregister(kiln_shm_registry *reg, const char *name, kiln_err *err);

/* Removes every region; returns how many were removed. */
size_t kiln_shm_unregister_all(kiln_shm_registry *reg);

/*
 * OUT: *out = a reference to region `name` (release with kiln_shm_region_release). Marks it
 * used now for the TTL. KILN_NOT_FOUND naming the region if it is not registered.
 */
kiln_status kiln_shm_acquire(kiln_shm_registry *reg, const char *name, kiln_shm_region **out,
                             kiln_err *err);

/* Drops a reference from kiln_shm_acquire. NULL is a no-op. */
void kiln_shm_region_release(kiln_shm_region *region);

/* The region's name and window size. */
const char *kiln_shm_region_name(const kiln_shm_region *region);
uint64_t kiln_shm_region_size(const kiln_shm_region *region);

/*
 * OUT: *out = a KILN_STORAGE_SHM storage of bytes [offset, offset + size) of the region's
 * window (the storage holds its own region reference). KILN_INVALID_ARGUMENT naming the
 * region, offset, size and window if it does not fit (overflow-checked).
 */
kiln_status kiln_shm_region_slice(kiln_shm_region *region, uint64_t offset, uint64_t size,
                                  kiln_storage **out, kiln_err *err);

/*
 * Convenience: slice + kiln_tensor_view in one call. *out holds the only reference on the new
 * storage. Errors as kiln_shm_region_slice and kiln_tensor_view; *out zeroed on failure.
 */
kiln_status kiln_shm_view(kiln_shm_region *region, uint64_t offset, uint64_t size, kiln_dtype dtype,
                          const kiln_shape *shape, kiln_tensor *out, kiln_err *err);

/*
 * Drops every region that no one but the registry holds and that has been idle for more than
 * the TTL (logged at info level). Returns how many were dropped. A no-op without a TTL.
 */
size_t kiln_shm_sweep(kiln_shm_registry *reg);

/* Bytes currently mapped through this registry, deferred unmaps included. */
uint64_t kiln_shm_mapped_bytes(const kiln_shm_registry *reg);

/* Number of registered names. */
size_t kiln_shm_count(kiln_shm_registry *reg);

/*
 * Status of region `name`, or of all regions when name is NULL or "". Writes up to `cap`
 * entries to out (out may be NULL when cap is 0). OUT: *n = regions that matched (may exceed
 * cap). KILN_NOT_FOUND if `name` is given and not registered.
 */
kiln_status kiln_shm_status(kiln_shm_registry *reg, const char *name, kiln_shm_info *out,
                            size_t cap, size_t *n, kiln_err *err);

/*
 * Allocates host storage of `size` bytes that another process can map: a new POSIX object
 * (mode 0600) with its pages reserved (posix_fallocate, so a full /dev/shm fails here and not
 * with SIGBUS later), mapped read-write, unlinked and unmapped when the storage's last
 * reference goes; its key is kiln_shm_storage_key(). When shared memory is unavailable,
 * disabled, full, or reg is NULL, the storage is plain heap instead (kind KILN_STORAGE_HEAP,
 * key NULL). KILN_RESOURCE_EXHAUSTED if memory is short.
 */
kiln_status kiln_shm_alloc_storage(kiln_shm_registry *reg, size_t size, kiln_storage **out,
                                   kiln_err *err);

/* The POSIX key of storage made by kiln_shm_alloc_storage, or NULL for any other storage. */
const char *kiln_shm_storage_key(const kiln_storage *s);

#ifdef __cplusplus
}
#endif

#endif /* KILN_TENSOR_SHM_H */
