/* Unit tests: user stages in Lua (src/stage/lua_stage.c, docs/stages.md),
 * through sl_caption_params.stages on the tiny model: init() once per worker
 * with the config as a table and close() once per worker with the state
 * init() made (each worker writes its count to a file of its own); rows
 * dropped by returning nil (done for the rerun); a Lua error or a wrong
 * return fails only that row, with its script:line, the stage's name and the
 * class "stage"; what a script sees of a row at each place (id, path, image
 * format, bytes, size, grey pixels, prompt, answer, columns to and from
 * JSON) and that a row kept past its call is an error, not a crash; fan-out
 * with sluice.copy() (copies written as rows of their own, "<id>#k", only
 * those returned; the rerun writes nothing); scripts that cannot work refused before the run
 * (file:line); calls past the stage's time_limit stopped. And the cost of
 * a no-op script per row (printed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/fault.h"
#include "core/row.h"
#include "sluice/pipeline.h"
#include "stage/stage.h"
#include "test_util.h"

enum { N = 12 };

static tu_job t;
static sl_caption_params t_params; /* tu_tiny_job's, made by setup_dirs() */
static char *base = t.base, *in = t.in, *out = t.out;

static void setup_dirs(void)
{
    t_params = tu_tiny_job(&t, N);
}

static const char *script(const char *name, const char *text)
{
    static char path[8][700];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 700, "%s/%s", base, name);
    tu_write(base, name, text, strlen(text));
    return p;
}

static sl_caption_params job(const sl_stage_spec *stages, int n)
{
    sl_caption_params p = t_params;
    p.sampling.max_tokens = 2;
    p.stages = stages;
    p.n_stages = n;
    return p;
}

/* The output rows by id (a JSON object of id -> row). */
static json_t *read_output(void)
{
    json_t *rows = json_object();
    char part[700];
    snprintf(part, sizeof part, "%s/part-00000.jsonl", out);
    FILE *fp = fopen(part, "r");
    if (!fp)
        return rows;
    char line[16384];
    while (fgets(line, sizeof line, fp)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        json_object_set_new(rows, json_string_value(json_object_get(o, "id")), o);
    }
    fclose(fp);
    return rows;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

/* --- state per worker, close once per worker ------------------------------------ */

static const char state_lua[] =
    "local count, me, dir\n"
    "function init(config, worker)\n"
    "  assert(config.nested.list[3] == 30 and config.nested.flag == true, 'config lost')\n"
    "  assert(config.nothing == sluice.null, 'null is sluice.null')\n"
    "  count, me, dir = 0, worker, config.dir\n"
    "end\n"
    "function process(row)\n"
    "  count = count + 1\n"
    "  row.columns.worker = me\n"
    "  row.columns.nth = count\n"
    "  return row\n"
    "end\n"
    "function close(how)\n"
    "  local f = assert(io.open(dir .. '/close-' .. me, 'a'))\n"
    "  f:write(count, ' ', how, '\\n')\n"
    "  f:close()\n"
    "end\n";

static void state_per_worker(void **state)
{
    (void)state;
    setup_dirs();
    char config[800];
    snprintf(config, sizeof config,
             "{\"dir\": \"%s\", \"nested\": {\"list\": [10, 20, 30], \"flag\": true}, "
             "\"nothing\": null}", base);
    sl_stage_spec spec = {.lua = script("count.lua", state_lua), .workers = 3, .batch_size = 2,
                          .config = config};
    sl_caption_params p = job(&spec, 1);
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows, N);
    assert_int_equal(sum.rows_failed, 0);

    /* close() once per worker, with the count its own state kept. */
    int total = 0, seen_by[3] = {0};
    for (int w = 0; w < 3; w++) {
        char path[700];
        snprintf(path, sizeof path, "%s/close-%d", base, w);
        char *text = slurp(path);
        assert_non_null(text);
        int count = -1;
        char how[32] = "";
        assert_int_equal(sscanf(text, "%d %31s", &count, how), 2);
        assert_string_equal(how, "complete");
        assert_non_null(strchr(text, '\n'));
        assert_string_equal(strchr(text, '\n') + 1, ""); /* one line: closed once */
        total += count;
        seen_by[w] = count;
    }
    assert_int_equal(total, N);

    /* Each row carries its worker and that worker's running count: per
     * worker, the counts are 1..n exactly. */
    json_t *rows = read_output();
    assert_int_equal(json_object_size(rows), N);
    int nth_seen[3][N + 1] = {{0}};
    const char *id;
    json_t *o;
    json_object_foreach(rows, id, o) {
        json_int_t w = json_integer_value(json_object_get(o, "worker"));
        json_int_t nth = json_integer_value(json_object_get(o, "nth"));
        assert_true(w >= 0 && w < 3 && nth >= 1 && nth <= N);
        nth_seen[w][nth]++;
    }
    for (int w = 0; w < 3; w++)
        for (int k = 1; k <= N; k++)
            assert_int_equal(nth_seen[w][k], k <= seen_by[w] ? 1 : 0);
    json_decref(rows);
    tu_rmtree(base);
}

