/*
 * tensor/tensor.h: dtypes, shapes, storage, tensor views, BYTES encoding, DLPack, buffer pool.
 *
 * The model of memory: a kiln_storage is a refcounted block of bytes (aligned heap, a slice of
 * a shared-memory region, CUDA device memory, a pool buffer, or a borrowed buffer with a
 * release callback). A kiln_tensor is a view {dtype, shape, data, byte_size, device} into one
 * storage and holds one reference on it; the storage is released when its last reference goes.
 * Views are never copies: making a view, exporting it as DLPack, or importing a DLPack tensor
 * copies no tensor data.
 *
 * Errors: every function that can fail returns kiln_status and fills the optional `err`;
 * constructors leave their OUT parameter NULL (or the tensor zeroed) on failure.
 *
 * Thread-safety: kiln_storage refcounting is atomic, so views of one storage may be made,
 * copied and dropped on different threads. A single kiln_tensor struct is not synchronized.
 * The pool is safe from any thread.
 */
#ifndef KILN_TENSOR_TENSOR_H
#define KILN_TENSOR_TENSOR_H

#include <dlpack/dlpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- dtypes */

typedef enum kiln_dtype {
    KILN_DTYPE_INVALID = 0,
    KILN_DTYPE_BOOL,
    KILN_DTYPE_UINT8,
    KILN_DTYPE_UINT16,
    KILN_DTYPE_UINT32,
    KILN_DTYPE_UINT64,
    KILN_DTYPE_INT8,
    KILN_DTYPE_INT16,
    KILN_DTYPE_INT32,
    KILN_DTYPE_INT64,
    KILN_DTYPE_FP16,
    KILN_DTYPE_BF16,
    KILN_DTYPE_FP32,
    KILN_DTYPE_FP64,
    KILN_DTYPE_BYTES,
    KILN_DTYPE_COUNT
} kiln_dtype;

/*
 * DLPack type code for booleans. Debian's dlpack.h (0.6) predates kDLBool; later DLPack
 * versions define kDLBool = 6 with bits 8, which is what we export and accept.
 */
#define KILN_DLPACK_BOOL_CODE 6

/* Bytes per element; 0 for BYTES (variable length) and INVALID. */
size_t kiln_dtype_size(kiln_dtype dt);

/* KServe v2 datatype string ("FP32", "BYTES"...); "INVALID" for an unknown value. Static. */
const char *kiln_dtype_name(kiln_dtype dt);

/*
 * Parses a KServe v2 datatype string (exact, upper case) into *out.
 * Returns KILN_INVALID_ARGUMENT naming the string otherwise; *out is untouched then.
 */
kiln_status kiln_dtype_parse(const char *s, kiln_dtype *out, kiln_err *err);

/*
 * Parses a Triton model-config data type ("TYPE_FP32"; "TYPE_STRING" is BYTES).
 * Returns KILN_INVALID_ARGUMENT otherwise.
 */
kiln_status kiln_dtype_parse_config(const char *s, kiln_dtype *out, kiln_err *err);

/* Model-config name of a dtype ("TYPE_FP32", "TYPE_STRING" for BYTES). Static. */
const char *kiln_dtype_config_name(kiln_dtype dt);

/*
 * The DLPack type of a dtype (lanes = 1). Returns false for BYTES and INVALID, which have no
 * DLPack equivalent.
 */
bool kiln_dtype_to_dlpack(kiln_dtype dt, DLDataType *out);

/* The dtype of a DLPack type. KILN_INVALID_ARGUMENT (naming code/bits/lanes) if none. */
kiln_status kiln_dtype_from_dlpack(DLDataType t, kiln_dtype *out, kiln_err *err);

/* ---------------------------------------------------------------- shapes */

#define KILN_MAX_RANK 8

/* A shape: rank 0..KILN_MAX_RANK, dims >= 0 (or -1 as a wildcard in a config pattern). */
typedef struct kiln_shape {
    int rank;
    int64_t dims[KILN_MAX_RANK];
} kiln_shape;

/*
 * Sets *s from dims[0..rank). Every dim must be >= 0. Returns KILN_INVALID_ARGUMENT naming
 * the rank limit or the bad dim's index; *s is untouched on failure.
 */
kiln_status kiln_shape_set(kiln_shape *s, const int64_t *dims, size_t rank, kiln_err *err);

/* As kiln_shape_set, but dims of -1 (any size) are allowed: a config shape pattern. */
kiln_status kiln_shape_set_pattern(kiln_shape *s, const int64_t *dims, size_t rank, kiln_err *err);

/*
 * OUT: *numel = product of the dims (1 for rank 0). Returns KILN_INVALID_ARGUMENT if the
 * product overflows uint64 or a dim is negative.
 */
