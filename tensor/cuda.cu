/* tensor/cuda.cu: CUDA device memory for kiln_storage (built when nvcc is present). */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/cuda_mem.h"
#include "tensor/tensor.h"

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

extern "C" bool kiln_cuda_error_sticky(int cuda_error)
{
    cudaError_t e = (cudaError_t)cuda_error;
    return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure ||
           e == cudaErrorIllegalInstruction || e == cudaErrorMisalignedAddress ||
           e == cudaErrorHardwareStackError || e == cudaErrorInvalidPc || e == cudaErrorAssert ||
           e == cudaErrorInvalidAddressSpace || e == cudaErrorLaunchTimeout ||
           e == cudaErrorExternalDevice;
}

extern "C" kiln_status kiln_cuda_probe(int device, bool *lost, kiln_err *err)
{
    *lost = false;
    kiln_status st = kiln_cuda_device_check(device, err);
    if (st != KILN_OK)
        return st;
    /* a stream of its own, not the device: synchronizing a device while another thread
     * captures a CUDA graph on one of its streams would break that capture, and would wait
     * for everyone's work. A sticky error is the context's, so any call reports it. */
    int prev = 0;
    cudaStream_t s = NULL;
    cudaEvent_t ev = NULL;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess)
        e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e == cudaSuccess)
        e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e == cudaSuccess) /* work for the GPU itself, not only the runtime's bookkeeping */
        e = cudaEventRecord(ev, s);
    if (e == cudaSuccess)
        e = cudaEventSynchronize(ev);
    if (ev)
        (void)cudaEventDestroy(ev);
    if (s)
        (void)cudaStreamDestroy(s);
    (void)cudaSetDevice(prev);
    if (e == cudaSuccess)
        return KILN_OK;
    (void)cudaGetLastError();
    *lost = kiln_cuda_error_sticky(e);
    return kiln_err_set(err, KILN_UNAVAILABLE, "GPU %d: CUDA: %s", device, cudaGetErrorString(e));
}

extern "C" kiln_status kiln_cuda_device_check(int device, kiln_err *err)
{
    int n = 0;
    kiln_status st = kiln_cuda_device_count(&n, err);
    if (st == KILN_OK && (device < 0 || device >= n))
        st = kiln_err_set(err, KILN_UNAVAILABLE, "CUDA device %d does not exist (%d visible)",
                          device, n);
    return st;
}

extern "C" kiln_status kiln_cuda_prepare(int *count, kiln_err *err)
{
    /* The driver's JIT cache (~/.nv/ComputeCache) is written from whichever thread compiles
     * a kernel, sandboxed ones included, where opening a file for writing is a violation:
     * off, unless the operator says otherwise. Before any other thread reads the environment. */
    setenv("CUDA_CACHE_DISABLE", "1", 0);
    kiln_status st = kiln_cuda_device_count(count, err);
    for (int d = 0; st == KILN_OK && d < *count; d++) {
        cudaError_t e = cudaSetDevice(d);
        if (e == cudaSuccess)
            e = cudaFree(NULL); /* creates the device's primary context */
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            st = kiln_err_set(err, KILN_INTERNAL, "CUDA device %d: cannot create a context: %s", d,
                              cudaGetErrorString(e));
        }
    }
    if (*count > 0)
        (void)cudaSetDevice(0);
    return st;
}

extern "C" kiln_status kiln__cuda_alloc(int device, size_t size, void **out, kiln_err *err)
{
    *out = NULL;
    kiln_status st = kiln_cuda_device_check(device, err);
    if (st != KILN_OK)
        return st;
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

extern "C" kiln_status kiln__cuda_copy(void *dst, const void *src, size_t n, kiln_err *err)
{
    /* cudaMemcpy runs on the legacy stream, which does not wait for non-blocking streams (the
     * backend's), and from pageable memory it may return before the DMA lands: wait for the
     * whole device before and after */
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess)
        e = cudaMemcpy(dst, src, n, cudaMemcpyDefault);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return kiln_err_set(err, KILN_INTERNAL, "CUDA: cudaMemcpy(%zu): %s", n,
                            cudaGetErrorString(e));
    }
    return KILN_OK;
}

typedef CUresult (*address_range_fn)(CUdeviceptr *base, size_t *size, CUdeviceptr ptr);

extern "C" kiln_status kiln__cuda_ipc_open(const void *handle, size_t handle_len, int device,
                                           uint64_t byte_size, void **ptr, kiln_err *err)
{
    *ptr = NULL;
    if (handle_len != sizeof(cudaIpcMemHandle_t))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "raw_handle is %zu bytes; a cudaIpcMemHandle_t is %zu", handle_len,
                            sizeof(cudaIpcMemHandle_t));
    int n = 0;
    kiln_status st = kiln_cuda_device_count(&n, err);
    if (st != KILN_OK)
        return st;
    if (device < 0 || device >= n)
        return kiln_err_set(err, n ? KILN_INVALID_ARGUMENT : KILN_UNAVAILABLE,
                            "device_id %d does not exist (%d CUDA device%s visible)", device, n,
                            n == 1 ? "" : "s");
    cudaIpcMemHandle_t h;
    memcpy(&h, handle, sizeof(h));
    int prev = 0;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess)
        e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaIpcOpenMemHandle(ptr, h, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaSetDevice(prev);
        *ptr = NULL;
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "the CUDA IPC handle cannot be opened: %s",
                            cudaGetErrorString(e));
    }
    /* the allocation behind the handle must cover byte_size from the handle's address */
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
    e = cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &q);
    CUdeviceptr base = 0;
    size_t size = 0;
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn ||
        ((address_range_fn)fn)(&base, &size, (CUdeviceptr)*ptr) != CUDA_SUCCESS) {
        (void)cudaGetLastError();
        (void)cudaIpcCloseMemHandle(*ptr);
        (void)cudaSetDevice(prev);
        *ptr = NULL;
        return kiln_err_set(err, KILN_INTERNAL, "CUDA: cannot query the size of the shared buffer");
    }
    uint64_t avail = (uint64_t)(base + size - (CUdeviceptr)*ptr);
    (void)cudaSetDevice(prev);
    if (byte_size > avail) {
        kiln__cuda_ipc_close(device, *ptr);
        *ptr = NULL;
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "byte_size %llu passes the %llu bytes the shared CUDA buffer holds",
                            (unsigned long long)byte_size, (unsigned long long)avail);
    }
    return KILN_OK;
}

extern "C" void kiln__cuda_ipc_close(int device, void *ptr)
{
    if (!ptr)
        return;
    int prev = 0;
    if (cudaGetDevice(&prev) != cudaSuccess)
        prev = device;
    (void)cudaSetDevice(device);
    (void)cudaIpcCloseMemHandle(ptr);
    (void)cudaSetDevice(prev);
}
