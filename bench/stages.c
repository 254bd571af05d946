/* bench/stages — the per-row cost of a user stage (docs/stages.md): a no-op
 * C plugin (bench/stages_noop.c) and a no-op Lua script, each opened as a
 * job opens its stages (stage/stage.h: user_stage_open), run by the
 * executor between a source of caption rows (job/job.h: caption_row, so the
 * row calls work) and a sink that frees them. Prints a few human lines,
 * then (last line) one JSON object. Not a test: compare ratios.
 *
 *   build/bench/stages [--quick] [--rows N] [--batch N]
 *
 * plugin_ns_per_row, lua_ns_per_row: (time with the stage - time without)
 *   / rows on the same pipeline in the same process, the process pinned to
 *   one core (so the figure is the CPU the stage costs, its queue hop
 *   included), the median of 5 runs of each, taken in turn. The stage has
 *   one worker and the default batch size (16) unless --batch says.
 * lua_pending: true while this sluice has no Lua stages (lua_ns_per_row null).
 * tags_*: the tags example as a C plugin (examples/plugins/tags.c) and as
 *   Lua (examples/tags.lua), 200,000 rows with a 40-word answer, batch 64:
 *   time inside process() a row (busy), and the difference a row; the Lua
 *   one untimed too (time_limit below 0).
 * arith_*: a Lua stage of plain arithmetic (2,000 loop steps a row), with
 *   its calls timed (the default time_limit: a count hook reads the clock)
 *   and untimed (time_limit below 0): busy ns a row each, and
 *   time_limit_cost = timed / untimed. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "core/alloc.h"
#include "job/job.h"
#include "sluice/log.h"
#include "stage/stage.h"

static long g_rows;
static const char *g_answer; /* rows carry this answer (as after the engine); NULL: none */
static int g_queue_rows; /* 0: the executor's own choice, as in a job */

static sl_status source_init(void *c, int w, void **state)
{
    (void)c, (void)w;
    *state = sl_calloc(1, sizeof(long));
    return *state ? SL_OK : SL_ERR_NOMEM;
}

static void source_close(void *state, sl_exec_end end)
{
    (void)end;
    sl_free(state);
}

/* A caption row as the read stage makes it for a file: an id, no bytes yet. */
static sl_status produce(void *state, sl_row *row, bool *done)
{
    long *next = state;
    if (*next >= g_rows) {
        *done = true;
        return SL_OK;
    }
    caption_row *r = sl_calloc(1, sizeof *r);
    if (!r || !(r->rel = sl_asprintf("img%08ld.jpg", (*next)++))) {
        sl_free(r);
        return SL_ERR_NOMEM;
    }
    if (g_answer) {
        if (!(r->result.text = sl_strdup(g_answer))) {
            job_row_free(r);
            return SL_ERR_NOMEM;
        }
        r->has_result = true;
    }
    sl_row_set_data(row, r, job_row_free);
    sl_row_set_bytes(row, sizeof *r + 16);
    return SL_OK;
}

static sl_status sink(void *state, sl_row *const *rows, size_t n)
{
    (void)state, (void)rows, (void)n;
    return SL_OK;
}

/* Seconds for g_rows rows through source -> [stage] -> sink; *busy: the
 * seconds the stage spent in process(). */
