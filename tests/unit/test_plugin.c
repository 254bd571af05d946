/* Unit tests: sluice/plugin.h and stage/plugin_stage.c — C plugins loaded
 * with dlopen. The loader refuses, naming the file and the cause, a plugin
 * of another ABI version, one without the entry function, one without
 * process(), a file that is not a shared object, and a config that is not a
 * JSON object. In the caption pipeline on the tiny model
 * (tests/plugins/counting.c): a state per worker, init and close once per
 * worker, batches within the batch size, rows failed by the plugin written
 * with their error (class stage, the stage's name), rows dropped; the tags
 * example on answers set by a stage of the test's; an init() that fails
 * stops the run with the plugin's message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>

#include "sluice/plugin.h"
#include "stage/stage.h"
#include "test_util.h"

#define PLUGIN(variant) TEST_PLUGIN_DIR "/libtest_plugin_" variant ".so"

static void refused(const char *path, const char *config, const char *const *words)
{
    sl_plugin_stage *ps = (sl_plugin_stage *)&ps;
    assert_int_equal(sl_plugin_stage_open(path, config, &ps), SL_ERR_INVALID_ARG);
    assert_null(ps);
    const char *msg = sl_last_error();
    assert_non_null(strstr(msg, path));
    for (; *words; words++)
        if (!strstr(msg, *words))
            fail_msg("'%s' not in: %s", *words, msg);
}

static void the_loader_refuses_what_it_cannot_run(void **state)
{
    (void)state;
    refused(PLUGIN("abi999"), NULL,
            (const char *[]){"ABI version 999", "this sluice's is 1",
                             "rebuild the plugin against this sluice's sluice/plugin.h", NULL});
    refused(PLUGIN("noentry"), NULL, (const char *[]){"has no function sluice_plugin()", NULL});
    refused(PLUGIN("noprocess"), NULL, (const char *[]){"no process()", NULL});
    refused("/nonexistent/libx.so", NULL,
            (const char *[]){"does not load", "No such file", NULL});
    char *dir = tu_tmpdir();
    tu_write(dir, "text.so", "not an ELF file\n", 16);
    char text[600];
    snprintf(text, sizeof text, "%s/text.so", dir);
    refused(text, NULL, (const char *[]){"does not load", NULL});
    refused(PLUGIN("ok"), "[1]", (const char *[]){"config must be a JSON object", NULL});
    refused(PLUGIN("ok"), "{bad", (const char *[]){"config must be a JSON object", NULL});
    tu_rmtree(dir);

    /* A job's stage: the stage's name before the loader's message. */
    sl_stage_spec spec = {.name = "mine", .plugin = PLUGIN("abi999"), .after = "engine"};
    user_stage *us = NULL;
    sl_pipeline_stage_params params;
    sl_pipeline_builtin after;
    assert_int_equal(user_stage_open(&spec, &us, &params, &after), SL_ERR_INVALID_ARG);
    assert_null(us);
    assert_true(strncmp(sl_last_error(), "stage 'mine': plugin '", 22) == 0);
    assert_non_null(strstr(sl_last_error(), "rebuild the plugin"));

    spec.plugin = PLUGIN("ok");
    spec.workers = 3;
    spec.batch_size = 5;
    assert_int_equal(user_stage_open(&spec, &us, &params, &after), SL_OK);
    assert_int_equal(after, SL_PIPELINE_ENGINE);
    assert_string_equal(params.name, "mine");
    assert_int_equal(params.workers, 3);
    assert_int_equal(params.batch_size, 5);
    assert_non_null(params.init);
    assert_non_null(params.process);
    assert_non_null(params.close);
    user_stage_free(us);

    sl_plugin_stage *ps;
    assert_int_equal(sl_plugin_stage_open(PLUGIN("ok"), "{\"a\": 1}", &ps), SL_OK);
    assert_string_equal(sl_plugin_stage_name(ps), "counting");
    sl_plugin_stage_free(ps);
    sl_plugin_stage_free(NULL);
}

/* --- in the pipeline ------------------------------------------------------------ */

enum { N = 12, WORKERS = 3, BATCH = 2, FAIL_MOD = 4, DROP_MOD = 5, SHORT_MOD = 3 };

static const char *const answer_a =
    "The Cat, the DOG and a cat: 42 dogs; x1 ab abc \xc3\x89T\xc3\x89 \xc3\xa9t\xc3\xa9-beach re-do";
