/*
 * backends/onnx/cpu_shape.c: CPU kernels that move or re-view data (Identity, Dropout in
 * inference, Reshape, Flatten, Transpose), and the kernel registry.
 */
#include <string.h>

#include "backends/onnx/cpu_kernels.h"

kiln_status kiln__onnx_view(const kiln_onnx_call *c, const kiln_tensor *x, const kiln_shape *shape,
                            kiln_tensor *out, kiln_err *err)
{
    size_t off = (size_t)((const char *)x->data - (const char *)kiln_storage_data(x->storage));
    kiln_err e;
    if (kiln_tensor_view(x->storage, off, x->dtype, shape, x->byte_size, out, &e) != KILN_OK)
        return kiln__onnx_bad_node(c, err, "%s", e.msg);
    return KILN_OK;
}

static kiln_status k_identity(const kiln_onnx_call *c, kiln_err *err)
{
    if (!c->n_in || !c->in[0])
        return kiln__onnx_bad_node(c, err, "input 0 is required");
    kiln_tensor_share(c->in[0], &c->out[0]);
    return KILN_OK;
}

/* Dropout in inference: the data unchanged, and a mask of all true when asked for. Training
 * mode (input 2 true) is refused: Kiln does not train. */
static kiln_status k_dropout(const kiln_onnx_call *c, kiln_err *err)
{
    if (c->n_in > 2 && c->in[2]) {
        const kiln_tensor *t = c->in[2];
        if (t->dtype != KILN_DTYPE_BOOL || t->byte_size != 1)
            return kiln__onnx_bad_node(c, err, "training_mode must be a BOOL scalar");
        if (*(const uint8_t *)t->data)
            return kiln__onnx_bad_node(c, err, "training_mode is true; Kiln runs inference only");
    }
    kiln_status st = k_identity(c, err);
    if (st != KILN_OK || c->n_out < 2 || c->node->outputs[1] < 0)
        return st;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_BOOL, &c->in[0]->shape, &c->out[1], err)) != KILN_OK)
        return st;
    memset(c->out[1].data, 1, c->out[1].byte_size);
    return KILN_OK;
}

static kiln_status k_reshape(const kiln_onnx_call *c, kiln_err *err)
{
    if (c->n_in < 2 || !c->in[0] || !c->in[1])
        return kiln__onnx_bad_node(c, err, "Reshape needs data and shape");
    const kiln_tensor *x = c->in[0], *s = c->in[1];
    if (s->dtype != KILN_DTYPE_INT64 || s->shape.rank != 1)
        return kiln__onnx_bad_node(c, err, "shape must be a 1-D INT64 tensor");
    size_t r = (size_t)s->shape.dims[0];
    if (r > KILN_MAX_RANK)
        return kiln__onnx_bad_node(c, err, "rank %zu is over %d", r, KILN_MAX_RANK);
    bool allowzero = kiln__onnx_attr_int(c, "allowzero", 0) != 0;
    const int64_t *want = s->data;
    kiln_shape out = {.rank = (int)r};
    int infer = -1;
    uint64_t known = 1, numel;
    if (kiln_shape_numel(&x->shape, &numel, err) != KILN_OK)
        return KILN_INVALID_ARGUMENT;
    for (size_t d = 0; d < r; d++) {
        int64_t v = want[d];
        if (v == 0 && !allowzero) {
            if ((int)d >= x->shape.rank)
                return kiln__onnx_bad_node(c, err, "shape[%zu] is 0 but the input has rank %d", d,
                                           x->shape.rank);
            v = x->shape.dims[d];
        }
        if (v == -1) {
            if (infer >= 0)
                return kiln__onnx_bad_node(c, err, "shape has more than one -1");
            infer = (int)d;
            continue;
        }
        if (v < 0)
            return kiln__onnx_bad_node(c, err, "shape[%zu] is %lld", d, (long long)v);
        out.dims[d] = v;
        if (__builtin_mul_overflow(known, (uint64_t)v, &known))
            return kiln__onnx_bad_node(c, err, "shape's element count overflows");
    }
    if (infer >= 0) {
        if (!known || numel % known)
            return kiln__onnx_bad_node(c, err, "cannot infer the -1 dim: %llu elements",
                                       (unsigned long long)numel);
        out.dims[infer] = (int64_t)(numel / known);
        known = numel;
    }
    if (known != numel)
        return kiln__onnx_bad_node(c, err, "shape holds %llu elements, the input %llu",
                                   (unsigned long long)known, (unsigned long long)numel);
    return kiln__onnx_view(c, x, &out, &c->out[0], err);
}

