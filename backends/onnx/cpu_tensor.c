/*
 * backends/onnx/cpu_tensor.c: CPU kernels for the tensor plumbing exported models are full of
 * (Constant, Shape, Gather, Unsqueeze, Squeeze, Slice, Split, Expand, Cast, Equal, Where) and
 * for reductions and normalization (ReduceMean, ReduceSum, LayerNormalization). Shape
 * subgraphs (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) run on INT64 tensors at run
 * time; there is no constant folding yet.
 */
#include <math.h>
#include <string.h>

#include "backends/onnx/cpu_kernels.h"
#include "common/alloc.h"

static kiln_status need(const kiln_onnx_call *c, size_t i, kiln_err *err)
{
    if (i >= c->n_in || !c->in[i])
        return kiln__onnx_bad_node(c, err, "input %zu is required", i);
    return KILN_OK;
}

/* ---------------------------------------------------------------- Constant, Shape, Cast */

static kiln_status k_constant(const kiln_onnx_call *c, kiln_err *err)
{
    const kiln_onnx_attr *v = kiln_onnx_node_attr(c->node, "value");
    if (!v || v->type != KILN_ONNX_ATTR_TENSOR || !v->t.storage)
        return kiln__onnx_bad_node(c, err, "only the 'value' (tensor) form is supported");
    kiln_tensor_share(&v->t, &c->out[0]);
    return KILN_OK;
}

static kiln_status k_shape(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_shape *s = &c->in[0]->shape;
    int64_t start = kiln__onnx_attr_int(c, "start", 0),
            end = kiln__onnx_attr_int(c, "end", s->rank);
    start = start < 0 ? start + s->rank : start;
    end = end < 0 ? end + s->rank : end;
    start = start < 0 ? 0 : (start > s->rank ? s->rank : start);
    end = end < start ? start : (end > s->rank ? s->rank : end);
    kiln_shape os = {.rank = 1, .dims = {end - start}};
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_INT64, &os, &c->out[0], err)) != KILN_OK)
        return st;
    if (end > start)
        memcpy(c->out[0].data, s->dims + start, (size_t)(end - start) * sizeof(int64_t));
    return KILN_OK;
}

/* Cast between FP32, FP64, INT32, INT64 and BOOL. */
static double load(kiln_dtype dt, const void *p, size_t i)
{
    switch (dt) {
    case KILN_DTYPE_FP32:
        return ((const float *)p)[i];
    case KILN_DTYPE_FP64:
        return ((const double *)p)[i];
    case KILN_DTYPE_INT32:
        return ((const int32_t *)p)[i];
    case KILN_DTYPE_INT64:
        return (double)((const int64_t *)p)[i];
    default:
        return ((const uint8_t *)p)[i] != 0;
    }
}

