/*
 * client/kiln_rpc.c: channels (credentials, channel arguments, the thread that drives async
 * calls), the parts every call shares (deadline, wait-for-ready, metadata, final status), and
 * unary calls, blocking and async. Streams are in client/kiln_rpc_stream.c.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "client/kiln_rpc_int.h"
#include "common/alloc.h"

/* ---------------------------------------------------------------- channel */

void kiln_rpc_channel_options_default(kiln_rpc_channel_options *o)
{
    memset(o, 0, sizeof(*o));
}

static bool set(const char *s)
{
    return s && s[0];
}

/* Reads a whole PEM file into a NUL-terminated buffer (kiln_free it). */
static kiln_status read_file(const char *path, const char *what, char **out, kiln_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "cannot read TLS file %s (%s): %s", path,
                            what, strerror(errno));
    size_t cap = 16384, n = 0;
    char *buf = kiln_malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1)
            break;
        char *bigger = cap < (64u << 20) ? kiln_realloc(buf, cap * 2) : NULL;
        if (!bigger) {
            kiln_free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    if (!buf)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "TLS file %s (%s): out of memory "
                            "(or larger than 64 MiB)",
                            path, what);
    buf[n] = '\0';
    if (bad || !strstr(buf, "-----BEGIN ")) {
        kiln_free(buf);
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "TLS file %s (%s) is not a PEM file", path,
                            what);
    }
    *out = buf;
    return KILN_OK;
}

/* Insecure credentials, or TLS (mutual TLS with a client certificate) from the PEM files. */
static kiln_status make_credentials(const kiln_rpc_channel_options *o,
                                    grpc_channel_credentials **out, kiln_err *err)
{
    *out = NULL;
    bool cert = set(o->tls_cert_file), key = set(o->tls_key_file);
    if (!o->tls && !cert && !key && !set(o->tls_ca_file)) {
        *out = grpc_insecure_credentials_create();
        return KILN_OK;
    }
    if (cert != key)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "mutual TLS needs both tls_cert_file and tls_key_file (%s is missing)",
                            cert ? "tls_key_file" : "tls_cert_file");
    char *roots = NULL, *chain = NULL, *pkey = NULL;
    kiln_status st = KILN_OK;
    if (set(o->tls_ca_file))
        st = read_file(o->tls_ca_file, "tls_ca_file", &roots, err);
    if (st == KILN_OK && cert)
        st = read_file(o->tls_cert_file, "tls_cert_file", &chain, err);
    if (st == KILN_OK && key)
        st = read_file(o->tls_key_file, "tls_key_file", &pkey, err);
    if (st == KILN_OK) {
        grpc_ssl_pem_key_cert_pair pair = {pkey, chain};
        *out = grpc_ssl_credentials_create(roots, cert ? &pair : NULL, NULL, NULL);
        if (!*out)
            st = kiln_err_set(err, KILN_INVALID_ARGUMENT, "gRPC refused the TLS credentials");
    }
    kiln_free(roots);
    kiln_free(chain);
    kiln_free(pkey);
    return st;
}

/* Drives the async calls: each completion is one finished call (at the end of this file). */
static void *channel_thread(void *arg);

