/*
 * server/health.c: grpc.health.v1.Health: Check and Watch for "" (the server) and for each
 * model name (SERVING when the model is READY), answered on the transport threads. Everything is
 * NOT_SERVING once a GPU is lost (registry.h).
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "proto/textformat.h"
#include "server/server_int.h"

enum {
    H_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
    H_NOT_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
    H_UNKNOWN = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN,
};

bool kiln__server_gpu_lost(kiln_server *s)
{
    return kiln_registry_lost_gpus(kiln_engine_registry(s->engine), NULL, 0) != 0;
}

bool kiln__server_serving(kiln_server *s)
{
    return atomic_load(&s->serving) && !kiln__server_gpu_lost(s);
}

int kiln__health_status(kiln_server *s, const char *service)
{
    bool serving = kiln__server_serving(s);
    if (!service[0])
        return serving ? H_SERVING : H_NOT_SERVING;
    kiln_model *m;
    kiln_err e;
    kiln_status st = kiln_registry_acquire(kiln_engine_registry(s->engine), service, 0, &m, &e);
    if (st == KILN_OK) {
        kiln_model_release(m);
        return serving ? H_SERVING : H_NOT_SERVING;
    }
    return st == KILN_NOT_FOUND || st == KILN_INVALID_ARGUMENT ? H_UNKNOWN : H_NOT_SERVING;
}

static grpc_byte_buffer *status_message(int status)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = status;
    return kiln__pack(&r.base);
}

static void health_check(kiln_call *c, grpc_byte_buffer *payload)
{
    ProtobufCMessage *msg;
    kiln_err e;
    kiln_status st =
        kiln__unpack(payload, &grpc__health__v1__health_check_request__descriptor, &msg, &e);
    if (st != KILN_OK) {
        kiln__reply_err(c, st, &e);
        return;
    }
    const char *svc = ((Grpc__Health__V1__HealthCheckRequest *)msg)->service;
    int status = kiln__health_status(c->srv, svc);
    if (status == H_UNKNOWN) {
        char m[300];
        snprintf(m, sizeof(m), "unknown service '%.200s' (use \"\" or a model name)", svc);
        kiln_textformat_free(msg);
        kiln__reply(c, GRPC_STATUS_NOT_FOUND, m, NULL);
        return;
    }
    kiln_textformat_free(msg);
    kiln__reply(c, GRPC_STATUS_OK, NULL, status_message(status));
}

void kiln__health_watch_start(kiln_call *c, grpc_byte_buffer *payload)
{
    ProtobufCMessage *msg;
    kiln_err e;
    if (kiln__unpack(payload, &grpc__health__v1__health_check_request__descriptor, &msg, &e) !=
        KILN_OK) {
        pthread_mutex_lock(&c->mu);
        c->status_sent = true;
        pthread_mutex_unlock(&c->mu);
        kiln__reply_err(c, KILN_INVALID_ARGUMENT, &e);
        return;
    }
    snprintf(c->health_service, sizeof(c->health_service), "%s",
             ((Grpc__Health__V1__HealthCheckRequest *)msg)->service);
    kiln_textformat_free(msg);
    kiln_server *s = c->srv;
    /* the watch list holds the handler's reference until the stream closes */
    pthread_mutex_lock(&s->watch_mu);
    c->watch_next = s->watchers;
    s->watchers = c;
    pthread_mutex_unlock(&s->watch_mu);
    int status = kiln__health_status(s, c->health_service);
    c->health_status = status;
    kiln__stream_send(c, status_message(status));
}

void kiln__health_watch_closed(kiln_call *c)
{
    kiln_server *s = c->srv;
    bool found = false;
    pthread_mutex_lock(&s->watch_mu);
    for (kiln_call **pp = &s->watchers; *pp; pp = &(*pp)->watch_next) {
        if (*pp == c) {
            *pp = c->watch_next;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->watch_mu);
    if (found)
        kiln__call_unref(c); /* the watch list's reference */
}

void kiln__health_poll(kiln_server *s)
{
    /* take references under the lock, talk to gRPC outside it */
    kiln_call *list[256];
    size_t n = 0;
    pthread_mutex_lock(&s->watch_mu);
    for (kiln_call *c = s->watchers; c && n < 256; c = c->watch_next) {
        atomic_fetch_add(&c->refs, 1);
        list[n++] = c;
    }
    pthread_mutex_unlock(&s->watch_mu);
    for (size_t i = 0; i < n; i++) {
        kiln_call *c = list[i];
        int status = kiln__health_status(s, c->health_service);
        pthread_mutex_lock(&c->mu);
        bool changed = status != c->health_status;
        c->health_status = status;
        pthread_mutex_unlock(&c->mu);
        if (changed)
            kiln__stream_send(c, status_message(status));
        kiln__call_unref(c);
    }
}

void kiln__health_bind(kiln_method *m);
void kiln__health_bind(kiln_method *m)
{
    if (strcmp(m->name, "Check") == 0)
        m->unary = health_check;
}

void kiln__health_finish_all(kiln_server *s)
{
    pthread_mutex_lock(&s->watch_mu);
    for (kiln_call *c = s->watchers; c; c = c->watch_next) {
        pthread_mutex_lock(&c->mu);
        c->half_closed = true; /* end with OK once the last status message is out */
        kiln__stream_maybe_finish_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->watch_mu);
}
