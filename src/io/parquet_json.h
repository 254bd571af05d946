/* io/parquet_json.h — a Parquet row's nested columns put back together as
 * JSON from their leaves (io/parquet_read.h's vectors of one batch): a list
 * is an array of its elements, a struct (a list's element, or a column)
 * an object of its fields (named by the dotted parts of the leaves' names
 * below it), a list inside an element an array again, a MAP an object when
 * its keys are strings (else an array of {"key", "value"} objects). A null
 * list is null, and so is a null struct, told by the definition level of
 * one of its leaves' values or, for a struct of lists alone, of their
 * lists. The caller owns the JSON returned; nothing is kept. */
#ifndef SL_IO_PARQUET_JSON_H
#define SL_IO_PARQUET_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "io/parquet_read.h"
#include "sluice/status.h"

/* The JSON of element k of v's values (v->valid[k] == 0: null); NULL only
 * when out of memory. */
typedef json_t *(*sl_pq_json_value_fn)(const sl_pq_vector *v, int64_t k);

/* The JSON of element k of v's values as sluice passes a value through: a
 * number, bool or string (invalid UTF-8 repaired), null when v->valid says
 * so and for binary and other types. NULL only when out of memory. */
json_t *sl_pq_value_json(const sl_pq_vector *v, int64_t k);

/* Row `row` of the n leaves `cols` of one batch that make one nested
 * column: all named below its name, their first `prefix` bytes (an
 * outermost list's: info->list_len; a struct's, outside any list:
 * info->group_len[0]). That column's value; NULL when out of memory. */
json_t *sl_pq_column_json(const sl_pq_vector *const *cols, size_t n, size_t prefix, int64_t row,
                          sl_pq_json_value_fn value);

/* *out = the shape (io/parquet_shape.h's JSON, the caller's) of what
 * sl_pq_column_json makes of the n leaves `cols` of one nested column (as
 * there): {"list": ...} or {"map": ...} around a leaf type, a struct (its
 * fields in the leaves' order) or another list, walked as
 * sl_pq_column_json walks the values; a part that is always null there (no
 * leaf reaches it) is left out of its struct, or is "string" as a list's
 * element (a field's name may hold a '.'). *out NULL when no leaf reaches the column.
 * SL_ERR_NOMEM only. */
sl_status sl_pq_column_shape(const sl_pq_column_info *const *cols, size_t n, size_t prefix, json_t **out);

/* The leaf type name (io/parquet_shape.h) sl_pq_value_json's values of a
 * `type` column take: "int64" for INT32 and INT64, "double" for FLOAT and
 * DOUBLE, "bool", "string"; NULL for a type whose values are always null. */
const char *sl_pq_leaf_shape(sl_pq_type type);

/* Whether row `row` of v is inside a null group: the one named by the
 * first `len` bytes of v's name, or one above it; told by the row's value
 * (a leaf in no list) or by the row's list (a leaf in one: a struct that
 * holds the list). False where v carries no definition levels or has no
 * such group. */
bool sl_pq_in_null_group(const sl_pq_vector *v, int64_t row, size_t len);

#endif
