/*
 * backends/onnx/runtime.c: the ONNX backend: load (file, kernels, agreement with the config)
 * and execute (a graph interpreter).
 *
 * Load reads <version>/model.onnx (or the config's default_model_filename) with the loader of
 * proto/onnx_model.h, finds a kernel for every node (else a load error naming the op, the node
 * and the opset), and checks the config against the graph: every config input and output is a
 * graph input or output of the same dtype and rank (the config's rank plus the batch dim), and
 * its dims agree with the dims the graph fixes. A model without a config.pbtxt gets one
 * derived from its graph (autoconfig.c, the table's autoconfig hook).
 *
 * Execute runs the nodes in file order. Each value is freed after its last reader, so memory
 * holds the live values only (there is no static memory plan yet: every output is allocated
 * when its node runs). Requested outputs are copied into their slots.
 *
 * OpenBLAS: the backend asks for one OpenBLAS thread, so that the execution threads are the
 * parallelism and no thread is started from a sandboxed thread.
 */
#include <cblas.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onnx/onnx.h"
#include "backends/onnx/onnx_int.h"
#include "common/alloc.h"

struct kiln_backend_model {
    kiln_onnx_model *g;
    const kiln_model_config *cfg;
    const kiln_onnx_kernel **kernels; /* per node */
    int32_t *in_value;                /* per config input: its graph value */
    int32_t *out_value;               /* per config output: its graph value */
    int32_t *last_use;                /* per value: the last node that reads it, -1 if none */
    bool *keep;                       /* per value: initializer or graph output */
    uint64_t host_bytes;
    size_t max_io; /* the most inputs or outputs of one node */
};

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

/* One OpenBLAS thread, set once for the process (the setting is global). */
static void blas_single_thread(void)
{
    openblas_set_num_threads(1);
}

static void unload(kiln_backend_model *m)
{
    if (!m)
        return;
    kiln_onnx_model_free(m->g);
    kiln_free(m->kernels);
    kiln_free(m->in_value);
    kiln_free(m->out_value);
    kiln_free(m->last_use);
    kiln_free(m->keep);
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

static kiln_status load(const kiln_load_args *args, kiln_backend_model **out, kiln_err *err)
{
    *out = NULL;
    const kiln_model_config *cfg = args->config;
    if (args->device.kind != KILN_DEVICE_CPU)
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "model '%s': ONNX models run on the CPU only in this build",
                            args->model_name);
    char path[4096];
    const char *file = cfg->default_model_filename[0] ? cfg->default_model_filename : "model.onnx";
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", args->version_dir, file) >= sizeof(path))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "model '%s': path too long",
                            args->model_name);
    kiln_backend_model *m = kiln_calloc(1, sizeof(*m));
    if (!m)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    m->cfg = cfg;
    kiln_status st = kiln_onnx_model_load(path, &m->g, err);
    if (st != KILN_OK) {
        unload(m);
        return st;
    }
    const kiln_onnx_model *g = m->g;
    m->kernels = kiln_calloc(g->n_nodes + 1, sizeof(*m->kernels));
    m->in_value = kiln_calloc(cfg->n_inputs + 1, sizeof(int32_t));
    m->out_value = kiln_calloc(cfg->n_outputs + 1, sizeof(int32_t));
    m->last_use = kiln_calloc(g->n_values + 1, sizeof(int32_t));
    m->keep = kiln_calloc(g->n_values + 1, sizeof(bool));
    if (!m->kernels || !m->in_value || !m->out_value || !m->last_use || !m->keep) {
        unload(m);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; st == KILN_OK && i < g->n_nodes; i++) {
        const kiln_onnx_node *n = &g->nodes[i];
        m->kernels[i] = n->domain[0] ? NULL : kiln__onnx_kernel_find(n->op, KILN_DEVICE_CPU);
        if (m->kernels[i] && (!n->n_outputs || n->outputs[0] < 0)) {
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': node '%s' (%s) has no first output", args->model_name,
                              n->name, n->op);
        } else if (!m->kernels[i]) {
            char ops[1024];
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': node '%s' uses op '%s%s%s' (opset %" PRId64
                              "), which Kiln's CPU backend does not support (it runs: %s)",
                              args->model_name, n->name, n->domain, n->domain[0] ? "." : "", n->op,
                              g->opset, kiln__onnx_kernel_ops(KILN_DEVICE_CPU, ops, sizeof(ops)));
        }
    }
    for (size_t k = 0; st == KILN_OK && k < cfg->n_inputs; k++) {
        int32_t v = find_in(g, g->inputs, g->n_inputs, cfg->inputs[k].name);
        if (v < 0)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': config input '%s' is not an input of %s",
                              args->model_name, cfg->inputs[k].name, file);
        else
            st = agree(args->model_name, "input", &cfg->inputs[k], &g->values[v],
                       cfg->max_batch_size, err);
        m->in_value[k] = v;
    }
    for (size_t k = 0; st == KILN_OK && k < cfg->n_outputs; k++) {
        int32_t v = find_in(g, g->outputs, g->n_outputs, cfg->outputs[k].name);
        if (v < 0)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': config output '%s' is not an output of %s",
                              args->model_name, cfg->outputs[k].name, file);
        else
            st = agree(args->model_name, "output", &cfg->outputs[k], &g->values[v],
                       cfg->max_batch_size, err);
        m->out_value[k] = v;
    }
    for (size_t k = 0; st == KILN_OK && k < g->n_inputs; k++)
        if (find_in(g, m->in_value, cfg->n_inputs, g->values[g->inputs[k]].name) < 0)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s': the ONNX graph's input '%s' is not in the config",
                              args->model_name, g->values[g->inputs[k]].name);
    if (st != KILN_OK) {
        unload(m);
        return st;
    }
    for (size_t v = 0; v < g->n_values; v++)
        m->last_use[v] = -1;
    for (size_t i = 0; i < g->n_nodes; i++)
        for (size_t k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] >= 0)
                m->last_use[g->nodes[i].inputs[k]] = (int32_t)i;
    for (size_t i = 0; i < g->n_initializers; i++) {
        m->keep[g->init_values[i]] = true;
        m->host_bytes += g->initializers[i].byte_size;
    }
    for (size_t i = 0; i < g->n_outputs; i++)
        m->keep[g->outputs[i]] = true;
    m->max_io = 1; /* the widest node, for execute's input and output arrays */
    for (size_t i = 0; i < g->n_nodes; i++) {
        m->max_io = g->nodes[i].n_inputs > m->max_io ? g->nodes[i].n_inputs : m->max_io;
        m->max_io = g->nodes[i].n_outputs > m->max_io ? g->nodes[i].n_outputs : m->max_io;
    }
    pthread_once(&blas_once, blas_single_thread);
    *out = m;
    return KILN_OK;
}

