/*
 * backends/onnx/cpu_kernels.h: helpers and kernel tables shared by the CPU kernel files of the
 * ONNX backend (backends/onnx/cpu_*.c) only.
 */
#ifndef KILN_BACKENDS_ONNX_CPU_KERNELS_H
#define KILN_BACKENDS_ONNX_CPU_KERNELS_H

#include <stdarg.h>
#include <stdio.h>

#include "backends/onnx/onnx_int.h"

/* Sets err to INVALID_ARGUMENT "node '<name>' (<op>): <message>" and returns that code. */
kiln_status kiln__onnx_bad_node(const kiln_onnx_call *c, kiln_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks that input i is present and FP32. */
kiln_status kiln__onnx_want_f32(const kiln_onnx_call *c, size_t i, kiln_err *err);

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

/* Kernel tables, each ended by an entry with op NULL. */
extern const kiln_onnx_kernel kiln__onnx_cpu_math[];
extern const kiln_onnx_kernel kiln__onnx_cpu_shape[];
extern const kiln_onnx_kernel kiln__onnx_cpu_nn[];
extern const kiln_onnx_kernel kiln__onnx_cpu_tensor[];
extern const kiln_onnx_kernel kiln__onnx_cuda[]; /* gpu.cu; empty without CUDA */

#endif /* KILN_BACKENDS_ONNX_CPU_KERNELS_H */
