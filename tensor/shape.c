/* tensor/shape.c: shape validation, overflow-checked sizes, pattern matching, formatting. */
#include "tensor/tensor.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static kiln_status set_dims(kiln_shape *s, const int64_t *dims, size_t rank, int64_t min_dim,
                            kiln_err *err)
{
    if (rank > KILN_MAX_RANK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "shape has rank %zu, limit is %d", rank,
                            KILN_MAX_RANK);
    for (size_t i = 0; i < rank; i++) {
        if (dims[i] < min_dim)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape dim %zu is %" PRId64 ", must be >= %" PRId64, i, dims[i],
                                min_dim);
    }
    s->rank = (int)rank;
    if (rank)
        memcpy(s->dims, dims, rank * sizeof(*dims));
    return KILN_OK;
}

kiln_status kiln_shape_set(kiln_shape *s, const int64_t *dims, size_t rank, kiln_err *err)
{
    return set_dims(s, dims, rank, 0, err);
}

kiln_status kiln_shape_set_pattern(kiln_shape *s, const int64_t *dims, size_t rank, kiln_err *err)
{
    return set_dims(s, dims, rank, -1, err);
}

kiln_status kiln_shape_numel(const kiln_shape *s, uint64_t *numel, kiln_err *err)
{
    char buf[256];
    uint64_t n = 1;
    if (s->rank < 0 || s->rank > KILN_MAX_RANK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "shape has rank %d, limit is %d", s->rank,
                            KILN_MAX_RANK);
    for (int i = 0; i < s->rank; i++) {
        if (s->dims[i] < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape %s has negative dim %d; a concrete shape is required",
                                kiln_shape_format(s, buf, sizeof(buf)), i);
        if (__builtin_mul_overflow(n, (uint64_t)s->dims[i], &n))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape %s: element count overflows 64 bits",
                                kiln_shape_format(s, buf, sizeof(buf)));
    }
    *numel = n;
    return KILN_OK;
}

kiln_status kiln_shape_byte_size(kiln_dtype dt, const kiln_shape *s, uint64_t cap, uint64_t *bytes,
                                 kiln_err *err)
{
    char buf[256];
    size_t es = kiln_dtype_size(dt);
    if (es == 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "datatype %s has no fixed element size; byte size comes from the data",
                            kiln_dtype_name(dt));
    uint64_t n, b;
    kiln_status st = kiln_shape_numel(s, &n, err);
    if (st != KILN_OK)
        return st;
    if (__builtin_mul_overflow(n, (uint64_t)es, &b) || b > SIZE_MAX)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shape %s of %s: byte size overflows (%" PRIu64
                            " elements of %zu bytes)",
                            kiln_shape_format(s, buf, sizeof(buf)), kiln_dtype_name(dt), n, es);
    if (cap > 0 && b > cap)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "shape %s of %s is %" PRIu64 " bytes, over the limit of %" PRIu64
                            " bytes",
                            kiln_shape_format(s, buf, sizeof(buf)), kiln_dtype_name(dt), b, cap);
    *bytes = b;
    return KILN_OK;
}

kiln_status kiln_shape_match(const kiln_shape *pattern, const kiln_shape *actual, kiln_err *err)
{
    char pb[256], ab[256];
    if (pattern->rank != actual->rank)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "shape %s has rank %d, expected rank %d as in %s",
                            kiln_shape_format(actual, ab, sizeof(ab)), actual->rank, pattern->rank,
                            kiln_shape_format(pattern, pb, sizeof(pb)));
    for (int i = 0; i < pattern->rank; i++) {
        if (pattern->dims[i] != -1 && pattern->dims[i] != actual->dims[i])
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape %s does not match %s at dim %d (%" PRId64 " != %" PRId64 ")",
                                kiln_shape_format(actual, ab, sizeof(ab)),
                                kiln_shape_format(pattern, pb, sizeof(pb)), i, actual->dims[i],
                                pattern->dims[i]);
    }
    return KILN_OK;
}

bool kiln_shape_equal(const kiln_shape *a, const kiln_shape *b)
{
    if (a->rank != b->rank)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

char *kiln_shape_format(const kiln_shape *s, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    size_t n = 0;
    buf[0] = '\0';
    int w = snprintf(buf, cap, "[");
    n = w > 0 ? (size_t)w : 0;
    int rank = s->rank < 0 ? 0 : (s->rank > KILN_MAX_RANK ? KILN_MAX_RANK : s->rank);
    for (int i = 0; i < rank && n < cap; i++) {
        w = snprintf(buf + n, cap - n, i ? ",%" PRId64 : "%" PRId64, s->dims[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}
