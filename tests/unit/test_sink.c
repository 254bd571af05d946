/* Unit tests: io/sink.c and the formats behind it — a row written from a
 * schema (JSONL groups and omitted nulls, pass-through after the head, the
 * tail last), a part that appears only when committed with the durable step
 * between sync and rename, a failed durable step that publishes nothing, an
 * abandoned part removed, a schema a format cannot hold refused, and the
 * pass-through values a Parquet column cannot hold named and counted (and
 * declared types that hold them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/parquet_shape.h"
#include "io/sink.h"
#include "test_util.h"

static const sl_schema_column head[] = {
    {"id", SL_PQ_STRING, false, NULL, false, false},
    {"w", SL_PQ_INT64, true, NULL, true, false},
    {"a_ms", SL_PQ_DOUBLE, false, "t", false, false},
    {"b_ms", SL_PQ_DOUBLE, false, "t", false, false},
    {"err", SL_PQ_STRING, true, NULL, false, false},
};

static char *slurp(const char *path)
{
    static char buf[4096];
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static int durable_calls;
static char durable_saw[1024];

/* The ledger's place: the temporary is complete, the final name not there. */
static sl_status durable(void *user)
{
    const char *final_path = user;
    durable_calls++;
    snprintf(durable_saw, sizeof durable_saw, "%s", tu_exists(final_path) ? "final" : "temp only");
    return SL_OK;
}

static sl_status durable_fails(void *user)
{
    (void)user;
    return sl_fail(SL_ERR_IO, "ledger full");
}

static void jsonl_row_follows_the_schema(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_columns *cols;
    const char *reserved[] = {"id", "w", "t", "a_ms", "b_ms", "err"};
    assert_int_equal(sl_columns_new(reserved, 6, NULL, 0, &cols), SL_OK);
    sl_schema schema = {head, 5, cols, NULL, 0};
    sl_sink *sink;
    assert_int_equal(sl_sink_open("jsonl", dir, false, &schema, &sink), SL_OK);
    assert_string_equal(sl_sink_format(sink), "jsonl");
    assert_null(sl_sink_part_path(sink));
    assert_int_equal(sl_sink_part_open(sink, "part-00000.jsonl"), SL_OK);
    char final_path[600];
    snprintf(final_path, sizeof final_path, "%s/part-00000.jsonl", dir);
    assert_string_equal(sl_sink_part_path(sink), final_path);

    json_t *extra = json_pack("{s:i, s:s}", "w", 7, "tag", "x");
    sl_pq_value cells[5] = {{.ptr = "r1", .len = 2}, {.i64 = 640}, {.f64 = 1.5}, {.f64 = 2},
                            {.is_null = true}};
    assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells, .extra = extra}), SL_OK);
    cells[0] = (sl_pq_value){.ptr = "r\xff", .len = 2}; /* repaired */
    cells[1] = (sl_pq_value){.is_null = true};         /* omitted */
    cells[4] = (sl_pq_value){.ptr = "bad", .len = 3};
    assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_OK);
    json_decref(extra);
    assert_false(tu_exists(final_path));
    durable_calls = 0;
    assert_int_equal(sl_sink_commit(sink, durable, final_path), SL_OK);
    assert_int_equal(durable_calls, 1);
    assert_string_equal(durable_saw, "temp only");
    assert_false(sl_sink_part_is_open(sink));
    assert_string_equal(sl_sink_part_path(sink), final_path);
    assert_string_equal(slurp(final_path),
                        "{\"id\":\"r1\",\"w\":640,\"t\":{\"a_ms\":1.5,\"b_ms\":2.0},\"err\":null,"
                        "\"input_w\":7,\"tag\":\"x\"}\n"
                        "{\"id\":\"r\xef\xbf\xbd\",\"t\":{\"a_ms\":1.5,\"b_ms\":2.0},"
                        "\"err\":\"bad\"}\n");
    /* A committed part takes no more rows; a new one opens. */
    assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_sink_commit(sink, NULL, NULL), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_sink_part_open(sink, "part-00001.jsonl"), SL_OK);
    assert_int_equal(sl_sink_part_open(sink, "part-00002.jsonl"), SL_ERR_INVALID_ARG);
    sl_sink_free(sink); /* the open part-00001 is given up */
    snprintf(final_path, sizeof final_path, "%s/part-00001.jsonl", dir);
    assert_false(tu_exists(final_path));
    sl_columns_free(cols);
    tu_rmtree(dir);
}

