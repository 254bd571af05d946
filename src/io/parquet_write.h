/* io/parquet_write.h — writes a Parquet file: columns string (BYTE_ARRAY
 * + STRING/UTF8), binary, int64, double, bool, each required or optional,
 * and nested columns (lists and structs of these and of decimals,
 * FIXED_LEN_BYTE_ARRAY + DECIMAL(precision, scale), any depth, every node
 * optional: the LIST form pyarrow writes; a shape that is one leaf is an
 * optional flat column) filled from JSON values; data
 * pages v1, values dictionary-encoded (PLAIN_DICTIONARY, as format 1.0
 * names it: a dictionary page per column chunk) where that is smaller,
 * else PLAIN, RLE repetition and
 * definition levels, a page always starting a row; codec none, snappy, gzip
 * or zstd; row groups cut at a target of buffered (uncompressed) bytes, with
 * min/max (min_value/max_value) and null_count statistics, key-value metadata
 * and created_by. Writes `path` exactly as given (no temporary name): callers
 * wanting atomic output write elsewhere and rename after close. Memory holds
 * one row group, and per leaf column its open page and dictionary (at most
 * SL_PQ_DICT_MAX_BYTES of entries and their hash index). One thread per
 * writer. sl_pq_writer_free() accepts NULL and, on an unclosed writer,
 * removes the partial file. */
#ifndef SL_IO_PARQUET_WRITE_H
#define SL_IO_PARQUET_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/parquet_format.h"
#include "sluice/status.h"

typedef struct sl_pq_writer sl_pq_writer;

/* A nested column's shape, a tree: a leaf of a type, a list of elements
 * (written as `optional group NAME (LIST) { repeated group list { optional
 * ELEMENT element } }`), a struct of named fields, or a map of string keys
 * (a JSON object whatever its keys: `optional group NAME (MAP) { repeated
 * group key_value { required binary key (STRING); optional VALUE value }
 * }`, as pyarrow writes map<string, V>). The writer copies it. */
typedef enum { SL_PQ_NODE_LEAF, SL_PQ_NODE_LIST, SL_PQ_NODE_STRUCT, SL_PQ_NODE_MAP } sl_pq_node_kind;

typedef struct sl_pq_node {
    sl_pq_node_kind kind;
    sl_pq_type type;                        /* LEAF: SL_PQ_STRING, INT64, DOUBLE, BOOL or DECIMAL */
    const struct sl_pq_node *element;       /* LIST: the elements; MAP: the values */
    const char *const *names;               /* STRUCT: its fields' names (UTF-8, unique; a '.' is fine) */
    const struct sl_pq_node *const *fields; /* STRUCT: its fields, n_fields >= 1 */
    size_t n_fields;
    int precision, scale;                   /* LEAF of SL_PQ_DECIMAL (sl_pq_decimal_valid) */
} sl_pq_node;

/* Lists (and maps) nested in a column at most (what io/parquet_read.h
 * reads back). */
#define SL_PQ_WRITE_MAX_LISTS 4

typedef struct sl_pq_column_def {
    const char *name; /* UTF-8, unique; copied */
    sl_pq_type type;  /* SL_PQ_STRING .. SL_PQ_BOOL (a decimal: a shape's leaf) */
    bool nullable;    /* optional (may hold nulls) or required */
    /* Non-NULL: a nested column of this shape (optional; type and nullable
     * are not used), its cells given as JSON (sl_pq_value.json). */
    const sl_pq_node *nested;
} sl_pq_column_def;

/* A column chunk's dictionary at most (its PLAIN entries), as Arrow's
 * dictionary_pagesize_limit. */
#define SL_PQ_DICT_MAX_BYTES (1 << 20)

typedef struct sl_pq_writer_params {
    sl_pq_codec codec;        /* default SL_PQ_ZSTD */
    int64_t row_group_bytes;  /* cut a row group past this many buffered bytes; default 64 MiB */
    int64_t page_bytes;       /* cut a data page past this many value bytes (as PLAIN); default 1 MiB */
    /* Dictionary-encode string, int64 and double columns (not binary: image
     * bytes never repeat) while a column chunk's dictionary stays under
     * SL_PQ_DICT_MAX_BYTES and its first page holding values comes out
     * smaller so (that page decides for the chunk); the rest of a chunk
     * whose dictionary fills up is PLAIN. Default true. */
    bool dictionary;
    const char *created_by;   /* default "sluice version <v>"; copied */
} sl_pq_writer_params;

sl_pq_writer_params sl_pq_writer_default_params(void);

/* One value per column in a row. Bytes are copied during the call. */
typedef struct sl_pq_value {
    bool is_null;
    bool b;           /* SL_PQ_BOOL */
    int64_t i64;      /* SL_PQ_INT64 */
    double f64;       /* SL_PQ_DOUBLE */
    const void *ptr;  /* SL_PQ_STRING (valid UTF-8), SL_PQ_BINARY */
    size_t len;
    /* A nested column's value (NULL: null), borrowed for the call. Where a
     * part of it does not fit the shape it is null: a string where a list
     * is, an object's keys the struct lacks; an integer fits a double leaf,
     * and any value a string leaf (as its compact JSON text). */
    const struct json_t *json;
} sl_pq_value;

/* *out = v (NULL or JSON null: a null cell) as a cell of a `type` column:
 * null where it does not fit (an integer fits a double); a string or binary
 * column takes any value, a non-string as its compact JSON text, and a
 * string column's invalid UTF-8 is repaired; a decimal column takes a
 * number as its text (a decimal's exact text, sl_json_decimal; a real's
 * shortest) and a string as it is ("12.50"), the writer then checking it
 * against the column's precision and scale (a string that is no number
 * is null there). *owned: what out points into (free with sl_free), or NULL.
 * false: out of memory (*out null). */
bool sl_pq_value_from_json(sl_pq_type type, const struct json_t *v, sl_pq_value *out, char **owned);

/* Creates (truncates) `path`. SL_ERR_INVALID_ARG for a bad schema or params,
 * SL_ERR_IO when the file cannot be created. */
sl_status sl_pq_writer_open(const char *path, const sl_pq_column_def *columns, size_t num_columns,
                            const sl_pq_writer_params *params, sl_pq_writer **out);

/* Adds a key-value pair to the footer (copied); a later equal key replaces it. */
sl_status sl_pq_writer_set_metadata(sl_pq_writer *w, const char *key, const char *value);

/* Appends one row: values[0..num_columns). SL_ERR_INVALID_ARG for a null in a
 * required column or invalid UTF-8 in a string column (the row is not
 * written; a nested column's strings are made valid instead);
 * SL_ERR_IO / SL_ERR_NOMEM leave the writer unusable. */
sl_status sl_pq_writer_append(sl_pq_writer *w, const sl_pq_value *values);

/* Writes the last row group and the footer, fsyncs and closes the file. */
sl_status sl_pq_writer_close(sl_pq_writer *w);

int64_t sl_pq_writer_num_rows(const sl_pq_writer *w);
/* The file's bytes so far: written, plus the open row group's values
 * before compression (an upper bound of what they will take). */
int64_t sl_pq_writer_bytes(const sl_pq_writer *w);
int64_t sl_pq_writer_num_row_groups(const sl_pq_writer *w);

void sl_pq_writer_free(sl_pq_writer *w);

/* TEST-ONLY: the bytes a page may hold, before and after compression, in
 * place of the format's INT32_MAX (0: back to it), so a test reaches the
 * limit's checks without 2 GiB of data. Process-wide; call while no writer
 * runs. */
void sl_pq_writer_test_page_limit(size_t bytes);

#endif
