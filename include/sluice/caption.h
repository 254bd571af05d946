/* sluice/caption.h — the captioning job: a folder of images to JSONL rows.
 *
 * sl_caption_run() runs a pipeline on the streaming executor: read (the
 * images under input_dir, recursively, sorted) -> decode (libvips, shrink)
 * -> engine (llama.cpp; one model per replica) -> write (one row per input,
 * or per input and task with rows_per_task, to output_dir/part-NNNNN.jsonl
 * or .parquet, each written under a temporary name and renamed when full or
 * when the run ends). A resume ledger in the
 * output folder (_sluice_ledger.sqlite) records the rows of every committed
 * part: running the same job again after a crash, a kill or a stop goes on
 * where it stopped, each input in exactly one committed row (docs/output.md). Metrics (vLLM's engine names, sluice_ pipeline
 * names) are served at metrics_addr while it runs, with a live page at "/",
 * and written to output_dir/_metrics.prom at the end, beside a run report
 * (_summary.json, _report.html; see docs/output.md). An input that fails becomes a row with its
 * error; the run goes on. A wrong parameter, an engine that cannot load, an
 * output that cannot be written, too many failed rows (max_failed) or a stop
 * request end the job; rows already finished are kept. To put stages of
 * your own into this pipeline, build it with sluice/pipeline.h. With
 * input_format "openai-batch" the rows are an OpenAI batch file's chat
 * requests and the output OpenAI's batch lines (docs/batch.md).
 */
#ifndef SLUICE_CAPTION_H
#define SLUICE_CAPTION_H

#include <stdbool.h>
#include "dist.h"
#include "engine.h"
#include "executor.h"
#include "image.h"
#include "video.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What on_row sees of a finished row; valid only during the callback, which
 * runs on the writer thread, in output order. */
typedef struct sl_row_view {
    const char *id;       /* the row id (docs/inputs.md): relative path for folders */
    const char *caption;  /* NULL when the row failed */
    const char *error;    /* NULL when the row succeeded */
    long index;           /* 0-based position in input order */
    const char *error_stage; /* "read", "decode", "engine"; NULL on success */
} sl_row_view;

typedef void (*sl_row_fn)(const sl_row_view *row, void *user);

/* A snapshot of the running job, for progress displays. */
typedef struct sl_caption_progress {
    double elapsed_s;           /* since the pipeline started (model load included) */
    uint64_t rows_read, rows_done, rows_failed; /* done: written; failed: written with an
                                   error (not rows_write_failed) */
    int64_t rows_total;         /* inputs in the folder; -1 until counted */
    double eta_s;               /* -1 while rows_total is unknown */
    uint64_t bytes_in_flight, memory_budget;
    size_t n_stages;
    sl_stage_stats stages[8];   /* read, decode, engine, write */
    bool final;                 /* the last snapshot, after the run ended */
    uint64_t rows_skipped;      /* inputs skipped: done by an earlier run (resume) */
    int64_t rows_done_before;   /* rows the output folder held when the run started (with
                                   rows_per_task one per input and task) */
    /* Rank 0 of an MPI job (sluice/dist.h): the whole job's committed rows
     * and how many ranks have finished; ranks is 0 otherwise. */
    int ranks, ranks_finished;
    int64_t job_rows;
    int64_t inputs_done_before; /* the inputs whose rows those are */
    int64_t rows_failed_before; /* of rows_done_before, those with an error */
    /* --retry-failed (retry_failed): failed rows (ids) taken out of the
     * output at the start and the parts rewritten. */
    bool retry_failed;
    int64_t rows_retried, parts_retried, rows_retry_kept;
    double retry_seconds;
    /* Rows the writer could not write (a failed write, sync or commit: the
     * run stops, and the next run answers them again): the rows were fine,
     * so neither done nor failed. */
    uint64_t rows_write_failed;
} sl_caption_progress;

typedef void (*sl_progress_fn)(const sl_caption_progress *progress, void *user);

/* One of several answers asked of each image (docs/output.md, "Tasks"). */
typedef struct sl_caption_task {
    const char *name;          /* [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes: its output
                                  columns are NAME, NAME_finish_reason, ... */
    const char *prompt;        /* may name the row's columns: {label}, {meta.author} */
    const char *system_prompt; /* NULL: the job's system_prompt */
    sl_sampling sampling;      /* complete: the job's, with the task's own over it; the
                                  seed is mixed with each row's id as the job's is */
    const char *json_schema;   /* NULL: the job's json_schema; the task's answer is
                                  constrained to it and checked (structured output) */
    const char *const *choices; /* n_choices 0: the job's choices (below) */
    int n_choices;
} sl_caption_task;
/* A stage of the user's (docs/stages.md): a Lua script or a C plugin
 * (sluice/plugin.h) run on the rows after one of the built-in stages. */
