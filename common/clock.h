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

#ifdef __cplusplus
}
#endif

#endif /* KILN_COMMON_CLOCK_H */
