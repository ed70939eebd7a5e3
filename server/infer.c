/*
 * server/infer.c: ModelInfer and ModelStreamInfer on the wire.
 *
 * Requests: the ModelInferRequest's top-level fields are walked across the received slices.
 * Each raw_input_contents (field 7) is copied once, straight from the slices into its own
 * aligned tensor storage; every other field is copied into a small buffer that protobuf-c
 * unpacks (concatenated encodings of one message merge, so leaving field 7 out is valid).
 * Responses: the small fields are packed by protobuf-c; each output's bytes follow as a slice
 * that references the output tensor (no copy), released when gRPC is done with it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include <grpc/support/time.h>
#include "proto/grpc_service.pb-c.h"
#include "proto/textformat.h"
#include "server/server_int.h"

/* ---------------------------------------------------------------- reading the wire */

typedef struct cursor {
    grpc_byte_buffer_reader rd;
    grpc_slice cur;
    size_t pos;
    bool have;
} cursor;

static bool next_slice(cursor *c)
{
    if (c->have)
        grpc_slice_unref(c->cur);
    c->have = false;
    while (grpc_byte_buffer_reader_next(&c->rd, &c->cur)) {
        c->have = true;
        c->pos = 0;
        if (GRPC_SLICE_LENGTH(c->cur) > 0)
            return true;
        grpc_slice_unref(c->cur);
        c->have = false;
    }
    return false;
}

/* Copies n bytes to dst (NULL: skip). False if the message ends first. */
static bool take(cursor *c, uint8_t *dst, size_t n)
{
    while (n > 0) {
        if (!c->have || c->pos == GRPC_SLICE_LENGTH(c->cur))
            if (!next_slice(c))
                return false;
        size_t avail = GRPC_SLICE_LENGTH(c->cur) - c->pos;
        size_t k = avail < n ? avail : n;
        if (dst) {
            memcpy(dst, GRPC_SLICE_START_PTR(c->cur) + c->pos, k);
            dst += k;
        }
        c->pos += k;
        n -= k;
    }
    return true;
}

