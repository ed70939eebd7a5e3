/*
 * backends/onnx/op_shapes.c: what the CPU kernels (cpu_*.c) and the CUDA kernels (gpu.cu) of
 * an op share: the checks of the inputs and attributes, with errors naming the node, and the
 * output's shape and sizes. A kernel calls its op's prep, allocates, then computes on its
 * device. The declarations and the structs are in cpu_kernels.h.
 */
#include <math.h>
#include <string.h>

#include "backends/onnx/cpu_kernels.h"

/* ---------------------------------------------------------------- Conv and the pools */

kiln_status kiln__onnx_conv_prep(const kiln_onnx_call *c, kiln_onnx_conv *p, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st == KILN_OK)
        st = kiln__onnx_want_float(c, 1, err);
    bool has_b = c->n_in > 2 && c->in[2];
    if (st == KILN_OK && has_b)
        st = kiln__onnx_want_float(c, 2, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0], *wt = c->in[1];
    if (wt->shape.rank != 4)
        return kiln__onnx_bad_node(c, err, "weights must be 4-D [M,C/group,kH,kW]");
    p->x = x;
    p->w = wt;
    p->b = has_b ? c->in[2] : NULL;
    p->group = kiln__onnx_attr_int(c, "group", 1);
    p->N = x->shape.rank == 4 ? x->shape.dims[0] : 0;
    p->C = x->shape.rank == 4 ? x->shape.dims[1] : 0;
    p->M = wt->shape.dims[0];
    p->Cg = wt->shape.dims[1];
    if ((st = kiln__onnx_window(c, x, wt->shape.dims + 2, false, &p->win, err)) != KILN_OK)
        return st;
    int64_t group = p->group, C = p->C, M = p->M, Cg = p->Cg;
    if (group < 1 || C % group || M % group || Cg != C / group)
        return kiln__onnx_bad_node(c, err,
                                   "channels do not fit: input %lld, weights [%lld,%lld], "
                                   "group %lld",
                                   (long long)C, (long long)M, (long long)Cg, (long long)group);
    if (has_b && (c->in[2]->shape.rank != 1 || c->in[2]->shape.dims[0] != M))
        return kiln__onnx_bad_node(c, err, "bias must be [%lld]", (long long)M);
    p->out = (kiln_shape){.rank = 4, .dims = {p->N, M, p->win.out[0], p->win.out[1]}};
    return KILN_OK;
}

kiln_status kiln__onnx_pool_prep(const kiln_onnx_call *c, bool max, kiln_onnx_pool *p,
                                 kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    if (c->n_out > 1 && c->node->outputs[1] >= 0)
        return kiln__onnx_bad_node(c, err, "the Indices output is not supported");
    int64_t k[2];
    if (!kiln__onnx_attr_ints(c, "kernel_shape", k, 2, 0) || !k[0])
        return kiln__onnx_bad_node(c, err, "kernel_shape must have 2 values");
    const kiln_tensor *x = c->in[0];
    bool ceil_mode = kiln__onnx_attr_int(c, "ceil_mode", 0) != 0;
    if ((st = kiln__onnx_window(c, x, k, ceil_mode, &p->win, err)) != KILN_OK)
        return st;
    if (!max && (p->win.d[0] != 1 || p->win.d[1] != 1))
        return kiln__onnx_bad_node(c, err, "AveragePool dilations are not supported");
    p->include_pad = kiln__onnx_attr_int(c, "count_include_pad", 0) != 0;
    p->out = (kiln_shape){
        .rank = 4, .dims = {x->shape.dims[0], x->shape.dims[1], p->win.out[0], p->win.out[1]}};
    return KILN_OK;
}

kiln_status kiln__onnx_global_pool_prep(const kiln_onnx_call *c, kiln_shape *out, size_t *rows,
                                        size_t *inner, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if (x->shape.rank < 3)
        return kiln__onnx_bad_node(c, err, "input must be [N,C,spatial...]");
    *out = x->shape;
    *inner = 1;
    for (int d = 2; d < out->rank; d++) {
        *inner *= (size_t)out->dims[d];
        out->dims[d] = 1;
    }
    *rows = (size_t)(out->dims[0] * out->dims[1]);
    return KILN_OK;
}

