/* model_worker/engine.c: the engine's registries, its sandboxed execution threads, model control.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "model_worker/worker_int.h"
#include "sandbox/sandbox.h"

void kiln_engine_options_default(kiln_engine_options *o)
{
    memset(o, 0, sizeof(*o));
    o->exec_threads = 2;
    o->queue_limit = 1024;
    o->max_tensor_bytes = (uint64_t)2 << 30;
    o->sandbox = true;
    o->allow_shm = true;
}

/* ---------------------------------------------------------------- the job queue */

kiln_status kiln__engine_post(kiln_engine *e, kiln_job *job, bool control, kiln_err *err)
{
    pthread_mutex_lock(&e->mu);
    if (e->stopping || e->draining) {
        pthread_mutex_unlock(&e->mu);
        return kiln_err_set(err, KILN_UNAVAILABLE, "the server is shutting down");
    }
    job_queue *q = control ? &e->control : &e->exec;
    job->next = NULL;
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->queued++;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    return KILN_OK;
}

typedef struct thread_arg {
    kiln_engine *e;
    int index; /* -1: the control thread */
} thread_arg;

static void *exec_main(void *arg)
{
    thread_arg *ta = arg;
    kiln_engine *e = ta->e;
    job_queue *q = ta->index < 0 ? &e->control : &e->exec;
    kiln_err err;
    kiln_status st = KILN_OK;
    if (e->opt.sandbox)
        st = kiln_sandbox_enter(NULL, &err);
    pthread_mutex_lock(&e->mu);
    if (st != KILN_OK && e->start_status == KILN_OK) {
        e->start_status = st;
        e->start_err = err;
    }
    e->started++;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    if (st != KILN_OK)
        return NULL;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!q->head && !e->stopping)
            pthread_cond_wait(&e->cond, &e->mu);
        kiln_job *job = q->head;
        if (!job) { /* stopping and drained */
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        q->head = job->next;
        if (!q->head)
            q->tail = NULL;
        q->queued--;
        q->running++;
        pthread_mutex_unlock(&e->mu);
        job->run(job); /* the job frees itself */
        pthread_mutex_lock(&e->mu);
        q->running--;
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->mu);
    }
}

kiln_status kiln_engine_create(const kiln_engine_options *opts, kiln_engine **out, kiln_err *err)
{
    *out = NULL;
    kiln_engine *e = kiln_calloc(1, sizeof(*e));
    if (!e)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for the engine");
    e->opt = *opts;
    if (e->opt.exec_threads < 1)
        e->opt.exec_threads = 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cond, NULL);
    pthread_mutex_init(&e->sched_mu, NULL);
    kiln_cond_init_monotonic(&e->sched_cond);
    kiln_status st;
    if (opts->blas_threads > 0 &&
        (st = kiln_backend_set_cpu_threads(opts->blas_threads, err)) != KILN_OK)
        goto out_fail;
    kiln_registry_options ro = {.repository = opts->repository,
                                .host_budget_bytes = opts->host_budget_bytes,
                                .device_budget_bytes = opts->device_budget_bytes,
                                .idle_ttl_ns = opts->model_idle_ttl_ns};
    if ((st = kiln_registry_create(&ro, &e->registry, err)) != KILN_OK)
        goto out_fail;
    kiln_shm_options so = {.quota_bytes = opts->shm_quota_bytes,
                           .disable = opts->shm_disable_probe || !opts->allow_shm};
    if ((st = kiln_shm_registry_create(&so, &e->shm, err)) != KILN_OK)
        goto out_fail;
    /* CUDA opens its device files read-write when it creates a context, which the sandbox
     * forbids: the contexts are made here, before any thread enters it (loads, on the
     * sandboxed control thread, then find them) */
    int gpus = 0;
    kiln_err ce;
    if (kiln_cuda_prepare(&gpus, &ce) != KILN_OK && ce.code != KILN_UNAVAILABLE)
        KILN_LOGW(NULL, "CUDA: %s; KIND_GPU models will fail to load on that GPU", ce.msg);
    else if (gpus > 0)
        KILN_LOGI(NULL, "CUDA: %d GPU%s ready for models", gpus, gpus == 1 ? "" : "s");
    /* the execution threads, then one control thread (index -1) */
    int total = e->opt.exec_threads + 1;
    e->threads = kiln_calloc((size_t)total, sizeof(pthread_t));
    e->args = kiln_calloc((size_t)total, sizeof(thread_arg));
    if (!e->threads || !e->args) {
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for threads");
        goto out_fail;
    }
    for (int i = 0; i < total; i++) {
        ((thread_arg *)e->args)[i] = (thread_arg){e, i < e->opt.exec_threads ? i : -1};
        if (pthread_create(&e->threads[i], NULL, exec_main, &((thread_arg *)e->args)[i]) != 0) {
            st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "cannot start execution thread %d", i);
            goto out_fail;
        }
        e->n_threads++;
    }
    pthread_mutex_lock(&e->mu);
    while (e->started < e->n_threads)
        pthread_cond_wait(&e->cond, &e->mu);
    st = e->start_status;
    if (st != KILN_OK && err)
        *err = e->start_err;
    pthread_mutex_unlock(&e->mu);
    if (st != KILN_OK) {
        kiln_err_prefix(err, st,
                        "execution threads cannot enter the sandbox (run with "
                        "--sandbox=off only to debug)");
        goto out_fail;
    }
    if (!e->opt.sandbox)
        KILN_LOGW(NULL, "sandbox disabled: model code runs without the seccomp filter");
    if ((st = kiln__sched_start(e, err)) != KILN_OK)
        goto out_fail;
    *out = e;
    return KILN_OK;

