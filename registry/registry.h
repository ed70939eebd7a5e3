/*
 * registry/registry.h: the model repository and the refcounted LRU registry of loaded models.
 *
 * Repository layout (Triton's): <repository>/<model>/config.pbtxt and
 * <repository>/<model>/<version>/<model file>, versions being positive integers. The config's
 * version_policy (latest(n), all, specific) says which versions are served. A model without
 * a config.pbtxt is served when a backend can derive its config from the model file of its
 * highest-numbered version directory (kiln_backend.autoconfig, e.g. an ONNX graph): that
 * version alone (the default policy), with the config derived at each load.
 *
 * A loaded model version is a kiln_model. Callers pin it with kiln_registry_acquire or
 * kiln_registry_get_or_load and unpin it with kiln_model_release; a pinned model is never
 * evicted or unloaded under its users. The registry loads on demand: get_or_load loads a
 * model once however many threads ask for it at the same time (the others wait for that load
 * and share its result or its error).
 *
 * Memory budgets: the host and device bytes each loaded model holds (as its backend reports
 * after load) count against the registry's budgets. A load that would pass a budget first
 * evicts least-recently-used unpinned models (recency = the order of their last pin or load); if
 * that cannot make room, the load fails with KILN_RESOURCE_EXHAUSTED and a message saying what
 * holds the memory. Before a load, the size of the version directory's files is reserved, so
 * concurrent loads cannot oversubscribe.
 *
 * Memory is counted again after each execution (kiln_model_execute): a new input shape grows a
 * model's plans and arenas, and growth past a budget evicts unpinned models. An execution that
 * runs out of device memory evicts the unpinned models on that GPU and runs once more.
 *
 * Lost GPUs: a CUDA kernel fault (an illegal address...) leaves the GPU's context unusable for
 * the rest of the process. The registry then marks that GPU lost: the models with an instance
 * there stop serving (UNAVAILABLE, the reason naming the CUDA error), loads onto it fail, and
 * kiln_registry_lost_gpus tells the server, whose health turns NOT_SERVING so that an
 * orchestrator restarts it; nothing short of a new process can use the GPU again.
 *
 * States: LOADING, READY, UNLOADING, UNAVAILABLE (with the reason: load error, unloaded,
 * evicted, idle, GPU lost). Statistics per version: load time, inference and execution counts,
 * successes and failures, queue and compute time, last use.
 *
 * Thread-safety: all functions are safe from any thread. The acquire/release hot path holds
 * the registry mutex only to find the model and bump its pin count (no allocation, no I/O);
 * loads and unloads run outside the mutex.
 */
#ifndef KILN_REGISTRY_REGISTRY_H
#define KILN_REGISTRY_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"
#include "common/clock.h"
#include "common/status.h"
#include "proto/model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_MODEL_NAME_MAX 128

typedef struct kiln_registry kiln_registry;
typedef struct kiln_model kiln_model;

/* Instances of one loaded version (the config's instance_group counts; default 1), each with
 * the device it runs on. */
#define KILN_MAX_INSTANCES 16
typedef struct kiln_instances {
    uint32_t n;
    kiln_backend_model *bm[KILN_MAX_INSTANCES];
    kiln_device dev[KILN_MAX_INSTANCES];
} kiln_instances;

typedef enum kiln_model_state {
    KILN_MODEL_UNAVAILABLE = 0, /* not loaded; the reason says why */
    KILN_MODEL_LOADING,
    KILN_MODEL_READY,
    KILN_MODEL_UNLOADING,
} kiln_model_state;

/* "UNAVAILABLE", "LOADING", "READY", "UNLOADING" (Triton's RepositoryIndex words). */
const char *kiln_model_state_name(kiln_model_state s);

typedef struct kiln_registry_options {
    const char *repository;       /* directory; copied */
    uint64_t host_budget_bytes;   /* 0 = unlimited */
    uint64_t device_budget_bytes; /* 0 = unlimited */
    uint64_t idle_ttl_ns; /* unload models unused this long (kiln_registry_sweep); 0 = off */
    kiln_device device;   /* where models load (default CPU) */
    /* backend lookup; NULL = kiln_backend_find. Tests pass fakes. */
    const kiln_backend *(*find_backend)(const char *name);
    kiln_clock_fn clock; /* NULL = CLOCK_MONOTONIC_COARSE (LRU and TTL need only ms) */
    void *clock_ctx;
} kiln_registry_options;

/* Duration histograms: bucket i counts durations <= kiln_hist_bounds_ns[i] (and above the
 * bound before it); the last bucket counts the rest (+Inf). Not cumulative. */
#define KILN_HIST_BUCKETS 17
extern const uint64_t kiln_hist_bounds_ns[KILN_HIST_BUCKETS - 1];

