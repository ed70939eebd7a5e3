/* tests/unit/client/test_infer.c: ModelInfer requests as sent and results as read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/alloc.h"
#include "proto/grpc_service.pb-c.h"
#include "tests/unit/client/fake.h"

static int32_t a[16], b[16];

static kiln_client_tensor int_input(const char *name, const int32_t *data)
{
    kiln_client_tensor t;
    memset(&t, 0, sizeof(t));
    t.name = name;
    t.datatype = "INT32";
    t.rank = 2;
    t.shape[0] = 1;
    t.shape[1] = 16;
    t.data = data;
    t.byte_size = 64;
    return t;
}

static const char *param_str(size_t n,
                             Inference__ModelInferRequest__InferInputTensor__ParametersEntry **p,
                             const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p[i]->key, key) == 0)
            return p[i]->value->string_param;
    return NULL;
}

static int64_t param_int(size_t n,
                         Inference__ModelInferRequest__InferInputTensor__ParametersEntry **p,
                         const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p[i]->key, key) == 0)
            return p[i]->value->int64_param;
    return -1;
}

static void test_argument_errors(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_result *r = (kiln_client_result *)1;
    kiln_client_tensor in[2] = {int_input("INPUT0", a), int_input("INPUT1", b)};
    kiln_client_output out = {.name = "OUTPUT0"};
#define BAD(call, needle)                                                                          \
    do {                                                                                           \
        r = (kiln_client_result *)1;                                                               \
        assert_client_err((call), e, KILN_INVALID_ARGUMENT, needle);                               \
    } while (0)
    BAD(kiln_client_infer(NULL, "simple", in, 2, NULL, 0, NULL, &r, &e), "the client is NULL");
    BAD(kiln_client_infer(c, "simple", in, 2, NULL, 0, NULL, NULL, &e), "result is NULL");
    BAD(kiln_client_infer(c, "", in, 2, NULL, 0, NULL, &r, &e), "model name is empty");
    assert_null(r);
    BAD(kiln_client_infer(c, "simple", NULL, 2, NULL, 0, NULL, &r, &e),
        "inputs is NULL with a count of 2");
    BAD(kiln_client_infer(c, "simple", in, 2, NULL, 1, NULL, &r, &e),
        "outputs is NULL with a count of 1");
    kiln_client_tensor t = int_input("", a);
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e), "inputs[0]: name is empty");
    t = int_input("X", a);
    t.datatype = "FLOAT";
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e),
        "inputs[0] 'X': datatype 'FLOAT' is not a KServe v2 datatype");
    t.datatype = NULL;
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e), "datatype '(null)'");
    t = int_input("X", a);
    t.rank = 9;
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e), "rank 9 is outside 0..8");
    t = int_input("X", a);
    t.shape[1] = -16;
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e),
        "inputs[0] 'X': shape[1] = -16 is negative");
    assert_int_equal(kiln_client_infer(c, "simple", in, 2, NULL, 0, NULL, &r, &e), 0);
    kiln_client_result_free(r); /* the one call that reaches the wire */
    t = int_input("X", a);
    t.byte_size = 60;
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e),
        "inputs[0] 'X': byte_size 60 does not match shape [1,16] of INT32 (64 bytes)");
    t = int_input("X", NULL);
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e),
        "inputs[0] 'X': data is NULL with byte_size 64");
    t = int_input("X", NULL);
    t.shm_region = "";
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e),
        "inputs[0] 'X': shm_region is empty");
    t.datatype = "BYTES";
    t.shm_region = "r";
    t.byte_size = 0;
    BAD(kiln_client_infer(c, "simple", &t, 1, NULL, 0, NULL, &r, &e),
        "a shared-memory input needs byte_size");
    out.name = NULL;
    BAD(kiln_client_infer(c, "simple", in, 2, &out, 1, NULL, &r, &e), "outputs[0]: name is empty");
    out.name = "O";
    out.shm_region = "";
    BAD(kiln_client_infer(c, "simple", in, 2, &out, 1, NULL, &r, &e),
        "outputs[0] 'O': shm_region is empty");
    out.shm_region = "r";
    BAD(kiln_client_infer(c, "simple", in, 2, &out, 1, NULL, &r, &e),
        "outputs[0] 'O': a shared-memory output needs shm_byte_size");
