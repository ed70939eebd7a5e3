/*
 * kiln_plugin.h: the C ABI for Kiln model plugins (shared objects). Installed with Kiln.
 *
 * A plugin is a shared object that exports one function, KILN_PLUGIN_ENTRY_SYMBOL:
 *
 *     const kiln_plugin_api *kiln_plugin_entry(void);
 *
 * returning a static table with the ABI version the plugin was built against and its entry
 * points. Kiln loads it with dlopen(RTLD_NOW | RTLD_LOCAL) from
 * <repository>/<model>/<version>/model.so (or the config's default_model_filename), refuses it
 * if the major version differs or the minor version is newer than the server's, or if a
 * required entry point is NULL, and says which.
 *
 * Tensors cross the boundary as DLPack DLTensors (dlpack/dlpack.h, DLPack 0.6), always on
 * the CPU and compact row-major (strides NULL). KServe BYTES tensors, which DLPack cannot
 * describe, cross with flag KILN_PLUGIN_TENSOR_BYTES: dl.dtype is {kDLUInt, 8, 1}, dl.shape is
 * the logical element shape, and the data is the KServe encoding (per element a 4-byte
 * little-endian length, then the bytes); byte_size is its length.
 *
 * Outputs are not allocated by the plugin: it asks the server through batch->alloc_output,
 * which returns memory that may be a client's shared-memory region, so results land where the
 * client wants them with no copy. Each requested output must be allocated exactly once.
 *
 * Errors: every entry point returns a status code, 0 for success, otherwise a gRPC status
 * code (3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 13 INTERNAL...), with a message in *err.
 *
 * Lifetimes and threads:
 *   - create/destroy run on a server thread, one model version at a time; `state` is the
 *     plugin's own and is passed back to execute and destroy.
 *   - execute is never called concurrently with the same state (each model instance has its
 *     own state); different states may execute in parallel. It runs on a sandboxed thread:
 *     it may compute, allocate memory and read files, but system calls that open sockets,
 *     start processes, write files or change the system fail with EPERM, and the request
 *     fails with PERMISSION_DENIED naming the call.
 *   - every pointer in kiln_plugin_model_info and kiln_plugin_batch is borrowed for the
 *     duration of the call only (copy what you keep).
 */
#ifndef KILN_PLUGIN_H
#define KILN_PLUGIN_H

#include <dlpack/dlpack.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_PLUGIN_ABI_MAJOR    1
#define KILN_PLUGIN_ABI_MINOR    0
#define KILN_PLUGIN_ENTRY_SYMBOL "kiln_plugin_entry"

/* Status codes (the gRPC codes). */
#define KILN_PLUGIN_OK                  0
#define KILN_PLUGIN_INVALID_ARGUMENT    3
#define KILN_PLUGIN_NOT_FOUND           5
#define KILN_PLUGIN_RESOURCE_EXHAUSTED  8
#define KILN_PLUGIN_FAILED_PRECONDITION 9
#define KILN_PLUGIN_UNIMPLEMENTED       12
#define KILN_PLUGIN_INTERNAL            13

#define KILN_PLUGIN_MESSAGE_MAX 256

typedef struct kiln_plugin_error {
    char message[KILN_PLUGIN_MESSAGE_MAX]; /* NUL-terminated */
} kiln_plugin_error;

#define KILN_PLUGIN_TENSOR_BYTES     1u /* KServe BYTES encoding (see above) */
#define KILN_PLUGIN_TENSOR_READ_ONLY 2u /* inputs: do not write (e.g. a client's region) */

typedef struct kiln_plugin_tensor {
    const char *name;
    DLTensor dl;        /* data, device (CPU), ndim, dtype, shape; strides NULL */
    uint64_t byte_size; /* exact size of the data */
    uint32_t flags;
} kiln_plugin_tensor;

/* An input or output as the model config declares it (dims without the batch dim). */
typedef struct kiln_plugin_io_desc {
    const char *name;
    const char *datatype; /* KServe name: "INT32", "FP32", "BYTES"... */
    int32_t ndim;
    const int64_t *dims; /* -1 = any size */
} kiln_plugin_io_desc;

typedef struct kiln_plugin_model_info {
    const char *model_name;
    const char *model_dir;   /* <repository>/<model> */
    const char *version_dir; /* <repository>/<model>/<version> */
    int64_t version;
    int32_t max_batch_size; /* 0 = no batch dim */
    uint32_t n_inputs;
    const kiln_plugin_io_desc *inputs;
    uint32_t n_outputs;
    const kiln_plugin_io_desc *outputs;
    uint32_t n_params; /* the config's `parameters` as key/value strings */
    const char *const *param_keys;
    const char *const *param_values;
} kiln_plugin_model_info;

/*
 * Asks the server for the memory of output `output_index` (an index into the batch's
 * requested outputs) of shape `shape[0..ndim)` (batch dim included) and `byte_size` bytes
 * (for fixed-size types it must equal the shape's size). OUT: *data. Returns 0, or a status
 * code with *err set (wrong shape, too large for the client's region, asked twice...).
 */
typedef int32_t (*kiln_plugin_alloc_fn)(void *ctx, uint32_t output_index, int32_t ndim,
                                        const int64_t *shape, uint64_t byte_size, void **data,
                                        kiln_plugin_error *err);

typedef struct kiln_plugin_batch {
    uint32_t batch_size; /* rows in dim 0 of every input; 0 without a batch dim */
    uint32_t n_inputs;   /* in config order; an absent optional input has dl.data NULL */
    const kiln_plugin_tensor *inputs;
    uint32_t n_outputs;             /* outputs requested, each to be allocated once */
    const uint32_t *output_indices; /* their indices into kiln_plugin_model_info.outputs */
    kiln_plugin_alloc_fn alloc_output;
    void *alloc_ctx;
    /* Returns non-zero when the work is no longer wanted (cancelled, past its deadline, over
     * the CPU limit): a long computation should poll it and return early. */
    int32_t (*should_stop)(void *ctx);
    void *stop_ctx;
} kiln_plugin_batch;

typedef struct kiln_plugin_api {
    uint32_t abi_major;   /* KILN_PLUGIN_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;   /* KILN_PLUGIN_ABI_MINOR the plugin was built with */
    uint32_t struct_size; /* sizeof(kiln_plugin_api) the plugin was built with */
    /* Required. Creates the state of one model instance. */
    int32_t (*create)(const kiln_plugin_model_info *info, void **state, kiln_plugin_error *err);
    /* Required. Executes one batch. */
    int32_t (*execute)(void *state, const kiln_plugin_batch *batch, kiln_plugin_error *err);
    /* Required. Frees the state. */
    void (*destroy)(void *state);
    /* Optional (may be NULL). Host bytes the state holds, for the registry's memory budget:
     * called after create and after each execute of that state, on the thread that ran it
     * (never concurrently with an execute of the same state); keep it cheap. */
    uint64_t (*memory_bytes)(void *state);
} kiln_plugin_api;

typedef const kiln_plugin_api *(*kiln_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* KILN_PLUGIN_H */