/* ---------------------------------------------------------------- MatMul, Gemm */

kiln_status kiln__onnx_matmul_prep(const kiln_onnx_call *c, kiln_onnx_matmul *p, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st == KILN_OK)
        st = kiln__onnx_want_float(c, 1, err);
    if (st != KILN_OK)
        return st;
    p->bias = c->n_in > 2 ? c->in[2] : NULL;
    if (p->bias && (st = kiln__onnx_want_float(c, 2, err)) != KILN_OK)
        return st;
    kiln_shape a = c->in[0]->shape, b = c->in[1]->shape;
    if (a.rank == 0 || b.rank == 0)
        return kiln__onnx_bad_node(c, err, "MatMul needs inputs of rank 1 or more");
    bool a1 = a.rank == 1, b1 = b.rank == 1;
    if (a1) { /* [K] -> [1,K] */
        a.dims[1] = a.dims[0], a.dims[0] = 1, a.rank = 2;
    }
    if (b1) { /* [K] -> [K,1] */
        b.dims[1] = 1, b.rank = 2;
    }
    p->M = a.dims[a.rank - 2], p->K = a.dims[a.rank - 1], p->N = b.dims[b.rank - 1];
    if (b.dims[b.rank - 2] != p->K)
        return kiln__onnx_bad_node(c, err, "inner dims differ: %lld (A) and %lld (B)",
                                   (long long)p->K, (long long)b.dims[b.rank - 2]);
    kiln_shape ba = {.rank = a.rank - 2}, bb = {.rank = b.rank - 2};
    memcpy(ba.dims, a.dims, sizeof(int64_t) * (size_t)ba.rank);
    memcpy(bb.dims, b.dims, sizeof(int64_t) * (size_t)bb.rank);
    if ((st = kiln__onnx_broadcast(c, &ba, &bb, &p->batch, p->sa, p->sb, err)) != KILN_OK)
        return st;
    if ((st = kiln__onnx_blas_dims(c, p->M, p->N, p->K, err)) != KILN_OK)
        return st;
    p->out = p->batch;
    if (p->out.rank + 2 > KILN_MAX_RANK)
        return kiln__onnx_bad_node(c, err, "rank over %d", KILN_MAX_RANK);
    if (!a1)
        p->out.dims[p->out.rank++] = p->M;
    if (!b1)
        p->out.dims[p->out.rank++] = p->N;
    p->nbatch = p->na = p->nb = 1;
    for (int d = 0; d < p->batch.rank; d++)
        p->nbatch *= p->batch.dims[d];
    for (int d = 0; d < ba.rank; d++)
        p->na *= ba.dims[d];
    for (int d = 0; d < bb.rank; d++)
        p->nb *= bb.dims[d];
    if (p->bias && (b1 || (int64_t)(p->bias->byte_size / kiln_dtype_size(p->bias->dtype)) != p->N))
        return kiln__onnx_bad_node(c, err, "the fused bias has %zu elements, the output rows %lld",
                                   p->bias->byte_size / kiln_dtype_size(p->bias->dtype),
                                   (long long)p->N);
    return KILN_OK;
}

