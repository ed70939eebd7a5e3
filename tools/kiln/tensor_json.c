/* tools/kiln/tensor_json.c: tensors from JSON text, and tensors printed. */
#include "tools/kiln/tensor_json.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"

/* Elements are stored in host order, which the wire (little-endian) requires to be. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the kiln tool needs a little-endian "
                                                          "host");

typedef struct builder {
    kiln_cli_dtype dtype;
    int rank;
    int64_t shape[KILN_CLI_MAX_RANK];
    int64_t path[KILN_CLI_MAX_RANK];
    uint8_t *out;
    size_t off;
    kiln_err *err;
} builder;

static const char *path_str(const builder *b, int depth, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "element ");
    for (int i = 0; i < depth && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "[%" PRId64 "]", b->path[i]);
    if (depth == 0)
        snprintf(buf + n, cap - n, "(the scalar)");
    return buf;
}

static bool is_integer_text(const char *s)
{
    return !strpbrk(s, ".eE");
}

/* A non-finite float given as a string; false when s is not one of them. */
static bool special_float(const char *s, double *out)
{
    if (strcasecmp(s, "nan") == 0) {
        *out = NAN;
        return true;
    }
    if (strcasecmp(s, "inf") == 0 || strcasecmp(s, "infinity") == 0 || strcasecmp(s, "+inf") == 0 ||
        strcasecmp(s, "+infinity") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcasecmp(s, "-inf") == 0 || strcasecmp(s, "-infinity") == 0) {
        *out = -INFINITY;
        return true;
    }
    return false;
}

/* Writes one element v at b->out + b->off (or only counts its size when b->out is NULL). */
static kiln_status element(builder *b, const kiln_cli_json *v, int depth)
{
    char where[160];
    const char *dt = kiln_cli_dtype_name(b->dtype);
    bool is_signed;
    size_t size = kiln_cli_dtype_size(b->dtype);
    if (b->dtype == KILN_CLI_BYTES) {
        if (v->type != KILN_CLI_JSON_STRING)
            return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: BYTES elements are strings",
                                path_str(b, depth, where, sizeof(where)));
        if (v->len > UINT32_MAX)
            return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: longer than 4 GiB",
                                path_str(b, depth, where, sizeof(where)));
        if (b->out) {
            uint32_t n = (uint32_t)v->len;
            memcpy(b->out + b->off, &n, 4);
            memcpy(b->out + b->off + 4, v->text, v->len);
        }
        b->off += 4 + v->len;
        return KILN_OK;
    }
    uint8_t *o = b->out ? b->out + b->off : NULL;
    b->off += size;
    if (b->dtype == KILN_CLI_BOOL) {
        bool x;
        if (v->type == KILN_CLI_JSON_BOOL)
            x = v->boolean;
        else if (v->type == KILN_CLI_JSON_NUMBER &&
                 (!strcmp(v->text, "0") || !strcmp(v->text, "1")))
            x = v->text[0] == '1';
        else
            return kiln_err_set(b->err, KILN_INVALID_ARGUMENT,
                                "%s: BOOL elements are true or false",
                                path_str(b, depth, where, sizeof(where)));
        if (o)
            *o = x;
        return KILN_OK;
    }
    if (kiln_cli_dtype_is_int(b->dtype, &is_signed)) {
        if (v->type != KILN_CLI_JSON_NUMBER)
            return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: %s elements are integers",
                                path_str(b, depth, where, sizeof(where)), dt);
        if (!is_integer_text(v->text))
            return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: %s is not an integer (%s)",
                                path_str(b, depth, where, sizeof(where)), v->text, dt);
        errno = 0;
        if (is_signed) {
            long long x = strtoll(v->text, NULL, 10);
            long long lim = size == 8 ? INT64_MAX : (1ll << (size * 8 - 1)) - 1;
            if (errno || x > lim || x < -lim - 1)
                return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: %s is out of %s range",
                                    path_str(b, depth, where, sizeof(where)), v->text, dt);
            if (o)
                memcpy(o, &x, size); /* little-endian: the low bytes come first */
        } else {
            unsigned long long x = strtoull(v->text, NULL, 10);
            unsigned long long lim = size == 8 ? UINT64_MAX : (1ull << (size * 8)) - 1;
            if (errno || v->text[0] == '-' || x > lim)
                return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: %s is out of %s range",
                                    path_str(b, depth, where, sizeof(where)), v->text, dt);
            if (o)
                memcpy(o, &x, size);
        }
        return KILN_OK;
    }
    double x;
    if (v->type == KILN_CLI_JSON_NUMBER) {
        x = strtod(v->text, NULL); /* JSON number syntax is a subset of strtod's */
    } else if (v->type != KILN_CLI_JSON_STRING || !special_float(v->text, &x)) {
        return kiln_err_set(b->err, KILN_INVALID_ARGUMENT,
                            "%s: %s elements are numbers (or \"NaN\", \"Infinity\", "
                            "\"-Infinity\")",
                            path_str(b, depth, where, sizeof(where)), dt);
    }
    double max = b->dtype == KILN_CLI_FP64   ? DBL_MAX
                 : b->dtype == KILN_CLI_FP16 ? 65504.0
                                             : FLT_MAX;
    if (isfinite(x) && fabs(x) > max)
        return kiln_err_set(b->err, KILN_INVALID_ARGUMENT, "%s: %s is out of %s range",
                            path_str(b, depth, where, sizeof(where)), v->text, dt);
    if (!o)
        return KILN_OK;
    if (b->dtype == KILN_CLI_FP64) {
        memcpy(o, &x, 8);
    } else if (b->dtype == KILN_CLI_FP32) {
        float f = (float)x;
        memcpy(o, &f, 4);
    } else {
        uint16_t h = b->dtype == KILN_CLI_FP16 ? kiln_cli_float_to_half((float)x)
                                               : kiln_cli_float_to_bf16((float)x);
        memcpy(o, &h, 2);
    }
    return KILN_OK;
}

