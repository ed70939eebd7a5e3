/*
 * backends/onnx/gpu.cu: the CUDA side of the ONNX backend: the per-instance context (gpu.h)
 * and the CUDA kernels of the kernel registry (onnx_int.h), on FP32 or FP16 tensors (FP16: a
 * model in FP16 precision; the arithmetic is FP32 either way):
 *   - Conv through cuDNN (2-D, groups, symmetric pads; the algorithm found once per input
 *     shape with cudnnFindConvolutionForwardAlgorithm and cached), bias and the fused
 *     activation in one pass after it;
 *   - MatMul and Gemm through cuBLAS (batched and broadcast batches), bias (Gemm's C row, or
 *     the one load folds into a MatMul) and activation in one pass; with the model's cublaslt
 *     parameter, one GEMM with a bias row and no activation or a ReLU goes through cuBLASLt,
 *     both in its epilogue;
 *   - elementwise unary and broadcasting binary ops (with the fused activation), MaxPool,
 *     AveragePool, GlobalAveragePool, BatchNormalization, Softmax, LogSoftmax,
 *     LayerNormalization, ReduceMean and ReduceSum over trailing axes, Transpose, Slice,
 *     Expand, Concat, Gather with host indices; Reshape, Flatten, Squeeze, Unsqueeze and Identity
 * are views (their CPU functions, registered for CUDA in cpu_shape.c and cpu_tensor.c). A case a
 * kernel does not handle answers KILN_UNIMPLEMENTED and runs on the CPU (run_gpu.c). No kernel
 * synchronizes or allocates, except a Conv meeting a new input shape (the algorithm search, then
 * the context's workspace grown): that happens on the first, unplanned run of a shape, which is
 * never captured into a CUDA graph; the plan then places each convolution's workspace in the
 * arena (kiln_onnx_call.ws).
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "backends/onnx/cpu_kernels.h"
#include "backends/onnx/gpu.h"
#include "backends/onnx/scalar_ops.h"
#include "common/alloc.h"
#include "common/log.h"
}

/* ---------------------------------------------------------------- context */

/*
 * The algorithm cache, one for the process: the algorithm cuDNN found fastest for a convolution
 * problem (device, precision, input dims, weight dims, pads, strides, dilations, group), and
 * the one cuBLASLt's heuristic gives a GEMM with an epilogue (device, precision, shapes,
 * transposes, epilogue, pointer alignments), so that the repeated blocks of a network, the
 * other instances of a model and the other models search once. The key's last slot says
 * which kind it is. Open addressing; a full table searches again each time.
 */
#define ALGO_SLOTS 8192
enum { KEY_CONV = 0, KEY_LT = 1 };
typedef struct algo_key {
    int64_t v[20];
} algo_key;
typedef struct algo_entry {
    bool used;
    algo_key key;
    union {
        struct {
            cudnnConvolutionFwdAlgo_t algo;
            cudnnMathType_t math;
            size_t ws;
        } conv;
        struct {
            bool none; /* the heuristic found nothing: the plain cuBLAS path runs */
            cublasLtMatmulAlgo_t algo;
            size_t ws;
        } lt;
    } u;
} algo_entry;
static algo_entry algo_cache[ALGO_SLOTS];
static size_t algo_count;
static pthread_mutex_t algo_mu = PTHREAD_MUTEX_INITIALIZER;

/* A convolution algorithm needing more workspace than this is passed over. */
#define CONV_WS_MAX ((size_t)1 << 30)

struct kiln_onnx_gpu {
    int device;
    kiln_onnx_precision precision;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt; /* GEMMs with a bias or ReLU epilogue (NULL: cublaslt off) */
    uint64_t lt_runs;    /* GEMMs launched through it (kiln__onnx_gpu_lt_runs) */
    cudnnHandle_t dnn;
    void *blas_ws;
    void *ws; /* cuDNN workspace for unplanned runs */
    size_t ws_bytes;
    bool ws_captured; /* a captured graph points at ws */
    uint64_t gen;
    void *pinned;
    size_t pinned_bytes;
    bool capturing;
    bool poisoned; /* a CUDA call here returned a sticky error (kiln__onnx_gpu_poisoned) */
};

static kiln_status cuda_fail(kiln_err *err, const char *what, cudaError_t e)
{
    (void)cudaGetLastError();
    return kiln_err_set(err,
                        e == cudaErrorMemoryAllocation ? KILN_RESOURCE_EXHAUSTED : KILN_INTERNAL,
                        "CUDA: %s: %s", what, cudaGetErrorString(e));
}

/* cuda_fail for a call made through context g: a sticky error marks g poisoned. */
static kiln_status gfail(kiln_onnx_gpu *g, kiln_err *err, const char *what, cudaError_t e)
{
    g->poisoned = g->poisoned || kiln_cuda_error_sticky(e);
    return cuda_fail(err, what, e);
}

extern "C" kiln_status kiln__onnx_gpu_open(int device, kiln_onnx_precision precision, bool cublaslt,
                                           kiln_onnx_gpu **out, kiln_err *err)
{
    *out = NULL;
    kiln_status st = kiln_cuda_device_check(device, err);
    if (st != KILN_OK)
        return st;
    kiln_onnx_gpu *g = (kiln_onnx_gpu *)kiln_calloc(1, sizeof(*g));
    if (!g)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    g->device = device;
    g->precision = precision;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        st = cuda_fail(err, "cudaSetDevice", e);
    } else if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        st = cuda_fail(err, "cudaStreamCreate", e);
    } else if ((e = cudaMalloc(&g->blas_ws, KILN_ONNX_BLAS_WS_BYTES)) != cudaSuccess) {
        st = cuda_fail(err, "cudaMalloc (cuBLAS workspace)", e);
    } else if (cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS) {
        g->blas = NULL;
        st = kiln_err_set(err, KILN_INTERNAL, "cuBLAS: cublasCreate failed");
    } else if (cublaslt && cublasLtCreate(&g->lt) != CUBLAS_STATUS_SUCCESS) {
        g->lt = NULL;
        st = kiln_err_set(err, KILN_INTERNAL, "cuBLASLt: cublasLtCreate failed");
    } else if (cublasSetStream(g->blas, g->stream) != CUBLAS_STATUS_SUCCESS ||
               cublasSetWorkspace(g->blas, g->blas_ws, KILN_ONNX_BLAS_WS_BYTES) !=
                   CUBLAS_STATUS_SUCCESS ||
               cublasSetMathMode(g->blas, precision == KILN_ONNX_TF32
                                              ? CUBLAS_TF32_TENSOR_OP_MATH
                                              : CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
        st = kiln_err_set(err, KILN_INTERNAL, "cuBLAS: cannot set the stream or workspace");
    } else {
        cudnnStatus_t s = cudnnCreate(&g->dnn);
        if (s != CUDNN_STATUS_SUCCESS) {
            g->dnn = NULL;
            st = kiln_err_set(err, KILN_INTERNAL, "cuDNN: cudnnCreate: %s", cudnnGetErrorString(s));
        } else if ((s = cudnnSetStream(g->dnn, g->stream)) != CUDNN_STATUS_SUCCESS) {
            st = kiln_err_set(err, KILN_INTERNAL, "cuDNN: cudnnSetStream: %s",
                              cudnnGetErrorString(s));
        }
    }
    if (st != KILN_OK) {
        kiln__onnx_gpu_close(g);
        return st;
    }
    *out = g;
    return KILN_OK;
}

extern "C" void kiln__onnx_gpu_close(kiln_onnx_gpu *g)
{
    if (!g)
        return;
    (void)cudaSetDevice(g->device);
    if (g->stream)
        (void)cudaStreamSynchronize(g->stream);
    if (g->dnn)
        cudnnDestroy(g->dnn);
    if (g->lt)
        cublasLtDestroy(g->lt);
    if (g->blas)
        cublasDestroy(g->blas);
    if (g->stream)
        cudaStreamDestroy(g->stream);
    cudaFree(g->blas_ws);
    cudaFree(g->ws);
    cudaFreeHost(g->pinned);
    (void)cudaGetLastError();
    kiln_free(g);
}

extern "C" int kiln__onnx_gpu_device(const kiln_onnx_gpu *g)
{
    return g->device;
}

extern "C" kiln_onnx_precision kiln__onnx_gpu_precision(const kiln_onnx_gpu *g)
{
    return g->precision;
}

extern "C" kiln_status kiln__onnx_gpu_enter(kiln_onnx_gpu *g, kiln_err *err)
{
    cudaError_t e = cudaSetDevice(g->device);
    return e == cudaSuccess ? KILN_OK : gfail(g, err, "cudaSetDevice", e);
}

extern "C" kiln_status kiln__onnx_gpu_copy(kiln_onnx_gpu *g, void *dst, const void *src, size_t n,
                                           kiln_err *err)
{
    if (!n)
        return KILN_OK;
    cudaError_t e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, g->stream);
    return e == cudaSuccess ? KILN_OK : gfail(g, err, "cudaMemcpyAsync", e);
}

