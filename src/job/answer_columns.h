/* job/answer_columns.h — --answer-columns: the top-level properties of the
 * answers a JSON schema asks for, as columns of their own (typed in
 * Parquet, JSON values in JSONL), set on each row when its answer comes
 * back, so a stage after the engine reads them too (row.columns).
 *
 * The job's schema (--json-schema) names the columns after its
 * properties; with tasks, each task answering under a schema (its own or
 * the job's) gives NAME_PROPERTY. A property's type: "string" string,
 * "integer" int64, "number" double, "boolean" bool, an enum the type all
 * its values share, anything else a string of its JSON text; a type list
 * with "null" is its other type. A row whose answer failed, or lacks the property, has null
 * there. An input column of a planned column's name passes as
 * "input_<name>", as one of an output's own fields does (io/columns.h), so
 * an answer never replaces input data. Planned once by the job's thread; read-only after (the engine
 * stage's workers fill rows with it). The plan owns its strings. */
#ifndef SL_JOB_ANSWER_COLUMNS_H
#define SL_JOB_ANSWER_COLUMNS_H

#include <jansson.h>

#include "job/schema.h"
#include "sluice/caption.h"

typedef struct answer_column {
    char *name;      /* the output column */
    char *spec;      /* "NAME:TYPE", as a stage declares a column (io/columns.h) */
    char *property;  /* in the answer's object */
    int task;        /* the task whose answer it reads (0 without tasks) */
} answer_column;

typedef struct answer_columns {
    answer_column *cols;
    int n;
} answer_columns;

/* The columns p asks for (none without answer_columns). SL_ERR_INVALID_ARG
 * naming what to change: no schema, a schema whose root is not an object
 * with properties, a dry run, a batch file. (With --samples or
 * --rows-per-task an output row's columns are those of the answers it
 * holds: job/stage_write.c.) */
sl_status answer_columns_plan(const sl_caption_params *p, answer_columns *out);

/* SL_ERR_INVALID_ARG naming the property when a column's name is one of
 * the output's own (caption, error, a task's NAME_finish_reason, ...) in
 * the planned schema s. */
sl_status answer_columns_free_of(const answer_columns *ac, const caption_schema *s);

/* Sets the columns of one answer (JSON text, that of task `task`) into
 * *extra (an object, made when NULL): each property the answer has, as
 * its JSON value. An answer that is not a JSON object sets nothing.
 * SL_ERR_NOMEM. */
sl_status answer_columns_fill(const answer_columns *ac, int task, const char *answer,
                              json_t **extra);

/* The name input column `name` of a row whose columns are row (NULL when
 * not known) passes under (sl_free): name, or where a planned column has
 * it "input_" prefixed while a planned column or another of row's columns
 * has it. NULL when out of memory. */
char *answer_columns_input_name(const answer_columns *ac, const char *name, const json_t *row);

/* Moves each of extra's columns (an object, or NULL) that a planned column
 * has to its answer_columns_input_name, before any answer is set (once a
 * row: after, the names hold answers). SL_ERR_NOMEM. */
sl_status answer_columns_make_room(const answer_columns *ac, json_t *extra);

/* Removes every planned column from extra (an object). */
void answer_columns_drop(const answer_columns *ac, json_t *extra);

void answer_columns_clear(answer_columns *ac);

#endif
