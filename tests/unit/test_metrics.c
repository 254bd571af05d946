/* Unit tests: obs/ — the metrics registry, the Prometheus text exposition
 * (compared with text written by hand before the code ran), histogram
 * cumulation, number formatting, exact sums under 8 threads, name rules,
 * process_* metrics and the HTTP endpoint (over a real socket). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "obs/metrics_impl.h"
#include "sluice/metrics.h"

static sl_metrics *new_registry(void)
{
    sl_metrics_params p = sl_metrics_default_params();
    p.process_metrics = false;
    sl_metrics *m;
    assert_int_equal(sl_metrics_new(&p, &m), SL_OK);
    return m;
}

static char *render(sl_metrics *m)
{
    char *text;
    size_t len;
    assert_int_equal(sl_metrics_render(m, &text, &len), SL_OK);
    assert_int_equal(len, strlen(text));
    return text;
}

static double four_k(void *user) { return *(double *)user; }

/* --- the exposition, exactly ----------------------------------------------------- */

static void exposition_exact_text(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_family *succ, *depth, *rows, *lat, *inflight;
    const char *succ_labels[] = {"model_name", "finished_reason", NULL};
    assert_int_equal(sl_metrics_add_counter(m, "vllm:request_success_total",
                                            "Count of successfully processed requests.",
                                            succ_labels, &succ),
                     SL_OK);
    const char *stage[] = {"stage", NULL};
    assert_int_equal(sl_metrics_add_gauge(m, "sluice_queue_depth",
                                          "Rows waiting.\nPer stage \\ queue.", stage, &depth),
                     SL_OK);
    assert_int_equal(sl_metrics_add_counter(m, "sluice_rows_total", "Rows written.", NULL, &rows),
                     SL_OK);
    const double bounds[] = {0.25, 0.5, 2.5};
    assert_int_equal(sl_metrics_add_histogram(m, "vllm:e2e_request_latency_seconds",
                                              "Histogram of end to end request latency in "
                                              "seconds.",
                                              NULL, bounds, 3, &lat),
                     SL_OK);
    assert_int_equal(sl_metrics_add_gauge(m, "sluice_bytes_in_flight",
                                          "Bytes held by rows in flight.", NULL, &inflight),
                     SL_OK);

    sl_metrics_child *stop = sl_metrics_with(succ, "m", "stop");
    for (int i = 0; i < 3; i++)
        sl_metrics_counter_inc(stop);
    sl_metrics_counter_add_u64(sl_metrics_with(succ, "m", "length"), 2);
    sl_metrics_counter_add(sl_metrics_with(succ, "a\\b\"c\nd", "stop"), 1.5);
    assert_ptr_equal(sl_metrics_with(succ, "m", "stop"), stop);

    sl_metrics_gauge_set(sl_metrics_with(depth, "zz"), INFINITY);
    sl_metrics_gauge_set(sl_metrics_with(depth, "encode"), 1e6);
    sl_metrics_gauge_set(sl_metrics_with(depth, "decode"), 1.0);
    sl_metrics_gauge_add(sl_metrics_with(depth, "decode"), -3.5);

    sl_metrics_child *l = sl_metrics_with(lat);
    const double obs[] = {0.125, 0.25, 0.375, 3, 100};
    for (size_t i = 0; i < 5; i++)
        sl_metrics_histogram_observe(l, obs[i]);

    double v = 4096;
    assert_int_equal(sl_metrics_child_set_fn(sl_metrics_with(inflight), four_k, &v), SL_OK);
    sl_metrics_gauge_set(sl_metrics_with(inflight), 7); /* ignored: the callback wins */

    const char *want =
        "# HELP sluice_bytes_in_flight Bytes held by rows in flight.\n"
        "# TYPE sluice_bytes_in_flight gauge\n"
        "sluice_bytes_in_flight 4096\n"
        "# HELP sluice_queue_depth Rows waiting.\\nPer stage \\\\ queue.\n"
        "# TYPE sluice_queue_depth gauge\n"
        "sluice_queue_depth{stage=\"decode\"} -2.5\n"
        "sluice_queue_depth{stage=\"encode\"} 1000000\n"
        "sluice_queue_depth{stage=\"zz\"} +Inf\n"
        "# HELP sluice_rows_total Rows written.\n"
        "# TYPE sluice_rows_total counter\n"
        "sluice_rows_total 0\n"
        "# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in "
        "seconds.\n"
        "# TYPE vllm:e2e_request_latency_seconds histogram\n"
        "vllm:e2e_request_latency_seconds_bucket{le=\"0.25\"} 2\n"
        "vllm:e2e_request_latency_seconds_bucket{le=\"0.5\"} 3\n"
        "vllm:e2e_request_latency_seconds_bucket{le=\"2.5\"} 3\n"
        "vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\"} 5\n"
        "vllm:e2e_request_latency_seconds_sum 103.75\n"
        "vllm:e2e_request_latency_seconds_count 5\n"
        "# HELP vllm:request_success_total Count of successfully processed requests.\n"
        "# TYPE vllm:request_success_total counter\n"
        "vllm:request_success_total{model_name=\"a\\\\b\\\"c\\nd\",finished_reason=\"stop\"} 1.5\n"
        "vllm:request_success_total{model_name=\"m\",finished_reason=\"length\"} 2\n"
        "vllm:request_success_total{model_name=\"m\",finished_reason=\"stop\"} 3\n";
    char *text = render(m);
    assert_string_equal(text, want);
    sl_metrics_text_free(text);

    /* Rendering twice gives the same text (stable order). */
    text = render(m);
    assert_string_equal(text, want);
    sl_metrics_text_free(text);
    sl_metrics_free(m);
}

