/* Unit tests: tools/kiln/args (the kiln tool's command line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tests/support.h"
#include "tools/kiln/args.h"

/* Parses a NULL-terminated list of words after "kiln". */
static kiln_status parse(kiln_cli_args *a, kiln_err *err, ...)
{
    char *argv[64] = {"kiln"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *s; (s = va_arg(ap, char *));)
        argv[argc++] = s;
    va_end(ap);
    return kiln_cli_args_parse(argc, argv, NULL, a, err);
}

static void defaults_and_common_options(void **state)
{
    (void)state;
    kiln_cli_args a;
    kiln_err err;
    assert_ok(parse(&a, &err, "models", NULL), &err);
    assert_int_equal(a.cmd, KILN_CLI_CMD_MODELS);
    assert_string_equal(a.url, "127.0.0.1:8001");
    assert_int_equal(a.timeout_ms, 30000);
    assert_false(a.json);
    assert_false(a.tls);
    /* options before and after the command, --name=value and --name value */
    assert_ok(parse(&a, &err, "--url", "h:1", "--json", "metadata", "simple", "--timeout=250ms",
                    "--model-version", "2", NULL),
              &err);
    assert_int_equal(a.cmd, KILN_CLI_CMD_METADATA);
    assert_string_equal(a.url, "h:1");
    assert_true(a.json);
    assert_string_equal(a.model, "simple");
    assert_string_equal(a.model_version, "2");
    assert_int_equal(a.timeout_ms, 250);
    /* $KILN_URL is the default; --url wins */
    char *argv[] = {"kiln", "health", NULL};
    assert_ok(kiln_cli_args_parse(2, argv, "env:9", &a, &err), &err);
    assert_string_equal(a.url, "env:9");
    assert_null(a.model);
    assert_ok(parse(&a, &err, "health", "simple", "--tls-ca", "ca.pem", NULL), &err);
    assert_string_equal(a.model, "simple");
    assert_true(a.tls);
    assert_ok(parse(&a, &err, "stats", "--", "-odd-name", NULL), &err);
    assert_string_equal(a.model, "-odd-name");
}

static void infer_and_perf_options(void **state)
{
    (void)state;
    kiln_cli_args a;
    kiln_err err;
    assert_ok(parse(&a, &err, "infer", "simple", "--input", "INPUT0=a.npy", "--input",
                    "INPUT1=json:[1,2]", "--output", "OUTPUT0", "--datatype", "INPUT1=int32",
                    "--shape", "INPUT1=1,2", "--shm", "--out-dir", "out", "--shm-output-bytes",
                    "1M", "--print-limit", "0", NULL),
              &err);
    assert_int_equal(a.n_inputs, 2);
    assert_string_equal(a.inputs[1], "INPUT1=json:[1,2]");
    assert_int_equal(a.n_outputs, 1);
    assert_int_equal(a.n_datatypes, 1);
    assert_int_equal(a.n_shapes, 1);
    assert_true(a.shm);
    assert_string_equal(a.out_dir, "out");
    assert_int_equal(a.shm_output_bytes, 1 << 20);
    assert_int_equal(a.print_limit, 0);
    assert_ok(parse(&a, &err, "perf", "simple", NULL), &err);
    assert_int_equal(a.n_concurrency, 1); /* default: one level at 1 for 5 s */
    assert_int_equal(a.concurrency[0], 1);
    assert_true(a.duration_s == 5.0);
    assert_ok(parse(&a, &err, "perf", "simple", "--concurrency", "1,8,64", "--count", "100",
                    "--warmup", "0", "--csv", "x.csv", "--seed", "7", NULL),
              &err);
    assert_int_equal(a.n_concurrency, 3);
    assert_int_equal(a.concurrency[2], 64);
    assert_int_equal(a.count, 100);
    assert_true(a.duration_s == 0);
    assert_true(a.warmup_s == 0);
    assert_int_equal(a.seed, 7);
    assert_ok(parse(&a, &err, "perf", "simple", "--rate", "250.5", "--duration", "1.5s",
                    "--threads", "4", NULL),
              &err);
    assert_true(a.rate == 250.5);
    assert_int_equal(a.n_concurrency, 0);
    assert_true(a.duration_s == 1.5);
}

