/*
 * model_worker/metrics.c: the engine's figures in the Prometheus text format (version 0.0.4),
 * for the /metrics endpoint (server/metrics_http.c). docs/operations.md lists every metric.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/text.h"
#include "model_worker/worker_int.h"

/* `name="value"` with the text format's escapes (backslash, quote, newline). */
static void label(kiln_text *t, const char *key, const char *value)
{
    kiln_text_printf(t, "%s=\"", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            kiln_text_printf(t, "\\%c", *p);
        else if (*p == '\n')
            kiln_text_printf(t, "\\n");
        else
            kiln_text_printf(t, "%c", *p);
    }
    kiln_text_printf(t, "\"");
}

static void head(kiln_text *t, const char *name, const char *type, const char *help)
{
    kiln_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A server-wide figure: its header and its one sample. */
static void scalar(kiln_text *t, const char *name, const char *type, const char *help, uint64_t v)
{
    head(t, name, type, help);
    kiln_text_printf(t, "%s %" PRIu64 "\n", name, v);
}

/* name{model="m",version="v"<extra>} */
static void series(kiln_text *t, const char *name, const kiln_model_status *m, const char *extra)
{
    kiln_text_printf(t, "%s{", name);
    label(t, "model", m->name);
    kiln_text_printf(t, ",version=\"%" PRId64 "\"%s}", m->version, extra ? extra : "");
}

static void hist(kiln_text *t, const char *name, const kiln_model_status *m, const kiln_hist *h)
{
    char bucket[160], extra[64];
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    uint64_t cum = 0;
    for (size_t b = 0; b < KILN_HIST_BUCKETS; b++) {
        cum += h->buckets[b];
        if (b < KILN_HIST_BUCKETS - 1)
            snprintf(extra, sizeof(extra), ",le=\"%g\"", (double)kiln_hist_bounds_ns[b] / 1e9);
        else
            snprintf(extra, sizeof(extra), ",le=\"+Inf\"");
        series(t, bucket, m, extra);
        kiln_text_printf(t, " %" PRIu64 "\n", cum);
    }
    snprintf(bucket, sizeof(bucket), "%s_sum", name);
    series(t, bucket, m, NULL);
    kiln_text_printf(t, " %.9f\n", (double)h->sum_ns / 1e9);
    snprintf(bucket, sizeof(bucket), "%s_count", name);
    series(t, bucket, m, NULL);
    kiln_text_printf(t, " %" PRIu64 "\n", h->count);
}

/* Requests waiting in the model version's queue (not yet in a batch). */
static uint64_t queue_depth(kiln_engine *e, const char *name, int64_t version)
{
    uint64_t n = 0;
    pthread_mutex_lock(&e->sched_mu);
    for (model_queue *q = e->queues; q; q = q->next)
        if (strcmp(kiln_model_name(q->model), name) == 0 && kiln_model_version(q->model) == version)
            n += q->len;
    pthread_mutex_unlock(&e->sched_mu);
    return n;
}

/* The batch-size histogram from the per-size execution counts (buckets 1, 2, 4 ... 256). */
static void batch_hist(kiln_text *t, kiln_engine *e, const kiln_model_status *m)
{
    uint64_t *counts = kiln_calloc(KILN_BATCH_STATS, sizeof(uint64_t));
    uint64_t *ns = kiln_calloc(KILN_BATCH_STATS, sizeof(uint64_t));
    if (counts && ns &&
        kiln_registry_batch_stats(e->registry, m->name, m->version, counts, ns, NULL) == KILN_OK) {
        uint64_t cum = 0, sum = 0, total = 0;
        for (size_t b = 0; b < KILN_BATCH_STATS; b++) {
            total += counts[b];
            sum += counts[b] * b;
        }
        char extra[32];
        size_t b = 0;
        for (uint64_t le = 1; le <= KILN_BATCH_STATS - 1; le *= 2) {
            for (; b <= le && b < KILN_BATCH_STATS - 1; b++) /* the last slot: larger ones */
                cum += counts[b];
            snprintf(extra, sizeof(extra), ",le=\"%" PRIu64 "\"", le);
            series(t, "kiln_model_batch_size_bucket", m, extra);
            kiln_text_printf(t, " %" PRIu64 "\n", cum);
        }
        series(t, "kiln_model_batch_size_bucket", m, ",le=\"+Inf\"");
        kiln_text_printf(t, " %" PRIu64 "\n", total);
        series(t, "kiln_model_batch_size_sum", m, NULL);
        kiln_text_printf(t, " %" PRIu64 "\n", sum);
        series(t, "kiln_model_batch_size_count", m, NULL);
        kiln_text_printf(t, " %" PRIu64 "\n", total);
    }
    kiln_free(counts);
    kiln_free(ns);
}

/* The per-version gauges and counters: name, type, help, and where the value is: a field of
 * kiln_model_stats (a count), or one of the specials below. */
enum { V_PENDING = -1, V_LOAD_S = -2, V_HOST = -3, V_DEVICE = -4 };

static const struct {
    const char *name, *type, *help;
    long at; /* offsetof(kiln_model_stats, field), or a V_* special */
} fields[] = {
    {"kiln_model_request_success_total", "counter", "Requests answered with OK.",
     offsetof(kiln_model_stats, request_success)},
    {"kiln_model_request_failure_total", "counter",
     "Requests the engine accepted and answered with an error (expired, cancelled, failed).",
     offsetof(kiln_model_stats, request_failure)},
    {"kiln_model_inference_total", "counter", "Rows inferred (a batch of 8 counts 8).",
     offsetof(kiln_model_stats, inference_count)},
    {"kiln_model_execution_total", "counter",
     "Batches executed (inference / execution = batching).",
     offsetof(kiln_model_stats, execution_count)},
    {"kiln_model_pending_requests", "gauge", "Requests waiting in the model's queue.", V_PENDING},
    {"kiln_model_load_duration_seconds", "gauge", "How long the version's load took.", V_LOAD_S},
    {"kiln_model_host_memory_bytes", "gauge", "Host memory the loaded version holds.", V_HOST},
    {"kiln_model_device_memory_bytes", "gauge", "Device memory the loaded version holds.",
     V_DEVICE},
};

static double field_value(kiln_engine *e, const kiln_model_status *m, long at)
{
    switch (at) {
    case V_PENDING:
        return (double)queue_depth(e, m->name, m->version);
    case V_LOAD_S:
        return (double)m->stats.load_ns / 1e9;
    case V_HOST:
        return (double)m->host_bytes;
    case V_DEVICE:
        return (double)m->device_bytes;
    default:
        return (double)*(const uint64_t *)((const char *)&m->stats + at);
    }
}

static void model_fields(kiln_text *t, kiln_engine *e, const kiln_model_status *all, size_t n)
{
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        head(t, fields[f].name, fields[f].type, fields[f].help);
        for (size_t i = 0; i < n; i++) {
            if (all[i].version <= 0)
                continue;
            series(t, fields[f].name, &all[i], NULL);
            kiln_text_printf(t, " %.17g\n", field_value(e, &all[i], fields[f].at));
        }
    }
}

