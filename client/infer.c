/*
 * client/infer.c: ModelInfer. Input bytes travel as raw_input_contents, pointed at (not
 * copied) while the request is packed; outputs are read as views into the unpacked response.
 */
#include "client/client_int.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "proto/grpc_service.kiln.h"

#define CSTR(s) ((char *)(uintptr_t)(s))

typedef Inference__ModelInferRequest__InferInputTensor in_tensor;
typedef Inference__ModelInferRequest__InferInputTensor__ParametersEntry in_param;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor out_tensor;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry out_param;

/* The protobuf-c structures of one input or output, with room for the three shared-memory
 * parameters (region, byte size, offset). */
typedef struct in_slot {
    in_tensor t;
    in_param pe[3];
    in_param *pp[3];
    Inference__InferParameter pv[3];
    int64_t shape[KILN_CLIENT_MAX_RANK];
} in_slot;

typedef struct out_slot {
    out_tensor t;
    out_param pe[3];
    out_param *pp[3];
    Inference__InferParameter pv[3];
} out_slot;

typedef struct out_view {
    const void *data;
    size_t size;
    void *owned;      /* bytes converted from typed contents */
    char *shm_region; /* a copy: the request's strings need not outlive the result */
    size_t shm_offset;
} out_view;

struct kiln_client_result {
    Inference__ModelInferResponse *resp;
    out_view *v; /* resp->n_outputs */
};

static void shape_text(const int64_t *s, int rank, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    o += (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < rank && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, d ? "," : "", s[d]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

/* Checks one input; OUT: *bytes, its byte size (a shared-memory window left at 0 gets the
 * size its shape needs). */
static kiln_status check_input(const kiln_client_tensor *t, size_t i, size_t *bytes, kiln_err *err)
{
    if (!t->name || !*t->name)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "inputs[%zu]: name is empty", i);
    int esize = kiln__dtype_size(t->datatype);
    if (esize < 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': datatype '%s' is not a KServe v2 datatype", i,
                            t->name, t->datatype ? t->datatype : "(null)");
    if (t->rank < 0 || t->rank > KILN_CLIENT_MAX_RANK)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': rank %d is outside 0..%d", i, t->name, t->rank,
                            KILN_CLIENT_MAX_RANK);
    uint64_t elems = 1;
    for (int d = 0; d < t->rank; d++) {
        if (t->shape[d] < 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': shape[%d] = %" PRId64 " is negative", i, t->name,
                                d, t->shape[d]);
        uint64_t n = (uint64_t)t->shape[d];
        if (n && elems > (UINT64_MAX / 16) / n)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': element count overflows at shape[%d]", i,
                                t->name, d);
        elems *= n;
    }
    *bytes = t->byte_size;
    if (esize > 0) {
        uint64_t want = elems * (uint64_t)esize;
        if (t->shm_region && t->byte_size == 0 && want <= SIZE_MAX)
            *bytes = (size_t)want;
        if ((uint64_t)*bytes != want) {
            char s[160];
            shape_text(t->shape, t->rank, s, sizeof(s));
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': byte_size %zu does not match shape %s of %s "
                                "(%" PRIu64 " bytes)",
                                i, t->name, t->byte_size, s, t->datatype, want);
        }
    }
    if (t->shm_region) {
        if (!*t->shm_region)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "inputs[%zu] '%s': shm_region is empty",
                                i, t->name);
        if (*bytes == 0)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': a shared-memory input needs byte_size", i,
                                t->name);
        if (t->shm_offset > INT64_MAX || *bytes > INT64_MAX)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': shm_offset or byte_size is over INT64_MAX", i,
                                t->name);
    } else if (!t->data && t->byte_size) {
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': data is NULL with byte_size %zu", i, t->name,
                            t->byte_size);
    }
    return KILN_OK;
}

static const char *const shm_keys[3] = {"shared_memory_region", "shared_memory_byte_size",
                                        "shared_memory_offset"};

/* The values of the shared_memory_* parameters (keys in shm_keys); returns how many are set
 * (the offset only when not 0). */
