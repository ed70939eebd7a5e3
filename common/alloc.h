/*
 * common/alloc.h: the one allocation wrapper every Kiln module uses.
 *
 * All heap memory Kiln owns comes from these functions, so a test can make the Nth allocation
 * fail (kiln_alloc_fail_after) and check, under ASan/LSan, that the error path frees what it
 * took and returns KILN_RESOURCE_EXHAUSTED.
 *
 * kiln_free(NULL) and kiln_aligned_free(NULL) are no-ops. Memory from kiln_aligned_alloc must
 * be released with kiln_aligned_free (same as free() on glibc, kept distinct for clarity).
 *
 * Thread-safety: all functions are safe from any thread. The fault-injection counter is a
 * process-wide atomic meant for single-threaded unit tests.
 */
#ifndef KILN_COMMON_ALLOC_H
#define KILN_COMMON_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* malloc/calloc/realloc/strdup that return NULL on failure (or on an injected failure). */
void *kiln_malloc(size_t size);
void *kiln_calloc(size_t n, size_t size);
void *kiln_realloc(void *p, size_t size);
char *kiln_strdup(const char *s);
void kiln_free(void *p);

/*
 * Allocates `size` bytes aligned to `align` (a power of two >= sizeof(void *)). size 0 gives a
 * valid unique pointer. Returns NULL on failure.
 */
void *kiln_aligned_alloc(size_t align, size_t size);
void kiln_aligned_free(void *p);

/*
 * Test hook: the next `n` allocations succeed and the one after fails; then allocation
 * succeeds again. n < 0 disables injection (the default). Returns nothing.
 */
void kiln_alloc_fail_after(long n);

/* Test hook: number of allocations failed by injection since the process started. */
long kiln_alloc_injected_failures(void);

#ifdef __cplusplus
}
#endif

#endif /* KILN_COMMON_ALLOC_H */
