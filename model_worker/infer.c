/*
 * model_worker/infer.c: one inference request: validation against the model config (on the
 * transport's thread), execution on a sandboxed thread, the response.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "model_worker/worker_int.h"
#include "sandbox/sandbox.h"

/* The validation state of one request: a pending request being filled in. */
typedef kiln_pending infer_job;

void kiln__pending_free(kiln_pending *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->inputs && i < j->n_inputs; i++)
        kiln_tensor_fini(&j->inputs[i]);
    for (uint32_t i = 0; j->slots && i < j->n_slots; i++) {
        kiln_tensor_fini(&j->slots[i].result);
        kiln_storage_unref(j->slots[i].buffer);
    }
    kiln_free(j->inputs);
    kiln_free(j->slots);
    kiln_model_release(j->model);
    kiln_free(j);
}

static void release_request_data(kiln_infer_request *req)
{
    for (size_t i = 0; i < req->n_inputs; i++) {
        kiln_storage_unref(req->inputs[i].data);
        req->inputs[i].data = NULL;
    }
}

kiln_status kiln_version_parse(const char *s, const char *field, int64_t *out, kiln_err *err)
{
    *out = 0;
    if (!s || !*s)
        return KILN_OK;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 1 || strlen(s) > 18)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s '%.32s' is not a version number (digits, >= 1)", field, s);
    *out = v;
    return KILN_OK;
}

static int find_io(const kiln_model_io *io, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(io[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Checks one input's shape against the config; sets *batch (0 without a batch dim). */
static kiln_status check_shape(const kiln_model_config *cfg, const kiln_model_io *io,
                               const kiln_shape *s, uint32_t *batch, kiln_err *err)
{
    char sb[128];
    kiln_shape pattern = io->dims;
    if (cfg->max_batch_size > 0) {
        if (s->rank != io->dims.rank + 1)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "shape %s has rank %d; the model takes [batch] + %d dims",
                                kiln_shape_format(s, sb, sizeof(sb)), s->rank, io->dims.rank);
        int64_t b = s->dims[0];
        if (b < 1 || b > cfg->max_batch_size)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "batch size %" PRId64 " is outside 1..%d (max_batch_size)", b,
                                cfg->max_batch_size);
        if (*batch && *batch != (uint32_t)b)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "batch size %" PRId64 " differs from the other inputs' %u", b,
                                *batch);
        *batch = (uint32_t)b;
        memmove(pattern.dims + 1, pattern.dims, sizeof(int64_t) * (size_t)pattern.rank);
        pattern.dims[0] = b;
        pattern.rank++;
    }
    return kiln_shape_match(&pattern, s, err);
}

static kiln_status acquire_region(kiln_engine *e, const char *name, kiln_shm_region **out,
                                  kiln_err *err)
{
    if (!e->opt.allow_shm)
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "shared memory region '%.128s': system shared memory is not "
                            "available on this server; send the tensor inline",
                            name);
    kiln_status st = kiln_shm_acquire(e->shm, name, out, err);
    if (st == KILN_NOT_FOUND && !kiln_shm_registry_available(e->shm))
        return kiln_err_set(err, KILN_UNAVAILABLE,
                            "shared memory region '%.128s': system shared memory is not "
                            "available on this server; send the tensor inline",
                            name);
    return st;
}