/* close() also when the run fails: every row fails, the run stops past
 * max_failed (judged after 20 rows), and each worker is closed once, told
 * why: "failed", or "complete" for a worker that ran out of rows before
 * (the rows take 10 ms each, so at least one cannot have). */
static const char failing_lua[] =
    "local me, dir\n"
    "function init(config, worker) me, dir = worker, config.dir end\n"
    "function process(row)\n"
    "  local t = os.clock()\n"
    "  while os.clock() - t < 0.01 do end\n"
    "  error('always')\n"
    "end\n"
    "function close(how)\n"
    "  local f = assert(io.open(dir .. '/close-' .. me, 'a'))\n"
    "  f:write(how, '\\n')\n"
    "  f:close()\n"
    "end\n";

static void close_when_the_run_fails(void **state)
{
    (void)state;
    setup_dirs();
    char src[700];
    snprintf(src, sizeof src, "%s/img00.jpg", in);
    FILE *fp = fopen(src, "rb");
    assert_non_null(fp);
    static unsigned char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    for (int i = N; i < 60; i++) { /* past the rows max_failed waits for */
        char name[32];
        snprintf(name, sizeof name, "img%02d.jpg", i);
        tu_write(in, name, buf, len);
    }
    char config[600];
    snprintf(config, sizeof config, "{\"dir\": \"%s\"}", base);
    sl_stage_spec spec = {.lua = script("failing.lua", failing_lua), .after = "read",
                          .workers = 2, .batch_size = 1, .config = config};
    sl_caption_params p = job(&spec, 1);
    p.max_failed = 0.1;
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_ERR_TOO_MANY_FAILED);
    int failed = 0;
    for (int w = 0; w < 2; w++) {
        char path[700];
        snprintf(path, sizeof path, "%s/close-%d", base, w);
        char *text = slurp(path);
        assert_non_null(text);
        if (strcmp(text, "failed\n") == 0)
            failed++;
        else
            assert_string_equal(text, "complete\n"); /* one line: closed once */
    }
    assert_true(failed >= 1);
    tu_rmtree(base);
}

/* --- filter ------------------------------------------------------------------------ */

static const char filter_lua[] =
    "function process(row)\n"
    "  local k = tonumber(row.id:match('img(%d+)'))\n"
    "  if k % 3 == 0 then return nil end\n"
    "  if k % 3 == 1 then return {row} end\n"
    "  return row\n"
    "end\n";

static void filter_drops(void **state)
{
    (void)state;
    setup_dirs();
    sl_stage_spec spec = {.lua = script("filter.lua", filter_lua), .after = "read",
                          .workers = 2, .batch_size = 3};
    sl_caption_params p = job(&spec, 1);
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows_dropped, N / 3);
    assert_int_equal(sum.rows, N - N / 3);
    json_t *rows = read_output();
    assert_int_equal(json_object_size(rows), N - N / 3);
    for (int k = 0; k < N; k++) {
        char id[32];
        snprintf(id, sizeof id, "img%02d.jpg", k);
        assert_int_equal(json_object_get(rows, id) != NULL, k % 3 != 0);
    }
    json_decref(rows);
    /* The rerun: the dropped rows are done too. */
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows_skipped, N);
    assert_int_equal(sum.rows, 0);
    tu_rmtree(base);
}

/* --- errors --------------------------------------------------------------------------- */