#undef BAD
    assert_int_equal(f.calls, 1);
    fake_client_destroy(c, &f);
}

static void test_request_on_the_wire(void **state)
{
    (void)state;
    for (int i = 0; i < 16; i++)
        a[i] = i, b[i] = 100 + i;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_result *r = NULL;
    kiln_client_tensor in[2] = {int_input("INPUT0", a), int_input("INPUT1", b)};
    kiln_client_output out[2] = {
        {.name = "OUTPUT1"},
        {.name = "OUTPUT0", .shm_region = "outs", .shm_offset = 128, .shm_byte_size = 64}};
    kiln_client_infer_options io = {.version = "1", .request_id = "req-7"};
    assert_int_equal(kiln_client_infer(c, "simple", in, 2, out, 2, &io, &r, &e), 0);
    kiln_client_result_free(r);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/ModelInfer");
    Inference__ModelInferRequest *q = (Inference__ModelInferRequest *)f.last_req;
    assert_string_equal(q->model_name, "simple");
    assert_string_equal(q->model_version, "1");
    assert_string_equal(q->id, "req-7");
    assert_int_equal(q->n_inputs, 2);
    assert_string_equal(q->inputs[1]->name, "INPUT1");
    assert_string_equal(q->inputs[1]->datatype, "INT32");
    assert_int_equal(q->inputs[1]->n_shape, 2);
    assert_int_equal(q->inputs[1]->shape[1], 16);
    assert_int_equal(q->inputs[1]->n_parameters, 0);
    assert_int_equal(q->n_raw_input_contents, 2);
    assert_int_equal(q->raw_input_contents[1].len, 64);
    assert_memory_equal(q->raw_input_contents[1].data, b, 64);
    assert_int_equal(q->n_outputs, 2);
    assert_string_equal(q->outputs[0]->name, "OUTPUT1");
    assert_int_equal(q->outputs[0]->n_parameters, 0);
    Inference__ModelInferRequest__InferRequestedOutputTensor *o = q->outputs[1];
    assert_int_equal(o->n_parameters, 3);
    /* output and input parameter entries share their layout */
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry **op = (void *)o->parameters;
    assert_string_equal(param_str(3, op, "shared_memory_region"), "outs");
    assert_int_equal(param_int(3, op, "shared_memory_byte_size"), 64);
    assert_int_equal(param_int(3, op, "shared_memory_offset"), 128);

    /* an input in shared memory: its raw entry is empty, its window computed from the shape */
    in[0].data = NULL;
    in[0].byte_size = 0;
    in[0].shm_region = "ins";
    assert_int_equal(kiln_client_infer(c, "simple", in, 2, NULL, 0, NULL, &r, &e), 0);
    kiln_client_result_free(r);
    q = (Inference__ModelInferRequest *)f.last_req;
    assert_string_equal(q->model_version, "");
    assert_string_equal(q->id, "");
    assert_int_equal(q->n_outputs, 0);
    assert_int_equal(q->n_raw_input_contents, 2);
    assert_int_equal(q->raw_input_contents[0].len, 0);
    assert_int_equal(q->raw_input_contents[1].len, 64);
    assert_int_equal(q->inputs[0]->n_parameters, 2); /* offset 0 is not sent */
    assert_string_equal(param_str(2, q->inputs[0]->parameters, "shared_memory_region"), "ins");
    assert_int_equal(param_int(2, q->inputs[0]->parameters, "shared_memory_byte_size"), 64);
    /* every input in shared memory: no raw contents at all */
    in[1].data = NULL;
    in[1].byte_size = 64;
    in[1].shm_region = "ins";
    in[1].shm_offset = 64;
    assert_int_equal(kiln_client_infer(c, "simple", in, 2, NULL, 0, NULL, &r, &e), 0);
    kiln_client_result_free(r);
    q = (Inference__ModelInferRequest *)f.last_req;
    assert_int_equal(q->n_raw_input_contents, 0);
    assert_int_equal(param_int(3, q->inputs[1]->parameters, "shared_memory_offset"), 64);
    fake_client_destroy(c, &f);
}