static void usage_errors(void **state)
{
    (void)state;
    static const struct {
        char *words[8];
        const char *needle;
    } cases[] = {
        {{NULL}, "no command given"},
        {{"frobnicate"}, "unknown command 'frobnicate'"},
        {{"models", "--bogus"}, "models: unknown option '--bogus'"},
        {{"--bogus", "x", "models"}, "unknown option '--bogus'"},
        {{"models", "-x"}, "unknown option '-x'"},
        {{"models", "extra"}, "models: unexpected argument 'extra'"},
        {{"metadata"}, "metadata: MODEL is required"},
        {{"metadata", "a", "b"}, "unexpected argument 'b'"},
        {{"load", ""}, "MODEL is empty"},
        {{"models", "--url"}, "--url needs a value (ADDR)"},
        {{"models", "--json=yes"}, "--json takes no value"},
        {{"models", "--input", "A=b"}, "option --input does not apply to this command"},
        {{"infer", "m", "--input", "A"}, "--input 'A' is not NAME=VALUE"},
        {{"infer", "m", "--input", "=x"}, "is not NAME=VALUE"},
        {{"infer", "m", "--input", "A="}, "is not NAME=VALUE"},
        {{"infer", "m", "--datatype", "A=float"}, "--datatype: unknown datatype 'float'"},
        {{"infer", "m", "--datatype", "=FP32"}, "has no name"},
        {{"infer", "m", "--shape", "A=1,x"}, "--shape: shape '1,x'"},
        {{"infer", "m", "--shm-output-bytes", "12Q"}, "'12Q' is not a byte size"},
        {{"models", "--timeout", "soon"}, "'soon' is not a duration"},
        {{"models", "--timeout", "-1"}, "is not a duration"},
        {{"models", "--timeout", "5parsecs"}, "is not a duration"},
        {{"models", "--retries", "101"}, "--retries '101' is not a whole number from 0 to 100"},
        {{"perf", "m", "--concurrency", "0"}, "each level is a whole number from 1 to 4096"},
        {{"perf", "m", "--concurrency", "1,,8"}, "each level"},
        {{"perf", "m", "--concurrency", "8,"}, "each level"},
        {{"perf", "m", "--concurrency", "5000"}, "each level"},
        {{"perf", "m", "--rate", "0"}, "--rate '0' is not a positive number"},
        {{"perf", "m", "--rate", "10", "--concurrency", "2"}, "--rate and --concurrency exclude"},
        {{"perf", "m", "--count", "10", "--duration", "2"}, "--count and --duration exclude"},
        {{"perf", "m", "--count", "0"}, "--count '0' is not a whole number from 1"},
        {{"perf", "m", "--duration", "0"}, "--duration must be above 0"},
        {{"perf", "m", "--batch-size", "x"}, "--batch-size 'x'"},
        {{"models", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
        {{"help", "nope"}, "unknown command 'nope'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[10] = {"kiln"};
        int argc = 1;
        for (int k = 0; cases[i].words[k]; k++)
            argv[argc++] = cases[i].words[k];
        kiln_cli_args a;
        kiln_err err;
        print_message("case %zu: %s\n", i, cases[i].needle);
        assert_status(kiln_cli_args_parse(argc, argv, NULL, &a, &err), KILN_INVALID_ARGUMENT, &err,
                      cases[i].needle);
    }
}

static void help_and_version(void **state)
{
    (void)state;
    kiln_cli_args a;
    kiln_err err;
    assert_ok(parse(&a, &err, "--help", NULL), &err);
    assert_true(a.help);
    assert_int_equal(a.cmd, KILN_CLI_CMD_NONE);
    assert_ok(parse(&a, &err, "infer", "--help", NULL), &err); /* no MODEL needed for help */
    assert_true(a.help);
    assert_int_equal(a.cmd, KILN_CLI_CMD_INFER);
    assert_ok(parse(&a, &err, "help", "perf", NULL), &err);
    assert_true(a.help);
    assert_int_equal(a.cmd, KILN_CLI_CMD_PERF);
    assert_ok(parse(&a, &err, "perf", "-h", NULL), &err);
    assert_true(a.help);
    assert_ok(parse(&a, &err, "--version", NULL), &err);
    assert_true(a.version);
    /* every command's help lists its own options and the exit codes */
    static char buf[16384];
    for (int c = 0; c < KILN_CLI_CMD_COUNT; c++) {
        FILE *f = fmemopen(buf, sizeof(buf), "w");
        kiln_cli_usage(f, (kiln_cli_cmd)c);
        fclose(f);
        assert_non_null(strstr(buf, "usage: kiln"));
        assert_non_null(strstr(buf, "--url"));
        assert_non_null(strstr(buf, c ? "Exit codes" : "exit codes"));
    }
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    kiln_cli_usage(f, KILN_CLI_CMD_PERF);
    fclose(f);
    assert_non_null(strstr(buf, "--concurrency"));
    assert_null(strstr(buf, "--out-dir"));
}

static void values(void **state)
{
    (void)state;
    int64_t ms;
    uint64_t b;
    kiln_err err;
    assert_ok(kiln_cli_parse_duration_ms("1.5", &ms, &err), &err);
    assert_int_equal(ms, 1500);
    assert_ok(kiln_cli_parse_duration_ms("20ms", &ms, &err), &err);
    assert_int_equal(ms, 20);
    assert_ok(kiln_cli_parse_duration_ms("2m", &ms, &err), &err);
    assert_int_equal(ms, 120000);
    assert_ok(kiln_cli_parse_duration_ms("0", &ms, &err), &err);
    assert_int_equal(ms, 0);
    assert_ok(kiln_cli_parse_bytes("64K", &b, &err), &err);
    assert_int_equal(b, 65536);
    assert_ok(kiln_cli_parse_bytes("2GiB", &b, &err), &err);
    assert_int_equal(b, 2ull << 30);
    assert_ok(kiln_cli_parse_bytes("100", &b, &err), &err);
    assert_int_equal(b, 100);
    assert_status(kiln_cli_parse_bytes("-1", &b, &err), KILN_INVALID_ARGUMENT, &err,
                  "not a byte size");
    assert_status(kiln_cli_parse_bytes("99999999999T", &b, &err), KILN_INVALID_ARGUMENT, &err,
                  "not a byte size");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_common_options),
        cmocka_unit_test(infer_and_perf_options),
        cmocka_unit_test(usage_errors),
        cmocka_unit_test(help_and_version),
        cmocka_unit_test(values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
