/*
 * backends/onnx/cpu_kernels.h: helpers and kernel tables shared by the kernel files of the ONNX
 * backend (backends/onnx/cpu_*.c, the CUDA kernels of gpu.cu, the op preps of op_shapes.c)
 * only. Safe to include from nvcc.
 */
#ifndef KILN_BACKENDS_ONNX_CPU_KERNELS_H
#define KILN_BACKENDS_ONNX_CPU_KERNELS_H

#include <stdarg.h>
#include <stdio.h>

#include "backends/onnx/onnx_int.h"

/* Sets err to INVALID_ARGUMENT "node '<name>' (<op>): <message>" and returns that code. */
kiln_status kiln__onnx_bad_node(const kiln_onnx_call *c, kiln_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks that input i is present and FP32; a CUDA kernel's call (c->gpu set) of a model in FP16
 * precision takes FP16 too (such a model keeps its float values in FP16 on the device). */
kiln_status kiln__onnx_want_float(const kiln_onnx_call *c, size_t i, kiln_err *err);

/*
 * Allocates a kernel's output, refusing one over KILN_ONNX_MAX_VALUE_BYTES (a small request can
 * ask for a huge broadcast or product) with INVALID_ARGUMENT naming the node.
 */
#define KILN_ONNX_MAX_VALUE_BYTES (UINT64_C(4) << 30)
kiln_status kiln__onnx_alloc(const kiln_onnx_call *c, kiln_dtype dt, const kiln_shape *shape,
                             kiln_tensor *out, kiln_err *err);

/*
 * The broadcast shape of a and b (NumPy rules). OUT: *out, and each input's element strides in
 * the output's index space (0 along broadcast dims). INVALID_ARGUMENT naming both shapes.
 */
kiln_status kiln__onnx_broadcast(const kiln_onnx_call *c, const kiln_shape *a, const kiln_shape *b,
                                 kiln_shape *out, int64_t *sa, int64_t *sb, kiln_err *err);

/* out = a view of x's bytes with another shape of the same size (no copy). */
kiln_status kiln__onnx_view(const kiln_onnx_call *c, const kiln_tensor *x, const kiln_shape *shape,
                            kiln_tensor *out, kiln_err *err);

/* Checks that the GEMM sizes fit the int that BLAS takes. */
kiln_status kiln__onnx_blas_dims(const kiln_onnx_call *c, int64_t m, int64_t n, int64_t k,
                                 kiln_err *err);

/* The node's INT attribute `name`, or dflt. */
int64_t kiln__onnx_attr_int(const kiln_onnx_call *c, const char *name, int64_t dflt);

/* The node's FLOAT attribute `name`, or dflt. */
float kiln__onnx_attr_float(const kiln_onnx_call *c, const char *name, float dflt);

/* The node's INTS attribute `name` copied into out[0..n) if it has exactly n values, else dflt
 * everywhere. Returns false if present with another length. */
bool kiln__onnx_attr_ints(const kiln_onnx_call *c, const char *name, int64_t *out, size_t n,
                          int64_t dflt);

/* 2-D window geometry shared by Conv and the pools (CPU and CUDA). */
typedef struct kiln_onnx_window {
    int64_t k[2], s[2], d[2], pad[4]; /* pads: top, left, bottom, right */
    int64_t in[2], out[2];
} kiln_onnx_window;

/* Reads strides/dilations/pads/auto_pad for kernel k over x ([N,C,H,W]) and computes the
 * output size (ceil_mode as the pools'). INVALID_ARGUMENT naming the node. */
kiln_status kiln__onnx_window(const kiln_onnx_call *c, const kiln_tensor *x, const int64_t *k,
                              bool ceil_mode, kiln_onnx_window *w, kiln_err *err);

/*
 * Advances a row-major index over dims[0..rank) by one element, moving two element offsets
 * along with it by their strides (a stride may be 0: a broadcast dim). Pass b_stride NULL to
 * move one offset only. Used to walk broadcast and permuted layouts.
 */
static inline void kiln__onnx_step(int rank, const int64_t *dims, int64_t *idx,
                                   const int64_t *a_stride, int64_t *a, const int64_t *b_stride,
                                   int64_t *b)
{
    for (int d = rank - 1; d >= 0; d--) {
        *a += a_stride[d];
        if (b_stride)
            *b += b_stride[d];
        if (++idx[d] < dims[d])
            return;
        *a -= a_stride[d] * dims[d];
        if (b_stride)
            *b -= b_stride[d] * dims[d];
        idx[d] = 0;
    }
}

/* ---------------------------------------------------------------- op preps (op_shapes.c)
 * Each checks an op's inputs and attributes (errors name the node) and works out its output;
 * the CPU and CUDA kernels of the op both call it, then allocate and compute. */

/* Normalizes axis *a (negative counts from the end) for rank r. */
kiln_status kiln__onnx_axis(const kiln_onnx_call *c, int64_t *a, int r, kiln_err *err);

typedef struct kiln_onnx_conv {
    const kiln_tensor *x, *w, *b; /* b: NULL without a bias */
    int64_t N, C, M, Cg, group;
    kiln_onnx_window win;
    kiln_shape out;
} kiln_onnx_conv;
kiln_status kiln__onnx_conv_prep(const kiln_onnx_call *c, kiln_onnx_conv *p, kiln_err *err);

typedef struct kiln_onnx_pool {
    bool include_pad;
    kiln_onnx_window win;
    kiln_shape out;
} kiln_onnx_pool;
kiln_status kiln__onnx_pool_prep(const kiln_onnx_call *c, bool max, kiln_onnx_pool *p,
                                 kiln_err *err);

/* GlobalAveragePool: out is [N,C,1...]; rows N*C of inner elements. */
kiln_status kiln__onnx_global_pool_prep(const kiln_onnx_call *c, kiln_shape *out, size_t *rows,
                                        size_t *inner, kiln_err *err);

/* MatMul with NumPy semantics: 1-D operands promoted, batch dims broadcast (sa, sb: each
 * side's matrix strides in the batch's index space; na, nb: its matrices). A third input,
 * which only load's bias folding makes (optimize.c), is a bias of N values added to every row
 * of the output (NULL: none). */
typedef struct kiln_onnx_matmul {
    int64_t M, N, K;
    kiln_shape batch, out;
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
    int64_t nbatch, na, nb;
    const kiln_tensor *bias;
} kiln_onnx_matmul;
kiln_status kiln__onnx_matmul_prep(const kiln_onnx_call *c, kiln_onnx_matmul *p, kiln_err *err);

/* Gemm: Y = alpha * A' B' + beta * C; sc: C's strides in [M,N] (0 along broadcast dims). */
typedef struct kiln_onnx_gemm {
    bool ta, tb, has_c;
    float alpha, beta;
    int64_t M, N, K, lda, ldb;
    int64_t sc[KILN_MAX_RANK];
    kiln_shape out;
} kiln_onnx_gemm;
kiln_status kiln__onnx_gemm_prep(const kiln_onnx_call *c, kiln_onnx_gemm *p, kiln_err *err);

/* Softmax and LogSoftmax along `axis` (default -1): outer x len x inner. */
kiln_status kiln__onnx_softmax_prep(const kiln_onnx_call *c, size_t *outer, size_t *len,
                                    size_t *inner, kiln_err *err);

/* LayerNormalization (rows of inner values) and BatchNormalization (rows N of channels x
 * inner values); bias NULL when absent. */
typedef struct kiln_onnx_norm {
    size_t rows, channels, inner;
    float eps;
    const kiln_tensor *scale, *bias;
} kiln_onnx_norm;
kiln_status kiln__onnx_layer_norm_prep(const kiln_onnx_call *c, kiln_onnx_norm *p, kiln_err *err);
kiln_status kiln__onnx_batchnorm_prep(const kiln_onnx_call *c, kiln_onnx_norm *p, kiln_err *err);

/* ReduceMean / ReduceSum: the reduced dims, the input's shape with them as 1 (full), the output
 * (keepdims or not); noop: no axes and noop_with_empty_axes (the output is the input). */
typedef struct kiln_onnx_reduce {
    bool red[KILN_MAX_RANK];
    bool noop;
    kiln_shape full, out;
} kiln_onnx_reduce;
kiln_status kiln__onnx_reduce_prep(const kiln_onnx_call *c, kiln_onnx_reduce *p, kiln_err *err);

/* Clip's bounds (inputs 1 and 2, scalars; +-infinity when absent). */
kiln_status kiln__onnx_clip_prep(const kiln_onnx_call *c, float *lo, float *hi, kiln_err *err);

/* Concat: the output, and rows `outer` of `inner` bytes per unit of the axis. */
typedef struct kiln_onnx_concat {
    int axis;
    kiln_shape out;
    size_t outer, inner;
} kiln_onnx_concat;
kiln_status kiln__onnx_concat_prep(const kiln_onnx_call *c, kiln_onnx_concat *p, kiln_err *err);

/* Transpose: the output, and per output dim the input element stride (step). */
kiln_status kiln__onnx_transpose_prep(const kiln_onnx_call *c, kiln_shape *out, int64_t *step,
                                      kiln_err *err);

/* Reads the 1-D INT64 input i (axes, starts, a shape...) into out[0..*n), at most cap values. */
kiln_status kiln__onnx_int_list(const kiln_onnx_call *c, size_t i, int64_t *out, size_t cap,
                                size_t *n, kiln_err *err);

/* Slice (inputs 1-4 read on the host): the output, and per dim the first index read and the
 * step (negative: backwards). */
kiln_status kiln__onnx_slice_prep(const kiln_onnx_call *c, kiln_shape *out, int64_t *start,
                                  int64_t *step, kiln_err *err);

/* Expand (input 1, the shape, read on the host): the output, and x's element strides in it
 * (0 along the broadcast dims). */
kiln_status kiln__onnx_expand_prep(const kiln_onnx_call *c, kiln_shape *out, int64_t *sx,
                                   kiln_err *err);

/* Kernel tables, each ended by an entry with op NULL. */
extern const kiln_onnx_kernel kiln__onnx_cpu_math[];
extern const kiln_onnx_kernel kiln__onnx_cpu_shape[];
extern const kiln_onnx_kernel kiln__onnx_cpu_nn[];
extern const kiln_onnx_kernel kiln__onnx_cpu_tensor[];
extern const kiln_onnx_kernel kiln__onnx_cuda[]; /* gpu.cu; empty without CUDA */

#endif /* KILN_BACKENDS_ONNX_CPU_KERNELS_H */
