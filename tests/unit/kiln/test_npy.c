/* Unit tests: tools/kiln/npy (the kiln tool's .npy reader and writer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support.h"
#include "tools/kiln/npy.h"

/* A .npy image: preamble of `major`, the dict padded as NumPy does, then data[n]. */
static size_t make_npy(uint8_t *out, int major, const char *dict, const void *data, size_t n)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = pre + dl + 1, pad = (64 - total % 64) % 64, hlen = dl + pad + 1;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (uint8_t)major;
    out[7] = 0;
    if (major == 1) {
        out[8] = (uint8_t)hlen;
        out[9] = (uint8_t)(hlen >> 8);
    } else {
        out[8] = (uint8_t)hlen;
        out[9] = (uint8_t)(hlen >> 8);
        out[10] = 0;
        out[11] = 0;
    }
    memcpy(out + pre, dict, dl);
    memset(out + pre + dl, ' ', pad);
    out[pre + dl + pad] = '\n';
    if (n)
        memcpy(out + pre + hlen, data, n);
    return pre + hlen + n;
}

static kiln_status parse_dict(const char *dict, const void *data, size_t n, kiln_cli_tensor *t,
                              kiln_err *err)
{
    static uint8_t buf[4096];
    size_t len = make_npy(buf, 1, dict, data, n);
    memset(t, 0, sizeof(*t));
    return kiln_cli_npy_parse(buf, len, t, err);
}

static void good_versions_and_dtypes(void **state)
{
    (void)state;
    static uint8_t buf[4096];
    int32_t v[6] = {1, 2, 3, 4, 5, -6};
    kiln_err err;
    for (int major = 1; major <= 3; major++) {
        kiln_cli_tensor t = {0};
        size_t len =
            make_npy(buf, major, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", v,
                     sizeof(v));
        assert_ok(kiln_cli_npy_parse(buf, len, &t, &err), &err);
        assert_int_equal(t.dtype, KILN_CLI_INT32);
        assert_int_equal(t.rank, 2);
        assert_int_equal(t.shape[0], 2);
        assert_int_equal(t.shape[1], 3);
        assert_int_equal(t.byte_size, sizeof(v));
        assert_memory_equal(t.data, v, sizeof(v));
        assert_null(t.owner); /* a view into buf */
    }
    static const struct {
        const char *descr;
        kiln_cli_dtype dt;
        size_t size;
    } cases[] = {
        {"<f4", KILN_CLI_FP32, 4},   {"<f8", KILN_CLI_FP64, 8},   {"<f2", KILN_CLI_FP16, 2},
        {"|i1", KILN_CLI_INT8, 1},   {"<i1", KILN_CLI_INT8, 1},   {"<i2", KILN_CLI_INT16, 2},
        {"<i8", KILN_CLI_INT64, 8},  {"|u1", KILN_CLI_UINT8, 1},  {"<u2", KILN_CLI_UINT16, 2},
        {"<u4", KILN_CLI_UINT32, 4}, {"<u8", KILN_CLI_UINT64, 8}, {"|b1", KILN_CLI_BOOL, 1}};
    uint8_t data[32] = {1};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char dict[128];
        /* keys in another order, double quotes, a 1-tuple: all as NumPy may write them */
        snprintf(dict, sizeof(dict),
                 "{\"shape\": (4,), \"fortran_order\": False, \"descr\": \"%s\"}", cases[i].descr);
        kiln_cli_tensor t;
        assert_ok(parse_dict(dict, data, 4 * cases[i].size, &t, &err), &err);
        assert_int_equal(t.dtype, cases[i].dt);
        assert_int_equal(t.rank, 1);
        assert_int_equal(t.shape[0], 4);
    }
    /* a scalar, and a Python 2 long in a shape */
    kiln_cli_tensor t;
    double d = 2.5;
    assert_ok(
        parse_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &d, 8, &t, &err),
        &err);
    assert_int_equal(t.rank, 0);
    assert_ok(
        parse_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (1L,), }", &d, 8, &t, &err),
        &err);
    assert_int_equal(t.shape[0], 1);
    /* zero elements */
    assert_ok(parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", NULL, 0, &t,
                         &err),
              &err);
    assert_int_equal(t.byte_size, 0);
}

