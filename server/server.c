/*
 * server/server.c: gRPC C core plumbing: the method table from the generated tables
 * (protoc-gen-kiln-c), completion queues and their threads, pre-posted requests, per-call state,
 * the reply path (from any thread), streaming send/recv chains, shutdown.
 */
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "grpc/health/v1/health.kiln-methods.h"
#include "proto/grpc_service.kiln-methods.h"
#include "proto/textformat.h"
#include "server/server_int.h"

/* ---------------------------------------------------------------- method table */

/* The served methods come from the generated tables (protoc-gen-kiln-c): paths, streaming
 * shapes. A health-only server registers only the health service. */
static kiln_status build_methods(kiln_server *s, kiln_err *err)
{
    const kiln_proto_service *all[] = {&grpc__health__v1__health__kiln_service,
                                       &inference__grpcinference_service__kiln_service};
    size_t n_svcs = s->opt.health_only ? 1 : 2;
    size_t n = 0;
    for (size_t i = 0; i < n_svcs; i++)
        n += all[i]->n_methods;
    s->methods = kiln_calloc(n, sizeof(kiln_method));
    if (!s->methods)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n_svcs; i++) {
        for (size_t k = 0; k < all[i]->n_methods; k++) {
            const kiln_proto_method *pm = &all[i]->methods[k];
            kiln_method *m = &s->methods[s->n_methods++];
            m->name = pm->name;
            m->path = pm->path;
            m->health = all[i] == &grpc__health__v1__health__kiln_service;
            if (pm->client_streaming && pm->server_streaming)
                m->shape = SHAPE_BIDI;
            else if (pm->server_streaming)
                m->shape = SHAPE_SERVER_STREAM;
            else if (!pm->client_streaming)
                m->shape = SHAPE_UNARY;
            else
                return kiln_err_set(err, KILN_INTERNAL, "%s: client streaming is not served",
                                    m->path);
            kiln__rpc_bind(m);
            if (m->shape == SHAPE_UNARY && !m->unary)
                return kiln_err_set(err, KILN_INTERNAL, "no handler for %s", m->path);
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- calls */

static kiln_call *call_new(kiln_server *s, listener *l)
{
    kiln_call *c = kiln_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = s;
    c->method = l->method;
    c->call = l->call;
    c->cq = l->cq;
    c->deadline = l->deadline;
    c->md = l->md; /* the call owns the metadata now: the listener must not free it */
    grpc_metadata_array_init(&l->md);
    c->close_tag = (kiln_tag){TAG_CLOSE, c};
    c->finish_tag = (kiln_tag){TAG_FINISH, c};
    c->recv_tag = (kiln_tag){TAG_RECV, c};
    c->send_tag = (kiln_tag){TAG_SEND, c};
    c->health_status = -1;
    pthread_mutex_init(&c->mu, NULL);
    /* request id: the client's x-request-id, or one of our own */
    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(k) == 12 &&
            memcmp(GRPC_SLICE_START_PTR(k), "x-request-id", 12) == 0) {
            size_t n = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
            if (n >= sizeof(c->request_id))
                n = sizeof(c->request_id) - 1;
            memcpy(c->request_id, GRPC_SLICE_START_PTR(c->md.metadata[i].value), n);
            c->request_id[n] = '\0';
        }
    }
    if (!c->request_id[0]) {
        static atomic_uint_fast64_t seq;
        snprintf(c->request_id, sizeof(c->request_id), "kiln-%ld-%llu", (long)getpid(),
                 (unsigned long long)atomic_fetch_add(&seq, 1));
    }
    return c;
}

void kiln__call_unref(kiln_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    for (send_item *it = c->send_head; it;) {
        send_item *n = it->next;
        grpc_byte_buffer_destroy(it->bb);
        kiln_free(it);
        it = n;
    }
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    kiln_free(c);
}

static void start_close_watch(kiln_call *c)
{
    grpc_op op = {0};
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled_flag;
    atomic_fetch_add(&c->refs, 1);
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
        atomic_fetch_sub(&c->refs, 1);
}

