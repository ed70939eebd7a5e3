/*
 * tools/kiln/npy.c: .npy reading and writing.
 *
 * The header is a Python dict literal; we parse the small subset NumPy writes (three keys,
 * quoted strings, True/False, a tuple of integers) and refuse everything else by name, so a
 * file from another writer fails with a message rather than a wrong tensor.
 */
#include "tools/kiln/npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tools/kiln/json.h"

#define MAGIC     "\x93NUMPY"
#define MAGIC_LEN 6

typedef enum str_kind { STR_NONE, STR_BYTES, STR_UTF32 } str_kind;

typedef struct header {
    kiln_cli_dtype dtype;
    size_t item; /* bytes per element in the file */
    str_kind str;
    bool has_descr, has_fortran, has_shape, fortran;
    int rank;
    int64_t shape[KILN_CLI_MAX_RANK];
} header;

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool take(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes into out[cap]. */
static kiln_status quoted(cursor *c, char *out, size_t cap, const char *what, kiln_err *err)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: %s is not a quoted string", what);
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "header: %s is not a short plain string", what);
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: %s: unterminated string", what);
    c->p++;
    out[n] = '\0';
    return KILN_OK;
}

static const char SUPPORTED[] = "supported: <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1 "
                                "|S<n> <U<n>";

static kiln_status parse_descr(const char *d, header *h, kiln_err *err)
{
    char order = d[0];
    if (!order || !d[1])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "dtype '%s' is not a NumPy type string", d);
    char kind = d[1];
    if (kind == 'O')
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "dtype '%s': object arrays (pickled Python objects) are not "
                            "supported (%s)",
                            d, SUPPORTED);
    char *end;
    errno = 0;
    unsigned long size = strtoul(d + 2, &end, 10);
    if (end == d + 2 || *end || errno || size > (1ul << 30) ||
        (order != '<' && order != '>' && order != '|' && order != '='))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "dtype '%s' is not a NumPy type string", d);
    static const struct {
        char kind;
        unsigned long size;
        kiln_cli_dtype dt;
    } map[] = {{'f', 2, KILN_CLI_FP16},   {'f', 4, KILN_CLI_FP32},   {'f', 8, KILN_CLI_FP64},
               {'i', 1, KILN_CLI_INT8},   {'i', 2, KILN_CLI_INT16},  {'i', 4, KILN_CLI_INT32},
               {'i', 8, KILN_CLI_INT64},  {'u', 1, KILN_CLI_UINT8},  {'u', 2, KILN_CLI_UINT16},
               {'u', 4, KILN_CLI_UINT32}, {'u', 8, KILN_CLI_UINT64}, {'b', 1, KILN_CLI_BOOL}};
    h->item = size;
    h->str = STR_NONE;
    if (kind == 'S' || kind == 'U') {
        h->str = kind == 'S' ? STR_BYTES : STR_UTF32;
        h->item = kind == 'U' ? size * 4 : size;
        if (kind == 'U' && order == '>')
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "dtype '%s' is big-endian; only little-endian is supported "
                                "(convert with a.astype('<U%lu'))",
                                d, size);
        h->dtype = KILN_CLI_BYTES;
        return KILN_OK;
    }
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (map[i].kind != kind || map[i].size != size)
            continue;
        if (size > 1 && order == '>')
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "dtype '%s' is big-endian; only little-endian is supported "
                                "(convert with a.astype('<%c%lu'))",
                                d, kind, size);
        if (size > 1 && order == '|')
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "dtype '%s': '|' (no byte order) on a %lu-byte type", d, size);
        h->dtype = map[i].dt;
        return KILN_OK;
    }
    return kiln_err_set(err, KILN_INVALID_ARGUMENT, "dtype '%s' is not supported (%s)", d,
                        SUPPORTED);
}