typedef struct kiln_hist {
    uint64_t count, sum_ns;
    uint64_t buckets[KILN_HIST_BUCKETS];
} kiln_hist;

/* Statistics of one model version (cumulative since it was loaded, times in ns). */
typedef struct kiln_model_stats {
    uint64_t load_ns;         /* how long the load took */
    uint64_t loaded_at_ns;    /* registry clock */
    uint64_t last_used_ns;    /* registry clock: last acquire or release */
    uint64_t inference_count; /* requests (rows) inferred */
    uint64_t execution_count; /* batches executed */
    uint64_t success_count;
    uint64_t failure_count;
    uint64_t queue_ns;
    uint64_t compute_ns;
    /* per request (kiln_model_record_request) */
    uint64_t request_success, request_failure;
    uint64_t copied_in_bytes, copied_out_bytes; /* bytes copied for its inputs and outputs */
    kiln_hist request_hist;                     /* end to end: accepted by the engine to answered */
    kiln_hist queue_hist;   /* accepted to its batch's start (or to the answer if never run) */
    kiln_hist compute_hist; /* per execution: gathering the inputs and the model */
    /* per execution, the compute phases (kiln_model_record_phases) */
    kiln_hist input_hist;  /* gathering the requests' inputs into the batch */
    kiln_hist infer_hist;  /* the backend's execute (in the sandbox) */
    kiln_hist output_hist; /* splitting the outputs and answering the requests */
} kiln_model_stats;

/* One row of kiln_registry_index. */
typedef struct kiln_model_status {
    char name[KILN_MODEL_NAME_MAX + 1];
    int64_t version; /* 0 when the model has no loaded or attempted version */
    kiln_model_state state;
    char reason[KILN_ERR_MSG_MAX];
    uint32_t pins;
    uint64_t host_bytes, device_bytes;
    kiln_model_stats stats;
} kiln_model_status;

/* Registry-wide figures. */
typedef struct kiln_registry_stats {
    uint64_t host_bytes, device_bytes; /* READY models, admitted loads, explicit unloads
                                        * until freed (eviction victims stop counting at once) */
    uint64_t evictions;
    uint64_t loads, load_failures, unloads;
} kiln_registry_stats;

/*
 * Creates a registry over opts->repository (which must be a readable directory: else
 * KILN_INVALID_ARGUMENT). Nothing is loaded yet. OUT: *out (NULL on failure).
 */
kiln_status kiln_registry_create(const kiln_registry_options *opts, kiln_registry **out,
                                 kiln_err *err);

/*
 * Unloads every model and frees the registry. REQUIRES: no model is pinned (asserted) and no
 * other thread is using the registry. NULL is a no-op.
 */
void kiln_registry_destroy(kiln_registry *reg);

/*
 * A version being unloaded or evicted is waited for, then loaded again; a load that cannot fit
 * evicts nothing.
 * Returns a pinned handle to model `name` version `version` (0 = the highest version the
 * policy serves: the highest READY one if any, else the highest allowed, loaded now), loading
 * it if needed. Concurrent callers for the same version share one load.
 * Errors: KILN_INVALID_ARGUMENT (bad name), KILN_NOT_FOUND (no such model or version, or the
 * policy does not serve it), the load's own error
 * (bad config, backend failure), KILN_RESOURCE_EXHAUSTED (budget). *out is NULL on failure.
 */
kiln_status kiln_registry_get_or_load(kiln_registry *reg, const char *name, int64_t version,
                                      kiln_model **out, kiln_err *err);

/*
 * Pins an already loaded model version (0 = highest READY). Never loads. KILN_NOT_FOUND if no
 * such version is known, KILN_UNAVAILABLE naming the state and reason if it is not READY.
 */
kiln_status kiln_registry_acquire(kiln_registry *reg, const char *name, int64_t version,
                                  kiln_model **out, kiln_err *err);

/* Unpins. NULL is a no-op. The handle must not be used afterwards. */
void kiln_model_release(kiln_model *model);

/* Loads every version the policy serves (those already READY stay as they are). */
kiln_status kiln_registry_load(kiln_registry *reg, const char *name, kiln_err *err);

/*
 * Unloads every version of `name`: new acquires fail at once (UNAVAILABLE, "unloading"), the
 * call waits until in-flight users release their pins, then frees the models. KILN_NOT_FOUND if
 * no version of it is loaded or loading.
 */
kiln_status kiln_registry_unload(kiln_registry *reg, const char *name, kiln_err *err);

/* Unloads READY models no one has pinned for longer than the idle TTL. Returns how many. */
size_t kiln_registry_sweep(kiln_registry *reg);

/*
 * Lists every model of the repository (directories with a config.pbtxt, or with a model file a
 * backend derives a config from) and every version the
 * registry knows, sorted by name then version. OUT: *out (free with kiln_free), *n.
 */
