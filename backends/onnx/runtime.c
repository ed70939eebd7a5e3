/*
 * backends/onnx/runtime.c: the ONNX backend: load (file, kernels, agreement with the config,
 * the rewrites of optimize.c) and execute (steps in order, with a memory plan per set of input
 * shapes: plan.c; runtime_int.h says how the pieces fit).
 *
 * Load reads <version>/model.onnx (or the config's default_model_filename) with the loader of
 * proto/onnx_model.h, finds a kernel for every node (else a load error naming the op, the node
 * and the opset), and checks the config against the graph: every config input and output is a
 * graph input or output of the same dtype and rank (the config's rank plus the batch dim), and
 * its dims agree with the dims the graph fixes. A model without a config.pbtxt gets one
 * derived from its graph (autoconfig.c, the table's autoconfig hook).
 *
 * Execute looks up the plan for the batch's input shapes. Without one it runs unplanned (each
 * value allocated by its kernel and freed after its last reader), traces the run, and builds
 * the plan for next time; with one, values go in the model's arena and shape-only steps are
 * skipped. Requested outputs are copied into their slots.
 *
 * On a GPU (load args' device CUDA, from instance_group KIND_GPU): the instance opens a
 * context (gpu.h: stream, cuBLAS, cuDNN), values live in a device arena, and each step runs
 * its CUDA kernel when one of its inputs is on the device (Shape and the host-side shape
 * subgraphs stay on the host). A step without a CUDA kernel, or whose kernel declines the
 * case, runs its CPU kernel on host copies. The second run of an input shape captures its
 * steps as a CUDA graph (config parameter cuda_graphs), replayed after. Inputs come in through
 * the pinned staging buffer, or are used in place when already on the device (CUDA shared
 * memory); outputs go out the same ways. docs/gpu.md has the whole story.
 *
 * OpenBLAS: the number of OpenBLAS threads is process-wide; kiln_onnx_set_blas_threads sets it
 * (the server's --blas-threads, default 1: the execution threads are the parallelism, and no
 * thread is started from a sandboxed thread).
 */
#include <cblas.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onnx/onnx.h"
#include "backends/onnx/runtime_int.h"
#include "common/alloc.h"
#include "common/log.h"

/* OpenBLAS's thread count is process-wide: the first of kiln_onnx_set_blas_threads or a
 * model load fixes it (a load, to 1). */
static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static int blas_threads; /* 0 until fixed */

static kiln_status blas_fix(int n, kiln_err *err)
{
    pthread_mutex_lock(&blas_mu);
    kiln_status st = KILN_OK;
    if (!blas_threads) {
        openblas_set_num_threads(n);
        blas_threads = n;
    } else if (n != blas_threads) {
        st = kiln_err_set(err, KILN_FAILED_PRECONDITION,
                          "BLAS threads are already %d (set them before loading models)",
                          blas_threads);
    }
    pthread_mutex_unlock(&blas_mu);
    return st;
}

kiln_status kiln_onnx_set_blas_threads(int n, kiln_err *err)
{
    if (n < 1 || n > KILN_ONNX_MAX_BLAS_THREADS)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "BLAS threads must be 1 to %d (got %d)",
                            KILN_ONNX_MAX_BLAS_THREADS, n);
    return blas_fix(n, err);
}

/* At load: fixes the count at 1 unless it is fixed already. */
static void blas_default(void)
{
    pthread_mutex_lock(&blas_mu);
    if (!blas_threads) {
        openblas_set_num_threads(1);
        blas_threads = 1;
    }
    pthread_mutex_unlock(&blas_mu);
}

kiln_status kiln__onnx_new_value(kiln_backend_model *m, int32_t *v, kiln_err *err)
{
    size_t n = m->n_values + 1;
    kiln_tensor *c = kiln_realloc(m->consts, (n + 1) * sizeof(*c));
    if (!c)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    m->consts = c;
    bool *o = kiln_realloc(m->is_output, (n + 1) * sizeof(*o));
    if (!o)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    m->is_output = o;
    memset(&m->consts[n - 1], 0, sizeof(m->consts[n - 1]));
    m->is_output[n - 1] = false;
    m->n_values = n;
    *v = (int32_t)(n - 1);
    return KILN_OK;
}

static void unload(kiln_backend_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_plans; i++)
        kiln__onnx_plan_fini(&m->plans[i], m->n_values);
    kiln_storage_unref(m->arena);
    for (size_t v = 0; m->consts && v < m->n_values; v++)
        kiln_tensor_fini(&m->consts[v]);
    for (size_t i = 0; m->steps && i < m->n_steps; i++) {
        kiln_free(m->steps[i].in);
        kiln_free(m->steps[i].out);
    }
    for (size_t v = 0; m->dconsts && v < m->n_values; v++)
        kiln_tensor_fini(&m->dconsts[v]);
    for (size_t k = 0; m->gin && k < m->cfg->n_inputs; k++)
        kiln_storage_unref(m->gin[k]);
    for (size_t k = 0; m->gin16 && k < m->cfg->n_inputs; k++)
        kiln_storage_unref(m->gin16[k]);
    kiln_storage_unref(m->gconv);
    kiln_free(m->dconsts);
    kiln_free(m->gin);
    kiln_free(m->gin16);
    for (size_t k = 0; m->scr_tmp && k < m->max_io; k++)
        kiln_tensor_fini(&m->scr_tmp[k]);
    kiln_free(m->scr_tmp);
    kiln__onnx_gpu_close(m->gpu);
    kiln_onnx_model_free(m->g);
    kiln_free(m->steps);
    kiln_free(m->consts);
    kiln_free(m->is_output);
    kiln_free(m->in_value);
    kiln_free(m->out_value);
    kiln_free(m->last_use);
    kiln_free(m->scr_in);
    kiln_free(m->scr_out);
    kiln_free(m->scr_off);
    kiln_free(m->scr_bytes);
    kiln_free(m);
}

/* The graph value named `name` among indexes list[0..n), or -1. */
static int32_t find_in(const kiln_onnx_model *g, const int32_t *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(g->values[list[i]].name, name) == 0)
            return list[i];
    return -1;
}

/*
 * Checks config tensor io (input or output `what`) against graph value v: dtype, rank, and
 * each dim the graph fixes. A config dim of -1 matches anything, and so does a graph dim that
 * is symbolic (-1) or 0 (exporters write 0 for "unknown"; auto-complete reads it so too). The
 * batch dim is the config's to choose, so graph axis 0 is not compared when the model batches.
 */
static kiln_status agree(const char *model, const char *what, const kiln_model_io *io,
                         const kiln_onnx_value *v, int32_t max_batch, kiln_err *err)
{
    if (v->dtype != KILN_DTYPE_INVALID && v->dtype != io->dtype)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "model '%s': config %s '%s' is %s, the ONNX graph says %s", model, what,
                            io->name, kiln_dtype_name(io->dtype), kiln_dtype_name(v->dtype));
    int off = max_batch > 0 ? 1 : 0;
    int rank = io->dims.rank + off;
    if (v->has_shape && v->rank != rank)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "model '%s': config %s '%s' has rank %d%s, the ONNX graph says %d",
                            model, what, io->name, rank, off ? " (with the batch dim)" : "",
                            v->rank);
    for (int d = 0; v->has_shape && d < io->dims.rank; d++) {
        int64_t want = io->dims.dims[d], got = v->dims[d + off];
        if (want >= 0 && got > 0 && want != got)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "model '%s': config %s '%s' has dims[%d] = %" PRId64
                                ", the ONNX graph's axis %d is %" PRId64 "%s",
                                model, what, io->name, d, want, d + off, got,
                                off ? " (axis 0 is the batch dim)" : "");
    }
    return KILN_OK;
}

