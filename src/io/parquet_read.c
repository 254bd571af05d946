/* io/parquet_read.c — the Parquet reader: footer and schema on open, then per
 * row group each selected column chunk is read whole (pread), its pages
 * decompressed and decoded into one dense vector per column. Little-endian
 * hosts only (PLAIN fixed-width values are copied as they are). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/parquet_read.h"
#include "io/thrift_compact.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "parquet_read.c assumes a little-endian host"
#endif

#define MAX_PAGE_BYTES ((int64_t)1 << 30)
#define MAX_SCHEMA_DEPTH 64

typedef struct leaf {
    sl_pq_column_info info;
    int physical;
    int max_def, max_rep;
    const char *unsupported; /* why, when info.type == SL_PQ_UNSUPPORTED */
} leaf;

typedef struct chunk {
    bool has_meta;
    bool external; /* file_path set: data in another file */
    int type, codec;
    int64_t num_values, total_compressed, data_page_offset, dict_page_offset;
} chunk;

typedef struct rgroup {
    int64_t num_rows;
    size_t nchunks;
    chunk *chunks;
} rgroup;

typedef struct kv {
    char *key, *value;
} kv;

typedef struct rvec { /* owned storage behind one sl_pq_vector */
    uint8_t *valid;
    uint8_t *fixed; /* fixed-width values, width per type */
    int64_t *offsets;
    sl_buf data;
    int64_t cap_rows;
} rvec;

typedef struct dict {
    int64_t n;
    sl_buf values;    /* fixed-width values, or the bytes of byte arrays */
    int64_t *offsets; /* byte arrays: n + 1 */
} dict;

/* Where a decode is, for error messages and the output cursor. */
typedef struct ctx {
    sl_pq_reader *r;
    size_t rg;
    const leaf *lf;
    const chunk *ch;
    rvec *v;
    int64_t rows;     /* rows decoded so far in this chunk */
    int64_t num_rows; /* rows in the row group */
    dict dict;
    bool has_dict;
} ctx;

struct sl_pq_reader {
    char *path;
    int fd;
    int64_t file_size, data_end;
    leaf *leaves;
    size_t nleaves;
    rgroup *rgs;
    size_t nrgs;
    int64_t num_rows;
    kv *kvs;
    size_t nkvs;
    char *created_by;
    size_t *sel;
    size_t nsel, next_rg;
    rvec *vecs;
    sl_pq_vector *pubs;
    sl_pq_batch batch;
    sl_buf chunk_buf, page_buf;
    uint32_t *levels, *indices;
    size_t levels_cap, indices_cap;
    dict dict;
    ZSTD_DCtx *zstd;
};

/* ---- errors ------------------------------------------------------------ */

static sl_status SL_PRINTF(2, 3) corrupt(const ctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sl_fail(SL_ERR_DECODE, "Parquet file '%s', row group %zu, column '%s': %s", c->r->path, c->rg,
                   c->lf->info.name, msg);
}

static sl_status nomem(const sl_pq_reader *r)
{
    return sl_fail(SL_ERR_NOMEM, "out of memory reading Parquet file '%s'", r->path);
}

static int fixed_width(sl_pq_type t)
{
    switch (t) {
    case SL_PQ_BOOL: return 1;
    case SL_PQ_INT32:
    case SL_PQ_FLOAT: return 4;
    case SL_PQ_INT64:
    case SL_PQ_DOUBLE: return 8;
    default: return 0;
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- footer ------------------------------------------------------------ */

typedef struct schema_el {
    int type, repetition, num_children, converted;
    bool has_type, is_string;
    char *name;
} schema_el;

static char *dup_binary(sl_tc_reader *t)
{
    size_t len;
    const uint8_t *s = sl_tc_read_binary(t, &len);
    if (!s)
        return NULL;
    char *out = sl_strndup((const char *)s, len);
    if (!out)
        t->err = true;
    return out;
}

static void parse_logical_type(sl_tc_reader *t, schema_el *el)
{
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (ft == SL_TC_STRUCT && (id == 1 || id == 4 || id == 12)) /* STRING, ENUM, JSON */
            el->is_string = true;
        sl_tc_skip(t, ft);
    }
    sl_tc_read_struct_end(t);
}

static void parse_schema_el(sl_tc_reader *t, void *item)
{
    schema_el *el = item;
    int ft;
    int16_t id;
    el->repetition = SL_PQR_REQUIRED;
    el->converted = -1;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (id == 1 && ft == SL_TC_I32) {
            el->type = sl_tc_read_i32(t);
            el->has_type = true;
        } else if (id == 3 && ft == SL_TC_I32) {
            el->repetition = sl_tc_read_i32(t);
        } else if (id == 4 && ft == SL_TC_BINARY && !el->name) {
            el->name = dup_binary(t);
        } else if (id == 5 && ft == SL_TC_I32) {
            el->num_children = sl_tc_read_i32(t);
        } else if (id == 6 && ft == SL_TC_I32) {
            el->converted = sl_tc_read_i32(t);
            if (el->converted == 0 || el->converted == 4 || el->converted == 19) /* UTF8, ENUM, JSON */
                el->is_string = true;
        } else if (id == 10 && ft == SL_TC_STRUCT) {
            parse_logical_type(t, el);
        } else {
            sl_tc_skip(t, ft);
        }
    }
    sl_tc_read_struct_end(t);
    if (!el->name || el->num_children < 0)
        t->err = true;
}

