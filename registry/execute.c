/*
 * registry/execute.c: executions of a pinned model: the backend's execute, what the registry
 * does when it fails for the device (evicting for device memory, marking a GPU lost), the
 * instance's memory counted again after a success, and the statistics.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "registry/registry_int.h"

void kiln__hist_add(kiln__atomic_hist *h, uint64_t ns)
{
    size_t b = 0;
    while (b < KILN_HIST_BUCKETS - 1 && ns > kiln_hist_bounds_ns[b])
        b++;
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void kiln__hist_read(const kiln__atomic_hist *h, kiln_hist *out)
{
    out->count = atomic_load(&h->count);
    out->sum_ns = atomic_load(&h->sum_ns);
    for (size_t b = 0; b < KILN_HIST_BUCKETS; b++)
        out->buckets[b] = atomic_load(&h->buckets[b]);
}

uint64_t kiln_registry_lost_gpus(kiln_registry *reg, char *reason, size_t cap)
{
    uint64_t lost = atomic_load(&reg->lost_gpus);
    if (reason && cap) {
        reason[0] = '\0';
        if (lost) {
            pthread_mutex_lock(&reg->mu);
            snprintf(reason, cap, "%s", reg->lost_reason[reg->first_lost]);
            pthread_mutex_unlock(&reg->mu);
        }
    }
    return lost;
}

void kiln__registry_lose_gpu(kiln_registry *reg, int gpu, const char *who, const char *msg)
{
    if (gpu < 0)
        return;
    uint64_t bit = kiln__gpu_bit((kiln_device){KILN_DEVICE_CUDA, gpu});
    int b = __builtin_ctzll(bit);
    pthread_mutex_lock(&reg->mu);
    bool first = !(atomic_load(&reg->lost_gpus) & bit);
    size_t n = 0;
    if (first) {
        /* the reason before the bit: load_all reads it without mu once it sees the bit */
        snprintf(reg->lost_reason[b], sizeof(reg->lost_reason[b]),
                 "GPU %d is unusable until the server restarts: %.150s failed there: %.250s", gpu,
                 who, msg);
        if (!atomic_load(&reg->lost_gpus))
            reg->first_lost = b;
        atomic_fetch_or(&reg->lost_gpus, bit);
        for (size_t k = 0; k < reg->n; k++)
            n += kiln__model_lost_locked(reg, reg->models[k]) == reg->lost_reason[b];
    }
    pthread_mutex_unlock(&reg->mu);
    if (first)
        KILN_LOGE(NULL,
                  "GPU %d lost: %s failed there (%s), and a CUDA error of that kind leaves the "
                  "GPU's context unusable for the rest of the process: %zu model version%s with "
                  "instances there stop serving, and the server reports NOT_SERVING until it "
                  "restarts",
                  gpu, who, msg, n, n == 1 ? "" : "s");
}

void kiln__registry_probe_gpus(kiln_registry *reg, const char *who)
{
    int gpus = 0;
    kiln_err e;
    if (kiln_cuda_device_count(&gpus, &e) != KILN_OK)
        return;
    for (int d = 0; d < gpus; d++) {
        bool lost = false;
        if (kiln_cuda_probe(d, &lost, &e) != KILN_OK && lost)
            kiln__registry_lose_gpu(reg, d, who, e.msg);
    }
}

/* Whether a model (but m) holding memory on GPU gpu is being evicted or unloaded: marked
 * UNLOADING with no pin left, so its unload is under way and waits for nobody. REQUIRES: mu. */
static bool evicting_locked(const kiln_registry *reg, const kiln_model *m, int gpu)
{
    for (size_t k = 0; k < reg->n; k++) {
        const kiln_model *v = reg->models[k];
        if (v != m && kiln__model_state(v) == KILN_MODEL_UNLOADING && !atomic_load(&v->pins) &&
            kiln__model_holds_device_locked(v, gpu))
            return true;
    }
    return false;
}

/* The GPU of m's instance i, or -1 when it runs on the CPU. */
static int gpu_of(const kiln_model *m, uint32_t i)
{
    return m->inst.dev[i].kind == KILN_DEVICE_CUDA ? m->inst.dev[i].id : -1;
}

/* One attempt of the batch: through the caller's bracket when there is one. */
static kiln_status attempt(kiln_model *m, uint32_t i, kiln_batch *batch, kiln_execute_fn run,
                           void *ctx, kiln_err *err)
{
    kiln_backend_model *bm = m->inst.bm[i];
    return run ? run(ctx, m->backend, bm, batch, err) : m->backend->execute(bm, batch, err);
}

/* After m's instance i ran out of device memory: evicts the unpinned models holding memory on
 * its GPU, or, when another execution has just picked them, waits (a few seconds at most) for
 * those evictions to finish. Returns whether memory was freed meanwhile (worth one more try). */
static bool make_room_for(kiln_model *m, uint32_t i, const char *why)
{
    kiln_registry *reg = m->reg;
    kiln_model *victims[KILN__MAX_VICTIMS];
    int gpu = gpu_of(m, i);
    pthread_mutex_lock(&reg->mu);
    size_t n = kiln__registry_evict_device_locked(reg, m, gpu, victims);
    uint64_t gone = reg->evictions + reg->unloads;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (!n && evicting_locked(reg, m, gpu))
        if (pthread_cond_timedwait(&reg->cond, &reg->mu, &until) != 0)
            break;
    bool freed = reg->evictions + reg->unloads != gone; /* while this waited */
    pthread_mutex_unlock(&reg->mu);
    if (n) {
        KILN_LOGW(&(kiln_log_ctx){.model = m->name},
                  "version %" PRId64 " ran out of device memory executing a batch (%s); evicting "
                  "%zu unpinned model%s holding memory on GPU %d and running it once more",
                  m->version, why, n, n == 1 ? "" : "s", gpu);
        kiln__registry_finish_evictions(reg, victims, n, m);
    }
    return n || freed;
}