kiln_status kiln__onnx_gemm_prep(const kiln_onnx_call *c, kiln_onnx_gemm *p, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st == KILN_OK)
        st = kiln__onnx_want_float(c, 1, err);
    p->has_c = c->n_in > 2 && c->in[2];
    if (st == KILN_OK && p->has_c)
        st = kiln__onnx_want_float(c, 2, err);
    if (st != KILN_OK)
        return st;
    const kiln_shape *a = &c->in[0]->shape, *b = &c->in[1]->shape;
    if (a->rank != 2 || b->rank != 2)
        return kiln__onnx_bad_node(c, err, "A and B must be 2-D (got rank %d and %d)", a->rank,
                                   b->rank);
    p->ta = kiln__onnx_attr_int(c, "transA", 0), p->tb = kiln__onnx_attr_int(c, "transB", 0);
    p->alpha = kiln__onnx_attr_float(c, "alpha", 1.f);
    p->beta = kiln__onnx_attr_float(c, "beta", 1.f);
    p->M = p->ta ? a->dims[1] : a->dims[0], p->K = p->ta ? a->dims[0] : a->dims[1];
    int64_t KB = p->tb ? b->dims[1] : b->dims[0];
    p->N = p->tb ? b->dims[0] : b->dims[1];
    p->lda = a->dims[1], p->ldb = b->dims[1];
    if (p->K != KB)
        return kiln__onnx_bad_node(c, err, "inner dims differ: %lld (A) and %lld (B)",
                                   (long long)p->K, (long long)KB);
    if ((st = kiln__onnx_blas_dims(c, p->M, p->N, p->K, err)) != KILN_OK ||
        (st = kiln__onnx_blas_dims(c, a->dims[1], b->dims[1], 0, err)) != KILN_OK)
        return st;
    p->out = (kiln_shape){.rank = 2, .dims = {p->M, p->N}};
    kiln_shape bc;
    int64_t sy[KILN_MAX_RANK];
    p->sc[0] = p->sc[1] = 0;
    if (p->has_c &&
        ((st = kiln__onnx_broadcast(c, &p->out, &c->in[2]->shape, &bc, sy, p->sc, err)) != KILN_OK))
        return st;
    if (p->has_c && !kiln_shape_equal(&bc, &p->out))
        return kiln__onnx_bad_node(c, err, "C does not broadcast to [%lld,%lld]", (long long)p->M,
                                   (long long)p->N);
    return KILN_OK;
}

/* ---------------------------------------------------------------- normalization */

kiln_status kiln__onnx_axis(const kiln_onnx_call *c, int64_t *a, int r, kiln_err *err)
{
    if (*a < -r || *a >= r)
        return kiln__onnx_bad_node(c, err, "axis %lld is outside rank %d", (long long)*a, r);
    if (*a < 0)
        *a += r;
    return KILN_OK;
}

kiln_status kiln__onnx_softmax_prep(const kiln_onnx_call *c, size_t *outer, size_t *len,
                                    size_t *inner, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    int64_t axis = kiln__onnx_attr_int(c, "axis", -1);
    if (axis < -r || axis >= r || r == 0)
        return kiln__onnx_bad_node(c, err, "axis %lld is outside the input's rank %d",
                                   (long long)axis, r);
    if (axis < 0)
        axis += r;
    *outer = 1, *len = (size_t)x->shape.dims[axis], *inner = 1;
    for (int d = 0; d < axis; d++)
        *outer *= (size_t)x->shape.dims[d];
    for (int d = (int)axis + 1; d < r; d++)
        *inner *= (size_t)x->shape.dims[d];
    return KILN_OK;
}

kiln_status kiln__onnx_layer_norm_prep(const kiln_onnx_call *c, kiln_onnx_norm *p, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st == KILN_OK)
        st = kiln__onnx_want_float(c, 1, err);
    bool has_b = c->n_in > 2 && c->in[2];
    if (st == KILN_OK && has_b)
        st = kiln__onnx_want_float(c, 2, err);
    if (st != KILN_OK)
        return st;
    for (size_t k = 1; k < c->n_out; k++)
        if (c->node->outputs[k] >= 0)
            return kiln__onnx_bad_node(c, err, "the Mean and InvStdDev outputs are not supported");
    const kiln_tensor *x = c->in[0];
    int64_t axis = kiln__onnx_attr_int(c, "axis", -1);
    if ((st = kiln__onnx_axis(c, &axis, x->shape.rank, err)) != KILN_OK)
        return st;
    p->inner = 1;
    for (int d = (int)axis; d < x->shape.rank; d++)
        p->inner *= (size_t)x->shape.dims[d];
    if (c->in[1]->byte_size != p->inner * kiln_dtype_size(c->in[1]->dtype) ||
        (has_b && c->in[2]->byte_size != p->inner * kiln_dtype_size(c->in[2]->dtype)))
        return kiln__onnx_bad_node(c, err, "scale and bias must hold %zu values", p->inner);
    p->eps = kiln__onnx_attr_float(c, "epsilon", 1e-5f);
    p->rows = p->inner ? x->byte_size / kiln_dtype_size(x->dtype) / p->inner : 0;
    p->scale = c->in[1];
    p->bias = has_b ? c->in[2] : NULL;
    return KILN_OK;
}

