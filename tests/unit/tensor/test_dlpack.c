/* Unit tests: DLPack export and import (zero copy, deleter exactly once, bad inputs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "tensor/tensor.h"
#include "tests/support.h"

/* A producer-side DLManagedTensor over a static buffer, counting deleter calls. */
typedef struct producer {
    DLManagedTensor m;
    int64_t shape[KILN_MAX_RANK + 2];
    int64_t strides[KILN_MAX_RANK + 2];
    float data[64];
    int deleted;
} producer;

static void producer_deleter(DLManagedTensor *m)
{
    ((producer *)m->manager_ctx)->deleted++;
}

static void producer_init(producer *p, int ndim, const int64_t *shape)
{
    memset(p, 0, sizeof(*p));
    memcpy(p->shape, shape, sizeof(int64_t) * (size_t)ndim);
    p->m.dl_tensor.data = p->data;
    p->m.dl_tensor.device = (DLDevice){kDLCPU, 0};
    p->m.dl_tensor.ndim = ndim;
    p->m.dl_tensor.dtype = (DLDataType){kDLFloat, 32, 1};
    p->m.dl_tensor.shape = p->shape;
    p->m.manager_ctx = p;
    p->m.deleter = producer_deleter;
}

static void export_holds_reference(void **state)
{
    (void)state;
    kiln_err e;
    kiln_tensor t;
    kiln_shape sh = {.rank = 2, .dims = {2, 3}};
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &t, &e), &e);
    float *f = t.data;
    for (int i = 0; i < 6; i++)
        f[i] = (float)i;
    DLManagedTensor *m;
    assert_ok(kiln_tensor_to_dlpack(&t, &m, &e), &e);
    void *data = t.data;
    kiln_tensor_fini(&t); /* the export keeps the storage alive */
    assert_ptr_equal(m->dl_tensor.data, data);
    assert_int_equal(m->dl_tensor.ndim, 2);
    assert_int_equal(m->dl_tensor.shape[0], 2);
    assert_int_equal(m->dl_tensor.shape[1], 3);
    assert_null(m->dl_tensor.strides);
    assert_int_equal(m->dl_tensor.dtype.code, kDLFloat);
    assert_int_equal(m->dl_tensor.device.device_type, kDLCPU);
    assert_true(((float *)m->dl_tensor.data)[5] == 5.0f); /* ASan would flag a freed buffer */
    m->deleter(m);
}

static void export_errors(void **state)
{
    (void)state;
    kiln_err e;
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {1}};
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_BYTES, &sh, 4, &t, &e), &e);
    DLManagedTensor *m = (DLManagedTensor *)1;
    assert_status(kiln_tensor_to_dlpack(&t, &m, &e), KILN_INVALID_ARGUMENT, &e,
                  "BYTES tensor cannot be exported");
    assert_null(m);
    kiln_tensor_fini(&t);
    kiln_tensor empty = {0};
    empty.dtype = KILN_DTYPE_FP32;
    assert_status(kiln_tensor_to_dlpack(&empty, &m, &e), KILN_INVALID_ARGUMENT, &e, "empty");
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_FP32, &sh, 0, &t, &e), &e);
    kiln_alloc_fail_after(0);
    assert_status(kiln_tensor_to_dlpack(&t, &m, &e), KILN_RESOURCE_EXHAUSTED, &e, "out of memory");
    kiln_tensor_fini(&t);
}

static void import_zero_copy_deleter_once(void **state)
{
    (void)state;
    kiln_err e;
    producer p;
    int64_t shape[] = {4, 16};
    producer_init(&p, 2, shape);
    kiln_tensor t, u;
    assert_ok(kiln_tensor_from_dlpack(&p.m, &t, &e), &e);
    assert_ptr_equal(t.data, p.data);
    assert_int_equal(t.byte_size, 256);
    assert_int_equal(t.dtype, KILN_DTYPE_FP32);
    assert_int_equal(kiln_storage_get_kind(t.storage), KILN_STORAGE_BORROWED);
    kiln_tensor_share(&t, &u);
    kiln_tensor_fini(&t);
    assert_int_equal(p.deleted, 0);
    kiln_tensor_fini(&u);
    assert_int_equal(p.deleted, 1);
}

