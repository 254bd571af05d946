/* sluice/metrics.h — a Prometheus metrics registry, its text exposition and
 * a small HTTP server that serves it at /metrics.
 *
 * Thread rules: every call is thread-safe. Updates through a child handle
 * (sl_metrics_counter_inc, _add, gauge_set, histogram_observe) are lock-free
 * relaxed atomics: look a child up once, keep the pointer, update it often.
 * Ownership: the registry owns families and children; their pointers stay
 * valid until sl_metrics_free(). Text from sl_metrics_render() is freed with
 * sl_metrics_text_free(). Stop every server before freeing its registry.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_metrics sl_metrics;               /* a registry */
typedef struct sl_metrics_family sl_metrics_family; /* one metric name */
typedef struct sl_metrics_child sl_metrics_child;   /* one label-value tuple */
typedef struct sl_metrics_server sl_metrics_server; /* the HTTP endpoint */

typedef enum sl_metrics_type {
    SL_METRICS_COUNTER,   /* only goes up; exposed as `counter` */
    SL_METRICS_GAUGE,     /* goes up and down; exposed as `gauge` */
    SL_METRICS_HISTOGRAM, /* _bucket{le=...} (cumulative), _sum, _count */
} sl_metrics_type;

/* --- the registry ---------------------------------------------------------- */

typedef struct sl_metrics_params {
    /* Register process_cpu_seconds_total, process_resident_memory_bytes,
     * process_virtual_memory_bytes, process_start_time_seconds,
     * process_open_fds and process_max_fds (read from /proc at scrape
     * time). Default true. */
    bool process_metrics;
    /* Register sluice_gpu_utilization_ratio, sluice_gpu_memory_used_bytes
     * and sluice_gpu_memory_total_bytes, labelled gpu="0", "1", ..., read
     * from NVIDIA's NVML at scrape time. NVML is loaded at run time
     * (libnvidia-ml.so.1, or the path in $SLUICE_NVML_LIBRARY); without it
     * there are no such series and one debug line. Default false. */
    bool gpu_metrics;
} sl_metrics_params;

sl_metrics_params sl_metrics_default_params(void);

/* Creates a registry into *out (freed with sl_metrics_free).
 * SL_ERR_NOMEM: *out is NULL. */
sl_status sl_metrics_new(const sl_metrics_params *params, sl_metrics **out);
/* Frees the registry, its families and children. Accepts NULL. */
void sl_metrics_free(sl_metrics *m);

/* --- families ---------------------------------------------------------------- */

typedef struct sl_metrics_family_params {
    sl_metrics_type type;
    /* Prometheus metric name, [a-zA-Z_:][a-zA-Z0-9_:]* ("vllm:..." works).
     * Counters should end in _total; that is not enforced. */
    const char *name;
    const char *help;               /* any UTF-8; NULL means "" */
    const char *const *label_names; /* n_labels names, [a-zA-Z_][a-zA-Z0-9_]*,
                                       not starting with "__", distinct;
                                       histograms may not use "le" */
    size_t n_labels;
    /* Histograms: strictly increasing finite upper bounds; a +Inf bucket is
     * always added (a trailing +Inf here is accepted and dropped). NULL/0
     * means the Prometheus client default {.005 .01 .025 .05 .075 .1 .25
     * .5 .75 1 2.5 5 7.5 10}. Copied. */
    const double *buckets;
    size_t n_buckets;
} sl_metrics_family_params;

sl_metrics_family_params sl_metrics_family_default_params(void);

/* Registers a family and returns it in *out (owned by the registry). All
 * strings are copied.
 * SL_ERR_INVALID_ARG: a bad name, label name or bucket list, or the name
 *   (or a histogram's _bucket/_sum/_count) is already taken; the message
 *   names the metric and the rule it breaks. *out is NULL.
 * SL_ERR_NOMEM: *out is NULL. */
sl_status sl_metrics_register(sl_metrics *m, const sl_metrics_family_params *params,
                              sl_metrics_family **out);

/* Shorthands for sl_metrics_register(). `label_names` is a NULL-terminated
 * array, or NULL for no labels. */
sl_status sl_metrics_add_counter(sl_metrics *m, const char *name, const char *help,
                                 const char *const *label_names, sl_metrics_family **out);
sl_status sl_metrics_add_gauge(sl_metrics *m, const char *name, const char *help,
                               const char *const *label_names, sl_metrics_family **out);
sl_status sl_metrics_add_histogram(sl_metrics *m, const char *name, const char *help,
                                   const char *const *label_names, const double *buckets,
                                   size_t n_buckets, sl_metrics_family **out);

/* The family registered under `name`, or NULL. */
sl_metrics_family *sl_metrics_find(sl_metrics *m, const char *name);

/* --- children ---------------------------------------------------------------- */

/* The child for one tuple of label values (as many as the family has label
 * names, in the same order; any UTF-8 string, copied), created on first use.
 * Returns the same pointer for the same tuple every time.
 * SL_ERR_INVALID_ARG: a NULL value. SL_ERR_NOMEM. *out is NULL on error. */
sl_status sl_metrics_child_get(sl_metrics_family *f, const char *const *label_values,
                               sl_metrics_child **out);
/* Variadic form: exactly as many `const char *` values as the family has
 * labels, e.g. sl_metrics_with(f, "m", "stop"); sl_metrics_with(f) for a
 * family without labels. NULL on error (see sl_last_error()). */
sl_metrics_child *sl_metrics_with(sl_metrics_family *f, ...);

/* --- updates (hot path: relaxed atomics, no locks) ------------------------- */

/* Counters. Negative, NaN and infinite amounts are ignored (a counter only
 * goes up). The integer forms are a single atomic add. */
