/* io/parquet_write.c — the Parquet writer: rows are buffered per leaf column
 * into data pages (dictionary indices while the column chunk's dictionary
 * pays, PLAIN values otherwise; PLAIN_DICTIONARY, as format 1.0 files name
 * it, which every reader takes), pages are compressed into per-column chunk
 * buffers (the dictionary page is written ahead of them with the chunk),
 * and a row group is written (column after column) once it passes its byte
 * target; the footer (Thrift compact FileMetaData) is written on close. A
 * nested column is compiled into a tree (wnode) over its leaves, and each
 * row's JSON value is shredded into the leaves' repetition and definition
 * levels (Dremel's striping: shred()). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/error.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/json.h"
#include "core/utf8.h"
#include "io/parquet_read.h"
#include "io/parquet_write.h"
#include "io/thrift_compact.h"
#include "sluice/sluice.h"

#define PAGE_MAX_ROWS (1 << 17)
#define STATS_MAX_BYTES 4096 /* longer string/binary min or max: not written */

typedef struct chunk_meta {
    int64_t offset, num_values, uncompressed, compressed, null_count;
    int64_t data_offset; /* the first data page: after the dictionary page, if any */
    bool has_dict, has_minmax;
    sl_buf min, max; /* encoded statistics values */
} chunk_meta;

typedef struct rg_meta {
    int64_t num_rows, uncompressed, compressed, offset;
    chunk_meta *cols;
} rg_meta;

/* A leaf column. A flat column is one with max_rep 0 and max_def 0 or 1. */
typedef struct wcol {
    char *name;             /* the dotted path, for messages */
    char **path;            /* path_in_schema */
    size_t path_n;
    sl_pq_type type;
    int precision, scale, width; /* SL_PQ_DECIMAL: width is its FIXED_LEN_BYTE_ARRAY's */
    int max_rep, max_def;
    /* the open page */
    sl_buf values;          /* PLAIN values (bools bit-packed); empty while dict_on */
    size_t bool_bits;
    uint32_t *defs, *reps;  /* a level per entry (max_def, max_rep > 0 only) */
    size_t levels_cap;
    int64_t page_rows;      /* entries: a flat column's rows */
    int64_t page_plain;     /* the page's values' bytes as PLAIN (where pages are cut) */
    /* The open chunk's dictionary. While dict_on, the open page holds
     * indices (idx) into it; when it would pass SL_PQ_DICT_MAX_BYTES, or the
     * chunk's first page would not be smaller with it, the open page turns
     * PLAIN (page_to_plain) and so does the rest of the chunk. Its entries
     * are kept for the dictionary page while dict_pages > 0. */
    bool dict_on;
    uint32_t *idx;
    size_t idx_n, idx_cap;
    sl_buf dict;            /* the entries, PLAIN encoded: the dictionary page's body */
    uint32_t *dict_at;      /* where entry k starts in dict */
    uint32_t dict_n, dict_cap;
    uint32_t *slots;        /* open addressing over the entries: index + 1, 0 empty */
    size_t slots_cap;
    int64_t dict_pages;     /* data pages of the open chunk written as indices */
    /* the open column chunk */
    sl_buf chunk;    /* finished pages: header + compressed body */
    int64_t chunk_uncompressed, chunk_values, chunk_nulls;
    bool has_minmax, minmax_too_long;
    int64_t min_i, max_i;
    double min_d, max_d;
    sl_buf min_s, max_s;
} wcol;

typedef struct kv {
    char *key, *value;
} kv;

/* A nested column's shape, compiled: its leaves are cols[first, first + n). */
typedef struct wnode {
    sl_pq_node_kind kind;
    char *name;
    size_t first, n;
    int rep;             /* LIST, MAP: the repetition level of its entries */
    struct wnode *kids;  /* LIST: the element; STRUCT: the fields; MAP: key, value */
    size_t n_kids;
    bool required;       /* a MAP's key: never null */
} wnode;

/* A column as given: flat (node NULL, its leaf cols[first]) or nested. */
typedef struct wtop {
    char *name;
    bool nullable;
    size_t first;
    wnode *node;
} wtop;

struct sl_pq_writer {
    char *path, *created_by;
    int fd;
    sl_pq_writer_params params;
    size_t ntops, ncols; /* columns as given; leaves */
    wtop *tops;
    wcol *cols;
    kv *kvs;
    size_t nkvs;
    rg_meta *rgs;
    size_t nrgs, rgs_cap;
    int64_t rg_rows, rg_bytes, total_rows, file_pos;
    sl_buf body, comp, rle; /* page scratch */
    ZSTD_CCtx *zstd;
    bool closed, broken;
};

sl_pq_writer_params sl_pq_writer_default_params(void)
{
    return (sl_pq_writer_params){
        .codec = SL_PQ_ZSTD,
        .row_group_bytes = 64 << 20,
        .page_bytes = 1 << 20,
        .dictionary = true,
        .created_by = NULL,
    };
}

/* ---- file output ------------------------------------------------------- */

static sl_status write_all(sl_pq_writer *w, const void *data, size_t len)
{
    sl_status st = sl_file_write_all(w->fd, data, len, w->path);
    if (st != SL_OK) {
        w->broken = true;
        return st;
    }
    w->file_pos += (int64_t)len;
    return SL_OK;
}

static sl_status nomem(sl_pq_writer *w)
{
    w->broken = true;
    return sl_fail(SL_ERR_NOMEM, "out of memory writing Parquet file '%s'", w->path);
}

/* ---- dictionaries ------------------------------------------------------ */

static void put_le(uint8_t *dst, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = (uint8_t)(v >> (8 * i));
}

/* A column chunk's dictionary starts empty and on, where the type has one. */
static void dict_restart(const sl_pq_writer *w, wcol *c)
{
    c->dict_on = w->params.dictionary &&
                 (c->type == SL_PQ_STRING || c->type == SL_PQ_INT64 || c->type == SL_PQ_DOUBLE);
    c->dict.len = 0;
    c->dict_n = 0;
    c->dict_pages = 0;
    c->idx_n = 0;
    if (c->slots)
        memset(c->slots, 0, c->slots_cap * sizeof *c->slots);
}

/* Entry k of c's dictionary, as PLAIN bytes (a byte array's with its length). */
static const uint8_t *dict_entry(const wcol *c, uint32_t k, size_t *len)
{
    size_t end = k + 1 < c->dict_n ? c->dict_at[k + 1] : c->dict.len;
    *len = end - c->dict_at[k];
    return c->dict.data + c->dict_at[k];
}

#define FNV_BASIS 0xcbf29ce484222325ULL

/* FNV-1a, continued from h; slot() mixes its low bits, which alone follow
 * the last bytes (numbers counting up). */
