/* Unit tests: core/json.c's writer — jansson's text byte for byte, but
 * reals as their shortest text and decimals as their exact text. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/json.h"

/* Every flag the writer takes, alone and together. */
static const size_t flag_sets[] = {
    0,
    JSON_COMPACT,
    JSON_INDENT(2),
    JSON_INDENT(4) | JSON_COMPACT,
    JSON_ENSURE_ASCII,
    JSON_SORT_KEYS,
    JSON_PRESERVE_ORDER,
    JSON_ESCAPE_SLASH,
    JSON_ENCODE_ANY,
    JSON_INDENT(3) | JSON_ENSURE_ASCII | JSON_SORT_KEYS | JSON_ESCAPE_SLASH | JSON_ENCODE_ANY,
    JSON_COMPACT | JSON_ENSURE_ASCII | JSON_SORT_KEYS | JSON_ENCODE_ANY,
};

static void same_as_jansson(const json_t *v)
{
    for (size_t f = 0; f < sizeof flag_sets / sizeof *flag_sets; f++) {
        char *want = json_dumps(v, flag_sets[f]);
        size_t len = 0;
        char *got = sl_json_dump(v, flag_sets[f], &len);
        if (!want) {
            assert_null(got); /* a bare value without JSON_ENCODE_ANY */
            continue;
        }
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
        free(want);
        sl_free(got);
    }
}

/* Strings, escapes, keys, nesting and empties: no reals, so the text is
 * jansson's exactly, under each flag. */
static void writes_what_jansson_writes(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{}",
        "[]",
        "[[], {}, [[]], {\"a\": {}}]",
        "{\"b\": 1, \"a\": [true, false, null, -9223372036854775808, 9223372036854775807], \"c\": {\"z\": \"\", \"y\": [0]}}",
        "[\"quote \\\" back \\\\ slash / ctrl \\u0001\\u001f \\b\\f\\n\\r\\t del \\u007f\"]",
        "{\"caf\\u00e9 \\u20ac \\ud83d\\ude00\": \"\\u00e9t\\u00e9 \\u4e2d \\ud83d\\ude00 \\u0100\\u015c\"}",
        "{\"key\": \"nul \\u0000 in\", \"k\": 1}",
        "{\"\\u00e9\": 1, \"e\": 2, \"ee\": 3, \"E\": 4, \"\": 5}",
        "[[[[[[[[[[{\"deep\": [[[\"x\"]]]}]]]]]]]]]]",
    };
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        json_error_t err;
        json_t *v = json_loads(texts[k], JSON_ALLOW_NUL, &err);
        if (!v)
            fail_msg("%s: %s", texts[k], err.text);
        same_as_jansson(v);
        json_decref(v);
    }
    json_t *nul_key = json_object(); /* jansson's reader takes none such */
    json_object_setn_new(nul_key, "k\0ey", 4, json_integer(1));
    json_object_setn_new(nul_key, "k", 1, json_integer(2));
    json_t *scalars[] = {json_string("a/b\"c"), json_integer(-3), json_true(), json_null(), nul_key};
    for (size_t k = 0; k < sizeof scalars / sizeof *scalars; k++) {
        same_as_jansson(scalars[k]);
        json_decref(scalars[k]);
    }
}

static void expect_real(double d, const char *want)
{
    json_t *a = json_pack("[f]", d);
    char *got = sl_json_dump(a, JSON_COMPACT, NULL);
    char bracketed[64];
    snprintf(bracketed, sizeof bracketed, "[%s]", want);
    assert_string_equal(got, bracketed);
    sl_free(got);
    json_decref(a);
}

/* A real is the shortest text that reads back as it, and still reads
 * back a real: jansson wrote 19.99 as 19.989999999999998. */
