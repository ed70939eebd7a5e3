/*
 * tests/gpu/cuda_fault.cu: a plugin model (kiln_plugin.h) for the GPU checks (tests/gpu/run.sh)
 * that faults on the GPU the way buggy model code does. Input MODE (INT32 [1]), output OUT
 * (INT32 [1], MODE back). MODE 1 launches a kernel that stores through an address no allocation
 * holds: CUDA answers cudaErrorIllegalAddress, a sticky error that leaves the GPU's context
 * unusable for the whole process, every other model on that GPU included. Kiln must fail the
 * request, mark the GPU lost, report NOT_SERVING and stay up. Other modes just answer.
 * Built with nvcc against the shared CUDA runtime, the one kiln-server uses.
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln_plugin.h"

__global__ void store_through(int *p)
{
    *p = 1;
}

static int32_t fail(kiln_plugin_error *err, int32_t code, const char *what, cudaError_t e)
{
    snprintf(err->message, sizeof(err->message), "%s: %s", what, cudaGetErrorString(e));
    return code;
}

static int32_t create(const kiln_plugin_model_info *info, void **state, kiln_plugin_error *err)
{
    if (info->n_inputs != 1 || info->n_outputs != 1) {
        snprintf(err->message, sizeof(err->message), "cuda_fault needs 1 input and 1 output");
        return KILN_PLUGIN_INVALID_ARGUMENT;
    }
    *state = (void *)1;
    return KILN_PLUGIN_OK;
}

static int32_t execute(void *state, const kiln_plugin_batch *b, kiln_plugin_error *err)
{
    (void)state;
    const kiln_plugin_tensor *in = &b->inputs[0];
    if (in->byte_size != 4) {
        snprintf(err->message, sizeof(err->message), "MODE must be one INT32");
        return KILN_PLUGIN_INVALID_ARGUMENT;
    }
    int32_t mode = *(const int32_t *)in->dl.data;
    if (mode == 1) {
        /* far past any allocation, aligned: the store faults */
        store_through<<<1, 1>>>((int *)(uintptr_t)0x10000000000ull);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess)
            e = cudaDeviceSynchronize();
        if (e != cudaSuccess)
            return fail(err, KILN_PLUGIN_INTERNAL, "cuda_fault kernel", e);
    }
    void *out;
    int32_t rc = b->alloc_output(b->alloc_ctx, 0, in->dl.ndim, in->dl.shape, 4, &out, err);
    if (rc == KILN_PLUGIN_OK)
        *(int32_t *)out = mode;
    return rc;
}

static void destroy(void *state)
{
    (void)state;
}

static const kiln_plugin_api api = {
    KILN_PLUGIN_ABI_MAJOR,
    KILN_PLUGIN_ABI_MINOR,
    sizeof(kiln_plugin_api),
    create,
    execute,
    destroy,
    NULL,
};

extern "C" const kiln_plugin_api *kiln_plugin_entry(void)
{
    return &api;
}