static void parse_column_meta(sl_tc_reader *t, chunk *c)
{
    int ft;
    int16_t id;
    c->has_meta = true;
    c->dict_page_offset = -1;
    c->data_page_offset = -1;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (id == 1 && ft == SL_TC_I32)
            c->type = sl_tc_read_i32(t);
        else if (id == 4 && ft == SL_TC_I32)
            c->codec = sl_tc_read_i32(t);
        else if (id == 5 && ft == SL_TC_I64)
            c->num_values = sl_tc_read_i64(t);
        else if (id == 7 && ft == SL_TC_I64)
            c->total_compressed = sl_tc_read_i64(t);
        else if (id == 9 && ft == SL_TC_I64)
            c->data_page_offset = sl_tc_read_i64(t);
        else if (id == 11 && ft == SL_TC_I64)
            c->dict_page_offset = sl_tc_read_i64(t);
        else
            sl_tc_skip(t, ft);
    }
    sl_tc_read_struct_end(t);
}

/* A Thrift list of structs into a new array of `size`-byte items, each
 * filled by `parse`. On a wrong element type or no memory, sets t->err. */
static void *read_struct_list(sl_tc_reader *t, size_t size,
                              void (*parse)(sl_tc_reader *, void *), size_t *count)
{
    int et;
    size_t n = sl_tc_read_list_begin(t, &et);
    *count = 0;
    if (t->err || (n && et != SL_TC_STRUCT)) {
        t->err = true;
        return NULL;
    }
    uint8_t *items = sl_calloc(n ? n : 1, size);
    if (!items) {
        t->err = true;
        return NULL;
    }
    for (size_t i = 0; i < n && !t->err; i++)
        parse(t, items + i * size);
    *count = n;
    return items;
}

static void parse_column_chunk(sl_tc_reader *t, void *item)
{
    chunk *c = item;
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (id == 1 && ft == SL_TC_BINARY) {
            c->external = true;
            sl_tc_skip(t, ft);
        } else if (id == 3 && ft == SL_TC_STRUCT && !c->has_meta) {
            parse_column_meta(t, c);
        } else {
            sl_tc_skip(t, ft);
        }
    }
    sl_tc_read_struct_end(t);
}

static void parse_row_group(sl_tc_reader *t, void *item)
{
    rgroup *g = item;
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (id == 1 && ft == SL_TC_LIST && !g->chunks) {
            g->chunks = read_struct_list(t, sizeof *g->chunks, parse_column_chunk, &g->nchunks);
            if (t->err)
                return;
        } else if (id == 3 && ft == SL_TC_I64) {
            g->num_rows = sl_tc_read_i64(t);
        } else {
            sl_tc_skip(t, ft);
        }
    }
    sl_tc_read_struct_end(t);
}

static void parse_kv(sl_tc_reader *t, void *item)
{
    kv *e = item;
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (id == 1 && ft == SL_TC_BINARY && !e->key)
            e->key = dup_binary(t);
        else if (id == 2 && ft == SL_TC_BINARY && !e->value)
            e->value = dup_binary(t);
        else
            sl_tc_skip(t, ft);
    }
    sl_tc_read_struct_end(t);
    if (!e->key)
        t->err = true;
}

/* Walks the depth-first schema list, adding a leaf for each primitive. */
static bool walk_schema(sl_pq_reader *r, schema_el *els, size_t n, size_t *pos, const char *prefix,
                        int def, int rep, int depth)
{
    if (*pos >= n || depth > MAX_SCHEMA_DEPTH)
        return false;
    schema_el *el = &els[(*pos)++];
    if (el->repetition == SL_PQR_OPTIONAL)
        def++;
    else if (el->repetition == SL_PQR_REPEATED)
        def++, rep++;
    char *name = prefix ? sl_asprintf("%s.%s", prefix, el->name) : sl_strdup(el->name);
    if (!name)
        return false;
    if (el->num_children > 0) {
        bool ok = true;
        for (int k = 0; ok && k < el->num_children; k++)
            ok = walk_schema(r, els, n, pos, name, def, rep, depth + 1);
        sl_free(name);
        return ok;
    }
    leaf *l = &r->leaves[r->nleaves++];
    l->info.name = name;
    l->info.nullable = def > 0;
    l->physical = el->type;
    l->max_def = def;
    l->max_rep = rep;
    static const sl_pq_type map[] = {
        [SL_PQT_BOOLEAN] = SL_PQ_BOOL, [SL_PQT_INT32] = SL_PQ_INT32, [SL_PQT_INT64] = SL_PQ_INT64,
        [SL_PQT_INT96] = SL_PQ_UNSUPPORTED, [SL_PQT_FLOAT] = SL_PQ_FLOAT, [SL_PQT_DOUBLE] = SL_PQ_DOUBLE,
        [SL_PQT_BYTE_ARRAY] = SL_PQ_BINARY, [SL_PQT_FIXED] = SL_PQ_UNSUPPORTED,
    };
    if (!el->has_type || el->type < 0 || el->type > SL_PQT_FIXED)
        return false;
    l->info.type = map[el->type];
    if (l->info.type == SL_PQ_BINARY && el->is_string)
        l->info.type = SL_PQ_STRING;
    if (el->type == SL_PQT_INT96)
        l->unsupported = "INT96 columns are not supported";
    else if (el->type == SL_PQT_FIXED)
        l->unsupported = "FIXED_LEN_BYTE_ARRAY columns are not supported";
    if (rep > 0) {
        l->info.type = SL_PQ_UNSUPPORTED;
        l->unsupported = "repeated (list or map) columns are not supported";
    }
    return true;
}

