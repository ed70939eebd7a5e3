/* Unit tests: proto/textformat (generic text format) and proto/model_config (validation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "proto/model_config.h"
#include "proto/model_config.pb-c.h"
#include "proto/textformat.h"
#include "tests/support.h"

static const char SIMPLE[] =
    "# Triton's quick-start model\n"
    "name: \"simple\"\n"
    "backend: \"plugin\"\n"
    "max_batch_size: 8\n"
    "input [\n"
    "  {\n"
    "    name: \"INPUT0\"\n"
    "    data_type: TYPE_INT32\n"
    "    dims: [ 16 ]\n"
    "  },\n"
    "  {\n"
    "    name: \"INPUT1\"\n"
    "    data_type: TYPE_INT32\n"
    "    dims: [ 16 ]\n"
    "  }\n"
    "]\n"
    "output [\n"
    "  { name: \"OUTPUT0\" data_type: TYPE_INT32 dims: [ 16 ] },\n"
    "  { name: \"OUTPUT1\" data_type: TYPE_INT32 dims: [ 16 ] }\n"
    "]\n"
    "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }\n"
    "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
    "version_policy: { specific: { versions: [1, 3] } }\n"
    "parameters { key: \"mode\" value: { string_value: \"fast\" } }\n"
    "parameters: { key: 'esc' value { string_value: \"a\\tb\\x41\\101\" 'c' } }\n";

static kiln_model_config *parse_ok(const char *text)
{
    kiln_err e;
    kiln_model_config *c = NULL;
    assert_ok(kiln_model_config_parse(text, strlen(text), "m/config.pbtxt", &c, &e), &e);
    assert_non_null(c);
    return c;
}

static void parses_triton_simple(void **state)
{
    (void)state;
    kiln_model_config *c = parse_ok(SIMPLE);
    assert_string_equal(c->name, "simple");
    assert_string_equal(c->backend, "plugin");
    assert_int_equal(c->max_batch_size, 8);
    assert_int_equal(c->n_inputs, 2);
    assert_string_equal(c->inputs[1].name, "INPUT1");
    assert_int_equal(c->inputs[1].dtype, KILN_DTYPE_INT32);
    assert_int_equal(c->inputs[1].dims.rank, 1);
    assert_int_equal(c->inputs[1].dims.dims[0], 16);
    assert_int_equal(c->n_outputs, 2);
    assert_true(c->dynamic_batching);
    assert_int_equal(c->n_preferred_batch_sizes, 2);
    assert_int_equal(c->preferred_batch_sizes[1], 8);
    assert_int_equal(c->max_queue_delay_us, 100);
    assert_int_equal(c->n_instance_groups, 1);
    assert_int_equal(c->instance_groups[0].count, 2);
    assert_int_equal(c->instance_groups[0].kind, KILN_INSTANCE_CPU);
    assert_int_equal(c->version_policy.kind, KILN_VERSIONS_SPECIFIC);
    assert_int_equal(c->version_policy.n_versions, 2);
    assert_int_equal(c->version_policy.versions[1], 3);
    assert_string_equal(kiln_model_config_param(c, "mode"), "fast");
    assert_string_equal(kiln_model_config_param(c, "esc"), "a\tbAAc");
    assert_null(kiln_model_config_param(c, "none"));
    /* the packed form is a valid inference.ModelConfig */
    Inference__ModelConfig *m = inference__model_config__unpack(NULL, c->packed_len, c->packed);
    assert_non_null(m);
    assert_string_equal(m->name, "simple");
    assert_int_equal(m->n_input, 2);
    inference__model_config__free_unpacked(m, NULL);
    assert_ok(kiln_model_config_set_name(c, "renamed", NULL), NULL);
    assert_string_equal(c->name, "renamed");
    m = inference__model_config__unpack(NULL, c->packed_len, c->packed);
    assert_string_equal(m->name, "renamed");
    assert_int_equal(m->max_batch_size, 8);
    inference__model_config__free_unpacked(m, NULL);
    kiln_model_config_free(c);
    kiln_model_config_free(NULL);
}