/* Reads a varint, also appending its raw bytes to raw[*rn] (up to 10). */
static bool varint(cursor *c, uint64_t *v, uint8_t *raw, size_t *rn)
{
    *v = 0;
    *rn = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (!take(c, &b, 1))
            return false;
        raw[(*rn)++] = b;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

typedef struct growbuf {
    uint8_t *p;
    size_t n, cap;
} growbuf;

static bool gb_reserve(growbuf *g, size_t more)
{
    if (g->n + more <= g->cap)
        return true;
    size_t cap = g->cap ? g->cap : 256;
    while (cap < g->n + more)
        cap *= 2;
    uint8_t *p = kiln_realloc(g->p, cap);
    if (!p)
        return false;
    g->p = p;
    g->cap = cap;
    return true;
}

typedef struct decoded {
    Inference__ModelInferRequest *msg;
    kiln_storage **raw; /* one per raw_input_contents, in order */
    size_t n_raw;
    uint64_t raw_bytes;
} decoded;

static void decoded_free(decoded *d)
{
    for (size_t i = 0; i < d->n_raw; i++)
        kiln_storage_unref(d->raw[i]);
    kiln_free(d->raw);
    kiln_textformat_free(d->msg ? &d->msg->base : NULL);
    memset(d, 0, sizeof(*d));
}

static kiln_status decode_request(grpc_byte_buffer *bb, decoded *d, kiln_err *err)
{
    memset(d, 0, sizeof(*d));
    cursor c = {0};
    if (!grpc_byte_buffer_reader_init(&c.rd, bb))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "cannot read the request message");
    growbuf small = {0};
    kiln_status st = KILN_OK;
    size_t raw_cap = 0;
    for (;;) {
        uint8_t hdr[24];
        size_t hn;
        uint64_t tag;
        /* end of message? */
        if ((!c.have || c.pos == GRPC_SLICE_LENGTH(c.cur)) && !next_slice(&c))
            break;
        if (!varint(&c, &tag, hdr, &hn)) {
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "malformed ModelInferRequest");
            break;
        }
        unsigned wire = (unsigned)(tag & 7);
        uint64_t field = tag >> 3;
        uint64_t len = 0;
        size_t ln = 0;
        if (wire == 2 && !varint(&c, &len, hdr + hn, &ln)) {
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "malformed ModelInferRequest");
            break;
        }
        hn += ln;
        if (field == 7 && wire == 2) { /* raw_input_contents: one copy, into tensor storage */
            if (d->n_raw == raw_cap) {
                raw_cap = raw_cap ? 2 * raw_cap : 8;
                kiln_storage **g = kiln_realloc(d->raw, raw_cap * sizeof(*g));
                if (!g) {
                    st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
                    break;
                }
                d->raw = g;
            }
            kiln_storage *s;
            if ((st = kiln_storage_create_heap((size_t)len, &s, err)) != KILN_OK)
                break;
            d->raw[d->n_raw++] = s;
            if (!take(&c, kiln_storage_data(s), (size_t)len)) {
                st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                  "raw_input_contents[%zu] is cut short", d->n_raw - 1);
                break;
            }
            d->raw_bytes += len;
            continue;
        }
        size_t body = wire == 0   ? 0
                      : wire == 1 ? 8
                      : wire == 5 ? 4
                      : wire == 2 ? (size_t)len
                                  : SIZE_MAX;
        if (body == SIZE_MAX || !gb_reserve(&small, hn + body + 10)) {
            st = body == SIZE_MAX
                     ? kiln_err_set(err, KILN_INVALID_ARGUMENT, "malformed ModelInferRequest")
                     : kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        memcpy(small.p + small.n, hdr, hn);
        small.n += hn;
        if (wire == 0) { /* a varint value: copy byte by byte */
            uint64_t v;
            size_t vn;
            if (!varint(&c, &v, small.p + small.n, &vn)) {
                st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "malformed ModelInferRequest");
                break;
            }
            small.n += vn;
        } else if (!take(&c, small.p + small.n, body)) {
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "malformed ModelInferRequest");
            break;
        } else {
            small.n += body;
        }
    }
    if (c.have)
        grpc_slice_unref(c.cur);
    grpc_byte_buffer_reader_destroy(&c.rd);
    if (st == KILN_OK) {
        d->msg = inference__model_infer_request__unpack(kiln_protobuf_allocator(), small.n,
                                                        small.p ? small.p : (uint8_t *)"");
        if (!d->msg)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT,
                              "the request is not a valid "
                              "inference.ModelInferRequest");
    }
    kiln_free(small.p);
    if (st != KILN_OK)
        decoded_free(d);
    return st;
}

/* ---------------------------------------------------------------- typed contents */

