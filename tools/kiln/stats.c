/* tools/kiln/stats.c: percentiles and the perf report. */
#include "tools/kiln/stats.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/kiln/json.h"

uint64_t kiln_cli_percentile(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    if (p <= 0)
        return sorted[0];
    /* p * n first: exact for whole percentiles, so 90% of 10 is rank 9, not 10 */
    double r = ceil(p * (double)n / 100.0 - 1e-9);
    size_t rank = r < 1 ? 1 : r > (double)n ? n : (size_t)r;
    return sorted[rank - 1];
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void kiln_cli_latency_summarize(uint64_t *ns, size_t n, kiln_cli_latency *out)
{
    memset(out, 0, sizeof(*out));
    if (n == 0)
        return;
    qsort(ns, n, sizeof(*ns), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)ns[i];
    out->count = n;
    out->min_us = (double)ns[0] / 1e3;
    out->max_us = (double)ns[n - 1] / 1e3;
    out->mean_us = sum / (double)n / 1e3;
    out->p50_us = (double)kiln_cli_percentile(ns, n, 50) / 1e3;
    out->p90_us = (double)kiln_cli_percentile(ns, n, 90) / 1e3;
    out->p95_us = (double)kiln_cli_percentile(ns, n, 95) / 1e3;
    out->p99_us = (double)kiln_cli_percentile(ns, n, 99) / 1e3;
}

void kiln_cli_perf_write_table(FILE *f, const kiln_cli_perf_info *info,
                               const kiln_cli_perf_level *lv, size_t n)
{
    fprintf(f, "model %s at %s, %s, inputs %s\n", info->model, info->url,
            info->shm ? "shared memory" : "inline", info->inputs);
    bool rate = n && lv[0].rate > 0;
    fprintf(f, "%-11s %9s %7s %10s %9s %9s %9s %9s %9s\n", rate ? "rate/s" : "concurrency",
            "requests", "errors", "infer/s", "p50 us", "p90 us", "p99 us", "mean us", "max us");
    for (size_t i = 0; i < n; i++) {
        char level[32];
        if (rate)
            snprintf(level, sizeof(level), "%g", lv[i].rate);
        else
            snprintf(level, sizeof(level), "%d", lv[i].concurrency);
        fprintf(f, "%-11s %9" PRIu64 " %7" PRIu64 " %10.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n", level,
                lv[i].requests, lv[i].errors, lv[i].throughput, lv[i].lat.p50_us, lv[i].lat.p90_us,
                lv[i].lat.p99_us, lv[i].lat.mean_us, lv[i].lat.max_us);
        if (lv[i].late)
            fprintf(f,
                    "%-11s %" PRIu64 " requests left over 1 ms late: the client could not keep "
                    "the rate (raise --threads)\n",
                    "", lv[i].late);
    }
}

void kiln_cli_perf_write_csv(FILE *f, const kiln_cli_perf_level *lv, size_t n)
{
    fputs("concurrency,rate,requests,errors,late,seconds,throughput,p50_us,p90_us,p95_us,p99_us,"
          "mean_us,min_us,max_us\n",
          f);
    for (size_t i = 0; i < n; i++) {
        const kiln_cli_latency *l = &lv[i].lat;
        fprintf(f,
                "%d,%g,%" PRIu64 ",%" PRIu64 ",%" PRIu64
                ",%.3f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f\n",
                lv[i].concurrency, lv[i].rate, lv[i].requests, lv[i].errors, lv[i].late,
                lv[i].seconds, lv[i].throughput, l->p50_us, l->p90_us, l->p95_us, l->p99_us,
                l->mean_us, l->min_us, l->max_us);
    }
}

static void put_str(FILE *f, const char *s)
{
    kiln_cli_json_put_string(f, s ? s : "", s ? strlen(s) : 0);
}

void kiln_cli_perf_write_json(FILE *f, const kiln_cli_perf_info *info,
                              const kiln_cli_perf_level *lv, size_t n)
{
    fputs("{\"model\":", f);
    put_str(f, info->model);
    fputs(",\"url\":", f);
    put_str(f, info->url);
    fputs(",\"inputs\":", f);
    put_str(f, info->inputs);
    fprintf(f, ",\"shm\":%s,\"duration_s\":%g,\"count\":%" PRIu64 ",\"levels\":[",
            info->shm ? "true" : "false", info->duration_s, info->count);
    for (size_t i = 0; i < n; i++) {
        const kiln_cli_latency *l = &lv[i].lat;
        fprintf(f,
                "%s{\"concurrency\":%d,\"rate\":%g,\"requests\":%" PRIu64 ",\"errors\":%" PRIu64
                ",\"late\":%" PRIu64 ",\"seconds\":%.3f,\"throughput\":%.1f,\"latency_us\":{"
                "\"p50\":%.1f,\"p90\":%.1f,\"p95\":%.1f,\"p99\":%.1f,\"mean\":%.1f,\"min\":%.1f,"
                "\"max\":%.1f}}",
                i ? "," : "", lv[i].concurrency, lv[i].rate, lv[i].requests, lv[i].errors,
                lv[i].late, lv[i].seconds, lv[i].throughput, l->p50_us, l->p90_us, l->p95_us,
                l->p99_us, l->mean_us, l->min_us, l->max_us);
    }
    fputs("]}\n", f);
}
