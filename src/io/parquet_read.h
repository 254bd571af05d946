/* io/parquet_read.h — reads Parquet files in batches of rows: leaf columns
 * BOOLEAN, INT32, INT64, FLOAT, DOUBLE, BYTE_ARRAY (string when annotated
 * UTF8/STRING), flat or inside optional/required groups (e.g. the Hugging
 * Face image struct: `image.bytes`, `image.path`), and inside lists
 * (`images.list.element.bytes`, `tags.list.element`, the legacy 2-level
 * forms too), lists of lists up to SL_PQ_MAX_DEPTH deep and maps (a list
 * of key/value structs); PLAIN,
 * PLAIN_DICTIONARY, RLE_DICTIONARY (and RLE for booleans), DELTA_BINARY_PACKED,
 * DELTA_LENGTH_BYTE_ARRAY, DELTA_BYTE_ARRAY and BYTE_STREAM_SPLIT; data pages
 * v1 and v2; codecs none, snappy, gzip, zstd, brotli, lz4 and lz4_raw.
 * DECIMAL reads as double, INT96 as int64 nanoseconds since 1970, FLOAT16 as
 * float, UUID as string, other FIXED_LEN_BYTE_ARRAY as binary. Only selected columns are read, page by
 * page, so memory is bounded by the limits below, never by what a file
 * claims. One thread per reader. The reader owns everything it returns:
 * names and infos live until sl_pq_reader_free(); a batch lives until the
 * next sl_pq_reader_next() or free. Free accepts NULL. */
#ifndef SL_IO_PARQUET_READ_H
#define SL_IO_PARQUET_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/parquet_format.h"
#include "io/ranged.h"
#include "sluice/status.h"

typedef struct sl_pq_reader sl_pq_reader;

/* The footer (FileMetaData) may be at most this long. */
#define SL_PQ_MAX_FOOTER_BYTES (64u << 20)
/* A page header (with its statistics) may be at most this long. */
#define SL_PQ_MAX_PAGE_HEADER_BYTES (16u << 20)
/* Lists nest at most this deep (a list of lists of lists of lists). */
#define SL_PQ_MAX_DEPTH 4
/* Groups on a leaf's path the reader tells apart when null (deeper ones
 * read as there: their fields null). */
#define SL_PQ_MAX_GROUPS 16

/* Limits on what one reader holds. A count or size in a file is believed
 * only as far as the bytes behind it: buffers grow with what is really
 * decoded, and a claim past a limit is SL_ERR_DECODE naming it. */
typedef struct sl_pq_reader_params {
    size_t max_page_bytes; /* a page stored or decompressed, and a dictionary page (256 MiB) */
    size_t batch_rows;     /* rows in one batch at most, and elements (and inner lists) of a
                              list column (65536): a row whose list holds more is a batch
                              of its own (within memory_limit) */
    size_t batch_bytes;    /* a byte-array column's bytes in one batch: the batch ends before
                              they pass this, but holds at least one row (64 MiB) */
    size_t memory_limit;   /* pages, dictionaries and batches of all selected columns (1 GiB) */
    sl_ranged_params io;   /* how a remote file is read (io/ranged.h's defaults) */
    /* A data page in an encoding the reader has no decoder for (a number it
     * does not know, one its column's type cannot be in, or a dictionary
     * page's) reads as nulls, its rows listed in the vector's `lost`,
     * rather than fail the row group: its levels still give the rows (and
     * lists) their shape. false (the default): SL_ERR_DECODE, as for a
     * corrupt page. */
    bool null_undecodable;
} sl_pq_reader_params;

sl_pq_reader_params sl_pq_reader_default_params(void);

