/* Unit tests: job/caption_metrics.c — a replica whose metrics cannot all be
 * made (out of memory at each of its allocations in turn) leaves nothing
 * reading its engine: the caller frees the engine at once, and a scrape
 * after that read it (ASan: heap-use-after-free in sl_engine_stats_get).
 * job/rank_metrics.c likewise: an attach that fails frees what its
 * callbacks read, so none of them stays set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "job/caption_metrics.h"
#include "job/rank_metrics.h"
#include "obs/metrics_impl.h"
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

/* rank_metrics_attach runs with the metrics server up: when it failed, it
 * freed the references its callbacks read and left them set, so a scrape
 * before the server stopped read freed memory (ASan: heap-use-after-free
 * in read_rank). NULL dist: a job of one rank, whose figures read as 0. */
static void rank_metrics_that_fail_to_attach_leave_nothing_reading_them(void **state)
{
    (void)state;
    int failures = 0;
    for (long n = 0;; n++) {
        sl_metrics_params mp = sl_metrics_default_params();
        mp.process_metrics = false;
        sl_metrics *reg = NULL;
        assert_int_equal(sl_metrics_new(&mp, &reg), SL_OK);
        rank_metrics *rm = (rank_metrics *)&rm; /* must be cleared */
        sl_alloc_fail_after(n);
        sl_status st = rank_metrics_attach(reg, NULL, &rm);
        sl_alloc_fail_after(-1);
        /* A scrape now (ASan sees a callback read freed memory) */
        char *text = NULL;
        assert_int_equal(sl_metrics_render(reg, &text, NULL), SL_OK);
        sl_metrics_text_free(text);
        if (st == SL_OK) {
            assert_non_null(rm);
        } else { /* (and a plain build, a callback left set) */
            assert_int_equal(st, SL_ERR_NOMEM);
            assert_null(rm);
            failures++;
            for (size_t i = 0; i < reg->n_families; i++)
                for (size_t k = 0; k < reg->families[i]->n_children; k++)
                    if (reg->families[i]->children[k]->fn)
                        fail_msg("after a failed attach (allocation %ld), %s still has a callback",
                                 n, reg->families[i]->name);
        }
        sl_metrics_free(reg);
        rank_metrics_free(rm);
        if (st == SL_OK)
            break;
    }
    assert_true(failures > 10);
}

int main(void)
{
    sl_log_set_level(SL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_replica_that_fails_to_add_leaves_nothing_reading_its_engine),
        cmocka_unit_test(rank_metrics_that_fail_to_attach_leave_nothing_reading_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
