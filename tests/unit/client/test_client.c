/* tests/unit/client/test_client.c: status names, errors, options, health, server metadata. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "proto/grpc_service.pb-c.h"
#include "tests/unit/client/fake.h"

static void test_code_names(void **state)
{
    (void)state;
    const char *want[] = {"OK",
                          "CANCELLED",
                          "UNKNOWN",
                          "INVALID_ARGUMENT",
                          "DEADLINE_EXCEEDED",
                          "NOT_FOUND",
                          "ALREADY_EXISTS",
                          "PERMISSION_DENIED",
                          "RESOURCE_EXHAUSTED",
                          "FAILED_PRECONDITION",
                          "ABORTED",
                          "OUT_OF_RANGE",
                          "UNIMPLEMENTED",
                          "INTERNAL",
                          "UNAVAILABLE",
                          "DATA_LOSS",
                          "UNAUTHENTICATED"};
    for (int i = 0; i < 17; i++)
        assert_string_equal(kiln_client_code_name(i), want[i]);
    assert_string_equal(kiln_client_code_name(17), "UNKNOWN_STATUS");
    assert_string_equal(kiln_client_code_name(-1), "UNKNOWN_STATUS");
}

static void test_error_mapping(void **state)
{
    (void)state;
    kiln_err e;
    kiln_err_set(&e, KILN_NOT_FOUND, "model 'x' is not in the repository");
    kiln_client_error out;
    memset(&out, 0x55, sizeof(out));
    assert_int_equal(kiln__client_out(&out, KILN_NOT_FOUND, &e), 5);
    assert_int_equal(out.code, 5);
    assert_string_equal(out.message, "model 'x' is not in the repository");
    assert_int_equal(kiln__client_out(&out, KILN_OK, &e), 0); /* OK clears the message */
    assert_int_equal(out.code, 0);
    assert_string_equal(out.message, "");
    assert_int_equal(kiln__client_out(NULL, KILN_INTERNAL, &e), 13);
    /* a message that fills the buffer stays NUL-terminated */
    char big[1000];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kiln_err_set(&e, KILN_INTERNAL, "%s", big);
    kiln__client_out(&out, KILN_INTERNAL, &e);
    assert_int_equal(strlen(out.message), sizeof(out.message) - 1);
    assert_string_equal(out.message + sizeof(out.message) - 4, "...");
}

static void test_options_defaults(void **state)
{
    (void)state;
    kiln_client_options o;
    memset(&o, 0x7f, sizeof(o));
    kiln_client_options_default(&o);
    assert_string_equal(o.url, "127.0.0.1:8001");
    assert_false(o.tls);
    assert_null(o.tls_ca_file);
    assert_int_equal(o.max_message_bytes, INT64_C(2147483647));
    assert_int_equal(o.timeout_ms, 30000);
    assert_false(o.wait_for_ready);
    assert_int_equal(o.retries, 3);
    assert_int_equal(o.backoff_initial_ms, 100);
    assert_int_equal(o.backoff_max_ms, 5000);
    assert_true(o.backoff_multiplier == 2.0);
    /* NULL options are the defaults */
    kiln_client *c = NULL;
    kiln_client_error e;
    assert_int_equal(kiln_client_create(NULL, &c, &e), 0);
    assert_non_null(c);
    assert_int_equal(c->retries, 3);
    assert_int_equal(c->timeout_ms, 30000);
    kiln_client_destroy(c);
    kiln_client_destroy(NULL);
}

