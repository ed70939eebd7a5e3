/* tests/unit/client/test_dlpack.c: DLPack tensors as inputs, and datatype sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tests/unit/client/fake.h"

static DLTensor tensor(void *data, int ndim, int64_t *shape, uint8_t code, uint8_t bits)
{
    DLTensor t;
    memset(&t, 0, sizeof(t));
    t.data = data;
    t.device.device_type = kDLCPU;
    t.ndim = ndim;
    t.shape = shape;
    t.dtype.code = code;
    t.dtype.bits = bits;
    t.dtype.lanes = 1;
    return t;
}

static void test_dtype_sizes(void **state)
{
    (void)state;
    const char *names[] = {"BOOL",  "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                           "INT32", "INT64", "FP16",   "FP32",   "FP64",   "BF16", "BYTES"};
    const int sizes[] = {1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 2, 0};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_int_equal(kiln__dtype_size(names[i]), sizes[i]);
    assert_int_equal(kiln__dtype_size("FLOAT"), -1);
    assert_int_equal(kiln__dtype_size("fp32"), -1);
    assert_int_equal(kiln__dtype_size(NULL), -1);
}

static void test_every_dtype_converts(void **state)
{
    (void)state;
    const struct {
        uint8_t code, bits;
        const char *name;
    } cases[] = {
        {kDLInt, 8, "INT8"},          {kDLInt, 16, "INT16"},   {kDLInt, 32, "INT32"},
        {kDLInt, 64, "INT64"},        {kDLUInt, 8, "UINT8"},   {kDLUInt, 16, "UINT16"},
        {kDLUInt, 32, "UINT32"},      {kDLUInt, 64, "UINT64"}, {kDLFloat, 16, "FP16"},
        {kDLFloat, 32, "FP32"},       {kDLFloat, 64, "FP64"},  {kDLBfloat, 16, "BF16"},
        {6 /* kDLBool */, 8, "BOOL"},
    };
    uint64_t buf[24];
    int64_t shape[2] = {2, 3};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        DLTensor t = tensor(buf, 2, shape, cases[i].code, cases[i].bits);
        kiln_client_tensor out;
        kiln_client_error e;
        assert_int_equal(kiln_client_tensor_from_dlpack(&t, "x", &out, &e), 0);
        assert_string_equal(out.datatype, cases[i].name);
        assert_string_equal(out.name, "x");
        assert_int_equal(out.rank, 2);
        assert_int_equal(out.shape[0], 2);
        assert_int_equal(out.shape[1], 3);
        assert_int_equal(out.byte_size, 6 * cases[i].bits / 8);
        assert_ptr_equal(out.data, buf);
        assert_null(out.shm_region);
    }
}

static void test_views_honour_offset_strides_and_scalars(void **state)
{
    (void)state;
    float buf[16];
    int64_t shape[3] = {2, 1, 4};
    int64_t strides[3] = {4, 99, 1}; /* a size-1 dim may carry any stride */
    DLTensor t = tensor(buf, 3, shape, kDLFloat, 32);
    t.strides = strides;
    t.byte_offset = 8 * sizeof(float);
    kiln_client_tensor out;
    kiln_client_error e;
    assert_int_equal(kiln_client_tensor_from_dlpack(&t, "y", &out, &e), 0);
    assert_ptr_equal(out.data, &buf[8]);
    assert_int_equal(out.byte_size, 32);
    DLTensor s = tensor(buf, 0, NULL, kDLFloat, 32); /* a scalar: one element */
    assert_int_equal(kiln_client_tensor_from_dlpack(&s, "s", &out, &e), 0);
    assert_int_equal(out.rank, 0);
    assert_int_equal(out.byte_size, 4);
    int64_t zero[1] = {0};
    DLTensor z = tensor(NULL, 1, zero, kDLInt, 32); /* empty: data may be NULL */
    assert_int_equal(kiln_client_tensor_from_dlpack(&z, "z", &out, &e), 0);
    assert_int_equal(out.byte_size, 0);
    t.device.device_type = kDLCUDAHost; /* pinned host memory is host memory */
    assert_int_equal(kiln_client_tensor_from_dlpack(&t, "y", &out, &e), 0);
}

static void test_conversion_errors(void **state)
{
    (void)state;
    int32_t buf[16];
    int64_t shape[2] = {4, 4};
    kiln_client_tensor out;
    kiln_client_error e;
    DLTensor t = tensor(buf, 2, shape, kDLInt, 32);

    assert_client_err(kiln_client_tensor_from_dlpack(NULL, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "tensor 'a': the DLTensor is NULL");
    assert_client_err(kiln_client_tensor_from_dlpack(&t, "", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "tensor name is empty");
    assert_client_err(kiln_client_tensor_from_dlpack(&t, NULL, &out, &e), e, KILN_INVALID_ARGUMENT,
                      "tensor name is empty");
    assert_client_err(kiln_client_tensor_from_dlpack(&t, "a", NULL, &e), e, KILN_INVALID_ARGUMENT,
                      "out is NULL");

    DLTensor g = t;
    g.device.device_type = kDLCUDA;
    assert_client_err(kiln_client_tensor_from_dlpack(&g, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "tensor 'a': device type 2 is not host memory");

    DLTensor d = t;
    d.dtype.lanes = 4;
    assert_client_err(kiln_client_tensor_from_dlpack(&d, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "DLPack dtype (code 0, bits 32, lanes 4) has no KServe v2 datatype");
    d = t;
    d.dtype.code = kDLFloat;
    d.dtype.bits = 8;
    assert_client_err(kiln_client_tensor_from_dlpack(&d, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "(code 2, bits 8, lanes 1)");
    d = t;
    d.dtype.code = kDLComplex;
    d.dtype.bits = 64;
    assert_client_err(kiln_client_tensor_from_dlpack(&d, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "has no KServe v2 datatype");

    DLTensor r = t;
    r.ndim = 9;
    assert_client_err(kiln_client_tensor_from_dlpack(&r, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "ndim 9 is outside 0..8");
    r.ndim = -1;
    assert_client_err(kiln_client_tensor_from_dlpack(&r, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "ndim -1");
    r = t;
    r.shape = NULL;
    assert_client_err(kiln_client_tensor_from_dlpack(&r, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "shape is NULL");

    int64_t neg[2] = {4, -1};
    DLTensor n = tensor(buf, 2, neg, kDLInt, 32);
    assert_client_err(kiln_client_tensor_from_dlpack(&n, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "shape[1] = -1 is negative");
    int64_t huge[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 2};
    DLTensor h = tensor(buf, 3, huge, kDLInt, 32);
    assert_client_err(kiln_client_tensor_from_dlpack(&h, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "byte size overflows at shape[1]");

    int64_t strides[2] = {1, 4}; /* column-major */
    DLTensor s = t;
    s.strides = strides;
    assert_client_err(kiln_client_tensor_from_dlpack(&s, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "not contiguous (strides[1] = 4, row-major needs 1)");

    DLTensor nd = t;
    nd.data = NULL;
    assert_client_err(kiln_client_tensor_from_dlpack(&nd, "a", &out, &e), e, KILN_INVALID_ARGUMENT,
                      "tensor 'a': data is NULL");
    /* err may be NULL: the code alone comes back */
    assert_int_equal(kiln_client_tensor_from_dlpack(&nd, "a", &out, NULL), KILN_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_sizes),
        cmocka_unit_test(test_every_dtype_converts),
        cmocka_unit_test(test_views_honour_offset_strides_and_scalars),
        cmocka_unit_test(test_conversion_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
