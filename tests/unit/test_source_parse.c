/* Unit tests: io/source_parse.c (CSV quoting, record scanning and header
 * names, brace lists, input names in ids, WebDataset keys, URL schemes, glob
 * filters) and io/columns.c (pass-through names and types). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "io/columns.h"
#include "io/parquet_shape.h"
#include "io/source_parse.h"

static void csv(const char *rec, int want_rc, size_t want_n, const char *const *want)
{
    char **f;
    size_t n;
    char err[128] = "";
    int rc = sl_csv_split(rec, strlen(rec), 8, &f, &n, err, sizeof err);
    assert_int_equal(rc, want_rc);
    if (rc != 0) {
        assert_null(f);
        if (rc < 0)
            assert_true(strlen(err) > 0);
        return;
    }
    assert_int_equal(n, want_n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(f[i], want[i]);
    sl_csv_fields_free(f, n);
}

static void csv_quoting(void **state)
{
    csv("a,b,c", 0, 3, (const char *[]){"a", "b", "c"});
    csv("", 0, 1, (const char *[]){""});
    csv("a,,c,", 0, 4, (const char *[]){"a", "", "c", ""});
    csv("\"x,y\",\"say \"\"hi\"\"\",z", 0, 3, (const char *[]){"x,y", "say \"hi\"", "z"});
    csv("\"line\nbreak\",2", 0, 2, (const char *[]){"line\nbreak", "2"});
    csv("\"\"", 0, 1, (const char *[]){""});
    csv("é,日本", 0, 2, (const char *[]){"é", "日本"});
    /* An open quote asks for the next line; stray quotes are errors. */
    csv("\"open,field", 1, 0, NULL);
    csv("a,\"b\"c", -1, 0, NULL);
    csv("a\"b,c", -1, 0, NULL);
    /* At most 8 fields (the limit passed above), a trailing comma's included. */
    csv("1,2,3,4,5,6,7,8", 0, 8, (const char *[]){"1", "2", "3", "4", "5", "6", "7", "8"});
    csv("1,2,3,4,5,6,7,8,9", -1, 0, NULL);
    csv("1,2,3,4,5,6,7,8,", -1, 0, NULL);
}