static void test_options_reach_the_channel(void **state)
{
    (void)state;
    kiln_client_options o;
    kiln_client_options_default(&o);
    o.url = "unix:/tmp/kiln.sock";
    o.tls_ca_file = "ca.pem";
    o.tls_cert_file = "c.pem";
    o.tls_key_file = "c.key";
    o.tls_server_name = "kiln.example";
    o.max_message_bytes = 1 << 20;
    o.timeout_ms = 250;
    o.wait_for_ready = true;
    kiln_client *c = NULL;
    kiln_client_error e;
    assert_int_equal(kiln_client_create(&o, &c, &e), 0);
    assert_int_equal(fake_channels_open, 1);
    kiln_rpc_channel_options *ro = &fake_channel_options;
    assert_string_equal(ro->target, "unix:/tmp/kiln.sock");
    assert_false(ro->tls); /* the runtime implies TLS from the files */
    assert_string_equal(ro->tls_ca_file, "ca.pem");
    assert_string_equal(ro->tls_cert_file, "c.pem");
    assert_string_equal(ro->tls_key_file, "c.key");
    assert_string_equal(ro->tls_server_name, "kiln.example");
    assert_int_equal(ro->max_message_bytes, 1 << 20);
    assert_int_equal(ro->default_deadline_ms, 250);
    assert_true(ro->wait_for_ready);
    kiln_client_destroy(c);
    assert_int_equal(fake_channels_open, 0);
}

static void test_bad_options(void **state)
{
    (void)state;
    kiln_client_options o;
    kiln_client *c = (kiln_client *)1;
    kiln_client_error e;
#define BAD(stmt, needle)                                                                          \
    do {                                                                                           \
        kiln_client_options_default(&o);                                                           \
        stmt;                                                                                      \
        c = (kiln_client *)1;                                                                      \
        assert_client_err(kiln_client_create(&o, &c, &e), e, KILN_INVALID_ARGUMENT, needle);       \
        assert_null(c);                                                                            \
    } while (0)
    BAD(o.url = "", "options.url is empty");
    BAD(o.url = NULL, "options.url is empty");
    BAD(o.max_message_bytes = -1, "options.max_message_bytes -1 is negative");
    BAD(o.timeout_ms = -5, "options.timeout_ms -5 is negative");
    BAD(o.retries = -1, "options.retries -1 is outside 0..100");
    BAD(o.retries = 101, "options.retries 101");
    BAD(o.backoff_initial_ms = -1, "need 0 <= initial <= max");
    BAD(o.backoff_max_ms = 50, "options.backoff_initial_ms 100 and backoff_max_ms 50");
    BAD(o.backoff_multiplier = 0.5, "options.backoff_multiplier 0.5 is outside 1..1000");
    BAD(o.backoff_multiplier = 0.0 / 0.0, "options.backoff_multiplier");
#undef BAD
    kiln_client_options_default(&o);
    assert_client_err(kiln_client_create(&o, NULL, &e), e, KILN_INVALID_ARGUMENT, "out is NULL");
    assert_int_equal(fake_channels_open, 0); /* no channel was made for any of them */
}

static void test_argument_errors(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    bool b = true;
    int serving = 9;
    assert_client_err(kiln_client_server_live(NULL, &b, &e), e, KILN_INVALID_ARGUMENT,
                      "the client is NULL");
    assert_client_err(kiln_client_server_live(c, NULL, &e), e, KILN_INVALID_ARGUMENT,
                      "live is NULL");
    assert_client_err(kiln_client_server_ready(NULL, &b, &e), e, KILN_INVALID_ARGUMENT,
                      "the client is NULL");
    assert_client_err(kiln_client_model_ready(c, "", NULL, &b, &e), e, KILN_INVALID_ARGUMENT,
                      "model name is empty");
    assert_false(b);
    assert_client_err(kiln_client_model_ready(c, NULL, NULL, &b, &e), e, KILN_INVALID_ARGUMENT,
                      "model name is empty");
    assert_client_err(kiln_client_health_check(c, "", NULL, &e), e, KILN_INVALID_ARGUMENT,
                      "serving is NULL");
    assert_client_err(kiln_client_health_check(NULL, "", &serving, &e), e, KILN_INVALID_ARGUMENT,
                      "the client is NULL");
    assert_client_err(kiln_client_server_metadata(c, NULL, &e), e, KILN_INVALID_ARGUMENT,
                      "out is NULL");
    assert_int_equal(f.calls, 0); /* nothing reached the wire */
    /* err may be NULL */
    assert_int_equal(kiln_client_model_ready(c, "", NULL, &b, NULL), KILN_INVALID_ARGUMENT);
    fake_client_destroy(c, &f);
}

