/*
 * tests/unit/client/fake.h: a fake transport for libkilnclient's unit tests. The test binaries
 * are linked with -Wl,--wrap for kiln_rpc_unary, kiln_rpc_channel_create and
 * kiln_rpc_channel_destroy, so the client makes no gRPC channel (no gRPC threads: TSan sees only
 * Kiln's code) and the generated stubs it calls reach __wrap_kiln_rpc_unary below instead of
 * the network. The channel options the client passed are kept in fake_channel_options. The fake
 * records each request (packed and unpacked
 * again, as a server would see it), fails the first `fail_first` calls with `fail_code`, and
 * answers with what `respond` builds (packed and unpacked, as the runtime would return it). The
 * random source and the sleep are replaced too: sleeps are recorded, never slept. Include after
 * cmocka.h.
 */
#ifndef KILN_TESTS_UNIT_CLIENT_FAKE_H
#define KILN_TESTS_UNIT_CLIENT_FAKE_H

#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

typedef struct fake fake;
/* The method called: its path and response type. */
typedef struct fake_call {
    const char *path;
    const ProtobufCMessageDescriptor *resp_desc;
} fake_call;
typedef ProtobufCMessage *(*fake_respond_fn)(fake *f, const fake_call *m,
                                             const ProtobufCMessage *req);

struct fake {
    int calls;
    int fail_first;        /* this many calls fail before the rest answer */
    kiln_status fail_code; /* with this status (KILN_UNAVAILABLE if 0) */
    const char *fail_msg;
    const kiln_status *script; /* if set: the status of each of the first n_script calls */
    int n_script;
    fake_respond_fn respond; /* NULL: an empty message of the method's response type */
    const char *last_path;
    ProtobufCMessage *last_req; /* the last request as the server would decode it */
    int64_t last_deadline_ms;
    double u;            /* what the random source returns */
    int64_t sleeps[128]; /* the backoff waits asked for, in ms */
    int n_sleeps;
};

/* msg packed and unpacked as type d (the caller frees the result). */
static inline ProtobufCMessage *fake_roundtrip(const ProtobufCMessage *msg,
                                               const ProtobufCMessageDescriptor *d)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *out = protobuf_c_message_unpack(d, NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

/* The fake that __wrap_kiln_rpc_unary answers for (set by fake_client). */
static fake *fake_current;

/* The options of the last channel made, and how many channels are open. */
static kiln_rpc_channel_options fake_channel_options;
static int fake_channels_open;

kiln_status __wrap_kiln_rpc_channel_create(const kiln_rpc_channel_options *o,
                                           kiln_rpc_channel **out, kiln_err *err);
kiln_status __wrap_kiln_rpc_channel_create(const kiln_rpc_channel_options *o,
                                           kiln_rpc_channel **out, kiln_err *err)
{
    (void)err;
    fake_channel_options = *o;
    fake_channels_open++;
    *out = malloc(1); /* a stand-in handle: the fake never reads it */
    assert_non_null(*out);
    return KILN_OK;
}

void __wrap_kiln_rpc_channel_destroy(kiln_rpc_channel *ch);
void __wrap_kiln_rpc_channel_destroy(kiln_rpc_channel *ch)
{
    if (!ch)
        return;
    fake_channels_open--;
    free(ch);
}

kiln_status __wrap_kiln_rpc_unary(kiln_rpc_channel *ch, const char *path,
                                  const ProtobufCMessage *req,
                                  const ProtobufCMessageDescriptor *resp_desc,
                                  ProtobufCMessage **resp, const kiln_rpc_call_opts *opts,
                                  kiln_err *err);
kiln_status __wrap_kiln_rpc_unary(kiln_rpc_channel *ch, const char *path,
                                  const ProtobufCMessage *req,
                                  const ProtobufCMessageDescriptor *resp_desc,
                                  ProtobufCMessage **resp, const kiln_rpc_call_opts *opts,
                                  kiln_err *err)
{
    (void)ch;
    fake *f = fake_current;
    assert_non_null(f);
    fake_call m = {path, resp_desc};
    f->calls++;
    f->last_path = path;
    f->last_deadline_ms = opts->deadline_ms;
    if (f->last_req)
        protobuf_c_message_free_unpacked(f->last_req, NULL);
    f->last_req = fake_roundtrip(req, req->descriptor);
    *resp = NULL;
    if (f->script && f->calls <= f->n_script && f->script[f->calls - 1] != KILN_OK)
        return kiln_err_set(err, f->script[f->calls - 1], "fake: scripted %s",
                            kiln_status_name(f->script[f->calls - 1]));
    if (f->calls <= f->fail_first)
        return kiln_err_set(err, f->fail_code ? f->fail_code : KILN_UNAVAILABLE, "%s",
                            f->fail_msg ? f->fail_msg : "fake: unavailable");
    if (f->respond) {
        ProtobufCMessage *r = f->respond(f, &m, req);
        *resp = fake_roundtrip(r, resp_desc);
        protobuf_c_message_free_unpacked(r, NULL);
    } else {
        ProtobufCMessage *r = calloc(1, resp_desc->sizeof_message);
        assert_non_null(r);
        protobuf_c_message_init(resp_desc, r);
        *resp = fake_roundtrip(r, resp_desc);
        free(r);
    }
    return KILN_OK;
}

static inline double fake_rand(void *ctx)
{
    return ((fake *)ctx)->u;
}

static inline void fake_sleep(void *ctx, int64_t ms)
{
    fake *f = ctx;
    if (f->n_sleeps < (int)(sizeof(f->sleeps) / sizeof(f->sleeps[0])))
        f->sleeps[f->n_sleeps] = ms;
    f->n_sleeps++;
}

/* A client (default options unless o) wired to f. */
static inline kiln_client *fake_client(fake *f, const kiln_client_options *o)
{
    kiln_client *c = NULL;
    kiln_client_error e;
    assert_int_equal(kiln_client_create(o, &c, &e), 0);
    fake_current = f;
    c->rand = fake_rand;
    c->rand_ctx = f;
    c->sleep = fake_sleep;
    c->sleep_ctx = f;
    return c;
}

static inline void fake_client_destroy(kiln_client *c, fake *f)
{
    kiln_client_destroy(c);
    if (f->last_req)
        protobuf_c_message_free_unpacked(f->last_req, NULL);
    f->last_req = NULL;
}

/* Asserts a call returned `want`, that e carries it, and that its message contains needle
 * (when not NULL). */
#define assert_client_err(rc, e, want, needle)                                                     \
    client_err_check((rc), &(e), (want), (needle), __FILE__, __LINE__)

static inline void client_err_check(int rc, const kiln_client_error *e, kiln_status want,
                                    const char *needle, const char *file, int line)
{
    if (rc == (int)want && e->code == (int)want && (!needle || strstr(e->message, needle)))
        return;
    print_error("got %s (%d) '%s', want %s containing '%s'\n", kiln_client_code_name(rc), e->code,
                e->message, kiln_client_code_name((int)want), needle ? needle : "");
    _fail(file, line);
}

#endif