static uint64_t hash_bytes(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static size_t slot(uint64_t h, size_t cap) { return (size_t)sl_hash_mix64(h) & (cap - 1); }

/* v (not a bool) as PLAIN bytes: head (the 8 bytes of a number, or a byte
 * array's 4-byte length) then tail (the array's bytes). */
static void plain_parts(const wcol *c, const sl_pq_value *v, uint8_t head[8], size_t *head_len, const void **tail,
                        size_t *tail_len)
{
    if (c->type == SL_PQ_INT64 || c->type == SL_PQ_DOUBLE) {
        uint64_t bits;
        if (c->type == SL_PQ_INT64)
            bits = (uint64_t)v->i64;
        else
            memcpy(&bits, &v->f64, 8);
        put_le(head, bits, 8);
        *head_len = 8;
        *tail = NULL;
        *tail_len = 0;
    } else {
        bool fixed = c->type == SL_PQ_DECIMAL; /* no length: the column's width says it */
        put_le(head, v->len, 4);
        *head_len = fixed ? 0 : 4;
        *tail = v->ptr;
        *tail_len = v->len;
    }
}

static bool slots_grow(wcol *c)
{
    size_t cap = c->slots_cap ? 2 * c->slots_cap : 1024;
    uint32_t *slots = sl_calloc(cap, sizeof *slots);
    if (!slots)
        return false;
    for (uint32_t k = 0; k < c->dict_n; k++) {
        size_t len;
        const uint8_t *e = dict_entry(c, k, &len);
        size_t at = slot(hash_bytes(FNV_BASIS, e, len), cap);
        while (slots[at])
            at = (at + 1) & (cap - 1);
        slots[at] = k + 1;
    }
    sl_free(c->slots);
    c->slots = slots;
    c->slots_cap = cap;
    return true;
}

/* The open page's indices as PLAIN values: the page, and the rest of the
 * chunk, go on without the dictionary. */
static bool page_to_plain(wcol *c)
{
    c->values.len = 0;
    for (size_t i = 0; i < c->idx_n; i++) {
        size_t len;
        const uint8_t *e = dict_entry(c, c->idx[i], &len);
        if (!sl_buf_append(&c->values, e, len))
            return false;
    }
    c->idx_n = 0;
    c->dict_on = false;
    if (c->dict_pages == 0) { /* no page refers to it: no dictionary page */
        c->dict.len = 0;
        c->dict_n = 0;
    }
    return true;
}

static bool put_plain(wcol *c, const uint8_t *head, size_t head_len, const void *tail, size_t tail_len)
{
    return sl_buf_append(&c->values, head, head_len) && sl_buf_append(&c->values, tail, tail_len);
}

/* Bits of an index into c's dictionary (at least 1: some readers take 0
 * for corrupt). */
static int index_bits(const wcol *c)
{
    int bits = 1;
    while (bits < 32 && (c->dict_n - 1) >> bits)
        bits++;
    return bits;
}

/* Whether the chunk's first page is smaller as indices plus the dictionary
 * than as PLAIN values (unique captions are not; a model name is). */
static bool dict_pays(const wcol *c)
{
    uint64_t indices = ((uint64_t)c->idx_n * (uint64_t)index_bits(c) + 7) / 8;
    return c->dict.len + indices < (uint64_t)c->page_plain;
}

/* A value (its PLAIN bytes, plain_parts) into the open page as its
 * dictionary index (a new entry when it has none), or, when the dictionary
 * would pass its limit, the page turned PLAIN with the value after it. */
static bool dict_put(wcol *c, const uint8_t *head, size_t head_len, const void *tail, size_t tail_len)
{
    if (c->slots_cap == 0 && !slots_grow(c))
        return false;
    size_t at = slot(hash_bytes(hash_bytes(FNV_BASIS, head, head_len), tail, tail_len), c->slots_cap);
    for (; c->slots[at]; at = (at + 1) & (c->slots_cap - 1)) {
        size_t len;
        const uint8_t *e = dict_entry(c, c->slots[at] - 1, &len);
        if (len == head_len + tail_len && memcmp(e, head, head_len) == 0 &&
            (tail_len == 0 || memcmp(e + head_len, tail, tail_len) == 0))
            break;
    }
    uint32_t k;
    if (c->slots[at]) {
        k = c->slots[at] - 1;
    } else {
        if (c->dict.len + head_len + tail_len > SL_PQ_DICT_MAX_BYTES) {
            if (!page_to_plain(c))
                return false;
            return put_plain(c, head, head_len, tail, tail_len);
        }
        if (c->dict_n == c->dict_cap) {
            uint32_t cap = c->dict_cap ? 2 * c->dict_cap : 256;
            uint32_t *at_ = sl_realloc(c->dict_at, cap * sizeof *at_);
            if (!at_)
                return false;
            c->dict_at = at_;
            c->dict_cap = cap;
        }
        if (!sl_buf_append(&c->dict, head, head_len) || !sl_buf_append(&c->dict, tail, tail_len))
            return false;
        k = c->dict_n;
        c->dict_at[c->dict_n++] = (uint32_t)(c->dict.len - head_len - tail_len);
        c->slots[at] = k + 1;
        if (2 * (size_t)c->dict_n > c->slots_cap && !slots_grow(c))
            return false;
    }
    if (c->idx_n == c->idx_cap) {
        size_t cap = c->idx_cap ? 2 * c->idx_cap : 1024;
        uint32_t *idx = sl_realloc(c->idx, cap * sizeof *idx);
        if (!idx)
            return false;
        c->idx = idx;
        c->idx_cap = cap;
    }
    c->idx[c->idx_n++] = k;
    /* A chunk's first page is weighed as it fills, at 1,024 values and each
     * doubling: a column of unique values stops paying for the hash table
     * after 1,024, not after the page's 131,072. */
    if (c->dict_pages == 0 && c->idx_n >= 1024 && (c->idx_n & (c->idx_n - 1)) == 0 && !dict_pays(c))
        return page_to_plain(c);
    return true;
}

/* ---- open -------------------------------------------------------------- */

#define SL_PQ_CONVERTED_MAP 1
#define SL_PQ_CONVERTED_LIST 3
#define SL_PQ_CONVERTED_DECIMAL 5
/* Nodes nested in a column at most (lists and structs); a path is at most
 * twice as many names. */
#define MAX_NODE_DEPTH 24

/* The leaves under n, or 0 with *why when the shape cannot be written. */
static size_t count_leaves(const sl_pq_node *n, int depth, int lists, const char **why)
{
    if (!n) {
        *why = "a missing node";
        return 0;
    }
    if (depth > MAX_NODE_DEPTH || lists > SL_PQ_WRITE_MAX_LISTS) {
        *why = "nested too deep";
        return 0;
    }
    switch (n->kind) {
    case SL_PQ_NODE_LEAF:
        if ((unsigned)n->type > SL_PQ_BOOL && n->type != SL_PQ_DECIMAL) {
            *why = "a leaf of a type the writer does not support";
            return 0;
        }
        if (n->type == SL_PQ_DECIMAL && !sl_pq_decimal_valid(n->precision, n->scale)) {
            *why = "a decimal leaf of a precision out of 1..38 or a scale out of 0..precision";
            return 0;
        }
        return 1;
    case SL_PQ_NODE_LIST: return count_leaves(n->element, depth + 1, lists + 1, why);
    case SL_PQ_NODE_MAP: {
        size_t k = count_leaves(n->element, depth + 1, lists + 1, why);
        return k ? 1 + k : 0; /* and its keys */
    }
    case SL_PQ_NODE_STRUCT: {
        if (n->n_fields == 0 || !n->names || !n->fields) {
            *why = "a struct without fields";
            return 0;
        }
        size_t all = 0;
        for (size_t i = 0; i < n->n_fields; i++) {
            const char *name = n->names[i];
            if (!name || !*name || !sl_utf8_valid(name, strlen(name))) {
                *why = "a field without a valid UTF-8 name";
                return 0;
            }
            for (size_t j = 0; j < i; j++)
                if (strcmp(n->names[j], name) == 0) {
                    *why = "a field name twice";
                    return 0;
                }
            /* A leaf's path lists its groups (one per node, and one more
             * per list or map) only so deep; past them the reader splits a
             * name at its dots. */
            if (strchr(name, '.') && depth + 1 + lists >= SL_PQ_MAX_GROUPS) {
                *why = "a field named with a '.' under 16 or more groups (it would not read back)";
                return 0;
            }
            size_t k = count_leaves(n->fields[i], depth + 1, lists, why);
            if (k == 0)
                return 0;
            all += k;
        }
        return all;
    }
    }
    *why = "a node of an unknown kind";
    return 0;
}

static char *join_path(const char *const *path, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += strlen(path[i]) + 1;
    char *s = sl_malloc(len ? len : 1), *p = s;
    for (size_t i = 0; s && i < n; i++)
        p += sprintf(p, "%s%s", i ? "." : "", path[i]);
    if (s && !n)
        *s = '\0';
    return s;
}

/* A leaf at path[0..n) with its levels; precision and scale: a
 * decimal's. */
static bool make_leaf(wcol *c, const char *const *path, size_t n, sl_pq_type type, int precision, int scale,
                      int max_rep, int max_def)
{
    c->type = type;
    if (type == SL_PQ_DECIMAL) {
        c->precision = precision;
        c->scale = scale;
        c->width = sl_pq_decimal_width(precision);
    }
    c->max_rep = max_rep;
    c->max_def = max_def;
    if (!(c->path = sl_calloc(n, sizeof *c->path)))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(c->path[c->path_n++] = sl_strdup(path[i])))
            return false;
    return (c->name = join_path((const char *const *)c->path, n)) != NULL;
}