static void reals_are_their_shortest_text(void **state)
{
    (void)state;
    expect_real(19.99, "19.99");
    expect_real(0.1, "0.1");
    expect_real(-0.01, "-0.01");
    expect_real(0.3333333333333333, "0.3333333333333333");
    expect_real(100.0, "100.0");
    expect_real(1500000.0, "1500000.0");
    expect_real(123456789012345.0, "123456789012345.0");
    expect_real(1e16, "1e16");
    expect_real(1e300, "1e300");
    expect_real(1e-7, "1e-7");
    expect_real(1.5e-300, "1.5e-300");
    expect_real(5e-324, "5e-324");
    expect_real(0.0001, "0.0001");
    expect_real(0.0, "0.0");
    expect_real(-0.0, "-0.0");
    expect_real(0.1 + 0.2, "0.30000000000000004");
    expect_real(1.7976931348623157e308, "1.7976931348623157e308");

    /* Each of many doubles reads back as itself. */
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int k = 0; k < 20000; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof d);
        if (!isfinite(d))
            continue;
        json_t *a = json_pack("[f]", d);
        char *text = sl_json_dump(a, JSON_COMPACT, NULL);
        json_error_t err;
        json_t *back = json_loads(text, 0, &err);
        assert_non_null(back);
        assert_true(json_is_real(json_array_get(back, 0)));
        assert_memory_equal(&(double){json_real_value(json_array_get(back, 0))}, &d, sizeof d);
        json_decref(back);
        sl_free(text);
        json_decref(a);
    }
}

/* JSON_REAL_PRECISION(n) is jansson's n digits, as asked for. */
static void an_asked_precision_stays_jansson(void **state)
{
    (void)state;
    json_t *a = json_pack("[f, f, f, f]", 19.99, 1.0 / 3, 1e300, 100.0);
    for (int p = 1; p <= 17; p += 4) {
        char *want = json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(p));
        char *got = sl_json_dump(a, JSON_COMPACT | JSON_REAL_PRECISION(p), NULL);
        assert_string_equal(got, want);
        free(want);
        sl_free(got);
    }
    json_decref(a);
}

/* A float32 column's value is its shortest float text: 0.1, not the
 * float's exact 0.10000000149011612. */
static void a_float_is_its_shortest_text(void **state)
{
    (void)state;
    static const struct {
        float f;
        const char *want;
    } cases[] = {{0.1f, "[0.1]"}, {19.99f, "[19.99]"}, {16777216.0f, "[16777216.0]"},
                 {3.4028235e38f, "[3.4028235e38]"}, {1e-45f, "[1e-45]"}, {-0.0f, "[-0.0]"}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        json_t *a = json_array();
        json_array_append_new(a, sl_json_real_float(cases[k].f));
        char *got = sl_json_dump(a, JSON_COMPACT, NULL);
        assert_string_equal(got, cases[k].want);
        assert_true((float)json_real_value(json_array_get(a, 0)) == cases[k].f);
        sl_free(got);
        json_decref(a);
    }
    assert_true(json_is_null(sl_json_real_float(NAN)));
}

/* The value of the positive half of bits h (0x7c00: 65536, past the
 * largest, where a value rounds to infinity from 65520 up). */
static double half_value(unsigned h)
{
    unsigned exp = h >> 10, mant = h & 0x3ff;
    return exp ? ldexp(1024 + mant, (int)exp - 25) : ldexp(mant, -24);
}

/* Whether x rounds to the positive half h (to the nearest, ties to the even
 * one). */
static bool reads_as_half(double x, unsigned h)
{
    double d = fabs(x - half_value(h));
    double below = h ? fabs(x - half_value(h - 1)) : INFINITY, above = fabs(x - half_value(h + 1));
    return (d < below || (d == below && h % 2 == 0)) && (d < above || (d == above && h % 2 == 0));
}

/* A text's significant digits: "65500.0" 3, "6.1e-5" 2. */
static int significant_digits(const char *t)
{
    char digits[64];
    size_t n = 0;
    for (; *t && *t != 'e'; t++)
        if (*t >= '0' && *t <= '9' && (n || *t != '0'))
            digits[n++] = *t;
    while (n && digits[n - 1] == '0')
        n--;
    return (int)n;
}

/* A float16 column's value is the half's shortest text: 0.1, not the float
 * holding the half, 0.099975586. Every finite half, both signs: the text
 * reads back as the half and one digit fewer does not; sl_half_float holds
 * each exactly, subnormals too. */
