/* Unit tests: storage kinds, tensor views, BYTES encoding, CUDA storage without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "tensor/tensor.h"
#include "tests/support.h"

static int released;
static void count_release(void *ctx, void *data)
{
    (void)data;
    released++;
    *(int *)ctx += 1;
}

static void heap_storage_aligned_and_refcounted(void **state)
{
    (void)state;
    kiln_err e;
    kiln_storage *s;
    assert_ok(kiln_storage_create_heap(1000, &s, &e), &e);
    assert_int_equal((uintptr_t)kiln_storage_data(s) % KILN_STORAGE_ALIGN, 0);
    assert_int_equal(kiln_storage_size(s), 1000);
    assert_int_equal(kiln_storage_get_kind(s), KILN_STORAGE_HEAP);
    assert_int_equal(kiln_storage_device(s).kind, KILN_DEVICE_CPU);
    memset(kiln_storage_data(s), 7, 1000);
    kiln_storage_ref(s);
    kiln_storage_unref(s);
    kiln_storage_unref(s);
    kiln_storage_unref(NULL);
}

static void borrowed_release_called_once_after_last_view(void **state)
{
    (void)state;
    kiln_err e;
    static float buf[64];
    int calls = 0;
    kiln_storage *s;
    assert_ok(kiln_storage_wrap(buf, sizeof(buf), (kiln_device){KILN_DEVICE_CPU, 0}, count_release,
                                &calls, &s, &e),
              &e);
    assert_int_equal(kiln_storage_get_kind(s), KILN_STORAGE_BORROWED);
    kiln_shape sh = {.rank = 2, .dims = {4, 8}};
    kiln_tensor a, b, c;
    assert_ok(kiln_tensor_view(s, 0, KILN_DTYPE_FP32, &sh, 0, &a, &e), &e);
    assert_int_equal(a.byte_size, 128);
    assert_ok(kiln_tensor_view(s, 128, KILN_DTYPE_FP32, &sh, 128, &b, &e), &e);
    assert_ptr_equal(b.data, (char *)buf + 128);
    kiln_storage_unref(s); /* views keep it alive */
    kiln_tensor_share(&a, &c);
    kiln_tensor_fini(&a);
    kiln_tensor_fini(&b);
    assert_int_equal(calls, 0);
    kiln_tensor_fini(&c);
    assert_int_equal(calls, 1);
    assert_null(c.storage);
    kiln_tensor_fini(&c); /* zeroed: no-op */
    assert_int_equal(calls, 1);
}

static void wrap_errors_do_not_release(void **state)
{
    (void)state;
    kiln_err e;
    int calls = 0;
    kiln_storage *s = (kiln_storage *)1;
    assert_status(kiln_storage_wrap(NULL, 10, (kiln_device){0, 0}, count_release, &calls, &s, &e),
                  KILN_INVALID_ARGUMENT, &e, "NULL");
    assert_null(s);
    static char b[8];
    kiln_alloc_fail_after(0);
    assert_status(kiln_storage_wrap(b, 8, (kiln_device){0, 0}, count_release, &calls, &s, &e),
                  KILN_RESOURCE_EXHAUSTED, &e, "out of memory");
    assert_int_equal(calls, 0);
}

static void view_bounds_and_size_checks(void **state)
{
    (void)state;
    kiln_err e;
    kiln_storage *s;
    assert_ok(kiln_storage_create_heap(100, &s, &e), &e);
    kiln_shape sh = {.rank = 1, .dims = {25}};
    kiln_tensor t;
    assert_ok(kiln_tensor_view(s, 0, KILN_DTYPE_FP32, &sh, 100, &t, &e), &e);
    kiln_tensor_fini(&t);
    assert_status(kiln_tensor_view(s, 4, KILN_DTYPE_FP32, &sh, 0, &t, &e), KILN_INVALID_ARGUMENT,
                  &e, "outside its storage of 100 bytes");
    assert_null(t.storage);
    assert_status(kiln_tensor_view(s, 0, KILN_DTYPE_FP32, &sh, 96, &t, &e), KILN_INVALID_ARGUMENT,
                  &e, "byte size 96 does not match shape [25] of FP32 (100 bytes)");
    assert_status(kiln_tensor_view(s, SIZE_MAX, KILN_DTYPE_UINT8, &(kiln_shape){1, {2}}, 0, &t, &e),
                  KILN_INVALID_ARGUMENT, &e, "outside");
    assert_status(kiln_tensor_view(s, 0, KILN_DTYPE_INVALID, &sh, 0, &t, &e), KILN_INVALID_ARGUMENT,
                  &e, "dtype");
    kiln_shape huge = {.rank = 2, .dims = {INT64_MAX, 4}};
    assert_status(kiln_tensor_view(s, 0, KILN_DTYPE_FP32, &huge, 0, &t, &e), KILN_INVALID_ARGUMENT,
                  &e, "overflows");
    kiln_storage_unref(s);
}

