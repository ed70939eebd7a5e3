/* tensor/dlpack.c: zero-copy DLPack export and import. */
#include <string.h>

#include "common/alloc.h"
#include "tensor/tensor_int.h"

/* One allocation holds the managed tensor, its shape array and the storage reference. */
typedef struct exported {
    DLManagedTensor managed;
    int64_t shape[KILN_MAX_RANK];
    kiln_storage *storage;
} exported;

static void export_deleter(DLManagedTensor *m)
{
    exported *e = m->manager_ctx;
    kiln_storage_unref(e->storage);
    kiln_free(e);
}

kiln_status kiln_tensor_to_dlpack(const kiln_tensor *t, DLManagedTensor **out, kiln_err *err)
{
    *out = NULL;
    DLDataType dt;
    if (!kiln_dtype_to_dlpack(t->dtype, &dt))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "a %s tensor cannot be exported as DLPack (no DLPack dtype)",
                            kiln_dtype_name(t->dtype));
    if (!t->storage)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "cannot export an empty tensor as DLPack");
    exported *e = kiln_malloc(sizeof(*e));
    if (!e)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a DLPack export");
    memset(e, 0, sizeof(*e));
    memcpy(e->shape, t->shape.dims, sizeof(int64_t) * (size_t)t->shape.rank);
    e->storage = t->storage;
    kiln_storage_ref(e->storage);
    DLTensor *d = &e->managed.dl_tensor;
    d->data = t->data;
    d->device.device_type = t->device.kind == KILN_DEVICE_CUDA ? kDLCUDA : kDLCPU;
    d->device.device_id = t->device.id;
    d->ndim = t->shape.rank;
    d->dtype = dt;
    d->shape = e->shape;
    d->strides = NULL;
    d->byte_offset = 0;
    e->managed.manager_ctx = e;
    e->managed.deleter = export_deleter;
    *out = &e->managed;
    return KILN_OK;
}

static void import_release(void *ctx, void *data)
{
    (void)data;
    DLManagedTensor *m = ctx;
    if (m->deleter)
        m->deleter(m);
}

kiln_status kiln_tensor_from_dlpack(DLManagedTensor *m, kiln_tensor *out, kiln_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!m)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "DLPack tensor is NULL");
    const DLTensor *d = &m->dl_tensor;
    kiln_device dev;
    if (d->device.device_type == kDLCPU)
        dev = (kiln_device){KILN_DEVICE_CPU, 0};
    else if (d->device.device_type == kDLCUDA)
        dev = (kiln_device){KILN_DEVICE_CUDA, d->device.device_id};
    else
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "DLPack device type %d is not supported (CPU or CUDA only)",
                            (int)d->device.device_type);
    if (d->ndim < 0 || d->ndim > KILN_MAX_RANK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "DLPack ndim %d is outside 0..%d", d->ndim,
                            KILN_MAX_RANK);
    if (d->ndim > 0 && !d->shape)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "DLPack shape is NULL with ndim %d",
                            d->ndim);
    kiln_dtype dtype;
    kiln_status st = kiln_dtype_from_dlpack(d->dtype, &dtype, err);
    if (st != KILN_OK)
        return st;
    kiln_shape shape;
    st = kiln_shape_set(&shape, d->shape, (size_t)d->ndim, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "DLPack shape");
    if (d->strides) {
        uint64_t expect = 1;
        for (int i = d->ndim - 1; i >= 0; i--) {
            if (shape.dims[i] != 1 && (d->strides[i] < 0 || (uint64_t)d->strides[i] != expect))
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "DLPack strides are not compact row-major at dim %d "
                                    "(stride %lld, expected %llu); Kiln imports without copying",
                                    i, (long long)d->strides[i], (unsigned long long)expect);
            /* an overflowing element count is refused just below by the byte-size check */
            if (__builtin_mul_overflow(expect, (uint64_t)shape.dims[i], &expect))
                expect = UINT64_MAX;
        }
    }
    uint64_t bytes;
    st = kiln_shape_byte_size(dtype, &shape, 0, &bytes, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "DLPack tensor");
    if (!d->data && bytes > 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "DLPack data is NULL for %llu bytes",
                            (unsigned long long)bytes);
    void *data = (unsigned char *)d->data + d->byte_offset;
    kiln_storage *s;
    st = kiln__storage_new(KILN_STORAGE_BORROWED, dev, data, (size_t)bytes, import_release, m, &s,
                           err);
    if (st != KILN_OK)
        return st;
    out->dtype = dtype;
    out->shape = shape;
    out->data = data;
    out->byte_size = (size_t)bytes;
    out->device = dev;
    out->storage = s;
    return KILN_OK;
}