/* Walks v at `depth`, checking the shape, writing (or sizing) its elements. */
static kiln_status walk(builder *b, const kiln_cli_json *v, int depth)
{
    char where[160];
    if (depth == b->rank) {
        if (v->type == KILN_CLI_JSON_ARRAY || v->type == KILN_CLI_JSON_OBJECT)
            return kiln_err_set(b->err, KILN_INVALID_ARGUMENT,
                                "%s: %s where an element was expected (ragged nesting)",
                                path_str(b, depth, where, sizeof(where)),
                                v->type == KILN_CLI_JSON_ARRAY ? "an array" : "an object");
        return element(b, v, depth);
    }
    if (v->type != KILN_CLI_JSON_ARRAY || (int64_t)v->n != b->shape[depth])
        return kiln_err_set(b->err, KILN_INVALID_ARGUMENT,
                            "%s: expected an array of %" PRId64
                            " (the first array at this depth has that many); the nesting must "
                            "be rectangular",
                            path_str(b, depth, where, sizeof(where)), b->shape[depth]);
    for (size_t i = 0; i < v->n; i++) {
        b->path[depth] = (int64_t)i;
        kiln_status st = walk(b, &v->items[i], depth + 1);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

kiln_status kiln_cli_tensor_from_json(const kiln_cli_json *v, kiln_cli_dtype dtype,
                                      kiln_cli_tensor *t, kiln_err *err)
{
    if (dtype <= KILN_CLI_INVALID || dtype >= KILN_CLI_DTYPE_COUNT)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "no datatype for the JSON tensor");
    builder b = {.dtype = dtype, .err = err};
    for (const kiln_cli_json *x = v; x->type == KILN_CLI_JSON_ARRAY; x = &x->items[0]) {
        if (b.rank == KILN_CLI_MAX_RANK)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "the JSON tensor nests deeper than %d dimensions",
                                KILN_CLI_MAX_RANK);
        b.shape[b.rank++] = (int64_t)x->n;
        if (x->n == 0)
            break;
    }
    kiln_status st = walk(&b, v, 0); /* sizes and checks */
    if (st != KILN_OK)
        return st;
    size_t bytes = b.off;
    b.out = kiln_malloc(bytes ? bytes : 1);
    if (!b.out)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes", bytes);
    b.off = 0;
    walk(&b, v, 0); /* cannot fail: the first pass checked everything */
    t->dtype = dtype;
    t->rank = b.rank;
    memcpy(t->shape, b.shape, sizeof(b.shape));
    t->owner = b.out;
    t->data = b.out;
    t->byte_size = bytes;
    return KILN_OK;
}

