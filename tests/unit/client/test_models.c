/* tests/unit/client/test_models.c: model metadata, config/statistics JSON and the repository. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "common/alloc.h"
#include "proto/grpc_service.pb-c.h"
#include "tests/unit/client/fake.h"

/* What the fake server's metadata answer holds (tests change it). */
static struct {
    const char *name;
    int n_versions;
    int rank;
} md = {"simple", 1, 2};

static Inference__ModelMetadataResponse__TensorMetadata *tm(const char *name, int rank)
{
    Inference__ModelMetadataResponse__TensorMetadata *t = calloc(1, sizeof(*t));
    inference__model_metadata_response__tensor_metadata__init(t);
    t->name = strdup(name);
    t->datatype = strdup("INT32");
    t->n_shape = (size_t)rank;
    t->shape = calloc((size_t)rank + 1, sizeof(int64_t));
    for (int d = 0; d < rank; d++)
        t->shape[d] = d == 0 ? -1 : 16;
    return t;
}

static ProtobufCMessage *answer_metadata(fake *f, const fake_call *m, const ProtobufCMessage *req)
{
    (void)f;
    (void)m;
    (void)req;
    Inference__ModelMetadataResponse *r = calloc(1, sizeof(*r));
    inference__model_metadata_response__init(r);
    r->name = strdup(md.name);
    r->platform = strdup("plugin");
    r->n_versions = (size_t)md.n_versions;
    r->versions = calloc((size_t)md.n_versions + 1, sizeof(char *));
    for (int i = 0; i < md.n_versions; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i + 1);
        r->versions[i] = strdup(v);
    }
    r->n_inputs = 2;
    r->inputs = calloc(2, sizeof(*r->inputs));
    r->inputs[0] = tm("INPUT0", md.rank);
    r->inputs[1] = tm("INPUT1", 2);
    r->n_outputs = 1;
    r->outputs = calloc(1, sizeof(*r->outputs));
    r->outputs[0] = tm("OUTPUT0", 2);
    return &r->base;
}

static void test_model_metadata(void **state)
{
    (void)state;
    fake f = {.respond = answer_metadata};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_model_info *m = NULL;
    assert_int_equal(kiln_client_model_metadata(c, "simple", "1", &m, &e), 0);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/ModelMetadata");
    Inference__ModelMetadataRequest *req = (Inference__ModelMetadataRequest *)f.last_req;
    assert_string_equal(req->name, "simple");
    assert_string_equal(req->version, "1");
    assert_string_equal(m->name, "simple");
    assert_string_equal(m->platform, "plugin");
    assert_int_equal(m->n_versions, 1);
    assert_string_equal(m->versions[0], "1");
    assert_int_equal(m->n_inputs, 2);
    assert_int_equal(m->n_outputs, 1);
    assert_string_equal(m->inputs[1].name, "INPUT1");
    assert_string_equal(m->inputs[1].datatype, "INT32");
    assert_int_equal(m->inputs[1].rank, 2);
    assert_int_equal(m->inputs[1].shape[0], -1);
    assert_int_equal(m->inputs[1].shape[1], 16);
    assert_string_equal(m->outputs[0].name, "OUTPUT0");
    kiln_client_model_info_free(m);
    kiln_client_model_info_free(NULL);

    md.n_versions = 20; /* the API holds 16 */
    assert_int_equal(kiln_client_model_metadata(c, "simple", NULL, &m, &e), 0);
    assert_int_equal(m->n_versions, 16);
    assert_string_equal(m->versions[15], "16");
    kiln_client_model_info_free(m);
    md.n_versions = 1;

    md.rank = 9;
    m = (kiln_client_model_info *)1;
    assert_client_err(kiln_client_model_metadata(c, "simple", NULL, &m, &e), e, KILN_OUT_OF_RANGE,
                      "inputs[0] 'INPUT0': rank 9 is over 8");
    assert_null(m);
    md.rank = 2;

    char name[200];
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    md.name = name;
    assert_client_err(kiln_client_model_metadata(c, "simple", NULL, &m, &e), e, KILN_OUT_OF_RANGE,
                      "is 199 bytes, over the 127 this API holds");
    md.name = "simple";

    for (long n = 0; n < 3; n++) { /* each allocation may fail; nothing leaks */
        kiln_alloc_fail_after(n);
        int rc = kiln_client_model_metadata(c, "simple", NULL, &m, &e);
        kiln_alloc_fail_after(-1);
        assert_client_err(rc, e, KILN_RESOURCE_EXHAUSTED, "out of memory");
        assert_null(m);
    }
    assert_client_err(kiln_client_model_metadata(c, "", NULL, &m, &e), e, KILN_INVALID_ARGUMENT,
                      "model name is empty");
    assert_client_err(kiln_client_model_metadata(c, "x", NULL, NULL, &e), e, KILN_INVALID_ARGUMENT,
                      "out is NULL");
    fake_client_destroy(c, &f);
}

