/* client/dlpack.c: KServe v2 datatype names and DLPack tensors as request inputs. */
#include "client/client_int.h"

#include <inttypes.h>
#include <string.h>

/* DLPack's boolean type code. Debian's dlpack.h (0.6) predates kDLBool; later DLPack versions
 * define it as 6 (one byte per element, like KServe's BOOL). */
#define DL_BOOL_CODE 6

static const struct {
    const char *name;
    int size;     /* bytes per element; 0 for BYTES */
    uint8_t code; /* DLDataTypeCode */
    uint8_t bits;
} dtypes[] = {
    {"BOOL", 1, DL_BOOL_CODE, 8}, {"UINT8", 1, kDLUInt, 8},   {"UINT16", 2, kDLUInt, 16},
    {"UINT32", 4, kDLUInt, 32},   {"UINT64", 8, kDLUInt, 64}, {"INT8", 1, kDLInt, 8},
    {"INT16", 2, kDLInt, 16},     {"INT32", 4, kDLInt, 32},   {"INT64", 8, kDLInt, 64},
    {"FP16", 2, kDLFloat, 16},    {"FP32", 4, kDLFloat, 32},  {"FP64", 8, kDLFloat, 64},
    {"BF16", 2, kDLBfloat, 16},   {"BYTES", 0, 0, 0},
};

int kiln__dtype_size(const char *datatype)
{
    if (!datatype)
        return -1;
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (strcmp(dtypes[i].name, datatype) == 0)
            return dtypes[i].size;
    return -1;
}

static const char *dl_name(DLDataType t)
{
    if (t.lanes != 1)
        return NULL;
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (dtypes[i].size && dtypes[i].code == t.code && dtypes[i].bits == t.bits)
            return dtypes[i].name; /* BYTES (size 0) has no DLPack form */
    return NULL;
}

static kiln_status from_dlpack(const DLTensor *dl, const char *name, kiln_client_tensor *out,
                               kiln_err *err)
{
    if (!dl)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "tensor '%s': the DLTensor is NULL",
                            name ? name : "");
    kiln_status st = kiln__need_name(name, "tensor name", err);
    if (st != KILN_OK)
        return st;
    if (dl->device.device_type != kDLCPU && dl->device.device_type != kDLCUDAHost)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "tensor '%s': device type %d is not host memory (kDLCPU or "
                            "kDLCUDAHost); copy it to the host or use CUDA shared memory",
                            name, (int)dl->device.device_type);
    const char *dt = dl_name(dl->dtype);
    if (!dt)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "tensor '%s': DLPack dtype (code %u, bits %u, lanes %u) has no KServe "
                            "v2 datatype",
                            name, dl->dtype.code, dl->dtype.bits, dl->dtype.lanes);
    if (dl->ndim < 0 || dl->ndim > KILN_CLIENT_MAX_RANK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "tensor '%s': ndim %d is outside 0..%d",
                            name, dl->ndim, KILN_CLIENT_MAX_RANK);
    if (dl->ndim > 0 && !dl->shape)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "tensor '%s': shape is NULL", name);
    size_t esize = (size_t)kiln__dtype_size(dt);
    uint64_t elems = 1;
    for (int d = 0; d < dl->ndim; d++) {
        int64_t n = dl->shape[d];
        if (n < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "tensor '%s': shape[%d] = %" PRId64 " is negative", name, d, n);
        if (n && elems > (SIZE_MAX / esize) / (uint64_t)n)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "tensor '%s': byte size overflows at shape[%d]", name, d);
        elems *= (uint64_t)n;
    }
    if (dl->strides) {
        /* row-major and compact: stride[d] = product of shape[d+1:], ignoring size-1 dims */
        int64_t want = 1;
        for (int d = dl->ndim - 1; d >= 0; d--) {
            if (dl->shape[d] != 1 && dl->strides[d] != want)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "tensor '%s': not contiguous (strides[%d] = %" PRId64
                                    ", row-major needs %" PRId64 "); make a contiguous copy",
                                    name, d, dl->strides[d], want);
            want *= dl->shape[d];
        }
    }
    if (!dl->data && elems)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "tensor '%s': data is NULL", name);
    memset(out, 0, sizeof(*out));
    out->name = name;
    out->datatype = dt;
    out->rank = dl->ndim;
    for (int d = 0; d < dl->ndim; d++)
        out->shape[d] = dl->shape[d];
    out->data = dl->data ? (const char *)dl->data + dl->byte_offset : NULL;
    out->byte_size = (size_t)elems * esize;
    return KILN_OK;
}

int kiln_client_tensor_from_dlpack(const DLTensor *dl, const char *name, kiln_client_tensor *out,
                                   kiln_client_error *err)
{
    kiln_err e = {0};
    if (!out)
        return kiln__client_null(err, "out");
    kiln_status st = from_dlpack(dl, name, out, &e);
    return kiln__client_out(err, st, &e);
}
