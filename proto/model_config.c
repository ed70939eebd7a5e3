/* proto/model_config.c: config.pbtxt -> inference.ModelConfig -> kiln_model_config. */
#include "proto/model_config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "proto/model_config.pb-c.h"
#include "proto/textformat.h"

#define NOMEM(err) kiln_err_set((err), KILN_RESOURCE_EXHAUSTED, "out of memory for a model config")

static kiln_status bad(kiln_err *err, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kiln_status bad(kiln_err *err, const char *source, const char *fmt, ...)
{
    char msg[KILN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s%s%s", source ? source : "",
                        source ? ": " : "", msg);
}

static kiln_status convert_io(const char *what, size_t idx, const char *name, int data_type,
                              const int64_t *dims, size_t n_dims, int32_t max_batch,
                              const char *source, kiln_model_io *io, kiln_err *err)
{
    if (!name || !name[0])
        return bad(err, source, "%s[%zu]: name is empty", what, idx);
    const ProtobufCEnumValue *ev =
        protobuf_c_enum_descriptor_get_value(&inference__data_type__descriptor, data_type);
    kiln_dtype dt;
    if (!ev || data_type == INFERENCE__DATA_TYPE__TYPE_INVALID ||
        kiln_dtype_parse_config(ev->name, &dt, NULL) != KILN_OK)
        return bad(err, source, "%s[%zu] '%s': data_type is missing or TYPE_INVALID", what, idx,
                   name);
    size_t limit = KILN_MAX_RANK - (max_batch > 0 ? 1 : 0);
    if (n_dims > limit)
        return bad(err, source, "%s[%zu] '%s': %zu dims%s, limit is %zu", what, idx, name, n_dims,
                   max_batch > 0 ? " plus the batch dim" : "", limit);
    for (size_t i = 0; i < n_dims; i++)
        if (dims[i] < -1)
            return bad(err, source, "%s[%zu] '%s': dims[%zu] is %" PRId64 ", must be >= -1", what,
                       idx, name, i, dims[i]);
    io->name = kiln_strdup(name);
    if (!io->name)
        return NOMEM(err);
    io->dtype = dt;
    kiln_shape_set_pattern(&io->dims, dims, n_dims, NULL);
    return KILN_OK;
}

static kiln_status check_unique(const kiln_model_config *c, const char *source, kiln_err *err)
{
    size_t n = c->n_inputs + c->n_outputs;
    for (size_t i = 0; i < n; i++) {
        const char *a = i < c->n_inputs ? c->inputs[i].name : c->outputs[i - c->n_inputs].name;
        for (size_t j = i + 1; j < n; j++) {
            const char *b = j < c->n_inputs ? c->inputs[j].name : c->outputs[j - c->n_inputs].name;
            if (strcmp(a, b) == 0)
                return bad(err, source, "tensor name '%s' is used twice among inputs and outputs",
                           a);
        }
    }
    return KILN_OK;
}

static kiln_status convert(const Inference__ModelConfig *m, const char *source,
                           kiln_model_config *c, kiln_err *err)
{
    kiln_status st;
    if (m->max_batch_size < 0)
        return bad(err, source, "max_batch_size is %d, must be >= 0", m->max_batch_size);
    c->max_batch_size = m->max_batch_size;
    c->name = kiln_strdup(m->name);
    c->platform = kiln_strdup(m->platform);
    c->default_model_filename = kiln_strdup(m->default_model_filename);
    const char *backend = m->backend;
    if (!backend[0] && strcmp(m->platform, "onnxruntime_onnx") == 0)
        backend = "onnx";
    c->backend = kiln_strdup(backend);
    if (!c->name || !c->platform || !c->default_model_filename || !c->backend)
        return NOMEM(err);
    if (strchr(c->default_model_filename, '/') || strcmp(c->default_model_filename, "..") == 0)
        return bad(err, source, "default_model_filename '%s' must be a file name, not a path",
                   c->default_model_filename);

    c->inputs = kiln_calloc(m->n_input, sizeof(*c->inputs));
    c->outputs = kiln_calloc(m->n_output, sizeof(*c->outputs));
    if (!c->inputs || !c->outputs)
        return NOMEM(err);
    for (size_t i = 0; i < m->n_input; i++) {
        const Inference__ModelInput *in = m->input[i];
        st = convert_io("input", i, in->name, in->data_type, in->dims, in->n_dims,
                        m->max_batch_size, source, &c->inputs[i], err);
        if (st != KILN_OK)
            return st;
        c->inputs[i].optional = in->optional;
        c->n_inputs++;
    }
    for (size_t i = 0; i < m->n_output; i++) {
        const Inference__ModelOutput *out = m->output[i];
        st = convert_io("output", i, out->name, out->data_type, out->dims, out->n_dims,
                        m->max_batch_size, source, &c->outputs[i], err);
        if (st != KILN_OK)
            return st;
        c->n_outputs++;
    }
    if ((st = check_unique(c, source, err)) != KILN_OK)
        return st;

    c->version_policy.kind = KILN_VERSIONS_LATEST;
    c->version_policy.num_versions = 1;
    const Inference__ModelVersionPolicy *vp = m->version_policy;
    if (vp && vp->policy_choice_case == INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_ALL) {
        c->version_policy.kind = KILN_VERSIONS_ALL;
    } else if (vp &&
               vp->policy_choice_case == INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_SPECIFIC) {
        const Inference__ModelVersionPolicy__Specific *sp = vp->specific;
        if (sp->n_versions == 0)
            return bad(err, source, "version_policy.specific lists no versions");
        c->version_policy.kind = KILN_VERSIONS_SPECIFIC;
        c->version_policy.versions = kiln_calloc(sp->n_versions, sizeof(int64_t));
        if (!c->version_policy.versions)
            return NOMEM(err);
        for (size_t i = 0; i < sp->n_versions; i++) {
            if (sp->versions[i] < 1)
                return bad(err, source,
                           "version_policy.specific.versions[%zu] is %" PRId64 ", must be >= 1", i,
                           sp->versions[i]);
            c->version_policy.versions[i] = sp->versions[i];
        }
        c->version_policy.n_versions = sp->n_versions;
    } else if (vp &&
               vp->policy_choice_case == INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST) {
        c->version_policy.num_versions = vp->latest->num_versions ? vp->latest->num_versions : 1;
    }

    if (m->scheduling_choice_case == INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING) {
        const Inference__ModelDynamicBatching *db = m->dynamic_batching;
        if (m->max_batch_size == 0)
            return bad(err, source, "dynamic_batching needs max_batch_size > 0");
        c->dynamic_batching = true;
        if (db->max_queue_delay_microseconds > KILN_MAX_QUEUE_DELAY_US)
            return bad(err, source,
                       "dynamic_batching.max_queue_delay_microseconds is %" PRIu64
                       ", must be at most %" PRIu64 " (60 s)",
                       (uint64_t)db->max_queue_delay_microseconds,
                       (uint64_t)KILN_MAX_QUEUE_DELAY_US);
        c->max_queue_delay_us = db->max_queue_delay_microseconds;
        c->preferred_batch_sizes = kiln_calloc(db->n_preferred_batch_size, sizeof(int32_t));
        if (!c->preferred_batch_sizes)
            return NOMEM(err);
        for (size_t i = 0; i < db->n_preferred_batch_size; i++) {
            int32_t p = db->preferred_batch_size[i];
            if (p < 1 || p > m->max_batch_size)
                return bad(err, source,
                           "dynamic_batching.preferred_batch_size[%zu] is %d, must be in 1..%d "
                           "(max_batch_size)",
                           i, p, m->max_batch_size);
            c->preferred_batch_sizes[i] = p;
        }
        c->n_preferred_batch_sizes = db->n_preferred_batch_size;
        if (db->default_queue_policy) {
            c->default_timeout_us = db->default_queue_policy->default_timeout_microseconds;
            c->max_queue_size = db->default_queue_policy->max_queue_size;
            c->allow_timeout_override = db->default_queue_policy->allow_timeout_override;
            c->queue_timeout_delays = db->default_queue_policy->timeout_action ==
                                      INFERENCE__MODEL_QUEUE_POLICY__TIMEOUT_ACTION__DELAY;
        }
        if (db->priority_levels)
            KILN_LOGW(NULL,
                      "%s: dynamic_batching.priority_levels is not supported; requests are "
                      "served in arrival order under default_queue_policy",
                      source ? source : "model config");
    }

    c->instance_groups = kiln_calloc(m->n_instance_group, sizeof(*c->instance_groups));
    if (!c->instance_groups)
        return NOMEM(err);
    for (size_t i = 0; i < m->n_instance_group; i++) {
        const Inference__ModelInstanceGroup *g = m->instance_group[i];
        kiln_instance_group *o = &c->instance_groups[i];
        if (g->count < 0)
            return bad(err, source, "instance_group[%zu]: count is %d, must be >= 0", i, g->count);
        if (g->n_gpus && g->kind != INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_GPU &&
            g->kind != INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_AUTO)
            return bad(err, source, "instance_group[%zu]: gpus are only valid with KIND_GPU", i);
        o->kind = (kiln_instance_kind)g->kind;
        o->count = g->count ? g->count : 1;
        o->gpus = kiln_calloc(g->n_gpus, sizeof(int32_t));
        if (!o->gpus)
            return NOMEM(err);
        c->n_instance_groups++; /* counted now, so kiln_model_config_free frees gpus */
        for (size_t k = 0; k < g->n_gpus; k++) {
            if (g->gpus[k] < 0)
                return bad(err, source, "instance_group[%zu]: gpus[%zu] is %d, must be >= 0", i, k,
                           g->gpus[k]);
            o->gpus[k] = g->gpus[k];
        }
        o->n_gpus = g->n_gpus;
    }

    c->params = kiln_calloc(m->n_parameters, sizeof(*c->params));
    if (!c->params)
        return NOMEM(err);
    for (size_t i = 0; i < m->n_parameters; i++) {
        const Inference__ModelConfig__ParametersEntry *pe = m->parameters[i];
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->params[k].key, pe->key) == 0)
                return bad(err, source, "parameters: key '%s' is given twice", pe->key);
        c->params[i].key = kiln_strdup(pe->key);
        c->params[i].value = kiln_strdup(pe->value ? pe->value->string_value : "");
        c->n_params++;
        if (!c->params[i].key || !c->params[i].value)
            return NOMEM(err);
    }
    return KILN_OK;
}

