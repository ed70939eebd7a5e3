/*
 * bench/bench_util.h: small helpers shared by the benchmarks (medians).
 */
#ifndef KILN_BENCH_UTIL_H
#define KILN_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>

static inline int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) and returns its median. */
static inline uint64_t bench_median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp_u64);
    return v[n / 2];
}

#endif