/* Resolves input i of the request into job->inputs[k]. */
static kiln_status take_input(infer_job *j, size_t i, kiln_err *err)
{
    kiln_infer_input *in = &j->req->inputs[i];
    const kiln_model_config *cfg = j->cfg;
    const char *name = in->name ? in->name : "";
    if (!name[0])
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "inputs[%zu]: name is empty", i);
    int k = find_io(cfg->inputs, cfg->n_inputs, name);
    if (k < 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': model '%s' has no input of that name", i, name,
                            cfg->name);
    const kiln_model_io *io = &cfg->inputs[k];
    if (j->inputs[k].storage)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "inputs[%zu] '%s' is given twice", i, name);
    kiln_dtype dt;
    if (kiln_dtype_parse(in->datatype, &dt, err) != KILN_OK)
        return kiln_err_prefix(err, KILN_INVALID_ARGUMENT, "inputs[%zu] '%s'", i, name);
    if (dt != io->dtype)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': datatype %s does not match the model's %s", i, name,
                            kiln_dtype_name(dt), kiln_dtype_name(io->dtype));
    kiln_shape s;
    kiln_status st;
    if ((st = kiln_shape_set(&s, in->shape, in->rank, err)) != KILN_OK ||
        (st = check_shape(cfg, io, &s, &j->rows, err)) != KILN_OK)
        return kiln_err_prefix(err, st, "inputs[%zu] '%s'", i, name);
    uint64_t numel;
    if ((st = kiln_shape_numel(&s, &numel, err)) != KILN_OK)
        return kiln_err_prefix(err, st, "inputs[%zu] '%s'", i, name);
    if (dt != KILN_DTYPE_BYTES) {
        uint64_t bytes;
        st = kiln_shape_byte_size(dt, &s, j->e->opt.max_tensor_bytes, &bytes, err);
        if (st != KILN_OK)
            return kiln_err_prefix(err, st, "inputs[%zu] '%s'", i, name);
    }
    if (in->shm_region && in->data)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': data is given both inline and in shared memory", i,
                            name);
    if (in->shm_region) {
        if (!in->has_shm_byte_size || in->shm_byte_size < 0 || in->shm_offset < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': shared_memory_byte_size (>= 0) is required "
                                "with shared_memory_region, and shared_memory_offset must be >= 0",
                                i, name);
        if ((uint64_t)in->shm_byte_size > j->e->opt.max_tensor_bytes)
            return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                                "inputs[%zu] '%s': %" PRId64 " bytes pass the limit of %" PRIu64, i,
                                name, in->shm_byte_size, j->e->opt.max_tensor_bytes);
        kiln_shm_region *r;
        if ((st = acquire_region(j->e, in->shm_region, &r, err)) != KILN_OK)
            return kiln_err_prefix(err, st, "inputs[%zu] '%s'", i, name);
        st = kiln_shm_view(r, (uint64_t)in->shm_offset, (uint64_t)in->shm_byte_size, dt, &s,
                           &j->inputs[k], err);
        kiln_shm_region_release(r); /* the view holds the region now */
        return st == KILN_OK ? st : kiln_err_prefix(err, st, "inputs[%zu] '%s'", i, name);
    }
    if (!in->data)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s' has no data: give raw_input_contents, contents or "
                            "shared memory parameters",
                            i, name);
    if (in->data_size > j->e->opt.max_tensor_bytes)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "inputs[%zu] '%s': %zu bytes pass the limit of %" PRIu64, i, name,
                            in->data_size, j->e->opt.max_tensor_bytes);
    st = kiln_tensor_view(in->data, 0, dt, &s, in->data_size, &j->inputs[k], err);
    if (st != KILN_OK) {
        /* say it the protocol's way: the byte count does not fit the shape */
        return kiln_err_prefix(err, st, "inputs[%zu] '%s'", i, name);
    }
    return KILN_OK;
}

static kiln_status take_outputs(infer_job *j, kiln_err *err)
{
    const kiln_model_config *cfg = j->cfg;
    kiln_infer_request *req = j->req;
    j->n_slots = req->n_outputs ? (uint32_t)req->n_outputs : (uint32_t)cfg->n_outputs;
    j->slots = kiln_calloc(j->n_slots, sizeof(*j->slots));
    if (!j->slots)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    if (!req->n_outputs) {
        for (uint32_t i = 0; i < j->n_slots; i++)
            j->slots[i].index = i;
        return KILN_OK;
    }
    for (size_t i = 0; i < req->n_outputs; i++) {
        kiln_infer_output_req *o = &req->outputs[i];
        const char *name = o->name ? o->name : "";
        int k = find_io(cfg->outputs, cfg->n_outputs, name);
        if (k < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "outputs[%zu] '%s': model '%s' has no output of that name", i, name,
                                cfg->name);
        for (size_t p = 0; p < i; p++)
            if (j->slots[p].index == (uint32_t)k)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "outputs[%zu] '%s' is requested twice", i, name);
        j->slots[i].index = (uint32_t)k;
        if (!o->shm_region)
            continue;
        if (!o->has_shm_byte_size || o->shm_byte_size < 0 || o->shm_offset < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "outputs[%zu] '%s': shared_memory_byte_size (>= 0) is required "
                                "with shared_memory_region, and shared_memory_offset must be >= 0",
                                i, name);
        kiln_shm_region *r;
        kiln_status st = acquire_region(j->e, o->shm_region, &r, err);
        if (st == KILN_OK) {
            st = kiln_shm_region_slice(r, (uint64_t)o->shm_offset, (uint64_t)o->shm_byte_size,
                                       &j->slots[i].buffer, err);
            kiln_shm_region_release(r);
        }
        if (st != KILN_OK)
            return kiln_err_prefix(err, st, "outputs[%zu] '%s'", i, name);
        j->slots[i].offset = 0;
        j->slots[i].capacity = (size_t)o->shm_byte_size;
    }
    return KILN_OK;
}