static size_t shm_values(Inference__InferParameter pv[3], const char *region, size_t offset,
                         size_t size)
{
    pv[0].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    pv[0].string_param = CSTR(region);
    pv[1].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pv[1].int64_param = (int64_t)size;
    pv[2].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pv[2].int64_param = (int64_t)offset;
    return offset ? 3 : 2;
}

static void init_in_slot(in_slot *s)
{
    inference__model_infer_request__infer_input_tensor__init(&s->t);
    for (int k = 0; k < 3; k++) {
        inference__model_infer_request__infer_input_tensor__parameters_entry__init(&s->pe[k]);
        inference__infer_parameter__init(&s->pv[k]);
    }
}

static void init_out_slot(out_slot *s)
{
    inference__model_infer_request__infer_requested_output_tensor__init(&s->t);
    for (int k = 0; k < 3; k++) {
        inference__model_infer_request__infer_requested_output_tensor__parameters_entry__init(
            &s->pe[k]);
        inference__infer_parameter__init(&s->pv[k]);
    }
}

static kiln_status check_output(const kiln_client_output *o, size_t i, kiln_err *err)
{
    if (!o->name || !*o->name)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "outputs[%zu]: name is empty", i);
    if (o->shm_region) {
        if (!*o->shm_region)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "outputs[%zu] '%s': shm_region is empty", i, o->name);
        if (o->shm_byte_size == 0 || o->shm_byte_size > INT64_MAX || o->shm_offset > INT64_MAX)
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "outputs[%zu] '%s': a shared-memory output needs shm_byte_size "
                                "(1..INT64_MAX) and shm_offset <= INT64_MAX",
                                i, o->name);
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- results */

/* The typed-contents array a datatype travels in: OUT: *n values of *stride bytes each. */
static const void *typed_array(const Inference__InferTensorContents *c, const char *dt, size_t *n,
                               size_t *stride)
{
    static const struct {
        const char *dt;
        size_t n_off, arr_off, stride;
    } map[] = {
#define T(name, field, type)                                                                       \
    {name, offsetof(Inference__InferTensorContents, n_##field),                                    \
     offsetof(Inference__InferTensorContents, field), sizeof(type)}
        T("BOOL", bool_contents, protobuf_c_boolean),
        T("INT8", int_contents, int32_t),
        T("INT16", int_contents, int32_t),
        T("INT32", int_contents, int32_t),
        T("INT64", int64_contents, int64_t),
        T("UINT8", uint_contents, uint32_t),
        T("UINT16", uint_contents, uint32_t),
        T("UINT32", uint_contents, uint32_t),
        T("UINT64", uint64_contents, uint64_t),
        T("FP32", fp32_contents, float),
        T("FP64", fp64_contents, double),
#undef T
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].dt, dt) == 0) {
            *n = *(const size_t *)((const char *)c + map[i].n_off);
            *stride = map[i].stride;
            return *(const void *const *)((const char *)c + map[i].arr_off);
        }
    *n = 0; /* FP16 and BF16 have no typed form */
    *stride = 0;
    return NULL;
}

/* Bytes of one output given in typed contents instead of raw_output_contents (servers may
 * answer either way). BYTES elements get their 4-byte little-endian length prefixes; narrower
 * integers keep the low bytes of their 32-bit carriers (little-endian host). */
