/* Unit tests: common/text.h, the growable text buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "common/text.h"

static void grows_past_its_first_size(void **state)
{
    (void)state;
    kiln_text t = {0};
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kiln_text_add(&t, "ab", 2);
    kiln_text_printf(&t, "-%d-%s", 42, big); /* longer than the first 256 bytes */
    assert_false(t.oom);
    assert_int_equal(t.len, 2 + 4 + 999);
    assert_int_equal(strlen(t.p), t.len);
    assert_memory_equal(t.p, "ab-42-xxx", 9);
    kiln_text_fini(&t);
    assert_null(t.p);
    assert_int_equal(t.len, 0);
}

static void out_of_memory_sticks(void **state)
{
    (void)state;
    kiln_text t = {0};
    kiln_text_add(&t, "abc", 3);
    char big[600];
    memset(big, 'y', sizeof(big));
    kiln_alloc_fail_after(0);
    kiln_text_add(&t, big, sizeof(big)); /* needs to grow: fails */
    kiln_alloc_fail_after(-1);
    assert_true(t.oom);
    kiln_text_printf(&t, "%s", "more"); /* ignored from now on */
    assert_int_equal(t.len, 3);
    assert_string_equal(t.p, "abc");
    kiln_text_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_past_its_first_size),
        cmocka_unit_test(out_of_memory_sticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
