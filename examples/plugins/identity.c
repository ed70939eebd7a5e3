/*
 * identity: returns its one input unchanged, whatever its datatype. Built twice:
 *   simple_identity (BYTES [-1,-1]) and identity_fp32 (FP32, for transfer tests).
 * Config parameter `execute_delay_ms` makes each execute take that long (polling
 * should_stop every millisecond), for scheduling and deadline tests.
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "common.h"

typedef struct state {
    long delay_ms;
} state;

static int32_t create(const kiln_plugin_model_info *info, void **out, kiln_plugin_error *err)
{
    if (info->n_inputs != 1 || info->n_outputs != 1)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "identity needs 1 input and 1 output, the config has %u and %u",
                           info->n_inputs, info->n_outputs);
    if (strcmp(info->inputs[0].datatype, info->outputs[0].datatype) != 0)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "identity needs the same datatype in and out (%s vs %s)",
                           info->inputs[0].datatype, info->outputs[0].datatype);
    state *s = calloc(1, sizeof(*s));
    if (!s)
        return plugin_fail(err, KILN_PLUGIN_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < info->n_params; i++) {
        if (strcmp(info->param_keys[i], "execute_delay_ms") == 0) {
            char *end;
            s->delay_ms = strtol(info->param_values[i], &end, 10);
            if (*end || s->delay_ms < 0) {
                free(s);
                return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                                   "parameter execute_delay_ms '%s' is not a number of ms",
                                   info->param_values[i]);
            }
        }
    }
    *out = s;
    return KILN_PLUGIN_OK;
}

static int32_t execute(void *st, const kiln_plugin_batch *b, kiln_plugin_error *err)
{
    state *s = st;
    const kiln_plugin_tensor *in = &b->inputs[0];
    for (long ms = 0; ms < s->delay_ms; ms++) {
        if (b->should_stop && b->should_stop(b->stop_ctx))
            return plugin_fail(err, KILN_PLUGIN_INTERNAL, "stopped after %ld ms", ms);
        struct timespec t = {0, 1000000};
        nanosleep(&t, NULL);
    }
    void *out;
    int32_t rc =
        b->alloc_output(b->alloc_ctx, 0, in->dl.ndim, in->dl.shape, in->byte_size, &out, err);
    if (rc != KILN_PLUGIN_OK)
        return rc;
    if (in->byte_size)
        memcpy(out, in->dl.data, in->byte_size);
    return KILN_PLUGIN_OK;
}

static void destroy(void *st)
{
    free(st);
}

static const kiln_plugin_api api = {
    .abi_major = KILN_PLUGIN_ABI_MAJOR,
    .abi_minor = KILN_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(kiln_plugin_api),
    .create = create,
    .execute = execute,
    .destroy = destroy,
};

const kiln_plugin_api *kiln_plugin_entry(void);
const kiln_plugin_api *kiln_plugin_entry(void)
{
    return &api;
}
