/*
 * proto/onnx_tensor.c: ONNX TensorProto -> kiln_tensor (initializers and tensor attributes).
 *
 * The data comes from raw_data (little-endian, packed), from the typed repeated field the
 * format assigns to the data type, or from an external file next to the model. Whatever the
 * source, its size must match dims x element size exactly.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "ONNX raw_data is little-endian; Kiln copies it as is");
#include "proto/onnx.pb-c.h"
#include "proto/onnx_int.h"

kiln_dtype kiln__onnx_dtype(int32_t t)
{
    switch (t) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
        return KILN_DTYPE_FP32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
        return KILN_DTYPE_UINT8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
        return KILN_DTYPE_INT8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
        return KILN_DTYPE_UINT16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
        return KILN_DTYPE_INT16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
        return KILN_DTYPE_INT32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
        return KILN_DTYPE_INT64;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
        return KILN_DTYPE_BOOL;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
        return KILN_DTYPE_FP16;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        return KILN_DTYPE_FP64;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
        return KILN_DTYPE_UINT32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
        return KILN_DTYPE_UINT64;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
        return KILN_DTYPE_BF16;
    default:
        return KILN_DTYPE_INVALID; /* STRING, COMPLEX*, UNDEFINED, unknown */
    }
}

/* "[2,3]" for messages. */
static const char *dims_text(const Onnx__TensorProto *tp, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    len += (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < tp->n_dims && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, i ? "," : "", tp->dims[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

/* True if `loc` is a relative path without "." / ".." components or empty components. */
static bool plain_relative(const char *loc)
{
    if (!loc[0] || loc[0] == '/')
        return false;
    for (const char *p = loc; *p;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += n;
        if (*p == '/')
            p++;
    }
    return true;
}

/* Parses a non-negative decimal into *out. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* True if `path` (absolute, resolved) lies inside directory `dir` (absolute, resolved). */
static bool inside(const char *path, const char *dir)
{
    size_t dl = strlen(dir);
    if (dl == 1 && dir[0] == '/')
        return path[0] == '/' && path[1];
    return strncmp(path, dir, dl) == 0 && path[dl] == '/';
}

/*
 * Opens tp's external data file and checks everything about it that can be checked before the
 * tensor is allocated: the location is confined to the model's directory (also after open, so
 * a directory swapped for a symbolic link meanwhile is caught), the file is a regular file,
 * and [offset, offset + bytes) lies inside it. OUT: *fd (the caller closes it), *off.
 */
static kiln_status open_external(const kiln_onnx_ctx *c, const char *what,
                                 const Onnx__TensorProto *tp, uint64_t bytes, int *fd,
                                 uint64_t *off, kiln_err *err)
{
    *fd = -1;
    const char *loc = NULL, *off_s = NULL, *len_s = NULL;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        if (strcmp(e->key, "location") == 0)
            loc = e->value;
        else if (strcmp(e->key, "offset") == 0)
            off_s = e->value;
        else if (strcmp(e->key, "length") == 0)
            len_s = e->value;
    }
    if (!c->dir)
        return kiln__onnx_bad(err, c, "%s: external data is not allowed here", what);
    if (!loc)
        return kiln__onnx_bad(err, c, "%s: external data without a 'location'", what);
    if (!plain_relative(loc))
        return kiln__onnx_bad(err, c,
                              "%s: external data location '%s' must be a relative path inside "
                              "the model's directory (no '..', no absolute path)",
                              what, loc);
    uint64_t len = bytes;
    *off = 0;
    if (off_s && !parse_u64(off_s, off))
        return kiln__onnx_bad(err, c, "%s: external data offset '%s' is not a number", what, off_s);
    if (len_s && !parse_u64(len_s, &len))
        return kiln__onnx_bad(err, c, "%s: external data length '%s' is not a number", what, len_s);
    if (len != bytes)
        return kiln__onnx_bad(err, c,
                              "%s: external data length is %" PRIu64 " bytes, its dims and "
                              "type need %" PRIu64,
                              what, len, bytes);
    char path[PATH_MAX], real[PATH_MAX], real_dir[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", c->dir, loc) >= sizeof(path))
        return kiln__onnx_bad(err, c, "%s: external data path is too long", what);
    if (!realpath(c->dir, real_dir) || !realpath(path, real))
        return kiln__onnx_bad(err, c, "%s: external data file '%s' cannot be opened: %s", what, loc,
                              strerror(errno));
    if (!inside(real, real_dir))
        return kiln__onnx_bad(
            err, c, "%s: external data file '%s' lies outside the model's directory", what, loc);
    /* O_NONBLOCK: a FIFO must not hang the load; it is refused below */
    *fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (*fd < 0)
        return kiln__onnx_bad(err, c, "%s: external data file '%s' cannot be opened: %s", what, loc,
                              strerror(errno));
    char proc[64], opened[PATH_MAX];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", *fd);
    ssize_t n = readlink(proc, opened, sizeof(opened) - 1);
    struct stat sb;
    kiln_status st = KILN_OK;
    if (n > 0)
        opened[n] = '\0';
    if (n > 0 && !inside(opened, real_dir))
        st = kiln__onnx_bad(
            err, c, "%s: external data file '%s' lies outside the model's directory", what, loc);
    else if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        st = kiln__onnx_bad(err, c, "%s: external data '%s' is not a regular file", what, loc);
    else if (*off > (uint64_t)sb.st_size || bytes > (uint64_t)sb.st_size - *off)
        st = kiln__onnx_bad(err, c,
                            "%s: external data '%s' has %lld bytes, the tensor needs %" PRIu64
                            " at offset %" PRIu64,
                            what, loc, (long long)sb.st_size, bytes, *off);
    if (st != KILN_OK) {
        close(*fd);
        *fd = -1;
    }
    return st;
}

/* Reads bytes at off from fd into dst. */
static kiln_status read_all(const kiln_onnx_ctx *c, const char *what, int fd, void *dst,
                            uint64_t bytes, uint64_t off, kiln_err *err)
{
    for (uint64_t done = 0; done < bytes;) {
        ssize_t n = pread(fd, (char *)dst + done, bytes - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return kiln__onnx_bad(err, c, "%s: reading external data failed: %s", what,
                                  n < 0 ? strerror(errno) : "the file shrank");
        done += (uint64_t)n;
    }
    return KILN_OK;
}

/* Copies n typed values into dst as dtype dt (narrowing int32_data/uint64_data as ONNX says). */
static void copy_typed(kiln_dtype dt, const Onnx__TensorProto *tp, void *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case KILN_DTYPE_FP32:
            ((float *)dst)[i] = tp->float_data[i];
            break;
        case KILN_DTYPE_FP64:
            ((double *)dst)[i] = tp->double_data[i];
            break;
        case KILN_DTYPE_INT64:
            ((int64_t *)dst)[i] = tp->int64_data[i];
            break;
        case KILN_DTYPE_INT32:
            ((int32_t *)dst)[i] = tp->int32_data[i];
            break;
        case KILN_DTYPE_INT16:
            ((int16_t *)dst)[i] = (int16_t)tp->int32_data[i];
            break;
        case KILN_DTYPE_UINT16:
        case KILN_DTYPE_FP16:
        case KILN_DTYPE_BF16:
            ((uint16_t *)dst)[i] = (uint16_t)tp->int32_data[i];
            break;
        case KILN_DTYPE_INT8:
            ((int8_t *)dst)[i] = (int8_t)tp->int32_data[i];
            break;
        case KILN_DTYPE_UINT8:
            ((uint8_t *)dst)[i] = (uint8_t)tp->int32_data[i];
            break;
        case KILN_DTYPE_BOOL:
            ((uint8_t *)dst)[i] = (uint8_t)tp->int32_data[i];
            break;
        case KILN_DTYPE_UINT32:
            ((uint32_t *)dst)[i] = (uint32_t)tp->uint64_data[i];
            break;
        case KILN_DTYPE_UINT64:
            ((uint64_t *)dst)[i] = tp->uint64_data[i];
            break;
        default:
            break;
        }
    }
}

/* Refuses typed values that do not fit dtype dt (they would be silently truncated). */
static kiln_status check_typed(const kiln_onnx_ctx *c, const char *what, kiln_dtype dt,
                               const Onnx__TensorProto *tp, size_t n, kiln_err *err)
{
    int64_t lo, hi;
    switch (dt) {
    case KILN_DTYPE_INT8:
        lo = INT8_MIN, hi = INT8_MAX;
        break;
    case KILN_DTYPE_UINT8:
        lo = 0, hi = UINT8_MAX;
        break;
    case KILN_DTYPE_INT16:
        lo = INT16_MIN, hi = INT16_MAX;
        break;
    case KILN_DTYPE_UINT16:
    case KILN_DTYPE_FP16:
    case KILN_DTYPE_BF16:
        lo = 0, hi = UINT16_MAX;
        break;
    case KILN_DTYPE_BOOL:
        lo = 0, hi = 1;
        break;
    case KILN_DTYPE_UINT32:
        for (size_t i = 0; i < n; i++)
            if (tp->uint64_data[i] > UINT32_MAX)
                return kiln__onnx_bad(err, c, "%s: value %" PRIu64 " at %zu does not fit UINT32",
                                      what, tp->uint64_data[i], i);
        return KILN_OK;
    default:
        return KILN_OK;
    }
    for (size_t i = 0; i < n; i++)
        if (tp->int32_data[i] < lo || tp->int32_data[i] > hi)
            return kiln__onnx_bad(err, c, "%s: value %d at %zu does not fit %s", what,
                                  tp->int32_data[i], i, kiln_dtype_name(dt));
    return KILN_OK;
}

/* The number of values in the typed field that holds dtype dt. */
static size_t typed_count(kiln_dtype dt, const Onnx__TensorProto *tp)
{
    switch (dt) {
    case KILN_DTYPE_FP32:
        return tp->n_float_data;
    case KILN_DTYPE_FP64:
        return tp->n_double_data;
    case KILN_DTYPE_INT64:
        return tp->n_int64_data;
    case KILN_DTYPE_UINT32:
    case KILN_DTYPE_UINT64:
        return tp->n_uint64_data;
    default:
        return tp->n_int32_data;
    }
}

kiln_status kiln__onnx_tensor(const kiln_onnx_ctx *c, const char *what, const Onnx__TensorProto *tp,
                              kiln_tensor *out, kiln_err *err)
{
    char dbuf[160];
    kiln_dtype dt = kiln__onnx_dtype(tp->data_type);
    if (dt == KILN_DTYPE_INVALID)
        return kiln__onnx_bad(err, c, "%s: data type %d is not supported", what, tp->data_type);
    kiln_shape shape;
    kiln_err serr;
    if (kiln_shape_set(&shape, tp->dims, tp->n_dims, &serr) != KILN_OK)
        return kiln__onnx_bad(err, c, "%s: dims %s: %s", what, dims_text(tp, dbuf, sizeof(dbuf)),
                              serr.msg);
    uint64_t numel, bytes;
    if (kiln_shape_numel(&shape, &numel, &serr) != KILN_OK ||
        kiln_shape_byte_size(dt, &shape, KILN_ONNX_MAX_FILE_BYTES * 8, &bytes, &serr) != KILN_OK)
        return kiln__onnx_bad(err, c, "%s: dims %s: %s", what, dims_text(tp, dbuf, sizeof(dbuf)),
                              serr.msg);
    bool external = tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    size_t typed = typed_count(dt, tp);
    if (!external && tp->raw_data.len != bytes && (tp->raw_data.len || typed != numel)) {
        if (tp->raw_data.len)
            return kiln__onnx_bad(err, c, "%s: raw_data has %zu bytes, dims %s of %s need %" PRIu64,
                                  what, tp->raw_data.len, dims_text(tp, dbuf, sizeof(dbuf)),
                                  kiln_dtype_name(dt), bytes);
        return kiln__onnx_bad(err, c, "%s: holds %zu values, dims %s need %" PRIu64, what, typed,
                              dims_text(tp, dbuf, sizeof(dbuf)), numel);
    }
    int fd = -1;
    uint64_t off = 0;
    kiln_status st = KILN_OK;
    if (external)
        st = open_external(c, what, tp, bytes, &fd, &off, err);
    else if (!tp->raw_data.len)
        st = check_typed(c, what, dt, tp, (size_t)numel, err);
    if (st == KILN_OK)
        st = kiln_tensor_alloc(dt, &shape, 0, out, err);
    if (st == KILN_OK) {
        if (external)
            st = read_all(c, what, fd, out->data, bytes, off, err);
        else if (tp->raw_data.len)
            memcpy(out->data, tp->raw_data.data, bytes);
        else
            copy_typed(dt, tp, out->data, (size_t)numel);
    }
    if (fd >= 0)
        close(fd);
    if (st == KILN_OK && dt == KILN_DTYPE_BOOL) { /* any non-zero byte is true */
        uint8_t *p = out->data;
        for (uint64_t i = 0; i < numel; i++)
            p[i] = p[i] != 0;
    }
    if (st != KILN_OK)
        kiln_tensor_fini(out);
    return st;
}
