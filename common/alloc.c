/* common/alloc.c: allocation wrapper with fault injection for tests. */
#include "common/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/*
 * Fault injection: -1 = off; otherwise the number of allocations still allowed to succeed.
 * A test hook, not configuration: nothing in the product sets it.
 */
static atomic_long fail_countdown = -1;
static atomic_long injected = 0;

void kiln_alloc_fail_after(long n)
{
    atomic_store(&fail_countdown, n < 0 ? -1 : n);
}

long kiln_alloc_injected_failures(void)
{
    return atomic_load(&injected);
}

/* True if this allocation must fail. */
static int inject(void)
{
    long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    while (c >= 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c == 0 ? -1 : c - 1)) {
            if (c == 0) {
                atomic_fetch_add(&injected, 1);
                return 1;
            }
            return 0;
        }
    }
    return 0;
}

void *kiln_malloc(size_t size)
{
    if (inject())
        return NULL;
    return malloc(size ? size : 1);
}

void *kiln_calloc(size_t n, size_t size)
{
    if (inject())
        return NULL;
    if (n == 0 || size == 0)
        return calloc(1, 1);
    return calloc(n, size);
}

void *kiln_realloc(void *p, size_t size)
{
    if (inject())
        return NULL;
    return realloc(p, size ? size : 1);
}

char *kiln_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = kiln_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void kiln_free(void *p)
{
    free(p);
}

void *kiln_aligned_alloc(size_t align, size_t size)
{
    if (inject())
        return NULL;
    void *p = NULL;
    if (align < sizeof(void *))
        align = sizeof(void *);
    if (posix_memalign(&p, align, size ? size : 1) != 0)
        return NULL;
    return p;
}

void kiln_aligned_free(void *p)
{
    free(p);
}
