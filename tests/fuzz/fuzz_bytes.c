/*
 * Fuzz target: KServe v2 BYTES decoding, the path every BYTES tensor from the wire takes.
 * Input: 2 bytes of expected element count, then the buffer. Checks that validation and
 * iteration agree and never read outside the buffer (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint64_t expected = (uint64_t)data[0] | (uint64_t)data[1] << 8;
    data += 2;
    size -= 2;
    /* copy into an exact-size heap buffer so ASan sees any overread */
    uint8_t *buf = malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    kiln_err e;
    uint64_t count = 0;
    kiln_status st = kiln_bytes_validate(buf, size, UINT64_MAX, &count, &e);
    kiln_bytes_iter it;
    kiln_bytes_iter_init(&it, buf, size);
    const uint8_t *el;
    uint32_t len;
    uint64_t walked = 0, total = 0;
    while (kiln_bytes_next(&it, &el, &len)) {
        walked++;
        total += 4 + (uint64_t)len;
        if (len)
            (void)el[len - 1];
    }
    if (st == KILN_OK && (walked != count || total != size))
        abort(); /* validation accepted what iteration cannot walk exactly */
    kiln_status st2 = kiln_bytes_validate(buf, size, expected, NULL, &e);
    if (st2 == KILN_OK && (st != KILN_OK || count != expected))
        abort();
    /* a view of the buffer as a 1-D BYTES tensor agrees with validation */
    kiln_storage *s;
    if (kiln_storage_wrap(buf, size, (kiln_device){KILN_DEVICE_CPU, 0}, NULL, NULL, &s, &e) ==
        KILN_OK) {
        kiln_tensor t;
        kiln_shape sh = {.rank = 1, .dims = {(int64_t)expected}};
        kiln_status st3 = kiln_tensor_view(s, 0, KILN_DTYPE_BYTES, &sh, size, &t, &e);
        if ((st3 == KILN_OK) != (st2 == KILN_OK) && !(expected == 0 && size == 0))
            abort();
        kiln_tensor_fini(&t);
        kiln_storage_unref(s);
    }
    free(buf);
    return 0;
}