kiln_status kiln_shape_numel(const kiln_shape *s, uint64_t *numel, kiln_err *err);

/*
 * OUT: *bytes = numel * element size, overflow-checked. Returns KILN_INVALID_ARGUMENT on
 * overflow, for BYTES (its size is not a function of the shape) and for INVALID; returns
 * KILN_RESOURCE_EXHAUSTED if cap > 0 and the size passes it (both figures in the message).
 */
kiln_status kiln_shape_byte_size(kiln_dtype dt, const kiln_shape *s, uint64_t cap, uint64_t *bytes,
                                 kiln_err *err);

/*
 * Checks `actual` against a config `pattern` whose dims may be -1. Returns
 * KILN_INVALID_ARGUMENT naming the rank or the first mismatching dim (with both shapes).
 */
kiln_status kiln_shape_match(const kiln_shape *pattern, const kiln_shape *actual, kiln_err *err);

/* True if both shapes have the same rank and dims. */
bool kiln_shape_equal(const kiln_shape *a, const kiln_shape *b);

/*
 * Writes "[d0,d1,...]" into buf (always NUL-terminated when cap > 0, truncated if needed).
 * Returns buf, so it can be used inline in a message.
 */
char *kiln_shape_format(const kiln_shape *s, char *buf, size_t cap);

/* ---------------------------------------------------------------- storage */

typedef enum kiln_device_kind {
    KILN_DEVICE_CPU = 0,
    KILN_DEVICE_CUDA = 1,
} kiln_device_kind;

typedef struct kiln_device {
    kiln_device_kind kind;
    int id; /* CUDA ordinal; 0 for CPU */
} kiln_device;

typedef enum kiln_storage_kind {
    KILN_STORAGE_HEAP = 0, /* aligned heap memory owned by the storage */
    KILN_STORAGE_SHM,      /* a slice of a shared-memory region (tensor/shm.h) */
    KILN_STORAGE_CUDA,     /* CUDA device memory owned by the storage */
    KILN_STORAGE_POOL,     /* a buffer lent by a kiln_pool, returned on release */
    KILN_STORAGE_BORROWED, /* someone else's buffer; a release callback gives it back */
} kiln_storage_kind;

/* Alignment of heap and pool storage: a cache line, enough for any SIMD load. */
#define KILN_STORAGE_ALIGN 64

typedef struct kiln_storage kiln_storage;

/* Called exactly once, when the last reference to a borrowed storage goes. */
typedef void (*kiln_release_fn)(void *ctx, void *data);

/*
 * Creates heap storage of `size` bytes, KILN_STORAGE_ALIGN-aligned, uninitialized, with one
 * reference owned by the caller. Returns KILN_RESOURCE_EXHAUSTED if memory is short.
 */
kiln_status kiln_storage_create_heap(size_t size, kiln_storage **out, kiln_err *err);

/*
 * Creates CUDA device storage of `size` bytes on device `device`. Returns KILN_UNAVAILABLE
 * when Kiln was built without CUDA or the device does not exist, KILN_RESOURCE_EXHAUSTED when
 * device memory is short, KILN_INTERNAL with the CUDA error string otherwise.
 */
kiln_status kiln_storage_create_cuda(int device, size_t size, kiln_storage **out, kiln_err *err);

/*
 * Wraps a buffer that Kiln does not own (a gRPC slice, a DLPack tensor, a user buffer).
 * `release(ctx, data)` is called exactly once when the last reference goes; it may be NULL.
 * On failure `release` is never called and the caller still owns the buffer.
 */
kiln_status kiln_storage_wrap(void *data, size_t size, kiln_device device, kiln_release_fn release,
                              void *ctx, kiln_storage **out, kiln_err *err);

/* Adds a reference. REQUIRES: the caller holds one. */
void kiln_storage_ref(kiln_storage *s);

/* Drops a reference; the last one releases the memory. NULL is a no-op. */
void kiln_storage_unref(kiln_storage *s);

void *kiln_storage_data(const kiln_storage *s);
size_t kiln_storage_size(const kiln_storage *s);
kiln_storage_kind kiln_storage_get_kind(const kiln_storage *s);
kiln_device kiln_storage_device(const kiln_storage *s);

/* Number of CUDA devices visible (0 without a GPU). KILN_UNAVAILABLE if built without CUDA. */
kiln_status kiln_cuda_device_count(int *count, kiln_err *err);

/* KILN_OK when `device` is a visible CUDA device; KILN_UNAVAILABLE naming it and the count
 * otherwise (or when built without CUDA). */
kiln_status kiln_cuda_device_check(int device, kiln_err *err);