typedef struct sl_stage_spec {
    const char *name;        /* unique in the job; NULL: the file's name without its
                                folder and extension */
    const char *lua;         /* a Lua 5.4 script ... */
    const char *plugin;      /* ... or a shared object (exactly one of the two) */
    const char *after;       /* "read", "decode" (NULL: this) or "engine" */
    int workers;             /* 0: 1 */
    int batch_size;          /* rows per call; 0: 16 */
    const char *config;      /* a JSON object's text handed to init(); NULL: {} */
    const char *const *columns; /* the columns the stage sets (Parquet plans them) */
    int n_columns;
    double time_limit_s;     /* Lua: a call (the script's top level, init, process, close)
                                still running after this long is stopped with an error (a
                                process() call's: its rows fail, class stage); 0: 60 s;
                                below 0: none (no clock read: bench/stages, 1.06x faster
                                on the tags example, 1.42x on plain Lua arithmetic).
                                Not for plugins (C code cannot be stopped safely) */
} sl_stage_spec;

/* sl_caption_params.turns and .video_part. Named here, not inside the
 * struct: C++ scopes an enum declared in a struct to it, so its constants
 * (SL_TURNS_LAST) would not be found by the names C uses. */
typedef enum sl_turns { SL_TURNS_FIRST, SL_TURNS_LAST, SL_TURNS_ALL } sl_turns;
typedef enum sl_video_part { SL_VIDEO_PART_IMAGE_URL, SL_VIDEO_PART_VIDEO_URL } sl_video_part;

