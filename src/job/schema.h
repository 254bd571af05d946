/* job/schema.h — the caption job's output row, defined once: its own fields
 * (the table caption_fields, in output order) with the tasks' answers (with
 * several tasks, five columns each after `path` in place of `caption` and
 * `finish_reason`, `logprobs` when the task asks for them and `scores`
 * when it has choices; with
 * rows_per_task, a column `task`; with several answers to each image,
 * sampling.n, a row per answer with a column `sample`; a dry run's format,
 * input_bytes and jpeg_bytes after source_height), then the input's
 * pass-through columns, then image_bytes when asked for. Every sink
 * (io/sink.h), the run report and the live page read it from here. Planning
 * chooses the pass-through columns: declared (--columns) or seen in the
 * first rows, with Parquet types from those rows (io/columns.h). One thread
 * plans; the planned schema is read-only after. The job owns it and frees
 * it with caption_schema_clear() after every sink opened with it. */
#ifndef SL_JOB_SCHEMA_H
#define SL_JOB_SCHEMA_H

#include "io/columns.h"
#include "io/schema.h"
#include "io/source.h"
#include "sluice/caption.h"

/* Indices into caption_fields and into a row's cells. */
enum {
    CF_ID, CF_PATH, CF_CAPTION, CF_FINISH, CF_PROMPT_TOKENS, CF_GENERATED_TOKENS,
    CF_CACHED_TOKENS, CF_LOGPROBS, CF_SCORES, CF_WIDTH, CF_HEIGHT, CF_SOURCE_WIDTH, CF_SOURCE_HEIGHT,
    CF_IMAGE_COUNT, CF_VIDEO_FRAMES, CF_VIDEO_SECONDS, CF_MODEL, CF_SEED,
    CF_DECODE_MS, CF_QUEUE_MS, CF_PREFILL_MS, CF_ENCODE_MS, CF_TTFT_MS, CF_GENERATE_MS,
    CF_TOTAL_MS, CF_ERROR_STAGE, CF_ERROR, CF_COUNT
};

extern const sl_schema_column caption_fields[CF_COUNT];

/* A row's cells before they are laid out: caption_fields, the task name,
 * then each task's answer (TC_* of task t at CELL_ANSWER(t, k)), then
 * image_bytes. */
enum {
    TC_TEXT, TC_FINISH, TC_PROMPT_TOKENS, TC_GENERATED_TOKENS, TC_CACHED_TOKENS, TC_LOGPROBS,
    TC_SCORES, TC_COUNT
};
#define CELL_TASK CF_COUNT
#define CELL_ANSWER(t, k) (CF_COUNT + 1 + (t) * TC_COUNT + (k))
#define CELL_IMAGE_BYTES CELL_ANSWER(SL_MAX_TASKS, 0)
#define CELL_SAMPLE (CELL_IMAGE_BYTES + 1) /* with sampling.n > 1: the answer's number */
/* A dry run's (after source_height): the input's format, its encoded bytes,
 * and with engine openai the bytes of the JPEGs it would send. */
#define CELL_FORMAT (CELL_SAMPLE + 1)
#define CELL_INPUT_BYTES (CELL_SAMPLE + 2)
#define CELL_JPEG_BYTES (CELL_SAMPLE + 3)
#define CELL_COUNT (CELL_SAMPLE + 4)

/* The index of our own field `name` in caption_fields (CF_COUNT for
 * "timings" and "image_bytes", names of ours too), or -1: a name a stage
 * may give a column of its own. */
int caption_field_index(const char *name);

typedef struct caption_schema {
    sl_schema schema;           /* what sinks are opened with */
    sl_columns *cols;           /* the pass-through columns */
    sl_schema_column *head;     /* the job's columns in output order ... */
    int *head_cell;             /* ... each one's cell (CF_*, CELL_*) */
    char *names;                /* the task columns' names, back to back */
    sl_schema_column tail[1];   /* image_bytes */
} caption_schema;

/* Whether `name` may name a task: letters, digits and _, not first a
 * digit, at most 64 bytes, and (one row per image) none of its columns one
 * of the job's own. SL_ERR_INVALID_ARG says why not. */
sl_status caption_task_name_check(const char *name, bool rows_per_task);

/* Whether task i's columns (one row per image: NAME, NAME_finish_reason,
 * ...) are none of tasks 0..i-1's: task 'a_scores' beside a task 'a' with
 * choices wrote one column for two values, and one of them was lost.
 * SL_ERR_INVALID_ARG names both tasks and the column. */
sl_status caption_task_columns_check(const sl_caption_task *tasks, int i);

/* Plans the schema of job p reading src's inputs (the files src expanded
 * are read again, from the start of the whole input, through
 * sl_source_reopen, to sample the first rows' pass-through columns when
 * the output is Parquet: the same rows for every MPI rank and --input-shard
 * run, so their parts agree on the types, and no shard taken from the
 * run; src itself is not read, nor anything resolved again), with the columns the user's
 * stages set (stage_columns) after the input's. An input column that one
 * of the answer columns ac has is planned under its other name
 * (answer_columns_input_name). On failure, clear it all the same. */
struct answer_columns;
sl_status caption_schema_plan(const sl_caption_params *p, const sl_source *src,
                              const char *const *stage_columns, size_t n_stage_columns,
                              const struct answer_columns *ac, caption_schema *out);

/* The job's own columns alone, as caption_schema_plan plans them before
 * it reads any input: for the checks sl_caption_check makes before a run
 * (a name of the job's that a column may not take). On failure, clear it
 * all the same. */
sl_status caption_schema_plan_head(const sl_caption_params *p, caption_schema *out);

/* The columns as [{"name", "type"}] in output order (JSONL's nested
 * timings as "timings.decode_ms"); NULL when out of memory. */
json_t *caption_schema_json(const caption_schema *s);

void caption_schema_clear(caption_schema *s);

#endif
