/* Unit tests: core/utf8.c — validation per RFC 3629 and repair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/utf8.h"

#define VALID(s) assert_true(sl_utf8_valid(s, sizeof(s) - 1))
#define INVALID(s) assert_false(sl_utf8_valid(s, sizeof(s) - 1))

static void validation(void **state)
{
    VALID("");
    VALID("plain ascii");
    VALID("caf\xC3\xA9");              /* é */
    VALID("\xE2\x82\xAC");             /* € */
    VALID("\xF0\x9F\x98\x80");         /* emoji */
    INVALID("\xC0\xAF");               /* overlong '/' */
    INVALID("\xE0\x80\xAF");           /* overlong, 3 bytes */
    INVALID("\xED\xA0\x80");           /* UTF-16 surrogate */
    INVALID("\xF4\x90\x80\x80");       /* above U+10FFFF */
    INVALID("\xC3");                   /* truncated at the end */
    INVALID("\x80");                   /* lone continuation */
    INVALID("\xFF");
}

static void sanitize_replaces_each_bad_byte(void **state)
{
    const char in[] = "a\xFF" "b\xC3";
    char *out = sl_utf8_sanitize(in, sizeof in - 1);
    assert_string_equal(out, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
    assert_true(sl_utf8_valid(out, strlen(out)));
    sl_free(out);

    const char good[] = "caf\xC3\xA9 \xF0\x9F\x98\x80";
    out = sl_utf8_sanitize(good, sizeof good - 1);
    assert_string_equal(out, good);
    sl_free(out);

    const char with_nul[] = {'x', '\0', 'y'};
    out = sl_utf8_sanitize(with_nul, 3);
    assert_string_equal(out, "x\xEF\xBF\xBDy");
    sl_free(out);
}

/* Names that differ only in bad bytes stay apart, and a U+FFFD already in a
 * name cannot pass for an escape. */
static void escape_keeps_names_apart(void **state)
{
    (void)state;
    char *e9 = sl_utf8_escape("x\xE9.jpg", 6), *e8 = sl_utf8_escape("x\xE8.jpg", 6);
    assert_string_equal(e9, "x\xEF\xBF\xBD" "E9.jpg");
    assert_string_equal(e8, "x\xEF\xBF\xBD" "E8.jpg");
    assert_true(sl_utf8_valid(e9, strlen(e9)));
    sl_free(e9);
    sl_free(e8);
    const char fffd[] = "y\xEF\xBF\xBD";
    assert_true(sl_utf8_needs_escape(fffd, sizeof fffd - 1));
    char *out = sl_utf8_escape(fffd, sizeof fffd - 1);
    assert_string_equal(out, "y\xEF\xBF\xBD" "EF\xEF\xBF\xBD" "BF\xEF\xBF\xBD" "BD");
    sl_free(out);
    const char good[] = "caf\xC3\xA9 %E9";
    assert_false(sl_utf8_needs_escape(good, sizeof good - 1));
    out = sl_utf8_escape(good, sizeof good - 1);
    assert_string_equal(out, good);
    sl_free(out);
    assert_true(sl_utf8_needs_escape("\xC3", 1)); /* cut inside a character */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validation),
        cmocka_unit_test(sanitize_replaces_each_bad_byte),
        cmocka_unit_test(escape_keeps_names_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