/* Makes a step per node (kernels found, value lists copied with room for a Conv's bias). */
static kiln_status make_steps(kiln_backend_model *m, kiln_err *err)
{
    const kiln_onnx_model *g = m->g;
    m->steps = kiln_calloc(g->n_nodes + 1, sizeof(*m->steps));
    if (!m->steps)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    m->n_steps = g->n_nodes;
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kiln_onnx_node *n = &g->nodes[i];
        kiln_onnx_step *s = &m->steps[i];
        s->node = n;
        s->kernel = n->domain[0] ? NULL : kiln__onnx_kernel_find(n->op, KILN_DEVICE_CPU);
        if (s->kernel && (!n->n_outputs || n->outputs[0] < 0))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "model '%s': node '%s' (%s) has no first output", m->name, n->name,
                                n->op);
        if (!s->kernel) {
            char ops[1024];
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "model '%s': node '%s' uses op '%s%s%s' (opset %" PRId64
                                "), which Kiln's CPU backend does not support (it runs: %s)",
                                m->name, n->name, n->domain, n->domain[0] ? "." : "", n->op,
                                g->opset, kiln__onnx_kernel_ops(KILN_DEVICE_CPU, ops, sizeof(ops)));
        }
        s->n_in = n->n_inputs;
        s->n_out = n->n_outputs;
        s->in = kiln_malloc((n->n_inputs > 3 ? n->n_inputs : 3) * sizeof(int32_t));
        s->out = kiln_malloc((n->n_outputs + 1) * sizeof(int32_t));
        if (!s->in || !s->out)
            return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
        memcpy(s->in, n->inputs, n->n_inputs * sizeof(int32_t));
        memcpy(s->out, n->outputs, n->n_outputs * sizeof(int32_t));
        m->max_io = n->n_inputs > m->max_io ? n->n_inputs : m->max_io;
        m->max_io = n->n_outputs > m->max_io ? n->n_outputs : m->max_io;
    }
    m->max_io = m->max_io < 3 ? 3 : m->max_io; /* a Conv gains a bias when BN folds into it */
    m->scr_in = kiln_calloc(m->max_io, sizeof(*m->scr_in));
    m->scr_out = kiln_calloc(m->max_io, sizeof(*m->scr_out));
    m->scr_off = kiln_calloc(m->max_io, sizeof(*m->scr_off));
    m->scr_bytes = kiln_calloc(m->max_io, sizeof(*m->scr_bytes));
    m->scr_tmp = kiln_calloc(m->max_io, sizeof(*m->scr_tmp));
    if (!m->scr_in || !m->scr_out || !m->scr_off || !m->scr_bytes || !m->scr_tmp)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    return KILN_OK;
}

/* Checks the config against the graph; fills in_value and out_value. */
static kiln_status match_config(kiln_backend_model *m, const char *file, kiln_err *err)
{
    const kiln_onnx_model *g = m->g;
    const kiln_model_config *cfg = m->cfg;
    kiln_status st = KILN_OK;
    for (size_t k = 0; st == KILN_OK && k < cfg->n_inputs; k++) {
        int32_t v = find_in(g, g->inputs, g->n_inputs, cfg->inputs[k].name);
        if (v < 0)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': config input '%s' is not an input of %s", m->name,
                              cfg->inputs[k].name, file);
        else
            st = agree(m->name, "input", &cfg->inputs[k], &g->values[v], cfg->max_batch_size, err);
        m->in_value[k] = v;
    }
    for (size_t k = 0; st == KILN_OK && k < cfg->n_outputs; k++) {
        int32_t v = find_in(g, g->outputs, g->n_outputs, cfg->outputs[k].name);
        if (v < 0)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': config output '%s' is not an output of %s", m->name,
                              cfg->outputs[k].name, file);
        else
            st =
                agree(m->name, "output", &cfg->outputs[k], &g->values[v], cfg->max_batch_size, err);
        m->out_value[k] = v;
    }
    for (size_t k = 0; st == KILN_OK && k < g->n_inputs; k++)
        if (find_in(g, m->in_value, cfg->n_inputs, g->values[g->inputs[k]].name) < 0)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': the ONNX graph's input '%s' is not in the config",
                              m->name, g->values[g->inputs[k]].name);
    return st;
}

/* Drops the steps rewrites removed and the constants no step reads any more (a Conv's weights
 * after BatchNormalization folded into new ones); computes last_use and const_bytes. */
static kiln_status finish_steps(kiln_backend_model *m, kiln_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_steps; i++) {
        if (m->steps[i].dead) {
            kiln_free(m->steps[i].in);
            kiln_free(m->steps[i].out);
            continue;
        }
        m->steps[n++] = m->steps[i];
    }
    m->n_steps = n;
    kiln_free(m->last_use);
    m->last_use = kiln_malloc((m->n_values + 1) * sizeof(int32_t));
    if (!m->last_use)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t v = 0; v < m->n_values; v++)
        m->last_use[v] = -1;
    for (size_t i = 0; i < m->n_steps; i++) {
        const kiln_onnx_step *s = &m->steps[i];
        for (size_t k = 0; k < s->n_in; k++)
            if (s->in[k] >= 0)
                m->last_use[s->in[k]] = (int32_t)i;
    }
    kiln_onnx_model *g = m->g;
    for (size_t i = 0; i < g->n_initializers; i++) {
        int32_t v = g->init_values[i];
        if (m->last_use[v] < 0 && !m->is_output[v]) {
            kiln_tensor_fini(&g->initializers[i]);
            kiln_tensor_fini(&m->consts[v]);
        }
    }
    m->const_bytes = 0;
    for (size_t v = 0; v < m->n_values; v++) {
        if (!m->consts[v].storage || (m->last_use[v] < 0 && !m->is_output[v])) {
            kiln_tensor_fini(&m->consts[v]);
            continue;
        }
        bool seen = false; /* a folded view of another constant shares its bytes */
        for (size_t u = 0; u < v && !seen; u++)
            seen = m->consts[u].storage == m->consts[v].storage;
        m->const_bytes += seen ? 0 : kiln_storage_size(m->consts[v].storage);
    }
    return KILN_OK;
}

static kiln_status execute(kiln_backend_model *m, kiln_batch *batch, kiln_err *err);

/* Runs one batch of `rows` (0: no batch dim) of zeros, every output requested. */
static kiln_status warm_run(kiln_backend_model *m, uint32_t rows, kiln_err *err)
{
    const kiln_model_config *cfg = m->cfg;
    kiln_tensor *in = kiln_calloc(cfg->n_inputs + 1, sizeof(*in));
    kiln_output_slot *out = kiln_calloc(cfg->n_outputs + 1, sizeof(*out));
    kiln_status st =
        in && out ? KILN_OK : kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t k = 0; st == KILN_OK && k < cfg->n_inputs; k++) {
        kiln_shape s = {.rank = 0};
        if (cfg->max_batch_size > 0)
            s.dims[s.rank++] = rows;
        for (int d = 0; d < cfg->inputs[k].dims.rank; d++)
            s.dims[s.rank++] = cfg->inputs[k].dims.dims[d];
        st = kiln_tensor_alloc(cfg->inputs[k].dtype, &s, 0, &in[k], err);
        if (st == KILN_OK && in[k].byte_size)
            memset(in[k].data, 0, in[k].byte_size);
    }
    for (size_t k = 0; out && k < cfg->n_outputs; k++)
        out[k].index = (uint32_t)k;
    kiln_batch b = {.batch_size = rows,
                    .n_inputs = (uint32_t)cfg->n_inputs,
                    .inputs = in,
                    .n_outputs = (uint32_t)cfg->n_outputs,
                    .outputs = out};
    if (st == KILN_OK && (st = execute(m, &b, err)) == KILN_OK)
        kiln_batch_release_outputs(&b);
    for (size_t k = 0; in && k < cfg->n_inputs; k++)
        kiln_tensor_fini(&in[k]);
    kiln_free(in);
    kiln_free(out);
    return st;
}