static void alloc_tensor(void **state)
{
    (void)state;
    kiln_err e;
    kiln_tensor t;
    kiln_shape sh = {.rank = 2, .dims = {3, 5}};
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_INT64, &sh, 0, &t, &e), &e);
    assert_int_equal(t.byte_size, 120);
    assert_int_equal(t.dtype, KILN_DTYPE_INT64);
    memset(t.data, 0, t.byte_size);
    kiln_tensor_fini(&t);
    kiln_alloc_fail_after(0);
    assert_status(kiln_tensor_alloc(KILN_DTYPE_INT64, &sh, 0, &t, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "out of memory");
    assert_null(t.storage);
    assert_status(kiln_tensor_alloc(KILN_DTYPE_BYTES, &sh, 8, &t, &e), KILN_INVALID_ARGUMENT, &e,
                  "needs at least 60 bytes");
    assert_ok(kiln_tensor_alloc(KILN_DTYPE_BYTES, &sh, 60, &t, &e), &e);
    kiln_tensor_fini(&t);
    /* 2^62 elements cannot fit 4 bytes: the prefix arithmetic must not wrap */
    kiln_shape huge = {.rank = 1, .dims = {INT64_C(1) << 62}};
    assert_status(kiln_tensor_alloc(KILN_DTYPE_BYTES, &huge, 4, &t, &e), KILN_INVALID_ARGUMENT, &e,
                  "needs at least");
}

static void bytes_encoding(void **state)
{
    (void)state;
    kiln_err e;
    uint8_t buf[64];
    size_t off = 0;
    assert_ok(kiln_bytes_append(buf, sizeof(buf), &off, "12", 2, &e), &e);
    assert_ok(kiln_bytes_append(buf, sizeof(buf), &off, "", 0, &e), &e);
    assert_ok(kiln_bytes_append(buf, sizeof(buf), &off, "hello", 5, &e), &e);
    assert_int_equal(off, 4 + 2 + 4 + 0 + 4 + 5);
    assert_int_equal(buf[0], 2);
    assert_int_equal(buf[1], 0);
    uint64_t n;
    assert_ok(kiln_bytes_validate(buf, off, 3, &n, &e), &e);
    assert_int_equal(n, 3);
    assert_ok(kiln_bytes_validate(buf, off, UINT64_MAX, &n, &e), &e);
    kiln_bytes_iter it;
    kiln_bytes_iter_init(&it, buf, off);
    const uint8_t *p;
    uint32_t len;
    assert_true(kiln_bytes_next(&it, &p, &len));
    assert_int_equal(len, 2);
    assert_memory_equal(p, "12", 2);
    assert_true(kiln_bytes_next(&it, &p, &len));
    assert_int_equal(len, 0);
    assert_true(kiln_bytes_next(&it, &p, &len));
    assert_memory_equal(p, "hello", 5);
    assert_false(kiln_bytes_next(&it, &p, &len));
    /* empty buffer, zero elements */
    assert_ok(kiln_bytes_validate(buf, 0, 0, &n, &e), &e);
    assert_int_equal(n, 0);
    /* does not fit */
    size_t o0 = 0;
    assert_status(kiln_bytes_append(buf, sizeof(buf), &o0, buf, (size_t)UINT32_MAX + 1, &e),
                  KILN_INVALID_ARGUMENT, &e, "exceeds the 4-byte length limit");
    assert_int_equal(o0, 0);
    size_t o2 = 60;
    assert_status(kiln_bytes_append(buf, sizeof(buf), &o2, "abcd", 4, &e), KILN_OUT_OF_RANGE, &e,
                  "does not fit at offset 60 of 64");
}

