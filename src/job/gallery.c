/* job/gallery.c — see gallery.h. The live rows are a ring; the sample is
 * a bottom-k set over row keys, whose largest key (the threshold) only goes
 * down: a row whose key is under the threshold when it is decoded may still
 * enter the sample when it is written, so it gets a thumbnail; a row over it
 * never will, so it does not. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "job/gallery.h"

enum { FAILURE_KINDS_MAX = 64 };

struct gallery {
    gallery_params p;
    pthread_mutex_t mu;
    gallery_item *live; /* ring of live_n, newest at live[(live_next-1) % live_n] */
    size_t live_next, live_count;
    gallery_item *sample; /* unordered, sample_count <= sample_n */
    size_t sample_count;
    gallery_item *sorted; /* gallery_sample's view */
    atomic_uint_fast64_t threshold; /* largest sample key once full */
    atomic_int_fast64_t last_live_ms;
    struct failure_kind {
        char stage[32];
        const char *cls;
        uint64_t rows;
    } failures[FAILURE_KINDS_MAX];
    size_t n_failures;
};

gallery_params gallery_default_params(void)
{
    return (gallery_params){.live_n = 24, .sample_n = 64, .live_interval_ms = 250,
                            .thumb_edge = 160, .thumb_quality = 70};
}

static uint64_t row_key(const gallery *g, uint64_t index)
{
    /* splitmix64 finaliser: a well-mixed 64-bit hash of the index. */
    uint64_t z = index + g->p.seed * 0x9e3779b97f4a7c15ULL + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

gallery *gallery_new(const gallery_params *params)
{
    gallery *g = sl_calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->p = params ? *params : gallery_default_params();
    if (g->p.live_n < 1)
        g->p.live_n = 1;
    if (g->p.sample_n < 1)
        g->p.sample_n = 1;
    g->live = sl_calloc((size_t)g->p.live_n, sizeof *g->live);
    g->sample = sl_calloc((size_t)g->p.sample_n, sizeof *g->sample);
    g->sorted = sl_calloc((size_t)g->p.sample_n, sizeof *g->sorted);
    if (!g->live || !g->sample || !g->sorted) {
        sl_free(g->live);
        sl_free(g->sample);
        sl_free(g->sorted);
        sl_free(g);
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    atomic_store(&g->threshold, UINT64_MAX);
    atomic_store(&g->last_live_ms, INT64_MIN / 2);
    return g;
}

static void item_clear(gallery_item *it)
{
    sl_free(it->id);
    sl_free(it->caption);
    sl_free(it->error);
    sl_free(it->error_stage);
    sl_free(it->thumb);
    *it = (gallery_item){0};
}

void gallery_free(gallery *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->p.live_n; i++)
        item_clear(&g->live[i]);
    for (size_t i = 0; i < g->sample_count; i++)
        item_clear(&g->sample[i]);
    sl_free(g->live);
    sl_free(g->sample);
    sl_free(g->sorted);
    pthread_mutex_destroy(&g->mu);
    sl_free(g);
}

const gallery_params *gallery_params_of(const gallery *g) { return &g->p; }

bool gallery_wants_thumb(gallery *g, uint64_t index)
{
    if (row_key(g, index) < atomic_load(&g->threshold))
        return true;
    int64_t now = now_ms(), last = atomic_load(&g->last_live_ms);
    return now - last >= g->p.live_interval_ms &&
           atomic_compare_exchange_strong(&g->last_live_ms, &last, now);
}

/* A copy of s, cut past GALLERY_TEXT_MAX bytes at a character's start with
 * the bytes left said: the page and the report show a few lines of each
 * text, and a 1 MB id or caption kept whole in each of the live_n +
 * sample_n items would make the bound a row count times any length. */
static char *dup_cut(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    if (n <= GALLERY_TEXT_MAX)
        return sl_strdup(s);
    size_t cut = GALLERY_TEXT_MAX;
    for (int back = 0; back < 3 && ((unsigned char)s[cut] & 0xC0) == 0x80; back++)
        cut--; /* not inside a UTF-8 character */
    return sl_asprintf("%.*s\u2026 (%zu bytes more)", (int)cut, s, n - cut);
}

/* Fills *it with copies; false on out of memory (*it is then cleared). */
static bool item_set(gallery_item *it, const gallery_row *row, uint64_t key)
{
    *it = (gallery_item){.index = row->index, .key = key,
                         .error_class = row->error ? sl_status_class(row->error_status) : NULL};
    it->id = dup_cut(row->id);
    it->caption = dup_cut(row->caption);
    it->error = dup_cut(row->error);
    it->error_stage = dup_cut(row->error_stage);
    if (row->thumb && row->thumb_len && (it->thumb = sl_malloc(row->thumb_len))) {
        memcpy(it->thumb, row->thumb, row->thumb_len);
        it->thumb_len = row->thumb_len;
    }
    if (!it->id || (row->caption && !it->caption) || (row->error && !it->error) ||
        (row->error_stage && !it->error_stage) || (row->thumb && row->thumb_len && !it->thumb)) {
        item_clear(it);
        return false;
    }
    return true;
}

static void count_failure(gallery *g, const gallery_row *row)
{
    const char *stage = row->error_stage ? row->error_stage : "unknown";
    const char *cls = sl_status_class(row->error_status);
    for (size_t i = 0; i < g->n_failures; i++)
        if (g->failures[i].cls == cls && strcmp(g->failures[i].stage, stage) == 0) {
            g->failures[i].rows += row->rows > 0 ? row->rows : 1;
            return;
        }
    if (g->n_failures == FAILURE_KINDS_MAX)
        return; /* stages x classes is far smaller */
    struct failure_kind *k = &g->failures[g->n_failures++];
    snprintf(k->stage, sizeof k->stage, "%s", stage);
    k->cls = cls;
    k->rows = row->rows > 0 ? row->rows : 1;
}

void gallery_add(gallery *g, const gallery_row *row)
{
    uint64_t key = row_key(g, row->index);
    pthread_mutex_lock(&g->mu);
    if (row->error)
        count_failure(g, row);
    if (row->thumb) {
        gallery_item *slot = &g->live[g->live_next];
        item_clear(slot);
        if (item_set(slot, row, key)) {
            g->live_next = (g->live_next + 1) % (size_t)g->p.live_n;
            if (g->live_count < (size_t)g->p.live_n)
                g->live_count++;
        }
    }
    size_t n = (size_t)g->p.sample_n;
    if (g->sample_count < n) {
        if (item_set(&g->sample[g->sample_count], row, key))
            g->sample_count++;
    } else if (key < atomic_load(&g->threshold)) {
        size_t max = 0;
        for (size_t i = 1; i < n; i++)
            if (g->sample[i].key > g->sample[max].key)
                max = i;
        item_clear(&g->sample[max]);
        if (!item_set(&g->sample[max], row, key))
            g->sample[max] = g->sample[--g->sample_count]; /* keep the array dense */
    }
    if (g->sample_count == n) {
        uint64_t max = 0;
        for (size_t i = 0; i < n; i++)
            if (g->sample[i].key > max)
                max = g->sample[i].key;
        atomic_store(&g->threshold, max);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Ids and captions are bytes; JSON wants UTF-8. */
static json_t *text_or_null(const char *s)
{
    return s ? sl_json_text(s, strlen(s)) : json_null();
}

json_t *gallery_live_json(gallery *g)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    pthread_mutex_lock(&g->mu);
    size_t n = (size_t)g->p.live_n;
    for (size_t k = 0; k < g->live_count; k++) {
        const gallery_item *it = &g->live[(g->live_next + n - 1 - k) % n];
        char thumb[64];
        snprintf(thumb, sizeof thumb, "/thumb/%llu.jpg", (unsigned long long)it->index);
        json_t *o = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "index", (json_int_t)it->index,
                              "id", text_or_null(it->id), "caption", text_or_null(it->caption),
                              "error", text_or_null(it->error), "error_stage",
                              text_or_null(it->error_stage), "thumb",
                              it->thumb ? json_string(thumb) : json_null());
        if (o)
            json_array_append_new(a, o);
    }
    pthread_mutex_unlock(&g->mu);
    return a;
}

sl_status gallery_thumb(gallery *g, uint64_t index, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    sl_status st = SL_ERR_NOT_FOUND;
    pthread_mutex_lock(&g->mu);
    const gallery_item *found = NULL;
    for (size_t i = 0; i < g->live_count && !found; i++)
        if (g->live[i].index == index && g->live[i].thumb)
            found = &g->live[i];
    for (size_t i = 0; i < g->sample_count && !found; i++)
        if (g->sample[i].index == index && g->sample[i].thumb)
            found = &g->sample[i];
    if (found && (*out = sl_malloc(found->thumb_len))) {
        memcpy(*out, found->thumb, found->thumb_len);
        *len = found->thumb_len;
        st = SL_OK;
    } else if (found) {
        st = SL_ERR_NOMEM;
    }
    pthread_mutex_unlock(&g->mu);
    return st == SL_ERR_NOT_FOUND
               ? sl_fail(st, "no thumbnail for row %llu (only the latest are kept)",
                         (unsigned long long)index)
               : st;
}

json_t *gallery_failures_json(gallery *g)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->n_failures; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:I}", "stage", g->failures[i].stage,
                                           "class", g->failures[i].cls,
                                           "rows", (json_int_t)g->failures[i].rows));
    pthread_mutex_unlock(&g->mu);
    return a;
}

static int by_index(const void *a, const void *b)
{
    uint64_t x = ((const gallery_item *)a)->index, y = ((const gallery_item *)b)->index;
    return (x > y) - (x < y);
}

size_t gallery_sample(gallery *g, const gallery_item **items)
{
    pthread_mutex_lock(&g->mu);
    size_t n = g->sample_count;
    memcpy(g->sorted, g->sample, n * sizeof *g->sample);
    pthread_mutex_unlock(&g->mu);
    qsort(g->sorted, n, sizeof *g->sorted, by_index);
    *items = g->sorted;
    return n;
}
