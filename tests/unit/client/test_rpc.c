/*
 * tests/unit/client/test_rpc.c: the generated stubs (proto/grpc_service.kiln.h,
 * grpc/health/v1/health.kiln.h) over client/kiln_rpc.h against a live kiln-server on
 * 127.0.0.1 with an ephemeral port: unary blocking and async, the bidi stream, health Check
 * and Watch, deadlines, the server's error statuses, cancellation on destroy, the runtime by
 * path. TLS, mutual TLS, the other options, metadata and allocation failures are in
 * test_rpc_options.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.kiln.h"
#include "proto/grpc_service.kiln.h"
#include "tests/fixtures/proto/echo.kiln.h"
#include "tests/support.h"

static kiln_test_server server;
static char target[64];

static int setup(void **state)
{
    (void)state;
    kiln_test_server_start(&server, NULL);
    snprintf(target, sizeof(target), "127.0.0.1:%d", server.port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(kiln_test_server_stop(&server), 0);
    return 0;
}

static kiln_rpc_channel *channel(int64_t default_deadline_ms)
{
    kiln_rpc_channel_options o;
    kiln_rpc_channel_options_default(&o);
    o.target = target;
    o.default_deadline_ms = default_deadline_ms;
    kiln_rpc_channel *ch;
    kiln_err err;
    assert_ok(kiln_rpc_channel_create(&o, &ch, &err), &err);
    return ch;
}

/* ---------------------------------------------------------------- requests */

/* A ModelInferRequest for `simple` (INPUT0 = a + i, INPUT1 = 3) in caller storage. */
typedef struct simple_req {
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in[2], *inp[2];
    int64_t shape[2];
    int32_t a[16], b[16];
    ProtobufCBinaryData raw[2];
    char id[32];
} simple_req;

static void simple_init(simple_req *r, const char *model, int32_t a)
{
    inference__model_infer_request__init(&r->req);
    r->req.model_name = (char *)model;
    snprintf(r->id, sizeof(r->id), "req-%d", a);
    r->req.id = r->id;
    r->shape[0] = 1;
    r->shape[1] = 16;
    for (int i = 0; i < 16; i++) {
        r->a[i] = a + i;
        r->b[i] = 3;
    }
    for (int k = 0; k < 2; k++) {
        inference__model_infer_request__infer_input_tensor__init(&r->in[k]);
        r->in[k].name = k ? "INPUT1" : "INPUT0";
        r->in[k].datatype = "INT32";
        r->in[k].n_shape = 2;
        r->in[k].shape = r->shape;
        r->inp[k] = &r->in[k];
        r->raw[k].len = sizeof(r->a);
        r->raw[k].data = (uint8_t *)(k ? r->b : r->a);
    }
    r->req.n_inputs = 2;
    r->req.inputs = r->inp;
    r->req.n_raw_input_contents = 2;
    r->req.raw_input_contents = r->raw;
}

/* Checks a response of `simple` to simple_init(a): OUTPUT0 = a + i + 3, OUTPUT1 = a + i - 3. */
static void check_simple(const Inference__ModelInferResponse *r, int32_t a)
{
    assert_non_null(r);
    assert_string_equal(r->model_name, "simple");
    assert_int_equal(r->n_outputs, 2);
    assert_int_equal(r->n_raw_output_contents, 2);
    for (int k = 0; k < 2; k++) {
        const Inference__ModelInferResponse__InferOutputTensor *o = r->outputs[k];
        assert_string_equal(o->name, k ? "OUTPUT1" : "OUTPUT0");
        assert_string_equal(o->datatype, "INT32");
        assert_int_equal(r->raw_output_contents[k].len, 64);
        int32_t v[16];
        memcpy(v, r->raw_output_contents[k].data, sizeof(v));
        for (int i = 0; i < 16; i++)
            assert_int_equal(v[i], k ? a + i - 3 : a + i + 3);
    }
}