/* Compiles n, named `name` below path[0..depth), into out: a present node
 * adds one definition level (a list two: itself and its entry), a list one
 * repetition level; its leaves take the next of w->cols. */
static bool compile(sl_pq_writer *w, wnode *out, const sl_pq_node *n, const char *name, const char **path, size_t depth,
                    int rep, int def, size_t *next)
{
    out->kind = n->kind;
    out->first = *next;
    if (!(out->name = sl_strdup(name)))
        return false;
    path[depth] = out->name;
    bool ok = true;
    switch (n->kind) {
    case SL_PQ_NODE_LEAF:
        ok = make_leaf(&w->cols[(*next)++], path, depth + 1, n->type, n->precision, n->scale, rep, def + 1);
        break;
    case SL_PQ_NODE_STRUCT:
        ok = (out->kids = sl_calloc(n->n_fields, sizeof *out->kids)) != NULL;
        for (size_t i = 0; ok && i < n->n_fields; i++, out->n_kids++)
            ok = compile(w, &out->kids[i], n->fields[i], n->names[i], path, depth + 1, rep, def + 1, next);
        break;
    case SL_PQ_NODE_LIST:
        out->rep = rep + 1;
        path[depth + 1] = "list";
        ok = (out->kids = sl_calloc(1, sizeof *out->kids)) != NULL &&
             (out->n_kids = 1, compile(w, &out->kids[0], n->element, "element", path, depth + 2, rep + 1, def + 2, next));
        break;
    case SL_PQ_NODE_MAP: {
        out->rep = rep + 1;
        path[depth + 1] = "key_value";
        /* The key: a required leaf, defined wherever its entry is. */
        wnode *key = (out->kids = sl_calloc(2, sizeof *out->kids));
        ok = key && (key->name = sl_strdup("key"));
        if (ok) {
            out->n_kids = 1;
            *key = (wnode){.kind = SL_PQ_NODE_LEAF, .name = key->name, .first = *next, .n = 1, .required = true};
            path[depth + 2] = key->name;
            ok = make_leaf(&w->cols[(*next)++], path, depth + 3, SL_PQ_STRING, 0, 0, rep + 1, def + 2);
        }
        ok = ok && (out->n_kids = 2, compile(w, &out->kids[1], n->element, "value", path, depth + 2, rep + 1, def + 2, next));
        break;
    }
    }
    out->n = *next - out->first;
    return ok;
}

static void wnode_clear(wnode *n)
{
    for (size_t i = 0; i < n->n_kids; i++)
        wnode_clear(&n->kids[i]);
    sl_free(n->kids);
    sl_free(n->name);
}

/* The writer's name as the Parquet spec's created_by has it, "APP version
 * VERSION (build BUILD)" (pyarrow and parquet-mr parse that form to tell
 * which writer's known bugs to work around); sl_strdup'd. */
static char *parquet_created_by(void)
{
    return sl_asprintf("sluice version " SL_VERSION " (build %s)", sl_build_id());
}


sl_status sl_pq_writer_open(const char *path, const sl_pq_column_def *columns, size_t num_columns,
                            const sl_pq_writer_params *params, sl_pq_writer **out)
{
    *out = NULL;
    sl_pq_writer_params p = params ? *params : sl_pq_writer_default_params();
    if (num_columns == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': no columns", path);
    if (p.codec != SL_PQ_UNCOMPRESSED && p.codec != SL_PQ_SNAPPY && p.codec != SL_PQ_GZIP &&
        p.codec != SL_PQ_ZSTD)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': unsupported codec %d", path, (int)p.codec);
    if (p.row_group_bytes <= 0 || p.page_bytes <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': row group and page sizes must be positive", path);
    size_t leaves = 0;
    for (size_t i = 0; i < num_columns; i++) {
        const char *name = columns[i].name;
        if (!name || !*name || !sl_utf8_valid(name, strlen(name)))
            return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column %zu has no valid UTF-8 name", path, i);
        if (!columns[i].nested && (unsigned)columns[i].type > SL_PQ_BOOL)
            return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column '%s' has a type the writer does not support",
                           path, name);
        const char *why = NULL;
        size_t k = columns[i].nested ? count_leaves(columns[i].nested, 0, 0, &why) : 1;
        if (k == 0)
            return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column '%s' cannot be written: %s", path, name,
                           why);
        leaves += k;
        for (size_t j = 0; j < i; j++)
            if (strcmp(columns[j].name, name) == 0)
                return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column name '%s' appears twice", path, name);
    }

    sl_pq_writer *w = sl_calloc(1, sizeof *w);
    if (!w)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    w->fd = -1;
    w->params = p;
    w->path = sl_strdup(path);
    w->created_by = p.created_by ? sl_strdup(p.created_by) : parquet_created_by();
    w->tops = sl_calloc(num_columns, sizeof *w->tops);
    w->cols = sl_calloc(leaves, sizeof *w->cols);
    if (p.codec == SL_PQ_ZSTD)
        w->zstd = ZSTD_createCCtx();
    bool ok = w->path && w->created_by && w->tops && w->cols && (p.codec != SL_PQ_ZSTD || w->zstd);
    size_t next = 0;
    for (size_t i = 0; ok && i < num_columns; i++, w->ntops++) {
        wtop *t = &w->tops[i];
        t->first = next;
        t->nullable = columns[i].nested || columns[i].nullable;
        ok = (t->name = sl_strdup(columns[i].name)) != NULL;
        if (ok && columns[i].nested) {
            const char *stack[2 * MAX_NODE_DEPTH + 4];
            ok = (t->node = sl_calloc(1, sizeof *t->node)) != NULL &&
                 compile(w, t->node, columns[i].nested, t->name, stack, 0, 0, 0, &next);
        } else if (ok) {
            const char *name = t->name;
            ok = make_leaf(&w->cols[next++], &name, 1, columns[i].type, 0, 0, 0, columns[i].nullable);
        }
        w->ncols = next;
    }
    if (!ok) {
        w->closed = true; /* nothing on disk yet */
        sl_pq_writer_free(w);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    }
    for (size_t i = 0; i < w->ncols; i++)
        dict_restart(w, &w->cols[i]);
    w->fd = sl_file_create_temp(path, 0666);
    if (w->fd < 0) {
        sl_status st = sl_fail(SL_ERR_IO, "cannot create Parquet file '%s': %s", path, sl_file_temp_error(errno));
        w->closed = true;
        sl_pq_writer_free(w);
        return st;
    }
    sl_status st = write_all(w, "PAR1", 4);
    if (st != SL_OK) {
        sl_pq_writer_free(w);
        return st;
    }
    *out = w;
    return SL_OK;
}

