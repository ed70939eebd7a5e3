/* Unit tests: tools/kiln/json (the kiln tool's JSON reader and writer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tests/support.h"
#include "tools/kiln/json.h"

static kiln_cli_json *parse_ok(const char *text)
{
    kiln_cli_json *j = NULL;
    kiln_err err;
    assert_ok(kiln_cli_json_parse(text, strlen(text), &j, &err), &err);
    return j;
}

/* Prints j into a static buffer. */
static const char *printed(const kiln_cli_json *j, bool pretty)
{
    static char buf[4096];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    kiln_cli_json_print(f, j, pretty);
    fclose(f);
    return buf;
}

static void values(void **state)
{
    (void)state;
    kiln_cli_json *j = parse_ok(" {\"a\": [1, -2.5e3, true, false, null], \"b\": {\"c\": \"x\"},"
                                " \"n\": 12345678901234567890} ");
    assert_int_equal(j->type, KILN_CLI_JSON_OBJECT);
    const kiln_cli_json *a = kiln_cli_json_get(j, "a");
    assert_non_null(a);
    assert_int_equal(a->n, 5);
    assert_string_equal(a->items[0].text, "1");
    assert_string_equal(a->items[1].text, "-2.5e3");
    assert_true(a->items[2].boolean);
    assert_int_equal(a->items[4].type, KILN_CLI_JSON_NULL);
    assert_string_equal(kiln_cli_json_get(kiln_cli_json_get(j, "b"), "c")->text, "x");
    /* numbers keep their text, so 64-bit values convert exactly */
    assert_string_equal(kiln_cli_json_get(j, "n")->text, "12345678901234567890");
    assert_null(kiln_cli_json_get(j, "missing"));
    assert_null(kiln_cli_json_get(a, "a")); /* not an object */
    assert_string_equal(printed(j, false), "{\"a\":[1,-2.5e3,true,false,null],\"b\":{\"c\":\"x\"},"
                                           "\"n\":12345678901234567890}");
    assert_string_equal(printed(j, true), "{\n  \"a\": [1, -2.5e3, true, false, null],\n"
                                          "  \"b\": {\n    \"c\": \"x\"\n  },\n"
                                          "  \"n\": 12345678901234567890\n}");
    kiln_cli_json_free(j);
    j = parse_ok("[[], {}, [[1]]]");
    assert_string_equal(printed(j, true), "[\n  [],\n  {},\n  [\n    [1]\n  ]\n]");
    kiln_cli_json_free(j);
    kiln_cli_json_free(NULL);
}

static void strings_decode_and_encode(void **state)
{
    (void)state;
    kiln_cli_json *j = parse_ok("\"a\\\"b\\\\c\\/\\n\\t\\u00e9\\ud83d\\ude00\\u0000z\"");
    assert_int_equal(j->type, KILN_CLI_JSON_STRING);
    const char want[] = "a\"b\\c/\n\t\xc3\xa9\xf0\x9f\x98\x80\0z";
    assert_int_equal(j->len, sizeof(want) - 1);
    assert_memory_equal(j->text, want, sizeof(want) - 1);
    /* written back: escapes for quotes, controls and NUL; UTF-8 kept */
    assert_string_equal(printed(j, false),
                        "\"a\\\"b\\\\c/\\n\\t\xc3\xa9\xf0\x9f\x98\x80\\u0000z\"");
    kiln_cli_json_free(j);
    /* a lone surrogate decodes to U+FFFD; bytes that are not UTF-8 are escaped */
    j = parse_ok("\"\\ud800x\"");
    assert_memory_equal(j->text, "\xef\xbf\xbdx", 4);
    kiln_cli_json_free(j);
    char buf[64];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    kiln_cli_json_put_string(f, "\xff\xc3", 2);
    fclose(f);
    assert_string_equal(buf, "\"\\u00ff\\u00c3\"");
}

static void errors_name_the_offset(void **state)
{
    (void)state;
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"", "JSON ends at offset 0, expected a value"},
        {"[1, 2", "JSON ends at offset 5, expected ',' or ']'"},
        {"[1 2]", "offset 3: expected ',' or ']', found '2'"},
        {"{\"a\" 1}", "offset 5: expected ':'"},
        {"{1: 2}", "offset 1: expected a key string"},
        {"[1,]", "offset 3: expected a value, found ']'"},
        {"01", "malformed number"},
        {"1.", "malformed number"},
        {"-", "malformed number"},
        {"1e", "malformed number"},
        {"tru", "expected a value"},
        {"\"abc", "unterminated string"},
        {"\"a\\qb\"", "bad escape"},
        {"\"\\u12\"", "bad escape"},
        {"\"a\tb\"", "control character"},
        {"[1] x", "expected the end of the text, found 'x'"},
        {"\x01", "found byte 0x01"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_cli_json *j = (kiln_cli_json *)1;
        kiln_err err;
        print_message("case %zu: %s\n", i, cases[i].text);
        assert_status(kiln_cli_json_parse(cases[i].text, strlen(cases[i].text), &j, &err),
                      KILN_INVALID_ARGUMENT, &err, cases[i].needle);
        assert_null(j);
    }
}

static void depth_is_bounded(void **state)
{
    (void)state;
    char deep[200];
    memset(deep, '[', sizeof(deep) - 1);
    deep[sizeof(deep) - 1] = '\0';
    kiln_cli_json *j;
    kiln_err err;
    assert_status(kiln_cli_json_parse(deep, strlen(deep), &j, &err), KILN_RESOURCE_EXHAUSTED, &err,
                  "nested deeper than 64");
}

static void allocation_failures_leak_nothing(void **state)
{
    (void)state;
    const char *text = "{\"a\": [1, 2, {\"b\": \"xyz\"}], \"c\": [[1], [2]], \"d\": \"e\"}";
    for (long n = 0;; n++) {
        kiln_cli_json *j;
        kiln_err err;
        kiln_alloc_fail_after(n);
        kiln_status st = kiln_cli_json_parse(text, strlen(text), &j, &err);
        kiln_alloc_fail_after(-1);
        if (st == KILN_OK) {
            kiln_cli_json_free(j);
            assert_true(n > 5);
            break;
        }
        assert_int_equal(st, KILN_RESOURCE_EXHAUSTED);
        assert_null(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values),
        cmocka_unit_test(strings_decode_and_encode),
        cmocka_unit_test(errors_name_the_offset),
        cmocka_unit_test(depth_is_bounded),
        cmocka_unit_test(allocation_failures_leak_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