static sl_status parse_footer(sl_pq_reader *r, const uint8_t *data, size_t len)
{
    sl_tc_reader t;
    sl_tc_reader_init(&t, data, len);
    schema_el *els = NULL;
    size_t nels = 0;
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(&t);
    while (sl_tc_read_field(&t, &ft, &id)) {
        if (id == 2 && ft == SL_TC_LIST && !els) {
            els = read_struct_list(&t, sizeof *els, parse_schema_el, &nels);
            if (nels == 0)
                t.err = true;
        } else if (id == 3 && ft == SL_TC_I64) {
            r->num_rows = sl_tc_read_i64(&t);
        } else if (id == 4 && ft == SL_TC_LIST && !r->rgs) {
            r->rgs = read_struct_list(&t, sizeof *r->rgs, parse_row_group, &r->nrgs);
        } else if (id == 5 && ft == SL_TC_LIST && !r->kvs) {
            r->kvs = read_struct_list(&t, sizeof *r->kvs, parse_kv, &r->nkvs);
        } else if (id == 6 && ft == SL_TC_BINARY && !r->created_by) {
            r->created_by = dup_binary(&t);
        } else {
            sl_tc_skip(&t, ft);
        }
    }
    sl_status st = SL_OK;
    if (t.err || !els) {
        st = sl_fail(SL_ERR_DECODE, "Parquet file '%s': corrupt footer (Thrift FileMetaData%s)", r->path,
                     els ? "" : " without a schema");
    } else {
        r->leaves = sl_calloc(nels, sizeof *r->leaves);
        size_t pos = 1;
        bool ok = r->leaves != NULL;
        for (int k = 0; ok && k < els[0].num_children; k++)
            ok = walk_schema(r, els, nels, &pos, NULL, 0, 0, 0);
        if (!r->leaves)
            st = nomem(r);
        else if (!ok || pos != nels)
            st = sl_fail(SL_ERR_DECODE, "Parquet file '%s': corrupt schema in the footer", r->path);
    }
    for (size_t i = 0; i < nels; i++)
        sl_free(els[i].name);
    sl_free(els);
    if (st != SL_OK)
        return st;

    int64_t total = 0;
    for (size_t g = 0; g < r->nrgs; g++) {
        const rgroup *rg = &r->rgs[g];
        if (rg->nchunks != r->nleaves)
            return sl_fail(SL_ERR_DECODE, "Parquet file '%s': row group %zu has %zu columns, the schema %zu",
                           r->path, g, rg->nchunks, r->nleaves);
        if (rg->num_rows < 0 || rg->num_rows > INT32_MAX)
            return sl_fail(SL_ERR_DECODE, "Parquet file '%s': row group %zu claims %lld rows", r->path, g,
                           (long long)rg->num_rows);
        total += rg->num_rows;
    }
    if (r->num_rows != total)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s': footer says %lld rows, its row groups hold %lld",
                       r->path, (long long)r->num_rows, (long long)total);
    return SL_OK;
}

/* ---- open -------------------------------------------------------------- */

static sl_status read_at(sl_pq_reader *r, void *dst, size_t len, int64_t offset)
{
    uint8_t *p = dst;
    while (len > 0) {
        ssize_t n = pread(r->fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sl_fail(n < 0 ? SL_ERR_IO : SL_ERR_DECODE, "cannot read Parquet file '%s' at offset %lld: %s",
                           r->path, (long long)offset, n < 0 ? strerror(errno) : "file is shorter than expected");
        p += n;
        len -= (size_t)n;
        offset += n;
    }
    return SL_OK;
}

static sl_status open_file(sl_pq_reader *r)
{
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "cannot open Parquet file '%s': %s", r->path,
                       strerror(errno));
    struct stat sb;
    if (fstat(r->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return sl_fail(SL_ERR_IO, "Parquet file '%s' is not a regular file", r->path);
    r->file_size = sb.st_size;
    uint8_t head[4], tail[8];
    if (r->file_size >= 4) {
        sl_status st = read_at(r, head, 4, 0);
        if (st != SL_OK)
            return st;
        if (memcmp(head, "PAR1", 4) != 0)
            return sl_fail(SL_ERR_DECODE, "'%s' is not a Parquet file (no 'PAR1' magic at its start)", r->path);
    }
    if (r->file_size < 12)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s' is truncated: %lld bytes, too small for a Parquet file",
                       r->path, (long long)r->file_size);
    sl_status st = read_at(r, tail, 8, r->file_size - 8);
    if (st != SL_OK)
        return st;
    if (memcmp(tail + 4, "PARE", 4) == 0)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s' is encrypted, which is not supported", r->path);
    if (memcmp(tail + 4, "PAR1", 4) != 0)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s' is truncated or corrupt: no 'PAR1' magic at its end",
                       r->path);
    uint32_t footer_len = le32(tail);
    if (footer_len == 0 || footer_len > r->file_size - 12)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s' is corrupt or truncated: footer length %u out of range "
                       "(file is %lld bytes)", r->path, footer_len, (long long)r->file_size);
    r->data_end = r->file_size - 8 - footer_len;
    uint8_t *footer = sl_malloc(footer_len);
    if (!footer)
        return nomem(r);
    st = read_at(r, footer, footer_len, r->data_end);
    if (st == SL_OK)
        st = parse_footer(r, footer, footer_len);
    sl_free(footer);
    return st;
}

