/* Unit tests: io/source.c and source_wds.c — WebDataset key grouping on a tar
 * written with libarchive, manifest rows (CSV records over several lines,
 * relative paths, ids, a byte order mark, an empty image cell), folder globs, counts that match the items, ids from
 * the inputs' common folder, one file read twice refused, and manifest lines
 * past their limits failing alone, and a tar, a manifest, a Parquet or an
 * Arrow file whose read fails midway ending a run that shares its items out,
 * and image bytes the input holds named where they are, out of memory too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/alloc.h"
#include "core/fault.h"
#include "io/source_impl.h"
#include "test_util.h"

static void tar_write(const char *path, const char *const *names, size_t n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_size(e, 4);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        assert_int_equal(archive_write_data(a, "JPEG", 4), 4);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

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

/* Reads every item of inputs[0..n_in); returns how many, copying the items;
 * with `origins`, each item's sl_source_origin() (the caller frees). */
static size_t read_many(const char *const *inputs, size_t n_in, const sl_source_params *p,
                        sl_source_item *items, size_t max, char **origins)
{
    sl_source *src;
    assert_int_equal(sl_source_open(inputs, n_in, p, &src), SL_OK);
    /* Made before the source is read, run after it is freed (as the job's
     * counting thread may). */
    sl_source_counter *counter;
    assert_int_equal(sl_source_counter_new(src, &counter), SL_OK);
    size_t n = 0;
    for (;;) {
        sl_source_item it = {0};
        bool done;
        assert_int_equal(sl_source_next(src, &it, &done), SL_OK);
        if (done)
            break;
        assert_true(n < max);
        if (origins)
            origins[n] = sl_source_origin(src, it.input, it.at);
        items[n++] = it;
    }
    sl_source_free(src);
    atomic_bool stop = false;
    assert_int_equal(sl_source_counter_run(counter, &stop), (int64_t)n);
    assert_int_equal(sl_source_counter_run(counter, &stop), -1); /* once */
    sl_source_counter_free(counter);
    return n;
}

