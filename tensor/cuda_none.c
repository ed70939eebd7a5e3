/* tensor/cuda_none.c: the CUDA twin for builds without CUDA (KILN_CUDA=0). */
#include "tensor/cuda_mem.h"
#include "tensor/tensor.h"

kiln_status kiln_cuda_device_count(int *count, kiln_err *err)
{
    *count = 0;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

kiln_status kiln_cuda_device_check(int device, kiln_err *err)
{
    (void)device;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

kiln_status kiln_cuda_prepare(int *count, kiln_err *err)
{
    *count = 0;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

bool kiln_cuda_error_sticky(int cuda_error)
{
    (void)cuda_error;
    return false;
}

kiln_status kiln_cuda_probe(int device, bool *lost, kiln_err *err)
{
    (void)device;
    *lost = false;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

kiln_status kiln__cuda_alloc(int device, size_t size, void **out, kiln_err *err)
{
    (void)device;
    (void)size;
    *out = NULL;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

void kiln__cuda_free(int device, void *p)
{
    (void)device;
    (void)p;
}

kiln_status kiln__cuda_copy(void *dst, const void *src, size_t n, kiln_err *err)
{
    (void)dst, (void)src, (void)n;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

kiln_status kiln__cuda_ipc_open(const void *handle, size_t handle_len, int device,
                                uint64_t byte_size, void **ptr, kiln_err *err)
{
    (void)handle, (void)handle_len, (void)device, (void)byte_size;
    *ptr = NULL;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

void kiln__cuda_ipc_close(int device, void *ptr)
{
    (void)device, (void)ptr;
}
