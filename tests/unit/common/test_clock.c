/* Unit tests: common/clock (clocks and monotonic condition-variable waits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>

#include "common/clock.h"
#include "tests/support.h"

static void clocks_move_forward(void **state)
{
    (void)state;
    uint64_t a = kiln_clock_now_ns(), b = kiln_clock_now_ns();
    assert_true(b >= a);
    /* the wall clock is since the epoch: later than 2020-01-01 */
    assert_true(kiln_clock_wall_ns() > UINT64_C(1577836800) * KILN_NS_PER_S);
}

/* A wait with a monotonic deadline ends at the deadline, not earlier, when nobody signals. */
static void wait_until_times_out_at_deadline(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond;
    assert_int_equal(kiln_cond_init_monotonic(&cond), 0);
    pthread_mutex_lock(&mu);
    uint64_t deadline = kiln_clock_now_ns() + 20 * KILN_NS_PER_MS;
    int rc = 0;
    /* spurious wakeups are allowed: loop, bounded */
    for (int i = 0; i < 1000 && rc != ETIMEDOUT; i++)
        rc = kiln_cond_wait_until(&cond, &mu, deadline);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(kiln_clock_now_ns() >= deadline);
    /* a deadline already passed returns at once */
    assert_int_equal(kiln_cond_wait_until(&cond, &mu, kiln_clock_now_ns() - KILN_NS_PER_MS),
                     ETIMEDOUT);
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&cond);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int flag;
} signal_ctx;

static void *signaller(void *arg)
{
    signal_ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    c->flag = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* A signal ends the wait before a far deadline. */
static void wait_until_wakes_on_signal(void **state)
{
    (void)state;
    signal_ctx c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(kiln_cond_init_monotonic(&c.cond), 0);
    pthread_t t;
    pthread_mutex_lock(&c.mu);
    assert_int_equal(pthread_create(&t, NULL, signaller, &c), 0);
    uint64_t deadline = kiln_clock_now_ns() + 60 * KILN_NS_PER_S;
    while (!c.flag)
        assert_int_equal(kiln_cond_wait_until(&c.cond, &c.mu, deadline), 0);
    pthread_mutex_unlock(&c.mu);
    pthread_join(t, NULL);
    pthread_cond_destroy(&c.cond);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clocks_move_forward),
        cmocka_unit_test(wait_until_times_out_at_deadline),
        cmocka_unit_test(wait_until_wakes_on_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