extern "C" kiln_status kiln__onnx_gpu_zero(kiln_onnx_gpu *g, void *dst, size_t n, kiln_err *err)
{
    if (!n)
        return KILN_OK;
    cudaError_t e = cudaMemsetAsync(dst, 0, n, g->stream);
    return e == cudaSuccess ? KILN_OK : gfail(g, err, "cudaMemsetAsync", e);
}

extern "C" kiln_status kiln__onnx_gpu_sync(kiln_onnx_gpu *g, kiln_err *err)
{
    cudaError_t e = cudaStreamSynchronize(g->stream);
    return e == cudaSuccess ? KILN_OK : gfail(g, err, "executing the model", e);
}

extern "C" bool kiln__onnx_gpu_poisoned(const kiln_onnx_gpu *g)
{
    return g->poisoned;
}

extern "C" kiln_status kiln__onnx_gpu_staging(kiln_onnx_gpu *g, size_t bytes, void **host,
                                              kiln_err *err)
{
    if (bytes > g->pinned_bytes) {
        size_t want = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes;
        cudaError_t e = cudaStreamSynchronize(g->stream);
        if (e != cudaSuccess)
            return gfail(g, err, "cudaStreamSynchronize", e);
        cudaFreeHost(g->pinned);
        g->pinned = NULL;
        g->pinned_bytes = 0;
        if ((e = cudaMallocHost(&g->pinned, want)) != cudaSuccess) {
            g->pinned = NULL;
            return gfail(g, err, "cudaMallocHost (staging)", e);
        }
        g->pinned_bytes = want;
    }
    *host = g->pinned;
    return KILN_OK;
}

extern "C" uint64_t kiln__onnx_gpu_bytes(const kiln_onnx_gpu *g)
{
    return (uint64_t)g->ws_bytes + KILN_ONNX_BLAS_WS_BYTES;
}

extern "C" uint64_t kiln__onnx_gpu_lt_runs(const kiln_onnx_gpu *g)
{
    return g->lt_runs;
}

extern "C" uint64_t kiln__onnx_gpu_generation(const kiln_onnx_gpu *g)
{
    return g->gen;
}

extern "C" bool kiln__onnx_gpu_capturing(const kiln_onnx_gpu *g)
{
    return g->capturing;
}

extern "C" kiln_status kiln__onnx_gpu_capture_begin(kiln_onnx_gpu *g, kiln_err *err)
{
    cudaError_t e = cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess)
        return gfail(g, err, "cudaStreamBeginCapture", e);
    g->capturing = true;
    return KILN_OK;
}

extern "C" kiln_status kiln__onnx_gpu_capture_end(kiln_onnx_gpu *g, void **exec, kiln_err *err)
{
    *exec = NULL;
    g->capturing = false;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(g->stream, &graph);
    if (e != cudaSuccess) {
        if (graph)
            cudaGraphDestroy(graph);
        return gfail(g, err, "cudaStreamEndCapture", e);
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess)
        return gfail(g, err, "cudaGraphInstantiate", e);
    *exec = (void *)x;
    return KILN_OK;
}

extern "C" kiln_status kiln__onnx_gpu_graph_run(kiln_onnx_gpu *g, void *exec, kiln_err *err)
{
    cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)exec, g->stream);
    return e == cudaSuccess ? KILN_OK : gfail(g, err, "cudaGraphLaunch", e);
}

extern "C" void kiln__onnx_gpu_graph_free(void *exec)
{
    if (exec)
        cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

/* ---------------------------------------------------------------- kernel helpers */

#define THREADS 256

static unsigned blocks_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 1 ? 1 : b > 65535u * 8 ? 65535u * 8 : b);
}

/* After a launch: a launch error names the node. */
static kiln_status launched(const kiln_onnx_call *c, kiln_err *err)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        return KILN_OK;
    c->gpu->poisoned = c->gpu->poisoned || kiln_cuda_error_sticky(e);
    return kiln_err_set(err, KILN_INTERNAL, "node '%s' (%s): CUDA: %s", c->node->name, c->node->op,
                        cudaGetErrorString(e));
}

/* A library call of node c failed (out[0] is freed): RESOURCE_EXHAUSTED when the library ran
 * out of memory (`oom`), else INTERNAL, naming the node and the call. */
static kiln_status lib_fail_oom(const kiln_onnx_call *c, kiln_err *err, bool oom, const char *what,
                                const char *msg)
{
    kiln_tensor_fini(&c->out[0]);
    return kiln_err_set(err, oom ? KILN_RESOURCE_EXHAUSTED : KILN_INTERNAL,
                        "node '%s' (%s): %s: %s", c->node->name, c->node->op, what, msg);
}

static kiln_status lib_fail(const kiln_onnx_call *c, kiln_err *err, const char *what,
                            const char *msg)
{
    return lib_fail_oom(c, err, false, what, msg);
}

static size_t numel(const kiln_tensor *t)
{
    return t->byte_size / (kiln_dtype_size(t->dtype) ? kiln_dtype_size(t->dtype) : 1);
}

typedef struct act_p {
    int kind;
    float a, b;
} act_p;

static act_p act_of(const kiln_onnx_act *a)
{
    act_p p = {(int)a->kind, a->a, a->b};
    return p;
}

__device__ __forceinline__ float act_apply(act_p p, float x)
{
    switch (p.kind) {
    case KILN_ONNX_ACT_RELU:
        return x > 0.f ? x : 0.f;
    case KILN_ONNX_ACT_LEAKY:
        return x < 0.f ? p.a * x : x;
    case KILN_ONNX_ACT_CLIP:
        return x < p.a ? p.a : (x > p.b ? p.b : x);
    default:
        return x;
    }
}

/*
 * Float values are FP32, or FP16 in a model in FP16 precision (run_gpu.c keeps every float value
 * on the device in FP16 there). A kernel is a template over the element type T; it loads and
 * stores through ldv/stv and computes in FP32. LAUNCH picks the instance for a tensor.
 */
__device__ __forceinline__ float ldv(float v)
{
    return v;
}
__device__ __forceinline__ float ldv(__half v)
{
    return __half2float(v);
}
__device__ __forceinline__ void stv(float *p, float v)
{
    *p = v;
}
__device__ __forceinline__ void stv(__half *p, float v)
{
    *p = __float2half_rn(v);
}

static bool is_half(const kiln_tensor *t)
{
    return t->dtype == KILN_DTYPE_FP16;
}

#define LAUNCH(half, kern, grid, stream, ...)                                                      \
    do {                                                                                           \
        if (half)                                                                                  \
            kern<__half><<<(grid), THREADS, 0, (stream)>>>(__VA_ARGS__);                           \
        else                                                                                       \
            kern<float><<<(grid), THREADS, 0, (stream)>>>(__VA_ARGS__);                            \
    } while (0)

/* Whether the inputs 1..n-1 that are present have input 0's element type. A mix (an FP32 value
 * in an FP16 model) declines: the CPU kernel runs on FP32 copies. */
static bool agree(const kiln_onnx_call *c, size_t n)
{
    for (size_t i = 1; i < n && i < c->n_in; i++)
        if (c->in[i] && c->in[i]->dtype != c->in[0]->dtype)
            return false;
    return true;
}

template <typename S, typename D>
__global__ void convert_k(const S *__restrict__ x, D *__restrict__ y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        stv(&y[i], ldv(x[i]));
}

extern "C" kiln_status kiln__onnx_gpu_convert(kiln_onnx_gpu *g, void *dst, bool to_half,
                                              const void *src, size_t n, kiln_err *err)
{
    if (!n)
        return KILN_OK;
    if (to_half)
        convert_k<float, __half>
            <<<blocks_for(n), THREADS, 0, g->stream>>>((const float *)src, (__half *)dst, n);
    else
        convert_k<__half, float>
            <<<blocks_for(n), THREADS, 0, g->stream>>>((const __half *)src, (float *)dst, n);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? KILN_OK : gfail(g, err, "converting FP32 and FP16", e);
}

/* ---------------------------------------------------------------- unary */

template <typename T>
__global__ void unary_k(int op, float a, float b, const void *xv, void *yv, size_t n)
{
    const T *__restrict__ x = (const T *)xv;
    T *__restrict__ y = (T *)yv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        stv(&y[i], kiln_onnx_unop_apply(op, ldv(x[i]), a, b));
}

static kiln_status unary(const kiln_onnx_call *c, int op, float a, float b, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, x->dtype, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    size_t n = numel(x);
    if (n)
        LAUNCH(is_half(x), unary_k, blocks_for(n), c->gpu->stream, op, a, b, x->data,
               c->out[0].data, n);
    return launched(c, err);
}

#define UNARY(name, op)                                                                            \
    static kiln_status name(const kiln_onnx_call *c, kiln_err *err)                                \
    {                                                                                              \
        return unary(c, op, 0.f, 0.f, err);                                                        \
    }
