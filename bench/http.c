/* bench/http — the openai engine's client cost: N text-only chat requests
 * against one endpoint (bench/http_bench.py points it at nginx answering a fixed
 * completion), pinned to one CPU. Prints human lines, then one JSON object
 * as the last line. Not a test.
 *
 *   build/bench/http --endpoint URL [--requests N] [--in-flight K] [--cpu C]
 *
 * client_us_per_request: CPU time of the whole process (the submitting
 * thread building bodies + the event loop) per request. requests_per_s:
 * requests over wall time with both on the one CPU. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"
#include "sluice/sluice.h"

int main(int argc, char **argv)
{
    const char *endpoint = NULL;
    long n = 20000, in_flight = 64, cpu = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--endpoint") == 0)
            endpoint = argv[i + 1];
        else if (strcmp(argv[i], "--requests") == 0)
            n = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--in-flight") == 0)
            in_flight = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--cpu") == 0)
            cpu = atol(argv[i + 1]);
    }
    if (!endpoint || n < 1 || in_flight < 1) {
        fprintf(stderr, "usage: http --endpoint URL [--requests N] [--in-flight K] [--cpu C]\n");
        return 2;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
    sl_log_set_level(SL_LOG_WARN);
    sl_openai_params p = sl_openai_default_params();
    p.endpoints = &endpoint;
    p.n_endpoints = 1;
    p.max_in_flight = (int)in_flight;
    sl_engine *e;
    if (sl_engine_open_openai(&p, &e) != SL_OK) {
        fprintf(stderr, "bench/http: %s\n", sl_last_error());
        return 1;
    }
    sl_request q = {.id = "bench", .prompt = "Describe this image in one sentence.",
                    .sampling = sl_sampling_default()};
    sl_completion done[256];
    long submitted = 0, completed = 0, failed = 0;
    double t0 = bench_now(), c0 = bench_cpu_s();
    while (completed < n) {
        /* Keep twice the limit queued, as the pipeline does. */
        while (submitted < n && (long)sl_engine_in_flight(e) < 2 * in_flight) {
            if (sl_engine_submit(e, &q, NULL) != SL_OK) {
                fprintf(stderr, "bench/http: %s\n", sl_last_error());
                return 1;
            }
            submitted++;
        }
        size_t k = 0;
        if (sl_engine_poll(e, done, 256, 100, &k) != SL_OK) {
            fprintf(stderr, "bench/http: %s\n", sl_last_error());
            return 1;
        }
        for (size_t i = 0; i < k; i++) {
            failed += done[i].status != SL_OK;
            if (done[i].status != SL_OK && failed == 1)
                fprintf(stderr, "bench/http: first failure: %s\n", done[i].error);
            sl_completion_clear(&done[i]);
        }
        completed += (long)k;
    }
    double wall = bench_now() - t0, cpu_used = bench_cpu_s() - c0;
    sl_engine_free(e);
    double us = cpu_used / n * 1e6, rps = n / wall;
    printf("%ld requests to %s, %ld in flight, one CPU: %.2f s wall, %.2f s CPU; "
           "%.1f us CPU per request, %.0f requests/s; %ld failed\n",
           n, endpoint, in_flight, wall, cpu_used, us, rps, failed);
    printf("{\"requests\": %ld, \"failed\": %ld, \"client_us_per_request\": %.2f, "
           "\"max_requests_per_s_one_core\": %.0f}\n", n, failed, us, rps);
    return failed ? 1 : 0;
}
