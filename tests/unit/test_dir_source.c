/* Unit tests: io/dir_source.c — stable recursive order, filtering, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/dir_source.h"
#include "test_util.h"

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
    sl_dir_source *src;
    assert_int_equal(sl_dir_source_open(dir, &src), SL_OK);
    const sl_dir_entry *e;
    size_t n = 0;
    for (;;) {
        assert_int_equal(sl_dir_source_next(src, &e), SL_OK);
        if (!e)
            break;
        assert_true(n < sizeof expect / sizeof *expect);
        assert_string_equal(e->rel, expect[n]);
        assert_null(e->error);
        char full[1024];
        snprintf(full, sizeof full, "%s/%s", dir, expect[n]);
        assert_string_equal(e->path, full);
        n++;
    }
    assert_int_equal(n, sizeof expect / sizeof *expect);
    /* Past the end stays at the end. */
    assert_int_equal(sl_dir_source_next(src, &e), SL_OK);
    assert_null(e);
    sl_dir_source_free(src);
    tu_rmtree(dir);
}

static void missing_or_file_root_is_an_error(void **state)
{
    sl_dir_source *src = (void *)1;
    assert_int_equal(sl_dir_source_open("/nonexistent/sluice-input", &src), SL_ERR_NOT_FOUND);
    assert_null(src);
    assert_non_null(strstr(sl_last_error(), "/nonexistent/sluice-input"));

    char *dir = tu_tmpdir();
    tu_write(dir, "f.jpg", "x", 1);
    char file[512];
    snprintf(file, sizeof file, "%s/f.jpg", dir);
    assert_int_equal(sl_dir_source_open(file, &src), SL_ERR_INVALID_ARG);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(walks_sorted_depth_first_images_only),
        cmocka_unit_test(missing_or_file_root_is_an_error),
        cmocka_unit_test(image_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
