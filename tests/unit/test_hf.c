/* Unit tests: io/hf.c's pure parts — an hf://datasets/ reference, a tree
 * page of the hub's listing (unsafe names dropped, the bound on files), a
 * Link header's next page, the choice of files, and which URLs get the
 * token. The requests themselves: tests/e2e/test_hf_datasets.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "io/hf.h"

static void references_parse(void **state)
{
    (void)state;
    hf_spec s;
    assert_int_equal(hf_spec_parse("hf://datasets/org/name", &s), SL_OK);
    assert_string_equal(s.org, "org");
    assert_string_equal(s.name, "name");
    assert_string_equal(s.revision, "main");
    assert_string_equal(s.pattern, "");
    assert_int_equal(hf_spec_parse("hf://datasets/org/name@v1.0/data/train-*.parquet", &s), SL_OK);
    assert_string_equal(s.name, "name");
    assert_string_equal(s.revision, "v1.0");
    assert_string_equal(s.pattern, "data/train-*.parquet");
    /* HfFileSystem writes a '/' of a revision as %2F. */
    assert_int_equal(hf_spec_parse("hf://datasets/o/n@refs%2Fconvert%2Fparquet/default/", &s),
                     SL_OK);
    assert_string_equal(s.revision, "refs/convert/parquet");
    assert_string_equal(s.pattern, "default");
    assert_int_equal(hf_spec_parse("hf://datasets/o/n/", &s), SL_OK);
    assert_string_equal(s.pattern, "");

    const char *bad[] = {
        "hf://datasets/org",            /* no name */
        "hf://datasets//name",          /* empty org */
        "hf://datasets/../name",        /* climbing */
        "hf://datasets/org/..",
        "hf://datasets/org/name@",      /* empty revision */
        "hf://datasets/org/name@..",
        "hf://datasets/org/name@a%2F..%2Fb",
        "hf://datasets/org/name@%zz",   /* malformed escape */
        "hf://datasets/org/name@%2",
        "hf://datasets/org/name@a%0Ab", /* a control character */
        "hf://datasets/org/name@main%00x", /* a NUL: it was read as "main" */
        "hf://datasets/org/name/../x",
        "hf://datasets/org/name/a//b",
        "hf://datasets/org/name/a/./b",
        "hf://datasets/org/name/a\\b",
        "hf://datasets/org/name/a\tb",
        "hf://models/org/name",
        "hf://org/name",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (hf_spec_parse(bad[i], &s) != SL_ERR_INVALID_ARG)
            fail_msg("'%s' was accepted", bad[i]);
        assert_non_null(strstr(sl_last_error(), bad[i]));
    }
    assert_true(hf_is_dataset_ref("hf://datasets/o/n"));
    assert_false(hf_is_dataset_ref("hf://o/n"));
    assert_false(hf_is_dataset_ref(NULL));
}

static bool has(const hf_listing *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->files[i].path, path) == 0)
            return true;
    return false;
}

