/* obs/prometheus.c — the Prometheus text exposition format, version 0.0.4:
 *   # HELP <name> <help, with \ and newline escaped>
 *   # TYPE <name> counter|gauge|histogram
 *   <name>{<label>="<value, with \ " and newline escaped>",...} <value>
 * Families in name order, children in label-value order (byte-wise, label
 * by label), histogram buckets cumulative with le="+Inf" last, then _sum
 * and _count (_count is the +Inf bucket, so the two always agree). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "obs/metrics_impl.h"

/* --- a growing text buffer ---------------------------------------------------- */

typedef struct buf {
    char *data;
    size_t len, cap;
    bool failed;
} buf;

static void buf_put(buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *grown = sl_realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_double(buf *b, double v)
{
    char tmp[32];
    buf_put(b, tmp, sl_obs_format_double(v, tmp));
}

static void buf_u64(buf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    buf_put(b, tmp, (size_t)n);
}

/* Escapes \ and newline, and " too when `quote`. */
static void buf_escaped(buf *b, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (*s == '"' && quote)
            rep = "\\\"";
        if (rep) {
            buf_put(b, run, (size_t)(s - run));
            buf_str(b, rep);
            run = s + 1;
        }
    }
    buf_put(b, run, (size_t)(s - run));
}

/* --- numbers ------------------------------------------------------------------- */

size_t sl_obs_format_double(double v, char *out)
{
    if (isnan(v))
        return (size_t)snprintf(out, 32, "NaN");
    if (isinf(v))
        return (size_t)snprintf(out, 32, v > 0 ? "+Inf" : "-Inf");
    /* Whole numbers up to 2^63 in plain digits: no "1e+06". */
    if (v == floor(v) && fabs(v) < 9.2e18)
        return (size_t)snprintf(out, 32, "%lld", (long long)v);
    return sl_double_shortest(v, out);
}

/* --- ordering ------------------------------------------------------------------ */

static int child_cmp(const void *pa, const void *pb)
{
    const sl_metrics_child *a = *(sl_metrics_child *const *)pa;
    const sl_metrics_child *b = *(sl_metrics_child *const *)pb;
    for (size_t i = 0; i < a->family->n_labels; i++) {
        int c = strcmp(a->values[i], b->values[i]);
        if (c)
            return c;
    }
    return 0;
}

/* --- samples ---------------------------------------------------------------------- */

/* The escaped label pairs of a child, without braces: a="x",b="y". */
static void label_pairs(buf *b, const sl_metrics_family *f, const sl_metrics_child *c)
{
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i)
            buf_put(b, ",", 1);
        buf_str(b, f->label_names[i]);
        buf_put(b, "=\"", 2);
        buf_escaped(b, c->values[i], true);
        buf_put(b, "\"", 1);
    }
}

/* name<suffix>{pairs[,le="x"]} */
static void sample_head(buf *b, const sl_metrics_family *f, const char *suffix,
                        const buf *pairs, const char *le)
{
    buf_str(b, f->name);
    buf_str(b, suffix);
    if (pairs->len == 0 && !le)
        return;
    buf_put(b, "{", 1);
    if (pairs->len)
        buf_put(b, pairs->data, pairs->len);
    if (le) {
        if (pairs->len)
            buf_put(b, ",", 1);
        buf_str(b, "le=\"");
        buf_str(b, le);
        buf_put(b, "\"", 1);
    }
    buf_put(b, "}", 1);
}

/* `pairs` is scratch space, reused from child to child; `les` holds the
 * family's formatted bucket bounds, "+Inf" last. */
static void render_child(buf *b, const sl_metrics_family *f, const sl_metrics_child *c,
                         buf *pairs, char (*les)[32])
{
    pairs->len = 0;
    if (pairs->data)
        pairs->data[0] = '\0';
    label_pairs(pairs, f, c);
    if (pairs->failed) {
        b->failed = true;
        return;
    }
    if (f->type != SL_METRICS_HISTOGRAM) {
        sample_head(b, f, "", pairs, NULL);
        buf_put(b, " ", 1);
        buf_double(b, sl_obs_child_value_locked(c));
        buf_put(b, "\n", 1);
        return;
    }
    /* Observations in flight during a scrape may show in the buckets and
     * not yet in _sum (or the reverse); _count is the +Inf bucket, so the
     * buckets and _count always agree. */
    double sum = sl_obs_bits_to_double(atomic_load_explicit(&c->bits, memory_order_relaxed));
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cum += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
        sample_head(b, f, "_bucket", pairs, les[i]);
        buf_put(b, " ", 1);
        buf_u64(b, cum);
        buf_put(b, "\n", 1);
    }
    sample_head(b, f, "_sum", pairs, NULL);
    buf_put(b, " ", 1);
    buf_double(b, sum);
    buf_put(b, "\n", 1);
    sample_head(b, f, "_count", pairs, NULL);
    buf_put(b, " ", 1);
    buf_u64(b, cum);
    buf_put(b, "\n", 1);
}

static const char *type_name(sl_metrics_type t)
{
    return t == SL_METRICS_COUNTER ? "counter" : t == SL_METRICS_GAUGE ? "gauge" : "histogram";
}

static bool render_family(buf *b, sl_metrics_family *f)
{
    buf_str(b, "# HELP ");
    buf_str(b, f->name);
    buf_put(b, " ", 1);
    buf_escaped(b, f->help, false);
    buf_str(b, "\n# TYPE ");
    buf_str(b, f->name);
    buf_put(b, " ", 1);
    buf_str(b, type_name(f->type));
    buf_put(b, "\n", 1);

    char(*les)[32] = NULL;
    if (f->type == SL_METRICS_HISTOGRAM) {
        if (!(les = sl_malloc((f->n_bounds + 1) * sizeof *les)))
            return false;
        for (size_t i = 0; i < f->n_bounds; i++)
            sl_obs_format_double(f->bounds[i], les[i]);
        strcpy(les[f->n_bounds], "+Inf");
    }

    pthread_mutex_lock(&f->mu);
    size_t n = f->n_children;
    sl_metrics_child **sorted = n ? sl_malloc(n * sizeof *sorted) : NULL;
    if (n && !sorted) {
        pthread_mutex_unlock(&f->mu);
        sl_free(les);
        return false;
    }
    if (n) {
        memcpy(sorted, f->children, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, child_cmp);
    }
    buf pairs = {0};
    for (size_t i = 0; i < n; i++)
        render_child(b, f, sorted[i], &pairs, les);
    pthread_mutex_unlock(&f->mu);
    sl_free(pairs.data);
    sl_free(sorted);
    sl_free(les);
    return true;
}

sl_status sl_metrics_render(sl_metrics *m, char **text, size_t *len)
{
    *text = NULL;
    if (len)
        *len = 0;
    buf b = {0};
    bool ok = true;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; ok && i < m->n_families; i++)
        ok = render_family(&b, m->families[i]);
    pthread_mutex_unlock(&m->mu);
    buf_put(&b, "", 0); /* an empty registry still gives "" */
    if (!ok || b.failed) {
        sl_free(b.data);
        return sl_fail(SL_ERR_NOMEM, "out of memory rendering metrics");
    }
    *text = b.data;
    if (len)
        *len = b.len;
    return SL_OK;
}

void sl_metrics_text_free(char *text) { sl_free(text); }