static const char errors_lua[] =
    "local function check(row)\n"
    "  if row.id == 'img03.jpg' then error('no thanks: ' .. row.id) end\n"
    "end\n"
    "function process(row)\n"
    "  check(row)\n"
    "  if row.id == 'img05.jpg' then return 42 end\n"
    "  if row.id == 'img07.jpg' then row.columns.bad = function() end end\n"
    "  if row.id == 'img08.jpg' then return {row, 'x'} end\n"
    "  if row.id == 'img09.jpg' then row.columns.deep = {1, {a = {2, print}}} end\n"
    "  if row.id == 'img01.jpg' then row.columns.ratio = {0 / 0} end\n"
    "  if row.id == 'img02.jpg' then row.columns.low = -math.huge end\n"
    "  row.columns.ok = true\n"
    "  return row\n"
    "end\n";

static void errors_fail_rows(void **state)
{
    (void)state;
    setup_dirs();
    sl_stage_spec spec = {.name = "checker", .lua = script("errors.lua", errors_lua),
                          .after = "engine"};
    sl_caption_params p = job(&spec, 1);
    p.metrics_addr = NULL;
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK); /* the run goes on */
    assert_int_equal(sum.rows_failed, 7);
    assert_int_equal(sum.rows, N);
    json_t *rows = read_output();
    const char *id;
    json_t *o;
    json_object_foreach(rows, id, o) {
        const char *err = json_string_value(json_object_get(o, "error"));
        const char *where = json_string_value(json_object_get(o, "error_stage"));
        if (strcmp(id, "img03.jpg") == 0) {
            /* the error where it was raised; the traceback is the log's */
            assert_non_null(strstr(err, "errors.lua:2: no thanks: img03.jpg"));
            assert_null(strstr(err, "stack traceback:"));
        } else if (strcmp(id, "img05.jpg") == 0) {
            assert_non_null(strstr(err, "returned a number"));
        } else if (strcmp(id, "img07.jpg") == 0) {
            assert_non_null(strstr(err, "a function has no JSON"));
        } else if (strcmp(id, "img09.jpg") == 0) { /* what was built is freed (ASan) */
            assert_non_null(strstr(err, "a function has no JSON"));
        } else if (strcmp(id, "img01.jpg") == 0 || strcmp(id, "img02.jpg") == 0) {
            if (!strstr(err, id[4] == '1' ? "NaN has no JSON" : "-infinity has no JSON"))
                fail_msg("%s", err);
        } else if (strcmp(id, "img08.jpg") == 0) {
            if (!strstr(err, "a list with a string at [2]"))
                fail_msg("%s", err);
        } else {
            assert_null(err);
            assert_true(json_is_true(json_object_get(o, "ok")));
            continue;
        }
        assert_string_equal(where, "checker");
        assert_null(json_object_get(o, "ok"));
    }
    json_decref(rows);
    /* The class is "stage" (_metrics.prom: failed rows by stage and class). */
    char prom[700];
    snprintf(prom, sizeof prom, "%s/_metrics.prom", out);
    char *text = slurp(prom);
    assert_non_null(text);
    assert_non_null(strstr(text, "sluice_rows_failed_by_class_total{stage=\"checker\","
                                     "class=\"stage\"} 7"));
    tu_rmtree(base);
}

/* --- what a script sees of a row ------------------------------------------------------ */

static const char pre_lua[] =
    "function process(row)\n"
    "  assert(row.image.format == nil and row.image.width == nil, 'nothing seen yet')\n"
    "  local b = row.image.bytes\n"
    "  assert(b:byte(1) == 0xFF and b:byte(2) == 0xD8, 'a JPEG')\n"
    "  assert(row.image.format == 'jpeg')\n"
    "  assert(row.path:match('/in/' .. row.id .. '$'), row.path)\n"
    "  assert(row.answer == nil and row.prompt == nil)\n"
    "  assert(not pcall(function() row.answer = 'x' end), 'no answer before the engine')\n"
    "  assert(not pcall(function() row.gray(row, 2, 2) end), 'no pixels before decode')\n"
    "  row.prompt = 'Describe ' .. row.id\n"
    "  row.columns.file_bytes = #b\n"
    "  row.columns.meta = {size = #b, tags = {'a', 'b'}, empty = {}, obj = sluice.object()}\n"
    "  row.columns.scratch = 1\n"
    "  row.columns.scratch = nil\n"
    "  return row\n"
    "end\n";

