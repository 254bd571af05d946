/* Unit tests: sluice/pipeline.h — a program's own stages at the three places
 * of the caption pipeline (after read, after decode, after the engine), on
 * the tiny model: they run in that order around the built-in stages, each
 * with its worker count, batch size and a state per worker (init once per
 * worker, close once per worker), see what their place has (no pixels
 * before decode, no answer before the engine), may replace the answer, and
 * may drop rows: a dropped row is not written, reaches no later stage, and
 * is done for the ledger (the rerun skips it). And the assembly rules.
 * Stage functions run on worker threads: they count what is wrong, and the
 * test thread asserts the counts (cmocka's asserts are for its thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/fault.h"
#include "sluice/image.h"
#include "sluice/pipeline.h"
#include "test_util.h"

enum { N = 18, MAX_WORKERS = 4, MAGIC = 0x51a7e };

/* One place's stage: what its workers saw. */
typedef struct place {
    const char *name;
    int workers, batch_size;
    atomic_int inits[MAX_WORKERS], closes[MAX_WORKERS];
    atomic_int rows, calls, max_batch, wrong; /* wrong: a row it should not have seen as it did */
    atomic_int dropped;
    atomic_int seen[N];
    struct place *before; /* the place every row must have passed first */
    int drop_mod;         /* drop rows whose seq % 6 == drop_mod (-1: none) */
} place;

typedef struct worker_state {
    int magic, worker;
    place *pl;
    int rows;
    bool closed;
} worker_state;

static sl_status stage_init(void *config, int worker, void **state)
{
    place *pl = config;
    if (worker < 0 || worker >= pl->workers) {
        atomic_fetch_add(&pl->wrong, 1);
        return SL_ERR_INVALID_ARG;
    }
    atomic_fetch_add(&pl->inits[worker], 1);
    worker_state *ws = calloc(1, sizeof *ws);
    *ws = (worker_state){MAGIC, worker, pl, 0, false};
    *state = ws;
    return SL_OK;
}

static void stage_close(void *state, sl_exec_end end)
{
    (void)end;
    worker_state *ws = state; /* a wrong state crashes here, under ASan at once */
    if (ws->magic != MAGIC || ws->closed)
        atomic_fetch_add(&ws->pl->wrong, 1);
    ws->closed = true;
    atomic_fetch_add(&ws->pl->closes[ws->worker], 1);
    free(ws);
}

static sl_status stage_process(void *state, sl_row *const *rows, size_t n)
{
    worker_state *ws = state;
    place *pl = ws->pl;
    if (ws->magic != MAGIC)
        atomic_fetch_add(&pl->wrong, 1);
    atomic_fetch_add(&pl->calls, 1);
    int seen_max = atomic_load(&pl->max_batch);
    while ((int)n > seen_max && !atomic_compare_exchange_weak(&pl->max_batch, &seen_max, (int)n))
        ;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = sl_row_seq(rows[i]);
        if (seq >= N) {
            atomic_fetch_add(&pl->wrong, 1);
            continue;
        }
        ws->rows++;
        atomic_fetch_add(&pl->rows, 1);
        atomic_fetch_add(&pl->seen[seq], 1);
        bool decoded = sl_pipeline_row_width(rows[i]) > 0 && sl_pipeline_row_height(rows[i]) > 0;
        const char *answer = sl_pipeline_row_answer(rows[i]);
        bool ok = !sl_row_failed(rows[i]) && !sl_row_dropped(rows[i]) &&
                  sl_pipeline_row_id(rows[i]) && (!pl->before || atomic_load(&pl->before->seen[seq]));
        if (strcmp(pl->name, "pre") == 0)
            ok = ok && !decoded && !answer;
        else if (strcmp(pl->name, "mid") == 0)
            ok = ok && decoded && !answer &&
                 sl_pipeline_row_set_answer(rows[i], "x") == SL_ERR_INVALID_ARG;
        else
            ok = ok && decoded && answer;
        if (!ok)
            atomic_fetch_add(&pl->wrong, 1);
        if (strcmp(pl->name, "post") == 0 && seq % 2 == 0) {
            char tag[64];
            snprintf(tag, sizeof tag, "tag:%s", sl_pipeline_row_id(rows[i]));
            if (sl_pipeline_row_set_answer(rows[i], tag) != SL_OK)
                atomic_fetch_add(&pl->wrong, 1);
        }
        if (pl->drop_mod >= 0 && (int)(seq % 6) == pl->drop_mod) {
            /* Before the engine, a prompt the engine refuses: were the row
             * sent on, it would fail there (and count in the run's
             * failures). After it a prompt changes nothing: refused. */
            if (sl_pipeline_row_set_prompt(rows[i], "\xff") != (answer ? SL_ERR_INVALID_ARG : SL_OK))
                atomic_fetch_add(&pl->wrong, 1);
            sl_row_drop(rows[i]);
            atomic_fetch_add(&pl->dropped, 1);
        }
    }
    return SL_OK;
}