static void unique(const char *const *given, size_t n, const char *const *want)
{
    char *names[8];
    for (size_t i = 0; i < n; i++)
        names[i] = sl_strdup(given[i]);
    assert_int_equal(sl_csv_unique_names(names, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(names[i], want[i]);
    for (size_t i = 0; i < n; i++)
        sl_free(names[i]);
}

/* A repeated header name gets DuckDB's suffixes (read_csv's column names
 * for the same headers, DuckDB 2.0), so no column's values are lost. */
static void csv_header_names_are_made_distinct(void **state)
{
    unique((const char *[]){"image", "label", "label"}, 3,
           (const char *[]){"image", "label", "label_1"});
    unique((const char *[]){"image", "label", "label", "label_1", "label"}, 5,
           (const char *[]){"image", "label", "label_1", "label_1_1", "label_2"});
    unique((const char *[]){"a", "a_1", "a", "a"}, 4, (const char *[]){"a", "a_1", "a_1_1", "a_2"});
    unique((const char *[]){"", "", "x"}, 3, (const char *[]){"", "_1", "x"});
    /* Byte for byte: a key of a row differs from another by case. */
    unique((const char *[]){"a", "A", "b"}, 3, (const char *[]){"a", "A", "b"});
    unique((const char *[]){"\xff", "\xff"}, 2, (const char *[]){"\xff", "\xff_1"});
}

/* The scan ends a record exactly where the split does, from bytes alone. */
static void csv_scan_follows_the_split(void **state)
{
    const char *recs[] = {"a,b", "\"open,field", "\"x\"\"y", "\"x\"\"", "\"\"", "a,\"b\"c",
                          "a\"b", "\"a\",\"", "\"a\"\"\",b", "", ",\"", "\"q\",\"r\nmore"};
    for (size_t i = 0; i < sizeof recs / sizeof *recs; i++) {
        char **f = NULL;
        size_t n = 0;
        char err[128];
        int rc = sl_csv_split(recs[i], strlen(recs[i]), 100, &f, &n, err, sizeof err);
        sl_csv_fields_free(f, n);
        int st = sl_csv_scan(SL_CSV_FIELD_START, recs[i], strlen(recs[i]));
        /* Fed in two pieces, the same. */
        size_t half = strlen(recs[i]) / 2;
        int st2 = sl_csv_scan(sl_csv_scan(SL_CSV_FIELD_START, recs[i], half), recs[i] + half,
                              strlen(recs[i]) - half);
        assert_int_equal(st, st2);
        if (rc == 1)
            assert_int_equal(st, SL_CSV_QUOTED);
        else
            assert_int_not_equal(st, SL_CSV_QUOTED);
        if (rc < 0)
            assert_int_equal(st, SL_CSV_BAD);
    }
}

static void lexical(const char *cwd, const char *path, const char *want)
{
    char *got = sl_path_lexical(cwd, path);
    assert_string_equal(got, want);
    sl_free(got);
}

static void lexical_paths(void **state)
{
    lexical("/w", "data/en/0000.parquet", "/w/data/en/0000.parquet");
    lexical("/w", "/abs//x/./y/", "/abs/x/y");
    lexical("/w/sub", "../data/./a.tar", "/w/data/a.tar");
    lexical("/", "../../..", "/");
    lexical("/w", ".", "/w");
    lexical("", "rel", "/rel");
}

/* names[i] of paths under `folders`, compared with want[]. */
static void names_of(const char *const *paths, size_t n, bool folders, const char *const *want)
{
    const char **names;
    assert_int_equal(sl_input_names(paths, n, folders, &names), 0);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(names[i], want[i]);
    sl_free(names);
}

static void input_names_from_the_common_folder(void **state)
{
    /* One file, or files side by side: base names, as always. */
    names_of((const char *[]){"/d/en/0000.parquet"}, 1, false, (const char *[]){"0000.parquet"});
    names_of((const char *[]){"/d/a.tar", "/d/b.tar"}, 2, false, (const char *[]){"a.tar", "b.tar"});
    /* One base name in two folders: the folders tell them apart. */
    names_of((const char *[]){"/d/en/0000.parquet", "/d/fr/0000.parquet"}, 2, false,
             (const char *[]){"en/0000.parquet", "fr/0000.parquet"});
    /* A common prefix that is not a whole folder name does not count. */
    names_of((const char *[]){"/d/en/x.tar", "/d/eu/x.tar", "/d/en/y/z.tar"}, 3, false,
             (const char *[]){"en/x.tar", "eu/x.tar", "en/y/z.tar"});
    names_of((const char *[]){"/a/b/x.tar", "/a/bc/x.tar"}, 2, false,
             (const char *[]){"b/x.tar", "bc/x.tar"});
    names_of((const char *[]){"/x.tar", "/sub/x.tar"}, 2, false,
             (const char *[]){"x.tar", "sub/x.tar"});
    /* Folders: one is named "" (ids are paths inside it); several, from their common folder. */
    names_of((const char *[]){"/photos"}, 1, true, (const char *[]){""});
    names_of((const char *[]){"/p/2023", "/p/2024"}, 2, true, (const char *[]){"2023", "2024"});
    names_of((const char *[]){"/p/a", "/q/a"}, 2, true, (const char *[]){"p/a", "q/a"});
    names_of((const char *[]){"/p", "/p/link"}, 2, true, (const char *[]){"", "link"});
    names_of((const char *[]){"/", "/p"}, 2, true, (const char *[]){"", "p"});
}

static void braces(const char *pat, int want_rc, size_t want_n, const char *const *want)
{
    char **out;
    size_t n;
    char err[128] = "";
    int rc = sl_brace_expand(pat, 1000, &out, &n, err, sizeof err);
    assert_int_equal(rc, want_rc);
    if (rc != 0) {
        assert_true(strlen(err) > 0);
        return;
    }
    assert_int_equal(n, want_n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(out[i], want[i]);
    sl_strings_free(out, n);
}

static void brace_expansion(void **state)
{
    braces("plain.tar", 0, 1, (const char *[]){"plain.tar"});
    braces("d-{000..003}.tar", 0, 4,
           (const char *[]){"d-000.tar", "d-001.tar", "d-002.tar", "d-003.tar"});
    braces("d-{8..11}", 0, 4, (const char *[]){"d-8", "d-9", "d-10", "d-11"});
    braces("d-{3..1}", 0, 3, (const char *[]){"d-3", "d-2", "d-1"});
    braces("{a,b}/{1..2}", 0, 4, (const char *[]){"a/1", "a/2", "b/1", "b/2"});
    braces("x{a,{b,c}}y", 0, 3, (const char *[]){"xay", "xby", "xcy"});
    braces("x{,s}", 0, 2, (const char *[]){"x", "xs"});
    braces("{a{b,c},d}e{1..2}", 0, 6,
           (const char *[]){"abe1", "abe2", "ace1", "ace2", "de1", "de2"});
    braces("a{b}{}c{{d}}{0..0}", 0, 1, (const char *[]){"abcd0"});
    braces("d-{0..5", -1, 0, NULL);
    braces("d-}", -1, 0, NULL);
    braces("{0..99}{0..99}", -1, 0, NULL); /* 10,000 names: over the limit of 1,000 */
}

/* Found while writing fuzz_expand (hand-made inputs run through it;
 * libFuzzer had not grown inputs that long): each brace group is expanded
 * by a recursion holding a copy of the pattern, and each name a copy of the
 * text around the group, so a 64 KB pattern of "{a}" took 0.9 GB and a long
 * text before one range 5.8 GB. A pattern is at most 4096 bytes, its names
 * 16 MiB. */
static void brace_expansion_is_bounded(void **state)
{
    char *pat = sl_malloc(SL_BRACE_MAX_PATTERN + 2);
    for (int i = 0; i < SL_BRACE_MAX_PATTERN - 2; i += 3)
        memcpy(pat + i, "{a}", 3);
    pat[SL_BRACE_MAX_PATTERN / 3 * 3] = '\0';
    char **out, err[128];
    size_t n;
    assert_int_equal(sl_brace_expand(pat, 10, &out, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(strlen(out[0]), SL_BRACE_MAX_PATTERN / 3);
    sl_strings_free(out, n);
    memset(pat, 'x', SL_BRACE_MAX_PATTERN + 1);
    pat[SL_BRACE_MAX_PATTERN + 1] = '\0';
    assert_int_equal(sl_brace_expand(pat, 10, &out, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 4096 bytes"));
    memcpy(pat + 4000, "{0..99999}", 11);
    assert_int_equal(sl_brace_expand(pat, 100000, &out, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than 16777216 bytes"));
    sl_free(pat);
}

/* Found by reading sl_brace_expand while fuzz_expand ran: the recursion
 * copied the whole pattern once per group for every name, so 4 KB of "{}"
 * after three 10-way groups (1,000 names) took 8 s of CPU, and after four
 * (10,000 names, under the CLI's limit of 100,000) minutes, before the run
 * started. The names now cost their own length. */
static void brace_expansion_costs_its_names(void **state)
{
    char pat[SL_BRACE_MAX_PATTERN + 1] = "x";
    for (int g = 0; g < 3; g++)
        strcat(pat, "{a,b,c,d,e,f,g,h,i,j}");
    while (strlen(pat) + 2 + strlen(".y") <= SL_BRACE_MAX_PATTERN)
        strcat(pat, "{}");
    strcat(pat, ".y");
    char **out, err[128];
    size_t n;
    clock_t start = clock();
    assert_int_equal(sl_brace_expand(pat, 1000, &out, &n, err, sizeof err), 0);
    double cpu_s = (double)(clock() - start) / CLOCKS_PER_SEC;
    assert_true(cpu_s < 1.0);
    assert_int_equal(n, 1000);
    assert_string_equal(out[0], "xaaa.y");
    assert_string_equal(out[1], "xaab.y");
    assert_string_equal(out[10], "xaba.y");
    assert_string_equal(out[999], "xjjj.y");
    sl_strings_free(out, n);
}

static void wds(const char *name, bool ok, const char *key, const char *ext)
{
    size_t kl;
    const char *e;
    assert_int_equal(sl_wds_split(name, &kl, &e), ok);
    if (!ok)
        return;
    assert_int_equal(kl, strlen(key));
    assert_memory_equal(name, key, kl);
    assert_string_equal(e, ext);
}

static void wds_keys(void **state)
{
    wds("000123.jpg", true, "000123", "jpg");
    wds("a/b.c/000123.seg.png", true, "a/b.c/000123", "seg.png");
    wds("s1.json", true, "s1", "json");
    wds("dir/.hidden", false, NULL, NULL);
    wds("README", false, NULL, NULL);
    wds("x.", false, NULL, NULL);
}

static void url_schemes(void **state)
{
    char s[16];
    sl_url_scheme("http://h/x.jpg", s);
    assert_string_equal(s, "http");
    sl_url_scheme("HTTPS://h/x.jpg", s);
    assert_string_equal(s, "https");
    sl_url_scheme("file:///etc/passwd", s);
    assert_string_equal(s, "file");
    sl_url_scheme("img/a.jpg", s);
    assert_string_equal(s, "");
    sl_url_scheme("C://x", s);
    assert_string_equal(s, "");
    sl_url_scheme("weird name: 1.jpg", s);
    assert_string_equal(s, "");
}

static void hive_partition_folders(void **state)
{
    (void)state;
    char **keys, **values;
    size_t n;
    /* What pyarrow's write_to_dataset and Spark write: %XX-escaped values,
     * Spark's null, a key given twice (the deeper wins), and folders and a
     * file name that are not KEY=VALUE. */
    assert_int_equal(sl_hive_partitions("lang=en/not a partition/=x/city=S%C3%A3o%20Paulo/"
                                        "day=__HIVE_DEFAULT_PARTITION__/lang=fr/bad=%zz%4/"
                                        "nul=a%00b/empty=/part=0.parquet",
                                        &keys, &values, &n),
                     0);
    assert_int_equal(n, 6);
    assert_string_equal(keys[0], "lang");
    assert_string_equal(values[0], "fr");
    assert_string_equal(keys[1], "city");
    assert_string_equal(values[1], "S\xc3\xa3o Paulo");
    assert_string_equal(keys[2], "day");
    assert_null(values[2]);
    assert_string_equal(keys[3], "bad");
    assert_string_equal(values[3], "%zz%4");
    assert_string_equal(keys[4], "nul");
    assert_string_equal(values[4], "a%00b");
    assert_string_equal(keys[5], "empty");
    assert_string_equal(values[5], "");
    sl_hive_partitions_free(keys, values, n);

    assert_int_equal(sl_hive_partitions("part-0.parquet", &keys, &values, &n), 0);
    assert_int_equal(n, 0);
    assert_null(keys);
    assert_null(values);
    assert_int_equal(sl_hive_partitions("", &keys, &values, &n), 0);
    assert_int_equal(n, 0);
}

static void glob_filters(void **state)
{
    const char *inc[] = {"*.jpg", "keep/*"};
    const char *exc[] = {"*/skip-*"};
    assert_true(sl_glob_filter("a.jpg", NULL, 0, NULL, 0));
    assert_true(sl_glob_filter("sub/a.jpg", inc, 2, exc, 1)); /* '*' crosses '/' */
    assert_true(sl_glob_filter("keep/b.png", inc, 2, exc, 1));
    assert_false(sl_glob_filter("b.png", inc, 2, exc, 1));
    assert_false(sl_glob_filter("sub/skip-a.jpg", inc, 2, exc, 1));
    assert_false(sl_glob_filter("x/skip-1.png", NULL, 0, exc, 1));
}

static void columns_types_and_names(void **state)
{
    const char *ours[] = {"id", "caption", "input_caption"};
    sl_columns *c;
    assert_int_equal(sl_columns_new(ours, 3, NULL, 0, &c), SL_OK);
    json_t *r1 = json_pack("{s:i, s:f, s:b, s:s, s:i, s:n, s:s, s:[i]}", "n", 1, "x", 1.5, "ok", 1,
                           "s", "a", "mix", 3, "never", "caption", "orig", "arr", 1);
    json_t *r2 = json_pack("{s:i, s:i, s:b, s:s, s:s}", "n", 2, "x", 2, "ok", 0, "s", "b", "mix",
                           "three");
    assert_int_equal(sl_columns_sample(c, r1), SL_OK);
    assert_int_equal(sl_columns_sample(c, r2), SL_OK);
    const struct { const char *in, *out; sl_pq_type t; } want[] = {
        {"n", "n", SL_PQ_INT64},         {"x", "x", SL_PQ_DOUBLE},
        {"ok", "ok", SL_PQ_BOOL},        {"s", "s", SL_PQ_STRING},
        {"mix", "mix", SL_PQ_STRING},    {"never", "never", SL_PQ_STRING},
        {"caption", "input_input_caption", SL_PQ_STRING}, {"arr", "arr", SL_PQ_STRING},
    };
    assert_int_equal(sl_columns_count(c), 8);
    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(sl_columns_input_name(c, i), want[i].in);
        assert_string_equal(sl_columns_output_name(c, i), want[i].out);
        assert_int_equal(sl_columns_type(c, i), want[i].t);
    }
    char *owned;
    sl_pq_value v = sl_columns_cell(c, 1, r2, &owned); /* an int in a double column */
    assert_false(v.is_null);
    assert_true(v.f64 == 2.0);
    v = sl_columns_cell(c, 4, r1, &owned); /* an int in a string column: its JSON text */
    assert_false(v.is_null);
    assert_int_equal(v.len, 1);
    assert_memory_equal(v.ptr, "3", 1);
    sl_free(owned);
    v = sl_columns_cell(c, 7, r1, &owned); /* an array: the value itself, for a list column */
    assert_true(owned == NULL && v.json == json_object_get(r1, "arr"));
    const sl_pq_node *arr = sl_columns_shape(c, 7);
    assert_non_null(arr);
    assert_int_equal(arr->kind, SL_PQ_NODE_LIST);
    assert_int_equal(arr->element->kind, SL_PQ_NODE_LEAF);
    assert_int_equal(arr->element->type, SL_PQ_INT64);
    assert_null(sl_columns_shape(c, 0));
    v = sl_columns_cell(c, 5, r1, &owned);
    assert_true(v.is_null);
    json_t *r3 = json_pack("{s:s}", "n", "not a number"); /* later rows may not fit */
    v = sl_columns_cell(c, 0, r3, &owned);
    assert_true(v.is_null);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    sl_columns_free(c);

    /* A renamed column never lands on another input column's name. */
    assert_int_equal(sl_columns_new(ours, 2, NULL, 0, &c), SL_OK);
    json_t *a = json_pack("{s:i}", "caption", 1);
    json_t *b = json_pack("{s:i, s:i}", "input_caption", 2, "caption", 3);
    assert_int_equal(sl_columns_sample(c, a), SL_OK);
    assert_int_equal(sl_columns_sample(c, b), SL_OK);
    assert_int_equal(sl_columns_count(c), 2);
    assert_string_equal(sl_columns_output_name(c, 0), "input_caption");
    assert_string_equal(sl_columns_output_name(c, 1), "input_input_caption");
    char buf[64];
    sl_columns_free(c);
    assert_int_equal(sl_columns_new(ours, 2, NULL, 0, &c), SL_OK);
    assert_string_equal(sl_columns_rename(c, "caption", b, buf, sizeof buf), "input_input_caption");
    assert_string_equal(sl_columns_rename(c, "input_caption", b, buf, sizeof buf), "input_caption");
    assert_string_equal(sl_columns_rename(c, "caption", a, buf, sizeof buf), "input_caption");
    json_decref(a);
    json_decref(b);
    sl_columns_free(c);

    /* Declared columns: only those, in that order. */
    const char *keep[] = {"s", "missing"};
    assert_int_equal(sl_columns_new(ours, 3, keep, 2, &c), SL_OK);
    json_t *r = json_pack("{s:i, s:s}", "n", 1, "s", "v");
    assert_int_equal(sl_columns_sample(c, r), SL_OK);
    assert_int_equal(sl_columns_count(c), 2);
    assert_string_equal(sl_columns_input_name(c, 1), "missing");
    assert_int_equal(sl_columns_type(c, 1), SL_PQ_STRING);
    json_decref(r);
    sl_columns_free(c);
}

/* Each column's shape after its samples, as io/parquet_shape.h writes it
 * (null: a flat column). */
static void expect_shapes(sl_columns *c, const char *want)
{
    json_t *got = json_object();
    for (size_t i = 0; i < sl_columns_count(c); i++) {
        const sl_pq_node *n = sl_columns_shape(c, i);
        json_object_set_new(got, sl_columns_input_name(c, i), n ? sl_pq_shape_json(n) : json_null());
    }
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    if (!json_equal(got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fail_msg("shapes %s, not %s", g, want);
    }
    json_decref(got);
    json_decref(w);
}

/* Arrays and objects become lists and structs while every sample agrees:
 * elements and fields widened alike (ints with reals doubles), every key
 * seen a field, a part never seen with a value a string; a key a field
 * cannot have, a map; a mix, or past the limits, the JSON text (a flat
 * string, or a string element: lists past 4 deep). */
static void nested_columns_take_shapes(void **state)
{
    (void)state;
    const char *ours[] = {"id"};
    sl_columns *c;
    assert_int_equal(sl_columns_new(ours, 1, NULL, 0, &c), SL_OK);
    const char *rows[] = {
        "{\"tags\": [\"a\", null], \"boxes\": [[1, 2.5]], \"conv\": [{\"from\": \"h\", \"value\": \"q\"}],"
        " \"meta\": {\"w\": 1, \"parts\": [true]}, \"empty\": [], \"none\": {}, \"mixed\": [1],"
        " \"dotted\": {\"a.b\": 1}, \"deep\": [[[[[1]]]]], \"four\": [[[[1]]]], \"inner\": [1, \"x\"]}",
        "{\"tags\": [], \"boxes\": [[3], null], \"conv\": [{\"from\": \"g\", \"score\": 0.5}, null],"
        " \"meta\": null, \"empty\": [], \"mixed\": {\"k\": 1}, \"inner\": [[2]]}",
    };
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_loads(rows[i], 0, NULL);
        assert_non_null(r);
        assert_int_equal(sl_columns_sample(c, r), SL_OK);
        json_decref(r);
    }
    expect_shapes(c, "{\"tags\": {\"list\": \"string\"}, \"boxes\": {\"list\": {\"list\": \"double\"}},"
                     " \"conv\": {\"list\": {\"struct\": [[\"from\", \"string\"], [\"value\", \"string\"],"
                     " [\"score\", \"double\"]]}}, \"meta\": {\"struct\": [[\"w\", \"int64\"],"
                     " [\"parts\", {\"list\": \"bool\"}]]}, \"empty\": {\"list\": \"string\"}, \"none\": null,"
                     " \"mixed\": null, \"dotted\": {\"struct\": [[\"a.b\", \"int64\"]]},"
                     " \"deep\": {\"list\": {\"list\": {\"list\": {\"list\": \"string\"}}}},"
                     " \"four\": {\"list\": {\"list\": {\"list\": {\"list\": \"int64\"}}}},"
                     " \"inner\": {\"list\": \"string\"}}");
    assert_int_equal(sl_columns_type(c, 5), SL_PQ_STRING); /* none: only {} seen */
    /* A stage declaring a column's type makes it flat. */
    assert_int_equal(sl_columns_add(c, "tags:string"), SL_OK);
    assert_null(sl_columns_shape(c, 0));
    sl_columns_free(c);

    /* Objects of more than 64 keys in all are a map. */
    assert_int_equal(sl_columns_new(ours, 1, NULL, 0, &c), SL_OK);
    json_t *wide = json_object(), *row = json_object();
    for (int k = 0; k < 65; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        json_object_set_new(wide, key, json_integer(k));
    }
    json_object_set_new(row, "wide", wide);
    assert_int_equal(sl_columns_sample(c, row), SL_OK);
    const sl_pq_node *map = sl_columns_shape(c, 0);
    assert_non_null(map);
    assert_int_equal(map->kind, SL_PQ_NODE_MAP);
    assert_int_equal(map->element->type, SL_PQ_INT64);
    json_decref(row);
    sl_columns_free(c);
}

/* A stage's columns: "NAME" a string column (unless samples widen it),
 * "NAME:TYPE" that type (a decimal too) whatever samples said; other types
 * refused. */
static void stage_columns_take_their_declared_types(void **state)
{
    const char *ours[] = {"id"};
    sl_columns *c;
    assert_int_equal(sl_columns_new(ours, 1, NULL, 0, &c), SL_OK);
    json_t *r = json_pack("{s:s, s:i}", "score", "high", "n", 4);
    assert_int_equal(sl_columns_sample(c, r), SL_OK);
    assert_int_equal(sl_columns_add(c, "tags"), SL_OK);
    assert_int_equal(sl_columns_add(c, "rating:double"), SL_OK);
    assert_int_equal(sl_columns_add(c, "kept:bool"), SL_OK);
    assert_int_equal(sl_columns_add(c, "count:int64"), SL_OK);
    assert_int_equal(sl_columns_add(c, "score:double"), SL_OK); /* an input column's name */
    assert_int_equal(sl_columns_add(c, "n:string"), SL_OK);
    const struct { const char *name; sl_pq_type t; } want[] = {
        {"score", SL_PQ_DOUBLE}, {"n", SL_PQ_STRING},  {"tags", SL_PQ_STRING},
        {"rating", SL_PQ_DOUBLE}, {"kept", SL_PQ_BOOL}, {"count", SL_PQ_INT64},
    };
    assert_int_equal(sl_columns_count(c), 6);
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(sl_columns_input_name(c, i), want[i].name);
        assert_int_equal(sl_columns_type(c, i), want[i].t);
    }
    json_t *row = json_pack("{s:f, s:i, s:s}", "rating", 7.5, "count", 3, "kept", "yes");
    char *owned;
    sl_pq_value v = sl_columns_cell(c, 3, row, &owned);
    assert_false(v.is_null);
    assert_true(v.f64 == 7.5);
    v = sl_columns_cell(c, 5, row, &owned);
    assert_false(v.is_null);
    assert_int_equal(v.i64, 3);
    v = sl_columns_cell(c, 4, row, &owned); /* text in a bool column: null */
    assert_true(v.is_null);
    json_decref(row);
    json_decref(r);

    assert_int_equal(sl_columns_add(c, "x:float"), SL_ERR_INVALID_ARG);
    assert_string_equal(sl_last_error(), "column 'x:float': the type after ':' is string, int64, double, bool, "
                                         "decimal(P,S) or a shape ({\"list\": ...}, {\"map\": ...} or {\"struct\": [[NAME, ...], ...]})");
    /* A shape: a nested column, its type checked as the writer would. */
    assert_int_equal(sl_columns_add(c, "objs:{\"list\": {\"struct\": [[\"label\", \"string\"], [\"s\", \"double\"]]}}"),
                     SL_OK);
    const sl_pq_node *objs = sl_columns_shape(c, 6);
    assert_non_null(objs);
    assert_int_equal(objs->kind, SL_PQ_NODE_LIST);
    assert_int_equal(objs->element->n_fields, 2);
    assert_int_equal(objs->element->fields[1]->type, SL_PQ_DOUBLE);
    assert_int_equal(sl_columns_add(c, "bad:{\"struct\": [[\"\", \"int64\"]]}"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "not empty"));
    assert_int_equal(sl_columns_add(c, "deep:{\"list\": {\"list\": {\"list\": {\"list\": {\"list\": \"bool\"}}}}}"),
                     SL_ERR_INVALID_ARG);
    assert_int_equal(sl_columns_add(c, ":double"), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "no name"));
    /* A decimal: a DECIMAL leaf, a Lua number's value exactly or null. */
    assert_int_equal(sl_columns_add(c, "price:decimal(6,2)"), SL_OK);
    const sl_pq_node *price = sl_columns_shape(c, 7);
    assert_non_null(price);
    assert_int_equal(price->type, SL_PQ_DECIMAL);
    assert_int_equal(price->precision, 6);
    assert_int_equal(price->scale, 2);
    json_t *lua = json_real(19.9);
    assert_true(sl_columns_fits(c, 7, lua, NULL, 0));
    json_decref(lua);
    lua = json_real(0.125);
    assert_false(sl_columns_fits(c, 7, lua, NULL, 0));
    json_decref(lua);
    assert_int_equal(sl_columns_add(c, "p:decimal(7,8)"), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_columns_count(c), 8);
    sl_columns_free(c);
}

/* One rule for which names are compressed and which are tar shards: the
 * sources' kinds and the Hugging Face default listing both use it. */
static void compression_suffixes_and_tar_names(void **state)
{
    (void)state;
    assert_int_equal(sl_compression_suffix_len("a.jsonl.gz"), 3);
    assert_int_equal(sl_compression_suffix_len("a.jsonl.ZSTD"), 5);
    assert_int_equal(sl_compression_suffix_len("a.json.xz"), 3);
    assert_int_equal(sl_compression_suffix_len("a.jsonl"), 0);
    assert_int_equal(sl_compression_suffix_len(".gz"), 0); /* nothing before it */
    assert_true(sl_base_ends_with("data/x.CSV.bz2", ".csv"));
    assert_false(sl_base_ends_with("x.csv.lz4", ".csv"));
    const char *tars[] = {"s/000.tar", "s/000.TAR.gz", "000.tgz", "000.tar.zst", "000.tar.zstd", "000.tar.bz2",
                          "000.tar.xz"};
    for (size_t i = 0; i < sizeof tars / sizeof *tars; i++)
        assert_true(sl_tar_name(tars[i]));
    const char *others[] = {"000.tar.lz4", "000.tarx", "tar", "000.gz", "000.tar.gz.part", "x.zst"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++)
        assert_false(sl_tar_name(others[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(csv_quoting),
        cmocka_unit_test(csv_scan_follows_the_split),
        cmocka_unit_test(csv_header_names_are_made_distinct),
        cmocka_unit_test(lexical_paths),
        cmocka_unit_test(input_names_from_the_common_folder),
        cmocka_unit_test(brace_expansion),
        cmocka_unit_test(brace_expansion_is_bounded),
        cmocka_unit_test(brace_expansion_costs_its_names),
        cmocka_unit_test(wds_keys),       cmocka_unit_test(url_schemes),
        cmocka_unit_test(glob_filters),   cmocka_unit_test(columns_types_and_names),
        cmocka_unit_test(hive_partition_folders),
        cmocka_unit_test(nested_columns_take_shapes),
        cmocka_unit_test(stage_columns_take_their_declared_types),
        cmocka_unit_test(compression_suffixes_and_tar_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