static size_t read_all(const char *input, const sl_source_params *p, sl_source_item *items,
                       size_t max)
{
    return read_many(&input, 1, p, items, max, NULL);
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
    tar_add(a, "g.json", "{}");
    tar_add(a, "g.gif", "GIF89a"); /* an image as a folder's (sluice writes .gif members) */
    archive_write_close(a);
    archive_write_free(a);

    sl_source_params p = sl_source_default_params();
    sl_source_item it[8];
    size_t n = read_all(path, &p, it, 8);
    assert_int_equal(n, 5);
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
    assert_string_equal(it[4].id, "s.tar/g");
    assert_null(it[4].error);
    assert_memory_equal(it[4].data, "GIF89a", 6);
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

/* A UTF-8 byte order mark opening a manifest is not text: the first CSV
 * column is still 'image', the first JSONL or batch line still JSON (as a
 * .json array's); one anywhere else is the line's (line 2 fails). A CSV
 * field's line ends inside quotes keep their bytes, CRLF or LF. */
static void manifest_text_after_a_byte_order_mark(void **state)
{
    char *dir = tu_tmpdir();
    const char csv[] = "\xef\xbb\xbfimage,note\r\n"
                       "a.jpg,\"crlf\r\nthen lf\nend\"\r\n";
    const char jsonl[] = "\xef\xbb\xbf{\"image\": \"a.jpg\"}\n\xef\xbb\xbf{\"image\": \"b.jpg\"}\n";
    const char json[] = "\xef\xbb\xbf [{\"image\": \"a.jpg\"}]";
    const char batch[] = "\xef\xbb\xbf{\"custom_id\": \"r1\", \"method\": \"POST\", "
                         "\"url\": \"/v1/chat/completions\", \"body\": {\"messages\": "
                         "[{\"role\": \"user\", \"content\": \"hi\"}]}}\n";
    tu_write(dir, "m.csv", csv, sizeof csv - 1);
    tu_write(dir, "m.jsonl", jsonl, sizeof jsonl - 1);
    tu_write(dir, "m.json", json, sizeof json - 1);
    tu_write(dir, "b.jsonl", batch, sizeof batch - 1);
    tu_write(dir, "only.jsonl", "\xef\xbb\xbf", 3);
    char path[512];
    sl_source_params p = sl_source_default_params();
    sl_source_item it[4];

    snprintf(path, sizeof path, "%s/m.csv", dir);
    assert_int_equal(read_all(path, &p, it, 4), 1);
    assert_null(it[0].error);
    assert_non_null(strstr(it[0].path, "/a.jpg"));
    assert_string_equal(json_string_value(json_object_get(it[0].extra, "note")),
                        "crlf\r\nthen lf\nend");
    sl_source_item_clear(&it[0]);

    snprintf(path, sizeof path, "%s/m.jsonl", dir);
    assert_int_equal(read_all(path, &p, it, 4), 2);
    assert_null(it[0].error);
    assert_non_null(strstr(it[1].error, "m.jsonl:2: invalid JSON"));
    sl_source_item_clear(&it[0]);
    sl_source_item_clear(&it[1]);

    snprintf(path, sizeof path, "%s/m.json", dir);
    assert_int_equal(read_all(path, &p, it, 4), 1);
    assert_null(it[0].error);
    sl_source_item_clear(&it[0]);

    snprintf(path, sizeof path, "%s/only.jsonl", dir);
    assert_int_equal(read_all(path, &p, it, 4), 0);

    p.format = "openai-batch";
    snprintf(path, sizeof path, "%s/b.jsonl", dir);
    assert_int_equal(read_all(path, &p, it, 4), 1);
    assert_null(it[0].error);
    assert_string_equal(it[0].id, "r1");
    sl_source_item_clear(&it[0]);
    tu_rmtree(dir);
}

/* An empty image cell fails its row naming the file, line and column, as
 * the manifest's other read errors do. */
static void an_empty_image_cell_names_its_place(void **state)
{
    char *dir = tu_tmpdir();
    const char csv[] = "id,url,note\nr1,,x\n";
    const char jsonl[] = "{\"image\": \"a.jpg\"}\n{\"image\": \"\"}\n"
                         "{\"images\": [\"a.jpg\", \"\"]}\n";
    tu_write(dir, "m.csv", csv, sizeof csv - 1);
    tu_write(dir, "m.jsonl", jsonl, sizeof jsonl - 1);
    char path[512], want[600];
    sl_source_params p = sl_source_default_params();
    sl_source_item it[4];

    snprintf(path, sizeof path, "%s/m.csv", dir);
    assert_int_equal(read_all(path, &p, it, 4), 1);
    snprintf(want, sizeof want, "%s:2: column 'url' is empty: no image path or URL", path);
    assert_string_equal(it[0].error, want);
    sl_source_item_clear(&it[0]);

    snprintf(path, sizeof path, "%s/m.jsonl", dir);
    assert_int_equal(read_all(path, &p, it, 4), 3);
    assert_null(it[0].error);
    snprintf(want, sizeof want, "%s:2: column 'image' is empty: no image path or URL", path);
    assert_string_equal(it[1].error, want);
    snprintf(want, sizeof want, "%s:3: column 'images': image 2 of 2: an empty string, no image "
             "path or URL", path);
    assert_string_equal(it[2].error, want);
    for (size_t i = 0; i < 3; i++)
        sl_source_item_clear(&it[i]);
    tu_rmtree(dir);
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

/* Defect: ids were FILE:ROW / SHARD/KEY / FILE:LINE with FILE the base name,
 * so en/0000.x and fr/0000.x gave the same ids and a resume skipped the
 * second file's rows as done. */
static void ids_name_the_folders_that_tell_inputs_apart(void **state)
{
    char *dir = tu_tmpdir();
    char en[512], fr[512], en2[512];
    snprintf(en, sizeof en, "%s/data/en/s.tar", dir);
    snprintf(fr, sizeof fr, "%s/data/fr/s.tar", dir);
    snprintf(en2, sizeof en2, "%s/data/en/t.tar", dir);
    tu_write(dir, "data/en/s.tar", "", 0);
    tu_write(dir, "data/fr/s.tar", "", 0);
    tar_write(en, (const char *[]){"k1.jpg"}, 1);
    tar_write(fr, (const char *[]){"k1.jpg"}, 1);
    tar_write(en2, (const char *[]){"k2.jpg"}, 1);
    sl_source_params p = sl_source_default_params();
    sl_source_item it[8];
    char *origin[8];
    size_t n = read_many((const char *[]){en, fr}, 2, &p, it, 8, origin);
    assert_int_equal(n, 2);
    assert_string_equal(it[0].id, "en/s.tar/k1");
    assert_string_equal(it[1].id, "fr/s.tar/k1");
    char want[600];
    snprintf(want, sizeof want, "%s at byte 0", fr);
    assert_string_equal(origin[1], want);
    for (size_t i = 0; i < n; i++) {
        sl_source_item_clear(&it[i]);
        sl_free(origin[i]);
    }
    /* Files side by side keep their base names (a single input too). */
    n = read_many((const char *[]){en, en2}, 2, &p, it, 8, NULL);
    assert_string_equal(it[0].id, "s.tar/k1");
    assert_string_equal(it[1].id, "t.tar/k2");
    sl_source *src;
    assert_int_equal(sl_source_open((const char *[]){en, en2}, 2, &p, &src), SL_OK);
    assert_false(sl_source_ids_have_folders(src));
    sl_source_free(src);
    assert_int_equal(sl_source_open((const char *[]){en, fr}, 2, &p, &src), SL_OK);
    assert_true(sl_source_ids_have_folders(src));
    sl_source_free(src);
    for (size_t i = 0; i < n; i++)
        sl_source_item_clear(&it[i]);

    /* Manifests' FILE:LINE ids; a relative input is named from the working folder. */
    const char *line = "{\"image\": \"x.jpg\"}\n";
    tu_write(dir, "m/a/list.jsonl", line, strlen(line));
    tu_write(dir, "m/b/list.jsonl", "\n{\"image\": \"x.jpg\"}\n", strlen(line) + 1);
    char cwd[512], a[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(a, sizeof a, "%s/m/a/list.jsonl", dir);
    assert_int_equal(chdir(dir), 0);
    n = read_many((const char *[]){a, "m/b/../b/list.jsonl"}, 2, &p, it, 8, origin);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(n, 2);
    assert_string_equal(it[0].id, "a/list.jsonl:1");
    assert_string_equal(it[1].id, "b/list.jsonl:2");
    assert_string_equal(origin[1], "m/b/../b/list.jsonl:2");
    for (size_t i = 0; i < n; i++) {
        sl_source_item_clear(&it[i]);
        sl_free(origin[i]);
    }

    /* Folders: one keeps ids relative to itself; several, from their common folder. */
    tu_write(dir, "f/2023/x.jpg", "x", 1);
    tu_write(dir, "f/2024/x.jpg", "x", 1);
    char f23[512], f24[512];
    snprintf(f23, sizeof f23, "%s/f/2023", dir);
    snprintf(f24, sizeof f24, "%s/f/2024/", dir);
    n = read_many((const char *[]){f23}, 1, &p, it, 8, NULL);
    assert_string_equal(it[0].id, "x.jpg");
    sl_source_item_clear(&it[0]);
    n = read_many((const char *[]){f23, f24}, 2, &p, it, 8, origin);
    assert_int_equal(n, 2);
    assert_string_equal(it[0].id, "2023/x.jpg");
    assert_string_equal(it[1].id, "2024/x.jpg");
    assert_string_equal(origin[0], f23);
    for (size_t i = 0; i < n; i++) {
        sl_source_item_clear(&it[i]);
        sl_free(origin[i]);
    }
    tu_rmtree(dir);
}

/* sl_source_open refuses inputs, naming both. */
static void refused(const char *const *inputs, size_t n, const char *a, const char *b)
{
    sl_source_params p = sl_source_default_params();
    sl_source *src = NULL;
    assert_int_equal(sl_source_open(inputs, n, &p, &src), SL_ERR_INVALID_ARG);
    assert_null(src);
    const char *msg = sl_last_error();
    if (!strstr(msg, a) || !strstr(msg, b))
        fail_msg("'%s' does not name '%s' and '%s'", msg, a, b);
}

/* A dataset folder's Hive partitions are the columns of each file's own
 * rows: a file under fewer partition folders (or none) must not keep the
 * ones of the file read before it, and a column of the file's own keeps
 * its value. Then the same read with every allocation in turn failing:
 * an error, never a leak or a crash (ASan's build checks both). */
static void hive_partitions_are_each_files_own(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    const char a[] = "{\"path\": \"a.jpg\"}\n{\"path\": \"b.jpg\", \"lang\": \"own\"}\n";
    const char b[] = "{\"path\": \"c.jpg\"}\n";
    const char top[] = "{\"path\": \"d.jpg\"}\n";
    tu_write(dir, "ds.jsonl/lang=en/city=S%C3%A3o/a.jsonl", a, sizeof a - 1);
    tu_write(dir, "ds.jsonl/lang=fr/b.jsonl", b, sizeof b - 1);
    tu_write(dir, "ds.jsonl/top.jsonl", top, sizeof top - 1);
    char path[512];
    snprintf(path, sizeof path, "%s/ds.jsonl", dir);
    sl_source_params p = sl_source_default_params();
    sl_source_item it[8];
    size_t n = read_all(path, &p, it, 8);
    assert_int_equal(n, 4);
    /* (file order: a folder's walk, byte-wise sorted, depth first) */
    static const char *const want[4][2] = {
        {"en", "S\xc3\xa3o"}, {"own", "S\xc3\xa3o"}, {"fr", NULL}, {NULL, NULL}};
    for (size_t i = 0; i < n; i++) {
        const char *lang = json_string_value(json_object_get(it[i].extra, "lang"));
        const char *city = json_string_value(json_object_get(it[i].extra, "city"));
        if (want[i][0])
            assert_string_equal(lang, want[i][0]);
        else
            assert_null(json_object_get(it[i].extra, "lang"));
        if (want[i][1])
            assert_string_equal(city, want[i][1]);
        else
            assert_null(json_object_get(it[i].extra, "city"));
        sl_source_item_clear(&it[i]);
    }

    const char *inputs[] = {path};
    bool whole = false;
    for (long k = 0; !whole && k < 100000; k++) {
        sl_alloc_fail_after(k);
        sl_source *src = NULL;
        size_t got = 0, failed = 0;
        sl_status st = sl_source_open(inputs, 1, &p, &src);
        for (bool done = false; st == SL_OK && !done;) {
            sl_source_item item = {0};
            st = sl_source_next(src, &item, &done);
            got += st == SL_OK && !done;
            failed += item.error != NULL;
            sl_source_item_clear(&item);
        }
        sl_source_free(src);
        sl_alloc_fail_after(-1);
        whole = st == SL_OK && got == 4 && failed == 0;
    }
    assert_true(whole);
    tu_rmtree(dir);
}

static void one_file_read_twice_is_refused(void **state)
{
    char *dir = tu_tmpdir();
    char x[512], other[512], soft[512], hard[512], glob[512], spelled[512], sub[512], top[512],
        sublink[512];
    tu_write(dir, "x.jsonl", "", 0);
    tu_write(dir, "d/x.jsonl", "", 0);
    snprintf(x, sizeof x, "%s/x.jsonl", dir);
    snprintf(other, sizeof other, "%s/d/x.jsonl", dir);
    snprintf(soft, sizeof soft, "%s/link.jsonl", dir);
    snprintf(hard, sizeof hard, "%s/hard.jsonl", dir);
    tu_write(dir, "g/y.jsonl", "", 0);
    tu_write(dir, "g/z.jsonl", "", 0);
    snprintf(glob, sizeof glob, "%s/g/*.jsonl", dir);
    char y[512];
    snprintf(y, sizeof y, "%s/g/y.jsonl", dir);
    snprintf(spelled, sizeof spelled, "%s/d/../x.jsonl", dir);
    assert_int_equal(symlink(x, soft), 0);
    assert_int_equal(link(other, hard), 0);
    refused((const char *[]){x, x}, 2, x, "named twice");
    refused((const char *[]){x, spelled}, 2, x, spelled);
    refused((const char *[]){x, soft}, 2, x, soft);
    refused((const char *[]){other, hard}, 2, other, hard);
    refused((const char *[]){glob, other, y}, 3, y, "named twice");
    /* Distinct files with one name are fine: their ids differ (above). */
    sl_source_params p = sl_source_default_params();
    sl_source *src;
    assert_int_equal(sl_source_open((const char *[]){x, other}, 2, &p, &src), SL_OK);
    sl_source_free(src);

    /* A folder inside another input folder, directly or through a symlink. */
    tu_write(dir, "top/sub/a.jpg", "x", 1);
    tu_write(dir, "top-b/b.jpg", "x", 1); /* sorts between "top" and "top/sub" byte-wise */
    snprintf(top, sizeof top, "%s/top", dir);
    snprintf(sub, sizeof sub, "%s/top/sub", dir);
    snprintf(sublink, sizeof sublink, "%s/elsewhere", dir);
    assert_int_equal(symlink(sub, sublink), 0);
    char topb[512];
    snprintf(topb, sizeof topb, "%s/top-b", dir);
    refused((const char *[]){sub, topb, top}, 3, sub, top);
    refused((const char *[]){top, sublink}, 2, sublink, top);
    refused((const char *[]){top, top}, 2, top, "named twice");
    assert_int_equal(sl_source_open((const char *[]){topb, top}, 2, &p, &src), SL_OK);
    sl_source_free(src);
    tu_rmtree(dir);
}

/* Defect: a JSONL line was read whole, however long (getline). A line or
 * CSV record past the limit, or a row with too many columns, is one failed
 * row naming FILE:LINE and the limit; the next line reads as usual. */
static void manifest_lines_past_the_limit_fail_alone(void **state)
{
    char *dir = tu_tmpdir();
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char jsonl[1024];
    int len = snprintf(jsonl, sizeof jsonl,
                       "{\"image\": \"a.jpg\"}\r\n"
                       "{\"image\": \"%s\"}\n"
                       "{\"image\": \"b.jpg\", \"c1\": 1, \"c2\": 2, \"c3\": 3}\n"
                       "{\"image\": \"c.jpg\"}\n"
                       "%s", big, big);
    tu_write(dir, "m.jsonl", jsonl, (size_t)len);
    char path[512];
    snprintf(path, sizeof path, "%s/m.jsonl", dir);
    sl_source_params p = sl_source_default_params();
    p.max_line_bytes = 100;
    p.max_columns = 3;
    sl_source_item it[8];
    size_t n = read_all(path, &p, it, 8);
    assert_int_equal(n, 5);
    assert_null(it[0].error);
    assert_string_equal(it[1].id, "m.jsonl:2");
    char want[600];
    snprintf(want, sizeof want, "%s:2: the line is longer than the limit of 100 bytes", path);
    assert_string_equal(it[1].error, want);
    assert_non_null(strstr(it[2].error, "m.jsonl:3: 4 columns, more than the limit of 3"));
    assert_null(it[3].error);
    assert_string_equal(it[3].id, "m.jsonl:4");
    assert_non_null(strstr(it[4].error, "m.jsonl:5: the line is longer"));
    for (size_t i = 0; i < n; i++)
        sl_source_item_clear(&it[i]);

    /* CSV: a record over several lines is measured whole and skipped to its
     * real end (the quoted newlines are not records); too many columns. */
    char csv[2048];
    len = snprintf(csv, sizeof csv,
                   "image,note\r\n"
                   "a.jpg,\"short\r\nnote\"\r\n"
                   "b.jpg,\"%s\n%s\nstill, \"\"quoted\"\"\n\"\n"
                   "c.jpg,plain\n"
                   "d.jpg,x,y,z\n"
                   "e.jpg,\"%s\"\n"
                   "f.jpg,last\n", big, big, big);
    tu_write(dir, "m.csv", csv, (size_t)len);
    snprintf(path, sizeof path, "%s/m.csv", dir);
    n = read_all(path, &p, it, 8);
    assert_int_equal(n, 6);
    assert_null(it[0].error);
    assert_string_equal(json_string_value(json_object_get(it[0].extra, "note")), "short\r\nnote");
    assert_string_equal(it[1].id, "m.csv:4");
    assert_non_null(strstr(it[1].error, "m.csv:4: the record (lines 4-7) is longer than the "
                                        "limit of 100 bytes"));
    assert_string_equal(it[2].id, "m.csv:8");
    assert_null(it[2].error);
    assert_non_null(strstr(it[3].error, "m.csv:9: more than 3 fields"));
    assert_non_null(strstr(it[4].error, "m.csv:10: the record is longer than the limit"));
    assert_string_equal(it[5].id, "m.csv:11");
    assert_null(it[5].error);
    for (size_t i = 0; i < n; i++)
        sl_source_item_clear(&it[i]);
    /* A header past the limit fails the file, as an unreadable file does. */
    snprintf(csv, sizeof csv, "image,%s\na.jpg,x\n", big);
    tu_write(dir, "h.csv", csv, strlen(csv));
    snprintf(path, sizeof path, "%s/h.csv", dir);
    n = read_all(path, &p, it, 8);
    assert_int_equal(n, 1);
    assert_non_null(strstr(it[0].error, "longer than the limit"));
    sl_source_item_clear(&it[0]);
    tu_rmtree(dir);
}

/* Parquet rows whose image column is a list (tests/unit/gen_parquet_lists.py
 * wrote the files and what they hold): a list of image structs gives each
 * element's bytes, or its path beside the file when it has no bytes; a list
 * of strings gives paths and URLs; a null or empty list, a null element,
 * one with neither bytes nor path, a list past SL_SOURCE_MAX_IMAGES or an
 * image past max_item_bytes fails the row naming the file, row, column and
 * element; a list of strings beside it passes through as an array. */
static void parquet_list_columns_give_images(void **state)
{
    (void)state;
    char dir[256];
    json_t *expected = tu_parquet_lists(dir, sizeof dir);
    assert_non_null(expected);
    sl_source_params p = sl_source_default_params();
    p.max_item_bytes = 4096;
    const char *files[] = {"src-structs.parquet", "src-paths.parquet"};
    for (size_t f = 0; f < 2; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        json_t *want = json_object_get(expected, files[f]), *imgs = json_object_get(want, "images");
        sl_source_item items[16];
        size_t n = read_all(path, &p, items, 16);
        assert_int_equal(n, json_array_size(imgs));
        for (size_t i = 0; i < n; i++) {
            sl_source_item *it = &items[i];
            json_t *list = json_array_get(imgs, i);
            char where[600];
            snprintf(where, sizeof where, "%s row %zu, column 'images'", path, i);
            assert_null(it->path);
            assert_null(it->data);
            size_t len = json_array_size(list);
            const char *why = !json_is_array(list) ? "a null list" : len == 0 ? "the list of images is empty"
                              : len > SL_SOURCE_MAX_IMAGES ? "more than the 16 a row may have" : NULL;
            char msg[200];
            for (size_t k = 0; !why && k < len; k++) {
                json_t *e = json_array_get(list, k);
                const char *b = json_string_value(json_object_get(e, "bytes"));
                const char *s = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "path"));
                int at = snprintf(msg, sizeof msg, "image %zu of %zu ", k + 1, len);
                if (json_is_null(e))
                    why = strcat(msg, "is null");
                else if (!b && !s)
                    why = strcat(msg, "holds neither bytes nor a path");
                else if (b && strlen(b) - 2 > 2 * p.max_item_bytes)
                    snprintf(msg + at, sizeof msg - (size_t)at, "is %zu bytes, over the limit of %zu",
                             (strlen(b) - 2) / 2, p.max_item_bytes), why = msg;
            }
            if (why) {
                if (!it->error || !strstr(it->error, where) || !strstr(it->error, why))
                    fail_msg("row %zu: error '%s', not '%s: ... %s'", i, it->error ? it->error : "(none)", where,
                             why);
                sl_source_item_clear(it);
                continue;
            }
            if (it->error)
                fail_msg("row %zu: %s", i, it->error);
            assert_int_equal(it->n_images, len);
            for (size_t k = 0; k < len; k++) {
                json_t *e = json_array_get(list, k);
                const char *b = json_string_value(json_object_get(e, "bytes"));
                const char *s = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "path"));
                if (b) { /* "0x" + hex: bytes win over a path */
                    assert_null(it->images[k].path);
                    assert_int_equal(it->images[k].len, (strlen(b) - 2) / 2);
                    for (size_t j = 0; j < it->images[k].len; j++) {
                        unsigned byte;
                        sscanf(b + 2 + 2 * j, "%2x", &byte);
                        assert_int_equal(it->images[k].data[j], byte);
                    }
                } else {
                    char located[600];
                    snprintf(located, sizeof located, strstr(s, "://") ? "%.0s%s" : "%s/%s", dir, s);
                    assert_string_equal(it->images[k].path, located);
                    assert_null(it->images[k].data);
                }
            }
            json_t *tags = json_object_get(want, "tags");
            if (tags) { /* passed through under the list's name; the image list is not */
                assert_true(json_equal(json_object_get(it->extra, "tags"), json_array_get(tags, i)));
                assert_null(json_object_get(it->extra, "images"));
                assert_null(json_object_get(it->extra, "images.list.element.path"));
            }
            assert_int_equal(json_integer_value(json_object_get(it->extra, "k")), (json_int_t)i);
            sl_source_item_clear(it);
        }
    }
    json_decref(expected);
    tu_rmtree(dir);
}

