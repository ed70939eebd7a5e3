/* Unit tests: tools/kiln/tensor_json (tensors from JSON, and printed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/support.h"
#include "tools/kiln/tensor_json.h"

static const char *printed(const kiln_cli_tensor *t, bool json)
{
    static char buf[4096];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    kiln_cli_tensor_print(f, t, json);
    fclose(f);
    return buf;
}

static void ints_and_shapes(void **state)
{
    (void)state;
    kiln_cli_tensor t = {.name = "x"};
    kiln_err err;
    assert_ok(kiln_cli_tensor_parse_json("[[1, 2, 3], [4, 5, -6]]", KILN_CLI_INT32, &t, &err),
              &err);
    assert_string_equal(t.name, "x");
    assert_int_equal(t.rank, 2);
    assert_int_equal(t.shape[0], 2);
    assert_int_equal(t.shape[1], 3);
    assert_int_equal(t.byte_size, 24);
    const int32_t want[6] = {1, 2, 3, 4, 5, -6};
    assert_memory_equal(t.data, want, sizeof(want));
    assert_ok(kiln_cli_tensor_check(&t, &err), &err);
    assert_string_equal(printed(&t, false), "[[1, 2, 3], [4, 5, -6]]");
    assert_string_equal(printed(&t, true), "[[1,2,3],[4,5,-6]]");
    kiln_cli_tensor_fini(&t);
    /* a scalar, empty arrays, 64-bit extremes */
    assert_ok(kiln_cli_tensor_parse_json("7", KILN_CLI_INT8, &t, &err), &err);
    assert_int_equal(t.rank, 0);
    assert_int_equal(t.byte_size, 1);
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[[], []]", KILN_CLI_FP32, &t, &err), &err);
    assert_int_equal(t.rank, 2);
    assert_int_equal(t.shape[1], 0);
    assert_int_equal(t.byte_size, 0);
    assert_string_equal(printed(&t, false), "[[], []]");
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[-9223372036854775808, 9223372036854775807]",
                                         KILN_CLI_INT64, &t, &err),
              &err);
    assert_string_equal(printed(&t, true), "[-9223372036854775808,9223372036854775807]");
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[18446744073709551615, 0]", KILN_CLI_UINT64, &t, &err),
              &err);
    assert_string_equal(printed(&t, true), "[18446744073709551615,0]");
    kiln_cli_tensor_fini(&t);
}

static void floats_bools_bytes(void **state)
{
    (void)state;
    kiln_cli_tensor t = {0};
    kiln_err err;
    assert_ok(kiln_cli_tensor_parse_json("[0.1, -2, 1e3, \"NaN\", \"-Infinity\"]", KILN_CLI_FP32,
                                         &t, &err),
              &err);
    const float *f = (const float *)t.data;
    assert_true(f[0] == 0.1f && f[1] == -2.0f && f[2] == 1000.0f && isnan(f[3]) && isinf(f[4]) &&
                f[4] < 0);
    assert_string_equal(printed(&t, false), "[0.1, -2, 1000, nan, -inf]");
    assert_string_equal(printed(&t, true),
                        "[0.100000001,-2,1000,\"NaN\",\"-Infinity\"]"); /* exact for FP32 */
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[0.1]", KILN_CLI_FP64, &t, &err), &err);
    assert_string_equal(printed(&t, true), "[0.10000000000000001]");
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[1.5, 65504, -0.000061035156]", KILN_CLI_FP16, &t, &err),
              &err);
    const uint16_t h[3] = {0x3e00, 0x7bff, 0x8400};
    assert_memory_equal(t.data, h, sizeof(h));
    assert_string_equal(printed(&t, false), "[1.5, 65504, -6.10352e-05]");
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[1.0, -2.5]", KILN_CLI_BF16, &t, &err), &err);
    const uint16_t b[2] = {0x3f80, 0xc020};
    assert_memory_equal(t.data, b, sizeof(b));
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[true, false, 1, 0]", KILN_CLI_BOOL, &t, &err), &err);
    assert_memory_equal(t.data, "\1\0\1\0", 4);
    assert_string_equal(printed(&t, false), "[true, false, true, false]");
    kiln_cli_tensor_fini(&t);
    assert_ok(kiln_cli_tensor_parse_json("[\"ab\", \"\", \"\\u00e9\"]", KILN_CLI_BYTES, &t, &err),
              &err);
    assert_int_equal(t.byte_size, 4 + 2 + 4 + 4 + 2);
    assert_memory_equal(t.data, "\2\0\0\0ab\0\0\0\0\2\0\0\0\xc3\xa9", 16);
    assert_ok(kiln_cli_tensor_check(&t, &err), &err);
    assert_string_equal(printed(&t, true), "[\"ab\",\"\",\"\xc3\xa9\"]");
    kiln_cli_tensor_fini(&t);
}

static void element_errors_name_the_element(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        kiln_cli_dtype dt;
        const char *needle;
    } cases[] = {
        {"[[1, 2], [3]]", KILN_CLI_INT32, "element [1]: expected an array of 2"},
        {"[[1, 2], 3]", KILN_CLI_INT32, "element [1]: expected an array of 2"},
        {"[1, [2]]", KILN_CLI_INT32, "element [1]: an array where an element was expected"},
        {"[1, {}]", KILN_CLI_INT32, "element [1]: an object where"},
        {"[[1, 1.5]]", KILN_CLI_INT32, "element [0][1]: 1.5 is not an integer (INT32)"},
        {"[1, \"2\"]", KILN_CLI_INT64, "element [1]: INT64 elements are integers"},
        {"[128]", KILN_CLI_INT8, "element [0]: 128 is out of INT8 range"},
        {"[-129]", KILN_CLI_INT8, "-129 is out of INT8 range"},
        {"[-1]", KILN_CLI_UINT16, "-1 is out of UINT16 range"},
        {"[65536]", KILN_CLI_UINT16, "65536 is out of UINT16 range"},
        {"[9223372036854775808]", KILN_CLI_INT64, "out of INT64 range"},
        {"[18446744073709551616]", KILN_CLI_UINT64, "out of UINT64 range"},
        {"[2147483648]", KILN_CLI_INT32, "out of INT32 range"},
        {"[1e39]", KILN_CLI_FP32, "1e39 is out of FP32 range"},
        {"[70000]", KILN_CLI_FP16, "out of FP16 range"},
        {"[true]", KILN_CLI_FP32, "FP32 elements are numbers"},
        {"[\"x\"]", KILN_CLI_FP64, "FP64 elements are numbers"},
        {"[2]", KILN_CLI_BOOL, "BOOL elements are true or false"},
        {"[1]", KILN_CLI_BYTES, "element [0]: BYTES elements are strings"},
        {"null", KILN_CLI_INT32, "element (the scalar): INT32 elements are integers"},
        {"[[[[[[[[[1]]]]]]]]]", KILN_CLI_INT32, "deeper than 8 dimensions"},
        {"[1,", KILN_CLI_INT32, "JSON ends at offset 3"},
        {"[1]", KILN_CLI_INVALID, "no datatype"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_cli_tensor t = {0};
        kiln_err err;
        print_message("case %zu: %s\n", i, cases[i].text);
        assert_status(kiln_cli_tensor_parse_json(cases[i].text, cases[i].dt, &t, &err),
                      KILN_INVALID_ARGUMENT, &err, cases[i].needle);
        assert_null(t.owner);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ints_and_shapes),
        cmocka_unit_test(floats_bools_bytes),
        cmocka_unit_test(element_errors_name_the_element),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
