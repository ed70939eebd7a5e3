/* tests/unit/client/test_json.c: protobuf-c messages as JSON (client/json.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "common/alloc.h"
#include "proto/model_config.pb-c.h"
#include "tests/support.h"
#include "tests/unit/client/json_test.pb-c.h"

static char *enc(const ProtobufCMessage *m, int indent)
{
    kiln_err err;
    char *json = NULL;
    assert_ok(kiln__json_encode(m, indent, &json, &err), &err);
    assert_non_null(json);
    return json;
}

#define assert_json(msg, indent, want)                                                             \
    do {                                                                                           \
        char *got_ = enc((msg), (indent));                                                         \
        assert_string_equal(got_, (want));                                                         \
        kiln_free(got_);                                                                           \
    } while (0)

static void test_names_are_lower_camel_case(void **state)
{
    (void)state;
    char out[64];
    const char *cases[][2] = {{"max_batch_size", "maxBatchSize"},
                              {"name", "name"},
                              {"a_1b", "a1b"},
                              {"x__y", "xY"},
                              {"raw_input_contents", "rawInputContents"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln__json_name(cases[i][0], out, sizeof(out));
        assert_string_equal(out, cases[i][1]);
    }
    kiln__json_name("long_field_name", out, 5);
    assert_string_equal(out, "long");
}

static void test_defaults_are_left_out(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    assert_json(&m.base, 0, "{}");
    assert_json(&m.base, 2, "{}");
    m.text = NULL; /* a hand-built message may leave strings NULL */
    assert_json(&m.base, 0, "{}");
    Kiln__Jsontest__Inner empty = KILN__JSONTEST__INNER__INIT;
    m.inner = &empty; /* a set message is written even when empty */
    assert_json(&m.base, 0, "{\"inner\":{}}");
}

static void test_every_scalar_type(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    m.i32 = -5;
    m.s32 = -6;
    m.sf32 = 7;
    m.u32 = 4000000000u;
    m.f32 = 9;
    m.i64 = INT64_MIN;
    m.s64 = -1;
    m.sf64 = 42;
    m.u64 = UINT64_MAX;
    m.f64 = 3;
    m.flt = 0.1f;
    m.dbl = 0.1;
    m.flag = 1;
    m.color = KILN__JSONTEST__COLOR__GREEN;
    m.text = "hi";
    uint8_t blob[] = {0xfb, 0xff, 0x00, 'a'};
    m.blob.data = blob;
    m.blob.len = sizeof(blob);
    assert_json(&m.base, 0,
                "{\"i32\":-5,\"s32\":-6,\"sf32\":7,\"u32\":4000000000,\"f32\":9,"
                "\"i64\":\"-9223372036854775808\",\"s64\":\"-1\",\"sf64\":\"42\","
                "\"u64\":\"18446744073709551615\",\"f64\":\"3\",\"flt\":0.1,\"dbl\":0.1,"
                "\"flag\":true,\"color\":\"GREEN\",\"text\":\"hi\",\"blob\":\"+/8AYQ==\"}");
}

static void test_floats_round_trip_shortest(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    double vals[] = {1.5, 1e300, -2.5e-10, 1.0 / 3.0, NAN, INFINITY, -INFINITY, 100};
    m.doubles = vals;
    m.n_doubles = sizeof(vals) / sizeof(vals[0]);
    m.flt = 16777217.0f; /* not representable: 16777216 */
    assert_json(&m.base, 0,
                "{\"flt\":16777216,\"doubles\":[1.5,1e+300,-2.5e-10,0.3333333333333333,\"NaN\","
                "\"Infinity\",\"-Infinity\",100]}");
}

static void test_strings_are_escaped(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    m.text = "q\"b\\n\nt\tc\x01 \xc3\xa9";
    assert_json(&m.base, 0, "{\"text\":\"q\\\"b\\\\n\\nt\\tc\\u0001 \xc3\xa9\"}");
}