/*
 * The load check: runs the model on zeros at batch 1 and at max_batch_size (or once, without a
 * batch dim). A graph whose shapes do not work, or whose outputs disagree with the config,
 * fails here, at load, instead of on the first request; and the plans for those two shapes
 * are built before any request comes. Skipped when an input has a dynamic non-batch dim or
 * is BYTES (no zeros to make).
 */
static kiln_status warm_up(kiln_backend_model *m, kiln_err *err)
{
    const kiln_model_config *cfg = m->cfg;
    for (size_t k = 0; k < cfg->n_inputs; k++) {
        if (cfg->inputs[k].dtype == KILN_DTYPE_BYTES)
            return KILN_OK;
        for (int d = 0; d < cfg->inputs[k].dims.rank; d++)
            if (cfg->inputs[k].dims.dims[d] < 0)
                return KILN_OK;
    }
    /* batch 1 and max_batch_size; on a GPU also the preferred batch sizes, each run twice: the
     * first builds the plan (and finds the convolution algorithms), the second captures the
     * CUDA graph, so that no request pays for either */
    uint32_t sizes[2 + KILN_ONNX_MAX_PLANS];
    size_t n = 0;
    sizes[n++] = cfg->max_batch_size > 0 ? 1 : 0;
    for (size_t i = 0; m->gpu && i < cfg->n_preferred_batch_sizes && n < KILN_ONNX_MAX_PLANS; i++)
        sizes[n++] = (uint32_t)cfg->preferred_batch_sizes[i];
    if (cfg->max_batch_size > 1)
        sizes[n++] = (uint32_t)cfg->max_batch_size;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || sizes[j] == sizes[i];
        for (int rep = 0; !seen && rep < (m->gpu ? 2 : 1); rep++) {
            kiln_err e;
            if (warm_run(m, sizes[i], &e) != KILN_OK)
                return kiln_err_set(
                    err, e.code == KILN_RESOURCE_EXHAUSTED ? e.code : KILN_INVALID_ARGUMENT,
                    "model '%s': the load check (a batch of %u, all zeros) failed: %s", m->name,
                    sizes[i], e.msg);
        }
    }
    return KILN_OK;
}

static kiln_status gpu_open(kiln_backend_model *m, int device, kiln_err *err)
{
    const char *prec = kiln_model_config_param(m->cfg, "precision");
    const char *graphs = kiln_model_config_param(m->cfg, "cuda_graphs");
    if (prec && strcmp(prec, "fp32") != 0 && strcmp(prec, "tf32") != 0 && strcmp(prec, "fp16") != 0)
        return kiln_err_set(
            err, KILN_INVALID_ARGUMENT,
            "model '%s': parameter precision is '%s'; it must be fp32, tf32 or fp16", m->name,
            prec);
    if (graphs && strcmp(graphs, "true") != 0 && strcmp(graphs, "false") != 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "model '%s': parameter cuda_graphs is '%s'; it must be true or false",
                            m->name, graphs);
    m->precision = !prec                       ? KILN_ONNX_FP32
                   : strcmp(prec, "tf32") == 0 ? KILN_ONNX_TF32
                   : strcmp(prec, "fp16") == 0 ? KILN_ONNX_FP16
                                               : KILN_ONNX_FP32;
    m->graphs = !graphs || strcmp(graphs, "true") == 0;
    kiln_err e;
    kiln_status st = kiln__onnx_gpu_open(device, m->precision, &m->gpu, &e);
    if (st != KILN_OK)
        return kiln_err_set(err, st, "model '%s': GPU %d: %s", m->name, device, e.msg);
    return KILN_OK;
}

/* After the rewrites: each step's CUDA kernel, and room for the device copies. */
static kiln_status gpu_prepare(kiln_backend_model *m, kiln_err *err)
{
    for (size_t i = 0; i < m->n_steps; i++)
        m->steps[i].cuda = kiln__onnx_kernel_find(m->steps[i].node->op, KILN_DEVICE_CUDA);
    m->dconsts = kiln_calloc(m->n_values + 1, sizeof(*m->dconsts));
    m->gin = kiln_calloc(m->cfg->n_inputs + 1, sizeof(*m->gin));
    m->gin16 = kiln_calloc(m->cfg->n_inputs + 1, sizeof(*m->gin16));
    if (!m->dconsts || !m->gin || !m->gin16)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    return KILN_OK;
}

/* The load's GPU line: the device, and the ops that ran on the CPU in the warm-up runs. */
static void gpu_log(const kiln_backend_model *m)
{
    char ops[512] = "";
    size_t len = 0, n = 0;
    for (size_t i = 0; i < m->n_steps; i++) {
        const kiln_onnx_step *s = &m->steps[i];
        if (!s->fell_back)
            continue;
        n++;
        if (len < sizeof(ops) && !strstr(ops, s->node->op))
            len += (size_t)snprintf(ops + len, sizeof(ops) - len, "%s%s", len ? ", " : "",
                                    s->node->op);
    }
    kiln_log_ctx ctx = {.model = m->name};
    KILN_LOGI(&ctx,
              "on GPU %d, %s precision, CUDA graphs %s; %zu steps ran on the CPU on copies in "
              "the warm-up%s%s%s",
              kiln__onnx_gpu_device(m->gpu),
              m->precision == KILN_ONNX_TF32   ? "TF32"
              : m->precision == KILN_ONNX_FP16 ? "FP16"
                                               : "FP32",
              m->graphs ? "on" : "off", n, n ? " (" : "", ops, n ? ")" : "");
}