sl_status sl_pq_reader_open(const char *path, sl_pq_reader **out)
{
    *out = NULL;
    sl_pq_reader *r = sl_calloc(1, sizeof *r);
    if (!r)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    r->fd = -1;
    r->path = sl_strdup(path);
    r->zstd = ZSTD_createDCtx();
    if (!r->path || !r->zstd) {
        sl_pq_reader_free(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    }
    sl_status st = open_file(r);
    if (st == SL_OK)
        st = sl_pq_reader_select(r, NULL, 0);
    if (st != SL_OK) {
        sl_pq_reader_free(r);
        return st;
    }
    *out = r;
    return SL_OK;
}

size_t sl_pq_reader_num_columns(const sl_pq_reader *r) { return r->nleaves; }
const sl_pq_column_info *sl_pq_reader_column(const sl_pq_reader *r, size_t i)
{
    return i < r->nleaves ? &r->leaves[i].info : NULL;
}
int64_t sl_pq_reader_num_rows(const sl_pq_reader *r) { return r->num_rows; }
size_t sl_pq_reader_num_row_groups(const sl_pq_reader *r) { return r->nrgs; }
const char *sl_pq_reader_created_by(const sl_pq_reader *r) { return r->created_by ? r->created_by : ""; }

const char *sl_pq_reader_metadata(const sl_pq_reader *r, const char *key)
{
    for (size_t i = 0; i < r->nkvs; i++)
        if (strcmp(r->kvs[i].key, key) == 0)
            return r->kvs[i].value ? r->kvs[i].value : "";
    return NULL;
}

sl_status sl_pq_reader_select(sl_pq_reader *r, const char *const *names, size_t count)
{
    size_t n = names ? count : r->nleaves;
    size_t *sel = sl_calloc(n ? n : 1, sizeof *sel);
    rvec *vecs = sl_calloc(n ? n : 1, sizeof *vecs);
    sl_pq_vector *pubs = sl_calloc(n ? n : 1, sizeof *pubs);
    if (!sel || !vecs || !pubs) {
        sl_free(sel);
        sl_free(vecs);
        sl_free(pubs);
        return nomem(r);
    }
    sl_status st = SL_OK;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        size_t k = i;
        if (names) {
            for (k = 0; k < r->nleaves; k++)
                if (strcmp(r->leaves[k].info.name, names[i]) == 0)
                    break;
            if (k == r->nleaves)
                st = sl_fail(SL_ERR_NOT_FOUND, "Parquet file '%s' has no column '%s'", r->path, names[i]);
        }
        if (st == SL_OK && r->leaves[k].info.type == SL_PQ_UNSUPPORTED)
            st = sl_fail(SL_ERR_DECODE, "Parquet file '%s', column '%s': %s", r->path, r->leaves[k].info.name,
                         r->leaves[k].unsupported);
        sel[i] = k;
    }
    if (st != SL_OK) {
        sl_free(sel);
        sl_free(vecs);
        sl_free(pubs);
        return st;
    }
    for (size_t i = 0; i < r->nsel; i++) {
        sl_free(r->vecs[i].valid);
        sl_free(r->vecs[i].fixed);
        sl_free(r->vecs[i].offsets);
        sl_buf_free(&r->vecs[i].data);
    }
    sl_free(r->sel);
    sl_free(r->vecs);
    sl_free(r->pubs);
    r->sel = sel;
    r->vecs = vecs;
    r->pubs = pubs;
    r->nsel = n;
    r->next_rg = 0;
    return SL_OK;
}

/* ---- values ------------------------------------------------------------ */

/* Where decoded value k of a page lands: the rows marked valid, in order. */
typedef struct cursor {
    const uint8_t *valid;
    int64_t row, end;
} cursor;

static int64_t next_row(cursor *cu)
{
    while (cu->row < cu->end && !cu->valid[cu->row])
        cu->row++;
    return cu->row++;
}

static bool put_bytes(ctx *c, int64_t row, const uint8_t *s, size_t len)
{
    /* Offsets are filled for every row afterwards; here only the data. */
    c->v->offsets[row + 1] = (int64_t)len;
    return sl_buf_append(&c->v->data, s, len);
}

