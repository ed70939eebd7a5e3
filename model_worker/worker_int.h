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

struct kiln_engine {
    kiln_engine_options opt;
    kiln_registry *registry;
    kiln_shm_registry *shm;
    pthread_mutex_t mu; /* guards the queue and start-up fields */
    pthread_cond_t cond;
    kiln_job *head, *tail;
    size_t queued;
    size_t running; /* jobs being run by a thread */
    bool draining;
    bool stopping;
    pthread_t *threads;
    void *args;
    int n_threads, started;
    kiln_status start_status;
    kiln_err start_err;
};

/* Queues a job. KILN_RESOURCE_EXHAUSTED when the queue is full, KILN_UNAVAILABLE when
 * stopping; on error the job is not queued (and not freed). */
kiln_status kiln__engine_post(kiln_engine *e, kiln_job *job, kiln_err *err);

#endif /* KILN_MODEL_WORKER_WORKER_INT_H */
