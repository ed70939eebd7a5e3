/*
 * backends/onnx/cpu_math.c: FP32 CPU kernels that compute: elementwise ops (with NumPy
 * broadcasting), Softmax, MatMul and Gemm (through OpenBLAS's cblas_sgemm).
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "backends/onnx/onnx_int.h"
#include "backends/onnx/cpu_kernels.h"
#include "backends/onnx/gpu.h"
#include "backends/onnx/scalar_ops.h"

kiln_status kiln__onnx_bad_node(const kiln_onnx_call *c, kiln_err *err, const char *fmt, ...)
{
    char msg[KILN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kiln_err_set(err, KILN_INVALID_ARGUMENT, "node '%s' (%s): %s", c->node->name,
                        c->node->op, msg);
}

kiln_status kiln__onnx_want_float(const kiln_onnx_call *c, size_t i, kiln_err *err)
{
    if (i >= c->n_in || !c->in[i])
        return kiln__onnx_bad_node(c, err, "input %zu is required", i);
    kiln_dtype dt = c->in[i]->dtype;
    bool fp16 = c->gpu && kiln__onnx_gpu_precision(c->gpu) == KILN_ONNX_FP16;
    if (dt == KILN_DTYPE_FP32 || (dt == KILN_DTYPE_FP16 && fp16))
        return KILN_OK;
    return kiln__onnx_bad_node(c, err, "input %zu is %s; this kernel takes FP32%s", i,
                               kiln_dtype_name(dt), fp16 ? " or FP16" : "");
}

kiln_status kiln__onnx_alloc(const kiln_onnx_call *c, kiln_dtype dt, const kiln_shape *shape,
                             kiln_tensor *out, kiln_err *err)
{
    uint64_t bytes;
    kiln_err e;
    if (kiln_shape_byte_size(dt, shape, KILN_ONNX_MAX_VALUE_BYTES, &bytes, &e) != KILN_OK)
        return kiln__onnx_bad_node(c, err, "output: %s", e.msg);
    size_t k = (size_t)(out - c->out);
    if (c->arena && k < c->n_out && c->out_off[k] != KILN_ONNX_UNPLANNED &&
        c->out_bytes[k] == bytes)
        return kiln_tensor_view(c->arena, (size_t)c->out_off[k], dt, shape, (size_t)bytes, out,
                                err);
    if (c->gpu) {
        kiln_storage *st = NULL;
        kiln_status r =
            kiln_storage_create_cuda(kiln__onnx_gpu_device(c->gpu), (size_t)bytes, &st, err);
        if (r == KILN_OK)
            r = kiln_tensor_view(st, 0, dt, shape, (size_t)bytes, out, err);
        kiln_storage_unref(st);
        return r;
    }
    return kiln_tensor_alloc(dt, shape, 0, out, err);
}

void kiln__onnx_act_apply(const kiln_onnx_act *act, float *p, size_t n)
{
    switch (act->kind) {
    case KILN_ONNX_ACT_NONE:
        break;
    case KILN_ONNX_ACT_RELU: /* as the Relu kernel: NaN and -0 give 0 */
        for (size_t i = 0; i < n; i++)
            p[i] = p[i] > 0.f ? p[i] : 0.f;
        break;
    case KILN_ONNX_ACT_LEAKY:
        for (size_t i = 0; i < n; i++)
            p[i] = p[i] < 0.f ? act->a * p[i] : p[i];
        break;
    case KILN_ONNX_ACT_CLIP:
        for (size_t i = 0; i < n; i++)
            p[i] = p[i] < act->a ? act->a : p[i] > act->b ? act->b : p[i];
        break;
    }
}

kiln_status kiln__onnx_blas_dims(const kiln_onnx_call *c, int64_t m, int64_t n, int64_t k,
                                 kiln_err *err)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX)
        return kiln__onnx_bad_node(c, err,
                                   "matrix sizes %lld x %lld x %lld are over the BLAS "
                                   "limit of %d",
                                   (long long)m, (long long)n, (long long)k, INT_MAX);
    return KILN_OK;
}

