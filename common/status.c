/* common/status.c: status names and error formatting (no allocation on the error path). */
#include "common/status.h"

#include <stdio.h>
#include <string.h>

static const char *const names[KILN_STATUS_COUNT] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *kiln_status_name(kiln_status code)
{
    if ((unsigned)code >= KILN_STATUS_COUNT)
        return "UNKNOWN_STATUS";
    return names[code];
}

void kiln_err_clear(kiln_err *err)
{
    if (!err)
        return;
    err->code = KILN_OK;
    err->msg[0] = '\0';
}

/* Marks a truncated message by ending it in "...". */
static void mark_truncated(char *buf, size_t cap, int written)
{
    if (written >= 0 && (size_t)written >= cap && cap > 4)
        memcpy(buf + cap - 4, "...", 4);
}

kiln_status kiln_err_setv(kiln_err *err, kiln_status code, const char *fmt, va_list ap)
{
    if (!err)
        return code;
    err->code = code;
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (n < 0)
        err->msg[0] = '\0';
    mark_truncated(err->msg, sizeof(err->msg), n);
    return code;
}

kiln_status kiln_err_set(kiln_err *err, kiln_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln_err_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

kiln_status kiln_err_prefix(kiln_err *err, kiln_status code, const char *fmt, ...)
{
    if (!err)
        return code;
    char old[KILN_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof(old));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t used = (size_t)n < sizeof(err->msg) ? (size_t)n : sizeof(err->msg) - 1;
    int m = snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", old);
    mark_truncated(err->msg, sizeof(err->msg), m < 0 ? m : (int)used + m);
    err->code = code;
    return code;
}
