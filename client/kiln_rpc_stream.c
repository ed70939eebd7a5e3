/*
 * client/kiln_rpc_stream.c: streaming calls (client, server and bidirectional).
 *
 * Each stream has its own pluck completion queue and three kinds of batch, each with its own
 * tag: the opening batch (send initial metadata, receive initial metadata, receive the final
 * status), which comes back only when the call is over; one send batch at a time (the
 * sender's thread); one receive batch at a time (the receiver's thread). gRPC allows one batch
 * of each op kind in flight, so the sender and the receiver never wait on each other; the
 * final status is plucked once, by whichever of them needs it first (status_mu).
 */
#include <grpc/support/time.h>
#include <string.h>

#include "client/kiln_rpc_int.h"
#include "common/alloc.h"

struct kiln_rpc_stream {
    kiln__rpc_call_base b;
    const ProtobufCMessageDescriptor *resp_desc;
    grpc_completion_queue *cq;
    char open_tag, send_tag, recv_tag; /* addresses used as tags */
    /* sender's side */
    bool send_closed;
    /* receiver's side */
    bool recv_ended;
    grpc_byte_buffer *recv_bb;
    /* the final status, plucked once */
    pthread_mutex_t status_mu;
    bool have_status; /* guarded by status_mu */
};

static gpr_timespec forever(void)
{
    return gpr_inf_future(GPR_CLOCK_REALTIME);
}

kiln_status kiln_rpc_stream_open(kiln_rpc_channel *ch, const char *path,
                                 const ProtobufCMessageDescriptor *resp_desc,
                                 const kiln_rpc_call_opts *opts, kiln_rpc_stream **out,
                                 kiln_err *err)
{
    *out = NULL;
    if (!ch || !resp_desc)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "a channel and a response type are required");
    kiln_rpc_stream *s = kiln_calloc(1, sizeof(*s));
    if (!s)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    s->resp_desc = resp_desc;
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!s->cq) {
        kiln_free(s);
        return kiln_err_set(err, KILN_INTERNAL, "gRPC could not create a completion queue");
    }
    kiln_status st = kiln__rpc_call_begin(&s->b, ch, path, s->cq, opts, err);
    if (st != KILN_OK) {
        grpc_completion_queue_destroy(s->cq);
        kiln_free(s);
        return st;
    }
    pthread_mutex_init(&s->status_mu, NULL);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = s->b.initial_flags;
    ops[0].data.send_initial_metadata.count = s->b.n_md;
    ops[0].data.send_initial_metadata.metadata = s->b.md;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->b.initial_md;
    ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[2].data.recv_status_on_client.trailing_metadata = &s->b.trailing_md;
    ops[2].data.recv_status_on_client.status = &s->b.status;
    ops[2].data.recv_status_on_client.status_details = &s->b.details;
    ops[2].data.recv_status_on_client.error_string = &s->b.error_string;
    grpc_call_error e = grpc_call_start_batch(s->b.link.call, ops, 3, &s->open_tag, NULL);
    if (e != GRPC_CALL_OK) {
        s->have_status = true; /* nothing to pluck */
        kiln_rpc_stream_destroy(s);
        return kiln_err_set(err, KILN_INTERNAL, "gRPC refused the call to %s (%s)", path,
                            grpc_call_error_to_string(e));
    }
    *out = s;
    return KILN_OK;
}

/* The call's final status (waits for it: callers know the call is over or want it over). */
static kiln_status final_status(kiln_rpc_stream *s, kiln_err *err)
{
    pthread_mutex_lock(&s->status_mu);
    if (!s->have_status) {
        grpc_completion_queue_pluck(s->cq, &s->open_tag, forever(), NULL);
        s->have_status = true;
    }
    pthread_mutex_unlock(&s->status_mu);
    return kiln__rpc_status(&s->b, err);
}

/* Runs one op as its own batch and waits for it. Returns ev.success. */
static bool run_op(kiln_rpc_stream *s, grpc_op *op, void *tag)
{
    if (grpc_call_start_batch(s->b.link.call, op, 1, tag, NULL) != GRPC_CALL_OK)
        return false;
    return grpc_completion_queue_pluck(s->cq, tag, forever(), NULL).success != 0;
}

/* A send that failed: the call is over; say how it ended. */
static kiln_status send_failed(kiln_rpc_stream *s, kiln_err *err)
{
    kiln_status st = final_status(s, err);
    if (st != KILN_OK)
        return st;
    return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                        "the server already ended the call (status OK): nothing more can be sent");
}