static kiln_status typed_to_raw(const Inference__ModelInferResponse__InferOutputTensor *o, size_t i,
                                out_view *v, kiln_err *err)
{
    const Inference__InferTensorContents *c = o->contents;
    int esize = kiln__dtype_size(o->datatype);
    if (esize < 0)
        return kiln_err_set(err, KILN_INTERNAL,
                            "outputs[%zu] '%s': the server sent datatype '%s', not a KServe v2 "
                            "datatype",
                            i, o->name, o->datatype);
    size_t n = 0, stride = 0, total = 0;
    const uint8_t *src = NULL;
    if (esize == 0) {
        n = c->n_bytes_contents;
        for (size_t k = 0; k < n; k++) {
            if (c->bytes_contents[k].len > UINT32_MAX)
                return kiln_err_set(err, KILN_INTERNAL,
                                    "outputs[%zu] '%s': element %zu is over 4 GiB", i, o->name, k);
            total += 4 + c->bytes_contents[k].len;
        }
    } else {
        src = typed_array(c, o->datatype, &n, &stride);
        total = n * (size_t)esize;
    }
    uint8_t *p = kiln_malloc(total ? total : 1);
    if (!p)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    size_t off = 0;
    for (size_t k = 0; k < n; k++) {
        if (esize == 0) {
            uint32_t len = (uint32_t)c->bytes_contents[k].len;
            for (int b = 0; b < 4; b++)
                p[off++] = (uint8_t)(len >> (8 * b));
            if (len)
                memcpy(p + off, c->bytes_contents[k].data, len);
            off += len;
        } else if (strcmp(o->datatype, "BOOL") == 0) {
            p[off++] = ((const protobuf_c_boolean *)(const void *)src)[k] ? 1 : 0;
        } else {
            memcpy(p + off, src + k * stride, (size_t)esize);
            off += (size_t)esize;
        }
    }
    v->owned = p;
    v->data = p;
    v->size = total;
    return KILN_OK;
}

