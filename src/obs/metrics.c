/* obs/metrics.c — the metrics registry: families (name, help, type, label
 * names, histogram bounds), their children (one per label-value tuple, in
 * a hash table), and the lock-free updates. Doubles live in atomic 64-bit
 * words as bit patterns, changed with compare-and-swap; counter increments
 * by whole numbers are a plain atomic add on a separate integer word. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hash.h"
#include "core/utf8.h"
#include "obs/metrics_impl.h"

#define RELAXED memory_order_relaxed

static const double default_buckets[] = {.005, .01, .025, .05, .075, .1, .25,
                                         .5,   .75, 1,   2.5, 5,   7.5, 10};

/* --- doubles in atomic words ------------------------------------------------- */

static uint_fast64_t double_to_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

double sl_obs_bits_to_double(uint_fast64_t bits)
{
    uint64_t b = (uint64_t)bits;
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static void atomic_add_double(atomic_uint_fast64_t *word, double v)
{
    uint_fast64_t old = atomic_load_explicit(word, RELAXED);
    while (!atomic_compare_exchange_weak_explicit(
        word, &old, double_to_bits(sl_obs_bits_to_double(old) + v), RELAXED, RELAXED)) {
    }
}

/* --- validation ----------------------------------------------------------------- */

static bool valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* The sample names a family exposes: name, or name + _bucket/_sum/_count. */
static size_t sample_names(sl_metrics_type type, const char *name, char out[4][256])
{
    snprintf(out[0], 256, "%s", name);
    if (type != SL_METRICS_HISTOGRAM)
        return 1;
    snprintf(out[1], 256, "%s_bucket", name);
    snprintf(out[2], 256, "%s_sum", name);
    snprintf(out[3], 256, "%s_count", name);
    return 4;
}

static sl_status check_params(const sl_metrics *m, const sl_metrics_family_params *p)
{
    if (!p->name)
        return sl_fail(SL_ERR_INVALID_ARG, "metric name is NULL");
    const char *name = p->name;
    if (!valid_metric_name(name))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "metric name \"%s\" is invalid: it must match [a-zA-Z_:][a-zA-Z0-9_:]*",
                       name);
    if (strlen(name) > 200)
        return sl_fail(SL_ERR_INVALID_ARG, "metric name \"%.40s...\" is longer than 200 bytes",
                       name);
    if (p->type != SL_METRICS_COUNTER && p->type != SL_METRICS_GAUGE &&
        p->type != SL_METRICS_HISTOGRAM)
        return sl_fail(SL_ERR_INVALID_ARG, "metric %s: unknown type %d", name, (int)p->type);
    if (p->help && !sl_utf8_valid(p->help, strlen(p->help)))
        return sl_fail(SL_ERR_INVALID_ARG, "metric %s: help text is not valid UTF-8", name);
    if (p->n_labels && !p->label_names)
        return sl_fail(SL_ERR_INVALID_ARG, "metric %s: %zu labels but label_names is NULL", name,
                       p->n_labels);
    for (size_t i = 0; i < p->n_labels; i++) {
        const char *l = p->label_names[i];
        if (!valid_label_name(l))
            return sl_fail(SL_ERR_INVALID_ARG,
                           "metric %s: label name \"%s\" is invalid: it must match "
                           "[a-zA-Z_][a-zA-Z0-9_]*",
                           name, l ? l : "(null)");
        if (l[0] == '_' && l[1] == '_')
            return sl_fail(SL_ERR_INVALID_ARG,
                           "metric %s: label name \"%s\" is reserved (names starting with "
                           "\"__\" are for Prometheus itself)",
                           name, l);
        if (p->type == SL_METRICS_HISTOGRAM && strcmp(l, "le") == 0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "metric %s: a histogram cannot have a label named \"le\" (it is the "
                           "bucket label)",
                           name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->label_names[j], l) == 0)
                return sl_fail(SL_ERR_INVALID_ARG, "metric %s: label name \"%s\" appears twice",
                               name, l);
    }
    if (p->type == SL_METRICS_HISTOGRAM && p->buckets) {
        for (size_t i = 0; i < p->n_buckets; i++) {
            double b = p->buckets[i];
            bool last_inf = i + 1 == p->n_buckets && isinf(b) && b > 0;
            if (isnan(b) || (isinf(b) && !last_inf))
                return sl_fail(SL_ERR_INVALID_ARG,
                               "metric %s: bucket bound %zu is %s (bounds must be finite; +Inf "
                               "is added by itself)",
                               name, i, isnan(b) ? "NaN" : "infinite");
            if (i > 0 && !(b > p->buckets[i - 1]))
                return sl_fail(SL_ERR_INVALID_ARG,
                               "metric %s: bucket bounds must be strictly increasing (bound %zu "
                               "is %g after %g)",
                               name, i, b, p->buckets[i - 1]);
        }
    }
    /* No sample name may be exposed by two families. */
    char mine[4][256], theirs[4][256];
    size_t n_mine = sample_names(p->type, name, mine);
    for (size_t k = 0; k < m->n_families; k++) {
        const sl_metrics_family *f = m->families[k];
        size_t n_theirs = sample_names(f->type, f->name, theirs);
        for (size_t a = 0; a < n_mine; a++)
            for (size_t b = 0; b < n_theirs; b++)
                if (strcmp(mine[a], theirs[b]) == 0)
                    return sl_fail(SL_ERR_INVALID_ARG,
                                   strcmp(name, f->name) == 0
                                       ? "metric %s is already registered%s"
                                       : "metric %s would expose %s, which metric %s already "
                                         "exposes",
                                   name, strcmp(name, f->name) == 0 ? "" : mine[a], f->name);
    }
    return SL_OK;
}