static const char mid_lua[] =
    "local kept\n"
    "function process(row)\n"
    "  local ok, err = true, ''\n"
    "  if kept then ok, err = pcall(function() return kept.id end) end\n"
    "  row.columns.stale = kept ~= nil and not ok and err:find('after its process%(%) call') ~= nil\n"
    "  kept = row\n"
    "  local g = row:gray(9, 8)\n"
    "  assert(#g == 72 and type(g) == 'string')\n"
    "  assert(row.image.width > 0 and row.image.height > 0)\n"
    "  assert(row.columns.meta.tags[2] == 'b' and row.columns.meta.size == row.columns.file_bytes)\n"
    "  assert(row.columns.scratch == nil)\n"
    "  local n = 0\n"
    "  for k, v in pairs(row.columns) do n = n + 1 end\n"
    "  row.columns.count = n\n"
    "  assert(not pcall(function() row.image.width = 3 end))\n"
    "  assert(not pcall(function() row.id = 'x' end))\n"
    "  assert(not pcall(function() return row.nosuch end))\n"
    "  row.columns.gray0 = g:byte(1)\n"
    "  return row\n"
    "end\n";

static const char post_lua[] =
    "function process(row)\n"
    "  assert(row.answer ~= nil, 'an answer after the engine')\n"
    "  row.answer = '[' .. row.answer .. ']'\n"
    "  row.columns.json = sluice.to_json({1, 2.5, 'x', 19.99, 0.1})\n"
    "  row.columns.back = sluice.from_json('{\"k\": [true, null]}')\n"
    "  return row\n"
    "end\n";

static void row_seen_by_script(void **state)
{
    (void)state;
    setup_dirs();
    sl_stage_spec specs[3] = {
        {.name = "pre", .lua = script("pre.lua", pre_lua), .after = "read", .batch_size = 5},
        {.name = "mid", .lua = script("mid.lua", mid_lua), .after = "decode", .batch_size = 4},
        {.name = "post", .lua = script("post.lua", post_lua), .after = "engine"},
    };
    sl_caption_params p = job(specs, 3);
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    json_t *rows = read_output();
    assert_int_equal(json_object_size(rows), N);
    const char *id;
    json_t *o;
    int stale = 0;
    json_object_foreach(rows, id, o) {
        if (json_string_value(json_object_get(o, "error")))
            fail_msg("%s: %s", id, json_string_value(json_object_get(o, "error")));
        assert_true(json_integer_value(json_object_get(o, "file_bytes")) > 1000);
        json_t *meta = json_object_get(o, "meta");
        assert_true(json_is_array(json_object_get(meta, "tags")));
        assert_true(json_is_array(json_object_get(meta, "empty")));
        assert_true(json_is_object(json_object_get(meta, "obj")));
        assert_null(json_object_get(o, "scratch"));
        /* file_bytes, meta and stale (scratch removed) */
        assert_int_equal(json_integer_value(json_object_get(o, "count")), 3);
        stale += json_is_true(json_object_get(o, "stale"));
        assert_true(json_is_integer(json_object_get(o, "gray0")));
        const char *caption = json_string_value(json_object_get(o, "caption"));
        assert_true(caption[0] == '[' && caption[strlen(caption) - 1] == ']');
        /* reals as their shortest text, as every JSON sluice writes (json_dumps's
         * 17 digits wrote 19.989999999999998) */
        assert_string_equal(json_string_value(json_object_get(o, "json")),
                            "[1,2.5,\"x\",19.99,0.1]");
        json_t *back = json_object_get(json_object_get(o, "back"), "k");
        assert_true(json_is_true(json_array_get(back, 0)) && json_is_null(json_array_get(back, 1)));
    }
    assert_int_equal(stale, N - 1); /* every row but the first met the row before it */
    json_decref(rows);
    tu_rmtree(base);
}

/* --- fan-out ---------------------------------------------------------------------------- */