typedef enum { ANSWER_RAW, ANSWER_TYPED, ANSWER_SHM } answer_kind;
static answer_kind kind;

static Inference__ModelInferResponse__InferOutputTensor *otensor(const char *name, const char *dt,
                                                                 int64_t n)
{
    Inference__ModelInferResponse__InferOutputTensor *t = calloc(1, sizeof(*t));
    inference__model_infer_response__infer_output_tensor__init(t);
    t->name = strdup(name);
    t->datatype = strdup(dt);
    t->n_shape = 2;
    t->shape = calloc(2, sizeof(int64_t));
    t->shape[0] = 1;
    t->shape[1] = n;
    return t;
}

static ProtobufCMessage *answer(fake *f, const fake_call *m, const ProtobufCMessage *req)
{
    (void)f;
    (void)m;
    (void)req;
    Inference__ModelInferResponse *r = calloc(1, sizeof(*r));
    inference__model_infer_response__init(r);
    r->model_name = strdup("simple");
    r->model_version = strdup("1");
    r->id = strdup("req-9");
    r->n_outputs = 3;
    r->outputs = calloc(3, sizeof(*r->outputs));
    r->outputs[0] = otensor("OUTPUT0", "INT32", 4);
    r->outputs[1] = otensor("NAMES", "BYTES", 2);
    r->outputs[2] = otensor("FLAGS", "BOOL", 3);
    if (kind == ANSWER_RAW || kind == ANSWER_SHM) {
        r->n_raw_output_contents = 3;
        r->raw_output_contents = calloc(3, sizeof(ProtobufCBinaryData));
        int32_t v[4] = {1, -2, 3, 4};
        if (kind == ANSWER_RAW) {
            r->raw_output_contents[0].len = 16;
            r->raw_output_contents[0].data = malloc(16);
            memcpy(r->raw_output_contents[0].data, v, 16);
        }
        r->raw_output_contents[1].len = 11;
        r->raw_output_contents[1].data = malloc(11);
        memcpy(r->raw_output_contents[1].data, "\2\0\0\0hi\1\0\0\0x", 11);
        r->raw_output_contents[2].len = 3;
        r->raw_output_contents[2].data = malloc(3);
        memcpy(r->raw_output_contents[2].data, "\1\0\1", 3);
    } else {
        Inference__InferTensorContents *c0 = calloc(1, sizeof(*c0)), *c1 = calloc(1, sizeof(*c1)),
                                       *c2 = calloc(1, sizeof(*c2));
        inference__infer_tensor_contents__init(c0);
        inference__infer_tensor_contents__init(c1);
        inference__infer_tensor_contents__init(c2);
        c0->n_int_contents = 4;
        c0->int_contents = calloc(4, sizeof(int32_t));
        c0->int_contents[0] = 1, c0->int_contents[1] = -2, c0->int_contents[2] = 3,
        c0->int_contents[3] = 4;
        c1->n_bytes_contents = 2;
        c1->bytes_contents = calloc(2, sizeof(ProtobufCBinaryData));
        c1->bytes_contents[0].data = (uint8_t *)strdup("hi");
        c1->bytes_contents[0].len = 2;
        c1->bytes_contents[1].data = (uint8_t *)strdup("x");
        c1->bytes_contents[1].len = 1;
        c2->n_bool_contents = 3;
        c2->bool_contents = calloc(3, sizeof(protobuf_c_boolean));
        c2->bool_contents[0] = 1, c2->bool_contents[2] = 1;
        r->outputs[0]->contents = c0;
        r->outputs[1]->contents = c1;
        r->outputs[2]->contents = c2;
    }
    return &r->base;
}

