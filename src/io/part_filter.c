/* io/part_filter.c — see part_filter.h: the JSONL and Parquet formats, and
 * the choice by extension (the tar format is part_filter_tar.c). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "io/parquet_json.h"
#include "io/parquet_read.h"
#include "io/parquet_shape.h"
#include "io/parquet_write.h"
#include "io/part_filter.h"

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* --- JSONL -------------------------------------------------------------------------- */

/* A line's id (borrowed from *root, which the caller frees) and whether its
 * error is set. */
static sl_status jsonl_row(const char *path, long line, const char *text, size_t len,
                           json_t **root, const char **id, bool *failed)
{
    json_error_t err;
    *root = json_loadb(text, len, JSON_ALLOW_NUL, &err);
    if (!*root || !json_is_object(*root))
        return sl_fail(SL_ERR_DECODE, "%s:%ld: not a row of sluice's output (%s)", path, line,
                       *root ? "not a JSON object" : err.text);
    json_t *v = json_object_get(*root, "id");
    if (!json_is_string(v))
        return sl_fail(SL_ERR_DECODE, "%s:%ld: the row has no string \"id\"", path, line);
    *id = json_string_value(v);
    json_t *e = json_object_get(*root, "error");
    *failed = e && !json_is_null(e);
    return SL_OK;
}

/* Walks the lines of a JSONL file; `line_fn` sees each (text without its
 * line break). */
typedef sl_status (*line_fn)(void *ctx, long line, const char *text, size_t len);

static sl_status jsonl_walk(const char *path, line_fn fn, void *ctx)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "cannot read '%s': %s",
                       path, strerror(errno));
    char *text = NULL;
    size_t cap = 0;
    ssize_t n;
    long line = 0;
    sl_status st = SL_OK;
    errno = 0;
    while (st == SL_OK && (n = getline(&text, &cap, f)) >= 0) {
        line++;
        size_t len = (size_t)n;
        if (len && text[len - 1] == '\n')
            len--;
        if (len)
            st = fn(ctx, line, text, len);
    }
    if (st == SL_OK && ferror(f))
        st = sl_fail(SL_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
    free(text); /* getline's, from malloc */
    fclose(f);
    return st;
}

typedef struct failed_walk {
    const char *path;
    sl_part_id_fn each;
    void *user;
} failed_walk;

static sl_status failed_line(void *ctx, long line, const char *text, size_t len)
{
    failed_walk *w = ctx;
    json_t *root;
    const char *id;
    bool failed;
    sl_status st = jsonl_row(w->path, line, text, len, &root, &id, &failed);
    if (st == SL_OK && failed)
        st = w->each(w->user, id);
    json_decref(root);
    return st;
}

typedef struct filter_walk {
    const char *path, *tmp_path;
    int fd;
    sl_idset *drop;
    long removed, kept;
    sl_buf out; /* lines kept, written a megabyte at a time */
} filter_walk;

enum { FLUSH_BYTES = 1 << 20 };

static sl_status flush_kept(filter_walk *w)
{
    sl_status st = w->out.len ? sl_file_write_all(w->fd, w->out.data, w->out.len, w->tmp_path)
                              : SL_OK;
    w->out.len = 0;
    return st;
}

/* A line's id as sluice's sinks write it: the row's first member,
 * {"id":"..."; parsing that string alone is several times faster than the
 * whole row (a caption, its timings, pass-through columns). NULL (the
 * caller parses the row) for a line that does not start so. The caller
 * frees what it returns with json_decref. */
