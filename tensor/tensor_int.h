/*
 * tensor/tensor_int.h: internals shared by the files of the tensor module only.
 */
#ifndef KILN_TENSOR_TENSOR_INT_H
#define KILN_TENSOR_TENSOR_INT_H

#include "common/refcount.h"
#include "tensor/cuda_mem.h"
#include "tensor/tensor.h"

/*
 * Every storage kind is the same struct: a block of bytes and a release callback that gives
 * the bytes back (free, cudaFree, unmap the region, return to the pool, or the user's own).
 */
struct kiln_storage {
    kiln_refcount ref;
    kiln_storage_kind kind;
    kiln_device device;
    void *data;
    size_t size;
    kiln_release_fn release; /* called once with (release_ctx, data) on the last unref */
    void *release_ctx;
    int inline_block; /* 1 if the struct and the heap data are one allocation */
};

/*
 * Creates a storage of any kind around `data`. On failure `release` is not called.
 */
kiln_status kiln__storage_new(kiln_storage_kind kind, kiln_device device, void *data, size_t size,
                              kiln_release_fn release, void *ctx, kiln_storage **out,
                              kiln_err *err);

#endif /* KILN_TENSOR_TENSOR_INT_H */
