/* Unit tests: core/redact.c — URLs shown without their secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/redact.h"

static void check(const char *in, const char *want)
{
    char out[512];
    size_t n = sl_redact_urls(in, out, sizeof out);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
    assert_int_equal(sl_redact_needed(in), strcmp(in, want) != 0);
}

static void passwords_and_signatures_are_masked(void **state)
{
    (void)state;
    check("cannot download 'http://alice:hunter2@img.example/a.jpg': HTTP 401",
          "cannot download 'http://alice:***@img.example/a.jpg': HTTP 401");
    /* The last '@' of the authority ends the user info (an unencoded '@'
     * in a password); a user without a password is no secret. */
    check("https://u:p@ss@h:8080/x", "https://u:***@h:8080/x");
    check("https://bob@h/x and http://h/@y", "https://bob@h/x and http://h/@y");
    check("GET https://b.s3.amazonaws.com/k.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          "&X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=ab12&x=1#frag: HTTP 403",
          "GET https://b.s3.amazonaws.com/k.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          "&X-Amz-Credential=***&X-Amz-Signature=***&x=1#frag: HTTP 403");
    check("'https://acct.blob.core.windows.net/c/i.png?sv=2022&sig=Zm9v%3D&se=1'",
          "'https://acct.blob.core.windows.net/c/i.png?sv=2022&sig=***&se=1'");
    check("http://h/a?TOKEN=1;key=2&sig=&v=3", "http://h/a?TOKEN=***;key=***&sig=&v=3");
    /* Two URLs, and text that only looks like one. */
    check("a http://u:p@h/?token=t b <https://v:q@i/> c",
          "a http://u:***@h/?token=*** b <https://v:***@i/> c");
    check("no url: user:pass@host ?token=x", "no url: user:pass@host ?token=x");
    check("", "");
    check("://", "://");
    check("http://h?token", "http://h?token");
}

static void cut_to_fit_as_snprintf(void **state)
{
    (void)state;
    const char *in = "x http://a:b@h/";
    char out[8];
    size_t n = sl_redact_urls(in, out, sizeof out);
    assert_int_equal(n, strlen("x http://a:***@h/"));
    assert_string_equal(out, "x http:");
    assert_int_equal(sl_redact_urls(in, NULL, 0), n);
    char one[1] = {'z'};
    sl_redact_urls(in, one, 1);
    assert_int_equal(one[0], '\0');
}

/* Every error message passes through sl_fail, which masks them; formatting
 * sl_last_error() into a new message still works. */
static void sl_fail_masks(void **state)
{
    (void)state;
    sl_fail(SL_ERR_IO, "cannot download '%s': %s", "https://x:secret@h/a.jpg?sig=s3cr3t", "boom");
    assert_string_equal(sl_last_error(), "cannot download 'https://x:***@h/a.jpg?sig=***': boom");
    sl_fail(SL_ERR_IO, "row 3: %s", sl_last_error());
    assert_string_equal(sl_last_error(),
                        "row 3: cannot download 'https://x:***@h/a.jpg?sig=***': boom");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(passwords_and_signatures_are_masked),
        cmocka_unit_test(cut_to_fit_as_snprintf),
        cmocka_unit_test(sl_fail_masks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