static sl_status decode_plain(ctx *c, const uint8_t *p, size_t len, int64_t nn, int64_t first_row)
{
    cursor cu = {c->v->valid, first_row, c->rows};
    sl_pq_type t = c->lf->info.type;
    if (t == SL_PQ_STRING || t == SL_PQ_BINARY) {
        const uint8_t *end = p + len;
        for (int64_t k = 0; k < nn; k++) {
            if (end - p < 4)
                return corrupt(c, "PLAIN byte array values end early");
            uint32_t n = le32(p);
            p += 4;
            if ((size_t)(end - p) < n)
                return corrupt(c, "PLAIN byte array value runs past its page");
            if (!put_bytes(c, next_row(&cu), p, n))
                return nomem(c->r);
            p += n;
        }
        return SL_OK;
    }
    if (t == SL_PQ_BOOL) {
        if (len * 8 < (size_t)nn)
            return corrupt(c, "PLAIN boolean values end early");
        for (int64_t k = 0; k < nn; k++)
            c->v->fixed[next_row(&cu)] = p[k / 8] >> (k % 8) & 1;
        return SL_OK;
    }
    int w = fixed_width(t);
    if (len < (size_t)nn * (size_t)w)
        return corrupt(c, "PLAIN values end early (%zu bytes for %lld values)", len, (long long)nn);
    if (first_row + nn == c->rows) { /* no nulls in this page: one copy */
        memcpy(c->v->fixed + first_row * w, p, (size_t)nn * (size_t)w);
        return SL_OK;
    }
    for (int64_t k = 0; k < nn; k++)
        memcpy(c->v->fixed + next_row(&cu) * w, p + k * w, (size_t)w);
    return SL_OK;
}

static sl_status decode_dictionary_page(ctx *c, const uint8_t *p, size_t len, int64_t n)
{
    dict *d = &c->dict;
    d->values.len = 0;
    d->n = 0;
    sl_pq_type t = c->lf->info.type;
    if (t == SL_PQ_STRING || t == SL_PQ_BINARY) {
        if ((size_t)n > len / 4)
            return corrupt(c, "dictionary page ends early");
        sl_free(d->offsets);
        d->offsets = sl_malloc(((size_t)n + 1) * sizeof *d->offsets);
        if (!d->offsets || !sl_buf_reserve(&d->values, len))
            return nomem(c->r);
        const uint8_t *end = p + len;
        d->offsets[0] = 0;
        for (int64_t k = 0; k < n; k++) {
            if (end - p < 4 || (size_t)(end - p - 4) < le32(p))
                return corrupt(c, "dictionary page ends early");
            uint32_t vl = le32(p);
            sl_buf_append(&d->values, p + 4, vl); /* reserved above */
            d->offsets[k + 1] = (int64_t)d->values.len;
            p += 4 + vl;
        }
    } else if (t == SL_PQ_BOOL) {
        return corrupt(c, "dictionary page for a boolean column");
    } else {
        size_t w = (size_t)fixed_width(t);
        if (len < (size_t)n * w)
            return corrupt(c, "dictionary page ends early");
        if (!sl_buf_append(&d->values, p, (size_t)n * w))
            return nomem(c->r);
    }
    d->n = n;
    c->has_dict = true;
    return SL_OK;
}

static bool grow_u32(uint32_t **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return true;
    uint32_t *b = sl_realloc(*buf, (n ? n : 1) * sizeof **buf);
    if (!b)
        return false;
    *buf = b;
    *cap = n;
    return true;
}

static sl_status decode_dict_indices(ctx *c, const uint8_t *p, size_t len, int64_t nn, int64_t first_row)
{
    if (!c->has_dict)
        return corrupt(c, "dictionary-encoded page without a dictionary page");
    if (nn == 0)
        return SL_OK;
    if (len < 1)
        return corrupt(c, "dictionary indices missing");
    sl_pq_reader *r = c->r;
    if (!grow_u32(&r->indices, &r->indices_cap, (size_t)nn))
        return nomem(r);
    if (!sl_rle_decode(p + 1, len - 1, p[0], r->indices, (size_t)nn))
        return corrupt(c, "corrupt dictionary indices (RLE/bit-packed, bit width %d)", p[0]);
    cursor cu = {c->v->valid, first_row, c->rows};
    const dict *d = &c->dict;
    sl_pq_type t = c->lf->info.type;
    int w = fixed_width(t);
    for (int64_t k = 0; k < nn; k++) {
        uint32_t ix = r->indices[k];
        if (ix >= d->n)
            return corrupt(c, "dictionary index %u out of range (dictionary has %lld entries)", ix, (long long)d->n);
        int64_t row = next_row(&cu);
        if (w) {
            memcpy(c->v->fixed + row * w, d->values.data + (size_t)ix * (size_t)w, (size_t)w);
        } else if (!put_bytes(c, row, d->values.data + d->offsets[ix], (size_t)(d->offsets[ix + 1] - d->offsets[ix]))) {
            return nomem(r);
        }
    }
    return SL_OK;
}

static sl_status decode_values(ctx *c, int encoding, const uint8_t *p, size_t len, int64_t nn, int64_t first_row)
{
    switch (encoding) {
    case SL_PQE_PLAIN:
        return decode_plain(c, p, len, nn, first_row);
    case SL_PQE_PLAIN_DICTIONARY:
    case SL_PQE_RLE_DICTIONARY:
        return decode_dict_indices(c, p, len, nn, first_row);
    case SL_PQE_RLE:
        if (c->lf->info.type == SL_PQ_BOOL) { /* 4-byte length, then the hybrid at width 1 */
            sl_pq_reader *r = c->r;
            if (len < 4 || le32(p) > len - 4)
                return corrupt(c, "RLE boolean values end early");
            if (!grow_u32(&r->indices, &r->indices_cap, (size_t)nn))
                return nomem(r);
            if (!sl_rle_decode(p + 4, le32(p), 1, r->indices, (size_t)nn))
                return corrupt(c, "corrupt RLE boolean values");
            cursor cu = {c->v->valid, first_row, c->rows};
            for (int64_t k = 0; k < nn; k++)
                c->v->fixed[next_row(&cu)] = (uint8_t)r->indices[k];
            return SL_OK;
        }
        /* fall through */
    default:
        return corrupt(c, "unsupported encoding %s (%d)", sl_pq_encoding_name(encoding), encoding);
    }
}

