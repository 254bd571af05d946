/* io/source_parquet.c — Parquet files as inputs (io/parquet_read.h), one
 * batch of rows at a time (a row group gives one or more). The image is the Hugging Face struct (`C.bytes`, optional
 * `C.path`) or a string column of paths/URLs; every other readable column
 * except binary ones passes through. An unreadable file or row group is an
 * error item naming it; the rest of that file is skipped. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "io/parquet_read.h"
#include "io/source_impl.h"

struct source_reader {
    sl_pq_reader *pq;
    char *file, *base_dir;
    const char *name; /* the file's name in ids */
    const sl_source_params *p;
    int bytes_col, path_col, prompt_col; /* indexes into the selection; -1: none */
    const char *image_name;
    size_t n_sel;
    const sl_pq_batch *batch;
    int64_t row, base; /* row within the batch; rows in earlier batches */
    bool failed;
};

static void pq_close(source_reader *r)
{
    if (!r)
        return;
    sl_pq_reader_free(r->pq);
    sl_free(r->file);
    sl_free(r->base_dir);
    sl_free(r);
}

/* The reader's limits for a source: a page must be able to hold the largest
 * image a cell may have (max_item_bytes) beside a few smaller ones. */
static sl_pq_reader_params reader_params(const sl_source_params *p)
{
    sl_pq_reader_params rp = sl_pq_reader_default_params();
    if (p->max_item_bytes > rp.max_page_bytes - (16u << 20) && p->max_item_bytes < SIZE_MAX / 4) {
        rp.max_page_bytes = p->max_item_bytes + (16u << 20);
        if (rp.memory_limit < 4 * rp.max_page_bytes)
            rp.memory_limit = 4 * rp.max_page_bytes;
    }
    return rp;
}

static int find_column(const sl_pq_reader *pq, const char *name)
{
    for (size_t i = 0; i < sl_pq_reader_num_columns(pq); i++)
        if (strcmp(sl_pq_reader_column(pq, i)->name, name) == 0)
            return (int)i;
    return -1;
}