void kiln__pending_finish(kiln_pending *j, kiln_status st, const kiln_err *err)
{
    kiln_infer_request *req = j->req;
    if (j->model && j->enqueued_ns) {
        uint64_t now = kiln_clock_now_ns();
        uint64_t queued = (j->started_ns ? j->started_ns : now) - j->enqueued_ns;
        uint64_t e2e = now - j->enqueued_ns;
        kiln_model_record_request(j->model, st == KILN_OK, queued, e2e, req->copied_in_bytes,
                                  st == KILN_OK ? j->copied_out : 0);
        uint64_t slow = j->e->opt.slow_request_ns;
        if (slow && e2e > slow)
            KILN_LOGW(&((kiln_log_ctx){.request_id = req->request_id,
                                       .model = kiln_model_name(j->model)}),
                      "slow request: %.3f ms end to end (%.3f ms queued, %.3f ms in its batch), "
                      "%s; over --slow-request-ms %.0f",
                      (double)e2e / 1e6, (double)queued / 1e6, (double)(e2e - queued) / 1e6,
                      kiln_status_name(st), (double)slow / 1e6);
    }
    if (st != KILN_OK) {
        req->done(req->done_ctx, NULL, st, err);
        kiln__pending_free(j);
        return;
    }
    kiln_infer_response *res = kiln_calloc(1, sizeof(*res));
    kiln_infer_output *outs = kiln_calloc(j->n_slots ? j->n_slots : 1, sizeof(*outs));
    if (!res || !outs) {
        kiln_free(res);
        kiln_free(outs);
        kiln_err e;
        kiln_err_set(&e, KILN_RESOURCE_EXHAUSTED, "out of memory for the response");
        req->done(req->done_ctx, NULL, KILN_RESOURCE_EXHAUSTED, &e);
        kiln__pending_free(j);
        return;
    }
    res->model_name = kiln_model_name(j->model);
    res->version = kiln_model_version(j->model);
    res->n_outputs = j->n_slots;
    res->outputs = outs;
    res->copied_in_bytes = req->copied_in_bytes;
    res->copied_out_bytes = j->copied_out;
    for (uint32_t i = 0; i < j->n_slots; i++) {
        outs[i].name = j->cfg->outputs[j->slots[i].index].name;
        outs[i].tensor = j->slots[i].result; /* moved */
        memset(&j->slots[i].result, 0, sizeof(j->slots[i].result));
        outs[i].in_shm = j->slots[i].buffer != NULL;
    }
    /* the output names point into the config: keep the pin until the response goes */
    res->pin = j->model;
    j->model = NULL;
    req->done(req->done_ctx, res, KILN_OK, NULL);
    kiln__pending_free(j);
}

kiln_status kiln_engine_infer(kiln_engine *e, kiln_infer_request *req, kiln_err *err)
{
    int64_t version;
    kiln_status st = kiln_version_parse(req->version, "model_version", &version, err);
    kiln_model *m = NULL;
    if (st == KILN_OK)
        st = kiln_registry_acquire(e->registry, req->model ? req->model : "", version, &m, err);
    if (st != KILN_OK) {
        release_request_data(req);
        return st;
    }
    infer_job *j = kiln_calloc(1, sizeof(*j));
    if (!j) {
        kiln_model_release(m);
        release_request_data(req);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    j->e = e;
    j->req = req;
    j->model = m;
    j->cfg = kiln_model_get_config(m);
    j->n_inputs = j->cfg->n_inputs;
    j->inputs = kiln_calloc(j->cfg->n_inputs ? j->cfg->n_inputs : 1, sizeof(kiln_tensor));
    if (!j->inputs)
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; st == KILN_OK && i < req->n_inputs; i++)
        st = take_input(j, i, err);
    for (size_t k = 0; st == KILN_OK && k < j->cfg->n_inputs; k++)
        if (!j->inputs[k].storage && !j->cfg->inputs[k].optional)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "model '%s' needs input '%s', which the request does not give",
                              j->cfg->name, j->cfg->inputs[k].name);
    if (st == KILN_OK)
        st = take_outputs(j, err);
    /* the views hold what they need; the request's own references go now */
    release_request_data(req);
    if (st == KILN_OK) {
        /* a request whose inputs are all optional and absent still counts as one row */
        j->rows = j->cfg->max_batch_size > 0 && j->rows ? j->rows : 1;
        j->enqueued_ns = kiln_clock_now_ns();
        j->deadline_ns = req->deadline_ns;
        uint64_t timeout_us = j->cfg->default_timeout_us;
        if (req->timeout_us && j->cfg->allow_timeout_override)
            timeout_us = req->timeout_us;
        /* a timeout too long to represent is no timeout */
        if (timeout_us && !j->cfg->queue_timeout_delays &&
            timeout_us <= (UINT64_MAX - j->enqueued_ns) / KILN_NS_PER_US)
            j->queue_deadline_ns = j->enqueued_ns + timeout_us * KILN_NS_PER_US;
        st = kiln__sched_enqueue(e, j, err);
    }
    if (st != KILN_OK)
        kiln__pending_free(j);
    return st;
}

void kiln_infer_response_release(kiln_infer_response *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->n_outputs; i++)
        kiln_tensor_fini(&res->outputs[i].tensor);
    kiln_free(res->outputs);
    kiln_model_release(res->pin);
    kiln_free(res);
}