static kiln_status typed_contents(const Inference__ModelInferRequest__InferInputTensor *in,
                                  size_t idx, kiln_storage **out, size_t *size, kiln_err *err)
{
    *out = NULL;
    const Inference__InferTensorContents *tc = in->contents;
    kiln_dtype dt;
    if (kiln_dtype_parse(in->datatype, &dt, err) != KILN_OK)
        return kiln_err_prefix(err, KILN_INVALID_ARGUMENT, "inputs[%zu] '%s'", idx, in->name);
    uint64_t numel = 1;
    for (size_t i = 0; i < in->n_shape; i++) {
        if (in->shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)in->shape[i], &numel))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "inputs[%zu] '%s': shape dim %zu is invalid", idx, in->name, i);
    }
    size_t have;
    const char *field;
    switch (dt) {
    case KILN_DTYPE_BOOL:
        have = tc->n_bool_contents, field = "bool_contents";
        break;
    case KILN_DTYPE_INT8:
    case KILN_DTYPE_INT16:
    case KILN_DTYPE_INT32:
        have = tc->n_int_contents, field = "int_contents";
        break;
    case KILN_DTYPE_INT64:
        have = tc->n_int64_contents, field = "int64_contents";
        break;
    case KILN_DTYPE_UINT8:
    case KILN_DTYPE_UINT16:
    case KILN_DTYPE_UINT32:
        have = tc->n_uint_contents, field = "uint_contents";
        break;
    case KILN_DTYPE_UINT64:
        have = tc->n_uint64_contents, field = "uint64_contents";
        break;
    case KILN_DTYPE_FP32:
        have = tc->n_fp32_contents, field = "fp32_contents";
        break;
    case KILN_DTYPE_FP64:
        have = tc->n_fp64_contents, field = "fp64_contents";
        break;
    case KILN_DTYPE_BYTES:
        have = tc->n_bytes_contents, field = "bytes_contents";
        break;
    default:
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "inputs[%zu] '%s': %s data must be sent in raw_input_contents", idx,
                            in->name, kiln_dtype_name(dt));
    }
    if (have != numel)
        return kiln_err_set(
            err, KILN_INVALID_ARGUMENT,
            "inputs[%zu] '%s': contents.%s holds %zu elements, shape needs %" PRIu64, idx, in->name,
            field, have, numel);
    size_t es = kiln_dtype_size(dt), bytes = 0;
    if (dt == KILN_DTYPE_BYTES) {
        for (size_t i = 0; i < have; i++)
            bytes += 4 + tc->bytes_contents[i].len;
    } else {
        bytes = es * have;
    }
    kiln_storage *s;
    kiln_status st = kiln_storage_create_heap(bytes, &s, err);
    if (st != KILN_OK)
        return st;
    uint8_t *p = kiln_storage_data(s);
    size_t off = 0;
    for (size_t i = 0; i < have; i++) {
        switch (dt) {
        case KILN_DTYPE_BOOL:
            p[i] = tc->bool_contents[i] ? 1 : 0;
            break;
        case KILN_DTYPE_INT8:
            ((int8_t *)p)[i] = (int8_t)tc->int_contents[i];
            break;
        case KILN_DTYPE_INT16:
            ((int16_t *)p)[i] = (int16_t)tc->int_contents[i];
            break;
        case KILN_DTYPE_INT32:
            ((int32_t *)p)[i] = tc->int_contents[i];
            break;
        case KILN_DTYPE_INT64:
            ((int64_t *)p)[i] = tc->int64_contents[i];
            break;
        case KILN_DTYPE_UINT8:
            p[i] = (uint8_t)tc->uint_contents[i];
            break;
        case KILN_DTYPE_UINT16:
            ((uint16_t *)p)[i] = (uint16_t)tc->uint_contents[i];
            break;
        case KILN_DTYPE_UINT32:
            ((uint32_t *)p)[i] = tc->uint_contents[i];
            break;
        case KILN_DTYPE_UINT64:
            ((uint64_t *)p)[i] = tc->uint64_contents[i];
            break;
        case KILN_DTYPE_FP32:
            ((float *)p)[i] = tc->fp32_contents[i];
            break;
        case KILN_DTYPE_FP64:
            ((double *)p)[i] = tc->fp64_contents[i];
            break;
        case KILN_DTYPE_BYTES:
            kiln_bytes_append(p, bytes, &off, tc->bytes_contents[i].data, tc->bytes_contents[i].len,
                              NULL);
            break;
        default:
            break;
        }
    }
    *out = s;
    *size = bytes;
    return KILN_OK;
}

/* ---------------------------------------------------------------- request assembly */

/* Everything one inference call owns until its response is sent. */
typedef struct infer_call {
    kiln_call *call;
    bool stream;
    decoded d;
    kiln_infer_request req;
    kiln_infer_input *inputs;
    kiln_infer_output_req *outputs;
} infer_call;

static void infer_call_free(infer_call *ic)
{
    for (size_t i = 0; ic->inputs && i < ic->req.n_inputs; i++)
        kiln_storage_unref(ic->inputs[i].data);
    kiln_free(ic->inputs);
    kiln_free(ic->outputs);
    decoded_free(&ic->d);
    kiln_free(ic);
}

/* Reads shared_memory_* parameters. */
static kiln_status shm_params(Inference__InferParameter *const *unused, size_t n_params,
                              void *const *entries_v, const char *what, size_t idx,
                              const char **region, int64_t *offset, int64_t *size, bool *has_size,
                              kiln_err *err)
{
    (void)unused;
    *region = NULL;
    *offset = 0;
    *size = 0;
    *has_size = false;
    /* the two map entry types have the same layout: {base, key, value} */
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry *const *entries =
        (Inference__ModelInferRequest__InferInputTensor__ParametersEntry *const *)entries_v;
    bool has_offset = false;
    for (size_t i = 0; i < n_params; i++) {
        const char *k = entries[i]->key;
        Inference__InferParameter *v = entries[i]->value;
        int choice = v ? (int)v->parameter_choice_case : 0;
        if (strcmp(k, "shared_memory_region") == 0) {
            if (choice != INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "%s[%zu]: parameter shared_memory_region must be a string",
                                    what, idx);
            *region = v->string_param;
        } else if (strcmp(k, "shared_memory_offset") == 0 ||
                   strcmp(k, "shared_memory_byte_size") == 0) {
            bool is_size = k[14] == 'b';
            int64_t val;
            if (choice == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM)
                val = v->int64_param;
            else if (choice == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM &&
                     v->uint64_param <= INT64_MAX)
                val = (int64_t)v->uint64_param;
            else
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "%s[%zu]: parameter %s must be an int64", what, idx, k);
            if (is_size) {
                *size = val;
                *has_size = true;
            } else {
                *offset = val;
                has_offset = true;
            }
        }
    }
    if (!*region && (*has_size || has_offset))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s[%zu]: shared_memory_byte_size/offset given without "
                            "shared_memory_region",
                            what, idx);
    return KILN_OK;
}