static kiln_status load(const kiln_load_args *args, kiln_backend_model **out, kiln_err *err)
{
    *out = NULL;
    const kiln_model_config *cfg = args->config;
    char path[4096];
    const char *file = cfg->default_model_filename[0] ? cfg->default_model_filename : "model.onnx";
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", args->version_dir, file) >= sizeof(path))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "model '%s': path too long",
                            args->model_name);
    kiln_backend_model *m = kiln_calloc(1, sizeof(*m));
    if (!m)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    m->cfg = cfg;
    m->max_plans =
        args->device.kind == KILN_DEVICE_CUDA ? KILN_ONNX_MAX_GPU_PLANS : KILN_ONNX_MAX_PLANS;
    snprintf(m->name, sizeof(m->name), "%s", args->model_name);
    blas_default();
    kiln_status st =
        args->device.kind == KILN_DEVICE_CUDA ? gpu_open(m, args->device.id, err) : KILN_OK;
    if (st != KILN_OK) {
        unload(m);
        return st;
    }
    st = kiln_onnx_model_load(path, &m->g, err);
    if (st != KILN_OK) {
        unload(m);
        return st;
    }
    const kiln_onnx_model *g = m->g;
    m->n_values = g->n_values;
    m->consts = kiln_calloc(g->n_values + 1, sizeof(*m->consts));
    m->is_output = kiln_calloc(g->n_values + 1, sizeof(bool));
    m->in_value = kiln_calloc(cfg->n_inputs + 1, sizeof(int32_t));
    m->out_value = kiln_calloc(cfg->n_outputs + 1, sizeof(int32_t));
    if (!m->consts || !m->is_output || !m->in_value || !m->out_value) {
        unload(m);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < g->n_initializers; i++)
        kiln_tensor_share(&g->initializers[i], &m->consts[g->init_values[i]]);
    for (size_t i = 0; i < g->n_outputs; i++)
        m->is_output[g->outputs[i]] = true;
    st = make_steps(m, err);
    if (st == KILN_OK)
        st = match_config(m, file, err);
    if (st == KILN_OK)
        st = kiln__onnx_optimize(m, err);
    if (st == KILN_OK)
        st = finish_steps(m, err);
    if (st == KILN_OK && m->gpu)
        st = gpu_prepare(m, err);
    if (st == KILN_OK)
        st = warm_up(m, err);
    if (st != KILN_OK) {
        unload(m);
        return st;
    }
    kiln_log_ctx ctx = {.model = m->name};
    KILN_LOGI(&ctx,
              "loaded %s: %zu nodes run as %zu steps (%zu folded at load, %zu "
              "BatchNormalization folded into Conv, %zu activations fused), %" PRIu64
              " bytes of constants",
              file, g->n_nodes, m->n_steps, m->n_folded, m->n_bn_folded, m->n_act_fused,
              m->const_bytes);
    if (m->gpu)
        gpu_log(m);
    *out = m;
    return KILN_OK;
}

static bool on_device(const kiln_tensor *t)
{
    return t->storage && t->device.kind == KILN_DEVICE_CUDA;
}

/* Whether a float value of type dt is FP16 on the device: the model runs in FP16 precision. */
static bool fp16_on_device(const kiln_backend_model *m, kiln_dtype dt)
{
    return m->gpu && m->precision == KILN_ONNX_FP16 && dt == KILN_DTYPE_FP32;
}

/* Copies n bytes between host memory and a device buffer of FP32, converting that buffer into
 * or out of FP16 device memory at dev (n/2 bytes): host to device (down) or back. A temporary
 * FP32 buffer on the device; waits for the stream. */
static kiln_status copy_converting(kiln_backend_model *m, void *host, void *dev, size_t n,
                                   bool down, kiln_err *err)
{
    kiln_storage *tmp = NULL;
    kiln_status st = kiln_storage_create_cuda(kiln__onnx_gpu_device(m->gpu), n ? n : 1, &tmp, err);
    void *t = tmp ? kiln_storage_data(tmp) : NULL;
    size_t elems = n / sizeof(float);
    if (st == KILN_OK && down) {
        st = kiln__onnx_gpu_copy(m->gpu, t, host, n, err);
        if (st == KILN_OK)
            st = kiln__onnx_gpu_convert(m->gpu, dev, true, t, elems, err);
    } else if (st == KILN_OK) {
        st = kiln__onnx_gpu_convert(m->gpu, t, false, dev, elems, err);
        if (st == KILN_OK)
            st = kiln__onnx_gpu_copy(m->gpu, host, t, n, err);
    }
    if (st == KILN_OK)
        st = kiln__onnx_gpu_sync(m->gpu, NULL, err);
    kiln_storage_unref(tmp);
    return st;
}

/* A host copy of device tensor d (waits for the stream); FP32 where d is an FP16 value of a
 * model in FP16 precision (the CPU kernels take FP32). */
static kiln_status to_host(kiln_backend_model *m, const kiln_tensor *d, kiln_tensor *h,
                           kiln_err *err)
{
    bool conv = m->precision == KILN_ONNX_FP16 && d->dtype == KILN_DTYPE_FP16;
    size_t size = conv ? d->byte_size * 2 : d->byte_size;
    kiln_status st = kiln_tensor_alloc(conv ? KILN_DTYPE_FP32 : d->dtype, &d->shape, size, h, err);
    if (st == KILN_OK && conv) {
        st = copy_converting(m, h->data, d->data, size, false, err);
    } else if (st == KILN_OK) {
        st = kiln__onnx_gpu_copy(m->gpu, h->data, d->data, d->byte_size, err);
        if (st == KILN_OK)
            st = kiln__onnx_gpu_sync(m->gpu, NULL, err);
    }
    if (st != KILN_OK)
        kiln_tensor_fini(h);
    m->host_copied = true;
    return st;
}

/* A device copy of host tensor h: at arena offset off when it is planned for those bytes.
 * A copy made for this run only marks the run as copying through the host (not capturable);
 * a constant's, made once, does not. */
static kiln_status to_device(kiln_backend_model *m, const kiln_tensor *h, kiln_storage *arena,
                             uint64_t off, uint64_t bytes, bool once, kiln_tensor *d, kiln_err *err)
{
    kiln_status st;
    bool conv = fp16_on_device(m, h->dtype); /* an FP32 value becomes FP16 there */
    kiln_dtype dt = conv ? KILN_DTYPE_FP16 : h->dtype;
    size_t size = conv ? h->byte_size / 2 : h->byte_size;
    if (arena && off != KILN_ONNX_UNPLANNED && bytes == size) {
        st = kiln_tensor_view(arena, (size_t)off, dt, &h->shape, size, d, err);
    } else {
        kiln_storage *s = NULL;
        st = kiln_storage_create_cuda(kiln__onnx_gpu_device(m->gpu), size, &s, err);
        if (st == KILN_OK)
            st = kiln_tensor_view(s, 0, dt, &h->shape, size, d, err);
        kiln_storage_unref(s);
    }
    if (st == KILN_OK && conv)
        st = copy_converting(m, h->data, d->data, h->byte_size, true, err);
    else if (st == KILN_OK)
        st = kiln__onnx_gpu_copy(m->gpu, d->data, h->data, h->byte_size, err);
    if (st == KILN_OK && once) /* the host bytes may go before the copy is done */
        st = kiln__onnx_gpu_sync(m->gpu, NULL, err);
    if (st != KILN_OK)
        kiln_tensor_fini(d);
    m->host_copied = m->host_copied || !once;
    return st;
}

/* Whether step s runs on the GPU: a model on a GPU runs there every step that reads a device
 * value, except Shape, which reads only the shape. */
static bool step_on_gpu(const kiln_backend_model *m, const kiln_onnx_step *s,
                        const kiln_tensor *vals)
{
    if (!m->gpu || strcmp(s->node->op, "Shape") == 0)
        return false;
    for (size_t k = 0; k < s->n_in; k++)
        if (s->in[k] >= 0 && on_device(&vals[s->in[k]]))
            return true;
    return false;
}

