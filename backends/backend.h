/*
 * backends/backend.h: the interface every model format implements.
 *
 * A backend is a vtable found by name ("plugin", "onnx") from the model config. For one
 * model version on one device it loads a kiln_backend_model, executes batches on it, reports
 * the memory it holds, and unloads it. A backend may also derive a model's config from its
 * model file when the model has no config.pbtxt (autoconfig, below). Inputs and outputs are
 * described by the model config (proto/model_config.h); tensors are kiln_tensor views
 * (tensor/tensor.h).
 *
 * Batches: dim 0 of every input is the batch (batch_size rows) when the model's
 * max_batch_size > 0. Outputs are written into output slots: a slot may come with a buffer
 * (e.g. a window of a client's shared-memory region) that the output must be written into;
 * otherwise the backend allocates. Backends get their output memory through
 * kiln_output_slot_alloc, which enforces that rule and the size checks in one place.
 *
 * Concurrency: load and unload run on one thread at a time per model. execute is never called
 * concurrently on the same kiln_backend_model (each model instance has its own); different
 * models execute in parallel. execute runs on a sandboxed execution thread (sandbox/).
 */
#ifndef KILN_BACKENDS_BACKEND_H
#define KILN_BACKENDS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "proto/model_config.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_backend_model kiln_backend_model;

/* What a backend is given to load one model version. All pointers are borrowed for the call,
 * except `config`, which outlives the loaded model (the registry owns it). */
typedef struct kiln_load_args {
    const char *model_name;
    const char *model_dir;   /* <repository>/<model> */
    const char *version_dir; /* <repository>/<model>/<version> */
    int64_t version;
    const kiln_model_config *config;
    kiln_device device; /* where the model must run */
} kiln_load_args;

/* One requested output of a batch. */
typedef struct kiln_output_slot {
    uint32_t index;       /* index into config->outputs */
    kiln_storage *buffer; /* caller's buffer to write into, or NULL: the backend allocates */
    size_t offset;        /* window of `buffer`: [offset, offset + capacity) */
    size_t capacity;
    kiln_tensor result; /* OUT: the output (a view into buffer, or new storage) */
} kiln_output_slot;

/* What a failed execute says of the model's device (kiln_batch.fault), so that the registry
 * can act on it (registry.h, kiln_model_execute). */
typedef enum kiln_batch_fault {
    KILN_FAULT_NONE = 0,
    /* device memory ran out (the status is RESOURCE_EXHAUSTED): memory other models hold on
     * the device may make room */
    KILN_FAULT_DEVICE_MEMORY,
    /* the device cannot run anything more in this process (a CUDA kernel fault poisoned its
     * context: every later CUDA call there fails) until the server restarts */
    KILN_FAULT_DEVICE_LOST,
} kiln_batch_fault;

/* One batch to execute. */
typedef struct kiln_batch {
    uint32_t batch_size;       /* rows in dim 0; 0 when the model has no batch dim */
    uint32_t n_inputs;         /* == config->n_inputs */
    const kiln_tensor *inputs; /* in config order; an absent optional input has storage NULL */
    uint32_t n_outputs;        /* requested outputs, 1..config->n_outputs */
    kiln_output_slot *outputs;
    /* Cooperative stop: non-zero once the batch's requests are all cancelled or past their
     * deadline, or the CPU watchdog fired. May be NULL. */
    int (*should_stop)(void *ctx);
    void *stop_ctx;
    /* OUT: set by a failing execute when the failure is the device's (else left NONE) */
    kiln_batch_fault fault;
} kiln_batch;

