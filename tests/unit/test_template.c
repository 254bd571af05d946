/* Unit tests: job/template.c, prompt templates filled from a row's columns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/json.h"
#include "job/template.h"

static json_t *columns(void)
{
    json_error_t err;
    json_t *o = json_loads("{\"label\": \"cat\", \"n\": 3, \"x\": 1.5, \"ok\": true, "
                           "\"none\": null, \"tags\": [\"a\", \"b\"], "
                           "\"meta\": {\"author\": \"Ann \\\"A\\\" {b}\", \"deep\": {\"k\": 7}}, "
                           "\"meta.author\": \"flat wins\", \"uni\": \"\\u00e9t\\u00e9\\n2\", "
                           "\"\\u540d\\u524d\": \"\\u306d\\u3053\", \"caf\\u00e9\": {\"k\\u00e9\": 7}}",
                           0, &err);
    assert_non_null(o);
    return o;
}

static void expect(const char *tmpl, const char *want)
{
    json_t *c = columns();
    char *out = NULL;
    assert_int_equal(template_fill(tmpl, c, &out), SL_OK);
    assert_string_equal(out, want);
    sl_free(out);
    json_decref(c);
}

static void fields_are_filled_from_the_columns(void **state)
{
    expect("A {label}.", "A cat.");
    expect("{n} {x} {ok} {tags}", "3 1.5 true [\"a\",\"b\"]");
    expect("{meta.deep.k} by {meta}", "7 by {\"author\":\"Ann \\\"A\\\" {b}\",\"deep\":{\"k\":7}}");
    /* A column named with a dot comes before the path through `meta`. */
    expect("{meta.author}", "flat wins");
    /* Filled text is not read again as a template. */
    expect("{uni}|{label}", "\xc3\xa9t\xc3\xa9\n2|cat");
    /* Columns named in other languages (a CSV header 名前, a DataFrame's
     * café) are fields too: they stayed as text, braces and all. */
    expect("{\xe5\x90\x8d\xe5\x89\x8d}, {caf\xc3\xa9.k\xc3\xa9}", "\xe3\x81\xad\xe3\x81\x93, 7");
}

/* A real goes in as the shortest text that reads back as it, as Python,
 * pyarrow and DuckDB show it: jansson's 17 digits put a DECIMAL price of
 * 19.99 (read as the nearest double) into the prompt as 19.989999999999998. */
static void reals_are_their_shortest_text(void **state)
{
    (void)state;
    json_error_t err;
    json_t *c = json_loads("{\"price\": 19.99, \"tenth\": 0.1, \"cent\": -0.01, \"whole\": 5.0, "
                           "\"big\": 1e21, \"third\": 0.3333333333333333, \"tiny\": 5e-324, "
                           "\"million\": 1500000.0, \"hundred\": 100.0, \"meta\": {\"price\": 19.99, \"n\": [0.1]}}",
                           0, &err);
    assert_non_null(c);
    char *out = NULL;
    assert_int_equal(template_fill("{price} {tenth} {cent} {whole} {big} {third} {tiny}", c, &out), SL_OK);
    assert_string_equal(out, "19.99 0.1 -0.01 5 1e+21 0.3333333333333333 5e-324");
    sl_free(out);
    /* Plain digits below 1e16, as Python: not 1.5e+06; and so inside a
     * nested value, which is JSON */
    assert_int_equal(template_fill("{million} {hundred} {meta}", c, &out), SL_OK);
    assert_string_equal(out, "1500000 100 {\"price\":19.99,\"n\":[0.1]}");
    sl_free(out);
    json_decref(c);
}

/* A decimal column's value is its exact text, the scale kept, alone and
 * inside a nested value: not "1.1", nor a marker's NUL (the prompt was cut
 * there). */
static void decimals_are_their_exact_text(void **state)
{
    (void)state;
    json_t *c = json_pack("{s:o, s:o, s:{s:o}}", "price", sl_json_decimal("1.10", 4), "wide",
                          sl_json_decimal("12345678901234567.1234567890", 28), "meta", "d",
                          sl_json_decimal("-0.001", 6));
    char *out = NULL;
    assert_int_equal(template_fill("{price} {wide} {meta}", c, &out), SL_OK);
    assert_string_equal(out, "1.10 12345678901234567.1234567890 {\"d\":-0.001}");
    sl_free(out);
    json_decref(c);
}