/* Reads `input` (n items) with its reads failing as `faults` says (the
 * disk's EIO midway, at a test fault point): shared out by item (run 1 of
 * 3, shards of 2), the source ends the read after items of its share
 * (SL_ERR_IO naming the file, the cause and 'run it again'), since a run
 * going on would count the items after the break where the others do not;
 * read whole, the items before the break come, then one cut-short item
 * saying why, which ends the file. */
static void ends_midway(const char *input, const char *faults, size_t n)
{
    sl_source_params p = sl_source_default_params();
    p.shard_count = 3;
    p.shard_index = 1;
    p.shard_size = 2;
    assert_int_equal(sl_fault_configure(faults), 0);
    sl_source *src;
    assert_int_equal(sl_source_open(&input, 1, &p, &src), SL_OK);
    sl_status st;
    size_t taken = 0;
    for (;;) {
        sl_source_item it = {0};
        bool done = false;
        if ((st = sl_source_next(src, &it, &done)) != SL_OK || done)
            break;
        assert_null(it.error);
        taken++;
        sl_source_item_clear(&it);
    }
    sl_source_free(src);
    assert_int_equal(st, SL_ERR_IO);
    assert_true(taken > 0); /* midway: its first items were read */
    assert_non_null(strstr(sl_last_error(), input));
    assert_non_null(strstr(sl_last_error(), "Input/output error"));
    assert_non_null(strstr(sl_last_error(), "run it again"));

    p = sl_source_default_params();
    assert_int_equal(sl_fault_configure(faults), 0);
    assert_int_equal(sl_source_open(&input, 1, &p, &src), SL_OK);
    sl_source_item *it = sl_calloc(n, sizeof *it);
    assert_non_null(it);
    size_t got = 0;
    for (bool done = false; !done;) {
        assert_true(got < n);
        assert_int_equal(sl_source_next(src, &it[got], &done), SL_OK);
        got += !done;
    }
    sl_source_free(src);
    assert_int_equal(sl_fault_configure(NULL), 0);
    assert_true(got > 1 && got < n);
    for (size_t i = 0; i + 1 < got; i++)
        assert_null(it[i].error);
    assert_true(it[got - 1].cut_short);
    assert_non_null(strstr(it[got - 1].error, "Input/output error"));
    for (size_t i = 0; i < got; i++)
        sl_source_item_clear(&it[i]);
    sl_free(it);
}

