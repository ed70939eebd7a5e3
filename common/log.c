/* common/log.c: JSON-lines logging to a file descriptor, one write(2) per line. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The log sink and level: the only process-wide mutable state outside main()'s wiring. */
static atomic_int log_level = KILN_LOG_INFO;
static atomic_int log_fd = 2;

#define LINE_MAX_BYTES 4096
#define MSG_MAX_BYTES  2048

void kiln_log_set_level(kiln_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

kiln_log_level kiln_log_get_level(void)
{
    return (kiln_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

bool kiln_log_enabled(kiln_log_level level)
{
    return level != KILN_LOG_OFF &&
           (int)level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

const char *kiln_log_level_name(kiln_log_level level)
{
    if ((unsigned)level > KILN_LOG_OFF)
        return "off";
    return level_names[level];
}

kiln_status kiln_log_level_parse(const char *s, kiln_log_level *out, kiln_err *err)
{
    if (s) {
        for (int i = 0; i <= KILN_LOG_OFF; i++) {
            if (strcasecmp(s, level_names[i]) == 0) {
                *out = (kiln_log_level)i;
                return KILN_OK;
            }
        }
        if (strcasecmp(s, "warning") == 0) {
            *out = KILN_LOG_WARN;
            return KILN_OK;
        }
    }
    return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                        "log level '%.32s' is not one of debug, info, warn, error, off",
                        s ? s : "(null)");
}

int kiln_log_set_fd(int fd)
{
    return atomic_exchange(&log_fd, fd);
}

void kiln_json_escape(char *buf, size_t cap, size_t *len, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = *len;
    if (cap == 0)
        return;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        size_t k;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            k = 2;
        } else if (*p == '\n') {
            memcpy(esc, "\\n", 2);
            k = 2;
        } else if (*p == '\t') {
            memcpy(esc, "\\t", 2);
            k = 2;
        } else if (*p == '\r') {
            memcpy(esc, "\\r", 2);
            k = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            k = 6;
        } else {
            esc[0] = (char)*p;
            k = 1;
        }
        if (n + k >= cap)
            break;
        memcpy(buf + n, esc, k);
        n += k;
    }
    buf[n] = '\0';
    *len = n;
}

static void append_raw(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t k = strlen(s);
    if (*len + k >= cap)
        k = cap - 1 - *len;
    memcpy(buf + *len, s, k);
    *len += k;
    buf[*len] = '\0';
}

static void append_field(char *buf, size_t cap, size_t *len, const char *key, const char *val)
{
    append_raw(buf, cap, len, ",\"");
    append_raw(buf, cap, len, key);
    append_raw(buf, cap, len, "\":\"");
    kiln_json_escape(buf, cap, len, val);
    append_raw(buf, cap, len, "\"");
}

void kiln_log_write(kiln_log_level level, const kiln_log_ctx *ctx, const char *fmt, ...)
{
    if (!kiln_log_enabled(level))
        return;
    int saved_errno = errno;
    char msg[MSG_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[LINE_MAX_BYTES];
    size_t len = 0;
    int h = snprintf(line, sizeof(line),
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000, kiln_log_level_name(level));
    len = h > 0 ? (size_t)h : 0;
    append_field(line, sizeof(line) - 2, &len, "msg", msg);
    if (ctx && ctx->request_id)
        append_field(line, sizeof(line) - 2, &len, "request_id", ctx->request_id);
    if (ctx && ctx->model)
        append_field(line, sizeof(line) - 2, &len, "model", ctx->model);
    line[len++] = '}';
    line[len++] = '\n';

    int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved_errno;
}