static kiln_status execute(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    const kiln_onnx_model *g = m->g;
    kiln_tensor *vals = kiln_calloc(g->n_values + 1, sizeof(kiln_tensor));
    size_t max_io = m->max_io;
    const kiln_tensor **ins = kiln_calloc(max_io, sizeof(*ins));
    kiln_tensor *outs = kiln_calloc(max_io, sizeof(*outs));
    kiln_status st = KILN_OK;
    if (!vals || !ins || !outs)
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; st == KILN_OK && i < g->n_initializers; i++)
        kiln_tensor_share(&g->initializers[i], &vals[g->init_values[i]]);
    for (uint32_t k = 0; st == KILN_OK && k < batch->n_inputs; k++) {
        if (!batch->inputs[k].storage)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "input '%s' is required by the model",
                              m->cfg->inputs[k].name);
        else
            kiln_tensor_share(&batch->inputs[k], &vals[m->in_value[k]]);
    }
    for (size_t i = 0; st == KILN_OK && i < g->n_nodes; i++) {
        if (batch->should_stop && batch->should_stop(batch->stop_ctx)) {
            st = kiln_err_set(err, KILN_CANCELLED, "stopped: nobody waits for this batch");
            break;
        }
        const kiln_onnx_node *n = &g->nodes[i];
        for (size_t k = 0; k < n->n_inputs; k++)
            ins[k] = n->inputs[k] >= 0 ? &vals[n->inputs[k]] : NULL;
        memset(outs, 0, max_io * sizeof(*outs));
        kiln_onnx_call call = {.node = n,
                               .opset = g->opset,
                               .n_in = n->n_inputs,
                               .in = ins,
                               .n_out = n->n_outputs,
                               .out = outs};
        st = m->kernels[i]->fn(&call, err);
        for (size_t k = 0; st == KILN_OK && k < n->n_outputs; k++)
            if (n->outputs[k] >= 0 && !outs[k].storage)
                st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                  "node '%s' (%s): output %zu ('%s') is not one %s makes", n->name,
                                  n->op, k, g->values[n->outputs[k]].name, n->op);
        for (size_t k = 0; k < max_io; k++) {
            if (st == KILN_OK && k < n->n_outputs && n->outputs[k] >= 0)
                vals[n->outputs[k]] = outs[k];
            else
                kiln_tensor_fini(&outs[k]);
            memset(&outs[k], 0, sizeof(outs[k]));
        }
        for (size_t k = 0; st == KILN_OK && k < n->n_inputs; k++) {
            int32_t v = n->inputs[k];
            if (v >= 0 && m->last_use[v] == (int32_t)i && !m->keep[v])
                kiln_tensor_fini(&vals[v]);
        }
    }
    for (uint32_t s = 0; st == KILN_OK && s < batch->n_outputs; s++) {
        kiln_output_slot *slot = &batch->outputs[s];
        const kiln_tensor *t = &vals[m->out_value[slot->index]];
        if (!t->storage) {
            st = kiln_err_set(err, KILN_INTERNAL, "output '%s' was not computed",
                              m->cfg->outputs[slot->index].name);
            break;
        }
        const kiln_model_io *io = &m->cfg->outputs[slot->index];
        if (t->dtype != io->dtype) {
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "output '%s': the graph made %s, the config says %s", io->name,
                              kiln_dtype_name(t->dtype), kiln_dtype_name(io->dtype));
            break;
        }
        st = kiln_output_shape_check(m->cfg, slot->index, batch->batch_size, &t->shape, err);
        if (st == KILN_OK)
            st = kiln_output_slot_alloc(slot, io->name, t->dtype, &t->shape, t->byte_size, err);
        if (st == KILN_OK && t->byte_size)
            memcpy(slot->result.data, t->data, t->byte_size);
    }
    if (st != KILN_OK)
        kiln_batch_release_outputs(batch);
    for (size_t v = 0; vals && v < g->n_values; v++)
        kiln_tensor_fini(&vals[v]);
    kiln_free(vals);
    kiln_free(ins);
    kiln_free(outs);
    return st;
}

static void memory(const kiln_backend_model *m, uint64_t *host_bytes, uint64_t *device_bytes)
{
    *host_bytes = m->host_bytes;
    *device_bytes = 0;
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
