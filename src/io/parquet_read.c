/* io/parquet_read.c — the Parquet reader: footer and schema on open, then
 * each selected column chunk is read page by page (through io/ranged.h: a
 * pread of one page at a time, or for an object in S3 ranged GETs with
 * read-ahead, below), and its pages decoded a slice of rows at a time into the column's
 * pending rows, from which batches are handed out. Nothing is sized from a
 * count the file gives: page bytes are read only when the chunk holds them,
 * decompressed pages and decoded rows grow with what is really there, and
 * every buffer counts against the reader's memory limit. Little-endian hosts
 * only (PLAIN fixed-width values are copied as they are). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/error.h"
#include "io/parquet_delta.h"
#include "io/parquet_read.h"
#include "io/ranged.h"
#include "io/thrift_compact.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "parquet_read.c assumes a little-endian host"
#endif

#define MAX_SCHEMA_DEPTH 64
/* Rows decoded in one step: levels and indices for them sit on the stack. */
#define STEP_ROWS 1024
/* A converting leaf's stored values of one step at most (at least one value). */
#define SCRATCH_BYTES (1u << 20)
/* A page header is looked for in this much of the chunk first. */
#define HEADER_WINDOW (64u << 10)
/* An object in S3 is read in GETs of this much of a column chunk (or the
 * selected chunks of a row group at once, when they lie within this span),
 * so a row group costs a few requests, not one per page. */
#define REMOTE_READ_AHEAD (8u << 20)

/* How a leaf's stored values become the values a batch holds. */
typedef enum conversion {
    CONV_NONE,
    CONV_INT96,   /* Impala's timestamp (nanoseconds of the day, Julian day) -> int64 ns since 1970 */
    CONV_DECIMAL, /* an unscaled INT32, INT64, or big-endian (FIXED_LEN_)BYTE_ARRAY -> its exact text */
    CONV_FLOAT16, /* IEEE half in 2 bytes -> float */
    CONV_UUID,    /* 16 bytes -> the 36-character text form */
    CONV_BYTES,   /* FIXED_LEN_BYTE_ARRAY -> binary */
    CONV_UINT32,  /* an unsigned INT32 -> int64 (UINT_32 past 2^31 is negative as int32) */
} conversion;

typedef struct leaf {
    sl_pq_column_info info;
    int physical;
    int phys;                /* bytes a stored value takes (fixed-width types); 0: byte arrays */
    conversion conv;
    int scale;               /* CONV_DECIMAL: the unscaled value is over 10^scale */
    int max_def, max_rep;    /* max_rep: the lists it is in (info.depth) */
    /* Per list d < max_rep, outermost first: the definition level of its
     * repeated node (an element is there at rep_def, the list is empty at
     * rep_def - 1, null below), and that node's place in the schema. */
    int rep_def[SL_PQ_MAX_DEPTH];
    size_t list_node[SL_PQ_MAX_DEPTH];
} leaf;

