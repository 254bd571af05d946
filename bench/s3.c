/* bench/s3.c — what keeping S3 connections saves. THREADS threads GET N
 * small objects (PREFIX/00000.bin ...; each thread every THREADS-th one),
 * then PUT N small objects under PREFIX-put/, through io/s3.h, either with
 * a new connection for every request (how sluice worked before) or with
 * each thread keeping its connection (now). bench/s3.py starts the store,
 * fills the bucket and runs both modes in turn; this program runs one:
 *
 *     s3 PREFIX N THREADS BYTES reuse|fresh
 *
 * Prints one JSON line: requests/s of the GETs and of the PUTs, the
 * requests sent and the connections opened (libcurl's
 * CURLINFO_NUM_CONNECTS, summed). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "core/alloc.h"
#include "core/error.h"
#include "io/curl_conn.h"
#include "io/s3.h"

typedef struct worker {
    const sl_s3 *s3;
    const char *prefix;
    long n, threads, index;
    const uint8_t *body;
    size_t bytes;
    bool put;
    sl_status st;
    char error[512];
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char url[1024];
    for (long i = w->index; i < w->n && w->st == SL_OK; i += w->threads) {
        if (w->put) {
            snprintf(url, sizeof url, "%s-put/%05ld.bin", w->prefix, i);
            w->st = sl_s3_put(w->s3, url, w->body, w->bytes);
        } else {
            uint8_t *data;
            size_t len;
            snprintf(url, sizeof url, "%s/%05ld.bin", w->prefix, i);
            if ((w->st = sl_s3_get(w->s3, url, 0, 0, 1u << 20, &data, &len)) == SL_OK)
                sl_free(data);
        }
        if (w->st != SL_OK)
            snprintf(w->error, sizeof w->error, "%s", sl_last_error());
    }
    return NULL;
}

/* One phase (all GETs or all PUTs) on `threads` threads; seconds taken. */
static double phase(const sl_s3 *s3, const char *prefix, long n, long threads, const uint8_t *body,
                    size_t bytes, bool put)
{
    pthread_t tid[64];
    worker ws[64];
    double t0 = bench_now();
    for (long t = 0; t < threads; t++) {
        ws[t] = (worker){s3, prefix, n, threads, t, body, bytes, put, SL_OK, ""};
        if (pthread_create(&tid[t], NULL, work, &ws[t]) != 0) {
            fprintf(stderr, "s3: cannot start a thread\n");
            exit(1);
        }
    }
    for (long t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    double s = bench_now() - t0;
    for (long t = 0; t < threads; t++)
        if (ws[t].st != SL_OK) {
            fprintf(stderr, "s3: %s\n", ws[t].error);
            exit(1);
        }
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 6 || (strcmp(argv[5], "reuse") != 0 && strcmp(argv[5], "fresh") != 0)) {
        fprintf(stderr, "usage: s3 PREFIX N THREADS BYTES reuse|fresh\n");
        return 2;
    }
    const char *prefix = argv[1];
    long n = strtol(argv[2], NULL, 10), threads = strtol(argv[3], NULL, 10);
    size_t bytes = (size_t)strtoull(argv[4], NULL, 10);
    if (n < 1 || threads < 1 || threads > 64) {
        fprintf(stderr, "s3: N >= 1 and 1 <= THREADS <= 64\n");
        return 2;
    }
    sl_s3_params p = sl_s3_default_params();
    p.connection_per_request = strcmp(argv[5], "fresh") == 0;
    sl_s3 *s3;
    if (sl_s3_from_env(&p, &s3) != SL_OK) {
        fprintf(stderr, "s3: %s\n", sl_last_error());
        return 1;
    }
    uint8_t *body = sl_calloc(1, bytes ? bytes : 1);
    if (!body)
        return 1;
    double get_s = phase(s3, prefix, n, threads, body, bytes, false);
    sl_curl_counts after_get = sl_curl_counts_now();
    double put_s = phase(s3, prefix, n, threads, body, bytes, true);
    sl_curl_counts all = sl_curl_counts_now();
    printf("{\"mode\": \"%s\", \"n\": %ld, \"threads\": %ld, \"bytes\": %zu, "
           "\"get_per_s\": %.1f, \"put_per_s\": %.1f, \"get_requests\": %ld, "
           "\"get_connections\": %ld, \"put_requests\": %ld, \"put_connections\": %ld}\n",
           argv[5], n, threads, bytes, (double)n / get_s, (double)n / put_s, after_get.requests,
           after_get.connections, all.requests - after_get.requests,
           all.connections - after_get.connections);
    sl_free(body);
    sl_s3_free(s3);
    return 0;
}
