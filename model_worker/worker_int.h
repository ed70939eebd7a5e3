/*
 * model_worker/worker_int.h: the engine's internals, shared by its files.
 */
#ifndef KILN_MODEL_WORKER_WORKER_INT_H
#define KILN_MODEL_WORKER_WORKER_INT_H

#include <pthread.h>
#include <stdbool.h>

#include "model_worker/worker.h"

/* A unit of work for an execution thread. run() owns the job and frees it. */
typedef struct kiln_job kiln_job;
struct kiln_job {
    void (*run)(kiln_job *job);
    kiln_job *next;
};

/* A validated request waiting in its model's queue (or running in a batch). */
typedef struct kiln_pending kiln_pending;
struct kiln_pending {
    kiln_pending *next;
    kiln_engine *e;
    kiln_infer_request *req;
    kiln_model *model; /* pinned until the request is answered */
    const kiln_model_config *cfg;
    size_t n_inputs;
    kiln_tensor *inputs; /* config order; absent optional inputs have storage NULL */
    uint32_t rows;       /* rows in the batch dim (1 when the model has none) */
    uint32_t n_slots;
    kiln_output_slot *slots; /* requested outputs; buffer = the client's region window */
    uint64_t enqueued_ns;
    uint64_t started_ns;        /* when its batch started; 0 while queued */
    uint64_t deadline_ns;       /* the client's (bounds queueing and execution); 0 = none */
    uint64_t queue_deadline_ns; /* the model's queue policy timeout (queueing only); 0 = none */
    uint64_t copied_out;
    /* an answer decided under sched_mu and given after it is dropped (no allocation needed) */
    kiln_status answer_st;
    kiln_err answer_err;
};

/* The waiting requests of one model version, and which of its instances are busy. */
typedef struct model_queue model_queue;
struct model_queue {
    model_queue *next;
    kiln_model *model;
    kiln_pending *head, *tail;
    size_t len;
    uint32_t busy; /* bit i: instance i runs a batch */
};

/* A job queue and the threads that serve it. */
typedef struct job_queue {
    kiln_job *head, *tail;
    size_t queued;
    size_t running; /* jobs being run by a thread */
} job_queue;

struct kiln_engine {
    kiln_engine_options opt;
    kiln_registry *registry;
    kiln_shm_registry *shm;
    pthread_mutex_t mu; /* guards both job queues and the start-up fields */
    pthread_cond_t cond;
    job_queue exec;    /* batches, served by the execution threads */
    job_queue control; /* loads and unloads, served by the control thread, so that an unload
                        * waiting for pins never holds up the batches that release them */
    bool draining;
    bool sched_draining; /* guarded by sched_mu */
    bool stopping;
    pthread_t *threads;
    void *args;
    int n_threads, started;
    kiln_status start_status;
    kiln_err start_err;
    /* scheduling: one queue per model version, one scheduler thread */
    pthread_mutex_t sched_mu;
    pthread_cond_t sched_cond;
    model_queue *queues;           /* guarded by sched_mu */
    size_t pending;                /* requests in all queues and batches; guarded by sched_mu */
    uint64_t sched_sleeping_until; /* the scheduler thread's wake time while it waits, else 0;
                                      guarded by sched_mu */
    bool sched_stop;
    pthread_t scheduler;
    bool scheduler_started;
};

/* Queues a validated request on its model. KILN_RESOURCE_EXHAUSTED when that model's queue is
 * full (nothing is taken then). */
kiln_status kiln__sched_enqueue(kiln_engine *e, kiln_pending *p, kiln_err *err);

/* Starts/stops the scheduler thread (stop answers what is still queued with UNAVAILABLE). */
kiln_status kiln__sched_start(kiln_engine *e, kiln_err *err);
void kiln__sched_stop(kiln_engine *e);

/* Answers a request: with the outputs in slots (moved out) when st is OK, else with err.
 * Releases the pending request. */
void kiln__pending_finish(kiln_pending *p, kiln_status st, const kiln_err *err);

/* Frees a pending request that was never queued or answered (its callback is not called). */
void kiln__pending_free(kiln_pending *p);

/* Queues a batch job (control = false) or a model-control job. KILN_UNAVAILABLE when stopping;
 * on error the job is not queued (and not freed). */
kiln_status kiln__engine_post(kiln_engine *e, kiln_job *job, bool control, kiln_err *err);

/* One GPU's figures from NVML (model_worker/nvml.c). */
typedef struct kiln_gpu_sample {
    unsigned int index;
    char name[96];
    double utilization; /* 0..1, over NVML's last sample period */
    uint64_t memory_total, memory_used;
} kiln_gpu_sample;

/* Fills up to cap samples, one per GPU NVML can read; 0 when the host has no NVML (loaded with
 * dlopen on first use) or no GPU. Thread-safety: any thread. */
size_t kiln__gpu_sample(kiln_gpu_sample *out, size_t cap);

#endif /* KILN_MODEL_WORKER_WORKER_INT_H */
