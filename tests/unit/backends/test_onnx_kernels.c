/*
 * Unit tests: the ONNX backend's CPU kernels (backends/onnx/cpu_*.c), called directly on small
 * tensors and checked against loops written here; their error messages name the node.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backends/onnx/onnx_int.h"
#include "tests/support.h"

static kiln_tensor make(kiln_dtype dt, const int64_t *dims, int rank, const void *data)
{
    kiln_shape s;
    kiln_err e;
    assert_ok(kiln_shape_set(&s, dims, (size_t)rank, &e), &e);
    kiln_tensor t;
    assert_ok(kiln_tensor_alloc(dt, &s, 0, &t, &e), &e);
    if (data && t.byte_size)
        memcpy(t.data, data, t.byte_size);
    return t;
}

static kiln_tensor f32(const int64_t *dims, int rank, float start)
{
    kiln_tensor t = make(KILN_DTYPE_FP32, dims, rank, NULL);
    float *p = t.data;
    for (size_t i = 0; i < t.byte_size / 4; i++)
        p[i] = start + (float)i * 0.25f;
    return t;
}

/* Runs op on inputs; out[0] gets the result. */
static kiln_status run(const char *op, kiln_onnx_attr *attrs, size_t n_attrs,
                       const kiln_tensor **in, size_t n_in, kiln_tensor *out, kiln_err *e)
{
    int32_t outs[1] = {0};
    char opname[32], name[] = "n1", domain[] = "";
    snprintf(opname, sizeof(opname), "%s", op);
    kiln_onnx_node n = {.name = name,
                        .op = opname,
                        .domain = domain,
                        .n_outputs = 1,
                        .outputs = outs,
                        .n_attrs = n_attrs,
                        .attrs = attrs};
    const kiln_onnx_kernel *k = kiln__onnx_kernel_find(op, KILN_DEVICE_CPU);
    assert_non_null(k);
    memset(out, 0, sizeof(*out));
    kiln_onnx_call c = {.node = &n, .opset = 17, .n_in = n_in, .in = in, .n_out = 1, .out = out};
    return k->fn(&c, e);
}