UNARY(g_relu, KILN_ONNX_RELU)
UNARY(g_sigmoid, KILN_ONNX_SIGMOID)
UNARY(g_tanh, KILN_ONNX_TANH)
UNARY(g_exp, KILN_ONNX_EXP)
UNARY(g_sqrt, KILN_ONNX_SQRT)
UNARY(g_erf, KILN_ONNX_ERF)
UNARY(g_neg, KILN_ONNX_NEG)
UNARY(g_abs, KILN_ONNX_ABS)

static kiln_status g_leaky(const kiln_onnx_call *c, kiln_err *err)
{
    return unary(c, KILN_ONNX_LEAKY, kiln__onnx_attr_float(c, "alpha", 0.01f), 0.f, err);
}

/* Clip: min and max (inputs 1 and 2) are read on the host. */
static kiln_status g_clip(const kiln_onnx_call *c, kiln_err *err)
{
    float lo, hi;
    kiln_status st = kiln__onnx_clip_prep(c, &lo, &hi, err);
    return st == KILN_OK ? unary(c, KILN_ONNX_CLIP, lo, hi, err) : st;
}

/* ---------------------------------------------------------------- binary, broadcasting */

typedef struct bcast_p {
    int rank;
    int64_t dims[KILN_MAX_RANK], sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
} bcast_p;

/* mode 0: same shapes; 1: a and b repeat every na and nb elements (a trailing-dims
 * broadcast, or a scalar); 2: general strides. */
template <typename T>
__global__ void binary_k(int op, int mode, bcast_p s, size_t na, size_t nb, const void *av,
                         const void *bv, void *yv, size_t n, act_p act)
{
    const T *__restrict__ a = (const T *)av, *__restrict__ b = (const T *)bv;
    T *__restrict__ y = (T *)yv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t ia = i, ib = i;
        if (mode == 1) {
            ia = i % na;
            ib = i % nb;
        } else if (mode == 2) {
            size_t r = i;
            ia = ib = 0;
            for (int d = s.rank - 1; d >= 0; d--) {
                size_t q = r / (size_t)s.dims[d], k = r - q * (size_t)s.dims[d];
                ia += k * (size_t)s.sa[d];
                ib += k * (size_t)s.sb[d];
                r = q;
            }
        }
        stv(&y[i], act_apply(act, kiln_onnx_binop_apply(op, ldv(a[ia]), ldv(b[ib]))));
    }
}

/* True when t's elements repeat along out's leading dims only: t's shape, without leading
 * 1s, is out's trailing dims. */
static bool trailing(const kiln_shape *t, const kiln_shape *out)
{
    int lead = 0;
    while (lead < t->rank && t->dims[lead] == 1)
        lead++;
    int n = t->rank - lead;
    for (int k = 0; k < n; k++)
        if (t->dims[lead + k] != out->dims[out->rank - n + k])
            return false;
    return true;
}

static kiln_status binary(const kiln_onnx_call *c, int op, kiln_err *err)
{
    kiln_status st = kiln__onnx_want_float(c, 0, err);
    if (st == KILN_OK)
        st = kiln__onnx_want_float(c, 1, err);
    if (st != KILN_OK)
        return st;
    if (!agree(c, 2))
        return KILN_UNIMPLEMENTED;
    const kiln_tensor *a = c->in[0], *b = c->in[1];
    bcast_p s;
    kiln_shape out;
    if ((st = kiln__onnx_broadcast(c, &a->shape, &b->shape, &out, s.sa, s.sb, err)) != KILN_OK)
        return st;
    s.rank = out.rank;
    memcpy(s.dims, out.dims, sizeof(s.dims));
    if ((st = kiln__onnx_alloc(c, a->dtype, &out, &c->out[0], err)) != KILN_OK)
        return st;
    size_t n = numel(&c->out[0]), na = numel(a), nb = numel(b);
    int mode = 2;
    if (na == n && nb == n)
        mode = 0;
    else if ((na == n || trailing(&a->shape, &out)) && (nb == n || trailing(&b->shape, &out)))
        mode = 1;
    if (n)
        LAUNCH(is_half(a), binary_k, blocks_for(n), c->gpu->stream, op, mode, s, na ? na : 1,
               nb ? nb : 1, a->data, b->data, c->out[0].data, n, act_of(&c->act));
    return launched(c, err);
}

#define BINARY(name, op)                                                                           \
    static kiln_status name(const kiln_onnx_call *c, kiln_err *err)                                \
    {                                                                                              \
        return binary(c, op, err);                                                                 \
    }
BINARY(g_add, KILN_ONNX_ADD)
BINARY(g_sub, KILN_ONNX_SUB)
BINARY(g_mul, KILN_ONNX_MUL)
BINARY(g_div, KILN_ONNX_DIV)
BINARY(g_pow, KILN_ONNX_POW)

/* ---------------------------------------------------------------- bias + activation */

/* y[row][i] += b[row % nb] (b may be NULL) over rows of len, then act. */
template <typename T>
__global__ void bias_act_k(void *yv, const void *bv, size_t len, size_t nb, size_t n, act_p act)
{
    T *__restrict__ y = (T *)yv;
    const T *__restrict__ b = (const T *)bv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = ldv(y[i]);
        if (b)
            v += ldv(b[(i / len) % nb]);
        stv(&y[i], act_apply(act, v));
    }
}

/* ---------------------------------------------------------------- Conv (cuDNN) */

#define DNN(call)                                                                                  \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                          \
            st = lib_fail_oom(c, err, s_ == CUDNN_STATUS_ALLOC_FAILED, #call,                      \
                              cudnnGetErrorString(s_));                                            \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Finds key in the cache. OUT: *hit (a copy). */
static bool algo_find(const algo_key *key, algo_entry *hit)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 20; i++)
        h = (h ^ (uint64_t)key->v[i]) * 0x100000001B3ull;
    bool found = false;
    pthread_mutex_lock(&algo_mu);
    for (size_t probe = 0; probe < ALGO_SLOTS; probe++) {
        algo_entry *e = &algo_cache[(h + probe) % ALGO_SLOTS];
        if (!e->used)
            break;
        if (memcmp(&e->key, key, sizeof(*key)) == 0) {
            *hit = *e;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&algo_mu);
    return found;
}

/* Adds ne to the cache; an entry of the same key stays unless `replace` (which works in a full
 * table too). */
static void algo_put(const algo_entry *ne, bool replace)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 20; i++)
        h = (h ^ (uint64_t)ne->key.v[i]) * 0x100000001B3ull;
    pthread_mutex_lock(&algo_mu);
    for (size_t probe = 0; probe < ALGO_SLOTS; probe++) {
        algo_entry *e = &algo_cache[(h + probe) % ALGO_SLOTS];
        if (e->used && memcmp(&e->key, &ne->key, sizeof(ne->key)) == 0) {
            if (replace)
                *e = *ne;
            break; /* another thread found it first */
        }
        if (!e->used && algo_count + 1 >= ALGO_SLOTS)
            break; /* full: the key is not there, and nothing new goes in */
        if (!e->used) {
            *e = *ne;
            e->used = true;
            algo_count++;
            break;
        }
    }
    pthread_mutex_unlock(&algo_mu);
}

/* Frees the context's cuDNN workspace; captured graphs that point at it are made stale. */
static void ws_drop(kiln_onnx_gpu *g)
{
    cudaFree(g->ws);
    (void)cudaGetLastError();
    g->ws = NULL;
    g->ws_bytes = 0;
    if (g->ws_captured)
        g->gen++;
    g->ws_captured = false;
}

extern "C" void kiln__onnx_gpu_ws_release(kiln_onnx_gpu *g)
{
    if (!g->ws)
        return;
    (void)cudaStreamSynchronize(g->stream);
    ws_drop(g);
}

/* Makes the context's cuDNN workspace at least `bytes`: for unplanned runs (the first of each
 * input shape), whose plan then places the workspaces in the arena. */
static kiln_status ws_fit(kiln_onnx_gpu *g, size_t bytes, kiln_err *err)
{
    if (bytes <= g->ws_bytes)
        return KILN_OK;
    cudaError_t e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess)
        return gfail(g, err, "cudaStreamSynchronize", e);
    ws_drop(g);
    if ((e = cudaMalloc(&g->ws, bytes)) != cudaSuccess) {
        g->ws = NULL;
        return gfail(g, err, "cudaMalloc (cuDNN workspace)", e);
    }
    g->ws_bytes = bytes;
    return KILN_OK;
}