static ProtobufCMessage *answer_config_or_stats(fake *f, const fake_call *m,
                                                const ProtobufCMessage *req)
{
    (void)f;
    (void)req;
    if (strcmp(m->path, "/inference.GRPCInferenceService/ModelConfig") == 0) {
        Inference__ModelConfigResponse *r = calloc(1, sizeof(*r));
        inference__model_config_response__init(r);
        r->config = calloc(1, sizeof(*r->config));
        inference__model_config__init(r->config);
        r->config->name = strdup("simple");
        r->config->max_batch_size = 8;
        return &r->base;
    }
    Inference__ModelStatisticsResponse *r = calloc(1, sizeof(*r));
    inference__model_statistics_response__init(r);
    r->n_model_stats = 1;
    r->model_stats = calloc(1, sizeof(*r->model_stats));
    r->model_stats[0] = calloc(1, sizeof(*r->model_stats[0]));
    inference__model_statistics__init(r->model_stats[0]);
    r->model_stats[0]->name = strdup("simple");
    r->model_stats[0]->inference_count = 12;
    return &r->base;
}

static void test_config_and_stats_json(void **state)
{
    (void)state;
    fake f = {.respond = answer_config_or_stats};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    char *json = NULL;
    assert_int_equal(kiln_client_model_config_json(c, "simple", NULL, &json, &e), 0);
    assert_string_equal(json, "{\n  \"name\": \"simple\",\n  \"maxBatchSize\": 8\n}");
    kiln_client_free(json);
    assert_int_equal(kiln_client_model_stats_json(c, NULL, NULL, &json, &e), 0);
    assert_string_equal(((Inference__ModelStatisticsRequest *)f.last_req)->name, "");
    assert_string_equal(json, "{\n  \"modelStats\": [\n    {\n      \"name\": \"simple\",\n"
                              "      \"inferenceCount\": \"12\"\n    }\n  ]\n}");
    kiln_client_free(json);
    assert_int_equal(kiln_client_model_stats_json(c, "simple", "1", &json, &e), 0);
    assert_string_equal(((Inference__ModelStatisticsRequest *)f.last_req)->version, "1");
    kiln_client_free(json);
    json = (char *)1;
    assert_client_err(kiln_client_model_config_json(c, NULL, NULL, &json, &e), e,
                      KILN_INVALID_ARGUMENT, "model name is empty");
    assert_null(json);
    assert_client_err(kiln_client_model_stats_json(c, NULL, NULL, NULL, &e), e,
                      KILN_INVALID_ARGUMENT, "json is NULL");
    kiln_client_free(NULL);
    fake_client_destroy(c, &f);
}

static ProtobufCMessage *answer_index(fake *f, const fake_call *m, const ProtobufCMessage *req)
{
    (void)f;
    (void)m;
    (void)req;
    Inference__RepositoryIndexResponse *r = calloc(1, sizeof(*r));
    inference__repository_index_response__init(r);
    r->n_models = 2;
    r->models = calloc(2, sizeof(*r->models));
    const char *rows[2][4] = {{"simple", "1", "READY", ""},
                              {"broken", "2", "UNAVAILABLE", "load failed: no model.so"}};
    for (int i = 0; i < 2; i++) {
        r->models[i] = calloc(1, sizeof(*r->models[i]));
        inference__repository_index_response__model_index__init(r->models[i]);
        r->models[i]->name = strdup(rows[i][0]);
        r->models[i]->version = strdup(rows[i][1]);
        r->models[i]->state = strdup(rows[i][2]);
        r->models[i]->reason = strdup(rows[i][3]);
    }
    return &r->base;
}

static void test_repository(void **state)
{
    (void)state;
    fake f = {.respond = answer_index};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_repo_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(kiln_client_repository_index(c, true, &v, &n, &e), 0);
    assert_true(((Inference__RepositoryIndexRequest *)f.last_req)->ready);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "simple");
    assert_string_equal(v[0].state, "READY");
    assert_string_equal(v[1].version, "2");
    assert_string_equal(v[1].reason, "load failed: no model.so");
    kiln_client_free(v);
    assert_client_err(kiln_client_repository_index(c, false, NULL, &n, &e), e,
                      KILN_INVALID_ARGUMENT, "entries or n is NULL");
    f.respond = NULL; /* an empty repository */
    v = (kiln_client_repo_entry *)1;
    assert_int_equal(kiln_client_repository_index(c, false, &v, &n, &e), 0);
    assert_null(v);
    assert_int_equal(n, 0);

    assert_int_equal(kiln_client_load(c, "simple", &e), 0);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/RepositoryModelLoad");
    assert_string_equal(((Inference__RepositoryModelLoadRequest *)f.last_req)->model_name,
                        "simple");
    assert_int_equal(kiln_client_unload(c, "simple", &e), 0);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/RepositoryModelUnload");
    assert_string_equal(((Inference__RepositoryModelUnloadRequest *)f.last_req)->model_name,
                        "simple");
    int calls = f.calls;
    assert_client_err(kiln_client_load(c, "", &e), e, KILN_INVALID_ARGUMENT, "model name is empty");
    assert_client_err(kiln_client_unload(NULL, "x", &e), e, KILN_INVALID_ARGUMENT,
                      "the client is NULL");
    assert_int_equal(f.calls, calls);
    fake_client_destroy(c, &f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_metadata),
        cmocka_unit_test(test_config_and_stats_json),
        cmocka_unit_test(test_repository),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
