/*
 * registry/registry_int.h: shared inside the registry module only: the registry's and the
 * models' records (registry.c: loads, unloads, eviction, status; execute.c: executions, device
 * faults, memory counted again, statistics), and the repository helpers (repo.c, warmup.c).
 */
#ifndef KILN_REGISTRY_REGISTRY_INT_H
#define KILN_REGISTRY_REGISTRY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "registry/registry.h"

/* A duration histogram updated without locks (kiln_hist's buckets). */
typedef struct kiln__atomic_hist {
    atomic_uint_fast64_t count, sum_ns, buckets[KILN_HIST_BUCKETS];
} kiln__atomic_hist;

void kiln__hist_add(kiln__atomic_hist *h, uint64_t ns);
void kiln__hist_read(const kiln__atomic_hist *h, kiln_hist *out);

struct kiln_model {
    kiln_registry *reg;
    char name[KILN_MODEL_NAME_MAX + 1];
    int64_t version;
    atomic_int state; /* kiln_model_state; written under mu */
    atomic_uint_fast32_t pins;
    uint64_t load_gen;   /* bumped when a load starts; guarded by mu */
    uint64_t failed_gen; /* the load_gen whose load failed (waiters share that error) */
    kiln_status error;   /* last load's failure; guarded by mu */
    char reason[KILN_ERR_MSG_MAX];
    kiln_model_config *config;
    const kiln_backend *backend;
    kiln_instances inst;               /* the loaded instances (inst.n == 0 when not loaded) */
    uint64_t host_bytes, device_bytes; /* the sums of the instances'; guarded by mu */
    uint64_t inst_host[KILN_MAX_INSTANCES], inst_device[KILN_MAX_INSTANCES];
    bool counted;     /* its bytes are in the registry's totals */
    uint64_t lru_seq; /* order of last pin or load, for LRU (unique, unlike coarse times) */
    uint64_t load_ns, loaded_at_ns;
    atomic_uint_fast64_t last_used_ns, inference_count, execution_count, success_count,
        failure_count, queue_ns, compute_ns;
    /* executions by batch size (index = rows; larger batches in the last slot) */
    atomic_uint_fast64_t batch_count[KILN_BATCH_STATS], batch_ns[KILN_BATCH_STATS];
    atomic_uint_fast64_t request_success, request_failure, copied_in, copied_out;
    kiln__atomic_hist request_hist, queue_hist, compute_hist, input_hist, infer_hist, output_hist;
};

struct kiln_registry {
    char *repo;
    kiln_registry_options opt;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    kiln_model **models; /* guarded by mu */
    size_t n, cap;
    uint64_t host_used, device_used, host_reserved; /* guarded by mu */
    uint64_t seq;                                   /* LRU sequence; guarded by mu */
    uint64_t evictions, loads, load_failures, unloads;
    /* GPUs lost to a sticky CUDA error (bit d: GPU d, 63 and above share bit 63), each bit's
     * reason, and the bit lost first; guarded by mu (lost_gpus is also read without it) */
    atomic_uint_fast64_t lost_gpus;
    char lost_reason[64][KILN_ERR_MSG_MAX];
    int first_lost;
};

/* Models one load or execution may evict (one needing more gives up). */
#define KILN__MAX_VICTIMS 64

kiln_model_state kiln__model_state(const kiln_model *m);

/* The lost-GPU bit of device d (0 for the CPU). */
uint64_t kiln__gpu_bit(kiln_device d);

/* The reason when device d is a lost GPU, else NULL. Safe without mu: a lost GPU's reason is
 * written before its bit is set, and never again. */
const char *kiln__lost_reason(const kiln_registry *reg, kiln_device d);

/* The reason when m has an instance on a lost GPU, else NULL. REQUIRES: mu. */
const char *kiln__model_lost_locked(const kiln_registry *reg, const kiln_model *m);

/* Whether an instance of m holds device memory on GPU gpu (-1: on any device). REQUIRES: mu. */
bool kiln__model_holds_device_locked(const kiln_model *m, int gpu);

/* Marks GPU `gpu` lost (a sticky CUDA error `msg`, seen by `who`: "model 'm' version 1"); the
 * first report of that GPU is kept and logged. A negative gpu is ignored. Takes mu. */
void kiln__registry_lose_gpu(kiln_registry *reg, int gpu, const char *who, const char *msg);

/* Probes every visible GPU (kiln_cuda_probe) and marks the lost ones, after `who` failed in a
 * way that may have faulted one. Takes mu. */
void kiln__registry_probe_gpus(kiln_registry *reg, const char *who);