/* Sends the final status (with an optional last message and the request id trailer). */
static void send_status(kiln_call *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb,
                        bool with_initial)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (with_initial) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n++].data.send_initial_metadata.count = 0;
    }
    if (bb) {
        c->send_bb = bb;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
    c->trailing[0].key = grpc_slice_from_static_string("x-request-id");
    c->trailing[0].value = grpc_slice_from_static_string(c->request_id);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    ops[n].data.send_status_from_server.trailing_metadata = c->trailing;
    ops[n++].data.send_status_from_server.trailing_metadata_count = 1;
    atomic_fetch_add(&c->refs, 1);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->finish_tag, NULL);
    if (e != GRPC_CALL_OK) {
        KILN_LOGE(NULL, "grpc_call_start_batch(status) failed: %d", (int)e);
        atomic_fetch_sub(&c->refs, 1);
    }
}

void kiln__reply(kiln_call *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb)
{
    bool expected = false;
    if (!atomic_compare_exchange_strong(&c->replied, &expected, true)) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return;
    }
    if (code != GRPC_STATUS_OK && bb) {
        grpc_byte_buffer_destroy(bb);
        bb = NULL;
    }
    if (code != GRPC_STATUS_OK)
        KILN_LOGD(&(kiln_log_ctx){.request_id = c->request_id}, "%s -> %s: %s", c->method->path,
                  kiln_status_name((kiln_status)code), msg ? msg : "");
    send_status(c, code, msg, bb, true);
    kiln__call_unref(c); /* the handler's reference */
}

grpc_byte_buffer *kiln__pack(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

void kiln__reply_msg(kiln_call *c, const ProtobufCMessage *msg)
{
    kiln__reply(c, GRPC_STATUS_OK, NULL, kiln__pack(msg));
}

void kiln__reply_err(kiln_call *c, kiln_status st, const kiln_err *err)
{
    kiln__reply(c, (grpc_status_code)st, err ? err->msg : kiln_status_name(st), NULL);
}

kiln_status kiln__unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **out, kiln_err *err)
{
    *out = NULL;
    grpc_slice flat = grpc_empty_slice();
    if (bb) {
        grpc_byte_buffer_reader rd;
        if (!grpc_byte_buffer_reader_init(&rd, bb))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "cannot read the request message");
        flat = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
    }
    *out = protobuf_c_message_unpack(desc, kiln_protobuf_allocator(), GRPC_SLICE_LENGTH(flat),
                                     GRPC_SLICE_START_PTR(flat));
    grpc_slice_unref(flat);
    if (!*out)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "the request is not a valid %s",
                            desc->name);
    return KILN_OK;
}

/* ---------------------------------------------------------------- streaming chains */

static void start_send_locked(kiln_call *c)
{
    send_item *it = c->send_head;
    if (!it || c->send_busy)
        return;
    c->send_head = it->next;
    if (!c->send_head)
        c->send_tail = NULL;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!c->initial_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n++].data.send_initial_metadata.count = 0;
        c->initial_sent = true;
    }
    c->send_bb = it->bb;
    kiln_free(it);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    c->send_busy = true;
    atomic_fetch_add(&c->refs, 1);
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&c->refs, 1);
        c->send_busy = false;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
}

void kiln__stream_send(kiln_call *c, grpc_byte_buffer *bb)
{
    send_item *it = kiln_calloc(1, sizeof(*it));
    if (!it) {
        grpc_byte_buffer_destroy(bb);
        return;
    }
    it->bb = bb;
    pthread_mutex_lock(&c->mu);
    if (c->status_sent || atomic_load(&c->closed)) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        kiln_free(it);
        return;
    }
    if (c->send_tail)
        c->send_tail->next = it;
    else
        c->send_head = it;
    c->send_tail = it;
    start_send_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void kiln__stream_maybe_finish_locked(kiln_call *c)
{
    if (c->status_sent || !c->half_closed || c->in_flight || c->send_busy || c->send_head)
        return;
    c->status_sent = true;
    send_status(c, GRPC_STATUS_OK, NULL, NULL, !c->initial_sent);
    c->initial_sent = true;
}