static void tree_pages_parse(void **state)
{
    (void)state;
    const char *page =
        "[{\"type\":\"directory\",\"oid\":\"x\",\"size\":0,\"path\":\"data\"},"
        "{\"type\":\"file\",\"oid\":\"y\",\"size\":1000,\"path\":\"data/a.parquet\","
        "\"lfs\":{\"oid\":\"z\",\"size\":1000,\"pointerSize\":130}},"
        "{\"type\":\"file\",\"size\":24,\"path\":\"README.md\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"../escape.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"/abs.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"a//b.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"a\\\\b.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"a\\nb.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"nul\\u0000.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":7},"
        "{\"type\":\"file\",\"size\":-3,\"path\":\"neg.tar\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"a/./b.parquet\"},"
        "{\"type\":\"file\",\"size\":5,\"path\":\"del\\u007f.parquet\"},"
        "\"junk\",null]";
    hf_listing l = {0};
    char why[256];
    assert_true(hf_tree_parse(page, strlen(page), &l, why, sizeof why));
    assert_int_equal(l.n, 3);
    assert_true(has(&l, "data/a.parquet") && has(&l, "README.md") && has(&l, "neg.tar"));
    /* Names a URL quotes are files like any other. */
    hf_listing q = {0};
    const char *odd = "[{\"type\":\"file\",\"size\":1,\"path\":\"data/train 00.parquet\"},"
                      "{\"type\":\"file\",\"size\":1,\"path\":\"50%/a#b?.tar\"}]";
    assert_true(hf_tree_parse(odd, strlen(odd), &q, why, sizeof why));
    assert_int_equal(q.n, 2);
    assert_true(has(&q, "data/train 00.parquet") && has(&q, "50%/a#b?.tar"));
    hf_listing_clear(&q);
    assert_int_equal(l.bytes, 1024);
    /* A second page adds to the first. */
    const char *more = "[{\"type\":\"file\",\"size\":1,\"path\":\"data/b.parquet\"}]";
    assert_true(hf_tree_parse(more, strlen(more), &l, why, sizeof why));
    assert_int_equal(l.n, 4);
    /* Sizes that add up past 2^64 stay at the most, not wrapped to ~0. */
    const char *huge = "[{\"type\":\"file\",\"size\":9223372036854775807,\"path\":\"h1.tar\"},"
                       "{\"type\":\"file\",\"size\":9223372036854775807,\"path\":\"h2.tar\"},"
                       "{\"type\":\"file\",\"size\":9223372036854775807,\"path\":\"h3.tar\"}]";
    hf_listing h = {0};
    assert_true(hf_tree_parse(huge, strlen(huge), &h, why, sizeof why));
    assert_true(h.bytes == UINT64_MAX);
    hf_listing_clear(&h);
    assert_false(hf_tree_parse("{\"error\":\"x\"}", 13, &l, why, sizeof why));
    assert_non_null(strstr(why, "array"));
    assert_false(hf_tree_parse("<html>", 6, &l, why, sizeof why));
    assert_false(hf_tree_parse(NULL, 0, &l, why, sizeof why));
    assert_int_equal(l.n, 4);
    hf_listing_clear(&l);
    assert_int_equal(l.n, 0);
}

static void listings_are_bounded(void **state)
{
    (void)state;
    /* A page that would take the listing past HF_MAX_FILES: refused whole. */
    size_t n = HF_MAX_FILES + 1;
    sl_buf b = {0};
    assert_true(sl_buf_append(&b, "[", 1));
    for (size_t i = 0; i < n; i++) {
        char e[96];
        int k = snprintf(e, sizeof e, "%s{\"type\":\"file\",\"path\":\"f%zu.tar\"}", i ? "," : "", i);
        assert_true(sl_buf_append(&b, e, (size_t)k));
    }
    assert_true(sl_buf_append(&b, "]", 1));
    hf_listing l = {0};
    char why[256];
    assert_false(hf_tree_parse((const char *)b.data, b.len, &l, why, sizeof why));
    assert_non_null(strstr(why, "pattern"));
    assert_int_equal(l.n, 0);
    /* Exactly HF_MAX_FILES is fine (the last entry dropped). */
    b.len -= strlen(",{\"type\":\"file\",\"path\":\"f100000.tar\"}]");
    assert_true(sl_buf_append(&b, "]", 1));
    assert_true(hf_tree_parse((const char *)b.data, b.len, &l, why, sizeof why));
    assert_int_equal(l.n, HF_MAX_FILES);
    const char *one = "[{\"type\":\"file\",\"path\":\"one-more.tar\"}]";
    assert_false(hf_tree_parse(one, strlen(one), &l, why, sizeof why));
    assert_int_equal(l.n, HF_MAX_FILES);
    hf_listing_clear(&l);
    sl_buf_free(&b);
}

static void link_headers(void **state)
{
    (void)state;
    char out[256];
    assert_true(hf_link_next(" <https://hub/api/x?cursor=abc&recursive=true>; rel=\"next\"", out,
                             sizeof out));
    assert_string_equal(out, "https://hub/api/x?cursor=abc&recursive=true");
    assert_true(hf_link_next("<https://h/prev>; rel=\"prev\", <https://h/n>; rel=\"next\"", out,
                             sizeof out));
    assert_string_equal(out, "https://h/n");
    assert_true(hf_link_next("<https://h/n>; REL=next", out, sizeof out));
    assert_string_equal(out, "https://h/n");
    assert_true(hf_link_next("<https://h/n>; rel=\"next last\"", out, sizeof out));
    assert_string_equal(out, "https://h/n");
    const char *no_next[] = {"<https://h/p>; rel=\"prev\"", "<https://h/p>; rel=\"nextish\"",
                             "https://h/n; rel=next", "<https://h/n", "<>; rel=next", ""};
    for (size_t i = 0; i < sizeof no_next / sizeof *no_next; i++)
        if (hf_link_next(no_next[i], out, sizeof out))
            fail_msg("a next page in '%s': '%s'", no_next[i], out);
    assert_false(hf_link_next("<https://a-url-longer-than-the-room/x>; rel=next", out, 10));
    assert_false(hf_link_next("", out, sizeof out));
}

