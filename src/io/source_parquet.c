/* io/source_parquet.c — Parquet files as inputs (io/parquet_read.h), one
 * batch of rows at a time (a row group gives one or more). The image is the
 * Hugging Face struct (`C.bytes`, optional `C.path`) or a string column of
 * paths/URLs, or a list of either (`Sequence(Image())`: `C.list.element.bytes`,
 * or a list of strings `C.list.element`; legacy list names too), which gives
 * the row's item->images. Every other readable column except binary ones
 * passes through, a nested one (a list of primitives, of structs, of lists,
 * a map, a struct) as its JSON under its name (io/parquet_json.h), each
 * column's type the schema's (pq_types); the other fields of an image
 * struct keep their dotted names. An unreadable file or row
 * group is an error item naming it; the rest of that file is skipped. A
 * page in an encoding the reader has no decoder for costs only its rows'
 * values in that column (lost_cells). */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "io/parquet_json.h"
#include "io/parquet_read.h"
#include "io/parquet_shape.h"
#include "io/source_impl.h"

struct source_reader {
    sl_pq_reader *pq;
    char *file, *base_dir;
    const char *name; /* the file's name in ids */
    const sl_source_params *p;
    int bytes_col, path_col; /* indexes into the selection; -1: none */
    bool list;          /* the image column is a list: rows give item->images */
    /* Several image columns (--image-column A,B): each a struct or a string
     * column, a row's images in that order; n_multi 0: one column. */
    size_t n_multi;
    char *multi_names[SL_SOURCE_MAX_IMAGES];
    int multi_bytes[SL_SOURCE_MAX_IMAGES], multi_path[SL_SOURCE_MAX_IMAGES]; /* selection; -1 */
    const char *image_name;
    size_t n_sel;
    char **keys;        /* per selected column: its nested column's name in item->extra, or NULL */
    const sl_pq_column_info **infos; /* per selected column (the reader's) */
    size_t *list_head;  /* per selected column with a key: the first selected column of that key */
    const sl_pq_vector **list_cols; /* n_sel: one nested column's leaves, gathered for a row */
    size_t *warned;     /* per selected column: 1 + the row group whose lost rows it warned of; 0 none */
    const char *id_name; /* the id column (--id-column; flat, string or integer), or NULL */
    int id_col;          /* ... its index into the selection */
    const sl_pq_batch *batch;
    int64_t row, base; /* row within the batch; rows in earlier batches */
    bool failed;
};

static void pq_close(source_reader *r)
{
    if (!r)
        return;
    sl_pq_reader_free(r->pq);
    for (size_t k = 0; k < r->n_multi; k++)
        sl_free(r->multi_names[k]);
    for (size_t i = 0; r->keys && i < r->n_sel; i++)
        sl_free(r->keys[i]);
    sl_free(r->keys);
    sl_free(r->infos);
    sl_free(r->list_head);
    sl_free(r->list_cols);
    sl_free(r->warned);
    sl_free(r->file);
    sl_free(r->base_dir);
    sl_free(r);
}

/* The reader's limits for a source: a page must be able to hold the largest
 * image a cell may have (max_item_bytes) beside a few smaller ones. */
static sl_pq_reader_params reader_params(const sl_source_params *p)
{
    sl_pq_reader_params rp = sl_pq_reader_default_params();
    rp.io = sl_source_ranged_params(p);
    rp.null_undecodable = true; /* a page no decoder reads costs its rows' cells, not the file (lost_cells) */
    if (p->max_item_bytes > rp.max_page_bytes - (16u << 20) && p->max_item_bytes < SIZE_MAX / 4) {
        rp.max_page_bytes = p->max_item_bytes + (16u << 20);
        if (rp.memory_limit < 4 * rp.max_page_bytes)
            rp.memory_limit = 4 * rp.max_page_bytes;
    }
    return rp;
}

/* A list named `c` holding images: its elements' `bytes` (and `path`)
 * fields, or its elements when they are strings (paths, URLs) or binary
 * (image bytes). */
