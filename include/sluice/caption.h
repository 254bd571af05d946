/* sluice/caption.h — the captioning job: a folder of images to JSONL rows.
 *
 * sl_caption_run() reads every image under input_dir (recursively, sorted),
 * decodes and shrinks it, asks the engine for a caption and writes one JSONL
 * row per input to output_dir/part-00000.jsonl (written under a temporary
 * name, renamed when complete). An input that fails becomes a row with its
 * error; the run goes on. Only a wrong parameter, an engine that cannot load
 * or an output that cannot be written stops the job.
 */
#ifndef SLUICE_CAPTION_H
#define SLUICE_CAPTION_H

#include <stdbool.h>
#include "engine.h"
#include "image.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What on_row sees of a finished row; valid only during the callback. */
typedef struct sl_row_view {
    const char *id;       /* path relative to input_dir */
    const char *caption;  /* NULL when the row failed */
    const char *error;    /* NULL when the row succeeded */
    long index;           /* 0-based position in input order */
} sl_row_view;

typedef void (*sl_row_fn)(const sl_row_view *row, void *user);

typedef struct sl_caption_params {
    const char *input_dir;
    const char *output_dir;
    bool overwrite;            /* replace existing output shards */
    const char *system_prompt; /* NULL: none */
    const char *prompt;
    sl_sampling sampling;      /* sampling.seed is the job seed */
    sl_image_params image;
    sl_llama_params llama;
    sl_row_fn on_row;          /* optional, called in input order */
    void *on_row_user;
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
    char output_file[4096];   /* the committed JSONL shard */
    char model_name[256];
} sl_caption_summary;

/* Runs the whole job. SL_OK when it ran to the end, even if rows failed
 * (see summary->rows_failed). */
sl_status sl_caption_run(const sl_caption_params *params, sl_caption_summary *summary);

#ifdef __cplusplus
}
#endif
#endif