static const char fanout_lua[] =
    "function process(row)\n"
    "  local k = tonumber(row.id:match('img(%d+)'))\n"
    "  row.columns.origin = row.id\n"
    "  if k % 4 == 0 then return row end\n"
    "  local a, b = sluice.copy(row), sluice.copy(row)\n"
    "  assert(a.id == row.id .. '#1' and b.id == row.id .. '#2' and a.columns.origin == row.id)\n"
    "  a.columns.part, b.columns.part = 'a', 'b'\n"
    "  if k % 4 == 1 then return {row, a, b} end\n"
    "  if k % 4 == 2 then return {a} end\n"
    "  return {}\n"
    "end\n";

static void fan_out(void **state)
{
    (void)state;
    setup_dirs();
    sl_stage_spec spec = {.lua = script("fanout.lua", fanout_lua), .after = "decode"};
    sl_caption_params p = job(&spec, 1);
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    json_t *rows = read_output();
    assert_int_equal(sum.rows_failed, 0);
    /* k%4==0: the row; 1: the row and two copies; 2: one copy; 3: nothing. */
    for (int k = 0; k < N; k++) {
        char id[32], c1[40], c2[40];
        snprintf(id, sizeof id, "img%02d.jpg", k);
        snprintf(c1, sizeof c1, "%s#1", id);
        snprintf(c2, sizeof c2, "%s#2", id);
        assert_int_equal(json_object_get(rows, id) != NULL, k % 4 <= 1);
        assert_int_equal(json_object_get(rows, c1) != NULL, k % 4 == 1 || k % 4 == 2);
        assert_int_equal(json_object_get(rows, c2) != NULL, k % 4 == 1);
        json_t *copy = json_object_get(rows, k % 4 == 1 ? c2 : c1);
        if (k % 4 == 1 || k % 4 == 2) { /* a copy of its parent, changed on its own */
            assert_string_equal(json_string_value(json_object_get(copy, "part")),
                                k % 4 == 1 ? "b" : "a");
            assert_string_equal(json_string_value(json_object_get(copy, "origin")), id);
            assert_non_null(json_string_value(json_object_get(copy, "caption")));
        }
        if (k % 4 == 1) /* the parent was not changed by its copies */
            assert_null(json_object_get(json_object_get(rows, id), "part"));
    }
    json_decref(rows);
    assert_int_equal(sl_caption_run(&p, &sum), SL_OK);
    assert_int_equal(sum.rows, 0); /* every input done, those that made only copies too */
    tu_rmtree(base);
}

/* --- scripts that cannot work ------------------------------------------------------------- */

static void refused(const char *file, const char *text, const char *config, const char *want)
{
    sl_stage_spec spec = {.lua = file ? script(file, text) : "/nonexistent/x.lua",
                          .config = config};
    sl_caption_params p = job(&spec, 1);
    sl_caption_summary sum;
    assert_int_equal(sl_caption_run(&p, &sum), SL_ERR_INVALID_ARG);
    if (!strstr(sl_last_error(), want))
        fail_msg("'%s' not in: %s", want, sl_last_error());
    /* The command's one-line reason (exit 2); the traceback is the log's (-v). */
    if (strstr(sl_last_error(), "stack traceback"))
        fail_msg("a traceback in the message: %s", sl_last_error());
}

