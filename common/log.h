/*
 * common/log.h: structured logging, one JSON object per line.
 *
 * Every line is {"ts":"<RFC 3339 UTC with microseconds>","level":"info","msg":"...",
 * "request_id":"...","model":"..."} with the last two present only when known. A line is
 * written with a single write(2), so lines from different threads never interleave.
 *
 * Two levels gate a message:
 *   - compile time: KILN_LOG_COMPILE_LEVEL (default KILN_LOG_DEBUG); the KILN_LOG_* macros
 *     below a lower compile level compile to nothing;
 *   - run time: kiln_log_set_level(), default KILN_LOG_INFO.
 *
 * The sink (a file descriptor, default 2 = stderr) and the run-time level are the only
 * process-wide mutable state in Kiln besides main()'s wiring; both are atomics.
 *
 * Thread-safety: all functions are safe from any thread.
 */
#ifndef KILN_COMMON_LOG_H
#define KILN_COMMON_LOG_H

#include <stdbool.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_log_level {
    KILN_LOG_DEBUG = 0,
    KILN_LOG_INFO = 1,
    KILN_LOG_WARN = 2,
    KILN_LOG_ERROR = 3,
    KILN_LOG_OFF = 4,
} kiln_log_level;

#ifndef KILN_LOG_COMPILE_LEVEL
#define KILN_LOG_COMPILE_LEVEL KILN_LOG_DEBUG
#endif

/*
 * Context fields of a line. Either pointer may be NULL (the field is then omitted). The
 * strings are borrowed for the duration of the call only.
 */
typedef struct kiln_log_ctx {
    const char *request_id;
    const char *model;
} kiln_log_ctx;

/* Sets the run-time level; messages below it are dropped. */
void kiln_log_set_level(kiln_log_level level);

/* Returns the run-time level. */
kiln_log_level kiln_log_get_level(void);

/* True if a message at `level` would be written now. */
bool kiln_log_enabled(kiln_log_level level);

/*
 * Parses "debug", "info", "warn"/"warning", "error" or "off" (case-insensitive) into *out.
 * Returns KILN_INVALID_ARGUMENT naming the accepted values otherwise; *out is untouched then.
 */
kiln_status kiln_log_level_parse(const char *s, kiln_log_level *out, kiln_err *err);

/* Returns "debug", "info", "warn", "error" or "off". */
const char *kiln_log_level_name(kiln_log_level level);

/*
 * Redirects log lines to file descriptor `fd` (not owned; the caller keeps it open while it is
 * the sink). Returns the previous sink. Tests use a pipe or a temporary file.
 */
int kiln_log_set_fd(int fd);

/*
 * Writes one line at `level` if enabled. ctx may be NULL. The message is printf-formatted and
 * JSON-escaped; a message over 2 KiB is truncated. Never fails visibly: a write error is
 * ignored (there is nowhere better to report it).
 */
void kiln_log_write(kiln_log_level level, const kiln_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Convenience macros; compiled out below KILN_LOG_COMPILE_LEVEL. */
#define KILN_LOG_AT(level, ctx, ...)                                                               \
    do {                                                                                           \
        if ((level) >= KILN_LOG_COMPILE_LEVEL && kiln_log_enabled(level))                          \
            kiln_log_write((level), (ctx), __VA_ARGS__);                                           \
    } while (0)
#define KILN_LOGD(ctx, ...) KILN_LOG_AT(KILN_LOG_DEBUG, ctx, __VA_ARGS__)
#define KILN_LOGI(ctx, ...) KILN_LOG_AT(KILN_LOG_INFO, ctx, __VA_ARGS__)
#define KILN_LOGW(ctx, ...) KILN_LOG_AT(KILN_LOG_WARN, ctx, __VA_ARGS__)
#define KILN_LOGE(ctx, ...) KILN_LOG_AT(KILN_LOG_ERROR, ctx, __VA_ARGS__)

/*
 * Appends `s` JSON-escaped (without quotes) to buf[*len..cap) and advances *len; stops short
 * rather than overflow (buf stays NUL-terminated). Exposed for other JSON writers in Kiln.
 */
void kiln_json_escape(char *buf, size_t cap, size_t *len, const char *s);

#ifdef __cplusplus
}
#endif

#endif /* KILN_COMMON_LOG_H */