static sl_caption_progress final_progress;

static void on_progress(const sl_caption_progress *pg, void *user)
{
    (void)user;
    if (pg->final)
        final_progress = *pg;
}

/* Adds place `at`'s stage to the pipeline, where it stands now. */
static void add_place(sl_pipeline *pl, place *at)
{
    sl_pipeline_stage_params sp = sl_pipeline_stage_default_params();
    sp.name = at->name;
    sp.workers = at->workers;
    sp.batch_size = at->batch_size;
    sp.config = at;
    sp.init = stage_init;
    sp.process = stage_process;
    sp.close = stage_close;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
}

static sl_status run_with_places(const sl_caption_params *p, place *pre, place *mid, place *post,
                                 sl_caption_summary *sum)
{
    sl_pipeline *pl;
    assert_int_equal(sl_pipeline_new(p, &pl), SL_OK);
    place *at[3] = {pre, mid, post};
    for (int b = SL_PIPELINE_READ; b <= SL_PIPELINE_WRITE; b++) {
        assert_int_equal(sl_pipeline_add_builtin(pl, (sl_pipeline_builtin)b), SL_OK);
        if (b == SL_PIPELINE_WRITE)
            break;
        add_place(pl, at[b]);
    }
    sl_status st = sl_pipeline_run(pl, sum);
    sl_pipeline_free(pl);
    return st;
}

static void check_workers(const place *pl)
{
    for (int w = 0; w < MAX_WORKERS; w++) {
        assert_int_equal(atomic_load(&pl->inits[w]), w < pl->workers ? 1 : 0);
        assert_int_equal(atomic_load(&pl->closes[w]), w < pl->workers ? 1 : 0);
    }
    assert_true(atomic_load(&pl->max_batch) <= pl->batch_size);
    assert_int_equal(atomic_load(&pl->wrong), 0);
}