static bool find_list(const sl_pq_reader *pq, const char *c, int *bytes, int *path)
{
    size_t len = strlen(c);
    int strings = -1, blobs = -1;
    *bytes = *path = -1;
    for (size_t i = 0; i < sl_pq_reader_num_columns(pq); i++) {
        const sl_pq_column_info *ci = sl_pq_reader_column(pq, i);
        if (ci->depth != 1 || ci->list_len != len || strncmp(ci->name, c, len) != 0)
            continue;
        const char *field = ci->name + ci->element_len;
        if (strcmp(field, ".bytes") == 0 && ci->type == SL_PQ_BINARY)
            *bytes = (int)i;
        else if (strcmp(field, ".path") == 0 && ci->type == SL_PQ_STRING)
            *path = (int)i;
        else if (!*field && ci->type == SL_PQ_STRING)
            strings = (int)i;
        else if (!*field && ci->type == SL_PQ_BINARY)
            blobs = (int)i;
    }
    if (*bytes < 0 && blobs >= 0) /* a list of image bytes */
        *bytes = blobs, *path = -1;
    else if (*bytes < 0) /* a struct without bytes is no image struct */
        *path = strings;
    return *bytes >= 0 || *path >= 0;
}

/* Whether file column i is a plain binary column (not in a list): image
 * bytes stored without the Hugging Face struct around them. */
static bool plain_bytes(const sl_pq_reader *pq, int i)
{
    const sl_pq_column_info *ci = sl_pq_reader_column(pq, (size_t)i);
    return ci->type == SL_PQ_BINARY && !ci->list_len;
}

/* Whether selected column c is a field of one of several image structs
 * (not passed through: bytes, and the path beside them). */
static bool multi_struct_column(const source_reader *r, int c)
{
    for (size_t k = 0; k < r->n_multi; k++)
        if (c == r->multi_bytes[k] || (c == r->multi_path[k] && r->multi_bytes[k] >= 0))
            return true;
    return false;
}

/* Whether selected column c passes through: not the image's bytes, nor its
 * path beside them (a list of paths alone does: the output's record of
 * them), nor the id column (the output's `id` holds it; a null, the id
 * FILE:ROW, goes too, so that it is never one of the output's columns). */
static bool passes_through(const source_reader *r, size_t c)
{
    return (int)c != r->bytes_col && ((int)c != r->path_col || r->keys[c]) &&
           !multi_struct_column(r, (int)c) && (int)c != r->id_col;
}

/* Row i's id (sl_source_row_id's value): sl_pq_value_json's, but a UINT_64
 * past INT64_MAX (read as a negative int64) as its exact digits; the
 * double it is in a passing-through column would round it and the row
 * would be FILE:ROW. */
static json_t *id_json(const source_reader *r, int64_t i)
{
    const sl_pq_vector *v = &r->batch->columns[r->id_col];
    if (v->info->is_unsigned && (!v->valid || v->valid[i]) && v->i64[i] < 0)
        return sl_source_uint64_id((uint64_t)v->i64[i]);
    return sl_pq_value_json(v, i);
}

/* The length of the name of the nested column leaf ci is in: its outermost
 * group's (a struct's or a list's), or its own list's (a bare repeated
 * leaf); 0 for a flat column. */
static size_t column_len(const sl_pq_column_info *ci)
{
    return ci->n_groups ? ci->group_len[0] : ci->list_len;
}

/* The length of the key file column i passes through under (0: its own
 * name, flat): its nested column's name, but within a struct that holds an
 * image (images: the file columns, -1 none) only its list's, as before
 * structs passed whole: the struct's other fields keep their dotted names
 * (`image.width`), and the image is not written twice. */
static size_t key_len(const sl_pq_reader *pq, size_t i, const int *images, size_t n_images)
{
    const sl_pq_column_info *ci = sl_pq_reader_column(pq, i);
    size_t len = column_len(ci);
    for (size_t k = 0; len && k < n_images; k++) {
        if (images[k] < 0)
            continue;
        const sl_pq_column_info *img = sl_pq_reader_column(pq, (size_t)images[k]);
        size_t img_len = column_len(img);
        if (img_len && img_len != img->list_len && img_len == len && strncmp(img->name, ci->name, len) == 0)
            return ci->list_len;
    }
    return len;
}