/*
 * Creates the CUDA context of every visible device, so that threads that enter the sandbox
 * later (sandbox/sandbox.h) find them: the driver opens its device files read-write then.
 * It also turns the driver's JIT cache off (CUDA_CACHE_DISABLE=1, unless the environment sets
 * it), since a sandboxed thread may not write the cache's files. Call once, before other
 * threads start (it sets an environment variable). OUT: *count, the devices (0 without a GPU).
 * KILN_UNAVAILABLE if built without CUDA; KILN_INTERNAL with the CUDA error otherwise.
 */
kiln_status kiln_cuda_prepare(int *count, kiln_err *err);

/*
 * Whether CUDA error code `cuda_error` (a cudaError_t) is one of the sticky ones that leave a
 * GPU's context unusable for the rest of the process (an illegal address, a launch failure, a
 * device assert...: CUDA's documentation says the process must be restarted to use the device
 * again). Thread-safety: any thread.
 */
bool kiln_cuda_error_sticky(int cuda_error);

/*
 * Checks that CUDA device `device` can still run work in this process: a call on a stream of
 * its own reports a fault a kernel left in the context (it neither waits for other threads'
 * work nor disturbs their graph captures). OUT: *lost, true when the context is unusable (a
 * sticky error; err then names the CUDA error). Returns KILN_OK when the device is sound,
 * KILN_UNAVAILABLE when it is lost, has no such device, or the build has no CUDA (*lost false).
 * The calling thread's current device is restored. Thread-safety: any thread.
 */
kiln_status kiln_cuda_probe(int device, bool *lost, kiln_err *err);

/* ---------------------------------------------------------------- tensor views */

/*
 * A view of part of a storage. The struct is the caller's (stack, array, embedded); it owns
 * one reference on `storage` until kiln_tensor_fini. A zeroed struct is a valid empty tensor.
 */
typedef struct kiln_tensor {
    kiln_dtype dtype;
    kiln_shape shape;
    void *data;       /* kiln_storage_data(storage) + offset */
    size_t byte_size; /* exact size of the tensor's bytes */
    kiln_device device;
    kiln_storage *storage;
} kiln_tensor;

/*
 * Makes *out a view of storage bytes [offset, offset + byte_size) as dtype/shape, taking a new
 * reference on `storage` (the caller keeps its own).
 * For fixed-size dtypes byte_size must equal the shape's byte size (0 means "compute it").
 * For BYTES byte_size is required, and on CPU storage the KServe v2 encoding is validated
 * against the shape's element count.
 * Returns KILN_INVALID_ARGUMENT for a size mismatch, bad BYTES encoding, or a window outside
 * the storage (offset + byte_size overflow-checked). *out is zeroed on failure.
 */
kiln_status kiln_tensor_view(kiln_storage *storage, size_t offset, kiln_dtype dtype,
                             const kiln_shape *shape, size_t byte_size, kiln_tensor *out,
                             kiln_err *err);

/*
 * As kiln_tensor_view, for bytes about to be written (an output buffer): the window and the
 * sizes are checked the same way, but BYTES content is not validated (it is not written yet;
 * validate it with kiln_bytes_validate once it is).
 */
kiln_status kiln_tensor_view_for_write(kiln_storage *storage, size_t offset, kiln_dtype dtype,
                                       const kiln_shape *shape, size_t byte_size, kiln_tensor *out,
                                       kiln_err *err);

/*
 * Allocates heap storage for dtype/shape and makes *out its only view. byte_size as in
 * kiln_tensor_view (required for BYTES; the new bytes are not validated, being uninitialized).
 * Returns KILN_INVALID_ARGUMENT for bad shapes, KILN_RESOURCE_EXHAUSTED if memory is short.
 */
kiln_status kiln_tensor_alloc(kiln_dtype dtype, const kiln_shape *shape, size_t byte_size,
                              kiln_tensor *out, kiln_err *err);

/* Makes *dst another view of src's bytes (adds a storage reference). Cannot fail. */
void kiln_tensor_share(const kiln_tensor *src, kiln_tensor *dst);

/* Drops the view's storage reference and zeroes *t. A zeroed tensor is a no-op. */
void kiln_tensor_fini(kiln_tensor *t);

/* ---------------------------------------------------------------- BYTES encoding */

/*
 * KServe v2 BYTES: each element is a 4-byte little-endian length followed by that many bytes,
 * elements concatenated row-major.
 *
 * kiln_bytes_validate checks that the length prefixes walk the buffer exactly (no prefix cut
 * short, no element past the end, no trailing bytes) and, if expected != UINT64_MAX, that it
 * holds exactly `expected` elements. OUT: *count (may be NULL) = elements found.
 * Returns KILN_INVALID_ARGUMENT naming the element index and the offending sizes.
 */
