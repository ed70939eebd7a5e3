/* Unit tests: tensor dtype table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tensor/tensor.h"
#include "tests/support.h"

static void sizes_and_names(void **state)
{
    (void)state;
    static const struct {
        kiln_dtype dt;
        size_t size;
        const char *name;
        const char *config;
    } want[] = {
        {KILN_DTYPE_BOOL, 1, "BOOL", "TYPE_BOOL"},
        {KILN_DTYPE_UINT8, 1, "UINT8", "TYPE_UINT8"},
        {KILN_DTYPE_UINT16, 2, "UINT16", "TYPE_UINT16"},
        {KILN_DTYPE_UINT32, 4, "UINT32", "TYPE_UINT32"},
        {KILN_DTYPE_UINT64, 8, "UINT64", "TYPE_UINT64"},
        {KILN_DTYPE_INT8, 1, "INT8", "TYPE_INT8"},
        {KILN_DTYPE_INT16, 2, "INT16", "TYPE_INT16"},
        {KILN_DTYPE_INT32, 4, "INT32", "TYPE_INT32"},
        {KILN_DTYPE_INT64, 8, "INT64", "TYPE_INT64"},
        {KILN_DTYPE_FP16, 2, "FP16", "TYPE_FP16"},
        {KILN_DTYPE_BF16, 2, "BF16", "TYPE_BF16"},
        {KILN_DTYPE_FP32, 4, "FP32", "TYPE_FP32"},
        {KILN_DTYPE_FP64, 8, "FP64", "TYPE_FP64"},
        {KILN_DTYPE_BYTES, 0, "BYTES", "TYPE_STRING"},
    };
    kiln_err e;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(kiln_dtype_size(want[i].dt), want[i].size);
        assert_string_equal(kiln_dtype_name(want[i].dt), want[i].name);
        assert_string_equal(kiln_dtype_config_name(want[i].dt), want[i].config);
        kiln_dtype got = KILN_DTYPE_INVALID;
        assert_ok(kiln_dtype_parse(want[i].name, &got, &e), &e);
        assert_int_equal(got, want[i].dt);
        got = KILN_DTYPE_INVALID;
        assert_ok(kiln_dtype_parse_config(want[i].config, &got, &e), &e);
        assert_int_equal(got, want[i].dt);
    }
    assert_int_equal(kiln_dtype_size((kiln_dtype)1000), 0);
    assert_string_equal(kiln_dtype_name((kiln_dtype)-1), "INVALID");
}

static void parse_errors(void **state)
{
    (void)state;
    kiln_err e;
    kiln_dtype dt = KILN_DTYPE_FP32;
    assert_status(kiln_dtype_parse("fp32", &dt, &e), KILN_INVALID_ARGUMENT, &e, "'fp32'");
    assert_status(kiln_dtype_parse("INVALID", &dt, &e), KILN_INVALID_ARGUMENT, &e, "KServe v2");
    assert_status(kiln_dtype_parse("", &dt, &e), KILN_INVALID_ARGUMENT, &e, "''");
    assert_status(kiln_dtype_parse(NULL, &dt, &e), KILN_INVALID_ARGUMENT, &e, "datatype");
    assert_status(kiln_dtype_parse_config("FP32", &dt, &e), KILN_INVALID_ARGUMENT, &e, "TYPE_FP32");
    assert_int_equal(dt, KILN_DTYPE_FP32); /* untouched on failure */
}

static void dlpack_round_trip(void **state)
{
    (void)state;
    kiln_err e;
    for (int i = KILN_DTYPE_BOOL; i < KILN_DTYPE_COUNT; i++) {
        DLDataType t;
        if (i == KILN_DTYPE_BYTES) {
            assert_false(kiln_dtype_to_dlpack((kiln_dtype)i, &t));
            continue;
        }
        assert_true(kiln_dtype_to_dlpack((kiln_dtype)i, &t));
        assert_int_equal(t.lanes, 1);
        assert_int_equal(t.bits, kiln_dtype_size((kiln_dtype)i) * 8);
        kiln_dtype back;
        assert_ok(kiln_dtype_from_dlpack(t, &back, &e), &e);
        assert_int_equal(back, i);
    }
    DLDataType f32 = {kDLFloat, 32, 1};
    kiln_dtype dt;
    assert_ok(kiln_dtype_from_dlpack(f32, &dt, &e), &e);
    assert_int_equal(dt, KILN_DTYPE_FP32);
    DLDataType bf = {kDLBfloat, 16, 1};
    assert_ok(kiln_dtype_from_dlpack(bf, &dt, &e), &e);
    assert_int_equal(dt, KILN_DTYPE_BF16);
    DLDataType vec = {kDLFloat, 32, 4};
    assert_status(kiln_dtype_from_dlpack(vec, &dt, &e), KILN_INVALID_ARGUMENT, &e, "lanes 4");
    DLDataType odd = {kDLInt, 12, 1};
    assert_status(kiln_dtype_from_dlpack(odd, &dt, &e), KILN_INVALID_ARGUMENT, &e, "bits 12");
    DLDataType cplx = {kDLComplex, 64, 1};
    assert_status(kiln_dtype_from_dlpack(cplx, &dt, &e), KILN_INVALID_ARGUMENT, &e, "code 5");
    assert_false(kiln_dtype_to_dlpack(KILN_DTYPE_INVALID, &f32));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_and_names),
        cmocka_unit_test(parse_errors),
        cmocka_unit_test(dlpack_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