static const char *const tags_a = "[\"cat\", \"dog\", \"abc\", \"beach\"]";
static const char *const answer_b =
    "w01 w02 w03 w04 w05 w06 w07 w08 w09 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20";

/* 11 characters in 20 bytes: below a min_length of 12 characters. */
static const char *const answer_short =
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" "ab";

/* After the engine: answers whose tags the test knows; short ones (below
 * min_length) for seq % SHORT_MOD == 0. */
static sl_status set_answers(void *state, sl_row *const *rows, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = sl_row_seq(rows[i]);
        const char *a = seq % SHORT_MOD == 0 ? answer_short : seq % 2 ? answer_b : answer_a;
        sl_status st = sl_pipeline_row_set_answer(rows[i], a);
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

/* The counting plugin's worker-W files: each must hold one line, of a
 * closed instance; returns the rows they counted. */
static long check_counts(const char *dir, int workers, int batch)
{
    long rows = 0;
    for (int w = 0; w <= workers; w++) {
        char path[600];
        snprintf(path, sizeof path, "%s/worker-%d", dir, w);
        FILE *fp = fopen(path, "r");
        if (w == workers) { /* no worker beyond those asked for */
            assert_null(fp);
            break;
        }
        assert_non_null(fp);
        char line[256];
        int lines = 0;
        while (fgets(line, sizeof line, fp)) {
            long r, calls, max_batch;
            int end;
            assert_int_equal(sscanf(line, "init rows %ld calls %ld max_batch %ld end %d", &r,
                                    &calls, &max_batch, &end), 4);
            assert_true(max_batch <= batch);
            assert_int_equal(end, SL_END_COMPLETE);
            rows += r;
            lines++;
        }
        fclose(fp);
        assert_int_equal(lines, 1); /* closed once */
    }
    return rows;
}

static void plugins_in_the_pipeline(void **state)
{
    (void)state;
    static tu_job job;
    sl_caption_params p = tu_tiny_job(&job, N);
    const char *base = job.base, *out = job.out;
    char counts[512], stop[512];
    snprintf(counts, sizeof counts, "%s/counts", base);
    snprintf(stop, sizeof stop, "%s/stopwords.txt", base);
    mkdir(counts, 0777);
    static const char words[] = "the\n\n# a comment: cat\nand # joins\n  Dogs \r\n";
    tu_write(base, "stopwords.txt", words, sizeof words - 1);

    /* A failed row's message longer than any fixed buffer, its end an
     * é: kept whole, as every stage's is (the host cut it at 1 KiB). */
    char note[3001];
    memset(note, 'n', sizeof note - 1);
    note[0] = ' ';
    memcpy(note + sizeof note - 7, "END \xc3\xa9", 6);
    note[sizeof note - 1] = '\0';
    char cfg_counting[4096], cfg_tags[1024];
    snprintf(cfg_counting, sizeof cfg_counting,
             "{\"counts\": \"%s\", \"fail_mod\": %d, \"drop_mod\": %d, \"fail_note\": \"%s\"}",
             counts, FAIL_MOD, DROP_MOD, note);
    snprintf(cfg_tags, sizeof cfg_tags, "{\"stopwords\": \"%s\", \"min_length\": 12}", stop);
    sl_plugin_stage *counting, *tags;
    assert_int_equal(sl_plugin_stage_open(PLUGIN("ok"), cfg_counting, &counting), SL_OK);
    assert_int_equal(sl_plugin_stage_open(TAGS_PLUGIN, cfg_tags, &tags), SL_OK);

    /* A program's own pipeline: counting after decode, the test's answers
     * and tags after the engine. */
    sl_pipeline *pl;
    assert_int_equal(sl_pipeline_new(&p, &pl), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_READ), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_DECODE), SL_OK);
    sl_pipeline_stage_params sp = sl_pipeline_stage_default_params();
    sp.name = "counting";
    sp.workers = WORKERS;
    sp.batch_size = BATCH;
    sl_plugin_stage_params(counting, &sp);
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_ENGINE), SL_OK);
    sp = sl_pipeline_stage_default_params();
    sp.name = "answers";
    sp.process = set_answers;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
    sp = sl_pipeline_stage_default_params();
    sp.name = "tags";
    sp.workers = 2;
    sl_plugin_stage_params(tags, &sp);
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_WRITE), SL_OK);
    sl_caption_summary sum;
    assert_int_equal(sl_pipeline_run(pl, &sum), SL_OK);
    sl_pipeline_free(pl);
    sl_plugin_stage_free(counting);
    sl_plugin_stage_free(tags);

    int failed = 0, dropped = 0, kept = 0;
    for (int seq = 0; seq < N; seq++) {
        if (seq % FAIL_MOD == 0)
            failed++;
        else if (seq % DROP_MOD == 0 || seq % SHORT_MOD == 0)
            dropped++;
        else
            kept++;
    }
    assert_int_equal(check_counts(counts, WORKERS, BATCH), N);
    assert_int_equal(sum.rows_failed, failed);
    assert_int_equal(sum.rows_dropped, dropped);
    assert_int_equal(sum.rows, failed + kept);

    char path[600];
    snprintf(path, sizeof path, "%s/part-00000.jsonl", out);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[8192];
    int rows = 0;
    json_t *want_a = json_loads(tags_a, 0, NULL);
    while (fgets(line, sizeof line, fp)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        int seq = atoi(json_string_value(json_object_get(o, "id")) + 3);
        if (seq % FAIL_MOD == 0) {
            assert_string_equal(json_string_value(json_object_get(o, "error_stage")), "counting");
            const char *error = json_string_value(json_object_get(o, "error"));
            assert_non_null(strstr(error, "refused"));
            size_t n = strlen(error);
            assert_true(n > strlen(note));
            assert_string_equal(error + n - strlen(note), note);
            assert_null(json_object_get(o, "tags"));
        } else {
            assert_true(seq % DROP_MOD != 0 && seq % SHORT_MOD != 0);
            json_int_t w = json_integer_value(json_object_get(o, "plugin_worker"));
            assert_true(w >= 0 && w < WORKERS);
            json_t *t = json_object_get(o, "tags");
            if (seq % 2 == 0) {
                assert_true(json_equal(t, want_a));
            } else {
                assert_int_equal(json_array_size(t), 16);
                assert_string_equal(json_string_value(json_array_get(t, 0)), "w01");
                assert_string_equal(json_string_value(json_array_get(t, 15)), "w16");
            }
        }
        json_decref(o);
        rows++;
    }
    fclose(fp);
    json_decref(want_a);
    assert_int_equal(rows, failed + kept);

    /* The failures are counted as the stage's, of class "stage". */
    snprintf(path, sizeof path, "%s/_metrics.prom", out);
    fp = fopen(path, "r");
    assert_non_null(fp);
    char want[128];
    snprintf(want, sizeof want,
             "sluice_rows_failed_by_class_total{stage=\"counting\",class=\"stage\"} %d", failed);
    bool found = false;
    while (fgets(line, sizeof line, fp))
        found = found || strncmp(line, want, strlen(want)) == 0;
    fclose(fp);
    assert_true(found);
    tu_rmtree(base);
}