static void on_send_done(kiln_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    c->send_busy = false;
    if (ok)
        start_send_locked(c);
    else
        c->half_closed = true; /* the peer is gone: stop reading, finish when idle */
    kiln__stream_maybe_finish_locked(c);
    pthread_mutex_unlock(&c->mu);
    kiln__call_unref(c);
}

void kiln__stream_recv(kiln_call *c)
{
    grpc_op op = {0};
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    atomic_fetch_add(&c->refs, 1);
    if (grpc_call_start_batch(c->call, &op, 1, &c->recv_tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&c->refs, 1);
        pthread_mutex_lock(&c->mu);
        c->half_closed = true;
        kiln__stream_maybe_finish_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
}

static void on_recv_done(kiln_call *c, bool ok)
{
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!ok || !bb || atomic_load(&c->srv->shutting_down)) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        pthread_mutex_lock(&c->mu);
        c->half_closed = true;
        kiln__stream_maybe_finish_locked(c);
        pthread_mutex_unlock(&c->mu);
        kiln__call_unref(c);
        return;
    }
    kiln__infer_stream_message(c, bb); /* takes bb */
    kiln__stream_recv(c);
    kiln__call_unref(c);
}

/* ---------------------------------------------------------------- listeners */

static void post_listener(listener *l)
{
    kiln_server *s = l->srv;
    if (atomic_load(&s->shutting_down))
        return;
    l->call = NULL;
    l->payload = NULL;
    grpc_metadata_array_init(&l->md);
    grpc_call_error e;
    if (l->method) {
        bool payload = l->method->shape != SHAPE_BIDI;
        e = grpc_server_request_registered_call(s->server, l->method->handle, &l->call,
                                                &l->deadline, &l->md, payload ? &l->payload : NULL,
                                                l->cq, l->cq, &l->tag);
    } else {
        grpc_call_details_init(&l->details);
        e = grpc_server_request_call(s->server, &l->call, &l->details, &l->md, l->cq, l->cq,
                                     &l->tag);
    }
    if (e != GRPC_CALL_OK)
        KILN_LOGE(NULL, "posting a request failed: %d", (int)e);
}

static void on_generic(listener *l, bool ok)
{
    if (!ok)
        return;
    kiln_server *s = l->srv;
    static kiln_method unknown = {.name = "(unknown)", .shape = SHAPE_UNARY, .path = "(unknown)"};
    l->method = &unknown;
    kiln_call *c = call_new(s, l);
    char msg[300];
    snprintf(msg, sizeof(msg), "unknown method %.*s", (int)GRPC_SLICE_LENGTH(l->details.method),
             (const char *)GRPC_SLICE_START_PTR(l->details.method));
    grpc_call_details_destroy(&l->details);
    l->method = NULL;
    if (!c) {
        grpc_call_unref(l->call);
        grpc_metadata_array_destroy(&l->md);
    } else {
        atomic_store(&c->refs, 1);
        start_close_watch(c);
        kiln__reply(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
    }
    post_listener(l);
}

static void on_new_call(listener *l, bool ok)
{
    if (!ok)
        return; /* shutdown: the request was cancelled */
    kiln_server *s = l->srv;
    grpc_byte_buffer *payload = l->payload;
    kiln_call *c = call_new(s, l);
    post_listener(l); /* keep one posted at all times */
    if (!c) {
        if (payload)
            grpc_byte_buffer_destroy(payload);
        return;
    }
    atomic_store(&c->refs, 1); /* the handler's */
    start_close_watch(c);
    atomic_store(&s->last_new_call_ns, kiln_clock_now_ns());
    if (atomic_load(&s->refusing) && !c->method->health) {
        kiln__reply(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down", NULL);
        if (payload)
            grpc_byte_buffer_destroy(payload);
        return;
    }
    switch (c->method->shape) {
    case SHAPE_UNARY:
        c->method->unary(c, payload); /* replies now or later */
        break;
    case SHAPE_SERVER_STREAM:
        kiln__health_watch_start(c, payload);
        break;
    case SHAPE_BIDI:
        kiln__infer_stream_start(c);
        break;
    }
    if (payload)
        grpc_byte_buffer_destroy(payload);
}

static void *cq_main(void *arg)
{
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        kiln_tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW_CALL:
            on_new_call(t->owner, ev.success);
            break;
        case TAG_GENERIC:
            on_generic(t->owner, ev.success);
            break;
        case TAG_CLOSE: {
            kiln_call *c = t->owner;
            if (c->cancelled_flag) {
                atomic_store(&c->cancelled, true);
                kiln_engine_poke(c->srv->engine); /* drop its queued work now */
            }
            atomic_store(&c->closed, true);
            if (c->method->shape == SHAPE_SERVER_STREAM)
                kiln__health_watch_closed(c);
            kiln__call_unref(c);
            break;
        }
        case TAG_FINISH:
            kiln__call_unref(t->owner);
            break;
        case TAG_RECV:
            on_recv_done(t->owner, ev.success);
            break;
        case TAG_SEND:
            on_send_done(t->owner, ev.success);
            break;
        }
    }
}