static kiln_status parse_shape(cursor *c, header *h, kiln_err *err)
{
    if (!take(c, '('))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: 'shape' is not a tuple");
    h->rank = 0;
    for (;;) {
        if (take(c, ')'))
            return KILN_OK;
        if (h->rank == KILN_CLI_MAX_RANK)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "header: 'shape' has more than %d dimensions", KILN_CLI_MAX_RANK);
        skip_ws(c);
        int64_t v = 0;
        const char *start = c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "header: 'shape' dimension %d is too large", h->rank);
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p == start)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "header: 'shape' dimension %d is not a non-negative integer",
                                h->rank);
        if (c->p < c->end && *c->p == 'L') /* Python 2 long */
            c->p++;
        h->shape[h->rank++] = v;
        if (take(c, ','))
            continue;
        if (take(c, ')'))
            return KILN_OK;
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "header: 'shape': expected ',' or ')' after dimension %d", h->rank - 1);
    }
}

static kiln_status parse_bool(cursor *c, bool *out, kiln_err *err)
{
    skip_ws(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
        c->p += 4;
        *out = true;
        return KILN_OK;
    }
    if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
        c->p += 5;
        *out = false;
        return KILN_OK;
    }
    return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: 'fortran_order' is not True or False");
}

static kiln_status parse_dict(const char *text, size_t len, header *h, kiln_err *err)
{
    cursor c = {text, text + len};
    kiln_status st;
    if (!take(&c, '{'))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: not a dict (no '{')");
    for (;;) {
        if (take(&c, '}'))
            break;
        char key[32], descr[64];
        if ((st = quoted(&c, key, sizeof(key), "a key", err)) != KILN_OK)
            return st;
        if (!take(&c, ':'))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: no ':' after key '%s'", key);
        bool *seen;
        if (strcmp(key, "descr") == 0) {
            seen = &h->has_descr;
            skip_ws(&c);
            if (c.p < c.end && *c.p == '[')
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "structured dtypes (a list 'descr') are not supported");
            if ((st = quoted(&c, descr, sizeof(descr), "'descr'", err)) != KILN_OK)
                return st;
            if (!*seen && (st = parse_descr(descr, h, err)) != KILN_OK)
                return st;
        } else if (strcmp(key, "fortran_order") == 0) {
            seen = &h->has_fortran;
            if ((st = parse_bool(&c, &h->fortran, err)) != KILN_OK)
                return st;
        } else if (strcmp(key, "shape") == 0) {
            seen = &h->has_shape;
            if ((st = parse_shape(&c, h, err)) != KILN_OK)
                return st;
        } else {
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "header: unknown key '%s' (a .npy header has descr, "
                                "fortran_order and shape)",
                                key);
        }
        if (*seen)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: key '%s' appears twice", key);
        *seen = true;
        if (take(&c, ','))
            continue;
        if (take(&c, '}'))
            break;
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "header: expected ',' or '}' after the value of '%s'", key);
    }
    skip_ws(&c);
    if (c.p != c.end)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: text after the dict");
    const char *missing = !h->has_descr     ? "descr"
                          : !h->has_fortran ? "fortran_order"
                          : !h->has_shape   ? "shape"
                                            : NULL;
    if (missing)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: no '%s' key", missing);
    return KILN_OK;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Re-encodes count fixed-width strings as length-prefixed BYTES elements into t->owner. */
static kiln_status encode_strings(const uint8_t *src, uint64_t count, const header *h,
                                  kiln_cli_tensor *t, kiln_err *err)
{
    size_t chars = h->str == STR_UTF32 ? h->item / 4 : h->item;
    size_t per = 4 + (h->str == STR_UTF32 ? chars * 4 : chars); /* UTF-8 needs at most 4/char */
    if (count > SIZE_MAX / per)
        return kiln_err_set(err, KILN_OUT_OF_RANGE, "string array too large");
    size_t bytes = (size_t)count * per;
    uint8_t *out = kiln_malloc(bytes ? bytes : 1), *o = out;
    if (!out)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for %" PRIu64 " strings",
                            count);
    for (uint64_t i = 0; i < count; i++, src += h->item) {
        uint8_t *len_at = o;
        o += 4;
        size_t n = chars;
        if (h->str == STR_BYTES) {
            while (n && src[n - 1] == 0)
                n--;
            memcpy(o, src, n);
            o += n;
        } else {
            while (n && get_u32le(src + 4 * (n - 1)) == 0)
                n--;
            for (size_t k = 0; k < n; k++) {
                size_t w = kiln_cli_utf8_encode(get_u32le(src + 4 * k), o);
                if (!w) {
                    kiln_free(out);
                    return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                        "element %" PRIu64 " has an invalid code point U+%X", i,
                                        get_u32le(src + 4 * k));
                }
                o += w;
            }
        }
        put_u32le(len_at, (uint32_t)(o - len_at - 4));
    }
    t->owner = out;
    t->data = out;
    t->byte_size = (size_t)(o - out);
    return KILN_OK;
}