/* A plain tar (fault point tar.read). libarchive read a plain tar's bytes
 * itself, so the error was taken for a damaged shard: one failed item, the
 * stream went on shorter than the other runs', and the shards after it
 * held the wrong items. */
static void a_tar_read_error_midway_ends_a_run_sharing_items(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/big.tar", dir);
    static char member[40000];
    memset(member, 'x', sizeof member - 1);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (int i = 0; i < 8; i++) { /* 320 KB: five 64 KiB reads */
        char name[32];
        snprintf(name, sizeof name, "k%d.jpg", i);
        tar_add(a, name, member);
    }
    archive_write_close(a);
    archive_write_free(a);
    ends_midway(path, "tar.read=eio@3", 8);
    tu_rmtree(dir);
}

/* A local manifest (fault point manifest.read), 10 lines of 40 KB read
 * 64 KiB at a time, and a Parquet and an Arrow file read in place
 * (ranged.read), 10 rows in row groups or record batches of 2 that a
 * 1 MiB column no row uses keeps apart, so each is a read of its own:
 * none of them was tested failing midway with its items shared out. */
static void a_manifest_parquet_or_arrow_read_error_midway_ends_a_run_sharing_items(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/list.jsonl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    static char note[40000];
    memset(note, 'x', sizeof note - 1);
    for (int i = 0; i < 10; i++)
        fprintf(f, "{\"image\": \"a.jpg\", \"note\": \"%s\"}\n", note);
    assert_int_equal(fclose(f), 0);
    ends_midway(path, "manifest.read=eio@3", 10);

    const char *kinds[][2] = {{"t.parquet", "ranged.read=eio@9"}, {"t.arrow", "ranged.read=eio@14"}};
    for (size_t k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, kinds[k][0]);
        const char *py = getenv("SLUICE_PYTHON");
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "'%s' -c \"import os, sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc\n"
                 "t = pa.table({'image': ['a.jpg'] * 10,\n"
                 "              'blob': pa.array([os.urandom(1 << 20) for _ in range(10)])})\n"
                 "if sys.argv[1].endswith('.parquet'):\n"
                 "    pq.write_table(t, sys.argv[1], row_group_size=2, compression='none')\n"
                 "else:\n"
                 "    with ipc.new_stream(sys.argv[1], t.schema) as w:\n"
                 "        w.write_table(t, max_chunksize=2)\" '%s'",
                 py ? py : ".venv/bin/python", path);
        assert_int_equal(system(cmd), 0);
        ends_midway(path, kinds[k][1], 10);
    }
    tu_rmtree(dir);
}