static kiln_status g_conv(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_conv cv;
    kiln_status st = kiln__onnx_conv_prep(c, &cv, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0], *wt = c->in[1];
    int64_t N = cv.N, C = cv.C, M = cv.M, Cg = cv.Cg, group = cv.group;
    const kiln_onnx_window w = cv.win;
    bool has_b = cv.b != NULL;
    if (w.pad[0] != w.pad[2] || w.pad[1] != w.pad[3] || N > INT32_MAX || C > INT32_MAX ||
        M > INT32_MAX || w.in[0] > INT32_MAX || w.in[1] > INT32_MAX)
        return KILN_UNIMPLEMENTED; /* cuDNN pads both sides alike */
    if (!agree(c, 3))
        return KILN_UNIMPLEMENTED;
    bool half = is_half(x);
    cudnnDataType_t dt = half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    if ((st = kiln__onnx_alloc(c, x->dtype, &cv.out, &c->out[0], err)) != KILN_OK)
        return st;
    if (!numel(&c->out[0]))
        return KILN_OK;
    kiln_onnx_gpu *g = c->gpu;
    cudnnTensorDescriptor_t xd = NULL, yd = NULL;
    cudnnFilterDescriptor_t wd = NULL;
    cudnnConvolutionDescriptor_t cd = NULL;
    algo_entry ce;
    algo_key key;
    void *ws;
    bool planned;
    memset(&key, 0, sizeof(key));
    {
        int64_t v[20] = {g->device, g->precision, N,      C,      w.in[0],  w.in[1],
                         M,         Cg,           w.k[0], w.k[1], w.pad[0], w.pad[1],
                         w.s[0],    w.s[1],       w.d[0], w.d[1], group,    half};
        memcpy(key.v, v, sizeof(v));
    }
    const float one = 1.f, zero = 0.f;
    DNN(cudnnCreateTensorDescriptor(&xd));
    DNN(cudnnCreateTensorDescriptor(&yd));
    DNN(cudnnCreateFilterDescriptor(&wd));
    DNN(cudnnCreateConvolutionDescriptor(&cd));
    DNN(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, dt, (int)N, (int)C, (int)w.in[0],
                                   (int)w.in[1]));
    DNN(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, dt, (int)N, (int)M, (int)w.out[0],
                                   (int)w.out[1]));
    DNN(cudnnSetFilter4dDescriptor(wd, dt, CUDNN_TENSOR_NCHW, (int)M, (int)Cg, (int)w.k[0],
                                   (int)w.k[1]));
    DNN(cudnnSetConvolution2dDescriptor(cd, (int)w.pad[0], (int)w.pad[1], (int)w.s[0], (int)w.s[1],
                                        (int)w.d[0], (int)w.d[1], CUDNN_CROSS_CORRELATION,
                                        CUDNN_DATA_FLOAT));
    DNN(cudnnSetConvolutionGroupCount(cd, (int)group));
    if (!algo_find(&key, &ce)) {
        if (g->capturing) {
            st = lib_fail(c, err, "cuDNN", "a new input shape while capturing a CUDA graph");
            goto done;
        }
        /* FP16 data: tensor cores (DEFAULT_MATH would search without them) */
        DNN(cudnnSetConvolutionMathType(cd, g->precision == KILN_ONNX_FP32 ? CUDNN_FMA_MATH
                                            : half                         ? CUDNN_TENSOR_OP_MATH
                                                                           : CUDNN_DEFAULT_MATH));
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        int got = 0;
        DNN(cudnnFindConvolutionForwardAlgorithm(g->dnn, xd, wd, cd, yd,
                                                 CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
        int pick = -1;
        for (int i = 0; i < got && pick < 0; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= CONV_WS_MAX &&
                (g->precision != KILN_ONNX_FP32 || perf[i].mathType != CUDNN_TENSOR_OP_MATH))
                pick = i;
        if (pick < 0) {
            st = lib_fail(c, err, "cuDNN", "no convolution algorithm fits");
            goto done;
        }
        ce.used = true;
        ce.key = key;
        ce.u.conv.algo = perf[pick].algo;
        ce.u.conv.math = perf[pick].mathType;
        ce.u.conv.ws = perf[pick].memory;
        algo_put(&ce, false);
    }
    /* the workspace: the plan's, in the arena (planned runs); else the context's own, grown */
    planned = c->ws && c->ws_bytes >= ce.u.conv.ws;
    ws = planned ? c->ws : g->ws;
    if (!planned && ce.u.conv.ws > g->ws_bytes) {
        if (g->capturing) {
            st = lib_fail(c, err, "cuDNN", "a larger workspace while capturing a CUDA graph");
            goto done;
        }
        if ((st = ws_fit(g, ce.u.conv.ws, err)) != KILN_OK) {
            kiln_tensor_fini(&c->out[0]);
            goto done;
        }
        ws = g->ws;
    }
    if (c->ws_need)
        *c->ws_need = ce.u.conv.ws;
    g->ws_captured = g->ws_captured || (ws && ws == g->ws && g->capturing);
    DNN(cudnnSetConvolutionMathType(cd, ce.u.conv.math));
    DNN(cudnnConvolutionForward(g->dnn, &one, xd, x->data, wd, wt->data, cd, ce.u.conv.algo, ws,
                                ce.u.conv.ws, &zero, yd, c->out[0].data));
    if (has_b || c->act.kind != KILN_ONNX_ACT_NONE) {
        size_t n = numel(&c->out[0]);
        LAUNCH(half, bias_act_k, blocks_for(n), g->stream, c->out[0].data,
               has_b ? c->in[2]->data : NULL, (size_t)(w.out[0] * w.out[1]), (size_t)M, n,
               act_of(&c->act));
        if ((st = launched(c, err)) != KILN_OK)
            kiln_tensor_fini(&c->out[0]);
    }
done:
    if (cd)
        cudnnDestroyConvolutionDescriptor(cd);
    if (wd)
        cudnnDestroyFilterDescriptor(wd);
    if (yd)
        cudnnDestroyTensorDescriptor(yd);
    if (xd)
        cudnnDestroyTensorDescriptor(xd);
    return st;
}

/* ---------------------------------------------------------------- MatMul, Gemm (cuBLAS) */

/* Row-major C[M,N] = alpha A[M,K] B[K,N] + beta C, batched with element strides (0: shared),
 * as cuBLAS's column-major C^T = B^T A^T. */
static kiln_status gemm(const kiln_onnx_call *c, bool half, bool ta, bool tb, int64_t M, int64_t N,
                        int64_t K, float alpha, const void *Av, int64_t lda, int64_t sa,
                        const void *Bv, int64_t ldb, int64_t sb, float beta, void *Cv, int64_t sc,
                        int64_t batch, kiln_err *err)
{
    cublasStatus_t s;
    const float *A = (const float *)Av, *B = (const float *)Bv;
    float *C = (float *)Cv;
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (half) /* FP16 operands, FP32 accumulation */
        s = cublasGemmStridedBatchedEx(c->gpu->blas, ob, oa, (int)N, (int)M, (int)K, &alpha, Bv,
                                       CUDA_R_16F, (int)ldb, sb, Av, CUDA_R_16F, (int)lda, sa,
                                       &beta, Cv, CUDA_R_16F, (int)N, sc, (int)batch,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else if (batch == 1)
        s = cublasSgemm(c->gpu->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                        ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B, (int)ldb,
                        A, (int)lda, &beta, C, (int)N);
    else
        s = cublasSgemmStridedBatched(c->gpu->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K,
                                      &alpha, B, (int)ldb, sb, A, (int)lda, sa, &beta, C, (int)N,
                                      sc, (int)batch);
    if (s != CUBLAS_STATUS_SUCCESS)
        return lib_fail_oom(c, err, s == CUBLAS_STATUS_ALLOC_FAILED,
                            half ? "cuBLAS GEMM (FP16)" : "cuBLAS sgemm", cublasGetStatusString(s));
    return KILN_OK;
}

/* The largest power of two (up to 16) that divides p's address: cuBLASLt's algorithms depend on
 * the operands' alignment up to 16 bytes. Capped there so that an operand at a 64-byte arena
 * offset (a planned run, the one a CUDA graph captures) and the same operand in its own
 * 256-byte aligned buffer (the unplanned first run) make the same cache key. */
static int64_t align_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int64_t al = 16;
    while (al > 1 && a % (uintptr_t)al)
        al /= 2;
    return al;
}

/* The cuBLASLt descriptors of one GEMM with an epilogue. */
typedef struct lt_desc {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ly;
} lt_desc;

static void lt_desc_free(lt_desc *d)
{
    if (d->ly)
        cublasLtMatrixLayoutDestroy(d->ly);
    if (d->lb)
        cublasLtMatrixLayoutDestroy(d->lb);
    if (d->la)
        cublasLtMatrixLayoutDestroy(d->la);
    if (d->op)
        cublasLtMatmulDescDestroy(d->op);
}

/* Describes column-major Y^T (N x M) = B'^T A'^T with the epilogue: cuBLASLt's A is our B'
 * (N x K), its B our A' (K x M). */
static cublasStatus_t lt_describe(lt_desc *d, cublasComputeType_t ct, cudaDataType_t dt, bool ta,
                                  bool tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                                  int64_t ldb, cublasLtEpilogue_t epi, const void *bias)
{
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    uint64_t m = (uint64_t)M, n = (uint64_t)N, k = (uint64_t)K;
    cublasStatus_t ls = cublasLtMatmulDescCreate(&d->op, ct, CUDA_R_32F);
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa));
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb));
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls =
            cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi));
    if (ls == CUBLAS_STATUS_SUCCESS && bias)
        ls = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                            sizeof(bias));
    if (ls == CUBLAS_STATUS_SUCCESS && bias)
        ls = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt,
                                            sizeof(dt));
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls = cublasLtMatrixLayoutCreate(&d->la, dt, tb ? k : n, tb ? n : k, ldb);
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls = cublasLtMatrixLayoutCreate(&d->lb, dt, ta ? m : k, ta ? k : m, lda);
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls = cublasLtMatrixLayoutCreate(&d->ly, dt, n, m, N);
    return ls;
}

