/* sluice/caption.h — the captioning job: a folder of images to JSONL rows.
 *
 * sl_caption_run() runs a pipeline on the streaming executor: read (the
 * images under input_dir, recursively, sorted) -> decode (libvips, shrink)
 * -> engine (llama.cpp; one model per replica) -> write (one row per input
 * to output_dir/part-00000.jsonl or .parquet, written under a temporary name
 * and renamed when the run ends). Metrics (vLLM's engine names, sluice_ pipeline
 * names) are served at metrics_addr while it runs and written to
 * output_dir/metrics.prom at the end. An input that fails becomes a row with its
 * error; the run goes on. A wrong parameter, an engine that cannot load, an
 * output that cannot be written, too many failed rows (max_failed) or a stop
 * request end the job; rows already finished are kept.
 */
#ifndef SLUICE_CAPTION_H
#define SLUICE_CAPTION_H

#include <stdatomic.h>
#include <stdbool.h>
#include "engine.h"
#include "executor.h"
#include "image.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What on_row sees of a finished row; valid only during the callback, which
 * runs on the writer thread, in output order. */
typedef struct sl_row_view {
    const char *id;       /* path relative to input_dir */
    const char *caption;  /* NULL when the row failed */
    const char *error;    /* NULL when the row succeeded */
    long index;           /* 0-based position in input order */
    const char *error_stage; /* "read", "decode", "engine"; NULL on success */
} sl_row_view;

typedef void (*sl_row_fn)(const sl_row_view *row, void *user);

/* A snapshot of the running job, for progress displays. */
typedef struct sl_caption_progress {
    double elapsed_s;           /* since the pipeline started (model load included) */
    uint64_t rows_read, rows_done, rows_failed;
    int64_t rows_total;         /* inputs in the folder; -1 until counted */
    double eta_s;               /* -1 while rows_total is unknown */
    uint64_t bytes_in_flight, memory_budget;
    size_t n_stages;
    sl_stage_stats stages[8];   /* read, decode, engine, write */
    bool final;                 /* the last snapshot, after the run ended */
} sl_caption_progress;

typedef void (*sl_progress_fn)(const sl_caption_progress *progress, void *user);

typedef struct sl_caption_params {
    const char *input_dir;
    const char *output_dir;
    const char *output_format; /* "jsonl" (default) or "parquet" (zstd) */
    bool overwrite;            /* replace existing output shards */
    const char *system_prompt; /* NULL: none */
    const char *prompt;
    sl_sampling sampling;      /* sampling.seed is the job seed */
    const char *const *stop;   /* generation ends at any of these (not written) */
    int n_stop;
    sl_image_params image;
    sl_llama_params llama;
    int decode_workers;        /* decode threads (default 2) */
    int replicas;              /* engine instances, each with its own model (default 1) */
    bool ordered;              /* write rows in input order (default: as they finish) */
    uint64_t memory_budget;    /* bytes in flight; 0: a quarter of RAM */
    double max_failed;         /* stop past this fraction of failed rows (1: never) */
    const atomic_int *stop_requests; /* optional: 1 = stop and drain, 2 = abort */
    const char *metrics_addr;  /* "HOST:PORT" to serve /metrics; NULL or "": no server */
    bool metrics_optional;     /* if the address cannot be bound: warn, run without it */
    void (*on_metrics_port)(int port, void *user); /* optional: once serving, the bound port */
    sl_row_fn on_row;          /* optional */
    void *on_row_user;         /* handed to on_row, on_metrics_port and on_progress */
    sl_progress_fn on_progress; /* optional: every progress_ms from a monitor thread,
                                   and once more at the end (final) */
    int progress_ms;           /* default 1000 */
    const char *engine;        /* "llama" (default) or "openai" (HTTP servers) */
    sl_openai_params openai;   /* engine "openai": endpoints, limits, retries */
    int jpeg_edge;             /* openai: longer edge of the JPEG sent (0: as decoded) */
    int jpeg_quality;          /* openai: its quality, 1..100 (default 90) */
} sl_caption_params;

sl_caption_params sl_caption_default_params(void);

typedef struct sl_caption_summary {
    long rows;
    long rows_ok;
    long rows_failed;
    long prompt_tokens;
    long generated_tokens;
    double seconds;           /* wall time from first read to last write */
    double load_seconds;      /* engine load, not in `seconds` */
    char output_file[4096];   /* the committed shard */
    char model_name[256];
    uint64_t peak_bytes_in_flight, memory_budget;
    int metrics_port;         /* where /metrics was served (0: not served) */
    double decode_busy_s, engine_busy_s, write_busy_s; /* summed over workers */
} sl_caption_summary;

/* Runs the whole job. SL_OK when it ran to the end, even if rows failed
 * (see summary->rows_failed). SL_ERR_STOPPED, SL_ERR_TOO_MANY_FAILED and
 * SL_ERR_STAGE still fill the summary and commit the rows written. */
sl_status sl_caption_run(const sl_caption_params *params, sl_caption_summary *summary);

#ifdef __cplusplus
}
#endif
#endif
