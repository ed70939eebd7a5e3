/*
 * backends/plugin/plugin.c: loads kiln_plugin.h shared objects and runs their batches.
 *
 * The loader turns every way a plugin can be wrong into a load error that names the model,
 * the version and what is wrong: file missing, not loadable (dlerror), entry symbol missing,
 * entry returning NULL, ABI version mismatch, required entry point missing, create failing.
 * At execute the plugin is untrusted too: its output shapes, sizes and BYTES encodings are
 * checked before anything leaves the backend.
 */
#include "backends/plugin/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/plugin/kiln_plugin.h"
#include "common/alloc.h"

#define DEFAULT_FILENAME "model.so"

struct kiln_backend_model {
    void *dl;
    const kiln_plugin_api *api;
    void *state;
    const kiln_model_config *config;
    char name[160]; /* "model 'x' version N", for messages */
    uint64_t file_bytes;
};

/* Bytes of the ABI 1.0 table that must be present. */
#define API_V1_SIZE (offsetof(kiln_plugin_api, memory_bytes) + sizeof(void *))

static kiln_status plugin_code(int32_t code)
{
    return code > 0 && code < KILN_STATUS_COUNT ? (kiln_status)code : KILN_INTERNAL;
}

static kiln_status check_api(const kiln_plugin_api *api, const char *who, const char *file,
                             kiln_err *err)
{
    if (!api)
        return kiln_err_set(err, KILN_FAILED_PRECONDITION, "%s: %s: %s() returned NULL", who, file,
                            KILN_PLUGIN_ENTRY_SYMBOL);
    if (api->abi_major != KILN_PLUGIN_ABI_MAJOR || api->abi_minor > KILN_PLUGIN_ABI_MINOR)
        return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                            "%s: %s: plugin ABI %u.%u is not supported (server speaks %d.%d: same "
                            "major, minor up to %d)",
                            who, file, api->abi_major, api->abi_minor, KILN_PLUGIN_ABI_MAJOR,
                            KILN_PLUGIN_ABI_MINOR, KILN_PLUGIN_ABI_MINOR);
    if (api->struct_size < API_V1_SIZE)
        return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                            "%s: %s: plugin API table is %u bytes, ABI %d.%d needs %zu", who, file,
                            api->struct_size, KILN_PLUGIN_ABI_MAJOR, KILN_PLUGIN_ABI_MINOR,
                            (size_t)API_V1_SIZE);
    const char *missing = !api->create    ? "create"
                          : !api->execute ? "execute"
                          : !api->destroy ? "destroy"
                                          : NULL;
    if (missing)
        return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                            "%s: %s: plugin lacks the required entry point '%s'", who, file,
                            missing);
    return KILN_OK;
}

static void fill_desc(const kiln_model_io *io, kiln_plugin_io_desc *d)
{
    d->name = io->name;
    d->datatype = kiln_dtype_name(io->dtype);
    d->ndim = io->dims.rank;
    d->dims = io->dims.dims;
}

static kiln_status create_state(kiln_backend_model *m, const kiln_load_args *args, kiln_err *err)
{
    const kiln_model_config *c = args->config;
    size_t n_io = c->n_inputs + c->n_outputs;
    kiln_plugin_io_desc *desc = kiln_calloc(n_io, sizeof(*desc));
    const char **kv = kiln_calloc(2 * c->n_params + 1, sizeof(char *));
    if (!desc || !kv) {
        kiln_free(desc);
        kiln_free(kv);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "%s: out of memory", m->name);
    }
    for (size_t i = 0; i < c->n_inputs; i++)
        fill_desc(&c->inputs[i], &desc[i]);
    for (size_t i = 0; i < c->n_outputs; i++)
        fill_desc(&c->outputs[i], &desc[c->n_inputs + i]);
    for (size_t i = 0; i < c->n_params; i++) {
        kv[i] = c->params[i].key;
        kv[c->n_params + i] = c->params[i].value;
    }
    kiln_plugin_model_info info = {
        .model_name = args->model_name,
        .model_dir = args->model_dir,
        .version_dir = args->version_dir,
        .version = args->version,
        .max_batch_size = c->max_batch_size,
        .n_inputs = (uint32_t)c->n_inputs,
        .inputs = desc,
        .n_outputs = (uint32_t)c->n_outputs,
        .outputs = desc + c->n_inputs,
        .n_params = (uint32_t)c->n_params,
        .param_keys = kv,
        .param_values = kv + c->n_params,
    };
    kiln_plugin_error perr = {{0}};
    int32_t code = m->api->create(&info, &m->state, &perr);
    kiln_free(desc);
    kiln_free(kv);
    if (code != KILN_PLUGIN_OK) {
        perr.message[sizeof(perr.message) - 1] = '\0';
        m->state = NULL;
        return kiln_err_set(err, plugin_code(code), "%s: plugin create failed: %s", m->name,
                            perr.message[0] ? perr.message : "(no message)");
    }
    return KILN_OK;
}