/* cuBLASLt's first algorithm for d within the cuBLAS workspace and the operands' alignments,
 * into ce (ce->u.lt.none when it has none). */
static void lt_find(kiln_onnx_gpu *g, const lt_desc *d, const void *A, const void *B, const void *Y,
                    algo_entry *ce)
{
    ce->u.lt.none = true;
    cublasLtMatmulPreference_t pref = NULL;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
        return;
    size_t wsmax = KILN_ONNX_BLAS_WS_BYTES;
    const cublasLtMatmulPreferenceAttributes_t attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t al[4] = {(uint32_t)align_of(B), (uint32_t)align_of(A), (uint32_t)align_of(Y),
                            (uint32_t)align_of(Y)};
    cublasStatus_t ls = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsmax, sizeof(wsmax));
    for (int i = 0; i < 4 && ls == CUBLAS_STATUS_SUCCESS; i++)
        ls = cublasLtMatmulPreferenceSetAttribute(pref, attr[i], &al[i], sizeof(al[i]));
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    if (ls == CUBLAS_STATUS_SUCCESS)
        ls = cublasLtMatmulAlgoGetHeuristic(g->lt, d->op, d->la, d->lb, d->ly, d->ly, pref, 1, &res,
                                            &got);
    if (ls == CUBLAS_STATUS_SUCCESS && got >= 1 && res.state == CUBLAS_STATUS_SUCCESS) {
        ce->u.lt.none = false;
        ce->u.lt.algo = res.algo;
        ce->u.lt.ws = res.workspaceSize;
    }
    cublasLtMatmulPreferenceDestroy(pref);
}

/*
 * Row-major Y[M,N] = act(alpha A'[M,K] B'[K,N] + bias[N]) (A' = A or its transpose, likewise B')
 * through cuBLASLt, the bias (may be NULL) and a ReLU in the GEMM's epilogue: one kernel where
 * cuBLAS and Kiln's bias pass are two, and no second pass over Y. As column-major, that is
 * Y^T (N x M) = B'^T A'^T, whose rows are Y's columns, one bias value each. The algorithm comes
 * from cuBLASLt's heuristic, once per problem (the algorithm cache). KILN_UNIMPLEMENTED when it
 * does not apply (another activation, nothing to fuse, sizes past int32, no algorithm): the
 * caller then runs cuBLAS and the bias pass. A problem first met while capturing a CUDA graph
 * declines too (the capture then records the cuBLAS path), and so does every GEMM of a context
 * opened without cublaslt (the default).
 */
static kiln_status lt_gemm(const kiln_onnx_call *c, bool half, bool ta, bool tb, int64_t M,
                           int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
                           const void *B, int64_t ldb, const void *bias, void *Y, kiln_err *err)
{
    kiln_onnx_act_kind act = c->act.kind;
    if (!c->gpu->lt || (act != KILN_ONNX_ACT_NONE && act != KILN_ONNX_ACT_RELU) ||
        (!bias && act == KILN_ONNX_ACT_NONE) || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX ||
        !M || !N || !K)
        return KILN_UNIMPLEMENTED;
    kiln_onnx_gpu *g = c->gpu;
    cublasLtEpilogue_t epi = !bias                       ? CUBLASLT_EPILOGUE_RELU
                             : act == KILN_ONNX_ACT_RELU ? CUBLASLT_EPILOGUE_RELU_BIAS
                                                         : CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t dt = half ? CUDA_R_16F : CUDA_R_32F;
    cublasComputeType_t ct =
        g->precision == KILN_ONNX_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    algo_key key;
    memset(&key, 0, sizeof(key));
    {
        int64_t v[15] = {g->device,
                         g->precision,
                         half,
                         ta,
                         tb,
                         M,
                         N,
                         K,
                         lda,
                         ldb,
                         (int64_t)epi,
                         align_of(A),
                         align_of(B),
                         align_of(Y),
                         align_of(bias)};
        memcpy(key.v, v, sizeof(v));
        key.v[19] = KEY_LT;
    }
    algo_entry ce;
    bool known = algo_find(&key, &ce);
    if ((known && ce.u.lt.none) || (!known && g->capturing))
        return KILN_UNIMPLEMENTED;
    lt_desc d = {NULL, NULL, NULL, NULL};
    cublasStatus_t ls = lt_describe(&d, ct, dt, ta, tb, M, N, K, lda, ldb, epi, bias);
    if (ls == CUBLAS_STATUS_SUCCESS && !known) {
        memset(&ce, 0, sizeof(ce));
        ce.used = true;
        ce.key = key;
        lt_find(g, &d, A, B, Y, &ce);
        algo_put(&ce, false);
    }
    kiln_status st = KILN_UNIMPLEMENTED;
    const float zero = 0.f;
    if (ls == CUBLAS_STATUS_SUCCESS && !ce.u.lt.none) {
        ls = cublasLtMatmul(g->lt, d.op, &alpha, B, d.la, A, d.lb, &zero, Y, d.ly, Y, d.ly,
                            &ce.u.lt.algo, g->blas_ws, ce.u.lt.ws, g->stream);
        st = ls == CUBLAS_STATUS_SUCCESS ? KILN_OK : st;
    }
    bool refused = ls == CUBLAS_STATUS_NOT_SUPPORTED || ls == CUBLAS_STATUS_INVALID_VALUE ||
                   ls == CUBLAS_STATUS_ARCH_MISMATCH;
    if (refused && !g->capturing) {
        /* refused before it launched: this problem takes the cuBLAS path from now on, once said
         * in the log */
        memset(&ce, 0, sizeof(ce));
        ce.used = true;
        ce.key = key;
        ce.u.lt.none = true;
        algo_put(&ce, true);
        kiln_log_ctx ctx = {0};
        KILN_LOGW(&ctx, "node '%s' (%s): cuBLASLt: %s; this GEMM runs through cuBLAS instead",
                  c->node->name, c->node->op, cublasGetStatusString(ls));
    } else if (ls != CUBLAS_STATUS_SUCCESS && !refused) {
        /* a failure in the launch (or out of memory): the batch's error; a sticky CUDA error
         * behind it is seen by the run's wait on the stream */
        st = kiln_err_set(
            err, ls == CUBLAS_STATUS_ALLOC_FAILED ? KILN_RESOURCE_EXHAUSTED : KILN_INTERNAL,
            "node '%s' (%s): cuBLASLt: %s", c->node->name, c->node->op, cublasGetStatusString(ls));
    }
    if (st == KILN_OK)
        g->lt_runs++;
    lt_desc_free(&d);
    return st;
}

static kiln_status g_matmul(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_matmul mm;
    kiln_status st = kiln__onnx_matmul_prep(c, &mm, err);
    if (st != KILN_OK)
        return st;
    int64_t M = mm.M, N = mm.N, K = mm.K, nbatch = mm.nbatch, na = mm.na, nb = mm.nb;
    /* one strided batch: each side is either all the batches or one matrix */
    if ((na != nbatch && na != 1) || (nb != nbatch && nb != 1) || nbatch > INT32_MAX ||
        !agree(c, 3))
        return KILN_UNIMPLEMENTED;
    if ((st = kiln__onnx_alloc(c, c->in[0]->dtype, &mm.out, &c->out[0], err)) != KILN_OK)
        return st;
    bool half = is_half(c->in[0]);
    void *C = c->out[0].data;
    const void *bias = mm.bias ? mm.bias->data : NULL;
    size_t n = numel(&c->out[0]);
    if (!n)
        return KILN_OK;
    bool fused = false; /* bias and activation applied by cuBLASLt's epilogue */
    if (!K) {
        cudaError_t e = cudaMemsetAsync(C, 0, c->out[0].byte_size, c->gpu->stream);
        if (e != cudaSuccess)
            return lib_fail(c, err, "cudaMemsetAsync", cudaGetErrorString(e));
    } else if (nb == 1 && (uint64_t)M * (uint64_t)nbatch <= INT32_MAX) {
        /* B is one matrix: A's batches stack into one [nbatch*M, K] operand */
        st = lt_gemm(c, half, false, false, M * nbatch, N, K, 1.f, c->in[0]->data, K,
                     c->in[1]->data, N, bias, C, err);
        fused = st == KILN_OK;
        if (st == KILN_UNIMPLEMENTED)
            st = gemm(c, half, false, false, M * nbatch, N, K, 1.f, c->in[0]->data, K, 0,
                      c->in[1]->data, N, 0, 0.f, C, 0, 1, err);
        else if (st != KILN_OK)
            kiln_tensor_fini(&c->out[0]);
    } else {
        st = gemm(c, half, false, false, M, N, K, 1.f, c->in[0]->data, K, na == 1 ? 0 : M * K,
                  c->in[1]->data, N, nb == 1 ? 0 : K * N, 0.f, C, M * N, nbatch, err);
    }
    if (st == KILN_OK && !fused && (bias || c->act.kind != KILN_ONNX_ACT_NONE)) {
        /* the bias per column: rows of length 1, period N */
        LAUNCH(half, bias_act_k, blocks_for(n), c->gpu->stream, C, bias, 1, bias ? (size_t)N : 1, n,
               act_of(&c->act));
        if ((st = launched(c, err)) != KILN_OK)
            kiln_tensor_fini(&c->out[0]);
    }
    return st;
}