/*
 * Picks least-recently-used unpinned READY models (never for_m) to evict until `host` and
 * `device` more bytes fit the budgets, marking them UNLOADING and taking their bytes off the
 * totals; evicts nothing unless evicting everything evictable would be enough. OUT:
 * victims[0..*n_victims) (at most KILN__MAX_VICTIMS), to pass to kiln__registry_finish_evictions
 * after mu is dropped, whatever the status. KILN_RESOURCE_EXHAUSTED, naming who holds the
 * memory, when they cannot fit. REQUIRES: mu.
 */
kiln_status kiln__registry_make_room_locked(kiln_registry *reg, kiln_model *for_m, uint64_t host,
                                            uint64_t device, kiln_model **victims,
                                            size_t *n_victims, kiln_err *err);

/*
 * After for_m ran out of device memory: marks every READY, unpinned model (but for_m) that holds
 * device memory on GPU `gpu` (-1: on any GPU) for eviction, as make_room does. OUT: victims.
 * Returns how many (at most KILN__MAX_VICTIMS). REQUIRES: mu.
 */
size_t kiln__registry_evict_device_locked(kiln_registry *reg, const kiln_model *for_m, int gpu,
                                          kiln_model **victims);

/* Unloads the victims (outside mu: it takes mu itself) and records them as evicted for for_m. */
void kiln__registry_finish_evictions(kiln_registry *reg, kiln_model **victims, size_t n,
                                     const kiln_model *for_m);

/*
 * Runs the config's model_warmup samples on each of the n_inst instances of backend b, each
 * `count` times, with inputs of zeros, fixed-seed random values or the bytes of
 * <model_dir>/warmup/<file>, every output requested and dropped. Errors name the model, the
 * sample and the input: INVALID_ARGUMENT (a file missing or of the wrong size, a run that
 * failed), RESOURCE_EXHAUSTED. Call on the loading thread, before the version serves.
 */
kiln_status kiln__registry_warmup(const kiln_backend *b, kiln_backend_model *const *inst,
                                  uint32_t n_inst, const char *model, const char *model_dir,
                                  const kiln_model_config *c, kiln_err *err);

/* KILN_INVALID_ARGUMENT unless name is 1..KILN_MODEL_NAME_MAX printable characters, with no
 * '/' and not "." or "..". */
kiln_status kiln__repo_check_name(const char *name, kiln_err *err);

/*
 * Reads <repo>/<name>/config.pbtxt. The config's name must be empty (it is set to `name`) or
 * equal `name`. OUT: *out (kiln_model_config_free it; NULL on failure).
 * A model with no config.pbtxt whose highest-numbered version directory holds a file a backend
 * derives a config from (kiln_backend_autoconfig_find) gets KILN_OK with *out NULL: its config
 * is derived when a version loads (kiln__repo_autoconfig), so looking a model up never reads
 * a model file. KILN_NOT_FOUND if the model directory does not exist, or holds neither, the
 * message saying what was looked for.
 */
kiln_status kiln__repo_read_config(const char *repo, const char *name, kiln_model_config **out,
                                   kiln_err *err);

/*
 * Derives the config of model `name`, which has no config.pbtxt, from the model file of its
 * version directory `version`, through the backend that claims that file. OUT: *out (NULL on
 * failure). KILN_NOT_FOUND naming what was looked for if no backend's file is there; else the
 * backend's autoconfig errors.
 */
kiln_status kiln__repo_autoconfig(const char *repo, const char *name, int64_t version,
                                  kiln_model_config **out, kiln_err *err);

/*
 * The versions the policy serves, ascending. OUT: *out (kiln_free it), *n (may be 0).
 * Version directories are names made only of digits, value >= 1. cfg NULL (a config not
 * derived yet) means the default policy: the latest version.
 */
kiln_status kiln__repo_served_versions(const char *repo, const char *name,
                                       const kiln_model_config *cfg, int64_t **out, size_t *n,
                                       kiln_err *err);

/* Bytes of the regular files under dir (recursive, depth <= 4): a load's up-front reservation. */
uint64_t kiln__repo_dir_bytes(const char *dir);

/* Model names of the repository (directories holding a config.pbtxt, or a model file in the
 * highest-numbered version directory that a backend derives a config from), sorted. OUT: *names
 * (an array of kiln_strdup'd strings; free with kiln__repo_free_names), *n. */
kiln_status kiln__repo_list(const char *repo, char ***names, size_t *n, kiln_err *err);
void kiln__repo_free_names(char **names, size_t n);

#endif /* KILN_REGISTRY_REGISTRY_INT_H */