/* ---------------------------------------------------------------- unary */

static void test_server_live_and_metadata(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    Inference__ServerLiveRequest lr = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    Inference__ServerLiveResponse *live;
    assert_ok(inference__grpcinference_service__server_live__call(ch, &lr, &live, NULL, &err),
              &err);
    assert_true(live->live);
    protobuf_c_message_free_unpacked(&live->base, NULL);

    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mr.name = "simple";
    Inference__ModelMetadataResponse *md;
    assert_ok(inference__grpcinference_service__model_metadata__call(ch, &mr, &md, NULL, &err),
              &err);
    assert_string_equal(md->name, "simple");
    assert_int_equal(md->n_versions, 1);
    assert_string_equal(md->versions[0], "1");
    assert_int_equal(md->n_inputs, 2);
    assert_string_equal(md->inputs[0]->name, "INPUT0");
    assert_string_equal(md->inputs[0]->datatype, "INT32");
    assert_int_equal(md->inputs[0]->n_shape, 2);
    assert_int_equal(md->inputs[0]->shape[0], -1);
    assert_int_equal(md->inputs[0]->shape[1], 16);
    protobuf_c_message_free_unpacked(&md->base, NULL);
    kiln_rpc_channel_destroy(ch);
}

static void test_model_infer(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    simple_req r;
    simple_init(&r, "simple", 100);
    Inference__ModelInferResponse *resp;
    assert_ok(inference__grpcinference_service__model_infer__call(ch, &r.req, &resp, NULL, &err),
              &err);
    check_simple(resp, 100);
    assert_string_equal(resp->id, "req-100");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    kiln_rpc_channel_destroy(ch);
}

static void test_server_error_status(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mr.name = "nope";
    Inference__ModelMetadataResponse *md = (void *)&mr;
    assert_status(inference__grpcinference_service__model_metadata__call(ch, &mr, &md, NULL, &err),
                  KILN_NOT_FOUND, &err, "'nope' is not in the repository");
    assert_null(md);
    simple_req r;
    simple_init(&r, "nope", 0);
    Inference__ModelInferResponse *resp;
    assert_status(
        inference__grpcinference_service__model_infer__call(ch, &r.req, &resp, NULL, &err),
        KILN_NOT_FOUND, &err, "nope");
    assert_null(resp);
    /* the server's validation message comes back whole */
    simple_init(&r, "simple", 0);
    r.in[1].datatype = "FP32";
    assert_status(
        inference__grpcinference_service__model_infer__call(ch, &r.req, &resp, NULL, &err),
        KILN_INVALID_ARGUMENT, &err, "INPUT1");
    kiln_rpc_channel_destroy(ch);
}

/* ---------------------------------------------------------------- async */

typedef struct async_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int ok;
    kiln_status last;
    char message[512];
    pthread_t thread;
} async_box;