static void fill(hf_listing *l, const char *const *paths, size_t n)
{
    hf_listing_clear(l);
    for (size_t i = 0; i < n; i++) {
        char e[512];
        snprintf(e, sizeof e, "[{\"type\":\"file\",\"size\":1,\"path\":\"%s\"}]", paths[i]);
        char why[64];
        assert_true(hf_tree_parse(e, strlen(e), l, why, sizeof why));
    }
}

static void choosing_files(void **state)
{
    (void)state;
    const char *repo[] = {"README.md", "data/train-00001-of-00002.parquet",
                          "data/train-00000-of-00002.parquet", "data/test-00000.parquet",
                          "data/sub/deep.parquet", "top.parquet", "old/a.tar", "old/b.tar",
                          "shards/x.TAR"};
    size_t n = sizeof repo / sizeof *repo;
    /* Each pattern: how many files it keeps, the first (sorted), one it must not keep. */
    const struct {
        const char *pattern;
        size_t n;
        const char *first, *not_kept;
    } cases[] = {
        /* No pattern: every .parquet, sorted. */
        {"", 5, "data/sub/deep.parquet", "old/a.tar"},
        /* A glob: '*' stays within its folder. */
        {"data/train-*.parquet", 2, "data/train-00000-of-00002.parquet", "data/test-00000.parquet"},
        {"data/*.parquet", 3, "data/test-00000.parquet", "data/sub/deep.parquet"},
        {"*.parquet", 1, "top.parquet", "data/test-00000.parquet"},
        {"*/*.md", 0, NULL, NULL},
        /* "**": any number of whole folders, none included. */
        {"**/*.parquet", 5, "data/sub/deep.parquet", "old/a.tar"},
        {"data/**/*.parquet", 4, "data/sub/deep.parquet", "top.parquet"},
        {"data/**", 4, "data/sub/deep.parquet", "top.parquet"},
        {"**/deep.parquet", 1, "data/sub/deep.parquet", NULL},
        {"**/*.tar", 2, "old/a.tar", "shards/x.TAR"},
        {"d**/*.parquet", 3, "data/test-00000.parquet", "data/sub/deep.parquet"},
        /* several "**": each any number of folders, none included */
        {"**/**/deep.parquet", 1, "data/sub/deep.parquet", NULL},
        {"**/sub/**/*.parquet", 1, "data/sub/deep.parquet", "top.parquet"},
        {"data/**/**", 4, "data/sub/deep.parquet", "top.parquet"},
        {"**/data/**/test-*", 1, "data/test-00000.parquet", "data/sub/deep.parquet"},
        /* A folder: the default rule inside it; its tar shards when it has no Parquet. */
        {"old", 2, "old/a.tar", "shards/x.TAR"},
        {"data", 4, "data/sub/deep.parquet", "top.parquet"},
        /* "dat" is no folder: a prefix of a name does not count. */
        {"dat", 0, NULL, NULL},
        /* A file named: that file, whatever its kind. */
        {"README.md", 1, "README.md", "top.parquet"},
    };
    hf_listing l = {0};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        fill(&l, repo, n);
        size_t kept = hf_select(&l, cases[c].pattern);
        if (kept != cases[c].n || l.n != kept)
            fail_msg("'%s' kept %zu, not %zu", cases[c].pattern, kept, cases[c].n);
        if (cases[c].first)
            assert_string_equal(l.files[0].path, cases[c].first);
        if (cases[c].not_kept)
            assert_false(has(&l, cases[c].not_kept));
        for (size_t i = 1; i < l.n; i++)
            assert_true(strcmp(l.files[i - 1].path, l.files[i].path) < 0);
    }
    fill(&l, repo, n);
    hf_select(&l, "");
    assert_int_equal(l.bytes, 5);
    /* No Parquet anywhere: the tar shards (any case of .tar), compressed too. */
    const char *tars[] = {"b.tar", "a.tar", "notes.txt", "c.TAR", "d.tar.gz", "e.tar.zst", "f.tgz", "g.gz"};
    fill(&l, tars, 8);
    assert_int_equal(hf_select(&l, ""), 6);
    assert_string_equal(l.files[0].path, "a.tar");
    assert_true(has(&l, "e.tar.zst") && has(&l, "f.tgz") && !has(&l, "g.gz") && !has(&l, "notes.txt"));
    /* No Parquet but Arrow files (save_to_disk's folder uploaded): those, not the tars. */
    const char *saved[] = {"train/state.json", "train/data-00001-of-00002.arrow", "train/data-00000-of-00002.arrow",
                           "train/dataset_info.json", "old.tar", "x.arrow.bak"};
    fill(&l, saved, 6);
    assert_int_equal(hf_select(&l, ""), 2);
    assert_string_equal(l.files[0].path, "train/data-00000-of-00002.arrow");
    assert_false(has(&l, "old.tar") || has(&l, "x.arrow.bak"));
    /* ... and Parquet beside them wins. */
    const char *both[] = {"a.arrow", "b.parquet"};
    fill(&l, both, 2);
    assert_int_equal(hf_select(&l, ""), 1);
    assert_string_equal(l.files[0].path, "b.parquet");
    hf_listing_clear(&l);
}