/* Calls kernel k for step s on inputs ins; moves its outputs into vals. */
static kiln_status call_kernel(kiln_backend_model *m, const kiln_onnx_step *s,
                               const kiln_onnx_kernel *k, const kiln_tensor **ins,
                               kiln_tensor *vals, const kiln_onnx_plan *p, bool gpu, kiln_err *err)
{
    kiln_tensor *outs = m->scr_out;
    uint64_t *off = m->scr_off, *bytes = m->scr_bytes;
    memset(outs, 0, s->n_out * sizeof(*outs));
    for (size_t j = 0; j < s->n_out; j++) {
        off[j] = p && s->out[j] >= 0 ? p->off[s->out[j]] : KILN_ONNX_UNPLANNED;
        bytes[j] = p && s->out[j] >= 0 ? p->bytes[s->out[j]] : 0;
    }
    /* a CPU kernel on a GPU model writes host memory: not the (device) arena */
    bool arena = p && (gpu || !m->gpu);
    kiln_onnx_call call = {.node = s->node,
                           .opset = m->g->opset,
                           .n_in = s->n_in,
                           .in = ins,
                           .n_out = s->n_out,
                           .out = outs,
                           .act = s->act,
                           .arena = arena ? m->arena : NULL,
                           .out_off = off,
                           .out_bytes = bytes,
                           .gpu = gpu ? m->gpu : NULL};
    kiln_status st = k->fn(&call, err);
    if (st == KILN_UNIMPLEMENTED) {
        for (size_t j = 0; j < s->n_out; j++)
            kiln_tensor_fini(&outs[j]);
        return st;
    }
    for (size_t j = 0; st == KILN_OK && j < s->n_out; j++)
        if (s->out[j] >= 0 && !outs[j].storage)
            st = kiln_err_set(
                err, KILN_INVALID_ARGUMENT, "node '%s' (%s): output %zu ('%s') is not one %s makes",
                s->node->name, s->node->op, j,
                (size_t)s->out[j] < m->g->n_values ? m->g->values[s->out[j]].name : "",
                s->node->op);
    for (size_t j = 0; j < s->n_out; j++) {
        if (st == KILN_OK && s->out[j] >= 0) {
            kiln_tensor_fini(&vals[s->out[j]]);
            vals[s->out[j]] = outs[j];
        } else {
            kiln_tensor_fini(&outs[j]);
        }
    }
    return st;
}

/* A GPU step: its CUDA kernel on device inputs (host copies for the inputs it reads on the
 * host); without one, or when it declines the case, its CPU kernel on host copies, and the
 * outputs copied back to the device. */
static kiln_status gpu_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                            const kiln_onnx_plan *p, kiln_err *err)
{
    const kiln_tensor **ins = m->scr_in;
    kiln_tensor *tmp = m->scr_tmp;
    kiln_status st = KILN_OK;
    for (size_t k = 0; k < s->n_in; k++)
        kiln_tensor_fini(&tmp[k]);
    if (s->cuda) {
        for (size_t k = 0; st == KILN_OK && k < s->n_in; k++) {
            int32_t v = s->in[k];
            ins[k] = v >= 0 ? &vals[v] : NULL;
            if (v < 0)
                continue;
            bool host = k < 32 && (s->cuda->host_in >> k & 1u);
            if (host && on_device(&vals[v])) {
                st = to_host(m, &vals[v], &tmp[k], err);
                ins[k] = &tmp[k];
            } else if (!host && !on_device(&vals[v])) {
                if (!m->dconsts[v].storage && m->consts[v].storage) {
                    if (kiln__onnx_gpu_capturing(m->gpu))
                        return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                                            "a constant is not on the device yet");
                    st = to_device(m, &m->consts[v], NULL, 0, 0, true, &m->dconsts[v], err);
                }
                if (m->dconsts[v].storage) {
                    ins[k] = &m->dconsts[v];
                } else if (st == KILN_OK) {
                    st = to_device(m, &vals[v], NULL, 0, 0, false, &tmp[k], err);
                    ins[k] = &tmp[k];
                }
            }
        }
        if (st == KILN_OK)
            st = call_kernel(m, s, s->cuda, ins, vals, p, true, err);
        if (st != KILN_UNIMPLEMENTED)
            return st;
        st = KILN_OK;
    }
    /* the CPU kernel on host copies */
    s->fell_back = true;
    for (size_t k = 0; k < s->n_in; k++)
        kiln_tensor_fini(&tmp[k]);
    for (size_t k = 0; st == KILN_OK && k < s->n_in; k++) {
        int32_t v = s->in[k];
        ins[k] = v >= 0 ? &vals[v] : NULL;
        if (v >= 0 && on_device(&vals[v])) {
            st = to_host(m, &vals[v], &tmp[k], err);
            ins[k] = &tmp[k];
        }
    }
    if (st == KILN_OK)
        st = call_kernel(m, s, s->kernel, ins, vals, NULL, false, err);
    for (size_t j = 0; st == KILN_OK && j < s->n_out; j++) {
        int32_t v = s->out[j];
        if (v < 0 || !vals[v].storage || on_device(&vals[v]))
            continue;
        kiln_tensor d;
        st = to_device(m, &vals[v], p ? m->arena : NULL, p ? p->off[v] : KILN_ONNX_UNPLANNED,
                       p ? p->bytes[v] : 0, false, &d, err);
        if (st == KILN_OK)
            st = kiln__onnx_gpu_sync(m->gpu, NULL, err); /* the host copy is freed next */
        kiln_tensor_fini(&vals[v]);
        vals[v] = d;
    }
    return st;
}

/* gpu_step, then its copies freed (the device ones wait for the stream: cudaFree
 * synchronizes), so that none outlives the step. */
static kiln_status run_gpu_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                                const kiln_onnx_plan *p, kiln_err *err)
{
    kiln_status st = gpu_step(m, s, vals, p, err);
    for (size_t k = 0; k < s->n_in; k++)
        kiln_tensor_fini(&m->scr_tmp[k]);
    return st;
}

kiln_status kiln__onnx_run_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                                const kiln_onnx_plan *p, kiln_err *err)
{
    if (step_on_gpu(m, s, vals))
        return run_gpu_step(m, s, vals, p, err);
    const kiln_tensor **ins = m->scr_in;
    for (size_t k = 0; k < s->n_in; k++)
        ins[k] = s->in[k] >= 0 ? &vals[s->in[k]] : NULL;
    return call_kernel(m, s, s->kernel, ins, vals, p, false, err);
}

/* The plan for the batch's input shapes, or NULL. */
static kiln_onnx_plan *find_plan(kiln_backend_model *m, const kiln_batch *batch)
{
    for (size_t i = 0; i < m->n_plans; i++) {
        kiln_onnx_plan *p = &m->plans[i];
        bool same = true;
        for (uint32_t k = 0; same && k < batch->n_inputs; k++)
            same = kiln_shape_equal(&p->in_shapes[k], &batch->inputs[k].shape);
        if (same) {
            p->used = ++m->clock;
            return p;
        }
    }
    return NULL;
}

/* Makes the arena big enough for p (between executions: nothing views it then). On a GPU the
 * arena is device memory. */
/* Frees every plan's CUDA graph and the output views it kept: before memory they point at is
 * replaced (the views would keep the old memory alive; the graphs would write into it). */
static void drop_graphs(kiln_backend_model *m)
{
    for (size_t i = 0; i < m->n_plans; i++) {
        kiln_onnx_plan *p = &m->plans[i];
        kiln__onnx_gpu_graph_free(p->graph);
        p->graph = NULL;
        for (size_t k = 0; p->gout && k < p->n_gout; k++)
            kiln_tensor_fini(&p->gout[k]);
    }
}

static kiln_status arena_fit(kiln_backend_model *m, const kiln_onnx_plan *p, kiln_err *err)
{
    if (p->arena_bytes == 0 || (m->arena && kiln_storage_size(m->arena) >= p->arena_bytes))
        return KILN_OK;
    drop_graphs(m);
    kiln_storage_unref(m->arena);
    m->arena = NULL;
    m->mem_gen++;
    if (m->gpu)
        return kiln_storage_create_cuda(kiln__onnx_gpu_device(m->gpu), (size_t)p->arena_bytes,
                                        &m->arena, err);
    return kiln_storage_create_heap((size_t)p->arena_bytes, &m->arena, err);
}

/* Keeps a plan built from trace t for the batch's shapes (replacing the least recently used).
 * Failing to build one is not an error: the next execution traces again. */