/* The job's own stages (sl_caption_params.stages, as the job file and
 * --stage fill them): the plugin runs; an init() that fails ends the run
 * before any row, with the plugin's message. */
static void plugin_stages_of_a_job(void **state)
{
    (void)state;
    static tu_job job;
    sl_caption_params p = tu_tiny_job(&job, N);
    const char *base = job.base;
    char counts[512];
    snprintf(counts, sizeof counts, "%s/counts", base);
    mkdir(counts, 0777);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "{\"counts\": \"%s\"}", counts);
    sl_stage_spec spec = {.plugin = PLUGIN("ok"), .after = "read", .workers = 2,
                          .batch_size = 3, .config = cfg};
    p.stages = &spec;
    p.n_stages = 1;
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows_ok, N);
    assert_int_equal(check_counts(counts, 2, 3), N);

    spec.config = "{\"fail_init\": true}";
    p.overwrite = true;
    assert_int_equal(sl_caption_run(&p, &sum), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "counting: init refused on worker"));
    assert_non_null(strstr(sl_last_error(), "libtest_plugin_ok"));
    assert_int_equal(sum.rows, 0);

    spec.plugin = PLUGIN("abi999");
    assert_int_equal(sl_caption_run(&p, &sum), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "rebuild the plugin"));
    tu_rmtree(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_loader_refuses_what_it_cannot_run),
        cmocka_unit_test(plugins_in_the_pipeline),
        cmocka_unit_test(plugin_stages_of_a_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
