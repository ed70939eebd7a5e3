/*
 * tensor/cuda_mem.h: the plain C face of tensor/cuda.cu (or cuda_none.c when built without
 * CUDA). Internal to the tensor module; safe to include from C++ (nvcc).
 */
#ifndef KILN_TENSOR_CUDA_MEM_H
#define KILN_TENSOR_CUDA_MEM_H

#include <stddef.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* See kiln_cuda_device_count in tensor/tensor.h. */
kiln_status kiln_cuda_device_count(int *count, kiln_err *err);

/*
 * Allocates `size` bytes on CUDA device `device`. KILN_UNAVAILABLE without CUDA or without
 * that device, KILN_RESOURCE_EXHAUSTED when device memory is short, KILN_INTERNAL with the CUDA
 * error string otherwise. *out is NULL on failure.
 */
kiln_status kiln__cuda_alloc(int device, size_t size, void **out, kiln_err *err);

/* Frees memory from kiln__cuda_alloc. NULL is a no-op. */
void kiln__cuda_free(int device, void *p);

#ifdef __cplusplus
}
#endif

#endif /* KILN_TENSOR_CUDA_MEM_H */