static void stages_at_three_places(void **state)
{
    (void)state;
    static tu_job t;
    sl_caption_params p = tu_tiny_job(&t, N);
    const char *base = t.base, *out = t.out;
    p.on_progress = on_progress;
    static place pre, mid, post;
    pre = (place){.name = "pre", .workers = 3, .batch_size = 4, .drop_mod = 1};
    mid = (place){.name = "mid", .workers = 2, .batch_size = 3, .before = &pre, .drop_mod = -1};
    post = (place){.name = "post", .workers = 2, .batch_size = 5, .before = &mid, .drop_mod = 3};
    sl_caption_summary sum;
    assert_int_equal(run_with_places(&p, &pre, &mid, &post, &sum), SL_OK);

    check_workers(&pre);
    check_workers(&mid);
    check_workers(&post);
    int dropped = 0;
    for (int seq = 0; seq < N; seq++) {
        /* every row once at each place it reaches; none past its drop */
        assert_int_equal(atomic_load(&pre.seen[seq]), 1);
        assert_int_equal(atomic_load(&mid.seen[seq]), seq % 6 == 1 ? 0 : 1);
        assert_int_equal(atomic_load(&post.seen[seq]), seq % 6 == 1 ? 0 : 1);
        dropped += seq % 6 == 1 || seq % 6 == 3;
    }
    assert_int_equal(atomic_load(&pre.dropped) + atomic_load(&post.dropped), dropped);
    assert_int_equal(sum.rows_dropped, dropped);
    assert_int_equal(sum.rows, N - dropped);
    assert_int_equal(sum.rows_failed, 0);
    assert_true(final_progress.final);
    assert_int_equal(final_progress.rows_done, N);
    assert_int_equal(final_progress.rows_failed, 0); /* no stage saw a dropped row */

    /* The output: the rows not dropped, the answers post replaced. */
    char part[600];
    snprintf(part, sizeof part, "%s/part-00000.jsonl", out);
    FILE *fp = fopen(part, "r");
    assert_non_null(fp);
    char line[8192];
    int rows = 0;
    while (fgets(line, sizeof line, fp)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        const char *id = json_string_value(json_object_get(o, "id"));
        int seq = atoi(id + 3);
        assert_true(seq % 6 != 1 && seq % 6 != 3);
        if (seq % 2 == 0) {
            char tag[64];
            snprintf(tag, sizeof tag, "tag:%s", id);
            assert_string_equal(json_string_value(json_object_get(o, "caption")), tag);
        }
        json_decref(o);
        rows++;
    }
    fclose(fp);
    assert_int_equal(rows, N - dropped);

    /* The rerun: every input is done, the dropped ones too. */
    place pre2 = {.name = "pre", .workers = 1, .batch_size = 1, .drop_mod = -1};
    place mid2 = {.name = "mid", .workers = 1, .batch_size = 1, .drop_mod = -1};
    place post2 = {.name = "post", .workers = 1, .batch_size = 1, .drop_mod = -1};
    assert_int_equal(run_with_places(&p, &pre2, &mid2, &post2, &sum), SL_OK);
    assert_int_equal(sum.rows_skipped, N);
    assert_int_equal(sum.rows, 0);
    assert_int_equal(atomic_load(&pre2.rows), 0);
    check_workers(&pre2);
    tu_rmtree(base);
}

static sl_status nop_process(void *state, sl_row *const *rows, size_t n)
{
    (void)state, (void)rows, (void)n;
    return SL_OK;
}

static void assembly_rules(void **state)
{
    (void)state;
    sl_caption_params p = sl_caption_default_params();
    sl_pipeline *pl;
    sl_caption_summary sum;
    assert_int_equal(sl_pipeline_new(&p, &pl), SL_OK);
    sl_pipeline_stage_params sp = sl_pipeline_stage_default_params();
    assert_int_equal(sp.workers, 1);
    assert_int_equal(sp.batch_size, 16);
    sp.name = "mine";
    sp.process = nop_process;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG); /* before read */
    assert_non_null(strstr(sl_last_error(), "after read"));
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_DECODE), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "in that order"));
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_READ), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_READ), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG); /* name taken */
    sp.name = "decode";
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG);
    /* A name that is not UTF-8 (a Latin-1 'é'): refused here, naming the
     * rule. Taken, the run failed at its start with SL_ERR_NOMEM and "metric
     * sluice_stage_rows_in_total: value of label stage is not valid UTF-8". */
    sp.name = "caf\xe9";
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "is not UTF-8"));
    sp.name = "other";
    sp.process = NULL;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG);
    sp.process = nop_process;
    sp.batch_size = 0;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG);
    assert_int_equal(sl_pipeline_run(pl, &sum), SL_ERR_INVALID_ARG); /* no decode yet */
    assert_non_null(strstr(sl_last_error(), "no decode stage"));
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_DECODE), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_ENGINE), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_WRITE), SL_OK);
    sp.batch_size = 1;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG); /* after write */
    /* Assembled: the job's own checks come next (here: no input). */
    assert_int_equal(sl_pipeline_run(pl, &sum), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "no input"));
    assert_int_equal(sl_pipeline_run(pl, &sum), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "runs once"));
    sl_pipeline_free(pl);
    sl_pipeline_free(NULL);
}

/* --- what a stage sees of a row: bytes, format, grey pixels, columns --------- */

typedef struct row_checks {
    atomic_int bytes_ok, bytes_bad, gray_ok, gray_bad, cols_ok, cols_bad, rows;
} row_checks;

static row_checks rc;

