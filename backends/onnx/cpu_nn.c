/*
 * backends/onnx/cpu_nn.c: FP32 CPU kernels for convolutional networks: Conv (2-D, groups,
 * pads, strides, dilations; im2col + cblas_sgemm, 1x1 convolutions without im2col), MaxPool
 * and AveragePool (2-D), GlobalAveragePool, BatchNormalization (inference), Clip, Concat.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "backends/onnx/cpu_kernels.h"
#include "common/alloc.h"

bool kiln__onnx_attr_ints(const kiln_onnx_call *c, const char *name, int64_t *out, size_t n,
                          int64_t dflt)
{
    const kiln_onnx_attr *a = kiln_onnx_node_attr(c->node, name);
    for (size_t i = 0; i < n; i++)
        out[i] = dflt;
    if (!a)
        return true;
    if (a->type != KILN_ONNX_ATTR_INTS || a->n != n)
        return false;
    memcpy(out, a->ints, n * sizeof(int64_t));
    return true;
}

kiln_status kiln__onnx_window(const kiln_onnx_call *c, const kiln_tensor *x, const int64_t *k,
                              bool ceil_mode, kiln_onnx_window *w, kiln_err *err)
{
    if (x->shape.rank != 4)
        return kiln__onnx_bad_node(c, err,
                                   "input must be 4-D [N,C,H,W] (got rank %d); only 2-D "
                                   "windows are supported",
                                   x->shape.rank);
    w->k[0] = k[0], w->k[1] = k[1];
    w->in[0] = x->shape.dims[2], w->in[1] = x->shape.dims[3];
    if (!kiln__onnx_attr_ints(c, "strides", w->s, 2, 1) ||
        !kiln__onnx_attr_ints(c, "dilations", w->d, 2, 1) ||
        !kiln__onnx_attr_ints(c, "pads", w->pad, 4, 0))
        return kiln__onnx_bad_node(c, err,
                                   "strides, dilations and pads must have 2, 2 and 4 "
                                   "values");
    const kiln_onnx_attr *ap = kiln_onnx_node_attr(c->node, "auto_pad");
    const char *mode = ap && ap->type == KILN_ONNX_ATTR_STRING ? ap->s : "NOTSET";
    for (int i = 0; i < 2; i++) {
        if (w->k[i] < 1 || w->s[i] < 1 || w->d[i] < 1)
            return kiln__onnx_bad_node(c, err, "kernel, strides and dilations must be >= 1");
        int64_t span = (w->k[i] - 1) * w->d[i] + 1;
        if (strcmp(mode, "SAME_UPPER") == 0 || strcmp(mode, "SAME_LOWER") == 0) {
            int64_t o = (w->in[i] + w->s[i] - 1) / w->s[i];
            int64_t total = (o - 1) * w->s[i] + span - w->in[i];
            total = total > 0 ? total : 0;
            bool upper = mode[5] == 'U';
            w->pad[i] = upper ? total / 2 : total - total / 2;
            w->pad[i + 2] = total - w->pad[i];
        } else if (strcmp(mode, "VALID") == 0) {
            w->pad[i] = w->pad[i + 2] = 0;
        } else if (strcmp(mode, "NOTSET") != 0) {
            return kiln__onnx_bad_node(c, err, "auto_pad '%s' is not valid", mode);
        }
        if (w->pad[i] < 0 || w->pad[i + 2] < 0)
            return kiln__onnx_bad_node(c, err, "pads must be >= 0");
        int64_t room = w->in[i] + w->pad[i] + w->pad[i + 2] - span;
        if (room < 0)
            return kiln__onnx_bad_node(c, err,
                                       "the window (%lld) is larger than the padded input "
                                       "(%lld)",
                                       (long long)span,
                                       (long long)(w->in[i] + w->pad[i] + w->pad[i + 2]));
        w->out[i] = (ceil_mode ? (room + w->s[i] - 1) / w->s[i] : room / w->s[i]) + 1;
        /* with ceil_mode, a last window that starts in the right padding is dropped */
        if (ceil_mode && (w->out[i] - 1) * w->s[i] >= w->in[i] + w->pad[i])
            w->out[i]--;
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Conv */

/* Writes the columns of one group's input xg ([Cg, H, W]): row (ci, ky, kx), column (oy, ox)
 * holds the input under that kernel tap for that output, or 0 in the padding. Each row is
 * split into the padding on both sides and the span inside the input (a copy at stride 1). */
