/* tests/tools/metrics_demo — serves a registry that a few threads keep
 * updating, for the end-to-end metrics test and for trying Prometheus by
 * hand. Public API only. Not installed.
 *
 *   metrics_demo [--port N] [--seconds S] [--threads T] [--batches B]
 *
 * Prints the bound port on stdout first thing (one line, flushed), then
 * serves http://127.0.0.1:PORT/metrics for S seconds (default 30; 0 runs
 * until SIGTERM/SIGINT), T threads (default 4) updating:
 *   vllm:request_success_total{model_name,finished_reason}  counter
 *   vllm:generation_tokens_total{model_name}                counter
 *   vllm:num_requests_running{model_name}                   gauge
 *   vllm:e2e_request_latency_seconds{model_name}            histogram
 *   sluice_queue_depth{stage}                               gauge (callback)
 *   sluice_rows_total                                       counter
 * with model_name "demo \"quoted\" \\ model\nv1" (every escape the text
 * format has) and "plain". Each thread does 1000 updates a second of each
 * kind (in batches of 100, 10 a second). With --batches B each thread stops
 * after B batches; once all have stopped the totals are printed as one JSON
 * line on stdout, and serving goes on, so a test can compare what it
 * scrapes with what was done:
 *   {"requests":N,"tokens":N,"observations":N,"rows":N}
 * Without --batches the line is printed at exit. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#include "sluice/metrics.h"

static const char *const MODEL_ODD = "demo \"quoted\" \\ model\nv1";
static const char *const MODEL_PLAIN = "plain";

static atomic_bool stop;
static atomic_ullong n_requests, n_tokens, n_observations;
static atomic_int workers_done;
static long batches; /* per thread; 0: no limit */

typedef struct ctx {
    sl_metrics_family *success, *tokens, *running, *latency, *rows;
    int id;
} ctx;

static void on_signal(int sig) { atomic_store(&stop, true); }

static double queue_depth(void *user)
{
    /* Something that changes: the number of requests so far, modulo 17. */
    return (double)(atomic_load(&n_requests) % 17) + *(double *)user;
}

static void *worker(void *arg)
{
    ctx *c = arg;
    const char *model = c->id % 2 ? MODEL_PLAIN : MODEL_ODD;
    sl_metrics_child *stop_ok = sl_metrics_with(c->success, model, "stop");
    sl_metrics_child *length = sl_metrics_with(c->success, model, "length");
    sl_metrics_child *tokens = sl_metrics_with(c->tokens, model);
    sl_metrics_child *running = sl_metrics_with(c->running, model);
    sl_metrics_child *lat = sl_metrics_with(c->latency, model);
    sl_metrics_child *rows = sl_metrics_with(c->rows);
    unsigned seed = (unsigned)c->id * 7919u + 1;
    for (long b = 0; !atomic_load(&stop) && (batches == 0 || b < batches); b++) {
        for (int i = 0; i < 100; i++) {
            sl_metrics_counter_inc(i % 10 ? stop_ok : length);
            sl_metrics_counter_add_u64(tokens, 3);
            sl_metrics_gauge_add(running, 1);
            /* Latencies from 1 ms to ~2 s, skewed low. */
            double r = (double)rand_r(&seed) / RAND_MAX;
            sl_metrics_histogram_observe(lat, 0.001 + 2.0 * r * r * r);
            sl_metrics_gauge_add(running, -1);
            sl_metrics_counter_inc(rows);
        }
        atomic_fetch_add(&n_requests, 100);
        atomic_fetch_add(&n_tokens, 300);
        atomic_fetch_add(&n_observations, 100);
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

static void print_totals(void)
{
    printf("{\"requests\":%llu,\"tokens\":%llu,\"observations\":%llu,\"rows\":%llu}\n",
           (unsigned long long)atomic_load(&n_requests), (unsigned long long)atomic_load(&n_tokens),
           (unsigned long long)atomic_load(&n_observations),
           (unsigned long long)atomic_load(&n_requests));
    fflush(stdout);
}

static int fail(const char *what)
{
    fprintf(stderr, "metrics_demo: %s: %s\n", what, sl_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    int port = 0, threads = 4;
    double seconds = 30;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc)
            batches = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: metrics_demo [--port N] [--seconds S] [--threads T] "
                            "[--batches B]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "metrics_demo: --threads must be 1..64\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    sl_metrics *m;
    if (sl_metrics_new(NULL, &m) != SL_OK)
        return fail("registry");
    ctx base = {0};
    const char *mr[] = {"model_name", "finished_reason", NULL};
    const char *mn[] = {"model_name", NULL};
    const char *st[] = {"stage", NULL};
    const double lat_buckets[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
    sl_metrics_family *depth;
    if (sl_metrics_add_counter(m, "vllm:request_success_total",
                               "Count of successfully processed requests.", mr,
                               &base.success) != SL_OK ||
        sl_metrics_add_counter(m, "vllm:generation_tokens_total",
                               "Number of generation tokens processed.", mn,
                               &base.tokens) != SL_OK ||
        sl_metrics_add_gauge(m, "vllm:num_requests_running",
                             "Number of requests in model execution batches.", mn,
                             &base.running) != SL_OK ||
        sl_metrics_add_histogram(m, "vllm:e2e_request_latency_seconds",
                                 "Histogram of e2e request latency in seconds.\n"
                                 "(a second line, and a \\ backslash)",
                                 mn, lat_buckets, sizeof lat_buckets / sizeof *lat_buckets,
                                 &base.latency) != SL_OK ||
        sl_metrics_add_gauge(m, "sluice_queue_depth", "Rows waiting in each stage's queue.", st,
                             &depth) != SL_OK ||
        sl_metrics_add_counter(m, "sluice_rows_total", "Rows written by the sink.", NULL,
                               &base.rows) != SL_OK)
        return fail("register");
    static double offsets[] = {0, 100};
    if (sl_metrics_child_set_fn(sl_metrics_with(depth, "decode"), queue_depth, &offsets[0]) !=
            SL_OK ||
        sl_metrics_child_set_fn(sl_metrics_with(depth, "engine"), queue_depth, &offsets[1]) !=
            SL_OK)
        return fail("callback");

    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    sl_metrics_server *server;
    if (sl_metrics_server_start(m, address, &server) != SL_OK)
        return fail("server");
    printf("%d\n", sl_metrics_server_port(server));
    fflush(stdout);

    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    ctx *ctxs = calloc((size_t)threads, sizeof *ctxs);
    if (!tids || !ctxs)
        return 1;
    for (int i = 0; i < threads; i++) {
        ctxs[i] = base;
        ctxs[i].id = i;
        pthread_create(&tids[i], NULL, worker, &ctxs[i]);
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool printed = false;
    while (!atomic_load(&stop)) {
        if (!printed && atomic_load(&workers_done) == threads) {
            print_totals();
            printed = true;
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
        if (seconds > 0 && elapsed >= seconds)
            atomic_store(&stop, true);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    sl_metrics_server_stop(server);
    if (!printed)
        print_totals();
    free(tids);
    free(ctxs);
    sl_metrics_free(m);
    return 0;
}
