/*
 * model_worker/worker.h: the engine behind the transport: the model registry, the shared-memory
 * registry, the sandboxed execution threads, and the life of an inference request (validate,
 * queue, execute, answer).
 *
 * The transport (server/) decodes a request into a kiln_infer_request and calls
 * kiln_engine_infer on its own thread. The engine pins the model, validates the request against
 * the model's config and resolves shared-memory windows there, so a bad request is answered at
 * once without queueing; then it queues the work. An execution thread (sandboxed) runs the
 * model and calls req->done exactly once with the outputs. If kiln_engine_infer returns an
 * error, done is never called.
 *
 * Model code runs only on execution threads: loads and unloads (plugin create/destroy) are
 * jobs on the same threads (kiln_engine_load/unload), never on the caller's thread.
 *
 * Copy accounting: every byte of tensor data the server copies is counted per stage (wire to
 * tensor, tensor to wire) and reported with each response, so tests can assert that the
 * shared-memory path copies nothing.
 *
 * Thread-safety: all functions are safe from any thread.
 */
#ifndef KILN_MODEL_WORKER_WORKER_H
#define KILN_MODEL_WORKER_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "registry/registry.h"
#include "tensor/shm.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_engine kiln_engine;

typedef struct kiln_engine_options {
    const char *repository;
    uint64_t host_budget_bytes;   /* 0 = unlimited */
    uint64_t device_budget_bytes; /* 0 = unlimited */
    uint64_t model_idle_ttl_ns;   /* 0 = off */
    int exec_threads;             /* sandboxed execution threads (>= 1) */
    int blas_threads;             /* threads per GEMM in CPU backends; 0 = leave as is (1) */
    size_t queue_limit;           /* requests waiting per model when its config sets no
                                   * max_queue_size; past it: RESOURCE_EXHAUSTED */
    uint64_t max_tensor_bytes;    /* one input or output; past it: RESOURCE_EXHAUSTED */
    uint64_t cpu_limit_ns;        /* per request; 0 = no watchdog */
    uint64_t slow_request_ns;     /* log requests slower than this end to end; 0 = off */
    bool sandbox;                 /* false only for debugging: model code runs unfiltered */
    bool allow_shm;               /* client system shared memory accepted */
    const char *shm_key_prefixes; /* comma-separated allow-list of key prefixes; NULL = any */
    uint64_t shm_quota_bytes;     /* total mapped client memory; 0 = unlimited */
    bool shm_disable_probe;       /* act as if the host had no POSIX shm (tests) */
} kiln_engine_options;

/* Fills the defaults (2 threads, queue 1024, 2 GiB tensors, sandbox on, shm allowed). */
void kiln_engine_options_default(kiln_engine_options *o);

/*
 * Creates the engine: registries, and exec_threads threads each entering the sandbox. Returns
 * KILN_UNAVAILABLE if the sandbox cannot be entered (say so with sandbox = false to run
 * without it), KILN_INVALID_ARGUMENT for a bad repository.
 */
kiln_status kiln_engine_create(const kiln_engine_options *opts, kiln_engine **out, kiln_err *err);

/* Refuses new jobs and waits until every queued and running job is done. */
void kiln_engine_drain(kiln_engine *e);

/* Stops the threads (queued jobs are run first) and frees everything. NULL is a no-op. */
void kiln_engine_destroy(kiln_engine *e);

kiln_registry *kiln_engine_registry(kiln_engine *e);

/*
 * The engine's figures in the Prometheus text format 0.0.4 (model_worker/metrics.c;
 * docs/operations.md lists them). OUT: *text (len bytes, NUL-terminated), freed with
 * kiln_free. RESOURCE_EXHAUSTED when out of memory. Thread-safety: any thread.
 */
kiln_status kiln_engine_metrics(kiln_engine *e, char **text, size_t *len, kiln_err *err);
kiln_shm_registry *kiln_engine_shm(kiln_engine *e);
const kiln_engine_options *kiln_engine_get_options(const kiln_engine *e);

/* ---------------------------------------------------------------- model control */

/* Completion of an asynchronous load or unload; called once on an execution thread. */
typedef void (*kiln_control_done)(void *ctx, kiln_status st, const kiln_err *err);

/*
 * Loads (or unloads) a model on an execution thread. With done == NULL the call waits and
 * returns the outcome; otherwise it returns at once and done reports it (if the call itself
 * returns an error, done is never called).
 */
kiln_status kiln_engine_load(kiln_engine *e, const char *model, kiln_control_done done, void *ctx,
                             kiln_err *err);
kiln_status kiln_engine_unload(kiln_engine *e, const char *model, kiln_control_done done, void *ctx,
                               kiln_err *err);

/* Registers a client's system shared-memory region, applying the allow-list and switch. */
kiln_status kiln_engine_shm_register(kiln_engine *e, const char *name, const char *key,
                                     uint64_t offset, uint64_t byte_size, kiln_err *err);

