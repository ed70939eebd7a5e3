/* Unit tests: tensor shapes (limits, overflow, caps, wildcard matching, formatting). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tensor/tensor.h"
#include "tests/support.h"

static void set_and_numel(void **state)
{
    (void)state;
    kiln_err e;
    kiln_shape s;
    int64_t d[] = {2, 3, 4};
    assert_ok(kiln_shape_set(&s, d, 3, &e), &e);
    uint64_t n;
    assert_ok(kiln_shape_numel(&s, &n, &e), &e);
    assert_int_equal(n, 24);
    assert_ok(kiln_shape_set(&s, NULL, 0, &e), &e); /* scalar */
    assert_ok(kiln_shape_numel(&s, &n, &e), &e);
    assert_int_equal(n, 1);
    int64_t z[] = {5, 0, 7};
    assert_ok(kiln_shape_set(&s, z, 3, &e), &e);
    assert_ok(kiln_shape_numel(&s, &n, &e), &e);
    assert_int_equal(n, 0);
}

static void set_errors(void **state)
{
    (void)state;
    kiln_err e;
    kiln_shape s = {.rank = 1, .dims = {9}};
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_status(kiln_shape_set(&s, nine, 9, &e), KILN_INVALID_ARGUMENT, &e, "rank 9, limit is 8");
    assert_ok(kiln_shape_set(&s, nine, 8, &e), &e);
    int64_t neg[] = {2, -1};
    assert_status(kiln_shape_set(&s, neg, 2, &e), KILN_INVALID_ARGUMENT, &e, "dim 1 is -1");
    assert_ok(kiln_shape_set_pattern(&s, neg, 2, &e), &e);
    int64_t neg2[] = {-2};
    assert_status(kiln_shape_set_pattern(&s, neg2, 1, &e), KILN_INVALID_ARGUMENT, &e, ">= -1");
    uint64_t n;
    assert_status(kiln_shape_numel(&s, &n, &e), KILN_INVALID_ARGUMENT, &e, "negative dim");
}

static void overflow_detected(void **state)
{
    (void)state;
    kiln_err e;
    kiln_shape s;
    int64_t big[] = {INT64_MAX, INT64_MAX};
    assert_ok(kiln_shape_set(&s, big, 2, &e), &e);
    uint64_t n;
    assert_status(kiln_shape_numel(&s, &n, &e), KILN_INVALID_ARGUMENT, &e, "overflows 64 bits");
    /* element count fits but byte size does not */
    int64_t b2[] = {INT64_C(1) << 62};
    assert_ok(kiln_shape_set(&s, b2, 1, &e), &e);
    assert_ok(kiln_shape_numel(&s, &n, &e), &e);
    assert_status(kiln_shape_byte_size(KILN_DTYPE_FP32, &s, 0, &n, &e), KILN_INVALID_ARGUMENT, &e,
                  "byte size overflows");
    /* the product of many dims, each small */
    int64_t many[] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
    assert_ok(kiln_shape_set(&s, many, 4, &e), &e);
    assert_status(kiln_shape_numel(&s, &n, &e), KILN_INVALID_ARGUMENT, &e, "overflows");
}

static void byte_size_and_cap(void **state)
{
    (void)state;
    kiln_err e;
    kiln_shape s;
    int64_t d[] = {8, 16};
    assert_ok(kiln_shape_set(&s, d, 2, &e), &e);
    uint64_t b;
    assert_ok(kiln_shape_byte_size(KILN_DTYPE_INT32, &s, 0, &b, &e), &e);
    assert_int_equal(b, 512);
    assert_ok(kiln_shape_byte_size(KILN_DTYPE_INT32, &s, 512, &b, &e), &e);
    assert_status(kiln_shape_byte_size(KILN_DTYPE_INT32, &s, 511, &b, &e), KILN_RESOURCE_EXHAUSTED,
                  &e, "512 bytes, over the limit of 511");
    assert_status(kiln_shape_byte_size(KILN_DTYPE_BYTES, &s, 0, &b, &e), KILN_INVALID_ARGUMENT, &e,
                  "BYTES has no fixed element size");
    assert_status(kiln_shape_byte_size(KILN_DTYPE_INVALID, &s, 0, &b, &e), KILN_INVALID_ARGUMENT,
                  &e, "INVALID");
}

static void match_with_wildcards(void **state)
{
    (void)state;
    kiln_err e;
    kiln_shape pat, act;
    int64_t p[] = {-1, 16};
    int64_t a[] = {4, 16};
    int64_t bad[] = {4, 15};
    assert_ok(kiln_shape_set_pattern(&pat, p, 2, &e), &e);
    assert_ok(kiln_shape_set(&act, a, 2, &e), &e);
    assert_ok(kiln_shape_match(&pat, &act, &e), &e);
    assert_ok(kiln_shape_set(&act, bad, 2, &e), &e);
    assert_status(kiln_shape_match(&pat, &act, &e), KILN_INVALID_ARGUMENT, &e,
                  "shape [4,15] does not match [-1,16] at dim 1 (15 != 16)");
    assert_ok(kiln_shape_set(&act, a, 1, &e), &e);
    assert_status(kiln_shape_match(&pat, &act, &e), KILN_INVALID_ARGUMENT, &e,
                  "has rank 1, expected rank 2");
    assert_true(kiln_shape_equal(&act, &act));
    assert_false(kiln_shape_equal(&act, &pat));
}

static void format(void **state)
{
    (void)state;
    kiln_shape s = {.rank = 3, .dims = {1, -1, 300}};
    char buf[64];
    assert_string_equal(kiln_shape_format(&s, buf, sizeof(buf)), "[1,-1,300]");
    s.rank = 0;
    assert_string_equal(kiln_shape_format(&s, buf, sizeof(buf)), "[]");
    s.rank = 3;
    char tiny[5];
    kiln_shape_format(&s, tiny, sizeof(tiny));
    assert_int_equal(strlen(tiny), 4); /* truncated, still terminated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_and_numel),        cmocka_unit_test(set_errors),
        cmocka_unit_test(overflow_detected),    cmocka_unit_test(byte_size_and_cap),
        cmocka_unit_test(match_with_wildcards), cmocka_unit_test(format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
