/*
 * backends/onnx/scalar_ops.h: the elementwise arithmetic that the CPU kernels (cpu_math.c) and
 * the CUDA kernels (gpu.cu) share, one element at a time, so that both devices compute the
 * same thing. Host and device functions under nvcc, static inline functions in C.
 */
#ifndef KILN_BACKENDS_ONNX_SCALAR_OPS_H
#define KILN_BACKENDS_ONNX_SCALAR_OPS_H

#include <math.h>

#ifdef __CUDACC__
#define KILN_ONNX_SCALAR static __host__ __device__ __forceinline__
#else
#define KILN_ONNX_SCALAR static inline
#endif

/* Binary ops (broadcasting kernels). */
typedef enum kiln_onnx_binop {
    KILN_ONNX_ADD,
    KILN_ONNX_SUB,
    KILN_ONNX_MUL,
    KILN_ONNX_DIV,
    KILN_ONNX_POW
} kiln_onnx_binop;

KILN_ONNX_SCALAR float kiln_onnx_binop_apply(int op, float x, float y)
{
    switch (op) {
    case KILN_ONNX_ADD:
        return x + y;
    case KILN_ONNX_SUB:
        return x - y;
    case KILN_ONNX_MUL:
        return x * y;
    case KILN_ONNX_DIV:
        return x / y;
    default:
        return powf(x, y);
    }
}

/* Unary ops; LeakyRelu takes alpha as a, Clip takes its bounds as a and b. */
typedef enum kiln_onnx_unop {
    KILN_ONNX_RELU,
    KILN_ONNX_LEAKY,
    KILN_ONNX_SIGMOID,
    KILN_ONNX_TANH,
    KILN_ONNX_EXP,
    KILN_ONNX_SQRT,
    KILN_ONNX_ERF,
    KILN_ONNX_NEG,
    KILN_ONNX_ABS,
    KILN_ONNX_CLIP
} kiln_onnx_unop;

KILN_ONNX_SCALAR float kiln_onnx_unop_apply(int op, float v, float a, float b)
{
    switch (op) {
    case KILN_ONNX_RELU: /* NaN and -0 give 0 */
        return v > 0.f ? v : 0.f;
    case KILN_ONNX_LEAKY:
        return v >= 0.f ? v : a * v;
    case KILN_ONNX_SIGMOID:
        return 1.f / (1.f + expf(-v));
    case KILN_ONNX_TANH:
        return tanhf(v);
    case KILN_ONNX_EXP:
        return expf(v);
    case KILN_ONNX_SQRT:
        return sqrtf(v);
    case KILN_ONNX_ERF:
        return erff(v);
    case KILN_ONNX_NEG:
        return -v;
    case KILN_ONNX_ABS:
        return fabsf(v);
    default: /* KILN_ONNX_CLIP */
        return v < a ? a : (v > b ? b : v);
    }
}

#endif /* KILN_BACKENDS_ONNX_SCALAR_OPS_H */
