/*
 * tests/support.h: helpers shared by the cmocka unit tests.
 * Include after <setjmp.h>, <stdarg.h>, <stddef.h>, <stdint.h> and <cmocka.h>.
 */
#ifndef KILN_TESTS_SUPPORT_H
#define KILN_TESTS_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Asserts that a call returned `code` and that err.msg contains `needle`. */
#define assert_status(expr, code, errp, needle)                                                    \
    kiln_test_assert_status((expr), (code), (errp), (needle), __FILE__, __LINE__)

void kiln_test_assert_status(kiln_status got, kiln_status want, const kiln_err *err,
                             const char *needle, const char *file, int line);

/* Asserts a call returned KILN_OK, printing the error message otherwise. */
#define assert_ok(expr, errp)                                                                      \
    kiln_test_assert_status((expr), KILN_OK, (errp), NULL, __FILE__, __LINE__)

/*
 * Creates a POSIX shared-memory object of `size` bytes with a unique key written to key[cap]
 * and returns its mapping (the caller munmaps and shm_unlinks). Fails the test on error.
 */
void *kiln_test_shm_create(char *key, size_t cap, size_t size);

/* Redirects Kiln's log to a temporary file; kiln_test_log_read returns what was written since. */
void kiln_test_log_capture(void);
const char *kiln_test_log_read(void);
void kiln_test_log_restore(void);

#include "proto/model_config.h"

/* The build directory of this test binary (models under models/, test-models/, plugins/);
 * the environment variable KILN_TEST_BUILD_DIR overrides it (a bundle on another machine). */
const char *kiln_test_build_dir(void);

/* Parses config text or fails the test. */
kiln_model_config *kiln_test_config(const char *text);

/* Loads <build>/<sub>/<model>/config.pbtxt or fails the test. */
kiln_model_config *kiln_test_model_config(const char *sub, const char *model);

/* Resident set size of this process in bytes (from /proc/self/statm). */
uint64_t kiln_test_rss_bytes(void);

#include <sys/types.h>

/* Starts argv[0] (searched in PATH) with stdin from stdin_path and stdout and stderr appended
 * to log_path (NULL: /dev/null for either). posix_spawn, so it is safe after threads (gRPC's)
 * have started. Returns the pid; fails the test if it cannot start. */
pid_t kiln_test_spawn(const char *const *argv, const char *stdin_path, const char *log_path);

/* Waits up to timeout_ms for pid: its exit code, 128 + the signal that ended it, or -1 when it
 * is still running (then it is left running). */
int kiln_test_wait(pid_t pid, int timeout_ms);

/* kiln_test_spawn, then waits up to 60 s; a process still running then is killed (-1). */
int kiln_test_run(const char *const *argv, const char *stdin_path, const char *log_path);

/* Reads a whole file (at most 1 MiB) into a NUL-terminated buffer the caller frees with free();
 * NULL if it cannot be read. */
char *kiln_test_read_file(const char *path);

/* A kiln-server of this build directory on 127.0.0.1 with an ephemeral port, serving a
 * repository made for it in `dir`: the example model `simple`, and `slow` (the identity plugin,
 * FP32 INPUT0 -> OUTPUT0 of dims [-1], max_batch_size 4, each execute taking 3 s). */
typedef struct kiln_test_server {
    pid_t pid;
    int port;
    char dir[256]; /* temporary: repository, port file, log */
    char log[300]; /* the server's stdout and stderr */
} kiln_test_server;

/* Starts it with `flags` added (NULL-terminated, may be NULL) and waits (30 s at most) until it
 * serves. Fails the test, with the server's log, if it does not. */
void kiln_test_server_start(kiln_test_server *s, const char *const *flags);

/* SIGTERM, then waits (30 s at most, then SIGKILL): the server's exit code. Removes dir. */
int kiln_test_server_stop(kiln_test_server *s);
#endif