/* y = beta * C broadcast to [M,N] (sc: C's strides in [M,N]). */
template <typename T>
__global__ void fill_bcast_k(void *yv, const void *cv, int64_t N, int64_t sc0, int64_t sc1,
                             float beta, size_t n)
{
    T *__restrict__ y = (T *)yv;
    const T *__restrict__ cm = (const T *)cv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int64_t r = (int64_t)i / N, k = (int64_t)i % N;
        stv(&y[i], beta * ldv(cm[r * sc0 + k * sc1]));
    }
}

static kiln_status g_gemm(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_gemm gm;
    kiln_status st = kiln__onnx_gemm_prep(c, &gm, err);
    if (st != KILN_OK)
        return st;
    if (!agree(c, 3))
        return KILN_UNIMPLEMENTED;
    if ((st = kiln__onnx_alloc(c, c->in[0]->dtype, &gm.out, &c->out[0], err)) != KILN_OK)
        return st;
    bool half = is_half(c->in[0]);
    bool ta = gm.ta, tb = gm.tb, has_c = gm.has_c;
    float alpha = gm.alpha, beta = gm.beta;
    int64_t M = gm.M, N = gm.N, K = gm.K;
    const int64_t *sc = gm.sc;
    void *Y = c->out[0].data;
    size_t n = (size_t)(M * N);
    if (!n)
        return KILN_OK;
    const void *Cm = has_c && beta != 0.f ? c->in[2]->data : NULL;
    /* a bias row (C is [N] or [1,N], beta 1) is added after the GEMM with the activation */
    bool bias_row = Cm && beta == 1.f && sc[0] == 0 && sc[1] == 1;
    if (Cm && !bias_row) {
        LAUNCH(half, fill_bcast_k, blocks_for(n), c->gpu->stream, Y, Cm, N, sc[0], sc[1], beta, n);
        if ((st = launched(c, err)) != KILN_OK) {
            kiln_tensor_fini(&c->out[0]);
            return st;
        }
    } else if (!K) {
        cudaMemsetAsync(Y, 0, c->out[0].byte_size, c->gpu->stream);
    }
    bool fused = false; /* bias and activation applied by cuBLASLt's epilogue */
    if (K && (!Cm || bias_row)) {
        st = lt_gemm(c, half, ta, tb, M, N, K, alpha, c->in[0]->data, gm.lda, c->in[1]->data,
                     gm.ldb, Cm, Y, err);
        fused = st == KILN_OK;
        if (st != KILN_OK && st != KILN_UNIMPLEMENTED) {
            kiln_tensor_fini(&c->out[0]);
            return st;
        }
        st = KILN_OK;
    }
    if (K && !fused)
        st = gemm(c, half, ta, tb, M, N, K, alpha, c->in[0]->data, gm.lda, 0, c->in[1]->data,
                  gm.ldb, 0, Cm && !bias_row ? 1.f : 0.f, Y, 0, 1, err);
    if (st == KILN_OK && !fused && (bias_row || c->act.kind != KILN_ONNX_ACT_NONE)) {
        /* bias over the last dim: one bias value per column: rows of length 1, period N */
        LAUNCH(half, bias_act_k, blocks_for(n), c->gpu->stream, Y, bias_row ? Cm : NULL, 1,
               (size_t)N, n, act_of(&c->act));
        if ((st = launched(c, err)) != KILN_OK)
            kiln_tensor_fini(&c->out[0]);
    }
    return st;
}

/* ---------------------------------------------------------------- pools */

typedef struct win_p {
    int64_t k[2], s[2], d[2], pad[4], in[2], out[2];
} win_p;

/* One thread per output, as the CPU kernel (count_include_pad counts pads, not the ceil_mode
 * overhang). */
template <typename T>
__global__ void pool_k(bool max, bool include_pad, win_p w, const void *xv, void *yv, size_t n)
{
    const T *__restrict__ x = (const T *)xv;
    T *__restrict__ y = (T *)yv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t ow = (size_t)w.out[1], oh = (size_t)w.out[0];
        int64_t ox = (int64_t)(i % ow), oy = (int64_t)(i / ow % oh);
        size_t p = i / ow / oh;
        const T *xp = x + p * (size_t)(w.in[0] * w.in[1]);
        float acc = max ? -INFINITY : 0.f;
        int64_t count = 0, padded = 0;
        for (int64_t ky = 0; ky < w.k[0]; ky++)
            for (int64_t kx = 0; kx < w.k[1]; kx++) {
                int64_t iy = oy * w.s[0] - w.pad[0] + ky * w.d[0];
                int64_t ix = ox * w.s[1] - w.pad[1] + kx * w.d[1];
                if (iy < w.in[0] + w.pad[2] && ix < w.in[1] + w.pad[3])
                    padded++;
                if (iy < 0 || iy >= w.in[0] || ix < 0 || ix >= w.in[1])
                    continue;
                float v = ldv(xp[iy * w.in[1] + ix]);
                acc = max ? (v > acc ? v : acc) : acc + v;
                count++;
            }
        int64_t div = include_pad ? padded : count;
        stv(&y[i], max ? acc : (div ? acc / (float)div : 0.f));
    }
}

static kiln_status pool(const kiln_onnx_call *c, bool max, kiln_err *err)
{
    kiln_onnx_pool pl;
    kiln_status st = kiln__onnx_pool_prep(c, max, &pl, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    const kiln_onnx_window w = pl.win;
    bool include_pad = pl.include_pad;
    if ((st = kiln__onnx_alloc(c, x->dtype, &pl.out, &c->out[0], err)) != KILN_OK)
        return st;
    win_p p;
    memcpy(&p, &w, sizeof(p));
    size_t n = numel(&c->out[0]);
    if (n)
        LAUNCH(is_half(x), pool_k, blocks_for(n), c->gpu->stream, max, include_pad, p, x->data,
               c->out[0].data, n);
    return launched(c, err);
}

static kiln_status g_maxpool(const kiln_onnx_call *c, kiln_err *err)
{
    return pool(c, true, err);
}
static kiln_status g_avgpool(const kiln_onnx_call *c, kiln_err *err)
{
    return pool(c, false, err);
}

/* ---------------------------------------------------------------- row reductions */

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The sum of p[0..len), by the 32 lanes of a warp (every lane gets it). */
template <typename T>
__device__ __forceinline__ float warp_row_sum(const T *p, size_t len, int lane)
{
    float s = 0.f;
    for (size_t i = lane; i < len; i += 32)
        s += ldv(p[i]);
    return warp_sum(s);
}

/* One warp per row of len (rows of a [rows, len] matrix): y[row] = sum * scale. */
template <typename T>
__global__ void row_sum_k(const void *xv, void *yv, size_t rows, size_t len, float scale)
{
    const T *__restrict__ x = (const T *)xv;
    T *__restrict__ y = (T *)yv;
    int lane = threadIdx.x % 32;
    for (size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32; row < rows;
         row += (size_t)gridDim.x * blockDim.x / 32) {
        float s = warp_row_sum(x + row * len, len, lane);
        if (lane == 0)
            stv(&y[row], s * scale);
    }
}

static kiln_status rows_sum(const kiln_onnx_call *c, const kiln_tensor *x, void *y, size_t rows,
                            size_t len, float scale, kiln_err *err)
{
    if (rows)
        LAUNCH(is_half(x), row_sum_k, blocks_for(rows * 32), c->gpu->stream, x->data, y, rows, len,
               scale);
    return launched(c, err);
}

static kiln_status g_global_avgpool(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_shape os;
    size_t rows, inner;
    kiln_status st = kiln__onnx_global_pool_prep(c, &os, &rows, &inner, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[0], err)) != KILN_OK)
        return st;
    if (!inner)
        return kiln__onnx_gpu_zero(c->gpu, c->out[0].data, c->out[0].byte_size, err);
    return rows_sum(c, x, c->out[0].data, rows, inner, 1.f / (float)inner, err);
}