static kiln_status k_flatten(const kiln_onnx_call *c, kiln_err *err)
{
    if (!c->n_in || !c->in[0])
        return kiln__onnx_bad_node(c, err, "input 0 is required");
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    int64_t axis = kiln__onnx_attr_int(c, "axis", 1);
    if (axis < -r || axis > r)
        return kiln__onnx_bad_node(c, err, "axis %lld is outside -%d..%d", (long long)axis, r, r);
    if (axis < 0)
        axis += r;
    kiln_shape out = {.rank = 2, .dims = {1, 1}};
    for (int d = 0; d < r; d++)
        out.dims[d < axis ? 0 : 1] *= x->shape.dims[d];
    return kiln__onnx_view(c, x, &out, &c->out[0], err);
}

static kiln_status k_transpose(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_shape out;
    int64_t step[KILN_MAX_RANK]; /* input offset change per output index step, in elements */
    kiln_status st = kiln__onnx_transpose_prep(c, &out, step, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    size_t es = kiln_dtype_size(x->dtype);
    if ((st = kiln__onnx_alloc(c, x->dtype, &out, &c->out[0], err)) != KILN_OK)
        return st;
    size_t n = x->byte_size / es;
    const char *src = x->data;
    char *dst = c->out[0].data;
    int64_t idx[KILN_MAX_RANK] = {0}, off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(dst + i * es, src + (size_t)off * es, es);
        kiln__onnx_step(r, out.dims, idx, step, &off, NULL, NULL);
    }
    return KILN_OK;
}

const kiln_onnx_kernel kiln__onnx_cpu_shape[] = {
    {"Identity", KILN_DEVICE_CPU, k_identity, false, 0},
    {"Dropout", KILN_DEVICE_CPU, k_dropout, false, 0},
    {"Reshape", KILN_DEVICE_CPU, k_reshape, false, 0},
    {"Flatten", KILN_DEVICE_CPU, k_flatten, false, 0},
    {"Transpose", KILN_DEVICE_CPU, k_transpose, false, 0},
    /* views: the same functions serve device tensors (gpu.cu has the CUDA kernels) */
    {"Identity", KILN_DEVICE_CUDA, k_identity, false, 0},
    {"Reshape", KILN_DEVICE_CUDA, k_reshape, false, 1u << 1},
    {"Flatten", KILN_DEVICE_CUDA, k_flatten, false, 0},
    {NULL, KILN_DEVICE_CPU, NULL, false, 0},
};

/* ---------------------------------------------------------------- registry */

static const kiln_onnx_kernel *const tables[] = {kiln__onnx_cpu_math, kiln__onnx_cpu_shape,
                                                 kiln__onnx_cpu_nn, kiln__onnx_cpu_tensor,
                                                 kiln__onnx_cuda};

const kiln_onnx_kernel *kiln__onnx_kernel_find(const char *op, kiln_device_kind device)
{
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (const kiln_onnx_kernel *k = tables[t]; k->op; k++)
            if (k->device == device && strcmp(k->op, op) == 0)
                return k;
    return NULL;
}

char *kiln__onnx_kernel_ops(kiln_device_kind device, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (const kiln_onnx_kernel *k = tables[t]; k->op && len < cap; k++)
            if (k->device == device)
                len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", k->op);
    return buf;
}