/*
 * Registers a client's CUDA buffer (serialized cudaIpcMemHandle_t) under `name`, in the same
 * namespace as system regions; refused with the same switch (--allow-shm).
 */
kiln_status kiln_engine_cuda_shm_register(kiln_engine *e, const char *name, const void *handle,
                                          size_t handle_len, int device, uint64_t byte_size,
                                          kiln_err *err);

/* ---------------------------------------------------------------- inference */

typedef struct kiln_infer_input {
    const char *name;     /* borrowed until done */
    const char *datatype; /* KServe name */
    const int64_t *shape;
    size_t rank;
    kiln_storage *data; /* inline data (a reference the engine takes over), or NULL */
    size_t data_size;
    const char *shm_region; /* parameters shared_memory_region / _offset / _byte_size */
    int64_t shm_offset;
    int64_t shm_byte_size;
    bool has_shm_byte_size;
} kiln_infer_input;

typedef struct kiln_infer_output_req {
    const char *name;
    const char *shm_region;
    int64_t shm_offset;
    int64_t shm_byte_size;
    bool has_shm_byte_size;
} kiln_infer_output_req;

/* One output of a response. The tensor's storage is owned by the response. */
typedef struct kiln_infer_output {
    const char *name;
    kiln_tensor tensor;
    bool in_shm; /* written into the client's region: send no data */
} kiln_infer_output;

typedef struct kiln_infer_response {
    const char *model_name;
    int64_t version;
    size_t n_outputs;
    kiln_infer_output *outputs;
    uint64_t copied_in_bytes;  /* tensor bytes copied into the server (wire -> tensor) */
    uint64_t copied_out_bytes; /* tensor bytes copied on the way out */
    kiln_model *pin;           /* keeps the model (and the names above) alive; internal */
} kiln_infer_response;

typedef struct kiln_infer_request kiln_infer_request;

/*
 * Called exactly once for each request kiln_engine_infer accepted, possibly before that call
 * returns: on the execution thread that ran the request's batch, on the scheduler's thread
 * (expired or cancelled while queued) or, while the engine stops, on a thread that was queuing
 * work. Never under an engine lock. On success res holds the outputs and belongs to the callee
 * until it calls kiln_infer_response_release(res) (it may keep the output tensors alive longer
 * by sharing them first). On failure res is NULL and err says why.
 */
typedef void (*kiln_infer_done)(void *ctx, kiln_infer_response *res, kiln_status st,
                                const kiln_err *err);

struct kiln_infer_request {
    const char *model;
    const char *version; /* "" = the server's choice */
    const char *request_id;
    size_t n_inputs;
    kiln_infer_input *inputs;
    size_t n_outputs; /* 0 = every output of the model */
    kiln_infer_output_req *outputs;
    uint64_t copied_in_bytes; /* the transport's copies so far */
    uint64_t deadline_ns;     /* the client's deadline (kiln_clock_now_ns time), 0 = none */
    uint64_t timeout_us;      /* the request's queue timeout ("timeout" parameter), 0 = none;
                                 used only where the model's queue policy allows overrides */
    kiln_infer_done done;
    void *done_ctx;
    atomic_bool cancelled;           /* set when this request is no longer wanted */
    const atomic_bool *cancelled_by; /* or a flag the transport sets (its call's), may be NULL */
};

/* True once the request was cancelled (directly or through cancelled_by). */
static inline bool kiln_infer_request_cancelled(const kiln_infer_request *r)
{
    return atomic_load(&r->cancelled) || (r->cancelled_by && atomic_load(r->cancelled_by));
}

/* Wakes the scheduler so it drops cancelled requests now (the transport calls it when a call
 * is cancelled). */
void kiln_engine_poke(kiln_engine *e);

/*
 * Parses a model version as the protocol carries it (a string): "" or NULL is 0 (the server's
 * choice); otherwise digits, >= 1. Returns KILN_INVALID_ARGUMENT naming `field` otherwise.
 */
kiln_status kiln_version_parse(const char *s, const char *field, int64_t *out, kiln_err *err);

/*
 * Validates and queues a request (see the header comment). On error, the inputs' data
 * references are released and done is never called. Errors: KILN_NOT_FOUND (model, region),
 * KILN_UNAVAILABLE (model not ready), KILN_INVALID_ARGUMENT naming the input or output,
 * KILN_RESOURCE_EXHAUSTED (queue full, tensor over the limit).
 */
kiln_status kiln_engine_infer(kiln_engine *e, kiln_infer_request *req, kiln_err *err);

void kiln_infer_response_release(kiln_infer_response *res);

#ifdef __cplusplus
}
#endif

#endif /* KILN_MODEL_WORKER_WORKER_H */