sl_status sl_pq_writer_set_metadata(sl_pq_writer *w, const char *key, const char *value)
{
    for (size_t i = 0; i < w->nkvs; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            char *v = sl_strdup(value);
            if (!v)
                return nomem(w);
            sl_free(w->kvs[i].value);
            w->kvs[i].value = v;
            return SL_OK;
        }
    kv *kvs = sl_realloc(w->kvs, (w->nkvs + 1) * sizeof *kvs);
    if (!kvs)
        return nomem(w);
    w->kvs = kvs;
    kvs[w->nkvs].key = sl_strdup(key);
    kvs[w->nkvs].value = sl_strdup(value);
    if (!kvs[w->nkvs].key || !kvs[w->nkvs].value) {
        sl_free(kvs[w->nkvs].key);
        sl_free(kvs[w->nkvs].value);
        return nomem(w);
    }
    w->nkvs++;
    return SL_OK;
}

/* ---- pages and chunks -------------------------------------------------- */

/* A page's sizes at most, before and after compression: the page header
 * holds each as an i32. Lowered by sl_pq_writer_test_page_limit(). */
static size_t page_limit = INT32_MAX;

void sl_pq_writer_test_page_limit(size_t bytes) { page_limit = bytes ? bytes : INT32_MAX; }

/* Whether a page of `body_len` bytes, `payload_len` under the codec, fits
 * its header; else the writer is broken (the row is in the page, not in
 * rg_rows) with a message saying which size is past the limit. */
static sl_status page_fits(sl_pq_writer *w, const wcol *c, size_t body_len, size_t payload_len)
{
    if (body_len <= page_limit && payload_len <= page_limit)
        return SL_OK;
    w->broken = true;
    if (body_len > page_limit)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': a page of column '%s' exceeds 2 GiB "
                       "(%zu bytes; a page header holds its size as a 32-bit number)", w->path,
                       c->name, body_len);
    /* A value of nearly 2 GiB that the codec cannot shrink grows by its
     * framing: cast to the header's i32 the size would be negative. */
    return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': a page of column '%s' exceeds 2 GiB "
                   "under %s compression (%zu bytes, %zu before; a page header holds its size "
                   "as a 32-bit number): write it uncompressed (codec none) or its values smaller",
                   w->path, c->name, sl_pq_codec_name(w->params.codec), payload_len, body_len);
}

/* *payload: body under the file's codec (body itself, or w->comp). */
static sl_status compress_page(sl_pq_writer *w, const wcol *c, const sl_buf *body, const sl_buf **payload)
{
    *payload = body;
    if (w->params.codec == SL_PQ_UNCOMPRESSED)
        return SL_OK;
    w->comp.len = 0;
    const char *err = sl_pq_compress(w->params.codec, body->data, body->len, &w->comp, w->zstd);
    if (err) {
        w->broken = true;
        return sl_fail(SL_ERR_IO, "Parquet file '%s': column '%s': %s", w->path, c->name, err);
    }
    *payload = &w->comp;
    return SL_OK;
}

/* Closes the open page of column c into its chunk buffer. */
static sl_status flush_page(sl_pq_writer *w, wcol *c)
{
    if (c->page_rows == 0)
        return SL_OK;
    if (c->dict_on && c->idx_n && c->dict_pages == 0 && !dict_pays(c) && !page_to_plain(c))
        return nomem(w);
    bool as_dict = c->dict_on && c->idx_n; /* a page of nulls only is PLAIN, its chunk still may not be */
    /* The page body: repetition levels, then definition levels (each when
     * its maximum is above 0: a 4-byte length, then the RLE hybrid), then
     * the values (or the indices' bit width and their RLE hybrid); a
     * required flat column's PLAIN values are the body as they are, with
     * no copy. */
    const sl_buf *body = &c->values;
    if (c->max_rep || c->max_def || as_dict) {
        w->body.len = 0;
        for (int k = 0; k < 2; k++) {
            int max = k == 0 ? c->max_rep : c->max_def;
            if (max == 0)
                continue;
            int bits = 0;
            while ((1 << bits) <= max)
                bits++;
            uint8_t len[4];
            w->rle.len = 0;
            if (!sl_rle_encode(&w->rle, k == 0 ? c->reps : c->defs, (size_t)c->page_rows, bits))
                return nomem(w);
            put_le(len, w->rle.len, 4);
            if (!sl_buf_append(&w->body, len, 4) || !sl_buf_append(&w->body, w->rle.data, w->rle.len))
                return nomem(w);
        }
        if (as_dict) {
            uint8_t bits = (uint8_t)index_bits(c);
            if (!sl_buf_append(&w->body, &bits, 1) || !sl_rle_encode(&w->body, c->idx, c->idx_n, bits))
                return nomem(w);
        } else if (!sl_buf_append(&w->body, c->values.data, c->values.len)) {
            return nomem(w);
        }
        body = &w->body;
    }
    sl_status st = page_fits(w, c, body->len, 0);
    const sl_buf *payload = body;
    if (st == SL_OK)
        st = compress_page(w, c, body, &payload);
    if (st == SL_OK)
        st = page_fits(w, c, body->len, payload->len);
    if (st != SL_OK)
        return st;

    sl_tc_writer h;
    sl_tc_writer_init(&h);
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, SL_PQP_DATA);
    sl_tc_write_i32_field(&h, 2, (int32_t)body->len);
    sl_tc_write_i32_field(&h, 3, (int32_t)payload->len);
    sl_tc_write_field(&h, SL_TC_STRUCT, 5); /* DataPageHeader */
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, (int32_t)c->page_rows);
    sl_tc_write_i32_field(&h, 2, as_dict ? SL_PQE_PLAIN_DICTIONARY : SL_PQE_PLAIN);
    sl_tc_write_i32_field(&h, 3, SL_PQE_RLE);
    sl_tc_write_i32_field(&h, 4, SL_PQE_RLE);
    sl_tc_write_struct_end(&h);
    sl_tc_write_struct_end(&h);
    bool ok = !h.err && sl_buf_append(&c->chunk, h.buf, h.len) &&
              sl_buf_append(&c->chunk, payload->data, payload->len);
    c->chunk_uncompressed += (int64_t)(h.len + body->len);
    sl_tc_writer_free(&h);
    if (!ok)
        return nomem(w);
    c->values.len = 0;
    c->bool_bits = 0;
    c->page_rows = 0;
    c->page_plain = 0;
    if (as_dict) {
        c->dict_pages++;
        c->idx_n = 0;
    }
    return SL_OK;
}

/* The chunk's dictionary page (when a data page refers to it), written
 * ahead of the chunk's data pages: its uncompressed bytes in *usize. */
static sl_status write_dict_page(sl_pq_writer *w, wcol *c, int64_t *usize, int64_t *csize)
{
    const sl_buf *payload;
    sl_status st = compress_page(w, c, &c->dict, &payload);
    if (st == SL_OK) /* the dictionary stays under SL_PQ_DICT_MAX_BYTES: a check only */
        st = page_fits(w, c, c->dict.len, payload->len);
    if (st != SL_OK)
        return st;
    sl_tc_writer h;
    sl_tc_writer_init(&h);
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, SL_PQP_DICTIONARY);
    sl_tc_write_i32_field(&h, 2, (int32_t)c->dict.len);
    sl_tc_write_i32_field(&h, 3, (int32_t)payload->len);
    sl_tc_write_field(&h, SL_TC_STRUCT, 7); /* DictionaryPageHeader */
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, (int32_t)c->dict_n);
    sl_tc_write_i32_field(&h, 2, SL_PQE_PLAIN_DICTIONARY);
    sl_tc_write_struct_end(&h);
    sl_tc_write_struct_end(&h);
    st = h.err ? nomem(w) : write_all(w, h.buf, h.len);
    if (st == SL_OK)
        st = write_all(w, payload->data, payload->len);
    *usize = (int64_t)(h.len + c->dict.len);
    *csize = (int64_t)(h.len + payload->len);
    sl_tc_writer_free(&h);
    return st;
}