static json_t *leading_id(const char *text, size_t len)
{
    static const char head[] = "{\"id\":";
    if (len <= sizeof head - 1 || memcmp(text, head, sizeof head - 1) != 0)
        return NULL;
    json_t *v = json_loadb(text + sizeof head - 1, len - (sizeof head - 1),
                           JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v && !json_is_string(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

static sl_status filter_line(void *ctx, long line, const char *text, size_t len)
{
    filter_walk *w = ctx;
    json_t *root = leading_id(text, len);
    const char *id = root ? json_string_value(root) : NULL;
    bool failed, drop = false;
    sl_status st = root ? SL_OK : jsonl_row(w->path, line, text, len, &root, &id, &failed);
    if (st == SL_OK)
        st = sl_idset_has(w->drop, id, &drop);
    json_decref(root);
    if (st != SL_OK)
        return st;
    if (drop) {
        w->removed++;
        return SL_OK;
    }
    w->kept++;
    if (!sl_buf_append(&w->out, text, len) || !sl_buf_append(&w->out, "\n", 1))
        return sl_fail(SL_ERR_NOMEM, "out of memory writing '%s'", w->tmp_path);
    return w->out.len >= FLUSH_BYTES ? flush_kept(w) : SL_OK;
}

static sl_status filter_jsonl(const char *path, const char *tmp_path, sl_idset *drop,
                              long *removed, long *kept)
{
    filter_walk w = {.path = path, .tmp_path = tmp_path, .drop = drop};
    w.fd = sl_file_create_temp(tmp_path, 0666);
    if (w.fd < 0)
        return sl_fail(SL_ERR_IO, "cannot create '%s': %s", tmp_path, sl_file_temp_error(errno));
    sl_status st = jsonl_walk(path, filter_line, &w);
    if (st == SL_OK)
        st = flush_kept(&w);
    sl_buf_free(&w.out);
    if (st == SL_OK)
        st = sl_file_sync(w.fd, tmp_path);
    if (close(w.fd) != 0 && st == SL_OK)
        st = sl_fail(SL_ERR_IO, "cannot write '%s': %s", tmp_path, strerror(errno));
    *removed = w.removed;
    *kept = w.kept;
    return st;
}

/* --- Parquet ------------------------------------------------------------------------ */

/* Row i's id (not NUL-terminated: *len bytes) of a string column. */
static const char *pq_string(const sl_pq_vector *v, int64_t i, size_t *len)
{
    if (!v->valid[i])
        return NULL;
    *len = (size_t)(v->offsets[i + 1] - v->offsets[i]);
    return (const char *)v->data + v->offsets[i];
}

static sl_status pq_open(const char *path, sl_pq_reader **r, long *id_col, long *err_col)
{
    sl_status st = sl_pq_reader_open(path, NULL, r);
    if (st != SL_OK)
        return st;
    *id_col = sl_pq_reader_find_column(*r, "id");
    *err_col = sl_pq_reader_find_column(*r, "error");
    if (*id_col < 0 || sl_pq_reader_column(*r, (size_t)*id_col)->type != SL_PQ_STRING) {
        sl_pq_reader_free(*r);
        *r = NULL;
        return sl_fail(SL_ERR_DECODE, "'%s' is not a part of sluice's output: no string "
                                      "column \"id\"", path);
    }
    return SL_OK;
}

/* An id as a C string, in *buf (grown as needed). */
static const char *pq_id(const char *path, const sl_pq_vector *ids, int64_t i, char **buf,
                         size_t *cap, sl_status *st)
{
    size_t len = 0;
    const char *id = pq_string(ids, i, &len);
    if (!id) {
        *st = sl_fail(SL_ERR_DECODE, "'%s': a row with a null id", path);
        return NULL;
    }
    if (len + 1 > *cap) {
        char *grown = sl_realloc(*buf, len + 1);
        if (!grown) {
            *st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
            return NULL;
        }
        *buf = grown;
        *cap = len + 1;
    }
    memcpy(*buf, id, len);
    (*buf)[len] = '\0';
    return *buf;
}

static sl_status failed_parquet(const char *path, sl_part_id_fn each, void *user)
{
    sl_pq_reader *r;
    long id_col, err_col;
    sl_status st = pq_open(path, &r, &id_col, &err_col);
    if (st != SL_OK || err_col < 0) { /* no error column: no row failed */
        sl_pq_reader_free(r);
        return st;
    }
    const char *names[2] = {"id", "error"};
    st = sl_pq_reader_select(r, names, 2);
    char *buf = NULL;
    size_t cap = 0;
    const sl_pq_batch *b;
    while (st == SL_OK && (st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
        for (int64_t i = 0; st == SL_OK && i < b->num_rows; i++) {
            if (!b->columns[1].valid[i])
                continue;
            const char *id = pq_id(path, &b->columns[0], i, &buf, &cap, &st);
            if (id)
                st = each(user, id);
        }
    }
    sl_free(buf);
    sl_pq_reader_free(r);
    return st;
}

/* Row i of column v as the writer takes it. */
static sl_pq_value pq_cell(const sl_pq_vector *v, int64_t i)
{
    sl_pq_value out = {.is_null = !v->valid[i]};
    if (out.is_null)
        return out;
    switch (v->info->type) {
    case SL_PQ_STRING:
    case SL_PQ_BINARY:
        out.ptr = v->data + v->offsets[i];
        out.len = (size_t)(v->offsets[i + 1] - v->offsets[i]);
        break;
    case SL_PQ_INT64: out.i64 = v->i64[i]; break;
    case SL_PQ_DOUBLE: out.f64 = v->f64[i]; break;
    case SL_PQ_BOOL: out.b = v->b[i]; break;
    default: break; /* refused before: the writer takes the five above */
    }
    return out;
}

/* --- Parquet nested columns: the shapes the sink wrote beside them ---------------- */

/* A column as written: flat (the reader's column `first`) or nested (its
 * leaves the reader's columns [first, first + leaves)). */
typedef struct pq_top {
    sl_pq_node *shape; /* NULL: flat */
    char *name;
    size_t first, leaves;
} pq_top;

/* Whether column *c is the leaf `name` of node n's type (NULL: a string)
 * at these levels (then *c moves past it); a DECIMAL reads as its text. */
static bool leaf_matches(const sl_pq_reader *r, const char *name, const sl_pq_node *n, int max_def, unsigned rep,
                         const size_t *list_ends, size_t *c)
{
    if (*c >= sl_pq_reader_num_columns(r))
        return false;
    const sl_pq_column_info *info = sl_pq_reader_column(r, *c);
    bool decimal = n && n->type == SL_PQ_DECIMAL;
    bool type_ok = decimal ? info->is_decimal && info->precision == n->precision && info->scale == n->scale
                           : info->type == (n ? n->type : SL_PQ_STRING) && !info->is_decimal;
    if (strcmp(info->name, name) != 0 || !type_ok || info->max_def != max_def || info->depth != rep)
        return false;
    for (unsigned d = 0; d < rep; d++)
        if (info->nest_list_len[d] != list_ends[d])
            return false;
    (*c)++;
    return true;
}

/* Whether the reader's columns from *c on are n's leaves under `prefix`
 * as the writer makes them: their names, types, definition levels and the
 * lists they are in (list d named by the first list_ends[d] bytes), so a
 * flat column named like a struct's leaf ("a.b" beside struct a {b}) is not
 * taken for it; *c moves past them. rep, def: as the writer's compile(). */
static bool leaves_match(const sl_pq_reader *r, const sl_pq_node *n, const char *prefix, unsigned rep, int def,
                         size_t *list_ends, size_t *c)
{
    switch (n->kind) {
    case SL_PQ_NODE_LEAF: return leaf_matches(r, prefix, n, def + 1, rep, list_ends, c);
    case SL_PQ_NODE_LIST: {
        if (rep >= SL_PQ_MAX_DEPTH)
            return false;
        list_ends[rep] = strlen(prefix);
        char *name = sl_asprintf("%s.list.element", prefix);
        bool ok = name && leaves_match(r, n->element, name, rep + 1, def + 2, list_ends, c);
        sl_free(name);
        return ok;
    }
    case SL_PQ_NODE_MAP: {
        if (rep >= SL_PQ_MAX_DEPTH)
            return false;
        list_ends[rep] = strlen(prefix);
        char *key = sl_asprintf("%s.key_value.key", prefix), *value = sl_asprintf("%s.key_value.value", prefix);
        bool ok = key && value && leaf_matches(r, key, NULL, def + 2, rep + 1, list_ends, c) &&
                  leaves_match(r, n->element, value, rep + 1, def + 2, list_ends, c);
        sl_free(key);
        sl_free(value);
        return ok;
    }
    case SL_PQ_NODE_STRUCT:
        for (size_t i = 0; i < n->n_fields; i++) {
            char *name = sl_asprintf("%s.%s", prefix, n->names[i]);
            bool ok = name && leaves_match(r, n->fields[i], name, rep, def + 1, list_ends, c);
            sl_free(name);
            if (!ok)
                return false;
        }
        return true;
    }
    return false;
}

/* Row i of nested node n (its leaves the batch's columns from `first`,
 * named from the first `len` bytes of theirs) as the JSON it was written
 * from, a null struct null (io/parquet_json.h). NULL when out of memory. */
static json_t *nested_json(const sl_pq_node *n, const sl_pq_batch *b, size_t first, size_t len, int64_t i)
{
    if (n->kind == SL_PQ_NODE_LEAF)
        return sl_pq_value_json(&b->columns[first], i);
    if (n->kind == SL_PQ_NODE_LIST || n->kind == SL_PQ_NODE_MAP) { /* a map reads as an object */
        size_t k = sl_pq_shape_leaves(n);
        const sl_pq_vector **cols = sl_calloc(k, sizeof *cols);
        if (!cols)
            return NULL;
        for (size_t j = 0; j < k; j++)
            cols[j] = &b->columns[first + j];
        json_t *list = sl_pq_column_json(cols, k, len, i, sl_pq_value_json);
        sl_free(cols);
        return list;
    }
    size_t leaves = sl_pq_shape_leaves(n);
    for (size_t k = first; k < first + leaves; k++)
        if (sl_pq_in_null_group(&b->columns[k], i, len))
            return json_null();
    json_t *o = json_object();
    for (size_t f = 0; o && f < n->n_fields; f++) {
        json_t *v = nested_json(n->fields[f], b, first, len + 1 + strlen(n->names[f]), i);
        if (!v || json_object_set_new(o, n->names[f], v) != 0) {
            json_decref(o);
            return NULL;
        }
        first += sl_pq_shape_leaves(n->fields[f]);
    }
    return o;
}

/* The columns of `path` as the writer was given them: the nested ones from
 * the shapes the sink wrote in its metadata (parquet_shape.h), the others
 * flat. *n_tops set; the caller frees each shape, name and the array. */
static sl_status pq_tops(const char *path, const sl_pq_reader *r, pq_top **out, size_t *n_tops)
{
    size_t n = sl_pq_reader_num_columns(r);
    pq_top *tops = sl_calloc(n ? n : 1, sizeof *tops);
    if (!tops)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
    *out = tops;
    *n_tops = 0;
    const char *meta = sl_pq_reader_metadata(r, SL_PQ_SHAPES_KEY);
    json_error_t jerr;
    json_t *shapes = meta ? json_loads(meta, 0, &jerr) : NULL;
    if (meta && !json_is_object(shapes)) {
        json_decref(shapes);
        return sl_fail(SL_ERR_DECODE, "'%s': its %s metadata is not a JSON object", path, SL_PQ_SHAPES_KEY);
    }
    sl_status st = SL_OK;
    bool *used = sl_calloc(json_object_size(shapes) + 1, sizeof *used); /* each shape is one column's */
    if (!used)
        st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
    for (size_t c = 0; st == SL_OK && c < n;) {
        pq_top *t = &tops[(*n_tops)++];
        t->first = c;
        const char *name;
        json_t *j;
        size_t k = 0;
        json_object_foreach(shapes, name, j) { /* a nested column whose leaves start here */
            char why[256];
            size_t end = c, list_ends[SL_PQ_MAX_DEPTH];
            if (used[k++])
                continue;
            sl_pq_node *shape = sl_pq_shape_parse(j, why, sizeof why);
            if (!shape) {
                st = sl_fail(SL_ERR_DECODE, "'%s': column '%s' has a shape sluice does not write: %s", path, name,
                             why);
                break;
            }
            if (leaves_match(r, shape, name, 0, 0, list_ends, &end)) {
                used[k - 1] = true;
                t->shape = shape;
                t->leaves = end - c;
                t->name = sl_strdup(name);
                if (!t->name)
                    st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
                break;
            }
            sl_pq_shape_free(shape);
        }
        if (st == SL_OK && !t->shape) {
            const sl_pq_column_info *info = sl_pq_reader_column(r, c);
            if (info->type > SL_PQ_BOOL || info->list_len || info->max_def > 1) /* a leaf of no shape here */
                st = sl_fail(SL_ERR_DECODE, "'%s': column '%s' is not one sluice writes", path, info->name);
            t->leaves = 1;
        }
        c += t->leaves ? t->leaves : 1;
    }
    sl_free(used);
    json_decref(shapes);
    return st;
}

static void pq_tops_free(pq_top *tops, size_t n)
{
    for (size_t i = 0; tops && i < n; i++) {
        sl_pq_shape_free(tops[i].shape);
        sl_free(tops[i].name);
    }
    sl_free(tops);
}

static sl_status filter_parquet(const char *path, const char *tmp_path, sl_idset *drop,
                                const char *codec, long *removed, long *kept)
{
    sl_pq_reader *r;
    long id_col, err_col;
    sl_status st = pq_open(path, &r, &id_col, &err_col);
    if (st != SL_OK)
        return st;
    pq_top *tops = NULL;
    size_t n = 0;
    st = pq_tops(path, r, &tops, &n);
    sl_pq_column_def *defs = sl_calloc(n ? n : 1, sizeof *defs);
    sl_pq_value *row = sl_calloc(n ? n : 1, sizeof *row);
    json_t **cells = sl_calloc(n ? n : 1, sizeof *cells);
    if (st == SL_OK && (!defs || !row || !cells))
        st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
    for (size_t c = 0; st == SL_OK && c < n; c++) {
        const sl_pq_column_info *info = sl_pq_reader_column(r, tops[c].first);
        defs[c] = tops[c].shape ? (sl_pq_column_def){tops[c].name, SL_PQ_STRING, true, tops[c].shape}
                                : (sl_pq_column_def){info->name, info->type, info->nullable, NULL};
    }
    sl_pq_writer *w = NULL;
    sl_pq_writer_params wp = sl_pq_writer_default_params();
    if (st == SL_OK && codec && !sl_pq_codec_parse(codec, &wp.codec))
        st = sl_fail(SL_ERR_INVALID_ARG, "no Parquet compression '%s'", codec);
    if (st == SL_OK)
        st = sl_pq_writer_open(tmp_path, defs, n, &wp, &w);
    const char *shapes = sl_pq_reader_metadata(r, SL_PQ_SHAPES_KEY);
    if (st == SL_OK && shapes) /* for the next --retry-failed */
        st = sl_pq_writer_set_metadata(w, SL_PQ_SHAPES_KEY, shapes);
    char *buf = NULL;
    size_t cap = 0;
    const sl_pq_batch *b;
    while (st == SL_OK && (st = sl_pq_reader_next(r, &b)) == SL_OK && b) {
        for (int64_t i = 0; st == SL_OK && i < b->num_rows; i++) {
            bool gone = false;
            const char *id = pq_id(path, &b->columns[id_col], i, &buf, &cap, &st);
            if (id)
                st = sl_idset_has(drop, id, &gone);
            if (st != SL_OK || gone) {
                *removed += gone;
                continue;
            }
            for (size_t c = 0; st == SL_OK && c < n; c++) {
                if (!tops[c].shape) {
                    row[c] = pq_cell(&b->columns[tops[c].first], i);
                } else if ((cells[c] = nested_json(tops[c].shape, b, tops[c].first, strlen(tops[c].name), i))) {
                    row[c] = (sl_pq_value){.json = cells[c]};
                } else {
                    st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", path);
                }
            }
            if (st == SL_OK && (st = sl_pq_writer_append(w, row)) == SL_OK)
                (*kept)++;
            for (size_t c = 0; c < n; c++) {
                json_decref(cells[c]);
                cells[c] = NULL;
            }
        }
    }
    if (st == SL_OK)
        st = sl_pq_writer_close(w); /* synced */
    sl_pq_writer_free(w);
    sl_free(buf);
    sl_free(row);
    sl_free(cells);
    sl_free(defs);
    pq_tops_free(tops, n);
    sl_pq_reader_free(r);
    return st;
}

/* --- by extension ------------------------------------------------------------------- */

sl_status sl_part_failed_ids(const char *path, sl_part_id_fn each, void *user)
{
    if (ends_with(path, ".tar"))
        return sl_part_failed_ids_tar(path, each, user);
    if (ends_with(path, ".parquet"))
        return failed_parquet(path, each, user);
    failed_walk w = {.path = path, .each = each, .user = user};
    return jsonl_walk(path, failed_line, &w);
}

/* A JSONL part's rows are its whole lines: the sink ends each with a line
 * break, so a last line without one was cut and is no row. */
static sl_status count_jsonl(const char *path, long *rows)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "cannot read '%s': %s",
                       path, strerror(errno));
    char buf[1 << 16];
    size_t n;
    bool line_open = false; /* the current line has text */
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != '\n')
                line_open = true;
            else if (line_open) { /* an empty line is no row (jsonl_walk skips it) */
                ++*rows;
                line_open = false;
            }
        }
    sl_status st = ferror(f) ? sl_fail(SL_ERR_IO, "cannot read '%s': %s", path, strerror(errno))
                             : SL_OK;
    fclose(f);
    return st;
}

sl_status sl_part_count_rows(const char *path, long *rows)
{
    *rows = 0;
    if (ends_with(path, ".tar"))
        return sl_part_count_rows_tar(path, rows);
    if (!ends_with(path, ".parquet"))
        return count_jsonl(path, rows);
    sl_pq_reader *r; /* the footer's count: nothing else is read */
    sl_status st = sl_pq_reader_open(path, NULL, &r);
    if (st == SL_OK)
        *rows = (long)sl_pq_reader_num_rows(r);
    sl_pq_reader_free(r);
    return st;
}

sl_status sl_part_filter(const char *path, const char *tmp_path, sl_idset *drop,
                         const char *parquet_codec, long *removed, long *kept)
{
    *removed = *kept = 0;
    sl_status st;
    if (ends_with(path, ".tar"))
        st = sl_part_filter_tar(path, tmp_path, drop, removed, kept);
    else if (ends_with(path, ".parquet"))
        st = filter_parquet(path, tmp_path, drop, parquet_codec, removed, kept);
    else
        st = filter_jsonl(path, tmp_path, drop, removed, kept);
    if (st != SL_OK)
        unlink(tmp_path);
    return st;
}