/* Definition levels of n rows -> valid flags; returns the non-null count. */
static sl_status apply_levels(ctx *c, const uint8_t *p, size_t len, int64_t n, int64_t *nn)
{
    uint8_t *valid = c->v->valid + c->rows;
    if (c->lf->max_def == 0) {
        memset(valid, 1, (size_t)n);
        *nn = n;
        return SL_OK;
    }
    sl_pq_reader *r = c->r;
    if (!grow_u32(&r->levels, &r->levels_cap, (size_t)n))
        return nomem(r);
    if (!sl_rle_decode(p, len, sl_pq_bit_width((uint32_t)c->lf->max_def), r->levels, (size_t)n))
        return corrupt(c, "corrupt definition levels");
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        valid[i] = r->levels[i] == (uint32_t)c->lf->max_def;
        count += valid[i];
    }
    *nn = count;
    return SL_OK;
}

/* ---- pages ------------------------------------------------------------- */

typedef struct page_header {
    int type;
    int32_t usize, csize;
    int32_t num_values, encoding, def_encoding; /* v1 data page / dictionary page */
    int32_t v2_nulls, v2_def_len, v2_rep_len;
    bool v2_compressed, has_data, has_dict, has_v2;
} page_header;

static void parse_data_header(sl_tc_reader *t, page_header *h, bool v2)
{
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (ft == SL_TC_I32 && id == 1)
            h->num_values = sl_tc_read_i32(t);
        else if (ft == SL_TC_I32 && id == 2 && !v2)
            h->encoding = sl_tc_read_i32(t);
        else if (ft == SL_TC_I32 && id == 3 && !v2)
            h->def_encoding = sl_tc_read_i32(t);
        else if (ft == SL_TC_I32 && id == 2 && v2)
            h->v2_nulls = sl_tc_read_i32(t);
        else if (ft == SL_TC_I32 && id == 4 && v2)
            h->encoding = sl_tc_read_i32(t);
        else if (ft == SL_TC_I32 && id == 5 && v2)
            h->v2_def_len = sl_tc_read_i32(t);
        else if (ft == SL_TC_I32 && id == 6 && v2)
            h->v2_rep_len = sl_tc_read_i32(t);
        else if ((ft == SL_TC_TRUE || ft == SL_TC_FALSE) && id == 7 && v2)
            h->v2_compressed = ft == SL_TC_TRUE;
        else
            sl_tc_skip(t, ft);
    }
    sl_tc_read_struct_end(t);
}

static bool parse_page_header(const uint8_t *p, size_t len, page_header *h, size_t *used)
{
    memset(h, 0, sizeof *h);
    h->type = -1;
    h->usize = h->csize = -1;
    h->v2_compressed = true;
    sl_tc_reader t;
    sl_tc_reader_init(&t, p, len);
    int ft;
    int16_t id;
    sl_tc_read_struct_begin(&t);
    while (sl_tc_read_field(&t, &ft, &id)) {
        if (ft == SL_TC_I32 && id == 1) {
            h->type = sl_tc_read_i32(&t);
        } else if (ft == SL_TC_I32 && id == 2) {
            h->usize = sl_tc_read_i32(&t);
        } else if (ft == SL_TC_I32 && id == 3) {
            h->csize = sl_tc_read_i32(&t);
        } else if (ft == SL_TC_STRUCT && (id == 5 || id == 7 || id == 8)) {
            parse_data_header(&t, h, id == 8); /* dictionary: num_values 1, encoding 2 */
            h->has_data |= id == 5;
            h->has_dict |= id == 7;
            h->has_v2 |= id == 8;
        } else {
            sl_tc_skip(&t, ft);
        }
    }
    sl_tc_read_struct_end(&t);
    *used = sl_tc_reader_pos(&t);
    return !t.err && h->type >= 0 && h->usize >= 0 && h->csize >= 0;
}

/* Decompresses src into the reader's page buffer (or returns src as is). */
static sl_status page_bytes(ctx *c, const uint8_t *src, size_t n, size_t usize, bool compressed,
                            const uint8_t **out)
{
    if (!compressed || c->ch->codec == SL_PQ_UNCOMPRESSED) {
        if (n != usize)
            return corrupt(c, "uncompressed page holds %zu bytes, its header says %zu", n, usize);
        *out = src;
        return SL_OK;
    }
    sl_pq_reader *r = c->r;
    r->page_buf.len = 0;
    if (!sl_buf_reserve(&r->page_buf, usize ? usize : 1))
        return nomem(r);
    const char *err = sl_pq_decompress(c->ch->codec, src, n, r->page_buf.data, usize, r->zstd);
    if (err)
        return corrupt(c, "%s", err);
    *out = r->page_buf.data;
    return SL_OK;
}

static sl_status check_count(ctx *c, int64_t n)
{
    if (n < 0 || n > c->num_rows - c->rows)
        return corrupt(c, "page holds %lld values, more than the %lld left in the column chunk", (long long)n,
                       (long long)(c->num_rows - c->rows));
    return SL_OK;
}

