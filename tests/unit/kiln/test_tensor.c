/* Unit tests: tools/kiln/tensor (datatypes, shapes, tensor checks, half floats). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/support.h"
#include "tools/kiln/tensor.h"

static void dtypes_and_shapes(void **state)
{
    (void)state;
    kiln_cli_dtype d;
    kiln_err err;
    assert_ok(kiln_cli_dtype_parse("fp32", &d, &err), &err);
    assert_int_equal(d, KILN_CLI_FP32);
    assert_ok(kiln_cli_dtype_parse("STRING", &d, &err), &err);
    assert_int_equal(d, KILN_CLI_BYTES);
    assert_status(kiln_cli_dtype_parse("float", &d, &err), KILN_INVALID_ARGUMENT, &err,
                  "unknown datatype 'float'");
    assert_string_equal(kiln_cli_dtype_name(KILN_CLI_UINT64), "UINT64");
    assert_string_equal(kiln_cli_dtype_name((kiln_cli_dtype)99), "INVALID");
    int64_t s[KILN_CLI_MAX_RANK];
    int rank;
    assert_ok(kiln_cli_shape_parse("1,16", s, &rank, &err), &err);
    assert_int_equal(rank, 2);
    assert_int_equal(s[1], 16);
    assert_ok(kiln_cli_shape_parse(" [ 2 , 3 ] ", s, &rank, &err), &err);
    assert_int_equal(rank, 2);
    assert_ok(kiln_cli_shape_parse("[]", s, &rank, &err), &err);
    assert_int_equal(rank, 0);
    assert_status(kiln_cli_shape_parse("1,-2", s, &rank, &err), KILN_INVALID_ARGUMENT, &err,
                  "dimension 1 is not a size");
    assert_status(kiln_cli_shape_parse("1;2", s, &rank, &err), KILN_INVALID_ARGUMENT, &err,
                  "expected ','");
    assert_status(kiln_cli_shape_parse("[1,2] x", s, &rank, &err), KILN_INVALID_ARGUMENT, &err,
                  "text after");
    assert_status(kiln_cli_shape_parse("1,1,1,1,1,1,1,1,1", s, &rank, &err), KILN_INVALID_ARGUMENT,
                  &err, "more than 8");
    char buf[64];
    int64_t sh[3] = {1, -1, 16};
    assert_string_equal(kiln_cli_shape_format(sh, 3, buf, sizeof(buf)), "[1,-1,16]");
    assert_string_equal(kiln_cli_shape_format(sh, 0, buf, sizeof(buf)), "[]");
    uint64_t n;
    int64_t big[2] = {INT64_MAX, 2};
    assert_status(kiln_cli_shape_count(big, 2, &n, &err), KILN_OUT_OF_RANGE, &err, "2^63");
    assert_status(kiln_cli_shape_count(sh, 3, &n, &err), KILN_INVALID_ARGUMENT, &err,
                  "dimension 1 is -1");
    /* tensor checks */
    kiln_cli_tensor t = {.name = "b",
                         .dtype = KILN_CLI_BYTES,
                         .rank = 1,
                         .shape = {2},
                         .data = (const uint8_t *)"\1\0\0\0a\5\0\0\0b",
                         .byte_size = 10};
    assert_status(kiln_cli_tensor_check(&t, &err), KILN_INVALID_ARGUMENT, &err,
                  "'b': BYTES element 1 says 5 bytes, 1 are left");
    t.shape[0] = 1;
    assert_status(kiln_cli_tensor_check(&t, &err), KILN_INVALID_ARGUMENT, &err,
                  "5 bytes after the 1 BYTES elements");
    t.shape[0] = 3;
    t.byte_size = 5;
    assert_status(kiln_cli_tensor_check(&t, &err), KILN_INVALID_ARGUMENT, &err,
                  "element 1 of 3 has no length prefix");
}

static void half_floats(void **state)
{
    (void)state;
    /* every half converts to float and back unchanged (NaNs stay NaN) */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kiln_cli_half_to_float((uint16_t)h);
        uint16_t back = kiln_cli_float_to_half(f);
        if (isnan(f))
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        else
            assert_int_equal(back, h);
    }
    assert_int_equal(kiln_cli_float_to_half(65520.0f), 0x7c00);           /* rounds to Inf */
    assert_int_equal(kiln_cli_float_to_half(65519.0f), 0x7bff);           /* to the largest half */
    assert_int_equal(kiln_cli_float_to_half(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    assert_int_equal(kiln_cli_float_to_half(1e-9f), 0);
    assert_int_equal(kiln_cli_float_to_bf16(1.0f), 0x3f80);
    assert_true(isnan(kiln_cli_bf16_to_float(kiln_cli_float_to_bf16(NAN))));
    assert_true(kiln_cli_bf16_to_float(0xc020) == -2.5f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dtypes_and_shapes),
        cmocka_unit_test(half_floats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