static void test_base64_padding(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    ProtobufCBinaryData b[4] = {
        {1, (uint8_t *)"M"}, {2, (uint8_t *)"Ma"}, {3, (uint8_t *)"Man"}, {0, NULL}};
    m.blobs = b;
    m.n_blobs = 4;
    assert_json(&m.base, 0, "{\"blobs\":[\"TQ==\",\"TWE=\",\"TWFu\",\"\"]}");
}

static void test_enums_by_name_unknown_by_number(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    Kiln__Jsontest__Color colors[] = {KILN__JSONTEST__COLOR__RED, KILN__JSONTEST__COLOR__COLOR_NONE,
                                      (Kiln__Jsontest__Color)7};
    m.colors = colors;
    m.n_colors = 3;
    assert_json(&m.base, 0, "{\"colors\":[\"RED\",\"COLOR_NONE\",7]}");
}

static void test_oneof_written_even_at_default(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    m.choice_case = KILN__JSONTEST__ALL__CHOICE_CHOICE_INT;
    m.choice_int = 0;
    assert_json(&m.base, 0, "{\"choiceInt\":0}");
    m.choice_case = KILN__JSONTEST__ALL__CHOICE_CHOICE_TEXT;
    m.choice_text = "x";
    assert_json(&m.base, 0, "{\"choiceText\":\"x\"}");
}

static void test_maps_are_objects(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    Kiln__Jsontest__Inner in = KILN__JSONTEST__INNER__INIT;
    int32_t vals[] = {1, 2};
    in.label = "a";
    in.values = vals;
    in.n_values = 2;
    Kiln__Jsontest__All__ByNameEntry ne[2] = {KILN__JSONTEST__ALL__BY_NAME_ENTRY__INIT,
                                              KILN__JSONTEST__ALL__BY_NAME_ENTRY__INIT};
    ne[0].key = "first";
    ne[0].value = &in;
    ne[1].key = "none"; /* a missing message value is the empty message */
    Kiln__Jsontest__All__ByNameEntry *np[] = {&ne[0], &ne[1]};
    m.by_name = np;
    m.n_by_name = 2;
    Kiln__Jsontest__All__ByIdEntry ie = KILN__JSONTEST__ALL__BY_ID_ENTRY__INIT;
    ie.key = -3;
    ie.value = "minus three";
    Kiln__Jsontest__All__ByIdEntry *ip[] = {&ie};
    m.by_id = ip;
    m.n_by_id = 1;
    Kiln__Jsontest__All__ByBigEntry be = KILN__JSONTEST__ALL__BY_BIG_ENTRY__INIT;
    be.key = INT64_C(1) << 40;
    be.value = 1;
    Kiln__Jsontest__All__ByBigEntry *bp[] = {&be};
    m.by_big = bp;
    m.n_by_big = 1;
    assert_json(&m.base, 0,
                "{\"byName\":{\"first\":{\"label\":\"a\",\"values\":[1,2]},\"none\":{}},"
                "\"byId\":{\"-3\":\"minus three\"},\"byBig\":{\"1099511627776\":true}}");
    /* not a map: a repeated message whose type only looks like an entry */
    Kiln__Jsontest__Inner *ins[] = {&in};
    m.n_by_name = m.n_by_id = m.n_by_big = 0;
    m.inners = ins;
    m.n_inners = 1;
    assert_json(&m.base, 0, "{\"inners\":[{\"label\":\"a\",\"values\":[1,2]}]}");
}

static void test_pretty_printing(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    Kiln__Jsontest__Inner in = KILN__JSONTEST__INNER__INIT;
    int32_t vals[] = {1, 2};
    in.values = vals;
    in.n_values = 2;
    Kiln__Jsontest__Inner *ins[] = {&in, &in};
    m.inners = ins;
    m.n_inners = 2;
    m.i32 = 1;
    Kiln__Jsontest__All__ByIdEntry ie = KILN__JSONTEST__ALL__BY_ID_ENTRY__INIT;
    ie.key = 5;
    ie.value = "v";
    Kiln__Jsontest__All__ByIdEntry *ip[] = {&ie};
    m.by_id = ip;
    m.n_by_id = 1;
    assert_json(&m.base, 2,
                "{\n"
                "  \"i32\": 1,\n"
                "  \"inners\": [\n"
                "    {\n"
                "      \"values\": [\n"
                "        1,\n"
                "        2\n"
                "      ]\n"
                "    },\n"
                "    {\n"
                "      \"values\": [\n"
                "        1,\n"
                "        2\n"
                "      ]\n"
                "    }\n"
                "  ],\n"
                "  \"byId\": {\n"
                "    \"5\": \"v\"\n"
                "  }\n"
                "}");
}

