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
    const char *name; /* unique in the pipeline; names the stage in stats and errors */
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
 * its). SL_ERR_INVALID_ARG when a built-in stage is missing or it ran. */
sl_status sl_pipeline_run(sl_pipeline *pl, sl_caption_summary *summary);

/* Accepts NULL. */
void sl_pipeline_free(sl_pipeline *pl);

/* --- a row, inside a stage's process() ----------------------------------------- */

/* The row id and the file or URL read (NULL when the bytes came with it). */
const char *sl_pipeline_row_id(const sl_row *row);
const char *sl_pipeline_row_path(const sl_row *row);
/* The row's own prompt (NULL: the job's). Set it before the engine;
 * copied. SL_ERR_NOMEM. */
const char *sl_pipeline_row_prompt(const sl_row *row);
sl_status sl_pipeline_row_set_prompt(sl_row *row, const char *prompt);
/* The image as decoded; 0 before decode. */
int sl_pipeline_row_width(const sl_row *row);
int sl_pipeline_row_height(const sl_row *row);
/* The engine's answer (the caption); NULL before the engine. Replace it
 * after the engine (copied); SL_ERR_INVALID_ARG before, SL_ERR_NOMEM. */
const char *sl_pipeline_row_answer(const sl_row *row);
sl_status sl_pipeline_row_set_answer(sl_row *row, const char *text);

#ifdef __cplusplus
}
#endif
#endif