static void braces_that_are_not_fields_stay(void **state)
{
    expect("{{label}} {{ }} }}", "{label} { } }");
    expect("JSON like {\"a\": 1} or { label } or {} or {la bel}",
           "JSON like {\"a\": 1} or { label } or {} or {la bel}");
    expect("unclosed {label", "unclosed {label");
    assert_false(template_has_fields("plain {\"a\": 1} { x } {}"));
    assert_true(template_has_fields("{x}"));
    assert_true(template_has_fields("a {{ b"));
    assert_true(template_has_fields("a }} b"));
}

static void a_missing_or_null_column_names_itself(void **state)
{
    json_t *c = columns();
    char *out = (char *)1;
    assert_int_equal(template_fill("A {colour} {label}", c, &out), SL_ERR_INVALID_ARG);
    assert_null(out);
    assert_non_null(strstr(sl_last_error(), "no column 'colour' for {colour}"));
    assert_int_equal(template_fill("{none}", c, &out), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'none'"));
    assert_non_null(strstr(sl_last_error(), "null"));
    assert_int_equal(template_fill("{meta.deep.k.z}", c, &out), SL_ERR_INVALID_ARG);
    /* A path with an empty part names nothing, not the parts around it. */
    assert_int_equal(template_fill("{meta..author}", c, &out), SL_ERR_INVALID_ARG);
    assert_int_equal(template_fill("{.label}", c, &out), SL_ERR_INVALID_ARG);
    assert_int_equal(template_fill("{label.}", c, &out), SL_ERR_INVALID_ARG);
    assert_int_equal(template_fill("{label}", NULL, &out), SL_ERR_INVALID_ARG);
    /* A field name past 256 bytes is text, not a column. */
    char longf[300];
    memset(longf, 'a', sizeof longf);
    longf[0] = '{';
    longf[sizeof longf - 2] = '}';
    longf[sizeof longf - 1] = '\0';
    assert_int_equal(template_fill(longf, c, &out), SL_OK);
    assert_string_equal(out, longf);
    sl_free(out);
    json_decref(c);
}

/* A column named many times fails the row past 16 MiB of filled text
 * instead of holding (copies x its size) bytes: 1,000 {big} of a 1 MB
 * column were 1 GB a row. Up to the limit it is filled. */
static void a_fill_past_16_mib_fails(void **state)
{
    (void)state;
    enum { BIG = 1 << 20 };
    char *big = sl_malloc(BIG + 1);
    assert_non_null(big);
    memset(big, 'x', BIG);
    big[BIG] = '\0';
    json_t *c = json_pack("{s:s, s:i}", "big", big, "n", 7);
    sl_free(big);
    char tmpl[8 * 40 + 1] = "";
    for (int i = 0; i < 16; i++)
        strcat(tmpl, "{big}");
    char *out = NULL;
    assert_int_equal(template_fill(tmpl, c, &out), SL_OK); /* 16 MiB exactly */
    assert_int_equal(strlen(out), (size_t)16 * BIG);
    sl_free(out);
    strcat(tmpl, "{n}");
    assert_int_equal(template_fill(tmpl, c, &out), SL_ERR_INVALID_ARG);
    assert_null(out);
    assert_non_null(strstr(sl_last_error(), "would be over 16 MiB at {n}"));
    for (int i = 0; i < 40; i++)
        strcat(tmpl, "{big}");
    assert_int_equal(template_fill(tmpl, c, &out), SL_ERR_INVALID_ARG);
    json_decref(c);
}

/* sl_json_column, which templates, --prompt-column and --columns share:
 * a long name is still a column's; an empty one is no path. */
static void columns_by_name_and_path(void **state)
{
    (void)state;
    char name[700];
    memset(name, 'k', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    name[300] = '.';
    json_t *row = json_pack("{s:i, s:i, s:{s:i}}", name, 1, "", 2, "a", "b", 3);
    assert_non_null(row);
    assert_int_equal(json_integer_value(sl_json_column(row, name, strlen(name))), 1);
    assert_int_equal(json_integer_value(sl_json_column(row, "", 0)), 2); /* a key, not a path */
    assert_int_equal(json_integer_value(sl_json_column(row, "a.bc", 3)), 3); /* the first n bytes */
    assert_null(sl_json_column(row, "a.", 2));
    assert_null(sl_json_column(row, "a.b.c", 5));
    json_decref(row);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_are_filled_from_the_columns),
        cmocka_unit_test(reals_are_their_shortest_text),
        cmocka_unit_test(decimals_are_their_exact_text),
        cmocka_unit_test(braces_that_are_not_fields_stay),
        cmocka_unit_test(a_missing_or_null_column_names_itself),
        cmocka_unit_test(a_fill_past_16_mib_fails),
        cmocka_unit_test(columns_by_name_and_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
