/* job/job.h — what the caption job's files share (internal to src/job/):
 * the row every stage works on (caption_row, the executor row's payload),
 * the run's shared state (job), and the built-in stages, one file each:
 * stage_read.c, stage_decode.c, stage_engine.c, stage_write.c. Each stage
 * function returns its sl_stage_def with the job as config; the job outlives
 * the executor. Thread rules are those of each job field's comment: most are
 * set before the run and only read during it. */
#ifndef SL_JOB_JOB_H
#define SL_JOB_JOB_H

#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>

#include "io/fetch.h"
#include "io/sink.h"
#include "io/source.h"
#include "job/caption_live.h"
#include "job/caption_metrics.h"
#include "job/gallery.h"
#include "job/answer_columns.h"
#include "job/schema.h"
#include "dist/dist.h"
#include "ledger/idset.h"
#include "ledger/ledger.h"
#include "sluice/caption.h"
#include "sluice/executor.h"
#include "sluice/pipeline.h"

/* --- the row ---------------------------------------------------------------- */

/* A row's several images (docs/inputs.md): a video's frames ("Videos"), or
 * the list of images its input named ("Several images a row"), made by the
 * decode stage; the pixels and JPEGs are given back once the engine is done
 * with them, the rest rides on to the writer. */
typedef struct media_row {
    sl_image *images[SL_MAX_IMAGES]; /* llama engine: the frames or images, decoded */
    uint8_t *jpeg[SL_MAX_IMAGES];    /* openai engine: each one as sent */
    size_t jpeg_len[SL_MAX_IMAGES];
    double times[SL_MAX_IMAGES];     /* a video's: each frame's second */
    int n;                           /* made so far (a failed list: up to the one that failed) */
    int listed;                      /* a list's length as read (its image_count) */
    double seconds;                  /* a video's duration */
    bool is_video;                   /* false: a list of images */
} media_row;

void media_row_free(media_row *v);
/* A copy (frames and JPEGs copied); NULL when out of memory. */
media_row *media_row_copy(const media_row *v);
/* Bytes held by the frames and JPEGs. */
size_t media_row_bytes(const media_row *v);
/* Frees the pixels and JPEGs (not the times); returns the bytes given back. */
size_t media_row_drop_media(media_row *v);

typedef struct caption_row {
    char *path, *rel;         /* path: file or URL (NULL when data came with the row) */
    uint8_t *data;            /* the encoded image, while needed */
    size_t len;
    char *data_name;          /* with data from the input (a tar member, a Parquet cell):
                                 what messages call it (sl_source_item.name), or NULL */
    json_t *extra;            /* pass-through columns, or NULL */
    char *prompt;             /* this row's prompt, or NULL */
    bool task_prompts;        /* the job's tasks ask their own prompts: a row's is not used */
    sl_image *image;          /* from decode until the engine is done with it */
    uint8_t *jpeg;            /* openai engine: the image as sent, in place of the pixels */
    size_t jpeg_len;
    const char *original_mime; /* --send-original: data is sent as is, of this type */
    int width, height, source_width, source_height; /* 0: not decoded */
    sl_result result;          /* with tasks: their token counts summed, the slowest
                                  one's timings, no text */
    bool has_result;
    bool answer_room;          /* --answer-columns: input columns of their names moved
                                  aside (job_answer_room) */
    sl_result *results;        /* with tasks: each one's answer, in the job's order (with
                                  --samples N: N each, task t's answer k at t * N + k) */
    int n_results;
    int samples;               /* with results: answers per task (--samples), else 1 */
    const sl_caption_task *tasks; /* with results: the job's tasks (borrowed from its
                                     parameters, which outlive every row) */
    double decode_ms, started;
    uint64_t seed;
    uint8_t *thumb;           /* JPEG, only for rows the gallery asked for */
    size_t thumb_len;
    const char *format;       /* the file's format (static), once its bytes were seen */
    size_t root_len;          /* a copy (fan-out): rel is "<input id>#k", this long before
                                 the '#'; 0 for the input's own row */
    int64_t shard;            /* the input shard it was read from (-1: not sharded) */
    struct batch_row *batch;  /* an OpenAI batch file's request (job/batch.h), or NULL */
    media_row *media;         /* a video's frames or a list's images in place of
                                 `image`, or NULL */
    sl_source_image *list;    /* a list of images as read (io/source.h), until decoded */
    size_t n_list;
    uint64_t input_bytes;     /* a dry run: the input's encoded bytes (a list's summed, a
                                 video's file), once known (input_sized) */
    bool input_sized;
    uint64_t max_file_bytes;  /* a local image file is read up to this (max_item_bytes) */
    int turn, questions;      /* --turns all: the question being answered (from 0) and how
                                 many the conversation asks */
    int turn_tokens[3];       /* --turns all: prompt, generated and cached tokens of the
                                 answers before this one */
} caption_row;