/* Reads `input` whole with allocation n failing, for n = 0, 1, ... until a
 * read is whole: each read that succeeds, its items without error, names
 * every image's bytes as want[] says (an item's image, or its list's, in
 * order; NULL: a path, no bytes), since a name lost to an allocation that
 * failed is an error message naming the wrong thing. */
static void names_held_bytes(const char *input, const sl_source_params *p, size_t n_items,
                             const char *const want[][3])
{
    bool whole = false;
    for (long k = 0; !whole && k < 100000; k++) {
        sl_alloc_fail_after(k);
        const char *inputs[] = {input};
        sl_source *src = NULL;
        sl_status st = sl_source_open(inputs, 1, p, &src);
        size_t got = 0, failed = 0;
        const char *names[8][3] = {{0}};
        bool held[8][3] = {{0}};
        char *copies[8][3] = {{0}};
        for (bool done = false; st == SL_OK && !done;) {
            sl_source_item it = {0};
            st = sl_source_next(src, &it, &done);
            if (st == SL_OK && !done && got < 8) {
                failed += it.error != NULL;
                if (it.data) {
                    held[got][0] = true;
                    copies[got][0] = it.name ? strdup(it.name) : NULL;
                }
                for (size_t i = 0; i < it.n_images && i < 3; i++)
                    if (it.images[i].data) {
                        held[got][i] = true;
                        copies[got][i] = it.images[i].name ? strdup(it.images[i].name) : NULL;
                    }
            }
            got += st == SL_OK && !done;
            sl_source_item_clear(&it);
        }
        sl_source_free(src);
        sl_alloc_fail_after(-1);
        if (st == SL_OK && failed == 0) {
            assert_int_equal(got, n_items);
            for (size_t i = 0; i < n_items; i++)
                for (size_t j = 0; j < 3; j++) {
                    names[i][j] = copies[i][j];
                    if (!want[i][j]) {
                        assert_false(held[i][j]);
                        continue;
                    }
                    if (!held[i][j] || !names[i][j] || strcmp(names[i][j], want[i][j]) != 0)
                        fail_msg("%s, allocation %ld failing: item %zu, image %zu named '%s', not "
                                 "'%s'", input, k, i, j, names[i][j] ? names[i][j] : "(none)",
                                 want[i][j]);
                }
        }
        for (size_t i = 0; i < 8; i++)
            for (size_t j = 0; j < 3; j++)
                free(copies[i][j]);
        whole = st == SL_OK && failed == 0;
    }
    assert_true(whole);
}