int64_t kiln__onnx_attr_int(const kiln_onnx_call *c, const char *name, int64_t dflt)
{
    const kiln_onnx_attr *a = kiln_onnx_node_attr(c->node, name);
    return a && a->type == KILN_ONNX_ATTR_INT ? a->i : dflt;
}

float kiln__onnx_attr_float(const kiln_onnx_call *c, const char *name, float dflt)
{
    const kiln_onnx_attr *a = kiln_onnx_node_attr(c->node, name);
    return a && a->type == KILN_ONNX_ATTR_FLOAT ? a->f : dflt;
}

/* ---------------------------------------------------------------- unary */

static kiln_status unary(const kiln_onnx_call *c, kiln_onnx_unop op, float a, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    const float *in = x->data;
    float *y = c->out[0].data;
    size_t n = x->byte_size / sizeof(float);
    for (size_t i = 0; i < n; i++)
        y[i] = kiln_onnx_unop_apply(op, in[i], a, 0.f);
    return KILN_OK;
}

#define UNARY(name, op)                                                                            \
    static kiln_status name(const kiln_onnx_call *c, kiln_err *err)                                \
    {                                                                                              \
        return unary(c, op, 0.f, err);                                                             \
    }
UNARY(k_relu, KILN_ONNX_RELU)
UNARY(k_sigmoid, KILN_ONNX_SIGMOID)
UNARY(k_tanh, KILN_ONNX_TANH)
UNARY(k_exp, KILN_ONNX_EXP)
UNARY(k_sqrt, KILN_ONNX_SQRT)
UNARY(k_erf, KILN_ONNX_ERF)
UNARY(k_neg, KILN_ONNX_NEG)
UNARY(k_abs, KILN_ONNX_ABS)

static kiln_status k_leaky_relu(const kiln_onnx_call *c, kiln_err *err)
{
    return unary(c, KILN_ONNX_LEAKY, kiln__onnx_attr_float(c, "alpha", 0.01f), err);
}

/* ---------------------------------------------------------------- binary, broadcasting */

kiln_status kiln__onnx_broadcast(const kiln_onnx_call *c, const kiln_shape *a, const kiln_shape *b,
                                 kiln_shape *out, int64_t *sa, int64_t *sb, kiln_err *err)
{
    int r = a->rank > b->rank ? a->rank : b->rank;
    out->rank = r;
    int64_t stride_a = 1, stride_b = 1;
    for (int d = r - 1; d >= 0; d--) {
        int da = d - (r - a->rank), db = d - (r - b->rank);
        int64_t xa = da >= 0 ? a->dims[da] : 1, xb = db >= 0 ? b->dims[db] : 1;
        if (xa != xb && xa != 1 && xb != 1) {
            char s1[96], s2[96];
            return kiln__onnx_bad_node(c, err, "shapes %s and %s do not broadcast",
                                       kiln_shape_format(a, s1, sizeof(s1)),
                                       kiln_shape_format(b, s2, sizeof(s2)));
        }
        out->dims[d] = xa == 1 ? xb : xa;
        sa[d] = xa == 1 ? 0 : stride_a;
        sb[d] = xb == 1 ? 0 : stride_b;
        stride_a *= xa;
        stride_b *= xb;
    }
    return KILN_OK;
}