static void defaults_and_alternate_syntax(void **state)
{
    (void)state;
    kiln_model_config *c = parse_ok("input < name: 'x' data_type: TYPE_FP32 dims: -1 dims: 3 >;"
                                    "output: { name: \"y\", data_type: 11, dims: [] }"
                                    "platform: \"onnxruntime_onnx\"");
    assert_string_equal(c->name, "");
    assert_string_equal(c->backend, "onnx"); /* from the platform */
    assert_int_equal(c->max_batch_size, 0);
    assert_int_equal(c->inputs[0].dims.rank, 2);
    assert_int_equal(c->inputs[0].dims.dims[0], -1);
    assert_int_equal(c->outputs[0].dtype, KILN_DTYPE_FP32);
    assert_int_equal(c->outputs[0].dims.rank, 0);
    assert_int_equal(c->version_policy.kind, KILN_VERSIONS_LATEST);
    assert_int_equal(c->version_policy.num_versions, 1);
    assert_false(c->dynamic_batching);
    kiln_model_config_free(c);
}

/* The queue policy's fields reach the config; DELAY and overrides are flags. */
static void queue_policy(void **state)
{
    (void)state;
    kiln_model_config *c =
        parse_ok("input { name: 'x' data_type: TYPE_FP32 dims: [ 2 ] } "
                 "output { name: 'y' data_type: TYPE_FP32 dims: [ 2 ] } "
                 "max_batch_size: 4 dynamic_batching { default_queue_policy { "
                 "default_timeout_microseconds: 2500 allow_timeout_override: true "
                 "max_queue_size: 7 timeout_action: DELAY } }");
    assert_int_equal(c->default_timeout_us, 2500);
    assert_int_equal(c->max_queue_size, 7);
    assert_true(c->allow_timeout_override);
    assert_true(c->queue_timeout_delays);
    kiln_model_config_free(c);
    c = parse_ok("input { name: 'x' data_type: TYPE_FP32 dims: [ 2 ] } "
                 "output { name: 'y' data_type: TYPE_FP32 dims: [ 2 ] } "
                 "max_batch_size: 4 dynamic_batching { priority_levels: 2 "
                 "default_queue_policy { default_timeout_microseconds: 10 } }");
    assert_int_equal(c->default_timeout_us, 10);
    assert_false(c->allow_timeout_override);
    assert_false(c->queue_timeout_delays); /* REJECT is the default */
    kiln_model_config_free(c);
}

