/* client/client.c: the client object, its errors, health and server metadata. */
#include "client/client_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "grpc/health/v1/health.kiln.h"
#include "proto/grpc_service.kiln.h"

_Static_assert(sizeof(((kiln_client_error *)0)->message) == KILN_ERR_MSG_MAX,
               "kiln_client_error and kiln_err hold messages of one size");

/* ---------------------------------------------------------------- errors */

const char *kiln_client_code_name(int code)
{
    return kiln_status_name((kiln_status)code);
}

int kiln__client_out(kiln_client_error *out, kiln_status st, const kiln_err *e)
{
    if (!out)
        return (int)st;
    out->code = (int)st;
    if (st == KILN_OK || !e)
        out->message[0] = '\0';
    else
        memcpy(out->message, e->msg, sizeof(out->message));
    out->message[sizeof(out->message) - 1] = '\0';
    return (int)st;
}

int kiln__client_null(kiln_client_error *out, const char *what)
{
    kiln_err e = {0};
    return kiln__client_out(out, kiln_err_set(&e, KILN_INVALID_ARGUMENT, "%s is NULL", what), &e);
}

int kiln__client_check_name(kiln_client_error *out, const char *s, const char *what)
{
    kiln_err e = {0};
    return kiln__client_out(out, kiln__need_name(s, what, &e), &e);
}

kiln_status kiln__need_name(const char *s, const char *what, kiln_err *err)
{
    if (!s || !*s)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s is empty", what);
    return KILN_OK;
}

kiln_status kiln__copy_name(char *dst, size_t cap, const char *src, const char *what, kiln_err *err)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) {
        dst[0] = '\0';
        return kiln_err_set(err, KILN_OUT_OF_RANGE,
                            "%s '%.64s...' is %zu bytes, over the %zu this "
                            "API holds",
                            what, src, n, cap - 1);
    }
    memcpy(dst, src ? src : "", n + 1);
    return KILN_OK;
}

void kiln__copy_text(char *dst, size_t cap, const char *src)
{
    int n = snprintf(dst, cap, "%s", src ? src : "");
    if (n >= 0 && (size_t)n >= cap && cap > 4)
        memcpy(dst + cap - 4, "...", 4);
}

/* ---------------------------------------------------------------- lifecycle */

void kiln_client_options_default(kiln_client_options *o)
{
    memset(o, 0, sizeof(*o));
    o->url = "127.0.0.1:8001";
    o->max_message_bytes = INT64_C(2147483647);
    o->timeout_ms = 30000;
    o->retries = 3;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
    o->backoff_multiplier = 2.0;
}

static kiln_status check_options(const kiln_client_options *o, kiln_err *err)
{
    if (!o->url || !*o->url)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "options.url is empty");
    if (o->max_message_bytes < 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "options.max_message_bytes %" PRId64 " is negative",
                            o->max_message_bytes);
    if (o->timeout_ms < 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "options.timeout_ms %" PRId64 " is negative (0 means none)",
                            o->timeout_ms);
    if (o->retries < 0 || o->retries > 100)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "options.retries %d is outside 0..100",
                            o->retries);
    if (o->backoff_initial_ms < 0 || o->backoff_max_ms < o->backoff_initial_ms)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "options.backoff_initial_ms %" PRId64 " and backoff_max_ms %" PRId64
                            " need 0 <= initial <= max",
                            o->backoff_initial_ms, o->backoff_max_ms);
    if (!(o->backoff_multiplier >= 1.0 && o->backoff_multiplier <= 1000.0))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "options.backoff_multiplier %g is outside 1..1000",
                            o->backoff_multiplier);
    return KILN_OK;
}

int kiln_client_create(const kiln_client_options *o, kiln_client **out, kiln_client_error *err)
{
    if (!out)
        return kiln__client_null(err, "out");
    kiln_err e = {0};
    *out = NULL;
    kiln_client_options def;
    if (!o) {
        kiln_client_options_default(&def);
        o = &def;
    }
    kiln_status st = check_options(o, &e);
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    kiln_client *c = kiln_calloc(1, sizeof(*c));
    if (!c)
        return kiln__client_out(err, kiln_err_set(&e, KILN_RESOURCE_EXHAUSTED, "out of memory"),
                                &e);
    kiln_rpc_channel_options ro;
    kiln_rpc_channel_options_default(&ro);
    ro.target = o->url;
    ro.tls = o->tls;
    ro.tls_ca_file = o->tls_ca_file;
    ro.tls_cert_file = o->tls_cert_file;
    ro.tls_key_file = o->tls_key_file;
    ro.tls_server_name = o->tls_server_name;
    ro.max_message_bytes = o->max_message_bytes;
    ro.default_deadline_ms = o->timeout_ms;
    ro.wait_for_ready = o->wait_for_ready;
    st = kiln_rpc_channel_create(&ro, &c->ch, &e);
    if (st != KILN_OK) {
        kiln_free(c);
        return kiln__client_out(err, st, &e);
    }
    c->timeout_ms = o->timeout_ms;
    c->retries = o->retries;
    c->backoff.initial_ms = o->backoff_initial_ms;
    c->backoff.max_ms = o->backoff_max_ms;
    c->backoff.multiplier = o->backoff_multiplier;
    c->rand = kiln__client_rand;
    c->rand_ctx = c;
    c->sleep = kiln__client_sleep;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* the seed only decorrelates clients' jitter; it need not be secret */
    atomic_init(&c->rng, (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                             ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)c);
    *out = c;
    return kiln__client_out(err, KILN_OK, NULL);
}

