/*
 * backends/onnx/runtime.c: the ONNX backend's executions (steps in order, with a memory plan
 * per set of input shapes: plan.c; runtime_int.h says how the pieces fit) and its table; load.c
 * loads, run_gpu.c runs on a GPU.
 *
 * Execute looks up the plan for the batch's input shapes. Without one it runs unplanned (each
 * value allocated by its kernel and freed after its last reader), traces the run, and builds
 * the plan for next time; with one, values go in the model's arena and shape-only steps are
 * skipped. Requested outputs are copied into their slots.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "backends/onnx/onnx.h"
#include "backends/onnx/runtime_int.h"
#include "common/alloc.h"
#include "common/log.h"

/* Calls kernel k for step s on inputs ins; moves its outputs into vals. */
kiln_status kiln__onnx_call_kernel(kiln_backend_model *m, const kiln_onnx_step *s,
                                   const kiln_onnx_kernel *k, const kiln_tensor **ins,
                                   kiln_tensor *vals, const kiln_onnx_plan *p, bool gpu,
                                   kiln_err *err)
{
    kiln_tensor *outs = m->scr_out;
    uint64_t *off = m->scr_off, *bytes = m->scr_bytes;
    memset(outs, 0, s->n_out * sizeof(*outs));
    for (size_t j = 0; j < s->n_out; j++) {
        off[j] = p && s->out[j] >= 0 ? p->off[s->out[j]] : KILN_ONNX_UNPLANNED;
        bytes[j] = p && s->out[j] >= 0 ? p->bytes[s->out[j]] : 0;
    }
    /* a CPU kernel on a GPU model writes host memory: not the (device) arena */
    bool arena = p && (gpu || !m->gpu);
    size_t i = (size_t)(s - m->steps);
    bool ws = gpu && p && p->ws_bytes[i] && m->arena;
    m->scr_ws = 0;
    kiln_onnx_call call = {.node = s->node,
                           .opset = m->g->opset,
                           .n_in = s->n_in,
                           .in = ins,
                           .n_out = s->n_out,
                           .out = outs,
                           .act = s->act,
                           .arena = arena ? m->arena : NULL,
                           .out_off = off,
                           .out_bytes = bytes,
                           .gpu = gpu ? m->gpu : NULL,
                           .ws = ws ? (char *)kiln_storage_data(m->arena) + p->ws_off[i] : NULL,
                           .ws_bytes = ws ? p->ws_bytes[i] : 0,
                           .ws_need = &m->scr_ws};
    kiln_status st = k->fn(&call, err);
    if (st == KILN_UNIMPLEMENTED) {
        for (size_t j = 0; j < s->n_out; j++)
            kiln_tensor_fini(&outs[j]);
        return st;
    }
    for (size_t j = 0; st == KILN_OK && j < s->n_out; j++)
        if (s->out[j] >= 0 && !outs[j].storage)
            st = kiln_err_set(
                err, KILN_INVALID_ARGUMENT, "node '%s' (%s): output %zu ('%s') is not one %s makes",
                s->node->name, s->node->op, j,
                (size_t)s->out[j] < m->g->n_values ? m->g->values[s->out[j]].name : "",
                s->node->op);
    for (size_t j = 0; j < s->n_out; j++) {
        if (st == KILN_OK && s->out[j] >= 0) {
            kiln_tensor_fini(&vals[s->out[j]]);
            vals[s->out[j]] = outs[j];
        } else {
            kiln_tensor_fini(&outs[j]);
        }
    }
    return st;
}

kiln_status kiln__onnx_run_step(kiln_backend_model *m, kiln_onnx_step *s, kiln_tensor *vals,
                                const kiln_onnx_plan *p, kiln_err *err)
{
    if (kiln__onnx_step_on_gpu(m, s, vals))
        return kiln__onnx_run_gpu_step(m, s, vals, p, err);
    const kiln_tensor **ins = m->scr_in;
    for (size_t k = 0; k < s->n_in; k++)
        ins[k] = s->in[k] >= 0 ? &vals[s->in[k]] : NULL;
    return kiln__onnx_call_kernel(m, s, s->kernel, ins, vals, p, false, err);
}