out_fail:
    kiln_engine_destroy(e);
    return st;
}

void kiln_engine_drain(kiln_engine *e)
{
    /* no new requests; the queued ones still run */
    pthread_mutex_lock(&e->sched_mu);
    e->sched_draining = true;
    pthread_cond_broadcast(&e->sched_cond); /* partial batches stop waiting for more rows */
    while (e->pending)
        pthread_cond_wait(&e->sched_cond, &e->sched_mu);
    pthread_mutex_unlock(&e->sched_mu);
    pthread_mutex_lock(&e->mu);
    e->draining = true;
    while (e->exec.queued || e->exec.running || e->control.queued || e->control.running)
        pthread_cond_wait(&e->cond, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

void kiln_engine_destroy(kiln_engine *e)
{
    if (!e)
        return;
    kiln__sched_stop(e); /* answers or runs what is queued first */
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_threads; i++)
        pthread_join(e->threads[i], NULL);
    kiln_free(e->threads);
    kiln_free(e->args);
    /* models were loaded by execution threads; with them gone, unload here */
    kiln_registry_destroy(e->registry);
    kiln_shm_registry_destroy(e->shm);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->sched_cond);
    pthread_mutex_destroy(&e->sched_mu);
    kiln_free(e);
}

kiln_registry *kiln_engine_registry(kiln_engine *e)
{
    return e->registry;
}

kiln_shm_registry *kiln_engine_shm(kiln_engine *e)
{
    return e->shm;
}

const kiln_engine_options *kiln_engine_get_options(const kiln_engine *e)
{
    return &e->opt;
}

/* ---------------------------------------------------------------- model control */

typedef struct control_job {
    kiln_job job;
    kiln_engine *e;
    bool unload;
    char model[KILN_MODEL_NAME_MAX + 1];
    kiln_control_done done;
    void *ctx;
    /* synchronous callers wait on these */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool finished;
    kiln_status st;
    kiln_err err;
} control_job;

static void run_control(kiln_job *job)
{
    control_job *c = (control_job *)job;
    kiln_err err;
    kiln_err_clear(&err);
    kiln_status st = c->unload ? kiln_registry_unload(c->e->registry, c->model, &err)
                               : kiln_registry_load(c->e->registry, c->model, &err);
    if (c->done) {
        c->done(c->ctx, st, &err);
        kiln_free(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->st = st;
    c->err = err;
    c->finished = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static kiln_status control(kiln_engine *e, const char *model, bool unload, kiln_control_done done,
                           void *ctx, kiln_err *err)
{
    if (!model || strlen(model) > KILN_MODEL_NAME_MAX || !model[0])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "model name must be 1 to %d characters",
                            KILN_MODEL_NAME_MAX);
    control_job *c = kiln_calloc(1, sizeof(*c));
    if (!c)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    c->job.run = run_control;
    c->e = e;
    c->unload = unload;
    snprintf(c->model, sizeof(c->model), "%s", model);
    c->done = done;
    c->ctx = ctx;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    kiln_status st = kiln__engine_post(e, &c->job, true, err);
    if (st != KILN_OK || done) {
        if (st != KILN_OK)
            kiln_free(c);
        return st;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->finished)
        pthread_cond_wait(&c->cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    st = c->st;
    if (err)
        *err = c->err;
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    kiln_free(c);
    return st;
}

kiln_status kiln_engine_load(kiln_engine *e, const char *model, kiln_control_done done, void *ctx,
                             kiln_err *err)
{
    return control(e, model, false, done, ctx, err);
}

kiln_status kiln_engine_unload(kiln_engine *e, const char *model, kiln_control_done done, void *ctx,
                               kiln_err *err)
{
    return control(e, model, true, done, ctx, err);
}

kiln_status kiln_engine_cuda_shm_register(kiln_engine *e, const char *name, const void *handle,
                                          size_t handle_len, int device, uint64_t byte_size,
                                          kiln_err *err)
{
    if (!e->opt.allow_shm)
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "this server refuses client shared memory (--allow-shm=false); send "
                            "tensors inline");
    return kiln_shm_register_cuda(e->shm, name, handle, handle_len, device, byte_size, err);
}

kiln_status kiln_engine_shm_register(kiln_engine *e, const char *name, const char *key,
                                     uint64_t offset, uint64_t byte_size, kiln_err *err)
{
    if (!e->opt.allow_shm)
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "this server refuses client shared memory (--allow-shm=false); send "
                            "tensors inline");
    if (e->opt.shm_key_prefixes && e->opt.shm_key_prefixes[0] && key) {
        bool ok = false;
        const char *p = e->opt.shm_key_prefixes;
        while (*p && !ok) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t)(end - p) : strlen(p);
            ok = n > 0 && strncmp(key, p, n) == 0;
            p += n + (end ? 1 : 0);
        }
        if (!ok)
            return kiln_err_set(err, KILN_PERMISSION_DENIED,
                                "shared memory region '%.128s': key is outside the allowed "
                                "prefixes",
                                name ? name : "");
    }
    return kiln_shm_register(e->shm, name, key, offset, byte_size, err);
}
