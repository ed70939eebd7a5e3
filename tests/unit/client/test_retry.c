/* tests/unit/client/test_retry.c: the backoff schedule and the retry loop (fake transport). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "tests/unit/client/fake.h"

static void test_ceiling_doubles_to_the_cap(void **state)
{
    (void)state;
    kiln__backoff b = {.initial_ms = 100, .max_ms = 5000, .multiplier = 2.0};
    const int64_t want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
    for (int i = 0; i < 8; i++)
        assert_int_equal(kiln__backoff_ceiling_ms(&b, i), want[i]);
    assert_int_equal(kiln__backoff_ceiling_ms(&b, 1000000), 5000); /* no overflow to inf */
    kiln__backoff flat = {.initial_ms = 50, .max_ms = 50, .multiplier = 1.0};
    assert_int_equal(kiln__backoff_ceiling_ms(&flat, 7), 50);
    kiln__backoff x15 = {.initial_ms = 10, .max_ms = 1000, .multiplier = 1.5};
    assert_int_equal(kiln__backoff_ceiling_ms(&x15, 3), 33); /* 10 * 1.5^3 = 33.75 */
    kiln__backoff none = {.initial_ms = 0, .max_ms = 0, .multiplier = 2.0};
    assert_int_equal(kiln__backoff_ceiling_ms(&none, 3), 0);
}

static void test_full_jitter_spans_zero_to_ceiling(void **state)
{
    (void)state;
    kiln__backoff b = {.initial_ms = 100, .max_ms = 5000, .multiplier = 2.0};
    assert_int_equal(kiln__backoff_delay_ms(&b, 0, 0.0), 0);
    assert_int_equal(kiln__backoff_delay_ms(&b, 0, 0.5), 50);
    assert_int_equal(kiln__backoff_delay_ms(&b, 0, 0.999999), 100);
    assert_int_equal(kiln__backoff_delay_ms(&b, 2, 0.25), 100); /* floor(0.25 * 401) */
    assert_int_equal(kiln__backoff_delay_ms(&b, 9, 0.999999), 5000);
    assert_int_equal(kiln__backoff_delay_ms(&b, 9, -1.0), 0); /* clamped */
}

static void test_default_random_is_uniform_enough(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    int buckets[10] = {0};
    for (int i = 0; i < 10000; i++) {
        double u = kiln__client_rand(c);
        assert_true(u >= 0.0 && u < 1.0);
        buckets[(int)(u * 10)]++;
    }
    for (int i = 0; i < 10; i++)
        assert_in_range(buckets[i], 800, 1200);
    fake_client_destroy(c, &f);
}

static void test_fails_twice_then_succeeds(void **state)
{
    (void)state;
    fake f = {.fail_first = 2, .u = 0.5};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    bool live = false;
    assert_int_equal(kiln_client_server_live(c, &live, &e), 0);
    assert_true(live == false); /* the fake's empty response says live = false */
    assert_int_equal(e.code, 0);
    assert_string_equal(e.message, "");
    assert_int_equal(f.calls, 3);
    assert_int_equal(f.n_sleeps, 2);
    assert_int_equal(f.sleeps[0], 50);  /* u = 0.5 of 0..100 */
    assert_int_equal(f.sleeps[1], 100); /* u = 0.5 of 0..200 */
    fake_client_destroy(c, &f);
}

static void test_gives_up_after_retries_with_the_server_message(void **state)
{
    (void)state;
    kiln_client_options o;
    kiln_client_options_default(&o);
    o.retries = 5;
    o.backoff_initial_ms = 10;
    o.backoff_max_ms = 40;
    o.backoff_multiplier = 3.0;
    fake f = {.fail_first = 100, .fail_msg = "model 'simple' is not ready", .u = 0.999999};
    kiln_client *c = fake_client(&f, &o);
    kiln_client_error e;
    bool ready;
    assert_client_err(kiln_client_model_ready(c, "simple", NULL, &ready, &e), e, KILN_UNAVAILABLE,
                      "model 'simple' is not ready (6 attempts)");
    assert_int_equal(f.calls, 6);
    assert_int_equal(f.n_sleeps, 5);
    const int64_t want[] = {10, 30, 40, 40, 40};
    for (int i = 0; i < 5; i++)
        assert_int_equal(f.sleeps[i], want[i]);
    fake_client_destroy(c, &f);
}