/* Chooses the image columns and the pass-through ones; selects them. */
static sl_status choose_columns(source_reader *r, char **why)
{
    const sl_pq_reader *pq = r->pq;
    size_t nc = sl_pq_reader_num_columns(pq);
    const char *cands[] = {"image", "path", "url"};
    const char *explicit = r->p->image_column;
    int bytes = -1, path = -1;
    char name[512];
    for (size_t k = 0; k < (explicit ? 1 : 3) && bytes < 0 && path < 0; k++) {
        const char *c = explicit ? explicit : cands[k];
        snprintf(name, sizeof name, "%s.bytes", c);
        if ((bytes = find_column(pq, name)) >= 0) {
            snprintf(name, sizeof name, "%s.path", c);
            path = find_column(pq, name);
        } else if ((path = find_column(pq, c)) >= 0 &&
                   sl_pq_reader_column(pq, (size_t)path)->type != SL_PQ_STRING) {
            path = -1;
        }
        if (bytes >= 0 || path >= 0)
            r->image_name = explicit ? explicit : cands[k];
    }
    if (bytes < 0 && path < 0) {
        *why = sl_asprintf("%s: no image column: expected '%s.bytes' (an image struct) or a string "
                           "column '%s'%s",
                           r->file, explicit ? explicit : "image", explicit ? explicit : "image",
                           explicit ? "" : " (or path/url; name it with --image-column)");
        return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    const char **sel = sl_calloc(nc, sizeof *sel);
    if (!sel)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    size_t n = 0;
    r->bytes_col = r->path_col = r->prompt_col = -1;
    const char *pkey = r->p->prompt_column ? r->p->prompt_column : "prompt";
    for (size_t i = 0; i < nc; i++) {
        const sl_pq_column_info *ci = sl_pq_reader_column(pq, i);
        if ((int)i == bytes)
            r->bytes_col = (int)n;
        else if ((int)i == path)
            r->path_col = (int)n;
        else if (ci->type == SL_PQ_UNSUPPORTED || ci->type == SL_PQ_BINARY)
            continue;
        if (ci->type == SL_PQ_STRING && strcmp(ci->name, pkey) == 0)
            r->prompt_col = (int)n;
        sel[n++] = ci->name;
    }
    sl_status st = sl_pq_reader_select(r->pq, sel, n);
    sl_free(sel);
    r->n_sel = n;
    if (st != SL_OK)
        *why = sl_strdup(sl_last_error());
    return SL_OK;
}

static sl_status pq_open(const char *file, const char *name, const sl_source_params *p,
                         source_reader **out, char **open_error)
{
    source_reader *r = sl_calloc(1, sizeof *r);
    const char *slash = strrchr(file, '/');
    if (!r || !(r->file = sl_strdup(file)) ||
        !(r->base_dir = slash ? sl_strndup(file, (size_t)(slash - file)) : sl_strdup(""))) {
        pq_close(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    r->p = p;
    r->name = name;
    sl_pq_reader_params rp = reader_params(p);
    sl_status st = sl_pq_reader_open(file, &rp, &r->pq);
    if (st == SL_ERR_NOMEM) {
        pq_close(r);
        return st;
    }
    if (st != SL_OK)
        *open_error = sl_strdup(sl_last_error());
    else if ((st = choose_columns(r, open_error)) != SL_OK) {
        pq_close(r);
        return st;
    }
    if (*open_error || st != SL_OK) {
        pq_close(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    *out = r;
    return SL_OK;
}

static json_t *cell_json(const sl_pq_vector *v, int64_t i)
{
    if (v->valid && !v->valid[i])
        return json_null();
    switch (v->info->type) {
    case SL_PQ_BOOL: return json_boolean(v->b[i]);
    case SL_PQ_INT32: return json_integer(v->i32[i]);
    case SL_PQ_INT64: return json_integer(v->i64[i]);
    case SL_PQ_FLOAT: return json_real(v->f32[i]);
    case SL_PQ_DOUBLE: return json_real(v->f64[i]);
    case SL_PQ_STRING:
        return sl_json_text((const char *)v->data + v->offsets[i],
                            (size_t)(v->offsets[i + 1] - v->offsets[i]));
    default: return json_null();
    }
}

static sl_status pq_next(source_reader *r, sl_source_item *item, bool *done)
{
    while (!r->batch || r->row >= r->batch->num_rows) {
        if (r->failed) {
            *done = true;
            return SL_OK;
        }
        if (r->batch)
            r->base += r->batch->num_rows;
        r->row = 0;
        sl_status st = sl_pq_reader_next(r->pq, &r->batch);
        if (st == SL_ERR_NOMEM)
            return st;
        if (st != SL_OK) {
            r->failed = true;
            r->batch = NULL;
            item->at = r->base;
            if (!(item->id = sl_asprintf("%s:%lld", r->name, (long long)r->base)))
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            return sl_source_item_fail(item, "%s; the rest of the file is skipped", sl_last_error());
        }
        if (!r->batch) {
            *done = true;
            return SL_OK;
        }
    }
    int64_t i = r->row++;
    const sl_pq_batch *b = r->batch;
    item->at = r->base + i;
    if (!(item->id = sl_asprintf("%s:%lld", r->name, (long long)(r->base + i))) ||
        !(item->extra = json_object()))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    for (size_t c = 0; c < r->n_sel; c++) {
        if ((int)c == r->bytes_col || (int)c == r->path_col)
            continue;
        json_object_set_new(item->extra, b->columns[c].info->name, cell_json(&b->columns[c], i));
    }
    if (r->prompt_col >= 0) {
        json_t *pr = json_object_get(item->extra, b->columns[r->prompt_col].info->name);
        if (json_is_string(pr) && json_string_length(pr) &&
            !(item->prompt = sl_strdup(json_string_value(pr))))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    const sl_pq_vector *bv = r->bytes_col >= 0 ? &b->columns[r->bytes_col] : NULL;
    if (bv && bv->valid[i] && bv->offsets[i + 1] > bv->offsets[i]) {
        size_t len = (size_t)(bv->offsets[i + 1] - bv->offsets[i]);
        if (len > r->p->max_item_bytes)
            return sl_source_item_fail(item, "%s row %lld: '%s' is %zu bytes, over the limit of %zu",
                                       r->file, (long long)(r->base + i), bv->info->name, len,
                                       r->p->max_item_bytes);
        if (!(item->data = sl_malloc(len)))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        memcpy(item->data, bv->data + bv->offsets[i], len);
        item->len = len;
        return SL_OK;
    }
    const sl_pq_vector *pv = r->path_col >= 0 ? &b->columns[r->path_col] : NULL;
    if (pv && pv->valid[i] && pv->offsets[i + 1] > pv->offsets[i]) {
        char *value = sl_strndup((const char *)pv->data + pv->offsets[i],
                                 (size_t)(pv->offsets[i + 1] - pv->offsets[i]));
        if (!value)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        sl_status st = sl_source_locate(value, r->base_dir, r->p, item);
        sl_free(value);
        return st;
    }
    return sl_source_item_fail(item, "%s row %lld: column '%s' holds no image bytes or path",
                               r->file, (long long)(r->base + i), r->image_name);
}

static int64_t pq_count(const char *file, const sl_source_params *p, const atomic_bool *stop)
{
    sl_pq_reader *pq;
    sl_pq_reader_params rp = reader_params(p);
    if (sl_pq_reader_open(file, &rp, &pq) != SL_OK)
        return 1; /* the file gives one error item */
    int64_t n = sl_pq_reader_num_rows(pq);
    sl_pq_reader_free(pq);
    return n;
}

const source_kind sl_source_parquet = {"parquet", pq_open, pq_next, pq_close, pq_count};