kiln_status kiln_bytes_validate(const void *data, size_t size, uint64_t expected, uint64_t *count,
                                kiln_err *err);

/* Iterates a buffer that kiln_bytes_validate accepted. */
typedef struct kiln_bytes_iter {
    const uint8_t *p;
    const uint8_t *end;
} kiln_bytes_iter;

void kiln_bytes_iter_init(kiln_bytes_iter *it, const void *data, size_t size);

/* OUT: *elem, *len of the next element. Returns false at the end. */
bool kiln_bytes_next(kiln_bytes_iter *it, const uint8_t **elem, uint32_t *len);

/*
 * Appends one element (prefix + bytes) at buf[*off..cap) and advances *off. Returns
 * KILN_OUT_OF_RANGE if it does not fit, KILN_INVALID_ARGUMENT if len >= 2^32.
 */
kiln_status kiln_bytes_append(void *buf, size_t cap, size_t *off, const void *elem, size_t len,
                              kiln_err *err);

/* ---------------------------------------------------------------- DLPack */

/*
 * Exports a view as a DLManagedTensor that holds its own storage reference: the tensor may be
 * finalized afterwards. The consumer calls (*out)->deleter(*out) exactly once, which drops that
 * reference and frees the struct. strides is NULL (compact row-major). Returns
 * KILN_INVALID_ARGUMENT for BYTES (DLPack has no variable-length type), KILN_RESOURCE_EXHAUSTED
 * if memory is short; *out is NULL on failure.
 */
kiln_status kiln_tensor_to_dlpack(const kiln_tensor *t, DLManagedTensor **out, kiln_err *err);

/*
 * Imports a DLManagedTensor without copying. On success Kiln owns `m`: its deleter is called
 * exactly once, when the last view of the resulting storage goes (not before kiln_tensor_fini
 * of *out and any views shared from it). On failure Kiln does not take `m` (the caller still
 * must call its deleter) and *out is zeroed.
 * Accepted: CPU or CUDA device, ndim <= KILN_MAX_RANK, lanes 1, a dtype kiln_dtype_from_dlpack
 * knows, strides NULL or compact row-major. Returns KILN_INVALID_ARGUMENT otherwise, naming the
 * field.
 */
kiln_status kiln_tensor_from_dlpack(DLManagedTensor *m, kiln_tensor *out, kiln_err *err);

/* ---------------------------------------------------------------- buffer pool */

/*
 * A pool of reusable host buffers for outputs and intermediates. Requests are rounded up to a
 * power-of-two size class (at least 4 KiB); a released buffer goes back to its class's free
 * list while the pool caches less than max_cached_bytes, else it is freed. Each consumer gets
 * an owner with its own byte quota (charged by class size while the buffer is out).
 *
 * Lifetimes: kiln_pool_destroy and kiln_pool_owner_destroy drop the creator's reference;
 * buffers still out keep what they need alive, and come back to (or are freed by) the pool
 * when their storage's last reference goes.
 */
typedef struct kiln_pool kiln_pool;
typedef struct kiln_pool_owner kiln_pool_owner;

typedef struct kiln_pool_stats {
    size_t cached_bytes; /* bytes in free lists */
    uint64_t hits;       /* allocations served from a free list */
    uint64_t misses;     /* allocations that went to the heap */
} kiln_pool_stats;

kiln_status kiln_pool_create(size_t max_cached_bytes, kiln_pool **out, kiln_err *err);
void kiln_pool_destroy(kiln_pool *pool);

/* name (copied, for messages) identifies the owner; quota_bytes 0 = unlimited. */
kiln_status kiln_pool_owner_create(kiln_pool *pool, const char *name, size_t quota_bytes,
                                   kiln_pool_owner **out, kiln_err *err);
void kiln_pool_owner_destroy(kiln_pool_owner *owner);

/*
 * OUT: *out = a KILN_STORAGE_POOL storage of at least `size` bytes (kiln_storage_size gives
 * `size`), uninitialized. Returns KILN_RESOURCE_EXHAUSTED with the owner's name, quota, bytes
 * in use and bytes asked when the quota would be passed, or when memory is short.
 */
kiln_status kiln_pool_alloc(kiln_pool_owner *owner, size_t size, kiln_storage **out, kiln_err *err);

/* Bytes the owner has out now (class sizes). */
size_t kiln_pool_owner_in_use(kiln_pool_owner *owner);

void kiln_pool_get_stats(kiln_pool *pool, kiln_pool_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* KILN_TENSOR_TENSOR_H */
