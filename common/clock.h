/*
 * common/clock.h: monotonic and wall clocks in nanoseconds.
 *
 * kiln_clock_fn lets a component take its time source as a parameter, so tests can drive
 * time (TTL expiry, deadlines) without sleeping.
 *
 * Thread-safety: all functions are safe from any thread.
 */
#ifndef KILN_COMMON_CLOCK_H
#define KILN_COMMON_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_NS_PER_US UINT64_C(1000)
#define KILN_NS_PER_MS UINT64_C(1000000)
#define KILN_NS_PER_S  UINT64_C(1000000000)

/* Nanoseconds on CLOCK_MONOTONIC (never goes backwards; origin unspecified). */
static inline uint64_t kiln_clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * KILN_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Nanoseconds since the Unix epoch on CLOCK_REALTIME (for timestamps shown to people). */
static inline uint64_t kiln_clock_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * KILN_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/*
 * A time source: returns monotonic nanoseconds. `ctx` is the pointer given alongside it.
 * Components that accept one use kiln_clock_now_ns when it is NULL.
 */
typedef uint64_t (*kiln_clock_fn)(void *ctx);

/*
 * Initializes a condition variable whose timed waits run on CLOCK_MONOTONIC, so that a step of
 * the wall clock (NTP, an operator) neither stretches nor cuts short a wait. Returns the
 * pthread error code (0 on success).
 */
static inline int kiln_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(cond, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

/*
 * Waits on a condition variable made by kiln_cond_init_monotonic until it is signalled or
 * kiln_clock_now_ns() reaches deadline_ns. Returns pthread_cond_timedwait's result.
 * REQUIRES: mu held.
 */
static inline int kiln_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu,
                                       uint64_t deadline_ns)
{
    struct timespec ts = {(time_t)(deadline_ns / KILN_NS_PER_S),
                          (long)(deadline_ns % KILN_NS_PER_S)};
    return pthread_cond_timedwait(cond, mu, &ts);
}

#ifdef __cplusplus
}
#endif

#endif /* KILN_COMMON_CLOCK_H */