typedef struct kiln_backend {
    const char *name;

    /* Loads one model version. OUT: *out (NULL on failure). Errors name the model and the
     * file; KILN_RESOURCE_EXHAUSTED when memory is short. */
    kiln_status (*load)(const kiln_load_args *args, kiln_backend_model **out, kiln_err *err);

    /* Executes one batch, filling every slot's result. On failure the results are finalized
     * (no storage left behind), the status says why, and batch->fault says whether the device
     * ran out of memory or was lost. A model may be executed again after any failure (after a
     * lost device it fails at once). */
    kiln_status (*execute)(kiln_backend_model *model, kiln_batch *batch, kiln_err *err);

    /* Bytes the loaded model holds on the host and on its device. */
    void (*memory)(const kiln_backend_model *model, uint64_t *host_bytes, uint64_t *device_bytes);

    /* Frees everything load made. NULL is a no-op. */
    void (*unload)(kiln_backend_model *model);

    /*
     * Config auto-complete, optional: both NULL when the backend's models need a config.pbtxt.
     * autoconfig_file names the model file ("model.onnx") whose presence in a version directory
     * says that this backend can derive the config; the registry looks for it in the highest-
     * numbered version directory of a model that has no config.pbtxt.
     * autoconfig derives a complete, validated config for `model_name` from that file in
     * `version_dir` (its name is model_name; its packed form is what the ModelConfig RPC
     * answers). OUT: *out, owned by the caller (kiln_model_config_free); NULL on failure.
     * Errors name the model and the tensor or file: KILN_NOT_FOUND if the file is missing,
     * KILN_INVALID_ARGUMENT if it cannot be read as a model or a config cannot be derived
     * (an element type Kiln has no dtype for, a tensor without a shape),
     * KILN_RESOURCE_EXHAUSTED if memory is short.
     * Thread-safety: any thread; it keeps no state.
     */
    const char *autoconfig_file;
    kiln_status (*autoconfig)(const char *model_name, const char *version_dir,
                              kiln_model_config **out, kiln_err *err);

    /* True when execute runs code Kiln did not write (plugins), which may use a GPU behind
     * Kiln's back: after such an execute fails with INTERNAL or UNKNOWN (or a load fails), the
     * registry checks every GPU for a fault that code may have left (kiln_cuda_probe). A
     * backend that runs on GPUs itself reports its faults in kiln_batch.fault instead. */
    bool foreign_code;
} kiln_backend;

/*
 * The backend named `name` ("plugin"...), or NULL. The table is immutable.
 * Thread-safety: any thread.
 */
const kiln_backend *kiln_backend_find(const char *name);

/* Comma-separated names of the backends this build has (static string), for messages. */
const char *kiln_backend_names(void);

/*
 * Sets the threads each GEMM of the CPU backends may use (OpenBLAS, process-wide). Call it
 * before loading models, from a thread outside the sandbox: the math library starts its
 * threads here, and they run outside the sandbox. Default 1. INVALID_ARGUMENT outside 1..256;
 * FAILED_PRECONDITION once models have fixed another count.
 */
kiln_status kiln_backend_set_cpu_threads(int n, kiln_err *err);

/*
 * The first backend, in table order, that can auto-complete a config and whose
 * autoconfig_file is a regular file in `version_dir`; NULL if none.
 * Thread-safety: any thread (it only stats files).
 */
const kiln_backend *kiln_backend_autoconfig_find(const char *version_dir);

/* Writes the autoconfig_file names of the table, comma-separated, into buf (truncated to
 * cap) and returns buf. For messages ("looked for: model.onnx"). */
char *kiln_backend_autoconfig_files(char *buf, size_t cap);

/*
 * Allocates the output of `slot` as dtype/shape with `byte_size` bytes (0 = from the shape for
 * fixed-size dtypes; required for BYTES). With a caller buffer the output is a view of its
 * window: KILN_INVALID_ARGUMENT naming the output and both sizes if the window is too small.
 * Without one it is new heap storage. Errors: KILN_INTERNAL if the slot already has a result;
 * size errors as kiln_tensor_view; KILN_RESOURCE_EXHAUSTED if memory is short.
 * `name` is the output's name, for messages.
 */
kiln_status kiln_output_slot_alloc(kiln_output_slot *slot, const char *name, kiln_dtype dtype,
                                   const kiln_shape *shape, size_t byte_size, kiln_err *err);

/*
 * Checks that `shape` fits config output `index`: its dims (-1 matches any size), with
 * batch_size as dim 0 first when the model batches (max_batch_size > 0). Returns
 * KILN_INVALID_ARGUMENT naming the output and both shapes.
 */
kiln_status kiln_output_shape_check(const kiln_model_config *config, uint32_t index,
                                    uint32_t batch_size, const kiln_shape *shape, kiln_err *err);

/* Finalizes every slot's result (used on failure paths). */
void kiln_batch_release_outputs(kiln_batch *batch);

#ifdef __cplusplus
}
#endif

#endif /* KILN_BACKENDS_BACKEND_H */
