/* Unit tests: job/caption_metrics.c — a replica whose metrics cannot all be
 * made (out of memory at each of its allocations in turn) leaves nothing
 * reading its engine: the caller frees the engine at once, and a scrape
 * after that read it (ASan: heap-use-after-free in sl_engine_stats_get). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "job/caption_metrics.h"
#include "sluice/sluice.h"
#include "test_util.h"

static void a_replica_that_fails_to_add_leaves_nothing_reading_its_engine(void **state)
{
    (void)state;
    tu_tiny tiny = tu_tiny_files();
    sl_llama_params p = tu_tiny_llama(&tiny, 1);
    int failures = 0;
    for (long n = 0;; n++) {
        caption_metrics *cm = NULL;
        assert_int_equal(caption_metrics_start("", NULL, &cm), SL_OK);
        sl_engine *engine = tu_open_llama(&p);
        replica_metrics *rm = NULL;
        sl_alloc_fail_after(n);
        sl_status st = caption_metrics_add_replica(cm, 0, "tiny", engine, &rm);
        sl_alloc_fail_after(-1);
        if (st == SL_OK) {
            assert_non_null(rm);
            replica_metrics_detach(rm);
        } else {
            assert_int_equal(st, SL_ERR_NOMEM);
            assert_null(rm);
            failures++;
        }
        sl_engine_free(engine);
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(sl_metrics_render(caption_metrics_registry(cm), &text, &len), SL_OK);
        sl_free(text);
        caption_metrics_stop(cm);
        if (st == SL_OK)
            break;
    }
    /* Every allocation of the add failed once before the one that worked. */
    assert_true(failures > 10);
}

int main(void)
{
    sl_log_set_level(SL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_replica_that_fails_to_add_leaves_nothing_reading_its_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