typedef struct sl_caption_params {
    const char *input_dir;
    const char *output_dir;    /* a folder, or s3://bucket/prefix (docs/output.md) */
    const char *state_dir;     /* s3:// output: the local folder of its resume ledger and
                                  the parts being written; NULL: under
                                  $XDG_STATE_HOME/sluice/s3/ (~/.local/state) */
    const char *output_format; /* "jsonl" (default) or "parquet" (zstd) */
    const char *output_compression; /* Parquet: zstd (NULL: the default), snappy, gzip or
                                       none; the parts --retry-failed rewrites too */
    bool overwrite;            /* start over: remove the folder's part files and its
                                  resume ledger (default: resume a run of the same
                                  settings; refuse one of other settings) */
    bool retry_failed;         /* before the run, take the failed rows out of the output's
                                  committed parts (each part rewritten without them) and
                                  caption those inputs again, as a resume does the inputs
                                  not done (docs/output.md "Retrying failed rows") */
    const char *system_prompt; /* NULL: none; like prompt, a template: {column} is the
                                  row's pass-through column (docs/output.md) */
    const char *prompt;
    sl_sampling sampling;      /* sampling.seed is the job seed */
    const char *const *stop;   /* generation ends at any of these (not written) */
    int n_stop;
    sl_image_params image;
    /* Videos (docs/inputs.md, "Videos"): each becomes one row whose frames
     * (video.max_frames at most, video.fps per second of video at most;
     * sluice/video.h) go before the prompt as images, bounded and shrunk as
     * `image` says (video.image is not read). Each frame comes after
     * frame_text with {time} (its second, one decimal) and {index} (from 1)
     * filled in; NULL or "": no text. */
    sl_video_params video;
    const char *frame_text;
    /* A row with a list of images (docs/inputs.md, "Several images a row"):
     * they go before the prompt in order, each after image_text with
     * {index} (from 1) filled in; NULL or "" (default): no text. */
    const char *image_text;
    /* NULL or "" (default): a row's images go before the prompt. Else this
     * marker in a row's prompt (`<image>`) is where its images go: a list's
     * image k at marker k, a single image or a video's frames at the one
     * marker; a prompt without any keeps them before it, one with another
     * count fails its row. Not with tasks. */
    const char *image_placeholder;
    sl_llama_params llama;
    int decode_workers;        /* decode threads (default 2) */
    int replicas;              /* engine instances, each with its own model (default 1) */
    const int *gpus;           /* optional: replica i runs on GPU gpus[i] alone; */
    int n_gpus;                /*   then replicas must equal n_gpus */
    bool ordered;              /* write rows in input order (default: as they finish) */
    uint64_t memory_budget;    /* bytes in flight; 0: a quarter of RAM */
    double max_failed;         /* stop past this fraction of failed rows (1: never) */
    const sl_atomic_int *stop_requests; /* optional: 1 = stop and drain, 2 = abort */
    const char *metrics_addr;  /* "HOST:PORT" to serve /metrics; NULL or "": no server */
    bool metrics_optional;     /* if the address cannot be bound: warn, run without it */
    const char *metrics_token_file; /* optional: a file (mode 600) holding the token that
                                       every request to metrics_addr must bring */
    /* optional: once serving, "http://HOST:PORT" as sl_metrics_server_url()
       gives it; the string is valid during the call */
    void (*on_metrics_url)(const char *url, void *user);
    sl_row_fn on_row;          /* optional */
    void *on_row_user;         /* handed to on_row, on_metrics_url and on_progress */
    sl_progress_fn on_progress; /* optional: every progress_ms from a monitor thread,
                                   and once more at the end (final) */
    int progress_ms;           /* default 1000 */
    /* Inputs other than one folder, pass-through and shards (docs/inputs.md). */
    const char *const *inputs; /* n_inputs > 0: read these instead of input_dir: folders,
                                  manifests, tar shards or Parquet files; braces and globs */
    int n_inputs;
    const char *input_format;  /* NULL: from the names; folder, file, jsonl, csv, webdataset, parquet */
    const char *const *include, *const *exclude; /* folders: globs on the relative path */
    int n_include, n_exclude;
    const char *image_column;  /* NULL: image, path or url */
    const char *prompt_column; /* NULL: "prompt"; a row's value overrides `prompt` */
    const char *id_column;     /* NULL: a manifest's "id", a Parquet row none (FILE:ROW);
                                  "none": a manifest's FILE:LINE even beside an `id` */
    /* A conversation in that column (docs/inputs.md, "Conversations"):
     * SL_TURNS_FIRST (default) asks its first human turn as the prompt;
     * SL_TURNS_LAST sends every turn up to its last human one, which the
     * model answers; SL_TURNS_ALL answers each human turn in order, the
     * model's earlier answers in place of the dataset's, and writes them
     * into the row's conversation. Not with tasks; SL_TURNS_ALL not with
     * samples. */
    sl_turns turns;
    const char *image_root;    /* NULL: relative image paths are under their manifest's folder;
                                  else under this folder (or s3:// prefix), e.g. LLaVA's images */
    bool allow_file_urls;      /* file:// URLs in data read local files */
    uint64_t max_download_bytes; /* per URL image; 0: 64 MiB */
    uint64_t max_line_bytes;   /* a manifest line or CSV record; 0: 1 MiB (a batch file's: 64 MiB) */
    uint64_t max_item_bytes;   /* an image held in the data (tar member, Parquet cell, data:
                                  URL) or a local image file; 0: 256 MiB */
    double download_timeout_s; /* per URL try, the whole transfer (default 30) */
    int download_retries;      /* URL tries after the first on a transport error, 5xx or
                                  429 (default 2) */
    const char *const *columns; /* pass-through columns to keep, in order; NULL: all */
    int n_columns;
    bool include_image_bytes;  /* Parquet: the original image bytes in column image_bytes */
    bool answer_columns;       /* the top-level properties of JSON-schema answers as columns
                                  of their own (docs/output.md "Structured output") */
    long shard_rows;           /* a new part-NNNNN file every shard_rows rows, each a
                                  resume point; 0: SL_CAPTION_DEFAULT_SHARD_ROWS */
    uint64_t shard_bytes;      /* ... or once the part holds this many bytes (the row that
                                  passes it is the last; Parquet counts its open row group
                                  before compression); 0: no limit */
    unsigned input_shard_index; /* read only input shards k with k % count == index: */
    unsigned input_shard_count; /*   0 or 1 reads everything (docs/inputs.md, "Shards") */
    unsigned input_shard_size;  /* items per input shard when not whole files; 0: 1000 */
    /* One job over the ranks of an MPI job (sluice/dist.h; borrowed; NULL:
     * one process): the input shards are handed out by rank 0 as the ranks
     * ask (input_shard_index/count must be unset), rank 0 holds the ledger
     * and writes the summary and report (docs/deploy.md). */
    sl_dist *dist;
    const char *engine;        /* "llama" (default) or "openai" (HTTP servers) */
    sl_openai_params openai;   /* engine "openai": endpoints, limits, retries */
    int jpeg_edge;             /* openai: longer edge of the JPEG sent (0: as decoded) */
    int jpeg_quality;          /* openai: its quality, 1..100 (default 90) */
    bool send_original;        /* openai: send JPEG and PNG inputs as they are (other
                                  formats: the JPEG above) */
    /* openai: how a video's frames go to the server. IMAGE_URL (default):
     * each frame a JPEG image_url part after its frame_text, which every
     * server reads. VIDEO_URL: one video_url part of them all (vLLM's
     * data:video/jpeg form; no frame_text), which vLLM gives the model as
     * a video (Qwen2-VL's temporal patches) where image_url parts are so
     * many separate images. */
    sl_video_part video_part;
    /* A slice of the job, to try it before running it all. Neither is part
     * of the resume fingerprint: the same job without them goes on where
     * the slice stopped, its rows done (each input exactly once in all). */
    long limit;                /* make at most this many rows (inputs not done before and
                                  in the sample), then end; 0: no limit */
    double sample;             /* only rows whose id hashes below this fraction, 0 < f <= 1:
                                  the same ids on every run (default 1: all) */
    /* Several tasks per image, the image encoded once (n_tasks > 0: they
     * replace prompt; at most SL_MAX_TASKS). One row per image with each
     * task's answer in columns of its own, or with rows_per_task one row
     * per image and task (column `task`). */
    const sl_caption_task *tasks;
    int n_tasks;
    bool rows_per_task;
    const sl_stage_spec *stages; /* the user's stages, in order within each place */
    int n_stages;
    /* Structured output (sl_request's fields of the same names): the text
     * of a JSON schema each answer must match (JSONL then writes the
     * caption as the JSON value), and of a GBNF grammar (llama engine);
     * NULL: none. */
    const char *json_schema;
    const char *grammar;
    /* The files json_schema and the tasks came from, for messages to name
     * (borrowed like the texts); NULL: not from a file. */
    const char *json_schema_file;
    const char *tasks_file;
    /* Choices (sl_request's field of the same name): each answer is one
     * of these, scored by the model's probabilities (column `scores`,
     * docs/output.md "Choices"); 0: none. */
    const char *const *choices;
    int n_choices;
    /* An OpenAI batch file (input_format "openai-batch"; `sluice batch`,
     * docs/batch.md): each line a chat request, answered in OpenAI's batch
     * output format (output_format "openai-batch" or "jsonl"; "parquet"
     * flattens it). */
    bool allow_local_images;   /* image_url parts may name local files (else the line fails) */
    bool ignore_model;         /* run requests whose body.model is another model's */
    const char *errors_file;   /* failed requests go to this file, not the output parts */
    /* A dry run (docs/inputs.md, "Checking inputs first"): read and decode
     * every input with no model (llama's model files and openai's
     * endpoints are not needed, nor checked); every input is a row as usual
     * with no answer (caption null, tokens 0), its error if it failed, and
     * the columns format, input_bytes and, with engine "openai", jpeg_bytes
     * (the JPEGs that would be sent, encoded). Stages after "engine" are
     * refused (they need answers), so is an OpenAI batch file. Part of the
     * resume fingerprint: a dry run's output folder is not a real run's. */
    bool dry_run;
} sl_caption_params;