/* Frees a caption_row: the executor row's free function. */
void job_row_free(void *data);
/* Frees the row's list of images as read (r->list), once decoded. */
void job_row_free_list(caption_row *r);
/* The bytes the list as read holds (counted in the row's bytes). */
size_t job_row_list_bytes(const caption_row *r);
/* A copy of r for fan-out (columns, prompt, image, answer copied; no
 * gallery thumbnail) and its bytes in *bytes; NULL when out of memory. Its
 * id is "<input id>#copy", numbered with job_row_number() (room is kept). */
caption_row *job_row_copy(const caption_row *r, size_t *bytes);

/* About the memory a JSON value holds (its strings, keys and a node's
 * overhead each), for a row's bytes in the memory budget. */
size_t job_json_bytes(const json_t *v);
void job_row_number(caption_row *c, unsigned copy);
/* The id of the input a row came from (rel up to root_len). */
char *job_row_input_id(const caption_row *r);

/* --- the job ---------------------------------------------------------------- */

/* Shared by every stage of one run. */
typedef struct job {
    const sl_caption_params *p;
    const char *dir;           /* where parts, the ledger and the report are written: the
                                  output folder, or the state folder of an s3:// output */
    char *dir_owned;
    char *remote;              /* s3:// output: its URL without a trailing '/'; else NULL */
    struct remote_object *remote_parts; /* ... the part objects there at the start, sorted
                                           by name, with their sizes (job_note_upload keeps
                                           them) */
    size_t n_remote_parts;
    struct bucket_lock *bucket_lock; /* s3:// output, the ledger's holder: its lock */
    char uploaded_part[64];    /* s3:// output, one process: the last part this run */
    int64_t uploaded_bytes;    /* uploaded that the listing lacks, and its size */
    sl_source *src;
    sl_source_params src_params;
    char **text_columns;       /* src_params.text_columns: the prompt templates' columns */
    bool text_columns_nomem;
    const char *const *inputs;
    size_t n_inputs;
    sl_fetch_params fetch;
    caption_schema schema;     /* the output row's columns */
    answer_columns answer_cols; /* --answer-columns: planned with the schema */
    bool *columns_seen;        /* --columns: whether a row written held each (the write
                                  stage's; one no row held is warned of at the end) */
    sl_sink *sink;             /* the output; its open part is the open shard */
    sl_sink *errors_sink;      /* errors_file: failed rows (a batch file's failed
                                  requests), in errors-NNNNN.jsonl parts opened and
                                  committed with the output's (uploaded beside them for
                                  an s3:// output) */
    sl_schema errors_schema;   /* a caption job's errors parts: the output's columns but
                                  image_bytes (JSONL) */
    long shard, shard_rows;    /* the open shard's number and rows (output rows, and one
                                  for each dropped row: its id in the ledger; a part of
                                  only dropped rows is committed empty, so they count as
                                  done) */
    char last_shard[4096];     /* the last committed shard */
    char first_shard_path[4096]; /* the first this run committed */
    json_t *parts;             /* the names of the parts this run committed, in order (this
                                  process's) */
    char model_name[256];
    pthread_mutex_t mu;       /* model_name, load_seconds */
    double load_seconds;
    sl_status sink_status;    /* the commit's outcome, read after the run */
    char sink_error[1024];
    bool write_failed;        /* a row could not be written: the open part is abandoned */
    bool dry_run_drops_pixels; /* a dry run without a stage after decode: decode frees the
                                  pixels (nothing reads them again) */
    struct {                  /* the open part's rows, added to *sum when it commits */
        long rows, ok, failed, prompt_tokens, generated_tokens, dropped; /* output rows */
        long inputs;          /* inputs finished: their last row is in the part */
        uint64_t input_bytes, jpeg_bytes; /* a dry run's rows' (caption_row) */
        long answers[2 * SL_MAX_TASKS][SL_MAX_CHOICES]; /* choices taken, as below */
        coord_failures failures;  /* its failed rows by stage and class (MPI: rank 0
                                     sums every rank's for the summary) */
    } part;
    /* Choices taken by the rows of the committed parts: [task][choice]
     * ([0] without tasks), in the choices' order, by the rows written; at
     * [SL_MAX_TASKS + task], by the rows a stage dropped (not written, yet
     * answered: a filter's "no"s). This process's rows. */
    long answers[2 * SL_MAX_TASKS][SL_MAX_CHOICES];
    sl_caption_summary *sum;  /* written by the writer thread only */
    caption_metrics *metrics;
    gallery *gallery;
    caption_live *live;
    sl_source_counter *counter; /* the counting walk's (job_count_prepare), freed after
                                   its thread is joined; NULL when not counted */
    atomic_int_fast64_t input_total; /* -1 until the counting walk ends; exact once
                                        the read stage reads the last input */
    atomic_bool stop_counting;
    sl_ledger *ledger;        /* what earlier runs committed; the open part's rows */
    long rows_per_shard;      /* --shard-rows, or the default */
    long first_shard;         /* this run's first part number */
    long done_before;         /* inputs committed before this run */
    atomic_int_fast64_t rows_skipped; /* inputs skipped as done, by the read stage */
    atomic_int_fast64_t inputs_read;  /* rows the read stage made (inputs not done before,
                                         in the sample): what --limit counts */
    /* --prompt-column: the rows read that held it and those that did not
     * (prompted with --prompt); a name none of the first rows holds is
     * most likely misspelt, warned of once as the run goes and at its end. */
    atomic_int_fast64_t prompt_column_held;
    atomic_int_fast64_t prompt_column_missing;
    atomic_bool read_to_end;          /* ... and the inputs ended (no --limit cut them) */
    atomic_bool told_unread_key;      /* a batch request's body key the llama engine does
                                         not read was named (once a run) */
    /* One job over MPI ranks (sluice/dist.h; NULL: one process). The
     * ledger is rank 0's (j->ledger there, recorded in by the coordinator);
     * this rank's parts go to it through `dpart`, and the rows an earlier run
     * committed from this rank's shards, sent with each shard, are in
     * `done` (a temporary database: not held in memory). */
    sl_dist *dist;
    long part_stride;         /* part numbers go up by this: 1, or the ranks */
    dist_part dpart;          /* the open part's rows (writer thread) */
    sl_idset *done;           /* under done_mu: the reader adds, both stages look up */
    pthread_mutex_t done_mu;
    int64_t assigned;         /* reader thread: the last shard handed to this rank, -1 */
    bool exhausted;           /* reader thread: no shard is left for this rank */
} job;


