/* client/models.c: model metadata, config and statistics as JSON, the repository. */
#include "client/client_int.h"

#include <string.h>

#include "common/alloc.h"
#include "proto/grpc_service.kiln.h"

#define CSTR(s) ((char *)(uintptr_t)(s))

static kiln_status tensor_info(const Inference__ModelMetadataResponse__TensorMetadata *t,
                               const char *kind, size_t i, kiln_client_tensor_info *out,
                               kiln_err *err)
{
    kiln_status st = kiln__copy_name(out->name, sizeof(out->name), t->name, "tensor name", err);
    if (st == KILN_OK)
        st = kiln__copy_name(out->datatype, sizeof(out->datatype), t->datatype, "datatype", err);
    if (st != KILN_OK)
        return kiln_err_prefix(err, st, "%s[%zu]", kind, i);
    if (t->n_shape > KILN_CLIENT_MAX_RANK)
        return kiln_err_set(err, KILN_OUT_OF_RANGE, "%s[%zu] '%s': rank %zu is over %d", kind, i,
                            t->name, t->n_shape, KILN_CLIENT_MAX_RANK);
    out->rank = (int)t->n_shape;
    for (size_t d = 0; d < t->n_shape; d++)
        out->shape[d] = t->shape[d];
    return KILN_OK;
}

static kiln_status fill_model_info(const Inference__ModelMetadataResponse *r,
                                   kiln_client_model_info *m, kiln_err *err)
{
    kiln_status st = kiln__copy_name(m->name, sizeof(m->name), r->name, "model name", err);
    if (st != KILN_OK)
        return st;
    kiln__copy_text(m->platform, sizeof(m->platform), r->platform);
    /* the API holds 16 versions: a model serving more reports its first 16 */
    size_t nv = r->n_versions < 16 ? r->n_versions : 16;
    for (size_t i = 0; i < nv; i++)
        if ((st = kiln__copy_name(m->versions[i], sizeof(m->versions[i]), r->versions[i], "version",
                                  err)) != KILN_OK)
            return st;
    m->n_versions = nv;
    m->inputs = kiln_calloc(r->n_inputs ? r->n_inputs : 1, sizeof(*m->inputs));
    m->outputs = kiln_calloc(r->n_outputs ? r->n_outputs : 1, sizeof(*m->outputs));
    if (!m->inputs || !m->outputs)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < r->n_inputs; i++)
        if ((st = tensor_info(r->inputs[i], "inputs", i, &m->inputs[i], err)) != KILN_OK)
            return st;
    m->n_inputs = r->n_inputs;
    for (size_t i = 0; i < r->n_outputs; i++)
        if ((st = tensor_info(r->outputs[i], "outputs", i, &m->outputs[i], err)) != KILN_OK)
            return st;
    m->n_outputs = r->n_outputs;
    return KILN_OK;
}

