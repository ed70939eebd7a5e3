/*
 * client/kiln_rpc.h: the gRPC C core runtime under Kiln's generated client stubs
 * (protoc-gen-kiln-c) and under libkilnclient. Internal to client/ (not installed).
 *
 * A channel is one grpc_channel plus a completion queue and one thread that drives the async
 * calls and streams made on it. Blocking calls use their own completion queue per call.
 * Messages are protobuf-c messages; the runtime packs requests and unpacks responses (the
 * caller frees a response with protobuf_c_message_free_unpacked(resp, NULL)).
 * Errors: kiln_status values equal gRPC status codes (common/status.h); err->msg holds the
 * server's status message, or a local one ("deadline exceeded after 500 ms", "cannot read
 * TLS file ...").
 * Thread-safety: a channel may be used from any number of threads at once.
 */
#ifndef KILN_CLIENT_KILN_RPC_H
#define KILN_CLIENT_KILN_RPC_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/status.h"

typedef struct kiln_rpc_channel kiln_rpc_channel;

typedef struct kiln_rpc_channel_options {
    const char *target;          /* "host:port", "unix:/path" */
    bool tls;                    /* TLS (implied by any tls_* file) */
    const char *tls_ca_file;     /* PEM roots to verify the server; NULL: system roots */
    const char *tls_cert_file;   /* PEM client certificate chain (mutual TLS) */
    const char *tls_key_file;    /* PEM client key (mutual TLS) */
    const char *tls_server_name; /* name to verify instead of the target's host */
    int64_t max_message_bytes;   /* send and receive limit; 0: 2 GiB - 1 */
    int64_t default_deadline_ms; /* for calls that give none; 0: no deadline */
    bool wait_for_ready;         /* calls wait for the channel instead of failing fast */
} kiln_rpc_channel_options;

/* Zeroes *o and sets the defaults above. */
void kiln_rpc_channel_options_default(kiln_rpc_channel_options *o);

/* OUT: *out. INVALID_ARGUMENT for a missing target or an unreadable TLS file (named). No
 * connection is made here (gRPC connects lazily). */
kiln_status kiln_rpc_channel_create(const kiln_rpc_channel_options *o, kiln_rpc_channel **out,
                                    kiln_err *err);

/* Cancels what is in flight (their callbacks run with CANCELLED), joins the thread, frees.
 * NULL is a no-op. */
void kiln_rpc_channel_destroy(kiln_rpc_channel *ch);

/* Per call. A zeroed struct means: the channel's deadline and wait-for-ready, no metadata. */
typedef struct kiln_rpc_call_opts {
    int64_t deadline_ms;         /* > 0: this deadline; 0: the channel's; < 0: none */
    int wait_for_ready;          /* 0: the channel's; 1: on; -1: off */
    const char *const *metadata; /* NULL, or key, value, key, value..., NULL */
} kiln_rpc_call_opts;

/* Blocking unary call of `path` ("/inference.GRPCInferenceService/ServerLive"). OUT: *resp
 * (NULL on error). */
kiln_status kiln_rpc_unary(kiln_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           const kiln_rpc_call_opts *opts, kiln_err *err);

/* Called once per async call, on the channel's thread: status, the server's message ("" on
 * OK), and the response (NULL unless OK; the callee owns it). */
typedef void (*kiln_rpc_done_fn)(void *ctx, kiln_status st, const char *message,
                                 ProtobufCMessage *resp);

/* Starts a unary call; returns at once. done runs exactly once if this returns KILN_OK, never
 * otherwise. */
kiln_status kiln_rpc_unary_async(kiln_rpc_channel *ch, const char *path,
                                 const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *resp_desc,
                                 const kiln_rpc_call_opts *opts, kiln_rpc_done_fn done, void *ctx,
                                 kiln_err *err);

/* A streaming call (client, server or bidirectional). Sends and receives are blocking and
 * may run on two different threads at once (one sender, one receiver). */