/* The plan for the batch's input shapes, or NULL. */
static kiln_onnx_plan *find_plan(kiln_backend_model *m, const kiln_batch *batch)
{
    for (size_t i = 0; i < m->n_plans; i++) {
        kiln_onnx_plan *p = &m->plans[i];
        bool same = true;
        for (uint32_t k = 0; same && k < batch->n_inputs; k++)
            same = kiln_shape_equal(&p->in_shapes[k], &batch->inputs[k].shape);
        if (same) {
            p->used = ++m->clock;
            return p;
        }
    }
    return NULL;
}

/* Frees every plan's CUDA graph and the output views it kept: before memory they point at is
 * replaced (the views would keep the old memory alive; the graphs would write into it). */
void kiln__onnx_drop_graphs(kiln_backend_model *m)
{
    for (size_t i = 0; i < m->n_plans; i++) {
        kiln_onnx_plan *p = &m->plans[i];
        kiln__onnx_gpu_graph_free(p->graph);
        p->graph = NULL;
        for (size_t k = 0; p->gout && k < p->n_gout; k++)
            kiln_tensor_fini(&p->gout[k]);
    }
}

/* Makes the arena big enough for p (between executions: nothing views it then). On a GPU the
 * arena is device memory. */
static kiln_status arena_fit(kiln_backend_model *m, const kiln_onnx_plan *p, kiln_err *err)
{
    if (p->arena_bytes == 0 || (m->arena && kiln_storage_size(m->arena) >= p->arena_bytes))
        return KILN_OK;
    kiln__onnx_drop_graphs(m);
    kiln_storage_unref(m->arena);
    m->arena = NULL;
    m->mem_gen++;
    if (m->gpu)
        return kiln_storage_create_cuda(kiln__onnx_gpu_device(m->gpu), (size_t)p->arena_bytes,
                                        &m->arena, err);
    return kiln_storage_create_heap((size_t)p->arena_bytes, &m->arena, err);
}

/* Keeps a plan built from trace t for the batch's shapes (replacing the least recently used).
 * Failing to build one is not an error: the next execution traces again. */
static void keep_plan(kiln_backend_model *m, kiln_onnx_trace *t, const kiln_batch *batch)
{
    kiln_shape *shapes = kiln_malloc((batch->n_inputs + 1) * sizeof(*shapes));
    if (!shapes)
        return;
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        shapes[k] = batch->inputs[k].shape;
    kiln_onnx_plan p;
    kiln_err e;
    kiln_status st = kiln__onnx_plan_build(m, t, shapes, &p, &e);
    kiln_free(shapes);
    if (st != KILN_OK)
        return;
    size_t slot = m->n_plans;
    if (slot == m->max_plans) {
        slot = 0;
        for (size_t i = 1; i < m->n_plans; i++)
            slot = m->plans[i].used < m->plans[slot].used ? i : slot;
        m->plan_bytes -= kiln__onnx_plan_bytes(&m->plans[slot], m->n_values);
        kiln__onnx_plan_fini(&m->plans[slot], m->n_values);
    } else {
        m->n_plans++;
    }
    p.used = ++m->clock;
    p.no_graph = m->host_copied; /* a run that copies through the host cannot be captured */
    m->plans[slot] = p;
    m->plan_bytes += kiln__onnx_plan_bytes(&p, m->n_values);
    (void)arena_fit(m, &p, &e); /* now, so memory() counts it; else the next run retries */
    if (m->gpu)                 /* the plan's convolutions have their workspaces in the arena */
        kiln__onnx_gpu_ws_release(m->gpu);
    char in0[160] = "none";
    if (batch->n_inputs)
        kiln_shape_format(&batch->inputs[0].shape, in0, sizeof(in0));
    kiln_log_ctx ctx = {.model = m->name};
    /* a model whose shapes keep changing would log a line per batch: the first plans only */
    KILN_LOG_AT(++m->n_built <= m->max_plans ? KILN_LOG_INFO : KILN_LOG_DEBUG, &ctx,
                "memory plan for input shape %s%s: %zu of %zu steps folded for these shapes, "
                "arena %" PRIu64 " bytes (%" PRIu64 " without reuse)%s",
                in0, batch->n_inputs > 1 ? " (first input)" : "", p.n_skipped, m->n_steps,
                p.arena_bytes, p.sum_bytes,
                !m->gpu      ? ""
                : !m->graphs ? ", on the GPU (CUDA graphs off)"
                : p.no_graph ? ", on the GPU (no CUDA graph: a step copies through the host)"
                             : ", on the GPU (a CUDA graph is captured on the next run)");
}

