/* backends/onnx/gpu_none.c: the twin of gpu.cu for builds without CUDA (KILN_CUDA=0): no CUDA
 * kernels, and every context call answers KILN_UNAVAILABLE. */
#include "backends/onnx/gpu.h"
#include "backends/onnx/onnx_int.h"

const kiln_onnx_kernel kiln__onnx_cuda[] = {
    {NULL, KILN_DEVICE_CUDA, NULL, false, 0},
};

kiln_status kiln__onnx_gpu_open(int device, kiln_onnx_precision precision, bool cublaslt,
                                kiln_onnx_gpu **out, kiln_err *err)
{
    (void)device, (void)precision, (void)cublaslt;
    *out = NULL;
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

void kiln__onnx_gpu_close(kiln_onnx_gpu *g)
{
    (void)g;
}

kiln_onnx_precision kiln__onnx_gpu_precision(const kiln_onnx_gpu *g)
{
    (void)g;
    return KILN_ONNX_FP32;
}

int kiln__onnx_gpu_device(const kiln_onnx_gpu *g)
{
    (void)g;
    return -1;
}

static kiln_status none(kiln_err *err)
{
    return kiln_err_set(err, KILN_UNAVAILABLE, "built without CUDA");
}

kiln_status kiln__onnx_gpu_enter(kiln_onnx_gpu *g, kiln_err *err)
{
    (void)g;
    return none(err);
}

kiln_status kiln__onnx_gpu_copy(kiln_onnx_gpu *g, void *dst, const void *src, size_t n,
                                kiln_err *err)
{
    (void)g, (void)dst, (void)src, (void)n;
    return none(err);
}

kiln_status kiln__onnx_gpu_convert(kiln_onnx_gpu *g, void *dst, bool to_half, const void *src,
                                   size_t n, kiln_err *err)
{
    (void)g, (void)dst, (void)to_half, (void)src, (void)n;
    return none(err);
}

kiln_status kiln__onnx_gpu_zero(kiln_onnx_gpu *g, void *dst, size_t n, kiln_err *err)
{
    (void)g, (void)dst, (void)n;
    return none(err);
}

kiln_status kiln__onnx_gpu_sync(kiln_onnx_gpu *g, kiln_err *err)
{
    (void)g;
    return none(err);
}

void kiln__onnx_gpu_ws_release(kiln_onnx_gpu *g)
{
    (void)g;
}

uint64_t kiln__onnx_gpu_lt_runs(const kiln_onnx_gpu *g)
{
    (void)g;
    return 0;
}

bool kiln__onnx_gpu_poisoned(const kiln_onnx_gpu *g)
{
    (void)g;
    return false;
}

kiln_status kiln__onnx_gpu_staging(kiln_onnx_gpu *g, size_t bytes, void **host, kiln_err *err)
{
    (void)g, (void)bytes;
    *host = NULL;
    return none(err);
}

uint64_t kiln__onnx_gpu_bytes(const kiln_onnx_gpu *g)
{
    (void)g;
    return 0;
}

uint64_t kiln__onnx_gpu_generation(const kiln_onnx_gpu *g)
{
    (void)g;
    return 0;
}

bool kiln__onnx_gpu_capturing(const kiln_onnx_gpu *g)
{
    (void)g;
    return false;
}

kiln_status kiln__onnx_gpu_capture_begin(kiln_onnx_gpu *g, kiln_err *err)
{
    (void)g;
    return none(err);
}

kiln_status kiln__onnx_gpu_capture_end(kiln_onnx_gpu *g, void **exec, kiln_err *err)
{
    (void)g;
    *exec = NULL;
    return none(err);
}

kiln_status kiln__onnx_gpu_graph_run(kiln_onnx_gpu *g, void *exec, kiln_err *err)
{
    (void)g, (void)exec;
    return none(err);
}

void kiln__onnx_gpu_graph_free(void *exec)
{
    (void)exec;
}