/* The GPUs NVML sees; nothing at all without NVML or GPUs (absent, not zero). */
static void gpu_figures(kiln_text *t)
{
    kiln_gpu_sample g[16];
    size_t n = kiln__gpu_sample(g, 16);
    static const struct {
        const char *name, *help;
    } m[] = {
        {"kiln_gpu_utilization_ratio", "Time the GPU was busy over NVML's last sample period."},
        {"kiln_gpu_memory_used_bytes", "GPU memory in use (all processes)."},
        {"kiln_gpu_memory_total_bytes", "GPU memory in all."},
    };
    for (size_t k = 0; n && k < 3; k++) {
        head(t, m[k].name, "gauge", m[k].help);
        for (size_t i = 0; i < n; i++) {
            kiln_text_printf(t, "%s{gpu=\"%u\",", m[k].name, g[i].index);
            label(t, "name", g[i].name);
            if (k == 0)
                kiln_text_printf(t, "} %.2f\n", g[i].utilization);
            else
                kiln_text_printf(t, "} %" PRIu64 "\n",
                                 k == 1 ? g[i].memory_used : g[i].memory_total);
        }
    }
}

kiln_status kiln_engine_metrics(kiln_engine *e, char **out, size_t *len, kiln_err *err)
{
    *out = NULL;
    *len = 0;
    kiln_model_status *all = NULL;
    size_t n = 0;
    kiln_status st = kiln_registry_index(e->registry, &all, &n, err);
    if (st != KILN_OK)
        return st;
    kiln_text t = {0};
    model_fields(&t, e, all, n);
    head(&t, "kiln_model_state", "gauge",
         "1 for the version's state (UNAVAILABLE, LOADING, READY, UNLOADING).");
    for (size_t i = 0; i < n; i++) {
        if (all[i].version <= 0)
            continue;
        char extra[64];
        snprintf(extra, sizeof(extra), ",state=\"%s\"", kiln_model_state_name(all[i].state));
        series(&t, "kiln_model_state", &all[i], extra);
        kiln_text_printf(&t, " 1\n");
    }
    head(&t, "kiln_model_copied_bytes_total", "counter",
         "Bytes copied for requests' inputs (direction in) and outputs (out).");
    for (size_t i = 0; i < n; i++) {
        if (all[i].version <= 0)
            continue;
        series(&t, "kiln_model_copied_bytes_total", &all[i], ",direction=\"in\"");
        kiln_text_printf(&t, " %" PRIu64 "\n", all[i].stats.copied_in_bytes);
        series(&t, "kiln_model_copied_bytes_total", &all[i], ",direction=\"out\"");
        kiln_text_printf(&t, " %" PRIu64 "\n", all[i].stats.copied_out_bytes);
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"kiln_model_request_duration_seconds", "Accepted to answered, per request.",
         offsetof(kiln_model_stats, request_hist)},
        {"kiln_model_queue_duration_seconds", "Accepted to its batch's start, per request.",
         offsetof(kiln_model_stats, queue_hist)},
        {"kiln_model_compute_duration_seconds",
         "Per execution: gathering the inputs and the model.",
         offsetof(kiln_model_stats, compute_hist)},
        {"kiln_model_compute_input_duration_seconds",
         "Per execution: gathering the requests' inputs into the batch.",
         offsetof(kiln_model_stats, input_hist)},
        {"kiln_model_compute_infer_duration_seconds",
         "Per execution: the model (the backend's execute, in the sandbox).",
         offsetof(kiln_model_stats, infer_hist)},
        {"kiln_model_compute_output_duration_seconds",
         "Per execution: splitting the outputs and answering the requests.",
         offsetof(kiln_model_stats, output_hist)},
    };
    for (size_t h = 0; h < sizeof(hists) / sizeof(hists[0]); h++) {
        head(&t, hists[h].name, "histogram", hists[h].help);
        for (size_t i = 0; i < n; i++)
            if (all[i].version > 0)
                hist(&t, hists[h].name, &all[i],
                     (const kiln_hist *)((const char *)&all[i].stats + hists[h].off));
    }
    head(&t, "kiln_model_batch_size", "histogram", "Rows per successful execution.");
    for (size_t i = 0; i < n; i++)
        if (all[i].version > 0)
            batch_hist(&t, e, &all[i]);
    free(all);
    kiln_registry_stats rs;
    kiln_registry_get_stats(e->registry, &rs);
    scalar(&t, "kiln_registry_host_bytes", "gauge", "Host memory of loaded models.", rs.host_bytes);
    scalar(&t, "kiln_registry_device_bytes", "gauge", "Device memory of loaded models.",
           rs.device_bytes);
    scalar(&t, "kiln_registry_evictions_total", "counter", "Models evicted to fit a budget.",
           rs.evictions);
    scalar(&t, "kiln_registry_loads_total", "counter", "Model version loads that succeeded.",
           rs.loads);
    scalar(&t, "kiln_registry_load_failures_total", "counter", "Model version loads that failed.",
           rs.load_failures);
    scalar(&t, "kiln_registry_unloads_total", "counter", "Model versions unloaded.", rs.unloads);
    scalar(&t, "kiln_registry_lost_gpus", "gauge",
           "GPUs lost to a CUDA fault in this process (nothing runs there until a restart).",
           (uint64_t)__builtin_popcountll(kiln_registry_lost_gpus(e->registry, NULL, 0)));
    scalar(&t, "kiln_shm_regions", "gauge", "Shared-memory regions registered by clients.",
           kiln_shm_count(e->shm));
    scalar(&t, "kiln_shm_mapped_bytes", "gauge", "Bytes of client shared memory mapped.",
           kiln_shm_mapped_bytes(e->shm));
    gpu_figures(&t);
    if (t.oom || !t.p) {
        kiln_text_fini(&t);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory rendering metrics");
    }
    *out = t.p;
    *len = t.len;
    return KILN_OK;
}
