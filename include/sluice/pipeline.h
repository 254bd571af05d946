/* sluice/pipeline.h — the caption job as a pipeline a program assembles:
 * the built-in stages in their order, and the program's own stages at the
 * three places between them:
 *
 *   read -> [stages] -> decode -> [stages] -> engine -> [stages] -> write
 *
 * sl_caption_run() is this pipeline with no stages of the caller's. A
 * program's stage is a map stage of the executor (sluice/executor.h) with
 * its own workers and batch size: init() once per worker (the state it makes
 * lives as long as the worker: load a word list, open a file, keep a
 * counter), process() a batch of rows in place, close() once per worker. It
 * reads and changes rows through the sl_pipeline_row_*() calls, may fail a
 * row (sl_row_fail: written with its error, error_stage = the stage's name)
 * or drop it (sl_row_drop: not written, but recorded as done in the resume
 * ledger, so a rerun skips it). Failed and dropped rows skip later stages.
 *
 * Ownership: sl_pipeline_new() borrows params, which must outlive the
 * pipeline; stage definitions are copied (their names too), their config
 * borrowed until sl_pipeline_free(). Thread rules: build, run and free from
 * one thread; a stage's functions run on its worker threads, each worker's
 * calls on one thread; the row calls only inside process(), on its rows. */
#ifndef SLUICE_PIPELINE_H
#define SLUICE_PIPELINE_H

#include <stddef.h>
#include "caption.h"
#include "executor.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_pipeline sl_pipeline;

/* The built-in stages, in the order they must be added. */
typedef enum sl_pipeline_builtin {
    SL_PIPELINE_READ,   /* the inputs as rows (resume skips rows done before) */
    SL_PIPELINE_DECODE, /* fetch and decode the image */
    SL_PIPELINE_ENGINE, /* the model: the answer */
    SL_PIPELINE_WRITE,  /* the output parts and the resume ledger */
} sl_pipeline_builtin;

typedef struct sl_pipeline_stage_params {
    const char *name; /* unique in the pipeline, UTF-8; names the stage in stats and errors */
    int workers;      /* >= 1 (default 1) */
    int batch_size;   /* rows per process() call at most, >= 1 (default 16) */
    void *config;     /* handed to init() */
    /* Optional: once per worker; *state goes to process() and close(). */
    sl_status (*init)(void *config, int worker, void **state);
    /* Required: n rows in place. A non-OK return fails the batch's rows and
     * ends the run (the stage is not restarted). */
    sl_status (*process)(void *state, sl_row *const *rows, size_t n);
    /* Optional: once per worker that init() started, whatever ended the run. */
    void (*close)(void *state, sl_exec_end end);
    /* Columns the stage sets (sl_pipeline_row_set_column_*), for outputs
     * whose columns are planned before the run: "NAME" (Parquet: a string
     * column, JSON text for values that are not strings) or "NAME:TYPE",
     * TYPE string, int64, double or bool (a value of another type is
     * written as null). Copied. */
    const char *const *columns;
    size_t n_columns;
} sl_pipeline_stage_params;

sl_pipeline_stage_params sl_pipeline_stage_default_params(void);

/* A pipeline for the job `params` with no stage yet. SL_ERR_NOMEM. The
 * parameters are checked by sl_pipeline_run(). */
sl_status sl_pipeline_new(const sl_caption_params *params, sl_pipeline **out);

/* Appends the built-in stage `which`. SL_ERR_INVALID_ARG when it is not the
 * next in order (read, decode, engine, write: each once). */
sl_status sl_pipeline_add_builtin(sl_pipeline *pl, sl_pipeline_builtin which);

/* Appends the caller's stage after the stages added so far: after read and
 * before write. SL_ERR_INVALID_ARG (the message says why) for another place,
 * no process(), a name taken or empty, workers or batch_size below 1. */
sl_status sl_pipeline_add_stage(sl_pipeline *pl, const sl_pipeline_stage_params *stage);

/* Runs the job once (as sl_caption_run() does: returns and summary are
 * its). SL_ERR_INVALID_ARG when a built-in stage is missing or it ran, and
 * for a dry run (params->dry_run) with a stage of the caller's after the
 * engine: the engine stage is left out, so it would get no answers. */
sl_status sl_pipeline_run(sl_pipeline *pl, sl_caption_summary *summary);

/* Accepts NULL. */
void sl_pipeline_free(sl_pipeline *pl);

/* --- a row, inside a stage's process() ----------------------------------------- */

/* The row id and the file or URL read (NULL when the bytes came with it). */
const char *sl_pipeline_row_id(const sl_row *row);
const char *sl_pipeline_row_path(const sl_row *row);
/* The row's own prompt (NULL: the job's). Set it before the engine, in a
 * job without tasks; copied. SL_ERR_INVALID_ARG after the engine or with
 * tasks (the write would change nothing), SL_ERR_NOMEM. */
const char *sl_pipeline_row_prompt(const sl_row *row);
sl_status sl_pipeline_row_set_prompt(sl_row *row, const char *prompt);
/* The image as decoded; 0 before decode. */
int sl_pipeline_row_width(const sl_row *row);
int sl_pipeline_row_height(const sl_row *row);
/* A video's frames taken and duration in seconds (docs/inputs.md,
 * "Videos"): true after decode for a video, false for an image or before
 * decode (then *frames and *seconds are 0). */