static sl_status data_page_v1(ctx *c, const page_header *h, const uint8_t *body)
{
    int64_t n = h->num_values, nn;
    sl_status st = check_count(c, n);
    if (st != SL_OK)
        return st;
    const uint8_t *p;
    st = page_bytes(c, body, (size_t)h->csize, (size_t)h->usize, true, &p);
    if (st != SL_OK)
        return st;
    size_t len = (size_t)h->usize;
    if (c->lf->max_def > 0) {
        if (h->def_encoding != SL_PQE_RLE)
            return corrupt(c, "unsupported definition level encoding %s", sl_pq_encoding_name(h->def_encoding));
        if (len < 4 || le32(p) > len - 4)
            return corrupt(c, "definition levels run past their page");
        size_t dl = le32(p);
        st = apply_levels(c, p + 4, dl, n, &nn);
        p += 4 + dl;
        len -= 4 + dl;
    } else {
        st = apply_levels(c, NULL, 0, n, &nn);
    }
    if (st != SL_OK)
        return st;
    int64_t first = c->rows;
    c->rows += n;
    return decode_values(c, h->encoding, p, len, nn, first);
}

static sl_status data_page_v2(ctx *c, const page_header *h, const uint8_t *body)
{
    int64_t n = h->num_values, nn;
    sl_status st = check_count(c, n);
    if (st != SL_OK)
        return st;
    int64_t levels = (int64_t)h->v2_def_len + h->v2_rep_len;
    if (h->v2_def_len < 0 || h->v2_rep_len < 0 || levels > h->csize || levels > h->usize)
        return corrupt(c, "level lengths out of range in a v2 data page");
    st = apply_levels(c, body + h->v2_rep_len, (size_t)h->v2_def_len, n, &nn);
    if (st != SL_OK)
        return st;
    const uint8_t *p;
    st = page_bytes(c, body + levels, (size_t)(h->csize - levels), (size_t)(h->usize - levels),
                    h->v2_compressed, &p);
    if (st != SL_OK)
        return st;
    int64_t first = c->rows;
    c->rows += n;
    return decode_values(c, h->encoding, p, (size_t)(h->usize - levels), nn, first);
}

/* ---- column chunks and row groups -------------------------------------- */

static bool size_vector(rvec *v, sl_pq_type t, int64_t rows)
{
    v->data.len = 0;
    if (rows > v->cap_rows) {
        size_t n = (size_t)rows;
        sl_free(v->valid);
        sl_free(v->fixed);
        sl_free(v->offsets);
        v->valid = sl_malloc(n);
        v->fixed = fixed_width(t) ? sl_malloc(n * (size_t)fixed_width(t)) : NULL;
        v->offsets = fixed_width(t) ? NULL : sl_malloc((n + 1) * sizeof *v->offsets);
        v->cap_rows = rows;
        if (!v->valid || (fixed_width(t) ? !v->fixed : !v->offsets)) {
            v->cap_rows = 0;
            return false;
        }
    }
    if (v->fixed)
        memset(v->fixed, 0, (size_t)rows * (size_t)fixed_width(t));
    if (v->offsets)
        memset(v->offsets, 0, ((size_t)rows + 1) * sizeof *v->offsets);
    return true;
}