static const char *
param_string(size_t n, Inference__ModelInferResponse__InferOutputTensor__ParametersEntry **pe,
             const char *key)
{
    for (size_t k = 0; k < n; k++)
        if (pe[k]->key && strcmp(pe[k]->key, key) == 0 && pe[k]->value &&
            pe[k]->value->parameter_choice_case ==
                INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
            return pe[k]->value->string_param;
    return NULL;
}

/* Takes resp (freed on error too). */
static kiln_status make_result(Inference__ModelInferResponse *resp,
                               const kiln_client_output *outputs, size_t n_outputs,
                               kiln_client_result **out, kiln_err *err)
{
    kiln_client_result *r = kiln_calloc(1, sizeof(*r));
    if (!r) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    r->resp = resp;
    r->v = kiln_calloc(resp->n_outputs ? resp->n_outputs : 1, sizeof(*r->v));
    kiln_status st = r->v ? KILN_OK : kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    bool raw = resp->n_raw_output_contents == resp->n_outputs;
    for (size_t i = 0; st == KILN_OK && i < resp->n_outputs; i++) {
        const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
        out_view *v = &r->v[i];
        const char *region = param_string(o->n_parameters, o->parameters, "shared_memory_region");
        for (size_t k = 0; k < n_outputs; k++)
            if (outputs[k].shm_region && strcmp(outputs[k].name, o->name) == 0) {
                region = outputs[k].shm_region;
                v->shm_offset = outputs[k].shm_offset;
                v->size = outputs[k].shm_byte_size;
            }
        if (region) {
            if (!(v->shm_region = kiln_strdup(region)))
                st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
        } else if (raw) {
            v->data = resp->raw_output_contents[i].data;
            v->size = resp->raw_output_contents[i].len;
        } else if (o->contents) {
            st = typed_to_raw(o, i, v, err);
        }
    }
    if (st != KILN_OK) {
        kiln_client_result_free(r);
        return st;
    }
    *out = r;
    return KILN_OK;
}

int kiln_client_infer(kiln_client *c, const char *model, const kiln_client_tensor *inputs,
                      size_t n_inputs, const kiln_client_output *outputs, size_t n_outputs,
                      const kiln_client_infer_options *opts, kiln_client_result **result,
                      kiln_client_error *err)
{
    kiln_err e = {0};
    if (!c || !result)
        return kiln__client_null(err, c ? "result" : "the client");
    *result = NULL;
    if (kiln__client_check_name(err, model, "model name") != 0)
        return KILN_INVALID_ARGUMENT;
    if ((n_inputs && !inputs) || (n_outputs && !outputs))
        return kiln__client_out(err,
                                kiln_err_set(&e, KILN_INVALID_ARGUMENT,
                                             "%s is NULL with a count of %zu",
                                             n_inputs && !inputs ? "inputs" : "outputs",
                                             n_inputs && !inputs ? n_inputs : n_outputs),
                                &e);
    size_t *bytes = kiln_calloc(n_inputs ? n_inputs : 1, sizeof(*bytes));
    in_slot *is = kiln_calloc(n_inputs ? n_inputs : 1, sizeof(*is));
    in_tensor **ip = kiln_calloc(n_inputs ? n_inputs : 1, sizeof(*ip));
    ProtobufCBinaryData *raw = kiln_calloc(n_inputs ? n_inputs : 1, sizeof(*raw));
    out_slot *os = kiln_calloc(n_outputs ? n_outputs : 1, sizeof(*os));
    out_tensor **op = kiln_calloc(n_outputs ? n_outputs : 1, sizeof(*op));
    kiln_status st = KILN_OK;
    if (!bytes || !is || !ip || !raw || !os || !op)
        st = kiln_err_set(&e, KILN_RESOURCE_EXHAUSTED, "out of memory");
    bool any_data = false;
    for (size_t i = 0; st == KILN_OK && i < n_inputs; i++) {
        const kiln_client_tensor *t = &inputs[i];
        if ((st = check_input(t, i, &bytes[i], &e)) != KILN_OK)
            break;
        in_slot *s = &is[i];
        init_in_slot(s);
        s->t.name = CSTR(t->name);
        s->t.datatype = CSTR(t->datatype);
        memcpy(s->shape, t->shape, sizeof(int64_t) * (size_t)t->rank);
        s->t.n_shape = (size_t)t->rank;
        s->t.shape = s->shape;
        if (t->shm_region) {
            size_t np = shm_values(s->pv, t->shm_region, t->shm_offset, bytes[i]);
            for (size_t k = 0; k < np; k++) {
                s->pe[k].key = CSTR(shm_keys[k]);
                s->pe[k].value = &s->pv[k];
                s->pp[k] = &s->pe[k];
            }
            s->t.n_parameters = np;
            s->t.parameters = s->pp;
        } else {
            any_data = true;
            raw[i].len = t->byte_size;
            raw[i].data = (uint8_t *)(uintptr_t)t->data;
        }
        ip[i] = &s->t;
    }
    for (size_t i = 0; st == KILN_OK && i < n_outputs; i++) {
        const kiln_client_output *o = &outputs[i];
        if ((st = check_output(o, i, &e)) != KILN_OK)
            break;
        out_slot *s = &os[i];
        init_out_slot(s);
        s->t.name = CSTR(o->name);
        if (o->shm_region) {
            size_t np = shm_values(s->pv, o->shm_region, o->shm_offset, o->shm_byte_size);
            for (size_t k = 0; k < np; k++) {
                s->pe[k].key = CSTR(shm_keys[k]);
                s->pe[k].value = &s->pv[k];
                s->pp[k] = &s->pe[k];
            }
            s->t.n_parameters = np;
            s->t.parameters = s->pp;
        }
        op[i] = &s->t;
    }
    Inference__ModelInferResponse *resp = NULL;
    if (st == KILN_OK) {
        Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
        req.model_name = CSTR(model);
        if (opts && opts->version)
            req.model_version = CSTR(opts->version);
        if (opts && opts->request_id)
            req.id = CSTR(opts->request_id);
        req.n_inputs = n_inputs;
        req.inputs = ip;
        req.n_outputs = n_outputs;
        req.outputs = op;
        /* one raw entry per input (empty for shared-memory ones) when any input has bytes */
        req.n_raw_input_contents = any_data ? n_inputs : 0;
        req.raw_input_contents = raw;
        kiln__retry r;
        kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, opts ? opts->timeout_ms : 0);
        do
            st = inference__grpcinference_service__model_infer__call(c->ch, &req, &resp, &r.opts,
                                                                     &e);
        while (kiln__retry_again(&r, st, &e));
    }
    kiln_free(bytes), kiln_free(is), kiln_free(ip), kiln_free(raw), kiln_free(os), kiln_free(op);
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    st = make_result(resp, outputs, n_outputs, result, &e);
    return kiln__client_out(err, st, &e);
}