kiln_status kiln_rpc_stream_send(kiln_rpc_stream *s, const ProtobufCMessage *msg, kiln_err *err)
{
    if (!msg)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "msg: a message is required");
    if (s->send_closed)
        return kiln_err_set(err, KILN_FAILED_PRECONDITION,
                            "the stream is half-closed: nothing more can be sent");
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = kiln__rpc_pack(msg);
    bool ok = run_op(s, &op, &s->send_tag);
    grpc_byte_buffer_destroy(op.data.send_message.send_message);
    if (!ok)
        return send_failed(s, err);
    kiln_err_clear(err);
    return KILN_OK;
}

kiln_status kiln_rpc_stream_close_send(kiln_rpc_stream *s, kiln_err *err)
{
    if (s->send_closed) {
        kiln_err_clear(err);
        return KILN_OK;
    }
    s->send_closed = true;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (!run_op(s, &op, &s->send_tag))
        return send_failed(s, err);
    kiln_err_clear(err);
    return KILN_OK;
}

kiln_status kiln_rpc_stream_recv(kiln_rpc_stream *s, ProtobufCMessage **msg, kiln_err *err)
{
    *msg = NULL;
    if (s->recv_ended)
        return final_status(s, err);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv_bb;
    bool ok = run_op(s, &op, &s->recv_tag);
    if (!ok || !s->recv_bb) {
        s->recv_ended = true; /* the server's end of the stream, or the call failed */
        return final_status(s, err);
    }
    kiln_status st = kiln__rpc_unpack(s->recv_bb, s->resp_desc, msg, err);
    grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    if (st != KILN_OK) {
        /* A stream we cannot read is over: end it so that the server stops too. */
        grpc_call_cancel_with_status(s->b.link.call, GRPC_STATUS_INTERNAL,
                                     err ? err->msg : "unreadable message", NULL);
        s->recv_ended = true;
    }
    return st;
}

void kiln_rpc_stream_destroy(kiln_rpc_stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->status_mu);
    if (!s->have_status) {
        grpc_call_cancel_with_status(s->b.link.call, GRPC_STATUS_CANCELLED,
                                     "the stream was destroyed", NULL);
        grpc_completion_queue_pluck(s->cq, &s->open_tag, forever(), NULL);
        s->have_status = true;
    }
    pthread_mutex_unlock(&s->status_mu);
    kiln_rpc_channel *ch = s->b.ch;
    kiln__rpc_call_end(&s->b);
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    pthread_mutex_destroy(&s->status_mu);
    kiln_free(s);
    kiln__rpc_channel_unref(ch);
}

kiln_status kiln_rpc_stream_open_request(kiln_rpc_channel *ch, const char *path,
                                         const ProtobufCMessage *req,
                                         const ProtobufCMessageDescriptor *resp_desc,
                                         const kiln_rpc_call_opts *opts, kiln_rpc_stream **out,
                                         kiln_err *err)
{
    *out = NULL;
    if (!req)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "req: a request is required");
    kiln_rpc_stream *s;
    kiln_status st = kiln_rpc_stream_open(ch, path, resp_desc, opts, &s, err);
    if (st == KILN_OK)
        st = kiln_rpc_stream_send(s, req, err);
    if (st == KILN_OK)
        st = kiln_rpc_stream_close_send(s, err);
    if (st != KILN_OK) {
        kiln_rpc_stream_destroy(s);
        return st;
    }
    *out = s;
    return KILN_OK;
}

kiln_status kiln_rpc_stream_finish(kiln_rpc_stream *s, ProtobufCMessage **msg, kiln_err *err)
{
    *msg = NULL;
    ProtobufCMessage *resp = NULL, *extra = NULL;
    kiln_status st = kiln_rpc_stream_close_send(s, err);
    if (st == KILN_OK)
        st = kiln_rpc_stream_recv(s, &resp, err);
    if (st == KILN_OK && resp)
        st = kiln_rpc_stream_recv(s, &extra, err); /* the end, and the final status */
    if (st == KILN_OK && (!resp || extra)) {
        grpc_call_cancel_with_status(s->b.link.call, GRPC_STATUS_INTERNAL,
                                     "not exactly one response", NULL);
        st = kiln_err_set(err, KILN_INTERNAL, "the server answered with %s %s instead of one",
                          resp ? "more than one" : "no", s->resp_desc->name);
    }
    if (extra)
        protobuf_c_message_free_unpacked(extra, NULL);
    if (st != KILN_OK) {
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        return st;
    }
    *msg = resp;
    return KILN_OK;
}
