/*
 * client/client_int.h: what the files of libkilnclient share (not installed).
 *
 * One kiln_client is a kiln_rpc channel plus the retry policy. Every RPC goes through
 * kiln__client_call, which retries idempotent methods on UNAVAILABLE with exponential backoff
 * and full jitter. The transport, the random source and the sleep are function pointers so the
 * unit tests can drive the retry loop without a network or a clock.
 *
 * Thread-safety: a kiln_client is shared by any number of threads; its fields are written only
 * by kiln_client_create (and by the test hooks, before the client is shared).
 */
#ifndef KILN_CLIENT_CLIENT_INT_H
#define KILN_CLIENT_CLIENT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "client/kiln_client.h"
#include "client/kiln_rpc.h"
#include "common/status.h"

/* ---------------------------------------------------------------- backoff (retry.c) */

typedef struct kiln__backoff {
    int64_t initial_ms;
    int64_t max_ms;
    double multiplier;
} kiln__backoff;

/*
 * The ceiling of the wait before retry number `retry` (0 = the wait after the first attempt):
 * min(max_ms, initial_ms * multiplier^retry), saturating instead of overflowing.
 */
int64_t kiln__backoff_ceiling_ms(const kiln__backoff *b, int retry);

/* Full jitter: u in [0, 1) scaled onto 0 .. ceiling (both ends reachable). */
int64_t kiln__backoff_delay_ms(const kiln__backoff *b, int retry, double u);

/* ---------------------------------------------------------------- calls (retry.c) */

typedef double (*kiln__rand_fn)(void *ctx); /* uniform in [0, 1) */
typedef void (*kiln__sleep_fn)(void *ctx, int64_t ms);

struct kiln_client {
    kiln_rpc_channel *ch;
    int64_t timeout_ms; /* per attempt; 0 = none */
    int retries;
    kiln__backoff backoff;
    kiln__rand_fn rand;
    void *rand_ctx;
    kiln__sleep_fn sleep;
    void *sleep_ctx;
    _Atomic uint64_t rng; /* splitmix64 state of the default random source */
};

/* Whether a method may run again: only those that change no server state. */
typedef enum kiln__retry_policy {
    KILN__NO_RETRY,             /* load, unload, (un)register */
    KILN__RETRY_ON_UNAVAILABLE, /* health, metadata, config, statistics, index, infer */
} kiln__retry_policy;

/*
 * The attempts of one RPC, around its generated stub (proto/grpc_service.kiln.h):
 *
 *     kiln__retry r;
 *     kiln__retry_begin(&r, c, KILN__RETRY_ON_UNAVAILABLE, 0);
 *     do
 *         st = inference__grpcinference_service__server_live__call(c->ch, &req, &resp,
 *                                                                   &r.opts, &e);
 *     while (kiln__retry_again(&r, st, &e));
 *
 * r.opts carries the per-attempt deadline: timeout_ms > 0, else the client's timeout.
 */
typedef struct kiln__retry {
    kiln_client *c;
    int attempt;  /* attempts made */
    int attempts; /* at most */
    kiln_rpc_call_opts opts;
} kiln__retry;

void kiln__retry_begin(kiln__retry *r, kiln_client *c, kiln__retry_policy policy,
                       int64_t timeout_ms);

/*
 * After an attempt that returned st: true when another attempt is due (st is UNAVAILABLE,
 * attempts are left; the backoff wait has been slept). When false, the call is over: st is its
 * status, and after more than one attempt err's message (the server's) ends in " (N attempts)".
 */
bool kiln__retry_again(kiln__retry *r, kiln_status st, kiln_err *err);

/* The default random source (splitmix64 over c->rng) and sleep (nanosleep). */
double kiln__client_rand(void *client);
void kiln__client_sleep(void *ctx, int64_t ms);

/* ---------------------------------------------------------------- errors (client.c) */

/* Copies e into the caller's *out (when non-NULL; {0, ""} for OK) and returns st. */
int kiln__client_out(kiln_client_error *out, kiln_status st, const kiln_err *e);

/* INVALID_ARGUMENT "<what> is NULL" into *out (when non-NULL); returns the code. */
int kiln__client_null(kiln_client_error *out, const char *what);

/* kiln__need_name reported into *out: 0 for a non-empty string, else INVALID_ARGUMENT. */
int kiln__client_check_name(kiln_client_error *out, const char *s, const char *what);

/* INVALID_ARGUMENT unless s is a non-empty string; `what` names it ("model name"). */
kiln_status kiln__need_name(const char *s, const char *what, kiln_err *err);

/* Copies src into dst[cap]; OUT_OF_RANGE naming `what` and the limit if it does not fit. */
kiln_status kiln__copy_name(char *dst, size_t cap, const char *src, const char *what,
                            kiln_err *err);

/* Copies src into dst[cap], truncating (ending in "...") if it does not fit. */
void kiln__copy_text(char *dst, size_t cap, const char *src);

/* ---------------------------------------------------------------- datatypes (dtype.c) */

/* Bytes per element of a KServe v2 datatype name, 0 for BYTES; -1 for an unknown name. */
int kiln__dtype_size(const char *datatype);

/* ---------------------------------------------------------------- JSON (json.c) */

/*
 * Encodes msg as JSON in protobuf's JSON mapping: lowerCamelCase names, fields at their
 * default value left out (proto3), 64-bit integers as strings, enums by name, bytes as base64,
 * maps (protobuf-c's repeated *Entry messages) as objects, a set oneof member always written,
 * NaN and infinities as "NaN", "Infinity", "-Infinity". indent > 0 pretty-prints with that
 * many spaces per level; 0 writes one line. OUT: *json (kiln_free), NULL on error.
 * RESOURCE_EXHAUSTED when out of memory; INVALID_ARGUMENT for a NULL message.
 */
kiln_status kiln__json_encode(const ProtobufCMessage *msg, int indent, char **json, kiln_err *err);

/* The lowerCamelCase JSON name of a proto field name into out[cap] (truncated to fit). */
void kiln__json_name(const char *field, char *out, size_t cap);

#endif /* KILN_CLIENT_CLIENT_INT_H */