static kiln_status k_cast(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    kiln_dtype to = kiln_onnx_dtype((int32_t)kiln__onnx_attr_int(c, "to", 0));
    bool ok_from = x->dtype == KILN_DTYPE_FP32 || x->dtype == KILN_DTYPE_FP64 ||
                   x->dtype == KILN_DTYPE_INT32 || x->dtype == KILN_DTYPE_INT64 ||
                   x->dtype == KILN_DTYPE_BOOL;
    bool ok_to = to == KILN_DTYPE_FP32 || to == KILN_DTYPE_FP64 || to == KILN_DTYPE_INT32 ||
                 to == KILN_DTYPE_INT64 || to == KILN_DTYPE_BOOL;
    if (!ok_from || !ok_to)
        return kiln__onnx_bad_node(c, err, "casts %s -> %s are not supported",
                                   kiln_dtype_name(x->dtype), kiln_dtype_name(to));
    if (x->dtype == to && x->dtype == KILN_DTYPE_INT64) { /* exact, no double round trip */
        kiln_tensor_share(x, &c->out[0]);
        return KILN_OK;
    }
    if ((st = kiln__onnx_alloc(c, to, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    size_t n = kiln_dtype_size(x->dtype) ? x->byte_size / kiln_dtype_size(x->dtype) : 0;
    void *o = c->out[0].data;
    for (size_t i = 0; i < n; i++) {
        double v = load(x->dtype, x->data, i);
        switch (to) {
        case KILN_DTYPE_FP32:
            ((float *)o)[i] = (float)v;
            break;
        case KILN_DTYPE_FP64:
            ((double *)o)[i] = v;
            break;
        case KILN_DTYPE_INT32:
            ((int32_t *)o)[i] = isfinite(v) ? (int32_t)v : 0;
            break;
        case KILN_DTYPE_INT64:
            ((int64_t *)o)[i] = x->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)x->data)[i]
                                : isfinite(v)                ? (int64_t)v
                                                             : 0;
            break;
        default:
            ((uint8_t *)o)[i] = v != 0;
            break;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Gather */

static kiln_status k_gather(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st == KILN_OK)
        st = need(c, 1, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0], *ix = c->in[1];
    size_t es = kiln_dtype_size(x->dtype);
    if (!es || (ix->dtype != KILN_DTYPE_INT64 && ix->dtype != KILN_DTYPE_INT32))
        return kiln__onnx_bad_node(c, err,
                                   "data must have a fixed-size dtype and indices INT64 "
                                   "or INT32");
    int64_t axis = kiln__onnx_attr_int(c, "axis", 0);
    if ((st = kiln__onnx_axis(c, &axis, x->shape.rank, err)) != KILN_OK)
        return st;
    if (x->shape.rank - 1 + ix->shape.rank > KILN_MAX_RANK)
        return kiln__onnx_bad_node(c, err, "output rank over %d", KILN_MAX_RANK);
    kiln_shape os = {.rank = 0};
    for (int d = 0; d < axis; d++)
        os.dims[os.rank++] = x->shape.dims[d];
    for (int d = 0; d < ix->shape.rank; d++)
        os.dims[os.rank++] = ix->shape.dims[d];
    for (int d = (int)axis + 1; d < x->shape.rank; d++)
        os.dims[os.rank++] = x->shape.dims[d];
    if ((st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[0], err)) != KILN_OK)
        return st;
    size_t outer = 1, inner = es, n_idx = ix->byte_size / kiln_dtype_size(ix->dtype);
    int64_t len = x->shape.dims[axis];
    for (int d = 0; d < axis; d++)
        outer *= (size_t)x->shape.dims[d];
    for (int d = (int)axis + 1; d < x->shape.rank; d++)
        inner *= (size_t)x->shape.dims[d];
    char *dst = c->out[0].data;
    for (size_t o = 0; o < outer; o++)
        for (size_t k = 0; k < n_idx; k++) {
            int64_t i = ix->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)ix->data)[k]
                                                      : ((const int32_t *)ix->data)[k];
            if (i < -len || i >= len) {
                kiln_tensor_fini(&c->out[0]);
                return kiln__onnx_bad_node(c, err, "index %lld is outside -%lld..%lld",
                                           (long long)i, (long long)len, (long long)len - 1);
            }
            i = i < 0 ? i + len : i;
            memcpy(dst, (const char *)x->data + (o * (size_t)len + (size_t)i) * inner, inner);
            dst += inner;
        }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Unsqueeze, Squeeze */

static kiln_status k_unsqueeze(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st == KILN_OK)
        st = need(c, 1, err); /* opset 13: axes is an input */
    int64_t axes[KILN_MAX_RANK];
    size_t n = 0;
    if (st == KILN_OK)
        st = kiln__onnx_int_list(c, 1, axes, KILN_MAX_RANK, &n, err);
    if (st != KILN_OK)
        return st;
    const kiln_shape *s = &c->in[0]->shape;
    int r = s->rank + (int)n;
    if (r > KILN_MAX_RANK)
        return kiln__onnx_bad_node(c, err, "output rank %d is over %d", r, KILN_MAX_RANK);
    bool ins[KILN_MAX_RANK] = {false};
    for (size_t i = 0; i < n; i++) {
        if ((st = kiln__onnx_axis(c, &axes[i], r, err)) != KILN_OK)
            return st;
        if (ins[axes[i]])
            return kiln__onnx_bad_node(c, err, "axis %lld is repeated", (long long)axes[i]);
        ins[axes[i]] = true;
    }
    kiln_shape os = {.rank = r};
    for (int d = 0, k = 0; d < r; d++)
        os.dims[d] = ins[d] ? 1 : s->dims[k++];
    return kiln__onnx_view(c, c->in[0], &os, &c->out[0], err);
}