/* ReduceMean / ReduceSum over a trailing block of axes (the others answer UNIMPLEMENTED). */
static kiln_status reduce(const kiln_onnx_call *c, bool mean, kiln_err *err)
{
    kiln_onnx_reduce rd;
    kiln_status st = kiln__onnx_reduce_prep(c, &rd, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    int r = x->shape.rank, first = r;
    if (rd.noop) {
        kiln_tensor_share(x, &c->out[0]);
        return KILN_OK;
    }
    while (first > 0 && rd.red[first - 1])
        first--;
    for (int d = 0; d < first; d++)
        if (rd.red[d])
            return KILN_UNIMPLEMENTED; /* not a trailing block */
    size_t len = 1, rows = 1;
    for (int d = 0; d < r; d++)
        *(d >= first ? &len : &rows) *= (size_t)x->shape.dims[d];
    if ((st = kiln__onnx_alloc(c, x->dtype, &rd.out, &c->out[0], err)) != KILN_OK)
        return st;
    if (!len)
        return kiln__onnx_gpu_zero(c->gpu, c->out[0].data, c->out[0].byte_size, err);
    return rows_sum(c, x, c->out[0].data, rows, len, mean ? 1.f / (float)len : 1.f, err);
}

static kiln_status g_reduce_mean(const kiln_onnx_call *c, kiln_err *err)
{
    return reduce(c, true, err);
}
static kiln_status g_reduce_sum(const kiln_onnx_call *c, kiln_err *err)
{
    return reduce(c, false, err);
}

/* Softmax / LogSoftmax along an axis: one warp per (outer, inner) row of len, stride inner. */
template <typename T>
__global__ void softmax_k(const void *xv, void *yv, size_t outer, size_t len, size_t inner, bool lg)
{
    const T *__restrict__ x = (const T *)xv;
    T *__restrict__ y = (T *)yv;
    int lane = threadIdx.x % 32;
    for (size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32; row < outer * inner;
         row += (size_t)gridDim.x * blockDim.x / 32) {
        size_t base = row / inner * len * inner + row % inner;
        const T *p = x + base;
        T *q = y + base;
        float mx = -INFINITY;
        for (size_t k = lane; k < len; k += 32)
            mx = fmaxf(mx, ldv(p[k * inner]));
        mx = warp_max(mx);
        float s = 0.f;
        for (size_t k = lane; k < len; k += 32)
            s += expf(ldv(p[k * inner]) - mx);
        s = warp_sum(s);
        float ls = logf(s);
        for (size_t k = lane; k < len; k += 32) {
            float v = ldv(p[k * inner]);
            stv(&q[k * inner], lg ? v - mx - ls : expf(v - mx) / s);
        }
    }
}

static kiln_status softmax(const kiln_onnx_call *c, bool lg, kiln_err *err)
{
    size_t outer, len, inner;
    kiln_status st = kiln__onnx_softmax_prep(c, &outer, &len, &inner, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if ((st = kiln__onnx_alloc(c, x->dtype, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    size_t rows = outer * inner;
    if (rows && len)
        LAUNCH(is_half(x), softmax_k, blocks_for(rows * 32), c->gpu->stream, x->data,
               c->out[0].data, outer, len, inner, lg);
    return launched(c, err);
}

static kiln_status g_softmax(const kiln_onnx_call *c, kiln_err *err)
{
    return softmax(c, false, err);
}
static kiln_status g_log_softmax(const kiln_onnx_call *c, kiln_err *err)
{
    return softmax(c, true, err);
}

/* LayerNormalization: one warp per row of len (two passes: mean, then variance). */
template <typename T>
__global__ void layer_norm_k(const void *xv, const void *scv, const void *biv, void *yv,
                             size_t rows, size_t len, float eps)
{
    const T *__restrict__ x = (const T *)xv, *__restrict__ sc = (const T *)scv;
    const T *__restrict__ bi = (const T *)biv;
    T *__restrict__ y = (T *)yv;
    int lane = threadIdx.x % 32;
    for (size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32; row < rows;
         row += (size_t)gridDim.x * blockDim.x / 32) {
        const T *p = x + row * len;
        float mu = warp_row_sum(p, len, lane) / (float)len;
        float v = 0.f;
        for (size_t i = lane; i < len; i += 32)
            v += (ldv(p[i]) - mu) * (ldv(p[i]) - mu);
        float inv = rsqrtf(warp_sum(v) / (float)len + eps);
        for (size_t i = lane; i < len; i += 32)
            stv(&y[row * len + i], (ldv(p[i]) - mu) * inv * ldv(sc[i]) + (bi ? ldv(bi[i]) : 0.f));
    }
}

static kiln_status g_layer_norm(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_norm nm;
    kiln_status st = kiln__onnx_layer_norm_prep(c, &nm, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if (!agree(c, 3))
        return KILN_UNIMPLEMENTED;
    if ((st = kiln__onnx_alloc(c, x->dtype, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    if (nm.rows)
        LAUNCH(is_half(x), layer_norm_k, blocks_for(nm.rows * 32), c->gpu->stream, x->data,
               nm.scale->data, nm.bias ? nm.bias->data : NULL, c->out[0].data, nm.rows, nm.inner,
               nm.eps);
    return launched(c, err);
}

/* BatchNormalization (inference; when load could not fold it into a Conv). */
template <typename T>
__global__ void batchnorm_k(const void *xv, const void *scv, const void *biv, const void *muv,
                            const void *varv, void *yv, size_t inner, size_t C, size_t n, float eps)
{
    const T *__restrict__ x = (const T *)xv, *__restrict__ sc = (const T *)scv;
    const T *__restrict__ bi = (const T *)biv, *__restrict__ mu = (const T *)muv;
    const T *__restrict__ var = (const T *)varv;
    T *__restrict__ y = (T *)yv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t ch = i / inner % C;
        float a = ldv(sc[ch]) / sqrtf(ldv(var[ch]) + eps);
        stv(&y[i], ldv(x[i]) * a + (ldv(bi[ch]) - ldv(mu[ch]) * a));
    }
}

static kiln_status g_batchnorm(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_norm nm;
    kiln_status st = kiln__onnx_batchnorm_prep(c, &nm, err);
    if (st != KILN_OK)
        return st;
    const kiln_tensor *x = c->in[0];
    if (!agree(c, 5))
        return KILN_UNIMPLEMENTED;
    if ((st = kiln__onnx_alloc(c, x->dtype, &x->shape, &c->out[0], err)) != KILN_OK)
        return st;
    size_t n = numel(x);
    if (n)
        LAUNCH(is_half(x), batchnorm_k, blocks_for(n), c->gpu->stream, x->data, c->in[1]->data,
               c->in[2]->data, c->in[3]->data, c->in[4]->data, c->out[0].data, nm.inner,
               nm.channels, n, nm.eps);
    return launched(c, err);
}

/* ---------------------------------------------------------------- data movement */

/* y[i] = x[sum_d idx_d * st[d]] over out dims (a permuted or strided read), es-byte elements. */
typedef struct perm_p {
    int rank;
    int64_t dims[KILN_MAX_RANK], st[KILN_MAX_RANK];
} perm_p;

template <typename T>
__global__ void gather_k(perm_p p, const T *__restrict__ x, T *__restrict__ y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i, off = 0;
        for (int d = p.rank - 1; d >= 0; d--) {
            size_t q = r / (size_t)p.dims[d];
            off += (r - q * (size_t)p.dims[d]) * (size_t)p.st[d];
            r = q;
        }
        y[i] = x[off];
    }
}

/* out[0][i] = src[sum_d idx_d * p.st[d]] over p.dims (es-byte elements; src may start inside
 * a tensor, and strides may be negative or 0). */
static kiln_status strided_copy(const kiln_onnx_call *c, const perm_p *p, const void *src,
                                size_t es, kiln_err *err)
{
    size_t n = numel(&c->out[0]);
    if (!n)
        return KILN_OK;
    void *dst = c->out[0].data;
    unsigned nb = blocks_for(n);
    cudaStream_t s = c->gpu->stream;
    if (es == 1)
        gather_k<uint8_t><<<nb, THREADS, 0, s>>>(*p, (const uint8_t *)src, (uint8_t *)dst, n);
    else if (es == 2)
        gather_k<uint16_t><<<nb, THREADS, 0, s>>>(*p, (const uint16_t *)src, (uint16_t *)dst, n);
    else if (es == 4)
        gather_k<uint32_t><<<nb, THREADS, 0, s>>>(*p, (const uint32_t *)src, (uint32_t *)dst, n);
    else
        gather_k<uint64_t><<<nb, THREADS, 0, s>>>(*p, (const uint64_t *)src, (uint64_t *)dst, n);
    kiln_status st = launched(c, err);
    if (st != KILN_OK)
        kiln_tensor_fini(&c->out[0]);
    return st;
}

/* Makes out[0] (input 0's dtype, shape os) and fills it with the strided read p of input 0
 * from its element `base` (p.st set by the caller; p.dims set here). */
static kiln_status strided_out(const kiln_onnx_call *c, const kiln_shape *os, perm_p *p,
                               int64_t base, kiln_err *err)
{
    const kiln_tensor *x = c->in[0];
    size_t es = kiln_dtype_size(x->dtype);
    if (es != 1 && es != 2 && es != 4 && es != 8)
        return KILN_UNIMPLEMENTED;
    p->rank = os->rank;
    memcpy(p->dims, os->dims, sizeof(p->dims));
    kiln_status st = kiln__onnx_alloc(c, x->dtype, os, &c->out[0], err);
    if (st != KILN_OK || !numel(&c->out[0]))
        return st;
    return strided_copy(c, p, (const char *)x->data + base * (int64_t)es, es, err);
}

/* Slice: a strided read starting at the first element sliced. */
static kiln_status g_slice(const kiln_onnx_call *c, kiln_err *err)
{
    int64_t start[KILN_MAX_RANK], step[KILN_MAX_RANK];
    kiln_shape os;
    kiln_status st = kiln__onnx_slice_prep(c, &os, start, step, err);
    if (st != KILN_OK)
        return st;
    perm_p p;
    int64_t stride = 1, base = 0;
    for (int d = os.rank - 1; d >= 0; d--) {
        p.st[d] = step[d] * stride;
        base += start[d] * stride;
        stride *= c->in[0]->shape.dims[d];
    }
    return strided_out(c, &os, &p, base, err);
}

/* Transpose (permuted strides) and Expand (stride 0 along broadcast dims): one strided read. */
static kiln_status g_transpose(const kiln_onnx_call *c, kiln_err *err)
{
    perm_p p;
    kiln_shape os;
    kiln_status st = kiln__onnx_transpose_prep(c, &os, p.st, err);
    return st == KILN_OK ? strided_out(c, &os, &p, 0, err) : st;
}

static kiln_status g_expand(const kiln_onnx_call *c, kiln_err *err)
{
    perm_p p;
    kiln_shape os;
    kiln_status st = kiln__onnx_expand_prep(c, &os, p.st, err);
    return st == KILN_OK ? strided_out(c, &os, &p, 0, err) : st;
}

/* Copies rows of width bytes from src (pitch sp) to dst (pitch dp), in stream order. */
static kiln_status copy2d(const kiln_onnx_call *c, void *dst, size_t dp, const void *src, size_t sp,
                          size_t width, size_t rows, kiln_err *err)
{
    if (!width || !rows)
        return KILN_OK;
    cudaError_t e =
        cudaMemcpy2DAsync(dst, dp, src, sp, width, rows, cudaMemcpyDeviceToDevice, c->gpu->stream);
    if (e != cudaSuccess) {
        kiln_tensor_fini(&c->out[0]);
        return lib_fail(c, err, "cudaMemcpy2DAsync", cudaGetErrorString(e));
    }
    return KILN_OK;
}

static kiln_status g_concat(const kiln_onnx_call *c, kiln_err *err)
{
    kiln_onnx_concat cc;
    kiln_status st = kiln__onnx_concat_prep(c, &cc, err);
    if (st != KILN_OK)
        return st;
    if ((st = kiln__onnx_alloc(c, c->in[0]->dtype, &cc.out, &c->out[0], err)) != KILN_OK)
        return st;
    size_t row = (size_t)cc.out.dims[cc.axis] * cc.inner, at = 0;
    for (size_t i = 0; st == KILN_OK && i < c->n_in; i++) {
        size_t chunk = (size_t)c->in[i]->shape.dims[cc.axis] * cc.inner;
        st = copy2d(c, (char *)c->out[0].data + at, row, c->in[i]->data, chunk, chunk, cc.outer,
                    err);
        at += chunk;
    }
    return st;
}

/* Gather along `axis` with indices read on the host (input 1): one strided copy per index. */
static kiln_status g_gather(const kiln_onnx_call *c, kiln_err *err)
{
    if (c->n_in < 2 || !c->in[0] || !c->in[1])
        return kiln__onnx_bad_node(c, err, "inputs 0 and 1 are required");
    const kiln_tensor *x = c->in[0], *ix = c->in[1];
    if (ix->dtype != KILN_DTYPE_INT64 && ix->dtype != KILN_DTYPE_INT32)
        return kiln__onnx_bad_node(c, err, "indices must be INT64 or INT32");
    int r = x->shape.rank;
    int64_t axis = kiln__onnx_attr_int(c, "axis", 0);
    if (r == 0 || axis < -r || axis >= r)
        return kiln__onnx_bad_node(c, err, "axis %lld is outside rank %d", (long long)axis, r);
    if (axis < 0)
        axis += r;
    size_t es = kiln_dtype_size(x->dtype), ni = numel(ix);
    if (!es || r - 1 + ix->shape.rank > KILN_MAX_RANK)
        return KILN_UNIMPLEMENTED;
    if (ni > 256)
        return KILN_UNIMPLEMENTED; /* one copy per index: many indices go to the CPU */
    kiln_shape os = {.rank = 0};
    for (int d = 0; d < axis; d++)
        os.dims[os.rank++] = x->shape.dims[d];
    for (int d = 0; d < ix->shape.rank; d++)
        os.dims[os.rank++] = ix->shape.dims[d];
    for (int d = (int)axis + 1; d < r; d++)
        os.dims[os.rank++] = x->shape.dims[d];
    int64_t len = x->shape.dims[axis];
    for (size_t i = 0; i < ni; i++) {
        int64_t v = ix->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)ix->data)[i]
                                                  : ((const int32_t *)ix->data)[i];
        if (v < -len || v >= len)
            return kiln__onnx_bad_node(c, err, "index %lld is outside [%lld, %lld)", (long long)v,
                                       (long long)-len, (long long)len);
    }
    kiln_status st = kiln__onnx_alloc(c, x->dtype, &os, &c->out[0], err);
    if (st != KILN_OK)
        return st;
    size_t outer = 1, inner = es;
    for (int d = 0; d < axis; d++)
        outer *= (size_t)x->shape.dims[d];
    for (int d = (int)axis + 1; d < r; d++)
        inner *= (size_t)x->shape.dims[d];
    for (size_t i = 0; st == KILN_OK && i < ni; i++) {
        int64_t v = ix->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)ix->data)[i]
                                                  : ((const int32_t *)ix->data)[i];
        v = v < 0 ? v + len : v;
        st = copy2d(c, (char *)c->out[0].data + i * inner, ni * inner,
                    (const char *)x->data + (size_t)v * inner, (size_t)len * inner, inner, outer,
                    err);
    }
    return st;
}

/* ---------------------------------------------------------------- the table */

#define HOST(k) (1u << (k))

extern "C" const kiln_onnx_kernel kiln__onnx_cuda[] = {
    {"Relu", KILN_DEVICE_CUDA, g_relu, false, 0},
    {"LeakyRelu", KILN_DEVICE_CUDA, g_leaky, false, 0},
    {"Sigmoid", KILN_DEVICE_CUDA, g_sigmoid, false, 0},
    {"Tanh", KILN_DEVICE_CUDA, g_tanh, false, 0},
    {"Exp", KILN_DEVICE_CUDA, g_exp, false, 0},
    {"Sqrt", KILN_DEVICE_CUDA, g_sqrt, false, 0},
    {"Erf", KILN_DEVICE_CUDA, g_erf, false, 0},
    {"Neg", KILN_DEVICE_CUDA, g_neg, false, 0},
    {"Abs", KILN_DEVICE_CUDA, g_abs, false, 0},
    {"Clip", KILN_DEVICE_CUDA, g_clip, false, HOST(1) | HOST(2)},
    {"Add", KILN_DEVICE_CUDA, g_add, true, 0},
    {"Sub", KILN_DEVICE_CUDA, g_sub, true, 0},
    {"Mul", KILN_DEVICE_CUDA, g_mul, true, 0},
    {"Div", KILN_DEVICE_CUDA, g_div, true, 0},
    {"Pow", KILN_DEVICE_CUDA, g_pow, false, 0},
    {"Softmax", KILN_DEVICE_CUDA, g_softmax, false, 0},
    {"LogSoftmax", KILN_DEVICE_CUDA, g_log_softmax, false, 0},
    {"MatMul", KILN_DEVICE_CUDA, g_matmul, true, 0},
    {"Gemm", KILN_DEVICE_CUDA, g_gemm, true, 0},
    {"Conv", KILN_DEVICE_CUDA, g_conv, true, 0},
    {"MaxPool", KILN_DEVICE_CUDA, g_maxpool, false, 0},
    {"AveragePool", KILN_DEVICE_CUDA, g_avgpool, false, 0},
    {"GlobalAveragePool", KILN_DEVICE_CUDA, g_global_avgpool, false, 0},
    {"BatchNormalization", KILN_DEVICE_CUDA, g_batchnorm, false, 0},
    {"LayerNormalization", KILN_DEVICE_CUDA, g_layer_norm, false, 0},
    {"ReduceMean", KILN_DEVICE_CUDA, g_reduce_mean, false, HOST(1)},
    {"ReduceSum", KILN_DEVICE_CUDA, g_reduce_sum, false, HOST(1)},
    {"Transpose", KILN_DEVICE_CUDA, g_transpose, false, 0},
    {"Concat", KILN_DEVICE_CUDA, g_concat, false, 0},
    {"Gather", KILN_DEVICE_CUDA, g_gather, false, HOST(1)},
    {"Slice", KILN_DEVICE_CUDA, g_slice, false, HOST(1) | HOST(2) | HOST(3) | HOST(4)},
    {"Expand", KILN_DEVICE_CUDA, g_expand, false, HOST(1)},
    {NULL, KILN_DEVICE_CUDA, NULL, false, 0},
};