/* Reads the request-level parameters Kiln acts on: "timeout" (queue timeout, microseconds). */
static kiln_status request_params(const Inference__ModelInferRequest *m, uint64_t *timeout_us,
                                  kiln_err *err)
{
    *timeout_us = 0;
    for (size_t i = 0; i < m->n_parameters; i++) {
        const Inference__ModelInferRequest__ParametersEntry *e = m->parameters[i];
        if (strcmp(e->key, "timeout") != 0)
            continue;
        const Inference__InferParameter *v = e->value;
        int choice = v ? (int)v->parameter_choice_case : 0;
        if (choice == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM &&
            v->int64_param >= 0)
            *timeout_us = (uint64_t)v->int64_param;
        else if (choice == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM)
            *timeout_us = v->uint64_param;
        else
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "parameters 'timeout' must be a non-negative integer "
                                "(microseconds)");
    }
    return KILN_OK;
}

static kiln_status assemble(infer_call *ic, kiln_err *err)
{
    Inference__ModelInferRequest *m = ic->d.msg;
    kiln_infer_request *r = &ic->req;
    r->model = m->model_name;
    r->version = m->model_version;
    r->request_id = ic->call->request_id;
    r->n_inputs = m->n_inputs;
    r->n_outputs = m->n_outputs;
    ic->inputs = kiln_calloc(m->n_inputs ? m->n_inputs : 1, sizeof(*ic->inputs));
    ic->outputs = kiln_calloc(m->n_outputs ? m->n_outputs : 1, sizeof(*ic->outputs));
    if (!ic->inputs || !ic->outputs)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    r->inputs = ic->inputs;
    r->outputs = ic->outputs;
    kiln_status pst = request_params(m, &r->timeout_us, err);
    if (pst != KILN_OK)
        return pst;
    size_t n_data = 0; /* inputs not in shared memory */
    for (size_t i = 0; i < m->n_inputs; i++) {
        Inference__ModelInferRequest__InferInputTensor *in = m->inputs[i];
        kiln_infer_input *o = &ic->inputs[i];
        o->name = in->name;
        o->datatype = in->datatype;
        o->shape = in->shape;
        o->rank = in->n_shape;
        kiln_status st = shm_params(NULL, in->n_parameters, (void *const *)in->parameters, "inputs",
                                    i, &o->shm_region, &o->shm_offset, &o->shm_byte_size,
                                    &o->has_shm_byte_size, err);
        if (st != KILN_OK)
            return st;
        n_data += !o->shm_region;
    }
    /* raw_input_contents: one entry per input in order (shm ones ignored), or, as Triton's
     * clients send it, one per input that is not in shared memory */
    if (ic->d.n_raw && ic->d.n_raw != m->n_inputs && ic->d.n_raw != n_data)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "raw_input_contents has %zu entries for %zu inputs, %zu of them not "
                            "in shared memory (one per input, or one per input not in shared "
                            "memory, in order)",
                            ic->d.n_raw, m->n_inputs, n_data);
    bool per_input = ic->d.n_raw == m->n_inputs;
    uint64_t copied = ic->d.raw_bytes;
    for (size_t i = 0, k = 0; i < m->n_inputs; i++) {
        Inference__ModelInferRequest__InferInputTensor *in = m->inputs[i];
        kiln_infer_input *o = &ic->inputs[i];
        kiln_status st;
        if (ic->d.n_raw) {
            if (in->contents)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "inputs[%zu] '%s': contents must not be set when "
                                    "raw_input_contents is used",
                                    i, in->name);
            if (!o->shm_region) {
                o->data = ic->d.raw[per_input ? i : k++];
                kiln_storage_ref(o->data);
                o->data_size = kiln_storage_size(o->data);
            }
        } else if (in->contents) {
            if ((st = typed_contents(in, i, &o->data, &o->data_size, err)) != KILN_OK)
                return st;
            copied += o->data_size;
        }
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        Inference__ModelInferRequest__InferRequestedOutputTensor *out = m->outputs[i];
        kiln_infer_output_req *o = &ic->outputs[i];
        o->name = out->name;
        kiln_status st = shm_params(NULL, out->n_parameters, (void *const *)out->parameters,
                                    "outputs", i, &o->shm_region, &o->shm_offset, &o->shm_byte_size,
                                    &o->has_shm_byte_size, err);
        if (st != KILN_OK)
            return st;
    }
    r->copied_in_bytes = copied;
    return KILN_OK;
}