static void keep_plan(kiln_backend_model *m, kiln_onnx_trace *t, const kiln_batch *batch)
{
    kiln_shape *shapes = kiln_malloc((batch->n_inputs + 1) * sizeof(*shapes));
    if (!shapes)
        return;
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        shapes[k] = batch->inputs[k].shape;
    kiln_onnx_plan p;
    kiln_err e;
    kiln_status st = kiln__onnx_plan_build(m, t, shapes, &p, &e);
    kiln_free(shapes);
    if (st != KILN_OK)
        return;
    size_t slot = m->n_plans;
    if (slot == m->max_plans) {
        slot = 0;
        for (size_t i = 1; i < m->n_plans; i++)
            slot = m->plans[i].used < m->plans[slot].used ? i : slot;
        kiln__onnx_plan_fini(&m->plans[slot], m->n_values);
    } else {
        m->n_plans++;
    }
    p.used = ++m->clock;
    p.no_graph = m->host_copied; /* a run that copies through the host cannot be captured */
    m->plans[slot] = p;
    (void)arena_fit(m, &p, &e); /* now, so memory() counts it; else the next run retries */
    char in0[160] = "none";
    if (batch->n_inputs)
        kiln_shape_format(&batch->inputs[0].shape, in0, sizeof(in0));
    kiln_log_ctx ctx = {.model = m->name};
    /* a model whose shapes keep changing would log a line per batch: the first plans only */
    KILN_LOG_AT(++m->n_built <= m->max_plans ? KILN_LOG_INFO : KILN_LOG_DEBUG, &ctx,
                "memory plan for input shape %s%s: %zu of %zu steps folded for these shapes, "
                "arena %" PRIu64 " bytes (%" PRIu64 " without reuse)%s",
                in0, batch->n_inputs > 1 ? " (first input)" : "", p.n_skipped, m->n_steps,
                p.arena_bytes, p.sum_bytes,
                !m->gpu      ? ""
                : !m->graphs ? ", on the GPU (CUDA graphs off)"
                : p.no_graph ? ", on the GPU (no CUDA graph: a step copies through the host)"
                             : ", on the GPU (a CUDA graph is captured on the next run)");
}

/* Fills vals with the constants (and p's folded values). */
static void set_consts(const kiln_backend_model *m, const kiln_onnx_plan *p, kiln_tensor *vals)
{
    for (size_t v = 0; v < m->n_values; v++) {
        if (m->consts[v].storage)
            kiln_tensor_share(&m->consts[v], &vals[v]);
        else if (p && p->consts[v].storage)
            kiln_tensor_share(&p->consts[v], &vals[v]);
    }
}

/* Runs the steps (those p does not fold) over vals, freeing each value after its last reader.
 * `check` polls the batch's should_stop between steps. */
static kiln_status run_steps(kiln_backend_model *m, kiln_batch *batch, const kiln_onnx_plan *p,
                             kiln_tensor *vals, kiln_onnx_trace *trace, bool check, kiln_err *err)
{
    kiln_status st = KILN_OK;
    for (size_t i = 0; st == KILN_OK && i < m->n_steps; i++) {
        kiln_onnx_step *s = &m->steps[i];
        if (!p || !p->skip[i]) {
            if (check && batch->should_stop && batch->should_stop(batch->stop_ctx))
                return kiln_err_set(err, KILN_CANCELLED, "stopped: nobody waits for this batch");
            st = kiln__onnx_run_step(m, s, vals, p, err);
            if (st == KILN_OK && trace)
                kiln__onnx_trace_step(trace, m, i, vals);
        }
        for (size_t k = 0; st == KILN_OK && k < s->n_in; k++) {
            int32_t v = s->in[k];
            if (v >= 0 && m->last_use[v] == (int32_t)i && !m->is_output[v])
                kiln_tensor_fini(&vals[v]);
        }
    }
    return st;
}

/* Checks output t against the slot's config output and allocates the slot's result. */
static kiln_status slot_result(kiln_backend_model *m, kiln_batch *batch, kiln_output_slot *slot,
                               const kiln_tensor *t, kiln_err *err)
{
    const kiln_model_io *io = &m->cfg->outputs[slot->index];
    if (!t->storage)
        return kiln_err_set(err, KILN_INTERNAL, "output '%s' was not computed", io->name);
    if (t->dtype != io->dtype)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "output '%s': the graph made %s, the config says %s", io->name,
                            kiln_dtype_name(t->dtype), kiln_dtype_name(io->dtype));
    kiln_status st =
        kiln_output_shape_check(m->cfg, slot->index, batch->batch_size, &t->shape, err);
    if (st == KILN_OK)
        st = kiln_output_slot_alloc(slot, io->name, t->dtype, &t->shape, t->byte_size, err);
    return st;
}

/* The start of an execution: the plan for the batch's shapes (its arena made big enough), or
 * NULL and a trace to build one from (*tracing; a run without memory for either goes
 * unplanned and untraced). */
static kiln_onnx_plan *begin_run(kiln_backend_model *m, const kiln_batch *batch,
                                 kiln_onnx_trace *trace, bool *tracing)
{
    kiln_onnx_plan *p = find_plan(m, batch);
    kiln_err e;
    if (p && arena_fit(m, p, &e) != KILN_OK)
        return NULL; /* no room for the arena in one block: run unplanned, untraced */
    if (!p)
        *tracing = kiln__onnx_trace_init(trace, m->n_values, &e) == KILN_OK;
    return p;
}

/* The end of an execution with status st: outputs released on failure, the values freed, and
 * a plan kept from the trace (NULL: none) after a success. Returns st. */
static kiln_status end_run(kiln_backend_model *m, kiln_batch *batch, kiln_status st,
                           kiln_tensor *vals, kiln_onnx_trace *trace)
{
    if (st != KILN_OK)
        kiln_batch_release_outputs(batch);
    for (size_t v = 0; v < m->n_values; v++)
        kiln_tensor_fini(&vals[v]);
    kiln_free(vals);
    if (trace && st == KILN_OK)
        keep_plan(m, trace, batch);
    if (trace)
        kiln__onnx_trace_fini(trace, m->n_values);
    return st;
}

static kiln_status execute_cpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    size_t nv = m->n_values;
    kiln_tensor *vals = kiln_calloc(nv + 1, sizeof(kiln_tensor));
    if (!vals)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    kiln_onnx_trace trace = {0};
    bool tracing = false;
    kiln_onnx_plan *p = begin_run(m, batch, &trace, &tracing);
    set_consts(m, p, vals);
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        kiln_tensor_share(&batch->inputs[k], &vals[m->in_value[k]]);
    kiln_status st = run_steps(m, batch, p, vals, tracing ? &trace : NULL, true, err);
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        kiln_output_slot *slot = &batch->outputs[o];
        const kiln_tensor *t = &vals[m->out_value[slot->index]];
        st = slot_result(m, batch, slot, t, err);
        if (st == KILN_OK && t->byte_size)
            memcpy(slot->result.data, t->data, t->byte_size);
    }
    return end_run(m, batch, st, vals, tracing ? &trace : NULL);
}

/* Host inputs up to this size go through the pinned staging buffer (one memcpy, then an
 * asynchronous copy); larger ones are copied from where they are (the driver stages pageable
 * memory itself, in pieces, without the extra pass). */
#define KILN_ONNX_STAGE_MAX ((size_t)1 << 20)

