/* tensor/dtype.c: the dtype table (sizes, KServe names, config names, DLPack types). */
#include "tensor/tensor.h"

#include <string.h>

typedef struct dtype_info {
    const char *name;        /* KServe v2 datatype string */
    const char *config_name; /* Triton model-config TYPE_* name */
    size_t size;             /* bytes per element; 0 = variable */
    int dl_code;             /* DLPack type code, -1 = none */
    int dl_bits;
} dtype_info;

static const dtype_info table[KILN_DTYPE_COUNT] = {
    [KILN_DTYPE_INVALID] = {"INVALID", "TYPE_INVALID", 0, -1, 0},
    [KILN_DTYPE_BOOL] = {"BOOL", "TYPE_BOOL", 1, KILN_DLPACK_BOOL_CODE, 8},
    [KILN_DTYPE_UINT8] = {"UINT8", "TYPE_UINT8", 1, kDLUInt, 8},
    [KILN_DTYPE_UINT16] = {"UINT16", "TYPE_UINT16", 2, kDLUInt, 16},
    [KILN_DTYPE_UINT32] = {"UINT32", "TYPE_UINT32", 4, kDLUInt, 32},
    [KILN_DTYPE_UINT64] = {"UINT64", "TYPE_UINT64", 8, kDLUInt, 64},
    [KILN_DTYPE_INT8] = {"INT8", "TYPE_INT8", 1, kDLInt, 8},
    [KILN_DTYPE_INT16] = {"INT16", "TYPE_INT16", 2, kDLInt, 16},
    [KILN_DTYPE_INT32] = {"INT32", "TYPE_INT32", 4, kDLInt, 32},
    [KILN_DTYPE_INT64] = {"INT64", "TYPE_INT64", 8, kDLInt, 64},
    [KILN_DTYPE_FP16] = {"FP16", "TYPE_FP16", 2, kDLFloat, 16},
    [KILN_DTYPE_BF16] = {"BF16", "TYPE_BF16", 2, kDLBfloat, 16},
    [KILN_DTYPE_FP32] = {"FP32", "TYPE_FP32", 4, kDLFloat, 32},
    [KILN_DTYPE_FP64] = {"FP64", "TYPE_FP64", 8, kDLFloat, 64},
    [KILN_DTYPE_BYTES] = {"BYTES", "TYPE_STRING", 0, -1, 0},
};

static bool valid(kiln_dtype dt)
{
    return (unsigned)dt < KILN_DTYPE_COUNT;
}

size_t kiln_dtype_size(kiln_dtype dt)
{
    return valid(dt) ? table[dt].size : 0;
}

const char *kiln_dtype_name(kiln_dtype dt)
{
    return valid(dt) ? table[dt].name : "INVALID";
}

const char *kiln_dtype_config_name(kiln_dtype dt)
{
    return valid(dt) ? table[dt].config_name : "TYPE_INVALID";
}

/* Finds s among the KServe names (config = 0) or the config names (config = 1). */
static bool lookup(const char *s, int config, kiln_dtype *out)
{
    for (int i = KILN_DTYPE_INVALID + 1; s && i < KILN_DTYPE_COUNT; i++) {
        if (strcmp(s, config ? table[i].config_name : table[i].name) == 0) {
            *out = (kiln_dtype)i;
            return true;
        }
    }
    return false;
}

kiln_status kiln_dtype_parse(const char *s, kiln_dtype *out, kiln_err *err)
{
    if (lookup(s, 0, out))
        return KILN_OK;
    return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                        "datatype '%.32s' is not a KServe v2 datatype (BOOL, UINT8..UINT64, "
                        "INT8..INT64, FP16, BF16, FP32, FP64, BYTES)",
                        s ? s : "");
}

kiln_status kiln_dtype_parse_config(const char *s, kiln_dtype *out, kiln_err *err)
{
    if (lookup(s, 1, out))
        return KILN_OK;
    return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                        "data_type '%.32s' is not a supported model-config type (TYPE_BOOL, "
                        "TYPE_UINT8..TYPE_UINT64, TYPE_INT8..TYPE_INT64, TYPE_FP16, TYPE_BF16, "
                        "TYPE_FP32, TYPE_FP64, TYPE_STRING)",
                        s ? s : "");
}

bool kiln_dtype_to_dlpack(kiln_dtype dt, DLDataType *out)
{
    if (!valid(dt) || table[dt].dl_code < 0)
        return false;
    out->code = (uint8_t)table[dt].dl_code;
    out->bits = (uint8_t)table[dt].dl_bits;
    out->lanes = 1;
    return true;
}

kiln_status kiln_dtype_from_dlpack(DLDataType t, kiln_dtype *out, kiln_err *err)
{
    if (t.lanes == 1) {
        for (int i = KILN_DTYPE_INVALID + 1; i < KILN_DTYPE_COUNT; i++) {
            if (table[i].dl_code == (int)t.code && table[i].dl_bits == (int)t.bits) {
                *out = (kiln_dtype)i;
                return KILN_OK;
            }
        }
    }
    return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                        "DLPack dtype {code %u, bits %u, lanes %u} has no Kiln dtype (lanes must "
                        "be 1; int/uint 8-64, float 16/32/64, bfloat 16, bool 8)",
                        (unsigned)t.code, (unsigned)t.bits, (unsigned)t.lanes);
}