/* Fills vals with the constants (and p's folded values). */
void kiln__onnx_set_consts(const kiln_backend_model *m, const kiln_onnx_plan *p, kiln_tensor *vals)
{
    for (size_t v = 0; v < m->n_values; v++) {
        if (m->consts[v].storage)
            kiln_tensor_share(&m->consts[v], &vals[v]);
        else if (p && p->consts[v].storage)
            kiln_tensor_share(&p->consts[v], &vals[v]);
    }
}

/* Runs the steps (those p does not fold) over vals, freeing each value after its last reader.
 * `check` polls the batch's should_stop between steps. */
kiln_status kiln__onnx_run_steps(kiln_backend_model *m, kiln_batch *batch, const kiln_onnx_plan *p,
                                 kiln_tensor *vals, kiln_onnx_trace *trace, bool check,
                                 kiln_err *err)
{
    kiln_status st = KILN_OK;
    for (size_t i = 0; st == KILN_OK && i < m->n_steps; i++) {
        kiln_onnx_step *s = &m->steps[i];
        if (!p || !p->skip[i]) {
            if (check && batch->should_stop && batch->should_stop(batch->stop_ctx))
                return kiln_err_set(err, KILN_CANCELLED, "stopped: nobody waits for this batch");
            st = kiln__onnx_run_step(m, s, vals, p, err);
            if (st == KILN_OK && trace)
                kiln__onnx_trace_step(trace, m, i, vals);
        }
        for (size_t k = 0; st == KILN_OK && k < s->n_in; k++) {
            int32_t v = s->in[k];
            if (v >= 0 && m->last_use[v] == (int32_t)i && !m->is_output[v])
                kiln_tensor_fini(&vals[v]);
        }
    }
    return st;
}

/* Checks output t against the slot's config output and allocates the slot's result. */
kiln_status kiln__onnx_slot_result(kiln_backend_model *m, kiln_batch *batch, kiln_output_slot *slot,
                                   const kiln_tensor *t, kiln_err *err)
{
    const kiln_model_io *io = &m->cfg->outputs[slot->index];
    if (!t->storage)
        return kiln_err_set(err, KILN_INTERNAL, "output '%s' was not computed", io->name);
    if (t->dtype != io->dtype)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "output '%s': the graph made %s, the config says %s", io->name,
                            kiln_dtype_name(t->dtype), kiln_dtype_name(io->dtype));
    kiln_status st =
        kiln_output_shape_check(m->cfg, slot->index, batch->batch_size, &t->shape, err);
    if (st == KILN_OK)
        st = kiln_output_slot_alloc(slot, io->name, t->dtype, &t->shape, t->byte_size, err);
    return st;
}

kiln_status kiln__onnx_begin_run(kiln_backend_model *m, const kiln_batch *batch, kiln_onnx_run *r,
                                 kiln_err *err)
{
    memset(r, 0, sizeof(*r));
    r->vals = kiln_calloc(m->n_values + 1, sizeof(kiln_tensor));
    if (!r->vals)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    r->p = find_plan(m, batch);
    kiln_err e;
    if (r->p && arena_fit(m, r->p, &e) != KILN_OK)
        r->p = NULL; /* no room for the arena in one block: run unplanned, untraced */
    else if (!r->p)
        r->tracing = kiln__onnx_trace_init(&r->trace, m, &e) == KILN_OK;
    return KILN_OK;
}

kiln_status kiln__onnx_end_run(kiln_backend_model *m, kiln_batch *batch, kiln_status st,
                               kiln_onnx_run *r)
{
    if (st != KILN_OK)
        kiln_batch_release_outputs(batch);
    for (size_t v = 0; v < m->n_values; v++)
        kiln_tensor_fini(&r->vals[v]);
    kiln_free(r->vals);
    if (r->tracing && st == KILN_OK)
        keep_plan(m, &r->trace, batch);
    if (r->tracing)
        kiln__onnx_trace_fini(&r->trace, m->n_values);
    return st;
}