/* ---------------------------------------------------------------- responses */

static void release_storage(void *p)
{
    kiln_storage_unref(p);
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* Builds a ModelInferResponse (wrapped as ModelStreamInferResponse.infer_response if stream). */
static grpc_byte_buffer *build_response(const infer_call *ic, const kiln_infer_response *res,
                                        bool stream)
{
    size_t n = res->n_outputs;
    Inference__ModelInferResponse__InferOutputTensor *ot = kiln_calloc(n ? n : 1, sizeof(*ot));
    Inference__ModelInferResponse__InferOutputTensor **op = kiln_calloc(n ? n : 1, sizeof(*op));
    grpc_slice *slices = kiln_calloc(2 * n + 2, sizeof(grpc_slice));
    if (!ot || !op || !slices) {
        kiln_free(ot), kiln_free(op), kiln_free(slices);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        inference__model_infer_response__infer_output_tensor__init(&ot[i]);
        ot[i].name = (char *)res->outputs[i].name;
        ot[i].datatype = (char *)kiln_dtype_name(res->outputs[i].tensor.dtype);
        ot[i].n_shape = (size_t)res->outputs[i].tensor.shape.rank;
        ot[i].shape = (int64_t *)res->outputs[i].tensor.shape.dims;
        op[i] = &ot[i];
    }
    char version[24];
    snprintf(version, sizeof(version), "%" PRId64, res->version);
    Inference__InferParameter pin = INFERENCE__INFER_PARAMETER__INIT,
                              pout = INFERENCE__INFER_PARAMETER__INIT;
    pin.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pin.int64_param = (int64_t)res->copied_in_bytes;
    pout.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pout.int64_param = (int64_t)res->copied_out_bytes;
    Inference__ModelInferResponse__ParametersEntry pe[2] = {
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT,
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT};
    pe[0].key = "kiln_copied_input_bytes";
    pe[0].value = &pin;
    pe[1].key = "kiln_copied_output_bytes";
    pe[1].value = &pout;
    Inference__ModelInferResponse__ParametersEntry *pp[2] = {&pe[0], &pe[1]};
    Inference__ModelInferResponse r = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    r.model_name = (char *)res->model_name;
    r.model_version = version;
    r.id = ic->d.msg->id;
    r.n_outputs = n;
    r.outputs = op;
    r.n_parameters = 2;
    r.parameters = pp;
    size_t head = inference__model_infer_response__get_packed_size(&r);
    /* raw_output_contents: one entry per output, in order; outputs written into a client's
     * region get an empty entry so the indexes stay aligned */
    uint64_t total = head;
    size_t k = 1;
    for (size_t i = 0; i < n; i++) {
        const kiln_infer_output *o = &res->outputs[i];
        size_t len = o->in_shm ? 0 : o->tensor.byte_size;
        uint8_t hdr[12];
        hdr[0] = 0x32; /* field 6, length-delimited */
        size_t hn = 1 + put_varint(hdr + 1, len);
        slices[k++] = grpc_slice_from_copied_buffer((const char *)hdr, hn);
        total += hn + len;
        if (len) {
            kiln_storage_ref(o->tensor.storage);
            slices[k++] = grpc_slice_new_with_user_data(o->tensor.data, len, release_storage,
                                                        o->tensor.storage);
        }
    }
    size_t wrap = 0;
    uint8_t whdr[12];
    if (stream) { /* ModelStreamInferResponse { infer_response = 2 } */
        whdr[0] = 0x12;
        wrap = 1 + put_varint(whdr + 1, total);
    }
    grpc_slice first = grpc_slice_malloc(wrap + head);
    memcpy(GRPC_SLICE_START_PTR(first), whdr, wrap);
    inference__model_infer_response__pack(&r, GRPC_SLICE_START_PTR(first) + wrap);
    slices[0] = first;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, k);
    for (size_t i = 0; i < k; i++)
        grpc_slice_unref(slices[i]);
    kiln_free(ot), kiln_free(op), kiln_free(slices);
    return bb;
}

