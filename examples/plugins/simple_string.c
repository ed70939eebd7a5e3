/*
 * simple_string: as simple, with BYTES tensors holding decimal integers as strings; the sum
 * and difference come back as decimal strings (BYTES end to end).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

static int32_t create(const kiln_plugin_model_info *info, void **state, kiln_plugin_error *err)
{
    if (info->n_inputs != 2 || info->n_outputs != 2)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "simple_string needs 2 inputs and 2 outputs");
    for (uint32_t i = 0; i < 2; i++) {
        int32_t rc = plugin_expect(&info->inputs[i], "BYTES", err);
        if (rc == KILN_PLUGIN_OK)
            rc = plugin_expect(&info->outputs[i], "BYTES", err);
        if (rc != KILN_PLUGIN_OK)
            return rc;
    }
    *state = &plugin_no_state;
    return KILN_PLUGIN_OK;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parses the BYTES tensor t (already validated by the server) into n int32 values. */
static int32_t parse(const kiln_plugin_tensor *t, uint64_t n, int32_t *v, kiln_plugin_error *err)
{
    const uint8_t *p = t->dl.data;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t len = le32(p);
        char buf[32];
        if (len == 0 || len >= sizeof(buf))
            return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                               "%s[%" PRIu64 "] is not a decimal integer (%u bytes)", t->name, i,
                               len);
        memcpy(buf, p + 4, len);
        buf[len] = '\0';
        char *end;
        errno = 0;
        long long x = strtoll(buf, &end, 10);
        if (*end || errno || x < INT32_MIN || x > INT32_MAX)
            return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                               "%s[%" PRIu64 "] '%s' is not a decimal int32", t->name, i, buf);
        v[i] = (int32_t)x;
        p += 4 + len;
    }
    return KILN_PLUGIN_OK;
}

static int32_t execute(void *state, const kiln_plugin_batch *b, kiln_plugin_error *err)
{
    (void)state;
    const kiln_plugin_tensor *a = &b->inputs[0], *c = &b->inputs[1];
    uint64_t n = plugin_numel(&a->dl);
    if (!a->dl.data || !c->dl.data || plugin_numel(&c->dl) != n || a->dl.ndim != c->dl.ndim)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "INPUT0 and INPUT1 must both be given with the same shape");
    int32_t *x = malloc(2 * n * sizeof(int32_t) + 1);
    if (!x)
        return plugin_fail(err, KILN_PLUGIN_RESOURCE_EXHAUSTED, "out of memory");
    int32_t *y = x + n;
    int32_t rc = parse(a, n, x, err);
    if (rc == KILN_PLUGIN_OK)
        rc = parse(c, n, y, err);
    for (uint32_t k = 0; rc == KILN_PLUGIN_OK && k < b->n_outputs; k++) {
        int sum = b->output_indices[k] == 0;
        uint64_t total = 0;
        char buf[16];
        for (uint64_t i = 0; i < n; i++)
            total += 4 + (uint64_t)snprintf(buf, sizeof(buf), "%d",
                                            sum ? (int32_t)((uint32_t)x[i] + (uint32_t)y[i])
                                                : (int32_t)((uint32_t)x[i] - (uint32_t)y[i]));
        void *out;
        rc = b->alloc_output(b->alloc_ctx, k, a->dl.ndim, a->dl.shape, total, &out, err);
        if (rc != KILN_PLUGIN_OK)
            break;
        uint8_t *o = out;
        for (uint64_t i = 0; i < n; i++) {
            int32_t v = sum ? (int32_t)((uint32_t)x[i] + (uint32_t)y[i])
                            : (int32_t)((uint32_t)x[i] - (uint32_t)y[i]);
            int len = snprintf(buf, sizeof(buf), "%d", v);
            o[0] = (uint8_t)len;
            o[1] = o[2] = o[3] = 0;
            memcpy(o + 4, buf, (size_t)len);
            o += 4 + len;
        }
    }
    free(x);
    return rc;
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
