/*
 * Fuzz target: tensor metadata from untrusted sources: shapes (overflow, caps, pattern
 * matching), datatype strings, shared-memory keys and names, and DLPack descriptors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/shm.h"
#include "tensor/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void noop_deleter(DLManagedTensor *m)
{
    (void)m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kiln_err e;
    if (size < 3)
        return 0;
    size_t rank = data[0] % 12; /* over the limit sometimes */
    kiln_dtype dt = (kiln_dtype)(data[1] % (KILN_DTYPE_COUNT + 2));
    uint8_t mode = data[2];
    data += 3;
    size -= 3;

    int64_t dims[12] = {0};
    for (size_t i = 0; i < rank && (i + 1) * 8 <= size; i++)
        memcpy(&dims[i], data + i * 8, 8);
    if (mode & 1)
        for (size_t i = 0; i < rank; i++)
            dims[i] %= 1 << 20;
    kiln_shape s, p;
    if (kiln_shape_set(&s, dims, rank, &e) == KILN_OK) {
        uint64_t n, b;
        if (kiln_shape_numel(&s, &n, &e) == KILN_OK &&
            kiln_shape_byte_size(dt, &s, 1 << 30, &b, &e) == KILN_OK) {
            if (b > (1u << 30) || b != n * kiln_dtype_size(dt))
                abort();
        }
        char buf[64];
        kiln_shape_format(&s, buf, sizeof(buf));
    }
    if (kiln_shape_set_pattern(&p, dims, rank, &e) == KILN_OK && rank &&
        kiln_shape_set(&s, dims, rank, &e) == KILN_OK) {
        if (kiln_shape_match(&p, &s, &e) != KILN_OK)
            abort(); /* a shape always matches itself as a pattern */
    }

    /* strings: keys, names, datatypes */
    char str[300];
    size_t n = size < sizeof(str) - 1 ? size : sizeof(str) - 1;
    memcpy(str, data, n);
    str[n] = '\0';
    if (kiln_shm_key_validate(str, &e) == KILN_OK &&
        (str[0] != '/' || strstr(str, "..") || strchr(str + 1, '/')))
        abort();
    kiln_shm_name_validate(str, &e);
    kiln_dtype d2;
    if (kiln_dtype_parse(str, &d2, &e) == KILN_OK && strcmp(kiln_dtype_name(d2), str) != 0)
        abort();

    /* DLPack descriptor with fuzzed fields over a small real buffer */
    static float backing[4096];
    int64_t strides[12];
    for (size_t i = 0; i < 12; i++)
        strides[i] = size ? (int64_t)(data[i % size] % 5) - 1 : 1;
    DLManagedTensor m;
    memset(&m, 0, sizeof(m));
    m.dl_tensor.data = backing;
    m.dl_tensor.device.device_type = (DLDeviceType)(mode % 4);
    m.dl_tensor.ndim = (int)rank - (mode & 2 ? 1 : 0);
    m.dl_tensor.dtype = (DLDataType){(uint8_t)(mode % 7), (uint8_t)(8 << (mode % 4)), 1};
    m.dl_tensor.shape = dims;
    m.dl_tensor.strides = mode & 4 ? strides : NULL;
    m.deleter = noop_deleter;
    kiln_tensor t;
    if (kiln_tensor_from_dlpack(&m, &t, &e) == KILN_OK)
        kiln_tensor_fini(&t);
    return 0;
}