/* Makes *buf (a fixed device buffer that graphs read) at least `bytes`. */
static kiln_status fixed_fit(kiln_backend_model *m, kiln_storage **buf, size_t bytes, kiln_err *err)
{
    if (*buf && kiln_storage_size(*buf) >= bytes)
        return KILN_OK;
    drop_graphs(m);
    kiln_storage_unref(*buf);
    *buf = NULL;
    m->mem_gen++;
    return kiln_storage_create_cuda(kiln__onnx_gpu_device(m->gpu), bytes, buf, err);
}

/* Puts batch input k on the device as vals' graph input. With `fixed` (a graph is or will be
 * replayed), always into the input's own device buffer; otherwise a device input in this
 * model's GPU is used where it is (CUDA shared memory: no copy). Host bytes go through the
 * staging buffer at *staged. */
static kiln_status input_place(kiln_backend_model *m, uint32_t k, const kiln_tensor *in, bool fixed,
                               char *staging, size_t *staged, kiln_tensor *out, kiln_err *err)
{
    int dev = kiln__onnx_gpu_device(m->gpu);
    if (on_device(in) && in->device.id == dev && !fixed) {
        kiln_tensor_share(in, out);
        return KILN_OK;
    }
    kiln_status st = fixed_fit(m, &m->gin[k], in->byte_size, err);
    if (st != KILN_OK)
        return st;
    st = kiln_tensor_view(m->gin[k], 0, in->dtype, &in->shape, in->byte_size, out, err);
    if (st != KILN_OK || !in->byte_size)
        return st;
    const void *src = in->data;
    if (!on_device(in) && in->byte_size <= KILN_ONNX_STAGE_MAX) {
        memcpy(staging + *staged, in->data, in->byte_size);
        src = staging + *staged;
        *staged += (in->byte_size + 63) & ~(size_t)63;
    }
    return kiln__onnx_gpu_copy(m->gpu, out->data, src, in->byte_size, err);
}

/* input_place, then, in FP16 precision, an FP32 input converted into its FP16 buffer (the
 * model's value is that). */
static kiln_status input_to_device(kiln_backend_model *m, uint32_t k, const kiln_tensor *in,
                                   bool fixed, char *staging, size_t *staged, kiln_tensor *out,
                                   kiln_err *err)
{
    kiln_status st = input_place(m, k, in, fixed, staging, staged, out, err);
    if (st != KILN_OK || !fp16_on_device(m, in->dtype))
        return st;
    kiln_tensor h = {0};
    size_t hb = in->byte_size / 2;
    st = fixed_fit(m, &m->gin16[k], hb ? hb : 1, err);
    if (st == KILN_OK)
        st = kiln_tensor_view(m->gin16[k], 0, KILN_DTYPE_FP16, &in->shape, hb, &h, err);
    if (st == KILN_OK)
        st = kiln__onnx_gpu_convert(m->gpu, h.data, true, out->data, hb / 2, err);
    kiln_tensor_fini(out);
    *out = h;
    return st;
}

/* Whether output t (for batch output slot o) is an FP16 device value the config wants as FP32. */
static bool wants_float(const kiln_backend_model *m, const kiln_batch *batch, uint32_t o,
                        const kiln_tensor *t)
{
    return on_device(t) && t->dtype == KILN_DTYPE_FP16 &&
           m->cfg->outputs[batch->outputs[o].index].dtype == KILN_DTYPE_FP32;
}

/* In FP16 precision, the FP16 outputs whose config type is FP32: converted into m->gconv (grown
 * as needed; between runs nothing reads it), outs[o] then pointing at conv[o]. */
static kiln_status outputs_to_float(kiln_backend_model *m, const kiln_batch *batch,
                                    const kiln_tensor **outs, kiln_tensor *conv, kiln_err *err)
{
    size_t need = 0;
    for (uint32_t o = 0; o < batch->n_outputs; o++)
        if (wants_float(m, batch, o, outs[o]))
            need += (outs[o]->byte_size * 2 + 255) & ~(size_t)255;
    if (!need)
        return KILN_OK;
    if (!m->gconv || kiln_storage_size(m->gconv) < need) {
        kiln_storage_unref(m->gconv);
        m->gconv = NULL;
        kiln_status st =
            kiln_storage_create_cuda(kiln__onnx_gpu_device(m->gpu), need, &m->gconv, err);
        if (st != KILN_OK)
            return st;
    }
    size_t at = 0;
    for (uint32_t o = 0; o < batch->n_outputs; o++) {
        const kiln_tensor *t = outs[o];
        if (!wants_float(m, batch, o, t))
            continue;
        kiln_status st = kiln_tensor_view(m->gconv, at, KILN_DTYPE_FP32, &t->shape,
                                          t->byte_size * 2, &conv[o], err);
        if (st == KILN_OK)
            st =
                kiln__onnx_gpu_convert(m->gpu, conv[o].data, false, t->data, t->byte_size / 2, err);
        if (st != KILN_OK)
            return st;
        outs[o] = &conv[o];
        at += (t->byte_size * 2 + 255) & ~(size_t)255;
    }
    return KILN_OK;
}

/* Captures p's steps into a CUDA graph (vals hold the constants and inputs). On success the
 * graph is p's and has not run yet; vals hold the outputs' views. On failure p is marked
 * no_graph and vals are reset to the constants and inputs. */
static kiln_status capture(kiln_backend_model *m, kiln_batch *batch, kiln_onnx_plan *p,
                           kiln_tensor *vals, uint64_t gen, kiln_err *err)
{
    kiln__onnx_gpu_graph_free(p->graph);
    p->graph = NULL;
    for (size_t k = 0; p->gout && k < p->n_gout; k++)
        kiln_tensor_fini(&p->gout[k]);
    kiln_err e;
    kiln_status st = kiln__onnx_gpu_capture_begin(m->gpu, &e);
    if (st != KILN_OK) {
        p->no_graph = true;
        return KILN_OK;
    }
    m->host_copied = false;
    kiln_status run = run_steps(m, batch, p, vals, NULL, false, &e);
    void *exec = NULL;
    st = kiln__onnx_gpu_capture_end(m->gpu, &exec, run == KILN_OK ? &e : &(kiln_err){0});
    size_t no = m->cfg->n_outputs;
    if (run == KILN_OK && st == KILN_OK && exec && !m->host_copied) {
        if (!p->gout)
            p->gout = kiln_calloc(no + 1, sizeof(kiln_tensor));
        if (p->gout) {
            p->n_gout = no;
            for (size_t k = 0; k < no; k++)
                kiln_tensor_share(&vals[m->out_value[k]], &p->gout[k]);
            p->graph = exec;
            p->graph_gen = gen;
            return KILN_OK;
        }
    }
    kiln__onnx_gpu_graph_free(exec);
    p->no_graph = true;
    kiln_log_ctx ctx = {.model = m->name};
    KILN_LOGI(&ctx, "no CUDA graph for this input shape: %s",
              run != KILN_OK || st != KILN_OK ? e.msg : "a step copies through the host");
    (void)err;
    return KILN_OK;
}

