/* Unit tests: common/log (JSON lines, levels, escaping, context fields). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "common/log.h"
#include "tests/support.h"

static int setup(void **state)
{
    (void)state;
    kiln_test_log_capture();
    kiln_log_set_level(KILN_LOG_INFO);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kiln_test_log_restore();
    kiln_log_set_level(KILN_LOG_INFO);
    return 0;
}

static void line_is_json_with_fields(void **state)
{
    (void)state;
    kiln_log_ctx ctx = {.request_id = "req-1", .model = "simple"};
    kiln_log_write(KILN_LOG_WARN, &ctx, "queue %d full", 7);
    const char *out = kiln_test_log_read();
    assert_non_null(strstr(out, "{\"ts\":\""));
    assert_non_null(strstr(out, "Z\",\"level\":\"warn\",\"msg\":\"queue 7 full\","
                                "\"request_id\":\"req-1\",\"model\":\"simple\"}\n"));
    /* exactly one line */
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void below_level_dropped(void **state)
{
    (void)state;
    kiln_log_write(KILN_LOG_DEBUG, NULL, "hidden");
    KILN_LOGD(NULL, "hidden too");
    assert_string_equal(kiln_test_log_read(), "");
    kiln_log_set_level(KILN_LOG_DEBUG);
    KILN_LOGD(NULL, "shown");
    assert_non_null(strstr(kiln_test_log_read(), "\"msg\":\"shown\""));
    kiln_log_set_level(KILN_LOG_OFF);
    KILN_LOGE(NULL, "off");
    assert_null(strstr(kiln_test_log_read(), "off"));
    assert_false(kiln_log_enabled(KILN_LOG_ERROR));
}

static void escapes_control_and_quotes(void **state)
{
    (void)state;
    kiln_log_ctx ctx = {.model = "m\"x"};
    KILN_LOGI(&ctx, "a\"b\\c\nd\x01");
    const char *out = kiln_test_log_read();
    assert_non_null(strstr(out, "\"msg\":\"a\\\"b\\\\c\\nd\\u0001\""));
    assert_non_null(strstr(out, "\"model\":\"m\\\"x\""));
}

static void level_parse(void **state)
{
    (void)state;
    kiln_log_level l = KILN_LOG_INFO;
    kiln_err e;
    assert_ok(kiln_log_level_parse("DEBUG", &l, &e), &e);
    assert_int_equal(l, KILN_LOG_DEBUG);
    assert_ok(kiln_log_level_parse("warning", &l, &e), &e);
    assert_int_equal(l, KILN_LOG_WARN);
    assert_status(kiln_log_level_parse("loud", &l, &e), KILN_INVALID_ARGUMENT, &e, "'loud'");
    assert_int_equal(l, KILN_LOG_WARN);
    assert_status(kiln_log_level_parse(NULL, &l, &e), KILN_INVALID_ARGUMENT, &e, "debug, info");
    assert_string_equal(kiln_log_level_name(KILN_LOG_ERROR), "error");
}

static void long_message_truncated_but_line_valid(void **state)
{
    (void)state;
    char big[5000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    KILN_LOGI(NULL, "%s", big);
    const char *out = kiln_test_log_read();
    size_t n = strlen(out);
    assert_true(n < 4200);
    assert_string_equal(out + n - 3, "\"}\n");
}

static void *writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++)
        KILN_LOGI(NULL, "thread line %d", i);
    return NULL;
}

static void lines_from_threads_do_not_interleave(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, writer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    const char *out = kiln_test_log_read();
    int lines = 0;
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        assert_true(p[0] == '{' && nl[-1] == '}');
        lines++;
        p = nl + 1;
    }
    assert_int_equal(lines, 800);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(line_is_json_with_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(below_level_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(escapes_control_and_quotes, setup, teardown),
        cmocka_unit_test_setup_teardown(level_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(long_message_truncated_but_line_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(lines_from_threads_do_not_interleave, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