typedef struct chunk {
    bool has_meta;
    bool external; /* file_path set: data in another file */
    int type, codec;
    bool has_bad_encoding; /* its encodings list names one no decoder here reads */
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

typedef struct dict {
    int64_t n;
    sl_buf values;    /* fixed-width values, or the bytes of byte arrays */
    int64_t *offsets; /* byte arrays: n + 1 */
    size_t offsets_cap;
    size_t max_len;   /* the longest byte-array entry */
} dict;

/* Rows decoded and not handed out yet: values [0, n), which for a list
 * column are elements. A list column's lists at each depth d < max_rep:
 * [0, nl[d]), depth 0's being the rows; list j of depth d holds the entries
 * [lofs[d][j], lofs[d][j + 1]) of depth d + 1 (the lists inside its
 * elements), or of the elements at the last depth; lofs[d][nl[d]] is the
 * count below. The last row stays open (more may come) until the next row
 * starts or the chunk ends. */
typedef struct pending {
    uint8_t *valid;
    uint8_t *defs;    /* each value's definition level: a leaf below a group */
    uint8_t *fixed;   /* n * width bytes */
    int64_t *offsets; /* byte arrays: n + 1, offsets[0] == 0 */
    sl_buf data;
    size_t n, cap;
    int64_t *lofs[SL_PQ_MAX_DEPTH];  /* nl[d] + 1 */
    uint8_t *lvalid[SL_PQ_MAX_DEPTH]; /* nl[d], 0 for a null list */
    uint8_t *ldefs[SL_PQ_MAX_DEPTH];  /* nl[d]: the definition level that began each (a leaf
                                         below a group; else NULL) */
    size_t nl[SL_PQ_MAX_DEPTH], lcap[SL_PQ_MAX_DEPTH];
} pending;

/* One selected column: where its chunk is, its current page, its rows. */
typedef struct column {
    sl_pq_reader *r;
    const leaf *lf;
    const chunk *ch;
    int width;              /* fixed-width bytes per value in a batch; 0: byte arrays */
    int phys;               /* the same in the file (another where the leaf converts) */
    sl_buf scratch;         /* a converting leaf's stored values of one step */
    int64_t next, end;      /* file offsets: the next page header, the chunk's end */
    int64_t values;         /* values of the data pages met so far in this chunk */
    int64_t total;          /* values the chunk holds: its rows, or a list's levels */
    int64_t rows_seen;      /* lists: rows started in this chunk */
    bool chunk_done;        /* lists: every level read, so the last row is complete */
    sl_buf raw, plain;      /* the current page as stored, and decompressed */
    sl_buf ahead;           /* remote: the chunk's bytes from ahead_off, read ahead */
    int64_t ahead_off;
    dict dict;
    bool has_dict;
    /* The current data page. */
    int64_t page_left;      /* its rows not decoded yet */
    int encoding;
    sl_rle_stream levels;   /* definition levels */
    sl_rle_stream reps;     /* repetition levels (lists) */
    sl_rle_stream ix;       /* dictionary indices, or RLE booleans */
    const uint8_t *vp, *vend; /* PLAIN values; the bytes of DELTA_*_BYTE_ARRAY; BYTE_STREAM_SPLIT's */
    uint64_t bit;           /* PLAIN booleans: the next bit at vp */
    sl_delta_stream delta;  /* DELTA_BINARY_PACKED values, or the (suffix) lengths of byte arrays */
    sl_delta_stream prefixes; /* DELTA_BYTE_ARRAY: how much of the value before each one begins */
    sl_buf prev;            /* DELTA_BYTE_ARRAY: the value before (kept across the chunk's pages) */
    size_t split_count, split_next; /* BYTE_STREAM_SPLIT: the page's values, the next one */
    /* null_undecodable: the current data page's values cannot be decoded
     * (they read as null), or the chunk's dictionary page could not be
     * (its pages cannot); the pending rows such pages reached, n_lost
     * ascending [lo, hi) pairs in lost; the first such page's cause. */
    bool lost_page, dict_lost;
    int64_t *lost;
    size_t n_lost, lost_cap;
    char lost_why[512];
    pending rows;
    size_t held;            /* bytes of buffers counted against the memory limit */
} column;

struct sl_pq_reader {
    char *path;
    sl_ranged *io;
    bool remote;         /* io is an object in S3: reads go through read-ahead */
    sl_buf span;         /* remote: the row group's selected chunks, from span_off */
    int64_t span_off;
    int64_t file_size, data_end;
    sl_pq_reader_params p;
    leaf *leaves;
    size_t nleaves;
    rgroup *rgs;
    size_t nrgs;
    int64_t num_rows;
    size_t names_left;  /* bytes the leaves' names may still take */
    bool names_over, names_nomem;
    kv *kvs;
    size_t nkvs;
    char *created_by;
    size_t *sel;
    size_t nsel;
    column *cols;        /* one per selected column */
    sl_pq_vector *pubs;
    sl_pq_batch batch;
    size_t rg;           /* the row group being read (nrgs: done) */
    bool rg_open;        /* its column states are set up */
    int64_t rg_done;     /* its rows handed out */
    size_t taken;        /* rows of the last batch, dropped at the next call */
    size_t held;         /* all columns' held bytes */
    ZSTD_DCtx *zstd;
};

/* ---- errors ------------------------------------------------------------ */

static sl_status SL_PRINTF(2, 3) corrupt(const column *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sl_fail(SL_ERR_DECODE, "Parquet file '%s', row group %zu, column '%s': %s", c->r->path, c->r->rg,
                   c->lf->info.name, msg);
}

/* A page whose encoding the reader has no decoder for: with
 * null_undecodable, its values read as null (lost_page; the chunk's first
 * such cause kept), else it is corrupt. */
static sl_status SL_PRINTF(2, 3) undecodable(column *c, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!c->r->p.null_undecodable)
        return corrupt(c, "%s", msg);
    c->lost_page = true;
    if (!c->lost_why[0])
        snprintf(c->lost_why, sizeof c->lost_why, "Parquet file '%s', row group %zu, column '%s': %s", c->r->path,
                 c->r->rg, c->lf->info.name, msg);
    return SL_OK;
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
    int type_length, scale, precision;
    bool has_type, is_string, is_map, is_decimal, is_float16, is_uuid, is_unsigned;
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
        else if (ft == SL_TC_STRUCT && id == 2) /* MAP */
            el->is_map = true;
        else if (ft == SL_TC_STRUCT && id == 14) /* UUID */
            el->is_uuid = true;
        else if (ft == SL_TC_STRUCT && id == 15) /* FLOAT16 */
            el->is_float16 = true;
        if (ft == SL_TC_STRUCT && id == 10) { /* INTEGER {1: bitWidth, 2: isSigned} */
            int ift;
            int16_t iid;
            sl_tc_read_struct_begin(t);
            while (sl_tc_read_field(t, &ift, &iid)) {
                if (iid == 2 && (ift == SL_TC_TRUE || ift == SL_TC_FALSE))
                    el->is_unsigned = ift == SL_TC_FALSE;
                else
                    sl_tc_skip(t, ift);
            }
            sl_tc_read_struct_end(t);
        } else if (ft == SL_TC_STRUCT && id == 5) { /* DECIMAL {1: scale, 2: precision} */
            el->is_decimal = true;
            int dft;
            int16_t did;
            sl_tc_read_struct_begin(t);
            while (sl_tc_read_field(t, &dft, &did)) {
                if (did == 1 && dft == SL_TC_I32)
                    el->scale = sl_tc_read_i32(t);
                else if (did == 2 && dft == SL_TC_I32)
                    el->precision = sl_tc_read_i32(t);
                else
                    sl_tc_skip(t, dft);
            }
            sl_tc_read_struct_end(t);
        } else {
            sl_tc_skip(t, ft);
        }
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
        } else if (id == 2 && ft == SL_TC_I32) {
            el->type_length = sl_tc_read_i32(t);
        } else if (id == 7 && ft == SL_TC_I32) {
            el->scale = sl_tc_read_i32(t);
        } else if (id == 8 && ft == SL_TC_I32) {
            el->precision = sl_tc_read_i32(t);
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
            else if (el->converted == 1 || el->converted == 2) /* MAP, MAP_KEY_VALUE */
                el->is_map = true;
            else if (el->converted == 5) /* DECIMAL */
                el->is_decimal = true;
            else if (el->converted >= 11 && el->converted <= 14) /* UINT_8 .. UINT_64 */
                el->is_unsigned = true;
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

/* Whether a page in this encoding may be read: values or levels, as
 * start_values and v1_levels take them. BIT_PACKED is one: v1 levels in
 * it are read, and parquet-mr lists it for the levels it does not write
 * (a required column's). */
static bool known_encoding(int32_t e)
{
    return e == SL_PQE_PLAIN || (e >= SL_PQE_PLAIN_DICTIONARY && e <= SL_PQE_BYTE_STREAM_SPLIT);
}

/* ColumnMetaData's encodings: whether one is an encoding no decoder here
 * reads (a newer writer's), so the column can be left out up front rather
 * than fail its file's rows when its pages are reached. */
static void read_encodings(sl_tc_reader *t, chunk *c)
{
    int et;
    size_t n = sl_tc_read_list_begin(t, &et);
    for (size_t k = 0; k < n && !t->err; k++) {
        if (et != SL_TC_I32) {
            sl_tc_skip(t, et);
            continue;
        }
        c->has_bad_encoding |= !known_encoding(sl_tc_read_i32(t));
    }
}

static void parse_column_meta(sl_tc_reader *t, chunk *c)
{
    int ft;
    int16_t id;
    unsigned seen = 0;
    c->has_meta = true;
    c->dict_page_offset = -1;
    c->data_page_offset = -1;
    sl_tc_read_struct_begin(t);
    while (sl_tc_read_field(t, &ft, &id)) {
        if (id == 1 && ft == SL_TC_I32)
            c->type = sl_tc_read_i32(t);
        else if (id == 2 && ft == SL_TC_LIST)
            read_encodings(t, c);
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
        if (id > 0 && id < 16)
            seen |= 1u << id;
    }
    sl_tc_read_struct_end(t);
    /* Fields the format requires: a chunk without them is corrupt, and
     * requiring them makes each chunk cost the footer a dozen bytes or more,
     * so the chunks in memory stay a small multiple of the footer. */
    const unsigned required = 1u << 1 | 1u << 4 | 1u << 5 | 1u << 7 | 1u << 9;
    if ((seen & required) != required)
        t->err = true;
}

/* A Thrift list of structs into a new array of `size`-byte items, each
 * filled by `parse`. The array grows as items are parsed, never from the
 * count the list claims. On a wrong element type or no memory, sets t->err. */
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
    uint8_t *items = sl_calloc(1, size);
    size_t cap = 1;
    if (!items) {
        t->err = true;
        return NULL;
    }
    size_t i = 0;
    for (; i < n && !t->err; i++) {
        if (i == cap) {
            size_t ncap = cap * 2 < n ? cap * 2 : n;
            uint8_t *grown = sl_realloc(items, ncap * size);
            if (!grown) {
                t->err = true;
                break;
            }
            memset(grown + cap * size, 0, (ncap - cap) * size);
            items = grown;
            cap = ncap;
        }
        parse(t, items + i * size);
    }
    /* Items parsed (or partly parsed) are handed back so their strings are
     * freed with them. */
    *count = i;
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

/* What a node's leaves inherit from the groups above it. */
typedef struct walk_ctx {
    int def, rep;
    int rep_def[SL_PQ_MAX_DEPTH];
    size_t list_node[SL_PQ_MAX_DEPTH], list_len[SL_PQ_MAX_DEPTH], element_len[SL_PQ_MAX_DEPTH];
    unsigned maps;      /* bit d: list d is a MAP's key_value */
    bool map_next;      /* under a MAP group: the next repeated node is its key_value */
    int element_child;  /* d + 1 when this node is list d's element (the 3-level form); 0 */
    bool wrapped;       /* the parent is a group of this node alone, not repeated: a list's
                           name when this node repeats */
    unsigned n_groups;  /* the groups above, as sl_pq_column_info has them */
    bool groups_over;
    size_t group_len[SL_PQ_MAX_GROUPS];
    int group_def[SL_PQ_MAX_GROUPS];
} walk_ctx;

/* A FIXED_LEN_BYTE_ARRAY value may be at most this long. */
#define MAX_FIXED_LEN (1 << 20)

/* The types sluice has no column type of become one it has: INT96
 * timestamps int64 nanoseconds, decimals their exact text, FLOAT16 float, UUID text,
 * other fixed-length byte arrays binary, unsigned INT32 int64 (an unsigned
 * INT64 stays, its info saying is_unsigned). */
static void choose_conversion(leaf *l, const schema_el *el)
{
    if (el->is_unsigned && !el->is_decimal && el->type == SL_PQT_INT32) {
        l->conv = CONV_UINT32;
        l->phys = 4;
        l->info.type = SL_PQ_INT64;
        return;
    }
    l->info.is_unsigned = el->is_unsigned && !el->is_decimal && el->type == SL_PQT_INT64;
    if (el->type == SL_PQT_INT96) {
        l->conv = CONV_INT96;
        l->phys = 12;
        return;
    }
    if (el->type == SL_PQT_FIXED) {
        if (el->type_length <= 0 || el->type_length > MAX_FIXED_LEN) {
            l->info.type = SL_PQ_UNSUPPORTED;
            l->info.unsupported = "FIXED_LEN_BYTE_ARRAY with a length of 0 or over 1 MiB";
            return;
        }
        l->phys = el->type_length;
        l->conv = CONV_BYTES;
        if (el->is_float16 && el->type_length == 2) {
            l->conv = CONV_FLOAT16;
            l->info.type = SL_PQ_FLOAT;
            l->info.is_float16 = true;
        } else if (el->is_uuid && el->type_length == 16) {
            l->conv = CONV_UUID;
            l->info.type = SL_PQ_STRING;
        }
    }
    if (el->is_decimal && (el->type == SL_PQT_INT32 || el->type == SL_PQT_INT64 || el->type == SL_PQT_FIXED ||
                           el->type == SL_PQT_BYTE_ARRAY)) {
        if (el->scale < 0 || el->scale > 76) {
            l->info.type = SL_PQ_UNSUPPORTED;
            l->info.unsupported = "DECIMAL with a scale out of 0..76";
            return;
        }
        l->conv = CONV_DECIMAL;
        l->scale = el->scale;
        l->info.type = SL_PQ_STRING;
        l->info.is_decimal = true;
        l->info.precision = el->precision;
        l->info.scale = el->scale;
    }
}

/* Walks the depth-first schema list, adding a leaf for each primitive. A
 * repeated node starts a list (one more level of depth): the list is its
 * parent when that group holds it alone and does not repeat (the LIST
 * form), else the node itself, and its element follows the LIST spec's backward
 * compatibility rules: a repeated primitive, a repeated group of several
 * fields or one named `array` or `<list>_tuple` is the element itself
 * (2-level forms); otherwise the group's one child is (3-level). */
static bool walk_schema(sl_pq_reader *r, schema_el *els, size_t n, size_t *pos, const char *prefix,
                        walk_ctx ctx, int depth)
{
    if (*pos >= n || depth > MAX_SCHEMA_DEPTH)
        return false;
    size_t at = (*pos)++;
    schema_el *el = &els[at];
    bool repeated = el->repetition == SL_PQR_REPEATED;
    if (el->repetition == SL_PQR_OPTIONAL)
        ctx.def++;
    else if (repeated)
        ctx.def++, ctx.rep++;
    if (el->is_map)
        ctx.map_next = true;
    /* A leaf is named by its whole path, so names could cost far more than
     * the footer (a long group name over many short leaves): bounded. */
    size_t name_len = (prefix ? strlen(prefix) + 1 : 0) + strlen(el->name) + 1;
    if (name_len > r->names_left) {
        r->names_over = true;
        return false;
    }
    r->names_left -= name_len;
    char *name = prefix ? sl_asprintf("%s.%s", prefix, el->name) : sl_strdup(el->name);
    if (!name) {
        r->names_nomem = true;
        return false;
    }
    if (ctx.element_child) {
        ctx.element_len[ctx.element_child - 1] = strlen(name);
        ctx.element_child = 0;
    }
    if (repeated && ctx.rep <= SL_PQ_MAX_DEPTH) {
        int d = ctx.rep - 1;
        ctx.rep_def[d] = ctx.def;
        ctx.list_node[d] = at;
        ctx.list_len[d] = prefix && ctx.wrapped ? strlen(prefix) : strlen(name);
        if (ctx.map_next)
            ctx.maps |= 1u << d;
        ctx.map_next = false;
        const char *parent = prefix ? strrchr(prefix, '.') : NULL;
        parent = parent ? parent + 1 : prefix;
        size_t plen = parent ? strlen(parent) : 0;
        bool self = el->num_children != 1 || strcmp(el->name, "array") == 0 ||
                    (parent && strncmp(el->name, parent, plen) == 0 && strcmp(el->name + plen, "_tuple") == 0);
        ctx.element_len[d] = strlen(name);
        ctx.element_child = self ? 0 : d + 1;
    }
    if (el->num_children > 0) {
        bool ok = true;
        if (ctx.n_groups < SL_PQ_MAX_GROUPS) {
            ctx.group_len[ctx.n_groups] = strlen(name);
            ctx.group_def[ctx.n_groups++] = ctx.def;
        } else {
            ctx.groups_over = true;
        }
        ctx.wrapped = el->num_children == 1 && !repeated;
        for (int k = 0; ok && k < el->num_children; k++)
            ok = walk_schema(r, els, n, pos, name, ctx, depth + 1);
        sl_free(name);
        return ok;
    }
    leaf *l = &r->leaves[r->nleaves++];
    l->info.name = name;
    l->info.nullable = ctx.def > 0;
    l->info.max_def = ctx.def;
    l->physical = el->type;
    l->max_def = ctx.def;
    l->max_rep = ctx.rep;
    l->info.n_groups = ctx.n_groups;
    l->info.groups_over = ctx.groups_over;
    memcpy(l->info.group_len, ctx.group_len, sizeof ctx.group_len);
    memcpy(l->info.group_def, ctx.group_def, sizeof ctx.group_def);
    memcpy(l->rep_def, ctx.rep_def, sizeof l->rep_def);
    memcpy(l->list_node, ctx.list_node, sizeof l->list_node);
    static const sl_pq_type map[] = {
        [SL_PQT_BOOLEAN] = SL_PQ_BOOL, [SL_PQT_INT32] = SL_PQ_INT32, [SL_PQT_INT64] = SL_PQ_INT64,
        [SL_PQT_INT96] = SL_PQ_INT64, [SL_PQT_FLOAT] = SL_PQ_FLOAT, [SL_PQT_DOUBLE] = SL_PQ_DOUBLE,
        [SL_PQT_BYTE_ARRAY] = SL_PQ_BINARY, [SL_PQT_FIXED] = SL_PQ_BINARY,
    };
    if (!el->has_type || el->type < 0 || el->type > SL_PQT_FIXED)
        return false;
    l->info.type = map[el->type];
    l->phys = fixed_width(l->info.type);
    if (l->info.type == SL_PQ_BINARY && el->is_string)
        l->info.type = SL_PQ_STRING;
    choose_conversion(l, el);
    if (ctx.rep > SL_PQ_MAX_DEPTH) {
        l->info.type = SL_PQ_UNSUPPORTED;
        l->info.unsupported = "lists nested more than 4 deep are not supported";
        return true;
    }
    for (int d = 0; d < ctx.rep; d++)
        if (ctx.list_len[d] == 0) { /* a list is told by its name's length */
            l->info.type = SL_PQ_UNSUPPORTED;
            l->info.unsupported = "a list with an empty name";
            return true;
        }
    if (ctx.rep > 0) {
        l->info.depth = (unsigned)ctx.rep;
        l->info.list_len = ctx.list_len[0];
        l->info.element_len = ctx.element_len[0];
        memcpy(l->info.nest_list_len, ctx.list_len, sizeof ctx.list_len);
        memcpy(l->info.nest_element_len, ctx.element_len, sizeof ctx.element_len);
        l->info.maps = ctx.maps & ((1u << ctx.rep) - 1);
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
        r->names_left = 16 * len + ((size_t)1 << 20);
        size_t pos = 1;
        bool ok = r->leaves != NULL;
        for (int k = 0; ok && k < els[0].num_children; k++)
            ok = walk_schema(r, els, nels, &pos, NULL, (walk_ctx){0}, 0);
        if (!r->leaves || r->names_nomem)
            st = nomem(r);
        else if (r->names_over)
            st = sl_fail(SL_ERR_DECODE, "Parquet file '%s': its column names (dotted paths) would take more than "
                         "%zu bytes, from a footer of %zu", r->path, 16 * len + ((size_t)1 << 20), len);
        else if (!ok || pos != nels)
            st = sl_fail(SL_ERR_DECODE, "Parquet file '%s': corrupt schema in the footer", r->path);
    }
    for (size_t i = 0; i < nels; i++)
        sl_free(els[i].name);
    sl_free(els);
    if (st != SL_OK)
        return st;

    /* Row counts are only claims: pages must hold the rows, and the reader
     * allocates by what they decode to. Here they need only be sane. */
    int64_t total = 0;
    for (size_t g = 0; g < r->nrgs; g++) {
        const rgroup *rg = &r->rgs[g];
        if (rg->nchunks != r->nleaves)
            return sl_fail(SL_ERR_DECODE, "Parquet file '%s': row group %zu has %zu columns, the schema %zu",
                           r->path, g, rg->nchunks, r->nleaves);
        if (rg->num_rows < 0 || rg->num_rows > INT64_MAX - total)
            return sl_fail(SL_ERR_DECODE, "Parquet file '%s': row group %zu claims %lld rows", r->path, g,
                           (long long)rg->num_rows);
        total += rg->num_rows;
    }
    if (r->num_rows != total)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s': footer says %lld rows, its row groups hold %lld",
                       r->path, (long long)r->num_rows, (long long)total);
    for (size_t g = 0; g < r->nrgs; g++)
        for (size_t k = 0; k < r->nleaves; k++) {
            leaf *l = &r->leaves[k];
            if (r->rgs[g].chunks[k].has_bad_encoding && l->info.type != SL_PQ_UNSUPPORTED) {
                l->info.type = SL_PQ_UNSUPPORTED;
                l->info.unsupported = "its column chunks list an encoding sluice has no decoder for "
                                      "(a newer writer's?)";
            }
        }
    return SL_OK;
}