bool sl_pipeline_row_video(const sl_row *row, int *frames, double *seconds);
/* How many images a row's input listed (docs/inputs.md, "Several images a
 * row"); 0 for a row of one image or a video. */
int sl_pipeline_row_image_count(const sl_row *row);
/* The engine's answer (the caption); NULL before the engine. Replace it
 * after the engine (copied); SL_ERR_INVALID_ARG before, SL_ERR_NOMEM. */
const char *sl_pipeline_row_answer(const sl_row *row);
sl_status sl_pipeline_row_set_answer(sl_row *row, const char *text);

/* With tasks (sl_caption_params.tasks): task `task`'s answer (with
 * --samples, its first), NULL before the engine or for a name that is not
 * one of the job's tasks (the plain answer above is then NULL). Replace it
 * after the engine (copied): SL_ERR_INVALID_ARG before it or for another
 * name, SL_ERR_NOMEM. */
const char *sl_pipeline_row_task_answer(const sl_row *row, const char *task);
sl_status sl_pipeline_row_set_task_answer(sl_row *row, const char *task, const char *text);

/* Every answer of the row, in order: its tasks' (sl_caption_params.tasks)
 * or its samples' (sampling.n > 1; with both, task t's answer k at t * N
 * + k), else the one answer; 0 before the engine.
 * sl_pipeline_row_answer_at(row, k): answer k (NULL past them). */
int sl_pipeline_row_answer_count(const sl_row *row);
const char *sl_pipeline_row_answer_at(const sl_row *row, int k);

/* The answer's log-probabilities (sampling.logprobs; JSON text as in
 * sl_result.logprobs), or with `task` that task's; NULL before the engine,
 * when they were not asked for, or for a name that is not a task. */
const char *sl_pipeline_row_logprobs(const sl_row *row, const char *task);

/* The answer's choice scores (--choices; JSON text as in sl_result.scores),
 * or with `task` that task's; NULL as for sl_pipeline_row_logprobs. */
const char *sl_pipeline_row_scores(const sl_row *row, const char *task);

/* The image file's format, sniffed from its first bytes: "jpeg", "png",
 * "webp", "gif", "tiff", "bmp", "heif", "avif", "jxl", "video" (after
 * decode, a video's container: "mp4", "mov", "webm", "matroska", "avi",
 * "mpegts") or "unknown"; NULL
 * while no byte of it was seen (before decode, for a file not read yet:
 * sl_pipeline_row_image_bytes() reads it). */
const char *sl_pipeline_row_image_format(const sl_row *row);
/* The image file's bytes (read-only, valid until process() returns) and
 * their number in *len. Before decode, a file not read yet is read now
 * (decode then uses those bytes: no second read); a URL is not fetched
 * (NULL). After decode the bytes are gone unless the job keeps them
 * (--include-image-bytes, --send-original): NULL. SL_ERR_* of the read
 * when it fails (the message names the file) with *bytes NULL. */
sl_status sl_pipeline_row_image_bytes(sl_row *row, const uint8_t **bytes, size_t *len);
/* The decoded image (a video's middle frame) shrunk to w x h grey pixels (box average of the
 * decoded RGB, 0.299/0.587/0.114 luma) into out[w*h]: what a perceptual
 * hash starts from. SL_ERR_INVALID_ARG before decode or for w, h outside
 * 1..256. */
sl_status sl_pipeline_row_gray(const sl_row *row, int w, int h, uint8_t *out);

/* The row's columns: the input's pass-through columns and those stages set,
 * as one JSON object text (free it with sl_pipeline_text_free(); "{}" when
 * none). NULL when out of memory. */
char *sl_pipeline_row_columns_json(const sl_row *row);
/* Column `name` as JSON text (sl_pipeline_text_free() it), NULL when the
 * row has none. */
char *sl_pipeline_row_column_json(const sl_row *row, const char *name);
/* Column `name` when it is a string (valid until the column changes), else
 * NULL. */
void sl_pipeline_text_free(char *text);
const char *sl_pipeline_row_column_string(const sl_row *row, const char *name);
/* Sets column `name` (written to the output like an input's pass-through
 * column; a Parquet output writes the columns the stage declared, see
 * sl_pipeline_stage_params.columns) to the JSON value `json` (text: "3",
 * "\"red\"", "[1,2]"); NULL removes it. SL_ERR_INVALID_ARG for text that is
 * not JSON or a name that is empty or one of the row's own fields (id,
 * caption, ...), SL_ERR_NOMEM. */
sl_status sl_pipeline_row_set_column_json(sl_row *row, const char *name, const char *json);
sl_status sl_pipeline_row_set_column_string(sl_row *row, const char *name, const char *text);

/* Fan-out: a new row after `parent` (a copy of it: columns, prompt, image,
 * answer) that goes on through the later stages as a row of its own, with
 * the id "<parent id>#<k>" (k = 1, 2, ... per parent). The parent stays in
 * the batch: drop it with sl_row_drop() when only the copies should go on.
 * Resume treats a parent and its copies as one: they are committed together.
 * The returned row is the caller's to change until process() returns. Only
 * inside process(); SL_ERR_NOMEM, SL_ERR_INVALID_ARG for a failed or dropped
 * parent. */
sl_status sl_pipeline_row_emit(sl_row *parent, sl_row **child);

#ifdef __cplusplus
}
#endif
#endif