static kiln_status plugin_load(const kiln_load_args *args, kiln_backend_model **out, kiln_err *err)
{
    *out = NULL;
    const char *file = args->config->default_model_filename[0]
                           ? args->config->default_model_filename
                           : DEFAULT_FILENAME;
    kiln_backend_model *m = kiln_calloc(1, sizeof(*m));
    if (!m)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory loading a plugin");
    snprintf(m->name, sizeof(m->name), "model '%s' version %" PRId64, args->model_name,
             args->version);
    m->config = args->config;
    kiln_status st;
    if (args->device.kind != KILN_DEVICE_CPU) {
        st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                          "%s: plugins run on the CPU; CUDA device %d was asked", m->name,
                          args->device.id);
        goto out_free;
    }
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", args->version_dir, file) >= (int)sizeof(path)) {
        st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: plugin path too long", m->name);
        goto out_free;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = kiln_err_set(err, errno == ENOENT ? KILN_NOT_FOUND : KILN_FAILED_PRECONDITION,
                          "%s: plugin library '%s' not found in the version directory: %s", m->name,
                          file, strerror(errno));
        goto out_free;
    }
    m->file_bytes = (uint64_t)sb.st_size;
    m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!m->dl) {
        const char *why = dlerror();
        st = kiln_err_set(err, KILN_FAILED_PRECONDITION, "%s: cannot load plugin '%s': %s", m->name,
                          file, why ? why : "unknown dlopen error");
        goto out_free;
    }
    void *sym = dlsym(m->dl, KILN_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        st = kiln_err_set(err, KILN_FAILED_PRECONDITION,
                          "%s: plugin '%s' does not export %s (the entry symbol)", m->name, file,
                          KILN_PLUGIN_ENTRY_SYMBOL);
        goto out_close;
    }
    kiln_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof(entry)); /* object pointer to function pointer, as POSIX allows */
    m->api = entry();
    if ((st = check_api(m->api, m->name, file, err)) != KILN_OK)
        goto out_close;
    if ((st = create_state(m, args, err)) != KILN_OK)
        goto out_close;
    *out = m;
    return KILN_OK;

out_close:
    dlclose(m->dl);
out_free:
    kiln_free(m);
    return st;
}

static void plugin_unload(kiln_backend_model *m)
{
    if (!m)
        return;
    if (m->api && m->state)
        m->api->destroy(m->state);
    if (m->dl)
        dlclose(m->dl);
    kiln_free(m);
}

static void plugin_memory(const kiln_backend_model *m, uint64_t *host, uint64_t *device)
{
    uint64_t own = m->api->memory_bytes ? m->api->memory_bytes(m->state) : 0;
    *host = m->file_bytes + own;
    *device = 0;
}

/* ---------------------------------------------------------------- execute */

typedef struct exec_ctx {
    kiln_backend_model *m;
    kiln_batch *batch;
} exec_ctx;