/* Five "**" against a file 100 folders down: trying every split of the
 * path between them took seconds (12 against 200 folders never ended). */
static void many_doublestars_match_in_little_time(void **state)
{
    (void)state;
    char pattern[64] = "", path[HF_MAX_PATH] = "";
    for (int i = 0; i < 5; i++)
        strcat(pattern, "**/");
    strcat(pattern, "y.parquet");
    for (int i = 0; i < 100; i++)
        strcat(path, "a/");
    strcat(path, "x.parquet");
    const char *repo[] = {path};
    hf_listing l = {0};
    fill(&l, repo, 1);
    clock_t start = clock();
    assert_int_equal(hf_select(&l, pattern), 0);
    double seconds = (double)(clock() - start) / CLOCKS_PER_SEC;
    if (seconds > 0.5)
        fail_msg("a 5-\"**\" pattern took %.1f s against one path", seconds);
    path[strlen(path) - strlen("x.parquet")] = 'y'; /* a/.../y.parquet: now it matches */
    fill(&l, repo, 1);
    assert_int_equal(hf_select(&l, pattern), 1);
    hf_listing_clear(&l);
}

static void the_token_goes_to_the_hub_only(void **state)
{
    (void)state;
    char t[128];
    setenv("HF_TOKEN", "hf_abc", 1);
    unsetenv("HF_ENDPOINT");
    assert_true(hf_bearer("https://huggingface.co/datasets/o/n/resolve/x/a.parquet", t, sizeof t));
    assert_string_equal(t, "hf_abc");
    assert_true(hf_bearer("https://HuggingFace.co/api/x", t, sizeof t));
    /* Another host, port or scheme, and look-alikes of the hub's name. */
    const char *elsewhere[] = {"https://huggingface.co.evil.example/x",
                               "https://huggingface.co@evil.example/x",
                               "https://huggingface.co:444/x", "http://huggingface.co/x",
                               "https://cdn-lfs.huggingface.co/x"};
    for (size_t i = 0; i < sizeof elsewhere / sizeof *elsewhere; i++)
        if (hf_bearer(elsewhere[i], t, sizeof t))
            fail_msg("the token would go to '%s'", elsewhere[i]);
    setenv("HF_ENDPOINT", "http://127.0.0.1:8080/", 1);
    assert_true(hf_bearer("http://127.0.0.1:8080/api/datasets/o/n", t, sizeof t));
    assert_false(hf_bearer("http://127.0.0.1:80801/api", t, sizeof t));
    assert_false(hf_bearer("http://localhost:8080/lfs/x", t, sizeof t));
    assert_false(hf_bearer("https://huggingface.co/x", t, sizeof t));
    assert_false(hf_bearer("http://127.0.0.1:8080/x", t, 4)); /* no room */
    unsetenv("HF_TOKEN");
    assert_false(hf_bearer("http://127.0.0.1:8080/x", t, sizeof t));
    unsetenv("HF_ENDPOINT");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(references_parse),
        cmocka_unit_test(tree_pages_parse),
        cmocka_unit_test(listings_are_bounded),
        cmocka_unit_test(link_headers),
        cmocka_unit_test(choosing_files),
        cmocka_unit_test(many_doublestars_match_in_little_time),
        cmocka_unit_test(the_token_goes_to_the_hub_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