void kiln_client_destroy(kiln_client *c)
{
    if (!c)
        return;
    kiln_rpc_channel_destroy(c->ch);
    kiln_free(c);
}

void kiln_client_free(void *p)
{
    kiln_free(p);
}

/* ---------------------------------------------------------------- health */

int kiln_client_server_live(kiln_client *c, bool *live, kiln_client_error *err)
{
    if (!c || !live)
        return kiln__client_null(err, c ? "live" : "the client");
    *live = false;
    Inference__ServerLiveRequest req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    Inference__ServerLiveResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = inference__grpcinference_service__server_live__call(c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (st == KILN_OK) {
        *live = resp->live;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return kiln__client_out(err, st, &e);
}

int kiln_client_server_ready(kiln_client *c, bool *ready, kiln_client_error *err)
{
    if (!c || !ready)
        return kiln__client_null(err, c ? "ready" : "the client");
    *ready = false;
    Inference__ServerReadyRequest req = INFERENCE__SERVER_READY_REQUEST__INIT;
    Inference__ServerReadyResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = inference__grpcinference_service__server_ready__call(c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (st == KILN_OK) {
        *ready = resp->ready;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return kiln__client_out(err, st, &e);
}

int kiln_client_model_ready(kiln_client *c, const char *model, const char *version, bool *ready,
                            kiln_client_error *err)
{
    if (!c || !ready)
        return kiln__client_null(err, c ? "ready" : "the client");
    *ready = false;
    if (kiln__client_check_name(err, model, "model name") != 0)
        return KILN_INVALID_ARGUMENT;
    Inference__ModelReadyRequest req = INFERENCE__MODEL_READY_REQUEST__INIT;
    req.name = (char *)(uintptr_t)model;
    if (version)
        req.version = (char *)(uintptr_t)version;
    Inference__ModelReadyResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = inference__grpcinference_service__model_ready__call(c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (st == KILN_OK) {
        *ready = resp->ready;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return kiln__client_out(err, st, &e);
}

int kiln_client_health_check(kiln_client *c, const char *service, int *serving,
                             kiln_client_error *err)
{
    if (!c || !serving)
        return kiln__client_null(err, c ? "serving" : "the client");
    *serving = 0;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    if (service)
        req.service = (char *)(uintptr_t)service;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry r;
    kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = grpc__health__v1__health__check__call(c->ch, &req, &resp, &r.opts, &e);
    while (kiln__retry_again(&r, st, &e));
    if (st == KILN_OK) {
        *serving = (int)resp->status;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return kiln__client_out(err, st, &e);
}

/* ---------------------------------------------------------------- server metadata */

int kiln_client_server_metadata(kiln_client *c, kiln_client_server_info *out,
                                kiln_client_error *err)
{
    if (!c || !out)
        return kiln__client_null(err, c ? "out" : "the client");
    memset(out, 0, sizeof(*out));
    Inference__ServerMetadataRequest req = INFERENCE__SERVER_METADATA_REQUEST__INIT;
    Inference__ServerMetadataResponse *r = NULL;
    kiln_err e = {0};
    kiln_status st;
    kiln__retry rt;
    kiln__retry_begin(&rt, c, KILN__RETRY_ON_UNAVAILABLE, 0);
    do
        st = inference__grpcinference_service__server_metadata__call(c->ch, &req, &r, &rt.opts, &e);
    while (kiln__retry_again(&rt, st, &e));
    if (st != KILN_OK)
        return kiln__client_out(err, st, &e);
    kiln__copy_text(out->name, sizeof(out->name), r->name);
    kiln__copy_text(out->version, sizeof(out->version), r->version);
    char list[sizeof(out->extensions) + 1];
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < r->n_extensions && used < sizeof(list) - 1; i++) {
        int n = snprintf(list + used, sizeof(list) - used, "%s%s", i ? "," : "", r->extensions[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    kiln__copy_text(out->extensions, sizeof(out->extensions), list);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return kiln__client_out(err, KILN_OK, NULL);
}