static kiln_status execute_gpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    if (m->poisoned)
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "a CUDA error left this model's GPU context unusable; unload and "
                            "load the model again");
    kiln_status st = kiln__onnx_gpu_enter(m->gpu, err);
    if (st != KILN_OK)
        return st;
    size_t nv = m->n_values;
    kiln_tensor *vals = kiln_calloc(nv + 1, sizeof(kiln_tensor));
    if (!vals)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    kiln_onnx_trace trace = {0};
    bool tracing = false;
    kiln_onnx_plan *p = begin_run(m, batch, &trace, &tracing);
    kiln_err e;
    bool graph = p && m->graphs && !p->no_graph;
    /* staging: host inputs now, host outputs after the run (stream order keeps them apart) */
    size_t in_bytes = 0, out_bytes = 0, staged = 0;
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        if (batch->inputs[k].byte_size <= KILN_ONNX_STAGE_MAX)
            in_bytes += (batch->inputs[k].byte_size + 63) & ~(size_t)63;
    char *staging = NULL;
    st = kiln__onnx_gpu_staging(m->gpu, in_bytes, (void **)&staging, err);
    set_consts(m, p, vals);
    for (uint32_t k = 0; st == KILN_OK && k < batch->n_inputs; k++)
        st = input_to_device(m, k, &batch->inputs[k], graph, staging, &staged,
                             &vals[m->in_value[k]], err);
    uint64_t gen = m->mem_gen + kiln__onnx_gpu_generation(m->gpu);
    bool replay = false;
    if (st == KILN_OK && graph) {
        if (!p->graph || p->graph_gen != gen)
            st = capture(m, batch, p, vals, gen, err);
        if (st == KILN_OK && p->graph) {
            replay = true;
            st = kiln__onnx_gpu_graph_run(m->gpu, p->graph, err);
        } else if (st == KILN_OK) { /* the capture failed: run the steps */
            for (size_t v = 0; v < nv; v++)
                kiln_tensor_fini(&vals[v]);
            set_consts(m, p, vals);
            staged = 0;
            for (uint32_t k = 0; st == KILN_OK && k < batch->n_inputs; k++)
                st = input_to_device(m, k, &batch->inputs[k], true, staging, &staged,
                                     &vals[m->in_value[k]], err);
        }
    }
    m->host_copied = false;
    if (st == KILN_OK && !replay)
        st = run_steps(m, batch, p, vals, tracing ? &trace : NULL, true, err);
    /* outputs: device to device into a device slot, else through the staging buffer */
    const kiln_tensor **outs = kiln_calloc(batch->n_outputs + 1, sizeof(*outs));
    kiln_tensor *conv = kiln_calloc(batch->n_outputs + 1, sizeof(*conv));
    if ((!outs || !conv) && st == KILN_OK)
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        uint32_t idx = batch->outputs[o].index;
        outs[o] = replay ? &p->gout[idx] : &vals[m->out_value[idx]];
    }
    if (st == KILN_OK && m->precision == KILN_ONNX_FP16)
        st = outputs_to_float(m, batch, outs, conv, err);
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        st = slot_result(m, batch, &batch->outputs[o], outs[o], err);
        if (st == KILN_OK && on_device(outs[o]) && !on_device(&batch->outputs[o].result))
            out_bytes += (outs[o]->byte_size + 63) & ~(size_t)63;
    }
    if (st == KILN_OK)
        st = kiln__onnx_gpu_staging(m->gpu, out_bytes, (void **)&staging, err);
    staged = 0;
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        kiln_tensor *r = &batch->outputs[o].result;
        if (on_device(r) || on_device(outs[o])) {
            bool stage = !on_device(r);
            st = kiln__onnx_gpu_copy(m->gpu, stage ? staging + staged : r->data, outs[o]->data,
                                     outs[o]->byte_size, err);
            staged += stage ? (outs[o]->byte_size + 63) & ~(size_t)63 : 0;
        } else if (outs[o]->byte_size) {
            memcpy(r->data, outs[o]->data, outs[o]->byte_size);
        }
    }
    bool poisoned = false;
    kiln_status sync = kiln__onnx_gpu_sync(m->gpu, &poisoned, st == KILN_OK ? err : &e);
    if (poisoned) {
        m->poisoned = true;
        kiln_log_ctx ctx = {.model = m->name};
        KILN_LOGE(&ctx, "CUDA error: %s; the model must be loaded again",
                  (st == KILN_OK ? err : &e)->msg);
    }
    st = st == KILN_OK ? sync : st;
    staged = 0;
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        kiln_tensor *r = &batch->outputs[o].result;
        if (!on_device(r) && on_device(outs[o])) {
            memcpy(r->data, staging + staged, outs[o]->byte_size);
            staged += (outs[o]->byte_size + 63) & ~(size_t)63;
        }
    }
    kiln_free(outs);
    for (uint32_t o = 0; conv && o < batch->n_outputs; o++)
        kiln_tensor_fini(&conv[o]);
    kiln_free(conv);
    return end_run(m, batch, st, vals, tracing ? &trace : NULL);
}

static kiln_status execute(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        if (!batch->inputs[k].storage)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "input '%s' is required by the model",
                                m->cfg->inputs[k].name);
    /* a CPU instance (of a model with GPU instances too, say) cannot read device memory */
    for (uint32_t k = 0; !m->gpu && k < batch->n_inputs; k++)
        if (on_device(&batch->inputs[k]))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "input '%s' is in CUDA memory, and this instance of the model "
                                "runs on the CPU",
                                m->cfg->inputs[k].name);
    for (uint32_t o = 0; !m->gpu && o < batch->n_outputs; o++)
        if (batch->outputs[o].buffer &&
            kiln_storage_device(batch->outputs[o].buffer).kind != KILN_DEVICE_CPU)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "output '%s' is asked in CUDA memory, and this instance of the "
                                "model runs on the CPU",
                                m->cfg->outputs[batch->outputs[o].index].name);
    return m->gpu ? execute_gpu(m, batch, err) : execute_cpu(m, batch, err);
}

static void memory(const kiln_backend_model *m, uint64_t *host_bytes, uint64_t *device_bytes)
{
    uint64_t plans = 0;
    for (size_t i = 0; i < m->n_plans; i++)
        plans += kiln__onnx_plan_bytes(&m->plans[i], m->n_values);
    uint64_t arena = m->arena ? kiln_storage_size(m->arena) : 0;
    *host_bytes = m->const_bytes + plans + (m->gpu ? 0 : arena);
    *device_bytes = 0;
    if (!m->gpu)
        return;
    *device_bytes = arena + kiln__onnx_gpu_bytes(m->gpu);
    for (size_t v = 0; v < m->n_values; v++)
        *device_bytes += m->dconsts[v].byte_size;
    for (size_t k = 0; k < m->cfg->n_inputs; k++) {
        *device_bytes += m->gin[k] ? kiln_storage_size(m->gin[k]) : 0;
        *device_bytes += m->gin16[k] ? kiln_storage_size(m->gin16[k]) : 0;
    }
    *device_bytes += m->gconv ? kiln_storage_size(m->gconv) : 0;
}

void kiln_onnx_stats_get(const kiln_backend_model *m, kiln_onnx_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->n_nodes = m->g->n_nodes;
    out->n_steps = m->n_steps;
    out->n_folded = m->n_folded;
    out->n_bn_folded = m->n_bn_folded;
    out->n_act_fused = m->n_act_fused;
    out->const_bytes = m->const_bytes;
    out->n_plans = m->n_plans;
    out->arena_bytes = m->arena ? kiln_storage_size(m->arena) : 0;
    const kiln_onnx_plan *last = NULL;
    for (size_t i = 0; i < m->n_plans; i++)
        if (!last || m->plans[i].used > last->used)
            last = &m->plans[i];
    if (last) {
        out->last_plan_arena = last->arena_bytes;
        out->last_plan_sum = last->sum_bytes;
        out->last_plan_skipped = last->n_skipped;
    }
}

const kiln_backend kiln_onnx_backend = {
    .name = "onnx",
    .load = load,
    .execute = execute,
    .memory = memory,
    .unload = unload,
    .autoconfig_file = "model.onnx",
    .autoconfig = kiln__onnx_autoconfig,
};
