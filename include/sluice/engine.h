/* sluice/engine.h — inference engines: requests in, generated text out.
 *
 * An engine turns a request (prompt text, an optional image, sampling
 * settings) into a result (text, finish reason, token counts, timings).
 * One engine ships today: "llama", llama.cpp in-process (libllama +
 * libmtmd). An engine handle is used by one thread at a time.
 * sl_engine_generate() fills a caller-provided sl_result whose strings the
 * caller frees with sl_result_clear(); sl_engine_free() frees the engine.
 */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include "image.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_engine sl_engine;

typedef struct sl_sampling {
    float temperature;    /* 0: greedy */
    float top_p;          /* 1: off */
    float min_p;          /* 0: off */
    float repeat_penalty; /* 1: off */
    int top_k;            /* 0: off */
    int max_tokens;       /* generated tokens at most */
    uint64_t seed;        /* used when temperature > 0 */
} sl_sampling;

sl_sampling sl_sampling_default(void);

/* The seed a row gets: a stable mix of the job seed and the row id, so a
 * rerun reproduces each row whatever order rows run in. */
uint64_t sl_sampling_row_seed(uint64_t job_seed, const char *row_id);

typedef struct sl_llama_params {
    const char *model_path;   /* language model GGUF (required) */
    const char *mmproj_path;  /* vision projector GGUF (required for images) */
    int n_ctx;                /* context tokens; 0: sized for one request */
    int n_batch;              /* prompt tokens per llama_decode */
    int n_threads;            /* 0: all cores */
    int n_gpu_layers;         /* -1: all that fit (GPU builds); 0: CPU */
} sl_llama_params;

sl_llama_params sl_llama_default_params(void);

/* Load the model and projector. Fails fast, naming the file, when a path is
 * missing or llama.cpp cannot load it. */
sl_status sl_engine_open_llama(const sl_llama_params *params, sl_engine **out);

typedef struct sl_request {
    const char *id;            /* names the row in error messages */
    const char *system_prompt; /* NULL or "" for none */
    const char *prompt;        /* user text; the image goes before it */
    const sl_image *image;     /* NULL for text only */
    sl_sampling sampling;
} sl_request;

typedef struct sl_result {
    char *text;                /* generated text, NUL-terminated */
    const char *finish_reason; /* "stop", "length" (static strings) */
    int prompt_tokens;         /* text and image positions fed to the model */
    int generated_tokens;
    double prefill_ms;         /* prompt and image into the context */
    double generate_ms;        /* sampling and decoding the new tokens */
} sl_result;

/* Run one request to completion. On failure the result is cleared and the
 * message names request->id and the cause. */
sl_status sl_engine_generate(sl_engine *engine, const sl_request *request, sl_result *out);

void sl_result_clear(sl_result *result);

/* The model's name (general.name, else the file name); owned by the engine. */
const char *sl_engine_model_name(const sl_engine *engine);

void sl_engine_free(sl_engine *engine);

#ifdef __cplusplus
}
#endif
#endif