static kiln_status execute_cpu(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    kiln_onnx_run r;
    kiln_status st = kiln__onnx_begin_run(m, batch, &r, err);
    if (st != KILN_OK)
        return st;
    kiln_tensor *vals = r.vals;
    kiln__onnx_set_consts(m, r.p, vals);
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        kiln_tensor_share(&batch->inputs[k], &vals[m->in_value[k]]);
    st = kiln__onnx_run_steps(m, batch, r.p, vals, r.tracing ? &r.trace : NULL, true, err);
    for (uint32_t o = 0; st == KILN_OK && o < batch->n_outputs; o++) {
        kiln_output_slot *slot = &batch->outputs[o];
        const kiln_tensor *t = &vals[m->out_value[slot->index]];
        st = kiln__onnx_slot_result(m, batch, slot, t, err);
        if (st == KILN_OK && t->byte_size)
            memcpy(slot->result.data, t->data, t->byte_size);
    }
    return kiln__onnx_end_run(m, batch, st, &r);
}

kiln_status kiln__onnx_execute(kiln_backend_model *m, kiln_batch *batch, kiln_err *err)
{
    for (uint32_t k = 0; k < batch->n_inputs; k++)
        if (!batch->inputs[k].storage)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "input '%s' is required by the model",
                                m->cfg->inputs[k].name);
    /* a CPU instance (of a model with GPU instances too, say) cannot read device memory */
    for (uint32_t k = 0; !m->gpu && k < batch->n_inputs; k++)
        if (kiln__onnx_on_device(&batch->inputs[k]))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "input '%s' is in CUDA memory, and this instance of the model "
                                "runs on the CPU",
                                m->cfg->inputs[k].name);
    for (uint32_t o = 0; !m->gpu && o < batch->n_outputs; o++)
        if (batch->outputs[o].buffer &&
            kiln_storage_device(batch->outputs[o].buffer).kind != KILN_DEVICE_CPU)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "output '%s' is asked in CUDA memory, and this instance of the "
                                "model runs on the CPU",
                                m->cfg->outputs[batch->outputs[o].index].name);
    return m->gpu ? kiln__onnx_execute_gpu(m, batch, err) : execute_cpu(m, batch, err);
}

static void memory(const kiln_backend_model *m, uint64_t *host_bytes, uint64_t *device_bytes)
{
    /* O(inputs): the registry asks after every execution */
    uint64_t arena = m->arena ? kiln_storage_size(m->arena) : 0;
    *host_bytes = m->const_bytes + m->plan_bytes + (m->gpu ? 0 : arena);
    *device_bytes = 0;
    if (!m->gpu)
        return;
    *device_bytes = arena + kiln__onnx_gpu_bytes(m->gpu) + m->dconst_bytes;
    for (size_t k = 0; k < m->cfg->n_inputs; k++) {
        *device_bytes += m->gin[k] ? kiln_storage_size(m->gin[k]) : 0;
        *device_bytes += m->gin16[k] ? kiln_storage_size(m->gin16[k]) : 0;
    }
    *device_bytes += m->gconv ? kiln_storage_size(m->gconv) : 0;
}

void kiln_onnx_stats_get(const kiln_backend_model *m, kiln_onnx_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->n_nodes = m->g->n_nodes;
    out->n_steps = m->n_steps;
    out->n_folded = m->n_folded;
    out->n_bn_folded = m->n_bn_folded;
    out->n_act_fused = m->n_act_fused;
    out->n_bias_fused = m->n_bias_fused;
    out->const_bytes = m->const_bytes;
    out->n_plans = m->n_plans;
    out->arena_bytes = m->arena ? kiln_storage_size(m->arena) : 0;
    const kiln_onnx_plan *last = NULL;
    for (size_t i = 0; i < m->n_plans; i++)
        if (!last || m->plans[i].used > last->used)
            last = &m->plans[i];
    if (last) {
        out->last_plan_arena = last->arena_bytes;
        out->last_plan_sum = last->sum_bytes;
        out->last_plan_skipped = last->n_skipped;
    }
}

const kiln_backend kiln_onnx_backend = {
    .name = "onnx",
    .load = kiln__onnx_load,
    .execute = kiln__onnx_execute,
    .memory = memory,
    .unload = kiln__onnx_unload,
    .autoconfig_file = "model.onnx",
    .autoconfig = kiln__onnx_autoconfig,
};