static void empty_registry_renders_empty_text(void **state)
{
    sl_metrics *m = new_registry();
    char *text = render(m);
    assert_string_equal(text, "");
    sl_metrics_text_free(text);
    sl_metrics_free(m);
}

/* --- histograms -------------------------------------------------------------------- */

static void histogram_buckets_are_cumulative(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_family *h;
    const char *labels[] = {"stage", NULL};
    const double bounds[] = {1, 2, 4, INFINITY}; /* trailing +Inf is dropped, added back */
    assert_int_equal(sl_metrics_add_histogram(m, "h", "", labels, bounds, 4, &h), SL_OK);
    assert_int_equal(sl_metrics_bucket_count(h), 4);
    sl_metrics_child *c = sl_metrics_with(h, "s");
    const double obs[] = {-1, 0.5, 1, 1.5, 2, 3, 4, 5, 1e9};
    for (size_t i = 0; i < 9; i++)
        sl_metrics_histogram_observe(c, obs[i]);
    assert_int_equal(sl_metrics_histogram_bucket(c, 0), 3); /* -1, 0.5, 1 */
    assert_int_equal(sl_metrics_histogram_bucket(c, 1), 5); /* + 1.5, 2 */
    assert_int_equal(sl_metrics_histogram_bucket(c, 2), 7); /* + 3, 4 */
    assert_int_equal(sl_metrics_histogram_bucket(c, 3), 9); /* + 5, 1e9 */
    assert_int_equal(sl_metrics_histogram_count(c), 9);
    assert_true(sl_metrics_value(c) == 1000000016.0);

    char *text = render(m);
    assert_non_null(strstr(text, "# TYPE h histogram\n"
                                 "h_bucket{stage=\"s\",le=\"1\"} 3\n"
                                 "h_bucket{stage=\"s\",le=\"2\"} 5\n"
                                 "h_bucket{stage=\"s\",le=\"4\"} 7\n"
                                 "h_bucket{stage=\"s\",le=\"+Inf\"} 9\n"
                                 "h_sum{stage=\"s\"} 1000000016\n"
                                 "h_count{stage=\"s\"} 9\n"));
    sl_metrics_text_free(text);

    /* NaN goes to +Inf only, and poisons the sum as in the client libraries. */
    sl_metrics_histogram_observe(c, NAN);
    assert_int_equal(sl_metrics_histogram_bucket(c, 2), 7);
    assert_int_equal(sl_metrics_histogram_bucket(c, 3), 10);
    assert_true(isnan(sl_metrics_value(c)));

    /* Default buckets: the Prometheus client's 14 + Inf. */
    sl_metrics_family *d;
    assert_int_equal(sl_metrics_add_histogram(m, "d_seconds", "x", NULL, NULL, 0, &d), SL_OK);
    assert_int_equal(sl_metrics_bucket_count(d), 15);
    sl_metrics_histogram_observe(sl_metrics_with(d), 0.005);
    assert_int_equal(sl_metrics_histogram_bucket(sl_metrics_with(d), 0), 1);
    sl_metrics_free(m);
}

/* --- numbers ------------------------------------------------------------------------ */

static void floats_are_formatted_per_spec(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.0, "0"},
        {1.0, "1"},
        {-2.0, "-2"},
        {1e6, "1000000"},
        {123456789012.0, "123456789012"},
        {0.1, "0.1"},
        {0.005, "0.005"},
        {2.5, "2.5"},
        {-3.75, "-3.75"},
        {1.0 / 3.0, "0.3333333333333333"},
        {1.5e-7, "1.5e-07"},
        {1e20, "1e+20"},
        {123456789.125, "123456789.125"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    char out[32];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = sl_obs_format_double(cases[i].v, out);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
}

/* --- concurrency ---------------------------------------------------------------------- */

#define THREADS 8
#define ITERS 100000

typedef struct worker {
    sl_metrics_family *counter, *gauge, *hist;
    int id;
} worker;

static void *hammer(void *arg)
{
    worker *w = arg;
    static const char *stages[] = {"a", "b", "c"};
    sl_metrics_child *shared = sl_metrics_with(w->counter, "all");
    sl_metrics_child *g = sl_metrics_with(w->gauge);
    sl_metrics_child *h = sl_metrics_with(w->hist);
    for (int i = 0; i < ITERS; i++) {
        sl_metrics_counter_inc(shared);
        sl_metrics_counter_add(shared, 0.5); /* the CAS path */
        sl_metrics_gauge_add(g, (w->id % 2) ? 1.0 : -0.25);
        sl_metrics_histogram_observe(h, (double)(i % 4)); /* 0 1 2 3 */
        if (i % 1000 == 0) /* children made from many threads at once */
            sl_metrics_counter_inc(sl_metrics_with(w->counter, stages[(i / 1000) % 3]));
    }
    return NULL;
}