static void strings_become_bytes(void **state)
{
    (void)state;
    kiln_err err;
    kiln_cli_tensor t;
    /* |S3: "ab\0", "xyz" */
    assert_ok(parse_dict("{'descr': '|S3', 'fortran_order': False, 'shape': (2,), }", "ab\0xyz", 6,
                         &t, &err),
              &err);
    assert_int_equal(t.dtype, KILN_CLI_BYTES);
    assert_non_null(t.owner);
    assert_int_equal(t.byte_size, 4 + 2 + 4 + 3);
    assert_memory_equal(t.data, "\x02\0\0\0ab\x03\0\0\0xyz", 13);
    kiln_cli_tensor_fini(&t);
    /* <U2: "é", "a" in UTF-32 -> UTF-8 */
    uint32_t u[4] = {0xe9, 0, 'a', 0};
    assert_ok(parse_dict("{'descr': '<U2', 'fortran_order': False, 'shape': (2,), }", u, sizeof(u),
                         &t, &err),
              &err);
    assert_int_equal(t.byte_size, 4 + 2 + 4 + 1);
    assert_memory_equal(t.data, "\x02\0\0\0\xc3\xa9\x01\0\0\0a", 11);
    kiln_cli_tensor_fini(&t);
    uint32_t bad[1] = {0xd800};
    assert_status(
        parse_dict("{'descr': '<U1', 'fortran_order': False, 'shape': (1,), }", bad, 4, &t, &err),
        KILN_INVALID_ARGUMENT, &err, "invalid code point U+D800");
}

static void bad_preamble(void **state)
{
    (void)state;
    kiln_err err;
    kiln_cli_tensor t = {0};
    assert_status(kiln_cli_npy_parse((const uint8_t *)"\x93NU", 3, &t, &err), KILN_INVALID_ARGUMENT,
                  &err, "truncated");
    assert_status(kiln_cli_npy_parse((const uint8_t *)"PK\x03\x04zipfile", 11, &t, &err),
                  KILN_INVALID_ARGUMENT, &err, "not a .npy file");
    assert_status(kiln_cli_npy_parse((const uint8_t *)"\x93NUMPY\x01", 7, &t, &err),
                  KILN_INVALID_ARGUMENT, &err, "truncated");
    assert_status(kiln_cli_npy_parse((const uint8_t *)"\x93NUMPY\x04\x00\x10\x00", 10, &t, &err),
                  KILN_INVALID_ARGUMENT, &err, "version 4.0 is not supported");
    assert_status(kiln_cli_npy_parse((const uint8_t *)"\x93NUMPY\x01\x01\x10\x00", 10, &t, &err),
                  KILN_INVALID_ARGUMENT, &err, "version 1.1");
    assert_status(kiln_cli_npy_parse((const uint8_t *)"\x93NUMPY\x02\x00\x10\x00", 10, &t, &err),
                  KILN_INVALID_ARGUMENT, &err, "version 2.0 preamble");
    /* header length past the end of the file */
    assert_status(
        kiln_cli_npy_parse((const uint8_t *)"\x93NUMPY\x01\x00\x76\x00{'de", 14, &t, &err),
        KILN_INVALID_ARGUMENT, &err, "truncated header: it says 118 bytes");
    assert_int_equal(t.dtype, KILN_CLI_INVALID); /* untouched on failure */
}

static void bad_dicts(void **state)
{
    (void)state;
    static const struct {
        const char *dict, *needle;
    } cases[] = {
        {"['descr', '<f4']", "not a dict"},
        {"{'descr': '<f4', 'fortran_order': False}", "no 'shape' key"},
        {"{'fortran_order': False, 'shape': (1,)}", "no 'descr' key"},
        {"{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order' key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
         "unknown key 'extra'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
         "'descr' appears twice"},
        {"{'descr': <f4, 'fortran_order': False, 'shape': (1,)}", "'descr' is not a quoted"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "'<f4, ' is not a NumPy type"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}'"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "not True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "'shape' is not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "not a non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", "expected ',' or ')'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}",
         "more than 8 dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "text after the dict"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "no ':' after key 'descr'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,", "dimension 1 is not a"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured dtypes"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}", "Fortran"},
    };
    float data[4] = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_err err;
        kiln_cli_tensor t;
        print_message("case %zu: %s\n", i, cases[i].dict);
        assert_status(parse_dict(cases[i].dict, data, 4, &t, &err), KILN_INVALID_ARGUMENT, &err,
                      cases[i].needle);
    }
}

static void unsupported_dtypes(void **state)
{
    (void)state;
    static const struct {
        const char *descr, *needle;
    } cases[] = {
        {">f4", "big-endian; only little-endian is supported (convert with a.astype('<f4'))"},
        {">i8", "a.astype('<i8')"},
        {">U3", "big-endian"},
        {"<c8", "dtype '<c8' is not supported (supported: <f2"},
        {"|O", "object arrays"},
        {"<M8", "dtype '<M8' is not supported"},
        {"<f16", "'<f16' is not supported"},
        {"|f4", "'|' (no byte order) on a 4-byte type"},
        {"<V8", "is not supported"},
        {"f4", "not a NumPy type string"},
        {"", "not a NumPy type string"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char dict[128];
        snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (1,), }",
                 cases[i].descr);
        kiln_err err;
        kiln_cli_tensor t;
        print_message("case %s\n", cases[i].descr);
        assert_status(parse_dict(dict, "12345678", 8, &t, &err), KILN_INVALID_ARGUMENT, &err,
                      cases[i].needle);
    }
}

