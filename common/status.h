/*
 * common/status.h: status codes and error messages shared by every Kiln module.
 *
 * kiln_status values are equal to the gRPC status codes (grpc/status.h), so a status travels
 * to a client unchanged. A function that can fail returns kiln_status and takes `kiln_err *err`
 * as its last parameter; err may be NULL when the caller does not want the message.
 *
 * The error path never allocates: the message is formatted into the fixed buffer inside
 * kiln_err, truncated (with "...") if it does not fit.
 *
 * Thread-safety: every function here is safe to call from any thread; a kiln_err must not be
 * written by two threads at once.
 */
#ifndef KILN_COMMON_STATUS_H
#define KILN_COMMON_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_CANCELLED = 1,
    KILN_UNKNOWN = 2,
    KILN_INVALID_ARGUMENT = 3,
    KILN_DEADLINE_EXCEEDED = 4,
    KILN_NOT_FOUND = 5,
    KILN_ALREADY_EXISTS = 6,
    KILN_PERMISSION_DENIED = 7,
    KILN_RESOURCE_EXHAUSTED = 8,
    KILN_FAILED_PRECONDITION = 9,
    KILN_ABORTED = 10,
    KILN_OUT_OF_RANGE = 11,
    KILN_UNIMPLEMENTED = 12,
    KILN_INTERNAL = 13,
    KILN_UNAVAILABLE = 14,
    KILN_DATA_LOSS = 15,
    KILN_UNAUTHENTICATED = 16,
} kiln_status;

/* Number of distinct status codes (valid values are 0 .. KILN_STATUS_COUNT - 1). */
#define KILN_STATUS_COUNT 17

/* Size of the message buffer in kiln_err, terminating NUL included. */
#define KILN_ERR_MSG_MAX 512

/*
 * An error: a status and a human message naming the field and the limit. Callers own the
 * storage (usually on the stack); kiln_err_clear() makes it {KILN_OK, ""}.
 */
typedef struct kiln_err {
    kiln_status code;
    char msg[KILN_ERR_MSG_MAX];
} kiln_err;

/*
 * Returns the canonical upper-case name of a status ("INVALID_ARGUMENT"), or "UNKNOWN_STATUS"
 * for a value outside the enum. The string is static.
 */
const char *kiln_status_name(kiln_status code);

/* Resets *err to {KILN_OK, ""}. err may be NULL. */
void kiln_err_clear(kiln_err *err);

/*
 * Records `code` and the printf-style message in *err (if err is not NULL) and returns `code`,
 * so a failing function can `return kiln_err_set(err, KILN_..., "...", ...);`.
 * A message longer than the buffer is truncated and ends in "...". Never allocates.
 */
kiln_status kiln_err_set(kiln_err *err, kiln_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* kiln_err_set with a va_list. */
kiln_status kiln_err_setv(kiln_err *err, kiln_status code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/*
 * Prepends "prefix: " to the message already in *err (keeping its code) and returns the code.
 * Used to add context on the way up ("model 'x': " + the lower layer's message). If err is NULL
 * returns `code` unchanged.
 */
kiln_status kiln_err_prefix(kiln_err *err, kiln_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif /* KILN_COMMON_STATUS_H */