static void eight_threads_sum_exactly(void **state)
{
    sl_metrics *m = new_registry();
    worker w[THREADS];
    sl_metrics_family *counter, *gauge, *hist;
    const char *labels[] = {"stage", NULL};
    const double bounds[] = {0.5, 1.5, 2.5};
    assert_int_equal(sl_metrics_add_counter(m, "c_total", "c", labels, &counter), SL_OK);
    assert_int_equal(sl_metrics_add_gauge(m, "g", "g", NULL, &gauge), SL_OK);
    assert_int_equal(sl_metrics_add_histogram(m, "h", "h", NULL, bounds, 3, &hist), SL_OK);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){counter, gauge, hist, i};
        pthread_create(&t[i], NULL, hammer, &w[i]);
    }
    /* Scrape while they run: must not crash or deadlock. */
    for (int i = 0; i < 20; i++) {
        char *text = render(m);
        sl_metrics_text_free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    assert_true(sl_metrics_value(sl_metrics_with(counter, "all")) == THREADS * ITERS * 1.5);
    /* 4 odd threads add 1.0, 4 even ones -0.25: all exact in binary. */
    assert_true(sl_metrics_value(sl_metrics_with(gauge)) ==
                (THREADS / 2) * ITERS * 1.0 - (THREADS / 2) * ITERS * 0.25);
    sl_metrics_child *h = sl_metrics_with(hist);
    assert_int_equal(sl_metrics_histogram_count(h), THREADS * ITERS);
    for (size_t b = 0; b < 4; b++)
        assert_int_equal(sl_metrics_histogram_bucket(h, b), (b + 1) * THREADS * ITERS / 4);
    assert_true(sl_metrics_value(h) == THREADS * (ITERS / 4) * (0.0 + 1 + 2 + 3));
    /* i % 1000 == 0 happens 100 times per thread: 34 a, 33 b, 33 c. */
    assert_true(sl_metrics_value(sl_metrics_with(counter, "a")) == THREADS * 34);
    assert_true(sl_metrics_value(sl_metrics_with(counter, "b")) == THREADS * 33);
    assert_true(sl_metrics_value(sl_metrics_with(counter, "c")) == THREADS * 33);
    sl_metrics_free(m);
}

static void many_children_grow_the_table(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_family *f;
    const char *labels[] = {"id", NULL};
    assert_int_equal(sl_metrics_add_counter(m, "x_total", "x", labels, &f), SL_OK);
    sl_metrics_child *kids[1000];
    char id[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "%04d", 999 - i);
        kids[i] = sl_metrics_with(f, id);
        sl_metrics_counter_add_u64(kids[i], (uint64_t)i);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "%04d", 999 - i);
        assert_ptr_equal(sl_metrics_with(f, id), kids[i]);
    }
    char *text = render(m);
    /* Sorted by value: id 0000 (i = 999) first. */
    assert_non_null(strstr(text, "# TYPE x_total counter\nx_total{id=\"0000\"} 999\n"
                                 "x_total{id=\"0001\"} 998\n"));
    assert_non_null(strstr(text, "x_total{id=\"0999\"} 0\n"));
    sl_metrics_text_free(text);
    sl_metrics_free(m);
}

/* --- names -------------------------------------------------------------------------- */

static sl_status reg(sl_metrics *m, sl_metrics_type type, const char *name,
                     const char *const *labels, size_t n)
{
    sl_metrics_family_params p = sl_metrics_family_default_params();
    p.type = type;
    p.name = name;
    p.help = "h";
    p.label_names = labels;
    p.n_labels = n;
    sl_metrics_family *f = (sl_metrics_family *)0x1;
    sl_status st = sl_metrics_register(m, &p, &f);
    if (st != SL_OK)
        assert_null(f);
    return st;
}

