/* bench/executor — throughput, per-row overhead, memory bound and RSS of
 * the streaming executor. Prints a few human lines, then (last line) one
 * JSON object. Not a test: figures are measured on whatever machine runs it;
 * compare ratios, not absolutes.
 *
 *   build/bench/executor [--quick]
 *
 * rows_per_s_passthrough: source -> no-op map -> sink, tiny rows, the
 *   process pinned to one core; median of 5 runs.
 * baseline_rows_per_s: the same per-row work (make a row, free it) in a
 *   plain loop, no executor: the floor the executor adds its cost to.
 * overhead_ns_per_row_stage: (1/rows_per_s - 1/baseline) / 3 stages.
 * peak_bytes_in_flight vs budget_bytes: 100,000 rows of 1 MB (real
 *   allocations) through 4 workers into a slow sink.
 * peak_rss_*: the process's peak RSS after 1M and after 10M small rows. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sluice/executor.h"
#include "sluice/log.h"

typedef struct cfg {
    long n;
    size_t bytes;
    int sink_spin_ns;
} cfg;

static sl_status init_cfg(void *c, int w, void **state)
{
    long *counter = calloc(1, sizeof *counter);
    *counter = 0;
    state[0] = counter;
    (void)c;
    return SL_OK;
}
static void close_free(void *state, sl_exec_end end) { free(state); }

static cfg *g_cfg;

static sl_status produce(void *state, sl_row *row, bool *done)
{
    long *next = state;
    if (*next >= g_cfg->n) {
        *done = true;
        return SL_OK;
    }
    (*next)++;
    if (g_cfg->bytes) {
        sl_row_set_data(row, malloc(g_cfg->bytes), free);
        sl_row_set_bytes(row, g_cfg->bytes);
    }
    return SL_OK;
}

static sl_status noop(void *state, sl_row *const *rows, size_t n) { return SL_OK; }

static sl_status slow_sink(void *state, sl_row *const *rows, size_t n)
{
    double until = bench_now() + (double)g_cfg->sink_spin_ns * 1e-9 * (double)n;
    while (bench_now() < until)
        ;
    return SL_OK;
}

static double run(cfg *c, int batch, int map_workers, uint64_t budget, int queue_rows,
                  sl_exec_stats *stats)
{
    g_cfg = c;
    sl_stage_def defs[] = {
        {.name = "read", .kind = SL_STAGE_SOURCE, .workers = 1, .batch_size = batch,
         .init = init_cfg, .close = close_free, .produce = produce},
        {.name = "map", .kind = SL_STAGE_MAP, .workers = map_workers, .batch_size = batch,
         .process = noop},
        {.name = "write", .kind = SL_STAGE_SINK, .workers = 1, .batch_size = batch,
         .process = c->sink_spin_ns ? slow_sink : noop},
    };
    sl_exec_params p = sl_exec_default_params();
    if (budget)
        p.memory_budget = budget;
    p.row_bytes_hint = c->bytes;
    p.queue_rows = queue_rows;
    sl_exec *e;
    if (sl_exec_create(&p, defs, 3, &e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    double t0 = bench_now();
    if (sl_exec_run(e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    double secs = bench_now() - t0;
    if (stats)
        sl_exec_stats_get(e, stats);
    sl_exec_free(e);
    return (double)c->n / secs;
}

/* What the executor does per row at least, without any threads or queues. */
static double baseline(long n)
{
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        void *volatile row = calloc(1, 96);
        free(row);
    }
    return (double)n / (bench_now() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long peak_rss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

int main(int argc, char **argv)
{
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    sl_log_set_level(SL_LOG_ERROR);
    long n_fast = quick ? 200000 : 2000000;

    /* 1. throughput on one core */
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    cpu_set_t all;
    sched_getaffinity(0, sizeof all, &all);
    sched_setaffinity(0, sizeof one, &one);
    double runs[5], base[5];
    for (int i = 0; i < 5; i++) {
        cfg c = {.n = n_fast};
        runs[i] = run(&c, 256, 1, 0, 0, NULL);
        base[i] = baseline(n_fast);
    }
    qsort(runs, 5, sizeof *runs, cmp_double);
    qsort(base, 5, sizeof *base, cmp_double);
    double rps = runs[2], base_rps = base[2];
    sched_setaffinity(0, sizeof all, &all);
    double all_cores[3];
    for (int i = 0; i < 3; i++) {
        cfg c = {.n = n_fast};
        all_cores[i] = run(&c, 256, 1, 0, 0, NULL);
    }
    qsort(all_cores, 3, sizeof *all_cores, cmp_double);
    double overhead_ns = (1e9 / rps - 1e9 / base_rps) / 3.0;
    printf("passthrough, 1 core: %.0f rows/s (median of 5; runs %.0f..%.0f); all cores: %.0f rows/s\n",
           rps, runs[0], runs[4], all_cores[1]);
    printf("baseline loop (alloc+free a row): %.0f rows/s; executor overhead %.0f ns/row/stage\n",
           base_rps, overhead_ns);

    /* 2. memory bound: 1 MB rows, slow sink */
    long n_big = quick ? 10000 : 100000;
    uint64_t budget = 256ull << 20;
    cfg big = {.n = n_big, .bytes = 1 << 20, .sink_spin_ns = 20000};
    sl_exec_stats st;
    /* Queues far larger than the budget allows: the budget is what binds. */
    double big_rps = run(&big, 8, 4, budget, 4096, &st);
    if (st.rows_done != (uint64_t)n_big) { fprintf(stderr, "bench: only %llu of %ld rows done\n", (unsigned long long)st.rows_done, n_big); return 1; }
    printf("%ld rows of 1 MB, slow sink: %.0f rows/s, peak bytes in flight %llu of budget %llu (%.1f%%)\n",
           n_big, big_rps, (unsigned long long)st.peak_bytes_in_flight,
           (unsigned long long)budget, 100.0 * (double)st.peak_bytes_in_flight / (double)budget);

    /* 3. RSS is flat in the number of rows */
    long n_small1 = quick ? 100000 : 1000000, n_small2 = quick ? 1000000 : 10000000;
    cfg s1 = {.n = n_small1};
    run(&s1, 256, 1, 0, 0, NULL);
    long rss1 = peak_rss_bytes();
    cfg s2 = {.n = n_small2};
    run(&s2, 256, 1, 0, 0, NULL);
    long rss2 = peak_rss_bytes();
    printf("peak RSS after a %ld-row run: %.1f MB; after a %ld-row run: %.1f MB (ratio %.2f for %ldx the rows)\n",
           n_small1, rss1 / 1e6, n_small2, rss2 / 1e6, (double)rss2 / (double)rss1,
           n_small2 / n_small1);

    printf("{\"rows_per_s_passthrough\": %.0f, \"rows_per_s_passthrough_all_cores\": %.0f, "
           "\"baseline_rows_per_s\": %.0f, \"executor_vs_baseline\": %.3f, "
           "\"overhead_ns_per_row_stage\": %.1f, \"peak_bytes_in_flight\": %llu, "
           "\"budget_bytes\": %llu, \"big_rows\": %ld, \"peak_rss_bytes\": %ld, "
           "\"peak_rss_bytes_at_%ld_rows\": %ld, \"rows_for_peak_rss\": %ld, \"quick\": %s}\n",
           rps, all_cores[1], base_rps, rps / base_rps, overhead_ns,
           (unsigned long long)st.peak_bytes_in_flight, (unsigned long long)budget, n_big, rss2,
           n_small1, rss1, n_small2, quick ? "true" : "false");
    return 0;
}
