/* tools/kiln/tensor.c: the kiln tool's datatype table, shapes and tensor checks. */
#include "tools/kiln/tensor.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[KILN_CLI_DTYPE_COUNT] = {
    [KILN_CLI_INVALID] = {"INVALID", 0}, [KILN_CLI_BOOL] = {"BOOL", 1},
    [KILN_CLI_UINT8] = {"UINT8", 1},     [KILN_CLI_UINT16] = {"UINT16", 2},
    [KILN_CLI_UINT32] = {"UINT32", 4},   [KILN_CLI_UINT64] = {"UINT64", 8},
    [KILN_CLI_INT8] = {"INT8", 1},       [KILN_CLI_INT16] = {"INT16", 2},
    [KILN_CLI_INT32] = {"INT32", 4},     [KILN_CLI_INT64] = {"INT64", 8},
    [KILN_CLI_FP16] = {"FP16", 2},       [KILN_CLI_BF16] = {"BF16", 2},
    [KILN_CLI_FP32] = {"FP32", 4},       [KILN_CLI_FP64] = {"FP64", 8},
    [KILN_CLI_BYTES] = {"BYTES", 0},
};

const char *kiln_cli_dtype_name(kiln_cli_dtype d)
{
    return (unsigned)d < KILN_CLI_DTYPE_COUNT ? dtypes[d].name : "INVALID";
}

size_t kiln_cli_dtype_size(kiln_cli_dtype d)
{
    return (unsigned)d < KILN_CLI_DTYPE_COUNT ? dtypes[d].size : 0;
}

bool kiln_cli_dtype_is_int(kiln_cli_dtype d, bool *is_signed)
{
    bool s = d >= KILN_CLI_INT8 && d <= KILN_CLI_INT64;
    if (is_signed)
        *is_signed = s;
    return s || (d >= KILN_CLI_UINT8 && d <= KILN_CLI_UINT64);
}

kiln_status kiln_cli_dtype_parse(const char *s, kiln_cli_dtype *out, kiln_err *err)
{
    if (strcasecmp(s, "STRING") == 0) {
        *out = KILN_CLI_BYTES;
        return KILN_OK;
    }
    for (int d = 1; d < KILN_CLI_DTYPE_COUNT; d++) {
        if (strcasecmp(s, dtypes[d].name) == 0) {
            *out = (kiln_cli_dtype)d;
            return KILN_OK;
        }
    }
    return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                        "unknown datatype '%s' (BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, "
                        "FP32, FP64, BYTES)",
                        s);
}

void kiln_cli_tensor_fini(kiln_cli_tensor *t)
{
    if (!t)
        return;
    kiln_free(t->owner);
    memset(t, 0, sizeof(*t));
}

kiln_status kiln_cli_shape_count(const int64_t *shape, int rank, uint64_t *count, kiln_err *err)
{
    uint64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "dimension %d is %" PRId64 " (a size must be >= 0)", i, shape[i]);
        if (shape[i] && n > (uint64_t)INT64_MAX / (uint64_t)shape[i])
            return kiln_err_set(err, KILN_OUT_OF_RANGE,
                                "the shape's element count passes 2^63 at dimension %d", i);
        n *= (uint64_t)shape[i];
    }
    *count = n;
    return KILN_OK;
}

char *kiln_cli_shape_format(const int64_t *shape, int rank, char *buf, size_t cap)
{
    size_t off = 0;
    if (cap == 0)
        return buf;
    buf[0] = '\0';
    off += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < rank && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%" PRId64, i ? "," : "", shape[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "]");
    return buf;
}

kiln_status kiln_cli_shape_parse(const char *s, int64_t *shape, int *rank, kiln_err *err)
{
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    char close = *p == '[' ? ']' : *p == '(' ? ')' : '\0';
    if (close)
        p++;
    int n = 0;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if ((close && *p == close) || (!close && *p == '\0'))
            break;
        if (n == KILN_CLI_MAX_RANK)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape '%s' has more than %d dimensions", s, KILN_CLI_MAX_RANK);
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape '%s': dimension %d is not a size (an integer >= 0)", s, n);
        shape[n++] = v;
        p = end;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == ',')
            p++;
        else if (!((close && *p == close) || (!close && *p == '\0')))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape '%s': expected ',' after dimension %d", s, n - 1);
    }
    if (close) {
        p++;
        while (isspace((unsigned char)*p))
            p++;
        if (*p)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "shape '%s': text after '%c'", s,
                                close);
    }
    *rank = n;
    return KILN_OK;
}

kiln_status kiln_cli_tensor_check(const kiln_cli_tensor *t, kiln_err *err)
{
    uint64_t count;
    kiln_status st = kiln_cli_shape_count(t->shape, t->rank, &count, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "'%s'", t->name);
    if (t->dtype != KILN_CLI_BYTES) {
        uint64_t want = count * kiln_cli_dtype_size(t->dtype);
        if (count && want / count != kiln_cli_dtype_size(t->dtype))
            return kiln_err_set(err, KILN_OUT_OF_RANGE, "'%s': byte size overflows", t->name);
        if (want != t->byte_size) {
            char sh[128];
            return kiln_err_set(
                err, KILN_INVALID_ARGUMENT, "'%s': %s %s needs %" PRIu64 " bytes, have %zu",
                t->name, kiln_cli_dtype_name(t->dtype),
                kiln_cli_shape_format(t->shape, t->rank, sh, sizeof(sh)), want, t->byte_size);
        }
        return KILN_OK;
    }
    size_t off = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (t->byte_size - off < 4)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "'%s': BYTES element %" PRIu64 " of %" PRIu64
                                " has no length prefix (data ends at %zu bytes)",
                                t->name, i, count, t->byte_size);
        uint32_t len = (uint32_t)t->data[off] | (uint32_t)t->data[off + 1] << 8 |
                       (uint32_t)t->data[off + 2] << 16 | (uint32_t)t->data[off + 3] << 24;
        off += 4;
        if (t->byte_size - off < len)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "'%s': BYTES element %" PRIu64 " says %u bytes, %zu are left",
                                t->name, i, len, t->byte_size - off);
        off += len;
    }
    if (off != t->byte_size)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "'%s': %zu bytes after the %" PRIu64 " BYTES elements of its shape",
                            t->name, t->byte_size - off, count);
    return KILN_OK;
}

float kiln_cli_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    uint32_t bits;
    if (exp == 31)
        bits = sign | 0x7f800000u | (mant << 13);
    else
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t kiln_cli_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf or NaN (kept quiet) */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* 65520 and above round to Inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half (or zero); scaling is exact */
        float af;
        memcpy(&af, &ax, sizeof(af));
        return (uint16_t)(sign | (uint16_t)nearbyintf(af * 16777216.0f));
    }
    uint32_t h = (((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffff) >> 13);
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* a carry into the exponent is still right */
    return (uint16_t)(sign | h);
}

float kiln_cli_bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t kiln_cli_float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}