static void invalid_names_rejected(void **state)
{
    sl_metrics *m = new_registry();
    const char *bad_names[] = {"", "1abc", "a-b", "has space", "é", "a.b", "x{y}"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_int_equal(reg(m, SL_METRICS_COUNTER, bad_names[i], NULL, 0), SL_ERR_INVALID_ARG);
        assert_non_null(strstr(sl_last_error(), "is invalid"));
    }
    assert_int_equal(reg(m, SL_METRICS_COUNTER, NULL, NULL, 0), SL_ERR_INVALID_ARG);

    /* vLLM's names with ':' are fine; so are _ and digits after the start. */
    assert_int_equal(reg(m, SL_METRICS_COUNTER, "vllm:num_preemptions_total", NULL, 0), SL_OK);
    assert_int_equal(reg(m, SL_METRICS_GAUGE, ":_x9", NULL, 0), SL_OK);

    const char *colon[] = {"a:b"};
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "g1", colon, 1), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "label name \"a:b\""));
    const char *reserved[] = {"__name__"};
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "g2", reserved, 1), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "reserved"));
    const char *twice[] = {"a", "b", "a"};
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "g3", twice, 3), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "appears twice"));
    const char *le[] = {"le"};
    assert_int_equal(reg(m, SL_METRICS_HISTOGRAM, "h1", le, 1), SL_ERR_INVALID_ARG);
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "g4", le, 1), SL_OK); /* le is fine elsewhere */
    const char *null_label[] = {NULL};
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "g5", null_label, 1), SL_ERR_INVALID_ARG);

    /* Duplicates, including a histogram's derived names. */
    assert_int_equal(reg(m, SL_METRICS_COUNTER, "vllm:num_preemptions_total", NULL, 0),
                     SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "already registered"));
    assert_int_equal(reg(m, SL_METRICS_HISTOGRAM, "lat", NULL, 0), SL_OK);
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "lat_count", NULL, 0), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "lat_count"));
    assert_int_equal(reg(m, SL_METRICS_GAUGE, "foo_sum", NULL, 0), SL_OK);
    assert_int_equal(reg(m, SL_METRICS_HISTOGRAM, "foo", NULL, 0), SL_ERR_INVALID_ARG);

    /* Bucket bounds. */
    sl_metrics_family *f;
    const double down[] = {1, 0.5};
    assert_int_equal(sl_metrics_add_histogram(m, "b1", "", NULL, down, 2, &f),
                     SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "strictly increasing"));
    const double same[] = {1, 1};
    assert_int_equal(sl_metrics_add_histogram(m, "b2", "", NULL, same, 2, &f),
                     SL_ERR_INVALID_ARG);
    const double nan[] = {NAN};
    assert_int_equal(sl_metrics_add_histogram(m, "b3", "", NULL, nan, 1, &f),
                     SL_ERR_INVALID_ARG);
    const double mid_inf[] = {1, INFINITY, 3};
    assert_int_equal(sl_metrics_add_histogram(m, "b4", "", NULL, mid_inf, 3, &f),
                     SL_ERR_INVALID_ARG);

    /* Label values: any UTF-8, but not NULL and not broken UTF-8. */
    const char *labels[] = {"model_name", NULL};
    assert_int_equal(sl_metrics_add_counter(m, "ok_total", "", labels, &f), SL_OK);
    assert_non_null(sl_metrics_with(f, "héllo ✓"));
    assert_null(sl_metrics_with(f, "\xff\xfe"));
    assert_non_null(strstr(sl_last_error(), "not valid UTF-8"));
    sl_metrics_child *c = (sl_metrics_child *)0x1;
    const char *null_value[] = {NULL};
    assert_int_equal(sl_metrics_child_get(f, null_value, &c), SL_ERR_INVALID_ARG);
    assert_null(c);

    /* Histograms take no callback. */
    assert_int_equal(sl_metrics_child_set_fn(sl_metrics_with(sl_metrics_find(m, "lat")), four_k,
                                             NULL),
                     SL_ERR_INVALID_ARG);
    assert_null(sl_metrics_find(m, "nope"));
    sl_metrics_free(m);
}

static void counters_ignore_negative_amounts(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_family *f;
    assert_int_equal(sl_metrics_add_counter(m, "n_total", "", NULL, &f), SL_OK);
    sl_metrics_child *c = sl_metrics_with(f);
    sl_metrics_counter_add(c, 2);
    sl_metrics_counter_add(c, -1);
    sl_metrics_counter_add(c, NAN);
    sl_metrics_counter_add(c, INFINITY);
    sl_metrics_counter_add(c, 0.25);
    assert_true(sl_metrics_value(c) == 2.25);
    sl_metrics_free(m);
}

static void failed_allocations_are_reported(void **state)
{
    /* Fail each allocation in turn while building and rendering a registry. */
    for (long n = 0; n < 40; n++) {
        sl_alloc_fail_after(n);
        sl_metrics *m = NULL;
        sl_metrics_params p = sl_metrics_default_params();
        p.process_metrics = false;
        sl_status st = sl_metrics_new(&p, &m);
        sl_metrics_family *f = NULL;
        const char *labels[] = {"a", NULL};
        if (st == SL_OK)
            st = sl_metrics_add_histogram(m, "h", "", labels, NULL, 0, &f);
        if (st == SL_OK && !sl_metrics_with(f, "x"))
            st = SL_ERR_NOMEM;
        char *text = NULL;
        if (st == SL_OK)
            st = sl_metrics_render(m, &text, NULL);
        sl_alloc_fail_after(-1);
        if (st != SL_OK) {
            assert_int_equal(st, SL_ERR_NOMEM);
            assert_null(text);
        }
        sl_metrics_text_free(text);
        sl_metrics_free(m);
    }
    assert_int_equal(sl_alloc_live_bytes(), 0);
}

/* A registration that fails for memory leaves nothing behind: the same
 * name registers once memory is back, and no half-made family shows. */