bool job_uses_openai(const sl_caption_params *p);
/* The row's prompt column (--prompt-column, else "prompt"; a dotted name
 * may reach into a struct), borrowed from extra; NULL when absent. */
json_t *job_prompt_value(const sl_caption_params *p, const json_t *extra);
/* Whether --samples' answers are drawn by the server from the row's seed
 * (the openai engine's one request with "n"): their seed is the row's, not
 * their own (sl_sampling_answer_seed). */
bool job_answers_share_seed(const sl_caption_params *p);

/* The choices the answers of task t take (t 0 for a job without tasks):
 * the task's own, else the job's. Returns how many (0: none; *choices is
 * then NULL). */
int job_choices(const sl_caption_params *p, int t, const char *const **choices);
/* --answer-columns: once a row, before its answers are set or it is
 * written, moves its input columns that a planned column has aside
 * (answer_columns_make_room); fails the row when out of memory. */
void job_answer_room(const job *j, sl_row *row);

/* A wrong parameter, named, before anything starts (caption.c); with
 * model_files, the model, projector and LoRA files are there to read. */
sl_status job_check_params(const sl_caption_params *p, bool model_files);

/* Says on the log (warnings) what the settings allow but cannot be meant:
 * several answers an image at temperature 0, all the same answer. */
void job_warn_params(const sl_caption_params *p);
/* What sl_pipeline_run() refuses before it reads or loads anything: the
 * parameters, and the assembled pipeline against them (a stage after the
 * engine in a dry run). For sl_caption_check() too, without model_files
 * (pipeline.c). */
sl_status job_check_pipeline(const sl_pipeline *pl, bool model_files);

/* File names and generated text are bytes; JSON strings must be UTF-8. */
json_t *job_json_text(const char *s);

/* The LoRA adapters as [{"path": ..., "scale": ...}, ...] (_summary.json,
 * the resume fingerprint); NULL when out of memory. */
json_t *job_lora_json(const sl_llama_params *llama);

/* --- the built-in stages ---------------------------------------------------- */

/* read: one worker that turns the source's items into rows, skipping those
 * the ledger holds as done and stopping the run on a repeated id. */
sl_stage_def stage_read(job *j);
/* Whether row `id` is in a sample of `fraction` (0 < fraction <= 1): the
 * same answer on every run (a hash of the id). */
bool job_in_sample(const char *id, double fraction);
/* Reads a row's local image file whole (core/file.h sl_read_file), at most
 * `max` bytes: a larger one is SL_ERR_TOO_LARGE naming the file, its size,
 * the limit and --max-item-bytes, before any of it is read. */
sl_status job_read_local(const char *path, uint64_t max, uint8_t **data, size_t *len);
/* The format of an image file from its first bytes: "jpeg", "png", ...,
 * "unknown" (static strings). */