static void check_result(kiln_client_result *r, bool shm)
{
    kiln_client_error e;
    kiln_client_tensor t;
    assert_int_equal(kiln_client_result_count(r), 3);
    assert_string_equal(kiln_client_result_model(r), "simple");
    assert_string_equal(kiln_client_result_id(r), "req-9");
    assert_int_equal(kiln_client_result_output(r, 0, &t, &e), 0);
    assert_string_equal(t.name, "OUTPUT0");
    assert_string_equal(t.datatype, "INT32");
    assert_int_equal(t.rank, 2);
    assert_int_equal(t.shape[1], 4);
    assert_int_equal(t.byte_size, 16);
    if (shm) {
        assert_null(t.data);
        assert_string_equal(t.shm_region, "outs");
        assert_int_equal(t.shm_offset, 32);
    } else {
        const int32_t want[4] = {1, -2, 3, 4};
        assert_memory_equal(t.data, want, 16);
        assert_null(t.shm_region);
    }
    assert_int_equal(kiln_client_result_find(r, "NAMES", &t, &e), 0);
    assert_int_equal(t.byte_size, 11);
    assert_memory_equal(t.data, "\2\0\0\0hi\1\0\0\0x", 11);
    assert_int_equal(kiln_client_result_find(r, "FLAGS", &t, &e), 0);
    assert_int_equal(t.byte_size, 3);
    assert_memory_equal(t.data, "\1\0\1", 3);
    assert_client_err(kiln_client_result_find(r, "NOPE", &t, &e), e, KILN_NOT_FOUND,
                      "the result has no output 'NOPE' (it has: OUTPUT0, NAMES, FLAGS)");
    assert_client_err(kiln_client_result_output(r, 3, &t, &e), e, KILN_NOT_FOUND,
                      "output index 3 is out of range (the result has 3 outputs)");
    assert_client_err(kiln_client_result_find(r, NULL, &t, &e), e, KILN_INVALID_ARGUMENT,
                      "name is NULL");
}

static void test_results(void **state)
{
    (void)state;
    fake f = {.respond = answer};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_result *r = NULL;
    kind = ANSWER_RAW;
    assert_int_equal(kiln_client_infer(c, "simple", NULL, 0, NULL, 0, NULL, &r, &e), 0);
    check_result(r, false);
    kiln_client_result_free(r);
    kind = ANSWER_TYPED; /* typed contents become the same bytes */
    assert_int_equal(kiln_client_infer(c, "simple", NULL, 0, NULL, 0, NULL, &r, &e), 0);
    check_result(r, false);
    kiln_client_result_free(r);
    kind = ANSWER_SHM;
    char region[] = "outs"; /* the result keeps its own copy of the region name */
    kiln_client_output out = {
        .name = "OUTPUT0", .shm_region = region, .shm_offset = 32, .shm_byte_size = 64};
    assert_int_equal(kiln_client_infer(c, "simple", NULL, 0, &out, 1, NULL, &r, &e), 0);
    region[0] = 'X';
    check_result(r, true);
    kiln_client_result_free(r);
    kiln_client_result_free(NULL);
    assert_int_equal(kiln_client_result_count(NULL), 0);
    assert_string_equal(kiln_client_result_model(NULL), "");
    assert_string_equal(kiln_client_result_id(NULL), "");
    fake_client_destroy(c, &f);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    fake f = {.respond = answer};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_tensor in[2] = {int_input("INPUT0", a), int_input("INPUT1", b)};
    kiln_client_output out = {.name = "OUTPUT0", .shm_region = "outs", .shm_byte_size = 64};
    kind = ANSWER_TYPED;
    for (long n = 0;; n++) {
        kiln_client_result *r = NULL;
        kiln_alloc_fail_after(n);
        int rc = kiln_client_infer(c, "simple", in, 2, &out, 1, NULL, &r, &e);
        kiln_alloc_fail_after(-1);
        if (rc == 0) {
            assert_true(n > 6);
            kiln_client_result_free(r);
            break;
        }
        assert_client_err(rc, e, KILN_RESOURCE_EXHAUSTED, "out of memory");
        assert_null(r);
    }
    fake_client_destroy(c, &f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_request_on_the_wire),
        cmocka_unit_test(test_results),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
