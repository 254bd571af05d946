/* Unit tests: io/source.c and source_wds.c — WebDataset key grouping on a tar
 * written with libarchive, manifest rows (CSV records over several lines,
 * relative paths, ids), folder globs, and counts that match the items. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>

#include "io/source.h"
#include "test_util.h"

static void tar_add(struct archive *a, const char *name, const char *data)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)strlen(data));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
    assert_int_equal(archive_write_data(a, data, strlen(data)), (la_ssize_t)strlen(data));
    archive_entry_free(e);
}

/* Reads every item of one input; returns how many, copying ids/errors. */
static size_t read_all(const char *input, const sl_source_params *p, sl_source_item *items,
                       size_t max)
{
    sl_source *src;
    assert_int_equal(sl_source_open(&input, 1, p, &src), SL_OK);
    size_t n = 0;
    for (;;) {
        sl_source_item it = {0};
        bool done;
        assert_int_equal(sl_source_next(src, &it, &done), SL_OK);
        if (done)
            break;
        assert_true(n < max);
        items[n++] = it;
    }
    sl_source_free(src);
    atomic_bool stop = false;
    assert_int_equal(sl_source_count(&input, 1, p, &stop), (int64_t)n);
    return n;
}

static void webdataset_groups_members_by_key(void **state)
{
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/s.tar", dir);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    tar_add(a, "x/a.jpg", "JPEGA");
    tar_add(a, "x/a.json", "{\"w\": 3, \"s\": \"v\"}");
    tar_add(a, "x/a.txt", "alt a");
    tar_add(a, "x/a.seg.png", "SECOND IMAGE");
    tar_add(a, "x/b.png", "PNGB");
    tar_add(a, "x/b.cls", "12\n");
    tar_add(a, "c.json", "{}");
    tar_add(a, "x/a.webp", "AGAIN");
    archive_write_close(a);
    archive_write_free(a);

    sl_source_params p = sl_source_default_params();
    sl_source_item it[8];
    size_t n = read_all(path, &p, it, 8);
    assert_int_equal(n, 4);
    assert_string_equal(it[0].id, "s.tar/x/a");
    assert_int_equal(it[0].len, 5);
    assert_memory_equal(it[0].data, "JPEGA", 5); /* the first image of a sample */
    assert_null(it[0].path);
    assert_null(it[0].error);
    assert_int_equal(json_integer_value(json_object_get(it[0].extra, "w")), 3);
    assert_string_equal(json_string_value(json_object_get(it[0].extra, "txt")), "alt a");
    assert_string_equal(it[1].id, "s.tar/x/b");
    assert_int_equal(json_integer_value(json_object_get(it[1].extra, "cls")), 12);
    assert_string_equal(it[2].id, "s.tar/c");
    assert_non_null(strstr(it[2].error, "has no image"));
    /* A key that comes back later is a new sample: samples are runs of members. */
    assert_string_equal(it[3].id, "s.tar/x/a");
    assert_memory_equal(it[3].data, "AGAIN", 5);
    for (size_t i = 0; i < n; i++)
        sl_source_item_clear(&it[i]);
}

static void manifest_rows(void **state)
{
    char *dir = tu_tmpdir();
    const char csv[] = "id,path,prompt,note\r\n"
                       "r1,img/a.jpg,,\"multi\nline, note\"\r\n"
                       ",/abs/b.jpg,Say hi,n2\r\n"
                       "\r\n"
                       "r3,https://example.com/c.jpg,,\"x\"\r\n";
    tu_write(dir, "m/list.csv", csv, sizeof csv - 1);
    char path[512];
    snprintf(path, sizeof path, "%s/m/list.csv", dir);
    sl_source_params p = sl_source_default_params();
    sl_source_item it[8];
    size_t n = read_all(path, &p, it, 8);
    assert_int_equal(n, 3);
    char want[600];
    snprintf(want, sizeof want, "%s/m/img/a.jpg", dir);
    assert_string_equal(it[0].id, "r1");
    assert_string_equal(it[0].path, want);
    assert_string_equal(json_string_value(json_object_get(it[0].extra, "note")), "multi\nline, note");
    assert_null(json_object_get(it[0].extra, "id"));
    assert_null(json_object_get(it[0].extra, "path"));
    assert_null(it[0].prompt);
    assert_string_equal(it[1].id, "list.csv:4"); /* no id: FILE:LINE, after a 2-line record */
    assert_string_equal(it[1].path, "/abs/b.jpg");
    assert_string_equal(it[1].prompt, "Say hi");
    assert_string_equal(it[2].path, "https://example.com/c.jpg");
    for (size_t i = 0; i < n; i++)
        sl_source_item_clear(&it[i]);
}

static void folder_globs(void **state)
{
    char *dir = tu_tmpdir();
    const char *files[] = {"a.jpg", "b.png", "sub/c.jpg", "sub/skip-d.jpg", "e.txt"};
    for (size_t i = 0; i < 5; i++)
        tu_write(dir, files[i], "x", 1);
    sl_source_params p = sl_source_default_params();
    const char *inc[] = {"*.jpg"}, *exc[] = {"*skip-*"};
    p.include = inc;
    p.n_include = 1;
    p.exclude = exc;
    p.n_exclude = 1;
    sl_source_item it[8];
    size_t n = read_all(dir, &p, it, 8);
    assert_int_equal(n, 2);
    assert_string_equal(it[0].id, "a.jpg");
    assert_string_equal(it[1].id, "sub/c.jpg");
    for (size_t i = 0; i < n; i++)
        sl_source_item_clear(&it[i]);
}

static void open_errors_name_the_input(void **state)
{
    sl_source_params p = sl_source_default_params();
    sl_source *src;
    const char *missing = "/nonexistent/x.jsonl";
    assert_int_equal(sl_source_open(&missing, 1, &p, &src), SL_ERR_NOT_FOUND);
    assert_non_null(strstr(sl_last_error(), missing));
    const char *unbalanced = "/tmp/d-{000..3.tar";
    assert_int_equal(sl_source_open(&unbalanced, 1, &p, &src), SL_ERR_INVALID_ARG);
    p.format = "zip";
    const char *tmp = "/tmp";
    assert_int_equal(sl_source_open(&tmp, 1, &p, &src), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "--input-format"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webdataset_groups_members_by_key),
        cmocka_unit_test(manifest_rows),
        cmocka_unit_test(folder_globs),
        cmocka_unit_test(open_errors_name_the_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
