/*
 * tools/kiln/stats.h: latency statistics and the report of `kiln perf` (a table for people,
 * CSV, JSON).
 *
 * Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the value
 * at rank ceil(p/100 * n) (1-based), so it is always a latency that was measured.
 *
 * Thread-safety: pure functions of their arguments.
 */
#ifndef KILN_TOOLS_KILN_STATS_H
#define KILN_TOOLS_KILN_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The nearest-rank p-th percentile (0 < p <= 100) of sorted[n]; 0 when n is 0. p <= 0 gives
 * the minimum. */
uint64_t kiln_cli_percentile(const uint64_t *sorted, size_t n, double p);

typedef struct kiln_cli_latency {
    size_t count;
    double min_us, max_us, mean_us, p50_us, p90_us, p95_us, p99_us;
} kiln_cli_latency;

/* Sorts ns[n] (nanoseconds) in place and summarizes it in microseconds. OUT: *out (all zero
 * when n is 0). */
void kiln_cli_latency_summarize(uint64_t *ns, size_t n, kiln_cli_latency *out);

/* One load level of `kiln perf`. */
typedef struct kiln_cli_perf_level {
    int concurrency;      /* requests in flight (closed loop); 0 in rate mode */
    double rate;          /* requested requests/s (open loop); 0 in concurrency mode */
    uint64_t requests;    /* answered OK in the measured window */
    uint64_t errors;      /* failed in the measured window */
    uint64_t late;        /* rate mode: sent over 1 ms after their scheduled time */
    double seconds;       /* length of the measured window */
    double throughput;    /* requests / seconds */
    kiln_cli_latency lat; /* of the successful requests */
} kiln_cli_perf_level;

/* What the run measured, for the report's header. */
typedef struct kiln_cli_perf_info {
    const char *model;
    const char *url;
    const char *inputs; /* "INPUT0 INT32 [1,16] random, ..." */
    bool shm;
    double duration_s; /* per level; 0 when count is used */
    uint64_t count;    /* requests per level; 0 when duration is used */
} kiln_cli_perf_info;

/* An aligned table, one row per level. */
void kiln_cli_perf_write_table(FILE *f, const kiln_cli_perf_info *info,
                               const kiln_cli_perf_level *lv, size_t n);

/* CSV with a header line: concurrency,rate,requests,errors,late,seconds,throughput,
 * p50_us,p90_us,p95_us,p99_us,mean_us,min_us,max_us. */
void kiln_cli_perf_write_csv(FILE *f, const kiln_cli_perf_level *lv, size_t n);

/* One JSON object: the info fields and "levels": [...] with the CSV's fields. */
void kiln_cli_perf_write_json(FILE *f, const kiln_cli_perf_info *info,
                              const kiln_cli_perf_level *lv, size_t n);

#endif /* KILN_TOOLS_KILN_STATS_H */