static bool set_bytes(sl_buf *b, const void *data, size_t len)
{
    b->len = 0;
    return sl_buf_append(b, data, len);
}

/* Statistics: the chunk's min and max, encoded as PLAIN values (strings as
 * raw bytes, bools as one byte). */
static bool chunk_stats(wcol *c, chunk_meta *m)
{
    m->null_count = c->chunk_nulls;
    m->has_minmax = c->has_minmax && !c->minmax_too_long;
    if (!m->has_minmax)
        return true;
    uint8_t lo[8], hi[8];
    switch (c->type) {
    case SL_PQ_INT64:
    case SL_PQ_BOOL: {
        int n = c->type == SL_PQ_BOOL ? 1 : 8;
        put_le(lo, (uint64_t)c->min_i, n);
        put_le(hi, (uint64_t)c->max_i, n);
        return set_bytes(&m->min, lo, (size_t)n) && set_bytes(&m->max, hi, (size_t)n);
    }
    case SL_PQ_DOUBLE: {
        /* The spec: a zero minimum is written as -0.0, a zero maximum as +0.0. */
        double mn = c->min_d == 0 ? -0.0 : c->min_d, mx = c->max_d == 0 ? 0.0 : c->max_d;
        uint64_t a, b;
        memcpy(&a, &mn, 8);
        memcpy(&b, &mx, 8);
        put_le(lo, a, 8);
        put_le(hi, b, 8);
        return set_bytes(&m->min, lo, 8) && set_bytes(&m->max, hi, 8);
    }
    default:
        return set_bytes(&m->min, c->min_s.data, c->min_s.len) &&
               set_bytes(&m->max, c->max_s.data, c->max_s.len);
    }
}

static sl_status flush_row_group(sl_pq_writer *w)
{
    if (w->rg_rows == 0)
        return SL_OK;
    rg_meta *rgs = sl_grow(w->rgs, w->nrgs, &w->rgs_cap, sizeof *rgs);
    if (!rgs)
        return nomem(w);
    w->rgs = rgs;
    rg_meta *rg = &w->rgs[w->nrgs];
    memset(rg, 0, sizeof *rg);
    rg->cols = sl_calloc(w->ncols, sizeof *rg->cols);
    if (!rg->cols)
        return nomem(w);
    w->nrgs++;
    rg->num_rows = w->rg_rows;
    rg->offset = w->file_pos;
    for (size_t i = 0; i < w->ncols; i++) {
        wcol *c = &w->cols[i];
        chunk_meta *m = &rg->cols[i];
        sl_status st = flush_page(w, c);
        if (st != SL_OK)
            return st;
        m->offset = w->file_pos;
        m->num_values = c->chunk_values;
        m->uncompressed = c->chunk_uncompressed;
        m->compressed = (int64_t)c->chunk.len;
        if (!chunk_stats(c, m))
            return nomem(w);
        if (c->dict_pages > 0) {
            int64_t usize = 0, csize = 0;
            if ((st = write_dict_page(w, c, &usize, &csize)) != SL_OK)
                return st;
            m->has_dict = true;
            m->uncompressed += usize;
            m->compressed += csize;
        }
        m->data_offset = w->file_pos;
        st = write_all(w, c->chunk.data, c->chunk.len);
        if (st != SL_OK)
            return st;
        rg->uncompressed += m->uncompressed;
        rg->compressed += m->compressed;
        c->chunk.len = 0;
        c->chunk_uncompressed = c->chunk_values = c->chunk_nulls = 0;
        c->has_minmax = c->minmax_too_long = false;
        dict_restart(w, c);
    }
    w->total_rows += w->rg_rows;
    w->rg_rows = 0;
    w->rg_bytes = 0;
    return SL_OK;
}

/* ---- rows -------------------------------------------------------------- */

/* sl_utf8_valid, with a fast path for the common all-ASCII value. */
static bool valid_utf8(const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        if (word & 0x8080808080808080ULL)
            return sl_utf8_valid((const char *)p, len);
    }
    for (; i < len; i++)
        if (p[i] & 0x80)
            return sl_utf8_valid((const char *)p, len);
    return true;
}

static int cmp_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int r = n ? memcmp(a, b, n) : 0; /* an empty value may have a NULL pointer */
    return r ? r : (alen > blen) - (alen < blen);
}

/* Two decimals of width bytes, as the signed big-endian integers they are. */
static int cmp_decimal(const uint8_t *a, const uint8_t *b, int width)
{
    if ((a[0] ^ b[0]) & 0x80)
        return a[0] & 0x80 ? -1 : 1; /* of different signs */
    return memcmp(a, b, (size_t)width);
}

static bool update_stats(wcol *c, const sl_pq_value *v)
{
    switch (c->type) {
    case SL_PQ_DECIMAL:
        if (!c->has_minmax || cmp_decimal(v->ptr, c->min_s.data, c->width) < 0)
            if (!set_bytes(&c->min_s, v->ptr, v->len))
                return false;
        if (!c->has_minmax || cmp_decimal(v->ptr, c->max_s.data, c->width) > 0)
            if (!set_bytes(&c->max_s, v->ptr, v->len))
                return false;
        break;
    case SL_PQ_INT64:
    case SL_PQ_BOOL: {
        int64_t x = c->type == SL_PQ_BOOL ? v->b : v->i64;
        if (!c->has_minmax || x < c->min_i)
            c->min_i = x;
        if (!c->has_minmax || x > c->max_i)
            c->max_i = x;
        break;
    }
    case SL_PQ_DOUBLE:
        if (isnan(v->f64))
            return true; /* NaN is left out of min/max */
        if (!c->has_minmax || v->f64 < c->min_d)
            c->min_d = v->f64;
        if (!c->has_minmax || v->f64 > c->max_d)
            c->max_d = v->f64;
        break;
    default:
        if (c->minmax_too_long)
            return true;
        if (v->len > STATS_MAX_BYTES) {
            c->minmax_too_long = true;
            return true;
        }
        if (!c->has_minmax || cmp_bytes(v->ptr, v->len, c->min_s.data, c->min_s.len) < 0)
            if (!set_bytes(&c->min_s, v->ptr, v->len))
                return false;
        if (!c->has_minmax || cmp_bytes(v->ptr, v->len, c->max_s.data, c->max_s.len) > 0)
            if (!set_bytes(&c->max_s, v->ptr, v->len))
                return false;
    }
    c->has_minmax = true;
    return true;
}

/* One entry of leaf c: its levels, and v (a value of c's type) when def
 * is c's maximum (else the entry is null at that depth). */