kiln_status kiln_registry_index(kiln_registry *reg, kiln_model_status **out, size_t *n,
                                kiln_err *err);

/* Status of one version (0 = highest known). KILN_NOT_FOUND if the registry has no record. */
kiln_status kiln_registry_status(kiln_registry *reg, const char *name, int64_t version,
                                 kiln_model_status *out, kiln_err *err);

void kiln_registry_get_stats(kiln_registry *reg, kiln_registry_stats *out);

/* The GPUs lost to a sticky CUDA error since the registry was created: bit d for GPU d (GPUs
 * past 63 share bit 63); 0 when none. OUT: reason (may be NULL; cap bytes, truncated): the first
 * loss, naming the GPU, the model and the CUDA error. */
uint64_t kiln_registry_lost_gpus(kiln_registry *reg, char *reason, size_t cap);

/* Executions by batch size: counts[b] and ns[b] for b rows (the last slot gathers larger
 * batches). Arrays of KILN_BATCH_STATS entries. KILN_NOT_FOUND without a record. */
#define KILN_BATCH_STATS 257
kiln_status kiln_registry_batch_stats(kiln_registry *reg, const char *name, int64_t version,
                                      uint64_t *counts, uint64_t *ns, kiln_err *err);

/* ---------------------------------------------------------------- a pinned model */

const char *kiln_model_name(const kiln_model *m);
int64_t kiln_model_version(const kiln_model *m);
const kiln_model_config *kiln_model_get_config(const kiln_model *m);
const kiln_backend *kiln_model_backend(const kiln_model *m);
/* Instance 0 (NULL when not loaded). */
kiln_backend_model *kiln_model_backend_model(const kiln_model *m);

/* The loaded instances: each has its own backend state and executes one batch at a time.
 * Stable while the model is pinned. */
uint32_t kiln_model_instance_count(const kiln_model *m);
kiln_backend_model *kiln_model_instance(const kiln_model *m, uint32_t i);

/* How kiln_model_execute runs one attempt: calls b->execute(bm, batch, err), bracketed as the
 * caller needs (the server's sandbox record, say); returns its status. */
typedef kiln_status (*kiln_execute_fn)(void *ctx, const kiln_backend *b, kiln_backend_model *bm,
                                       kiln_batch *batch, kiln_err *err);

/*
 * Executes a batch on instance i of the pinned model m (its backend's execute, through run(ctx,
 * ...) when run is not NULL), and acts on what a failure says of the device (batch->fault,
 * backends/backend.h):
 *   - KILN_FAULT_DEVICE_MEMORY: the READY, unpinned models with memory on instance i's GPU are
 *     evicted, as when a load runs out of device memory (or, when another execution has just
 *     picked them, their evictions are waited for), and the batch runs once more; if nothing
 *     was freed, or the second run fails too, that failure is returned;
 *   - KILN_FAULT_DEVICE_LOST: the GPU is marked lost (see the top of this file) and the batch's
 *     error is returned;
 *   - an INTERNAL or UNKNOWN failure of a backend with foreign_code (plugins): every GPU is
 *     probed, and one left unusable is marked lost.
 * The evictions run between attempts, outside run's bracket. Afterwards (but after a lost GPU)
 * instance i's memory is counted again; growth past a budget evicts least recently used
 * unpinned models (never m, which is pinned), or is logged when nothing can go.
 * Returns the backend's status; on failure the batch's results are finalized (backend.h).
 * REQUIRES: the caller holds a pin on m; i < kiln_model_instance_count(m); one thread at a time
 * executes instance i (backends/backend.h). Thread-safety: any thread, under those rules.
 */
kiln_status kiln_model_execute(kiln_model *m, uint32_t i, kiln_batch *batch, kiln_execute_fn run,
                               void *ctx, kiln_err *err);

/* Adds one executed batch of `rows` rows to the statistics (and, on success, to the count of
 * executions of that batch size). Thread-safe (atomics). */
void kiln_model_record(kiln_model *m, uint64_t rows, bool success, uint64_t queue_ns,
                       uint64_t compute_ns);

/* Adds one execution's compute phases: input (gather), infer (execute), output (split and
 * answer). Thread-safe (atomics). */
void kiln_model_record_phases(kiln_model *m, uint64_t input_ns, uint64_t infer_ns,
                              uint64_t output_ns);

/* Adds one answered request: its outcome, time queued, time end to end, and bytes copied.
 * Thread-safe (atomics). */
void kiln_model_record_request(kiln_model *m, bool success, uint64_t queue_ns, uint64_t e2e_ns,
                               uint64_t copied_in, uint64_t copied_out);

#ifdef __cplusplus
}
#endif

#endif /* KILN_REGISTRY_REGISTRY_H */
