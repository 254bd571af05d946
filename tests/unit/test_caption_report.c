/* Unit tests: job/caption_report.c — a report file is replaced whole or
 * not at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/alloc.h"
#include "job/caption_report.h"
#include "test_util.h"

/* Out of memory at each allocation in turn: the summary's dump lists an
 * object's keys in memory of its own, and a dump that stopped there left
 * "{" renamed into place as _summary.json, reported written. Each try
 * either fails saying so, the summary before left as it was, or writes a
 * summary that reads back whole. */
static void a_summary_cut_short_is_never_put_in_place(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/_summary.json", dir);
    static const char before[] = "{\"status\": \"ok\"}\n";
    sl_caption_params p = {0};
    p.output_dir = dir;
    p.input_dir = "in";
    bool whole = false;
    for (long k = 0; !whole && k < 1000; k++) {
        tu_write(dir, "_summary.json", before, sizeof before - 1);
        sl_alloc_fail_after(k);
        sl_status st = caption_report_running(&p, dir);
        sl_alloc_fail_after(-1);
        json_error_t err;
        json_t *got = json_load_file(path, 0, &err);
        assert_non_null(got); /* never a cut file */
        whole = st == SL_OK;
        if (whole) {
            assert_string_equal(json_string_value(json_object_get(got, "status")), "running");
            assert_string_equal(json_string_value(json_object_get(got, "input_dir")), "in");
        } else {
            assert_int_equal(st, SL_ERR_NOMEM);
            assert_string_equal(json_string_value(json_object_get(got, "status")), "ok");
        }
        json_decref(got);
    }
    assert_true(whole);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_summary_cut_short_is_never_put_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