const char *job_image_format(const uint8_t *d, size_t n);
/* A dry run's jpeg_bytes column: the encoded bytes the row would send to
 * an HTTP engine (its JPEGs, or the original with send_original); false
 * when it sends none (another engine, or nothing decoded). */
bool job_row_sent_bytes(const job *j, const caption_row *r, uint64_t *bytes);
/* decode: fetch URLs, decode and shrink (and, for HTTP engines, encode the
 * JPEG to send); p->decode_workers workers. */
sl_stage_def stage_decode(job *j);
/* engine: one replica (model) per worker, rows in flight out of order. */
sl_stage_def stage_engine(job *j);
/* write: the one writer; parts cut every rows_per_shard rows, each
 * committed with the ledger. The sink and the first part open with
 * job_open_output() before the run. */
sl_stage_def stage_write(job *j);
sl_status job_open_output(job *j);

/* The output folder's ledger: start over (overwrite), or settle what an
 * earlier run left and set where this one goes on (resume.c). For an s3://
 * output, first sets j->dir to the state folder and lists the parts in the
 * bucket. */
sl_status job_open_ledger(job *j);
/* The settings the resume fingerprint holds (what decides the rows), as a
 * JSON object of its keys, for _summary.json: a dataset's reader sees what
 * made it; the caller owns it. NULL when out of memory. */
json_t *job_settings_json(const job *j);
/* The openai engine's model, `model` (named by --served-model or the first
 * a fleet lists), against the one the folder's rows were answered by
 * (resume.c): recorded when the ledger holds none (or no part yet), and
 * SL_ERR_EXISTS, naming both, when it differs. The holder of the ledger
 * checks; other ranks and jobs without a ledger pass. */
sl_status job_check_served_model(job *j, const char *model);
/* The llama engine's default system message (sl_engine_default_system:
 * the chat template's, "" for none) against the one the folder's rows were
 * prompted with, where some row has no system prompt of the job's: recorded
 * when the ledger holds none; SL_ERR_EXISTS, naming both, when it differs;
 * a warning when a folder an older sluice wrote (which sent none) goes on
 * with one. The holder of the ledger checks; others pass. */
sl_status job_check_default_system(job *j, const char *text);
/* job/retry.c: --retry-failed at the start, by the ledger's holder:
 * retries an earlier run began are finished (*parts: how many); this run's
 * failed rows taken out of every committed part (*rows: ids taken out,
 * *parts: parts rewritten, *kept: the rows those parts kept). */
sl_status job_retry_settle(job *j, long *parts);
sl_status job_retry_failed(job *j, long *rows, long *parts, long *kept);
/* s3:// output: _summary.json, _report.html and _metrics.prom copied up from
 * the state folder (a warning when one cannot be); with summary_only, the
 * first alone (the "running" one, at the start). */
void job_upload_reports(job *j, bool summary_only);
void job_output_clear(job *j);
/* job/bucket_lock.c: an s3:// output's lock object in the bucket, which
 * keeps out runs with other state folders (the ledger's lock keeps out
 * those with this one). job_lock_bucket(): SL_ERR_BUSY naming the holder
 * and how to clear it when another run holds it; job_check_bucket_lock()
 * before each part's commit: SL_ERR_IO saying so when the lock was lost
 * (taken, or not renewed while most of its lease ran out), SL_OK without
 * one; job_unlock_bucket() releases it (no-op without one). */
typedef struct bucket_lock bucket_lock;
sl_status job_lock_bucket(job *j);
sl_status job_check_bucket_lock(job *j);
void job_unlock_bucket(job *j);
/* s3:// output, one process: part object `url` was uploaded, `bytes` long
 * (-1: not known), for the resume ledger to record as its size. */
void job_note_upload(job *j, const char *url, int64_t bytes);

/* Object `url` of the shared S3 client into the local file `path` (made
 * or emptied); SL_ERR_NOT_FOUND, `path` removed, when there is no such
 * object. The caller removes the copy when done with it. */
sl_status job_download(const char *url, const char *path);

/* The ledger as the stages see it (record.c): rank 0's through the
 * coordinator under MPI, else the folder's own. job_records() says whether
 * there is one (a run without an output folder's ledger records nothing). */
bool job_records(const job *j);
sl_status job_is_done(job *j, const char *id, bool *done);
sl_status job_part_begin(job *j, const char *name, long number);
sl_status job_part_add(job *j, const char *id, int64_t shard);
sl_status job_part_prepare(job *j);
sl_status job_part_commit(job *j);
void job_part_abandon(job *j);
/* The source's take_shard (io/source.h) under MPI: asks rank 0. */
sl_status job_take_shard(void *user, uint64_t shard, bool end, int *take);

#endif