/* After read: the file's bytes and format, read here (decode reuses them). */
static sl_status look_at_bytes(void *state, sl_row *const *rows, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = NULL;
        size_t len = 0;
        bool ok = sl_pipeline_row_image_format(rows[i]) == NULL && /* not read yet */
                  sl_pipeline_row_image_bytes(rows[i], &b, &len) == SL_OK && b && len > 3 &&
                  b[0] == 0xFF && b[1] == 0xD8 &&
                  strcmp(sl_pipeline_row_image_format(rows[i]), "jpeg") == 0 &&
                  sl_pipeline_row_gray(rows[i], 2, 1, (uint8_t[2]){0}) == SL_ERR_INVALID_ARG;
        atomic_fetch_add(ok ? &rc.bytes_ok : &rc.bytes_bad, 1);
        char text[32];
        snprintf(text, sizeof text, "%zu", len);
        if (sl_pipeline_row_set_column_json(rows[i], "file_bytes", text) != SL_OK)
            atomic_fetch_add(&rc.cols_bad, 1);
    }
    return SL_OK;
}

/* After decode: the left half is black, the right half white. */
static sl_status look_at_pixels(void *state, sl_row *const *rows, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        uint8_t g[4 * 2];
        bool ok = sl_pipeline_row_gray(rows[i], 4, 2, g) == SL_OK;
        for (int y = 0; ok && y < 2; y++)
            for (int x = 0; x < 4; x++)
                ok = ok && (x < 2 ? g[y * 4 + x] <= 4 : g[y * 4 + x] >= 251);
        ok = ok && sl_pipeline_row_gray(rows[i], 0, 2, g) == SL_ERR_INVALID_ARG &&
             sl_pipeline_row_gray(rows[i], 257, 2, g) == SL_ERR_INVALID_ARG;
        /* the bytes were given back after decode; the format stays */
        const uint8_t *b;
        size_t len;
        ok = ok && sl_pipeline_row_image_bytes(rows[i], &b, &len) == SL_OK && !b && !len &&
             strcmp(sl_pipeline_row_image_format(rows[i]), "jpeg") == 0;
        atomic_fetch_add(ok ? &rc.gray_ok : &rc.gray_bad, 1);
    }
    return SL_OK;
}

/* After the engine: columns read back, set, replaced and removed. */
static sl_status look_at_columns(void *state, sl_row *const *rows, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        sl_row *r = rows[i];
        char *v = sl_pipeline_row_column_json(r, "file_bytes");
        bool ok = v && atoi(v) > 100;
        sl_pipeline_text_free(v);
        ok = ok && sl_pipeline_row_set_column_string(r, "label", "a \"quoted\" label") == SL_OK &&
             strcmp(sl_pipeline_row_column_string(r, "label"), "a \"quoted\" label") == 0 &&
             sl_pipeline_row_set_column_json(r, "tags", "[\"x\", 2]") == SL_OK &&
             sl_pipeline_row_set_column_json(r, "scratch", "1") == SL_OK &&
             sl_pipeline_row_set_column_json(r, "scratch", NULL) == SL_OK &&
             !sl_pipeline_row_column_json(r, "scratch") &&
             sl_pipeline_row_column_string(r, "tags") == NULL && /* not a string */
             sl_pipeline_row_set_column_json(r, "bad", "{not json") == SL_ERR_INVALID_ARG &&
             /* said in a user's words, not as jansson's JSON_ALLOW_NUL flag */
             sl_pipeline_row_set_column_json(r, "nul", "\"a\\u0000b\"") == SL_ERR_INVALID_ARG &&
             strstr(sl_last_error(), "a string holds \\u0000 (NUL)") &&
             sl_pipeline_row_set_column_string(r, "caption", "x") == SL_ERR_INVALID_ARG &&
             sl_pipeline_row_set_column_string(r, "timings", "x") == SL_ERR_INVALID_ARG &&
             sl_pipeline_row_set_column_string(r, "", "x") == SL_ERR_INVALID_ARG;
        char *all = sl_pipeline_row_columns_json(r);
        json_t *o = all ? json_loads(all, 0, NULL) : NULL;
        ok = ok && o && json_object_size(o) == 3 && json_is_array(json_object_get(o, "tags"));
        json_decref(o);
        sl_pipeline_text_free(all);
        atomic_fetch_add(ok ? &rc.cols_ok : &rc.cols_bad, 1);
        atomic_fetch_add(&rc.rows, 1);
    }
    return SL_OK;
}

