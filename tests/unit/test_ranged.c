/* tests/unit/test_ranged.c — io/ranged.h with local files: sizes, reads at
 * offsets, short reads at the end (never errors), errors naming the file;
 * and an s3:// URL refused when the environment is wrong. Objects in S3
 * are tested against a store in tests/e2e/test_s3.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "core/error.h"
#include "io/ranged.h"
#include "test_util.h"

static void reads_a_file_at_offsets(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    uint8_t data[10000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 31 + 7);
    tu_write(dir, "f.bin", data, sizeof data);
    char path[512];
    snprintf(path, sizeof path, "%s/f.bin", dir);
    sl_ranged *r = NULL;
    assert_int_equal(sl_ranged_open(path, &r), SL_OK);
    assert_false(sl_ranged_is_remote(r));
    assert_string_equal(sl_ranged_path(r), path);
    uint64_t size = 0;
    assert_int_equal(sl_ranged_size(r, &size), SL_OK);
    assert_int_equal(size, sizeof data);

    uint8_t buf[4096];
    size_t got = 99;
    assert_int_equal(sl_ranged_read(r, buf, 1000, 1234, &got), SL_OK);
    assert_int_equal(got, 1000);
    assert_memory_equal(buf, data + 1234, 1000);
    /* Across the end: what is there, then nothing, never an error. */
    assert_int_equal(sl_ranged_read(r, buf, 4096, sizeof data - 100, &got), SL_OK);
    assert_int_equal(got, 100);
    assert_memory_equal(buf, data + sizeof data - 100, 100);
    assert_int_equal(sl_ranged_read(r, buf, 10, sizeof data, &got), SL_OK);
    assert_int_equal(got, 0);
    assert_int_equal(sl_ranged_read(r, buf, 10, 1u << 30, &got), SL_OK);
    assert_int_equal(got, 0);
    uint64_t before = sl_ranged_requests(r);
    assert_int_equal(sl_ranged_read(r, buf, 0, 5, &got), SL_OK); /* empty: no read at all */
    assert_int_equal(got, 0);
    assert_int_equal(sl_ranged_requests(r), before);
    assert_true(before >= 3);
    sl_ranged_free(r);
    sl_ranged_free(NULL);

    /* An empty file has size 0 and nothing to read. */
    tu_write(dir, "empty.bin", "", 0);
    snprintf(path, sizeof path, "%s/empty.bin", dir);
    assert_int_equal(sl_ranged_open(path, &r), SL_OK);
    assert_int_equal(sl_ranged_size(r, &size), SL_OK);
    assert_int_equal(size, 0);
    assert_int_equal(sl_ranged_read(r, buf, 10, 0, &got), SL_OK);
    assert_int_equal(got, 0);
    sl_ranged_free(r);
    tu_rmtree(dir);
}

static void errors_name_the_file(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/none.bin", dir);
    sl_ranged *r = (sl_ranged *)1;
    assert_int_equal(sl_ranged_open(path, &r), SL_ERR_NOT_FOUND);
    assert_null(r);
    assert_non_null(strstr(sl_last_error(), path));
    assert_int_equal(sl_ranged_open(dir, &r), SL_ERR_IO); /* a folder */
    assert_null(r);
    assert_non_null(strstr(sl_last_error(), "not a regular file"));
    tu_rmtree(dir);
}

static void an_object_needs_a_right_environment(void **state)
{
    (void)state;
    /* The process's store is made once, from the environment as it is then. */
    setenv("AWS_ENDPOINT_URL", "ftp://store.example", 1);
    sl_ranged *r = (sl_ranged *)1;
    assert_int_equal(sl_ranged_open("s3://bucket/data/train.parquet", &r), SL_ERR_INVALID_ARG);
    assert_null(r);
    assert_non_null(strstr(sl_last_error(), "AWS_ENDPOINT_URL"));
    unsetenv("AWS_ENDPOINT_URL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_a_file_at_offsets),
        cmocka_unit_test(errors_name_the_file),
        cmocka_unit_test(an_object_needs_a_right_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
