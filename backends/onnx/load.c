/*
 * backends/onnx/load.c: loading an ONNX model version (the backend's load and unload).
 *
 * Load reads <version>/model.onnx (or the config's default_model_filename) with the loader of
 * proto/onnx_model.h, finds a kernel for every node (else a load error naming the op, the node
 * and the opset), and checks the config against the graph: every config input and output is a
 * graph input or output of the same dtype and rank (the config's rank plus the batch dim), and
 * its dims agree with the dims the graph fixes. The rewrites of optimize.c follow, then, on a
 * GPU, the instance's CUDA side (run_gpu.c), then the load check: a few runs on zeros that
 * also build the first memory plans (and on a GPU find the convolution algorithms and capture
 * the CUDA graphs). A model without a config.pbtxt gets one derived from its graph
 * (autoconfig.c, the table's autoconfig hook).
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

void kiln__onnx_unload(kiln_backend_model *m)
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
    if (st == KILN_OK && (st = kiln__onnx_execute(m, &b, err)) == KILN_OK)
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

kiln_status kiln__onnx_load(const kiln_load_args *args, kiln_backend_model **out, kiln_err *err)
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
    kiln_status st = args->device.kind == KILN_DEVICE_CUDA
                         ? kiln__onnx_gpu_setup(m, args->device.id, err)
                         : KILN_OK;
    if (st != KILN_OK) {
        kiln__onnx_unload(m);
        return st;
    }
    st = kiln_onnx_model_load(path, &m->g, err);
    if (st != KILN_OK) {
        kiln__onnx_unload(m);
        return st;
    }
    const kiln_onnx_model *g = m->g;
    m->n_values = g->n_values;
    m->consts = kiln_calloc(g->n_values + 1, sizeof(*m->consts));
    m->is_output = kiln_calloc(g->n_values + 1, sizeof(bool));
    m->in_value = kiln_calloc(cfg->n_inputs + 1, sizeof(int32_t));
    m->out_value = kiln_calloc(cfg->n_outputs + 1, sizeof(int32_t));
    if (!m->consts || !m->is_output || !m->in_value || !m->out_value) {
        kiln__onnx_unload(m);
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
        st = kiln__onnx_gpu_prepare(m, err);
    if (st == KILN_OK)
        st = warm_up(m, err);
    if (st != KILN_OK) {
        kiln__onnx_unload(m);
        return st;
    }
    kiln_log_ctx ctx = {.model = m->name};
    KILN_LOGI(&ctx,
              "loaded %s: %zu nodes run as %zu steps (%zu folded at load, %zu "
              "BatchNormalization folded into Conv, %zu biases folded into MatMul, %zu "
              "activations fused), %" PRIu64 " bytes of constants",
              file, g->n_nodes, m->n_steps, m->n_folded, m->n_bn_folded, m->n_bias_fused,
              m->n_act_fused, m->const_bytes);
    if (m->gpu)
        kiln__onnx_gpu_log(m);
    *out = m;
    return KILN_OK;
}