typedef struct sl_pq_column_info {
    const char *name; /* dotted path of the leaf, e.g. "image.bytes" */
    sl_pq_type type;  /* SL_PQ_UNSUPPORTED: listed, but reading it fails */
    const char *unsupported; /* why, when type is SL_PQ_UNSUPPORTED */
    bool nullable;    /* max definition level > 0 */
    int max_def;      /* the leaf's maximum definition level */
    /* A leaf inside a list; 0 otherwise. The list is named by the first
     * list_len bytes of name ("images" of "images.list.element.bytes"), its
     * elements by the first element_len ("images.list.element"; all of name
     * for a list of primitives, e.g. "tags.list.element", or "tags" for a
     * bare `repeated binary tags`). Its vectors then have list_offsets and
     * list_valid. */
    size_t list_len, element_len;
    /* The lists the leaf is in (0 none, 1 a list, 2 a list inside a list's
     * elements, ...), outermost first: list d is named by the first
     * nest_list_len[d] bytes of name, its elements by nest_element_len[d]
     * ([0] are list_len and element_len; "bbox.list.element.list.element" is
     * in "bbox" and "bbox.list.element"). Bit d of maps: list d is a MAP's
     * key/value pairs (its elements' fields `key` and `value`). */
    unsigned depth;
    size_t nest_list_len[SL_PQ_MAX_DEPTH], nest_element_len[SL_PQ_MAX_DEPTH];
    unsigned maps;
    /* The groups on the leaf's path (structs, lists, their elements),
     * outermost first, up to SL_PQ_MAX_GROUPS: group k is named by the
     * first group_len[k] bytes of name, and a value (element) whose
     * definition level is below group_def[k] is inside a null group k (or
     * one above it). */
    unsigned n_groups;
    size_t group_len[SL_PQ_MAX_GROUPS];
    int group_def[SL_PQ_MAX_GROUPS];
    bool groups_over; /* more groups than SL_PQ_MAX_GROUPS: the deepest are not listed */
    bool is_unsigned; /* SL_PQ_INT64 holding a UINT_64's bits: past INT64_MAX they read negative */
    bool is_float16;  /* SL_PQ_FLOAT holding a FLOAT16 (a half, exactly) */
    bool is_decimal;  /* SL_PQ_STRING holding a DECIMAL's exact text (sl_decimal_text's) */
    int precision, scale; /* is_decimal: the DECIMAL's (a precision of 0: the file gave none) */
} sl_pq_column_info;

/* One column of one batch. Row i is null when valid[i] == 0; null rows
 * hold 0 (or an empty byte range). Exactly one value array is set, by type.
 * A column in a list (info->list_len > 0) has list_offsets: row i holds the
 * elements [list_offsets[i], list_offsets[i + 1]) of valid and the value
 * arrays, which then count elements (valid[k] == 0: a null element, or one
 * inside a null struct element); list_valid[i] == 0 when row i's list is
 * null (no elements), 1 when it is a list, empty when its range is. Columns
 * of one list in a batch agree on both (checked: a file where they do not
 * is corrupt). In a list of lists (info->depth d > 1) list_offsets index the
 * lists of depth 1, not elements: list j of depth t (1 <= t < d) holds the
 * entries [nest_offsets[t - 1][j], nest_offsets[t - 1][j + 1]) of depth
 * t + 1 (the elements at the last depth), and nest_valid[t - 1][j] == 0 when
 * it is null; columns sharing a list agree on it too. */
typedef struct sl_pq_vector {
    const sl_pq_column_info *info;
    const uint8_t *valid;
    const uint8_t *b;        /* SL_PQ_BOOL: 0 or 1 */
    const int32_t *i32;      /* SL_PQ_INT32 */
    const int64_t *i64;      /* SL_PQ_INT64 */
    const float *f32;        /* SL_PQ_FLOAT */
    const double *f64;       /* SL_PQ_DOUBLE */
    const int64_t *offsets;  /* SL_PQ_STRING/BINARY: row i is data[offsets[i] .. offsets[i+1]) */
    const uint8_t *data;
    const int64_t *list_offsets; /* num_rows + 1, list_offsets[0] == 0; NULL when not a list */
    const uint8_t *list_valid;   /* num_rows; NULL when not a list */
    const int64_t *nest_offsets[SL_PQ_MAX_DEPTH - 1];
    const uint8_t *nest_valid[SL_PQ_MAX_DEPTH - 1];
    /* Each value's (element's) definition level, beside valid, when the
     * leaf is below a group (info->n_groups > 0); NULL otherwise. A null
     * struct and a struct whose fields are null differ only here. */
    const uint8_t *defs;
    /* Likewise each list's (beside list_valid and nest_valid): the
     * definition level of the level that began it, which tells a null list
     * from a list inside a null struct. */
    const uint8_t *list_defs;
    const uint8_t *nest_defs[SL_PQ_MAX_DEPTH - 1];
    /* Rows whose values are null because a page of theirs could not be
     * decoded (null_undecodable): n_lost ascending, disjoint ranges of the
     * batch's rows, [lost[2j], lost[2j + 1]) (the last may run past
     * num_rows); lost_why (the first such page's cause in this column
     * chunk, naming the file, row group and column) is set when n_lost is.
     * sl_pq_vector_lost asks about one row. */
    const int64_t *lost;
    size_t n_lost;
    const char *lost_why;
} sl_pq_vector;