static void test_other_codes_are_not_retried(void **state)
{
    (void)state;
    fake f = {.fail_first = 100, .fail_code = KILN_NOT_FOUND, .fail_msg = "no such model"};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    bool ready;
    assert_client_err(kiln_client_model_ready(c, "m", "1", &ready, &e), e, KILN_NOT_FOUND,
                      "no such model");
    assert_string_equal(e.message, "no such model"); /* the server's words, nothing added */
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.n_sleeps, 0);
    fake_client_destroy(c, &f);
}

static void test_a_later_failure_says_how_many_attempts(void **state)
{
    (void)state;
    /* UNAVAILABLE once, then DEADLINE_EXCEEDED: the last error is returned, noting 2 tries */
    const kiln_status script[] = {KILN_UNAVAILABLE, KILN_DEADLINE_EXCEEDED};
    fake f = {.script = script, .n_script = 2};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    int serving;
    assert_client_err(kiln_client_health_check(c, "", &serving, &e), e, KILN_DEADLINE_EXCEEDED,
                      "fake: scripted DEADLINE_EXCEEDED (2 attempts)");
    assert_int_equal(f.calls, 2);
    fake_client_destroy(c, &f);
}

static void test_non_idempotent_calls_are_not_retried(void **state)
{
    (void)state;
    fake f = {.fail_first = 100};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    assert_client_err(kiln_client_load(c, "simple", &e), e, KILN_UNAVAILABLE, "fake: unavailable");
    assert_string_equal(e.message, "fake: unavailable");
    assert_int_equal(f.calls, 1);
    assert_client_err(kiln_client_unload(c, "simple", &e), e, KILN_UNAVAILABLE, NULL);
    assert_int_equal(f.calls, 2);
    const unsigned char h[64] = {0};
    assert_client_err(kiln_client_cuda_shm_register(c, "g", h, sizeof(h), 0, 64, &e), e,
                      KILN_UNAVAILABLE, NULL);
    assert_int_equal(f.calls, 3);
    assert_client_err(kiln_client_cuda_shm_unregister(c, "g", &e), e, KILN_UNAVAILABLE, NULL);
    assert_int_equal(f.calls, 4);
    kiln_client_shm *s = NULL;
    char key[64];
    snprintf(key, sizeof(key), "/kiln-ut-retry-%d", (int)getpid());
    assert_client_err(kiln_client_shm_create(c, "r", key, 4096, &s, &e), e, KILN_UNAVAILABLE, NULL);
    assert_null(s);
    assert_int_equal(f.calls, 5);
    assert_int_equal(f.n_sleeps, 0);
    fake_client_destroy(c, &f);
}