/* ---- open -------------------------------------------------------------- */

static sl_status read_at(sl_pq_reader *r, void *dst, size_t len, int64_t offset)
{
    size_t got;
    sl_status st = sl_ranged_read(r->io, dst, len, (uint64_t)offset, &got);
    if (st != SL_OK) {
        char why[1024]; /* sl_fail writes where sl_last_error() reads */
        snprintf(why, sizeof why, "%s", sl_last_error());
        return sl_fail(st, "cannot read Parquet file '%s' at offset %lld: %s", r->path, (long long)offset, why);
    }
    if (got < len)
        return sl_fail(SL_ERR_DECODE, "cannot read Parquet file '%s' at offset %lld: file is shorter than expected",
                       r->path, (long long)offset);
    return SL_OK;
}

static sl_status open_file(sl_pq_reader *r)
{
    sl_status st = sl_ranged_open_with(r->path, &r->p.io, &r->io);
    if (st == SL_OK) {
        uint64_t size;
        r->remote = sl_ranged_is_remote(r->io);
        if ((st = sl_ranged_size(r->io, &size)) == SL_OK)
            r->file_size = (int64_t)size;
    }
    if (st != SL_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sl_last_error());
        return sl_fail(st, "cannot open Parquet file: %s", why);
    }
    uint8_t head[4], tail[8];
    if (r->file_size >= 4) {
        st = read_at(r, head, 4, 0);
        if (st != SL_OK)
            return st;
        if (memcmp(head, "PAR1", 4) != 0)
            return sl_fail(SL_ERR_DECODE, "'%s' is not a Parquet file (no 'PAR1' magic at its start)", r->path);
    }
    if (r->file_size < 12)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s' is truncated: %lld bytes, too small for a Parquet file",
                       r->path, (long long)r->file_size);
    st = read_at(r, tail, 8, r->file_size - 8);
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
    if (footer_len > SL_PQ_MAX_FOOTER_BYTES)
        return sl_fail(SL_ERR_DECODE, "Parquet file '%s': footer of %u bytes, over the limit of %u", r->path,
                       footer_len, SL_PQ_MAX_FOOTER_BYTES);
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

sl_pq_reader_params sl_pq_reader_default_params(void)
{
    return (sl_pq_reader_params){.max_page_bytes = 256u << 20, .batch_rows = 65536, .batch_bytes = 64u << 20,
                                 .memory_limit = (size_t)1 << 30, .io = sl_ranged_default_params()};
}

static sl_status select_columns(sl_pq_reader *r, const char *const *names, const size_t *indexes, size_t count,
                                bool check);

static sl_pq_reader *reader_new(const char *path, const sl_pq_reader_params *params)
{
    sl_pq_reader *r = sl_calloc(1, sizeof *r);
    if (!r)
        return NULL;
    sl_pq_reader_params d = sl_pq_reader_default_params();
    r->p = params ? *params : d;
    if (!r->p.max_page_bytes)
        r->p.max_page_bytes = d.max_page_bytes;
    if (!r->p.batch_rows)
        r->p.batch_rows = d.batch_rows;
    if (!r->p.batch_bytes)
        r->p.batch_bytes = d.batch_bytes;
    if (!r->p.memory_limit)
        r->p.memory_limit = d.memory_limit;
    r->path = sl_strdup(path);
    r->zstd = ZSTD_createDCtx();
    if (!r->path || !r->zstd) {
        sl_pq_reader_free(r);
        return NULL;
    }
    return r;
}