typedef struct kiln_rpc_stream kiln_rpc_stream;

kiln_status kiln_rpc_stream_open(kiln_rpc_channel *ch, const char *path,
                                 const ProtobufCMessageDescriptor *resp_desc,
                                 const kiln_rpc_call_opts *opts, kiln_rpc_stream **out,
                                 kiln_err *err);
kiln_status kiln_rpc_stream_send(kiln_rpc_stream *s, const ProtobufCMessage *msg, kiln_err *err);
/* Half-closes: no more sends. */
kiln_status kiln_rpc_stream_close_send(kiln_rpc_stream *s, kiln_err *err);
/* The next message (OUT: *msg), or at the end *msg = NULL and the call's final status
 * (KILN_OK for a clean end). */
kiln_status kiln_rpc_stream_recv(kiln_rpc_stream *s, ProtobufCMessage **msg, kiln_err *err);
/* Cancels the call if still open, frees. NULL is a no-op. */
void kiln_rpc_stream_destroy(kiln_rpc_stream *s);

/*
 * Additions to the contract above, for the generated stubs (protoc-gen-kiln-c, docs/client.md
 * "Generated stubs") and for anyone who wants the same shapes by path.
 *
 * Lifetimes: the path, request, descriptors and opts (metadata included) are read during the
 * call that takes them and not kept; async calls and streams copy what they need.
 * Channel destroy: blocking calls and streams still running on another thread return
 * CANCELLED ("the channel was destroyed"); a stream handle stays valid until
 * kiln_rpc_stream_destroy, and the gRPC channel lives until the last of them is destroyed.
 * REQUIRES: kiln_rpc_channel_destroy is not called from a done callback (it waits for the
 * channel's thread), and no call starts on the channel once it has begun; a done callback does not
 * block for long (it holds up the other async calls of its channel); send and recv on one stream
 * are each called by one thread at a time, and not at all once kiln_rpc_stream_destroy has begun.
 */

/* A done callback for generated stubs: `fn` is the typed callback that the stub passed (cast
 * to void (*)(void)), so that one static trampoline per method can call it with its own
 * response type, without allocating. */
typedef void (*kiln_rpc_typed_done_fn)(void (*fn)(void), void *ctx, kiln_status st,
                                       const char *message, ProtobufCMessage *resp);

/* kiln_rpc_unary_async, calling trampoline(fn, ctx, ...) instead of done(ctx, ...): exactly
 * once, on the channel's thread, if this returns KILN_OK; never otherwise. */
kiln_status kiln_rpc_unary_async_typed(kiln_rpc_channel *ch, const char *path,
                                       const ProtobufCMessage *req,
                                       const ProtobufCMessageDescriptor *resp_desc,
                                       const kiln_rpc_call_opts *opts,
                                       kiln_rpc_typed_done_fn trampoline, void (*fn)(void),
                                       void *ctx, kiln_err *err);

/* A server-streaming call: opens it, sends `req` and half-closes. OUT: *out (NULL on error;
 * the error is the call's status when the server has already ended it). Then
 * kiln_rpc_stream_recv until *msg is NULL, and kiln_rpc_stream_destroy. */
kiln_status kiln_rpc_stream_open_request(kiln_rpc_channel *ch, const char *path,
                                         const ProtobufCMessage *req,
                                         const ProtobufCMessageDescriptor *resp_desc,
                                         const kiln_rpc_call_opts *opts, kiln_rpc_stream **out,
                                         kiln_err *err);

/* Ends a client-streaming call: half-closes, receives the one response (OUT: *msg, NULL on
 * error) and the final status. INTERNAL when the server sent no response or more than one.
 * The caller still destroys the stream. */
kiln_status kiln_rpc_stream_finish(kiln_rpc_stream *s, ProtobufCMessage **msg, kiln_err *err);

#endif /* KILN_CLIENT_KILN_RPC_H */
