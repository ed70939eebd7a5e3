/*
 * server/server_int.h: the transport's internals: tags, calls, the method table.
 */
#ifndef KILN_SERVER_SERVER_INT_H
#define KILN_SERVER_SERVER_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdatomic.h>

#include "server/server.h"

typedef struct kiln_call kiln_call;
typedef struct kiln_method kiln_method;

/* What a completion-queue event is about. */
typedef enum tag_kind {
    TAG_NEW_CALL, /* a pre-posted request got a call */
    TAG_GENERIC,  /* the generic request got a call to an unknown method */
    TAG_CLOSE,    /* RECV_CLOSE_ON_SERVER: the call is over (cancelled says how) */
    TAG_FINISH,   /* the final status went out */
    TAG_RECV,     /* a streaming call's RECV_MESSAGE */
    TAG_SEND,     /* a streaming call's SEND_MESSAGE (or initial metadata) */
} tag_kind;

typedef struct kiln_tag {
    tag_kind kind;
    void *owner;
} kiln_tag;

typedef enum call_shape { SHAPE_UNARY, SHAPE_SERVER_STREAM, SHAPE_BIDI } call_shape;

/* A unary handler: answers with kiln__reply* (now or later, from any thread), exactly once. */
typedef void (*unary_fn)(kiln_call *call, grpc_byte_buffer *payload);

struct kiln_method {
    const char *name; /* method name in the service descriptor */
    call_shape shape;
    unary_fn unary;   /* SHAPE_UNARY */
    const char *path; /* "/pkg.Service/Method", from the generated method table (static) */
    void *handle;     /* grpc_server_register_method */
    bool health;      /* grpc.health.v1: still served while shutdown refuses other calls */
};

/* A pending request for one method on one queue; re-posted after each call. */
typedef struct listener {
    kiln_tag tag;
    kiln_server *srv;
    kiln_method *method; /* NULL: the generic listener */
    grpc_completion_queue *cq;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} listener;

/* A streamed message waiting to be sent. */
typedef struct send_item {
    grpc_byte_buffer *bb;
    struct send_item *next;
} send_item;

struct kiln_call {
    kiln_server *srv;
    kiln_method *method;
    grpc_call *call;
    grpc_completion_queue *cq;
    gpr_timespec deadline;
    grpc_metadata_array md;
    atomic_int refs; /* outstanding tags + the handler's own */
    kiln_tag close_tag, finish_tag, recv_tag, send_tag;
    int cancelled_flag;    /* written by RECV_CLOSE_ON_SERVER */
    atomic_bool closed;    /* RECV_CLOSE came back */
    atomic_bool cancelled; /* ... and said the call was cancelled (deadline, client gone) */
    atomic_bool replied;   /* unary: the one reply was started */
    grpc_slice status_details;
    grpc_metadata trailing[1];
    grpc_byte_buffer *send_bb;
    char request_id[64];
    /* streaming */
    pthread_mutex_t mu;
    grpc_byte_buffer *recv_bb;
    send_item *send_head, *send_tail;
    bool send_busy, half_closed, status_sent, initial_sent;
    int in_flight;
    int health_status; /* Watch: last status sent, -1 none */
    char health_service[160];
    struct kiln_call *watch_next;
};

struct kiln_server {
    kiln_server_options opt;
    kiln_engine *engine;
    grpc_server *server;
    int port;
    int n_cq;
    grpc_completion_queue **cqs;
    pthread_t *threads;
    atomic_bool shutting_down;
    /* Shutdown, first phase: listeners stay posted and new calls (but health) get UNAVAILABLE,
     * so calls the transport already holds are answered rather than dropped by gRPC. */
    atomic_bool refusing;
    _Atomic uint64_t last_new_call_ns; /* kiln_clock_now_ns of the latest accepted call */
    atomic_bool serving;
    size_t n_methods;
    kiln_method *methods;
    listener **listeners;
    size_t n_listeners;
    uint64_t started_wall_ns;
    /* health watchers and housekeeping */
    pthread_mutex_t watch_mu;
    kiln_call *watchers;
    pthread_t housekeeper;
    pthread_cond_t hk_cond;
    bool hk_stop;
    bool started;
};

/* Replies to a unary call with a status and an optional message (taken over), once. */
void kiln__reply(kiln_call *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb);
/* Replies OK with a protobuf-c message packed. */
void kiln__reply_msg(kiln_call *c, const ProtobufCMessage *msg);
/* Replies with a kiln_status and its message. */
void kiln__reply_err(kiln_call *c, kiln_status st, const kiln_err *err);

/* Drops a reference; the last one frees the call. */
void kiln__call_unref(kiln_call *c);

/* Unpacks a payload into `desc` with Kiln's allocator. NULL payload = empty message. */
kiln_status kiln__unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **out, kiln_err *err);

/* A byte buffer holding the packed message. */
grpc_byte_buffer *kiln__pack(const ProtobufCMessage *msg);

/* Streaming: queue a message to send; sends start in order, one at a time. */
void kiln__stream_send(kiln_call *c, grpc_byte_buffer *bb);
/* Streaming: a new RECV_MESSAGE. */
void kiln__stream_recv(kiln_call *c);
/* Streaming: ends the call with OK once half-closed, idle and drained. REQUIRES c->mu. */
void kiln__stream_maybe_finish_locked(kiln_call *c);

/* Handlers (server/rpc.c, server/infer.c, server/health.c). */
void kiln__rpc_bind(kiln_method *m);
void kiln__infer_stream_start(kiln_call *c);
void kiln__infer_stream_message(kiln_call *c, grpc_byte_buffer *bb);
void kiln__health_watch_start(kiln_call *c, grpc_byte_buffer *payload);
void kiln__health_watch_closed(kiln_call *c);
void kiln__health_poll(kiln_server *s);
/* Ends every Watch stream with OK (at shutdown, after NOT_SERVING went out). */
void kiln__health_finish_all(kiln_server *s);

/* The health status of a service name: 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN. */
int kiln__health_status(kiln_server *s, const char *service);

/* Whether the server serves: set serving by main, and no GPU lost to a CUDA fault (which only a
 * restart recovers from: health, ServerReady and ServerLive then say no, so that an orchestrator
 * restarts it). Thread-safety: any thread (atomics). */
bool kiln__server_serving(kiln_server *s);
bool kiln__server_gpu_lost(kiln_server *s);

#endif /* KILN_SERVER_SERVER_INT_H */