static kiln_status k_squeeze(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_shape *s = &c->in[0]->shape;
    bool drop[KILN_MAX_RANK] = {false};
    if (c->n_in > 1 && c->in[1]) {
        int64_t axes[KILN_MAX_RANK];
        size_t n;
        if ((st = kiln__onnx_int_list(c, 1, axes, KILN_MAX_RANK, &n, err)) != KILN_OK)
            return st;
        for (size_t i = 0; i < n; i++) {
            if ((st = kiln__onnx_axis(c, &axes[i], s->rank, err)) != KILN_OK)
                return st;
            if (s->dims[axes[i]] != 1)
                return kiln__onnx_bad_node(c, err, "dim %lld is %lld, not 1", (long long)axes[i],
                                           (long long)s->dims[axes[i]]);
            drop[axes[i]] = true;
        }
    } else {
        for (int d = 0; d < s->rank; d++)
            drop[d] = s->dims[d] == 1;
    }
    kiln_shape os = {.rank = 0};
    for (int d = 0; d < s->rank; d++)
        if (!drop[d])
            os.dims[os.rank++] = s->dims[d];
    return kiln__onnx_view(c, c->in[0], &os, &c->out[0], err);
}

/* ---------------------------------------------------------------- Slice, Split, Expand */

/* Copies the box of x starting at start[] with steps step[] and extents os into out. */
static void copy_box(const kiln_tensor *x, const int64_t *start, const int64_t *step,
                     const kiln_shape *os, void *out)
{
    size_t es = kiln_dtype_size(x->dtype);
    int r = x->shape.rank;
    int64_t stride[KILN_MAX_RANK], s = 1, off = 0, idx[KILN_MAX_RANK] = {0};
    int64_t move[KILN_MAX_RANK];
    for (int d = r - 1; d >= 0; d--) {
        stride[d] = s;
        s *= x->shape.dims[d];
    }
    for (int d = 0; d < r; d++) {
        off += start[d] * stride[d];
        move[d] = step[d] * stride[d];
    }
    uint64_t n = 1;
    for (int d = 0; d < r; d++)
        n *= (uint64_t)os->dims[d];
    char *dst = out;
    for (uint64_t i = 0; i < n; i++) {
        memcpy(dst + i * es, (const char *)x->data + off * (int64_t)es, es);
        kiln__onnx_step(r, os->dims, idx, move, &off, NULL, NULL);
    }
}

static kiln_status k_slice(const kiln_onnx_call *c, kiln_err *err)
{
    int64_t b[KILN_MAX_RANK], step[KILN_MAX_RANK];
    kiln_shape os;
    kiln_status st = kiln__onnx_slice_prep(c, &os, b, step, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[0], err)) != KILN_OK)
        return st;
    copy_box(x, b, step, &os, c->out[0].data);
    return KILN_OK;
}

static kiln_status k_split(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int64_t axis = kiln__onnx_attr_int(c, "axis", 0);
    if (!kiln_dtype_size(x->dtype))
        return kiln__onnx_bad_node(c, err, "data must have a fixed-size dtype");
    if ((st = kiln__onnx_axis(c, &axis, x->shape.rank, err)) != KILN_OK)
        return st;
    int64_t sizes[64];
    size_t n = c->n_out;
    if (n > 64)
        return kiln__onnx_bad_node(c, err, "more than 64 outputs");
    int64_t len = x->shape.dims[axis];
    if (c->n_in > 1 && c->in[1]) {
        size_t got;
        if ((st = kiln__onnx_int_list(c, 1, sizes, 64, &got, err)) != KILN_OK)
            return st;
        if (got != n)
            return kiln__onnx_bad_node(c, err, "split has %zu sizes for %zu outputs", got, n);
    } else { /* equal parts, the last one smaller (opset 18) */
        int64_t part = (len + (int64_t)n - 1) / (int64_t)n;
        for (size_t i = 0; i < n; i++)
            sizes[i] = len - part * (int64_t)i < part ? len - part * (int64_t)i : part;
    }
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return kiln__onnx_bad_node(c, err, "split[%zu] is %lld", i, (long long)sizes[i]);
        total += sizes[i];
    }
    if (total != len)
        return kiln__onnx_bad_node(c, err, "split sizes add up to %lld, the axis has %lld",
                                   (long long)total, (long long)len);
    int64_t start[KILN_MAX_RANK] = {0}, step[KILN_MAX_RANK];
    for (int d = 0; d < x->shape.rank; d++)
        step[d] = 1;
    for (size_t i = 0; i < n; i++) {
        kiln_shape os = x->shape;
        os.dims[axis] = sizes[i];
        if ((st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[i], err)) != KILN_OK) {
            for (size_t k = 0; k < i; k++)
                kiln_tensor_fini(&c->out[k]);
            return st;
        }
        copy_box(x, start, step, &os, c->out[i].data);
        start[axis] += sizes[i];
    }
    return KILN_OK;
}