kiln_status kiln__onnx_batchnorm_prep(const kiln_onnx_call *c, kiln_onnx_norm *p, kiln_err *err)
{
    kiln_status st = KILN_OK;
    for (size_t i = 0; st == KILN_OK && i < 5; i++)
        st = kiln__onnx_want_float(c, i, err);
    if (st != KILN_OK)
        return st;
    for (size_t k = 1; k < c->n_out; k++)
        if (c->node->outputs[k] >= 0)
            return kiln__onnx_bad_node(c, err,
                                       "training outputs are not supported (inference "
                                       "only)");
    const kiln_tensor *x = c->in[0];
    if (x->shape.rank < 2)
        return kiln__onnx_bad_node(c, err, "input must be [N,C,...]");
    int64_t C = x->shape.dims[1];
    for (size_t i = 1; i < 5; i++)
        if (c->in[i]->shape.rank != 1 || c->in[i]->shape.dims[0] != C)
            return kiln__onnx_bad_node(c, err, "input %zu must be [%lld]", i, (long long)C);
    p->eps = kiln__onnx_attr_float(c, "epsilon", 1e-5f);
    p->channels = (size_t)C;
    p->inner = 1;
    for (int d = 2; d < x->shape.rank; d++)
        p->inner *= (size_t)x->shape.dims[d];
    p->rows = (size_t)x->shape.dims[0];
    p->scale = c->in[1];
    p->bias = c->in[2];
    return KILN_OK;
}