kiln_status kiln_cli_npy_parse(const uint8_t *buf, size_t len, kiln_cli_tensor *t, kiln_err *err)
{
    if (len < MAGIC_LEN && memcmp(buf, MAGIC, len) == 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "truncated: %zu bytes, no .npy preamble",
                            len);
    if (len < MAGIC_LEN || memcmp(buf, MAGIC, MAGIC_LEN) != 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "not a .npy file (it does not start with \\x93NUMPY)");
    if (len < 10)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "truncated: %zu bytes, shorter than the fixed preamble", len);
    uint8_t major = buf[6], minor = buf[7];
    if (major < 1 || major > 3 || minor != 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "format version %u.%u is not supported (1.0, 2.0 and 3.0 are)", major,
                            minor);
    size_t hlen, off;
    if (major == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        off = 10;
    } else {
        if (len < 12)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "truncated: %zu bytes, shorter than the version %u.0 preamble", len,
                                major);
        hlen = get_u32le(buf + 8);
        off = 12;
    }
    if (hlen > len - off)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "truncated header: it says %zu bytes, the file has %zu after the "
                            "preamble",
                            hlen, len - off);
    header h = {0};
    kiln_status st = parse_dict((const char *)buf + off, hlen, &h, err);
    if (st != KILN_OK)
        return st;
    if (h.fortran)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "the array is in Fortran (column-major) order; only C order is "
                            "supported (save np.ascontiguousarray(a))");
    uint64_t count;
    if ((st = kiln_cli_shape_count(h.shape, h.rank, &count, err)) != KILN_OK)
        return kiln_err_prefix(err, st, "header: 'shape'");
    off += hlen;
    size_t have = len - off;
    if (h.item && count > UINT64_MAX / h.item)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "header: 'shape' is too large");
    uint64_t want = count * h.item;
    char sh[128];
    if (want != have)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s: shape %s of %" PRIu64 "-byte elements needs %" PRIu64
                            " bytes of data, the file has %zu",
                            have < want ? "truncated data" : "size mismatch",
                            kiln_cli_shape_format(h.shape, h.rank, sh, sizeof(sh)), h.item, want,
                            have);
    kiln_cli_tensor out = *t;
    out.dtype = h.dtype;
    out.rank = h.rank;
    memcpy(out.shape, h.shape, sizeof(h.shape));
    out.owner = NULL;
    if (h.str != STR_NONE) {
        if ((st = encode_strings(buf + off, count, &h, &out, err)) != KILN_OK)
            return st;
    } else {
        out.data = buf + off;
        out.byte_size = have;
    }
    *t = out;
    return KILN_OK;
}

static kiln_status errno_status(int e)
{
    return e == ENOENT                 ? KILN_NOT_FOUND
           : e == EACCES || e == EPERM ? KILN_PERMISSION_DENIED
                                       : KILN_INTERNAL;
}

