/* bench/metrics — the cost of recording a metric and of rendering them.
 * Prints a few human lines, then (last line) one JSON object. Not a test:
 * figures depend on the machine; compare with the baseline measured in the
 * same run.
 *
 *   build/bench/metrics [--quick]
 *
 * baseline_ns_1t / _2t: a plain relaxed atomic_fetch_add on one word from 1
 *   thread / from 2 threads at once (same word: cache-line contention).
 * counter_inc_ns_1t / _2t: sl_metrics_counter_inc on one child, likewise.
 * counter_add_double_ns_1t: sl_metrics_counter_add(c, 0.5) (the CAS path).
 * histogram_observe_ns_1t / _2t: sl_metrics_histogram_observe, default
 *   14 buckets, values spread over them.
 * render_1000_counters_us / render_1000_histograms_us: sl_metrics_render of
 *   a registry holding one labelled family with 1,000 children (median of
 *   runs), and the size of that text.
 * Each ns figure is the median of 5 runs of N operations per thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "sluice/metrics.h"

static long n_ops = 20 * 1000 * 1000;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* --- the operations ------------------------------------------------------------- */

typedef enum op { OP_BASELINE, OP_INC, OP_ADD_DOUBLE, OP_OBSERVE } op;

static atomic_uint_fast64_t baseline_word;
static sl_metrics_child *counter_child, *hist_child;

typedef struct job {
    op kind;
    pthread_barrier_t *start;
    double seconds;
} job;

static void *run_op(void *arg)
{
    job *j = arg;
    pthread_barrier_wait(j->start);
    double t0 = bench_now();
    switch (j->kind) {
    case OP_BASELINE:
        for (long i = 0; i < n_ops; i++)
            atomic_fetch_add_explicit(&baseline_word, 1, memory_order_relaxed);
        break;
    case OP_INC:
        for (long i = 0; i < n_ops; i++)
            sl_metrics_counter_inc(counter_child);
        break;
    case OP_ADD_DOUBLE:
        for (long i = 0; i < n_ops; i++)
            sl_metrics_counter_add(counter_child, 0.5);
        break;
    case OP_OBSERVE:
        for (long i = 0; i < n_ops; i++)
            sl_metrics_histogram_observe(hist_child, (double)(i & 15) * 0.7);
        break;
    }
    j->seconds = bench_now() - t0;
    return NULL;
}

/* ns per operation per thread, median of 5 runs. */
static double time_op(op kind, int threads)
{
    double runs[5];
    for (int r = 0; r < 5; r++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads);
        pthread_t tid[2];
        job jobs[2];
        for (int t = 0; t < threads; t++) {
            jobs[t] = (job){kind, &start, 0};
            pthread_create(&tid[t], NULL, run_op, &jobs[t]);
        }
        double worst = 0;
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            if (jobs[t].seconds > worst)
                worst = jobs[t].seconds;
        }
        pthread_barrier_destroy(&start);
        runs[r] = worst * 1e9 / (double)n_ops;
    }
    return median(runs, 5);
}

/* --- exposition ---------------------------------------------------------------- */

static void time_render(int histogram, double *us, size_t *bytes)
{
    sl_metrics_params p = sl_metrics_default_params();
    p.process_metrics = false;
    sl_metrics *m;
    sl_metrics_new(&p, &m);
    const char *labels[] = {"model_name", "stage", NULL};
    sl_metrics_family *f;
    if (histogram)
        sl_metrics_add_histogram(m, "vllm:e2e_request_latency_seconds", "Latency.", labels, NULL,
                                 0, &f);
    else
        sl_metrics_add_counter(m, "vllm:request_success_total", "Requests.", labels, &f);
    char model[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(model, sizeof model, "model-%d", (i * 7919) % 1000);
        sl_metrics_child *c = sl_metrics_with(f, model, i % 2 ? "decode" : "engine");
        if (histogram)
            sl_metrics_histogram_observe(c, i * 0.01);
        else
            sl_metrics_counter_add_u64(c, (uint64_t)i * 12345);
    }
    double runs[21];
    for (int r = 0; r < 21; r++) {
        char *text;
        size_t len;
        double t0 = bench_now();
        sl_metrics_render(m, &text, &len);
        runs[r] = (bench_now() - t0) * 1e6;
        *bytes = len;
        sl_metrics_text_free(text);
    }
    *us = median(runs, 21);
    sl_metrics_free(m);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--quick") == 0)
        n_ops = 2 * 1000 * 1000;
    sl_metrics_params p = sl_metrics_default_params();
    p.process_metrics = false;
    sl_metrics *m;
    if (sl_metrics_new(&p, &m) != SL_OK)
        return 1;
    sl_metrics_family *cf, *hf;
    const char *labels[] = {"model_name", NULL};
    sl_metrics_add_counter(m, "vllm:generation_tokens_total", "Tokens.", labels, &cf);
    sl_metrics_add_histogram(m, "vllm:time_to_first_token_seconds", "TTFT.", labels, NULL, 0, &hf);
    counter_child = sl_metrics_with(cf, "m");
    hist_child = sl_metrics_with(hf, "m");

    double base1 = time_op(OP_BASELINE, 1), base2 = time_op(OP_BASELINE, 2);
    double inc1 = time_op(OP_INC, 1), inc2 = time_op(OP_INC, 2);
    double addd1 = time_op(OP_ADD_DOUBLE, 1);
    double obs1 = time_op(OP_OBSERVE, 1), obs2 = time_op(OP_OBSERVE, 2);
    double render_c, render_h;
    size_t bytes_c, bytes_h;
    time_render(0, &render_c, &bytes_c);
    time_render(1, &render_h, &bytes_h);
    sl_metrics_free(m);

    printf("ops per thread per run: %ld (median of 5 runs)\n", n_ops);
    printf("atomic_fetch_add baseline : %6.2f ns (1 thread)  %6.2f ns (2 threads, same word)\n",
           base1, base2);
    printf("counter_inc               : %6.2f ns (1 thread)  %6.2f ns (2 threads, same child)\n",
           inc1, inc2);
    printf("counter_add(0.5) (CAS)    : %6.2f ns (1 thread)\n", addd1);
    printf("histogram_observe         : %6.2f ns (1 thread)  %6.2f ns (2 threads, same child)\n",
           obs1, obs2);
    printf("render 1,000 counter children  : %8.1f us (%zu bytes)\n", render_c, bytes_c);
    printf("render 1,000 histogram children: %8.1f us (%zu bytes)\n", render_h, bytes_h);
    printf("{\"ops_per_thread\":%ld,\"baseline_ns_1t\":%.2f,\"baseline_ns_2t\":%.2f,"
           "\"counter_inc_ns_1t\":%.2f,\"counter_inc_ns_2t\":%.2f,"
           "\"counter_add_double_ns_1t\":%.2f,"
           "\"histogram_observe_ns_1t\":%.2f,\"histogram_observe_ns_2t\":%.2f,"
           "\"render_1000_counters_us\":%.1f,\"render_1000_counters_bytes\":%zu,"
           "\"render_1000_histograms_us\":%.1f,\"render_1000_histograms_bytes\":%zu}\n",
           n_ops, base1, base2, inc1, inc2, addd1, obs1, obs2, render_c, bytes_c, render_h,
           bytes_h);
    return 0;
}