static void a_half_is_its_shortest_text(void **state)
{
    (void)state;
    static const struct {
        unsigned bits;
        const char *want;
    } cases[] = {{0x2e66, "0.1"},     {0x7bff, "65500.0"}, /* numpy's repr: 6.55e+04 */
                 {0x03ff, "6.1e-5"},  /* the largest subnormal, 6.0975552e-5 */
                 {0x0001, "6e-8"},    {0x8000, "-0.0"},   {0x3555, "0.3333"},
                 {0x6800, "2048.0"},  {0xbc00, "-1.0"}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        json_t *v = sl_json_real_half(sl_half_float((uint16_t)cases[k].bits));
        char *got = sl_json_dump(v, JSON_ENCODE_ANY, NULL);
        assert_string_equal(got, cases[k].want);
        sl_free(got);
        json_decref(v);
    }
    for (unsigned h = 0; h < 0x7c00; h++) {
        for (int sign = 0; sign < 2; sign++) {
            double exact = sign ? -half_value(h) : half_value(h);
            assert_true(sl_half_float((uint16_t)(h | (unsigned)sign << 15)) == (float)exact);
            assert_true(!signbit(sl_half_float((uint16_t)(h | (unsigned)sign << 15))) == !signbit(exact));
            json_t *v = sl_json_real_half((float)exact);
            char *text = sl_json_dump(v, JSON_ENCODE_ANY, NULL);
            double back = strtod(text, NULL);
            if (!reads_as_half(fabs(back), h) || !signbit(back) != !signbit(exact))
                fail_msg("half 0x%04x (%.17g) wrote %s", h, exact, text);
            int n = significant_digits(text);
            char fewer[320];
            snprintf(fewer, sizeof fewer, "%.*g", n - 1, fabs(exact));
            if (n > 1 && reads_as_half(strtod(fewer, NULL), h))
                fail_msg("half 0x%04x (%.17g) wrote %s, but %s reads as it too", h, exact, text, fewer);
            sl_free(text);
            json_decref(v);
        }
    }
    assert_true(json_is_null(sl_json_real_half(sl_half_float(0x7c00))));
    assert_true(json_is_null(sl_json_real_half(sl_half_float(0x7e00))));
}

/* sl_decimal_from_text is sl_decimal_text's inverse: a number's text (of
 * the scale or fewer digits after the point, an exponent) as the unscaled
 * bytes that read back as the decimal's exact text, up to 76 digits in 32
 * bytes (io/parquet's encoding: the cases there check the bytes); a value
 * past the precision, or a precision past 76, is none. */