/* model_warmup: each sample's inputs must be config inputs of the same data type, with dims
 * the config's pattern accepts; every required input must be there. */
static kiln_status convert_warmups(const Inference__ModelConfig *m, const char *source,
                                   kiln_model_config *c, kiln_err *err)
{
    c->warmups = kiln_calloc(m->n_model_warmup + 1, sizeof(*c->warmups));
    if (!c->warmups)
        return NOMEM(err);
    for (size_t i = 0; i < m->n_model_warmup; i++) {
        const Inference__ModelWarmup *w = m->model_warmup[i];
        kiln_model_warmup *o = &c->warmups[i];
        c->n_warmups++;
        o->name = kiln_strdup(w->name);
        o->inputs = kiln_calloc(w->n_inputs + 1, sizeof(*o->inputs));
        if (!o->name || !o->inputs)
            return NOMEM(err);
        uint32_t most = c->max_batch_size > 0 ? (uint32_t)c->max_batch_size : 1;
        if (w->batch_size < 1 || w->batch_size > most)
            return bad(err, source, "model_warmup[%zu] '%s': batch_size is %u, must be 1 to %u%s",
                       i, w->name, w->batch_size, most,
                       c->max_batch_size > 0 ? " (max_batch_size)" : " (the model does not batch)");
        o->batch_size = w->batch_size;
        o->count = w->count ? w->count : 1;
        for (size_t k = 0; k < w->n_inputs; k++) {
            const Inference__ModelWarmup__InputsEntry *e = w->inputs[k];
            const Inference__ModelWarmup__Input *in = e->value;
            kiln_warmup_input *x = &o->inputs[k];
            const kiln_model_io *io = NULL;
            for (size_t j = 0; j < c->n_inputs && !io; j++)
                if (strcmp(c->inputs[j].name, e->key) == 0)
                    io = &c->inputs[j];
            if (!io || !in)
                return bad(err, source, "model_warmup[%zu] '%s': '%s' is not an input of the model",
                           i, w->name, e->key);
            for (size_t j = 0; j < k; j++)
                if (strcmp(o->inputs[j].name, e->key) == 0)
                    return bad(err, source, "model_warmup[%zu] '%s': input '%s' is given twice", i,
                               w->name, e->key);
            x->name = kiln_strdup(e->key);
            o->n_inputs++;
            if (!x->name)
                return NOMEM(err);
            const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
                &inference__data_type__descriptor, in->data_type);
            if (!ev || kiln_dtype_parse_config(ev->name, &x->dtype, NULL) != KILN_OK ||
                x->dtype != io->dtype)
                return bad(err, source, "model_warmup[%zu] '%s': input '%s': data_type must be %s",
                           i, w->name, e->key, kiln_dtype_config_name(io->dtype));
            kiln_shape got;
            kiln_err e2;
            for (size_t d = 0; d < in->n_dims; d++)
                if (in->dims[d] < 0)
                    return bad(err, source,
                               "model_warmup[%zu] '%s': input '%s': dims[%zu] is %" PRId64
                               ", must be >= 0",
                               i, w->name, e->key, d, in->dims[d]);
            if (kiln_shape_set(&got, in->dims, in->n_dims, &e2) != KILN_OK ||
                kiln_shape_match(&io->dims, &got, &e2) != KILN_OK)
                return bad(err, source, "model_warmup[%zu] '%s': input '%s': %s", i, w->name,
                           e->key, e2.msg);
            x->dims = got;
            switch (in->input_data_type_case) {
            case INFERENCE__MODEL_WARMUP__INPUT__INPUT_DATA_TYPE_RANDOM_DATA:
                x->data = KILN_WARMUP_RANDOM;
                if (x->dtype == KILN_DTYPE_BYTES)
                    return bad(err, source,
                               "model_warmup[%zu] '%s': input '%s': random_data is not "
                               "supported for TYPE_STRING (use zero_data or input_data_file)",
                               i, w->name, e->key);
                break;
            case INFERENCE__MODEL_WARMUP__INPUT__INPUT_DATA_TYPE_INPUT_DATA_FILE:
                x->data = KILN_WARMUP_FILE;
                if (!in->input_data_file[0] || strchr(in->input_data_file, '/') ||
                    strcmp(in->input_data_file, "..") == 0)
                    return bad(err, source,
                               "model_warmup[%zu] '%s': input '%s': input_data_file '%s' must be "
                               "a file name in the model's warmup/ directory",
                               i, w->name, e->key, in->input_data_file);
                if (!(x->file = kiln_strdup(in->input_data_file)))
                    return NOMEM(err);
                break;
            default:
                x->data = KILN_WARMUP_ZERO;
                break;
            }
        }
        for (size_t j = 0; j < c->n_inputs; j++) {
            bool given = c->inputs[j].optional;
            for (size_t k = 0; k < o->n_inputs && !given; k++)
                given = strcmp(o->inputs[k].name, c->inputs[j].name) == 0;
            if (!given)
                return bad(err, source, "model_warmup[%zu] '%s': input '%s' has no data", i,
                           w->name, c->inputs[j].name);
        }
    }
    return KILN_OK;
}

