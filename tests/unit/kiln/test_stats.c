/* Unit tests: tools/kiln/stats (percentiles and the perf report). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tests/support.h"
#include "tools/kiln/json.h"
#include "tools/kiln/stats.h"

static void nearest_rank(void **state)
{
    (void)state;
    const uint64_t v[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    assert_int_equal(kiln_cli_percentile(v, 10, 50), 5);
    assert_int_equal(kiln_cli_percentile(v, 10, 90), 9); /* rank 9, not 10 (no float drift) */
    assert_int_equal(kiln_cli_percentile(v, 10, 91), 10);
    assert_int_equal(kiln_cli_percentile(v, 10, 99), 10);
    assert_int_equal(kiln_cli_percentile(v, 10, 100), 10);
    assert_int_equal(kiln_cli_percentile(v, 10, 10), 1);
    assert_int_equal(kiln_cli_percentile(v, 10, 0), 1);
    assert_int_equal(kiln_cli_percentile(v, 1, 99), 1);
    assert_int_equal(kiln_cli_percentile(v, 0, 50), 0);
    const uint64_t w[4] = {10, 20, 30, 40};
    assert_int_equal(kiln_cli_percentile(w, 4, 50), 20);
    assert_int_equal(kiln_cli_percentile(w, 4, 75), 30);
    assert_int_equal(kiln_cli_percentile(w, 4, 76), 40);
    /* 1000 values: p99 is the 990th, p99.9 the 999th */
    static uint64_t k[1000];
    for (int i = 0; i < 1000; i++)
        k[i] = (uint64_t)i + 1;
    assert_int_equal(kiln_cli_percentile(k, 1000, 99), 990);
    assert_int_equal(kiln_cli_percentile(k, 1000, 99.9), 999);
    assert_int_equal(kiln_cli_percentile(k, 1000, 50), 500);
}

static void summary_sorts_and_converts(void **state)
{
    (void)state;
    uint64_t ns[5] = {5000, 1000, 4000, 2000, 3000};
    kiln_cli_latency l;
    kiln_cli_latency_summarize(ns, 5, &l);
    assert_int_equal(ns[0], 1000); /* sorted in place */
    assert_int_equal(l.count, 5);
    assert_true(l.min_us == 1.0 && l.max_us == 5.0 && l.mean_us == 3.0);
    assert_true(l.p50_us == 3.0 && l.p90_us == 5.0 && l.p99_us == 5.0);
    kiln_cli_latency_summarize(ns, 0, &l);
    assert_int_equal(l.count, 0);
    assert_true(l.p99_us == 0);
}

static const char *report(int kind, const kiln_cli_perf_level *lv, size_t n)
{
    static char buf[4096];
    memset(buf, 0, sizeof(buf));
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    kiln_cli_perf_info info = {
        .model = "simple", .url = "127.0.0.1:1", .inputs = "INPUT0 INT32 [1,16]", .duration_s = 2};
    if (kind == 0)
        kiln_cli_perf_write_table(f, &info, lv, n);
    else if (kind == 1)
        kiln_cli_perf_write_csv(f, lv, n);
    else
        kiln_cli_perf_write_json(f, &info, lv, n);
    fclose(f);
    return buf;
}

static void report_formats(void **state)
{
    (void)state;
    kiln_cli_perf_level lv[2] = {
        {.concurrency = 1,
         .requests = 100,
         .seconds = 2,
         .throughput = 50,
         .lat = {.count = 100,
                 .p50_us = 10,
                 .p90_us = 20,
                 .p95_us = 25,
                 .p99_us = 30,
                 .mean_us = 12,
                 .min_us = 5,
                 .max_us = 40}},
        {.concurrency = 8, .requests = 800, .errors = 2, .seconds = 2, .throughput = 400},
    };
    const char *t = report(0, lv, 2);
    assert_non_null(strstr(t, "model simple at 127.0.0.1:1, inline, inputs INPUT0 INT32 [1,16]"));
    assert_non_null(strstr(t, "concurrency  requests  errors    infer/s"));
    assert_non_null(
        strstr(t, "1                 100       0       50.0      10.0      20.0      30.0"));
    const char *c = report(1, lv, 2);
    assert_string_equal(c, "concurrency,rate,requests,errors,late,seconds,throughput,p50_us,p90_us,"
                           "p95_us,p99_us,mean_us,min_us,max_us\n"
                           "1,0,100,0,0,2.000,50.0,10.0,20.0,25.0,30.0,12.0,5.0,40.0\n"
                           "8,0,800,2,0,2.000,400.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n");
    /* the JSON report parses, and says what it measured */
    const char *j = report(2, lv, 2);
    kiln_cli_json *v;
    kiln_err err;
    assert_ok(kiln_cli_json_parse(j, strlen(j), &v, &err), &err);
    assert_string_equal(kiln_cli_json_get(v, "model")->text, "simple");
    const kiln_cli_json *levels = kiln_cli_json_get(v, "levels");
    assert_int_equal(levels->n, 2);
    assert_string_equal(kiln_cli_json_get(&levels->items[1], "errors")->text, "2");
    assert_string_equal(
        kiln_cli_json_get(kiln_cli_json_get(&levels->items[0], "latency_us"), "p99")->text, "30.0");
    kiln_cli_json_free(v);
    /* rate mode: the level column is the rate; late sends are reported */
    kiln_cli_perf_level r = {.rate = 500, .requests = 10, .late = 3, .seconds = 1};
    t = report(0, &r, 1);
    assert_non_null(strstr(t, "rate/s"));
    assert_non_null(strstr(t, "500 "));
    assert_non_null(strstr(t, "3 requests left over 1 ms late"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nearest_rank),
        cmocka_unit_test(summary_sorts_and_converts),
        cmocka_unit_test(report_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