static ProtobufCMessage *answer_true(fake *f, const fake_call *m, const ProtobufCMessage *req)
{
    (void)f;
    (void)req;
    ProtobufCMessage *r = calloc(1, m->resp_desc->sizeof_message);
    protobuf_c_message_init(m->resp_desc, r);
    *(protobuf_c_boolean *)((char *)r + m->resp_desc->fields[0].offset) = 1;
    return r;
}

static void test_health_calls(void **state)
{
    (void)state;
    fake f = {.respond = answer_true};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    bool b = false;
    assert_int_equal(kiln_client_server_live(c, &b, &e), 0);
    assert_true(b);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/ServerLive");
    b = false;
    assert_int_equal(kiln_client_server_ready(c, &b, &e), 0);
    assert_true(b);
    assert_string_equal(f.last_path, "/inference.GRPCInferenceService/ServerReady");
    b = false;
    assert_int_equal(kiln_client_model_ready(c, "simple", "3", &b, &e), 0);
    assert_true(b);
    Inference__ModelReadyRequest *mr = (Inference__ModelReadyRequest *)f.last_req;
    assert_string_equal(mr->name, "simple");
    assert_string_equal(mr->version, "3");
    assert_int_equal(kiln_client_model_ready(c, "simple", NULL, &b, &e), 0);
    assert_string_equal(((Inference__ModelReadyRequest *)f.last_req)->version, "");
    int serving = 0;
    assert_int_equal(kiln_client_health_check(c, "simple", &serving, &e), 0);
    assert_string_equal(f.last_path, "/grpc.health.v1.Health/Check");
    assert_string_equal(((Grpc__Health__V1__HealthCheckRequest *)f.last_req)->service, "simple");
    assert_int_equal(serving, 1); /* answer_true sets the first field (status) to 1: SERVING */
    assert_int_equal(kiln_client_health_check(c, NULL, &serving, &e), 0);
    assert_string_equal(((Grpc__Health__V1__HealthCheckRequest *)f.last_req)->service, "");
    fake_client_destroy(c, &f);
}

static char long_name[300];
static ProtobufCMessage *answer_metadata(fake *f, const fake_call *m, const ProtobufCMessage *req)
{
    (void)f;
    (void)m;
    (void)req;
    Inference__ServerMetadataResponse *r = calloc(1, sizeof(*r));
    inference__server_metadata_response__init(r);
    r->name = strdup(long_name[0] ? long_name : "kiln");
    r->version = strdup("0.1.0");
    r->n_extensions = 3;
    r->extensions = calloc(3, sizeof(char *));
    r->extensions[0] = strdup("model_repository");
    r->extensions[1] = strdup("system_shared_memory");
    r->extensions[2] = strdup("cuda_shared_memory");
    return &r->base;
}

static void test_server_metadata(void **state)
{
    (void)state;
    fake f = {.respond = answer_metadata};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    kiln_client_server_info si;
    assert_int_equal(kiln_client_server_metadata(c, &si, &e), 0);
    assert_string_equal(si.name, "kiln");
    assert_string_equal(si.version, "0.1.0");
    assert_string_equal(si.extensions, "model_repository,system_shared_memory,cuda_shared_memory");
    /* display text longer than the struct holds is cut with "..." */
    memset(long_name, 'n', sizeof(long_name) - 1);
    assert_int_equal(kiln_client_server_metadata(c, &si, &e), 0);
    assert_int_equal(strlen(si.name), sizeof(si.name) - 1);
    assert_string_equal(si.name + sizeof(si.name) - 4, "...");
    long_name[0] = '\0';
    fake_client_destroy(c, &f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_names),       cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_options_defaults), cmocka_unit_test(test_options_reach_the_channel),
        cmocka_unit_test(test_bad_options),      cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_health_calls),     cmocka_unit_test(test_server_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