kiln_status kiln__onnx_reduce_prep(const kiln_onnx_call *c, kiln_onnx_reduce *p, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    int64_t axes[KILN_MAX_RANK];
    size_t n = 0;
    const kiln_onnx_attr *aa = kiln_onnx_node_attr(c->node, "axes");
    if (c->n_in > 1 && c->in[1]) {
        const kiln_tensor *t = c->in[1];
        if (t->dtype != KILN_DTYPE_INT64 || t->shape.rank > 1)
            return kiln__onnx_bad_node(c, err, "input 1 must be a 1-D INT64 tensor");
        n = t->byte_size / sizeof(int64_t);
        if (n > KILN_MAX_RANK)
            return kiln__onnx_bad_node(c, err, "input 1 has %zu values, over %d", n, KILN_MAX_RANK);
        memcpy(axes, t->data, n * sizeof(int64_t));
    } else if (aa && aa->type == KILN_ONNX_ATTR_INTS && aa->n <= KILN_MAX_RANK) {
        n = aa->n;
        memcpy(axes, aa->ints, n * sizeof(int64_t));
    }
    memset(p->red, 0, sizeof(p->red));
    p->noop = !n && kiln__onnx_attr_int(c, "noop_with_empty_axes", 0);
    for (size_t i = 0; i < n; i++) {
        if ((st = kiln__onnx_axis(c, &axes[i], r, err)) != KILN_OK)
            return st;
        p->red[axes[i]] = true;
    }
    for (int d = 0; !n && d < r; d++)
        p->red[d] = true;
    bool keep = kiln__onnx_attr_int(c, "keepdims", 1) != 0;
    p->out = (kiln_shape){.rank = 0};
    p->full = x->shape;
    for (int d = 0; d < r; d++) {
        p->full.dims[d] = p->red[d] ? 1 : x->shape.dims[d];
        if (keep || !p->red[d])
            p->out.dims[p->out.rank++] = p->full.dims[d];
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Clip, data movement */

kiln_status kiln__onnx_clip_prep(const kiln_onnx_call *c, float *lo, float *hi, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    *lo = -INFINITY, *hi = INFINITY;
    for (size_t i = 1; i < 3 && i < c->n_in; i++) {
        if (!c->in[i])
            continue;
        if ((st = kiln__onnx_want_float(c, i, err)) != KILN_OK)
            return st;
        if (c->in[i]->byte_size != sizeof(float))
            return kiln__onnx_bad_node(c, err, "input %zu (min/max) must be a scalar", i);
        *(i == 1 ? lo : hi) = *(const float *)c->in[i]->data;
    }
    return KILN_OK;
}

kiln_status kiln__onnx_concat_prep(const kiln_onnx_call *c, kiln_onnx_concat *p, kiln_err *err)
{
    if (!c->n_in || !c->in[0])
        return kiln__onnx_bad_node(c, err, "Concat needs inputs");
    const kiln_tensor *x0 = c->in[0];
    int r = x0->shape.rank;
    int64_t axis = kiln__onnx_attr_int(c, "axis", 0);
    if (r == 0 || axis < -r || axis >= r)
        return kiln__onnx_bad_node(c, err, "axis %lld is outside the inputs' rank %d",
                                   (long long)axis, r);
    if (axis < 0)
        axis += r;
    size_t es = kiln_dtype_size(x0->dtype);
    if (!es)
        return kiln__onnx_bad_node(c, err, "%s tensors cannot be concatenated",
                                   kiln_dtype_name(x0->dtype));
    p->out = x0->shape;
    p->out.dims[axis] = 0;
    for (size_t i = 0; i < c->n_in; i++) {
        const kiln_tensor *t = c->in[i];
        if (!t || t->dtype != x0->dtype || t->shape.rank != r)
            return kiln__onnx_bad_node(c, err, "input %zu differs in presence, dtype or rank", i);
        for (int d = 0; d < r; d++)
            if (d != axis && t->shape.dims[d] != x0->shape.dims[d])
                return kiln__onnx_bad_node(c, err, "input %zu: dim %d is %lld, input 0 has %lld", i,
                                           d, (long long)t->shape.dims[d],
                                           (long long)x0->shape.dims[d]);
        p->out.dims[axis] += t->shape.dims[axis];
    }
    p->axis = (int)axis;
    p->outer = 1, p->inner = es;
    for (int d = 0; d < axis; d++)
        p->outer *= (size_t)p->out.dims[d];
    for (int d = (int)axis + 1; d < r; d++)
        p->inner *= (size_t)p->out.dims[d];
    return KILN_OK;
}

kiln_status kiln__onnx_transpose_prep(const kiln_onnx_call *c, kiln_shape *out, int64_t *step,
                                      kiln_err *err)
{
    if (!c->n_in || !c->in[0])
        return kiln__onnx_bad_node(c, err, "input 0 is required");
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    if (!kiln_dtype_size(x->dtype))
        return kiln__onnx_bad_node(c, err, "%s tensors cannot be transposed",
                                   kiln_dtype_name(x->dtype));
    const kiln_onnx_attr *pa = kiln_onnx_node_attr(c->node, "perm");
    if (pa && (pa->type != KILN_ONNX_ATTR_INTS || (int)pa->n != r))
        return kiln__onnx_bad_node(c, err, "perm is not a permutation of 0..%d", r - 1);
    int64_t in_stride[KILN_MAX_RANK], s = 1;
    for (int d = r - 1; d >= 0; d--) {
        in_stride[d] = s;
        s *= x->shape.dims[d];
    }
    bool seen[KILN_MAX_RANK] = {false};
    *out = (kiln_shape){.rank = r};
    for (int d = 0; d < r; d++) {
        int64_t v = pa ? pa->ints[d] : r - 1 - d;
        if (v < 0 || v >= r || seen[v])
            return kiln__onnx_bad_node(c, err, "perm is not a permutation of 0..%d", r - 1);
        seen[v] = true;
        out->dims[d] = x->shape.dims[v];
        step[d] = in_stride[v];
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Slice, Expand */

kiln_status kiln__onnx_int_list(const kiln_onnx_call *c, size_t i, int64_t *out, size_t cap,
                                size_t *n, kiln_err *err)
{
    const kiln_tensor *t = c->in[i];
    if (t->dtype != KILN_DTYPE_INT64 || t->shape.rank > 1)
        return kiln__onnx_bad_node(c, err, "input %zu must be a 1-D INT64 tensor", i);
    *n = t->byte_size / sizeof(int64_t);
    if (*n > cap)
        return kiln__onnx_bad_node(c, err, "input %zu has %zu values, over %zu", i, *n, cap);
    memcpy(out, t->data, *n * sizeof(int64_t));
    return KILN_OK;
}

kiln_status kiln__onnx_slice_prep(const kiln_onnx_call *c, kiln_shape *out, int64_t *start,
                                  int64_t *step, kiln_err *err)
{
    for (size_t i = 0; i < 3; i++)
        if (i >= c->n_in || !c->in[i])
            return kiln__onnx_bad_node(c, err, "input %zu is required", i);
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    if (!kiln_dtype_size(x->dtype) || r == 0)
        return kiln__onnx_bad_node(c, err, "data must have a fixed-size dtype and rank >= 1");
    int64_t starts[KILN_MAX_RANK], ends[KILN_MAX_RANK], axes[KILN_MAX_RANK], steps[KILN_MAX_RANK];
    size_t n, ne, na = 0, ns = 0;
    kiln_status st;
    if ((st = kiln__onnx_int_list(c, 1, starts, KILN_MAX_RANK, &n, err)) != KILN_OK ||
        (st = kiln__onnx_int_list(c, 2, ends, KILN_MAX_RANK, &ne, err)) != KILN_OK ||
        (c->n_in > 3 && c->in[3] &&
         (st = kiln__onnx_int_list(c, 3, axes, KILN_MAX_RANK, &na, err)) != KILN_OK) ||
        (c->n_in > 4 && c->in[4] &&
         (st = kiln__onnx_int_list(c, 4, steps, KILN_MAX_RANK, &ns, err)) != KILN_OK))
        return st;
    if (ne != n || (na && na != n) || (ns && ns != n))
        return kiln__onnx_bad_node(c, err, "starts, ends, axes and steps differ in length");
    *out = x->shape;
    bool seen[KILN_MAX_RANK] = {false};
    for (int d = 0; d < r; d++)
        start[d] = 0, step[d] = 1;
    for (size_t i = 0; i < n; i++) {
        int64_t a = na ? axes[i] : (int64_t)i;
        if ((st = kiln__onnx_axis(c, &a, r, err)) != KILN_OK)
            return st;
        if (seen[a])
            return kiln__onnx_bad_node(c, err, "axis %lld is repeated", (long long)a);
        seen[a] = true;
        int64_t len = x->shape.dims[a], s = ns ? steps[i] : 1, lo = starts[i], hi = ends[i];
        if (s == 0)
            return kiln__onnx_bad_node(c, err, "steps[%zu] is 0", i);
        lo = lo < 0 ? lo + len : lo;
        hi = hi < 0 ? hi + len : hi;
        if (s > 0) {
            lo = lo < 0 ? 0 : (lo > len ? len : lo);
            hi = hi < 0 ? 0 : (hi > len ? len : hi);
            out->dims[a] = hi > lo ? (hi - lo + s - 1) / s : 0;
        } else {
            lo = lo < 0 ? -1 : (lo > len - 1 ? len - 1 : lo);
            hi = hi < -1 ? -1 : (hi > len - 1 ? len - 1 : hi);
            out->dims[a] = lo > hi ? (lo - hi - s - 1) / -s : 0;
        }
        start[a] = lo;
        step[a] = s;
    }
    return KILN_OK;
}

kiln_status kiln__onnx_expand_prep(const kiln_onnx_call *c, kiln_shape *out, int64_t *sx,
                                   kiln_err *err)
{
    for (size_t i = 0; i < 2; i++)
        if (i >= c->n_in || !c->in[i])
            return kiln__onnx_bad_node(c, err, "input %zu is required", i);
    int64_t dims[KILN_MAX_RANK];
    size_t n = 0;
    kiln_status st = kiln__onnx_int_list(c, 1, dims, KILN_MAX_RANK, &n, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if (!kiln_dtype_size(x->dtype))
        return kiln__onnx_bad_node(c, err, "data must have a fixed-size dtype");
    kiln_shape want = {.rank = (int)n};
    memcpy(want.dims, dims, n * sizeof(int64_t));
    int64_t sw[KILN_MAX_RANK];
    return kiln__onnx_broadcast(c, &x->shape, &want, out, sx, sw, err);
}
