/*
 * backends/onnx/run_gpu.c: the ONNX backend on a GPU (load args' device CUDA, from
 * instance_group KIND_GPU): the instance's CUDA side at load, and its executions.
 *
 * The instance opens a context (gpu.h: stream, cuBLAS, cuDNN); values live in a device arena,
 * and each step runs its CUDA kernel when one of its inputs is on the device (Shape and the
 * host-side shape subgraphs stay on the host). A step without a CUDA kernel, or whose kernel
 * declines the case, runs its CPU kernel on host copies. The second run of an input shape
 * captures its steps as a CUDA graph (config parameter cuda_graphs), replayed after. Inputs
 * come in through the pinned staging buffer, or are used in place when already on the device
 * (CUDA shared memory); outputs go out the same ways. In FP16 precision, float values are FP16
 * on the device: inputs and constants are converted on the way in, outputs on the way out. A
 * failure that ran out of device memory, or that lost the GPU (a sticky CUDA error), says so in
 * the batch (kiln_batch.fault) for the registry. docs/gpu.md has the whole story.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "backends/onnx/runtime_int.h"
#include "common/alloc.h"
#include "common/log.h"

/* Config parameter `key`, "true" or "false" (absent: dflt); INVALID_ARGUMENT naming it else. */
static kiln_status flag_param(const kiln_backend_model *m, const char *key, bool dflt, bool *out,
                              kiln_err *err)
{
    const char *v = kiln_model_config_param(m->cfg, key);
    *out = v ? strcmp(v, "true") == 0 : dflt;
    if (v && strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "model '%s': parameter %s is '%s'; it must be true or false", m->name,
                            key, v);
    return KILN_OK;
}

kiln_status kiln__onnx_gpu_setup(kiln_backend_model *m, int device, kiln_err *err)
{
    const char *prec = kiln_model_config_param(m->cfg, "precision");
    if (prec && strcmp(prec, "fp32") != 0 && strcmp(prec, "tf32") != 0 && strcmp(prec, "fp16") != 0)
        return kiln_err_set(
            err, KILN_INVALID_ARGUMENT,
            "model '%s': parameter precision is '%s'; it must be fp32, tf32 or fp16", m->name,
            prec);
    bool cublaslt;
    kiln_status st = flag_param(m, "cuda_graphs", true, &m->graphs, err);
    if (st == KILN_OK)
        st = flag_param(m, "cublaslt", false, &cublaslt, err);
    if (st != KILN_OK)
        return st;
    m->precision = !prec                       ? KILN_ONNX_FP32
                   : strcmp(prec, "tf32") == 0 ? KILN_ONNX_TF32
                   : strcmp(prec, "fp16") == 0 ? KILN_ONNX_FP16
                                               : KILN_ONNX_FP32;
    kiln_err e;
    st = kiln__onnx_gpu_open(device, m->precision, cublaslt, &m->gpu, &e);
    if (st != KILN_OK)
        return kiln_err_set(err, st, "model '%s': GPU %d: %s", m->name, device, e.msg);
    return KILN_OK;
}

/* After the rewrites: each step's CUDA kernel, and room for the device copies. */
kiln_status kiln__onnx_gpu_prepare(kiln_backend_model *m, kiln_err *err)
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
void kiln__onnx_gpu_log(const kiln_backend_model *m)
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
        st = kiln__onnx_gpu_sync(m->gpu, err);
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
            st = kiln__onnx_gpu_sync(m->gpu, err);
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
        st = kiln__onnx_gpu_sync(m->gpu, err);
    if (st != KILN_OK)
        kiln_tensor_fini(d);
    m->host_copied = m->host_copied || !once;
    return st;
}

/* Whether step s runs on the GPU: a model on a GPU runs there every step that reads a device
 * value, except Shape, which reads only the shape. */