static void im2col(const float *xg, int64_t Cg, const kiln_onnx_window *w, float *cols)
{
    int64_t H = w->in[0], Wd = w->in[1], OH = w->out[0], OW = w->out[1];
    float *p = cols;
    for (int64_t ci = 0; ci < Cg; ci++)
        for (int64_t ky = 0; ky < w->k[0]; ky++)
            for (int64_t kx = 0; kx < w->k[1]; kx++) {
                int64_t shift = kx * w->d[1] - w->pad[1]; /* ix = ox * s + shift */
                int64_t lo = shift >= 0 ? 0 : (-shift + w->s[1] - 1) / w->s[1];
                int64_t hi = Wd - 1 - shift < 0 ? 0 : (Wd - 1 - shift) / w->s[1] + 1;
                lo = lo > OW ? OW : lo;
                hi = hi > OW ? OW : hi < lo ? lo : hi;
                for (int64_t oy = 0; oy < OH; oy++, p += OW) {
                    int64_t iy = oy * w->s[0] - w->pad[0] + ky * w->d[0];
                    if (iy < 0 || iy >= H) {
                        memset(p, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    const float *row = xg + (ci * H + iy) * Wd;
                    memset(p, 0, (size_t)lo * sizeof(float));
                    if (w->s[1] == 1)
                        memcpy(p + lo, row + lo + shift, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int64_t ox = lo; ox < hi; ox++)
                            p[ox] = row[ox * w->s[1] + shift];
                    memset(p + hi, 0, (size_t)(OW - hi) * sizeof(float));
                }
            }
}

/* Adds bias b[m] (NULL: none) to each of the rows of y ([rows, len]) and applies act, in one
 * pass. */
static void bias_act(float *y, const float *b, const kiln_onnx_act *act, int64_t rows, int64_t len)
{
    for (int64_t m = 0; m < rows; m++) {
        float *r = y + m * len;
        if (b)
            for (int64_t i = 0; i < len; i++)
                r[i] += b[m];
        kiln__onnx_act_apply(act, r, (size_t)len);
    }
}

static kiln_status k_conv(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_conv cv;
    kiln_status st = kiln__onnx_conv_prep(c, &cv, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0], *wt = c->in[1];
    int64_t N = cv.N, C = cv.C, M = cv.M, Cg = cv.Cg, group = cv.group;
    const kiln_onnx_window w = cv.win;
    bool has_b = cv.b != NULL;
    if ((st = kiln__onnx_blas_dims(c, M / group, w.out[0] * w.out[1], Cg * w.k[0] * w.k[1], err)) !=
        KILN_OK)
        return st;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &cv.out, &c->out[0], err)) != KILN_OK)
        return st;
    int64_t Mg = M / group, HW = w.in[0] * w.in[1], OHW = w.out[0] * w.out[1];
    int64_t KK = Cg * w.k[0] * w.k[1];
    bool direct = w.k[0] == 1 && w.k[1] == 1 && w.s[0] == 1 && w.s[1] == 1 && !w.pad[0] &&
                  !w.pad[1] && !w.pad[2] && !w.pad[3];
    float *cols = direct ? NULL : kiln_malloc((size_t)(KK * OHW) * sizeof(float) + 1);
    if (!direct && !cols) {
        kiln_tensor_fini(&c->out[0]);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a convolution");
    }
    const float *X = x->data, *W = wt->data, *B = has_b ? c->in[2]->data : NULL;
    float *Y = c->out[0].data;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t g = 0; g < group; g++) {
            const float *xg = X + (n * C + g * Cg) * HW;
            if (!direct)
                im2col(xg, Cg, &w, cols);
            float *yg = Y + (n * M + g * Mg) * OHW;
            if (Mg && OHW && KK)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Mg, (int)OHW, (int)KK,
                            1.f, W + g * Mg * KK, (int)KK, direct ? xg : cols, (int)OHW, 0.f, yg,
                            (int)OHW);
            bias_act(yg, B ? B + g * Mg : NULL, &c->act, Mg, OHW);
        }
    }
    kiln_free(cols);
    return KILN_OK;
}

/* ---------------------------------------------------------------- pools */

