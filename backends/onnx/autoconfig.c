/*
 * backends/onnx/autoconfig.c: the config of an ONNX model that has no config.pbtxt, derived
 * from its graph, as Triton's auto-complete does (docs/onnx.md, "Config auto-complete"):
 *
 *   - inputs are the graph's inputs that are not initializers, outputs the graph's outputs, in
 *     the graph's order, with the graph's names and element types;
 *   - the model batches when every input and output has rank >= 1 and a dynamic first dim
 *     (symbolic, absent, or 0): max_batch_size is KILN_ONNX_AUTOCONFIG_MAX_BATCH, that dim
 *     is left out of dims, and dynamic batching is on (no queue delay). Otherwise
 *     max_batch_size is 0 and dims are the graph's, whole;
 *   - every other dynamic dim is -1.
 *
 * The config is written as config.pbtxt text and parsed by proto/model_config.h, so it is
 * validated and packed (for the ModelConfig RPC) exactly as a file would be, and no protobuf
 * type is needed here.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "backends/onnx/onnx_int.h"
#include "common/text.h"

#define PREFIX "model '%s' (config auto-complete)"

/* A dim the graph leaves open: symbolic or absent (the loader's -1), or 0, which some
 * exporters write for "unknown". */
static bool dynamic_dim(int64_t d)
{
    return d <= 0;
}

/*
 * Appends s as the inside of a text-format string: quotes and backslashes escaped, other
 * bytes outside printable ASCII as three-digit octal escapes (so a digit after one is not read
 * as part of it).
 */
static void put_escaped(kiln_text *t, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            kiln_text_printf(t, "\\%c", *c);
        else if (*c < 0x20 || *c >= 0x7f)
            kiln_text_printf(t, "\\%03o", *c);
        else
            kiln_text_add(t, (const char *)c, 1);
    }
}

/* One `input { ... }` or `output { ... }`; with `batch` the first dim is left out. */
static void put_io(kiln_text *t, const char *kind, const kiln_onnx_value *v, bool batch)
{
    kiln_text_printf(t, "%s { name: \"", kind);
    put_escaped(t, v->name);
    kiln_text_printf(t, "\" data_type: %s", kiln_dtype_config_name(v->dtype));
    int first = batch ? 1 : 0;
    if (v->rank > first) {
        kiln_text_printf(t, " dims: [");
        for (int d = first; d < v->rank; d++)
            kiln_text_printf(t, "%s %" PRId64, d > first ? "," : "",
                             dynamic_dim(v->dims[d]) ? (int64_t)-1 : v->dims[d]);
        kiln_text_printf(t, " ]");
    }
    kiln_text_printf(t, " }\n");
}

/* The i-th of the graph's inputs then outputs. */
static const kiln_onnx_value *io_value(const kiln_onnx_model *g, size_t i)
{
    return &g->values[i < g->n_inputs ? g->inputs[i] : g->outputs[i - g->n_inputs]];
}

/* Checks that every input and output can go into a config; says whether the graph batches. */
static kiln_status survey(const char *model, const kiln_onnx_model *g, bool *batch, kiln_err *err)
{
    size_t n = g->n_inputs + g->n_outputs;
    *batch = n > 0;
    for (size_t i = 0; i < n; i++) {
        const kiln_onnx_value *v = io_value(g, i);
        const char *what = i < g->n_inputs ? "input" : "output";
        /* the loader refuses element types Kiln has no dtype for; BYTES has no ONNX kernel */
        if (v->dtype == KILN_DTYPE_INVALID || v->dtype == KILN_DTYPE_BYTES)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                PREFIX ": %s '%s' has an element type Kiln cannot serve (%s)",
                                model, what, v->name, kiln_dtype_name(v->dtype));
        if (!v->has_shape)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                PREFIX ": the ONNX graph gives no shape for %s '%s', so its dims "
                                       "cannot be derived (write a config.pbtxt for this model)",
                                model, what, v->name);
        *batch = *batch && v->rank >= 1 && dynamic_dim(v->dims[0]);
    }
    return KILN_OK;
}

kiln_status kiln__onnx_autoconfig(const char *model_name, const char *version_dir,
                                  kiln_model_config **out, kiln_err *err)
{
    *out = NULL;
    char path[4400];
    if ((size_t)snprintf(path, sizeof(path), "%s/model.onnx", version_dir) >= sizeof(path))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, PREFIX ": path too long", model_name);
    kiln_onnx_model *g;
    kiln_status st = kiln_onnx_model_load(path, &g, err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, PREFIX, model_name);
    bool batch;
    st = survey(model_name, g, &batch, err);
    kiln_text t = {0};
    if (st == KILN_OK) {
        kiln_text_printf(&t, "name: \"");
        put_escaped(&t, model_name);
        kiln_text_printf(&t,
                         "\"\nplatform: \"onnxruntime_onnx\"\nbackend: \"onnx\"\n"
                         "max_batch_size: %d\n",
                         batch ? KILN_ONNX_AUTOCONFIG_MAX_BATCH : 0);
        for (size_t i = 0; i < g->n_inputs + g->n_outputs; i++)
            put_io(&t, i < g->n_inputs ? "input" : "output", io_value(g, i), batch);
        if (batch)
            kiln_text_printf(&t, "dynamic_batching { }\n");
        if (t.oom)
            st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, PREFIX ": out of memory", model_name);
    }
    if (st == KILN_OK) {
        char source[KILN_ERR_MSG_MAX / 2];
        snprintf(source, sizeof(source), PREFIX, model_name);
        st = kiln_model_config_parse(t.p, t.len, source, out, err);
    }
    kiln_text_fini(&t);
    kiln_onnx_model_free(g);
    return st;
}