static kiln_status pack(const Inference__ModelConfig *m, kiln_model_config *c, kiln_err *err)
{
    size_t n = inference__model_config__get_packed_size(m);
    c->packed = kiln_malloc(n);
    if (!c->packed)
        return NOMEM(err);
    c->packed_len = inference__model_config__pack(m, c->packed);
    return KILN_OK;
}

kiln_status kiln_model_config_parse(const char *text, size_t len, const char *source,
                                    kiln_model_config **out, kiln_err *err)
{
    *out = NULL;
    ProtobufCMessage *msg;
    kiln_status st =
        kiln_textformat_parse(&inference__model_config__descriptor, text, len, source, &msg, err);
    if (st != KILN_OK)
        return st;
    kiln_model_config *c = kiln_calloc(1, sizeof(*c));
    if (!c) {
        kiln_textformat_free(msg);
        return NOMEM(err);
    }
    const Inference__ModelConfig *m = (const Inference__ModelConfig *)msg;
    st = convert(m, source, c, err);
    if (st == KILN_OK && c->n_inputs == 0)
        st = bad(err, source, "no input is declared");
    if (st == KILN_OK && c->n_outputs == 0)
        st = bad(err, source, "no output is declared");
    if (st == KILN_OK)
        st = convert_warmups(m, source, c, err);
    if (st == KILN_OK)
        st = pack(m, c, err);
    kiln_textformat_free(msg);
    if (st != KILN_OK) {
        kiln_model_config_free(c);
        return st;
    }
    *out = c;
    return KILN_OK;
}

