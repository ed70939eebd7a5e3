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

static void registry_lists_ops(void **state)
{
    (void)state;
    char ops[1024];
    kiln__onnx_kernel_ops(KILN_DEVICE_CPU, ops, sizeof(ops));
    assert_non_null(strstr(ops, "MatMul"));
    assert_non_null(strstr(ops, "Transpose"));
    assert_null(kiln__onnx_kernel_find("Conv", KILN_DEVICE_CPU)); /* not built yet */
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
        cmocka_unit_test(registry_lists_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