static void test_idempotent_calls_are_retried(void **state)
{
    (void)state;
    /* each call fails 3 times (the default retries) then succeeds */
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    kiln_client_error e;
    bool b;
    int serving;
    kiln_client_server_info si;
    kiln_client_model_info *mi = NULL;
    char *json = NULL;
    kiln_client_repo_entry *ent = NULL;
    size_t n;
    kiln_client_result *res = NULL;
#define RETRIED(call)                                                                              \
    do {                                                                                           \
        f.calls = 0;                                                                               \
        f.fail_first = 3;                                                                          \
        int rc_ = (call);                                                                          \
        assert_int_equal(f.calls, 4);                                                              \
        (void)rc_;                                                                                 \
    } while (0)
    RETRIED(kiln_client_server_live(c, &b, &e));
    RETRIED(kiln_client_server_ready(c, &b, &e));
    RETRIED(kiln_client_model_ready(c, "m", NULL, &b, &e));
    RETRIED(kiln_client_health_check(c, "", &serving, &e));
    RETRIED(kiln_client_server_metadata(c, &si, &e));
    RETRIED(kiln_client_model_metadata(c, "m", NULL, &mi, &e));
    kiln_client_model_info_free(mi);
    RETRIED(kiln_client_model_config_json(c, "m", NULL, &json, &e));
    kiln_client_free(json);
    RETRIED(kiln_client_model_stats_json(c, NULL, NULL, &json, &e));
    kiln_client_free(json);
    RETRIED(kiln_client_repository_index(c, false, &ent, &n, &e));
    kiln_client_free(ent);
    RETRIED(kiln_client_infer(c, "m", NULL, 0, NULL, 0, NULL, &res, &e));
    kiln_client_result_free(res);
#undef RETRIED
    fake_client_destroy(c, &f);
}

static void test_retries_zero_means_one_attempt(void **state)
{
    (void)state;
    kiln_client_options o;
    kiln_client_options_default(&o);
    o.retries = 0;
    fake f = {.fail_first = 100};
    kiln_client *c = fake_client(&f, &o);
    kiln_client_error e;
    bool live;
    assert_client_err(kiln_client_server_live(c, &live, &e), e, KILN_UNAVAILABLE, NULL);
    assert_string_equal(e.message, "fake: unavailable");
    assert_int_equal(f.calls, 1);
    fake_client_destroy(c, &f);
}

static void test_deadline_per_attempt(void **state)
{
    (void)state;
    kiln_client_options o;
    kiln_client_options_default(&o);
    o.timeout_ms = 1234;
    fake f = {0};
    kiln_client *c = fake_client(&f, &o);
    kiln_client_error e;
    bool live;
    assert_int_equal(kiln_client_server_live(c, &live, &e), 0);
    assert_int_equal(f.last_deadline_ms, 1234);
    kiln_client_infer_options io = {.timeout_ms = 77};
    kiln_client_result *r = NULL;
    assert_int_equal(kiln_client_infer(c, "m", NULL, 0, NULL, 0, &io, &r, &e), 0);
    assert_int_equal(f.last_deadline_ms, 77);
    kiln_client_result_free(r);
    fake_client_destroy(c, &f);
    o.timeout_ms = 0; /* none */
    c = fake_client(&f, &o);
    assert_int_equal(kiln_client_server_live(c, &live, &e), 0);
    assert_true(f.last_deadline_ms < 0);
    fake_client_destroy(c, &f);
}

/* Many threads share one client: the default random source is lock-free (TSan checks it). */
static void *spin_rand(void *arg)
{
    double sum = 0;
    for (int i = 0; i < 20000; i++)
        sum += kiln__client_rand(arg);
    return sum > 0 ? arg : NULL;
}

static void test_random_source_from_many_threads(void **state)
{
    (void)state;
    fake f = {0};
    kiln_client *c = fake_client(&f, NULL);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, spin_rand, c), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_ptr_equal(r, c);
    }
    fake_client_destroy(c, &f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceiling_doubles_to_the_cap),
        cmocka_unit_test(test_full_jitter_spans_zero_to_ceiling),
        cmocka_unit_test(test_default_random_is_uniform_enough),
        cmocka_unit_test(test_fails_twice_then_succeeds),
        cmocka_unit_test(test_gives_up_after_retries_with_the_server_message),
        cmocka_unit_test(test_other_codes_are_not_retried),
        cmocka_unit_test(test_a_later_failure_says_how_many_attempts),
        cmocka_unit_test(test_non_idempotent_calls_are_not_retried),
        cmocka_unit_test(test_idempotent_calls_are_retried),
        cmocka_unit_test(test_retries_zero_means_one_attempt),
        cmocka_unit_test(test_deadline_per_attempt),
        cmocka_unit_test(test_random_source_from_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