static grpc_byte_buffer *stream_error(const char *msg)
{
    Inference__ModelStreamInferResponse r = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    r.error_message = (char *)msg;
    return kiln__pack(&r.base);
}

/* ---------------------------------------------------------------- completion */

static void stream_done_locked_unref(kiln_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->in_flight--;
    kiln__stream_maybe_finish_locked(c);
    pthread_mutex_unlock(&c->mu);
    kiln__call_unref(c);
}

static void on_infer_done(void *ctx, kiln_infer_response *res, kiln_status st, const kiln_err *err)
{
    infer_call *ic = ctx;
    kiln_call *c = ic->call;
    if (ic->stream) {
        grpc_byte_buffer *bb = st == KILN_OK ? build_response(ic, res, true)
                                             : stream_error(err ? err->msg : "inference failed");
        if (bb)
            kiln__stream_send(c, bb);
        kiln_infer_response_release(res);
        infer_call_free(ic);
        stream_done_locked_unref(c);
        return;
    }
    if (st != KILN_OK) {
        kiln__reply_err(c, st, err);
    } else {
        grpc_byte_buffer *bb = build_response(ic, res, false);
        if (bb)
            kiln__reply(c, GRPC_STATUS_OK, NULL, bb);
        else
            kiln__reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the response", NULL);
    }
    kiln_infer_response_release(res);
    infer_call_free(ic);
}

/* Decodes and submits one request; on error returns it (nothing was submitted). */
static kiln_status submit(kiln_call *c, grpc_byte_buffer *bb, bool stream, kiln_err *err)
{
    infer_call *ic = kiln_calloc(1, sizeof(*ic));
    if (!ic)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    ic->call = c;
    ic->stream = stream;
    kiln_status st = decode_request(bb, &ic->d, err);
    if (st == KILN_OK)
        st = assemble(ic, err);
    if (st == KILN_OK) {
        ic->req.done = on_infer_done;
        ic->req.done_ctx = ic;
        ic->req.cancelled_by = &c->cancelled;
        /* the client's deadline, from gRPC's monotonic clock into Kiln's */
        if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) != 0) {
            gpr_timespec left =
                gpr_time_sub(gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC),
                             gpr_now(GPR_CLOCK_MONOTONIC));
            int64_t ns = (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
            uint64_t now = kiln_clock_now_ns();
            ic->req.deadline_ns = ns > 0 ? now + (uint64_t)ns : now;
        }
        st = kiln_engine_infer(c->srv->engine, &ic->req, err);
    }
    if (st != KILN_OK)
        infer_call_free(ic);
    return st;
}

static void model_infer(kiln_call *c, grpc_byte_buffer *payload)
{
    kiln_err e;
    if (!payload) {
        kiln__reply(c, GRPC_STATUS_INVALID_ARGUMENT, "empty ModelInferRequest", NULL);
        return;
    }
    kiln_status st = submit(c, payload, false, &e);
    if (st != KILN_OK)
        kiln__reply_err(c, st, &e);
}

void kiln__infer_stream_start(kiln_call *c)
{
    /* the handler's reference stays with the stream until it finishes */
    kiln__stream_recv(c);
    kiln__call_unref(c);
}

void kiln__infer_stream_message(kiln_call *c, grpc_byte_buffer *bb)
{
    kiln_err e;
    pthread_mutex_lock(&c->mu);
    c->in_flight++;
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&c->refs, 1); /* held by the request until it is answered */
    kiln_status st = submit(c, bb, true, &e);
    grpc_byte_buffer_destroy(bb);
    if (st != KILN_OK) {
        /* errors ride in the stream; the stream stays open */
        kiln__stream_send(c, stream_error(e.msg));
        stream_done_locked_unref(c);
    }
}

void kiln__infer_bind(kiln_method *m);
void kiln__infer_bind(kiln_method *m)
{
    if (strcmp(m->name, "ModelInfer") == 0)
        m->unary = model_infer;
}
