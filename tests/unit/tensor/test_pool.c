/* Unit tests: the buffer pool (reuse, quotas, lifetimes, concurrency). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "common/alloc.h"
#include "tensor/tensor.h"
#include "tests/support.h"

static void reuse_after_release(void **state)
{
    (void)state;
    kiln_err e;
    kiln_pool *pool;
    kiln_pool_owner *o;
    assert_ok(kiln_pool_create(1 << 20, &pool, &e), &e);
    assert_ok(kiln_pool_owner_create(pool, "m1", 0, &o, &e), &e);
    kiln_storage *a;
    assert_ok(kiln_pool_alloc(o, 5000, &a, &e), &e);
    assert_int_equal(kiln_storage_get_kind(a), KILN_STORAGE_POOL);
    assert_int_equal(kiln_storage_size(a), 5000);
    assert_int_equal((uintptr_t)kiln_storage_data(a) % KILN_STORAGE_ALIGN, 0);
    assert_int_equal(kiln_pool_owner_in_use(o), 8192);
    void *first = kiln_storage_data(a);
    memset(first, 1, 5000);
    kiln_storage_unref(a);
    assert_int_equal(kiln_pool_owner_in_use(o), 0);
    kiln_pool_stats st;
    kiln_pool_get_stats(pool, &st);
    assert_int_equal(st.cached_bytes, 8192);
    assert_ok(kiln_pool_alloc(o, 8000, &a, &e), &e); /* same class */
    assert_ptr_equal(kiln_storage_data(a), first);
    kiln_pool_get_stats(pool, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.cached_bytes, 0);
    kiln_storage_unref(a);
    kiln_pool_owner_destroy(o);
    kiln_pool_destroy(pool);
}

static void quota_per_owner(void **state)
{
    (void)state;
    kiln_err e;
    kiln_pool *pool;
    kiln_pool_owner *a, *b;
    assert_ok(kiln_pool_create(0, &pool, &e), &e);
    assert_ok(kiln_pool_owner_create(pool, "model-a", 16384, &a, &e), &e);
    assert_ok(kiln_pool_owner_create(pool, "model-b", 4096, &b, &e), &e);
    kiln_storage *s1, *s2, *s3;
    assert_ok(kiln_pool_alloc(a, 8192, &s1, &e), &e);
    assert_ok(kiln_pool_alloc(a, 8192, &s2, &e), &e);
    assert_status(kiln_pool_alloc(a, 1, &s3, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "pool owner 'model-a': asking 1 bytes (class 4096) with 16384 in use passes the "
                  "quota of 16384 bytes");
    assert_null(s3);
    /* b's quota is its own */
    assert_ok(kiln_pool_alloc(b, 100, &s3, &e), &e);
    kiln_storage_unref(s3);
    assert_status(kiln_pool_alloc(b, 4097, &s3, &e), KILN_RESOURCE_EXHAUSTED, &e, "model-b");
    kiln_storage_unref(s1);
    assert_ok(kiln_pool_alloc(a, 4096, &s1, &e), &e);
    kiln_storage_unref(s1);
    kiln_storage_unref(s2);
    kiln_pool_stats st;
    kiln_pool_get_stats(pool, &st);
    assert_int_equal(st.cached_bytes, 0); /* max_cached 0: nothing kept */
    kiln_pool_owner_destroy(a);
    kiln_pool_owner_destroy(b);
    kiln_pool_destroy(pool);
}

static void buffers_outlive_pool_and_owner(void **state)
{
    (void)state;
    kiln_err e;
    kiln_pool *pool;
    kiln_pool_owner *o;
    assert_ok(kiln_pool_create(1 << 20, &pool, &e), &e);
    assert_ok(kiln_pool_owner_create(pool, "m", 0, &o, &e), &e);
    kiln_storage *s;
    assert_ok(kiln_pool_alloc(o, 100, &s, &e), &e);
    kiln_pool_owner_destroy(o);
    kiln_pool_destroy(pool);
    memset(kiln_storage_data(s), 0, 100); /* still valid */
    kiln_storage_unref(s);                /* frees pool + owner (LSan checks) */
    kiln_pool_destroy(NULL);
    kiln_pool_owner_destroy(NULL);
}

static void alloc_failures_clean_up(void **state)
{
    (void)state;
    kiln_err e;
    kiln_pool *pool;
    kiln_pool_owner *o;
    assert_ok(kiln_pool_create(1 << 20, &pool, &e), &e);
    assert_ok(kiln_pool_owner_create(pool, "m", 1 << 20, &o, &e), &e);
    for (long n = 0; n < 3; n++) {
        kiln_storage *s;
        kiln_alloc_fail_after(n);
        kiln_status st = kiln_pool_alloc(o, 100, &s, &e);
        kiln_alloc_fail_after(-1);
        if (st == KILN_OK)
            kiln_storage_unref(s);
        else
            assert_status(st, KILN_RESOURCE_EXHAUSTED, &e, "out of memory");
        assert_int_equal(kiln_pool_owner_in_use(o), 0);
    }
    kiln_storage *big;
    assert_status(kiln_pool_alloc(o, SIZE_MAX, &big, &e), KILN_RESOURCE_EXHAUSTED, &e, "too large");
    kiln_alloc_fail_after(0);
    kiln_pool *p2;
    assert_status(kiln_pool_create(0, &p2, &e), KILN_RESOURCE_EXHAUSTED, &e, "out of memory");
    kiln_alloc_fail_after(0);
    kiln_pool_owner *o2;
    assert_status(kiln_pool_owner_create(pool, "x", 0, &o2, &e), KILN_RESOURCE_EXHAUSTED, &e,
                  "out of memory");
    kiln_pool_owner_destroy(o);
    kiln_pool_destroy(pool);
}

static kiln_pool_owner *shared_owner;
static void *hammer(void *arg)
{
    (void)arg;
    kiln_storage *held[4] = {0};
    for (int i = 0; i < 5000; i++) {
        int k = i % 4;
        kiln_storage_unref(held[k]);
        held[k] = NULL;
        kiln_err e;
        if (kiln_pool_alloc(shared_owner, (size_t)(1000 + (i % 7) * 3000), &held[k], &e) == KILN_OK)
            memset(kiln_storage_data(held[k]), i & 0xff, 64);
    }
    for (int k = 0; k < 4; k++)
        kiln_storage_unref(held[k]);
    return NULL;
}

static void concurrent_alloc_release(void **state)
{
    (void)state;
    kiln_err e;
    kiln_pool *pool;
    assert_ok(kiln_pool_create(256 << 10, &pool, &e), &e);
    assert_ok(kiln_pool_owner_create(pool, "shared", 1 << 20, &shared_owner, &e), &e);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(kiln_pool_owner_in_use(shared_owner), 0);
    kiln_pool_stats st;
    kiln_pool_get_stats(pool, &st);
    assert_true(st.hits > 0);
    assert_true(st.cached_bytes <= 256 << 10);
    kiln_pool_owner_destroy(shared_owner);
    kiln_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reuse_after_release),
        cmocka_unit_test(quota_per_owner),
        cmocka_unit_test(buffers_outlive_pool_and_owner),
        cmocka_unit_test(alloc_failures_clean_up),
        cmocka_unit_test(concurrent_alloc_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
