/*
 * backends/onnx/gpu.h: the CUDA side of the ONNX backend (backends/onnx/gpu.cu; gpu_none.c in
 * a build without CUDA, where every call answers KILN_UNAVAILABLE and the CUDA kernel table is
 * empty). Plain C, safe to include from nvcc.
 *
 * One kiln_onnx_gpu per model instance on a GPU: its device, one CUDA stream (the instance's
 * execution thread is the only one that uses it), a cuBLAS and a cuDNN handle bound to that
 * stream, the convolution algorithm cache, cuBLAS's workspace, cuDNN's for unplanned runs (a
 * planned run's convolutions find theirs in the plan's arena: kiln_onnx_call.ws), and a pinned
 * host staging buffer for copies in and out. Kernels find it in kiln_onnx_call.gpu.
 *
 * Precision: KILN_ONNX_FP32 computes in FP32 throughout (cuDNN FMA math, cuBLAS default math);
 * KILN_ONNX_TF32 lets cuDNN and cuBLAS use TF32 tensor cores for convolutions and GEMMs;
 * KILN_ONNX_FP16 keeps the model's float values in FP16 on the device (run_gpu.c converts the
 * constants, the inputs and the outputs), and every kernel reads and writes FP16 and computes in
 * FP32 (convolutions and GEMMs on FP16 tensor cores, FP32 accumulation).
 *
 * Thread-safety: open and close on one thread, outside the sandbox (they create the CUDA
 * context and the library handles, which open device files). Every other call on the one
 * thread that executes the instance at a time (backends/backend.h).
 */
#ifndef KILN_BACKENDS_ONNX_GPU_H
#define KILN_BACKENDS_ONNX_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_onnx_gpu kiln_onnx_gpu;

typedef enum kiln_onnx_precision {
    KILN_ONNX_FP32 = 0,
    KILN_ONNX_TF32 = 1,
    KILN_ONNX_FP16 = 2,
} kiln_onnx_precision;

/*
 * Opens a context on CUDA device `device`. With `cublaslt`, GEMMs with a bias row and no
 * activation or a ReLU go through cuBLASLt with both in its epilogue (config parameter
 * cublaslt, off by default until it has been measured on a GPU). Errors: KILN_UNAVAILABLE (no
 * CUDA in this build, no such device), KILN_RESOURCE_EXHAUSTED (device memory), KILN_INTERNAL
 * with the CUDA, cuBLAS or cuDNN error otherwise. OUT: *out (NULL on failure).
 */
kiln_status kiln__onnx_gpu_open(int device, kiln_onnx_precision precision, bool cublaslt,
                                kiln_onnx_gpu **out, kiln_err *err);

/* Waits for the stream and frees everything open made. NULL is a no-op. */
void kiln__onnx_gpu_close(kiln_onnx_gpu *g);

int kiln__onnx_gpu_device(const kiln_onnx_gpu *g);

/* The precision the context was opened with. */
kiln_onnx_precision kiln__onnx_gpu_precision(const kiln_onnx_gpu *g);

/* Makes the context's device current on the calling thread (each execute starts with it). */
kiln_status kiln__onnx_gpu_enter(kiln_onnx_gpu *g, kiln_err *err);

/* Copies n bytes, in stream order; host memory may be pageable or the staging buffer, device
 * memory any device pointer (CUDA works out the direction). */
kiln_status kiln__onnx_gpu_copy(kiln_onnx_gpu *g, void *dst, const void *src, size_t n,
                                kiln_err *err);

/* Converts n elements of device memory, in stream order: FP32 src into FP16 dst (to_half), or
 * FP16 src into FP32 dst (round to nearest even; FP32 values beyond FP16's range become
 * infinities). */
kiln_status kiln__onnx_gpu_convert(kiln_onnx_gpu *g, void *dst, bool to_half, const void *src,
                                   size_t n, kiln_err *err);

/* Sets n bytes of device memory to zero, in stream order. */
kiln_status kiln__onnx_gpu_zero(kiln_onnx_gpu *g, void *dst, size_t n, kiln_err *err);

/* Waits until the stream's work is done; a failure there (a kernel's fault) is reported with
 * the CUDA error string. */
kiln_status kiln__onnx_gpu_sync(kiln_onnx_gpu *g, kiln_err *err);

/* True once a call through g returned one of CUDA's sticky errors (an illegal address, a launch
 * failure, a device assert...): the device's context is unusable for the rest of the process,
 * for every model on that GPU, and nothing can run there again until the server restarts. */
bool kiln__onnx_gpu_poisoned(const kiln_onnx_gpu *g);

/* The pinned host staging buffer, grown to at least `bytes` (its contents are not kept when it
 * grows). Valid until the next call. */
kiln_status kiln__onnx_gpu_staging(kiln_onnx_gpu *g, size_t bytes, void **host, kiln_err *err);

/* cuBLAS's (and cuBLASLt's) workspace, fixed per context. */
#define KILN_ONNX_BLAS_WS_BYTES ((size_t)32 << 20)

/* Bytes of device memory the context holds (cuBLAS's fixed workspace, and cuDNN's while an
 * unplanned run needs one). */
uint64_t kiln__onnx_gpu_bytes(const kiln_onnx_gpu *g);

/* Frees the context's cuDNN workspace (waiting for the stream first): once a run is planned,
 * its convolutions' workspaces are in the plan's arena. The next unplanned run grows it again. */
void kiln__onnx_gpu_ws_release(kiln_onnx_gpu *g);

/* GEMMs launched through cuBLASLt so far (0 without cublaslt): for tests. */
uint64_t kiln__onnx_gpu_lt_runs(const kiln_onnx_gpu *g);

/* Bumped each time memory that captured graphs point at (the workspace) is replaced. */
uint64_t kiln__onnx_gpu_generation(const kiln_onnx_gpu *g);

/* True while the stream is capturing a graph (kernels must not allocate or synchronize). */
bool kiln__onnx_gpu_capturing(const kiln_onnx_gpu *g);

/*
 * CUDA graphs. capture_begin starts capturing the stream's work; capture_end stops it and
 * instantiates what was captured. OUT: *exec (NULL when the capture failed, with the reason
 * in err; the stream is usable again either way). graph_run launches an instantiated graph on
 * the stream. graph_free frees one (NULL: no-op).
 */
kiln_status kiln__onnx_gpu_capture_begin(kiln_onnx_gpu *g, kiln_err *err);
kiln_status kiln__onnx_gpu_capture_end(kiln_onnx_gpu *g, void **exec, kiln_err *err);
kiln_status kiln__onnx_gpu_graph_run(kiln_onnx_gpu *g, void *exec, kiln_err *err);
void kiln__onnx_gpu_graph_free(void *exec);

#ifdef __cplusplus
}
#endif

#endif /* KILN_BACKENDS_ONNX_GPU_H */