/* A JSON column (a structured answer) is its value in JSONL, not a string. */
static void a_json_column_is_written_as_its_value(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    static const sl_schema_column cols[] = {{"id", SL_PQ_STRING, false, NULL, false, false},
                                            {"answer", SL_PQ_STRING, true, NULL, false, true}};
    sl_schema schema = {cols, 2, NULL, NULL, 0};
    sl_sink *sink;
    assert_int_equal(sl_sink_open("jsonl", dir, false, &schema, &sink), SL_OK);
    assert_int_equal(sl_sink_part_open(sink, "part-00000.jsonl"), SL_OK);
    const char *answers[] = {"{\"a\": [1, \"x\"]}", " 3 ", "not json", NULL};
    for (int i = 0; i < 4; i++) {
        sl_pq_value cells[2] = {{.ptr = "r", .len = 1},
                                answers[i] ? (sl_pq_value){.ptr = answers[i],
                                                           .len = strlen(answers[i])}
                                           : (sl_pq_value){.is_null = true}};
        assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_OK);
    }
    assert_int_equal(sl_sink_commit(sink, NULL, NULL), SL_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/part-00000.jsonl", dir);
    assert_string_equal(slurp(path), "{\"id\":\"r\",\"answer\":{\"a\":[1,\"x\"]}}\n"
                                     "{\"id\":\"r\",\"answer\":3}\n"
                                     "{\"id\":\"r\",\"answer\":\"not json\"}\n"
                                     "{\"id\":\"r\",\"answer\":null}\n");
    sl_sink_free(sink);
    tu_rmtree(dir);
}

static void failed_durable_step_publishes_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    sl_schema schema = {head, 5, NULL, NULL, 0};
    const char *formats[] = {"jsonl", "parquet"};
    for (int f = 0; f < 2; f++) {
        sl_sink *sink;
        char name[64], final_path[600];
        snprintf(name, sizeof name, "part-00000.%s", formats[f]);
        snprintf(final_path, sizeof final_path, "%s/%s", dir, name);
        assert_int_equal(sl_sink_open(formats[f], dir, false, &schema, &sink), SL_OK);
        assert_int_equal(sl_sink_part_open(sink, name), SL_OK);
        sl_pq_value cells[5] = {{.ptr = "r1", .len = 2}, {.is_null = true}, {.f64 = 1},
                                {.f64 = 2}, {.is_null = true}};
        assert_int_equal(sl_sink_write(sink, &(sl_schema_row){.cells = cells}), SL_OK);
        assert_int_equal(sl_sink_commit(sink, durable_fails, NULL), SL_ERR_IO);
        assert_string_equal(sl_last_error(), "ledger full");
        assert_true(sl_sink_part_is_open(sink));
        sl_sink_abandon(sink);
        assert_false(sl_sink_part_is_open(sink));
        assert_false(tu_exists(final_path));
        sl_sink_free(sink);
        assert_int_equal(tu_count_entries(dir), 0); /* no temporary left either */
    }
    tu_rmtree(dir);
}