static sl_status emit(sl_pq_writer *w, wcol *c, int rep, int def, const sl_pq_value *v)
{
    uint8_t unscaled[16];
    sl_pq_value dec;
    if (c->type == SL_PQ_DECIMAL && def == c->max_def) {
        /* Its text (sl_pq_value_from_json's) as the column's bytes; a
         * number that is none of the column's values is null (a decimal
         * is a shape's leaf, always optional). */
        if (sl_decimal_from_text(v->ptr, v->len, c->precision, c->scale, unscaled, (size_t)c->width)) {
            dec = (sl_pq_value){.ptr = unscaled, .len = (size_t)c->width};
            v = &dec;
        } else {
            def--;
        }
    }
    if ((c->max_rep || c->max_def) && (size_t)c->page_rows == c->levels_cap) {
        size_t cap = c->levels_cap ? 2 * c->levels_cap : 1024;
        uint32_t *defs = sl_realloc(c->defs, cap * sizeof *defs);
        if (defs)
            c->defs = defs;
        uint32_t *reps = defs && c->max_rep ? sl_realloc(c->reps, cap * sizeof *reps) : c->reps;
        if (reps)
            c->reps = reps;
        if (!defs || (c->max_rep && !reps))
            return nomem(w);
        c->levels_cap = cap;
    }
    if (c->max_rep)
        c->reps[c->page_rows] = (uint32_t)rep;
    if (c->max_def)
        c->defs[c->page_rows] = (uint32_t)def;
    c->page_rows++;
    c->chunk_values++;
    w->rg_bytes += c->max_rep ? 2 : c->max_def ? 1 : 0; /* the levels, roughly, as they are kept */
    if (def < c->max_def) {
        c->chunk_nulls++;
        return SL_OK;
    }
    bool ok = true;
    if (c->type == SL_PQ_BOOL) {
        if (c->bool_bits % 8 == 0)
            ok = sl_buf_append(&c->values, "\0", 1);
        if (ok && v->b)
            c->values.data[c->bool_bits / 8] |= (uint8_t)(1u << (c->bool_bits % 8));
        c->bool_bits++;
        w->rg_bytes += 1;
        c->page_plain = (int64_t)c->values.len;
    } else {
        uint8_t head[8];
        size_t head_len, tail_len;
        const void *tail;
        plain_parts(c, v, head, &head_len, &tail, &tail_len);
        w->rg_bytes += (int64_t)(head_len + tail_len);
        c->page_plain += (int64_t)(head_len + tail_len);
        ok = c->dict_on ? dict_put(c, head, head_len, tail, tail_len)
                        : put_plain(c, head, head_len, tail, tail_len);
    }
    if (!ok || !update_stats(c, v))
        return nomem(w);
    return SL_OK;
}

/* Null entries at (rep, def) for every leaf under n. */
static sl_status null_all(sl_pq_writer *w, const wnode *n, int rep, int def)
{
    sl_status st = SL_OK;
    for (size_t i = n->first; st == SL_OK && i < n->first + n->n; i++)
        st = emit(w, &w->cols[i], rep, def, NULL);
    return st;
}

/* v into leaf c: null where it does not fit c's type (sl_pq_value_from_json)
 * or is a string past 2 GiB. */
bool sl_pq_value_from_json(sl_pq_type type, const json_t *v, sl_pq_value *out, char **owned)
{
    *owned = NULL;
    *out = (sl_pq_value){.is_null = true};
    if (!v || json_is_null(v))
        return true;
    switch (type) {
    case SL_PQ_INT64:
        if (json_is_integer(v))
            *out = (sl_pq_value){.i64 = json_integer_value(v)};
        return true;
    case SL_PQ_DOUBLE: {
        double d; /* a decimal column's value: the double nearest it, as before its exact text */
        if (sl_json_number(v, &d))
            *out = (sl_pq_value){.f64 = d};
        return true;
    }
    case SL_PQ_BOOL:
        if (json_is_boolean(v))
            *out = (sl_pq_value){.b = json_is_true(v)};
        return true;
    case SL_PQ_DECIMAL: {
        size_t n;
        const char *digits = sl_json_decimal_text(v, &n);
        if (digits) {
            *out = (sl_pq_value){.ptr = digits, .len = n};
        } else if (json_is_string(v)) { /* a manifest's "12.50": the digits it holds */
            *out = (sl_pq_value){.ptr = json_string_value(v), .len = json_string_length(v)};
        } else if (json_is_integer(v) || (json_is_real(v) && isfinite(json_real_value(v)))) {
            char text[32];
            n = json_is_integer(v) ? (size_t)snprintf(text, sizeof text, "%" PRId64, (int64_t)json_integer_value(v))
                                   : sl_double_shortest(json_real_value(v), text);
            if (!(*owned = sl_strndup(text, n)))
                return false;
            *out = (sl_pq_value){.ptr = *owned, .len = n};
        }
        return true;
    }
    default:
        break;
    }
    size_t len;
    const char *digits = sl_json_decimal_text(v, &len);
    if (digits) { /* a text column: the decimal's exact text */
        *out = (sl_pq_value){.ptr = digits, .len = len};
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        len = json_string_length(v);
        /* jansson strings are UTF-8 but may hold NUL; the writer takes bytes. */
        if (type != SL_PQ_STRING || valid_utf8(s, len)) {
            *out = (sl_pq_value){.ptr = s, .len = len};
            return true;
        }
        if (!(*owned = sl_utf8_sanitize(s, len)))
            return false;
        len = strlen(*owned);
    } else if (!(*owned = sl_json_dump(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER, &len))) {
        return false;
    }
    *out = (sl_pq_value){.ptr = *owned, .len = len};
    return true;
}

static sl_status shred_leaf(sl_pq_writer *w, wcol *c, const json_t *v, int rep, int def)
{
    sl_pq_value x;
    char *owned;
    if (!sl_pq_value_from_json(c->type, v, &x, &owned))
        return nomem(w);
    bool fits = !x.is_null && ((c->type != SL_PQ_STRING && c->type != SL_PQ_BINARY) || x.len <= INT32_MAX);
    sl_status st = emit(w, c, rep, fits ? def + 1 : def, fits ? &x : NULL);
    sl_free(owned);
    return st;
}

/* v into the leaves under n (Dremel's striping): def is the definition
 * level that says n is null, rep the repetition level of its first entry. */
static sl_status shred(sl_pq_writer *w, const wnode *n, const json_t *v, int rep, int def)
{
    if (!v || json_is_null(v))
        return null_all(w, n, rep, def);
    switch (n->kind) {
    case SL_PQ_NODE_LEAF: return shred_leaf(w, &w->cols[n->first], v, rep, def);
    case SL_PQ_NODE_STRUCT: {
        if (!json_is_object(v))
            return null_all(w, n, rep, def);
        sl_status st = SL_OK;
        for (size_t i = 0; st == SL_OK && i < n->n_kids; i++)
            st = shred(w, &n->kids[i], json_object_get(v, n->kids[i].name), rep, def + 1);
        return st;
    }
    case SL_PQ_NODE_MAP: {
        if (!json_is_object(v))
            return null_all(w, n, rep, def);
        if (json_object_size(v) == 0)
            return null_all(w, n, rep, def + 1);
        sl_status st = SL_OK;
        size_t k = 0;
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)v, key, value) {
            int r = k++ ? n->rep : rep;
            sl_pq_value pair_key = {.ptr = key, .len = strlen(key)}; /* jansson's keys are UTF-8 */
            if ((st = emit(w, &w->cols[n->kids[0].first], r, def + 2, &pair_key)) != SL_OK ||
                (st = shred(w, &n->kids[1], value, r, def + 2)) != SL_OK)
                break;
        }
        return st;
    }
    case SL_PQ_NODE_LIST: {
        if (!json_is_array(v))
            return null_all(w, n, rep, def);
        size_t len = json_array_size(v);
        if (len == 0)
            return null_all(w, n, rep, def + 1);
        sl_status st = SL_OK;
        for (size_t k = 0; st == SL_OK && k < len; k++)
            st = shred(w, &n->kids[0], json_array_get(v, k), k ? n->rep : rep, def + 2);
        return st;
    }
    }
    return SL_OK;
}