kiln_status kiln_model_config_load(const char *path, const char *source, kiln_model_config **out,
                                   kiln_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln_err_set(err, errno == ENOENT ? KILN_NOT_FOUND : KILN_INVALID_ARGUMENT,
                            "%s: cannot read: %s", source ? source : "config", strerror(errno));
    enum { MAX_CONFIG = 1 << 20 };
    char *buf = kiln_malloc(MAX_CONFIG + 1);
    if (!buf) {
        fclose(f);
        return NOMEM(err);
    }
    size_t n = fread(buf, 1, MAX_CONFIG + 1, f);
    fclose(f);
    kiln_status st;
    if (n > MAX_CONFIG)
        st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s: larger than the %d-byte limit",
                          source ? source : "config", MAX_CONFIG);
    else
        st = kiln_model_config_parse(buf, n, source, out, err);
    kiln_free(buf);
    return st;
}

static void free_io(kiln_model_io *io, size_t n)
{
    for (size_t i = 0; io && i < n; i++)
        kiln_free(io[i].name);
    kiln_free(io);
}

void kiln_model_config_free(kiln_model_config *c)
{
    if (!c)
        return;
    kiln_free(c->name);
    kiln_free(c->backend);
    kiln_free(c->platform);
    kiln_free(c->default_model_filename);
    free_io(c->inputs, c->n_inputs);
    free_io(c->outputs, c->n_outputs);
    kiln_free(c->version_policy.versions);
    kiln_free(c->preferred_batch_sizes);
    for (size_t i = 0; c->instance_groups && i < c->n_instance_groups; i++)
        kiln_free(c->instance_groups[i].gpus);
    kiln_free(c->instance_groups);
    for (size_t i = 0; c->params && i < c->n_params; i++) {
        kiln_free(c->params[i].key);
        kiln_free(c->params[i].value);
    }
    for (size_t i = 0; c->warmups && i < c->n_warmups; i++) {
        for (size_t k = 0; c->warmups[i].inputs && k < c->warmups[i].n_inputs; k++) {
            kiln_free(c->warmups[i].inputs[k].name);
            kiln_free(c->warmups[i].inputs[k].file);
        }
        kiln_free(c->warmups[i].inputs);
        kiln_free(c->warmups[i].name);
    }
    kiln_free(c->warmups);
    kiln_free(c->params);
    kiln_free(c->packed);
    kiln_free(c);
}