static void scripts_refused(void **state)
{
    (void)state;
    setup_dirs();
    refused("syntax.lua", "function process(row)\n  return row\nedn\n", NULL, "syntax.lua:3:");
    refused("noproc.lua", "function proces(row) return row end\n", NULL,
            "noproc.lua defines no function process(row)");
    refused("top.lua", "local x = nil\nx.y = 1\n", NULL, "top.lua:2: attempt to index");
    refused(NULL, NULL, NULL, "cannot open /nonexistent/x.lua");
    refused("cfg.lua", "function process(row) return row end\n", "[1]",
            "config must be a JSON object");
    /* init() failing: the stage cannot work, the run does not start. */
    refused("init.lua",
            "function init(config)\n  assert(io.open(config.words), 'no word list')\nend\n"
            "function process(row) return row end\n",
            "{\"words\": \"/nonexistent/words.txt\"}", "init() failed on worker 0");
    assert_non_null(strstr(sl_last_error(), "init.lua:2: no word list"));
    assert_non_null(strstr(sl_last_error(), "stage 'init'"));
    tu_rmtree(base);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* --- calls past their time limit ------------------------------------------------------------ */

static const char endless_lua[] =
    "local n = 0\n"
    "function process(row)\n"
    "  n = n + 1\n"
    "  if n == 2 then while true do end end\n"
    "  if n == 3 then while true do pcall(function() while true do end end) end end\n"
    "  if n == 4 then coroutine.wrap(function() while true do end end)() end\n"
    "  if n == 5 then local t = {} while true do t[#t % 64 + 1] = tostring(n) end end\n"
    "  return row\n"
    "end\n";

enum { ROWS = 7 };

/* A worker of spec's stage, its init() done, and ROWS empty rows for it. */
static void *worker_and_rows(const sl_stage_spec *spec, user_stage **us,
                             sl_pipeline_stage_params *sp, struct sl_row *rows, sl_row **batch)
{
    sl_pipeline_builtin after;
    assert_int_equal(user_stage_open(spec, us, sp, &after), SL_OK);
    void *ws;
    assert_int_equal(sp->init(sp->config, 0, &ws), SL_OK);
    for (int i = 0; i < ROWS; i++)
        batch[i] = &rows[i];
    return ws;
}

/* A process() call still running after the stage's time_limit fails its
 * row naming where it was stopped, whatever the script does to go on
 * (a pcall() around the loop, a loop inside a coroutine, C calls in the
 * loop); the worker's state goes on with the next row. The script's top
 * level and init() are timed too (the stage is refused); a plugin takes
 * no time_limit. */
static void calls_past_their_time_limit_are_stopped(void **state)
{
    (void)state;
    setup_dirs();
    sl_stage_spec spec = {.name = "slow", .lua = script("endless.lua", endless_lua),
                          .time_limit_s = 0.2};
    user_stage *us;
    sl_pipeline_stage_params sp;
    sl_pipeline_builtin after;
    static struct sl_row rows[ROWS];
    sl_row *batch[ROWS];
    void *ws = worker_and_rows(&spec, &us, &sp, rows, batch);
    double t0 = now_s();
    assert_int_equal(sp.process(ws, batch, ROWS), SL_OK);
    double took = now_s() - t0;
    static const char *const where[ROWS] = {NULL, "endless.lua:4:", "endless.lua:5:",
                                            "endless.lua:6:", "endless.lua:7:", NULL};
    for (int i = 0; i < ROWS; i++) {
        if (!where[i]) {
            assert_false(sl_row_failed(batch[i]));
            continue;
        }
        assert_true(sl_row_failed(batch[i]));
        const char *err = batch[i]->error;
        if (!strstr(err, where[i]) || !strstr(err, "still running after 0.2 s, the stage's "
                                                   "time_limit"))
            fail_msg("row %d: %s", i, err);
    }
    /* Four calls stopped, each soon after its 0.2 s (the clock is read
     * every 1000 instructions). */
    assert_true(took >= 0.8);
    if (!getenv("SLUICE_SANITIZED"))
        assert_true(took < 3.0);
    sp.close(ws, SL_END_COMPLETE);
    user_stage_free(us);

    spec = (sl_stage_spec){.lua = script("top.lua", "while true do end\n"), .time_limit_s = 0.2};
    assert_int_equal(user_stage_open(&spec, &us, &sp, &after), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "the script failed as it loaded: "));
    assert_non_null(strstr(sl_last_error(), "top.lua:1: still running after 0.2 s"));
    spec.lua = script("init.lua", "function init() while true do end end\n"
                                  "function process(row) return row end\n");
    assert_int_equal(user_stage_open(&spec, &us, &sp, &after), SL_OK);
    assert_int_equal(sp.init(sp.config, 3, &ws), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "init() failed on worker 3: "));
    assert_non_null(strstr(sl_last_error(), "init.lua:1: still running after 0.2 s"));
    user_stage_free(us);
    spec.time_limit_s = 1e9;
    assert_int_equal(user_stage_open(&spec, &us, &sp, &after), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "time_limit is seconds, at most 86400"));
    /* The clock's hook is there with a limit (the default's too), not
     * without one (below 0). */
    const double limits[3] = {0, 5, -1};
    const char *const hooked[3] = {"hooked: true", "hooked: true", "hooked: false"};
    for (int k = 0; k < 3; k++) {
        spec = (sl_stage_spec){.lua = script("hook.lua", "function process(row)\n"
                                                         "  error('hooked: ' .. "
                                                         "tostring(debug.gethook() ~= nil))\n"
                                                         "end\n"),
                               .time_limit_s = limits[k]};
        assert_int_equal(user_stage_open(&spec, &us, &sp, &after), SL_OK);
        assert_int_equal(sp.init(sp.config, 0, &ws), SL_OK);
        struct sl_row one = {0};
        sl_row *p_one = &one;
        assert_int_equal(sp.process(ws, &p_one, 1), SL_OK);
        if (!one.error || !strstr(one.error, hooked[k]))
            fail_msg("limit %g: %s", limits[k], one.error ? one.error : "(no error)");
        sl_free(one.error);
        sp.close(ws, SL_END_COMPLETE);
        user_stage_free(us);
    }
    spec = (sl_stage_spec){.plugin = "/nonexistent/x.so", .time_limit_s = 5};
    assert_int_equal(user_stage_open(&spec, &us, &sp, &after), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "time_limit is for Lua stages"));
    tu_rmtree(base);
}