kiln_status kiln_rpc_channel_create(const kiln_rpc_channel_options *o, kiln_rpc_channel **out,
                                    kiln_err *err)
{
    *out = NULL;
    if (!o || !set(o->target))
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "target: a \"host:port\" is required");
    if (o->default_deadline_ms < 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "default_deadline_ms: %lld is negative (0 means no deadline)",
                            (long long)o->default_deadline_ms);
    grpc_init(); /* one per channel, released with it: gRPC counts them */
    grpc_channel_credentials *creds;
    kiln_status st = make_credentials(o, &creds, err);
    if (st != KILN_OK) {
        grpc_shutdown();
        return st;
    }
    kiln_rpc_channel *ch = kiln_calloc(1, sizeof(*ch));
    if (!ch) {
        grpc_channel_credentials_release(creds);
        grpc_shutdown();
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    int max = o->max_message_bytes <= 0 || o->max_message_bytes > INT32_MAX
                  ? INT32_MAX
                  : (int)o->max_message_bytes;
    /* grpc_arg wants a char * for the name to verify: a copy, so that no cast drops const */
    char *server_name = set(o->tls_server_name) ? kiln_strdup(o->tls_server_name) : NULL;
    if (set(o->tls_server_name) && !server_name) {
        kiln_free(ch);
        grpc_channel_credentials_release(creds);
        grpc_shutdown();
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* reconnect within about a second of a restarted server (gRPC's default backoff grows to
     * two minutes, during which calls fail with UNAVAILABLE although the server is back). Not
     * GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes it as the connect timeout, and a slow
     * TLS handshake would then never finish. */
    grpc_arg args[5] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = max}},
        {GRPC_ARG_INTEGER, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, {.integer = 100}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, {.integer = 1000}},
        {GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, {.string = server_name}},
    };
    grpc_channel_args ca = {server_name ? 5 : 4, args};
    ch->channel = grpc_channel_create(o->target, creds, &ca);
    grpc_channel_credentials_release(creds);
    kiln_free(server_name);
    ch->cq = grpc_completion_queue_create_for_next(NULL);
    ch->default_deadline_ms = o->default_deadline_ms;
    ch->wait_for_ready = o->wait_for_ready;
    kiln_ref_init(&ch->refs);
    pthread_mutex_init(&ch->mu, NULL);
    if (!ch->channel || !ch->cq) {
        kiln_rpc_channel_destroy(ch);
        return kiln_err_set(err, KILN_INTERNAL, "gRPC could not create a channel to %s", o->target);
    }
    if (pthread_create(&ch->thread, NULL, channel_thread, ch) != 0) {
        kiln_rpc_channel_destroy(ch);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "cannot start the channel's thread");
    }
    ch->thread_started = true;
    *out = ch;
    return KILN_OK;
}

void kiln__rpc_channel_unref(kiln_rpc_channel *ch)
{
    if (!kiln_ref_dec(&ch->refs))
        return;
    assert(!ch->live);
    if (ch->channel)
        grpc_channel_destroy(ch->channel);
    pthread_mutex_destroy(&ch->mu);
    kiln_free(ch);
    grpc_shutdown();
}

void kiln_rpc_channel_destroy(kiln_rpc_channel *ch)
{
    if (!ch)
        return;
    /* A done callback that destroys its own channel would join its own thread. */
    assert(!ch->thread_started || !pthread_equal(pthread_self(), ch->thread));
    pthread_mutex_lock(&ch->mu);
    ch->closing = true;
    for (kiln__rpc_live *l = ch->live; l; l = l->next)
        grpc_call_cancel_with_status(l->call, GRPC_STATUS_CANCELLED, "the channel was destroyed",
                                     NULL);
    /* The async calls just cancelled still complete (their callbacks run with CANCELLED); the
     * thread sees the shutdown once the last of them has. Under mu: no batch starts after. */
    if (ch->cq)
        grpc_completion_queue_shutdown(ch->cq);
    pthread_mutex_unlock(&ch->mu);
    if (ch->cq) {
        if (ch->thread_started)
            pthread_join(ch->thread, NULL);
        grpc_completion_queue_destroy(ch->cq);
        ch->cq = NULL;
    }
    kiln__rpc_channel_unref(ch);
}

/* ---------------------------------------------------------------- what every call shares */

static void free_metadata(kiln__rpc_call_base *b)
{
    for (size_t i = 0; i < b->n_md; i++) {
        grpc_slice_unref(b->md[i].key);
        grpc_slice_unref(b->md[i].value);
    }
    kiln_free(b->md);
    b->md = NULL;
    b->n_md = 0;
}

/* Copies key, value, ..., NULL into grpc_metadata, checking each the way gRPC will. */
static kiln_status copy_metadata(kiln__rpc_call_base *b, const char *const *kv, kiln_err *err)
{
    size_t n = 0;
    while (kv && kv[2 * n]) {
        if (!kv[2 * n + 1])
            return kiln_err_set(err, KILN_INVALID_ARGUMENT, "metadata '%s' has no value",
                                kv[2 * n]);
        n++;
    }
    if (n == 0)
        return KILN_OK;
    b->md = kiln_calloc(n, sizeof(*b->md));
    if (!b->md)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++) {
        grpc_metadata *m = &b->md[b->n_md++];
        m->key = grpc_slice_from_copied_string(kv[2 * i]);
        m->value = grpc_slice_from_copied_string(kv[2 * i + 1]);
        bool bad_key = !grpc_header_key_is_legal(m->key);
        if (bad_key ||
            (!grpc_is_binary_header(m->key) && !grpc_header_nonbin_value_is_legal(m->value))) {
            kiln_err_set(err, KILN_INVALID_ARGUMENT, "metadata %s'%s'%s", bad_key ? "key " : "",
                         kv[2 * i],
                         bad_key ? " is not a legal header name (lower case letters, digits, "
                                   "'-', '_' and '.')"
                                 : ": the value is not printable ASCII (binary values need a "
                                   "key ending in -bin)");
            free_metadata(b);
            return KILN_INVALID_ARGUMENT;
        }
    }
    return KILN_OK;
}