static kiln_status pool(const kiln_onnx_call *c, bool max, kiln_err *err)
{
    kiln_onnx_pool pl;
    kiln_status st = kiln__onnx_pool_prep(c, max, &pl, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    const kiln_onnx_window w = pl.win;
    bool include_pad = pl.include_pad;
    int64_t NC = x->shape.dims[0] * x->shape.dims[1];
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &pl.out, &c->out[0], err)) != KILN_OK)
        return st;
    const float *X = x->data;
    float *Y = c->out[0].data;
    for (int64_t p = 0; p < NC; p++) {
        const float *xp = X + p * w.in[0] * w.in[1];
        for (int64_t oy = 0; oy < w.out[0]; oy++)
            for (int64_t ox = 0; ox < w.out[1]; ox++) {
                float acc = max ? -INFINITY : 0.f;
                int64_t count = 0, padded = 0;
                for (int64_t ky = 0; ky < w.k[0]; ky++)
                    for (int64_t kx = 0; kx < w.k[1]; kx++) {
                        int64_t iy = oy * w.s[0] - w.pad[0] + ky * w.d[0];
                        int64_t ix = ox * w.s[1] - w.pad[1] + kx * w.d[1];
                        bool in = iy >= 0 && iy < w.in[0] && ix >= 0 && ix < w.in[1];
                        /* count_include_pad counts pads, not the ceil_mode overhang */
                        if (iy < w.in[0] + w.pad[2] && ix < w.in[1] + w.pad[3])
                            padded++;
                        if (!in)
                            continue;
                        float v = xp[iy * w.in[1] + ix];
                        acc = max ? (v > acc ? v : acc) : acc + v;
                        count++;
                    }
                int64_t div = include_pad ? padded : count;
                *Y++ = max ? acc : (div ? acc / (float)div : 0.f);
            }
    }
    return KILN_OK;
}

static kiln_status k_maxpool(const kiln_onnx_call *c, kiln_err *err)
{
    return pool(c, true, err);
}
static kiln_status k_avgpool(const kiln_onnx_call *c, kiln_err *err)
{
    return pool(c, false, err);
}

static kiln_status k_global_avgpool(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_shape os;
    size_t nc, inner;
    kiln_status st = kiln__onnx_global_pool_prep(c, &os, &nc, &inner, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &os, &c->out[0], err)) != KILN_OK)
        return st;
    const float *X = x->data;
    float *Y = c->out[0].data;
    for (size_t p = 0; p < nc; p++) {
        double s = 0;
        for (size_t i = 0; i < inner; i++)
            s += X[p * inner + i];
        Y[p] = inner ? (float)(s / (double)inner) : 0.f;
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- BatchNormalization, Clip */

static kiln_status k_batchnorm(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_norm nm;
    kiln_status st = kiln__onnx_batchnorm_prep(c, &nm, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int64_t C = (int64_t)nm.channels;
    float eps = nm.eps;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    size_t inner = nm.inner;
    const float *X = x->data, *sc = c->in[1]->data, *bi = c->in[2]->data, *mu = c->in[3]->data,
                *var = c->in[4]->data;
    float *Y = c->out[0].data;
    size_t N = (size_t)x->shape.dims[0];
    for (size_t n = 0; n < N; n++)
        for (int64_t ch = 0; ch < C; ch++) {
            float a = sc[ch] / sqrtf(var[ch] + eps), b = bi[ch] - mu[ch] * a;
            size_t base = (n * (size_t)C + (size_t)ch) * inner;
            for (size_t i = 0; i < inner; i++)
                Y[base + i] = X[base + i] * a + b;
        }
    return KILN_OK;
}

static kiln_status k_clip(const kiln_onnx_call *c, kiln_err *err)
{
    float lo, hi;
    kiln_status st = kiln__onnx_clip_prep(c, &lo, &hi, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    const float *X = x->data;
    float *Y = c->out[0].data;
    for (size_t i = 0; i < x->byte_size / sizeof(float); i++)
        Y[i] = X[i] < lo ? lo : (X[i] > hi ? hi : X[i]);
    return KILN_OK;
}

/* ---------------------------------------------------------------- Concat */

static kiln_status k_concat(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_concat cc;
    kiln_status st = kiln__onnx_concat_prep(c, &cc, err);
    if (st != KILN_OK)
        return st;
    if ((st = kiln__onnx_alloc(c, c->in[0]->dtype, &cc.out, &c->out[0], err)) != KILN_OK)
        return st;
    size_t outer = cc.outer, inner = cc.inner;
    int axis = cc.axis;
    char *dst = c->out[0].data;
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < c->n_in; i++) {
            size_t chunk = (size_t)c->in[i]->shape.dims[axis] * inner;
            if (chunk)
                memcpy(dst, (const char *)c->in[i]->data + o * chunk, chunk);
            dst += chunk;
        }
    return KILN_OK;
}

const kiln_onnx_kernel kiln__onnx_cpu_nn[] = {
    {"Conv", KILN_DEVICE_CPU, k_conv, true, 0},
    {"MaxPool", KILN_DEVICE_CPU, k_maxpool, false, 0},
    {"AveragePool", KILN_DEVICE_CPU, k_avgpool, false, 0},
    {"GlobalAveragePool", KILN_DEVICE_CPU, k_global_avgpool, false, 0},
    {"BatchNormalization", KILN_DEVICE_CPU, k_batchnorm, false, 0},
    {"Clip", KILN_DEVICE_CPU, k_clip, false, 0},
    {"Concat", KILN_DEVICE_CPU, k_concat, false, 0},
    {NULL, KILN_DEVICE_CPU, NULL, false, 0},
};