static void formats_refused(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    static const sl_schema_column tail[] = {{"image_bytes", SL_PQ_BINARY, true, NULL, false, false}};
    sl_schema schema = {head, 5, NULL, tail, 1};
    sl_sink *sink = NULL;
    assert_int_equal(sl_sink_open("jsonl", dir, false, &schema, &sink), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "image_bytes"));
    assert_null(sink);
    assert_int_equal(sl_sink_open("csv", dir, false, &schema, &sink), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'csv'"));
    assert_int_equal(sl_sink_open("parquet", dir, false, &schema, &sink), SL_OK);
    sl_sink_free(sink);
    sl_sink_free(NULL);
    tu_rmtree(dir);
}

static bool fits(const sl_columns *c, size_t i, const char *value, char *why, size_t len)
{
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    bool ok = sl_columns_fits(c, i, v, why, len);
    json_decref(v);
    return ok;
}

static void sample(sl_columns *c, const char *row)
{
    json_t *j = json_loads(row, 0, NULL);
    assert_non_null(j);
    assert_int_equal(sl_columns_sample(c, j), SL_OK);
    json_decref(j);
}

/* What the samples typed, later values are checked against, each misfit
 * named by where it is; a declared type is kept whatever samples say. */
static void fits_names_what_a_column_cannot_hold(void **state)
{
    (void)state;
    sl_columns *c;
    assert_int_equal(sl_columns_new(NULL, 0, NULL, 0, &c), SL_OK);
    sample(c, "{\"n\": 1, \"boxes\": [{\"s\": 0.5, \"xy\": [1, 2]}], \"t\": \"a\"}");
    char why[256];
    assert_true(fits(c, 0, "7", why, sizeof why));
    assert_true(fits(c, 0, "null", why, sizeof why));
    assert_false(fits(c, 0, "2.5", why, sizeof why));
    assert_string_equal(why, "a real number where it holds int64");
    assert_true(fits(c, 1, "[{\"s\": 1, \"xy\": []}, {}]", why, sizeof why)); /* an int in double */
    assert_false(fits(c, 1, "[{\"s\": 1}, {\"xy\": [3, \"4\"]}]", why, sizeof why));
    assert_string_equal(why, "[1].xy[1]: a string where it holds int64");
    assert_true(fits(c, 1, "[{\"s\": 1, \"label\": null}]", why, sizeof why)); /* nothing lost */
    assert_false(fits(c, 1, "[{\"s\": 1, \"label\": \"cat\"}]", why, sizeof why));
    assert_string_equal(why, "[0]: key 'label' is not one of its struct's 2 fields");
    assert_false(fits(c, 1, "{\"s\": 1}", why, sizeof why));
    assert_string_equal(why, "an object where it holds a list");
    assert_true(fits(c, 2, "{\"any\": [1]}", why, sizeof why)); /* a string column: JSON text */
    assert_false(fits(c, 1, "[{\"s\": true}]", why, sizeof why));
    assert_string_equal(why, "[0].s: a bool where it holds double");
    /* Keys no field can be named, or more than a struct takes: a map. */
    sample(c, "{\"m\": {\"\": 1}, \"wide\": {\"k0\": [1]}}");
    char many[4096] = "{\"wide\": {";
    for (int k = 1; k <= 64; k++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s\"k%d\": [0.5]", k > 1 ? ", " : "", k);
    strcat(many, "}}");
    sample(c, many);
    assert_int_equal(sl_columns_shape(c, 3)->kind, SL_PQ_NODE_MAP);
    assert_int_equal(sl_columns_shape(c, 3)->element->type, SL_PQ_INT64);
    const sl_pq_node *wide = sl_columns_shape(c, 4);
    assert_int_equal(wide->kind, SL_PQ_NODE_MAP); /* 65 keys: the struct's fields' types merged */
    assert_int_equal(wide->element->kind, SL_PQ_NODE_LIST);
    assert_int_equal(wide->element->element->type, SL_PQ_DOUBLE);
    assert_true(fits(c, 3, "{\"\": 2, \"new key\": null}", why, sizeof why));
    assert_false(fits(c, 3, "{\"x\": \"s\"}", why, sizeof why));
    assert_string_equal(why, "x: a string where it holds int64");
    assert_false(fits(c, 3, "[1]", why, sizeof why));
    assert_string_equal(why, "a list where it holds a map");
    sl_columns_free(c);

    const char *declared[] = {"n:string", "boxes:{\"list\": {\"struct\": [[\"s\", \"double\"]]}}"};
    assert_int_equal(sl_columns_new(NULL, 0, declared, 2, &c), SL_OK);
    sample(c, "{\"n\": 1, \"boxes\": [{\"s\": 0.5, \"xy\": [1, 2]}], \"t\": \"a\"}");
    assert_int_equal(sl_columns_count(c), 2); /* declared: t does not pass */
    assert_int_equal(sl_columns_type(c, 0), SL_PQ_STRING);
    assert_string_equal(sl_columns_input_name(c, 1), "boxes");
    const sl_pq_node *boxes = sl_columns_shape(c, 1);
    assert_non_null(boxes);
    assert_int_equal(boxes->element->n_fields, 1); /* xy, sampled, is not added */
    assert_true(fits(c, 0, "{\"n\": [1]}", why, sizeof why));
    assert_false(fits(c, 1, "[{\"s\": 1, \"xy\": []}]", why, sizeof why));
    assert_string_equal(why, "[0]: key 'xy' is not one of its struct's 1 fields");
    sl_columns_free(c);

    /* A name may hold ':' (EXIF's keys); the type is what a type name or
     * a shape follows. */
    const char *colons[] = {"exif:Model", "dc:title: int64", "x:y:{\"list\": \"bool\"}"};
    assert_int_equal(sl_columns_new(NULL, 0, colons, 3, &c), SL_OK);
    assert_string_equal(sl_columns_input_name(c, 0), "exif:Model");
    assert_int_equal(sl_columns_type(c, 0), SL_PQ_STRING);
    assert_string_equal(sl_columns_input_name(c, 1), "dc:title");
    assert_int_equal(sl_columns_type(c, 1), SL_PQ_INT64);
    assert_string_equal(sl_columns_input_name(c, 2), "x:y");
    assert_int_equal(sl_columns_shape(c, 2)->kind, SL_PQ_NODE_LIST);
    assert_true(fits(c, 0, "{\"any\": 1}", why, sizeof why));
    sl_columns_free(c);

    const char *bad[] = {"n:{\"list\": \"int32\"}"};
    assert_int_equal(sl_columns_new(NULL, 0, bad, 1, &c), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'n:{\"list\": \"int32\"}'"));
}

/* NAME:decimal(P,S) declares a decimal column (a flat one, spaces in it
 * or not; a shape's leaf may hold spaces too) that takes any number or
 * numeric string that is one of its values exactly, whatever the samples
 * say; a precision past 1..38 or a scale past 0..P is refused naming the
 * range. It was no type: "price:decimal(10" read as a name. */
static void a_declared_decimal_takes_exact_values(void **state)
{
    (void)state;
    const char *declared[] = {"price:decimal(10,2)", "q: decimal( 5 , 2 )", "t:{\"list\": \"decimal(5, 2)\"}"};
    sl_columns *c;
    assert_int_equal(sl_columns_new(NULL, 0, declared, 3, &c), SL_OK);
    sample(c, "{\"price\": \"a\", \"q\": 1, \"t\": [true]}");
    assert_string_equal(sl_columns_input_name(c, 0), "price");
    assert_string_equal(sl_columns_input_name(c, 1), "q");
    const sl_pq_node *price = sl_columns_shape(c, 0), *q = sl_columns_shape(c, 1), *t = sl_columns_shape(c, 2);
    assert_non_null(price);
    assert_int_equal(price->kind, SL_PQ_NODE_LEAF);
    assert_int_equal(price->type, SL_PQ_DECIMAL);
    assert_int_equal(price->precision, 10);
    assert_int_equal(price->scale, 2);
    assert_int_equal(q->precision, 5);
    assert_int_equal(q->scale, 2);
    assert_int_equal(t->element->type, SL_PQ_DECIMAL);
    assert_int_equal(t->element->precision, 5);
    char why[256];
    assert_true(fits(c, 0, "12.5", why, sizeof why));
    assert_true(fits(c, 0, "\"12.50\"", why, sizeof why));
    assert_true(fits(c, 0, "-3", why, sizeof why));
    assert_true(fits(c, 0, "99999999.99", why, sizeof why));
    assert_false(fits(c, 0, "0.001", why, sizeof why));
    assert_string_equal(why, "a real number where it holds decimal(10,2)");
    assert_false(fits(c, 0, "123456789", why, sizeof why)); /* 11 digits at scale 2 */
    assert_false(fits(c, 0, "\"12.5x\"", why, sizeof why));
    assert_string_equal(why, "a string where it holds decimal(10,2)");
    assert_true(fits(c, 2, "[\"1.1\", 2]", why, sizeof why));
    sl_columns_free(c);

    const char *bad[] = {"x:decimal(39,2)", "x:decimal(5,6)", "x:decimal(0,0)", "x:decimal(5,-1)", "x:decimal(5)",
                         "x:decimal(5,2"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        assert_int_equal(sl_columns_new(NULL, 0, &bad[k], 1, &c), SL_ERR_INVALID_ARG);
        assert_non_null(strstr(sl_last_error(), bad[k]));
        assert_non_null(strstr(sl_last_error(), "precision P of 1..38 digits and a scale S of 0..P"));
    }
}

/* A declared column named by a dotted path takes a struct's field: typed
 * from it, its value the field's; a column of that very name comes first;
 * a path through a non-object is absent. Undeclared columns never look
 * inside. */
static void a_declared_path_takes_a_struct_field(void **state)
{
    (void)state;
    const char *declared[] = {"src.rank", "a.b", "src.none", "tags.0"};
    sl_columns *c;
    assert_int_equal(sl_columns_new(NULL, 0, declared, 4, &c), SL_OK);
    sample(c, "{\"src\": {\"rank\": 3, \"site\": \"x\"}, \"a.b\": \"flat\", \"a\": {\"b\": 7}, \"tags\": [\"t\"]}");
    assert_int_equal(sl_columns_count(c), 4);
    assert_int_equal(sl_columns_type(c, 0), SL_PQ_INT64);
    assert_int_equal(sl_columns_type(c, 1), SL_PQ_STRING); /* the flat "a.b", not a.b's 7 */
    json_t *row = json_loads("{\"src\": {\"rank\": 9}, \"a.b\": \"flat\", \"a\": {\"b\": 7}, \"tags\": [\"t\"]}", 0, NULL);
    assert_int_equal(json_integer_value(sl_columns_value(c, 0, row)), 9);
    assert_string_equal(json_string_value(sl_columns_value(c, 1, row)), "flat");
    assert_null(sl_columns_value(c, 2, row));
    assert_null(sl_columns_value(c, 3, row)); /* no index into a list */
    char *owned;
    sl_pq_value cell = sl_columns_cell(c, 0, row, &owned);
    assert_int_equal(cell.i64, 9);
    sl_free(owned);
    json_decref(row);
    sl_columns_free(c);

    assert_int_equal(sl_columns_new(NULL, 0, NULL, 0, &c), SL_OK);
    sample(c, "{\"src\": {\"rank\": 3}}");
    sample(c, "{\"src.rank\": null}"); /* a column of its own name, never seen with a value */
    assert_int_equal(sl_columns_count(c), 2);
    row = json_loads("{\"src\": {\"rank\": 9}}", 0, NULL);
    assert_null(sl_columns_value(c, 1, row));
    json_decref(row);
    sl_columns_free(c);
}

static sl_pq_node *shape_of(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    char why[256];
    sl_pq_node *n = j ? sl_pq_shape_parse(j, why, sizeof why) : NULL;
    json_decref(j);
    if (!n)
        fail_msg("%.40s: %s", text, j ? why : jerr.text);
    return n;
}

/* An input's schema types a column whatever the samples said (a map with
 * one key so far is a map; a column null so far its type), except one
 * declared with a type; a column not among the declared ones is left out;
 * a shape past the limits leaves the samples' type. */
static void a_schema_type_beats_the_samples(void **state)
{
    (void)state;
    sl_pq_node *map = shape_of("{\"map\": \"double\"}"), *dbl = shape_of("\"double\"");
    char wide[8192] = "{\"struct\": [";
    for (int k = 0; k < 300; k++)
        snprintf(wide + strlen(wide), sizeof wide - strlen(wide), "%s[\"f%d\", \"int64\"]", k ? ", " : "", k);
    strcat(wide, "]}");
    sl_pq_node *too_wide = shape_of(wide);
    sl_columns *c;
    assert_int_equal(sl_columns_new(NULL, 0, NULL, 0, &c), SL_OK);
    sample(c, "{\"scores\": {\"cat\": 0.5}, \"later\": null, \"n\": 1, \"w\": {\"a\": 1}}");
    assert_int_equal(sl_columns_shape(c, 0)->kind, SL_PQ_NODE_STRUCT);
    char why[256];
    assert_false(fits(c, 0, "{\"dog\": 1}", why, sizeof why));
    assert_int_equal(sl_columns_input_type(c, "scores", map), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "later", dbl), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "w", too_wide), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "unseen", dbl), SL_OK);
    assert_int_equal(sl_columns_count(c), 5);
    assert_int_equal(sl_columns_shape(c, 0)->kind, SL_PQ_NODE_MAP);
    assert_true(fits(c, 0, "{\"dog\": 1, \"cat\": 2.5}", why, sizeof why));
    assert_int_equal(sl_columns_type(c, 1), SL_PQ_DOUBLE);
    assert_int_equal(sl_columns_shape(c, 3)->kind, SL_PQ_NODE_STRUCT); /* the samples' struct<a> */
    assert_int_equal(sl_columns_shape(c, 3)->n_fields, 1);
    assert_string_equal(sl_columns_input_name(c, 4), "unseen");
    assert_int_equal(sl_columns_type(c, 4), SL_PQ_DOUBLE);
    sample(c, "{\"scores\": {\"x\": \"text\"}, \"later\": \"s\"}"); /* typed: samples leave it */
    assert_int_equal(sl_columns_shape(c, 0)->element->type, SL_PQ_DOUBLE);
    assert_int_equal(sl_columns_type(c, 1), SL_PQ_DOUBLE);
    sl_columns_free(c);

    const char *declared[] = {"scores:string", "later"};
    assert_int_equal(sl_columns_new(NULL, 0, declared, 2, &c), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "scores", map), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "later", dbl), SL_OK);
    assert_int_equal(sl_columns_input_type(c, "n", dbl), SL_OK);
    assert_int_equal(sl_columns_count(c), 2);
    assert_null(sl_columns_shape(c, 0));
    assert_int_equal(sl_columns_type(c, 0), SL_PQ_STRING); /* the user's type */
    assert_int_equal(sl_columns_type(c, 1), SL_PQ_DOUBLE);
    sl_columns_free(c);
    sl_pq_shape_free(map);
    sl_pq_shape_free(dbl);
    sl_pq_shape_free(too_wide);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jsonl_row_follows_the_schema),
        cmocka_unit_test(a_json_column_is_written_as_its_value),
        cmocka_unit_test(failed_durable_step_publishes_nothing),
        cmocka_unit_test(formats_refused),
        cmocka_unit_test(fits_names_what_a_column_cannot_hold),
        cmocka_unit_test(a_declared_decimal_takes_exact_values),
        cmocka_unit_test(a_schema_type_beats_the_samples),
        cmocka_unit_test(a_declared_path_takes_a_struct_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
