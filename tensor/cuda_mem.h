/*
 * tensor/cuda_mem.h: the plain C face of tensor/cuda.cu (or cuda_none.c when built without
 * CUDA). Internal to the tensor module; safe to include from C++ (nvcc).
 */
#ifndef KILN_TENSOR_CUDA_MEM_H
#define KILN_TENSOR_CUDA_MEM_H

#include <stddef.h>
#include <stdint.h>

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

/* Copies n bytes between host and device memory (either way; CUDA tells which from the
 * pointers), after all work queued on the device, and waits for the copy. KILN_UNAVAILABLE
 * without CUDA, KILN_INTERNAL with the CUDA error otherwise. For tests and tools. */
kiln_status kiln__cuda_copy(void *dst, const void *src, size_t n, kiln_err *err);

/* Bytes in a serialized cudaIpcMemHandle_t. */
#define KILN_CUDA_IPC_HANDLE_BYTES 64

/*
 * Opens another process's device buffer from its serialized cudaIpcMemHandle_t (handle_len
 * must be KILN_CUDA_IPC_HANDLE_BYTES) on `device`, and checks that the allocation behind it
 * holds at least byte_size bytes from the handle's address (cuMemGetAddressRange, reached
 * through the runtime's driver entry point, so no link to libcuda). OUT: *ptr.
 * Errors: KILN_UNAVAILABLE (no CUDA, no such device), KILN_INVALID_ARGUMENT (bad handle
 * length, a handle the driver refuses, byte_size past the allocation); the calling thread's
 * current device is restored.
 */
kiln_status kiln__cuda_ipc_open(const void *handle, size_t handle_len, int device,
                                uint64_t byte_size, void **ptr, kiln_err *err);

/* Closes a buffer from kiln__cuda_ipc_open. */
void kiln__cuda_ipc_close(int device, void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* KILN_TENSOR_CUDA_MEM_H */
