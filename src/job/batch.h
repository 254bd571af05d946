/* job/batch.h — OpenAI batch files through the caption pipeline (`sluice
 * batch`, docs/batch.md; internal to src/job/). A row of such a job holds
 * a batch_row: the line's request (io/batch_line.h) and what the stages
 * make of it: decode fetches and decodes its images (llama engine) or
 * rewrites its body (openai engine), engine builds the sl_request, write
 * lays out OpenAI's batch output line (or its flattened Parquet row) and,
 * with errors_file, sends failed requests to an errors part of their own.
 * Thread rules are the stages': one row is one stage's at a time. The row
 * owns its batch_row (batch_row_free). */
#ifndef SL_JOB_BATCH_H
#define SL_JOB_BATCH_H

#include "io/batch_line.h"
#include "io/schema.h"
#include "job/job.h"

typedef struct batch_row {
    sl_batch_req req;            /* the line's request (its custom_id: the output's) */
    sl_image *images[SL_MAX_IMAGES]; /* llama engine: each image part, decoded */
    json_t *send_body;           /* openai engine: the body rewritten (local images as data:
                                    URLs); NULL: the line's body as it is */
    size_t bytes;                /* what images and send_body hold, counted in flight */
    size_t line_bytes;           /* the request's texts and image URLs, roughly */
} batch_row;

void batch_row_free(batch_row *b);

/* The longest line of a batch file read (its images inline): a longer one
 * fails, named. */
#define SL_BATCH_MAX_LINE_BYTES ((size_t)64 << 20)

/* Whether p runs an OpenAI batch file (input_format "openai-batch"). */
bool job_is_batch(const sl_caption_params *p);
/* The batch job's own parameter rules (caption.c calls it). */
sl_status batch_check_params(const sl_caption_params *p);

/* read: the source item's request moves into the row. */
sl_status batch_row_take(caption_row *r, sl_source_item *it);

/* engine: a stage's copy of a batch row made before the engine has no
 * request (the input's row keeps it): it fails (invalid_request), saying
 * where the stage must go, instead of being taken for an image row. True
 * when it failed the row. */
bool batch_copy_without_request(const job *j, sl_row *row, const caption_row *r);

/* decode: the row's images fetched and decoded (or its body rewritten);
 * failures fail the row with the image's place and cause. */
void batch_decode(job *j, sl_row *row, caption_row *r);

/* engine: the row's request submitted to `engine`; what the engine refuses
 * (and a model other than the engine's without ignore_model) fails the row
 * alone. SL_ERR_IO: the engine is broken. */
sl_status batch_submit(job *j, sl_engine *engine, sl_row *row, caption_row *r);

/* The batch output's columns (JSONL: id, custom_id, response, error;
 * Parquet: the same flattened), then those stages set (stage_columns: the
 * ones declared, for Parquet). */
sl_status batch_schema_plan(const sl_caption_params *p, const char *const *stage_columns,
                            size_t n_stage_columns, caption_schema *out);

/* The errors parts' columns: OpenAI's batch lines (JSONL) whatever the
 * output's format. */
const sl_schema *batch_errors_schema(void);

/* write: the row's cells in the batch schema's order into v (as_line: in
 * batch_errors_schema's, for an errors part); texts made for them in
 * *owned (free with batch_cells_free after the write). A stage's copy k of
 * a request answers under custom_id "<custom_id>#k", the id the ledger
 * records it by. */
#define BATCH_CELLS 7
typedef struct batch_cells_text {
    char *text[4];
} batch_cells_text;
void batch_cells(const job *j, const caption_row *r, const sl_row *row, bool as_line,
                 sl_pq_value *v, batch_cells_text *owned);
void batch_cells_free(batch_cells_text *owned);

/* What the report and live page show of a batch row: the request's last
 * user text and the answer (sl_free; NULL when out of memory). */
char *batch_show_text(const caption_row *r, const char *answer);

/* errors_file: after a run, the errors parts (errors-NNNNN.jsonl) of the
 * committed parts concatenated into the file, in order (written under a
 * temporary name and renamed): from the output folder, or for an s3://
 * output the objects beside the parts. */
sl_status batch_errors_collect(const job *j);

#endif