/* --- families --------------------------------------------------------------------- */

static void child_free(sl_metrics_child *c, size_t n_labels)
{
    if (!c)
        return;
    if (c->values)
        for (size_t i = 0; i < n_labels; i++)
            sl_free(c->values[i]);
    sl_free(c->values);
    sl_free((void *)c->buckets);
    sl_free(c);
}

static void family_free(sl_metrics_family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_children; i++)
        child_free(f->children[i], f->n_labels);
    sl_free(f->children);
    sl_free(f->table);
    if (f->label_names)
        for (size_t i = 0; i < f->n_labels; i++)
            sl_free(f->label_names[i]);
    sl_free(f->label_names);
    sl_free(f->bounds);
    sl_free(f->name);
    sl_free(f->help);
    pthread_mutex_destroy(&f->mu);
    sl_free(f);
}

static sl_metrics_family *family_new(sl_metrics *m, const sl_metrics_family_params *p)
{
    sl_metrics_family *f = sl_calloc(1, sizeof *f);
    if (!f)
        return NULL;
    pthread_mutex_init(&f->mu, NULL);
    f->registry = m;
    f->type = p->type;
    f->name = sl_strdup(p->name);
    f->help = sl_strdup(p->help ? p->help : "");
    f->n_labels = p->n_labels;
    bool ok = f->name && f->help;
    if (ok && p->n_labels) {
        f->label_names = sl_calloc(p->n_labels, sizeof *f->label_names);
        ok = f->label_names != NULL;
        for (size_t i = 0; ok && i < p->n_labels; i++)
            ok = (f->label_names[i] = sl_strdup(p->label_names[i])) != NULL;
    }
    if (ok && p->type == SL_METRICS_HISTOGRAM) {
        const double *b = p->buckets ? p->buckets : default_buckets;
        size_t n = p->buckets ? p->n_buckets : sizeof default_buckets / sizeof *default_buckets;
        if (n && isinf(b[n - 1]))
            n--;
        f->n_bounds = n;
        if (n) {
            f->bounds = sl_malloc(n * sizeof *f->bounds);
            ok = f->bounds != NULL;
            if (ok)
                memcpy(f->bounds, b, n * sizeof *f->bounds);
        }
    }
    if (ok) {
        f->n_slots = 16;
        f->table = sl_calloc(f->n_slots, sizeof *f->table);
        ok = f->table != NULL;
    }
    if (!ok) {
        family_free(f);
        return NULL;
    }
    return f;
}

sl_metrics_params sl_metrics_default_params(void)
{
    return (sl_metrics_params){.process_metrics = true};
}

sl_metrics_family_params sl_metrics_family_default_params(void)
{
    return (sl_metrics_family_params){.type = SL_METRICS_COUNTER};
}