/* Whether row `row` of v's batch is among its lost rows. */
bool sl_pq_vector_lost(const sl_pq_vector *v, int64_t row);

/* Consecutive rows of one row group (a row group gives one batch or more). */
typedef struct sl_pq_batch {
    size_t row_group;
    int64_t num_rows;            /* at least 1 */
    size_t num_columns;          /* the selected columns, in selection order */
    const sl_pq_vector *columns;
    int64_t first_row;           /* the row group's row that is row 0 here */
} sl_pq_batch;

/* Opens `path` (a local file, or an s3:// URL read by ranged GETs through
 * io/ranged.h, with the read-ahead parquet_read.c describes) and reads its
 * footer. params NULL: the defaults (a zero field
 * takes its default too). Every column is selected; one of a type sluice
 * cannot read fails only at sl_pq_reader_next(), so the others can still be
 * chosen. SL_ERR_NOT_FOUND / SL_ERR_IO when it cannot be read;
 * SL_ERR_DECODE when it is not (complete, valid) Parquet. */
sl_status sl_pq_reader_open(const char *path, const sl_pq_reader_params *params, sl_pq_reader **out);

size_t sl_pq_reader_num_columns(const sl_pq_reader *r);
const sl_pq_column_info *sl_pq_reader_column(const sl_pq_reader *r, size_t i);
/* The index of the (first) column named `name` (its dotted path), or -1. */
int sl_pq_reader_find_column(const sl_pq_reader *r, const char *name);
int64_t sl_pq_reader_num_rows(const sl_pq_reader *r);
size_t sl_pq_reader_num_row_groups(const sl_pq_reader *r);
/* The footer's key-value metadata for `key`; NULL when absent. */
const char *sl_pq_reader_metadata(const sl_pq_reader *r, const char *key);
const char *sl_pq_reader_created_by(const sl_pq_reader *r); /* "" when absent */

/* Chooses the columns later batches hold (names as in sl_pq_column_info),
 * and restarts at the first row group. names == NULL selects every column.
 * SL_ERR_NOT_FOUND names an unknown column; SL_ERR_DECODE an unreadable one. */
sl_status sl_pq_reader_select(sl_pq_reader *r, const char *const *names, size_t count);
/* The same by the columns' indexes (0 .. sl_pq_reader_num_columns - 1):
 * two leaves may share a name (struct s holding a field "x.y" and a struct
 * x with a field y are both "s.x.y"), an index names one.
 * SL_ERR_INVALID_ARG for an index past the columns. */
sl_status sl_pq_reader_select_indexes(sl_pq_reader *r, const size_t *indexes, size_t count);

/* Reads the next batch of the selected columns: *out is NULL after the last
 * (row groups without rows give none). SL_ERR_DECODE names the file, row
 * group and column of corrupt or unsupported data, or the limit a claim
 * passes; the next call then goes on at the next row group. */
sl_status sl_pq_reader_next(sl_pq_reader *r, const sl_pq_batch **out);

void sl_pq_reader_free(sl_pq_reader *r);

/* For tests and fuzzing: decodes `len` bytes as a footer (FileMetaData, its
 * schema and row groups checked as sl_pq_reader_open does), or as a page
 * header, and frees what it made. SL_ERR_DECODE when corrupt. */
sl_status sl_pq_footer_check(const uint8_t *data, size_t len);
sl_status sl_pq_page_header_check(const uint8_t *data, size_t len);

#endif
