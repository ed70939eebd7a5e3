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
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backends/onnx/onnx_int.h"
#include "common/alloc.h"

#define PREFIX "model '%s' (config auto-complete)"

/* Room for one input or output line beyond its escaped name. */
#define IO_TEXT_MAX (128 + 24 * KILN_MAX_RANK)

/* A dim the graph leaves open: symbolic or absent (the loader's -1), or 0, which some
 * exporters write for "unknown". */
static bool dynamic_dim(int64_t d)
{
    return d <= 0;
}

typedef struct text {
    char *p;
    size_t len, cap;
} text;

/* Appends printf output; false if it does not fit (the caller sized the buffer: a bug). */
static bool put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool put(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= t->cap - t->len)
        return false;
    t->len += (size_t)w;
    return true;
}

/*
 * Appends s as the inside of a text-format string: quotes and backslashes escaped, other
 * bytes outside printable ASCII as three-digit octal escapes (so a digit after one is not read
 * as part of it). At most 4 bytes per byte of s.
 */
static bool put_escaped(text *t, const char *s)
{
    if (t->cap - t->len <= 4 * strlen(s))
        return false;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            t->p[t->len++] = '\\';
            t->p[t->len++] = (char)*c;
        } else if (*c < 0x20 || *c >= 0x7f) {
            t->p[t->len++] = '\\';
            t->p[t->len++] = (char)('0' + (*c >> 6));
            t->p[t->len++] = (char)('0' + ((*c >> 3) & 7));
            t->p[t->len++] = (char)('0' + (*c & 7));
        } else {
            t->p[t->len++] = (char)*c;
        }
    }
    t->p[t->len] = '\0';
    return true;
}

/* One `input { ... }` or `output { ... }`; with `batch` the first dim is left out. */
static bool put_io(text *t, const char *kind, const kiln_onnx_value *v, bool batch)
{
    bool ok = put(t, "%s { name: \"", kind) && put_escaped(t, v->name) &&
              put(t, "\" data_type: %s", kiln_dtype_config_name(v->dtype));
    int first = batch ? 1 : 0;
    if (ok && v->rank > first) {
        ok = put(t, " dims: [");
        for (int d = first; ok && d < v->rank; d++)
            ok = put(t, "%s %" PRId64, d > first ? "," : "",
                     dynamic_dim(v->dims[d]) ? (int64_t)-1 : v->dims[d]);
        ok = ok && put(t, " ]");
    }
    return ok && put(t, " }\n");
}

/* The i-th of the graph's inputs then outputs. */
static const kiln_onnx_value *io_value(const kiln_onnx_model *g, size_t i)
{
    return &g->values[i < g->n_inputs ? g->inputs[i] : g->outputs[i - g->n_inputs]];
}

/* Checks that every input and output can go into a config; says whether the graph batches. */
static kiln_status survey(const char *model, const kiln_onnx_model *g, bool *batch, size_t *cap,
                          kiln_err *err)
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
        *cap += 4 * strlen(v->name) + IO_TEXT_MAX;
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
    size_t cap = 4 * strlen(model_name) + 256;
    st = survey(model_name, g, &batch, &cap, err);
    text t = {.p = st == KILN_OK ? kiln_malloc(cap) : NULL, .cap = cap};
    if (st == KILN_OK && !t.p)
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, PREFIX ": out of memory", model_name);
    if (st == KILN_OK) {
        bool ok = put(&t, "name: \"") && put_escaped(&t, model_name) &&
                  put(&t,
                      "\"\nplatform: \"onnxruntime_onnx\"\nbackend: \"onnx\"\n"
                      "max_batch_size: %d\n",
                      batch ? KILN_ONNX_AUTOCONFIG_MAX_BATCH : 0);
        for (size_t i = 0; ok && i < g->n_inputs + g->n_outputs; i++)
            ok = put_io(&t, i < g->n_inputs ? "input" : "output", io_value(g, i), batch);
        if (ok && batch)
            ok = put(&t, "dynamic_batching { }\n");
        if (!ok)
            st = kiln_err_set(err, KILN_INTERNAL, PREFIX ": the config text outgrew its buffer",
                              model_name);
    }
    if (st == KILN_OK) {
        char source[KILN_ERR_MSG_MAX / 2];
        snprintf(source, sizeof(source), PREFIX, model_name);
        st = kiln_model_config_parse(t.p, t.len, source, out, err);
    }
    kiln_free(t.p);
    kiln_onnx_model_free(g);
    return st;
}