/* ---------------------------------------------------------------- housekeeping */

static void *housekeeping(void *arg)
{
    kiln_server *s = arg;
    pthread_mutex_lock(&s->watch_mu);
    while (!s->hk_stop) {
        kiln_cond_wait_until(&s->hk_cond, &s->watch_mu, kiln_clock_now_ns() + 100 * KILN_NS_PER_MS);
        if (s->hk_stop)
            break;
        pthread_mutex_unlock(&s->watch_mu);
        kiln__health_poll(s);
        kiln_shm_sweep(kiln_engine_shm(s->engine));
        pthread_mutex_lock(&s->watch_mu);
    }
    pthread_mutex_unlock(&s->watch_mu);
    return NULL;
}

/* ---------------------------------------------------------------- lifecycle */

/* Reads a whole PEM file into a NUL-terminated buffer (kiln_free it). */
static kiln_status read_pem(const char *path, const char *what, char **out, kiln_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s %s cannot be read: %s", what, path,
                            strerror(errno));
    char *buf = kiln_malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!buf)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    buf[n] = '\0';
    if (!strstr(buf, "-----BEGIN ")) {
        kiln_free(buf);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "%s %s is not a PEM file", what, path);
    }
    *out = buf;
    return KILN_OK;
}

/* Insecure credentials, or TLS / mutual TLS from the options' PEM files. */
static kiln_status make_credentials(const kiln_server_options *o, grpc_server_credentials **out,
                                    kiln_err *err)
{
    bool tls = o->tls_cert_file && o->tls_cert_file[0];
    bool key = o->tls_key_file && o->tls_key_file[0];
    bool ca = o->tls_client_ca_file && o->tls_client_ca_file[0];
    if (!tls && !key && !ca) {
        *out = grpc_insecure_server_credentials_create();
        return KILN_OK;
    }
    if (!tls || !key)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "TLS needs both --tls-cert and --tls-key (a client CA alone is not "
                            "enough)");
    char *cert = NULL, *pkey = NULL, *roots = NULL;
    kiln_status st = read_pem(o->tls_cert_file, "--tls-cert", &cert, err);
    if (st == KILN_OK)
        st = read_pem(o->tls_key_file, "--tls-key", &pkey, err);
    if (st == KILN_OK && ca)
        st = read_pem(o->tls_client_ca_file, "--tls-client-ca", &roots, err);
    if (st == KILN_OK) {
        grpc_ssl_pem_key_cert_pair pair = {pkey, cert};
        *out = grpc_ssl_server_credentials_create_ex(
            roots, &pair, 1,
            ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        if (!*out)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "TLS credentials were refused by gRPC");
    }
    kiln_free(cert);
    kiln_free(pkey);
    kiln_free(roots);
    return st;
}