kiln_status kiln_cli_npy_load(const char *path, kiln_cli_tensor *t, kiln_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln_err_set(err, errno_status(errno), "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    uint8_t *buf = kiln_malloc(len ? len : 1);
    if (!buf) {
        fclose(f);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "%s: out of memory for %zu bytes", path,
                            len);
    }
    size_t got = fread(buf, 1, len, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (got != len) {
        kiln_free(buf);
        return kiln_err_set(err, KILN_INTERNAL, "%s: read %zu of %zu bytes: %s", path, got, len,
                            rerr ? strerror(rerr) : "file shrank");
    }
    kiln_status st = kiln_cli_npy_parse(buf, len, t, err);
    if (st != KILN_OK) {
        kiln_free(buf);
        return kiln_err_prefix(err, st, "%s", path);
    }
    if (t->owner)
        kiln_free(buf); /* strings were re-encoded into their own block */
    else
        t->owner = buf;
    return KILN_OK;
}

static const char *descr_of(kiln_cli_dtype d)
{
    static const char *const names[KILN_CLI_DTYPE_COUNT] = {
        [KILN_CLI_BOOL] = "|b1",   [KILN_CLI_UINT8] = "|u1",  [KILN_CLI_UINT16] = "<u2",
        [KILN_CLI_UINT32] = "<u4", [KILN_CLI_UINT64] = "<u8", [KILN_CLI_INT8] = "|i1",
        [KILN_CLI_INT16] = "<i2",  [KILN_CLI_INT32] = "<i4",  [KILN_CLI_INT64] = "<i8",
        [KILN_CLI_FP16] = "<f2",   [KILN_CLI_BF16] = "<f4",   [KILN_CLI_FP32] = "<f4",
        [KILN_CLI_FP64] = "<f8",
    };
    return (unsigned)d < KILN_CLI_DTYPE_COUNT ? names[d] : NULL;
}

kiln_status kiln_cli_npy_write(FILE *f, const kiln_cli_tensor *t, kiln_err *err)
{
    kiln_status st = kiln_cli_tensor_check(t, err);
    if (st != KILN_OK)
        return st;
    uint64_t count;
    kiln_cli_shape_count(t->shape, t->rank, &count, NULL);
    size_t width = 0; /* BYTES: the longest element */
    for (size_t off = 0; t->dtype == KILN_CLI_BYTES && off < t->byte_size;) {
        size_t n = get_u32le(t->data + off);
        width = n > width ? n : width;
        off += 4 + n;
    }
    char descr[32], dict[512];
    if (t->dtype == KILN_CLI_BYTES)
        snprintf(descr, sizeof(descr), "|S%zu", width ? width : 1);
    else if (descr_of(t->dtype))
        snprintf(descr, sizeof(descr), "%s", descr_of(t->dtype));
    else
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "'%s': %s has no .npy dtype", t->name,
                            kiln_cli_dtype_name(t->dtype));
    int n =
        snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < t->rank; i++)
        n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%" PRId64 "%s", t->shape[i],
                      t->rank == 1 || i + 1 < t->rank ? ", " : "");
    if (t->rank == 1) /* "(16, )" -> "(16,)" */
        n -= 1;
    n += snprintf(dict + n, sizeof(dict) - (size_t)n, "), }");
    /* pad with spaces and a final newline so the data starts on a 64-byte boundary */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    size_t hlen = (size_t)n + pad + 1;
    pre[8] = (uint8_t)hlen;
    pre[9] = (uint8_t)(hlen >> 8);
    bool ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++)
        ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    if (t->dtype == KILN_CLI_BYTES) {
        for (size_t off = 0; ok && off < t->byte_size;) {
            size_t len = get_u32le(t->data + off);
            ok = fwrite(t->data + off + 4, 1, len, f) == len;
            for (size_t k = len; ok && k < (width ? width : 1); k++)
                ok = fputc(0, f) != EOF;
            off += 4 + len;
        }
    } else if (t->dtype == KILN_CLI_BF16) {
        for (uint64_t i = 0; ok && i < count; i++) {
            uint16_t b = (uint16_t)(t->data[2 * i] | t->data[2 * i + 1] << 8);
            float v = kiln_cli_bf16_to_float(b);
            ok = fwrite(&v, sizeof(v), 1, f) == 1;
        }
    } else {
        ok = ok && fwrite(t->data, 1, t->byte_size, f) == t->byte_size;
    }
    if (!ok)
        return kiln_err_set(err, KILN_INTERNAL, "write failed: %s", strerror(errno));
    return KILN_OK;
}

kiln_status kiln_cli_npy_save(const char *path, const kiln_cli_tensor *t, kiln_err *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return kiln_err_set(err, errno_status(errno), "%s: %s", tmp, strerror(errno));
    kiln_status st = kiln_cli_npy_write(f, t, err);
    if (st != KILN_OK)
        kiln_err_prefix(err, st, "%s", path);
    if (fclose(f) != 0 && st == KILN_OK)
        st = kiln_err_set(err, KILN_INTERNAL, "%s: %s", tmp, strerror(errno));
    if (st == KILN_OK && rename(tmp, path) != 0)
        st = kiln_err_set(err, errno_status(errno), "%s: %s", path, strerror(errno));
    if (st != KILN_OK)
        unlink(tmp);
    return st;
}
