/* io/columns.h — the pass-through columns of an output: which input columns
 * (JSON values from the source) become output fields, under which names, and
 * with which Parquet types. A name equal to one of the output's own fields is
 * written as "input_<name>" (repeated until free), so input data never
 * clobbers ours. Types come from an input's schema where it has one
 * (sl_columns_input_type; a DECIMAL stays one, of its precision and scale),
 * else from sample rows: all integers -> int64, numbers
 * -> double, all booleans -> bool, all arrays -> a list of what their
 * elements widen to, all objects -> a struct of every key seen (each field
 * widened alike), or a map of string keys to what their values widen to
 * when the keys are more than 64 in all or one is empty;
 * anything else or a mix -> string (JSON text for arrays and objects); a
 * column never seen with a value -> string. A nested column past 4 lists
 * (or maps) deep, 8 levels or 256 leaves is a string too. One thread. The
 * columns own copies of every name and shape. */
#ifndef SL_IO_COLUMNS_H
#define SL_IO_COLUMNS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "io/parquet_write.h"
#include "sluice/status.h"

typedef struct sl_columns sl_columns;

/* reserved: the output's own field names (n). declared: NULL to take every
 * column seen in samples (in order of first sight), or the columns to keep
 * (n_declared), in that order, each "NAME" (typed from samples) or
 * "NAME:TYPE" as sl_columns_input_spec reads it (samples leave the type as
 * it is: "meta:string" keeps every value, as its JSON text where not a
 * string). SL_ERR_INVALID_ARG naming a declared column whose shape is not
 * one. */
sl_status sl_columns_new(const char *const *reserved, size_t n_reserved,
                         const char *const *declared, size_t n_declared, sl_columns **out);

/* Widens the types with one sample row's columns (an object; NULL is skipped). */
sl_status sl_columns_sample(sl_columns *c, const json_t *extra);

size_t sl_columns_count(const sl_columns *c);
/* True when the columns were declared: only they pass, in that order. */
bool sl_columns_declared(const sl_columns *c);
const char *sl_columns_input_name(const sl_columns *c, size_t i);
/* The output name (after the collision rule). */
const char *sl_columns_output_name(const sl_columns *c, size_t i);
sl_pq_type sl_columns_type(const sl_columns *c, size_t i);
/* Column i's nested shape (owned by c until the next sample or free; a
 * decimal column's is one leaf, the writer's way to a DECIMAL), or NULL
 * for a flat column (sl_columns_type says its type); NULL too when out of
 * memory (sl_last_error() says so), the column then written flat as its
 * JSON text. */
const sl_pq_node *sl_columns_shape(const sl_columns *c, size_t i);

/* The output name for an input column of `row` (NULL: none) when writing
 * JSONL, where every column passes (no sampling); written into buf. A renamed
 * name also avoids the row's other columns and the planned ones. */
const char *sl_columns_rename(const sl_columns *c, const char *input_name, const json_t *row,
                              char *buf, size_t len);

/* Column i's value in a row's columns (extra), borrowed; NULL when absent.
 * A declared column whose name is no column of the row but a dotted path
 * into a struct's fields (--columns objects.category) takes the value
 * there (core/json.h's sl_json_column). */
const json_t *sl_columns_value(const sl_columns *c, size_t i, const json_t *extra);

/* The cell of column i for the Parquet row: null when absent or of another
 * type than the column's (a string column takes any value as JSON text); a
 * nested column's is the value itself (.json, borrowed from extra).
 * *owned is what the cell points into (free with sl_free) or NULL. */
sl_pq_value sl_columns_cell(const sl_columns *c, size_t i, const json_t *extra, char **owned);
/* The same for column i's value v, looked up already (sl_columns_value). */
sl_pq_value sl_columns_value_cell(const sl_columns *c, size_t i, const json_t *v, char **owned);

/* Whether the Parquet writer writes v (column i's value in a row; NULL or
 * null: yes) whole: false when a part of it is not of the column's type
 * (written as null there) or an object has a key its struct lacks (not
 * written), and then why[0..why_len) says where and what, e.g.
 * "[2].score: a string where it holds double". */
bool sl_columns_fits(const sl_columns *c, size_t i, const json_t *v, char *why, size_t why_len);

/* A stage's column as it declares it: "NAME", or "NAME:TYPE" with TYPE
 * one of string, int64, double, bool, decimal(P,S) (*type SL_PQ_DECIMAL;
 * P of 1..38, S of 0..P, spaces around them allowed) or a nested column's
 * shape as JSON (io/parquet_shape.h: `tags:{"list":"string"}`; *type is
 * then string). *name_len: NAME's length; *typed: a type was given (in
 * *type). SL_ERR_INVALID_ARG naming the column when NAME is empty or TYPE
 * is none of those. */
sl_status sl_columns_stage_spec(const char *spec, size_t *name_len, bool *typed,
                                sl_pq_type *type);

/* A declared input column (--columns): as sl_columns_stage_spec, but a
 * name may hold ':' (EXIF's "exif:Model"): the type is what follows the
 * first ':' that a shape ('{') follows, else the last ':' when a type name
 * or "decimal(" follows it (spaces after the ':' skipped), else there is none and the
 * whole spec is the name. SL_ERR_INVALID_ARG for a shape that is not one
 * or an empty name before a type. */
sl_status sl_columns_input_spec(const char *spec, size_t *name_len, bool *typed, sl_pq_type *type);

/* Adds a stage's column (spec as for sl_columns_stage_spec: its values are
 * set during the run, so no sample saw them) when it is not there yet,
 * declared columns or not. Its Parquet type (or shape) is the one the spec
 * gives (an input column of that name takes it too), else string unless
 * samples widened it. */
sl_status sl_columns_add(sl_columns *c, const char *spec);

/* Column `name` (an input column) holds values of `shape` as its input's
 * schema declares it (a Parquet or Arrow file's: sl_source_column_types):
 * it takes that type whatever the samples say, unless it was declared with
 * a type of its own (--columns NAME:TYPE). It is added when not there yet
 * and the columns are not declared; when they are and it is not one of
 * them, nothing changes. A shape past the limits above leaves the
 * column's type to its samples. shape is copied. SL_ERR_NOMEM only. */
sl_status sl_columns_input_type(sl_columns *c, const char *name, const sl_pq_node *shape);

void sl_columns_free(sl_columns *c);

#endif