static double run(const sl_pipeline_stage_params *stage, double *busy)
{
    sl_stage_def defs[3] = {
        {.name = "read", .kind = SL_STAGE_SOURCE, .workers = 1, .batch_size = 256,
         .init = source_init, .close = source_close, .produce = produce},
    };
    size_t n = 1;
    if (stage)
        defs[n++] = (sl_stage_def){.name = stage->name, .kind = SL_STAGE_MAP,
                                   .workers = stage->workers, .batch_size = stage->batch_size,
                                   .config = stage->config, .init = stage->init,
                                   .process = stage->process, .close = stage->close};
    defs[n++] = (sl_stage_def){.name = "write", .kind = SL_STAGE_SINK, .workers = 1,
                               .batch_size = 256, .process = sink};
    sl_exec_params p = sl_exec_default_params();
    p.queue_rows = g_queue_rows;
    sl_exec *e;
    if (sl_exec_create(&p, defs, n, &e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    double t0 = bench_now();
    if (sl_exec_run(e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    double secs = bench_now() - t0;
    sl_exec_stats st;
    sl_exec_stats_get(e, &st);
    sl_stage_stats ss;
    sl_exec_stage_stats(e, 1, &ss);
    if (busy)
        *busy = stage ? ss.busy_s : 0;
    sl_exec_free(e);
    if (st.rows_done != (uint64_t)g_rows || st.rows_failed) {
        fprintf(stderr, "bench: %llu rows done (%llu failed) of %ld\n",
                (unsigned long long)st.rows_done, (unsigned long long)st.rows_failed, g_rows);
        exit(1);
    }
    return secs;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { RUNS = 5 };

/* The same no-op as bench/stages_noop.c, built into the program: a stage
 * of the caller's (sluice/pipeline.h), no plugin. */
static uint64_t builtin_sum;
static sl_status builtin_noop(void *state, sl_row *const *rows, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++)
        builtin_sum += sl_row_seq(rows[i]);
    return SL_OK;
}

typedef struct variant {
    const char *what;
    sl_pipeline_stage_params params;
    double secs[RUNS], busy[RUNS];
    double ns, busy_ns; /* medians, a row, more than no stage */
} variant;

/* The figures at the stage's batch size `batch`: variants v[0..n) after
 * the runs without a stage. */
static double measure(variant *v, size_t n, int batch)
{
    double none[RUNS];
    for (size_t k = 0; k < n; k++)
        v[k].params.batch_size = batch;
    for (int i = 0; i < RUNS; i++) {
        none[i] = run(NULL, NULL);
        for (size_t k = 0; k < n; k++)
            v[k].secs[i] = run(&v[k].params, &v[k].busy[i]);
    }
    qsort(none, RUNS, sizeof *none, cmp_double);
    for (size_t k = 0; k < n; k++) {
        qsort(v[k].secs, RUNS, sizeof(double), cmp_double);
        qsort(v[k].busy, RUNS, sizeof(double), cmp_double);
        v[k].ns = (v[k].secs[RUNS / 2] - none[RUNS / 2]) / (double)g_rows * 1e9;
        v[k].busy_ns = v[k].busy[RUNS / 2] / (double)g_rows * 1e9;
    }
    return none[RUNS / 2];
}

static void print_variants(const variant *v, size_t n, int batch, double base)
{
    printf("batch %d (queue %s): no stage %.3f s (%.0f rows/s)\n", batch,
           g_queue_rows ? "set" : "2 x batch", base, (double)g_rows / base);
    for (size_t k = 0; k < n; k++)
        printf("  %-22s %.3f s: %6.0f ns a row more (in process(): %.0f ns)\n", v[k].what,
               v[k].secs[RUNS / 2], v[k].ns, v[k].busy_ns);
}

int main(int argc, char **argv)
{
    long rows = 1000000;
    int batch = 16, big_batch = 256;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true, rows = 100000;
        else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc)
            rows = atol(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--queue-rows") == 0 && i + 1 < argc)
            g_queue_rows = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--rows N] [--batch N] [--queue-rows N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rows < 1 || batch < 1 || g_queue_rows < 0) {
        fprintf(stderr, "bench: --rows and --batch must be >= 1, --queue-rows >= 0\n");
        return 2;
    }
    g_rows = rows;
    sl_log_set_level(SL_LOG_ERROR);

    /* The two stages, opened as a job opens its own. */
    char script[] = "/tmp/sluice-bench-noop-XXXXXX.lua";
    int fd = mkstemps(script, 4);
    static const char noop_lua[] = "function process(row) return row end\n";
    if (fd < 0 || write(fd, noop_lua, sizeof noop_lua - 1) != (ssize_t)(sizeof noop_lua - 1)) {
        perror("bench: the Lua script");
        return 1;
    }
    close(fd);
    sl_stage_spec specs[2] = {{.name = "noop_plugin", .plugin = NOOP_PLUGIN},
                              {.name = "noop_lua", .lua = script}};
    user_stage *us[2] = {NULL, NULL};
    variant v[3] = {{.what = "no-op built-in stage"}, {.what = "no-op C plugin"},
                    {.what = "no-op Lua stage"}};
    v[0].params = sl_pipeline_stage_default_params();
    v[0].params.name = "noop_builtin";
    v[0].params.process = builtin_noop;
    char lua_why[512] = "";
    for (int k = 0; k < 2; k++) {
        sl_pipeline_builtin after;
        if (user_stage_open(&specs[k], &us[k], &v[k + 1].params, &after) == SL_OK)
            continue;
        if (k == 0) {
            fprintf(stderr, "bench: %s\n", sl_last_error());
            return 1;
        }
        snprintf(lua_why, sizeof lua_why, "%s", sl_last_error());
    }
    bool lua = us[1] != NULL;
    size_t n = lua ? 3 : 2;

    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof one, &one);
    printf("%ld caption rows through read (batch 256) -> [stage, 1 worker] -> write (batch "
           "256), 1 core, median of %d\n", rows, RUNS);
    double base = measure(v, n, batch);
    print_variants(v, n, batch, base);
    variant big[3];
    memcpy(big, v, sizeof big);
    double big_base = measure(big, n, big_batch);
    print_variants(big, n, big_batch, big_base);
    if (!lua)
        printf("no-op Lua stage: pending (%s)\n", lua_why);

    /* The tags example, the same rule in C and in Lua, on rows with an answer. */
    static const char answer[] =
        "A tabby cat with green eyes sits on a wooden kitchen table next to a white "
        "ceramic cup of coffee, while sunlight from a large window falls across the "
        "table and the cat's striped fur; behind it, a shelf holds jars, books and a "
        "small potted plant.";
    char tags_config[1024];
    snprintf(tags_config, sizeof tags_config, "{\"stopwords\": \"%s\", \"min_length\": 10}",
             STOPWORDS);
    sl_stage_spec tag_specs[3] = {
        {.name = "tags_plugin", .plugin = TAGS_PLUGIN, .config = tags_config},
        {.name = "tags_lua", .lua = TAGS_LUA, .config = tags_config},
        {.name = "tags_lua_untimed", .lua = TAGS_LUA, .config = tags_config,
         .time_limit_s = -1}};
    user_stage *tus[3] = {NULL, NULL, NULL};
    variant tv[3];
    static const char *const tag_what[3] = {"tags, C plugin", "tags, Lua",
                                            "tags, Lua untimed"};
    size_t n_tags = 0;
    for (int k = 0; k < 3; k++) {
        sl_pipeline_builtin after;
        tv[n_tags] = (variant){0};
        if (user_stage_open(&tag_specs[k], &tus[k], &tv[n_tags].params, &after) == SL_OK) {
            tv[n_tags++].what = tag_what[k];
        } else if (k == 0) {
            fprintf(stderr, "bench: %s\n", sl_last_error());
            return 1;
        } else {
            printf("tags in Lua: pending (%s)\n", sl_last_error());
            break;
        }
    }
    long all_rows = g_rows;
    g_rows = quick ? 20000 : 200000;
    g_answer = answer;
    printf("%ld rows with a %zu-byte answer:\n", g_rows, sizeof answer - 1);
    double tags_base = measure(tv, n_tags, 64);
    print_variants(tv, n_tags, 64, tags_base);
    g_rows = all_rows;
    char tags_lua[32] = "null", tags_lua_busy[32] = "null", tags_untimed[32] = "null";
    if (n_tags == 3) {
        snprintf(tags_lua, sizeof tags_lua, "%.1f", tv[1].ns);
        snprintf(tags_lua_busy, sizeof tags_lua_busy, "%.1f", tv[1].busy_ns);
        snprintf(tags_untimed, sizeof tags_untimed, "%.1f", tv[2].busy_ns);
    }

    /* The time limit's cost on plain Lua: the same script timed and not. */
    char arith[] = "/tmp/sluice-bench-arith-XXXXXX.lua";
    int afd = mkstemps(arith, 4);
    static const char arith_lua[] = "function process(row)\n"
                                    "  local s = 0\n"
                                    "  for i = 1, 2000 do s = s + i % 7 end\n"
                                    "  if s < 0 then return nil end\n"
                                    "  return row\n"
                                    "end\n";
    if (afd < 0 ||
        write(afd, arith_lua, sizeof arith_lua - 1) != (ssize_t)(sizeof arith_lua - 1)) {
        fprintf(stderr, "bench: cannot write %s\n", arith);
        return 1;
    }
    close(afd);
    sl_stage_spec arith_specs[2] = {{.name = "arith_timed", .lua = arith},
                                    {.name = "arith_untimed", .lua = arith, .time_limit_s = -1}};
    user_stage *aus[2] = {NULL, NULL};
    variant av[2] = {{.what = "arithmetic, timed"}, {.what = "arithmetic, untimed"}};
    for (int k = 0; k < 2; k++) {
        sl_pipeline_builtin after;
        if (user_stage_open(&arith_specs[k], &aus[k], &av[k].params, &after) != SL_OK) {
            fprintf(stderr, "bench: %s\n", sl_last_error());
            return 1;
        }
    }
    g_rows = quick ? 4000 : 40000;
    g_answer = NULL;
    printf("%ld rows, 2,000 steps of Lua arithmetic each:\n", g_rows);
    double arith_base = measure(av, 2, 16);
    print_variants(av, 2, 16, arith_base);
    printf("the time limit's clock costs %.3fx of plain Lua\n", av[0].busy_ns / av[1].busy_ns);
    g_rows = all_rows;

    char lua_ns[32] = "null", lua_big[32] = "null", lua_busy[32] = "null";
    if (lua) {
        snprintf(lua_ns, sizeof lua_ns, "%.1f", v[2].ns);
        snprintf(lua_big, sizeof lua_big, "%.1f", big[2].ns);
        snprintf(lua_busy, sizeof lua_busy, "%.1f", v[2].busy_ns);
    }
    printf("{\"rows\": %ld, \"batch_size\": %d, \"queue_rows\": %d, "
           "\"no_stage_rows_per_s\": %.0f, \"plugin_ns_per_row\": %.1f, "
           "\"plugin_busy_ns_per_row\": %.1f, \"builtin_ns_per_row\": %.1f, "
           "\"lua_ns_per_row\": %s, \"lua_busy_ns_per_row\": %s, "
           "\"plugin_ns_per_row_batch_%d\": %.1f, \"builtin_ns_per_row_batch_%d\": %.1f, "
           "\"lua_ns_per_row_batch_%d\": %s, \"lua_pending\": %s, "
           "\"tags_plugin_ns_per_row\": %.1f, \"tags_plugin_busy_ns_per_row\": %.1f, "
           "\"tags_lua_ns_per_row\": %s, \"tags_lua_busy_ns_per_row\": %s, "
           "\"tags_lua_untimed_busy_ns_per_row\": %s, \"arith_timed_busy_ns_per_row\": %.1f, \"arith_untimed_busy_ns_per_row\": %.1f, "
           "\"time_limit_cost\": %.3f, \"quick\": %s}\n",
           rows, batch, g_queue_rows, (double)rows / base, v[1].ns, v[1].busy_ns, v[0].ns,
           lua_ns, lua_busy, big_batch, big[1].ns, big_batch, big[0].ns, big_batch, lua_big,
           lua ? "false" : "true", tv[0].ns, tv[0].busy_ns, tags_lua, tags_lua_busy,
           tags_untimed, av[0].busy_ns, av[1].busy_ns, av[0].busy_ns / av[1].busy_ns, quick ? "true" : "false");
    user_stage_free(aus[0]);
    user_stage_free(aus[1]);
    unlink(arith);
    for (int k = 0; k < 3; k++)
        user_stage_free(tus[k]);
    user_stage_free(us[0]);
    user_stage_free(us[1]);
    unlink(script);
    return 0;
}