sl_status sl_metrics_new(const sl_metrics_params *params, sl_metrics **out)
{
    *out = NULL;
    sl_metrics_params p = params ? *params : sl_metrics_default_params();
    sl_metrics *m = sl_calloc(1, sizeof *m);
    if (!m)
        return sl_fail(SL_ERR_NOMEM, "out of memory creating a metrics registry");
    pthread_mutex_init(&m->mu, NULL);
    sl_status st = p.process_metrics ? sl_obs_process_register(m) : SL_OK;
    if (st == SL_OK && p.gpu_metrics)
        st = sl_obs_gpu_register(m, &m->gpu);
    if (st != SL_OK) {
        sl_metrics_free(m);
        return st;
    }
    *out = m;
    return SL_OK;
}

void sl_metrics_free(sl_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_families; i++)
        family_free(m->families[i]);
    sl_free(m->families);
    sl_obs_gpu_free(m->gpu);
    pthread_mutex_destroy(&m->mu);
    sl_free(m);
}

sl_status sl_metrics_register(sl_metrics *m, const sl_metrics_family_params *params,
                              sl_metrics_family **out)
{
    *out = NULL;
    if (!m || !params)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_metrics_register: NULL registry or params");
    pthread_mutex_lock(&m->mu);
    sl_status st = check_params(m, params);
    if (st != SL_OK) {
        pthread_mutex_unlock(&m->mu);
        return st;
    }
    if (m->n_families == m->cap_families) {
        size_t cap = m->cap_families ? m->cap_families * 2 : 16;
        sl_metrics_family **grown = sl_realloc(m->families, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&m->mu);
            return sl_fail(SL_ERR_NOMEM, "out of memory registering metric %s", params->name);
        }
        m->families = grown;
        m->cap_families = cap;
    }
    sl_metrics_family *f = family_new(m, params);
    /* A family without labels has its one child from the start, so it is
     * exposed (as 0) before the first update, as the Prometheus clients do.
     * Made before the family is listed: when it fails nothing is left
     * registered, and the caller may register the name again. */
    sl_metrics_child *c;
    if (f && f->n_labels == 0 && sl_metrics_child_get(f, NULL, &c) != SL_OK) {
        family_free(f);
        f = NULL;
    }
    if (!f) {
        pthread_mutex_unlock(&m->mu);
        return sl_fail(SL_ERR_NOMEM, "out of memory registering metric %s", params->name);
    }
    size_t at = 0;
    while (at < m->n_families && strcmp(m->families[at]->name, f->name) < 0)
        at++;
    memmove(m->families + at + 1, m->families + at, (m->n_families - at) * sizeof *m->families);
    m->families[at] = f;
    m->n_families++;
    pthread_mutex_unlock(&m->mu);
    *out = f;
    return SL_OK;
}

static sl_status add_simple(sl_metrics *m, sl_metrics_type type, const char *name,
                            const char *help, const char *const *label_names,
                            const double *buckets, size_t n_buckets, sl_metrics_family **out)
{
    sl_metrics_family_params p = sl_metrics_family_default_params();
    p.type = type;
    p.name = name;
    p.help = help;
    p.label_names = label_names;
    while (label_names && label_names[p.n_labels])
        p.n_labels++;
    p.buckets = buckets;
    p.n_buckets = n_buckets;
    return sl_metrics_register(m, &p, out);
}

sl_status sl_metrics_add_counter(sl_metrics *m, const char *name, const char *help,
                                 const char *const *label_names, sl_metrics_family **out)
{
    return add_simple(m, SL_METRICS_COUNTER, name, help, label_names, NULL, 0, out);
}

sl_status sl_metrics_add_gauge(sl_metrics *m, const char *name, const char *help,
                               const char *const *label_names, sl_metrics_family **out)
{
    return add_simple(m, SL_METRICS_GAUGE, name, help, label_names, NULL, 0, out);
}

sl_status sl_metrics_add_histogram(sl_metrics *m, const char *name, const char *help,
                                   const char *const *label_names, const double *buckets,
                                   size_t n_buckets, sl_metrics_family **out)
{
    return add_simple(m, SL_METRICS_HISTOGRAM, name, help, label_names, buckets, n_buckets, out);
}

sl_metrics_family *sl_metrics_find(sl_metrics *m, const char *name)
{
    sl_metrics_family *found = NULL;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_families && !found; i++)
        if (strcmp(m->families[i]->name, name) == 0)
            found = m->families[i];
    pthread_mutex_unlock(&m->mu);
    return found;
}