/* What a script could use to end the run or get past the time limit:
 * xpcall()'s handler (for the limit's error it runs inside the hook, where
 * Lua runs no hooks), debug.sethook(), a __gc (finalizers run with hooks
 * off) and os.exit(); and a binary chunk (Lua does not check bytecode:
 * a wrong one crashed the process). Each fails its row; the worker goes on. */
static const char escapes_lua[] =
    "local n = 0\n"
    "function process(row)\n"
    "  n = n + 1\n"
    "  if n == 1 then xpcall(function() while true do end end, function() while true do end end) end\n"
    "  if n == 2 then xpcall(error, function() while true do end end, 'x') end\n"
    "  if n == 3 then debug.sethook() while true do end end\n"
    "  if n == 4 then setmetatable({}, {__gc = function() while true do end end}) collectgarbage() end\n"
    "  if n == 5 then os.exit(7) end\n"
    "  if n == 6 then assert(load(string.dump(function() end))) end\n"
    "  local ok, e = xpcall(error, function(m) return 'handled ' .. m end, 'x', 0)\n"
    "  assert(not ok and e == 'handled x', e)\n"
    "  return row\n"
    "end\n";

/* ROWS rows through a worker of the script `text` (as `file`, timed at
 * 0.2 s): row i fails with an error holding want[i], or passes (NULL). */
static void rows_fail_as(const char *file, const char *text, const char *const want[ROWS])
{
    setup_dirs();
    sl_stage_spec spec = {.name = "escapes", .lua = script(file, text), .time_limit_s = 0.2};
    user_stage *us;
    sl_pipeline_stage_params sp;
    static struct sl_row rows[ROWS];
    sl_row *batch[ROWS];
    memset(rows, 0, sizeof rows);
    void *ws = worker_and_rows(&spec, &us, &sp, rows, batch);
    assert_int_equal(sp.process(ws, batch, ROWS), SL_OK);
    for (int i = 0; i < ROWS; i++) {
        const char *err = batch[i]->error;
        if (want[i] ? !err || !strstr(err, want[i]) : err != NULL)
            fail_msg("row %d: %s", i, err ? err : "(no error)");
        sl_free(rows[i].error);
    }
    sp.close(ws, SL_END_COMPLETE);
    user_stage_free(us);
    tu_rmtree(base);
}

static void escapes_from_the_time_limit_are_closed(void **state)
{
    (void)state;
    static const char *const want[ROWS] = {
        "still running after 0.2 s", "still running after 0.2 s", /* raised again after xpcall */
        "debug.sethook() would take away the hook", "a __gc metamethod runs where",
        "os.exit() would end the whole run", "attempt to load a binary chunk", NULL};
    rows_fail_as("escapes.lua", escapes_lua, want);
}

/* A __gc reached where it already is: a file's metatable (getmetatable(),
 * debug.getmetatable()) and sluice's own through debug.getregistry(). Set
 * to a Lua loop, it ran with hooks off and the worker hung past its
 * time_limit (and Ctrl-C) for good. Each is refused; the file's metatable
 * still reads. */