void sl_metrics_counter_inc(sl_metrics_child *c);
void sl_metrics_counter_add_u64(sl_metrics_child *c, uint64_t n);
void sl_metrics_counter_add(sl_metrics_child *c, double v);

/* Gauges. */
void sl_metrics_gauge_set(sl_metrics_child *c, double v);
void sl_metrics_gauge_add(sl_metrics_child *c, double v); /* v may be < 0 */

/* Histograms: counts v in the first bucket whose bound is >= v. NaN is
 * counted in +Inf only and makes _sum NaN, as in the Prometheus clients. */
void sl_metrics_histogram_observe(sl_metrics_child *c, double v);

/* The current value of a counter or gauge child (callback children call
 * their callback). Histograms: their _sum. */
double sl_metrics_value(const sl_metrics_child *c);
/* A histogram child's _count, and the cumulative count of its bucket `i`
 * (0 .. sl_metrics_bucket_count()-1, the last one is +Inf). */
uint64_t sl_metrics_histogram_count(const sl_metrics_child *c);
uint64_t sl_metrics_histogram_bucket(const sl_metrics_child *c, size_t i);
size_t sl_metrics_bucket_count(const sl_metrics_family *f); /* incl. +Inf */

/* Makes a counter or gauge child's value come from fn(user), called at
 * scrape time (queue depths, bytes in flight, RSS); later updates through
 * the child are ignored. fn runs on the scraping thread while the registry
 * is locked: it must be thread-safe and must not call sl_metrics_* on the
 * same registry other than sl_metrics_value() on a child of another family
 * (its own family's lock is held: reading one of its children deadlocks).
 * fn NULL restores normal values.
 * SL_ERR_INVALID_ARG on a histogram child. */
typedef double (*sl_metrics_value_fn)(void *user);
sl_status sl_metrics_child_set_fn(sl_metrics_child *c, sl_metrics_value_fn fn, void *user);

/* --- exposition ------------------------------------------------------------ */

/* Prometheus text format 0.0.4 (see docs/metrics.md): families sorted by
 * name, children by their label values. *text is NUL-terminated, *len
 * excludes the NUL (len may be NULL); free with sl_metrics_text_free.
 * SL_ERR_NOMEM: *text is NULL. */
sl_status sl_metrics_render(sl_metrics *m, char **text, size_t *len);
void sl_metrics_text_free(char *text);

#define SL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* --- the HTTP endpoint (libmicrohttpd) -------------------------------------- */

/* Starts serving the registry: GET (and HEAD) /metrics, 404 for unknown
 * paths, 405 for other methods. `address` is "HOST:PORT": an IPv4 address,
 * "[IPv6]", a host name such as "localhost", or empty for every interface
 * (":9090"); port 0 picks a free port (read it with
 * sl_metrics_server_port()). Requests are served on a background thread,
 * over at most 64 connections at once (fewer under a low RLIMIT_NOFILE: an
 * eighth of it), so that clients cannot take the process's descriptors.
 * Bound to a loopback address, it answers 403 to a request whose Host is a
 * name other than localhost (DNS rebinding: docs/monitoring.md).
 * SL_ERR_INVALID_ARG: the address cannot be parsed or resolved.
 * SL_ERR_IO: it cannot be bound or listened on (the message names the
 *   address and the cause, e.g. "Address already in use").
 * *server is NULL on error. */
sl_status sl_metrics_server_start(sl_metrics *m, const char *address, sl_metrics_server **server);
/* The same, answering only requests that bring `token` (copied; NULL: every
 * request, as above): "Authorization: Bearer TOKEN" or a "token=TOKEN"
 * query argument; others get 401 with "WWW-Authenticate: Bearer". For a
 * host other users share, where loopback is open to all of them. The
 * token is compared in constant time; SL_ERR_INVALID_ARG for "". */
sl_status sl_metrics_server_start_token(sl_metrics *m, const char *address, const char *token,
                                        sl_metrics_server **server);
/* The bound TCP port (the real one when 0 was asked for). */
int sl_metrics_server_port(const sl_metrics_server *s);
/* "http://HOST:PORT" (no trailing slash) that reaches the server: the
 * bound numeric host, 127.0.0.1 or [::1] when it listens on every
 * interface. Owned by the server; valid until sl_metrics_server_stop().
 * "" for NULL. */
const char *sl_metrics_server_url(const sl_metrics_server *s);
/* Stops serving (waits for requests in progress) and frees. Accepts NULL. */
void sl_metrics_server_stop(sl_metrics_server *s);

/* Routes: more paths on the same server (a live page, a JSON endpoint).
 * The handler fills *reply, which arrives as {200, "text/plain;
 * charset=utf-8", NULL, 0, NULL}. The body is sent then released with
 * reply->free_body (NULL: the body is static). content_type must be a
 * string that lives as long as the server (a literal). The handler runs on
 * a server thread, possibly several at once. */
typedef struct sl_metrics_reply {
    int status;
    const char *content_type;
    char *body;
    size_t len;
    void (*free_body)(void *body);
} sl_metrics_reply;
typedef void (*sl_metrics_route_fn)(void *user, const char *path, sl_metrics_reply *reply);

/* Serves GET `path` (starts with '/') with fn: an exact match, or every
 * path with that prefix when `path` ends in '*' (e.g. "/thumb/" plus '*'); the handler
 * gets the requested path. Exact routes and prefixes are tried in the order
 * they were added; the first match wins. A path already routed (including
 * "/metrics") is replaced. Up to 32 routes.
 * SL_ERR_INVALID_ARG: a bad path, or too many routes. SL_ERR_NOMEM. */
sl_status sl_metrics_server_route(sl_metrics_server *s, const char *path,
                                  sl_metrics_route_fn fn, void *user);

#ifdef __cplusplus
}
#endif
#endif
