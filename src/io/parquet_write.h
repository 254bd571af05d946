/* io/parquet_write.h — writes a flat Parquet file: columns string (BYTE_ARRAY
 * + STRING/UTF8), binary, int64, double, bool, each required or optional;
 * data pages v1, PLAIN values, RLE definition levels; codec none, snappy, gzip
 * or zstd; row groups cut at a target of buffered (uncompressed) bytes, with
 * min/max (min_value/max_value) and null_count statistics, key-value metadata
 * and created_by. Writes `path` exactly as given (no temporary name): callers
 * wanting atomic output write elsewhere and rename after close. Memory holds
 * one row group. One thread per writer. sl_pq_writer_free() accepts NULL and,
 * on an unclosed writer, removes the partial file. */
#ifndef SL_IO_PARQUET_WRITE_H
#define SL_IO_PARQUET_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/parquet_format.h"
#include "sluice/status.h"

typedef struct sl_pq_writer sl_pq_writer;

typedef struct sl_pq_column_def {
    const char *name; /* UTF-8, unique; copied */
    sl_pq_type type;  /* SL_PQ_STRING .. SL_PQ_BOOL */
    bool nullable;    /* optional (may hold nulls) or required */
} sl_pq_column_def;

typedef struct sl_pq_writer_params {
    sl_pq_codec codec;        /* default SL_PQ_ZSTD */
    int64_t row_group_bytes;  /* cut a row group past this many buffered bytes; default 64 MiB */
    int64_t page_bytes;       /* cut a data page past this many value bytes; default 1 MiB */
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
} sl_pq_value;

/* Creates (truncates) `path`. SL_ERR_INVALID_ARG for a bad schema or params,
 * SL_ERR_IO when the file cannot be created. */
sl_status sl_pq_writer_open(const char *path, const sl_pq_column_def *columns, size_t num_columns,
                            const sl_pq_writer_params *params, sl_pq_writer **out);

/* Adds a key-value pair to the footer (copied); a later equal key replaces it. */
sl_status sl_pq_writer_set_metadata(sl_pq_writer *w, const char *key, const char *value);

/* Appends one row: values[0..num_columns). SL_ERR_INVALID_ARG for a null in a
 * required column or invalid UTF-8 in a string column (the row is not
 * written); SL_ERR_IO / SL_ERR_NOMEM leave the writer unusable. */
sl_status sl_pq_writer_append(sl_pq_writer *w, const sl_pq_value *values);

/* Writes the last row group and the footer, fsyncs and closes the file. */
sl_status sl_pq_writer_close(sl_pq_writer *w);

int64_t sl_pq_writer_num_rows(const sl_pq_writer *w);
/* The file's bytes so far: written, plus the open row group's values
 * before compression (an upper bound of what they will take). */
int64_t sl_pq_writer_bytes(const sl_pq_writer *w);
int64_t sl_pq_writer_num_row_groups(const sl_pq_writer *w);

void sl_pq_writer_free(sl_pq_writer *w);

#endif