static void import_compact_strides_and_offset(void **state)
{
    (void)state;
    kiln_err e;
    producer p;
    int64_t shape[] = {2, 1, 4};
    producer_init(&p, 3, shape);
    p.strides[0] = 4;
    p.strides[1] = 99; /* dims of 1 may have any stride */
    p.strides[2] = 1;
    p.m.dl_tensor.strides = p.strides;
    p.m.dl_tensor.byte_offset = 16;
    kiln_tensor t;
    assert_ok(kiln_tensor_from_dlpack(&p.m, &t, &e), &e);
    assert_ptr_equal(t.data, (char *)p.data + 16);
    kiln_tensor_fini(&t);
    assert_int_equal(p.deleted, 1);
}

static void import_errors_leave_ownership(void **state)
{
    (void)state;
    kiln_err e;
    producer p;
    int64_t shape[] = {4, 16};
    kiln_tensor t;

    producer_init(&p, 2, shape);
    p.strides[0] = 1;
    p.strides[1] = 4; /* column-major */
    p.m.dl_tensor.strides = p.strides;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e,
                  "not compact row-major at dim 1");

    producer_init(&p, 2, shape);
    p.m.dl_tensor.device.device_type = kDLOpenCL;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e,
                  "device type 4");

    producer_init(&p, 2, shape);
    p.m.dl_tensor.ndim = 9;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e,
                  "ndim 9 is outside 0..8");

    producer_init(&p, 2, shape);
    p.m.dl_tensor.dtype.lanes = 2;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e, "lanes 2");

    producer_init(&p, 2, shape);
    p.shape[1] = -3;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e,
                  "DLPack shape: shape dim 1 is -3");

    producer_init(&p, 2, shape);
    p.m.dl_tensor.data = NULL;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e, "data is NULL");

    producer_init(&p, 2, shape);
    p.shape[0] = INT64_MAX;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e, "overflows");

    producer_init(&p, 2, shape);
    p.shape[0] = 3;
    p.shape[1] = INT64_C(1) << 62;
    p.strides[0] = INT64_C(1) << 62;
    p.strides[1] = 1;
    p.m.dl_tensor.strides = p.strides;
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_INVALID_ARGUMENT, &e, "overflows");

    producer_init(&p, 2, shape);
    kiln_alloc_fail_after(0);
    assert_status(kiln_tensor_from_dlpack(&p.m, &t, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "out of memory");

    assert_status(kiln_tensor_from_dlpack(NULL, &t, &e), KILN_INVALID_ARGUMENT, &e, "NULL");
    assert_null(t.storage);
    assert_int_equal(p.deleted, 0); /* never called on failure */
}

static void round_trip_through_dlpack(void **state)
{
    (void)state;
    kiln_err e;
    kiln_tensor t, back;
    kiln_shape sh = {.rank = 3, .dims = {2, 2, 2}};
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_INT16, &sh, 0, &t, &e), &e);
    DLManagedTensor *m;
    assert_ok(kiln_tensor_to_dlpack(&t, &m, &e), &e);
    assert_ok(kiln_tensor_from_dlpack(m, &back, &e), &e);
    assert_ptr_equal(back.data, t.data);
    assert_int_equal(back.dtype, KILN_DTYPE_INT16);
    assert_true(kiln_shape_equal(&back.shape, &t.shape));
    kiln_tensor_fini(&t);
    kiln_tensor_fini(&back); /* runs the export's deleter, which frees the storage */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(export_holds_reference),
        cmocka_unit_test(export_errors),
        cmocka_unit_test(import_zero_copy_deleter_once),
        cmocka_unit_test(import_compact_strides_and_offset),
        cmocka_unit_test(import_errors_leave_ownership),
        cmocka_unit_test(round_trip_through_dlpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