static void a_failed_registration_can_be_retried(void **state)
{
    (void)state;
    int failures = 0;
    for (long n = 0; n < 20; n++) {
        sl_metrics *m = new_registry();
        sl_metrics_family *f = (sl_metrics_family *)m; /* must be cleared */
        sl_alloc_fail_after(n);
        sl_status st = sl_metrics_add_counter(m, "c_total", "C.", NULL, &f);
        sl_alloc_fail_after(-1);
        if (st != SL_OK) {
            failures++;
            assert_int_equal(st, SL_ERR_NOMEM);
            assert_null(f);
            assert_null(sl_metrics_find(m, "c_total"));
            char *text = render(m);
            assert_null(strstr(text, "c_total"));
            sl_metrics_text_free(text);
            assert_int_equal(sl_metrics_add_counter(m, "c_total", "C.", NULL, &f), SL_OK);
        }
        assert_non_null(f);
        sl_metrics_counter_inc(sl_metrics_with(f));
        char *text = render(m);
        assert_non_null(strstr(text, "\nc_total 1\n"));
        sl_metrics_text_free(text);
        sl_metrics_free(m);
    }
    assert_true(failures > 0);
    assert_int_equal(sl_alloc_live_bytes(), 0);
}

/* --- process metrics ------------------------------------------------------------------- */

static double sample_value(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    assert_non_null(p);
    return strtod(p + strlen(key), NULL);
}

static void process_metrics_are_plausible(void **state)
{
    sl_metrics *m;
    assert_int_equal(sl_metrics_new(NULL, &m), SL_OK);
    char *text = render(m);
    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "# TYPE process_resident_memory_bytes gauge\n"));
    double rss = sample_value(text, "process_resident_memory_bytes");
    double vsz = sample_value(text, "process_virtual_memory_bytes");
    assert_true(rss > 1e5 && rss < 1e11);
    assert_true(vsz >= rss);
    assert_true(sample_value(text, "process_cpu_seconds_total") >= 0);
    double start = sample_value(text, "process_start_time_seconds");
    assert_true(start > 1.6e9 && start <= (double)time(NULL) + 1);
    double fds = sample_value(text, "process_open_fds");
    assert_true(fds >= 3 && fds < 10000);
    assert_true(sample_value(text, "process_max_fds") >= fds);
    sl_metrics_text_free(text);
    sl_metrics_free(m);
}

/* --- HTTP -------------------------------------------------------------------------------- */

/* One request over a fresh connection; the whole response into buf. */
/* A request with `headers` ("Name: value\r\n" lines, or "") added. */
static void http_with(int port, const char *method, const char *path, const char *headers,
                      char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "%sContent-Length: 0\r\n\r\n",
                     method, path, headers);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
}

static void http(int port, const char *method, const char *path, char *buf, size_t cap)
{
    http_with(port, method, path, "", buf, cap);
}

static void hello(void *user, const char *path, sl_metrics_reply *reply)
{
    reply->content_type = "application/json";
    reply->body = sl_strdup("{\"path\":\"/hello\"}");
    reply->len = strlen(reply->body);
    reply->free_body = sl_free;
}

static void echo_path(void *user, const char *path, sl_metrics_reply *reply)
{
    reply->body = sl_strdup(path);
    reply->len = strlen(reply->body);
    reply->free_body = sl_free;
}

static void prefix_routes_get_the_path(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_server *s;
    assert_int_equal(sl_metrics_server_start(m, "127.0.0.1:0", &s), SL_OK);
    int port = sl_metrics_server_port(s);
    assert_int_equal(sl_metrics_server_route(s, "/", hello, NULL), SL_OK);
    assert_int_equal(sl_metrics_server_route(s, "/thumb/*", echo_path, NULL), SL_OK);
    static char buf[8192];
    http(port, "GET", "/thumb/17.jpg", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "\r\n\r\n/thumb/17.jpg"));
    /* "/" is exact: other paths do not fall to it. */
    http(port, "GET", "/thumbnail", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 404"));
    http(port, "GET", "/", buf, sizeof buf);
    assert_non_null(strstr(buf, "{\"path\":\"/hello\"}"));
    sl_metrics_server_stop(s);
    sl_metrics_free(m);
}

/* On a host other users share, loopback is open to all of them: with a
 * token, a request without it (or with another, or a prefix of it) gets
 * 401 and nothing of the run, on every route; the header or the query
 * argument lets it in. */