static void size_mismatch(void **state)
{
    (void)state;
    kiln_err err;
    kiln_cli_tensor t;
    float d[5] = {0};
    assert_status(
        parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", d, 12, &t, &err),
        KILN_INVALID_ARGUMENT, &err,
        "truncated data: shape [2,2] of 4-byte elements needs 16 bytes of data, the "
        "file has 12");
    assert_status(
        parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", d, 20, &t, &err),
        KILN_INVALID_ARGUMENT, &err, "size mismatch");
}

static void write_then_read(void **state)
{
    (void)state;
    char path[] = "/tmp/kiln-npy-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    int16_t v[6] = {1, -2, 3, -4, 5, -6};
    kiln_cli_tensor t = {.name = "x",
                         .dtype = KILN_CLI_INT16,
                         .rank = 2,
                         .shape = {3, 2},
                         .data = (const uint8_t *)v,
                         .byte_size = sizeof(v)};
    kiln_err err;
    assert_ok(kiln_cli_npy_save(path, &t, &err), &err);
    /* the header is what NumPy writes: 64-byte aligned, ends in a newline */
    FILE *f = fopen(path, "rb");
    uint8_t buf[256];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_int_equal(n, 128 + sizeof(v));
    assert_int_equal(buf[8] + 10, 128);
    assert_int_equal(buf[127], '\n');
    assert_memory_equal(buf + 10, "{'descr': '<i2', 'fortran_order': False, 'shape': (3, 2), }",
                        59);
    kiln_cli_tensor r = {0};
    assert_ok(kiln_cli_npy_load(path, &r, &err), &err);
    assert_int_equal(r.dtype, KILN_CLI_INT16);
    assert_int_equal(r.shape[0], 3);
    assert_memory_equal(r.data, v, sizeof(v));
    kiln_cli_tensor_fini(&r);

    /* 1-D shapes are written "(4,)"; BYTES as |S<longest>; BF16 widened to <f4 */
    const uint8_t bytes[] = "\x01\0\0\0a\x03\0\0\0xyz";
    kiln_cli_tensor s = {.name = "s",
                         .dtype = KILN_CLI_BYTES,
                         .rank = 1,
                         .shape = {2},
                         .data = bytes,
                         .byte_size = 12};
    assert_ok(kiln_cli_npy_save(path, &s, &err), &err);
    assert_ok(kiln_cli_npy_load(path, &r, &err), &err);
    assert_int_equal(r.dtype, KILN_CLI_BYTES);
    assert_int_equal(r.byte_size, 12);
    assert_memory_equal(r.data, bytes, 12);
    kiln_cli_tensor_fini(&r);
    uint16_t bf[2] = {0x3f80, 0xc000}; /* 1.0, -2.0 */
    kiln_cli_tensor b = {.name = "b",
                         .dtype = KILN_CLI_BF16,
                         .rank = 1,
                         .shape = {2},
                         .data = (const uint8_t *)bf,
                         .byte_size = 4};
    assert_ok(kiln_cli_npy_save(path, &b, &err), &err);
    assert_ok(kiln_cli_npy_load(path, &r, &err), &err);
    assert_int_equal(r.dtype, KILN_CLI_FP32);
    const float want[2] = {1.0f, -2.0f};
    assert_memory_equal(r.data, want, 8);
    kiln_cli_tensor_fini(&r);

    /* a tensor whose bytes do not fit its shape is not written */
    t.byte_size = 10;
    assert_status(kiln_cli_npy_save(path, &t, &err), KILN_INVALID_ARGUMENT, &err,
                  "needs 12 bytes, have 10");
    unlink(path);
    /* missing files and directories */
    assert_status(kiln_cli_npy_load("/nonexistent/x.npy", &r, &err), KILN_NOT_FOUND, &err,
                  "/nonexistent/x.npy: No such file");
    assert_status(kiln_cli_npy_load("/tmp", &r, &err), KILN_INVALID_ARGUMENT, &err,
                  "not a regular file");
    assert_status(kiln_cli_npy_save("/nonexistent/y.npy", &t, &err), KILN_NOT_FOUND, &err,
                  "No such file");
}

static void load_names_the_file(void **state)
{
    (void)state;
    char path[] = "/tmp/kiln-npy-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x93NUMPY\x01\x00\x04\x00{}  ", 14), 14);
    close(fd);
    kiln_err err;
    kiln_cli_tensor t = {0};
    assert_status(kiln_cli_npy_load(path, &t, &err), KILN_INVALID_ARGUMENT, &err, path);
    assert_non_null(strstr(err.msg, "no 'descr' key"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_versions_and_dtypes),
        cmocka_unit_test(strings_become_bytes),
        cmocka_unit_test(bad_preamble),
        cmocka_unit_test(bad_dicts),
        cmocka_unit_test(unsupported_dtypes),
        cmocka_unit_test(size_mismatch),
        cmocka_unit_test(write_then_read),
        cmocka_unit_test(load_names_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