sl_status sl_pq_writer_append(sl_pq_writer *w, const sl_pq_value *values)
{
    if (w->closed || w->broken)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': writer is %s", w->path,
                       w->closed ? "closed" : "unusable after an earlier error");
    for (size_t i = 0; i < w->ntops; i++) { /* check the whole row first */
        if (w->tops[i].node)
            continue; /* a nested value fits, or is null where it does not */
        const wcol *c = &w->cols[w->tops[i].first];
        const sl_pq_value *v = &values[i];
        if (v->is_null && !c->max_def)
            return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': row %lld: null in required column '%s'",
                           w->path, (long long)(w->total_rows + w->rg_rows), c->name);
        if (!v->is_null && (c->type == SL_PQ_STRING || c->type == SL_PQ_BINARY)) {
            if (v->len > INT32_MAX)
                return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': row %lld: value of column '%s' exceeds 2 GiB",
                               w->path, (long long)(w->total_rows + w->rg_rows), c->name);
            if (c->type == SL_PQ_STRING && !valid_utf8(v->ptr, v->len))
                return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': row %lld: column '%s' is not valid UTF-8",
                               w->path, (long long)(w->total_rows + w->rg_rows), c->name);
        }
    }
    for (size_t i = 0; i < w->ntops; i++) {
        const wtop *t = &w->tops[i];
        sl_status st = t->node ? shred(w, t->node, values[i].json, 0, 0)
                               : emit(w, &w->cols[t->first], 0, values[i].is_null ? 0 : 1, &values[i]);
        if (st != SL_OK)
            return st;
    }
    /* Pages end with rows: a row's entries are in one page of each leaf. */
    for (size_t i = 0; i < w->ncols; i++) {
        wcol *c = &w->cols[i];
        if (c->page_plain >= w->params.page_bytes || c->page_rows >= PAGE_MAX_ROWS) {
            sl_status st = flush_page(w, c);
            if (st != SL_OK)
                return st;
        }
    }
    w->rg_rows++;
    if (w->rg_bytes >= w->params.row_group_bytes)
        return flush_row_group(w);
    return SL_OK;
}

/* ---- footer ------------------------------------------------------------ */

static const int physical_type[] = {
    [SL_PQ_STRING] = SL_PQT_BYTE_ARRAY, [SL_PQ_BINARY] = SL_PQT_BYTE_ARRAY,
    [SL_PQ_INT64] = SL_PQT_INT64,       [SL_PQ_DOUBLE] = SL_PQT_DOUBLE,
    [SL_PQ_BOOL] = SL_PQT_BOOLEAN,     [SL_PQ_DECIMAL] = SL_PQT_FIXED,
};

/* A logical type annotation: LogicalType union member `id`, an empty struct. */
static void write_logical(sl_tc_writer *t, int id)
{
    sl_tc_write_field(t, SL_TC_STRUCT, 10);
    sl_tc_write_struct_begin(t);
    sl_tc_write_field(t, SL_TC_STRUCT, (int16_t)id);
    sl_tc_write_struct_begin(t);
    sl_tc_write_struct_end(t);
    sl_tc_write_struct_end(t);
}

static void write_leaf_element(sl_tc_writer *t, const char *name, const wcol *c, int repetition)
{
    sl_tc_write_struct_begin(t);
    sl_tc_write_i32_field(t, 1, physical_type[c->type]);
    if (c->type == SL_PQ_DECIMAL)
        sl_tc_write_i32_field(t, 2, c->width);
    sl_tc_write_i32_field(t, 3, repetition);
    sl_tc_write_string_field(t, 4, name);
    if (c->type == SL_PQ_STRING) {
        sl_tc_write_i32_field(t, 6, SL_PQ_CONVERTED_UTF8);
        write_logical(t, 1); /* STRING */
    } else if (c->type == SL_PQ_DECIMAL) { /* ConvertedType's for old readers, then LogicalType's */
        sl_tc_write_i32_field(t, 6, SL_PQ_CONVERTED_DECIMAL);
        sl_tc_write_i32_field(t, 7, c->scale);
        sl_tc_write_i32_field(t, 8, c->precision);
        sl_tc_write_field(t, SL_TC_STRUCT, 10);
        sl_tc_write_struct_begin(t);
        sl_tc_write_field(t, SL_TC_STRUCT, 5); /* DecimalType {1: scale, 2: precision} */
        sl_tc_write_struct_begin(t);
        sl_tc_write_i32_field(t, 1, c->scale);
        sl_tc_write_i32_field(t, 2, c->precision);
        sl_tc_write_struct_end(t);
        sl_tc_write_struct_end(t);
    }
    sl_tc_write_struct_end(t);
}

/* A group: annotated LIST or MAP (the ConvertedType and LogicalType
 * of each), or neither (0). */
static void write_group_element(sl_tc_writer *t, const char *name, int repetition, size_t children,
                                sl_pq_node_kind annotated)
{
    sl_tc_write_struct_begin(t);
    sl_tc_write_i32_field(t, 3, repetition);
    sl_tc_write_string_field(t, 4, name);
    sl_tc_write_i32_field(t, 5, (int32_t)children);
    if (annotated == SL_PQ_NODE_LIST) {
        sl_tc_write_i32_field(t, 6, SL_PQ_CONVERTED_LIST);
        write_logical(t, 3); /* LIST */
    } else if (annotated == SL_PQ_NODE_MAP) {
        sl_tc_write_i32_field(t, 6, SL_PQ_CONVERTED_MAP);
        write_logical(t, 2); /* MAP */
    }
    sl_tc_write_struct_end(t);
}

/* The schema elements of n, depth first; how many when t is NULL. */
static size_t write_node(sl_pq_writer *w, sl_tc_writer *t, const wnode *n)
{
    switch (n->kind) {
    case SL_PQ_NODE_LEAF:
        if (t)
            write_leaf_element(t, n->name, &w->cols[n->first],
                               n->required ? SL_PQR_REQUIRED : SL_PQR_OPTIONAL);
        return 1;
    case SL_PQ_NODE_LIST:
        if (t) {
            write_group_element(t, n->name, SL_PQR_OPTIONAL, 1, SL_PQ_NODE_LIST);
            write_group_element(t, "list", SL_PQR_REPEATED, 1, SL_PQ_NODE_LEAF);
        }
        return 2 + write_node(w, t, &n->kids[0]);
    case SL_PQ_NODE_MAP:
        if (t) {
            write_group_element(t, n->name, SL_PQR_OPTIONAL, 1, SL_PQ_NODE_MAP);
            write_group_element(t, "key_value", SL_PQR_REPEATED, 2, SL_PQ_NODE_LEAF);
        }
        return 2 + write_node(w, t, &n->kids[0]) + write_node(w, t, &n->kids[1]);
    case SL_PQ_NODE_STRUCT: {
        if (t)
            write_group_element(t, n->name, SL_PQR_OPTIONAL, n->n_kids, SL_PQ_NODE_LEAF);
        size_t all = 1;
        for (size_t i = 0; i < n->n_kids; i++)
            all += write_node(w, t, &n->kids[i]);
        return all;
    }
    }
    return 0;
}

static void write_schema(sl_pq_writer *w, sl_tc_writer *t)
{
    size_t elements = 1;
    for (size_t i = 0; i < w->ntops; i++)
        elements += w->tops[i].node ? write_node(w, NULL, w->tops[i].node) : 1;
    sl_tc_write_field(t, SL_TC_LIST, 2);
    sl_tc_write_list_begin(t, SL_TC_STRUCT, elements);
    sl_tc_write_struct_begin(t); /* the root */
    sl_tc_write_string_field(t, 4, "schema");
    sl_tc_write_i32_field(t, 5, (int32_t)w->ntops);
    sl_tc_write_struct_end(t);
    for (size_t i = 0; i < w->ntops; i++) {
        const wtop *top = &w->tops[i];
        if (top->node)
            write_node(w, t, top->node);
        else
            write_leaf_element(t, top->name, &w->cols[top->first],
                               top->nullable ? SL_PQR_OPTIONAL : SL_PQR_REQUIRED);
    }
}