/* Image bytes the input holds (a tar member, a Parquet or Arrow cell, one
 * or a list or several columns) carry where they were (sl_source_item.name,
 * sl_source_image.name), for the decode's message; with any one allocation
 * failing, a read either fails or names them all (ASan: nothing leaks). */
static void held_bytes_are_named_where_they_are(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char tar[512], named[512], pq[512], arrow[512], man[512], cols[512];
    static const char url[] = "data:image/jpeg;base64,SlVOSw=="; /* "JUNK" */
    snprintf(tar, sizeof tar, "%s/s.tar", dir);
    snprintf(named, sizeof named, "%s/n.tar", dir); /* every sample holds the named members */
    for (int k = 0; k < 2; k++) {
        struct archive *a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        assert_int_equal(archive_write_open_filename(a, k ? named : tar), ARCHIVE_OK);
        if (!k) {
            tar_add(a, "a.jpg", "AAAA");
            tar_add(a, "a.txt", "caption");
        }
        tar_add(a, "c.left.jpg", "LLLL");
        tar_add(a, "c.right.jpg", "RRRR");
        archive_write_close(a);
        archive_write_free(a);
    }
    for (int k = 0; k < 2; k++) {
        snprintf(k ? arrow : pq, sizeof pq, "%s/t.%s", dir, k ? "arrow" : "parquet");
        const char *py = getenv("SLUICE_PYTHON");
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "'%s' -c \"import sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc\n"
                 "u = '%s'\n"
                 "t = pa.table({'id': ['p0', 'p1'], 'image': pa.array([b'AA', b'BB']),\n"
                 "              'side': pa.array([b'SS', b'TT']),\n"
                 "              'imgs': pa.array([[b'x', b'y'], [b'z']], pa.list_(pa.binary())),\n"
                 "              'urls': pa.array([[u], [u, u]], pa.list_(pa.string())),\n"
                 "              'structs': pa.array([[{'bytes': None, 'path': u}], [{'bytes': b'', 'path': u}]],\n"
                 "                                  pa.list_(pa.struct([('bytes', pa.binary()), ('path', pa.string())]))),\n"
                 "              'cell': pa.array([{'bytes': None, 'path': u}] * 2,\n"
                 "                               pa.struct([('bytes', pa.binary()), ('path', pa.string())]))})\n"
                 "if sys.argv[1].endswith('.parquet'):\n"
                 "    pq.write_table(t, sys.argv[1])\n"
                 "else:\n"
                 "    with ipc.new_file(sys.argv[1], t.schema) as w:\n"
                 "        w.write_table(t)\" '%s'",
                 py ? py : ".venv/bin/python", url, k ? arrow : pq);
        assert_int_equal(system(cmd), 0);
    }
    char m[8][600];
    sl_source_params p = sl_source_default_params();
    /* the tar: a sample's first image; one member named; two */
    snprintf(m[0], sizeof m[0], "%s: member 'a.jpg'", tar);
    snprintf(m[1], sizeof m[1], "%s: member 'c.left.jpg'", tar);
    names_held_bytes(tar, &p, 2, (const char *const[][3]){{m[0]}, {m[1]}});
    snprintf(m[1], sizeof m[1], "%s: member 'c.left.jpg'", named);
    snprintf(m[2], sizeof m[2], "%s: member 'c.right.jpg'", named);
    p.image_column = "left.jpg,right.jpg";
    names_held_bytes(named, &p, 1, (const char *const[][3]){{m[1], m[2]}});
    p.image_column = "right.jpg";
    names_held_bytes(named, &p, 1, (const char *const[][3]){{m[2]}});
    /* a Parquet and an Arrow file: one column, a list (each image the
     * row's cell: the decode's message adds which), and for Parquet two */
    for (int k = 0; k < 2; k++) {
        const char *f = k ? arrow : pq;
        p = sl_source_default_params();
        p.id_column = "id";
        p.image_column = "image";
        for (int row = 0; row < 2; row++)
            snprintf(m[row], sizeof m[row], "%s row %d, column 'image'", f, row);
        names_held_bytes(f, &p, 2, (const char *const[][3]){{m[0]}, {m[1]}});
        p.image_column = "imgs";
        for (int row = 0; row < 2; row++)
            snprintf(m[row], sizeof m[row], "%s row %d, column 'imgs'", f, row);
        names_held_bytes(f, &p, 2, (const char *const[][3]){{m[0], m[0]}, {m[1]}});
        /* data: URLs: a list of them, a list of structs without bytes, a
         * struct cell without bytes */
        const char *listed[] = {"urls", "structs", "cell"};
        for (int c = 0; c < 3; c++) {
            p.image_column = listed[c];
            for (int row = 0; row < 2; row++)
                snprintf(m[row], sizeof m[row], "%s row %d, column '%s'", f, row, listed[c]);
            names_held_bytes(f, &p, 2, c == 0 ? (const char *const[][3]){{m[0]}, {m[1], m[1]}}
                                       : (const char *const[][3]){{m[0]}, {m[1]}});
        }
        if (k)
            continue;
        p.image_column = "image,side";
        for (int row = 0; row < 2; row++) {
            snprintf(m[2 * row], sizeof m[0], "%s row %d, column 'image'", f, row);
            snprintf(m[2 * row + 1], sizeof m[0], "%s row %d, column 'side'", f, row);
        }
        names_held_bytes(f, &p, 2, (const char *const[][3]){{m[0], m[1]}, {m[2], m[3]}});
    }
    /* a manifest's data: URLs: a row's image, a list of them, several columns */
    snprintf(man, sizeof man, "%s/m.jsonl", dir);
    snprintf(cols, sizeof cols, "%s/c.jsonl", dir);
    FILE *mf = fopen(man, "w"), *cf = fopen(cols, "w");
    assert_non_null(mf);
    assert_non_null(cf);
    fprintf(mf, "{\"id\": \"r0\", \"images\": [\"%s\", \"%s\"]}\n{\"id\": \"r1\", \"image\": \"%s\"}\n",
            url, url, url);
    fprintf(cf, "{\"left\": \"%s\", \"right\": \"%s\"}\n", url, url);
    assert_int_equal(fclose(mf), 0);
    assert_int_equal(fclose(cf), 0);
    p = sl_source_default_params();
    snprintf(m[0], sizeof m[0], "%s:1: column 'images'", man);
    snprintf(m[1], sizeof m[1], "%s:2: column 'image'", man);
    names_held_bytes(man, &p, 2, (const char *const[][3]){{m[0], m[0]}, {m[1]}});
    p.image_column = "left,right";
    snprintf(m[0], sizeof m[0], "%s:1", cols);
    names_held_bytes(cols, &p, 1, (const char *const[][3]){{m[0], m[0]}});
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webdataset_groups_members_by_key),
        cmocka_unit_test(manifest_rows),
        cmocka_unit_test(manifest_text_after_a_byte_order_mark),
        cmocka_unit_test(an_empty_image_cell_names_its_place),
        cmocka_unit_test(folder_globs),
        cmocka_unit_test(open_errors_name_the_input),
        cmocka_unit_test(ids_name_the_folders_that_tell_inputs_apart),
        cmocka_unit_test(hive_partitions_are_each_files_own),
        cmocka_unit_test(one_file_read_twice_is_refused),
        cmocka_unit_test(manifest_lines_past_the_limit_fail_alone),
        cmocka_unit_test(parquet_list_columns_give_images),
        cmocka_unit_test(a_tar_read_error_midway_ends_a_run_sharing_items),
        cmocka_unit_test(a_manifest_parquet_or_arrow_read_error_midway_ends_a_run_sharing_items),
        cmocka_unit_test(held_bytes_are_named_where_they_are),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