size_t sl_metrics_bucket_count(const sl_metrics_family *f)
{
    return f->type == SL_METRICS_HISTOGRAM ? f->n_bounds + 1 : 0;
}

/* --- children --------------------------------------------------------------------- */

static uint64_t tuple_hash(const char *const *values, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++)
        h = sl_hash_mix64(h ^ sl_hash_fnv1a64(values[i]) ^ (uint64_t)i);
    return h;
}

static bool tuple_equal(char *const *a, const char *const *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

static sl_metrics_child *child_new(sl_metrics_family *f, const char *const *values, uint64_t h)
{
    sl_metrics_child *c = sl_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->family = f;
    c->hash = h;
    atomic_init(&c->n, 0);
    atomic_init(&c->bits, double_to_bits(0.0));
    bool ok = true;
    if (f->n_labels) {
        c->values = sl_calloc(f->n_labels, sizeof *c->values);
        ok = c->values != NULL;
        for (size_t i = 0; ok && i < f->n_labels; i++)
            ok = (c->values[i] = sl_strdup(values[i])) != NULL;
    }
    if (ok && f->type == SL_METRICS_HISTOGRAM) {
        c->buckets = sl_malloc((f->n_bounds + 1) * sizeof *c->buckets);
        ok = c->buckets != NULL;
        for (size_t i = 0; ok && i <= f->n_bounds; i++)
            atomic_init(&c->buckets[i], 0);
    }
    if (!ok) {
        child_free(c, f->n_labels);
        return NULL;
    }
    return c;
}

static bool grow_table(sl_metrics_family *f)
{
    size_t n = f->n_slots * 2;
    sl_metrics_child **t = sl_calloc(n, sizeof *t);
    if (!t)
        return false;
    for (size_t i = 0; i < f->n_children; i++) {
        sl_metrics_child *c = f->children[i];
        c->next = t[c->hash & (n - 1)];
        t[c->hash & (n - 1)] = c;
    }
    sl_free(f->table);
    f->table = t;
    f->n_slots = n;
    return true;
}

sl_status sl_metrics_child_get(sl_metrics_family *f, const char *const *values,
                               sl_metrics_child **out)
{
    *out = NULL;
    if (!f)
        return sl_fail(SL_ERR_INVALID_ARG, "sl_metrics_child_get: NULL family");
    for (size_t i = 0; i < f->n_labels; i++) {
        if (!values || !values[i])
            return sl_fail(SL_ERR_INVALID_ARG, "metric %s: value of label %s is NULL", f->name,
                           f->label_names[i]);
        if (!sl_utf8_valid(values[i], strlen(values[i])))
            return sl_fail(SL_ERR_INVALID_ARG, "metric %s: value of label %s is not valid UTF-8",
                           f->name, f->label_names[i]);
    }
    uint64_t h = tuple_hash(values, f->n_labels);
    pthread_mutex_lock(&f->mu);
    for (sl_metrics_child *c = f->table[h & (f->n_slots - 1)]; c; c = c->next)
        if (c->hash == h && tuple_equal(c->values, values, f->n_labels)) {
            pthread_mutex_unlock(&f->mu);
            *out = c;
            return SL_OK;
        }
    if (f->n_children == f->cap_children) {
        size_t cap = f->cap_children ? f->cap_children * 2 : 8;
        sl_metrics_child **grown = sl_realloc(f->children, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&f->mu);
            return sl_fail(SL_ERR_NOMEM, "out of memory adding a child to metric %s", f->name);
        }
        f->children = grown;
        f->cap_children = cap;
    }
    if (f->n_children >= f->n_slots && !grow_table(f)) {
        pthread_mutex_unlock(&f->mu);
        return sl_fail(SL_ERR_NOMEM, "out of memory adding a child to metric %s", f->name);
    }
    sl_metrics_child *c = child_new(f, values, h);
    if (!c) {
        pthread_mutex_unlock(&f->mu);
        return sl_fail(SL_ERR_NOMEM, "out of memory adding a child to metric %s", f->name);
    }
    c->next = f->table[h & (f->n_slots - 1)];
    f->table[h & (f->n_slots - 1)] = c;
    f->children[f->n_children++] = c;
    pthread_mutex_unlock(&f->mu);
    *out = c;
    return SL_OK;
}