/* Rows per part when shard_rows is 0: a crash loses at most this many. */
#define SL_CAPTION_DEFAULT_SHARD_ROWS 10000

sl_caption_params sl_caption_default_params(void);

/* What sl_caption_run() would refuse at its start, without reading an
 * input or loading a model, for `sluice config check`: the parameters
 * (choices, structured output, tasks, LoRA files, the output format...),
 * each stage opened and closed (the Lua scripts compile, the plugins load
 * and speak this sluice's ABI, the configs are objects, the names are
 * distinct), the pipeline against them (a stage after the engine in a dry
 * run) and the answer columns planned, and, where it would load a model
 * (the llama engine, not a dry run), this CPU against the llama.cpp build
 * (sl_llama_cpu_check(): SL_ERR_MODEL naming the SIMD extensions it
 * lacks). Not the model, projector and LoRA
 * files (a job is often checked where it is written, and run where the
 * models are) nor the output folder's contents (an earlier run's
 * settings), which the run checks as it opens them. SL_ERR_INVALID_ARG
 * naming what and why (SL_ERR_MODEL for the CPU). */
sl_status sl_caption_check(const sl_caption_params *p);

typedef struct sl_caption_summary {
    long rows;                /* rows written in the parts this run committed: the output's
                                 lines or Parquet rows (--rows-per-task: one per input and
                                 task) */
    long rows_ok;             /* of which without an error */
    long rows_failed;         /* of which with one */
    long prompt_tokens;
    long generated_tokens;
    double seconds;           /* wall time from first read to last write */
    double load_seconds;      /* engine load, not in `seconds` */
    char output_file[4096];   /* the last part this process committed ("" when none) */
    char model_name[256];
    uint64_t peak_bytes_in_flight, memory_budget;
    int metrics_port;         /* where /metrics was served (0: not served) */
    char metrics_url[160];    /* "http://HOST:PORT" of that server ("": not served) */
    double decode_busy_s, engine_busy_s, write_busy_s; /* summed over workers */
    long shards;              /* output files this run committed (first_output_file and
                                 last_output_file by number) */
    long rows_skipped;        /* inputs skipped: an earlier run committed them */
    long rows_done_before;    /* rows the output folder held at the start, as its parts
                                 hold them (earlier runs' rows.total summed) */
    bool resumed;             /* the folder held a run of the same settings */
    long rows_dropped;        /* rows a stage dropped (sluice/pipeline.h): not written,
                                 done in the ledger; not in `rows` */
    long inputs_done;         /* inputs (images, batch requests) this run finished: their
                                 rows committed, or dropped (under MPI: every rank's) */
    long inputs_done_before;  /* inputs earlier runs finished (their inputs_done summed) */
    bool inputs_all_done;     /* one process: the inputs ended and every one read is in
                                 inputs_done, so a run that ended early (--max-failed) left
                                 nothing for the next; false under MPI */
    bool dry_run;             /* params.dry_run: no model, no answers */
    long rows_failed_before;  /* of rows_done_before, those with an error (parts of a sluice
                                 that kept no count add none) */
    long rows_retried;        /* --retry-failed: failed rows (ids) taken out of the output's
                                 parts at the start, their inputs captioned again */
    long parts_retried;       /* ... the parts rewritten without them */
    long rows_retry_kept;     /* ... the rows those parts kept (read back and written) */
    double retry_seconds;     /* ... the time it took (reading back included) */
    uint64_t input_bytes;     /* the encoded bytes of the inputs whose rows this run
                                 committed (dry runs only; under MPI every rank's) */
    uint64_t jpeg_bytes;      /* dry run, engine "openai": the JPEGs that would be sent */
    /* This run's failed rows by stage and cause (_summary.json's "failures";
     * a cause is sl_status_class()'s word: not_found, decode, io, ...). */
    struct sl_caption_failures {
        char stage[32];
        char cause[32];
        long rows;
    } failures[16];
    int n_failures;           /* failures[] used; further kinds are left out */
    /* With choices: how many committed rows took each, "yes 12 (75%), no 4
     * (25%)" (with tasks "NAME: ...; NAME: ..."); "" otherwise and under
     * MPI (_summary.json's "answers" has the counts). */
    char answers[1024];
    /* The same of the rows a stage dropped (answered, not written);
     * "" when it dropped none that took a choice. */
    char answers_dropped[1024];
    char first_output_file[4096]; /* the first and last part this run committed, by number;
                                     under MPI every rank's ("" when none) */
    char last_output_file[4096];
    long rows_deferred;       /* a stop (the first SIGINT) came before these rows were sent
                                 (the openai engine's queue): not written, not done in the
                                 ledger; the same command again does them (this process's) */
    long rows_without_prompt_column; /* params.prompt_column set: the rows read that had no
                                        such column, prompted with params.prompt; -1 when
                                        it is unset, and under MPI */
} sl_caption_summary;

/* Runs the whole job. SL_OK when it ran to the end, even if rows failed
 * (see summary->rows_failed). SL_ERR_STOPPED, SL_ERR_TOO_MANY_FAILED and
 * SL_ERR_STAGE still fill the summary and commit the rows written. */
sl_status sl_caption_run(const sl_caption_params *params, sl_caption_summary *summary);

#ifdef __cplusplus
}
#endif
#endif