static kiln_status binary(const kiln_onnx_call *c, kiln_onnx_binop op, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st == KILN_OK)
        st = kiln__onnx_want_float(c, 1, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *a = c->in[0], *b = c->in[1];
    kiln_shape shape;
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
    if ((st = kiln__onnx_broadcast(c, &a->shape, &b->shape, &shape, sa, sb, err)) != KILN_OK ||
        (st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &shape, &c->out[0], err)) != KILN_OK)
        return st;
    const float *x = a->data, *y = b->data;
    float *z = c->out[0].data;
    size_t n = c->out[0].byte_size / sizeof(float);
    size_t na = a->byte_size / sizeof(float), nb = b->byte_size / sizeof(float);
    if (na == n && nb == n) {
        for (size_t i = 0; i < n; i++)
            z[i] = kiln_onnx_binop_apply(op, x[i], y[i]);
    } else if (na == n && nb == 1) {
        for (size_t i = 0; i < n; i++)
            z[i] = kiln_onnx_binop_apply(op, x[i], y[0]);
    } else { /* general: walk the output index, moving each input's offset by its strides */
        int64_t idx[KILN_MAX_RANK] = {0};
        int64_t oa = 0, ob = 0;
        for (size_t i = 0; i < n; i++) {
            z[i] = kiln_onnx_binop_apply(op, x[oa], y[ob]);
            kiln__onnx_step(shape.rank, shape.dims, idx, sa, &oa, sb, &ob);
        }
    }
    kiln__onnx_act_apply(&c->act, z, n);
    return KILN_OK;
}

static kiln_status k_add(const kiln_onnx_call *c, kiln_err *err)
{
    return binary(c, KILN_ONNX_ADD, err);
}
static kiln_status k_sub(const kiln_onnx_call *c, kiln_err *err)
{
    return binary(c, KILN_ONNX_SUB, err);
}
static kiln_status k_mul(const kiln_onnx_call *c, kiln_err *err)
{
    return binary(c, KILN_ONNX_MUL, err);
}
static kiln_status k_div(const kiln_onnx_call *c, kiln_err *err)
{
    return binary(c, KILN_ONNX_DIV, err);
}
static kiln_status k_pow(const kiln_onnx_call *c, kiln_err *err)
{
    return binary(c, KILN_ONNX_POW, err);
}

/* ---------------------------------------------------------------- Softmax */

/* Softmax (opset >= 13: along one axis, default -1); LogSoftmax when log is set. */
static kiln_status softmax(const kiln_onnx_call *c, bool log, kiln_err *err)
{
    size_t outer, len, inner;
    kiln_status st = kiln__onnx_softmax_prep(c, &outer, &len, &inner, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    const float *in = x->data;
    float *out = c->out[0].data;
    for (size_t o = 0; o < outer; o++) {
        for (size_t i = 0; i < inner; i++) {
            const float *p = in + o * len * inner + i;
            float *q = out + o * len * inner + i;
            float mx = -INFINITY, sum = 0.f;
            for (size_t k = 0; k < len; k++)
                mx = p[k * inner] > mx ? p[k * inner] : mx;
            for (size_t k = 0; k < len; k++)
                sum += (q[k * inner] = expf(p[k * inner] - mx));
            for (size_t k = 0; k < len; k++)
                q[k * inner] = log ? p[k * inner] - mx - logf(sum) : q[k * inner] / sum;
        }
    }
    return KILN_OK;
}

static kiln_status k_softmax(const kiln_onnx_call *c, kiln_err *err)
{
    return softmax(c, false, err);
}
static kiln_status k_log_softmax(const kiln_onnx_call *c, kiln_err *err)
{
    return softmax(c, true, err);
}

/* ---------------------------------------------------------------- MatMul, Gemm */

/* MatMul with NumPy semantics: 1-D operands are promoted, batch dims broadcast. */
static kiln_status k_matmul(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_matmul mm;
    kiln_status st = kiln__onnx_matmul_prep(c, &mm, err);
    if (st != KILN_OK)
        return st;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &mm.out, &c->out[0], err)) != KILN_OK)
        return st;
    int64_t M = mm.M, N = mm.N, K = mm.K;
    const kiln_shape batch = mm.batch;
    const int64_t *sa = mm.sa, *sb = mm.sb;
    size_t nbatch = (size_t)mm.nbatch;
    const float *A = c->in[0]->data, *B = c->in[1]->data;
    const float *bias = mm.bias ? mm.bias->data : NULL;
    float *C = c->out[0].data;
    int64_t idx[KILN_MAX_RANK] = {0}, oa = 0, ob = 0;
    if (mm.nb == 1 && nbatch > 1 && (uint64_t)M * nbatch <= INT_MAX) {
        /* B is one matrix: A's batches stack into one [nbatch*M, K] operand */
        M *= (int64_t)nbatch;
        nbatch = 1;
    }
    for (size_t i = 0; i < nbatch; i++) {
        float *Ci = C + i * M * N;
        if (bias) /* every row starts as the bias; the GEMM adds to it */
            for (int64_t r = 0; r < M; r++)
                memcpy(Ci + r * N, bias, (size_t)N * sizeof(float));
        else if (M && N && !K)
            memset(Ci, 0, (size_t)(M * N) * sizeof(float));
        if (M && N && K)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.f,
                        A + oa * M * K, (int)K, B + ob * K * N, (int)N, bias ? 1.f : 0.f, Ci,
                        (int)N);
        kiln__onnx_step(batch.rank, batch.dims, idx, sa, &oa, sb, &ob);
    }
    kiln__onnx_act_apply(&c->act, C, nbatch * (size_t)(M * N));
    return KILN_OK;
}