kiln_status kiln_server_create(const kiln_server_options *opts, kiln_engine *engine,
                               kiln_server **out, kiln_err *err)
{
    *out = NULL;
    kiln_server *s = kiln_calloc(1, sizeof(*s));
    if (!s)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    s->opt = *opts;
    s->engine = engine;
    if (s->opt.cq_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->opt.cq_threads = n > 0 ? (int)n : 1;
    }
    if (s->opt.requests_per_method <= 0)
        s->opt.requests_per_method = 16;
    if (s->opt.max_message_bytes <= 0)
        s->opt.max_message_bytes = INT32_MAX;
    pthread_mutex_init(&s->watch_mu, NULL);
    kiln_cond_init_monotonic(&s->hk_cond);
    atomic_store(&s->serving, false);
    kiln_status st = build_methods(s, err);
    if (st != KILN_OK) {
        kiln_server_destroy(s);
        return st;
    }
    grpc_init();
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = (int)s->opt.max_message_bytes}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         {.integer = (int)s->opt.max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_FRAME_SIZE, {.integer = 4 << 20}},
    };
    grpc_channel_args ca = {sizeof(args) / sizeof(args[0]), args};
    s->server = grpc_server_create(&ca, NULL);
    for (size_t i = 0; i < s->n_methods; i++) {
        kiln_method *m = &s->methods[i];
        m->handle = grpc_server_register_method(s->server, m->path, NULL,
                                                m->shape == SHAPE_BIDI
                                                    ? GRPC_SRM_PAYLOAD_NONE
                                                    : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                                0);
        if (!m->handle) {
            kiln_server_destroy(s);
            return kiln_err_set(err, KILN_INTERNAL, "cannot register %s", m->path);
        }
    }
    s->n_cq = s->opt.cq_threads;
    s->cqs = kiln_calloc((size_t)s->n_cq, sizeof(*s->cqs));
    s->threads = kiln_calloc((size_t)s->n_cq, sizeof(*s->threads));
    if (!s->cqs || !s->threads) {
        kiln_server_destroy(s);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (int i = 0; i < s->n_cq; i++) {
        s->cqs[i] = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(s->server, s->cqs[i], NULL);
    }
    grpc_server_credentials *cr = NULL;
    if ((st = make_credentials(&s->opt, &cr, err)) != KILN_OK) {
        kiln_server_destroy(s);
        return st;
    }
    s->port = grpc_server_add_http2_port(s->server, s->opt.address, cr);
    grpc_server_credentials_release(cr);
    if (s->port == 0) {
        st = kiln_err_set(err, KILN_UNAVAILABLE, "cannot listen on %s", s->opt.address);
        kiln_server_destroy(s);
        return st;
    }
    if (s->opt.unix_socket && s->opt.unix_socket[0]) {
        char target[4200];
        snprintf(target, sizeof(target), "unix:%s", s->opt.unix_socket);
        unlink(s->opt.unix_socket); /* a stale socket from an earlier run */
        grpc_server_credentials *uc = grpc_insecure_server_credentials_create();
        int ok = grpc_server_add_http2_port(s->server, target, uc);
        grpc_server_credentials_release(uc);
        if (!ok) {
            st = kiln_err_set(err, KILN_UNAVAILABLE, "cannot listen on the Unix socket %s",
                              s->opt.unix_socket);
            kiln_server_destroy(s);
            return st;
        }
    }
    *out = s;
    return KILN_OK;
}

int kiln_server_port(const kiln_server *s)
{
    return s->port;
}

void kiln_server_set_serving(kiln_server *s, bool serving)
{
    atomic_store(&s->serving, serving);
    pthread_mutex_lock(&s->watch_mu);
    pthread_cond_signal(&s->hk_cond);
    pthread_mutex_unlock(&s->watch_mu);
    kiln__health_poll(s);
}

