/*
 * simple: Triton's quick-start model. Two INT32 inputs INPUT0, INPUT1 of shape [-1,16];
 * OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (wrapping, as two's complement does).
 */
#include <stdint.h>

#include "common.h"

static int32_t create(const kiln_plugin_model_info *info, void **state, kiln_plugin_error *err)
{
    if (info->n_inputs != 2 || info->n_outputs != 2)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "simple needs 2 inputs and 2 outputs, the config has %u and %u",
                           info->n_inputs, info->n_outputs);
    for (uint32_t i = 0; i < 2; i++) {
        int32_t rc = plugin_expect(&info->inputs[i], "INT32", err);
        if (rc == KILN_PLUGIN_OK)
            rc = plugin_expect(&info->outputs[i], "INT32", err);
        if (rc != KILN_PLUGIN_OK)
            return rc;
    }
    *state = &plugin_no_state;
    return KILN_PLUGIN_OK;
}

static int32_t execute(void *state, const kiln_plugin_batch *b, kiln_plugin_error *err)
{
    (void)state;
    const kiln_plugin_tensor *a = &b->inputs[0], *c = &b->inputs[1];
    if (!a->dl.data || !c->dl.data || a->byte_size != c->byte_size || a->dl.ndim != c->dl.ndim)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "INPUT0 and INPUT1 must both be given with the same shape");
    uint64_t n = a->byte_size / sizeof(int32_t);
    const uint32_t *x = a->dl.data, *y = c->dl.data;
    for (uint32_t k = 0; k < b->n_outputs; k++) {
        void *out;
        int32_t rc =
            b->alloc_output(b->alloc_ctx, k, a->dl.ndim, a->dl.shape, a->byte_size, &out, err);
        if (rc != KILN_PLUGIN_OK)
            return rc;
        uint32_t *o = out;
        if (b->output_indices[k] == 0)
            for (uint64_t i = 0; i < n; i++)
                o[i] = x[i] + y[i];
        else
            for (uint64_t i = 0; i < n; i++)
                o[i] = x[i] - y[i];
    }
    return KILN_PLUGIN_OK;
}

static const kiln_plugin_api api = {
    .abi_major = KILN_PLUGIN_ABI_MAJOR,
    .abi_minor = KILN_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(kiln_plugin_api),
    .create = create,
    .execute = execute,
    .destroy = plugin_destroy_nothing,
};

const kiln_plugin_api *kiln_plugin_entry(void);
const kiln_plugin_api *kiln_plugin_entry(void)
{
    return &api;
}