static void a_token_keeps_out_requests_without_it(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_server *s;
    assert_int_equal(sl_metrics_server_start_token(m, "127.0.0.1:0", "", &s), SL_ERR_INVALID_ARG);
    assert_null(s);
    const char *token = "0123456789abcdef-XYZ";
    assert_int_equal(sl_metrics_server_start_token(m, "127.0.0.1:0", token, &s), SL_OK);
    int port = sl_metrics_server_port(s);
    assert_int_equal(sl_metrics_server_route(s, "/", hello, NULL), SL_OK);
    static char buf[8192];
    const char *refused[][2] = {
        {"/metrics", ""},
        {"/", ""},
        {"/nowhere", ""},
        {"/metrics", "Authorization: Bearer 0123456789abcdef-XY\r\n"},
        {"/metrics", "Authorization: Bearer 0123456789abcdef-XYZW\r\n"},
        {"/metrics", "Authorization: Basic MDEyMzQ1Njc4OWFiY2RlZi1YWVo=\r\n"},
        {"/?token=0123456789abcdef-xyz", ""},
        {"/?token=", ""},
        {"/metrics?tok=0123456789abcdef-XYZ", ""},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        http_with(port, "GET", refused[i][0], refused[i][1], buf, sizeof buf);
        if (!strstr(buf, "HTTP/1.1 401"))
            fail_msg("%s with '%s' was let in: %.200s", refused[i][0], refused[i][1], buf);
        assert_non_null(strstr(buf, "WWW-Authenticate: Bearer realm=\"sluice\"\r\n"));
        assert_null(strstr(buf, "{\"path\""));
        assert_null(strstr(buf, "# TYPE"));
    }
    http_with(port, "GET", "/metrics", "Authorization: Bearer 0123456789abcdef-XYZ\r\n", buf,
              sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    http_with(port, "GET", "/?token=0123456789abcdef-XYZ", "", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "{\"path\":\"/hello\"}"));
    http_with(port, "GET", "/nowhere?token=0123456789abcdef-XYZ", "", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 404"));
    sl_metrics_server_stop(s);
    sl_metrics_free(m);
}

static char *render_with_gpu(const char *nvml_path)
{
    setenv("SLUICE_NVML_LIBRARY", nvml_path, 1);
    sl_metrics_params p = sl_metrics_default_params();
    p.process_metrics = false;
    p.gpu_metrics = true;
    sl_metrics *m;
    assert_int_equal(sl_metrics_new(&p, &m), SL_OK);
    char *text;
    assert_int_equal(sl_metrics_render(m, &text, NULL), SL_OK);
    char *copy = sl_strdup(text);
    sl_metrics_text_free(text);
    sl_metrics_free(m);
    unsetenv("SLUICE_NVML_LIBRARY");
    return copy;
}

/* No NVML (this is what a machine without NVIDIA's driver sees): no GPU
 * series, no failure. */
static void gpu_metrics_absent_without_nvml(void **state)
{
    char *text = render_with_gpu("/nonexistent/libnvidia-ml.so.1");
    assert_string_equal(text, "");
    sl_free(text);
}

/* tests/tools/fake_nvml: two devices whose figures the text must show. */
static void gpu_metrics_read_from_nvml(void **state)
{
    const char *fake = getenv("SLUICE_FAKE_NVML");
    if (!fake)
        skip();
    assert_int_equal(access(fake, R_OK), 0); /* built with the tests (tests/tools) */
    char *text = render_with_gpu(fake);
    assert_non_null(strstr(text, "# TYPE sluice_gpu_utilization_ratio gauge\n"
                                 "sluice_gpu_utilization_ratio{gpu=\"0\"} 0.42\n"
                                 "sluice_gpu_utilization_ratio{gpu=\"1\"} 0.43\n"));
    assert_non_null(strstr(text, "sluice_gpu_memory_used_bytes{gpu=\"1\"} 2147483648\n"));
    assert_non_null(strstr(text, "sluice_gpu_memory_total_bytes{gpu=\"0\"} 85899345920\n"));
    sl_free(text);
}

static void http_endpoint_serves_and_refuses(void **state)
{
    sl_metrics *m = new_registry();
    sl_metrics_family *f;
    assert_int_equal(sl_metrics_add_counter(m, "vllm:prompt_tokens_total", "Prompt tokens.",
                                            NULL, &f),
                     SL_OK);
    sl_metrics_counter_add_u64(sl_metrics_with(f), 42);
    sl_metrics_server *s;
    assert_int_equal(sl_metrics_server_start(m, "127.0.0.1:0", &s), SL_OK);
    int port = sl_metrics_server_port(s);
    assert_true(port > 0 && port < 65536);

    static char buf[65536];
    http(port, "GET", "/metrics", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(
        strstr(buf, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\n# HELP vllm:prompt_tokens_total Prompt tokens.\n"
                                "# TYPE vllm:prompt_tokens_total counter\n"
                                "vllm:prompt_tokens_total 42\n"));
    http(port, "GET", "/nope", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 404"));
    http(port, "POST", "/metrics", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 405"));
    assert_non_null(strstr(buf, "Allow: GET, HEAD"));
    http(port, "HEAD", "/metrics", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_null(strstr(buf, "# HELP"));

    /* More routes can be added to a running server. */
    http(port, "GET", "/hello", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 404"));
    assert_int_equal(sl_metrics_server_route(s, "/hello", hello, NULL), SL_OK);
    http(port, "GET", "/hello", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\n{\"path\":\"/hello\"}"));
    assert_int_equal(sl_metrics_server_route(s, "hello", hello, NULL), SL_ERR_INVALID_ARG);

    /* The same port again: busy, and the message says so. */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    sl_metrics_server *s2 = (sl_metrics_server *)0x1;
    assert_int_equal(sl_metrics_server_start(m, addr, &s2), SL_ERR_IO);
    assert_null(s2);
    assert_non_null(strstr(sl_last_error(), addr));
    assert_non_null(strstr(sl_last_error(), "in use"));

    sl_metrics_server_stop(s);
    sl_metrics_server_stop(NULL);
    sl_metrics_free(m);
}

static void bad_addresses_are_named(void **state)
{
    sl_metrics *m = new_registry();
    const char *bad[] = {"nonsense", "127.0.0.1:http", "127.0.0.1:70000", "127.0.0.1:",
                         "::1:9090", "[::1]9090", "[::1:9090"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sl_metrics_server *s = (sl_metrics_server *)0x1;
        assert_int_equal(sl_metrics_server_start(m, bad[i], &s), SL_ERR_INVALID_ARG);
        assert_null(s);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        assert_non_null(strstr(sl_last_error(), quoted));
    }
    /* IPv6 loopback, where the kernel has it. */
    sl_metrics_server *s = NULL;
    if (sl_metrics_server_start(m, "[::1]:0", &s) == SL_OK) {
        assert_true(sl_metrics_server_port(s) > 0);
        sl_metrics_server_stop(s);
    }
    sl_metrics_free(m);
}

/* GET URL/metrics through the host and port the URL names (resolved as
 * numeric, as a browser would take them): the status line. */
static void get_metrics_at(const char *url, char *status, size_t cap)
{
    char host[128];
    int port = 0;
    const char *h = url + strlen("http://");
    const char *colon = h[0] == '[' ? strchr(h, ']') + 1 : strchr(h, ':');
    assert_non_null(colon);
    assert_int_equal(colon[0], ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - h), h);
    port = atoi(colon + 1);
    const char *numeric = host;
    if (host[0] == '[') { /* a v6 host, brackets off */
        host[strlen(host) - 1] = '\0';
        numeric = host + 1;
    }
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(numeric, service, &hints, &res) != 0)
        fail_msg("%s: the host \"%s\" is not a numeric address", url, numeric);
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0)
        fail_msg("%s: cannot connect: %s", url, strerror(errno));
    freeaddrinfo(res);
    char req[256]; /* Host as a browser sends it (a loopback server checks it) */
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     url + strlen("http://"));
    assert_int_equal(write(fd, req, (size_t)n), n);
    ssize_t r = read(fd, status, cap - 1);
    status[r > 0 ? r : 0] = '\0';
    close(fd);
}

/* The URL the server hands (printed by the CLI's metrics line) reaches it
 * for every way of asking: an any-address as its loopback, brackets only
 * around a v6 host. It was the asked-for text re-parsed by the CLI, which
 * printed http://[]:PORT or http://[0.0.0.0]:PORT, URLs that go nowhere. */
static void the_url_reaches_the_server(void **state)
{
    (void)state;
    sl_metrics *m = new_registry();
    static const char *const asked[][2] = {
        {":0", "http://127.0.0.1:"},          {"0.0.0.0:0", "http://127.0.0.1:"},
        {"[]:0", "http://127.0.0.1:"},        {"[0.0.0.0]:0", "http://127.0.0.1:"},
        {"[127.0.0.1]:0", "http://127.0.0.1:"}, {"127.0.0.1:0", "http://127.0.0.1:"},
        {"localhost:0", "http://"},           {"[localhost]:0", "http://"},
        {"[::1]:0", "http://[::1]:"},         {"[::]:0", "http://[::1]:"},
        {"[::0]:0", "http://[::1]:"},
    };
    for (size_t i = 0; i < sizeof asked / sizeof *asked; i++) {
        sl_metrics_server *s = NULL;
        if (sl_metrics_server_start(m, asked[i][0], &s) != SL_OK) {
            assert_non_null(strstr(asked[i][0], ":")); /* no IPv6 here: the v6 cases only */
            assert_true(asked[i][0][0] == '[' && asked[i][0][1] == ':');
            continue;
        }
        const char *url = sl_metrics_server_url(s);
        char want[64];
        snprintf(want, sizeof want, "%s%d", asked[i][1], sl_metrics_server_port(s));
        if (strcmp(asked[i][1], "http://") == 0) {
            if (strncmp(url, "http://", 7) != 0)
                fail_msg("%s: the URL is %s", asked[i][0], url);
        } else if (strcmp(url, want) != 0) {
            fail_msg("%s: the URL is %s, not %s", asked[i][0], url, want);
        }
        char status[512];
        get_metrics_at(url, status, sizeof status);
        if (strncmp(status, "HTTP/1.1 200", 12) != 0)
            fail_msg("%s: GET %s/metrics answered \"%.40s\"", asked[i][0], url, status);
        sl_metrics_server_stop(s);
    }
    assert_string_equal(sl_metrics_server_url(NULL), "");
    sl_metrics_free(m);
}

/* A connection to 127.0.0.1:port from source address `from` (another
 * loopback address is another client), non-blocking when asked. */
static int connect_from(const char *from, int port, bool nonblocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    assert_true(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, from, &src.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    assert_true(rc == 0 || (nonblocking && errno == EINPROGRESS));
    return fd;
}

/* GET /metrics from `from` with a 5 s read timeout: the status line, or
 * why there is none. */
static void scrape_from(const char *from, int port, char *status, size_t cap)
{
    int fd = connect_from(from, port, false);
    struct timeval five = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &five, sizeof five);
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    ssize_t r = write(fd, req, sizeof req - 1);
    r = r == (ssize_t)(sizeof req - 1) ? read(fd, status, cap - 1) : -1;
    if (r > 0)
        status[r] = '\0';
    else
        snprintf(status, cap, "(%s)", r < 0 ? strerror(errno) : "closed");
    close(fd);
}

/* 80 idle connections from one address, more than the server holds: a
 * client on another address is still answered at once. Without a share per
 * address they took every slot and it waited in the backlog until the 30 s
 * timeout closed the idle ones. */
static void one_address_cannot_take_every_connection(void **state)
{
    (void)state;
    sl_metrics *m = new_registry();
    sl_metrics_server *s = NULL;
    assert_int_equal(sl_metrics_server_start(m, "127.0.0.1:0", &s), SL_OK);
    int port = sl_metrics_server_port(s);
    int idle[80];
    for (size_t i = 0; i < sizeof idle / sizeof *idle; i++)
        idle[i] = connect_from("127.0.0.1", port, true);
    usleep(300 * 1000); /* the server accepts what it takes */

    char status[64];
    scrape_from("127.0.0.2", port, status, sizeof status);
    if (strncmp(status, "HTTP/1.1 200", 12) != 0)
        fail_msg("another address's GET /metrics got \"%.40s\"", status);
    for (size_t i = 0; i < sizeof idle / sizeof *idle; i++)
        close(idle[i]);
    sl_metrics_server_stop(s);
    sl_metrics_free(m);
}

/* Slowloris: connections that send part of a request and never finish it,
 * from the scraper's own address (a loopback server's every client is
 * 127.0.0.1) and then from four more addresses, as many as the server
 * holds. A Prometheus scrape must still be answered at once: the held
 * connections that have no request under way make room for it. Without
 * that, 16 from 127.0.0.1 closed the scrape at once, and 64 over four
 * addresses left a fifth waiting in the backlog; a client that sends a
 * header byte now and then is never idle for the 30 s timeout. */
static void slow_clients_cannot_keep_a_scrape_out(void **state)
{
    (void)state;
    sl_metrics *m = new_registry();
    sl_metrics_server *s = NULL;
    assert_int_equal(sl_metrics_server_start(m, "127.0.0.1:0", &s), SL_OK);
    int port = sl_metrics_server_port(s);
    static const char *const from[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
    int slow[5][16];
    const char part[] = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    char status[64];
    for (size_t a = 0; a < 5; a++) {
        for (size_t i = 0; i < 16; i++) {
            slow[a][i] = connect_from(from[a], port, false);
            assert_int_equal(write(slow[a][i], part, sizeof part - 1), (ssize_t)(sizeof part - 1));
        }
        usleep(200 * 1000); /* the server accepts them and reads their parts */
        if (a == 0 || a == 3) { /* 16 of the scraper's address; 64 over four */
            scrape_from(a == 0 ? "127.0.0.1" : "127.0.0.9", port, status, sizeof status);
            if (strncmp(status, "HTTP/1.1 200", 12) != 0)
                fail_msg("after %zu slow connections, GET /metrics got \"%.40s\"", 16 * (a + 1), status);
        }
    }
    /* The slow ones still held were not answered: they sent no request. */
    for (size_t a = 0; a < 5; a++)
        for (size_t i = 0; i < 16; i++)
            close(slow[a][i]);
    sl_metrics_server_stop(s);
    sl_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exposition_exact_text),
        cmocka_unit_test(empty_registry_renders_empty_text),
        cmocka_unit_test(histogram_buckets_are_cumulative),
        cmocka_unit_test(floats_are_formatted_per_spec),
        cmocka_unit_test(eight_threads_sum_exactly),
        cmocka_unit_test(many_children_grow_the_table),
        cmocka_unit_test(invalid_names_rejected),
        cmocka_unit_test(counters_ignore_negative_amounts),
        cmocka_unit_test(failed_allocations_are_reported),
        cmocka_unit_test(a_failed_registration_can_be_retried),
        cmocka_unit_test(process_metrics_are_plausible),
        cmocka_unit_test(http_endpoint_serves_and_refuses),
        cmocka_unit_test(bad_addresses_are_named),
        cmocka_unit_test(the_url_reaches_the_server),
        cmocka_unit_test(one_address_cannot_take_every_connection),
        cmocka_unit_test(slow_clients_cannot_keep_a_scrape_out),
        cmocka_unit_test(prefix_routes_get_the_path),
        cmocka_unit_test(a_token_keeps_out_requests_without_it),
        cmocka_unit_test(gpu_metrics_absent_without_nvml),
        cmocka_unit_test(gpu_metrics_read_from_nvml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
