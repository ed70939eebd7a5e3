/* tensor/view.c: tensor views over storage, and the KServe v2 BYTES encoding. */
#include <inttypes.h>
#include <string.h>

#include "tensor/tensor_int.h"

/* Checks byte_size against dtype/shape; for BYTES on CPU, validates the encoding. */
static kiln_status check_size(kiln_dtype dtype, const kiln_shape *shape, size_t *byte_size,
                              const void *data, bool on_cpu, kiln_err *err)
{
    char sb[256];
    if (dtype == KILN_DTYPE_INVALID || (unsigned)dtype >= KILN_DTYPE_COUNT)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "tensor dtype %d is not valid", (int)dtype);
    if (dtype == KILN_DTYPE_BYTES) {
        uint64_t n;
        kiln_status st = kiln_shape_numel(shape, &n, err);
        if (st != KILN_OK)
            return st;
        if (n > 0 && (n > SIZE_MAX / 4 || *byte_size < 4 * n))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "BYTES tensor of shape %s needs at least %" PRIu64
                                " bytes of length prefixes, got %zu",
                                kiln_shape_format(shape, sb, sizeof(sb)), 4 * n, *byte_size);
        if (on_cpu && data)
            return kiln_bytes_validate(data, *byte_size, n, NULL, err);
        return KILN_OK;
    }
    uint64_t want;
    kiln_status st = kiln_shape_byte_size(dtype, shape, 0, &want, err);
    if (st != KILN_OK)
        return st;
    if (*byte_size == 0)
        *byte_size = (size_t)want;
    else if (*byte_size != want)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "byte size %zu does not match shape %s of %s (%" PRIu64 " bytes)",
                            *byte_size, kiln_shape_format(shape, sb, sizeof(sb)),
                            kiln_dtype_name(dtype), want);
    return KILN_OK;
}

static kiln_status make_view(kiln_storage *storage, size_t offset, kiln_dtype dtype,
                             const kiln_shape *shape, size_t byte_size, bool validate_bytes,
                             kiln_tensor *out, kiln_err *err)
{
    memset(out, 0, sizeof(*out));
    size_t end;
    if (dtype != KILN_DTYPE_BYTES) {
        kiln_status st = check_size(dtype, shape, &byte_size, NULL, false, err);
        if (st != KILN_OK)
            return st;
    }
    if (__builtin_add_overflow(offset, byte_size, &end) || end > storage->size)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "view [%zu, +%zu) is outside its storage of %zu bytes", offset,
                            byte_size, storage->size);
    unsigned char *data = (unsigned char *)storage->data + offset;
    if (dtype == KILN_DTYPE_BYTES) {
        kiln_status st = check_size(dtype, shape, &byte_size, data,
                                    validate_bytes && storage->device.kind == KILN_DEVICE_CPU, err);
        if (st != KILN_OK)
            return st;
    }
    kiln_storage_ref(storage);
    out->dtype = dtype;
    out->shape = *shape;
    out->data = data;
    out->byte_size = byte_size;
    out->device = storage->device;
    out->storage = storage;
    return KILN_OK;
}

kiln_status kiln_tensor_view(kiln_storage *storage, size_t offset, kiln_dtype dtype,
                             const kiln_shape *shape, size_t byte_size, kiln_tensor *out,
                             kiln_err *err)
{
    return make_view(storage, offset, dtype, shape, byte_size, true, out, err);
}

kiln_status kiln_tensor_view_for_write(kiln_storage *storage, size_t offset, kiln_dtype dtype,
                                       const kiln_shape *shape, size_t byte_size, kiln_tensor *out,
                                       kiln_err *err)
{
    return make_view(storage, offset, dtype, shape, byte_size, false, out, err);
}

kiln_status kiln_tensor_alloc(kiln_dtype dtype, const kiln_shape *shape, size_t byte_size,
                              kiln_tensor *out, kiln_err *err)
{
    memset(out, 0, sizeof(*out));
    kiln_status st = check_size(dtype, shape, &byte_size, NULL, false, err);
    if (st != KILN_OK)
        return st;
    kiln_storage *s;
    st = kiln_storage_create_heap(byte_size, &s, err);
    if (st != KILN_OK)
        return st;
    out->dtype = dtype;
    out->shape = *shape;
    out->data = s->data;
    out->byte_size = byte_size;
    out->device = s->device;
    out->storage = s; /* the creation reference becomes the view's */
    return KILN_OK;
}

void kiln_tensor_share(const kiln_tensor *src, kiln_tensor *dst)
{
    *dst = *src;
    if (dst->storage)
        kiln_storage_ref(dst->storage);
}

void kiln_tensor_fini(kiln_tensor *t)
{
    if (!t)
        return;
    kiln_storage_unref(t->storage);
    memset(t, 0, sizeof(*t));
}

/* ---------------------------------------------------------------- BYTES */

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

kiln_status kiln_bytes_validate(const void *data, size_t size, uint64_t expected, uint64_t *count,
                                kiln_err *err)
{
    const uint8_t *p = data;
    size_t off = 0;
    uint64_t n = 0;
    while (off < size) {
        if (size - off < 4)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "BYTES element %" PRIu64 ": length prefix at offset %zu is cut "
                                "short (%zu of 4 bytes left)",
                                n, off, size - off);
        uint32_t len = load_le32(p + off);
        off += 4;
        if (len > size - off)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "BYTES element %" PRIu64 " declares %" PRIu32
                                " bytes but only %zu remain in the %zu-byte buffer",
                                n, len, size - off, size);
        off += len;
        n++;
        if (expected != UINT64_MAX && n > expected)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "BYTES buffer holds more than the %" PRIu64
                                " elements its shape has (%zu bytes left after element %" PRIu64
                                ")",
                                expected, size - off, expected - 1);
    }
    if (expected != UINT64_MAX && n != expected)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "BYTES buffer of %zu bytes holds %" PRIu64
                            " elements, shape needs %" PRIu64,
                            size, n, expected);
    if (count)
        *count = n;
    return KILN_OK;
}

void kiln_bytes_iter_init(kiln_bytes_iter *it, const void *data, size_t size)
{
    it->p = data;
    it->end = it->p + size;
}

bool kiln_bytes_next(kiln_bytes_iter *it, const uint8_t **elem, uint32_t *len)
{
    if ((size_t)(it->end - it->p) < 4)
        return false;
    uint32_t l = load_le32(it->p);
    if (l > (size_t)(it->end - it->p) - 4)
        return false;
    *elem = it->p + 4;
    *len = l;
    it->p += 4 + (size_t)l;
    return true;
}

kiln_status kiln_bytes_append(void *buf, size_t cap, size_t *off, const void *elem, size_t len,
                              kiln_err *err)
{
    if (len > UINT32_MAX)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "BYTES element of %zu bytes exceeds the 4-byte length limit", len);
    if (*off > cap || cap - *off < 4 || cap - *off - 4 < len)
        return kiln_err_set(err, KILN_OUT_OF_RANGE,
                            "BYTES element of %zu bytes does not fit at offset %zu of %zu", len,
                            *off, cap);
    uint8_t *p = (uint8_t *)buf + *off;
    p[0] = (uint8_t)len;
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 24);
    if (len)
        memcpy(p + 4, elem, len);
    *off += 4 + len;
    return KILN_OK;
}