static sl_status read_chunk(ctx *c)
{
    sl_pq_reader *r = c->r;
    const chunk *ch = c->ch;
    if (!ch->has_meta)
        return corrupt(c, "column chunk has no metadata");
    if (ch->external)
        return corrupt(c, "column chunk stored in another file is not supported");
    if (ch->type != c->lf->physical)
        return corrupt(c, "column chunk type %d differs from the schema's %d", ch->type, c->lf->physical);
    if (ch->codec != SL_PQ_UNCOMPRESSED && ch->codec != SL_PQ_SNAPPY && ch->codec != SL_PQ_GZIP &&
        ch->codec != SL_PQ_ZSTD)
        return corrupt(c, "unsupported compression codec %s (%d)", sl_pq_codec_name(ch->codec), ch->codec);
    if (ch->num_values != c->num_rows)
        return corrupt(c, "column chunk holds %lld values for %lld rows", (long long)ch->num_values,
                       (long long)c->num_rows);
    int64_t start = ch->data_page_offset;
    if (ch->dict_page_offset > 0 && ch->dict_page_offset < start)
        start = ch->dict_page_offset;
    if (start < 4 || ch->total_compressed <= 0 || ch->total_compressed > r->data_end - start)
        return corrupt(c, "column chunk (offset %lld, %lld bytes) lies outside the file's %lld data bytes "
                       "(truncated or corrupt file)", (long long)start, (long long)ch->total_compressed,
                       (long long)r->data_end);
    if (!size_vector(c->v, c->lf->info.type, c->num_rows))
        return nomem(r);
    r->chunk_buf.len = 0;
    if (!sl_buf_reserve(&r->chunk_buf, (size_t)ch->total_compressed))
        return nomem(r);
    sl_status st = read_at(r, r->chunk_buf.data, (size_t)ch->total_compressed, start);
    if (st != SL_OK)
        return st;
    const uint8_t *data = r->chunk_buf.data;
    size_t len = (size_t)ch->total_compressed, pos = 0;
    while (c->rows < c->num_rows) {
        if (pos >= len)
            return corrupt(c, "column chunk ends after %lld of its %lld values", (long long)c->rows,
                           (long long)c->num_rows);
        page_header h;
        size_t used;
        if (!parse_page_header(data + pos, len - pos, &h, &used))
            return corrupt(c, "corrupt page header at offset %lld", (long long)(start + (int64_t)pos));
        if ((size_t)h.csize > len - pos - used)
            return corrupt(c, "page at offset %lld runs past the end of its column chunk",
                           (long long)(start + (int64_t)pos));
        if (h.usize > MAX_PAGE_BYTES)
            return corrupt(c, "page at offset %lld claims %d bytes", (long long)(start + (int64_t)pos), h.usize);
        const uint8_t *body = data + pos + used;
        pos += used + (size_t)h.csize;
        if (h.type == SL_PQP_DICTIONARY) {
            if (!h.has_dict)
                return corrupt(c, "dictionary page without its header");
            if (h.encoding != SL_PQE_PLAIN && h.encoding != SL_PQE_PLAIN_DICTIONARY)
                return corrupt(c, "unsupported dictionary encoding %s", sl_pq_encoding_name(h.encoding));
            if (h.num_values < 0)
                return corrupt(c, "dictionary page with %d values", h.num_values);
            const uint8_t *p;
            st = page_bytes(c, body, (size_t)h.csize, (size_t)h.usize, true, &p);
            if (st == SL_OK)
                st = decode_dictionary_page(c, p, (size_t)h.usize, h.num_values);
        } else if (h.type == SL_PQP_DATA) {
            st = h.has_data ? data_page_v1(c, &h, body) : corrupt(c, "data page without its header");
        } else if (h.type == SL_PQP_DATA_V2) {
            st = h.has_v2 ? data_page_v2(c, &h, body) : corrupt(c, "v2 data page without its header");
        } /* index pages and unknown page types are skipped */
        if (st != SL_OK)
            return st;
    }
    /* Byte arrays: turn per-row lengths into offsets. */
    if (c->v->offsets)
        for (int64_t i = 0; i < c->num_rows; i++)
            c->v->offsets[i + 1] += c->v->offsets[i];
    return SL_OK;
}

sl_status sl_pq_reader_next(sl_pq_reader *r, const sl_pq_batch **out)
{
    *out = NULL;
    if (r->next_rg >= r->nrgs)
        return SL_OK;
    size_t g = r->next_rg;
    const rgroup *rg = &r->rgs[g];
    for (size_t i = 0; i < r->nsel; i++) {
        ctx c = {.r = r, .rg = g, .lf = &r->leaves[r->sel[i]], .ch = &rg->chunks[r->sel[i]],
                 .v = &r->vecs[i], .num_rows = rg->num_rows, .dict = r->dict};
        sl_status st = read_chunk(&c);
        r->dict = c.dict; /* keep the dictionary buffers for reuse */
        if (st != SL_OK)
            return st;
        sl_pq_vector *pv = &r->pubs[i];
        memset(pv, 0, sizeof *pv);
        pv->info = &c.lf->info;
        pv->valid = c.v->valid;
        switch (c.lf->info.type) {
        case SL_PQ_BOOL: pv->b = c.v->fixed; break;
        case SL_PQ_INT32: pv->i32 = (const int32_t *)(void *)c.v->fixed; break;
        case SL_PQ_INT64: pv->i64 = (const int64_t *)(void *)c.v->fixed; break;
        case SL_PQ_FLOAT: pv->f32 = (const float *)(void *)c.v->fixed; break;
        case SL_PQ_DOUBLE: pv->f64 = (const double *)(void *)c.v->fixed; break;
        default:
            pv->offsets = c.v->offsets;
            pv->data = c.v->data.data ? c.v->data.data : (const uint8_t *)"";
        }
    }
    r->next_rg++;
    r->batch.row_group = g;
    r->batch.num_rows = rg->num_rows;
    r->batch.num_columns = r->nsel;
    r->batch.columns = r->pubs;
    *out = &r->batch;
    return SL_OK;
}

void sl_pq_reader_free(sl_pq_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->nleaves; i++)
        sl_free((char *)r->leaves[i].info.name);
    sl_free(r->leaves);
    for (size_t g = 0; r->rgs && g < r->nrgs; g++)
        sl_free(r->rgs[g].chunks);
    sl_free(r->rgs);
    for (size_t i = 0; r->kvs && i < r->nkvs; i++) {
        sl_free(r->kvs[i].key);
        sl_free(r->kvs[i].value);
    }
    sl_free(r->kvs);
    for (size_t i = 0; i < r->nsel; i++) {
        sl_free(r->vecs[i].valid);
        sl_free(r->vecs[i].fixed);
        sl_free(r->vecs[i].offsets);
        sl_buf_free(&r->vecs[i].data);
    }
    sl_free(r->sel);
    sl_free(r->vecs);
    sl_free(r->pubs);
    sl_buf_free(&r->chunk_buf);
    sl_buf_free(&r->page_buf);
    sl_buf_free(&r->dict.values);
    sl_free(r->dict.offsets);
    sl_free(r->levels);
    sl_free(r->indices);
    ZSTD_freeDCtx(r->zstd);
    sl_free(r->created_by);
    sl_free(r->path);
    sl_free(r);
}