static void matmul_broadcasts_batches(void **state)
{
    (void)state;
    kiln_tensor a = f32((int64_t[]){2, 1, 3, 4}, 4, 0.f), b = f32((int64_t[]){3, 4, 5}, 3, -1.f);
    const kiln_tensor *in[2] = {&a, &b};
    kiln_tensor y;
    kiln_err e;
    assert_ok(run("MatMul", NULL, 0, in, 2, &y, &e), &e);
    assert_int_equal(y.shape.rank, 4);
    int64_t want[4] = {2, 3, 3, 5};
    for (int d = 0; d < 4; d++)
        assert_int_equal(y.shape.dims[d], want[d]);
    const float *A = a.data, *B = b.data, *Y = y.data;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int m = 0; m < 3; m++)
                for (int n = 0; n < 5; n++) {
                    float s = 0;
                    for (int k = 0; k < 4; k++)
                        s += A[i * 12 + m * 4 + k] * B[j * 20 + k * 5 + n];
                    assert_true(fabsf(Y[((i * 3 + j) * 3 + m) * 5 + n] - s) < 1e-4f);
                }
    kiln_tensor_fini(&y);
    /* 1-D operands: [4] x [4,5] -> [5] */
    kiln_tensor v = f32((int64_t[]){4}, 1, 1.f), m2 = f32((int64_t[]){4, 5}, 2, 0.f);
    in[0] = &v, in[1] = &m2;
    assert_ok(run("MatMul", NULL, 0, in, 2, &y, &e), &e);
    assert_int_equal(y.shape.rank, 1);
    assert_int_equal(y.shape.dims[0], 5);
    kiln_tensor_fini(&y);
    in[0] = &m2, in[1] = &a; /* [4,5] x [2,1,3,4] */
    assert_status(run("MatMul", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (MatMul): inner dims differ: 5 (A) and 3 (B)");
    assert_null(y.storage);
    kiln_tensor_fini(&a), kiln_tensor_fini(&b), kiln_tensor_fini(&v), kiln_tensor_fini(&m2);
}

static void gemm_transposes_and_broadcasts_c(void **state)
{
    (void)state;
    kiln_tensor a = f32((int64_t[]){4, 3}, 2, 0.f); /* transA: A' is [3,4] */
    kiln_tensor b = f32((int64_t[]){5, 4}, 2, 1.f); /* transB: B' is [4,5] */
    kiln_tensor c = f32((int64_t[]){3, 1}, 2, 2.f); /* broadcast along N */
    kiln_onnx_attr at[4] = {{.name = "transA", .type = KILN_ONNX_ATTR_INT, .i = 1},
                            {.name = "transB", .type = KILN_ONNX_ATTR_INT, .i = 1},
                            {.name = "alpha", .type = KILN_ONNX_ATTR_FLOAT, .f = 0.5f},
                            {.name = "beta", .type = KILN_ONNX_ATTR_FLOAT, .f = 2.f}};
    const kiln_tensor *in[3] = {&a, &b, &c};
    kiln_tensor y;
    kiln_err e;
    assert_ok(run("Gemm", at, 4, in, 3, &y, &e), &e);
    const float *A = a.data, *B = b.data, *C = c.data, *Y = y.data;
    for (int m = 0; m < 3; m++)
        for (int n = 0; n < 5; n++) {
            float s = 0;
            for (int k = 0; k < 4; k++)
                s += A[k * 3 + m] * B[n * 4 + k];
            assert_true(fabsf(Y[m * 5 + n] - (0.5f * s + 2.f * C[m])) < 1e-4f);
        }
    kiln_tensor_fini(&y);
    kiln_tensor bad = f32((int64_t[]){2, 2}, 2, 0.f);
    in[2] = &bad;
    assert_status(run("Gemm", at, 4, in, 3, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Gemm): shapes [3,5] and [2,2] do not broadcast");
    kiln_tensor_fini(&a), kiln_tensor_fini(&b), kiln_tensor_fini(&c), kiln_tensor_fini(&bad);
}

static void broadcasting_binary_and_errors(void **state)
{
    (void)state;
    kiln_tensor a = f32((int64_t[]){2, 1, 3}, 3, 0.f), b = f32((int64_t[]){4, 1}, 2, 10.f);
    const kiln_tensor *in[2] = {&a, &b};
    kiln_tensor y;
    kiln_err e;
    assert_ok(run("Sub", NULL, 0, in, 2, &y, &e), &e);
    assert_int_equal(y.shape.rank, 3);
    const float *A = a.data, *B = b.data, *Y = y.data;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++)
                assert_true(Y[(i * 4 + j) * 3 + k] == A[i * 3 + k] - B[j]);
    kiln_tensor_fini(&y);
    kiln_tensor c = f32((int64_t[]){2}, 1, 0.f);
    in[1] = &c;
    assert_status(run("Add", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Add): shapes [2,1,3] and [2] do not broadcast");
    kiln_tensor i32 = make(KILN_DTYPE_INT32, (int64_t[]){2}, 1, (int32_t[]){1, 2});
    in[1] = &i32;
    assert_status(run("Mul", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Mul): input 1 is INT32; this kernel takes FP32");
    in[1] = NULL;
    assert_status(run("Div", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "input 1 is required");
    kiln_tensor_fini(&a), kiln_tensor_fini(&b), kiln_tensor_fini(&c), kiln_tensor_fini(&i32);
}

static void shapes_and_views(void **state)
{
    (void)state;
    kiln_tensor x = f32((int64_t[]){2, 3, 4}, 3, 0.f);
    kiln_tensor s = make(KILN_DTYPE_INT64, (int64_t[]){3}, 1, (int64_t[]){0, -1, 2});
    const kiln_tensor *in[2] = {&x, &s};
    kiln_tensor y;
    kiln_err e;
    assert_ok(run("Reshape", NULL, 0, in, 2, &y, &e), &e);
    assert_int_equal(y.shape.dims[0], 2); /* 0 copies the input's dim */
    assert_int_equal(y.shape.dims[1], 6);
    assert_ptr_equal(y.data, x.data); /* a view, not a copy */
    kiln_tensor_fini(&y);
    kiln_tensor bad = make(KILN_DTYPE_INT64, (int64_t[]){2}, 1, (int64_t[]){5, -1});
    in[1] = &bad;
    assert_status(run("Reshape", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Reshape): cannot infer the -1 dim: 24 elements");
    kiln_onnx_attr perm = {
        .name = "perm", .type = KILN_ONNX_ATTR_INTS, .n = 3, .ints = (int64_t[]){2, 0, 1}};
    assert_ok(run("Transpose", &perm, 1, in, 1, &y, &e), &e);
    const float *X = x.data, *Y = y.data;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                assert_true(Y[(k * 2 + i) * 3 + j] == X[(i * 3 + j) * 4 + k]);
    kiln_tensor_fini(&y);
    perm.ints = (int64_t[]){2, 2, 1};
    assert_status(run("Transpose", &perm, 1, in, 1, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "perm is not a permutation of 0..2");
    kiln_onnx_attr axis = {.name = "axis", .type = KILN_ONNX_ATTR_INT, .i = 2};
    assert_ok(run("Flatten", &axis, 1, in, 1, &y, &e), &e);
    assert_int_equal(y.shape.dims[0], 6);
    assert_int_equal(y.shape.dims[1], 4);
    kiln_tensor_fini(&y);
    axis.i = 1;
    assert_ok(run("Softmax", &axis, 1, in, 1, &y, &e), &e);
    Y = y.data;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            float sum = 0;
            for (int j = 0; j < 3; j++)
                sum += Y[(i * 3 + j) * 4 + k];
            assert_true(fabsf(sum - 1.f) < 1e-5f);
        }
    kiln_tensor_fini(&y);
    axis.i = 3;
    assert_status(run("Softmax", &axis, 1, in, 1, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "axis 3 is outside the input's rank 3");
    kiln_tensor_fini(&x), kiln_tensor_fini(&s), kiln_tensor_fini(&bad);
}

/* Pools on a 1x1x3x3 input of 0..8: ceil_mode keeps the partial last window, and
 * count_include_pad divides by the padded window. */
static void pools_ceil_mode_and_padding(void **state)
{
    (void)state;
    kiln_tensor x =
        make(KILN_DTYPE_FP32, (int64_t[]){1, 1, 3, 3}, 4, (float[]){0, 1, 2, 3, 4, 5, 6, 7, 8});
    const kiln_tensor *in[1] = {&x};
    kiln_onnx_attr at[4] = {
        {.name = "kernel_shape", .type = KILN_ONNX_ATTR_INTS, .n = 2, .ints = (int64_t[]){2, 2}},
        {.name = "strides", .type = KILN_ONNX_ATTR_INTS, .n = 2, .ints = (int64_t[]){2, 2}},
        {.name = "ceil_mode", .type = KILN_ONNX_ATTR_INT, .i = 1},
        {.name = "count_include_pad", .type = KILN_ONNX_ATTR_INT, .i = 0}};
    kiln_tensor y;
    kiln_err e;
    assert_ok(run("MaxPool", at, 3, in, 1, &y, &e), &e);
    assert_int_equal(y.shape.dims[2], 2); /* floor would give 1 */
    const float *Y = y.data;
    assert_true(Y[0] == 4.f && Y[1] == 5.f && Y[2] == 7.f && Y[3] == 8.f);
    kiln_tensor_fini(&y);
    assert_ok(run("AveragePool", at, 4, in, 1, &y, &e), &e);
    Y = y.data;
    assert_true(Y[0] == 2.f && Y[1] == 3.5f && Y[2] == 6.5f && Y[3] == 8.f);
    kiln_tensor_fini(&y);
    /* pads [1,1,0,0], 2x2 windows, stride 1, counting pads: corner = 0 / 4 */
    kiln_onnx_attr pad[3] = {
        at[0],
        {.name = "pads", .type = KILN_ONNX_ATTR_INTS, .n = 4, .ints = (int64_t[]){1, 1, 0, 0}},
        {.name = "count_include_pad", .type = KILN_ONNX_ATTR_INT, .i = 1}};
    assert_ok(run("AveragePool", pad, 3, in, 1, &y, &e), &e);
    assert_int_equal(y.shape.dims[2], 3);
    Y = y.data;
    assert_true(Y[0] == 0.f && Y[4] == 2.f && Y[8] == 6.f);
    kiln_tensor_fini(&y);
    kiln_tensor_fini(&x);
}

static void nn_errors_name_the_node(void **state)
{
    (void)state;
    kiln_tensor x = f32((int64_t[]){1, 4, 5, 5}, 4, 0.f), w = f32((int64_t[]){6, 3, 3, 3}, 4, 0.f);
    const kiln_tensor *in[5] = {&x, &w};
    kiln_tensor y;
    kiln_err e;
    assert_status(run("Conv", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Conv): channels do not fit: input 4, weights [6,3], group 1");
    kiln_tensor big = f32((int64_t[]){6, 4, 7, 7}, 4, 0.f);
    in[1] = &big;
    assert_status(run("Conv", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "the window (7) is larger than the padded input (5)");
    char same[] = "SAME_MIDDLE";
    kiln_onnx_attr ap = {.name = "auto_pad", .type = KILN_ONNX_ATTR_STRING, .s = same};
    in[1] = &w;
    assert_status(run("Conv", &ap, 1, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "auto_pad 'SAME_MIDDLE' is not valid");
    kiln_tensor flat = f32((int64_t[]){4, 5}, 2, 0.f);
    in[0] = &flat;
    assert_status(run("Conv", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "input must be 4-D [N,C,H,W] (got rank 2)");
    kiln_tensor c4 = f32((int64_t[]){4}, 1, 1.f), c3 = f32((int64_t[]){3}, 1, 1.f);
    in[0] = &x, in[1] = &c4, in[2] = &c4, in[3] = &c4, in[4] = &c3;
    assert_status(run("BatchNormalization", NULL, 0, in, 5, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "input 4 must be [4]");
    in[1] = &flat;
    assert_status(run("Concat", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "input 1 differs in presence, dtype or rank");
    kiln_tensor_fini(&x), kiln_tensor_fini(&w), kiln_tensor_fini(&big), kiln_tensor_fini(&flat);
    kiln_tensor_fini(&c4), kiln_tensor_fini(&c3);
}

/* Review findings: attribute types, training mode, BLAS int limits, output size cap. */
static void hostile_inputs_are_refused(void **state)
{
    (void)state;
    kiln_tensor x = f32((int64_t[]){2, 3}, 2, 0.f);
    const kiln_tensor *in[3] = {&x};
    kiln_tensor y;
    kiln_err e;
    kiln_onnx_attr perm = {
        .name = "perm", .type = KILN_ONNX_ATTR_FLOATS, .n = 2, .floats = (float[]){1, 0}};
    assert_status(run("Transpose", &perm, 1, in, 1, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "perm is not a permutation of 0..1");
    kiln_tensor on = make(KILN_DTYPE_BOOL, NULL, 0, (uint8_t[]){1});
    in[1] = NULL, in[2] = &on;
    assert_status(run("Dropout", NULL, 0, in, 3, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Dropout): training_mode is true; Kiln runs inference only");
    /* M over INT_MAX with K = 0 needs no data, but would be truncated for BLAS */
    kiln_tensor a = make(KILN_DTYPE_FP32, (int64_t[]){INT64_C(3000000000), 0}, 2, NULL);
    kiln_tensor b = make(KILN_DTYPE_FP32, (int64_t[]){0, 1}, 2, NULL);
    in[0] = &a, in[1] = &b;
    assert_status(run("MatMul", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "matrix sizes 3000000000 x 1 x 0 are over the BLAS limit");
    /* K = 0: the product is zeros, without BLAS */
    kiln_tensor a2 = make(KILN_DTYPE_FP32, (int64_t[]){2, 0}, 2, NULL);
    in[0] = &a2;
    assert_ok(run("MatMul", NULL, 0, in, 2, &y, &e), &e);
    assert_true(((const float *)y.data)[0] == 0.f && ((const float *)y.data)[1] == 0.f);
    kiln_tensor_fini(&y);
    /* a broadcast that would need 40 GB */
    kiln_tensor col = make(KILN_DTYPE_FP32, (int64_t[]){100000, 1}, 2, NULL);
    kiln_tensor row = make(KILN_DTYPE_FP32, (int64_t[]){1, 100000}, 2, NULL);
    in[0] = &col, in[1] = &row;
    assert_status(run("Add", NULL, 0, in, 2, &y, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Add): output:");
    assert_null(y.storage);
    kiln_tensor_fini(&x), kiln_tensor_fini(&on), kiln_tensor_fini(&a), kiln_tensor_fini(&b);
    kiln_tensor_fini(&a2), kiln_tensor_fini(&col), kiln_tensor_fini(&row);
}

/* Runs op with n_out outputs (node outputs 0..n_out-1). */
static kiln_status run_n(const char *op, kiln_onnx_attr *attrs, size_t n_attrs,
                         const kiln_tensor **in, size_t n_in, kiln_tensor *out, size_t n_out,
                         kiln_err *e)
{
    int32_t outs[4] = {0, 1, 2, 3};
    char opname[32], name[] = "n1", domain[] = "";
    snprintf(opname, sizeof(opname), "%s", op);
    kiln_onnx_node n = {.name = name,
                        .op = opname,
                        .domain = domain,
                        .n_outputs = n_out,
                        .outputs = outs,
                        .n_attrs = n_attrs,
                        .attrs = attrs};
    memset(out, 0, n_out * sizeof(*out));
    kiln_onnx_call c = {
        .node = &n, .opset = 17, .n_in = n_in, .in = in, .n_out = n_out, .out = out};
    return kiln__onnx_kernel_find(op, KILN_DEVICE_CPU)->fn(&c, e);
}

static void plumbing_kernels(void **state)
{
    (void)state;
    kiln_tensor x = f32((int64_t[]){3, 4}, 2, 0.f); /* 0, .25, ... 2.75 */
    kiln_tensor st = make(KILN_DTYPE_INT64, (int64_t[]){2}, 1, (int64_t[]){-1, 3});
    kiln_tensor en = make(KILN_DTYPE_INT64, (int64_t[]){2}, 1, (int64_t[]){-4, 0});
    kiln_tensor ax = make(KILN_DTYPE_INT64, (int64_t[]){2}, 1, (int64_t[]){0, 1});
    kiln_tensor sp = make(KILN_DTYPE_INT64, (int64_t[]){2}, 1, (int64_t[]){-1, -2});
    const kiln_tensor *in[5] = {&x, &st, &en, &ax, &sp};
    kiln_tensor y[3];
    kiln_err e;
    /* rows 2,1,0 reversed; columns 3,1 (step -2) */
    assert_ok(run_n("Slice", NULL, 0, in, 5, y, 1, &e), &e);
    assert_int_equal(y[0].shape.dims[0], 3);
    assert_int_equal(y[0].shape.dims[1], 2);
    const float *Y = y[0].data, *X = x.data;
    assert_true(Y[0] == X[2 * 4 + 3] && Y[1] == X[2 * 4 + 1] && Y[5] == X[0 * 4 + 1]);
    kiln_tensor_fini(&y[0]);
    /* Split columns 1 + 3 */
    kiln_tensor parts = make(KILN_DTYPE_INT64, (int64_t[]){2}, 1, (int64_t[]){1, 3});
    kiln_onnx_attr axis1 = {.name = "axis", .type = KILN_ONNX_ATTR_INT, .i = 1};
    in[1] = &parts;
    assert_ok(run_n("Split", &axis1, 1, in, 2, y, 2, &e), &e);
    assert_int_equal(y[1].shape.dims[1], 3);
    assert_true(((const float *)y[1].data)[3] == X[5]);
    kiln_tensor_fini(&y[0]), kiln_tensor_fini(&y[1]);
    /* Expand [3,4] -> [2,3,4] */
    kiln_tensor to = make(KILN_DTYPE_INT64, (int64_t[]){3}, 1, (int64_t[]){2, 1, 4});
    in[1] = &to;
    assert_ok(run_n("Expand", NULL, 0, in, 2, y, 1, &e), &e);
    assert_int_equal(y[0].shape.rank, 3);
    assert_true(((const float *)y[0].data)[12 + 5] == X[5]);
    kiln_tensor_fini(&y[0]);
    /* Equal with a broadcast row, then Where picking x or 0 */
    kiln_tensor row = make(KILN_DTYPE_FP32, (int64_t[]){4}, 1, (float[]){0.f, 99.f, 0.5f, 99.f});
    in[1] = &row;
    assert_ok(run_n("Equal", NULL, 0, in, 2, y, 1, &e), &e);
    const uint8_t *eq = y[0].data;
    assert_true(eq[0] == 1 && eq[1] == 0 && eq[2] == 1 && eq[4] == 0);
    kiln_tensor zero = make(KILN_DTYPE_FP32, NULL, 0, (float[]){-7.f});
    const kiln_tensor *win[3] = {&y[0], &x, &zero};
    kiln_tensor w;
    assert_ok(run_n("Where", NULL, 0, win, 3, &w, 1, &e), &e);
    const float *W = w.data;
    assert_true(W[0] == X[0] && W[1] == -7.f && W[2] == X[2] && W[4] == -7.f);
    kiln_tensor_fini(&w), kiln_tensor_fini(&y[0]);
    /* ReduceSum over axis 1 keeping dims; Squeeze it away; Cast to INT64 */
    kiln_tensor a1 = make(KILN_DTYPE_INT64, (int64_t[]){1}, 1, (int64_t[]){1});
    in[1] = &a1;
    assert_ok(run_n("ReduceSum", NULL, 0, in, 2, y, 1, &e), &e);
    assert_int_equal(y[0].shape.dims[1], 1);
    assert_true(((const float *)y[0].data)[1] == X[4] + X[5] + X[6] + X[7]);
    const kiln_tensor *sin[2] = {&y[0], &a1};
    assert_ok(run_n("Squeeze", NULL, 0, sin, 2, &y[1], 1, &e), &e);
    assert_int_equal(y[1].shape.rank, 1);
    kiln_onnx_attr to_i64 = {.name = "to", .type = KILN_ONNX_ATTR_INT, .i = 7};
    const kiln_tensor *cin[1] = {&y[1]};
    assert_ok(run_n("Cast", &to_i64, 1, cin, 1, &y[2], 1, &e), &e);
    assert_int_equal(((const int64_t *)y[2].data)[2], (int64_t)(X[8] + X[9] + X[10] + X[11]));
    kiln_tensor_fini(&y[0]), kiln_tensor_fini(&y[1]), kiln_tensor_fini(&y[2]);
    /* errors name the node */
    kiln_tensor big = make(KILN_DTYPE_INT64, NULL, 0, (int64_t[]){7});
    const kiln_tensor *gin[2] = {&x, &big};
    assert_status(run_n("Gather", NULL, 0, gin, 2, y, 1, &e), KILN_INVALID_ARGUMENT, &e,
                  "node 'n1' (Gather): index 7 is outside -3..2");
    kiln_onnx_attr to_str = {.name = "to", .type = KILN_ONNX_ATTR_INT, .i = 8};
    assert_status(run_n("Cast", &to_str, 1, in, 1, y, 1, &e), KILN_INVALID_ARGUMENT, &e,
                  "casts FP32 -> INVALID are not supported");
    kiln_tensor_fini(&x), kiln_tensor_fini(&st), kiln_tensor_fini(&en), kiln_tensor_fini(&ax);
    kiln_tensor_fini(&sp), kiln_tensor_fini(&parts), kiln_tensor_fini(&to), kiln_tensor_fini(&row);
    kiln_tensor_fini(&zero), kiln_tensor_fini(&a1), kiln_tensor_fini(&big);
}

/* Conv against a direct loop: strides, dilations, asymmetric pads, groups, 1x1, with the
 * fused bias and activation; the im2col rows are split into padding and a copied span. */
typedef struct conv_case {
    int64_t n, c, h, w, m, kh, kw, group, s[2], d[2], pads[4];
    kiln_onnx_act act;
} conv_case;

static void conv_one(const conv_case *kc)
{
    conv_case copy = *kc, *k = &copy; /* attributes point into it */
    int64_t xd[4] = {k->n, k->c, k->h, k->w}, wd[4] = {k->m, k->c / k->group, k->kh, k->kw};
    kiln_tensor x = f32(xd, 4, -3.f), wt = f32(wd, 4, -1.f), b = f32((int64_t[]){k->m}, 1, -0.5f);
    float *W = wt.data;
    for (size_t i = 0; i < wt.byte_size / 4; i++)
        W[i] = (float)((int)(i * 7 % 11) - 5) * 0.1f;
    kiln_onnx_attr at[3] = {
        {.name = "strides", .type = KILN_ONNX_ATTR_INTS, .n = 2, .ints = k->s},
        {.name = "dilations", .type = KILN_ONNX_ATTR_INTS, .n = 2, .ints = k->d},
        {.name = "pads", .type = KILN_ONNX_ATTR_INTS, .n = 4, .ints = k->pads},
    };
    kiln_onnx_attr grp = {.name = "group", .type = KILN_ONNX_ATTR_INT, .i = k->group};
    kiln_onnx_attr all[4] = {at[0], at[1], at[2], grp};
    int32_t outs[1] = {0};
    char op[] = "Conv", name[] = "c1", domain[] = "";
    kiln_onnx_node node = {.name = name,
                           .op = op,
                           .domain = domain,
                           .n_outputs = 1,
                           .outputs = outs,
                           .n_attrs = 4,
                           .attrs = all};
    const kiln_tensor *in[3] = {&x, &wt, &b};
    kiln_tensor y = {0};
    kiln_onnx_call c = {
        .node = &node, .opset = 17, .n_in = 3, .in = in, .n_out = 1, .out = &y, .act = k->act};
    kiln_err e;
    assert_ok(kiln__onnx_kernel_find("Conv", KILN_DEVICE_CPU)->fn(&c, &e), &e);
    int64_t oh = (k->h + k->pads[0] + k->pads[2] - ((k->kh - 1) * k->d[0] + 1)) / k->s[0] + 1;
    int64_t ow = (k->w + k->pads[1] + k->pads[3] - ((k->kw - 1) * k->d[1] + 1)) / k->s[1] + 1;
    assert_int_equal(y.shape.dims[2], oh);
    assert_int_equal(y.shape.dims[3], ow);
    const float *X = x.data, *B = b.data, *Y = y.data;
    int64_t cg = k->c / k->group, mg = k->m / k->group;
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t m = 0; m < k->m; m++)
            for (int64_t i = 0; i < oh; i++)
                for (int64_t j = 0; j < ow; j++) {
                    double acc = B[m];
                    for (int64_t ci = 0; ci < cg; ci++)
                        for (int64_t ky = 0; ky < k->kh; ky++)
                            for (int64_t kx = 0; kx < k->kw; kx++) {
                                int64_t iy = i * k->s[0] - k->pads[0] + ky * k->d[0];
                                int64_t ix = j * k->s[1] - k->pads[1] + kx * k->d[1];
                                if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w)
                                    continue;
                                int64_t cin = (m / mg) * cg + ci;
                                acc += (double)X[((n * k->c + cin) * k->h + iy) * k->w + ix] *
                                       W[((m * cg + ci) * k->kh + ky) * k->kw + kx];
                            }
                    float want = (float)acc;
                    kiln__onnx_act_apply(&k->act, &want, 1);
                    float got = Y[((n * k->m + m) * oh + i) * ow + j];
                    assert_true(fabsf(got - want) < 1e-4f * (1.f + fabsf(want)));
                }
    kiln_tensor_fini(&x);
    kiln_tensor_fini(&wt);
    kiln_tensor_fini(&b);
    kiln_tensor_fini(&y);
}

static void conv_matches_loops(void **state)
{
    (void)state;
    const conv_case cases[] = {
        {2, 3, 7, 9, 4, 3, 2, 1, {2, 3}, {1, 2}, {1, 0, 2, 1}, {KILN_ONNX_ACT_NONE, 0, 0}},
        {1, 4, 6, 6, 4, 3, 3, 4, {1, 1}, {1, 1}, {1, 1, 1, 1}, {KILN_ONNX_ACT_RELU, 0, 0}},
        {2, 5, 4, 3, 3, 1, 1, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, {KILN_ONNX_ACT_CLIP, -.5f, .5f}},
        {1, 2, 5, 5, 2, 3, 3, 1, {1, 1}, {2, 2}, {2, 2, 2, 2}, {KILN_ONNX_ACT_LEAKY, .1f, 0}},
        {1, 6, 8, 8, 4, 3, 3, 2, {2, 2}, {1, 1}, {0, 3, 1, 0}, {KILN_ONNX_ACT_NONE, 0, 0}},
        {1, 1, 3, 3, 1, 3, 3, 1, {1, 1}, {1, 1}, {4, 4, 4, 4}, {KILN_ONNX_ACT_NONE, 0, 0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        conv_one(&cases[i]);
}

static void registry_lists_ops(void **state)
{
    (void)state;
    char ops[1024];
    kiln__onnx_kernel_ops(KILN_DEVICE_CPU, ops, sizeof(ops));
    assert_non_null(strstr(ops, "MatMul"));
    assert_non_null(strstr(ops, "Transpose"));
    assert_non_null(kiln__onnx_kernel_find("Conv", KILN_DEVICE_CPU));
    assert_non_null(kiln__onnx_kernel_find("Gather", KILN_DEVICE_CPU));
    assert_null(kiln__onnx_kernel_find("ConvTranspose", KILN_DEVICE_CPU)); /* not built yet */
    char small[8];
    kiln__onnx_kernel_ops(KILN_DEVICE_CPU, small, sizeof(small)); /* truncates, no overflow */
    assert_true(strlen(small) < sizeof(small));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matmul_broadcasts_batches),
        cmocka_unit_test(gemm_transposes_and_broadcasts_c),
        cmocka_unit_test(broadcasting_binary_and_errors),
        cmocka_unit_test(shapes_and_views),
        cmocka_unit_test(pools_ceil_mode_and_padding),
        cmocka_unit_test(nn_errors_name_the_node),
        cmocka_unit_test(hostile_inputs_are_refused),
        cmocka_unit_test(plumbing_kernels),
        cmocka_unit_test(conv_matches_loops),
        cmocka_unit_test(registry_lists_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