static void write_half_black_jpeg(const char *dir, const char *name)
{
    enum { W = 64, H = 32 };
    static uint8_t rgb[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memset(rgb + (y * W + x) * 3, x < W / 2 ? 0 : 255, 3);
    sl_image *img;
    assert_int_equal(sl_image_from_rgb(W, H, rgb, &img), SL_OK);
    uint8_t *jpeg;
    size_t len;
    assert_int_equal(sl_image_encode_jpeg(img, 0, 95, &jpeg, &len), SL_OK);
    tu_write(dir, name, jpeg, len);
    sl_image_buffer_free(jpeg);
    sl_image_free(img);
}

static void what_a_stage_sees_of_a_row(void **state)
{
    (void)state;
    static tu_job t;
    sl_caption_params p = tu_tiny_job(&t, 0);
    const char *base = t.base, *out = t.out;
    enum { ROWS = 3 };
    for (int i = 0; i < ROWS; i++) {
        char name[32];
        snprintf(name, sizeof name, "half%d.jpg", i);
        write_half_black_jpeg(t.in, name);
    }
    sl_pipeline *pl;
    assert_int_equal(sl_pipeline_new(&p, &pl), SL_OK);
    sl_status (*fns[3])(void *, sl_row *const *, size_t) = {look_at_bytes, look_at_pixels,
                                                             look_at_columns};
    const char *names[3] = {"bytes", "pixels", "columns"};
    for (int b = SL_PIPELINE_READ; b <= SL_PIPELINE_WRITE; b++) {
        assert_int_equal(sl_pipeline_add_builtin(pl, (sl_pipeline_builtin)b), SL_OK);
        if (b == SL_PIPELINE_WRITE)
            break;
        sl_pipeline_stage_params sp = sl_pipeline_stage_default_params();
        sp.name = names[b];
        sp.process = fns[b];
        assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
    }
    sl_caption_summary sum;
    assert_int_equal(sl_pipeline_run(pl, &sum), SL_OK);
    sl_pipeline_free(pl);
    assert_int_equal(atomic_load(&rc.bytes_ok), ROWS);
    assert_int_equal(atomic_load(&rc.gray_ok), ROWS);
    assert_int_equal(atomic_load(&rc.cols_ok), ROWS);
    assert_int_equal(atomic_load(&rc.bytes_bad) + atomic_load(&rc.gray_bad) +
                         atomic_load(&rc.cols_bad), 0);
    assert_int_equal(sum.rows_ok, ROWS);

    /* The columns the stages set are written like an input's. */
    char part[600];
    snprintf(part, sizeof part, "%s/part-00000.jsonl", out);
    FILE *fp = fopen(part, "r");
    assert_non_null(fp);
    char line[8192];
    int rows = 0;
    while (fgets(line, sizeof line, fp)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        assert_true(json_integer_value(json_object_get(o, "file_bytes")) > 100);
        assert_string_equal(json_string_value(json_object_get(o, "label")), "a \"quoted\" label");
        assert_int_equal(json_array_size(json_object_get(o, "tags")), 2);
        assert_null(json_object_get(o, "scratch"));
        json_decref(o);
        rows++;
    }
    fclose(fp);
    assert_int_equal(rows, ROWS);
    tu_rmtree(base);
}

static void a_stage_cannot_declare_our_fields(void **state)
{
    (void)state;
    sl_caption_params p = sl_caption_default_params();
    sl_pipeline *pl;
    assert_int_equal(sl_pipeline_new(&p, &pl), SL_OK);
    assert_int_equal(sl_pipeline_add_builtin(pl, SL_PIPELINE_READ), SL_OK);
    sl_pipeline_stage_params sp = sl_pipeline_stage_default_params();
    sp.name = "mine";
    sp.process = nop_process;
    const char *cols[] = {"tags", "caption"};
    sp.columns = cols;
    sp.n_columns = 2;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'caption'"));
    sp.n_columns = 1;
    assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
    sl_pipeline_free(pl);
}

/* --- fan-out: copies of rows, written once across a failed run --------------- */

static sl_status fan_out(void *state, sl_row *const *rows, size_t n)
{
    atomic_int *wrong = state;
    for (size_t i = 0; i < n; i++) {
        int seq = atoi(sl_pipeline_row_id(rows[i]) + 3);
        int copies = seq % 3 == 0 ? 2 : seq % 3 == 1 ? 1 : 0;
        for (int k = 1; k <= copies; k++) {
            sl_row *c;
            if (sl_pipeline_row_emit(rows[i], &c) != SL_OK) {
                atomic_fetch_add(wrong, 1);
                continue;
            }
            char want[32], value[16];
            snprintf(want, sizeof want, "img%02d.jpg#%d", seq, k);
            snprintf(value, sizeof value, "%d", k);
            if (strcmp(sl_pipeline_row_id(c), want) != 0 ||
                strcmp(sl_pipeline_row_answer(c), sl_pipeline_row_answer(rows[i])) != 0 ||
                sl_pipeline_row_set_column_json(c, "copy", value) != SL_OK)
                atomic_fetch_add(wrong, 1);
        }
        if (seq % 3 == 0)
            sl_row_drop(rows[i]);
    }
    sl_row *none;
    if (n && sl_row_dropped(rows[0]) &&
        sl_pipeline_row_emit(rows[0], &none) != SL_ERR_INVALID_ARG)
        atomic_fetch_add(wrong, 1); /* a dropped row has no copies */
    return SL_OK;
}

static sl_status run_fan(const sl_caption_params *p, atomic_int *wrong, sl_caption_summary *sum)
{
    sl_pipeline *pl;
    assert_int_equal(sl_pipeline_new(p, &pl), SL_OK);
    for (int b = SL_PIPELINE_READ; b <= SL_PIPELINE_WRITE; b++) {
        assert_int_equal(sl_pipeline_add_builtin(pl, (sl_pipeline_builtin)b), SL_OK);
        if (b == SL_PIPELINE_ENGINE) {
            sl_pipeline_stage_params sp = sl_pipeline_stage_default_params();
            sp.name = "fan";
            sp.workers = 2;
            sp.batch_size = 3;
            sp.config = wrong;
            sp.process = fan_out;
            assert_int_equal(sl_pipeline_add_stage(pl, &sp), SL_OK);
        }
    }
    sl_status st = sl_pipeline_run(pl, sum);
    sl_pipeline_free(pl);
    return st;
}

#include <glob.h>

static void copies_are_written_once_across_a_failed_run(void **state)
{
    (void)state;
    static tu_job t;
    sl_caption_params p = tu_tiny_job(&t, N);
    const char *base = t.base, *out = t.out;
    p.shard_rows = 1; /* every row its own part: a group spans parts */
    static atomic_int wrong;
    sl_caption_summary sum;
    /* The 9th part's commit fails: the run ends with groups half committed. */
    assert_int_equal(sl_fault_configure("commit.begin=eio@9"), 0);
    assert_int_not_equal(run_fan(&p, &wrong, &sum), SL_OK);
    assert_int_equal(sl_fault_configure(NULL), 0);
    assert_int_equal(run_fan(&p, &wrong, &sum), SL_OK);
    assert_true(sum.rows_skipped > 0);
    assert_int_equal(atomic_load(&wrong), 0);

    /* Every row expected, once, across all parts. */
    int seen[N][3] = {{0}};
    char pattern[600];
    snprintf(pattern, sizeof pattern, "%s/part-*.jsonl", out);
    glob_t g;
    assert_int_equal(glob(pattern, 0, NULL, &g), 0);
    for (size_t f = 0; f < g.gl_pathc; f++) {
        FILE *fp = fopen(g.gl_pathv[f], "r");
        assert_non_null(fp);
        char line[8192];
        while (fgets(line, sizeof line, fp)) {
            json_t *o = json_loads(line, 0, NULL);
            assert_non_null(o);
            const char *id = json_string_value(json_object_get(o, "id"));
            int seq = atoi(id + 3);
            const char *hash = strchr(id, '#');
            int copy = hash ? atoi(hash + 1) : 0;
            assert_true(seq >= 0 && seq < N && copy >= 0 && copy < 3);
            assert_int_equal(json_integer_value(json_object_get(o, "copy")), copy);
            seen[seq][copy]++;
            json_decref(o);
        }
        fclose(fp);
    }
    globfree(&g);
    for (int seq = 0; seq < N; seq++)
        for (int copy = 0; copy < 3; copy++) {
            int want = seq % 3 == 0 ? copy > 0 : seq % 3 == 1 ? copy < 2 : copy == 0;
            if (seen[seq][copy] != want)
                fail_msg("img%02d copy %d written %d times, want %d", seq, copy, seen[seq][copy],
                         want);
        }
    /* And the next run has nothing left to do. */
    assert_int_equal(run_fan(&p, &wrong, &sum), SL_OK);
    assert_int_equal(sum.rows_skipped, N);
    assert_int_equal(sum.rows, 0);
    tu_rmtree(base);
}

/* A dry run (params.dry_run): no model is given and none is opened; the
 * caller's stages after decode see decoded rows with no answer, a stage
 * after the engine is refused by name before anything runs, and every
 * input is a row without an answer whose format and input_bytes are the
 * file's, summed in the summary. */
static void a_dry_run_has_no_engine(void **state)
{
    (void)state;
    static tu_job t;
    sl_caption_params p = tu_tiny_job(&t, N);
    p.llama.model_path = p.llama.mmproj_path = NULL;
    p.dry_run = true;
    static place pre, mid, post;
    pre = (place){.name = "pre", .workers = 1, .batch_size = 4, .drop_mod = -1};
    mid = (place){.name = "mid", .workers = 2, .batch_size = 3, .before = &pre, .drop_mod = -1};
    post = (place){.name = "post", .workers = 1, .batch_size = 5, .before = &mid, .drop_mod = -1};
    sl_caption_summary sum;
    assert_int_equal(run_with_places(&p, &pre, &mid, &post, &sum), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "'post'"));
    assert_int_equal(atomic_load(&pre.rows), 0);
    assert_false(tu_exists(t.out)); /* refused before the output was made */

    sl_pipeline *pl;
    assert_int_equal(sl_pipeline_new(&p, &pl), SL_OK);
    place *at[2] = {&pre, &mid};
    for (int b = SL_PIPELINE_READ; b <= SL_PIPELINE_WRITE; b++) {
        assert_int_equal(sl_pipeline_add_builtin(pl, (sl_pipeline_builtin)b), SL_OK);
        if (b <= SL_PIPELINE_DECODE)
            add_place(pl, at[b]);
    }
    assert_int_equal(sl_pipeline_run(pl, &sum), SL_OK);
    sl_pipeline_free(pl);
    check_workers(&pre);
    check_workers(&mid);
    for (int seq = 0; seq < N; seq++)
        assert_int_equal(atomic_load(&mid.seen[seq]), 1);
    assert_true(sum.dry_run);
    assert_int_equal(sum.rows, N);
    assert_int_equal(sum.rows_ok, N);
    assert_int_equal(sum.generated_tokens, 0);
    assert_string_equal(sum.model_name, "");
    assert_true(sum.engine_busy_s == 0.0);

    /* The rows: each file's size, from the file system. */
    char path[700], line[8192];
    uint64_t total = 0;
    snprintf(path, sizeof path, "%s/part-00000.jsonl", t.out);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    int rows = 0;
    while (fgets(line, sizeof line, fp)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", t.in, json_string_value(json_object_get(o, "id")));
        assert_int_equal(stat(path, &sb), 0);
        assert_true(json_is_null(json_object_get(o, "caption")));
        assert_string_equal(json_string_value(json_object_get(o, "format")), "jpeg");
        assert_int_equal(json_integer_value(json_object_get(o, "input_bytes")), sb.st_size);
        assert_null(json_object_get(o, "jpeg_bytes")); /* not an HTTP engine */
        assert_true(json_integer_value(json_object_get(o, "width")) > 0);
        total += (uint64_t)sb.st_size;
        json_decref(o);
        rows++;
    }
    fclose(fp);
    assert_int_equal(rows, N);
    assert_int_equal(sum.input_bytes, total);
    tu_rmtree(t.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(assembly_rules),
        cmocka_unit_test(stages_at_three_places),
        cmocka_unit_test(what_a_stage_sees_of_a_row),
        cmocka_unit_test(a_stage_cannot_declare_our_fields),
        cmocka_unit_test(copies_are_written_once_across_a_failed_run),
        cmocka_unit_test(a_dry_run_has_no_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