kiln_status kiln_cli_tensor_parse_json(const char *text, kiln_cli_dtype dtype, kiln_cli_tensor *t,
                                       kiln_err *err)
{
    kiln_cli_json *v;
    kiln_status st = kiln_cli_json_parse(text, strlen(text), &v, err);
    if (st != KILN_OK)
        return st;
    st = kiln_cli_tensor_from_json(v, dtype, t, err);
    kiln_cli_json_free(v);
    return st;
}

static void print_float(FILE *f, double x, bool json, bool wide)
{
    if (isnan(x))
        fputs(json ? "\"NaN\"" : "nan", f);
    else if (isinf(x))
        fputs(json ? (x > 0 ? "\"Infinity\"" : "\"-Infinity\"") : (x > 0 ? "inf" : "-inf"), f);
    else if (json)
        fprintf(f, wide ? "%.17g" : "%.9g", x);
    else
        fprintf(f, "%g", x);
}

/* Prints the element at p (advancing past it). */
static const uint8_t *print_element(FILE *f, const kiln_cli_tensor *t, const uint8_t *p, bool json)
{
    union {
        int8_t i8;
        int16_t i16;
        int32_t i32;
        int64_t i64;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        float f32;
        double f64;
    } u;
    size_t size = kiln_cli_dtype_size(t->dtype);
    if (t->dtype == KILN_CLI_BYTES) {
        memcpy(&u.u32, p, 4);
        kiln_cli_json_put_string(f, (const char *)p + 4, u.u32);
        return p + 4 + u.u32;
    }
    memcpy(&u, p, size);
    switch (t->dtype) {
    case KILN_CLI_BOOL:
        fputs(p[0] ? "true" : "false", f);
        break;
    case KILN_CLI_UINT8:
        fprintf(f, "%u", p[0]);
        break;
    case KILN_CLI_UINT16:
        fprintf(f, "%u", u.u16);
        break;
    case KILN_CLI_UINT32:
        fprintf(f, "%" PRIu32, u.u32);
        break;
    case KILN_CLI_UINT64:
        fprintf(f, "%" PRIu64, u.u64);
        break;
    case KILN_CLI_INT8:
        fprintf(f, "%d", u.i8);
        break;
    case KILN_CLI_INT16:
        fprintf(f, "%d", u.i16);
        break;
    case KILN_CLI_INT32:
        fprintf(f, "%" PRId32, u.i32);
        break;
    case KILN_CLI_INT64:
        fprintf(f, "%" PRId64, u.i64);
        break;
    case KILN_CLI_FP16:
        print_float(f, kiln_cli_half_to_float(u.u16), json, false);
        break;
    case KILN_CLI_BF16:
        print_float(f, kiln_cli_bf16_to_float(u.u16), json, false);
        break;
    case KILN_CLI_FP32:
        print_float(f, u.f32, json, false);
        break;
    case KILN_CLI_FP64:
        print_float(f, u.f64, json, true);
        break;
    default:
        fputs("null", f);
        break;
    }
    return p + size;
}

static const uint8_t *print_dim(FILE *f, const kiln_cli_tensor *t, const uint8_t *p, int depth,
                                bool json)
{
    if (depth == t->rank)
        return print_element(f, t, p, json);
    fputc('[', f);
    for (int64_t i = 0; i < t->shape[depth]; i++) {
        if (i)
            fputs(json ? "," : ", ", f);
        p = print_dim(f, t, p, depth + 1, json);
    }
    fputc(']', f);
    return p;
}

void kiln_cli_tensor_print(FILE *f, const kiln_cli_tensor *t, bool json)
{
    print_dim(f, t, t->data, 0, json);
}