int kiln_client_model_metadata(kiln_client *c, const char *model, const char *version,
                               kiln_client_model_info **out, kiln_client_error *err)
{
    if (!c || !out)
        return kiln__client_null(err, c ? "out" : "the client");
    *out = NULL;
    if (kiln__client_check_name(err, model, "model name") != 0)
        return KILN_INVALID_ARGUMENT;
    Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    req.name = CSTR(model);
    if (version)
        req.version = CSTR(version);
    Inference__ModelMetadataResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st =
            inference__grpcinference_service__model_metadata__call(c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    kiln_client_model_info *m = kiln_calloc(1, sizeof(*m));
    if (!m)
        st = kiln_err_set(&e, KILN_RESOURCE_EXHAUSTED, "out of memory");
    else
        st = fill_model_info(resp, m, &e);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (st != KILN_OK) {
        kiln_client_model_info_free(m);
        return kiln__client_out(err, st, &e);
    }
    *out = m;
    return kiln__client_out(err, KILN_OK, NULL);
}

void kiln_client_model_info_free(kiln_client_model_info *m)
{
    if (!m)
        return;
    kiln_free(m->inputs);
    kiln_free(m->outputs);
    kiln_free(m);
}

/* msg as indented JSON into *json, then msg freed; returns what to return to the caller. */
static int to_json(ProtobufCMessage *msg, const ProtobufCMessage *body, char **json,
                   kiln_client_error *err)
{
    kiln_err e = {0};
    kiln_status st = kiln__json_encode(body, 2, json, &e);
    protobuf_c_message_free_unpacked(msg, NULL);
    return kiln__client_out(err, st, &e);
}

int kiln_client_model_config_json(kiln_client *c, const char *model, const char *version,
                                  char **json, kiln_client_error *err)
{
    if (!c || !json)
        return kiln__client_null(err, c ? "json" : "the client");
    *json = NULL;
    if (kiln__client_check_name(err, model, "model name") != 0)
        return KILN_INVALID_ARGUMENT;
    Inference__ModelConfigRequest req = INFERENCE__MODEL_CONFIG_REQUEST__INIT;
    req.name = CSTR(model);
    if (version)
        req.version = CSTR(version);
    Inference__ModelConfigResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = inference__grpcinference_service__model_config__call(c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    /* the config itself, not its { "config": ... } envelope */
    return to_json(&resp->base, resp->config ? &resp->config->base : &resp->base, json, err);
}

int kiln_client_model_stats_json(kiln_client *c, const char *model, const char *version,
                                 char **json, kiln_client_error *err)
{
    if (!c || !json)
        return kiln__client_null(err, c ? "json" : "the client");
    *json = NULL;
    Inference__ModelStatisticsRequest req = INFERENCE__MODEL_STATISTICS_REQUEST__INIT;
    if (model)
        req.name = CSTR(model);
    if (version)
        req.version = CSTR(version);
    Inference__ModelStatisticsResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = inference__grpcinference_service__model_statistics__call(c->ch, &req, &resp, &r.opts,
                                                                      &e);
    while (kiln__retry_again(&r, st, &e));
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    return to_json(&resp->base, &resp->base, json, err);
}

/* ---------------------------------------------------------------- repository */

int kiln_client_repository_index(kiln_client *c, bool ready_only, kiln_client_repo_entry **entries,
                                 size_t *n, kiln_client_error *err)
{
    if (!c || !entries || !n)
        return kiln__client_null(err, c ? "entries or n" : "the client");
    *entries = NULL;
    *n = 0;
    Inference__RepositoryIndexRequest req = INFERENCE__REPOSITORY_INDEX_REQUEST__INIT;
    req.ready = ready_only;
    Inference__RepositoryIndexResponse *r = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry rt;
    kiln__retry_begin(&rt, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st =
            inference__grpcinference_service__repository_index__call(c->ch, &req, &r, &rt.opts, &e);
    while (kiln__retry_again(&rt, st, &e));
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    kiln_client_repo_entry *v = NULL;
    if (r->n_models) {
        v = kiln_calloc(r->n_models, sizeof(*v));
        if (!v)
            st = kiln_err_set(&e, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; st == KILN_OK && i < r->n_models; i++) {
        const Inference__RepositoryIndexResponse__ModelIndex *mi = r->models[i];
        st = kiln__copy_name(v[i].name, sizeof(v[i].name), mi->name, "model name", &e);
        if (st == KILN_OK)
            st = kiln__copy_name(v[i].version, sizeof(v[i].version), mi->version, "version", &e);
        kiln__copy_text(v[i].state, sizeof(v[i].state), mi->state);
        kiln__copy_text(v[i].reason, sizeof(v[i].reason), mi->reason);
        if (st != KILN_OK)
            kiln_err_prefix(&e, st, "models[%zu]", i);
    }
    size_t count = r->n_models;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (st != KILN_OK) {
        kiln_free(v);
        return kiln__client_out(err, st, &e);
    }
    *entries = v;
    *n = count;
    return kiln__client_out(err, KILN_OK, NULL);
}

/* Load and unload change server state: one attempt, never retried. */
int kiln_client_load(kiln_client *c, const char *model, kiln_client_error *err)
{
    if (!c)
        return kiln__client_null(err, "the client");
    if (kiln__client_check_name(err, model, "model name") != 0)
        return KILN_INVALID_ARGUMENT;
    Inference__RepositoryModelLoadRequest req = INFERENCE__REPOSITORY_MODEL_LOAD_REQUEST__INIT;
    req.model_name = CSTR(model);
    Inference__RepositoryModelLoadResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__NO_RETRY, 0);
    do
        st = inference__grpcinference_service__repository_model_load__call(c->ch, &req, &resp,
                                                                           &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return kiln__client_out(err, st, &e);
}

int kiln_client_unload(kiln_client *c, const char *model, kiln_client_error *err)
{
    if (!c)
        return kiln__client_null(err, "the client");
    if (kiln__client_check_name(err, model, "model name") != 0)
        return KILN_INVALID_ARGUMENT;
    Inference__RepositoryModelUnloadRequest req = INFERENCE__REPOSITORY_MODEL_UNLOAD_REQUEST__INIT;
    req.model_name = CSTR(model);
    Inference__RepositoryModelUnloadResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__NO_RETRY, 0);
    do
        st = inference__grpcinference_service__repository_model_unload__call(c->ch, &req, &resp,
                                                                             &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return kiln__client_out(err, st, &e);
}
