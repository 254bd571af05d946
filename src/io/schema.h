/* io/schema.h — an output's row schema: the columns every sink writes, in
 * order, with their names and types, so JSONL, Parquet, the run report and
 * the live page agree on one definition (the caption job's is in
 * job/schema.c). A schema is three lists: `head`, the job's own columns
 * (its fields and its task answers); the input's pass-through columns
 * (io/columns.h); `tail`, columns after those (image_bytes). A row is one
 * cell per head and tail column plus the input's pass-through object.
 * Ownership: a schema borrows everything it points to, which must outlive
 * it and every sink opened with it. Read-only once built: any thread. */
#ifndef SL_IO_SCHEMA_H
#define SL_IO_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "io/columns.h"
#include "io/parquet_write.h"

typedef struct sl_schema_column {
    const char *name;
    sl_pq_type type;    /* SL_PQ_STRING cells hold bytes: sinks repair bad UTF-8 */
    bool nullable;
    const char *group;  /* JSONL: a member of the object `group` (NULL: top level);
                           Parquet: a column of its own, named `name` */
    bool omit_null;     /* JSONL: left out when null (Parquet: null) */
    bool json;          /* SL_PQ_STRING holding JSON text: JSONL writes the value
                           itself, Parquet the text (a JSON string column) */
} sl_schema_column;

typedef struct sl_schema {
    const sl_schema_column *head;
    size_t n_head;
    const sl_columns *passthrough; /* NULL: none */
    const sl_schema_column *tail;
    size_t n_tail;
} sl_schema;

/* One row: cells[0..n_head) for head, then cells[n_head..n_head+n_tail) for
 * tail; `extra` the input's pass-through object (NULL: none); `id` what
 * a message names it by. Borrowed for the call that receives it. */
typedef struct sl_schema_row {
    const sl_pq_value *cells;
    const json_t *extra;
    const char *id; /* the row's input, for messages (NULL: none) */
} sl_schema_row;

#endif
