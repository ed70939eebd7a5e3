/*
 * backends/onnx/plan.c: memory plans of the ONNX backend.
 *
 * The first execution with a new set of input shapes runs unplanned and is traced: the size of
 * every value, the step that makes it, which values are views of others (Reshape, Squeeze,
 * Identity...: they share their source's buffer, so the source lives as long as its last view),
 * and which values depend on the input shapes only (Shape, and steps whose inputs are all
 * constants or such values: the exporters' Shape -> Gather -> Unsqueeze -> Concat -> Reshape
 * chains). A Shape of a value whose shape depends on input *values* (a Slice whose ends come
 * from an input, and everything computed from it) is not shape-only: it is computed per run. From
 * the trace a plan is built: the shape-only values are kept and their steps are skipped for these
 * shapes; every other value made by a step gets an offset in one arena, so that values alive at the
 * same step never overlap (kiln__onnx_place). A kernel's workspace (cuDNN's, for a convolution on
 * a GPU) is placed too, alive during its step only. Later executions with the same shapes
 * allocate nothing for values or workspaces: kernels place their outputs at the planned offsets
 * (kiln__onnx_alloc) and find their workspace in the call.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/onnx/runtime_int.h"
#include "common/alloc.h"

/* ---------------------------------------------------------------- placement */

static int by_size_desc(const void *a, const void *b)
{
    const kiln_onnx_buf *x = *(kiln_onnx_buf *const *)a, *y = *(kiln_onnx_buf *const *)b;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    return x->first - y->first;
}