sl_metrics_child *sl_metrics_with(sl_metrics_family *f, ...)
{
    if (!f) {
        sl_fail(SL_ERR_INVALID_ARG, "sl_metrics_with: NULL family");
        return NULL;
    }
    const char *stack[16];
    const char **values = f->n_labels <= 16 ? stack : sl_malloc(f->n_labels * sizeof *values);
    if (!values) {
        sl_fail(SL_ERR_NOMEM, "out of memory looking up a child of metric %s", f->name);
        return NULL;
    }
    va_list ap;
    va_start(ap, f);
    for (size_t i = 0; i < f->n_labels; i++)
        values[i] = va_arg(ap, const char *);
    va_end(ap);
    sl_metrics_child *c;
    sl_metrics_child_get(f, values, &c);
    if (values != stack)
        sl_free(values);
    return c;
}

sl_status sl_metrics_child_set_fn(sl_metrics_child *c, sl_metrics_value_fn fn, void *user)
{
    sl_metrics_family *f = c->family;
    if (f->type == SL_METRICS_HISTOGRAM)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "metric %s: a histogram cannot take its value from a callback", f->name);
    pthread_mutex_lock(&f->mu);
    c->fn = fn;
    c->user = user;
    pthread_mutex_unlock(&f->mu);
    return SL_OK;
}

/* --- updates ------------------------------------------------------------------------ */

void sl_metrics_counter_inc(sl_metrics_child *c)
{
    atomic_fetch_add_explicit(&c->n, 1, RELAXED);
}

void sl_metrics_counter_add_u64(sl_metrics_child *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->n, n, RELAXED);
}

void sl_metrics_counter_add(sl_metrics_child *c, double v)
{
    if (!(v >= 0) || isinf(v))
        return;
    /* Whole amounts go to the integer word: exact and a single add. */
    if (v < 9007199254740992.0 && v == floor(v))
        atomic_fetch_add_explicit(&c->n, (uint_fast64_t)v, RELAXED);
    else
        atomic_add_double(&c->bits, v);
}

void sl_metrics_gauge_set(sl_metrics_child *c, double v)
{
    atomic_store_explicit(&c->bits, double_to_bits(v), RELAXED);
}

void sl_metrics_gauge_add(sl_metrics_child *c, double v)
{
    atomic_add_double(&c->bits, v);
}

void sl_metrics_histogram_observe(sl_metrics_child *c, double v)
{
    const sl_metrics_family *f = c->family;
    /* First bound >= v (binary search); NaN compares false: +Inf. */
    size_t lo = 0, hi = f->n_bounds;
    if (isnan(v)) {
        lo = f->n_bounds;
    } else {
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (v <= f->bounds[mid])
                hi = mid;
            else
                lo = mid + 1;
        }
    }
    atomic_fetch_add_explicit(&c->buckets[lo], 1, RELAXED);
    atomic_add_double(&c->bits, v);
}

/* --- reading ------------------------------------------------------------------------ */

double sl_obs_child_value_locked(const sl_metrics_child *c)
{
    if (c->fn)
        return c->fn(c->user);
    double v = sl_obs_bits_to_double(atomic_load_explicit(&c->bits, RELAXED));
    if (c->family->type == SL_METRICS_COUNTER)
        v += (double)atomic_load_explicit(&c->n, RELAXED);
    return v;
}

double sl_metrics_value(const sl_metrics_child *c)
{
    sl_metrics_family *f = c->family;
    pthread_mutex_lock(&f->mu);
    double v = sl_obs_child_value_locked(c);
    pthread_mutex_unlock(&f->mu);
    return v;
}

uint64_t sl_metrics_histogram_count(const sl_metrics_child *c)
{
    const sl_metrics_family *f = c->family;
    if (f->type != SL_METRICS_HISTOGRAM)
        return 0;
    uint64_t n = 0;
    for (size_t i = 0; i <= f->n_bounds; i++)
        n += atomic_load_explicit(&c->buckets[i], RELAXED);
    return n;
}

uint64_t sl_metrics_histogram_bucket(const sl_metrics_child *c, size_t i)
{
    const sl_metrics_family *f = c->family;
    if (f->type != SL_METRICS_HISTOGRAM || i > f->n_bounds)
        return 0;
    uint64_t n = 0;
    for (size_t k = 0; k <= i; k++)
        n += atomic_load_explicit(&c->buckets[k], RELAXED);
    return n;
}