/* The id column named (--id-column): a file without it, or with another
 * kind of column there, fails whole, saying what to change (every row
 * would have had FILE:ROW, unasked). */
static sl_status check_id_column(const source_reader *r, char **why)
{
    const char *c = r->id_name;
    int i = sl_pq_reader_find_column(r->pq, c);
    const sl_pq_column_info *ci = i >= 0 ? sl_pq_reader_column(r->pq, (size_t)i) : NULL;
    if (ci && !ci->list_len && !ci->n_groups &&
        (ci->type == SL_PQ_STRING || ci->type == SL_PQ_INT32 || ci->type == SL_PQ_INT64))
        return SL_OK;
    *why = sl_source_id_column_error(r->file, c, !ci);
    return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
}

/* Chooses the image columns and the pass-through ones; selects them. */
static sl_status choose_columns(source_reader *r, char **why)
{
    const sl_pq_reader *pq = r->pq;
    size_t nc = sl_pq_reader_num_columns(pq);
    const char *explicit = r->p->image_column;
    int bytes = -1, path = -1;
    char name[512];
    int multi_bytes[SL_SOURCE_MAX_IMAGES], multi_path[SL_SOURCE_MAX_IMAGES];
    if (explicit && strchr(explicit, ',')) {
        sl_status st = sl_split_image_columns(explicit, r->multi_names, &r->n_multi);
        if (st != SL_OK)
            return st;
        for (size_t k = 0; k < r->n_multi; k++) {
            const char *c = r->multi_names[k];
            snprintf(name, sizeof name, "%s.bytes", c);
            multi_bytes[k] = sl_pq_reader_find_column(pq, name);
            snprintf(name, sizeof name, "%s.path", c);
            multi_path[k] = sl_pq_reader_find_column(pq, multi_bytes[k] >= 0 ? name : c);
            if (multi_bytes[k] < 0 && multi_path[k] >= 0) {
                if (plain_bytes(pq, multi_path[k])) /* image bytes without the struct */
                    multi_bytes[k] = multi_path[k];
                if (sl_pq_reader_column(pq, (size_t)multi_path[k])->type != SL_PQ_STRING)
                    multi_path[k] = -1;
            }
            if (multi_bytes[k] < 0 && multi_path[k] < 0) {
                *why = sl_asprintf("%s: no image column '%s' (of --image-column %s): expected "
                                   "'%s.bytes' (an image struct), a binary column '%s' (image bytes) or a "
                                   "string column '%s' (paths or URLs)",
                                   r->file, c, explicit, c, c, c);
                return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            }
        }
        r->image_name = explicit;
        bytes = multi_bytes[0]; /* found: the search below is skipped */
        path = multi_path[0];
    }
    size_t n_cands = explicit ? 1 : sl_source_n_auto_image_columns;
    for (size_t k = 0; k < n_cands && bytes < 0 && path < 0; k++) {
        const char *c = explicit ? explicit : sl_source_auto_image_columns[k];
        snprintf(name, sizeof name, "%s.bytes", c);
        if (find_list(pq, c, &bytes, &path)) {
            r->list = true;
        } else if ((bytes = sl_pq_reader_find_column(pq, name)) >= 0) {
            snprintf(name, sizeof name, "%s.path", c);
            path = sl_pq_reader_find_column(pq, name);
        } else if ((path = sl_pq_reader_find_column(pq, c)) >= 0 && plain_bytes(pq, path)) {
            bytes = path; /* a binary column of image bytes */
            path = -1;
        } else if (path >= 0 && sl_pq_reader_column(pq, (size_t)path)->type != SL_PQ_STRING) {
            path = -1;
        }
        if (bytes >= 0 || path >= 0)
            r->image_name = explicit ? explicit : sl_source_auto_image_columns[k];
    }
    if (bytes < 0 && path < 0) {
        *why = sl_asprintf("%s: no image column: expected '%s.bytes' (an image struct), a binary column "
                           "'%s' (image bytes) or a string column '%s' (paths or URLs), or a list of "
                           "these%s",
                           r->file, explicit ? explicit : "image", explicit ? explicit : "image",
                           explicit ? explicit : "image",
                           explicit ? "" : " (or path, url, images, file_name, URL, image_url; name it with "
                                           "--image-column)");
        return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    size_t n_images = 0;
    int images[2 * SL_SOURCE_MAX_IMAGES];
    if (r->n_multi)
        for (size_t k = 0; k < r->n_multi; k++)
            images[n_images++] = multi_bytes[k], images[n_images++] = multi_path[k];
    else
        images[n_images++] = bytes, images[n_images++] = path;
    /* A leaf inside a list holds its elements, not a row's image: the list
     * itself is named for a list of images (not one of several columns). */
    for (size_t k = 0; k < n_images && (r->n_multi || !r->list); k++) {
        const sl_pq_column_info *ci = images[k] >= 0 ? sl_pq_reader_column(pq, (size_t)images[k]) : NULL;
        if (ci && ci->list_len) {
            *why = sl_asprintf("%s: image column '%s' is inside list '%.*s': name the list%s", r->file, ci->name,
                               (int)ci->list_len, ci->name, r->n_multi ? " alone, as the only --image-column" : "");
            return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        }
    }
    size_t *sel = sl_calloc(nc ? nc : 1, sizeof *sel);
    r->keys = sl_calloc(nc ? nc : 1, sizeof *r->keys);
    r->infos = sl_calloc(nc ? nc : 1, sizeof *r->infos);
    if (!sel || !r->keys || !r->infos) {
        sl_free(sel);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    size_t n = 0;
    r->bytes_col = r->path_col = r->id_col = -1;
    for (size_t k = 0; k < r->n_multi; k++)
        r->multi_bytes[k] = r->multi_path[k] = -1;
    char *left_out = NULL; /* the columns left out and why, for one warning */
    for (size_t i = 0; i < nc; i++) {
        const sl_pq_column_info *ci = sl_pq_reader_column(pq, i);
        size_t klen;
        bool image = false;
        for (size_t k = 0; k < r->n_multi; k++) {
            if ((int)i == multi_bytes[k])
                r->multi_bytes[k] = (int)n, image = true;
            else if ((int)i == multi_path[k])
                r->multi_path[k] = (int)n, image = true;
        }
        r->infos[n] = ci;
        if (r->id_name && strcmp(ci->name, r->id_name) == 0)
            r->id_col = (int)n; /* a string or integer column: always selected */
        if (image) { /* a string column passes through as any string does */
            sel[n++] = i;
            r->n_sel = n;
            continue;
        }
        if (!r->n_multi && (int)i == bytes)
            r->bytes_col = (int)n;
        else if (!r->n_multi && (int)i == path) {
            r->path_col = (int)n;
            /* A list of paths passes through (as a manifest's list does): the
             * output's only record of them. */
            if (bytes < 0 && ci->list_len && !(r->keys[n] = sl_strndup(ci->name, ci->list_len))) {
                sl_free(sel);
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            }
        } else if (ci->type == SL_PQ_BINARY) {
            continue;
        } else if (ci->type == SL_PQ_UNSUPPORTED && (int)n != r->id_col &&
                   !sl_source_column_in_prompt(r->p, ci->name)) {
            /* Only passing through: the rest of the row still can. A
             * column the job needs stays, and its rows fail naming it. */
            char *more = sl_asprintf("%s%scolumn '%s' (%s)", left_out ? left_out : "", left_out ? ", " : "",
                                     ci->name, ci->unsupported);
            sl_free(left_out);
            if (!(left_out = more)) {
                sl_free(sel);
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            }
            continue;
        } else if ((klen = key_len(pq, i, images, n_images)) && !(r->keys[n] = sl_strndup(ci->name, klen))) {
            sl_free(sel);
            sl_free(left_out);
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        }
        sel[n++] = i;
        r->n_sel = n; /* the keys to free */
    }
    if (left_out && !r->p->quiet)
        sl_log(SL_LOG_WARN, "%s: left out of the output, as sluice cannot read them: %s", r->file, left_out);
    sl_free(left_out);
    sl_status st = sl_pq_reader_select_indexes(r->pq, sel, n);
    sl_free(sel);
    r->n_sel = n;
    r->list_head = sl_calloc(n ? n : 1, sizeof *r->list_head);
    r->list_cols = sl_calloc(n ? n : 1, sizeof *r->list_cols);
    r->warned = sl_calloc(n ? n : 1, sizeof *r->warned);
    if (!r->list_head || !r->list_cols || !r->warned)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    for (size_t c = 0; c < n; c++) {
        r->list_head[c] = c;
        for (size_t e = 0; r->keys[c] && e < c; e++)
            if (r->keys[e] && strcmp(r->keys[e], r->keys[c]) == 0) {
                r->list_head[c] = e;
                break;
            }
    }
    if (st != SL_OK)
        *why = sl_strdup(sl_last_error());
    return SL_OK;
}

static sl_status pq_open(const char *file, const char *name, const sl_source_params *p,
                         source_reader **out, char **open_error, bool *cut_short)
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
    r->id_name = sl_source_id_column(p, NULL);
    sl_pq_reader_params rp = reader_params(p);
    sl_status st = sl_pq_reader_open(file, &rp, &r->pq);
    if (st == SL_ERR_NOMEM) {
        pq_close(r);
        return st;
    }
    if (st != SL_OK) {
        *open_error = sl_strdup(sl_last_error());
        *cut_short = st == SL_ERR_IO;
    } else if ((r->id_name && (st = check_id_column(r, open_error)) != SL_OK) ||
             (!*open_error && (st = choose_columns(r, open_error)) != SL_OK)) {
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

/* Row i of selected column c: its value, or (the first leaf of a nested
 * column) the column's value made from all its leaves; NULL for the
 * others. */
static json_t *cell_json(source_reader *r, const sl_pq_batch *b, size_t c, int64_t i, bool *skip)
{
    const sl_pq_vector *v = &b->columns[c];
    *skip = false;
    if (!r->keys[c])
        return sl_pq_value_json(v, i);
    if (r->list_head[c] != c) {
        *skip = true;
        return NULL;
    }
    size_t n = 0;
    for (size_t k = c; k < r->n_sel; k++)
        if (r->list_head[k] == c)
            r->list_cols[n++] = &b->columns[k];
    return sl_pq_column_json(r->list_cols, n, strlen(r->keys[c]), i, sl_pq_value_json);
}

/* Row i's images from a list column: each element's bytes (copied), or its
 * path located relative to the file's folder; a list of strings through
 * sl_source_locate_list. */
static sl_status list_images(source_reader *r, const sl_pq_batch *b, int64_t i, sl_source_item *item)
{
    const sl_pq_vector *bv = r->bytes_col >= 0 ? &b->columns[r->bytes_col] : NULL;
    const sl_pq_vector *pv = r->path_col >= 0 ? &b->columns[r->path_col] : NULL;
    const sl_pq_vector *lv = bv ? bv : pv;
    long long row = (long long)(r->base + i);
    char where[1024];
    snprintf(where, sizeof where, "%s row %lld, column '%s'", r->file, row, r->image_name);
    if (!lv->list_valid[i])
        return sl_source_item_fail(item, "%s: a null list, no images", where);
    int64_t lo = lv->list_offsets[i];
    size_t n = (size_t)(lv->list_offsets[i + 1] - lo);
    if (n == 0 || n > SL_SOURCE_MAX_IMAGES) /* said as for every list */
        return sl_source_locate_list(NULL, n, r->base_dir, r->p, where, item);
    if (!bv) {
        char *values[SL_SOURCE_MAX_IMAGES] = {0};
        sl_status st = SL_OK;
        for (size_t k = 0; k < n && st == SL_OK && !item->error; k++) {
            int64_t e = lo + (int64_t)k;
            if (!pv->valid[e])
                st = sl_source_item_fail(item, "%s: image %zu of %zu is null", where, k + 1, n);
            else
                st = sl_source_cell_text((const char *)pv->data + pv->offsets[e],
                                         (size_t)(pv->offsets[e + 1] - pv->offsets[e]), where, item,
                                         &values[k]);
        }
        if (st == SL_OK && !item->error)
            st = sl_source_locate_list((const char *const *)values, n, r->base_dir, r->p, where, item);
        for (size_t k = 0; k < n; k++)
            sl_free(values[k]);
        return st;
    }
    if (!(item->images = sl_calloc(n, sizeof *item->images)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading %s", where);
    item->n_images = n;
    for (size_t k = 0; k < n; k++) {
        int64_t e = lo + (int64_t)k;
        size_t len = bv->valid[e] ? (size_t)(bv->offsets[e + 1] - bv->offsets[e]) : 0;
        if (len > r->p->max_item_bytes)
            return sl_source_item_fail_status(item, SL_ERR_TOO_LARGE,
                                              "%s: image %zu of %zu is %zu bytes, over the limit of %zu",
                                              where, k + 1, n, len, r->p->max_item_bytes);
        if (len) {
            if (!(item->images[k].data = sl_malloc(len)) ||
                !(item->images[k].name = sl_strdup(where))) /* the decode says which image */
                return sl_fail(SL_ERR_NOMEM, "out of memory reading %s", where);
            memcpy(item->images[k].data, bv->data + bv->offsets[e], len);
            item->images[k].len = len;
            continue;
        }
        if (!pv || !pv->valid[e] || pv->offsets[e + 1] == pv->offsets[e])
            return sl_source_item_fail(item, "%s: image %zu of %zu holds neither bytes nor a path", where, k + 1,
                                       n);
        char *value;
        sl_source_item one = {0};
        sl_status st = sl_source_cell_text((const char *)pv->data + pv->offsets[e],
                                           (size_t)(pv->offsets[e + 1] - pv->offsets[e]), where,
                                           &one, &value);
        if (st == SL_OK && value)
            st = sl_source_locate(value, r->base_dir, r->p, where, &one);
        sl_free(value);
        /* a data: URL's bytes too: left in `one`, they leaked, and the
         * image held neither bytes nor a path */
        item->images[k] = (sl_source_image){one.path, one.data, one.len, one.name};
        if (st == SL_OK && one.error)
            st = sl_source_item_fail_status(item, one.error_status, "%s: image %zu of %zu: %s",
                                            where, k + 1, n, one.error);
        sl_free(one.error);
        if (st != SL_OK || item->error)
            return st;
    }
    return SL_OK;
}

static sl_status one_image(source_reader *r, const sl_pq_batch *b, int64_t i, int bytes_col,
                           int path_col, const char *image_name, sl_source_item *item);
static sl_status column_images(source_reader *r, const sl_pq_batch *b, int64_t i,
                               sl_source_item *item);

/* Whether a string of row i of v (a string leaf that goes into a prompt:
 * a column, a struct's field, a list's elements) is not UTF-8, which
 * would reach the model as U+FFFD: why then, naming the value ("tags[2]"
 * for a list's element) and the byte. */
static bool prompt_text_bad(const sl_pq_vector *v, int64_t i, char *why, size_t size)
{
    int64_t lo = i, hi = i + 1;
    if (v->list_offsets) { /* the row's elements, through each list it is in */
        lo = v->list_offsets[i];
        hi = v->list_offsets[i + 1];
        for (unsigned d = 1; d < v->info->depth; d++) {
            lo = v->nest_offsets[d - 1][lo];
            hi = v->nest_offsets[d - 1][hi];
        }
    }
    for (int64_t k = lo; k < hi; k++) {
        if (v->valid && !v->valid[k])
            continue;
        char name[256];
        const sl_pq_column_info *ci = v->info;
        if (v->list_offsets) /* "tags[2]", "items[0].caption" */
            snprintf(name, sizeof name, "%.*s[%lld]%s", (int)ci->list_len, ci->name, (long long)(k - lo),
                     ci->name + ci->element_len);
        if (sl_source_prompt_text_bad(v->list_offsets ? name : ci->name, (const char *)v->data + v->offsets[k],
                                      (size_t)(v->offsets[k + 1] - v->offsets[k]), why, size))
            return true;
    }
    return false;
}

/* Whether selected column c is one the job needs: an image column, the id
 * column, or one the prompt reads. */
static bool needed(const source_reader *r, size_t c)
{
    if ((int)c == r->bytes_col || (int)c == r->path_col || (int)c == r->id_col ||
        sl_source_column_in_prompt(r->p, r->infos[c]->name))
        return true;
    for (size_t k = 0; k < r->n_multi; k++)
        if ((int)c == r->multi_bytes[k] || (int)c == r->multi_path[k])
            return true;
    return false;
}

/* Row i's cells that a page sluice could not decode left null (the
 * reader's lost rows): in a column the job needs the row fails, naming
 * the file, row, row group and cause; in a column that only passes
 * through they stay null, with one warning for the column's row group. */
static sl_status lost_cells(source_reader *r, const sl_pq_batch *b, int64_t i, sl_source_item *item)
{
    for (size_t c = 0; c < r->n_sel; c++) {
        const sl_pq_vector *v = &b->columns[c];
        if (!v->n_lost || !sl_pq_vector_lost(v, i))
            continue;
        if (needed(r, c))
            return sl_source_item_fail_status(item, SL_ERR_IO, /* the file, not the row's data */
                                              "%s row %lld: the page holding its value cannot be decoded: %s",
                                              r->file, (long long)(r->base + i), v->lost_why);
        if (r->warned[c] != b->row_group + 1 && !r->p->quiet)
            sl_log(SL_LOG_WARN, "%s: its values in the rows of such pages are null; the rows go on", v->lost_why);
        r->warned[c] = b->row_group + 1;
    }
    return SL_OK;
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
            /* SL_ERR_IO: the bytes could not be read (the store, the disk),
             * which may not happen to another run; a damaged file
             * (SL_ERR_DECODE) ends alike for every run. */
            item->cut_short = st == SL_ERR_IO;
            return sl_source_item_fail_status(item, SL_ERR_IO, "%s; the rest of the file is skipped",
                                              sl_last_error());
        }
        if (!r->batch) {
            *done = true;
            return SL_OK;
        }
    }
    int64_t i = r->row++;
    const sl_pq_batch *b = r->batch;
    item->at = r->base + i;
    json_t *id = r->id_col >= 0 ? id_json(r, i) : NULL;
    bool take;
    sl_status st = r->id_col >= 0 && !id ? SL_ERR_NOMEM
                                         : sl_source_row_id(id, r->name, item->at, item, &take);
    json_decref(id);
    if (st != SL_OK || !(item->extra = json_object()))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    if ((st = lost_cells(r, b, i, item)) != SL_OK || item->error)
        return st;
    for (size_t c = 0; c < r->n_sel; c++) {
        if (!passes_through(r, c))
            continue;
        const sl_pq_vector *v = &b->columns[c];
        if (v->info->type == SL_PQ_STRING && sl_source_column_in_prompt(r->p, v->info->name)) {
            char why[400];
            if (prompt_text_bad(v, i, why, sizeof why))
                return sl_source_item_fail(item, "%s row %lld: %s", r->file, (long long)(r->base + i), why);
        }
        bool skip;
        json_t *cell = cell_json(r, b, c, i, &skip);
        if (skip)
            continue;
        if (!cell || json_object_set_new(item->extra, r->keys[c] ? r->keys[c] : b->columns[c].info->name, cell))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    if (sl_source_prompt_of(sl_source_prompt_value(item->extra, r->p), item) != SL_OK)
        return SL_ERR_NOMEM;
    if (r->list)
        return list_images(r, b, i, item);
    if (r->n_multi)
        return column_images(r, b, i, item);
    return one_image(r, b, i, r->bytes_col, r->path_col, r->image_name, item);
}

/* Row i's image from a struct's bytes (or path) column or a string column
 * (selection indexes; -1: none) into item's data or path, or its error. */
static sl_status one_image(source_reader *r, const sl_pq_batch *b, int64_t i, int bytes_col,
                           int path_col, const char *image_name, sl_source_item *item)
{
    const sl_pq_vector *bv = bytes_col >= 0 ? &b->columns[bytes_col] : NULL;
    if (bv && bv->valid[i] && bv->offsets[i + 1] > bv->offsets[i]) {
        size_t len = (size_t)(bv->offsets[i + 1] - bv->offsets[i]);
        if (len > r->p->max_item_bytes)
            return sl_source_item_fail_status(item, SL_ERR_TOO_LARGE,
                                              "%s row %lld: '%s' is %zu bytes, over the limit of %zu",
                                              r->file, (long long)(r->base + i), bv->info->name,
                                              len, r->p->max_item_bytes);
        if (!(item->data = sl_malloc(len)) ||
            !(item->name = sl_asprintf("%s row %lld, column '%s'", r->file,
                                       (long long)(r->base + i), image_name)))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        memcpy(item->data, bv->data + bv->offsets[i], len);
        item->len = len;
        return SL_OK;
    }
    const sl_pq_vector *pv = path_col >= 0 ? &b->columns[path_col] : NULL;
    if (pv && pv->valid[i] && pv->offsets[i + 1] > pv->offsets[i]) {
        char where[1024];
        snprintf(where, sizeof where, "%s row %lld, column '%s'", r->file,
                 (long long)(r->base + i), image_name);
        char *value;
        sl_status st = sl_source_cell_text((const char *)pv->data + pv->offsets[i],
                                           (size_t)(pv->offsets[i + 1] - pv->offsets[i]), where,
                                           item, &value);
        if (st != SL_OK || !value)
            return st;
        st = bv ? sl_source_locate_unembedded(value, r->base_dir, r->p, where, where,
                                                        !bv->valid[i], item)
                          : sl_source_locate(value, r->base_dir, r->p, where, item);
        sl_free(value);
        return st;
    }
    return sl_source_item_fail(item, "%s row %lld: column '%s' holds no image bytes or path",
                               r->file, (long long)(r->base + i), image_name);
}

/* Row i's images from several columns (--image-column A,B): each read as a
 * single image column is, in the order named; one that holds none fails
 * the row, naming it. */
static sl_status column_images(source_reader *r, const sl_pq_batch *b, int64_t i,
                               sl_source_item *item)
{
    if (!(item->images = sl_calloc(r->n_multi, sizeof *item->images)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    item->n_images = r->n_multi;
    for (size_t k = 0; k < r->n_multi; k++) {
        sl_source_item one = {0};
        sl_status st = one_image(r, b, i, r->multi_bytes[k], r->multi_path[k], r->multi_names[k],
                                 &one);
        item->images[k] = (sl_source_image){one.path, one.data, one.len, one.name};
        if (st == SL_OK && one.error)
            st = sl_source_item_fail_status(item, one.error_status, "image %zu of %zu: %s", k + 1,
                                            r->n_multi, one.error);
        sl_free(one.error);
        if (st != SL_OK || item->error)
            return st;
    }
    return SL_OK;
}

/* The pass-through columns' shapes from the file's schema: a flat column's
 * leaf type, a nested one's as io/parquet_json.c puts its value together;
 * the columns pq_next leaves out are left out here. */
static sl_status pq_types(const source_reader *r, json_t *into)
{
    for (size_t c = 0; c < r->n_sel; c++) {
        if (!passes_through(r, c) || r->list_head[c] != c)
            continue;
        const char *key = r->keys[c] ? r->keys[c] : r->infos[c]->name;
        json_t *shape = NULL;
        if (r->keys[c]) {
            const sl_pq_column_info **leaves = sl_malloc(r->n_sel * sizeof *leaves);
            if (!leaves)
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            size_t n = 0;
            for (size_t k = c; k < r->n_sel; k++)
                if (r->list_head[k] == c)
                    leaves[n++] = r->infos[k];
            sl_status st = sl_pq_column_shape(leaves, n, strlen(r->keys[c]), &shape);
            sl_free(leaves);
            if (st != SL_OK)
                return st;
        } else {
            /* A UINT_64 column: int64, or double when its values pass INT64_MAX (a hash), as the samples say */
            const sl_pq_column_info *ci = r->infos[c];
            const char *leaf = ci->is_unsigned || ci->is_decimal ? NULL : sl_pq_leaf_shape(ci->type);
            if (ci->is_decimal)
                shape = sl_pq_decimal_shape(ci->precision, ci->scale);
            else if (leaf)
                shape = json_string(leaf);
            if ((leaf || ci->is_decimal) && !shape)
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        }
        if (shape && json_object_set_new(into, key, shape) != 0)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    return SL_OK;
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

const source_kind sl_source_parquet = {"parquet", pq_open, pq_next, pq_close, pq_count, pq_types, true};