static void test_model_config(void **state)
{
    (void)state;
    Inference__ModelInput in = INFERENCE__MODEL_INPUT__INIT;
    int64_t dims[] = {16};
    in.name = "INPUT0";
    in.data_type = INFERENCE__DATA_TYPE__TYPE_INT32;
    in.dims = dims;
    in.n_dims = 1;
    Inference__ModelInput *ins[] = {&in};
    Inference__ModelConfig mc = INFERENCE__MODEL_CONFIG__INIT;
    mc.name = "simple";
    mc.max_batch_size = 8;
    mc.input = ins;
    mc.n_input = 1;
    char *json = enc(&mc.base, 0);
    assert_non_null(strstr(json, "\"name\":\"simple\""));
    assert_non_null(strstr(json, "\"maxBatchSize\":8"));
    assert_non_null(strstr(
        json, "\"input\":[{\"name\":\"INPUT0\",\"dataType\":\"TYPE_INT32\",\"dims\":[\"16\"]}]"));
    kiln_free(json);
}

static void test_nesting_limit(void **state)
{
    (void)state;
    Kiln__Jsontest__Node nodes[100];
    for (int i = 0; i < 100; i++) {
        kiln__jsontest__node__init(&nodes[i]);
        nodes[i].depth = i;
        nodes[i].child = i + 1 < 100 ? &nodes[i + 1] : NULL;
    }
    kiln_err err;
    char *json = (char *)1;
    assert_status(kiln__json_encode(&nodes[0].base, 0, &json, &err), KILN_INVALID_ARGUMENT, &err,
                  "nests deeper than 64 levels");
    assert_null(json);
    nodes[50].child = NULL;
    json = enc(&nodes[0].base, 0);
    assert_non_null(strstr(json, "\"depth\":50}"));
    kiln_free(json);
    assert_status(kiln__json_encode(NULL, 0, &json, &err), KILN_INVALID_ARGUMENT, &err,
                  "no message");
}

static void test_out_of_memory(void **state)
{
    (void)state;
    Kiln__Jsontest__All m = KILN__JSONTEST__ALL__INIT;
    m.text = "x";
    kiln_err err;
    char *json = NULL;
    kiln_alloc_fail_after(0);
    assert_status(kiln__json_encode(&m.base, 0, &json, &err), KILN_RESOURCE_EXHAUSTED, &err,
                  "out of memory encoding kiln.jsontest.All as JSON");
    kiln_alloc_fail_after(-1);
    assert_null(json);
    /* a buffer that must grow many times: every step can fail without leaking */
    char big[2000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    m.text = big;
    for (long n = 0; n < 5; n++) {
        kiln_alloc_fail_after(n);
        kiln_status st = kiln__json_encode(&m.base, 0, &json, &err);
        kiln_alloc_fail_after(-1);
        if (st == KILN_OK) {
            kiln_free(json);
            break;
        }
        assert_int_equal(st, KILN_RESOURCE_EXHAUSTED);
        assert_null(json);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_are_lower_camel_case),
        cmocka_unit_test(test_defaults_are_left_out),
        cmocka_unit_test(test_every_scalar_type),
        cmocka_unit_test(test_floats_round_trip_shortest),
        cmocka_unit_test(test_strings_are_escaped),
        cmocka_unit_test(test_base64_padding),
        cmocka_unit_test(test_enums_by_name_unknown_by_number),
        cmocka_unit_test(test_oneof_written_even_at_default),
        cmocka_unit_test(test_maps_are_objects),
        cmocka_unit_test(test_pretty_printing),
        cmocka_unit_test(test_model_config),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