static void unlink_locked(kiln__rpc_call_base *b)
{
    kiln_rpc_channel *ch = b->ch;
    if (b->link.prev)
        b->link.prev->next = b->link.next;
    else
        ch->live = b->link.next;
    if (b->link.next)
        b->link.next->prev = b->link.prev;
    b->link.prev = b->link.next = NULL;
}

kiln_status kiln__rpc_call_begin(kiln__rpc_call_base *b, kiln_rpc_channel *ch, const char *path,
                                 grpc_completion_queue *cq, const kiln_rpc_call_opts *opts,
                                 kiln_err *err)
{
    static const kiln_rpc_call_opts none = {0};
    if (!opts)
        opts = &none;
    memset(b, 0, sizeof(*b));
    b->ch = ch;
    b->details = grpc_empty_slice();
    grpc_metadata_array_init(&b->initial_md);
    grpc_metadata_array_init(&b->trailing_md);
    if (!path || path[0] != '/')
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "path '%s' is not \"/package.Service/Method\"", path ? path : "");
    b->deadline_ms = opts->deadline_ms > 0    ? opts->deadline_ms
                     : opts->deadline_ms == 0 ? ch->default_deadline_ms
                                              : 0;
    bool wfr = opts->wait_for_ready > 0 || (opts->wait_for_ready == 0 && ch->wait_for_ready);
    b->initial_flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET |
                       (wfr ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0);
    kiln_status st = copy_metadata(b, opts->metadata, err);
    if (st != KILN_OK)
        return st;
    gpr_timespec deadline = b->deadline_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(b->deadline_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    pthread_mutex_lock(&ch->mu);
    if (ch->closing) {
        pthread_mutex_unlock(&ch->mu);
        free_metadata(b);
        return kiln_err_set(err, KILN_CANCELLED, "the channel is being destroyed");
    }
    grpc_slice method = grpc_slice_from_copied_string(path);
    b->link.call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method,
                                            NULL, deadline, NULL);
    grpc_slice_unref(method);
    if (!b->link.call) {
        pthread_mutex_unlock(&ch->mu);
        free_metadata(b);
        return kiln_err_set(err, KILN_INTERNAL, "gRPC could not create a call to %s", path);
    }
    b->link.next = ch->live;
    if (ch->live)
        ch->live->prev = &b->link;
    ch->live = &b->link;
    kiln_ref_inc(&ch->refs);
    pthread_mutex_unlock(&ch->mu);
    return KILN_OK;
}

void kiln__rpc_call_end(kiln__rpc_call_base *b)
{
    pthread_mutex_lock(&b->ch->mu);
    unlink_locked(b);
    pthread_mutex_unlock(&b->ch->mu);
    grpc_call_unref(b->link.call);
    b->link.call = NULL;
    free_metadata(b);
    grpc_metadata_array_destroy(&b->initial_md);
    grpc_metadata_array_destroy(&b->trailing_md);
    grpc_slice_unref(b->details);
    void *error_string; /* gRPC hands it out as const char * and wants it gpr_free'd */
    memcpy(&error_string, &b->error_string, sizeof(error_string));
    gpr_free(error_string);
    b->error_string = NULL;
}

kiln_status kiln__rpc_status(const kiln__rpc_call_base *b, kiln_err *err)
{
    /* a code outside gRPC's 0..16 (a non-conforming server) is UNKNOWN */
    kiln_status st = b->status >= 0 && b->status <= 16 ? (kiln_status)b->status : KILN_UNKNOWN;
    int n = (int)GRPC_SLICE_LENGTH(b->details);
    const char *msg = (const char *)GRPC_SLICE_START_PTR(b->details);
    if (st == KILN_OK) {
        kiln_err_clear(err);
        return KILN_OK;
    }
    /* gRPC's own text when the deadline ran out here; a server's DEADLINE_EXCEEDED keeps its */
    static const char grpc_deadline[] = "Deadline Exceeded";
    if (st == KILN_DEADLINE_EXCEEDED && b->deadline_ms > 0 &&
        (n == 0 ||
         (n == (int)sizeof(grpc_deadline) - 1 && memcmp(msg, grpc_deadline, (size_t)n) == 0)))
        return kiln_err_set(err, st, "deadline exceeded after %lld ms", (long long)b->deadline_ms);
    if (n == 0)
        return kiln_err_set(err, st, "%s", kiln_status_name(st));
    return kiln_err_set(err, st, "%.*s", n, msg);
}

