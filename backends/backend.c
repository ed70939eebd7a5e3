/* backends/backend.c: the backend table and output allocation shared by all backends. */
#include "backends/backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/onnx/onnx.h"
#include "backends/plugin/plugin.h"

static const kiln_backend *const backends[] = {
    &kiln_plugin_backend,
    &kiln_onnx_backend,
};

const kiln_backend *kiln_backend_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

kiln_status kiln_backend_set_cpu_threads(int n, kiln_err *err)
{
    return kiln_onnx_set_blas_threads(n, err);
}

const char *kiln_backend_names(void)
{
    return "plugin, onnx";
}

const kiln_backend *kiln_backend_autoconfig_find(const char *version_dir)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        const kiln_backend *b = backends[i];
        if (!b->autoconfig || !b->autoconfig_file)
            continue;
        char path[4400];
        struct stat sb;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", version_dir, b->autoconfig_file) <
                sizeof(path) &&
            stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            return b;
    }
    return NULL;
}

char *kiln_backend_autoconfig_files(char *buf, size_t cap)
{
    size_t len = 0;
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]) && len < cap; i++) {
        const kiln_backend *b = backends[i];
        if (!b->autoconfig || !b->autoconfig_file)
            continue;
        int w = snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", b->autoconfig_file);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    return buf;
}

kiln_status kiln_output_slot_alloc(kiln_output_slot *slot, const char *name, kiln_dtype dtype,
                                   const kiln_shape *shape, size_t byte_size, kiln_err *err)
{
    char sb[256];
    if (slot->result.storage)
        return kiln_err_set(err, KILN_INTERNAL, "output '%s' was allocated twice", name);
    if (dtype != KILN_DTYPE_BYTES) {
        uint64_t want;
        kiln_status st = kiln_shape_byte_size(dtype, shape, 0, &want, err);
        if (st != KILN_OK)
            return kiln_err_prefix(err, st, "output '%s'", name);
        if (byte_size && byte_size != want)
            return kiln_err_set(err, KILN_INTERNAL,
                                "output '%s': %zu bytes do not match shape %s of %s (%" PRIu64 ")",
                                name, byte_size, kiln_shape_format(shape, sb, sizeof(sb)),
                                kiln_dtype_name(dtype), want);
        byte_size = (size_t)want;
    }
    if (slot->buffer) {
        if (byte_size > slot->capacity)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "output '%s' needs %zu bytes but its shared memory window holds "
                                "%zu",
                                name, byte_size, slot->capacity);
        /* BYTES written by the backend are validated after execute (not written yet) */
        kiln_status st = kiln_tensor_view_for_write(slot->buffer, slot->offset, dtype, shape,
                                                    byte_size, &slot->result, err);
        return st == KILN_OK ? st : kiln_err_prefix(err, st, "output '%s'", name);
    }
    kiln_storage *s;
    kiln_status st = kiln_storage_create_heap(byte_size, &s, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "output '%s'", name);
    st = kiln_tensor_view_for_write(s, 0, dtype, shape, byte_size, &slot->result, err);
    kiln_storage_unref(s);
    return st == KILN_OK ? st : kiln_err_prefix(err, st, "output '%s'", name);
}

void kiln_batch_release_outputs(kiln_batch *batch)
{
    for (uint32_t i = 0; i < batch->n_outputs; i++)
        kiln_tensor_fini(&batch->outputs[i].result);
}

kiln_status kiln_output_shape_check(const kiln_model_config *c, uint32_t index, uint32_t batch_size,
                                    const kiln_shape *shape, kiln_err *err)
{
    const kiln_model_io *io = &c->outputs[index];
    kiln_shape pattern = io->dims;
    if (c->max_batch_size > 0) {
        if (pattern.rank + 1 > KILN_MAX_RANK)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "output '%s': rank too large",
                                io->name);
        memmove(pattern.dims + 1, pattern.dims, sizeof(int64_t) * (size_t)pattern.rank);
        pattern.dims[0] = batch_size;
        pattern.rank++;
    }
    kiln_err e;
    if (kiln_shape_match(&pattern, shape, &e) != KILN_OK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "output '%s': %s", io->name, e.msg);
    return KILN_OK;
}