static int by_offset(const void *a, const void *b)
{
    const kiln_onnx_buf *x = *(kiln_onnx_buf *const *)a, *y = *(kiln_onnx_buf *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static uint64_t align_up(uint64_t n)
{
    return (n + KILN_ONNX_ALIGN - 1) / KILN_ONNX_ALIGN * KILN_ONNX_ALIGN;
}

kiln_status kiln__onnx_place(kiln_onnx_buf *bufs, size_t n, uint64_t *arena_bytes, kiln_err *err)
{
    *arena_bytes = 0;
    if (n == 0)
        return KILN_OK;
    kiln_onnx_buf **order = kiln_malloc(n * sizeof(*order));
    kiln_onnx_buf **live = kiln_malloc(n * sizeof(*live));
    if (!order || !live) {
        kiln_free(order);
        kiln_free(live);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a memory plan");
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &bufs[i];
    qsort(order, n, sizeof(*order), by_size_desc);
    uint64_t arena = 0;
    for (size_t i = 0; i < n; i++) {
        kiln_onnx_buf *b = order[i];
        size_t n_live = 0; /* placed buffers alive at some step b is */
        for (size_t j = 0; j < i; j++)
            if (order[j]->first <= b->last && b->first <= order[j]->last)
                live[n_live++] = order[j];
        qsort(live, n_live, sizeof(*live), by_offset);
        uint64_t at = 0;
        for (size_t j = 0; j < n_live; j++) {
            if (live[j]->offset >= at + b->bytes)
                break; /* b fits in the gap before live[j] */
            uint64_t end = align_up(live[j]->offset + live[j]->bytes);
            at = end > at ? end : at;
        }
        b->offset = at;
        arena = at + b->bytes > arena ? at + b->bytes : arena;
    }
    kiln_free(order);
    kiln_free(live);
    *arena_bytes = align_up(arena);
    return KILN_OK;
}

/* ---------------------------------------------------------------- trace */

kiln_status kiln__onnx_trace_init(kiln_onnx_trace *t, const kiln_backend_model *m, kiln_err *err)
{
    size_t n_values = m->n_values;
    memset(t, 0, sizeof(*t));
    t->ws = kiln_calloc(m->n_steps + 1, sizeof(*t->ws));
    t->bytes = kiln_calloc(n_values + 1, sizeof(*t->bytes));
    t->first = kiln_malloc((n_values + 1) * sizeof(*t->first));
    t->root = kiln_malloc((n_values + 1) * sizeof(*t->root));
    t->data_shape = kiln_calloc(n_values + 1, sizeof(*t->data_shape));
    t->shape_only = kiln_calloc(n_values + 1, sizeof(*t->shape_only));
    if (!t->ws || !t->bytes || !t->first || !t->root || !t->data_shape || !t->shape_only) {
        kiln__onnx_trace_fini(t, 0);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a plan");
    }
    for (size_t v = 0; v < n_values; v++)
        t->first[v] = t->root[v] = -1;
    return KILN_OK;
}

void kiln__onnx_trace_fini(kiln_onnx_trace *t, size_t n_values)
{
    for (size_t v = 0; t->shape_only && v < n_values; v++)
        kiln_tensor_fini(&t->shape_only[v]);
    kiln_free(t->ws);
    kiln_free(t->bytes);
    kiln_free(t->first);
    kiln_free(t->root);
    kiln_free(t->data_shape);
    kiln_free(t->shape_only);
    memset(t, 0, sizeof(*t));
}

/*
 * The inputs of op that give the shape of its output (a Reshape's target shape, a Slice's
 * starts and ends...), as a bit mask; 0 for ops whose output shape follows from their input
 * shapes alone.
 */
static unsigned shape_args(const char *op)
{
    static const struct {
        const char *op;
        unsigned mask;
    } table[] = {
        {"Reshape", 1u << 1},   {"Expand", 1u << 1},    {"Split", 1u << 1},
        {"Squeeze", 1u << 1},   {"Unsqueeze", 1u << 1}, {"ReduceMean", 1u << 1},
        {"ReduceSum", 1u << 1}, {"Slice", 0x1eu}, /* starts, ends, axes, steps */
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i].op, op) == 0)
            return table[i].mask;
    return 0;
}

void kiln__onnx_trace_step(kiln_onnx_trace *t, const kiln_backend_model *m, size_t i,
                           const kiln_tensor *vals)
{
    const kiln_onnx_step *s = &m->steps[i];
    t->ws[i] = m->scr_ws;
    /* Shape(u) is a constant for these input shapes unless u's shape depends on values */
    bool shape_op = strcmp(s->node->op, "Shape") == 0;
    bool shape_only = shape_op ? s->n_in > 0 && s->in[0] >= 0 && !t->data_shape[s->in[0]] : true;
    bool data_shape = false;
    unsigned args = shape_args(s->node->op);
    for (size_t k = 0; k < s->n_in; k++) {
        int32_t u = s->in[k];
        if (u < 0)
            continue;
        bool known = m->consts[u].storage || t->shape_only[u].storage;
        if (!shape_op && !known)
            shape_only = false;
        if (t->data_shape[u] || (k < 32 && (args >> k & 1u) && !known))
            data_shape = true;
    }
    for (size_t k = 0; k < s->n_out; k++) {
        int32_t v = s->out[k];
        if (v < 0 || !vals[v].storage)
            continue;
        t->bytes[v] = vals[v].byte_size;
        t->first[v] = (int32_t)i;
        t->root[v] = v;
        t->data_shape[v] = data_shape;
        for (size_t j = 0; j < s->n_in; j++) /* a view of an input shares its buffer */
            if (s->in[j] >= 0 && vals[s->in[j]].storage == vals[v].storage)
                t->root[v] = t->root[s->in[j]];
        if (shape_only && vals[v].byte_size <= KILN_ONNX_PLAN_CONST_BYTES) {
            kiln_tensor_share(&vals[v], &t->shape_only[v]);
            t->root[v] = -1;
        }
    }
}

/* ---------------------------------------------------------------- plans */

void kiln__onnx_plan_fini(kiln_onnx_plan *p, size_t n_values)
{
    kiln__onnx_gpu_graph_free(p->graph);
    for (size_t k = 0; p->gout && k < p->n_gout; k++)
        kiln_tensor_fini(&p->gout[k]);
    kiln_free(p->gout);
    for (size_t v = 0; p->consts && v < n_values; v++)
        kiln_tensor_fini(&p->consts[v]);
    kiln_free(p->in_shapes);
    kiln_free(p->skip);
    kiln_free(p->consts);
    kiln_free(p->off);
    kiln_free(p->bytes);
    kiln_free(p->ws_off);
    kiln_free(p->ws_bytes);
    memset(p, 0, sizeof(*p));
}

uint64_t kiln__onnx_plan_bytes(const kiln_onnx_plan *p, size_t n_values)
{
    uint64_t bytes = 0;
    for (size_t v = 0; p->consts && v < n_values; v++)
        bytes += p->consts[v].storage ? p->consts[v].byte_size : 0;
    return bytes;
}

kiln_status kiln__onnx_plan_build(const kiln_backend_model *m, kiln_onnx_trace *t,
                                  const kiln_shape *in_shapes, kiln_onnx_plan *p, kiln_err *err)
{
    size_t nv = m->n_values;
    memset(p, 0, sizeof(*p));
    p->in_shapes = kiln_malloc((m->cfg->n_inputs + 1) * sizeof(*p->in_shapes));
    p->skip = kiln_calloc(m->n_steps + 1, sizeof(*p->skip));
    p->consts = kiln_calloc(nv + 1, sizeof(*p->consts));
    p->off = kiln_malloc((nv + 1) * sizeof(*p->off));
    p->bytes = kiln_calloc(nv + 1, sizeof(*p->bytes));
    p->ws_off = kiln_calloc(m->n_steps + 1, sizeof(*p->ws_off));
    p->ws_bytes = kiln_calloc(m->n_steps + 1, sizeof(*p->ws_bytes));
    int32_t *end = kiln_malloc((nv + 1) * sizeof(*end));
    int32_t *buf_of = kiln_malloc((nv + 1) * sizeof(*buf_of));
    kiln_onnx_buf *bufs = kiln_calloc(nv + m->n_steps + 1, sizeof(*bufs));
    kiln_status st = KILN_OK;
    if (!p->in_shapes || !p->skip || !p->consts || !p->off || !p->bytes || !p->ws_off ||
        !p->ws_bytes || !end || !buf_of || !bufs) {
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory for a plan");
        goto done;
    }
    memcpy(p->in_shapes, in_shapes, m->cfg->n_inputs * sizeof(*in_shapes));
    /* a step is skipped when every output it makes is kept as a shape-only value */
    for (size_t i = 0; i < m->n_steps; i++) {
        const kiln_onnx_step *s = &m->steps[i];
        bool all = true;
        for (size_t k = 0; k < s->n_out; k++)
            if (s->out[k] >= 0 && !t->shape_only[s->out[k]].storage)
                all = false;
        p->skip[i] = all;
        p->n_skipped += all;
    }
    /* a buffer lives from the step that makes it to the last step that reads it or a view of
     * it; graph outputs to the end */
    for (size_t v = 0; v < nv; v++) {
        p->off[v] = KILN_ONNX_UNPLANNED;
        end[v] = -1;
        buf_of[v] = -1;
        if (t->shape_only[v].storage)
            kiln_tensor_share(&t->shape_only[v], &p->consts[v]);
    }
    for (size_t v = 0; v < nv; v++) {
        int32_t r = t->root[v];
        if (r < 0 || t->first[v] < 0)
            continue;
        int32_t last = m->is_output[v] ? (int32_t)m->n_steps : m->last_use[v];
        last = last < t->first[v] ? t->first[v] : last;
        end[r] = last > end[r] ? last : end[r];
    }
    size_t n = 0;
    for (size_t v = 0; v < nv; v++) {
        if (t->root[v] != (int32_t)v || t->bytes[v] == 0)
            continue;
        bufs[n] = (kiln_onnx_buf){.bytes = t->bytes[v], .first = t->first[v], .last = end[v]};
        buf_of[v] = (int32_t)n++;
        p->sum_bytes += t->bytes[v];
    }
    /* a step's workspace lives during that step only: it shares the arena with values that
     * are dead by then (its inputs and outputs are alive at the step, so it overlaps neither) */
    size_t ws0 = n;
    for (size_t i = 0; i < m->n_steps; i++) {
        if (p->skip[i] || t->ws[i] == 0)
            continue;
        bufs[n++] = (kiln_onnx_buf){.bytes = t->ws[i], .first = (int32_t)i, .last = (int32_t)i};
        p->sum_bytes += t->ws[i];
    }
    if ((st = kiln__onnx_place(bufs, n, &p->arena_bytes, err)) != KILN_OK)
        goto done;
    for (size_t v = 0; v < nv; v++)
        if (buf_of[v] >= 0) {
            p->off[v] = bufs[buf_of[v]].offset;
            p->bytes[v] = t->bytes[v];
        }
    for (size_t k = ws0; k < n; k++) {
        size_t i = (size_t)bufs[k].first;
        p->ws_off[i] = bufs[k].offset;
        p->ws_bytes[i] = bufs[k].bytes;
    }
done:
    kiln_free(end);
    kiln_free(buf_of);
    kiln_free(bufs);
    if (st != KILN_OK)
        kiln__onnx_plan_fini(p, nv);
    return st;
}