static void bytes_bad_lengths(void **state)
{
    (void)state;
    kiln_err e;
    uint8_t buf[16] = {3, 0, 0, 0, 'a', 'b', 'c', 2, 0, 0, 0, 'x', 'y'};
    /* lengths add up to 13 exactly */
    assert_ok(kiln_bytes_validate(buf, 13, 2, NULL, &e), &e);
    assert_status(kiln_bytes_validate(buf, 12, 2, NULL, &e), KILN_INVALID_ARGUMENT, &e,
                  "element 1 declares 2 bytes but only 1 remain");
    assert_status(kiln_bytes_validate(buf, 9, 2, NULL, &e), KILN_INVALID_ARGUMENT, &e,
                  "length prefix at offset 7 is cut short (2 of 4 bytes left)");
    assert_status(kiln_bytes_validate(buf, 13, 3, NULL, &e), KILN_INVALID_ARGUMENT, &e,
                  "holds 2 elements, shape needs 3");
    assert_status(kiln_bytes_validate(buf, 13, 1, NULL, &e), KILN_INVALID_ARGUMENT, &e,
                  "more than the 1 elements");
    /* trailing garbage: 16 bytes where 13 are elements and 3 are a cut prefix */
    assert_status(kiln_bytes_validate(buf, 16, 2, NULL, &e), KILN_INVALID_ARGUMENT, &e,
                  "element 2: length prefix at offset 13 is cut short");
    uint8_t huge[8] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    assert_status(kiln_bytes_validate(huge, 8, 1, NULL, &e), KILN_INVALID_ARGUMENT, &e,
                  "declares 4294967295 bytes");
    /* a BYTES view validates its buffer */
    kiln_storage *s;
    assert_ok(kiln_storage_wrap(buf, 13, (kiln_device){0, 0}, NULL, NULL, &s, &e), &e);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {2}};
    assert_ok(kiln_tensor_view(s, 0, KILN_DTYPE_BYTES, &sh, 13, &t, &e), &e);
    kiln_tensor_fini(&t);
    sh.dims[0] = 3;
    assert_status(kiln_tensor_view(s, 0, KILN_DTYPE_BYTES, &sh, 13, &t, &e), KILN_INVALID_ARGUMENT,
                  &e, "shape needs 3");
    kiln_storage_unref(s);
}

static void cuda_storage_without_gpu(void **state)
{
    (void)state;
    kiln_err e;
    int n = -1;
    kiln_status st = kiln_cuda_device_count(&n, &e);
    kiln_storage *s = NULL;
    if (st == KILN_UNAVAILABLE) { /* built without CUDA */
        assert_int_equal(n, 0);
        assert_status(kiln_storage_create_cuda(0, 16, &s, &e), KILN_UNAVAILABLE, &e,
                      "built without CUDA");
        assert_null(s);
        return;
    }
    assert_int_equal(st, KILN_OK);
    if (n == 0) {
        assert_status(kiln_storage_create_cuda(0, 16, &s, &e), KILN_UNAVAILABLE, &e,
                      "does not exist (0 visible)");
        assert_null(s);
        return;
    }
    /* A GPU is present (device machine): allocate, view, free. */
    assert_ok(kiln_storage_create_cuda(0, 1 << 20, &s, &e), &e);
    assert_int_equal(kiln_storage_get_kind(s), KILN_STORAGE_CUDA);
    assert_int_equal(kiln_storage_device(s).kind, KILN_DEVICE_CUDA);
    kiln_tensor t;
    kiln_shape sh = {.rank = 1, .dims = {1 << 18}};
    assert_ok(kiln_tensor_view(s, 0, KILN_DTYPE_FP32, &sh, 0, &t, &e), &e);
    assert_int_equal(t.device.kind, KILN_DEVICE_CUDA);
    kiln_storage_unref(s);
    kiln_tensor_fini(&t);
    assert_status(kiln_storage_create_cuda(n, 16, &s, &e), KILN_UNAVAILABLE, &e, "does not exist");
    assert_status(kiln_storage_create_cuda(0, (size_t)1 << 50, &s, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "cannot allocate");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(heap_storage_aligned_and_refcounted),
        cmocka_unit_test(borrowed_release_called_once_after_last_view),
        cmocka_unit_test(wrap_errors_do_not_release),
        cmocka_unit_test(view_bounds_and_size_checks),
        cmocka_unit_test(alloc_tensor),
        cmocka_unit_test(bytes_encoding),
        cmocka_unit_test(bytes_bad_lengths),
        cmocka_unit_test(cuda_storage_without_gpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