grpc_byte_buffer *kiln__rpc_pack(const ProtobufCMessage *msg)
{
    /* our allocator, not gpr_malloc (which aborts when memory runs out): a big request on a
     * tight host fails the call instead of the process */
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = kiln_malloc(n ? n : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_new(buf, n, kiln_free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

kiln_status kiln__rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                             ProtobufCMessage **out, kiln_err *err)
{
    *out = NULL;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return kiln_err_set(err, KILN_INTERNAL, "cannot read the %s from the server", desc->name);
    /* flattened with our allocator (readall uses gpr_malloc, which aborts on out of memory) */
    size_t len = 0, cap = grpc_byte_buffer_length(bb);
    uint8_t *flat = kiln_malloc(cap ? cap : 1);
    grpc_slice sl;
    bool oom = !flat;
    while (grpc_byte_buffer_reader_next(&rd, &sl)) {
        size_t n = GRPC_SLICE_LENGTH(sl);
        if (!oom && len + n > cap) { /* a compressed buffer unpacks larger */
            size_t want = (len + n) * 2;
            uint8_t *g = kiln_realloc(flat, want);
            oom = !g;
            if (g) {
                flat = g;
                cap = want;
            }
        }
        if (!oom)
            memcpy(flat + len, GRPC_SLICE_START_PTR(sl), n);
        len += n;
        grpc_slice_unref(sl);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    if (oom) {
        kiln_free(flat);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED,
                            "out of memory reading the %s from the server (%zu bytes)", desc->name,
                            len);
    }
    *out = protobuf_c_message_unpack(desc, NULL, len, flat);
    kiln_free(flat);
    if (!*out)
        return kiln_err_set(err, KILN_INTERNAL, "the server's answer is not a valid %s",
                            desc->name);
    return KILN_OK;
}

/* ---------------------------------------------------------------- unary calls */

/* An async call's callback: done, or trampoline(fn, ...) for generated stubs. */
typedef struct unary_done {
    kiln_rpc_done_fn done;
    kiln_rpc_typed_done_fn trampoline;
    void (*fn)(void);
    void *ctx;
} unary_done;

typedef struct unary_call {
    kiln__rpc_call_base b;
    const ProtobufCMessageDescriptor *resp_desc;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_completion_queue *cq; /* blocking calls: their own pluck queue; async: NULL */
    unary_done cb;             /* async calls */
    /* Set (release) just before start_batch; the channel's thread reads it (acquire) first.
     * gRPC's completion queue already orders the two threads, but inside libgrpc, where
     * ThreadSanitizer cannot see; this makes the order visible to it. */
    atomic_bool published;
} unary_call;

static void unary_free(unary_call *u)
{
    kiln_rpc_channel *ch = u->b.ch;
    kiln__rpc_call_end(&u->b);
    if (u->send_bb)
        grpc_byte_buffer_destroy(u->send_bb);
    if (u->recv_bb)
        grpc_byte_buffer_destroy(u->recv_bb);
    if (u->cq) {
        grpc_completion_queue_shutdown(u->cq);
        grpc_completion_queue_destroy(u->cq);
    }
    kiln_free(u);
    kiln__rpc_channel_unref(ch);
}

/* Creates the call and starts its one batch; the tag is the unary_call. OUT: *out. */
static kiln_status unary_start(kiln_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc,
                               const kiln_rpc_call_opts *opts, const unary_done *cb,
                               unary_call **out, kiln_err *err)
{
    bool blocking = cb == NULL;
    *out = NULL;
    if (!ch || !req || !resp_desc)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "a channel, a request and a response type are required");
    unary_call *u = kiln_calloc(1, sizeof(*u));
    if (!u)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory");
    u->resp_desc = resp_desc;
    if (cb)
        u->cb = *cb; /* set before start_batch hands the tag to the channel's thread */
    if (blocking && !(u->cq = grpc_completion_queue_create_for_pluck(NULL))) {
        kiln_free(u);
        return kiln_err_set(err, KILN_INTERNAL, "gRPC could not create a completion queue");
    }
    kiln_status st = kiln__rpc_call_begin(&u->b, ch, path, blocking ? u->cq : ch->cq, opts, err);
    if (st != KILN_OK) {
        if (u->cq)
            grpc_completion_queue_destroy(u->cq);
        kiln_free(u);
        return st;
    }
    if (!(u->send_bb = kiln__rpc_pack(req))) {
        unary_free(u);
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory packing the request");
    }
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = u->b.initial_flags;
    ops[0].data.send_initial_metadata.count = u->b.n_md;
    ops[0].data.send_initial_metadata.metadata = u->b.md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->b.initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->b.trailing_md;
    ops[5].data.recv_status_on_client.status = &u->b.status;
    ops[5].data.recv_status_on_client.status_details = &u->b.details;
    ops[5].data.recv_status_on_client.error_string = &u->b.error_string;
    atomic_store_explicit(&u->published, true, memory_order_release);
    grpc_call_error e;
    if (blocking) {
        e = grpc_call_start_batch(u->b.link.call, ops, 6, u, NULL);
    } else {
        /* under mu: destroy shuts the channel's queue down under mu, and a batch started on a
         * queue already shut down is a fatal gRPC assertion (a done callback that chains the
         * next call while another thread destroys the channel) */
        pthread_mutex_lock(&ch->mu);
        bool closing = ch->closing;
        e = closing ? GRPC_CALL_OK : grpc_call_start_batch(u->b.link.call, ops, 6, u, NULL);
        pthread_mutex_unlock(&ch->mu);
        if (closing) {
            unary_free(u);
            return kiln_err_set(err, KILN_CANCELLED, "the channel is being destroyed");
        }
    }
    if (e != GRPC_CALL_OK) {
        unary_free(u);
        return kiln_err_set(err, KILN_INTERNAL, "gRPC refused the call to %s (%s)", path,
                            grpc_call_error_to_string(e));
    }
    *out = u;
    return KILN_OK;
}

/* The call's outcome: the response (OK) or the status and message. */
static kiln_status unary_result(unary_call *u, ProtobufCMessage **resp, kiln_err *err)
{
    *resp = NULL;
    kiln_status st = kiln__rpc_status(&u->b, err);
    if (st != KILN_OK)
        return st;
    if (!u->recv_bb)
        return kiln_err_set(err, KILN_INTERNAL, "the server answered OK without a %s",
                            u->resp_desc->name);
    return kiln__rpc_unpack(u->recv_bb, u->resp_desc, resp, err);
}

kiln_status kiln_rpc_unary(kiln_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           const kiln_rpc_call_opts *opts, kiln_err *err)
{
    *resp = NULL;
    unary_call *u;
    kiln_status st = unary_start(ch, path, req, resp_desc, opts, NULL, &u, err);
    if (st != KILN_OK)
        return st;
    /* The call's deadline bounds this wait; a call without one waits for the server. */
    grpc_completion_queue_pluck(u->cq, u, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    st = unary_result(u, resp, err);
    unary_free(u);
    return st;
}

kiln_status kiln_rpc_unary_async(kiln_rpc_channel *ch, const char *path,
                                 const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *resp_desc,
                                 const kiln_rpc_call_opts *opts, kiln_rpc_done_fn done, void *ctx,
                                 kiln_err *err)
{
    if (!done)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "done: a callback is required");
    unary_done cb = {.done = done, .ctx = ctx};
    unary_call *u;
    return unary_start(ch, path, req, resp_desc, opts, &cb, &u, err);
}

kiln_status kiln_rpc_unary_async_typed(kiln_rpc_channel *ch, const char *path,
                                       const ProtobufCMessage *req,
                                       const ProtobufCMessageDescriptor *resp_desc,
                                       const kiln_rpc_call_opts *opts,
                                       kiln_rpc_typed_done_fn trampoline, void (*fn)(void),
                                       void *ctx, kiln_err *err)
{
    if (!trampoline || !fn)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "done: a callback is required");
    unary_done cb = {.trampoline = trampoline, .fn = fn, .ctx = ctx};
    unary_call *u;
    return unary_start(ch, path, req, resp_desc, opts, &cb, &u, err);
}

static void *channel_thread(void *arg)
{
    kiln_rpc_channel *ch = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(ch->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        unary_call *u = ev.tag;
        (void)atomic_load_explicit(&u->published, memory_order_acquire);
        kiln_err e;
        ProtobufCMessage *resp;
        kiln_status st = unary_result(u, &resp, &e);
        const char *msg = st == KILN_OK ? "" : e.msg;
        if (u->cb.trampoline)
            u->cb.trampoline(u->cb.fn, u->cb.ctx, st, msg, resp);
        else
            u->cb.done(u->cb.ctx, st, msg, resp);
        unary_free(u);
    }
}