/* Syntax and type errors carry source:line:col and name the field. */
static void syntax_errors_have_positions(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"name: \"a\"\nmax_batch: 3\n",
         "m/config.pbtxt:2:1: unknown field 'max_batch' in inference.ModelConfig"},
        {"name \"a\"", "1:6: expected ':' after field 'name', got '\"a\"'"},
        {"max_batch_size: \"8\"",
         "1:17: expected a number for field 'max_batch_size', got '\"8\"'"},
        {"name: 5", "1:7: expected a string for field 'name', got '5'"},
        {"max_batch_size: 1.5", "expected an integer for field 'max_batch_size', got '1.5'"},
        {"max_batch_size: 3000000000",
         "value 3000000000 is out of range for field 'max_batch_size' (-2147483648..2147483647)"},
        {"input { dims: [ 99999999999999999999 ] }", "is out of range for field 'dims'"},
        {"input { data_type: TYPE_FLOAT }",
         "1:20: unknown value 'TYPE_FLOAT' for enum field 'data_type' (inference.DataType)"},
        {"input { data_type: 99 }", "99 is not a value of enum field 'data_type'"},
        {"name: \"a\" name: \"b\"", "1:11: field 'name' is set twice"},
        {"version_policy { latest { num_versions: 2 } all { } }",
         "field 'all' and field 'latest' are members of one oneof"},
        {"input {\n name: \"x\"\n",
         "3:1: unexpected end of input: message inference.ModelInput is missing its '}'"},
        {"name: \"abc", "1:7: unterminated string"},
        {"name: [\"a\"]", "field 'name' is not repeated; a list is not allowed"},
        {"input [ { name: 'a' } { name: 'b' } ]",
         "expected ',' or ']' in the list for field 'input'"},
        {"input: 3", "expected '{' to open message field 'input', got '3'"},
        {"[ext.field]: 1", "extensions and Any fields are not supported"},
        {"name: \"a\" @", "1:11: unexpected character '@'"},
        {"instance_group { count: -1 }", "count is -1, must be >= 0"},
        {"version_policy { latest { num_versions: -1 } }",
         "value -1 is out of range for field 'num_versions' (0..4294967295)"},
        {"name: 'a\\q'", "unknown escape '\\q'"},
        {"max_batch_size: 8 dynamic_batching { preferred_batch_size: 0x10 }",
         "preferred_batch_size[0] is 16, must be in 1..8"},
        {"max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 60000001 }",
         "max_queue_delay_microseconds is 60000001, must be at most 60000000 (60 s)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_err e;
        kiln_model_config *c = (kiln_model_config *)1;
        kiln_status st =
            kiln_model_config_parse(cases[i].text, strlen(cases[i].text), "m/config.pbtxt", &c, &e);
        if (st != KILN_INVALID_ARGUMENT || !strstr(e.msg, cases[i].needle))
            fail_msg("case %zu: got %s \"%s\", want \"%s\"", i, kiln_status_name(st), e.msg,
                     cases[i].needle);
        assert_null(c);
    }
}

static void validation_errors_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"output { name: 'y' data_type: TYPE_FP32 }", "m/config.pbtxt: no input is declared"},
        {"input { name: 'x' data_type: TYPE_FP32 }", "no output is declared"},
        {"input { name: 'x' } output { name: 'y' data_type: TYPE_FP32 }",
         "input[0] 'x': data_type is missing or TYPE_INVALID"},
        {"input { data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 }",
         "input[0]: name is empty"},
        {"input { name: 'x' data_type: TYPE_FP32 dims: [4, -2] } output { name: 'y' data_type: "
         "TYPE_FP32 }",
         "input[0] 'x': dims[1] is -2, must be >= -1"},
        {"max_batch_size: 2 input { name: 'x' data_type: TYPE_FP32 dims: [1,1,1,1,1,1,1,1] } "
         "output { name: 'y' data_type: TYPE_FP32 }",
         "8 dims plus the batch dim, limit is 7"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'x' data_type: TYPE_FP32 }",
         "tensor name 'x' is used twice"},
        {"max_batch_size: -1", "max_batch_size is -1, must be >= 0"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "dynamic_batching { }",
         "dynamic_batching needs max_batch_size > 0"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "version_policy { specific { } }",
         "version_policy.specific lists no versions"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "version_policy { specific { versions: 0 } }",
         "versions[0] is 0, must be >= 1"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "instance_group { kind: KIND_CPU gpus: 0 }",
         "instance_group[0]: gpus are only valid with KIND_GPU"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "instance_group { kind: KIND_GPU gpus: [0, -1] }",
         "instance_group[0]: gpus[1] is -1, must be >= 0"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "default_model_filename: '../x.so'",
         "must be a file name, not a path"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "parameters { key: 'a' } parameters { key: 'a' }",
         "parameters: key 'a' is given twice"},