sl_status sl_pq_reader_open(const char *path, const sl_pq_reader_params *params, sl_pq_reader **out)
{
    *out = NULL;
    sl_pq_reader *r = reader_new(path, params);
    if (!r)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening Parquet file '%s'", path);
    sl_status st = open_file(r);
    if (st == SL_OK)
        st = select_columns(r, NULL, NULL, 0, false);
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
int sl_pq_reader_find_column(const sl_pq_reader *r, const char *name)
{
    for (size_t i = 0; i < r->nleaves && i < INT_MAX; i++)
        if (strcmp(r->leaves[i].info.name, name) == 0)
            return (int)i;
    return -1;
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

static void column_free(column *c)
{
    sl_buf_free(&c->ahead);
    sl_buf_free(&c->raw);
    sl_buf_free(&c->plain);
    sl_buf_free(&c->prev);
    sl_buf_free(&c->scratch);
    sl_free(c->lost);
    sl_buf_free(&c->dict.values);
    sl_free(c->dict.offsets);
    sl_free(c->rows.valid);
    sl_free(c->rows.defs);
    sl_free(c->rows.fixed);
    sl_free(c->rows.offsets);
    sl_buf_free(&c->rows.data);
    for (int d = 0; d < SL_PQ_MAX_DEPTH; d++) {
        sl_free(c->rows.lofs[d]);
        sl_free(c->rows.lvalid[d]);
        sl_free(c->rows.ldefs[d]);
    }
}

/* check: an unsupported column is an error now; otherwise (the selection
 * open makes) only when a batch is read, so a file with such a column opens
 * and its other columns can be chosen. */
static sl_status select_columns(sl_pq_reader *r, const char *const *names, const size_t *indexes, size_t count,
                                bool check)
{
    size_t n = names || indexes ? count : r->nleaves;
    size_t *sel = sl_calloc(n ? n : 1, sizeof *sel);
    column *cols = sl_calloc(n ? n : 1, sizeof *cols);
    sl_pq_vector *pubs = sl_calloc(n ? n : 1, sizeof *pubs);
    if (!sel || !cols || !pubs) {
        sl_free(sel);
        sl_free(cols);
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
        } else if (indexes && (k = indexes[i]) >= r->nleaves) {
            st = sl_fail(SL_ERR_INVALID_ARG, "Parquet file '%s' has no column %zu (of %zu)", r->path, k,
                         r->nleaves);
        }
        if (st == SL_OK && check && r->leaves[k].info.type == SL_PQ_UNSUPPORTED)
            st = sl_fail(SL_ERR_DECODE, "Parquet file '%s', column '%s': %s", r->path, r->leaves[k].info.name,
                         r->leaves[k].info.unsupported);
        sel[i] = k;
        cols[i].r = r;
        cols[i].lf = st == SL_OK ? &r->leaves[k] : NULL;
        cols[i].width = st == SL_OK ? fixed_width(r->leaves[k].info.type) : 0;
        cols[i].phys = st == SL_OK ? r->leaves[k].phys : 0;
    }
    if (st != SL_OK) {
        sl_free(sel);
        sl_free(cols);
        sl_free(pubs);
        return st;
    }
    for (size_t i = 0; i < r->nsel; i++)
        column_free(&r->cols[i]);
    sl_free(r->sel);
    sl_free(r->cols);
    sl_free(r->pubs);
    r->sel = sel;
    r->cols = cols;
    r->pubs = pubs;
    r->nsel = n;
    r->rg = 0;
    r->rg_open = false;
    r->rg_done = 0;
    r->taken = 0;
    sl_buf_free(&r->span);
    r->held = 0;
    return SL_OK;
}

sl_status sl_pq_reader_select(sl_pq_reader *r, const char *const *names, size_t count)
{
    return select_columns(r, names, NULL, count, true);
}

sl_status sl_pq_reader_select_indexes(sl_pq_reader *r, const size_t *indexes, size_t count)
{
    return select_columns(r, NULL, indexes, count, true);
}

/* ---- memory ------------------------------------------------------------ */

/* Bytes a pending value takes (valid, its definition level below a group,
 * the value or its offset), and a pending list at one depth (offset,
 * valid, definition level): what reserve_rows checks and recount counts. */
static size_t value_bytes(const column *c)
{
    return 1 + (c->lf->info.n_groups ? 1 : 0) + (c->width ? (size_t)c->width : sizeof(int64_t));
}

static size_t list_bytes(const column *c) { return sizeof(int64_t) + 1 + (c->lf->info.n_groups ? 1 : 0); }

static size_t column_bytes(const column *c)
{
    size_t lists = 0;
    for (int d = 0; d < SL_PQ_MAX_DEPTH; d++)
        lists += c->rows.lcap[d] ? c->rows.lcap[d] * list_bytes(c) + sizeof(int64_t) : 0;
    return c->raw.cap + c->ahead.cap + c->plain.cap + c->prev.cap + c->scratch.cap + c->dict.values.cap +
           c->dict.offsets_cap * sizeof(int64_t) + c->rows.cap * value_bytes(c) + (c->width ? 0 : sizeof(int64_t)) +
           c->rows.data.cap + lists + c->lost_cap * 2 * sizeof(int64_t);
}

/* Counts what c holds now against the memory limit. */
static sl_status recount(column *c)
{
    sl_pq_reader *r = c->r;
    size_t now = column_bytes(c);
    r->held = r->held - c->held + now;
    c->held = now;
    if (r->held > r->p.memory_limit)
        return corrupt(c, "decoding needs more than the reader's memory limit of %zu bytes", r->p.memory_limit);
    return SL_OK;
}

/* What the memory limit leaves beside what the reader holds. */
static size_t room_left(const sl_pq_reader *r)
{
    return r->p.memory_limit - (r->held < r->p.memory_limit ? r->held : r->p.memory_limit);
}

/* Before growing a buffer of c from `have` to `want` bytes on a claim the
 * file makes: refused when it would pass the memory limit. */
static sl_status room_for(column *c, size_t have, size_t want, const char *what)
{
    sl_pq_reader *r = c->r;
    if (want > have && want - have > room_left(r))
        return corrupt(c, "%s of %zu bytes would pass the reader's memory limit of %zu bytes", what, want,
                       r->p.memory_limit);
    return SL_OK;
}

/* Room in c's buffer b for `extra` more bytes, the growth checked against
 * the memory limit before it is made (a value's bytes, which a step adds
 * one by one, would otherwise be counted only after). */
static sl_status reserve_within(column *c, sl_buf *b, size_t extra, const char *what)
{
    if (b->cap - b->len >= extra)
        return SL_OK;
    sl_status st = room_for(c, b->cap, b->len + extra, what);
    if (st != SL_OK)
        return st;
    if (!sl_buf_reserve_within(b, extra, room_left(c->r)))
        return nomem(c->r);
    return recount(c);
}

/* ---- pages ------------------------------------------------------------- */

typedef struct page_header {
    int type;
    int32_t usize, csize;
    int32_t num_values, encoding, def_encoding, rep_encoding; /* v1 data page / dictionary page */
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
        else if (ft == SL_TC_I32 && id == 4 && !v2)
            h->rep_encoding = sl_tc_read_i32(t);
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

/* len bytes of c's chunk at `at` (inside the chunk): from a local file,
 * directly; from an object, out of the row group's span or the column's
 * read-ahead, refilled by one GET of up to REMOTE_READ_AHEAD bytes (a read
 * at least that long goes straight into dst). */
static sl_status chunk_read(column *c, uint8_t *dst, size_t len, int64_t at)
{
    sl_pq_reader *r = c->r;
    if (!r->remote)
        return read_at(r, dst, len, at);
    const sl_buf *b = &r->span;
    int64_t off = r->span_off;
    if (!(b->len && at >= off && at - off + (int64_t)len <= (int64_t)b->len)) {
        b = &c->ahead;
        off = c->ahead_off;
    }
    if (!(b->len && at >= off && at - off + (int64_t)len <= (int64_t)b->len)) {
        if (len >= REMOTE_READ_AHEAD)
            return read_at(r, dst, len, at);
        int64_t left = c->end - at;
        size_t n = left < (int64_t)REMOTE_READ_AHEAD ? (size_t)left : REMOTE_READ_AHEAD;
        if (n < len)
            n = len;
        sl_status st = room_for(c, c->ahead.cap, n, "a read-ahead");
        if (st != SL_OK)
            return st;
        c->ahead.len = 0;
        if (!sl_buf_reserve(&c->ahead, n))
            return nomem(r);
        if ((st = read_at(r, c->ahead.data, n, at)) != SL_OK || (st = recount(c)) != SL_OK)
            return st;
        c->ahead.len = n;
        c->ahead_off = at;
        b = &c->ahead;
        off = at;
    }
    memcpy(dst, b->data + (at - off), len);
    return SL_OK;
}

/* The row group's selected chunks in one GET when they lie within
 * REMOTE_READ_AHEAD bytes of each other and fill at least half of that
 * span; otherwise each column reads ahead on its own. */
static sl_status read_span(sl_pq_reader *r)
{
    r->held -= r->span.cap < r->held ? r->span.cap : r->held;
    sl_buf_free(&r->span);
    if (!r->remote || r->nsel == 0)
        return SL_OK;
    int64_t lo = INT64_MAX, hi = 0, used = 0;
    for (size_t i = 0; i < r->nsel; i++) {
        const column *c = &r->cols[i];
        lo = c->next < lo ? c->next : lo;
        hi = c->end > hi ? c->end : hi;
        used += c->end - c->next;
    }
    if (hi - lo > (int64_t)REMOTE_READ_AHEAD || used * 2 < hi - lo)
        return SL_OK;
    if ((size_t)(hi - lo) > room_left(r))
        return SL_OK; /* no room: the columns read on their own */
    if (!sl_buf_reserve(&r->span, (size_t)(hi - lo)))
        return nomem(r);
    sl_status st = read_at(r, r->span.data, (size_t)(hi - lo), lo);
    if (st != SL_OK) {
        sl_buf_free(&r->span);
        return st;
    }
    r->span.len = (size_t)(hi - lo);
    r->span_off = lo;
    r->held += r->span.cap;
    return SL_OK;
}

/* Reads the page at c->next: its header, then its body into c->raw (only
 * once the header shows the body lies inside the chunk). */
static sl_status load_page(column *c, page_header *h, const uint8_t **body)
{
    sl_pq_reader *r = c->r;
    int64_t at = c->next, avail = c->end - at;
    size_t window = avail < (int64_t)HEADER_WINDOW ? (size_t)avail : HEADER_WINDOW, used;
    for (;;) {
        sl_status st = room_for(c, c->raw.cap, window, "a page header");
        if (st != SL_OK)
            return st;
        c->raw.len = 0;
        if (!sl_buf_reserve(&c->raw, window))
            return nomem(r);
        if ((st = chunk_read(c, c->raw.data, window, at)) != SL_OK)
            return st;
        c->raw.len = window;
        if (parse_page_header(c->raw.data, window, h, &used))
            break;
        /* A header longer than the window (large statistics) gets a larger
         * one; past the chunk's end or the limit, it is corrupt. */
        if ((int64_t)window == avail || window >= SL_PQ_MAX_PAGE_HEADER_BYTES)
            return corrupt(c, "corrupt page header at offset %lld", (long long)at);
        window = window > (SL_PQ_MAX_PAGE_HEADER_BYTES / 4) ? SL_PQ_MAX_PAGE_HEADER_BYTES : window * 4;
        if ((int64_t)window > avail)
            window = (size_t)avail;
    }
    if ((int64_t)h->csize > avail - (int64_t)used)
        return corrupt(c, "page at offset %lld runs past the end of its column chunk", (long long)at);
    if ((size_t)h->csize > r->p.max_page_bytes || (size_t)h->usize > r->p.max_page_bytes)
        return corrupt(c, "page at offset %lld claims %d bytes (%d stored), over the limit of %zu", (long long)at,
                       h->usize, h->csize, r->p.max_page_bytes);
    size_t total = used + (size_t)h->csize;
    if (total > c->raw.len) {
        sl_status st = room_for(c, c->raw.cap, total, "a page");
        if (st != SL_OK)
            return st;
        if (!sl_buf_reserve(&c->raw, total - c->raw.len))
            return nomem(r);
        if ((st = chunk_read(c, c->raw.data + c->raw.len, total - c->raw.len, at + (int64_t)c->raw.len)) != SL_OK)
            return st;
        c->raw.len = total;
    }
    c->next = at + (int64_t)total;
    *body = c->raw.data + used;
    return recount(c);
}

/* The page's values as decompressed bytes (or src as it is). */
static sl_status page_bytes(column *c, const uint8_t *src, size_t n, size_t usize, bool compressed,
                            const uint8_t **out)
{
    if (!compressed || c->ch->codec == SL_PQ_UNCOMPRESSED) {
        if (n != usize)
            return corrupt(c, "uncompressed page holds %zu bytes, its header says %zu", n, usize);
        *out = src;
        return SL_OK;
    }
    sl_status st = room_for(c, c->plain.cap, usize, "a decompressed page");
    if (st != SL_OK)
        return st;
    const char *err = sl_pq_decompress(c->ch->codec, src, n, usize, &c->plain, c->r->zstd);
    if (err)
        return strcmp(err, "out of memory") == 0 ? nomem(c->r) : corrupt(c, "%s", err);
    *out = c->plain.data;
    return recount(c);
}

static sl_status decode_dictionary_page(column *c, const uint8_t *p, size_t len, int64_t n)
{
    dict *d = &c->dict;
    d->values.len = 0;
    d->n = 0;
    d->max_len = 0;
    c->has_dict = false;
    if (c->lf->info.type == SL_PQ_BOOL)
        return corrupt(c, "dictionary page for a boolean column");
    if (!c->phys) {
        /* Each entry takes at least its 4-byte length. */
        if ((size_t)n > len / 4)
            return corrupt(c, "dictionary page ends early (%lld entries in %zu bytes)", (long long)n, len);
        size_t need = ((size_t)n + 1) * sizeof *d->offsets;
        sl_status st = room_for(c, d->offsets_cap * sizeof *d->offsets + d->values.cap, need + len,
                                "a dictionary");
        if (st != SL_OK)
            return st;
        if ((size_t)n + 1 > d->offsets_cap) {
            int64_t *o = sl_realloc(d->offsets, need);
            if (!o)
                return nomem(c->r);
            d->offsets = o;
            d->offsets_cap = (size_t)n + 1;
        }
        if (!sl_buf_reserve(&d->values, len))
            return nomem(c->r);
        const uint8_t *end = p + len;
        d->offsets[0] = 0;
        for (int64_t k = 0; k < n; k++) {
            if (end - p < 4 || (size_t)(end - p - 4) < le32(p))
                return corrupt(c, "dictionary page ends early");
            uint32_t vl = le32(p);
            sl_buf_append(&d->values, p + 4, vl); /* reserved above */
            d->offsets[k + 1] = (int64_t)d->values.len;
            if (vl > d->max_len)
                d->max_len = vl;
            p += 4 + vl;
        }
    } else {
        size_t w = (size_t)c->phys;
        if ((size_t)n > len / w)
            return corrupt(c, "dictionary page ends early (%lld entries in %zu bytes)", (long long)n, len);
        sl_status st = room_for(c, d->values.cap, (size_t)n * w, "a dictionary");
        if (st != SL_OK)
            return st;
        if (!sl_buf_append(&d->values, p, (size_t)n * w))
            return nomem(c->r);
    }
    d->n = n;
    c->has_dict = true;
    return recount(c);
}

/* Points the value decoders at a data page's values. A page of a column
 * without nulls must hold a value for each row: checked here when the
 * encoding makes that a matter of size. An encoding there is no decoder
 * for (for the column's type) is undecodable, not corrupt: the levels
 * before it can still be read. */
static sl_status start_values(column *c, int encoding, const uint8_t *p, size_t len, int64_t n)
{
    c->encoding = encoding;
    c->lost_page = false;
    bool required = c->lf->max_def == 0;
    switch (encoding) {
    case SL_PQE_PLAIN:
        c->vp = p;
        c->vend = p + len;
        c->bit = 0;
        if (required && c->phys && c->lf->info.type != SL_PQ_BOOL && (uint64_t)n > len / (size_t)c->phys)
            return corrupt(c, "PLAIN values end early (%zu bytes for %lld values)", len, (long long)n);
        if (required && c->lf->info.type == SL_PQ_BOOL && (uint64_t)n > (uint64_t)len * 8)
            return corrupt(c, "PLAIN boolean values end early");
        if (required && !c->phys && (uint64_t)n > len / 4)
            return corrupt(c, "PLAIN byte array values end early (%zu bytes for %lld values)", len, (long long)n);
        return SL_OK;
    case SL_PQE_PLAIN_DICTIONARY:
    case SL_PQE_RLE_DICTIONARY:
        if (!c->has_dict && c->dict_lost) { /* its cause is said */
            c->lost_page = true;
            return SL_OK;
        }
        if (!c->has_dict)
            return corrupt(c, "dictionary-encoded page without a dictionary page");
        /* A bit width, then the indices; a page of nulls may have neither. */
        if (!sl_rle_stream_init(&c->ix, p + (len > 0), len ? len - 1 : 0, len ? p[0] : 0))
            return corrupt(c, "corrupt dictionary indices (RLE/bit-packed, bit width %d)", p[0]);
        return SL_OK;
    case SL_PQE_DELTA_BINARY_PACKED:
        if (c->lf->physical != SL_PQT_INT32 && c->lf->physical != SL_PQT_INT64)
            return undecodable(c, "DELTA_BINARY_PACKED values in a %s column", sl_pq_type_name(c->lf->info.type));
        if (!sl_delta_init(&c->delta, p, len))
            return corrupt(c, "corrupt DELTA_BINARY_PACKED header");
        if (required && sl_delta_left(&c->delta) < (uint64_t)n)
            return corrupt(c, "DELTA_BINARY_PACKED holds %llu values for %lld rows",
                           (unsigned long long)sl_delta_left(&c->delta), (long long)n);
        return SL_OK;
    case SL_PQE_DELTA_LENGTH_BYTE_ARRAY:
    case SL_PQE_DELTA_BYTE_ARRAY: { /* DELTA_BYTE_ARRAY: FIXED_LEN_BYTE_ARRAY too */
        if (c->phys && (encoding != SL_PQE_DELTA_BYTE_ARRAY || c->lf->physical != SL_PQT_FIXED))
            return undecodable(c, "%s values in a %s column", sl_pq_encoding_name(encoding),
                               sl_pq_type_name(c->lf->info.type));
        const uint8_t *at = p, *end = p + len;
        if (encoding == SL_PQE_DELTA_BYTE_ARRAY &&
            (!sl_delta_init(&c->prefixes, p, len) || !sl_delta_end(&c->prefixes, &at)))
            return corrupt(c, "corrupt DELTA_BYTE_ARRAY prefix lengths");
        if (!sl_delta_init(&c->delta, at, (size_t)(end - at)) || !sl_delta_end(&c->delta, &at))
            return corrupt(c, "corrupt %s lengths", sl_pq_encoding_name(encoding));
        if (encoding == SL_PQE_DELTA_BYTE_ARRAY && sl_delta_left(&c->prefixes) != sl_delta_left(&c->delta))
            return corrupt(c, "DELTA_BYTE_ARRAY holds %llu prefix lengths for %llu suffixes",
                           (unsigned long long)sl_delta_left(&c->prefixes),
                           (unsigned long long)sl_delta_left(&c->delta));
        if (required && sl_delta_left(&c->delta) < (uint64_t)n)
            return corrupt(c, "%s holds %llu values for %lld rows", sl_pq_encoding_name(encoding),
                           (unsigned long long)sl_delta_left(&c->delta), (long long)n);
        c->vp = at;
        c->vend = end;
        return SL_OK;
    }
    case SL_PQE_BYTE_STREAM_SPLIT:
        if (!c->phys || c->lf->info.type == SL_PQ_BOOL)
            return undecodable(c, "BYTE_STREAM_SPLIT values in a %s column", sl_pq_type_name(c->lf->info.type));
        if (len % (size_t)c->phys)
            return corrupt(c, "BYTE_STREAM_SPLIT values of %zu bytes are not whole %d-byte values", len, c->phys);
        c->vp = p;
        c->split_count = len / (size_t)c->phys;
        c->split_next = 0;
        if (required && (uint64_t)n > c->split_count)
            return corrupt(c, "BYTE_STREAM_SPLIT holds %zu values for %lld rows", c->split_count, (long long)n);
        return SL_OK;
    case SL_PQE_RLE:
        if (c->lf->info.type == SL_PQ_BOOL) { /* 4-byte length, then the hybrid at width 1 */
            if (len < 4 || le32(p) > len - 4)
                return corrupt(c, "RLE boolean values end early");
            sl_rle_stream_init(&c->ix, p + 4, le32(p), 1);
            return SL_OK;
        }
        /* fall through */
    default:
        return undecodable(c, "unsupported encoding %s (%d)", sl_pq_encoding_name(encoding), encoding);
    }
}

static sl_status start_levels(column *c, const uint8_t *p, size_t len)
{
    if (c->lf->max_def > 0)
        sl_rle_stream_init(&c->levels, p, len, sl_pq_bit_width((uint32_t)c->lf->max_def));
    return SL_OK;
}

static void start_reps(column *c, const uint8_t *p, size_t len)
{
    if (c->lf->max_rep > 0)
        sl_rle_stream_init(&c->reps, p, len, sl_pq_bit_width((uint32_t)c->lf->max_rep));
}

/* A v1 page's levels of one kind (up to max_level) into s, *p and *len
 * moved past them: a 4-byte length, then the RLE hybrid; or the deprecated
 * BIT_PACKED (old parquet-mr and Impala files), n levels with no length.
 * Where levels in an encoding there is no decoder for end is unknown, so
 * the values after them are too: a flat column's definition levels are
 * taken as "the value is null" and the page is undecodable; a list's shape
 * cannot be known without them, so its page is corrupt. */
static sl_status v1_levels(column *c, int encoding, const char *what, int max_level, int64_t n, sl_rle_stream *s,
                           const uint8_t **p, size_t *len)
{
    int width = sl_pq_bit_width((uint32_t)max_level);
    size_t bytes;
    if (encoding == SL_PQE_RLE) {
        if (*len < 4 || le32(*p) > *len - 4)
            return corrupt(c, "%s levels run past their page", what);
        bytes = le32(*p);
        sl_rle_stream_init(s, *p + 4, bytes, width);
        bytes += 4;
    } else if (encoding == SL_PQE_BIT_PACKED) {
        bytes = (size_t)(((uint64_t)n * (uint64_t)width + 7) / 8); /* n: a page's, an int32 */
        if (bytes > *len)
            return corrupt(c, "BIT_PACKED %s levels run past their page (%lld levels of %d bits in %zu bytes)",
                           what, (long long)n, width, *len);
        sl_bitpacked_stream_init(s, *p, bytes, width);
    } else if (c->lf->max_rep > 0) {
        return corrupt(c, "unsupported %s level encoding %s (%d) in a list column", what,
                       sl_pq_encoding_name(encoding), encoding);
    } else {
        sl_status st = undecodable(c, "unsupported %s level encoding %s (%d)", what, sl_pq_encoding_name(encoding),
                                   encoding);
        sl_rle_stream_repeat(s, (uint32_t)max_level - 1, (uint64_t)n); /* every group there */
        return st;
    }
    *p += bytes;
    *len -= bytes;
    return SL_OK;
}

/* n values in a page: within what the chunk has left (c->total: its rows,
 * or for a list its levels). */
static sl_status check_count(column *c, int64_t n)
{
    if (n < 0 || n > c->total - c->values)
        return corrupt(c, "page holds %lld values, more than the %lld left in the column chunk", (long long)n,
                       (long long)(c->total - c->values));
    return SL_OK;
}

static sl_status data_page_v1(column *c, const page_header *h, const uint8_t *body)
{
    sl_status st = check_count(c, h->num_values);
    if (st != SL_OK)
        return st;
    const uint8_t *p;
    if ((st = page_bytes(c, body, (size_t)h->csize, (size_t)h->usize, true, &p)) != SL_OK)
        return st;
    size_t len = (size_t)h->usize;
    c->lost_page = false;
    if (c->lf->max_rep > 0 &&
        (st = v1_levels(c, h->rep_encoding, "repetition", c->lf->max_rep, h->num_values, &c->reps, &p, &len)) != SL_OK)
        return st;
    if (c->lf->max_def > 0 &&
        (st = v1_levels(c, h->def_encoding, "definition", c->lf->max_def, h->num_values, &c->levels, &p, &len)) != SL_OK)
        return st;
    if (!c->lost_page && (st = start_values(c, h->encoding, p, len, h->num_values)) != SL_OK)
        return st;
    c->values += h->num_values;
    c->page_left = h->num_values;
    return SL_OK;
}

static sl_status data_page_v2(column *c, const page_header *h, const uint8_t *body)
{
    sl_status st = check_count(c, h->num_values);
    if (st != SL_OK)
        return st;
    int64_t levels = (int64_t)h->v2_def_len + h->v2_rep_len;
    if (h->v2_def_len < 0 || h->v2_rep_len < 0 || levels > h->csize || levels > h->usize)
        return corrupt(c, "level lengths out of range in a v2 data page");
    start_reps(c, body, (size_t)h->v2_rep_len);
    start_levels(c, body + h->v2_rep_len, (size_t)h->v2_def_len);
    const uint8_t *p;
    st = page_bytes(c, body + levels, (size_t)(h->csize - levels), (size_t)(h->usize - levels), h->v2_compressed,
                    &p);
    if (st != SL_OK)
        return st;
    if ((st = start_values(c, h->encoding, p, (size_t)(h->usize - levels), h->num_values)) != SL_OK)
        return st;
    c->values += h->num_values;
    c->page_left = h->num_values;
    return SL_OK;
}

/* Reads pages until a data page with rows is current (dictionary pages are
 * decoded on the way, index and unknown pages skipped). */
static sl_status next_data_page(column *c)
{
    while (c->page_left == 0) {
        if (c->next >= c->end)
            return corrupt(c, "column chunk ends after %lld of its %lld values", (long long)c->values,
                           (long long)c->total);
        page_header h;
        const uint8_t *body = NULL;
        sl_status st = load_page(c, &h, &body);
        if (st != SL_OK)
            return st;
        if (h.type == SL_PQP_DICTIONARY) {
            if (!h.has_dict)
                return corrupt(c, "dictionary page without its header");
            if (h.encoding != SL_PQE_PLAIN && h.encoding != SL_PQE_PLAIN_DICTIONARY) {
                c->has_dict = false;
                st = undecodable(c, "unsupported dictionary encoding %s (%d)", sl_pq_encoding_name(h.encoding),
                                 h.encoding);
                c->dict_lost = st == SL_OK; /* the data pages after it say so */
                if (st != SL_OK)
                    return st;
                continue;
            }
            if (h.num_values < 0)
                return corrupt(c, "dictionary page with %d values", h.num_values);
            const uint8_t *p;
            st = page_bytes(c, body, (size_t)h.csize, (size_t)h.usize, true, &p);
            if (st == SL_OK)
                st = decode_dictionary_page(c, p, (size_t)h.usize, h.num_values);
            c->dict_lost = false;
        } else if (h.type == SL_PQP_DATA) {
            st = h.has_data ? data_page_v1(c, &h, body) : corrupt(c, "data page without its header");
        } else if (h.type == SL_PQP_DATA_V2) {
            st = h.has_v2 ? data_page_v2(c, &h, body) : corrupt(c, "v2 data page without its header");
        } /* index pages and unknown page types are skipped */
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

/* ---- rows -------------------------------------------------------------- */

/* Grows a valid-byte array to cap and, when offs is set, an offsets array
 * to cap + 1 (its first 0). */
static bool grow_arrays(uint8_t **valid, int64_t **offs, size_t cap)
{
    uint8_t *v = sl_realloc(*valid, cap);
    if (!v)
        return false;
    *valid = v;
    if (!offs)
        return true;
    int64_t *o = sl_realloc(*offs, (cap + 1) * sizeof *o);
    if (!o)
        return false;
    if (!*offs)
        o[0] = 0;
    *offs = o;
    return true;
}

static size_t grown_cap(size_t cap, size_t need)
{
    cap = cap ? cap : 256;
    while (cap < need)
        cap *= 2;
    return cap;
}

/* Resizes c's pending values to cap (the caller has checked the room). */
static bool resize_values(column *c, size_t cap)
{
    pending *pr = &c->rows;
    if (!grow_arrays(&pr->valid, c->width ? NULL : &pr->offsets, cap))
        return false;
    if (c->lf->info.n_groups) {
        uint8_t *defs = sl_realloc(pr->defs, cap);
        if (!defs)
            return false;
        pr->defs = defs;
    }
    if (c->width) {
        uint8_t *fixed = sl_realloc(pr->fixed, cap * (size_t)c->width);
        if (!fixed)
            return false;
        pr->fixed = fixed;
    }
    pr->cap = cap;
    return true;
}

static bool resize_lists(column *c, int d, size_t cap)
{
    pending *pr = &c->rows;
    if (!grow_arrays(&pr->lvalid[d], &pr->lofs[d], cap) ||
        (c->lf->info.n_groups && !grow_arrays(&pr->ldefs[d], NULL, cap)))
        return false;
    pr->lcap[d] = cap;
    return true;
}

/* Room in c's pending rows for `more` values (and for a list column `more`
 * lists at each depth: a level adds one at most); grows with what is
 * decoded, all of a call's growth first checked against the memory limit
 * together (a row's list may be longer than a batch: only the limit holds
 * it). */
static sl_status reserve_rows(column *c, size_t more)
{
    pending *pr = &c->rows;
    size_t cap = pr->cap, lcap[SL_PQ_MAX_DEPTH], grow = 0;
    if (pr->n + more > pr->cap) {
        cap = grown_cap(pr->cap, pr->n + more);
        grow += (cap - pr->cap) * value_bytes(c);
    }
    for (int d = 0; d < c->lf->max_rep && d < SL_PQ_MAX_DEPTH; d++) {
        lcap[d] = pr->lcap[d];
        if (pr->nl[d] + more > pr->lcap[d] || !pr->lofs[d]) {
            lcap[d] = grown_cap(pr->lcap[d], pr->nl[d] + more);
            grow += (lcap[d] - pr->lcap[d]) * list_bytes(c);
        }
    }
    if (grow == 0)
        return SL_OK;
    sl_pq_reader *r = c->r;
    if (grow > room_left(r))
        return corrupt(c, "its pending rows would take %zu bytes more, past the reader's memory limit of %zu bytes "
                          "(%zu held; a row's list may be too long)", grow, r->p.memory_limit, r->held);
    if (cap != pr->cap && !resize_values(c, cap))
        return nomem(r);
    for (int d = 0; d < c->lf->max_rep && d < SL_PQ_MAX_DEPTH; d++)
        if (lcap[d] != pr->lcap[d] && !resize_lists(c, d, lcap[d]))
            return nomem(r);
    return recount(c);
}

/* After a batch: pending arrays a row's long list grew far past what a
 * batch needs are given back, so that the memory is there for the next
 * long row, page or dictionary (of any column). */
static void shrink_rows(column *c)
{
    if (c->lf->info.type == SL_PQ_UNSUPPORTED) /* lists past SL_PQ_MAX_DEPTH among them */
        return;
    pending *pr = &c->rows;
    size_t batch = c->r->p.batch_rows + 1, cap = grown_cap(0, pr->n > batch ? pr->n : batch);
    bool shrunk = false;
    if (pr->cap > 2 * cap && resize_values(c, cap))
        shrunk = true;
    for (int d = 0; d < c->lf->max_rep && d < SL_PQ_MAX_DEPTH; d++) {
        size_t lcap = grown_cap(0, pr->nl[d] > batch ? pr->nl[d] : batch);
        if (pr->lcap[d] > 2 * lcap && resize_lists(c, d, lcap))
            shrunk = true;
    }
    if (shrunk)
        (void)recount(c); /* less than before: within the limit */
}

/* Pending rows [lo, hi) were reached by a lost page: joined to the last
 * range when they touch it (a page's steps, a list's levels). */
static sl_status mark_lost(column *c, int64_t lo, int64_t hi)
{
    int64_t *last = c->n_lost ? c->lost + 2 * (c->n_lost - 1) : NULL;
    if (last && last[1] >= lo) {
        if (hi > last[1])
            last[1] = hi;
        return SL_OK;
    }
    if (c->n_lost == c->lost_cap) {
        size_t cap = c->lost_cap ? 2 * c->lost_cap : 4, size = 2 * sizeof *c->lost;
        sl_status st = room_for(c, c->lost_cap * size, cap * size, "the lost rows' list");
        if (st != SL_OK)
            return st;
        int64_t *l = sl_realloc(c->lost, cap * size);
        if (!l)
            return nomem(c->r);
        c->lost = l;
        c->lost_cap = cap;
        if ((st = recount(c)) != SL_OK)
            return st;
    }
    c->lost[2 * c->n_lost] = lo;
    c->lost[2 * c->n_lost + 1] = hi;
    c->n_lost++;
    return SL_OK;
}

/* Rows of a list column that no later level can add to. */
static size_t complete_rows(const column *c)
{
    const pending *pr = &c->rows;
    return c->chunk_done || pr->nl[0] == 0 ? pr->nl[0] : pr->nl[0] - 1;
}

/* A list column's next m levels (repetition and definition): rows and the
 * lists inside their elements begun, and a valid byte for each element at
 * `valid`; *slots elements, *nn of them not null. def receives the
 * definition levels. A level at repetition r adds an entry to the open
 * list of depth r - 1 (r 0: a new row), which starts a list at each depth
 * below it that its definition level reaches, and an element when it
 * reaches them all. */
static sl_status list_levels(column *c, size_t m, uint8_t *valid, uint8_t *defs, uint32_t *def, size_t *slots,
                             size_t *nn)
{
    pending *pr = &c->rows;
    uint32_t rep[STEP_ROWS];
    if (!sl_rle_stream_read(&c->reps, rep, m))
        return corrupt(c, "corrupt repetition levels");
    if (!sl_rle_stream_read(&c->levels, def, m))
        return corrupt(c, "corrupt definition levels");
    const int depth = c->lf->max_rep;
    const uint32_t max_def = (uint32_t)c->lf->max_def;
    const int *rep_def = c->lf->rep_def;
    const int64_t num_rows = c->r->rgs[c->r->rg].num_rows;
    size_t s = 0, k = 0;
    for (size_t i = 0; i < m; i++) {
        int64_t at = (int64_t)(pr->n + s); /* the next element's place */
        uint32_t r = rep[i];
        if (def[i] > max_def)
            return corrupt(c, "definition level %u above the column's maximum %d", def[i], c->lf->max_def);
        if (r > (uint32_t)depth)
            return corrupt(c, "repetition level %u above the column's maximum %d", r, depth);
        if (r == 0) {
            if (c->rows_seen == num_rows)
                return corrupt(c, "levels hold more rows than the row group's %lld", (long long)num_rows);
            c->rows_seen++;
        } else {
            size_t open = pr->nl[r - 1];
            int64_t entries = (int)r < depth ? (int64_t)pr->nl[r] : at; /* of depth r so far */
            if (open == 0 || pr->lofs[r - 1][open - 1] == entries)
                return corrupt(c, "repetition level %u continues no list (the chunk's first level, or one after "
                               "an empty or null list)", r);
            if (def[i] < (uint32_t)rep_def[r - 1])
                return corrupt(c, "an empty or null list inside a list");
        }
        if (c->lost_page) { /* the row this level begins or continues */
            int64_t row = (int64_t)pr->nl[0] - (r > 0);
            sl_status st = mark_lost(c, row, row + 1);
            if (st != SL_OK)
                return st;
        }
        bool element = true;
        for (int d = (int)r; d < depth && element; d++) {
            size_t j = pr->nl[d];
            pr->lofs[d][j] = d + 1 < depth ? (int64_t)pr->nl[d + 1] : at;
            pr->lvalid[d][j] = def[i] + 1 >= (uint32_t)rep_def[d];
            if (pr->ldefs[d])
                pr->ldefs[d][j] = (uint8_t)def[i];
            pr->nl[d] = j + 1;
            element = def[i] >= (uint32_t)rep_def[d];
        }
        if (!element)
            continue;
        valid[s] = def[i] == max_def;
        if (defs)
            defs[s] = (uint8_t)def[i];
        k += valid[s];
        s++;
    }
    for (int d = 0; d < depth; d++)
        pr->lofs[d][pr->nl[d]] = d + 1 < depth ? (int64_t)pr->nl[d + 1] : (int64_t)(pr->n + s);
    *slots = s;
    *nn = k;
    return SL_OK;
}

/* A byte array value into row `row`; a decimal's (its unscaled value,
 * big-endian) as its exact text, the scale kept: 1.10, not the double's
 * 1.1; 38 digits, not 17. */
static sl_status take_bytes(column *c, size_t row, const uint8_t *s, size_t len)
{
    pending *pr = &c->rows;
    char text[SL_DECIMAL_TEXT_MAX];
    if (c->lf->conv == CONV_DECIMAL) { /* s: the unscaled value, big-endian */
        size_t n = sl_decimal_text(s, len, c->lf->scale, text);
        if (n == 0) /* a BYTE_ARRAY past 32 bytes: its value as the nearest double gives */
            n = sl_double_shortest(sl_decimal_double(s, len, c->lf->scale), text);
        s = (const uint8_t *)text;
        len = n;
    }
    sl_status st = reserve_within(c, &pr->data, len, "the batch's values");
    if (st != SL_OK)
        return st;
    sl_buf_append(&pr->data, s, len); /* reserved */
    pr->offsets[row + 1] = (int64_t)pr->data.len;
    return SL_OK;
}

/* Row `row` of c's pending rows is null: its slot of w bytes at `slot`
 * zeroed, or (byte arrays and what converts to text, w 0) its range left
 * empty. */
static void null_slot(column *c, uint8_t *slot, size_t w, size_t row)
{
    if (w)
        memset(slot, 0, w);
    else
        c->rows.offsets[row + 1] = c->rows.offsets[row];
}

/* nn DELTA_BINARY_PACKED or BYTE_STREAM_SPLIT values placed at the valid
 * ones of m slots of `width` bytes at dst (nulls zeroed). */
static sl_status fixed_values(column *c, const uint8_t *valid, size_t m, size_t nn, uint8_t *dst)
{
    size_t w = (size_t)c->phys;
    union {
        int64_t i64[STEP_ROWS];
        uint8_t bytes[STEP_ROWS * 8];
    } got;
    const uint8_t *src = got.bytes;
    if (c->encoding == SL_PQE_BYTE_STREAM_SPLIT) {
        if (c->split_count - c->split_next < nn)
            return corrupt(c, "BYTE_STREAM_SPLIT values end early (%zu left for %zu values)",
                           c->split_count - c->split_next, nn);
        sl_byte_stream_split_read(c->vp, c->split_count, w, c->split_next, nn, got.bytes);
        c->split_next += nn;
    } else {
        if (!sl_delta_read(&c->delta, got.i64, nn))
            return corrupt(c, "corrupt DELTA_BINARY_PACKED values (or fewer than the page's rows)");
        if (w == 4) /* an INT32 column: each value's low 32 bits */
            for (size_t k = 0; k < nn; k++) {
                uint32_t v = (uint32_t)got.i64[k];
                memcpy(got.bytes + k * 4, &v, 4);
            }
    }
    for (size_t i = 0, k = 0; i < m; i++, dst += w) {
        if (valid[i])
            memcpy(dst, src + w * k++, w);
        else
            memset(dst, 0, w);
    }
    return SL_OK;
}

/* nn DELTA_LENGTH_BYTE_ARRAY or DELTA_BYTE_ARRAY values at the valid ones of
 * m rows from `base` (a FIXED_LEN_BYTE_ARRAY column's into the slots from
 * `fixed`, each exactly its length). A DELTA_BYTE_ARRAY value is the first
 * `prefix` bytes of the value before it, then its suffix. */
static sl_status delta_byte_arrays(column *c, const uint8_t *valid, size_t m, size_t nn, size_t base,
                                   uint8_t *fixed)
{
    size_t w = (size_t)c->phys;
    int64_t lens[STEP_ROWS], prefix[STEP_ROWS];
    bool front = c->encoding == SL_PQE_DELTA_BYTE_ARRAY;
    const char *name = sl_pq_encoding_name(c->encoding);
    sl_status st;
    if (!sl_delta_read(&c->delta, lens, nn))
        return corrupt(c, "corrupt %s lengths (or fewer than the page's rows)", name);
    if (front && !sl_delta_read(&c->prefixes, prefix, nn))
        return corrupt(c, "corrupt DELTA_BYTE_ARRAY prefix lengths (or fewer than the page's rows)");
    for (size_t i = 0, k = 0; i < m; i++) {
        if (!valid[i]) {
            null_slot(c, w ? fixed + i * w : NULL, w, base + i);
            continue;
        }
        int64_t n = lens[k];
        if (n < 0 || n > c->vend - c->vp)
            return corrupt(c, "%s value of %lld bytes runs past its page", name, (long long)n);
        const uint8_t *v = c->vp;
        size_t vlen = (size_t)n;
        if (front) {
            if (prefix[k] < 0 || (uint64_t)prefix[k] > c->prev.len)
                return corrupt(c, "DELTA_BYTE_ARRAY prefix of %lld bytes is longer than the value before it (%zu)",
                               (long long)prefix[k], c->prev.len);
            c->prev.len = (size_t)prefix[k];
            if ((st = reserve_within(c, &c->prev, vlen, "a DELTA_BYTE_ARRAY value")) != SL_OK)
                return st;
            sl_buf_append(&c->prev, c->vp, vlen); /* reserved */
            v = c->prev.data;
            vlen = c->prev.len;
        }
        if (w && vlen != w)
            return corrupt(c, "DELTA_BYTE_ARRAY value of %zu bytes in a column of %zu-byte values", vlen, w);
        if (w)
            memcpy(fixed + i * w, v, w);
        else if ((st = take_bytes(c, base + i, v, vlen)) != SL_OK)
            return st;
        c->vp += n;
        k++;
    }
    return SL_OK;
}

/* An unscaled decimal (INT32 and INT64 little-endian, FIXED_LEN_BYTE_ARRAY
 * big-endian two's complement) into row `row` as its exact text, as
 * Arrow's decimals are read (take_bytes, core/decimal.h). */
static sl_status decimal_value(column *c, size_t row, const uint8_t *v)
{
    if (c->lf->physical != SL_PQT_INT32 && c->lf->physical != SL_PQT_INT64)
        return take_bytes(c, row, v, (size_t)c->phys);
    int64_t x;
    if (c->lf->physical == SL_PQT_INT32) {
        int32_t x32;
        memcpy(&x32, v, 4);
        x = x32;
    } else {
        memcpy(&x, v, 8);
    }
    uint8_t be[8];
    uint64_t u = (uint64_t)x;
    for (int k = 7; k >= 0; k--, u >>= 8)
        be[k] = (uint8_t)u;
    return take_bytes(c, row, be, sizeof be);
}

/* The m slots of c->scratch (stored values) into the batch's slots from
 * base, as the leaf's conversion says. */
static sl_status convert_values(column *c, const uint8_t *valid, size_t m, size_t base)
{
    pending *pr = &c->rows;
    size_t pw = (size_t)c->phys, w = (size_t)c->width;
    for (size_t i = 0; i < m; i++) {
        const uint8_t *v = c->scratch.data + i * pw;
        uint8_t *out = w ? pr->fixed + (base + i) * w : NULL;
        if (!valid[i]) {
            null_slot(c, out, w, base + i);
            continue;
        }
        switch (c->lf->conv) {
        case CONV_INT96: { /* Julian day 2440588 is 1970-01-01 */
            uint64_t nanos;
            int32_t day;
            memcpy(&nanos, v, 8);
            memcpy(&day, v + 8, 4);
            int64_t ns = (int64_t)((uint64_t)((int64_t)day - 2440588) * 86400000000000ull + nanos);
            memcpy(out, &ns, 8);
            break;
        }
        case CONV_DECIMAL: {
            sl_status st = decimal_value(c, base + i, v);
            if (st != SL_OK)
                return st;
            break;
        }
        case CONV_UINT32: {
            uint32_t u;
            memcpy(&u, v, 4);
            int64_t wide = u;
            memcpy(out, &wide, 8);
            break;
        }
        case CONV_FLOAT16: {
            float f = sl_half_float((uint16_t)(v[0] | v[1] << 8));
            memcpy(out, &f, 4);
            break;
        }
        case CONV_UUID: {
            char text[37];
            snprintf(text, sizeof text,
                     "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", v[0], v[1], v[2],
                     v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
            sl_status st = take_bytes(c, base + i, (const uint8_t *)text, 36);
            if (st != SL_OK)
                return st;
            break;
        }
        default: {
            sl_status st = take_bytes(c, base + i, v, pw);
            if (st != SL_OK)
                return st;
        }
        }
    }
    return SL_OK;
}

/* The m values from pending value `base` of a lost page are null (their
 * definition levels kept: the groups and lists above them are as stored);
 * a flat column's rows are its values, marked lost here (a list's are
 * marked level by level). */
static sl_status lost_values(column *c, size_t base, size_t m, size_t levels)
{
    pending *pr = &c->rows;
    memset(pr->valid + base, 0, m);
    if (c->width)
        memset(pr->fixed + base * (size_t)c->width, 0, m * (size_t)c->width);
    else
        for (size_t i = 0; i < m; i++)
            pr->offsets[base + i + 1] = pr->offsets[base];
    sl_status st = c->lf->max_rep ? SL_OK : mark_lost(c, (int64_t)base, (int64_t)(base + m));
    if (st != SL_OK)
        return st;
    pr->n += m;
    c->page_left -= (int64_t)levels;
    return SL_OK;
}

/* Decodes the next m rows of the current page (m <= STEP_ROWS) into c's
 * pending rows. */
static sl_status decode_rows(column *c, size_t levels)
{
    sl_status st = reserve_rows(c, levels);
    if (st != SL_OK)
        return st;
    pending *pr = &c->rows;
    size_t base = pr->n, m = levels, nn = m;
    uint8_t *valid = pr->valid + base, *defs = pr->defs ? pr->defs + base : NULL;
    uint32_t buf[STEP_ROWS];
    if (c->lf->max_rep > 0) { /* m: the elements among the levels */
        if ((st = list_levels(c, levels, valid, defs, buf, &m, &nn)) != SL_OK)
            return st;
    } else if (c->lf->max_def > 0) {
        if (!sl_rle_stream_read(&c->levels, buf, m))
            return corrupt(c, "corrupt definition levels");
        nn = 0;
        for (size_t i = 0; i < m; i++) {
            if (buf[i] > (uint32_t)c->lf->max_def)
                return corrupt(c, "definition level %u above the column's maximum %d", buf[i], c->lf->max_def);
            valid[i] = buf[i] == (uint32_t)c->lf->max_def;
            if (defs)
                defs[i] = (uint8_t)buf[i];
            nn += valid[i];
        }
    } else {
        memset(valid, 1, m);
        if (defs) /* required all the way: every group there */
            memset(defs, 0, m);
    }
    if (c->lost_page)
        return lost_values(c, base, m, levels);
    /* Stored values of w bytes go to slots from `fixed`: the batch's, or
     * for a converting leaf the scratch the conversion reads. */
    size_t w = (size_t)c->phys;
    bool converts = c->lf->conv != CONV_NONE && w; /* a byte array's converts in take_bytes */
    if (converts) {
        if ((st = room_for(c, c->scratch.cap, m * w, "converted values")) != SL_OK)
            return st;
        if (!sl_buf_reserve(&c->scratch, m * w))
            return nomem(c->r);
    }
    uint8_t *fixed = converts ? c->scratch.data : w ? pr->fixed + base * w : NULL;
    if (c->encoding == SL_PQE_PLAIN && c->lf->info.type == SL_PQ_BOOL) {
        if (c->bit + nn > (uint64_t)(c->vend - c->vp) * 8)
            return corrupt(c, "PLAIN boolean values end early");
        for (size_t i = 0; i < m; i++) {
            uint8_t v = 0;
            if (valid[i]) {
                v = c->vp[c->bit / 8] >> (c->bit % 8) & 1;
                c->bit++;
            }
            fixed[i] = v;
        }
    } else if (c->encoding == SL_PQE_PLAIN && w) {
        if ((size_t)(c->vend - c->vp) / w < nn)
            return corrupt(c, "PLAIN values end early (%zu bytes for %zu values)", (size_t)(c->vend - c->vp), nn);
        uint8_t *dst = fixed;
        /* no nulls: one copy; none for no value (a list page of empty
         * lists), where a converting leaf's scratch is still NULL */
        if (nn == m && m > 0) {
            memcpy(dst, c->vp, m * w);
            c->vp += m * w;
        } else {
            for (size_t i = 0; i < m; i++, dst += w) {
                if (valid[i]) {
                    memcpy(dst, c->vp, w);
                    c->vp += w;
                } else {
                    memset(dst, 0, w);
                }
            }
        }
    } else if (c->encoding == SL_PQE_PLAIN) {
        for (size_t i = 0; i < m; i++) {
            if (!valid[i]) {
                null_slot(c, NULL, 0, base + i);
                continue;
            }
            if (c->vend - c->vp < 4)
                return corrupt(c, "PLAIN byte array values end early");
            uint32_t n = le32(c->vp);
            c->vp += 4;
            if ((size_t)(c->vend - c->vp) < n)
                return corrupt(c, "PLAIN byte array value runs past its page");
            if ((st = take_bytes(c, base + i, c->vp, n)) != SL_OK)
                return st;
            c->vp += n;
        }
    } else if (c->encoding == SL_PQE_DELTA_BINARY_PACKED || c->encoding == SL_PQE_BYTE_STREAM_SPLIT) {
        if ((st = fixed_values(c, valid, m, nn, fixed)) != SL_OK)
            return st;
    } else if (c->encoding == SL_PQE_DELTA_LENGTH_BYTE_ARRAY || c->encoding == SL_PQE_DELTA_BYTE_ARRAY) {
        if ((st = delta_byte_arrays(c, valid, m, nn, base, fixed)) != SL_OK)
            return st;
    } else { /* dictionary indices, or RLE booleans */
        bool dict_enc = c->encoding != SL_PQE_RLE;
        if (nn && !sl_rle_stream_read(&c->ix, buf, nn))
            return dict_enc ? corrupt(c, "corrupt dictionary indices (RLE/bit-packed, bit width %d)",
                                      c->ix.bit_width)
                            : corrupt(c, "corrupt RLE boolean values");
        const dict *d = &c->dict;
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            if (!valid[i]) {
                null_slot(c, w ? fixed + i * w : NULL, w, base + i);
                continue;
            }
            uint32_t ix = buf[k++];
            if (!dict_enc) {
                fixed[i] = (uint8_t)ix;
            } else if (ix >= d->n) {
                return corrupt(c, "dictionary index %u out of range (dictionary has %lld entries)", ix,
                               (long long)d->n);
            } else if (w) {
                memcpy(fixed + i * w, d->values.data + (size_t)ix * w, w);
            } else if ((st = take_bytes(c, base + i, d->values.data + d->offsets[ix],
                                        (size_t)(d->offsets[ix + 1] - d->offsets[ix]))) != SL_OK) {
                return st;
            }
        }
    }
    if (converts && (st = convert_values(c, valid, m, base)) != SL_OK)
        return st;
    pr->n += m;
    c->page_left -= (int64_t)levels;
    return c->width ? SL_OK : recount(c);
}

/* How many of the next m levels (m >= 1) to decode in one step: within the
 * page and STEP_ROWS, and (byte arrays) sized so the step cannot add much
 * past the batch's bytes, even when every value repeats the longest
 * dictionary entry, nor more than half the memory the limit leaves (the
 * rest is for the other columns); at least one, but 0 when not even one
 * such value has room there (the caller ends the batch where it can). */
static size_t step_size(const column *c, size_t m)
{
    if ((int64_t)m > c->page_left)
        m = (size_t)c->page_left;
    if (m > STEP_ROWS)
        m = STEP_ROWS;
    if (c->lf->conv != CONV_NONE && c->phys && m > SCRATCH_BYTES / (size_t)c->phys) /* a step's stored values */
        m = SCRATCH_BYTES / (size_t)c->phys ? SCRATCH_BYTES / (size_t)c->phys : 1;
    if (!c->width) {
        size_t budget = c->r->p.batch_bytes;
        size_t worst = c->lost_page ? 0
                       : c->lf->conv == CONV_UUID ? 36
                       : c->phys ? (size_t)c->phys
                       : c->encoding == SL_PQE_PLAIN || c->encoding == SL_PQE_DELTA_LENGTH_BYTE_ARRAY
                           ? (size_t)(c->vend - c->vp)
                       : c->encoding == SL_PQE_DELTA_BYTE_ARRAY ? c->prev.len + (size_t)(c->vend - c->vp)
                                                                : c->dict.max_len;
        const sl_buf *data = &c->rows.data;
        size_t left = data->len < budget ? budget - data->len : 0, room = data->cap - data->len + room_left(c->r) / 2;
        if (worst > room)
            return 0;
        if (left > room)
            left = room;
        if (worst && m > left / worst)
            m = left / worst ? left / worst : 1;
    }
    return m;
}

/* Decodes rows until c holds `want`, or (byte arrays) its bytes reach the
 * batch's: a step of rows is sized so it cannot add much past that, even
 * when every row repeats the longest dictionary entry. */
static sl_status fill(column *c, size_t want)
{
    size_t budget = c->r->p.batch_bytes;
    while (c->rows.n < want) {
        if (!c->width && c->rows.data.len >= budget)
            break;
        if (c->page_left == 0) {
            sl_status st = next_data_page(c);
            if (st != SL_OK)
                return st;
            continue;
        }
        size_t m = step_size(c, want - c->rows.n);
        if (m == 0 && c->rows.n)
            break;
        sl_status st = decode_rows(c, m ? m : 1);
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

/* Elements and lists inside rows' lists pending. */
static size_t pending_items(const column *c)
{
    size_t items = c->rows.n;
    for (int d = 1; d < c->lf->max_rep; d++)
        items += c->rows.nl[d];
    return items;
}

/* fill() for a list column: levels are decoded until `want` rows are
 * complete, or (with one complete at least) the elements and inner lists
 * reach batch_rows or the elements' bytes the batch's. A step never adds
 * more levels than rows wanted or items allowed (a level adds an item at
 * each depth at most), so pending rows stay within want + 1 and items
 * within depth x (batch_rows + 1) — but for a row whose list alone holds
 * more: it is read whole (steps of up to batch_rows levels while no row
 * is complete), a batch of its own, held to the memory limit like all the
 * pending rows (reserve_rows), and its arrays are shrunk after it. */
static sl_status fill_list(column *c, size_t want)
{
    pending *pr = &c->rows;
    size_t budget = c->r->p.batch_bytes, cap = c->r->p.batch_rows;
    for (;;) {
        size_t done = complete_rows(c), items = pending_items(c);
        if (done >= want || c->chunk_done)
            break;
        if (done && (items >= cap || (!c->width && pr->data.len >= budget)))
            break;
        if (c->page_left == 0) {
            sl_status st = SL_OK;
            if (c->values < c->total) {
                st = next_data_page(c);
            } else if (c->rows_seen != c->r->rgs[c->r->rg].num_rows) {
                st = corrupt(c, "column chunk holds %lld rows, its row group %lld", (long long)c->rows_seen,
                             (long long)c->r->rgs[c->r->rg].num_rows);
            } else {
                c->chunk_done = true;
            }
            if (st != SL_OK)
                return st;
            continue;
        }
        size_t m = want - done, room = !done ? cap : items <= cap ? cap + 1 - items : 1;
        size_t step = step_size(c, m < room ? m : room);
        if (step == 0 && done)
            break;
        sl_status st = decode_rows(c, step ? step : 1);
        if (st != SL_OK)
            return st;
    }
    return SL_OK;
}

/* Whether the first j pending rows of a list column fit in a batch: their
 * lists at each depth and their elements within batch_rows, the elements'
 * bytes within the batch's. */
static bool list_rows_fit(const column *c, size_t j)
{
    const pending *pr = &c->rows;
    int64_t e = (int64_t)j;
    for (int d = 0; d < c->lf->max_rep; d++) {
        e = pr->lofs[d][e];
        if (e > (int64_t)c->r->p.batch_rows)
            return false;
    }
    return c->width || pr->offsets[e] <= (int64_t)c->r->p.batch_bytes;
}

/* Rows of c that fit in a batch: all of them, or (byte arrays) those within
 * the batch's bytes, at least one. A list column's: its complete rows
 * within the batch's elements and bytes, at least one. */
static size_t rows_that_fit(const column *c)
{
    if (c->lf->max_rep) {
        size_t lo = 1, hi = complete_rows(c);
        if (hi == 0 || list_rows_fit(c, hi))
            return hi;
        while (lo < hi) {
            size_t mid = lo + (hi - lo + 1) / 2;
            if (list_rows_fit(c, mid))
                lo = mid;
            else
                hi = mid - 1;
        }
        return lo;
    }
    const pending *pr = &c->rows;
    if (c->width || pr->offsets[pr->n] <= (int64_t)c->r->p.batch_bytes)
        return pr->n;
    size_t lo = 1, hi = pr->n; /* the largest j with offsets[j] <= budget, at least 1 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (pr->offsets[mid] <= (int64_t)c->r->p.batch_bytes)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Drops the first k pending values. */
static void drop_values(column *c, size_t k)
{
    pending *pr = &c->rows;
    if (k == 0)
        return;
    size_t rest = pr->n - k;
    memmove(pr->valid, pr->valid + k, rest);
    if (pr->defs)
        memmove(pr->defs, pr->defs + k, rest);
    if (c->width) {
        memmove(pr->fixed, pr->fixed + k * (size_t)c->width, rest * (size_t)c->width);
    } else {
        int64_t cut = pr->offsets[k];
        for (size_t i = 0; i <= rest; i++)
            pr->offsets[i] = pr->offsets[k + i] - cut;
        if (cut > 0) { /* rows of nulls or empty values may have no data at all */
            memmove(pr->data.data, pr->data.data + cut, pr->data.len - (size_t)cut);
            pr->data.len -= (size_t)cut;
        }
    }
    pr->n = rest;
}

/* Drops the first k pending rows (handed out in the last batch). */
static void drop_rows(column *c, size_t k)
{
    pending *pr = &c->rows;
    size_t kept = 0;
    for (size_t j = 0; j < c->n_lost; j++) { /* the lost ranges, from the rows left */
        int64_t lo = c->lost[2 * j] - (int64_t)k, hi = c->lost[2 * j + 1] - (int64_t)k;
        if (hi <= 0)
            continue;
        c->lost[2 * kept] = lo < 0 ? 0 : lo;
        c->lost[2 * kept + 1] = hi;
        kept++;
    }
    c->n_lost = kept;
    if (!c->lf->max_rep || k == 0) {
        drop_values(c, k);
        return;
    }
    size_t cut = k; /* of depth d's lists */
    for (int d = 0; d < c->lf->max_rep; d++) {
        size_t below = (size_t)pr->lofs[d][cut], rest = pr->nl[d] - cut;
        for (size_t i = 0; i <= rest; i++)
            pr->lofs[d][i] = pr->lofs[d][cut + i] - (int64_t)below;
        memmove(pr->lvalid[d], pr->lvalid[d] + cut, rest);
        if (pr->ldefs[d])
            memmove(pr->ldefs[d], pr->ldefs[d] + cut, rest);
        pr->nl[d] = rest;
        cut = below;
    }
    drop_values(c, cut);
}

/* ---- row groups and batches -------------------------------------------- */

/* Checks the selected chunks of row group r->rg and points each column at
 * its first page. */
static sl_status open_row_group(sl_pq_reader *r)
{
    const rgroup *rg = &r->rgs[r->rg];
    for (size_t i = 0; i < r->nsel; i++) {
        column *c = &r->cols[i];
        const chunk *ch = &rg->chunks[r->sel[i]];
        c->ch = ch;
        c->values = c->page_left = 0;
        c->has_dict = false;
        c->rows.n = 0;
        c->rows.data.len = 0;
        memset(c->rows.nl, 0, sizeof c->rows.nl);
        c->prev.len = 0;
        c->rows_seen = 0;
        c->chunk_done = false;
        c->lost_page = c->dict_lost = false;
        c->n_lost = 0;
        c->lost_why[0] = '\0';
        c->total = c->lf->max_rep ? ch->num_values : rg->num_rows;
        if (c->lf->info.type == SL_PQ_UNSUPPORTED)
            return sl_fail(SL_ERR_DECODE, "Parquet file '%s', column '%s': %s", r->path, c->lf->info.name,
                           c->lf->info.unsupported);
        if (!ch->has_meta)
            return corrupt(c, "column chunk has no metadata");
        if (ch->external)
            return corrupt(c, "column chunk stored in another file is not supported");
        if (ch->type != c->lf->physical)
            return corrupt(c, "column chunk type %d differs from the schema's %d", ch->type, c->lf->physical);
        /* LZO is a real codec (old Hadoop writers) no library here reads:
         * say so and what to do, unlike a number no writer uses. */
        if (ch->codec == SL_PQ_LZO)
            return corrupt(c, "LZO compression is not supported: rewrite the file with zstd, snappy or gzip");
        if (ch->codec != SL_PQ_UNCOMPRESSED && ch->codec != SL_PQ_SNAPPY && ch->codec != SL_PQ_GZIP &&
            ch->codec != SL_PQ_ZSTD && ch->codec != SL_PQ_BROTLI && ch->codec != SL_PQ_LZ4 &&
            ch->codec != SL_PQ_LZ4_RAW)
            return corrupt(c, "unknown compression codec %d (corrupt footer?)", ch->codec);
        if (c->lf->max_rep ? ch->num_values < rg->num_rows : ch->num_values != rg->num_rows)
            return corrupt(c, "column chunk holds %lld values for %lld rows", (long long)ch->num_values,
                           (long long)rg->num_rows);
        shrink_rows(c); /* what the row group before left after a long row */
        int64_t start = ch->data_page_offset;
        if (ch->dict_page_offset > 0 && ch->dict_page_offset < start)
            start = ch->dict_page_offset;
        if (start < 4 || start > r->data_end || ch->total_compressed <= 0 ||
            ch->total_compressed > r->data_end - start)
            return corrupt(c, "column chunk (offset %lld, %lld bytes) lies outside the file's %lld data bytes "
                           "(truncated or corrupt file)", (long long)start, (long long)ch->total_compressed,
                           (long long)r->data_end);
        c->next = start;
        c->end = start + ch->total_compressed;
        c->ahead.len = 0;
    }
    return read_span(r);
}

/* Column i's pending rows as the batch's first k rows. */
static void publish(sl_pq_reader *r, size_t i, size_t k)
{
    const column *c = &r->cols[i];
    sl_pq_vector *pv = &r->pubs[i];
    memset(pv, 0, sizeof *pv);
    pv->info = &c->lf->info;
    pv->valid = c->rows.valid;
    pv->defs = c->rows.defs;
    pv->lost = c->lost;
    for (pv->n_lost = 0; pv->n_lost < c->n_lost && c->lost[2 * pv->n_lost] < (int64_t)k; pv->n_lost++)
        ;
    pv->lost_why = pv->n_lost ? c->lost_why : NULL;
    switch (c->lf->info.type) {
    case SL_PQ_BOOL: pv->b = c->rows.fixed; break;
    case SL_PQ_INT32: pv->i32 = (const int32_t *)(void *)c->rows.fixed; break;
    case SL_PQ_INT64: pv->i64 = (const int64_t *)(void *)c->rows.fixed; break;
    case SL_PQ_FLOAT: pv->f32 = (const float *)(void *)c->rows.fixed; break;
    case SL_PQ_DOUBLE: pv->f64 = (const double *)(void *)c->rows.fixed; break;
    default:
        pv->offsets = c->rows.offsets;
        pv->data = c->rows.data.data ? c->rows.data.data : (const uint8_t *)"";
    }
    if (c->lf->max_rep) {
        pv->list_offsets = c->rows.lofs[0];
        pv->list_valid = c->rows.lvalid[0];
        pv->list_defs = c->rows.ldefs[0];
    }
    for (int d = 1; d < c->lf->max_rep; d++) {
        pv->nest_offsets[d - 1] = c->rows.lofs[d];
        pv->nest_valid[d - 1] = c->rows.lvalid[d];
        pv->nest_defs[d - 1] = c->rows.ldefs[d];
    }
}

/* Columns in the same list must agree on each row's list (the same nulls
 * and lengths), and at each depth below on the lists they share, or the
 * file is corrupt. Each column is compared, depth by depth, with the first
 * one before it that shares its lists down to that depth. */
static sl_status check_lists_agree(sl_pq_reader *r, size_t k)
{
    for (size_t i = 0; i < r->nsel; i++) {
        const column *a = &r->cols[i];
        size_t n = k; /* a's lists at depth d in the first k rows */
        for (int d = 0; d < a->lf->max_rep; d++) {
            const column *b = NULL;
            for (size_t j = 0; j < i && !b; j++) {
                const column *o = &r->cols[j];
                bool shared = o->lf->max_rep > d;
                for (int e = 0; shared && e <= d; e++)
                    shared = o->lf->list_node[e] == a->lf->list_node[e];
                if (shared)
                    b = o;
            }
            if (!b)
                break;
            if (memcmp(a->rows.lofs[d], b->rows.lofs[d], (n + 1) * sizeof(int64_t)) != 0 ||
                memcmp(a->rows.lvalid[d], b->rows.lvalid[d], n) != 0)
                return corrupt(a, "its lists differ from those of column '%s' in the same list (rows %lld to "
                               "%lld)", b->lf->info.name, (long long)r->rg_done,
                               (long long)(r->rg_done + (int64_t)k - 1));
            n = (size_t)a->rows.lofs[d][n];
        }
    }
    return SL_OK;
}

sl_status sl_pq_reader_next(sl_pq_reader *r, const sl_pq_batch **out)
{
    *out = NULL;
    for (size_t i = 0; i < r->nsel && r->rg_open; i++) {
        drop_rows(&r->cols[i], r->taken);
        shrink_rows(&r->cols[i]);
    }
    r->taken = 0;
    for (;;) {
        if (r->rg >= r->nrgs)
            return SL_OK;
        if (!r->rg_open) {
            if (r->rgs[r->rg].num_rows == 0) {
                r->rg++;
                continue;
            }
            r->rg_done = 0;
            sl_status st = open_row_group(r);
            if (st != SL_OK) {
                r->rg++;
                return st;
            }
            r->rg_open = true;
        }
        if (r->rg_done < r->rgs[r->rg].num_rows)
            break;
        r->rg_open = false;
        r->rg++;
    }
    int64_t num_rows = r->rgs[r->rg].num_rows, left = num_rows - r->rg_done;
    size_t want = left < (int64_t)r->p.batch_rows ? (size_t)left : r->p.batch_rows, k = want;
    for (size_t i = 0; i < r->nsel; i++) {
        column *c = &r->cols[i];
        sl_status st = c->lf->max_rep ? fill_list(c, want) : fill(c, want);
        if (st != SL_OK) {
            r->rg_open = false;
            r->rg++;
            return st;
        }
        size_t fit = rows_that_fit(c);
        if (fit < k)
            k = fit;
    }
    sl_status st = check_lists_agree(r, k);
    if (st != SL_OK) {
        r->rg_open = false;
        r->rg++;
        return st;
    }
    for (size_t i = 0; i < r->nsel; i++)
        publish(r, i, k);
    r->batch.row_group = r->rg;
    r->batch.num_rows = (int64_t)k;
    r->batch.num_columns = r->nsel;
    r->batch.columns = r->pubs;
    r->batch.first_row = r->rg_done;
    r->rg_done += (int64_t)k;
    r->taken = k;
    *out = &r->batch;
    return SL_OK;
}

void sl_pq_reader_free(sl_pq_reader *r)
{
    if (!r)
        return;
    sl_ranged_free(r->io);
    sl_buf_free(&r->span);
    for (size_t i = 0; r->leaves && i < r->nleaves; i++)
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
    for (size_t i = 0; r->cols && i < r->nsel; i++)
        column_free(&r->cols[i]);
    sl_free(r->sel);
    sl_free(r->cols);
    sl_free(r->pubs);
    ZSTD_freeDCtx(r->zstd);
    sl_free(r->created_by);
    sl_free(r->path);
    sl_free(r);
}

bool sl_pq_vector_lost(const sl_pq_vector *v, int64_t row)
{
    for (size_t j = 0; j < v->n_lost && v->lost[2 * j] <= row; j++)
        if (row < v->lost[2 * j + 1])
            return true;
    return false;
}

/* ---- checks for tests and fuzzing -------------------------------------- */

sl_status sl_pq_footer_check(const uint8_t *data, size_t len)
{
    sl_pq_reader *r = reader_new("(footer)", NULL);
    if (!r)
        return sl_fail(SL_ERR_NOMEM, "out of memory checking a Parquet footer");
    sl_status st = parse_footer(r, data, len);
    sl_pq_reader_free(r);
    return st;
}

sl_status sl_pq_page_header_check(const uint8_t *data, size_t len)
{
    page_header h;
    size_t used;
    if (!parse_page_header(data, len, &h, &used) || used > len)
        return sl_fail(SL_ERR_DECODE, "corrupt Parquet page header");
    return SL_OK;
}
