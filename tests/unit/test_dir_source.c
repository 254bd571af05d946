/* Unit tests: io/dir_source.c — stable recursive order, filtering, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/dir_source.h"
#include "test_util.h"

/* Lists `dir` whole: exactly `expect`, in order (unsorted: in any order),
 * without errors; past the end stays at the end. */
static void expect_walk(const char *dir, bool sorted, const char *const *expect, size_t n_expect)
{
    sl_dir_source *src;
    assert_int_equal(sl_dir_source_open(dir, sorted, &src), SL_OK);
    const sl_dir_entry *e;
    bool seen[64] = {false};
    assert_true(n_expect <= sizeof seen / sizeof *seen);
    size_t n = 0;
    for (;;) {
        assert_int_equal(sl_dir_source_next(src, &e), SL_OK);
        if (!e)
            break;
        assert_true(n < n_expect);
        size_t at = n;
        if (!sorted)
            for (at = 0; at < n_expect && strcmp(e->rel, expect[at]) != 0; at++)
                ;
        assert_true(at < n_expect && !seen[at]);
        seen[at] = true;
        assert_string_equal(e->rel, expect[at]);
        assert_null(e->error);
        char full[1024];
        snprintf(full, sizeof full, "%s/%s", dir, expect[at]);
        assert_string_equal(e->path, full);
        n++;
    }
    assert_int_equal(n, n_expect);
    assert_int_equal(sl_dir_source_next(src, &e), SL_OK);
    assert_null(e);
    sl_dir_source_free(src);
}

/* The sorted walk (the run's) and the unsorted one (the progress count's)
 * give the same entries. */
static void expect_listing(const char *dir, const char *const *expect, size_t n_expect)
{
    expect_walk(dir, true, expect, n_expect);
    expect_walk(dir, false, expect, n_expect);
}

static void walks_sorted_depth_first_images_only(void **state)
{
    char *dir = tu_tmpdir();
    const char *files[] = {"b.jpg", "a.png", "sub/c.JPG", "sub/notes.txt", "sub/deeper/d.webp",
                           "A.gif", "z/readme", "sub2/e.jpeg", ".hidden.png"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        tu_write(dir, files[i], "x", 1);
    mkdir(strcat(strcpy((char[512]){0}, dir), "/empty"), 0777);

    const char *expect[] = {".hidden.png", "A.gif", "a.png", "b.jpg", "sub/c.JPG",
                            "sub/deeper/d.webp", "sub2/e.jpeg"};
    expect_listing(dir, expect, sizeof expect / sizeof *expect);
    tu_rmtree(dir);
}

static void missing_or_file_root_is_an_error(void **state)
{
    sl_dir_source *src = (void *)1;
    assert_int_equal(sl_dir_source_open("/nonexistent/sluice-input", true, &src), SL_ERR_NOT_FOUND);
    assert_null(src);
    assert_non_null(strstr(sl_last_error(), "/nonexistent/sluice-input"));

    char *dir = tu_tmpdir();
    tu_write(dir, "f.jpg", "x", 1);
    char file[512];
    snprintf(file, sizeof file, "%s/f.jpg", dir);
    assert_int_equal(sl_dir_source_open(file, true, &src), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "not a folder"));
    tu_rmtree(dir);
}

static void image_names(void **state)
{
    assert_true(sl_is_media_name("x.JPEG"));
    assert_true(sl_is_media_name("dir.d/x.tiff"));
    assert_false(sl_is_media_name("x.txt"));
    assert_true(sl_is_media_name("clips/a.MP4"));
    assert_true(sl_is_media_name("a.webm"));
    assert_false(sl_is_media_name("a.mp3"));
    assert_false(sl_is_media_name("jpg"));
    assert_false(sl_is_media_name(".jpg"));
}

/* A Mac's metadata is skipped, a .jfif is an image, and a symlinked
 * folder is skipped with a warning rather than walked. */
static void mac_metadata_jfif_and_symlinked_folders(void **state)
{
    char *dir = tu_tmpdir();
    const char *files[] = {"a.jpg", "._a.jpg", "__MACOSX/b.jpg", "__MACOSX/._b.jpg",
                           "sub/._c.png", "sub/c.png", "d.JFIF", "real/e.jpg"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        tu_write(dir, files[i], "x", 1);
    char link[512];
    snprintf(link, sizeof link, "%s/linked", dir);
    assert_int_equal(symlink("real", link), 0);
    snprintf(link, sizeof link, "%s/loop", dir);
    assert_int_equal(symlink(".", link), 0);

    const char *expect[] = {"a.jpg", "d.JFIF", "real/e.jpg", "sub/c.png"};
    expect_listing(dir, expect, sizeof expect / sizeof *expect);
    tu_rmtree(dir);

    assert_true(sl_is_mac_metadata("__MACOSX/x/y.jpg"));
    assert_true(sl_is_mac_metadata("x/._y.jpg"));
    assert_false(sl_is_mac_metadata("x/.y.jpg"));
    assert_false(sl_is_mac_metadata("__MACOSX2/y.jpg"));
    assert_true(sl_is_media_name("photo.jfif"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(walks_sorted_depth_first_images_only),
        cmocka_unit_test(missing_or_file_root_is_an_error),
        cmocka_unit_test(image_names),
        cmocka_unit_test(mac_metadata_jfif_and_symlinked_folders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