#define WIO                                                                                        \
    "max_batch_size: 4 input { name: 'x' data_type: TYPE_FP32 dims: [2, -1] } output { "           \
    "name: 'y' data_type: TYPE_FP32 } "
        {WIO "model_warmup { name: 'w' batch_size: 5 inputs { key: 'x' value { data_type: "
             "TYPE_FP32 dims: [2, 3] zero_data: true } } }",
         "model_warmup[0] 'w': batch_size is 5, must be 1 to 4 (max_batch_size)"},
        {WIO "model_warmup { name: 'w' batch_size: 1 inputs { key: 'z' value { data_type: "
             "TYPE_FP32 dims: [2, 3] } } }",
         "model_warmup[0] 'w': 'z' is not an input of the model"},
        {WIO "model_warmup { name: 'w' batch_size: 1 inputs { key: 'x' value { data_type: "
             "TYPE_INT32 dims: [2, 3] } } }",
         "model_warmup[0] 'w': input 'x': data_type must be TYPE_FP32"},
        {WIO "model_warmup { name: 'w' batch_size: 1 inputs { key: 'x' value { data_type: "
             "TYPE_FP32 dims: [3, 3] } } }",
         "model_warmup[0] 'w': input 'x': "},
        {WIO "model_warmup { name: 'w' batch_size: 1 inputs { key: 'x' value { data_type: "
             "TYPE_FP32 dims: [2, -1] } } }",
         "dims[1] is -1, must be >= 0"},
        {WIO "model_warmup { name: 'w' batch_size: 1 }",
         "model_warmup[0] 'w': input 'x' has no data"},
        {WIO "model_warmup { name: 'w' batch_size: 1 inputs { key: 'x' value { data_type: "
             "TYPE_FP32 dims: [2, 3] input_data_file: '../etc' } } }",
         "input_data_file '../etc' must be a file name in the model's warmup/ directory"},
        {"input { name: 's' data_type: TYPE_STRING dims: 1 } output { name: 'y' data_type: "
         "TYPE_FP32 } model_warmup { name: 'w' batch_size: 1 inputs { key: 's' value { data_type: "
         "TYPE_STRING dims: 1 random_data: true } } }",
         "random_data is not supported for TYPE_STRING"},
        {"input { name: 'x' data_type: TYPE_FP32 } output { name: 'y' data_type: TYPE_FP32 } "
         "model_warmup { name: 'w' batch_size: 2 inputs { key: 'x' value { data_type: TYPE_FP32 "
         "} } }",
         "batch_size is 2, must be 1 to 1 (the model does not batch)"},
#undef WIO
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_err e;
        kiln_model_config *c = (kiln_model_config *)1;
        kiln_status st =
            kiln_model_config_parse(cases[i].text, strlen(cases[i].text), "m/config.pbtxt", &c, &e);
        if (st != KILN_INVALID_ARGUMENT || !strstr(e.msg, cases[i].needle))
            fail_msg("case %zu: got %s \"%s\", want \"%s\"", i, kiln_status_name(st), e.msg,
                     cases[i].needle);
        assert_null(c);
    }
}

static void warmup_samples(void **state)
{
    (void)state;
    const char *text =
        "max_batch_size: 4 input { name: 'x' data_type: TYPE_FP32 dims: [2, -1] } "
        "input { name: 'o' data_type: TYPE_INT32 dims: 1 optional: true } "
        "output { name: 'y' data_type: TYPE_FP32 } "
        "model_warmup { name: 'zeros' batch_size: 2 inputs { key: 'x' value { data_type: "
        "TYPE_FP32 dims: [2, 3] zero_data: true } } } "
        "model_warmup { name: 'file' batch_size: 4 count: 3 inputs { key: 'x' value { data_type: "
        "TYPE_FP32 dims: [2, 5] input_data_file: 'x.raw' } } }";
    kiln_model_config *c;
    kiln_err e;
    assert_ok(kiln_model_config_parse(text, strlen(text), "m", &c, &e), &e);
    assert_int_equal(c->n_warmups, 2);
    assert_string_equal(c->warmups[0].name, "zeros");
    assert_int_equal(c->warmups[0].batch_size, 2);
    assert_int_equal(c->warmups[0].count, 1); /* 0 in the file means 1 */
    assert_int_equal(c->warmups[0].n_inputs, 1);
    assert_int_equal(c->warmups[0].inputs[0].data, KILN_WARMUP_ZERO);
    assert_int_equal(c->warmups[0].inputs[0].dims.dims[1], 3);
    assert_int_equal(c->warmups[1].count, 3);
    assert_int_equal(c->warmups[1].inputs[0].data, KILN_WARMUP_FILE);
    assert_string_equal(c->warmups[1].inputs[0].file, "x.raw");
    kiln_model_config_free(c);
}

