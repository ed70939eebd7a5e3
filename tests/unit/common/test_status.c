/* Unit tests: common/status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/status.h"
#include "tests/support.h"

static void names_match_grpc(void **state)
{
    (void)state;
    assert_string_equal(kiln_status_name(KILN_OK), "OK");
    assert_string_equal(kiln_status_name(KILN_INVALID_ARGUMENT), "INVALID_ARGUMENT");
    assert_string_equal(kiln_status_name(KILN_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(kiln_status_name((kiln_status)99), "UNKNOWN_STATUS");
    /* values equal gRPC's status codes */
    assert_int_equal(KILN_NOT_FOUND, 5);
    assert_int_equal(KILN_RESOURCE_EXHAUSTED, 8);
    assert_int_equal(KILN_UNAVAILABLE, 14);
    assert_int_equal(KILN_DATA_LOSS, 15);
}

static void set_returns_code_and_formats(void **state)
{
    (void)state;
    kiln_err e;
    kiln_err_clear(&e);
    assert_int_equal(e.code, KILN_OK);
    assert_string_equal(e.msg, "");
    assert_int_equal(kiln_err_set(&e, KILN_NOT_FOUND, "model '%s' v%d", "m", 3), KILN_NOT_FOUND);
    assert_int_equal(e.code, KILN_NOT_FOUND);
    assert_string_equal(e.msg, "model 'm' v3");
    /* NULL err: code still returned */
    assert_int_equal(kiln_err_set(NULL, KILN_INTERNAL, "x"), KILN_INTERNAL);
    kiln_err_clear(NULL);
}

static void long_message_truncated_with_ellipsis(void **state)
{
    (void)state;
    char big[2000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kiln_err e;
    kiln_err_set(&e, KILN_INVALID_ARGUMENT, "%s", big);
    assert_int_equal(strlen(e.msg), KILN_ERR_MSG_MAX - 1);
    assert_string_equal(e.msg + KILN_ERR_MSG_MAX - 4, "...");
}

static void prefix_adds_context(void **state)
{
    (void)state;
    kiln_err e;
    kiln_err_set(&e, KILN_INVALID_ARGUMENT, "shape [2] bad");
    assert_int_equal(kiln_err_prefix(&e, KILN_INVALID_ARGUMENT, "inputs[%d] '%s'", 0, "IN0"),
                     KILN_INVALID_ARGUMENT);
    assert_string_equal(e.msg, "inputs[0] 'IN0': shape [2] bad");
    assert_int_equal(kiln_err_prefix(NULL, KILN_ABORTED, "x"), KILN_ABORTED);
    /* a prefix on a full message still fits and is marked truncated */
    char big[600];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kiln_err_set(&e, KILN_INTERNAL, "%s", big);
    kiln_err_prefix(&e, KILN_INTERNAL, "ctx");
    assert_true(strncmp(e.msg, "ctx: bbb", 8) == 0);
    assert_string_equal(e.msg + KILN_ERR_MSG_MAX - 4, "...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_match_grpc),
        cmocka_unit_test(set_returns_code_and_formats),
        cmocka_unit_test(long_message_truncated_with_ellipsis),
        cmocka_unit_test(prefix_adds_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