static const char gc_in_place_lua[] =
    "local n = 0\n"
    "local loop = function() while true do end end\n"
    "function process(row)\n"
    "  n = n + 1\n"
    "  if n == 1 then getmetatable(io.stdout).__gc = loop io.tmpfile() collectgarbage() end\n"
    "  if n == 2 then debug.getmetatable(io.stdout).__gc = loop io.tmpfile() collectgarbage() end\n"
    "  if n == 3 then debug.getregistry()['sluice.jbox'].__gc = loop sluice.to_json({}) "
    "collectgarbage() end\n"
    "  assert(getmetatable(io.stdout).__name == 'FILE*' and io.type(io.stdout) == 'file')\n"
    "  return row\n"
    "end\n";

static void gc_in_place_is_refused(void **state)
{
    (void)state;
    static const char *const want[ROWS] = {"gc.lua:5: a file's metatable cannot change",
                                           "gc.lua:6: a file's metatable cannot change",
                                           "gc.lua:7: debug.getregistry() would reach", NULL};
    rows_fail_as("gc.lua", gc_in_place_lua, want);
}

/* A script that keeps more than its state may hold fails its rows saying
 * so: which limit, how much the state holds and what to change (Lua's own
 * "not enough memory" said none of it, and no script:line). The limit is
 * 64 MB here (core/fault.h, lua.memory_mb), 1024 MB in a run. */
static void rows_past_the_memory_limit_say_so(void **state)
{
    (void)state;
    assert_int_equal(sl_fault_configure("lua.memory_mb=64"), 0);
    static const char *const want[ROWS] = {
        "not enough memory: this worker's Lua state holds", "MB of its 64 MB limit: keep less",
        "MB of its 64 MB limit: keep less", NULL};
    rows_fail_as("hoard.lua",
                 "local n = 0\n"
                 "function process(row)\n"
                 "  n = n + 1\n"
                 "  local kept = {}\n"
                 "  if n <= 3 then while true do kept[#kept + 1] = string.rep('x', 1 << 20) end end\n"
                 "  return row\n"
                 "end\n",
                 want);
    sl_fault_configure(NULL);
}

/* --- the cost of a no-op script ------------------------------------------------------------ */

static void noop_cost(void **state)
{
    (void)state;
    setup_dirs();
    sl_stage_spec spec = {.lua = script("noop.lua", "function process(row) return row end\n")};
    user_stage *us;
    sl_pipeline_stage_params sp;
    sl_pipeline_builtin after;
    assert_int_equal(user_stage_open(&spec, &us, &sp, &after), SL_OK);
    assert_int_equal(after, SL_PIPELINE_DECODE);
    void *ws;
    assert_int_equal(sp.init(sp.config, 0, &ws), SL_OK);
    enum { BATCH = 64, ROUNDS = 4000 };
    static struct sl_row rows[BATCH];
    sl_row *batch[BATCH];
    for (int i = 0; i < BATCH; i++)
        batch[i] = &rows[i];
    double t0 = now_s();
    for (int r = 0; r < ROUNDS; r++)
        assert_int_equal(sp.process(ws, batch, BATCH), SL_OK);
    double ns = (now_s() - t0) * 1e9 / (BATCH * ROUNDS);
    for (int i = 0; i < BATCH; i++)
        assert_false(sl_row_dropped(batch[i]) || sl_row_failed(batch[i]));
    sp.close(ws, SL_END_COMPLETE);
    user_stage_free(us);
    printf("lua no-op stage: %.0f ns per row\n", ns);
    tu_rmtree(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(state_per_worker),  cmocka_unit_test(close_when_the_run_fails),
        cmocka_unit_test(filter_drops),
        cmocka_unit_test(errors_fail_rows),  cmocka_unit_test(row_seen_by_script),
        cmocka_unit_test(fan_out),           cmocka_unit_test(scripts_refused),
        cmocka_unit_test(calls_past_their_time_limit_are_stopped),
        cmocka_unit_test(escapes_from_the_time_limit_are_closed),
        cmocka_unit_test(gc_in_place_is_refused),
        cmocka_unit_test(rows_past_the_memory_limit_say_so),
        cmocka_unit_test(noop_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
