/* Unit tests: core/alloc.c — counting and failure injection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"

static void live_bytes_follow_alloc_realloc_free(void **state)
{
    int64_t base = sl_alloc_live_bytes();
    char *p = sl_malloc(100);
    assert_non_null(p);
    assert_int_equal(sl_alloc_live_bytes() - base, 100);
    p = sl_realloc(p, 1000);
    assert_non_null(p);
    assert_int_equal(sl_alloc_live_bytes() - base, 1000);
    memset(p, 7, 1000);
    sl_free(p);
    assert_int_equal(sl_alloc_live_bytes(), base);
    sl_free(NULL);
}

static void peak_bytes_remember_the_most_live(void **state)
{
    int64_t base = sl_alloc_live_bytes();
    sl_alloc_peak_reset();
    assert_int_equal(sl_alloc_peak_bytes(), base);
    char *a = sl_malloc(1000);
    char *b = sl_realloc(sl_malloc(10), 5000);
    sl_free(a);
    assert_int_equal(sl_alloc_peak_bytes() - base, 6000);
    sl_free(b);
    assert_int_equal(sl_alloc_peak_bytes() - base, 6000); /* freeing keeps the peak */
    sl_alloc_peak_reset();
    assert_int_equal(sl_alloc_peak_bytes(), base);
}

static void calloc_zeroes_and_rejects_overflow(void **state)
{
    unsigned char *p = sl_calloc(16, 8);
    assert_non_null(p);
    for (int i = 0; i < 128; i++)
        assert_int_equal(p[i], 0);
    sl_free(p);
    assert_null(sl_calloc(SIZE_MAX / 2, 4));
}

static void fail_after_n(void **state)
{
    sl_alloc_fail_after(2);
    void *a = sl_malloc(8), *b = sl_malloc(8), *c = sl_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_null(sl_strdup("x"));
    sl_alloc_fail_after(-1);
    void *d = sl_malloc(8);
    assert_non_null(d);
    sl_free(a);
    sl_free(b);
    sl_free(d);
}

static void strings(void **state)
{
    char *s = sl_strdup("hello");
    assert_string_equal(s, "hello");
    char *n = sl_strndup("hello", 3);
    assert_string_equal(n, "hel");
    char *f = sl_asprintf("%s-%05d", "part", 7);
    assert_string_equal(f, "part-00007");
    sl_free(s);
    sl_free(n);
    sl_free(f);
}

/* sl_grow keeps the array while there is room, doubles it when full and
 * keeps what it held, and on failure leaves the caller's array whole. */
static void grow_makes_room_for_one_more(void **state)
{
    long *a = NULL;
    size_t cap = 0, n = 0, grows = 0;
    for (long v = 0; v < 1000; v++) {
        size_t before = cap;
        long *g = sl_grow(a, n, &cap, sizeof *a);
        assert_non_null(g);
        if (cap != before) {
            assert_true(n == before && cap == (before ? 2 * before : 16));
            grows++;
        } else {
            assert_ptr_equal(g, a);
        }
        a = g;
        a[n++] = v;
    }
    assert_int_equal(cap, 1024);
    assert_int_equal(grows, 7); /* 16, 32, ..., 1024 */
    for (long v = 0; v < 1000; v++)
        assert_int_equal(a[v], v);

    n = cap;
    sl_alloc_fail_after(0);
    assert_null(sl_grow(a, n, &cap, sizeof *a));
    sl_alloc_fail_after(-1);
    assert_int_equal(cap, 1024);
    assert_int_equal(a[999], 999); /* still the caller's, unharmed */

    size_t huge = SIZE_MAX / 16;
    assert_null(sl_grow(a, huge, &huge, 16)); /* doubling would wrap */
    assert_int_equal(huge, SIZE_MAX / 16);
    sl_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(live_bytes_follow_alloc_realloc_free),
        cmocka_unit_test(peak_bytes_remember_the_most_live),
        cmocka_unit_test(calloc_zeroes_and_rejects_overflow),
        cmocka_unit_test(fail_after_n),
        cmocka_unit_test(strings),
        cmocka_unit_test(grow_makes_room_for_one_more),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