bool kiln__onnx_step_on_gpu(const kiln_backend_model *m, const kiln_onnx_step *s,
                            const kiln_tensor *vals)
{
    if (!m->gpu || strcmp(s->node->op, "Shape") == 0)
        return false;
    for (size_t k = 0; k < s->n_in; k++)
        if (s->in[k] >= 0 && kiln__onnx_on_device(&vals[s->in[k]]))
            return true;
    return false;
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
            if (host && kiln__onnx_on_device(&vals[v])) {
                st = to_host(m, &vals[v], &tmp[k], err);
                ins[k] = &tmp[k];
            } else if (!host && !kiln__onnx_on_device(&vals[v])) {
                if (!m->dconsts[v].storage && m->consts[v].storage) {
                    if (kiln__onnx_gpu_capturing(m->gpu))
                        return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                                            "a constant is not on the device yet");
                    st = to_device(m, &m->consts[v], NULL, 0, 0, true, &m->dconsts[v], err);
                    m->dconst_bytes += st == KILN_OK ? m->dconsts[v].byte_size : 0;
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
            st = kiln__onnx_call_kernel(m, s, s->cuda, ins, vals, p, true, err);
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
        if (v >= 0 && kiln__onnx_on_device(&vals[v])) {
            st = to_host(m, &vals[v], &tmp[k], err);
            ins[k] = &tmp[k];
        }
    }
    if (st == KILN_OK)
        st = kiln__onnx_call_kernel(m, s, s->kernel, ins, vals, NULL, false, err);
    for (size_t j = 0; st == KILN_OK && j < s->n_out; j++) {
        int32_t v = s->out[j];
        if (v < 0 || !vals[v].storage || kiln__onnx_on_device(&vals[v]))
            continue;
        kiln_tensor d;
        st = to_device(m, &vals[v], p ? m->arena : NULL, p ? p->off[v] : KILN_ONNX_UNPLANNED,
                       p ? p->bytes[v] : 0, false, &d, err);
        if (st == KILN_OK)
            st = kiln__onnx_gpu_sync(m->gpu, err); /* the host copy is freed next */
        kiln_tensor_fini(&vals[v]);
        vals[v] = d;
    }
    return st;
}

/* gpu_step, then its copies freed (the device ones wait for the stream: cudaFree
 * synchronizes), so that none outlives the step. */
kiln_status kiln__onnx_run_gpu_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                                    const kiln_onnx_plan *p, kiln_err *err)
{
    kiln_status st = gpu_step(m, s, vals, p, err);
    for (size_t k = 0; k < s->n_in; k++)
        kiln_tensor_fini(&m->scr_tmp[k]);
    return st;
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
    kiln__onnx_drop_graphs(m);
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
    if (kiln__onnx_on_device(in) && in->device.id == dev && !fixed) {
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
    if (!kiln__onnx_on_device(in) && in->byte_size <= KILN_ONNX_STAGE_MAX) {
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
    return kiln__onnx_on_device(t) && t->dtype == KILN_DTYPE_FP16 &&
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
    kiln_status run = kiln__onnx_run_steps(m, batch, p, vals, NULL, false, &e);
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

static kiln_status run_gpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err);

/* run_gpu, and what its failure says of the device: out of device memory, or lost (a sticky
 * CUDA error: the GPU's context is unusable, and every later execute fails at once). */
kiln_status kiln__onnx_execute_gpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    if (kiln__onnx_gpu_poisoned(m->gpu)) {
        batch->fault = KILN_FAULT_DEVICE_LOST;
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "GPU %d: an earlier CUDA error (%s) left its context unusable; "
                            "restart the server",
                            kiln__onnx_gpu_device(m->gpu), m->lost_msg);
    }
    kiln_status st = run_gpu(m, batch, err);
    if (st == KILN_OK)
        return st;
    if (kiln__onnx_gpu_poisoned(m->gpu)) {
        batch->fault = KILN_FAULT_DEVICE_LOST;
        /* kept for this instance's later batches; the registry logs the loss, once per GPU */
        snprintf(m->lost_msg, sizeof(m->lost_msg), "%s", err ? err->msg : kiln_status_name(st));
    } else if (st == KILN_RESOURCE_EXHAUSTED) {
        batch->fault = KILN_FAULT_DEVICE_MEMORY;
    }
    return st;
}