size_t kiln_client_result_count(const kiln_client_result *r)
{
    return r ? r->resp->n_outputs : 0;
}

int kiln_client_result_output(const kiln_client_result *r, size_t i, kiln_client_tensor *out,
                              kiln_client_error *err)
{
    kiln_err e = {0};
    if (!r || !out)
        return kiln__client_null(err, r ? "out" : "the result");
    memset(out, 0, sizeof(*out));
    if (i >= r->resp->n_outputs)
        return kiln__client_out(err,
                                kiln_err_set(&e, KILN_NOT_FOUND,
                                             "output index %zu is out of range (the result "
                                             "has %zu outputs)",
                                             i, r->resp->n_outputs),
                                &e);
    const Inference__ModelInferResponse__InferOutputTensor *o = r->resp->outputs[i];
    if (o->n_shape > KILN_CLIENT_MAX_RANK)
        return kiln__client_out(err,
                                kiln_err_set(&e, KILN_OUT_OF_RANGE,
                                             "output '%s': rank %zu is over %d", o->name,
                                             o->n_shape, KILN_CLIENT_MAX_RANK),
                                &e);
    const out_view *v = &r->v[i];
    out->name = o->name;
    out->datatype = o->datatype;
    out->rank = (int)o->n_shape;
    for (size_t d = 0; d < o->n_shape; d++)
        out->shape[d] = o->shape[d];
    out->data = v->data;
    out->byte_size = v->size;
    out->shm_region = v->shm_region;
    out->shm_offset = v->shm_offset;
    if (v->shm_region) {
        /* what the server wrote: the shape's bytes for fixed-size types, else the window */
        int esize = kiln__dtype_size(o->datatype);
        if (esize > 0) {
            uint64_t n = (uint64_t)esize;
            for (size_t d = 0; d < o->n_shape; d++)
                n *= o->shape[d] > 0 ? (uint64_t)o->shape[d] : 0;
            out->byte_size = (size_t)n;
        }
    }
    return kiln__client_out(err, KILN_OK, NULL);
}

int kiln_client_result_find(const kiln_client_result *r, const char *name, kiln_client_tensor *out,
                            kiln_client_error *err)
{
    kiln_err e = {0};
    if (!r || !name || !out)
        return kiln__client_null(err, !r ? "the result" : !name ? "name" : "out");
    for (size_t i = 0; i < r->resp->n_outputs; i++)
        if (strcmp(r->resp->outputs[i]->name, name) == 0)
            return kiln_client_result_output(r, i, out, err);
    char names[256] = "";
    size_t o = 0;
    for (size_t i = 0; i < r->resp->n_outputs && o < sizeof(names); i++)
        o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s", i ? ", " : "",
                              r->resp->outputs[i]->name);
    memset(out, 0, sizeof(*out));
    return kiln__client_out(err,
                            kiln_err_set(&e, KILN_NOT_FOUND,
                                         "the result has no output '%s' (it has: %s)", name,
                                         r->resp->n_outputs ? names : "none"),
                            &e);
}

const char *kiln_client_result_model(const kiln_client_result *r)
{
    return r && r->resp->model_name ? r->resp->model_name : "";
}

const char *kiln_client_result_id(const kiln_client_result *r)
{
    return r && r->resp->id ? r->resp->id : "";
}

void kiln_client_result_free(kiln_client_result *r)
{
    if (!r)
        return;
    if (r->v)
        for (size_t i = 0; i < r->resp->n_outputs; i++) {
            kiln_free(r->v[i].owned);
            kiln_free(r->v[i].shm_region);
        }
    kiln_free(r->v);
    if (r->resp)
        protobuf_c_message_free_unpacked(&r->resp->base, NULL);
    kiln_free(r);
}