const char *kiln_model_config_param(const kiln_model_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->n_params; i++)
        if (strcmp(cfg->params[i].key, key) == 0)
            return cfg->params[i].value;
    return NULL;
}

kiln_status kiln_model_config_set_name(kiln_model_config *cfg, const char *name, kiln_err *err)
{
    Inference__ModelConfig *m =
        inference__model_config__unpack(kiln_protobuf_allocator(), cfg->packed_len, cfg->packed);
    char *dup = kiln_strdup(name);
    if (!m || !dup) {
        kiln_free(dup);
        kiln_textformat_free((ProtobufCMessage *)m);
        return NOMEM(err);
    }
    char *old_name = m->name;
    m->name = dup;
    size_t n = inference__model_config__get_packed_size(m);
    uint8_t *packed = kiln_malloc(n);
    char *keep = kiln_strdup(name);
    if (!packed || !keep) {
        m->name = old_name;
        kiln_free(dup);
        kiln_free(packed);
        kiln_free(keep);
        kiln_textformat_free((ProtobufCMessage *)m);
        return NOMEM(err);
    }
    inference__model_config__pack(m, packed);
    m->name = old_name;
    kiln_free(dup);
    kiln_textformat_free((ProtobufCMessage *)m);
    kiln_free(cfg->packed);
    cfg->packed = packed;
    cfg->packed_len = n;
    kiln_free(cfg->name);
    cfg->name = keep;
    return KILN_OK;
}