/* One execution on the GPU: inputs to the device, the steps (or their CUDA graph), the outputs
 * back, one wait for the stream at the end. */
static kiln_status run_gpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    kiln_status st = kiln__onnx_gpu_enter(m->gpu, err);
    if (st != KILN_OK)
        return st;
    kiln_onnx_run run;
    if ((st = kiln__onnx_begin_run(m, batch, &run, err)) != KILN_OK)
        return st;
    size_t nv = m->n_values;
    kiln_tensor *vals = run.vals;
    kiln_onnx_plan *p = run.p;
    kiln_err e;
    bool graph = p && m->graphs && !p->no_graph;
    /* staging: host inputs now, host outputs after the run (stream order keeps them apart) */
    size_t in_bytes = 0, out_bytes = 0, staged = 0;
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        if (batch->inputs[k].byte_size <= KILN_ONNX_STAGE_MAX)
            in_bytes += (batch->inputs[k].byte_size + 63) & ~(size_t)63;
    char *staging = NULL;
    st = kiln__onnx_gpu_staging(m->gpu, in_bytes, (void **)&staging, err);
    kiln__onnx_set_consts(m, p, vals);
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
            kiln__onnx_set_consts(m, p, vals);
            staged = 0;
            for (uint32_t k = 0; st == KILN_OK && k < batch->n_inputs; k++)
                st = input_to_device(m, k, &batch->inputs[k], true, staging, &staged,
                                     &vals[m->in_value[k]], err);
        }
    }
    m->host_copied = false;
    if (st == KILN_OK && !replay)
        st = kiln__onnx_run_steps(m, batch, p, vals, run.tracing ? &run.trace : NULL, true, err);
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
        st = kiln__onnx_slot_result(m, batch, &batch->outputs[o], outs[o], err);
        if (st == KILN_OK && kiln__onnx_on_device(outs[o]) &&
            !kiln__onnx_on_device(&batch->outputs[o].result))
            out_bytes += (outs[o]->byte_size + 63) & ~(size_t)63;
    }
    if (st == KILN_OK)
        st = kiln__onnx_gpu_staging(m->gpu, out_bytes, (void **)&staging, err);
    staged = 0;
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        kiln_tensor *r = &batch->outputs[o].result;
        if (kiln__onnx_on_device(r) || kiln__onnx_on_device(outs[o])) {
            bool stage = !kiln__onnx_on_device(r);
            st = kiln__onnx_gpu_copy(m->gpu, stage ? staging + staged : r->data, outs[o]->data,
                                     outs[o]->byte_size, err);
            staged += stage ? (outs[o]->byte_size + 63) & ~(size_t)63 : 0;
        } else if (outs[o]->byte_size) {
            memcpy(r->data, outs[o]->data, outs[o]->byte_size);
        }
    }
    kiln_status sync = kiln__onnx_gpu_sync(m->gpu, st == KILN_OK ? err : &e);
    st = st == KILN_OK ? sync : st;
    staged = 0;
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        kiln_tensor *r = &batch->outputs[o].result;
        if (!kiln__onnx_on_device(r) && kiln__onnx_on_device(outs[o])) {
            memcpy(r->data, staging + staged, outs[o]->byte_size);
            staged += (outs[o]->byte_size + 63) & ~(size_t)63;
        }
    }
    kiln_free(outs);
    for (uint32_t o = 0; conv && o < batch->n_outputs; o++)
        kiln_tensor_fini(&conv[o]);
    kiln_free(conv);
    return kiln__onnx_end_run(m, batch, st, &run);
}
