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
#endif
