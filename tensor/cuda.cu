/* tensor/cuda.cu: CUDA device memory for kiln_storage (built when nvcc is present). */
#include <cuda_runtime.h>

#include "tensor/cuda_mem.h"

extern "C" kiln_status kiln_cuda_device_count(int *count, kiln_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError();
        *count = 0;
        return KILN_OK;
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *count = 0;
        return kiln_err_set(err, KILN_UNAVAILABLE, "CUDA: cudaGetDeviceCount failed: %s",
                            cudaGetErrorString(e));
    }
    *count = n;
    return KILN_OK;
}

extern "C" kiln_status kiln__cuda_alloc(int device, size_t size, void **out, kiln_err *err)
{
    *out = NULL;
    int n = 0;
    kiln_status st = kiln_cuda_device_count(&n, err);
    if (st != KILN_OK)
        return st;
    if (device < 0 || device >= n)
        return kiln_err_set(err, KILN_UNAVAILABLE, "CUDA device %d does not exist (%d visible)",
                            device, n);
    /* Allocate on `device` without changing the calling thread's current device. */
    int prev = 0;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess)
        e = cudaSetDevice(device);
    if (e == cudaSuccess) {
        e = cudaMalloc(out, size ? size : 1);
        (void)cudaSetDevice(prev);
    }
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *out = NULL;
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "CUDA device %d: cannot allocate %zu bytes: %s", device, size,
                            cudaGetErrorString(e));
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *out = NULL;
        return kiln_err_set(err, KILN_INTERNAL, "CUDA device %d: cudaMalloc(%zu): %s", device, size,
                            cudaGetErrorString(e));
    }
    return KILN_OK;
}

extern "C" void kiln__cuda_free(int device, void *p)
{
    if (!p)
        return;
    /* cudaFree needs the owning device current; a failure here has no caller to report to. */
    int prev = 0;
    if (cudaGetDevice(&prev) != cudaSuccess)
        prev = device;
    (void)cudaSetDevice(device);
    (void)cudaFree(p);
    (void)cudaSetDevice(prev);
}
