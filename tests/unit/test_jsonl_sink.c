/* Unit tests: io/jsonl_sink.c — temp then rename, refusal to overwrite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/jsonl_sink.h"
#include "test_util.h"

static int exists(const char *p) { return access(p, F_OK) == 0; }

static void shard_appears_only_on_commit(void **state)
{
    char *base = tu_tmpdir();
    char dir[512], final_path[600], tmp[700];
    snprintf(dir, sizeof dir, "%s/out/nested", base);
    snprintf(final_path, sizeof final_path, "%s/part-00000.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s/.part-00000.jsonl.tmp-%ld", dir, (long)getpid());

    sl_jsonl_sink *sink;
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_OK);
    assert_string_equal(sl_jsonl_sink_path(sink), final_path);
    json_t *row = json_pack("{s:s, s:i}", "id", "a\"b\n.jpg", "n", 1);
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    assert_int_equal(sl_jsonl_sink_write(sink, row), SL_OK);
    json_decref(row);
    assert_true(exists(tmp));
    assert_false(exists(final_path));
    assert_int_equal(sl_jsonl_sink_commit(sink), SL_OK);
    sl_jsonl_sink_free(sink);
    assert_false(exists(tmp));

    FILE *fp = fopen(final_path, "r");
    assert_non_null(fp);
    char line[256];
    int lines = 0;
    while (fgets(line, sizeof line, fp)) {
        json_error_t err;
        json_t *back = json_loads(line, 0, &err);
        assert_non_null(back);
        assert_string_equal(json_string_value(json_object_get(back, "id")), "a\"b\n.jpg");
        json_decref(back);
        lines++;
    }
    fclose(fp);
    assert_int_equal(lines, 2);

    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_ERR_EXISTS);
    assert_non_null(strstr(sl_last_error(), "--overwrite"));
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", true, &sink), SL_OK);
    sl_jsonl_sink_free(sink); /* uncommitted: the old shard stays, the temp goes */
    assert_true(exists(final_path));
    assert_false(exists(tmp));
    tu_rmtree(base);
}

static void unwritable_output_is_an_error(void **state)
{
    char *base = tu_tmpdir();
    tu_write(base, "file", "x", 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/file/out", base);
    sl_jsonl_sink *sink = (void *)1;
    assert_int_equal(sl_jsonl_sink_open(dir, "part-00000.jsonl", false, &sink), SL_ERR_IO);
    assert_null(sink);
    assert_non_null(strstr(sl_last_error(), base));
    tu_rmtree(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shard_appears_only_on_commit),
        cmocka_unit_test(unwritable_output_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