static void a_decimal_text_reads_back_as_its_bytes(void **state)
{
    (void)state;
    char nines[80] = "-";
    memset(nines + 1, '9', 76);
    static const struct {
        const char *text;
        int precision, scale;
        size_t n;
        const char *back;
    } cases[] = {
        {"1.10", 5, 2, 3, "1.10"},
        {"1.1", 5, 2, 3, "1.10"},
        {"-0.001", 9, 3, 4, "-0.001"},
        {"2e3", 4, 0, 2, "2000"},
        {"12345678901234567.1234567890", 38, 10, 16, "12345678901234567.1234567890"},
        {"-99999999999999999999999999999999999999", 38, 0, 16, "-99999999999999999999999999999999999999"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases + 2; k++) {
        bool wide = k >= sizeof cases / sizeof *cases; /* 76 nines, negative and not */
        const char *text = wide ? nines + (k % 2) : cases[k].text;
        int precision = wide ? 76 : cases[k].precision, scale = wide ? 0 : cases[k].scale;
        size_t n = wide ? 32 : cases[k].n;
        uint8_t be[32];
        char back[SL_DECIMAL_TEXT_MAX];
        assert_true(sl_decimal_from_text(text, strlen(text), precision, scale, be, n));
        assert_int_equal(sl_decimal_text(be, n, scale, back), strlen(wide ? text : cases[k].back));
        assert_string_equal(back, wide ? text : cases[k].back);
    }
    uint8_t be[32];
    assert_false(sl_decimal_from_text("1.105", 5, 5, 2, be, 3));
    assert_false(sl_decimal_from_text("1000", 4, 5, 2, be, 3));
    nines[77] = '9'; /* 77 digits */
    assert_false(sl_decimal_from_text(nines + 1, 77, 76, 0, be, 32));
    assert_false(sl_decimal_from_text("1", 1, 77, 0, be, 32));
}

/* A decimal is written as its exact text, the scale kept: the unscaled
 * value in big-endian two's complement over 10^scale. */
static void a_decimal_is_its_exact_text(void **state)
{
    (void)state;
    static const struct {
        uint8_t be[16];
        size_t n;
        int scale;
        const char *want;
    } cases[] = {
        {{0x00, 0x6e}, 2, 2, "1.10"},                       /* 110 */
        {{0xff, 0xf6}, 2, 2, "-0.10"},                      /* -10 */
        {{0xff, 0xff, 0xff, 0xff}, 4, 3, "-0.001"},         /* -1 */
        {{0x00}, 1, 5, "0.00000"},
        {{0x00}, 1, -2, "0"},
        {{0x7b}, 1, -2, "12300"},                            /* 123 over 10^-2 */
        {{0x07, 0xd0}, 2, 0, "2000"},
        /* 123456789012345671234567890 over 10^10: 27 digits, past a double's 17 */
        {{0x00, 0x00, 0x00, 0x00, 0x00, 0x66, 0x1e, 0xfd, 0xf1, 0x58, 0xf2, 0xa6, 0x63, 0xa7, 0x3e, 0xd2}, 16, 10,
         "12345678901234567.1234567890"},
        /* the least decimal128: -2^127 */
        {{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 16, 38,
         "-1.70141183460469231731687303715884105728"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char text[SL_DECIMAL_TEXT_MAX];
        size_t len = sl_decimal_text(cases[k].be, cases[k].n, cases[k].scale, text);
        assert_string_equal(text, cases[k].want);
        assert_int_equal(len, strlen(cases[k].want));
        json_t *a = json_pack("[o, f]", sl_json_decimal(text, len), 19.99);
        char *got = sl_json_dump(a, JSON_COMPACT, NULL);
        char want[SL_DECIMAL_TEXT_MAX + 16];
        snprintf(want, sizeof want, "[%s,19.99]", cases[k].want);
        assert_string_equal(got, want);
        /* the value reads as the number it is, C text as "" */
        double d = 0;
        assert_true(sl_json_number(json_array_get(a, 0), &d));
        assert_true(d == strtod(cases[k].want, NULL));
        assert_string_equal(json_string_value(json_array_get(a, 0)), "");
        sl_free(got);
        json_decref(a);
    }
    /* past 32 bytes, or a scale past 76: none */
    static const uint8_t wide[33] = {0};
    char text[SL_DECIMAL_TEXT_MAX];
    assert_int_equal(sl_decimal_text(wide, sizeof wide, 2, text), 0);
    assert_int_equal(sl_decimal_text(wide, 1, 77, text), 0);
    /* a data string is not one, nor the marker before a text that is no number */
    json_t *plain = json_string("1.10");
    assert_null(sl_json_decimal_text(plain, NULL));
    json_decref(plain);
    json_t *odd = json_stringn("\0sluice-decimal\0" "1.x", 19);
    assert_null(sl_json_decimal_text(odd, NULL));
    char *dumped = sl_json_dump(odd, JSON_ENCODE_ANY, NULL);
    assert_string_equal(dumped, "\"\\u0000sluice-decimal\\u00001.x\"");
    sl_free(dumped);
    json_decref(odd);
    /* nor a data string (UTF-8, as every one is) that begins as the marker
     * once did, before a number: it was written as that number */
    json_t *old_mark = json_stringn("\0sluice-decimal\0" "1.5", 19);
    assert_null(sl_json_decimal_text(old_mark, NULL));
    dumped = sl_json_dump(old_mark, JSON_ENCODE_ANY, NULL);
    assert_string_equal(dumped, "\"\\u0000sluice-decimal\\u00001.5\"");
    sl_free(dumped);
    json_decref(old_mark);
    json_t *made = sl_json_decimal("1.5", 3);
    assert_string_equal(sl_json_decimal_text(made, NULL), "1.5");
    json_decref(made);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writes_what_jansson_writes),
        cmocka_unit_test(reals_are_their_shortest_text),
        cmocka_unit_test(an_asked_precision_stays_jansson),
        cmocka_unit_test(a_float_is_its_shortest_text),
        cmocka_unit_test(a_half_is_its_shortest_text),
        cmocka_unit_test(a_decimal_is_its_exact_text),
        cmocka_unit_test(a_decimal_text_reads_back_as_its_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