static void write_column_chunk(sl_pq_writer *w, sl_tc_writer *t, const wcol *c, const chunk_meta *m)
{
    sl_tc_write_struct_begin(t);
    sl_tc_write_i64_field(t, 2, m->offset);
    sl_tc_write_field(t, SL_TC_STRUCT, 3); /* ColumnMetaData */
    sl_tc_write_struct_begin(t);
    sl_tc_write_i32_field(t, 1, physical_type[c->type]);
    sl_tc_write_field(t, SL_TC_LIST, 2);
    sl_tc_write_list_begin(t, SL_TC_I32, m->has_dict ? 3 : 2);
    sl_tc_write_i64(t, SL_PQE_PLAIN);
    sl_tc_write_i64(t, SL_PQE_RLE);
    if (m->has_dict)
        sl_tc_write_i64(t, SL_PQE_PLAIN_DICTIONARY);
    sl_tc_write_field(t, SL_TC_LIST, 3);
    sl_tc_write_list_begin(t, SL_TC_BINARY, c->path_n);
    for (size_t i = 0; i < c->path_n; i++)
        sl_tc_write_binary(t, c->path[i], strlen(c->path[i]));
    sl_tc_write_i32_field(t, 4, w->params.codec);
    sl_tc_write_i64_field(t, 5, m->num_values);
    sl_tc_write_i64_field(t, 6, m->uncompressed);
    sl_tc_write_i64_field(t, 7, m->compressed);
    sl_tc_write_i64_field(t, 9, m->data_offset);
    if (m->has_dict)
        sl_tc_write_i64_field(t, 11, m->offset);
    sl_tc_write_field(t, SL_TC_STRUCT, 12); /* Statistics */
    sl_tc_write_struct_begin(t);
    sl_tc_write_i64_field(t, 3, m->null_count);
    if (m->has_minmax) {
        sl_tc_write_binary_field(t, 5, m->max.data, m->max.len);
        sl_tc_write_binary_field(t, 6, m->min.data, m->min.len);
    }
    sl_tc_write_struct_end(t);
    sl_tc_write_struct_end(t);
    sl_tc_write_struct_end(t);
}

static sl_status write_footer(sl_pq_writer *w)
{
    sl_tc_writer t;
    sl_tc_writer_init(&t);
    sl_tc_write_struct_begin(&t);
    sl_tc_write_i32_field(&t, 1, 1); /* format version */
    write_schema(w, &t);
    sl_tc_write_i64_field(&t, 3, w->total_rows);
    sl_tc_write_field(&t, SL_TC_LIST, 4);
    sl_tc_write_list_begin(&t, SL_TC_STRUCT, w->nrgs);
    for (size_t g = 0; g < w->nrgs; g++) {
        const rg_meta *rg = &w->rgs[g];
        sl_tc_write_struct_begin(&t);
        sl_tc_write_field(&t, SL_TC_LIST, 1);
        sl_tc_write_list_begin(&t, SL_TC_STRUCT, w->ncols);
        for (size_t i = 0; i < w->ncols; i++)
            write_column_chunk(w, &t, &w->cols[i], &rg->cols[i]);
        sl_tc_write_i64_field(&t, 2, rg->uncompressed);
        sl_tc_write_i64_field(&t, 3, rg->num_rows);
        sl_tc_write_i64_field(&t, 5, rg->offset);
        sl_tc_write_i64_field(&t, 6, rg->compressed);
        sl_tc_write_field(&t, SL_TC_I16, 7);
        sl_tc_write_i64(&t, (int64_t)(g & 0x7FFF));
        sl_tc_write_struct_end(&t);
    }
    if (w->nkvs) {
        sl_tc_write_field(&t, SL_TC_LIST, 5);
        sl_tc_write_list_begin(&t, SL_TC_STRUCT, w->nkvs);
        for (size_t i = 0; i < w->nkvs; i++) {
            sl_tc_write_struct_begin(&t);
            sl_tc_write_string_field(&t, 1, w->kvs[i].key);
            sl_tc_write_string_field(&t, 2, w->kvs[i].value);
            sl_tc_write_struct_end(&t);
        }
    }
    sl_tc_write_string_field(&t, 6, w->created_by);
    sl_tc_write_field(&t, SL_TC_LIST, 7); /* column_orders: TYPE_ORDER each */
    sl_tc_write_list_begin(&t, SL_TC_STRUCT, w->ncols);
    for (size_t i = 0; i < w->ncols; i++) {
        sl_tc_write_struct_begin(&t);
        sl_tc_write_field(&t, SL_TC_STRUCT, 1);
        sl_tc_write_struct_begin(&t);
        sl_tc_write_struct_end(&t);
        sl_tc_write_struct_end(&t);
    }
    sl_tc_write_struct_end(&t);
    if (t.err || t.len > UINT32_MAX) {
        sl_tc_writer_free(&t);
        return nomem(w);
    }
    uint8_t tail[8];
    put_le(tail, t.len, 4);
    memcpy(tail + 4, "PAR1", 4);
    sl_status st = write_all(w, t.buf, t.len);
    if (st == SL_OK)
        st = write_all(w, tail, 8);
    sl_tc_writer_free(&t);
    return st;
}

sl_status sl_pq_writer_close(sl_pq_writer *w)
{
    if (w->closed)
        return SL_OK;
    if (w->broken)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': writer is unusable after an earlier error", w->path);
    sl_status st = flush_row_group(w);
    if (st == SL_OK)
        st = write_footer(w);
    if (st == SL_OK)
        st = sl_file_sync(w->fd, w->path);
    if (st == SL_OK && close(w->fd) != 0)
        st = sl_fail(SL_ERR_IO, "cannot close Parquet file '%s': %s", w->path, strerror(errno));
    if (st != SL_OK) {
        w->broken = true;
        return st;
    }
    w->fd = -1;
    w->closed = true;
    return SL_OK;
}

int64_t sl_pq_writer_num_rows(const sl_pq_writer *w)
{
    return w->total_rows + w->rg_rows;
}

int64_t sl_pq_writer_bytes(const sl_pq_writer *w) { return w->file_pos + w->rg_bytes; }

int64_t sl_pq_writer_num_row_groups(const sl_pq_writer *w)
{
    return (int64_t)w->nrgs;
}

void sl_pq_writer_free(sl_pq_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (!w->closed && w->path)
        unlink(w->path);
    for (size_t i = 0; w->tops && i < w->ntops; i++) {
        if (w->tops[i].node) {
            wnode_clear(w->tops[i].node);
            sl_free(w->tops[i].node);
        }
        sl_free(w->tops[i].name);
    }
    sl_free(w->tops);
    for (size_t i = 0; w->cols && i < w->ncols; i++) {
        wcol *c = &w->cols[i];
        sl_free(c->name);
        for (size_t k = 0; k < c->path_n; k++)
            sl_free(c->path[k]);
        sl_free(c->path);
        sl_free(c->defs);
        sl_free(c->reps);
        sl_free(c->idx);
        sl_free(c->dict_at);
        sl_free(c->slots);
        sl_buf_free(&c->dict);
        sl_buf_free(&c->values);
        sl_buf_free(&c->chunk);
        sl_buf_free(&c->min_s);
        sl_buf_free(&c->max_s);
    }
    for (size_t g = 0; g < w->nrgs; g++) {
        for (size_t i = 0; i < w->ncols; i++) {
            sl_buf_free(&w->rgs[g].cols[i].min);
            sl_buf_free(&w->rgs[g].cols[i].max);
        }
        sl_free(w->rgs[g].cols);
    }
    for (size_t i = 0; i < w->nkvs; i++) {
        sl_free(w->kvs[i].key);
        sl_free(w->kvs[i].value);
    }
    sl_free(w->kvs);
    sl_free(w->rgs);
    sl_free(w->cols);
    sl_buf_free(&w->body);
    sl_buf_free(&w->comp);
    sl_buf_free(&w->rle);
    ZSTD_freeCCtx(w->zstd);
    sl_free(w->path);
    sl_free(w->created_by);
    sl_free(w);
}