kiln_status kiln_server_start(kiln_server *s, kiln_err *err)
{
    grpc_server_start(s->server);
    s->started_wall_ns = kiln_clock_wall_ns();
    size_t per_cq = (s->n_methods * (size_t)s->opt.requests_per_method) + 1;
    s->listeners = kiln_calloc((size_t)s->n_cq * per_cq, sizeof(listener *));
    if (!s->listeners)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (int q = 0; q < s->n_cq; q++) {
        for (size_t m = 0; m <= s->n_methods; m++) {
            int copies = m < s->n_methods ? s->opt.requests_per_method : 1;
            for (int k = 0; k < copies; k++) {
                listener *l = kiln_calloc(1, sizeof(*l));
                if (!l)
                    return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
                l->srv = s;
                l->method = m < s->n_methods ? &s->methods[m] : NULL;
                l->cq = s->cqs[q];
                l->tag = (kiln_tag){m < s->n_methods ? TAG_NEW_CALL : TAG_GENERIC, l};
                s->listeners[s->n_listeners++] = l;
                post_listener(l);
            }
        }
    }
    for (int i = 0; i < s->n_cq; i++)
        pthread_create(&s->threads[i], NULL, cq_main, s->cqs[i]);
    pthread_create(&s->housekeeper, NULL, housekeeping, s);
    s->started = true;
    return KILN_OK;
}

/* Shutdown's refusal phase ends after this long without a new call, or at most this long. */
#define KILN_REFUSE_QUIET_NS (50 * KILN_NS_PER_MS)
#define KILN_REFUSE_MAX_NS   (1000 * KILN_NS_PER_MS)

void kiln_server_shutdown(kiln_server *s, uint64_t grace_ns)
{
    if (!s || !s->started)
        return;
    kiln_server_set_serving(s, false);
    /* Phase 1: refuse new calls ourselves until none has come for a while (bounded), so that
     * calls the transport received before the signal are answered, not dropped. gRPC's own
     * shutdown drops calls it holds that no posted request has taken yet (the client would see
     * CANCELLED). */
    atomic_store(&s->refusing, true);
    uint64_t start = kiln_clock_now_ns();
    atomic_store(&s->last_new_call_ns, start);
    while (kiln_clock_now_ns() - start < KILN_REFUSE_MAX_NS &&
           kiln_clock_now_ns() - atomic_load(&s->last_new_call_ns) < KILN_REFUSE_QUIET_NS) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* Phase 2: gRPC's shutdown; calls in progress get the grace period */
    atomic_store(&s->shutting_down, true);
    kiln__health_finish_all(s);
    grpc_completion_queue *scq = grpc_completion_queue_create_for_pluck(NULL);
    int tag;
    grpc_server_shutdown_and_notify(s->server, scq, &tag);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_nanos((int64_t)grace_ns, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_pluck(scq, &tag, deadline, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        KILN_LOGW(NULL, "calls still running after the %llu ms grace period; cancelling them",
                  (unsigned long long)(grace_ns / KILN_NS_PER_MS));
        grpc_server_cancel_all_calls(s->server);
        grpc_completion_queue_pluck(scq, &tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    grpc_completion_queue_shutdown(scq);
    grpc_completion_queue_destroy(scq);
}

void kiln_server_stop(kiln_server *s)
{
    if (!s || !s->started)
        return;
    pthread_mutex_lock(&s->watch_mu);
    s->hk_stop = true;
    pthread_cond_signal(&s->hk_cond);
    pthread_mutex_unlock(&s->watch_mu);
    pthread_join(s->housekeeper, NULL);
    for (int i = 0; i < s->n_cq; i++)
        grpc_completion_queue_shutdown(s->cqs[i]);
    for (int i = 0; i < s->n_cq; i++)
        pthread_join(s->threads[i], NULL);
    s->started = false;
}

void kiln_server_destroy(kiln_server *s)
{
    if (!s)
        return;
    if (s->server)
        grpc_server_destroy(s->server);
    for (int i = 0; s->cqs && i < s->n_cq; i++)
        if (s->cqs[i])
            grpc_completion_queue_destroy(s->cqs[i]);
    for (size_t i = 0; i < s->n_listeners; i++) {
        grpc_metadata_array_destroy(&s->listeners[i]->md);
        kiln_free(s->listeners[i]);
    }
    kiln_free(s->listeners);
    kiln_free(s->cqs);
    kiln_free(s->threads);
    kiln_free(s->methods);
    pthread_cond_destroy(&s->hk_cond);
    pthread_mutex_destroy(&s->watch_mu);
    if (s->server)
        grpc_shutdown();
    kiln_free(s);
}
