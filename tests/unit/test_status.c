/* Unit tests: core/status.c — status names and the thread-local message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <string.h>
#include <cmocka.h>

#include "core/error.h"

static void fail_formats_and_returns_status(void **state)
{
    sl_clear_error();
    assert_string_equal(sl_last_error(), "");
    sl_status st = sl_fail(SL_ERR_IO, "cannot read '%s': %s", "a.jpg", "boom");
    assert_int_equal(st, SL_ERR_IO);
    assert_string_equal(sl_last_error(), "cannot read 'a.jpg': boom");
}

static void names_are_distinct(void **state)
{
    const char *seen[SL_ERR_INVALID_OUTPUT + 1];
    for (int s = SL_OK; s <= SL_ERR_INVALID_OUTPUT; s++) {
        seen[s] = sl_status_name((sl_status)s);
        assert_string_not_equal(seen[s], "unknown");
        for (int t = 0; t < s; t++)
            assert_string_not_equal(seen[s], seen[t]);
    }
    assert_string_equal(sl_status_name(SL_OK), "ok");
    assert_string_equal(sl_status_name((sl_status)999), "unknown");
}

static void size_limits_and_context_overflow_share_a_class(void **state)
{
    assert_string_equal(sl_status_class(SL_ERR_TOO_LARGE), "too_large");
    assert_string_equal(sl_status_class(SL_ERR_TOO_LONG), "too_large");
    assert_string_equal(sl_status_class(SL_ERR_DECODE), "decode");
    assert_string_equal(sl_status_class(SL_ERR_INVALID_OUTPUT), "invalid_output");
}

static void *other_thread(void *arg)
{
    sl_fail(SL_ERR_DECODE, "thread message");
    return NULL;
}

static void message_is_per_thread(void **state)
{
    sl_fail(SL_ERR_IO, "main message");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    assert_string_equal(sl_last_error(), "main message");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fail_formats_and_returns_status),
        cmocka_unit_test(names_are_distinct),
        cmocka_unit_test(size_limits_and_context_overflow_share_a_class),
        cmocka_unit_test(message_is_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