/* Counts instance i's memory again after an execution; growth past a budget evicts. */
static void recount(kiln_model *m, uint32_t i)
{
    kiln_registry *reg = m->reg;
    uint64_t h = 0, d = 0;
    m->backend->memory(m->inst.bm[i], &h, &d);
    /* only this instance's executing thread writes these after the load: no lock to compare */
    if (h == m->inst_host[i] && d == m->inst_device[i])
        return;
    kiln_model *victims[KILN__MAX_VICTIMS];
    size_t n = 0;
    kiln_err e;
    pthread_mutex_lock(&reg->mu);
    if (!m->counted) {
        pthread_mutex_unlock(&reg->mu);
        return;
    }
    /* unsigned arithmetic: a shrink wraps and unwraps to the right totals */
    reg->host_used += h - m->inst_host[i];
    reg->device_used += d - m->inst_device[i];
    m->host_bytes += h - m->inst_host[i];
    m->device_bytes += d - m->inst_device[i];
    m->inst_host[i] = h;
    m->inst_device[i] = d;
    kiln_status st = kiln__registry_make_room_locked(reg, m, 0, 0, victims, &n, &e);
    uint64_t host_used = reg->host_used, device_used = reg->device_used;
    pthread_mutex_unlock(&reg->mu);
    kiln__registry_finish_evictions(reg, victims, n, m);
    if (st != KILN_OK)
        KILN_LOGW(&(kiln_log_ctx){.model = m->name},
                  "version %" PRId64 " grew to %" PRIu64 " host and %" PRIu64
                  " device bytes (a new input shape): the registry holds %" PRIu64
                  " host bytes (budget %" PRIu64 ") and %" PRIu64 " device bytes (budget %" PRIu64
                  "), and nothing unpinned can be evicted to fit",
                  m->version, h, d, host_used, reg->opt.host_budget_bytes, device_used,
                  reg->opt.device_budget_bytes);
}

kiln_status kiln_model_execute(kiln_model *m, uint32_t i, kiln_batch *batch, kiln_execute_fn run,
                               void *ctx, kiln_err *err)
{
    batch->fault = KILN_FAULT_NONE;
    kiln_status st = attempt(m, i, batch, run, ctx, err);
    if (st != KILN_OK && batch->fault == KILN_FAULT_DEVICE_MEMORY &&
        make_room_for(m, i, err ? err->msg : kiln_status_name(st))) {
        batch->fault = KILN_FAULT_NONE;
        st = attempt(m, i, batch, run, ctx, err);
    }
    char who[KILN_MODEL_NAME_MAX + 64];
    if (st != KILN_OK)
        snprintf(who, sizeof(who), "model '%s' version %" PRId64, m->name, m->version);
    if (st != KILN_OK && batch->fault == KILN_FAULT_DEVICE_LOST) {
        kiln__registry_lose_gpu(m->reg, gpu_of(m, i), who, err ? err->msg : kiln_status_name(st));
        return st;
    }
    if ((st == KILN_INTERNAL || st == KILN_UNKNOWN) && m->backend->foreign_code)
        kiln__registry_probe_gpus(m->reg, who); /* not after a refused input, say */
    recount(m, i); /* a failed run may have grown (or dropped) memory too */
    return st;
}

void kiln_model_record_phases(kiln_model *m, uint64_t input_ns, uint64_t infer_ns,
                              uint64_t output_ns)
{
    kiln__hist_add(&m->input_hist, input_ns);
    kiln__hist_add(&m->infer_hist, infer_ns);
    kiln__hist_add(&m->output_hist, output_ns);
}

void kiln_model_record_request(kiln_model *m, bool success, uint64_t queue_ns, uint64_t e2e_ns,
                               uint64_t copied_in, uint64_t copied_out)
{
    atomic_fetch_add_explicit(success ? &m->request_success : &m->request_failure, 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->copied_in, copied_in, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->copied_out, copied_out, memory_order_relaxed);
    kiln__hist_add(&m->queue_hist, queue_ns);
    kiln__hist_add(&m->request_hist, e2e_ns);
}

void kiln_model_record(kiln_model *m, uint64_t rows, bool success, uint64_t queue_ns,
                       uint64_t compute_ns)
{
    atomic_fetch_add_explicit(&m->execution_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->inference_count, rows, memory_order_relaxed);
    atomic_fetch_add_explicit(success ? &m->success_count : &m->failure_count, rows,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->queue_ns, queue_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->compute_ns, compute_ns, memory_order_relaxed);
    kiln__hist_add(&m->compute_hist, compute_ns);
    if (success) {
        size_t b = rows < KILN_BATCH_STATS ? (size_t)rows : KILN_BATCH_STATS - 1;
        atomic_fetch_add_explicit(&m->batch_count[b], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->batch_ns[b], compute_ns, memory_order_relaxed);
    }
}
