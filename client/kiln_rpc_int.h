/*
 * client/kiln_rpc_int.h: what client/kiln_rpc.c (channels, unary calls) and
 * client/kiln_rpc_stream.c (streams) share: the channel, the list of calls that a channel's
 * destroy cancels, and the pieces of a call both kinds build (deadline, metadata, status).
 */
#ifndef KILN_CLIENT_KILN_RPC_INT_H
#define KILN_CLIENT_KILN_RPC_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <pthread.h>

#include "client/kiln_rpc.h"
#include "common/refcount.h"

/* A call that kiln_rpc_channel_destroy must cancel: linked into the channel while it runs. */
typedef struct kiln__rpc_live {
    grpc_call *call;
    struct kiln__rpc_live *prev, *next;
} kiln__rpc_live;

struct kiln_rpc_channel {
    grpc_channel *channel;
    grpc_completion_queue *cq; /* async unary calls; drained by `thread` */
    pthread_t thread;
    bool thread_started;
    int64_t default_deadline_ms;
    bool wait_for_ready;
    /* The owner's reference plus one per linked call: a blocking call or a stream that
     * outlives kiln_rpc_channel_destroy keeps the grpc_channel (and gRPC) alive until it ends. */
    kiln_refcount refs;
    pthread_mutex_t mu;
    bool closing;         /* destroy began: no new calls. Guarded by mu. */
    kiln__rpc_live *live; /* calls in flight. Guarded by mu. */
};

/* The parts of one call that do not depend on its kind. */
typedef struct kiln__rpc_call_base {
    kiln__rpc_live link;
    kiln_rpc_channel *ch;
    int64_t deadline_ms;    /* the effective deadline, for the message; <= 0: none */
    uint32_t initial_flags; /* SEND_INITIAL_METADATA flags (wait-for-ready) */
    grpc_metadata *md;      /* the caller's metadata, copied */
    size_t n_md;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string; /* gpr_free'd */
} kiln__rpc_call_base;

/* Fills the parts of `b` that come from the channel and the options (copies the metadata) and
 * creates b->link.call on `cq` for `path`. Links the call into the channel (a reference) unless
 * the channel is closing (CANCELLED). On error nothing is left to undo. */
kiln_status kiln__rpc_call_begin(kiln__rpc_call_base *b, kiln_rpc_channel *ch, const char *path,
                                 grpc_completion_queue *cq, const kiln_rpc_call_opts *opts,
                                 kiln_err *err);

/* Unlinks the call from its channel, unrefs it and frees what begin allocated, but keeps the
 * channel reference: the caller drops it with kiln__rpc_channel_unref once nothing of gRPC
 * (its completion queue) is left to destroy. */
void kiln__rpc_call_end(kiln__rpc_call_base *b);

/* Drops one reference; the last frees the channel and releases gRPC. */
void kiln__rpc_channel_unref(kiln_rpc_channel *ch);

/* The call's final status as a kiln_status, its message into err (may be NULL): the server's
 * message, or "deadline exceeded after N ms" when the deadline ran out. */
kiln_status kiln__rpc_status(const kiln__rpc_call_base *b, kiln_err *err);

/* A byte buffer holding `msg` packed; NULL when out of memory. */
grpc_byte_buffer *kiln__rpc_pack(const ProtobufCMessage *msg);

/* Unpacks a received message (system allocator: protobuf_c_message_free_unpacked(m, NULL)).
 * INTERNAL when it does not parse as `desc`. */
kiln_status kiln__rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                             ProtobufCMessage **out, kiln_err *err);

#endif /* KILN_CLIENT_KILN_RPC_INT_H */