static void generic_over_any_message(void **state)
{
    (void)state;
    /* the parser is not tied to ModelConfig: parse a ModelWarmup, with floats and bools */
    kiln_err e;
    ProtobufCMessage *msg;
    const char *t = "name: 'w' batch_size: 4 count: 0x2 "
                    "inputs { key: 'x' value { data_type: TYPE_FP32 dims: [2] zero_data: true } }";
    assert_ok(
        kiln_textformat_parse(&inference__model_warmup__descriptor, t, strlen(t), NULL, &msg, &e),
        &e);
    Inference__ModelWarmup *w = (Inference__ModelWarmup *)msg;
    assert_string_equal(w->name, "w");
    assert_int_equal(w->batch_size, 4);
    assert_int_equal(w->count, 2);
    assert_int_equal(w->n_inputs, 1);
    assert_string_equal(w->inputs[0]->key, "x");
    assert_true(w->inputs[0]->value->zero_data);
    kiln_textformat_free(msg);
    kiln_textformat_free(NULL);
    /* bools: t/f/1/0 accepted, 2 refused */
    t = "zero_data: t";
    assert_ok(kiln_textformat_parse(&inference__model_warmup__input__descriptor, t, strlen(t), NULL,
                                    &msg, &e),
              &e);
    kiln_textformat_free(msg);
    t = "zero_data: 2";
    assert_status(kiln_textformat_parse(&inference__model_warmup__input__descriptor, t, strlen(t),
                                        NULL, &msg, &e),
                  KILN_INVALID_ARGUMENT, &e, "1:12: value 2 is out of range for field 'zero_data'");
}

static void allocation_failures_never_leak(void **state)
{
    (void)state;
    for (long n = 0; n < 400; n++) {
        kiln_err e;
        kiln_model_config *c = NULL;
        kiln_alloc_fail_after(n);
        kiln_status st = kiln_model_config_parse(SIMPLE, strlen(SIMPLE), NULL, &c, &e);
        kiln_alloc_fail_after(-1);
        if (st == KILN_OK) {
            kiln_model_config_free(c);
            return; /* every allocation point before success was failed once */
        }
        assert_status(st, KILN_RESOURCE_EXHAUSTED, &e, "out of memory");
        assert_null(c);
    }
    fail_msg("parse still failing after 400 allocations");
}

static void load_from_file(void **state)
{
    (void)state;
    kiln_err e;
    kiln_model_config *c;
    assert_status(kiln_model_config_load("/nonexistent/config.pbtxt", "x/config.pbtxt", &c, &e),
                  KILN_NOT_FOUND, &e, "x/config.pbtxt: cannot read");
    char path[] = "/tmp/kiln-cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, SIMPLE, strlen(SIMPLE)), (ssize_t)strlen(SIMPLE));
    close(fd);
    assert_ok(kiln_model_config_load(path, "simple/config.pbtxt", &c, &e), &e);
    assert_string_equal(c->name, "simple");
    kiln_model_config_free(c);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_triton_simple),
        cmocka_unit_test(defaults_and_alternate_syntax),
        cmocka_unit_test(queue_policy),
        cmocka_unit_test(syntax_errors_have_positions),
        cmocka_unit_test(validation_errors_name_the_field),
        cmocka_unit_test(warmup_samples),
        cmocka_unit_test(generic_over_any_message),
        cmocka_unit_test(allocation_failures_never_leak),
        cmocka_unit_test(load_from_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
