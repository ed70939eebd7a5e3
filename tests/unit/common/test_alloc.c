/* Unit tests: common/alloc (fault injection), common/refcount, common/clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/refcount.h"
#include "tests/support.h"

static void injection_fails_exactly_the_nth(void **state)
{
    (void)state;
    long before = kiln_alloc_injected_failures();
    kiln_alloc_fail_after(2);
    void *a = kiln_malloc(8), *b = kiln_calloc(2, 8), *c = kiln_malloc(8), *d = kiln_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d); /* one failure, then back to normal */
    assert_int_equal(kiln_alloc_injected_failures(), before + 1);
    kiln_free(a);
    kiln_free(b);
    kiln_free(d);
    kiln_alloc_fail_after(0);
    assert_null(kiln_aligned_alloc(64, 100));
    kiln_alloc_fail_after(0);
    assert_null(kiln_strdup("x"));
    kiln_alloc_fail_after(-1);
}

static void aligned_and_zero_sizes(void **state)
{
    (void)state;
    void *p = kiln_aligned_alloc(64, 0);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    kiln_aligned_free(p);
    kiln_aligned_free(NULL);
    kiln_free(NULL);
    char *s = kiln_strdup("kiln");
    assert_string_equal(s, "kiln");
    s = kiln_realloc(s, 100);
    assert_string_equal(s, "kiln");
    kiln_free(s);
}

static kiln_refcount shared_ref;
static void *churn(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        kiln_ref_inc(&shared_ref);
        assert_false(kiln_ref_dec(&shared_ref));
    }
    return NULL;
}

static void refcount_concurrent(void **state)
{
    (void)state;
    kiln_ref_init(&shared_ref);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, churn, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(kiln_ref_get(&shared_ref), 1);
    assert_true(kiln_ref_dec(&shared_ref));
}

static void clock_monotonic(void **state)
{
    (void)state;
    uint64_t a = kiln_clock_now_ns();
    uint64_t b = kiln_clock_now_ns();
    assert_true(b >= a);
    assert_true(kiln_clock_wall_ns() > 1600000000ULL * KILN_NS_PER_S);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(injection_fails_exactly_the_nth),
        cmocka_unit_test(aligned_and_zero_sizes),
        cmocka_unit_test(refcount_concurrent),
        cmocka_unit_test(clock_monotonic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
