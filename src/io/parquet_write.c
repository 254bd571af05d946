/* io/parquet_write.c — the flat Parquet writer: rows are buffered per column
 * into PLAIN data pages, pages are compressed into per-column chunk buffers,
 * and a row group is written (column after column) once it passes its byte
 * target; the footer (Thrift compact FileMetaData) is written on close. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/utf8.h"
#include "io/parquet_write.h"
#include "io/thrift_compact.h"
#include "sluice/sluice.h"

#define PAGE_MAX_ROWS (1 << 17)
#define STATS_MAX_BYTES 4096 /* longer string/binary min or max: not written */

typedef struct chunk_meta {
    int64_t offset, num_values, uncompressed, compressed, null_count;
    bool has_minmax;
    sl_buf min, max; /* encoded statistics values */
} chunk_meta;

typedef struct rg_meta {
    int64_t num_rows, uncompressed, compressed, offset;
    chunk_meta *cols;
} rg_meta;

typedef struct wcol {
    char *name;
    sl_pq_type type;
    bool nullable;
    /* the open page */
    sl_buf values;   /* PLAIN values (bools bit-packed) */
    size_t bool_bits;
    uint32_t *defs;  /* definition level per row (nullable only) */
    int64_t page_rows;
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

struct sl_pq_writer {
    char *path, *created_by;
    int fd;
    sl_pq_writer_params params;
    size_t ncols;
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

/* ---- open -------------------------------------------------------------- */

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
    for (size_t i = 0; i < num_columns; i++) {
        const char *name = columns[i].name;
        if (!name || !*name || !sl_utf8_valid(name, strlen(name)))
            return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column %zu has no valid UTF-8 name", path, i);
        if ((unsigned)columns[i].type > SL_PQ_BOOL)
            return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column '%s' has a type the writer does not support",
                           path, name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(columns[j].name, name) == 0)
                return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': column name '%s' appears twice", path, name);
    }

    sl_pq_writer *w = sl_calloc(1, sizeof *w);
    if (!w)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    w->fd = -1;
    w->params = p;
    w->ncols = num_columns;
    w->path = sl_strdup(path);
    w->created_by = p.created_by ? sl_strdup(p.created_by) : sl_strdup("sluice version " SL_VERSION);
    w->cols = sl_calloc(num_columns, sizeof *w->cols);
    if (p.codec == SL_PQ_ZSTD)
        w->zstd = ZSTD_createCCtx();
    bool ok = w->path && w->created_by && w->cols && (p.codec != SL_PQ_ZSTD || w->zstd);
    for (size_t i = 0; ok && i < num_columns; i++) {
        w->cols[i].name = sl_strdup(columns[i].name);
        w->cols[i].type = columns[i].type;
        w->cols[i].nullable = columns[i].nullable;
        if (columns[i].nullable)
            w->cols[i].defs = sl_malloc(PAGE_MAX_ROWS * sizeof(uint32_t));
        ok = w->cols[i].name && (!columns[i].nullable || w->cols[i].defs);
    }
    if (!ok) {
        w->closed = true; /* nothing on disk yet */
        sl_pq_writer_free(w);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (w->fd < 0) {
        sl_status st = sl_fail(SL_ERR_IO, "cannot create Parquet file '%s': %s", path, strerror(errno));
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

static void put_le(uint8_t *dst, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = (uint8_t)(v >> (8 * i));
}

/* Closes the open page of column c into its chunk buffer. */
static sl_status flush_page(sl_pq_writer *w, wcol *c)
{
    if (c->page_rows == 0)
        return SL_OK;
    /* The page body: definition levels (nullable columns: 4-byte length,
     * then the RLE hybrid) and the values; a required column's values are
     * the body as they are, with no copy. */
    const sl_buf *body = &c->values;
    if (c->nullable) {
        w->body.len = 0;
        w->rle.len = 0;
        if (!sl_rle_encode(&w->rle, c->defs, (size_t)c->page_rows, 1) || !sl_buf_reserve(&w->body, 4))
            return nomem(w);
        put_le(w->body.data, w->rle.len, 4);
        w->body.len = 4;
        if (!sl_buf_append(&w->body, w->rle.data, w->rle.len) ||
            !sl_buf_append(&w->body, c->values.data, c->values.len))
            return nomem(w);
        body = &w->body;
    }
    if (body->len > INT32_MAX)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': a page of column '%s' exceeds 2 GiB",
                       w->path, c->name);

    const sl_buf *payload = body;
    if (w->params.codec != SL_PQ_UNCOMPRESSED) {
        w->comp.len = 0;
        const char *err = sl_pq_compress(w->params.codec, body->data, body->len, &w->comp, w->zstd);
        if (err) {
            w->broken = true;
            return sl_fail(SL_ERR_IO, "Parquet file '%s': column '%s': %s", w->path, c->name, err);
        }
        payload = &w->comp;
    }

    sl_tc_writer h;
    sl_tc_writer_init(&h);
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, SL_PQP_DATA);
    sl_tc_write_i32_field(&h, 2, (int32_t)body->len);
    sl_tc_write_i32_field(&h, 3, (int32_t)payload->len);
    sl_tc_write_field(&h, SL_TC_STRUCT, 5); /* DataPageHeader */
    sl_tc_write_struct_begin(&h);
    sl_tc_write_i32_field(&h, 1, (int32_t)c->page_rows);
    sl_tc_write_i32_field(&h, 2, SL_PQE_PLAIN);
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
    return SL_OK;
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
    if (w->nrgs == w->rgs_cap) {
        size_t cap = w->rgs_cap ? w->rgs_cap * 2 : 8;
        rg_meta *rgs = sl_realloc(w->rgs, cap * sizeof *rgs);
        if (!rgs)
            return nomem(w);
        w->rgs = rgs;
        w->rgs_cap = cap;
    }
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
        st = write_all(w, c->chunk.data, c->chunk.len);
        if (st != SL_OK)
            return st;
        rg->uncompressed += m->uncompressed;
        rg->compressed += m->compressed;
        c->chunk.len = 0;
        c->chunk_uncompressed = c->chunk_values = c->chunk_nulls = 0;
        c->has_minmax = c->minmax_too_long = false;
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

static bool update_stats(wcol *c, const sl_pq_value *v)
{
    switch (c->type) {
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

static sl_status append_value(sl_pq_writer *w, wcol *c, const sl_pq_value *v)
{
    if (c->nullable)
        c->defs[c->page_rows] = !v->is_null;
    c->page_rows++;
    c->chunk_values++;
    if (v->is_null) {
        c->chunk_nulls++;
        return SL_OK;
    }
    bool ok = true;
    switch (c->type) {
    case SL_PQ_INT64:
    case SL_PQ_DOUBLE: {
        uint8_t le[8];
        uint64_t bits;
        if (c->type == SL_PQ_INT64)
            bits = (uint64_t)v->i64;
        else
            memcpy(&bits, &v->f64, 8);
        put_le(le, bits, 8);
        ok = sl_buf_append(&c->values, le, 8);
        w->rg_bytes += 8;
        break;
    }
    case SL_PQ_BOOL:
        if (c->bool_bits % 8 == 0)
            ok = sl_buf_append(&c->values, "\0", 1);
        if (ok && v->b)
            c->values.data[c->bool_bits / 8] |= (uint8_t)(1u << (c->bool_bits % 8));
        c->bool_bits++;
        w->rg_bytes += 1;
        break;
    default: {
        uint8_t le[4];
        put_le(le, v->len, 4);
        ok = sl_buf_append(&c->values, le, 4) && sl_buf_append(&c->values, v->ptr, v->len);
        w->rg_bytes += 4 + (int64_t)v->len;
    }
    }
    if (!ok || !update_stats(c, v))
        return nomem(w);
    return SL_OK;
}

sl_status sl_pq_writer_append(sl_pq_writer *w, const sl_pq_value *values)
{
    if (w->closed || w->broken)
        return sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s': writer is %s", w->path,
                       w->closed ? "closed" : "unusable after an earlier error");
    for (size_t i = 0; i < w->ncols; i++) { /* check the whole row first */
        const wcol *c = &w->cols[i];
        const sl_pq_value *v = &values[i];
        if (v->is_null && !c->nullable)
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
    for (size_t i = 0; i < w->ncols; i++) {
        wcol *c = &w->cols[i];
        sl_status st = append_value(w, c, &values[i]);
        if (st == SL_OK && (c->values.len >= (size_t)w->params.page_bytes || c->page_rows >= PAGE_MAX_ROWS))
            st = flush_page(w, c);
        if (st != SL_OK)
            return st;
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
    [SL_PQ_BOOL] = SL_PQT_BOOLEAN,
};

static void write_schema(sl_pq_writer *w, sl_tc_writer *t)
{
    sl_tc_write_field(t, SL_TC_LIST, 2);
    sl_tc_write_list_begin(t, SL_TC_STRUCT, w->ncols + 1);
    sl_tc_write_struct_begin(t); /* the root */
    sl_tc_write_string_field(t, 4, "schema");
    sl_tc_write_i32_field(t, 5, (int32_t)w->ncols);
    sl_tc_write_struct_end(t);
    for (size_t i = 0; i < w->ncols; i++) {
        const wcol *c = &w->cols[i];
        sl_tc_write_struct_begin(t);
        sl_tc_write_i32_field(t, 1, physical_type[c->type]);
        sl_tc_write_i32_field(t, 3, c->nullable ? SL_PQR_OPTIONAL : SL_PQR_REQUIRED);
        sl_tc_write_string_field(t, 4, c->name);
        if (c->type == SL_PQ_STRING) {
            sl_tc_write_i32_field(t, 6, SL_PQ_CONVERTED_UTF8);
            sl_tc_write_field(t, SL_TC_STRUCT, 10); /* LogicalType union */
            sl_tc_write_struct_begin(t);
            sl_tc_write_field(t, SL_TC_STRUCT, 1); /* STRING: StringType {} */
            sl_tc_write_struct_begin(t);
            sl_tc_write_struct_end(t);
            sl_tc_write_struct_end(t);
        }
        sl_tc_write_struct_end(t);
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
    sl_tc_write_list_begin(t, SL_TC_I32, 2);
    sl_tc_write_i64(t, SL_PQE_PLAIN);
    sl_tc_write_i64(t, SL_PQE_RLE);
    sl_tc_write_field(t, SL_TC_LIST, 3);
    sl_tc_write_list_begin(t, SL_TC_BINARY, 1);
    sl_tc_write_binary(t, c->name, strlen(c->name));
    sl_tc_write_i32_field(t, 4, w->params.codec);
    sl_tc_write_i64_field(t, 5, m->num_values);
    sl_tc_write_i64_field(t, 6, m->uncompressed);
    sl_tc_write_i64_field(t, 7, m->compressed);
    sl_tc_write_i64_field(t, 9, m->offset);
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
    for (size_t i = 0; w->cols && i < w->ncols; i++) {
        wcol *c = &w->cols[i];
        sl_free(c->name);
        sl_free(c->defs);
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