static int32_t fail_alloc(kiln_plugin_error *perr, kiln_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int32_t fail_alloc(kiln_plugin_error *perr, kiln_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (perr)
        vsnprintf(perr->message, sizeof(perr->message), fmt, ap);
    va_end(ap);
    return (int32_t)code;
}

static int32_t alloc_output(void *ctx, uint32_t idx, int32_t ndim, const int64_t *shape,
                            uint64_t byte_size, void **data, kiln_plugin_error *perr)
{
    exec_ctx *x = ctx;
    const kiln_model_config *c = x->m->config;
    *data = NULL;
    if (idx >= x->batch->n_outputs)
        return fail_alloc(perr, KILN_INVALID_ARGUMENT, "output index %u: only %u outputs requested",
                          idx, x->batch->n_outputs);
    kiln_output_slot *slot = &x->batch->outputs[idx];
    const kiln_model_io *io = &c->outputs[slot->index];
    kiln_shape s;
    kiln_err e;
    if (ndim < 0 || kiln_shape_set(&s, shape, (size_t)ndim, &e) != KILN_OK)
        return fail_alloc(perr, KILN_INVALID_ARGUMENT, "output '%s': bad shape (ndim %d)", io->name,
                          ndim);
    /* the shape must fit the config: batch dim first when batching */
    if (kiln_output_shape_check(c, slot->index, x->batch->batch_size, &s, &e) != KILN_OK)
        return fail_alloc(perr, e.code, "%s", e.msg);
    if (byte_size > SIZE_MAX)
        return fail_alloc(perr, KILN_INVALID_ARGUMENT, "output '%s': byte size too large",
                          io->name);
    kiln_status st = kiln_output_slot_alloc(slot, io->name, io->dtype, &s, (size_t)byte_size, &e);
    if (st != KILN_OK)
        return fail_alloc(perr, st, "%s", e.msg);
    *data = slot->result.data;
    return KILN_PLUGIN_OK;
}

static int32_t stop_shim(void *ctx)
{
    kiln_batch *b = ctx;
    return b->should_stop ? b->should_stop(b->stop_ctx) : 0;
}

static kiln_status check_outputs(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    for (uint32_t i = 0; i < batch->n_outputs; i++) {
        kiln_output_slot *slot = &batch->outputs[i];
        const kiln_model_io *io = &m->config->outputs[slot->index];
        if (!slot->result.storage)
            return kiln_err_set(err, KILN_INTERNAL, "%s: plugin did not produce output '%s'",
                                m->name, io->name);
        if (io->dtype == KILN_DTYPE_BYTES) {
            uint64_t n;
            kiln_shape_numel(&slot->result.shape, &n, NULL);
            kiln_status st =
                kiln_bytes_validate(slot->result.data, slot->result.byte_size, n, NULL, err);
            if (st != KILN_OK)
                return kiln_err_prefix(err, KILN_INTERNAL,
                                       "%s: plugin wrote an invalid BYTES output '%s'", m->name,
                                       io->name);
        }
    }
    return KILN_OK;
}

static kiln_status plugin_execute(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    const kiln_model_config *c = m->config;
    if (batch->n_inputs != c->n_inputs || batch->n_outputs == 0 || batch->n_outputs > c->n_outputs)
        return kiln_err_set(err, KILN_INTERNAL, "%s: batch has %u inputs and %u outputs", m->name,
                            batch->n_inputs, batch->n_outputs);
    /* one block: the input descriptors, a copy of their shapes, the output indices */
    size_t n_in = batch->n_inputs;
    unsigned char *block = kiln_calloc(1, n_in * (sizeof(kiln_plugin_tensor) + sizeof(kiln_shape)) +
                                              batch->n_outputs * sizeof(uint32_t));
    if (!block)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "%s: out of memory", m->name);
    kiln_plugin_tensor *in = (kiln_plugin_tensor *)block;
    kiln_shape *shapes = (kiln_shape *)(in + n_in);
    uint32_t *out_idx = (uint32_t *)(shapes + n_in);
    for (uint32_t i = 0; i < batch->n_inputs; i++) {
        const kiln_tensor *t = &batch->inputs[i];
        kiln_plugin_tensor *p = &in[i];
        p->name = c->inputs[i].name;
        if (!t->storage)
            continue; /* absent optional input: data NULL */
        if (t->device.kind != KILN_DEVICE_CPU) {
            kiln_free(block); /* the name comes from the config, not from the block */
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "%s: input '%s' is in CUDA memory; plugins take CPU tensors",
                                m->name, c->inputs[i].name);
        }
        p->dl.data = t->data;
        p->dl.device = (DLDevice){kDLCPU, 0};
        p->dl.ndim = t->shape.rank;
        shapes[i] = t->shape;
        p->dl.shape = shapes[i].dims;
        p->dl.strides = NULL;
        p->byte_size = t->byte_size;
        if (t->dtype == KILN_DTYPE_BYTES) {
            p->dl.dtype = (DLDataType){kDLUInt, 8, 1};
            p->flags |= KILN_PLUGIN_TENSOR_BYTES;
        } else {
            kiln_dtype_to_dlpack(t->dtype, &p->dl.dtype);
        }
        if (kiln_storage_get_kind(t->storage) == KILN_STORAGE_SHM)
            p->flags |= KILN_PLUGIN_TENSOR_READ_ONLY;
    }
    for (uint32_t i = 0; i < batch->n_outputs; i++)
        out_idx[i] = batch->outputs[i].index;
    exec_ctx x = {m, batch};
    kiln_plugin_batch pb = {
        .batch_size = batch->batch_size,
        .n_inputs = batch->n_inputs,
        .inputs = in,
        .n_outputs = batch->n_outputs,
        .output_indices = out_idx,
        .alloc_output = alloc_output,
        .alloc_ctx = &x,
        .should_stop = stop_shim,
        .stop_ctx = batch,
    };
    kiln_plugin_error perr = {{0}};
    int32_t code = m->api->execute(m->state, &pb, &perr);
    kiln_free(block);
    kiln_status st;
    if (code != KILN_PLUGIN_OK) {
        perr.message[sizeof(perr.message) - 1] = '\0';
        st = kiln_err_set(err, plugin_code(code), "%s: %s", m->name,
                          perr.message[0] ? perr.message : "plugin execute failed (no message)");
    } else {
        st = check_outputs(m, batch, err);
    }
    if (st != KILN_OK)
        kiln_batch_release_outputs(batch);
    return st;
}

const kiln_backend kiln_plugin_backend = {
    .name = "plugin",
    .load = plugin_load,
    .execute = plugin_execute,
    .memory = plugin_memory,
    .unload = plugin_unload,
    .foreign_code = true,
};