/* Gemm: Y = alpha * A' B' + beta * C, A and B 2-D, C broadcast to [M,N]. */
static kiln_status k_gemm(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_gemm gm;
    kiln_status st = kiln__onnx_gemm_prep(c, &gm, err);
    if (st != KILN_OK)
        return st;
    if ((st = kiln__onnx_alloc(c, KILN_DTYPE_FP32, &gm.out, &c->out[0], err)) != KILN_OK)
        return st;
    bool ta = gm.ta, tb = gm.tb, has_c = gm.has_c;
    float alpha = gm.alpha, beta = gm.beta;
    int64_t M = gm.M, N = gm.N, K = gm.K;
    const int64_t *sc = gm.sc;
    float *Y = c->out[0].data;
    const float *C = has_c ? c->in[2]->data : NULL;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            Y[i * N + j] = C && beta != 0.f ? beta * C[i * sc[0] + j * sc[1]] : 0.f;
    if (M && N && K)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, c->in[0]->data, (int)gm.lda, c->in[1]->data,
                    (int)gm.ldb, 1.f, Y, (int)N);
    kiln__onnx_act_apply(&c->act, Y, (size_t)(M * N));
    return KILN_OK;
}

const kiln_onnx_kernel kiln__onnx_cpu_math[] = {
    {"Relu", KILN_DEVICE_CPU, k_relu, false, 0},
    {"LeakyRelu", KILN_DEVICE_CPU, k_leaky_relu, false, 0},
    {"Sigmoid", KILN_DEVICE_CPU, k_sigmoid, false, 0},
    {"Tanh", KILN_DEVICE_CPU, k_tanh, false, 0},
    {"Exp", KILN_DEVICE_CPU, k_exp, false, 0},
    {"Sqrt", KILN_DEVICE_CPU, k_sqrt, false, 0},
    {"Erf", KILN_DEVICE_CPU, k_erf, false, 0},
    {"Neg", KILN_DEVICE_CPU, k_neg, false, 0},
    {"Abs", KILN_DEVICE_CPU, k_abs, false, 0},
    {"Add", KILN_DEVICE_CPU, k_add, true, 0},
    {"Sub", KILN_DEVICE_CPU, k_sub, true, 0},
    {"Mul", KILN_DEVICE_CPU, k_mul, true, 0},
    {"Div", KILN_DEVICE_CPU, k_div, true, 0},
    {"Pow", KILN_DEVICE_CPU, k_pow, false, 0},
    {"Softmax", KILN_DEVICE_CPU, k_softmax, false, 0},
    {"LogSoftmax", KILN_DEVICE_CPU, k_log_softmax, false, 0},
    {"MatMul", KILN_DEVICE_CPU, k_matmul, true, 0},
    {"Gemm", KILN_DEVICE_CPU, k_gemm, true, 0},
    {NULL, KILN_DEVICE_CPU, NULL, false, 0},
};