static kiln_status k_expand(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_shape os;
    int64_t sa[KILN_MAX_RANK];
    kiln_status st = kiln__onnx_expand_prep(c, &os, sa, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    size_t es = kiln_dtype_size(x->dtype);
    if ((st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[0], err)) != KILN_OK)
        return st;
    uint64_t total = c->out[0].byte_size / es;
    int64_t idx[KILN_MAX_RANK] = {0}, off = 0;
    char *dst = c->out[0].data;
    for (uint64_t i = 0; i < total; i++) {
        memcpy(dst + i * es, (const char *)x->data + off * (int64_t)es, es);
        kiln__onnx_step(os.rank, os.dims, idx, sa, &off, NULL, NULL);
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Equal, Where */

static kiln_status k_equal(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = need(c, 0, err);
    if (st == KILN_OK)
        st = need(c, 1, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *a = c->in[0], *b = c->in[1];
    size_t es = kiln_dtype_size(a->dtype);
    if (a->dtype != b->dtype || !es)
        return kiln__onnx_bad_node(c, err, "inputs must have one fixed-size dtype");
    kiln_shape os;
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
    if ((st = kiln__onnx_broadcast(c, &a->shape, &b->shape, &os, sa, sb, err)) != KILN_OK ||
        (st = kiln__onnx_alloc(c, KILN_DTYPE_BOOL, &os, &c->out[0], err)) != KILN_OK)
        return st;
    int64_t idx[KILN_MAX_RANK] = {0}, oa = 0, ob = 0;
    uint8_t *z = c->out[0].data;
    for (size_t i = 0; i < c->out[0].byte_size; i++) {
        const char *p = (const char *)a->data + oa * (int64_t)es;
        const char *q = (const char *)b->data + ob * (int64_t)es;
        z[i] = a->dtype == KILN_DTYPE_FP32 ? *(const float *)p == *(const float *)q
                                           : memcmp(p, q, es) == 0;
        kiln__onnx_step(os.rank, os.dims, idx, sa, &oa, sb, &ob);
    }
    return KILN_OK;
}

static kiln_status k_where(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_status st = KILN_OK;
    for (size_t i = 0; st == KILN_OK && i < 3; i++)
        st = need(c, i, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *cond = c->in[0], *x = c->in[1], *y = c->in[2];
    size_t es = kiln_dtype_size(x->dtype);
    if (cond->dtype != KILN_DTYPE_BOOL || x->dtype != y->dtype || !es)
        return kiln__onnx_bad_node(c, err, "condition must be BOOL and X, Y one fixed-size dtype");
    /* the output shape, then each input's strides in the output's index space */
    kiln_shape cx, os, same;
    int64_t s_c[KILN_MAX_RANK], s_x[KILN_MAX_RANK], s_y[KILN_MAX_RANK], unused[KILN_MAX_RANK];
    if ((st = kiln__onnx_broadcast(c, &cond->shape, &x->shape, &cx, unused, unused, err)) !=
            KILN_OK ||
        (st = kiln__onnx_broadcast(c, &cx, &y->shape, &os, unused, s_y, err)) != KILN_OK ||
        (st = kiln__onnx_broadcast(c, &os, &cond->shape, &same, unused, s_c, err)) != KILN_OK ||
        (st = kiln__onnx_broadcast(c, &os, &x->shape, &same, unused, s_x, err)) != KILN_OK ||
        (st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[0], err)) != KILN_OK)
        return st;
    /* two walkers over the same index: one moves cond and X, the other Y */
    int64_t ia[KILN_MAX_RANK] = {0}, ib[KILN_MAX_RANK] = {0}, oc = 0, ox = 0, oy = 0;
    size_t n = c->out[0].byte_size / es;
    char *dst = c->out[0].data;
    for (size_t i = 0; i < n; i++) {
        const char *src = ((const uint8_t *)cond->data)[oc]
                              ? (const char *)x->data + ox * (int64_t)es
                              : (const char *)y->data + oy * (int64_t)es;
        memcpy(dst + i * es, src, es);
        kiln__onnx_step(os.rank, os.dims, ia, s_c, &oc, s_x, &ox);
        kiln__onnx_step(os.rank, os.dims, ib, s_y, &oy, NULL, NULL);
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- reductions, LayerNorm */

/* ReduceMean / ReduceSum over `axes` (attribute before opset 18 for ReduceMean, input since
 * 13 for ReduceSum), keepdims default 1; no axes = all (unless noop_with_empty_axes). */
static kiln_status reduce(const kiln_onnx_call *c, bool mean, kiln_err *err)
{
    kiln_onnx_reduce rd;
    kiln_status st = kiln__onnx_reduce_prep(c, &rd, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank;
    if (rd.noop) {
        kiln_tensor_share(x, &c->out[0]);
        return KILN_OK;
    }
    const bool *red = rd.red;
    const kiln_shape full = rd.full;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &rd.out, &c->out[0], err)) != KILN_OK)
        return st;
    size_t on = c->out[0].byte_size / sizeof(float);
    double *acc = kiln_calloc(on ? on : 1, sizeof(double));
    if (!acc) {
        kiln_tensor_fini(&c->out[0]);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* walk the input; the output offset moves along the kept dims only */
    int64_t ostride[KILN_MAX_RANK], s = 1, idx[KILN_MAX_RANK] = {0}, oo = 0;
    for (int d = r - 1; d >= 0; d--) {
        ostride[d] = red[d] ? 0 : s;
        s *= full.dims[d];
    }
    size_t total = x->byte_size / sizeof(float);
    const float *X = x->data;
    for (size_t i = 0; i < total; i++) {
        acc[oo] += X[i];
        kiln__onnx_step(r, x->shape.dims, idx, ostride, &oo, NULL, NULL);
    }
    double count = on ? (double)total / (double)on : 1;
    float *Y = c->out[0].data;
    for (size_t i = 0; i < on; i++)
        Y[i] = (float)(mean ? acc[i] / count : acc[i]);
    kiln_free(acc);
    return KILN_OK;
}

static kiln_status k_reduce_mean(const kiln_onnx_call *c, kiln_err *err)
{
    return reduce(c, true, err);
}
static kiln_status k_reduce_sum(const kiln_onnx_call *c, kiln_err *err)
{
    return reduce(c, false, err);
}

/* LayerNormalization (opset 17) over the dims from `axis` on; the Mean and InvStdDev outputs
 * are not supported. */
static kiln_status k_layer_norm(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_norm nm;
    kiln_status st = kiln__onnx_layer_norm_prep(c, &nm, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    bool has_b = nm.bias != NULL;
    size_t inner = nm.inner, rows = nm.rows;
    float eps = nm.eps;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    const float *X = x->data, *S = c->in[1]->data, *B = has_b ? c->in[2]->data : NULL;
    float *Y = c->out[0].data;
    for (size_t row = 0; row < rows; row++) {
        const float *p = X + row * inner;
        double mu = 0, var = 0;
        for (size_t i = 0; i < inner; i++)
            mu += p[i];
        mu /= (double)inner;
        for (size_t i = 0; i < inner; i++)
            var += (p[i] - mu) * (p[i] - mu);
        var /= (double)inner;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (size_t i = 0; i < inner; i++)
            Y[row * inner + i] = (float)(p[i] - mu) * inv * S[i] + (B ? B[i] : 0.f);
    }
    return KILN_OK;
}

const kiln_onnx_kernel kiln__onnx_cpu_tensor[] = {
    {"Constant", KILN_DEVICE_CPU, k_constant, false, 0},
    {"Shape", KILN_DEVICE_CPU, k_shape, false, 0},
    {"Cast", KILN_DEVICE_CPU, k_cast, false, 0},
    {"Gather", KILN_DEVICE_CPU, k_gather, false, 0},
    {"Unsqueeze", KILN_DEVICE_CPU, k_unsqueeze, false, 0},
    {"Squeeze", KILN_DEVICE_CPU, k_squeeze, false, 0},
    {"Slice", KILN_DEVICE_CPU, k_slice, false, 0},
    {"Split", KILN_DEVICE_CPU, k_split, false, 0},
    {"Expand", KILN_DEVICE_CPU, k_expand, false, 0},
    {"Equal", KILN_DEVICE_CPU, k_equal, false, 0},
    {"Where", KILN_DEVICE_CPU, k_where, false, 0},
    {"ReduceMean", KILN_DEVICE_CPU, k_reduce_mean, false, 0},
    {"ReduceSum", KILN_DEVICE_CPU, k_reduce_sum, false, 0},
    {"LayerNormalization", KILN_DEVICE_CPU, k_layer_norm, false, 0},
    /* views: the same functions serve device tensors */
    {"Unsqueeze", KILN_DEVICE_CUDA, k_unsqueeze, false, 1u << 1},
    {"Squeeze", KILN_DEVICE_CUDA, k_squeeze, false, 1u << 1},
    {NULL, KILN_DEVICE_CPU, NULL, false, 0},
};