static void on_infer(void *ctx, kiln_status st, const char *message,
                     Inference__ModelInferResponse *resp)
{
    async_box *b = ctx;
    pthread_mutex_lock(&b->mu);
    if (st == KILN_OK && resp && resp->raw_output_contents[0].len == 64) {
        int32_t a;
        memcpy(&a, resp->raw_output_contents[0].data, sizeof(a));
        b->ok += a == atoi(resp->id + 4) + 3;
    }
    b->last = st;
    snprintf(b->message, sizeof(b->message), "%s", message);
    b->thread = pthread_self();
    b->done++;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void wait_done(async_box *b, int n)
{
    pthread_mutex_lock(&b->mu);
    while (b->done < n)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void box_init(async_box *b)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
}

static void box_fini(async_box *b)
{
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

static void test_async(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    async_box b;
    box_init(&b);
    enum { N = 16 };
    static simple_req r[N];
    for (int i = 0; i < N; i++) {
        simple_init(&r[i], "simple", i * 100);
        assert_ok(inference__grpcinference_service__model_infer__call_async(ch, &r[i].req, NULL,
                                                                            on_infer, &b, &err),
                  &err);
    }
    wait_done(&b, N);
    assert_int_equal(b.ok, N);
    assert_false(pthread_equal(b.thread, pthread_self())); /* the channel's thread */
    /* an error arrives through the callback, with the server's message */
    simple_req bad;
    simple_init(&bad, "nope", 0);
    assert_ok(inference__grpcinference_service__model_infer__call_async(ch, &bad.req, NULL,
                                                                        on_infer, &b, &err),
              &err);
    wait_done(&b, N + 1);
    assert_int_equal(b.last, KILN_NOT_FOUND);
    assert_non_null(strstr(b.message, "nope"));
    kiln_rpc_channel_destroy(ch);
    box_fini(&b);
}

/* ---------------------------------------------------------------- streams */

typedef struct sender {
    inference__grpcinference_service__model_stream_infer__stream *s;
    int n;
    kiln_status st;
} sender;

static void *send_all(void *arg)
{
    sender *snd = arg;
    kiln_err err;
    snd->st = KILN_OK;
    for (int i = 0; i < snd->n && snd->st == KILN_OK; i++) {
        simple_req r;
        simple_init(&r, "simple", i);
        snd->st = inference__grpcinference_service__model_stream_infer__send(snd->s, &r.req, &err);
    }
    if (snd->st == KILN_OK)
        snd->st = inference__grpcinference_service__model_stream_infer__close_send(snd->s, &err);
    return NULL;
}

static void test_stream_infer(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(0);
    kiln_err err;
    kiln_rpc_call_opts opts = {.deadline_ms = 60000};
    inference__grpcinference_service__model_stream_infer__stream *s;
    assert_ok(inference__grpcinference_service__model_stream_infer__open(ch, &opts, &s, &err),
              &err);
    /* one thread sends while this one receives */
    sender snd = {s, 200, KILN_UNKNOWN};
    pthread_t t;
    pthread_create(&t, NULL, send_all, &snd);
    int seen[200] = {0}, n = 0;
    for (;;) {
        Inference__ModelStreamInferResponse *m;
        assert_ok(inference__grpcinference_service__model_stream_infer__recv(s, &m, &err), &err);
        if (!m)
            break;
        assert_string_equal(m->error_message, "");
        int i = atoi(m->infer_response->id + 4);
        assert_in_range(i, 0, 199);
        check_simple(m->infer_response, i);
        seen[i]++;
        n++;
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    pthread_join(t, NULL);
    assert_int_equal(snd.st, KILN_OK);
    assert_int_equal(n, 200);
    for (int i = 0; i < 200; i++)
        assert_int_equal(seen[i], 1);
    /* after the end, recv keeps answering the final status */
    Inference__ModelStreamInferResponse *m;
    assert_ok(inference__grpcinference_service__model_stream_infer__recv(s, &m, &err), &err);
    assert_null(m);
    simple_req r;
    simple_init(&r, "simple", 0);
    assert_status(inference__grpcinference_service__model_stream_infer__send(s, &r.req, &err),
                  KILN_FAILED_PRECONDITION, &err, "half-closed");
    inference__grpcinference_service__model_stream_infer__close(s);
    /* a stream given up half way is cancelled by close, without reading the answers */
    assert_ok(inference__grpcinference_service__model_stream_infer__open(ch, &opts, &s, &err),
              &err);
    assert_ok(inference__grpcinference_service__model_stream_infer__send(s, &r.req, &err), &err);
    inference__grpcinference_service__model_stream_infer__close(s);
    inference__grpcinference_service__model_stream_infer__close(NULL);
    kiln_rpc_channel_destroy(ch);
}

/* ---------------------------------------------------------------- health */

static void test_health(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp;
    const char *names[] = {"", "simple"};
    for (size_t i = 0; i < 2; i++) {
        req.service = (char *)names[i];
        assert_ok(grpc__health__v1__health__check__call(ch, &req, &resp, NULL, &err), &err);
        assert_int_equal(resp->status,
                         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    req.service = "nope";
    assert_status(grpc__health__v1__health__check__call(ch, &req, &resp, NULL, &err),
                  KILN_NOT_FOUND, &err, "nope");
    /* Watch: the current status at once, then nothing until the deadline ends the stream */
    req.service = "simple";
    kiln_rpc_call_opts opts = {.deadline_ms = 500};
    grpc__health__v1__health__watch__stream *w;
    assert_ok(grpc__health__v1__health__watch__open(ch, &req, &opts, &w, &err), &err);
    assert_ok(grpc__health__v1__health__watch__recv(w, &resp, &err), &err);
    assert_non_null(resp);
    assert_int_equal(resp->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    assert_status(grpc__health__v1__health__watch__recv(w, &resp, &err), KILN_DEADLINE_EXCEEDED,
                  &err, "deadline exceeded after 500 ms");
    assert_null(resp);
    grpc__health__v1__health__watch__close(w);
    kiln_rpc_channel_destroy(ch);
}

/* ---------------------------------------------------------------- deadlines */

static void slow_request(Inference__ModelInferRequest *req,
                         Inference__ModelInferRequest__InferInputTensor *in,
                         Inference__ModelInferRequest__InferInputTensor **inp, int64_t *shape,
                         ProtobufCBinaryData *raw, float *v)
{
    inference__model_infer_request__init(req);
    inference__model_infer_request__infer_input_tensor__init(in);
    req->model_name = "slow";
    in->name = "INPUT0";
    in->datatype = "FP32";
    shape[0] = 1;
    shape[1] = 4;
    in->n_shape = 2;
    in->shape = shape;
    *inp = in;
    raw->len = 4 * sizeof(float);
    raw->data = (uint8_t *)v;
    req->n_inputs = 1;
    req->inputs = inp;
    req->n_raw_input_contents = 1;
    req->raw_input_contents = raw;
}

static void test_deadline_exceeded(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(300); /* the channel's default deadline */
    kiln_err err;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in, *inp;
    int64_t shape[2];
    ProtobufCBinaryData raw;
    float v[4] = {1, 2, 3, 4};
    slow_request(&req, &in, &inp, shape, &raw, v);
    Inference__ModelInferResponse *resp;
    /* The server gets the deadline too (grpc-timeout) and stops the slow batch when it
     * passes, so either side may say so first: this runtime's text, or the server's. */
    assert_status(inference__grpcinference_service__model_infer__call(ch, &req, &resp, NULL, &err),
                  KILN_DEADLINE_EXCEEDED, &err, NULL);
    assert_true(strstr(err.msg, "deadline exceeded after 300 ms") ||
                strstr(err.msg, "deadline passed while its batch ran"));
    kiln_rpc_call_opts opts = {.deadline_ms = 150};
    assert_status(inference__grpcinference_service__model_infer__call(ch, &req, &resp, &opts, &err),
                  KILN_DEADLINE_EXCEEDED, &err, NULL);
    assert_true(strstr(err.msg, "deadline exceeded after 150 ms") ||
                strstr(err.msg, "deadline passed while its batch ran"));
    assert_null(resp);
    /* -1: no deadline at all, so the 3 s model answers */
    opts.deadline_ms = -1;
    assert_ok(inference__grpcinference_service__model_infer__call(ch, &req, &resp, &opts, &err),
              &err);
    assert_int_equal(resp->n_raw_output_contents, 1);
    assert_memory_equal(resp->raw_output_contents[0].data, v, sizeof(v));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    kiln_rpc_channel_destroy(ch);
}

/* ---------------------------------------------------------------- destroy cancels */

typedef struct watcher {
    grpc__health__v1__health__watch__stream *w;
    kiln_status st;
    kiln_err err;
} watcher;

static void *watch_until_end(void *arg)
{
    watcher *wt = arg;
    Grpc__Health__V1__HealthCheckResponse *resp;
    do {
        wt->st = grpc__health__v1__health__watch__recv(wt->w, &resp, &wt->err);
        if (resp)
            protobuf_c_message_free_unpacked(&resp->base, NULL);
    } while (wt->st == KILN_OK && resp);
    return NULL;
}

static void test_destroy_cancels(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(0);
    kiln_err err;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in, *inp;
    int64_t shape[2];
    ProtobufCBinaryData raw;
    float v[4] = {1, 2, 3, 4};
    slow_request(&req, &in, &inp, shape, &raw, v);
    async_box b;
    box_init(&b);
    assert_ok(inference__grpcinference_service__model_infer__call_async(ch, &req, NULL, on_infer,
                                                                        &b, &err),
              &err);
    Grpc__Health__V1__HealthCheckRequest hr = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    watcher wt = {.st = KILN_OK};
    assert_ok(grpc__health__v1__health__watch__open(ch, &hr, NULL, &wt.w, &err), &err);
    pthread_t t;
    pthread_create(&t, NULL, watch_until_end, &wt);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kiln_rpc_channel_destroy(ch); /* the callback has run when this returns */
    assert_int_equal(b.done, 1);
    assert_int_equal(b.last, KILN_CANCELLED);
    assert_string_equal(b.message, "the channel was destroyed");
    pthread_join(t, NULL);
    assert_status(wt.st, KILN_CANCELLED, &wt.err, "the channel was destroyed");
    grpc__health__v1__health__watch__close(wt.w); /* the stream outlived its channel */
    box_fini(&b);
    kiln_rpc_channel_destroy(NULL);
}

/* ---------------------------------------------------------------- other services' stubs */

/* The fixture's stubs against kiln-server, which does not serve kiln.fixture.v1alpha.Echo:
 * every shape of call reports the server's UNIMPLEMENTED and its message. */
static void test_unimplemented_shapes(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    const char *want = "unknown method /kiln.fixture.v1alpha.Echo/";
    Kiln__Fixture__V1alpha__EchoRequest req = KILN__FIXTURE__V1ALPHA__ECHO_REQUEST__INIT;
    req.text = "hello";
    Kiln__Fixture__V1alpha__EchoReply *reply;
    assert_status(kiln__fixture__v1alpha__echo__say__call(ch, &req, &reply, NULL, &err),
                  KILN_UNIMPLEMENTED, &err, want);

    kiln__fixture__v1alpha__echo__repeat__stream *rs;
    kiln_status st = kiln__fixture__v1alpha__echo__repeat__open(ch, &req, NULL, &rs, &err);
    if (st == KILN_OK) { /* the server's answer may come after the request went out */
        st = kiln__fixture__v1alpha__echo__repeat__recv(rs, &reply, &err);
        assert_null(reply);
        kiln__fixture__v1alpha__echo__repeat__close(rs);
    } else {
        assert_null(rs);
    }
    assert_status(st, KILN_UNIMPLEMENTED, &err, want);

    kiln__fixture__v1alpha__echo__collect__stream *cs;
    assert_ok(kiln__fixture__v1alpha__echo__collect__open(ch, NULL, &cs, &err), &err);
    Kiln__Fixture__V1alpha__Outer__InnerNote note = KILN__FIXTURE__V1ALPHA__OUTER__INNER_NOTE__INIT;
    st = kiln__fixture__v1alpha__echo__collect__send(cs, &note, &err);
    assert_true(st == KILN_OK || st == KILN_UNIMPLEMENTED);
    Kiln__Fixture__V1alpha__EchoStats *stats;
    assert_status(kiln__fixture__v1alpha__echo__collect__finish(cs, &stats, &err),
                  KILN_UNIMPLEMENTED, &err, want);
    assert_null(stats);
    kiln__fixture__v1alpha__echo__collect__close(cs);

    kiln__fixture__v1alpha__echo__chat__stream *bs;
    assert_ok(kiln__fixture__v1alpha__echo__chat__open(ch, NULL, &bs, &err), &err);
    assert_status(kiln__fixture__v1alpha__echo__chat__recv(bs, &reply, &err), KILN_UNIMPLEMENTED,
                  &err, want);
    kiln__fixture__v1alpha__echo__chat__close(bs);
    kiln_rpc_channel_destroy(ch);
}

/* ---------------------------------------------------------------- the runtime by path */

static void test_runtime_by_path(void **state)
{
    (void)state;
    kiln_rpc_channel *ch = channel(10000);
    kiln_err err;
    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mr.name = "simple";
    ProtobufCMessage *resp;
    assert_status(kiln_rpc_unary(ch, "ModelMetadata", &mr.base,
                                 &inference__model_metadata_response__descriptor, &resp, NULL,
                                 &err),
                  KILN_INVALID_ARGUMENT, &err, "path 'ModelMetadata' is not");
    assert_status(kiln_rpc_unary(ch, "/inference.GRPCInferenceService/ModelMetadata", NULL,
                                 &inference__model_metadata_response__descriptor, &resp, NULL,
                                 &err),
                  KILN_INVALID_ARGUMENT, &err, "a request");
    /* an answer that is not the message asked for */
    assert_status(kiln_rpc_unary(ch, "/inference.GRPCInferenceService/ModelMetadata", &mr.base,
                                 &grpc__health__v1__health_check_response__descriptor, &resp, NULL,
                                 &err),
                  KILN_INTERNAL, &err,
                  "the server's answer is not a valid grpc.health.v1.HealthCheckResponse");
    assert_null(resp);
    /* finish wants exactly one response: ModelStreamInfer answers none, then two */
    const char *path = "/inference.GRPCInferenceService/ModelStreamInfer";
    const ProtobufCMessageDescriptor *d = &inference__model_stream_infer_response__descriptor;
    kiln_rpc_stream *s;
    assert_ok(kiln_rpc_stream_open(ch, path, d, NULL, &s, &err), &err);
    assert_status(kiln_rpc_stream_finish(s, &resp, &err), KILN_INTERNAL, &err,
                  "the server answered with no inference.ModelStreamInferResponse instead of one");
    assert_null(resp);
    kiln_rpc_stream_destroy(s);
    simple_req r;
    simple_init(&r, "simple", 0);
    assert_ok(kiln_rpc_stream_open(ch, path, d, NULL, &s, &err), &err);
    assert_ok(kiln_rpc_stream_send(s, &r.req.base, &err), &err);
    assert_ok(kiln_rpc_stream_send(s, &r.req.base, &err), &err);
    assert_status(kiln_rpc_stream_finish(s, &resp, &err), KILN_INTERNAL, &err, "more than one");
    kiln_rpc_stream_destroy(s);
    /* and one: ModelStreamInfer with one request */
    assert_ok(kiln_rpc_stream_open(ch, path, d, NULL, &s, &err), &err);
    assert_ok(kiln_rpc_stream_send(s, &r.req.base, &err), &err);
    assert_ok(kiln_rpc_stream_finish(s, &resp, &err), &err);
    check_simple(((Inference__ModelStreamInferResponse *)resp)->infer_response, 0);
    protobuf_c_message_free_unpacked(resp, NULL);
    kiln_rpc_stream_destroy(s);
    kiln_rpc_channel_destroy(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_live_and_metadata),
        cmocka_unit_test(test_model_infer),
        cmocka_unit_test(test_server_error_status),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_stream_infer),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_deadline_exceeded),
        cmocka_unit_test(test_destroy_cancels),
        cmocka_unit_test(test_unimplemented_shapes),
        cmocka_unit_test(test_runtime_by_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
